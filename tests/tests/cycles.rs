//! One container goes through several sleep and wake cycles in a row.

use std::time::Instant;

use anyhow::Result;
use lightwhale_tests::http_counter::start_on_loopback;
use lightwhale_tests::{
    http_get, parse_hits, Container, Daemon, HTTP_COUNTER_IMAGE, SLEEP_TIMEOUT, STATE_TIMEOUT,
};

const CYCLES: u64 = 5;

#[test]
fn five_cycles_keep_counter() -> Result<()> {
    let daemon = Daemon::start(&[])?;
    let (web, address, first) =
        start_on_loopback(Container::builder("cycles", HTTP_COUNTER_IMAGE).managed("3s"))?;
    daemon.wait_for_state(web.name(), "awake", STATE_TIMEOUT)?;

    for cycle in 1..=CYCLES {
        let asleep = daemon.wait_for_status(
            web.name(),
            &format!("sleep number {cycle}"),
            SLEEP_TIMEOUT,
            |entry| entry["state"] == "asleep" && entry["sleeps"] == cycle,
        )?;
        println!("cycle {cycle}: asleep, took {} ms", asleep["last_sleep_ms"]);
        assert!(
            !web.is_running()?,
            "cycle {cycle}: Docker still reports the container as running"
        );

        let started = Instant::now();
        let body = http_get(address)?;
        println!(
            "cycle {cycle}: wake as seen by the client: {:?}",
            started.elapsed()
        );
        assert_eq!(
            parse_hits(&body)?,
            first + cycle,
            "cycle {cycle}: counter did not continue"
        );

        // The state is not checked because, with a 3 s idle timeout, the
        // container may already be on its way to the next sleep.
        let awake = daemon.wait_for_status(
            web.name(),
            &format!("wake number {cycle}"),
            STATE_TIMEOUT,
            |entry| entry["wakes"] == cycle,
        )?;
        assert_eq!(awake["sleeps"], cycle, "cycle {cycle}: {awake}");
    }
    Ok(())
}
