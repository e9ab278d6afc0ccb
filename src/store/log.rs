//! The durable event log: sled trees `event_chunks` and `meta`, appended by one writer thread and
//! read by any number of replay readers.
//!
//! # On-disk layout (schema version 2)
//!
//! Tree `event_chunks` (see [`EVENTS_TREE`]): the events in chunks of consecutive `Seq`s.
//! - key: the `Seq` of the chunk's first event as a big-endian `u64` (8 bytes), so sled's byte
//!   order is `Seq` order.
//! - value: [`STORED_AT_LEN`] bytes of big-endian `u64` unix nanoseconds at which the chunk was
//!   appended (used for age retention, so a publisher's old `Time` never trims early), then one
//!   record per event: its length as a big-endian `u32` ([`RECORD_LEN_LEN`] bytes), then the
//!   event JSON exactly as it is sent to clients. The record at index `i` has `Seq` `key + i`.
//! - A chunk holds at least one event; the writer starts a new one before a chunk would pass
//!   [`CHUNK_BYTES`], and never puts events of two appends in one chunk.
//! - The retained chunks are contiguous (each starts right after the previous one ends):
//!   `first_seq ..= last_seq`, no holes but the recorded gaps of tree `event_gaps`.
//!
//! Why chunks: sled rewrites a leaf node on every insert, so one key per event cost ~9 µs of CPU
//! per event on the log thread; a chunk of ~10 events of 600 bytes costs about a seventh of that.
//! Chunks stay small enough that a full leaf (sled splits past 16 entries) is under sled's 128 KiB
//! blob threshold, so no chunk ever spills into a blob file.
//!
//! Tree `meta` (see [`META_TREE`]), shared with other modules; the keys this module owns:
//! - [`EPOCH_KEY`]: the log's epoch, a uuid v4 as UTF-8 text.
//! - [`SCHEMA_VERSION_KEY`]: [`SCHEMA_VERSION`] as a big-endian `u64`.
//! - [`LAST_SEQ_KEY`]: the highest `Seq` ever appended, big-endian `u64`. Written right after
//!   each append's chunks, so `Seq` is never reused after every event is trimmed.
//! - [`FIRST_SEQ_KEY`]: the oldest retained `Seq` after the latest trim, big-endian `u64`. Written
//!   in the same transaction as each trim; it tells "everything was trimmed" (equals
//!   `LAST_SEQ + 1`) apart from "the history was lost" (an empty `event_chunks` tree otherwise).
//! - [`RESERVED_SEQ_KEY`]: with `batched` durability, the highest `Seq` that may have been handed
//!   out (delivered, answered) before it was stored, big-endian `u64`; written and flushed before
//!   any `Seq` above the previous mark is handed out, and removed by a clean stop. Found above the
//!   stored end at open, it means an unclean stop: the log continues above it.
//!
//! Tree `event_gaps` (see [`GAPS_TREE`]): `Seq`s skipped after an unclean stop, which no event
//! will ever have. key: the first skipped `Seq`, value: the last one (both big-endian `u64`). The
//! retained chunks are contiguous except across these gaps; a gap goes when trimming passes it.
//!
//! Schema version 1 kept one event per key in a tree `events` (value: stored-at, then the JSON);
//! [`EventLog::open`] rewrites such a log into chunks once, and only then records version 2.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};
use sled::{Batch, IVec, Tree};
use thiserror::Error;

use super::db::{
    DbFiles, EPOCH_KEY, EVENTS_TREE, FIRST_SEQ_KEY, GAPS_TREE, LAST_SEQ_KEY, LOG_SCHEMA, META_TREE,
    RESERVED_SEQ_KEY, SCHEMA_VERSION_KEY, SchemaFound, V1_EVENTS_TREE, sled_reason,
};
use super::journal::Journal;

/// The on-disk layout version this code reads and writes.
pub const SCHEMA_VERSION: u64 = LOG_SCHEMA.version;
/// Length of an `event_chunks` key: a big-endian u64 `Seq`.
pub const SEQ_KEY_LEN: usize = 8;
/// Length of the stored-at prefix of a chunk: big-endian u64 unix nanoseconds.
pub const STORED_AT_LEN: usize = 8;
/// Length of a record's length prefix: big-endian u32.
pub const RECORD_LEN_LEN: usize = 4;
/// A chunk grows by another event only while it stays within this many value bytes (a single
/// event larger than this gets a chunk of its own). 17 chunks of 6 KiB (a leaf about to split)
/// are 102 KiB, under sled's 128 KiB blob threshold.
pub const CHUNK_BYTES: usize = 6 * 1024;
/// Most events removed in one sled transaction by [`EventLog::trim`]; each transaction is short
/// enough (a few ms) that the writer gets back to appending quickly even when a large backlog is
/// trimmed.
pub const TRIM_TRANSACTION_EVENTS: u64 = 10_000;

/// Everything that can go wrong in the event log's storage.
#[derive(Debug, Error)]
pub enum StoreError {
    /// sled could not read or write the database.
    #[error(
        "event log storage failed: {}; check the data directory's disk space, permissions and health",
        sled_reason(.0)
    )]
    Sled(sled::Error),
    /// An append did not continue the log's sequence; nothing was written.
    #[error(
        "event append refused: expected Seq {expected} but got {got}; nothing was written (the log writer assigned Seq wrongly, report this as a bug)"
    )]
    OutOfOrder {
        /// The `Seq` the log needed next.
        expected: u64,
        /// The `Seq` that was offered.
        got: u64,
    },
    /// Retained events are not contiguous: a `Seq` is missing in the middle of the log.
    #[error(
        "event log has a hole: Seq {before} is followed by Seq {after}, so replay cannot be trusted; restore the data directory from a backup, or move the data directory aside to start a new log (clients will see a new Epoch and re-read state)"
    )]
    Hole {
        /// The last `Seq` before the hole.
        before: u64,
        /// The first `Seq` after the hole.
        after: u64,
    },
    /// The newest events are missing: `meta` records a higher `Seq` than the log holds.
    #[error(
        "event log lost its newest events: it ends at Seq {stored} but Seq {recorded} was appended; restore the data directory from a backup, or move it aside to start a new log (clients will see a new Epoch and re-read state)"
    )]
    TailLost {
        /// The last `Seq` present in `events`.
        stored: u64,
        /// The high-water mark recorded in `meta`.
        recorded: u64,
    },
    /// An event is too large for a record's 4-byte length; nothing was written.
    #[error(
        "event append refused: Seq {seq} is {bytes} bytes, more than a log record holds (4 GiB); nothing was written"
    )]
    EventTooLarge {
        /// The `Seq` of the event.
        seq: u64,
        /// Its size.
        bytes: usize,
    },
    /// A key or value in `event_chunks` does not have the documented layout.
    #[error(
        "event log is corrupt: {what}; restore the data directory from a backup, or move it aside to start a new log"
    )]
    Corrupt {
        /// What exactly is malformed.
        what: String,
    },
    /// The database was written with a layout this version of herald does not understand.
    #[error(
        "event log schema version {found} is not supported (this herald reads version {supported}); run the herald version that wrote this data directory, or move it aside to start a new log"
    )]
    UnsupportedSchema {
        /// The version found in `meta`.
        found: u64,
        /// The version this build reads and writes.
        supported: u64,
    },
}

/// An I/O error of the database's files or journal, as sled reports its own.
fn io_error(error: std::io::Error) -> StoreError {
    StoreError::Sled(sled::Error::Io(error))
}

// By hand rather than `#[from]`, which would also expose the cause as `source` and so print
// it twice in a cause chain.
impl From<sled::Error> for StoreError {
    fn from(error: sled::Error) -> StoreError {
        StoreError::Sled(error)
    }
}

pub use crate::config::Retention;

/// What one trim did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrimReport {
    /// Events removed.
    pub removed: u64,
    /// The oldest retained `Seq` afterwards (`last_seq + 1` when nothing is retained).
    pub first_seq: u64,
}

/// Log bounds shared between the writer and its readers.
#[derive(Debug)]
struct Shared {
    epoch: String,
    first_seq: AtomicU64,
    /// The last `Seq` made durable by [`EventLog::flush`]; readers never see past it.
    durable_seq: AtomicU64,
}

/// The on-disk event log: a sled tree `event_chunks` keyed by each chunk's first Seq.
#[derive(Debug)]
pub struct EventLog {
    events: Tree,
    meta: Tree,
    gaps: Tree,
    shared: Arc<Shared>,
    first_seq: u64,
    last_seq: u64,
    /// The newest `Seq` with a stored event (below `last_seq` right after an unclean stop).
    stored_last: u64,
    /// The end of the newest gap (0 when none): a resume point before it may have missed events.
    resumed_after: u64,
    /// The reserved mark written by [`EventLog::reserve`] (0 when none).
    reserved: u64,
    count: u64,
    bytes: u64,
    /// The database's files, synced by every checkpoint ([`EventLog::open_synced`]).
    files: Option<DbFiles>,
    /// With the files: the journal a flush that only added events writes instead.
    journal: Option<Journal>,
    /// Something other than an append changed the database since the last checkpoint, so the
    /// next flush must be one.
    state_written: bool,
}

