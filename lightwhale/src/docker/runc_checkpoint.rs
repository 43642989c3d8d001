//! Checkpoints through runc directly, for containers created with
//! `docker run --runtime lightwhale`.
//!
//! Docker 20.10 with containerd 1.6 copies every checkpoint through
//! containerd's content store as tar archives, on checkpoint and again on
//! restore, which takes seconds for a few hundred MiB while CRIU itself
//! needs a fraction of that. On this path the daemon runs `runc
//! checkpoint` itself, into an image directory under its state directory.
//! The container's processes exit, and Docker shows the container exited
//! with code 137. To wake it, the daemon writes a restore marker that names
//! the image directory and starts the container with a plain `docker
//! start`. The `lightwhale` runtime (`runtime/lightwhale-runc` in the
//! repository) then turns runc's `create` into `runc restore`. Docker sets
//! up the container's network and keeps its logs and state as for any
//! start.
//!
//! Each checkpoint has a directory `<state dir>/checkpoints/<id>/<name>`:
//! `images/` contains CRIU's images, `dump.log` CRIU's log of the checkpoint
//! and `restore/` its log of the last restore. The daemon owns these
//! directories and removes them after a successful wake or when the
//! container is removed.

use std::{
    collections::HashSet,
    fs,
    io,
    os::unix::fs::DirBuilderExt as _,
    path::{Path, PathBuf},
    time::SystemTime,
};

use thiserror::Error;
use tokio::process::Command;
use tracing::{debug, warn};

use super::{
    engine::CHECKPOINT_PREFIX,
    freezer::{checkpoint_frozen, Freezer},
};
use crate::private_file;

/// Name of the runtime that containers opt in with, as registered in
/// dockerd.
pub const RUNTIME: &str = "lightwhale";

/// Directory of the restore markers, which the `lightwhale` runtime reads.
const MARKER_DIR: &str = "/run/lightwhale/restore";

/// Suffix of the file the runtime leaves after a successful restore, so
/// that the following `runc start` does nothing.
const RESTORED_SUFFIX: &str = ".restored";

/// Directory under which dockerd's runtimes keep runc's state, one
/// `runtime-<name>/moby/<id>` directory per container. It is under
/// dockerd's `--exec-root`, `/var/run/docker` unless set.
// NOTE: a dockerd started with another `--exec-root` keeps runc's state
// elsewhere, and checkpoints through runc fail with "runc state not found".
const RUNC_STATE_ROOTS: &str = "/run/docker";

/// Namespace of Docker's containers in containerd, part of runc's root.
const CONTAINERD_NAMESPACE: &str = "moby";

/// Line that CRIU writes last to `dump.log` when a checkpoint succeeded.
const DUMP_FINISHED: &str = "Dumping finished successfully";


/// Errors of checkpoints and restores through runc.
#[derive(Debug, Error)]
pub enum RuncError {
    /// A file or directory could not be read, written or removed.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// runc keeps no state for the container, so it does not run under a
    /// runtime that lightwhale can find.
    #[error("runc state of container {id} not found under {RUNC_STATE_ROOTS}/runtime-*/{CONTAINERD_NAMESPACE}")]
    StateNotFound { id: String },
    /// The runc binary could not be started.
    #[error("cannot run {runc}: {source}")]
    Run {
        runc: PathBuf,
        #[source]
        source: io::Error,
    },
    /// `runc checkpoint` failed.
    #[error("runc checkpoint failed ({status}): {output}. CRIU's log: {log}")]
    Checkpoint { status: String, output: String, log: String },
    /// The image directory of a checkpoint is missing.
    #[error("checkpoint images {0} not found")]
    ImagesMissing(PathBuf),
}

/// The files of one checkpoint taken through runc.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuncCheckpoint {
    /// Checkpoint name, `lightwhale-<Unix milliseconds>`.
    pub name: String,
    /// Directory of the checkpoint: its images, CRIU's logs.
    pub dir: PathBuf,
}

