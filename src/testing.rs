//! Helpers for the unit tests.

use std::path::Path;
use std::time::{Duration, Instant};

/// Opens a sled db at `path`, waiting (bounded) while the background flusher of a handle the
/// test just dropped still holds the directory's lock.
pub(crate) fn open_sled(path: &Path) -> sled::Db {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match sled::open(path) {
            Ok(db) => return db,
            Err(sled::Error::Io(e)) if e.to_string().contains("could not acquire lock") => {
                assert!(
                    Instant::now() < deadline,
                    "sled's lock was never released: {e}"
                );
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("open sled at {}: {e}", path.display()),
        }
    }
}
