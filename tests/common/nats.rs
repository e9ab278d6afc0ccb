//! A real NATS JetStream cluster for cluster-mode tests: `nats-server` processes on free loopback
//! ports, each with its own config file, store and log, killed, paused and restarted at will.
//!
//! Timing in nats-server 2.9: a stream or meta leader that is killed or paused is replaced only
//! after JetStream's election timeout, 4 to 9 s; one stopped with SIGTERM hands over at once. A
//! cluster started again after `stop_all` takes 5 to 10 s (elections again) to be ready.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use tempfile::TempDir;

use super::{LOG_TIMEOUT, REPLY_TIMEOUT, eventually, poll_until};

/// How long servers may take to start and agree on a JetStream meta leader, or to rejoin.
const READY_DEADLINE: Duration = Duration::from_secs(30);
/// How long one monitoring request may take: a paused server never answers, and must not hold
/// up a look at the others.
const MONITOR_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a stopping server may take before it is killed.
const STOP_DEADLINE: Duration = Duration::from_secs(10);
/// Fresh ports for a start whose ports another process took between the pick and the bind.
const START_ATTEMPTS: usize = 3;
/// The NATS cluster name the servers share.
const CLUSTER_NAME: &str = "herald-test";

/// Runs nats-server under a watchdog shell that kills it as soon as the harness's end of the
/// stdin pipe closes, so a cluster that is never dropped (a `static`, a killed test binary)
/// does not outlive the tests. It prints the server's pid and appends its output to `$1`.
const WATCHDOG: &str = r#"
log=$1
shift
"$@" </dev/null >>"$log" 2>&1 &
pid=$!
echo "$pid"
exec >/dev/null 2>&1
read -r _
kill -KILL "$pid" 2>/dev/null
wait "$pid"
"#;

/// A running JetStream cluster (or a single JetStream server); every server is killed and its
/// store removed on drop.
pub struct NatsCluster {
    binary: PathBuf,
    dir: TempDir,
    servers: Vec<NatsServer>,
    monitor: ureq::Agent,
}

/// One server of the cluster: its ports and files stay the same across restarts.
struct NatsServer {
    name: String,
    client_port: u16,
    monitor_port: u16,
    config: PathBuf,
    log: PathBuf,
    process: Option<Process>,
}

/// A started nats-server under its watchdog.
struct Process {
    watchdog: Child,
    watchdog_stdin: Option<ChildStdin>,
    pid: u32,
    paused: bool,
}

/// Why servers did not become ready.
enum NotReady {
    /// Server `index` exited; its log says why.
    Exited(usize),
    /// The deadline passed; the last state seen.
    Timeout(String),
}

impl NatsCluster {
    /// Starts `count` JetStream servers `n0..`: one is a standalone JetStream server, more form
    /// a cluster routed to each other. Returns once JetStream answers on every one of them (and
    /// a meta leader is elected); panics naming `apt-get install nats-server` when the binary
    /// is missing.
    pub fn start(count: usize) -> NatsCluster {
        assert!(count >= 1, "a NATS cluster needs at least one server");
        let binary = nats_server_binary();
        let mut last = String::new();
        for _ in 0..START_ATTEMPTS {
            let mut cluster = NatsCluster::configure(count, binary.clone());
            for index in 0..count {
                cluster.spawn(index);
            }
            let all: Vec<usize> = (0..count).collect();
            match cluster.await_ready(&all) {
                Ok(()) => return cluster,
                Err(NotReady::Exited(index))
                    if cluster.log(index).contains("address already in use") =>
                {
                    last = cluster.logs();
                }
                Err(NotReady::Exited(index)) => {
                    panic!(
                        "nats-server n{index} exited while starting; logs:\n{}",
                        cluster.logs()
                    )
                }
                Err(NotReady::Timeout(state)) => panic!(
                    "the NATS servers were not ready within {READY_DEADLINE:?} ({state}); logs:\n{}",
                    cluster.logs()
                ),
            }
        }
        panic!("no free ports for nats-server after {START_ATTEMPTS} attempts; logs:\n{last}")
    }

