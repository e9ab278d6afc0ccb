//! What a test makes for itself: names no other test uses, a config file of its own.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use tempfile::TempDir;

/// A name no other test in this process uses (types, keys, users, roles).
pub fn unique(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    format!("{prefix}{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// A `herald.toml` in a temporary directory, removed with it when dropped.
pub struct ConfigFile {
    dir: TempDir,
    path: PathBuf,
}

impl ConfigFile {
    /// A config file holding `contents`.
    pub fn new(contents: &str) -> ConfigFile {
        let dir = tempfile::tempdir().expect("a directory for the config file");
        let path = dir.path().join("herald.toml");
        let file = ConfigFile { dir, path };
        file.write(contents);
        file
    }

    /// Replaces the file's contents (before a SIGHUP, or the next `check-config`).
    pub fn write(&self, contents: &str) {
        std::fs::write(&self.path, contents)
            .unwrap_or_else(|e| panic!("write {}: {e}", self.path.display()));
    }

    /// Where the file is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The path as a command-line argument.
    pub fn arg(&self) -> String {
        self.path.display().to_string()
    }

    /// `["--config", PATH]`, for [`Options::args`](super::Options).
    pub fn flag(&self) -> Vec<String> {
        vec!["--config".to_string(), self.arg()]
    }
}
