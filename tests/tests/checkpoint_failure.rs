//! A container that CRIU cannot checkpoint keeps running: the daemon shows
//! the cause, and retries later instead of looping.

use std::fs;
use std::net::SocketAddr;
use std::os::unix::net::UnixListener;
use std::thread;
use std::time::Duration;

use anyhow::{anyhow, Result};
use lightwhale_tests::{
    free_port, http_get, parse_hits, wait_for_http, Container, Daemon, HTTP_COUNTER_IMAGE,
    STARTUP_TIMEOUT, STATE_TIMEOUT,
};

#[test]
fn checkpoint_failure_keeps_container_running() -> Result<()> {
    // A Unix socket whose peer is the test process, outside the container:
    // CRIU refuses to dump a connection to an external Unix socket.
    let dir = std::env::temp_dir().join(format!("lightwhale-external-{}", std::process::id()));
    fs::create_dir_all(&dir)?;
    let listener = UnixListener::bind(dir.join("peer.sock"))?;

    let daemon = Daemon::start(&[])?;
    let port = free_port()?;
    let web = Container::builder("undumpable", HTTP_COUNTER_IMAGE)
        .managed("3s")
        .option(&format!("--volume={}:/external", dir.display()))
        .env("HOLD_UNIX_SOCKET", "/external/peer.sock")
        .publish("127.0.0.1", port, 8080)
        .start()?;
    let (_peer, _) = listener.accept()?;
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    wait_for_http(address, STARTUP_TIMEOUT)?;
    let hits = parse_hits(&http_get(address)?)?;

    let failed = daemon.wait_for_status(web.name(), "a checkpoint error", STATE_TIMEOUT, |entry| {
        entry["last_error"].as_str().is_some_and(|error| error.contains("checkpoint failed"))
    })?;
    println!("after the failed checkpoint: {failed}");
    assert_eq!(failed["state"], "awake", "{failed}");
    assert_eq!(failed["sleeps"], 0, "{failed}");
    assert!(web.is_running()?, "the container stopped after the failed checkpoint");
    assert_eq!(parse_hits(&http_get(address)?)?, hits + 1, "the container lost its state");

    // The next attempt waits for the back-off (30 s), so nothing changes for
    // a few idle timeouts.
    thread::sleep(Duration::from_secs(10));
    let later = daemon
        .container_status(web.name())?
        .ok_or_else(|| anyhow!("{} is not listed", web.name()))?;
    assert_eq!(later["state"], "awake", "{later}");
    assert_eq!(later["sleeps"], 0, "{later}");
    let attempts = daemon.log().matches("sleep failed").count();
    assert_eq!(attempts, 1, "the daemon retried without backing off:\n{}", daemon.log());

    drop(web);
    fs::remove_dir_all(&dir)?;
    Ok(())
}
