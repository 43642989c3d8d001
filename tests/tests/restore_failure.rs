//! A checkpoint damaged on disk: by default the container is started
//! without it and answers its clients; with `lightwhale.on-restore-failure=fail`
//! it stays stopped. Either way the cause is shown and the checkpoint kept.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Result};
use lightwhale_tests::command::{output, run};
use lightwhale_tests::criu_images::damage_criu_images;
use lightwhale_tests::http::curl_args;
use lightwhale_tests::http_counter::start_on_loopback;
use lightwhale_tests::{
    http_get, parse_hits, Container, Daemon, HTTP_COUNTER_IMAGE, SLEEP_TIMEOUT, STATE_TIMEOUT,
};

/// Damages every CRIU image of the container's only checkpoint and returns
/// the checkpoint's name.
fn damage_checkpoint(container: &Container) -> Result<String> {
    let checkpoints = container.checkpoints()?;
    let [checkpoint] = checkpoints.as_slice() else {
        bail!("expected one checkpoint, found {checkpoints:?}");
    };
    let root = run(Command::new("docker").args(["info", "--format", "{{.DockerRootDir}}"]))?;
    let dir = PathBuf::from(root.trim())
        .join("containers")
        .join(container.id())
        .join("checkpoints")
        .join(checkpoint);
    let damaged = damage_criu_images(&dir)?;
    println!("damaged {damaged} images in {}", dir.display());
    Ok(checkpoint.clone())
}

#[test]
fn damaged_checkpoint_starts_cold() -> Result<()> {
    let daemon = Daemon::start(&[])?;
    let (web, address, _) =
        start_on_loopback(Container::builder("cold-start", HTTP_COUNTER_IMAGE).managed("3s"))?;
    assert!(parse_hits(&http_get(address)?)? > 1);
    daemon.wait_for_state(web.name(), "asleep", SLEEP_TIMEOUT)?;
    let checkpoint = damage_checkpoint(&web)?;

    let body = http_get(address)?;
    assert_eq!(parse_hits(&body)?, 1, "expected a cold start with a fresh counter: {body:?}");
    let status = daemon.wait_for_state(web.name(), "awake", STATE_TIMEOUT)?;
    println!("after the failed restore: {status}");
    let error = status["last_error"].as_str().unwrap_or("");
    assert!(error.contains("restore from"), "{status}");
    assert!(error.contains("memory state"), "{status}");
    assert!(web.checkpoints()?.contains(&checkpoint), "the failed checkpoint was deleted");
    Ok(())
}

#[test]
fn damaged_checkpoint_with_fail_stays_stopped() -> Result<()> {
    let daemon = Daemon::start(&[])?;
    let (web, address, _) = start_on_loopback(
        Container::builder("restore-fail", HTTP_COUNTER_IMAGE)
            .managed("3s")
            .label("lightwhale.on-restore-failure", "fail"),
    )?;
    daemon.wait_for_state(web.name(), "asleep", SLEEP_TIMEOUT)?;
    let checkpoint = damage_checkpoint(&web)?;

    let attempt = output(Command::new("curl").args(curl_args(address, "/")))?;
    assert!(
        !attempt.status.success(),
        "a request was answered although the restore failed: {}",
        String::from_utf8_lossy(&attempt.stdout)
    );
    let status = daemon.wait_for_state(web.name(), "asleep", STATE_TIMEOUT)?;
    println!("after the failed restore: {status}");
    assert!(status["last_error"].as_str().unwrap_or("").contains("restore from"), "{status}");
    assert!(!web.is_running()?, "the container runs although on-restore-failure=fail");
    assert!(web.checkpoints()?.contains(&checkpoint), "the failed checkpoint was deleted");
    Ok(())
}
