//! Every setting of `herald serve`, declared once: its flag and `HERALD_*` variable (the clap
//! attributes), its config file key (the field name), how the file spells its value, its
//! default, its own bound and what a SIGHUP does with a new value. The `keys!` macro turns the
//! table into the flag struct, the file reader, the merge, the defaults and checks, and the
//! reload report, so a key cannot be added to one of them and missed in another.
//!
//! Checks that involve two keys (ping timeout against interval, the TLS trio, the outbound
//! budget against the body limit, the admin password against its file) are in `resolve`.

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::file::FileEntry;
use super::units::{parse_duration, parse_size};
use super::{Config, ConfigError, Durability, EventsLevel, LogFormat, MAX_CORES, invalid};

/// Smallest request head limit: a websocket upgrade carrying a bearer token must fit.
const MIN_HEADER_BYTES: u64 = 1024;
/// Smallest body limit: a typical small event must fit.
const MIN_BODY_BYTES: u64 = 1024;
/// Smallest command limit: `replay SEQ EPOCH` and a short filter must fit.
const MIN_COMMAND_BYTES: u64 = 256;
/// The database's page cache by default: sled's own default (1 GiB) let a busy server grow to
/// hundreds of MiB; with this much, publishing and replaying recent events run as fast.
pub(super) const DEFAULT_CACHE_BYTES: u64 = 32 * 1024 * 1024;
/// Smallest page cache: less is more likely a size written without its unit than a wish.
const MIN_CACHE_BYTES: u64 = 1024 * 1024;
/// Largest page cache: far beyond any machine herald runs on, so a typo's extra digits are caught.
const MAX_CACHE_BYTES: u64 = 1 << 40;
/// Shortest header timeout and ping interval: shorter ones close healthy clients on slow links.
const MIN_INTERVAL: Duration = Duration::from_secs(1);

/// What a SIGHUP does with a key's new value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reload {
    /// The running server applies it.
    Live,
    /// It takes effect only after a restart; the reload names it by this setting.
    Restart(&'static str),
}

/// A key's value once merged: the type itself when it has a default, else an `Option`.
macro_rules! value_type {
    ($t:ty) => { Option<$t> };
    ($t:ty, $default:expr) => { $t };
}

macro_rules! value_or_default {
    ($given:expr) => {
        $given
    };
    ($given:expr, $default:expr) => {
        $given.unwrap_or_else(|| $default)
    };
}

macro_rules! reload_kind {
    (live) => {
        Reload::Live
    };
    (restart($setting:literal, $($rest:tt)*)) => {
        Reload::Restart($setting)
    };
}

/// Adds a restart key's setting to `$out` when any field of the resolved config it feeds changed.
macro_rules! restart_if_changed {
    ($out:ident, $old:ident, $new:ident, live) => {};
    ($out:ident, $old:ident, $new:ident, restart($setting:literal, $($($field:ident).+),+)) => {
        if ($($old.$($field).+ != $new.$($field).+)||+) && !$out.contains(&$setting) {
            $out.push($setting);
        }
    };
}

