//! The facts about one container that lightwhale uses, read from `docker
//! inspect`.

use std::{collections::HashMap, net::Ipv4Addr};

use bollard::models::{ContainerInspectResponse, PortMap, RestartPolicy, RestartPolicyNameEnum};
use serde::{Deserialize, Serialize};

use super::EngineError;

/// Label that marks a stand-in; its value is the id of the sleeping
/// container it stands in for.
pub const STAND_IN_LABEL: &str = "lightwhale.stand-in";

/// One container as the engine reports it.
#[derive(Clone, Debug, PartialEq)]
pub struct ContainerInfo {
    /// Full container id.
    pub id: String,
    /// Name without Docker's leading slash.
    pub name: String,
    /// Labels of the container's configuration.
    pub labels: HashMap<String, String>,
    /// Whether its processes run.
    pub running: bool,
    /// Whether `docker pause` froze its processes.
    pub paused: bool,
    /// When its processes last started, or were restored, in milliseconds
    /// since the Unix epoch; `None` for a container that never started.
    pub started_at_ms: Option<u128>,
    /// PID of its init process while it runs.
    pub pid: Option<u32>,
    /// `HostConfig.NetworkMode`, which decides whether lightwhale can hold
    /// the container's traffic.
    pub network_mode: NetworkMode,
    /// `docker run --rm`: Docker removes such a container when it exits,
    /// so a checkpoint with exit would destroy it.
    pub auto_remove: bool,
    /// Its restart policy, unless that is `no`. Docker restarts a container
    /// with a policy right after a checkpoint stopped it, as a fresh
    /// process, so lightwhale suspends the policy while the container
    /// sleeps.
    pub restart_policy: Option<RestartPolicy>,
    /// Its interfaces on Docker networks, sorted by network name.
    pub endpoints: Vec<Endpoint>,
    /// Its published ports. While the container runs these are the ports
    /// Docker bound; while it is stopped, the configured bindings.
    pub ports: Vec<PublishedPort>,
    /// `HostConfig.Runtime`, the OCI runtime it was created with, such as
    /// `runc` or `lightwhale`.
    pub runtime: Option<String>,
}

/// Network mode of a container, from `HostConfig.NetworkMode`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NetworkMode {
    /// Its own network namespace on Docker networks (bridge or user-defined).
    Own,
    /// `host`: the host's network namespace.
    Host,
    /// `none`: no network.
    None,
    /// `container:<other>`: another container's network namespace.
    Container(String),
}

/// A container interface on one Docker network.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// Network name.
    pub network: String,
    /// IPv4 address, absent while the container is stopped.
    pub ipv4: Option<Ipv4Addr>,
    /// MAC address of the container side, used to find the host-side veth.
    pub mac: Option<String>,
    /// Network-scoped aliases, as Docker's DNS resolves them.
    pub aliases: Vec<String>,
}

/// One published port binding.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PublishedPort {
    /// Host address the port is bound to; `0.0.0.0` for every IPv4 address.
    pub host_ip: Ipv4Addr,
    /// Port on the host.
    pub host_port: u16,
    /// Port inside the container.
    pub container_port: u16,
}

impl ContainerInfo {
    /// Reads the fields lightwhale uses from an inspect response.
    pub fn from_inspect(response: ContainerInspectResponse) -> Result<Self, EngineError> {
        let id = response
            .id
            .ok_or_else(|| EngineError::Unexpected("container without id".into()))?;
        let name = response
            .name
            .unwrap_or_default()
            .trim_start_matches('/')
            .to_owned();
        let labels = response
            .config
            .and_then(|config| config.labels)
            .unwrap_or_default();
        let state = response.state.unwrap_or_default();
        let running = state.running.unwrap_or(false);
        let paused = state.paused.unwrap_or(false);
        let started_at_ms = state.started_at.as_deref().and_then(unix_millis);
        let pid = state
            .pid
            .filter(|pid| running && *pid > 0)
            .and_then(|pid| u32::try_from(pid).ok());

        let host_config = response.host_config.unwrap_or_default();
        let network_mode = NetworkMode::parse(host_config.network_mode.as_deref().unwrap_or("default"));
        let auto_remove = host_config.auto_remove.unwrap_or(false);
        let runtime = host_config.runtime.clone().filter(|runtime| !runtime.is_empty());
        let restart_policy = host_config.restart_policy.clone().filter(|policy| {
            !matches!(policy.name, None | Some(RestartPolicyNameEnum::EMPTY) | Some(RestartPolicyNameEnum::NO))
        });

        let network_settings = response.network_settings.unwrap_or_default();
        let mut endpoints: Vec<Endpoint> = network_settings
            .networks
            .unwrap_or_default()
            .into_iter()
            .map(|(network, settings)| Endpoint {
                network,
                ipv4: settings
                    .ip_address
                    .filter(|address| !address.is_empty())
                    .and_then(|address| address.parse().ok()),
                mac: settings.mac_address.filter(|mac| !mac.is_empty()),
                aliases: settings.aliases.unwrap_or_default(),
            })
            .collect();
        endpoints.sort_by(|left, right| left.network.cmp(&right.network));

        let ports = if running {
            published_ports(network_settings.ports.as_ref())
        } else {
            published_ports(host_config.port_bindings.as_ref())
        };

        Ok(Self {
            id,
            name,
            labels,
            running,
            paused,
            started_at_ms,
            pid,
            network_mode,
            auto_remove,
            restart_policy,
            endpoints,
            ports,
            runtime,
        })
    }

    /// Returns the id of the container this one stands in for, if it is a
    /// stand-in.
    pub fn stands_in_for(&self) -> Option<&str> {
        self.labels.get(STAND_IN_LABEL).map(String::as_str)
    }

