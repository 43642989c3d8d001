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
        let name = unique_name(hint);
        run(Command::new("docker")
            .args(["network", "create", "--label"])
            .arg(format!("{TEST_LABEL}=1"))
            .arg(&name))?;
        Ok(Network { name })
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        if let Err(err) = run(Command::new("docker").args(["network", "rm", &self.name])) {
            eprintln!("failed to remove network {}: {err:#}", self.name);
        }
    }
}
