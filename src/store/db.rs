//! herald's sled database: opening it, the one list of its trees and `meta` keys (each with
//! its key layout), and the one schema-version check every area's data goes through.
//!
//! Every tree lives in the one database `<data_dir>/db`, so one flush makes the writes of every
//! tree durable together: that is what lets a state change and the event it causes share a sync.
//! A flush is durable across a power cut only with [`DbFiles`] synced after it.
//! The areas (event log, users and roles, objects, connection history, server id) get their
//! trees here and keep their own value formats.

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use sled::{Db, Tree};
use thiserror::Error;

// The trees.

/// The event log's chunks. key: the `Seq` of the chunk's first event, big-endian `u64` (so
/// sled's byte order is `Seq` order); value: the chunk (stored-at time, then length-prefixed
/// event JSON records; see [`crate::store::log`]).
pub const EVENTS_TREE: &str = "event_chunks";
/// Schema version 1 of the event log, one event per key. key: the `Seq`, big-endian `u64`;
/// value: stored-at unix nanoseconds (big-endian `u64`), then the event JSON. Migrated into
/// [`EVENTS_TREE`] at open and then dropped.
pub const V1_EVENTS_TREE: &str = "events";
/// `Seq`s skipped after an unclean stop, which no event will ever have. key: the first skipped
/// `Seq`, value: the last one (both big-endian `u64`).
pub const GAPS_TREE: &str = "event_gaps";
/// Users. key: the user name (UTF-8); value: JSON `{"Name","Roles","PasswordHash","Secret"}`.
pub const USERS_TREE: &str = "users";
/// Roles. key: the role name (UTF-8); value: JSON `{"Name","Claims":[…]}`.
pub const ROLES_TREE: &str = "roles";
/// Prefix of the object trees, one per kind (`objects/profiles`, `objects/machines`, …).
/// key: the object's canonical key (UTF-8 `Name`, or the hyphenated lowercase `Uuid`); value:
/// the object's JSON as served.
pub const OBJECTS_TREE_PREFIX: &str = "objects/";
/// A cluster node's objects: the `Seq` of the event that last wrote each object (deleted ones
/// included). key: `<type>/<canonical key>` (UTF-8); value: the `Seq`, big-endian `u64`. And the
/// writes it refused (planned on an event that was no longer the object's newest): key: a zero
/// byte, `refused/`, the `Seq` big-endian; value: empty. And the newest write of each object in
/// the stream, refused ones included: key: a byte 1, `last/<type>/<canonical key>`; value: the
/// `Seq`, big-endian `u64`.
pub const OBJECT_SEQS_TREE: &str = "object_seqs";
/// Connections open when last recorded. key: the connection id (big-endian `u64`); value: the
/// connection's JSON at connect time. An entry left at startup belonged to a crashed process.
pub const CONNECTIONS_OPEN_TREE: &str = "connections_open";
/// Closed connections. key: close time in unix nanoseconds, then the id (both big-endian
/// `u64`), so iteration order is close order; value: the JSON with `CloseTime`, `CloseReason`.
pub const CONNECTIONS_CLOSED_TREE: &str = "connections";
/// A cluster node's table of every node's live connections (`core::cluster_conns`).
pub const CONNECTIONS_CLUSTER_TREE: &str = "connections_cluster";
/// Small values of every area, one key each (the `*_KEY` constants below).
pub const META_TREE: &str = "meta";

// The keys of `meta`.

/// The event log's epoch: a uuid v4 as UTF-8 text.
pub const EPOCH_KEY: &str = "epoch";
/// The event log's schema version ([`LOG_SCHEMA`]), big-endian `u64`.
pub const SCHEMA_VERSION_KEY: &str = "schema_version";
/// The highest `Seq` ever appended, big-endian `u64`; written in the same transaction as each
/// append, so a `Seq` is never reused after every event is trimmed.
pub const LAST_SEQ_KEY: &str = "log_last_seq";
/// The oldest retained `Seq` after the latest trim, big-endian `u64`; written in the same
/// transaction as each trim. It tells "everything was trimmed" (equals last + 1) apart from
/// "the history was lost" (an empty [`EVENTS_TREE`] otherwise).
pub const FIRST_SEQ_KEY: &str = "log_first_seq";
/// With `batched` durability, the highest `Seq` that may have been handed out before it was
/// stored, big-endian `u64`; flushed before any `Seq` above the previous mark goes out, removed
/// by a clean stop. Found above the stored end at open, it means an unclean stop.
pub const RESERVED_SEQ_KEY: &str = "log_reserved_seq";
/// The users' and roles' schema version ([`AUTH_SCHEMA`]), big-endian `u32`.
pub const AUTH_SCHEMA_KEY: &str = "auth_schema_version";
/// The 32 raw bytes that sign tokens.
pub const TOKEN_SECRET_KEY: &str = "token_secret";
/// The objects' schema version ([`OBJECTS_SCHEMA`]), big-endian `u32`.
pub const OBJECTS_SCHEMA_KEY: &str = "objects_schema_version";
/// This server's id, a uuid v4 as UTF-8 text, made on the first start.
pub const SERVER_ID_KEY: &str = "server_id";

