//! The containers that lightwhale tracks, with their state.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use thiserror::Error;

use crate::{
    docker::{runc_checkpoint::RuncCheckpoint, ContainerInfo, PublishedPort},
    labels::Policy,
    lifecycle::WakePhases,
    state::State,
};

/// One container that is managed, or that asked to be and cannot be.
#[derive(Debug)]
pub struct Container {
    /// Full container id.
    pub id: String,
    /// Key of its counters in the eBPF maps; `None` when it is unmanageable.
    pub slot: Option<u32>,
    /// Serializes checkpoints and restores of this container, so that
    /// concurrent wake requests trigger a single restore.
    pub operation: Arc<tokio::sync::Mutex<()>>,
    /// Everything else, behind a lock that is never held across an await.
    record: Mutex<Record>,
}

/// The mutable part of a [`Container`].
#[derive(Debug)]
pub struct Record {
    /// Latest inspect result.
    pub info: ContainerInfo,
    /// Idle and wake timeouts and restore failure handling, from its labels
    /// or the daemon's defaults.
    pub policy: Policy,
    /// Reason it cannot be managed, if any.
    pub unmanageable: Option<String>,
    /// Position in the sleep/wake cycle.
    pub state: State,
    /// Ports steered to the holder during the current or last sleep.
    pub held_ports: Vec<PublishedPort>,
    /// Checkpoint it sleeps in, or was last restored from.
    pub checkpoint: Option<String>,
    /// The files of the checkpoint it sleeps in when that was taken through
    /// runc; `None` for Docker's checkpoints and once it woke.
    pub runc_checkpoint: Option<RuncCheckpoint>,
    /// Host-side interfaces its traffic is counted on.
    pub interfaces: Vec<u32>,
    /// CLOCK_MONOTONIC time it last started or woke, or was first seen.
    pub awake_since_ns: u64,
    /// Completed checkpoints.
    pub sleeps: u64,
    /// Completed restores.
    pub wakes: u64,
    /// Memory use just before the last checkpoint.
    pub memory_freed: Option<u64>,
    /// Duration of the last checkpoint.
    pub last_sleep: Option<Duration>,
    /// Duration of the last restore, until its ports accepted connections.
    pub last_wake: Option<Duration>,
    /// Phases of the last restore.
    pub last_wake_phases: Option<WakePhases>,
    /// Wakes started, to tell callers that waited for one wake apart from
    /// those that arrive after it.
    pub wake_attempts: u64,
    /// Error of the last wake, `None` when it succeeded.
    pub last_wake_failure: Option<String>,
    /// Checkpoint failures in a row.
    pub sleep_failures: u32,
    /// CLOCK_MONOTONIC time before which no new checkpoint is tried.
    pub next_sleep_attempt_ns: u64,
    /// The process that last received a signal, and the CLOCK_MONOTONIC
    /// time until which it is not checkpointed. A new process, after a
    /// restart, is not affected.
    pub signalled: Option<(u32, u64)>,
    /// The last error of a checkpoint or restore.
    pub last_error: Option<String>,
    /// Connections the holder accepted for this container.
    pub held_connections: u64,
    /// Connections of the holder for this container that are open now.
    pub open_held_connections: u64,
    /// Connections for this container that the holder closed at once
    /// because it or the container had its maximum open.
    pub rejected_connections: u64,
    /// The stand-in that keeps its addresses and names while it sleeps,
    /// with the host-side interfaces counted for it.
    pub stand_in: Option<(String, Vec<u32>)>,
}

impl Container {
    /// Creates a container entry.
    pub fn new(id: String, slot: Option<u32>, record: Record) -> Self {
        Self {
            id,
            slot,
            operation: Arc::new(tokio::sync::Mutex::new(())),
            record: Mutex::new(record),
        }
    }

    /// Locks the record.
    pub fn record(&self) -> MutexGuard<'_, Record> {
        self.record.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Record {
    /// Creates the record of a container seen for the first time.
    pub fn new(info: ContainerInfo, policy: Policy, state: State, now_ns: u64) -> Self {
        Self {
            info,
            policy,
            unmanageable: None,
            state,
            held_ports: Vec::new(),
            checkpoint: None,
            runc_checkpoint: None,
            interfaces: Vec::new(),
            awake_since_ns: now_ns,
            sleeps: 0,
            wakes: 0,
            memory_freed: None,
            last_sleep: None,
            last_wake: None,
            last_wake_phases: None,
            wake_attempts: 0,
            last_wake_failure: None,
            sleep_failures: 0,
            next_sleep_attempt_ns: 0,
            signalled: None,
            last_error: None,
            held_connections: 0,
            open_held_connections: 0,
            rejected_connections: 0,
            stand_in: None,
        }
    }
}

/// A name or id that does not select exactly one container.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum LookupError {
    /// Nothing matches.
    #[error(
        "no managed container matches {0:?}: `lightwhale status` lists the managed ones, and a container \
         is managed when it has the label lightwhale.enable=true, or with `lightwhale run --all`"
    )]
    NotFound(String),
    /// An id prefix matches several containers.
    #[error("{0:?} matches several containers; give more of the id or the name")]
    Ambiguous(String),
}

