//! The sweeper: header and idle deadlines of HTTP connections, pings and close grace of
//! websockets, and bookmarks for replaying clients.

use std::rc::Rc;
use std::time::{Duration, Instant};

use super::Core;
use super::connection::{CloseReason, WsConn};
use super::conns::Expiry;
use crate::net::transport::{self, Shutdown};
use crate::wire::event;

/// How often a core checks deadlines: header timeouts, pings, bookmarks, close grace.
const SWEEP_EVERY: Duration = Duration::from_millis(500);
/// How long a keep-alive HTTP connection may sit idle between requests.
const KEEP_ALIVE_IDLE: Duration = Duration::from_secs(120);
/// How often a replaying connection gets a bookmark while filtered-out events pass.
const BOOKMARK_EVERY: Duration = Duration::from_secs(5);

impl Core {
    /// The sweeper: header and idle deadlines of HTTP connections, pings and close grace of
    /// websockets, and bookmarks for replaying clients.
    pub(crate) async fn sweep_forever(self: Rc<Self>) {
        loop {
            monoio::time::sleep(SWEEP_EVERY).await;
            self.shared.heartbeats.beat(self.id);
            let now = Instant::now();
            let limits = &self.shared.config.limits;
            for (_, watch) in self.http.borrow().iter() {
                if watch.expired.get().is_some() {
                    continue;
                }
                let expiry = match watch.request_started.get() {
                    Some(started) if now.duration_since(started) > limits.header_timeout => {
                        Some(Expiry::Header)
                    }
                    None if now.duration_since(watch.idle_since.get()) > KEEP_ALIVE_IDLE => {
                        Some(Expiry::Idle)
                    }
                    _ => None,
                };
                if let Some(expiry) = expiry {
                    watch.expired.set(Some(expiry));
                    // The connection's own task sees end-of-stream and answers.
                    transport::shutdown(watch.fd, Shutdown::Read);
                }
            }
            let conns: Vec<Rc<WsConn>> =
                self.conns.borrow().iter().map(|(_, c)| c.clone()).collect();
            for conn in conns {
                conn.sweep(now, limits);
                if conn.close_reason() == Some(CloseReason::PingTimeout) {
                    self.remove_filters(&conn);
                }
            }
            self.send_bookmarks(now);
        }
    }

    fn send_bookmarks(&self, now: Instant) {
        let live = self.last_delivered.get();
        let conns = self.conns.borrow();
        let replaying = self.replaying.borrow();
        for (slot, (seq, at)) in self.bookmarked.borrow_mut().iter_mut() {
            if replaying.contains_key(slot)
                || *seq >= live
                || now.duration_since(*at) < BOOKMARK_EVERY
            {
                continue;
            }
            if let Some(conn) = conns.get(*slot as usize) {
                // Every event up to `live` that this connection may see is queued before this frame.
                conn.queue_control(&event::reply_frame("bookmark", &live.to_string(), None));
                *seq = live;
                *at = now;
            }
        }
    }
}
