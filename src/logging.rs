//! Logging: the `--log-level` grammar, the stderr logger, rate limits for records that clients
//! can cause, and herald's own log records published as events `log.<level>.herald`.
//!
//! One `tracing` registry carries two layers, each with its own filter that SIGHUP can swap:
//! the stderr writer (text or JSON) and `LogEvents`, which hands records at
//! `--log-events-level` and above to the sequencer like any published event.

use std::io::{self, IsTerminal};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::Instant;

use clap::ValueEnum;
use thiserror::Error;
use tracing::field::{Field, Visit};
use tracing::{Level, Subscriber};
use tracing_subscriber::filter::{EnvFilter, LevelFilter, Targets};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Registry, reload};

use crate::wire::event::{Event, SYSTEM_PRINCIPAL};

/// The level names `--log-level` and `--log-events-level` accept, quietest first.
pub const LEVELS: &[&str] = &["off", "error", "warn", "info", "debug", "trace"];
/// Level of third-party crates (sled, rustls, …) unless a directive names them: their info and
/// debug lines describe their internals, not herald's work.
const THIRD_PARTY_LEVEL: LevelFilter = LevelFilter::WARN;
/// Target of records about log events themselves, which are never published as log events,
/// so a failure to publish one cannot publish another.
pub const LOG_EVENTS_TARGET: &str = "herald::log_events";
/// The `Key` of log events and the `Service` of their records (DRP's `log.<level>.<service>`).
pub const SERVICE: &str = "herald";

/// Log events published per second on average. The default retention keeps 1,000,000 events;
/// at most 86,400 log events a day leave nearly all of it to the events clients publish.
const LOG_EVENTS_PER_SECOND: u32 = 1;
/// Log events published at once after a quiet spell, so the first records of an incident all
/// arrive before the rate limit starts counting them as suppressed.
const LOG_EVENTS_BURST: u32 = 20;

/// Lines per second, on average, of each kind of record a client can cause (failed logins,
/// refused requests, failed TLS handshakes, slow-consumer closes): a scanner or a client stuck
/// in a retry loop must not bury the rest of the log, and the next line says how many were left out.
const CLIENT_RECORDS_PER_SECOND: u32 = 10;
/// Lines of each such kind logged at once before the rate applies.
const CLIENT_RECORDS_BURST: u32 = 100;

/// Failed logins (wrong password, unknown user, bad or expired token).
pub static FAILED_LOGINS: RateLimit =
    RateLimit::new(CLIENT_RECORDS_PER_SECOND, CLIENT_RECORDS_BURST);
/// Password logins refused with 429 because a failed-login budget was spent.
pub static THROTTLED_LOGINS: RateLimit =
    RateLimit::new(CLIENT_RECORDS_PER_SECOND, CLIENT_RECORDS_BURST);
/// Connections refused because `max_connections` were open.
pub static REFUSED_CONNECTIONS: RateLimit =
    RateLimit::new(CLIENT_RECORDS_PER_SECOND, CLIENT_RECORDS_BURST);
/// Failed accepts (out of descriptors or memory); each is followed by a short back-off.
pub static ACCEPT_FAILURES: RateLimit =
    RateLimit::new(CLIENT_RECORDS_PER_SECOND, CLIENT_RECORDS_BURST);
/// Requests answered with a 4xx status.
pub static REFUSED_REQUESTS: RateLimit =
    RateLimit::new(CLIENT_RECORDS_PER_SECOND, CLIENT_RECORDS_BURST);
/// TLS handshakes that failed.
pub static FAILED_HANDSHAKES: RateLimit =
    RateLimit::new(CLIENT_RECORDS_PER_SECOND, CLIENT_RECORDS_BURST);
/// Websockets closed as slow consumers.
pub static SLOW_CONSUMERS: RateLimit =
    RateLimit::new(CLIENT_RECORDS_PER_SECOND, CLIENT_RECORDS_BURST);

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// The least severe level published as log events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum EventsLevel {
    /// Publish no log events.
    Off,
    /// Errors only.
    Error,
    /// Warnings and errors.
    #[default]
    Warn,
    /// Also informational records (start, reloads, refused clients).
    Info,
    /// Also debug records.
    Debug,
    /// Everything.
    Trace,
}

impl EventsLevel {
    /// The name used in flags and the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            EventsLevel::Off => "off",
            EventsLevel::Error => "error",
            EventsLevel::Warn => "warn",
            EventsLevel::Info => "info",
            EventsLevel::Debug => "debug",
            EventsLevel::Trace => "trace",
        }
    }

    fn filter(self) -> LevelFilter {
        match self {
            EventsLevel::Off => LevelFilter::OFF,
            EventsLevel::Error => LevelFilter::ERROR,
            EventsLevel::Warn => LevelFilter::WARN,
            EventsLevel::Info => LevelFilter::INFO,
            EventsLevel::Debug => LevelFilter::DEBUG,
            EventsLevel::Trace => LevelFilter::TRACE,
        }
    }
}

