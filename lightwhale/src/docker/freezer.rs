//! The cgroup freezer of a container that runc runs.
//!
//! CRIU freezes a container's cgroup before it dumps the processes, but it
//! checks whether the freeze finished only every 100 ms, and its first check
//! often comes before the kernel finished. The daemon therefore freezes
//! the cgroup itself right before `runc checkpoint` and polls every
//! millisecond.
//! CRIU then finds the cgroup frozen, seizes the processes and thaws the
//! cgroup. After a failed dump, CRIU freezes a cgroup that it found frozen
//! again, so the daemon thaws it after every checkpoint.

use std::{
    fs,
    future::Future,
    io,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use tracing::{debug, warn};

/// How often a freeze in progress is checked.
const POLL: Duration = Duration::from_millis(1);

/// How long the daemon waits for a container's cgroup to freeze before it
/// leaves the freeze to CRIU.
const FREEZE_LIMIT: Duration = Duration::from_secs(1);

/// Runs `checkpoint`, a checkpoint of container `id` through CRIU, with the
/// container's cgroup frozen first and thawed afterwards. `state_file` is
/// the container's runc state, which names its cgroup. Without a freezer,
/// when the freeze takes too long, or for a cgroup frozen already, as by
/// `docker pause`, the cgroup is left to CRIU as it is.
pub async fn checkpoint_frozen<T>(id: &str, state_file: &Path, checkpoint: impl Future<Output = T>) -> T {
    let freezer = Freezer::from_runc_state(state_file).filter(|freezer| matches!(freezer.is_frozen(), Ok(false)));
    let mut frozen = None;
    if let Some(freezer) = freezer {
        match freezer.freeze(FREEZE_LIMIT).await {
            Ok(true) => frozen = Some(freezer),
            Ok(false) => debug!(id, "the cgroup did not freeze in time; CRIU freezes it"),
            Err(error) => {
                debug!(id, %error, "cannot freeze the cgroup; CRIU freezes it");
                // A failed write may still have started the freeze.
                let _ = freezer.thaw();
            }
        }
    }
    let result = checkpoint.await;
    // After a dump, CRIU thawed the cgroup and killed the processes. After
    // a failed one, it froze the cgroup again, as it found it.
    if let Some(freezer) = frozen {
        if let Err(error) = freezer.thaw() {
            warn!(id, %error, "cannot thaw the container's cgroup after its checkpoint");
        }
    }
    result
}

/// The freezer of one container's cgroup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Freezer {
    /// The cgroup's directory.
    dir: PathBuf,
    /// Whether the freezer is the v1 controller or cgroup v2's.
    version: Version,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Version {
    /// `freezer.state` with `FROZEN` and `THAWED`.
    V1,
    /// `cgroup.freeze` with `1` and `0`, and `frozen` in `cgroup.events`.
    V2,
}

impl Freezer {
    /// Finds the freezer that runc uses for a container from its state file
    /// (`state.json` in runc's state directory): the v1 freezer controller
    /// where the host has one, else the container's cgroup v2.
    pub fn from_runc_state(state_file: &Path) -> Option<Self> {
        let state: serde_json::Value = serde_json::from_slice(&fs::read(state_file).ok()?).ok()?;
        Self::from_cgroup_paths(&state["cgroup_paths"])
    }

    fn from_cgroup_paths(paths: &serde_json::Value) -> Option<Self> {
        if let Some(dir) = paths["freezer"].as_str() {
            return Some(Self { dir: dir.into(), version: Version::V1 });
        }
        let dir = paths[""].as_str()?;
        Some(Self { dir: dir.into(), version: Version::V2 })
    }

    /// Freezes the cgroup and waits until the kernel finished, for at most
    /// `limit`. Returns `false`, with the cgroup thawed again, when the
    /// freeze did not finish in time.
    pub async fn freeze(&self, limit: Duration) -> io::Result<bool> {
        let deadline = Instant::now() + limit;
        self.write(true)?;
        loop {
            if self.is_frozen()? {
                return Ok(true);
            }
            if Instant::now() >= deadline {
                self.thaw()?;
                return Ok(false);
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Thaws the cgroup. A cgroup that no longer exists is not an error.
    pub fn thaw(&self) -> io::Result<()> {
        match self.write(false) {
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
            result => result,
        }
    }

    /// Returns whether the cgroup is frozen. A cgroup that is still
    /// freezing is not.
    pub fn is_frozen(&self) -> io::Result<bool> {
        match self.version {
            Version::V1 => Ok(fs::read_to_string(self.dir.join("freezer.state"))?.trim() == "FROZEN"),
            Version::V2 => Ok(fs::read_to_string(self.dir.join("cgroup.events"))?
                .lines()
                .any(|line| line.trim() == "frozen 1")),
        }
    }

    fn write(&self, frozen: bool) -> io::Result<()> {
        let (file, value) = match (self.version, frozen) {
            (Version::V1, true) => ("freezer.state", "FROZEN"),
            (Version::V1, false) => ("freezer.state", "THAWED"),
            (Version::V2, true) => ("cgroup.freeze", "1"),
            (Version::V2, false) => ("cgroup.freeze", "0"),
        };
        fs::write(self.dir.join(file), value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn cgroup_paths_prefer_v1_freezer() {
        let paths = json!({"": "/sys/fs/cgroup/unified/docker/a", "freezer": "/sys/fs/cgroup/freezer/docker/a"});
        let freezer = Freezer::from_cgroup_paths(&paths).unwrap();
        assert_eq!(freezer.dir, PathBuf::from("/sys/fs/cgroup/freezer/docker/a"));
        assert_eq!(freezer.version, Version::V1);
    }

    #[test]
    fn cgroup_paths_fall_back_to_v2() {
        let paths = json!({"": "/sys/fs/cgroup/system.slice/docker-a.scope"});
        let freezer = Freezer::from_cgroup_paths(&paths).unwrap();
        assert_eq!(freezer.dir, PathBuf::from("/sys/fs/cgroup/system.slice/docker-a.scope"));
        assert_eq!(freezer.version, Version::V2);
    }

    #[test]
    fn cgroup_paths_without_freezer_are_none() {
        assert_eq!(Freezer::from_cgroup_paths(&json!({"memory": "/m"})), None);
        assert_eq!(Freezer::from_cgroup_paths(&json!(null)), None);
    }

    #[test]
    fn v1_state_file_reads_and_writes() {
        let dir = std::env::temp_dir().join(format!("lightwhale-freezer-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let freezer = Freezer { dir: dir.clone(), version: Version::V1 };

        fs::write(dir.join("freezer.state"), "FREEZING\n").unwrap();
        assert!(!freezer.is_frozen().unwrap());
        fs::write(dir.join("freezer.state"), "FROZEN\n").unwrap();
        assert!(freezer.is_frozen().unwrap());
        freezer.thaw().unwrap();
        assert_eq!(fs::read_to_string(dir.join("freezer.state")).unwrap(), "THAWED");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn thaw_of_removed_cgroup_succeeds() {
        let freezer = Freezer { dir: PathBuf::from("/nonexistent/lightwhale/cgroup"), version: Version::V2 };
        assert!(freezer.thaw().is_ok());
    }
}
