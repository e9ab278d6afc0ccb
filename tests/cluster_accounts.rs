//! Users, roles and the token secret in a herald cluster: an account written through one node
//! is the whole cluster's, a token minted by one node works on every node, and the private
//! part of an account (its password hash and Secret) reaches no client.

mod common;

use std::thread;
use std::time::{Duration, Instant};

use common::cluster::{holds_seq, node, node_options, watcher};
use common::{ADMIN, Auth, LOG_TIMEOUT, NatsCluster, Server, event, eventually, unique};
use serde_json::{Value, json};

/// Fields and markers of an account's private part, which no answer or event may carry.
const PRIVATE: [&str; 4] = ["PasswordHash", "Secret", "$argon2", "SetUser"];

/// The status of a request that needs the claim `users:list:*` (which `superuser` holds), made
/// as `auth` on `server`: 200 when `auth` logs in, 403 when it is refused.
fn login_status(server: &Server, auth: &Auth) -> u16 {
    server.request("GET", "/api/v3/users", auth, None).status
}

/// Waits until `server` answers `auth` with `want` (other nodes apply a write within
/// milliseconds; the wait is bounded).
fn logs_in(server: &Server, auth: &Auth, want: u16) {
    eventually(
        &format!("{auth:?} answered {want} on {server:?}"),
        LOG_TIMEOUT,
        || match login_status(server, auth) {
            status if status == want => Ok(()),
            status => Err(status),
        },
    );
}

fn assert_no_private_part(text: &str) {
    for marker in PRIVATE {
        assert!(!text.contains(marker), "{marker} leaked in {text}");
    }
}

fn ok(reply: &common::HttpReply, what: &str) -> Value {
    assert!((200..300).contains(&reply.status), "{what}: {reply:?}");
    reply.json()
}

#[test]
fn a_token_minted_by_one_node_opens_a_websocket_and_a_rest_call_on_another() {
    let nats = NatsCluster::start(3);
    let cluster = unique("tokens");
    let a = node(&nats, &cluster, "a");
    let b = node(&nats, &cluster, "b");
    let user = unique("operator");
    a.create_user(&user, "operator-pw", &["superuser"]);
    let token = a.mint_token(&user, "operator-pw", 600);
    let bearer = Auth::bearer(&token);
    // B applies the user a few milliseconds after A answered.
    logs_in(&b, &bearer, 200);
    let reply = b.request("GET", &format!("/api/v3/users/{user}"), &bearer, None);
    assert_eq!(ok(&reply, "GET the user on B")["Name"], json!(user));
    let mut client = b.ws(&bearer);
    let ty = unique("seen");
    client.register(&format!("{ty}.*.*"));
    let seq = a.publish(event(&ty, "ping", "k"));
    let received = client.expect_event();
    assert_eq!(received["Seq"].as_u64(), Some(seq), "{received}");
    // And the admin's token, minted on B, works on A.
    let admin_token = b.mint_token(ADMIN, b.admin_password(), 600);
    assert_eq!(login_status(&a, &Auth::bearer(&admin_token)), 200);
}

#[test]
fn a_user_deleted_on_one_node_can_no_longer_log_in_on_another_within_a_second() {
    let nats = NatsCluster::start(3);
    let cluster = unique("delete");
    let a = node(&nats, &cluster, "a");
    let b = node(&nats, &cluster, "b");
    let user = unique("leaver");
    let password = Auth::basic(&user, "leaver-pw");
    a.create_user(&user, "leaver-pw", &["superuser"]);
    let token = Auth::bearer(&a.mint_token(&user, "leaver-pw", 600));
    // B has verified the password (and keeps it in its login cache) and the token.
    logs_in(&b, &password, 200);
    assert_eq!(login_status(&b, &token), 200);
    let reply = a.request("DELETE", &format!("/api/v3/users/{user}"), &a.admin(), None);
    ok(&reply, "DELETE the user on A");
    let answered = Instant::now();
    let deadline = Duration::from_secs(1);
    // When B was first asked and refused: a refused password is answered only after an argon2
    // run (as long as a known user's), which in a debug build alone takes about a second.
    let refused = common::poll_until(deadline, || {
        let asked = answered.elapsed();
        match login_status(&b, &password) {
            403 => Ok((asked, answered.elapsed())),
            status => Err(status),
        }
    });
    let (asked, answer) = refused.unwrap_or_else(|status| {
        panic!("B still answered {status} to the deleted user's password after {deadline:?}")
    });
    eprintln!(
        "a user deleted on A: its password was refused on B when asked {asked:?} after the \
         DELETE's answer (B's answer came {answer:?} after it)"
    );
    assert!(asked <= deadline, "{asked:?}");
    assert_eq!(login_status(&b, &token), 403);
    assert_eq!(login_status(&a, &password), 403);
}

