//! Entry points for the coverage-guided fuzz targets in `fuzz/`, one per parser.
//!
//! Each takes arbitrary bytes, runs them through the same code the server runs on untrusted
//! input, and panics only when an invariant breaks (a panic is what the fuzzer reports), so
//! every check here is a property herald relies on. Each answers whether herald accepted the
//! input, which `tests/fuzz_seeds.rs` checks against the names of the committed seeds.

use std::path::Path;

use serde_json::Value;

use crate::config;
use crate::objects::Kind;
use crate::objects::store::{apply_patch, decode, encode, prepare};
use crate::store::journal;
use crate::store::log::Chunk;
use crate::wire::command::{self, Command};
use crate::wire::event::{self, EncodedEvent};
use crate::wire::filter::{Filter, FilterIndex};
use crate::wire::http::{self, ChunkedDecoder, Head};
use crate::wire::websocket::{FrameReader, Message, ProtocolError};

/// The size of the pieces that input is fed in, from the first byte (1–64 bytes).
fn split_piece_size(data: &[u8]) -> (usize, &[u8]) {
    match data.split_first() {
        Some((first, rest)) => (usize::from(first % 64) + 1, rest),
        None => (1, data),
    }
}

/// An HTTP request head: whatever the bytes, a clear answer and no panic; a complete head reads
/// the same from any longer buffer, and every accessor a route uses works on it. Accepted: a
/// complete head whose path routes can split.
pub fn http_head(data: &[u8]) -> bool {
    const MAX_HEADER_BYTES: usize = 4096;
    let Ok(Head::Complete { head, len }) = http::parse_head(data, MAX_HEADER_BYTES) else {
        return false;
    };
    assert!(len <= data.len() && len <= MAX_HEADER_BYTES);
    match http::parse_head(data.get(..len).unwrap_or_default(), MAX_HEADER_BYTES) {
        Ok(Head::Complete {
            head: again,
            len: again_len,
        }) => {
            assert_eq!((&again, again_len), (&head, len));
        }
        other => panic!("the head alone parsed as {other:?}"),
    }
    let _ = head.path();
    let _ = head.raw_query();
    let _ = head.query("token");
    let _ = head.websocket_refusal();
    let _ = head.header_str("authorization");
    head.path_segments().is_ok()
}

/// A chunked body fed in pieces decodes exactly as it does in one piece.
pub fn chunked_body(data: &[u8]) -> bool {
    const MAX_BODY: usize = 1 << 16;
    let (piece, data) = split_piece_size(data);
    let mut whole = ChunkedDecoder::new();
    let mut whole_out = Vec::new();
    let whole_result = whole.decode(data, &mut whole_out, MAX_BODY);

    let mut decoder = ChunkedDecoder::new();
    let mut out = Vec::new();
    let mut pending: Vec<u8> = Vec::new();
    let mut result = Ok(false);
    let mut consumed_total = 0;
    for bytes in data.chunks(piece) {
        pending.extend_from_slice(bytes);
        match decoder.decode(&pending, &mut out, MAX_BODY) {
            Ok(progress) => {
                assert!(progress.consumed <= pending.len());
                consumed_total += progress.consumed;
                pending.drain(..progress.consumed);
                result = Ok(progress.done);
                if progress.done {
                    break;
                }
            }
            Err(error) => {
                result = Err(error);
                break;
            }
        }
    }
    assert!(out.len() <= MAX_BODY);
    let accepted = matches!(whole_result, Ok(progress) if progress.done);
    match (whole_result, result) {
        (Ok(whole), Ok(done)) => {
            assert_eq!(whole.done, done);
            if done {
                assert_eq!(whole.consumed, consumed_total);
                assert_eq!(whole_out, out);
            } else {
                // Unfinished: the one-piece decoder got at least as far.
                assert!(whole_out.starts_with(&out) || out.starts_with(&whole_out));
            }
        }
        (Err(whole), Err(error)) => assert_eq!(whole, error),
        (whole, pieces) => panic!("one piece gave {whole:?}, pieces gave {pieces:?}"),
    }
    accepted
}

