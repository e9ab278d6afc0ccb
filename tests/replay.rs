//! `docs/protocol.md` §4: `replay SEQ [EPOCH]` over the websocket, against stored and live events,
//! after retention trimmed the log, with a wrong epoch or a future Seq, bookmarks, and the
//! `batched` durability mode.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::{
    Auth, Client, LOG_TIMEOUT, Options, REPLY_TIMEOUT, Received, Server, event, eventually, seqs,
    unique,
};
use serde_json::{Value, json};

/// Publishers in the replay-under-load tests.
const PUBLISHERS: usize = 3;
/// Events each of those publishers posts, one request per event.
const EVENTS_PER_PUBLISHER: usize = 150;

/// Asserts the shape of a replay reply's `Object` and returns `Recovered`.
fn recovered(object: &Value, epoch: &str) -> bool {
    assert_eq!(object["Epoch"], epoch, "the log's epoch: {object}");
    let first = object["FirstSeq"].as_u64().expect("FirstSeq is a number");
    let last = object["LastSeq"].as_u64().expect("LastSeq is a number");
    assert!(first >= 1 && first <= last + 1, "bounds: {object}");
    object["Recovered"]
        .as_bool()
        .unwrap_or_else(|| panic!("Recovered is a boolean: {object}"))
}

/// `count` events of `kind`, padded so a chunk of the replay spans several log reads.
fn batch_of(kind: &str, prefix: &str, count: usize) -> Vec<Value> {
    (0..count)
        .map(|n| json!({"Type": kind, "Action": "save", "Key": format!("{prefix}{n}")}))
        .collect()
}

#[test]
fn replay_delivers_each_later_visible_matching_event_once_in_order_after_its_reply() {
    let server = Server::shared();
    let (seen_kind, hidden_kind) = (unique("replay-seen"), unique("replay-hidden"));
    let role = unique("replay-role");
    server.create_role(
        &role,
        json!([{"Scope": seen_kind, "Action": "get", "Specific": "*"}]),
    );
    let user = unique("replay-user");
    server.create_user(&user, "replay-pw", &[&role]);
    let auth = Auth::basic(&user, "replay-pw");

    let before = server.publish(event(&seen_kind, "update", "before"));
    let mut expected = Vec::new();
    for n in 0..30 {
        let key = format!("k{n}");
        let (kind, action) = match n % 5 {
            0 => (&seen_kind, "delete"),
            1 => (&hidden_kind, "update"),
            2 => (&seen_kind, "save"),
            _ => (&seen_kind, "update"),
        };
        let seq = server.publish(event(kind, action, &key));
        if kind == &seen_kind && action != "delete" {
            expected.push(seq);
        }
    }
    let last = *expected.last().expect("events were published");

    let filter = format!("{seen_kind},{hidden_kind}.update,save.*");
    let mut client = server.ws(&auth);
    client.register(&filter);
    client.send_text(&format!("replay {before}"));
    let reply = client.expect_event();
    assert_eq!(reply["Type"], "websocket", "the reply comes first: {reply}");
    assert_eq!(reply["Action"], "replay", "{reply}");
    assert_eq!(reply["Key"], before.to_string(), "{reply}");
    let epoch = server.info()["Epoch"].as_str().expect("Epoch").to_owned();
    assert!(recovered(&reply["Object"], &epoch), "{reply}");
    assert!(reply["Object"]["LastSeq"].as_u64() >= Some(last), "{reply}");

    let received = client.ordered_events_through(last, REPLY_TIMEOUT);
    assert_eq!(seqs(&received), expected);
    for e in &received {
        assert_eq!(e["Type"], seen_kind.as_str(), "only visible events: {e}");
    }
    assert_eq!(
        seqs(&server.read_log(&auth, before, Some(&filter))),
        expected,
        "the REST read agrees with the replay"
    );
    // Nothing more, such as an event sent twice: the next frame is an event published now.
    client.expect_sentinel_first(server, event(&seen_kind, "save", "sentinel"));
}

