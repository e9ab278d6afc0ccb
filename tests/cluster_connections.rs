//! Connections across a herald cluster on a real three-server NATS JetStream cluster: every node
//! lists every node's live connections with its `Node`, a node that dies has its connections
//! closed as `node lost` once for the whole cluster, the history of other nodes' closes survives
//! a restart, and a client cannot write into the cluster's table by publishing `connections`
//! events.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::cli::{herald, run_ok};
use common::cluster::{holds_seq, node, node_options};
use common::{Auth, Client, NatsCluster, Options, Server, eventually, unique};
use serde_json::{Value, json};

/// How long after a node's death its connections must be closed: its entry expires 15 s after
/// its last renewal, the survivors look every 5 s.
const NODE_LOST_DEADLINE: Duration = Duration::from_secs(30);
/// How long one node may take to learn what another published.
const SPREAD_TIMEOUT: Duration = Duration::from_secs(10);

/// A herald node of cluster `cluster` on `nats` whose data directory `dir` outlives it.
fn node_in(nats: &NatsCluster, cluster: &str, name: &str, dir: &Path) -> Server {
    Server::start_with(Options {
        data_dir: Some(dir.to_path_buf()),
        ..node_options(nats, cluster, name)
    })
}

/// Creates a machine on `server` (the cluster's objects are every node's); returns its uuid.
fn create_machine(server: &Server) -> String {
    let uuid = uuid::Uuid::new_v4().to_string();
    let body = json!({"Uuid": uuid, "Name": unique("m")}).to_string();
    let reply = server.request("POST", "/api/v3/machines", &server.admin(), Some(&body));
    assert_eq!(reply.status, 201, "{reply:?}");
    uuid
}

/// A runner of machine `uuid` connected to `server` with the machine's token.
fn runner(server: &Server, uuid: &str) -> Client {
    let reply = server.get(&format!("/api/v3/machines/{uuid}/token?ttl=600"));
    assert_eq!(reply.status, 200, "{}", reply.body);
    let token = reply.json()["Token"]
        .as_str()
        .expect("a Token string")
        .to_owned();
    server.ws(&Auth::bearer(&token))
}

/// `path`'s JSON array on `server`.
fn listed(server: &Server, path: &str) -> Vec<Value> {
    let reply = server.get(path);
    assert_eq!(reply.status, 200, "{server:?} GET {path}: {}", reply.body);
    reply.json().as_array().cloned().unwrap_or_default()
}

/// `principal`'s live connections as `server` lists them.
fn live_of(server: &Server, principal: &str) -> Vec<Value> {
    listed(
        server,
        &format!("/api/v3/connections?Principal={principal}"),
    )
}

/// Waits until `server` lists exactly one live connection of `principal`; returns it.
fn await_one_live(server: &Server, principal: &str) -> Value {
    eventually(
        &format!("{server:?} to list {principal}'s connection"),
        SPREAD_TIMEOUT,
        || match live_of(server, principal).as_slice() {
            [one] => Ok(one.clone()),
            other => Err(format!("{other:?}")),
        },
    )
}

/// `principal`'s closed connections in `server`'s history.
fn history_of(server: &Server, principal: &str) -> Vec<Value> {
    listed(
        server,
        &format!("/api/v3/connections/history?principal={principal}"),
    )
}

