//! herald's fan-out load generator, side by side with NATS, and a herald cluster on NATS
//! JetStream beside a single node.
//!
//! Starts each server (or the cluster's NATS servers and herald nodes) as a child, opens many websocket subscribers from a few mio threads,
//! publishes marked events in acknowledged batches, and reports delivered events per second,
//! publish-to-receive latency, connection setup rate and the server's memory and CPU. Run it as
//! `cargo bench --bench loadgen -- --help`; `benches/compare.sh` runs every workload.
//!
//! Modules:
//! - `ws`: the client side of the websocket protocol.
//! - `nats`: the NATS text protocol.
//! - `event`: the benchmark event and the mark (phase, send time) inside it.
//! - `clients`: subscriber threads multiplexing sockets with mio.
//! - `publish`: publisher threads with one acknowledged batch in flight each.
//! - `server`: starting, measuring and stopping the servers.
//! - `stats`: histograms and the comparison table.
//! - `tls`: the certificate both servers serve with `--tls`, and the clients' trust in it.

mod clients;
mod event;
mod nats;
mod publish;
mod server;
mod stats;
mod tls;
mod ws;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use base64::Engine as _;
use clap::{Parser, ValueEnum};

use clients::{Endpoint, Failover, Plan, Protocol, Role, Subscribers};
use publish::{BatchShape, Control, mode};
use server::{Deployment, HeraldOptions, Server};
use stats::Results;

/// How long the controller waits for stragglers after publishing stops.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// No new delivery for this long ends the drain early (events were lost).
const DRAIN_QUIET: Duration = Duration::from_secs(2);
/// How long the subscribers settle before idle memory is read.
const IDLE_SETTLE: Duration = Duration::from_secs(2);
/// How long failover publishes before the kill, and after every client caught up.
const FAILOVER_WARM_UP: Duration = Duration::from_secs(2);
/// How long every client of the killed node may take to catch up on the other.
const FAILOVER_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Workload {
    /// Every subscriber on `*.*.*` (NATS `>`).
    Firehose,
    /// Each subscriber on its own key, plus a few on everything.
    Selective,
    /// Connected, registered, silent subscribers: memory and CPU per connection.
    Idle,
    /// Many clients reconnecting at once and replaying the log (herald only).
    Replay,
    /// Publish throughput alone: a few full-stream subscribers, as fast as they keep up, with
    /// batches of 1 and of `--batch`.
    Publish,
    /// A cluster node with its clients killed: time until every client moved to the other
    /// node, replayed and caught up (herald-cluster only).
    Failover,
    /// Many full-stream subscribers connecting at once, as after a restart: time until all
    /// are registered, and until each has every `connections.create` of the ones after it.
    Storm,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Target {
    /// herald with its defaults: `sync` durability, as many cores as CPUs it may run on.
    Herald,
    /// herald `--durability batched`.
    HeraldBatched,
    /// herald `--durability sync`.
    HeraldSync,
    /// nats-server with a websocket listener.
    Nats,
    /// Two herald nodes on a three-server JetStream cluster (stream R3), all on loopback:
    /// subscribers on node A, publishers on node B.
    HeraldCluster,
}

impl Target {
    fn name(self) -> &'static str {
        match self {
            Target::Herald => "herald",
            Target::HeraldBatched => "herald-batched",
            Target::HeraldSync => "herald-sync",
            Target::Nats => "nats",
            Target::HeraldCluster => "herald-cluster",
        }
    }
}

