//! A cluster node's table of every node's live connections, learnt from herald's own
//! `connections.create`/`delete` events as the node's copy of the stream reads them, and kept in
//! the node's sled so a restart finds it as it was. The connections API lists the other nodes'
//! from here (this node's own come from its cores, which know their counters now); the
//! `connections.delete` of another node's connection also goes into this node's history.
//!
//! On-disk layout: tree `connections_cluster` (named in [`crate::store::db`]): key = node name,
//! a zero byte, then the connection's `RemoteAddr`; value = its JSON at connect time.

use std::collections::BTreeMap;
use std::sync::RwLock;
use std::time::SystemTime;

use serde::Deserialize;
use sled::Tree;

use super::history::{History, HistoryError};
use super::view::ConnectionView;
use crate::wire::event::Event;

/// The table: `(node, RemoteAddr)` → the connection.
pub(crate) struct ClusterConnections {
    /// This node's name.
    node: String,
    live: RwLock<BTreeMap<(String, String), ConnectionView>>,
    tree: Tree,
    history: History,
}

/// The part of a connection event the table reads.
#[derive(Deserialize)]
struct ConnectionEvent {
    #[serde(rename = "Type")]
    ty: String,
    #[serde(rename = "Action")]
    action: String,
    #[serde(rename = "Object")]
    object: ConnectionView,
}

fn tree_key(node: &str, remote: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(node.len() + remote.len() + 1);
    key.extend_from_slice(node.as_bytes());
    key.push(0);
    key.extend_from_slice(remote.as_bytes());
    key
}

impl ClusterConnections {
    /// Opens the table of node `node` from `db`; closed connections of other nodes go to
    /// `history`.
    pub(crate) fn open(
        db: &sled::Db,
        history: History,
        node: &str,
    ) -> Result<ClusterConnections, HistoryError> {
        let tree = crate::store::db::cluster_connections_tree(db)?;
        let mut live = BTreeMap::new();
        for entry in tree.iter() {
            let (_, value) = entry?;
            let view: ConnectionView =
                serde_json::from_slice(&value).map_err(|e| HistoryError::Corrupt(e.to_string()))?;
            if let Some(node) = view.node.clone() {
                live.insert((node, view.remote_addr.clone()), view);
            }
        }
        Ok(ClusterConnections {
            node: node.to_owned(),
            live: RwLock::new(live),
            tree,
            history,
        })
    }

    /// The live connections of every other node.
    pub(crate) fn others(&self) -> Vec<ConnectionView> {
        let live = self.live.read().unwrap_or_else(|e| e.into_inner());
        live.iter()
            .filter(|((node, _), _)| *node != self.node)
            .map(|(_, view)| view.clone())
            .collect()
    }

    fn create(&self, node: String, view: ConnectionView) -> Result<(), HistoryError> {
        let value = serde_json::to_vec(&view).map_err(|e| HistoryError::Corrupt(e.to_string()))?;
        self.tree
            .insert(tree_key(&node, &view.remote_addr), value)?;
        let mut live = self.live.write().unwrap_or_else(|e| e.into_inner());
        live.insert((node, view.remote_addr.clone()), view);
        Ok(())
    }

    fn delete(&self, seq: u64, node: String, view: ConnectionView) -> Result<(), HistoryError> {
        let key = (node, view.remote_addr.clone());
        {
            let mut live = self.live.write().unwrap_or_else(|e| e.into_inner());
            // A later connection from the same address stays.
            if live
                .get(&key)
                .is_some_and(|open| open.create_time == view.create_time)
            {
                live.remove(&key);
                self.tree.remove(tree_key(&key.0, &key.1))?;
            }
        }
        // This node's own closes are in its history already, written as they happened.
        if key.0 != self.node {
            let closed_at = view
                .close_time
                .as_deref()
                .and_then(|t| humantime::parse_rfc3339_weak(t).ok())
                .unwrap_or(SystemTime::UNIX_EPOCH);
            self.history
                .record_closed_elsewhere(seq, &view, closed_at)?;
        }
        Ok(())
    }
}

