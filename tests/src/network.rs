//! User-defined Docker networks created by a test and removed on drop.

use std::process::Command;

use anyhow::Result;

use crate::command::run;
use crate::{unique_name, TEST_LABEL};

/// A user-defined bridge network (`docker network create`).
///
/// Declare it before the containers attached to it, so that Rust drops
/// those containers first: Docker refuses to remove a network in use.
pub struct Network {
    name: String,
}

impl Network {
    /// Creates a network named `lwt-<hint>-<pid>`.
    pub fn create(hint: &str) -> Result<Network> {
        crate::host_lock::hold()?;
        let name = unique_name(hint);
        run(Command::new("docker")
            .args(["network", "create", "--label"])
            .arg(format!("{TEST_LABEL}=1"))
            .arg(&name))?;
        Ok(Network { name })
    }

    /// Creates a user-defined network with an explicit IPv4 subnet, on
    /// which Docker accepts fixed container addresses.
    pub fn create_with_subnet(hint: &str, subnet: &str) -> Result<Network> {
        crate::host_lock::hold()?;
        let name = unique_name(hint);
        run(Command::new("docker")
            .args(["network", "create", "--subnet", subnet, "--label"])
            .arg(format!("{TEST_LABEL}=1"))
            .arg(&name))?;
        Ok(Network { name })
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for Network {
    /// Removes the network, retrying for a while: the daemon removes the
    /// stand-ins of removed containers shortly after them.
    fn drop(&mut self) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
        loop {
            match run(Command::new("docker").args(["network", "rm", &self.name])) {
                Ok(_) => return,
                Err(err) if std::time::Instant::now() >= deadline => {
                    eprintln!("failed to remove network {}: {err:#}", self.name);
                    return;
                }
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(250)),
            }
        }
    }
}
