//! Files that only root reads, replaced atomically: the state file and the
//! restore markers of the `lightwhale` runtime.

use std::{
    fs::{self, OpenOptions},
    io::{self, Write as _},
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
};

/// Replaces `path` with `bytes` through `temporary`, a file with mode 0600
/// in the same directory that is synced and renamed over `path`, so that a
/// reader finds either the old or the new content. Returns the path that
/// failed with its error.
pub fn replace(path: &Path, temporary: &Path, bytes: &[u8]) -> Result<(), (PathBuf, io::Error)> {
    let at = |path: &Path| {
        let path = path.to_owned();
        move |error| (path, error)
    };
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(temporary)
        .map_err(at(temporary))?;
    file.write_all(bytes).map_err(at(temporary))?;
    file.sync_all().map_err(at(temporary))?;
    fs::rename(temporary, path).map_err(at(path))
}
