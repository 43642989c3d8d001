//! Traffic between containers counts as activity, broadcast frames do not,
//! and containers that lightwhale cannot hold are listed with the reason
//! and left alone.

use std::net::{Ipv4Addr, UdpSocket};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use lightwhale_tests::http_counter::start_on_loopback;
use lightwhale_tests::{
    free_port, http_get, Container, Daemon, Network, HTTP_COUNTER_IMAGE, SLEEP_TIMEOUT,
    STATE_TIMEOUT,
};

/// UDP port that the test's datagrams go to; nothing listens on it.
const DISCARD_PORT: u16 = 9;

/// A database that only another container talks to stays awake while it is
/// used, and sleeps once that stops.
#[test]
fn container_traffic_keeps_upstream_awake() -> Result<()> {
    // Dropped last, after the daemon removed the stand-ins.
    let network = Network::create("c2c")?;
    let daemon = Daemon::start(&[])?;
    let db = Container::builder("c2c-db", HTTP_COUNTER_IMAGE)
        .managed("3s")
        .network(&network)
        .start()?;
    let (app, address, _) = start_on_loopback(
        Container::builder("c2c-app", HTTP_COUNTER_IMAGE)
            .network(&network)
            .env("UPSTREAM", &format!("{}:8080", db.name())),
    )?;
    daemon.wait_for_state(db.name(), "awake", STATE_TIMEOUT)?;
    assert!(daemon.container_status(app.name())?.is_none(), "the unlabelled app is listed");

    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(10) {
        let body = http_get(address)?;
        assert!(body.lines().count() >= 2, "the app did not reach the database: {body:?}");
        let status = daemon
            .container_status(db.name())?
            .ok_or_else(|| anyhow!("{} is no longer listed", db.name()))?;
        assert_eq!(status["state"], "awake", "after {:?}: {status}", started.elapsed());
        assert_eq!(status["sleeps"], 0, "after {:?}: {status}", started.elapsed());
        thread::sleep(Duration::from_secs(1));
    }
    let status = daemon
        .container_status(db.name())?
        .ok_or_else(|| anyhow!("{} is no longer listed", db.name()))?;
    println!("database after 10 s of calls from the app: {status}");
    assert!(status["rx_packets"].as_u64().unwrap_or(0) > 0, "{status}");

    let asleep = daemon.wait_for_state(db.name(), "asleep", SLEEP_TIMEOUT)?;
    println!("database asleep once the calls stopped: {asleep}");
    assert!(app.is_running()?, "the unmanaged app was stopped");
    Ok(())
}

/// Containers that share the host's or another container's network, that
/// Docker would remove on exit, or whose labels are invalid are listed as
/// unmanageable with the reason, and never checkpointed.
#[test]
fn unmanageable_containers_are_reported() -> Result<()> {
    let daemon = Daemon::start(&[])?;
    let host_port = free_port()?;
    let host_mode = Container::builder("mode-host", HTTP_COUNTER_IMAGE)
        .managed("1s")
        .option("--network=host")
        .env("PORT", &host_port.to_string())
        .start()?;
    let owner = Container::builder("mode-owner", HTTP_COUNTER_IMAGE).start()?;
    let shared = Container::builder("mode-shared", HTTP_COUNTER_IMAGE)
        .managed("1s")
        .option(&format!("--network=container:{}", owner.name()))
        .env("PORT", "8081")
        .start()?;
    let auto_remove = Container::builder("auto-remove", HTTP_COUNTER_IMAGE)
        .managed("1s")
        .option("--rm")
        .start()?;
    let bad_label = Container::builder("bad-label", HTTP_COUNTER_IMAGE)
        .label("lightwhale.enable", "true")
        .label("lightwhale.idle-timeout", "soon")
        .start()?;

    let cases = [
        (&host_mode, "network mode host"),
        (&shared, "network mode container:"),
        (&auto_remove, "--rm"),
        (&bad_label, "lightwhale.idle-timeout=\"soon\""),
    ];
    for (container, reason) in cases {
        let entry = daemon.wait_for_state(container.name(), "unmanageable", STATE_TIMEOUT)?;
        let shown = entry["reason"].as_str().unwrap_or("");
        assert!(shown.contains(reason), "{}: expected a reason with {reason:?}: {entry}", container.name());
    }
    let table = daemon.cli(&["status"])?;
    println!("{table}");
    assert!(table.contains("not managed"), "{table}");

    // Well past their idle timeouts, all of them still run.
    thread::sleep(Duration::from_secs(4));
    for (container, _) in cases {
        assert!(container.is_running()?, "{} was stopped", container.name());
        assert!(container.checkpoints()?.is_empty(), "{} was checkpointed", container.name());
    }
    Ok(())
}

/// Frames to every port of a bridge, such as broadcasts, are no sign that
/// anyone uses a container, so they do not count as its activity, while a
/// unicast packet does.
#[test]
fn broadcast_frames_do_not_count() -> Result<()> {
    // Dropped last, after the daemon removed the stand-ins.
    let network = Network::create_with_subnet("broadcast", "10.231.14.0/24")?;
    let daemon = Daemon::start(&[])?;
    let web = Container::builder("broadcast-web", HTTP_COUNTER_IMAGE)
        .managed("10m")
        .network(&network)
        .start()?;
    daemon.wait_for_state(web.name(), "awake", STATE_TIMEOUT)?;
    let address = web.address_on(&network)?;
    let received = |daemon: &Daemon| -> Result<u64> {
        let status = daemon
            .container_status(web.name())?
            .ok_or_else(|| anyhow!("{} is not listed", web.name()))?;
        Ok(status["rx_packets"].as_u64().unwrap_or(0))
    };

    // Let the container's own start-up chatter pass first.
    thread::sleep(Duration::from_secs(2));
    let before = received(&daemon)?;
    let socket = UdpSocket::bind("0.0.0.0:0")?;
    socket.set_broadcast(true)?;
    for _ in 0..5 {
        socket.send_to(b"lightwhale", (Ipv4Addr::new(10, 231, 14, 255), DISCARD_PORT))?;
    }
    thread::sleep(Duration::from_secs(1));
    let after_broadcast = received(&daemon)?;
    assert_eq!(after_broadcast, before, "broadcast frames counted as activity");

    socket.send_to(b"lightwhale", (address, DISCARD_PORT))?;
    thread::sleep(Duration::from_secs(1));
    let after_unicast = received(&daemon)?;
    assert!(after_unicast > after_broadcast, "a unicast packet was not counted");
    Ok(())
}
