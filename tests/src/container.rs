//! Docker containers created by a test and removed on drop.

use std::collections::HashSet;
use std::net::{Ipv4Addr, TcpListener};
use std::process::Command;
use std::sync::Mutex;

use anyhow::{Context, Result};

use crate::command::run;
use crate::network::Network;
use crate::{unique_name, TEST_LABEL};

/// Builder for `docker run -d`, started with [`ContainerBuilder::start`].
pub struct ContainerBuilder {
    name: String,
    image: String,
    options: Vec<String>,
}

impl ContainerBuilder {
    /// Adds the labels that make lightwhale manage the container, with an
    /// idle timeout such as `"3s"`.
    pub fn managed(self, idle_timeout: &str) -> Self {
        self.label("lightwhale.enable", "true")
            .label("lightwhale.idle-timeout", idle_timeout)
    }

    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.options.push("--label".into());
        self.options.push(format!("{key}={value}"));
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.options.push("--env".into());
        self.options.push(format!("{key}={value}"));
        self
    }

    /// Publishes `container_port` on `host_ip:host_port`.
    pub fn publish(mut self, host_ip: &str, host_port: u16, container_port: u16) -> Self {
        self.options.push("--publish".into());
        self.options
            .push(format!("{host_ip}:{host_port}:{container_port}"));
        self
    }

    /// Publishes `container_port` on `host_port` of all host addresses.
    pub fn publish_all_addresses(mut self, host_port: u16, container_port: u16) -> Self {
        self.options.push("--publish".into());
        self.options.push(format!("{host_port}:{container_port}"));
        self
    }

    /// Runs the container with the OCI runtime registered in dockerd under
    /// `name`, such as `lightwhale`.
    pub fn runtime(mut self, name: &str) -> Self {
        self.options.push("--runtime".into());
        self.options.push(name.to_string());
        self
    }

    /// Adds a raw `docker run` option, such as `--network=host` or `--rm`.
    pub fn option(mut self, option: &str) -> Self {
        self.options.push(option.to_string());
        self
    }

    /// Attaches the container to a user-defined network instead of the
    /// default bridge.
    pub fn network(mut self, network: &Network) -> Self {
        self.options.push("--network".into());
        self.options.push(network.name().to_string());
        self
    }

    /// Runs the container and returns its guard. A container that Docker
    /// created but failed to start is removed again.
    pub fn start(self) -> Result<Container> {
        crate::host_lock::hold()?;
        let output = run(Command::new("docker")
            .args(["run", "--detach", "--name", &self.name])
            .arg("--label")
            .arg(format!("{TEST_LABEL}=1"))
            .args(&self.options)
            .arg(&self.image));
        let id = match output {
            Ok(id) => id.trim().to_string(),
            Err(err) => {
                // `docker run` leaves the container behind when only its
                // start failed, for example on a port conflict.
                let _ = run(Command::new("docker").args(["rm", "--force", &self.name]));
                return Err(err.context(format!(
                    "failed to start container {} from {}; the test images are built by \
                     the xtask before it runs these tests",
                    self.name, self.image
                )));
            }
        };
        println!(
            "started container {} ({})",
            self.name,
            &id[..12.min(id.len())]
        );
        Ok(Container {
            name: self.name,
            id,
            removed: false,
        })
    }
}

/// A container created by a test, removed with `docker rm --force` on drop,
/// which also deletes its checkpoints.
pub struct Container {
    name: String,
    id: String,
    /// Set once [`Container::remove`] removed it, so drop does not try again.
    removed: bool,
}

impl Container {
    /// Starts building a container named `lwt-<hint>-<pid>` from `image`.
    pub fn builder(hint: &str, image: &str) -> ContainerBuilder {
        ContainerBuilder {
            name: unique_name(hint),
            image: image.to_string(),
            options: Vec::new(),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Full container id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Returns the output of `docker inspect --format TEMPLATE`, trimmed.
    pub fn inspect(&self, template: &str) -> Result<String> {
        let output = run(Command::new("docker").args(["inspect", "--format", template, &self.id]))?;
        Ok(output.trim().to_string())
    }

    /// Returns the container's IPv4 address on `network`.
    pub fn address_on(&self, network: &Network) -> Result<Ipv4Addr> {
        let template = format!("{{{{(index .NetworkSettings.Networks \"{}\").IPAddress}}}}", network.name());
        let address = self.inspect(&template)?;
        address
            .parse()
            .with_context(|| format!("{} has no address on {}: {address:?}", self.name(), network.name()))
    }

    /// Returns whether Docker reports the container's process as running.
    pub fn is_running(&self) -> Result<bool> {
        let running = self.inspect("{{.State.Running}}")?;
        running
            .parse()
            .with_context(|| format!("unexpected .State.Running value {running:?}"))
    }

    /// Returns the names of the container's checkpoints in Docker's default
    /// checkpoint directory (`docker checkpoint ls`).
    pub fn checkpoints(&self) -> Result<Vec<String>> {
        let output = run(Command::new("docker").args(["checkpoint", "ls", &self.id]))?;
        // The first line is the "CHECKPOINT NAME" header.
        Ok(output
            .lines()
            .skip(1)
            .map(str::trim)
            .filter(|line| !line.is_empty())
            .map(str::to_string)
            .collect())
    }

    /// Removes the container with `docker rm --force` now, as a user would,
    /// rather than on drop.
    pub fn remove(&mut self) -> Result<()> {
        run(Command::new("docker").args(["rm", "--force", &self.id]))?;
        self.removed = true;
        Ok(())
    }

    /// Returns the container's standard output and error so far.
    pub fn logs(&self) -> Result<String> {
        let output = crate::command::output(Command::new("docker").args(["logs", &self.id]))?;
        Ok(format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        if self.removed {
            return;
        }
        if let Err(err) = run(Command::new("docker").args(["rm", "--force", &self.id])) {
            eprintln!("failed to remove container {}: {err:#}", self.name);
        }
    }
}

/// Ports handed out by [`free_port`] in this process, so that two calls
/// never return the same port.
static HANDED_OUT_PORTS: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// Returns a TCP port that is free on every host address right now.
///
/// Another process may take it before the test binds it, which is unlikely
/// on a test host.
pub fn free_port() -> Result<u16> {
    let mut handed_out = HANDED_OUT_PORTS.lock().unwrap();
    let handed_out = handed_out.get_or_insert_with(HashSet::new);
    loop {
        let listener =
            TcpListener::bind(("0.0.0.0", 0)).context("failed to bind a free TCP port")?;
        let port = listener.local_addr()?.port();
        if handed_out.insert(port) {
            return Ok(port);
        }
    }
}
