//! The node's copy of the cluster's stream: an ordered consumer reads the stream from the last
//! `Seq` the copy holds, and the thread `herald-copy` appends each batch to a sled event log
//! (replays and `GET /api/v3/events` read it) and hands it to every core, as the local
//! sequencer does. The copy is a cache: it is never synced, and a node that finds it missing,
//! broken or of another Epoch starts a new one from the stream's first retained event.
//!
//! Object and account writes (their subjects say so) are applied to the node's objects, users
//! and roles, in the same database, before the copy stores them; the private part of an account
//! write (its header) is applied and never stored.
//!
//! herald's own connection events (their subject says so) also go to the cluster's connection
//! table, which is made durable before the copy holds them: after a crash the copy reads again
//! at most what the table already has, and applying an event twice changes nothing.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use async_nats::jetstream::consumer::{DeliverPolicy, pull::OrderedConfig};
use async_nats::jetstream::stream::Stream;
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::watch;

use super::stream::Facts;
use super::{ClusterError, ConnectionTable, subject};
use crate::auth::AuthStore;
use crate::config::Retention;
use crate::objects::{Kind, ObjectStore};
use crate::sequencer::{Batch, LogStatus, OnStorageFailed, SequencedBatch, StorageFailed};
use crate::store::versions::{Base, Versions};
use crate::store::{EventLog, LogReader, StoreError};
use crate::wire::event::EncodedEvent;

/// The copy's directory inside the data directory.
pub(super) const COPY_DIR: &str = "stream-copy";
/// Batches waiting for the copy thread before the consumer waits.
const INPUT_DEPTH: usize = 64;
/// Most messages the consumer hands over as one batch.
const MAX_BATCH: usize = 1024;
/// How often the copy is flushed (for a faster restart, not for safety) and trimmed.
const UPKEEP_EVERY: Duration = Duration::from_secs(1);
/// Pause before a consumer that ended is made again.
const RECONSUME_PAUSE: Duration = Duration::from_millis(250);
/// A consumer that delivers nothing for this long while the stream holds events after the
/// copy's end is made again (its server died, or it was lost in a leader election).
const STALL_AFTER: Duration = Duration::from_secs(3);

/// What the consumer hands the copy thread.
pub(super) enum Input {
    /// Consecutive messages, and the consumer's pending count after them.
    Events(Vec<Message>, u64),
    /// The stream no longer holds the `Seq`s from the copy's end up to this one.
    Gap(u64),
}

/// One message of the stream.
pub(super) struct Message {
    seq: u64,
    payload: Bytes,
    /// What its subject says it is.
    carries: Carries,
    /// An object or account write's `Herald-Base`: the `Seq` of the newest event of its object,
    /// user or role it was planned on.
    base: Option<Base>,
    /// An account write's private part (`Herald-Private`), applied and never stored.
    private: Option<String>,
}

/// What a message of the stream is, by its subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Carries {
    /// A client's event.
    Event,
    /// An object write, which the copy applies to its objects.
    Object,
    /// A user or role write, which the copy applies to its accounts.
    Account,
    /// One of herald's own connection events, which the cluster's connection table applies.
    Connection,
}

/// The subjects the consumer tells apart, for cluster `name`.
pub(super) struct Subjects {
    objects: String,
    accounts: String,
    connections: String,
}

impl Subjects {
    pub(super) fn new(name: &str) -> Subjects {
        Subjects {
            objects: format!("{}.", subject::object_prefix(name)),
            accounts: format!("{}.", subject::account_prefix(name)),
            connections: format!("{}.", subject::connection_prefix(name)),
        }
    }

    fn carries(&self, subject: &str) -> Carries {
        if subject.starts_with(&self.objects) {
            Carries::Object
        } else if subject.starts_with(&self.accounts) {
            Carries::Account
        } else if subject.starts_with(&self.connections) {
            Carries::Connection
        } else {
            Carries::Event
        }
    }
}

/// What the copy stores in place of an object write it refused: a record that no replay, read
/// or fan-out delivers (it is no event), so the `Seq`s stay contiguous without a gap.
const REFUSED_WRITE: &[u8] = b"{}";

/// The events of one batch for the cores, and the refused writes stored with them.
#[derive(Default)]
struct Copied {
    events: Vec<EncodedEvent>,
    refused: Vec<u64>,
}

