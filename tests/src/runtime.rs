//! The `lightwhale` runtime as the tests see it: whether dockerd has it,
//! and the cgroup freezer of its containers.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Result};

use crate::command::run;

/// Name under which the setup registers the runtime in dockerd.
pub const LIGHTWHALE_RUNTIME: &str = "lightwhale";

/// Directory under which dockerd keeps runc's state, one `runtime-*/moby`
/// directory per runtime.
const RUNC_STATE_ROOTS: &str = "/run/docker";

/// Returns whether dockerd lacks the `lightwhale` runtime, after printing
/// why the calling test skips. In CI, whose setup registers the runtime,
/// a missing runtime is an error instead.
pub fn lightwhale_runtime_missing() -> Result<bool> {
    let runtimes = run(Command::new("docker").args(["info", "--format", "{{json .Runtimes}}"]))?;
    if runtimes.contains(&format!("\"{LIGHTWHALE_RUNTIME}\"")) {
        return Ok(false);
    }
    if std::env::var("CI").is_ok_and(|value| value == "true") {
        bail!("dockerd has no {LIGHTWHALE_RUNTIME} runtime, which the setup registers: {runtimes}");
    }
    println!(
        "skipped: dockerd has no {LIGHTWHALE_RUNTIME} runtime; run xtask/setup-host.sh or register it as the README says"
    );
    Ok(true)
}

/// Returns the file that freezes the cgroup of container `id` as runc
/// records it: the v1 freezer controller's `freezer.state` where the host
/// has one, else `cgroup.freeze` of its cgroup v2.
pub fn freezer_file(id: &str) -> Result<PathBuf> {
    for root in fs::read_dir(RUNC_STATE_ROOTS)?.flatten() {
        let state_file = root.path().join("moby").join(id).join("state.json");
        let Ok(bytes) = fs::read(&state_file) else {
            continue;
        };
        let state: serde_json::Value = serde_json::from_slice(&bytes)?;
        let paths = &state["cgroup_paths"];
        if let Some(dir) = paths["freezer"].as_str() {
            return Ok(Path::new(dir).join("freezer.state"));
        }
        if let Some(dir) = paths[""].as_str() {
            return Ok(Path::new(dir).join("cgroup.freeze"));
        }
        bail!("{} names no cgroup with a freezer", state_file.display());
    }
    bail!("no runc state of {id} under {RUNC_STATE_ROOTS}/runtime-*/moby")
}
