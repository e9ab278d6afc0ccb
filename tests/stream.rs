//! `docs/protocol.md` §3.1: websocket commands, their replies, and RFC 6455 violations.

mod common;

use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;

use common::{Client, RawFrame, RawWs, Server, event, top_level_keys, unique};
use serde_json::Value;

/// The seven DRP fields, in order, that every reply carries (and no `Seq`).
const REPLY_FIELDS: [&str; 7] = [
    "Time",
    "Type",
    "Action",
    "Key",
    "Principal",
    "Object",
    "Original",
];

fn admin_client() -> Client {
    let server = Server::shared();
    server.ws(&server.admin())
}

/// Asserts `reply` is herald's error reply to `key` with a 400 and words.
fn assert_error_reply(reply: &Value, key: &str) {
    assert_eq!(reply["Type"], "websocket", "{reply}");
    assert_eq!(reply["Action"], "error", "{reply}");
    assert_eq!(reply["Key"], key, "{reply}");
    assert_eq!(reply["Object"]["Code"], 400, "{reply}");
    let messages = reply["Object"]["Messages"].as_array();
    assert!(
        messages.is_some_and(
            |m| !m.is_empty() && m.iter().all(|s| s.as_str().is_some_and(|s| !s.is_empty()))
        ),
        "error reply needs Messages in words: {reply}"
    );
    assert!(reply.get("Seq").is_none(), "replies carry no Seq: {reply}");
}

/// Sends `text` and asserts that the very next frame is its error reply.
fn assert_command_fails(client: &mut Client, text: &str, key: &str) {
    client.send_text(text);
    let reply = client.expect_event();
    assert_error_reply(&reply, key);
}

#[test]
fn every_command_is_answered_before_any_event_it_affects() {
    let server = Server::shared();
    let kind = unique("handshake");
    let actions: Vec<String> = (0..5).map(|i| format!("a{i}")).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = {
        let (kind, actions, stop) = (kind.clone(), actions.clone(), Arc::clone(&stop));
        thread::spawn(move || {
            let server = Server::shared();
            while !stop.load(Ordering::Relaxed) {
                for action in &actions {
                    server.publish(event(&kind, action, "k"));
                }
            }
        })
    };

    // The DRP client's handshake: send one command, block until one websocket event, repeat.
    let mut client = admin_client();
    let mut registered: Vec<&str> = Vec::new();
    for action in &actions {
        let filter = format!("{kind}.{action}.*");
        client.send_text(&format!("register {filter}"));
        loop {
            let frame = client.expect_event();
            if frame["Type"] == "websocket" {
                assert_eq!(frame["Action"], "register", "{frame}");
                assert_eq!(frame["Key"], filter, "{frame}");
                break;
            }
            let seen = frame["Action"].as_str().unwrap_or_default();
            assert!(
                registered.contains(&seen),
                "event {frame} arrived before the reply to `register {filter}`"
            );
        }
        registered.push(action);
    }
    for action in &actions {
        let filter = format!("{kind}.{action}.*");
        client.send_text(&format!("deregister {filter}"));
        loop {
            let frame = client.expect_event();
            if frame["Type"] == "websocket" {
                assert_eq!(frame["Action"], "deregister", "{frame}");
                assert_eq!(frame["Key"], filter, "{frame}");
                break;
            }
            let seen = frame["Action"].as_str().unwrap_or_default();
            assert!(registered.contains(&seen), "unexpected event {frame}");
        }
        registered.retain(|a| a != action);
    }
    stop.store(true, Ordering::Relaxed);
    publisher.join().expect("publisher thread");

    // Everything is deregistered: only the sentinel may come, and no stray reply.
    client.register(&format!("{kind}.end.*"));
    let sentinel = server.publish(event(&kind, "end", "k"));
    let rest = client.events_through(sentinel);
    assert_eq!(
        rest.len(),
        1,
        "after deregistering, only the sentinel: {rest:?}"
    );
}

#[test]
fn pipelined_commands_get_one_reply_each_in_order() {
    let mut client = admin_client();
    let commands = [
        ("register pipe.a.b", "register", "pipe.a.b"),
        ("nonsense", "error", "nonsense"),
        ("register pipe.a.b", "register", "pipe.a.b"),
        ("deregister pipe.x.y", "deregister", "pipe.x.y"),
        ("register pipe.a", "error", "register pipe.a"),
        ("deregister pipe.a.b", "deregister", "pipe.a.b"),
        ("register", "error", "register"),
        ("register pipe.c.d", "register", "pipe.c.d"),
    ];
    for (text, _, _) in commands {
        client.send_text(text);
    }
    for (text, action, key) in commands {
        let reply = client.expect_event();
        assert_eq!(reply["Type"], "websocket", "reply to {text:?}: {reply}");
        assert_eq!(reply["Action"], action, "reply to {text:?}: {reply}");
        assert_eq!(reply["Key"], key, "reply to {text:?}: {reply}");
    }
    // No ninth reply: an event for `pipe.c.d` published now is the next frame.
    client.expect_sentinel_first(Server::shared(), event("pipe", "c", "d"));
}