/// The layout version of one area's data, as `meta` records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schema {
    /// The `meta` key that holds it.
    pub key: &'static str,
    /// The version this build reads and writes.
    pub version: u64,
    /// How many big-endian bytes the version is stored in (4 or 8).
    pub width: usize,
}

impl Schema {
    fn bytes(&self) -> Vec<u8> {
        let all = self.version.to_be_bytes();
        all.get(all.len().saturating_sub(self.width)..)
            .unwrap_or(&all)
            .to_vec()
    }
}

/// The event log's layout: version 2 stores events in chunks (version 1, one per key, is
/// migrated by [`crate::store::log::EventLog::open`]).
pub const LOG_SCHEMA: Schema = Schema {
    key: SCHEMA_VERSION_KEY,
    version: 2,
    width: 8,
};
/// Users' and roles' layout; bump it when their stored JSON changes incompatibly.
pub const AUTH_SCHEMA: Schema = Schema {
    key: AUTH_SCHEMA_KEY,
    version: 1,
    width: 4,
};
/// The objects' layout; bump it when their stored JSON changes incompatibly.
pub const OBJECTS_SCHEMA: Schema = Schema {
    key: OBJECTS_SCHEMA_KEY,
    version: 1,
    width: 4,
};

/// What the schema check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SchemaFound {
    /// The version this build reads and writes.
    Current,
    /// No version: a new area, now recorded as the current one.
    Recorded,
    /// Another version (or malformed bytes), as stored; the area decides what to do with it.
    Other(Vec<u8>),
}

/// The one schema check: records the current version when there is none, and otherwise says
/// whether the stored one is current.
pub fn check_schema(meta: &Tree, schema: &Schema) -> Result<SchemaFound, sled::Error> {
    let current = schema.bytes();
    match meta.get(schema.key)? {
        None => {
            meta.insert(schema.key, current)?;
            Ok(SchemaFound::Recorded)
        }
        Some(stored) if stored.as_ref() == current.as_slice() => Ok(SchemaFound::Current),
        Some(stored) => Ok(SchemaFound::Other(stored.to_vec())),
    }
}

/// Why an area's trees could not be handed out.
#[derive(Debug, Error)]
pub enum OpenError {
    /// sled failed.
    #[error("{}", sled_reason(.0))]
    Sled(sled::Error),
    /// The area's data was written with another layout version (the stored bytes).
    #[error("unsupported schema version {0:?}")]
    Schema(Vec<u8>),
}

impl From<sled::Error> for OpenError {
    fn from(error: sled::Error) -> OpenError {
        OpenError::Sled(error)
    }
}

/// Opens (or creates) the database at `path`, its page cache bounded to `cache_bytes` (sled's
/// own default, 1 GiB, would let it grow far beyond what herald needs).
pub fn open(path: &Path, cache_bytes: u64) -> Result<Db, sled::Error> {
    sled::Config::new()
        .path(path)
        .cache_capacity(cache_bytes)
        .flush_every_ms(Some(SLED_FLUSH_EVERY_MS))
        .open()
}

/// How often sled writes out its buffers on its own thread (its default is 500 ms). The event
/// log's flushes write the journal, not sled, and sled keeps every page changed since its last
/// write in memory: in the load generator's 1/POST row, 500 ms of single-event publishes held
/// about 30 MiB beyond the page cache's bound (RSS 121 MiB; 93 MiB at 100 ms, at a higher rate).
const SLED_FLUSH_EVERY_MS: u64 = 100;

/// sled's flush writes its log with `sync_file_range`, which syncs neither the file's size nor
/// the disk's write cache, so a power cut could take back what it called stable. After each
/// flush these files of the database are synced with `fdatasync`, blobs before the log that
/// points at them, and the directories whenever their entries changed (sled syncs its snapshots
/// itself but not their rename, and writes `conf` and blobs without syncing them).
#[derive(Debug)]
pub struct DbFiles {
    dir: PathBuf,
    /// The database's log file (`db`), opened once.
    log: File,
    /// The entries of the directory and of `blobs/` when they were last synced.
    synced: Mutex<(Listing, Listing)>,
}

/// A directory's entries as last listed, with its modification time then: a flush lists the
/// directory again only when that time moved (two `readdir`s per flush cost more than the rest
/// of the sync's CPU).
#[derive(Debug, Default)]
struct Listing {
    names: HashSet<OsString>,
    /// The directory's modification time when listed, and when that was; `None` before the
    /// first listing.
    seen: Option<(Option<SystemTime>, SystemTime)>,
}

