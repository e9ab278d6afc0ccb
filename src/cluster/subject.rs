//! Where an event goes in the cluster's stream: its subject, and its payload with `"Seq":0` that
//! every node completes with the stream sequence.

use std::fmt::Write as _;

/// How every payload ends: the event's JSON with a `Seq` that the stream sequence replaces.
const SEQ_PLACEHOLDER: &[u8] = b"\"Seq\":0}";

/// The subject prefix of cluster `name`'s events.
pub(crate) fn event_prefix(name: &str) -> String {
    format!("{name}.events")
}

/// The subject prefix of cluster `name`'s object writes.
pub(crate) fn object_prefix(name: &str) -> String {
    format!("{name}.objects")
}

/// The subject prefix of cluster `name`'s account writes (users and roles).
pub(crate) fn account_prefix(name: &str) -> String {
    format!("{name}.accounts")
}

/// The subject of cluster `name`'s token secret, outside the event stream's subjects: the
/// secret has a stream of its own.
pub(crate) fn secret_subject(name: &str) -> String {
    format!("{name}.secret")
}

/// Whether writes of `ty` are account writes (users and roles), not object writes.
pub(crate) fn is_account(ty: &str) -> bool {
    ty == "users" || ty == "roles"
}

/// The subject prefix of the connection events herald writes itself in cluster `name`: no
/// client's publish reaches a subject under it.
pub(crate) fn connection_prefix(name: &str) -> String {
    format!("{name}.herald")
}

/// The subject of an event of `ty`, `action` and `key` in the stream under `prefix`
/// (`<cluster>.events`): `<prefix>.<type>.<action>.<key>`, each part escaped to one token.
pub(crate) fn event_subject(prefix: &str, ty: &str, action: &str, key: &str) -> String {
    let mut subject = String::with_capacity(prefix.len() + ty.len() + action.len() + key.len() + 8);
    subject.push_str(prefix);
    for part in [ty, action, key] {
        subject.push('.');
        push_token(&mut subject, part);
    }
    subject
}

/// The subject of every event that writes object `key` of type `ty`, under `prefix`
/// (`<cluster>.objects`): one subject per object, so that a write can be made conditional on
/// the object's newest event.
pub(crate) fn object_subject(prefix: &str, ty: &str, key: &str) -> String {
    let mut subject = String::with_capacity(prefix.len() + ty.len() + key.len() + 4);
    subject.push_str(prefix);
    for part in [ty, key] {
        subject.push('.');
        push_token(&mut subject, part);
    }
    subject
}

/// Appends `text` as one subject token: every byte outside `[A-Za-z0-9_-]` as `%XX`, so dots,
/// wildcards, spaces and any other byte of a DRP key stay inside it; the empty text is `%`.
fn push_token(out: &mut String, text: &str) {
    if text.is_empty() {
        out.push('%');
        return;
    }
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-' {
            out.push(char::from(byte));
        } else {
            // Writing to a String cannot fail.
            let _ = write!(out, "%{byte:02X}");
        }
    }
}

/// The payload of an event whose JSON up to `"Seq":` is `prefix`.
pub(crate) fn payload(prefix: &[u8]) -> Vec<u8> {
    let mut payload = Vec::with_capacity(prefix.len() + 2);
    payload.extend_from_slice(prefix);
    payload.extend_from_slice(b"0}");
    payload
}

/// The event's JSON with `seq` in place of the payload's `0`; `None` for a payload herald did
/// not write.
pub(crate) fn with_seq(payload: &[u8], seq: u64) -> Option<Vec<u8>> {
    let body = payload.strip_suffix(b"0}")?;
    if !payload.ends_with(SEQ_PLACEHOLDER) || !payload.starts_with(b"{") {
        return None;
    }
    let mut json = Vec::with_capacity(payload.len() + 20);
    json.extend_from_slice(body);
    json.extend_from_slice(seq.to_string().as_bytes());
    json.push(b'}');
    Some(json)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_names_stay_readable_in_the_subject() {
        assert_eq!(
            event_subject("herald.events", "machines", "update", "m-1_a"),
            "herald.events.machines.update.m-1_a"
        );
    }

    #[test]
    fn dots_wildcards_spaces_and_other_bytes_are_escaped_inside_one_token() {
        let subject = event_subject("h.events", "profiles", "save", "a.b *>\u{e9}%");
        assert_eq!(subject, "h.events.profiles.save.a%2Eb%20%2A%3E%C3%A9%25");
        assert_eq!(subject.split('.').count(), 5);
    }

    #[test]
    fn the_empty_key_is_a_token_no_other_key_escapes_to() {
        assert_eq!(event_subject("h.events", "t", "a", ""), "h.events.t.a.%");
        assert_ne!(event_subject("h.events", "t", "a", "%"), "h.events.t.a.%");
    }

    #[test]
    fn a_payload_gets_the_stream_sequence_in_place_of_its_zero() {
        let payload = payload(br#"{"Type":"t","Seq":"#);
        assert_eq!(payload, br#"{"Type":"t","Seq":0}"#);
        assert_eq!(
            with_seq(&payload, 42).as_deref(),
            Some(&br#"{"Type":"t","Seq":42}"#[..])
        );
    }

    #[test]
    fn a_payload_herald_did_not_write_is_refused() {
        assert_eq!(with_seq(b"hello", 1), None);
        assert_eq!(with_seq(br#"{"Seq":10}"#, 1), None);
        assert_eq!(with_seq(b"", 1), None);
    }
}
