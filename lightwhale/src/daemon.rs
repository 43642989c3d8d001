//! The daemon: its shared state, its background tasks and its shutdown.

use std::{
    fs::{File, OpenOptions},
    os::unix::{fs::OpenOptionsExt as _, io::AsRawFd as _},
    path::{Path, PathBuf},
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use anyhow::{bail, Context as _};
use tokio::{
    net::TcpListener,
    signal::unix::{signal, SignalKind},
    task::JoinSet,
};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::{
    control, criu_cache,
    dataplane::DataPlane,
    docker::{check_engine, runc_checkpoint::RuncCheckpointer, Engine},
    holder::{self, Holder},
    labels::Defaults,
    lifecycle::short,
    nat_bypass,
    registry::Registry,
    state::State,
    store::Store,
    wake_requests,
};

/// How often idle containers are looked for.
const IDLE_CHECK_INTERVAL: Duration = Duration::from_millis(500);
/// How long shutdown waits for a checkpoint or restore in progress.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(120);

/// Settings of `lightwhale run`.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Label defaults: manage all containers, default idle timeout.
    pub defaults: Defaults,
    /// Path of the control socket.
    pub socket: PathBuf,
    /// Directory of the state file.
    pub state_dir: PathBuf,
}

/// State shared by the daemon's tasks.
pub struct Daemon {
    /// The Docker engine.
    pub engine: Engine,
    /// Label defaults.
    pub defaults: Defaults,
    /// State that must survive a restart.
    pub store: Store,
    /// Checkpoints through runc, for containers of the `lightwhale` runtime.
    pub runc: RuncCheckpointer,
    /// Reason that containers of the `lightwhale` runtime cannot be managed
    /// on this engine; `None` when they can.
    pub runc_unusable: Option<String>,
    /// Known containers.
    registry: Mutex<Registry>,
    /// The holder's connection limit and counters.
    pub holder: Holder,
    /// The eBPF programs and maps; `None` once shutdown released them.
    data_plane: Mutex<Option<DataPlane>>,
    /// Cancelled when the daemon stops.
    shutdown: CancellationToken,
}

impl Daemon {
    /// Locks the registry.
    pub fn registry(&self) -> MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Locks the data plane.
    ///
    /// # Panics
    ///
    /// After shutdown released it; tasks that use it have stopped by then.
    pub fn data_plane(&self) -> DataPlaneGuard<'_> {
        DataPlaneGuard(self.data_plane.lock().unwrap_or_else(|poisoned| poisoned.into_inner()))
    }

    /// Returns whether shutdown started.
    pub fn is_shutting_down(&self) -> bool {
        self.shutdown.is_cancelled()
    }

    /// Returns the token cancelled at shutdown.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }
}

/// A locked data plane.
pub struct DataPlaneGuard<'a>(MutexGuard<'a, Option<DataPlane>>);

impl std::ops::Deref for DataPlaneGuard<'_> {
    type Target = DataPlane;
    fn deref(&self) -> &DataPlane {
        self.0.as_ref().expect("data plane used after shutdown")
    }
}

impl std::ops::DerefMut for DataPlaneGuard<'_> {
    fn deref_mut(&mut self) -> &mut DataPlane {
        self.0.as_mut().expect("data plane used after shutdown")
    }
}

/// File whose lock a running daemon holds.
const INSTANCE_LOCK: &str = "/run/lightwhale.lock";

