//! A cluster node's record of which write of the cluster's stream each replicated thing (an
//! object, a user, a role) holds: the `Seq` of its newest applied write, of its newest write
//! in the stream (refused ones included), and the writes refused. Objects and accounts share
//! it, so a write to either is checked the same way, on every node alike.
//!
//! On-disk layout, in tree [`crate::store::db::OBJECT_SEQS_TREE`]:
//! - `<type>/<key>` = u64 big-endian: the `Seq` of the write the thing holds;
//! - `\x01last/<type>/<key>` = u64 big-endian: the `Seq` of its newest write in the stream;
//! - `\x00refused/<seq u64 big-endian>` = empty: the write at that `Seq` was refused;
//! - `\x02horizon` = u64 big-endian: the first `Seq` the copy read (it knows no write before).
//!
//! A copy made after retention trimmed the stream knows nothing of the writes before its
//! horizon, so its record of a thing last written before then is "none" where an older copy
//! holds that write's `Seq`. Each write therefore carries its writer's horizon, and a check
//! counts every `Seq` below the higher of the two horizons as "none": writer and checker then
//! compare what both know, and every node decides alike.

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

/// What a write was planned on: the `Seq` of the thing's write the writer's copy held (0:
/// none), and the writer's horizon (the first `Seq` its copy read).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Base {
    pub seq: u64,
    pub horizon: u64,
}

impl Base {
    /// Planned on `seq` by a copy that read the whole stream.
    #[cfg(test)]
    pub(crate) fn at(seq: u64) -> Base {
        Base { seq, horizon: 0 }
    }
}

/// The `Seq`s of the things a cluster node's copy holds; cheap to clone.
#[derive(Clone)]
pub(crate) struct Versions {
    seqs: sled::Tree,
    /// The first `Seq` this copy read: it knows no write before it.
    horizon: u64,
}

impl Versions {
    /// The record in `db`.
    pub(crate) fn open(db: &sled::Db) -> Result<Versions, sled::Error> {
        let seqs = crate::store::db::object_seqs_tree(db)?;
        let horizon = seqs
            .get(HORIZON_KEY)?
            .and_then(|bytes| <[u8; 8]>::try_from(bytes.as_ref()).ok())
            .map_or(0, u64::from_be_bytes);
        Ok(Versions { seqs, horizon })
    }

    /// Records that a new copy starts reading the stream at `first`.
    pub(crate) fn start_at(&mut self, first: u64) -> Result<(), sled::Error> {
        self.seqs.insert(HORIZON_KEY, &first.to_be_bytes())?;
        self.horizon = first;
        Ok(())
    }

    /// The first `Seq` this copy read; a write planned here carries it.
    pub(crate) fn horizon(&self) -> u64 {
        self.horizon
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

    /// Decides on the write at `seq` to `ty`/`key`, planned on `base`: it applies only if
    /// `base` is still the thing's newest write, as far as both copies know (see the module's
    /// note on horizons), and the write is `sound` (readable); else it is refused, on every
    /// node alike.
    pub(crate) fn admit(
        &self,
        ty: &str,
        key: &str,
        seq: u64,
        base: Option<Base>,
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
        let planned_on_newest = base.is_some_and(|base| {
            let horizon = base.horizon.max(self.horizon);
            let known = |seq: u64| if seq < horizon { 0 } else { seq };
            known(base.seq) == known(newest)
        });
        if !sound || !planned_on_newest {
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

/// The key of the copy's horizon: a byte 2 first, which no type name starts with.
const HORIZON_KEY: &[u8] = b"\x02horizon";

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

#[cfg(test)]
mod tests {
    use super::*;

    fn copy_starting_at(first: u64) -> (sled::Db, Versions) {
        let db = sled::Config::new()
            .temporary(true)
            .open()
            .unwrap_or_else(|e| panic!("{e}"));
        let mut versions = Versions::open(&db).unwrap_or_else(|e| panic!("{e}"));
        versions.start_at(first).unwrap_or_else(|e| panic!("{e}"));
        (db, versions)
    }

    fn verdict(versions: &Versions, seq: u64, base: Base) -> Verdict {
        versions
            .admit("params", "p", seq, Some(base), true)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn copies_made_before_and_after_retention_trimmed_a_things_write_decide_alike() {
        // The old copy holds the thing's write 5; the new one started at 100, after 5 was trimmed.
        let (_a, old) = copy_starting_at(1);
        let (_b, new) = copy_starting_at(100);
        old.applied("params", "p", 5)
            .unwrap_or_else(|e| panic!("{e}"));
        // Planned on the new copy, which knows no write of the thing: both apply it.
        let from_new = Base {
            seq: 0,
            horizon: 100,
        };
        assert_eq!(verdict(&old, 150, from_new), Verdict::Apply);
        assert_eq!(verdict(&new, 150, from_new), Verdict::Apply);
        old.applied("params", "p", 150)
            .unwrap_or_else(|e| panic!("{e}"));
        new.applied("params", "p", 150)
            .unwrap_or_else(|e| panic!("{e}"));
        // Planned on write 5 by the old copy after 150 was stored: both refuse it.
        let stale = Base { seq: 5, horizon: 1 };
        assert_eq!(verdict(&old, 160, stale), Verdict::Refuse);
        assert_eq!(verdict(&new, 160, stale), Verdict::Refuse);
        // Planned on 150 by either: both apply it.
        assert_eq!(
            verdict(
                &old,
                170,
                Base {
                    seq: 150,
                    horizon: 1
                }
            ),
            Verdict::Apply
        );
        assert_eq!(
            verdict(
                &new,
                170,
                Base {
                    seq: 150,
                    horizon: 1
                }
            ),
            Verdict::Apply
        );
    }

    #[test]
    fn a_write_planned_on_a_trimmed_write_applies_on_a_copy_that_never_saw_it() {
        let (_a, old) = copy_starting_at(1);
        let (_b, new) = copy_starting_at(100);
        old.applied("params", "p", 5)
            .unwrap_or_else(|e| panic!("{e}"));
        let from_old = Base { seq: 5, horizon: 1 };
        assert_eq!(verdict(&old, 150, from_old), Verdict::Apply);
        assert_eq!(verdict(&new, 150, from_old), Verdict::Apply);
        // A copy that read the whole stream still refuses a write planned on nothing.
        assert_eq!(
            verdict(&old, 151, Base { seq: 0, horizon: 1 }),
            Verdict::Refuse
        );
    }
}
