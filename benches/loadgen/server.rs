//! The servers under test, started as children so their pid (and so their memory and CPU time
//! in `/proc`) is known, each in a fresh temporary directory.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{OnceLock, mpsc};
use std::thread;
use std::time::{Duration, Instant};

/// How long a server may take to say it listens.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a server may take to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Lines of a server's warnings and errors echoed to our stderr.
const ECHOED_LINES: usize = 20;
/// herald's `--cluster-name` and the NATS cluster's name in the cluster target.
const CLUSTER_NAME: &str = "loadgen";
/// NATS servers under a herald cluster: JetStream's R3 needs three.
const NATS_SERVERS: usize = 3;
/// How long one monitoring request may take.
const MONITOR_TIMEOUT: Duration = Duration::from_secs(1);

/// A running server.
pub(crate) struct Server {
    child: Child,
    /// Where it listens (herald's only listener; NATS's websocket listener).
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
}

/// The CPUs every server child runs on (`--server-cpus`); unset, they run wherever the
/// scheduler puts them.
static SERVER_CPUS: OnceLock<Vec<usize>> = OnceLock::new();

/// Pins every server started from now on to `cpus`, herald and NATS alike.
pub(crate) fn pin_servers(cpus: Vec<usize>) {
    let _ = SERVER_CPUS.set(cpus);
}

/// Restricts the calling thread, and the threads and children it starts later, to `cpus`.
pub(crate) fn pin_self(cpus: &[usize]) -> std::io::Result<()> {
    set_affinity(&cpu_set(cpus))
}

fn cpu_set(cpus: &[usize]) -> libc::cpu_set_t {
    // SAFETY: cpu_set_t is a plain bit array, for which all zeroes is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &cpu in cpus {
        // SAFETY: CPU_SET only sets a bit of the set it is given, and ignores CPUs beyond it.
        unsafe { libc::CPU_SET(cpu, &mut set) };
    }
    set
}

fn set_affinity(set: &libc::cpu_set_t) -> std::io::Result<()> {
    // SAFETY: sched_setaffinity reads the set it is given, which lives for the call.
    let done = unsafe { libc::sched_setaffinity(0, std::mem::size_of_val(set), set) };
    if done == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// A certificate for 127.0.0.1 and localhost, as PEM files that both herald and NATS serve.
pub(crate) struct TlsFiles<'a> {
    pub cert: &'a Path,
    pub key: &'a Path,
}

/// How to start herald.
#[derive(Clone, Copy)]
pub(crate) struct HeraldOptions<'a> {
    /// The binary.
    pub bin: &'a Path,
    /// `--durability sync` or `batched`; `None` for herald's default.
    pub durability: Option<&'a str>,
    /// Serve TLS with these files instead of `--plain`.
    pub tls: Option<&'a TlsFiles<'a>>,
    /// `--cores`; `None` for herald's default (every CPU it may run on).
    pub cores: Option<usize>,
    /// More arguments of `herald serve`, e.g. `--cache-bytes=1GiB`.
    pub extra: &'a [String],
    /// `--admin-password`.
    pub password: &'a str,
    /// Cluster mode: the node's `--nats` URLs and `--node-name`.
    pub cluster: Option<(&'a str, &'a str)>,
}

