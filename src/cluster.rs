//! A node of a herald cluster on NATS JetStream. The event log is one replicated stream: every
//! node publishes to it and reads it in order; JetStream owns the order, the replication and the
//! failover. Each node keeps a copy of the stream in its own sled, which replays and
//! `GET /api/v3/events` read, and feeds its cores from that copy exactly as the local sequencer
//! does (the same batches, each event encoded once).
//!
//! Threads: `herald-nats` runs the NATS client (it needs tokio) with the relay, the consumer and
//! the presence tasks; `herald-copy` owns the node's copy of the stream and hands each batch to
//! the cores. Only owned messages cross between them and the monoio cores.
//!
//! - [`subject`]: an event's subject (its key escaped) and its payload.
//! - [`node`]: the NATS thread's life, from joining to stopping.
//! - [`stream`]: connecting, creating or checking the stream and its limits, the Epoch.
//! - [`relay`]: publishes and state changes, answered once JetStream stored them on a quorum.
//! - [`copy`]: the consumer, and the node's copy of the stream, its objects and accounts.
//! - [`secret`]: the token secret every node of the cluster shares.
//! - [`write`]: a write to an object, user or role, planned and published on condition.
//! - [`presence`]: the nodes' bucket and the cluster's gauges, and closing a lost node's
//!   connections.
//!
//! herald's own `connections.create`/`delete` events go to subjects of their own
//! (`<cluster>.herald.connections.…`), which no client's publish reaches; the copy hands those to
//! the cluster's [`ConnectionTable`]. Users and roles are written like objects, on subjects of
//! their own (`<cluster>.accounts.…`), and every node signs tokens with one secret (see
//! [`secret`]).

mod copy;
mod node;
mod presence;
mod relay;
mod secret;
mod stream;
mod subject;
pub(crate) mod write;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use thiserror::Error;

use crate::config::{Cluster, Retention};
use crate::sequencer::{Batch, LogStatus, OnStorageFailed, Publisher, StorageFailed};
use crate::store::{LogReader, StoreError};

/// The header of an object write naming the `Seq` of the object's newest event the write was
/// planned on; every node applies the write only if that is still the object's newest.
const BASE_HEADER: &str = "Herald-Base";

/// The header of an object or account write naming the first `Seq` its writer's copy read:
/// writes before it are unknown to that copy, and the check compares only what both know.
const HORIZON_HEADER: &str = "Herald-Horizon";

/// The header of an account write carrying what it stores beside its public event (a user's
/// password hash and Secret): the copy applies it and never stores or delivers it.
const PRIVATE_HEADER: &str = "Herald-Private";

/// Longest a node waits for NATS and the stream at start before it gives up.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a node could not join its cluster.
#[derive(Debug, Error)]
pub enum ClusterError {
    /// No NATS server answered.
    #[error("cannot connect to NATS at {urls}: {cause}")]
    Connect {
        /// The URLs tried.
        urls: String,
        /// What the client reported.
        cause: String,
    },
    /// The credentials or CA file could not be read.
    #[error("cannot read {}: {cause}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        cause: std::io::Error,
    },
    /// JetStream refused or failed a request.
    #[error("JetStream: {0}")]
    JetStream(String),
    /// The stream exists with settings this node cannot work with.
    #[error(
        "the cluster's stream {stream} was made with other settings: {difference}; start this \
         node with matching settings, or use another cluster_name"
    )]
    Incompatible {
        /// The stream.
        stream: String,
        /// What differs.
        difference: String,
    },
    /// The node's copy of the stream could not be opened or written.
    #[error("the node's copy of the stream in {}: {cause}", path.display())]
    Copy {
        /// Its directory.
        path: PathBuf,
        /// What failed.
        cause: String,
    },
    /// The start took longer than [`START_TIMEOUT`].
    #[error("joining the cluster took longer than {}s: {what}", START_TIMEOUT.as_secs())]
    Timeout {
        /// What was still pending.
        what: String,
    },
    /// A thread or runtime could not be started.
    #[error("cannot start {what}: {cause}")]
    Start {
        /// The thread or runtime.
        what: &'static str,
        /// What the system said.
        cause: std::io::Error,
    },
}

impl From<StoreError> for ClusterError {
    fn from(error: StoreError) -> ClusterError {
        ClusterError::JetStream(error.to_string())
    }
}

/// The live connections of every node of the cluster, kept from herald's own connection events
/// as the copy reads them (the connections API reads it; it lives with the node's other state).
pub(crate) trait ConnectionTable: Send + Sync {
    /// Applies one of herald's `connections.create`/`delete` events, `json` at `seq`.
    fn apply(&self, seq: u64, json: &[u8]);
    /// Makes what [`apply`](ConnectionTable::apply) wrote durable, before the copy records
    /// those events as read.
    fn flush(&self);
    /// Forgets every connection: a new copy reads the stream again from its first event.
    fn clear(&self);
    /// The nodes with connections open in the table.
    fn nodes(&self) -> Vec<String>;
    /// `connections.delete` events closing every connection the table holds open on `node`,
    /// with `reason`.
    fn close_all(&self, node: &str, reason: &str) -> Vec<crate::wire::event::Event>;
}

/// Why the survivors close a dead node's connections.
pub(crate) const NODE_LOST: &str = "node lost";
/// Why a node that restarts closes what the table still holds open of its previous run.
pub(crate) const NODE_RESTARTED: &str = "server crashed";

/// What `/api/v3/info` and the log say about the node's place in the cluster.
#[derive(Debug)]
pub(crate) struct ClusterView {
    /// The cluster's name.
    pub name: String,
    /// This node's name.
    pub node: String,
    /// The stream's replicas.
    pub replicas: usize,
    /// The nodes seen alive, by name.
    pub nodes: Mutex<Vec<String>>,
    /// Whether the NATS connection is up.
    pub connected: Arc<std::sync::atomic::AtomicBool>,
}

