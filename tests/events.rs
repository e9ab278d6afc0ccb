//! `docs/protocol.md` §3.3 and §3.4: the event shape, publishing rules, and delivery order.

mod common;

use std::thread;
use std::time::{Duration, SystemTime};

use common::{
    ADMIN, Auth, Client, Server, assert_drp_error, event, herald_seq, top_level_keys, unique,
};
use serde_json::{Value, json};

const EVENT_FIELDS: [&str; 8] = [
    "Time",
    "Type",
    "Action",
    "Key",
    "Principal",
    "Object",
    "Original",
    "Seq",
];

/// An admin connection registered on `<kind>.*.*`.
fn watching(kind: &str) -> Client {
    let server = Server::shared();
    let mut client = server.ws(&server.admin());
    client.register(&format!("{kind}.*.*"));
    client
}

/// Publishes a sentinel of `kind` and asserts that nothing else arrived before it.
fn assert_nothing_else_delivered(client: &mut Client, kind: &str) {
    let sentinel = Server::shared().publish(event(kind, "sentinel", "end"));
    let seen = client.events_through(sentinel);
    assert_eq!(seen.len(), 1, "nothing but the sentinel: {seen:?}");
}

/// True when `time` is RFC 3339 in UTC with at most nine fractional digits.
fn is_rfc3339_utc(time: &str) -> bool {
    let Some(body) = time.strip_suffix('Z') else {
        return false;
    };
    let (seconds, fraction) = body.split_once('.').unwrap_or((body, "1"));
    seconds.len() == 19
        && (1..=9).contains(&fraction.len())
        && fraction.bytes().all(|b| b.is_ascii_digit())
        && humantime::parse_rfc3339(time).is_ok()
}

#[test]
fn events_carry_the_eight_fields_in_order() {
    let server = Server::shared();
    let kind = unique("shape");
    let mut client = watching(&kind);
    let seq = server.publish(json!({"Type": kind, "Action": "save", "Key": "k",
        "Object": {"Name": "k", "Params": {"a": 1}}, "Original": {"Name": "k"}}));
    let text = client.next_text(common::REPLY_TIMEOUT).expect("the event");
    assert_eq!(top_level_keys(&text), EVENT_FIELDS, "{text}");
    let received: Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(received["Type"], kind.as_str());
    assert_eq!(received["Action"], "save");
    assert_eq!(received["Key"], "k");
    assert_eq!(received["Object"], json!({"Name": "k", "Params": {"a": 1}}));
    assert_eq!(received["Original"], json!({"Name": "k"}));
    assert_eq!(received["Seq"], seq);
}

#[test]
fn object_and_original_are_null_when_absent() {
    let server = Server::shared();
    let kind = unique("nulls");
    let mut client = watching(&kind);
    let seq = server.publish(event(&kind, "delete", "k"));
    let text = client.next_text(common::REPLY_TIMEOUT).expect("the event");
    assert_eq!(top_level_keys(&text), EVENT_FIELDS, "{text}");
    let received: Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(received["Object"], Value::Null, "{text}");
    assert_eq!(received["Original"], Value::Null, "{text}");
    assert_eq!(received["Seq"], seq);
}

#[test]
fn time_is_kept_when_the_publisher_gives_it() {
    let server = Server::shared();
    let kind = unique("timekept");
    let mut client = watching(&kind);
    let time = "2026-11-27T20:17:47.123456789Z";
    server.publish(json!({"Time": time, "Type": kind, "Action": "save", "Key": "k"}));
    assert_eq!(client.expect_event()["Time"], time);
}

#[test]
fn time_is_set_to_the_publish_time_when_absent() {
    let server = Server::shared();
    let kind = unique("timeset");
    let mut client = watching(&kind);
    let before = SystemTime::now();
    server.publish(event(&kind, "save", "k"));
    let received = client.expect_event();
    let time = received["Time"].as_str().expect("Time is a string");
    assert!(is_rfc3339_utc(time), "Time {time:?} is not RFC 3339 UTC");
    let stamped = humantime::parse_rfc3339(time).expect("parses");
    let slack = Duration::from_secs(60);
    assert!(
        stamped + slack >= before && stamped <= SystemTime::now() + slack,
        "Time {time} is not the time of publishing"
    );
}

#[test]
fn principal_is_the_publishers_whatever_it_sent() {
    let server = Server::shared();
    let kind = unique("principal");
    let mut client = watching(&kind);
    let mut forged = event(&kind, "save", "k");
    forged["Principal"] = json!("user:mallory");
    server.publish(forged.clone());
    assert_eq!(client.expect_event()["Principal"], format!("user:{ADMIN}"));

    let name = unique("publisher");
    server.create_user(&name, "publisher-pw", &["superuser"]);
    server.publish_as(&Auth::basic(&name, "publisher-pw"), forged);
    let received = client.expect_event();
    assert_eq!(received["Principal"], format!("user:{name}"), "{received}");
}

#[test]
fn publish_answers_204_with_the_seq_that_is_delivered() {
    let server = Server::shared();
    let kind = unique("seq204");
    let mut client = watching(&kind);
    let reply = server.post_events(&server.admin(), &event(&kind, "save", "k").to_string());
    assert_eq!(reply.status, 204, "{reply:?}");
    assert!(reply.body.is_empty(), "204 has no body: {reply:?}");
    let seq = herald_seq(&reply);
    assert_eq!(client.expect_event()["Seq"], seq);
}

