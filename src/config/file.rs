//! The config file: one flat TOML table whose keys are the flag names in snake case, read into
//! the same shape as the flags so the two merge key by key. Every error names its key and line.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::ValueEnum;
use toml::de::{DeTable, DeValue};

use super::units::{parse_duration, parse_size};
use super::{ConfigError, ServeArgs};

/// Sets the key an entry names in the flags' shape; false if herald has no such key. The key
/// table provides it, so this file knows the format and not the keys.
pub(super) type ReadKey = fn(&mut ServeArgs, &FileEntry<'_>) -> Result<bool, ConfigError>;

/// Reads a config file into the same shape as the flags, so the two merge field by field.
pub(super) fn read_file(path: &Path, read_key: ReadKey) -> Result<ServeArgs, ConfigError> {
    let text = fs::read_to_string(path).map_err(|cause| ConfigError::ReadFile {
        path: path.to_owned(),
        cause,
    })?;
    parse_file(path, &text, read_key)
}

pub(super) fn parse_file(
    path: &Path,
    text: &str,
    read_key: ReadKey,
) -> Result<ServeArgs, ConfigError> {
    // DeTable keeps the span of every key and value, so each error can name its key and line.
    let table = DeTable::parse(text).map_err(|error| ConfigError::Syntax {
        path: path.to_owned(),
        line: line_of(text, error.span().map_or(0, |span| span.start)),
        message: error.message().trim().to_owned(),
    })?;
    let mut out = ServeArgs::default();
    for (key, value) in table.get_ref() {
        let entry = FileEntry {
            path,
            key: key.get_ref(),
            line: line_of(text, value.span().start),
            value: value.get_ref(),
        };
        if !read_key(&mut out, &entry)? {
            return Err(ConfigError::UnknownKey {
                path: path.to_owned(),
                line: line_of(text, key.span().start),
                key: entry.key.to_owned(),
            });
        }
    }
    Ok(out)
}

/// The 1-based line holding byte `offset` of `text`.
fn line_of(text: &str, offset: usize) -> usize {
    text.bytes().take(offset).filter(|&b| b == b'\n').count() + 1
}

/// One `key = value` of a config file, with what is needed to report an error in it.
pub(super) struct FileEntry<'a> {
    path: &'a Path,
    pub(super) key: &'a str,
    line: usize,
    value: &'a DeValue<'a>,
}

impl<'a> FileEntry<'a> {
    fn bad(&self, reason: String) -> ConfigError {
        ConfigError::BadValue {
            path: self.path.to_owned(),
            line: self.line,
            key: self.key.to_owned(),
            reason,
        }
    }

    fn wrong_type(&self, expected: &str) -> ConfigError {
        self.bad(format!(
            "expected {expected}, found {}",
            self.value.type_str()
        ))
    }

    pub(super) fn text(&self) -> Result<String, ConfigError> {
        self.string().map(str::to_owned)
    }

    pub(super) fn path(&self) -> Result<PathBuf, ConfigError> {
        self.string().map(PathBuf::from)
    }

    fn string(&self) -> Result<&'a str, ConfigError> {
        self.value
            .as_str()
            .ok_or_else(|| self.wrong_type("a string"))
    }

    /// A list of strings; a single string counts as a list of one.
    pub(super) fn strings(&self) -> Result<Vec<String>, ConfigError> {
        if let Some(text) = self.value.as_str() {
            return Ok(vec![text.to_owned()]);
        }
        let Some(array) = self.value.as_array() else {
            return Err(self.wrong_type("a list of strings such as [\"herald.example.org\"]"));
        };
        array
            .iter()
            .map(|item| {
                let item = item.get_ref();
                item.as_str().map(str::to_owned).ok_or_else(|| {
                    self.bad(format!(
                        "expected a list of strings, found a {} in it",
                        item.type_str()
                    ))
                })
            })
            .collect()
    }

    pub(super) fn boolean(&self) -> Result<bool, ConfigError> {
        self.value
            .as_bool()
            .ok_or_else(|| self.wrong_type("true or false"))
    }

    pub(super) fn integer<T: TryFrom<u64>>(&self) -> Result<T, ConfigError> {
        let Some(integer) = self.value.as_integer() else {
            return Err(self.wrong_type("a whole number"));
        };
        u64::from_str_radix(integer.as_str(), integer.radix())
            .ok()
            .and_then(|n| T::try_from(n).ok())
            .ok_or_else(|| self.bad(format!("{} is not a usable whole number", integer.as_str())))
    }

    pub(super) fn parsed<T: std::str::FromStr>(&self, expected: &str) -> Result<T, ConfigError> {
        let text = self.string()?;
        text.parse()
            .map_err(|_| self.bad(format!("{text:?} is not {expected}")))
    }

    pub(super) fn choice<T: ValueEnum>(&self) -> Result<T, ConfigError> {
        let text = self.string()?;
        T::from_str(text, false).map_err(|_| {
            let names: Vec<String> = T::value_variants()
                .iter()
                .filter_map(|v| v.to_possible_value())
                .map(|v| v.get_name().to_owned())
                .collect();
            self.bad(format!("{text:?} is not one of: {}", names.join(", ")))
        })
    }

    pub(super) fn size(&self) -> Result<u64, ConfigError> {
        if self.value.as_integer().is_some() {
            return self.integer();
        }
        match self.value.as_str() {
            Some(text) => parse_size(text).map_err(|reason| self.bad(reason)),
            None => Err(self.wrong_type("a size such as 65536 or \"64KiB\"")),
        }
    }

    pub(super) fn duration(&self) -> Result<Duration, ConfigError> {
        match self.value.as_str() {
            Some(text) => parse_duration(text).map_err(|reason| self.bad(reason)),
            None => Err(self.wrong_type("a duration string such as \"30s\"")),
        }
    }
}