impl Server {
    /// Starts herald on a free loopback port and waits for its `listening on` line.
    pub(crate) fn herald(options: &HeraldOptions) -> Result<Server, String> {
        let dir = tempfile::tempdir().map_err(|e| format!("temporary directory: {e}"))?;
        let mut command = Command::new(options.bin);
        command
            .arg("serve")
            .args(["--listen", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["--admin-password", options.password])
            .args(["--log-level", "info"])
            .env_remove("HERALD_CONFIG");
        // Only what is asked for: a target of herald's defaults passes neither.
        if let Some(durability) = options.durability {
            command.args(["--durability", durability]);
        }
        if let Some(cores) = options.cores {
            command.args(["--cores", &cores.to_string()]);
        }
        match options.tls {
            Some(files) => {
                command
                    .arg("--tls-cert")
                    .arg(files.cert)
                    .arg("--tls-key")
                    .arg(files.key);
            }
            None => {
                command.arg("--plain");
            }
        }
        command.args(options.extra);
        if let Some((urls, node)) = options.cluster {
            command
                .args(["--nats", urls])
                .args(["--cluster-name", CLUSTER_NAME])
                .args(["--node-name", node]);
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

    /// Starts `nats-server` with a websocket listener on a free loopback port, serving TLS
    /// with `tls` (the certificate herald gets) or plain.
    pub(crate) fn nats(
        bin: &Path,
        jetstream: bool,
        tls: Option<&TlsFiles>,
    ) -> Result<Server, String> {
        let dir = tempfile::tempdir().map_err(|e| format!("temporary directory: {e}"))?;
        let port = free_port()?;
        let websocket_tls = match tls {
            Some(files) => format!(
                "tls {{ cert_file: {:?}, key_file: {:?} }}",
                files.cert, files.key
            ),
            None => "no_tls: true".to_owned(),
        };
        let mut config = format!(
            "listen: \"127.0.0.1:-1\"\nmax_payload: 1048576\n\
             websocket {{ listen: \"127.0.0.1:{port}\", {websocket_tls} }}\n"
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

    /// Kills the server at once (SIGKILL), as a crash would, and reaps it.
    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stops the server: SIGTERM, then SIGKILL (by [`Drop`]) if it lingers.
    pub(crate) fn stop(mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
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

    /// Starts server `index` of a JetStream cluster of [`NATS_SERVERS`] routed to each other:
    /// `ports` holds every server's client ports, then route ports, then monitoring ports.
    fn nats_clustered(bin: &Path, index: usize, ports: &[u16]) -> Result<Server, String> {
        let dir = tempfile::tempdir().map_err(|e| format!("temporary directory: {e}"))?;
        let routes: Vec<String> = (0..NATS_SERVERS)
            .filter(|&other| other != index)
            .map(|other| format!("\"nats-route://127.0.0.1:{}\"", ports[NATS_SERVERS + other]))
            .collect();
        let config = format!(
            "server_name: n{index}\nlisten: \"127.0.0.1:{client}\"\nhttp: \"127.0.0.1:{monitor}\"\n\
             max_payload: 8MB\njetstream {{ store_dir: {store:?} }}\n\
             cluster {{\n  name: {CLUSTER_NAME}\n  listen: \"127.0.0.1:{route}\"\n  routes: [{routes}]\n}}\n",
            client = ports[index],
            route = ports[NATS_SERVERS + index],
            monitor = ports[2 * NATS_SERVERS + index],
            store = dir.path().join("js"),
            routes = routes.join(", "),
        );
        let file = dir.path().join("nats.conf");
        std::fs::write(&file, config).map_err(|e| format!("writing {}: {e}", file.display()))?;
        let mut command = Command::new(bin);
        command.arg("-c").arg(&file);
        let name = format!("nats-server n{index}");
        let (child, _) = spawn_until(command, &name, |line| line.contains("Server is ready"))?;
        Ok(Server {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], ports[index])),
            _dir: dir,
        })
    }
}

/// What one target runs: a single server, or a herald cluster on a JetStream cluster.
pub(crate) struct Deployment {
    /// The single server, or the cluster's node A: the subscribers connect here.
    pub main: Server,
    /// The cluster's node B: the publishers connect here, so every event the subscribers get
    /// crossed JetStream.
    pub publish_node: Option<Server>,
    /// The cluster's NATS servers.
    pub nats: Vec<Server>,
}

impl Deployment {
    /// One server.
    pub(crate) fn single(server: Server) -> Deployment {
        Deployment {
            main: server,
            publish_node: None,
            nats: Vec::new(),
        }
    }

    /// Three JetStream servers clustered on loopback, then herald nodes A and B on them
    /// (A first: it creates the stream, R3 by default).
    pub(crate) fn cluster(nats_bin: &Path, herald: &HeraldOptions) -> Result<Deployment, String> {
        let ports = free_ports(NATS_SERVERS * 3)?;
        let mut nats = Vec::with_capacity(NATS_SERVERS);
        for index in 0..NATS_SERVERS {
            nats.push(Server::nats_clustered(nats_bin, index, &ports)?);
        }
        await_jetstream(&ports[2 * NATS_SERVERS..])?;
        let urls: Vec<String> = ports[..NATS_SERVERS]
            .iter()
            .map(|port| format!("nats://127.0.0.1:{port}"))
            .collect();
        let urls = urls.join(",");
        let a = Server::herald(&HeraldOptions {
            cluster: Some((&urls, "a")),
            ..*herald
        })?;
        let b = Server::herald(&HeraldOptions {
            cluster: Some((&urls, "b")),
            ..*herald
        })?;
        Ok(Deployment {
            main: a,
            publish_node: Some(b),
            nats,
        })
    }

    /// Resident memory of the single server or node A, in KiB.
    pub(crate) fn rss_kib(&self) -> u64 {
        self.main.rss_kib()
    }

    /// Peak resident memory of the single server or node A, in KiB.
    pub(crate) fn peak_rss_kib(&self) -> u64 {
        self.main.peak_rss_kib()
    }

    /// CPU seconds of the single server or node A.
    pub(crate) fn cpu_seconds(&self) -> f64 {
        self.main.cpu_seconds()
    }

    /// Where the publishers connect.
    pub(crate) fn publish_addr(&self) -> SocketAddr {
        self.publish_node.as_ref().unwrap_or(&self.main).addr
    }

    /// Whether this is a cluster.
    pub(crate) fn is_cluster(&self) -> bool {
        self.publish_node.is_some()
    }

    /// CPU seconds of the publishers' node (0 for a single server).
    pub(crate) fn publish_node_cpu_seconds(&self) -> f64 {
        self.publish_node.as_ref().map_or(0.0, Server::cpu_seconds)
    }

    /// CPU seconds of every NATS server of the cluster together.
    pub(crate) fn nats_cpu_seconds(&self) -> f64 {
        self.nats.iter().map(Server::cpu_seconds).sum()
    }

    /// Resident memory of every NATS server of the cluster together, in KiB.
    pub(crate) fn nats_rss_kib(&self) -> u64 {
        self.nats.iter().map(Server::rss_kib).sum()
    }

    /// Stops the herald nodes, then the NATS servers under them.
    pub(crate) fn stop(self) {
        self.main.stop();
        if let Some(node) = self.publish_node {
            node.stop();
        }
        for server in self.nats {
            server.stop();
        }
    }
}

/// Waits until every JetStream server (by its monitoring port) names a meta leader and says it
/// is healthy, so the first herald node can create its stream.
fn await_jetstream(monitor_ports: &[u16]) -> Result<(), String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(MONITOR_TIMEOUT))
        .build()
        .into();
    let get = |port: u16, path: &str| -> serde_json::Value {
        agent
            .get(format!("http://127.0.0.1:{port}{path}"))
            .call()
            .ok()
            .and_then(|mut r| r.body_mut().read_to_string().ok())
            .and_then(|body| serde_json::from_str(&body).ok())
            .unwrap_or_default()
    };
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        let mut waiting = None;
        for &port in monitor_ports {
            let jsz = get(port, "/jsz");
            let leader = jsz
                .pointer("/meta_cluster/leader")
                .and_then(serde_json::Value::as_str);
            if leader.is_none_or(str::is_empty) {
                waiting = Some(format!("no JetStream meta leader on :{port} yet: {jsz}"));
                break;
            }
            let health = get(port, "/healthz");
            if health.get("status").and_then(serde_json::Value::as_str) != Some("ok") {
                waiting = Some(format!("JetStream on :{port} is not healthy: {health}"));
                break;
            }
        }
        let Some(state) = waiting else {
            return Ok(());
        };
        if Instant::now() > deadline {
            return Err(format!("the NATS cluster was not ready in time: {state}"));
        }
        thread::sleep(Duration::from_millis(100));
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
    Ok(free_ports(1)?[0])
}

/// `count` distinct free loopback ports: all held at once while picked, so none repeats.
fn free_ports(count: usize) -> Result<Vec<u16>, String> {
    let listeners = (0..count)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("cannot find a free port: {e}"))?;
    listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("cannot find a free port: {e}"))
}

/// Warnings every run prints: herald's about the default password, and NATS's while the
/// cluster's servers start one after the other and do not reach each other yet.
fn expected_noise(line: &str) -> bool {
    line.contains("default password")
        || line.contains("Error trying to connect to route")
        || line.contains("Waiting for routing to be established")
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
    if let Some(cpus) = SERVER_CPUS.get() {
        let set = cpu_set(cpus);
        // SAFETY: the child only makes the sched_setaffinity system call between fork and
        // exec, with a set built before the fork.
        unsafe {
            command.pre_exec(move || set_affinity(&set));
        }
    }
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
            if loud && echoed < ECHOED_LINES && !expected_noise(&line) {
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
