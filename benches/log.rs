//! Event log throughput: append + flush (group commit) per batch size, replay reads, and the
//! open-time scan that proves the log contiguous.

use std::time::{Duration, SystemTime};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use herald::store::EventLog;

/// A typical DRP event is a few hundred bytes; 600 bytes is a representative `Object` save.
const EVENT_BYTES: usize = 600;
/// Events held in the log for the read and open benches.
const PREFILLED_EVENTS: u64 = 100_000;
/// Events per replay page, the HTTP `limit` default.
const READ_PAGE: usize = 1_000;

fn event_body() -> Vec<u8> {
    let mut body = br#"{"Type":"machines","Action":"save","Key":"m","Object":""#.to_vec();
    body.resize(EVENT_BYTES - 2, b'x');
    body.extend_from_slice(br#""}"#);
    body
}

fn append_batch(log: &mut EventLog, body: &[u8], size: u64) {
    let start = log.last_seq() + 1;
    let batch: Vec<(u64, &[u8])> = (start..start + size).map(|seq| (seq, body)).collect();
    log.append(&batch, SystemTime::now()).expect("append");
}

fn prefilled(dir: &tempfile::TempDir) -> (sled::Db, EventLog) {
    let db = sled::open(dir.path()).expect("open sled");
    let mut log = EventLog::open(&db).expect("open log");
    let body = event_body();
    while log.last_seq() < PREFILLED_EVENTS {
        append_batch(&mut log, &body, 1_000);
    }
    log.flush().expect("flush");
    (db, log)
}

fn append_and_flush(c: &mut Criterion) {
    let body = event_body();
    let mut group = c.benchmark_group("append_flush");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(5));
    for size in [1u64, 64, 1024] {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = sled::open(dir.path()).expect("open sled");
        let mut log = EventLog::open(&db).expect("open log");
        group.throughput(Throughput::Elements(size));
        group.bench_with_input(BenchmarkId::from_parameter(size), &size, |b, &size| {
            b.iter(|| {
                append_batch(&mut log, &body, size);
                log.flush().expect("flush");
            });
        });
    }
    group.finish();
}

fn read_after(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_db, log) = prefilled(&dir);
    let reader = log.reader();
    let mut group = c.benchmark_group("read_after");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(5));
    group.throughput(Throughput::Elements(READ_PAGE as u64));
    let mut after = 0;
    group.bench_function(BenchmarkId::from_parameter(READ_PAGE), |b| {
        b.iter(|| {
            let page = reader.read_after(after, READ_PAGE).expect("read");
            after = page.last().map_or(0, |(seq, _)| *seq) % (PREFILLED_EVENTS - READ_PAGE as u64);
            page
        });
    });
    group.finish();
}

fn open_scan(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, log) = prefilled(&dir);
    drop(log);
    let mut group = c.benchmark_group("open_scan");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(5));
    group.throughput(Throughput::Elements(PREFILLED_EVENTS));
    group.bench_function(BenchmarkId::from_parameter(PREFILLED_EVENTS), |b| {
        b.iter(|| EventLog::open(&db).expect("open log"));
    });
    group.finish();
}

criterion_group!(benches, append_and_flush, read_after, open_scan);
criterion_main!(benches);
