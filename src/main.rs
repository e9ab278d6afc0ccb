//! The `herald` binary: `herald serve` runs the hub; `herald check-config FILE` validates a
//! configuration file without starting; every other subcommand is a client of a running
//! server (see [`herald::cli`]).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "herald",
    version,
    about = "A DRP-compatible websocket event hub with a durable, replayable event log"
)]
struct Cli {
    #[command(flatten)]
    connection: herald::cli::Connection,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the event hub.
    Serve(Box<herald::config::ServeArgs>),
    /// Validate a configuration file without starting.
    CheckConfig {
        /// The TOML file to check.
        file: PathBuf,
    },
    #[command(flatten)]
    Client(herald::cli::Command),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Client(command) = cli.command {
        return match herald::cli::run(&cli.connection, command) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("herald: {error}");
                ExitCode::from(error.exit_code())
            }
        };
    }
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // herald's errors carry their cause in their own message and expose no `source`,
            // so `{:#}` prints the cause chain once.
            eprintln!("herald: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve(args) => {
            let config = herald::config::Config::from_args((*args).clone())?;
            herald::logging::init(
                &config.log_level,
                config.log_format,
                config.log_events_level,
            )?;
            let reload = Box::new(move || herald::config::Config::from_args((*args).clone()));
            herald::server::run(config, reload)?;
        }
        Command::CheckConfig { file } => {
            herald::config::Config::check_file(&file)?;
            println!("{}: ok", file.display());
        }
        Command::Client(_) => {}
    }
    Ok(())
}
