//! The servers under test, started as children so their pid (and so their memory and CPU time
//! in `/proc`) is known, each in a fresh temporary directory.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// How long a server may take to say it listens.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a server may take to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Lines of a server's warnings and errors echoed to our stderr.
const ECHOED_LINES: usize = 20;

/// A running server.
pub(crate) struct Server {
    child: Child,
    /// Where it listens (herald's only listener; NATS's websocket listener).
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
}

/// How to start herald.
pub(crate) struct HeraldOptions<'a> {
    /// The binary.
    pub bin: &'a Path,
    /// `sync` or `batched`.
    pub durability: &'a str,
    /// Serve TLS instead of `--plain`.
    pub tls: bool,
    /// `--cores`.
    pub cores: usize,
    /// `--admin-password`.
    pub password: &'a str,
}

impl Server {
    /// Starts herald on a free loopback port and waits for its `listening on` line.
    pub(crate) fn herald(options: &HeraldOptions) -> Result<Server, String> {
        let dir = tempfile::tempdir().map_err(|e| format!("temporary directory: {e}"))?;
        let mut command = Command::new(options.bin);
        command
            .arg("serve")
            .args([
                "--listen",
                "127.0.0.1:0",
                "--durability",
                options.durability,
            ])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["--admin-password", options.password])
            .args(["--cores", &options.cores.to_string()])
            .args(["--log-level", "info"])
            .env_remove("HERALD_CONFIG");
        if !options.tls {
            command.arg("--plain");
        }
        let (child, line) = spawn_until(command, "herald", |line| line.contains("listening on "))?;
        let addr = line
            .split("://")
            .nth(1)
            .map(|rest| {
                rest.split(|c: char| !(c.is_ascii_digit() || c == '.' || c == ':'))
                    .next()
                    .unwrap_or("")
            })
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| format!("cannot find the address in herald's line {line:?}"))?;
        Ok(Server {
            child,
            addr,
            _dir: dir,
        })
    }

    /// Starts `nats-server` with a websocket listener on a free loopback port.
    pub(crate) fn nats(bin: &Path, jetstream: bool) -> Result<Server, String> {
        let dir = tempfile::tempdir().map_err(|e| format!("temporary directory: {e}"))?;
        let port = free_port()?;
        let mut config = format!(
            "listen: \"127.0.0.1:-1\"\nmax_payload: 1048576\n\
             websocket {{ listen: \"127.0.0.1:{port}\", no_tls: true }}\n"
        );
        if jetstream {
            config.push_str(&format!(
                "jetstream {{ store_dir: {:?} }}\n",
                dir.path().join("js")
            ));
        }
        let file = dir.path().join("nats.conf");
        std::fs::write(&file, config).map_err(|e| format!("writing {}: {e}", file.display()))?;
        let mut command = Command::new(bin);
        command.arg("-c").arg(&file);
        let (child, _) = spawn_until(command, "nats-server", |line| {
            line.contains("Server is ready")
        })?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + START_TIMEOUT;
        while TcpStream::connect(addr).is_err() {
            if Instant::now() > deadline {
                return Err(format!(
                    "nats-server does not accept websocket connections on {addr}"
                ));
            }
            thread::sleep(Duration::from_millis(20));
        }
        Ok(Server {
            child,
            addr,
            _dir: dir,
        })
    }

    /// The process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory in KiB (`VmRSS`).
    pub(crate) fn rss_kib(&self) -> u64 {
        self.status_kib("VmRSS:")
    }

    /// The most resident memory so far, in KiB (`VmHWM`).
    pub(crate) fn peak_rss_kib(&self) -> u64 {
        self.status_kib("VmHWM:")
    }

    fn status_kib(&self, field: &str) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    /// User plus system CPU time so far, in seconds.
    pub(crate) fn cpu_seconds(&self) -> f64 {
        cpu_seconds(&self.pid().to_string())
    }

    /// Stops the server: SIGTERM, then SIGKILL (by [`Drop`]) if it lingers.
    pub(crate) fn stop(mut self) {
        let pid = self.pid().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    /// A server is never left running: not after an early return, nor a panic.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// User plus system CPU time of a process (`self` for this one), in seconds.
pub(crate) fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i)?.parse::<u64>().ok())
        .sum();
    ticks as f64 / clock_ticks()
}

fn clock_ticks() -> f64 {
    let output = Command::new("getconf").arg("CLK_TCK").output();
    output
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .unwrap_or(100.0)
}

fn free_port() -> Result<u16, String> {
    let listener =
        TcpListener::bind("127.0.0.1:0").map_err(|e| format!("cannot find a free port: {e}"))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("cannot find a free port: {e}"))
}

/// Spawns `command` with stderr piped, waits for a line that `ready` accepts, and keeps
/// draining stderr afterwards (echoing warnings) so the child never blocks on a full pipe.
fn spawn_until(
    mut command: Command,
    name: &str,
    ready: impl Fn(&str) -> bool,
) -> Result<(Child, String), String> {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot start {name}: {e}"))?;
    let Some(stderr) = child.stderr.take() else {
        return Err(format!("{name} has no stderr pipe"));
    };
    let (tx, rx) = mpsc::channel::<String>();
    let label = name.to_owned();
    thread::spawn(move || {
        let mut tx = Some(tx);
        let mut echoed = 0;
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if let Some(sender) = &tx
                && sender.send(line.clone()).is_err()
            {
                tx = None;
            }
            let loud = line.contains("WARN")
                || line.contains("ERROR")
                || line.contains("[ERR]")
                || line.contains("[WRN]");
            if loud && echoed < ECHOED_LINES && !line.contains("default password") {
                eprintln!("  {label}: {line}");
                echoed += 1;
            }
        }
    });
    let deadline = Instant::now() + START_TIMEOUT;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if ready(&line) => return Ok((child, line)),
            Ok(line) => seen.push(line),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{name} did not start; it said:\n{}",
                    seen.join("\n")
                ));
            }
        }
    }
}