#[test]
fn seq_increases_across_publishes() {
    let server = Server::shared();
    let kind = unique("increasing");
    let seqs: Vec<u64> = (0..5)
        .map(|i| server.publish(event(&kind, "save", &format!("k{i}"))))
        .collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "Herald-Seq must increase: {seqs:?}"
    );
}

#[test]
fn posting_an_array_stores_every_event_in_order_and_answers_the_last_seq() {
    let server = Server::shared();
    let kind = unique("array");
    let mut client = watching(&kind);
    let body = json!([
        event(&kind, "create", "one"),
        event(&kind, "update", "two"),
        event(&kind, "delete", "three"),
    ]);
    let reply = server.post_events(&server.admin(), &body.to_string());
    assert_eq!(reply.status, 204, "{reply:?}");
    let last = herald_seq(&reply);
    let seen = client.events_through(last);
    let keys: Vec<&str> = seen.iter().filter_map(|e| e["Key"].as_str()).collect();
    assert_eq!(keys, ["one", "two", "three"]);
}

#[test]
fn posting_an_array_with_one_invalid_element_is_400_and_delivers_none() {
    let server = Server::shared();
    let kind = unique("allornothing");
    let mut client = watching(&kind);
    let body = json!([
        event(&kind, "create", "valid"),
        event(&kind, "bad.action", "invalid"),
        event(&kind, "create", "also-valid"),
    ]);
    let reply = server.post_events(&server.admin(), &body.to_string());
    assert_drp_error(&reply, 400);
    assert_nothing_else_delivered(&mut client, &kind);
}

#[test]
fn invalid_type_or_action_is_400_and_nothing_is_delivered() {
    let server = Server::shared();
    let kind = unique("invalid");
    let mut client = watching(&kind);
    let long = "x".repeat(65);
    let bad_values = ["", "a.b", "a,b", "a*", "*", "a b", "a\tb", "a\nb", &long];
    for bad in bad_values {
        let reply = server.post_events(&server.admin(), &event(&kind, bad, "k").to_string());
        assert_eq!(
            reply.status, 400,
            "Action {bad:?} must be refused: {reply:?}"
        );
        assert_drp_error(&reply, 400);
        let reply = server.post_events(&server.admin(), &event(bad, "save", "k").to_string());
        assert_eq!(reply.status, 400, "Type {bad:?} must be refused: {reply:?}");
    }
    for not_a_string in [json!(5), json!(null), json!(["a"]), json!({"a": 1})] {
        let mut body = event(&kind, "save", "k");
        body["Action"] = not_a_string.clone();
        let reply = server.post_events(&server.admin(), &body.to_string());
        assert_eq!(reply.status, 400, "Action {not_a_string} must be refused");
        if not_a_string.is_null() {
            // A null Key reads as an empty one, as in DRP's Go decoding; only its type is checked.
            continue;
        }
        let mut body = event(&kind, "save", "k");
        body["Key"] = not_a_string.clone();
        let reply = server.post_events(&server.admin(), &body.to_string());
        assert_eq!(reply.status, 400, "Key {not_a_string} must be refused");
    }
    for missing in ["Type", "Action"] {
        let mut body = event(&kind, "save", "k");
        body.as_object_mut().map(|o| o.remove(missing));
        let reply = server.post_events(&server.admin(), &body.to_string());
        assert_drp_error(&reply, 400);
    }
    assert_nothing_else_delivered(&mut client, &kind);
}

#[test]
fn type_and_action_of_64_bytes_are_accepted() {
    let server = Server::shared();
    let long = "y".repeat(64);
    server.publish(event(&long, &long, "k"));
}

#[test]
fn key_over_1024_bytes_is_400_and_1024_bytes_are_accepted() {
    let server = Server::shared();
    let kind = unique("keylen");
    let mut client = watching(&kind);
    let reply = server.post_events(
        &server.admin(),
        &event(&kind, "save", &"k".repeat(1025)).to_string(),
    );
    assert_drp_error(&reply, 400);
    let seq = server.publish(event(&kind, "save", &"k".repeat(1024)));
    let seen = client.events_through(seq);
    assert_eq!(seen.len(), 1, "only the 1024-byte key: {seen:?}");
}

#[test]
fn body_that_is_not_json_or_not_an_event_is_400() {
    let server = Server::shared();
    for body in ["not json", "{\"Type\":", "42", "\"text\"", "[1, 2]"] {
        let reply = server.post_events(&server.admin(), body);
        assert_drp_error(&reply, 400);
    }
    server.assert_serving();
}

#[test]
fn events_arrive_in_seq_order_across_several_publishers() {
    let kind = unique("order");
    let mut client = watching(&kind);
    let publishers: Vec<_> = (0..3)
        .map(|p| {
            let kind = kind.clone();
            thread::spawn(move || {
                (0..30)
                    .map(|i| Server::shared().publish(event(&kind, "save", &format!("p{p}-{i}"))))
                    .max()
                    .unwrap_or_default()
            })
        })
        .collect();
    let last = publishers
        .into_iter()
        .map(|p| p.join().expect("publisher"))
        .max()
        .unwrap_or_default();
    let seen = client.events_through(last);
    let seqs: Vec<u64> = seen.iter().filter_map(|e| e["Seq"].as_u64()).collect();
    assert_eq!(seqs.len(), 90, "every event exactly once: {seqs:?}");
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "events out of Seq order or duplicated: {seqs:?}"
    );
}
