//! CRIU's cache of kernel features.
//!
//! Every CRIU run starts by probing what the kernel supports, unless it
//! finds the result of an earlier run in `/run/criu.kdat`. CRIU writes that
//! file only where `/run` is a tmpfs, so that a reboot, which may bring
//! another kernel, clears it. On a host whose `/run` is on disk, every
//! checkpoint and every restore probes again, and runc starts CRIU twice for
//! each of them.
//!
//! On such a host, the daemon writes the cache when it starts: it runs
//! `criu check` in a mount namespace of its own with a tmpfs on `/run`, and
//! copies the file that CRIU wrote there. It removes the file when it stops
//! and writes it again at every start, so a new kernel is probed again at
//! the daemon's next start. A CRIU of another version finds the file stale
//! and deletes it, which only brings the probes back.

use std::{
    ffi::CString,
    fs, io,
    os::unix::ffi::OsStrExt as _,
    path::{Path, PathBuf},
};

use thiserror::Error;
use tokio::process::Command;
use tracing::{debug, info};

use crate::private_file;

/// The file that CRIU reads its kernel features from.
const CACHE: &str = "/run/criu.kdat";
/// Temporary file that the daemon writes before renaming it to [`CACHE`].
const TEMPORARY: &str = "/run/.lightwhale-criu.kdat";
/// The directory that CRIU expects on a tmpfs.
const RUN: &str = "/run";

/// Error of writing the cache.
#[derive(Debug, Error)]
pub enum CriuCacheError {
    /// The file system of `/run` is unknown.
    #[error("cannot find the file system of {RUN}: {0}")]
    Statfs(io::Error),
    /// `criu check` in a private mount namespace did not leave a cache.
    #[error("`{criu} check` under a private tmpfs on {RUN} wrote no cache: {reason}")]
    Probe { criu: String, reason: String },
    /// The cache could not be written to `/run`.
    #[error("cannot write {}: {source}", path.display())]
    Write { path: PathBuf, source: io::Error },
}

/// A cache that the daemon wrote, removed again when this value is dropped.
#[derive(Debug)]
pub struct InstalledCache {
    bytes: Vec<u8>,
}

/// Writes CRIU's cache of kernel features, computed by `criu`, when `/run`
/// is not a tmpfs. Returns `None` where CRIU keeps the cache itself.
pub async fn install(criu: &Path) -> Result<Option<InstalledCache>, CriuCacheError> {
    if is_tmpfs(Path::new(RUN)).map_err(CriuCacheError::Statfs)? {
        debug!(path = RUN, "CRIU keeps its cache of kernel features on this tmpfs");
        return Ok(None);
    }
    let bytes = probe(criu).await?;
    private_file::replace(Path::new(CACHE), Path::new(TEMPORARY), &bytes)
        .map_err(|(path, source)| CriuCacheError::Write { path, source })?;
    info!(
        path = CACHE,
        bytes = bytes.len(),
        "wrote CRIU's cache of kernel features, which CRIU keeps only on a tmpfs"
    );
    Ok(Some(InstalledCache { bytes }))
}

/// Removes the cache when the daemon stops, or fails to start after it
/// wrote the cache, unless another CRIU replaced it meanwhile.
impl Drop for InstalledCache {
    fn drop(&mut self) {
        match fs::read(CACHE) {
            Ok(bytes) if bytes == self.bytes => {
                if let Err(error) = fs::remove_file(CACHE) {
                    debug!(path = CACHE, %error, "cannot remove CRIU's cache of kernel features");
                }
            }
            _ => debug!(path = CACHE, "another CRIU replaced the cache of kernel features, so it stays"),
        }
    }
}

/// Runs `criu check` with a private tmpfs on `/run`, where CRIU keeps its
/// cache, and returns the cache's content.
// NOTE: this runs `unshare` of util-linux and `sh`. The tmpfs exists only
// in the new mount namespace, and goes with it when `sh` exits.
async fn probe(criu: &Path) -> Result<Vec<u8>, CriuCacheError> {
    let failed = |reason: String| CriuCacheError::Probe {
        criu: criu.display().to_string(),
        reason,
    };
    let script = format!(
        "mount -t tmpfs -o size=1m,mode=0755 lightwhale-criu {RUN} && \
         {{ \"$1\" check >/dev/null 2>&1; exec cat {CACHE}; }}"
    );
    let output = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "--", "sh", "-c", &script, "sh"])
        .arg(criu)
        .output()
        .await
        .map_err(|error| failed(format!("cannot run unshare: {error}")))?;
    if !output.status.success() || output.stdout.is_empty() {
        return Err(failed(format!(
            "{}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(output.stdout)
}

/// Returns whether `path` is on a tmpfs.
fn is_tmpfs(path: &Path) -> io::Result<bool> {
    let path = CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)?;
    // SAFETY: statfs is plain data, for which all zeroes is a valid value.
    let mut stats: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is a NUL-terminated string and `stats` a valid statfs.
    if unsafe { libc::statfs(path.as_ptr(), &mut stats) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(stats.f_type == libc::TMPFS_MAGIC)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_tmpfs_false_for_proc() {
        assert!(!is_tmpfs(Path::new("/proc")).unwrap());
    }

    #[test]
    fn is_tmpfs_true_for_tmpfs_mount() {
        let mounts = fs::read_to_string("/proc/self/mounts").unwrap();
        let tmpfs = mounts.lines().find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            (fields.get(2) == Some(&"tmpfs")).then(|| fields[1].to_owned())
        });
        if let Some(mount_point) = tmpfs {
            assert!(is_tmpfs(Path::new(&mount_point)).unwrap(), "{mount_point}");
        }
    }

    #[test]
    fn is_tmpfs_fails_for_missing_path() {
        assert!(is_tmpfs(Path::new("/nonexistent/lightwhale")).is_err());
    }
}
