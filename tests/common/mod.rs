//! Black-box harness: starts the real `herald serve` binary and speaks to it with real clients
//! (tungstenite, ureq, rustls, raw sockets). Every socket read is bounded by a deadline.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::fmt;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use base64::Engine;
use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::{Value, json};
use tungstenite::client::IntoClientRequest;
use tungstenite::{Message, WebSocket};

/// The admin user every server starts with.
pub const ADMIN: &str = "rocketskates";
/// The admin password the harness configures unless a test asks for DRP's default.
pub const ADMIN_PASSWORD: &str = "harness-admin-pw";
/// DRP's default admin password, used when none is configured.
pub const DRP_DEFAULT_PASSWORD: &str = "r0cketsk8ts";
/// How long a test waits for something the server owes it (a reply, an event, a response).
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a negative check listens for something that must not arrive.
pub const QUIET_PERIOD: Duration = Duration::from_millis(300);
/// How long the server may take to log that it is listening.
const STARTUP_DEADLINE: Duration = Duration::from_secs(20);
/// How long a stopping server may take before it is killed.
const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(10);

/// Runs herald under a watchdog shell that stops it as soon as the harness's end of the stdin
/// pipe closes, so a server kept in a `static` (never dropped) does not outlive the test binary.
/// It prints herald's pid on stdout, sends herald's stdout to stderr, and removes the data
/// directory afterwards when asked to.
const WATCHDOG: &str = r#"
"$@" </dev/null >&2 &
pid=$!
echo "$pid"
# Herald keeps its own copy of the stderr pipe; the watchdog must survive that pipe's reader
# going away (its job-status message would otherwise kill it with SIGPIPE before the cleanup).
exec 2>/dev/null
trap '' PIPE
read -r _
kill -TERM "$pid" 2>/dev/null
wait "$pid"
status=$?
if [ -n "$HERALD_TEST_REMOVE_DIR" ]; then rm -rf "$HERALD_TEST_REMOVE_DIR"; fi
exit "$status"
"#;

/// A name no other test in this process uses (types, keys, users, roles).
pub fn unique(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    format!("{prefix}{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// How a server is started.
#[derive(Clone, Debug)]
pub struct Options {
    /// Serve https/wss with the generated certificate instead of plain http/ws.
    pub tls: bool,
    /// `--admin-password`; `None` starts with DRP's default.
    pub admin_password: Option<String>,
    /// A data directory the caller owns (kept after the server stops); `None` uses a fresh one.
    pub data_dir: Option<PathBuf>,
    /// More `herald serve` flags, e.g. `["--outbound-budget", "64KiB"]`.
    pub args: Vec<String>,
    /// `--listen`; the harness finds the port in the start line, so the port should be 0.
    /// `None` leaves the flag out, so herald picks its default address.
    pub listen: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            tls: false,
            admin_password: Some(ADMIN_PASSWORD.to_string()),
            data_dir: None,
            args: Vec::new(),
            listen: Some("127.0.0.1:0".to_string()),
        }
    }
}

/// Credentials as a client presents them.
#[derive(Clone, Debug)]
pub enum Auth {
    /// No credentials at all.
    None,
    /// `Authorization: Basic base64(user:password)`.
    Basic(String, String),
    /// `Authorization: Bearer <token>`.
    Bearer(String),
    /// A raw `Authorization` header value, for malformed credentials.
    Header(String),
    /// A query parameter (`token` or `Token`) holding a token or `user:password`.
    Query(&'static str, String),
}

impl Auth {
    /// The admin with the harness password.
    pub fn admin() -> Auth {
        Auth::basic(ADMIN, ADMIN_PASSWORD)
    }

    /// Basic credentials.
    pub fn basic(user: &str, password: &str) -> Auth {
        Auth::Basic(user.to_string(), password.to_string())
    }

    /// A bearer token in the `Authorization` header.
    pub fn bearer(token: &str) -> Auth {
        Auth::Bearer(token.to_string())
    }

    /// `?token=<value>`.
    pub fn query(value: &str) -> Auth {
        Auth::Query("token", value.to_string())
    }

    /// The `Authorization` header value, if these credentials travel in one.
    pub fn header_value(&self) -> Option<String> {
        match self {
            Auth::Basic(user, password) => Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
            )),
            Auth::Bearer(token) => Some(format!("Bearer {token}")),
            Auth::Header(raw) => Some(raw.clone()),
            Auth::None | Auth::Query(..) => None,
        }
    }

    /// `path` with this auth's query parameter appended, if it is one.
    fn apply_to_path(&self, path: &str) -> String {
        match self {
            Auth::Query(name, value) => {
                let encoded: String = form_urlencoded::byte_serialize(value.as_bytes()).collect();
                let joiner = if path.contains('?') { '&' } else { '?' };
                format!("{path}{joiner}{name}={encoded}")
            }
            _ => path.to_string(),
        }
    }
}

/// An HTTP answer, whichever client read it.
#[derive(Clone, Debug)]
pub struct HttpReply {
    /// Status code.
    pub status: u16,
    /// Headers in the order received, names lowercased.
    pub headers: Vec<(String, String)>,
    /// Body as text (lossy).
    pub body: String,
}

impl HttpReply {
    /// The first header with this (case-insensitive) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON; panics with the body when it is not.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| {
            panic!(
                "expected a JSON body ({e}), status {}: {:?}",
                self.status, self.body
            )
        })
    }
}

/// Asserts that `reply` is a DRP-shaped error with this status and a matching `Code`.
pub fn assert_drp_error(reply: &HttpReply, status: u16) {
    assert_eq!(reply.status, status, "unexpected status; answer: {reply:?}");
    let body = reply.json();
    for field in ["Model", "Key", "Type"] {
        assert!(
            body.get(field).is_some_and(Value::is_string),
            "error body lacks string field {field}: {body}"
        );
    }
    let messages = body.get("Messages").and_then(Value::as_array);
    assert!(
        messages.is_some_and(
            |m| !m.is_empty() && m.iter().all(|s| s.as_str().is_some_and(|s| !s.is_empty()))
        ),
        "error body needs non-empty Messages in words: {body}"
    );
    assert_eq!(
        body.get("Code").and_then(Value::as_u64),
        Some(u64::from(status)),
        "error Code must match the status: {body}"
    );
}

/// How a `herald serve` that exited before listening ended.
#[derive(Debug)]
pub struct Failed {
    /// Its exit code (`None` if it did not exit in time).
    pub code: Option<i32>,
    /// Everything it wrote to stderr.
    pub stderr: String,
}

