//! Wake and sleep of containers of several memory sizes, measured three
//! ways in the same run, one run of each in turn so that drift affects all
//! three alike:
//!
//! - lightwhale: `lightwhale sleep`, then a client's connection wakes the
//!   container;
//! - plain Docker: `docker checkpoint create`, then `docker start
//!   --checkpoint` and a client polling until it gets a response;
//! - cold start: `docker start` of a stopped container, without checkpoint.

use std::fs;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use lightwhale_tests::restore_copies::restore_copies_of;
use lightwhale_tests::{command::run as run_command, free_port, parse_hits, Container, Daemon, Network, HTTP_COUNTER_IMAGE};
use serde::Serialize;
use serde_json::Value;

use super::client::{self, micros};
use super::machine::meminfo_kib;
use super::stats::Summary;
use super::Bench;

/// Upper bound for one wake, long enough for a restore of 1 GiB.
const WAKE_TIMEOUT: Duration = Duration::from_secs(120);

/// Pause after a sleep before the host's memory is read, so that the
/// kernel has finished freeing the container's pages.
const SETTLE: Duration = Duration::from_secs(1);

/// Container port of the http-counter workload.
const PORT: u16 = 8080;

/// Results of the wake section: one entry per memory size.
#[derive(Debug, Serialize)]
pub struct Results {
    pub sizes: Vec<SizeResults>,
}

/// Samples of one memory size.
#[derive(Debug, Serialize)]
pub struct SizeResults {
    pub size_mib: u64,
    pub lightwhale: Vec<LightwhaleRun>,
    pub docker: Vec<DockerRun>,
    /// Errors of plain Docker checkpoints or restores, which are retried in
    /// the next run instead of ending the benchmark.
    pub docker_failures: Vec<String>,
    pub cold: Vec<ColdRun>,
}

/// One sleep and wake through lightwhale. Times of the wake are in
/// milliseconds from the moment the client started to connect.
#[derive(Debug, Serialize)]
pub struct LightwhaleRun {
    /// `lightwhale sleep` from request to response.
    pub sleep_ms: f64,
    /// The checkpoint call alone, as the daemon reports it.
    pub checkpoint_ms: Option<f64>,
    /// Time the container's freezer cgroup stayed frozen. CRIU thaws it
    /// once it has seized the processes with ptrace, and they stay stopped
    /// until the dump ends.
    pub frozen_ms: Option<f64>,
    /// Size of the checkpoint on disk.
    pub checkpoint_bytes: Option<u64>,
    /// The container's memory use before the sleep, as the daemon reports it.
    pub memory_use_bytes: Option<u64>,
    /// Private memory of the container before the sleep: its cgroup's
    /// resident anonymous memory plus its containerd-shim's private pages.
    pub private_before_bytes: Option<u64>,
    /// The same for the stand-in that replaces it, 0 without a stand-in.
    pub stand_in_private_bytes: Option<u64>,
    /// Growth of the host's MemAvailable over the sleep. Other activity on
    /// the host, such as page cache freed by deleted checkpoints, shows up
    /// in it.
    pub available_gain_bytes: i64,
    /// Growth of the host's MemFree over the sleep; lower than the above
    /// by the checkpoint's pages in the page cache.
    pub free_gain_bytes: i64,
    /// The daemon started the wake.
    pub held_ms: Option<f64>,
    /// The stand-in was gone and the restore requested.
    pub restore_requested_ms: Option<f64>,
    /// Docker's restore call returned.
    pub restored_ms: Option<f64>,
    /// The container's port accepted a connection.
    pub accepting_ms: Option<f64>,
    /// Duration of CRIU's restore, from its statistics file.
    pub criu_restore_ms: Option<f64>,
    /// The client's handshake completed.
    pub connected_ms: f64,
    /// The first response byte reached the client.
    pub first_byte_ms: f64,
    /// The hit counter continued where it was, so memory state survived.
    pub state_intact: bool,
}

