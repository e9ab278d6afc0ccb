//! One core: its runtime's accept loop, its websocket connections, its compiled filter index,
//! and the fan-out of every sequenced batch to the connections it matches.
//!
//! Nothing here is `Send`: a core's state lives in `Rc`/`RefCell` and is touched only by the
//! core's own thread. Batches arrive as owned messages on the core's inbox.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use slab::Slab;

use crate::auth::AuthStore;
use crate::config::Config;
use crate::connection::{CloseReason, WsConn};
use crate::connections::{ConnectionView, History};
use crate::log::LogReader;
use crate::metrics::CoreStats;
use crate::sequencer::{Batch, LogStatus, Publisher};
use crate::transport::{self, Shutdown};
use crate::wire::command;
use crate::wire::event::Event;
use crate::wire::event::{self, EncodedEvent};
use crate::wire::filter::FilterIndex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

/// How often a core checks deadlines: header timeouts, pings, bookmarks, close grace.
const SWEEP_EVERY: Duration = Duration::from_millis(500);
/// How long a keep-alive HTTP connection may sit idle between requests.
const KEEP_ALIVE_IDLE: Duration = Duration::from_secs(120);
/// How often a replaying connection gets a bookmark while filtered-out events pass.
const BOOKMARK_EVERY: Duration = Duration::from_secs(5);
/// Events read from the log per replay step.
const REPLAY_CHUNK: usize = 1000;
/// How long a replay waits before looking again when the log has not flushed, or this core has
/// not fanned out, as far as the replay needs.
const REPLAY_FLUSH_WAIT: Duration = Duration::from_millis(5);

/// What all cores share: configuration, the auth store, the sequencer's handle.
pub struct Shared {
    /// The validated configuration.
    pub config: Config,
    /// Users, roles and tokens.
    pub auth: Arc<AuthStore>,
    /// Profiles, params, machines, clusters and resource brokers.
    pub objects: Arc<crate::objects::ObjectStore>,
    /// The sequencer's handle.
    pub publisher: Publisher,
    /// The log's bounds, kept current by the sequencer.
    pub log_status: Arc<LogStatus>,
    /// Read access to the log for replays and REST reads (used from blocking threads).
    pub log_reader: LogReader,
    /// The TLS setup, or `None` for plain.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// When the server started.
    pub started: Instant,
    /// `io_uring` or `epoll`.
    pub driver: &'static str,
    /// Counters each core writes and `/metrics` merges.
    pub core_stats: Box<[crate::metrics::CoreStats]>,
    /// The Prometheus exposition, when this process installed the recorder.
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    /// Closed (and crashed) connections, persistent.
    pub history: History,
    /// Next connection id (unique within the process; history keys add the close time).
    pub next_conn_id: AtomicU64,
    /// Each core's query inbox, for gathering live connections.
    pub queries: Vec<flume::Sender<CoreQuery>>,
    /// This server's id (DRP's Info `id` and `uuid`), kept in the database.
    pub server_id: String,
    /// Milliseconds since `started` at each core's last sweep, for the watchdog.
    pub heartbeats: Box<[std::sync::atomic::AtomicU64]>,
    /// Recent per-second samples of the server's activity, for the console.
    pub activity: crate::activity::Activity,
}

impl Shared {
    /// Records that core `id` is still turning.
    pub fn heartbeat(&self, id: usize) {
        if let Some(beat) = self.heartbeats.get(id) {
            beat.store(
                self.started.elapsed().as_millis() as u64,
                std::sync::atomic::Ordering::Relaxed,
            );
        }
    }

    /// Whether every core swept within `period`.
    pub fn cores_alive(&self, period: Duration) -> bool {
        let now = self.started.elapsed().as_millis() as u64;
        self.heartbeats.iter().all(|beat| {
            now.saturating_sub(beat.load(std::sync::atomic::Ordering::Relaxed))
                < period.as_millis() as u64
        })
    }
}

