//! Wake and sleep of containers of several memory sizes.

use anyhow::Result;
use serde::Serialize;

use super::Bench;

/// Results of the wake section.
#[derive(Debug, Serialize)]
pub struct Results {}

/// Measures wake and sleep.
pub fn run(_bench: &Bench) -> Result<Results> {
    anyhow::bail!("not written yet")
}

/// Renders the results as Markdown.
pub fn markdown(_results: &Results) -> String {
    String::new()
}
