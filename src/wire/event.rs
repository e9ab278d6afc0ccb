//! Events: validation of what publishers send, and the frame encoded once for every receiver.
//!
//! An event is turned into JSON in two steps: the publishing core renders everything but `Seq`
//! ([`Event::body_prefix`]), and the sequencer, once it has assigned `Seq`, closes the JSON and
//! wraps it in a complete websocket text frame ([`EncodedEvent`]) that every core and every
//! connection shares unchanged.

use std::time::SystemTime;

use simd_json::BorrowedValue;
use simd_json::prelude::*;
use thiserror::Error;
use time::format_description::well_known::Rfc3339;

use crate::wire::websocket::{self, OpCode};

/// Longest `Type` or `Action` a publisher may use, in bytes.
pub const MAX_TYPE_ACTION_BYTES: usize = 64;
/// Longest `Key` a publisher may use, in bytes.
pub const MAX_KEY_BYTES: usize = 1024;
/// The principal of what herald does by itself: objects it creates, its log events.
pub const SYSTEM_PRINCIPAL: &str = "system:herald";

/// Why a published body was refused; every variant is a 400 naming what was wrong.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum EventError {
    /// The body is not JSON at all.
    #[error("body is not valid JSON: {0}")]
    NotJson(String),
    /// The body is JSON but neither an event object nor an array of them.
    #[error("body must be an event object or an array of event objects")]
    NotAnEvent,
    /// An array with no events in it.
    #[error("the array holds no events")]
    Empty,
    /// One element of the body is invalid; nothing of the request is stored.
    #[error("event {index}: {reason}")]
    Invalid {
        /// Position of the event in the array (0 for a single event).
        index: usize,
        /// What was wrong with it.
        reason: String,
    },
}

/// A validated event, not yet sequenced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// RFC 3339 time in UTC: the publisher's, or the time of publishing.
    pub time: String,
    /// The object type, e.g. `machines`.
    pub ty: String,
    /// What happened, e.g. `update`.
    pub action: String,
    /// The object's key; may contain dots.
    pub key: String,
    /// Who published it (always set by the server).
    pub principal: String,
    /// Compact JSON of the object, `null` when empty.
    pub object: String,
    /// Compact JSON of the previous object, `null` when empty.
    pub original: String,
}

/// The current time in DRP's RFC 3339 form with nanoseconds.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_nanos(SystemTime::now()).to_string()
}

/// Go's zero `time.Time` (`0001-01-01T00:00:00Z`) in Unix nanoseconds: what Go clients such as
/// drpcli send for a time they never set.
const GO_ZERO_TIME_NANOS: i128 = -62_135_596_800 * 1_000_000_000;

/// A publisher's `Time` in UTC, in RFC 3339 with as many fraction digits as it needs (Go's
/// `RFC3339Nano`); `None` for Go's zero time, which stands for "not given".
pub fn utc_time(text: &str) -> Result<Option<String>, String> {
    let invalid = || format!("Time {text:?} is not an RFC 3339 time such as 2026-11-27T20:17:47Z");
    let parsed = time::OffsetDateTime::parse(text, &Rfc3339).map_err(|_| invalid())?;
    if parsed.unix_timestamp_nanos() == GO_ZERO_TIME_NANOS {
        return Ok(None);
    }
    parsed
        .checked_to_offset(time::UtcOffset::UTC)
        .and_then(|utc| utc.format(&Rfc3339).ok())
        .map(Some)
        .ok_or_else(|| format!("Time {text:?} falls outside the years 0000 to 9999 in UTC"))
}

/// Checks a `Type` or `Action` name.
pub fn check_type_action(field: &str, value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err(format!("{field} is empty"));
    }
    if value.len() > MAX_TYPE_ACTION_BYTES {
        return Err(format!(
            "{field} is longer than {MAX_TYPE_ACTION_BYTES} bytes"
        ));
    }
    if let Some(c) = value
        .chars()
        .find(|c| matches!(c, '.' | ',' | '*') || c.is_whitespace())
    {
        return Err(format!(
            "{field} {value:?} contains {c:?}, which filters reserve"
        ));
    }
    Ok(())
}

impl Event {
    /// An event created by herald itself (object changes, connection events).
    pub fn new(ty: &str, action: &str, key: &str, principal: &str) -> Event {
        Event {
            time: now_rfc3339(),
            ty: ty.to_owned(),
            action: action.to_owned(),
            key: key.to_owned(),
            principal: principal.to_owned(),
            object: "null".to_owned(),
            original: "null".to_owned(),
        }
    }

