//! Metric names, their help texts and buckets, per-core counters, and the `/metrics` exposition.
//!
//! Counters on the fan-out path (events and bytes delivered, connections, filters) live in one
//! [`CoreStats`] per core, written only by that core, and are merged at scrape time; everything
//! else goes through the `metrics` facade into metrics-exporter-prometheus, which renders the
//! Prometheus text. No label takes a value a client controls.
//!
//! A leaf: everything rendered is handed in as plain values by the caller.

pub(crate) mod activity;

use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use metrics::{
    Counter, Histogram, Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge,
    histogram,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Open connections, by `type` (`websocket`, `api`).
pub(crate) const CONNECTIONS: &str = "herald_connections";
/// Accepted connections, by `type`.
pub(crate) const CONNECTIONS_ACCEPTED: &str = "herald_connections_accepted_total";
/// Closed websockets, by `reason`.
pub(crate) const DISCONNECTS: &str = "herald_disconnects_total";
/// Registered filters.
pub(crate) const FILTERS: &str = "herald_filters";
/// Events sequenced into the log.
pub(crate) const EVENTS_PUBLISHED: &str = "herald_events_published_total";
/// Events written to websockets.
pub(crate) const EVENTS_DELIVERED: &str = "herald_events_delivered_total";
/// Bytes written to websockets.
pub(crate) const DELIVERED_BYTES: &str = "herald_delivered_bytes_total";
/// Connections closed as slow consumers.
pub(crate) const SLOW_CONSUMER_CLOSES: &str = "herald_slow_consumer_closes_total";
/// `replay` commands, by `result` (`recovered`, `gap`).
pub(crate) const REPLAY_REQUESTS: &str = "herald_replay_requests_total";
/// Events sent by replays.
pub(crate) const EVENTS_REPLAYED: &str = "herald_events_replayed_total";
/// Oldest retained Seq.
pub(crate) const LOG_FIRST_SEQ: &str = "herald_log_first_seq";
/// Newest stored Seq.
pub(crate) const LOG_LAST_SEQ: &str = "herald_log_last_seq";
/// Bytes of retained events.
pub(crate) const LOG_BYTES: &str = "herald_log_bytes";
/// Time from a publish request's arrival until its events are durable.
pub(crate) const PUBLISH_DURATION: &str = "herald_publish_duration_seconds";
/// Time from an event being durable until it is written to a socket (measured per write).
pub(crate) const DELIVERY_LAG: &str = "herald_delivery_lag_seconds";
/// Failed authentications, by `reason`.
pub(crate) const AUTH_FAILURES: &str = "herald_auth_failures_total";
/// argon2 password verifications run (unknown users' included).
pub(crate) const PASSWORD_VERIFICATIONS: &str = "herald_password_verifications_total";
/// Logins refused before their password was checked, by the budget that was spent.
pub(crate) const AUTH_THROTTLED: &str = "herald_auth_throttled_total";
/// HTTP requests, by `route` template and status `class`.
pub(crate) const HTTP_REQUESTS: &str = "herald_http_requests_total";
/// Cluster nodes: 1 while this node's NATS connection is up.
pub(crate) const CLUSTER_NATS_CONNECTED: &str = "herald_cluster_nats_connected";
/// Cluster nodes: events in the stream that this node has yet to deliver.
pub(crate) const CLUSTER_STREAM_LAG: &str = "herald_cluster_stream_lag_events";
/// Cluster nodes: publishes sent to the stream again after no answer.
pub(crate) const CLUSTER_PUBLISH_RETRIES: &str = "herald_cluster_publish_retries_total";
/// Cluster nodes: nodes of the cluster seen alive.
pub(crate) const CLUSTER_NODES: &str = "herald_cluster_nodes";
/// Always 1, labelled with `version` and `driver`.
pub(crate) const BUILD_INFO: &str = "herald_build_info";

/// Latency buckets from 50 µs to 10 s: a loopback delivery takes tens of microseconds, a
/// synced publish a few milliseconds, and anything in seconds is an incident.
const LATENCY_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0,
];

