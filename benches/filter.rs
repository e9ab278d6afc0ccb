//! Filter matching, filter parsing and command parsing.
//!
//! Matching cost must stay flat as the index grows from 10 to 100,000 filters: an event probes at
//! most eight leaves whatever the number of registered filters.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use herald::wire::command;
use herald::wire::filter::{Filter, FilterIndex};

/// A stable, uuid-shaped key for machine `n`.
fn machine_uuid(n: usize) -> String {
    format!("3f2a{n:04x}-9c1e-4b7d-8a55-{n:012x}")
}

/// `size` filters: a few broad ones that every event may hit, the rest one machine each, as
/// when each runner watches its own machine.
fn index_of(size: usize) -> FilterIndex {
    let broad = [
        "*.*.*",
        "profiles.save,update.*",
        "machines.create,delete.*",
        "bootenvs.update.centos-7.6-install",
        "*.*.global",
    ];
    let mut index = FilterIndex::new();
    for id in 0..size {
        let text = match broad.get(id) {
            Some(text) => (*text).to_owned(),
            None => format!("machines.*.{}", machine_uuid(id)),
        };
        let filter = Filter::parse(&text).unwrap_or_else(|err| panic!("{err}"));
        index.insert(id as u32, &filter);
    }
    index
}

fn matching(c: &mut Criterion) {
    let mut group = c.benchmark_group("match_one_event");
    for size in [10, 10_000, 100_000] {
        let index = index_of(size);
        let watched = machine_uuid(size - 1);
        let events = [
            ("machines", "update", watched.as_str()),
            ("profiles", "save", "global"),
            ("leases", "create", "10.0.0.7"),
        ];
        group.bench_with_input(BenchmarkId::from_parameter(size), &index, |b, index| {
            b.iter(|| {
                let mut candidates = 0;
                for (ty, action, key) in events {
                    index.for_each_candidate(black_box(ty), action, key, |ids| {
                        candidates += ids.len()
                    });
                }
                black_box(candidates)
            })
        });
    }
    group.finish();
}

fn parsing(c: &mut Criterion) {
    let filters = [
        "*.*.*",
        "profiles.save,update.*",
        "connections.create.user:a.b@example.com",
        r"machines,leases.create,update,delete.3f2a0001-9c1e-4b7d-8a55-000000000001,a\1b",
    ];
    c.bench_function("parse_filter", |b| {
        b.iter(|| {
            for text in filters {
                let _ = black_box(Filter::parse(black_box(text)));
            }
        })
    });
    let frames = [
        "register machines.*.3f2a0001-9c1e-4b7d-8a55-000000000001",
        "deregister profiles.save,update.*",
        "replay 1042 4f1c6e0a",
        "frobnicate a.b.c",
    ];
    c.bench_function("parse_command", |b| {
        b.iter(|| {
            for frame in frames {
                let _ = black_box(command::parse(black_box(frame)));
            }
        })
    });
}

criterion_group!(benches, matching, parsing);
criterion_main!(benches);