/// Deadlines of one HTTP connection, checked by the sweeper (reads are never timed out).
pub struct HttpWatch {
    fd: RawFd,
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

/// A question one core answers for a request served on another.
pub enum CoreQuery {
    /// The live connections of the core.
    Connections(flume::Sender<Vec<ConnectionView>>),
}

/// Which deadline ended an HTTP connection's read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// The request head was not complete in time: answer 408.
    Header,
    /// Idle too long between requests: close quietly.
    Idle,
}

/// Replay progress of one connection, while it catches up from the log.
struct Replaying {
    cursor: u64,
}

/// One core's state.
pub struct Core {
    /// Core number.
    pub id: usize,
    /// What all cores share.
    pub shared: Arc<Shared>,
    /// The compiled filter index of this core's connections.
    pub index: RefCell<FilterIndex>,
    conns: RefCell<Slab<Rc<WsConn>>>,
    http: RefCell<Slab<Rc<HttpWatch>>>,
    replaying: RefCell<std::collections::HashMap<u32, Replaying>>,
    bookmarked: RefCell<std::collections::HashMap<u32, (u64, Instant)>>,
    stamp: Cell<u64>,
    /// Seq of the last event this core has fanned out.
    pub last_delivered: Cell<u64>,
    stopping: Cell<bool>,
}

impl Core {
    /// A core with no connections yet.
    pub fn new(id: usize, shared: Arc<Shared>) -> Rc<Core> {
        let last = shared.log_status.last_seq();
        Rc::new(Core {
            id,
            shared,
            index: RefCell::new(FilterIndex::new()),
            conns: RefCell::new(Slab::new()),
            http: RefCell::new(Slab::new()),
            replaying: RefCell::default(),
            bookmarked: RefCell::default(),
            stamp: Cell::new(0),
            last_delivered: Cell::new(last),
            stopping: Cell::new(false),
        })
    }

    /// Records a connection as open and emits `connections.create.<principal>`; returns its id.
    /// Returns once the event has its place in the log's queue, so anything published over the
    /// connection afterwards comes after it.
    pub async fn open_connection(&self, view: ConnectionView) -> u64 {
        let id = self.shared.next_conn_id.fetch_add(1, Ordering::Relaxed);
        let history = self.shared.history.clone();
        let event = Event::new("connections", "create", &view.principal, &view.principal)
            .with_object(&view);
        self.submit(move || {
            if let Err(error) = history.record_open(id, &view) {
                tracing::warn!(%error, "could not record an open connection");
            }
            vec![event]
        })
        .await;
        id
    }