/// How long after a directory changed a listing may still have missed a change within the same
/// tick of the file system's coarse clock: such a listing is not trusted.
const MTIME_SETTLED: Duration = Duration::from_secs(1);

impl Listing {
    /// The directory's entries now, or `None` when its modification time says they are still
    /// the ones listed last.
    fn relist(&mut self, dir: &Path) -> io::Result<Option<HashSet<OsString>>> {
        let mtime = match fs::metadata(dir) {
            Ok(meta) => Some(meta.modified()?),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        if let Some((seen, listed_at)) = self.seen {
            let settled = seen.is_none_or(|seen| {
                listed_at
                    .duration_since(seen)
                    .is_ok_and(|after| after >= MTIME_SETTLED)
            });
            if seen == mtime && settled {
                return Ok(None);
            }
        }
        let listed_at = SystemTime::now();
        let present = names(dir)?;
        self.seen = Some((mtime, listed_at));
        Ok(Some(present))
    }
}

impl DbFiles {
    /// Opens the files of the database at `dir` and syncs them once.
    pub fn open(dir: &Path) -> io::Result<DbFiles> {
        File::open(dir.join("conf"))?.sync_all()?;
        let files = DbFiles {
            dir: dir.to_path_buf(),
            log: File::open(dir.join("db"))?,
            synced: Mutex::new(Default::default()),
        };
        files.sync()?;
        Ok(files)
    }

