//! Persisted state: what the daemon must remember about sleeping containers
//! across restarts, including `kill -9`.
//!
//! Docker keeps the checkpoints and the containers' configuration, so a
//! daemon that lost this file still finds sleeping containers from their
//! `lightwhale-*` checkpoints, or from the complete checkpoints in the
//! state directory for containers of the `lightwhale` runtime. The file
//! records which checkpoint each sleeping container uses. It also keeps
//! what Docker drops when a container stops: its former addresses and
//! aliases, which its stand-in needs, and the ports that were published
//! when it went to sleep.

use std::{
    collections::BTreeMap,
    fs::{self, File},
    io,
    os::unix::fs::DirBuilderExt as _,
    path::{Path, PathBuf},
    sync::Mutex,
    time::SystemTime,
};

use serde::{Deserialize, Serialize};
use thiserror::Error;
use tracing::{error, info};

use crate::private_file;

use bollard::models::RestartPolicy;

use crate::docker::{engine::CHECKPOINT_PREFIX, Endpoint, PublishedPort};

/// Default state directory.
pub const DEFAULT_DIR: &str = "/var/lib/lightwhale";
const FILE_NAME: &str = "state.json";
/// Format version of the state file; a file of another version is moved
/// aside like a corrupt one.
const VERSION: u32 = 1;

/// The content of the state file.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Persisted {
    /// Format version, [`VERSION`].
    pub version: u32,
    /// Containers that lightwhale put to sleep, by full id.
    pub sleeping: BTreeMap<String, SleepingContainer>,
}

/// A container that lightwhale put to sleep.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SleepingContainer {
    /// Container name at the time of the sleep.
    pub name: String,
    /// Checkpoint to restore it from.
    pub checkpoint: String,
    /// Published ports held for it.
    pub held_ports: Vec<PublishedPort>,
    /// Its interfaces before the sleep, with addresses and aliases.
    pub endpoints: Vec<Endpoint>,
    /// Memory use just before the checkpoint, in bytes.
    pub memory_freed: Option<u64>,
    /// Restart policy suspended while it sleeps, set back when it wakes.
    #[serde(default)]
    pub restart_policy: Option<RestartPolicy>,
    /// Directory of its checkpoint when it slept through runc, as
    /// containers of the `lightwhale` runtime do. It is absent when Docker
    /// keeps the checkpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runc_checkpoint_dir: Option<PathBuf>,
}

/// A state file that cannot be used.
#[derive(Debug, Error)]
pub enum StoreError {
    /// Reading, writing or creating failed.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The state file and its content in memory.
#[derive(Debug)]
pub struct Store {
    /// Path of the state file.
    path: PathBuf,
    /// The content, written back after every change.
    state: Mutex<Persisted>,
}

impl Store {
    /// Opens the state directory (created with mode 0700) and loads the
    /// state file. A file that does not parse or fails validation is moved
    /// aside with an error in the log, and the daemon starts from what
    /// Docker reports.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let io_error = |source| StoreError::Io { path: dir.to_owned(), source };
        fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(io_error)?;
        let path = dir.join(FILE_NAME);

        let state = match fs::read(&path) {
            Ok(bytes) => match parse(&bytes) {
                Ok(state) => {
                    info!(path = %path.display(), sleeping = state.sleeping.len(), "loaded state");
                    state
                }
                Err(reason) => {
                    let aside = move_aside(&path)?;
                    error!(
                        path = %path.display(),
                        moved_to = %aside.display(),
                        %reason,
                        "state file is invalid; moved it aside and rebuilding from Docker"
                    );
                    Persisted { version: VERSION, ..Default::default() }
                }
            },
            Err(error) if error.kind() == io::ErrorKind::NotFound => Persisted { version: VERSION, ..Default::default() },
            Err(source) => return Err(StoreError::Io { path, source }),
        };
        Ok(Self { path, state: Mutex::new(state) })
    }

    /// Returns what is recorded about a sleeping container.
    pub fn sleeping(&self, id: &str) -> Option<SleepingContainer> {
        self.lock().sleeping.get(id).cloned()
    }

    /// Records a container that went to sleep.
    pub fn record_sleep(&self, id: &str, container: SleepingContainer) -> Result<(), StoreError> {
        let mut state = self.lock();
        state.sleeping.insert(id.to_owned(), container);
        self.write(&state)
    }

