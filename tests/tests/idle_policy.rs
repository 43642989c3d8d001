//! Which traffic keeps a container awake, and where its idle timeout comes
//! from.

use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Result;
use lightwhale_tests::command::run;
use lightwhale_tests::http_counter::start_on_loopback;
use lightwhale_tests::{
    http_get, parse_hits, Container, Daemon, HTTP_COUNTER_IMAGE, SLEEP_TIMEOUT, STATE_TIMEOUT,
};

/// A container that receives a request every second, with a 3 s idle
/// timeout, must stay awake.
#[test]
fn busy_container_stays_awake() -> Result<()> {
    let daemon = Daemon::start(&[])?;
    let (web, address, first) =
        start_on_loopback(Container::builder("busy", HTTP_COUNTER_IMAGE).managed("3s"))?;
    let awake = daemon.wait_for_state(web.name(), "awake", STATE_TIMEOUT)?;
    assert_eq!(awake["idle_timeout_ms"], 3000, "{awake}");

    let started = Instant::now();
    let mut requests = 0;
    while started.elapsed() < Duration::from_secs(12) {
        thread::sleep(Duration::from_secs(1));
        requests += 1;
        let hits = parse_hits(&http_get(address)?)?;
        assert_eq!(hits, first + requests, "counter restarted");

        let status = daemon
            .container_status(web.name())?
            .expect("the daemon stopped listing the container");
        assert_eq!(
            status["state"],
            "awake",
            "after {:?}: {status}",
            started.elapsed()
        );
        assert_eq!(
            status["sleeps"],
            0,
            "after {:?}: {status}",
            started.elapsed()
        );
    }
    println!("{requests} requests over {:?}", started.elapsed());

    let status = daemon
        .container_status(web.name())?
        .expect("the daemon stopped listing the container");
    assert_eq!(status["sleeps"], 0, "{status}");
    assert_eq!(status["wakes"], 0, "{status}");
    assert!(
        web.is_running()?,
        "Docker does not report the container as running"
    );
    Ok(())
}

/// Without an idle-timeout label, the daemon's `--idle-timeout` applies.
#[test]
fn cli_timeout_applies_without_label() -> Result<()> {
    let daemon = Daemon::start(&["--idle-timeout", "3s"])?;
    let (web, address, hits) = start_on_loopback(
        Container::builder("cli-timeout", HTTP_COUNTER_IMAGE).label("lightwhale.enable", "true"),
    )?;

    let awake = daemon.wait_for_state(web.name(), "awake", STATE_TIMEOUT)?;
    assert_eq!(awake["idle_timeout_ms"], 3000, "{awake}");

    let asleep = daemon.wait_for_state(web.name(), "asleep", SLEEP_TIMEOUT)?;
    println!("asleep: {asleep}");
    assert!(
        !web.is_running()?,
        "Docker still reports the container as running"
    );

    let started = Instant::now();
    let body = http_get(address)?;
    println!("wake as seen by the client: {:?}", started.elapsed());
    assert_eq!(parse_hits(&body)?, hits + 1, "counter did not continue");
    Ok(())
}

/// A `docker stop` that waits out its grace period while the idle timeout
/// passes ends with the container stopped, not asleep. The http-counter
/// runs as PID 1 without a SIGTERM handler, so the kernel ignores SIGTERM,
/// and Docker kills it after the grace period.
#[test]
fn user_stop_during_idle_timeout_stops() -> Result<()> {
    let daemon = Daemon::start(&[])?;
    let (web, address, _) =
        start_on_loopback(Container::builder("user-stop", HTTP_COUNTER_IMAGE).managed("3s"))?;
    daemon.wait_for_state(web.name(), "awake", STATE_TIMEOUT)?;

    let started = Instant::now();
    run(Command::new("docker").args(["stop", web.id()]))?;
    println!("docker stop returned after {:?}", started.elapsed());
    let status = daemon.wait_for_state(web.name(), "stopped", STATE_TIMEOUT)?;
    println!("status: {status}");
    assert_eq!(status["sleeps"], 0, "the container was checkpointed during the stop: {status}");
    assert!(!web.is_running()?, "the container runs after docker stop");
    assert!(web.checkpoints()?.is_empty(), "the container has a checkpoint");

    // The daemon no longer steers its port, so a client is refused and
    // nothing wakes it.
    assert!(http_get(address).is_err(), "a stopped container's port was answered");
    thread::sleep(Duration::from_secs(2));
    assert!(!web.is_running()?, "a connection started the stopped container");
    Ok(())
}
