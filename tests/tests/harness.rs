//! Checks of the test images and the harness guards, without the daemon.
//!
//! When one of these fails, the end-to-end tests cannot be trusted either,
//! whatever the daemon does.

use std::net::SocketAddr;
use std::process::Command;

use anyhow::Result;
use lightwhale_tests::command::{output, run};
use lightwhale_tests::http::http_get_path;
use lightwhale_tests::http_counter::start_on_loopback;
use lightwhale_tests::redis::redis_cli;
use lightwhale_tests::{
    free_port, http_get, parse_hits, wait_for_http, Container, Netns, Network, HTTP_COUNTER_IMAGE,
    REDIS_IMAGE, STARTUP_TIMEOUT,
};

#[test]
fn http_counter_counts_and_allocates() -> Result<()> {
    let (web, address, first) =
        start_on_loopback(Container::builder("harness-counter", HTTP_COUNTER_IMAGE))?;
    assert_eq!(parse_hits(&http_get(address)?)?, first + 1);
    assert_eq!(parse_hits(&http_get(address)?)?, first + 2);

    let allocated = http_get_path(address, "/alloc?mib=8")?;
    assert_eq!(allocated, "allocated=8\n");
    let not_found = http_get_path(address, "/missing");
    assert!(not_found.is_err(), "GET /missing returned {not_found:?}");

    // Neither /alloc nor an unknown path counts as a hit.
    assert_eq!(parse_hits(&http_get(address)?)?, first + 3);
    assert!(web.is_running()?);
    Ok(())
}

#[test]
fn container_removed_on_drop() -> Result<()> {
    let web = Container::builder("harness-drop", HTTP_COUNTER_IMAGE).start()?;
    let id = web.id().to_string();
    drop(web);

    let inspect = output(Command::new("docker").args(["inspect", &id]))?;
    assert!(!inspect.status.success(), "container {id} still exists");
    Ok(())
}

#[test]
fn netns_reaches_published_port() -> Result<()> {
    let port = free_port()?;
    let web = Container::builder("harness-netns", HTTP_COUNTER_IMAGE)
        .publish_all_addresses(port, 8080)
        .start()?;
    wait_for_http(SocketAddr::from(([127, 0, 0, 1], port)), STARTUP_TIMEOUT)?;

    let netns = Netns::create()?;
    let name = netns.name().to_string();
    let remote = SocketAddr::from((netns.host_address(), port));
    let body = netns.http_get(remote, "/")?;
    println!("from {}: {body:?}", netns.namespace_address());
    parse_hits(&body)?;

    assert!(web.is_running()?);

    let host_address = format!("inet {}/30", netns.host_address());
    drop(netns);
    let namespaces = run(Command::new("ip").args(["netns", "list"]))?;
    assert!(
        !namespaces
            .lines()
            .any(|line| line.split_whitespace().next() == Some(name.as_str())),
        "namespace {name} still exists: {namespaces}"
    );
    let addresses = run(Command::new("ip").args(["-4", "-oneline", "address", "show"]))?;
    assert!(
        !addresses.contains(&host_address),
        "the host side of the veth pair still exists: {addresses}"
    );
    Ok(())
}

#[test]
fn upstream_mode_over_network() -> Result<()> {
    // Declared first so that it is dropped after the containers on it.
    let network = Network::create("harness-net")?;
    let upstream = Container::builder("harness-upstream", HTTP_COUNTER_IMAGE)
        .network(&network)
        .start()?;
    let port = free_port()?;
    let _front = Container::builder("harness-front", HTTP_COUNTER_IMAGE)
        .network(&network)
        .env("UPSTREAM", &format!("{}:8080", upstream.name()))
        .publish("127.0.0.1", port, 8080)
        .start()?;

    let body = wait_for_http(SocketAddr::from(([127, 0, 0, 1], port)), STARTUP_TIMEOUT)?;
    let lines: Vec<&str> = body.lines().collect();
    assert_eq!(lines.len(), 2, "unexpected body {body:?}");
    assert!(lines[0].starts_with("hits="), "unexpected body {body:?}");
    assert!(lines[1].starts_with("hits="), "unexpected body {body:?}");
    Ok(())
}

#[test]
fn redis_image_serves() -> Result<()> {
    let port = free_port()?;
    let _redis = Container::builder("harness-redis", REDIS_IMAGE)
        .publish("127.0.0.1", port, 6379)
        .start()?;

    lightwhale_tests::wait_until("redis to answer PING", STARTUP_TIMEOUT, || {
        Ok(Some(redis_cli(port, &["PING"])?).filter(|reply| reply.trim() == "PONG"))
    })?;
    assert_eq!(redis_cli(port, &["SET", "greeting", "hello"])?.trim(), "OK");
    assert_eq!(redis_cli(port, &["GET", "greeting"])?.trim(), "hello");
    assert_eq!(
        redis_cli(port, &["CONFIG", "GET", "appendonly"])?,
        "appendonly\nno\n"
    );
    Ok(())
}
