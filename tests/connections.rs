//! Connections (`docs/protocol.md` §6): the live API, connection events, and the persistent
//! history.

mod common;

use std::time::{Duration, Instant};

use common::{Auth, Options, Server, eventually, unique};
use serde_json::{Value, json};

fn create_machine(server: &Server) -> String {
    let uuid = uuid::Uuid::new_v4().to_string();
    let body = json!({"Uuid": uuid, "Name": unique("m")}).to_string();
    let reply = server.request("POST", "/api/v3/machines", &server.admin(), Some(&body));
    assert_eq!(reply.status, 201, "{}", reply.body);
    uuid
}

fn runner_token(server: &Server, uuid: &str) -> String {
    let reply = server.get(&format!("/api/v3/machines/{uuid}/token?ttl=600"));
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply.json()["Token"]
        .as_str()
        .expect("a Token string")
        .to_string()
}

/// Reads `path` until `done` holds for its JSON answer (bounded), returning that answer.
fn wait_for_json(server: &Server, path: &str, done: impl Fn(&Value) -> bool) -> Value {
    eventually(
        &format!("{path} satisfying the condition"),
        Duration::from_secs(10),
        || {
            let reply = server.get(path);
            assert_eq!(reply.status, 200, "{}", reply.body);
            let value = reply.json();
            if done(&value) { Ok(value) } else { Err(value) }
        },
    )
}

#[test]
fn drps_runner_monitoring_recipe_sees_the_runner_come_and_go_and_remembers_it_after_a_restart() {
    let data = tempfile::tempdir().unwrap();
    let options = || Options::in_dir(data.path());
    let server = Server::start_with(options());
    let uuid = create_machine(&server);
    let token = runner_token(&server, &uuid);
    let principal = format!("runner:{uuid}");

    let mut watcher = server.ws(&server.admin());
    watcher.register(&format!("connections.create.{principal}"));
    watcher.register(&format!("connections.delete.{principal}"));

    let runner = server.ws(&Auth::bearer(&token));
    let created = watcher.expect_event();
    assert_eq!(created["Type"], "connections");
    assert_eq!(created["Action"], "create");
    assert_eq!(created["Key"], principal.as_str());
    assert_eq!(created["Object"]["Type"], "websocket");
    assert_eq!(created["Object"]["Principal"], principal.as_str());

    let path = format!("/api/v3/machines/{uuid}/connections");
    let listed = server.get(&path).json();
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    let addr = listed[0]["RemoteAddr"].as_str().unwrap().to_string();
    let one = server.get(&format!("/api/v3/connections/{addr}"));
    assert_eq!(one.status, 200);
    assert_eq!(one.json()["Principal"], principal.as_str());

    runner.close();
    let deleted = watcher.expect_event();
    assert_eq!(deleted["Action"], "delete");
    assert_eq!(deleted["Object"]["CloseReason"], "client closed");
    assert!(deleted["Object"]["CloseTime"].is_string());
    assert!(deleted["Seq"].as_u64() > created["Seq"].as_u64());
    wait_for_json(&server, &path, |v| v.as_array().is_some_and(Vec::is_empty));
    assert_eq!(
        server.get(&format!("/api/v3/connections/{addr}")).status,
        404
    );

    drop(watcher);
    drop(server);
    let server = Server::start_with(options());
    let history = server
        .get(&format!(
            "/api/v3/connections/history?principal={principal}"
        ))
        .json();
    let entries = history.as_array().expect("a list");
    assert_eq!(entries.len(), 1, "{history}");
    assert_eq!(entries[0]["CloseReason"], "client closed");
    assert_eq!(entries[0]["RemoteAddr"], addr.as_str());
}

#[test]
fn a_keep_alive_rest_connection_appears_with_type_api() {
    let server = Server::shared();
    let user = unique("ops");
    server.create_user(&user, "pw-1234", &["superuser"]);
    let auth = Auth::basic(&user, "pw-1234");
    // One keep-alive connection, kept open while the connections API is asked about it.
    let mut keep_alive = server.raw();
    let header = auth.header_value().unwrap();
    keep_alive
        .send(
            format!("GET /api/v3/info HTTP/1.1\r\nHost: herald\r\nAuthorization: {header}\r\n\r\n")
                .as_bytes(),
        )
        .unwrap();
    let reply = keep_alive.read_response(Duration::from_secs(10)).unwrap();
    assert_eq!(reply.status, 200, "{}", reply.body);
    let principal = format!("user:{user}");
    let listed = server
        .request(
            "GET",
            &format!("/api/v3/connections?Principal={principal}&Type=api"),
            &auth,
            None,
        )
        .json();
    let entries = listed.as_array().expect("a list");
    assert!(!entries.is_empty(), "{listed}");
    assert!(
        entries
            .iter()
            .all(|e| e["Type"] == "api" && e["Principal"] == principal.as_str())
    );
}

