//! The control socket: a root-only Unix socket on which the CLI sends one
//! JSON request per line and reads one JSON response.

use std::{
    fs,
    os::unix::fs::{DirBuilderExt as _, PermissionsExt as _},
    path::Path,
    sync::Arc,
    time::Duration,
};

use anyhow::{bail, Context as _};
use serde::{Deserialize, Serialize};
use tokio::{
    io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader},
    net::{UnixListener, UnixStream},
};
use tracing::{debug, warn};

use crate::{
    daemon::Daemon,
    registry::Container,
    state::State,
    status::{format_bytes, StatusReport},
};

/// Default path of the control socket.
pub const DEFAULT_SOCKET: &str = "/run/lightwhale/lightwhale.sock";
/// Largest request accepted, in bytes.
const MAX_REQUEST: u64 = 64 * 1024;
/// Time a client has to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A request of the CLI.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "lowercase", deny_unknown_fields)]
pub enum Request {
    /// The status report. A struct variant, so that unknown fields are
    /// rejected as they are for the other commands.
    Status {},
    /// Put a container to sleep now.
    Sleep { container: String },
    /// Wake a container now.
    Wake { container: String },
}

/// The daemon's response.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Response {
    /// Whether the request succeeded.
    pub ok: bool,
    /// Error message of a failed request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Summary of the completed action, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The status report of a status request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<StatusReport>,
}

impl Response {
    fn error(error: impl ToString) -> Self {
        Self { ok: false, error: Some(error.to_string()), ..Default::default() }
    }

    fn message(message: String) -> Self {
        Self { ok: true, message: Some(message), ..Default::default() }
    }
}

/// Binds the control socket, readable and writable by root only. A socket
/// file left by a daemon that did not stop cleanly is replaced; a live one
/// means another daemon runs.
pub async fn bind(path: &Path) -> anyhow::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
    }
    if path.exists() {
        if UnixStream::connect(path).await.is_ok() {
            bail!("another lightwhale daemon listens on {}; stop it first", path.display());
        }
        fs::remove_file(path).with_context(|| format!("cannot remove stale socket {}", path.display()))?;
    }
    let listener = UnixListener::bind(path).with_context(|| format!("cannot bind {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot restrict {}", path.display()))?;
    Ok(listener)
}

/// Removes the socket file at shutdown, and its directory when it is empty.
pub fn remove(path: &Path) {
    if let Err(error) = fs::remove_file(path) {
        warn!(path = %path.display(), %error, "cannot remove control socket");
    }
    if let Some(dir) = path.parent() {
        // Fails, as it should, when the directory contains anything else.
        let _ = fs::remove_dir(dir);
    }
}

/// Serves requests until shutdown.
pub async fn serve(daemon: Arc<Daemon>, listener: UnixListener) {
    let shutdown = daemon.shutdown_token();
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, _)) => {
                tokio::spawn(answer(daemon.clone(), stream));
            }
            Err(error) => {
                warn!(%error, "control socket accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn answer(daemon: Arc<Daemon>, stream: UnixStream) {
    // The socket file is root-only, and this check also covers a socket
    // that was passed on to another user.
    match stream.peer_cred() {
        Ok(credentials) if credentials.uid() == 0 => {}
        Ok(credentials) => {
            warn!(uid = credentials.uid(), "rejected control request from a non-root user");
            return;
        }
        Err(error) => {
            warn!(%error, "cannot read the credentials of a control client");
            return;
        }
    }

    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = BufReader::new(read.take(MAX_REQUEST));
    let response = match tokio::time::timeout(REQUEST_TIMEOUT, reader.read_line(&mut line)).await {
        Err(_) => Response::error("timed out waiting for the request"),
        Ok(Err(error)) => Response::error(format!("cannot read the request: {error}")),
        Ok(Ok(_)) if !line.ends_with('\n') => {
            Response::error(format!("invalid request: expected one JSON line of at most {MAX_REQUEST} bytes"))
        }
        Ok(Ok(_)) => match serde_json::from_str::<Request>(&line) {
            Ok(request) => execute(&daemon, request).await,
            Err(error) => Response::error(format!(
                "invalid request: {error}; expected {{\"command\": \"status\"|\"sleep\"|\"wake\", \"container\": NAME}}"
            )),
        },
    };
    let mut bytes = serde_json::to_vec(&response).unwrap_or_default();
    bytes.push(b'\n');
    if let Err(error) = write.write_all(&bytes).await {
        debug!(%error, "control client left before the response");
    }
}

async fn execute(daemon: &Daemon, request: Request) -> Response {
    match request {
        Request::Status {} => Response { ok: true, status: Some(daemon.status()), ..Default::default() },
        Request::Sleep { container } => {
            let (target, name, state) = match find(daemon, &container) {
                Ok(found) => found,
                Err(response) => return response,
            };
            if state == State::Asleep {
                return Response::message(format!("{name} is already asleep"));
            }
            match daemon.sleep(&target).await {
                Ok(report) => Response::message(format!(
                    "{name} is asleep: checkpoint took {} ms, freed {}",
                    report.elapsed.as_millis(),
                    report.memory_freed.map(format_bytes).unwrap_or_else(|| "an unknown amount".into())
                )),
                Err(error) => Response::error(error),
            }
        }
        Request::Wake { container } => {
            let (target, name, state) = match find(daemon, &container) {
                Ok(found) => found,
                Err(response) => return response,
            };
            if state == State::Awake {
                return Response::message(format!("{name} is already awake"));
            }
            let started = std::time::Instant::now();
            match daemon.wake(&target).await {
                Ok(_) => Response::message(format!("{name} is awake ({} ms)", started.elapsed().as_millis())),
                Err(error) => Response::error(error),
            }
        }
    }
}

/// Finds the container a request names, with its name and state, or the
/// error response.
fn find(daemon: &Daemon, query: &str) -> Result<(Arc<Container>, String, State), Response> {
    let target = daemon.registry().find(query).map_err(Response::error)?;
    let (name, state) = {
        let record = target.record();
        (record.info.name.clone(), record.state)
    };
    Ok((target, name, state))
}

/// Sends one request to the daemon and returns its response.
pub async fn request(path: &Path, request: &Request) -> anyhow::Result<Response> {
    let stream = UnixStream::connect(path).await.with_context(|| {
        format!("cannot connect to the lightwhale daemon at {}: is `lightwhale run` running, and are you root?", path.display())
    })?;
    let (read, mut write) = stream.into_split();
    let mut bytes = serde_json::to_vec(request)?;
    bytes.push(b'\n');
    write.write_all(&bytes).await.context("cannot send the request")?;
    let mut line = String::new();
    BufReader::new(read)
        .read_line(&mut line)
        .await
        .context("cannot read the daemon's response")?;
    serde_json::from_str(&line).with_context(|| format!("invalid response from the daemon: {line:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse() {
        assert_eq!(serde_json::from_str::<Request>(r#"{"command":"status"}"#).unwrap(), Request::Status {});
        assert_eq!(
            serde_json::from_str::<Request>(r#"{"command":"wake","container":"web"}"#).unwrap(),
            Request::Wake { container: "web".into() }
        );
    }

    #[test]
    fn bad_requests_are_rejected() {
        for input in [
            "",
            "garbage",
            r#"{"command":"reboot"}"#,
            r#"{"command":"sleep"}"#,
            r#"{"command":"sleep","container":7}"#,
            r#"{"command":"status","extra":1}"#,
        ] {
            assert!(serde_json::from_str::<Request>(input).is_err(), "{input} was accepted");
        }
    }
}
