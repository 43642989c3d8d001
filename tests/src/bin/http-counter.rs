//! A small HTTP/1.1 server used as the test workload.
//!
//! Its in-memory hit counter shows whether a container was restored from a
//! checkpoint (the count continues) or started cold (the count restarts).
//!
//! Environment:
//! - `PORT`: TCP port to listen on, on all IPv4 addresses (default 8080).
//! - `UPSTREAM`: optional `host:port`. When set, `GET /` also fetches
//!   `GET /` from that server and appends its body to the response.
//! - `HOLD_UNIX_SOCKET`: optional path of a Unix stream socket to connect
//!   to at start and keep open. A peer outside the container makes the
//!   process impossible for CRIU to checkpoint.
//!
//! Routes:
//! - `GET /` counts the request and returns `hits=N\n`, where N includes
//!   this request. Only this route changes the counter.
//! - `GET /alloc?mib=N` allocates N MiB, writes every byte so the pages are
//!   resident, keeps them until the process exits and returns
//!   `allocated=N\n`.
//! - `GET /close-listener` returns `closing listener\n`, then closes the
//!   listening socket. The process keeps running and never accepts a
//!   connection again, like a service that hangs after a restore.
//!
//! Every response closes its connection.
//!
//! NOTE: std cannot install signal handlers, so as a container's PID 1 the
//! server ignores SIGTERM, and `docker stop` kills it only after its stop
//! timeout. Tests remove containers with `docker rm --force` instead.

use std::env;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::thread;
use std::time::Duration;

const MIB: usize = 1024 * 1024;

/// How long a client or upstream may take to send its request or response.
/// It is long because an upstream may be asleep and need a restore first.
const IO_TIMEOUT: Duration = Duration::from_secs(120);

/// Number of `GET /` requests served so far.
static HITS: AtomicU64 = AtomicU64::new(0);

/// Set by `/close-listener`; the accept loop then closes the listener.
static CLOSE_LISTENER: AtomicBool = AtomicBool::new(false);

/// Memory allocated by `/alloc`, kept alive until the process exits.
static ALLOCATIONS: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

fn main() {
    let port: u16 = match env::var("PORT") {
        Ok(value) => value.parse().unwrap_or_else(|_| {
            eprintln!("invalid PORT {value:?}: expected a TCP port number");
            std::process::exit(2);
        }),
        Err(_) => 8080,
    };
    let upstream = env::var("UPSTREAM").ok().filter(|value| !value.is_empty());
    let _held_socket = env::var("HOLD_UNIX_SOCKET").ok().map(|path| {
        std::os::unix::net::UnixStream::connect(&path).unwrap_or_else(|err| {
            eprintln!("failed to connect to {path}: {err}");
            std::process::exit(1);
        })
    });

    let listener = TcpListener::bind(("0.0.0.0", port)).unwrap_or_else(|err| {
        eprintln!("failed to listen on 0.0.0.0:{port}: {err}");
        std::process::exit(1);
    });
    match &upstream {
        Some(upstream) => println!("listening on 0.0.0.0:{port}, upstream {upstream}"),
        None => println!("listening on 0.0.0.0:{port}"),
    }

    for stream in listener.incoming() {
        if CLOSE_LISTENER.load(Ordering::SeqCst) {
            break;
        }
        let stream = match stream {
            Ok(stream) => stream,
            Err(err) => {
                eprintln!("accept failed: {err}");
                continue;
            }
        };
        let upstream = upstream.clone();
        thread::spawn(move || {
            let peer = stream
                .peer_addr()
                .map_or_else(|_| "unknown peer".to_string(), |addr| addr.to_string());
            if let Err(err) = serve(stream, upstream.as_deref(), port) {
                eprintln!("connection from {peer} failed: {err}");
            }
        });
    }

    drop(listener);
    println!("closed the listener on 0.0.0.0:{port}; no longer accepting connections");
    loop {
        thread::park();
    }
}

/// Reads one request from `stream`, writes the response and closes.
/// `port` is the server's own port, which `/close-listener` needs.
fn serve(mut stream: TcpStream, upstream: Option<&str>, port: u16) -> io::Result<()> {
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    let mut reader = BufReader::new(stream.try_clone()?);

    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    // The headers are read and ignored because no route needs them, and a
    // GET request has no body.
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header.trim_end().is_empty() {
            break;
        }
    }

    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or("");
    let target = parts.next().unwrap_or("");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));

    let (status, body) = match (method, path) {
        ("GET", "/") => count_hit(upstream),
        ("GET", "/alloc") => allocate(query),
        ("GET", "/close-listener") => ("200 OK", "closing listener\n".to_string()),
        ("GET", _) => ("404 Not Found", format!("not found: {path}\n")),
        _ => (
            "405 Method Not Allowed",
            "only GET is supported\n".to_string(),
        ),
    };

    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes())?;
    stream.flush()?;
    drop(reader);
    drop(stream);

    if (method, path) == ("GET", "/close-listener") {
        close_listener(port);
    }
    Ok(())
}

/// Makes the accept loop close the listener: it checks the flag after each
/// accepted connection, so a connection of our own wakes it up.
fn close_listener(port: u16) {
    CLOSE_LISTENER.store(true, Ordering::SeqCst);
    if let Err(err) = TcpStream::connect(("127.0.0.1", port)) {
        eprintln!("failed to wake the accept loop: {err}");
    }
}

fn count_hit(upstream: Option<&str>) -> (&'static str, String) {
    let hits = HITS.fetch_add(1, Ordering::SeqCst) + 1;
    let mut body = format!("hits={hits}\n");
    if let Some(upstream) = upstream {
        match fetch_upstream(upstream) {
            Ok(upstream_body) => body.push_str(&upstream_body),
            Err(err) => {
                return (
                    "502 Bad Gateway",
                    format!("{body}upstream {upstream} failed: {err}\n"),
                )
            }
        }
    }
    ("200 OK", body)
}

/// Sends `GET /` to `upstream` (`host:port`) and returns the response body.
fn fetch_upstream(upstream: &str) -> io::Result<String> {
    let mut stream = TcpStream::connect(upstream)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    let host = upstream.rsplit_once(':').map_or(upstream, |(host, _)| host);
    write!(
        stream,
        "GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )?;

    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "response has no header end"))?;
    if !head.starts_with("HTTP/1.1 200") {
        let status = head.lines().next().unwrap_or("");
        return Err(io::Error::other(format!("unexpected status {status:?}")));
    }
    Ok(body.to_string())
}

/// Handles `/alloc?mib=N`.
fn allocate(query: &str) -> (&'static str, String) {
    let mib = query
        .split('&')
        .find_map(|pair| pair.strip_prefix("mib="))
        .and_then(|value| value.parse::<usize>().ok());
    let Some(mib) = mib else {
        return (
            "400 Bad Request",
            "expected query mib=N with N a whole number of MiB\n".to_string(),
        );
    };
    let Some(bytes) = mib.checked_mul(MIB) else {
        return ("400 Bad Request", format!("mib={mib} is too large\n"));
    };

    let mut block = Vec::new();
    if block.try_reserve_exact(bytes).is_err() {
        return (
            "507 Insufficient Storage",
            format!("failed to allocate {mib} MiB\n"),
        );
    }
    // A non-zero fill writes every page, so the memory is resident and a
    // checkpoint has to save it.
    block.resize(bytes, 0xa5);
    ALLOCATIONS.lock().unwrap().push(block);
    ("200 OK", format!("allocated={mib}\n"))
}