/// Stores events, then replays from before them while `PUBLISHERS` threads publish, and checks
/// that the events after the reply are exactly the log's, each once and in order.
fn replay_while_publishing(server: &Server) {
    let kind = unique("replay-live");
    let start = server.publish(event(&kind, "save", "start"));
    let mut stored = Vec::new();
    for round in 0..6 {
        stored.extend(server.publish_batch(&batch_of(&kind, &format!("stored{round}-"), 500)));
    }

    let acknowledged = Mutex::new(Vec::new());
    let running = AtomicUsize::new(PUBLISHERS);
    let sentinel = AtomicU64::new(0);
    let mut client = server.ws(&server.admin());
    client.register(&format!("{kind}.*.*"));
    let received = thread::scope(|scope| {
        for publisher in 0..PUBLISHERS {
            let (kind, acknowledged, running, sentinel) =
                (&kind, &acknowledged, &running, &sentinel);
            scope.spawn(move || {
                for n in 0..EVENTS_PER_PUBLISHER {
                    let seq = server.publish(event(kind, "update", &format!("p{publisher}-{n}")));
                    acknowledged.lock().expect("lock").push(seq);
                }
                if running.fetch_sub(1, Ordering::AcqRel) == 1 {
                    sentinel.store(
                        server.publish(event(kind, "sentinel", "end")),
                        Ordering::Release,
                    );
                }
            });
        }
        // Replay once the live stream is flowing, so the stored part and the live part overlap.
        eventually(
            "the publishers' first 10 events",
            LOG_TIMEOUT,
            || match acknowledged.lock().expect("lock").len() {
                10.. => Ok(()),
                published => Err(format!("{published} published")),
            },
        );
        let reply = client.replay(&start.to_string());
        assert_eq!(reply["Recovered"], true, "{reply}");
        let mut received = Vec::new();
        let mut last = start;
        loop {
            let event = match client.next_received(LOG_TIMEOUT) {
                Received::Event(event) => event,
                other => panic!("the stream stopped after Seq {last}: {other:?}"),
            };
            let Some(seq) = event["Seq"].as_u64() else {
                continue;
            };
            assert!(seq > last, "Seq {seq} arrived after Seq {last}");
            last = seq;
            received.push(seq);
            if event["Action"] == "sentinel" {
                return received;
            }
        }
    });

    let sentinel = sentinel.load(Ordering::Acquire);
    let logged = seqs(&server.read_log_through(
        &server.admin(),
        start,
        Some(&format!("{kind}.*.*")),
        sentinel,
    ));
    assert_eq!(
        received, logged,
        "the replayed stream is the log, each event once, in order"
    );
    let all: BTreeSet<u64> = stored
        .into_iter()
        .chain(acknowledged.into_inner().expect("lock"))
        .chain([sentinel])
        .collect();
    assert_eq!(all.len(), 3000 + PUBLISHERS * EVENTS_PER_PUBLISHER + 1);
    assert_eq!(
        received.iter().copied().collect::<BTreeSet<u64>>(),
        all,
        "every acknowledged event arrived"
    );
}

#[test]
fn replay_while_publishers_run_delivers_every_seq_once_in_order_without_a_gap() {
    replay_while_publishing(Server::shared());
}

#[test]
fn replay_works_with_batched_durability_and_info_says_so() {
    let server = Server::start_with(Options::with_args(&["--durability", "batched"]));
    assert_eq!(server.info()["Durability"], "batched");
    replay_while_publishing(&server);
}

#[test]
fn with_batched_durability_a_replay_from_an_event_just_received_live_is_recovered() {
    // batched delivers before the append and the flush: LastSeq must already cover what a
    // client has seen, or a replay from it would be reported as a gap.
    let server = Server::start_with(Options::with_args(&["--durability", "batched"]));
    let epoch = server.info()["Epoch"].as_str().expect("Epoch").to_owned();
    let kind = unique("just-seen");
    let mut client = server.ws(&server.admin());
    client.register(&format!("{kind}.*.*"));
    for n in 0..100 {
        let published = server.publish(event(&kind, "save", &format!("k{n}")));
        let seen = client.expect_event();
        let seq = seen["Seq"].as_u64().expect("Seq");
        assert_eq!(seq, published);
        let reply = client.replay(&seq.to_string());
        assert!(
            recovered(&reply, &epoch),
            "replay {seq} right after receiving it: {reply}"
        );
    }
    // No event came twice: the next frame is an event published now.
    client.expect_sentinel_first(&server, event(&kind, "save", "sentinel"));
}

