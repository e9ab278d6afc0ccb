//! A cluster node's write to one replicated thing (an object, a user, a role): planned on the
//! node's copy, and published on the thing's own subject only if the thing's newest write is
//! still the one the plan saw, so the write and its event are one message and no other node's
//! write is overwritten unseen. When another write came first, the node waits until its copy
//! holds it and plans again. Answers once this node's copy applied the write.
//!
//! The REST routes run it on a core, and a starting node (for its admin user) on the main
//! thread: [`Runtime`] is what differs between them.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::sequencer::{Condition, LogStatus, PublishError, Publisher};
use crate::store::versions::Versions;
use crate::wire::event::Event;

/// Times a node plans a write again after other nodes' writes to the same thing.
pub(crate) const WRITE_ATTEMPTS: usize = 50;

/// Longest a write waits for this node's copy to hold a write.
const COPY_WAIT: Duration = Duration::from_secs(5);

/// Where a write runs: how it blocks, and how it waits with a limit.
pub(crate) trait Runtime {
    /// Runs `work` where it may block; `None` when it could not run.
    fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> impl Future<Output = Option<T>>;

    /// `until`'s output, or `None` after `limit`.
    fn timeout<F: Future>(
        &self,
        limit: Duration,
        until: F,
    ) -> impl Future<Output = Option<F::Output>>;
}

/// A planned write: its public event, the answer for the client, and what it stores beside the
/// event (an account write's private part).
pub(crate) struct Planned {
    /// The event clients receive; the write itself.
    pub event: Event,
    /// The REST answer.
    pub answer: Value,
    /// Carried in a header no client is delivered.
    pub private: Option<String>,
}

/// A plan, made again on each attempt: `None` when there is nothing to write.
pub(crate) type Plan<E> = Arc<dyn Fn() -> Result<Option<Planned>, E> + Send + Sync>;

/// Why a write was not made.
#[derive(Debug)]
pub(crate) enum WriteFailed<E> {
    /// The plan refused the write (not found, invalid, a JSON Patch `test`…).
    Plan(E),
    /// The stream did not take it.
    Publish(PublishError),
    /// Stored as this `Seq`, but the node's copy has not read it back in time.
    NotReadBack(u64),
    /// Other nodes wrote the thing [`WRITE_ATTEMPTS`] times in a row.
    Contended,
    /// The node's copy could not be read.
    Copy(String),
}

/// What a write needs of the node.
pub(crate) struct Target<'a> {
    /// Publishes to the cluster's stream.
    pub publisher: &'a Publisher,
    /// The node's copy of the stream.
    pub status: &'a LogStatus,
    /// The writes the copy holds.
    pub versions: &'a Versions,
}

/// Plans and publishes a write to `ty`/`key` until it applies: its answer, or `None` when the
/// plan found nothing to write.
pub(crate) async fn write<E: Send + 'static>(
    runtime: &impl Runtime,
    to: Target<'_>,
    ty: &str,
    key: &str,
    plan: Plan<E>,
) -> Result<Option<Value>, WriteFailed<E>> {
    // What JetStream last said is the thing's newest write, when the copy knows a write it no
    // longer holds (retention removed every write of the thing from the stream).
    let mut newest_in_stream = None;
    for _ in 0..WRITE_ATTEMPTS {
        let versions = to.versions.clone();
        let (at_ty, at) = (ty.to_owned(), key.to_owned());
        let plan = plan.clone();
        let planned = runtime
            .blocking(move || {
                // The Seq is read before the plan: a write applied between them makes the
                // condition fail, never pass.
                let base = versions.seq_of(&at_ty, &at);
                let last_write = versions.last_write_of(&at_ty, &at);
                match (base, last_write) {
                    (Ok(base), Ok(last_write)) => Ok(plan()
                        .map(|planned| planned.map(|p| (p, base, last_write.max(base))))
                        .map_err(WriteFailed::Plan)?),
                    (Err(error), _) | (_, Err(error)) => Err(WriteFailed::Copy(error.to_string())),
                }
            })
            .await
            .unwrap_or_else(|| Err(WriteFailed::Copy("the copy could not be read".into())))?;
        let Some((planned, base, last_write)) = planned else {
            return Ok(None);
        };
        let condition = Condition {
            ty: ty.to_owned(),
            key: planned.event.key.clone(),
            expected: newest_in_stream
                .filter(|&n| n < last_write)
                .unwrap_or(last_write),
            base,
            horizon: to.versions.horizon(),
            private: planned.private,
        };
        match to
            .publisher
            .publish_conditional(planned.event, condition)
            .await
        {
            Ok(seq) => {
                // JetStream stored it; every node applies it unless another write to the
                // thing came first (JetStream's own check is not serializable everywhere).
                if !copied_through(runtime, to.status, seq).await {
                    return Err(WriteFailed::NotReadBack(seq));
                }
                let versions = to.versions.clone();
                let refused = runtime
                    .blocking(move || versions.was_refused(seq))
                    .await
                    .unwrap_or(Ok(true))
                    .map_err(|error| WriteFailed::Copy(error.to_string()))?;
                if !refused {
                    return Ok(Some(planned.answer));
                }
            }
            Err(PublishError::Conflict { latest }) => {
                newest_in_stream = Some(latest);
                if latest > last_write {
                    copied_through(runtime, to.status, latest).await;
                }
            }
            Err(error) => return Err(WriteFailed::Publish(error)),
        }
    }
    Err(WriteFailed::Contended)
}

/// Waits (at most a few seconds) until this node's copy of the stream holds `seq`; whether
/// it does.
pub(crate) async fn copied_through(runtime: &impl Runtime, status: &LogStatus, seq: u64) -> bool {
    let deadline = Instant::now() + COPY_WAIT;
    while status.last_seq() < seq && Instant::now() < deadline {
        let next = status.next_flush();
        if status.last_seq() >= seq {
            break;
        }
        let _ = runtime.timeout(COPY_WAIT, next.recv_async()).await;
    }
    status.last_seq() >= seq
}

/// A thread of its own, for a write made while the node starts: it blocks where it runs, and
/// waits with the timer of the tokio runtime it runs in.
pub(crate) struct OnThread;

impl Runtime for OnThread {
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Option<T> {
        Some(work())
    }

    async fn timeout<F: Future>(&self, limit: Duration, until: F) -> Option<F::Output> {
        tokio::time::timeout(limit, until).await.ok()
    }
}
