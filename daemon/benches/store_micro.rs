//! Microbenchmarks of the store's in-memory and CPU-only paths: the index (insert, lookup hit
//! and miss, memory per entry) and record packing (encoding a record into a batch buffer, with
//! the checksums computed in the same pass or handed over by the server).
//!
//! Benchmark ids: `index/insert_1M` (time per million inserts), `index/lookup_hit`,
//! `index/lookup_miss` (1M entries), `record/encode/<size>`,
//! `record/encode_checksummed/<size>`. The index's heap bytes per entry after 1M inserts are
//! printed on stderr. Run: `cargo bench -p shingle-daemon --bench store_micro` (add
//! `-- --test` for a one-iteration smoke run).

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use shingle_daemon::store::format::{self, Checksummed, RecordKind};
use shingle_daemon::store::index::Index;
use shingle_daemon::store::{Key, Location};

const ENTRIES: u32 = 1_000_000;

fn key(n: u32) -> Key {
    let mut key = [0u8; 32];
    let mixed = u64::from(n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    key[..8].copy_from_slice(&mixed.to_le_bytes());
    key[8..12].copy_from_slice(&n.to_le_bytes());
    key
}

fn location(n: u32) -> Location {
    Location::inline(3 + n / 60_000, (n % 60_000) * 4160, 4096)
}

fn filled(entries: u32) -> Index {
    let mut index = Index::new([7; 16]);
    for n in 0..entries {
        index.insert(&key(n), location(n), false);
    }
    index
}

fn index_benches(c: &mut Criterion) {
    let index = filled(ENTRIES);
    eprintln!(
        "index: {} entries, {} heap bytes, {:.1} bytes per entry",
        index.len(),
        index.heap_bytes(),
        index.heap_bytes() as f64 / index.len() as f64
    );
    let mut group = c.benchmark_group("index");
    group.sample_size(10);
    group.throughput(Throughput::Elements(u64::from(ENTRIES)));
    group.bench_function("insert_1M", |b| b.iter(|| black_box(filled(ENTRIES))));
    group.throughput(Throughput::Elements(1));
    let mut n = 0u32;
    group.bench_function("lookup_hit", |b| {
        b.iter(|| {
            n = (n + 7919) % ENTRIES;
            black_box(index.candidates(&key(n)))
        });
    });
    group.bench_function("lookup_miss", |b| {
        b.iter(|| {
            n = (n + 7919) % ENTRIES;
            black_box(index.candidates(&key(ENTRIES + n)))
        });
    });
    group.finish();
}

fn record_benches(c: &mut Criterion) {
    let mut group = c.benchmark_group("record");
    for (label, len) in [("4KiB", 4096usize), ("64KiB", 64 << 10), ("1MiB", 1 << 20)] {
        let value: Vec<u8> = (0..len).map(|i| (i * 31 + 7) as u8).collect();
        let mut out = vec![0u8; format::record_bytes(len as u32)];
        group.throughput(Throughput::Bytes(len as u64));
        group.bench_with_input(BenchmarkId::new("encode", label), &value, |b, value| {
            b.iter(|| format::encode_record(&mut out, RecordKind::Block, 42, &key(1), value));
        });
        let mut scratch = Vec::new();
        let checksummed = Checksummed::compute(&value, &mut scratch);
        group.bench_with_input(
            BenchmarkId::new("encode_checksummed", label),
            &checksummed,
            |b, checksummed| {
                b.iter(|| {
                    format::encode_record_checksummed(
                        &mut out,
                        RecordKind::Block,
                        42,
                        &key(1),
                        checksummed,
                    )
                });
            },
        );
    }
    group.finish();
}

criterion_group!(benches, index_benches, record_benches);
criterion_main!(benches);
