//! Many clients at once against many sleeping containers: every client is
//! answered by the right container, and each container is restored once.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::thread;
use std::time::Instant;

use anyhow::{anyhow, Result};
use lightwhale_tests::{
    free_port, http_get, parse_hits, wait_for_http, Container, Daemon, HTTP_COUNTER_IMAGE,
    SLEEP_TIMEOUT, STARTUP_TIMEOUT, STATE_TIMEOUT,
};

const CONTAINERS: usize = 10;
const CLIENTS_PER_CONTAINER: u64 = 20;

#[test]
fn many_clients_many_sleepers() -> Result<()> {
    let daemon = Daemon::start(&[])?;
    let mut containers = Vec::new();
    for index in 0..CONTAINERS {
        let port = free_port()?;
        let container = Container::builder(&format!("load-{index}"), HTTP_COUNTER_IMAGE)
            .managed("3s")
            .publish("127.0.0.1", port, 8080)
            .start()?;
        containers.push((container, SocketAddr::from(([127, 0, 0, 1], port))));
    }
    let mut before = Vec::new();
    for (_, address) in &containers {
        wait_for_http(*address, STARTUP_TIMEOUT)?;
        before.push(parse_hits(&http_get(*address)?)?);
    }
    for (container, _) in &containers {
        daemon.wait_for_state(container.name(), "asleep", SLEEP_TIMEOUT)?;
    }

    let started = Instant::now();
    let answers: Vec<(usize, Result<u64>)> = thread::scope(|scope| {
        let clients: Vec<_> = (0..CONTAINERS * CLIENTS_PER_CONTAINER as usize)
            .map(|client| {
                let index = client % CONTAINERS;
                let address = containers[index].1;
                scope.spawn(move || (index, http_get(address).and_then(|body| parse_hits(&body))))
            })
            .collect();
        clients
            .into_iter()
            .map(|client| client.join().unwrap_or_else(|_| (usize::MAX, Err(anyhow!("client panicked")))))
            .collect()
    });
    println!("{} clients answered in {:?}", answers.len(), started.elapsed());

    let mut hits: BTreeMap<usize, Vec<u64>> = BTreeMap::new();
    for (index, answer) in answers {
        hits.entry(index).or_default().push(answer?);
    }
    for (index, (container, _)) in containers.iter().enumerate() {
        let mut counts = hits.remove(&index).unwrap_or_default();
        counts.sort_unstable();
        let expected: Vec<u64> = (1..=CLIENTS_PER_CONTAINER).map(|offset| before[index] + offset).collect();
        assert_eq!(counts, expected, "{}: wrong or missing answers", container.name());

        let status = daemon.wait_for_state(container.name(), "awake", STATE_TIMEOUT)?;
        assert_eq!(status["wakes"], 1, "{status}");
    }
    Ok(())
}
