//! Network namespaces that act as remote clients of the host.

use std::ffi::OsStr;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{bail, Context, Result};

use crate::command::run;
use crate::http::{curl_args, parse_body};

static NEXT_NAMESPACE: AtomicU32 = AtomicU32::new(0);

/// First address of 198.18.0.0/15, which RFC 2544 reserves for network
/// benchmarks, so it does not clash with addresses of real networks.
const ADDRESS_BASE: u32 = u32::from_be_bytes([198, 18, 0, 0]);

/// Number of /30 subnets in 198.18.0.0/15.
const SUBNET_COUNT: u32 = 1 << 15;

/// A network namespace `lwt-<pid>-<n>` joined to the host by a veth pair.
///
/// The pair forms a /30 subnet in 198.18.0.0/15: the host side has the
/// first address and the namespace side the second. Traffic from the
/// namespace to [`Netns::host_address`] reaches the host as traffic from a
/// remote client would, so it passes through the host's netfilter rules for
/// published ports. On drop the guard deletes the veth pair and the
/// namespace.
pub struct Netns {
    name: String,
    host_veth: String,
    host_address: Ipv4Addr,
    namespace_address: Ipv4Addr,
}

impl Netns {
    pub fn create() -> Result<Netns> {
        crate::host_lock::hold()?;
        let pid = std::process::id();
        let index = NEXT_NAMESPACE.fetch_add(1, Ordering::Relaxed);
        let name = format!("lwt-{pid}-{index}");
        // Interface names have at most 15 characters: "lw" + pid (at most 7
        // digits) + "h" + index stays below that.
        let host_veth = format!("lw{pid}h{index}");
        let namespace_veth = format!("lw{pid}n{index}");
        let (host_address, namespace_address) = unused_subnet(pid * 8 + index)?;

        run(Command::new("ip").args(["netns", "add", &name]))?;
        // From here on, drop cleans up whatever the steps below created.
        let netns = Netns {
            name,
            host_veth,
            host_address,
            namespace_address,
        };

        run(Command::new("ip").args([
            "link",
            "add",
            &netns.host_veth,
            "type",
            "veth",
            "peer",
            "name",
            &namespace_veth,
            "netns",
            &netns.name,
        ]))?;
        run(Command::new("ip").args([
            "address",
            "add",
            &format!("{host_address}/30"),
            "dev",
            &netns.host_veth,
        ]))?;
        run(Command::new("ip").args(["link", "set", &netns.host_veth, "up"]))?;

        let inside = ["-n", netns.name.as_str()];
        run(Command::new("ip").args(inside).args([
            "address",
            "add",
            &format!("{namespace_address}/30"),
            "dev",
            &namespace_veth,
        ]))?;
        run(Command::new("ip")
            .args(inside)
            .args(["link", "set", &namespace_veth, "up"]))?;
        run(Command::new("ip")
            .args(inside)
            .args(["link", "set", "lo", "up"]))?;

        println!(
            "created network namespace {} at {namespace_address}, host side {host_address}",
            netns.name
        );
        Ok(netns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Address of the host end of the veth pair, which the namespace
    /// reaches directly.
    pub fn host_address(&self) -> Ipv4Addr {
        self.host_address
    }

    /// Address of the namespace end of the veth pair.
    pub fn namespace_address(&self) -> Ipv4Addr {
        self.namespace_address
    }

    /// Runs `program` with `args` inside the namespace (`ip netns exec`)
    /// and returns its standard output.
    pub fn exec<I, S>(&self, program: &str, args: I) -> Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        run(Command::new("ip")
            .args(["netns", "exec", &self.name, program])
            .args(args))
    }

    /// Sends `GET path` to `address` from inside the namespace with curl and
    /// returns the response body.
    pub fn http_get(&self, address: SocketAddr, path: &str) -> Result<String> {
        let output = self.exec("curl", curl_args(address, path))?;
        parse_body(&output, address, path)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting one end of a veth pair deletes the other end.
        let _ = run(Command::new("ip").args(["link", "delete", &self.host_veth]));
        if let Err(err) = run(Command::new("ip").args(["netns", "delete", &self.name])) {
            eprintln!("failed to delete network namespace {}: {err:#}", self.name);
        }
    }
}

/// Returns the host and namespace addresses of a /30 subnet in
/// 198.18.0.0/15 that no host interface uses, starting the search at
/// subnet `start`.
fn unused_subnet(start: u32) -> Result<(Ipv4Addr, Ipv4Addr)> {
    let addresses = run(Command::new("ip").args(["-4", "-oneline", "address", "show"]))
        .context("failed to list the host's addresses")?;
    for offset in 0..SUBNET_COUNT {
        let subnet = ADDRESS_BASE + 4 * ((start + offset) % SUBNET_COUNT);
        let host = Ipv4Addr::from(subnet + 1);
        let namespace = Ipv4Addr::from(subnet + 2);
        let in_use = |address: Ipv4Addr| addresses.contains(&format!("inet {address}/"));
        if !in_use(host) && !in_use(namespace) {
            return Ok((host, namespace));
        }
    }
    bail!("every /30 subnet of 198.18.0.0/15 is in use on this host")
}