#[test]
fn a_user_and_a_role_created_on_one_node_read_the_same_on_another_and_their_event_hides_the_secret()
{
    let nats = NatsCluster::start(3);
    let cluster = unique("same");
    let a = node(&nats, &cluster, "a");
    let b = node(&nats, &cluster, "b");
    let mut on_b = watcher(&b, "users");
    let sentinel = unique("sentinel");
    on_b.register(&format!("{sentinel}.*.*"));
    let role = unique("viewer");
    let claims = json!([{"Scope": "machines", "Action": "get", "Specific": "*"}]);
    let created_role = ok(
        &a.request(
            "POST",
            "/api/v3/roles",
            &a.admin(),
            Some(&json!({"Name": role, "Claims": claims}).to_string()),
        ),
        "create the role on A",
    );
    let user = unique("reader");
    let body = json!({"Name": user, "Roles": [role], "Password": "reader-pw"});
    let created_user = ok(
        &a.request("POST", "/api/v3/users", &a.admin(), Some(&body.to_string())),
        "create the user on A",
    );
    for (path, want) in [
        (format!("/api/v3/users/{user}"), &created_user),
        (format!("/api/v3/roles/{role}"), &created_role),
    ] {
        eventually(&format!("{path} on B"), LOG_TIMEOUT, || {
            let reply = b.get(&path);
            if reply.status == 200 && reply.json() == *want {
                Ok(())
            } else {
                Err(format!("{reply:?}"))
            }
        });
    }
    let listed = ok(&b.get("/api/v3/users"), "list users on B");
    assert!(
        listed
            .as_array()
            .is_some_and(|users| users.contains(&created_user)),
        "{listed}"
    );
    assert_no_private_part(&listed.to_string());
    let seen = on_b.events_before_sentinel(&b, event(&sentinel, "done", "k"));
    let creates: Vec<&Value> = seen
        .iter()
        .filter(|e| e["Action"] == "create" && e["Key"] == json!(user))
        .collect();
    assert_eq!(creates.len(), 1, "{seen:?}");
    assert_eq!(creates[0]["Object"], created_user, "{}", creates[0]);
    for event in &seen {
        assert_no_private_part(&event.to_string());
    }
    let log = b.read_log(&b.admin(), 0, Some("users.*.*"));
    assert!(
        log.iter()
            .any(|e| e["Action"] == "create" && e["Key"] == json!(user)),
        "{log:?}"
    );
    let on_a = a.read_log(&a.admin(), 0, Some("users.*.*"));
    for event in log.iter().chain(on_a.iter()) {
        assert_no_private_part(&event.to_string());
    }
    let own = b.request(
        "GET",
        &format!("/api/v3/users/{user}/token"),
        &Auth::basic(&user, "reader-pw"),
        None,
    );
    ok(&own, "the user logs in on B and mints its own token");
}

#[test]
fn a_node_that_joins_later_logs_in_users_created_before_it_started() {
    let nats = NatsCluster::start(3);
    let cluster = unique("late");
    let a = node(&nats, &cluster, "a");
    let user = unique("early");
    a.create_user(&user, "early-pw", &["superuser"]);
    let token = a.mint_token(&user, "early-pw", 600);
    let c = node(&nats, &cluster, "c");
    // Served only once its copy caught up: no wait.
    assert_eq!(login_status(&c, &Auth::basic(&user, "early-pw")), 200);
    assert_eq!(login_status(&c, &Auth::bearer(&token)), 200);
    assert_eq!(login_status(&c, &c.admin()), 200);
    let admins = c.read_log(&c.admin(), 0, Some("users.*.rocketskates"));
    assert_eq!(admins.len(), 1, "the admin is written once: {admins:?}");
}

