//! Which nodes are alive: each node puts its name in the key-value bucket `<cluster>-nodes`
//! every few seconds, and an entry not renewed expires; the live ones are the cluster's nodes.
//! The connections a node that left still holds open in the cluster's table are closed as
//! `node lost` by the first live node in name order, once for the cluster: every node then
//! applies those `connections.delete` events as it reads them.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, kv, stream};
use futures_util::StreamExt;
use tokio::sync::watch;

use super::{ClusterView, ConnectionTable, NODE_LOST};
use crate::config::Cluster;
use crate::sequencer::Publisher;

/// How often a node renews its entry.
const ANNOUNCE_EVERY: Duration = Duration::from_secs(5);
/// How long an entry lives without renewal: three announcements.
const NODE_TTL: Duration = Duration::from_secs(15);
/// How long the closing of a lost node's connections waits to be read back before it is
/// published again.
const CLOSE_AGAIN_AFTER: Duration = Duration::from_secs(30);

/// The bucket of cluster `name`'s nodes.
fn bucket(name: &str) -> String {
    format!("{name}-nodes")
}

/// Announces this node and counts the others until stopped; a graceful stop removes its entry.
pub(super) async fn run(
    js: jetstream::Context,
    settings: Cluster,
    replicas: usize,
    view: Arc<ClusterView>,
    mut closer: Closer,
    mut stop: watch::Receiver<bool>,
) {
    let mut store = None;
    loop {
        if store.is_none() {
            store = open(&js, &settings, replicas).await;
        }
        if let Some(store) = &store
            && let Some(live) = announce(store, &settings, &view).await
        {
            closer.sweep(&live, &settings.node);
        }
        tokio::select! {
            _ = tokio::time::sleep(ANNOUNCE_EVERY) => {}
            _ = stop.changed() => break,
        }
    }
    if let Some(store) = store {
        let leave = store.delete(&settings.node);
        let _ = tokio::time::timeout(Duration::from_secs(1), leave).await;
    }
}

async fn open(js: &jetstream::Context, settings: &Cluster, replicas: usize) -> Option<kv::Store> {
    let name = bucket(&settings.name);
    if let Ok(store) = js.get_key_value(&name).await {
        return Some(store);
    }
    // The bucket's stream, made by hand: the client's `create_key_value` first reads the
    // account's limits in a form JetStream servers before 2.10 do not answer.
    let config = stream::Config {
        name: format!("KV_{name}"),
        description: Some(format!("herald cluster {}: its live nodes", settings.name)),
        subjects: vec![format!("$KV.{name}.>")],
        max_messages_per_subject: 1,
        max_age: NODE_TTL,
        duplicate_window: NODE_TTL,
        storage: stream::StorageType::File,
        num_replicas: replicas,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        discard: stream::DiscardPolicy::New,
        ..Default::default()
    };
    let made = js.create_stream(config).await;
    match made {
        Ok(_) => js.get_key_value(&name).await.ok(),
        Err(error) => {
            tracing::debug!(%error, "opening the cluster's nodes bucket failed; will retry");
            None
        }
    }
}

/// Renews this node's entry and answers the live nodes, sorted; `None` when either failed.
async fn announce(
    store: &kv::Store,
    settings: &Cluster,
    view: &ClusterView,
) -> Option<Vec<String>> {
    let entry = serde_json::json!({ "Node": settings.node }).to_string();
    if let Err(error) = store.put(&settings.node, entry.into()).await {
        tracing::debug!(%error, "announcing this node failed; will retry");
        return None;
    }
    let Ok(mut keys) = store.keys().await else {
        return None;
    };
    // A key renewed while the listing runs can come twice.
    let mut nodes = std::collections::BTreeSet::new();
    let mut complete = true;
    while let Some(key) = keys.next().await {
        match key {
            Ok(key) => {
                nodes.insert(key);
            }
            Err(_) => complete = false,
        }
    }
    let nodes: Vec<String> = nodes.into_iter().collect();
    metrics::gauge!(crate::metrics::CLUSTER_NODES).set(nodes.len() as f64);
    if let Ok(mut known) = view.nodes.lock() {
        known.clone_from(&nodes);
    }
    // A node missing from a listing cut short is not lost.
    complete.then_some(nodes)
}

