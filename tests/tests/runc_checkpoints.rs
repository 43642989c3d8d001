//! Containers of the `lightwhale` runtime sleep through `runc checkpoint`
//! into the daemon's state directory and wake through a plain `docker
//! start`, which the runtime turns into `runc restore`. Docker keeps
//! managing them as usual, the daemon recovers them after `kill -9`, a
//! damaged checkpoint follows `lightwhale.on-restore-failure`, the
//! checkpoint's files go away after the wake and with the container, and
//! a daemon killed during a checkpoint leaves no container frozen.

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use lightwhale_tests::command::{output, run};
use lightwhale_tests::criu_images::damage_criu_images;
use lightwhale_tests::http::{curl_args, http_get_path};
use lightwhale_tests::http_counter::start_on_loopback;
use lightwhale_tests::restore_copies::restore_copies_of;
use lightwhale_tests::runtime::{freezer_file, lightwhale_runtime_missing, LIGHTWHALE_RUNTIME};
use lightwhale_tests::{
    http_get, parse_hits, wait_until, Container, ContainerBuilder, Daemon, Network, HTTP_COUNTER_IMAGE,
    STATE_TIMEOUT,
};

/// Memory the container holds, so that its checkpoint has a realistic size.
const HELD_MIB: u32 = 256;

/// Starts a managed counter of the `lightwhale` runtime that allocates
/// `mib` MiB, waits until the daemon manages it, and returns it with its
/// address and counter.
fn runc_counter(
    daemon: &Daemon,
    hint: &str,
    mib: u32,
    configure: impl FnOnce(ContainerBuilder) -> ContainerBuilder,
) -> Result<(Container, SocketAddr, u64)> {
    let builder = Container::builder(hint, HTTP_COUNTER_IMAGE).runtime(LIGHTWHALE_RUNTIME).managed("10m");
    let (web, address, _) = start_on_loopback(configure(builder))?;
    daemon.wait_for_state(web.name(), "awake", STATE_TIMEOUT)?;
    http_get_path(address, &format!("/alloc?mib={mib}"))?;
    let hits = parse_hits(&http_get(address)?)?;
    Ok((web, address, hits))
}

/// Puts `web` to sleep with `lightwhale sleep` and returns its status
/// entry and the checkpoint's directory, after checking that the
/// checkpoint went through runc.
fn sleep_through_runc(daemon: &Daemon, web: &Container) -> Result<(serde_json::Value, PathBuf)> {
    let started = Instant::now();
    let message = daemon.cli(&["sleep", web.name()])?;
    println!("sleep took {:?}: {}", started.elapsed(), message.trim());
    let asleep = daemon.wait_for_state(web.name(), "asleep", STATE_TIMEOUT)?;
    let checkpoint = asleep["checkpoint"].as_str().context("asleep without a checkpoint")?.to_owned();
    let dir = checkpoint_dir(daemon, web).join(&checkpoint);
    assert!(dir.join("images").is_dir(), "no CRIU images in {}: {asleep}", dir.display());
    assert!(web.checkpoints()?.is_empty(), "Docker has a checkpoint of a container of the runtime {LIGHTWHALE_RUNTIME}");
    Ok((asleep, dir))
}

/// Directory of all checkpoints of `web` in the daemon's state directory.
fn checkpoint_dir(daemon: &Daemon, web: &Container) -> PathBuf {
    daemon.state_dir().join("checkpoints").join(web.id())
}

/// Waits until the daemon removed every checkpoint of `web`.
fn wait_for_removal(daemon: &Daemon, web: &Container) -> Result<()> {
    let dir = checkpoint_dir(daemon, web);
    wait_until(&format!("{} to be removed", dir.display()), STATE_TIMEOUT, || Ok((!dir.exists()).then_some(())))
}

