//! The Docker engine restarts while the daemon runs: the daemon reconnects,
//! resynchronises and keeps managing containers without a restart of its
//! own.

use std::fs;
use std::path::PathBuf;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use lightwhale_tests::command::run;
use lightwhale_tests::http_counter::start_on_loopback;
use lightwhale_tests::{
    http_get, parse_hits, wait_for_http, Container, Daemon, HTTP_COUNTER_IMAGE, SLEEP_TIMEOUT,
    STARTUP_TIMEOUT, STATE_TIMEOUT,
};

/// Written by the setup script when it started dockerd itself.
const DOCKERD_PID_FILE: &str = "/run/lightwhale-dockerd.pid";

/// Returns the PID of the dockerd that the setup script started, or `None`
/// when the engine was started some other way and is not this test's to
/// restart.
fn dockerd_started_by_setup() -> Option<i32> {
    let pid: i32 = fs::read_to_string(DOCKERD_PID_FILE).ok()?.trim().parse().ok()?;
    let comm = fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    (comm.trim() == "dockerd").then_some(pid)
}

fn restart_dockerd(pid: i32) -> Result<()> {
    // SAFETY: kill has no memory-safety preconditions; `pid` was checked to
    // be the dockerd that the setup script started.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let started = Instant::now();
    while PathBuf::from(format!("/proc/{pid}")).exists() {
        if started.elapsed() > Duration::from_secs(60) {
            bail!("dockerd (pid {pid}) did not exit within 60 s");
        }
        thread::sleep(Duration::from_millis(200));
    }
    println!("dockerd stopped after {:?}", started.elapsed());
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../xtask/setup-host.sh");
    run(Command::new("bash").arg(script))?;
    println!("dockerd running again after {:?}", started.elapsed());
    Ok(())
}

#[test]
fn daemon_survives_engine_restart() -> Result<()> {
    let Some(dockerd) = dockerd_started_by_setup() else {
        println!("skipped: the Docker engine was not started by xtask/setup-host.sh, so this test does not restart it");
        return Ok(());
    };
    let daemon = Daemon::start(&[])?;
    let (web, address, _) = start_on_loopback(
        Container::builder("engine-restart", HTTP_COUNTER_IMAGE)
            .managed("3s")
            .option("--restart=unless-stopped"),
    )?;
    daemon.wait_for_state(web.name(), "awake", STATE_TIMEOUT)?;

    restart_dockerd(dockerd)?;
    wait_for_http(address, STARTUP_TIMEOUT)?;
    let hits = parse_hits(&http_get(address)?)?;

    // The same daemon process goes on: it notices the restarted container,
    // puts it to sleep and wakes it.
    let asleep = daemon.wait_for_state(web.name(), "asleep", SLEEP_TIMEOUT)?;
    println!("asleep after the engine restart: {asleep}");
    let started = Instant::now();
    let body = http_get(address)?;
    println!("woken after the engine restart in {:?}: {}", started.elapsed(), body.trim());
    assert_eq!(parse_hits(&body)?, hits + 1, "the container lost its state: {body:?}");
    let awake = daemon.wait_for_state(web.name(), "awake", STATE_TIMEOUT)?;
    assert!(awake["wakes"].as_u64().unwrap_or(0) >= 1, "{awake}");
    Ok(())
}
