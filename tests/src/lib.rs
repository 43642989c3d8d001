//! Harness for the end-to-end tests of lightwhale.
//!
//! The tests drive real components through their command-line tools
//! (`docker`, `ip`, `curl`, `redis-cli`, the `lightwhale` binary), so they
//! need root, a running Docker engine with checkpoint support, and the test
//! images that `cargo xtask` builds before it runs them. Every container,
//! network and network namespace is created through a guard that removes
//! it on drop, whether the test passed or failed.
//!
//! Tests must run one at a time (`--test-threads=1`): only one daemon can
//! run on a machine, because its pinned eBPF maps live at a fixed path.
//! Test processes and benchmarks take [`host_lock`] before they touch the
//! engine, so two of them never run at once.

pub mod command;
pub mod container;
pub mod criu_images;
pub mod daemon;
pub mod host_lock;
pub mod http;
pub mod http_counter;
pub mod netns;
pub mod network;
pub mod redis;
pub mod restore_copies;
pub mod runtime;
pub mod wait;

use std::time::Duration;

pub use container::{free_port, Container, ContainerBuilder};
pub use daemon::Daemon;
pub use http::{http_get, parse_hits, wait_for_http};
pub use netns::Netns;
pub use network::Network;
pub use wait::wait_until;

/// Image of the HTTP workload with an in-memory hit counter, listening on
/// port 8080.
pub const HTTP_COUNTER_IMAGE: &str = "lightwhale-test/http-counter:latest";

/// Image of redis-server with persistence off, listening on port 6379.
pub const REDIS_IMAGE: &str = "lightwhale-test/redis:latest";

/// Label key on every container and network the tests create, with value
/// `1`. CI cleanup removes whatever carries it.
pub const TEST_LABEL: &str = "lightwhale.test";

/// Upper bound for a freshly started container to serve its first request.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// Upper bound for the daemon to reach a state it should reach promptly,
/// such as noticing a container or finishing a restore.
pub const STATE_TIMEOUT: Duration = Duration::from_secs(30);

/// Upper bound for a container with a 3 s idle timeout to be checkpointed.
/// It is generous because a checkpoint of a large process takes seconds.
pub const SLEEP_TIMEOUT: Duration = Duration::from_secs(60);

/// Returns a Docker-safe name `lwt-<hint>-<pid>`, unique to this test
/// process as long as each test passes a distinct `hint`.
pub fn unique_name(hint: &str) -> String {
    format!("lwt-{hint}-{}", std::process::id())
}
