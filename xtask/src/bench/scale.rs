//! The daemon's own CPU and memory with many managed containers.
//!
//! The containers are managed with a 1-hour idle timeout, so they stay
//! awake and the daemon only watches them: what is measured is the cost of
//! watching, with no checkpoint or restore in the window.

use std::collections::HashSet;
use std::fs;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use lightwhale_tests::{wait_until, Container, Daemon, HTTP_COUNTER_IMAGE};
use serde::Serialize;

use super::machine::meminfo_kib;
use super::stats::Summary;
use super::{verdict, Bench};

/// Threads that run `docker run` and `docker rm` at the same time.
const DOCKER_THREADS: usize = 4;

/// Wait after every container is listed awake, before sampling starts.
const SETTLE: Duration = Duration::from_secs(10);

/// Length of the sampling window.
const SAMPLE: Duration = Duration::from_secs(60);

/// Interval between two memory samples.
const MEMORY_INTERVAL: Duration = Duration::from_secs(1);

/// Length of the intervals whose CPU use is recorded one by one. At the
/// usual 100 clock ticks per second, one tick is 1% of a core over one
/// second, so shorter intervals would be too coarse for a target of 1%.
const CPU_INTERVAL: Duration = Duration::from_secs(10);

/// Upper bound for the daemon to list every container awake, per container
/// on top of a fixed minute.
const READY_TIMEOUT_PER_CONTAINER: Duration = Duration::from_millis(500);

/// Target for the daemon's CPU use: under 1% of one core.
const TARGET_CPU_PERCENT: f64 = 1.0;
/// Target for the daemon's resident memory: under 40 MiB.
const TARGET_RSS_MIB: f64 = 40.0;

/// Results of the footprint section.
#[derive(Debug, Serialize)]
pub struct Results {
    pub containers: usize,
    /// Time to start the containers with `docker run`, several at once.
    pub containers_start_s: f64,
    /// Time from starting the daemon until `status` succeeded.
    pub daemon_status_s: f64,
    /// Time from starting the daemon until it listed every container
    /// awake.
    pub daemon_ready_s: f64,
    pub settle_s: f64,
    /// Length of the sampling window.
    pub sample_s: f64,
    pub clock_ticks_per_second: u64,
    /// CPU time of the daemon's threads in the window, in clock ticks.
    pub cpu_ticks: u64,
    /// CPU use over the window, in percent of one core.
    pub cpu_percent: f64,
    /// CPU time of waited-for child processes in the window, in percent of
    /// one core.
    pub children_cpu_percent: f64,
    /// CPU use of consecutive intervals of [`CPU_INTERVAL`], in percent of
    /// one core.
    pub cpu_percent_per_interval: Vec<f64>,
    /// VmRSS of the samples, in KiB.
    pub rss_kib: Vec<u64>,
    /// VmRSS over the window, in MiB.
    pub rss_mib: Option<Summary>,
    /// VmHWM at the end of the window, in MiB: the peak since start.
    pub hwm_mib: f64,
    /// Containers listed awake after the window.
    pub awake_after: usize,
}

/// Measures the daemon's footprint.
pub fn run(bench: &Bench) -> Result<Results> {
    // Waiting for another process's benchmark or tests is no part of the
    // start time.
    lightwhale_tests::host_lock::hold()?;
    let started = Instant::now();
    let fleet = start_containers(bench.containers)?;
    let containers_start = started.elapsed();
    println!("started {} containers in {containers_start:.1?}", fleet.0.len());
    let names: HashSet<&str> = fleet.0.iter().map(Container::name).collect();

    let started = Instant::now();
    // NOTE: Daemon::start gives up when `status` fails for 30 s, and the
    // first `status` succeeded only after the daemon had listed every
    // container, about 28 ms per container on a 2-CPU machine. So about
    // 1000 containers or more may time out.
    let daemon = Daemon::start(&[])?;
    let daemon_status = started.elapsed();
    let timeout = Duration::from_secs(60) + READY_TIMEOUT_PER_CONTAINER * bench.containers as u32;
    let mut awake = 0;
    wait_until(&format!("the daemon to list {} containers awake", names.len()), timeout, || {
        awake = awake_count(&daemon, &names)?;
        Ok((awake == names.len()).then_some(()))
    })
    .with_context(|| format!("{awake} of {} containers were listed awake", names.len()))?;
    let daemon_ready = started.elapsed();
    println!("the daemon listed {} containers awake after {daemon_ready:.1?}", names.len());

    thread::sleep(SETTLE);
    let pid = daemon.pid();
    let samples = sample(pid)?;
    let awake_after = awake_count(&daemon, &names)?;

    let ticks = clock_ticks_per_second()?;
    let seconds = samples.elapsed.as_secs_f64();
    let percent = |ticks_used: u64| ticks_used as f64 / ticks as f64 / seconds * 100.0;
    let cpu_ticks = samples.last.own - samples.first.own;
    let interval_seconds = CPU_INTERVAL.as_secs_f64();
    let cpu_percent_per_interval = samples
        .cpu_intervals
        .windows(2)
        .map(|pair| (pair[1].own - pair[0].own) as f64 / ticks as f64 / interval_seconds * 100.0)
        .collect();
    let rss_mib: Vec<f64> = samples.rss_kib.iter().map(|&kib| kib as f64 / 1024.0).collect();
    Ok(Results {
        containers: names.len(),
        containers_start_s: containers_start.as_secs_f64(),
        daemon_status_s: daemon_status.as_secs_f64(),
        daemon_ready_s: daemon_ready.as_secs_f64(),
        settle_s: SETTLE.as_secs_f64(),
        sample_s: seconds,
        clock_ticks_per_second: ticks,
        cpu_ticks,
        cpu_percent: percent(cpu_ticks),
        children_cpu_percent: percent(samples.last.children - samples.first.children),
        cpu_percent_per_interval,
        rss_mib: Summary::of(&rss_mib),
        rss_kib: samples.rss_kib,
        hwm_mib: samples.hwm_kib as f64 / 1024.0,
        awake_after,
    })
}

