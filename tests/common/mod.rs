//! Black-box harness: starts the real `herald serve` binary and speaks to it with real clients
//! (tungstenite, ureq, rustls, raw sockets). Every socket read and every wait is bounded by a
//! deadline.
// Each test file uses only part of the harness, and a test binary exports nothing: its `pub`
// items say what the harness offers, not what another crate may use.
#![allow(dead_code, unused_imports, unreachable_pub)]

mod auth;
pub mod cli;
pub mod cluster;
mod events;
mod fixtures;
mod http;
mod nats;
mod raw;
mod run;
mod server;
mod tls;
mod wait;
mod ws;

pub use auth::{ADMIN, ADMIN_PASSWORD, Auth, DRP_DEFAULT_PASSWORD};
pub use events::{assert_contiguous, event, seqs};
pub use fixtures::{ConfigFile, unique};
pub use http::{HttpReply, assert_drp_error, herald_seq, top_level_keys};
pub use nats::NatsCluster;
pub use raw::{RawFrame, RawHttp, RawWs};
pub use run::{Exit, output_within, run_to_exit, serve_to_exit};
pub use server::{Failed, Options, Server};
pub use wait::{LOG_TIMEOUT, REPLY_TIMEOUT, eventually, poll_until};
pub use ws::{Client, Received, Stream};
