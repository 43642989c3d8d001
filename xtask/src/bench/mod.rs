//! `cargo xtask bench`: measures wake and sleep times, memory returned,
//! the cost of being watched and the daemon's own footprint against the
//! real Docker engine, CRIU and kernel.
//!
//! Each section builds its containers from the local test images, runs
//! them against a daemon of its own through the end-to-end test harness,
//! and removes them again. The results are printed as Markdown and written
//! to the output directory as raw JSON samples and an SVG plot. Benchmarks
//! assert nothing about timings.

mod client;
mod load;
mod machine;
mod plot;
mod scale;
mod stats;
mod steady;
mod wake;

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use serde::Serialize;

use crate::{images, setup};

/// Options of `cargo xtask bench`.
#[derive(Debug, Args)]
pub struct Options {
    /// Runs per measurement; medians and 95th percentiles are taken over
    /// them.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1000))]
    runs: u32,
    /// Resident memory of the wake and sleep workloads, in MiB.
    #[arg(long, value_delimiter = ',', default_values_t = [1u64, 64, 256, 1024], value_parser = clap::value_parser!(u64).range(1..=65536))]
    sizes: Vec<u64>,
    /// Sections to run.
    #[arg(long, value_delimiter = ',', default_values_t = [Section::Wake, Section::Steady, Section::Scale])]
    sections: Vec<Section>,
    /// Seconds of load per steady-state measurement.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    load_seconds: u64,
    /// Managed containers for the daemon footprint measurement.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=2000))]
    containers: u32,
    /// Directory for results.json, results.md and wake.svg.
    #[arg(long, default_value = "target/bench")]
    output: PathBuf,
    /// OCI runtime of the managed wake workload, such as `lightwhale` to
    /// measure checkpoints through runc. Unset, Docker's default runtime.
    #[arg(long)]
    runtime: Option<String>,
}

/// A part of the benchmark that can run on its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Section {
    /// Wake and sleep times, memory returned and checkpoint size, with the
    /// cold-start and plain Docker baselines.
    Wake,
    /// Throughput, latency and eBPF cost of an awake container.
    Steady,
    /// The daemon's CPU and memory with many managed containers.
    Scale,
}

impl std::fmt::Display for Section {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = self.to_possible_value().expect("no skipped variants");
        formatter.write_str(name.get_name())
    }
}

/// Settings that every section reads.
#[derive(Debug)]
pub struct Bench {
    /// Runs per measurement.
    pub runs: usize,
    /// Memory sizes of the wake workloads, in MiB.
    pub sizes_mib: Vec<u64>,
    /// Seconds of load per steady-state measurement.
    pub load_seconds: u64,
    /// Managed containers for the footprint measurement.
    pub containers: usize,
    /// OCI runtime of the managed wake workload; `None` for Docker's default.
    pub runtime: Option<String>,
}

/// Everything one benchmark run measured.
#[derive(Debug, Serialize)]
struct Report {
    machine: machine::Machine,
    command: String,
    wake: Option<wake::Results>,
    steady: Option<steady::Results>,
    scale: Option<scale::Results>,
}

/// Runs the selected sections and writes their results.
pub fn run(root: &Path, options: Options) -> Result<()> {
    if !setup::is_root() {
        bail!("cargo xtask bench needs root, for Docker, CRIU and eBPF; run it with sudo");
    }
    setup::prepare_host(root)?;
    let daemon = setup::build_daemon(root)?;
    images::prepare_test_images(root)?;
    // The harness starts this binary for each section's daemon.
    std::env::set_var("LIGHTWHALE_BIN", &daemon);

    let bench = Bench {
        runs: options.runs as usize,
        sizes_mib: options.sizes.clone(),
        load_seconds: options.load_seconds,
        containers: options.containers as usize,
        runtime: options.runtime.clone(),
    };
    let output = root.join(&options.output);
    fs::create_dir_all(&output).with_context(|| format!("failed to create {}", output.display()))?;

    let selected = |section| options.sections.contains(&section);
    let mut report = Report {
        machine: machine::describe(root)?,
        command: std::env::args().skip(1).collect::<Vec<_>>().join(" "),
        wake: None,
        steady: None,
        scale: None,
    };
    // Each section's results are written as soon as they exist, so that a
    // failure in a later section keeps them.
    if selected(Section::Wake) {
        report.wake = Some(wake::run(&bench)?);
        write(&output, &report)?;
    }
    if selected(Section::Steady) {
        report.steady = Some(steady::run(&bench)?);
        write(&output, &report)?;
    }
    if selected(Section::Scale) {
        report.scale = Some(scale::run(&bench)?);
        write(&output, &report)?;
    }
    write(&output, &report)?;
    println!("{}", markdown(&report));
    println!("results written to {}", output.display());
    Ok(())
}

/// Renders the report as Markdown.
fn markdown(report: &Report) -> String {
    let mut text = machine::markdown(&report.machine);
    if let Some(wake) = &report.wake {
        text.push('\n');
        text.push_str(&wake::markdown(wake));
    }
    if let Some(steady) = &report.steady {
        text.push('\n');
        text.push_str(&steady::markdown(steady));
    }
    if let Some(scale) = &report.scale {
        text.push('\n');
        text.push_str(&scale::markdown(scale));
    }
    text
}

/// Marks whether a number meets its target, for the Markdown tables.
fn verdict(met: bool) -> &'static str {
    if met {
        "✓"
    } else {
        "✗"
    }
}

/// Writes results.json, results.md and, with wake results, wake.svg.
fn write(output: &Path, report: &Report) -> Result<()> {
    let json = serde_json::to_string_pretty(report)?;
    write_file(&output.join("results.json"), &json)?;
    write_file(&output.join("results.md"), &markdown(report))?;
    if let Some(wake) = &report.wake {
        write_file(&output.join("wake.svg"), &plot::wake_svg(wake))?;
    }
    Ok(())
}

fn write_file(path: &Path, contents: &str) -> Result<()> {
    fs::write(path, contents).with_context(|| format!("failed to write {}", path.display()))
}
