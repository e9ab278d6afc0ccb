//! The event log's journal: under `sync` durability, a flush that only added events writes them
//! to this one file and syncs it with a single `fdatasync`, on the log thread, instead of
//! flushing sled (a write and `sync_file_range` handed to sled's I/O threads) and then syncing
//! sled's files. sled holds the same events in memory and writes them out on its own; a
//! checkpoint (sled's flush and the sync of its files) makes the journal's records redundant,
//! and the next record starts the file over. At open, the events the journal holds beyond what
//! sled recovered are appended again, so an acknowledged event survives a power cut either way.
//!
//! # Layout (file `journal` in the database's directory)
//!
//! A sequence of records from offset 0, each:
//! - [`MAGIC`] (4 bytes), then a CRC-32 (big-endian `u32`) of everything after it in the record;
//! - the generation (`u64`): one more than the newest found at open, and one more after each
//!   checkpoint, so records left from before a checkpoint are never read as current;
//! - a CRC-32 of the log's epoch (`u32`): a journal left by another log is ignored;
//! - the `Seq` of the record's first event (`u64`), its number of events (`u32`), the body's
//!   length (`u32`);
//! - the body: one chunk of the log, byte for byte as the log stores it (`store::log`'s
//!   layout: stored-at, then per event its length and JSON); the journal does not read it.
//!
//! Every number is big-endian. Reading stops at the first record that is torn, of another
//! generation, or not continuing the previous one's `Seq`s: records are written in order and
//! each is synced before the next is written, so nothing acknowledged lies beyond that point.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Marks the start of a record.
pub const MAGIC: [u8; 4] = *b"HJL1";
/// Bytes of a record before its body.
pub const HEADER_LEN: usize = 4 + 4 + 8 + 4 + 8 + 4 + 4;
/// Bytes the journal may grow to before a checkpoint starts it over: at 600-byte events one
/// checkpoint per ~13,000 events, each one sled flush, against one `fdatasync` per flush saved.
pub const CAPACITY: u64 = 8 * 1024 * 1024;
/// The journal's file name in the database's directory.
pub const FILE_NAME: &str = "journal";

/// One chunk of the log, read back from the journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The `Seq` of the chunk's first event.
    pub first_seq: u64,
    /// How many events the chunk holds.
    pub count: u32,
    /// The chunk's value, as the log stores it.
    pub body: Vec<u8>,
}

impl Record {
    /// The `Seq` right after the record's last event.
    fn next_seq(&self) -> u64 {
        self.first_seq.saturating_add(u64::from(self.count))
    }
}

/// The open journal: where the next record goes, and the records not yet written.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    file: File,
    generation: u64,
    epoch_crc: u32,
    /// Offset of the next record.
    end: u64,
    /// Records staged since the last commit.
    pending: Vec<u8>,
    /// A staged append too large for a record: only a checkpoint can make it durable.
    oversized: bool,
}

impl Journal {
    /// Opens (or creates) the journal in `dir` for the log with `epoch`, and reads back its
    /// current records, oldest first.
    pub fn open(dir: &Path, epoch: &str) -> io::Result<(Journal, Vec<Record>)> {
        let path = dir.join(FILE_NAME);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        let mut bytes = Vec::new();
        (&file).take(CAPACITY * 2).read_to_end(&mut bytes)?;
        let epoch_crc = crc32fast::hash(epoch.as_bytes());
        let (generation, records) = read_records(&bytes, epoch_crc);
        let journal = Journal {
            path,
            file,
            generation: generation.wrapping_add(1),
            epoch_crc,
            end: 0,
            pending: Vec::new(),
            oversized: false,
        };
        Ok((journal, records))
    }

    /// Where the journal lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Adds one chunk of the log (`count` events from `first_seq`, its stored value `body`) to
    /// the next commit.
    pub fn stage(&mut self, first_seq: u64, count: usize, body: &[u8]) {
        let (Ok(count), Ok(body_len)) = (u32::try_from(count), u32::try_from(body.len())) else {
            self.oversized = true;
            return;
        };
        let start = self.pending.len();
        self.pending.reserve(HEADER_LEN + body.len());
        self.pending.extend_from_slice(&MAGIC);
        self.pending.extend_from_slice(&[0; 4]);
        self.pending
            .extend_from_slice(&self.generation.to_be_bytes());
        self.pending
            .extend_from_slice(&self.epoch_crc.to_be_bytes());
        self.pending.extend_from_slice(&first_seq.to_be_bytes());
        self.pending.extend_from_slice(&count.to_be_bytes());
        self.pending.extend_from_slice(&body_len.to_be_bytes());
        self.pending.extend_from_slice(body);
        let crc = crc32fast::hash(&self.pending[start + 8..]);
        self.pending[start + 4..start + 8].copy_from_slice(&crc.to_be_bytes());
    }

