//! Cluster nodes for the tests: herald nodes of one cluster on a [`super::NatsCluster`].

use std::time::Duration;

use super::{Client, NatsCluster, Options, Server, eventually};

/// A herald node named `name` of cluster `cluster` on `nats`.
pub fn node(nats: &NatsCluster, cluster: &str, name: &str) -> Server {
    Server::start_with(node_options(nats, cluster, name))
}

/// The options of such a node, for tests that add flags or expect a failed start.
pub fn node_options(nats: &NatsCluster, cluster: &str, name: &str) -> Options {
    Options::with_args(&[
        "--nats",
        &nats.urls(),
        "--cluster-name",
        cluster,
        "--node-name",
        name,
    ])
}

/// The name of cluster `cluster`'s event stream in JetStream.
pub fn stream_of(cluster: &str) -> String {
    format!("{cluster}-events")
}

/// A websocket on `server` that sees every event of type `ty`.
pub fn watcher(server: &Server, ty: &str) -> Client {
    let mut client = server.ws(&server.admin());
    client.register(&format!("{ty}.*.*"));
    client
}

/// Waits, at most `timeout`, until `server`'s copy of the stream holds `seq` (its
/// `/api/v3/info` `LastSeq`).
pub fn holds_seq(server: &Server, seq: u64, timeout: Duration) {
    eventually(&format!("{server:?} to hold Seq {seq}"), timeout, || {
        let info = server.info();
        if info["LastSeq"].as_u64() >= Some(seq) {
            Ok(())
        } else {
            Err(info.to_string())
        }
    });
}
