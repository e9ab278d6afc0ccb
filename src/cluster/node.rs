//! The NATS thread's life: join the cluster, start the node's copy, the relay, the consumer
//! and the presence tasks, report to the server, and serve until stopped.

use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use super::stream::{self, Link};
use super::{ClusterError, ClusterView, ConnectionTable, copy, presence, relay, secret};
use crate::config::{Cluster, Retention};
use crate::objects::ObjectStore;
use crate::sequencer::{Batch, LogStatus, OnStorageFailed, Publish, Publisher, StorageFailed};
use crate::store::LogReader;

/// Longest a stopping node waits to leave the nodes bucket.
const LEAVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(4);

/// What the NATS thread is handed.
pub(super) struct Inputs {
    pub settings: Cluster,
    pub copy_dir: PathBuf,
    /// The copy's page cache, in bytes.
    pub cache_bytes: u64,
    pub retention: Arc<Mutex<Retention>>,
    pub cores: Vec<flume::Sender<Batch>>,
    pub publishes: flume::Receiver<Publish>,
    /// For the connection events herald writes itself (a lost node's).
    pub publisher: Publisher,
    pub connections: Arc<dyn ConnectionTable>,
    pub failed: Arc<Mutex<Option<StorageFailed>>>,
    pub on_failure: OnStorageFailed,
    pub stop: watch::Receiver<bool>,
}

/// What a started node hands back to the server.
pub(super) struct Started {
    /// The node's copy of the cluster's objects.
    pub objects: Arc<ObjectStore>,
    /// The node's copy of the cluster's users and roles.
    pub auth: Arc<crate::auth::AuthStore>,
    pub status: Arc<LogStatus>,
    pub reader: LogReader,
    pub view: Arc<ClusterView>,
    pub copy_thread: std::thread::JoinHandle<()>,
    /// Receives once the copy holds the stream up to `target`.
    pub caught_up: mpsc::Receiver<()>,
    pub target: u64,
}

/// The NATS thread: joins, reports to the server through `ready`, then serves until stopped.
pub(super) async fn run(inputs: Inputs, ready: mpsc::Sender<Result<Started, ClusterError>>) {
    let Inputs {
        settings,
        copy_dir,
        cache_bytes,
        retention,
        cores,
        publishes,
        publisher,
        connections,
        failed,
        on_failure,
        mut stop,
    } = inputs;
    let link = Arc::new(Link::default());
    let joined = stream::join(&settings, &retention, link.clone()).await;
    let (client, js, stream, facts) = match joined {
        Ok(joined) => joined,
        Err(error) => {
            let _ = ready.send(Err(error));
            return;
        }
    };
    let view = Arc::new(ClusterView {
        name: settings.name.clone(),
        node: settings.node.clone(),
        replicas: facts.replicas,
        nodes: Mutex::new(Vec::new()),
        connected: link.flag(),
    });
    let secret = match secret::obtain(&js, &settings.name, facts.replicas).await {
        Ok(secret) => secret,
        Err(error) => {
            let _ = ready.send(Err(error));
            return;
        }
    };
    let place = copy::Place {
        dir: &copy_dir,
        cache_bytes,
    };
    let copy = match copy::start(
        place,
        &facts,
        &secret,
        cores,
        connections.clone(),
        failed,
        on_failure,
    ) {
        Ok(copy) => copy,
        Err(error) => {
            let _ = ready.send(Err(error));
            return;
        }
    };
    let consumer = tokio::spawn(copy::consume(
        stream.clone(),
        copy::Subjects::new(&settings.name),
        copy.next_seq,
        copy.input.clone(),
        copy.stream_first.clone(),
        copy.stream_last.clone(),
    ));
    let relay = tokio::spawn(relay::run(
        publishes,
        js.clone(),
        stream.clone(),
        relay::Names::new(&settings),
        copy.delivered.clone(),
        link.clone(),
        stop.clone(),
    ));
    // The node leaves the bucket only once its last connection events are published, so no
    // survivor takes those connections for a lost node's.
    let (leave, leaving) = watch::channel(false);
    let presence = tokio::spawn(presence::run(
        js.clone(),
        settings.clone(),
        facts.replicas,
        view.clone(),
        presence::Closer::new(connections, publisher),
        leaving,
    ));
    let limits = tokio::spawn(stream::keep_limits(
        js.clone(),
        stream.clone(),
        retention.clone(),
        copy.stream_first.clone(),
        copy.stream_last.clone(),
        stop.clone(),
    ));
    let started = Started {
        objects: copy.objects.clone(),
        auth: copy.auth.clone(),
        status: copy.status.clone(),
        reader: copy.reader.clone(),
        view,
        copy_thread: copy.thread,
        caught_up: copy.caught_up,
        target: facts.last,
    };
    if ready.send(Ok(started)).is_err() {
        return;
    }
    while !*stop.borrow() {
        if stop.changed().await.is_err() {
            break;
        }
    }
    // Publishes already queued are answered first; then the consumer stops, which ends the copy.
    let _ = relay.await;
    let _ = leave.send(true);
    let mut presence = presence;
    if tokio::time::timeout(LEAVE_TIMEOUT, &mut presence)
        .await
        .is_err()
    {
        presence.abort();
    }
    consumer.abort();
    limits.abort();
    let _ = consumer.await;
    drop(copy.input);
    let _ = client.drain().await;
}
