//! Keeping the registry in step with what the Docker engine reports.

use std::{collections::HashSet, net::SocketAddrV4, sync::Arc, time::Duration};

use tracing::{debug, info, warn};

use crate::{
    clock::monotonic_ns,
    connections,
    daemon::Daemon,
    docker::{remove_restore_copies, runc_checkpoint::RuncCheckpoint, ContainerInfo, PublishedPort},
    idle,
    labels::{self, Management, Policy},
    lifecycle::short,
    registry::{Container, Record},
    state::{State, Transition},
};

/// How long a container that received a signal stays awake: longer than
/// the 10 s that `docker stop` waits by default before SIGKILL, and than
/// the grace periods that most services set.
// NOTE: a container whose `docker stop -t` is longer than this can still
// be checkpointed while it shuts down.
const SIGNALLED_HOLD_OFF: Duration = Duration::from_secs(120);

/// Returns whether the container's processes last started after the
/// checkpoint called `checkpoint` was taken.
fn started_after(info: &ContainerInfo, checkpoint: &str) -> bool {
    info.started_at_ms
        .is_some_and(|started| started > crate::docker::checkpoint_time(checkpoint))
}

impl Daemon {
    /// Re-reads every container from the engine and forgets those that are
    /// gone.
    pub async fn resync(&self) -> Result<(), crate::docker::EngineError> {
        let listed_at = std::time::SystemTime::now();
        let ids = self.engine.container_ids().await?;
        let live: HashSet<&String> = ids.iter().collect();
        let known: Vec<String> = self.registry().all().into_iter().map(|c| c.id.clone()).collect();
        for id in known.iter().filter(|id| !live.contains(id)) {
            self.forget(id).await;
        }
        // Checkpoints through runc of containers removed while the daemon
        // did not run, or while the event stream was broken.
        let runc = self.runc.clone();
        let live_ids = ids.clone();
        tokio::task::spawn_blocking(move || runc.remove_orphans(&live_ids.iter().collect(), listed_at));
        for id in &ids {
            self.refresh(id).await;
        }
        // A daemon stopped during an operation can leave two things behind
        // for an awake container. One is containerd's copy of a checkpoint
        // that it restored, which is no longer read. The other, for the
        // `lightwhale` runtime, is a cgroup that it froze for a checkpoint.
        let awake: Vec<(String, bool)> = self
            .registry()
            .all()
            .into_iter()
            .filter_map(|container| {
                let record = container.record();
                let may_be_frozen = record.info.uses_runc_checkpoints() && !record.info.paused;
                (record.state == State::Awake).then(|| (container.id.clone(), may_be_frozen))
            })
            .collect();
        let runc = self.runc.clone();
        tokio::task::spawn_blocking(move || {
            let ids: Vec<String> = awake.iter().map(|(id, _)| id.clone()).collect();
            for id in remove_restore_copies(&ids) {
                info!(id = %short(&id), "removed containerd's copy of a checkpoint left by an earlier restore");
            }
            for (id, may_be_frozen) in awake {
                if !may_be_frozen {
                    continue;
                }
                match runc.thaw_left_frozen(&id) {
                    Ok(true) => warn!(id = %short(&id), "thawed a container left frozen by an interrupted checkpoint"),
                    Ok(false) => {}
                    Err(error) => warn!(id = %short(&id), %error, "cannot check whether the container is frozen"),
                }
            }
        });
        Ok(())
    }

