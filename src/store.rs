//! Storage: the seam the sequencer writes the event log through ([`EventStore`]), the typed
//! "write state and emit its events" step ([`StateChange`]), and the sled backend.
//!
//! - [`db`]: the sled database: opening it, its trees and `meta` keys, the schema check.
//! - [`log`]: the event log in sled, the default [`EventStore`].
//! - [`journal`]: the log's journal, one synced file write per flush that only added events.
//! - [`data_dir`]: the data directory's lock and the marker naming the log it holds.
//! - [`versions`]: a cluster node's record of the write each object, user and role holds.

pub mod data_dir;
pub mod db;
pub mod journal;
pub mod log;
pub(crate) mod versions;

use std::time::SystemTime;

pub use self::db::sled_reason;
pub use self::log::{EventLog, LogReader, Retention, StoreError, TrimReport};
use crate::wire::event::Event;

/// The oldest and newest `Seq` of a log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// The oldest retained `Seq` (`last + 1` when nothing is retained).
    pub first: u64,
    /// The newest `Seq` appended (0 for a new log).
    pub last: u64,
}

/// A write to herald's state and the events it causes, run in order with every publish. The
/// store makes its writes durable no later than its events, so after a crash either both exist
/// or the event does not.
pub trait StateChange: Send + 'static {
    /// Writes the state and answers the events the write causes (none when it was refused).
    fn write(self: Box<Self>) -> Vec<Event>;
}

impl<F: FnOnce() -> Vec<Event> + Send + 'static> StateChange for F {
    fn write(self: Box<Self>) -> Vec<Event> {
        (*self)()
    }
}

/// Where the sequencer keeps the event log: one writer appends batches with consecutive `Seq`s
/// and makes them stable; readers see only what is stable.
pub trait EventStore: Send + 'static {
    /// The log's epoch: changes only when its history is lost or reset.
    fn epoch(&self) -> &str;
    /// The end of the newest gap of `Seq`s skipped after an unclean stop (0 when none).
    fn resumed_after(&self) -> u64;
    /// The oldest retained and newest appended `Seq`.
    fn bounds(&self) -> Bounds;
    /// Bytes of events retained.
    fn bytes(&self) -> u64;
    /// Appends events whose `Seq`s continue the log (else an error and nothing is written).
    fn append(&mut self, events: &[(u64, &[u8])], stored_at: SystemTime) -> Result<(), StoreError>;
    /// Makes every append and state write so far durable, and visible to readers.
    fn sync(&mut self) -> Result<(), StoreError>;
    /// Up to `limit` stable events with `Seq > after`, in order.
    fn read_after(&self, after: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, StoreError>;
    /// Removes at most `at_most` of the oldest events beyond `retention`.
    fn trim(
        &mut self,
        retention: &Retention,
        now: SystemTime,
        at_most: u64,
    ) -> Result<TrimReport, StoreError>;
    /// The mark below which `Seq`s may be handed out before they are stored (0 when none).
    fn reserved(&self) -> u64;
    /// Durably records that `Seq`s up to `through` may be handed out before they are stored,
    /// so that none of them is reused after a crash.
    fn reserve(&mut self, through: u64) -> Result<(), StoreError>;
    /// On a clean stop: makes everything durable and gives the reservation back.
    fn release(&mut self) -> Result<(), StoreError>;
    /// Runs `change` in order with the appends around it; its writes become durable at the next
    /// [`EventStore::sync`] at the latest. Answers the events it causes.
    fn write_state(&mut self, change: Box<dyn StateChange>) -> Vec<Event>;
}

impl EventStore for EventLog {
    fn epoch(&self) -> &str {
        EventLog::epoch(self)
    }
    fn resumed_after(&self) -> u64 {
        EventLog::resumed_after(self)
    }
    fn bounds(&self) -> Bounds {
        Bounds {
            first: self.first_seq(),
            last: self.last_seq(),
        }
    }
    fn bytes(&self) -> u64 {
        EventLog::bytes(self)
    }
    fn append(&mut self, events: &[(u64, &[u8])], stored_at: SystemTime) -> Result<(), StoreError> {
        EventLog::append(self, events, stored_at)
    }
    fn sync(&mut self) -> Result<(), StoreError> {
        self.flush()
    }
    fn read_after(&self, after: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        EventLog::read_after(self, after, limit)
    }
    fn trim(
        &mut self,
        retention: &Retention,
        now: SystemTime,
        at_most: u64,
    ) -> Result<TrimReport, StoreError> {
        self.trim_at_most(retention, now, at_most)
    }
    fn reserved(&self) -> u64 {
        EventLog::reserved(self)
    }
    fn reserve(&mut self, through: u64) -> Result<(), StoreError> {
        EventLog::reserve(self, through)
    }
    fn release(&mut self) -> Result<(), StoreError> {
        EventLog::release(self)
    }
    fn write_state(&mut self, change: Box<dyn StateChange>) -> Vec<Event> {
        // The change writes other trees of the same database, so the log's flush covers them:
        // the next one is a whole checkpoint, not a journal write.
        self.state_written();
        change.write()
    }
}
