//! Development tasks: `cargo xtask run`, `cargo xtask test` and
//! `cargo xtask bench`.

mod bench;
mod command;
mod demo;
mod images;
mod run;
mod setup;
mod test;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "xtask", about = "Development tasks of lightwhale")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Prepare the host, build the daemon and run it in the foreground.
    Run(run::Options),
    /// Prepare the host and run the unit and end-to-end tests.
    Test(test::Options),
    /// Only prepare the host: packages, CRIU, eBPF toolchain, dockerd.
    Setup,
    /// Prepare the host and measure wake, sleep and steady-state costs.
    Bench(bench::Options),
}

fn main() -> anyhow::Result<()> {
    let root = workspace_root();
    match Cli::parse().command {
        Command::Run(options) => run::run(&root, options),
        Command::Test(options) => test::run(&root, options),
        Command::Setup => setup::prepare_host(&root),
        Command::Bench(options) => bench::run(&root, options),
    }
}

/// Returns the workspace root: the parent of this crate's directory.
fn workspace_root() -> PathBuf {
    let manifest_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest_dir.parent().map(PathBuf::from).unwrap_or(manifest_dir)
}
