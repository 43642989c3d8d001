//! `cargo xtask run`: prepare the host, build and start the daemon.

use std::{os::unix::process::CommandExt as _, path::Path, process::Command};

use anyhow::Context as _;
use clap::Args;

use crate::{demo, setup};

#[derive(Debug, Args)]
pub struct Options {
    /// Also start a sample stateful service (an HTTP hit counter with a
    /// 5 s idle timeout) and show it sleep and wake, with timings.
    #[arg(long)]
    demo: bool,

    /// Host port of the sample service.
    #[arg(long, default_value_t = 8080, requires = "demo")]
    demo_port: u16,

    /// Arguments passed to `lightwhale run`, after `--`.
    #[arg(last = true)]
    daemon_args: Vec<String>,
}

pub fn run(root: &Path, options: Options) -> anyhow::Result<()> {
    setup::prepare_host(root)?;
    let daemon = setup::build_daemon(root)?;

    let mut command = if setup::is_root() {
        Command::new(&daemon)
    } else {
        let mut sudo = Command::new("sudo");
        sudo.arg(&daemon);
        sudo
    };
    command.arg("run").args(&options.daemon_args);

    if options.demo {
        return demo::run(root, command, &daemon, options.demo_port);
    }
    let error = command.exec();
    Err(error).with_context(|| format!("cannot start {}", daemon.display()))
}