impl Copied {
    fn push(&mut self, event: EncodedEvent) {
        self.events.push(event);
    }

    fn refused(&mut self, seq: u64) {
        self.refused.push(seq);
    }
}

/// A started copy.
pub(super) struct Copy {
    /// The node's copy of the cluster's objects, in the same database.
    pub objects: Arc<ObjectStore>,
    /// The node's copy of the cluster's users and roles, in the same database.
    pub auth: Arc<AuthStore>,
    pub status: Arc<LogStatus>,
    pub reader: LogReader,
    pub thread: thread::JoinHandle<()>,
    pub input: flume::Sender<Input>,
    /// The last `Seq` copied and handed to the cores.
    pub delivered: watch::Receiver<u64>,
    /// Receives once the copy reached the stream's end as it was at start.
    pub caught_up: mpsc::Receiver<()>,
    /// The first `Seq` the consumer is to read.
    pub next_seq: u64,
    /// The stream's first retained `Seq`, which the copy trims to.
    pub stream_first: Arc<AtomicU64>,
    /// The stream's last `Seq`, as last read: a consumer behind it that delivers nothing is
    /// made again.
    pub stream_last: Arc<AtomicU64>,
}

/// Where a node's copy lives, and how much of it sled may keep in memory.
pub(super) struct Place<'a> {
    pub dir: &'a Path,
    pub cache_bytes: u64,
}

/// Opens the copy at `place` and starts its thread.
pub(super) fn start(
    place: Place<'_>,
    facts: &Facts,
    secret: &[u8],
    cores: Vec<flume::Sender<Batch>>,
    connections: Arc<dyn ConnectionTable>,
    failed: Arc<Mutex<Option<StorageFailed>>>,
    on_failure: OnStorageFailed,
) -> Result<Copy, ClusterError> {
    let (log, objects, auth, fresh) = open(place.dir, place.cache_bytes, facts, secret)?;
    let objects = Arc::new(objects);
    let auth = Arc::new(auth);
    if fresh {
        // The table follows the copy: a new copy builds it again from the retained stream.
        connections.clear();
    }
    let status = Arc::new(LogStatus::of(&log));
    let reader = log.reader();
    let last = log.last_seq();
    let (input, inputs) = flume::bounded(INPUT_DEPTH);
    let (delivered_tx, delivered) = watch::channel(last);
    let (caught_tx, caught_up) = mpsc::channel();
    let caught = if last >= facts.last {
        let _ = caught_tx.send(());
        None
    } else {
        Some(caught_tx)
    };
    let stream_first = Arc::new(AtomicU64::new(facts.first));
    let copier = Copier {
        log,
        objects: objects.clone(),
        auth: auth.clone(),
        status: status.clone(),
        cores,
        connections,
        connections_unflushed: false,
        delivered: delivered_tx,
        target: facts.last,
        caught,
        stream_first: stream_first.clone(),
        failed,
        on_failure: Some(on_failure),
        last_upkeep: Instant::now(),
    };
    let thread = thread::Builder::new()
        .name("herald-copy".into())
        .spawn(move || copier.run(inputs))
        .map_err(|cause| ClusterError::Start {
            what: "the copy thread",
            cause,
        })?;
    Ok(Copy {
        objects,
        auth,
        status,
        reader,
        thread,
        input,
        delivered,
        caught_up,
        next_seq: last.saturating_add(1),
        stream_first,
        stream_last: Arc::new(AtomicU64::new(facts.last)),
    })
}

