//! The persistent history of connections, so "when was this runner last online, and why did it
//! drop?" has an answer after a restart.
//!
//! On-disk layout (sled; the trees come from [`crate::store::db`], which names them):
//! - tree `connections_open`: key = connection id (u64 big-endian), value = the connection's JSON
//!   at connect time. An entry left at startup belonged to a process that crashed.
//! - tree `connections`: key = close time in unix nanoseconds (u64 big-endian) then the id (u64
//!   big-endian), so iteration order is close order; value = the closed connection's JSON with
//!   `CloseTime` and `CloseReason`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sled::Tree;
use thiserror::Error;

use super::view::ConnectionView;

/// Close reason recorded for connections a crashed process left open.
pub(crate) const CRASHED: &str = "server crashed";
/// Removals per sled batch when trimming, so a large trim never holds the tree for long.
const HISTORY_TRIM_BATCH: usize = 10_000;

/// Why the connection history could not be read or written.
#[derive(Debug, Error)]
pub enum HistoryError {
    /// sled failed.
    #[error("connection history storage failed: {}", crate::store::sled_reason(.0))]
    Store(sled::Error),
    /// A stored record is not a connection.
    #[error(
        "connection history record is unreadable: {0}; move the data directory aside to start fresh"
    )]
    Corrupt(String),
}

impl From<sled::Error> for HistoryError {
    fn from(error: sled::Error) -> HistoryError {
        HistoryError::Store(error)
    }
}

/// How much history to keep.
pub(crate) use crate::config::HistoryRetention;

/// The persistent record of open and closed connections. Cheap to clone; used from the log
/// thread (writes, inside the same step as the connection event) and blocking threads (reads).
#[derive(Clone)]
pub(crate) struct History {
    open: Tree,
    closed: Tree,
}

fn nanos(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos().min(u64::MAX as u128) as u64)
        .unwrap_or(0)
}

fn closed_key(close: SystemTime, id: u64) -> [u8; 16] {
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&nanos(close).to_be_bytes());
    key[8..].copy_from_slice(&id.to_be_bytes());
    key
}

impl History {
    /// Opens the trees and closes, as `server crashed`, every connection a previous process
    /// left open. Returns the history and how many such connections it recorded.
    pub(crate) fn open(db: &sled::Db) -> Result<(History, usize), HistoryError> {
        let (open, closed) = crate::store::db::history_trees(db)?;
        let history = History { open, closed };
        let now = SystemTime::now();
        let mut recovered = 0;
        for entry in history.open.iter() {
            let (key, value) = entry?;
            let id = key
                .as_ref()
                .try_into()
                .map(u64::from_be_bytes)
                .map_err(|_| {
                    HistoryError::Corrupt("an open-connection key is not 8 bytes".into())
                })?;
            let mut view: ConnectionView =
                serde_json::from_slice(&value).map_err(|e| HistoryError::Corrupt(e.to_string()))?;
            view.close_time = Some(humantime::format_rfc3339_nanos(now).to_string());
            view.close_reason = Some(CRASHED.to_owned());
            history.record_closed(id, &view, now)?;
            recovered += 1;
        }
        db.flush()?;
        Ok((history, recovered))
    }

    /// Records a connection as open (so a crash leaves a trace to close on the next start).
    pub(crate) fn record_open(&self, id: u64, view: &ConnectionView) -> Result<(), HistoryError> {
        let value = serde_json::to_vec(view).map_err(|e| HistoryError::Corrupt(e.to_string()))?;
        self.open.insert(id.to_be_bytes(), value)?;
        Ok(())
    }

    /// Moves a connection from open to closed; `view` carries CloseTime and CloseReason.
    pub(crate) fn record_closed(
        &self,
        id: u64,
        view: &ConnectionView,
        closed_at: SystemTime,
    ) -> Result<(), HistoryError> {
        let value = serde_json::to_vec(view).map_err(|e| HistoryError::Corrupt(e.to_string()))?;
        self.closed.insert(closed_key(closed_at, id), value)?;
        self.open.remove(id.to_be_bytes())?;
        Ok(())
    }

    /// Records a connection another cluster node closed, from its `connections.delete` event
    /// `seq`: recording the same event again (a copy that reads it twice) changes nothing.
    pub(crate) fn record_closed_elsewhere(
        &self,
        seq: u64,
        view: &ConnectionView,
        closed_at: SystemTime,
    ) -> Result<(), HistoryError> {
        let value = serde_json::to_vec(view).map_err(|e| HistoryError::Corrupt(e.to_string()))?;
        self.closed.insert(closed_key(closed_at, seq), value)?;
        Ok(())
    }

