//! `cargo xtask run --demo`: start the daemon next to a sample stateful
//! service and show one sleep and one wake with their timings.

use std::{
    path::Path,
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicBool, AtomicU32, Ordering},
        Arc,
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};

use crate::{command, images};

/// Name of the sample container.
const CONTAINER: &str = "lightwhale-demo";
/// Idle timeout of the sample container.
const IDLE_TIMEOUT: &str = "5s";

pub fn run(root: &Path, mut daemon: Command, daemon_path: &Path, port: u16) -> anyhow::Result<()> {
    let image = images::prepare_demo_image(root)?;
    remove_container();
    command::run(Command::new("docker").stdout(Stdio::null()).args([
        "run",
        "--detach",
        "--name",
        CONTAINER,
        "--label",
        "lightwhale.enable=true",
        "--label",
        &format!("lightwhale.idle-timeout={IDLE_TIMEOUT}"),
        "--publish",
        &format!("127.0.0.1:{port}:8080"),
        image,
    ]))
    .context("cannot start the sample container; is the port free? choose another with --demo-port")?;

    let child = match daemon.spawn() {
        Ok(child) => child,
        Err(error) => {
            remove_container();
            return Err(error).context("cannot start the daemon");
        }
    };
    let child_pid = Arc::new(AtomicU32::new(child.id()));
    let stopping = Arc::new(AtomicBool::new(false));
    {
        let child_pid = child_pid.clone();
        let stopping = stopping.clone();
        ctrlc::set_handler(move || {
            stopping.store(true, Ordering::SeqCst);
            // The terminal sends SIGINT to the daemon as well; SIGTERM also
            // covers a `kill` of this process alone.
            let _ = Command::new("kill").arg(child_pid.load(Ordering::SeqCst).to_string()).status();
        })
        .context("cannot handle Ctrl-C")?;
    }

    let result = show(daemon_path, port, &stopping);
    if let Err(error) = &result {
        eprintln!("demo: {error:#}; stopping the daemon");
        let _ = Command::new("kill").arg(child_pid.load(Ordering::SeqCst).to_string()).status();
    }
    wait_for_daemon(child);
    remove_container();
    result
}

fn show(daemon_path: &Path, port: u16, stopping: &AtomicBool) -> anyhow::Result<()> {
    let url = format!("http://127.0.0.1:{port}/");
    wait_until(Duration::from_secs(20), stopping, || status(daemon_path).is_ok())
        .context("the daemon did not start; see its log above")?;

    println!("\ndemo: {CONTAINER} counts hits in memory; it sleeps after {IDLE_TIMEOUT} without traffic");
    let (body, elapsed) = fetch(&url)?;
    println!("demo: GET {url} -> {} in {} ms", body.trim(), elapsed.as_millis());

    println!("demo: waiting for it to go to sleep...");
    let mut asleep = None;
    wait_until(Duration::from_secs(60), stopping, || {
        asleep = status(daemon_path).ok().and_then(|report| demo_entry(&report)).filter(|entry| entry["state"] == "asleep");
        asleep.is_some()
    })
    .context("the sample container did not go to sleep within 60 s")?;
    let entry = asleep.unwrap_or_default();
    println!(
        "demo: asleep: checkpoint took {} ms and freed {} KiB; `docker ps -a` shows it exited",
        entry["last_sleep_ms"],
        entry["memory_freed_bytes"].as_u64().unwrap_or(0) / 1024,
    );

    let (body, elapsed) = fetch(&url)?;
    println!(
        "demo: GET {url} -> {} in {} ms: restored from its checkpoint, counter intact",
        body.trim(),
        elapsed.as_millis()
    );
    println!(
        "\ndemo: the daemon keeps running. Try `curl {url}` and `{} status`. Ctrl-C stops it and removes {CONTAINER}.",
        daemon_path.display()
    );
    Ok(())
}

fn fetch(url: &str) -> anyhow::Result<(String, Duration)> {
    let started = Instant::now();
    let output = Command::new("curl")
        .args(["--silent", "--show-error", "--max-time", "60", url])
        .output()
        .context("cannot run curl")?;
    let elapsed = started.elapsed();
    if !output.status.success() {
        bail!("curl {url} failed: {}", String::from_utf8_lossy(&output.stderr).trim());
    }
    Ok((String::from_utf8_lossy(&output.stdout).into_owned(), elapsed))
}

fn status(daemon_path: &Path) -> anyhow::Result<serde_json::Value> {
    let output = Command::new(daemon_path).args(["status", "--json"]).stderr(Stdio::null()).output()?;
    if !output.status.success() {
        bail!("lightwhale status failed");
    }
    Ok(serde_json::from_slice(&output.stdout)?)
}

fn demo_entry(report: &serde_json::Value) -> Option<serde_json::Value> {
    report["containers"]
        .as_array()?
        .iter()
        .find(|entry| entry["name"] == CONTAINER)
        .cloned()
}

fn wait_until(limit: Duration, stopping: &AtomicBool, mut done: impl FnMut() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if stopping.load(Ordering::SeqCst) {
            bail!("interrupted");
        }
        if done() {
            return Ok(());
        }
        thread::sleep(Duration::from_millis(200));
    }
    bail!("timed out after {} s", limit.as_secs())
}

fn wait_for_daemon(mut child: Child) {
    if let Err(error) = child.wait() {
        eprintln!("demo: cannot wait for the daemon: {error}");
    }
}

fn remove_container() {
    let _ = Command::new("docker")
        .args(["rm", "--force", CONTAINER])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}
