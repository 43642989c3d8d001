//! Containers without the opt-in label are left alone.

use std::thread;
use std::time::Duration;

use anyhow::Result;
use lightwhale_tests::http_counter::start_on_loopback;
use lightwhale_tests::{http_get, parse_hits, Container, Daemon, HTTP_COUNTER_IMAGE, SLEEP_TIMEOUT};

/// The daemon's default idle timeout is set to 3 s, so a daemon that
/// wrongly managed the unlabelled container would checkpoint it during the
/// test.
#[test]
fn unlabelled_container_never_sleeps() -> Result<()> {
    let daemon = Daemon::start(&["--idle-timeout", "3s"])?;

    let (managed, _, _) =
        start_on_loopback(Container::builder("managed", HTTP_COUNTER_IMAGE).managed("3s"))?;
    let (unmanaged, unmanaged_address, hits) =
        start_on_loopback(Container::builder("unmanaged", HTTP_COUNTER_IMAGE))?;

    daemon.wait_for_state(managed.name(), "asleep", SLEEP_TIMEOUT)?;
    // Leave the unmanaged container idle for two more idle timeouts.
    thread::sleep(Duration::from_secs(6));

    assert!(
        unmanaged.is_running()?,
        "the unmanaged container is not running"
    );
    let checkpoints = unmanaged.checkpoints()?;
    assert!(
        checkpoints.is_empty(),
        "the unmanaged container has checkpoints {checkpoints:?}"
    );
    if let Some(status) = daemon.container_status(unmanaged.name())? {
        assert_eq!(status["sleeps"], 0, "{status}");
        assert_ne!(status["state"], "asleep", "{status}");
        assert_ne!(status["state"], "sleeping", "{status}");
    }

    // The process is the one started at the beginning.
    assert_eq!(parse_hits(&http_get(unmanaged_address)?)?, hits + 1);
    assert!(
        !managed.is_running()?,
        "the managed container is still running"
    );
    Ok(())
}
