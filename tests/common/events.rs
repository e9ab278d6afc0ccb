//! The event log from outside: event bodies, info, paged reads and their Seqs.

use std::collections::HashSet;

use serde_json::{Value, json};

use super::{Auth, HttpReply, LOG_TIMEOUT, Server, eventually, herald_seq};

/// Builds an event body for publishing.
pub fn event(kind: &str, action: &str, key: &str) -> Value {
    json!({"Type": kind, "Action": action, "Key": key})
}

impl Server {
    /// `GET /api/v3/info` as the admin; asserts 200.
    pub fn info(&self) -> Value {
        let reply = self.get("/api/v3/info");
        assert_eq!(reply.status, 200, "info failed: {reply:?}");
        reply.json()
    }

    /// Reads `/api/v3/info` until `ready` holds and returns that answer; panics at the deadline.
    pub fn wait_for_info(&self, what: &str, ready: impl Fn(&Value) -> bool) -> Value {
        eventually(what, LOG_TIMEOUT, || {
            let info = self.info();
            if ready(&info) { Ok(info) } else { Err(info) }
        })
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
        eventually(&format!("the log serving Seq {seq}"), LOG_TIMEOUT, || {
            let events = self.read_log(auth, since, filter);
            match events.last().and_then(|e| e["Seq"].as_u64()) {
                Some(last) if last >= seq => Ok(events),
                last => Err(format!("last Seq {last:?}")),
            }
        })
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
    let present: HashSet<u64> = seqs.iter().copied().collect();
    let missing: Vec<u64> = (first..=last).filter(|s| !present.contains(s)).collect();
    let mut seen = HashSet::new();
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