/// Fan-out load generator for herald and NATS.
#[derive(Debug, Parser)]
#[command(name = "loadgen", args_override_self = true)]
struct Args {
    /// Workloads to run, in order.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "firehose,selective,idle,replay"
    )]
    workloads: Vec<Workload>,
    /// Servers to measure, each in turn with the same workload.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "herald-batched,herald-sync,nats"
    )]
    targets: Vec<Target>,
    /// The herald binary (cargo builds it next to this bench).
    #[arg(long, default_value = env!("CARGO_BIN_EXE_herald"))]
    herald_bin: PathBuf,
    /// The nats-server binary.
    #[arg(long, default_value = "nats-server")]
    nats_bin: PathBuf,
    /// Connect over TLS: herald and NATS's websocket listener serve one certificate generated
    /// for the run, which the clients verify.
    #[arg(long)]
    tls: bool,
    /// herald's `--cores` (the herald-batched, herald-sync and cluster targets; `herald` keeps
    /// its default).
    #[arg(long, default_value_t = 2)]
    cores: usize,
    /// One more argument of `herald serve` (repeatable), e.g. `--herald-arg=--cache-bytes=1GiB`.
    #[arg(long = "herald-arg", value_name = "ARG", allow_hyphen_values = true)]
    herald_args: Vec<String>,
    /// CPUs the servers run on, e.g. `0` or `0-1,4`; the load generator then runs on the
    /// others. Every server, herald or NATS, gets the same.
    #[arg(long, value_name = "LIST", value_parser = parse_cpu_list)]
    server_cpus: Option<CpuList>,
    /// The name of this run's rows in the table, e.g. `selective 1/POST`; by default the
    /// workload's.
    #[arg(long, value_name = "NAME")]
    row: Option<String>,
    /// Also append every number to FILE, for `--table-from`.
    #[arg(long, value_name = "FILE")]
    save: Option<PathBuf>,
    /// Run nothing: print the one table of the numbers saved in FILE (by several runs).
    #[arg(long, value_name = "FILE")]
    table_from: Option<PathBuf>,
    /// Subscriber threads, each multiplexing its share of the sockets.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Publisher threads, each with one batch in flight: enough that the server, not the
    /// publish round trip, limits the max phase.
    #[arg(long, default_value_t = 16)]
    publishers: usize,
    /// Events per publish batch.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Events per publish batch in the paced (latency) phase: small, so a latency is the
    /// fan-out of a few events rather than the drain of a large burst.
    #[arg(long, default_value_t = 4)]
    paced_batch: usize,
    /// Bytes of each published event's JSON.
    #[arg(long, default_value_t = 600)]
    event_bytes: usize,
    /// Length of each measured phase.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5s")]
    duration: Duration,
    /// Events published but not yet received by the slowest full-stream subscriber, at most,
    /// in firehose's as-fast-as-possible phase. Every subscriber may hold this many events in
    /// the server's queues, so it bounds the server's memory (1,000 × 256 × 700 B ≈ 180 MB).
    #[arg(long, default_value_t = 256)]
    firehose_window: u64,
    /// The same for selective, where only the few full-stream subscribers can fall behind.
    #[arg(long, default_value_t = 4096)]
    selective_window: u64,
    /// Events per second in the paced (latency) phase of firehose; 0 skips the phase.
    #[arg(long, default_value_t = 200)]
    firehose_rate: u64,
    /// Events per second in the paced (latency) phase of selective; 0 skips the phase.
    #[arg(long, default_value_t = 2000)]
    selective_rate: u64,
    /// Subscribers in firehose.
    #[arg(long, default_value_t = 1000)]
    firehose_conns: usize,
    /// Keyed subscribers (and keys) in selective.
    #[arg(long, default_value_t = 10_000)]
    selective_keys: usize,
    /// Full-stream subscribers in selective.
    #[arg(long, default_value_t = 10)]
    selective_watchers: usize,
    /// Connections in idle.
    #[arg(long, default_value_t = 20_000)]
    idle_conns: usize,
    /// How long idle CPU is measured.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5s")]
    idle_time: Duration,
    /// Clients reconnecting at once in replay.
    #[arg(long, default_value_t = 1000)]
    replay_clients: usize,
    /// Events in the log that each replaying client reads.
    #[arg(long, default_value_t = 10_000)]
    replay_events: u64,
    /// Runs of every workload against every target, in alternating order; the table keeps
    /// each target's best (highest rate, lowest latency and memory, largest loss).
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// Full-stream subscribers in publish.
    #[arg(long, default_value_t = 4)]
    publish_conns: usize,
    /// Events published but not yet received by the slowest subscriber, at most, in publish:
    /// room for every publisher's batch in flight (16 × 64 = 1,024), so publishing limits the
    /// rate; and, like selective's, under what herald queues for one connection before it
    /// closes it as a slow consumer (8,192 was not).
    #[arg(long, default_value_t = 4096)]
    publish_window: u64,
    /// Clients on the node that failover kills.
    #[arg(long, default_value_t = 1000)]
    failover_clients: usize,
    /// Events per second published on the surviving node throughout failover.
    #[arg(long, default_value_t = 200)]
    failover_rate: u64,
    /// Connections being set up at once.
    #[arg(long, default_value_t = 1000)]
    connect_concurrency: usize,
    /// Subscribers on everything connecting at once in storm (all of them: no
    /// `--connect-concurrency` limit; under both servers' listen backlogs of 4,096).
    #[arg(long, default_value_t = 3000)]
    storm_conns: usize,
    /// herald's admin password (the tool starts herald with it).
    #[arg(long, default_value = "loadgen-bench")]
    password: String,
    /// A quick run: 50 connections, 2 s phases, small replay.
    #[arg(long)]
    smoke: bool,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

impl Args {
    fn shrink_for_smoke(&mut self) {
        self.firehose_conns = self.firehose_conns.min(50);
        self.selective_keys = self.selective_keys.min(50);
        self.selective_watchers = self.selective_watchers.min(2);
        self.idle_conns = self.idle_conns.min(50);
        self.replay_clients = self.replay_clients.min(20);
        self.replay_events = self.replay_events.min(1024);
        self.publish_conns = self.publish_conns.min(2);
        self.failover_clients = self.failover_clients.min(20);
        self.storm_conns = self.storm_conns.min(50);
        self.duration = self.duration.min(Duration::from_secs(2));
        self.idle_time = self.idle_time.min(Duration::from_secs(1));
    }
}

