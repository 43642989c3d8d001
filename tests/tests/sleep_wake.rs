//! An idle container is checkpointed, and a client connection restores it.

use std::net::SocketAddr;
use std::time::Instant;

use anyhow::Result;
use lightwhale_tests::restore_copies::restore_copies_of;
use lightwhale_tests::{
    free_port, http_get, parse_hits, wait_for_http, Container, Daemon, HTTP_COUNTER_IMAGE,
    wait_until, SLEEP_TIMEOUT, STARTUP_TIMEOUT, STATE_TIMEOUT,
};

/// The container starts before the daemon, so the daemon has to adopt a
/// container that is already running.
#[test]
fn idle_container_sleeps_and_wakes() -> Result<()> {
    let loopback_port = free_port()?;
    let all_addresses_port = free_port()?;
    let web = Container::builder("sleep-wake", HTTP_COUNTER_IMAGE)
        .managed("3s")
        .publish("127.0.0.1", loopback_port, 8080)
        .publish_all_addresses(all_addresses_port, 8080)
        .start()?;
    let address = SocketAddr::from(([127, 0, 0, 1], loopback_port));
    wait_for_http(address, STARTUP_TIMEOUT)?;

    let daemon = Daemon::start(&[])?;
    daemon.wait_for_state(web.name(), "awake", STATE_TIMEOUT)?;

    let mut hits = 0;
    for _ in 0..3 {
        hits = parse_hits(&http_get(address)?)?;
    }
    println!("counter at {hits} before sleep");

    let started = Instant::now();
    let asleep = daemon.wait_for_state(web.name(), "asleep", SLEEP_TIMEOUT)?;
    println!(
        "asleep {:?} after the last request: {asleep}",
        started.elapsed()
    );
    let memory_freed = asleep["memory_freed_bytes"].as_u64().unwrap_or(0);
    assert!(memory_freed > 0, "no memory freed: {asleep}");
    assert_eq!(asleep["sleeps"], 1, "{asleep}");
    assert_eq!(asleep["wakes"], 0, "{asleep}");
    assert!(asleep["last_sleep_ms"].is_u64(), "{asleep}");
    assert!(
        !web.is_running()?,
        "Docker still reports the container as running"
    );

    let started = Instant::now();
    let body = http_get(address)?;
    println!("wake as seen by the client: {:?}", started.elapsed());
    // A cold start would restart the counter at 1.
    assert_eq!(parse_hits(&body)?, hits + 1, "counter did not continue");

    let awake = daemon.wait_for_state(web.name(), "awake", STATE_TIMEOUT)?;
    println!("awake again: {awake}");
    assert_eq!(awake["wakes"], 1, "{awake}");
    assert_eq!(awake["sleeps"], 1, "{awake}");
    assert!(awake["last_wake_ms"].is_u64(), "{awake}");
    assert!(
        web.is_running()?,
        "Docker does not report the container as running"
    );

    // containerd leaves its extracted copy of the checkpoint behind, and
    // the daemon removes it.
    wait_until("containerd's copy of the checkpoint to be removed", STATE_TIMEOUT, || {
        Ok(restore_copies_of(web.id())?.is_empty().then_some(()))
    })?;
    Ok(())
}
