//! Publish and replay throughput against a real herald, started as a child like in production:
//! many concurrent publishers posting batches of 1 and 64 events with `sync` and `batched`
//! durability, then one client replaying 100,000 stored events over its websocket.
//!
//! `cargo bench --bench publish -- [--duration 3s] [--publishers 32] [--replay-events 100000]`
//!
//! It shares the load generator's publishers, subscribers and server control (benches/loadgen).

// The load generator's modules are compiled in here too; what only the load generator uses
// (NATS, TLS, paced phases, the cluster) is dead code in this binary.
#[allow(dead_code)]
#[path = "loadgen/clients.rs"]
mod clients;
#[allow(dead_code)]
#[path = "loadgen/event.rs"]
mod event;
#[allow(dead_code)]
#[path = "loadgen/nats.rs"]
mod nats;
#[allow(dead_code)]
#[path = "loadgen/publish.rs"]
mod publish;
#[allow(dead_code)]
#[path = "loadgen/server.rs"]
mod server;
#[allow(dead_code)]
#[path = "loadgen/stats.rs"]
mod stats;
#[allow(dead_code)]
#[path = "loadgen/tls.rs"]
mod tls;
#[allow(dead_code)]
#[path = "loadgen/ws.rs"]
mod ws;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread;
use std::time::{Duration, Instant};

use base64::Engine as _;
use clap::Parser;

use clients::{Endpoint, Plan, Protocol, Role, Subscribers};
use publish::{BatchShape, Control, mode};
use server::{HeraldOptions, Server};