/// The messages of a websocket stream, and the error that ends it, as a [`FrameReader`] sees
/// them when the bytes arrive in pieces of `piece` bytes.
fn read_frames(
    data: &[u8],
    piece: usize,
    max_message_bytes: usize,
) -> (Vec<Message>, Option<ProtocolError>) {
    let mut reader = FrameReader::new(max_message_bytes);
    let mut buf = Vec::new();
    let mut messages = Vec::new();
    for bytes in data.chunks(piece) {
        buf.extend_from_slice(bytes);
        loop {
            match reader.next_message(&mut buf) {
                Ok(Some(message)) => messages.push(message),
                Ok(None) => break,
                Err(error) => return (messages, Some(error)),
            }
        }
    }
    (messages, None)
}

/// Client frames give the same messages, and fail with the same error, however the bytes are
/// split across reads; text is always whole UTF-8 within the limit.
pub fn websocket_frames(data: &[u8]) -> bool {
    const MAX_MESSAGE_BYTES: usize = 4096;
    let (piece, data) = split_piece_size(data);
    let whole = read_frames(data, data.len().max(1), MAX_MESSAGE_BYTES);
    let pieces = read_frames(data, piece, MAX_MESSAGE_BYTES);
    assert_eq!(whole, pieces);
    for message in &pieces.0 {
        match message {
            Message::Text(text) => assert!(text.len() <= MAX_MESSAGE_BYTES),
            Message::Binary { len } => assert!(*len <= MAX_MESSAGE_BYTES),
            Message::Ping(payload) | Message::Pong(payload) => assert!(payload.len() <= 125),
            Message::Close(_) => {}
        }
    }
    pieces.1.is_none() && !pieces.0.is_empty()
}

/// A command frame: parsed or refused, and the error Key always a prefix of the text.
pub fn command(data: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(data) else {
        return false;
    };
    let key = command::error_key(text);
    assert!(text.trim().starts_with(key) && key.len() <= 256);
    match command::parse(text) {
        Ok((Command::Register(filter) | Command::Deregister(filter), argument)) => {
            assert_eq!(filter.text(), argument);
            true
        }
        Ok(_) => true,
        Err(_) => false,
    }
}

/// A filter: parsed or refused; a parsed filter goes in and out of the index cleanly, and the
/// index offers it every event it matches.
pub fn filter(data: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(data) else {
        return false;
    };
    let Ok(parsed) = Filter::parse(text) else {
        return false;
    };
    let mut index = FilterIndex::new();
    index.insert(7, &parsed);
    assert_eq!(index.entries(), parsed.entry_count());
    // Events made of the filter's own words, so that some of them match.
    let mut fields = text.splitn(3, '.');
    let mut words = || -> Vec<&str> {
        let field = fields.next().unwrap_or_default();
        field.split(',').take(8).chain(["", "x"]).collect()
    };
    let (types, actions, keys) = (words(), words(), words());
    for ty in &types {
        for action in &actions {
            for key in &keys {
                let mut offered = false;
                index.for_each_candidate(ty, action, key, |ids| offered |= ids.contains(&7));
                if parsed.matches(ty, action, key) {
                    assert!(
                        offered,
                        "{text:?} matches {ty:?}.{action:?}.{key:?} unoffered"
                    );
                }
            }
        }
    }
    index.remove(7, &parsed);
    assert!(index.is_empty());
    true
}