/// Containers removed with `docker rm --force` on drop, several at once.
struct Fleet(Vec<Container>);

impl Drop for Fleet {
    fn drop(&mut self) {
        let containers = std::mem::take(&mut self.0);
        let mut shares: Vec<Vec<Container>> = (0..DOCKER_THREADS).map(|_| Vec::new()).collect();
        for (index, container) in containers.into_iter().enumerate() {
            shares[index % DOCKER_THREADS].push(container);
        }
        // Each thread drops its share, which removes those containers.
        thread::scope(|scope| {
            for share in shares {
                scope.spawn(move || drop(share));
            }
        });
    }
}

/// Starts `count` managed http-counter containers on the default bridge,
/// [`DOCKER_THREADS`] at a time. On failure, those started are removed.
fn start_containers(count: usize) -> Result<Fleet> {
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let fleet = Mutex::new(Fleet(Vec::with_capacity(count)));
    let first_error = Mutex::new(None);
    thread::scope(|scope| {
        for _ in 0..DOCKER_THREADS {
            scope.spawn(|| {
                while !failed.load(Ordering::Relaxed) {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    if index >= count {
                        break;
                    }
                    let started = Container::builder(&format!("scale-{index}"), HTTP_COUNTER_IMAGE).managed("1h").start();
                    match started {
                        Ok(container) => fleet.lock().unwrap_or_else(|err| err.into_inner()).0.push(container),
                        Err(err) => {
                            failed.store(true, Ordering::Relaxed);
                            first_error.lock().unwrap_or_else(|err| err.into_inner()).get_or_insert(err);
                        }
                    }
                }
            });
        }
    });
    let fleet = fleet.into_inner().unwrap_or_else(|err| err.into_inner());
    match first_error.into_inner().unwrap_or_else(|err| err.into_inner()) {
        Some(err) => Err(err.context(format!("failed to start {count} containers"))),
        None => Ok(fleet),
    }
}

/// Returns how many of `names` the daemon lists awake with a slot.
fn awake_count(daemon: &Daemon, names: &HashSet<&str>) -> Result<usize> {
    let status = daemon.status()?;
    let entries = status["containers"].as_array().ok_or_else(|| anyhow!("status has no `containers` array"))?;
    Ok(entries
        .iter()
        .filter(|entry| {
            let name = entry["name"].as_str().unwrap_or_default().trim_start_matches('/');
            names.contains(name) && entry["state"] == "awake" && entry["slot"].is_u64()
        })
        .count())
}

/// CPU time of a process, in clock ticks.
#[derive(Clone, Copy, Debug, PartialEq)]
struct CpuTicks {
    /// User and system time of its threads.
    own: u64,
    /// User and system time of its waited-for children.
    children: u64,
}

/// Samples taken over the sampling window.
struct Samples {
    first: CpuTicks,
    last: CpuTicks,
    elapsed: Duration,
    /// CPU time at the start and at the end of each [`CPU_INTERVAL`].
    cpu_intervals: Vec<CpuTicks>,
    rss_kib: Vec<u64>,
    hwm_kib: u64,
}

/// Samples the CPU time and memory of process `pid` for [`SAMPLE`].
fn sample(pid: u32) -> Result<Samples> {
    if pid == 0 {
        bail!("the daemon is not running");
    }
    let stat_path = format!("/proc/{pid}/stat");
    let status_path = format!("/proc/{pid}/status");
    let read_cpu = || -> Result<CpuTicks> {
        let stat = fs::read_to_string(&stat_path).with_context(|| format!("failed to read {stat_path}"))?;
        parse_stat(&stat)
    };
    let read_memory = || -> Result<(u64, u64)> {
        let status = fs::read_to_string(&status_path).with_context(|| format!("failed to read {status_path}"))?;
        let field = |name| meminfo_kib(&status, name).ok_or_else(|| anyhow!("{status_path} has no {name}"));
        Ok((field("VmRSS")?, field("VmHWM")?))
    };

    let first = read_cpu()?;
    let started = Instant::now();
    let mut cpu_intervals = vec![first];
    let mut rss_kib = Vec::new();
    let every = (CPU_INTERVAL.as_millis() / MEMORY_INTERVAL.as_millis()).max(1) as u32;
    let steps = (SAMPLE.as_millis() / MEMORY_INTERVAL.as_millis()) as u32;
    for step in 1..=steps {
        // Sleeping until a fixed point in time keeps the intervals from
        // growing by the time the reads take.
        thread::sleep((started + MEMORY_INTERVAL * step).saturating_duration_since(Instant::now()));
        if step.is_multiple_of(every) {
            cpu_intervals.push(read_cpu()?);
        }
        rss_kib.push(read_memory()?.0);
    }
    let last = read_cpu()?;
    let elapsed = started.elapsed();
    let (_, hwm_kib) = read_memory()?;
    Ok(Samples { first, last, elapsed, cpu_intervals, rss_kib, hwm_kib })
}

