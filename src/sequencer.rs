//! The one sequencer: a dedicated thread that owns the event log, assigns `Seq`, makes each
//! batch durable (group commit), encodes every event once and broadcasts the batch to every core.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use thiserror::Error;

use crate::config::{Durability, Retention};
use crate::store::{EventStore, StateChange, StoreError};
use crate::wire::event::{EncodedEvent, Event};

/// Most events sequenced as one batch (one sled append, one flush, one broadcast).
const MAX_BATCH_EVENTS: usize = 4096;
/// Publish requests waiting for the sequencer before publishers are held back.
const QUEUE_DEPTH: usize = 8192;
/// Batches waiting in one core's inbox before the sequencer is held back.
pub(crate) const INBOX_DEPTH: usize = 1024;
/// Longest `batched` durability leaves appended events unflushed: it flushes as soon as no
/// publish is waiting, and under a steady stream at least this often.
const BATCHED_FLUSH_EVERY: Duration = Duration::from_millis(10);
/// `Seq`s reserved at a time under `batched` (one extra flush per block): after an unclean stop
/// the log continues after the reserved mark, so at most this many `Seq`s are skipped.
const RESERVE_BLOCK: u64 = 10_000;
/// How often the log's retention is checked.
const LOG_TRIM_EVERY: Duration = Duration::from_secs(1);
/// Most events removed per trim turn: about 10 ms of sled work on this class of machine.
const TRIM_EVENTS_PER_TURN: u64 = 2_000;
/// The exit code of a stop forced by a storage failure: sysexits' `EX_IOERR`.
pub(crate) const STORAGE_FAILED_EXIT_CODE: u8 = 74;

/// Sequenced events, shared by every core: durable at `durable_at` with `sync`; with `batched`,
/// sequenced then and stored right after.
#[derive(Debug)]
pub(crate) struct SequencedBatch {
    /// The events in Seq order.
    pub events: Vec<EncodedEvent>,
    /// When the batch became visible, for the delivery-lag metric.
    pub durable_at: Instant,
    /// Events before this batch were lost to this node (a cluster's stream dropped them
    /// before it read them): every websocket closes with its resume point.
    pub gap_before: bool,
}

/// A batch as the cores receive it.
pub(crate) type Batch = Arc<SequencedBatch>;

/// Why a publish failed.
#[derive(Debug, Error)]
pub enum PublishError {
    /// The log could not store the events; nothing was delivered.
    #[error("the event log could not store the events: {0}")]
    Store(String),
    /// The server is stopping.
    #[error("the server is shutting down")]
    ShuttingDown,
    /// Another write reached the object first: the event was not stored. `latest` is the
    /// `Seq` of that write, which the caller waits for before it plans again.
    #[error("the object was written meanwhile (Seq {latest})")]
    Conflict {
        /// The `Seq` of the object's newest event.
        latest: u64,
    },
    /// The cluster's log cannot store events now (no quorum, or NATS unreachable); nothing was
    /// acknowledged, and the publisher may retry.
    #[error("the cluster's event log is unavailable: {0}; retry shortly")]
    Unavailable(String),
}

/// The storage failed in a way that no longer lets herald keep its promises (a failed flush, or
/// an append after delivery): the sequencer stopped, and the process must stop with
/// [`STORAGE_FAILED_EXIT_CODE`].
#[derive(Debug, Clone, Error)]
#[error("{what}: {cause}")]
pub struct StorageFailed {
    what: &'static str,
    cause: String,
}

impl StorageFailed {
    /// A failure of `what`, caused by `cause`.
    pub(crate) fn new(what: &'static str, cause: String) -> StorageFailed {
        StorageFailed { what, cause }
    }

    /// The process exit code this failure calls for.
    pub fn exit_code(&self) -> u8 {
        STORAGE_FAILED_EXIT_CODE
    }
}

/// Called once, from the log thread, when the storage fails (see [`StorageFailed`]).
pub(crate) type OnStorageFailed = Box<dyn FnOnce() + Send>;

