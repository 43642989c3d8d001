//! Checks, before the daemon starts, that the Docker engine can checkpoint
//! and restore containers, and whether containers can use the `lightwhale`
//! runtime. Lightwhale never changes the engine's configuration itself: its
//! errors and warnings name what is missing and how to fix it.

use std::path::{Path, PathBuf};

use thiserror::Error;
use tokio::process::Command;
use tracing::{info, warn};

use super::{runc_checkpoint::RUNTIME, Engine};

/// Reason the engine cannot be used.
#[derive(Debug, Error)]
pub enum PreflightError {
    /// The engine could not be queried.
    #[error("cannot query the Docker engine: {0}")]
    Engine(#[from] super::EngineError),
    /// Checkpoints need the engine's experimental mode.
    #[error(
        "the Docker engine runs without experimental mode, which `docker checkpoint` needs: \
         add {{\"experimental\": true}} to /etc/docker/daemon.json and restart dockerd"
    )]
    NotExperimental,
    /// runc cannot find CRIU.
    #[error(
        "no criu executable in dockerd's PATH ({path}): install CRIU 4.2 or newer and restart \
         dockerd with it in PATH (`cargo xtask run` sets this up on Debian)"
    )]
    CriuMissing { path: String },
    /// The CRIU that runc would use is too old or broken.
    #[error("{criu} cannot checkpoint on this kernel: {reason}")]
    CriuUnusable { criu: String, reason: String },
}

/// Kernels from 6.16 on reject SO_PASSCRED on inet sockets, which CRIU
/// before 4.2 reads when it dumps a TCP listener.
const KERNEL_NEEDING_CRIU_4_2: (u32, u32) = (6, 16);

/// Facts about the engine that checkpoints through runc depend on, found
/// by [`check_engine`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Checkpointing {
    /// The runc binary in dockerd's `PATH`, which checkpoints containers of
    /// the `lightwhale` runtime; `None` when dockerd or runc was not found.
    pub runc: Option<PathBuf>,
    /// The CRIU binary in dockerd's `PATH`.
    pub criu: Option<PathBuf>,
    /// Whether dockerd has the `lightwhale` runtime registered.
    pub runtime_registered: bool,
}

impl Checkpointing {
    /// Returns why a container of the `lightwhale` runtime cannot sleep
    /// through runc, or `None` when it can.
    pub fn runc_unusable_reason(&self) -> Option<String> {
        if !self.runtime_registered {
            return Some(format!(
                "it uses the runtime {RUNTIME}, which the Docker engine no longer has registered: \
                 add it to dockerd (--add-runtime {RUNTIME}=/opt/lightwhale/bin/lightwhale-runc, or \
                 \"runtimes\" in /etc/docker/daemon.json), then restart lightwhale"
            ));
        }
        if self.runc.is_none() {
            return Some(format!(
                "it uses the runtime {RUNTIME}, whose checkpoints need runc in dockerd's PATH, \
                 and lightwhale found no local dockerd with runc"
            ));
        }
        None
    }
}