#[test]
fn runc_sleep_and_wake_keep_state() -> Result<()> {
    if lightwhale_runtime_missing()? {
        return Ok(());
    }
    let daemon = Daemon::start(&[])?;
    let network = Network::create("runc-net")?;
    let (web, address, mut hits) = runc_counter(&daemon, "runc-cycle", HELD_MIB, |builder| {
        builder.network(&network).option("--restart=always")
    })?;

    for cycle in 1..=2u64 {
        let (asleep, dir) = sleep_through_runc(&daemon, &web)?;
        println!("asleep: {asleep}");
        let freed = asleep["memory_freed_bytes"].as_u64().unwrap_or(0);
        assert!(freed >= u64::from(HELD_MIB) << 20, "freed {freed} bytes: {asleep}");
        assert_eq!(asleep["sleeps"], cycle, "{asleep}");
        assert!(!web.is_running()?, "Docker reports the container running while it sleeps");
        assert_eq!(web.inspect("{{.State.Status}}")?, "exited");
        assert_eq!(web.inspect("{{.HostConfig.RestartPolicy.Name}}")?, "no", "restart policy not suspended");
        let state = fs::read_to_string(daemon.state_dir().join("state.json"))?;
        assert!(state.contains(&dir.display().to_string()), "the state file does not name {}: {state}", dir.display());

        let started = Instant::now();
        let body = http_get(address)?;
        println!("cycle {cycle}: wake to first byte {:?}", started.elapsed());
        assert_eq!(parse_hits(&body)?, hits + 1, "the container lost its state: {body:?}");
        hits += 1;

        let awake = daemon.wait_for_state(web.name(), "awake", STATE_TIMEOUT)?;
        println!("awake: {awake}");
        assert_eq!(awake["wakes"], cycle, "{awake}");
        assert!(awake["last_wake_phases"]["restored_us"].is_u64(), "{awake}");
        assert!(awake["last_error"].is_null(), "{awake}");
        wait_for_removal(&daemon, &web)?;
        let copies = restore_copies_of(web.id())?;
        assert!(copies.is_empty(), "containerd copied the checkpoint: {copies:?}");
    }

    // Docker manages the restored container as any other.
    assert!(web.is_running()?, "Docker does not report the container running");
    assert_eq!(web.inspect("{{.HostConfig.RestartPolicy.Name}}")?, "always", "restart policy not set back");
    assert_eq!(web.inspect("{{.RestartCount}}")?, "0", "Docker restarted the container");
    let pid: u32 = web.inspect("{{.State.Pid}}")?.parse()?;
    assert!(Path::new(&format!("/proc/{pid}")).exists(), "Docker reports pid {pid}, which does not exist");
    let listed = run(Command::new("docker").args(["ps", "--filter", &format!("id={}", web.id()), "--format", "{{.Status}}"]))?;
    assert!(listed.trim().starts_with("Up"), "docker ps shows {listed:?}");
    let logs = web.logs()?;
    assert!(logs.contains("listening on 0.0.0.0:8080"), "docker logs lost the output before the sleeps: {logs:?}");
    let exec = output(Command::new("docker").args(["exec", "-e", "PORT=invalid", web.id(), "/http-counter"]))?;
    let exec_output = String::from_utf8_lossy(&exec.stderr);
    assert!(exec_output.contains("invalid PORT"), "docker exec in the restored container: {exec:?}");
    Ok(())
}

#[test]
fn runc_sleeper_survives_daemon_kill() -> Result<()> {
    if lightwhale_runtime_missing()? {
        return Ok(());
    }
    let mut daemon = Daemon::start(&[])?;
    let (web, address, hits) = runc_counter(&daemon, "runc-kill", 64, |builder| builder)?;
    let (_, dir) = sleep_through_runc(&daemon, &web)?;

    daemon.kill()?;
    daemon.restart()?;
    let asleep = daemon.wait_for_state(web.name(), "asleep", STATE_TIMEOUT)?;
    println!("after the restart: {asleep}");
    assert!(dir.join("images").is_dir(), "the checkpoint is gone after the restart");

    let body = http_get(address)?;
    assert_eq!(parse_hits(&body)?, hits + 1, "the container lost its state: {body:?}");
    daemon.wait_for_state(web.name(), "awake", STATE_TIMEOUT)?;
    wait_for_removal(&daemon, &web)
}

