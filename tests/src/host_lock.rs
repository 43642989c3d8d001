//! A machine-wide lock that lets one process at a time use the host's
//! Docker engine and lightwhale daemon for tests and benchmarks.
//!
//! A daemon started by one process would manage the containers that
//! another process creates with `lightwhale.enable=true`, and two daemons
//! cannot share the pinned maps. So each test or benchmark process takes
//! this lock before it creates its first container, network, network
//! namespace or daemon, and keeps it until it exits. A second process waits
//! for the first to finish.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::sync::{Mutex, PoisonError};

use anyhow::{Context, Result};

/// Path of the lock file.
pub const LOCK_PATH: &str = "/run/lightwhale-tests.lock";

/// The locked file, kept open until the process exits.
static LOCK: Mutex<Option<File>> = Mutex::new(None);

/// Takes the lock for the rest of this process, waiting while another
/// process holds it. Later calls return at once.
pub fn hold() -> Result<()> {
    // Threads of this process wait here rather than on a second file,
    // whose lock would conflict with the first one's.
    let mut locked = LOCK.lock().unwrap_or_else(PoisonError::into_inner);
    if locked.is_some() {
        return Ok(());
    }
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(LOCK_PATH)
        .with_context(|| format!("failed to open {LOCK_PATH}"))?;
    if !try_lock(&file)? {
        println!("waiting for another test or benchmark process to release {LOCK_PATH}");
        // SAFETY: flock only reads the descriptor, which `file` keeps open.
        let result = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        if result != 0 {
            return Err(std::io::Error::last_os_error()).with_context(|| format!("failed to lock {LOCK_PATH}"));
        }
    }
    *locked = Some(file);
    Ok(())
}

/// Tries to take the lock without waiting.
fn try_lock(file: &File) -> Result<bool> {
    // SAFETY: flock only reads the descriptor, which `file` keeps open.
    let result = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if result == 0 {
        return Ok(true);
    }
    let error = std::io::Error::last_os_error();
    if error.raw_os_error() == Some(libc::EWOULDBLOCK) {
        return Ok(false);
    }
    Err(error).with_context(|| format!("failed to lock {LOCK_PATH}"))
}