#[test]
fn register_is_idempotent_and_each_event_is_delivered_once() {
    let server = Server::shared();
    let kind = unique("idem");
    let mut client = admin_client();
    let filter = format!("{kind}.*.*");
    client.register(&filter);
    client.register(&filter);
    let first = server.publish(event(&kind, "save", "k1"));
    let sentinel = server.publish(event(&kind, "save", "k2"));
    let seqs: Vec<_> = client
        .events_through(sentinel)
        .iter()
        .map(|e| e["Seq"].as_u64())
        .collect();
    assert_eq!(seqs, [Some(first), Some(sentinel)]);
    // One deregister removes the one filter.
    let reply = client.command(&format!("deregister {filter}"));
    assert_eq!(reply["Action"], "deregister");
    client.register(&format!("{kind}.end.*"));
    server.publish(event(&kind, "save", "k3"));
    let sentinel = server.publish(event(&kind, "end", "k"));
    let seen = client.events_through(sentinel);
    assert_eq!(seen.len(), 1, "{seen:?}");
}

#[test]
fn deregister_stops_delivery() {
    let server = Server::shared();
    let kind = unique("dereg");
    let mut client = admin_client();
    client.register(&format!("{kind}.save.*"));
    let seq = server.publish(event(&kind, "save", "k"));
    assert_eq!(client.events_through(seq).len(), 1);
    let reply = client.command(&format!("deregister {kind}.save.*"));
    assert_eq!(reply["Action"], "deregister", "{reply}");
    assert_eq!(reply["Key"], format!("{kind}.save.*"), "{reply}");
    client.register(&format!("{kind}.end.*"));
    server.publish(event(&kind, "save", "k"));
    let sentinel = server.publish(event(&kind, "end", "k"));
    let seen = client.events_through(sentinel);
    assert_eq!(seen.len(), 1, "deregistered events still arrive: {seen:?}");
}

#[test]
fn deregister_is_acknowledged_even_when_nothing_was_registered() {
    let mut client = admin_client();
    client.send_text("deregister never.registered.here");
    let reply = client.expect_event();
    assert_eq!(reply["Type"], "websocket", "{reply}");
    assert_eq!(reply["Action"], "deregister", "{reply}");
    assert_eq!(reply["Key"], "never.registered.here", "{reply}");
}

#[test]
fn a_sentinel_check_fails_when_an_event_arrives_before_the_sentinel() {
    // The quiet checks above rely on this: an unwanted frame, however late, precedes the sentinel.
    let server = Server::shared();
    let kind = unique("unwanted");
    let mut client = admin_client();
    client.register(&format!("{kind}.*.*"));
    server.publish(event(&kind, "save", "unwanted"));
    let check = panic::catch_unwind(AssertUnwindSafe(|| {
        client.expect_sentinel_first(server, event(&kind, "save", "sentinel"));
    }));
    assert!(
        check.is_err(),
        "the check passed with an event before the sentinel"
    );
}

#[test]
fn nothing_is_delivered_before_the_first_register() {
    let server = Server::shared();
    let kind = unique("early");
    let mut client = admin_client();
    server.publish(event(&kind, "save", "before"));
    client.send_text(&format!("register {kind}.*.*"));
    let reply = client.expect_event();
    assert_eq!(
        reply["Action"], "register",
        "the reply comes first: {reply}"
    );
    // A publish is answered once durable; its fan-out to this core may still be on its way, so
    // the earlier event may follow the reply (the filter now matches it), never precede it.
    let late = client.events_before_sentinel(server, event(&kind, "save", "after"));
    assert!(
        late.iter().all(|e| e["Key"] == "before"),
        "only the earlier event may come between the reply and the sentinel: {late:?}"
    );
}

#[test]
fn replies_go_only_to_the_connection_that_sent_the_command() {
    let server = Server::shared();
    let kind = unique("private");
    let mut watcher = admin_client();
    watcher.register(&format!("{kind}.*.*"));
    let mut other = admin_client();
    other.register(&format!("{kind}.*.*"));
    assert_command_fails(&mut other, "nonsense", "nonsense");
    let sentinel = server.publish(event(&kind, "save", "k"));
    let seen = watcher.events_through(sentinel);
    assert_eq!(
        seen.len(),
        1,
        "another connection's replies leaked: {seen:?}"
    );
}