/// A cheap, cloneable, `Send + Sync` read handle on the event log for replay reads.
#[derive(Debug, Clone)]
pub struct LogReader {
    events: Tree,
    shared: Arc<Shared>,
}

/// What one scan of `event_chunks` found at open.
struct Scan {
    first: u64,
    last: u64,
    count: u64,
    bytes: u64,
}

/// The Epoch of the log `db` holds, or `None` when it holds none (a new or emptied database);
/// reads only, so a start that is refused leaves the database as it found it.
pub fn stored_epoch(db: &sled::Db) -> Result<Option<String>, StoreError> {
    if !super::db::has_tree(db, META_TREE) {
        return Ok(None);
    }
    let Some(stored) = super::db::meta(db)?.get(EPOCH_KEY)? else {
        return Ok(None);
    };
    String::from_utf8(stored.to_vec())
        .map(Some)
        .map_err(|_| StoreError::Corrupt {
            what: format!("meta key `{EPOCH_KEY}` is not UTF-8 text"),
        })
}

impl EventLog {
    /// Opens (or creates) the log in the shared db, checking that it is contiguous, and migrates
    /// a schema version 1 log to chunks first.
    ///
    /// Open scans every chunk once to prove there is no hole and to count the events; it reads
    /// each record's length, never its JSON (`benches/log.rs` measures it).
    pub fn open(db: &sled::Db) -> Result<EventLog, StoreError> {
        EventLog::open_in(db, None)
    }

    fn open_in(db: &sled::Db, synced_in: Option<&Path>) -> Result<EventLog, StoreError> {
        let super::db::LogTrees { events, meta, gaps } = super::db::log_trees(db)?;

        match super::db::check_schema(&meta, &LOG_SCHEMA)? {
            SchemaFound::Current => {
                // A migration that stopped after recording the new version leaves the old tree.
                if super::db::has_tree(db, V1_EVENTS_TREE) {
                    db.drop_tree(V1_EVENTS_TREE)?;
                }
            }
            SchemaFound::Recorded => {}
            SchemaFound::Other(_) => match read_meta_u64(&meta, SCHEMA_VERSION_KEY)? {
                Some(1) => migrate_v1(db, &events, &meta)?,
                found => {
                    return Err(StoreError::UnsupportedSchema {
                        found: found.unwrap_or_default(),
                        supported: SCHEMA_VERSION,
                    });
                }
            },
        }

        let recorded_last = read_meta_u64(&meta, LAST_SEQ_KEY)?.unwrap_or(0);
        let recorded_first = read_meta_u64(&meta, FIRST_SEQ_KEY)?;
        let mut history_lost = false;
        let (first_seq, last_seq, stored_last, count, bytes) = match scan_events(&events, &gaps)? {
            Some(scan) => {
                // A gap may end the log: an unclean stop with no event stored since.
                if scan.last < recorded_last && gap_after(&gaps, scan.last)? != Some(recorded_last)
                {
                    return Err(StoreError::TailLost {
                        stored: scan.last,
                        recorded: recorded_last,
                    });
                }
                let last = scan.last.max(recorded_last);
                (scan.first, last, scan.last, scan.count, scan.bytes)
            }
            None => {
                // Empty after appends: fine if a trim removed everything, otherwise the events
                // were lost and clients must learn that through a new epoch.
                let next = recorded_last.saturating_add(1);
                history_lost = recorded_last > 0 && recorded_first != Some(next);
                (next, recorded_last, recorded_last, 0, 0)
            }
        };
        if last_seq > recorded_last {
            meta.insert(LAST_SEQ_KEY, &last_seq.to_be_bytes())?;
        }
        if history_lost {
            meta.insert(FIRST_SEQ_KEY, &first_seq.to_be_bytes())?;
        }
        let resumed_after = match gaps.iter().next_back() {
            Some(entry) => decode_gap_end(&entry?.1)?,
            None => 0,
        };
        let stored_epoch = if history_lost {
            tracing::warn!(
                last_seq,
                "event log history was lost (no events, none trimmed); starting a new epoch"
            );
            None
        } else {
            meta.get(EPOCH_KEY)?
        };
        let epoch = match stored_epoch {
            Some(stored) => {
                String::from_utf8(stored.to_vec()).map_err(|_| StoreError::Corrupt {
                    what: format!("meta key `{EPOCH_KEY}` is not UTF-8 text"),
                })?
            }
            None => {
                let fresh = uuid::Uuid::new_v4().to_string();
                meta.insert(EPOCH_KEY, fresh.as_bytes())?;
                fresh
            }
        };
        let reserved = read_meta_u64(&meta, RESERVED_SEQ_KEY)?.unwrap_or(0);
        let mut log = EventLog {
            events,
            meta,
            gaps,
            shared: Arc::new(Shared {
                epoch,
                first_seq: AtomicU64::new(first_seq),
                durable_seq: AtomicU64::new(last_seq),
            }),
            first_seq,
            last_seq,
            stored_last,
            resumed_after,
            reserved: 0,
            count,
            bytes,
            files: None,
            journal: None,
            state_written: false,
        };
        if let Some(dir) = synced_in {
            log.files = Some(DbFiles::open(dir).map_err(io_error)?);
            log.recover_from_journal(dir)?;
        }
        log.skip_reserved(reserved)?;
        // The epoch must be durable before any client is told about it.
        log.checkpoint()?;
        log.shared
            .durable_seq
            .store(log.last_seq, Ordering::Release);
        Ok(log)
    }

    /// Opens the log in the database at `dir` (`db` opened there) so that what a flush makes
    /// stable survives a power cut: every flush syncs the database's files, or writes and syncs
    /// its journal when only events were added. Events the journal holds beyond what sled
    /// recovered are appended again first.
    pub fn open_synced(db: &sled::Db, dir: &Path) -> Result<EventLog, StoreError> {
        EventLog::open_in(db, Some(dir))
    }

    /// Appends again the events of the journal in `dir` that sled did not recover; from then on
    /// flushes write the journal.
    fn recover_from_journal(&mut self, dir: &Path) -> Result<(), StoreError> {
        let (journal, records) = Journal::open(dir, self.epoch()).map_err(io_error)?;
        let last_before = self.last_seq;
        for record in records {
            let chunk = Chunk::decode(record.first_seq, &record.body)?;
            let mut rows: Vec<(u64, &[u8])> = Vec::new();
            for row in chunk.records() {
                let (seq, json) = row?;
                if seq > self.last_seq {
                    rows.push((seq, json));
                }
            }
            if rows
                .first()
                .is_some_and(|&(seq, _)| seq != self.last_seq + 1)
            {
                return Err(StoreError::Corrupt {
                    what: format!(
                        "its journal {} continues at Seq {} but the log ends at Seq {}",
                        journal.path().display(),
                        record.first_seq,
                        self.last_seq
                    ),
                });
            }
            let stored_at = UNIX_EPOCH + std::time::Duration::from_nanos(chunk.stored_at);
            self.append(&rows, stored_at)?;
        }
        if self.last_seq > last_before {
            tracing::warn!(
                from = last_before + 1,
                through = self.last_seq,
                "herald did not stop cleanly; the events its database had not written yet were taken from its journal"
            );
        }
        self.journal = Some(journal);
        Ok(())
    }

    /// After an unclean stop under `batched`: `Seq`s up to the reserved mark may have reached
    /// clients with events that are gone, so the log continues above it, across a gap.
    fn skip_reserved(&mut self, reserved: u64) -> Result<(), StoreError> {
        if reserved > self.last_seq {
            tracing::warn!(
                stored = self.last_seq,
                reserved,
                "herald did not stop cleanly; the log continues after the reserved Seq, and a replay from before it answers Recovered: false"
            );
            self.skip_to(reserved)?;
        }
        if reserved > 0 {
            self.meta.remove(RESERVED_SEQ_KEY)?;
        }
        Ok(())
    }

    /// Starts a log with `epoch` in an empty database, its first event to have `Seq`
    /// `after + 1`: a node's copy of a cluster's stream, which begins where the stream begins.
    pub fn create(db: &sled::Db, epoch: &str, after: u64) -> Result<EventLog, StoreError> {
        let trees = super::db::log_trees(db)?;
        trees.meta.insert(EPOCH_KEY, epoch.as_bytes())?;
        trees.meta.insert(LAST_SEQ_KEY, &after.to_be_bytes())?;
        trees
            .meta
            .insert(FIRST_SEQ_KEY, &after.saturating_add(1).to_be_bytes())?;
        EventLog::open(db)
    }

    /// Records that the `Seq`s after the last one, up to `through`, will never be stored here
    /// (a cluster's stream dropped them before this node read them): the log goes on after
    /// `through`, and a replay from before it answers `Recovered: false`.
    pub fn skip_to(&mut self, through: u64) -> Result<(), StoreError> {
        if through <= self.last_seq {
            return Ok(());
        }
        let through_bytes = through.to_be_bytes();
        if self.count == 0 {
            let first = through.saturating_add(1);
            self.meta.insert(FIRST_SEQ_KEY, &first.to_be_bytes())?;
            self.meta.insert(LAST_SEQ_KEY, &through_bytes)?;
            self.first_seq = first;
            self.shared.first_seq.store(first, Ordering::Release);
        } else {
            // One gap per run of skipped Seqs: a gap that ends the log grows.
            let start = match self.gaps.iter().next_back() {
                Some(entry) => {
                    let (key, value) = entry?;
                    if decode_gap_end(&value)? == self.last_seq {
                        decode_key(&key)?
                    } else {
                        self.last_seq.saturating_add(1)
                    }
                }
                None => self.last_seq.saturating_add(1),
            };
            (&self.meta, &self.gaps)
                .transaction(|(meta_tx, gaps_tx)| {
                    gaps_tx.insert(&start.to_be_bytes(), &through_bytes)?;
                    meta_tx.insert(LAST_SEQ_KEY, &through_bytes)?;
                    Ok::<(), ConflictableTransactionError<()>>(())
                })
                .map_err(transaction_error)?;
        }
        self.last_seq = through;
        self.resumed_after = through;
        Ok(())
    }

