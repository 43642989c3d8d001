//! Damaging the CRIU images of a checkpoint on disk, so that its restore
//! fails.

use std::fs;
use std::path::Path;

use anyhow::{bail, Context, Result};

/// Overwrites every CRIU image (`*.img`) in `dir` and returns how many
/// there were, or an error when there is none.
pub fn damage_criu_images(dir: &Path) -> Result<usize> {
    let mut damaged = 0;
    for entry in fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|extension| extension == "img") {
            fs::write(&path, b"damaged")?;
            damaged += 1;
        }
    }
    if damaged == 0 {
        bail!("no CRIU images in {}", dir.display());
    }
    Ok(damaged)
}
