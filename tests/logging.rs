//! The server log: levels are checked, clients' failures are logged at info (rate-limited),
//! third-party crates stay at warn, and the start line says where and how herald runs.

mod common;

use std::io::Write;

use common::{ADMIN, Auth, Options, Server, serve_to_exit, unique};

/// The valid levels, as every refusal lists them.
const LEVELS: &str = "off, error, warn, info, debug, trace";

#[test]
fn a_misspelled_log_level_is_refused_at_start_with_the_valid_levels() {
    let dir = tempfile::tempdir().expect("a temp dir");
    for misspelled in ["warning", "verbose"] {
        let exit = serve_to_exit(dir.path(), &["--log-level", misspelled]);
        assert!(!exit.success, "{misspelled} was accepted: {exit:?}");
        assert!(exit.stderr.contains(misspelled), "{exit:?}");
        assert!(exit.stderr.contains("--log-level"), "{exit:?}");
        assert!(exit.stderr.contains(LEVELS), "{exit:?}");
    }
}

#[test]
fn directives_with_a_level_are_a_valid_log_level() {
    let server = Server::start_with(Options::with_args(&["--log-level", "herald=debug,info"]));
    server.assert_serving();
}

#[test]
fn a_failed_login_is_logged_with_address_and_user_but_never_the_password() {
    let server = Server::start();
    let user = unique("intruder");
    let password = unique("secret-guess-");
    let reply = server.request("GET", "/api/v3/info", &Auth::basic(&user, &password), None);
    assert_eq!(reply.status, 403, "{reply:?}");
    let line = server.wait_for_log_line(&["login failed", &user]);
    assert!(line.contains("INFO"), "{line}");
    assert!(line.contains("remote=127.0.0.1:"), "{line}");
    assert!(line.contains("reason=\"unknown_user\""), "{line}");
    let wrong = unique("wrong-password-");
    let reply = server.request("GET", "/api/v3/info", &Auth::basic(ADMIN, &wrong), None);
    assert_eq!(reply.status, 403, "{reply:?}");
    let line = server.wait_for_log_line(&["login failed", "bad_password"]);
    assert!(line.contains(ADMIN), "{line}");
    let log = server.stderr();
    assert!(
        !log.contains(&password),
        "a password reached the log:\n{log}"
    );
    assert!(!log.contains(&wrong), "a password reached the log:\n{log}");
}

#[test]
fn a_refused_request_is_logged_with_its_route_template_and_status() {
    let server = Server::start();
    let missing = "6e0bdf27-5b40-4d6c-9e4b-0f2f9a1c0c11";
    let reply = server.get(&format!("/api/v3/machines/{missing}"));
    assert_eq!(reply.status, 404, "{reply:?}");
    let line = server.wait_for_log_line(&["request refused", "status=404"]);
    assert!(line.contains("INFO"), "{line}");
    assert!(line.contains("route=\"/api/v3/{type}/{key}\""), "{line}");
    assert!(line.contains("method=\"GET\""), "{line}");
    assert!(line.contains("remote=127.0.0.1:"), "{line}");

    let reply = server.request("DELETE", "/api/v3/info", &server.admin(), None);
    assert_eq!(reply.status, 405, "{reply:?}");
    let line = server.wait_for_log_line(&["request refused", "status=405"]);
    assert!(line.contains("route=\"/api/v3/info\""), "{line}");
}

#[test]
fn plain_http_sent_to_the_tls_port_is_logged_as_a_failed_handshake() {
    let server = Server::start_with(Options {
        tls: true,
        ..Options::default()
    });
    let mut tcp = server.connect_tcp();
    tcp.write_all(b"GET /api/v3/info HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .expect("send plain HTTP");
    let line = server.wait_for_log_line(&["TLS handshake failed"]);
    assert!(line.contains("INFO"), "{line}");
    assert!(line.contains("plain HTTP"), "{line}");
    assert!(line.contains("https://"), "{line}");
    assert!(line.contains("remote=127.0.0.1:"), "{line}");
}

#[test]
fn third_party_crates_stay_at_warn_unless_a_directive_names_them() {
    // At debug, herald's own lines are there but rustls' debug lines are not.
    let quiet = Server::start_with(Options {
        tls: true,
        ..Options::with_args(&["--log-level", "debug"])
    });
    assert_eq!(quiet.get("/api/v3/no-such-route").status, 404);
    // Same connection, same core: the handshake's lines would precede this one.
    quiet.wait_for_log_line(&["request refused"]);
    let log = quiet.stderr();
    assert!(
        !log.lines()
            .any(|l| l.contains("rustls") || l.contains("sled")),
        "third-party lines below warn:\n{log}"
    );

    let asked = Server::start_with(Options {
        tls: true,
        ..Options::with_args(&["--log-level", "info,rustls=debug"])
    });
    assert_eq!(asked.get("/api/v3/no-such-route").status, 404);
    asked.wait_for_log_line(&["DEBUG", "rustls"]);
}

#[test]
fn the_start_line_gives_version_data_dir_urls_to_paste_durability_seqs_driver_and_cores() {
    let server = Server::start_with(Options {
        listen: Some("0.0.0.0:0".into()),
        ..Options::default()
    });
    let line = server.wait_for_log_line(&["listening on"]);
    let port = server.addr().port();
    assert!(
        line.contains(&format!("listening on http://127.0.0.1:{port}")),
        "loopback first: {line}"
    );
    assert!(!line.contains("0.0.0.0"), "{line}");
    for part in [
        format!("version=\"{}\"", env!("CARGO_PKG_VERSION")),
        format!("data_dir={}", server.data_dir().display()),
        "durability=\"sync\"".to_string(),
        "first_seq=".to_string(),
        "last_seq=".to_string(),
        "driver=".to_string(),
        "cores=2".to_string(),
    ] {
        assert!(line.contains(&part), "{part} is missing: {line}");
    }
    // Every URL it lists answers.
    let listed = line
        .split("listening on ")
        .nth(1)
        .and_then(|rest| rest.split(" version=").next())
        .expect("the URL list");
    for url in listed.split(", ") {
        let addr = url.trim_start_matches("http://");
        let addr: std::net::SocketAddr = match addr.parse() {
            Ok(addr) => addr,
            Err(_) => continue, // a host name, when interfaces cannot be listed
        };
        std::net::TcpStream::connect_timeout(&addr, common::REPLY_TIMEOUT)
            .unwrap_or_else(|e| panic!("{url} from the start line does not answer: {e}"));
    }
}
