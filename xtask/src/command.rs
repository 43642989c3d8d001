//! Running commands and saying which one failed.

use std::process::Command;

use anyhow::{bail, Context as _};
use lightwhale_tests::command::describe;

/// Runs a command with inherited output and fails with its command line
/// when it does not succeed.
pub fn run(command: &mut Command) -> anyhow::Result<()> {
    let line = describe(command);
    let status = command.status().with_context(|| format!("cannot start `{line}`"))?;
    if !status.success() {
        bail!("`{line}` failed: {status}");
    }
    Ok(())
}