    /// Makes everything appended so far visible to readers without making it durable: for a
    /// log that copies one kept elsewhere, which a crash costs only a second read.
    pub fn expose(&self) {
        self.shared
            .durable_seq
            .store(self.last_seq, Ordering::Release);
    }

    /// The log's epoch: a random id that changes only when its history is lost or reset.
    pub fn epoch(&self) -> &str {
        &self.shared.epoch
    }

    /// The oldest retained `Seq`, or `last_seq + 1` when nothing is retained (a new log: 1).
    pub fn first_seq(&self) -> u64 {
        self.first_seq
    }

    /// The last appended `Seq` (0 for a new log), durable or not; after an unclean stop, the
    /// reserved mark the log continues from.
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// The last `Seq` of the newest gap (0 when none): a client that resumes from before it may
    /// have seen events the log no longer has.
    pub fn resumed_after(&self) -> u64 {
        self.resumed_after
    }

    /// The reserved mark (0 when none): every `Seq` handed out before it is stored must be at
    /// most this.
    pub fn reserved(&self) -> u64 {
        self.reserved
    }

    /// Records, durably, that `Seq`s up to `through` may be handed out before they are stored:
    /// after an unclean stop the log continues above `through`, so none of them is ever reused.
    /// One flush of the whole database (appended events are flushed with it).
    pub fn reserve(&mut self, through: u64) -> Result<(), StoreError> {
        self.meta.insert(RESERVED_SEQ_KEY, &through.to_be_bytes())?;
        self.checkpoint()?;
        self.reserved = through;
        Ok(())
    }

    /// On a clean stop: makes everything appended durable, then gives the reservation back, so
    /// the next start continues right after the last event and a clean stop leaves no gap.
    pub fn release(&mut self) -> Result<(), StoreError> {
        // One checkpoint: sled recovers a prefix of its log, so the mark is never gone while an
        // event appended before its removal is.
        if self.reserved > 0 {
            self.meta.remove(RESERVED_SEQ_KEY)?;
        }
        self.checkpoint()?;
        self.reserved = 0;
        Ok(())
    }

    /// The number of events currently retained.
    pub fn len(&self) -> u64 {
        self.count
    }

    /// Whether no events are retained.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Stored value bytes currently retained: event JSON, plus [`RECORD_LEN_LEN`] per event and
    /// [`STORED_AT_LEN`] per chunk.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Appends events whose `Seq` must be `last_seq+1, last_seq+2, …` (else an error and nothing
    /// is written) in one atomic sled transaction, as chunks of up to [`CHUNK_BYTES`].
    /// `stored_at` is the append time, for age retention. The events become visible to readers
    /// at the next [`EventLog::flush`].
    pub fn append(
        &mut self,
        events: &[(u64, &[u8])],
        stored_at: SystemTime,
    ) -> Result<(), StoreError> {
        let Some(&(new_last, _)) = events.last() else {
            return Ok(());
        };
        let mut expected = self.last_seq.saturating_add(1);
        for &(seq, json) in events {
            if seq != expected {
                return Err(StoreError::OutOfOrder { expected, got: seq });
            }
            if u32::try_from(json.len()).is_err() {
                return Err(StoreError::EventTooLarge {
                    seq,
                    bytes: json.len(),
                });
            }
            expected = expected.saturating_add(1);
        }
        let stored_at = unix_nanos(stored_at).to_be_bytes();
        let mut chunks = Vec::new();
        let mut added_bytes = 0u64;
        let mut rest = events;
        // Record bytes still to place, so a small append allocates no more than it needs.
        let mut records_left: usize = events
            .iter()
            .map(|(_, json)| RECORD_LEN_LEN + json.len())
            .sum();
        while let Some(&(first, _)) = rest.first() {
            let mut value = Vec::with_capacity(CHUNK_BYTES.min(STORED_AT_LEN + records_left));
            value.extend_from_slice(&stored_at);
            let mut taken = 0;
            for &(_, json) in rest {
                let grown = value.len() + RECORD_LEN_LEN + json.len();
                if taken > 0 && grown > CHUNK_BYTES {
                    break;
                }
                push_record(&mut value, json);
                taken += 1;
            }
            rest = rest.get(taken..).unwrap_or_default();
            records_left = records_left.saturating_sub(value.len() - STORED_AT_LEN);
            added_bytes = added_bytes.saturating_add(value.len() as u64);
            chunks.push((first, taken, value));
        }
        // The journal takes the chunks as they are stored, and gives them back if sled refused.
        let staged = self.journal.as_ref().map(Journal::staged);
        if let Some(journal) = &mut self.journal {
            for (first, taken, value) in &chunks {
                journal.stage(*first, *taken, value);
            }
        }
        if let Err(error) = self.store_chunks(chunks, new_last) {
            if let (Some(journal), Some(mark)) = (&mut self.journal, staged) {
                journal.unstage(mark);
            }
            return Err(error);
        }
        self.last_seq = new_last;
        self.stored_last = new_last;
        self.count = self.count.saturating_add(events.len() as u64);
        self.bytes = self.bytes.saturating_add(added_bytes);
        Ok(())
    }

    /// Stores an append's chunks (first `Seq`, events, value), then the mark of its last `Seq`.
    fn store_chunks(
        &self,
        mut chunks: Vec<(u64, usize, Vec<u8>)>,
        new_last: u64,
    ) -> Result<(), StoreError> {
        // Chunks first, then the mark, each atomic, in one writer's order: sled recovers a
        // prefix of its log, so a crash leaves at worst chunks above the mark, which `open`
        // takes up; never a mark above the chunks. A cross-tree transaction cost twice as much,
        // and a batch makes sled write out its buffer twice (before and after), so one chunk,
        // the usual append of a small publish, is a plain insert.
        if let [(first, _, value)] = chunks.as_mut_slice() {
            self.events
                .insert(first.to_be_bytes(), std::mem::take(value))?;
        } else {
            let mut batch = Batch::default();
            for (first, _, value) in chunks {
                batch.insert(&first.to_be_bytes(), value);
            }
            self.events.apply_batch(batch)?;
        }
        self.meta.insert(LAST_SEQ_KEY, &new_last.to_be_bytes())?;
        Ok(())
    }

    /// The next flush must make more than appended events durable (a state change wrote other
    /// trees of the database).
    pub fn state_written(&mut self) {
        self.state_written = true;
    }

    /// Makes every write to the database durable: one sled flush, then its files synced with
    /// `fdatasync`. The journal's records are redundant afterwards.
    fn checkpoint(&mut self) -> Result<(), StoreError> {
        self.events.flush()?;
        if let Some(files) = &self.files {
            files.sync().map_err(io_error)?;
        }
        if let Some(journal) = &mut self.journal {
            journal.checkpointed();
        }
        self.state_written = false;
        Ok(())
    }

    /// Makes everything appended so far durable and visible to readers, as one group commit:
    /// the journal's one synced write when only events were added and they fit, else a
    /// checkpoint.
    pub fn flush(&mut self) -> Result<(), StoreError> {
        let journaled = match &mut self.journal {
            Some(journal) if !self.state_written => journal.commit().map_err(io_error)?,
            _ => false,
        };
        if !journaled {
            self.checkpoint()?;
        }
        self.shared
            .durable_seq
            .store(self.last_seq, Ordering::Release);
        Ok(())
    }

    /// Up to `limit` durable events with `Seq > after`, in order: `(seq, event json bytes)`.
    pub fn read_after(&self, after: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        read_after(&self.events, &self.shared, after, limit, usize::MAX)
    }

    /// Removes the oldest events until every limit holds (count, age by stored-at, bytes), in
    /// sled transactions of at most [`TRIM_TRANSACTION_EVENTS`] removals. The newest event always stays, so
    /// a limit smaller than one event keeps just that one.
    pub fn trim(
        &mut self,
        retention: &Retention,
        now: SystemTime,
    ) -> Result<TrimReport, StoreError> {
        let mut removed = 0;
        loop {
            let step = self.trim_at_most(retention, now, TRIM_TRANSACTION_EVENTS)?;
            removed += step.removed;
            if step.removed < TRIM_TRANSACTION_EVENTS {
                return Ok(TrimReport {
                    removed,
                    first_seq: step.first_seq,
                });
            }
        }
    }

