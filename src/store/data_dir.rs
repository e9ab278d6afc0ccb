//! The data directory's own files beside the database: a lock that keeps a second herald out,
//! and a marker that remembers which log the directory held, so a lost database is noticed
//! instead of silently replaced by a new, empty one.
//!
//! Layout (both files mode 0600):
//! - [`LOCK_FILE`]: held with `flock(LOCK_EX)` for the server's whole life (the kernel drops it
//!   when the process ends, however it ends); holds the holder's pid as text, for the message
//!   a second herald gives.
//! - [`EPOCH_MARKER_FILE`]: the Epoch of the event log the database holds, as text and a
//!   newline; written (through a temporary file and a rename) on every start whose log has
//!   another Epoch than the marker names.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use thiserror::Error;

/// Name of the lock file in the data directory.
pub const LOCK_FILE: &str = "lock";
/// Name of the file that names the Epoch of the log the database holds.
pub const EPOCH_MARKER_FILE: &str = "log-epoch";

/// Why the data directory cannot be used.
#[derive(Debug, Error)]
pub enum DataDirError {
    /// Another process holds the data directory's lock.
    #[error(
        "the data directory {} is in use by another herald{}; stop that one, or give this one another --data-dir",
        dir.display(),
        holder.map(|pid| format!(" (pid {pid})")).unwrap_or_default()
    )]
    InUse {
        /// The data directory.
        dir: PathBuf,
        /// The pid the lock file names, when it names one.
        holder: Option<u32>,
    },
    /// The lock file or the marker could not be read or written.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What was being done, e.g. "lock".
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// Why it failed.
        source: io::Error,
    },
    /// The marker names a log, but the database holds none: it was emptied, deleted or replaced.
    #[error(
        "the data directory {} held an event log (Epoch {epoch}), but its database {} is empty or missing; restore the data directory from a backup, or start once with `herald serve --reset` to begin a new, empty log (clients then see a new Epoch)",
        dir.display(),
        db.display()
    )]
    LogMissing {
        /// The data directory.
        dir: PathBuf,
        /// The database directory inside it.
        db: PathBuf,
        /// The Epoch the marker names.
        epoch: String,
    },
}

/// The data directory's lock, held until this value is dropped (or the process ends).
#[derive(Debug)]
pub struct DirLock {
    _file: File,
}

/// Takes the data directory's lock without waiting, and records this process's pid in it.
pub fn lock(dir: &Path) -> Result<DirLock, DataDirError> {
    let path = dir.join(LOCK_FILE);
    let failed = |action| {
        let path = path.clone();
        move |source| DataDirError::Io {
            action,
            path,
            source,
        }
    };
    let mut file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(failed("open"))?;
    // SAFETY: flock(2) takes a descriptor and flags and touches no memory; `file` owns the
    // descriptor for the whole call.
    let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if locked != 0 {
        let error = io::Error::last_os_error();
        if error.kind() == io::ErrorKind::WouldBlock {
            let mut text = String::new();
            let holder = file
                .read_to_string(&mut text)
                .ok()
                .and_then(|_| text.trim().parse().ok());
            return Err(DataDirError::InUse {
                dir: dir.to_owned(),
                holder,
            });
        }
        return Err(failed("lock")(error));
    }
    file.set_len(0).map_err(failed("write"))?;
    file.write_all(format!("{}\n", std::process::id()).as_bytes())
        .map_err(failed("write"))?;
    Ok(DirLock { _file: file })
}

/// The Epoch the marker names, or `None` when there is no marker (a new data directory, or
/// one written by a herald that kept none).
pub fn read_epoch_marker(dir: &Path) -> Result<Option<String>, DataDirError> {
    let path = dir.join(EPOCH_MARKER_FILE);
    match fs::read_to_string(&path) {
        Ok(text) => {
            let epoch = text.trim();
            Ok((!epoch.is_empty()).then(|| epoch.to_owned()))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(DataDirError::Io {
            action: "read",
            path,
            source,
        }),
    }
}

/// Records `epoch` as the log the database holds; durable when this returns.
pub fn write_epoch_marker(dir: &Path, epoch: &str) -> Result<(), DataDirError> {
    let path = dir.join(EPOCH_MARKER_FILE);
    let temp = dir.join(format!("{EPOCH_MARKER_FILE}.tmp"));
    let failed = |path: &Path| {
        let path = path.to_owned();
        move |source| DataDirError::Io {
            action: "write",
            path,
            source,
        }
    };
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temp)
        .map_err(failed(&temp))?;
    file.write_all(format!("{epoch}\n").as_bytes())
        .map_err(failed(&temp))?;
    file.sync_all().map_err(failed(&temp))?;
    fs::rename(&temp, &path).map_err(failed(&path))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(failed(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_directory_is_refused_naming_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let held = lock(dir.path()).unwrap();
        match lock(dir.path()) {
            Err(DataDirError::InUse { dir: named, holder }) => {
                assert_eq!(named, dir.path());
                assert_eq!(holder, Some(std::process::id()));
            }
            other => panic!("expected the directory to be in use, got {other:?}"),
        }
        drop(held);
        lock(dir.path()).unwrap();
    }

    #[test]
    fn the_marker_round_trips_and_is_absent_at_first() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_epoch_marker(dir.path()).unwrap(), None);
        write_epoch_marker(dir.path(), "e1").unwrap();
        assert_eq!(
            read_epoch_marker(dir.path()).unwrap().as_deref(),
            Some("e1")
        );
        write_epoch_marker(dir.path(), "e2").unwrap();
        assert_eq!(
            read_epoch_marker(dir.path()).unwrap().as_deref(),
            Some("e2")
        );
        assert!(!dir.path().join("log-epoch.tmp").exists());
    }
}
