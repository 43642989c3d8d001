//! Steady state of an awake container: throughput and latency with and
//! without the daemon, and the eBPF programs' run time per packet.
//!
//! One http-counter container is managed with a 1-hour idle timeout, so it
//! stays awake. It is loaded on two paths: through its port published on
//! 127.0.0.1 from this process, and from a second container on the same
//! user-defined network. Each run measures both paths without the daemon
//! and with it, in the order without-with on even runs and with-without on
//! odd runs, so that drift over the section does not favour one mode.
//!
//! The kernel's run-time statistics of eBPF programs time every program
//! run, which adds work to each packet. So they stay off for those runs,
//! and the programs' run time comes from extra runs with the daemon at the
//! end.

use std::collections::BTreeMap;
use std::fs;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Command;
use std::thread;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use lightwhale_tests::{free_port, wait_for_http, Container, Daemon, Network, HTTP_COUNTER_IMAGE, STARTUP_TIMEOUT, STATE_TIMEOUT};
use serde::{Deserialize, Serialize};

use super::load::{self, Load, Outcome};
use super::scale::{clock_ticks_per_second, process_cpu_ticks};
use super::stats::Summary;
use super::{verdict, Bench};

/// Load on each path before the first measurement, not recorded.
const WARM_UP: Duration = Duration::from_secs(2);

/// Pause after the daemon has listed the container as awake, so that its
/// start-up work is over before the load starts.
const SETTLE: Duration = Duration::from_secs(1);

/// Extra runs per path with the daemon and the run-time statistics on.
const EBPF_RUNS: usize = 2;

/// Port the http-counter listens on in its container.
const SERVER_PORT: u16 = 8080;

/// Target for the throughput with the daemon: at most 2% lower.
const TARGET_THROUGHPUT_CHANGE_PERCENT: f64 = -2.0;
/// Target for the p99 latency with the daemon: at most 50 µs higher.
const TARGET_P99_CHANGE_US: f64 = 50.0;
/// Target for the run time of an eBPF program per packet.
const TARGET_NS_PER_RUN: f64 = 200.0;

/// Switch for the kernel's run-time statistics of eBPF programs.
const BPF_STATS_SYSCTL: &str = "/proc/sys/kernel/bpf_stats_enabled";

/// Prefix of the names of lightwhale's eBPF programs.
const PROGRAM_PREFIX: &str = "lw_";

/// Results of the steady-state section.
#[derive(Debug, Serialize)]
pub struct Results {
    /// Load worker threads, each with one request in flight.
    pub workers: usize,
    /// Seconds of load per measurement.
    pub load_seconds: u64,
    /// Runs, each of which measures both modes on both paths.
    pub runs: usize,
    /// Extra runs per path for the eBPF run time.
    pub ebpf_runs: usize,
    /// The modes in the order they were measured.
    pub order: Vec<Mode>,
    pub paths: Vec<PathResults>,
    /// Reason the eBPF run time is missing, `None` when it was measured.
    pub ebpf_missing: Option<String>,
}

/// Whether the lightwhale daemon ran and managed the container.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Without,
    With,
}

/// The way the load reaches the container.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Route {
    /// From the host to the port published on 127.0.0.1.
    PublishedPort,
    /// From another container on the same network to the container's
    /// address.
    ContainerToContainer,
}

impl Route {
    fn label(self) -> &'static str {
        match self {
            Route::PublishedPort => "published port on 127.0.0.1",
            Route::ContainerToContainer => "container to container",
        }
    }
}