/// Runs the daemon until SIGINT or SIGTERM.
pub async fn run(settings: Settings) -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("lightwhale run must run as root: it loads eBPF programs and checkpoints containers");
    }

    // Held until the daemon exits, crash included. Taken before anything
    // else, so that a second daemon changes nothing of the running one.
    let _instance = lock_instance()?;
    raise_file_limit();
    let engine = Engine::connect().await.context("cannot connect to the Docker engine")?;
    let checkpointing = check_engine(&engine).await?;
    engine
        .ensure_stand_in_image()
        .await
        .context("cannot import the stand-in image")?;
    // Stand-ins of an earlier daemon hold addresses that the sleeping
    // containers need back, and their veths are no longer watched.
    for id in engine.stand_in_ids().await.context("cannot list stand-ins")? {
        warn!(id = %short(&id), "removing a stand-in left by an earlier daemon");
        engine.remove_stand_in(&id).await;
    }

    let criu = checkpointing.criu.clone().unwrap_or_else(|| PathBuf::from("criu"));
    let criu_cache = match criu_cache::install(&criu).await {
        Ok(installed) => installed,
        Err(error) => {
            warn!(%error, "CRIU probes the kernel again at every checkpoint and restore");
            None
        }
    };

    // The store's error already names the path and the cause.
    let store = Store::open(&settings.state_dir).map_err(|error| {
        anyhow::anyhow!(
            "cannot use the state directory {} ({error}): set --state-dir or LIGHTWHALE_STATE_DIR to a directory that root can create and write",
            settings.state_dir.display()
        )
    })?;
    let runc = RuncCheckpointer::new(
        checkpointing.runc.clone().unwrap_or_else(|| PathBuf::from("runc")),
        checkpointing.criu.clone(),
        &settings.state_dir,
    );
    let control_listener = control::bind(&settings.socket).await?;
    let mut data_plane = DataPlane::load()?;
    let wake_requests = data_plane
        .take_wake_requests()
        .context("the data plane has no wake request ring buffer")?;
    let holder_listener = TcpListener::bind("127.0.0.1:0")
        .await
        .context("cannot bind the holder's listener")?;
    data_plane.set_holder(&holder_listener)?;
    let nat_bypass_pin = Path::new(lightwhale_common::pins::DIR).join(lightwhale_common::pins::NAT_BYPASS);
    if let Err(error) = nat_bypass::install(&nat_bypass_pin).await {
        // Connections through Docker's NAT then wait for a SYN sent again
        // after a checkpoint, and fail during long restores.
        warn!(%error, "published ports reached through Docker's NAT are not held during checkpoints and restores");
    }
    info!(holder = %holder_listener.local_addr()?, pins = lightwhale_common::pins::DIR, "data plane ready");

    let daemon = Arc::new(Daemon {
        engine,
        defaults: settings.defaults.clone(),
        store,
        runc,
        runc_unusable: checkpointing.runc_unusable_reason(),
        registry: Mutex::new(Registry::default()),
        holder: Holder::default(),
        data_plane: Mutex::new(Some(data_plane)),
        shutdown: CancellationToken::new(),
    });
    daemon.resync().await.context("cannot list containers")?;

    let mut tasks = JoinSet::new();
    tasks.spawn(holder::serve(daemon.clone(), holder_listener));
    tasks.spawn(control::serve(daemon.clone(), control_listener));
    tasks.spawn(follow_events(daemon.clone()));
    tasks.spawn(watch_idle(daemon.clone()));
    tasks.spawn(wake_requests::serve(daemon.clone(), wake_requests));
    info!(
        manage_all = settings.defaults.manage_all,
        idle_timeout = %humantime::format_duration(settings.defaults.idle_timeout),
        socket = %settings.socket.display(),
        "lightwhale running"
    );

    wait_for_signal().await?;
    info!("stopping");
    daemon.shutdown.cancel();
    tasks.shutdown().await;

    // Let a checkpoint or restore in progress finish, so no container is
    // left half-done. The list is taken first: a `for` expression would keep
    // the registry locked across the awaits, and an operation that needs it
    // would then wait for the whole grace period.
    let containers = daemon.registry().all();
    for container in &containers {
        let wait = container.operation.clone().lock_owned();
        if tokio::time::timeout(SHUTDOWN_GRACE, wait).await.is_err() {
            warn!(id = %container.id, "an operation still runs after the grace period");
        }
    }

    for container in &containers {
        daemon.remove_stand_in(container).await;
        let record = container.record();
        if record.state != State::Asleep {
            continue;
        }
        let checkpoint = record.checkpoint.as_deref().unwrap_or("-");
        if let Some(runc_checkpoint) = &record.runc_checkpoint {
            info!(
                container = %record.info.name,
                id = %short(&container.id),
                %checkpoint,
                dir = %runc_checkpoint.dir.display(),
                "stays asleep; start lightwhale again to serve it. A `docker start` by hand \
                 starts it without its memory state"
            );
            continue;
        }
        info!(
            container = %record.info.name,
            id = %short(&container.id),
            %checkpoint,
            "stays asleep; start lightwhale again to serve it, or restore it by hand with \
             `docker start --checkpoint {checkpoint} {}`",
            record.info.name
        );
    }

    // Stand-ins of containers that were removed during the shutdown.
    match daemon.engine.stand_in_ids().await {
        Ok(ids) => {
            for id in ids {
                daemon.engine.remove_stand_in(&id).await;
            }
        }
        Err(error) => warn!(%error, "cannot list stand-ins to remove"),
    }

    nat_bypass::remove().await;
    drop(criu_cache);
    // Dropping the data plane detaches every program and removes the pins.
    drop(daemon.data_plane.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take());
    control::remove(&settings.socket);
    info!("stopped");
    Ok(())
}

