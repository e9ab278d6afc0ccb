//! herald's own recent activity, for the console's charts: one sample a second of events
//! published and delivered, open connections, slow-consumer closes and delivery lag, kept in a
//! bounded ring and served at `GET /api/v3/info/activity`.
//!
//! The sampler reads the same counters `/metrics` merges (the per-core counters and the log's
//! bounds, gathered by the caller into [`Totals`]), so a browser sees the server's numbers
//! without scraping Prometheus text.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

use crate::metrics::CoreTotals;
use crate::wire::http::{ApiError, RequestHead, Response};

/// Time between two samples.
pub(crate) const SAMPLE_EVERY: Duration = Duration::from_secs(1);
/// Samples kept: ten minutes at one a second, about 100 KB of JSON when served whole.
pub(crate) const SAMPLES_KEPT: usize = 600;

/// What happened during one interval, and what was open at its end.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Sample {
    /// Number of this sample since the server started (1, 2, …); `?after=` takes it.
    #[serde(rename = "Tick")]
    pub tick: u64,
    /// End of the interval, RFC 3339 in UTC.
    #[serde(rename = "Time")]
    pub time: String,
    /// Events sequenced into the log during the interval.
    #[serde(rename = "Published")]
    pub published: u64,
    /// Events written to websockets during the interval.
    #[serde(rename = "Delivered")]
    pub delivered: u64,
    /// Open websockets at the end of the interval.
    #[serde(rename = "Websockets")]
    pub websockets: u64,
    /// Open REST connections at the end of the interval.
    #[serde(rename = "ApiConnections")]
    pub api_connections: u64,
    /// Websockets closed as slow consumers during the interval.
    #[serde(rename = "SlowConsumerCloses")]
    pub slow_consumer_closes: u64,
    /// Mean delivery lag of the writes during the interval, in seconds (0 when none).
    #[serde(rename = "DeliveryLagSeconds")]
    pub delivery_lag_seconds: f64,
}

/// The ring of recent samples, shared by the sampler thread and the cores.
#[derive(Debug, Default)]
pub(crate) struct Activity {
    samples: Mutex<VecDeque<Sample>>,
}

impl Activity {
    /// The samples with a tick after `after`, oldest first.
    pub(crate) fn samples_after(&self, after: u64) -> Vec<Sample> {
        let samples = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        samples.iter().filter(|s| s.tick > after).cloned().collect()
    }

    fn push(&self, sample: Sample) {
        let mut samples = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        if samples.len() == SAMPLES_KEPT {
            samples.pop_front();
        }
        samples.push_back(sample);
    }
}

/// The counters a sample is the difference of, read at one moment.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Totals {
    last_seq: u64,
    delivered: u64,
    websockets: u64,
    api_connections: u64,
    slow_consumer_closes: u64,
    lag_micros: u64,
    lag_writes: u64,
}

impl Totals {
    /// The totals of the summed per-core counters and the log's newest Seq.
    pub(crate) fn new(cores: &CoreTotals, last_seq: u64) -> Totals {
        Totals {
            last_seq,
            delivered: cores.events_delivered,
            websockets: cores.websockets,
            api_connections: cores.api_connections,
            slow_consumer_closes: cores.slow_consumer_closes,
            lag_micros: cores.delivery_lag_micros,
            lag_writes: cores.delivery_lag_writes,
        }
    }

    /// The sample of the interval from `before` to `self`.
    fn since(&self, before: &Totals, tick: u64, time: SystemTime) -> Sample {
        let writes = self.lag_writes.saturating_sub(before.lag_writes);
        let lag_micros = self.lag_micros.saturating_sub(before.lag_micros);
        Sample {
            tick,
            time: humantime::format_rfc3339_seconds(time).to_string(),
            published: self.last_seq.saturating_sub(before.last_seq),
            delivered: self.delivered.saturating_sub(before.delivered),
            websockets: self.websockets,
            api_connections: self.api_connections,
            slow_consumer_closes: self
                .slow_consumer_closes
                .saturating_sub(before.slow_consumer_closes),
            delivery_lag_seconds: if writes == 0 {
                0.0
            } else {
                lag_micros as f64 / writes as f64 / 1e6
            },
        }
    }
}

/// Starts the sampler thread, which reads the totals with `read` and keeps the samples in
/// `activity`; it runs for the life of the process, as the metrics upkeep does.
pub(crate) fn start(
    activity: Arc<Activity>,
    read: impl Fn() -> Totals + Send + 'static,
) -> std::io::Result<()> {
    thread::Builder::new()
        .name("herald-activity".into())
        .spawn(move || {
            let mut before = read();
            let mut next = Instant::now() + SAMPLE_EVERY;
            for tick in 1.. {
                thread::sleep(next.saturating_duration_since(Instant::now()));
                // Scheduled from the start, so samples do not drift by the time each one takes.
                next += SAMPLE_EVERY;
                let now = read();
                activity.push(now.since(&before, tick, SystemTime::now()));
                before = now;
            }
        })
        .map(|_| ())
}

/// The answer of `GET /api/v3/info/activity?after=TICK`: the samples after that tick, and the
/// totals since the server started (`totals`, read now).
pub(crate) fn response(activity: &Activity, totals: Totals, head: &RequestHead) -> Response {
    let after = match head.query("after") {
        None => 0,
        Some(text) => match text.parse::<u64>() {
            Ok(after) => after,
            Err(_) => {
                return Response::error(ApiError::new(
                    400,
                    format!("after {text:?} is not a sample number (a non-negative whole number)"),
                ));
            }
        },
    };
    Response::json(
        200,
        &serde_json::json!({
            "IntervalSeconds": SAMPLE_EVERY.as_secs(),
            "Samples": activity.samples_after(after),
            "EventsDelivered": totals.delivered,
            "SlowConsumerCloses": totals.slow_consumer_closes,
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(tick: u64) -> Sample {
        Totals::default().since(&Totals::default(), tick, SystemTime::UNIX_EPOCH)
    }

    #[test]
    fn the_ring_keeps_only_the_newest_samples() {
        let activity = Activity::default();
        for tick in 1..=(SAMPLES_KEPT as u64 + 5) {
            activity.push(sample(tick));
        }
        let kept = activity.samples_after(0);
        assert_eq!(kept.len(), SAMPLES_KEPT);
        assert_eq!(kept.first().map(|s| s.tick), Some(6));
        assert_eq!(
            activity.samples_after(SAMPLES_KEPT as u64 + 3).len(),
            2,
            "after= skips what the caller has"
        );
    }

    #[test]
    fn a_sample_is_the_difference_of_two_readings_with_the_mean_lag() {
        let before = Totals {
            last_seq: 10,
            delivered: 100,
            slow_consumer_closes: 1,
            lag_micros: 1_000,
            lag_writes: 1,
            ..Totals::default()
        };
        let after = Totals {
            last_seq: 15,
            delivered: 130,
            websockets: 3,
            api_connections: 2,
            slow_consumer_closes: 2,
            lag_micros: 5_000,
            lag_writes: 5,
        };
        let s = after.since(&before, 7, SystemTime::UNIX_EPOCH);
        assert_eq!(
            (s.published, s.delivered, s.websockets, s.api_connections),
            (5, 30, 3, 2)
        );
        assert_eq!(s.slow_consumer_closes, 1);
        assert!((s.delivery_lag_seconds - 0.001).abs() < 1e-12);
        assert_eq!(s.time, "1970-01-01T00:00:00Z");
        let idle = after.since(&after, 8, SystemTime::UNIX_EPOCH);
        assert_eq!(idle.delivery_lag_seconds, 0.0, "no writes, no lag");
    }
}