#[test]
fn success_replies_carry_the_seven_drp_fields_in_order_and_no_seq() {
    let mut client = admin_client();
    client.send_text("register replyshape.*.*");
    let text = client
        .next_text(common::REPLY_TIMEOUT)
        .expect("a reply frame");
    assert_eq!(top_level_keys(&text), REPLY_FIELDS, "{text}");
    let reply: Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(reply["Type"], "websocket");
    assert_eq!(reply["Action"], "register");
    assert_eq!(reply["Key"], "replyshape.*.*");
}

#[test]
fn error_replies_carry_the_seven_drp_fields_in_order() {
    let mut client = admin_client();
    client.send_text("bogus");
    let text = client
        .next_text(common::REPLY_TIMEOUT)
        .expect("a reply frame");
    assert_eq!(top_level_keys(&text), REPLY_FIELDS, "{text}");
}

#[test]
fn reply_key_is_the_argument_kept_verbatim_after_trimming_the_frame() {
    let mut client = admin_client();
    client.send_text("  register verbatim.a.b \t\n");
    assert_eq!(client.expect_event()["Key"], "verbatim.a.b");
    client.send_text("register  verbatim.c.d");
    let reply = client.expect_event();
    assert_eq!(reply["Action"], "register", "{reply}");
    assert_eq!(reply["Key"], " verbatim.c.d", "{reply}");
}

#[test]
fn unknown_verb_gets_an_error_reply() {
    let mut client = admin_client();
    assert_command_fails(&mut client, "subscribe a.b.c", "subscribe a.b.c");
    assert_command_fails(&mut client, "Register a.b.c", "Register a.b.c");
    assert_command_fails(&mut client, "   ", "");
    // The connection stays usable.
    client.register("afterunknown.*.*");
}

#[test]
fn missing_argument_gets_an_error_reply() {
    let mut client = admin_client();
    assert_command_fails(&mut client, "register", "register");
    assert_command_fails(&mut client, "  deregister  ", "deregister");
    client.register("aftermissing.*.*");
}

#[test]
fn filter_with_fewer_than_three_fields_is_an_error_for_register_and_deregister() {
    let mut client = admin_client();
    assert_command_fails(
        &mut client,
        "register machines.create",
        "register machines.create",
    );
    assert_command_fails(&mut client, "register machines", "register machines");
    assert_command_fails(
        &mut client,
        "deregister machines.create",
        "deregister machines.create",
    );
    client.register("afterfields.*.*");
}

#[test]
fn binary_frame_gets_an_error_reply_with_an_empty_key() {
    let mut client = admin_client();
    client.send_binary(b"register a.b.c");
    assert_error_reply(&client.expect_event(), "");
    client.register("afterbinary.*.*");
}

#[test]
fn error_reply_key_is_the_trimmed_frame_cut_to_256_bytes() {
    let mut client = admin_client();
    let frame = format!("bogus {}", "x".repeat(400));
    client.send_text(&format!("  {frame}  "));
    let reply = client.expect_event();
    assert_error_reply(&reply, &frame[..256]);
}

#[test]
fn more_than_1024_filters_is_an_error_reply() {
    let mut client = admin_client();
    let kind = unique("many");
    // Pipelined: 1,024 registers, then their 1,024 replies in order.
    for i in 0..1024 {
        client.send_text(&format!("register {kind}.a.k{i}"));
    }
    for i in 0..1024 {
        let reply = client.expect_event();
        assert_eq!(reply["Action"], "register", "filter {i}: {reply}");
        assert_eq!(reply["Key"], format!("{kind}.a.k{i}"), "{reply}");
    }
    let over = format!("register {kind}.a.k1024");
    assert_command_fails(&mut client, &over, &over);
    // Registering a filter it already holds keeps one filter, so it is not over the limit.
    client.register(&format!("{kind}.a.k7"));
    // Freeing one slot makes room again.
    let reply = client.command(&format!("deregister {kind}.a.k0"));
    assert_eq!(reply["Action"], "deregister");
    client.register(&format!("{kind}.a.k1024"));
}

#[test]
fn command_of_exactly_4_kib_is_answered() {
    let server = Server::shared();
    let mut raw = server.raw_ws();
    let prefix = "register big.a.";
    let frame = format!("{prefix}{}", "k".repeat(4096 - prefix.len()));
    raw.send_text_bytes(frame.as_bytes());
    let reply = raw.expect_event();
    assert_eq!(reply["Action"], "register", "{reply}");
}