/// One `docker checkpoint create` and `docker start --checkpoint`.
#[derive(Debug, Serialize)]
pub struct DockerRun {
    /// `docker checkpoint create` with exit.
    pub checkpoint_ms: f64,
    /// `docker start --checkpoint` until it returned.
    pub restored_ms: f64,
    /// Duration of CRIU's restore, from its statistics file.
    pub criu_restore_ms: Option<f64>,
    /// From the restore request to the first response byte of a client
    /// that retried until the port responded.
    pub first_byte_ms: f64,
}

/// One `docker start` without a checkpoint.
#[derive(Debug, Serialize)]
pub struct ColdRun {
    /// `docker start` until it returned.
    pub started_ms: f64,
    /// From the start request to the first response byte.
    pub first_byte_ms: f64,
}

/// The two containers of one size and the addresses of their ports.
struct Workloads {
    managed: Container,
    managed_address: SocketAddr,
    plain: Container,
    plain_address: SocketAddr,
}

/// Measures every size.
pub fn run(bench: &Bench) -> Result<Results> {
    let docker_root = PathBuf::from(run_command(Command::new("docker").args(["info", "--format", "{{.DockerRootDir}}"]))?.trim());
    // A user-defined network, as Compose creates, so that every sleep also
    // starts a stand-in and every wake removes it.
    let network = Network::create("bench-wake")?;
    let daemon = Daemon::start(&[])?;
    let mut results = Results { sizes: Vec::new() };
    for &size_mib in &bench.sizes_mib {
        println!("wake: {size_mib} MiB, {} runs", bench.runs);
        let workloads = start_workloads(&daemon, &network, size_mib, bench.runtime.as_deref())?;
        let mut size = SizeResults {
            size_mib,
            lightwhale: Vec::new(),
            docker: Vec::new(),
            docker_failures: Vec::new(),
            cold: Vec::new(),
        };
        for run in 0..bench.runs {
            let lightwhale = lightwhale_run(&daemon, &workloads, &docker_root)?;
            let docker = match docker_run(&workloads, &docker_root, run) {
                Ok(docker) => {
                    let text = format!("{:.0} ms", docker.first_byte_ms);
                    size.docker.push(docker);
                    text
                }
                Err(error) => {
                    println!("  plain Docker run failed: {error:#}");
                    size.docker_failures.push(format!("{error:#}"));
                    "failed".into()
                }
            };
            let cold = cold_run(&workloads)?;
            allocate(workloads.plain_address, size_mib)?;
            println!(
                "  run {}: lightwhale sleep {:.0} ms, first byte {:.0} ms; docker {docker}; cold {:.0} ms",
                run + 1,
                lightwhale.sleep_ms,
                lightwhale.first_byte_ms,
                cold.first_byte_ms
            );
            size.lightwhale.push(lightwhale);
            size.cold.push(cold);
        }
        results.sizes.push(size);
    }
    Ok(results)
}

/// Starts a managed and an unmanaged http-counter that each hold
/// `size_mib` of resident memory. The managed one runs under `runtime`
/// when it is set.
fn start_workloads(daemon: &Daemon, network: &Network, size_mib: u64, runtime: Option<&str>) -> Result<Workloads> {
    let managed_port = free_port()?;
    let plain_port = free_port()?;
    let mut managed = Container::builder(&format!("bench-lw-{size_mib}"), HTTP_COUNTER_IMAGE)
        .managed("1h")
        .network(network)
        .publish("127.0.0.1", managed_port, PORT);
    if let Some(runtime) = runtime {
        managed = managed.runtime(runtime);
    }
    let managed = managed.start()?;
    let plain = Container::builder(&format!("bench-plain-{size_mib}"), HTTP_COUNTER_IMAGE)
        .network(network)
        .publish("127.0.0.1", plain_port, PORT)
        .start()?;
    let workloads = Workloads {
        managed_address: SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, managed_port)),
        plain_address: SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, plain_port)),
        managed,
        plain,
    };
    wait_for_answer(workloads.managed_address, WAKE_TIMEOUT)?;
    wait_for_answer(workloads.plain_address, WAKE_TIMEOUT)?;
    daemon.wait_for_state(workloads.managed.name(), "awake", WAKE_TIMEOUT)?;
    allocate(workloads.managed_address, size_mib)?;
    allocate(workloads.plain_address, size_mib)?;
    Ok(workloads)
}

