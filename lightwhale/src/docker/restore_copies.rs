//! containerd's copies of restored checkpoints.
//!
//! To restore a container, containerd extracts its checkpoint into a new
//! temporary directory named `ctrd-checkpoint*` and hands that directory to
//! runc. containerd 1.6.20, which Docker 20.10 from Debian runs, does not
//! remove it afterwards, so every wake would leave a full copy of the
//! container's memory on disk. Once the restore call returned, runc no
//! longer reads the copy, and the daemon removes the copies of the
//! container it restored. When it starts, it also removes the copies of
//! awake containers, left by a daemon that stopped during a restore.

use std::{
    collections::HashSet,
    fs,
    io,
    path::{Path, PathBuf},
};

/// Directory in which containerd creates its temporary directories: its
/// `XDG_RUNTIME_DIR` or `TMPDIR`, which dockerd's containerd does not set.
// NOTE: a containerd started with either variable set puts its copies
// elsewhere, where they are not found.
const TEMP_DIR: &str = "/tmp";

/// Prefix of the directories containerd extracts checkpoints into.
const PREFIX: &str = "ctrd-checkpoint";

/// CRIU image that lists the container's cgroups, whose paths contain the
/// container's id.
const CGROUP_IMAGE: &str = "cgroup.img";

/// Lists the copies that exist now, to tell the ones a restore adds.
pub fn existing() -> HashSet<PathBuf> {
    copies(Path::new(TEMP_DIR)).unwrap_or_default()
}

/// Removes the copies that appeared since `before` and belong to container
/// `id`, and returns how many it removed. Copies of other containers,
/// whose restores may still be running, stay.
pub fn remove_new(before: &HashSet<PathBuf>, id: &str) -> usize {
    let Ok(now) = copies(Path::new(TEMP_DIR)) else {
        return 0;
    };
    let mut removed = 0;
    for copy in now.difference(before) {
        if !belongs_to(copy, id) {
            continue;
        }
        match fs::remove_dir_all(copy) {
            Ok(()) => removed += 1,
            Err(error) => tracing::warn!(path = %copy.display(), %error, "cannot remove containerd's copy of a checkpoint"),
        }
    }
    removed
}

/// Removes every copy that belongs to one of the containers `ids`, and
/// returns the id of each removed copy's container. Only for running
/// containers, whose restores finished, so that runc no longer reads their
/// copies. The temporary directory is listed once for all of them.
pub fn remove_all(ids: &[String]) -> Vec<String> {
    let Ok(found) = copies(Path::new(TEMP_DIR)) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for copy in found {
        let Ok(image) = fs::read(copy.join(CGROUP_IMAGE)) else {
            continue;
        };
        let Some(id) = ids.iter().find(|id| contains(&image, id.as_bytes())) else {
            continue;
        };
        match fs::remove_dir_all(&copy) {
            Ok(()) => removed.push(id.clone()),
            Err(error) => tracing::warn!(path = %copy.display(), %error, "cannot remove containerd's copy of a checkpoint"),
        }
    }
    removed
}

/// Lists the `ctrd-checkpoint*` directories in `dir`.
fn copies(dir: &Path) -> io::Result<HashSet<PathBuf>> {
    let mut found = HashSet::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_name().to_string_lossy().starts_with(PREFIX) && entry.file_type()?.is_dir() {
            found.insert(entry.path());
        }
    }
    Ok(found)
}

/// Returns whether a copy contains a checkpoint of container `id`: its cgroup
/// image names the container's cgroups, which Docker names after the id.
fn belongs_to(copy: &Path, id: &str) -> bool {
    match fs::read(copy.join(CGROUP_IMAGE)) {
        Ok(image) => contains(&image, id.as_bytes()),
        Err(_) => false,
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|window| window == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_match_by_container_id() {
        let dir = std::env::temp_dir().join(format!("lightwhale-copies-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let old = dir.join("ctrd-checkpoint1");
        let ours = dir.join("ctrd-checkpoint2");
        let theirs = dir.join("ctrd-checkpoint3");
        for (copy, id) in [(&old, "aaaa"), (&ours, "aaaa"), (&theirs, "bbbb")] {
            fs::create_dir_all(copy).unwrap();
            fs::write(copy.join(CGROUP_IMAGE), format!("\x01/docker/{id}\x02")).unwrap();
        }
        fs::create_dir_all(dir.join("unrelated")).unwrap();

        let all = copies(&dir).unwrap();
        assert_eq!(all.len(), 3);
        assert!(belongs_to(&ours, "aaaa"));
        assert!(!belongs_to(&theirs, "aaaa"));
        assert!(!belongs_to(&dir.join("unrelated"), "aaaa"));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn empty_needle_matches_nothing() {
        assert!(!contains(b"abc", b""));
        assert!(contains(b"abc", b"bc"));
    }
}