/// Publish and replay throughput of one herald.
#[derive(Debug, Parser)]
#[command(name = "publish", args_override_self = true)]
struct Args {
    /// How long each publish measurement runs.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "3s")]
    duration: Duration,
    /// Concurrent publishers, each with one batch in flight.
    #[arg(long, default_value_t = 32)]
    publishers: usize,
    /// Bytes of each event's JSON.
    #[arg(long, default_value_t = 600)]
    event_bytes: usize,
    /// Events one client replays.
    #[arg(long, default_value_t = 100_000)]
    replay_events: u64,
    /// herald's `--cores`.
    #[arg(long, default_value_t = 2)]
    cores: usize,
    /// The herald binary (cargo builds it next to this bench).
    #[arg(long, default_value = env!("CARGO_BIN_EXE_herald"))]
    herald_bin: PathBuf,
    /// One more argument of `herald serve` (repeatable), e.g. `--herald-arg=--cache-bytes=1GiB`.
    #[arg(long = "herald-arg", value_name = "ARG", allow_hyphen_values = true)]
    herald_args: Vec<String>,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

const PASSWORD: &str = "publish-bench";

fn main() -> ExitCode {
    let args = Args::parse();
    println!(
        "publish bench: {} publishers, {} B events, {:?} per measurement, herald --cores {}",
        args.publishers, args.event_bytes, args.duration, args.cores
    );
    let mut ok = true;
    for durability in ["sync", "batched"] {
        for batch in [1, 64] {
            match publish_throughput(&args, durability, batch) {
                Ok(line) => println!("publish {durability:<7} batch {batch:>2}: {line}"),
                Err(error) => {
                    println!("publish {durability:<7} batch {batch:>2}: FAILED: {error}");
                    ok = false;
                }
            }
        }
    }
    match replay_throughput(&args) {
        Ok(line) => println!(
            "replay  {} events to one client: {line}",
            args.replay_events
        ),
        Err(error) => {
            println!("replay: FAILED: {error}");
            ok = false;
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn start(args: &Args, durability: &str) -> Result<(Server, Arc<Endpoint>), String> {
    let server = Server::herald(&HeraldOptions {
        bin: &args.herald_bin,
        durability: Some(durability),
        tls: None,
        cores: Some(args.cores),
        extra: &args.herald_args,
        password: PASSWORD,
        cluster: None,
    })?;
    let endpoint = Arc::new(Endpoint {
        addr: server.addr,
        protocol: Protocol::Herald,
        tls: None,
        authorization: format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("rocketskates:{PASSWORD}"))
        ),
        failover: None,
    });
    publish::probe(&endpoint).map_err(|e| format!("herald does not answer: {e}"))?;
    Ok((server, endpoint))
}

fn shape(args: &Args, batch: usize) -> BatchShape {
    BatchShape {
        batch,
        paced_batch: 1,
        template: event::EventTemplate::new(args.event_bytes),
        keys: Arc::new(
            (0..1000)
                .map(|_| event::key_bytes(&uuid::Uuid::new_v4()))
                .collect(),
        ),
    }
}

/// Many publishers as fast as acknowledgements allow, with nobody subscribed.
fn publish_throughput(args: &Args, durability: &str, batch: usize) -> Result<String, String> {
    let (server, endpoint) = start(args, durability)?;
    let control = Control::new(args.publishers, u64::MAX, Vec::new());
    let publishers = publish::spawn(&endpoint, &shape(args, batch), &control);
    let started = Instant::now();
    control.mode.store(mode::MAX, Ordering::Release);
    thread::sleep(args.duration);
    control.mode.store(mode::EXIT, Ordering::Release);
    let mut acks = stats::histogram();
    for handle in publishers {
        if let Ok(report) = handle.join() {
            stats::merge(&mut acks, &report.ack[mode::MAX]);
        }
    }
    let secs = started.elapsed().as_secs_f64();
    server.stop();
    let events = control.acked[mode::MAX].load(Ordering::Acquire);
    if let Ok(Some(error)) = control.first_error.lock().map(|e| e.clone()) {
        return Err(error);
    }
    Ok(format!(
        "{:>8.0} events/s, {:>7.0} requests/s, acknowledged p50 {:.2} ms p99 {:.2} ms",
        events as f64 / secs,
        events as f64 / batch as f64 / secs,
        stats::quantile_ms(&acks, 0.5),
        stats::quantile_ms(&acks, 0.99),
    ))
}

/// Stores the events, then times one client's `register` + `replay 0` until it has them all.
fn replay_throughput(args: &Args) -> Result<String, String> {
    let (server, endpoint) = start(args, "batched")?;
    let events = args.replay_events.max(1);
    let batch = (1..=100u64)
        .rev()
        .find(|b| events.is_multiple_of(*b))
        .unwrap_or(1);
    let control = Control::new(args.publishers, 0, Vec::new());
    control.limit.store(events, Ordering::Release);
    let publishers = publish::spawn(&endpoint, &shape(args, batch as usize), &control);
    control.mode.store(mode::PREFILL, Ordering::Release);
    let deadline = Instant::now() + Duration::from_secs(300);
    while control.settled() < events && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(5));
    }
    control.mode.store(mode::EXIT, Ordering::Release);
    for handle in publishers {
        let _ = handle.join();
    }
    // Let `batched` durability flush, so every event is readable by a replay.
    thread::sleep(Duration::from_millis(200));
    let plan = Plan {
        subscription: format!("{}.*.*", event::TYPE),
        role: Role::Replay { after: 0, events },
    };
    let started = Instant::now();
    let subscribers = Subscribers::start(&endpoint, vec![plan], 1, 1);
    while subscribers.sum(|p| &p.replays_done) == 0
        && subscribers.sum(|p| &p.failed) + subscribers.sum(|p| &p.dropped) == 0
        && Instant::now() < deadline
    {
        thread::sleep(Duration::from_millis(1));
    }
    let secs = started.elapsed().as_secs_f64();
    let delivered = subscribers.sum(|p| &p.delivered[mode::PREFILL]);
    let report = subscribers.stop();
    server.stop();
    if delivered < events || report.out_of_order > 0 || !report.errors.is_empty() {
        return Err(format!(
            "{delivered} of {events} events, {} out of order, errors {:?}",
            report.out_of_order, report.errors
        ));
    }
    Ok(format!(
        "{:.0} events/s ({secs:.2} s, including connect and register)",
        delivered as f64 / secs
    ))
}
