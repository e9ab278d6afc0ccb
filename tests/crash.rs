//! `docs/protocol.md` §4.5, durability: with the default `sync` durability, every event whose
//! publish was answered 204 survives a SIGKILL of the server under load, Seq has no holes and no
//! duplicates after the restart, and the epoch is unchanged. With `batched`, a SIGKILL may take
//! back the newest events, but no Seq that was answered or delivered is ever given to another
//! event in the same epoch, and every client that resumes gets exactly what it missed or
//! `Recovered: false`.
//!
//! `scripts/crash-loop.sh` runs these tests many times; `HERALD_CRASH_LOAD_MS` and
//! `HERALD_CRASH_PUBLISHERS` set how long the load runs before the kill and how many threads
//! publish.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::{Client, Options, Server, assert_contiguous, eventually, unique};
use serde_json::json;

/// How long publishers run before the kill, unless `HERALD_CRASH_LOAD_MS` says otherwise.
const DEFAULT_LOAD: Duration = Duration::from_millis(1500);
/// Publisher threads, unless `HERALD_CRASH_PUBLISHERS` says otherwise.
const DEFAULT_PUBLISHERS: usize = 4;
/// Fewest acknowledged events before the kill, so that a run always tests something.
const MIN_ACKNOWLEDGED: usize = 50;
/// Websocket clients watching the published events until the kill (`batched`).
const WATCHERS: usize = 3;
/// Longest a watcher waits for the next frame before the kill ends its stream.
const WATCH_TIMEOUT: Duration = Duration::from_secs(30);

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name}={v:?} is not a number"))
        })
        .unwrap_or(default)
}

fn start_on(dir: &tempfile::TempDir, durability: &str) -> Server {
    Server::start_with(Options::in_dir(dir.path()).and_args(&["--durability", durability]))
}

fn load_settings() -> (Duration, usize) {
    let load = Duration::from_millis(env_number(
        "HERALD_CRASH_LOAD_MS",
        DEFAULT_LOAD.as_millis() as u64,
    ));
    let publishers = env_number("HERALD_CRASH_PUBLISHERS", DEFAULT_PUBLISHERS as u64) as usize;
    (load, publishers)
}

