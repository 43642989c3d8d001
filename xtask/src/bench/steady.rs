//! Steady state of an awake container: throughput and latency with and
//! without the daemon, and the eBPF programs' run time per packet.

use anyhow::Result;
use serde::Serialize;

use super::Bench;

/// Results of the steady-state section.
#[derive(Debug, Serialize)]
pub struct Results {}

/// Measures the steady state.
pub fn run(_bench: &Bench) -> Result<Results> {
    anyhow::bail!("not written yet")
}

/// Renders the results as Markdown.
pub fn markdown(_results: &Results) -> String {
    String::new()
}