/// Both modes on one route, and their difference.
#[derive(Debug, Serialize)]
pub struct PathResults {
    pub route: Route,
    pub target: SocketAddr,
    pub without: ModeResults,
    pub with: ModeResults,
    /// Change of throughput with the daemon, in percent of the throughput
    /// without it.
    pub throughput_change_percent: f64,
    /// Change of p99 latency with the daemon, in microseconds.
    pub p99_change_us: f64,
    /// Median over the runs of the throughput change from the measurement
    /// without the daemon to the one with it in the same run, which were
    /// taken back to back. Less sensitive than the aggregate to other load
    /// on the machine that comes and goes.
    pub paired_throughput_change_percent: Option<f64>,
    /// Median over the runs of the p99 change within each run.
    pub paired_p99_change_us: Option<f64>,
    /// Run time of lightwhale's programs, summed over the runs with the
    /// statistics on.
    pub ebpf: Vec<ProgramCost>,
    /// Throughput of the runs with the statistics on.
    pub ebpf_rps: Option<f64>,
}

/// One mode on one route, aggregated over its runs.
#[derive(Debug, Serialize, Default)]
pub struct ModeResults {
    pub requests: u64,
    pub errors: u64,
    /// Errors by the step that failed and its cause.
    pub error_kinds: BTreeMap<String, u64>,
    pub seconds: f64,
    /// Requests over seconds of all runs.
    pub rps: f64,
    /// Latency of all requests of all runs.
    pub latency_us: Option<Summary>,
    /// Throughput of the single runs.
    pub run_rps: Option<Summary>,
    /// CPU use of the daemon over the runs, in percent of one core.
    pub daemon_cpu_percent: Option<f64>,
    pub runs: Vec<RunResults>,
    /// Latencies of all runs, not serialized.
    #[serde(skip)]
    latencies_us: Vec<f64>,
}

/// One measurement.
#[derive(Debug, Serialize)]
pub struct RunResults {
    pub requests: u64,
    pub errors: u64,
    pub seconds: f64,
    pub rps: f64,
    pub p50_us: Option<f64>,
    pub p99_us: Option<f64>,
    /// CPU use of the daemon during this run, in percent of one core.
    pub daemon_cpu_percent: Option<f64>,
}

/// Run count and run time of one eBPF program over some period.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ProgramCost {
    pub name: String,
    pub runs: u64,
    pub run_time_ns: u64,
    /// Mean run time, `None` when it did not run.
    pub ns_per_run: Option<f64>,
}

