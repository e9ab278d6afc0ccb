//! `docs/protocol.md` §4.5, durability: with the default `sync` durability, every event whose
//! publish was answered 204 survives a SIGKILL of the server under load, Seq has no holes and no
//! duplicates after the restart, and the epoch is unchanged.
//!
//! `scripts/crash-loop.sh` runs this test many times; `HERALD_CRASH_LOAD_MS` and
//! `HERALD_CRASH_PUBLISHERS` set how long the load runs before the kill and how many threads
//! publish.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::{Options, Server, assert_contiguous, unique};
use serde_json::json;

/// How long publishers run before the kill, unless `HERALD_CRASH_LOAD_MS` says otherwise.
const DEFAULT_LOAD: Duration = Duration::from_millis(1500);
/// Publisher threads, unless `HERALD_CRASH_PUBLISHERS` says otherwise.
const DEFAULT_PUBLISHERS: usize = 4;
/// Fewest acknowledged events before the kill, so that a run always tests something.
const MIN_ACKNOWLEDGED: usize = 50;

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name}={v:?} is not a number"))
        })
        .unwrap_or(default)
}

fn start_on(dir: &tempfile::TempDir) -> Server {
    Server::start_with(Options {
        data_dir: Some(dir.path().to_path_buf()),
        ..Options::default()
    })
}

/// Publishes single events as fast as the server answers until `stop` is set or the server
/// is gone; returns `(Herald-Seq, id)` of every event answered 204.
fn publish_until_gone(
    base_url: &str,
    authorization: &str,
    kind: &str,
    publisher: usize,
    stop: &AtomicBool,
) -> Vec<(u64, String)> {
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .new_agent();
    let url = format!("{base_url}/api/v3/events");
    let mut acknowledged = Vec::new();
    for n in 0.. {
        if stop.load(Ordering::Acquire) {
            break;
        }
        let id = format!("p{publisher}-{n}");
        let body = json!({"Type": kind, "Action": "save", "Key": id, "Object": {"Id": id}});
        let Ok(response) = agent
            .post(&url)
            .header("Authorization", authorization)
            .header("Content-Type", "application/json")
            .send(body.to_string().as_bytes())
        else {
            // Refused or cut off: the server was killed, and this event may or may not be stored.
            break;
        };
        if response.status() != 204 {
            continue;
        }
        let seq = response
            .headers()
            .get("Herald-Seq")
            .and_then(|v| v.to_str().ok()?.trim().parse().ok())
            .unwrap_or_else(|| panic!("a 204 without a numeric Herald-Seq: {response:?}"));
        acknowledged.push((seq, id));
    }
    acknowledged
}

#[test]
fn every_acknowledged_event_survives_a_sigkill_under_load() {
    let load = Duration::from_millis(env_number(
        "HERALD_CRASH_LOAD_MS",
        DEFAULT_LOAD.as_millis() as u64,
    ));
    let publishers = env_number("HERALD_CRASH_PUBLISHERS", DEFAULT_PUBLISHERS as u64) as usize;
    let dir = tempfile::tempdir().expect("a data directory");
    let server = start_on(&dir);
    let epoch = server.info()["Epoch"].clone();
    let kind = unique("crash");
    let base_url = server.base_url();
    let authorization = server.admin().header_value().expect("basic credentials");

    let stop = AtomicBool::new(false);
    let acknowledged = Mutex::new(Vec::<(u64, String)>::new());
    thread::scope(|scope| {
        let handles: Vec<_> = (0..publishers)
            .map(|publisher| {
                let (base_url, authorization, kind, stop) =
                    (&base_url, &authorization, &kind, &stop);
                scope.spawn(move || {
                    publish_until_gone(base_url, authorization, kind, publisher, stop)
                })
            })
            .collect();
        // The kill comes after `load`, once enough events were acknowledged; probe the log's
        // progress through /api/v3/info meanwhile.
        let started = Instant::now();
        let deadline = started + load + Duration::from_secs(20);
        loop {
            let last = server.info()["LastSeq"].as_u64().unwrap_or(0);
            if started.elapsed() >= load && last >= MIN_ACKNOWLEDGED as u64 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "only {last} events were stored in time"
            );
            thread::sleep(Duration::from_millis(20));
        }
        server.kill();
        stop.store(true, Ordering::Release);
        for handle in handles {
            let published = handle.join().expect("a publisher thread");
            acknowledged.lock().expect("lock").extend(published);
        }
    });
    let acknowledged = acknowledged.into_inner().expect("lock");
    assert!(
        acknowledged.len() >= MIN_ACKNOWLEDGED / 2,
        "too few events acknowledged to test anything: {}",
        acknowledged.len()
    );

    let server = start_on(&dir);
    let info = server.info();
    assert_eq!(info["Epoch"], epoch, "a crash keeps the epoch");
    let first = info["FirstSeq"].as_u64().expect("FirstSeq");
    let logged = server.read_log(&server.admin(), 0, None);
    let logged_seqs = common::seqs(&logged);
    // herald logs connections as events of its own, so the log may have grown since the info.
    let last = logged_seqs.last().copied().unwrap_or(0);
    assert!(info["LastSeq"].as_u64() <= Some(last), "{info}");
    assert_contiguous(&logged_seqs, first, last);
    let by_seq: BTreeMap<u64, &serde_json::Value> =
        logged_seqs.iter().copied().zip(logged.iter()).collect();
    let mut lost = Vec::new();
    for (seq, id) in &acknowledged {
        match by_seq.get(seq) {
            Some(e) if e["Type"] == kind.as_str() && e["Object"]["Id"] == id.as_str() => {}
            found => lost.push(format!("Seq {seq} ({id}): found {found:?}")),
        }
    }
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged events are not in the log after the crash:\n{}",
        lost.len(),
        acknowledged.len(),
        lost.join("\n")
    );
    let mut ids = HashSet::new();
    for e in logged.iter().filter(|e| e["Type"] == kind.as_str()) {
        let id = e["Object"]["Id"].as_str().unwrap_or_default();
        assert!(ids.insert(id.to_owned()), "event {id} is stored twice");
    }
    let next = server.publish(common::event(&kind, "save", "after-crash"));
    assert!(next > last, "Seq continues after the crash");
    let logged_seqs = common::seqs(&server.read_log(&server.admin(), 0, None));
    assert_contiguous(
        &logged_seqs,
        first,
        logged_seqs.last().copied().unwrap_or(0),
    );

    let acknowledged_max = acknowledged.iter().map(|(s, _)| *s).max().unwrap_or(0);
    println!(
        "crash run: acknowledged={} max_acknowledged_seq={} last_seq_after_restart={} \
         stored_unacknowledged={} publishers={publishers} load_ms={}",
        acknowledged.len(),
        acknowledged_max,
        last,
        ids.len() - acknowledged.len(),
        load.as_millis()
    );
    server.terminate();
}
