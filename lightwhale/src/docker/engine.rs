//! The connection to the Docker engine and the calls lightwhale makes.

use std::{collections::HashMap, path::PathBuf, time::Duration};

use bollard::{
    container::{CreateCheckpointOptions, ListCheckpointsOptions},
    errors::Error as BollardError,
    models::{ContainerUpdateBody, EventMessage, RestartPolicy},
    query_parameters::{
        EventsOptions, InspectContainerOptions, ListContainersOptions, StatsOptions,
    },
    Docker,
};
use futures_util::{Stream, StreamExt as _};
use thiserror::Error;

use super::{inventory::ContainerInfo, restore};

/// Prefix of the checkpoints that lightwhale creates, followed by the Unix
/// time in milliseconds, so they sort by age and are easy to tell apart
/// from a user's own checkpoints.
pub const CHECKPOINT_PREFIX: &str = "lightwhale-";

/// Errors of calls to the Docker engine.
#[derive(Debug, Error)]
pub enum EngineError {
    /// The Docker API returned an error.
    #[error("Docker API: {0}")]
    Api(#[from] BollardError),
    /// `DOCKER_HOST` points at something else than a Unix socket.
    #[error("DOCKER_HOST={0:?} is not supported: lightwhale talks to the engine's Unix socket; unset it or use unix:///path")]
    UnsupportedHost(String),
    /// A restore request failed.
    #[error("{0}")]
    Restore(String),
    /// The engine returned data that lightwhale cannot use.
    #[error("unexpected answer from the Docker engine: {0}")]
    Unexpected(String),
}

/// A connected Docker engine.
#[derive(Clone, Debug)]
pub struct Engine {
    /// The bollard client, with the API version negotiated with the engine.
    docker: Docker,
    /// Path of the engine's Unix socket, for the one call bollard lacks.
    socket: PathBuf,
}

impl Engine {
    /// Connects to the engine named by `DOCKER_HOST`, or to
    /// `/var/run/docker.sock`, and negotiates the API version so that older
    /// engines (API 1.41 of Docker 20.10) accept the requests.
    pub async fn connect() -> Result<Self, EngineError> {
        let socket = match std::env::var("DOCKER_HOST") {
            Ok(host) if !host.is_empty() => match host.strip_prefix("unix://") {
                Some(path) => PathBuf::from(path),
                None => return Err(EngineError::UnsupportedHost(host)),
            },
            _ => PathBuf::from("/var/run/docker.sock"),
        };
        let docker = Docker::connect_with_unix(
            socket.to_str().unwrap_or("/var/run/docker.sock"),
            120,
            bollard::API_DEFAULT_VERSION,
        )?
        .negotiate_version()
        .await?;
        Ok(Self { docker, socket })
    }

    /// Returns the bollard client.
    pub fn client(&self) -> &Docker {
        &self.docker
    }

    /// Lists the ids of all containers, running or not.
    pub async fn container_ids(&self) -> Result<Vec<String>, EngineError> {
        let options = ListContainersOptions {
            all: true,
            ..Default::default()
        };
        let summaries = self.docker.list_containers(Some(options)).await?;
        Ok(summaries.into_iter().filter_map(|summary| summary.id).collect())
    }

    /// Inspects one container; `Ok(None)` when it no longer exists.
    pub async fn inspect(&self, id: &str) -> Result<Option<ContainerInfo>, EngineError> {
        match self
            .docker
            .inspect_container(id, None::<InspectContainerOptions>)
            .await
        {
            Ok(response) => ContainerInfo::from_inspect(response).map(Some),
            Err(BollardError::DockerResponseServerError { status_code: 404, .. }) => Ok(None),
            Err(error) => Err(error.into()),
        }
    }

    /// Follows container events: start, die, destroy, rename and kill.
    pub fn container_events(&self) -> impl Stream<Item = Result<EventMessage, BollardError>> + use<> {
        let filters = HashMap::from([
            ("type".to_owned(), vec!["container".to_owned()]),
            (
                "event".to_owned(),
                vec!["start".into(), "die".into(), "destroy".into(), "rename".into(), "kill".into()],
            ),
        ]);
        let options = EventsOptions {
            filters: Some(filters),
            ..Default::default()
        };
        self.docker.events(Some(options))
    }

    /// Returns the container's memory use in bytes as `docker stats` shows
    /// it: the usage minus the inactive file cache.
    pub async fn memory_usage(&self, id: &str) -> Result<u64, EngineError> {
        let options = StatsOptions {
            stream: false,
            one_shot: true,
        };
        let mut stats = self.docker.stats(id, Some(options));
        let sample = stats
            .next()
            .await
            .ok_or_else(|| EngineError::Unexpected("empty stats stream".into()))??;
        let memory = sample
            .memory_stats
            .ok_or_else(|| EngineError::Unexpected("stats without memory_stats".into()))?;
        let usage = memory.usage.unwrap_or(0);
        let inactive_file = memory
            .stats
            .as_ref()
            .and_then(|stats| stats.get("total_inactive_file").or_else(|| stats.get("inactive_file")))
            .copied()
            .unwrap_or(0);
        Ok(usage.saturating_sub(inactive_file))
    }

