//! Everything lightwhale asks of the Docker engine: the inventory of
//! containers, checkpoints and restores, memory use, and the checks that the
//! engine can checkpoint at all.

pub(crate) mod engine;
mod freezer;
mod inventory;
mod preflight;
mod restore;
mod restore_copies;
pub mod runc_checkpoint;
pub mod stand_in;

pub use engine::{checkpoint_time, Engine, EngineError};
pub use inventory::{ContainerInfo, Endpoint, NetworkMode, PublishedPort, STAND_IN_LABEL};
pub use preflight::{check_engine, Checkpointing};
pub use restore_copies::remove_all as remove_restore_copies;