    /// Syncs what the last sled flush wrote: new blobs, the log file's data and size, and the
    /// directories when their entries changed.
    pub fn sync(&self) -> io::Result<()> {
        let mut synced = self
            .synced
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let (entries, blobs) = &mut *synced;
        let blob_dir = self.dir.join("blobs");
        if let Some(present) = blobs.relist(&blob_dir)? {
            for name in present.difference(&blobs.names) {
                match File::open(blob_dir.join(name)) {
                    Ok(blob) => blob.sync_data()?,
                    // Removed since it was listed: nothing points at it any more.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
            if present != blobs.names {
                sync_dir(&blob_dir)?;
                blobs.names = present;
            }
        }
        self.log.sync_data()?;
        if let Some(present) = entries.relist(&self.dir)?
            && present != entries.names
        {
            sync_dir(&self.dir)?;
            entries.names = present;
        }
        Ok(())
    }
}

/// Syncs directory `dir`'s entries, if it exists.
fn sync_dir(dir: &Path) -> io::Result<()> {
    match File::open(dir) {
        Ok(dir) => dir.sync_all(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// The names in directory `dir` (none when it does not exist).
fn names(dir: &Path) -> io::Result<HashSet<OsString>> {
    match fs::read_dir(dir) {
        Ok(entries) => entries.map(|e| e.map(|e| e.file_name())).collect(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(HashSet::new()),
        Err(e) => Err(e),
    }
}

/// Whether the database has the tree `name`, without creating it.
pub fn has_tree(db: &Db, name: &str) -> bool {
    db.tree_names()
        .iter()
        .any(|tree| tree.as_ref() == name.as_bytes())
}

/// The tree `meta`, shared by every area (each owns the keys listed above).
pub fn meta(db: &Db) -> Result<Tree, sled::Error> {
    db.open_tree(META_TREE)
}

/// The event log's trees. Its schema check, which may migrate, is the log's own
/// ([`crate::store::log::EventLog::open`]), on [`LOG_SCHEMA`] through [`check_schema`].
pub struct LogTrees {
    /// [`EVENTS_TREE`].
    pub events: Tree,
    /// [`META_TREE`].
    pub meta: Tree,
    /// [`GAPS_TREE`].
    pub gaps: Tree,
}

/// The event log's trees.
pub fn log_trees(db: &Db) -> Result<LogTrees, sled::Error> {
    Ok(LogTrees {
        events: db.open_tree(EVENTS_TREE)?,
        meta: meta(db)?,
        gaps: db.open_tree(GAPS_TREE)?,
    })
}

/// Users', roles' and the token secret's trees, after their schema check.
pub struct AuthTrees {
    /// [`USERS_TREE`].
    pub users: Tree,
    /// [`ROLES_TREE`].
    pub roles: Tree,
    /// [`META_TREE`], for [`TOKEN_SECRET_KEY`].
    pub meta: Tree,
}

/// Users', roles' and the token secret's trees, once [`AUTH_SCHEMA`] is checked.
pub fn auth_trees(db: &Db) -> Result<AuthTrees, OpenError> {
    let trees = AuthTrees {
        users: db.open_tree(USERS_TREE)?,
        roles: db.open_tree(ROLES_TREE)?,
        meta: meta(db)?,
    };
    match check_schema(&trees.meta, &AUTH_SCHEMA)? {
        SchemaFound::Other(found) => Err(OpenError::Schema(found)),
        _ => Ok(trees),
    }
}

/// The objects' trees, one per name in `kinds` (in that order), once [`OBJECTS_SCHEMA`] is
/// checked.
pub fn object_trees<'a>(
    db: &Db,
    kinds: impl IntoIterator<Item = &'a str>,
) -> Result<Vec<Tree>, OpenError> {
    match check_schema(&meta(db)?, &OBJECTS_SCHEMA)? {
        SchemaFound::Other(found) => Err(OpenError::Schema(found)),
        _ => Ok(kinds
            .into_iter()
            .map(|kind| db.open_tree(format!("{OBJECTS_TREE_PREFIX}{kind}")))
            .collect::<Result<Vec<_>, _>>()?),
    }
}

/// A cluster node's [`OBJECT_SEQS_TREE`].
pub fn object_seqs_tree(db: &Db) -> Result<Tree, sled::Error> {
    db.open_tree(OBJECT_SEQS_TREE)
}

/// A cluster node's table of every node's live connections.
pub fn cluster_connections_tree(db: &Db) -> Result<Tree, sled::Error> {
    db.open_tree(CONNECTIONS_CLUSTER_TREE)
}

/// The connection history's trees: (open, closed).
pub fn history_trees(db: &Db) -> Result<(Tree, Tree), sled::Error> {
    Ok((
        db.open_tree(CONNECTIONS_OPEN_TREE)?,
        db.open_tree(CONNECTIONS_CLOSED_TREE)?,
    ))
}

/// sled's error in words: sled writes some of its errors with Rust debug text (the lock error
/// holds an `Os { code: 11, kind: WouldBlock … }`), which is no message for a user.
pub fn sled_reason(error: &sled::Error) -> String {
    match error {
        sled::Error::Io(io) if io.to_string().starts_with("could not acquire lock") => {
            "another process holds its lock (is another herald running on this data directory?)"
                .to_owned()
        }
        sled::Error::Io(io) => io.to_string(),
        sled::Error::Corruption { .. } => {
            "the database is damaged; restore the data directory from a backup".to_owned()
        }
        sled::Error::CollectionNotFound(name) => {
            format!("the database has no tree {}", String::from_utf8_lossy(name))
        }
        sled::Error::Unsupported(what) => what.clone(),
        sled::Error::ReportableBug(what) => format!("sled failed unexpectedly: {what}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_db() -> Db {
        sled::Config::new()
            .temporary(true)
            .open()
            .unwrap_or_else(|e| panic!("sled: {e}"))
    }

    #[test]
    fn a_schema_version_is_recorded_once_in_its_width_and_then_read_as_current() {
        let db = temp_db();
        let meta = meta(&db).unwrap_or_else(|e| panic!("{e}"));
        for schema in [LOG_SCHEMA, AUTH_SCHEMA, OBJECTS_SCHEMA] {
            assert_eq!(
                check_schema(&meta, &schema).ok(),
                Some(SchemaFound::Recorded)
            );
            assert_eq!(
                check_schema(&meta, &schema).ok(),
                Some(SchemaFound::Current)
            );
            let stored = meta.get(schema.key).ok().flatten().map(|v| v.to_vec());
            assert_eq!(stored.map(|v| v.len()), Some(schema.width));
        }
        assert_eq!(
            meta.get(AUTH_SCHEMA_KEY).ok().flatten().map(|v| v.to_vec()),
            Some(1u32.to_be_bytes().to_vec())
        );
        assert_eq!(
            meta.get(SCHEMA_VERSION_KEY)
                .ok()
                .flatten()
                .map(|v| v.to_vec()),
            Some(2u64.to_be_bytes().to_vec())
        );
    }

    #[test]
    fn another_schema_version_refuses_the_area_and_leaves_it_as_it_was() {
        let db = temp_db();
        let meta = meta(&db).unwrap_or_else(|e| panic!("{e}"));
        meta.insert(OBJECTS_SCHEMA_KEY, &7u32.to_be_bytes())
            .unwrap_or_else(|e| panic!("{e}"));
        let refused = object_trees(&db, ["profiles"]);
        assert!(
            matches!(&refused, Err(OpenError::Schema(found)) if found == &7u32.to_be_bytes()),
            "{:?}",
            refused.err()
        );
        assert_eq!(
            meta.get(OBJECTS_SCHEMA_KEY)
                .ok()
                .flatten()
                .map(|v| v.to_vec()),
            Some(7u32.to_be_bytes().to_vec())
        );
        assert!(!has_tree(&db, "objects/profiles"));
    }
}
