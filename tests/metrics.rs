//! /metrics: real traffic moves each counter by the expected amount, and the exposition passes
//! `promtool check metrics` without lint warnings.

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Auth, Options, Server, event, eventually, unique};
use serde_json::json;

/// The exposition as `series → value` (series include their labels as written).
fn scrape(server: &Server) -> (String, HashMap<String, f64>) {
    let reply = server.get("/metrics");
    assert_eq!(reply.status, 200, "{}", reply.body);
    let values = reply
        .body
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_string(), value.parse().ok()?))
        })
        .collect();
    (reply.body, values)
}

fn value(values: &HashMap<String, f64>, series: &str) -> f64 {
    *values
        .get(series)
        .unwrap_or_else(|| panic!("{series} missing from /metrics"))
}

/// Waits until `series` reaches at least `target`, or fails with what it last saw.
fn wait_for(server: &Server, series: &str, target: f64) -> HashMap<String, f64> {
    eventually(
        &format!("{series} reaching {target}"),
        Duration::from_secs(20),
        || {
            let (_, values) = scrape(server);
            match values.get(series).copied() {
                Some(value) if value >= target => Ok(values),
                value => Err(format!("{series} at {value:?}")),
            }
        },
    )
}

fn promtool_check(exposition: &str) {
    let Ok(mut child) = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    else {
        assert!(
            std::env::var_os("CI").is_none(),
            "promtool is not installed; .ci/run installs it (Debian package prometheus)"
        );
        eprintln!(
            "skipped the promtool check: promtool is not installed (apt-get install prometheus)"
        );
        return;
    };
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(exposition.as_bytes())
            .expect("feed promtool");
    }
    let output = child.wait_with_output().expect("run promtool");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "promtool check metrics failed:\n{said}"
    );
    assert!(said.trim().is_empty(), "promtool lint warnings:\n{said}");
}

#[test]
fn traffic_moves_every_counter_by_the_expected_amount_and_promtool_accepts_the_exposition() {
    let server = Server::start_with(Options::with_args(&[
        "--max-body-bytes",
        "32KiB",
        "--outbound-budget",
        "64KiB",
    ]));
    let (_, before) = scrape(&server);
    assert_eq!(
        value(&before, r#"herald_connections{type="websocket"}"#),
        0.0
    );

    // Live delivery: one watcher, five events.
    let mut watcher = server.ws(&server.admin());
    watcher.register("metrics.*.*");
    let kind = unique("k");
    let mut last = 0;
    for i in 0..5 {
        last = server.publish(event("metrics", &kind, &i.to_string()));
    }
    assert_eq!(watcher.events_through(last).len(), 5);
    // The counter moves when the write completes, which may be just after the client read it.
    let live = wait_for(&server, "herald_events_delivered_total", 5.0);
    // Connection events are published too (concurrently with the scrape), so the count is at
    // least the log's last Seq and at least what this test published.
    assert!(value(&live, "herald_events_published_total") >= value(&live, "herald_log_last_seq"));
    assert!(value(&live, "herald_events_published_total") >= last as f64);
    assert_eq!(value(&live, "herald_events_delivered_total"), 5.0);
    assert!(value(&live, "herald_delivered_bytes_total") > 5.0 * 100.0);
    assert_eq!(value(&live, r#"herald_connections{type="websocket"}"#), 1.0);
    assert_eq!(value(&live, "herald_filters"), 1.0);
    assert!(value(&live, "herald_log_last_seq") >= last as f64);
    assert_eq!(
        value(
            &live,
            r#"herald_connections_accepted_total{type="websocket"}"#
        ),
        1.0
    );
    assert!(
        value(
            &live,
            r#"herald_http_requests_total{route="/api/v3/events",class="2xx"}"#
        ) >= 5.0
    );

    // Failed logins, by reason.
    for _ in 0..2 {
        let reply = server.request(
            "GET",
            "/api/v3/info",
            &Auth::basic("rocketskates", "wrong"),
            None,
        );
        assert_eq!(reply.status, 403);
    }
    assert_eq!(
        server
            .request("GET", "/api/v3/info", &Auth::None, None)
            .status,
        401
    );

    // A replay of everything so far.
    watcher.command("replay 0");
    assert_eq!(watcher.events_through(last).len(), 5);

    // A slow consumer.
    // The kernel's socket buffers absorb a few MiB before the budget is reached, so publish
    // until the close is counted (bounded: at most 24 MiB).
    let stalled = server.stalled_ws("*.*.*");
    let filler = "x".repeat(3 * 1024);
    let batch: Vec<_> = (0..8)
        .map(|i| json!({"Type": "bulk", "Action": "fill", "Key": i.to_string(), "Object": {"pad": filler}}))
        .collect();
    let body = serde_json::to_string(&batch).unwrap();
    let mut published = 5;
    for round in 0..1000 {
        let reply = server.post_events(&server.admin(), &body);
        assert_eq!(reply.status, 204, "{}", reply.body);
        published += 8;
        if round % 20 == 19 {
            let (_, values) = scrape(&server);
            if value(&values, "herald_slow_consumer_closes_total") >= 1.0 {
                break;
            }
        }
    }
    let after = wait_for(&server, "herald_slow_consumer_closes_total", 1.0);
    drop(stalled);

    assert_eq!(
        value(
            &after,
            r#"herald_auth_failures_total{reason="bad_password"}"#
        ),
        2.0
    );
    assert_eq!(
        value(&after, r#"herald_auth_failures_total{reason="missing"}"#),
        1.0
    );
    assert_eq!(
        value(
            &after,
            r#"herald_replay_requests_total{result="recovered"}"#
        ),
        1.0
    );
    assert_eq!(
        value(&after, r#"herald_replay_requests_total{result="gap"}"#),
        0.0
    );
    assert_eq!(value(&after, "herald_events_replayed_total"), 5.0);
    assert_eq!(
        value(
            &after,
            r#"herald_disconnects_total{reason="slow consumer"}"#
        ),
        1.0
    );
    // Connection events may be sequenced between the gauge and the counter being read.
    assert!(value(&after, "herald_events_published_total") >= value(&after, "herald_log_last_seq"));
    assert!(value(&after, "herald_events_published_total") >= published as f64);
    assert!(value(&after, "herald_publish_duration_seconds_count") >= 5.0);
    assert!(value(&after, "herald_delivery_lag_seconds_count") >= 1.0);
    assert!(value(&after, "process_resident_memory_bytes") > 1e6);
    assert!(after.keys().any(|k| k.starts_with("herald_build_info{")));

    let (exposition, _) = scrape(&server);
    promtool_check(&exposition);
}

#[test]
fn metrics_auth_puts_the_exposition_behind_the_api_credentials() {
    let server = Server::start_with(Options::with_args(&["--metrics-auth"]));
    assert_eq!(
        server.request("GET", "/metrics", &Auth::None, None).status,
        401
    );
    let reply = server.request("GET", "/metrics", &server.admin(), None);
    assert_eq!(reply.status, 200);
    assert!(reply.body.contains("herald_build_info"));
}
