//! redis-cli commands against a redis server published on 127.0.0.1.

use std::process::Command;

use anyhow::{bail, Result};

use crate::command::{run, run_with_input};

/// Runs `redis-cli` with `args` against `127.0.0.1:port` and returns its
/// output in raw mode: one value per line, nil as an empty line.
pub fn redis_cli(port: u16, args: &[&str]) -> Result<String> {
    run(Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "--raw"])
        .args(args))
}

/// Sends `protocol`, commands in the redis serialization protocol (RESP),
/// through `redis-cli --pipe` and checks that all `expected_replies`
/// arrived without error.
pub fn redis_pipe(port: u16, protocol: &[u8], expected_replies: usize) -> Result<()> {
    let output = run_with_input(
        Command::new("redis-cli").args(["-h", "127.0.0.1", "-p", &port.to_string(), "--pipe"]),
        protocol,
    )?;
    // redis-cli ends with a summary such as "errors: 0, replies: 10000".
    let summary = format!("errors: 0, replies: {expected_replies}");
    if !output.contains(&summary) {
        bail!("redis-cli --pipe did not report `{summary}`: {output}");
    }
    Ok(())
}

/// Encodes one command in RESP, as an array of bulk strings.
pub fn encode_command(parts: &[&str]) -> Vec<u8> {
    let mut encoded = format!("*{}\r\n", parts.len()).into_bytes();
    for part in parts {
        encoded.extend_from_slice(format!("${}\r\n{part}\r\n", part.len()).as_bytes());
    }
    encoded
}
