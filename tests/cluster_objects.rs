//! Objects in a herald cluster: a write on one node is read on every node, two nodes writing
//! one object lose no update, and a write and its event are one step even when a node dies in
//! the middle of writing.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;

use common::{LOG_TIMEOUT, NatsCluster, Server, eventually, unique};
use serde_json::{Value, json};

use common::cluster::{node, watcher};

/// `GET path` on `server` once it answers `want` (other nodes apply a write within
/// milliseconds; the wait is bounded).
fn reads(server: &Server, path: &str, want: &Value) {
    eventually(&format!("{path} on {server:?}"), LOG_TIMEOUT, || {
        let reply = server.get(path);
        let got = if reply.status == 200 {
            reply.json()
        } else {
            json!(reply.status)
        };
        if object_matches(&got, want) {
            Ok(())
        } else {
            Err(got.to_string())
        }
    });
}

/// Whether every field of `want` is in `got` with the same value.
fn object_matches(got: &Value, want: &Value) -> bool {
    match (got, want) {
        (Value::Object(got), Value::Object(want)) => want
            .iter()
            .all(|(k, v)| got.get(k).is_some_and(|g| object_matches(g, v))),
        _ => got == want,
    }
}

fn write(server: &Server, method: &str, path: &str, body: &Value) -> Value {
    let reply = server.request(method, path, &server.admin(), Some(&body.to_string()));
    assert!(
        reply.status == 200 || reply.status == 201,
        "{method} {path}: {reply:?}"
    );
    reply.json()
}

#[test]
fn every_object_route_written_through_one_node_reads_back_through_another() {
    let nats = NatsCluster::start(3);
    let cluster = unique("objects");
    let a = node(&nats, &cluster, "a");
    let b = node(&nats, &cluster, "b");
    let name = unique("profile");
    let mut on_a = watcher(&a, "profiles");
    let mut on_b = watcher(&b, "profiles");
    let path = format!("/api/v3/profiles/{name}");
    write(
        &a,
        "POST",
        "/api/v3/profiles",
        &json!({"Name": name, "Params": {"x": 1}}),
    );
    reads(&b, &path, &json!({"Name": name, "Params": {"x": 1}}));
    write(
        &a,
        "PUT",
        &path,
        &json!({"Name": name, "Description": "put", "Params": {"x": 2}}),
    );
    reads(
        &b,
        &path,
        &json!({"Description": "put", "Params": {"x": 2}}),
    );
    write(
        &a,
        "PATCH",
        &path,
        &json!([{"op": "replace", "path": "/Description", "value": "patched"}]),
    );
    reads(&b, &path, &json!({"Description": "patched"}));
    write(&a, "POST", &format!("{path}/params/y"), &json!("why"));
    reads(&b, &format!("{path}/params/y"), &json!("why"));
    let removed = a.request("DELETE", &format!("{path}/params/y"), &a.admin(), None);
    assert_eq!(removed.status, 200, "{removed:?}");
    reads(&b, &format!("{path}/params"), &json!({"x": 2}));
    let machine = write(
        &a,
        "POST",
        "/api/v3/machines",
        &json!({"Name": unique("m")}),
    );
    let uuid = machine["Uuid"].as_str().expect("a Uuid").to_owned();
    reads(
        &b,
        &format!("/api/v3/machines/{uuid}"),
        &json!({"Uuid": uuid}),
    );
    let deleted = a.request("DELETE", &path, &a.admin(), None);
    assert_eq!(deleted.status, 200, "{deleted:?}");
    reads(&b, &path, &json!(404));
    let listed = b.get("/api/v3/profiles").json();
    assert!(
        !listed
            .as_array()
            .is_some_and(|all| all.iter().any(|p| p["Name"] == name.as_str())),
        "the deleted profile is gone from B's list: {listed}"
    );
    // Each write's event, once, on both nodes' websockets.
    let actions = ["create", "update", "update", "save", "save", "delete"];
    for client in [&mut on_a, &mut on_b] {
        let seen: Vec<String> = (0..actions.len())
            .map(|_| {
                let event = client.expect_event();
                assert_eq!(event["Key"], name.as_str(), "{event}");
                event["Action"].as_str().unwrap_or_default().to_owned()
            })
            .collect();
        assert_eq!(seen, actions);
    }
}