/// A running `herald serve`, stopped on drop.
pub struct Server {
    watchdog: Child,
    watchdog_stdin: Option<ChildStdin>,
    herald_pid: u32,
    addr: SocketAddr,
    tls: Option<Arc<rustls::ClientConfig>>,
    cert_pem: Option<Vec<u8>>,
    data_dir: PathBuf,
    stderr: Arc<Mutex<String>>,
    admin_password: String,
    agent: ureq::Agent,
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Server({})", self.base_url())
    }
}

impl Server {
    /// A plain server with the harness admin password, shared by all tests of one test file
    /// and started on first use.
    pub fn shared() -> &'static Server {
        static SHARED: OnceLock<Server> = OnceLock::new();
        SHARED.get_or_init(Server::start)
    }

    /// A fresh plain server with its own data directory.
    pub fn start() -> Server {
        Server::start_with(Options::default())
    }

    /// A fresh server started as `options` say.
    pub fn start_with(options: Options) -> Server {
        Server::try_start_with(options).unwrap_or_else(|failed| {
            panic!(
                "herald exited ({:?}) before listening; stderr:\n{}",
                failed.code, failed.stderr
            )
        })
    }

    /// Starts `herald serve` as `options` say, which must fail; answers how it ended.
    pub fn start_failing(options: Options) -> Failed {
        match Server::try_start_with(options) {
            Ok(server) => panic!(
                "herald started on {} although it should have refused; stderr:\n{}",
                server.addr(),
                server.stderr()
            ),
            Err(failed) => failed,
        }
    }

    /// A server started as `options` say, or how herald ended when it exited before listening.
    pub fn try_start_with(options: Options) -> Result<Server, Failed> {
        let (data_dir, remove_after) = match &options.data_dir {
            Some(dir) => (dir.clone(), false),
            None => {
                let dir = tempfile::Builder::new()
                    .prefix("herald-test-")
                    .tempdir()
                    .expect("create a data directory")
                    .keep();
                (dir, true)
            }
        };
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(WATCHDOG)
            .arg("herald-watchdog")
            .arg(env!("CARGO_BIN_EXE_herald"))
            .args(["serve", "--cores", "2"])
            .arg("--data-dir")
            .arg(&data_dir);
        if let Some(listen) = &options.listen {
            command.args(["--listen", listen]);
        }
        if !options.tls {
            command.arg("--plain");
        }
        if let Some(password) = &options.admin_password {
            command.args(["--admin-password", password]);
        }
        command.args(&options.args);
        if remove_after {
            command.env("HERALD_TEST_REMOVE_DIR", &data_dir);
        } else {
            command.env_remove("HERALD_TEST_REMOVE_DIR");
        }
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut watchdog = command.spawn().expect("spawn herald under sh");
        let watchdog_stdin = watchdog.stdin.take();
        let mut pid_line = String::new();
        if let Some(stdout) = watchdog.stdout.take() {
            BufReader::new(stdout)
                .read_line(&mut pid_line)
                .expect("read herald's pid");
        }
        let herald_pid: u32 = pid_line.trim().parse().expect("herald's pid");

        let stderr = Arc::new(Mutex::new(String::new()));
        let (lines_tx, lines_rx) = mpsc::channel::<String>();
        let pipe = watchdog.stderr.take().expect("stderr is piped");
        let sink = Arc::clone(&stderr);
        thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                if let Ok(mut all) = sink.lock() {
                    all.push_str(&line);
                    all.push('\n');
                }
                let _ = lines_tx.send(line);
            }
        });

        let mut server = Server {
            watchdog,
            watchdog_stdin,
            herald_pid,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            tls: None,
            cert_pem: None,
            data_dir,
            stderr,
            admin_password: options
                .admin_password
                .clone()
                .unwrap_or_else(|| DRP_DEFAULT_PASSWORD.to_string()),
            agent: ureq::Agent::new_with_defaults(),
        };
        let deadline = Instant::now() + STARTUP_DEADLINE;
        let (scheme, addr) = loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            match lines_rx.recv_timeout(remaining) {
                Ok(line) => {
                    if let Some(found) = parse_listening_line(&line) {
                        break found;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => panic!(
                    "herald did not log `listening on` within {STARTUP_DEADLINE:?}; stderr:\n{}",
                    server.stderr()
                ),
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    // The reader thread saw the pipe close after passing on every line.
                    let stderr = server.stderr();
                    return Err(Failed {
                        code: server.exit_code(),
                        stderr,
                    });
                }
            }
        };
        server.addr = addr;
        assert_eq!(
            scheme == "https",
            options.tls,
            "server listens with the wrong scheme: {scheme}"
        );
        if options.tls {
            let pem = std::fs::read(server.cert_path()).unwrap_or_else(|e| {
                panic!(
                    "read the generated certificate {}: {e}",
                    server.cert_path().display()
                )
            });
            server.tls = Some(rustls_config_trusting(&pem));
            server.agent = agent_trusting(Some(&pem));
            server.cert_pem = Some(pem);
        } else {
            server.agent = agent_trusting(None);
        }
        Ok(server)
    }

    /// herald's exit code, once it has exited: closing the pipe lets the watchdog reap it.
    fn exit_code(&mut self) -> Option<i32> {
        drop(self.watchdog_stdin.take());
        let deadline = Instant::now() + SHUTDOWN_DEADLINE;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.watchdog.try_wait() {
                return status.code();
            }
            thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// The socket address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Where the self-signed certificate is generated.
    pub fn cert_path(&self) -> PathBuf {
        self.data_dir.join("tls").join("cert.pem")
    }

    /// `http://127.0.0.1:PORT` or `https://localhost:PORT`.
    pub fn base_url(&self) -> String {
        if self.tls.is_some() {
            format!("https://localhost:{}", self.addr.port())
        } else {
            format!("http://{}", self.addr)
        }
    }

    /// Everything the server wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Waits until a line of the server's stderr contains every one of `parts`; returns it.
    pub fn wait_for_log_line(&self, parts: &[&str]) -> String {
        let deadline = Instant::now() + REPLY_TIMEOUT;
        loop {
            let log = self.stderr();
            if let Some(line) = log.lines().find(|l| parts.iter().all(|p| l.contains(p))) {
                return line.to_string();
            }
            assert!(
                Instant::now() < deadline,
                "no log line with {parts:?} within {REPLY_TIMEOUT:?}; stderr:\n{log}"
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// The admin's password on this server.
    pub fn admin_password(&self) -> &str {
        &self.admin_password
    }

    /// Admin credentials on this server.
    pub fn admin(&self) -> Auth {
        Auth::basic(ADMIN, &self.admin_password)
    }

    /// One REST request with ureq; the answer whatever its status.
    pub fn request(&self, method: &str, path: &str, auth: &Auth, body: Option<&str>) -> HttpReply {
        let url = format!("{}{}", self.base_url(), auth.apply_to_path(path));
        let mut builder = ureq::http::Request::builder().method(method).uri(&url);
        if let Some(value) = auth.header_value() {
            builder = builder.header("Authorization", value);
        }
        let result = match body {
            Some(body) => self.agent.run(
                builder
                    .header("Content-Type", "application/json")
                    .body(body.as_bytes().to_vec())
                    .expect("build request"),
            ),
            None => self
                .agent
                .run(builder.body(ureq::SendBody::none()).expect("build request")),
        };
        let mut response = result.unwrap_or_else(|e| {
            panic!(
                "{method} {url} failed: {e}; server stderr:\n{}",
                self.stderr()
            )
        });
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_ascii_lowercase(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let bytes = response
            .body_mut()
            .with_config()
            .limit(64 * 1024 * 1024)
            .read_to_vec()
            .unwrap_or_else(|e| panic!("read the body of {method} {url}: {e}"));
        HttpReply {
            status,
            headers,
            body: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }

    /// `GET path` as the admin.
    pub fn get(&self, path: &str) -> HttpReply {
        self.request("GET", path, &self.admin(), None)
    }

    /// `POST /api/v3/events` with this body and auth.
    pub fn post_events(&self, auth: &Auth, body: &str) -> HttpReply {
        self.request("POST", "/api/v3/events", auth, Some(body))
    }

    /// Publishes as the admin; asserts 204 and returns `Herald-Seq`.
    pub fn publish(&self, event: Value) -> u64 {
        self.publish_as(&self.admin(), event)
    }

    /// Publishes with these credentials; asserts 204 and returns `Herald-Seq`.
    pub fn publish_as(&self, auth: &Auth, event: Value) -> u64 {
        let reply = self.post_events(auth, &event.to_string());
        assert_eq!(reply.status, 204, "publish of {event} failed: {reply:?}");
        herald_seq(&reply)
    }

    /// Asserts the server still answers an ordinary authenticated request.
    pub fn assert_serving(&self) {
        let reply = self.get("/api/v3/info");
        assert_eq!(
            reply.status,
            200,
            "server stopped serving: {reply:?}; stderr:\n{}",
            self.stderr()
        );
    }

    /// Mints a token for `user` with its own password; asserts 200.
    pub fn mint_token(&self, user: &str, password: &str, ttl_seconds: u64) -> String {
        let reply = self.request(
            "GET",
            &format!("/api/v3/users/{user}/token?ttl={ttl_seconds}"),
            &Auth::basic(user, password),
            None,
        );
        assert_eq!(reply.status, 200, "token request failed: {reply:?}");
        reply
            .json()
            .get("Token")
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("token answer has no Token: {}", reply.body))
            .to_string()
    }

    /// Creates a role with these claims as the admin; asserts success.
    pub fn create_role(&self, name: &str, claims: Value) {
        let body = json!({"Name": name, "Claims": claims});
        let reply = self.request(
            "POST",
            "/api/v3/roles",
            &self.admin(),
            Some(&body.to_string()),
        );
        assert!(
            (200..300).contains(&reply.status),
            "create role {name}: {reply:?}"
        );
    }

    /// Creates a user with these roles and password as the admin; asserts success.
    pub fn create_user(&self, name: &str, password: &str, roles: &[&str]) {
        let body = json!({"Name": name, "Roles": roles, "Password": password});
        let reply = self.request(
            "POST",
            "/api/v3/users",
            &self.admin(),
            Some(&body.to_string()),
        );
        assert!(
            (200..300).contains(&reply.status),
            "create user {name}: {reply:?}"
        );
    }

    /// A websocket client that completed the upgrade; panics if it did not.
    pub fn ws(&self, auth: &Auth) -> Client {
        self.try_ws(auth).unwrap_or_else(|refused| {
            panic!(
                "websocket upgrade refused: {refused:?}; stderr:\n{}",
                self.stderr()
            )
        })
    }

    /// A websocket upgrade; the HTTP answer when the server refuses it.
    pub fn try_ws(&self, auth: &Auth) -> Result<Client, HttpReply> {
        let scheme = if self.tls.is_some() { "wss" } else { "ws" };
        let host = if self.tls.is_some() {
            format!("localhost:{}", self.addr.port())
        } else {
            self.addr.to_string()
        };
        let url = format!("{scheme}://{host}{}", auth.apply_to_path("/api/v3/ws"));
        let mut request = url.into_client_request().expect("websocket request");
        if let Some(value) = auth.header_value() {
            request.headers_mut().insert(
                "Authorization",
                value.parse().expect("header value is ASCII"),
            );
        }
        let tcp = self.connect_tcp();
        let stream = match &self.tls {
            Some(config) => {
                let name = rustls::pki_types::ServerName::try_from("localhost")
                    .expect("localhost is a server name");
                let connection = rustls::ClientConnection::new(Arc::clone(config), name)
                    .expect("start a TLS client");
                Stream::Tls(Box::new(rustls::StreamOwned::new(connection, tcp)))
            }
            None => Stream::Plain(tcp),
        };
        match tungstenite::client::client(request, stream) {
            Ok((ws, _)) => Ok(Client {
                ws,
                pending: VecDeque::new(),
            }),
            Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(response))) => {
                Err(HttpReply {
                    status: response.status().as_u16(),
                    headers: response
                        .headers()
                        .iter()
                        .map(|(n, v)| {
                            (
                                n.as_str().to_ascii_lowercase(),
                                String::from_utf8_lossy(v.as_bytes()).into_owned(),
                            )
                        })
                        .collect(),
                    body: String::from_utf8_lossy(response.body().as_deref().unwrap_or_default())
                        .into_owned(),
                })
            }
            Err(e) => panic!(
                "websocket handshake failed without an HTTP answer: {e}; stderr:\n{}",
                self.stderr()
            ),
        }
    }

    /// A TCP connection to the listener with read and write timeouts set.
    pub fn connect_tcp(&self) -> TcpStream {
        let tcp = TcpStream::connect_timeout(&self.addr, REPLY_TIMEOUT).expect("connect");
        tcp.set_read_timeout(Some(REPLY_TIMEOUT))
            .expect("set read timeout");
        tcp.set_write_timeout(Some(REPLY_TIMEOUT))
            .expect("set write timeout");
        tcp.set_nodelay(true).expect("set nodelay");
        tcp
    }

    /// A raw TCP connection for bytes as they are, whatever the server speaks.
    pub fn raw_tcp(&self) -> RawHttp {
        RawHttp {
            stream: self.connect_tcp(),
            buf: Vec::new(),
        }
    }

    /// A TLS handshake with the server, trusting only its generated certificate and asking for
    /// `name` (a DNS name or an IP address); `Err` says why it failed (TLS servers only).
    pub fn tls_handshake_as(&self, name: &str) -> Result<(), String> {
        self.tls_session_as(name).map(drop)
    }

    /// A connection whose TLS handshake is complete and that has sent no request yet, kept open
    /// for as long as the caller holds it (TLS servers only).
    pub fn tls_session_as(
        &self,
        name: &str,
    ) -> Result<(rustls::ClientConnection, TcpStream), String> {
        let config = self.tls.clone().expect("a TLS server");
        let server_name = rustls::pki_types::ServerName::try_from(name.to_string())
            .map_err(|e| format!("{name} is not a server name: {e}"))?;
        let mut connection =
            rustls::ClientConnection::new(config, server_name).map_err(|e| e.to_string())?;
        let mut tcp = self.connect_tcp();
        while connection.is_handshaking() {
            connection
                .complete_io(&mut tcp)
                .map_err(|e| e.to_string())?;
        }
        Ok((connection, tcp))
    }

    /// A raw HTTP connection (plain servers only).
    pub fn raw(&self) -> RawHttp {
        assert!(self.tls.is_none(), "raw connections need a plain server");
        RawHttp {
            stream: self.connect_tcp(),
            buf: Vec::new(),
        }
    }

    /// A raw websocket connection that completed the upgrade as the admin (plain servers only).
    pub fn raw_ws(&self) -> RawWs {
        let mut http = self.raw();
        let request = format!(
            "GET /api/v3/ws HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
             Authorization: {}\r\n\r\n",
            self.addr,
            self.admin().header_value().unwrap_or_default()
        );
        http.send(request.as_bytes()).expect("send the upgrade");
        let reply = http
            .read_head(REPLY_TIMEOUT)
            .expect("read the upgrade answer");
        assert_eq!(reply.status, 101, "upgrade refused: {reply:?}");
        RawWs { http }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Closing the pipe tells the watchdog to stop herald and wait for it.
        drop(self.watchdog_stdin.take());
        let deadline = Instant::now() + SHUTDOWN_DEADLINE;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.watchdog.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = Command::new("kill")
            .args(["-KILL", &self.herald_pid.to_string()])
            .status();
        let _ = self.watchdog.wait();
    }
}

/// Finds `listening on http(s)://ADDR` in a log line (tolerating ANSI colours and JSON logs).
fn parse_listening_line(line: &str) -> Option<(&'static str, SocketAddr)> {
    let start = line.find("listening on")?;
    let rest = &line[start..];
    let (scheme, at) = if let Some(at) = rest.find("https://") {
        ("https", at + "https://".len())
    } else {
        ("http", rest.find("http://")? + "http://".len())
    };
    let addr: String = rest[at..]
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
        .collect();
    addr.parse().ok().map(|addr| (scheme, addr))
}

/// A rustls client config that trusts exactly this PEM certificate.
fn rustls_config_trusting(pem: &[u8]) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem) {
        roots
            .add(cert.expect("the generated certificate is PEM"))
            .expect("the generated certificate is a usable trust anchor");
    }
    assert!(!roots.is_empty(), "cert.pem holds no certificate");
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    Arc::new(config)
}