/// How often the exporter's histograms are maintained.
pub(crate) const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Counters one core writes and the scrape reads; aligned so cores never share a cache line.
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct CoreStats {
    /// Open websockets on this core.
    pub websockets: AtomicU64,
    /// Open HTTP (API) connections on this core.
    pub api_connections: AtomicU64,
    /// Filters registered on this core.
    pub filters: AtomicU64,
    /// Events written to this core's websockets.
    pub events_delivered: AtomicU64,
    /// Bytes written to this core's websockets.
    pub bytes_delivered: AtomicU64,
    /// Websockets this core closed as slow consumers.
    pub slow_consumer_closes: AtomicU64,
    /// Delivery lag summed over this core's timed writes, in microseconds (see [`DELIVERY_LAG`]).
    pub delivery_lag_micros: AtomicU64,
    /// Writes whose delivery lag was timed, the divisor of `delivery_lag_micros`.
    pub delivery_lag_writes: AtomicU64,
}

/// The per-core counters summed over every core, read at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct CoreTotals {
    /// Open websockets.
    pub websockets: u64,
    /// Open HTTP (API) connections.
    pub api_connections: u64,
    /// Registered filters.
    pub filters: u64,
    /// Events written to websockets.
    pub events_delivered: u64,
    /// Bytes written to websockets.
    pub bytes_delivered: u64,
    /// Websockets closed as slow consumers.
    pub slow_consumer_closes: u64,
    /// Summed delivery lag of the timed writes, in microseconds.
    pub delivery_lag_micros: u64,
    /// Writes whose delivery lag was timed.
    pub delivery_lag_writes: u64,
}

/// What a scrape renders besides the exporter's own series, gathered by the caller.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Scrape {
    /// The per-core counters, summed.
    pub cores: CoreTotals,
    /// Oldest retained Seq.
    pub log_first_seq: u64,
    /// Newest stored Seq.
    pub log_last_seq: u64,
    /// Bytes of retained events.
    pub log_bytes: u64,
    /// `io_uring` or `epoll`.
    pub driver: &'static str,
}

impl CoreStats {
    /// Sums the counters of every core.
    pub(crate) fn total(stats: &[CoreStats]) -> CoreTotals {
        let sum = |field: fn(&CoreStats) -> &AtomicU64| -> u64 {
            stats.iter().map(|s| field(s).load(Ordering::Relaxed)).sum()
        };
        CoreTotals {
            websockets: sum(|s| &s.websockets),
            api_connections: sum(|s| &s.api_connections),
            filters: sum(|s| &s.filters),
            events_delivered: sum(|s| &s.events_delivered),
            bytes_delivered: sum(|s| &s.bytes_delivered),
            slow_consumer_closes: sum(|s| &s.slow_consumer_closes),
            delivery_lag_micros: sum(|s| &s.delivery_lag_micros),
            delivery_lag_writes: sum(|s| &s.delivery_lag_writes),
        }
    }

    /// Adds `n` (the owning core is the only writer, so no read-modify-write is needed).
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.store(
            counter.load(Ordering::Relaxed).wrapping_add(n),
            Ordering::Relaxed,
        );
    }

    /// Subtracts `n`, for gauges.
    pub(crate) fn sub(counter: &AtomicU64, n: u64) {
        counter.store(
            counter.load(Ordering::Relaxed).saturating_sub(n),
            Ordering::Relaxed,
        );
    }
}

/// The series written per event or per write, looked up once (the macros look a series up by
/// name on every call); first used after [`install`], so they hold the installed recorder's.
static DELIVERY_LAG_SERIES: LazyLock<Histogram> = LazyLock::new(|| histogram!(DELIVERY_LAG));
static PUBLISH_DURATION_SERIES: LazyLock<Histogram> =
    LazyLock::new(|| histogram!(PUBLISH_DURATION));