#[test]
fn info_says_sync_durability_by_default() {
    assert_eq!(Server::shared().info()["Durability"], "sync");
}

#[test]
fn replay_after_trimming_is_not_recovered_and_starts_at_the_oldest_retained_event() {
    let server = Server::start_with(Options::with_args(&["--retain-events", "10"]));
    let kind = unique("trimmed");
    // Connected first: herald logs each new connection as an event, which would trim one more.
    let mut client = server.ws(&server.admin());
    client.register(&format!("{kind}.*.*"));
    let mut last = 0;
    for n in 0..50 {
        last = server.publish(event(&kind, "save", &format!("k{n}")));
    }
    let info = server.wait_for_info("trimming to 10 events", |info| {
        info["FirstSeq"].as_u64() == Some(last - 9)
    });
    assert_eq!(info["LastSeq"].as_u64(), Some(last), "{info}");
    let epoch = info["Epoch"].as_str().expect("Epoch");
    let first = last - 9;

    let reply = client.replay("0");
    assert!(
        !recovered(&reply, epoch),
        "events 1..{first} are gone: {reply}"
    );
    assert_eq!(reply["FirstSeq"].as_u64(), Some(first), "{reply}");
    assert_eq!(reply["LastSeq"].as_u64(), Some(last), "{reply}");
    let received = client.ordered_events_through(last, REPLY_TIMEOUT);
    assert_eq!(seqs(&received), (first..=last).collect::<Vec<_>>());

    // Resuming right before the oldest retained event misses nothing; one earlier does.
    let reply = client.replay(&(first - 1).to_string());
    assert!(
        recovered(&reply, epoch),
        "nothing after {} is gone: {reply}",
        first - 1
    );
    let received = client.ordered_events_through(last, REPLY_TIMEOUT);
    assert_eq!(seqs(&received), (first..=last).collect::<Vec<_>>());
    let reply = client.replay(&(first - 2).to_string());
    assert!(
        !recovered(&reply, epoch),
        "event {} is gone: {reply}",
        first - 1
    );

    assert_eq!(
        seqs(&server.read_log(&server.admin(), 0, None)),
        (first..=last).collect::<Vec<_>>(),
        "the REST read starts at the oldest retained event too"
    );
}

#[test]
fn replay_with_another_epoch_is_not_recovered_and_resends_everything_retained() {
    let server = Server::shared();
    let kind = unique("epoch");
    let early = server.publish(event(&kind, "save", "early"));
    let later = server.publish(event(&kind, "save", "later"));
    let info = server.info();
    let epoch = info["Epoch"].as_str().expect("Epoch");

    let mut client = server.ws(&server.admin());
    client.register(&format!("{kind}.*.*"));
    let reply = client.replay(&format!("{later} 00000000-0000-4000-8000-000000000000"));
    assert!(!recovered(&reply, epoch), "{reply}");
    let received = client.ordered_events_through(later, REPLY_TIMEOUT);
    assert_eq!(
        seqs(&received),
        [early, later],
        "from the oldest retained event, not from {later}"
    );

    let mut client = server.ws(&server.admin());
    client.register(&format!("{kind}.*.*"));
    let reply = client.replay(&format!("{early} {epoch}"));
    assert!(recovered(&reply, epoch), "the right epoch: {reply}");
    assert_eq!(
        seqs(&client.ordered_events_through(later, REPLY_TIMEOUT)),
        [later]
    );
}

