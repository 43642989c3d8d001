//! HTTP requests with curl, and parsing of the http-counter responses.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::command::run;
use crate::wait::wait_until;

/// Upper bound for one request, long enough for a restore of a large
/// container before the first byte.
const REQUEST_TIMEOUT_SECS: u32 = 60;

/// Separates the body from the status code that curl appends.
const STATUS_MARKER: &str = "\n--status=";

/// Returns the curl arguments for `GET path` to `address`, printing the
/// body followed by [`STATUS_MARKER`] and the status code.
pub fn curl_args(address: SocketAddr, path: &str) -> Vec<String> {
    vec![
        "--silent".into(),
        "--show-error".into(),
        "--max-time".into(),
        REQUEST_TIMEOUT_SECS.to_string(),
        "--write-out".into(),
        format!("{STATUS_MARKER}%{{http_code}}"),
        format!("http://{address}{path}"),
    ]
}

/// Splits curl output made with [`curl_args`] and returns the body, or an
/// error when the status is not 200.
pub fn parse_body(output: &str, address: SocketAddr, path: &str) -> Result<String> {
    let Some((body, status)) = output.rsplit_once(STATUS_MARKER) else {
        bail!("curl output for http://{address}{path} has no status code: {output:?}");
    };
    if status.trim() != "200" {
        bail!("GET http://{address}{path} returned status {status}: {body:?}");
    }
    Ok(body.to_string())
}

/// Sends `GET /` to `address` with curl and returns the response body.
pub fn http_get(address: SocketAddr) -> Result<String> {
    http_get_path(address, "/")
}

/// Sends `GET path` to `address` with curl and returns the response body.
pub fn http_get_path(address: SocketAddr, path: &str) -> Result<String> {
    let output = run(Command::new("curl").args(curl_args(address, path)))?;
    parse_body(&output, address, path)
}

/// Sends `GET /` until it succeeds and returns the body of the first
/// successful response.
pub fn wait_for_http(address: SocketAddr, timeout: Duration) -> Result<String> {
    wait_until(&format!("http://{address}/ to respond"), timeout, || {
        http_get(address).map(Some)
    })
}

/// Returns N from an http-counter body whose first line is `hits=N`.
pub fn parse_hits(body: &str) -> Result<u64> {
    let first_line = body.lines().next().unwrap_or("");
    let Some(count) = first_line.strip_prefix("hits=") else {
        bail!("expected a body starting with `hits=N`, got {body:?}");
    };
    count
        .parse()
        .with_context(|| format!("invalid hit count in {body:?}"))
}