/// The daemon is killed while `runc checkpoint` runs. runc, which the kill
/// does not reach, finishes the checkpoint, and the restarted daemon finds
/// it in its state directory although the state file does not name it.
#[test]
fn kill_during_runc_checkpoint_loses_nothing() -> Result<()> {
    if lightwhale_runtime_missing()? {
        return Ok(());
    }
    let mut daemon = Daemon::start(&[])?;
    // Large enough for the checkpoint to take about a second.
    let (web, address, hits) = runc_counter(&daemon, "runc-crash", 1024, |builder| builder)?;

    daemon.kill_during_request("sleep", web.name(), "sleeping", Duration::from_millis(300))?;
    wait_until("runc checkpoint to stop the container", STATE_TIMEOUT, || Ok((!web.is_running()?).then_some(())))?;
    let state = fs::read_to_string(daemon.state_dir().join("state.json")).unwrap_or_default();
    println!("after the kill: state file {state:?}");

    daemon.restart()?;
    let asleep = daemon.wait_for_state(web.name(), "asleep", STATE_TIMEOUT)?;
    println!("after the restart: {asleep}");
    let body = http_get(address)?;
    assert_eq!(parse_hits(&body)?, hits + 1, "the container lost its state: {body:?}");
    daemon.wait_for_state(web.name(), "awake", STATE_TIMEOUT)?;
    wait_for_removal(&daemon, &web)
}

/// The daemon is killed while `docker start` restores the container
/// through the runtime. Whether the engine finished the restore or never
/// began it, the restarted daemon serves the container with its state.
#[test]
fn kill_during_runc_restore_loses_nothing() -> Result<()> {
    if lightwhale_runtime_missing()? {
        return Ok(());
    }
    let mut daemon = Daemon::start(&[])?;
    // Large enough for the restore to take about a second.
    let (web, address, hits) = runc_counter(&daemon, "runc-crash-wake", 1024, |builder| builder)?;
    sleep_through_runc(&daemon, &web)?;

    daemon.kill_during_request("wake", web.name(), "waking", Duration::from_millis(300))?;
    // Let the engine finish or abandon the restore.
    thread::sleep(Duration::from_secs(5));
    println!("after the kill: running={}", web.is_running()?);

    daemon.restart()?;
    let status = daemon.wait_for_any_state(web.name(), &["awake", "asleep"], STATE_TIMEOUT)?;
    println!("after the restart: {status}");
    let body = http_get(address)?;
    assert_eq!(parse_hits(&body)?, hits + 1, "the container lost its state: {body:?}");
    let marker = Path::new("/run/lightwhale/restore").join(web.id());
    assert!(!marker.exists(), "a restore marker was left behind: {}", marker.display());
    Ok(())
}

#[test]
fn damaged_runc_checkpoint_starts_cold() -> Result<()> {
    if lightwhale_runtime_missing()? {
        return Ok(());
    }
    let daemon = Daemon::start(&[])?;
    let (web, address, _) = runc_counter(&daemon, "runc-cold", 16, |builder| builder)?;
    let (_, dir) = sleep_through_runc(&daemon, &web)?;
    println!("damaged {} images in {}", damage_criu_images(&dir.join("images"))?, dir.display());

    let body = http_get(address)?;
    assert_eq!(parse_hits(&body)?, 1, "expected a cold start with a fresh counter: {body:?}");
    let awake = daemon.wait_for_state(web.name(), "awake", STATE_TIMEOUT)?;
    println!("after the failed restore: {awake}");
    let error = awake["last_error"].as_str().unwrap_or("");
    assert!(error.contains("restore from"), "{awake}");
    assert!(error.contains("memory state"), "{awake}");
    assert!(dir.join("images").is_dir(), "the failed checkpoint was deleted");
    assert!(dir.join("restore").join("restore.log").is_file(), "CRIU's restore log is missing");
    Ok(())
}

