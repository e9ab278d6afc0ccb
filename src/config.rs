//! Server configuration: flags, `HERALD_*` environment variables and a TOML file, merged
//! (flag beats env beats file) and validated into one [`Config`] in a single fallible step.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// How the listener speaks: TLS (the default) or plain HTTP for loopback development.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsMode {
    /// http:// and ws://, for loopback development, tests and benchmarks.
    Plain,
    /// A self-signed certificate generated into the data directory on first start.
    SelfSigned,
    /// A configured certificate chain and private key (PEM files).
    Files { cert: PathBuf, key: PathBuf },
}

/// When a publish is answered relative to the flush of its batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Answer and broadcast only after the batch is flushed to disk.
    Sync,
    /// Answer and broadcast before the flush; flush every few milliseconds.
    Batched,
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

/// Everything `herald serve` needs, validated.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address every core listens on (port 0 picks one free port shared by all cores).
    pub listen: SocketAddr,
    /// Directory holding the sled database, the generated certificate and secrets.
    pub data_dir: PathBuf,
    /// TLS or plain.
    pub tls: TlsMode,
    /// Password of the admin user created on first start; `None` means DRP's default.
    pub admin_password: Option<String>,
    /// Number of core threads.
    pub cores: usize,
    /// Per-client bounds.
    pub limits: Limits,
    /// When publishes are acknowledged.
    pub durability: Durability,
}
