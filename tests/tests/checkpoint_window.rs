//! Connections that arrive while a container is being checkpointed or
//! restored are held and served after the wake, whichever path they take:
//! loopback through docker-proxy, Docker's NAT from the host, or a remote
//! client.

use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, Result};
use lightwhale_tests::http::http_get_path;
use lightwhale_tests::http_counter::start_on_loopback;
use lightwhale_tests::{
    free_port, http_get, parse_hits, wait_for_http, Container, Daemon, Netns, HTTP_COUNTER_IMAGE,
    SLEEP_TIMEOUT, STARTUP_TIMEOUT, STATE_TIMEOUT,
};

/// Memory the container holds, so that its checkpoint lasts long enough
/// (seconds) for the clients to connect in the middle of it.
const HELD_MIB: u32 = 256;

#[test]
fn connections_during_checkpoint_are_held() -> Result<()> {
    let daemon = Daemon::start(&[])?;
    let netns = Netns::create()?;
    let loopback_port = free_port()?;
    let public_port = free_port()?;
    let web = Container::builder("checkpoint-window", HTTP_COUNTER_IMAGE)
        .managed("10m")
        .publish("127.0.0.1", loopback_port, 8080)
        .publish_all_addresses(public_port, 8080)
        .start()?;
    let loopback = SocketAddr::from(([127, 0, 0, 1], loopback_port));
    let public = SocketAddr::from((netns.host_address(), public_port));
    wait_for_http(loopback, STARTUP_TIMEOUT)?;
    daemon.wait_for_state(web.name(), "awake", STATE_TIMEOUT)?;

    http_get_path(loopback, &format!("/alloc?mib={HELD_MIB}"))?;
    let hits = parse_hits(&http_get(loopback)?)?;

    let sleeper = {
        let daemon_ref = &daemon;
        let name = web.name().to_owned();
        thread::scope(|scope| -> Result<Vec<u64>> {
            let sleep = scope.spawn(move || daemon_ref.cli(&["sleep", &name]));
            daemon.wait_for_state(web.name(), "sleeping", STATE_TIMEOUT)?;

            // Each client connects while the checkpoint runs.
            let started = Instant::now();
            let clients = [
                scope.spawn(move || http_get(loopback)),
                scope.spawn(move || http_get(public)),
                scope.spawn(|| netns.http_get(public, "/")),
            ];
            thread::sleep(Duration::from_millis(200));
            let still_sleeping = daemon.container_status(web.name())?;
            println!("status while the clients wait: {still_sleeping:?}");

            let slept = sleep.join().map_err(|_| anyhow!("sleep thread panicked"))??;
            println!("lightwhale sleep: {}", slept.trim());
            let mut counts = Vec::new();
            for (client, label) in clients.into_iter().zip(["loopback", "host via NAT", "remote"]) {
                let body = client.join().map_err(|_| anyhow!("{label} client panicked"))??;
                println!("{label} client answered after {:?}: {}", started.elapsed(), body.trim());
                counts.push(parse_hits(&body)?);
            }
            Ok(counts)
        })
    };
    let mut counts = sleeper?;
    counts.sort_unstable();
    assert_eq!(counts, [hits + 1, hits + 2, hits + 3], "counter did not continue across the sleep");

    let status = daemon.wait_for_state(web.name(), "awake", SLEEP_TIMEOUT)?;
    println!("status after the wake: {status}");
    assert_eq!(status["sleeps"], 1, "{status}");
    assert_eq!(status["wakes"], 1, "{status}");
    assert!(status["held_connections"].as_u64().unwrap_or(0) >= 3, "{status}");
    assert!(web.is_running()?, "Docker does not report the container as running");
    Ok(())
}

