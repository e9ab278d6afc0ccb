//! The web console's routes: `/` and `/ui/` serve the embedded files without credentials, with
//! their content types, revalidation and a strict Content-Security-Policy; and
//! `/api/v3/info/activity` gives the console's charts herald's own recent numbers.
//! (The page itself is driven in a real browser by tests/ui/run.sh.)

mod common;

use std::collections::BTreeSet;

use common::{
    Auth, LOG_TIMEOUT, REPLY_TIMEOUT, Server, assert_drp_error, event, eventually, unique,
};
use serde_json::Value;

/// One raw request on a fresh connection, read whole.
fn raw_get(server: &Server, method: &str, path: &str, headers: &str) -> common::HttpReply {
    let mut raw = server.raw();
    raw.send(
        format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\n{headers}\r\n",
            server.addr()
        )
        .as_bytes(),
    )
    .expect("send the request");
    raw.read_response(REPLY_TIMEOUT).expect("an answer")
}

/// Every local file the page names: `src`/`href` in HTML, `from './x.js'` in modules and the
/// script of a `Worker`.
fn referenced_files(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for marker in ["src=\"", "href=\"", "from './", "Worker('"] {
        for (at, _) in text.match_indices(marker) {
            let rest = &text[at + marker.len()..];
            let end = rest.find(['"', '\'']).unwrap_or(rest.len());
            let name = rest[..end].trim_start_matches("./");
            if !name.is_empty() && !name.starts_with('#') {
                found.push(name.to_owned());
            }
        }
    }
    found
}

#[test]
fn the_root_and_ui_without_a_slash_redirect_to_the_console() {
    let server = Server::shared();
    for path in ["/", "/ui"] {
        let reply = raw_get(server, "GET", path, "");
        assert_eq!(reply.status, 302, "{path}: {reply:?}");
        assert_eq!(reply.header("location"), Some("/ui/"), "{path}");
    }
}

#[test]
fn every_file_the_console_names_is_served_without_credentials_with_its_content_type() {
    let server = Server::shared();
    let mut pending = vec!["index.html".to_owned()];
    let mut seen = BTreeSet::new();
    while let Some(name) = pending.pop() {
        if !seen.insert(name.clone()) {
            continue;
        }
        let path = if name == "index.html" {
            "/ui/".to_owned()
        } else {
            format!("/ui/{name}")
        };
        let reply = server.request("GET", &path, &Auth::None, None);
        assert_eq!(reply.status, 200, "{path}: {reply:?}");
        let expected = match name.rsplit_once('.').map(|(_, ext)| ext) {
            Some("html") => "text/html; charset=utf-8",
            Some("css") => "text/css; charset=utf-8",
            Some("js") => "text/javascript; charset=utf-8",
            Some("svg") => "image/svg+xml",
            other => panic!("the console names a file of an unexpected kind: {name} ({other:?})"),
        };
        assert_eq!(reply.header("content-type"), Some(expected), "{path}");
        assert_eq!(reply.header("cache-control"), Some("no-cache"), "{path}");
        assert!(reply.header("etag").is_some(), "{path} has no ETag");
        pending.extend(referenced_files(&reply.body));
    }
    for module in [
        "app.js",
        "session.js",
        "stream.js",
        "events.js",
        "style.css",
    ] {
        assert!(
            seen.contains(module),
            "{module} is not reachable from the page: {seen:?}"
        );
    }
}

#[test]
fn console_answers_carry_a_strict_content_security_policy() {
    let server = Server::shared();
    for path in ["/ui/", "/ui/app.js", "/", "/ui/missing.js"] {
        let reply = raw_get(server, "GET", path, "");
        let policy = reply
            .header("content-security-policy")
            .unwrap_or_else(|| panic!("{path} has no policy: {reply:?}"));
        for directive in [
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self'",
            "frame-ancestors 'none'",
            "object-src 'none'",
            "form-action 'none'",
        ] {
            assert!(
                policy.contains(directive),
                "{path}: {policy} lacks {directive}"
            );
        }
        let connect = format!("connect-src 'self' ws://{}", server.addr());
        assert!(
            policy.contains(&connect),
            "{path}: {policy} lacks {connect}"
        );
        assert!(!policy.contains("unsafe"), "{path}: {policy}");
        assert_eq!(reply.header("x-content-type-options"), Some("nosniff"));
        assert_eq!(reply.header("x-frame-options"), Some("DENY"));
        assert_eq!(reply.header("referrer-policy"), Some("no-referrer"));
    }
}

#[test]
fn a_host_header_that_would_change_the_policy_is_left_out_of_it() {
    let server = Server::shared();
    let mut raw = server.raw();
    raw.send(b"GET /ui/ HTTP/1.1\r\nHost: evil; script-src *\r\n\r\n")
        .expect("send");
    let reply = raw.read_response(REPLY_TIMEOUT).expect("an answer");
    assert_eq!(reply.status, 200);
    let policy = reply.header("content-security-policy").unwrap_or_default();
    assert!(!policy.contains("evil"), "{policy}");
    assert!(policy.contains("connect-src 'self';"), "{policy}");
}