impl RuncCheckpoint {
    /// Directory of CRIU's images.
    pub fn images(&self) -> PathBuf {
        self.dir.join("images")
    }

    /// CRIU's work directory for the restore, where it writes `restore.log`.
    fn restore_work(&self) -> PathBuf {
        self.dir.join("restore")
    }

    /// Returns whether CRIU finished the checkpoint: its `dump.log`
    /// contains the line CRIU writes last on success. A checkpoint that
    /// failed or was interrupted has no such line.
    pub fn is_complete(&self) -> bool {
        fs::read_to_string(self.dir.join("dump.log")).is_ok_and(|log| log.contains(DUMP_FINISHED))
    }
}

/// Runs `runc checkpoint` and prepares restores, with the runc and CRIU
/// that dockerd uses.
#[derive(Clone, Debug)]
pub struct RuncCheckpointer {
    /// The runc binary found in dockerd's `PATH`.
    runc: PathBuf,
    /// The CRIU binary found in dockerd's `PATH`; `None` lets runc look it
    /// up in the daemon's own `PATH`.
    criu: Option<PathBuf>,
    /// `<state dir>/checkpoints`, with one directory per container.
    root: PathBuf,
    /// Directory of the restore markers.
    markers: PathBuf,
}

impl RuncCheckpointer {
    /// Creates a checkpointer that keeps checkpoints under
    /// `<state_dir>/checkpoints`.
    pub fn new(runc: PathBuf, criu: Option<PathBuf>, state_dir: &Path) -> Self {
        Self {
            runc,
            criu,
            root: state_dir.join("checkpoints"),
            markers: PathBuf::from(MARKER_DIR),
        }
    }

    /// Returns the checkpoint called `name` of container `id`, which may
    /// not exist yet.
    pub fn checkpoint_named(&self, id: &str, name: &str) -> RuncCheckpoint {
        RuncCheckpoint {
            name: name.to_owned(),
            dir: self.root.join(id).join(name),
        }
    }

    /// Checkpoints the running container `id` into a new checkpoint called
    /// `name`. runc stops the container's processes once CRIU dumped them.
    /// A failed checkpoint's directory stays for inspection.
    // NOTE: runc runs without a time limit, so a CRIU that hangs keeps the
    // container's operation lock until it exits.
    pub async fn checkpoint(&self, id: &str, name: &str) -> Result<RuncCheckpoint, RuncError> {
        let checkpoint = self.checkpoint_named(id, name);
        let images = checkpoint.images();
        create_private_dir(&images)?;
        let state_root = runc_state_root(id).ok_or_else(|| RuncError::StateNotFound { id: id.to_owned() })?;

        let state_file = state_root.join(id).join("state.json");
        let result = checkpoint_frozen(id, &state_file, self.run_checkpoint(&state_root, id, &checkpoint)).await;
        result.map(|()| checkpoint)
    }

    /// Thaws the cgroup of the running container `id` if it is frozen, and
    /// returns whether it was. For a container that `docker pause` did not
    /// freeze: a daemon stopped during a checkpoint may have left it frozen.
    pub fn thaw_left_frozen(&self, id: &str) -> Result<bool, RuncError> {
        let Some(state_root) = runc_state_root(id) else {
            return Ok(false);
        };
        let state_file = state_root.join(id).join("state.json");
        let Some(freezer) = Freezer::from_runc_state(&state_file) else {
            return Ok(false);
        };
        let io_error = |source| RuncError::Io { path: state_file.clone(), source };
        if !freezer.is_frozen().map_err(io_error)? {
            return Ok(false);
        }
        freezer.thaw().map_err(io_error)?;
        Ok(true)
    }

