//! Starting the http-counter workload on a port of 127.0.0.1.

use std::net::{Ipv4Addr, SocketAddr};

use anyhow::Result;

use crate::container::{free_port, Container, ContainerBuilder};
use crate::http::{parse_hits, wait_for_http};
use crate::STARTUP_TIMEOUT;

/// Port the http-counter listens on inside its container.
pub const HTTP_COUNTER_PORT: u16 = 8080;

/// Starts the http-counter container of `builder` with its port published
/// on a free port of 127.0.0.1, and waits until it responds to `GET /`.
///
/// Returns the container, the published address and the hit count of that
/// first response. The container is removed again when it does not
/// respond within [`STARTUP_TIMEOUT`].
pub fn start_on_loopback(builder: ContainerBuilder) -> Result<(Container, SocketAddr, u64)> {
    let port = free_port()?;
    let container = builder
        .publish("127.0.0.1", port, HTTP_COUNTER_PORT)
        .start()?;
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let first_hits = parse_hits(&wait_for_http(address, STARTUP_TIMEOUT)?)?;
    Ok((container, address, first_hits))
}