/// A ureq agent that reports every status as a response, trusting exactly `pem` for https.
fn agent_trusting(pem: Option<&[u8]>) -> ureq::Agent {
    let mut config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .ip_family(ureq::config::IpFamily::Ipv4Only)
        .timeout_global(Some(Duration::from_secs(15)));
    if let Some(pem) = pem {
        let certs: Vec<ureq::tls::Certificate<'static>> = ureq::tls::parse_pem(pem)
            .filter_map(|item| match item {
                Ok(ureq::tls::PemItem::Certificate(cert)) => Some(cert),
                _ => None,
            })
            .collect();
        config = config.tls_config(
            ureq::tls::TlsConfig::builder()
                .provider(ureq::tls::TlsProvider::Rustls)
                .root_certs(ureq::tls::RootCerts::Specific(Arc::new(certs)))
                .build(),
        );
    }
    config.build().new_agent()
}

/// How a herald command that is expected to end by itself ended.
#[derive(Debug)]
pub struct Exit {
    /// Whether it exited with status 0.
    pub success: bool,
    /// Its standard output.
    pub stdout: String,
    /// Its standard error.
    pub stderr: String,
}

/// Runs `herald ARGS` to its end (a refused start, `check-config`), killing it and failing the
/// test if it is still running after [`STARTUP_DEADLINE`].
pub fn run_to_exit(args: &[&str]) -> Exit {
    let mut child = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run herald");
    let deadline = Instant::now() + STARTUP_DEADLINE;
    while child.try_wait().expect("poll herald").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("herald {args:?} was still running after {STARTUP_DEADLINE:?}");
        }
        thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().expect("collect herald's output");
    Exit {
        success: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Reads `Herald-Seq` from a publish answer.
pub fn herald_seq(reply: &HttpReply) -> u64 {
    reply
        .header("Herald-Seq")
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("publish answer lacks a numeric Herald-Seq: {reply:?}"))
}

