//! `docs/protocol.md` §1: HTTPS and wss with the self-signed certificate generated on first start.

mod common;

use common::{Auth, Options, Server, event, unique};

fn tls_options(data_dir: Option<std::path::PathBuf>) -> Options {
    Options {
        tls: true,
        data_dir,
        ..Options::default()
    }
}

#[test]
fn https_and_wss_work_with_the_generated_certificate() {
    let server = Server::start_with(tls_options(None));
    server.assert_serving();
    let kind = unique("tls");
    let mut client = server.ws(&server.admin());
    client.register(&format!("{kind}.*.*"));
    let seq = server.publish(event(&kind, "save", "k"));
    let received = client.expect_event();
    assert_eq!(received["Seq"], seq, "{received}");
    assert_eq!(received["Key"], "k", "{received}");
}

#[test]
fn second_start_on_the_same_data_dir_reuses_the_certificate_and_users() {
    let data_dir = tempfile::tempdir().expect("a data directory");
    let user = unique("kept");
    let first_cert = {
        let server = Server::start_with(tls_options(Some(data_dir.path().to_path_buf())));
        server.create_user(&user, "kept-pw", &["superuser"]);
        std::fs::read(server.cert_path()).expect("certificate")
    };
    let server = Server::start_with(tls_options(Some(data_dir.path().to_path_buf())));
    let second_cert = std::fs::read(server.cert_path()).expect("certificate");
    assert_eq!(
        first_cert, second_cert,
        "the certificate must be reused, not regenerated"
    );
    server.assert_serving();
    let reply = server.request("GET", "/api/v3/info", &Auth::basic(&user, "kept-pw"), None);
    assert_eq!(reply.status, 200, "users survive a restart: {reply:?}");
}

#[test]
fn sigterm_does_not_wait_for_a_connection_that_finished_its_handshake_and_sent_nothing() {
    // Browsers open such connections ahead of need; shutdown closes them like idle ones.
    let shutdown_timeout = std::time::Duration::from_secs(30);
    let server = Server::start_with(tls_options(None).and_args(&["--shutdown-timeout", "30s"]));
    let _preconnected = server
        .tls_session_as("127.0.0.1")
        .expect("a completed TLS handshake");
    let started = std::time::Instant::now();
    server.terminate();
    let took = started.elapsed();
    assert!(
        took < shutdown_timeout / 3,
        "SIGTERM took {took:?}, waiting on a connection that never sent a request"
    );
}