#[test]
fn unknown_connections_and_objects_are_404() {
    let server = Server::shared();
    let reply = server.get("/api/v3/connections/127.0.0.1:1");
    assert_eq!(reply.status, 404);
    common::assert_drp_error(&reply, 404);
    let missing = uuid::Uuid::new_v4();
    assert_eq!(
        server
            .get(&format!("/api/v3/machines/{missing}/connections"))
            .status,
        404
    );
    assert_eq!(
        server
            .get(&format!("/api/v3/clusters/{missing}/connections"))
            .status,
        404
    );
}

#[test]
fn the_connections_api_needs_the_connections_claims() {
    let server = Server::shared();
    let role = unique("machines-only");
    server.create_role(
        &role,
        json!([{"Scope": "machines", "Action": "get", "Specific": "*"}]),
    );
    let user = unique("viewer");
    server.create_user(&user, "pw-1234", &[&role]);
    let auth = Auth::basic(&user, "pw-1234");
    for path in ["/api/v3/connections", "/api/v3/connections/history"] {
        let reply = server.request("GET", path, &auth, None);
        assert_eq!(reply.status, 403, "{path}: {}", reply.body);
        assert!(reply.body.contains("connections:list"), "{}", reply.body);
    }
}

#[test]
fn a_slow_consumer_is_recorded_with_its_close_reason() {
    let server = Server::start_with(Options::with_args(&[
        "--max-body-bytes",
        "32KiB",
        "--outbound-budget",
        "64KiB",
    ]));
    let mut watcher = server.ws(&server.admin());
    watcher.register("connections.delete.*");

    let stalled = server.stalled_ws("bulk.*.*");

    let filler = "x".repeat(3 * 1024);
    let batch: Vec<Value> = (0..8)
        .map(|i| json!({"Type": "bulk", "Action": "fill", "Key": i.to_string(), "Object": {"pad": filler}}))
        .collect();
    let body = serde_json::to_string(&batch).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let closed = loop {
        let reply = server.post_events(&server.admin(), &body);
        assert_eq!(reply.status, 204, "{}", reply.body);
        if let Some(event) = watcher.next_event(Duration::from_millis(1))
            && event["Object"]["CloseReason"] == "slow consumer"
        {
            break event;
        }
        assert!(
            Instant::now() < deadline,
            "the stalled client was never closed"
        );
    };
    assert_eq!(closed["Object"]["Type"], "websocket");
    drop(stalled);
    let history = server.get("/api/v3/connections/history").json();
    assert!(
        history
            .as_array()
            .is_some_and(|h| h.iter().any(|e| e["CloseReason"] == "slow consumer")),
        "{history}"
    );
}

#[test]
fn a_silent_client_is_closed_for_ping_timeout_and_one_that_answers_pings_stays() {
    let server = Server::start_with(Options::with_args(&[
        "--ping-interval",
        "1s",
        "--ping-timeout",
        "2s",
    ]));
    let mut watcher = server.ws(&server.admin());
    watcher.register("connections.delete.*");
    // tungstenite answers pings while it reads, so this client stays alive.
    let mut lively = server.ws(&server.admin());
    lively.register("nothing.*.*");

    let mut silent = server.raw_ws();
    silent.send_text_bytes(b"register nothing.*.*");
    let started = Instant::now();
    let deleted = loop {
        // Reading the watcher keeps it answering pings too.
        if let Some(event) = watcher.next_event(Duration::from_millis(200))
            && event["Object"]["CloseReason"] == "ping timeout"
        {
            break event;
        }
        // The lively client reads (and so answers pings) while we wait.
        let _ = lively.next_text(Duration::from_millis(10));
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "no ping timeout"
        );
    };
    assert_eq!(deleted["Object"]["Type"], "websocket");
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "closed before the timeout"
    );
    let mut saw_ping = false;
    let code = loop {
        match silent.read_frame(Duration::from_secs(5)) {
            Some(common::RawFrame::Other(0x9)) => saw_ping = true,
            Some(common::RawFrame::Close(code)) => break code,
            Some(common::RawFrame::Text(_)) => {}
            other => panic!("expected pings then a close, got {other:?}"),
        }
    };
    assert!(saw_ping, "the server pinged before giving up");
    assert_eq!(code, Some(1001));
    lively.register("still.*.*");
}

