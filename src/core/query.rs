//! Questions one core answers for a request served on another: a core's state is its own
//! thread's, so a request that needs every core's asks each one over its query inbox.

use std::rc::Rc;

use super::Core;
use super::view::ConnectionView;

/// A question one core answers for a request served on another.
pub(crate) enum CoreQuery {
    /// The live connections of the core.
    Connections(flume::Sender<Vec<ConnectionView>>),
}

impl Core {
    /// Answers other cores' questions until the server stops.
    pub(crate) async fn answer_queries(self: Rc<Self>, queries: flume::Receiver<CoreQuery>) {
        while let Ok(query) = queries.recv_async().await {
            match query {
                CoreQuery::Connections(reply) => {
                    let _ = reply.send(self.connection_views());
                }
            }
        }
    }
}