#[test]
fn an_unchanged_console_file_is_answered_304_without_a_body_on_a_kept_connection() {
    let server = Server::shared();
    let first = raw_get(server, "GET", "/ui/app.js", "");
    let etag = first.header("etag").expect("an ETag").to_owned();
    let mut raw = server.raw();
    let conditional = format!(
        "GET /ui/app.js HTTP/1.1\r\nHost: {}\r\nIf-None-Match: W/\"other\", {etag}\r\n\r\n",
        server.addr()
    );
    raw.send(conditional.as_bytes()).expect("send");
    let reply = raw.read_response(REPLY_TIMEOUT).expect("a 304");
    assert_eq!(reply.status, 304, "{reply:?}");
    assert_eq!(reply.header("etag"), Some(etag.as_str()));
    assert_eq!(reply.header("content-length"), None, "a 304 has no length");
    assert_eq!(
        reply.header("content-type"),
        Some("text/javascript; charset=utf-8"),
        "the stored copy keeps its type"
    );
    // The next request on the same connection is read from the right place.
    raw.send(
        format!(
            "GET /ui/icon.svg HTTP/1.1\r\nHost: {}\r\n\r\n",
            server.addr()
        )
        .as_bytes(),
    )
    .expect("send");
    let next = raw.read_response(REPLY_TIMEOUT).expect("the next answer");
    assert_eq!(next.status, 200);
    assert!(next.body.starts_with("<svg"), "{}", next.body);

    let changed = raw_get(server, "GET", "/ui/app.js", "If-None-Match: \"0000\"\r\n");
    assert_eq!(changed.status, 200, "a stale copy gets the file");
    assert_eq!(changed.body, first.body);
}

#[test]
fn an_unknown_console_file_is_a_404_in_drp_s_error_shape() {
    let server = Server::shared();
    for path in ["/ui/nothing.js", "/ui/../api/v3/info", "/ui/a/b.js"] {
        let reply = raw_get(server, "GET", path, "");
        assert_drp_error(&reply, 404);
    }
}

#[test]
fn only_get_and_head_are_allowed_on_the_console() {
    let server = Server::shared();
    let reply = server.request("POST", "/ui/", &Auth::None, Some("{}"));
    assert_drp_error(&reply, 405);
    assert_eq!(reply.header("allow"), Some("GET, HEAD"));

    let full = raw_get(server, "GET", "/ui/style.css", "");
    let mut raw = server.raw();
    raw.send(
        format!(
            "HEAD /ui/style.css HTTP/1.1\r\nHost: {}\r\n\r\n",
            server.addr()
        )
        .as_bytes(),
    )
    .expect("send");
    let head = raw.read_head(REPLY_TIMEOUT).expect("a head");
    assert_eq!(head.status, 200);
    assert_eq!(
        head.header("content-length"),
        Some(full.body.len().to_string().as_str())
    );
    // No body followed: the next answer on the connection starts right after the head.
    raw.send(
        format!(
            "GET /ui/icon.svg HTTP/1.1\r\nHost: {}\r\n\r\n",
            server.addr()
        )
        .as_bytes(),
    )
    .expect("send");
    let next = raw.read_response(REPLY_TIMEOUT).expect("the next answer");
    assert_eq!(next.status, 200);
    assert!(next.body.starts_with("<svg"), "{}", next.body);
}

#[test]
fn the_activity_route_needs_credentials_and_a_numeric_after() {
    let server = Server::shared();
    let reply = server.request("GET", "/api/v3/info/activity", &Auth::None, None);
    assert_drp_error(&reply, 401);
    let reply = server.get("/api/v3/info/activity?after=soon");
    assert_drp_error(&reply, 400);
}

/// The activity answer as the admin.
fn activity(server: &Server, after: u64) -> Value {
    let reply = server.get(&format!("/api/v3/info/activity?after={after}"));
    assert_eq!(reply.status, 200, "{reply:?}");
    reply.json()
}

fn samples(answer: &Value) -> Vec<Value> {
    answer["Samples"].as_array().cloned().unwrap_or_default()
}

#[test]
fn activity_samples_count_published_and_delivered_events_and_open_websockets() {
    let server = Server::start();
    let first = activity(&server, 0);
    assert_eq!(first["IntervalSeconds"], 1);
    let start = samples(&first)
        .last()
        .and_then(|s| s["Tick"].as_u64())
        .unwrap_or(0);
    let kind = unique("activity");
    let mut client = server.ws(&server.admin());
    client.register(&format!("{kind}.*.*"));
    let published: Vec<u64> = server.publish_batch(&[
        event(&kind, "save", "a"),
        event(&kind, "save", "b"),
        event(&kind, "save", "c"),
    ]);
    let last = *published.last().expect("published");
    client.events_through(last);

    // Samples come once a second; wait for the ones that cover the publish.
    let newer = eventually("samples that count the publish", LOG_TIMEOUT, || {
        let newer = samples(&activity(&server, start));
        let sum = |field: &str| newer.iter().filter_map(|s| s[field].as_u64()).sum::<u64>();
        let websockets = newer.iter().filter_map(|s| s["Websockets"].as_u64()).max();
        if sum("Published") >= 3 && sum("Delivered") >= 3 && websockets >= Some(1) {
            Ok(newer)
        } else {
            Err(format!("{newer:?}"))
        }
    });
    let ticks: Vec<u64> = newer.iter().filter_map(|s| s["Tick"].as_u64()).collect();
    assert!(
        ticks.iter().all(|&t| t > start),
        "after= returns newer samples only: {ticks:?}"
    );
    assert!(
        ticks.windows(2).all(|w| w[1] == w[0] + 1),
        "oldest first: {ticks:?}"
    );
    for sample in &newer {
        for field in [
            "Time",
            "ApiConnections",
            "SlowConsumerCloses",
            "DeliveryLagSeconds",
        ] {
            assert!(sample.get(field).is_some(), "{field} missing from {sample}");
        }
    }
    let totals = activity(&server, u64::MAX);
    assert!(
        samples(&totals).is_empty(),
        "nothing is newer than the newest"
    );
    assert!(totals["EventsDelivered"].as_u64() >= Some(3), "{totals}");
    assert_eq!(totals["SlowConsumerCloses"], 0, "{totals}");
}