    /// Picks ports and writes every server's config file; starts nothing.
    fn configure(count: usize, binary: PathBuf) -> NatsCluster {
        let dir = tempfile::Builder::new()
            .prefix("herald-nats-")
            .tempdir()
            .expect("a directory for the NATS servers");
        let ports = free_ports(count * 3);
        let route_ports = &ports[count..count * 2];
        let mut servers = Vec::with_capacity(count);
        for index in 0..count {
            let name = format!("n{index}");
            let store = dir.path().join(&name);
            std::fs::create_dir(&store).expect("a NATS store directory");
            let mut config = format!(
                "# {name}: one server of the test cluster\n\
                 server_name: {name}\n\
                 listen: \"127.0.0.1:{client}\"\n\
                 http: \"127.0.0.1:{monitor}\"\n\
                 # herald accepts events up to its max_body_bytes (1 MiB) and adds fields.\n\
                 max_payload: 8MB\n\
                 jetstream {{\n  store_dir: \"{store}\"\n}}\n",
                client = ports[index],
                monitor = ports[count * 2 + index],
                store = store.display(),
            );
            if count > 1 {
                let routes: Vec<String> = route_ports
                    .iter()
                    .enumerate()
                    .filter(|(other, _)| *other != index)
                    .map(|(_, port)| format!("\"nats-route://127.0.0.1:{port}\""))
                    .collect();
                let _ = write!(
                    config,
                    "cluster {{\n  name: {CLUSTER_NAME}\n  listen: \"127.0.0.1:{route}\"\n  routes: [{routes}]\n}}\n",
                    route = route_ports[index],
                    routes = routes.join(", "),
                );
            }
            let config_path = dir.path().join(format!("{name}.conf"));
            std::fs::write(&config_path, config).expect("write a nats-server config file");
            servers.push(NatsServer {
                log: dir.path().join(format!("{name}.log")),
                name,
                client_port: ports[index],
                monitor_port: ports[count * 2 + index],
                config: config_path,
                process: None,
            });
        }
        NatsCluster {
            binary,
            dir,
            servers,
            monitor: ureq::Agent::config_builder()
                .http_status_as_error(false)
                .ip_family(ureq::config::IpFamily::Ipv4Only)
                .timeout_global(Some(MONITOR_TIMEOUT))
                .build()
                .new_agent(),
        }
    }

    /// How many servers the cluster has (running or not).
    pub fn len(&self) -> usize {
        self.servers.len()
    }

