//! Authentication under attack (`docs/protocol.md` §2): failed-login budgets per address and
//! per user name answered with 429, argon2 on its own bounded pool, unknown users costing a
//! verification, and `--max-connections`.

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Instant;

use common::{
    ADMIN, Auth, LOG_TIMEOUT, Options, REPLY_TIMEOUT, Server, assert_drp_error, event, eventually,
};

const VERIFICATIONS: &str = "herald_password_verifications_total";

fn loopback(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
}

/// A server whose budgets allow `burst` failures, then one a minute (none within a test).
fn server_with_burst(burst: u32) -> Server {
    Server::start_with(Options::with_args(&[
        &format!("--auth-failure-burst={burst}"),
        "--auth-failures-per-minute=1",
    ]))
}

/// `GET /api/v3/info` from `source` with these credentials, on a connection of its own; an
/// argon2 run in a debug build on a busy machine may take seconds, hence the log's timeout.
fn info_from(server: &Server, source: u8, auth: &Auth) -> common::HttpReply {
    server
        .raw_from(loopback(source))
        .get("/api/v3/info", auth, LOG_TIMEOUT)
        .unwrap_or_else(|e| panic!("GET /api/v3/info from 127.0.0.{source}: {e}"))
}

#[test]
fn failed_logins_from_one_address_beyond_the_budget_get_429_with_retry_after() {
    let server = server_with_burst(3);
    // Each guess names another user, so only the address's budget is spent.
    for i in 0..3 {
        let reply = info_from(&server, 1, &Auth::basic(&format!("nobody-{i}"), "guess"));
        assert_eq!(reply.status, 403, "{reply:?}");
    }
    let hashed = server.metric(VERIFICATIONS);
    let reply = info_from(&server, 1, &Auth::basic("nobody-else", "guess"));
    assert_drp_error(&reply, 429);
    let retry_after: u64 = reply
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("429 without Retry-After seconds: {reply:?}"));
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    assert!(
        reply.body.contains("failed from this address"),
        "{}",
        reply.body
    );
    assert_eq!(
        server.metric(VERIFICATIONS),
        hashed,
        "a throttled attempt ran argon2"
    );
    assert_eq!(
        server.metric(r#"herald_auth_throttled_total{by="address"}"#),
        1.0
    );
    server.wait_for_log_line(&["login throttled", "127.0.0.1", "nobody-else"]);
    // Another address is not affected.
    let other = info_from(&server, 2, &Auth::basic("nobody-0", "guess"));
    assert_eq!(other.status, 403, "{other:?}");
}