/// Measures the steady state.
pub fn run(bench: &Bench) -> Result<Results> {
    let bpftool_missing = bpftool_missing();
    let network = Network::create("steady")?;
    let port = free_port()?;
    let target = Container::builder("steady-target", HTTP_COUNTER_IMAGE)
        .managed("1h")
        .network(&network)
        .publish("127.0.0.1", port, SERVER_PORT)
        .start()?;
    let client = Container::builder("steady-client", HTTP_COUNTER_IMAGE).network(&network).start()?;

    let published = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    wait_for_http(published, STARTUP_TIMEOUT)?;
    let address = target.address_on(&network)?;
    let client_pid = client.inspect("{{.State.Pid}}")?;
    let netns = PathBuf::from(format!("/proc/{client_pid}/ns/net"));

    let duration = Duration::from_secs(bench.load_seconds);
    let loads = [
        (Route::PublishedPort, Load { target: published, netns: None, duration }),
        (
            Route::ContainerToContainer,
            Load { target: SocketAddr::from((address, SERVER_PORT)), netns: Some(netns), duration },
        ),
    ];
    for (route, load) in &loads {
        let warm_up = load::run(&Load { duration: WARM_UP, ..load.clone() })?;
        println!("warm-up {}: {:.0} requests/s, errors {:?}", route.label(), warm_up.rps(), warm_up.errors);
        if warm_up.ok == 0 {
            bail!("no request to {} ({}) succeeded during the warm-up: {:?}", load.target, route.label(), warm_up.errors);
        }
    }

    let mut measured: Vec<[ModeResults; 2]> = loads.iter().map(|_| Default::default()).collect();
    let mut order = Vec::new();
    let mut daemon: Option<Daemon> = None;
    let ticks = clock_ticks_per_second()?;
    for run in 0..bench.runs {
        let modes = if run % 2 == 0 { [Mode::Without, Mode::With] } else { [Mode::With, Mode::Without] };
        for mode in modes {
            switch_mode(&mut daemon, mode, target.name())?;
            if mode == Mode::Without && bpftool_missing.is_none() {
                let left = program_costs(&[], &programs()?);
                if !left.is_empty() {
                    bail!("eBPF programs of lightwhale are still loaded after the daemon stopped: {left:?}");
                }
            }
            order.push(mode);
            for (index, (route, load)) in loads.iter().enumerate() {
                let daemon_pid = daemon.as_ref().map_or(0, Daemon::pid);
                let daemon_before = (daemon_pid != 0).then(|| process_cpu_ticks(daemon_pid)).transpose()?;
                let outcome = load::run(load)?;
                let daemon_cpu_percent = match daemon_before {
                    Some(before) => {
                        let used = process_cpu_ticks(daemon_pid)? - before;
                        Some(used as f64 / ticks as f64 / outcome.elapsed.as_secs_f64() * 100.0)
                    }
                    None => None,
                };
                println!(
                    "run {}/{} {} {:?}: {:.0} requests/s, {} errors",
                    run + 1,
                    bench.runs,
                    route.label(),
                    mode,
                    outcome.rps(),
                    outcome.error_count()
                );
                // Index 0 contains the runs without the daemon, 1 those with it.
                measured[index][usize::from(mode == Mode::With)].add(outcome, daemon_cpu_percent);
            }
        }
    }

    let mut ebpf: Vec<(Vec<ProgramCost>, Option<f64>)> = loads.iter().map(|_| (Vec::new(), None)).collect();
    if bpftool_missing.is_none() {
        switch_mode(&mut daemon, Mode::With, target.name())?;
        let _stats = BpfStats::enable()?;
        for (index, (route, load)) in loads.iter().enumerate() {
            let (costs, rps) = program_run_time(load)?;
            println!("eBPF run time {}: {costs:?}", route.label());
            ebpf[index] = (costs, Some(rps));
        }
    }
    if let Some(mut daemon) = daemon {
        if daemon.pid() != 0 {
            daemon.stop()?;
        }
    }

    let paths = loads
        .iter()
        .zip(measured)
        .zip(ebpf)
        .map(|(((route, load), [without, with]), (ebpf, ebpf_rps))| {
            let (without, with) = (without.summarize(), with.summarize());
            let (throughput_change_percent, p99_change_us) = changes(&without, &with);
            let (paired_throughput_change_percent, paired_p99_change_us) = paired_changes(&without, &with);
            PathResults {
                route: *route,
                target: load.target,
                without,
                with,
                throughput_change_percent,
                p99_change_us,
                paired_throughput_change_percent,
                paired_p99_change_us,
                ebpf,
                ebpf_rps,
            }
        })
        .collect();
    Ok(Results {
        workers: load::WORKERS,
        load_seconds: bench.load_seconds,
        runs: bench.runs,
        ebpf_runs: if bpftool_missing.is_none() { EBPF_RUNS } else { 0 },
        order,
        paths,
        ebpf_missing: bpftool_missing,
    })
}

/// Runs [`EBPF_RUNS`] loads and returns the run time of lightwhale's
/// programs over them, and the requests per second.
fn program_run_time(load: &Load) -> Result<(Vec<ProgramCost>, f64)> {
    let mut total = Vec::new();
    let (mut requests, mut seconds) = (0, 0.0);
    for _ in 0..EBPF_RUNS {
        let before = programs()?;
        let outcome = load::run(load)?;
        let costs = program_costs(&before, &programs()?);
        if costs.is_empty() {
            bail!("bpftool lists no program named {PROGRAM_PREFIX}* while the daemon runs");
        }
        add_costs(&mut total, &costs);
        requests += outcome.ok;
        seconds += outcome.elapsed.as_secs_f64();
    }
    Ok((total, requests as f64 / seconds))
}