/// Takes the host-wide lock of the daemon, [`INSTANCE_LOCK`]: one daemon
/// owns the pins under `/sys/fs/bpf/lightwhale`, the nat chain and the
/// stand-ins, whatever control socket it uses. The lock goes with the
/// returned file, and with the process.
fn lock_instance() -> anyhow::Result<File> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(INSTANCE_LOCK)
        .with_context(|| format!("cannot open {INSTANCE_LOCK}"))?;
    // SAFETY: flock has no memory-safety preconditions, and the descriptor
    // stays open while `file` lives.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let error = std::io::Error::last_os_error();
        if error.raw_os_error() == Some(libc::EWOULDBLOCK) {
            bail!("another lightwhale daemon is already running on this host (it holds {INSTANCE_LOCK}): stop it first");
        }
        return Err(error).with_context(|| format!("cannot lock {INSTANCE_LOCK}"));
    }
    Ok(file)
}

/// Raises the soft limit of open files to the hard limit: every held or
/// relayed connection takes two descriptors, and the usual soft limit of
/// 1024 would stop the holder at about 500 connections.
fn raise_file_limit() {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `limit` is a valid rlimit for getrlimit and setrlimit.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 || limit.rlim_cur >= limit.rlim_max {
            return;
        }
        let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) != 0 {
            warn!(soft = limit.rlim_cur, "cannot raise the limit of open files");
        }
    }
}

async fn wait_for_signal() -> anyhow::Result<()> {
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut terminate = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    tokio::select! {
        _ = interrupt.recv() => {}
        _ = terminate.recv() => {}
    }
    Ok(())
}

/// Follows Docker's container events, and resynchronises the whole
/// inventory after the event stream broke.
async fn follow_events(daemon: Arc<Daemon>) {
    use futures_util::StreamExt as _;

    let mut retry = Duration::from_millis(500);
    loop {
        let mut events = Box::pin(daemon.engine.container_events());
        loop {
            let event = tokio::select! {
                _ = daemon.shutdown.cancelled() => return,
                event = events.next() => event,
            };
            match event {
                Some(Ok(event)) => {
                    retry = Duration::from_millis(500);
                    let signalled = event.action.as_deref() == Some("kill");
                    if let Some(id) = event.actor.and_then(|actor| actor.id) {
                        if signalled {
                            daemon.hold_off_sleep(&id);
                        }
                        daemon.refresh(&id).await;
                    }
                }
                Some(Err(error)) => {
                    warn!(%error, "Docker event stream failed");
                    break;
                }
                None => {
                    warn!("Docker event stream ended");
                    break;
                }
            }
        }

        tokio::select! {
            _ = daemon.shutdown.cancelled() => return,
            _ = tokio::time::sleep(retry) => {}
        }
        retry = (retry * 2).min(Duration::from_secs(30));
        if let Err(error) = daemon.resync().await {
            warn!(%error, "cannot resynchronise with the Docker engine; retrying");
        }
    }
}

/// Puts idle containers to sleep.
async fn watch_idle(daemon: Arc<Daemon>) {
    let mut interval = tokio::time::interval(IDLE_CHECK_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = daemon.shutdown.cancelled() => return,
            _ = interval.tick() => {}
        }
        for container in daemon.idle_containers() {
            let daemon = daemon.clone();
            tokio::spawn(async move {
                // Errors are logged where they happen.
                let _ = daemon.sleep(&container).await;
            });
        }
    }
}