/// The copy in `dir` when it continues the stream described by `facts`, else a new one that
/// starts at the stream's first retained event; with the objects and accounts it holds (tokens
/// signed with `secret`), and true for a new one.
fn open(
    dir: &Path,
    cache_bytes: u64,
    facts: &Facts,
    secret: &[u8],
) -> Result<(EventLog, ObjectStore, AuthStore, bool), ClusterError> {
    let failed = |cause: String| ClusterError::Copy {
        path: dir.to_path_buf(),
        cause,
    };
    let db = crate::store::db::open(dir, cache_bytes)
        .map_err(|e| failed(crate::store::sled_reason(&e)))?;
    let usable = match crate::store::log::stored_epoch(&db) {
        Ok(Some(epoch)) if epoch == facts.epoch => match EventLog::open(&db) {
            // A copy behind the stream's first event would only ever skip to it.
            Ok(log)
                if log.last_seq().saturating_add(1) >= facts.first
                    && log.last_seq() <= facts.last =>
            {
                Some(log)
            }
            Ok(_) => None,
            Err(error) => {
                tracing::warn!(%error, "the node's copy of the stream is unusable; starting a new one");
                None
            }
        },
        _ => None,
    };
    let stores = |db: &sled::Db| {
        let versions = Versions::open(db).map_err(|e| failed(e.to_string()))?;
        let objects =
            ObjectStore::open_copy(db, versions.clone()).map_err(|e| failed(e.to_string()))?;
        let auth = AuthStore::open_copy(db, secret, versions).map_err(|e| failed(e.to_string()))?;
        Ok::<_, ClusterError>((objects, auth))
    };
    if let Some(log) = usable {
        let (objects, auth) = stores(&db)?;
        return Ok((log, objects, auth, false));
    }
    drop(db);
    std::fs::remove_dir_all(dir).map_err(|e| failed(e.to_string()))?;
    let db = crate::store::db::open(dir, cache_bytes)
        .map_err(|e| failed(crate::store::sled_reason(&e)))?;
    let log = EventLog::create(&db, &facts.epoch, facts.first.saturating_sub(1))
        .map_err(|e: StoreError| failed(e.to_string()))?;
    Versions::open(&db)
        .and_then(|mut versions| versions.start_at(facts.first))
        .map_err(|e| failed(e.to_string()))?;
    let (objects, auth) = stores(&db)?;
    Ok((log, objects, auth, true))
}

/// The copy thread's state.
struct Copier {
    log: EventLog,
    objects: Arc<ObjectStore>,
    auth: Arc<AuthStore>,
    status: Arc<LogStatus>,
    cores: Vec<flume::Sender<Batch>>,
    connections: Arc<dyn ConnectionTable>,
    /// Whether the table changed since its last flush.
    connections_unflushed: bool,
    delivered: watch::Sender<u64>,
    /// The stream's end when the node started: batches up to it are copied, not handed to the
    /// cores, which start once it is reached.
    target: u64,
    caught: Option<mpsc::Sender<()>>,
    stream_first: Arc<AtomicU64>,
    failed: Arc<Mutex<Option<StorageFailed>>>,
    on_failure: Option<OnStorageFailed>,
    last_upkeep: Instant,
}

impl Copier {
    fn run(mut self, inputs: flume::Receiver<Input>) {
        loop {
            let done = match inputs.recv_timeout(UPKEEP_EVERY) {
                Ok(Input::Events(events, pending)) => {
                    metrics::gauge!(crate::metrics::CLUSTER_STREAM_LAG).set(pending as f64);
                    self.copy(events)
                }
                Ok(Input::Gap(through)) => self.gap(through),
                Err(flume::RecvTimeoutError::Timeout) => Ok(()),
                Err(flume::RecvTimeoutError::Disconnected) => break,
            };
            if let Err(error) = done {
                self.fail(&error);
                return;
            }
            if self.last_upkeep.elapsed() >= UPKEEP_EVERY {
                self.upkeep();
            }
        }
        if let Err(error) = self.log.flush() {
            tracing::debug!(%error, "flushing the node's copy of the stream at stop failed");
        }
    }

    fn live(&self) -> bool {
        self.caught.is_none()
    }

    /// Copies consecutive messages; a payload herald did not write (another client published
    /// under the cluster's subjects) keeps its `Seq` unused, as a gap no client is closed for.
    fn copy(&mut self, events: Vec<Message>) -> Result<(), StoreError> {
        let mut batch = Copied::default();
        for Message {
            seq,
            payload,
            carries,
            base,
            private,
        } in events
        {
            let event = subject::with_seq(&payload, seq)
                .and_then(|json| EncodedEvent::from_stored(seq, &json));
            match event {
                // Applied before the event is stored: after a crash between the two, the event
                // is read again and applied again, which changes nothing.
                Some(event)
                    if carries == Carries::Object && !self.apply_object(&event, base)? =>
                {
                    batch.refused(seq);
                }
                Some(event)
                    if carries == Carries::Account
                        && !self.apply_account(&event, base, private.as_deref())? =>
                {
                    batch.refused(seq);
                }
                Some(event) => {
                    if carries == Carries::Connection {
                        self.connections.apply(seq, event.json());
                        self.connections_unflushed = true;
                    }
                    batch.push(event);
                }
                None => {
                    tracing::warn!(
                        seq,
                        "a message in the cluster's stream is not a herald event; skipping it"
                    );
                    self.deliver(std::mem::take(&mut batch), false)?;
                    self.log.skip_to(seq)?;
                }
            }
        }
        self.deliver(batch, false)
    }

