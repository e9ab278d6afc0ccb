//! `docs/protocol.md` §3.4 and §4: a client that stops reading is closed with 4008 and told
//! where to resume, and a replay from there delivers every remaining event exactly once.

mod common;

use common::{Client, LOG_TIMEOUT, Options, Received, Server, event, eventually, seqs, unique};
use serde_json::{Value, json};

/// The outbound budget the server runs with, small so that a stalled client overflows it fast.
const BUDGET: &str = "64KiB";
/// The slow client's socket receive buffer: a small TCP window, so the server's writes block.
const RECEIVE_BUFFER: usize = 4096;
/// Padding per event, so that a few hundred events fill the budget and the kernel's buffers.
const PADDING: usize = 900;
/// Events per publish request (about 25 KB, under the 32 KiB body limit set below).
const EVENTS_PER_REQUEST: usize = 25;
/// Bytes published while the client does not read, beyond what the server's socket send buffer
/// can take: the budget, the write in flight and the client's small window, with room to spare.
const PUBLISHED_BEYOND_SEND_BUFFER: usize = 2 << 20;

/// The most a TCP send buffer grows to (`tcp_wmem`'s maximum), which bounds what the kernel
/// absorbs before the server's writes block; Linux's usual 4 MiB when it cannot be read.
fn largest_send_buffer() -> usize {
    std::fs::read_to_string("/proc/sys/net/ipv4/tcp_wmem")
        .ok()
        .and_then(|s| s.split_whitespace().nth(2)?.parse().ok())
        .unwrap_or(4 << 20)
}

fn slow_server() -> Server {
    Server::start_with(Options::with_args(&[
        "--outbound-budget",
        BUDGET,
        "--max-body-bytes",
        "32KiB",
    ]))
}

/// `herald_slow_consumer_closes_total` from `/metrics`.
fn slow_consumer_closes(server: &Server) -> u64 {
    let metrics = server.get("/metrics").body;
    metrics
        .lines()
        .find_map(|line| line.strip_prefix("herald_slow_consumer_closes_total "))
        .and_then(|value| value.trim().parse::<f64>().ok())
        .map_or(0, |value| value as u64)
}

/// Publishes at least `count` events of `kind` with [`PADDING`] bytes of padding each, in
/// requests of [`EVENTS_PER_REQUEST`], keyed `<tag><request>-<n>`; returns their Seqs.
fn publish_padded(server: &Server, kind: &str, tag: &str, count: usize) -> Vec<u64> {
    let padding = "x".repeat(PADDING);
    let mut published = Vec::new();
    for round in 0..count.div_ceil(EVENTS_PER_REQUEST) {
        let events: Vec<Value> = (0..EVENTS_PER_REQUEST)
            .map(|n| {
                json!({"Type": kind, "Action": "save", "Key": format!("{tag}{round}-{n}"),
                    "Object": {"Padding": padding}})
            })
            .collect();
        published.extend(server.publish_batch(&events));
    }
    published
}

/// Reads until the close frame, which must be the slow-consumer close: the Seqs that arrived
/// before it, and the resume point it names.
fn events_then_slow_consumer_close(client: &mut Client) -> (Vec<u64>, u64) {
    let mut delivered = Vec::new();
    let (code, reason) = loop {
        match client.next_received(LOG_TIMEOUT) {
            Received::Event(event) => delivered.push(event),
            Received::Closed { code, reason } => break (code, reason),
            other => panic!("no close frame after {} events: {other:?}", delivered.len()),
        }
    };
    assert_eq!(code, 4008, "close reason {reason:?}");
    let resume_after = reason
        .strip_prefix("slow consumer; resume after ")
        .and_then(|seq| seq.parse().ok())
        .unwrap_or_else(|| panic!("close reason {reason:?}"));
    (seqs(&delivered), resume_after)
}

