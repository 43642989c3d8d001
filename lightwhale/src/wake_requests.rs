//! Wake requests from the data plane: the TC program on a stand-in's veth
//! pushes the slot of a sleeping container when a client tries to connect
//! to its address.

use std::sync::Arc;

use aya::maps::{MapData, RingBuf};
use tokio::io::{unix::AsyncFd, Interest};
use tracing::{info, warn};

use crate::{daemon::Daemon, lifecycle::short, state::State};

/// Wakes the containers whose slots arrive in the ring buffer, until
/// shutdown.
pub async fn serve(daemon: Arc<Daemon>, requests: RingBuf<MapData>) {
    // SAFETY: the ring buffer owns its map's file descriptor, which stays
    // open and unchanged until the AsyncFd drops it.
    let registered = unsafe { AsyncFd::register_with_interest(requests, Interest::READABLE) };
    let mut requests = match registered {
        Ok(requests) => requests,
        Err(error) => {
            warn!(%error, "cannot watch wake requests; connections to sleeping containers' addresses will not wake them");
            return;
        }
    };
    let shutdown = daemon.shutdown_token();
    loop {
        let mut ready = tokio::select! {
            _ = shutdown.cancelled() => return,
            ready = requests.readable_mut() => match ready {
                Ok(ready) => ready,
                Err(error) => {
                    warn!(%error, "wake requests failed");
                    return;
                }
            },
        };
        let mut slots = Vec::new();
        while let Some(item) = ready.get_inner_mut().next() {
            if let Ok(bytes) = <[u8; 4]>::try_from(&item[..]) {
                slots.push(u32::from_ne_bytes(bytes));
            }
        }
        ready.clear_ready();

        slots.sort_unstable();
        slots.dedup();
        for slot in slots {
            request_wake(&daemon, slot);
        }
    }
}

fn request_wake(daemon: &Arc<Daemon>, slot: u32) {
    let Some(container) = daemon.registry().by_slot(slot) else {
        return;
    };
    {
        let record = container.record();
        if record.state != State::Asleep || container.operation.try_lock().is_err() {
            return;
        }
        info!(container = %record.info.name, id = %short(&container.id), "connection to its address; waking");
    }
    let daemon = daemon.clone();
    tokio::spawn(async move {
        // Errors are logged where they happen.
        let _ = daemon.wake(&container).await;
    });
}
