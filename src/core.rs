//! One core: its runtime's accept loop, its websocket connections, its compiled filter index,
//! and the fan-out of every sequenced batch to the connections it matches.
//!
//! Nothing here is `Send`: a core's state lives in `Rc`/`RefCell` and is touched only by the
//! core's own thread. Batches arrive as owned messages on the core's inbox.
//!
//! - [`accept`]: a core's startup and its accept loop, which hands each socket to the HTTP
//!   handler startup gave it.
//! - [`conns`]: the core's websocket and HTTP connections and their lifecycle events.
//! - [`view`]: how the connections API shows one connection, live or closed.
//! - [`connection`]: one websocket: outbound budget, reader and writer tasks.
//! - [`fanout`]: each sequenced batch to the connections whose filters match.
//! - [`replay`]: `replay` commands: stored events from the log, then the hand-over to the fan-out.
//! - [`deadlines`]: the sweeper: HTTP deadlines, pings, close grace, bookmarks.
//! - [`query`]: questions one core answers for a request served on another.
//! - [`history`]: the persistent record of open and closed connections.
//! - [`cluster_conns`]: a cluster node's table of every node's live connections.

pub(crate) mod accept;
pub(crate) mod cluster_conns;
pub(crate) mod connection;
pub(crate) mod conns;
pub(crate) mod deadlines;
pub(crate) mod fanout;
pub(crate) mod history;
pub(crate) mod query;
pub(crate) mod replay;
pub(crate) mod view;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::os::fd::RawFd;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use slab::Slab;

use crate::auth::AuthStore;
use crate::config::Config;
use crate::metrics::activity::{self, Activity};
use crate::metrics::{CoreStats, Scrape};
use crate::net::transport::{self, Shutdown};
use crate::sequencer::{LogStatus, Publisher};
use crate::store::LogReader;
use crate::wire::filter::FilterIndex;
use connection::{CloseReason, WsConn};
use conns::{Expiry, HttpWatch};
use history::History;
use query::CoreQuery;
use replay::Replaying;

/// The server's state that every core shares: configuration, stores, the sequencer's handle,
/// the counters the cores write, and the other cores' query inboxes.
pub(crate) struct ServerState {
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
    /// A cluster node's place in its cluster; `None` on a single node.
    pub cluster: Option<Arc<crate::cluster::ClusterView>>,
    /// A cluster node's table of every node's live connections; `None` on a single node.
    pub cluster_connections: Option<Arc<cluster_conns::ClusterConnections>>,
    /// The TLS setup, or `None` for plain.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// When the server started.
    pub started: Instant,
    /// `io_uring` or `epoll`.
    pub driver: &'static str,
    /// Counters each core writes and `/metrics` merges.
    pub core_stats: Box<[CoreStats]>,
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
    /// Each core's last sweep, for the watchdog.
    pub heartbeats: Heartbeats,
    /// Recent per-second samples of the server's activity, for the console.
    pub activity: Arc<Activity>,
    /// The threads that verify passwords, apart from the blocking pool of replay reads.
    pub hash_pool: crate::auth::HashPool,
    /// Failed-login budgets per client address and per user name.
    pub login_throttle: crate::auth::LoginThrottle,
    /// Client connections open on every core, against `limits.max_connections`.
    pub open_connections: std::sync::atomic::AtomicUsize,
}

impl ServerState {
    /// The figures `/metrics` renders, read now.
    pub(crate) fn scrape(&self) -> Scrape {
        let log = &self.log_status;
        Scrape {
            cores: CoreStats::total(&self.core_stats),
            log_first_seq: log.first_seq(),
            log_last_seq: log.last_seq(),
            log_bytes: log.bytes(),
            driver: self.driver,
        }
    }

    /// The totals the console's activity samples are differences of, read now.
    pub(crate) fn activity_totals(&self) -> activity::Totals {
        activity::Totals::new(
            &CoreStats::total(&self.core_stats),
            self.log_status.last_seq(),
        )
    }
}

/// When each core's sweeper last ran: a core whose sweeper stops is stuck.
pub(crate) struct Heartbeats {
    started: Instant,
    /// Milliseconds since `started` at each core's last sweep.
    beats: Box<[AtomicU64]>,
}

impl Heartbeats {
    /// Heartbeats of `cores` cores, all counted as beating now.
    pub(crate) fn new(cores: usize) -> Heartbeats {
        Heartbeats {
            started: Instant::now(),
            beats: (0..cores).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Records that core `id` is still turning.
    pub(crate) fn beat(&self, id: usize) {
        if let Some(beat) = self.beats.get(id) {
            beat.store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
        }
    }

    /// Whether every core swept within `period`.
    pub(crate) fn all_within(&self, period: Duration) -> bool {
        let now = self.started.elapsed().as_millis() as u64;
        self.beats.iter().all(|beat| {
            now.saturating_sub(beat.load(Ordering::Relaxed)) < period.as_millis() as u64
        })
    }
}

/// One core's state.
pub(crate) struct Core {
    /// Core number.
    pub id: usize,
    /// What all cores share.
    pub shared: Arc<ServerState>,
    /// The compiled filter index of this core's connections.
    pub index: RefCell<FilterIndex>,
    conns: RefCell<Slab<Rc<WsConn>>>,
    http: RefCell<Slab<Rc<HttpWatch>>>,
    replaying: RefCell<HashMap<u32, Replaying>>,
    bookmarked: RefCell<HashMap<u32, (u64, Instant)>>,
    stamp: Cell<u64>,
    /// Seq of the last event this core has fanned out.
    pub last_delivered: Cell<u64>,
    stopping: Cell<bool>,
}

impl Core {
    /// A core with no connections yet.
    pub(crate) fn new(id: usize, shared: Arc<ServerState>) -> Rc<Core> {
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

    /// This core's counters.
    pub(crate) fn stats(&self) -> &CoreStats {
        &self.shared.core_stats[self.id]
    }

    /// Graceful stop: no new connections, every websocket closed with 1001 `server shutdown`,
    /// every idle HTTP connection ended; returns when all are gone or at the deadline.
    pub(crate) async fn shut_down(&self, listener_fd: RawFd, deadline: Instant) {
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
    pub(crate) fn is_stopping(&self) -> bool {
        self.stopping.get()
    }
}