#[test]
fn a_runner_connected_to_one_node_is_listed_on_another_with_its_node_and_by_its_machine() {
    let nats = NatsCluster::start(3);
    let cluster = unique("listed");
    let a = node(&nats, &cluster, "a");
    let b = node(&nats, &cluster, "b");
    let uuid = create_machine(&a);
    let principal = format!("runner:{uuid}");
    let mut watcher = b.ws(&b.admin());
    watcher.register(&format!("connections.create.{principal}"));
    watcher.register(&format!("connections.delete.{principal}"));

    let runner = runner(&a, &uuid);
    let created = watcher.expect_event();
    assert_eq!(created["Object"]["Node"], "a", "{created}");
    let on_b = await_one_live(&b, &principal);
    assert_eq!(on_b["Node"], "a", "{on_b}");
    assert_eq!(on_b["Type"], "websocket", "{on_b}");
    let on_a = await_one_live(&a, &principal);
    assert_eq!(on_a["Node"], "a", "{on_a}");
    assert_eq!(on_a["RemoteAddr"], on_b["RemoteAddr"]);
    let by_machine = listed(&b, &format!("/api/v3/machines/{uuid}/connections"));
    assert_eq!(by_machine.len(), 1, "{by_machine:?}");
    assert_eq!(by_machine[0]["Node"], "a");
    let addr = on_b["RemoteAddr"].as_str().expect("a RemoteAddr");
    let one = b.get(&format!("/api/v3/connections/{addr}"));
    assert_eq!(one.status, 200, "{}", one.body);
    assert_eq!(one.json()["Principal"], principal.as_str());

    runner.close();
    let deleted = watcher.expect_event();
    assert_eq!(deleted["Object"]["Node"], "a", "{deleted}");
    assert_eq!(deleted["Object"]["CloseReason"], "client closed");
    eventually("B to forget the closed connection", SPREAD_TIMEOUT, || {
        let live = live_of(&b, &principal);
        if live.is_empty() {
            Ok(())
        } else {
            Err(format!("{live:?}"))
        }
    });
    let history = history_of(&b, &principal);
    assert_eq!(history.len(), 1, "B records A's close: {history:?}");
    assert_eq!(history[0]["Node"], "a");
    assert_eq!(history[0]["CloseReason"], "client closed");
}

#[test]
fn the_cli_pointed_at_another_node_lists_a_runner_and_writes_objects_for_the_cluster() {
    let nats = NatsCluster::start(3);
    let cluster = unique("cli");
    let a = node(&nats, &cluster, "a");
    let b = node(&nats, &cluster, "b");
    let uuid = create_machine(&a);
    let principal = format!("runner:{uuid}");
    let _runner = runner(&a, &uuid);
    await_one_live(&b, &principal);
    let listed = run_ok(
        &mut herald(&b),
        &["connections", "list", "--principal", &principal],
    );
    let entries = listed.as_array().expect("a list");
    assert_eq!(entries.len(), 1, "{listed}");
    assert_eq!(entries[0]["Node"], "a", "{listed}");
    let of_machine = run_ok(&mut herald(&b), &["machines", "connections", &uuid]);
    assert_eq!(of_machine.as_array().map(Vec::len), Some(1), "{of_machine}");
    // An object written with the CLI through B reads back through A.
    let profile = unique("profile");
    run_ok(
        &mut herald(&b),
        &["profiles", "create", &json!({"Name": profile}).to_string()],
    );
    run_ok(
        &mut herald(&b),
        &["profiles", "set", &profile, "param", "color", "to", "green"],
    );
    // A applies the write within milliseconds of B's answer; the wait is bounded.
    eventually("A to show the profile's param", SPREAD_TIMEOUT, || {
        let shown = run_ok(&mut herald(&a), &["profiles", "show", &profile]);
        if shown["Params"]["color"] == "green" {
            Ok(())
        } else {
            Err(shown.to_string())
        }
    });
}

#[test]
fn a_killed_nodes_connections_are_closed_as_node_lost_once_for_the_cluster_and_outlive_a_restart() {
    let nats = NatsCluster::start(3);
    let cluster = unique("lost");
    let b_dir = tempfile::tempdir().expect("a data directory for node b");
    let a = node(&nats, &cluster, "a");
    let b = node_in(&nats, &cluster, "b", b_dir.path());
    let c = node(&nats, &cluster, "c");
    let uuid = create_machine(&a);
    let principal = format!("runner:{uuid}");
    let sentinel = unique("sentinel");
    let mut watcher = b.ws(&b.admin());
    watcher.register(&format!("connections.delete.{principal}"));
    watcher.register(&format!("{sentinel}.*.*"));
    let _runner = runner(&a, &uuid);
    await_one_live(&b, &principal);
    await_one_live(&c, &principal);

    a.kill();
    let died = Instant::now();
    let closed =
        eventually(
            "B to record A's runner as lost",
            NODE_LOST_DEADLINE,
            || match history_of(&b, &principal).as_slice() {
                [one] if live_of(&b, &principal).is_empty() => Ok(one.clone()),
                other => Err(format!("{other:?}")),
            },
        );
    let took = died.elapsed();
    assert!(took <= NODE_LOST_DEADLINE, "{took:?}");
    println!("node lost: closed {} ms after the kill", took.as_millis());
    assert_eq!(closed["CloseReason"], "node lost", "{closed}");
    assert_eq!(closed["Node"], "a", "{closed}");
    // Both survivors have looked at the nodes since A left: neither publishes its closing again.
    for survivor in [&b, &c] {
        eventually("A to leave the nodes", SPREAD_TIMEOUT, || {
            let info = survivor.info();
            if info["Cluster"]["Nodes"] == json!(["b", "c"]) {
                Ok(())
            } else {
                Err(info.to_string())
            }
        });
    }
    let events = watcher.events_before_sentinel(
        &b,
        json!({"Type": sentinel, "Action": "save", "Key": "end"}),
    );
    let deletes: Vec<&Value> = events
        .iter()
        .filter(|e| e["Type"] == "connections")
        .collect();
    assert_eq!(deletes.len(), 1, "one connections.delete: {deletes:?}");
    assert_eq!(deletes[0]["Object"]["CloseReason"], "node lost");
    assert!(live_of(&c, &principal).is_empty(), "C applied it too");

    drop(watcher);
    b.kill();
    let b = node_in(&nats, &cluster, "b", b_dir.path());
    let history = history_of(&b, &principal);
    assert_eq!(history.len(), 1, "{history:?}");
    assert_eq!(history[0]["CloseReason"], "node lost");
    assert!(live_of(&b, &principal).is_empty());
}