#[test]
fn a_password_changed_on_one_node_is_refused_in_its_old_form_on_another() {
    let nats = NatsCluster::start(3);
    let cluster = unique("password");
    let a = node(&nats, &cluster, "a");
    let b = node(&nats, &cluster, "b");
    let user = unique("changer");
    a.create_user(&user, "old-pw", &["superuser"]);
    let old = Auth::basic(&user, "old-pw");
    logs_in(&a, &old, 200);
    logs_in(&b, &old, 200);
    let reply = b.request(
        "PUT",
        &format!("/api/v3/users/{user}/password"),
        &old,
        Some(&json!({"Password": "new-pw"}).to_string()),
    );
    assert_no_private_part(&ok(&reply, "change the password on B").to_string());
    logs_in(&a, &old, 403);
    assert_eq!(login_status(&a, &Auth::basic(&user, "new-pw")), 200);
}

#[test]
fn three_nodes_starting_together_with_one_admin_password_write_the_admin_once() {
    let nats = NatsCluster::start(3);
    let cluster = unique("together");
    let nodes: Vec<Server> = thread::scope(|scope| {
        let started: Vec<_> = ["a", "b", "c"]
            .into_iter()
            .map(|name| {
                let nats = &nats;
                let cluster = &cluster;
                scope.spawn(move || node(nats, cluster, name))
            })
            .collect();
        started
            .into_iter()
            .map(|node| {
                node.join()
                    .unwrap_or_else(|_| panic!("a node failed to start"))
            })
            .collect()
    });
    for server in &nodes {
        assert_eq!(login_status(server, &server.admin()), 200, "{server:?}");
        let info = server.info();
        assert_eq!(info["Cluster"]["Nats"], "connected", "{info}");
    }
    let admins = nodes[0].read_log(&nodes[0].admin(), 0, Some("users.*.rocketskates"));
    assert_eq!(admins.len(), 1, "the admin is written once: {admins:?}");
    assert_eq!(admins[0]["Action"], "create", "{admins:?}");
}

#[test]
fn a_node_started_after_retention_dropped_the_first_messages_signs_with_the_clusters_secret() {
    let nats = NatsCluster::start(3);
    let cluster = unique("secret");
    let retain = ["--retain-events", "10"];
    let a = Server::start_with(node_options(&nats, &cluster, "a").and_args(&retain));
    // More events than the stream keeps: nothing written while A started is left in it.
    let filler: Vec<Value> = (0..100)
        .map(|i| json!({"Type": "filler", "Action": "save", "Key": format!("k{i}")}))
        .collect();
    let reply = a.post_events(&a.admin(), &Value::from(filler).to_string());
    assert_eq!(reply.status, 204, "{reply:?}");
    let b = Server::start_with(node_options(&nats, &cluster, "b").and_args(&retain));
    // B wrote the admin again (the stream had lost it): A applies that before minting.
    let written = b.info()["LastSeq"].as_u64().unwrap_or_default();
    holds_seq(&a, written, LOG_TIMEOUT);
    let from_a = a.mint_token(ADMIN, a.admin_password(), 600);
    logs_in(&b, &Auth::bearer(&from_a), 200);
    let from_b = b.mint_token(ADMIN, b.admin_password(), 600);
    logs_in(&a, &Auth::bearer(&from_b), 200);
    // A user written on each node after that reads the same on the other.
    let user = unique("late");
    b.create_user(&user, "late-pw", &["superuser"]);
    logs_in(&a, &Auth::basic(&user, "late-pw"), 200);
    let reply = a.request(
        "PUT",
        &format!("/api/v3/users/{user}/password"),
        &a.admin(),
        Some(&json!({"Password": "later-pw"}).to_string()),
    );
    ok(&reply, "change the password on A");
    logs_in(&b, &Auth::basic(&user, "later-pw"), 200);
}