#[test]
fn a_flood_of_wrong_passwords_for_one_user_is_throttled_by_name_from_any_address() {
    let server = server_with_burst(3);
    for source in 2..5 {
        let reply = info_from(&server, source, &Auth::basic(ADMIN, "guess"));
        assert_eq!(reply.status, 403, "{reply:?}");
    }
    let reply = info_from(&server, 5, &Auth::basic(ADMIN, "guess"));
    assert_drp_error(&reply, 429);
    assert!(reply.header("retry-after").is_some(), "{reply:?}");
    assert!(reply.body.contains("for this user name"), "{}", reply.body);
    assert_eq!(
        server.metric(r#"herald_auth_throttled_total{by="user"}"#),
        1.0
    );
    // The same address may still try another name.
    let other = info_from(&server, 5, &Auth::basic("someone-else", "guess"));
    assert_eq!(other.status, 403, "{other:?}");
}

#[test]
fn successful_logins_do_not_spend_the_budget() {
    let server = server_with_burst(2);
    for i in 0..5 {
        server.create_user(&format!("user-{i}"), "right-password", &["superuser"]);
    }
    // Five first logins (each verified with argon2) from one address within a budget of two.
    for i in 0..5 {
        let reply = info_from(
            &server,
            3,
            &Auth::basic(&format!("user-{i}"), "right-password"),
        );
        assert_eq!(reply.status, 200, "{reply:?}");
    }
    for _ in 0..2 {
        let reply = info_from(&server, 3, &Auth::basic("user-0", "wrong"));
        assert_eq!(reply.status, 403, "{reply:?}");
    }
    assert_drp_error(&info_from(&server, 3, &Auth::basic("user-1", "wrong")), 429);
}

#[test]
fn an_unknown_user_costs_a_password_verification() {
    let server = Server::start();
    let before = server.metric(VERIFICATIONS);
    let reply = info_from(&server, 1, &Auth::basic("no-such-user", "guess"));
    assert_eq!(reply.status, 403, "{reply:?}");
    assert_eq!(server.metric(VERIFICATIONS), before + 1.0);
    let reply = info_from(&server, 1, &Auth::basic(ADMIN, "wrong"));
    assert_eq!(reply.status, 403, "{reply:?}");
    assert_eq!(server.metric(VERIFICATIONS), before + 2.0);
}

#[test]
fn a_good_login_during_a_flood_of_bad_ones_is_answered_quickly() {
    let server = Arc::new(Server::start());
    server.create_user("alice", "alices-password", &["superuser"]);
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicU64::new(0));
    let throttled = Arc::new(AtomicU64::new(0));
    let flood: Vec<_> = (0..16)
        .map(|_| {
            let (server, stop) = (server.clone(), stop.clone());
            let (answered, throttled) = (answered.clone(), throttled.clone());
            thread::spawn(move || {
                let mut raw = server.raw_from(loopback(1));
                while !stop.load(Ordering::Relaxed) {
                    let guess = Auth::basic(ADMIN, "guess");
                    let Ok(reply) = raw.get("/api/v3/info", &guess, LOG_TIMEOUT) else {
                        raw = server.raw_from(loopback(1));
                        continue;
                    };
                    answered.fetch_add(1, Ordering::Relaxed);
                    if reply.status == 429 {
                        throttled.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    eventually(
        "the flood being throttled",
        REPLY_TIMEOUT * 4,
        || match throttled.load(Ordering::Relaxed) {
            0 => Err("no 429 yet"),
            _ => Ok(()),
        },
    );
    let before = answered.load(Ordering::Relaxed);
    let started = Instant::now();
    let reply = info_from(&server, 2, &Auth::basic("alice", "alices-password"));
    let took = started.elapsed();
    let after = answered.load(Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    for thread in flood {
        let _ = thread.join();
    }
    assert_eq!(reply.status, 200, "{reply:?}");
    assert!(
        after > before,
        "the flood was not being answered while the good login waited"
    );
    assert!(took < REPLY_TIMEOUT, "the good login took {took:?}");
}

#[test]
fn many_requests_at_once_with_one_unchecked_password_are_all_answered_for_one_hash() {
    let server = Server::start();
    server.create_user("bob", "bobs-password", &["superuser"]);
    let before = server.metric(VERIFICATIONS);
    // Sixteen connections from one address present the same password together, as a pool of
    // publishers does once its cached login has expired: none may be refused for the address's
    // few checks in progress, and the password is hashed once.
    let together = Barrier::new(16);
    let replies: Vec<common::HttpReply> = thread::scope(|scope| {
        let requests: Vec<_> = (0..16)
            .map(|_| {
                scope.spawn(|| {
                    let mut raw = server.raw_from(loopback(1));
                    together.wait();
                    raw.get(
                        "/api/v3/info",
                        &Auth::basic("bob", "bobs-password"),
                        LOG_TIMEOUT,
                    )
                })
            })
            .collect();
        requests
            .into_iter()
            .map(|request| match request.join() {
                Ok(Ok(reply)) => reply,
                Ok(Err(e)) => panic!("GET /api/v3/info: {e}"),
                Err(_) => panic!("a request thread panicked"),
            })
            .collect()
    });
    for reply in &replies {
        assert_eq!(reply.status, 200, "{reply:?}");
    }
    assert_eq!(server.metric(VERIFICATIONS), before + 1.0);
}

#[test]
fn connections_beyond_max_connections_get_503_and_existing_ones_keep_streaming() {
    let server = Server::start_with(Options::with_args(&["--max-connections=4"]));
    // A token, so no connection waits for argon2.
    let admin = Auth::bearer(&server.mint_token(ADMIN, server.admin_password(), 600));
    let mut watcher = server.ws(&admin);
    watcher.register("flood.*.*");
    let mut accepted = Vec::new();
    let mut refused = None;
    for _ in 0..6 {
        let mut raw = server.raw();
        match raw.get("/api/v3/info", &admin, REPLY_TIMEOUT) {
            Ok(reply) if reply.status == 200 => accepted.push(raw),
            Ok(reply) => {
                refused = Some(reply);
                break;
            }
            Err(e) => panic!("a connection got neither an answer nor a 503: {e}"),
        }
    }
    let refused = refused.unwrap_or_else(|| panic!("6 connections over a limit of 4 were served"));
    assert_eq!(refused.status, 503, "{refused:?}");
    assert!(
        refused.body.contains("too many connections"),
        "{}",
        refused.body
    );
    // The websocket opened before the limit still streams.
    let mut publisher = accepted
        .pop()
        .unwrap_or_else(|| panic!("no connection was accepted"));
    let body = event("flood", "create", "still-streaming").to_string();
    let request = format!(
        "POST /api/v3/events HTTP/1.1\r\nHost: herald\r\nAuthorization: {}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        admin.header_value().unwrap_or_default(),
        body.len()
    );
    publisher
        .send(request.as_bytes())
        .expect("send the publish");
    let published = publisher
        .read_response(REPLY_TIMEOUT)
        .expect("publish answer");
    assert!((200..300).contains(&published.status), "{published:?}");
    assert_eq!(watcher.expect_event()["Key"], "still-streaming");
    // Closed connections give their places back.
    drop(accepted);
    drop(publisher);
    eventually(
        "a new connection being served",
        REPLY_TIMEOUT,
        || match server.raw().get("/api/v3/info", &admin, REPLY_TIMEOUT) {
            Ok(reply) if reply.status == 200 => Ok(()),
            Ok(reply) => Err(format!("status {}", reply.status)),
            Err(e) => Err(e.to_string()),
        },
    );
}