/// Makes the workload allocate and touch `size_mib` MiB; one MiB fewer,
/// because the process itself already uses about that much.
fn allocate(address: SocketAddr, size_mib: u64) -> Result<()> {
    let extra = size_mib.saturating_sub(1);
    if extra > 0 {
        client::get(address, &format!("/alloc?mib={extra}"), WAKE_TIMEOUT)?;
    }
    Ok(())
}

/// Sleeps and wakes the managed workload through lightwhale.
fn lightwhale_run(daemon: &Daemon, workloads: &Workloads, docker_root: &Path) -> Result<LightwhaleRun> {
    let container = &workloads.managed;
    let hits = parse_hits(client::get(workloads.managed_address, "/", WAKE_TIMEOUT)?.body())?;

    // The daemon deletes the previous checkpoint in the background after a
    // wake; its page cache must be gone before the host's memory is read.
    wait_for_one_checkpoint(container)?;
    let private_before_bytes = private_memory(container.id());
    flush_dirty_pages()?;
    let before = memory_now()?;
    let freezer = FreezerWatch::start(container.id());
    let started = Instant::now();
    daemon.cli(&["sleep", container.name()])?;
    let sleep_ms = started.elapsed().as_secs_f64() * 1e3;
    let frozen_ms = freezer.stop();
    thread::sleep(SETTLE);
    let after = memory_now()?;
    let slept = status_of(daemon, container.name())?;
    let stand_in_private_bytes = match slept["stand_in"].as_str() {
        Some(stand_in) => private_memory(stand_in),
        None => Some(0),
    };

    let timed = client::get(workloads.managed_address, "/", WAKE_TIMEOUT)?;
    let woken = status_of(daemon, container.name())?;
    let phases = &woken["last_wake_phases"];
    // Wake phases relative to the client's start, in milliseconds.
    let offset_ms = phases["started_unix_us"]
        .as_u64()
        .map(|started| (started as f64 - timed.started_unix_us as f64) / 1e3);
    let phase = |name: &str| Some(offset_ms? + phases[name].as_f64()? / 1e3);

    Ok(LightwhaleRun {
        sleep_ms,
        checkpoint_ms: slept["last_sleep_ms"].as_f64(),
        frozen_ms,
        checkpoint_bytes: slept["checkpoint"].as_str().and_then(|checkpoint| checkpoint_bytes(docker_root, container.id(), checkpoint)),
        memory_use_bytes: slept["memory_freed_bytes"].as_u64(),
        private_before_bytes,
        stand_in_private_bytes,
        available_gain_bytes: after.available as i64 - before.available as i64,
        free_gain_bytes: after.free as i64 - before.free as i64,
        held_ms: offset_ms,
        restore_requested_ms: phase("restore_requested_us"),
        restored_ms: phase("restored_us"),
        accepting_ms: phase("accepting_us"),
        criu_restore_ms: criu_restore_ms(docker_root, container.id()),
        connected_ms: timed.connected_us / 1e3,
        first_byte_ms: timed.first_byte_us / 1e3,
        state_intact: parse_hits(timed.body())? == hits + 1,
    })
}

/// Checkpoints and restores the unmanaged workload with plain Docker
/// commands.
fn docker_run(workloads: &Workloads, docker_root: &Path, run: usize) -> Result<DockerRun> {
    let checkpoint = format!("bench-{run}");
    let result = checkpoint_and_restore(workloads, docker_root, &checkpoint);
    if result.is_err() {
        // A failed checkpoint may leave a partial one behind.
        let _ = run_command(Command::new("docker").args(["checkpoint", "rm", workloads.plain.id(), &checkpoint]));
    }
    result
}

