//! Server configuration: flags, `HERALD_*` environment variables and a TOML file, merged
//! (flag beats env beats file) and validated into one [`Config`] in a single fallible step.
//!
//! The file is one flat TOML table whose keys are the flag names in snake case (`listen`,
//! `data_dir`, `max_body_bytes`, `retain_age`, …). Sizes are integers or strings with a unit
//! (`"64KiB"`), durations are strings with a unit (`"30s"`).

use std::fs;
use std::io;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::ValueEnum;
use toml::de::{DeTable, DeValue};

pub use crate::logging::{EventsLevel, LogFormat};

/// Address every core listens on unless configured: all interfaces, DRP's port.
pub const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 8092);
/// Address listened on instead of [`DEFAULT_LISTEN`] while the admin has DRP's default
/// password and no address was configured: loopback, so the well-known password is not exposed.
pub const DEFAULT_PASSWORD_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 8092);
/// Data directory unless configured, relative to the working directory.
pub const DEFAULT_DATA_DIR: &str = "./herald-data";
/// Log filter unless configured.
pub const DEFAULT_LOG_LEVEL: &str = "info";
/// Most core threads herald starts: far above any machine it targets, it catches typos.
pub const MAX_CORES: usize = 1024;

/// Smallest request head limit: a websocket upgrade carrying a bearer token must fit.
const MIN_HEADER_BYTES: u64 = 1024;
/// Smallest body limit: a typical small event must fit.
const MIN_BODY_BYTES: u64 = 1024;
/// Smallest command limit: `replay SEQ EPOCH` and a short filter must fit.
const MIN_COMMAND_BYTES: u64 = 256;
/// Smallest outbound budget, whatever the body limit.
const MIN_OUTBOUND_BUDGET: u64 = 64 * 1024;
/// Shortest header timeout and ping interval: shorter ones close healthy clients on slow links.
const MIN_INTERVAL: Duration = Duration::from_secs(1);

/// The keys a config file may hold, in the order `herald serve --help` lists the flags.
pub const FILE_KEYS: &[&str] = &[
    "listen",
    "data_dir",
    "plain",
    "tls_cert",
    "tls_key",
    "tls_san",
    "admin_password",
    "admin_password_file",
    "cores",
    "durability",
    "log_level",
    "log_format",
    "log_events_level",
    "max_header_bytes",
    "header_timeout",
    "max_body_bytes",
    "max_command_bytes",
    "max_filters",
    "outbound_budget",
    "ping_interval",
    "ping_timeout",
    "retain_events",
    "retain_age",
    "retain_bytes",
    "history_events",
    "history_age",
    "shutdown_timeout",
    "metrics_auth",
];

/// How the listener speaks: TLS (the default) or plain HTTP for loopback development.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsMode {
    /// http:// and ws://, for loopback development, tests and benchmarks.
    Plain,
    /// A self-signed certificate generated into the data directory, valid for the loopback
    /// names, the host name, every local interface address and `tls_san`.
    SelfSigned,
    /// A configured certificate chain and private key (PEM files).
    Files { cert: PathBuf, key: PathBuf },
}

/// When a publish is answered relative to the flush of its batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum Durability {
    /// Answer and broadcast only after the batch is flushed to disk.
    #[default]
    Sync,
    /// Answer and broadcast before the flush; flush every few milliseconds.
    Batched,
}

impl Durability {
    /// The name used in flags, the config file and `/api/v3/info`.
    pub fn as_str(self) -> &'static str {
        match self {
            Durability::Sync => "sync",
            Durability::Batched => "batched",
        }
    }
}

/// Bounds on what one client may cost the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest request head (request line and headers) accepted, in bytes.
    pub max_header_bytes: usize,
    /// Time from a request's first byte until its head must be complete.
    pub header_timeout: Duration,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Largest websocket command message, after reassembling fragments, in bytes.
    pub max_command_bytes: usize,
    /// Most filters one websocket connection may hold.
    pub max_filters: usize,
    /// Bytes queued to one connection before it is closed as a slow consumer.
    pub outbound_budget_bytes: usize,
    /// How often the server pings an idle websocket.
    pub ping_interval: Duration,
    /// Silence after which a websocket is closed.
    pub ping_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_header_bytes: 16 * 1024,
            header_timeout: Duration::from_secs(10),
            max_body_bytes: 1024 * 1024,
            max_command_bytes: 4 * 1024,
            max_filters: 1024,
            outbound_budget_bytes: 8 * 1024 * 1024,
            ping_interval: Duration::from_secs(30),
            ping_timeout: Duration::from_secs(60),
        }
    }
}

/// How much of the event log is kept; the oldest events are trimmed once any limit is passed.
/// The server's come from the configuration; the log takes any, e.g. [`Retention::UNLIMITED`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retention {
    /// Most events kept.
    pub max_events: u64,
    /// Oldest event kept, by the time it was stored.
    pub max_age: Duration,
    /// Most bytes of stored events kept (the log's stored value bytes).
    pub max_bytes: u64,
}

impl Retention {
    /// Keep everything: `u64::MAX` and `Duration::MAX` mean no limit on that dimension.
    pub const UNLIMITED: Retention = Retention {
        max_events: u64::MAX,
        max_age: Duration::MAX,
        max_bytes: u64::MAX,
    };
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            max_events: 1_000_000,
            max_age: Duration::from_secs(7 * 24 * 60 * 60),
            max_bytes: 1024 * 1024 * 1024,
        }
    }
}

/// Everything `herald serve` needs, validated.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address every core listens on (port 0 picks one free port shared by all cores).
    pub listen: SocketAddr,
    /// Whether `listen` was configured (flag, environment or file) rather than the default,
    /// which gives way to loopback while the admin has DRP's default password.
    pub listen_explicit: bool,
    /// Directory holding the sled database, the generated certificate and secrets.
    pub data_dir: PathBuf,
    /// TLS or plain.
    pub tls: TlsMode,
    /// More names (DNS names or IP addresses) for the self-signed certificate.
    pub tls_san: Vec<String>,
    /// Password applied to the admin user on every start; `None` leaves the stored one (DRP's
    /// default on a first start).
    pub admin_password: Option<String>,
    /// Number of core threads.
    pub cores: usize,
    /// Per-client bounds.
    pub limits: Limits,
    /// When publishes are acknowledged.
    pub durability: Durability,
    /// How much of the event log is kept.
    pub retention: Retention,
    /// Log filter: a level or `tracing` directives such as `herald=debug,info`.
    pub log_level: String,
    /// How log lines are written.
    pub log_format: LogFormat,
    /// The least severe of herald's log records published as `log.<level>.herald` events.
    pub log_events_level: EventsLevel,
    /// How much connection history is kept.
    pub history: History,
    /// Time a graceful stop may take.
    pub shutdown_timeout: Duration,
    /// Whether `/metrics` requires credentials.
    pub metrics_auth: bool,
    /// Start a new, empty log where the data directory's log is missing (`serve --reset`).
    pub reset: bool,
}

/// How much of the closed-connection history is kept; the oldest entries go first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct History {
    /// Most closed connections kept.
    pub max_connections: u64,
    /// Oldest closed connection kept, by its close time.
    pub max_age: Duration,
}

