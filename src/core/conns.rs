//! A core's connections: its websockets (the slab whose keys are their ids in the filter
//! index), its HTTP connections with their deadlines, and the `connections.*` events their
//! opening and closing emit.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::{Instant, SystemTime};

use super::Core;
use super::connection::{CloseReason, WsConn};
use super::view::ConnectionView;
use crate::metrics::CoreStats;
use crate::wire::event::Event;

/// Answers the `Seq` of a connection event once the log stored it.
pub(crate) type Stored = flume::Receiver<Result<u64, crate::sequencer::PublishError>>;

/// Deadlines of one HTTP connection, checked by the sweeper (reads are never timed out).
pub(crate) struct HttpWatch {
    pub(super) fd: RawFd,
    /// The peer's address.
    pub remote: SocketAddr,
    /// The address the peer reached, when the socket reports it.
    pub local: Option<SocketAddr>,
    /// The connection's id and view once a request on it authenticated.
    pub tracked: RefCell<Option<(u64, ConnectionView)>>,
    /// When the first byte of the current request arrived (or the TLS handshake began): the
    /// head deadline counts from here; `None` between requests.
    pub request_started: Cell<Option<Instant>>,
    /// Whether bytes of a request have arrived that are not answered yet: a connection without
    /// them (idle, or with only its TLS handshake done) is closed at once on shutdown.
    pub request_pending: Cell<bool>,
    /// When the connection became idle.
    pub idle_since: Cell<Instant>,
    /// Set by the sweeper when a deadline passed and the socket's reads were ended.
    pub expired: Cell<Option<Expiry>>,
}

/// Which deadline ended an HTTP connection's read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expiry {
    /// The request head was not complete in time: answer 408.
    Header,
    /// Idle too long between requests: close quietly.
    Idle,
}

impl Core {
    /// Records a connection as open and emits `connections.create.<principal>`; returns its id
    /// and the receiver that answers the event's `Seq` once stored. Returns once the event has
    /// its place in the log's queue, so anything published over the connection afterwards
    /// comes after it.
    pub(crate) async fn open_connection(&self, view: ConnectionView) -> (u64, Option<Stored>) {
        let id = self.shared.next_conn_id.fetch_add(1, Ordering::Relaxed);
        let history = self.shared.history.clone();
        let event = Event::new("connections", "create", &view.principal, &view.principal)
            .with_object(&view);
        let stored = self
            .submit(move || {
                if let Err(error) = history.record_open(id, &view) {
                    tracing::warn!(%error, "could not record an open connection");
                }
                vec![event]
            })
            .await;
        (id, stored)
    }

    /// Moves a connection to the history and emits `connections.delete.<principal>`, after
    /// everything published over it (those publishes were answered before it closed).
    pub(crate) async fn close_connection(&self, id: u64, mut view: ConnectionView, reason: String) {
        let now = SystemTime::now();
        view.close_time = Some(humantime::format_rfc3339_nanos(now).to_string());
        view.close_reason = Some(reason);
        let history = self.shared.history.clone();
        let event = Event::new("connections", "delete", &view.principal, &view.principal)
            .with_object(&view);
        self.submit(move || {
            if let Err(error) = history.record_closed(id, &view, now) {
                tracing::warn!(%error, "could not record a closed connection");
            }
            vec![event]
        })
        .await;
    }

    /// Queues a connection change on the log thread, in the order the connection made it.
    async fn submit(&self, change: impl FnOnce() -> Vec<Event> + Send + 'static) -> Option<Stored> {
        match self.shared.publisher.submit(change).await {
            Ok(stored) => Some(stored),
            Err(error) => {
                tracing::warn!(%error, "a connection event was not published");
                None
            }
        }
    }

    /// This core's live connections, as the connections API shows them.
    pub(crate) fn connection_views(&self) -> Vec<ConnectionView> {
        let mut views: Vec<ConnectionView> =
            self.conns.borrow().iter().map(|(_, c)| c.view()).collect();
        views.extend(self.http.borrow().iter().filter_map(|(_, watch)| {
            watch
                .tracked
                .borrow()
                .as_ref()
                .map(|(_, view)| view.clone())
        }));
        views
    }

    /// Registers a new websocket connection, built with its slot number.
    pub(crate) fn add_conn(&self, build: impl FnOnce(u32) -> WsConn) -> Rc<WsConn> {
        CoreStats::add(&self.stats().websockets, 1);
        metrics::counter!(crate::metrics::CONNECTIONS_ACCEPTED, "type" => "websocket").increment(1);
        let mut conns = self.conns.borrow_mut();
        let entry = conns.vacant_entry();
        let conn = Rc::new(build(entry.key() as u32));
        entry.insert(conn.clone());
        conn
    }

    /// Removes every filter of a connection from the index.
    pub(crate) fn remove_filters(&self, conn: &WsConn) {
        let mut index = self.index.borrow_mut();
        let mut filters = conn.filters.borrow_mut();
        CoreStats::sub(&self.stats().filters, filters.len() as u64);
        for filter in filters.drain(..) {
            index.remove(conn.slot, &filter);
        }
        self.stop_replay(conn.slot);
        self.bookmarked.borrow_mut().remove(&conn.slot);
    }

    /// Forgets a connection whose tasks have ended.
    pub(crate) fn remove_conn(&self, conn: &WsConn) {
        let mut conns = self.conns.borrow_mut();
        if conns
            .get(conn.slot as usize)
            .is_some_and(|c| std::ptr::eq(&**c, conn))
        {
            conns.remove(conn.slot as usize);
            CoreStats::sub(&self.stats().websockets, 1);
            if let Some(reason) = conn.close_reason() {
                crate::metrics::count_disconnect(reason.metric_label());
                if reason == CloseReason::SlowConsumer {
                    CoreStats::add(&self.stats().slow_consumer_closes, 1);
                }
            }
        }
    }

    /// Starts watching an HTTP connection's deadlines.
    pub(crate) fn watch_http(
        &self,
        fd: RawFd,
        remote: SocketAddr,
        local: Option<SocketAddr>,
    ) -> (usize, Rc<HttpWatch>) {
        let watch = Rc::new(HttpWatch {
            fd,
            remote,
            local,
            tracked: RefCell::new(None),
            request_started: Cell::new(None),
            request_pending: Cell::new(false),
            idle_since: Cell::new(Instant::now()),
            expired: Cell::new(None),
        });
        let key = self.http.borrow_mut().insert(watch.clone());
        CoreStats::add(&self.stats().api_connections, 1);
        (key, watch)
    }

    /// Stops watching an HTTP connection (before its socket closes).
    pub(crate) fn unwatch_http(&self, key: usize) {
        if self.http.borrow_mut().try_remove(key).is_some() {
            CoreStats::sub(&self.stats().api_connections, 1);
        }
    }
}