/// Clients that connect while a large container is restored, through
/// Docker's NAT from the host and from a remote host, are all held and
/// served. Docker sets up the container's NAT rules before the restored
/// container owns its address, so without holding they would fail with "no
/// route to host" once the host gives up resolving that address.
#[test]
fn connections_during_restore_are_held() -> Result<()> {
    const CLIENTS: usize = 16;
    let daemon = Daemon::start(&[])?;
    let netns = Netns::create()?;
    let public_port = free_port()?;
    let web = Container::builder("restore-window", HTTP_COUNTER_IMAGE)
        .managed("10m")
        .publish_all_addresses(public_port, 8080)
        .start()?;
    let public = SocketAddr::from((netns.host_address(), public_port));
    wait_for_http(public, STARTUP_TIMEOUT)?;
    daemon.wait_for_state(web.name(), "awake", STATE_TIMEOUT)?;
    http_get_path(public, &format!("/alloc?mib={HELD_MIB}"))?;
    let hits = parse_hits(&http_get(public)?)?;

    daemon.cli(&["sleep", web.name()])?;
    daemon.wait_for_state(web.name(), "asleep", STATE_TIMEOUT)?;

    // The first client wakes the container; the others connect during the
    // restore, every 100 ms, alternately from the host and the remote side.
    let results = thread::scope(|scope| {
        let netns = &netns;
        let clients: Vec<_> = (0..CLIENTS)
            .map(|index| {
                let started = unix_micros();
                let client = scope.spawn(move || {
                    if index % 2 == 0 {
                        http_get(public)
                    } else {
                        netns.http_get(public, "/")
                    }
                });
                thread::sleep(Duration::from_millis(100));
                (started, client)
            })
            .collect();
        clients
            .into_iter()
            .map(|(started, client)| {
                let body = client.join().map_err(|_| anyhow!("client panicked"))??;
                Ok((started, parse_hits(&body)?))
            })
            .collect::<Result<Vec<(u64, u64)>>>()
    })?;

    let status = daemon.wait_for_state(web.name(), "awake", STATE_TIMEOUT)?;
    println!("status after the wake: {status}");
    let mut counts: Vec<u64> = results.iter().map(|(_, count)| *count).collect();
    counts.sort_unstable();
    let expected: Vec<u64> = (hits + 1..=hits + CLIENTS as u64).collect();
    assert_eq!(counts, expected, "a client was not answered once, or the counter restarted");

    // Every client that connected before the restored container accepted
    // connections went through the holder.
    let phases = &status["last_wake_phases"];
    let accepting_at = phases["started_unix_us"].as_u64().unwrap_or(0) + phases["accepting_us"].as_u64().unwrap_or(0);
    let before_accepting = results.iter().filter(|(started, _)| *started < accepting_at).count() as u64;
    println!("{before_accepting} of {CLIENTS} clients connected before the container accepted");
    assert!(before_accepting >= 2, "the restore ended before the clients connected: {status}");
    assert!(status["held_connections"].as_u64().unwrap_or(0) >= before_accepting, "{status}");
    assert_eq!(status["wakes"], 1, "{status}");
    Ok(())
}

fn unix_micros() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |since| since.as_micros() as u64)
}

/// Once a container is awake, new connections reach it directly: the
/// holder accepts none of them.
#[test]
fn awake_container_bypasses_holder() -> Result<()> {
    let daemon = Daemon::start(&[])?;
    let (web, address, _) =
        start_on_loopback(Container::builder("bypass", HTTP_COUNTER_IMAGE).managed("10m"))?;
    daemon.wait_for_state(web.name(), "awake", STATE_TIMEOUT)?;

    daemon.cli(&["sleep", web.name()])?;
    daemon.wait_for_state(web.name(), "asleep", STATE_TIMEOUT)?;
    http_get(address)?;
    let woken = daemon.wait_for_state(web.name(), "awake", STATE_TIMEOUT)?;
    let held = woken["held_connections"].as_u64().unwrap_or(0);
    assert_eq!(held, 1, "{woken}");

    for _ in 0..5 {
        http_get(address)?;
    }
    let after = daemon
        .container_status(web.name())?
        .ok_or_else(|| anyhow!("{} is no longer listed", web.name()))?;
    assert_eq!(after["held_connections"], held, "connections went through the holder: {after}");
    Ok(())
}