/// Events waiting to be sequenced, with the channel that answers their publisher.
pub(crate) struct Publish {
    /// Each event with its JSON up to `"Seq":`.
    pub(crate) events: Vec<(Event, Vec<u8>)>,
    /// A state change to run first, whose events replace `events`.
    pub(crate) change: Option<Box<dyn StateChange>>,
    /// Answers the last `Seq`, once stored.
    pub(crate) reply: flume::Sender<Result<u64, PublishError>>,
    /// Who asked.
    pub(crate) source: Source,
    /// A cluster node's object write: stored only if the object's newest event is still the
    /// one it was planned on.
    pub(crate) condition: Option<Condition>,
}

/// The object a write is about, and the `Seq` of the event it was planned on (0: none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Condition {
    /// The object's type.
    pub ty: String,
    /// The object's canonical key.
    pub key: String,
    /// The `Seq` JetStream is to find as the object's newest event.
    pub expected: u64,
    /// The `Seq` of the object's newest event the write was planned on (JetStream's check is
    /// not serializable on every server version; this one is applied by every node).
    pub base: u64,
    /// The first `Seq` the planning node's copy read: it knows no write before it.
    pub horizon: u64,
    /// What the write stores beside its public event (a user's password hash and Secret),
    /// carried in a header that no client is ever delivered.
    pub private: Option<String>,
}

/// Who asked for a publish, so that a failure to store herald's own log records is not itself
/// published as a log record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    /// A client, or a change herald made on a client's behalf.
    Requests,
    /// herald's log records (`log.<level>.herald`).
    LogRecords,
    /// herald's own `connections.create`/`delete` events for the connections a node serves,
    /// which a cluster keeps apart from anything a client publishes.
    Connections,
}

/// What every thread may read about the log without asking the sequencer.
#[derive(Debug)]
pub(crate) struct LogStatus {
    /// The log's epoch.
    pub epoch: String,
    /// The end of the newest gap of `Seq`s never stored here (skipped after an unclean stop,
    /// or trimmed from a cluster's stream before this node read them; 0 when none): a `replay`
    /// from before it answers `Recovered: false`.
    resumed_after: AtomicU64,
    first_seq: AtomicU64,
    last_seq: AtomicU64,
    bytes: AtomicU64,
    /// Woken at the next flush: replays of events delivered before they were readable.
    flush_waiters: Mutex<Vec<flume::Sender<()>>>,
}

impl LogStatus {
    /// The status of `log`, as it is now.
    pub(crate) fn of(log: &impl EventStore) -> LogStatus {
        let status = LogStatus {
            epoch: log.epoch().to_owned(),
            resumed_after: AtomicU64::new(log.resumed_after()),
            first_seq: AtomicU64::new(0),
            last_seq: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            flush_waiters: Mutex::default(),
        };
        status.update(log);
        status
    }
    /// The end of the newest gap of `Seq`s never stored here (0 when none).
    pub(crate) fn resumed_after(&self) -> u64 {
        self.resumed_after.load(Ordering::Acquire)
    }
    /// Oldest retained Seq (last + 1 when nothing is retained).
    pub(crate) fn first_seq(&self) -> u64 {
        self.first_seq.load(Ordering::Acquire)
    }
    /// Newest Seq stored.
    pub(crate) fn last_seq(&self) -> u64 {
        self.last_seq.load(Ordering::Acquire)
    }
    /// Bytes of events retained.
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Acquire)
    }
    /// Receives once the next flush has made more events readable; a flush that runs after
    /// this call and before the caller checks the log's readable bound wakes it too.
    pub(crate) fn next_flush(&self) -> flume::Receiver<()> {
        let (tx, rx) = flume::bounded(1);
        self.flush_waiters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(tx);
        rx
    }
    pub(crate) fn flushed(&self) {
        let mut waiters = self.flush_waiters.lock().unwrap_or_else(|e| e.into_inner());
        for waiter in waiters.drain(..) {
            let _ = waiter.try_send(());
        }
    }
    pub(crate) fn update(&self, log: &impl EventStore) {
        self.update_to(log, log.bounds().last);
    }
    /// Like `update`, with `LastSeq` at `last`: with `batched` it moves before the append.
    fn update_to(&self, log: &impl EventStore, last: u64) {
        self.resumed_after
            .store(log.resumed_after(), Ordering::Release);
        self.first_seq.store(log.bounds().first, Ordering::Release);
        self.last_seq.store(last, Ordering::Release);
        self.bytes.store(log.bytes(), Ordering::Release);
    }
}

