//! A herald cluster on a real three-server NATS JetStream cluster: every node sees the same
//! events with the same `Seq`, a client moves from a node that died to another and replays,
//! nothing acknowledged is lost when a herald node or a NATS server dies or stalls, and a node
//! cut off from NATS answers 503 and resumes without a gap.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::cluster::{holds_seq, node, node_options, stream_of, watcher};
use common::{
    Client, LOG_TIMEOUT, NatsCluster, REPLY_TIMEOUT, Received, Server, assert_drp_error,
    eventually, herald_seq, seqs, unique,
};
use serde_json::{Value, json};

/// How long a cluster may take to agree after a failure (a leader election, a reconnect).
const FAILOVER_TIMEOUT: Duration = Duration::from_secs(30);

/// Publishes one event; `Some(Seq)` once acknowledged, `None` for a 503 (allowed while a
/// failure is being handled). Any other answer fails the test.
fn try_publish(server: &Server, ty: &str, key: &str) -> Option<u64> {
    let body = json!({"Type": ty, "Action": "create", "Key": key}).to_string();
    let reply = server.post_events(&server.admin(), &body);
    match reply.status {
        204 => Some(herald_seq(&reply)),
        503 => {
            assert!(
                reply.header("retry-after").is_some(),
                "a 503 names when to retry: {reply:?}"
            );
            None
        }
        _ => panic!("a publish answered neither 204 nor 503: {reply:?}"),
    }
}

/// Publishers that post one event per request to their nodes until stopped, keeping every
/// acknowledged `Seq`.
struct Load {
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicUsize>,
    refused: Arc<AtomicUsize>,
    threads: Vec<thread::JoinHandle<Vec<u64>>>,
}

impl Load {
    fn start(servers: &[Arc<Server>], ty: &str) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(AtomicUsize::new(0));
        let refused = Arc::new(AtomicUsize::new(0));
        let threads = servers
            .iter()
            .enumerate()
            .map(|(i, server)| {
                let (server, stop, count) = (server.clone(), stop.clone(), acked.clone());
                let refusals = refused.clone();
                let ty = ty.to_owned();
                thread::spawn(move || {
                    let mut acked = Vec::new();
                    let mut n = 0;
                    while !stop.load(Ordering::Acquire) {
                        n += 1;
                        match try_publish(&server, &ty, &format!("p{i}-{n}")) {
                            Some(seq) => {
                                acked.push(seq);
                                count.fetch_add(1, Ordering::AcqRel);
                            }
                            None => {
                                refusals.fetch_add(1, Ordering::AcqRel);
                            }
                        }
                    }
                    acked
                })
            })
            .collect();
        Load {
            stop,
            acked,
            refused,
            threads,
        }
    }

    /// Waits until `more` publishes beyond those acknowledged so far are acknowledged.
    fn wait_for_more(&self, more: usize) {
        let target = self.acked.load(Ordering::Acquire) + more;
        eventually("more acknowledged publishes", FAILOVER_TIMEOUT, || {
            let now = self.acked.load(Ordering::Acquire);
            if now >= target {
                Ok(())
            } else {
                Err(format!("{now} of {target}"))
            }
        });
    }

    /// Stops the publishers; every acknowledged `Seq`, sorted, and how many were refused.
    fn finish(self) -> (Vec<u64>, usize) {
        self.stop.store(true, Ordering::Release);
        let mut all = Vec::new();
        for thread in self.threads {
            all.extend(thread.join().expect("a publisher thread"));
        }
        all.sort_unstable();
        (all, self.refused.load(Ordering::Acquire))
    }
}

