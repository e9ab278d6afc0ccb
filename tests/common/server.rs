//! Starting and stopping `herald serve`: the watchdog, the start line, signals, shutdown.

use std::fmt;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use super::http::agent_trusting;
use super::tls::rustls_config_trusting;
use super::{
    ADMIN, ADMIN_PASSWORD, Auth, DRP_DEFAULT_PASSWORD, REPLY_TIMEOUT, eventually, poll_until,
};

/// How long the server may take to log that it is listening.
pub(super) const STARTUP_DEADLINE: Duration = Duration::from_secs(20);
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

impl Options {
    /// The default options with these `herald serve` flags.
    pub fn with_args(args: &[&str]) -> Options {
        Options::default().and_args(args)
    }

    /// These options with more `herald serve` flags.
    pub fn and_args(mut self, args: &[&str]) -> Options {
        self.args.extend(args.iter().map(|a| a.to_string()));
        self
    }

    /// These options on a data directory the caller owns, kept after the server stops.
    pub fn and_dir(mut self, dir: &Path) -> Options {
        self.data_dir = Some(dir.to_path_buf());
        self
    }

    /// The default options on a data directory the caller owns, kept after the server stops.
    pub fn in_dir(dir: &Path) -> Options {
        Options {
            data_dir: Some(dir.to_path_buf()),
            ..Options::default()
        }
    }
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
    pub(super) watchdog: Child,
    pub(super) watchdog_stdin: Option<ChildStdin>,
    pub(super) herald_pid: u32,
    pub(super) addr: SocketAddr,
    pub(super) tls: Option<Arc<rustls::ClientConfig>>,
    pub(super) cert_pem: Option<Vec<u8>>,
    pub(super) data_dir: PathBuf,
    pub(super) stderr: Arc<Mutex<String>>,
    pub(super) admin_password: String,
    pub(super) agent: ureq::Agent,
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
        poll_until(SHUTDOWN_DEADLINE, || match self.watchdog.try_wait() {
            Ok(Some(status)) => Ok(status.code()),
            _ => Err(()),
        })
        .ok()
        .flatten()
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
        eventually(&format!("a log line with {parts:?}"), REPLY_TIMEOUT, || {
            let log = self.stderr();
            match log.lines().find(|l| parts.iter().all(|p| l.contains(p))) {
                Some(line) => Ok(line.to_string()),
                None => Err(format!("stderr:\n{log}")),
            }
        })
    }

    /// The admin's password on this server.
    pub fn admin_password(&self) -> &str {
        &self.admin_password
    }

    /// Admin credentials on this server.
    pub fn admin(&self) -> Auth {
        Auth::basic(ADMIN, &self.admin_password)
    }

    /// Sends SIGTERM and waits for herald to exit on its own; panics if it does not in time.
    pub fn terminate(self) {
        self.signal("TERM");
        self.await_exit("SIGTERM");
    }

    /// Sends SIGKILL: herald dies at once, flushing nothing. Returns once it is gone.
    pub fn kill(self) {
        self.kill_shared();
    }

    /// Like `kill`, for a server other threads still hold (they see its sockets fail).
    pub fn kill_shared(&self) {
        self.signal("KILL");
        self.await_exit("SIGKILL");
    }

    /// Sends SIGHUP: herald reloads its configuration and keeps running.
    pub fn hangup(&self) {
        self.signal("HUP");
    }

    /// Sends SIGSTOP: herald stops running, its sockets stay open.
    pub fn pause(&self) {
        self.signal("STOP");
    }

    /// Sends SIGCONT: a paused herald runs on.
    pub fn resume(&self) {
        self.signal("CONT");
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([format!("-{name}"), self.herald_pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} {} failed", self.herald_pid);
    }

    /// Waits until herald is gone or a zombie (its parent, the watchdog, reaps it on drop).
    fn await_exit(&self, after: &str) {
        let stat = format!("/proc/{}/stat", self.herald_pid);
        eventually(
            &format!("herald's exit after {after}"),
            SHUTDOWN_DEADLINE,
            || {
                let state = std::fs::read_to_string(&stat).ok().and_then(|s| {
                    let (_, rest) = s.rsplit_once(')')?;
                    rest.trim_start().chars().next()
                });
                if matches!(state, None | Some('Z' | 'X')) {
                    Ok(())
                } else {
                    Err(format!("state {state:?}; stderr:\n{}", self.stderr()))
                }
            },
        );
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Closing the pipe tells the watchdog to stop herald and wait for it.
        drop(self.watchdog_stdin.take());
        let exited = poll_until(SHUTDOWN_DEADLINE, || match self.watchdog.try_wait() {
            Ok(Some(_)) => Ok(()),
            _ => Err(()),
        });
        if exited.is_ok() {
            return;
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
