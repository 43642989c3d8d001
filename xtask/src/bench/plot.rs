//! An SVG plot of wake time against memory size.

use super::wake;

/// Draws the wake-to-first-byte medians of each method against memory size.
pub fn wake_svg(_results: &wake::Results) -> String {
    String::new()
}