    /// How much is staged: a mark for [`Journal::unstage`].
    pub fn staged(&self) -> usize {
        self.pending.len()
    }

    /// Takes back what was staged after `mark` (an append that failed stores nothing).
    pub fn unstage(&mut self, mark: usize) {
        self.pending.truncate(mark);
    }

    /// Writes and syncs the staged records. `Ok(false)` when they do not fit before
    /// [`CAPACITY`]: the caller checkpoints instead, which covers them.
    pub fn commit(&mut self) -> io::Result<bool> {
        if self.pending.is_empty() && !self.oversized {
            return Ok(true);
        }
        let end = self.end + self.pending.len() as u64;
        if end > CAPACITY || self.oversized {
            return Ok(false);
        }
        self.file.write_all_at(&self.pending, self.end)?;
        self.file.sync_data()?;
        self.end = end;
        self.pending.clear();
        Ok(true)
    }

    /// After a checkpoint made every record redundant: the next one starts the file over, in
    /// a new generation.
    pub fn checkpointed(&mut self) {
        self.pending.clear();
        self.oversized = false;
        self.end = 0;
        self.generation = self.generation.wrapping_add(1);
    }
}

/// The current records of a journal's bytes, for the log with `epoch`, and their generation
/// (0 when none): what [`Journal::open`] reads back.
pub fn read(bytes: &[u8], epoch: &str) -> (u64, Vec<Record>) {
    read_records(bytes, crc32fast::hash(epoch.as_bytes()))
}

/// The current records of a journal's bytes and their generation (0 when none).
fn read_records(bytes: &[u8], epoch_crc: u32) -> (u64, Vec<Record>) {
    let mut records: Vec<Record> = Vec::new();
    let mut generation = None;
    let mut rest = bytes;
    while let Some((record_generation, record, after)) = read_record(rest, epoch_crc) {
        if generation.is_some_and(|g| g != record_generation) {
            break;
        }
        if records
            .last()
            .is_some_and(|previous: &Record| previous.next_seq() != record.first_seq)
        {
            break;
        }
        generation = Some(record_generation);
        records.push(record);
        rest = after;
    }
    (generation.unwrap_or(0), records)
}