/// Each event with its JSON up to `"Seq":`, as a [`Publish`] carries them.
pub(crate) fn with_prefixes(events: Vec<Event>) -> Vec<(Event, Vec<u8>)> {
    events
        .into_iter()
        .map(|event| {
            let prefix = event.body_prefix();
            (event, prefix)
        })
        .collect()
}

/// The cores' handle to the sequencer.
#[derive(Clone)]
pub(crate) struct Publisher {
    tx: flume::Sender<Publish>,
    retention: Arc<Mutex<Retention>>,
}

/// A publisher and the queue it feeds, for a log thread other than [`Sequencer`]'s; the
/// retention it is given is the one [`Publisher::set_retention`] replaces.
pub(crate) fn publish_queue(
    retention: Arc<Mutex<Retention>>,
) -> (Publisher, flume::Receiver<Publish>) {
    let (tx, rx) = flume::bounded(QUEUE_DEPTH);
    (Publisher { tx, retention }, rx)
}

impl Publisher {
    /// Replaces the retention limits (on SIGHUP); the next trim applies them.
    pub(crate) fn set_retention(&self, retention: Retention) {
        if let Ok(mut current) = self.retention.lock() {
            *current = retention;
        }
    }

    /// Sequences `events` and returns the last Seq once they are stored (durably with `sync`).
    pub(crate) async fn publish(&self, events: Vec<Event>) -> Result<u64, PublishError> {
        let events = with_prefixes(events);
        self.send(Publish {
            events,
            change: None,
            reply: flume::bounded(1).0,
            source: Source::Requests,
            condition: None,
        })
        .await
    }

    /// Publishes a cluster node's object write: stored only if the object's newest event is
    /// still `condition.expected`, else [`PublishError::Conflict`]. Answers the event's Seq.
    pub(crate) async fn publish_conditional(
        &self,
        event: Event,
        condition: Condition,
    ) -> Result<u64, PublishError> {
        let prefix = event.body_prefix();
        self.send(Publish {
            events: vec![(event, prefix)],
            change: None,
            reply: flume::bounded(1).0,
            source: Source::Requests,
            condition: Some(condition),
        })
        .await
    }

    /// Queues one of herald's log records as an event without waiting for it to be stored, so a
    /// thread that logs is never held up; false when the queue is full or the sequencer stopped.
    pub(crate) fn publish_log_record(&self, event: Event) -> bool {
        let prefix = event.body_prefix();
        self.tx
            .try_send(Publish {
                events: vec![(event, prefix)],
                change: None,
                reply: flume::bounded(1).0,
                source: Source::LogRecords,
                condition: None,
            })
            .is_ok()
    }

    /// Runs `change` on the log thread, serialized with every other publish and change, and
    /// publishes the events it returns. Answers its value and the last Seq once durable.
    pub(crate) async fn apply<T: Send + 'static>(
        &self,
        change: impl FnOnce() -> (Vec<Event>, T) + Send + 'static,
    ) -> Result<(T, u64), PublishError> {
        let (value_tx, value_rx) = flume::bounded(1);
        let change: Box<dyn StateChange> = Box::new(move || {
            let (events, value) = change();
            let _ = value_tx.send(value);
            events
        });
        let seq = self
            .send(Publish {
                events: Vec::new(),
                change: Some(change),
                reply: flume::bounded(1).0,
                source: Source::Requests,
                condition: None,
            })
            .await?;
        let value = value_rx
            .try_recv()
            .map_err(|_| PublishError::ShuttingDown)?;
        Ok((value, seq))
    }

    /// Queues a connection's `change` to run on the log thread and returns once it has its place
    /// in the queue, without waiting for its events to be stored: whatever the caller publishes
    /// afterwards gets a higher `Seq` than they do. A failure to store them is logged by the log
    /// thread. The receiver answers the last `Seq` once stored, for a caller that waits.
    pub(crate) async fn submit(
        &self,
        change: impl FnOnce() -> Vec<Event> + Send + 'static,
    ) -> Result<flume::Receiver<Result<u64, PublishError>>, PublishError> {
        let (reply, answer) = flume::bounded(1);
        self.tx
            .send_async(Publish {
                events: Vec::new(),
                change: Some(Box::new(change)),
                reply,
                source: Source::Connections,
                condition: None,
            })
            .await
            .map_err(|_| PublishError::ShuttingDown)?;
        Ok(answer)
    }

    /// Queues connection events herald writes itself (a cluster closing a lost node's
    /// connections) without waiting; false when the queue is full or the log thread stopped.
    pub(crate) fn offer_connection_events(&self, events: Vec<Event>) -> bool {
        let events = with_prefixes(events);
        self.tx
            .try_send(Publish {
                events,
                change: None,
                reply: flume::bounded(1).0,
                source: Source::Connections,
                condition: None,
            })
            .is_ok()
    }

    async fn send(&self, mut publish: Publish) -> Result<u64, PublishError> {
        let (reply, answer) = flume::bounded(1);
        publish.reply = reply;
        self.tx
            .send_async(publish)
            .await
            .map_err(|_| PublishError::ShuttingDown)?;
        answer
            .recv_async()
            .await
            .map_err(|_| PublishError::ShuttingDown)?
    }
}

