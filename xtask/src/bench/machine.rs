//! The machine and software versions a benchmark ran on.

use std::fs;
use std::path::Path;
use std::process::Command;

use anyhow::Result;
use serde::Serialize;

/// Hardware and software that the numbers depend on.
#[derive(Debug, Serialize)]
pub struct Machine {
    pub cpu: String,
    pub cpus: usize,
    pub memory_mib: u64,
    pub kernel: String,
    pub docker: String,
    pub criu: String,
    pub commit: String,
    pub started: String,
}

/// Describes this machine.
pub fn describe(root: &Path) -> Result<Machine> {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|line| line.strip_prefix("model name").and_then(|rest| rest.split(':').nth(1)))
        .map(|model| model.trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    let cpus = std::thread::available_parallelism().map(usize::from).unwrap_or(1);
    let memory_mib = fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|meminfo| meminfo_kib(&meminfo, "MemTotal"))
        .map(|kib| kib / 1024)
        .unwrap_or(0);
    Ok(Machine {
        cpu,
        cpus,
        memory_mib,
        kernel: output(Command::new("uname").arg("-r")),
        docker: output(Command::new("docker").args(["version", "--format", "{{.Server.Version}}"])),
        criu: criu_version(),
        commit: output(Command::new("git").current_dir(root).args(["describe", "--always", "--dirty"])),
        started: output(Command::new("date").args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])),
    })
}

/// Returns the version of the CRIU that dockerd runs: the one the host
/// set-up installs, else the one in PATH.
fn criu_version() -> String {
    let installed = Path::new(INSTALLED_CRIU);
    let binary = if installed.exists() { INSTALLED_CRIU } else { "criu" };
    let text = output(Command::new(binary).arg("--version"));
    let version = text.lines().next().unwrap_or_default().trim_start_matches("Version:").trim();
    format!("CRIU {version}")
}

/// Path of the CRIU wrapper that `xtask/setup-host.sh` puts first in
/// dockerd's PATH.
const INSTALLED_CRIU: &str = "/opt/lightwhale/bin/criu";

/// Returns a field of `/proc/meminfo`, in KiB.
pub fn meminfo_kib(meminfo: &str, field: &str) -> Option<u64> {
    meminfo.lines().find_map(|line| {
        let rest = line.strip_prefix(field)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// Renders the machine as a Markdown list.
pub fn markdown(machine: &Machine) -> String {
    format!(
        "## Machine\n\n\
         - CPU: {} ({} CPUs), memory {} MiB\n\
         - Kernel {}, Docker {}, {}\n\
         - lightwhale {}, measured {}\n",
        machine.cpu, machine.cpus, machine.memory_mib, machine.kernel, machine.docker, machine.criu, machine.commit, machine.started
    )
}

/// Returns a command's trimmed standard output, or `unknown`.
fn output(command: &mut Command) -> String {
    match command.output() {
        Ok(output) if output.status.success() => String::from_utf8_lossy(&output.stdout).trim().to_string(),
        _ => "unknown".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_meminfo_fields() {
        let meminfo = "MemTotal:       24683520 kB\nMemAvailable:   24225116 kB\n";
        assert_eq!(meminfo_kib(meminfo, "MemTotal"), Some(24_683_520));
        assert_eq!(meminfo_kib(meminfo, "MemAvailable"), Some(24_225_116));
        assert_eq!(meminfo_kib(meminfo, "MemFree"), None);
    }
}
