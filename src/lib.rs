//! herald: a DRP-compatible websocket event hub with a durable, replayable event log.
//!
//! The modules, one per concept:
//! - [`config`]: flags, environment and TOML file merged into a validated `Config`; each key
//!   (flag, variable, file key, default, bound, reload) declared once.
//! - [`logging`]: the log level grammar, stderr logging, client-record rate limits, log events.
//! - [`wire`]: codecs without I/O: HTTP/1.1 heads, bodies and responses (DRP's error shape);
//!   websocket upgrade and frames; `type.action.key` filters and their per-core index; client
//!   commands (`register`, `deregister`, `replay`); events and the frame encoded once.
//! - [`auth`]: users, roles, claims, passwords and signed tokens.
//! - [`store`]: the storage seam the sequencer writes through, and its sled backend: the
//!   database and its trees, the durable event log, the data directory's lock and marker.
//! - [`sequencer`]: the one thread that assigns `Seq`, makes batches durable and broadcasts them.
//! - [`net`]: below the core: plain TCP or TLS under a connection, the server certificate and
//!   rustls setup, a websocket's outbound queue, and single-task wake-ups.
//! - [`core`]: one core: its startup and accept loop, connections and their filter index,
//!   fan-out, replay, deadlines, cross-core queries, and the persistent connection history.
//! - [`objects`]: the DRP-shaped object store (profiles, params, machines, …), without HTTP.
//! - [`cli`]: the `herald` client subcommands (events, objects, tokens).
//! - [`api`]: REST: the HTTP request loop and authentication, one file per resource family
//!   (events, connections, info, metrics, users and roles, objects, the console), one error
//!   type, one authorization check.
//! - [`metrics`]: metric names, per-core counters and the `/metrics` exposition, from plain
//!   values; its [`metrics::activity`] keeps per-second samples for the console's charts.
//! - [`server`]: startup, signals and graceful shutdown.

mod api;
mod auth;
pub mod config;
mod core;

pub mod cli;
#[doc(hidden)]
pub mod fuzzing;
pub mod logging;
mod metrics;
mod net;
mod objects;
mod sequencer;
pub mod server;
pub mod store;
pub mod wire;

#[cfg(test)]
mod testing;
