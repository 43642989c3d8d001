//! The holder: accepts the connections that the sk_lookup program steers to
//! it, wakes their container and relays the bytes.

use std::{
    io,
    net::{SocketAddr, SocketAddrV4},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
};
use tracing::{debug, info, warn};

use tokio::sync::Semaphore;

use crate::{connect::connect_marked, daemon::Daemon, lifecycle::short, registry::Container};

/// Maximum of connections that the holder keeps open at once, held or
/// relayed, over all containers. Each takes two file descriptors.
const MAX_CONNECTIONS: usize = 4096;
/// Maximum of connections that the holder keeps open for one container.
const MAX_CONNECTIONS_PER_CONTAINER: u64 = 1024;

/// How long the holder retries connecting to a woken container.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Size of the relay buffer for the first response bytes.
const FIRST_READ_BUFFER: usize = 16 * 1024;

/// The holder's connection limit and counters, shared with `status`.
#[derive(Debug)]
pub struct Holder {
    /// One permit for each connection that may be open at once.
    slots: Arc<Semaphore>,
    /// Connections closed at once because a limit was reached.
    rejected: AtomicU64,
}

impl Default for Holder {
    fn default() -> Self {
        Self { slots: Arc::new(Semaphore::new(MAX_CONNECTIONS)), rejected: AtomicU64::new(0) }
    }
}

impl Holder {
    /// Connections held or relayed now, over all containers.
    pub fn open_connections(&self) -> u64 {
        (MAX_CONNECTIONS - self.slots.available_permits()) as u64
    }

    /// Connections rejected since the daemon started, because the holder or
    /// their container had its maximum of connections open.
    pub fn rejected_connections(&self) -> u64 {
        self.rejected.load(Ordering::Relaxed)
    }

    fn count_rejection(&self) {
        self.rejected.fetch_add(1, Ordering::Relaxed);
    }
}

/// Accepts held connections until shutdown.
pub async fn serve(daemon: Arc<Daemon>, listener: TcpListener) {
    let shutdown = daemon.shutdown_token();
    let mut rejected: u64 = 0;
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                let Ok(slot) = daemon.holder.slots.clone().try_acquire_owned() else {
                    rejected += 1;
                    daemon.holder.count_rejection();
                    if let Ok(SocketAddr::V4(local)) = stream.local_addr() {
                        if let Some((container, _)) = daemon.held_target(local) {
                            container.record().rejected_connections += 1;
                        }
                    }
                    // Logged for the first rejection and every 1000th after.
                    if rejected % 1000 == 1 {
                        warn!(%peer, limit = MAX_CONNECTIONS, rejected, "rejected connection: the holder keeps its maximum of connections");
                    }
                    continue;
                };
                let daemon = daemon.clone();
                tokio::spawn(async move {
                    handle(daemon, stream, peer).await;
                    drop(slot);
                });
            }
            Err(error) => {
                warn!(%error, "holder accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn handle(daemon: Arc<Daemon>, client: TcpStream, peer: SocketAddr) {
    let accepted = Instant::now();
    let local = match client.local_addr() {
        Ok(SocketAddr::V4(local)) => local,
        other => {
            debug!(%peer, ?other, "rejected held connection without an IPv4 destination");
            return;
        }
    };
    let Some((container, port)) = daemon.held_target(local) else {
        debug!(%peer, %local, "rejected connection to an address that no sleeping container publishes");
        return;
    };
    let name = {
        let mut record = container.record();
        if record.open_held_connections >= MAX_CONNECTIONS_PER_CONTAINER {
            record.rejected_connections += 1;
            daemon.holder.count_rejection();
            // Logged for the first rejection and every 1000th after.
            if record.rejected_connections % 1000 == 1 {
                warn!(
                    container = %record.info.name,
                    %peer,
                    limit = MAX_CONNECTIONS_PER_CONTAINER,
                    rejected = record.rejected_connections,
                    "rejected connection: the holder keeps its maximum of connections for this container"
                );
            }
            return;
        }
        record.held_connections += 1;
        record.open_held_connections += 1;
        record.info.name.clone()
    };
    let _open = OpenConnection(container.clone());
    let id = short(&container.id).to_owned();
    debug!(container = %name, id = %id, %peer, port = local.port(), "holding connection");

    let info = match daemon.wake(&container).await {
        Ok(info) => info,
        Err(error) => {
            warn!(container = %name, id = %id, %peer, port = local.port(), cause = %error, "closing held connection: wake failed");
            return;
        }
    };
    let Some(address) = info.forward_address() else {
        warn!(container = %name, id = %id, "closing held connection: container has no IPv4 address");
        return;
    };
    let target = SocketAddrV4::new(address, port.container_port);
    let upstream = match connect(target).await {
        Ok(upstream) => upstream,
        Err(error) => {
            warn!(container = %name, id = %id, %target, %error, "closing held connection: cannot reach container");
            return;
        }
    };

    match relay(client, upstream).await {
        Ok(Some(first_byte)) => info!(
            container = %name,
            id = %id,
            %peer,
            port = local.port(),
            first_byte_ms = first_byte.duration_since(accepted).as_millis() as u64,
            "served held connection"
        ),
        Ok(None) => debug!(container = %name, id = %id, %peer, "held connection closed without a response"),
        Err(error) => debug!(container = %name, id = %id, %peer, %error, "held connection ended with an error"),
    }
}

/// Counts a connection of the holder in its container's record while it is
/// open.
struct OpenConnection(Arc<Container>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        let mut record = self.0.record();
        record.open_held_connections = record.open_held_connections.saturating_sub(1);
    }
}

async fn connect(target: SocketAddrV4) -> io::Result<TcpStream> {
    let deadline = Instant::now() + CONNECT_TIMEOUT;
    loop {
        match connect_marked(target).await {
            Ok(stream) => return Ok(stream),
            Err(error) if Instant::now() >= deadline => return Err(error),
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

/// Copies bytes both ways until both sides finished sending, and returns
/// when the container's first byte reached the client.
async fn relay(client: TcpStream, upstream: TcpStream) -> io::Result<Option<Instant>> {
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let (mut client_read, mut client_write) = client.into_split();
    let (mut upstream_read, mut upstream_write) = upstream.into_split();

    let to_container = async {
        let copied = tokio::io::copy(&mut client_read, &mut upstream_write).await;
        let _ = upstream_write.shutdown().await;
        copied
    };
    let to_client = async {
        let mut buffer = vec![0; FIRST_READ_BUFFER];
        let read = upstream_read.read(&mut buffer).await?;
        if read == 0 {
            let _ = client_write.shutdown().await;
            return Ok(None);
        }
        client_write.write_all(&buffer[..read]).await?;
        let first_byte = Instant::now();
        drop(buffer);
        tokio::io::copy(&mut upstream_read, &mut client_write).await?;
        let _ = client_write.shutdown().await;
        Ok::<_, io::Error>(Some(first_byte))
    };

    let (sent, received) = tokio::join!(to_container, to_client);
    let first_byte = received?;
    sent?;
    Ok(first_byte)
}
