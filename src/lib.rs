//! herald: a DRP-compatible websocket event hub with a durable, replayable event log.
//!
//! The modules, one per concept:
//! - [`config`]: flags, environment and TOML file merged into a validated `Config`.
//! - [`logging`]: the log level grammar, stderr logging, client-record rate limits, log events.
//! - [`data_dir`]: the data directory's lock and the marker naming the log it holds.
//! - [`tls`]: the server certificate (configured, or self-signed on first start) and rustls setup.
//! - [`wire`]: codecs without I/O: HTTP/1.1 heads, bodies and responses (DRP's error shape);
//!   websocket upgrade and frames; `type.action.key` filters and their per-core index; client
//!   commands (`register`, `deregister`, `replay`); events and the frame encoded once.
//! - [`auth`]: users, roles, claims, passwords and signed tokens.
//! - [`log`]: the durable event log in sled behind a narrow storage interface.
//! - [`sequencer`]: the one thread that assigns `Seq`, makes batches durable and broadcasts them.
//! - [`worker`]: one core: accept loop, filter index, fan-out, deadlines.
//! - [`connection`]: one websocket: outbound budget, reader and writer tasks.
//! - [`outbound`]: a websocket's outbound queue: shared event frames and its own bytes.
//! - [`connections`]: the connections API's view and the persistent connection history.
//! - [`objects`]: the DRP-shaped object store (profiles, params, machines, …) and its routes.
//! - [`cli`]: the `herald` client subcommands (events, objects, tokens).
//! - [`transport`]: plain TCP or TLS under a connection.
//! - [`api`]: the HTTP request loop, authentication and routes.
//! - [`info`]: what `/api/v3/info` and token answers say about the server (DRP's Info and more).
//! - [`metrics`]: metric names, per-core counters and the `/metrics` exposition.
//! - [`activity`]: per-second samples of recent activity for the console's charts.
//! - [`ui`]: the web console, its static files embedded in the binary.
//! - [`server`]: startup, signals and graceful shutdown.

pub mod activity;
pub mod api;
pub mod auth;
pub mod config;
pub mod connection;
pub mod connections;
pub mod data_dir;

pub mod cli;
#[doc(hidden)]
pub mod fuzzing;
pub mod info;
pub mod log;
pub mod logging;
pub mod metrics;
pub mod objects;
pub mod outbound;
pub mod sequencer;
pub mod server;
pub mod tls;
pub mod transport;
pub mod ui;
pub mod wire;
pub mod worker;

#[cfg(test)]
mod testing;