    /// Re-reads one container from the engine and updates the registry.
    pub async fn refresh(&self, id: &str) {
        let info = match self.engine.inspect(id).await {
            Ok(Some(info)) => info,
            Ok(None) => {
                self.forget(id).await;
                let runc = self.runc.clone();
                let id = id.to_owned();
                tokio::task::spawn_blocking(move || runc.remove_all(&id));
                return;
            }
            Err(error) => {
                warn!(id = %short(id), %error, "cannot inspect container");
                return;
            }
        };

        if info.stands_in_for().is_some() {
            return;
        }
        let policy = match labels::management(&info.labels, &self.defaults) {
            Management::Unmanaged => {
                self.forget(id).await;
                return;
            }
            Management::Invalid(error) => {
                self.track_unmanageable(info, error.to_string());
                return;
            }
            Management::Managed(policy) => policy,
        };
        if let Some(reason) = info.unmanageable_reason() {
            self.track_unmanageable(info, reason);
            return;
        }
        if let Some(reason) = self.runc_unusable.clone().filter(|_| info.uses_runc_checkpoints()) {
            self.track_unmanageable(info, reason);
            return;
        }

        let existing = self.registry().get(id);
        match existing {
            Some(container) => self.update(&container, info),
            None => self.track_managed(info, policy).await,
        }
    }

    /// Adds a managed container seen for the first time. A stopped one that
    /// has a lightwhale checkpoint is asleep: it was put to sleep by an
    /// earlier run of the daemon.
    async fn track_managed(&self, info: ContainerInfo, policy: Policy) {
        let mut runc_checkpoint = None;
        // NOTE: checkpoints through runc of a running container, such as one
        // whose wake finished after the daemon was killed, stay on disk
        // until its next wake or its removal. They are not removed here
        // because a `runc checkpoint` of a killed daemon may still write one.
        let checkpoint = if info.running {
            None
        } else if info.uses_runc_checkpoints() {
            runc_checkpoint = self.find_runc_checkpoint(&info.id);
            runc_checkpoint.as_ref().map(|checkpoint| checkpoint.name.clone())
        } else {
            match self.engine.lightwhale_checkpoints(&info.id).await {
                Ok(checkpoints) => checkpoints.last().cloned(),
                Err(error) => {
                    warn!(container = %info.name, id = %info.short_id(), %error, "cannot list checkpoints");
                    None
                }
            }
        };
        // The state file records what Docker forgot when the container
        // stopped: its former addresses, and the ports held for it.
        let saved = self.store.sleeping(&info.id);
        // A wake keeps the checkpoint that it restored from until the next
        // one. A container started after its newest checkpoint was taken
        // was woken, or started over, since: once stopped, it is stopped,
        // not asleep. The state file, which a checkpoint of a killed daemon
        // may not have reached, settles it when it lists the container.
        let checkpoint = checkpoint.filter(|name| saved.is_some() || !started_after(&info, name));
        let state = match (info.running, &checkpoint) {
            (true, _) => State::Awake,
            (false, Some(_)) => State::Asleep,
            (false, None) => State::Stopped,
        };

        if state != State::Asleep && saved.is_some() {
            if let Err(error) = self.store.forget(&info.id) {
                warn!(container = %info.name, %error, "cannot update the state file");
            }
        }
        let saved = saved.filter(|_| state == State::Asleep);
        let mut info = info;
        let held_ports = match &saved {
            Some(saved) => {
                info.endpoints = saved.endpoints.clone();
                info.restart_policy = saved.restart_policy.clone();
                saved.held_ports.clone()
            }
            None => info.ports.clone(),
        };

        let slot = self.registry().allocate_slot();
        if let Err(error) = self.data_plane().add_container(slot) {
            warn!(container = %info.name, id = %info.short_id(), %error, "cannot create activity counters");
        }
        let interfaces = match state {
            State::Awake => self.attach_interfaces(&info, slot, &[]),
            _ => Vec::new(),
        };
        if state == State::Asleep {
            if let Err(error) = self.data_plane().hold_ports(slot, &held_ports) {
                warn!(container = %info.name, id = %info.short_id(), %error, "cannot hold ports");
            }
        }

        let mut record = Record::new(info.clone(), policy, state, monotonic_ns());
        record.interfaces = interfaces;
        record.checkpoint = checkpoint;
        if state == State::Asleep {
            record.runc_checkpoint = runc_checkpoint;
            record.held_ports = held_ports;
            record.memory_freed = saved.as_ref().and_then(|saved| saved.memory_freed);
        }
        info!(
            container = %info.name,
            id = %info.short_id(),
            state = %state,
            idle_timeout = %humantime::format_duration(policy.idle_timeout),
            "managing container"
        );
        let container = Arc::new(Container::new(info.id.clone(), Some(slot), record));
        self.registry().insert(container.clone());

        if saved.is_some() {
            self.restore_stand_in(&container, slot).await;
        }
    }