    /// Applies an object write to the node's copy of the objects when the object's newest
    /// event is still the one the write was planned on (`base`); false when it is not. Every
    /// node applies the stream in the same order, so every node refuses the same writes.
    fn apply_object(&self, event: &EncodedEvent, base: Option<Base>) -> Result<bool, StoreError> {
        let Some(kind) = Kind::from_name(&event.ty) else {
            tracing::warn!(seq = event.seq, ty = %event.ty, "an object write in the cluster's stream names no object type; refusing it");
            return Ok(false);
        };
        let object = serde_json::from_slice::<serde_json::Value>(event.json())
            .ok()
            .and_then(|mut event| event.get_mut("Object").map(serde_json::Value::take))
            .unwrap_or_default();
        self.objects
            .apply(kind, &event.key, &event.action, &object, event.seq, base)
            .map_err(|error| StoreError::Corrupt {
                what: format!("applying object write {}: {error}", event.seq),
            })
    }

    /// Applies a user or role write to the node's copy of the accounts, as
    /// [`Copier::apply_object`] does an object's; the private part stays out of the copy's log.
    fn apply_account(
        &self,
        event: &EncodedEvent,
        base: Option<Base>,
        private: Option<&str>,
    ) -> Result<bool, StoreError> {
        self.auth
            .apply(&event.ty, &event.key, private, event.seq, base)
            .map_err(|error| StoreError::Corrupt {
                what: format!("applying account write {}: {error}", event.seq),
            })
    }

    /// The stream dropped events before this node read them: every client of this node closes
    /// with its resume point, and a replay from there says `Recovered: false`.
    fn gap(&mut self, through: u64) -> Result<(), StoreError> {
        tracing::warn!(
            from = self.log.last_seq().saturating_add(1),
            through,
            "the cluster's stream dropped events before this node read them; its clients reconnect and replay"
        );
        self.log.skip_to(through)?;
        self.status.update(&self.log);
        self.deliver(Copied::default(), true)
    }

    fn deliver(&mut self, batch: Copied, gap_before: bool) -> Result<(), StoreError> {
        if std::mem::take(&mut self.connections_unflushed) {
            self.connections.flush();
        }
        let Copied { events, refused } = batch;
        if !events.is_empty() || !refused.is_empty() {
            let mut rows: Vec<(u64, &[u8])> = events
                .iter()
                .map(|e| (e.seq, e.json()))
                .chain(refused.iter().map(|&seq| (seq, REFUSED_WRITE)))
                .collect();
            rows.sort_unstable_by_key(|(seq, _)| *seq);
            self.log.append(&rows, SystemTime::now())?;
            self.log.expose();
            metrics::counter!(crate::metrics::EVENTS_PUBLISHED).increment(events.len() as u64);
            self.status.update(&self.log);
            self.status.flushed();
        }
        if self.live() && (gap_before || !events.is_empty()) {
            let batch: Batch = Arc::new(SequencedBatch {
                events,
                durable_at: Instant::now(),
                gap_before,
            });
            for core in &self.cores {
                // A core that has stopped no longer needs events.
                let _ = core.send(batch.clone());
            }
        }
        let last = self.log.last_seq();
        self.delivered.send_replace(last);
        if last >= self.target
            && let Some(caught) = self.caught.take()
        {
            let _ = caught.send(());
        }
        Ok(())
    }

