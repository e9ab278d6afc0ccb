//! The benchmark's events: one JSON shape for both servers, with a fixed-width mark inside the
//! `Object` that carries the phase and the send time, so receivers find it with one substring
//! search and publishers patch it in place instead of formatting each event.

use std::sync::OnceLock;
use std::time::Instant;

use memchr::memmem::Finder;

/// Added to nanoseconds since the process started so every send time has the same 16 digits
/// (JSON numbers cannot be zero-padded; the mark is a string, but fixed width keeps it patchable).
const TIME_OFFSET_NS: u64 = 1_000_000_000_000_000;
/// Digits of a send time.
const TIME_DIGITS: usize = 16;
/// The mark's opening, searched for in every received payload.
pub(crate) const MARK: &[u8] = b"\"Mark\":\"P";
/// Key length: every key is a hyphenated UUID.
pub(crate) const KEY_BYTES: usize = 36;

/// Nanoseconds on the process's monotonic clock, offset to a fixed width.
pub(crate) fn now_ns() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    let start = START.get_or_init(Instant::now);
    TIME_OFFSET_NS + start.elapsed().as_nanos() as u64
}

/// What a receiver reads from an event's mark.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Mark {
    /// The measurement phase the event was sent in.
    pub phase: usize,
    /// When it was sent, as [`now_ns`] gave it.
    pub sent_ns: u64,
}

/// Finds marks in received payloads; one per client thread, the searcher is precompiled.
pub(crate) struct MarkReader {
    finder: Finder<'static>,
}

impl MarkReader {
    /// A reader for [`MARK`].
    pub(crate) fn new() -> MarkReader {
        MarkReader {
            finder: Finder::new(MARK),
        }
    }

    /// The mark in `payload`, if it is one of the benchmark's events.
    pub(crate) fn read(&self, payload: &[u8]) -> Option<Mark> {
        let at = self.finder.find(payload)? + MARK.len();
        let phase_digit = *payload.get(at)?;
        let digits = payload.get(at + 2..at + 2 + TIME_DIGITS)?;
        let mut sent_ns = 0u64;
        for &d in digits {
            if !d.is_ascii_digit() {
                return None;
            }
            sent_ns = sent_ns * 10 + u64::from(d - b'0');
        }
        Some(Mark {
            phase: usize::from(phase_digit.checked_sub(b'0')?),
            sent_ns,
        })
    }
}

/// One event's JSON with the offsets of the fields patched per send.
#[derive(Clone)]
pub(crate) struct EventTemplate {
    /// `{"Type":"machines","Action":"update","Key":"…","Object":{"Mark":"…","Pad":"…"}}`
    pub json: Vec<u8>,
    key_at: usize,
    phase_at: usize,
    time_at: usize,
}

/// The type of every benchmark event; subjects and filters are `machines.<action>.<uuid>`.
pub(crate) const TYPE: &str = "machines";
/// The action of every benchmark event.
pub(crate) const ACTION: &str = "update";

impl EventTemplate {
    /// An event whose JSON is `bytes` long (or as short as the fixed fields allow).
    pub(crate) fn new(bytes: usize) -> EventTemplate {
        let key = "00000000-0000-0000-0000-000000000000";
        let head = format!(r#"{{"Type":"{TYPE}","Action":"{ACTION}","Key":""#);
        let key_at = head.len();
        let mut json = head.into_bytes();
        json.extend_from_slice(key.as_bytes());
        json.extend_from_slice(br#"","Object":{"Mark":"P"#);
        let phase_at = json.len();
        json.extend_from_slice(b"0T");
        let time_at = json.len();
        json.extend_from_slice(&[b'0'; TIME_DIGITS]);
        json.extend_from_slice(br#"","Pad":""#);
        let tail = br#""}}"#;
        let pad = bytes.saturating_sub(json.len() + tail.len());
        json.resize(json.len() + pad, b'x');
        json.extend_from_slice(tail);
        EventTemplate {
            json,
            key_at,
            phase_at,
            time_at,
        }
    }

    /// Writes the key, phase and send time into a copy of this template inside `out`, where the
    /// copy starts at `at`.
    pub(crate) fn patch(
        &self,
        out: &mut [u8],
        at: usize,
        key: &[u8; KEY_BYTES],
        phase: usize,
        sent_ns: u64,
    ) {
        out[at + self.key_at..at + self.key_at + KEY_BYTES].copy_from_slice(key);
        out[at + self.phase_at] = b'0' + (phase % 10) as u8;
        let mut n = sent_ns;
        for slot in out[at + self.time_at..at + self.time_at + TIME_DIGITS]
            .iter_mut()
            .rev()
        {
            *slot = b'0' + (n % 10) as u8;
            n /= 10;
        }
    }
}

/// A key as the fixed-width bytes the template takes.
pub(crate) fn key_bytes(uuid: &uuid::Uuid) -> [u8; KEY_BYTES] {
    let mut out = [0u8; KEY_BYTES];
    uuid.hyphenated().encode_lower(&mut out);
    out
}

/// The `Seq` at the end of a herald event (`…,"Seq":123}`).
pub(crate) fn herald_seq(payload: &[u8]) -> Option<u64> {
    let tail = &payload[payload.len().saturating_sub(32)..];
    let at = memchr::memmem::rfind(tail, b"\"Seq\":")? + 6;
    let mut seq = 0u64;
    let mut any = false;
    for &d in &tail[at..] {
        if !d.is_ascii_digit() {
            break;
        }
        seq = seq * 10 + u64::from(d - b'0');
        any = true;
    }
    any.then_some(seq)
}
