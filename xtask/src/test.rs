//! `cargo xtask test`: prepare the host, then run the unit tests and the
//! end-to-end tests against the real Docker engine, CRIU and kernel.

use std::{path::Path, process::Command};

use clap::Args;

use crate::{command, images, setup};

#[derive(Debug, Args)]
pub struct Options {
    /// Only run end-to-end tests whose name contains this filter.
    filter: Option<String>,
}

pub fn run(root: &Path, options: Options) -> anyhow::Result<()> {
    setup::prepare_host(root)?;

    command::run(
        Command::new(env!("CARGO"))
            .current_dir(root)
            .args(["test", "--package", "lightwhale", "--package", "lightwhale-common", "--package", "xtask"]),
    )?;

    let daemon = setup::build_daemon(root)?;
    images::prepare_test_images(root)?;

    // One daemon runs at a time (its maps are pinned at a fixed path), so the
    // end-to-end tests run one after the other.
    let mut end_to_end = Command::new(env!("CARGO"));
    end_to_end
        .current_dir(root)
        .env("LIGHTWHALE_BIN", &daemon)
        .args(["test", "--package", "lightwhale-tests", "--", "--test-threads=1"]);
    if let Some(filter) = options.filter {
        end_to_end.arg(filter);
    }
    let result = command::run(&mut end_to_end);
    // Leftovers of this run only: a test process that another run started
    // meanwhile holds the lock while its containers exist.
    lightwhale_tests::host_lock::hold()?;
    images::remove_test_leftovers()?;
    result?;

    fuzz(root)
}

/// Seconds each fuzz target runs: enough to catch a parser that panics on
/// simple malformed input, short enough for every test run.
const FUZZ_SECONDS: u32 = 15;

/// Runs the fuzz targets of the label and control-protocol parsers briefly.
fn fuzz(root: &Path) -> anyhow::Result<()> {
    for target in ["labels", "control_request"] {
        command::run(
            Command::new("cargo")
                .current_dir(root.join("fuzz"))
                .args(["+nightly", "fuzz", "run", target, "--"])
                .arg(format!("-max_total_time={FUZZ_SECONDS}")),
        )?;
    }
    Ok(())
}
