//! Server configuration: flags, `HERALD_*` environment variables and a TOML file, merged
//! (flag beats env beats file) and validated into one [`Config`] in a single fallible step.
//! Each key is declared once, in the table of `config/keys.rs`; this module checks what involves
//! several keys and shapes the result.
//!
//! The file is one flat TOML table whose keys are the flag names in snake case (`listen`,
//! `data_dir`, `max_body_bytes`, `retain_age`, …). Sizes are integers or strings with a unit
//! (`"64KiB"`), durations are strings with a unit (`"30s"`).

mod file;
mod keys;
mod units;

use std::fs;
use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::ValueEnum;

pub use keys::{FILE_KEYS, RELOAD, Reload, ServeArgs};

/// Reads a config file into the flags' shape.
fn read_file(path: &Path) -> Result<ServeArgs, ConfigError> {
    file::read_file(path, keys::read_key)
}

/// Parses a config file's text into the flags' shape.
pub(crate) fn parse_file(path: &Path, text: &str) -> Result<ServeArgs, ConfigError> {
    file::parse_file(path, text, keys::read_key)
}
pub use units::{parse_duration, parse_size};

pub use crate::logging::{EventsLevel, LogFormat};

/// Address every core listens on unless configured: all interfaces, DRP's port.
pub const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 8092);
/// Address listened on instead of [`DEFAULT_LISTEN`] while the admin has DRP's default
/// password and no address was configured: loopback, so the well-known password is not exposed.
pub const DEFAULT_PASSWORD_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 8092);
/// Most core threads herald starts: far above any machine it targets, it catches typos.
pub const MAX_CORES: usize = 1024;
/// Smallest outbound budget, whatever the body limit.
const MIN_OUTBOUND_BUDGET: u64 = 64 * 1024;

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
    /// Open client connections at most; more are answered 503 and closed.
    pub max_connections: usize,
    /// Failed password logins one address or user name may cause at once.
    pub auth_failure_burst: u32,
    /// Failed password logins one address or user name may cause per minute after the burst.
    pub auth_failures_per_minute: u32,
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
    /// Bytes of memory for the page cache of each sled database herald opens.
    pub cache_bytes: u64,
    /// How much of the event log is kept.
    pub retention: Retention,
    /// Log filter: a level or `tracing` directives such as `herald=debug,info`.
    pub log_level: String,
    /// How log lines are written.
    pub log_format: LogFormat,
    /// The least severe of herald's log records published as `log.<level>.herald` events.
    pub log_events_level: EventsLevel,
    /// How much connection history is kept.
    pub history: HistoryRetention,
    /// Time a graceful stop may take.
    pub shutdown_timeout: Duration,
    /// Whether `/metrics` requires credentials.
    pub metrics_auth: bool,
    /// Start a new, empty log where the data directory's log is missing (`serve --reset`).
    pub reset: bool,
    /// The cluster this node belongs to (`--nats`); `None` runs a single node on sled.
    pub cluster: Option<Cluster>,
}

/// A node's place in a cluster on NATS JetStream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster {
    /// The NATS servers' URLs.
    pub nats: Vec<String>,
    /// NATS credentials file.
    pub creds: Option<PathBuf>,
    /// CA certificate for TLS to NATS.
    pub tls_ca: Option<PathBuf>,
    /// Prefix of the cluster's stream and buckets.
    pub name: String,
    /// This node's name.
    pub node: String,
    /// Replicas of a stream this node creates; `None` for 3, or fewer JetStream servers.
    pub replicas: Option<usize>,
}

/// How much of the closed-connection history is kept; the oldest entries go first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryRetention {
    /// Most closed connections kept.
    pub max_connections: u64,
    /// Oldest closed connection kept, by its close time.
    pub max_age: Duration,
}

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