#[test]
fn a_node_restarted_after_a_crash_still_lists_the_other_nodes_live_connections() {
    let nats = NatsCluster::start(3);
    let cluster = unique("kept");
    let b_dir = tempfile::tempdir().expect("a data directory for node b");
    let a = node(&nats, &cluster, "a");
    let b = node_in(&nats, &cluster, "b", b_dir.path());
    let uuid = create_machine(&a);
    let principal = format!("runner:{uuid}");
    let _runner = runner(&a, &uuid);
    let before = await_one_live(&b, &principal);

    b.kill();
    // A node listens only once its copy caught up with the stream: no wait is owed here.
    let b = node_in(&nats, &cluster, "b", b_dir.path());
    assert_eq!(live_of(&b, &principal), vec![before]);
}

#[test]
fn a_node_restarted_after_a_crash_closes_for_the_cluster_what_its_previous_run_left_open() {
    let nats = NatsCluster::start(3);
    let cluster = unique("again");
    let a_dir = tempfile::tempdir().expect("a data directory for node a");
    let a = node_in(&nats, &cluster, "a", a_dir.path());
    let b = node(&nats, &cluster, "b");
    let uuid = create_machine(&a);
    let principal = format!("runner:{uuid}");
    let runner = runner(&a, &uuid);
    await_one_live(&b, &principal);

    a.kill();
    drop(runner);
    // Back before its entry in the nodes bucket expired: nobody else closes its connections.
    let a = node_in(&nats, &cluster, "a", a_dir.path());
    eventually(
        "B to forget the connection of A's previous run",
        SPREAD_TIMEOUT,
        || match history_of(&b, &principal).as_slice() {
            [one] if live_of(&b, &principal).is_empty() => Ok(one.clone()),
            other => Err(format!("{other:?}")),
        },
    );
    assert!(live_of(&a, &principal).is_empty());
}

#[test]
fn a_connections_event_a_client_publishes_never_enters_the_clusters_table() {
    let nats = NatsCluster::start(3);
    let cluster = unique("forged");
    let a = node(&nats, &cluster, "a");
    let b = node(&nats, &cluster, "b");
    let principal = format!("runner:{}", uuid::Uuid::new_v4());
    let forged = json!({
        "RemoteAddr": "10.0.0.1:4000",
        "Principal": principal,
        "CreateTime": "2026-11-27T00:00:00Z",
        "Type": "websocket",
        "Node": "a",
    });
    let seq = a.publish(json!({
        "Type": "connections",
        "Action": "create",
        "Key": principal,
        "Object": forged,
    }));
    holds_seq(&b, seq, SPREAD_TIMEOUT);
    let events = b.read_log(&b.admin(), seq - 1, Some("connections.create.*"));
    assert!(
        events.iter().any(|e| e["Seq"].as_u64() == Some(seq)),
        "the event itself is delivered like any other: {events:?}"
    );
    assert!(live_of(&b, &principal).is_empty());
    assert!(live_of(&a, &principal).is_empty());
}
