//! A closed-loop HTTP load generator that can run in another container's
//! network namespace.
//!
//! Each worker thread sends one request at a time: it connects, writes
//! `GET /` with `Connection: close`, reads the response to its end and
//! starts over. The latency of a request runs from before the connect to
//! the end of the response, so it includes the handshake.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

/// Worker threads, each with one request in flight.
///
/// The benchmark machine has 2 CPUs, shared by the client, the server (a
/// thread per connection) and, on the published-port path, docker-proxy.
/// Two requests in flight bring both CPUs close to saturation, so extra
/// CPU time per packet shows in the throughput, while a request seldom
/// waits for a CPU behind another request. In one short trial on that
/// machine, 1 worker reached half the throughput of 2, and 4 workers
/// reached 17-47% more than 2 but with 1.5 to 3 times the p50 latency.
/// 4 workers therefore measure queueing more than the path.
pub const WORKERS: usize = 2;

/// The request every worker sends.
const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";

/// Upper bound for a connect, and for each read or write.
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// Pause after a failed request, so that a worker whose requests fail at
/// once (no free local port, connection refused) does not spin.
const ERROR_PAUSE: Duration = Duration::from_millis(1);

/// Target, network namespace and duration of a load run.
#[derive(Debug, Clone)]
pub struct Load {
    /// Address of the HTTP server.
    pub target: SocketAddr,
    /// Network namespace to send from (such as `/proc/<pid>/ns/net`), or
    /// `None` for the caller's own.
    pub netns: Option<PathBuf>,
    /// How long the workers start new requests.
    pub duration: Duration,
}

/// Measurements of one load run.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Requests that got a response with status 200.
    pub ok: u64,
    /// Failed requests by the step that failed.
    pub errors: BTreeMap<String, u64>,
    /// Time from the start of the workers until the last one finished.
    pub elapsed: Duration,
    /// Latency of each successful request, in microseconds.
    pub latencies_us: Vec<f64>,
}

impl Outcome {
    /// Failed requests of every kind.
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    /// Successful requests per second.
    pub fn rps(&self) -> f64 {
        let seconds = self.elapsed.as_secs_f64();
        if seconds > 0.0 {
            self.ok as f64 / seconds
        } else {
            0.0
        }
    }
}

/// Runs [`WORKERS`] workers against `load.target` for `load.duration`.
pub fn run(load: &Load) -> Result<Outcome> {
    run_with_workers(load, WORKERS)
}

/// Runs `workers` workers against `load.target` for `load.duration`.
pub fn run_with_workers(load: &Load, workers: usize) -> Result<Outcome> {
    // The workers and this thread leave the barrier together, once every
    // worker has entered its namespace.
    let barrier = Arc::new(Barrier::new(workers + 1));
    let handles: Vec<_> = (0..workers)
        .map(|index| {
            let load = load.clone();
            let barrier = Arc::clone(&barrier);
            thread::Builder::new()
                .name(format!("load-{index}"))
                .spawn(move || worker(&load, &barrier))
                .context("failed to start a load worker thread")
        })
        .collect::<Result<_>>()?;
    barrier.wait();
    let started = Instant::now();

    let mut outcome = Outcome::default();
    let mut failure = None;
    for handle in handles {
        match handle.join() {
            Ok(Ok(part)) => {
                outcome.ok += part.ok;
                for (kind, count) in part.errors {
                    *outcome.errors.entry(kind).or_default() += count;
                }
                outcome.latencies_us.extend(part.latencies_us);
            }
            Ok(Err(err)) => failure = Some(err),
            Err(_) => failure = Some(anyhow!("a load worker thread panicked")),
        }
    }
    outcome.elapsed = started.elapsed();
    match failure {
        Some(err) => Err(err),
        None => Ok(outcome),
    }
}

