//! A stopped daemon leaves no eBPF programs, pins, iptables chain, CRIU
//! cache or listeners behind, and sleeping containers stay asleep. A
//! second daemon leaves a running one alone.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::io::Read as _;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use lightwhale_common::programs;
use lightwhale_tests::command::{output, run};
use lightwhale_tests::daemon::daemon_binary;
use lightwhale_tests::http::curl_args;
use lightwhale_tests::http_counter::start_on_loopback;
use lightwhale_tests::{Container, Daemon, HTTP_COUNTER_IMAGE, SLEEP_TIMEOUT};

/// Names of the daemon's eBPF programs as the kernel reports them.
const PROGRAM_NAMES: [&str; 4] = [
    programs::COUNT_TO_CONTAINER,
    programs::COUNT_FROM_CONTAINER,
    programs::STEER,
    programs::NAT_BYPASS,
];

/// The daemon's chain in iptables' nat table.
const NAT_CHAIN: &str = "LIGHTWHALE";

/// How long a second daemon may take to stop with its error.
const SECOND_DAEMON_TIMEOUT: Duration = Duration::from_secs(10);

/// CRIU's cache of kernel features, which the daemon writes where `/run`
/// is not a tmpfs.
const CRIU_CACHE: &str = "/run/criu.kdat";

/// Directory of the daemon's pinned maps.
const PIN_DIR: &str = "/sys/fs/bpf/lightwhale";

#[test]
fn stop_leaves_no_traces() -> Result<()> {
    let mut daemon = Daemon::start(&[])?;
    let (web, address, _) =
        start_on_loopback(Container::builder("clean-stop", HTTP_COUNTER_IMAGE).managed("3s"))?;
    daemon.wait_for_state(web.name(), "asleep", SLEEP_TIMEOUT)?;
    let nat_rules = run(Command::new("iptables").args(["-w", "-t", "nat", "-S"]))?;
    assert!(nat_rules.contains(NAT_CHAIN), "the running daemon has no {NAT_CHAIN} chain:\n{nat_rules}");
    let run_is_tmpfs = run(Command::new("stat").args(["-f", "-c", "%T", "/run"]))?.trim() == "tmpfs";
    if !run_is_tmpfs {
        assert!(Path::new(CRIU_CACHE).exists(), "the running daemon wrote no {CRIU_CACHE}");
    }

    let pid = daemon.pid();
    let daemon_ports = listening_ports(Some(pid))?;
    println!("lightwhale (pid {pid}) listens on ports {daemon_ports:?} while the container sleeps");

    let exit = daemon.stop()?;
    assert!(
        exit.success(),
        "lightwhale exited with {exit} after SIGTERM"
    );

    // A program still attached anywhere, through a link or otherwise, is
    // still loaded, so `prog show` catches every leftover attachment.
    let programs = run(Command::new("bpftool").args(["prog", "show"]))?;
    let net = run(Command::new("bpftool").args(["net", "show"]))?;
    let cgroups = run(Command::new("bpftool")
        .args(["cgroup", "tree"])
        .arg(cgroup2_mount()?))?;
    for name in PROGRAM_NAMES {
        assert!(
            !programs.contains(name),
            "program {name} is still loaded:\n{programs}"
        );
        assert!(
            !net.contains(name),
            "program {name} is still attached to a device:\n{net}"
        );
        assert!(
            !cgroups.contains(name),
            "program {name} is still attached to a cgroup:\n{cgroups}"
        );
    }

    let pins = pinned_entries()?;
    assert!(pins.is_empty(), "{PIN_DIR} still contains {pins:?}");
    let nat_rules = run(Command::new("iptables").args(["-w", "-t", "nat", "-S"]))?;
    assert!(!nat_rules.contains(NAT_CHAIN), "the {NAT_CHAIN} chain is still there:\n{nat_rules}");
    if !run_is_tmpfs {
        assert!(!Path::new(CRIU_CACHE).exists(), "{CRIU_CACHE} is still there");
    }

    let listeners = run(Command::new("ss").args(["-ltnpH"]))?;
    let owner = format!("pid={pid},");
    assert!(
        !listeners.contains(&owner),
        "sockets of pid {pid} still listen:\n{listeners}"
    );
    // A socket kept alive by a pinned map would listen without an owner.
    let leftover: BTreeSet<u16> = listening_ports(None)?
        .intersection(&daemon_ports)
        .copied()
        .collect();
    assert!(
        leftover.is_empty(),
        "the daemon's ports {leftover:?} still listen:\n{listeners}"
    );

    assert!(
        !web.is_running()?,
        "the container woke when the daemon stopped"
    );
    let checkpoints = web.checkpoints()?;
    assert!(
        !checkpoints.is_empty(),
        "the sleeping container has no checkpoint"
    );

    // Nothing accepts or steers connections any more, and a client that
    // tries must not wake the container.
    let attempt = output(Command::new("curl").args(curl_args(address, "/")))?;
    assert!(
        !attempt.status.success(),
        "a request after the stop was answered: {}",
        String::from_utf8_lossy(&attempt.stdout)
    );
    thread::sleep(Duration::from_secs(3));
    assert!(
        !web.is_running()?,
        "the container woke after the daemon stopped"
    );
    Ok(())
}