    /// Runs `runc checkpoint` of container `id`, whose runc state is under
    /// `state_root`, into `checkpoint`.
    async fn run_checkpoint(&self, state_root: &Path, id: &str, checkpoint: &RuncCheckpoint) -> Result<(), RuncError> {
        let images = checkpoint.images();
        let mut command = Command::new(&self.runc);
        command.arg("--root").arg(state_root);
        if let Some(criu) = &self.criu {
            command.arg("--criu").arg(criu);
        }
        command
            .arg("checkpoint")
            .arg("--image-path")
            .arg(&images)
            .arg("--work-path")
            .arg(&checkpoint.dir)
            .arg(id);
        debug!(?command, "running runc checkpoint");
        let output = command.output().await.map_err(|source| RuncError::Run {
            runc: self.runc.clone(),
            source,
        })?;
        if !output.status.success() {
            let mut text = String::from_utf8_lossy(&output.stderr).trim().to_owned();
            if text.is_empty() {
                text = String::from_utf8_lossy(&output.stdout).trim().to_owned();
            }
            return Err(RuncError::Checkpoint {
                status: output.status.to_string(),
                output: text,
                log: checkpoint.dir.join("dump.log").display().to_string(),
            });
        }
        Ok(())
    }

    /// Returns the newest complete checkpoint of container `id` on disk, to
    /// find a sleeping container again when the state file does not name
    /// it.
    pub fn newest_complete(&self, id: &str) -> Option<RuncCheckpoint> {
        let entries = fs::read_dir(self.root.join(id)).ok()?;
        let mut checkpoints: Vec<RuncCheckpoint> = entries
            .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
            .filter(|name| name.starts_with(CHECKPOINT_PREFIX))
            .map(|name| self.checkpoint_named(id, &name))
            .filter(RuncCheckpoint::is_complete)
            .collect();
        checkpoints.sort_by_key(|checkpoint| super::engine::checkpoint_time(&checkpoint.name));
        checkpoints.pop()
    }

    /// Writes the restore marker that makes the runtime restore container
    /// `id` from `checkpoint` at its next `create`. The marker is written
    /// to a temporary file and renamed, so the runtime never reads half of
    /// it.
    pub fn prepare_restore(&self, id: &str, checkpoint: &RuncCheckpoint) -> Result<(), RuncError> {
        let images = checkpoint.images();
        if !images.is_dir() {
            return Err(RuncError::ImagesMissing(images));
        }
        create_private_dir(&checkpoint.restore_work())?;
        create_private_dir(&self.markers)?;
        // A leftover from an interrupted wake would make the runtime skip
        // the start of a container that was not restored.
        remove_file(&self.restored_file(id))?;

        let mut content = format!(
            "image-path={}\nwork-path={}\n",
            images.display(),
            checkpoint.restore_work().display()
        );
        if let Some(criu) = &self.criu {
            content.push_str(&format!("criu={}\n", criu.display()));
        }
        let marker = self.markers.join(id);
        let temporary = self.markers.join(format!(".{id}.tmp"));
        private_file::replace(&marker, &temporary, content.as_bytes()).map_err(|(path, source)| RuncError::Io { path, source })?;
        Ok(())
    }

    /// Removes what a restore of container `id` may have left: the marker
    /// when the engine never called the runtime's `create`, and the file
    /// that skips `start` when it never called `start`.
    pub fn finish_restore(&self, id: &str) {
        for path in [self.markers.join(id), self.restored_file(id)] {
            if let Err(error) = remove_file(&path) {
                warn!(%error, "cannot remove a restore marker");
            }
        }
    }

    /// Lists the checkpoint directories of container `id`.
    pub fn checkpoint_dirs(&self, id: &str) -> Vec<PathBuf> {
        match fs::read_dir(self.root.join(id)) {
            Ok(entries) => entries.flatten().map(|entry| entry.path()).collect(),
            Err(_) => Vec::new(),
        }
    }

