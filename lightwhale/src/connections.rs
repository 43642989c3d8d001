//! Established TCP connections of a container.
//!
//! Docker checkpoints without CRIU's `--tcp-established`, so a checkpoint
//! of a container with an open connection fails, and even with that option
//! the peer would see the connection stall. A container with an established
//! connection (a WebSocket, a database pool) therefore stays awake, however
//! quiet the connection is.

use std::{fs, io};

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
}
