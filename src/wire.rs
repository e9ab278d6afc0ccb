//! Codecs without I/O: what herald reads and writes on the wire, as plain functions over bytes.

pub mod command;
pub mod event;
pub mod filter;
pub mod http;
pub mod name;
pub mod websocket;