/// Runs `docker checkpoint create` and `docker start --checkpoint` on the
/// unmanaged workload and times them.
fn checkpoint_and_restore(workloads: &Workloads, docker_root: &Path, checkpoint: &str) -> Result<DockerRun> {
    let container = &workloads.plain;
    let checkpoint = checkpoint.to_owned();
    flush_dirty_pages()?;
    let started = Instant::now();
    run_command(Command::new("docker").args(["checkpoint", "create", container.id(), &checkpoint]))?;
    let checkpoint_ms = started.elapsed().as_secs_f64() * 1e3;

    let started = Instant::now();
    run_command(Command::new("docker").args(["start", "--checkpoint", &checkpoint, container.id()]))?;
    let restored_ms = started.elapsed().as_secs_f64() * 1e3;
    wait_for_answer(workloads.plain_address, WAKE_TIMEOUT)?;
    let first_byte_ms = started.elapsed().as_secs_f64() * 1e3;
    run_command(Command::new("docker").args(["checkpoint", "rm", container.id(), &checkpoint]))?;
    remove_restore_copies(container.id());
    Ok(DockerRun { checkpoint_ms, restored_ms, criu_restore_ms: criu_restore_ms(docker_root, container.id()), first_byte_ms })
}

/// Writes out the pages that earlier steps left dirty, such as the other
/// path's checkpoint images, so that a timed checkpoint does not wait for
/// their writeback.
fn flush_dirty_pages() -> Result<()> {
    run_command(&mut Command::new("sync"))?;
    Ok(())
}

/// Removes the copies of the container's checkpoints that containerd
/// extracted for a restore and left there. The daemon does the same for
/// the containers it restores.
fn remove_restore_copies(id: &str) {
    let copies = match restore_copies_of(id) {
        Ok(copies) => copies,
        Err(error) => {
            println!("  cannot list containerd's copies of checkpoints: {error:#}");
            return;
        }
    };
    for path in copies {
        if let Err(error) = fs::remove_dir_all(&path) {
            println!("  cannot remove {}: {error}", path.display());
        }
    }
}

/// Stops the unmanaged workload and starts it again without a checkpoint.
fn cold_run(workloads: &Workloads) -> Result<ColdRun> {
    let container = &workloads.plain;
    // A failed plain Docker run may have left it stopped already.
    if container.is_running()? {
        run_command(Command::new("docker").args(["kill", container.id()]))?;
    }
    let started = Instant::now();
    run_command(Command::new("docker").args(["start", container.id()]))?;
    let started_ms = started.elapsed().as_secs_f64() * 1e3;
    wait_for_answer(workloads.plain_address, WAKE_TIMEOUT)?;
    let first_byte_ms = started.elapsed().as_secs_f64() * 1e3;
    Ok(ColdRun { started_ms, first_byte_ms })
}

/// Sends `GET /` until a response arrives, retrying refused and reset
/// connections every millisecond.
fn wait_for_answer(address: SocketAddr, limit: Duration) -> Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        match client::get(address, "/", limit) {
            Ok(_) => return Ok(()),
            Err(error) if Instant::now() >= deadline => return Err(error.context(format!("no response from {address} within {limit:?}"))),
            Err(_) => thread::sleep(Duration::from_millis(1)),
        }
    }
}