    /// Sets `Object` from any serializable value.
    pub fn with_object<T: serde::Serialize>(mut self, object: &T) -> Event {
        self.object = serde_json::to_string(object).unwrap_or_else(|_| "null".to_owned());
        self
    }

    /// Sets `Original` from any serializable value.
    pub fn with_original<T: serde::Serialize>(mut self, original: &T) -> Event {
        self.original = serde_json::to_string(original).unwrap_or_else(|_| "null".to_owned());
        self
    }

    /// The event's JSON up to and including `"Seq":`, fields in DRP's order.
    pub fn body_prefix(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            96 + self.time.len()
                + self.ty.len()
                + self.action.len()
                + self.key.len()
                + self.principal.len()
                + self.object.len()
                + self.original.len(),
        );
        out.extend_from_slice(b"{\"Time\":");
        push_json_string(&mut out, &self.time);
        out.extend_from_slice(b",\"Type\":");
        push_json_string(&mut out, &self.ty);
        out.extend_from_slice(b",\"Action\":");
        push_json_string(&mut out, &self.action);
        out.extend_from_slice(b",\"Key\":");
        push_json_string(&mut out, &self.key);
        out.extend_from_slice(b",\"Principal\":");
        push_json_string(&mut out, &self.principal);
        out.extend_from_slice(b",\"Object\":");
        out.extend_from_slice(self.object.as_bytes());
        out.extend_from_slice(b",\"Original\":");
        out.extend_from_slice(self.original.as_bytes());
        out.extend_from_slice(b",\"Seq\":");
        out
    }
}

