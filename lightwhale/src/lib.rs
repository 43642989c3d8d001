//! Lightwhale frees the memory of idle Docker containers by checkpointing
//! them with CRIU, and restores them when a client connects.

pub mod cli;
pub mod clock;
pub mod control;
pub mod criu_cache;
pub mod connect;
pub mod connections;
pub mod conntrack;
pub mod daemon;
pub mod dataplane;
pub mod docker;
pub mod holder;
pub mod idle;
pub mod labels;
pub mod lifecycle;
pub mod nat_bypass;
pub mod neighbour;
pub mod private_file;
pub mod registry;
pub mod state;
pub mod status;
pub mod store;
mod sync;
pub mod veth;
mod wake_requests;