/// Returns the user and system time of process `pid`'s threads, in clock
/// ticks.
pub(super) fn process_cpu_ticks(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/stat");
    let stat = fs::read_to_string(&path).with_context(|| format!("failed to read {path}"))?;
    Ok(parse_stat(&stat)?.own)
}

/// Parses utime, stime, cutime and cstime from `/proc/<pid>/stat`.
fn parse_stat(stat: &str) -> Result<CpuTicks> {
    // The command name in parentheses may contain spaces and parentheses,
    // so the fields are counted from the last `)`. After it come the
    // fields from the third on: state, ppid, ..., utime is the 14th.
    let (_, rest) = stat.rsplit_once(')').ok_or_else(|| anyhow!("unexpected /proc stat line {stat:?}"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |number: usize| -> Result<u64> {
        let value = fields.get(number - 3).ok_or_else(|| anyhow!("/proc stat line has no field {number}: {stat:?}"))?;
        value.parse().with_context(|| format!("invalid field {number} {value:?} in /proc stat line"))
    };
    Ok(CpuTicks { own: field(14)? + field(15)?, children: field(16)? + field(17)? })
}

/// Returns the clock ticks per second that `/proc/<pid>/stat` counts in.
pub(super) fn clock_ticks_per_second() -> Result<u64> {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(ticks).ok().filter(|&ticks| ticks > 0).ok_or_else(|| anyhow!("sysconf(_SC_CLK_TCK) returned {ticks}"))
}

/// Renders the results as Markdown.
pub fn markdown(results: &Results) -> String {
    let mut text = String::from("## Daemon footprint\n\n");
    text.push_str(&format!(
        "{} managed awake container{}, sampled for {:.0} s after {:.0} s of settling.\n\n",
        results.containers,
        if results.containers == 1 { "" } else { "s" },
        results.sample_s,
        results.settle_s
    ));
    text.push_str("| Containers | Ready (s) | CPU (% of one core) | Target (%) | VmRSS median (MiB) | VmRSS max (MiB) | VmHWM (MiB) | Target (MiB) |\n");
    text.push_str("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n");
    let (rss_median, rss_max) = match results.rss_mib {
        Some(rss) => (format!("{:.1}", rss.median), format!("{:.1} {}", rss.max, verdict(rss.max < TARGET_RSS_MIB))),
        None => ("–".into(), "–".into()),
    };
    text.push_str(&format!(
        "| {} | {:.1} | {:.2} {} | < {TARGET_CPU_PERCENT:.0} | {rss_median} | {rss_max} | {:.1} | < {TARGET_RSS_MIB:.0} |\n",
        results.containers,
        results.daemon_ready_s,
        results.cpu_percent,
        verdict(results.cpu_percent < TARGET_CPU_PERCENT),
        results.hwm_mib,
    ));
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_stat() {
        let stat = "4242 (lightwhale) S 1 4242 4242 0 -1 4194560 2100 0 3 0 153 47 5 6 20 0 9 0 123456 80000000 3000 18446744073709551615 1 1 0 0 0 0 0 4096 17410 0 0 0 17 1 0 0 0 0 0\n";
        assert_eq!(parse_stat(stat).unwrap(), CpuTicks { own: 200, children: 11 });
    }

    #[test]
    fn parses_proc_stat_with_odd_command_names() {
        let stat = "77 (a) b (c) R 1 77 77 0 -1 0 0 0 0 0 10 20 0 0 20 0 1 0 5 0 0\n";
        assert_eq!(parse_stat(stat).unwrap(), CpuTicks { own: 30, children: 0 });
    }

    #[test]
    fn rejects_short_proc_stat() {
        assert!(parse_stat("1 (init) S 0 1").is_err());
    }

    #[test]
    fn reads_proc_status_fields() {
        let status = "Name:\tlightwhale\nVmHWM:\t   30512 kB\nVmRSS:\t   28100 kB\nThreads:\t5\n";
        assert_eq!(meminfo_kib(status, "VmRSS"), Some(28_100));
        assert_eq!(meminfo_kib(status, "VmHWM"), Some(30_512));
    }

    #[test]
    fn clock_ticks_positive() {
        assert!(clock_ticks_per_second().unwrap() > 0);
    }
}