    /// Checkpoints a running container and stops it (`docker checkpoint
    /// create` with exit).
    // NOTE: not frozen first, as checkpoints through runc are: containerd
    // then fails the checkpoint with "OCI runtime pause failed: container
    // not running".
    pub async fn checkpoint(&self, id: &str, checkpoint: &str) -> Result<(), EngineError> {
        let options = CreateCheckpointOptions {
            checkpoint_id: checkpoint.to_owned(),
            checkpoint_dir: None,
            exit: true,
        };
        self.docker.create_checkpoint(id, options).await?;
        Ok(())
    }

    /// Sets a container's restart policy (`docker update --restart`).
    pub async fn set_restart_policy(&self, id: &str, policy: RestartPolicy) -> Result<(), EngineError> {
        let body = ContainerUpdateBody {
            restart_policy: Some(policy),
            ..Default::default()
        };
        self.docker.update_container(id, body).await?;
        Ok(())
    }

    /// Starts a stopped container from a checkpoint (`docker start
    /// --checkpoint`).
    ///
    /// Docker 20.10 copies the checkpoint into containerd's content store
    /// first, and fails with "already exists" when a blob of the same digest
    /// is still there from an earlier upload. Such failures are retried after
    /// a short delay, by which containerd has usually collected the blob.
    // NOTE: seen once in a CI run of the end-to-end tests, and not
    // reproduced by hand, so the delays are an estimate.
    pub async fn restore(&self, id: &str, checkpoint: &str) -> Result<(), EngineError> {
        let mut delays = [500, 1000, 2000].into_iter().map(Duration::from_millis);
        loop {
            let before = super::restore_copies::existing();
            let result =
                restore::start_from_checkpoint(&self.socket, self.docker.client_version(), id, checkpoint, Duration::from_secs(300))
                    .await;
            // In the background: removing a large copy would delay the wake.
            let owned_id = id.to_owned();
            tokio::task::spawn_blocking(move || {
                let removed = super::restore_copies::remove_new(&before, &owned_id);
                if removed > 0 {
                    tracing::debug!(id = %&owned_id[..owned_id.len().min(12)], removed, "removed containerd's copies of the checkpoint");
                }
            });
            match (result, delays.next()) {
                (Err(message), Some(delay)) if message.contains("already exists") => {
                    tracing::warn!(id = %&id[..id.len().min(12)], %checkpoint, cause = %message, retry_in = ?delay, "restore failed; retrying");
                    tokio::time::sleep(delay).await;
                }
                (result, _) => return result.map_err(EngineError::Restore),
            }
        }
    }

    /// Lists the checkpoints that lightwhale created for a container, oldest
    /// first.
    pub async fn lightwhale_checkpoints(&self, id: &str) -> Result<Vec<String>, EngineError> {
        let checkpoints = self
            .docker
            .list_checkpoints(id, None::<ListCheckpointsOptions>)
            .await?;
        let mut names: Vec<String> = checkpoints
            .into_iter()
            .map(|checkpoint| checkpoint.name)
            .filter(|name| name.starts_with(CHECKPOINT_PREFIX))
            .collect();
        names.sort_by_key(|name| checkpoint_time(name));
        Ok(names)
    }

    /// Deletes one checkpoint.
    pub async fn delete_checkpoint(&self, id: &str, checkpoint: &str) -> Result<(), EngineError> {
        self.docker.delete_checkpoint(id, checkpoint, None).await?;
        Ok(())
    }
}

/// Returns a new checkpoint name for the current time.
pub fn new_checkpoint_name() -> String {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis())
        .unwrap_or(0);
    format!("{CHECKPOINT_PREFIX}{millis}")
}

/// Returns the creation time encoded in a checkpoint name, 0 if it has none.
pub fn checkpoint_time(name: &str) -> u128 {
    name.strip_prefix(CHECKPOINT_PREFIX)
        .and_then(|millis| millis.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoint_names_sort_by_time() {
        let mut names = vec!["lightwhale-20".to_owned(), "lightwhale-3".to_owned(), "lightwhale-100".to_owned()];
        names.sort_by_key(|name| checkpoint_time(name));
        assert_eq!(names, ["lightwhale-3", "lightwhale-20", "lightwhale-100"]);
    }

    #[test]
    fn new_checkpoint_name_has_prefix_and_time() {
        let name = new_checkpoint_name();
        assert!(name.starts_with(CHECKPOINT_PREFIX));
        assert!(checkpoint_time(&name) > 0);
    }
}