/// Starts or stops the daemon for `mode`. With the daemon, waits until it
/// counts the container's traffic.
fn switch_mode(daemon: &mut Option<Daemon>, mode: Mode, name: &str) -> Result<()> {
    let running = daemon.as_ref().is_some_and(|daemon| daemon.pid() != 0);
    match mode {
        Mode::Without => {
            if let Some(daemon) = daemon.as_mut().filter(|_| running) {
                daemon.stop()?;
            }
        }
        Mode::With => {
            if !running {
                match daemon {
                    Some(daemon) => daemon.restart()?,
                    None => *daemon = Some(Daemon::start(&[])?),
                }
            }
            let daemon = daemon.as_ref().expect("the daemon was started above");
            daemon.wait_for_status(name, "state \"awake\" with a slot", STATE_TIMEOUT, |entry| {
                entry["state"] == "awake" && entry["slot"].is_u64()
            })?;
            thread::sleep(SETTLE);
        }
    }
    Ok(())
}

impl ModeResults {
    /// Adds one run.
    fn add(&mut self, outcome: Outcome, daemon_cpu_percent: Option<f64>) {
        let latency = Summary::of(&outcome.latencies_us);
        let errors = outcome.error_count();
        self.runs.push(RunResults {
            requests: outcome.ok,
            errors,
            seconds: outcome.elapsed.as_secs_f64(),
            rps: outcome.rps(),
            p50_us: latency.map(|summary| summary.median),
            p99_us: latency.map(|summary| summary.p99),
            daemon_cpu_percent,
        });
        self.requests += outcome.ok;
        self.errors += errors;
        for (kind, count) in outcome.errors {
            *self.error_kinds.entry(kind).or_default() += count;
        }
        self.seconds += outcome.elapsed.as_secs_f64();
        self.rps = if self.seconds > 0.0 { self.requests as f64 / self.seconds } else { 0.0 };
        self.latencies_us.extend(outcome.latencies_us);
    }

    /// Summarizes the latencies and throughputs of all runs.
    fn summarize(mut self) -> ModeResults {
        self.latency_us = Summary::of(&self.latencies_us);
        self.latencies_us = Vec::new();
        let run_rps: Vec<f64> = self.runs.iter().map(|run| run.rps).collect();
        self.run_rps = Summary::of(&run_rps);
        // Weighted by the length of each run.
        let (cpu_seconds, seconds) = self
            .runs
            .iter()
            .filter_map(|run| Some((run.daemon_cpu_percent? / 100.0 * run.seconds, run.seconds)))
            .fold((0.0, 0.0), |(cpu, total), (run_cpu, run_seconds)| (cpu + run_cpu, total + run_seconds));
        self.daemon_cpu_percent = (seconds > 0.0).then(|| cpu_seconds / seconds * 100.0);
        self
    }
}

/// Returns the throughput change in percent and the p99 change in
/// microseconds from `without` to `with`.
fn changes(without: &ModeResults, with: &ModeResults) -> (f64, f64) {
    let throughput = if without.rps > 0.0 { (with.rps - without.rps) / without.rps * 100.0 } else { f64::NAN };
    let p99 = match (without.latency_us, with.latency_us) {
        (Some(without), Some(with)) => with.p99 - without.p99,
        _ => f64::NAN,
    };
    (throughput, p99)
}

/// Returns the medians over the runs of the throughput change in percent
/// and the p99 change in microseconds within each run.
fn paired_changes(without: &ModeResults, with: &ModeResults) -> (Option<f64>, Option<f64>) {
    let pairs = without.runs.iter().zip(&with.runs);
    let throughput: Vec<f64> = pairs
        .clone()
        .filter(|(without, _)| without.rps > 0.0)
        .map(|(without, with)| (with.rps - without.rps) / without.rps * 100.0)
        .collect();
    let p99: Vec<f64> = pairs.filter_map(|(without, with)| Some(with.p99_us? - without.p99_us?)).collect();
    (Summary::of(&throughput).map(|summary| summary.median), Summary::of(&p99).map(|summary| summary.median))
}