#[test]
fn command_over_4_kib_closes_with_1009() {
    let server = Server::shared();
    let mut raw = server.raw_ws();
    raw.send_text_bytes(format!("register big.a.{}", "k".repeat(4096)).as_bytes());
    assert_eq!(raw.expect_close_code(), 1009);
    server.assert_serving();
}

#[test]
fn fragmented_command_over_4_kib_closes_with_1009() {
    let server = Server::shared();
    let mut raw = server.raw_ws();
    let piece = "k".repeat(2000);
    raw.send_frame(0x01, format!("register big.a.{piece}").as_bytes(), true);
    raw.send_frame(0x00, piece.as_bytes(), true);
    raw.send_frame(0x80, piece.as_bytes(), true);
    assert_eq!(raw.expect_close_code(), 1009);
}

#[test]
fn fragmented_command_is_reassembled() {
    let server = Server::shared();
    let mut raw = server.raw_ws();
    raw.send_frame(0x01, b"regis", true);
    raw.send_frame(0x00, b"ter frag", true);
    raw.send_frame(0x80, b".a.b", true);
    let reply = raw.expect_event();
    assert_eq!(reply["Action"], "register", "{reply}");
    assert_eq!(reply["Key"], "frag.a.b", "{reply}");
}

#[test]
fn invalid_utf8_closes_with_1007() {
    let server = Server::shared();
    let mut raw = server.raw_ws();
    raw.send_text_bytes(b"register a.b.\xff\xfe");
    assert_eq!(raw.expect_close_code(), 1007);
}

#[test]
fn invalid_utf8_in_a_first_fragment_closes_with_1007_before_the_last_fragment() {
    let server = Server::shared();
    let mut raw = server.raw_ws();
    // A UTF-16 surrogate encoded as UTF-8 is invalid whatever follows it.
    raw.send_frame(0x01, b"register a.b.\xed\xa0\x80", true);
    assert_eq!(raw.expect_close_code(), 1007);
}

#[test]
fn invalid_utf8_in_part_of_a_frame_closes_with_1007_before_the_rest_arrives() {
    let server = Server::shared();
    let mut raw = server.raw_ws();
    raw.send_frame_start(RawWs::TEXT, 40, b"register a.b.\xf4\x90", true);
    assert_eq!(raw.expect_close_code(), 1007);
}

#[test]
fn a_character_split_across_fragments_is_accepted() {
    let server = Server::shared();
    let mut raw = server.raw_ws();
    let key = "caf\u{e9}.\u{1d11e}";
    let text = format!("register a.b.{key}");
    let (first, rest) = text.as_bytes().split_at(text.len() - 2);
    raw.send_frame(0x01, first, true);
    raw.send_frame(0x80, rest, true);
    let reply = raw.expect_event();
    assert_eq!(reply["Action"], "register", "{reply}");
    assert_eq!(reply["Key"], format!("a.b.{key}"), "{reply}");
}

#[test]
fn unmasked_client_frame_closes_with_1002() {
    let server = Server::shared();
    let mut raw = server.raw_ws();
    raw.send_frame(RawWs::TEXT, b"register a.b.c", false);
    assert_eq!(raw.expect_close_code(), 1002);
}

#[test]
fn reserved_bits_close_with_1002() {
    let server = Server::shared();
    let mut raw = server.raw_ws();
    raw.send_frame(RawWs::TEXT | 0x40, b"register a.b.c", true);
    assert_eq!(raw.expect_close_code(), 1002);
}

#[test]
fn bad_opcode_closes_with_1002() {
    let server = Server::shared();
    let mut raw = server.raw_ws();
    raw.send_frame(0x83, b"register a.b.c", true);
    assert_eq!(raw.expect_close_code(), 1002);
}

#[test]
fn continuation_without_a_first_fragment_closes_with_1002() {
    let server = Server::shared();
    let mut raw = server.raw_ws();
    raw.send_frame(0x80, b"register a.b.c", true);
    assert_eq!(raw.expect_close_code(), 1002);
}

#[test]
fn ping_is_answered_with_pong_and_the_stream_continues() {
    let server = Server::shared();
    let mut raw = server.raw_ws();
    raw.send_frame(0x89, b"are-you-there", true);
    loop {
        match raw.read_frame(common::REPLY_TIMEOUT) {
            Some(RawFrame::Other(0xA)) => break,
            Some(RawFrame::Other(_)) => {}
            other => panic!("expected a pong, got {other:?}"),
        }
    }
    raw.send_text_bytes(b"register pong.a.b");
    assert_eq!(raw.expect_event()["Action"], "register");
}
