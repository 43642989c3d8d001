//! The holder serves only connections that were steered to it for a
//! sleeping container: it is not a proxy that reaches anything else.

use std::net::SocketAddr;
use std::process::Command;

use anyhow::{anyhow, Context, Result};
use lightwhale_tests::command::output;
use lightwhale_tests::http::curl_args;
use lightwhale_tests::http_counter::start_on_loopback;
use lightwhale_tests::{Container, Daemon, HTTP_COUNTER_IMAGE, SLEEP_TIMEOUT};

/// Returns the holder's address from the daemon's start-up log line.
fn holder_address(daemon: &Daemon) -> Result<SocketAddr> {
    let log = daemon.log();
    let field = log
        .split_whitespace()
        .find_map(|word| word.strip_prefix("holder="))
        .ok_or_else(|| anyhow!("no holder address in the log:\n{log}"))?;
    field.parse().with_context(|| format!("invalid holder address {field:?}"))
}

#[test]
fn holder_rejects_direct_connections() -> Result<()> {
    let daemon = Daemon::start(&[])?;
    let (web, _, _) =
        start_on_loopback(Container::builder("holder-direct", HTTP_COUNTER_IMAGE).managed("3s"))?;
    daemon.wait_for_state(web.name(), "asleep", SLEEP_TIMEOUT)?;

    let holder = holder_address(&daemon)?;
    let attempt = output(Command::new("curl").args(curl_args(holder, "/")))?;
    assert!(
        !attempt.status.success(),
        "the holder answered a direct connection: {}",
        String::from_utf8_lossy(&attempt.stdout)
    );

    let status = daemon
        .container_status(web.name())?
        .ok_or_else(|| anyhow!("{} is not listed", web.name()))?;
    assert_eq!(status["state"], "asleep", "a direct connection woke the container: {status}");
    assert_eq!(status["wakes"], 0, "{status}");
    assert_eq!(status["held_connections"], 0, "{status}");
    Ok(())
}
