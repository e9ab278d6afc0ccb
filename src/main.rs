//! The `herald` binary: `herald serve` runs the hub; `herald check-config FILE` validates a
//! configuration file without starting.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "herald", version, about = "A DRP-compatible websocket event hub with a durable, replayable event log")]
struct Cli {
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
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("herald: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => {
            let config = herald::config::Config::from_args(*args)?;
            herald::config::init_logging(&config.log_level, config.log_format)?;
            herald::server::run(config)?;
        }
        Command::CheckConfig { file } => {
            herald::config::Config::check_file(&file)?;
            println!("{}: ok", file.display());
        }
    }
    Ok(())
}