/// The top-level keys of a JSON object in the order they appear in `text`.
pub fn top_level_keys(text: &str) -> Vec<String> {
    struct Keys(Vec<String>);
    struct KeysVisitor;
    impl<'de> Visitor<'de> for KeysVisitor {
        type Value = Keys;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Keys, A::Error> {
            let mut keys = Vec::new();
            while let Some(key) = map.next_key::<String>()? {
                map.next_value::<IgnoredAny>()?;
                keys.push(key);
            }
            Ok(Keys(keys))
        }
    }
    impl<'de> Deserialize<'de> for Keys {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Keys, D::Error> {
            d.deserialize_map(KeysVisitor)
        }
    }
    serde_json::from_str::<Keys>(text)
        .unwrap_or_else(|e| panic!("not a JSON object ({e}): {text}"))
        .0
}

/// A websocket's byte stream, plain or TLS: the CLI's own.
pub use herald::cli::Stream;

/// A websocket client (tungstenite) on the event stream.
pub struct Client {
    ws: WebSocket<Stream>,
    /// Events read while waiting for a command's reply, handed out first by `next_event`.
    pending: VecDeque<Value>,
}

impl Client {
    /// Sends one text frame.
    pub fn send_text(&mut self, text: &str) {
        self.ws
            .send(Message::text(text))
            .unwrap_or_else(|e| panic!("send {text:?}: {e}"));
    }