macro_rules! keys {
    ($(
        $(#[$attr:meta])*
        $key:ident: $t:ty {
            $(default: $default:expr,)?
            file: $reader:ident($($reader_arg:expr),*),
            $(check: $check:ident($($check_arg:expr),*),)?
            reload: $reload:ident $(($($reload_spec:tt)*))?,
        }
    )*) => {
        /// Settings of `herald serve`, each a flag that can also be set by a HERALD_* variable.
        // Every field is optional so that "not given" can be told apart from a value, which lets
        // the config file fill only the gaps that flags and variables leave.
        #[derive(Debug, Clone, Default, clap::Args)]
        pub struct ServeArgs {
            /// TOML config file; flags and HERALD_* variables override its settings
            #[arg(long, env = "HERALD_CONFIG", value_name = "FILE")]
            pub config: Option<PathBuf>,
            $(
                $(#[$attr])*
                pub $key: Option<$t>,
            )*
            /// Start even though this data directory's event log is gone (its database is empty or missing), beginning a new, empty log with a new Epoch. Deletes nothing
            #[arg(long)]
            pub reset: bool,
        }

        impl ServeArgs {
            /// Fills every setting not given here from `lower`.
            pub(super) fn or(self, lower: ServeArgs) -> ServeArgs {
                ServeArgs {
                    config: self.config.or(lower.config),
                    $($key: self.$key.or(lower.$key),)*
                    // Only ever a flag: a file or variable that kept it would hide a lost log for good.
                    reset: self.reset,
                }
            }
        }

        /// The keys a config file may hold, in the order `herald serve --help` lists the flags.
        pub const FILE_KEYS: &[&str] = &[$(stringify!($key)),*];

        /// What a SIGHUP does with each key, in the order of [`FILE_KEYS`].
        pub const RELOAD: &[(&str, Reload)] =
            &[$((stringify!($key), reload_kind!($reload $(($($reload_spec)*))?))),*];

        /// Sets the key `entry` names; false if herald has no such key.
        pub(super) fn read_key(out: &mut ServeArgs, entry: &FileEntry<'_>) -> Result<bool, ConfigError> {
            match entry.key {
                $(stringify!($key) => out.$key = Some(entry.$reader($($reader_arg),*)?),)*
                _ => return Ok(false),
            }
            Ok(true)
        }

        /// Every key's value with its default applied and its own bound checked.
        pub(super) struct Settings {
            $(pub(super) $key: value_type!($t $(, $default)?),)*
            pub(super) reset: bool,
        }

        pub(super) fn settings(args: ServeArgs) -> Result<Settings, ConfigError> {
            $(
                let $key = value_or_default!(args.$key $(, $default)?);
                $($check(stringify!($key), &$key $(, $check_arg)*)?;)?
            )*
            Ok(Settings { $($key,)* reset: args.reset })
        }

        impl Config {
            /// The settings whose change from `running` to this configuration takes effect only
            /// after a restart, each named once, in the order of [`FILE_KEYS`].
            pub fn needing_restart(&self, running: &Config) -> Vec<&'static str> {
                let mut settings = Vec::new();
                $(restart_if_changed!(settings, running, self, $reload $(($($reload_spec)*))?);)*
                settings
            }
        }
    };
}

keys! {
    /// Address to listen on [default: 0.0.0.0:8092, or 127.0.0.1:8092 while the admin has DRP's default password]
    #[arg(long, env = "HERALD_LISTEN", value_name = "ADDR")]
    listen: SocketAddr {
        file: parsed("an address like 0.0.0.0:8092"),
        reload: restart("listen", listen, listen_explicit),
    }
    /// Directory for the event log, generated certificate and secrets [default: ./herald-data]
    #[arg(long, env = "HERALD_DATA_DIR", value_name = "DIR")]
    data_dir: PathBuf {
        default: PathBuf::from("./herald-data"),
        file: path(),
        check: not_empty(),
        reload: restart("data_dir", data_dir),
    }
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
    plain: bool {
        default: false,
        file: boolean(),
        reload: restart("tls", tls),
    }
    /// TLS certificate chain (PEM); needs --tls-key. Without both, a self-signed one is generated
    #[arg(long, env = "HERALD_TLS_CERT", value_name = "FILE")]
    tls_cert: PathBuf {
        file: path(),
        reload: restart("tls", tls),
    }
    /// TLS private key (PEM) matching --tls-cert
    #[arg(long, env = "HERALD_TLS_KEY", value_name = "FILE")]
    tls_key: PathBuf {
        file: path(),
        reload: restart("tls", tls),
    }
    /// Another name or IP address for the self-signed certificate (repeatable; comma-separated in the environment). It always holds localhost, the loopback and interface addresses and the host name
    #[arg(
        long,
        env = "HERALD_TLS_SAN",
        value_delimiter = ',',
        value_name = "NAME|IP"
    )]
    tls_san: Vec<String> {
        default: Vec::new(),
        file: strings(),
        check: each_san(),
        reload: restart("tls_san", tls_san),
    }
    /// Password of the admin user `rocketskates`, applied on every start [default: keep the stored one; DRP's on first start]
    #[arg(
        long,
        env = "HERALD_ADMIN_PASSWORD",
        value_name = "PW",
        hide_env_values = true
    )]
    admin_password: String {
        file: text(),
        reload: restart("admin_password", admin_password),
    }
    /// File holding the admin password (first line), so it stays out of argv and the environment
    #[arg(long, env = "HERALD_ADMIN_PASSWORD_FILE", value_name = "FILE")]
    admin_password_file: PathBuf {
        file: path(),
        // Compared by the password read from it, so new contents under the same name count.
        reload: restart("admin_password", admin_password),
    }
    /// Number of core threads [default: all available cores]
    #[arg(long, env = "HERALD_CORES", value_name = "N")]
    cores: usize {
        default: available_cores(),
        file: integer(),
        check: core_count(),
        reload: restart("cores", cores),
    }
    /// When a publish is answered: after its flush to disk (sync) or before, with the flush at most 10 ms later (batched) [default: sync]
    #[arg(long, env = "HERALD_DURABILITY", value_enum, value_name = "MODE")]
    durability: Durability {
        default: Durability::Sync,
        file: choice(),
        reload: restart("durability", durability),
    }
    /// Memory for the database's page cache: more keeps more of the log and objects in memory for replays and reads [default: 32MiB]
    #[arg(long, env = "HERALD_CACHE_BYTES", value_parser = parse_size, value_name = "SIZE")]
    cache_bytes: u64 {
        default: DEFAULT_CACHE_BYTES,
        file: size(),
        check: within(MIN_CACHE_BYTES, MAX_CACHE_BYTES),
        reload: restart("cache_bytes", cache_bytes),
    }
    /// Log filter: a level (off, error, warn, info, debug, trace) for herald, or directives like `herald=debug,info`; other crates log at warn unless named [default: info]
    #[arg(long, env = "HERALD_LOG_LEVEL", value_name = "FILTER")]
    log_level: String {
        default: "info".to_owned(),
        file: text(),
        check: log_filter(),
        reload: live,
    }
    /// Log line format [default: text]
    #[arg(long, env = "HERALD_LOG_FORMAT", value_enum, value_name = "FORMAT")]
    log_format: LogFormat {
        default: LogFormat::Text,
        file: choice(),
        reload: restart("log_format", log_format),
    }
    /// Publish herald's log records at this level and above as events log.<level>.herald [default: warn]
    #[arg(
        long,
        env = "HERALD_LOG_EVENTS_LEVEL",
        value_enum,
        value_name = "LEVEL"
    )]
    log_events_level: EventsLevel {
        default: EventsLevel::Warn,
        file: choice(),
        reload: live,
    }
    /// Largest request head [default: 16KiB]
    #[arg(long, env = "HERALD_MAX_HEADER_BYTES", value_parser = parse_size, value_name = "SIZE")]
    max_header_bytes: u64 {
        default: 16 * 1024,
        file: size(),
        check: at_least(MIN_HEADER_BYTES),
        reload: restart("limits", limits.max_header_bytes),
    }
    /// Time a request head may take to arrive [default: 10s]
    #[arg(long, env = "HERALD_HEADER_TIMEOUT", value_parser = parse_duration, value_name = "DURATION")]
    header_timeout: Duration {
        default: Duration::from_secs(10),
        file: duration(),
        check: not_shorter(MIN_INTERVAL),
        reload: restart("limits", limits.header_timeout),
    }
    /// Largest request body [default: 1MiB]
    #[arg(long, env = "HERALD_MAX_BODY_BYTES", value_parser = parse_size, value_name = "SIZE")]
    max_body_bytes: u64 {
        default: 1024 * 1024,
        file: size(),
        check: at_least(MIN_BODY_BYTES),
        reload: restart("limits", limits.max_body_bytes),
    }
    /// Largest websocket command message [default: 4KiB]
    #[arg(long, env = "HERALD_MAX_COMMAND_BYTES", value_parser = parse_size, value_name = "SIZE")]
    max_command_bytes: u64 {
        default: 4 * 1024,
        file: size(),
        check: at_least(MIN_COMMAND_BYTES),
        reload: restart("limits", limits.max_command_bytes),
    }
    /// Most filters per websocket connection [default: 1024]
    #[arg(long, env = "HERALD_MAX_FILTERS", value_name = "N")]
    max_filters: u64 {
        default: 1024,
        file: integer(),
        check: at_least(1),
        reload: restart("limits", limits.max_filters),
    }
    /// Bytes queued to one connection before it is closed as a slow consumer [default: 8MiB]
    #[arg(long, env = "HERALD_OUTBOUND_BUDGET", value_parser = parse_size, value_name = "SIZE")]
    outbound_budget: u64 {
        default: 8 * 1024 * 1024,
        file: size(),
        reload: restart("limits", limits.outbound_budget_bytes),
    }
    /// How often an idle websocket is pinged [default: 30s]
    #[arg(long, env = "HERALD_PING_INTERVAL", value_parser = parse_duration, value_name = "DURATION")]
    ping_interval: Duration {
        default: Duration::from_secs(30),
        file: duration(),
        check: not_shorter(MIN_INTERVAL),
        reload: restart("limits", limits.ping_interval),
    }
    /// Silence after which a websocket is closed [default: 60s]
    #[arg(long, env = "HERALD_PING_TIMEOUT", value_parser = parse_duration, value_name = "DURATION")]
    ping_timeout: Duration {
        default: Duration::from_secs(60),
        file: duration(),
        reload: restart("limits", limits.ping_timeout),
    }
    /// Most open client connections; more are answered 503 and closed [default: the open-files limit (RLIMIT_NOFILE) minus 64, kept for the database, log and listeners]
    #[arg(long, env = "HERALD_MAX_CONNECTIONS", value_name = "N")]
    max_connections: u64 {
        default: default_max_connections(),
        file: integer(),
        check: at_least(1),
        reload: restart("limits", limits.max_connections),
    }
    /// Failed password logins one client address, or one user name, may cause at once before it gets 429 [default: 20]
    #[arg(long, env = "HERALD_AUTH_FAILURE_BURST", value_name = "N")]
    auth_failure_burst: u64 {
        // Twenty wrong passwords in a row is no typing mistake, and a NAT of many users fits.
        default: 20,
        file: integer(),
        check: at_least(1),
        reload: restart("limits", limits.auth_failure_burst),
    }
    /// Failed password logins per minute one client address, or one user name, may cause once its burst is spent [default: 30]
    #[arg(long, env = "HERALD_AUTH_FAILURES_PER_MINUTE", value_name = "N")]
    auth_failures_per_minute: u64 {
        // One every two seconds: a person retrying by hand never waits, a guessing script crawls.
        default: 30,
        file: integer(),
        check: at_least(1),
        reload: restart("limits", limits.auth_failures_per_minute),
    }
    /// Most events kept in the log [default: 1000000]
    #[arg(long, env = "HERALD_RETAIN_EVENTS", value_name = "N")]
    retain_events: u64 {
        default: 1_000_000,
        file: integer(),
        check: at_least(1),
        reload: live,
    }
    /// Oldest event kept in the log [default: 7d]
    #[arg(long, env = "HERALD_RETAIN_AGE", value_parser = parse_duration, value_name = "DURATION")]
    retain_age: Duration {
        default: Duration::from_secs(7 * 24 * 3600),
        file: duration(),
        check: not_shorter(MIN_INTERVAL),
        reload: live,
    }
    /// Most bytes of events kept in the log [default: 1GiB]
    #[arg(long, env = "HERALD_RETAIN_BYTES", value_parser = parse_size, value_name = "SIZE")]
    retain_bytes: u64 {
        // Any byte limit is accepted: the log always keeps its newest event, however large.
        default: 1024 * 1024 * 1024,
        file: size(),
        reload: live,
    }
    /// Most closed connections kept in the connection history [default: 100000]
    #[arg(long, env = "HERALD_HISTORY_EVENTS", value_name = "N")]
    history_events: u64 {
        default: 100_000,
        file: integer(),
        check: at_least(1),
        reload: restart("history", history.max_connections),
    }
    /// Oldest closed connection kept in the connection history [default: 30d]
    #[arg(long, env = "HERALD_HISTORY_AGE", value_parser = parse_duration, value_name = "DURATION")]
    history_age: Duration {
        default: Duration::from_secs(30 * 24 * 3600),
        file: duration(),
        check: not_shorter(MIN_INTERVAL),
        reload: restart("history", history.max_age),
    }
    /// Time SIGTERM may take to close clients and flush the log before exiting [default: 10s]
    #[arg(long, env = "HERALD_SHUTDOWN_TIMEOUT", value_parser = parse_duration, value_name = "DURATION")]
    shutdown_timeout: Duration {
        default: Duration::from_secs(10),
        file: duration(),
        check: not_shorter(MIN_INTERVAL),
        reload: restart("shutdown_timeout", shutdown_timeout),
    }
    /// Run as a node of a cluster on these NATS JetStream servers (comma-separated URLs) instead of the local event log [default: none, a single node]
    #[arg(long, env = "HERALD_NATS", value_delimiter = ',', value_name = "URL")]
    nats: Vec<String> {
        default: Vec::new(),
        file: strings(),
        check: each_nats_url(),
        reload: restart("nats", cluster),
    }
    /// NATS credentials file (JWT and NKey seed) for --nats
    #[arg(long, env = "HERALD_NATS_CREDS", value_name = "FILE")]
    nats_creds: PathBuf {
        file: path(),
        reload: restart("nats", cluster),
    }
    /// CA certificate (PEM) to verify the NATS servers' TLS with; needs tls:// URLs or servers that require TLS
    #[arg(long, env = "HERALD_NATS_TLS_CA", value_name = "FILE")]
    nats_tls_ca: PathBuf {
        file: path(),
        reload: restart("nats", cluster),
    }
    /// Name of the cluster: prefixes its stream and buckets, so several clusters can share one NATS system [default: herald]
    #[arg(long, env = "HERALD_CLUSTER_NAME", value_name = "NAME")]
    cluster_name: String {
        default: "herald".to_owned(),
        file: text(),
        check: valid_cluster_name(),
        reload: restart("nats", cluster),
    }
    /// This node's name, unique in the cluster [default: the host name]
    #[arg(long, env = "HERALD_NODE_NAME", value_name = "NAME")]
    node_name: String {
        file: text(),
        check: valid_node_name(),
        reload: restart("nats", cluster),
    }
    /// Replicas of the cluster's stream when a node creates it [default: 3, or the number of JetStream servers when fewer]
    #[arg(long, env = "HERALD_STREAM_REPLICAS", value_name = "N")]
    stream_replicas: u64 {
        file: integer(),
        check: replicas(),
        reload: restart("nats", cluster),
    }
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
    metrics_auth: bool {
        default: false,
        file: boolean(),
        reload: restart("metrics_auth", metrics_auth),
    }
}

