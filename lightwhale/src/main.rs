use std::{io::IsTerminal as _, process::ExitCode};

use clap::Parser as _;
use lightwhale::{
    cli::{Cli, Command},
    control::{self, Request},
    daemon::{self, Settings},
    labels::Defaults,
    status::render_table,
};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match execute(cli.command).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("lightwhale: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn execute(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Run(args) => {
            tracing_subscriber::fmt()
                .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
                .with_writer(std::io::stderr)
                .with_ansi(std::io::stderr().is_terminal())
                .init();
            let settings = Settings {
                defaults: Defaults { manage_all: args.all, idle_timeout: args.idle_timeout },
                socket: args.socket.socket,
                state_dir: args.state_dir,
            };
            daemon::run(settings).await
        }
        Command::Status { json, socket } => {
            let response = control::request(&socket.socket, &Request::Status {}).await?;
            let report = check(response)?.status.unwrap_or_default();
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", render_table(&report));
            }
            Ok(())
        }
        Command::Sleep { container, socket } => {
            let response = control::request(&socket.socket, &Request::Sleep { container }).await?;
            println!("{}", check(response)?.message.unwrap_or_default());
            Ok(())
        }
        Command::Wake { container, socket } => {
            let response = control::request(&socket.socket, &Request::Wake { container }).await?;
            println!("{}", check(response)?.message.unwrap_or_default());
            Ok(())
        }
    }
}

fn check(response: control::Response) -> anyhow::Result<control::Response> {
    if response.ok {
        Ok(response)
    } else {
        anyhow::bail!(response.error.unwrap_or_else(|| "the daemon returned an error without a message".into()))
    }
}