/// Reads `client`'s events into `seen` until the stream ends or `enough` holds.
fn read_until(
    client: &mut Client,
    seen: &mut Vec<u64>,
    enough: impl Fn(&[u64]) -> bool,
    timeout: Duration,
) {
    let deadline = Instant::now() + timeout;
    while !enough(seen) {
        let left = deadline.saturating_duration_since(Instant::now());
        match client.next_received(left) {
            Received::Event(event) => seen.extend(event.get("Seq").and_then(Value::as_u64)),
            Received::Closed { .. } | Received::Ended(_) => return,
            Received::Nothing => panic!(
                "nothing arrived within {timeout:?}; last Seq seen {:?}",
                seen.last()
            ),
        }
    }
}

/// Asserts that `seen` is in increasing order without repeats, holds every acknowledged
/// `Seq` in its range, and is exactly the log's events of `ty` in that range (no hole).
fn assert_no_loss(
    server: &Server,
    watched: &[&Server],
    ty: &str,
    seen: &[u64],
    (acked, refused): &(Vec<u64>, usize),
) {
    assert!(
        seen.windows(2).all(|w| w[0] < w[1]),
        "events arrived out of order or twice: {seen:?}"
    );
    let (Some(&first), Some(&last)) = (seen.first(), seen.last()) else {
        panic!("no event was seen");
    };
    let missing: Vec<u64> = acked
        .iter()
        .copied()
        .filter(|s| (first..=last).contains(s) && seen.binary_search(s).is_err())
        .collect();
    if let Some(&gone) = missing.first() {
        // What the node read here holds at and around the first one, to tell a delivery hole
        // from a misnumbered acknowledgement.
        let around = |server: &Server| -> Vec<(u64, String)> {
            server
                .read_log(&server.admin(), gone.saturating_sub(3), None)
                .into_iter()
                .take(6)
                .map(|e| {
                    (
                        e["Seq"].as_u64().unwrap_or(0),
                        format!("{}.{}.{}", e["Type"], e["Action"], e["Key"]),
                    )
                })
                .collect()
        };
        let others: Vec<_> = watched.iter().map(|s| (s.base_url(), around(s))).collect();
        panic!(
            "acknowledged events never delivered: {missing:?}; the log around Seq {gone} on the node read: {:?}; on the client's nodes: {others:?}; seen around it: {:?}",
            around(server),
            seen.iter()
                .filter(|s| s.abs_diff(gone) < 6)
                .collect::<Vec<_>>()
        );
    }
    // The node read here holds the stream up to `last` once its own copy caught up.
    holds_seq(server, last, FAILOVER_TIMEOUT);
    let logged: Vec<u64> = server
        .read_log(&server.admin(), first - 1, Some(&format!("{ty}.*.*")))
        .iter()
        .filter_map(|e| e["Seq"].as_u64())
        .filter(|s| *s <= last)
        .collect();
    assert_eq!(seen, logged, "the client's events differ from the log's");
    // The figures of one failover, for scripts/cluster-failover-loop.sh.
    println!(
        "failover: acknowledged {} refused {refused} delivered {} lost 0 duplicated 0 holes 0",
        acked.len(),
        seen.len()
    );
}

