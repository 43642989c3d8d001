//! A container with an established TCP connection stays awake however quiet
//! the connection is, because a checkpoint would cut it, unless its label
//! `lightwhale.open-connections=close` lets the daemon reset the connection
//! and checkpoint it.

use std::io::{ErrorKind, Read as _, Write as _};
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use lightwhale_tests::http_counter::start_on_loopback;
use lightwhale_tests::{
    http_get, parse_hits, Container, Daemon, HTTP_COUNTER_IMAGE, SLEEP_TIMEOUT, STATE_TIMEOUT,
};

#[test]
fn silent_connection_keeps_container_awake() -> Result<()> {
    let daemon = Daemon::start(&[])?;
    let (web, address, _) =
        start_on_loopback(Container::builder("open-connection", HTTP_COUNTER_IMAGE).managed("3s"))?;
    daemon.wait_for_state(web.name(), "awake", STATE_TIMEOUT)?;

    // A request that is never finished keeps the connection open and quiet.
    let mut connection = TcpStream::connect(address)?;
    connection.write_all(b"GET / HTTP/1.1\r\n")?;
    thread::sleep(Duration::from_secs(8));
    let status = daemon
        .container_status(web.name())?
        .ok_or_else(|| anyhow!("{} is not listed", web.name()))?;
    println!("after 8 s with a silent connection: {status}");
    assert_eq!(status["state"], "awake", "{status}");
    assert_eq!(status["sleeps"], 0, "{status}");

    let rejected = daemon.cli(&["sleep", web.name()]);
    let message = format!("{rejected:?}");
    assert!(rejected.is_err(), "lightwhale sleep succeeded with an open connection");
    assert!(message.contains("established TCP connections"), "{message}");

    drop(connection);
    let asleep = daemon.wait_for_state(web.name(), "asleep", SLEEP_TIMEOUT)?;
    println!("asleep once the connection closed: {asleep}");
    Ok(())
}

#[test]
fn close_label_resets_silent_connection_and_sleeps() -> Result<()> {
    let daemon = Daemon::start(&[])?;
    let (web, address, _) = start_on_loopback(
        Container::builder("close-connections", HTTP_COUNTER_IMAGE)
            .managed("3s")
            .label("lightwhale.open-connections", "close"),
    )?;
    daemon.wait_for_state(web.name(), "awake", STATE_TIMEOUT)?;
    let hits = parse_hits(&http_get(address)?)?;

    // Connected, and never sends a byte.
    let mut silent = TcpStream::connect(address)?;
    let started = Instant::now();
    let asleep = daemon.wait_for_state(web.name(), "asleep", SLEEP_TIMEOUT)?;
    println!("asleep {:?} after the silent client connected: {asleep}", started.elapsed());
    assert_eq!(asleep["sleeps"], 1, "{asleep}");

    let log = daemon.log();
    let closed = log
        .lines()
        .find(|line| line.contains("closed established TCP connections") && line.contains(web.name()))
        .ok_or_else(|| anyhow!("no log line about the closed connections of {}:\n{log}", web.name()))?;
    println!("{closed}");

    // The reset reaches the client directly or through docker-proxy, which
    // then ends the stream.
    silent.set_read_timeout(Some(STATE_TIMEOUT))?;
    let mut buffer = [0; 256];
    match silent.read(&mut buffer) {
        Ok(0) => println!("the silent connection was closed"),
        Ok(read) => bail!("the silent connection received data: {:?}", String::from_utf8_lossy(&buffer[..read])),
        Err(error) if matches!(error.kind(), ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted) => {
            println!("the silent connection was reset: {error}")
        }
        Err(error) => bail!("the silent connection is still open after the sleep: {error}"),
    }

    let body = http_get(address)?;
    assert_eq!(parse_hits(&body)?, hits + 1, "the container lost its state: {body:?}");
    let awake = daemon.wait_for_state(web.name(), "awake", STATE_TIMEOUT)?;
    println!("awake again: {awake}");
    assert_eq!(awake["wakes"], 1, "{awake}");
    assert!(awake["last_error"].is_null(), "{awake}");
    Ok(())
}
