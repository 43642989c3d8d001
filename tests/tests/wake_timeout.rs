//! A container restored without a listener on its port. The holder closes
//! the connections it held once `lightwhale.wake-timeout` passed. Until
//! then it keeps at most 1024 of them and closes the others at once.

use std::io::{ErrorKind, Read as _};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use lightwhale_tests::http::http_get_path;
use lightwhale_tests::http_counter::start_on_loopback;
use lightwhale_tests::{wait_until, Container, Daemon, HTTP_COUNTER_IMAGE, STATE_TIMEOUT};

/// Connections the holder keeps open for one container.
const PER_CONTAINER_LIMIT: usize = 1024;

/// Connections the limit test opens.
const CLIENTS: usize = 1100;

/// Upper bound for a held connection to be closed after a 3 s wake timeout.
/// The timeout starts after the restore, so the bound leaves room for a slow one.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(30);

/// Starts a managed http-counter that never sleeps on its own, with the
/// given wake timeout, and waits until it serves.
fn start_container(daemon: &Daemon, hint: &str, wake_timeout: &str) -> Result<(Container, SocketAddr)> {
    let (web, address, _) = start_on_loopback(
        Container::builder(hint, HTTP_COUNTER_IMAGE)
            .managed("1h")
            .label("lightwhale.wake-timeout", wake_timeout),
    )?;
    daemon.wait_for_state(web.name(), "awake", STATE_TIMEOUT)?;
    Ok((web, address))
}

/// Makes the workload close its listener, waits until it did, and puts the
/// container to sleep: once restored, it never accepts a connection.
fn close_listener_and_sleep(daemon: &Daemon, web: &Container, address: SocketAddr) -> Result<()> {
    http_get_path(address, "/close-listener").context(
        "the http-counter image has no /close-listener route; rebuild the test images with `cargo xtask test`",
    )?;
    wait_until("the workload to close its listener", STATE_TIMEOUT, || {
        Ok(web.logs()?.contains("closed the listener").then_some(()))
    })?;
    let message = daemon.cli(&["sleep", web.name()])?;
    println!("{}", message.trim());
    daemon.wait_for_state(web.name(), "asleep", STATE_TIMEOUT)?;
    Ok(())
}

/// Returns whether the peer closed `stream`, without blocking.
fn is_closed(stream: &mut TcpStream) -> Result<bool> {
    stream.set_nonblocking(true)?;
    let mut buffer = [0; 64];
    match stream.read(&mut buffer) {
        Ok(0) => Ok(true),
        Ok(read) => bail!("a held connection received data: {:?}", String::from_utf8_lossy(&buffer[..read])),
        Err(error) if error.kind() == ErrorKind::WouldBlock => Ok(false),
        Err(error) if matches!(error.kind(), ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted) => Ok(true),
        Err(error) => Err(error.into()),
    }
}

/// Counts the connections of `clients` that the peer closed.
fn count_closed(clients: &mut [TcpStream]) -> Result<usize> {
    let mut closed = 0;
    for client in clients {
        if is_closed(client)? {
            closed += 1;
        }
    }
    Ok(closed)
}

/// Raises the soft limit of open files of this process to at least `minimum`.
fn raise_file_limit(minimum: u64) -> Result<()> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `limit` is a valid rlimit for getrlimit and setrlimit.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            bail!("getrlimit failed: {}", std::io::Error::last_os_error());
        }
        if limit.rlim_cur >= minimum {
            return Ok(());
        }
        if limit.rlim_max < minimum {
            bail!("the hard limit of open files is {}, and this test needs {minimum}", limit.rlim_max);
        }
        let raised = libc::rlimit { rlim_cur: minimum, rlim_max: limit.rlim_max };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) != 0 {
            bail!("setrlimit failed: {}", std::io::Error::last_os_error());
        }
    }
    Ok(())
}

