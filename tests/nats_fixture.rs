//! The NATS JetStream cluster the cluster-mode tests run on does what they rely on: a meta
//! leader on start, stream leaders found from the monitoring port, killed, paused and stopped
//! servers coming back with their stores.

mod common;

use std::io::{ErrorKind, Read};
use std::net::TcpStream;
use std::time::Duration;

use common::{LOG_TIMEOUT, NatsCluster, eventually};
use serde_json::{Value, json};

/// Creates a file-stored stream `name` on subjects `<name>.>` with `replicas` replicas.
fn create_stream(cluster: &NatsCluster, name: &str, replicas: usize) -> Value {
    let config = json!({
        "name": name,
        "subjects": [format!("{name}.>")],
        "storage": "file",
        "num_replicas": replicas,
    });
    // A busy machine can leave a request unanswered; creating the same stream again is a no-op.
    eventually(
        &format!("stream {name} created"),
        LOG_TIMEOUT,
        || match cluster.jetstream(0, &format!("STREAM.CREATE.{name}"), &config) {
            Ok(created) if created.get("error").is_none() => Ok(created),
            Ok(refused) => Err(refused.to_string()),
            Err(e) => Err(e),
        },
    )
}

/// `STREAM.INFO` of `name` through server `via`, once it names the stream's leader.
fn stream_info(cluster: &NatsCluster, via: usize, name: &str) -> Value {
    eventually(
        &format!("stream {name}'s info through n{via}"),
        LOG_TIMEOUT,
        || match cluster.jetstream(via, &format!("STREAM.INFO.{name}"), &json!({})) {
            Ok(info) if info.pointer("/cluster/leader").is_some() => Ok(info),
            Ok(other) => Err(other.to_string()),
            Err(e) => Err(e),
        },
    )
}

/// Publishes `payload` through server `via` and returns the stream sequence JetStream acknowledged.
fn publish(cluster: &NatsCluster, via: usize, subject: &str, payload: &str) -> u64 {
    let ack = eventually(
        &format!("JetStream's ack for {subject} through n{via}"),
        LOG_TIMEOUT,
        || match cluster.request(via, subject, payload.as_bytes()) {
            Ok(ack) if ack.get("error").is_none() => Ok(ack),
            Ok(ack) => Err(ack.to_string()),
            Err(e) => Err(e),
        },
    );
    ack.get("seq")
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("an ack without seq: {ack}"))
}

/// How many messages server `index` itself holds of `stream` (its replica, not the leader's).
fn messages_held(cluster: &NatsCluster, index: usize, stream: &str) -> Option<u64> {
    cluster
        .stream_detail(index, stream)?
        .pointer("/state/messages")?
        .as_u64()
}

#[test]
fn three_nats_servers_elect_a_jetstream_meta_leader() {
    let cluster = NatsCluster::start(3);
    let urls = cluster.urls();
    let ports: Vec<&str> = urls
        .split(',')
        .map(|url| {
            url.strip_prefix("nats://127.0.0.1:")
                .unwrap_or_else(|| panic!("not a loopback NATS URL: {url} in {urls}"))
        })
        .collect();
    assert_eq!(ports.len(), 3, "{urls}");
    assert!(
        ports[0] != ports[1] && ports[1] != ports[2] && ports[0] != ports[2],
        "{urls}"
    );
    assert_eq!(cluster.url(1), format!("nats://127.0.0.1:{}", ports[1]));

    let leader = cluster
        .meta_leader()
        .unwrap_or_else(|| panic!("no meta leader after start; logs:\n{}", cluster.logs()));
    for index in 0..3 {
        let jsz = cluster.monitor_json(index, "/jsz").expect("/jsz");
        assert_eq!(
            jsz.pointer("/meta_cluster/cluster_size")
                .and_then(Value::as_u64),
            Some(3),
            "{} does not see three servers: {jsz}",
            cluster.name(index)
        );
        assert_eq!(
            jsz.pointer("/meta_cluster/leader").and_then(Value::as_str),
            Some(cluster.name(leader)),
            "{} names another meta leader: {jsz}",
            cluster.name(index)
        );
    }

    // A replicated stream can be created at once, and the monitoring port finds its leader.
    let created = create_stream(&cluster, "ELECT", 3);
    let replicas = created
        .pointer("/cluster/replicas")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    assert_eq!(replicas, 2, "a leader and two replicas: {created}");
    let leader = cluster.wait_stream_leader("ELECT");
    let info = stream_info(&cluster, 1, "ELECT");
    assert_eq!(
        info.pointer("/cluster/leader").and_then(Value::as_str),
        Some(cluster.name(leader)),
        "the monitoring port and the JetStream API disagree on the leader: {info}"
    );
    assert_eq!(publish(&cluster, 2, "ELECT.a", "{}"), 1);
}

/// A server that leads neither the JetStream meta group nor `stream`: losing it costs no election
/// (which takes nats-server 2.9 four to nine seconds after a kill or a pause).
fn a_follower(cluster: &NatsCluster, stream: &str) -> usize {
    let stream_leader = cluster.wait_stream_leader(stream);
    let meta_leader = cluster.meta_leader();
    (0..cluster.len())
        .find(|&i| i != stream_leader && Some(i) != meta_leader)
        .expect("three servers have one that leads nothing")
}

