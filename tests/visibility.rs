//! `docs/protocol.md` §5: a connection sees only the events its claims allow; replies always
//! arrive.

mod common;

use common::{Auth, Client, Server, event, unique};
use serde_json::{Value, json};

/// A user whose only role holds exactly this claim, connected and registered on `filter`.
fn connect_with_claim(scope: &str, action: &str, specific: &str, filter: &str) -> Client {
    let server = Server::shared();
    let role = unique("role");
    server.create_role(
        &role,
        json!([{"Scope": scope, "Action": action, "Specific": specific}]),
    );
    let user = unique("viewer");
    server.create_user(&user, "viewer-pw", &[&role]);
    let mut client = server.ws(&Auth::basic(&user, "viewer-pw"));
    client.register(filter);
    client
}

/// Publishes `events` as the admin and then a sentinel, and returns the events the client saw
/// among those published here (other tests' events are left out), as (type, action, key).
fn seen_of(
    client: &mut Client,
    events: &[(&str, &str, &str)],
    sentinel: (&str, &str, &str),
) -> Vec<Value> {
    let server = Server::shared();
    let mut seqs: Vec<u64> = events
        .iter()
        .map(|(t, a, k)| server.publish(event(t, a, k)))
        .collect();
    let last = server.publish(event(sentinel.0, sentinel.1, sentinel.2));
    seqs.push(last);
    client
        .events_through(last)
        .into_iter()
        .filter(|e| e["Seq"].as_u64().is_some_and(|s| seqs.contains(&s)))
        .collect()
}

fn keys(events: &[Value]) -> Vec<&str> {
    events.iter().filter_map(|e| e["Key"].as_str()).collect()
}

#[test]
fn machines_reader_on_all_events_sees_machine_events_but_not_profile_events() {
    let mut client = connect_with_claim("machines", "get", "*", "*.*.*");
    let (machine, profile) = (unique("m"), unique("p"));
    let sentinel = unique("m-sentinel");
    let server = Server::shared();
    server.publish(event("profiles", "save", &profile));
    server.publish(event("machines", "update", &machine));
    let last = server.publish(event("machines", "update", &sentinel));
    let seen = client.events_through(last);
    for e in &seen {
        assert_eq!(e["Type"], "machines", "a machines reader saw {e}");
    }
    let seen_keys = keys(&seen);
    assert!(seen_keys.contains(&machine.as_str()), "{seen:?}");
    assert!(!seen_keys.contains(&profile.as_str()), "{seen:?}");
}

#[test]
fn specific_list_restricts_keys() {
    let (a, b, c) = (unique("ka"), unique("kb"), unique("kc"));
    let mut client = connect_with_claim("machines", "get", &format!("{a},{b}"), "machines.*.*");
    let seen = seen_of(
        &mut client,
        &[
            ("machines", "update", &c),
            ("machines", "update", &a),
            ("machines", "delete", &b),
        ],
        ("machines", "save", &b),
    );
    assert_eq!(keys(&seen), [a.as_str(), b.as_str(), b.as_str()]);
}

#[test]
fn action_claims_restrict_actions_unless_they_allow_get() {
    let key = unique("pk");
    let filter = format!("profiles.*.{key}");
    let mut updater = connect_with_claim("profiles", "update,save", "*", &filter);
    let seen = seen_of(
        &mut updater,
        &[
            ("profiles", "delete", &key),
            ("profiles", "update", &key),
            ("profiles", "create", &key),
        ],
        ("profiles", "save", &key),
    );
    let actions: Vec<&str> = seen.iter().filter_map(|e| e["Action"].as_str()).collect();
    assert_eq!(actions, ["update", "save"]);

    let mut getter = connect_with_claim("profiles", "get", "*", &filter);
    let seen = seen_of(
        &mut getter,
        &[("profiles", "delete", &key), ("profiles", "create", &key)],
        ("profiles", "save", &key),
    );
    assert_eq!(seen.len(), 3, "get allows every action: {seen:?}");
}

#[test]
fn wildcard_scope_claim_sees_every_type() {
    let key = unique("wk");
    let filter = format!("*.*.{key}");
    let mut client = connect_with_claim("*", "get", "*", &filter);
    let seen = seen_of(
        &mut client,
        &[("profiles", "save", &key), ("machines", "update", &key)],
        ("params", "save", &key),
    );
    assert_eq!(seen.len(), 3, "{seen:?}");
}

#[test]
fn replies_are_delivered_even_for_filters_the_user_cannot_see() {
    let mut client = connect_with_claim("machines", "get", "*", "profiles.*.*");
    let reply = client.command("deregister profiles.*.*");
    assert_eq!(reply["Action"], "deregister", "{reply}");
    let reply = client.command("nonsense");
    assert_eq!(reply["Action"], "error", "{reply}");
    assert_eq!(reply["Object"]["Code"], 400, "{reply}");
}

#[test]
fn superuser_sees_every_type() {
    let server = Server::shared();
    let key = unique("sk");
    let mut client = server.ws(&server.admin());
    client.register(&format!("*.*.{key}"));
    let seen = seen_of(
        &mut client,
        &[("profiles", "save", &key), ("machines", "update", &key)],
        ("users", "update", &key),
    );
    assert_eq!(seen.len(), 3, "{seen:?}");
}
