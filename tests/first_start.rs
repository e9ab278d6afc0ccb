//! The first start and every start after it: the listening port and the data directory belong
//! to one herald, the configured admin password is applied, a lost log is not silently
//! replaced, the default password is not offered to the network, and the generated
//! certificate names every address herald is reached by.

mod common;

use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use common::{ADMIN, Auth, DRP_DEFAULT_PASSWORD, Options, Server, event, unique};

fn with_password(dir: &Path, password: Option<&str>) -> Options {
    Options {
        admin_password: password.map(str::to_string),
        ..Options::in_dir(dir)
    }
}

fn status_as(server: &Server, password: &str) -> u16 {
    server
        .request("GET", "/api/v3/info", &Auth::basic(ADMIN, password), None)
        .status
}

/// The addresses of this machine's interfaces other than loopback, for checks that reach
/// herald the way another machine would.
fn outside_addresses() -> Vec<IpAddr> {
    if_addrs::get_if_addrs()
        .expect("list interface addresses")
        .iter()
        .map(|interface| interface.ip())
        .filter(|ip| !ip.is_loopback())
        .collect()
}

/// The IPv4 ones, which a listener on 0.0.0.0 serves.
fn outside_ipv4_addresses() -> Vec<IpAddr> {
    outside_addresses()
        .into_iter()
        .filter(IpAddr::is_ipv4)
        .collect()
}

fn accepts(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok()
}

fn refused_as_in_use(failed: &common::Failed, addr: SocketAddr) {
    assert_eq!(failed.code, Some(1), "{}", failed.stderr);
    assert!(
        failed
            .stderr
            .to_ascii_lowercase()
            .contains("address already in use"),
        "{}",
        failed.stderr
    );
    assert!(
        failed.stderr.contains(&addr.to_string()),
        "{}",
        failed.stderr
    );
}

#[test]
fn a_second_herald_on_a_port_in_use_fails_with_address_already_in_use() {
    let first = Server::start();
    let failed = Server::start_failing(Options {
        listen: Some(first.addr().to_string()),
        ..Options::default()
    });
    refused_as_in_use(&failed, first.addr());
    first.assert_serving();
}

#[test]
fn a_port_held_by_another_process_even_with_so_reuseport_is_refused() {
    let holder =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("a socket");
    holder.set_reuse_address(true).expect("SO_REUSEADDR");
    holder.set_reuse_port(true).expect("SO_REUSEPORT");
    holder
        .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .expect("bind");
    holder.listen(8).expect("listen");
    let addr = holder
        .local_addr()
        .expect("its address")
        .as_socket()
        .expect("an inet address");
    let failed = Server::start_failing(Options {
        listen: Some(addr.to_string()),
        ..Options::default()
    });
    refused_as_in_use(&failed, addr);
}

/// Listening sockets on `port` in the kernel's table of IPv4 sockets.
fn listeners_on(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("read /proc/net/tcp");
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let listening = fields.get(3) == Some(&"0A");
            let on_port = fields
                .get(1)
                .and_then(|local| local.rsplit_once(':'))
                .and_then(|(_, hex)| u16::from_str_radix(hex, 16).ok())
                == Some(port);
            listening && on_port
        })
        .count()
}

#[test]
fn the_cores_of_one_herald_share_its_port_and_each_accepts() {
    // The harness starts two cores.
    let server = Server::start();
    assert_eq!(listeners_on(server.addr().port()), 2);
    // Each new connection goes to one core's socket by a hash of its ports, so 24 answered
    // requests on fresh connections would all land on one core only once in 2^23 runs.
    for _ in 0..24 {
        let mut raw = server.raw();
        raw.send(b"GET /metrics HTTP/1.1\r\nHost: herald\r\nConnection: close\r\n\r\n")
            .expect("send");
        let reply = raw
            .read_response(common::REPLY_TIMEOUT)
            .expect("every core answers");
        assert_eq!(reply.status, 200, "{reply:?}");
    }
}

