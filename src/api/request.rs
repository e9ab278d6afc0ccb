//! A request as the routes see it, and what they read about the server for its answers.

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Instant;

use crate::api::info::ServerFacts;
use crate::core::Core;
use crate::core::conns::HttpWatch;
use crate::wire::http::RequestHead;

/// A request as the routes see it.
pub(crate) struct Request {
    /// The parsed head.
    pub head: RequestHead,
    /// The whole body (already within the size limit).
    pub body: Vec<u8>,
    /// When the head was complete, for the publish-duration metric.
    pub received: Instant,
    /// The connection's deadlines and tracking record.
    pub watch: Rc<HttpWatch>,
}

impl Request {
    /// The server as this request's client reached it, for `/api/v3/info` and token answers.
    pub(crate) fn server_facts<'a>(&self, core: &'a Core) -> ServerFacts<'a> {
        let shared = &core.shared;
        let status = &shared.log_status;
        // The address and port this client reached: the true answer even on a wildcard listener.
        let reached: SocketAddr = self.watch.local.unwrap_or(shared.config.listen);
        ServerFacts {
            server_id: &shared.server_id,
            reached,
            host_name: crate::config::host_name().unwrap_or_default(),
            uptime: shared.started.elapsed(),
            cores: shared.config.cores,
            driver: shared.driver,
            epoch: &status.epoch,
            first_seq: status.first_seq(),
            last_seq: status.last_seq(),
            durability: match (&shared.cluster, shared.config.durability) {
                // Answered once stored on a quorum of the stream's replicas.
                (Some(_), _) => "replicated",
                (None, crate::config::Durability::Sync) => "sync",
                (None, crate::config::Durability::Batched) => "batched",
            },
            cluster: shared.cluster.as_ref().map(|view| view.describe()),
            default_password: shared.auth.default_password_in_use(),
        }
    }
}
