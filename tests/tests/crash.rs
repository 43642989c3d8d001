//! `kill -9` of the daemon in the middle of a checkpoint and in the middle
//! of a restore: after a restart the container responds with its memory
//! state, whatever the engine did with the interrupted operation.

use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Result;
use lightwhale_tests::http::http_get_path;
use lightwhale_tests::http_counter::start_on_loopback;
use lightwhale_tests::restore_copies::restore_copies_of;
use lightwhale_tests::{
    http_get, parse_hits, Container, Daemon, HTTP_COUNTER_IMAGE, SLEEP_TIMEOUT, STATE_TIMEOUT,
};

/// Memory the container holds, so that its checkpoint and restore last
/// seconds and the kill lands in the middle of them.
const HELD_MIB: u32 = 256;

/// How long the restarted daemon may take to remove containerd's copies of
/// the interrupted restore.
const COPIES_TIMEOUT: Duration = Duration::from_secs(10);

/// Starts a managed counter that allocates [`HELD_MIB`] and returns it with
/// its address and counter.
fn big_counter(daemon: &Daemon, hint: &str) -> Result<(Container, SocketAddr, u64)> {
    let (web, address, _) = start_on_loopback(Container::builder(hint, HTTP_COUNTER_IMAGE).managed("10m"))?;
    daemon.wait_for_state(web.name(), "awake", STATE_TIMEOUT)?;
    http_get_path(address, &format!("/alloc?mib={HELD_MIB}"))?;
    let hits = parse_hits(&http_get(address)?)?;
    Ok((web, address, hits))
}

/// Sends `command` (`sleep` or `wake`) for `web`, kills the daemon with
/// SIGKILL once the container reached `state`, restarts the daemon and
/// checks that the container answers with its counter at `hits + 1`.
fn kill_during(daemon: &mut Daemon, web: &Container, address: SocketAddr, hits: u64, command: &str, state: &str) -> Result<()> {
    daemon.kill_during_request(command, web.name(), state, Duration::from_millis(500))?;

    // Let the engine finish or abandon the interrupted operation.
    thread::sleep(Duration::from_secs(8));
    println!("after the kill: running={}, checkpoints={:?}", web.is_running()?, web.checkpoints()?);

    daemon.restart()?;
    let status = daemon.wait_for_any_state(web.name(), &["awake", "asleep"], STATE_TIMEOUT)?;
    println!("after the restart: {status}");
    let body = http_get(address)?;
    assert_eq!(parse_hits(&body)?, hits + 1, "the container lost its state: {body:?}");
    Ok(())
}

#[test]
fn kill_during_checkpoint_loses_nothing() -> Result<()> {
    let mut daemon = Daemon::start(&[])?;
    let (web, address, hits) = big_counter(&daemon, "crash-sleep")?;
    kill_during(&mut daemon, &web, address, hits, "sleep", "sleeping")
}

#[test]
fn kill_during_restore_loses_nothing() -> Result<()> {
    let mut daemon = Daemon::start(&[])?;
    let (web, address, hits) = big_counter(&daemon, "crash-wake")?;
    daemon.cli(&["sleep", web.name()])?;
    daemon.wait_for_state(web.name(), "asleep", SLEEP_TIMEOUT)?;
    kill_during(&mut daemon, &web, address, hits, "wake", "waking")?;

    // containerd's copy of the checkpoint for the interrupted restore is
    // removed by the restarted daemon, in the background.
    let deadline = Instant::now() + COPIES_TIMEOUT;
    loop {
        let copies = restore_copies_of(web.id())?;
        if copies.is_empty() {
            return Ok(());
        }
        assert!(Instant::now() < deadline, "containerd's copies are still there: {copies:?}");
        thread::sleep(Duration::from_millis(200));
    }
}
