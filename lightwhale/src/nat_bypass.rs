//! Keeps Docker's destination NAT away from held published ports.
//!
//! Docker sends a published port to its container with DNAT rules in the
//! nat table, which the kernel applies before it looks for a local socket.
//! While a container's ports are held, these rules would send a new
//! connection to a container that cannot accept it. During the checkpoint,
//! its processes are stopped. During the restore, Docker sets the rules up
//! again before the container owns its address. Clients would then wait
//! for their SYN to be sent again, or fail with "no route to host" once the
//! host gives up resolving the address.
//!
//! A chain of this daemon, jumped to first from the nat table's PREROUTING
//! and OUTPUT chains, accepts untranslated the first packet of every
//! connection that the `lw_nat_bypass` socket filter matches: one to a held
//! published address. The packet then goes to the host's own stack, where
//! the sk_lookup program hands the connection to the holder. The filter
//! reads the same map as sk_lookup, so the chain itself never changes while
//! the daemon runs.

use std::path::Path;

use thiserror::Error;
use tokio::process::Command;
use tracing::{debug, warn};

/// The daemon's chain in the nat table.
const CHAIN: &str = "LIGHTWHALE";
/// Chains of the nat table that run Docker's DNAT rules: PREROUTING for
/// connections from other hosts and containers, OUTPUT for connections from
/// host processes.
const HOOKS: [&str; 2] = ["PREROUTING", "OUTPUT"];

/// An iptables command that failed.
#[derive(Debug, Error)]
#[error("`iptables {command}` failed: {reason}")]
pub struct NatBypassError {
    command: String,
    reason: String,
}

/// Creates the chain with its single rule, matching through the socket
/// filter pinned at `filter_pin`, and jumps to it first from the nat hooks.
/// A chain left by an earlier daemon is replaced.
pub async fn install(filter_pin: &Path) -> Result<(), NatBypassError> {
    remove_jumps().await;
    if let Err(error) = iptables(&["-N", CHAIN]).await {
        // Unless iptables itself failed, the chain exists because an
        // earlier daemon did not stop cleanly.
        iptables(&["-F", CHAIN]).await.map_err(|_| error)?;
    }
    let pin = filter_pin.to_string_lossy();
    iptables(&[
        "-A",
        CHAIN,
        "-p",
        "tcp",
        "-m",
        "addrtype",
        "--dst-type",
        "LOCAL",
        "-m",
        "bpf",
        "--object-pinned",
        &pin,
        "-m",
        "comment",
        "--comment",
        "lightwhale: held published port",
        "-j",
        "ACCEPT",
    ])
    .await?;
    for hook in HOOKS {
        iptables(&["-I", hook, "1", "-j", CHAIN]).await?;
    }
    debug!(chain = CHAIN, "nat bypass installed");
    Ok(())
}

/// Removes the jumps and the chain, logging what fails.
pub async fn remove() {
    remove_jumps().await;
    for arguments in [["-F", CHAIN], ["-X", CHAIN]] {
        if let Err(error) = iptables(&arguments).await {
            warn!(%error, "cannot remove the nat bypass chain");
            return;
        }
    }
    debug!(chain = CHAIN, "nat bypass removed");
}

/// Deletes every jump to the chain; there is one per hook unless something
/// went wrong earlier.
async fn remove_jumps() {
    for hook in HOOKS {
        while iptables(&["-D", hook, "-j", CHAIN]).await.is_ok() {}
    }
}

/// Runs `iptables -w -t nat` with `arguments`.
async fn iptables(arguments: &[&str]) -> Result<(), NatBypassError> {
    let command = format!("-t nat {}", arguments.join(" "));
    let output = Command::new("iptables")
        .args(["-w", "-t", "nat"])
        .args(arguments)
        .output()
        .await
        .map_err(|error| NatBypassError { command: command.clone(), reason: error.to_string() })?;
    if output.status.success() {
        return Ok(());
    }
    Err(NatBypassError {
        command,
        reason: format!("{}: {}", output.status, String::from_utf8_lossy(&output.stderr).trim()),
    })
}