    /// Sends one binary frame.
    pub fn send_binary(&mut self, bytes: &[u8]) {
        self.ws
            .send(Message::binary(bytes.to_vec()))
            .unwrap_or_else(|e| panic!("send a binary frame: {e}"));
    }

    /// Sends a command and returns its reply (the next `websocket` event); events that arrive
    /// before it are kept for `next_event`.
    pub fn command(&mut self, text: &str) -> Value {
        self.send_text(text);
        self.await_reply(text)
    }

    /// Waits for the next `websocket` event, keeping other events for `next_event`.
    pub fn await_reply(&mut self, what: &str) -> Value {
        let deadline = Instant::now() + REPLY_TIMEOUT;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let Some(event) = self.read_event(remaining) else {
                panic!("no reply to {what:?} within {REPLY_TIMEOUT:?}");
            };
            if event["Type"] == "websocket" {
                return event;
            }
            self.pending.push_back(event);
        }
    }

    /// Registers a filter and asserts the success reply.
    pub fn register(&mut self, filter: &str) {
        let reply = self.command(&format!("register {filter}"));
        assert_eq!(reply["Action"], "register", "register {filter}: {reply}");
        assert_eq!(reply["Key"], filter, "register {filter}: {reply}");
    }

    /// The next text frame's raw text, or `None` when nothing arrives within `timeout`.
    /// Panics on a close, a binary frame or a broken connection.
    pub fn next_text(&mut self, timeout: Duration) -> Option<String> {
        match self.next_message(timeout) {
            Ok(None) => None,
            Ok(Some(Message::Text(text))) => Some(text.to_string()),
            Ok(Some(Message::Close(frame))) => panic!("server closed the websocket: {frame:?}"),
            Ok(Some(other)) => panic!("server sent a binary frame: {other:?}"),
            Err(e) => panic!("websocket read failed: {e}"),
        }
    }

    /// The next text, binary or close frame within `timeout` (`None` when nothing arrives);
    /// pings and pongs are skipped. `Err` when the connection broke.
    fn next_message(&mut self, timeout: Duration) -> Result<Option<Message>, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Ok(None);
            }
            self.ws
                .get_ref()
                .tcp()
                .set_read_timeout(Some(remaining))
                .map_err(|e| e.to_string())?;
            match self.ws.read() {
                Ok(message @ (Message::Text(_) | Message::Binary(_) | Message::Close(_))) => {
                    return Ok(Some(message));
                }
                Ok(_) => continue,
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    continue;
                }
                Err(e) => return Err(e.to_string()),
            }
        }
    }

    fn read_event(&mut self, timeout: Duration) -> Option<Value> {
        let text = self.next_text(timeout)?;
        Some(
            serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("frame is not JSON ({e}): {text}")),
        )
    }

    /// The next event (or reply) within `timeout`.
    pub fn next_event(&mut self, timeout: Duration) -> Option<Value> {
        if let Some(event) = self.pending.pop_front() {
            return Some(event);
        }
        self.read_event(timeout)
    }

    /// Like `next_event`, but a close or a broken connection is `Err` instead of a panic, for
    /// clients of a server that is killed under them.
    pub fn try_next_event(&mut self, timeout: Duration) -> Result<Option<Value>, String> {
        if let Some(event) = self.pending.pop_front() {
            return Ok(Some(event));
        }
        match self.next_message(timeout)? {
            None => Ok(None),
            Some(Message::Text(text)) => serde_json::from_str(&text)
                .map(Some)
                .map_err(|e| format!("frame is not JSON ({e}): {text}")),
            Some(other) => Err(format!("the stream ended with {other:?}")),
        }
    }

    /// The next event; panics if none arrives within `REPLY_TIMEOUT`.
    pub fn expect_event(&mut self) -> Value {
        self.next_event(REPLY_TIMEOUT)
            .unwrap_or_else(|| panic!("no event within {REPLY_TIMEOUT:?}"))
    }

    /// Asserts that nothing arrives within `within`.
    pub fn expect_no_event(&mut self, within: Duration) {
        if let Some(event) = self.next_event(within) {
            panic!("expected nothing, got {event}");
        }
    }

    /// Every frame up to and including the event with `Seq == seq` (a sentinel published by the
    /// test); panics if it does not arrive in time or is skipped.
    pub fn events_through(&mut self, seq: u64) -> Vec<Value> {
        let mut seen = Vec::new();
        loop {
            let Some(event) = self.next_event(REPLY_TIMEOUT) else {
                panic!("event {seq} did not arrive within {REPLY_TIMEOUT:?}; got {seen:?}");
            };
            let this = event.get("Seq").and_then(Value::as_u64);
            seen.push(event);
            match this {
                Some(this) if this == seq => return seen,
                Some(this) if this > seq => panic!("event {seq} was skipped; got {seen:?}"),
                _ => {}
            }
        }
    }

    /// Closes politely.
    pub fn close(mut self) {
        let _ = self.ws.close(None);
        let _ = self.ws.flush();
    }
}