    /// Every server's client URL, comma-separated: the value of `herald serve --nats`.
    pub fn urls(&self) -> String {
        (0..self.len())
            .map(|index| self.url(index))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Server `index`'s client URL, `nats://127.0.0.1:PORT`.
    pub fn url(&self, index: usize) -> String {
        format!("nats://127.0.0.1:{}", self.servers[index].client_port)
    }

    /// Server `index`'s name (`n0`, `n1`, …), as JetStream reports leaders.
    pub fn name(&self, index: usize) -> &str {
        &self.servers[index].name
    }

    /// Server `index`'s monitoring endpoint, `http://127.0.0.1:PORT`.
    pub fn monitor_url(&self, index: usize) -> String {
        format!("http://127.0.0.1:{}", self.servers[index].monitor_port)
    }

    /// Whether server `index` runs (paused counts as running).
    pub fn is_running(&self, index: usize) -> bool {
        self.servers[index].process.is_some()
    }

    /// SIGKILL to server `index`: it dies at once. Returns once it is gone.
    pub fn kill(&mut self, index: usize) {
        self.end(index, "KILL");
    }

    /// SIGTERM to server `index`, which shuts down in order; SIGKILL if it takes too long.
    pub fn stop(&mut self, index: usize) {
        self.end(index, "TERM");
    }

    /// Starts server `index` again on the same ports and store (killing it first if it runs);
    /// returns once it has rejoined: JetStream healthy, its streams caught up. With no quorum
    /// left among the others it cannot catch up: bring several back with [`start_all`].
    ///
    /// [`start_all`]: NatsCluster::start_all
    pub fn restart(&mut self, index: usize) {
        if self.is_running(index) {
            self.kill(index);
        }
        self.spawn(index);
        self.ready_or_panic(&[index]);
    }

    /// SIGSTOP to server `index`: it holds its sockets but answers nothing, like a hung machine.
    /// Returns once every thread of it has stopped: `kill` returns before they all have.
    pub fn pause(&mut self, index: usize) {
        let process = self.running(index);
        signal(process.pid, "STOP");
        process.paused = true;
        let pid = process.pid;
        eventually(
            &format!("every thread of nats-server n{index} to stop"),
            REPLY_TIMEOUT,
            || {
                let states = thread_states(pid);
                if !states.is_empty() && states.iter().all(|&s| s == 'T') {
                    Ok(())
                } else {
                    Err(format!("thread states {states:?}"))
                }
            },
        );
    }

    /// SIGCONT to a paused server `index`.
    pub fn resume(&mut self, index: usize) {
        let process = self.running(index);
        signal(process.pid, "CONT");
        process.paused = false;
    }

    /// Stops every running server: NATS entirely down. Their stores stay for [`start_all`].
    ///
    /// [`start_all`]: NatsCluster::start_all
    pub fn stop_all(&mut self) {
        for index in 0..self.len() {
            if self.is_running(index) {
                self.stop(index);
            }
        }
    }

    /// Starts every server that is not running; returns once all are ready as after [`start`].
    ///
    /// [`start`]: NatsCluster::start
    pub fn start_all(&mut self) {
        let stopped: Vec<usize> = (0..self.len()).filter(|&i| !self.is_running(i)).collect();
        for &index in &stopped {
            self.spawn(index);
        }
        let all: Vec<usize> = (0..self.len()).collect();
        self.ready_or_panic(&all);
    }

    /// The server that leads JetStream's meta group (creates streams), if one is elected.
    pub fn meta_leader(&self) -> Option<usize> {
        let views: Vec<(usize, Option<String>)> = (0..self.len())
            .filter(|&i| self.answers(i))
            .map(|i| {
                let jsz = self.monitor_json(i, "/jsz").ok();
                let leader = jsz
                    .as_ref()
                    .and_then(|j| j.pointer("/meta_cluster/leader"))
                    .and_then(Value::as_str)
                    .map(str::to_owned);
                (i, leader)
            })
            .collect();
        self.agreed_leader(&views)
    }

    /// The server that leads stream `stream`, as the servers holding it report in
    /// `/jsz?streams=true`; `None` while none is elected (or none answers).
    pub fn stream_leader(&self, stream: &str) -> Option<usize> {
        let views: Vec<(usize, Option<String>)> = (0..self.len())
            .filter(|&i| self.answers(i))
            .filter_map(|i| {
                let detail = self.stream_detail(i, stream)?;
                let leader = detail
                    .pointer("/cluster/leader")
                    .and_then(Value::as_str)
                    .map(str::to_owned);
                Some((i, leader))
            })
            .collect();
        self.agreed_leader(&views)
    }

    /// Waits until stream `stream` has a leader; returns it.
    pub fn wait_stream_leader(&self, stream: &str) -> usize {
        eventually(
            &format!("a leader for stream {stream}"),
            LOG_TIMEOUT,
            || {
                self.stream_leader(stream)
                    .ok_or_else(|| self.leader_views(stream))
            },
        )
    }

    /// Waits until stream `stream` has a leader other than server `old` (after killing or
    /// pausing it); returns it.
    pub fn wait_new_stream_leader(&self, stream: &str, old: usize) -> usize {
        eventually(
            &format!("a leader for stream {stream} other than n{old}"),
            LOG_TIMEOUT,
            || match self.stream_leader(stream) {
                Some(leader) if leader != old => Ok(leader),
                _ => Err(self.leader_views(stream)),
            },
        )
    }

    /// Stream `stream` as server `index` holds it: its `stream_detail` entry from
    /// `/jsz?streams=true` (name, `cluster.leader`, `state.messages`, `state.last_seq`, …), or
    /// `None` if that server holds no replica of it or does not answer.
    pub fn stream_detail(&self, index: usize, stream: &str) -> Option<Value> {
        let jsz = self.monitor_json(index, "/jsz?streams=true").ok()?;
        jsz.get("account_details")?
            .as_array()?
            .iter()
            .filter_map(|account| account.get("stream_detail")?.as_array())
            .flatten()
            .find(|detail| detail.get("name").and_then(Value::as_str) == Some(stream))
            .cloned()
    }

    /// GET `path` on server `index`'s monitoring port, as JSON (whatever the status).
    pub fn monitor_json(&self, index: usize, path: &str) -> Result<Value, String> {
        let url = format!("{}{path}", self.monitor_url(index));
        let mut response = self
            .monitor
            .get(&url)
            .call()
            .map_err(|e| format!("GET {url}: {e}"))?;
        let body = response
            .body_mut()
            .read_to_string()
            .map_err(|e| format!("read GET {url}: {e}"))?;
        serde_json::from_str(&body).map_err(|e| format!("GET {url} is not JSON ({e}): {body}"))
    }

    /// One request over the NATS protocol to server `index`: publishes `payload` to `subject`
    /// and returns the JSON reply, e.g. a JetStream publish acknowledgement.
    pub fn request(&self, index: usize, subject: &str, payload: &[u8]) -> Result<Value, String> {
        nats_request(self.servers[index].client_port, subject, payload)
    }

    /// A JetStream API call on server `index`: `api` is the subject after `$JS.API.`, e.g.
    /// `STREAM.CREATE.NAME` or `STREAM.INFO.NAME`. An answer carrying JetStream's `error` is `Err`.
    pub fn jetstream(&self, index: usize, api: &str, request: &Value) -> Result<Value, String> {
        let reply = self.request(
            index,
            &format!("$JS.API.{api}"),
            request.to_string().as_bytes(),
        )?;
        match reply.get("error") {
            Some(error) => Err(format!("$JS.API.{api}: {error}")),
            None => Ok(reply),
        }
    }

    /// Server `index`'s output so far (every run of it, appended).
    pub fn log(&self, index: usize) -> String {
        std::fs::read_to_string(&self.servers[index].log).unwrap_or_default()
    }

    /// Every server's output, each under a header, for a failing test to print.
    pub fn logs(&self) -> String {
        let mut all = String::new();
        for index in 0..self.len() {
            let _ = writeln!(
                all,
                "----- nats-server {} -----\n{}",
                self.name(index),
                self.log(index)
            );
        }
        all
    }

    fn spawn(&mut self, index: usize) {
        let server = &mut self.servers[index];
        assert!(
            server.process.is_none(),
            "nats-server {} already runs",
            server.name
        );
        let mut watchdog = Command::new("sh")
            .arg("-c")
            .arg(WATCHDOG)
            .arg("nats-watchdog")
            .arg(&server.log)
            .arg(&self.binary)
            .arg("-c")
            .arg(&server.config)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn nats-server under sh");
        let watchdog_stdin = watchdog.stdin.take();
        let mut pid_line = String::new();
        if let Some(stdout) = watchdog.stdout.take() {
            BufReader::new(stdout)
                .read_line(&mut pid_line)
                .expect("read nats-server's pid");
        }
        let pid = pid_line.trim().parse().expect("nats-server's pid");
        server.process = Some(Process {
            watchdog,
            watchdog_stdin,
            pid,
            paused: false,
        });
    }

    fn running(&mut self, index: usize) -> &mut Process {
        let name = self.servers[index].name.clone();
        self.servers[index]
            .process
            .as_mut()
            .unwrap_or_else(|| panic!("nats-server {name} is not running"))
    }

    /// Ends server `index` with SIGKILL or SIGTERM and reaps it and its watchdog.
    fn end(&mut self, index: usize, signal_name: &str) {
        let name = self.servers[index].name.clone();
        let Some(mut process) = self.servers[index].process.take() else {
            panic!("nats-server {name} is not running");
        };
        signal(process.pid, signal_name);
        if process.paused {
            // A stopped process acts on SIGTERM only once it runs again.
            signal(process.pid, "CONT");
        }
        if poll_until(STOP_DEADLINE, || {
            if is_gone(process.pid) {
                Ok(())
            } else {
                Err(())
            }
        })
        .is_err()
        {
            signal(process.pid, "KILL");
        }
        process.reap();
    }

    /// Server `index` runs, is not paused, and its process is alive.
    fn answers(&self, index: usize) -> bool {
        self.servers[index]
            .process
            .as_ref()
            .is_some_and(|p| !p.paused && !is_gone(p.pid))
    }

    /// Among servers' views of a leader's name, the server that names itself; when several do
    /// (a deposed leader that has not heard of the new term yet), the one most others name.
    fn agreed_leader(&self, views: &[(usize, Option<String>)]) -> Option<usize> {
        let claims: Vec<usize> = views
            .iter()
            .filter(|(i, leader)| leader.as_deref() == Some(self.name(*i)))
            .map(|(i, _)| *i)
            .collect();
        let support = |candidate: usize| {
            views
                .iter()
                .filter(|(_, leader)| leader.as_deref() == Some(self.name(candidate)))
                .count()
        };
        match claims.as_slice() {
            [] => None,
            [only] => Some(*only),
            several => {
                let best = several.iter().map(|&c| support(c)).max()?;
                let mut top = several.iter().filter(|&&c| support(c) == best);
                let first = top.next().copied();
                if top.next().is_some() { None } else { first }
            }
        }
    }

    /// Every answering server's view of stream `stream`'s leader, for a failure message.
    fn leader_views(&self, stream: &str) -> String {
        (0..self.len())
            .map(|i| {
                let view = if !self.answers(i) {
                    "down or paused".to_string()
                } else {
                    match self.stream_detail(i, stream) {
                        Some(detail) => format!(
                            "leader {}",
                            detail.pointer("/cluster/leader").unwrap_or(&Value::Null)
                        ),
                        None => "no replica".to_string(),
                    }
                };
                format!("{}: {view}", self.name(i))
            })
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// Server `index` is ready: `/jsz` shows JetStream enabled and, in a cluster, names the meta
    /// leader of a group holding every server; then `/healthz` says ok, which in 2.9 also means every stream it holds is current.
    /// (`/healthz` is asked last: each refusal is a warning in the server's log.)
    fn readiness(&self, index: usize) -> Result<(), String> {
        let name = self.name(index);
        let jsz = self.monitor_json(index, "/jsz")?;
        if jsz.get("config").is_none_or(Value::is_null) {
            return Err(format!("{name}: JetStream is not enabled: {jsz}"));
        }
        if self.len() > 1 {
            let leader = jsz.pointer("/meta_cluster/leader").and_then(Value::as_str);
            if leader.is_none_or(str::is_empty) {
                return Err(format!("{name}: no JetStream meta leader yet"));
            }
            // Two servers can elect a leader before the third has joined; until it has, a
            // stream with three replicas cannot be placed.
            let size = jsz
                .pointer("/meta_cluster/cluster_size")
                .and_then(Value::as_u64);
            if size != Some(self.len() as u64) {
                return Err(format!(
                    "{name}: the meta group has {size:?} of {} servers",
                    self.len()
                ));
            }
        }
        let health = self.monitor_json(index, "/healthz")?;
        if health.get("status").and_then(Value::as_str) != Some("ok") {
            return Err(format!("{name} /healthz: {health}"));
        }
        Ok(())
    }

    fn await_ready(&self, which: &[usize]) -> Result<(), NotReady> {
        poll_until(READY_DEADLINE, || {
            for &index in which {
                let alive = self.servers[index]
                    .process
                    .as_ref()
                    .is_some_and(|p| !is_gone(p.pid));
                if !alive {
                    return Err(Some(NotReady::Exited(index)));
                }
                if let Err(state) = self.readiness(index) {
                    return Err(Some(NotReady::Timeout(state)));
                }
            }
            Ok(())
        })
        .map_err(|last| last.unwrap_or(NotReady::Timeout("nothing checked".into())))
    }

    fn ready_or_panic(&self, which: &[usize]) {
        match self.await_ready(which) {
            Ok(()) => {}
            Err(NotReady::Exited(index)) => {
                panic!(
                    "nats-server n{index} exited while starting; logs:\n{}",
                    self.logs()
                )
            }
            Err(NotReady::Timeout(state)) => panic!(
                "nats-server {which:?} not ready within {READY_DEADLINE:?} ({state}); logs:\n{}",
                self.logs()
            ),
        }
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for server in &mut self.servers {
            if let Some(mut process) = server.process.take() {
                signal_quietly(process.pid, "KILL");
                process.reap();
            }
        }
        // Then the TempDir goes, with every store, config file and log.
    }
}

impl Process {
    /// Closes the watchdog's pipe (so it kills and reaps the server, if still needed) and
    /// waits for the watchdog to exit.
    fn reap(&mut self) {
        drop(self.watchdog_stdin.take());
        let exited = poll_until(STOP_DEADLINE, || match self.watchdog.try_wait() {
            Ok(Some(_)) => Ok(()),
            _ => Err(()),
        });
        if exited.is_err() {
            signal_quietly(self.pid, "KILL");
            let _ = self.watchdog.kill();
            let _ = self.watchdog.wait();
        }
    }
}

/// The `nats-server` binary: on the PATH, or where Debian's package puts it (`/usr/sbin`, which
/// is not on every user's PATH).
fn nats_server_binary() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/sbin")])
        .map(|dir| dir.join("nats-server"))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!(
                "nats-server is not installed: the cluster tests run a real NATS JetStream cluster; \
                 install it with `apt-get install nats-server` (.ci/run does) or put `nats-server` on the PATH"
            )
        })
}