/// Closed connections kept by default.
pub const DEFAULT_HISTORY_EVENTS: u64 = 100_000;
/// Age of the oldest closed connection kept by default.
pub const DEFAULT_HISTORY_AGE: Duration = Duration::from_secs(30 * 24 * 3600);
/// Time a graceful stop may take by default.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

/// A configuration that cannot be used, with what to change.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {}: {cause}", path.display())]
    ReadFile {
        /// The file named by `--config` or `HERALD_CONFIG`.
        path: PathBuf,
        /// Why reading failed (in the message, not a `source`, so it is printed once).
        cause: io::Error,
    },
    /// The config file is not valid TOML.
    #[error("{}:{line}: not valid TOML: {message}", path.display())]
    Syntax {
        /// The config file.
        path: PathBuf,
        /// Line of the error, from 1.
        line: usize,
        /// The parser's description.
        message: String,
    },
    /// The config file holds a key herald does not know.
    #[error("{}:{line}: unknown key `{key}`; known keys are: {}", path.display(), FILE_KEYS.join(", "))]
    UnknownKey {
        /// The config file.
        path: PathBuf,
        /// Line of the key, from 1.
        line: usize,
        /// The key as written.
        key: String,
    },
    /// A value in the config file has the wrong type or cannot be parsed.
    #[error("{}:{line}: bad value for `{key}`: {reason}", path.display())]
    BadValue {
        /// The config file.
        path: PathBuf,
        /// Line of the value, from 1.
        line: usize,
        /// The key whose value is wrong.
        key: String,
        /// What is wrong and what is expected.
        reason: String,
    },
    /// A setting, wherever it came from, is out of range or conflicts with another.
    #[error("invalid `{key}` (flag --{}): {reason}", key.replace('_', "-"))]
    Invalid {
        /// The setting's config file key.
        key: &'static str,
        /// What is wrong and what is expected.
        reason: String,
    },
    /// The data directory cannot be created or used.
    #[error("data directory {}: {reason}", path.display())]
    DataDir {
        /// The configured data directory.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

/// Logging flags, shared by `herald serve` and any command that wants logs.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct LogArgs {
    /// Log filter: a level (off, error, warn, info, debug, trace) for herald, or directives like `herald=debug,info`; other crates log at warn unless named [default: info]
    #[arg(long, env = "HERALD_LOG_LEVEL", value_name = "FILTER")]
    pub log_level: Option<String>,
    /// Log line format [default: text]
    #[arg(long, env = "HERALD_LOG_FORMAT", value_enum, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
    /// Publish herald's log records at this level and above as events log.<level>.herald [default: warn]
    #[arg(
        long,
        env = "HERALD_LOG_EVENTS_LEVEL",
        value_enum,
        value_name = "LEVEL"
    )]
    pub log_events_level: Option<EventsLevel>,
}

/// Settings of `herald serve`, each a flag that can also be set by a HERALD_* variable.
// Every field is optional so that "not given" can be told apart from a value, which lets the
// config file fill only the gaps that flags and variables leave.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServeArgs {
    /// TOML config file; flags and HERALD_* variables override its settings
    #[arg(long, env = "HERALD_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to listen on [default: 0.0.0.0:8092, or 127.0.0.1:8092 while the admin has DRP's default password]
    #[arg(long, env = "HERALD_LISTEN", value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Directory for the event log, generated certificate and secrets [default: ./herald-data]
    #[arg(long, env = "HERALD_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Serve plain http:// and ws:// instead of TLS (for loopback development)
    #[arg(
        long,
        env = "HERALD_PLAIN",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        value_parser = clap::builder::BoolishValueParser::new(),
        value_name = "BOOL"
    )]
    pub plain: Option<bool>,
    /// TLS certificate chain (PEM); needs --tls-key. Without both, a self-signed one is generated
    #[arg(long, env = "HERALD_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM) matching --tls-cert
    #[arg(long, env = "HERALD_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// Another name or IP address for the self-signed certificate (repeatable; comma-separated in the environment). It always holds localhost, the loopback and interface addresses and the host name
    #[arg(
        long,
        env = "HERALD_TLS_SAN",
        value_delimiter = ',',
        value_name = "NAME|IP"
    )]
    pub tls_san: Vec<String>,
    /// Password of the admin user `rocketskates`, applied on every start [default: keep the stored one; DRP's on first start]
    #[arg(
        long,
        env = "HERALD_ADMIN_PASSWORD",
        value_name = "PW",
        hide_env_values = true
    )]
    pub admin_password: Option<String>,
    /// File holding the admin password (first line), so it stays out of argv and the environment
    #[arg(long, env = "HERALD_ADMIN_PASSWORD_FILE", value_name = "FILE")]
    pub admin_password_file: Option<PathBuf>,
    /// Number of core threads [default: all available cores]
    #[arg(long, env = "HERALD_CORES", value_name = "N")]
    pub cores: Option<usize>,
    /// When a publish is answered: after its flush to disk (sync) or before, with the flush at most 10 ms later (batched) [default: sync]
    #[arg(long, env = "HERALD_DURABILITY", value_enum, value_name = "MODE")]
    pub durability: Option<Durability>,
    /// Logging.
    #[command(flatten)]
    pub log: LogArgs,
    /// Largest request head [default: 16KiB]
    #[arg(long, env = "HERALD_MAX_HEADER_BYTES", value_parser = parse_size, value_name = "SIZE")]
    pub max_header_bytes: Option<u64>,
    /// Time a request head may take to arrive [default: 10s]
    #[arg(long, env = "HERALD_HEADER_TIMEOUT", value_parser = parse_duration, value_name = "DURATION")]
    pub header_timeout: Option<Duration>,
    /// Largest request body [default: 1MiB]
    #[arg(long, env = "HERALD_MAX_BODY_BYTES", value_parser = parse_size, value_name = "SIZE")]
    pub max_body_bytes: Option<u64>,
    /// Largest websocket command message [default: 4KiB]
    #[arg(long, env = "HERALD_MAX_COMMAND_BYTES", value_parser = parse_size, value_name = "SIZE")]
    pub max_command_bytes: Option<u64>,
    /// Most filters per websocket connection [default: 1024]
    #[arg(long, env = "HERALD_MAX_FILTERS", value_name = "N")]
    pub max_filters: Option<u64>,
    /// Bytes queued to one connection before it is closed as a slow consumer [default: 8MiB]
    #[arg(long, env = "HERALD_OUTBOUND_BUDGET", value_parser = parse_size, value_name = "SIZE")]
    pub outbound_budget: Option<u64>,
    /// How often an idle websocket is pinged [default: 30s]
    #[arg(long, env = "HERALD_PING_INTERVAL", value_parser = parse_duration, value_name = "DURATION")]
    pub ping_interval: Option<Duration>,
    /// Silence after which a websocket is closed [default: 60s]
    #[arg(long, env = "HERALD_PING_TIMEOUT", value_parser = parse_duration, value_name = "DURATION")]
    pub ping_timeout: Option<Duration>,
    /// Most events kept in the log [default: 1000000]
    #[arg(long, env = "HERALD_RETAIN_EVENTS", value_name = "N")]
    pub retain_events: Option<u64>,
    /// Oldest event kept in the log [default: 7d]
    #[arg(long, env = "HERALD_RETAIN_AGE", value_parser = parse_duration, value_name = "DURATION")]
    pub retain_age: Option<Duration>,
    /// Most bytes of events kept in the log [default: 1GiB]
    #[arg(long, env = "HERALD_RETAIN_BYTES", value_parser = parse_size, value_name = "SIZE")]
    pub retain_bytes: Option<u64>,
    /// Most closed connections kept in the connection history [default: 100000]
    #[arg(long, env = "HERALD_HISTORY_EVENTS", value_name = "N")]
    pub history_events: Option<u64>,
    /// Oldest closed connection kept in the connection history [default: 30d]
    #[arg(long, env = "HERALD_HISTORY_AGE", value_parser = parse_duration, value_name = "DURATION")]
    pub history_age: Option<Duration>,
    /// Time SIGTERM may take to close clients and flush the log before exiting [default: 10s]
    #[arg(long, env = "HERALD_SHUTDOWN_TIMEOUT", value_parser = parse_duration, value_name = "DURATION")]
    pub shutdown_timeout: Option<Duration>,
    /// Require the API's credentials on GET /metrics [default: false]
    #[arg(
        long,
        env = "HERALD_METRICS_AUTH",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        value_parser = clap::builder::BoolishValueParser::new(),
        value_name = "BOOL"
    )]
    pub metrics_auth: Option<bool>,
    /// Start even though this data directory's event log is gone (its database is empty or missing), beginning a new, empty log with a new Epoch. Deletes nothing
    #[arg(long)]
    pub reset: bool,
}