#[test]
fn a_second_herald_on_the_same_data_dir_is_refused_naming_the_directory() {
    let dir = tempfile::tempdir().expect("a data directory");
    let first = Server::start_with(Options::in_dir(dir.path()));
    let failed = Server::start_failing(Options::in_dir(dir.path()));
    assert_eq!(failed.code, Some(1), "{}", failed.stderr);
    assert!(
        failed.stderr.contains(&dir.path().display().to_string())
            && failed.stderr.contains("in use by another herald"),
        "{}",
        failed.stderr
    );
    first.assert_serving();
}

#[test]
fn the_admin_password_is_applied_on_every_start_and_the_log_says_what_happened() {
    let dir = tempfile::tempdir().expect("a data directory");
    let warns_of_default = |stderr: &str| stderr.contains(DRP_DEFAULT_PASSWORD);

    let server = Server::start_with(with_password(dir.path(), None));
    let stderr = server.stderr();
    assert!(
        stderr.contains("created the admin user rocketskates with DRP's default password")
            && warns_of_default(&stderr),
        "{stderr}"
    );
    server.terminate();

    // The walkthrough's mistake: a password given to a data directory made without one.
    let server = Server::start_with(with_password(dir.path(), Some("change-me")));
    let stderr = server.stderr();
    assert!(
        stderr.contains("set the admin user rocketskates's password"),
        "{stderr}"
    );
    assert!(!warns_of_default(&stderr), "{stderr}");
    assert_eq!(status_as(&server, "change-me"), 200);
    assert_eq!(status_as(&server, DRP_DEFAULT_PASSWORD), 403);
    server.terminate();

    let server = Server::start_with(with_password(dir.path(), Some("change-me")));
    assert!(
        server.stderr().contains("(unchanged)"),
        "{}",
        server.stderr()
    );
    server.terminate();

    let file = dir.path().join("admin-password-file");
    std::fs::write(&file, "from-a-file\n").expect("write the password file");
    let server = Server::start_with(
        with_password(dir.path(), None)
            .and_args(&["--admin-password-file", &file.display().to_string()]),
    );
    assert!(
        server
            .stderr()
            .contains("set the admin user rocketskates's password"),
        "{}",
        server.stderr()
    );
    assert_eq!(status_as(&server, "from-a-file"), 200);
    assert_eq!(status_as(&server, "change-me"), 403);
    server.terminate();

    // Without a password the stored one stays, and no default-password warning is given.
    let server = Server::start_with(with_password(dir.path(), None));
    let stderr = server.stderr();
    assert!(stderr.contains("keeps its stored password"), "{stderr}");
    assert!(!warns_of_default(&stderr), "{stderr}");
    assert_eq!(status_as(&server, "from-a-file"), 200);
    server.terminate();

    // The default password given on purpose is still the default: the warning is given.
    let server = Server::start_with(with_password(dir.path(), Some(DRP_DEFAULT_PASSWORD)));
    assert!(warns_of_default(&server.stderr()), "{}", server.stderr());
    assert_eq!(status_as(&server, DRP_DEFAULT_PASSWORD), 200);
}

/// Starts on `dir`, publishes one event and stops; answers the log's Epoch.
fn a_log_with_one_event(dir: &Path) -> String {
    let server = Server::start_with(Options::in_dir(dir));
    server.publish(event(&unique("kept"), "save", "k"));
    let epoch = server.info()["Epoch"]
        .as_str()
        .expect("an Epoch")
        .to_string();
    server.terminate();
    epoch
}

fn refused_as_log_missing(dir: &Path, epoch: &str) {
    let failed = Server::start_failing(Options::in_dir(dir));
    assert_eq!(failed.code, Some(1), "{}", failed.stderr);
    let stderr = &failed.stderr;
    assert!(
        stderr.contains("empty or missing") && stderr.contains(epoch) && stderr.contains("--reset"),
        "{stderr}"
    );
    assert!(!stderr.contains("another herald"), "{stderr}");
}

