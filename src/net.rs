//! Below the core: the socket under a connection (plain TCP or TLS), the TLS setup, a
//! websocket's outbound queue, and the single-task wake-up the reader and writer share.

pub(crate) mod notify;
pub(crate) mod outbound;
pub(crate) mod tls;
pub(crate) mod transport;
