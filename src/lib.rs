//! herald: a DRP-compatible websocket event hub with a durable, replayable event log.
//!
//! The layers, bottom up; a module imports only from its own folder and the layers below it
//! (`tests/module_graph.rs` fails on any cycle):
//! - [`wire`]: codecs without I/O: HTTP, websocket frames, commands, filters, events, names.
//! - [`config`]: flags, environment and TOML file into a validated `Config`; each key declared once.
//! - [`logging`]: log levels, stderr logging, rate-limited client records, log events.
//! - `net`: plain TCP or TLS under a connection, the certificate, the outbound queue, wake-ups.
//! - [`store`]: the storage seam and its sled backend: the database, its trees, the event log.
//! - `sequencer`: the one thread that assigns `Seq`, makes batches durable and broadcasts them.
//! - `cluster`: instead of the sequencer on a cluster node: the stream on NATS JetStream, the
//!   node's copy of it, and the same broadcast to the cores.
//! - `auth`: users, roles, claims, passwords and signed tokens.
//! - `objects`: the DRP-shaped object store (profiles, params, machines, …), without HTTP.
//! - `metrics`: metric names and the `/metrics` exposition from plain values; activity samples.
//! - `core`: one core: startup and accept, connections, filter index, fan-out, replay, history.
//! - `api`: REST: the request loop, one file per resource family, one error type, one authz check.
//! - [`server`]: startup, signals and graceful shutdown.
//! - [`cli`]: the `herald` client subcommands.
//!
//! Only what the binary, the benchmarks and the fuzz targets use is public.

mod api;
mod auth;
pub mod cli;
mod cluster;
pub mod config;
mod core;
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