static EVENTS_PUBLISHED_SERIES: LazyLock<Counter> = LazyLock::new(|| counter!(EVENTS_PUBLISHED));

/// [`DELIVERY_LAG`].
pub(crate) fn delivery_lag() -> &'static Histogram {
    &DELIVERY_LAG_SERIES
}

/// [`PUBLISH_DURATION`].
pub(crate) fn publish_duration() -> &'static Histogram {
    &PUBLISH_DURATION_SERIES
}

/// [`EVENTS_PUBLISHED`].
pub(crate) fn events_published() -> &'static Counter {
    &EVENTS_PUBLISHED_SERIES
}

/// Installs the process-wide recorder with herald's help texts and buckets.
pub(crate) fn install() -> Result<PrometheusHandle, metrics_exporter_prometheus::BuildError> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(PUBLISH_DURATION.into()), LATENCY_BUCKETS)?
        .set_buckets_for_metric(Matcher::Full(DELIVERY_LAG.into()), LATENCY_BUCKETS)?
        .install_recorder()?;
    describe();
    register_zeroes();
    Ok(handle)
}

/// Every labelled series exists from the start, so rates and alerts see a zero, not a gap.
fn register_zeroes() {
    for reason in [
        "client closed",
        SLOW_CONSUMER,
        "ping timeout",
        "server shutdown",
        "stream gap",
        "protocol error",
    ] {
        counter!(DISCONNECTS, "reason" => reason).increment(0);
    }
    for kind in ["websocket", "api"] {
        counter!(CONNECTIONS_ACCEPTED, "type" => kind).increment(0);
    }
    for result in ["recovered", "gap"] {
        counter!(REPLAY_REQUESTS, "result" => result).increment(0);
    }
    for reason in [
        "missing",
        "malformed",
        "bad_password",
        "unknown_user",
        "bad_token",
        "expired_token",
    ] {
        counter!(AUTH_FAILURES, "reason" => reason).increment(0);
    }
    for by in ["address", "user"] {
        counter!(AUTH_THROTTLED, "by" => by).increment(0);
    }
    counter!(PASSWORD_VERIFICATIONS).increment(0);
    counter!(SLOW_CONSUMER_CLOSES).increment(0);
    counter!(EVENTS_PUBLISHED).increment(0);
    counter!(EVENTS_REPLAYED).increment(0);
}

fn describe() {
    describe_gauge!(
        CLUSTER_NATS_CONNECTED,
        "Cluster nodes only: 1 while this node is connected to NATS, else 0."
    );
    describe_gauge!(
        CLUSTER_STREAM_LAG,
        "Cluster nodes only: events in the cluster's stream this node has yet to deliver."
    );
    describe_counter!(
        CLUSTER_PUBLISH_RETRIES,
        "Cluster nodes only: events sent to the stream again after no acknowledgement."
    );
    describe_gauge!(
        CLUSTER_NODES,
        "Cluster nodes only: nodes of the cluster that announced themselves in the last 15 s."
    );
    describe_gauge!(CONNECTIONS, "Open connections, by type (websocket or api).");
    describe_counter!(
        CONNECTIONS_ACCEPTED,
        "Connections accepted: api counts every TCP connection, websocket every upgrade."
    );
    describe_counter!(DISCONNECTS, "Websockets closed, by reason.");
    describe_gauge!(FILTERS, "Filters registered on websockets.");
    describe_counter!(EVENTS_PUBLISHED, "Events sequenced into the log.");
    describe_counter!(EVENTS_DELIVERED, "Events written to websockets.");
    describe_counter!(DELIVERED_BYTES, Unit::Bytes, "Bytes written to websockets.");
    describe_counter!(
        SLOW_CONSUMER_CLOSES,
        "Websockets closed for falling a whole outbound budget behind."
    );
    describe_counter!(
        REPLAY_REQUESTS,
        "Replay commands, by result: recovered, or gap when events were missed."
    );
    describe_counter!(EVENTS_REPLAYED, "Events sent to websockets by replays.");
    describe_gauge!(LOG_FIRST_SEQ, "Oldest Seq retained in the event log.");
    describe_gauge!(LOG_LAST_SEQ, "Newest Seq stored in the event log.");
    describe_gauge!(
        LOG_BYTES,
        Unit::Bytes,
        "Bytes of events retained in the event log."
    );
    describe_histogram!(
        PUBLISH_DURATION,
        Unit::Seconds,
        "Time from a publish request's arrival until its events are durable."
    );
    describe_histogram!(
        DELIVERY_LAG,
        Unit::Seconds,
        "Time from an event being durable until it is written to a socket, once per write."
    );
    describe_counter!(AUTH_FAILURES, "Failed authentications, by reason.");
    describe_counter!(
        AUTH_THROTTLED,
        "Password logins refused with 429 before any hash ran, by the spent budget (address or user)."
    );
    describe_counter!(
        PASSWORD_VERIFICATIONS,
        "argon2 password verifications run, including those for unknown users."
    );
    describe_counter!(
        HTTP_REQUESTS,
        "HTTP requests answered, by route template and status class (an upgrade is 1xx)."
    );
    describe_gauge!(
        BUILD_INFO,
        "Always 1; labelled with herald's version and the IO driver in use."
    );
    describe_gauge!(
        "process_resident_memory_bytes",
        Unit::Bytes,
        "Resident memory of the herald process."
    );
    describe_gauge!(
        "process_open_fds",
        "Open file descriptors of the herald process."
    );
    describe_gauge!(
        "process_start_time_seconds",
        Unit::Seconds,
        "Start time of the process since the Unix epoch."
    );
}