impl ServeArgs {
    /// Fills every setting not given here from `lower`.
    fn or(self, lower: ServeArgs) -> ServeArgs {
        ServeArgs {
            config: self.config.or(lower.config),
            listen: self.listen.or(lower.listen),
            data_dir: self.data_dir.or(lower.data_dir),
            plain: self.plain.or(lower.plain),
            tls_cert: self.tls_cert.or(lower.tls_cert),
            tls_key: self.tls_key.or(lower.tls_key),
            tls_san: if self.tls_san.is_empty() {
                lower.tls_san
            } else {
                self.tls_san
            },
            admin_password: self.admin_password.or(lower.admin_password),
            admin_password_file: self.admin_password_file.or(lower.admin_password_file),
            cores: self.cores.or(lower.cores),
            durability: self.durability.or(lower.durability),
            log: LogArgs {
                log_level: self.log.log_level.or(lower.log.log_level),
                log_format: self.log.log_format.or(lower.log.log_format),
                log_events_level: self.log.log_events_level.or(lower.log.log_events_level),
            },
            max_header_bytes: self.max_header_bytes.or(lower.max_header_bytes),
            header_timeout: self.header_timeout.or(lower.header_timeout),
            max_body_bytes: self.max_body_bytes.or(lower.max_body_bytes),
            max_command_bytes: self.max_command_bytes.or(lower.max_command_bytes),
            max_filters: self.max_filters.or(lower.max_filters),
            outbound_budget: self.outbound_budget.or(lower.outbound_budget),
            ping_interval: self.ping_interval.or(lower.ping_interval),
            ping_timeout: self.ping_timeout.or(lower.ping_timeout),
            retain_events: self.retain_events.or(lower.retain_events),
            retain_age: self.retain_age.or(lower.retain_age),
            retain_bytes: self.retain_bytes.or(lower.retain_bytes),
            history_events: self.history_events.or(lower.history_events),
            history_age: self.history_age.or(lower.history_age),
            shutdown_timeout: self.shutdown_timeout.or(lower.shutdown_timeout),
            metrics_auth: self.metrics_auth.or(lower.metrics_auth),
            // Only ever a flag: a file or variable that kept it would hide a lost log for good.
            reset: self.reset,
        }
    }
}

impl Config {
    /// Flags and env (clap) beat the TOML file (`--config FILE` / HERALD_CONFIG), which beats the defaults.
    pub fn from_args(args: ServeArgs) -> Result<Config, ConfigError> {
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None => ServeArgs::default(),
        };
        resolve(args.or(file))
    }

    /// Validates a TOML file alone (for `herald check-config FILE`).
    pub fn check_file(path: &Path) -> Result<Config, ConfigError> {
        resolve(read_file(path)?)
    }

    /// Advice about a config file that is valid but unwise, one sentence each.
    pub fn file_warnings(path: &Path) -> Result<Vec<String>, ConfigError> {
        let args = read_file(path)?;
        let mut warnings = Vec::new();
        if args.admin_password.is_some() {
            // Config files are usually readable by every user (the package installs its 0644).
            let mode = fs::metadata(path)
                .map(|meta| format!(" (its mode is {:04o})", meta.permissions().mode() & 0o7777))
                .unwrap_or_default();
            warnings.push(format!(
                "{} holds admin_password in clear{mode}, and config files are usually readable \
                 by every user: put the password alone in a file with mode 0600 and set \
                 admin_password_file to that file instead",
                path.display()
            ));
        }
        Ok(warnings)
    }
}