/// Why logging could not be started or changed.
#[derive(Debug, Error)]
pub enum LoggingError {
    /// The `--log-level` value is not a level or a list of directives.
    #[error("{0}")]
    BadFilter(String),
    /// A logger is already installed in this process, or installing failed.
    #[error("cannot start logging: {0}")]
    Install(String),
    /// [`reload()`] was called before [`init`].
    #[error("logging was not started, so its levels cannot be changed")]
    NotStarted,
}

fn parse_level(text: &str) -> Result<LevelFilter, String> {
    let wanted = text.trim().to_ascii_lowercase();
    match LEVELS.iter().position(|&name| name == wanted) {
        Some(0) => Ok(LevelFilter::OFF),
        Some(1) => Ok(LevelFilter::ERROR),
        Some(2) => Ok(LevelFilter::WARN),
        Some(3) => Ok(LevelFilter::INFO),
        Some(4) => Ok(LevelFilter::DEBUG),
        Some(5) => Ok(LevelFilter::TRACE),
        _ => Err(format!(
            "{text:?} is not a log level: use one of {}, or directives such as herald=debug,info",
            LEVELS.join(", ")
        )),
    }
}

/// Reads a `--log-level` value: a level, or comma-separated directives `target=level` with at
/// most one bare level among them. A bare level sets herald's own level; third-party crates stay
/// at warn (or quieter, when herald's level is) unless a directive names them.
pub fn stderr_filter(spec: &str) -> Result<EnvFilter, LoggingError> {
    let bad = |reason: String| LoggingError::BadFilter(reason);
    let mut herald_level = None;
    let mut names_herald = false;
    let mut directives = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.rsplit_once('=') {
            // A bare word that is not a level would enable only a target of that name and
            // silence everything else, which is what a misspelled level would do.
            None => herald_level = Some(parse_level(part).map_err(bad)?),
            Some((target, level)) => {
                parse_level(level).map_err(|reason| bad(format!("in {part:?}: {reason}")))?;
                let target = target.split('[').next().unwrap_or("").trim();
                names_herald |= target == SERVICE;
                directives.push(part.to_owned());
            }
        }
    }
    if herald_level.is_none() && directives.is_empty() {
        return Err(bad(format!(
            "the log level is empty: use one of {}, or directives such as herald=debug,info",
            LEVELS.join(", ")
        )));
    }
    let herald_level = herald_level.unwrap_or(LevelFilter::INFO);
    let mut all = vec![herald_level.min(THIRD_PARTY_LEVEL).to_string()];
    if !names_herald {
        all.push(format!("{SERVICE}={herald_level}"));
    }
    all.extend(directives);
    EnvFilter::builder()
        .parse(all.join(","))
        .map_err(|e| bad(format!("{spec:?} is not a log filter ({e}); use a level such as info, or directives such as herald=debug,info")))
}

/// Which records the log events layer sees: herald's own at `level` and above, never those
/// about log events.
fn events_filter(level: EventsLevel) -> Targets {
    Targets::new()
        .with_target(SERVICE, level.filter())
        .with_target(LOG_EVENTS_TARGET, LevelFilter::OFF)
}

/// Swaps the filters of the running logger.
struct Reloads {
    stderr: reload::Handle<EnvFilter, Registry>,
    events: reload::Handle<Targets, Registry>,
}

static RELOADS: OnceLock<Reloads> = OnceLock::new();
static LOG_EVENTS: LogEvents = LogEvents {
    limit: RateLimit::new(LOG_EVENTS_PER_SECOND, LOG_EVENTS_BURST),
    outlet: Mutex::new(Outlet::Waiting(Vec::new())),
};

/// Starts logging to stderr filtered by `level`, in `format`, and collects herald's records at
/// `events` and above for [`publish_log_events`]. Call once per process.
pub fn init(level: &str, format: LogFormat, events: EventsLevel) -> Result<(), LoggingError> {
    let (stderr, stderr_handle) = reload::Layer::new(stderr_filter(level)?);
    let (events_filter, events_handle) = reload::Layer::new(events_filter(events));
    let writer: Box<dyn Layer<Registry> + Send + Sync> = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(io::stderr)
            .with_ansi(io::stderr().is_terminal())
            .with_filter(stderr)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_writer(io::stderr)
            .with_filter(stderr)
            .boxed(),
    };
    let publisher = LogEventsLayer.with_filter(events_filter).boxed();
    tracing_subscriber::registry()
        .with(vec![writer, publisher])
        .try_init()
        .map_err(|e| LoggingError::Install(e.to_string()))?;
    let _ = RELOADS.set(Reloads {
        stderr: stderr_handle,
        events: events_handle,
    });
    Ok(())
}