/// The record at the start of `bytes` and what follows it, or `None` when none is there whole.
fn read_record(bytes: &[u8], epoch_crc: u32) -> Option<(u64, Record, &[u8])> {
    let header = bytes.get(..HEADER_LEN)?;
    if header[..4] != MAGIC {
        return None;
    }
    let crc = u32::from_be_bytes(header[4..8].try_into().ok()?);
    let generation = u64::from_be_bytes(header[8..16].try_into().ok()?);
    let record_epoch = u32::from_be_bytes(header[16..20].try_into().ok()?);
    let first_seq = u64::from_be_bytes(header[20..28].try_into().ok()?);
    let count = u32::from_be_bytes(header[28..32].try_into().ok()?);
    let body_len = u32::from_be_bytes(header[32..36].try_into().ok()?) as usize;
    let body = bytes.get(HEADER_LEN..HEADER_LEN.checked_add(body_len)?)?;
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&header[8..]);
    hasher.update(body);
    if hasher.finalize() != crc || record_epoch != epoch_crc {
        return None;
    }
    let record = Record {
        first_seq,
        count,
        body: body.to_vec(),
    };
    Some((generation, record, &bytes[HEADER_LEN + body_len..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reopen(dir: &Path, epoch: &str) -> Vec<Record> {
        Journal::open(dir, epoch).expect("open").1
    }

    fn first_seqs(records: &[Record]) -> Vec<u64> {
        records.iter().map(|r| r.first_seq).collect()
    }

    #[test]
    fn committed_records_read_back_in_order_with_their_bodies() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut journal, found) = Journal::open(dir.path(), "e").expect("open");
        assert!(found.is_empty());
        journal.stage(1, 2, b"two events");
        journal.stage(3, 1, b"one");
        assert!(journal.commit().expect("commit"));
        assert_eq!(
            reopen(dir.path(), "e"),
            vec![
                Record {
                    first_seq: 1,
                    count: 2,
                    body: b"two events".to_vec(),
                },
                Record {
                    first_seq: 3,
                    count: 1,
                    body: b"one".to_vec(),
                },
            ]
        );
    }

    #[test]
    fn staged_records_that_were_never_committed_are_not_read_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut journal, _) = Journal::open(dir.path(), "e").expect("open");
        journal.stage(1, 1, b"x");
        drop(journal);
        assert!(reopen(dir.path(), "e").is_empty());
    }

    #[test]
    fn records_taken_back_after_a_mark_are_not_written() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut journal, _) = Journal::open(dir.path(), "e").expect("open");
        journal.stage(1, 1, b"kept");
        let mark = journal.staged();
        journal.stage(2, 1, b"taken back");
        journal.unstage(mark);
        journal.stage(2, 1, b"written instead");
        assert!(journal.commit().expect("commit"));
        let found = reopen(dir.path(), "e");
        assert_eq!(first_seqs(&found), [1, 2]);
        assert_eq!(found[1].body, b"written instead");
    }

    #[test]
    fn records_from_before_a_checkpoint_are_not_read_after_the_next_record() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut journal, _) = Journal::open(dir.path(), "e").expect("open");
        journal.stage(1, 1, b"a long first record");
        journal.stage(2, 1, b"second");
        journal.commit().expect("commit");
        journal.checkpointed();
        journal.stage(3, 1, b"3");
        journal.commit().expect("commit");
        assert_eq!(first_seqs(&reopen(dir.path(), "e")), [3]);
    }

    #[test]
    fn a_journal_reopened_writes_a_new_generation_over_the_old_records() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut journal, _) = Journal::open(dir.path(), "e").expect("open");
        journal.stage(1, 1, b"first run, a longer record");
        journal.stage(2, 1, b"2");
        journal.commit().expect("commit");
        drop(journal);
        let (mut journal, found) = Journal::open(dir.path(), "e").expect("open");
        assert_eq!(found.len(), 2);
        journal.checkpointed();
        journal.stage(5, 1, b"5");
        journal.commit().expect("commit");
        assert_eq!(first_seqs(&reopen(dir.path(), "e")), [5]);
    }

    #[test]
    fn a_record_not_continuing_the_previous_ones_seqs_ends_what_is_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut journal, _) = Journal::open(dir.path(), "e").expect("open");
        journal.stage(1, 2, b"1 and 2");
        journal.stage(4, 1, b"4");
        journal.commit().expect("commit");
        assert_eq!(first_seqs(&reopen(dir.path(), "e")), [1]);
    }

    #[test]
    fn a_torn_or_corrupt_record_ends_what_is_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut journal, _) = Journal::open(dir.path(), "e").expect("open");
        journal.stage(1, 1, b"a");
        journal.stage(2, 1, b"b");
        journal.commit().expect("commit");
        let path = journal.path().to_path_buf();
        drop(journal);
        let mut bytes = std::fs::read(&path).expect("read");
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&path, &bytes).expect("write");
        assert_eq!(reopen(dir.path(), "e").len(), 1);
        bytes.truncate(HEADER_LEN - 3);
        std::fs::write(&path, &bytes).expect("write");
        assert!(reopen(dir.path(), "e").is_empty());
    }

    #[test]
    fn a_journal_written_for_another_epoch_is_ignored() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut journal, _) = Journal::open(dir.path(), "one").expect("open");
        journal.stage(1, 1, b"x");
        journal.commit().expect("commit");
        assert!(reopen(dir.path(), "two").is_empty());
    }

    #[test]
    fn records_that_would_pass_the_capacity_are_left_to_a_checkpoint() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut journal, _) = Journal::open(dir.path(), "e").expect("open");
        journal.stage(1, 1, &vec![b'x'; CAPACITY as usize]);
        assert!(!journal.commit().expect("commit"));
        journal.checkpointed();
        journal.stage(2, 1, b"x");
        assert!(journal.commit().expect("commit"));
        assert_eq!(reopen(dir.path(), "e").len(), 1);
    }
}