#[test]
fn replay_past_the_last_seq_is_not_recovered_and_continues_live() {
    let server = Server::shared();
    let kind = unique("future");
    let stored = server.publish(event(&kind, "save", "stored"));
    let epoch = server.info()["Epoch"].as_str().expect("Epoch").to_owned();
    let mut client = server.ws(&server.admin());
    client.register(&format!("{kind}.*.*"));
    let reply = client.replay(&(stored + 1_000_000).to_string());
    assert!(
        !recovered(&reply, &epoch),
        "the client saw events this log does not have: {reply}"
    );
    let live = server.publish(event(&kind, "save", "live"));
    let received = client.ordered_events_through(live, REPLY_TIMEOUT);
    assert_eq!(
        seqs(&received),
        [live],
        "only the live stream, nothing stored"
    );
}

#[test]
fn replay_of_the_last_seq_is_recovered_and_sends_only_what_follows() {
    let server = Server::shared();
    let kind = unique("uptodate");
    let stored = server.publish(event(&kind, "save", "stored"));
    let epoch = server.info()["Epoch"].as_str().expect("Epoch").to_owned();
    let mut client = server.ws(&server.admin());
    client.register(&format!("{kind}.*.*"));
    let reply = client.replay(&stored.to_string());
    assert!(recovered(&reply, &epoch), "{reply}");
    let live = server.publish(event(&kind, "save", "live"));
    assert_eq!(
        seqs(&client.ordered_events_through(live, REPLY_TIMEOUT)),
        [live]
    );
}

/// Reads a replaying client until its first bookmark; events before it are returned too.
fn until_bookmark(client: &mut Client, deadline: Instant) -> (u64, Vec<u64>, Instant) {
    let mut events = Vec::new();
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        match client.next_received(remaining) {
            Received::Event(e) if e["Action"] == "bookmark" && e["Type"] == "websocket" => {
                assert!(e.get("Seq").is_none(), "a bookmark carries no Seq: {e}");
                let seq = e["Key"]
                    .as_str()
                    .and_then(|k| k.parse().ok())
                    .unwrap_or_else(|| panic!("a bookmark's Key is a Seq: {e}"));
                return (seq, events, Instant::now());
            }
            Received::Event(e) => events.push(e["Seq"].as_u64().expect("an event with a Seq")),
            other => panic!("no bookmark in time: {other:?}"),
        }
    }
}