#[test]
fn many_clients_connecting_at_once_each_get_their_reply_and_every_later_connections_create_once_in_seq_order()
 {
    const CLIENTS: usize = 100;
    let server = Server::start();
    // Verified once, as a reconnecting fleet's credentials are: the storm is served from the
    // login cache rather than throttled as a hundred first logins at once.
    assert_eq!(server.get("/api/v3/info").status, 200);
    let start = std::sync::Barrier::new(CLIENTS);
    let (registered_tx, registered) = std::sync::mpsc::channel();
    let sentinel_seq = (std::sync::Mutex::new(None), std::sync::Condvar::new());
    let (late_addr, received) = std::thread::scope(|scope| {
        let clients: Vec<_> = (0..CLIENTS)
            .map(|_| {
                let (server, start, sentinel_seq) = (&server, &start, &sentinel_seq);
                let registered_tx = registered_tx.clone();
                scope.spawn(move || {
                    start.wait();
                    let mut client = server.ws(&server.admin());
                    client.register("*.*.*");
                    let _ = registered_tx.send(());
                    let (seq, published) = sentinel_seq;
                    let seq = published
                        .wait_timeout_while(
                            seq.lock().expect("sentinel lock"),
                            common::REPLY_TIMEOUT * 4,
                            |seq| seq.is_none(),
                        )
                        .expect("sentinel lock")
                        .0
                        .expect("the sentinel is published once every client registered");
                    let seen = client.events_through(seq);
                    (client.local_addr().to_string(), seen)
                })
            })
            .collect();
        for _ in 0..CLIENTS {
            registered
                .recv_timeout(common::REPLY_TIMEOUT * 2)
                .expect("every client registers");
        }
        // Opened once every client is registered: each of them is owed its create.
        let mut late = server.ws(&server.admin());
        // Its reply comes after its create is queued, so the create precedes the sentinel.
        late.register("*.*.*");
        let seq = server.publish(common::event("storms", "end", "sentinel"));
        *sentinel_seq.0.lock().expect("sentinel lock") = Some(seq);
        sentinel_seq.1.notify_all();
        let received: Vec<(String, Vec<Value>)> = clients
            .into_iter()
            .map(|c| c.join().expect("a client thread panicked"))
            .collect();
        (late.local_addr().to_string(), received)
    });
    let sentinel = sentinel_seq
        .0
        .lock()
        .expect("sentinel lock")
        .expect("the sentinel was published");
    let creates: Vec<(u64, String)> = server
        .read_log_through(&server.admin(), 0, Some("connections.create.*"), 1)
        .iter()
        .filter(|e| e["Object"]["Type"] == "websocket")
        .map(|e| {
            let seq = e["Seq"].as_u64().expect("a Seq");
            (
                seq,
                e["Object"]["RemoteAddr"].as_str().unwrap_or("").to_owned(),
            )
        })
        .filter(|(seq, _)| *seq < sentinel)
        .collect();
    assert_eq!(
        creates.len(),
        CLIENTS + 1,
        "one create per websocket: {creates:?}"
    );
    for (addr, seen) in received {
        let own = creates
            .iter()
            .find(|(_, remote)| *remote == addr)
            .unwrap_or_else(|| panic!("no connections.create for {addr}"))
            .0;
        let got: Vec<u64> = seen
            .iter()
            .filter(|e| {
                e["Type"] == "connections"
                    && e["Action"] == "create"
                    && e["Object"]["Type"] == "websocket"
            })
            .map(|e| e["Seq"].as_u64().expect("a Seq"))
            .collect();
        assert!(
            got.windows(2).all(|w| w[0] < w[1]),
            "{addr}: creates out of order or twice: {got:?}"
        );
        // From the first create it receives on, it receives every later one: a suffix of the log.
        let first = got.first().copied().unwrap_or(sentinel);
        let owed: Vec<u64> = creates
            .iter()
            .map(|(seq, _)| *seq)
            .filter(|seq| *seq >= first)
            .collect();
        assert_eq!(
            got, owed,
            "{addr} (own create at Seq {own}) missed or repeated creates"
        );
        let late = creates
            .iter()
            .find(|(_, remote)| *remote == late_addr)
            .expect("the late connection's create")
            .0;
        assert!(
            got.contains(&late),
            "{addr} missed the create of a connection opened after it registered"
        );
    }
}