impl crate::cluster::ConnectionTable for ClusterConnections {
    fn apply(&self, seq: u64, json: &[u8]) {
        let event: ConnectionEvent = match serde_json::from_slice(json) {
            Ok(event) => event,
            Err(error) => {
                tracing::warn!(seq, %error, "a connection event of the cluster is unreadable; skipping it");
                return;
            }
        };
        // Every node writes its name in the connections it serves.
        let Some(node) = event.object.node.clone() else {
            return;
        };
        if event.ty != "connections" {
            return;
        }
        let applied = match event.action.as_str() {
            "create" => self.create(node, event.object),
            "delete" => self.delete(seq, node, event.object),
            _ => Ok(()),
        };
        if let Err(error) = applied {
            tracing::warn!(seq, %error, "could not record a connection of the cluster");
        }
    }

    fn flush(&self) {
        if let Err(error) = self.history.flush() {
            tracing::warn!(%error, "could not flush the cluster's connections");
        }
    }

    fn clear(&self) {
        let mut live = self.live.write().unwrap_or_else(|e| e.into_inner());
        live.clear();
        if let Err(error) = self.tree.clear() {
            tracing::warn!(%error, "could not clear the cluster's connections");
        }
    }

    fn nodes(&self) -> Vec<String> {
        let live = self.live.read().unwrap_or_else(|e| e.into_inner());
        let mut nodes: Vec<String> = live.keys().map(|(node, _)| node.clone()).collect();
        nodes.dedup();
        nodes
    }

    fn close_all(&self, node: &str, reason: &str) -> Vec<Event> {
        let close_time = humantime::format_rfc3339_nanos(SystemTime::now()).to_string();
        let live = self.live.read().unwrap_or_else(|e| e.into_inner());
        live.iter()
            .filter(|((owner, _), _)| owner == node)
            .map(|(_, view)| {
                let mut view = view.clone();
                view.close_time = Some(close_time.clone());
                view.close_reason = Some(reason.to_owned());
                Event::new("connections", "delete", &view.principal, &view.principal)
                    .with_object(&view)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::ConnectionTable;
    use crate::core::view::NEVER_EXPIRES;

    fn view(node: &str, remote: &str) -> ConnectionView {
        ConnectionView {
            remote_addr: remote.into(),
            principal: "runner:a".into(),
            create_time: "2026-11-27T00:00:00Z".into(),
            expires_at: NEVER_EXPIRES.into(),
            kind: "websocket".into(),
            node: Some(node.into()),
            filters: Vec::new(),
            events_sent: 0,
            bytes_sent: 0,
            last_seq: 0,
            close_time: None,
            close_reason: None,
        }
    }

    fn json(event: &Event) -> Vec<u8> {
        let mut json = event.body_prefix();
        json.extend_from_slice(b"1}");
        json
    }

    fn event(action: &str, view: &ConnectionView) -> Vec<u8> {
        json(&Event::new("connections", action, &view.principal, &view.principal).with_object(view))
    }

    #[test]
    fn another_nodes_connection_is_listed_until_its_delete_then_kept_in_the_history_once() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let (history, _) = History::open(&db).unwrap();
        let table = ClusterConnections::open(&db, history.clone(), "b").unwrap();
        let theirs = view("a", "127.0.0.1:1");
        table.apply(1, &event("create", &theirs));
        table.apply(2, &event("create", &view("b", "127.0.0.1:2")));
        assert_eq!(table.others(), vec![theirs.clone()]);
        assert_eq!(table.nodes(), ["a", "b"]);
        let closes = table.close_all("a", "node lost");
        assert_eq!(closes.len(), 1);
        let close = json(&closes[0]);
        table.apply(3, &close);
        table.apply(3, &close);
        assert!(table.others().is_empty());
        let listed = history.list(None, None, 10).unwrap();
        assert_eq!(listed.len(), 1, "{listed:?}");
        assert_eq!(listed[0].close_reason.as_deref(), Some("node lost"));
        let reopened = ClusterConnections::open(&db, history, "b").unwrap();
        assert_eq!(reopened.nodes(), ["b"], "the table is kept in the database");
    }
}