    /// Finds the checkpoint through runc that a stopped container sleeps
    /// in: the one the state file names, or else the newest complete one
    /// in the state directory, such as one whose `runc checkpoint` finished
    /// after the daemon was killed.
    fn find_runc_checkpoint(&self, id: &str) -> Option<RuncCheckpoint> {
        let saved = self.store.sleeping(id).and_then(|saved| {
            let dir = saved.runc_checkpoint_dir?;
            Some(RuncCheckpoint { name: saved.checkpoint, dir })
        });
        match saved {
            Some(checkpoint) if checkpoint.images().is_dir() => Some(checkpoint),
            Some(checkpoint) => {
                warn!(id = %short(id), dir = %checkpoint.dir.display(), "the checkpoint named in the state file is missing");
                self.runc.newest_complete(id)
            }
            None => self.runc.newest_complete(id),
        }
    }

    /// Applies a change reported by the engine to a known container.
    fn update(&self, container: &Arc<Container>, info: ContainerInfo) {
        let Some(slot) = container.slot else {
            return;
        };
        let mut record = container.record();
        let before = record.state;
        let transition = if info.running { Transition::Started } else { Transition::Died };
        let after = match before.next(transition) {
            Ok(after) => after,
            Err(error) => {
                debug!(container = %info.name, %error, "ignoring event");
                return;
            }
        };
        record.state = after;
        if info.name != record.info.name {
            info!(container = %info.name, old_name = %record.info.name, "container renamed");
        }

        match (before, after) {
            (State::Asleep, State::Awake) => {
                // Started without its checkpoint by someone else.
                warn!(container = %info.name, id = %info.short_id(), "started outside lightwhale while asleep; releasing its ports");
                let held = std::mem::take(&mut record.held_ports);
                self.data_plane().release_ports(&held);
                record.checkpoint = None;
                // It runs without its memory state, so its checkpoint through
                // runc, if any, is of no more use.
                if record.runc_checkpoint.take().is_some() {
                    let runc = self.runc.clone();
                    let id = container.id.clone();
                    let dirs = runc.checkpoint_dirs(&id);
                    tokio::task::spawn_blocking(move || runc.remove_checkpoints(&id, &dirs));
                }
                record.awake_since_ns = monotonic_ns();
                if let Err(error) = self.store.forget(&container.id) {
                    warn!(container = %info.name, %error, "cannot update the state file");
                }
            }
            (State::Stopped, State::Awake) => record.awake_since_ns = monotonic_ns(),
            (State::Awake, State::Stopped) => {
                let interfaces = std::mem::take(&mut record.interfaces);
                let mut data_plane = self.data_plane();
                for ifindex in interfaces {
                    data_plane.detach_interface(ifindex);
                }
            }
            _ => {}
        }

        // Sleeping and waking containers are updated by the operation itself.
        if before.holds_ports() && after != State::Awake {
            return;
        }
        if after == State::Awake {
            let previous = record.interfaces.clone();
            record.interfaces = self.attach_interfaces(&info, slot, &previous);
        }
        record.info = info;
    }

