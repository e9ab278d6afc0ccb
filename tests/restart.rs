//! PROTOCOL.md §4: a restart on the same data directory keeps the log, its Seq and its Epoch.

mod common;

use common::{Options, REPLY_TIMEOUT, Server, event, seqs, unique};
use serde_json::Value;

fn start_on(dir: &tempfile::TempDir, args: &[&str]) -> Server {
    Server::start_with(Options {
        data_dir: Some(dir.path().to_path_buf()),
        args: args.iter().map(|a| a.to_string()).collect(),
        ..Options::default()
    })
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
    let logged_before = server.read_log_through(&server.admin(), 0, None, last);
    assert_eq!(before["LastSeq"].as_u64(), Some(last), "{before}");
    server.terminate();

    let server = start_on(&dir, args);
    let after = server.info();
    assert_eq!(
        after["Epoch"], before["Epoch"],
        "the epoch survives a restart"
    );
    assert_eq!(after["FirstSeq"], before["FirstSeq"]);
    assert_eq!(after["LastSeq"], before["LastSeq"]);
    let logged_after = server.read_log(&server.admin(), 0, None);
    assert_eq!(logged_after, logged_before, "every event is kept as it was");

    let next = server.publish(event(&kind, "save", "after"));
    assert_eq!(next, last + 1, "Seq continues where it stopped");

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
    client.register("*.*.*");
    let stopping = std::thread::spawn(move || server.terminate());
    match client.next_received(REPLY_TIMEOUT) {
        common::Received::Closed { code, reason } => {
            assert_eq!(code, 1001, "{reason}");
            assert_eq!(reason, "server shutdown");
        }
        other => panic!("expected a close frame, got {other:?}"),
    }
    stopping.join().expect("the server stopped");
}