    /// Forgets a container that woke or was removed. Does nothing when it
    /// is not recorded.
    pub fn forget(&self, id: &str) -> Result<(), StoreError> {
        let mut state = self.lock();
        if state.sleeping.remove(id).is_none() {
            return Ok(());
        }
        self.write(&state)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Persisted> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Writes the state atomically: a temporary file with mode 0600,
    /// fsync, rename over the old file, fsync of the directory.
    fn write(&self, state: &Persisted) -> Result<(), StoreError> {
        let temporary = self.path.with_extension("json.tmp");
        let io_error = |path: &Path| {
            let path = path.to_owned();
            move |source| StoreError::Io { path, source }
        };
        let bytes = serde_json::to_vec_pretty(state).map_err(|error| StoreError::Io {
            path: self.path.clone(),
            source: io::Error::other(error),
        })?;

        private_file::replace(&self.path, &temporary, &bytes).map_err(|(path, source)| StoreError::Io { path, source })?;
        if let Some(dir) = self.path.parent() {
            File::open(dir).and_then(|dir| dir.sync_all()).map_err(io_error(dir))?;
        }
        Ok(())
    }
}

/// Parses and validates a state file.
fn parse(bytes: &[u8]) -> Result<Persisted, String> {
    let state: Persisted = serde_json::from_slice(bytes).map_err(|error| error.to_string())?;
    if state.version != VERSION {
        return Err(format!("version {} is not the supported version {VERSION}", state.version));
    }
    for (id, container) in &state.sleeping {
        if id.len() != 64 || !id.bytes().all(|byte| byte.is_ascii_hexdigit()) {
            return Err(format!("{id:?} is not a full container id"));
        }
        if !container.checkpoint.starts_with(CHECKPOINT_PREFIX) {
            return Err(format!("checkpoint {:?} of {id} is not a lightwhale checkpoint", container.checkpoint));
        }
        if container.held_ports.iter().any(|port| port.host_port == 0 || port.container_port == 0) {
            return Err(format!("{id} has a held port 0"));
        }
        if let Some(dir) = &container.runc_checkpoint_dir {
            if !dir.is_absolute() || !dir.ends_with(&container.checkpoint) {
                return Err(format!(
                    "checkpoint directory {} of {id} is not an absolute path ending in {}",
                    dir.display(),
                    container.checkpoint
                ));
            }
        }
    }
    Ok(state)
}

/// Renames a bad state file to `state.json.invalid-<unix seconds>`.
fn move_aside(path: &Path) -> Result<PathBuf, StoreError> {
    let seconds = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or(0);
    let aside = path.with_extension(format!("json.invalid-{seconds}"));
    fs::rename(path, &aside).map_err(|source| StoreError::Io { path: path.to_owned(), source })?;
    Ok(aside)
}

#[cfg(test)]
mod tests {
    use std::{net::Ipv4Addr, os::unix::fs::PermissionsExt as _};

    use super::*;

    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn temporary_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("lightwhale-store-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    fn sleeping() -> SleepingContainer {
        SleepingContainer {
            name: "db".into(),
            checkpoint: "lightwhale-1".into(),
            held_ports: vec![PublishedPort { host_ip: Ipv4Addr::LOCALHOST, host_port: 8080, container_port: 80 }],
            endpoints: vec![Endpoint {
                network: "backend".into(),
                ipv4: Some(Ipv4Addr::new(10, 0, 0, 2)),
                mac: Some("02:42:0a:00:00:02".into()),
                aliases: vec!["database".into()],
            }],
            memory_freed: Some(1 << 20),
            restart_policy: None,
            runc_checkpoint_dir: Some(PathBuf::from("/var/lib/lightwhale/checkpoints").join(ID).join("lightwhale-1")),
        }
    }

    #[test]
    fn state_survives_reopen() {
        let dir = temporary_dir("reopen");
        let store = Store::open(&dir).unwrap();
        store.record_sleep(ID, sleeping()).unwrap();
        let reopened = Store::open(&dir).unwrap();
        assert_eq!(reopened.sleeping(ID), Some(sleeping()));

        reopened.forget(ID).unwrap();
        assert_eq!(Store::open(&dir).unwrap().sleeping(ID), None);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn state_file_is_private() {
        let dir = temporary_dir("private");
        let store = Store::open(&dir).unwrap();
        store.record_sleep(ID, sleeping()).unwrap();
        let mode = fs::metadata(dir.join(FILE_NAME)).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "mode {mode:o}");
        let dir_mode = fs::metadata(&dir).unwrap().permissions().mode();
        assert_eq!(dir_mode & 0o077, 0, "mode {dir_mode:o}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn corrupt_state_is_moved_aside() {
        let dir = temporary_dir("corrupt");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(FILE_NAME), b"{\"version\": 1, \"sleeping\": ").unwrap();
        let store = Store::open(&dir).unwrap();
        assert_eq!(store.sleeping(ID), None);
        let names: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(names.iter().any(|name| name.starts_with("state.json.invalid-")), "{names:?}");
        assert!(!names.contains(&FILE_NAME.to_owned()), "{names:?}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn invalid_content_is_rejected() {
        let mut state = Persisted { version: VERSION, ..Default::default() };
        state.sleeping.insert("short".into(), sleeping());
        let bytes = serde_json::to_vec(&state).unwrap();
        assert!(parse(&bytes).unwrap_err().contains("full container id"));

        let mut state = Persisted { version: VERSION, ..Default::default() };
        let mut container = sleeping();
        container.checkpoint = "mine".into();
        state.sleeping.insert(ID.into(), container);
        let bytes = serde_json::to_vec(&state).unwrap();
        assert!(parse(&bytes).unwrap_err().contains("not a lightwhale checkpoint"));

        let mut state = Persisted { version: VERSION, ..Default::default() };
        let mut container = sleeping();
        container.runc_checkpoint_dir = Some("checkpoints/lightwhale-1".into());
        state.sleeping.insert(ID.into(), container);
        let bytes = serde_json::to_vec(&state).unwrap();
        assert!(parse(&bytes).unwrap_err().contains("not an absolute path"));

        assert!(parse(br#"{"version": 2, "sleeping": {}}"#).unwrap_err().contains("version 2"));
    }
}