#[test]
fn an_emptied_or_missing_database_refuses_to_start_until_reset_is_given() {
    let dir = tempfile::tempdir().expect("a data directory");
    let epoch = a_log_with_one_event(dir.path());
    let db = dir.path().join("db");

    // Emptied: the database file truncated, with nothing left for sled to recover from.
    for entry in std::fs::read_dir(&db).expect("list the database") {
        let path = entry.expect("an entry").path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with("snap.") {
            std::fs::remove_file(&path).expect("remove a snapshot");
        }
    }
    std::fs::File::create(db.join("db")).expect("truncate the database file");
    refused_as_log_missing(dir.path(), &epoch);
    // Refusing changed nothing: it is refused again, the same way.
    refused_as_log_missing(dir.path(), &epoch);

    // Missing altogether.
    std::fs::remove_dir_all(&db).expect("remove the database");
    refused_as_log_missing(dir.path(), &epoch);

    let server = Server::start_with(Options::in_dir(dir.path()).and_args(&["--reset"]));
    let new_epoch = server.info()["Epoch"]
        .as_str()
        .expect("an Epoch")
        .to_string();
    assert_ne!(new_epoch, epoch, "a new log has a new Epoch");
    assert!(server.stderr().contains("--reset"), "{}", server.stderr());
    server.terminate();

    // The new log is now the one the directory holds: no --reset is needed any more.
    let server = Server::start_with(Options::in_dir(dir.path()));
    assert_eq!(server.info()["Epoch"], new_epoch.as_str());
}

#[test]
fn a_corrupted_database_is_reported_as_damaged_not_as_another_herald_running() {
    let dir = tempfile::tempdir().expect("a data directory");
    // Two runs: sled writes a snapshot when it opens a database that has a log, and damage
    // under a snapshot is what it reports as corruption (damage without one reads as an empty
    // database, which the marker catches as above).
    a_log_with_one_event(dir.path());
    a_log_with_one_event(dir.path());
    let file = dir.path().join("db").join("db");
    // Every seventh byte flipped: the pages the snapshot points at fail their checksums.
    let mut bytes = std::fs::read(&file).expect("read the database file");
    for byte in bytes.iter_mut().step_by(7) {
        *byte ^= 0xFF;
    }
    std::fs::write(&file, bytes).expect("overwrite the database file");
    let failed = Server::start_failing(Options::in_dir(dir.path()));
    assert_eq!(failed.code, Some(1), "{}", failed.stderr);
    assert!(
        failed.stderr.contains("damaged") && failed.stderr.contains("backup"),
        "{}",
        failed.stderr
    );
    assert!(
        !failed.stderr.contains("another herald"),
        "{}",
        failed.stderr
    );
}

/// Starts herald without `--listen` (so on DRP's port 8092), or reports that the port is taken.
fn start_on_the_default_port(admin_password: Option<&str>) -> Result<Server, common::Failed> {
    Server::try_start_with(Options {
        admin_password: admin_password.map(str::to_string),
        listen: None,
        ..Options::default()
    })
}

#[test]
fn with_the_default_password_and_no_listen_address_herald_listens_on_loopback_only() {
    let outside = outside_addresses();
    // Both starts use port 8092, DRP's, so they run one after the other in this one test.
    match start_on_the_default_port(None) {
        Ok(server) => {
            assert_eq!(server.addr(), SocketAddr::from(([127, 0, 0, 1], 8092)));
            assert!(
                server.stderr().contains("listening on 127.0.0.1:8092 only"),
                "{}",
                server.stderr()
            );
            for ip in &outside {
                assert!(
                    !accepts(SocketAddr::new(*ip, 8092)),
                    "{ip}:8092 must not be reachable"
                );
            }
            server.terminate();
        }
        // Something else holds 8092 here; the address herald tried still shows its choice.
        Err(failed) => assert!(
            failed.stderr.contains("cannot listen on 127.0.0.1:8092"),
            "{}",
            failed.stderr
        ),
    }
    match start_on_the_default_port(Some("not-the-default")) {
        Ok(server) => {
            let outside = outside_ipv4_addresses();
            assert!(
                !server.stderr().contains("only"),
                "no loopback notice with a password of one's own: {}",
                server.stderr()
            );
            for ip in &outside {
                assert!(accepts(SocketAddr::new(*ip, 8092)), "{ip}:8092");
            }
            server.terminate();
        }
        Err(failed) => assert!(
            failed.stderr.contains("cannot listen on 0.0.0.0:8092"),
            "{}",
            failed.stderr
        ),
    }
}

