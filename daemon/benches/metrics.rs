//! What the Prometheus exporter costs a data-plane core: one counter increment, one histogram
//! sample, one request's whole record (`DiskMetrics::start` + `finish`), a counter looked up by
//! name (the rare-path `count_request`), the same increment from two threads at once, and on
//! the scrape thread's side the upkeep (draining samples) and a render (of one disk, and of a
//! node with 24 disks). docs/METRICS.md quotes the results.
//!
//! Benchmark ids are `metrics/<what>`; times are per call. Run:
//! `cargo bench -p shingle-daemon --bench metrics` (add `-- --test` for a one-iteration smoke
//! run).

use std::hint::black_box;
use std::rc::Rc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use proto::wire::{Opcode, Status};
use shingle_daemon::metrics::{self, CoreMetrics, DiskMetrics, REQUESTS_TOTAL, StoreMetrics};

/// Samples recorded between two upkeeps in the histogram benchmarks (about what a busy core
/// records in the second between two upkeeps of the scrape thread).
const SAMPLES_PER_UPKEEP: u64 = 100_000;

fn bench(c: &mut Criterion) {
    let recorder = metrics::local_recorder().expect("recorder");
    let handle = recorder.handle();
    // Handles made under the local recorder stay bound to it (as handles made after `install`
    // stay bound to the global one).
    let (disk, store, counter) = ::metrics::with_local_recorder(&recorder, || {
        metrics::describe_all();
        let disk = DiskMetrics::new(0);
        let store = StoreMetrics::new(disk.disk());
        let counter = ::metrics::counter!("shingle_bench_total");
        (disk, store, counter)
    });
    let mut group = c.benchmark_group("metrics");
    // The clock reads a request record makes (two: start and finish).
    group.bench_function("clock_std_instant", |b| b.iter(|| black_box(Instant::now())));
    group.bench_function("clock_quanta_instant", |b| b.iter(|| black_box(quanta::Instant::now())));
    group.bench_function("counter_increment", |b| b.iter(|| counter.increment(black_box(1))));
    group.bench_function("gauge_set", |b| {
        b.iter(|| disk.queue_depth.set(black_box(3.0)));
    });
    // Histogram samples pile up until an upkeep drains them: time the recording only, with an
    // (untimed) upkeep every SAMPLES_PER_UPKEEP samples, as the scrape thread does.
    group.bench_function("histogram_record", |b| {
        b.iter_custom(|iters| {
            timed_with_upkeep(iters, &handle, || store.sync_seconds.record(black_box(0.0004)))
        });
    });
    group.bench_function("request_record", |b| {
        b.iter_custom(|iters| {
            timed_with_upkeep(iters, &handle, || disk.start(Opcode::Get).finish(Status::Ok, 4096))
        });
    });
    group.bench_function("counter_by_name", |b| {
        ::metrics::with_local_recorder(&recorder, || {
            b.iter(|| {
                ::metrics::counter!(REQUESTS_TOTAL, "disk" => "0", "op" => "put", "status" => "busy")
                    .increment(1);
            });
        });
    });
    // Both cores of a 2-core machine on one counter: what sharing a handle across cores would
    // cost (the daemon gives each core its own handles).
    group.bench_function("counter_increment_two_threads_same_counter", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            std::thread::scope(|s| {
                s.spawn(|| (0..iters).for_each(|_| counter.increment(1)));
                (0..iters).for_each(|_| counter.increment(1));
            });
            start.elapsed()
        });
    });
    group.bench_function("upkeep_per_100k_samples", |b| {
        b.iter_custom(|iters| {
            let mut took = Duration::ZERO;
            for _ in 0..iters {
                for _ in 0..SAMPLES_PER_UPKEEP {
                    store.sync_seconds.record(0.0004);
                }
                let start = Instant::now();
                handle.run_upkeep();
                took += start.elapsed();
            }
            took
        });
    });
    group.bench_function("render_one_disk", |b| b.iter(|| black_box(handle.render())));
    eprintln!("one disk: {} bytes of exposition", handle.render().len());
    // A full node: 24 disks on 2 cores, every disk op seen once.
    let node = metrics::local_recorder().expect("recorder");
    let node_handle = node.handle();
    let _handles = ::metrics::with_local_recorder(&node, || {
        metrics::describe_all();
        let cores: Vec<CoreMetrics> = (0..2).map(CoreMetrics::new).collect();
        let disks: Vec<(Rc<DiskMetrics>, StoreMetrics)> = (0..24)
            .map(|id| {
                let disk = DiskMetrics::new(id);
                for op in [Opcode::Put, Opcode::Get, Opcode::Delete, Opcode::Stat, Opcode::List] {
                    disk.start(op).finish(Status::Ok, 4096);
                }
                let store = StoreMetrics::new(disk.disk());
                store.sync_seconds.record(0.0004);
                (disk, store)
            })
            .collect();
        (cores, disks)
    });
    group.bench_function("render_24_disks", |b| b.iter(|| black_box(node_handle.render())));
    eprintln!("24 disks: {} bytes of exposition", node_handle.render().len());
    group.finish();
}

/// Runs `record` `iters` times and returns the time spent in it, with an untimed upkeep after
/// every [`SAMPLES_PER_UPKEEP`] calls.
fn timed_with_upkeep(
    iters: u64,
    handle: &metrics::PrometheusHandle,
    mut record: impl FnMut(),
) -> Duration {
    let mut took = Duration::ZERO;
    let mut left = iters;
    while left > 0 {
        let n = left.min(SAMPLES_PER_UPKEEP);
        let start = Instant::now();
        for _ in 0..n {
            record();
        }
        took += start.elapsed();
        handle.run_upkeep();
        left -= n;
    }
    took
}

criterion_group!(benches, bench);
criterion_main!(benches);