#[test]
fn events_published_on_every_node_reach_every_node_with_the_same_seqs_in_the_same_order() {
    let nats = NatsCluster::start(3);
    let cluster = unique("spread");
    let nodes: Vec<Server> = ["a", "b", "c"]
        .into_iter()
        .map(|name| node(&nats, &cluster, name))
        .collect();
    let ty = unique("everywhere");
    let mut clients: Vec<Client> = nodes.iter().map(|n| watcher(n, &ty)).collect();
    let mut published = Vec::new();
    for round in 0..10 {
        for (i, server) in nodes.iter().enumerate() {
            let key = format!("{i}.{round}");
            published.push((
                server.publish(json!({"Type": ty, "Action": "save", "Key": key})),
                key,
            ));
        }
    }
    published.sort();
    let last = published.last().map(|(seq, _)| *seq).unwrap_or_default();
    for (client, server) in clients.iter_mut().zip(&nodes) {
        let events = client.ordered_events_through(last, LOG_TIMEOUT);
        let received: Vec<(u64, String)> = events
            .iter()
            .map(|e| {
                (
                    e["Seq"].as_u64().unwrap_or(0),
                    e["Key"].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect();
        assert_eq!(
            received, published,
            "node {server:?} delivered another order"
        );
    }
    let epochs: Vec<Value> = nodes.iter().map(|n| n.info()["Epoch"].clone()).collect();
    assert!(
        epochs.windows(2).all(|w| w[0] == w[1]),
        "one Epoch: {epochs:?}"
    );
}

#[test]
fn a_replay_on_one_node_recovers_what_was_published_on_another_with_its_epoch() {
    let nats = NatsCluster::start(3);
    let cluster = unique("replay");
    let a = node(&nats, &cluster, "a");
    let b = node(&nats, &cluster, "b");
    let info = a.info();
    let epoch = info["Epoch"].as_str().expect("an Epoch").to_owned();
    let before = info["LastSeq"].as_u64().expect("a LastSeq");
    let ty = unique("moved");
    let published: Vec<u64> = (0..5)
        .map(|i| a.publish(json!({"Type": ty, "Action": "save", "Key": format!("k{i}")})))
        .collect();
    let mut client = watcher(&b, &ty);
    let reply = client.replay(&format!("{before} {epoch}"));
    assert_eq!(reply["Recovered"], true, "{reply}");
    assert_eq!(reply["Epoch"], epoch.as_str(), "{reply}");
    let last = *published.last().expect("five events");
    let events = client.ordered_events_through(last, LOG_TIMEOUT);
    assert_eq!(seqs(&events), published);
    let page = b.read_log(&b.admin(), before, Some(&format!("{ty}.*.*")));
    assert_eq!(
        seqs(&page),
        published,
        "GET /api/v3/events on B answers as A's stream"
    );
}

#[test]
fn info_names_the_cluster_its_node_every_live_node_and_the_stream_replicas() {
    let nats = NatsCluster::start(3);
    let cluster = unique("info");
    let a = node(&nats, &cluster, "a");
    let b = node(&nats, &cluster, "b");
    let info = eventually("both nodes listed", LOG_TIMEOUT, || {
        let info = b.info();
        let nodes = &info["Cluster"]["Nodes"];
        if *nodes == json!(["a", "b"]) {
            Ok(info)
        } else {
            Err(info.to_string())
        }
    });
    let cluster_info = &info["Cluster"];
    assert_eq!(cluster_info["Name"], cluster.as_str(), "{info}");
    assert_eq!(cluster_info["Node"], "b", "{info}");
    assert_eq!(cluster_info["Nats"], "connected", "{info}");
    assert_eq!(cluster_info["StreamReplicas"], 3, "{info}");
    assert_eq!(info["Durability"], "replicated", "{info}");
    assert_eq!(a.metric("herald_cluster_nats_connected"), 1.0);
    assert_eq!(a.info()["Cluster"]["Node"], "a");
}

#[test]
fn a_node_asking_for_other_replicas_than_the_stream_has_is_refused_naming_both() {
    let nats = NatsCluster::start(3);
    let cluster = unique("replicas");
    let _a = node(&nats, &cluster, "a");
    let failed = Server::start_failing(
        node_options(&nats, &cluster, "b").and_args(&["--stream-replicas", "1"]),
    );
    assert_eq!(failed.code, Some(1), "{}", failed.stderr);
    assert!(
        failed.stderr.contains("3 replicas") && failed.stderr.contains("asks for 1"),
        "the refusal names both counts: {}",
        failed.stderr
    );
}

#[test]
fn a_node_that_joins_later_catches_up_and_serves_the_streams_history() {
    let nats = NatsCluster::start(3);
    let cluster = unique("late");
    let a = node(&nats, &cluster, "a");
    let ty = unique("history");
    let events: Vec<Value> = (0..200)
        .map(|i| json!({"Type": ty, "Action": "save", "Key": format!("k{i}")}))
        .collect();
    let reply = a.post_events(&a.admin(), &Value::from(events).to_string());
    assert_eq!(reply.status, 204, "{reply:?}");
    let last = herald_seq(&reply);
    let c = node(&nats, &cluster, "c");
    assert!(c.info()["LastSeq"].as_u64() >= Some(last), "{}", c.info());
    let on_a = a.read_log(&a.admin(), 0, Some(&format!("{ty}.*.*")));
    let on_c = c.read_log(&c.admin(), 0, Some(&format!("{ty}.*.*")));
    assert_eq!(on_a.len(), 200);
    assert_eq!(on_a, on_c, "the late node serves the same events");
}

#[test]
fn a_node_restarted_on_its_data_directory_goes_on_from_its_copy_without_losing_what_it_missed() {
    let nats = NatsCluster::start(3);
    let cluster = unique("restart");
    let dir = tempfile::tempdir().expect("a data directory");
    let a = Server::start_with(node_options(&nats, &cluster, "a").and_dir(dir.path()));
    let b = node(&nats, &cluster, "b");
    let ty = unique("kept");
    let before = a.publish(json!({"Type": ty, "Action": "save", "Key": "before"}));
    let epoch = a.info()["Epoch"].clone();
    a.kill();
    let missed = b.publish(json!({"Type": ty, "Action": "save", "Key": "missed"}));
    let a = Server::start_with(node_options(&nats, &cluster, "a").and_dir(dir.path()));
    let info = a.info();
    assert_eq!(info["Epoch"], epoch, "the same stream, the same Epoch");
    assert!(info["LastSeq"].as_u64() >= Some(missed), "{info}");
    let events = a.read_log(&a.admin(), 0, Some(&format!("{ty}.*.*")));
    assert_eq!(seqs(&events), vec![before, missed]);
}

#[test]
fn sigterm_closes_a_nodes_websockets_with_1001_and_a_resume_point_another_node_replays_from() {
    let nats = NatsCluster::start(3);
    let cluster = unique("term");
    let a = node(&nats, &cluster, "a");
    let b = node(&nats, &cluster, "b");
    let ty = unique("moving");
    let mut client = watcher(&a, &ty);
    let first = b.publish(json!({"Type": ty, "Action": "save", "Key": "before"}));
    assert_eq!(client.expect_event()["Seq"].as_u64(), Some(first));
    let epoch = a.info()["Epoch"].as_str().unwrap_or_default().to_owned();
    let stopping = thread::spawn(move || a.terminate());
    let resume = match client.next_received(REPLY_TIMEOUT) {
        Received::Closed { code, reason } => {
            assert_eq!(code, 1001, "{reason}");
            reason
                .strip_prefix("server shutdown; resume after ")
                .and_then(|seq| seq.parse::<u64>().ok())
                .unwrap_or_else(|| panic!("no resume point in {reason:?}"))
        }
        other => panic!("expected a close frame, got {other:?}"),
    };
    stopping.join().expect("node a stopped");
    assert!(
        resume >= first,
        "the resume point {resume} is past what was sent ({first})"
    );
    let after = b.publish(json!({"Type": ty, "Action": "save", "Key": "after"}));
    let mut moved = watcher(&b, &ty);
    let reply = moved.replay(&format!("{resume} {epoch}"));
    assert_eq!(reply["Recovered"], true, "{reply}");
    let events = moved.ordered_events_through(after, LOG_TIMEOUT);
    assert_eq!(seqs(&events), vec![after]);
}

#[test]
fn clients_of_a_killed_node_replay_on_another_and_lose_no_acknowledged_event() {
    let nats = NatsCluster::start(3);
    let cluster = unique("kill");
    let a = node(&nats, &cluster, "a");
    let b = Arc::new(node(&nats, &cluster, "b"));
    let c = Arc::new(node(&nats, &cluster, "c"));
    let ty = unique("failover");
    let epoch = b.info()["Epoch"].as_str().unwrap_or_default().to_owned();
    let mut client = watcher(&a, &ty);
    let load = Load::start(&[b.clone(), c.clone()], &ty);
    let mut seen = Vec::new();
    read_until(&mut client, &mut seen, |s| s.len() >= 20, LOG_TIMEOUT);
    a.kill();
    // What A wrote before it died, then the end of the connection.
    read_until(&mut client, &mut seen, |_| false, LOG_TIMEOUT);
    let resume = seen.last().copied().unwrap_or_default();
    let mut moved = watcher(&b, &ty);
    let reply = moved.replay(&format!("{resume} {epoch}"));
    assert_eq!(reply["Recovered"], true, "{reply}");
    load.wait_for_more(20);
    let acked = load.finish();
    let last = *acked.0.last().expect("publishes were acknowledged");
    read_until(
        &mut moved,
        &mut seen,
        |s| s.last() >= Some(&last),
        LOG_TIMEOUT,
    );
    assert_no_loss(&b, &[], &ty, &seen, &acked);
}

/// Publishes from two nodes while `failure` strikes the NATS cluster, with a client on a
/// third node; the client sees every acknowledged event once, in order, with no hole.
fn survives(failure: impl FnOnce(&mut NatsCluster, &str)) {
    let mut nats = NatsCluster::start(3);
    let cluster = unique("nats");
    let a = node(&nats, &cluster, "a");
    let b = Arc::new(node(&nats, &cluster, "b"));
    let c = Arc::new(node(&nats, &cluster, "c"));
    let ty = unique("steady");
    let mut client = watcher(&a, &ty);
    let load = Load::start(&[b.clone(), c.clone()], &ty);
    let mut seen = Vec::new();
    read_until(&mut client, &mut seen, |s| s.len() >= 20, LOG_TIMEOUT);
    failure(&mut nats, &stream_of(&cluster));
    load.wait_for_more(50);
    let acked = load.finish();
    let last = *acked.0.last().expect("publishes were acknowledged");
    read_until(
        &mut client,
        &mut seen,
        |s| s.last() >= Some(&last),
        FAILOVER_TIMEOUT,
    );
    assert_eq!(seen.last(), Some(&last), "the client on A stayed connected");
    assert_no_loss(&b, &[&a], &ty, &seen, &acked);
}

#[test]
fn killing_the_nats_server_that_leads_the_stream_loses_no_acknowledged_event() {
    survives(|nats, stream| {
        let leader = nats.wait_stream_leader(stream);
        nats.kill(leader);
        nats.wait_new_stream_leader(stream, leader);
    });
}

// Outside the default run: with nats-server 2.9.10 (Debian's), a stream leader stopped for 10 s
// and continued sometimes serves consumers from a copy of the stream that its replicas do not
// share, so two herald nodes then hold different events at the same Seq (2 of 40 runs; see
// docs/cluster.md). scripts/cluster-failover-loop.sh runs it.
#[test]
#[ignore = "nats-server 2.9.10 can diverge after a stalled leader; run by scripts/cluster-failover-loop.sh"]
fn a_nats_server_stalled_for_ten_seconds_loses_no_acknowledged_event_and_clients_stay() {
    survives(|nats, stream| {
        let leader = nats.wait_stream_leader(stream);
        nats.pause(leader);
        // The stall itself is the scenario: ten seconds without an answer from that server.
        thread::sleep(Duration::from_secs(10));
        nats.resume(leader);
    });
}

#[test]
fn with_nats_down_a_publish_answers_503_and_delivery_resumes_after_without_a_gap() {
    let mut nats = NatsCluster::start(3);
    let cluster = unique("down");
    let a = node(&nats, &cluster, "a");
    let ty = unique("outage");
    let mut client = watcher(&a, &ty);
    let before = a.publish(json!({"Type": ty, "Action": "save", "Key": "before"}));
    assert_eq!(client.expect_event()["Seq"].as_u64(), Some(before));
    let fresh = a.get("/api/v3/profiles/global");
    assert_eq!(fresh.status, 200, "{fresh:?}");
    assert_eq!(fresh.header("herald-stale"), None, "{fresh:?}");
    nats.stop_all();
    eventually("the node to notice", FAILOVER_TIMEOUT, || {
        let info = a.info();
        if info["Cluster"]["Nats"] == "disconnected" {
            Ok(())
        } else {
            Err(info.to_string())
        }
    });
    let body = json!({"Type": ty, "Action": "save", "Key": "refused"}).to_string();
    let reply = a.post_events(&a.admin(), &body);
    assert_drp_error(&reply, 503);
    assert!(reply.header("retry-after").is_some(), "{reply:?}");
    assert_eq!(a.metric("herald_cluster_nats_connected"), 0.0);
    // Objects are read from the node's copy, marked as possibly stale.
    let stale = a.get("/api/v3/profiles/global");
    assert_eq!(stale.status, 200, "{stale:?}");
    assert_eq!(stale.header("herald-stale"), Some("true"), "{stale:?}");
    // The websocket stays: it still answers commands.
    client.register(&format!("{}.*.*", unique("still")));
    nats.start_all();
    let after = eventually("a publish once NATS is back", FAILOVER_TIMEOUT, || {
        try_publish(&a, &ty, "after").ok_or("503")
    });
    let events = client.ordered_events_through(after, LOG_TIMEOUT);
    assert_eq!(
        seqs(&events),
        vec![after],
        "only the acknowledged event follows, and nothing was lost in between"
    );
    let mut replayed = watcher(&a, &ty);
    let epoch = a.info()["Epoch"].as_str().unwrap_or_default().to_owned();
    let reply = replayed.replay(&format!("{before} {epoch}"));
    assert_eq!(reply["Recovered"], true, "{reply}");
    assert_eq!(
        seqs(&replayed.ordered_events_through(after, LOG_TIMEOUT)),
        vec![after]
    );
}

#[test]
fn a_node_whose_stream_dropped_events_it_had_not_read_closes_its_clients_with_4008() {
    let nats = NatsCluster::start(3);
    let cluster = unique("gap");
    let retain = ["--retain-events", "10"];
    let a = Server::start_with(node_options(&nats, &cluster, "a").and_args(&retain));
    let b = Server::start_with(node_options(&nats, &cluster, "b").and_args(&retain));
    let ty = unique("dropped");
    let mut client = watcher(&a, &ty);
    let epoch = a.info()["Epoch"].as_str().unwrap_or_default().to_owned();
    a.pause();
    let events: Vec<Value> = (0..3000)
        .map(|i| json!({"Type": ty, "Action": "save", "Key": format!("k{i}")}))
        .collect();
    let reply = b.post_events(&b.admin(), &Value::from(events).to_string());
    assert_eq!(reply.status, 204, "{reply:?}");
    let last = herald_seq(&reply);
    a.resume();
    let resume = loop {
        match client.next_received(LOG_TIMEOUT) {
            Received::Event(_) => continue,
            Received::Closed { code, reason } => {
                assert_eq!(code, 4008, "{reason}");
                break reason
                    .strip_prefix("stream gap; resume after ")
                    .and_then(|seq| seq.parse::<u64>().ok())
                    .unwrap_or_else(|| panic!("no resume point in {reason:?}"));
            }
            other => panic!("expected a 4008 close, got {other:?}"),
        }
    };
    holds_seq(&a, last, LOG_TIMEOUT);
    let mut again = watcher(&a, &ty);
    let reply = again.replay(&format!("{resume} {epoch}"));
    assert_eq!(
        reply["Recovered"], false,
        "events after {resume} are gone: {reply}"
    );
}
