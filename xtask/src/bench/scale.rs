//! The daemon's own CPU and memory with many managed containers.

use anyhow::Result;
use serde::Serialize;

use super::Bench;

/// Results of the footprint section.
#[derive(Debug, Serialize)]
pub struct Results {}

/// Measures the daemon's footprint.
pub fn run(_bench: &Bench) -> Result<Results> {
    anyhow::bail!("not written yet")
}

/// Renders the results as Markdown.
pub fn markdown(_results: &Results) -> String {
    String::new()
}