/// Applies the defaults to the merged settings and checks every bound.
pub(crate) fn resolve(args: ServeArgs) -> Result<Config, ConfigError> {
    let default_limits = Limits::default();
    let max_body = args
        .max_body_bytes
        .unwrap_or(default_limits.max_body_bytes as u64);
    at_least("max_body_bytes", max_body, MIN_BODY_BYTES)?;
    let max_header = args
        .max_header_bytes
        .unwrap_or(default_limits.max_header_bytes as u64);
    at_least("max_header_bytes", max_header, MIN_HEADER_BYTES)?;
    let max_command = args
        .max_command_bytes
        .unwrap_or(default_limits.max_command_bytes as u64);
    at_least("max_command_bytes", max_command, MIN_COMMAND_BYTES)?;
    let max_filters = args
        .max_filters
        .unwrap_or(default_limits.max_filters as u64);
    at_least("max_filters", max_filters, 1)?;
    let outbound = args
        .outbound_budget
        .unwrap_or(default_limits.outbound_budget_bytes as u64);
    // Twice the body limit, so one largest event, grown by JSON escaping and the Seq field, fits.
    let min_outbound = max_body.saturating_mul(2).max(MIN_OUTBOUND_BUDGET);
    if outbound < min_outbound {
        return Err(invalid(
            "outbound_budget",
            format!(
                "{outbound} bytes is too small: it must be at least {min_outbound} bytes \
                 (twice max_body_bytes, and at least {MIN_OUTBOUND_BUDGET}) so the largest event fits"
            ),
        ));
    }

    let header_timeout = args.header_timeout.unwrap_or(default_limits.header_timeout);
    not_shorter("header_timeout", header_timeout, MIN_INTERVAL)?;
    let ping_interval = args.ping_interval.unwrap_or(default_limits.ping_interval);
    not_shorter("ping_interval", ping_interval, MIN_INTERVAL)?;
    let ping_timeout = args.ping_timeout.unwrap_or(default_limits.ping_timeout);
    if ping_timeout <= ping_interval {
        return Err(invalid(
            "ping_timeout",
            format!(
                "{} must be longer than ping_interval ({}), or every idle client is closed \
                 before it can answer a ping",
                humantime::format_duration(ping_timeout),
                humantime::format_duration(ping_interval)
            ),
        ));
    }
    let limits = Limits {
        max_header_bytes: to_usize("max_header_bytes", max_header)?,
        header_timeout,
        max_body_bytes: to_usize("max_body_bytes", max_body)?,
        max_command_bytes: to_usize("max_command_bytes", max_command)?,
        max_filters: to_usize("max_filters", max_filters)?,
        outbound_budget_bytes: to_usize("outbound_budget", outbound)?,
        ping_interval,
        ping_timeout,
    };

    let default_retention = Retention::default();
    let retention = Retention {
        max_events: args.retain_events.unwrap_or(default_retention.max_events),
        max_age: args.retain_age.unwrap_or(default_retention.max_age),
        max_bytes: args.retain_bytes.unwrap_or(default_retention.max_bytes),
    };
    at_least("retain_events", retention.max_events, 1)?;
    not_shorter("retain_age", retention.max_age, MIN_INTERVAL)?;
    // Any byte limit is accepted: the log always keeps its newest event, however large.

    let cores = match args.cores {
        Some(cores) => cores,
        None => std::thread::available_parallelism()
            .map(NonZeroUsize::get)
            .unwrap_or(1)
            .min(MAX_CORES),
    };
    if !(1..=MAX_CORES).contains(&cores) {
        return Err(invalid(
            "cores",
            format!("{cores} is out of range: use 1 to {MAX_CORES}"),
        ));
    }

    for name in &args.tls_san {
        check_san(name).map_err(|reason| invalid("tls_san", reason))?;
    }
    let tls = match (args.plain.unwrap_or(false), args.tls_cert, args.tls_key) {
        (true, None, None) => TlsMode::Plain,
        (true, Some(_), _) | (true, _, Some(_)) => {
            return Err(invalid(
                "plain",
                "plain serves no TLS, so it cannot be combined with tls_cert or tls_key; \
                 drop one of them"
                    .to_owned(),
            ));
        }
        (false, None, None) => TlsMode::SelfSigned,
        (false, Some(cert), Some(key)) => TlsMode::Files { cert, key },
        (false, Some(_), None) => {
            return Err(invalid(
                "tls_key",
                "tls_cert is set but tls_key is not: give both, or neither for a self-signed \
                 certificate"
                    .to_owned(),
            ));
        }
        (false, None, Some(_)) => {
            return Err(invalid(
                "tls_cert",
                "tls_key is set but tls_cert is not: give both, or neither for a self-signed \
                 certificate"
                    .to_owned(),
            ));
        }
    };

    // A password given directly beats a password file.
    let admin_password = match (args.admin_password, &args.admin_password_file) {
        (Some(password), _) => Some(password),
        (None, None) => None,
        (None, Some(path)) => {
            let text = fs::read_to_string(path).map_err(|e| {
                invalid(
                    "admin_password_file",
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
            Some(text.lines().next().unwrap_or("").to_owned())
        }
    };
    if admin_password.as_deref() == Some("") {
        return Err(invalid(
            "admin_password",
            "must not be empty; leave it unset to use DRP's default".to_owned(),
        ));
    }
    let data_dir = args
        .data_dir
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
    if data_dir.as_os_str().is_empty() {
        return Err(invalid("data_dir", "must not be empty".to_owned()));
    }
    let log_level = args
        .log
        .log_level
        .unwrap_or_else(|| DEFAULT_LOG_LEVEL.to_owned());
    crate::logging::stderr_filter(&log_level)
        .map_err(|reason| invalid("log_level", reason.to_string()))?;

    let history = History {
        max_connections: args.history_events.unwrap_or(DEFAULT_HISTORY_EVENTS),
        max_age: args.history_age.unwrap_or(DEFAULT_HISTORY_AGE),
    };
    at_least("history_events", history.max_connections, 1)?;
    not_shorter("history_age", history.max_age, MIN_INTERVAL)?;
    let shutdown_timeout = args.shutdown_timeout.unwrap_or(DEFAULT_SHUTDOWN_TIMEOUT);
    not_shorter("shutdown_timeout", shutdown_timeout, MIN_INTERVAL)?;

    Ok(Config {
        listen: args.listen.unwrap_or(DEFAULT_LISTEN),
        listen_explicit: args.listen.is_some(),
        data_dir,
        tls,
        tls_san: args.tls_san,
        admin_password,
        cores,
        limits,
        durability: args.durability.unwrap_or_default(),
        retention,
        log_level,
        log_format: args.log.log_format.unwrap_or_default(),
        log_events_level: args.log.log_events_level.unwrap_or_default(),
        history,
        shutdown_timeout,
        metrics_auth: args.metrics_auth.unwrap_or(false),
        reset: args.reset,
    })
}

/// Checks a `tls_san` entry: an IP address, or a DNS name (letters, digits, `-` and `.`, in
/// labels of at most 63 bytes, optionally `*.` first).
fn check_san(name: &str) -> Result<(), String> {
    if name.parse::<std::net::IpAddr>().is_ok() {
        return Ok(());
    }
    let host = name.strip_prefix("*.").unwrap_or(name);
    let valid = !host.is_empty()
        && name.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if valid {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is neither an IP address nor a DNS name; write e.g. herald.example.org \
             or 192.0.2.10"
        ))
    }
}

fn invalid(key: &'static str, reason: String) -> ConfigError {
    ConfigError::Invalid { key, reason }
}

fn at_least(key: &'static str, value: u64, min: u64) -> Result<(), ConfigError> {
    if value < min {
        return Err(invalid(
            key,
            format!("{value} is too small: use at least {min}"),
        ));
    }
    Ok(())
}

fn not_shorter(key: &'static str, value: Duration, min: Duration) -> Result<(), ConfigError> {
    if value < min {
        return Err(invalid(
            key,
            format!(
                "{} is too short: use at least {}",
                humantime::format_duration(value),
                humantime::format_duration(min)
            ),
        ));
    }
    Ok(())
}

fn to_usize(key: &'static str, value: u64) -> Result<usize, ConfigError> {
    usize::try_from(value)
        .map_err(|_| invalid(key, format!("{value} is too large for this machine")))
}

/// Reads a config file into the same shape as the flags, so the two merge field by field.
fn read_file(path: &Path) -> Result<ServeArgs, ConfigError> {
    let text = fs::read_to_string(path).map_err(|cause| ConfigError::ReadFile {
        path: path.to_owned(),
        cause,
    })?;
    parse_file(path, &text)
}

pub(crate) fn parse_file(path: &Path, text: &str) -> Result<ServeArgs, ConfigError> {
    // DeTable keeps the span of every key and value, so each error can name its key and line.
    let table = DeTable::parse(text).map_err(|error| ConfigError::Syntax {
        path: path.to_owned(),
        line: line_of(text, error.span().map_or(0, |span| span.start)),
        message: error.message().trim().to_owned(),
    })?;
    let mut out = ServeArgs::default();
    for (key, value) in table.get_ref() {
        let entry = FileEntry {
            path,
            key: key.get_ref(),
            line: line_of(text, value.span().start),
            value: value.get_ref(),
        };
        match entry.key {
            "listen" => out.listen = Some(entry.parsed("an address like 0.0.0.0:8092")?),
            "data_dir" => out.data_dir = Some(entry.string()?.into()),
            "plain" => out.plain = Some(entry.boolean()?),
            "tls_cert" => out.tls_cert = Some(entry.string()?.into()),
            "tls_key" => out.tls_key = Some(entry.string()?.into()),
            "tls_san" => out.tls_san = entry.strings()?,
            "admin_password" => out.admin_password = Some(entry.string()?.to_owned()),
            "admin_password_file" => out.admin_password_file = Some(entry.string()?.into()),
            "cores" => out.cores = Some(entry.integer()?),
            "durability" => out.durability = Some(entry.choice()?),
            "log_level" => out.log.log_level = Some(entry.string()?.to_owned()),
            "log_format" => out.log.log_format = Some(entry.choice()?),
            "log_events_level" => out.log.log_events_level = Some(entry.choice()?),
            "max_header_bytes" => out.max_header_bytes = Some(entry.size()?),
            "header_timeout" => out.header_timeout = Some(entry.duration()?),
            "max_body_bytes" => out.max_body_bytes = Some(entry.size()?),
            "max_command_bytes" => out.max_command_bytes = Some(entry.size()?),
            "max_filters" => out.max_filters = Some(entry.integer()?),
            "outbound_budget" => out.outbound_budget = Some(entry.size()?),
            "ping_interval" => out.ping_interval = Some(entry.duration()?),
            "ping_timeout" => out.ping_timeout = Some(entry.duration()?),
            "retain_events" => out.retain_events = Some(entry.integer()?),
            "retain_age" => out.retain_age = Some(entry.duration()?),
            "retain_bytes" => out.retain_bytes = Some(entry.size()?),
            "history_events" => out.history_events = Some(entry.integer()?),
            "history_age" => out.history_age = Some(entry.duration()?),
            "shutdown_timeout" => out.shutdown_timeout = Some(entry.duration()?),
            "metrics_auth" => out.metrics_auth = Some(entry.boolean()?),
            unknown => {
                return Err(ConfigError::UnknownKey {
                    path: path.to_owned(),
                    line: line_of(text, key.span().start),
                    key: unknown.to_owned(),
                });
            }
        }
    }
    Ok(out)
}

/// The 1-based line holding byte `offset` of `text`.
fn line_of(text: &str, offset: usize) -> usize {
    text.bytes().take(offset).filter(|&b| b == b'\n').count() + 1
}

/// One `key = value` of a config file, with what is needed to report an error in it.
struct FileEntry<'a> {
    path: &'a Path,
    key: &'a str,
    line: usize,
    value: &'a DeValue<'a>,
}