/// Runs one worker: enters the namespace, waits for the others, then
/// sends requests until the deadline.
fn worker(load: &Load, barrier: &Barrier) -> Result<Outcome> {
    // The barrier must be reached even when entering the namespace fails,
    // or the other threads would wait forever.
    let entered = match &load.netns {
        Some(path) => enter_netns(path),
        None => Ok(()),
    };
    barrier.wait();
    entered?;

    let deadline = Instant::now() + load.duration;
    let mut outcome = Outcome::default();
    let mut buffer = Vec::with_capacity(512);
    while Instant::now() < deadline {
        let started = Instant::now();
        match request(load.target, &mut buffer) {
            Ok(()) => {
                outcome.ok += 1;
                outcome.latencies_us.push(started.elapsed().as_secs_f64() * 1e6);
            }
            Err(kind) => {
                *outcome.errors.entry(kind).or_default() += 1;
                thread::sleep(ERROR_PAUSE);
            }
        }
    }
    Ok(outcome)
}

/// Sends one request and reads the response. An error names the step that
/// failed and the cause, such as `connect: Connection refused`.
fn request(target: SocketAddr, buffer: &mut Vec<u8>) -> std::result::Result<(), String> {
    fn step(step: &'static str) -> impl Fn(std::io::Error) -> String {
        move |err| format!("{step}: {}", error_kind(&err))
    }
    let mut stream = TcpStream::connect_timeout(&target, IO_TIMEOUT).map_err(step("connect"))?;
    stream.set_read_timeout(Some(IO_TIMEOUT)).map_err(step("connect"))?;
    stream.set_write_timeout(Some(IO_TIMEOUT)).map_err(step("connect"))?;
    stream.write_all(REQUEST).map_err(step("write"))?;
    buffer.clear();
    stream.read_to_end(buffer).map_err(step("read"))?;
    if !buffer.starts_with(b"HTTP/1.1 200 ") {
        return Err(if buffer.is_empty() { "empty response".into() } else { "status not 200".into() });
    }
    Ok(())
}

/// Describes an I/O error by its OS error text without the error number,
/// so that errors of one kind are counted together.
fn error_kind(err: &std::io::Error) -> String {
    let text = err.to_string();
    match text.split_once(" (os error") {
        Some((kind, _)) => kind.to_string(),
        None => text,
    }
}

/// Moves the calling thread into the network namespace at `path`. Only
/// this thread changes namespace. Sockets it creates afterwards belong to
/// that namespace.
fn enter_netns(path: &Path) -> Result<()> {
    let file = File::open(path).with_context(|| format!("failed to open {}", path.display()))?;
    // SAFETY: setns only reads the descriptor, which `file` keeps open,
    // and affects only the calling thread.
    let result = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    if result != 0 {
        let err = std::io::Error::last_os_error();
        bail!("failed to enter the network namespace {}: {err}", path.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// Serves `response` to every connection on a local port for 2 s.
    fn server(response: &'static [u8]) -> (SocketAddr, thread::JoinHandle<()>) {
        let listener = TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let address = listener.local_addr().unwrap();
        let handle = thread::spawn(move || {
            listener.set_nonblocking(true).unwrap();
            let stop = Instant::now() + Duration::from_secs(2);
            while Instant::now() < stop {
                match listener.accept() {
                    Ok((mut stream, _)) => {
                        stream.set_nonblocking(false).unwrap();
                        let mut request = [0u8; 256];
                        let _ = stream.read(&mut request);
                        let _ = stream.write_all(response);
                    }
                    Err(_) => thread::sleep(Duration::from_millis(1)),
                }
            }
        });
        (address, handle)
    }

    #[test]
    fn counts_successful_requests() {
        let (target, server) = server(b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\nhits=1\n");
        let load = Load { target, netns: None, duration: Duration::from_millis(200) };
        let outcome = run_with_workers(&load, 2).unwrap();
        assert!(outcome.ok > 0);
        assert_eq!(outcome.error_count(), 0);
        assert_eq!(outcome.latencies_us.len() as u64, outcome.ok);
        assert!(outcome.rps() > 0.0);
        server.join().unwrap();
    }

    #[test]
    fn counts_other_statuses_as_errors() {
        let (target, server) = server(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
        let load = Load { target, netns: None, duration: Duration::from_millis(100) };
        let outcome = run_with_workers(&load, 1).unwrap();
        assert_eq!(outcome.ok, 0);
        assert!(outcome.errors["status not 200"] > 0);
        server.join().unwrap();
    }

    #[test]
    fn names_errors_without_their_number() {
        let err = std::io::Error::from_raw_os_error(libc::ECONNREFUSED);
        assert_eq!(error_kind(&err), "Connection refused");
    }
}