/// `count` distinct free loopback ports: all held at once while picked, so none repeats.
fn free_ports(count: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..count)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a free loopback port"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("a bound port").port())
        .collect()
}

fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .args([format!("-{name}"), pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{name} {pid} failed");
}

fn signal_quietly(pid: u32, name: &str) {
    let _ = Command::new("kill")
        .args([format!("-{name}"), pid.to_string()])
        .stderr(Stdio::null())
        .status();
}

/// The state letter of each thread of process `pid` (`T` when stopped by a signal).
fn thread_states(pid: u32) -> Vec<char> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("stat")).ok())
        .filter_map(|stat| {
            let (_, rest) = stat.rsplit_once(')')?;
            rest.trim_start().chars().next()
        })
        .collect()
}

/// Whether process `pid` has exited (gone, or a zombie its watchdog has yet to reap).
fn is_gone(pid: u32) -> bool {
    let state = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let (_, rest) = s.rsplit_once(')')?;
            rest.trim_start().chars().next()
        });
    matches!(state, None | Some('Z' | 'X'))
}

/// Publishes `payload` to `subject` on a fresh connection with a reply subject and reads the one
/// reply, within [`REPLY_TIMEOUT`]: the NATS text protocol is small enough to speak directly.
fn nats_request(port: u16, subject: &str, payload: &[u8]) -> Result<Value, String> {
    const INBOX: &str = "_INBOX.herald-test";
    let stream = TcpStream::connect(("127.0.0.1", port))
        .map_err(|e| format!("connect to nats 127.0.0.1:{port}: {e}"))?;
    stream
        .set_read_timeout(Some(REPLY_TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(REPLY_TIMEOUT)))
        .map_err(|e| format!("socket timeouts: {e}"))?;
    let mut writer = stream
        .try_clone()
        .map_err(|e| format!("clone the socket: {e}"))?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader
        .read_line(&mut line)
        .map_err(|e| format!("read INFO from 127.0.0.1:{port}: {e}"))?;
    if !line.starts_with("INFO ") {
        return Err(format!(
            "127.0.0.1:{port} did not greet with INFO: {line:?}"
        ));
    }
    let mut out = Vec::new();
    out.extend_from_slice(
        b"CONNECT {\"verbose\":false,\"pedantic\":false,\"name\":\"herald-tests\"}\r\n",
    );
    out.extend_from_slice(format!("SUB {INBOX} 1\r\n").as_bytes());
    out.extend_from_slice(format!("PUB {subject} {INBOX} {}\r\n", payload.len()).as_bytes());
    out.extend_from_slice(payload);
    out.extend_from_slice(b"\r\n");
    writer
        .write_all(&out)
        .map_err(|e| format!("send to 127.0.0.1:{port}: {e}"))?;
    loop {
        line.clear();
        reader
            .read_line(&mut line)
            .map_err(|e| format!("no reply to {subject} from 127.0.0.1:{port}: {e}"))?;
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["PING"] => writer
                .write_all(b"PONG\r\n")
                .map_err(|e| format!("answer PING: {e}"))?,
            ["MSG", _, _, .., size] => {
                let size: usize = size.parse().map_err(|e| format!("{line:?}: {e}"))?;
                let mut body = vec![0; size + 2];
                reader
                    .read_exact(&mut body)
                    .map_err(|e| format!("read a reply of {size} bytes: {e}"))?;
                body.truncate(size);
                return serde_json::from_slice(&body).map_err(|e| {
                    format!(
                        "reply to {subject} is not JSON ({e}): {}",
                        String::from_utf8_lossy(&body)
                    )
                });
            }
            [] => return Err(format!("127.0.0.1:{port} closed the connection")),
            _ if line.starts_with("-ERR") => {
                return Err(format!("127.0.0.1:{port}: {}", line.trim()));
            }
            _ => {}
        }
    }
}