/// Longest cluster name: it prefixes stream and bucket names, which NATS limits.
pub(super) const MAX_CLUSTER_NAME_BYTES: usize = 32;
/// Most replicas a JetStream stream may have.
const MAX_STREAM_REPLICAS: u64 = 5;

fn each_nats_url(key: &'static str, urls: &[String]) -> Result<(), ConfigError> {
    for url in urls {
        let rest = ["nats://", "tls://", "ws://", "wss://"]
            .iter()
            .find_map(|scheme| url.strip_prefix(scheme))
            .unwrap_or(url);
        if rest.is_empty() || rest.contains(char::is_whitespace) || rest.contains('/') {
            return Err(invalid(
                key,
                format!(
                    "{url:?} is not a NATS server URL; write e.g. nats://nats1.example.org:4222"
                ),
            ));
        }
    }
    Ok(())
}

fn valid_cluster_name(key: &'static str, name: &str) -> Result<(), ConfigError> {
    let valid = !name.is_empty()
        && name.len() <= MAX_CLUSTER_NAME_BYTES
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if valid {
        Ok(())
    } else {
        Err(invalid(
            key,
            format!(
                "{name:?} is not a cluster name: use 1 to {MAX_CLUSTER_NAME_BYTES} letters, \
                 digits, '-' or '_'"
            ),
        ))
    }
}

