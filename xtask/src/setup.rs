//! Preparing the host and building the daemon.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use crate::command;

/// Runs the idempotent host setup script as root.
pub fn prepare_host(root: &Path) -> anyhow::Result<()> {
    let script = root.join("xtask/setup-host.sh");
    let mut setup = if is_root() {
        Command::new("bash")
    } else {
        let mut sudo = Command::new("sudo");
        sudo.arg("bash");
        sudo
    };
    setup.arg(script);
    command::run(&mut setup)
}

/// Builds the daemon in release mode and returns the binary's path.
pub fn build_daemon(root: &Path) -> anyhow::Result<PathBuf> {
    command::run(
        Command::new(env!("CARGO"))
            .current_dir(root)
            .args(["build", "--release", "--package", "lightwhale"]),
    )?;
    Ok(root.join("target/release/lightwhale"))
}

/// Returns whether this process runs as root.
pub fn is_root() -> bool {
    std::env::var("USER").is_ok_and(|user| user == "root")
        || std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|status| {
                status
                    .lines()
                    .find_map(|line| line.strip_prefix("Uid:"))
                    .and_then(|uids| uids.split_whitespace().nth(1).map(|euid| euid == "0"))
            })
            .unwrap_or(false)
}
