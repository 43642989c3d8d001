//! Docker restarts a container with a restart policy as soon as a
//! checkpoint stopped it, as a fresh process. Lightwhale suspends the policy
//! while the container sleeps and sets it back when it wakes.

use std::net::SocketAddr;
use std::thread;
use std::time::Duration;

use anyhow::Result;
use lightwhale_tests::{
    free_port, http_get, parse_hits, wait_for_http, Container, Daemon, HTTP_COUNTER_IMAGE,
    SLEEP_TIMEOUT, STARTUP_TIMEOUT, STATE_TIMEOUT,
};

#[test]
fn restart_policy_suspended_while_asleep() -> Result<()> {
    let daemon = Daemon::start(&[])?;
    let port = free_port()?;
    let web = Container::builder("restart-policy", HTTP_COUNTER_IMAGE)
        .managed("3s")
        .option("--restart=unless-stopped")
        .publish("127.0.0.1", port, 8080)
        .start()?;
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    wait_for_http(address, STARTUP_TIMEOUT)?;
    let hits = parse_hits(&http_get(address)?)?;

    daemon.wait_for_state(web.name(), "asleep", SLEEP_TIMEOUT)?;
    thread::sleep(Duration::from_secs(3));
    assert!(!web.is_running()?, "Docker restarted the sleeping container");
    assert_eq!(web.inspect("{{.HostConfig.RestartPolicy.Name}}")?.trim(), "no");

    let body = http_get(address)?;
    assert_eq!(parse_hits(&body)?, hits + 1, "the container lost its state: {body:?}");
    daemon.wait_for_state(web.name(), "awake", STATE_TIMEOUT)?;
    assert_eq!(web.inspect("{{.HostConfig.RestartPolicy.Name}}")?.trim(), "unless-stopped");
    assert_eq!(web.inspect("{{.RestartCount}}")?.trim(), "0", "Docker restarted the container");
    Ok(())
}