    /// Like [`EventLog::trim`] but removes at most `max_removals` events, in one sled transaction,
    /// so the writer can interleave a large trim with appends. A chunk that keeps some of its
    /// events is rewritten under the key of its new first `Seq`.
    pub fn trim_at_most(
        &mut self,
        retention: &Retention,
        now: SystemTime,
        max_removals: u64,
    ) -> Result<TrimReport, StoreError> {
        let too_old_before = now.checked_sub(retention.max_age).map(unix_nanos);
        let mut batch = Batch::default();
        let mut removed = 0u64;
        let mut removed_bytes = 0u64;
        // After the removed events: the first kept one (a gap may lie between them).
        let mut new_first = self.first_seq;
        for entry in self.events.iter() {
            let (key, value) = entry?;
            let chunk = Chunk::decode(decode_key(&key)?, &value)?;
            let too_old = too_old_before.is_some_and(|cutoff| chunk.stored_at < cutoff);
            let mut records = chunk.records();
            // The first record this trim keeps, and where it starts in the chunk's value.
            let mut kept = None;
            loop {
                let offset = value.len() - records.rest.len();
                let Some(record) = records.next() else {
                    break;
                };
                let (seq, json) = record?;
                let over_count = self.count.saturating_sub(removed) > retention.max_events;
                let over_bytes = self.bytes.saturating_sub(removed_bytes) > retention.max_bytes;
                let newest = seq >= self.stored_last;
                if newest || removed >= max_removals || !(over_count || over_bytes || too_old) {
                    kept = Some((seq, offset));
                    break;
                }
                removed += 1;
                removed_bytes += (RECORD_LEN_LEN + json.len()) as u64;
                new_first = seq.saturating_add(1);
            }
            match kept {
                None => {
                    // The whole chunk goes, its stored-at prefix with it.
                    removed_bytes += STORED_AT_LEN as u64;
                    batch.remove(key);
                }
                Some((seq, _)) if seq == chunk.first => {
                    new_first = seq;
                    break;
                }
                Some((seq, offset)) => {
                    new_first = seq;
                    // Keep the tail, re-keyed by its first Seq, with the same stored-at.
                    let records = value.get(offset..).unwrap_or_default();
                    let mut tail = Vec::with_capacity(STORED_AT_LEN + records.len());
                    tail.extend_from_slice(&chunk.stored_at.to_be_bytes());
                    tail.extend_from_slice(records);
                    batch.remove(key);
                    batch.insert(&seq.to_be_bytes(), tail);
                    break;
                }
            }
        }
        if removed > 0 {
            let new_first_bytes = new_first.to_be_bytes();
            // Gaps before the oldest kept event go with the events around them.
            let mut passed = Batch::default();
            for entry in self.gaps.range(..new_first_bytes) {
                passed.remove(entry?.0);
            }
            (&self.events, &self.meta, &self.gaps)
                .transaction(|(events_tx, meta_tx, gaps_tx)| {
                    events_tx.apply_batch(&batch)?;
                    meta_tx.insert(FIRST_SEQ_KEY, &new_first_bytes)?;
                    gaps_tx.apply_batch(&passed)?;
                    Ok::<(), ConflictableTransactionError<()>>(())
                })
                .map_err(transaction_error)?;
            self.first_seq = new_first;
            self.count = self.count.saturating_sub(removed);
            self.bytes = self.bytes.saturating_sub(removed_bytes);
            self.shared.first_seq.store(new_first, Ordering::Release);
        }
        Ok(TrimReport {
            removed,
            first_seq: self.first_seq,
        })
    }

    /// A read handle for replay reads on other threads.
    pub fn reader(&self) -> LogReader {
        LogReader {
            events: self.events.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl LogReader {
    /// Up to `limit` durable events with `Seq > after`, in order: `(seq, event json bytes)`.
    pub fn read_after(&self, after: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        read_after(&self.events, &self.shared, after, limit, usize::MAX)
    }

    /// Like [`LogReader::read_after`], but stops once the events read hold `max_bytes` of JSON
    /// (always at least one event), so a reader that can take only so much never holds more.
    pub fn read_after_within(
        &self,
        after: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        read_after(&self.events, &self.shared, after, limit, max_bytes)
    }

    /// The log's epoch.
    pub fn epoch(&self) -> &str {
        &self.shared.epoch
    }

    /// The last durable `Seq` (what a replay reply reports as `LastSeq`).
    pub fn last_seq(&self) -> u64 {
        self.shared.durable_seq.load(Ordering::Acquire)
    }

    /// The oldest retained `Seq`, at most `last_seq() + 1` (a replay reply's `FirstSeq`).
    pub fn first_seq(&self) -> u64 {
        let first = self.shared.first_seq.load(Ordering::Acquire);
        first.min(self.last_seq().saturating_add(1))
    }
}

/// One stored chunk: its first `Seq`, stored-at time and undecoded records.
pub(crate) struct Chunk<'a> {
    first: u64,
    stored_at: u64,
    records: &'a [u8],
}

impl<'a> Chunk<'a> {
    pub(crate) fn decode(first: u64, value: &'a [u8]) -> Result<Chunk<'a>, StoreError> {
        let (prefix, records) = value
            .split_first_chunk::<STORED_AT_LEN>()
            .ok_or_else(|| StoreError::Corrupt {
                what: format!(
                    "the chunk at Seq {first} is {} bytes, shorter than its {STORED_AT_LEN}-byte stored-at prefix",
                    value.len()
                ),
            })?;
        if records.is_empty() {
            return Err(StoreError::Corrupt {
                what: format!("the chunk at Seq {first} holds no event"),
            });
        }
        Ok(Chunk {
            first,
            stored_at: u64::from_be_bytes(*prefix),
            records,
        })
    }

    pub(crate) fn records(&self) -> Records<'a> {
        Records {
            chunk: self.first,
            next_seq: self.first,
            rest: self.records,
        }
    }
}

/// The events of one chunk in order, `(seq, json)`; a malformed record ends it with an error.
pub(crate) struct Records<'a> {
    chunk: u64,
    next_seq: u64,
    rest: &'a [u8],
}

impl<'a> Iterator for Records<'a> {
    type Item = Result<(u64, &'a [u8]), StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let seq = self.next_seq;
        let record = self
            .rest
            .split_first_chunk::<RECORD_LEN_LEN>()
            .and_then(|(len, rest)| {
                let len = usize::try_from(u32::from_be_bytes(*len)).ok()?;
                Some((rest.get(..len)?, rest.get(len..)?))
            });
        let Some((json, rest)) = record else {
            let chunk = self.chunk;
            self.rest = &[];
            return Some(Err(StoreError::Corrupt {
                what: format!(
                    "the record of Seq {seq} in the chunk at Seq {chunk} runs past the chunk's end"
                ),
            }));
        };
        self.rest = rest;
        self.next_seq = seq.saturating_add(1);
        Some(Ok((seq, json)))
    }
}

/// Appends one record; the caller has checked that the length fits a `u32`.
fn push_record(value: &mut Vec<u8>, json: &[u8]) {
    let len = u32::try_from(json.len()).unwrap_or(u32::MAX);
    value.extend_from_slice(&len.to_be_bytes());
    value.extend_from_slice(json);
}

/// Reads durable events after `after`; events appended but not yet flushed stay hidden so no
/// client sees an event that a crash could take back.
fn read_after(
    events: &Tree,
    shared: &Shared,
    after: u64,
    limit: usize,
    max_bytes: usize,
) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
    let durable = shared.durable_seq.load(Ordering::Acquire);
    let Some(start) = after.checked_add(1) else {
        return Ok(Vec::new());
    };
    if start > durable || limit == 0 {
        return Ok(Vec::new());
    }
    // The chunk holding `start` begins at or before it.
    let from = match events.range(..=start.to_be_bytes()).next_back() {
        Some(entry) => decode_key(&entry?.0)?,
        None => start,
    };
    let mut out = Vec::with_capacity(limit.min((durable - start + 1) as usize).min(1024));
    let mut bytes = 0usize;
    for entry in events.range(from.to_be_bytes()..=durable.to_be_bytes()) {
        let (key, value) = entry?;
        let chunk = Chunk::decode(decode_key(&key)?, &value)?;
        for record in chunk.records() {
            let (seq, json) = record?;
            if seq > durable || out.len() >= limit || (bytes >= max_bytes && !out.is_empty()) {
                return Ok(out);
            }
            if seq >= start {
                bytes = bytes.saturating_add(json.len());
                out.push((seq, json.to_vec()));
            }
        }
    }
    Ok(out)
}

/// One pass over `event_chunks`: bounds, count and bytes, failing on the first hole that is not
/// a recorded gap, or on a bad record.
fn scan_events(events: &Tree, gaps: &Tree) -> Result<Option<Scan>, StoreError> {
    let mut scan: Option<Scan> = None;
    for entry in events.iter() {
        let (key, value) = entry?;
        let chunk = Chunk::decode(decode_key(&key)?, &value)?;
        let mut last = chunk.first;
        let mut count = 0u64;
        for record in chunk.records() {
            last = record?.0;
            count += 1;
        }
        let size = value.len() as u64;
        match scan.as_mut() {
            None => {
                scan = Some(Scan {
                    first: chunk.first,
                    last,
                    count,
                    bytes: size,
                });
            }
            Some(scan) => {
                if Some(chunk.first) != scan.last.checked_add(1)
                    && gap_after(gaps, scan.last)?.and_then(|end| end.checked_add(1))
                        != Some(chunk.first)
                {
                    return Err(StoreError::Hole {
                        before: scan.last,
                        after: chunk.first,
                    });
                }
                scan.last = last;
                scan.count += count;
                scan.bytes += size;
            }
        }
    }
    Ok(scan)
}