    /// Removes the checkpoint directories `dirs` of container `id`, and the
    /// container's directory once it is empty. A checkpoint that a new
    /// sleep created meanwhile is not in `dirs` and stays. Returns the bytes
    /// freed on disk.
    pub fn remove_checkpoints(&self, id: &str, dirs: &[PathBuf]) -> u64 {
        let mut freed = 0;
        for dir in dirs {
            let size = disk_usage(dir);
            match fs::remove_dir_all(dir) {
                Ok(()) => freed += size,
                Err(error) if error.kind() == io::ErrorKind::NotFound => {}
                Err(error) => warn!(path = %dir.display(), %error, "cannot remove a checkpoint"),
            }
        }
        // Fails while another checkpoint is in it, which is expected.
        let _ = fs::remove_dir(self.root.join(id));
        freed
    }

    /// Removes every checkpoint of container `id` and its restore marker.
    /// Returns the bytes freed on disk.
    pub fn remove_all(&self, id: &str) -> u64 {
        self.finish_restore(id);
        let dir = self.root.join(id);
        let size = disk_usage(&dir);
        match fs::remove_dir_all(&dir) {
            Ok(()) => size,
            Err(error) if error.kind() == io::ErrorKind::NotFound => 0,
            Err(error) => {
                warn!(path = %dir.display(), %error, "cannot remove the checkpoints of a container");
                0
            }
        }
    }

    /// Removes the checkpoints of containers that no longer exist, such as
    /// those removed while the daemon did not run. `live` contains the full
    /// ids of every container the engine listed at `listed_at`. Directories
    /// changed since then may belong to a container created after the list,
    /// so they stay.
    pub fn remove_orphans(&self, live: &HashSet<&String>, listed_at: SystemTime) {
        let Ok(entries) = fs::read_dir(&self.root) else {
            return;
        };
        for entry in entries.flatten() {
            let Ok(id) = entry.file_name().into_string() else {
                continue;
            };
            let changed = entry.metadata().and_then(|metadata| metadata.modified());
            let is_old = changed.is_ok_and(|changed| changed < listed_at);
            if is_old && !live.contains(&id) {
                let freed = self.remove_all(&id);
                debug!(id = %&id[..id.len().min(12)], freed_bytes = freed, "removed checkpoints of a removed container");
            }
        }
    }

    fn restored_file(&self, id: &str) -> PathBuf {
        self.markers.join(format!("{id}{RESTORED_SUFFIX}"))
    }
}

/// Finds runc's root for container `id`: the `runtime-*/moby` directory of
/// dockerd's runtimes that contains a state for it.
fn runc_state_root(id: &str) -> Option<PathBuf> {
    fs::read_dir(RUNC_STATE_ROOTS)
        .ok()?
        .flatten()
        .filter(|entry| entry.file_name().to_string_lossy().starts_with("runtime-"))
        .map(|entry| entry.path().join(CONTAINERD_NAMESPACE))
        .find(|root| root.join(id).join("state.json").is_file())
}

/// Creates a directory and its parents, readable by root only.
fn create_private_dir(dir: &Path) -> Result<(), RuncError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| RuncError::Io { path: dir.to_owned(), source })
}

/// Removes a file; a missing file is not an error.
fn remove_file(path: &Path) -> Result<(), RuncError> {
    match fs::remove_file(path) {
        Err(error) if error.kind() != io::ErrorKind::NotFound => {
            Err(RuncError::Io { path: path.to_owned(), source: error })
        }
        _ => Ok(()),
    }
}

