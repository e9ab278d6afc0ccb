//! Which nodes are alive: each node puts its name in the key-value bucket `<cluster>-nodes`
//! every few seconds, and an entry not renewed expires; the live ones are the cluster's nodes.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, kv, stream};
use futures_util::StreamExt;
use tokio::sync::watch;

use super::ClusterView;
use crate::config::Cluster;

/// How often a node renews its entry.
const ANNOUNCE_EVERY: Duration = Duration::from_secs(5);
/// How long an entry lives without renewal: three announcements.
const NODE_TTL: Duration = Duration::from_secs(15);

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
    mut stop: watch::Receiver<bool>,
) {
    let mut store = None;
    loop {
        if store.is_none() {
            store = open(&js, &settings, replicas).await;
        }
        if let Some(store) = &store {
            announce(store, &settings, &view).await;
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

async fn announce(store: &kv::Store, settings: &Cluster, view: &ClusterView) {
    let entry = serde_json::json!({ "Node": settings.node }).to_string();
    if let Err(error) = store.put(&settings.node, entry.into()).await {
        tracing::debug!(%error, "announcing this node failed; will retry");
        return;
    }
    let Ok(mut keys) = store.keys().await else {
        return;
    };
    // A key renewed while the listing runs can come twice.
    let mut nodes = std::collections::BTreeSet::new();
    while let Some(key) = keys.next().await {
        if let Ok(key) = key {
            nodes.insert(key);
        }
    }
    let nodes: Vec<String> = nodes.into_iter().collect();
    metrics::gauge!(crate::metrics::CLUSTER_NODES).set(nodes.len() as f64);
    if let Ok(mut known) = view.nodes.lock() {
        *known = nodes;
    }
}