/// Applies a new `--log-level` and `--log-events-level` to the running logger (on SIGHUP).
pub fn reload(level: &str, events: EventsLevel) -> Result<(), LoggingError> {
    let filter = stderr_filter(level)?;
    let reloads = RELOADS.get().ok_or(LoggingError::NotStarted)?;
    reloads
        .stderr
        .reload(filter)
        .map_err(|e| LoggingError::Install(e.to_string()))?;
    reloads
        .events
        .reload(events_filter(events))
        .map_err(|e| LoggingError::Install(e.to_string()))
}

/// Where log events go: held back until the sequencer runs, then handed to it.
enum Outlet {
    /// Records from before the sequencer started, at most a burst of them.
    Waiting(Vec<Event>),
    /// Queues one event without waiting; false when it could not be queued.
    Open(Box<dyn Fn(Event) -> bool + Send>),
}

/// Sends log events to `sink` from now on, starting with those recorded before: `sink` must
/// queue an event without blocking and say whether it could.
pub fn publish_log_events(sink: impl Fn(Event) -> bool + Send + 'static) {
    let mut outlet = LOG_EVENTS
        .outlet
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    if let Outlet::Waiting(early) = &mut *outlet {
        for event in early.drain(..) {
            if !sink(event) {
                LOG_EVENTS.limit.count_suppressed();
            }
        }
    }
    *outlet = Outlet::Open(Box::new(sink));
}

/// herald's records as events, rate-limited.
struct LogEvents {
    limit: RateLimit,
    outlet: Mutex<Outlet>,
}

impl LogEvents {
    fn offer(&self, event: &tracing::Event<'_>) {
        let Some(suppressed) = self.limit.admit() else {
            return;
        };
        let meta = event.metadata();
        let level = level_name(*meta.level());
        let mut fields = FieldsToJson::default();
        event.record(&mut fields);
        let time = crate::wire::event::now_rfc3339();
        let object = serde_json::json!({
            "Time": time,
            "Level": level,
            "Service": SERVICE,
            "Target": meta.target(),
            "Message": fields.message,
            "Fields": fields.fields,
            "File": meta.file(),
            "Line": meta.line(),
            "Suppressed": suppressed,
        });
        let mut published =
            Event::new("log", level, SERVICE, SYSTEM_PRINCIPAL).with_object(&object);
        published.time = time;
        let mut outlet = self.outlet.lock().unwrap_or_else(PoisonError::into_inner);
        let queued = match &mut *outlet {
            Outlet::Waiting(early) if early.len() < LOG_EVENTS_BURST as usize => {
                early.push(published);
                true
            }
            Outlet::Waiting(_) => false,
            Outlet::Open(sink) => sink(published),
        };
        drop(outlet);
        if !queued {
            self.limit.count_suppressed();
        }
    }
}

/// The `tracing` layer in front of [`LOG_EVENTS`].
struct LogEventsLayer;

impl<S: Subscriber> Layer<S> for LogEventsLayer {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        LOG_EVENTS.offer(event);
    }
}

/// The lower-case level name of log event actions (`log.warn.herald`).
fn level_name(level: Level) -> &'static str {
    match level {
        Level::ERROR => "error",
        Level::WARN => "warn",
        Level::INFO => "info",
        Level::DEBUG => "debug",
        Level::TRACE => "trace",
    }
}

/// A record's message and key/value fields as JSON values.
#[derive(Default)]
struct FieldsToJson {
    message: String,
    fields: serde_json::Map<String, serde_json::Value>,
}

impl FieldsToJson {
    fn put(&mut self, field: &Field, value: serde_json::Value) {
        self.fields.insert(field.name().to_owned(), value);
    }
}

impl Visit for FieldsToJson {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_owned();
        } else {
            self.put(field, value.into());
        }
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, value.into());
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, value.to_string().into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        // `%x` fields arrive here too, as Debug that writes their Display.
        let text = format!("{value:?}");
        if field.name() == "message" {
            self.message = text;
        } else {
            self.put(field, text.into());
        }
    }
}

/// A token bucket shared by every thread: on average `per_second` admissions a second, at most
/// `burst` at once, counting what it turns away.
pub struct RateLimit {
    per_second: u32,
    burst: u32,
    bucket: Mutex<Bucket>,
}

struct Bucket {
    tokens: f64,
    refilled: Option<Instant>,
    suppressed: u64,
}

