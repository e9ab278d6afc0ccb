//! Frame encoding: what one event costs between the publish body and the bytes every receiver
//! shares, for a 600-byte event shaped like DRP's profile example.
//!
//! - `parse_publish`: a publish body of 64 events parsed and validated (per event).
//! - `encode_frame`: a sequenced event closed with its `Seq` and framed, once for all receivers.
//! - `frame_from_stored`: a stored event re-framed for a replay.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use herald::wire::event::{EncodedEvent, parse_publish};

/// A profile save event of about 600 bytes of JSON.
fn profile_event(n: usize) -> String {
    format!(
        r#"{{"Type":"profiles","Action":"save","Key":"rack-{n}","Object":{{"Name":"rack-{n}","Description":"Rack {n} defaults","Documentation":"","Meta":{{"color":"blue","icon":"server","title":"RackN Content"}},"Params":{{"kernel-console":"console=ttyS1,115200","ntp-servers":["10.0.0.1","10.0.0.2"],"dns-servers":["10.0.0.53"],"access-keys":{{"operator":"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIK0example0key0material0here operator"}}}},"Profiles":[],"ReadOnly":false,"Available":true,"Validated":true,"Errors":[],"Endpoint":"","Bundle":"","Partial":false}}}}"#
    )
}

fn encoding(c: &mut Criterion) {
    const BATCH: usize = 64;
    let body = format!(
        "[{}]",
        (0..BATCH).map(profile_event).collect::<Vec<_>>().join(",")
    );
    let event_bytes = body.len() / BATCH;
    eprintln!("encoding benchmarks: {event_bytes} bytes per event");

    let mut group = c.benchmark_group("event");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("parse_publish", |b| {
        b.iter_batched_ref(
            || body.clone().into_bytes(),
            |bytes| black_box(parse_publish(bytes, "user:rocketskates")),
            criterion::BatchSize::SmallInput,
        )
    });

    let mut bytes = body.clone().into_bytes();
    let events = parse_publish(&mut bytes, "user:rocketskates").expect("a valid body");
    let prefixes: Vec<Vec<u8>> = events.iter().map(|e| e.body_prefix()).collect();
    group.bench_function("encode_frame", |b| {
        b.iter(|| {
            for (seq, (event, prefix)) in events.iter().zip(&prefixes).enumerate() {
                black_box(EncodedEvent::new(event, prefix, seq as u64 + 1));
            }
        })
    });

    let stored: Vec<Vec<u8>> = events
        .iter()
        .zip(&prefixes)
        .enumerate()
        .map(|(seq, (event, prefix))| {
            EncodedEvent::new(event, prefix, seq as u64 + 1)
                .json()
                .to_vec()
        })
        .collect();
    group.bench_function("frame_from_stored", |b| {
        b.iter(|| {
            for (seq, json) in stored.iter().enumerate() {
                black_box(EncodedEvent::from_stored(seq as u64 + 1, json));
            }
        })
    });
    group.finish();
}

criterion_group!(benches, encoding);
criterion_main!(benches);
