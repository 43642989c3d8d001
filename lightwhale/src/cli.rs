//! Command-line interface.

use std::{path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand};

use crate::{control::DEFAULT_SOCKET, labels, store};

/// Frees the memory of idle Docker containers by checkpointing them, and
/// restores them on their next connection.
#[derive(Debug, Parser)]
#[command(name = "lightwhale", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon (as root).
    Run(RunArgs),
    /// Show managed containers and their state.
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        socket: SocketArg,
    },
    /// Checkpoint a managed container now.
    Sleep {
        /// Container name, id or unique id prefix.
        container: String,
        #[command(flatten)]
        socket: SocketArg,
    },
    /// Restore a sleeping container now.
    Wake {
        /// Container name, id or unique id prefix.
        container: String,
        #[command(flatten)]
        socket: SocketArg,
    },
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Manage every container unless it has the label lightwhale.enable=false.
    /// Without it, only containers labelled lightwhale.enable=true are managed.
    #[arg(long)]
    pub all: bool,

    /// Time without traffic after which a container is put to sleep, such as
    /// 30s or 10m. The label lightwhale.idle-timeout overrides it.
    #[arg(long, default_value = "10m", value_parser = parse_idle_timeout)]
    pub idle_timeout: Duration,

    /// Directory of the state file, which records the containers put to
    /// sleep so that a restarted daemon serves them again.
    #[arg(long, env = "LIGHTWHALE_STATE_DIR", default_value = store::DEFAULT_DIR)]
    pub state_dir: PathBuf,

    #[command(flatten)]
    pub socket: SocketArg,
}

#[derive(Debug, Args)]
pub struct SocketArg {
    /// Path of the daemon's control socket.
    #[arg(long, env = "LIGHTWHALE_SOCKET", default_value = DEFAULT_SOCKET)]
    pub socket: PathBuf,
}

fn parse_idle_timeout(value: &str) -> Result<Duration, String> {
    labels::check_idle_timeout(value).map_err(|problem| problem.to_string())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    #[test]
    fn cli_definition_is_valid() {
        Cli::command().debug_assert();
    }

    #[test]
    fn idle_timeout_flag_is_validated() {
        assert!(Cli::try_parse_from(["lightwhale", "run", "--idle-timeout", "30s"]).is_ok());
        let error = Cli::try_parse_from(["lightwhale", "run", "--idle-timeout", "0s"]).unwrap_err();
        assert!(error.to_string().contains("--idle-timeout"), "{error}");
        assert!(error.to_string().contains("must be between 1s and 30d"), "{error}");
        let error = Cli::try_parse_from(["lightwhale", "run", "--idle-timeout", "ten"]).unwrap_err();
        assert!(error.to_string().contains("expected a number with a unit"), "{error}");
    }

    #[test]
    fn sleep_needs_a_container() {
        assert!(Cli::try_parse_from(["lightwhale", "sleep"]).is_err());
    }
}
