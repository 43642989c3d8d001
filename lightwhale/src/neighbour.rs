//! The host's neighbour entries of a restored container's addresses.
//!
//! A client that connects to a container's address during its wake makes
//! the host resolve that address while nothing owns it yet. The host then
//! sends its next ARP request only after a second, and queues every packet
//! for the address until a reply arrives, including the daemon's own check
//! that the restored container accepts connections. Once the restore
//! has returned, the daemon writes the container's MAC address into the
//! neighbour table, and the kernel sends the waiting packets at once.

use std::net::Ipv4Addr;

use tokio::process::Command;
use tracing::{debug, warn};

/// Sets the host's neighbour entry of `address` to `mac`, on the interface
/// that the host routes `address` through. Failures are logged: the host
/// then resolves the address by itself, only later.
pub async fn set(address: Ipv4Addr, mac: &str) {
    if !is_mac(mac) {
        warn!(%address, mac, "invalid MAC address from Docker; the neighbour entry is left as it is");
        return;
    }
    let route = match ip(&["-4", "-o", "route", "get", &address.to_string()]).await {
        Ok(route) => route,
        Err(error) => {
            warn!(%address, %error, "cannot find the interface of a restored container's address");
            return;
        }
    };
    let Some(device) = route_device(&route) else {
        warn!(%address, route = route.trim(), "no interface in the route of a restored container's address");
        return;
    };
    let address = address.to_string();
    match ip(&["-4", "neigh", "replace", &address, "lladdr", mac, "dev", device, "nud", "reachable"]).await {
        Ok(_) => debug!(%address, mac, device, "set the neighbour entry of a restored container"),
        Err(error) => warn!(%address, mac, device, %error, "cannot set the neighbour entry of a restored container"),
    }
}

/// Runs `ip` with `arguments` and returns its standard output.
async fn ip(arguments: &[&str]) -> Result<String, String> {
    let output = Command::new("ip").args(arguments).output().await.map_err(|error| error.to_string())?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(format!("`ip {}` failed with {}: {}", arguments.join(" "), output.status, stderr.trim()));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Returns the interface named after `dev` in the output of `ip -o route get`.
fn route_device(route: &str) -> Option<&str> {
    let mut words = route.split_whitespace();
    words.find(|word| *word == "dev")?;
    words.next()
}

/// Returns whether `text` is a MAC address in the form `02:42:0a:00:00:02`.
fn is_mac(text: &str) -> bool {
    let parts: Vec<&str> = text.split(':').collect();
    parts.len() == 6 && parts.iter().all(|part| part.len() == 2 && part.chars().all(|c| c.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_follows_dev() {
        let route = "10.231.12.2 dev br-5f0c1d2e3a4b src 10.231.12.1 uid 0 \\    cache \n";
        assert_eq!(route_device(route), Some("br-5f0c1d2e3a4b"));
        assert_eq!(route_device("local 127.0.0.1 table local"), None);
        assert_eq!(route_device("10.0.0.1 dev"), None);
    }

    #[test]
    fn mac_addresses_are_checked() {
        assert!(is_mac("02:42:0a:e7:0c:02"));
        assert!(!is_mac("02:42:0a:e7:0c"));
        assert!(!is_mac("02:42:0a:e7:0c:0g"));
        assert!(!is_mac("02:42:0a:e7:0c:002"));
        assert!(!is_mac("dev br0"));
    }
}
