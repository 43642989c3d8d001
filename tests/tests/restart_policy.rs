//! Docker restarts a container with a restart policy as soon as a
//! checkpoint stopped it, as a fresh process. Lightwhale suspends the policy
//! while the container sleeps and sets it back when it wakes.

use std::thread;
use std::time::Duration;

use anyhow::Result;
use lightwhale_tests::http_counter::start_on_loopback;
use lightwhale_tests::{
    http_get, parse_hits, Container, Daemon, HTTP_COUNTER_IMAGE, SLEEP_TIMEOUT, STATE_TIMEOUT,
};

#[test]
fn restart_policy_suspended_while_asleep() -> Result<()> {
    let daemon = Daemon::start(&[])?;
    let (web, address, _) = start_on_loopback(
        Container::builder("restart-policy", HTTP_COUNTER_IMAGE)
            .managed("3s")
            .option("--restart=unless-stopped"),
    )?;
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