/// Returns the size of the files under `dir`, 0 where it cannot be read.
fn disk_usage(dir: &Path) -> u64 {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.file_type() {
            Ok(kind) if kind.is_dir() => disk_usage(&entry.path()),
            Ok(_) => entry.metadata().map(|metadata| metadata.len()).unwrap_or(0),
            Err(_) => 0,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn checkpointer(name: &str) -> (RuncCheckpointer, PathBuf) {
        let dir = std::env::temp_dir().join(format!("lightwhale-runc-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let mut checkpointer = RuncCheckpointer::new("runc".into(), Some("/opt/criu".into()), &dir);
        checkpointer.markers = dir.join("markers");
        (checkpointer, dir)
    }

    fn write_checkpoint(checkpointer: &RuncCheckpointer, name: &str, log: &str) -> RuncCheckpoint {
        let checkpoint = checkpointer.checkpoint_named(ID, name);
        fs::create_dir_all(checkpoint.images()).unwrap();
        fs::write(checkpoint.dir.join("dump.log"), log).unwrap();
        checkpoint
    }

    #[test]
    fn marker_names_images_work_dir_and_criu() {
        let (checkpointer, dir) = checkpointer("marker");
        let checkpoint = write_checkpoint(&checkpointer, "lightwhale-1", DUMP_FINISHED);
        checkpointer.prepare_restore(ID, &checkpoint).unwrap();

        let marker = fs::read_to_string(dir.join("markers").join(ID)).unwrap();
        let expected = format!(
            "image-path={}\nwork-path={}\ncriu=/opt/criu\n",
            checkpoint.images().display(),
            checkpoint.dir.join("restore").display()
        );
        assert_eq!(marker, expected);
        assert!(checkpoint.dir.join("restore").is_dir());

        fs::write(dir.join("markers").join(format!("{ID}.restored")), "").unwrap();
        checkpointer.finish_restore(ID);
        assert!(!dir.join("markers").join(ID).exists());
        assert!(!dir.join("markers").join(format!("{ID}.restored")).exists());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn restore_without_images_is_rejected() {
        let (checkpointer, dir) = checkpointer("missing");
        let checkpoint = checkpointer.checkpoint_named(ID, "lightwhale-1");
        assert!(matches!(checkpointer.prepare_restore(ID, &checkpoint), Err(RuncError::ImagesMissing(_))));
        assert!(!dir.join("markers").join(ID).exists());
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn newest_complete_checkpoint_is_found() {
        let (checkpointer, dir) = checkpointer("newest");
        write_checkpoint(&checkpointer, "lightwhale-100", DUMP_FINISHED);
        write_checkpoint(&checkpointer, "lightwhale-20", DUMP_FINISHED);
        // Newer, but its dump was interrupted.
        write_checkpoint(&checkpointer, "lightwhale-300", "(00.01) Dumping task 1");
        assert_eq!(checkpointer.newest_complete(ID).unwrap().name, "lightwhale-100");

        let dirs = checkpointer.checkpoint_dirs(ID);
        assert_eq!(dirs.len(), 3);
        write_checkpoint(&checkpointer, "lightwhale-400", DUMP_FINISHED);
        assert!(checkpointer.remove_checkpoints(ID, &dirs) > 0);
        assert_eq!(checkpointer.newest_complete(ID).unwrap().name, "lightwhale-400", "a newer checkpoint was removed");

        assert!(checkpointer.remove_all(ID) > 0);
        assert_eq!(checkpointer.newest_complete(ID), None);
        assert!(!dir.join("checkpoints").join(ID).exists());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn orphans_are_removed() {
        let (checkpointer, dir) = checkpointer("orphans");
        write_checkpoint(&checkpointer, "lightwhale-1", DUMP_FINISHED);
        let other = "f".repeat(64);
        fs::create_dir_all(dir.join("checkpoints").join(&other)).unwrap();

        let live_id = ID.to_owned();
        let listed_at = SystemTime::now();
        let newer = "e".repeat(64);
        std::thread::sleep(std::time::Duration::from_millis(20));
        fs::create_dir_all(dir.join("checkpoints").join(&newer)).unwrap();

        checkpointer.remove_orphans(&HashSet::from([&live_id]), listed_at);
        assert!(dir.join("checkpoints").join(ID).exists());
        assert!(!dir.join("checkpoints").join(&other).exists());
        assert!(dir.join("checkpoints").join(&newer).exists(), "a checkpoint newer than the list was removed");
        fs::remove_dir_all(&dir).unwrap();
    }
}
