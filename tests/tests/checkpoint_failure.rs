//! A container that CRIU cannot checkpoint keeps running: the daemon shows
//! the cause, and retries later instead of looping. Through the
//! `lightwhale` runtime, whose checkpoints the daemon freezes first, the
//! container is also left thawed.

use std::fs;
use std::net::SocketAddr;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::thread;
use std::time::Duration;

use anyhow::{anyhow, Result};
use lightwhale_tests::runtime::{freezer_file, lightwhale_runtime_missing, LIGHTWHALE_RUNTIME};
use lightwhale_tests::{
    free_port, http_get, parse_hits, wait_for_http, Container, ContainerBuilder, Daemon, HTTP_COUNTER_IMAGE,
    STARTUP_TIMEOUT, STATE_TIMEOUT,
};

/// A managed counter that CRIU cannot dump: it keeps a connection to a Unix
/// socket of the test process, outside the container, and CRIU refuses to
/// dump a connection to an external Unix socket.
struct Undumpable {
    web: Container,
    address: SocketAddr,
    /// Its counter after the first request.
    hits: u64,
    /// The test's end of the connection, which has to stay open.
    _peer: UnixStream,
    /// The directory of the socket, mounted into the container.
    dir: PathBuf,
}

impl Undumpable {
    /// Starts the counter from `builder` with an idle timeout of 3 s and
    /// waits until it responds.
    fn start(builder: ContainerBuilder, dir_hint: &str) -> Result<Self> {
        let dir = std::env::temp_dir().join(format!("lightwhale-{dir_hint}-{}", std::process::id()));
        fs::create_dir_all(&dir)?;
        let listener = UnixListener::bind(dir.join("peer.sock"))?;
        let port = free_port()?;
        let web = builder
            .managed("3s")
            .option(&format!("--volume={}:/external", dir.display()))
            .env("HOLD_UNIX_SOCKET", "/external/peer.sock")
            .publish("127.0.0.1", port, 8080)
            .start()?;
        let (peer, _) = listener.accept()?;
        let address = SocketAddr::from(([127, 0, 0, 1], port));
        wait_for_http(address, STARTUP_TIMEOUT)?;
        let hits = parse_hits(&http_get(address)?)?;
        Ok(Self { web, address, hits, _peer: peer, dir })
    }

    /// Waits for the daemon to report the failed checkpoint, checks that the
    /// container still runs with its state, and returns its status.
    fn wait_for_failure(&self, daemon: &Daemon) -> Result<serde_json::Value> {
        let failed = daemon.wait_for_status(self.web.name(), "a checkpoint error", STATE_TIMEOUT, |entry| {
            entry["last_error"].as_str().is_some_and(|error| error.contains("checkpoint failed"))
        })?;
        println!("after the failed checkpoint: {failed}");
        assert_eq!(failed["state"], "awake", "{failed}");
        assert_eq!(failed["sleeps"], 0, "{failed}");
        assert!(self.web.is_running()?, "the container stopped after the failed checkpoint");
        assert_eq!(parse_hits(&http_get(self.address)?)?, self.hits + 1, "the container lost its state");
        Ok(failed)
    }

    /// Removes the container, then the socket's directory.
    fn remove(self) -> Result<()> {
        drop(self.web);
        fs::remove_dir_all(&self.dir)?;
        Ok(())
    }
}

#[test]
fn checkpoint_failure_keeps_container_running() -> Result<()> {
    let daemon = Daemon::start(&[])?;
    let undumpable = Undumpable::start(Container::builder("undumpable", HTTP_COUNTER_IMAGE), "external")?;
    undumpable.wait_for_failure(&daemon)?;

    // The next attempt waits for the back-off (30 s), so nothing changes for
    // a few idle timeouts.
    thread::sleep(Duration::from_secs(10));
    let name = undumpable.web.name();
    let later = daemon
        .container_status(name)?
        .ok_or_else(|| anyhow!("{name} is not listed"))?;
    assert_eq!(later["state"], "awake", "{later}");
    assert_eq!(later["sleeps"], 0, "{later}");
    let attempts = daemon.log().matches("sleep failed").count();
    assert_eq!(attempts, 1, "the daemon retried without backing off:\n{}", daemon.log());

    undumpable.remove()
}

/// The daemon freezes the cgroup before `runc checkpoint`, and CRIU freezes
/// it again after a failed dump, so the daemon has to thaw it.
#[test]
fn failed_runc_checkpoint_leaves_container_thawed() -> Result<()> {
    if lightwhale_runtime_missing()? {
        return Ok(());
    }
    let daemon = Daemon::start(&[])?;
    let builder = Container::builder("runc-undumpable", HTTP_COUNTER_IMAGE).runtime(LIGHTWHALE_RUNTIME);
    let undumpable = Undumpable::start(builder, "runc-external")?;
    undumpable.wait_for_failure(&daemon)?;

    let freezer = fs::read_to_string(freezer_file(undumpable.web.id())?)?;
    assert!(matches!(freezer.trim(), "THAWED" | "0"), "the container's cgroup is {freezer:?}");
    undumpable.remove()
}