/// Returns why bpftool cannot be used, or `None` when it can.
fn bpftool_missing() -> Option<String> {
    match Command::new("bpftool").arg("version").output() {
        Ok(output) if output.status.success() => None,
        Ok(output) => Some(format!("`bpftool version` failed: {}", String::from_utf8_lossy(&output.stderr).trim())),
        Err(err) => Some(format!("bpftool is not installed or not in PATH: {err}")),
    }
}

/// Keeps the kernel's eBPF run-time statistics on, and sets the former
/// value back on drop.
struct BpfStats {
    previous: String,
}

impl BpfStats {
    fn enable() -> Result<BpfStats> {
        let previous =
            fs::read_to_string(BPF_STATS_SYSCTL).with_context(|| format!("failed to read {BPF_STATS_SYSCTL}"))?;
        fs::write(BPF_STATS_SYSCTL, "1").with_context(|| format!("failed to write 1 to {BPF_STATS_SYSCTL}"))?;
        Ok(BpfStats { previous: previous.trim().to_string() })
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        if let Err(err) = fs::write(BPF_STATS_SYSCTL, &self.previous) {
            eprintln!("failed to set {BPF_STATS_SYSCTL} back to {}: {err}", self.previous);
        }
    }
}

/// An entry of `bpftool prog show --json`. bpftool leaves out both run
/// statistics of a program whose total run time is 0.
#[derive(Debug, Deserialize, PartialEq)]
struct Program {
    id: u32,
    #[serde(default)]
    name: String,
    #[serde(default)]
    run_time_ns: u64,
    #[serde(default)]
    run_cnt: u64,
}

/// Returns the eBPF programs loaded now.
fn programs() -> Result<Vec<Program>> {
    let output = lightwhale_tests::command::run(Command::new("bpftool").args(["prog", "show", "--json"]))?;
    parse_programs(&output)
}

fn parse_programs(json: &str) -> Result<Vec<Program>> {
    serde_json::from_str(json).with_context(|| format!("`bpftool prog show --json` printed unexpected JSON: {json}"))
}

/// Returns the run count and run time of lightwhale's programs between
/// two listings, summed by name. A program missing from `before` was
/// loaded in between and counts from zero.
fn program_costs(before: &[Program], after: &[Program]) -> Vec<ProgramCost> {
    let mut costs: Vec<ProgramCost> = Vec::new();
    for program in after.iter().filter(|program| program.name.starts_with(PROGRAM_PREFIX)) {
        let earlier = before.iter().find(|earlier| earlier.id == program.id);
        let runs = program.run_cnt.saturating_sub(earlier.map_or(0, |earlier| earlier.run_cnt));
        let run_time_ns = program.run_time_ns.saturating_sub(earlier.map_or(0, |earlier| earlier.run_time_ns));
        add_costs(&mut costs, &[ProgramCost { name: program.name.clone(), runs, run_time_ns, ns_per_run: None }]);
    }
    costs
}

/// Adds `costs` to `total` by program name, keeping the names sorted.
fn add_costs(total: &mut Vec<ProgramCost>, costs: &[ProgramCost]) {
    for cost in costs {
        let entry = match total.iter().position(|entry| entry.name == cost.name) {
            Some(index) => &mut total[index],
            None => {
                total.push(ProgramCost { name: cost.name.clone(), runs: 0, run_time_ns: 0, ns_per_run: None });
                total.sort_by(|a, b| a.name.cmp(&b.name));
                total.iter_mut().find(|entry| entry.name == cost.name).expect("just added")
            }
        };
        entry.runs += cost.runs;
        entry.run_time_ns += cost.run_time_ns;
        entry.ns_per_run = (entry.runs > 0).then(|| entry.run_time_ns as f64 / entry.runs as f64);
    }
}