#[test]
fn damaged_runc_checkpoint_with_fail_stays_stopped() -> Result<()> {
    if lightwhale_runtime_missing()? {
        return Ok(());
    }
    let daemon = Daemon::start(&[])?;
    let (mut web, address, _) = runc_counter(&daemon, "runc-fail", 16, |builder| {
        builder.label("lightwhale.on-restore-failure", "fail")
    })?;
    let (_, dir) = sleep_through_runc(&daemon, &web)?;
    damage_criu_images(&dir.join("images"))?;

    let attempt = output(Command::new("curl").args(curl_args(address, "/")))?;
    assert!(
        !attempt.status.success(),
        "a request was answered although the restore failed: {}",
        String::from_utf8_lossy(&attempt.stdout)
    );
    let asleep = daemon.wait_for_state(web.name(), "asleep", STATE_TIMEOUT)?;
    println!("after the failed restore: {asleep}");
    assert!(asleep["last_error"].as_str().unwrap_or("").contains("restore from"), "{asleep}");
    assert!(!web.is_running()?, "the container runs although on-restore-failure=fail");
    assert!(dir.join("images").is_dir(), "the failed checkpoint was deleted");

    // Removing the sleeping container removes its checkpoint.
    web.remove()?;
    wait_for_removal(&daemon, &web)
}

/// Host clients that connect to a sleeping container's own address while
/// it wakes are all served. The restore through runc gives the container
/// its address back within a second. Through Docker's checkpoints, a
/// 256 MiB restore leaves the address without an owner for about 4 s, and
/// such clients fail with "no route to host".
#[test]
fn runc_wake_serves_clients_of_its_address() -> Result<()> {
    const CLIENTS: usize = 16;
    if lightwhale_runtime_missing()? {
        return Ok(());
    }
    // Dropped last, after the daemon removed the stand-in.
    let network = Network::create_with_subnet("runc-address", "10.231.12.0/24")?;
    let daemon = Daemon::start(&[])?;
    let (web, _, hits) = runc_counter(&daemon, "runc-address", HELD_MIB, |builder| builder.network(&network))?;
    let target = SocketAddr::new(web.address_on(&network)?.into(), 8080);
    sleep_through_runc(&daemon, &web)?;

    // The first client wakes the container; the others connect every
    // 100 ms during the wake.
    let counts = thread::scope(|scope| {
        let clients: Vec<_> = (0..CLIENTS)
            .map(|_| {
                let client = scope.spawn(move || http_get(target));
                thread::sleep(Duration::from_millis(100));
                client
            })
            .collect();
        clients
            .into_iter()
            .map(|client| {
                let body = client.join().map_err(|_| anyhow::anyhow!("client panicked"))??;
                parse_hits(&body)
            })
            .collect::<Result<Vec<u64>>>()
    })?;
    let awake = daemon.wait_for_state(web.name(), "awake", STATE_TIMEOUT)?;
    println!("awake: {awake}");

    let mut counts = counts;
    counts.sort_unstable();
    let expected: Vec<u64> = (hits + 1..=hits + CLIENTS as u64).collect();
    assert_eq!(counts, expected, "a client was not served once, or the counter restarted");
    assert_eq!(awake["wakes"], 1, "{awake}");
    Ok(())
}

/// A container of the runtime whose cgroup a stopped daemon left frozen,
/// as a daemon killed right after it froze the cgroup for a checkpoint
/// would, is thawed when the daemon starts again.
#[test]
fn daemon_start_thaws_frozen_runc_container() -> Result<()> {
    if lightwhale_runtime_missing()? {
        return Ok(());
    }
    let mut daemon = Daemon::start(&[])?;
    let (web, address, hits) = runc_counter(&daemon, "runc-frozen", 1, |builder| builder)?;
    daemon.stop()?;

    let freezer = freezer_file(web.id())?;
    let frozen = if freezer.ends_with("freezer.state") { "FROZEN" } else { "1" };
    fs::write(&freezer, frozen)?;
    wait_until("the cgroup to freeze", STATE_TIMEOUT, || {
        Ok((fs::read_to_string(&freezer)?.trim() != "FREEZING").then_some(()))
    })?;

    daemon.restart()?;
    let body = http_get(address)?;
    assert_eq!(parse_hits(&body)?, hits + 1, "the container lost its state: {body:?}");
    assert!(
        daemon.log().contains("thawed a container left frozen"),
        "the daemon did not report the thaw:\n{}",
        daemon.log()
    );
    Ok(())
}
