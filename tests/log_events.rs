//! herald's own log records as events `log.<level>.herald`: published at `--log-events-level`
//! and above through the sequencer (Seq, durable, visibility), rate-limited, reloadable.

mod common;

use std::time::{Duration, Instant};

use common::{
    ADMIN, Auth, Client, ConfigFile, DRP_DEFAULT_PASSWORD, LOG_TIMEOUT, Options, Server, event,
    eventually, unique,
};
use serde_json::{Value, json};

/// Log events published at once before the rate limit applies (`LOG_EVENTS_BURST`).
const BURST: u64 = 20;
/// Log events published per second after a burst (`LOG_EVENTS_PER_SECOND`).
const PER_SECOND: u64 = 1;

fn server_publishing(level: &str) -> Server {
    Server::start_with(Options::with_args(&["--log-events-level", level]))
}

/// A request that is refused with 404, which herald logs at info.
fn refused_request(server: &Server) {
    let reply = server.get(&format!("/api/v3/{}", unique("no-such-route/")));
    assert_eq!(reply.status, 404, "{reply:?}");
}

/// Every log event recorded before now: publishes a sentinel of `kind`, which `client` has
/// registered besides `log.*.*`, and returns what arrived before it. A record is queued for the
/// sequencer as it is logged, before the answer that logged it is sent, so it comes first.
fn log_events_before_sentinel(server: &Server, client: &mut Client, kind: &str) -> Vec<Value> {
    let events = client.events_before_sentinel(server, event(kind, "sentinel", "end"));
    for event in &events {
        assert_eq!(
            event["Type"], "log",
            "only log events were asked for: {event}"
        );
    }
    events
}

#[test]
fn a_warning_is_published_as_a_durable_log_warn_herald_event_from_system_herald() {
    // DRP's default password makes herald warn at start, before any client could watch.
    let server = Server::start_with(Options {
        admin_password: None,
        ..Options::default()
    });
    let admin = Auth::basic(ADMIN, DRP_DEFAULT_PASSWORD);
    let events = server.read_log(&admin, 0, Some("log.*.*"));
    let warnings: Vec<&Value> = events
        .iter()
        .filter(|e| {
            e["Object"]["Message"]
                .as_str()
                .is_some_and(|m| m.contains("default password"))
        })
        .collect();
    assert_eq!(warnings.len(), 1, "one warning in the log: {events:?}");
    let warning = warnings[0];
    assert_eq!(warning["Type"], "log");
    assert_eq!(warning["Action"], "warn");
    assert_eq!(warning["Key"], "herald");
    assert_eq!(warning["Principal"], "system:herald");
    assert!(warning["Seq"].as_u64().is_some_and(|s| s > 0), "{warning}");
    let object = &warning["Object"];
    assert_eq!(object["Level"], "warn");
    assert_eq!(object["Service"], "herald");
    assert_eq!(object["Target"], "herald::server");
    assert_eq!(object["Time"], warning["Time"], "{warning}");
    assert!(
        humantime::parse_rfc3339(object["Time"].as_str().unwrap_or("")).is_ok(),
        "{warning}"
    );
    assert!(object["Fields"].is_object(), "{warning}");
    assert_eq!(object["Suppressed"], 0, "{warning}");
    // The info start line is below the default level, so it is not an event.
    assert!(
        events.iter().all(|e| e["Action"] != "info"),
        "info records are not published at the default level: {events:?}"
    );
}

#[test]
fn a_records_key_value_fields_are_in_the_events_object() {
    let server = server_publishing("info");
    let mut watcher = server.ws(&server.admin());
    watcher.register("log.info.herald");
    let path = format!("/api/v3/{}", unique("nowhere-"));
    assert_eq!(server.get(&path).status, 404);
    let event = watcher.expect_event();
    let object = &event["Object"];
    assert_eq!(object["Message"], "request refused", "{event}");
    assert_eq!(object["Target"], "herald::api", "{event}");
    assert_eq!(object["Fields"]["route"], "unmatched", "{event}");
    assert_eq!(object["Fields"]["status"], 404, "{event}");
    assert_eq!(object["Fields"]["method"], "GET", "{event}");
    assert!(
        object["Fields"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains(&path)),
        "{event}"
    );
}

