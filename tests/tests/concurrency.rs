//! Many clients arriving at once at a sleeping container share one restore.

use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Result;
use lightwhale_tests::http_counter::start_on_loopback;
use lightwhale_tests::{
    http_get, parse_hits, Container, Daemon, HTTP_COUNTER_IMAGE, SLEEP_TIMEOUT, STATE_TIMEOUT,
};

const CLIENTS: u64 = 20;

#[test]
fn concurrent_clients_share_one_wake() -> Result<()> {
    let daemon = Daemon::start(&[])?;
    let (web, address, _) =
        start_on_loopback(Container::builder("concurrency", HTTP_COUNTER_IMAGE).managed("3s"))?;
    daemon.wait_for_state(web.name(), "awake", STATE_TIMEOUT)?;
    let hits = parse_hits(&http_get(address)?)?;
    println!("counter at {hits} before sleep");

    let asleep = daemon.wait_for_state(web.name(), "asleep", SLEEP_TIMEOUT)?;
    assert_eq!(asleep["wakes"], 0, "{asleep}");
    assert!(
        !web.is_running()?,
        "Docker still reports the container as running"
    );

    // The barrier releases all clients together, so they all connect while
    // the container is still asleep.
    let barrier = Arc::new(Barrier::new(CLIENTS as usize));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let barrier = Arc::clone(&barrier);
            thread::spawn(move || -> Result<(u64, Duration)> {
                barrier.wait();
                let started = Instant::now();
                let body = http_get(address)?;
                Ok((parse_hits(&body)?, started.elapsed()))
            })
        })
        .collect();

    let mut counts = Vec::new();
    let mut durations = Vec::new();
    for (index, client) in clients.into_iter().enumerate() {
        let result = client.join().expect("client thread panicked");
        let (count, duration) =
            result.map_err(|err| err.context(format!("client {index} failed")))?;
        counts.push(count);
        durations.push(duration);
    }
    durations.sort();
    println!(
        "wake as seen by {CLIENTS} clients: fastest {:?}, slowest {:?}",
        durations[0],
        durations[durations.len() - 1]
    );

    // Every client got its own response from the restored process, so the
    // counts are exactly the next CLIENTS values.
    counts.sort();
    let expected: Vec<u64> = (hits + 1..=hits + CLIENTS).collect();
    assert_eq!(counts, expected, "hit counts do not continue the counter");

    let awake = daemon.wait_for_state(web.name(), "awake", STATE_TIMEOUT)?;
    assert_eq!(awake["wakes"], 1, "{awake}");
    assert_eq!(awake["sleeps"], 1, "{awake}");
    Ok(())
}
