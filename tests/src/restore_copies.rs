//! containerd's copies of restored checkpoints, which containerd 1.6
//! extracts into `/tmp/ctrd-checkpoint*` and leaves there. The daemon
//! removes the copies of the containers it restores, and tests check that
//! it did. The benchmark removes the copies of its plain Docker restores.

use std::fs;
use std::path::PathBuf;

use anyhow::{Context, Result};

/// Returns the `ctrd-checkpoint*` directories in /tmp whose cgroup image
/// names container `id`: runc names a container's cgroups after its id.
pub fn restore_copies_of(id: &str) -> Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    for entry in fs::read_dir("/tmp").context("cannot list /tmp")? {
        let path = entry.context("cannot list /tmp")?.path();
        let is_copy = path.file_name().is_some_and(|name| name.to_string_lossy().starts_with("ctrd-checkpoint"));
        if !is_copy {
            continue;
        }
        let image = fs::read(path.join("cgroup.img")).unwrap_or_default();
        if !id.is_empty() && image.windows(id.len()).any(|window| window == id.as_bytes()) {
            found.push(path);
        }
    }
    Ok(found)
}