/// Renders the results as Markdown.
pub fn markdown(results: &Results) -> String {
    let mut text = String::from("## Steady state\n\n");
    text.push_str(&format!(
        "{} closed-loop workers, {} runs of {} s per mode and path, modes alternated; \
         eBPF run time from {} more runs per path with the daemon and kernel.bpf_stats_enabled=1.\n\n",
        results.workers, results.runs, results.load_seconds, results.ebpf_runs
    ));
    text.push_str("| Path | Daemon | Requests/s | Requests/s per run (min–max) | p50 (µs) | p99 (µs) | Errors | Daemon CPU (% of one core) |\n");
    text.push_str("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |\n");
    for path in &results.paths {
        for (mode, measured) in [("without", &path.without), ("with", &path.with)] {
            let spread = measured.run_rps.map_or("–".into(), |rps| format!("{:.0}–{:.0}", rps.min, rps.max));
            let (p50, p99) = measured
                .latency_us
                .map_or(("–".into(), "–".into()), |latency| (format!("{:.0}", latency.median), format!("{:.0}", latency.p99)));
            let daemon_cpu = measured.daemon_cpu_percent.map_or("–".into(), |percent| format!("{percent:.1}"));
            text.push_str(&format!(
                "| {} | {mode} | {:.0} | {spread} | {p50} | {p99} | {} | {daemon_cpu} |\n",
                path.route.label(),
                measured.rps,
                measured.errors
            ));
        }
    }

    text.push_str(
        "\n| Path | Throughput change (%) | Paired median (%) | Target (%) | p99 change (µs) | Paired median (µs) | Target (µs) |\n",
    );
    text.push_str("| --- | ---: | ---: | ---: | ---: | ---: | ---: |\n");
    for path in &results.paths {
        let throughput = |change: f64| format!("{change:+.2} {}", verdict(change >= TARGET_THROUGHPUT_CHANGE_PERCENT));
        let p99 = |change: f64| format!("{change:+.0} {}", verdict(change <= TARGET_P99_CHANGE_US));
        text.push_str(&format!(
            "| {} | {} | {} | ≥ {TARGET_THROUGHPUT_CHANGE_PERCENT:.0} | {} | {} | ≤ +{TARGET_P99_CHANGE_US:.0} |\n",
            path.route.label(),
            throughput(path.throughput_change_percent),
            path.paired_throughput_change_percent.map_or("–".into(), throughput),
            p99(path.p99_change_us),
            path.paired_p99_change_us.map_or("–".into(), p99),
        ));
    }

    text.push('\n');
    match &results.ebpf_missing {
        Some(reason) => text.push_str(&format!("No eBPF run time: {reason}.\n")),
        None => {
            text.push_str("| Path | Requests/s | Program | Runs | Run time (ms) | Per run (ns) | Target (ns) |\n");
            text.push_str("| --- | ---: | --- | ---: | ---: | ---: | ---: |\n");
            for path in &results.paths {
                let rps = path.ebpf_rps.map_or("–".into(), |rps| format!("{rps:.0}"));
                for cost in &path.ebpf {
                    let per_run = cost
                        .ns_per_run
                        .map_or("–".into(), |ns| format!("{ns:.0} {}", verdict(ns <= TARGET_NS_PER_RUN)));
                    text.push_str(&format!(
                        "| {} | {rps} | {} | {} | {:.1} | {per_run} | ≤ {TARGET_NS_PER_RUN:.0} |\n",
                        path.route.label(),
                        cost.name,
                        cost.runs,
                        cost.run_time_ns as f64 / 1e6
                    ));
                }
            }
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    const LISTING: &str = r#"[{"id":7,"type":"cgroup_skb","tag":"6deef7357e7b4530","gpl_compatible":true,"loaded_at":1700000000,"uid":0,"orphaned":false,"bytes_xlated":64,"jited":true,"bytes_jited":54,"bytes_memlock":4096},
        {"id":41,"type":"sched_cls","name":"lw_count_rx","tag":"aa","gpl_compatible":true,"run_time_ns":5000,"run_cnt":50},
        {"id":42,"type":"sched_cls","name":"lw_count_tx","tag":"bb","gpl_compatible":true,"run_time_ns":900,"run_cnt":10},
        {"id":43,"type":"sk_lookup","name":"lw_steer","tag":"cc","gpl_compatible":true}]"#;

    #[test]
    fn parses_bpftool_listings() {
        let programs = parse_programs(LISTING).unwrap();
        assert_eq!(programs.len(), 4);
        assert_eq!(programs[0], Program { id: 7, name: String::new(), run_time_ns: 0, run_cnt: 0 });
        assert_eq!(programs[1], Program { id: 41, name: "lw_count_rx".into(), run_time_ns: 5000, run_cnt: 50 });
        assert_eq!(programs[3].run_cnt, 0);
    }

    #[test]
    fn computes_program_costs_between_listings() {
        let before = parse_programs(LISTING).unwrap();
        let mut after = parse_programs(LISTING).unwrap();
        after[1].run_cnt += 100;
        after[1].run_time_ns += 12_000;
        after[3].run_cnt = 4;
        after[3].run_time_ns = 200;
        // A program loaded between the listings counts from zero.
        after.push(Program { id: 44, name: "lw_count_rx".into(), run_time_ns: 8000, run_cnt: 100 });
        let costs = program_costs(&before, &after);
        assert_eq!(
            costs,
            vec![
                ProgramCost { name: "lw_count_rx".into(), runs: 200, run_time_ns: 20_000, ns_per_run: Some(100.0) },
                ProgramCost { name: "lw_count_tx".into(), runs: 0, run_time_ns: 0, ns_per_run: None },
                ProgramCost { name: "lw_steer".into(), runs: 4, run_time_ns: 200, ns_per_run: Some(50.0) },
            ]
        );
    }

    #[test]
    fn sums_costs_over_runs() {
        let mut total = Vec::new();
        let cost = |runs, run_time_ns| ProgramCost { name: "lw_steer".into(), runs, run_time_ns, ns_per_run: None };
        add_costs(&mut total, &[cost(10, 1000)]);
        add_costs(&mut total, &[cost(30, 1000)]);
        assert_eq!(total, vec![ProgramCost { name: "lw_steer".into(), runs: 40, run_time_ns: 2000, ns_per_run: Some(50.0) }]);
    }

    #[test]
    fn compares_modes() {
        let mut without = ModeResults::default();
        let mut with = ModeResults::default();
        let outcome = |ok, latency: f64| Outcome {
            ok,
            elapsed: Duration::from_secs(1),
            latencies_us: vec![latency; ok as usize],
            ..Outcome::default()
        };
        without.add(outcome(1000, 100.0), None);
        with.add(outcome(990, 130.0), Some(0.5));
        with.add(outcome(990, 130.0), Some(1.5));
        let (without, with) = (without.summarize(), with.summarize());
        assert_eq!(without.run_rps.unwrap().median, 1000.0);
        assert_eq!(without.daemon_cpu_percent, None);
        assert_eq!(with.daemon_cpu_percent, Some(1.0));
        let (throughput, p99) = changes(&without, &with);
        assert!((throughput - -1.0).abs() < 1e-9);
        assert!((p99 - 30.0).abs() < 1e-9);
        let (throughput, p99) = paired_changes(&without, &with);
        assert!((throughput.unwrap() - -1.0).abs() < 1e-9);
        assert!((p99.unwrap() - 30.0).abs() < 1e-9);
    }
}