#[test]
fn bookmarks_reach_replaying_clients_while_filtered_out_events_pass_and_no_one_else() {
    let server = Server::shared();
    let (quiet, sparse, busy) = (unique("quiet"), unique("sparse"), unique("busy"));
    let start = server.info()["LastSeq"].as_u64().expect("LastSeq");

    let mut nothing = server.ws(&server.admin());
    nothing.register(&format!("{quiet}.*.*"));
    let reply = nothing.replay(&start.to_string());
    assert_eq!(reply["Recovered"], true, "{reply}");
    let mut some = server.ws(&server.admin());
    some.register(&format!("{sparse}.*.*"));
    some.replay(&start.to_string());
    let mut never_replayed = server.ws(&server.admin());
    never_replayed.register(&format!("{quiet}.*.*"));

    let stop = Arc::new(AtomicBool::new(false));
    let acknowledged = Arc::new(Mutex::new(Vec::<(u64, Instant)>::new()));
    let publisher = {
        let (stop, acknowledged) = (stop.clone(), acknowledged.clone());
        let (sparse, busy) = (sparse.clone(), busy.clone());
        let base_url = server.base_url();
        let admin = server.admin();
        thread::spawn(move || {
            let agent = ureq::Agent::new_with_defaults();
            let auth = admin.header_value().expect("basic auth");
            let mut n = 0u64;
            while !stop.load(Ordering::Acquire) {
                let kind = if n % 10 == 9 { &sparse } else { &busy };
                let body = event(kind, "update", &format!("k{n}")).to_string();
                let response = agent
                    .post(format!("{base_url}/api/v3/events"))
                    .header("Authorization", &auth)
                    .header("Content-Type", "application/json")
                    .send(body.as_bytes())
                    .expect("publish");
                let seq = response
                    .headers()
                    .get("Herald-Seq")
                    .and_then(|v| v.to_str().ok()?.parse().ok())
                    .expect("Herald-Seq");
                acknowledged
                    .lock()
                    .expect("lock")
                    .push((seq, Instant::now()));
                n += 1;
                thread::sleep(Duration::from_millis(20));
            }
        })
    };

    // A bookmark is owed at least every 10 s; allow for the first sweep and a slow machine.
    let deadline = Instant::now() + Duration::from_secs(13);
    let (quiet_mark, quiet_events, quiet_at) = until_bookmark(&mut nothing, deadline);
    let (sparse_mark, sparse_events, _) = until_bookmark(&mut some, deadline);
    stop.store(true, Ordering::Release);
    publisher.join().expect("the publisher thread");

    assert!(
        quiet_events.is_empty(),
        "the filter matches nothing: {quiet_events:?}"
    );
    let acknowledged = acknowledged.lock().expect("lock").clone();
    // An event acknowledged a second before the bookmark arrived has surely reached the core.
    let settled = acknowledged
        .iter()
        .filter(|(_, at)| *at + Duration::from_secs(1) < quiet_at)
        .map(|(seq, _)| *seq)
        .max()
        .unwrap_or(start);
    assert!(
        quiet_mark > start,
        "the bookmark moves past the replay point"
    );
    assert!(
        quiet_mark >= settled,
        "bookmark {quiet_mark} is behind Seq {settled}, published before it"
    );
    let last = server.info()["LastSeq"].as_u64().expect("LastSeq");
    assert!(
        quiet_mark <= last,
        "bookmark {quiet_mark} is past the log ({last})"
    );

    // The promise: every event up to the bookmark that the client should see was sent before it.
    let owed: Vec<u64> =
        seqs(&server.read_log(&server.admin(), start, Some(&format!("{sparse}.*.*"))))
            .into_iter()
            .filter(|seq| *seq <= sparse_mark)
            .collect();
    assert_eq!(sparse_events, owed, "events up to bookmark {sparse_mark}");

    // No bookmark for a client that never replayed: the next frame is an event published now.
    never_replayed.expect_sentinel_first(server, event(&quiet, "save", "sentinel"));
}

#[test]
fn replay_of_a_just_acknowledged_seq_never_sends_that_event_again() {
    // Two narrow windows, so many rounds give them their chances: the publish is answered once
    // the event is stored, which can be before another core has fanned it out; and while other
    // events flow, the connection's replay task from the previous round may still be reading
    // the log when the next `replay` arrives.
    let server = Server::shared();
    let (kind, busy) = (unique("just-acked"), unique("busy"));
    let mut clients: Vec<Client> = (0..4)
        .map(|_| {
            let mut client = server.ws(&server.admin());
            client.register(&format!("{kind}.*.*"));
            client
        })
        .collect();
    let stop = AtomicBool::new(false);
    thread::scope(|scope| {
        for publisher in 0..2 {
            let (busy, stop) = (&busy, &stop);
            scope.spawn(move || {
                let mut round = 0;
                while !stop.load(Ordering::Acquire) {
                    server.publish_batch(&batch_of(busy, &format!("p{publisher}-{round}-"), 20));
                    round += 1;
                }
            });
        }
        let stopper = StopOnDrop(&stop);
        for round in 0..200 {
            let acknowledged = server.publish(event(&kind, "save", &format!("acked{round}")));
            for client in &mut clients {
                client.replay(&acknowledged.to_string());
            }
            let next = server.publish(event(&kind, "save", &format!("next{round}")));
            for client in &mut clients {
                let received = client.ordered_events_through(next, REPLY_TIMEOUT);
                assert_eq!(
                    seqs(&received),
                    [next],
                    "round {round}: after `replay {acknowledged}` only what follows it"
                );
            }
        }
        drop(stopper);
    });
}

/// Sets the flag when dropped, so background threads stop even when an assertion fails.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}