/// Checks experimental mode and the CRIU that runc will run, and finds
/// what checkpoints through runc need.
pub async fn check_engine(engine: &Engine) -> Result<Checkpointing, PreflightError> {
    let info = engine.client().info().await.map_err(super::EngineError::from)?;
    if info.experimental_build != Some(true) {
        return Err(PreflightError::NotExperimental);
    }
    let mut checkpointing = Checkpointing {
        runtime_registered: info.runtimes.as_ref().is_some_and(|runtimes| runtimes.contains_key(RUNTIME)),
        ..Default::default()
    };
    if let Some(runtime) = info.runtimes.as_ref().and_then(|runtimes| runtimes.get(RUNTIME)) {
        let path = runtime.path.clone().unwrap_or_default();
        if !Path::new(&path).is_file() {
            warn!(runtime = RUNTIME, %path, "the runtime's executable does not exist, so its containers cannot start");
        }
    } else {
        info!(
            runtime = RUNTIME,
            "the Docker engine has no lightwhale runtime, so containers sleep through docker checkpoint; \
             register it to make sleep and wake faster (see README)"
        );
    }

    let Some(dockerd_pid) = find_dockerd() else {
        warn!("dockerd not found among local processes; cannot check which criu runc uses");
        return Ok(checkpointing);
    };
    let path = process_path(dockerd_pid).unwrap_or_default();
    checkpointing.runc = find_in_path("runc", &path);
    let Some(criu) = find_in_path("criu", &path) else {
        return Err(PreflightError::CriuMissing { path });
    };
    let criu_name = criu.display().to_string();

    let version = run(&criu, &["--version"]).await.map_err(|reason| PreflightError::CriuUnusable {
        criu: criu_name.clone(),
        reason,
    })?;
    let version = parse_criu_version(&version).ok_or_else(|| PreflightError::CriuUnusable {
        criu: criu_name.clone(),
        reason: format!("unreadable version output {version:?}"),
    })?;
    if let Some(kernel) = kernel_version() {
        if kernel >= KERNEL_NEEDING_CRIU_4_2 && version < (4, 2) {
            return Err(PreflightError::CriuUnusable {
                criu: criu_name,
                reason: format!(
                    "CRIU {}.{} cannot dump TCP listeners on kernel {}.{}; install CRIU 4.2 or newer",
                    version.0, version.1, kernel.0, kernel.1
                ),
            });
        }
    }
    run(&criu, &["check"]).await.map_err(|reason| PreflightError::CriuUnusable {
        criu: criu_name.clone(),
        reason: format!("`criu check` failed: {reason}"),
    })?;

    info!(
        criu = %criu_name,
        version = %format!("{}.{}", version.0, version.1),
        runc = ?checkpointing.runc,
        lightwhale_runtime = checkpointing.runtime_registered,
        "checkpoint support ready"
    );
    checkpointing.criu = Some(criu);
    Ok(checkpointing)
}

/// Returns dockerd's PID from its pid file, or by looking for its process.
fn find_dockerd() -> Option<u32> {
    if let Ok(text) = std::fs::read_to_string("/var/run/docker.pid") {
        if let Ok(pid) = text.trim().parse::<u32>() {
            if is_dockerd(pid) {
                return Some(pid);
            }
        }
    }
    std::fs::read_dir("/proc")
        .ok()?
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| is_dockerd(*pid))
}

fn is_dockerd(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|comm| comm.trim() == "dockerd")
}

/// Returns the PATH in a process's environment.
fn process_path(pid: u32) -> Option<String> {
    let environ = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    environ
        .split(|byte| *byte == 0)
        .find_map(|entry| entry.strip_prefix(b"PATH="))
        .map(|path| String::from_utf8_lossy(path).into_owned())
}

fn find_in_path(program: &str, path: &str) -> Option<PathBuf> {
    path.split(':')
        .filter(|dir| !dir.is_empty())
        .map(|dir| Path::new(dir).join(program))
        .find(|candidate| candidate.is_file())
}

async fn run(program: &Path, args: &[&str]) -> Result<String, String> {
    let output = Command::new(program)
        .args(args)
        .output()
        .await
        .map_err(|error| format!("cannot run it: {error}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if output.status.success() {
        Ok(stdout)
    } else {
        let stderr = String::from_utf8_lossy(&output.stderr);
        Err(format!("{}: {}{}", output.status, stdout.trim(), stderr.trim()))
    }
}

/// Reads `Version: 4.2.1` (or `Version: 4.2`) from `criu --version`.
fn parse_criu_version(output: &str) -> Option<(u32, u32)> {
    let version = output
        .lines()
        .find_map(|line| line.trim().strip_prefix("Version:"))?
        .trim();
    let mut parts = version.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next().and_then(|minor| minor.parse().ok()).unwrap_or(0);
    Some((major, minor))
}

fn kernel_version() -> Option<(u32, u32)> {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").ok()?;
    let mut parts = release.trim().split(|c: char| !c.is_ascii_digit());
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn criu_version_parses() {
        assert_eq!(parse_criu_version("Version: 4.2.1\n"), Some((4, 2)));
        assert_eq!(parse_criu_version("Version: 3.17\nGitID: v3.17\n"), Some((3, 17)));
        assert_eq!(parse_criu_version("criu 4"), None);
    }

    #[test]
    fn find_in_path_skips_missing_dirs() {
        assert_eq!(find_in_path("sh", "/nonexistent:/bin"), Some(PathBuf::from("/bin/sh")));
        assert_eq!(find_in_path("sh", ""), None);
    }
}