/// Returns the local ports of listening TCP sockets in the host network
/// namespace, only those owned by process `pid` when it is given.
fn listening_ports(pid: Option<u32>) -> Result<BTreeSet<u16>> {
    let listeners = run(Command::new("ss").args(["-ltnpH"]))?;
    let mut ports = BTreeSet::new();
    for line in listeners.lines() {
        if let Some(pid) = pid {
            if !line.contains(&format!("pid={pid},")) {
                continue;
            }
        }
        // Columns: state, receive queue, send queue, local address:port, ...
        let Some(local) = line.split_whitespace().nth(3) else {
            continue;
        };
        let Some((_, port)) = local.rsplit_once(':') else {
            bail!("unexpected local address {local:?} in `ss` line {line:?}");
        };
        ports.insert(
            port.parse()
                .with_context(|| format!("invalid port in {line:?}"))?,
        );
    }
    Ok(ports)
}

/// Returns the names under [`PIN_DIR`], or none when it does not exist.
fn pinned_entries() -> Result<Vec<String>> {
    if !Path::new(PIN_DIR).exists() {
        return Ok(Vec::new());
    }
    let mut names = Vec::new();
    for entry in fs::read_dir(PIN_DIR).with_context(|| format!("failed to list {PIN_DIR}"))? {
        names.push(entry?.file_name().to_string_lossy().into_owned());
    }
    Ok(names)
}

/// Returns the mount point of the cgroup v2 hierarchy, which is not
/// `/sys/fs/cgroup` on hosts with hybrid cgroups.
fn cgroup2_mount() -> Result<String> {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo")?;
    for line in mountinfo.lines() {
        // The filesystem type follows the " - " separator, and the mount
        // point is the fifth field.
        let Some((mount_fields, filesystem_fields)) = line.split_once(" - ") else {
            continue;
        };
        if filesystem_fields.split_whitespace().next() == Some("cgroup2") {
            if let Some(mount_point) = mount_fields.split_whitespace().nth(4) {
                return Ok(mount_point.to_string());
            }
        }
    }
    bail!("no cgroup2 filesystem is mounted")
}

/// A second daemon stops at once with the reason, before it changes
/// anything of the running one, even with a control socket and a state
/// directory of its own.
#[test]
fn second_daemon_leaves_first_intact() -> Result<()> {
    let daemon = Daemon::start(&[])?;
    let dir = std::env::temp_dir().join(format!("lightwhale-second-{}", std::process::id()));
    let mut second = Command::new(daemon_binary()?)
        .arg("run")
        .arg("--socket")
        .arg(dir.join("lightwhale.sock"))
        .arg("--state-dir")
        .arg(dir.join("state"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    // A second daemon that starts would run until it is stopped.
    let deadline = Instant::now() + SECOND_DAEMON_TIMEOUT;
    let status = loop {
        if let Some(status) = second.try_wait()? {
            break status;
        }
        if Instant::now() >= deadline {
            second.kill()?;
            second.wait()?;
            bail!("a second daemon was still running after {SECOND_DAEMON_TIMEOUT:?}");
        }
        thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    if let Some(mut pipe) = second.stderr.take() {
        pipe.read_to_string(&mut stderr)?;
    }
    assert!(!status.success(), "a second daemon exited successfully: {stderr}");
    assert!(stderr.contains("another lightwhale daemon is already running"), "{stderr}");
    assert!(!dir.exists(), "the second daemon created {}", dir.display());

    daemon.status()?;
    let nat_rules = run(Command::new("iptables").args(["-w", "-t", "nat", "-S"]))?;
    assert!(nat_rules.contains(NAT_CHAIN), "the first daemon lost its {NAT_CHAIN} chain:\n{nat_rules}");
    let run_is_tmpfs = run(Command::new("stat").args(["-f", "-c", "%T", "/run"]))?.trim() == "tmpfs";
    if !run_is_tmpfs {
        assert!(Path::new(CRIU_CACHE).exists(), "the first daemon lost {CRIU_CACHE}");
    }
    Ok(())
}