/// Rewrites a schema version 1 log (tree `events`, one event per key) into chunks, then records
/// version 2 and drops the old tree. Safe to interrupt: until version 2 is recorded the old tree
/// is untouched and the next open starts over.
fn migrate_v1(db: &sled::Db, chunks: &Tree, meta: &Tree) -> Result<(), StoreError> {
    let old = db.open_tree(V1_EVENTS_TREE)?;
    chunks.clear()?;
    let mut batch = Batch::default();
    let mut pending = 0usize;
    // The chunk being filled: first Seq, stored-at, value.
    let mut open: Option<(u64, [u8; STORED_AT_LEN], Vec<u8>, u64)> = None;
    let mut migrated = 0u64;
    for entry in old.iter() {
        let (key, value) = entry?;
        let seq = decode_key(&key)?;
        let (stored_at, json) =
            value
                .split_first_chunk::<STORED_AT_LEN>()
                .ok_or_else(|| StoreError::Corrupt {
                    what: format!(
                        "the version 1 value of Seq {seq} is shorter than its stored-at prefix"
                    ),
                })?;
        let continues = open.as_ref().is_some_and(|(first, at, value, len)| {
            at == stored_at
                && value.len() + RECORD_LEN_LEN + json.len() <= CHUNK_BYTES
                && first.saturating_add(*len) == seq
        });
        if !continues {
            if let Some((first, _, value, _)) = open.take() {
                batch.insert(&first.to_be_bytes(), value);
                pending += 1;
            }
            let mut value = Vec::with_capacity(CHUNK_BYTES);
            value.extend_from_slice(stored_at);
            open = Some((seq, *stored_at, value, 0));
        }
        if let Some((_, _, value, len)) = open.as_mut() {
            push_record(value, json);
            *len += 1;
        }
        migrated += 1;
        if pending >= 1024 {
            chunks.apply_batch(std::mem::take(&mut batch))?;
            pending = 0;
        }
    }
    if let Some((first, _, value, _)) = open {
        batch.insert(&first.to_be_bytes(), value);
    }
    chunks.apply_batch(batch)?;
    chunks.flush()?;
    meta.insert(SCHEMA_VERSION_KEY, &SCHEMA_VERSION.to_be_bytes())?;
    meta.flush()?;
    db.drop_tree(V1_EVENTS_TREE)?;
    tracing::info!(
        migrated,
        "event log migrated to schema version {SCHEMA_VERSION} (chunks)"
    );
    Ok(())
}

/// The last `Seq` of the recorded gap that starts right after `seq`, if there is one.
fn gap_after(gaps: &Tree, seq: u64) -> Result<Option<u64>, StoreError> {
    match gaps.get(seq.saturating_add(1).to_be_bytes())? {
        Some(end) => decode_gap_end(&end).map(Some),
        None => Ok(None),
    }
}

fn decode_gap_end(value: &IVec) -> Result<u64, StoreError> {
    let bytes: [u8; 8] = value.as_ref().try_into().map_err(|_| StoreError::Corrupt {
        what: format!(
            "an `{GAPS_TREE}` value is {} bytes long, not {SEQ_KEY_LEN}",
            value.len()
        ),
    })?;
    Ok(u64::from_be_bytes(bytes))
}

fn decode_key(key: &IVec) -> Result<u64, StoreError> {
    let bytes: [u8; SEQ_KEY_LEN] = key.as_ref().try_into().map_err(|_| StoreError::Corrupt {
        what: format!(
            "an `{EVENTS_TREE}` key is {} bytes long, not {SEQ_KEY_LEN}",
            key.len()
        ),
    })?;
    Ok(u64::from_be_bytes(bytes))
}

fn read_meta_u64(meta: &Tree, key: &str) -> Result<Option<u64>, StoreError> {
    let Some(value) = meta.get(key)? else {
        return Ok(None);
    };
    let bytes: [u8; 8] = value.as_ref().try_into().map_err(|_| StoreError::Corrupt {
        what: format!(
            "meta key `{key}` is {} bytes long, not an 8-byte big-endian number",
            value.len()
        ),
    })?;
    Ok(Some(u64::from_be_bytes(bytes)))
}

/// Unix nanoseconds, clamped: 0 before 1970, `u64::MAX` after the year 2554.
fn unix_nanos(time: SystemTime) -> u64 {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    u64::try_from(since.as_nanos()).unwrap_or(u64::MAX)
}