/// Closes the connections of nodes that left the bucket.
pub(super) struct Closer {
    table: Arc<dyn ConnectionTable>,
    publisher: Publisher,
    /// Nodes seen live since this node started: one that leaves the bucket is lost at once.
    seen: HashSet<String>,
    /// Nodes with open connections in the table never seen live, since when: lost once
    /// missing for [`NODE_TTL`] (a node just started may not be listed yet).
    missing_since: HashMap<String, Instant>,
    /// When this node last published the closing of each lost node's connections.
    closed_at: HashMap<String, Instant>,
}

impl Closer {
    pub(super) fn new(table: Arc<dyn ConnectionTable>, publisher: Publisher) -> Closer {
        Closer {
            table,
            publisher,
            seen: HashSet::new(),
            missing_since: HashMap::new(),
            closed_at: HashMap::new(),
        }
    }

    /// After each listing of the `live` nodes (sorted): the first of them publishes the
    /// closing of every lost node's open connections.
    fn sweep(&mut self, live: &[String], this: &str) {
        let now = Instant::now();
        self.seen.extend(live.iter().cloned());
        let open = self.table.nodes();
        self.missing_since
            .retain(|node, _| !live.contains(node) && open.contains(node));
        let mut lost = Vec::new();
        for node in open {
            if node == this || live.contains(&node) {
                continue;
            }
            let gone = self.seen.contains(&node)
                || now.duration_since(*self.missing_since.entry(node.clone()).or_insert(now))
                    >= NODE_TTL;
            if gone {
                lost.push(node);
            }
        }
        self.closed_at
            .retain(|node, at| lost.contains(node) && now.duration_since(*at) < CLOSE_AGAIN_AFTER);
        if live.first().map(String::as_str) != Some(this) {
            return;
        }
        for node in lost {
            if self.closed_at.contains_key(&node) {
                continue;
            }
            let events = self.table.close_all(&node, NODE_LOST);
            let count = events.len();
            if self.publisher.offer_connection_events(events) {
                tracing::warn!(%node, connections = count, "a node left the cluster; closed its connections");
                self.closed_at.insert(node, now);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::config::Retention;
    use crate::wire::event::Event;

    /// A table whose only open connections are one on each of `nodes`.
    struct Open(Vec<String>);

    impl ConnectionTable for Open {
        fn apply(&self, _: u64, _: &[u8]) {}
        fn flush(&self) {}
        fn clear(&self) {}
        fn nodes(&self) -> Vec<String> {
            self.0.clone()
        }
        fn close_all(&self, node: &str, reason: &str) -> Vec<Event> {
            vec![Event::new("connections", "delete", node, reason)]
        }
    }

    fn closer(open: &[&str]) -> (Closer, flume::Receiver<crate::sequencer::Publish>) {
        let retention = Arc::new(Mutex::new(Retention::UNLIMITED));
        let (publisher, published) = crate::sequencer::publish_queue(retention);
        let table = Arc::new(Open(open.iter().map(|n| n.to_string()).collect()));
        (Closer::new(table, publisher), published)
    }

    fn names(nodes: &[&str]) -> Vec<String> {
        nodes.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn only_the_first_live_node_closes_a_lost_nodes_connections_and_only_once() {
        let (mut first, published_by_first) = closer(&["a"]);
        let (mut second, published_by_second) = closer(&["a"]);
        for closer in [&mut first, &mut second] {
            closer.sweep(&names(&["a", "b", "c"]), "ignored");
        }
        first.sweep(&names(&["b", "c"]), "b");
        second.sweep(&names(&["b", "c"]), "c");
        let closing = published_by_first
            .try_recv()
            .expect("b closes a's connections");
        assert_eq!(closing.events[0].0.action, "delete");
        assert_eq!(closing.events[0].0.principal, NODE_LOST);
        assert!(published_by_second.try_recv().is_err(), "c leaves it to b");
        first.sweep(&names(&["b", "c"]), "b");
        assert!(
            published_by_first.try_recv().is_err(),
            "not again while its events are on their way"
        );
    }

    #[test]
    fn a_node_never_seen_live_is_not_lost_before_its_entry_could_have_expired() {
        let (mut closer, published) = closer(&["new"]);
        closer.sweep(&names(&["b"]), "b");
        assert!(published.try_recv().is_err(), "it may not be listed yet");
        closer
            .missing_since
            .insert("new".into(), Instant::now() - NODE_TTL);
        closer.sweep(&names(&["b"]), "b");
        assert!(
            published.try_recv().is_ok(),
            "missing for {NODE_TTL:?}: lost"
        );
    }
}
