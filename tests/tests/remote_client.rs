//! A client on another host, simulated by a network namespace, wakes a
//! sleeping container through a port published on all addresses.

use std::net::SocketAddr;
use std::time::Instant;

use anyhow::Result;
use lightwhale_tests::{
    free_port, parse_hits, wait_until, Container, Daemon, Netns, HTTP_COUNTER_IMAGE, SLEEP_TIMEOUT,
    STARTUP_TIMEOUT, STATE_TIMEOUT,
};

/// The daemon starts before the container, so it has to pick up a
/// container started while it runs.
#[test]
fn remote_client_wakes_container() -> Result<()> {
    let daemon = Daemon::start(&[])?;
    let netns = Netns::create()?;
    let port = free_port()?;
    let web = Container::builder("remote-client", HTTP_COUNTER_IMAGE)
        .managed("3s")
        .publish_all_addresses(port, 8080)
        .start()?;
    let remote = SocketAddr::from((netns.host_address(), port));

    wait_until(
        "the container to respond to the namespace",
        STARTUP_TIMEOUT,
        || netns.http_get(remote, "/").map(Some),
    )?;
    daemon.wait_for_state(web.name(), "awake", STATE_TIMEOUT)?;

    let mut hits = 0;
    for _ in 0..3 {
        hits = parse_hits(&netns.http_get(remote, "/")?)?;
    }
    println!("counter at {hits} before sleep");

    let asleep = daemon.wait_for_state(web.name(), "asleep", SLEEP_TIMEOUT)?;
    println!("asleep: {asleep}");
    let memory_freed = asleep["memory_freed_bytes"].as_u64().unwrap_or(0);
    assert!(memory_freed > 0, "no memory freed: {asleep}");
    assert!(
        !web.is_running()?,
        "Docker still reports the container as running"
    );

    let started = Instant::now();
    let body = netns.http_get(remote, "/")?;
    println!(
        "wake as seen by the client at {}: {:?}",
        netns.namespace_address(),
        started.elapsed()
    );
    assert_eq!(parse_hits(&body)?, hits + 1, "counter did not continue");

    let awake = daemon.wait_for_state(web.name(), "awake", STATE_TIMEOUT)?;
    assert_eq!(awake["wakes"], 1, "{awake}");
    assert!(
        web.is_running()?,
        "Docker does not report the container as running"
    );
    Ok(())
}