    /// Returns the short id that Docker shows.
    pub fn short_id(&self) -> &str {
        &self.id[..self.id.len().min(12)]
    }

    /// Returns the address that the holder forwards held connections to:
    /// the IPv4 address on the first network, by name, that has one.
    pub fn forward_address(&self) -> Option<Ipv4Addr> {
        self.endpoints.iter().find_map(|endpoint| endpoint.ipv4)
    }

    /// Returns whether the container was created with `--runtime
    /// lightwhale`, so that it sleeps and wakes through runc directly.
    pub fn uses_runc_checkpoints(&self) -> bool {
        self.runtime.as_deref() == Some(super::runc_checkpoint::RUNTIME)
    }

    /// Returns why lightwhale cannot manage this container, if it cannot.
    pub fn unmanageable_reason(&self) -> Option<String> {
        match &self.network_mode {
            NetworkMode::Own => {}
            NetworkMode::Host => {
                return Some("network mode host: its ports belong to the host, so lightwhale cannot hold them".into())
            }
            NetworkMode::None => return Some("network mode none: it has no network to hold".into()),
            NetworkMode::Container(other) => {
                return Some(format!(
                    "network mode container:{other}: it shares another container's network namespace"
                ))
            }
        }
        if self.auto_remove {
            return Some("started with --rm: Docker would remove it when the checkpoint stops it".into());
        }
        None
    }
}

impl NetworkMode {
    fn parse(mode: &str) -> Self {
        match mode {
            "host" => NetworkMode::Host,
            "none" => NetworkMode::None,
            _ => match mode.strip_prefix("container:") {
                Some(other) => NetworkMode::Container(other.to_owned()),
                None => NetworkMode::Own,
            },
        }
    }
}

/// Reads the TCP bindings of a port map. IPv6 bindings are skipped because
/// lightwhale holds IPv4 connections only.
// NOTE: an IPv6 client of a sleeping container's published port is refused
// until the container is woken by an IPv4 connection or `lightwhale wake`.
fn published_ports(map: Option<&PortMap>) -> Vec<PublishedPort> {
    let mut ports = Vec::new();
    for (spec, bindings) in map.into_iter().flatten() {
        let Some((port, protocol)) = spec.split_once('/') else {
            continue;
        };
        if protocol != "tcp" {
            continue;
        }
        let Ok(container_port) = port.parse::<u16>() else {
            continue;
        };
        for binding in bindings.iter().flatten() {
            let host_ip = match binding.host_ip.as_deref() {
                None | Some("") => Ipv4Addr::UNSPECIFIED,
                Some(address) => match address.parse() {
                    Ok(address) => address,
                    Err(_) => continue,
                },
            };
            let Some(host_port) = binding
                .host_port
                .as_deref()
                .and_then(|port| port.parse::<u16>().ok())
                .filter(|port| *port != 0)
            else {
                continue;
            };
            ports.push(PublishedPort {
                host_ip,
                host_port,
                container_port,
            });
        }
    }
    ports.sort_by_key(|port| (port.host_port, port.host_ip));
    ports.dedup();
    ports
}

/// Converts a time that Docker reports, such as `StartedAt`, to
/// milliseconds since the Unix epoch. Docker reports a container that never
/// started as 0001-01-01, before the epoch, which gives `None`.
fn unix_millis(time: &str) -> Option<u128> {
    let time = humantime::parse_rfc3339(time).ok()?;
    Some(time.duration_since(std::time::UNIX_EPOCH).ok()?.as_millis())
}

#[cfg(test)]
mod tests {
    use bollard::models::PortBinding;

    use super::*;

    fn binding(ip: &str, port: &str) -> PortBinding {
        PortBinding {
            host_ip: Some(ip.into()),
            host_port: Some(port.into()),
        }
    }

    #[test]
    fn port_map_keeps_ipv4_tcp_bindings() {
        let map: PortMap = HashMap::from([
            (
                "8080/tcp".to_owned(),
                Some(vec![binding("127.0.0.1", "18080"), binding("0.0.0.0", "28080"), binding("::", "28080")]),
            ),
            ("53/udp".to_owned(), Some(vec![binding("0.0.0.0", "5353")])),
            ("9000/tcp".to_owned(), None),
        ]);
        let ports = published_ports(Some(&map));
        assert_eq!(
            ports,
            [
                PublishedPort { host_ip: Ipv4Addr::LOCALHOST, host_port: 18080, container_port: 8080 },
                PublishedPort { host_ip: Ipv4Addr::UNSPECIFIED, host_port: 28080, container_port: 8080 },
            ]
        );
    }

    #[test]
    fn empty_host_ip_means_every_address() {
        let map: PortMap = HashMap::from([("80/tcp".to_owned(), Some(vec![binding("", "8000")]))]);
        assert_eq!(published_ports(Some(&map))[0].host_ip, Ipv4Addr::UNSPECIFIED);
    }

    #[test]
    fn network_modes() {
        assert_eq!(NetworkMode::parse("default"), NetworkMode::Own);
        assert_eq!(NetworkMode::parse("bridge"), NetworkMode::Own);
        assert_eq!(NetworkMode::parse("mynet"), NetworkMode::Own);
        assert_eq!(NetworkMode::parse("host"), NetworkMode::Host);
        assert_eq!(NetworkMode::parse("container:abc"), NetworkMode::Container("abc".into()));
    }

    #[test]
    fn docker_times_convert_to_unix_millis() {
        assert_eq!(unix_millis("2026-12-05T04:59:09.872098963Z"), Some(1_796_446_749_872));
        assert_eq!(unix_millis("0001-01-01T00:00:00Z"), None);
        assert_eq!(unix_millis(""), None);
    }
}
