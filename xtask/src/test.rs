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
    images::remove_test_leftovers()?;
    result
}