/// A raw HTTP/1.1 connection for requests no well-behaved client sends.
pub struct RawHttp {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl RawHttp {
    /// Writes bytes as they are.
    pub fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)?;
        self.stream.flush()
    }

    /// The underlying socket.
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// Reads more bytes into the buffer before `deadline`; `Ok(0)` at end of stream.
    fn fill(&mut self, deadline: Instant) -> io::Result<usize> {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "deadline passed"));
        }
        self.stream.set_read_timeout(Some(remaining))?;
        let mut chunk = [0u8; 16 * 1024];
        let n = self.stream.read(&mut chunk)?;
        self.buf
            .extend_from_slice(chunk.get(..n).unwrap_or_default());
        Ok(n)
    }

    /// Reads a response head (status line and headers) only.
    pub fn read_head(&mut self, timeout: Duration) -> io::Result<HttpReply> {
        let deadline = Instant::now() + timeout;
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut response = httparse::Response::new(&mut headers);
            match response.parse(&self.buf) {
                Ok(httparse::Status::Complete(len)) => {
                    let reply = HttpReply {
                        status: response.code.unwrap_or_default(),
                        headers: response
                            .headers
                            .iter()
                            .map(|h| {
                                (
                                    h.name.to_ascii_lowercase(),
                                    String::from_utf8_lossy(h.value).into_owned(),
                                )
                            })
                            .collect(),
                        body: String::new(),
                    };
                    self.buf.drain(..len);
                    return Ok(reply);
                }
                Ok(httparse::Status::Partial) => {}
                Err(e) => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "bad response head ({e}): {:?}",
                            String::from_utf8_lossy(&self.buf)
                        ),
                    ));
                }
            }
            if self.fill(deadline)? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "connection closed before a response; got {:?}",
                        String::from_utf8_lossy(&self.buf)
                    ),
                ));
            }
        }
    }

    /// Reads one whole response (Content-Length, chunked, or until close).
    pub fn read_response(&mut self, timeout: Duration) -> io::Result<HttpReply> {
        let deadline = Instant::now() + timeout;
        let mut reply = self.read_head(timeout)?;
        let body = if matches!(reply.status, 100..=199 | 204 | 304) {
            Vec::new()
        } else if let Some(len) = reply.header("content-length") {
            let len: usize = len
                .trim()
                .parse()
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad Content-Length"))?;
            while self.buf.len() < len {
                if self.fill(deadline)? == 0 {
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "short body"));
                }
            }
            self.buf.drain(..len).collect()
        } else if reply
            .header("transfer-encoding")
            .is_some_and(|te| te.to_ascii_lowercase().contains("chunked"))
        {
            self.read_chunked(deadline)?
        } else {
            while self.fill(deadline)? > 0 {}
            std::mem::take(&mut self.buf)
        };
        reply.body = String::from_utf8_lossy(&body).into_owned();
        Ok(reply)
    }

    fn read_chunked(&mut self, deadline: Instant) -> io::Result<Vec<u8>> {
        let mut body = Vec::new();
        loop {
            let line_end = loop {
                if let Some(at) = self.buf.windows(2).position(|w| w == b"\r\n") {
                    break at;
                }
                if self.fill(deadline)? == 0 {
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "short chunk"));
                }
            };
            let size_text = String::from_utf8_lossy(&self.buf[..line_end]).into_owned();
            let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad chunk size"))?;
            while self.buf.len() < line_end + 2 + size + 2 {
                if self.fill(deadline)? == 0 {
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "short chunk"));
                }
            }
            body.extend_from_slice(&self.buf[line_end + 2..line_end + 2 + size]);
            self.buf.drain(..line_end + 2 + size + 2);
            if size == 0 {
                return Ok(body);
            }
        }
    }

    /// True when the server closes (or resets) the connection within `timeout`; unread response
    /// bytes are discarded.
    pub fn closed_within(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            match self.fill(deadline) {
                Ok(0) => return true,
                Ok(_) => self.buf.clear(),
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return true,
                Err(_) => return false,
            }
        }
    }
}

/// A raw websocket connection for frames a well-behaved client never sends.
pub struct RawWs {
    http: RawHttp,
}

/// What a raw websocket read produced.
#[derive(Debug, PartialEq, Eq)]
pub enum RawFrame {
    /// A text frame's payload.
    Text(String),
    /// A close frame's status code (`None` when it carried none).
    Close(Option<u16>),
    /// Any other frame's opcode.
    Other(u8),
    /// The TCP connection ended without a close frame.
    Eof,
}

impl RawWs {
    /// FIN set, opcode text.
    pub const TEXT: u8 = 0x81;
    /// FIN set, opcode binary.
    pub const BINARY: u8 = 0x82;

    /// Sends one frame; `first_byte` is FIN, RSV and opcode as on the wire.
    pub fn send_frame(&mut self, first_byte: u8, payload: &[u8], masked: bool) {
        self.send_frame_start(first_byte, payload.len(), payload, masked);
    }

    /// Sends the header of a frame declaring `declared_len` payload bytes, followed by only
    /// `payload` (its first bytes), as a client whose frame is still on its way.
    pub fn send_frame_start(
        &mut self,
        first_byte: u8,
        declared_len: usize,
        payload: &[u8],
        masked: bool,
    ) {
        let mask = [0x37u8, 0xfa, 0x21, 0x3d];
        let mut frame = vec![first_byte];
        let mask_bit = if masked { 0x80 } else { 0 };
        match declared_len {
            len @ 0..=125 => frame.push(mask_bit | len as u8),
            len @ 126..=0xffff => {
                frame.push(mask_bit | 126);
                frame.extend_from_slice(&(len as u16).to_be_bytes());
            }
            len => {
                frame.push(mask_bit | 127);
                frame.extend_from_slice(&(len as u64).to_be_bytes());
            }
        }
        if masked {
            frame.extend_from_slice(&mask);
            frame.extend(payload.iter().zip(mask.iter().cycle()).map(|(b, m)| b ^ m));
        } else {
            frame.extend_from_slice(payload);
        }
        // The server may close while we write; the close is what the test then checks.
        let _ = self.http.send(&frame);
    }

    /// Sends a masked text frame (FIN set) whose payload may be any bytes.
    pub fn send_text_bytes(&mut self, payload: &[u8]) {
        self.send_frame(Self::TEXT, payload, true);
    }

    /// Reads one server frame; `None` on timeout.
    pub fn read_frame(&mut self, timeout: Duration) -> Option<RawFrame> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some((frame, used)) = parse_server_frame(&self.http.buf) {
                self.http.buf.drain(..used);
                return Some(frame);
            }
            match self.http.fill(deadline) {
                Ok(0) => return Some(RawFrame::Eof),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Some(RawFrame::Eof),
                Err(_) => return None,
            }
        }
    }

    /// Reads frames until the server's close frame and returns its code; panics when the
    /// connection ends without one or nothing arrives in time.
    pub fn expect_close_code(&mut self) -> u16 {
        loop {
            match self.read_frame(REPLY_TIMEOUT) {
                Some(RawFrame::Close(Some(code))) => return code,
                Some(RawFrame::Close(None)) => panic!("close frame without a status code"),
                Some(RawFrame::Eof) => panic!("connection dropped without a close frame"),
                None => panic!("no close frame within {REPLY_TIMEOUT:?}"),
                Some(_) => {}
            }
        }
    }

    /// Reads the next text frame and parses it as JSON; panics otherwise.
    pub fn expect_event(&mut self) -> Value {
        match self.read_frame(REPLY_TIMEOUT) {
            Some(RawFrame::Text(text)) => serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("frame is not JSON ({e}): {text}")),
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
}