/// Waits until the container has at most one checkpoint left.
fn wait_for_one_checkpoint(container: &Container) -> Result<()> {
    let deadline = Instant::now() + WAKE_TIMEOUT;
    while container.checkpoints()?.len() > 1 {
        if Instant::now() >= deadline {
            bail!("{} still has more than one checkpoint after {WAKE_TIMEOUT:?}", container.name());
        }
        thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// Returns the daemon's status entry of a container.
fn status_of(daemon: &Daemon, name: &str) -> Result<Value> {
    daemon.container_status(name)?.ok_or_else(|| anyhow!("the daemon does not list {name}"))
}

/// The host's free and available memory, in bytes.
struct Memory {
    available: u64,
    free: u64,
}

fn memory_now() -> Result<Memory> {
    let meminfo = fs::read_to_string("/proc/meminfo").context("failed to read /proc/meminfo")?;
    let field = |name| meminfo_kib(&meminfo, name).map(|kib| kib * 1024).ok_or_else(|| anyhow!("/proc/meminfo has no {name}"));
    Ok(Memory { available: field("MemAvailable")?, free: field("MemFree")? })
}

/// Returns the private memory of a running container: the resident
/// anonymous memory of its memory cgroup (cgroup v1, as Docker 20.10 sets
/// it up here) plus the private pages of its containerd-shim, the parent of
/// its first process.
fn private_memory(id: &str) -> Option<u64> {
    let full_id = run_command(Command::new("docker").args(["inspect", "--format", "{{.Id}} {{.State.Pid}}", id])).ok()?;
    let (full_id, pid) = full_id.trim().split_once(' ')?;
    let stat = fs::read_to_string(format!("/sys/fs/cgroup/memory/docker/{full_id}/memory.stat")).ok()?;
    let anonymous = stat.lines().find_map(|line| line.strip_prefix("total_rss ")?.trim().parse::<u64>().ok())?;
    let process_stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The parent pid is the second field after the command, which ends
    // with the last `)`.
    let shim = process_stat.rsplit_once(')')?.1.split_whitespace().nth(1)?;
    let rollup = fs::read_to_string(format!("/proc/{shim}/smaps_rollup")).ok()?;
    let private_kib: u64 = rollup
        .lines()
        .filter(|line| line.starts_with("Private_Clean:") || line.starts_with("Private_Dirty:"))
        .filter_map(|line| line.split_whitespace().nth(1)?.parse::<u64>().ok())
        .sum();
    Some(anonymous + private_kib * 1024)
}

/// Returns the size of one of the container's checkpoints on disk.
fn checkpoint_bytes(docker_root: &Path, id: &str, checkpoint: &str) -> Option<u64> {
    directory_bytes(&docker_root.join("containers").join(id).join("checkpoints").join(checkpoint)).ok()
}

/// Returns the total size of the files below `dir`.
fn directory_bytes(dir: &Path) -> std::io::Result<u64> {
    let mut total = 0;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let metadata = entry.metadata()?;
        total += if metadata.is_dir() { directory_bytes(&entry.path())? } else { metadata.len() };
    }
    Ok(total)
}

/// Returns the duration of the container's last CRIU restore, from the
/// `stats-restore` file that CRIU leaves in containerd's task directory.
fn criu_restore_ms(docker_root: &Path, id: &str) -> Option<f64> {
    let path = docker_root.join("containerd/daemon/io.containerd.runtime.v2.task/moby").join(id).join("stats-restore");
    let bytes = fs::read(path).ok()?;
    restore_time_us(&bytes).map(|us| us as f64 / 1e3)
}

/// Magic numbers that open a CRIU statistics image.
const STATS_MAGICS: [u32; 2] = [0x5510_5940, 0x5709_3306];

/// Field of `StatsEntry` that contains the restore statistics.
const STATS_RESTORE_FIELD: u64 = 2;
/// Field of `RestoreStatsEntry` with the restore time in microseconds.
const RESTORE_TIME_FIELD: u64 = 4;

/// Reads the restore time from a CRIU statistics image: two magic numbers,
/// the entry's length, then a protobuf `StatsEntry`.
fn restore_time_us(image: &[u8]) -> Option<u64> {
    let word = |at: usize| Some(u32::from_le_bytes(image.get(at..at + 4)?.try_into().ok()?));
    if [word(0)?, word(4)?] != STATS_MAGICS {
        return None;
    }
    let length = word(8)? as usize;
    let entry = image.get(12..12 + length)?;
    let restore = protobuf_field(entry, STATS_RESTORE_FIELD)?;
    match protobuf_field_value(restore, RESTORE_TIME_FIELD)? {
        FieldValue::Varint(time) => Some(time),
        FieldValue::Bytes(_) => None,
    }
}

/// A protobuf field's value, for the two wire types CRIU's statistics use.
enum FieldValue<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
}

/// Returns the bytes of the length-delimited field `number`.
fn protobuf_field(message: &[u8], number: u64) -> Option<&[u8]> {
    match protobuf_field_value(message, number)? {
        FieldValue::Bytes(bytes) => Some(bytes),
        FieldValue::Varint(_) => None,
    }
}

/// Returns the first value of field `number` in a protobuf message.
fn protobuf_field_value(mut message: &[u8], number: u64) -> Option<FieldValue<'_>> {
    while !message.is_empty() {
        let key = varint(&mut message)?;
        let value = match key & 7 {
            0 => FieldValue::Varint(varint(&mut message)?),
            2 => {
                let length = varint(&mut message)? as usize;
                let bytes = message.get(..length)?;
                message = &message[length..];
                FieldValue::Bytes(bytes)
            }
            _ => return None,
        };
        if key >> 3 == number {
            return Some(value);
        }
    }
    None
}