/// Server `index` accepts a connection (its socket is still open) but sends not even its greeting.
fn assert_silent(cluster: &NatsCluster, index: usize) {
    let mut socket = TcpStream::connect(cluster.url(index).trim_start_matches("nats://"))
        .expect("a paused server's port still accepts");
    socket
        .set_read_timeout(Some(Duration::from_millis(500)))
        .expect("a read timeout");
    let mut greeting = [0; 64];
    match socket.read(&mut greeting) {
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        other => panic!("{} answered while paused: {other:?}", cluster.name(index)),
    }
}

#[test]
fn a_killed_nats_server_rejoins_after_restart() {
    let mut cluster = NatsCluster::start(3);
    create_stream(&cluster, "REJOIN", 3);
    let follower = a_follower(&cluster, "REJOIN");
    let other = (follower + 1) % 3;
    assert_eq!(publish(&cluster, follower, "REJOIN.before", "1"), 1);
    eventually(
        "the follower to hold the first message",
        LOG_TIMEOUT,
        || match messages_held(&cluster, follower, "REJOIN") {
            Some(1) => Ok(()),
            held => Err(format!("{held:?}")),
        },
    );

    cluster.kill(follower);
    assert!(!cluster.is_running(follower));
    assert!(
        TcpStream::connect(cluster.url(follower).trim_start_matches("nats://")).is_err(),
        "the killed server still accepts connections"
    );
    // Two of three still make a quorum.
    assert_eq!(publish(&cluster, other, "REJOIN.during", "2"), 2);

    cluster.restart(follower);
    // Its own store kept the first message, and it caught up the one it missed.
    eventually(
        "the restarted server's replica to hold both messages",
        LOG_TIMEOUT,
        || match messages_held(&cluster, follower, "REJOIN") {
            Some(2) => Ok(()),
            held => Err(format!("{held:?}; log:\n{}", cluster.log(follower))),
        },
    );
    let log = cluster.log(follower);
    assert_eq!(
        log.matches("Starting nats-server").count(),
        2,
        "the log keeps both runs: {log}"
    );
    assert!(
        log.contains("Restored 1 messages for stream '$G > REJOIN'"),
        "the restart did not read the store the first run wrote: {log}"
    );
    assert_eq!(publish(&cluster, follower, "REJOIN.after", "3"), 3);
}

#[test]
fn a_paused_nats_server_catches_up_after_resuming() {
    let mut cluster = NatsCluster::start(3);
    create_stream(&cluster, "PAUSE", 3);
    let follower = a_follower(&cluster, "PAUSE");
    let other = (follower + 1) % 3;
    cluster.pause(follower);
    assert_silent(&cluster, follower);
    assert_eq!(publish(&cluster, other, "PAUSE.a", "1"), 1);
    assert_eq!(messages_held(&cluster, follower, "PAUSE"), None);

    cluster.resume(follower);
    eventually(
        "the resumed server to hold the message",
        LOG_TIMEOUT,
        || match messages_held(&cluster, follower, "PAUSE") {
            Some(1) => Ok(()),
            held => Err(format!("{held:?}")),
        },
    );
}

#[test]
fn the_stream_leader_is_found_again_after_it_changes() {
    let mut cluster = NatsCluster::start(3);
    create_stream(&cluster, "MOVE", 3);
    let first = cluster.wait_stream_leader("MOVE");
    let asked = cluster
        .jetstream(first, "STREAM.LEADER.STEPDOWN.MOVE", &json!({}))
        .expect("leader stepdown");
    assert_eq!(asked.get("success"), Some(&Value::Bool(true)), "{asked}");
    let second = cluster.wait_new_stream_leader("MOVE", first);
    assert_ne!(second, first);

    // A server stopped in order hands its leadership over before it goes.
    cluster.stop(second);
    let third = cluster.wait_new_stream_leader("MOVE", second);
    assert_ne!(third, second);
    let info = stream_info(&cluster, third, "MOVE");
    assert_eq!(
        info.pointer("/cluster/leader").and_then(Value::as_str),
        Some(cluster.name(third)),
        "{info}"
    );
}

// One server: three would spend five to ten seconds on JetStream's elections after start_all.
#[test]
fn a_stopped_nats_server_starts_again_with_its_streams() {
    let mut cluster = NatsCluster::start(1);
    create_stream(&cluster, "DOWN", 1);
    assert_eq!(publish(&cluster, 0, "DOWN.a", "1"), 1);

    cluster.stop_all();
    assert!(!cluster.is_running(0));
    assert!(
        cluster.request(0, "DOWN.b", b"2").is_err(),
        "the server answers while stopped"
    );

    cluster.start_all();
    assert_eq!(messages_held(&cluster, 0, "DOWN"), Some(1));
    assert_eq!(publish(&cluster, 0, "DOWN.b", "2"), 2);
}

#[test]
fn a_single_nats_server_runs_jetstream_alone() {
    let cluster = NatsCluster::start(1);
    assert!(!cluster.urls().contains(','), "{}", cluster.urls());
    create_stream(&cluster, "ALONE", 1);
    assert_eq!(cluster.stream_leader("ALONE"), Some(0));
    assert_eq!(cluster.stream_leader("NO-SUCH-STREAM"), None);
    assert_eq!(publish(&cluster, 0, "ALONE.a", "1"), 1);
    assert_eq!(messages_held(&cluster, 0, "ALONE"), Some(1));
}
