//! `docs/protocol.md` §4: a restart on the same data directory keeps the log, its Seq and its
//! Epoch.

mod common;

use common::{Options, REPLY_TIMEOUT, Server, assert_contiguous, event, seqs, unique};
use serde_json::Value;

fn start_on(dir: &tempfile::TempDir, args: &[&str]) -> Server {
    Server::start_with(Options::in_dir(dir.path()).and_args(args))
}

/// Publishes, stops with SIGTERM, starts again on the same directory and checks that the
/// log, its bounds and its epoch are those from before, and that Seq continues.
fn restart_keeps_the_log(args: &[&str]) {
    let dir = tempfile::tempdir().expect("a data directory");
    let kind = unique("restart");
    let server = start_on(&dir, args);
    for n in 0..20 {
        server.publish(event(&kind, "save", &format!("k{n}")));
    }
    let last = *server
        .publish_batch(
            &(20..40)
                .map(|n| event(&kind, "save", &format!("k{n}")))
                .collect::<Vec<_>>(),
        )
        .last()
        .expect("published");
    let before = server.info();
    let before_last = before["LastSeq"].as_u64().expect("LastSeq");
    assert!(before_last >= last, "{before}");
    let logged_before = server.read_log_through(&server.admin(), 0, None, before_last);
    server.terminate();

    let server = start_on(&dir, args);
    let after = server.info();
    assert_eq!(
        after["Epoch"], before["Epoch"],
        "the epoch survives a restart"
    );
    assert_eq!(after["FirstSeq"], before["FirstSeq"]);
    // herald logs connections as events of its own, so a few may follow the ones from before.
    assert!(after["LastSeq"].as_u64() >= Some(before_last), "{after}");
    let logged_after = server.read_log(&server.admin(), 0, None);
    assert_eq!(
        logged_after[..logged_before.len()],
        logged_before,
        "every event is kept as it was"
    );

    let next = server.publish(event(&kind, "save", "after"));
    assert!(
        next > before_last,
        "Seq continues after {before_last}: {next}"
    );
    let logged = server.read_log(&server.admin(), 0, None);
    let first = after["FirstSeq"].as_u64().expect("FirstSeq");
    let logged_seqs = seqs(&logged);
    let end = logged_seqs.last().copied().unwrap_or(0);
    assert_contiguous(&logged_seqs, first, end);
    assert!(
        logged
            .iter()
            .filter(|e| e["Seq"].as_u64() > Some(before_last))
            .all(|e| e["Type"] != kind.as_str() || e["Seq"].as_u64() == Some(next)),
        "nothing of ours was added but the new event"
    );

    let mut client = server.ws(&server.admin());
    client.register(&format!("{kind}.*.*"));
    let epoch = before["Epoch"].as_str().expect("Epoch");
    let reply = client.replay(&format!("0 {epoch}"));
    assert_eq!(
        reply["Recovered"], true,
        "same epoch, nothing trimmed: {reply}"
    );
    let received = client.ordered_events_through(next, REPLY_TIMEOUT);
    let keys: Vec<&str> = received.iter().filter_map(|e| e["Key"].as_str()).collect();
    let expected: Vec<String> = (0..40)
        .map(|n| format!("k{n}"))
        .chain(["after".to_string()])
        .collect();
    assert_eq!(keys, expected);
    let stored: Vec<&Value> = logged_before
        .iter()
        .filter(|e| e["Type"] == kind.as_str())
        .collect();
    assert_eq!(
        seqs(&received[..40]),
        stored
            .iter()
            .map(|e| e["Seq"].as_u64().unwrap_or(0))
            .collect::<Vec<_>>(),
        "events keep their Seq"
    );
    server.terminate();
}

#[test]
fn a_restart_keeps_seq_epoch_and_every_event() {
    restart_keeps_the_log(&[]);
}

#[test]
fn a_restart_with_batched_durability_keeps_every_acknowledged_event() {
    restart_keeps_the_log(&["--durability", "batched"]);
}

#[test]
fn sigterm_closes_websockets_with_1001_and_the_server_exits() {
    let dir = tempfile::tempdir().expect("a data directory");
    let server = start_on(&dir, &[]);
    let mut client = server.ws(&server.admin());
    client.register(&format!("{}.*.*", unique("quiet")));
    let stopping = std::thread::spawn(move || server.terminate());
    match client.next_received(REPLY_TIMEOUT) {
        common::Received::Closed { code, reason } => {
            assert_eq!(code, 1001, "{reason}");
            let resume = reason
                .strip_prefix("server shutdown; resume after ")
                .unwrap_or_else(|| panic!("no resume point in {reason:?}"));
            resume
                .parse::<u64>()
                .unwrap_or_else(|_| panic!("the resume point in {reason:?} is not a Seq"));
        }
        other => panic!("expected a close frame, got {other:?}"),
    }
    stopping.join().expect("the server stopped");
}