#[test]
fn a_client_that_stops_reading_is_closed_with_4008_logged_and_resumes_by_replay_without_loss() {
    let server = slow_server();
    let kind = unique("slow");
    let filter = format!("{kind}.*.*");
    let mut slow = server.ws_with_receive_buffer(&server.admin(), RECEIVE_BUFFER);
    slow.register(&filter);

    // Publish without reading a byte. The server counts the close only once the connection has
    // ended, which needs the client to read, so the volume is fixed: more than any kernel buffers.
    let to_publish = largest_send_buffer() + PUBLISHED_BEYOND_SEND_BUFFER;
    let published = publish_padded(&server, &kind, "r", to_publish / PADDING);
    let last = *published.last().expect("published");

    // Everything the kernel buffered arrives, then the close frame saying where to resume.
    let (delivered, resume_after) = events_then_slow_consumer_close(&mut slow);
    assert!(
        delivered.len() < published.len(),
        "the client was closed before it got everything"
    );
    assert_eq!(
        delivered,
        published[..delivered.len()],
        "what arrived before the close is the start of the stream, in order"
    );
    assert_eq!(
        delivered.last().copied().unwrap_or(published[0] - 1),
        resume_after,
        "the close names the last Seq that reached the client"
    );
    eprintln!(
        "slow consumer: {} of {} events delivered before the close",
        delivered.len(),
        published.len()
    );

    eventually(
        "the close counted in /metrics",
        LOG_TIMEOUT,
        || match slow_consumer_closes(&server) {
            1 => Ok(()),
            closes => Err(format!("{closes} closes")),
        },
    );
    // The console's health page counts it from the same place.
    eventually(
        "the close counted in the activity totals",
        LOG_TIMEOUT,
        || {
            let totals = server.get("/api/v3/info/activity").json();
            if totals["SlowConsumerCloses"] == 1 {
                Ok(())
            } else {
                Err(totals)
            }
        },
    );
    let line = server.wait_for_log_line(&["closed a slow consumer"]);
    assert!(line.contains("INFO"), "{line}");
    assert!(
        line.contains(&format!("resume_after={resume_after}")),
        "{line}"
    );
    assert!(line.contains("remote=127.0.0.1:"), "{line}");
    assert!(line.contains("principal=user:rocketskates"), "{line}");

    let mut again = server.ws(&server.admin());
    again.register(&filter);
    let reply = again.replay(&resume_after.to_string());
    assert_eq!(reply["Recovered"], true, "{reply}");
    let rest = again.ordered_events_through(last, LOG_TIMEOUT);
    assert_eq!(
        seqs(&rest),
        published[delivered.len()..],
        "every remaining event, once, in order"
    );
    // Nothing twice: the next frame is an event published now.
    again.expect_sentinel_first(&server, event(&kind, "save", "sentinel"));
    server.assert_serving();
}

#[test]
fn a_replay_of_far_more_than_the_budget_reaches_a_reading_client_without_a_close() {
    let server = slow_server();
    let kind = unique("big-replay");
    // About five budgets' worth of stored events.
    let published = publish_padded(&server, &kind, "r", 14 * EVENTS_PER_REQUEST);
    let last = *published.last().expect("published");
    let mut client = server.ws(&server.admin());
    client.register(&format!("{kind}.*.*"));
    let reply = client.replay(&(published[0] - 1).to_string());
    assert_eq!(reply["Recovered"], true, "{reply}");
    assert_eq!(
        seqs(&client.ordered_events_through(last, LOG_TIMEOUT)),
        published
    );
    assert_eq!(slow_consumer_closes(&server), 0, "no one was too slow");
}

#[test]
fn a_replay_that_retention_overtakes_is_closed_with_4008_and_its_resume_reports_the_gap() {
    // Retain more than the kernel's buffers can absorb, so the replay stalls on a client that
    // does not read while events it has yet to send are still stored.
    let retained = (largest_send_buffer() + PUBLISHED_BEYOND_SEND_BUFFER) / PADDING;
    let server = Server::start_with(Options::with_args(&[
        "--outbound-budget",
        BUDGET,
        "--max-body-bytes",
        "32KiB",
        "--retain-events",
        &retained.to_string(),
    ]));
    let kind = unique("overtaken");
    let filter = format!("{kind}.*.*");
    let stored = publish_padded(&server, &kind, "a", retained);

    let mut slow = server.ws_with_receive_buffer(&server.admin(), RECEIVE_BUFFER);
    slow.register(&filter);
    let reply = slow.replay(&(stored[0] - 1).to_string());
    assert_eq!(reply["Recovered"], true, "{reply}");

    // While it does not read, retention removes every event that was stored when it asked.
    let newer = publish_padded(&server, &kind, "b", retained);
    let newest = *newer.last().expect("published");
    let last_of_first = *stored.last().expect("published");
    server.wait_for_info("retention to pass the first events", |info| {
        info["FirstSeq"]
            .as_u64()
            .is_some_and(|first| first > last_of_first)
    });

    let (delivered, resume_after) = events_then_slow_consumer_close(&mut slow);
    assert_eq!(
        delivered,
        stored[..delivered.len()],
        "what arrived is the start of the replay, in order, with nothing skipped"
    );
    assert_eq!(
        resume_after,
        delivered.last().copied().unwrap_or(stored[0] - 1)
    );

    let mut again = server.ws(&server.admin());
    again.register(&filter);
    let reply = again.replay(&resume_after.to_string());
    assert_eq!(
        reply["Recovered"], false,
        "the resume reports the gap: {reply}"
    );
    let first = reply["FirstSeq"].as_u64().expect("FirstSeq");
    let rest = again.ordered_events_through(newest, LOG_TIMEOUT);
    assert_eq!(
        seqs(&rest).first().copied(),
        Some(first),
        "the resumed stream starts at the oldest retained event"
    );
    server.assert_serving();
}
