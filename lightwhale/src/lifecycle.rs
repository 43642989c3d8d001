//! Putting a container to sleep and waking it up.

use std::{
    net::{Ipv4Addr, SocketAddrV4},
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};
use thiserror::Error;
use tracing::{debug, error, info, warn};

use bollard::models::{RestartPolicy, RestartPolicyNameEnum};
use lightwhale_common::holding;

use crate::{
    clock::monotonic_ns,
    connect::connect_marked,
    connections,
    conntrack,
    daemon::Daemon,
    docker::{
        engine::new_checkpoint_name,
        runc_checkpoint::{RuncCheckpoint, RuncError},
        stand_in,
        ContainerInfo, EngineError, PublishedPort,
    },
    idle::retry_delay,
    neighbour,
    registry::Container,
    state::{InvalidTransition, State, Transition},
    store::SleepingContainer,
    labels::{OpenConnections, RestoreFailure},
    veth,
};

/// How long Docker may take to report a checkpointed container stopped.
const STOP_WAIT: Duration = Duration::from_secs(10);

/// Reason a sleep or wake did not happen.
#[derive(Debug, Error)]
pub enum LifecycleError {
    /// The container is not in a state that allows the operation.
    #[error("{name} is {state}, not {expected}")]
    WrongState { name: String, state: State, expected: &'static str },
    /// The checkpoint would cut established connections.
    #[error("{name} has {open} established TCP connections; it can sleep once they close, or with the label lightwhale.open-connections=close")]
    OpenConnections { name: String, open: usize },
    /// The container cannot be managed at all.
    #[error("{name} is not manageable: {reason}")]
    Unmanageable { name: String, reason: String },
    /// A Docker call failed.
    #[error("{0}")]
    Engine(#[from] EngineError),
    /// A checkpoint or restore through runc failed.
    #[error("{0}")]
    Runc(#[from] RuncError),
    /// The eBPF maps could not be updated.
    #[error("{0}")]
    DataPlane(#[from] crate::dataplane::DataPlaneError),
    /// The restored container did not accept connections in time.
    #[error("{name}: port {port} did not accept connections within {}", humantime::format_duration(*.limit))]
    PortTimeout { name: String, port: u16, limit: Duration },
    /// The container vanished or stopped during the operation.
    #[error("{0}")]
    Gone(String),
    /// The daemon is shutting down.
    #[error("lightwhale is shutting down")]
    ShuttingDown,
    /// An internal state error.
    #[error(transparent)]
    Transition(#[from] InvalidTransition),
}

/// When each phase of the last wake ended, in microseconds after the wake
/// started, for `lightwhale status` and the benchmarks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WakePhases {
    /// Wall-clock start of the wake, in microseconds since the Unix epoch,
    /// to line it up with a client's own clock.
    pub started_unix_us: u64,
    /// The stand-in was gone and the restore was requested from Docker.
    pub restore_requested_us: u64,
    /// Docker's restore call returned, so the processes ran again.
    pub restored_us: u64,
    /// Every held port accepted a connection.
    pub accepting_us: u64,
}

/// Outcome of a completed sleep.
#[derive(Debug, Clone)]
pub struct SleepReport {
    /// Memory use just before the checkpoint, in bytes.
    pub memory_freed: Option<u64>,
    /// How long the checkpoint took.
    pub elapsed: Duration,
}

impl Daemon {
    /// Checkpoints an awake container and stops it. Its published ports are
    /// held before the checkpoint starts, so that connections arriving
    /// meanwhile wait for the next wake instead of being refused.
    pub async fn sleep(&self, container: &Arc<Container>) -> Result<SleepReport, LifecycleError> {
        let _operation = container.operation.clone().lock_owned().await;
        if self.is_shutting_down() {
            return Err(LifecycleError::ShuttingDown);
        }
        let slot = managed_slot(container)?;

        let (name, ports, addresses, close_in, through_runc) = {
            let mut record = container.record();
            let name = record.info.name.clone();
            if record.state != State::Awake {
                return Err(LifecycleError::WrongState { name, state: record.state, expected: "awake" });
            }
            let close = record.policy.open_connections == OpenConnections::Close;
            let open = record.info.pid.map(connections::established).and_then(Result::ok).unwrap_or(0);
            if open > 0 && !close {
                return Err(LifecycleError::OpenConnections { name, open });
            }
            // The process whose network namespace has the connections to close.
            let close_in = record.info.pid.filter(|_| close);
            record.state = record.state.next(Transition::BeginSleep)?;
            record.held_ports = record.info.ports.clone();
            let addresses: Vec<Ipv4Addr> = record.info.endpoints.iter().filter_map(|endpoint| endpoint.ipv4).collect();
            let through_runc = record.info.uses_runc_checkpoints();
            (name, record.held_ports.clone(), addresses, close_in, through_runc)
        };
        let short_id = short(&container.id);

        let held = {
            let mut data_plane = self.data_plane();
            data_plane
                .hold_ports(slot, &ports)
                .and_then(|()| data_plane.hold_addresses(slot, &addresses))
                .and_then(|()| data_plane.set_holding(slot, Some(holding::DROP)))
        };
        if let Err(error) = held {
            let mut data_plane = self.data_plane();
            data_plane.release_ports(&ports);
            data_plane.release_addresses(&addresses);
            let _ = data_plane.set_holding(slot, None);
            drop(data_plane);
            let mut record = container.record();
            record.state = record.state.next(Transition::AbortSleep)?;
            return Err(error.into());
        }

        // `docker stats` of the running container, only shown. It takes
        // about a second, so it runs once new connections are held rather
        // than served by a container about to be checkpointed.
        let memory = match self.engine.memory_usage(&container.id).await {
            Ok(bytes) => Some(bytes),
            Err(error) => {
                warn!(container = %name, id = %short_id, %error, "cannot read memory use before sleeping");
                None
            }
        };

        let checkpoint = new_checkpoint_name();
        let started = Instant::now();
        info!(container = %name, id = %short_id, %checkpoint, ports = ports.len(), through_runc, "sleeping");
        // The record's policy can be stale: an event of the last wake may
        // have been inspected while the policy was still suspended. The
        // operation lock makes a fresh inspect current.
        let restart_policy = match self.engine.inspect(&container.id).await {
            Ok(Some(info)) => info.restart_policy,
            _ => container.record().info.restart_policy.clone(),
        };
        container.record().info.restart_policy = restart_policy.clone();
        let result = match &restart_policy {
            Some(_) => self.engine.set_restart_policy(&container.id, no_restart()).await,
            None => Ok(()),
        };
        let result = match result {
            Ok(()) => {
                // New connections to the container's ports and addresses are
                // held or dropped from here on, so only a connection that
                // the container opens itself can be open at the checkpoint.
                if let Some(pid) = close_in {
                    close_connections(&name, short_id, pid).await;
                }
                self.take_checkpoint(&container.id, &checkpoint, through_runc).await
            }
            Err(error) => Err(error.into()),
        };
        if result.is_err() {
            self.set_back_restart_policy(&container.id, &name, restart_policy.as_ref()).await;
        }
        let elapsed = started.elapsed();
        if result.is_ok() {
            // Docker releases the container's network (NAT rules, address)
            // when it processes the exit, shortly after the checkpoint call
            // returned. Entries removed before that could come back.
            self.wait_until_stopped(&container.id, STOP_WAIT).await;
            for address in &addresses {
                conntrack::forget_address(*address).await;
            }
        } else {
            self.data_plane().release_addresses(&addresses);
        }
        let stand_in = match result {
            Ok(_) => self.start_stand_in(container, slot).await,
            Err(_) => None,
        };
        let holding_mode = stand_in.as_ref().map(|_| holding::DROP_AND_WAKE);
        if let Err(error) = self.data_plane().set_holding(slot, holding_mode) {
            warn!(container = %name, id = %short_id, %error, "cannot set the holding mode");
        }

        match result {
            Ok(runc_checkpoint) => {
                let sleeping = {
                    let record = container.record();
                    SleepingContainer {
                        name: name.clone(),
                        checkpoint: checkpoint.clone(),
                        held_ports: ports.clone(),
                        endpoints: record.info.endpoints.clone(),
                        memory_freed: memory,
                        restart_policy: record.info.restart_policy.clone(),
                        runc_checkpoint_dir: runc_checkpoint.as_ref().map(|checkpoint| checkpoint.dir.clone()),
                    }
                };
                if let Err(error) = self.store.record_sleep(&container.id, sleeping) {
                    // Docker, or the state directory for checkpoints through
                    // runc, still has the checkpoint, from which a restarted
                    // daemon finds the container again.
                    error!(container = %name, id = %short_id, %error, "cannot record the sleep in the state file");
                }
                let interfaces = {
                    let mut record = container.record();
                    record.state = record.state.next(Transition::FinishSleep)?;
                    record.checkpoint = Some(checkpoint);
                    record.runc_checkpoint = runc_checkpoint;
                    record.stand_in = stand_in;
                    record.sleeps += 1;
                    record.memory_freed = memory;
                    record.last_sleep = Some(elapsed);
                    record.sleep_failures = 0;
                    record.last_error = None;
                    std::mem::take(&mut record.interfaces)
                };
                let mut data_plane = self.data_plane();
                for ifindex in interfaces {
                    data_plane.detach_interface(ifindex);
                }
                drop(data_plane);
                info!(
                    container = %name,
                    id = %short_id,
                    memory_freed_bytes = memory.unwrap_or(0),
                    elapsed_ms = elapsed.as_millis() as u64,
                    "slept"
                );
                Ok(SleepReport { memory_freed: memory, elapsed })
            }
            Err(error) => {
                self.data_plane().release_ports(&ports);
                {
                    let mut record = container.record();
                    record.state = record.state.next(Transition::AbortSleep)?;
                    record.sleep_failures += 1;
                    let delay = retry_delay(record.sleep_failures);
                    record.next_sleep_attempt_ns = monotonic_ns() + delay.as_nanos() as u64;
                    record.last_error = Some(format!("checkpoint failed: {error}"));
                    error!(
                        container = %name,
                        id = %short_id,
                        cause = %error,
                        retry_in = %humantime::format_duration(delay),
                        "sleep failed"
                    );
                }
                // A failed checkpoint may still have stopped the container.
                self.refresh(&container.id).await;
                Err(error)
            }
        }
    }

    /// Checkpoints a running container and stops it: through runc into the
    /// state directory for containers of the `lightwhale` runtime, which
    /// returns the checkpoint's files, or through Docker for the others.
    async fn take_checkpoint(
        &self,
        id: &str,
        checkpoint: &str,
        through_runc: bool,
    ) -> Result<Option<RuncCheckpoint>, LifecycleError> {
        if through_runc {
            Ok(Some(self.runc.checkpoint(id, checkpoint).await?))
        } else {
            self.engine.checkpoint(id, checkpoint).await?;
            Ok(None)
        }
    }

    /// Restores a stopped container from its checkpoint. A checkpoint taken
    /// through runc is restored by a plain `docker start`, which the
    /// `lightwhale` runtime turns into `runc restore` because of the marker
    /// written first.
    async fn restore_checkpoint(
        &self,
        id: &str,
        checkpoint: &str,
        runc_checkpoint: Option<&RuncCheckpoint>,
    ) -> Result<(), LifecycleError> {
        let Some(runc_checkpoint) = runc_checkpoint else {
            return Ok(self.engine.restore(id, checkpoint).await?);
        };
        self.runc.prepare_restore(id, runc_checkpoint)?;
        let result = self.engine.client().start_container(id, None).await;
        self.runc.finish_restore(id);
        result.map_err(|error| LifecycleError::Engine(error.into()))
    }

    /// Removes a container's checkpoints through runc in the background,
    /// so that a large one does not delay the wake. Only those that exist
    /// now are removed, so a sleep that starts meanwhile keeps its own.
    fn remove_runc_checkpoints(&self, id: String, name: String) {
        let runc = self.runc.clone();
        let dirs = runc.checkpoint_dirs(&id);
        tokio::task::spawn_blocking(move || {
            let freed = runc.remove_checkpoints(&id, &dirs);
            debug!(container = %name, id = %short(&id), freed_bytes = freed, "removed the checkpoint after the wake");
        });
    }

    /// Sets a restart policy that was suspended for a sleep back, logging
    /// failures.
    async fn set_back_restart_policy(&self, id: &str, name: &str, policy: Option<&RestartPolicy>) {
        let Some(policy) = policy else {
            return;
        };
        if let Err(error) = self.engine.set_restart_policy(id, policy.clone()).await {
            error!(container = %name, %error, "cannot set the restart policy back; set it with `docker update --restart`");
        }
    }

    /// Returns whether the engine reports the container running.
    async fn is_running(&self, id: &str) -> bool {
        matches!(self.engine.inspect(id).await, Ok(Some(info)) if info.running)
    }

    /// Polls the engine until it reports the container stopped, or `limit`
    /// passed.
    async fn wait_until_stopped(&self, id: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            match self.engine.inspect(id).await {
                Ok(Some(info)) if info.running => {}
                _ => return,
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        warn!(id = %short(id), "Docker still reports the container running after its checkpoint");
    }

    /// Restores a sleeping container and waits until its published ports
    /// accept connections. Returns at once for an awake container; callers
    /// that arrive during a restore wait for it and share its result.
    pub async fn wake(&self, container: &Arc<Container>) -> Result<ContainerInfo, LifecycleError> {
        let attempts_before = container.record().wake_attempts;
        let _operation = container.operation.clone().lock_owned().await;
        let slot = managed_slot(container)?;

        let (name, checkpoint, runc_checkpoint, ports, policy, restart_policy) = {
            let mut record = container.record();
            let name = record.info.name.clone();
            // A wake ran while this caller waited: it shares that wake's
            // failure instead of finding a container that never accepted
            // "awake", or starting one more restore that fails alike.
            if record.wake_attempts != attempts_before {
                if let Some(error) = &record.last_wake_failure {
                    return Err(LifecycleError::Gone(error.clone()));
                }
            }
            match record.state {
                State::Awake => return Ok(record.info.clone()),
                State::Asleep => {}
                state => return Err(LifecycleError::WrongState { name, state, expected: "asleep" }),
            }
            let Some(checkpoint) = record.checkpoint.clone() else {
                return Err(LifecycleError::Gone(format!("{name} is asleep without a checkpoint")));
            };
            record.state = record.state.next(Transition::BeginWake)?;
            record.wake_attempts += 1;
            record.last_wake_failure = None;
            (
                name,
                checkpoint,
                record.runc_checkpoint.clone(),
                record.held_ports.clone(),
                record.policy,
                record.info.restart_policy.clone(),
            )
        };
        let short_id = short(&container.id);
        let started = Instant::now();
        let started_unix_us = unix_micros(SystemTime::now());
        info!(container = %name, id = %short_id, %checkpoint, through_runc = runc_checkpoint.is_some(), "waking");

        // New connections to the container's own addresses wait for the
        // client's next SYN from here on, and the stand-in gives the
        // addresses back.
        if let Err(error) = self.data_plane().set_holding(slot, Some(holding::DROP)) {
            warn!(container = %name, id = %short_id, %error, "cannot set the holding mode");
        }
        self.release_stand_in(container).await;

        let mut cold_started = false;
        let restore_requested = started.elapsed();
        let restore = self.restore_checkpoint(&container.id, &checkpoint, runc_checkpoint.as_ref()).await;
        let restored = started.elapsed();
        if let Err(error) = &restore {
            error!(container = %name, id = %short_id, %checkpoint, cause = %error, "restore failed");
            container.record().last_error = Some(format!("restore from {checkpoint} failed: {error}"));
            if policy.on_restore_failure == RestoreFailure::Start {
                // The failed checkpoint stays for inspection.
                match self.engine.client().start_container(&container.id, None).await {
                    Ok(()) => {
                        warn!(container = %name, id = %short_id, "started without its checkpoint: its memory state is lost");
                        container.record().last_error = Some(format!(
                            "restore from {checkpoint} failed, so it was started without it and lost its memory state: {error}"
                        ));
                        cold_started = true;
                    }
                    Err(start_error) => {
                        error!(container = %name, id = %short_id, cause = %start_error, "start without the checkpoint failed");
                    }
                }
            }
        }
        if restore.is_err() && !cold_started && !self.is_running(&container.id).await {
            let error = {
                let mut record = container.record();
                record.state = record.state.next(Transition::FailWake)?;
                error!(container = %name, id = %short_id, %checkpoint, "wake failed; the container stays stopped");
                let error = record.last_error.clone().unwrap_or_else(|| format!("restore from {checkpoint} failed"));
                record.last_wake_failure = Some(error.clone());
                error
            };
            let stand_in = self.start_stand_in(container, slot).await;
            let holding_mode = stand_in.as_ref().map(|_| holding::DROP_AND_WAKE);
            let _ = self.data_plane().set_holding(slot, holding_mode);
            container.record().stand_in = stand_in;
            return Err(LifecycleError::Gone(error));
        }

        // The restore succeeded, so the container runs: from here on it counts
        // as awake and its ports are released, even if the checks below fail.
        let result = self.finish_wake(container, slot, &name, &ports, policy.wake_timeout).await;
        let elapsed = started.elapsed();
        {
            let former_addresses: Vec<Ipv4Addr> = container
                .record()
                .info
                .endpoints
                .iter()
                .filter_map(|endpoint| endpoint.ipv4)
                .collect();
            let mut data_plane = self.data_plane();
            data_plane.release_ports(&ports);
            data_plane.release_addresses(&former_addresses);
            if let Err(error) = data_plane.set_holding(slot, None) {
                warn!(container = %name, id = %short_id, %error, "cannot clear the holding mode");
            }
        }
        {
            let mut record = container.record();
            record.state = record.state.next(Transition::FinishWake)?;
            record.runc_checkpoint = None;
            record.awake_since_ns = monotonic_ns();
            record.wakes += 1;
            record.last_wake = Some(elapsed);
            record.last_wake_phases = Some(WakePhases {
                started_unix_us,
                restore_requested_us: restore_requested.as_micros() as u64,
                restored_us: restored.as_micros() as u64,
                accepting_us: elapsed.as_micros() as u64,
            });
            if let Ok(info) = &result {
                if !cold_started {
                    record.last_error = None;
                }
                for endpoint in &record.info.endpoints {
                    let now = info.0.endpoints.iter().find(|new| new.network == endpoint.network).and_then(|new| new.ipv4);
                    // No stand-in keeps an address on Docker's default
                    // network, so a new one there is expected.
                    if endpoint.ipv4.is_some() && now != endpoint.ipv4 && endpoint.network != stand_in::DEFAULT_BRIDGE {
                        warn!(
                            container = %name,
                            network = %endpoint.network,
                            before = ?endpoint.ipv4,
                            after = ?now,
                            "woke with another address; clients that kept the old one cannot reach it"
                        );
                    }
                }
                record.info = info.0.clone();
                // Inspected before the policy was set back.
                record.info.restart_policy = restart_policy.clone();
                record.interfaces = info.1.clone();
            }
        }
        // The container runs again, whether or not its ports accept connections.
        self.set_back_restart_policy(&container.id, &name, restart_policy.as_ref()).await;
        if let Err(error) = self.store.forget(&container.id) {
            error!(container = %name, id = %short_id, %error, "cannot remove the container from the state file");
        }
        match result {
            Ok((info, _)) => {
                info!(container = %name, id = %short_id, elapsed_ms = elapsed.as_millis() as u64, "woke");
                if runc_checkpoint.is_some() {
                    // A checkpoint whose restore failed stays for inspection
                    // until the next successful wake or the container's
                    // removal.
                    if !cold_started {
                        self.remove_runc_checkpoints(container.id.clone(), name);
                    }
                } else if !cold_started {
                    self.remove_old_checkpoints(container.id.clone(), name, checkpoint);
                }
                Ok(info)
            }
            Err(error) => {
                {
                    let mut record = container.record();
                    record.last_error = Some(error.to_string());
                    record.last_wake_failure = Some(error.to_string());
                }
                error!(container = %name, id = %short_id, cause = %error, "wake failed after restore");
                Err(error)
            }
        }
    }

    /// Inspects the restored container, counts its traffic again and waits
    /// for its ports.
    async fn finish_wake(
        &self,
        container: &Container,
        slot: u32,
        name: &str,
        ports: &[PublishedPort],
        wake_timeout: Duration,
    ) -> Result<(ContainerInfo, Vec<u32>), LifecycleError> {
        let info = self
            .engine
            .inspect(&container.id)
            .await?
            .ok_or_else(|| LifecycleError::Gone(format!("{name} was removed during its restore")))?;
        if !info.running {
            return Err(LifecycleError::Gone(format!("{name} exited right after its restore")));
        }
        let interfaces = self.attach_interfaces(&info, slot, &[]);
        // In the background: the check below does not wait for it unless
        // the host is still resolving the address.
        for endpoint in &info.endpoints {
            if let (Some(address), Some(mac)) = (endpoint.ipv4, endpoint.mac.clone()) {
                tokio::spawn(async move { neighbour::set(address, &mac).await });
            }
        }
        let address = info
            .forward_address()
            .ok_or_else(|| LifecycleError::Gone(format!("{name} has no IPv4 address after its restore")))?;
        for port in ports {
            wait_until_accepting(name, address, port.container_port, wake_timeout).await?;
        }
        Ok((info, interfaces))
    }

    /// Starts a stand-in for a container that just went to sleep and counts
    /// its traffic in the container's slot. Failures are logged: the
    /// container then sleeps without one, reachable through its published
    /// ports only.
    async fn start_stand_in(&self, container: &Container, slot: u32) -> Option<(String, Vec<u32>)> {
        let (info, name) = {
            let record = container.record();
            (record.info.clone(), record.info.name.clone())
        };
        match self.engine.start_stand_in(&info).await {
            Ok(Some(stand_in)) => {
                let interfaces = self.attach_interfaces(&stand_in.info, slot, &[]);
                let addresses: Vec<String> = stand_in
                    .info
                    .endpoints
                    .iter()
                    .filter_map(|endpoint| endpoint.ipv4.map(|ip| format!("{}={ip}", endpoint.network)))
                    .collect();
                info!(container = %name, stand_in = %short(&stand_in.id), addresses = %addresses.join(","), "stand-in keeps its addresses and names");
                Some((stand_in.id, interfaces))
            }
            Ok(None) => None,
            Err(error) => {
                warn!(container = %name, %error, "cannot start a stand-in; the container is reachable through its published ports only");
                None
            }
        }
    }

    /// Gives a container found asleep at startup, whose former addresses the
    /// state file recorded, its stand-in back.
    pub async fn restore_stand_in(&self, container: &Container, slot: u32) {
        let _operation = container.operation.lock().await;
        let addresses: Vec<Ipv4Addr> = container.record().info.endpoints.iter().filter_map(|endpoint| endpoint.ipv4).collect();
        if let Err(error) = self.data_plane().hold_addresses(slot, &addresses) {
            warn!(id = %short(&container.id), %error, "cannot hold addresses");
        }
        let stand_in = self.start_stand_in(container, slot).await;
        let mode = stand_in.as_ref().map(|_| holding::DROP_AND_WAKE);
        if let Err(error) = self.data_plane().set_holding(slot, mode) {
            warn!(id = %short(&container.id), %error, "cannot set the holding mode");
        }
        container.record().stand_in = stand_in;
    }

    /// Gives the addresses of a container's stand-in back and removes the
    /// stand-in in the background, if it has one.
    async fn release_stand_in(&self, container: &Container) {
        let (stand_in, networks) = {
            let mut record = container.record();
            let networks: Vec<String> = record.info.endpoints.iter().map(|endpoint| endpoint.network.clone()).collect();
            (record.stand_in.take(), networks)
        };
        let Some((id, interfaces)) = stand_in else {
            return;
        };
        {
            let mut data_plane = self.data_plane();
            for ifindex in interfaces {
                data_plane.detach_interface(ifindex);
            }
        }
        self.engine.release_stand_in(&id, &networks).await;
    }

    /// Removes the stand-in of a container, if it has one.
    pub async fn remove_stand_in(&self, container: &Container) {
        let Some((id, interfaces)) = container.record().stand_in.take() else {
            return;
        };
        {
            let mut data_plane = self.data_plane();
            for ifindex in interfaces {
                data_plane.detach_interface(ifindex);
            }
        }
        self.engine.remove_stand_in(&id).await;
    }

    /// Starts counting traffic on a running container's interfaces and stops
    /// counting on interfaces it no longer has. Returns the interfaces now
    /// counted.
    pub fn attach_interfaces(&self, info: &ContainerInfo, slot: u32, previous: &[u32]) -> Vec<u32> {
        let Some(pid) = info.pid else {
            return Vec::new();
        };
        let macs: Vec<String> = info.endpoints.iter().filter_map(|endpoint| endpoint.mac.clone()).collect();
        let current = veth::host_interfaces(pid, &macs);
        if current.is_empty() && !macs.is_empty() {
            warn!(container = %info.name, id = %info.short_id(), "host-side interfaces not found; its traffic is not counted");
        }
        let mut data_plane = self.data_plane();
        for ifindex in previous.iter().filter(|ifindex| !current.contains(ifindex)) {
            data_plane.detach_interface(*ifindex);
        }
        let mut attached = Vec::new();
        for ifindex in current {
            match data_plane.attach_interface(ifindex, slot) {
                Ok(()) => attached.push(ifindex),
                Err(error) => {
                    warn!(container = %info.name, id = %info.short_id(), ifindex, %error, "cannot count traffic on interface")
                }
            }
        }
        attached
    }

    /// Deletes the container's older lightwhale checkpoints in the
    /// background, keeping the one it was just restored from.
    fn remove_old_checkpoints(&self, id: String, name: String, keep: String) {
        let engine = self.engine.clone();
        tokio::spawn(async move {
            let checkpoints = match engine.lightwhale_checkpoints(&id).await {
                Ok(checkpoints) => checkpoints,
                Err(error) => {
                    warn!(container = %name, %error, "cannot list checkpoints");
                    return;
                }
            };
            for checkpoint in checkpoints.into_iter().filter(|checkpoint| *checkpoint != keep) {
                if let Err(error) = engine.delete_checkpoint(&id, &checkpoint).await {
                    warn!(container = %name, %checkpoint, %error, "cannot delete old checkpoint");
                }
            }
        });
    }
}

fn managed_slot(container: &Container) -> Result<u32, LifecycleError> {
    let record = container.record();
    match (container.slot, &record.unmanageable) {
        (Some(slot), None) => Ok(slot),
        (_, reason) => Err(LifecycleError::Unmanageable {
            name: record.info.name.clone(),
            reason: reason.clone().unwrap_or_default(),
        }),
    }
}

/// Resets the established TCP connections in the network namespace of the
/// process `pid` of a container labelled `lightwhale.open-connections=close`,
/// and logs how many were closed. A connection left open makes the
/// checkpoint fail, which then backs off as usual.
async fn close_connections(name: &str, id: &str, pid: u32) {
    match connections::close_established(pid).await {
        Ok(0) => debug!(container = %name, id, "no established TCP connections to close"),
        Ok(closed) => info!(container = %name, id, closed, "closed established TCP connections before the checkpoint, so their peers see a reset"),
        Err(error) => warn!(container = %name, id, %error, "cannot close established TCP connections"),
    }
    match connections::established(pid) {
        Ok(0) => {}
        Ok(open) => warn!(container = %name, id, open, "TCP connections are still established after the reset, so the checkpoint fails unless they close first"),
        Err(error) => debug!(container = %name, id, %error, "cannot count TCP connections"),
    }
}

/// Connects to `address:port` until it accepts, or `limit` passed.
async fn wait_until_accepting(name: &str, address: Ipv4Addr, port: u16, limit: Duration) -> Result<(), LifecycleError> {
    let deadline = Instant::now() + limit;
    let target = SocketAddrV4::new(address, port);
    loop {
        let attempt = tokio::time::timeout(Duration::from_secs(1), connect_marked(target)).await;
        if let Ok(Ok(_stream)) = attempt {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(LifecycleError::PortTimeout { name: name.to_owned(), port, limit });
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Returns microseconds since the Unix epoch, or 0 for a clock set before it.
fn unix_micros(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map(|since| since.as_micros() as u64).unwrap_or(0)
}

/// Returns the restart policy `no`, which a container has while it sleeps.
fn no_restart() -> RestartPolicy {
    RestartPolicy {
        name: Some(RestartPolicyNameEnum::NO),
        maximum_retry_count: None,
    }
}

/// Returns the 12-character id that Docker shows.
pub fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}
