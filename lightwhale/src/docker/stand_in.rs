//! Stand-in containers: while a container sleeps, a stand-in on each of its
//! networks keeps its address and its DNS names in Docker's hands.
//!
//! Docker releases a stopped container's addresses and stops resolving its
//! names. A stand-in is a container of a tiny image, connected to the same
//! networks with the sleeping container's names as aliases and, where the
//! network allows it, its address. Its only process is a 1 KiB static
//! `pause` program. Connections to it are not served: the TC program on its
//! veth drops their SYN and asks the daemon to wake the sleeping container,
//! which takes the address back before the client sends the SYN again.
//!
//! Alternatives considered: answering Docker's DNS queries for sleeping
//! names needs the daemon on the path of every container's DNS query, and
//! still leaves the address free for Docker to hand out; only a live
//! endpoint reserves it.
// NOTE: measured on Docker 20.10, each stand-in costs about 2.4 MiB of
// private memory, most of it in its containerd-shim, which Docker runs for
// every container.

use std::{collections::HashMap, net::Ipv4Addr};

use bollard::{
    errors::Error as BollardError,
    models::{ContainerCreateBody, EndpointIpamConfig, EndpointSettings, HostConfig, NetworkConnectRequest, NetworkingConfig, RestartPolicy, RestartPolicyNameEnum},
    query_parameters::{CreateContainerOptions, CreateImageOptions, ListContainersOptions, RemoveContainerOptions},
};
use futures_util::StreamExt as _;

use super::{inventory::STAND_IN_LABEL, ContainerInfo, Engine, EngineError};

/// Image of the stand-ins, one per daemon version.
pub const IMAGE: &str = concat!("lightwhale/stand-in:", env!("CARGO_PKG_VERSION"));
/// The pause program, built by the build script.
static PAUSE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/pause"));

/// Name of Docker's default bridge network.
pub const DEFAULT_BRIDGE: &str = "bridge";

/// Part of Docker's error message when an address is requested on a
/// network whose subnet it chose itself.
const NO_USER_SUBNET: &str = "user configured subnets";

/// A running stand-in.
#[derive(Clone, Debug)]
pub struct StandIn {
    /// Container id.
    pub id: String,
    /// Its inspect result once started.
    pub info: ContainerInfo,
}