    /// Lists a container that asked to be managed and cannot be.
    fn track_unmanageable(&self, info: ContainerInfo, reason: String) {
        let id = info.id.clone();
        if let Some(existing) = self.registry().get(&id) {
            existing.record().info = info;
            return;
        }
        warn!(container = %info.name, id = %info.short_id(), %reason, "not managing container");
        let policy = Policy {
            idle_timeout: self.defaults.idle_timeout,
            wake_timeout: labels::DEFAULT_WAKE_TIMEOUT,
            on_restore_failure: labels::RestoreFailure::Start,
            open_connections: labels::OpenConnections::KeepAwake,
        };
        let mut record = Record::new(info, policy, State::Stopped, monotonic_ns());
        record.unmanageable = Some(reason);
        self.registry().insert(Arc::new(Container::new(id, None, record)));
    }

    /// Removes a container that no longer exists, with its stand-in.
    async fn forget(&self, id: &str) {
        let Some(container) = self.registry().remove(id) else {
            return;
        };
        self.remove_stand_in(&container).await;
        if let Err(error) = self.store.forget(id) {
            warn!(id = %short(id), %error, "cannot update the state file");
        }
        let record = container.record();
        info!(container = %record.info.name, id = %short(id), "container removed");
        if let Some(slot) = container.slot {
            let mut data_plane = self.data_plane();
            for ifindex in &record.interfaces {
                data_plane.detach_interface(*ifindex);
            }
            data_plane.remove_container(slot);
        }
    }

    /// Keeps the process of container `id` awake for [`SIGNALLED_HOLD_OFF`]
    /// after a client sent it a signal. `docker stop` sends SIGTERM and waits for the
    /// process to exit. A checkpoint in that wait would turn the user's stop
    /// into a sleep, which the next connection would undo.
    pub fn hold_off_sleep(&self, id: &str) {
        let Some(container) = self.registry().get(id) else {
            return;
        };
        let mut record = container.record();
        let Some(pid) = record.info.pid else {
            return;
        };
        record.signalled = Some((pid, monotonic_ns() + SIGNALLED_HOLD_OFF.as_nanos() as u64));
        debug!(container = %record.info.name, id = %short(id), pid, "signalled; no sleep for a while");
    }

    /// Returns the awake containers that have been idle for their timeout
    /// and have no operation in progress.
    pub fn idle_containers(&self) -> Vec<Arc<Container>> {
        let now = monotonic_ns();
        let mut idle = Vec::new();
        for container in self.registry().all() {
            let Some(slot) = container.slot else {
                continue;
            };
            if container.operation.try_lock().is_err() {
                continue;
            }
            let activity = self.data_plane().activity(slot);
            let record = container.record();
            if record.state != State::Awake || record.unmanageable.is_some() || now < record.next_sleep_attempt_ns {
                continue;
            }
            if let Some((pid, until)) = record.signalled {
                if record.info.pid == Some(pid) && now < until {
                    continue;
                }
            }
            let idle_for = idle::idle_for(now, activity.last_seen_ns, record.awake_since_ns);
            if !idle::should_sleep(idle_for, record.policy.idle_timeout) {
                continue;
            }
            // With `close`, the sleep resets the connections itself.
            if record.policy.open_connections == labels::OpenConnections::KeepAwake {
                let open = record.info.pid.map(connections::established).and_then(Result::ok).unwrap_or(0);
                if open > 0 {
                    debug!(container = %record.info.name, open, "idle, but stays awake while TCP connections are open");
                    continue;
                }
            }
            idle.push(container.clone());
        }
        idle
    }

    /// Finds the managed container and port that a connection accepted by
    /// the holder was meant for, from its local (original destination)
    /// address. Only published ports of managed containers match, so the
    /// holder cannot be used to reach anything else.
    pub fn held_target(&self, local: SocketAddrV4) -> Option<(Arc<Container>, PublishedPort)> {
        for container in self.registry().all() {
            if container.slot.is_none() {
                continue;
            }
            let record = container.record();
            let port = record
                .held_ports
                .iter()
                .chain(record.info.ports.iter())
                .find(|port| {
                    port.host_port == local.port() && (port.host_ip.is_unspecified() || port.host_ip == *local.ip())
                })
                .cloned();
            drop(record);
            if let Some(port) = port {
                return Some((container, port));
            }
        }
        None
    }
}