fn valid_node_name(key: &'static str, name: &Option<String>) -> Result<(), ConfigError> {
    let Some(name) = name else {
        return Ok(());
    };
    let valid = !name.is_empty()
        && name.len() <= 255
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if valid {
        Ok(())
    } else {
        Err(invalid(
            key,
            format!("{name:?} is not a node name: use letters, digits, '-', '_' or '.'"),
        ))
    }
}

fn replicas(key: &'static str, replicas: &Option<u64>) -> Result<(), ConfigError> {
    match replicas {
        Some(n) if !(1..=MAX_STREAM_REPLICAS).contains(n) => Err(invalid(
            key,
            format!("{n} is out of range: use 1 to {MAX_STREAM_REPLICAS}"),
        )),
        _ => Ok(()),
    }
}

/// Descriptors kept back from the open-files limit for the database, the log files, the
/// listeners and the process's own.
const RESERVED_FDS: u64 = 64;

/// The default `max_connections`: the soft open-files limit minus [`RESERVED_FDS`], so accept
/// never runs out of descriptors while the database still has room.
pub(super) fn default_max_connections() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct it is given, which lives for the call.
    let read = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0;
    let soft = if read { limit.rlim_cur } else { 1024 };
    // RLIM_INFINITY is u64::MAX: bound it to something a table can hold.
    soft.min(1 << 20).saturating_sub(RESERVED_FDS).max(1)
}

