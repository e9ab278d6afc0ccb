//! The `herald` binary: `herald serve` runs the hub; `herald check-config FILE` validates a
//! configuration file without starting; every other subcommand is a client of a running
//! server (see [`herald::cli`]).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::parser::ValueSource;
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};

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

/// Subcommands that run locally and never talk to a server.
const LOCAL_COMMANDS: [&str; 2] = ["serve", "check-config"];

fn main() -> ExitCode {
    tune_allocator();
    let cli = match parse() {
        Ok(cli) => cli,
        Err(error) => error.exit(),
    };
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
        Err(error) => match error.downcast_ref::<herald::server::ServerError>() {
            // Logged where it happened, as the server's last words.
            Some(failed @ herald::server::ServerError::StorageFailed(_)) => {
                ExitCode::from(failed.exit_code())
            }
            _ => {
                // herald's errors carry their cause in their own message and expose no
                // `source`, so `{:#}` prints the cause chain once.
                eprintln!("herald: {error:#}");
                ExitCode::FAILURE
            }
        },
    }
}

/// Keeps glibc's allocator from holding memory herald no longer uses.
///
/// - Blocks of 1 MiB and more go back to the system when they are freed. By default glibc
///   raises that bar to the largest block freed so far, so every thread that once hashed a
///   password (argon2, 19 MiB) would keep a block that large resident for good.
/// - At most one arena per CPU plus one, instead of glibc's eight per CPU: each thread that
///   meets a busy arena makes another, and each arena keeps the pages its freed blocks leave
///   behind, so a server whose cores, log thread, sled's threads and password hashers all
///   allocate grew by an arena's worth of fragments per thread. `benches/compare.sh` on one
///   CPU, glibc's default against two arenas, at the same delivery rates: firehose 200 RSS
///   71–87 against 68–70 MiB, selective 1/POST 109–135 against 87–98 MiB. `MALLOC_ARENA_MAX`
///   in the environment still decides when it is set.
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let arenas = std::thread::available_parallelism().map_or(1, usize::from) + 1;
        let arenas = libc::c_int::try_from(arenas).unwrap_or(libc::c_int::MAX);
        let chosen = std::env::var_os("MALLOC_ARENA_MAX").is_some();
        // SAFETY: mallopt only sets the allocator's parameters; no other thread runs yet.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
            if !chosen {
                libc::mallopt(libc::M_ARENA_MAX, arenas);
            }
        }
    }
}

/// Parses the command line. The connection options are global so that client commands take
/// them before or after the subcommand; the local commands hide them and refuse them.
fn parse() -> Result<Cli, clap::Error> {
    let connection: Vec<clap::Arg> = herald::cli::Connection::augment_args(clap::Command::new(""))
        .get_arguments()
        .cloned()
        .collect();
    let mut command = Cli::command();
    for name in LOCAL_COMMANDS {
        // A subcommand that already has an argument of a global's name does not inherit it, so
        // hidden copies keep the connection options out of these commands' help.
        command = command.mut_subcommand(name, |sub| {
            sub.args(
                connection
                    .iter()
                    .map(|arg| arg.clone().global(false).hide(true)),
            )
        });
    }
    let matches = command.try_get_matches_from_mut(std::env::args_os())?;
    if let Some((name, sub)) = matches.subcommand()
        && LOCAL_COMMANDS.contains(&name)
    {
        for arg in &connection {
            if sub.value_source(arg.get_id().as_str()) == Some(ValueSource::CommandLine) {
                let flag = format!("--{}", arg.get_long().unwrap_or_default());
                return Err(command.error(
                    clap::error::ErrorKind::ArgumentConflict,
                    format!("{flag} is an option of the client commands; `herald {name}` does not use it"),
                ));
            }
        }
    }
    Cli::from_arg_matches(&matches)
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
            if let Some(file) = &args.config {
                for warning in herald::config::Config::file_warnings(file)? {
                    tracing::warn!("{warning}");
                }
            }
            let reload = Box::new(move || herald::config::Config::from_args((*args).clone()));
            herald::server::run(config, reload)?;
        }
        Command::CheckConfig { file } => {
            herald::config::Config::check_file(&file)?;
            for warning in herald::config::Config::file_warnings(&file)? {
                eprintln!("herald: warning: {warning}");
            }
            println!("{}: ok", file.display());
        }
        Command::Client(_) => {}
    }
    Ok(())
}