impl<'a> FileEntry<'a> {
    fn bad(&self, reason: String) -> ConfigError {
        ConfigError::BadValue {
            path: self.path.to_owned(),
            line: self.line,
            key: self.key.to_owned(),
            reason,
        }
    }

    fn wrong_type(&self, expected: &str) -> ConfigError {
        self.bad(format!(
            "expected {expected}, found {}",
            self.value.type_str()
        ))
    }

    fn string(&self) -> Result<&'a str, ConfigError> {
        self.value
            .as_str()
            .ok_or_else(|| self.wrong_type("a string"))
    }

    /// A list of strings; a single string counts as a list of one.
    fn strings(&self) -> Result<Vec<String>, ConfigError> {
        if let Some(text) = self.value.as_str() {
            return Ok(vec![text.to_owned()]);
        }
        let Some(array) = self.value.as_array() else {
            return Err(self.wrong_type("a list of strings such as [\"herald.example.org\"]"));
        };
        array
            .iter()
            .map(|item| {
                let item = item.get_ref();
                item.as_str().map(str::to_owned).ok_or_else(|| {
                    self.bad(format!(
                        "expected a list of strings, found a {} in it",
                        item.type_str()
                    ))
                })
            })
            .collect()
    }

    fn boolean(&self) -> Result<bool, ConfigError> {
        self.value
            .as_bool()
            .ok_or_else(|| self.wrong_type("true or false"))
    }

    fn integer<T: TryFrom<u64>>(&self) -> Result<T, ConfigError> {
        let Some(integer) = self.value.as_integer() else {
            return Err(self.wrong_type("a whole number"));
        };
        u64::from_str_radix(integer.as_str(), integer.radix())
            .ok()
            .and_then(|n| T::try_from(n).ok())
            .ok_or_else(|| self.bad(format!("{} is not a usable whole number", integer.as_str())))
    }

    fn parsed<T: std::str::FromStr>(&self, expected: &str) -> Result<T, ConfigError> {
        let text = self.string()?;
        text.parse()
            .map_err(|_| self.bad(format!("{text:?} is not {expected}")))
    }

    fn choice<T: ValueEnum>(&self) -> Result<T, ConfigError> {
        let text = self.string()?;
        T::from_str(text, false).map_err(|_| {
            let names: Vec<String> = T::value_variants()
                .iter()
                .filter_map(|v| v.to_possible_value())
                .map(|v| v.get_name().to_owned())
                .collect();
            self.bad(format!("{text:?} is not one of: {}", names.join(", ")))
        })
    }

    fn size(&self) -> Result<u64, ConfigError> {
        if self.value.as_integer().is_some() {
            return self.integer();
        }
        match self.value.as_str() {
            Some(text) => parse_size(text).map_err(|reason| self.bad(reason)),
            None => Err(self.wrong_type("a size such as 65536 or \"64KiB\"")),
        }
    }

    fn duration(&self) -> Result<Duration, ConfigError> {
        match self.value.as_str() {
            Some(text) => parse_duration(text).map_err(|reason| self.bad(reason)),
            None => Err(self.wrong_type("a duration string such as \"30s\"")),
        }
    }
}

/// Parses a duration with a unit: "30s", "15m", "12h", "7d" (humantime syntax).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("{s:?} is not a duration ({e}); write e.g. 30s, 15m, 12h or 7d"))
}

/// Parses a byte size: "65536", "64KiB", "512MiB", "1GiB"; KB, MB, GB and TB are powers of 10.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let text = s.trim();
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(digits_end);
    let hint = "write a whole number of bytes with an optional unit, e.g. 65536, 64KiB or 1GiB";
    if digits.is_empty() || unit.starts_with(['.', ',']) {
        return Err(format!("{s:?} is not a size; {hint}"));
    }
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        _ => {
            return Err(format!(
                "{s:?} has an unknown unit {:?}; use B, KiB, MiB, GiB, TiB (powers of 2) \
                 or KB, MB, GB, TB (powers of 10)",
                unit.trim()
            ));
        }
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(multiplier))
        .ok_or_else(|| format!("{s:?} is too large"))
}