/// The `reason` label of a websocket closed as a slow consumer.
pub(crate) const SLOW_CONSUMER: &str = "slow consumer";

/// Counts a closed websocket under its `reason` label (one of those `register_zeroes` names).
pub(crate) fn count_disconnect(reason: &'static str) {
    counter!(DISCONNECTS, "reason" => reason).increment(1);
    if reason == SLOW_CONSUMER {
        counter!(SLOW_CONSUMER_CLOSES).increment(1);
    }
}

/// Counts an answered HTTP request.
pub(crate) fn count_request(route: &'static str, status: u16) {
    let class = match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    };
    counter!(HTTP_REQUESTS, "route" => route, "class" => class).increment(1);
}

/// Merges the gathered figures into the exporter and renders the exposition.
pub(crate) fn render(scrape: &Scrape, handle: &PrometheusHandle) -> String {
    let cores = &scrape.cores;
    gauge!(CONNECTIONS, "type" => "websocket").set(cores.websockets as f64);
    gauge!(CONNECTIONS, "type" => "api").set(cores.api_connections as f64);
    gauge!(FILTERS).set(cores.filters as f64);
    counter!(EVENTS_DELIVERED).absolute(cores.events_delivered);
    counter!(DELIVERED_BYTES).absolute(cores.bytes_delivered);
    gauge!(LOG_FIRST_SEQ).set(scrape.log_first_seq as f64);
    gauge!(LOG_LAST_SEQ).set(scrape.log_last_seq as f64);
    gauge!(LOG_BYTES).set(scrape.log_bytes as f64);
    gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION"), "driver" => scrape.driver).set(1.0);
    process_metrics();
    handle.render()
}

/// Resident memory, open descriptors and start time, read from /proc.
fn process_metrics() {
    if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
        let rss_kib = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok());
        if let Some(kib) = rss_kib {
            gauge!("process_resident_memory_bytes").set(kib * 1024.0);
        }
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        gauge!("process_open_fds").set(fds.count() as f64);
    }
    if let Some(start) = START_TIME.get() {
        gauge!("process_start_time_seconds").set(*start);
    }
}

static START_TIME: std::sync::OnceLock<f64> = std::sync::OnceLock::new();

/// Records the process start time (call once at startup).
pub(crate) fn mark_start() {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    let _ = START_TIME.set(now);
}