/// Decodes a protobuf varint and advances past it.
fn varint(bytes: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for (index, byte) in bytes.iter().enumerate().take(10) {
        value |= u64::from(byte & 0x7f) << (7 * index);
        if byte & 0x80 == 0 {
            *bytes = &bytes[index + 1..];
            return Some(value);
        }
    }
    None
}

/// Watches a container's freezer cgroup from a thread and measures how
/// long its processes stay frozen.
struct FreezerWatch {
    stop: Arc<AtomicBool>,
    thread: thread::JoinHandle<Option<f64>>,
}

impl FreezerWatch {
    /// Starts polling the freezer state of container `id` every 200 µs.
    fn start(id: &str) -> FreezerWatch {
        let path = PathBuf::from(format!("/sys/fs/cgroup/freezer/docker/{id}/freezer.state"));
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = thread::spawn(move || {
            let mut frozen_since = None;
            while !stopped.load(Ordering::Relaxed) {
                let state = fs::read_to_string(&path).ok();
                let frozen = state.as_deref().is_some_and(|state| state.trim() != "THAWED");
                match (frozen_since, frozen) {
                    (None, true) => frozen_since = Some(Instant::now()),
                    (Some(since), false) => return Some(micros(since.elapsed()) / 1e3),
                    _ => {}
                }
                thread::sleep(Duration::from_micros(200));
            }
            None
        });
        FreezerWatch { stop, thread }
    }

    /// Stops polling and returns the frozen time in milliseconds, or `None`
    /// when no freeze was seen, as on hosts without a cgroup v1 freezer.
    fn stop(self) -> Option<f64> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().ok().flatten()
    }
}