impl Engine {
    /// Imports the stand-in image unless it exists.
    pub async fn ensure_stand_in_image(&self) -> Result<(), EngineError> {
        if self.client().inspect_image(IMAGE).await.is_ok() {
            return Ok(());
        }
        let (repository, tag) = IMAGE.split_once(':').unwrap_or((IMAGE, "latest"));
        let options = CreateImageOptions {
            from_src: Some("-".into()),
            repo: Some(repository.into()),
            tag: Some(tag.into()),
            changes: vec![r#"CMD ["/pause"]"#.into()],
            ..Default::default()
        };
        let body = bollard::body_full(single_file_tar("pause", PAUSE).into());
        let mut progress = self.client().create_image(Some(options), Some(body), None);
        while let Some(step) = progress.next().await {
            step?;
        }
        Ok(())
    }

    /// Starts a stand-in for `sleeper`, on each of its networks with its
    /// names and, where Docker accepts it, its former address. Networks on
    /// which the stand-in did not get the former address are left, so that
    /// no client is sent to an address that the container will not have.
    ///
    /// Docker's default bridge network has no DNS, so a stand-in there would
    /// only keep an address, at the cost of its shim's memory. A container
    /// that is only on that network therefore gets no stand-in.
    pub async fn start_stand_in(&self, sleeper: &ContainerInfo) -> Result<Option<StandIn>, EngineError> {
        let endpoints: Vec<&super::Endpoint> = sleeper
            .endpoints
            .iter()
            .filter(|endpoint| endpoint.network != DEFAULT_BRIDGE)
            .collect();
        let Some((first, others)) = endpoints.split_first() else {
            return Ok(None);
        };
        let name = format!("{}-lightwhale-stand-in", sleeper.name);
        let labels = HashMap::from([
            (STAND_IN_LABEL.to_owned(), sleeper.id.clone()),
            (crate::labels::ENABLE.to_owned(), "false".to_owned()),
        ]);
        let body = ContainerCreateBody {
            image: Some(IMAGE.into()),
            labels: Some(labels),
            host_config: Some(HostConfig {
                network_mode: Some(first.network.clone()),
                restart_policy: Some(RestartPolicy {
                    name: Some(RestartPolicyNameEnum::NO),
                    maximum_retry_count: None,
                }),
                ..Default::default()
            }),
            networking_config: Some(NetworkingConfig {
                endpoints_config: Some(HashMap::from([(first.network.clone(), endpoint_settings(sleeper, first, true))])),
            }),
            ..Default::default()
        };

        // Docker 20.10 accepts a fixed address at create and rejects it at
        // start on a network without a user-configured subnet.
        let id = match self.create_and_start(&name, body.clone()).await {
            Err(EngineError::Api(error)) if rejects_address(&error) => {
                let mut body = body;
                body.networking_config = Some(NetworkingConfig {
                    endpoints_config: Some(HashMap::from([(
                        first.network.clone(),
                        endpoint_settings(sleeper, first, false),
                    )])),
                });
                self.create_and_start(&name, body).await?
            }
            other => other?,
        };

        let connected = async {
            for endpoint in others.iter().copied() {
                let mut request = NetworkConnectRequest {
                    container: id.clone(),
                    endpoint_config: Some(endpoint_settings(sleeper, endpoint, true)),
                };
                match self.client().connect_network(&endpoint.network, request.clone()).await {
                    Err(error) if rejects_address(&error) => {
                        request.endpoint_config = Some(endpoint_settings(sleeper, endpoint, false));
                        self.client().connect_network(&endpoint.network, request).await?;
                    }
                    other => other?,
                }
            }
            Ok::<_, EngineError>(())
        };
        if let Err(error) = connected.await {
            self.remove_stand_in(&id).await;
            return Err(error);
        }

        let Some(mut info) = self.inspect(&id).await? else {
            return Err(EngineError::Unexpected(format!("stand-in {name} vanished after its start")));
        };
        // NOTE: on a network without a user-configured subnet, two containers
        // that sleep at the same moment free both addresses before either
        // stand-in starts, so the stand-ins can swap them and both leave.
        // Serializing sleeps per network, from the checkpoint to the
        // stand-in's start, would prevent it.
        let wrong: Vec<String> = info
            .endpoints
            .iter()
            .filter(|endpoint| endpoint.ipv4 != former_address(sleeper, &endpoint.network))
            .map(|endpoint| endpoint.network.clone())
            .collect();
        for network in &wrong {
            tracing::warn!(
                container = %sleeper.name,
                %network,
                "the stand-in did not get the former address; leaving the network, so the container's names do not resolve there while it sleeps"
            );
            let request = bollard::models::NetworkDisconnectRequest {
                container: id.clone(),
                force: Some(true),
            };
            self.client().disconnect_network(network, request).await?;
        }
        if !wrong.is_empty() {
            info.endpoints.retain(|endpoint| !wrong.contains(&endpoint.network));
        }
        Ok(Some(StandIn { id, info }))
    }

    /// Creates and starts a container, and removes it again when it does not
    /// start.
    async fn create_and_start(&self, name: &str, body: ContainerCreateBody) -> Result<String, EngineError> {
        let options = CreateContainerOptions {
            name: Some(name.to_owned()),
            ..Default::default()
        };
        let id = match self.client().create_container(Some(options.clone()), body.clone()).await {
            // A stand-in of the same container that is still being removed
            // in the background still uses the name.
            Err(BollardError::DockerResponseServerError { status_code: 409, .. }) => {
                self.remove_stand_in(name).await;
                self.client().create_container(Some(options), body).await?.id
            }
            other => other?.id,
        };
        if let Err(error) = self.client().start_container(&id, None).await {
            self.remove_stand_in(&id).await;
            return Err(error.into());
        }
        Ok(id)
    }

    /// Disconnects a stand-in from `networks` at once, which gives its
    /// addresses back, and removes the container in the background. A
    /// disconnect takes about half as long as a removal, and it is all that
    /// a restore waits for.
    pub async fn release_stand_in(&self, id: &str, networks: &[String]) {
        let disconnects = networks.iter().filter(|network| *network != DEFAULT_BRIDGE).map(|network| {
            let request = bollard::models::NetworkDisconnectRequest {
                container: id.to_owned(),
                force: Some(true),
            };
            async move {
                match self.client().disconnect_network(network, request).await {
                    // Not on that network, or already gone: nothing to give back.
                    Ok(()) | Err(BollardError::DockerResponseServerError { status_code: 404 | 403, .. }) => {}
                    Err(error) => tracing::warn!(id = %crate::lifecycle::short(id), %network, %error, "cannot disconnect stand-in"),
                }
            }
        });
        futures_util::future::join_all(disconnects).await;
        let engine = self.clone();
        let id = id.to_owned();
        tokio::spawn(async move { engine.remove_stand_in(&id).await });
    }

    /// Removes a stand-in, logging failures.
    pub async fn remove_stand_in(&self, id: &str) {
        let options = RemoveContainerOptions {
            force: true,
            ..Default::default()
        };
        match self.client().remove_container(id, Some(options)).await {
            Ok(()) | Err(BollardError::DockerResponseServerError { status_code: 404, .. }) => {}
            Err(error) => tracing::warn!(id = %crate::lifecycle::short(id), %error, "cannot remove stand-in"),
        }
    }

    /// Returns the ids of all stand-ins, running or not.
    pub async fn stand_in_ids(&self) -> Result<Vec<String>, EngineError> {
        let options = ListContainersOptions {
            all: true,
            filters: Some(HashMap::from([("label".to_owned(), vec![STAND_IN_LABEL.to_owned()])])),
            ..Default::default()
        };
        let summaries = self.client().list_containers(Some(options)).await?;
        Ok(summaries.into_iter().filter_map(|summary| summary.id).collect())
    }
}

/// Endpoint settings of a stand-in on one network: the sleeper's aliases,
/// its name (which Docker resolves only for the container itself), and its
/// former address when `with_address` is set.
fn endpoint_settings(sleeper: &ContainerInfo, endpoint: &super::Endpoint, with_address: bool) -> EndpointSettings {
    let mut aliases = vec![sleeper.name.clone()];
    aliases.extend(endpoint.aliases.iter().filter(|alias| **alias != sleeper.name).cloned());
    let address = former_address(sleeper, &endpoint.network).filter(|_| with_address);
    EndpointSettings {
        aliases: Some(aliases),
        ipam_config: address.map(|address| EndpointIpamConfig {
            ipv4_address: Some(address.to_string()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn former_address(sleeper: &ContainerInfo, network: &str) -> Option<Ipv4Addr> {
    sleeper
        .endpoints
        .iter()
        .find(|endpoint| endpoint.network == network)
        .and_then(|endpoint| endpoint.ipv4)
}

fn rejects_address(error: &BollardError) -> bool {
    matches!(error, BollardError::DockerResponseServerError { message, .. } if message.contains(NO_USER_SUBNET))
}

/// Returns a tar archive holding one executable file at the root.
fn single_file_tar(name: &str, content: &[u8]) -> Vec<u8> {
    let mut header = [0u8; 512];
    header[..name.len()].copy_from_slice(name.as_bytes());
    header[100..107].copy_from_slice(b"0000755");
    header[108..115].copy_from_slice(b"0000000");
    header[116..123].copy_from_slice(b"0000000");
    header[124..135].copy_from_slice(format!("{:011o}", content.len()).as_bytes());
    header[136..147].copy_from_slice(b"00000000000");
    header[156] = b'0';
    header[257..263].copy_from_slice(b"ustar\0");
    header[263..265].copy_from_slice(b"00");
    // The checksum is computed with its own field filled with spaces.
    header[148..156].copy_from_slice(b"        ");
    let checksum: u32 = header.iter().map(|byte| u32::from(*byte)).sum();
    header[148..155].copy_from_slice(format!("{checksum:06o}\0").as_bytes());

    let mut archive = header.to_vec();
    archive.extend_from_slice(content);
    archive.resize(archive.len().next_multiple_of(512), 0);
    // Two zero blocks end the archive.
    archive.resize(archive.len() + 1024, 0);
    archive
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tar_header_checksum_and_size() {
        let archive = single_file_tar("pause", b"abc");
        assert_eq!(archive.len(), 512 * 4);
        assert_eq!(&archive[..5], b"pause");
        assert_eq!(&archive[124..135], b"00000000003");
        let mut header = archive[..512].to_vec();
        let stored = u32::from_str_radix(std::str::from_utf8(&header[148..154]).unwrap(), 8).unwrap();
        header[148..156].copy_from_slice(b"        ");
        assert_eq!(stored, header.iter().map(|byte| u32::from(*byte)).sum::<u32>());
        assert_eq!(&archive[512..515], b"abc");
    }

    #[test]
    fn pause_program_is_embedded() {
        assert_eq!(&PAUSE[..4], b"\x7fELF");
    }
}