/// A publish body: refused, or events whose stored form reads back with the same fields.
pub fn publish_body(data: &[u8]) -> bool {
    let mut body = data.to_vec();
    let Ok(events) = event::parse_publish(&mut body, "fuzz") else {
        return false;
    };
    assert!(!events.is_empty());
    for (seq, event) in (1u64..).zip(&events) {
        let encoded = EncodedEvent::new(event, &event.body_prefix(), seq);
        let stored = EncodedEvent::from_stored(seq, encoded.json())
            .expect("a published event reads back from its stored form");
        assert_eq!(
            (&stored.ty, &stored.action, &stored.key),
            (&encoded.ty, &encoded.action, &encoded.key)
        );
        let value: Value =
            serde_json::from_slice(encoded.json()).expect("a stored event is valid JSON");
        assert_eq!(
            value.get("Key").and_then(Value::as_str),
            Some(event.key.as_str())
        );
    }
    true
}

/// A JSON Patch applied to a stored object (the input is `[object, patch, kind]` as JSON):
/// refused with an error, or an object of the kind, under the same key, that stores and reads
/// back unchanged.
pub fn json_patch(data: &[u8]) -> bool {
    let Ok((original, patch, kind)) = serde_json::from_slice::<(Value, Value, u8)>(data) else {
        return false;
    };
    let Ok(patch) = serde_json::from_value::<json_patch::Patch>(patch) else {
        return false;
    };
    let kind = Kind::ALL[usize::from(kind) % Kind::ALL.len()];
    // The object as a create would have stored it; the patch route then names it by its key.
    let Ok((path_key, original)) = prepare(kind, None, original, None, "fuzz") else {
        return false;
    };
    let Ok(patched) = apply_patch(&original, &patch.0) else {
        return false;
    };
    let Ok((key, object)) = prepare(kind, Some(&path_key), patched, Some(&original), "fuzz") else {
        return false;
    };
    assert_eq!(key, path_key, "a patch cannot change the key");
    let stored = encode(&object);
    let read = decode(kind, key.as_bytes(), &stored).expect("a stored object reads back");
    assert_eq!(read, object);
    true
}

/// A TOML config file: a [`config::Config`] or an error naming what is wrong, never a panic.
pub fn config_file(data: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(data) else {
        return false;
    };
    let Ok(mut args) = config::parse_file(Path::new("herald.toml"), text) else {
        return false;
    };
    // The fuzzer must not make herald read arbitrary files of the machine it runs on.
    args.admin_password_file = None;
    config::resolve(args).is_ok()
}

/// A stored log chunk (the key's `Seq` in the first 8 bytes, then the value): refused as
/// corrupt, or records in consecutive `Seq` order that lie inside the value.
pub fn log_chunk(data: &[u8]) -> bool {
    let Some((first, value)) = data.split_first_chunk::<8>() else {
        return false;
    };
    let first = u64::from_be_bytes(*first);
    let Ok(chunk) = Chunk::decode(first, value) else {
        return false;
    };
    let mut expected = first;
    let mut record_bytes = 0usize;
    for record in chunk.records() {
        let Ok((seq, json)) = record else {
            return false;
        };
        assert_eq!(seq, expected);
        expected = expected.saturating_add(1);
        record_bytes += 4 + json.len();
        assert!(record_bytes <= value.len());
        let _ = EncodedEvent::from_stored(seq, json);
    }
    true
}

/// A journal file as the log finds it at open: whatever the bytes, no panic; the records read
/// continue each other's `Seq`s and fit in the bytes, and the bytes of exactly those records
/// read back the same. Accepted: at least one record (for the epoch `fuzz`).
pub fn journal(data: &[u8]) -> bool {
    let (generation, records) = journal::read(data, "fuzz");
    for pair in records.windows(2) {
        assert_eq!(
            pair[1].first_seq,
            pair[0].first_seq.saturating_add(u64::from(pair[0].count))
        );
    }
    let used: usize = records
        .iter()
        .map(|record| journal::HEADER_LEN + record.body.len())
        .sum();
    assert!(used <= data.len());
    let (again_generation, again) = journal::read(data.get(..used).unwrap_or_default(), "fuzz");
    assert_eq!((again_generation, &again), (generation, &records));
    !records.is_empty()
}