    /// Makes every write so far durable (with the rest of the node's database).
    pub(crate) fn flush(&self) -> Result<(), HistoryError> {
        self.closed.flush()?;
        Ok(())
    }

    /// Closed connections, newest first, optionally of one principal and closed at or after `since`.
    pub(crate) fn list(
        &self,
        principal: Option<&str>,
        since: Option<SystemTime>,
        limit: usize,
    ) -> Result<Vec<ConnectionView>, HistoryError> {
        let lower = closed_key(since.unwrap_or(UNIX_EPOCH), 0);
        let mut out = Vec::new();
        for entry in self.closed.range(lower..).rev() {
            if out.len() >= limit {
                break;
            }
            let (_, value) = entry?;
            let view: ConnectionView =
                serde_json::from_slice(&value).map_err(|e| HistoryError::Corrupt(e.to_string()))?;
            if principal.is_none_or(|p| p == view.principal) {
                out.push(view);
            }
        }
        Ok(out)
    }

    /// Removes the oldest closed connections beyond the count and age limits.
    pub(crate) fn trim(
        &self,
        retention: &HistoryRetention,
        now: SystemTime,
    ) -> Result<u64, HistoryError> {
        let oldest_kept = closed_key(now.checked_sub(retention.max_age).unwrap_or(UNIX_EPOCH), 0);
        let mut excess = (self.closed.len() as u64).saturating_sub(retention.max_connections);
        let mut removed = 0;
        loop {
            let mut batch = sled::Batch::default();
            let mut in_batch = 0;
            for entry in self.closed.iter().keys() {
                let key = entry?;
                if excess == 0 && key.as_ref() >= oldest_kept.as_slice() {
                    break;
                }
                batch.remove(key);
                excess = excess.saturating_sub(1);
                in_batch += 1;
                if in_batch == HISTORY_TRIM_BATCH {
                    break;
                }
            }
            if in_batch == 0 {
                return Ok(removed);
            }
            self.closed.apply_batch(batch)?;
            removed += in_batch as u64;
        }
    }
}

/// How often the history is trimmed.
pub(crate) const HISTORY_TRIM_EVERY: Duration = Duration::from_secs(60);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::view::NEVER_EXPIRES;

    fn view(principal: &str) -> ConnectionView {
        ConnectionView {
            remote_addr: "127.0.0.1:5000".into(),
            principal: principal.into(),
            create_time: "2026-11-27T00:00:00Z".into(),
            expires_at: NEVER_EXPIRES.into(),
            kind: "websocket".into(),
            node: None,
            filters: vec!["machines.*.*".into()],
            events_sent: 1,
            bytes_sent: 2,
            last_seq: 3,
            close_time: None,
            close_reason: None,
        }
    }

    #[test]
    fn a_connection_left_open_by_a_crash_is_closed_as_server_crashed_on_the_next_open() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = crate::testing::open_sled(dir.path());
            let (history, _) = History::open(&db).unwrap();
            history.record_open(7, &view("runner:a")).unwrap();
            db.flush().unwrap();
        }
        let db = crate::testing::open_sled(dir.path());
        let (history, recovered) = History::open(&db).unwrap();
        assert_eq!(recovered, 1);
        let listed = history.list(None, None, 10).unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].close_reason.as_deref(), Some(CRASHED));
        assert_eq!(History::open(&db).unwrap().1, 0, "recorded once");
    }

    #[test]
    fn history_lists_newest_first_by_principal_and_trims_by_count() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let (history, _) = History::open(&db).unwrap();
        let start = SystemTime::now();
        for id in 0..5u64 {
            let principal = if id % 2 == 0 { "runner:a" } else { "user:b" };
            let mut closed = view(principal);
            closed.close_reason = Some("client closed".into());
            closed.last_seq = id;
            history.record_open(id, &closed).unwrap();
            history
                .record_closed(id, &closed, start + Duration::from_secs(id))
                .unwrap();
        }
        let all = history.list(None, None, 10).unwrap();
        assert_eq!(
            all.iter().map(|v| v.last_seq).collect::<Vec<_>>(),
            [4, 3, 2, 1, 0]
        );
        let runner = history.list(Some("runner:a"), None, 10).unwrap();
        assert_eq!(
            runner.iter().map(|v| v.last_seq).collect::<Vec<_>>(),
            [4, 2, 0]
        );
        let recent = history
            .list(None, Some(start + Duration::from_secs(3)), 10)
            .unwrap();
        assert_eq!(recent.len(), 2);
        let retention = HistoryRetention {
            max_connections: 2,
            max_age: Duration::from_secs(3600),
        };
        assert_eq!(history.trim(&retention, start).unwrap(), 3);
        assert_eq!(history.list(None, None, 10).unwrap().len(), 2);
    }
}
