//! Sleeping containers stay reachable from other containers and from host
//! processes, by name and by address: a stand-in keeps their names and
//! addresses while they sleep.

use std::net::SocketAddr;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use lightwhale_tests::command::run;
use lightwhale_tests::http_counter::start_on_loopback;
use lightwhale_tests::{
    free_port, http_get, parse_hits, wait_for_http, Container, Daemon, Network, HTTP_COUNTER_IMAGE,
    SLEEP_TIMEOUT, STARTUP_TIMEOUT, STATE_TIMEOUT,
};

/// Label of the stand-in containers that the daemon starts.
const STAND_IN_LABEL: &str = "lightwhale.stand-in";

/// `web` calls `api` by name, which calls `db` by name; all three managed.
struct Chain {
    web: Container,
    api: Container,
    db: Container,
    address: SocketAddr,
}

impl Chain {
    fn start(network: &Network, idle_timeout: &str) -> Result<Chain> {
        let db = Container::builder("db", HTTP_COUNTER_IMAGE)
            .managed(idle_timeout)
            .network(network)
            .start()?;
        let api = Container::builder("api", HTTP_COUNTER_IMAGE)
            .managed(idle_timeout)
            .network(network)
            .env("UPSTREAM", &format!("{}:8080", db.name()))
            .start()?;
        let (web, address, _) = start_on_loopback(
            Container::builder("web", HTTP_COUNTER_IMAGE)
                .managed(idle_timeout)
                .network(network)
                .env("UPSTREAM", &format!("{}:8080", api.name())),
        )?;
        Ok(Chain { web, api, db, address })
    }

    fn containers(&self) -> [&Container; 3] {
        [&self.web, &self.api, &self.db]
    }
}

/// Returns the counters of a chained response: web's, api's, then db's.
fn chain_counts(body: &str) -> Result<Vec<u64>> {
    let counts = body
        .lines()
        .filter(|line| line.starts_with("hits="))
        .map(parse_hits)
        .collect::<Result<Vec<u64>>>()?;
    if counts.len() != 3 {
        bail!("expected three counters (web, api, db), got {body:?}");
    }
    Ok(counts)
}

fn stand_ins() -> Result<Vec<String>> {
    let output = run(Command::new("docker").args(["ps", "-aq", "--filter"]).arg(format!("label={STAND_IN_LABEL}")))?;
    Ok(output.lines().map(str::to_owned).collect())
}

fn wake_chain_by_name(network: &Network) -> Result<()> {
    let mut daemon = Daemon::start(&[])?;
    let chain = Chain::start(network, "3s")?;
    http_get(chain.address)?;
    let before = chain_counts(&http_get(chain.address)?)?;
    let db_address = chain.db.address_on(network)?;
    println!("before the sleep: {before:?}, db at {db_address}");

    for container in chain.containers() {
        daemon.wait_for_state(container.name(), "asleep", SLEEP_TIMEOUT)?;
    }
    assert_eq!(stand_ins()?.len(), 3, "expected one stand-in per sleeping container");

    let started = Instant::now();
    let body = http_get(chain.address)?;
    println!("chain woken by one request in {:?}: {body:?}", started.elapsed());
    let after = chain_counts(&body)?;
    let expected: Vec<u64> = before.iter().map(|count| count + 1).collect();
    assert_eq!(after, expected, "a counter restarted: state was lost");

    for container in chain.containers() {
        let status = daemon.wait_for_state(container.name(), "awake", STATE_TIMEOUT)?;
        assert_eq!(status["wakes"], 1, "{status}");
    }
    assert_eq!(chain.db.address_on(network)?, db_address, "db woke with another address");
    assert!(stand_ins()?.is_empty(), "stand-ins left after the wake: {:?}", stand_ins()?);

    // A stop while the chain sleeps removes the stand-ins too.
    for container in chain.containers() {
        daemon.wait_for_state(container.name(), "asleep", SLEEP_TIMEOUT)?;
    }
    daemon.stop()?;
    assert!(stand_ins()?.is_empty(), "stand-ins left after the stop: {:?}", stand_ins()?);
    Ok(())
}

#[test]
fn chain_wakes_on_subnet_network() -> Result<()> {
    let network = Network::create_with_subnet("chain-subnet", "10.231.10.0/24")?;
    wake_chain_by_name(&network)
}

