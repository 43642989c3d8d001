//! Established TCP connections of a container.
//!
//! Docker checkpoints without CRIU's `--tcp-established`, so a checkpoint
//! of a container with an open connection fails, and even with that option
//! the peer would see the connection stall. A container with an established
//! connection (a WebSocket, a database pool) therefore stays awake, however
//! quiet the connection is, unless its label
//! `lightwhale.open-connections=close` lets lightwhale reset the
//! connections right before the checkpoint.

use std::{fs, io, process::Stdio};

use tokio::process::Command;

/// `st` value of an established socket in `/proc/net/tcp`.
const ESTABLISHED: &str = "01";

/// Counts the established TCP connections in the network namespace of the
/// process `pid`.
pub fn established(pid: u32) -> io::Result<usize> {
    let mut count = 0;
    for table in ["tcp", "tcp6"] {
        match fs::read_to_string(format!("/proc/{pid}/net/{table}")) {
            Ok(text) => count += count_established(&text),
            // A kernel without IPv6 has no tcp6 table.
            Err(error) if error.kind() == io::ErrorKind::NotFound && table == "tcp6" => {}
            Err(error) => return Err(error),
        }
    }
    Ok(count)
}

/// Resets every established TCP connection in the network namespace of the
/// process `pid` and returns how many were reset. Their peers get a reset,
/// and the process's sockets report `ECONNABORTED`.
///
/// This runs `ss --kill` of iproute2 in that namespace through `nsenter`.
/// It needs a kernel built with `CONFIG_INET_DIAG_DESTROY`; without it, `ss`
/// leaves the connections open and reports none.
pub async fn close_established(pid: u32) -> io::Result<usize> {
    let output = Command::new("nsenter")
        .arg(format!("--net=/proc/{pid}/ns/net"))
        .args(["ss", "--kill", "--no-header", "--tcp", "state", "established"])
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|error| io::Error::new(error.kind(), format!("cannot run nsenter: {error}")))?;
    if !output.status.success() {
        return Err(io::Error::other(format!(
            "`nsenter --net=/proc/{pid}/ns/net ss --kill` failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(count_listed(&String::from_utf8_lossy(&output.stdout)))
}

/// Counts the sockets that `ss --no-header` listed, one a line.
fn count_listed(output: &str) -> usize {
    output.lines().filter(|line| !line.trim().is_empty()).count()
}

/// Counts the established sockets in the text of `/proc/net/tcp` or
/// `/proc/net/tcp6`.
fn count_established(table: &str) -> usize {
    table
        .lines()
        .skip(1)
        .filter(|line| line.split_whitespace().nth(3) == Some(ESTABLISHED))
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_only_established() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0
   1: 0200000A:1F90 0100000A:C350 01 00000000:00000000 00:00000000 00000000     0        0 2 1 0 20 4 30 10 -1
   2: 0200000A:1F90 0100000A:C352 06 00000000:00000000 03:00000F9F 00000000     0        0 0 3 0
";
        assert_eq!(count_established(table), 1);
        assert_eq!(count_established(""), 0);
    }

    #[test]
    fn counts_listed_sockets() {
        let output = "0      0      172.17.0.2:8080  172.17.0.1:50542\n0      0      [::ffff:172.17.0.2]:8080  [::ffff:172.17.0.1]:50544\n";
        assert_eq!(count_listed(output), 2);
        assert_eq!(count_listed(""), 0);
        assert_eq!(count_listed("\n"), 0);
    }
}