impl ClusterView {
    /// Whether this node is connected to NATS now.
    pub(crate) fn nats_connected(&self) -> bool {
        self.connected.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The `Cluster` object of `/api/v3/info`.
    pub(crate) fn describe(&self) -> serde_json::Value {
        let nodes = self.nodes.lock().map(|n| n.clone()).unwrap_or_default();
        let nats = if self.nats_connected() {
            "connected"
        } else {
            "disconnected"
        };
        serde_json::json!({
            "Name": self.name,
            "Node": self.node,
            "Nodes": nodes,
            "Nats": nats,
            "StreamReplicas": self.replicas,
        })
    }
}

/// A running cluster node's log threads.
pub(crate) struct Node {
    /// The log's bounds, as this node's copy holds them.
    pub status: Arc<LogStatus>,
    /// Reads of the node's copy.
    pub reader: LogReader,
    /// For `/api/v3/info`.
    pub view: Arc<ClusterView>,
    /// The node's copy of the cluster's objects.
    pub objects: Arc<crate::objects::ObjectStore>,
    /// The node's copy of the cluster's users and roles.
    pub auth: Arc<crate::auth::AuthStore>,
    stop: Option<tokio::sync::watch::Sender<bool>>,
    nats_thread: Option<thread::JoinHandle<()>>,
    copy_thread: Option<thread::JoinHandle<()>>,
    failed: Arc<Mutex<Option<StorageFailed>>>,
}

impl Node {
    /// Joins the cluster: connects to NATS, creates or checks the stream, opens this node's copy
    /// of it under `data_dir` and catches up with the stream before it returns, so that the
    /// cores start at its end. Should the copy fail for good, `on_failure` is called.
    pub(crate) fn start(
        settings: &Cluster,
        data_dir: &Path,
        cache_bytes: u64,
        retention: Retention,
        cores: Vec<flume::Sender<Batch>>,
        connections: Arc<dyn ConnectionTable>,
        on_failure: OnStorageFailed,
    ) -> Result<(Node, Publisher), ClusterError> {
        let retention = Arc::new(Mutex::new(retention));
        let (publisher, publishes) = crate::sequencer::publish_queue(retention.clone());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|cause| ClusterError::Start {
                what: "the NATS runtime",
                cause,
            })?;
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let failed = Arc::new(Mutex::new(None));
        let inputs = node::Inputs {
            settings: settings.clone(),
            copy_dir: data_dir.join(copy::COPY_DIR),
            cache_bytes,
            retention,
            cores,
            publishes,
            publisher: publisher.clone(),
            connections: connections.clone(),
            failed: failed.clone(),
            on_failure,
            stop: stop_rx,
        };
        let nats_thread = thread::Builder::new()
            .name("herald-nats".into())
            .spawn(move || runtime.block_on(node::run(inputs, ready_tx)))
            .map_err(|cause| ClusterError::Start {
                what: "the NATS thread",
                cause,
            })?;
        let started = match ready_rx.recv_timeout(START_TIMEOUT) {
            Ok(result) => result?,
            Err(_) => {
                let _ = stop_tx.send(true);
                return Err(ClusterError::Timeout {
                    what: "connecting to NATS and opening the stream".into(),
                });
            }
        };
        let mut node = Node {
            status: started.status,
            reader: started.reader,
            view: started.view,
            objects: started.objects,
            auth: started.auth,
            stop: Some(stop_tx),
            nats_thread: Some(nats_thread),
            copy_thread: Some(started.copy_thread),
            failed,
        };
        if let Err(error) = catch_up(&node.status, started.caught_up, started.target) {
            node.stop_threads();
            return Err(error);
        }
        // What the table still holds open on this node is from its previous run, which ended
        // before the others noticed: those connections are gone.
        let leftovers = connections.close_all(&settings.node, NODE_RESTARTED);
        if !leftovers.is_empty() {
            tracing::warn!(
                connections = leftovers.len(),
                "closing, for the whole cluster, the connections this node's previous run left open"
            );
            if !publisher.offer_connection_events(leftovers) {
                tracing::warn!("the previous run's connections could not be queued for closing");
            }
        }
        Ok((node, publisher))
    }

    /// The storage failure that stopped the node's copy, if one did.
    pub(crate) fn failure(&self) -> Option<StorageFailed> {
        self.failed.lock().ok().and_then(|failed| failed.clone())
    }

    /// Stops after the publishes already queued are answered.
    pub(crate) fn stop(mut self) {
        self.stop_threads();
    }

    fn stop_threads(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(true);
        }
        for thread in [self.nats_thread.take(), self.copy_thread.take()]
            .into_iter()
            .flatten()
        {
            let _ = thread.join();
        }
    }
}

/// Waits until the copy holds the stream up to `target` (its end when the node started),
/// logging the progress of a long catch-up.
fn catch_up(
    status: &LogStatus,
    caught_up: std::sync::mpsc::Receiver<()>,
    target: u64,
) -> Result<(), ClusterError> {
    let started = Instant::now();
    loop {
        match caught_up.recv_timeout(Duration::from_secs(5)) {
            Ok(()) => break,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => tracing::info!(
                copied = status.last_seq(),
                target,
                "catching up with the cluster's stream"
            ),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                return Err(ClusterError::Copy {
                    path: PathBuf::from(copy::COPY_DIR),
                    cause: "the copy stopped before it caught up with the stream".into(),
                });
            }
        }
    }
    tracing::info!(
        last_seq = status.last_seq(),
        took_ms = started.elapsed().as_millis() as u64,
        "caught up with the cluster's stream"
    );
    Ok(())
}