/// Parses one unmasked server frame from the front of `buf`: the frame and bytes used.
fn parse_server_frame(buf: &[u8]) -> Option<(RawFrame, usize)> {
    let first = *buf.first()?;
    let second = *buf.get(1)?;
    let (len, header) = match second & 0x7f {
        126 => (
            usize::from(u16::from_be_bytes([*buf.get(2)?, *buf.get(3)?])),
            4,
        ),
        127 => {
            let bytes: [u8; 8] = buf.get(2..10)?.try_into().ok()?;
            (usize::try_from(u64::from_be_bytes(bytes)).ok()?, 10)
        }
        len => (usize::from(len), 2),
    };
    let payload = buf.get(header..header + len)?;
    let frame = match first & 0x0f {
        0x1 => RawFrame::Text(String::from_utf8_lossy(payload).into_owned()),
        0x8 => RawFrame::Close(
            payload
                .get(..2)
                .map(|code| u16::from_be_bytes([code[0], code[1]])),
        ),
        opcode => RawFrame::Other(opcode),
    };
    Some((frame, header + len))
}

/// Builds an event body for publishing.
pub fn event(kind: &str, action: &str, key: &str) -> Value {
    json!({"Type": kind, "Action": action, "Key": key})
}

impl Server {
    /// A plain websocket with a tiny receive buffer that registers `filter` and then never
    /// reads, so it falls behind once the kernel's buffers are full.
    pub fn stalled_ws(&self, filter: &str) -> WebSocket<TcpStream> {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("create a socket");
        socket
            .set_recv_buffer_size(4096)
            .expect("shrink the receive buffer");
        socket.connect(&self.addr().into()).expect("connect");
        let stream: TcpStream = socket.into();
        stream
            .set_read_timeout(Some(REPLY_TIMEOUT))
            .expect("set a read timeout");
        let url = format!(
            "ws://{}/api/v3/ws?token=rocketskates:{}",
            self.addr(),
            self.admin_password()
        );
        let (mut ws, _) = tungstenite::client(url.as_str(), stream).expect("upgrade");
        ws.send(Message::text(format!("register {filter}")))
            .expect("send register");
        ws.read().expect("register reply");
        ws
    }
}

// ---------------------------------------------------------------------------------------------
// The event log from outside: info, paged reads, replay, stopping and killing the process.

/// How long a replay, a page of the log or a restart may take before a test gives up.
pub const LOG_TIMEOUT: Duration = Duration::from_secs(15);

impl Server {
    /// `GET /api/v3/info` as the admin; asserts 200.
    pub fn info(&self) -> Value {
        let reply = self.get("/api/v3/info");
        assert_eq!(reply.status, 200, "info failed: {reply:?}");
        reply.json()
    }