/// Checks what involves several keys and shapes the merged settings into a [`Config`].
pub(crate) fn resolve(args: ServeArgs) -> Result<Config, ConfigError> {
    let s = keys::settings(args)?;
    // Twice the body limit, so one largest event, grown by JSON escaping and the Seq field, fits.
    let min_outbound = s.max_body_bytes.saturating_mul(2).max(MIN_OUTBOUND_BUDGET);
    if s.outbound_budget < min_outbound {
        return Err(invalid(
            "outbound_budget",
            format!(
                "{} bytes is too small: it must be at least {min_outbound} bytes \
                 (twice max_body_bytes, and at least {MIN_OUTBOUND_BUDGET}) so the largest event fits",
                s.outbound_budget
            ),
        ));
    }
    if s.ping_timeout <= s.ping_interval {
        return Err(invalid(
            "ping_timeout",
            format!(
                "{} must be longer than ping_interval ({}), or every idle client is closed \
                 before it can answer a ping",
                humantime::format_duration(s.ping_timeout),
                humantime::format_duration(s.ping_interval)
            ),
        ));
    }
    let limits = Limits {
        max_header_bytes: to_usize("max_header_bytes", s.max_header_bytes)?,
        header_timeout: s.header_timeout,
        max_body_bytes: to_usize("max_body_bytes", s.max_body_bytes)?,
        max_command_bytes: to_usize("max_command_bytes", s.max_command_bytes)?,
        max_filters: to_usize("max_filters", s.max_filters)?,
        outbound_budget_bytes: to_usize("outbound_budget", s.outbound_budget)?,
        ping_interval: s.ping_interval,
        ping_timeout: s.ping_timeout,
        max_connections: to_usize("max_connections", s.max_connections)?,
        auth_failure_burst: to_u32("auth_failure_burst", s.auth_failure_burst)?,
        auth_failures_per_minute: to_u32("auth_failures_per_minute", s.auth_failures_per_minute)?,
    };

    let tls = match (s.plain, s.tls_cert, s.tls_key) {
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
    let admin_password = match (s.admin_password, &s.admin_password_file) {
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

    Ok(Config {
        listen: s.listen.unwrap_or(DEFAULT_LISTEN),
        listen_explicit: s.listen.is_some(),
        data_dir: s.data_dir,
        tls,
        tls_san: s.tls_san,
        admin_password,
        cores: s.cores,
        limits,
        durability: s.durability,
        cache_bytes: s.cache_bytes,
        retention: Retention {
            max_events: s.retain_events,
            max_age: s.retain_age,
            max_bytes: s.retain_bytes,
        },
        log_level: s.log_level,
        log_format: s.log_format,
        log_events_level: s.log_events_level,
        history: HistoryRetention {
            max_connections: s.history_events,
            max_age: s.history_age,
        },
        shutdown_timeout: s.shutdown_timeout,
        metrics_auth: s.metrics_auth,
        reset: s.reset,
        cluster: cluster(
            s.nats,
            s.nats_creds,
            s.nats_tls_ca,
            s.cluster_name,
            s.node_name,
            s.stream_replicas,
        )?,
    })
}

/// The cluster settings, when `nats` names servers; the others need it.
fn cluster(
    nats: Vec<String>,
    creds: Option<PathBuf>,
    tls_ca: Option<PathBuf>,
    name: String,
    node: Option<String>,
    replicas: Option<u64>,
) -> Result<Option<Cluster>, ConfigError> {
    if nats.is_empty() {
        let orphan = [
            ("nats_creds", creds.is_some()),
            ("nats_tls_ca", tls_ca.is_some()),
            ("node_name", node.is_some()),
            ("stream_replicas", replicas.is_some()),
        ];
        if let Some((key, _)) = orphan.into_iter().find(|(_, given)| *given) {
            return Err(invalid(
                key,
                "applies only to a cluster node: give nats too, or drop it".to_owned(),
            ));
        }
        return Ok(None);
    }
    let node = match node {
        Some(node) => node,
        None => host_name().ok_or_else(|| {
            invalid(
                "node_name",
                "the host name cannot be read; name this node with node_name".to_owned(),
            )
        })?,
    };
    Ok(Some(Cluster {
        nats,
        creds,
        tls_ca,
        name,
        node,
        replicas: replicas.and_then(|n| usize::try_from(n).ok()),
    }))
}

/// This machine's host name, when the kernel reports one that is a valid DNS name.
pub(crate) fn host_name() -> Option<String> {
    // Read from procfs because std has no stable host name call and libc's needs `unsafe`.
    let raw = fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| fs::read_to_string("/etc/hostname"))
        .ok()?;
    let name = raw.trim();
    let valid = !name.is_empty()
        && name.len() <= 253
        && name != "localhost"
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    valid.then(|| name.to_owned())
}

fn invalid(key: &'static str, reason: String) -> ConfigError {
    ConfigError::Invalid { key, reason }
}

fn to_usize(key: &'static str, value: u64) -> Result<usize, ConfigError> {
    usize::try_from(value)
        .map_err(|_| invalid(key, format!("{value} is too large for this machine")))
}

fn to_u32(key: &'static str, value: u64) -> Result<u32, ConfigError> {
    u32::try_from(value).map_err(|_| {
        invalid(
            key,
            format!("{value} is too large: use at most {}", u32::MAX),
        )
    })
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
    fn a_reload_names_each_changed_key_that_needs_a_restart_and_no_key_it_applies() {
        let dir = tempfile::tempdir().unwrap();
        let password_file = dir.path().join("admin-password");
        fs::write(&password_file, "from-file\n").unwrap();
        let password_file = format!(
            "admin_password_file = {:?}",
            password_file.display().to_string()
        );
        let pair = "tls_cert = \"c.pem\"\ntls_key = \"k.pem\"";
        let nats = "nats = \"nats://h1:4222\"";
        // (key, its lines before, its lines after): a change of that key alone.
        let cases: &[(&str, &str, &str)] = &[
            ("listen", "", "listen = \"127.0.0.1:9000\""),
            ("data_dir", "", "data_dir = \"/var/lib/herald\""),
            ("plain", "", "plain = true"),
            (
                "tls_cert",
                pair,
                "tls_cert = \"other.pem\"\ntls_key = \"k.pem\"",
            ),
            (
                "tls_key",
                pair,
                "tls_cert = \"c.pem\"\ntls_key = \"other.pem\"",
            ),
            ("tls_san", "", "tls_san = [\"herald.example.org\"]"),
            ("admin_password", "", "admin_password = \"secret\""),
            ("admin_password_file", "", &password_file),
            ("cores", "cores = 1", "cores = 2"),
            ("durability", "", "durability = \"batched\""),
            ("cache_bytes", "", "cache_bytes = \"64MiB\""),
            ("log_level", "", "log_level = \"debug\""),
            ("log_format", "", "log_format = \"json\""),
            ("log_events_level", "", "log_events_level = \"info\""),
            ("max_header_bytes", "", "max_header_bytes = \"32KiB\""),
            ("header_timeout", "", "header_timeout = \"20s\""),
            ("max_body_bytes", "", "max_body_bytes = \"2MiB\""),
            ("max_command_bytes", "", "max_command_bytes = \"8KiB\""),
            ("max_filters", "", "max_filters = 7"),
            ("outbound_budget", "", "outbound_budget = \"16MiB\""),
            ("ping_interval", "", "ping_interval = \"40s\""),
            ("ping_timeout", "", "ping_timeout = \"90s\""),
            ("max_connections", "", "max_connections = 10"),
            ("auth_failure_burst", "", "auth_failure_burst = 3"),
            (
                "auth_failures_per_minute",
                "",
                "auth_failures_per_minute = 3",
            ),
            ("retain_events", "", "retain_events = 5"),
            ("retain_age", "", "retain_age = \"1d\""),
            ("retain_bytes", "", "retain_bytes = \"1MiB\""),
            ("history_events", "", "history_events = 5"),
            ("history_age", "", "history_age = \"1d\""),
            ("shutdown_timeout", "", "shutdown_timeout = \"5s\""),
            ("nats", "", "nats = \"nats://h1:4222\""),
            (
                "nats_creds",
                nats,
                "nats = \"nats://h1:4222\"\nnats_creds = \"/n.creds\"",
            ),
            (
                "nats_tls_ca",
                nats,
                "nats = \"nats://h1:4222\"\nnats_tls_ca = \"/ca.pem\"",
            ),
            (
                "cluster_name",
                nats,
                "nats = \"nats://h1:4222\"\ncluster_name = \"c2\"",
            ),
            (
                "node_name",
                nats,
                "nats = \"nats://h1:4222\"\nnode_name = \"n2\"",
            ),
            (
                "stream_replicas",
                nats,
                "nats = \"nats://h1:4222\"\nstream_replicas = 1",
            ),
            ("metrics_auth", "", "metrics_auth = true"),
        ];
        let covered: Vec<&str> = cases.iter().map(|(key, _, _)| *key).collect();
        assert_eq!(covered, FILE_KEYS, "one case per key, in table order");
        for (&(key, before, after), &(reload_key, reload)) in cases.iter().zip(RELOAD) {
            assert_eq!(key, reload_key);
            let running = resolve(file(before)).unwrap();
            let new = resolve(file(after)).unwrap();
            let expected = match reload {
                Reload::Live => vec![],
                Reload::Restart(setting) => vec![setting],
            };
            assert_eq!(new.needing_restart(&running), expected, "{key}");
        }
    }

    #[test]
    fn new_contents_of_the_same_admin_password_file_need_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin-password");
        let mut args = flags(&[]);
        args.admin_password_file = Some(path.clone());
        fs::write(&path, "first\n").unwrap();
        let running = resolve(args.clone()).unwrap();
        fs::write(&path, "second\n").unwrap();
        let new = resolve(args).unwrap();
        assert_eq!(new.needing_restart(&running), ["admin_password"]);
    }

    #[test]
    fn a_reload_names_each_setting_once_however_many_of_its_keys_changed() {
        let running = resolve(flags(&[])).unwrap();
        let new = resolve(flags(&[
            "--max-filters=7",
            "--ping-interval=10s",
            "--cores=1",
        ]))
        .unwrap();
        let mut expected = vec!["limits"];
        if running.cores != 1 {
            expected.insert(0, "cores");
        }
        assert_eq!(new.needing_restart(&running), expected);
    }

    #[test]
    fn every_default_a_flag_help_names_is_the_default_applied() {
        let defaults = format!("{:?}", resolve(flags(&[])).unwrap());
        let command = Cli::command();
        let mut checked = 0;
        for arg in command.get_arguments() {
            let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
            let Some(default) = help
                .split_once("[default: ")
                .and_then(|(_, rest)| rest.strip_suffix(']'))
            else {
                continue;
            };
            // Prose defaults (computed or conditional) are checked by the defaults test.
            if default.contains(' ') {
                continue;
            }
            let flag = format!("--{}={default}", arg.get_long().unwrap_or_default());
            let config = resolve(flags(&[&flag])).unwrap_or_else(|e| panic!("{flag}: {e}"));
            assert_eq!(format!("{config:?}"), defaults, "{flag}");
            checked += 1;
        }
        assert_eq!(checked, 24, "the help texts with a one-word default");
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
        assert_eq!(
            config.limits,
            Limits {
                max_header_bytes: 16 * 1024,
                header_timeout: Duration::from_secs(10),
                max_body_bytes: 1024 * 1024,
                max_command_bytes: 4 * 1024,
                max_filters: 1024,
                outbound_budget_bytes: 8 * 1024 * 1024,
                ping_interval: Duration::from_secs(30),
                ping_timeout: Duration::from_secs(60),
                max_connections: keys::default_max_connections() as usize,
                auth_failure_burst: 20,
                auth_failures_per_minute: 30,
            }
        );
        assert_eq!(config.durability, Durability::Sync);
        assert_eq!(config.cache_bytes, 32 * 1024 * 1024);
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
            "--cache-bytes=128MiB",
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
            "--max-connections=100",
            "--auth-failure-burst=5",
            "--auth-failures-per-minute=6",
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
        assert_eq!(config.cache_bytes, 128 << 20);
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
                max_connections: 100,
                auth_failure_burst: 5,
                auth_failures_per_minute: 6,
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
            cache_bytes = "64MiB"
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
            max_connections = 500
            auth_failure_burst = 5
            auth_failures_per_minute = 12
            retain_events = 2000
            retain_age = "1d"
            retain_bytes = "10MB"
            history_events = 500
            history_age = "2d"
            shutdown_timeout = "5s"
            nats = ["nats://h1:4222", "tls://h2:4222"]
            nats_creds = "/etc/herald/nats.creds"
            nats_tls_ca = "/etc/herald/nats-ca.pem"
            cluster_name = "site1"
            node_name = "node-a"
            stream_replicas = 3
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
        assert_eq!(config.cache_bytes, 64 << 20);
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
        assert_eq!(config.limits.max_connections, 500);
        assert_eq!(config.limits.auth_failure_burst, 5);
        assert_eq!(config.limits.auth_failures_per_minute, 12);
        assert_eq!(config.retention.max_events, 2000);
        assert_eq!(config.retention.max_age, Duration::from_secs(86400));
        assert_eq!(config.retention.max_bytes, 10_000_000);
        assert_eq!(config.history.max_connections, 500);
        assert_eq!(config.history.max_age, Duration::from_secs(2 * 86400));
        assert_eq!(config.shutdown_timeout, Duration::from_secs(5));
        assert_eq!(
            config.cluster,
            Some(Cluster {
                nats: vec!["nats://h1:4222".into(), "tls://h2:4222".into()],
                creds: Some("/etc/herald/nats.creds".into()),
                tls_ca: Some("/etc/herald/nats-ca.pem".into()),
                name: "site1".into(),
                node: "node-a".into(),
                replicas: Some(3),
            })
        );
        assert!(config.metrics_auth);
    }

    #[test]
    fn a_cluster_setting_without_nats_servers_is_refused_naming_it() {
        let error = resolve(file("node_name = \"a\"")).unwrap_err().to_string();
        assert!(
            error.contains("node_name") && error.contains("nats"),
            "{error}"
        );
        let error = resolve(file("nats = \"nats://h:4222\"\nstream_replicas = 9"))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("stream_replicas") && error.contains("1 to 5"),
            "{error}"
        );
        let error = resolve(file("nats = \"nats://h:4222\"\ncluster_name = \"a.b\""))
            .unwrap_err()
            .to_string();
        assert!(error.contains("cluster_name"), "{error}");
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
            resolve(flags(&[])).unwrap().limits.max_body_bytes
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
        let cases: [(&[&str], &str); 16] = [
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
            (&["--cache-bytes=0"], "cache_bytes"),
            (&["--cache-bytes=1023KiB"], "cache_bytes"),
            (&["--cache-bytes=2TiB"], "cache_bytes"),
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
    fn the_cache_size_takes_every_size_within_its_bounds_from_flag_or_file() {
        for (given, bytes) in [
            ("1MiB", 1 << 20),
            ("1048576", 1 << 20),
            ("64MB", 64_000_000),
            ("1TiB", 1 << 40),
        ] {
            let from_flag = resolve(flags(&[&format!("--cache-bytes={given}")]))
                .unwrap_or_else(|e| panic!("{given}: {e}"));
            assert_eq!(from_flag.cache_bytes, bytes, "{given}");
            let from_file = resolve(file(&format!("cache_bytes = \"{given}\"")))
                .unwrap_or_else(|e| panic!("{given}: {e}"));
            assert_eq!(from_file.cache_bytes, bytes, "{given}");
        }
        let error = resolve(file("cache_bytes = \"512KiB\""))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("cache_bytes") && error.contains("1MiB to 1TiB"),
            "{error}"
        );
    }

    #[test]
    fn every_key_has_its_flag_and_its_herald_variable() {
        let command = Cli::command();
        for key in FILE_KEYS {
            let flag = key.replace('_', "-");
            let arg = command
                .get_arguments()
                .find(|arg| arg.get_long() == Some(flag.as_str()))
                .unwrap_or_else(|| panic!("{key} has no flag --{flag}"));
            let variable = format!("HERALD_{}", key.to_uppercase());
            assert_eq!(
                arg.get_env().and_then(|v| v.to_str()),
                Some(variable.as_str()),
                "{key}"
            );
        }
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
            args.tls_san = Some(vec![bad.to_owned()]);
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
