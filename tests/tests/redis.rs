//! A redis server keeps its in-memory data across a sleep and a wake.

use std::collections::HashSet;
use std::time::Instant;

use anyhow::Result;
use lightwhale_tests::redis::{encode_command, redis_cli, redis_pipe};
use lightwhale_tests::{
    free_port, wait_until, Container, Daemon, REDIS_IMAGE, SLEEP_TIMEOUT, STARTUP_TIMEOUT,
    STATE_TIMEOUT,
};

const KEYS: usize = 10_000;

/// Keys per MGET when reading the data back.
const BATCH: usize = 500;

fn key(index: usize) -> String {
    format!("key:{index:05}")
}

/// Returns a value that differs for every key, so a swapped or stale
/// value is caught.
fn value(index: usize) -> String {
    format!("value-{index}-{}", index * 7919 % 10_007)
}

#[test]
fn redis_keeps_keys_across_sleep() -> Result<()> {
    let daemon = Daemon::start(&[])?;
    let port = free_port()?;
    let redis = Container::builder("redis", REDIS_IMAGE)
        .managed("3s")
        .publish("127.0.0.1", port, 6379)
        .start()?;
    wait_until("redis to answer PING", STARTUP_TIMEOUT, || {
        Ok(Some(redis_cli(port, &["PING"])?).filter(|reply| reply.trim() == "PONG"))
    })?;
    daemon.wait_for_state(redis.name(), "awake", STATE_TIMEOUT)?;

    let mut protocol = Vec::new();
    for index in 0..KEYS {
        protocol.extend(encode_command(&["SET", &key(index), &value(index)]));
    }
    let started = Instant::now();
    redis_pipe(port, &protocol, KEYS)?;
    println!("wrote {KEYS} keys in {:?}", started.elapsed());

    let asleep = daemon.wait_for_state(redis.name(), "asleep", SLEEP_TIMEOUT)?;
    println!("asleep: {asleep}");
    let memory_freed = asleep["memory_freed_bytes"].as_u64().unwrap_or(0);
    assert!(memory_freed > 0, "no memory freed: {asleep}");
    assert!(
        !redis.is_running()?,
        "Docker still reports the container as running"
    );

    let started = Instant::now();
    let size = redis_cli(port, &["DBSIZE"])?;
    println!("wake as seen by redis-cli: {:?}", started.elapsed());
    assert_eq!(size.trim(), KEYS.to_string(), "DBSIZE after wake");

    let started = Instant::now();
    for batch_start in (0..KEYS).step_by(BATCH) {
        let keys: Vec<String> = (batch_start..KEYS.min(batch_start + BATCH))
            .map(key)
            .collect();
        let mut args = vec!["MGET"];
        args.extend(keys.iter().map(String::as_str));
        let output = redis_cli(port, &args)?;
        let values: Vec<&str> = output.lines().collect();
        assert_eq!(values.len(), keys.len(), "MGET from {}", keys[0]);
        for (offset, actual) in values.iter().enumerate() {
            let index = batch_start + offset;
            assert_eq!(*actual, value(index), "value of {}", key(index));
        }
    }
    println!("read back {KEYS} keys in {:?}", started.elapsed());

    let scanned = redis_cli(port, &["--scan", "--pattern", "key:*"])?;
    let scanned: HashSet<&str> = scanned.lines().collect();
    assert_eq!(scanned.len(), KEYS, "distinct keys found by SCAN");
    for index in 0..KEYS {
        assert!(
            scanned.contains(key(index).as_str()),
            "SCAN did not find {}",
            key(index)
        );
    }

    // The reads may take longer than the idle timeout on a slow host, so
    // the container may have slept and woken again since.
    let status = daemon
        .container_status(redis.name())?
        .expect("the daemon stopped listing the container");
    let wakes = status["wakes"].as_u64().unwrap_or(0);
    assert!(wakes >= 1, "{status}");
    Ok(())
}