    /// Polls `/api/v3/info` until `ready` holds and returns that answer; panics at the deadline.
    pub fn wait_for_info(&self, what: &str, ready: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + LOG_TIMEOUT;
        loop {
            let info = self.info();
            if ready(&info) {
                return info;
            }
            assert!(
                Instant::now() < deadline,
                "{what} did not happen within {LOG_TIMEOUT:?}; last info: {info}"
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// `GET /api/v3/events` with these query parameters (already encoded) as `auth`.
    pub fn events_page(&self, auth: &Auth, query: &str) -> HttpReply {
        self.request("GET", &format!("/api/v3/events?{query}"), auth, None)
    }

    /// Every event `auth` may see with `Seq > since` (matching `filter` if given), read in pages
    /// of 10,000 that follow `Herald-Next-Since`.
    pub fn read_log(&self, auth: &Auth, since: u64, filter: Option<&str>) -> Vec<Value> {
        let filter = filter
            .map(|f| {
                let encoded: String = form_urlencoded::byte_serialize(f.as_bytes()).collect();
                format!("&filter={encoded}")
            })
            .unwrap_or_default();
        let mut events = Vec::new();
        let mut since = since;
        loop {
            let reply = self.events_page(auth, &format!("since={since}&limit=10000{filter}"));
            assert_eq!(reply.status, 200, "reading the log failed: {reply:?}");
            let page = match reply.json() {
                Value::Array(page) => page,
                other => panic!("the log read is not a JSON array: {other}"),
            };
            if page.is_empty() {
                return events;
            }
            since = reply
                .header("Herald-Next-Since")
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or_else(|| panic!("a page without a numeric Herald-Next-Since: {reply:?}"));
            events.extend(page);
        }
    }

    /// Like [`Server::read_log`], but waits until the answer reaches `seq` (an event it
    /// includes): with `batched` durability a publish is answered, and delivered, before its
    /// flush, while the log serves only flushed events.
    pub fn read_log_through(
        &self,
        auth: &Auth,
        since: u64,
        filter: Option<&str>,
        seq: u64,
    ) -> Vec<Value> {
        let deadline = Instant::now() + LOG_TIMEOUT;
        loop {
            let events = self.read_log(auth, since, filter);
            if events.last().and_then(|e| e["Seq"].as_u64()) >= Some(seq) {
                return events;
            }
            assert!(
                Instant::now() < deadline,
                "the log did not serve Seq {seq} within {LOG_TIMEOUT:?}"
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Publishes `events` as one JSON array as the admin; asserts 204 and returns their Seqs,
    /// which are consecutive and end at `Herald-Seq`.
    pub fn publish_batch(&self, events: &[Value]) -> Vec<u64> {
        let reply = self.post_events(&self.admin(), &Value::from(events.to_vec()).to_string());
        assert_eq!(reply.status, 204, "publishing a batch failed: {reply:?}");
        let last = herald_seq(&reply);
        let count = events.len() as u64;
        (last + 1 - count..=last).collect()
    }

    /// Sends SIGTERM and waits for herald to exit on its own; panics if it does not in time.
    pub fn terminate(self) {
        self.signal("TERM");
        self.await_exit("SIGTERM");
    }

    /// Sends SIGKILL: herald dies at once, flushing nothing. Returns once it is gone.
    pub fn kill(self) {
        self.signal("KILL");
        self.await_exit("SIGKILL");
    }

    /// Sends SIGHUP: herald reloads its configuration and keeps running.
    pub fn hangup(&self) {
        self.signal("HUP");
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([format!("-{name}"), self.herald_pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} {} failed", self.herald_pid);
    }

    /// Waits until herald is gone or a zombie (its parent, the watchdog, reaps it on drop).
    fn await_exit(self, after: &str) {
        let deadline = Instant::now() + SHUTDOWN_DEADLINE;
        let stat = format!("/proc/{}/stat", self.herald_pid);
        loop {
            let state = std::fs::read_to_string(&stat).ok().and_then(|s| {
                let (_, rest) = s.rsplit_once(')')?;
                rest.trim_start().chars().next()
            });
            if matches!(state, None | Some('Z' | 'X')) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "herald did not exit within {SHUTDOWN_DEADLINE:?} of {after}; stderr:\n{}",
                self.stderr()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// A websocket client whose socket has a receive buffer of `bytes`, set before connecting
    /// so the TCP window stays small (plain servers only).
    pub fn ws_with_receive_buffer(&self, auth: &Auth, bytes: usize) -> Client {
        assert!(self.tls.is_none(), "this client needs a plain server");
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("create a socket");
        socket
            .set_recv_buffer_size(bytes)
            .expect("set the receive buffer size");
        socket
            .connect_timeout(&self.addr.into(), REPLY_TIMEOUT)
            .expect("connect");
        let tcp = TcpStream::from(socket);
        tcp.set_read_timeout(Some(REPLY_TIMEOUT))
            .expect("set read timeout");
        tcp.set_write_timeout(Some(REPLY_TIMEOUT))
            .expect("set write timeout");
        tcp.set_nodelay(true).expect("set nodelay");
        let url = format!("ws://{}{}", self.addr, auth.apply_to_path("/api/v3/ws"));
        let mut request = url.into_client_request().expect("websocket request");
        if let Some(value) = auth.header_value() {
            request.headers_mut().insert(
                "Authorization",
                value.parse().expect("header value is ASCII"),
            );
        }
        match tungstenite::client::client(request, Stream::Plain(tcp)) {
            Ok((ws, _)) => Client {
                ws,
                pending: VecDeque::new(),
            },
            Err(e) => panic!("websocket upgrade failed: {e}"),
        }
    }
}

/// What a websocket read produced, closes included.
#[derive(Debug)]
pub enum Received {
    /// A text frame, parsed as JSON.
    Event(Value),
    /// The server's close frame.
    Closed {
        /// Its status code (0 when it carried none).
        code: u16,
        /// Its reason text.
        reason: String,
    },
    /// The connection ended without a close frame, or broke.
    Ended(String),
    /// Nothing arrived in time.
    Nothing,
}

impl Client {
    /// The next event, close or end of the connection within `timeout`; never panics on a close.
    pub fn next_received(&mut self, timeout: Duration) -> Received {
        if let Some(event) = self.pending.pop_front() {
            return Received::Event(event);
        }
        match self.next_message(timeout) {
            Ok(None) => Received::Nothing,
            Ok(Some(Message::Text(text))) => Received::Event(
                serde_json::from_str(&text)
                    .unwrap_or_else(|e| panic!("frame is not JSON ({e}): {text}")),
            ),
            Ok(Some(Message::Close(frame))) => match frame {
                Some(frame) => Received::Closed {
                    code: u16::from(frame.code),
                    reason: frame.reason.to_string(),
                },
                None => Received::Closed {
                    code: 0,
                    reason: String::new(),
                },
            },
            Ok(Some(other)) => panic!("server sent a binary frame: {other:?}"),
            Err(e) => Received::Ended(e),
        }
    }

    /// Sends `replay <argument>` and returns the reply's `Object`. Events that arrived before
    /// the reply are dropped: the replay restarts the stream, and they may come again.
    pub fn replay(&mut self, argument: &str) -> Value {
        self.send_text(&format!("replay {argument}"));
        let deadline = Instant::now() + REPLY_TIMEOUT;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let Some(event) = self.read_event(remaining) else {
                panic!("no reply to replay {argument:?} within {REPLY_TIMEOUT:?}");
            };
            if event["Type"] == "websocket" && event["Action"] != "bookmark" {
                assert_eq!(event["Action"], "replay", "replay {argument}: {event}");
                assert_eq!(event["Key"], argument, "replay {argument}: {event}");
                assert!(
                    event.get("Seq").is_none(),
                    "a reply carries no Seq: {event}"
                );
                self.pending.clear();
                return event["Object"].clone();
            }
        }
    }

    /// Events (not replies or bookmarks) up to and including `seq`, asserting that they arrive in
    /// strictly increasing `Seq` order; panics if `seq` is skipped or does not arrive in time.
    pub fn ordered_events_through(&mut self, seq: u64, timeout: Duration) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        let mut seen: Vec<Value> = Vec::new();
        let mut last = 0;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let event = match self.next_received(remaining) {
                Received::Event(event) => event,
                other => panic!(
                    "event {seq} did not arrive within {timeout:?} ({other:?}); last Seq seen {last}, {} events",
                    seen.len()
                ),
            };
            let Some(this) = event.get("Seq").and_then(Value::as_u64) else {
                continue;
            };
            assert!(
                this > last,
                "Seq {this} arrived after Seq {last}: out of order or repeated"
            );
            last = this;
            seen.push(event);
            if this >= seq {
                assert_eq!(this, seq, "event {seq} was skipped");
                return seen;
            }
        }
    }
}

/// The `Seq` of each event, in order.
pub fn seqs(events: &[Value]) -> Vec<u64> {
    events
        .iter()
        .map(|e| {
            e["Seq"]
                .as_u64()
                .unwrap_or_else(|| panic!("event without a Seq: {e}"))
        })
        .collect()
}

/// Asserts that `seqs` is exactly `first..=last`, naming what is missing, repeated or outside.
pub fn assert_contiguous(seqs: &[u64], first: u64, last: u64) {
    if seqs.iter().copied().eq(first..=last) {
        return;
    }
    let present: std::collections::HashSet<u64> = seqs.iter().copied().collect();
    let missing: Vec<u64> = (first..=last).filter(|s| !present.contains(s)).collect();
    let mut seen = std::collections::HashSet::new();
    let repeated: Vec<u64> = seqs.iter().copied().filter(|s| !seen.insert(*s)).collect();
    let outside: Vec<u64> = seqs
        .iter()
        .copied()
        .filter(|s| !(first..=last).contains(s))
        .collect();
    let unordered = seqs.windows(2).filter(|w| w[0] >= w[1]).count();
    panic!(
        "the log must hold every Seq from FirstSeq {first} to LastSeq {last} once, in order; \
         it holds {} events: missing {missing:?}, repeated {repeated:?}, outside {outside:?}, \
         {unordered} out of order",
        seqs.len()
    );
}