/// All available cores, within [`MAX_CORES`].
fn available_cores() -> usize {
    std::thread::available_parallelism()
        .map(NonZeroUsize::get)
        .unwrap_or(1)
        .min(MAX_CORES)
}

fn at_least(key: &'static str, value: &u64, min: u64) -> Result<(), ConfigError> {
    if *value < min {
        return Err(invalid(
            key,
            format!("{value} is too small: use at least {min}"),
        ));
    }
    Ok(())
}

fn within(key: &'static str, value: &u64, min: u64, max: u64) -> Result<(), ConfigError> {
    if !(min..=max).contains(value) {
        return Err(invalid(
            key,
            format!(
                "{value} bytes is out of range: use {} to {}",
                mebibytes(min),
                mebibytes(max)
            ),
        ));
    }
    Ok(())
}

/// A whole number of MiB as the size grammar writes it, in its largest exact unit: `1MiB`, `1TiB`.
fn mebibytes(bytes: u64) -> String {
    match bytes >> 20 {
        mib if mib > 0 && mib % (1 << 20) == 0 => format!("{}TiB", mib >> 20),
        mib if mib > 0 && mib % (1 << 10) == 0 => format!("{}GiB", mib >> 10),
        mib => format!("{mib}MiB"),
    }
}

pub(super) fn not_shorter(
    key: &'static str,
    value: &Duration,
    min: Duration,
) -> Result<(), ConfigError> {
    if *value < min {
        return Err(invalid(
            key,
            format!(
                "{} is too short: use at least {}",
                humantime::format_duration(*value),
                humantime::format_duration(min)
            ),
        ));
    }
    Ok(())
}

fn core_count(key: &'static str, cores: &usize) -> Result<(), ConfigError> {
    if !(1..=MAX_CORES).contains(cores) {
        return Err(invalid(
            key,
            format!("{cores} is out of range: use 1 to {MAX_CORES}"),
        ));
    }
    Ok(())
}

fn not_empty(key: &'static str, path: &Path) -> Result<(), ConfigError> {
    if path.as_os_str().is_empty() {
        return Err(invalid(key, "must not be empty".to_owned()));
    }
    Ok(())
}

fn log_filter(key: &'static str, filter: &str) -> Result<(), ConfigError> {
    crate::logging::stderr_filter(filter)
        .map(drop)
        .map_err(|reason| invalid(key, reason.to_string()))
}

fn each_san(key: &'static str, names: &[String]) -> Result<(), ConfigError> {
    for name in names {
        check_san(name).map_err(|reason| invalid(key, reason))?;
    }
    Ok(())
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