#[test]
fn an_explicit_listen_address_is_kept_even_with_the_default_password() {
    let outside = outside_ipv4_addresses();
    let server = Server::start_with(Options {
        admin_password: None,
        listen: Some("0.0.0.0:0".to_string()),
        ..Options::default()
    });
    assert!(!server.stderr().contains(" only"), "{}", server.stderr());
    for ip in outside {
        assert!(accepts(SocketAddr::new(ip, server.addr().port())), "{ip}");
    }
    assert_eq!(status_as(&server, DRP_DEFAULT_PASSWORD), 200);
}

fn tls_on(dir: &Path, names: &[&str]) -> Options {
    Options {
        tls: true,
        args: names
            .iter()
            .flat_map(|name| ["--tls-san".to_string(), name.to_string()])
            .collect(),
        ..Options::in_dir(dir)
    }
}

#[test]
fn the_certificate_holds_every_interface_address_and_the_tls_san_names() {
    let dir = tempfile::tempdir().expect("a data directory");
    let server = Server::start_with(tls_on(dir.path(), &["herald.example.org", "192.0.2.77"]));
    let mut names: Vec<String> = [
        "localhost",
        "127.0.0.1",
        "::1",
        "herald.example.org",
        "192.0.2.77",
    ]
    .map(str::to_string)
    .to_vec();
    names.extend(outside_addresses().iter().filter_map(|ip| {
        // Link-local addresses need a zone to be used at all; herald leaves them out.
        let link_local = match ip {
            IpAddr::V4(v4) => v4.is_link_local(),
            IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
        };
        (!link_local).then(|| ip.to_string())
    }));
    for name in &names {
        server
            .tls_handshake_as(name)
            .unwrap_or_else(|e| panic!("the certificate must hold {name}: {e}"));
    }
    assert!(server.tls_handshake_as("not-named.example.org").is_err());
}

#[test]
fn a_certificate_lacking_a_newly_required_name_is_regenerated_and_the_log_says_so() {
    let dir = tempfile::tempdir().expect("a data directory");
    let cert = dir.path().join("tls").join("cert.pem");
    let server = Server::start_with(tls_on(dir.path(), &[]));
    assert!(server.tls_handshake_as("added.example.org").is_err());
    let first = std::fs::read(&cert).expect("the certificate");
    server.terminate();

    let server = Server::start_with(tls_on(dir.path(), &["added.example.org"]));
    assert!(
        server.stderr().contains("lacks added.example.org"),
        "{}",
        server.stderr()
    );
    let second = std::fs::read(&cert).expect("the certificate");
    assert_ne!(first, second);
    server
        .tls_handshake_as("added.example.org")
        .expect("the new certificate holds the new name");
    server.terminate();

    let server = Server::start_with(tls_on(dir.path(), &["added.example.org"]));
    assert!(!server.stderr().contains("lacks"), "{}", server.stderr());
    assert_eq!(std::fs::read(&cert).expect("the certificate"), second);
}

#[test]
fn plain_http_sent_to_the_tls_port_gets_a_plain_400_naming_https() {
    let server = Server::start_with(Options {
        tls: true,
        ..Options::default()
    });
    let mut raw = server.raw_tcp();
    let host = server.addr().to_string();
    raw.send(format!("GET /api/v3/info HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes())
        .expect("send");
    let reply = raw
        .read_response(common::REPLY_TIMEOUT)
        .expect("a plain HTTP answer");
    common::assert_drp_error(&reply, 400);
    assert!(
        reply.body.contains(&format!("https://{host}/api/v3/info")),
        "{reply:?}"
    );
    assert!(raw.closed_within(common::REPLY_TIMEOUT));

    let mut raw = server.raw_tcp();
    raw.send(format!("GET /api/v3/ws HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes())
        .expect("send");
    let reply = raw
        .read_response(common::REPLY_TIMEOUT)
        .expect("a plain HTTP answer");
    assert!(
        reply.body.contains(&format!("wss://{host}/api/v3/ws")),
        "{reply:?}"
    );
    server.assert_serving();
}