/// Runs `publishers` threads publishing events of `kind` for `load` (and until enough were
/// stored), then SIGKILLs the server; returns `(Herald-Seq, id)` of every event answered 204.
fn publish_then_kill(
    server: Server,
    kind: &str,
    publishers: usize,
    load: Duration,
) -> Vec<(u64, String)> {
    let base_url = server.base_url();
    let authorization = server.admin().header_value().expect("basic credentials");
    let stop = AtomicBool::new(false);
    let acknowledged = Mutex::new(Vec::<(u64, String)>::new());
    thread::scope(|scope| {
        let handles: Vec<_> = (0..publishers)
            .map(|publisher| {
                let (base_url, authorization, stop) = (&base_url, &authorization, &stop);
                scope.spawn(move || {
                    publish_until_gone(base_url, authorization, kind, publisher, stop)
                })
            })
            .collect();
        // The kill comes after `load`, once enough events were acknowledged; probe the log's
        // progress through /api/v3/info meanwhile.
        let started = Instant::now();
        eventually(
            &format!("{MIN_ACKNOWLEDGED} events stored after {load:?}"),
            load + Duration::from_secs(20),
            || {
                let last = server.info()["LastSeq"].as_u64().unwrap_or(0);
                if started.elapsed() >= load && last >= MIN_ACKNOWLEDGED as u64 {
                    Ok(())
                } else {
                    Err(format!("{last} stored"))
                }
            },
        );
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
    acknowledged
}

/// `(Seq, Object.Id)` of every event `client` receives until its server is killed.
fn watch_until_gone(mut client: Client) -> Vec<(u64, String)> {
    let mut seen = Vec::new();
    loop {
        match client.try_next_event(WATCH_TIMEOUT) {
            Ok(Some(event)) => {
                if let Some(seq) = event["Seq"].as_u64() {
                    let id = event["Object"]["Id"].as_str().unwrap_or_default();
                    seen.push((seq, id.to_owned()));
                }
            }
            Ok(None) => panic!("no event and no end of the stream within {WATCH_TIMEOUT:?}"),
            Err(_) => return seen,
        }
    }
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

/// No two acknowledgements share a Seq, and each publisher's Seqs grow in the order its
/// publishes were answered (ids are `p<publisher>-<n>`, in `acknowledged` in answer order).
fn assert_distinct_and_increasing_per_publisher(acknowledged: &[(u64, String)]) {
    let mut seqs = HashSet::new();
    let mut newest = BTreeMap::<&str, u64>::new();
    for (seq, id) in acknowledged {
        assert!(seqs.insert(*seq), "Seq {seq} was acknowledged twice");
        let publisher = id.split('-').next().unwrap_or_default();
        let before = newest.insert(publisher, *seq).unwrap_or(0);
        assert!(
            *seq > before,
            "{publisher} was answered Seq {seq} after Seq {before}"
        );
    }
}

#[test]
fn every_acknowledged_event_survives_a_sigkill_under_load() {
    let (load, publishers) = load_settings();
    let dir = tempfile::tempdir().expect("a data directory");
    let server = start_on(&dir, "sync");
    let epoch = server.info()["Epoch"].clone();
    let kind = unique("crash");
    let acknowledged = publish_then_kill(server, &kind, publishers, load);

    let server = start_on(&dir, "sync");
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
    assert_distinct_and_increasing_per_publisher(&acknowledged);
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

#[test]
fn after_a_sigkill_under_batched_no_seq_is_reused_and_every_resume_is_exact_or_not_recovered() {
    let (load, publishers) = load_settings();
    let dir = tempfile::tempdir().expect("a data directory");
    let server = start_on(&dir, "batched");
    let epoch = server.info()["Epoch"]
        .as_str()
        .expect("an Epoch")
        .to_owned();
    let kind = unique("crash");
    let filter = format!("{kind}.*.*");
    let watchers: Vec<Client> = (0..WATCHERS)
        .map(|_| {
            let mut client = server.ws(&server.admin());
            client.register(&filter);
            client
        })
        .collect();
    let (acknowledged, seen) = thread::scope(|scope| {
        let watching: Vec<_> = watchers
            .into_iter()
            .map(|client| scope.spawn(move || watch_until_gone(client)))
            .collect();
        let acknowledged = publish_then_kill(server, &kind, publishers, load);
        let seen: Vec<Vec<(u64, String)>> = watching
            .into_iter()
            .map(|watcher| watcher.join().expect("a watcher thread"))
            .collect();
        (acknowledged, seen)
    });
    // Every Seq a client learned before the kill, from a 204 or from its stream, with its event.
    let mut shown = BTreeMap::<u64, String>::new();
    for (seq, id) in acknowledged.iter().chain(seen.iter().flatten()) {
        let before = shown.insert(*seq, id.clone());
        assert!(
            before.as_ref().is_none_or(|before| before == id),
            "before the kill, Seq {seq} was both {before:?} and {id}"
        );
    }

    let server = start_on(&dir, "batched");
    let info = server.info();
    assert_eq!(info["Epoch"], epoch.as_str(), "a crash keeps the epoch");
    let after = server.publish(common::event(&kind, "save", "after-crash"));
    let highest_shown = shown.keys().next_back().copied().unwrap_or(0);
    assert!(
        after > highest_shown,
        "the first event after the restart got Seq {after}, not above Seq {highest_shown} handed out before the kill"
    );
    let logged = server.read_log_through(&server.admin(), 0, Some(&filter), after);
    let by_seq: BTreeMap<u64, String> = logged
        .iter()
        .map(|e| {
            let seq = e["Seq"].as_u64().expect("a Seq");
            (
                seq,
                e["Object"]["Id"]
                    .as_str()
                    .unwrap_or("after-crash")
                    .to_owned(),
            )
        })
        .collect();
    let mut lost = 0;
    for (seq, id) in &shown {
        match by_seq.get(seq) {
            Some(stored) => assert_eq!(
                stored, id,
                "Seq {seq} was handed out for {id} before the kill and now holds {stored}"
            ),
            None => lost += 1,
        }
    }

    let mut not_recovered = 0;
    for watched in &seen {
        let resume = watched.last().map_or(0, |(seq, _)| *seq);
        let mut client = server.ws(&server.admin());
        client.register(&filter);
        let reply = client.command(&format!("replay {resume} {epoch}"));
        assert_eq!(reply["Action"], "replay", "{reply}");
        if reply["Object"]["Recovered"] == false {
            not_recovered += 1;
            client.close();
            continue;
        }
        assert_eq!(reply["Object"]["Recovered"], true, "{reply}");
        // Recovered: exactly every stored event after the resume point, in order, then `after`.
        let got: Vec<(u64, String)> = client
            .events_through(after)
            .iter()
            .filter_map(|e| {
                let seq = e["Seq"].as_u64()?;
                Some((
                    seq,
                    e["Object"]["Id"]
                        .as_str()
                        .unwrap_or("after-crash")
                        .to_owned(),
                ))
            })
            .collect();
        let expected: Vec<(u64, String)> = by_seq
            .range(resume + 1..)
            .map(|(seq, id)| (*seq, id.clone()))
            .collect();
        assert_eq!(got, expected, "a recovered resume from Seq {resume}");
        for (seq, _) in shown.range(resume + 1..) {
            assert!(
                by_seq.contains_key(seq),
                "a resume from Seq {resume} answered Recovered: true although Seq {seq}, handed out before the kill, is gone"
            );
        }
        client.close();
    }

    let lost_acknowledged = acknowledged
        .iter()
        .filter(|(seq, _)| !by_seq.contains_key(seq))
        .count();
    println!(
        "batched crash run: acknowledged={} lost_acknowledged={lost_acknowledged} shown={} \
         lost_shown={lost} max_shown_seq={highest_shown} first_seq_after_restart={after} \
         watchers={} not_recovered={not_recovered} publishers={publishers} load_ms={}",
        acknowledged.len(),
        shown.len(),
        seen.len(),
        load.as_millis()
    );
    server.terminate();
}

#[test]
fn a_sigkill_under_batched_skips_the_reserved_seqs_and_a_clean_stop_skips_none() {
    let dir = tempfile::tempdir().expect("a data directory");
    let kind = unique("reserve");
    let filter = format!("{kind}.*.*");
    let server = start_on(&dir, "batched");
    let epoch = server.info()["Epoch"]
        .as_str()
        .expect("an Epoch")
        .to_owned();
    let stored = server.publish(common::event(&kind, "save", "before-kill"));
    server.read_log_through(&server.admin(), stored - 1, Some(&filter), stored);
    server.kill();

    let server = start_on(&dir, "batched");
    let info = server.info();
    assert_eq!(info["Epoch"], epoch.as_str());
    assert!(info["FirstSeq"].as_u64() <= Some(stored), "{info}");
    let next = server.publish(common::event(&kind, "save", "after-kill"));
    // herald's own events (connections, log records) fill the log around ours: the gap is the
    // one jump in the log's Seqs, from the last event stored before the kill.
    let all = common::seqs(&server.read_log(&server.admin(), 0, None));
    let jumps: Vec<(u64, u64)> = all
        .windows(2)
        .filter(|pair| pair[1] > pair[0] + 1)
        .map(|pair| (pair[0], pair[1]))
        .collect();
    let [(stored_end, after_gap)] = jumps[..] else {
        panic!("after the kill the log should skip one run of Seqs: {jumps:?} in {all:?}");
    };
    let mark = after_gap - 1;
    assert!(stored_end >= stored && mark < next, "{all:?}");
    let mut client = server.ws(&server.admin());
    client.register(&filter);
    for (resume, recovered) in [
        (stored - 1, false),
        (stored_end, false),
        (stored_end + 1, false),
        (mark - 1, false),
        (mark, true),
        (next + 1_000_000, false),
    ] {
        let reply = client.command(&format!("replay {resume} {epoch}"));
        assert_eq!(
            reply["Object"]["Recovered"], recovered,
            "replay {resume} with the stored end at {stored_end} and the mark at {mark}: {reply}"
        );
        assert!(reply["Object"]["LastSeq"].as_u64() >= Some(next), "{reply}");
    }
    // A replay that is not recovered streams from after the skipped Seqs, without a close.
    client.command(&format!("replay 0 {epoch}"));
    let streamed = client.events_through(next);
    assert!(
        common::seqs(&streamed[1..]).iter().all(|seq| *seq > mark),
        "{streamed:?}"
    );
    let logged = common::seqs(&server.read_log(&server.admin(), 0, Some(&filter)));
    assert_eq!(
        logged,
        vec![stored, next],
        "GET /api/v3/events jumps over the gap"
    );
    client.close();
    server.terminate();

    let server = start_on(&dir, "batched");
    let info = server.info();
    assert_eq!(info["Epoch"], epoch.as_str());
    let last = info["LastSeq"].as_u64().expect("LastSeq");
    let first_after_clean_stop = server.publish(common::event(&kind, "save", "after-stop"));
    let mut client = server.ws(&server.admin());
    client.register(&filter);
    let reply = client.command(&format!("replay {next} {epoch}"));
    assert_eq!(
        reply["Object"]["Recovered"], true,
        "a clean stop leaves no gap: {reply}"
    );
    client.close();
    assert_eq!(
        server
            .read_log(&server.admin(), last, None)
            .first()
            .and_then(|e| e["Seq"].as_u64()),
        Some(last + 1),
        "the log goes on right after its last event (published {first_after_clean_stop})"
    );
    server.terminate();
}