/// Creates the data directory (and its parents) with mode 0700 if missing, or checks that the
/// existing one is a writable directory.
pub fn prepare_data_dir(dir: &Path) -> Result<(), ConfigError> {
    let fail = |reason: String| ConfigError::DataDir {
        path: dir.to_owned(),
        reason,
    };
    match fs::metadata(dir) {
        Ok(meta) if !meta.is_dir() => Err(fail(
            "exists but is not a directory; point data_dir elsewhere or move it".to_owned(),
        )),
        Ok(_) => {
            // Creating a file is the only check that covers permissions, ACLs and read-only mounts.
            let probe = dir.join(format!(".herald-write-check-{}", std::process::id()));
            fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&probe)
                .map_err(|e| fail(format!("is not writable by this user: {e}")))?;
            fs::remove_file(&probe).map_err(|e| {
                fail(format!(
                    "cannot remove the probe file {}: {e}",
                    probe.display()
                ))
            })
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| fail(format!("cannot create it: {e}"))),
        Err(e) => Err(fail(format!("cannot inspect it: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }

    fn flags(list: &[&str]) -> ServeArgs {
        let argv = std::iter::once("herald").chain(list.iter().copied());
        match Cli::try_parse_from(argv) {
            Ok(cli) => cli.serve,
            Err(e) => panic!("flags {list:?} rejected: {e}"),
        }
    }

    fn file(text: &str) -> ServeArgs {
        match parse_file(Path::new("herald.toml"), text) {
            Ok(args) => args,
            Err(e) => panic!("file rejected: {e}"),
        }
    }

    fn file_error(text: &str) -> ConfigError {
        match parse_file(Path::new("herald.toml"), text) {
            Ok(args) => panic!("file accepted: {args:?}"),
            Err(e) => e,
        }
    }

    fn invalid_key(args: ServeArgs) -> &'static str {
        match resolve(args) {
            Err(ConfigError::Invalid { key, .. }) => key,
            other => panic!("expected an invalid setting, got {other:?}"),
        }
    }

    #[test]
    fn the_flag_definitions_are_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn no_flags_and_no_file_give_the_documented_defaults() {
        let config = Config::from_args(flags(&[])).unwrap();
        assert_eq!(config.listen, "0.0.0.0:8092".parse().unwrap());
        assert!(!config.listen_explicit);
        assert_eq!(config.data_dir, PathBuf::from("./herald-data"));
        assert_eq!(config.tls, TlsMode::SelfSigned);
        assert!(config.tls_san.is_empty());
        assert!(!config.reset);
        assert_eq!(config.admin_password, None);
        assert!((1..=MAX_CORES).contains(&config.cores));
        assert_eq!(config.limits, Limits::default());
        assert_eq!(config.durability, Durability::Sync);
        assert_eq!(config.retention, Retention::default());
        assert_eq!(config.retention.max_events, 1_000_000);
        assert_eq!(config.retention.max_age, Duration::from_secs(7 * 86400));
        assert_eq!(config.retention.max_bytes, 1 << 30);
        assert_eq!(config.log_level, "info");
        assert_eq!(config.log_format, LogFormat::Text);
        assert_eq!(config.log_events_level, EventsLevel::Warn);
    }

    #[test]
    fn every_byte_retention_of_the_grammar_is_accepted_however_small() {
        for (flag, bytes) in [
            ("--retain-bytes=65536", 65_536),
            ("--retain-bytes=64KiB", 65_536),
            ("--retain-bytes=1", 1),
            ("--retain-bytes=0", 0),
        ] {
            let config =
                Config::from_args(flags(&[flag])).unwrap_or_else(|e| panic!("{flag}: {e}"));
            assert_eq!(config.retention.max_bytes, bytes, "{flag}");
        }
    }

    #[test]
    fn every_flag_is_parsed_into_its_setting() {
        let args = flags(&[
            "--listen=127.0.0.1:0",
            "--data-dir=/tmp/h",
            "--tls-cert=c.pem",
            "--tls-key=k.pem",
            "--tls-san=herald.example.org",
            "--tls-san=192.0.2.10,2001:db8::1",
            "--admin-password=pw",
            "--cores=3",
            "--durability=batched",
            "--log-level=debug",
            "--log-format=json",
            "--log-events-level=error",
            "--max-header-bytes=8KiB",
            "--header-timeout=5s",
            "--max-body-bytes=2MiB",
            "--max-command-bytes=1KiB",
            "--max-filters=10",
            "--outbound-budget=16MiB",
            "--ping-interval=10s",
            "--ping-timeout=25s",
            "--retain-events=500",
            "--retain-age=12h",
            "--retain-bytes=1GB",
        ]);
        let config = Config::from_args(args).unwrap();
        assert_eq!(config.listen, "127.0.0.1:0".parse().unwrap());
        assert!(config.listen_explicit);
        assert_eq!(
            config.tls_san,
            ["herald.example.org", "192.0.2.10", "2001:db8::1"]
        );
        assert_eq!(config.data_dir, PathBuf::from("/tmp/h"));
        assert_eq!(
            config.tls,
            TlsMode::Files {
                cert: "c.pem".into(),
                key: "k.pem".into()
            }
        );
        assert_eq!(config.admin_password.as_deref(), Some("pw"));
        assert_eq!(config.cores, 3);
        assert_eq!(config.durability, Durability::Batched);
        assert_eq!(config.log_level, "debug");
        assert_eq!(config.log_format, LogFormat::Json);
        assert_eq!(config.log_events_level, EventsLevel::Error);
        assert_eq!(
            config.limits,
            Limits {
                max_header_bytes: 8192,
                header_timeout: Duration::from_secs(5),
                max_body_bytes: 2 << 20,
                max_command_bytes: 1024,
                max_filters: 10,
                outbound_budget_bytes: 16 << 20,
                ping_interval: Duration::from_secs(10),
                ping_timeout: Duration::from_secs(25),
            }
        );
        assert_eq!(
            config.retention,
            Retention {
                max_events: 500,
                max_age: Duration::from_secs(12 * 3600),
                max_bytes: 1_000_000_000,
            }
        );
    }

    #[test]
    fn plain_is_a_switch_that_also_takes_an_explicit_boolean() {
        assert_eq!(flags(&["--plain"]).plain, Some(true));
        assert_eq!(flags(&["--plain=false"]).plain, Some(false));
        assert_eq!(flags(&["--plain=yes"]).plain, Some(true));
        assert_eq!(flags(&[]).plain, None);
        let config = Config::from_args(flags(&["--plain"])).unwrap();
        assert_eq!(config.tls, TlsMode::Plain);
    }

    #[test]
    fn bad_flag_values_are_rejected_by_the_parser_with_the_flag_named() {
        for bad in [
            "--max-body-bytes=lots",
            "--ping-interval=30",
            "--listen=nowhere",
            "--durability=eventually",
        ] {
            let argv = ["herald", bad];
            let error = match Cli::try_parse_from(argv) {
                Ok(_) => panic!("{bad} accepted"),
                Err(e) => e.to_string(),
            };
            let flag = bad.split('=').next().unwrap();
            assert!(error.contains(flag), "{bad}: {error}");
        }
    }

    #[test]
    fn a_file_sets_every_key() {
        let text = r#"
            listen = "127.0.0.1:9000"
            data_dir = "/var/lib/herald"
            plain = false
            tls_cert = "/etc/herald/cert.pem"
            tls_key = "/etc/herald/key.pem"
            tls_san = ["herald.example.org", "192.0.2.10"]
                        admin_password = "secret"
            admin_password_file = "/etc/herald/admin-password"
            cores = 2
            durability = "batched"
            log_level = "herald=debug,info"
            log_format = "json"
            log_events_level = "info"
            max_header_bytes = 32768
            header_timeout = "20s"
            max_body_bytes = "512KiB"
            max_command_bytes = "8KiB"
            max_filters = 64
            outbound_budget = "4MiB"
            ping_interval = "15s"
            ping_timeout = "45s"
            retain_events = 2000
            retain_age = "1d"
            retain_bytes = "10MB"
            history_events = 500
            history_age = "2d"
            shutdown_timeout = "5s"
            metrics_auth = true
        "#;
        let keys_in_text = text.lines().filter(|l| l.contains('=')).count();
        assert_eq!(
            keys_in_text,
            FILE_KEYS.len(),
            "the sample must cover every key"
        );
        let config = resolve(file(text)).unwrap();
        assert_eq!(config.listen, "127.0.0.1:9000".parse().unwrap());
        assert_eq!(config.data_dir, PathBuf::from("/var/lib/herald"));
        assert_eq!(
            config.tls,
            TlsMode::Files {
                cert: "/etc/herald/cert.pem".into(),
                key: "/etc/herald/key.pem".into()
            }
        );
        assert_eq!(config.tls_san, ["herald.example.org", "192.0.2.10"]);
        assert_eq!(config.admin_password.as_deref(), Some("secret"));
        assert_eq!(config.cores, 2);
        assert_eq!(config.durability, Durability::Batched);
        assert_eq!(config.log_level, "herald=debug,info");
        assert_eq!(config.log_format, LogFormat::Json);
        assert_eq!(config.log_events_level, EventsLevel::Info);
        assert_eq!(config.limits.max_header_bytes, 32768);
        assert_eq!(config.limits.header_timeout, Duration::from_secs(20));
        assert_eq!(config.limits.max_body_bytes, 512 * 1024);
        assert_eq!(config.limits.max_command_bytes, 8192);
        assert_eq!(config.limits.max_filters, 64);
        assert_eq!(config.limits.outbound_budget_bytes, 4 << 20);
        assert_eq!(config.limits.ping_interval, Duration::from_secs(15));
        assert_eq!(config.limits.ping_timeout, Duration::from_secs(45));
        assert_eq!(config.retention.max_events, 2000);
        assert_eq!(config.retention.max_age, Duration::from_secs(86400));
        assert_eq!(config.retention.max_bytes, 10_000_000);
        assert_eq!(config.history.max_connections, 500);
        assert_eq!(config.history.max_age, Duration::from_secs(2 * 86400));
        assert_eq!(config.shutdown_timeout, Duration::from_secs(5));
        assert!(config.metrics_auth);
    }

    #[test]
    fn a_flag_beats_the_environment_which_beats_the_file_which_beats_the_default() {
        // clap puts a flag or its HERALD_* variable into the same field, flag first; so the
        // command-line value here stands for either, and the file fills only what both leave.
        let from_file =
            file("listen = \"127.0.0.1:1111\"\nmax_filters = 7\ndurability = \"batched\"\n");
        let mut from_command_line = flags(&["--listen=127.0.0.1:2222"]);
        from_command_line.max_filters = Some(9);
        let config = resolve(from_command_line.or(from_file)).unwrap();
        assert_eq!(config.listen, "127.0.0.1:2222".parse().unwrap());
        assert_eq!(config.limits.max_filters, 9);
        assert_eq!(config.durability, Durability::Batched);
        assert_eq!(
            config.limits.max_body_bytes,
            Limits::default().max_body_bytes
        );
    }

    #[test]
    fn from_args_reads_the_file_named_by_config() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("herald.toml");
        fs::write(&path, "cores = 5\nmax_filters = 3\n").unwrap();
        let config_flag = format!("--config={}", path.display());
        let config = Config::from_args(flags(&[&config_flag, "--cores=4"])).unwrap();
        assert_eq!(config.cores, 4);
        assert_eq!(config.limits.max_filters, 3);
        assert_eq!(Config::check_file(&path).unwrap().cores, 5);
    }

    #[test]
    fn a_missing_config_file_is_an_error_naming_it() {
        let error = Config::check_file(Path::new("/nonexistent/herald.toml")).unwrap_err();
        assert!(matches!(error, ConfigError::ReadFile { .. }), "{error:?}");
        assert!(error.to_string().contains("/nonexistent/herald.toml"));
    }

    #[test]
    fn an_unknown_key_is_an_error_naming_the_key_file_and_line() {
        let error = file_error("listen = \"127.0.0.1:1\"\n\nlisten_addr = \"x\"\n");
        match &error {
            ConfigError::UnknownKey { path, line, key } => {
                assert_eq!(path, Path::new("herald.toml"));
                assert_eq!(*line, 3);
                assert_eq!(key, "listen_addr");
            }
            other => panic!("expected an unknown key, got {other:?}"),
        }
        let message = error.to_string();
        assert!(
            message.starts_with("herald.toml:3: unknown key `listen_addr`"),
            "{message}"
        );
    }

    #[test]
    fn a_section_is_an_unknown_key_because_the_file_is_one_flat_table() {
        let error = file_error("cores = 1\n[server]\nlisten = \"127.0.0.1:1\"\n");
        assert!(
            matches!(&error, ConfigError::UnknownKey { key, line: 2, .. } if key == "server"),
            "{error:?}"
        );
    }

    #[test]
    fn bad_file_values_name_the_key_and_line() {
        let cases = [
            ("plain = \"yes\"", "plain"),
            ("cores = \"four\"", "cores"),
            ("cores = -1", "cores"),
            ("listen = \"localhost\"", "listen"),
            ("max_body_bytes = \"1.5MiB\"", "max_body_bytes"),
            ("max_body_bytes = true", "max_body_bytes"),
            ("ping_interval = 30", "ping_interval"),
            ("retain_age = \"a week\"", "retain_age"),
            ("durability = \"eventually\"", "durability"),
            ("log_format = \"xml\"", "log_format"),
            ("log_events_level = \"warning\"", "log_events_level"),
        ];
        for (line, expected_key) in cases {
            let text = format!("# herald\n{line}\n");
            match file_error(&text) {
                ConfigError::BadValue {
                    key,
                    line: at,
                    reason,
                    ..
                } => {
                    assert_eq!(key, expected_key, "{line}");
                    assert_eq!(at, 2, "{line}");
                    assert!(!reason.is_empty());
                }
                other => panic!("{line}: expected a bad value, got {other:?}"),
            }
        }
    }

    #[test]
    fn invalid_toml_is_a_syntax_error_with_its_line() {
        let error = file_error("cores = 1\nlisten = \n");
        assert!(
            matches!(error, ConfigError::Syntax { line: 2, .. }),
            "{error:?}"
        );
        let error = file_error("cores = 1\ncores = 2\n");
        assert!(
            matches!(error, ConfigError::Syntax { line: 2, .. }),
            "{error:?}"
        );
    }

    #[test]
    fn out_of_range_settings_are_rejected_naming_the_setting() {
        let cases: [(&[&str], &str); 13] = [
            (
                &["--ping-interval=30s", "--ping-timeout=30s"],
                "ping_timeout",
            ),
            (
                &["--ping-interval=60s", "--ping-timeout=30s"],
                "ping_timeout",
            ),
            (
                &["--ping-interval=100ms", "--ping-timeout=30s"],
                "ping_interval",
            ),
            (&["--header-timeout=0s"], "header_timeout"),
            (&["--max-header-bytes=100"], "max_header_bytes"),
            (&["--max-body-bytes=0"], "max_body_bytes"),
            (&["--max-command-bytes=10"], "max_command_bytes"),
            (&["--max-filters=0"], "max_filters"),
            (&["--outbound-budget=1KiB"], "outbound_budget"),
            (&["--max-body-bytes=8MiB"], "outbound_budget"),
            (&["--retain-events=0"], "retain_events"),
            (&["--cores=0"], "cores"),
            (&["--cores=1025"], "cores"),
        ];
        for (list, key) in cases {
            assert_eq!(invalid_key(flags(list)), key, "{list:?}");
        }
        assert_eq!(invalid_key(flags(&["--log-level=info,,=["])), "log_level");
        assert_eq!(invalid_key(flags(&["--log-level=warning"])), "log_level");
        assert_eq!(invalid_key(flags(&["--log-level=verbose"])), "log_level");
        assert_eq!(invalid_key(flags(&["--admin-password="])), "admin_password");
    }

    #[test]
    fn tls_san_takes_dns_names_and_ip_addresses_and_names_a_bad_one() {
        let config = resolve(file("tls_san = \"*.example.org\"\n")).unwrap();
        assert_eq!(config.tls_san, ["*.example.org"]);
        for bad in [
            "",
            "has space",
            "under_score",
            "-lead.example",
            "a..b",
            "http://x",
        ] {
            let mut args = flags(&[]);
            args.tls_san = vec![bad.to_owned()];
            assert_eq!(invalid_key(args), "tls_san", "{bad:?}");
        }
        assert!(matches!(
            file_error("tls_san = [\"ok.example\", 7]\n"),
            ConfigError::BadValue { .. }
        ));
        // A listen address given in the file counts as given, like a flag.
        let config = resolve(file("listen = \"0.0.0.0:8092\"\n")).unwrap();
        assert!(config.listen_explicit);
    }

    #[test]
    fn tls_files_come_in_pairs_and_exclude_plain() {
        assert_eq!(invalid_key(flags(&["--tls-cert=c.pem"])), "tls_key");
        assert_eq!(invalid_key(flags(&["--tls-key=k.pem"])), "tls_cert");
        assert_eq!(
            invalid_key(flags(&["--plain", "--tls-cert=c", "--tls-key=k"])),
            "plain"
        );
        let config = resolve(flags(&["--plain=false", "--tls-cert=c", "--tls-key=k"])).unwrap();
        assert!(matches!(config.tls, TlsMode::Files { .. }));
    }

    #[test]
    fn invalid_settings_name_both_the_key_and_the_flag() {
        let error = resolve(flags(&["--max-filters=0"])).unwrap_err();
        let message = error.to_string();
        assert!(message.contains("`max_filters`"), "{message}");
        assert!(message.contains("--max-filters"), "{message}");
    }

    #[test]
    fn sizes_parse_with_binary_and_decimal_units() {
        let table: &[(&str, u64)] = &[
            ("0", 0),
            ("65536", 65536),
            ("64KiB", 64 * 1024),
            ("512MiB", 512 << 20),
            ("1GiB", 1 << 30),
            ("2TiB", 2 << 40),
            ("64kib", 64 * 1024),
            ("10B", 10),
            ("5KB", 5_000),
            ("5kB", 5_000),
            ("3MB", 3_000_000),
            ("1GB", 1_000_000_000),
            (" 4 KiB ", 4096),
            ("18446744073709551615", u64::MAX),
        ];
        for &(text, expected) in table {
            assert_eq!(parse_size(text), Ok(expected), "{text:?}");
        }
        for bad in [
            "",
            "KiB",
            "1.5GiB",
            "-1",
            "1K",
            "1 GiBs",
            "10 parsecs",
            "1é",
            "99999999999GiB",
            "18446744073709551616",
        ] {
            assert!(parse_size(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn durations_parse_with_humantime_units() {
        let table: &[(&str, u64)] = &[
            ("30s", 30),
            ("15m", 15 * 60),
            ("12h", 12 * 3600),
            ("7d", 7 * 86400),
            ("1h 30m", 5400),
            (" 10s ", 10),
        ];
        for &(text, seconds) in table {
            assert_eq!(
                parse_duration(text),
                Ok(Duration::from_secs(seconds)),
                "{text:?}"
            );
        }
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        for bad in ["", "30", "soon", "7 days ago", "-5s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn a_missing_data_dir_is_created_private_with_its_parents() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("a/b/herald-data");
        prepare_data_dir(&dir).unwrap();
        let mode = fs::metadata(&dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        // An existing, writable directory is accepted as is and left empty.
        prepare_data_dir(&dir).unwrap();
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 0);
    }

    #[test]
    fn a_data_dir_that_is_a_file_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let path = root.path().join("not-a-dir");
        fs::write(&path, "x").unwrap();
        let error = prepare_data_dir(&path).unwrap_err();
        assert!(matches!(error, ConfigError::DataDir { .. }), "{error:?}");
        assert!(error.to_string().contains("not a directory"), "{error}");
    }

    #[test]
    fn a_read_only_data_dir_is_refused_unless_running_as_root() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("ro");
        fs::create_dir(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o500)).unwrap();
        // root bypasses permission bits; the probe then rightly finds the directory writable.
        let can_write_anyway = fs::write(dir.join("probe"), "x").is_ok();
        let result = prepare_data_dir(&dir);
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
        if can_write_anyway {
            assert!(result.is_ok(), "{result:?}");
        } else {
            let error = result.unwrap_err();
            assert!(error.to_string().contains("not writable"), "{error}");
        }
    }

    #[test]
    fn the_admin_password_can_come_from_a_file_and_a_direct_password_beats_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin-password");
        fs::write(&path, "from-file\nignored second line\n").unwrap();
        let mut args = flags(&[]);
        args.admin_password_file = Some(path.clone());
        assert_eq!(
            resolve(args).unwrap().admin_password.as_deref(),
            Some("from-file")
        );
        let mut args = flags(&["--admin-password=direct"]);
        args.admin_password_file = Some(path);
        assert_eq!(
            resolve(args).unwrap().admin_password.as_deref(),
            Some("direct")
        );
        let mut args = flags(&[]);
        args.admin_password_file = Some(dir.path().join("missing"));
        assert_eq!(invalid_key(args), "admin_password_file");
    }
}
