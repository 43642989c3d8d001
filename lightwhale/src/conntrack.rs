//! Removal of the conntrack entries of a container that went to sleep.
//!
//! A connection attempt that Docker's NAT sent towards a container during
//! its checkpoint leaves a conntrack entry that keeps translating the
//! client's retries to the container's old address. Removing the entries
//! lets the retries reach the host's own stack, where they are held.

use std::net::Ipv4Addr;

use tokio::process::Command;
use tracing::{debug, warn};

/// Deletes every conntrack entry to or from `address`, logging failures.
///
/// The entries are matched twice: as original destination (clients that
/// connected to the container's address) and as reply source (clients whose
/// destination NAT pointed at the container).
// NOTE: this runs the `conntrack` tool of conntrack-tools. Without it, a
// client whose SYN was dropped during a checkpoint may wait for conntrack's
// SYN_SENT timeout (120 s by default) instead of about a second.
pub async fn forget_address(address: Ipv4Addr) {
    for selector in ["--orig-dst", "--reply-src"] {
        let output = Command::new("conntrack")
            .args(["-D", selector, &address.to_string()])
            .output()
            .await;
        match output {
            Ok(output) if output.status.success() => {
                debug!(%address, selector, "removed conntrack entries");
            }
            // conntrack exits with 1 when no entry matched.
            Ok(output) if output.status.code() == Some(1) => {}
            Ok(output) => warn!(
                %address,
                status = %output.status,
                stderr = %String::from_utf8_lossy(&output.stderr).trim(),
                "conntrack -D failed"
            ),
            Err(error) => warn!(%address, %error, "cannot run conntrack; install conntrack-tools"),
        }
    }
}
