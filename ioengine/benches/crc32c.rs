//! crc32c throughput: shingle's `ioengine::checksum::crc32c` against both candidate crates
//! called directly (`crc-fast` and `crc32c`), so the choice recorded in docs/DECISIONS.md
//! ("Checksums") can be re-checked on any machine.
//!
//! Benchmark ids are `crc32c/<implementation>/<size>`, e.g. `crc32c/ioengine/64KiB`; results
//! are in bytes per second. Run: `cargo bench -p shingle-ioengine --bench crc32c` (add
//! `-- --test` for a one-iteration smoke run).

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

/// Input sizes: a 4 KiB block, one 64 KiB checksum chunk (`CHUNK_BYTES`), and a 1 MiB value.
const SIZES: [(&str, usize); 3] = [("4KiB", 4 * 1024), ("64KiB", 64 * 1024), ("1MiB", 1024 * 1024)];

/// Deterministic pseudo-random input (xorshift64), so every run hashes the same bytes.
fn input(len: usize) -> Vec<u8> {
    let mut state: u64 = 0x2545_F491_4F6C_DD1D;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()[0]
        })
        .collect()
}

fn bench_impl(c: &mut Criterion, name: &str, crc: fn(&[u8]) -> u32) {
    let mut group = c.benchmark_group(format!("crc32c/{name}"));
    for (label, len) in SIZES {
        let data = input(len);
        group.throughput(Throughput::Bytes(len as u64));
        group.bench_with_input(BenchmarkId::from_parameter(label), &data, |b, data| {
            b.iter(|| crc(black_box(data.as_slice())));
        });
    }
    group.finish();
}

fn via_crc_fast(bytes: &[u8]) -> u32 {
    crc_fast::crc32_iscsi(bytes)
}

fn crc32c_benches(c: &mut Criterion) {
    // Sanity: all three agree before anything is timed.
    let probe = input(100_003);
    let want = ioengine::checksum::crc32c(&probe);
    assert_eq!(via_crc_fast(&probe), want, "crc-fast disagrees with ioengine::checksum");
    assert_eq!(crc32c::crc32c(&probe), want, "crc32c crate disagrees with ioengine::checksum");

    bench_impl(c, "ioengine", ioengine::checksum::crc32c);
    bench_impl(c, "crc-fast", via_crc_fast);
    bench_impl(c, "crc32c-crate", crc32c::crc32c);
}

criterion_group!(benches, crc32c_benches);
criterion_main!(benches);