/// The running sequencer thread.
pub(crate) struct Sequencer {
    /// Shared view of the log's bounds.
    pub status: Arc<LogStatus>,
    thread: Option<thread::JoinHandle<()>>,
    stop: Arc<Mutex<bool>>,
    failed: Arc<Mutex<Option<StorageFailed>>>,
}

impl Sequencer {
    /// Starts the thread `herald-log`, which owns `log` from now on. Should the storage fail
    /// for good, the thread stops answering and delivering, and calls `on_failure`.
    pub(crate) fn start(
        log: impl EventStore,
        durability: Durability,
        retention: Retention,
        cores: Vec<flume::Sender<Batch>>,
        on_failure: OnStorageFailed,
    ) -> std::io::Result<(Sequencer, Publisher)> {
        let status = Arc::new(LogStatus::of(&log));
        let retention = Arc::new(Mutex::new(retention));
        let (publisher, rx) = publish_queue(retention.clone());
        let stop = Arc::new(Mutex::new(false));
        let failed = Arc::new(Mutex::new(None));
        let thread = {
            let status = status.clone();
            let stop = stop.clone();
            let failed = failed.clone();
            let retention = retention.clone();
            thread::Builder::new()
                .name("herald-log".into())
                .spawn(move || {
                    (Writer {
                        log,
                        durability,
                        retention,
                        cores,
                        status,
                        dirty: false,
                        last_flush: Instant::now(),
                        last_trim: Instant::now(),
                        failed,
                        on_failure: Some(on_failure),
                    })
                    .run(rx, stop);
                })?
        };
        Ok((
            Sequencer {
                status,
                thread: Some(thread),
                stop,
                failed,
            },
            publisher,
        ))
    }

    /// The storage failure that stopped the log thread, if one did.
    pub(crate) fn failure(&self) -> Option<StorageFailed> {
        self.failed.lock().ok().and_then(|failed| failed.clone())
    }