    /// Moves a connection to the history and emits `connections.delete.<principal>`, after
    /// everything published over it (those publishes were answered before it closed).
    pub async fn close_connection(&self, id: u64, mut view: ConnectionView, reason: String) {
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
    async fn submit(&self, change: impl FnOnce() -> Vec<Event> + Send + 'static) {
        if let Err(error) = self.shared.publisher.submit(change).await {
            tracing::warn!(%error, "a connection event was not published");
        }
    }

    /// This core's live connections, as the connections API shows them.
    pub fn connection_views(&self) -> Vec<ConnectionView> {
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

    /// Answers other cores' questions until the server stops.
    pub async fn answer_queries(self: Rc<Self>, queries: flume::Receiver<CoreQuery>) {
        while let Ok(query) = queries.recv_async().await {
            match query {
                CoreQuery::Connections(reply) => {
                    let _ = reply.send(self.connection_views());
                }
            }
        }
    }

    /// This core's counters.
    pub fn stats(&self) -> &CoreStats {
        &self.shared.core_stats[self.id]
    }

    /// Registers a new websocket connection, built with its slot number.
    pub fn add_conn(&self, build: impl FnOnce(u32) -> WsConn) -> Rc<WsConn> {
        CoreStats::add(&self.stats().websockets, 1);
        metrics::counter!(crate::metrics::CONNECTIONS_ACCEPTED, "type" => "websocket").increment(1);
        let mut conns = self.conns.borrow_mut();
        let entry = conns.vacant_entry();
        let conn = Rc::new(build(entry.key() as u32));
        entry.insert(conn.clone());
        conn
    }

    /// Removes every filter of a connection from the index.
    pub fn remove_filters(&self, conn: &WsConn) {
        let mut index = self.index.borrow_mut();
        let mut filters = conn.filters.borrow_mut();
        CoreStats::sub(&self.stats().filters, filters.len() as u64);
        for filter in filters.drain(..) {
            index.remove(conn.slot, &filter);
        }
        self.replaying.borrow_mut().remove(&conn.slot);
        self.bookmarked.borrow_mut().remove(&conn.slot);
    }

    /// Forgets a connection whose tasks have ended.
    pub fn remove_conn(&self, conn: &WsConn) {
        let mut conns = self.conns.borrow_mut();
        if conns
            .get(conn.slot as usize)
            .is_some_and(|c| std::ptr::eq(&**c, conn))
        {
            conns.remove(conn.slot as usize);
            CoreStats::sub(&self.stats().websockets, 1);
            if let Some(reason) = conn.close_reason() {
                crate::metrics::count_disconnect(&reason);
                if reason == CloseReason::SlowConsumer {
                    CoreStats::add(&self.stats().slow_consumer_closes, 1);
                }
            }
        }
    }

    /// Starts watching an HTTP connection's deadlines.
    pub fn watch_http(
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
    pub fn unwatch_http(&self, key: usize) {
        if self.http.borrow_mut().try_remove(key).is_some() {
            CoreStats::sub(&self.stats().api_connections, 1);
        }
    }

    /// Fans one batch out to every matching connection of this core.
    pub fn deliver(&self, batch: Batch) {
        // One reference count per core for the batch; connections share it without atomics.
        let batch = Rc::new(batch);
        let mut slow = Vec::new();
        {
            let index = self.index.borrow();
            let conns = self.conns.borrow();
            let replaying = self.replaying.borrow();
            for (position, event) in batch.events.iter().enumerate() {
                let stamp = self.stamp.get() + 1;
                self.stamp.set(stamp);
                index.for_each_candidate(&event.ty, &event.action, &event.key, |ids| {
                    for &id in ids {
                        let Some(conn) = conns.get(id as usize) else {
                            continue;
                        };
                        if conn.stamp.replace(stamp) == stamp {
                            continue;
                        }
                        if !replaying.is_empty() && replaying.contains_key(&id) {
                            continue;
                        }
                        if !conn.queue_live(&batch, position) {
                            slow.push(conn.clone());
                        }
                    }
                });
                self.last_delivered.set(event.seq);
            }
        }
        for conn in slow {
            self.remove_filters(&conn);
        }
    }

    /// Applies `replay SEQ [EPOCH]`: replies with the log's bounds, then streams the stored
    /// events after the resume point until the connection has caught up with the live stream.
    pub fn start_replay(
        self: &Rc<Self>,
        conn: &Rc<WsConn>,
        argument: &str,
        replay: command::Replay,
    ) {
        let status = &self.shared.log_status;
        let (first, last) = (status.first_seq(), status.last_seq());
        let epoch_matches = replay.epoch.as_deref().is_none_or(|e| e == status.epoch);
        // A replay that does not recover starts after the newest gap: Seqs skipped after an
        // unclean stop are never stored, and streaming across them would look like a trim.
        let oldest_held = first.saturating_sub(1).max(status.resumed_after);
        let (recovered, cursor) = if !epoch_matches {
            (false, oldest_held)
        } else if replay.seq > last {
            (false, self.last_delivered.get())
        } else if replay.seq < status.resumed_after || replay.seq + 1 < first {
            // Events after SEQ are trimmed, or may have been seen before an unclean stop and lost.
            (false, oldest_held)
        } else {
            (true, replay.seq)
        };
        let object = serde_json::json!({
            "Epoch": status.epoch, "FirstSeq": first, "LastSeq": last, "Recovered": recovered,
        })
        .to_string();
        conn.queue_control(&event::reply_frame("replay", argument, Some(&object)));
        conn.restart_resume_point(cursor);
        let result = if recovered { "recovered" } else { "gap" };
        metrics::counter!(crate::metrics::REPLAY_REQUESTS, "result" => result).increment(1);
        self.bookmarked
            .borrow_mut()
            .insert(conn.slot, (cursor, Instant::now()));
        if cursor == self.last_delivered.get() {
            // Live from here; a replay task left from an earlier `replay` must stop, or it would
            // go on sending from that replay's older cursor.
            self.replaying.borrow_mut().remove(&conn.slot);
            return;
        }
        let previous = self
            .replaying
            .borrow_mut()
            .insert(conn.slot, Replaying { cursor });
        if previous.is_none() {
            monoio::spawn(replay_task(self.clone(), conn.clone()));
        }
    }

    /// The sweeper: header and idle deadlines of HTTP connections, pings and close grace of
    /// websockets, and bookmarks for replaying clients.
    pub async fn sweep_forever(self: Rc<Self>) {
        loop {
            monoio::time::sleep(SWEEP_EVERY).await;
            self.shared.heartbeat(self.id);
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

    /// Graceful stop: no new connections, every websocket closed with 1001 `server shutdown`,
    /// every idle HTTP connection ended; returns when all are gone or at the deadline.
    pub async fn shut_down(&self, listener_fd: RawFd, deadline: Instant) {
        self.stopping.set(true);
        tracing::debug!(
            core = self.id,
            conns = self.conns.borrow().len(),
            http = self.http.borrow().len(),
            "core stopping"
        );
        // Ends the accept in flight on this core's listener.
        transport::shutdown(listener_fd, Shutdown::Both);
        let conns: Vec<Rc<WsConn>> = self.conns.borrow().iter().map(|(_, c)| c.clone()).collect();
        for conn in conns {
            self.remove_filters(&conn);
            conn.begin_close(CloseReason::ServerShutdown, 1001, "server shutdown".into());
        }
        for (_, watch) in self.http.borrow().iter() {
            if !watch.request_pending.get() {
                watch.expired.set(Some(Expiry::Idle));
                transport::shutdown(watch.fd, Shutdown::Read);
            }
        }
        // A connection leaves its table only after its close event is queued for the log.
        while Instant::now() < deadline
            && (!self.conns.borrow().is_empty() || !self.http.borrow().is_empty())
        {
            monoio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Whether the core is stopping.
    pub fn is_stopping(&self) -> bool {
        self.stopping.get()
    }

    /// Receives batches from the sequencer until it stops.
    pub async fn receive_batches(self: Rc<Self>, inbox: flume::Receiver<Batch>) {
        while let Ok(batch) = inbox.recv_async().await {
            self.deliver(batch);
        }
    }
}

/// Bytes a replay keeps queued to one connection before waiting for its writer: small, so a
/// thousand clients replaying at once hold megabytes, not gigabytes, and never more than half
/// the outbound budget, so a replay never trips the slow-consumer close.
const REPLAY_HIGH_WATER: usize = 64 * 1024;

fn replay_high_water(conn: &WsConn) -> usize {
    REPLAY_HIGH_WATER.min(conn.budget() / 2)
}

/// Streams stored events to a replaying connection, chunk by chunk, never holding more than
/// half its budget queued, then hands it over to the live fan-out with no gap and no duplicate.
async fn replay_task(core: Rc<Core>, conn: Rc<WsConn>) {
    loop {
        if conn.is_closing() {
            break;
        }
        let Some(cursor) = core.replaying.borrow().get(&conn.slot).map(|r| r.cursor) else {
            break;
        };
        let delivered = core.last_delivered.get();
        if cursor > delivered {
            // The log's bounds run ahead of this core's fan-out while a batch is on its way
            // here: switching now would let the fan-out send events up to `cursor` again.
            monoio::time::sleep(REPLAY_FLUSH_WAIT).await;
            continue;
        }
        if cursor == delivered {
            // Caught up: from here the fan-out delivers. No await between the check and the
            // switch, so no batch can slip between them.
            core.replaying.borrow_mut().remove(&conn.slot);
            if let Some(mark) = core.bookmarked.borrow_mut().get_mut(&conn.slot) {
                mark.0 = cursor;
            }
            break;
        }
        if conn.queued_bytes() > replay_high_water(&conn) {
            conn.drained().notified().await;
            continue;
        }
        let reader = core.shared.log_reader.clone();
        // Read no more than the connection can queue now: a read finished while its core is
        // busy waits in memory, and a thousand replays each holding a full chunk peaked at 1 GB.
        let room = replay_high_water(&conn).saturating_sub(conn.queued_bytes());
        let read = move || reader.read_after_within(cursor, REPLAY_CHUNK, room);
        let rows = match monoio::spawn_blocking(read).await {
            Ok(Ok(rows)) => rows,
            Ok(Err(error)) => {
                tracing::warn!(%error, "replay read failed");
                conn.begin_close(CloseReason::ServerShutdown, 1011, "replay failed".into());
                break;
            }
            Err(_) => break,
        };
        if core.replaying.borrow().get(&conn.slot).map(|r| r.cursor) != Some(cursor) {
            // A `replay` during the read moved the cursor, and its reply is already queued:
            // these rows follow the old cursor, so queuing them would resend what it skips.
            continue;
        }
        let next_stored = rows
            .first()
            .map_or_else(|| core.shared.log_reader.first_seq(), |(seq, _)| *seq);
        if next_stored > cursor.saturating_add(1) {
            // Retention removed events this replay had yet to send. Going on would skip them
            // silently; closing as a slow consumer names the resume point, and a `replay` from
            // there answers `Recovered: false`, so the client knows to re-read state.
            // Logged at debug: the close itself is logged as a slow consumer's.
            tracing::debug!(
                conn = conn.slot,
                cursor,
                next_stored,
                "retention overtook a replay; closing it with its resume point"
            );
            conn.begin_close(CloseReason::SlowConsumer, 4008, String::new());
            break;
        }
        let limit = core.last_delivered.get();
        let mut next = cursor;
        let mut full = false;
        let mut replayed = 0;
        for (seq, json) in rows {
            if seq > limit {
                break;
            }
            let Some(event) = EncodedEvent::from_stored(seq, &json) else {
                next = seq;
                continue;
            };
            if conn
                .filters
                .borrow()
                .iter()
                .any(|f| f.matches(&event.ty, &event.action, &event.key))
            {
                // A chunk can hold far more than the budget: stop at the high-water mark and go on once
                // the writer drains, or a client that reads at full speed is closed as slow.
                let queued = conn.queued_bytes();
                if queued > 0 && queued + event.frame().len() > replay_high_water(&conn) {
                    full = true;
                    break;
                }
                conn.queue_event(&event);
                replayed += 1;
            }
            next = seq;
        }
        if let Some(r) = core.replaying.borrow_mut().get_mut(&conn.slot) {
            r.cursor = next;
        }
        metrics::counter!(crate::metrics::EVENTS_REPLAYED).increment(replayed);
        if full {
            conn.drained().notified().await;
        } else if next == cursor {
            // Delivered but not yet readable: with `batched` durability the log serves only
            // flushed events, and the next flush is at most a few milliseconds away.
            monoio::time::sleep(REPLAY_FLUSH_WAIT).await;
        }
    }
}

/// The accept loop of one core's listener.
pub async fn accept_forever(core: Rc<Core>, listener: monoio::net::TcpListener) {
    loop {
        match listener.accept().await {
            Ok(_) if core.is_stopping() => return,
            Err(_) if core.is_stopping() => return,
            Ok((stream, remote)) => {
                metrics::counter!(crate::metrics::CONNECTIONS_ACCEPTED, "type" => "api")
                    .increment(1);
                let _ = stream.set_nodelay(true);
                monoio::spawn(crate::api::serve(core.clone(), stream, remote));
            }
            Err(error) => {
                // Out of descriptors or memory: back off instead of spinning.
                tracing::warn!(%error, core = core.id, "accept failed");
                monoio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}