/// Renders the wake section as Markdown tables.
pub fn markdown(results: &Results) -> String {
    let mut text = String::from("## Wake to first byte (ms)\n\n");
    text.push_str("| Memory | lightwhale median | p95 | docker start --checkpoint median | p95 | cold start median | p95 | state intact |\n");
    text.push_str("|---|---|---|---|---|---|---|---|\n");
    for size in &results.sizes {
        let lightwhale = summary(size.lightwhale.iter().map(|run| Some(run.first_byte_ms)));
        let docker = summary(size.docker.iter().map(|run| Some(run.first_byte_ms)));
        let cold = summary(size.cold.iter().map(|run| Some(run.first_byte_ms)));
        let intact = size.lightwhale.iter().filter(|run| run.state_intact).count();
        text.push_str(&format!(
            "| {} MiB | {} | {} | {} | {} | {} | {} | {intact}/{} |\n",
            size.size_mib,
            median(lightwhale),
            p95(lightwhale),
            median(docker),
            p95(docker),
            median(cold),
            p95(cold),
            size.lightwhale.len()
        ));
    }

    for size in results.sizes.iter().filter(|size| !size.docker_failures.is_empty()) {
        text.push_str(&format!(
            "\n{} MiB: {} plain Docker runs failed, for example: {}\n",
            size.size_mib,
            size.docker_failures.len(),
            size.docker_failures[0]
        ));
    }

    text.push_str("\n## Phases of a lightwhale wake (ms after the client's connect, medians)\n\n");
    text.push_str("| Memory | held | restore requested | CRIU restore (duration) | restore returned | port accepting | first byte |\n");
    text.push_str("|---|---|---|---|---|---|---|\n");
    for size in &results.sizes {
        let runs = &size.lightwhale;
        text.push_str(&format!(
            "| {} MiB | {} | {} | {} | {} | {} | {} |\n",
            size.size_mib,
            median(summary(runs.iter().map(|run| run.held_ms))),
            median(summary(runs.iter().map(|run| run.restore_requested_ms))),
            median(summary(runs.iter().map(|run| run.criu_restore_ms))),
            median(summary(runs.iter().map(|run| run.restored_ms))),
            median(summary(runs.iter().map(|run| run.accepting_ms))),
            median(summary(runs.iter().map(|run| Some(run.first_byte_ms)))),
        ));
    }

    text.push_str("\n## Sleep\n\n");
    text.push_str("| Memory | lightwhale sleep median (ms) | p95 | checkpoint call (ms) | cgroup frozen (ms) | docker checkpoint create (ms) | checkpoint size (MiB) |\n");
    text.push_str("|---|---|---|---|---|---|---|\n");
    for size in &results.sizes {
        let runs = &size.lightwhale;
        let sleep = summary(runs.iter().map(|run| Some(run.sleep_ms)));
        text.push_str(&format!(
            "| {} MiB | {} | {} | {} | {} | {} | {} |\n",
            size.size_mib,
            median(sleep),
            p95(sleep),
            median(summary(runs.iter().map(|run| run.checkpoint_ms))),
            median(summary(runs.iter().map(|run| run.frozen_ms))),
            median(summary(size.docker.iter().map(|run| Some(run.checkpoint_ms)))),
            mib(summary(runs.iter().map(|run| run.checkpoint_bytes.map(|bytes| bytes as f64)))),
        ));
    }

    text.push_str("\n## Memory returned to the host (MiB, medians)\n\n");
    text.push_str("| Memory | container use (docker stats) | private before sleep (cgroup + shim) | stand-in after | returned | host MemAvailable gain | host MemFree gain |\n");
    text.push_str("|---|---|---|---|---|---|---|\n");
    for size in &results.sizes {
        let runs = &size.lightwhale;
        let used = summary(runs.iter().map(|run| run.memory_use_bytes.map(|bytes| bytes as f64)));
        let private = summary(runs.iter().map(|run| run.private_before_bytes.map(|bytes| bytes as f64)));
        let stand_in = summary(runs.iter().map(|run| run.stand_in_private_bytes.map(|bytes| bytes as f64)));
        let available = summary(runs.iter().map(|run| Some(run.available_gain_bytes as f64)));
        let free = summary(runs.iter().map(|run| Some(run.free_gain_bytes as f64)));
        let returned = match (private, stand_in) {
            (Some(private), Some(stand_in)) if private.median > 0.0 => {
                format!("{:.0}%", (private.median - stand_in.median) / private.median * 100.0)
            }
            _ => "–".into(),
        };
        text.push_str(&format!(
            "| {} MiB | {} | {} | {} | {returned} | {} | {} |\n",
            size.size_mib,
            mib(used),
            mib(private),
            mib(stand_in),
            mib(available),
            mib(free)
        ));
    }
    text
}

/// Summarizes the values that are present.
fn summary(values: impl Iterator<Item = Option<f64>>) -> Option<Summary> {
    let values: Vec<f64> = values.flatten().collect();
    Summary::of(&values)
}

fn median(summary: Option<Summary>) -> String {
    summary.map_or("–".into(), |summary| format!("{:.0}", summary.median))
}

fn p95(summary: Option<Summary>) -> String {
    summary.map_or("–".into(), |summary| format!("{:.0}", summary.p95))
}

fn mib(summary: Option<Summary>) -> String {
    summary.map_or("–".into(), |summary| format!("{:.1}", summary.median / (1024.0 * 1024.0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_criu_restore_time() {
        // A stats-restore image written by CRIU 4.2.1: 206,200 µs.
        let image = [
            0x40, 0x59, 0x10, 0x55, 0x06, 0x33, 0x09, 0x57, 0x0e, 0x00, 0x00, 0x00, 0x12, 0x0c, 0x08, 0x00, 0x10, 0x00, 0x18, 0x01,
            0x20, 0xf8, 0xca, 0x0c, 0x28, 0x17,
        ];
        assert_eq!(restore_time_us(&image), Some(206_200));
    }

    #[test]
    fn rejects_other_images() {
        assert_eq!(restore_time_us(&[0u8; 26]), None);
        assert_eq!(restore_time_us(&[]), None);
    }

    #[test]
    fn varint_decoding() {
        let mut bytes: &[u8] = &[0xf8, 0xca, 0x0c, 0x28];
        assert_eq!(varint(&mut bytes), Some(206_200));
        assert_eq!(bytes, &[0x28]);
    }
}
