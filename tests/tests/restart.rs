//! A daemon killed with SIGKILL while containers sleep serves them again
//! after a restart, with their memory state intact, and a restarted daemon
//! leaves a container that the user stopped after a wake stopped.

use std::net::SocketAddr;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use lightwhale_tests::command::run;
use lightwhale_tests::http_counter::start_on_loopback;
use lightwhale_tests::{
    free_port, http_get, parse_hits, wait_for_http, Container, Daemon, Network, HTTP_COUNTER_IMAGE,
    SLEEP_TIMEOUT, STARTUP_TIMEOUT, STATE_TIMEOUT,
};

#[test]
fn sleepers_survive_daemon_kill() -> Result<()> {
    // Dropped last, after the daemon removed the stand-ins.
    let network = Network::create_with_subnet("restart", "10.231.12.0/24")?;
    let mut daemon = Daemon::start(&[])?;

    let loopback_port = free_port()?;
    let public_port = free_port()?;
    let local = Container::builder("restart-local", HTTP_COUNTER_IMAGE)
        .managed("3s")
        .publish("127.0.0.1", loopback_port, 8080)
        .start()?;
    let public = Container::builder("restart-public", HTTP_COUNTER_IMAGE)
        .managed("3s")
        .publish_all_addresses(public_port, 8080)
        .start()?;
    let internal = Container::builder("restart-internal", HTTP_COUNTER_IMAGE)
        .managed("3s")
        .network(&network)
        .start()?;
    let internal_address = internal.address_on(&network)?;

    let targets = [
        (&local, SocketAddr::from(([127, 0, 0, 1], loopback_port))),
        (&public, SocketAddr::from(([127, 0, 0, 1], public_port))),
        (&internal, SocketAddr::from((internal_address, 8080))),
    ];
    let mut counts = Vec::new();
    for (_, address) in targets {
        wait_for_http(address, STARTUP_TIMEOUT)?;
        counts.push(parse_hits(&http_get(address)?)?);
    }
    for (container, _) in targets {
        daemon.wait_for_state(container.name(), "asleep", SLEEP_TIMEOUT)?;
    }

    daemon.kill()?;
    daemon.restart()?;
    for (container, _) in targets {
        let status = daemon.wait_for_state(container.name(), "asleep", STATE_TIMEOUT)?;
        println!("after the restart: {status}");
        assert!(status["memory_freed_bytes"].as_u64().unwrap_or(0) > 0, "memory at sleep was not kept: {status}");
    }
    let internal_status = daemon
        .container_status(internal.name())?
        .ok_or_else(|| anyhow!("{} is not listed", internal.name()))?;
    assert!(internal_status["stand_in"].is_string(), "no stand-in after the restart: {internal_status}");

    for ((container, address), before) in targets.into_iter().zip(counts) {
        let started = Instant::now();
        let body = http_get(address)?;
        println!("{} answered after the restart in {:?}: {}", container.name(), started.elapsed(), body.trim());
        assert_eq!(parse_hits(&body)?, before + 1, "{} lost its state", container.name());
    }
    Ok(())
}

/// A container stopped with `docker stop` after a wake keeps the checkpoint
/// it was restored from. It stays stopped when the daemon starts again,
/// because restoring that older checkpoint would bring back memory from
/// before the wake.
#[test]
fn stopped_after_wake_stays_stopped_after_restart() -> Result<()> {
    let mut daemon = Daemon::start(&[])?;
    let (web, address, _) =
        start_on_loopback(Container::builder("stopped-after-wake", HTTP_COUNTER_IMAGE).managed("10m"))?;
    daemon.wait_for_state(web.name(), "awake", STATE_TIMEOUT)?;
    daemon.cli(&["sleep", web.name()])?;
    daemon.wait_for_state(web.name(), "asleep", SLEEP_TIMEOUT)?;
    let hits = parse_hits(&http_get(address)?)?;
    daemon.wait_for_state(web.name(), "awake", STATE_TIMEOUT)?;
    run(Command::new("docker").args(["stop", "--time", "1", web.id()]))?;
    daemon.wait_for_state(web.name(), "stopped", STATE_TIMEOUT)?;
    assert!(!web.checkpoints()?.is_empty(), "the checkpoint of the wake is gone, so nothing is tested");

    daemon.stop()?;
    daemon.restart()?;
    let status = daemon.wait_for_state(web.name(), "stopped", STATE_TIMEOUT)?;
    println!("after the restart: {status}");
    assert!(http_get(address).is_err(), "the stopped container's port was answered");
    thread::sleep(Duration::from_secs(2));
    assert!(!web.is_running()?, "a connection restored the stopped container from an old checkpoint");

    // Started by hand, it starts over rather than resuming the old memory.
    run(Command::new("docker").args(["start", web.id()]))?;
    wait_for_http(address, STARTUP_TIMEOUT)?;
    let body = http_get(address)?;
    assert!(parse_hits(&body)? <= hits, "the container resumed from a checkpoint: {body:?}");
    Ok(())
}