#[test]
fn never_accepting_container_closes_held_connection() -> Result<()> {
    let daemon = Daemon::start(&[])?;
    let (web, address) = start_container(&daemon, "wake-timeout", "3s")?;
    close_listener_and_sleep(&daemon, &web, address)?;

    let started = Instant::now();
    let mut client = TcpStream::connect(address)?;
    client.set_read_timeout(Some(CLOSE_TIMEOUT))?;
    let mut buffer = [0; 64];
    let outcome = client.read(&mut buffer);
    let elapsed = started.elapsed();
    match outcome {
        Ok(0) => println!("the held connection was closed after {elapsed:?}"),
        Ok(read) => bail!("the held connection received data: {:?}", String::from_utf8_lossy(&buffer[..read])),
        Err(error) if matches!(error.kind(), ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted) => {
            println!("the held connection was reset after {elapsed:?}: {error}")
        }
        Err(error) => bail!("the held connection is still open after {elapsed:?}: {error}"),
    }
    // Held for the wake timeout, not rejected at once.
    assert!(elapsed >= Duration::from_secs(1), "closed after {elapsed:?}, before the wake timeout");

    let status = daemon.wait_for_status(web.name(), "the wake timeout in last_error", STATE_TIMEOUT, |entry| {
        entry["last_error"].as_str().is_some_and(|error| error.contains("did not accept connections within 3s"))
    })?;
    println!("after the wake timeout: {status}");
    assert_eq!(status["state"], "awake", "{status}");
    assert_eq!(status["wakes"], 1, "{status}");
    assert_eq!(status["held_connections"], 1, "{status}");
    assert_eq!(status["rejected_connections"], 0, "{status}");
    assert!(daemon.log().contains("closing held connection: wake failed"), "{}", daemon.log());
    Ok(())
}

#[test]
fn never_accepting_container_rejects_over_limit() -> Result<()> {
    raise_file_limit(CLIENTS as u64 + 256)?;
    let daemon = Daemon::start(&[])?;
    let (web, address) = start_container(&daemon, "holder-limit", "30s")?;
    close_listener_and_sleep(&daemon, &web, address)?;

    // The first connection starts the restore, which then waits for the
    // port until the wake timeout passes.
    let started = Instant::now();
    let mut clients = Vec::with_capacity(CLIENTS);
    for index in 0..CLIENTS {
        let client = TcpStream::connect_timeout(&address, STATE_TIMEOUT)
            .with_context(|| format!("connection {index} failed"))?;
        clients.push(client);
    }
    println!("{CLIENTS} connections opened in {:?}", started.elapsed());

    let rejected = CLIENTS - PER_CONTAINER_LIMIT;
    let status = daemon.wait_for_status(web.name(), &format!("{rejected} rejected connections"), STATE_TIMEOUT, |entry| {
        entry["rejected_connections"] == rejected
    })?;
    println!("while waking: {status}");
    assert_eq!(status["state"], "waking", "{status}");
    assert_eq!(status["held_connections"], PER_CONTAINER_LIMIT, "{status}");
    let closed = wait_until("the rejected connections to be closed", STATE_TIMEOUT, || {
        let closed = count_closed(&mut clients)?;
        Ok((closed >= rejected).then_some(closed))
    })?;
    assert_eq!(closed, rejected, "closed connections, of {CLIENTS}");
    println!("{closed} connections closed at once, {} held, after {:?}", CLIENTS - closed, started.elapsed());

    let holder = &daemon.status()?["holder"];
    assert_eq!(holder["rejected_connections"], rejected, "{holder}");
    assert_eq!(holder["open_connections"], PER_CONTAINER_LIMIT, "{holder}");
    let log = daemon.log();
    let reason = log
        .lines()
        .find(|line| line.contains("rejected connection: the holder keeps its maximum of connections for this container"))
        .ok_or_else(|| anyhow!("no log line about the rejected connections:\n{log}"))?;
    println!("{reason}");
    assert!(reason.contains(web.name()), "{reason}");
    assert!(reason.contains("limit=1024"), "{reason}");

    // The wake timeout closes the held ones.
    let status = daemon.wait_for_status(web.name(), "the wake timeout in last_error", Duration::from_secs(60), |entry| {
        entry["last_error"].as_str().is_some_and(|error| error.contains("did not accept connections"))
    })?;
    println!("after the wake timeout: {status}");
    let closed = wait_until("the held connections to be closed", STATE_TIMEOUT, || {
        let closed = count_closed(&mut clients)?;
        Ok((closed == CLIENTS).then_some(closed))
    })?;
    println!("all {closed} connections closed after {:?}", started.elapsed());
    wait_until("the holder to count no open connection", STATE_TIMEOUT, || {
        Ok((daemon.status()?["holder"]["open_connections"] == 0).then_some(()))
    })?;
    Ok(())
}