/// Appends `s` as a JSON string literal.
pub fn push_json_string(out: &mut Vec<u8>, s: &str) {
    // Writing into a Vec cannot fail, and a &str always serializes.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// Parses and validates a publish body (one event object, or an array of them: all or nothing).
/// `Principal` is always `principal`; a given `Time` is stored in UTC, and an absent one or Go's
/// zero time becomes the receive time.
pub fn parse_publish(body: &mut [u8], principal: &str) -> Result<Vec<Event>, EventError> {
    let value =
        simd_json::to_borrowed_value(body).map_err(|e| EventError::NotJson(e.to_string()))?;
    let now = now_rfc3339();
    match &value {
        BorrowedValue::Array(items) => {
            if items.is_empty() {
                return Err(EventError::Empty);
            }
            items
                .iter()
                .enumerate()
                .map(|(index, item)| {
                    event_from_value(item, principal, &now)
                        .map_err(|reason| EventError::Invalid { index, reason })
                })
                .collect()
        }
        BorrowedValue::Object(_) => event_from_value(&value, principal, &now)
            .map(|event| vec![event])
            .map_err(|reason| EventError::Invalid { index: 0, reason }),
        _ => Err(EventError::NotAnEvent),
    }
}

fn event_from_value(value: &BorrowedValue, principal: &str, now: &str) -> Result<Event, String> {
    let object = value.as_object().ok_or("an event must be a JSON object")?;
    let string_field = |name: &str| -> Result<Option<&str>, String> {
        match object.get(name) {
            None => Ok(None),
            Some(v) if v.is_null() => Ok(None),
            Some(v) => v
                .as_str()
                .map(Some)
                .ok_or_else(|| format!("{name} must be a string")),
        }
    };
    let ty = string_field("Type")?.ok_or("Type is missing")?;
    check_type_action("Type", ty)?;
    let action = string_field("Action")?.ok_or("Action is missing")?;
    check_type_action("Action", action)?;
    let key = string_field("Key")?.unwrap_or("");
    if key.len() > MAX_KEY_BYTES {
        return Err(format!("Key is longer than {MAX_KEY_BYTES} bytes"));
    }
    let time = match string_field("Time")? {
        Some(t) => utc_time(t)?.unwrap_or_else(|| now.to_owned()),
        None => now.to_owned(),
    };
    let raw = |name: &str| match object.get(name) {
        None => "null".to_owned(),
        Some(v) => v.encode(),
    };
    Ok(Event {
        time,
        ty: ty.to_owned(),
        action: action.to_owned(),
        key: key.to_owned(),
        principal: principal.to_owned(),
        object: raw("Object"),
        original: raw("Original"),
    })
}

/// A sequenced event as every receiver gets it: a complete websocket text frame, built once.
#[derive(Debug)]
pub struct EncodedEvent {
    /// Position in the log.
    pub seq: u64,
    /// The event's type, for matching.
    pub ty: Box<str>,
    /// The event's action, for matching.
    pub action: Box<str>,
    /// The event's key, for matching.
    pub key: Box<str>,
    frame: Box<[u8]>,
    payload_start: usize,
}

impl EncodedEvent {
    /// Closes the JSON with `seq` and frames it.
    pub fn new(event: &Event, prefix: &[u8], seq: u64) -> EncodedEvent {
        let mut digits = itoa_buf(seq);
        let payload_len = prefix.len() + digits.len() + 1;
        let mut frame = Vec::with_capacity(payload_len + 10);
        websocket::write_frame_header(&mut frame, OpCode::Text, payload_len);
        let payload_start = frame.len();
        frame.extend_from_slice(prefix);
        frame.append(&mut digits);
        frame.push(b'}');
        EncodedEvent {
            seq,
            ty: event.ty.as_str().into(),
            action: event.action.as_str().into(),
            key: event.key.as_str().into(),
            frame: frame.into_boxed_slice(),
            payload_start,
        }
    }

    /// Rebuilds the shared frame of an event read back from the log.
    pub fn from_stored(seq: u64, json: &[u8]) -> Option<EncodedEvent> {
        // Replays read every stored event once per replaying client: the fixed field order
        // herald writes lets matching read three strings instead of parsing the whole event.
        let (ty, action, key) = match leading_fields(json) {
            Some(fields) => fields,
            None => {
                let mut copy = json.to_vec();
                let value = simd_json::to_borrowed_value(&mut copy).ok()?;
                let field = |name: &str| {
                    value
                        .get(name)
                        .and_then(|v| v.as_str())
                        .map(Box::<str>::from)
                };
                (field("Type")?, field("Action")?, field("Key")?)
            }
        };
        let mut frame = Vec::with_capacity(json.len() + 10);
        websocket::write_frame_header(&mut frame, OpCode::Text, json.len());
        let payload_start = frame.len();
        frame.extend_from_slice(json);
        Some(EncodedEvent {
            seq,
            ty,
            action,
            key,
            frame: frame.into_boxed_slice(),
            payload_start,
        })
    }

    /// The complete websocket frame.
    pub fn frame(&self) -> &[u8] {
        &self.frame
    }

    /// The event's JSON (the frame's payload), as stored in the log.
    pub fn json(&self) -> &[u8] {
        &self.frame[self.payload_start..]
    }
}

/// `Type`, `Action` and `Key` from the start of an event's JSON as [`Event::body_prefix`] writes
/// it; `None` when the layout differs.
fn leading_fields(json: &[u8]) -> Option<(Box<str>, Box<str>, Box<str>)> {
    let (_, rest) = json_string(json.strip_prefix(b"{\"Time\":")?)?;
    let (ty, rest) = json_string(rest.strip_prefix(b",\"Type\":")?)?;
    let (action, rest) = json_string(rest.strip_prefix(b",\"Action\":")?)?;
    let (key, _) = json_string(rest.strip_prefix(b",\"Key\":")?)?;
    Some((ty, action, key))
}

/// The JSON string literal at the start of `input`, decoded, and the bytes after it.
fn json_string(input: &[u8]) -> Option<(Box<str>, &[u8])> {
    if input.first() != Some(&b'"') {
        return None;
    }
    let mut end = 1;
    let mut escaped = false;
    loop {
        match input.get(end)? {
            b'\\' => {
                escaped = true;
                end += 2;
            }
            b'"' => break,
            _ => end += 1,
        }
    }
    let literal = input.get(..=end)?;
    let value: Box<str> = if escaped {
        serde_json::from_slice::<String>(literal).ok()?.into()
    } else {
        std::str::from_utf8(literal.get(1..end)?).ok()?.into()
    };
    Some((value, input.get(end + 1..)?))
}

fn itoa_buf(n: u64) -> Vec<u8> {
    n.to_string().into_bytes()
}

/// The reply frame to a client command (no `Seq`): `{"Type":"websocket","Action":…,"Key":…}`.
pub fn reply_frame(action: &str, key: &str, object: Option<&str>) -> Vec<u8> {
    let event = Event {
        time: now_rfc3339(),
        ty: "websocket".to_owned(),
        action: action.to_owned(),
        key: key.to_owned(),
        principal: String::new(),
        object: object.unwrap_or("null").to_owned(),
        original: "null".to_owned(),
    };
    let mut payload = event.body_prefix();
    // Replies carry no Seq: drop the trailing `,"Seq":` and close the object.
    payload.truncate(payload.len() - ",\"Seq\":".len());
    payload.push(b'}');
    websocket::encode_frame(OpCode::Text, &payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> Result<Vec<Event>, EventError> {
        let mut bytes = body.as_bytes().to_vec();
        parse_publish(&mut bytes, "user:alice")
    }

    #[test]
    fn a_single_event_keeps_its_time_and_takes_the_publishers_principal() {
        let events = parse(
            r#"{"Time":"2026-11-27T20:17:47.123Z","Type":"profiles","Action":"save","Key":"global","Principal":"user:mallory","Object":{"a":1}}"#,
        )
        .unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].time, "2026-11-27T20:17:47.123Z");
        assert_eq!(events[0].principal, "user:alice");
        assert_eq!(events[0].object, r#"{"a":1}"#);
        assert_eq!(events[0].original, "null");
    }

    #[test]
    fn times_with_any_offset_are_stored_in_utc_and_gos_zero_time_means_now() {
        let cases = [
            ("2026-12-05T10:00:00-05:00", "2026-12-05T15:00:00Z"),
            ("2026-12-05T10:00:00.250+01:30", "2026-12-05T08:30:00.25Z"),
            ("2026-12-05t10:00:00z", "2026-12-05T10:00:00Z"),
            (
                "2026-12-31T23:30:00.000000001-01:00",
                "2027-01-01T00:30:00.000000001Z",
            ),
        ];
        for (given, stored) in cases {
            assert_eq!(utc_time(given), Ok(Some(stored.to_owned())), "{given}");
        }
        for zero in ["0001-01-01T00:00:00Z", "0001-01-01T01:00:00+01:00"] {
            assert_eq!(utc_time(zero), Ok(None), "{zero}");
        }
        let before = now_rfc3339();
        let events = parse(r#"{"Time":"0001-01-01T00:00:00Z","Type":"a","Action":"b"}"#).unwrap();
        assert!(
            events[0].time >= before,
            "{} is not the receive time",
            events[0].time
        );
        for bad in [
            "2026-12-05",
            "2026-12-05T10:00:00",
            "2026-13-05T10:00:00Z",
            "yesterday",
            "9999-12-31T23:00:00-05:00",
        ] {
            assert!(utc_time(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn an_array_is_refused_whole_when_one_element_is_invalid() {
        let err = parse(r#"[{"Type":"a","Action":"b","Key":"c"},{"Type":"a.b","Action":"b"}]"#)
            .unwrap_err();
        assert!(
            matches!(err, EventError::Invalid { index: 1, .. }),
            "{err:?}"
        );
    }

    #[test]
    fn names_with_reserved_characters_are_refused() {
        for ty in ["", "a.b", "a,b", "a*", "a b", &"x".repeat(65)] {
            let body = serde_json::json!({"Type": ty, "Action": "x", "Key": "k"}).to_string();
            assert!(parse(&body).is_err(), "{ty:?} accepted");
        }
    }

    #[test]
    fn the_encoded_frame_holds_the_eight_fields_in_order() {
        let event = &parse(r#"{"Type":"machines","Action":"update","Key":"a.b"}"#).unwrap()[0];
        let encoded = EncodedEvent::new(event, &event.body_prefix(), 42);
        let json: serde_json::Value = serde_json::from_slice(encoded.json()).unwrap();
        assert_eq!(json["Seq"], 42);
        let text = std::str::from_utf8(encoded.json()).unwrap();
        let order = [
            "Time",
            "Type",
            "Action",
            "Key",
            "Principal",
            "Object",
            "Original",
            "Seq",
        ];
        let positions: Vec<usize> = order
            .iter()
            .map(|f| text.find(&format!("\"{f}\":")).unwrap())
            .collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "{text}");
        let again = EncodedEvent::from_stored(42, encoded.json()).unwrap();
        assert_eq!(again.frame(), encoded.frame());
        assert_eq!(&*again.key, "a.b");
    }

    #[test]
    fn stored_events_give_back_type_action_and_key_with_escapes_and_in_any_layout() {
        let event =
            &parse(r#"{"Type":"machines","Action":"update","Key":"a\"b\\c\u00e9.d"}"#).unwrap()[0];
        let encoded = EncodedEvent::new(event, &event.body_prefix(), 7);
        let again = EncodedEvent::from_stored(7, encoded.json()).unwrap();
        assert_eq!(
            (&*again.ty, &*again.action, &*again.key),
            ("machines", "update", "a\"b\\c\u{e9}.d")
        );
        // Another field order takes the full parse.
        let reordered = br#"{"Key":"k","Type":"t","Action":"a","Time":"2026-11-27T00:00:00Z"}"#;
        let parsed = EncodedEvent::from_stored(1, reordered).unwrap();
        assert_eq!(
            (&*parsed.ty, &*parsed.action, &*parsed.key),
            ("t", "a", "k")
        );
        for broken in [&b"{\"Time\":\"x"[..], b"{\"Time\":\"x\\", b"", b"{"] {
            assert!(EncodedEvent::from_stored(1, broken).is_none());
        }
    }
}