    /// Stops after the requests already queued, flushing the log.
    pub(crate) fn stop(mut self) {
        if let Ok(mut stop) = self.stop.lock() {
            *stop = true;
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

struct Writer<S: EventStore> {
    log: S,
    durability: Durability,
    retention: Arc<Mutex<Retention>>,
    cores: Vec<flume::Sender<Batch>>,
    status: Arc<LogStatus>,
    dirty: bool,
    last_flush: Instant,
    last_trim: Instant,
    failed: Arc<Mutex<Option<StorageFailed>>>,
    on_failure: Option<OnStorageFailed>,
}

impl<S: EventStore> Writer<S> {
    /// Logs a storage failure, records it and reports it, before any waiting publisher learns
    /// that it will get no answer.
    fn fail(&mut self, what: &'static str, error: &StoreError) -> StorageFailed {
        tracing::error!(%error, "{what}");
        let failure = StorageFailed {
            what,
            cause: error.to_string(),
        };
        if let Ok(mut slot) = self.failed.lock() {
            *slot = Some(failure.clone());
        }
        if let Some(report) = self.on_failure.take() {
            report();
        }
        failure
    }

    /// Sequences until stopped. After a storage failure (recorded and reported by `fail`) it
    /// sequences nothing more and refuses every publish until stopped.
    fn run(mut self, rx: flume::Receiver<Publish>, stop: Arc<Mutex<bool>>) {
        if self.sequence_until_stopped(&rx, &stop).is_ok() {
            return;
        }
        let stopped = || stop.lock().map(|s| *s).unwrap_or(true);
        loop {
            match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(publish) => {
                    let _ = publish.reply.send(Err(PublishError::ShuttingDown));
                }
                Err(flume::RecvTimeoutError::Timeout) if !stopped() => {}
                Err(_) => break,
            }
        }
    }

    /// Sequences until stopped; a storage failure ends it at once, with nothing more answered,
    /// delivered or released (a reservation kept means no handed-out `Seq` is reused).
    fn sequence_until_stopped(
        &mut self,
        rx: &flume::Receiver<Publish>,
        stop: &Mutex<bool>,
    ) -> Result<(), StorageFailed> {
        loop {
            let first = match rx.recv_timeout(self.idle_wait()) {
                Ok(first) => Some(first),
                Err(flume::RecvTimeoutError::Timeout) => None,
                Err(flume::RecvTimeoutError::Disconnected) => break,
            };
            if let Some(first) = first {
                let mut pending = vec![first];
                let mut count = pending[0].events.len();
                while count < MAX_BATCH_EVENTS {
                    match rx.try_recv() {
                        Ok(next) => {
                            count += next.events.len();
                            pending.push(next);
                        }
                        Err(_) => break,
                    }
                }
                self.sequence(pending)?;
            } else if stop.lock().map(|s| *s).unwrap_or(true) && rx.is_empty() {
                break;
            }
            if self.dirty
                && self.durability == Durability::Batched
                && (rx.is_empty() || self.last_flush.elapsed() >= BATCHED_FLUSH_EVERY)
            {
                self.flush()?;
            }
            if self.last_trim.elapsed() >= LOG_TRIM_EVERY {
                self.trim();
            }
        }
        if self.dirty {
            self.flush()?;
        }
        // A clean stop hands every reserved Seq back: the next start continues without a gap.
        if let Err(error) = self.log.release() {
            tracing::warn!(%error, "releasing the reserved Seqs failed; the next start skips them");
        }
        Ok(())
    }

    fn idle_wait(&self) -> Duration {
        if self.dirty {
            BATCHED_FLUSH_EVERY.saturating_sub(self.last_flush.elapsed())
        } else {
            Duration::from_millis(200)
        }
    }

    fn sequence(&mut self, pending: Vec<Publish>) -> Result<(), StorageFailed> {
        let mut seq = self.log.bounds().last;
        let mut encoded = Vec::new();
        let mut answers = Vec::with_capacity(pending.len());
        let holds_log_records = pending.iter().any(|p| p.source == Source::LogRecords);
        for mut publish in pending {
            if let Some(change) = publish.change.take() {
                publish.events = with_prefixes(self.log.write_state(change));
            }
            for (event, prefix) in &publish.events {
                seq += 1;
                encoded.push(EncodedEvent::new(event, prefix, seq));
            }
            answers.push((publish.reply, seq));
        }
        let Some(last) = encoded.last().map(|e| e.seq) else {
            // Only changes that published nothing; what they wrote is flushed like events.
            self.dirty = true;
            if self.durability == Durability::Sync {
                self.flush()?;
            }
            for (reply, seq) in answers {
                let _ = reply.send(Ok(seq));
            }
            return Ok(());
        };
        let batch: Batch = Arc::new(SequencedBatch {
            events: encoded,
            durable_at: Instant::now(),
            gap_before: false,
        });
        // `batched` delivers as soon as events have their Seq: the append, tens of µs on a thread
        // that just woke, stays off the delivery path. `sync` delivers only once durable.
        let deliver_first = self.durability == Durability::Batched;
        if deliver_first && last > self.log.reserved() {
            // A Seq may be seen before it is stored only once a crash can no longer reuse it:
            // the mark is durable before the first Seq above the old one goes out.
            let through = last.saturating_add(RESERVE_BLOCK);
            if let Err(error) = self.log.reserve(through) {
                if holds_log_records {
                    tracing::error!(target: crate::logging::LOG_EVENTS_TARGET, %error, "reserving Seqs in the event log failed; publishers get an error");
                } else {
                    tracing::error!(%error, "reserving Seqs in the event log failed; publishers get an error");
                }
                for (reply, _) in answers {
                    let _ = reply.send(Err(PublishError::Store(error.to_string())));
                }
                return Ok(());
            }
        }
        if deliver_first {
            self.announce(&batch, last);
        }
        let rows: Vec<(u64, &[u8])> = batch.events.iter().map(|e| (e.seq, e.json())).collect();
        if let Err(error) = self.log.append(&rows, SystemTime::now()) {
            if deliver_first {
                // Subscribers have these Seqs: answering the publishers with an error would let
                // the next append reuse them. Stop instead, as a failed flush does.
                return Err(self.fail(
                    "appending to the event log failed after delivery; herald stops so no Seq is reused",
                    &error,
                ));
            }
            if holds_log_records {
                tracing::error!(target: crate::logging::LOG_EVENTS_TARGET, %error, "appending to the event log failed; publishers get an error");
            } else {
                tracing::error!(%error, "appending to the event log failed; publishers get an error");
            }
            for (reply, _) in answers {
                let _ = reply.send(Err(PublishError::Store(error.to_string())));
            }
            return Ok(());
        }
        self.dirty = true;
        if deliver_first {
            self.status.update(&self.log);
        } else {
            self.flush()?;
            self.announce(&batch, last);
        }
        for (reply, last) in answers {
            let _ = reply.send(Ok(last));
        }
        Ok(())
    }

    /// Counts a sequenced batch, moves `LastSeq` to `last` and hands the batch to every core.
    fn announce(&self, batch: &Batch, last: u64) {
        // Counted before the bounds move, so a scrape never sees LastSeq ahead of the count.
        crate::metrics::events_published().increment(batch.events.len() as u64);
        self.status.update_to(&self.log, last);
        for core in &self.cores {
            // A core that has stopped no longer needs events.
            let _ = core.send(batch.clone());
        }
    }

    /// A failed flush means acknowledged durability can no longer be promised: stop at once
    /// rather than answer or deliver events that a crash could take back.
    fn flush(&mut self) -> Result<(), StorageFailed> {
        if let Err(error) = self.log.sync() {
            return Err(self.fail(
                "flushing the event log failed; herald stops to keep its durability promise",
                &error,
            ));
        }
        self.dirty = false;
        self.last_flush = Instant::now();
        self.status.flushed();
        Ok(())
    }

    fn trim(&mut self) {
        self.last_trim = Instant::now();
        let Ok(retention) = self.retention.lock().map(|r| r.clone()) else {
            return;
        };
        // One chunk per turn, between batches, so a large backlog never holds publishers up;
        // a full chunk brings the next turn forward.
        match self
            .log
            .trim(&retention, SystemTime::now(), TRIM_EVENTS_PER_TURN)
        {
            Ok(report) => {
                if report.removed >= TRIM_EVENTS_PER_TURN
                    && let Some(sooner) = self.last_trim.checked_sub(LOG_TRIM_EVERY)
                {
                    self.last_trim = sooner;
                }
                if report.removed > 0 {
                    tracing::debug!(
                        removed = report.removed,
                        first_seq = report.first_seq,
                        "retention trimmed the log"
                    );
                    self.dirty = true;
                }
                self.status.update(&self.log);
            }
            Err(error) => tracing::warn!(%error, "trimming the event log failed; will retry"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;

    use super::*;
    use crate::store::{Bounds, EventLog, StoreError, TrimReport};

    /// The sled log, with switches that make its appends or its syncs fail, as a full or
    /// broken disk does.
    struct FailingStore {
        log: EventLog,
        fail_append: Arc<AtomicBool>,
        fail_sync: Arc<AtomicBool>,
    }

    fn disk_error() -> StoreError {
        StoreError::Sled(sled::Error::Io(std::io::Error::other(
            "no space left on device",
        )))
    }

    impl EventStore for FailingStore {
        fn epoch(&self) -> &str {
            self.log.epoch()
        }
        fn resumed_after(&self) -> u64 {
            self.log.resumed_after()
        }
        fn bounds(&self) -> Bounds {
            EventStore::bounds(&self.log)
        }
        fn bytes(&self) -> u64 {
            self.log.bytes()
        }
        fn append(
            &mut self,
            events: &[(u64, &[u8])],
            stored_at: SystemTime,
        ) -> Result<(), StoreError> {
            if self.fail_append.load(Ordering::SeqCst) {
                return Err(disk_error());
            }
            self.log.append(events, stored_at)
        }
        fn sync(&mut self) -> Result<(), StoreError> {
            if self.fail_sync.load(Ordering::SeqCst) {
                return Err(disk_error());
            }
            self.log.flush()
        }
        fn read_after(&self, after: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
            self.log.read_after(after, limit)
        }
        fn trim(
            &mut self,
            retention: &crate::store::Retention,
            now: SystemTime,
            at_most: u64,
        ) -> Result<TrimReport, StoreError> {
            self.log.trim_at_most(retention, now, at_most)
        }
        fn reserved(&self) -> u64 {
            self.log.reserved()
        }
        fn reserve(&mut self, through: u64) -> Result<(), StoreError> {
            self.log.reserve(through)
        }
        fn release(&mut self) -> Result<(), StoreError> {
            self.log.release()
        }
        fn write_state(&mut self, change: Box<dyn StateChange>) -> Vec<Event> {
            EventStore::write_state(&mut self.log, change)
        }
    }

    /// A sequencer over a [`FailingStore`], with one subscribing core.
    struct Rig {
        db: sled::Db,
        sequencer: Option<Sequencer>,
        publisher: Publisher,
        core: flume::Receiver<Batch>,
        fail_append: Arc<AtomicBool>,
        fail_sync: Arc<AtomicBool>,
        failures_reported: flume::Receiver<()>,
    }

    impl Rig {
        fn start(durability: Durability) -> Rig {
            let db = sled::Config::new()
                .temporary(true)
                .open()
                .unwrap_or_else(|e| panic!("sled: {e}"));
            let log = EventLog::open(&db).unwrap_or_else(|e| panic!("log: {e}"));
            let fail_append = Arc::new(AtomicBool::new(false));
            let fail_sync = Arc::new(AtomicBool::new(false));
            let store = FailingStore {
                log,
                fail_append: fail_append.clone(),
                fail_sync: fail_sync.clone(),
            };
            let (reported, failures_reported) = flume::unbounded();
            let (core_tx, core) = flume::unbounded();
            let (sequencer, publisher) = Sequencer::start(
                store,
                durability,
                Retention::UNLIMITED,
                vec![core_tx],
                Box::new(move || {
                    let _ = reported.send(());
                }),
            )
            .unwrap_or_else(|e| panic!("start: {e}"));
            Rig {
                db,
                sequencer: Some(sequencer),
                publisher,
                core,
                fail_append,
                fail_sync,
                failures_reported,
            }
        }

        fn publish(&self, key: &str) -> Result<u64, PublishError> {
            let event = Event::new("machines", "update", key, "user:test");
            block_on(self.publisher.publish(vec![event]))
        }

        fn delivered(&self) -> Vec<u64> {
            self.core
                .try_iter()
                .flat_map(|batch| batch.events.iter().map(|e| e.seq).collect::<Vec<_>>())
                .collect()
        }

        fn failure(&self) -> Option<StorageFailed> {
            self.sequencer.as_ref().and_then(Sequencer::failure)
        }

        /// Stops the sequencer and opens the log again, as the next start would.
        fn reopen(mut self) -> EventLog {
            if let Some(sequencer) = self.sequencer.take() {
                sequencer.stop();
            }
            EventLog::open(&self.db).unwrap_or_else(|e| panic!("reopen: {e}"))
        }
    }

    fn block_on<T>(future: impl std::future::Future<Output = T>) -> T {
        monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .build()
            .unwrap_or_else(|e| panic!("runtime: {e}"))
            .block_on(future)
    }

    /// The failure was reported once, and carries the storage exit code.
    fn assert_storage_failed(rig: &Rig) {
        let reported = rig.failures_reported.recv_timeout(Duration::from_secs(10));
        assert!(reported.is_ok(), "no storage failure was reported");
        assert!(rig.failures_reported.try_recv().is_err(), "reported twice");
        let failure = rig.failure();
        assert_eq!(
            failure.as_ref().map(StorageFailed::exit_code),
            Some(74),
            "{failure:?}"
        );
    }

    #[test]
    fn a_publish_whose_append_fails_gets_a_store_error_reaches_no_subscriber_and_reuses_no_seq() {
        let rig = Rig::start(Durability::Sync);
        assert_eq!(rig.publish("a").ok(), Some(1));
        rig.fail_append.store(true, Ordering::SeqCst);
        let refused = rig.publish("b");
        assert!(
            matches!(refused, Err(PublishError::Store(_))),
            "{refused:?}"
        );
        rig.fail_append.store(false, Ordering::SeqCst);
        assert_eq!(rig.publish("c").ok(), Some(2));
        // The refused event never had a Seq anyone saw, so the next one takes it up.
        assert_eq!(rig.delivered(), vec![1, 2]);
        assert!(rig.failure().is_none());
        assert!(rig.failures_reported.try_recv().is_err());
    }

    #[test]
    fn a_failed_sync_stops_the_sequencer_with_exit_code_74_before_anything_is_delivered() {
        let rig = Rig::start(Durability::Sync);
        assert_eq!(rig.publish("a").ok(), Some(1));
        rig.fail_sync.store(true, Ordering::SeqCst);
        let unanswered = rig.publish("b");
        assert!(
            matches!(unanswered, Err(PublishError::ShuttingDown)),
            "{unanswered:?}"
        );
        assert_eq!(rig.delivered(), vec![1]);
        assert_storage_failed(&rig);
        let later = rig.publish("c");
        assert!(
            matches!(later, Err(PublishError::ShuttingDown)),
            "{later:?}"
        );
        assert!(rig.delivered().is_empty());
        let reopened = rig.reopen();
        assert!(reopened.last_seq() >= 1, "{}", reopened.last_seq());
    }

    #[test]
    fn a_failed_append_after_batched_delivery_stops_the_sequencer_and_the_next_start_reuses_no_seq()
    {
        let rig = Rig::start(Durability::Batched);
        assert_eq!(rig.publish("a").ok(), Some(1));
        rig.fail_append.store(true, Ordering::SeqCst);
        let unanswered = rig.publish("b");
        assert!(
            matches!(unanswered, Err(PublishError::ShuttingDown)),
            "{unanswered:?}"
        );
        // `batched` hands a Seq out before its append: subscribers have Seq 2.
        let delivered = rig.delivered();
        assert_eq!(delivered, vec![1, 2]);
        assert_storage_failed(&rig);
        let later = rig.publish("c");
        assert!(
            matches!(later, Err(PublishError::ShuttingDown)),
            "{later:?}"
        );
        assert!(rig.delivered().is_empty());
        // The reservation was kept, so the next start continues above every delivered Seq.
        let reopened = rig.reopen();
        assert!(reopened.last_seq() >= 2, "{}", reopened.last_seq());
        assert!(
            reopened.resumed_after() >= 2,
            "{}",
            reopened.resumed_after()
        );
    }

    #[test]
    fn a_failed_batched_sync_stops_the_sequencer_with_exit_code_74() {
        let rig = Rig::start(Durability::Batched);
        rig.fail_sync.store(true, Ordering::SeqCst);
        // Delivered and answered before its sync (what `batched` promises), then the sync fails.
        assert_eq!(rig.publish("a").ok(), Some(1));
        assert_storage_failed(&rig);
        let later = rig.publish("b");
        assert!(
            matches!(later, Err(PublishError::ShuttingDown)),
            "{later:?}"
        );
        assert_eq!(rig.delivered(), vec![1]);
    }

    #[test]
    fn a_state_change_writes_before_its_events_and_they_take_the_next_seqs() {
        let rig = Rig::start(Durability::Sync);
        assert_eq!(rig.publish("a").ok(), Some(1));
        let written = Arc::new(AtomicBool::new(false));
        let seen = written.clone();
        let applied = block_on(rig.publisher.apply(move || {
            seen.store(true, Ordering::SeqCst);
            let events = vec![
                Event::new("profiles", "create", "p1", "user:test"),
                Event::new("profiles", "create", "p2", "user:test"),
            ];
            (events, "answer")
        }));
        assert_eq!(applied.ok(), Some(("answer", 3)));
        assert!(written.load(Ordering::SeqCst));
        assert_eq!(rig.delivered(), vec![1, 2, 3]);
    }

    #[test]
    fn the_storage_exit_code_is_sysexits_ioerr() {
        assert_eq!(STORAGE_FAILED_EXIT_CODE, 74);
    }
}
