//! `docs/protocol.md` §1: routes, HTTP limits, DRP-shaped errors and keep-alive, over real
//! sockets.

mod common;

use std::time::{Duration, Instant};

use common::{REPLY_TIMEOUT, Server, assert_drp_error};

fn admin_header(server: &Server) -> String {
    server.admin().header_value().unwrap_or_default()
}

#[test]
fn unknown_route_is_a_404_in_drps_error_shape() {
    let server = Server::shared();
    let reply = server.get("/api/v3/no-such-route");
    assert_drp_error(&reply, 404);
    let reply = server.get("/not-even-api");
    assert_drp_error(&reply, 404);
    server.assert_serving();
}

#[test]
fn wrong_method_is_a_405_in_drps_error_shape() {
    let server = Server::shared();
    let reply = server.request("DELETE", "/api/v3/info", &server.admin(), None);
    assert_drp_error(&reply, 405);
    let reply = server.request("PUT", "/api/v3/events", &server.admin(), Some("{}"));
    assert_drp_error(&reply, 405);
    server.assert_serving();
}

#[test]
fn malformed_request_line_is_a_400_in_drps_error_shape() {
    let server = Server::shared();
    let mut raw = server.raw();
    raw.send(b"THIS IS NOT HTTP\r\n\r\n").expect("send");
    let reply = raw
        .read_response(REPLY_TIMEOUT)
        .expect("an answer, not a drop");
    assert_drp_error(&reply, 400);
    server.assert_serving();
}

#[test]
fn malformed_header_line_is_a_400() {
    let server = Server::shared();
    let mut raw = server.raw();
    raw.send(b"GET /api/v3/info HTTP/1.1\r\nHost: x\r\nthis line has no colon\r\n\r\n")
        .expect("send");
    let reply = raw
        .read_response(REPLY_TIMEOUT)
        .expect("an answer, not a drop");
    assert_drp_error(&reply, 400);
    server.assert_serving();
}

#[test]
fn headers_over_16_kib_are_answered_with_431() {
    let server = Server::shared();
    let mut raw = server.raw();
    let request = format!(
        "GET /api/v3/info HTTP/1.1\r\nHost: x\r\nX-Padding: {}\r\n\r\n",
        "a".repeat(17 * 1024)
    );
    // The server may answer and close before reading everything; the answer is what counts.
    let _ = raw.send(request.as_bytes());
    let reply = raw
        .read_response(REPLY_TIMEOUT)
        .expect("an answer, not a drop");
    assert_drp_error(&reply, 431);
    server.assert_serving();
}

#[test]
fn headers_just_under_16_kib_are_served() {
    let server = Server::shared();
    let mut raw = server.raw();
    let request = format!(
        "GET /api/v3/info HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\nX-Padding: {}\r\n\r\n",
        admin_header(server),
        "a".repeat(15 * 1024)
    );
    raw.send(request.as_bytes()).expect("send");
    let reply = raw.read_response(REPLY_TIMEOUT).expect("an answer");
    assert_eq!(reply.status, 200, "{reply:?}");
}

#[test]
fn body_over_1_mib_is_answered_413_from_content_length_without_sending_it() {
    let server = Server::shared();
    let mut raw = server.raw();
    let head = format!(
        "POST /api/v3/events HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        admin_header(server),
        1024 * 1024 + 1
    );
    raw.send(head.as_bytes()).expect("send the head only");
    let reply = raw
        .read_response(REPLY_TIMEOUT)
        .expect("413 must come before the body is sent");
    assert_drp_error(&reply, 413);
    server.assert_serving();
}

#[test]
fn headers_trickled_slowly_get_408_within_10_seconds_and_a_close() {
    let server = Server::shared();
    let mut raw = server.raw();
    let started = Instant::now();
    raw.send(b"GET /api/v3/info HTTP/1.1\r\n").expect("send");
    // One header line a second: the connection is never idle, the head is never complete.
    let reply = loop {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "no 408 within 15 s of the first byte"
        );
        if raw.send(b"X-Slow: y\r\n").is_err() {
            // Closed under us: the 408 must already be waiting in the receive buffer.
            break raw
                .read_response(REPLY_TIMEOUT)
                .expect("408 before the close");
        }
        match raw.read_response(Duration::from_secs(1)) {
            Ok(reply) => break reply,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("connection ended without a 408: {e}"),
        }
    };
    let elapsed = started.elapsed();
    assert_drp_error(&reply, 408);
    assert!(
        elapsed >= Duration::from_millis(9_500) && elapsed <= Duration::from_secs(12),
        "408 should come about 10 s after the first byte, came after {elapsed:?}"
    );
    assert!(
        raw.closed_within(REPLY_TIMEOUT),
        "connection must be closed after the 408"
    );
    server.assert_serving();
}

#[test]
fn keep_alive_serves_several_requests_on_one_connection() {
    let server = Server::shared();
    let mut raw = server.raw();
    let auth = admin_header(server);
    for path in [
        "/api/v3/info",
        "/api/v3/no-such-route",
        "/api/v3/info",
        "/api/v3/info",
    ] {
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\n\r\n");
        raw.send(request.as_bytes())
            .expect("the connection stays open");
        let reply = raw
            .read_response(REPLY_TIMEOUT)
            .expect("an answer on the same connection");
        if path == "/api/v3/info" {
            assert_eq!(reply.status, 200, "{reply:?}");
            assert!(reply.json().is_object(), "info is a JSON object");
        } else {
            assert_drp_error(&reply, 404);
        }
    }
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let server = Server::shared();
    let mut raw = server.raw();
    let auth = admin_header(server);
    let one = format!("GET /api/v3/info HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\n\r\n");
    let two = format!("GET /api/v3/nope HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\n\r\n");
    raw.send(format!("{one}{two}{one}").as_bytes())
        .expect("send");
    let statuses: Vec<u16> = (0..3)
        .map(|_| raw.read_response(REPLY_TIMEOUT).expect("answer").status)
        .collect();
    assert_eq!(statuses, [200, 404, 200]);
}
