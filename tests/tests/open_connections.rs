//! A container with an established TCP connection stays awake however quiet
//! the connection is, because a checkpoint would cut it.

use std::io::Write as _;
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::Duration;

use anyhow::{anyhow, Result};
use lightwhale_tests::{
    free_port, wait_for_http, Container, Daemon, HTTP_COUNTER_IMAGE, SLEEP_TIMEOUT,
    STARTUP_TIMEOUT, STATE_TIMEOUT,
};

#[test]
fn silent_connection_keeps_container_awake() -> Result<()> {
    let daemon = Daemon::start(&[])?;
    let port = free_port()?;
    let web = Container::builder("open-connection", HTTP_COUNTER_IMAGE)
        .managed("3s")
        .publish("127.0.0.1", port, 8080)
        .start()?;
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    wait_for_http(address, STARTUP_TIMEOUT)?;
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