#[test]
fn two_nodes_racing_json_patch_increments_on_one_param_count_every_one() {
    let nats = NatsCluster::start(3);
    let cluster = unique("race");
    let a = Arc::new(node(&nats, &cluster, "a"));
    let b = Arc::new(node(&nats, &cluster, "b"));
    let name = unique("counter");
    let path = format!("/api/v3/profiles/{name}");
    write(
        &a,
        "POST",
        "/api/v3/profiles",
        &json!({"Name": name, "Params": {"n": 0}}),
    );
    reads(&b, &path, &json!({"Params": {"n": 0}}));
    const EACH: u64 = 500;
    let racers: Vec<_> = [a.clone(), b.clone()]
        .into_iter()
        .map(|server| {
            let path = path.clone();
            thread::spawn(move || {
                let (mut done, mut refused) = (0, 0);
                while done < EACH {
                    let now = server.get(&path).json()["Params"]["n"]
                        .as_u64()
                        .unwrap_or(0);
                    let patch = json!([
                        {"op": "test", "path": "/Params/n", "value": now},
                        {"op": "replace", "path": "/Params/n", "value": now + 1},
                    ]);
                    let reply =
                        server.request("PATCH", &path, &server.admin(), Some(&patch.to_string()));
                    match reply.status {
                        200 => done += 1,
                        409 => refused += 1,
                        _ => panic!("an increment answered {reply:?}"),
                    }
                }
                refused
            })
        })
        .collect();
    let refused: u64 = racers.into_iter().map(|r| r.join().expect("a racer")).sum();
    let total = 2 * EACH;
    reads(&a, &path, &json!({"Params": {"n": total}}));
    reads(&b, &path, &json!({"Params": {"n": total}}));
    println!("race: {total} increments counted, {refused} refused by their test and retried");
}

#[test]
fn a_node_killed_while_writing_leaves_each_acknowledged_write_with_exactly_one_event() {
    let nats = NatsCluster::start(3);
    let cluster = unique("dying");
    let a = Arc::new(node(&nats, &cluster, "a"));
    let b = node(&nats, &cluster, "b");
    let name = unique("written");
    let path = format!("/api/v3/profiles/{name}");
    write(&a, "POST", "/api/v3/profiles", &json!({"Name": name}));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (a, stop, path) = (a.clone(), stop.clone(), path.clone());
        thread::spawn(move || {
            let mut acknowledged = Vec::new();
            for i in 0.. {
                if stop.load(Ordering::Acquire) {
                    break;
                }
                // A write in flight when the node dies fails; only answered ones count.
                let Ok(reply) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    a.request(
                        "POST",
                        &format!("{path}/params/p{i}"),
                        &a.admin(),
                        Some(&json!(i).to_string()),
                    )
                })) else {
                    break;
                };
                if reply.status == 200 {
                    acknowledged.push(i);
                }
            }
            acknowledged
        })
    };
    eventually("some writes", LOG_TIMEOUT, || {
        let params = b.get(&format!("{path}/params")).json();
        let count = params.as_object().map_or(0, |p| p.len());
        if count >= 20 { Ok(()) } else { Err(count) }
    });
    a.kill_shared();
    stop.store(true, Ordering::Release);
    let acknowledged = writer.join().unwrap_or_default();
    // Every event of the object, read from B's copy of the stream once it stops growing.
    let events = eventually("B's copy to settle", LOG_TIMEOUT, || {
        let first = b.read_log(&b.admin(), 0, Some(&format!("profiles.*.{name}")));
        let again = b.read_log(&b.admin(), 0, Some(&format!("profiles.*.{name}")));
        if first.len() == again.len() {
            Ok(again)
        } else {
            Err(first.len())
        }
    });
    let object = b.get(&path).json();
    let params = object["Params"].as_object().cloned().unwrap_or_default();
    let mut written_by_events = Vec::new();
    for event in &events {
        if event["Action"] == "save" {
            let before = event["Original"]["Params"]
                .as_object()
                .map_or(0, |p| p.len());
            let after = event["Object"]["Params"].as_object().map_or(0, |p| p.len());
            assert_eq!(after, before + 1, "each save event adds one param: {event}");
            written_by_events.push(event["Object"]["Params"].clone());
        }
    }
    // Every acknowledged write is readable, and each param has exactly one save event.
    for i in &acknowledged {
        assert_eq!(
            params.get(&format!("p{i}")),
            Some(&json!(i)),
            "acknowledged p{i} is on B"
        );
    }
    assert_eq!(
        written_by_events.len(),
        params.len(),
        "one event per stored param, no event without its write"
    );
    assert_eq!(
        events.last().map(|e| &e["Object"]),
        Some(&object),
        "B's object is its newest event's"
    );
    println!(
        "kill while writing: {} acknowledged, {} stored, {} events",
        acknowledged.len(),
        params.len(),
        written_by_events.len()
    );
}