#[test]
fn chain_wakes_on_default_subnet_network() -> Result<()> {
    let network = Network::create("chain-auto")?;
    wake_chain_by_name(&network)
}

/// While db sleeps, no other container receives its address, and clients
/// that kept the address, in a container or on the host, reach db again.
#[test]
fn sleeping_address_stays_reserved() -> Result<()> {
    // Dropped last, after the daemon removed the stand-ins.
    let network = Network::create_with_subnet("reserved", "10.231.11.0/24")?;
    let daemon = Daemon::start(&[])?;
    let db = Container::builder("reserved-db", HTTP_COUNTER_IMAGE)
        .managed("3s")
        .network(&network)
        .start()?;
    daemon.wait_for_state(db.name(), "awake", STATE_TIMEOUT)?;
    let db_address = db.address_on(&network)?;
    let target = SocketAddr::from((db_address, 8080));
    let hits = parse_hits(&wait_for_http(target, STARTUP_TIMEOUT)?)?;

    daemon.wait_for_state(db.name(), "asleep", SLEEP_TIMEOUT)?;
    let newcomer = Container::builder("newcomer", HTTP_COUNTER_IMAGE).network(&network).start()?;
    let newcomer_address = newcomer.address_on(&network)?;
    assert_ne!(newcomer_address, db_address, "a new container received the sleeping db's address");

    // A client container that only knows the address.
    let port = free_port()?;
    let cached = Container::builder("cached-client", HTTP_COUNTER_IMAGE)
        .network(&network)
        .env("UPSTREAM", &format!("{db_address}:8080"))
        .publish("127.0.0.1", port, 8080)
        .start()?;
    let client = SocketAddr::from(([127, 0, 0, 1], port));
    let started = Instant::now();
    let body = wait_for_http(client, STARTUP_TIMEOUT)?;
    println!("client with the cached address answered after {:?}: {body:?}", started.elapsed());
    let db_hits = body.lines().nth(1).ok_or_else(|| anyhow!("no upstream line in {body:?}"))?;
    assert_eq!(parse_hits(db_hits)?, hits + 1, "db's counter restarted");
    daemon.wait_for_state(db.name(), "awake", STATE_TIMEOUT)?;
    let status = daemon
        .container_status(db.name())?
        .ok_or_else(|| anyhow!("{} is no longer listed", db.name()))?;
    assert_eq!(status["wakes"], 1, "{status}");
    assert_eq!(db.address_on(&network)?, db_address, "db woke with another address");

    // A host process connecting to the sleeping container's own address.
    daemon.wait_for_state(db.name(), "asleep", SLEEP_TIMEOUT)?;
    let started = Instant::now();
    let body = http_get(target)?;
    println!("host process answered by {db_address} after {:?}: {body:?}", started.elapsed());
    assert_eq!(parse_hits(&body)?, hits + 2, "db's counter restarted");
    let status = daemon.wait_for_state(db.name(), "awake", STATE_TIMEOUT)?;
    assert_eq!(status["wakes"], 2, "{status}");
    drop(cached);
    Ok(())
}

/// A client that talks to db every second keeps it awake while web and api,
/// which nobody calls, go to sleep.
#[test]
fn busy_client_keeps_db_awake() -> Result<()> {
    // Dropped last, after the daemon removed the stand-ins.
    let network = Network::create("busy-db")?;
    let daemon = Daemon::start(&[])?;
    let chain = Chain::start(&network, "3s")?;
    let db_address = chain.db.address_on(&network)?;
    let target = SocketAddr::from((db_address, 8080));

    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(12) {
        http_get(target)?;
        let status = daemon
            .container_status(chain.db.name())?
            .ok_or_else(|| anyhow!("{} is no longer listed", chain.db.name()))?;
        assert_eq!(status["sleeps"], 0, "db slept while used, after {:?}: {status}", started.elapsed());
        thread::sleep(Duration::from_secs(1));
    }
    for container in [&chain.web, &chain.api] {
        let status = daemon
            .container_status(container.name())?
            .ok_or_else(|| anyhow!("{} is no longer listed", container.name()))?;
        assert!(status["sleeps"].as_u64().unwrap_or(0) >= 1, "{} never slept: {status}", container.name());
    }
    Ok(())
}
