//! Finding the host-side veth of a container's interface.

use std::{fs, path::Path};

/// Returns the host-side interface indexes of a running container's
/// interfaces whose MAC addresses are given.
///
/// A veth's `iflink` in sysfs is the index of its peer. The container's own
/// sysfs, mounted by runc inside its network namespace, is reachable from
/// the host through `/proc/<pid>/root/sys`.
pub fn host_interfaces(pid: u32, macs: &[String]) -> Vec<u32> {
    let net = format!("/proc/{pid}/root/sys/class/net");
    let Ok(entries) = fs::read_dir(&net) else {
        return Vec::new();
    };
    let mut indexes = Vec::new();
    for entry in entries.flatten() {
        let dir = entry.path();
        let Some(mac) = read_trimmed(&dir.join("address")) else {
            continue;
        };
        if !macs.iter().any(|wanted| wanted.eq_ignore_ascii_case(&mac)) {
            continue;
        }
        let Some(peer) = read_trimmed(&dir.join("iflink")).and_then(|link| link.parse::<u32>().ok()) else {
            continue;
        };
        indexes.push(peer);
    }
    indexes.sort_unstable();
    indexes
}

fn read_trimmed(path: &Path) -> Option<String> {
    fs::read_to_string(path).ok().map(|text| text.trim().to_owned())
}