fn transaction_error(error: TransactionError<()>) -> StoreError {
    match error {
        TransactionError::Storage(error) => StoreError::Sled(error),
        // The closures above never abort; map it anyway rather than panic.
        TransactionError::Abort(()) => StoreError::Sled(sled::Error::Unsupported(
            "event log transaction aborted".to_owned(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn open_db(dir: &tempfile::TempDir) -> sled::Db {
        crate::testing::open_sled(dir.path())
    }

    fn json(seq: u64) -> Vec<u8> {
        format!(r#"{{"Type":"profiles","Action":"save","Key":"k{seq}","Seq":{seq}}}"#).into_bytes()
    }

    /// Appends events `last+1 ..= last+n` stored at `at`, and flushes.
    fn append_n(log: &mut EventLog, n: u64, at: SystemTime) {
        let start = log.last_seq() + 1;
        let bodies: Vec<(u64, Vec<u8>)> = (start..start + n).map(|seq| (seq, json(seq))).collect();
        let refs: Vec<(u64, &[u8])> = bodies.iter().map(|(s, b)| (*s, b.as_slice())).collect();
        log.append(&refs, at).expect("append");
        log.flush().expect("flush");
    }

    fn seqs(events: &[(u64, Vec<u8>)]) -> Vec<u64> {
        events.iter().map(|(seq, _)| *seq).collect()
    }

    #[test]
    fn a_new_log_is_empty_with_first_seq_one_and_a_uuid_epoch() {
        let dir = tempfile::tempdir().unwrap();
        let log = EventLog::open(&open_db(&dir)).unwrap();
        assert_eq!((log.first_seq(), log.last_seq(), log.bytes()), (1, 0, 0));
        assert!(uuid::Uuid::parse_str(log.epoch()).is_ok());
        assert!(log.read_after(0, 10).unwrap().is_empty());
    }

    #[test]
    fn the_stored_epoch_is_none_until_a_log_is_opened_and_reading_it_creates_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let db = open_db(&dir);
        assert_eq!(stored_epoch(&db).unwrap(), None);
        assert!(
            !db.tree_names()
                .iter()
                .any(|name| name.as_ref() == META_TREE.as_bytes())
        );
        let log = EventLog::open(&db).unwrap();
        assert_eq!(stored_epoch(&db).unwrap().as_deref(), Some(log.epoch()));
    }

    #[test]
    fn appended_events_read_back_in_order_with_their_exact_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = EventLog::open(&open_db(&dir)).unwrap();
        append_n(&mut log, 3, SystemTime::now());
        append_n(&mut log, 2, SystemTime::now());
        let read = log.read_after(0, 100).unwrap();
        assert_eq!(seqs(&read), vec![1, 2, 3, 4, 5]);
        for (seq, body) in &read {
            assert_eq!(body, &json(*seq));
        }
        // Two appends, two chunks.
        let expected_bytes: u64 = 2 * STORED_AT_LEN as u64
            + (1..=5)
                .map(|s| (json(s).len() + RECORD_LEN_LEN) as u64)
                .sum::<u64>();
        assert_eq!(log.bytes(), expected_bytes);
        assert_eq!(log.len(), 5);
    }

    #[test]
    fn a_non_contiguous_append_is_refused_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = EventLog::open(&open_db(&dir)).unwrap();
        append_n(&mut log, 2, SystemTime::now());
        let body = json(9);
        let skipping = [(4, body.as_slice())];
        let err = log.append(&skipping, SystemTime::now()).unwrap_err();
        assert!(matches!(
            err,
            StoreError::OutOfOrder {
                expected: 3,
                got: 4
            }
        ));
        let gap_inside = [(3, body.as_slice()), (5, body.as_slice())];
        let err = log.append(&gap_inside, SystemTime::now()).unwrap_err();
        assert!(matches!(
            err,
            StoreError::OutOfOrder {
                expected: 4,
                got: 5
            }
        ));
        log.flush().unwrap();
        assert_eq!(log.last_seq(), 2);
        assert_eq!(seqs(&log.read_after(0, 10).unwrap()), vec![1, 2]);
    }

    #[test]
    fn reopen_continues_seq_and_keeps_the_epoch() {
        let dir = tempfile::tempdir().unwrap();
        let epoch = {
            let mut log = EventLog::open(&open_db(&dir)).unwrap();
            append_n(&mut log, 4, SystemTime::now());
            log.epoch().to_owned()
        };
        let mut log = EventLog::open(&open_db(&dir)).unwrap();
        assert_eq!(log.epoch(), epoch);
        assert_eq!((log.first_seq(), log.last_seq(), log.len()), (1, 4, 4));
        let bytes_before = log.bytes();
        append_n(&mut log, 1, SystemTime::now());
        assert_eq!(log.last_seq(), 5);
        assert!(log.bytes() > bytes_before);
        assert_eq!(seqs(&log.read_after(3, 10).unwrap()), vec![4, 5]);
    }

    #[test]
    fn trim_by_count_keeps_the_newest_events() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = EventLog::open(&open_db(&dir)).unwrap();
        append_n(&mut log, 10, SystemTime::now());
        let retention = Retention {
            max_events: 3,
            ..Retention::UNLIMITED
        };
        let report = log.trim(&retention, SystemTime::now()).unwrap();
        assert_eq!(
            report,
            TrimReport {
                removed: 7,
                first_seq: 8
            }
        );
        assert_eq!((log.first_seq(), log.len()), (8, 3));
        assert_eq!(seqs(&log.read_after(0, 100).unwrap()), vec![8, 9, 10]);
        let again = log.trim(&retention, SystemTime::now()).unwrap();
        assert_eq!(again.removed, 0);
    }

    #[test]
    fn trim_by_age_measures_from_the_append_time() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = EventLog::open(&open_db(&dir)).unwrap();
        let start = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        append_n(&mut log, 2, start);
        append_n(&mut log, 3, start + Duration::from_secs(60));
        append_n(&mut log, 1, start + Duration::from_secs(120));
        let retention = Retention {
            max_age: Duration::from_secs(120),
            ..Retention::UNLIMITED
        };
        let now = start + Duration::from_secs(160);
        let report = log.trim(&retention, now).unwrap();
        assert_eq!(
            report,
            TrimReport {
                removed: 2,
                first_seq: 3
            }
        );
        assert_eq!(seqs(&log.read_after(0, 100).unwrap()), vec![3, 4, 5, 6]);
    }

    #[test]
    fn trim_by_bytes_removes_until_the_total_fits() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = EventLog::open(&open_db(&dir)).unwrap();
        append_n(&mut log, 5, SystemTime::now());
        let per_event = (json(1).len() + RECORD_LEN_LEN) as u64;
        let chunk = STORED_AT_LEN as u64;
        assert_eq!(log.bytes(), chunk + per_event * 5);
        let retention = Retention {
            max_bytes: chunk + per_event * 2 + 1,
            ..Retention::UNLIMITED
        };
        let report = log.trim(&retention, SystemTime::now()).unwrap();
        assert_eq!(
            report,
            TrimReport {
                removed: 3,
                first_seq: 4
            }
        );
        assert_eq!(log.bytes(), chunk + per_event * 2);
        assert_eq!(seqs(&log.read_after(0, 100).unwrap()), vec![4, 5]);
    }

    #[test]
    fn trim_in_chunks_stops_at_the_chunk_size_and_trim_finishes_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = EventLog::open(&open_db(&dir)).unwrap();
        append_n(&mut log, 25, SystemTime::now());
        let retention = Retention {
            max_events: 5,
            ..Retention::UNLIMITED
        };
        let step = log.trim_at_most(&retention, SystemTime::now(), 7).unwrap();
        assert_eq!(
            step,
            TrimReport {
                removed: 7,
                first_seq: 8
            }
        );
        let rest = log.trim(&retention, SystemTime::now()).unwrap();
        assert_eq!(
            rest,
            TrimReport {
                removed: 13,
                first_seq: 21
            }
        );
    }

    #[test]
    fn limits_below_one_event_keep_the_newest_and_reopening_continues_seq_in_the_same_epoch() {
        let dir = tempfile::tempdir().unwrap();
        let epoch = {
            let mut log = EventLog::open(&open_db(&dir)).unwrap();
            append_n(&mut log, 4, SystemTime::now());
            for retention in [
                Retention {
                    max_events: 0,
                    ..Retention::UNLIMITED
                },
                Retention {
                    max_bytes: 1,
                    ..Retention::UNLIMITED
                },
                Retention {
                    max_age: Duration::ZERO,
                    ..Retention::UNLIMITED
                },
            ] {
                log.trim(&retention, SystemTime::now() + Duration::from_secs(1))
                    .unwrap();
                assert_eq!((log.first_seq(), log.last_seq(), log.len()), (4, 4, 1));
                assert_eq!(seqs(&log.read_after(0, 10).unwrap()), vec![4]);
            }
            log.flush().unwrap();
            log.epoch().to_owned()
        };
        let mut log = EventLog::open(&open_db(&dir)).unwrap();
        assert_eq!(log.epoch(), epoch);
        assert_eq!((log.first_seq(), log.last_seq()), (4, 4));
        append_n(&mut log, 1, SystemTime::now());
        assert_eq!(seqs(&log.read_after(0, 10).unwrap()), vec![4, 5]);
    }

    #[test]
    fn an_emptied_events_tree_that_was_not_trimmed_means_a_new_epoch() {
        let dir = tempfile::tempdir().unwrap();
        let epoch = {
            let db = open_db(&dir);
            let mut log = EventLog::open(&db).unwrap();
            append_n(&mut log, 3, SystemTime::now());
            db.open_tree(EVENTS_TREE).unwrap().clear().unwrap();
            db.flush().unwrap();
            log.epoch().to_owned()
        };
        let mut log = EventLog::open(&open_db(&dir)).unwrap();
        assert_ne!(log.epoch(), epoch);
        assert_eq!((log.first_seq(), log.last_seq()), (4, 3));
        append_n(&mut log, 1, SystemTime::now());
        assert_eq!(seqs(&log.read_after(0, 10).unwrap()), vec![4]);
        let lost_epoch = log.epoch().to_owned();
        drop(log);
        let log = EventLog::open(&open_db(&dir)).unwrap();
        assert_eq!(
            log.epoch(),
            lost_epoch,
            "the new epoch is kept on later opens"
        );
    }

    fn gaps(db: &sled::Db) -> Vec<(u64, u64)> {
        db.open_tree(GAPS_TREE)
            .unwrap()
            .iter()
            .map(|entry| {
                let (key, value) = entry.unwrap();
                (decode_key(&key).unwrap(), decode_gap_end(&value).unwrap())
            })
            .collect()
    }

    /// Writes the events `seqs` to the journal in `dir` as one record, as a flush would have
    /// before sled wrote them out.
    fn journal_only(dir: &Path, epoch: &str, seqs: std::ops::RangeInclusive<u64>) {
        let (mut journal, _) = Journal::open(dir, epoch).unwrap();
        let first = *seqs.start();
        let mut value = unix_nanos(SystemTime::now()).to_be_bytes().to_vec();
        for seq in seqs.clone() {
            push_record(&mut value, &json(seq));
        }
        journal.stage(first, seqs.count(), &value);
        assert!(journal.commit().unwrap());
    }

    /// Opens the log synced in `dir`, appends and checkpoints `n` events, and answers its epoch.
    fn checkpointed_log_of(dir: &tempfile::TempDir, n: u64) -> String {
        let mut log = EventLog::open_synced(&open_db(dir), dir.path()).unwrap();
        append_n(&mut log, n, SystemTime::now());
        log.checkpoint().unwrap();
        log.epoch().to_owned()
    }

    #[test]
    fn events_only_the_journal_holds_are_appended_again_when_the_log_opens() {
        let dir = tempfile::tempdir().unwrap();
        let epoch = checkpointed_log_of(&dir, 3);
        journal_only(dir.path(), &epoch, 2..=6);
        let log = EventLog::open_synced(&open_db(&dir), dir.path()).unwrap();
        assert_eq!((log.first_seq(), log.last_seq(), log.len()), (1, 6, 6));
        let events = log.read_after(0, 100).unwrap();
        assert_eq!(seqs(&events), vec![1, 2, 3, 4, 5, 6]);
        assert_eq!(events[5].1, json(6), "the journal's bytes, exactly");
        drop(log);
        let log = EventLog::open_synced(&open_db(&dir), dir.path()).unwrap();
        assert_eq!(
            (log.last_seq(), log.len()),
            (6, 6),
            "taken up once, and made durable in the database"
        );
    }

    #[test]
    fn a_journal_of_another_log_is_ignored_when_the_log_opens() {
        let dir = tempfile::tempdir().unwrap();
        checkpointed_log_of(&dir, 3);
        journal_only(dir.path(), "another epoch", 4..=6);
        let log = EventLog::open_synced(&open_db(&dir), dir.path()).unwrap();
        assert_eq!(log.last_seq(), 3);
    }

    #[test]
    fn a_journal_that_continues_past_the_logs_end_is_refused_as_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let epoch = checkpointed_log_of(&dir, 3);
        journal_only(dir.path(), &epoch, 6..=7);
        let error = EventLog::open_synced(&open_db(&dir), dir.path()).unwrap_err();
        assert!(matches!(error, StoreError::Corrupt { .. }), "{error}");
        assert!(error.to_string().contains("journal"), "{error}");
    }

    #[test]
    fn after_an_unclean_stop_under_batched_the_journals_events_come_before_the_reserved_gap() {
        let dir = tempfile::tempdir().unwrap();
        let epoch = {
            let mut log = EventLog::open_synced(&open_db(&dir), dir.path()).unwrap();
            append_n(&mut log, 5, SystemTime::now());
            log.reserve(15).unwrap();
            log.epoch().to_owned()
        };
        journal_only(dir.path(), &epoch, 6..=8);
        let db = open_db(&dir);
        let log = EventLog::open_synced(&db, dir.path()).unwrap();
        assert_eq!((log.last_seq(), log.len()), (15, 8));
        assert_eq!(gaps(&db), vec![(9, 15)]);
    }

    #[test]
    fn an_unclean_stop_after_a_reservation_continues_after_the_mark_in_the_same_epoch() {
        let dir = tempfile::tempdir().unwrap();
        let epoch = {
            let mut log = EventLog::open(&open_db(&dir)).unwrap();
            append_n(&mut log, 5, SystemTime::now());
            log.reserve(15).unwrap();
            // Delivered under `batched`, never stored: the process dies before the append.
            log.epoch().to_owned()
        };
        let db = open_db(&dir);
        let mut log = EventLog::open(&db).unwrap();
        assert_eq!(log.epoch(), epoch);
        assert_eq!((log.first_seq(), log.last_seq(), log.len()), (1, 15, 5));
        assert_eq!(log.resumed_after(), 15);
        assert_eq!(gaps(&db), vec![(6, 15)]);
        append_n(&mut log, 2, SystemTime::now());
        assert_eq!(
            seqs(&log.read_after(0, 100).unwrap()),
            vec![1, 2, 3, 4, 5, 16, 17],
            "no Seq of the gap is ever given to another event"
        );
        assert_eq!(seqs(&log.read_after(7, 100).unwrap()), vec![16, 17]);
        drop(log);
        drop(db);
        let log = EventLog::open(&open_db(&dir)).unwrap();
        assert_eq!(log.epoch(), epoch, "a recorded gap is not a hole");
        assert_eq!((log.first_seq(), log.last_seq()), (1, 17));
        assert_eq!(log.resumed_after(), 15);
    }

    #[test]
    fn a_clean_stop_gives_the_reservation_back_and_leaves_no_gap() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut log = EventLog::open(&open_db(&dir)).unwrap();
            append_n(&mut log, 5, SystemTime::now());
            log.reserve(15).unwrap();
            append_n(&mut log, 2, SystemTime::now());
            log.release().unwrap();
            assert_eq!(log.reserved(), 0);
        }
        let db = open_db(&dir);
        let mut log = EventLog::open(&db).unwrap();
        assert_eq!(
            (log.first_seq(), log.last_seq(), log.resumed_after()),
            (1, 7, 0)
        );
        assert!(gaps(&db).is_empty());
        append_n(&mut log, 1, SystemTime::now());
        assert_eq!(
            seqs(&log.read_after(0, 100).unwrap()),
            (1..=8).collect::<Vec<_>>()
        );
    }

    #[test]
    fn a_second_unclean_stop_before_any_new_event_grows_the_same_gap() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut log = EventLog::open(&open_db(&dir)).unwrap();
            append_n(&mut log, 5, SystemTime::now());
            log.reserve(15).unwrap();
        }
        {
            let mut log = EventLog::open(&open_db(&dir)).unwrap();
            assert_eq!(log.last_seq(), 15);
            log.reserve(30).unwrap();
        }
        let db = open_db(&dir);
        let mut log = EventLog::open(&db).unwrap();
        assert_eq!((log.last_seq(), log.resumed_after()), (30, 30));
        assert_eq!(gaps(&db), vec![(6, 30)]);
        append_n(&mut log, 1, SystemTime::now());
        assert_eq!(seqs(&log.read_after(5, 100).unwrap()), vec![31]);
    }

    #[test]
    fn an_unclean_stop_of_an_empty_log_starts_after_the_mark() {
        let dir = tempfile::tempdir().unwrap();
        let epoch = {
            let mut log = EventLog::open(&open_db(&dir)).unwrap();
            log.reserve(10).unwrap();
            log.epoch().to_owned()
        };
        {
            let log = EventLog::open(&open_db(&dir)).unwrap();
            assert_eq!((log.first_seq(), log.last_seq()), (11, 10));
            assert_eq!(log.epoch(), epoch);
        }
        let mut log = EventLog::open(&open_db(&dir)).unwrap();
        assert_eq!(log.epoch(), epoch, "skipped Seqs are not lost history");
        append_n(&mut log, 1, SystemTime::now());
        assert_eq!(seqs(&log.read_after(0, 100).unwrap()), vec![11]);
    }

    #[test]
    fn trimming_keeps_the_newest_stored_event_and_drops_the_gaps_it_passes() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut log = EventLog::open(&open_db(&dir)).unwrap();
            append_n(&mut log, 5, SystemTime::now());
            log.reserve(15).unwrap();
        }
        let db = open_db(&dir);
        let mut log = EventLog::open(&db).unwrap();
        let none = Retention {
            max_events: 0,
            ..Retention::UNLIMITED
        };
        log.trim(&none, SystemTime::now()).unwrap();
        assert_eq!((log.first_seq(), log.last_seq(), log.len()), (5, 15, 1));
        assert_eq!(gaps(&db), vec![(6, 15)]);
        append_n(&mut log, 3, SystemTime::now());
        let two = Retention {
            max_events: 2,
            ..Retention::UNLIMITED
        };
        let report = log.trim(&two, SystemTime::now()).unwrap();
        assert_eq!(
            report,
            TrimReport {
                removed: 2,
                first_seq: 17
            }
        );
        assert!(gaps(&db).is_empty());
        log.trim(&none, SystemTime::now()).unwrap();
        assert_eq!(seqs(&log.read_after(0, 100).unwrap()), vec![18]);
        log.flush().unwrap();
        drop(log);
        drop(db);
        let log = EventLog::open(&open_db(&dir)).unwrap();
        assert_eq!((log.first_seq(), log.last_seq(), log.len()), (18, 18, 1));
    }

    #[test]
    fn a_trim_that_removes_every_event_before_a_gap_starts_the_log_after_it() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut log = EventLog::open(&open_db(&dir)).unwrap();
            append_n(&mut log, 5, SystemTime::now());
            log.reserve(15).unwrap();
        }
        let db = open_db(&dir);
        let mut log = EventLog::open(&db).unwrap();
        append_n(&mut log, 1, SystemTime::now());
        let none = Retention {
            max_events: 0,
            ..Retention::UNLIMITED
        };
        let report = log.trim(&none, SystemTime::now()).unwrap();
        assert_eq!(
            report,
            TrimReport {
                removed: 5,
                first_seq: 16
            }
        );
        assert!(gaps(&db).is_empty());
    }

    #[test]
    fn a_hole_in_the_middle_fails_open_with_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = open_db(&dir);
            let mut log = EventLog::open(&db).unwrap();
            for n in [2, 1, 2] {
                append_n(&mut log, n, SystemTime::now());
            }
            db.open_tree(EVENTS_TREE)
                .unwrap()
                .remove(3u64.to_be_bytes())
                .unwrap();
            db.flush().unwrap();
        }
        let err = EventLog::open(&open_db(&dir)).unwrap_err();
        assert!(matches!(
            err,
            StoreError::Hole {
                before: 2,
                after: 4
            }
        ));
        let message = err.to_string();
        assert!(message.contains("Seq 2 is followed by Seq 4"), "{message}");
        assert!(message.contains("backup"), "{message}");
    }

    #[test]
    fn a_lost_tail_fails_open() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = open_db(&dir);
            let mut log = EventLog::open(&db).unwrap();
            append_n(&mut log, 4, SystemTime::now());
            append_n(&mut log, 1, SystemTime::now());
            db.open_tree(EVENTS_TREE)
                .unwrap()
                .remove(5u64.to_be_bytes())
                .unwrap();
            db.flush().unwrap();
        }
        let err = EventLog::open(&open_db(&dir)).unwrap_err();
        assert!(matches!(
            err,
            StoreError::TailLost {
                stored: 4,
                recorded: 5
            }
        ));
    }

    #[test]
    fn a_malformed_key_or_value_is_reported_as_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = open_db(&dir);
            let events = db.open_tree(EVENTS_TREE).unwrap();
            events.insert(1u64.to_be_bytes(), &b"short"[..]).unwrap();
            db.flush().unwrap();
        }
        let err = EventLog::open(&open_db(&dir)).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    }

    #[test]
    fn an_unknown_schema_version_fails_open() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = open_db(&dir);
            let meta = db.open_tree(META_TREE).unwrap();
            meta.insert(SCHEMA_VERSION_KEY, &99u64.to_be_bytes())
                .unwrap();
        }
        let err = EventLog::open(&open_db(&dir)).unwrap_err();
        assert!(matches!(
            err,
            StoreError::UnsupportedSchema {
                found: 99,
                supported: SCHEMA_VERSION
            }
        ));
    }

    /// An event of exactly `size` bytes of JSON.
    fn sized_json(seq: u64, size: usize) -> Vec<u8> {
        let mut body = format!(r#"{{"Seq":{seq},"Pad":""#).into_bytes();
        body.resize(size.saturating_sub(2).max(body.len()), b'x');
        body.extend_from_slice(b"\"}");
        body
    }

    fn chunk_sizes(db: &sled::Db) -> Vec<(u64, usize)> {
        db.open_tree(EVENTS_TREE)
            .unwrap()
            .iter()
            .map(|entry| {
                let (key, value) = entry.unwrap();
                (decode_key(&key).unwrap(), value.len())
            })
            .collect()
    }

    #[test]
    fn a_large_append_is_stored_in_bounded_chunks_and_reads_back_from_any_seq() {
        let dir = tempfile::tempdir().unwrap();
        let db = open_db(&dir);
        let mut log = EventLog::open(&db).unwrap();
        let bodies: Vec<(u64, Vec<u8>)> = (1..=100)
            .map(|seq| (seq, sized_json(seq, 300 + (seq as usize * 37) % 700)))
            .chain([(101, sized_json(101, CHUNK_BYTES * 2))])
            .collect();
        let refs: Vec<(u64, &[u8])> = bodies.iter().map(|(s, b)| (*s, b.as_slice())).collect();
        log.append(&refs, SystemTime::now()).unwrap();
        log.flush().unwrap();

        let chunks = chunk_sizes(&db);
        assert!(
            chunks.len() > 10,
            "100 events of ~650 bytes fill several chunks: {chunks:?}"
        );
        let (oversized, rest) = chunks.split_last().unwrap();
        assert_eq!(
            oversized.0, 101,
            "an event larger than a chunk gets its own"
        );
        assert!(
            rest.iter().all(|(_, len)| *len <= CHUNK_BYTES),
            "{chunks:?}"
        );
        assert_eq!(
            log.bytes(),
            chunks.iter().map(|(_, len)| *len as u64).sum::<u64>()
        );

        for after in 0..=101 {
            let read = log.read_after(after, 7).unwrap();
            let expected: Vec<u64> = (after + 1..=101).take(7).collect();
            assert_eq!(seqs(&read), expected, "after {after}");
            for (seq, body) in &read {
                assert_eq!(body, &bodies[*seq as usize - 1].1, "Seq {seq}");
            }
        }
    }

    #[test]
    fn a_trim_through_the_middle_of_a_chunk_keeps_its_tail_across_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let at = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let (len, bytes) = {
            let db = open_db(&dir);
            let mut log = EventLog::open(&db).unwrap();
            append_n(&mut log, 6, at);
            let retention = Retention {
                max_events: 2,
                ..Retention::UNLIMITED
            };
            assert_eq!(log.trim(&retention, at).unwrap().removed, 4);
            assert_eq!(seqs(&log.read_after(0, 10).unwrap()), vec![5, 6]);
            assert_eq!(chunk_sizes(&db).first().map(|(key, _)| *key), Some(5));
            let age = Retention {
                max_age: Duration::from_secs(10),
                ..Retention::UNLIMITED
            };
            let kept = log.trim(&age, at + Duration::from_secs(5)).unwrap();
            assert_eq!(kept.removed, 0, "the rewritten tail keeps its stored-at");
            log.flush().unwrap();
            (log.len(), log.bytes())
        };
        let log = EventLog::open(&open_db(&dir)).unwrap();
        assert_eq!((log.first_seq(), log.last_seq()), (5, 6));
        assert_eq!((log.len(), log.bytes()), (len, bytes));
        assert_eq!(seqs(&log.read_after(0, 10).unwrap()), vec![5, 6]);
    }

    #[test]
    fn a_record_running_past_its_chunk_is_reported_as_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = open_db(&dir);
            let mut value = 0u64.to_be_bytes().to_vec();
            value.extend_from_slice(&100u32.to_be_bytes());
            value.extend_from_slice(b"{}");
            let events = db.open_tree(EVENTS_TREE).unwrap();
            events.insert(1u64.to_be_bytes(), value).unwrap();
            db.flush().unwrap();
        }
        let err = EventLog::open(&open_db(&dir)).unwrap_err();
        assert!(err.to_string().contains("runs past"), "{err}");
    }

    #[test]
    fn a_version_1_log_is_migrated_to_chunks_with_its_seqs_epoch_and_ages() {
        let dir = tempfile::tempdir().unwrap();
        let early = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        {
            let db = open_db(&dir);
            let meta = db.open_tree(META_TREE).unwrap();
            meta.insert(SCHEMA_VERSION_KEY, &1u64.to_be_bytes())
                .unwrap();
            meta.insert(EPOCH_KEY, "old-epoch").unwrap();
            meta.insert(LAST_SEQ_KEY, &30u64.to_be_bytes()).unwrap();
            meta.insert(FIRST_SEQ_KEY, &11u64.to_be_bytes()).unwrap();
            let old = db.open_tree(V1_EVENTS_TREE).unwrap();
            for seq in 11..=30u64 {
                let at = early + Duration::from_secs(if seq <= 20 { 0 } else { 100 });
                let mut value = unix_nanos(at).to_be_bytes().to_vec();
                value.extend_from_slice(&json(seq));
                old.insert(seq.to_be_bytes(), value).unwrap();
            }
            db.flush().unwrap();
        }
        let db = open_db(&dir);
        let mut log = EventLog::open(&db).unwrap();
        assert_eq!(log.epoch(), "old-epoch");
        assert_eq!((log.first_seq(), log.last_seq(), log.len()), (11, 30, 20));
        let read = log.read_after(0, 100).unwrap();
        assert_eq!(seqs(&read), (11..=30).collect::<Vec<_>>());
        assert!(read.iter().all(|(seq, body)| body == &json(*seq)));
        assert!(
            !db.tree_names()
                .iter()
                .any(|name| name.as_ref() == b"events")
        );
        assert_eq!(
            read_meta_u64(&db.open_tree(META_TREE).unwrap(), SCHEMA_VERSION_KEY).unwrap(),
            Some(SCHEMA_VERSION)
        );
        let age = Retention {
            max_age: Duration::from_secs(50),
            ..Retention::UNLIMITED
        };
        let report = log.trim(&age, early + Duration::from_secs(120)).unwrap();
        assert_eq!(report.first_seq, 21, "each event keeps its own stored-at");
        append_n(&mut log, 1, SystemTime::now());
        assert_eq!(log.last_seq(), 31);
    }

    #[test]
    fn read_after_pages_through_the_log_without_gaps_or_repeats() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = EventLog::open(&open_db(&dir)).unwrap();
        append_n(&mut log, 23, SystemTime::now());
        let mut after = 0;
        let mut seen = Vec::new();
        loop {
            let page = log.read_after(after, 5).unwrap();
            if page.is_empty() {
                break;
            }
            assert!(page.len() <= 5);
            after = page.last().map(|(seq, _)| *seq).unwrap();
            seen.extend(seqs(&page));
        }
        assert_eq!(seen, (1..=23).collect::<Vec<_>>());
        assert!(log.read_after(23, 5).unwrap().is_empty());
        assert!(log.read_after(u64::MAX, 5).unwrap().is_empty());
        assert!(log.read_after(0, 0).unwrap().is_empty());
    }

    #[test]
    fn a_read_within_a_byte_budget_stops_after_the_event_that_reaches_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = EventLog::open(&open_db(&dir)).unwrap();
        append_n(&mut log, 20, SystemTime::now());
        let reader = log.reader();
        let size = json(5).len();
        let read = reader.read_after_within(4, 100, size * 3).unwrap();
        assert_eq!(seqs(&read), vec![5, 6, 7]);
        let one = reader.read_after_within(4, 100, 0).unwrap();
        assert_eq!(
            seqs(&one),
            vec![5],
            "at least one event, however small the budget"
        );
    }

    #[test]
    fn readers_see_events_only_after_flush() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = EventLog::open(&open_db(&dir)).unwrap();
        let reader = log.reader();
        let body = json(1);
        log.append(&[(1, body.as_slice())], SystemTime::now())
            .unwrap();
        assert!(reader.read_after(0, 10).unwrap().is_empty());
        assert!(log.read_after(0, 10).unwrap().is_empty());
        assert_eq!((reader.first_seq(), reader.last_seq()), (1, 0));
        log.flush().unwrap();
        assert_eq!(seqs(&reader.read_after(0, 10).unwrap()), vec![1]);
        assert_eq!((reader.first_seq(), reader.last_seq()), (1, 1));
        assert_eq!(reader.epoch(), log.epoch());
    }

    #[test]
    fn a_reader_on_another_thread_reads_while_the_writer_appends() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = EventLog::open(&open_db(&dir)).unwrap();
        let reader = log.reader();
        const TOTAL: u64 = 2_000;
        let replay = std::thread::spawn(move || {
            let mut after = 0;
            let mut seen = Vec::new();
            while after < TOTAL {
                let page = reader.read_after(after, 64).unwrap();
                for (seq, body) in page {
                    assert_eq!(seq, after + 1, "reads are contiguous");
                    assert_eq!(body, json(seq));
                    after = seq;
                    seen.push(seq);
                }
                std::thread::yield_now();
            }
            seen.len() as u64
        });
        for _ in 0..TOTAL / 20 {
            append_n(&mut log, 20, SystemTime::now());
        }
        assert_eq!(replay.join().unwrap(), TOTAL);
    }

    #[test]
    fn the_log_and_its_reader_can_move_between_threads() {
        fn assert_send<T: Send>() {}
        fn assert_send_sync<T: Send + Sync + Clone>() {}
        assert_send::<EventLog>();
        assert_send_sync::<LogReader>();
    }
}