#[test]
fn log_events_are_rate_limited_and_the_next_one_counts_the_records_left_out() {
    let server = server_publishing("info");
    let kind = unique("sentinel");
    let mut watcher = server.ws(&server.admin());
    watcher.register("log.*.*");
    watcher.register(&format!("{kind}.*.*"));
    let storm = 3 * BURST;
    let started = Instant::now();
    for _ in 0..storm {
        refused_request(&server);
    }
    let elapsed = started.elapsed();
    let mut received = log_events_before_sentinel(&server, &mut watcher, &kind);
    let allowed = BURST + PER_SECOND * (elapsed.as_secs() + 1);
    assert!(
        (received.len() as u64) <= allowed.min(storm - 1),
        "{} of {storm} records were published within {elapsed:?}",
        received.len()
    );
    // Once a token is back, the next record is published with the count of those left out.
    let mut sent = storm;
    let last = eventually("a log event after the storm", LOG_TIMEOUT, || {
        refused_request(&server);
        sent += 1;
        watcher
            .next_event(Duration::from_millis(200))
            .ok_or("none yet")
    });
    received.push(last.clone());
    received.extend(log_events_before_sentinel(&server, &mut watcher, &kind));
    assert!(
        last["Object"]["Suppressed"].as_u64().is_some_and(|n| n > 0),
        "{last}"
    );
    let suppressed: u64 = received
        .iter()
        .map(|e| e["Object"]["Suppressed"].as_u64().expect("Suppressed"))
        .sum();
    assert_eq!(
        received.len() as u64 + suppressed,
        sent,
        "every record was either published or counted as suppressed"
    );
    let log = server.stderr();
    assert_eq!(
        log.matches("request refused").count() as u64,
        sent,
        "stderr has every line: the log events' limit is their own"
    );
}

#[test]
fn log_events_are_seen_only_by_principals_that_may_see_type_log() {
    let server = server_publishing("info");
    let role = unique("machines-only");
    server.create_role(
        &role,
        json!([{"Scope": "machines", "Action": "*", "Specific": "*"}]),
    );
    let user = unique("operator");
    server.create_user(&user, "operator-pw", &[&role]);
    let mut limited = server.ws(&Auth::basic(&user, "operator-pw"));
    limited.register("*.*.*");
    let mut admin = server.ws(&server.admin());
    admin.register("log.*.*");

    refused_request(&server);
    let seen = admin.expect_event();
    assert_eq!(seen["Type"], "log", "{seen}");
    // Events reach a connection in Seq order, so the machine event comes after the log event.
    let sentinel = server.publish(event("machines", "update", &unique("m")));
    let next = limited.expect_event();
    assert_eq!(next["Type"], "machines", "no log event before it: {next}");
    assert_eq!(next["Seq"].as_u64(), Some(sentinel));
    assert!(seen["Seq"].as_u64() < Some(sentinel));
}

#[test]
fn the_log_events_level_comes_from_the_config_file_and_is_reloaded_on_sighup() {
    let config = ConfigFile::new("log_events_level = \"off\"\n");
    let server = Server::start_with(Options::with_args(&["--config", &config.arg()]));
    let kind = unique("sentinel");
    let mut watcher = server.ws(&server.admin());
    watcher.register("log.*.*");
    watcher.register(&format!("{kind}.*.*"));

    refused_request(&server);
    let sentinel = server.publish(event(&kind, "done", "off"));
    let first = watcher.expect_event();
    assert_eq!(
        first["Seq"].as_u64(),
        Some(sentinel),
        "no log event: {first}"
    );

    config.write("log_events_level = \"info\"\n");
    server.hangup();
    server.wait_for_log_line(&["reloaded the log level", "log_events_level=\"info\""]);
    refused_request(&server);
    // The reload's own info record may come first: it is logged at the new level.
    let logged = log_events_before_sentinel(&server, &mut watcher, &kind);
    assert!(
        logged
            .iter()
            .any(|e| e["Action"] == "info" && e["Object"]["Message"] == "request refused"),
        "{logged:?}"
    );
}