    /// Flushes the copy, and trims it to the stream's first retained event.
    fn upkeep(&mut self) {
        self.last_upkeep = Instant::now();
        if let Err(error) = self.log.flush() {
            tracing::debug!(%error, "flushing the node's copy of the stream failed");
        }
        let first = self.stream_first.load(Ordering::Acquire);
        if first > self.log.first_seq() {
            let keep = Retention {
                max_events: self.log.last_seq().saturating_add(1).saturating_sub(first),
                ..Retention::UNLIMITED
            };
            match self.log.trim(&keep, SystemTime::now()) {
                Ok(_) => self.status.update(&self.log),
                Err(error) => {
                    tracing::warn!(%error, "trimming the node's copy of the stream failed; will retry")
                }
            }
        }
    }

    fn fail(&mut self, error: &StoreError) {
        tracing::error!(%error, "writing the node's copy of the cluster's stream failed; herald stops");
        let failure = StorageFailed::new(
            "writing the node's copy of the cluster's stream failed",
            error.to_string(),
        );
        if let Ok(mut slot) = self.failed.lock() {
            *slot = Some(failure);
        }
        if let Some(report) = self.on_failure.take() {
            report();
        }
    }
}

/// Reads the stream in order from `next`, forever: an ordered consumer (one replica, no acks)
/// that JetStream and the client recreate after a failover; one that ends is made again from
/// after the last event handed over. A jump in `Seq` means the stream dropped events first.
pub(super) async fn consume(
    stream: Stream,
    subjects: Subjects,
    mut next: u64,
    input: flume::Sender<Input>,
    stream_first: Arc<AtomicU64>,
    stream_last: Arc<AtomicU64>,
) {
    loop {
        let config = OrderedConfig {
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: next,
            },
            ..Default::default()
        };
        let messages = match stream.create_consumer(config).await {
            Ok(consumer) => consumer.messages().await.map_err(|e| e.to_string()),
            Err(error) => Err(error.to_string()),
        };
        let messages = match messages {
            Ok(messages) => messages,
            Err(error) => {
                tracing::debug!(%error, "reading the cluster's stream failed; will retry");
                tokio::time::sleep(RECONSUME_PAUSE).await;
                continue;
            }
        };
        let mut chunks = messages.ready_chunks(MAX_BATCH);
        loop {
            let chunk = match tokio::time::timeout(STALL_AFTER, chunks.next()).await {
                Ok(Some(chunk)) => chunk,
                Ok(None) => break,
                Err(_) if stream_last.load(Ordering::Acquire) >= next => {
                    tracing::debug!(next, "the stream's consumer stalled; making a new one");
                    break;
                }
                Err(_) => continue,
            };
            let mut events = Vec::with_capacity(chunk.len());
            let mut pending = 0;
            for item in chunk {
                let message = match item {
                    Ok(message) => message,
                    Err(error) => {
                        // The ordered consumer recreates itself after the events it delivered.
                        tracing::debug!(%error, "the stream's consumer reported an error");
                        continue;
                    }
                };
                let Ok(info) = message.info() else {
                    continue;
                };
                let seq = info.stream_sequence;
                pending = info.pending;
                if seq < next {
                    continue;
                }
                if seq > next {
                    if !events.is_empty()
                        && input
                            .send_async(Input::Events(std::mem::take(&mut events), pending))
                            .await
                            .is_err()
                    {
                        return;
                    }
                    stream_first.fetch_max(seq, Ordering::AcqRel);
                    if input.send_async(Input::Gap(seq - 1)).await.is_err() {
                        return;
                    }
                }
                let carries = subjects.carries(message.subject.as_str());
                let header = |name: &str| {
                    message
                        .headers
                        .as_ref()
                        .and_then(|headers| headers.get(name))
                        .map(|value| value.as_str().to_owned())
                };
                let base = header(super::BASE_HEADER)
                    .and_then(|value| value.parse().ok())
                    .map(|seq| Base {
                        seq,
                        horizon: header(super::HORIZON_HEADER)
                            .and_then(|value| value.parse().ok())
                            .unwrap_or(0),
                    });
                let private = match carries {
                    Carries::Account => header(super::PRIVATE_HEADER),
                    _ => None,
                };
                events.push(Message {
                    seq,
                    payload: message.payload.clone(),
                    carries,
                    base,
                    private,
                });
                next = seq.saturating_add(1);
            }
            if !events.is_empty()
                && input
                    .send_async(Input::Events(events, pending))
                    .await
                    .is_err()
            {
                return;
            }
        }
        tokio::time::sleep(RECONSUME_PAUSE).await;
    }
}
