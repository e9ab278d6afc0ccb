//! A cluster node's record of which write of the cluster's stream each replicated thing (an
//! object, a user, a role) holds: the `Seq` of its newest applied write, of its newest write
//! in the stream (refused ones included), and the writes refused. Objects and accounts share
//! it, so a write to either is checked the same way, on every node alike.
//!
//! On-disk layout, in tree [`crate::store::db::OBJECT_SEQS_TREE`]:
//! - `<type>/<key>` = u64 big-endian: the `Seq` of the write the thing holds;
//! - `\x01last/<type>/<key>` = u64 big-endian: the `Seq` of its newest write in the stream;
//! - `\x00refused/<seq u64 big-endian>` = empty: the write at that `Seq` was refused.

/// What to do with a write read from the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The write was planned on the thing's newest write: apply it, then call
    /// [`Versions::applied`].
    Apply,
    /// Another write came first: the write is refused (and recorded so).
    Refuse,
    /// The write was read before (a copy reading again after a crash): whether it applied.
    Seen(bool),
}

/// The `Seq`s of the things a cluster node's copy holds; cheap to clone.
#[derive(Clone)]
pub(crate) struct Versions {
    seqs: sled::Tree,
}

impl Versions {
    /// The record in `db`.
    pub(crate) fn open(db: &sled::Db) -> Result<Versions, sled::Error> {
        Ok(Versions {
            seqs: crate::store::db::object_seqs_tree(db)?,
        })
    }

    /// The `Seq` of the write the thing `ty`/`key` holds (0 when none did).
    pub(crate) fn seq_of(&self, ty: &str, key: &str) -> Result<u64, sled::Error> {
        self.stored(&seq_key(ty, key))
    }

    /// The `Seq` of the thing's newest write in the stream, refused ones included: what
    /// JetStream compares a conditional write with.
    pub(crate) fn last_write_of(&self, ty: &str, key: &str) -> Result<u64, sled::Error> {
        self.stored(&last_write_key(ty, key))
    }

    fn stored(&self, key: &[u8]) -> Result<u64, sled::Error> {
        Ok(self
            .seqs
            .get(key)?
            .and_then(|bytes| <[u8; 8]>::try_from(bytes.as_ref()).ok())
            .map_or(0, u64::from_be_bytes))
    }

    /// Decides on the write at `seq` to `ty`/`key`, planned on the thing's write `base`: it
    /// applies only if `base` is still the thing's newest write and the write is `sound`
    /// (readable); else it is refused, on every node alike.
    pub(crate) fn admit(
        &self,
        ty: &str,
        key: &str,
        seq: u64,
        base: Option<u64>,
        sound: bool,
    ) -> Result<Verdict, sled::Error> {
        let newest = self.seq_of(ty, key)?;
        if newest >= seq {
            return Ok(Verdict::Seen(newest == seq || !self.was_refused(seq)?));
        }
        if self.last_write_of(ty, key)? < seq {
            self.seqs
                .insert(last_write_key(ty, key), &seq.to_be_bytes())?;
        }
        if !sound || base != Some(newest) {
            self.seqs.insert(refusal_key(seq), &[])?;
            return Ok(Verdict::Refuse);
        }
        Ok(Verdict::Apply)
    }

    /// Records that the thing now holds the write at `seq`.
    pub(crate) fn applied(&self, ty: &str, key: &str, seq: u64) -> Result<(), sled::Error> {
        self.seqs.insert(seq_key(ty, key), &seq.to_be_bytes())?;
        Ok(())
    }

    /// Whether the write at `seq` was refused. Recorded before the copy stores the write's
    /// place, so a write read again after a crash gets the same answer.
    pub(crate) fn was_refused(&self, seq: u64) -> Result<bool, sled::Error> {
        self.seqs.contains_key(refusal_key(seq))
    }
}

/// The key of a thing's `Seq`.
fn seq_key(ty: &str, key: &str) -> Vec<u8> {
    format!("{ty}/{key}").into_bytes()
}

/// The key of the `Seq` of the thing's newest write in the stream, refused ones included: a
/// byte 1 first, which no type name starts with.
fn last_write_key(ty: &str, key: &str) -> Vec<u8> {
    format!("\u{1}last/{ty}/{key}").into_bytes()
}

/// The key recording that the write at `seq` was refused: a zero byte first, which no type
/// name starts with.
fn refusal_key(seq: u64) -> Vec<u8> {
    let mut key = b"\0refused/".to_vec();
    key.extend_from_slice(&seq.to_be_bytes());
    key
}
