//! An HTTP client that times the phases of one request.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};

/// Timings of one `GET`, in microseconds from the start of the connect.
#[derive(Clone, Debug)]
pub struct Timed {
    /// Wall-clock start, in microseconds since the Unix epoch.
    pub started_unix_us: u64,
    /// The TCP handshake completed.
    pub connected_us: f64,
    /// The first response byte arrived.
    pub first_byte_us: f64,
    /// The response, headers included.
    pub response: String,
}

impl Timed {
    /// Returns the body after the headers.
    pub fn body(&self) -> &str {
        self.response.split_once("\r\n\r\n").map_or("", |(_, body)| body)
    }
}

/// Sends `GET path` to `address` in a new connection and times it. A
/// response without status 200 is an error.
pub fn get(address: SocketAddr, path: &str, timeout: Duration) -> Result<Timed> {
    let started_unix_us = unix_micros();
    let started = Instant::now();
    let mut stream = TcpStream::connect_timeout(&address, timeout).with_context(|| format!("failed to connect to {address}"))?;
    let connected = started.elapsed();
    stream.set_read_timeout(Some(timeout))?;
    stream.set_nodelay(true)?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n")
        .with_context(|| format!("failed to send a request to {address}"))?;

    let mut response = Vec::new();
    let mut buffer = [0u8; 16 * 1024];
    let mut first_byte = None;
    loop {
        let read = stream.read(&mut buffer).with_context(|| format!("failed to read the response of {address}"))?;
        if read == 0 {
            break;
        }
        first_byte.get_or_insert_with(|| started.elapsed());
        response.extend_from_slice(&buffer[..read]);
    }
    let Some(first_byte) = first_byte else {
        bail!("{address} closed the connection without a response");
    };
    let response = String::from_utf8_lossy(&response).into_owned();
    if !response.starts_with("HTTP/1.1 200") {
        bail!("GET http://{address}{path} failed: {}", response.lines().next().unwrap_or_default());
    }
    Ok(Timed {
        started_unix_us,
        connected_us: micros(connected),
        first_byte_us: micros(first_byte),
        response,
    })
}

/// Returns microseconds since the Unix epoch.
pub fn unix_micros() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|since| since.as_micros() as u64).unwrap_or(0)
}

/// Returns a duration in microseconds.
pub fn micros(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e6
}