impl RateLimit {
    /// A full bucket.
    pub const fn new(per_second: u32, burst: u32) -> RateLimit {
        RateLimit {
            per_second,
            burst,
            bucket: Mutex::new(Bucket {
                tokens: burst as f64,
                refilled: None,
                suppressed: 0,
            }),
        }
    }

    /// Takes a token: `Some(n)`, with `n` the records turned away since the last one admitted,
    /// or `None` when this record is to be left out (and is counted).
    pub fn admit(&self) -> Option<u64> {
        self.admit_at(Instant::now())
    }

    fn admit_at(&self, now: Instant) -> Option<u64> {
        let mut bucket = self.bucket.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(last) = bucket.refilled {
            let earned =
                now.saturating_duration_since(last).as_secs_f64() * f64::from(self.per_second);
            bucket.tokens = (bucket.tokens + earned).min(f64::from(self.burst));
        }
        bucket.refilled = Some(now);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Some(std::mem::take(&mut bucket.suppressed))
        } else {
            bucket.suppressed += 1;
            None
        }
    }

    /// Counts an admitted record that could not be delivered after all.
    pub fn count_suppressed(&self) {
        let mut bucket = self.bucket.lock().unwrap_or_else(PoisonError::into_inner);
        bucket.suppressed += 1;
    }
}

/// `Some(n)` when records were left out, for an optional `suppressed` field.
pub fn suppressed_field(suppressed: u64) -> Option<u64> {
    (suppressed > 0).then_some(suppressed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_rate_limit_admits_a_burst_then_its_rate_and_counts_what_it_left_out() {
        let limit = RateLimit::new(2, 3);
        let start = Instant::now();
        for _ in 0..3 {
            assert_eq!(limit.admit_at(start), Some(0));
        }
        assert_eq!(limit.admit_at(start), None);
        assert_eq!(limit.admit_at(start), None);
        // Half a second earns one token at two a second; it reports the two left out.
        let later = start + Duration::from_millis(500);
        assert_eq!(limit.admit_at(later), Some(2));
        assert_eq!(limit.admit_at(later), None);
        // A long quiet spell refills no more than the burst.
        let much_later = later + Duration::from_secs(60);
        for _ in 0..3 {
            assert!(limit.admit_at(much_later).is_some());
        }
        assert_eq!(limit.admit_at(much_later), None);
    }

    #[test]
    fn levels_and_directives_are_accepted_and_misspelled_levels_are_refused() {
        for good in [
            "info",
            "WARN",
            "off",
            "trace",
            "herald=debug,info",
            "herald::api=trace",
            "sled=debug,warn",
            " debug ",
        ] {
            assert!(stderr_filter(good).is_ok(), "{good:?} refused");
        }
        for bad in ["warning", "verbose", "herald=loud", "", " , ", "info,,=["] {
            let error = match stderr_filter(bad) {
                Ok(_) => panic!("{bad:?} accepted"),
                Err(error) => error.to_string(),
            };
            assert!(
                error.contains("off, error, warn, info, debug, trace"),
                "{bad:?}: {error}"
            );
        }
    }

    #[test]
    fn records_about_log_events_are_never_published_as_log_events() {
        let filter = events_filter(EventsLevel::Trace);
        assert!(filter.would_enable("herald::server", &Level::WARN));
        assert!(filter.would_enable("herald::api", &Level::TRACE));
        assert!(!filter.would_enable(LOG_EVENTS_TARGET, &Level::ERROR));
        // Only herald's own records: third-party crates' are not published.
        assert!(!filter.would_enable("rustls::common_state", &Level::ERROR));
        let default = events_filter(EventsLevel::default());
        assert!(default.would_enable("herald::server", &Level::WARN));
        assert!(!default.would_enable("herald::server", &Level::INFO));
        assert!(!events_filter(EventsLevel::Off).would_enable("herald::server", &Level::ERROR));
    }

    #[test]
    fn a_bare_level_applies_to_herald_while_third_party_crates_stay_at_warn() {
        let filter = stderr_filter("debug").unwrap().to_string();
        assert!(filter.contains("herald=debug"), "{filter}");
        assert!(filter.contains("warn"), "{filter}");
        let quiet = stderr_filter("error").unwrap().to_string();
        assert!(!quiet.contains("warn"), "{quiet}");
        // A directive for herald itself is the user's; a third-party directive is kept.
        let explicit = stderr_filter("herald=trace,sled=debug,info")
            .unwrap()
            .to_string();
        assert!(explicit.contains("herald=trace"), "{explicit}");
        assert!(!explicit.contains("herald=info"), "{explicit}");
        assert!(explicit.contains("sled=debug"), "{explicit}");
    }
}