/// All known containers by id, and the allocation of slots.
#[derive(Debug, Default)]
pub struct Registry {
    containers: HashMap<String, Arc<Container>>,
    free_slots: Vec<u32>,
    next_slot: u32,
}

impl Registry {
    /// Returns the container with this full id.
    pub fn get(&self, id: &str) -> Option<Arc<Container>> {
        self.containers.get(id).cloned()
    }

    /// Returns every container, sorted by name.
    pub fn all(&self) -> Vec<Arc<Container>> {
        let mut all: Vec<Arc<Container>> = self.containers.values().cloned().collect();
        all.sort_by_cached_key(|container| container.record().info.name.clone());
        all
    }

    /// Adds a container.
    pub fn insert(&mut self, container: Arc<Container>) {
        self.containers.insert(container.id.clone(), container);
    }

    /// Removes a container and frees its slot.
    pub fn remove(&mut self, id: &str) -> Option<Arc<Container>> {
        let container = self.containers.remove(id)?;
        if let Some(slot) = container.slot {
            self.free_slots.push(slot);
        }
        Some(container)
    }

    /// Allocates a slot for a managed container.
    pub fn allocate_slot(&mut self) -> u32 {
        self.free_slots.pop().unwrap_or_else(|| {
            self.next_slot += 1;
            self.next_slot - 1
        })
    }

    /// Returns the container that owns a slot.
    pub fn by_slot(&self, slot: u32) -> Option<Arc<Container>> {
        self.containers.values().find(|container| container.slot == Some(slot)).cloned()
    }

    /// Finds a container by exact name, full id or unique id prefix.
    pub fn find(&self, query: &str) -> Result<Arc<Container>, LookupError> {
        let query = query.trim_start_matches('/');
        if let Some(container) = self.containers.get(query) {
            return Ok(container.clone());
        }
        if let Some(container) = self.containers.values().find(|c| c.record().info.name == query) {
            return Ok(container.clone());
        }
        let matches: Vec<&Arc<Container>> = self
            .containers
            .values()
            .filter(|container| !query.is_empty() && container.id.starts_with(query))
            .collect();
        match matches.as_slice() {
            [] => Err(LookupError::NotFound(query.to_owned())),
            [container] => Ok((*container).clone()),
            _ => Err(LookupError::Ambiguous(query.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::{
        docker::NetworkMode,
        labels::{OpenConnections, RestoreFailure, DEFAULT_WAKE_TIMEOUT},
    };

    fn container(registry: &mut Registry, id: &str, name: &str) {
        let info = ContainerInfo {
            id: id.into(),
            name: name.into(),
            labels: HashMap::new(),
            running: true,
            paused: false,
            started_at_ms: None,
            pid: None,
            network_mode: NetworkMode::Own,
            auto_remove: false,
            restart_policy: None,
            endpoints: Vec::new(),
            ports: Vec::new(),
            runtime: None,
        };
        let slot = registry.allocate_slot();
        let policy = Policy {
            idle_timeout: Duration::from_secs(1),
            wake_timeout: DEFAULT_WAKE_TIMEOUT,
            on_restore_failure: RestoreFailure::Start,
            open_connections: OpenConnections::KeepAwake,
        };
        let record = Record::new(info, policy, State::Awake, 0);
        registry.insert(Arc::new(Container::new(id.into(), Some(slot), record)));
    }

    #[test]
    fn find_by_name_id_and_prefix() {
        let mut registry = Registry::default();
        container(&mut registry, "abc123", "web");
        container(&mut registry, "abd456", "db");
        assert_eq!(registry.find("web").unwrap().id, "abc123");
        assert_eq!(registry.find("/db").unwrap().id, "abd456");
        assert_eq!(registry.find("abc").unwrap().id, "abc123");
        assert_eq!(registry.find("ab").unwrap_err(), LookupError::Ambiguous("ab".into()));
        assert_eq!(registry.find("nope").unwrap_err(), LookupError::NotFound("nope".into()));
        assert_eq!(registry.find("").unwrap_err(), LookupError::NotFound("".into()));
    }

    #[test]
    fn slots_are_reused() {
        let mut registry = Registry::default();
        container(&mut registry, "a", "a");
        container(&mut registry, "b", "b");
        registry.remove("a");
        assert_eq!(registry.allocate_slot(), 0);
        assert_eq!(registry.allocate_slot(), 2);
    }
}