fn main() -> ExitCode {
    let mut args = Args::parse();
    if let Some(path) = &args.table_from {
        return match Results::load(path) {
            Ok(results) => {
                println!("{}", results.table());
                ExitCode::SUCCESS
            }
            Err(error) => {
                println!("cannot read {}: {error}", path.display());
                ExitCode::FAILURE
            }
        };
    }
    if args.smoke {
        args.shrink_for_smoke();
    }
    if let Some(CpuList(cpus)) = &args.server_cpus {
        match pin(cpus) {
            Ok(line) => println!("{line}"),
            Err(error) => {
                println!("cannot pin: {error}");
                return ExitCode::FAILURE;
            }
        }
    }
    let certificate = if args.tls {
        match tls::Certificate::generate() {
            Ok(certificate) => Some(certificate),
            Err(error) => {
                println!("{error}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        None
    };
    let command: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    println!("loadgen {}", command.join(" "));
    println!(
        "event {} B, batch {} (paced {}), {} publishers, {} subscriber threads, windows {}/{}, phases {:?}, herald --cores {} (not for the herald target){}",
        args.event_bytes,
        args.batch,
        args.paced_batch,
        args.publishers,
        args.threads,
        args.firehose_window,
        args.selective_window,
        args.duration,
        args.cores,
        if args.tls {
            ", TLS (one generated certificate for both servers)"
        } else {
            ""
        }
    );
    println!("load average at start: {}", load_average());
    let mut results = Results::default();
    let mut failures = 0;
    let rounds = args.rounds.max(1);
    for &workload in &args.workloads {
        for round in 0..rounds {
            // Alternate the order, so a slow spell on the machine does not always hit the
            // same server.
            let mut targets = args.targets.clone();
            if round % 2 == 1 {
                targets.reverse();
            }
            for target in targets {
                if rounds > 1 {
                    println!(
                        "\n## {workload:?} / {} (round {} of {rounds})",
                        target.name(),
                        round + 1
                    );
                } else {
                    println!("\n## {workload:?} / {}", target.name());
                }
                let started = Instant::now();
                if let Err(error) = run(&args, certificate.as_ref(), workload, target, &mut results)
                {
                    println!("  FAILED: {error}");
                    failures += 1;
                }
                println!(
                    "  ({:.1} s, load average {})",
                    started.elapsed().as_secs_f64(),
                    load_average()
                );
            }
        }
    }
    println!("\n{}", results.table());
    if let Some(path) = &args.save
        && let Err(error) = results.save(path)
    {
        println!("cannot save the numbers to {}: {error}", path.display());
        failures += 1;
    }
    if failures > 0 {
        println!("{failures} run(s) failed");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// One workload against one server (or cluster), from start to stop.
fn run(
    args: &Args,
    certificate: Option<&tls::Certificate>,
    workload: Workload,
    target: Target,
    results: &mut Results,
) -> Result<(), String> {
    if workload == Workload::Failover && target != Target::HeraldCluster {
        println!("  (failover needs a cluster: skipped)");
        return Ok(());
    }
    let tls_files = certificate.map(tls::Certificate::files);
    let client_tls = certificate
        .map(tls::Certificate::client_config)
        .transpose()?;
    let herald = HeraldOptions {
        bin: &args.herald_bin,
        durability: match target {
            Target::Herald => None,
            Target::HeraldBatched => Some("batched"),
            _ => Some("sync"),
        },
        tls: tls_files.as_ref(),
        cores: (target != Target::Herald).then_some(args.cores),
        extra: &args.herald_args,
        password: &args.password,
        cluster: None,
    };
    let server = match target {
        Target::Herald | Target::HeraldBatched | Target::HeraldSync => {
            Deployment::single(Server::herald(&herald)?)
        }
        // Replay on NATS is JetStream's: a file-backed stream and one consumer per client.
        Target::Nats => Deployment::single(Server::nats(
            &args.nats_bin,
            workload == Workload::Replay,
            tls_files.as_ref(),
        )?),
        Target::HeraldCluster => Deployment::cluster(&args.nats_bin, &herald)?,
    };
    let endpoint_at = |addr: SocketAddr| match target {
        Target::Nats => Endpoint {
            addr,
            protocol: Protocol::Nats,
            tls: client_tls.clone(),
            authorization: String::new(),
            failover: None,
        },
        _ => Endpoint {
            addr,
            protocol: Protocol::Herald,
            tls: client_tls.clone(),
            authorization: format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD
                    .encode(format!("rocketskates:{}", args.password))
            ),
            failover: None,
        },
    };
    let mut endpoint = endpoint_at(server.main.addr);
    let publish_endpoint = Arc::new(endpoint_at(server.publish_addr()));
    if endpoint.protocol == Protocol::Herald {
        for at in [&endpoint, &*publish_endpoint] {
            let status = publish::probe(at).map_err(|e| format!("herald does not answer: {e}"))?;
            if !status.contains(" 200") {
                server.stop();
                return Err(format!("herald refused the credentials: {status}"));
            }
        }
    }
    if workload == Workload::Failover {
        let info = publish::info(&publish_endpoint)
            .map_err(|e| format!("reading the surviving node's info: {e}"))?;
        endpoint.failover = Some(Arc::new(Failover {
            to: server.publish_addr(),
            epoch: info
                .get("Epoch")
                .and_then(serde_json::Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            killed_ns: AtomicU64::new(0),
            target_seq: AtomicU64::new(u64::MAX),
        }));
    }
    let mut server = server;
    let mut run = Run {
        args,
        target,
        workload,
        server: &mut server,
        endpoint: Arc::new(endpoint),
        publish_endpoint,
        results,
    };
    let outcome = match workload {
        Workload::Firehose | Workload::Selective => run.fan_out(),
        Workload::Idle => run.idle(),
        Workload::Replay => run.replay(),
        Workload::Publish => run.publish(),
        Workload::Failover => run.failover(),
        Workload::Storm => run.storm(),
    };
    server.stop();
    outcome
}

struct Run<'a> {
    args: &'a Args,
    target: Target,
    workload: Workload,
    server: &'a mut Deployment,
    /// Where the subscribers connect.
    endpoint: Arc<Endpoint>,
    /// Where the publishers connect: the same server, or the cluster's other node.
    publish_endpoint: Arc<Endpoint>,
    results: &'a mut Results,
}

/// What one measured phase delivered.
struct Phase {
    published: u64,
    expected: u64,
    delivered: u64,
    publish_secs: f64,
    deliver_secs: f64,
    /// The server's (node A's) CPU time from the phase's start to its last delivery.
    server_cpu_secs: f64,
    /// The same for the cluster's node B and its NATS servers together.
    publish_node_cpu_secs: f64,
    nats_cpu_secs: f64,
}

impl Run<'_> {
    fn put(&mut self, metric: &str, value: f64) {
        let workload = match &self.args.row {
            Some(row) => row.clone(),
            None => format!("{:?}", self.workload).to_lowercase(),
        };
        self.results
            .put(&workload, metric, self.target.name(), value);
    }

    /// The subscription that sees everything.
    fn everything(&self) -> String {
        match self.endpoint.protocol {
            Protocol::Herald => "*.*.*".into(),
            Protocol::Nats => ">".into(),
        }
    }

    /// Opens every planned subscriber and waits until each is acknowledged or failed.
    fn connect(&mut self, plans: Vec<Plan>) -> Result<Subscribers, String> {
        let count = plans.len() as u64;
        let started = Instant::now();
        let concurrency = self.args.connect_concurrency;
        let subscribers = Subscribers::start(&self.endpoint, plans, self.args.threads, concurrency);
        let deadline = started + Duration::from_secs(60) + Duration::from_millis(count);
        let subscribers = subscribers.await_ready(count, deadline, Duration::from_millis(2))?;
        let secs = started.elapsed().as_secs_f64();
        println!(
            "  setup: {count} subscribers ready in {secs:.2} s ({:.0} connections/s)",
            count as f64 / secs
        );
        self.put("setup conn/s", count as f64 / secs);
        Ok(subscribers)
    }

    fn fan_out(&mut self) -> Result<(), String> {
        let args = self.args;
        let (keys, mut plans, fanout, rate, window) = match self.workload {
            Workload::Firehose => {
                let keys = random_keys(args.firehose_conns.max(1));
                let plans = (0..args.firehose_conns)
                    .map(|_| Plan {
                        subscription: self.everything(),
                        role: Role::Stream,
                    })
                    .collect::<Vec<_>>();
                (
                    keys,
                    plans,
                    args.firehose_conns as u64,
                    args.firehose_rate,
                    args.firehose_window,
                )
            }
            _ => {
                let keys = random_keys(args.selective_keys.max(1));
                let mut plans: Vec<Plan> = (0..args.selective_watchers)
                    .map(|_| Plan {
                        subscription: self.everything(),
                        role: Role::Stream,
                    })
                    .collect();
                plans.extend(keys.iter().map(|key| Plan {
                    subscription: format!("{}.*.{}", event::TYPE, String::from_utf8_lossy(key)),
                    role: Role::Keyed,
                }));
                (
                    keys,
                    plans,
                    1 + args.selective_watchers as u64,
                    args.selective_rate,
                    args.selective_window,
                )
            }
        };
        // Watchers first, so the window has someone to follow from the start.
        plans.sort_by_key(|p| p.role != Role::Stream);
        let connections = plans.len() as u64;
        let rss_base = self.server.rss_kib();
        let subscribers = self.connect(plans)?;
        let rss_connected = self.server.rss_kib();
        let per_conn = (rss_connected.saturating_sub(rss_base)) as f64 / connections as f64;
        println!(
            "  memory: {} KiB before, {} KiB connected, {per_conn:.1} KiB per connection",
            rss_base, rss_connected
        );
        self.put("RSS/conn KiB", per_conn);

        let shape = BatchShape {
            batch: args.batch.max(1),
            paced_batch: args.paced_batch.max(1),
            template: event::EventTemplate::new(args.event_bytes),
            keys: Arc::new(keys),
        };
        let control = Control::new(args.publishers, window, subscribers.progress.clone());
        let publishers = publish::spawn(&self.publish_endpoint, &shape, &control);
        let max = self.phase(&subscribers, &control, mode::MAX, fanout);
        let rss_loaded = self.server.rss_kib();
        let nats_rss_loaded = self.server.nats_rss_kib();
        let paced = if rate > 0 {
            control.rate.store(rate, Ordering::Release);
            Some(self.phase(&subscribers, &control, mode::PACED, fanout))
        } else {
            None
        };
        control.switch(mode::EXIT, DRAIN_TIMEOUT);
        let mut acks = [stats::histogram(), stats::histogram(), stats::histogram()];
        for handle in publishers {
            if let Ok(report) = handle.join() {
                for (into, from) in acks.iter_mut().zip(&report.ack) {
                    stats::merge(into, from);
                }
            }
        }
        let dropped = subscribers.sum(|p| &p.dropped);
        let report = subscribers.stop();
        // The numbers are still recorded, but a run that lost, dropped or failed anything
        // fails: nothing may be silently dropped (`docs/protocol.md` §3.4), so that is a finding.
        let mut problems = Vec::new();
        if let Ok(Some(error)) = control.first_error.lock().map(|e| e.clone()) {
            problems.push(format!(
                "{} events failed to publish; first: {error}",
                control.failed.load(Ordering::Acquire)
            ));
        }
        if dropped > 0 || !report.errors.is_empty() {
            problems.push(format!(
                "{dropped} subscribers dropped; errors: {:?}",
                report.errors
            ));
        }
        println!("  memory under load: {rss_loaded} KiB");
        self.put("RSS MiB (max phase)", rss_loaded as f64 / 1024.0);
        if self.server.is_cluster() {
            println!("  NATS servers' memory under load: {nats_rss_loaded} KiB together");
            self.put(
                "NATS RSS MiB (3 servers, max phase)",
                nats_rss_loaded as f64 / 1024.0,
            );
        }

        for (label, phase, result) in [("max", mode::MAX, Some(max)), ("paced", mode::PACED, paced)]
        {
            let Some(result) = result else { continue };
            let latency = &report.latency[phase];
            let delivered_rate = result.delivered as f64 / result.deliver_secs;
            println!(
                "  {label}: published {} ({:.0}/s), delivered {} of {} ({:.0}/s), latency p50 {:.2} ms p99 {:.2} ms p99.9 {:.2} ms, batch ack p99 {:.2} ms",
                result.published,
                result.published as f64 / result.publish_secs,
                result.delivered,
                result.expected,
                delivered_rate,
                stats::quantile_ms(latency, 0.5),
                stats::quantile_ms(latency, 0.99),
                stats::quantile_ms(latency, 0.999),
                stats::quantile_ms(&acks[phase], 0.99),
            );
            if label == "max" {
                self.put("delivered ev/s (max)", delivered_rate);
                // Normalized by what the server got of the shared cores: per CPU-second.
                self.put(
                    "delivered ev per server CPU-s (max)",
                    result.delivered as f64 / result.server_cpu_secs.max(0.01),
                );
                self.put(
                    "published ev/s (max)",
                    result.published as f64 / result.publish_secs,
                );
                self.put("p50 ms (max)", stats::quantile_ms(latency, 0.5));
                self.put("p99 ms (max)", stats::quantile_ms(latency, 0.99));
                self.put_cpu(&result, "(max)");
            } else {
                self.put(
                    &format!("p50 ms ({rate} ev/s)"),
                    stats::quantile_ms(latency, 0.5),
                );
                self.put(
                    &format!("p99 ms ({rate} ev/s)"),
                    stats::quantile_ms(latency, 0.99),
                );
                self.put(
                    &format!("p99.9 ms ({rate} ev/s)"),
                    stats::quantile_ms(latency, 0.999),
                );
            }
            self.put(
                &format!("lost events ({label})"),
                result.expected.saturating_sub(result.delivered) as f64,
            );
            if result.delivered != result.expected {
                problems.push(format!(
                    "{label}: {} deliveries expected, {} received",
                    result.expected, result.delivered
                ));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }

    /// Publishes in `phase` for the configured duration, then waits for the deliveries.
    fn phase(
        &self,
        subscribers: &Subscribers,
        control: &Control,
        phase: usize,
        fanout: u64,
    ) -> Phase {
        let acked_before = control.acked[phase].load(Ordering::Acquire);
        let delivered_before = subscribers.sum(|p| &p.delivered[phase]);
        let started = event::now_ns();
        let cpu_before = (self.server.cpu_seconds(), server::cpu_seconds("self"));
        let cluster_cpu_before = (
            self.server.publish_node_cpu_seconds(),
            self.server.nats_cpu_seconds(),
        );
        control.mode.store(phase, Ordering::Release);
        thread::sleep(self.args.duration);
        control.switch(mode::PAUSE, DRAIN_TIMEOUT);
        let publish_secs = (event::now_ns() - started) as f64 / 1e9;
        let cluster = if self.server.is_cluster() {
            format!(
                ", node B {:.2} cores, NATS (3 servers) {:.2} cores",
                (self.server.publish_node_cpu_seconds() - cluster_cpu_before.0) / publish_secs,
                (self.server.nats_cpu_seconds() - cluster_cpu_before.1) / publish_secs,
            )
        } else {
            String::new()
        };
        println!(
            "  CPU in the {} phase: server {:.2} cores{cluster}, load generator {:.2} cores",
            if phase == mode::MAX { "max" } else { "paced" },
            (self.server.cpu_seconds() - cpu_before.0) / publish_secs,
            (server::cpu_seconds("self") - cpu_before.1) / publish_secs,
        );
        let deadline = Instant::now() + DRAIN_TIMEOUT;
        let published = control.acked[phase].load(Ordering::Acquire) - acked_before;
        let expected = published * fanout;
        let mut last = (0, Instant::now());
        let delivered = loop {
            let delivered = subscribers.sum(|p| &p.delivered[phase]) - delivered_before;
            if delivered >= expected || Instant::now() > deadline {
                break delivered;
            }
            if delivered != last.0 {
                last = (delivered, Instant::now());
            } else if last.1.elapsed() > DRAIN_QUIET {
                break delivered;
            }
            thread::sleep(Duration::from_millis(1));
        };
        let last_ns = subscribers.last_ns(phase).max(started + 1);
        Phase {
            published,
            expected,
            delivered,
            publish_secs,
            deliver_secs: (last_ns - started) as f64 / 1e9,
            server_cpu_secs: self.server.cpu_seconds() - cpu_before.0,
            publish_node_cpu_secs: self.server.publish_node_cpu_seconds() - cluster_cpu_before.0,
            nats_cpu_secs: self.server.nats_cpu_seconds() - cluster_cpu_before.1,
        }
    }

    fn idle(&mut self) -> Result<(), String> {
        let args = self.args;
        let keys = random_keys(args.idle_conns.max(1));
        let plans: Vec<Plan> = keys
            .iter()
            .map(|key| Plan {
                subscription: format!("{}.*.{}", event::TYPE, String::from_utf8_lossy(key)),
                role: Role::Keyed,
            })
            .collect();
        let count = plans.len() as f64;
        let rss_base = self.server.rss_kib();
        let subscribers = self.connect(plans)?;
        thread::sleep(IDLE_SETTLE);
        let rss = self.server.rss_kib();
        let cpu_before = self.server.cpu_seconds();
        let started = Instant::now();
        thread::sleep(args.idle_time);
        let cpu =
            (self.server.cpu_seconds() - cpu_before) / started.elapsed().as_secs_f64() * 100.0;
        let dropped = subscribers.sum(|p| &p.dropped);
        let report = subscribers.stop();
        let per_conn = rss.saturating_sub(rss_base) as f64 * 1024.0 / count;
        println!(
            "  memory: {rss_base} KiB before, {rss} KiB with {count} idle connections: {per_conn:.0} B per connection; \
             CPU while idle {cpu:.2}% of one core"
        );
        self.put("RSS/conn bytes", per_conn);
        self.put("idle CPU %", cpu);
        if dropped > 0 {
            return Err(format!(
                "{dropped} idle connections dropped: {:?}",
                report.errors
            ));
        }
        Ok(())
    }

    /// Waits until JetStream has stored `events` messages (publishing with plain `PUB`, as the
    /// fan-out workloads do, is acknowledged before the stream has stored it).
    fn await_stream(&self, events: u64) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let info = publish::nats_request(&self.endpoint, &nats::stream_info(), b"")
                .map_err(|e| format!("reading the JetStream stream's state: {e}"))?;
            let text = String::from_utf8_lossy(&info);
            let messages = text
                .split("\"messages\":")
                .nth(1)
                .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(0);
            if messages >= events {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "JetStream holds {messages} of {events} events: {text}"
                ));
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until node A's copy of the stream holds `seq` (its `/api/v3/info` `LastSeq`).
    fn await_copy(&self, seq: u64) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let info =
                publish::info(&self.endpoint).map_err(|e| format!("reading node A's info: {e}"))?;
            let last = info
                .get("LastSeq")
                .and_then(serde_json::Value::as_u64)
                .unwrap_or(0);
            if last >= seq {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "node A's copy holds {last} of {seq} events: {info}"
                ));
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Records the CPU the servers used in `phase`, in cores (CPU seconds per second).
    fn put_cpu(&mut self, phase: &Phase, label: &str) {
        let secs = phase.deliver_secs.max(0.001);
        self.put(
            &format!("server cores {label}"),
            phase.server_cpu_secs / secs,
        );
        if self.server.is_cluster() {
            self.put(
                &format!("node B cores {label}"),
                phase.publish_node_cpu_secs / secs,
            );
            self.put(
                &format!("NATS cores (3 servers) {label}"),
                phase.nats_cpu_secs / secs,
            );
        }
    }

    /// Publish throughput alone: a few full-stream subscribers (so every event is also
    /// delivered, and in a cluster crosses to node A), batches of 1, then of `--batch`.
    fn publish(&mut self) -> Result<(), String> {
        let args = self.args;
        let conns = args.publish_conns.max(1);
        let plans: Vec<Plan> = (0..conns)
            .map(|_| Plan {
                subscription: self.everything(),
                role: Role::Stream,
            })
            .collect();
        let subscribers = self.connect(plans)?;
        let keys = Arc::new(random_keys(1000));
        let mut problems = Vec::new();
        let mut sent = 0;
        let mut batches = vec![1];
        if args.batch > 1 {
            batches.push(args.batch);
        }
        for batch in batches {
            let shape = BatchShape {
                batch,
                paced_batch: 1,
                template: event::EventTemplate::new(args.event_bytes),
                keys: keys.clone(),
            };
            let control = Control::new(
                args.publishers,
                args.publish_window,
                subscribers.progress.clone(),
            );
            // The window compares events sent with events received over the whole run.
            control.sent.store(sent, Ordering::Release);
            let publishers = publish::spawn(&self.publish_endpoint, &shape, &control);
            let result = self.phase(&subscribers, &control, mode::MAX, conns as u64);
            control.switch(mode::EXIT, DRAIN_TIMEOUT);
            let mut acks = stats::histogram();
            for handle in publishers {
                if let Ok(report) = handle.join() {
                    stats::merge(&mut acks, &report.ack[mode::MAX]);
                }
            }
            sent = control.sent.load(Ordering::Acquire);
            if let Ok(Some(error)) = control.first_error.lock().map(|e| e.clone()) {
                problems.push(format!(
                    "batch {batch}: {} events failed to publish; first: {error}",
                    control.failed.load(Ordering::Acquire)
                ));
            }
            let rate = result.published as f64 / result.publish_secs;
            println!(
                "  batch {batch}: published {} ({rate:.0}/s), delivered {} of {}, batch ack p50 {:.2} ms p99 {:.2} ms",
                result.published,
                result.delivered,
                result.expected,
                stats::quantile_ms(&acks, 0.5),
                stats::quantile_ms(&acks, 0.99),
            );
            let label = format!("(batch {batch})");
            self.put(&format!("published ev/s {label}"), rate);
            self.put(
                &format!("ack p50 ms {label}"),
                stats::quantile_ms(&acks, 0.5),
            );
            self.put(
                &format!("ack p99 ms {label}"),
                stats::quantile_ms(&acks, 0.99),
            );
            self.put_cpu(&result, &label);
            self.put(
                &format!("lost events {label}"),
                result.expected.saturating_sub(result.delivered) as f64,
            );
            if result.delivered != result.expected {
                problems.push(format!(
                    "batch {batch}: {} deliveries expected, {} received",
                    result.expected, result.delivered
                ));
            }
        }
        let dropped = subscribers.sum(|p| &p.dropped);
        let report = subscribers.stop();
        if dropped > 0 || !report.errors.is_empty() {
            problems.push(format!(
                "{dropped} subscribers dropped; errors: {:?}",
                report.errors
            ));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }

    /// Node A, with every client, is killed (SIGKILL) while node B publishes at a steady rate;
    /// each client moves to node B, replays from the last `Seq` it received and counts as caught
    /// up once it has the last event acknowledged before the kill. Then every client must hold
    /// every acknowledged event, once and in order.
    fn failover(&mut self) -> Result<(), String> {
        let args = self.args;
        let Some(failover) = self.endpoint.failover.clone() else {
            return Err("failover has no surviving node".into());
        };
        let clients = args.failover_clients.max(1);
        let plans: Vec<Plan> = (0..clients)
            .map(|_| Plan {
                subscription: format!("{}.*.*", event::TYPE),
                role: Role::Failover,
            })
            .collect();
        let subscribers = self.connect(plans)?;
        let batch = args.paced_batch.max(1);
        let shape = BatchShape {
            batch,
            paced_batch: batch,
            template: event::EventTemplate::new(args.event_bytes),
            keys: Arc::new(random_keys(1000)),
        };
        let control = Control::new(args.publishers, 0, Vec::new());
        control
            .rate
            .store(args.failover_rate.max(1), Ordering::Release);
        let publishers = publish::spawn(&self.publish_endpoint, &shape, &control);
        control.mode.store(mode::PACED, Ordering::Release);
        thread::sleep(FAILOVER_WARM_UP);
        if subscribers.sum(|p| &p.delivered[mode::PACED]) == 0 {
            control.switch(mode::EXIT, DRAIN_TIMEOUT);
            return Err("node A delivered nothing before the kill".into());
        }
        let target = control.last_seq.load(Ordering::Acquire);
        failover.target_seq.store(target, Ordering::Release);
        failover.killed_ns.store(event::now_ns(), Ordering::Release);
        let killed = Instant::now();
        self.server.main.kill();
        let deadline = killed + FAILOVER_TIMEOUT;
        loop {
            let caught_up = subscribers.sum(|p| &p.caught_up);
            let broken = subscribers.broken();
            if caught_up + broken >= clients as u64 || Instant::now() > deadline {
                break;
            }
            thread::sleep(Duration::from_millis(2));
        }
        let moved = subscribers.sum(|p| &p.moved);
        let caught_up = subscribers.sum(|p| &p.caught_up);
        // Live traffic on node B for a moment more, then every acknowledged event must arrive.
        thread::sleep(FAILOVER_WARM_UP);
        control.switch(mode::EXIT, DRAIN_TIMEOUT);
        for handle in publishers {
            let _ = handle.join();
        }
        let acked = control.acked[mode::PACED].load(Ordering::Acquire);
        let expected = acked * clients as u64;
        let drain = Instant::now() + DRAIN_TIMEOUT;
        let mut last = (0, Instant::now());
        let delivered = loop {
            let delivered = subscribers.sum(|p| &p.delivered[mode::PACED]);
            if delivered >= expected || Instant::now() > drain {
                break delivered;
            }
            if delivered != last.0 {
                last = (delivered, Instant::now());
            } else if last.1.elapsed() > DRAIN_QUIET {
                break delivered;
            }
            thread::sleep(Duration::from_millis(1));
        };
        let broken = subscribers.broken();
        let report = subscribers.stop();
        let last_ms = if report.replay.is_empty() {
            f64::NAN
        } else {
            report.replay.max() as f64 / 1e6
        };
        println!(
            "  failover: {moved} of {clients} clients moved, {caught_up} caught up to Seq {target}; \
             last caught up {last_ms:.0} ms after the kill, per client p50 {:.0} ms p99 {:.0} ms; \
             {acked} events acknowledged, {delivered} of {expected} deliveries",
            stats::quantile_ms(&report.replay, 0.5),
            stats::quantile_ms(&report.replay, 0.99),
        );
        self.put("clients moved", moved as f64);
        self.put("kill to last caught up ms", last_ms);
        self.put("catch-up p50 ms", stats::quantile_ms(&report.replay, 0.5));
        self.put("catch-up p99 ms", stats::quantile_ms(&report.replay, 0.99));
        self.put("lost events", expected.saturating_sub(delivered) as f64);
        let mut problems = Vec::new();
        if let Ok(Some(error)) = control.first_error.lock().map(|e| e.clone()) {
            problems.push(format!(
                "{} events failed to publish; first: {error}",
                control.failed.load(Ordering::Acquire)
            ));
        }
        if caught_up < clients as u64
            || broken > 0
            || delivered != expected
            || report.out_of_order > 0
            || report.not_recovered > 0
            || !report.errors.is_empty()
        {
            problems.push(format!(
                "{caught_up} of {clients} clients caught up, {broken} failed, {delivered} of \
                 {expected} deliveries, {} events out of order, {} replays not recovered; \
                 errors {:?}",
                report.out_of_order, report.not_recovered, report.errors
            ));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }

    /// Opens every storm subscriber at once and waits until all are registered, then until
    /// the `connections.create` events the storm emitted stop arriving.
    fn storm(&mut self) -> Result<(), String> {
        let args = self.args;
        let count = args.storm_conns.max(1);
        let plans = vec![
            Plan {
                subscription: self.everything(),
                role: Role::Storm,
            };
            count
        ];
        let rss_base = self.server.rss_kib();
        let cpu_before = self.server.cpu_seconds();
        let started_ns = event::now_ns();
        // No limit on handshakes in flight: the storm is every client at once.
        let subscribers = Subscribers::start(&self.endpoint, plans, args.threads, count);
        let deadline = Instant::now() + Duration::from_secs(120);
        let subscribers =
            subscribers.await_ready(count as u64, deadline, Duration::from_millis(1))?;
        let registered_ns = event::now_ns();
        let registered_secs = (registered_ns - started_ns) as f64 / 1e9;
        // herald's storm goes on until every earlier subscriber has the later ones' creates;
        // NATS emits nothing, so it is over once all are registered.
        let mut last = (subscribers.sum(|p| &p.created), Instant::now());
        while self.endpoint.protocol == Protocol::Herald
            && last.1.elapsed() < DRAIN_QUIET
            && Instant::now() < deadline
        {
            thread::sleep(Duration::from_millis(10));
            let created = subscribers.sum(|p| &p.created);
            if created != last.0 {
                last = (created, Instant::now());
            }
        }
        let created = subscribers.sum(|p| &p.created);
        let delivered_ns = subscribers
            .progress
            .iter()
            .map(|p| p.created_last_ns.load(Ordering::Acquire))
            .max()
            .unwrap_or(0)
            .max(registered_ns);
        let delivered_secs = (delivered_ns - started_ns) as f64 / 1e9;
        let cpu = self.server.cpu_seconds() - cpu_before;
        let rss = self.server.rss_kib();
        let dropped = subscribers.sum(|p| &p.dropped);
        let report = subscribers.stop();
        let rate = created as f64 / delivered_secs;
        println!(
            "  storm: {count} subscribers registered in {registered_secs:.2} s; their {created} \
             connections.create deliveries done at {delivered_secs:.2} s ({rate:.0}/s); \
             server CPU {cpu:.2} s; RSS {rss_base} KiB before, {rss} KiB after"
        );
        self.put("all registered ms", registered_secs * 1e3);
        self.put("all delivered ms", delivered_secs * 1e3);
        self.put("deliveries", created as f64);
        self.put("deliveries/s", rate);
        self.put("server CPU ms", cpu * 1e3);
        self.put("RSS MiB", rss as f64 / 1024.0);
        // Each subscriber gets at most every create once: its own and earlier ones too when
        // they were delivered after it registered.
        let most = (count * (count + 1)) as u64;
        if report.out_of_order > 0 || dropped > 0 || created > most {
            return Err(format!(
                "{} connections.create out of order or twice, {dropped} subscribers dropped, \
                 {created} deliveries (at most {most}): {:?}",
                report.out_of_order, report.errors
            ));
        }
        Ok(())
    }

    fn replay(&mut self) -> Result<(), String> {
        let args = self.args;
        // The largest batch up to --batch that divides the event count, so the log holds
        // exactly the events asked for.
        let events = args.replay_events.max(1);
        let batch = (1..=args.batch.max(1) as u64)
            .rev()
            .find(|b| events.is_multiple_of(*b))
            .unwrap_or(1);
        let shape = BatchShape {
            batch: batch as usize,
            paced_batch: 1,
            template: event::EventTemplate::new(args.event_bytes),
            keys: Arc::new(random_keys(1000)),
        };
        if self.endpoint.protocol == Protocol::Nats {
            let (subject, body) = nats::stream_create();
            let answer = publish::nats_request(&self.endpoint, &subject, &body)
                .map_err(|e| format!("creating the JetStream stream: {e}"))?;
            if memchr::memmem::find(&answer, b"\"error\"").is_some() {
                return Err(format!(
                    "creating the JetStream stream: {}",
                    String::from_utf8_lossy(&answer)
                ));
            }
        }
        let control = Control::new(args.publishers, 0, Vec::new());
        control.limit.store(events, Ordering::Release);
        // In a cluster the events go in on node B and are replayed from node A's copy.
        let publishers = publish::spawn(&self.publish_endpoint, &shape, &control);
        let started = Instant::now();
        control.mode.store(mode::PREFILL, Ordering::Release);
        while control.settled() < events && started.elapsed() < Duration::from_secs(300) {
            thread::sleep(Duration::from_millis(5));
        }
        control.mode.store(mode::EXIT, Ordering::Release);
        for handle in publishers {
            let _ = handle.join();
        }
        let stored = control.acked[mode::PREFILL].load(Ordering::Acquire);
        if stored < events {
            let error = control
                .first_error
                .lock()
                .map(|e| e.clone())
                .unwrap_or_default();
            return Err(format!(
                "only {stored} of {events} events were stored: {error:?}"
            ));
        }
        println!(
            "  log: {stored} events stored in {:.2} s",
            started.elapsed().as_secs_f64()
        );
        // Let `batched` durability flush, so every event is readable by a replay.
        thread::sleep(Duration::from_millis(200));
        if self.endpoint.protocol == Protocol::Nats {
            self.await_stream(events)?;
        }
        if self.server.is_cluster() {
            self.await_copy(control.last_seq.load(Ordering::Acquire))?;
        }

        let clients = args.replay_clients;
        let plans: Vec<Plan> = (0..clients)
            .map(|i| Plan {
                subscription: match self.endpoint.protocol {
                    Protocol::Herald => format!("{}.*.*", event::TYPE),
                    Protocol::Nats => format!("_INBOX.loadgen{i}"),
                },
                role: Role::Replay {
                    after: 0,
                    events: stored,
                },
            })
            .collect();
        let started = Instant::now();
        let concurrency = args.connect_concurrency.max(clients);
        let subscribers = Subscribers::start(&self.endpoint, plans, args.threads, concurrency);
        let deadline = started + Duration::from_secs(300);
        loop {
            let finished = subscribers.sum(|p| &p.replays_done);
            let broken = subscribers.broken();
            if finished + broken >= clients as u64 || Instant::now() > deadline {
                break;
            }
            thread::sleep(Duration::from_millis(2));
        }
        let secs = started.elapsed().as_secs_f64();
        let delivered = subscribers.sum(|p| &p.delivered[mode::PREFILL]);
        let finished = subscribers.sum(|p| &p.replays_done);
        let broken = subscribers.broken();
        let rss = self.server.peak_rss_kib();
        let report = subscribers.stop();
        println!(
            "  replay: {finished} of {clients} clients replayed {stored} events each in {secs:.2} s: \
             {:.0} events/s delivered; per client p50 {:.0} ms p99 {:.0} ms; server peak {} MiB",
            delivered as f64 / secs,
            stats::quantile_ms(&report.replay, 0.5),
            stats::quantile_ms(&report.replay, 0.99),
            rss / 1024
        );
        self.put("replayed ev/s", delivered as f64 / secs);
        self.put("peak RSS MiB", rss as f64 / 1024.0);
        self.put(
            "client done p50 ms",
            stats::quantile_ms(&report.replay, 0.5),
        );
        self.put(
            "client done p99 ms",
            stats::quantile_ms(&report.replay, 0.99),
        );
        if finished < clients as u64
            || broken > 0
            || report.out_of_order > 0
            || report.not_recovered > 0
            || !report.errors.is_empty()
        {
            return Err(format!(
                "{finished} of {clients} clients finished, {broken} failed, {} events out of order, \
                 {} replies not recovered; errors {:?}",
                report.out_of_order, report.not_recovered, report.errors
            ));
        }
        Ok(())
    }
}

/// The machine's 1-minute load average: the servers share the cores with the load generator
/// and with whatever else runs, so every result is printed next to it.
/// CPU numbers, as `--server-cpus` names them.
#[derive(Debug, Clone)]
struct CpuList(Vec<usize>);

/// Parses a CPU list as `taskset -c` takes it: `0`, `0,2`, `0-3,6`.
fn parse_cpu_list(list: &str) -> Result<CpuList, String> {
    let mut cpus = Vec::new();
    for part in list.split(',') {
        let number = |s: &str| {
            s.trim()
                .parse::<usize>()
                .map_err(|_| format!("{s:?} is not a CPU number in {list:?}"))
        };
        let (first, last) = match part.split_once('-') {
            Some((first, last)) => (number(first)?, number(last)?),
            None => (number(part)?, number(part)?),
        };
        if first > last || last >= libc::CPU_SETSIZE as usize {
            return Err(format!("{part:?} is not a CPU range in {list:?}"));
        }
        cpus.extend(first..=last);
    }
    Ok(CpuList(cpus))
}

/// Pins the servers to `servers` and this process to the other CPUs it may run on; says where.
fn pin(servers: &[usize]) -> Result<String, String> {
    let online = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mine: Vec<usize> = core_affinity::get_core_ids()
        .unwrap_or_default()
        .into_iter()
        .map(|core| core.id)
        .filter(|cpu| !servers.contains(cpu))
        .collect();
    server::pin_servers(servers.to_vec());
    if mine.is_empty() {
        return Ok(format!(
            "servers on CPUs {servers:?}; no CPU of the {online} left for the load generator, \
             which shares them"
        ));
    }
    server::pin_self(&mine).map_err(|e| format!("sched_setaffinity({mine:?}): {e}"))?;
    Ok(format!(
        "servers on CPUs {servers:?}, the load generator on CPUs {mine:?}"
    ))
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

fn random_keys(count: usize) -> Vec<[u8; event::KEY_BYTES]> {
    (0..count)
        .map(|_| event::key_bytes(&uuid::Uuid::new_v4()))
        .collect()
}
