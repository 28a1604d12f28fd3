//! `store-vs-fio`: drives shingle's per-disk store (no network: `Store::put` and `Store::get`
//! on one pinned core) and fio on the same preallocated file in the same run, alternating the
//! two, and reports medians side by side with ratios: durable PUT at 4 KiB, 64 KiB and 1 MiB
//! with 1 and 64 writers under both sync modes (RWF_DSYNC and write + fdatasync), and 4 KiB
//! random GET with 32 in flight. See `benches/BENCHMARKING.md` ("Store (step 2)") for how to
//! reproduce the numbers and what each one means.

#![forbid(unsafe_code)]
#![expect(clippy::print_stdout, reason = "a benchmark binary prints its report on stdout")]

use std::cell::{Cell, RefCell};
use std::fmt;
use std::fs::OpenOptions;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;
use ioengine::Core;
use ioengine::buf::AlignedBuf;
use ioengine::device::{Disk, DiskOptions};
use serde::Serialize;
use shingle_benches::fio::{
    Direction, FioRun, TimedJob, fio_version, run_fio_detailed, shell_line,
};
use shingle_benches::measure::{
    CpuSample, DeviceIo, Latency, Measurement, Metrics, XorShift64Star, key_of, latency_histogram,
    median, parse_size_bytes, record_latency, seed_from_clock, ticks_s,
};
use shingle_benches::system::SystemInfo;
use shingle_benches::testfile::{self, TestFile};
use shingle_daemon::store::format::{Superblock, record_bytes};
use shingle_daemon::store::{
    self, BATCH_BYTES, CHECKPOINT_INTERVAL_BYTES_DEFAULT, FormatOptions, PIPELINE_DEPTH,
    PutOutcome, Store, StoreConfig, StoreError, SyncMode,
};

/// Zone size of the file-backed disk in full mode (`DiskOptions::zone_size_bytes`).
const ZONE_SIZE_BYTES: u64 = 256 << 20;
/// `--smoke`: zone size, file size, seconds per run, runs.
const SMOKE_ZONE_SIZE_BYTES: u64 = 16 << 20;
const SMOKE_FILE_SIZE_BYTES: u64 = 256 << 20;
const SMOKE_RUNTIME_S: u64 = 1;
const SMOKE_RUNS: u64 = 1;
/// Fewest zones of the disk: the superblock zone, two checkpoint sets and room for the log.
const ZONES_MIN: u64 = 8;
/// Smallest zone: room for a batch of the largest value with its headers, several times.
const ZONE_SIZE_MIN_BYTES: u64 = 16 << 20;
/// Largest test file (1 TiB): a bound on what a typo can ask of the disk.
const FILE_SIZE_MAX_BYTES: u64 = 1 << 40;
/// Bounds of `--runtime`, `--runs` and `--writers`.
const RUNTIME_S_MAX: u64 = 3600;
const RUNS_MAX: u64 = 100;
const WRITERS_MAX: usize = 4096;
/// Largest value this benchmark stores; the disk is formatted with it as its value limit.
const VALUE_BYTES_MAX: u32 = 1 << 20;
/// Block size of a file-backed disk (`ioengine::device::disk::FILE_BLOCK_BYTES`).
const BLOCK_BYTES: u64 = 4096;
/// Submission queue entries of the store's ring.
const RING_ENTRIES: u32 = 256;
/// GET: tasks, each with one GET in flight (fio `--iodepth=32`), and the value size.
const GET_TASKS: usize = 32;
const GET_VALUE_BYTES: usize = 4096;
/// Filling the store before the GET runs: concurrent writers (many, so group commit writes
/// large batches and the fill is quick) and a time limit.
const FILL_WRITERS: usize = 1024;
const FILL_RUNTIME_S_MAX: u64 = 1800;
/// The targets (from the issue) apply to this many concurrent writers.
const TARGET_WRITERS: usize = 64;
/// Targets: 1 MiB PUT MB/s >= 85% of fio's sequential write, 4 KiB PUT/s >= 2x fio's
/// fdatasync=1 IOPS, 4 KiB GET/s >= 85% of fio's random-read IOPS.
const PUT_1M_MB_RATIO_MIN: f64 = 0.85;
const PUT_4K_IOPS_RATIO_MIN: f64 = 2.0;
const GET_4K_IOPS_RATIO_MIN: f64 = 0.85;
/// fio queue depths of the references (the issue's command lines).
const FIO_SEQWRITE_IODEPTH: usize = 16;
const FIO_SYNC_WRITE_IODEPTH: usize = 64;
const FIO_RANDREAD_IODEPTH: usize = 32;
/// A sync-mode difference in PUT/s below this fraction is called a tie: the host moves more
/// than that between runs.
const SYNC_TIE_FRACTION: f64 = 0.05;
/// A run whose store thread waited for its CPU this share of the time or more is flagged.
const CPU_WAIT_WARN_PERCENT: f64 = 5.0;
/// Label of the issue's fio reference of each workload (the targets compare with it).
const FIO_REFERENCE: &str = "fio";
/// Name of the test file inside `--dir`, before the process id (two invocations at once, e.g.
/// two CI jobs on one machine, must not share a file).
const TEST_FILE_PREFIX: &str = "shingle-store-vs-fio";

const _: () = assert!(ZONE_SIZE_BYTES % ZONE_SIZE_MIN_BYTES == 0);
const _: () = assert!(SMOKE_ZONE_SIZE_BYTES >= ZONE_SIZE_MIN_BYTES);
const _: () = assert!(SMOKE_FILE_SIZE_BYTES >= ZONES_MIN * SMOKE_ZONE_SIZE_BYTES);
const _: () = assert!(ZONE_SIZE_MIN_BYTES >= 4 * (BATCH_BYTES as u64));
const _: () = assert!(ZONE_SIZE_MIN_BYTES >= 4 * (VALUE_BYTES_MAX as u64));
const _: () = assert!(GET_VALUE_BYTES as u32 <= VALUE_BYTES_MAX);

#[derive(Debug, Parser)]
#[command(
    name = "store-vs-fio",
    about = "shingle's per-disk store and fio on the same preallocated file, side by side",
    after_help = "Targets (64 writers): 1 MiB PUT MB/s >= 85% of fio's sequential write, 4 KiB \
                  PUT/s >= 2x fio's fdatasync=1 random-write IOPS, 4 KiB GET/s >= 85% of fio's \
                  random-read IOPS. A miss is reported, not an error; the exit status is \
                  non-zero only when something failed (fio missing or failing, a store error)."
)]
struct Args {
    /// Directory of the test file: the file system and device under test.
    #[arg(long, default_value = "/tmp")]
    dir: PathBuf,
    /// Test file size; K, M, G, T suffixes are binary (4G = 4 GiB). A multiple of the zone
    /// size (256 MiB), at least 8 zones, at most 1 TiB.
    #[arg(long, default_value = "4G", value_parser = parse_size_bytes)]
    size: u64,
    /// Seconds per run and side.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=RUNTIME_S_MAX))]
    runtime: u64,
    /// Runs per workload and side, alternating store and fio (S F S F ...).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=RUNS_MAX))]
    runs: u64,
    /// CPU that the store's core and fio are both pinned to. Default: the highest CPU this
    /// process may run on.
    #[arg(long)]
    cpu: Option<usize>,
    /// Workloads to run, comma separated (get-4k always runs first: it fills the store on a
    /// file that holds no store data of an earlier run).
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = WorkloadKind::ALL)]
    workloads: Vec<WorkloadKind>,
    /// Concurrent writer tasks of the PUT workloads, comma separated.
    #[arg(long, value_delimiter = ',', default_values_t = [1, TARGET_WRITERS])]
    writers: Vec<usize>,
    /// How the store makes a batch durable in the PUT workloads: RWF_DSYNC writes, plain
    /// writes followed by fdatasync, or both (each measured in every round).
    #[arg(long, value_enum, default_value_t = SyncChoice::Both)]
    sync: SyncChoice,
    /// Quick check that the benchmark works (256 MiB file of 16 MiB zones, 1 s per run, 1
    /// run); overrides --size, --runtime and --runs.
    #[arg(long)]
    smoke: bool,
    /// Print the report as JSON (same data as the table) instead of the table.
    #[arg(long)]
    json: bool,
    /// Also write the JSON report to this file (with the table on stdout).
    #[arg(long)]
    json_file: Option<PathBuf>,
    /// The fio executable.
    #[arg(long, default_value = "fio")]
    fio: PathBuf,
    /// An extra argument for every fio run (repeatable), e.g. --fio-arg=--fixedbufs.
    #[arg(long = "fio-arg", allow_hyphen_values = true)]
    fio_args: Vec<String>,
    /// Keep the test file afterwards.
    #[arg(long)]
    keep_file: bool,
}

/// The workloads of the issue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum, Serialize)]
enum WorkloadKind {
    /// GET of 4 KiB values at random, 32 in flight; fio: 4 KiB random reads at iodepth 32.
    #[value(name = "get-4k")]
    #[serde(rename = "get-4k")]
    Get4k,
    /// Durable PUT of 4 KiB values; fio: 4 KiB random writes with fdatasync=1.
    #[value(name = "put-4k")]
    #[serde(rename = "put-4k")]
    Put4k,
    /// Durable PUT of 64 KiB values; fio: 64 KiB random writes with fdatasync=1.
    #[value(name = "put-64k")]
    #[serde(rename = "put-64k")]
    Put64k,
    /// Durable PUT of 1 MiB values; fio: 1 MiB sequential writes at iodepth 16.
    #[value(name = "put-1m")]
    #[serde(rename = "put-1m")]
    Put1m,
}

impl WorkloadKind {
    const ALL: [WorkloadKind; 4] =
        [WorkloadKind::Get4k, WorkloadKind::Put4k, WorkloadKind::Put64k, WorkloadKind::Put1m];

    fn value_bytes(self) -> usize {
        match self {
            WorkloadKind::Put4k | WorkloadKind::Get4k => 4 << 10,
            WorkloadKind::Put64k => 64 << 10,
            WorkloadKind::Put1m => 1 << 20,
        }
    }

    fn is_put(self) -> bool {
        self != WorkloadKind::Get4k
    }

    /// The fio runs of the workload: first the issue's reference (the targets compare with
    /// it), then a second reference that explains the comparison.
    fn fio_jobs(self) -> Vec<FioJob> {
        let sync_write = |bs_bytes, label, iodepth, purpose| FioJob {
            label,
            purpose,
            rw: "randwrite",
            bs_bytes,
            blockalign_bytes: None,
            iodepth,
            fdatasync: true,
            direction: Direction::Write,
        };
        let sync_pair = |bs_bytes| {
            vec![
                sync_write(
                    bs_bytes,
                    FIO_REFERENCE,
                    FIO_SYNC_WRITE_IODEPTH,
                    "the issue's reference",
                ),
                sync_write(
                    bs_bytes,
                    "fio-qd1",
                    1,
                    "one write then its fdatasync at a time: the loop the issue's reference was \
                     meant to be",
                ),
            ]
        };
        match self {
            WorkloadKind::Put4k => sync_pair(4 << 10),
            WorkloadKind::Put64k => sync_pair(64 << 10),
            WorkloadKind::Put1m => vec![FioJob {
                label: FIO_REFERENCE,
                purpose: "the issue's reference",
                rw: "write",
                bs_bytes: 1 << 20,
                blockalign_bytes: None,
                iodepth: FIO_SEQWRITE_IODEPTH,
                fdatasync: false,
                direction: Direction::Write,
            }],
            WorkloadKind::Get4k => {
                let read = |bs_bytes, blockalign_bytes, label, purpose| FioJob {
                    label,
                    purpose,
                    rw: "randread",
                    bs_bytes,
                    blockalign_bytes,
                    iodepth: FIO_RANDREAD_IODEPTH,
                    fdatasync: false,
                    direction: Direction::Read,
                };
                vec![
                    read(4 << 10, None, FIO_REFERENCE, "the issue's reference"),
                    read(
                        8 << 10,
                        Some(4 << 10),
                        "fio-8k",
                        "8 KiB reads at 4 KiB-aligned offsets: what a GET reads on a format \
                         version 1 disk (header in front of the value)",
                    ),
                ]
            }
        }
    }

    /// What to keep in mind when reading the comparison.
    fn note(self) -> &'static str {
        match self {
            WorkloadKind::Put4k | WorkloadKind::Put64k => {
                "fio queues an fdatasync (IORING_OP_FSYNC, DATASYNC) after every write in the \
                 same ring, without waiting for the writes before it, and keeps --iodepth ops \
                 of both kinds in flight; concurrent fdatasyncs share device flushes. fio's \
                 write latency excludes the fdatasync (its own percentiles are below); a \
                 store PUT's latency includes its batch's durable write."
            }
            WorkloadKind::Put1m => {
                "fio writes without any sync: the reference is the device's plain sequential \
                 write bandwidth, while every store batch is durable before it is acknowledged. \
                 After each fio run the file is fdatasynced (timed, not in fio's numbers) so \
                 that the next store run does not flush fio's writes."
            }
            WorkloadKind::Get4k => {
                "a 4 KiB value is stored block-aligned, its header elsewhere in the batch (format \
                 version 2), and a GET reads its one block and checks it against the index; \
                 dev KiB/op shows the bytes the device read per GET (8 KiB on a version 1 disk, \
                 as fio-8k reads)."
            }
        }
    }
}

impl fmt::Display for WorkloadKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WorkloadKind::Put4k => "put-4k",
            WorkloadKind::Put64k => "put-64k",
            WorkloadKind::Put1m => "put-1m",
            WorkloadKind::Get4k => "get-4k",
        })
    }
}

/// `--sync`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum SyncChoice {
    Dsync,
    Fdatasync,
    Both,
}

/// One of the store's sync modes, as measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum SyncKind {
    /// `SyncMode::Dsync`: one write with RWF_DSYNC per batch.
    Dsync,
    /// `SyncMode::WriteThenFdatasync`: a plain write, then fdatasync, per batch.
    Fdatasync,
}

impl SyncKind {
    fn mode(self) -> SyncMode {
        match self {
            SyncKind::Dsync => SyncMode::Dsync,
            SyncKind::Fdatasync => SyncMode::WriteThenFdatasync,
        }
    }

    fn label(self) -> &'static str {
        match self {
            SyncKind::Dsync => "dsync",
            SyncKind::Fdatasync => "fdsync",
        }
    }
}

/// The byte range of the test file a fio run works on (fio `--offset`, `--size`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
struct Region {
    offset_bytes: u64,
    size_bytes: u64,
}

/// Where the store keeps its log in the test file: the zones after the superblock zone and
/// the two checkpoint sets. fio's runs are confined to it: the checkpoint writer resets its
/// zones before writing (FALLOC_FL_ZERO_RANGE on a file: unwritten extents), and fio reading
/// those would get zeroes without any device I/O, writing them would convert extents.
#[derive(Debug, Clone, Copy, Serialize)]
struct Layout {
    zone_count: u32,
    first_data_zone: u32,
    log: Region,
}

/// One fio run of a workload.
#[derive(Debug, Clone, Copy, Serialize)]
struct FioJob {
    /// [`FIO_REFERENCE`] for the issue's reference, another name for a second reference.
    label: &'static str,
    purpose: &'static str,
    rw: &'static str,
    bs_bytes: usize,
    /// fio `--blockalign` when it differs from the block size.
    blockalign_bytes: Option<usize>,
    iodepth: usize,
    fdatasync: bool,
    direction: Direction,
}

/// A fio run's command line, for the report.
#[derive(Debug, Clone, Serialize)]
struct FioCommand {
    job: FioJob,
    command: String,
}

/// Who ran: the store (its sync mode for PUTs, and its concurrent tasks), or fio.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Side {
    Store { sync: Option<SyncKind>, tasks: usize },
    Fio { label: &'static str },
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Side::Store { sync: Some(sync), tasks } => write!(f, "{}/{tasks}", sync.label()),
            Side::Store { sync: None, tasks } => write!(f, "get/{tasks}"),
            Side::Fio { label } => f.write_str(label),
        }
    }
}

/// The settings of a whole invocation, after `--smoke` and validation.
#[derive(Debug, Clone, Serialize)]
struct Settings {
    dir: PathBuf,
    file: PathBuf,
    file_size_bytes: u64,
    zone_size_bytes: u64,
    runtime_s: u64,
    runs: u64,
    cpu: usize,
    workloads: Vec<WorkloadKind>,
    writers: Vec<usize>,
    syncs: Vec<SyncKind>,
    smoke: bool,
    fio: PathBuf,
    fio_extra_args: Vec<String>,
    keep_file: bool,
    json: bool,
    json_file: Option<PathBuf>,
    /// The block device (major, minor) holding `dir`, for /proc/diskstats.
    #[serde(skip)]
    device: Option<(u32, u32)>,
}

impl Settings {
    /// The store's variants of a workload, in the order each round runs them.
    fn variants(&self, kind: WorkloadKind) -> Vec<Side> {
        if !kind.is_put() {
            return vec![Side::Store { sync: None, tasks: GET_TASKS }];
        }
        self.syncs
            .iter()
            .flat_map(|&sync| {
                self.writers.iter().map(move |&tasks| Side::Store { sync: Some(sync), tasks })
            })
            .collect()
    }

    fn runtime(&self) -> Duration {
        Duration::from_secs(self.runtime_s)
    }
}

/// What the store's counters and the device said about one run, per operation.
#[derive(Debug, Clone, Copy, Default, Serialize)]
struct PerOp {
    /// Batches the store wrote per PUT: below 1 when group commit packed PUTs together.
    batches: Option<f64>,
    /// Log bytes the store wrote per PUT (records, batch headers, padding).
    log_bytes: Option<f64>,
    /// Bytes the device read and wrote, and cache flushes it completed, per operation
    /// (/proc/diskstats; other processes' I/O included).
    device_read_bytes: Option<f64>,
    device_write_bytes: Option<f64>,
    device_flushes: Option<f64>,
}

impl PerOp {
    fn new(ops: u64, device: Option<DeviceIo>, store: Option<StoreCounters>) -> PerOp {
        let per = |x: u64| if ops > 0 { Some(x as f64 / ops as f64) } else { None };
        // Only runs that wrote (PUT runs) have batches to count.
        let wrote = store.filter(|s| s.records > 0);
        PerOp {
            batches: wrote.and_then(|s| per(s.batches)),
            log_bytes: wrote.and_then(|s| per(s.log_bytes)),
            device_read_bytes: device.and_then(|d| per(d.read_bytes)),
            device_write_bytes: device.and_then(|d| per(d.write_bytes)),
            device_flushes: device.and_then(|d| per(d.flush_requests)),
        }
    }

    /// Each field's median over `runs` (None when no run has it).
    fn medians<'a>(runs: impl Iterator<Item = &'a PerOp> + Clone) -> PerOp {
        let of = |field: fn(&PerOp) -> Option<f64>| {
            let values: Vec<f64> = runs.clone().filter_map(field).collect();
            (!values.is_empty()).then(|| median(values))
        };
        PerOp {
            batches: of(|p| p.batches),
            log_bytes: of(|p| p.log_bytes),
            device_read_bytes: of(|p| p.device_read_bytes),
            device_write_bytes: of(|p| p.device_write_bytes),
            device_flushes: of(|p| p.device_flushes),
        }
    }
}

/// The store's counters over one run (a fresh store per PUT run, so from zero).
#[derive(Debug, Clone, Copy, Serialize)]
struct StoreCounters {
    batches: u64,
    records: u64,
    log_bytes: u64,
    checkpoints: u64,
}

/// fio's fdatasync latency (`jobs[0].sync.lat_ns`), which its write latency leaves out.
#[derive(Debug, Clone, Copy, Serialize)]
struct SyncLatency {
    syncs: u64,
    p50_us: f64,
    p99_us: f64,
}

#[derive(Debug, Clone, Serialize)]
struct RunRecord {
    run: u64,
    side: Side,
    #[serde(flatten)]
    measurement: Measurement,
    per_op: PerOp,
    device_io: Option<DeviceIo>,
    #[serde(skip_serializing_if = "Option::is_none")]
    store: Option<StoreCounters>,
    #[serde(skip_serializing_if = "Option::is_none")]
    fio_sync_latency: Option<SyncLatency>,
    /// The store's log filled up before `--runtime`: the run ended early (rates are over the
    /// time it ran).
    log_full: bool,
    /// fio runs without sync only: seconds the fdatasync after the run took (what its writes
    /// still needed to become durable; `testfile::flush`).
    #[serde(skip_serializing_if = "Option::is_none")]
    flush_after_s: Option<f64>,
    /// Store only: share of the run the core thread was runnable but waiting for its CPU
    /// (schedstat run delay), i.e. taken by other processes on the same CPU.
    #[serde(skip_serializing_if = "Option::is_none")]
    cpu_wait_percent: Option<f64>,
}

/// One side's medians over the runs.
#[derive(Debug, Clone, Serialize)]
struct SideMedians {
    side: Side,
    metrics: Metrics,
    per_op: PerOp,
}

/// Store ÷ fio of the medians. Throughput: > 1 is better; latency and CPU: < 1 is better.
#[derive(Debug, Clone, Serialize)]
struct Ratios {
    side: Side,
    /// The fio run compared with.
    reference: &'static str,
    iops: f64,
    mb_per_s: f64,
    lat_p50: f64,
    lat_p99: f64,
    lat_p999: f64,
    cpu_per_io: f64,
    cpu_all_per_io: f64,
}

#[derive(Debug, Clone, Serialize)]
struct Target {
    workload: WorkloadKind,
    side: Side,
    name: &'static str,
    rule: &'static str,
    ratio: f64,
    pass: bool,
}

#[derive(Debug, Clone, Serialize)]
struct WorkloadReport {
    workload: WorkloadKind,
    value_bytes: usize,
    fio: Vec<FioCommand>,
    /// The part of the test file the fio runs used.
    fio_region: Region,
    note: &'static str,
    runs: Vec<RunRecord>,
    medians: Vec<SideMedians>,
    ratios: Vec<Ratios>,
    targets: Vec<Target>,
}

/// RWF_DSYNC against write + fdatasync for one PUT workload and writer count.
#[derive(Debug, Clone, Serialize)]
struct SyncComparison {
    workload: WorkloadKind,
    writers: usize,
    dsync_iops: f64,
    fdatasync_iops: f64,
    /// dsync ÷ fdatasync PUT/s.
    ratio: f64,
    dsync_lat_p99_us: f64,
    fdatasync_lat_p99_us: f64,
    dsync_cpu_all_per_io_us: f64,
    fdatasync_cpu_all_per_io_us: f64,
    better: &'static str,
}

#[derive(Debug, Clone, Serialize)]
struct Prefill {
    by: &'static str,
    command: String,
    bytes: u64,
    runtime_s: f64,
    mb_per_s: f64,
}

/// The store filled before the GET runs.
#[derive(Debug, Clone, Serialize)]
struct Fill {
    keys: u64,
    value_bytes: usize,
    writers: usize,
    log_bytes: u64,
    batches: u64,
    runtime_s: f64,
    puts_per_s: f64,
    mb_per_s: f64,
}

#[derive(Debug, Clone, Serialize)]
struct StoreSetup {
    value_bytes_max: u32,
    batch_bytes: usize,
    pipeline_depth: usize,
    checkpoint_interval_bytes: u64,
    ring_entries: u32,
}

#[derive(Debug, Clone, Serialize)]
struct Report {
    system: SystemInfo,
    settings: Settings,
    store: StoreSetup,
    layout: Layout,
    prefill: Prefill,
    get_fill: Option<Fill>,
    workloads: Vec<WorkloadReport>,
    targets: Vec<Target>,
    sync_comparison: Vec<SyncComparison>,
}

fn main() -> Result<()> {
    let settings = settings_from(Args::parse())?;
    let fio_version = fio_version(&settings.fio)?;
    let system = SystemInfo::collect(&settings.dir, fio_version)?;
    let file = TestFile::create(
        settings.file.clone(),
        settings.file_size_bytes,
        settings.keep_file,
        "store-vs-fio",
    )?;
    progress(format_args!(
        "prefilling {} ({} bytes) with fio",
        file.path().display(),
        settings.file_size_bytes
    ));
    let prefill = prefill(&settings)?;
    let layout = probe_layout(&settings)?;
    let mut workloads = Vec::with_capacity(settings.workloads.len());
    let mut get_fill = None;
    for &kind in &settings.workloads {
        let fill = if kind.is_put() {
            None
        } else {
            progress(format_args!("{kind}: filling the store with {GET_VALUE_BYTES}-byte values"));
            Some(run_fill(&settings)?)
        };
        workloads.push(run_workload(&settings, kind, &layout, fill.as_ref())?);
        get_fill = get_fill.or(fill);
    }
    let targets = workloads.iter().flat_map(|w| w.targets.iter().cloned()).collect();
    let sync_comparison = compare_sync_modes(&workloads, &settings.writers);
    let store = StoreSetup {
        value_bytes_max: VALUE_BYTES_MAX,
        batch_bytes: BATCH_BYTES,
        pipeline_depth: PIPELINE_DEPTH,
        checkpoint_interval_bytes: CHECKPOINT_INTERVAL_BYTES_DEFAULT,
        ring_entries: RING_ENTRIES,
    };
    let report = Report {
        system,
        settings,
        store,
        layout,
        prefill,
        get_fill,
        workloads,
        targets,
        sync_comparison,
    };
    let json = serde_json::to_string_pretty(&report)?;
    if let Some(path) = &report.settings.json_file {
        std::fs::write(path, &json).with_context(|| format!("writing {}", path.display()))?;
    }
    if report.settings.json {
        println!("{json}");
    } else {
        print_report(&report);
    }
    drop(file);
    Ok(())
}

/// Applies `--smoke`, picks the CPU, and checks the settings against the limits.
fn settings_from(args: Args) -> Result<Settings> {
    let (file_size_bytes, zone_size_bytes, runtime_s, runs) = if args.smoke {
        (SMOKE_FILE_SIZE_BYTES, SMOKE_ZONE_SIZE_BYTES, SMOKE_RUNTIME_S, SMOKE_RUNS)
    } else {
        (args.size, ZONE_SIZE_BYTES, args.runtime, args.runs)
    };
    ensure!(
        file_size_bytes % zone_size_bytes == 0
            && (ZONES_MIN * zone_size_bytes..=FILE_SIZE_MAX_BYTES).contains(&file_size_bytes),
        "--size {file_size_bytes} must be a multiple of the zone size {zone_size_bytes}, at least \
         {ZONES_MIN} zones and at most {FILE_SIZE_MAX_BYTES} bytes"
    );
    ensure!(!args.workloads.is_empty(), "--workloads names no workload");
    ensure!(
        !args.writers.is_empty() && args.writers.iter().all(|w| (1..=WRITERS_MAX).contains(w)),
        "--writers takes counts from 1 to {WRITERS_MAX}"
    );
    let allowed = ioengine::sys::allowed_cpus().context("reading this process's CPU affinity")?;
    let cpu = match args.cpu {
        Some(cpu) => {
            ensure!(
                allowed.contains(&cpu),
                "--cpu {cpu} is not one of the allowed CPUs {allowed:?}"
            );
            cpu
        }
        None => *allowed.last().context("this process may run on no CPU")?,
    };
    let dir = args
        .dir
        .canonicalize()
        .with_context(|| format!("--dir {}: no such directory", args.dir.display()))?;
    let dev = std::fs::metadata(&dir).with_context(|| format!("stat {}", dir.display()))?.dev();
    let file = dir.join(format!("{TEST_FILE_PREFIX}-{}.dat", std::process::id()));
    // fio splits --filename at ':' (several files); such a path would test another file.
    ensure!(
        !file.to_string_lossy().contains(':'),
        "the test file path {} contains ':', which fio reads as a file separator; pick another --dir",
        file.display()
    );
    // Canonical order, without repeats. The GET workload runs first: its fill and its reopens
    // must find nothing but the prefill's bytes outside what the fill wrote (recovery would
    // otherwise meet records of earlier PUT runs past the end of the fill's log).
    let mut workloads = args.workloads;
    workloads.sort();
    workloads.dedup();
    let mut writers = args.writers;
    writers.sort_unstable();
    writers.dedup();
    let syncs = match args.sync {
        SyncChoice::Dsync => vec![SyncKind::Dsync],
        SyncChoice::Fdatasync => vec![SyncKind::Fdatasync],
        SyncChoice::Both => vec![SyncKind::Dsync, SyncKind::Fdatasync],
    };
    Ok(Settings {
        dir,
        file,
        file_size_bytes,
        zone_size_bytes,
        runtime_s,
        runs,
        cpu,
        workloads,
        writers,
        syncs,
        smoke: args.smoke,
        fio: args.fio,
        fio_extra_args: args.fio_args,
        keep_file: args.keep_file,
        json: args.json,
        json_file: args.json_file,
        device: Some((libc::major(dev), libc::minor(dev))),
    })
}

/// Runs one workload: every store variant then fio, `--runs` times, and the medians, ratios
/// and targets.
fn run_workload(
    settings: &Settings,
    kind: WorkloadKind,
    layout: &Layout,
    fill: Option<&Fill>,
) -> Result<WorkloadReport> {
    let variants = settings.variants(kind);
    // PUT references write anywhere in the log zones; GET references read where the fill's
    // records are.
    let region = match fill {
        Some(fill) => Region {
            offset_bytes: layout.log.offset_bytes,
            size_bytes: fill.log_bytes / (1 << 20) * (1 << 20),
        },
        None => layout.log,
    };
    let jobs = kind.fio_jobs();
    let fio: Vec<FioCommand> = jobs
        .iter()
        .map(|&job| FioCommand {
            job,
            command: shell_line(&settings.fio, &fio_args(settings, kind, &job, region)),
        })
        .collect();
    let mut runs = Vec::with_capacity((variants.len() + jobs.len()) * settings.runs as usize);
    for run in 1..=settings.runs {
        for &side in &variants {
            progress(format_args!("{kind} run {run}/{}: store {side}", settings.runs));
            let outcome = run_store(settings, kind, side, fill)
                .with_context(|| format!("{kind} run {run}: the store side {side} failed"))?;
            runs.push(outcome.record(run, side));
        }
        for job in &jobs {
            progress(format_args!("{kind} run {run}/{}: {}", settings.runs, job.label));
            let args = fio_args(settings, kind, job, region);
            let outcome = run_fio_detailed(&settings.fio, &args, job.direction, settings.device)
                .with_context(|| format!("{kind} run {run}: {} failed", job.label))?;
            let mut record = fio_record(run, Side::Fio { label: job.label }, outcome);
            if job.direction == Direction::Write && !job.fdatasync {
                // What fio left in the device's cache is made durable now, not by the next
                // (store) run's first flushes.
                let took = testfile::flush(&settings.file)
                    .with_context(|| format!("{kind} run {run}: flushing after {}", job.label))?;
                record.flush_after_s = Some(took.as_secs_f64());
            }
            runs.push(record);
        }
    }
    let fio_sides: Vec<Side> = jobs.iter().map(|job| Side::Fio { label: job.label }).collect();
    let medians: Vec<SideMedians> =
        variants.iter().chain(&fio_sides).map(|&side| side_medians(&runs, side)).collect();
    let mut ratios_all = Vec::new();
    for fio in medians.iter().filter(|m| matches!(m.side, Side::Fio { .. })) {
        let Side::Fio { label } = fio.side else { unreachable!("filtered") };
        for store in medians.iter().filter(|m| matches!(m.side, Side::Store { .. })) {
            ratios_all.push(ratios(store, label, &fio.metrics));
        }
    }
    let targets = targets(kind, &ratios_all);
    Ok(WorkloadReport {
        workload: kind,
        value_bytes: kind.value_bytes(),
        fio,
        fio_region: region,
        note: kind.note(),
        runs,
        medians,
        ratios: ratios_all,
        targets,
    })
}

fn progress(message: fmt::Arguments<'_>) {
    eprintln!("store-vs-fio: {message}");
}

/// Writes the whole file once with fio (1 MiB sequential writes, then fsync), so that every
/// later write on either side overwrites written blocks (no unwritten-extent conversion, a
/// journal commit per durable write on ext4) and every fio read hits written blocks.
fn prefill(settings: &Settings) -> Result<Prefill> {
    let args = vec![
        "--name=shingle-prefill".to_owned(),
        format!("--filename={}", settings.file.display()),
        format!("--size={}", settings.file_size_bytes),
        "--rw=write".to_owned(),
        "--bs=1048576".to_owned(),
        format!("--iodepth={FIO_SEQWRITE_IODEPTH}"),
        "--direct=1".to_owned(),
        "--ioengine=io_uring".to_owned(),
        "--end_fsync=1".to_owned(),
        format!("--cpus_allowed={}", settings.cpu),
        "--lat_percentiles=1".to_owned(),
        "--output-format=json".to_owned(),
    ];
    let run = run_fio_detailed(&settings.fio, &args, Direction::Write, settings.device)
        .context("prefilling the test file with fio")?;
    let m = run.measurement;
    ensure!(
        m.bytes == settings.file_size_bytes,
        "the prefill wrote {} of {} bytes",
        m.bytes,
        settings.file_size_bytes
    );
    Ok(Prefill {
        by: "fio",
        command: shell_line(&settings.fio, &args),
        bytes: m.bytes,
        runtime_s: m.runtime_s,
        mb_per_s: m.mb_per_s,
    })
}

/// Formats the file once to learn where the store's log zones are (the checkpoint sets'
/// size depends on the disk's size).
fn probe_layout(settings: &Settings) -> Result<Layout> {
    on_store_core(settings, |settings| async move {
        let sb = format_disk(&open_disk(&settings, true)?).await?;
        let first_data_zone = sb.first_data_zone();
        let zone_bytes = settings.zone_size_bytes;
        Ok(Layout {
            zone_count: sb.zone_count,
            first_data_zone,
            log: Region {
                offset_bytes: u64::from(first_data_zone) * zone_bytes,
                size_bytes: u64::from(sb.zone_count - first_data_zone) * zone_bytes,
            },
        })
    })
}

// ---------------------------------------------------------------------------------------------
// The store side.

/// What one store run measured.
#[derive(Debug)]
struct StoreOutcome {
    measurement: Measurement,
    device_io: Option<DeviceIo>,
    counters: StoreCounters,
    log_full: bool,
    cpu_wait_percent: f64,
}

impl StoreOutcome {
    fn record(self, run: u64, side: Side) -> RunRecord {
        let ops = self.measurement.ios;
        RunRecord {
            run,
            side,
            per_op: PerOp::new(ops, self.device_io, Some(self.counters)),
            measurement: self.measurement,
            device_io: self.device_io,
            store: Some(self.counters),
            fio_sync_latency: None,
            log_full: self.log_full,
            flush_after_s: None,
            cpu_wait_percent: Some(self.cpu_wait_percent),
        }
    }
}

/// One store run of `side` on a fresh thread pinned to `--cpu`, with a core of its own.
fn run_store(
    settings: &Settings,
    kind: WorkloadKind,
    side: Side,
    fill: Option<&Fill>,
) -> Result<StoreOutcome> {
    let (sync, tasks) = match side {
        Side::Store { sync, tasks } => (sync, tasks),
        Side::Fio { .. } => unreachable!("fio runs in its own process"),
    };
    match (sync, fill) {
        (Some(sync), _) => {
            on_store_core(settings, move |s| put_run(s, kind.value_bytes(), sync.mode(), tasks))
        }
        (None, Some(fill)) => {
            let keys = fill.keys;
            on_store_core(settings, move |s| get_run(s, keys, tasks))
        }
        (None, None) => bail!("{kind}: the GET runs need a filled store"),
    }
}

/// Runs `body` on a new thread pinned to `--cpu`, inside a fresh `ioengine::Core`.
fn on_store_core<T, F, Fut>(settings: &Settings, body: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce(Settings) -> Fut + Send + 'static,
    Fut: Future<Output = Result<T>> + 'static,
{
    let settings = settings.clone();
    std::thread::Builder::new()
        .name("store-bench".to_owned())
        .spawn(move || {
            let cpu = settings.cpu;
            ioengine::sys::pin_current_thread(cpu)
                .with_context(|| format!("pinning the store thread to CPU {cpu}"))?;
            let core = Core::new(RING_ENTRIES).context("creating the ioengine core")?;
            core.block_on(body(settings))
        })
        .context("starting the store thread")?
        .join()
        .map_err(|_| anyhow!("the store thread panicked"))?
}

/// Opens the test file as a file-backed disk (zones of `Settings::zone_size_bytes`).
fn open_disk(settings: &Settings, fresh: bool) -> Result<Disk> {
    let options =
        DiskOptions { zone_size_bytes: settings.zone_size_bytes, fresh, ..DiskOptions::default() };
    Disk::open(&settings.file, &options)
        .with_context(|| format!("opening {} as a disk", settings.file.display()))
}

/// Formats `disk` (over whatever it holds) for values up to [`VALUE_BYTES_MAX`].
async fn format_disk(disk: &Disk) -> Result<Superblock> {
    let options = FormatOptions { value_bytes_max: VALUE_BYTES_MAX, checkpoint_zones_per_set: 0 };
    store::format(disk, &options, true).await.context("formatting the store")
}

fn store_config(sync: SyncMode) -> StoreConfig {
    StoreConfig { value_bytes_max: VALUE_BYTES_MAX, sync, ..StoreConfig::default() }
}

/// Formats the test file afresh and opens it. The file's blocks stay written (as fio's are),
/// so the store overwrites written blocks like fio does; what an earlier run left that
/// recovery would adopt is zeroed first (see [`scrub`]), and the open is checked to be empty.
async fn fresh_store(settings: &Settings, sync: SyncMode) -> Result<Rc<Store<Disk>>> {
    let disk = open_disk(settings, true)?;
    let superblock = format_disk(&disk).await?;
    scrub(settings, superblock.zone_count, superblock.first_data_zone())?;
    let store = Store::open(disk, store_config(sync))
        .await
        .context("opening the freshly formatted store")?;
    let log_bytes =
        u64::from(superblock.zone_count - superblock.first_data_zone()) * settings.zone_size_bytes;
    let report = store.recovery_report();
    ensure!(
        store.is_empty()
            && report.checkpoint_generation.is_none()
            && report.tail_records == 0
            && store.free_bytes() == log_bytes,
        "the freshly formatted store adopted an earlier run's data ({} keys, checkpoint {:?}, {} \
         tail records, {} of {log_bytes} log bytes free): the scrub missed something",
        store.len(),
        report.checkpoint_generation,
        report.tail_records,
        store.free_bytes()
    );
    Ok(store)
}

/// Zeroes, with O_DIRECT writes and an fdatasync, what would make the store's recovery adopt
/// an earlier run's data after a format that (on a file opened `fresh`) resets no zone: the
/// first block of every zone (checkpoint headers, batch records at zone starts) and the first
/// data zone's start, as far as recovery looks for a batch after a gap
/// ([`store::resync_window_bytes`] for batches up to [`BATCH_BYTES`] or two largest values). With nothing at
/// the start of the first data zone, recovery stops scanning there.
fn scrub(settings: &Settings, zone_count: u32, first_data_zone: u32) -> Result<()> {
    let batch_max_bytes = (BATCH_BYTES as u64).max(2 * u64::from(VALUE_BYTES_MAX));
    let window_bytes = store::resync_window_bytes(batch_max_bytes).min(settings.zone_size_bytes);
    let file = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(&settings.file)
        .with_context(|| format!("opening {} to scrub it", settings.file.display()))?;
    let mut zeros = AlignedBuf::new(window_bytes as usize, BLOCK_BYTES as usize);
    zeros.pad_to(window_bytes as usize);
    let zone_start = |zone: u32| u64::from(zone) * settings.zone_size_bytes;
    let scrubbing = || format!("scrubbing {}", settings.file.display());
    for zone in 1..zone_count {
        file.write_all_at(&zeros[..BLOCK_BYTES as usize], zone_start(zone))
            .with_context(scrubbing)?;
    }
    file.write_all_at(&zeros, zone_start(first_data_zone)).with_context(scrubbing)?;
    file.sync_data().with_context(scrubbing)
}

/// What the tasks of one store run share: when to stop, the next key, and the counts.
struct OpPlan {
    deadline: Instant,
    stopped: Cell<bool>,
    /// The log reached its reserve (or the store said NoSpace): no more PUTs.
    log_full: Cell<bool>,
    /// A PUT failed with NoSpace before the reserve was reached.
    no_space: Cell<bool>,
    /// Keep this many log bytes free: every PUT in flight, and a batch lost at a zone's end.
    reserve_bytes: u64,
    next_key: Cell<u64>,
    ops: Cell<u64>,
    latency_ns: RefCell<Histogram<u64>>,
}

impl OpPlan {
    fn new(runtime: Duration, reserve_bytes: u64) -> Result<OpPlan> {
        Ok(OpPlan {
            deadline: Instant::now() + runtime,
            stopped: Cell::new(false),
            log_full: Cell::new(false),
            no_space: Cell::new(false),
            reserve_bytes,
            next_key: Cell::new(0),
            ops: Cell::new(0),
            latency_ns: RefCell::new(latency_histogram()?),
        })
    }

    fn running(&self) -> bool {
        !self.stopped.get()
    }

    fn take_key(&self) -> u64 {
        let i = self.next_key.get();
        self.next_key.set(i + 1);
        i
    }

    fn record(&self, issued: Instant) {
        let completed = Instant::now();
        record_latency(&mut self.latency_ns.borrow_mut(), completed - issued);
        self.ops.set(self.ops.get() + 1);
        if completed >= self.deadline {
            self.stopped.set(true);
        }
    }

    fn stop_log_full(&self) {
        self.log_full.set(true);
        self.stopped.set(true);
    }
}

/// Log bytes to keep free while `writers` PUT `value_bytes` each: every writer's record in an
/// open or sealed batch, the tail of a zone too short for the next batch, and slack.
fn reserve_bytes(writers: usize, value_bytes: usize) -> u64 {
    let per_put = record_bytes(value_bytes as u32) as u64 + 2 * BLOCK_BYTES;
    (writers as u64 + 4) * per_put + 4 * BATCH_BYTES as u64
}

/// CPU and device counters sampled on the store's thread before and after a run.
#[derive(Debug, Clone, Copy)]
struct Sample {
    cpu: CpuSample,
    device: Option<DeviceIo>,
}

impl Sample {
    fn read(device: Option<(u32, u32)>) -> Result<Sample> {
        Ok(Sample { cpu: CpuSample::read()?, device: DeviceIo::read(device) })
    }
}

/// The numbers of one store run: operations, value bytes, wall time, latency, CPU time of
/// the core thread and of the whole process, and the device's counters.
fn store_measurement(
    plan: &OpPlan,
    value_bytes: usize,
    elapsed: Duration,
    before: &Sample,
    after: &Sample,
) -> (Measurement, Option<DeviceIo>) {
    let ops = plan.ops.get();
    let cpu_s = (after.cpu.thread_ns - before.cpu.thread_ns) as f64 / 1e9;
    let cpu_all_s = ticks_s(after.cpu.process_ticks - before.cpu.process_ticks);
    let mut m = Measurement::new(
        ops,
        ops * value_bytes as u64,
        elapsed.as_secs_f64(),
        Latency::of(&plan.latency_ns.borrow()),
        cpu_s,
        cpu_all_s,
    );
    let device_io = DeviceIo::delta(before.device, after.device);
    m.set_device(device_io.map(|io| io.counters()));
    (m, device_io)
}

/// Share of `elapsed` the sampling thread spent runnable but not running.
fn cpu_wait_percent(elapsed: Duration, before: &Sample, after: &Sample) -> f64 {
    let wait_ns = after.cpu.thread_wait_ns.saturating_sub(before.cpu.thread_wait_ns);
    wait_ns as f64 / elapsed.as_nanos().max(1) as f64 * 100.0
}

fn store_counters<D: ioengine::device::Device + 'static>(store: &Store<D>) -> StoreCounters {
    let stats = store.stats();
    StoreCounters {
        batches: stats.batches.get(),
        records: stats.records.get(),
        log_bytes: stats.log_bytes.get(),
        checkpoints: stats.checkpoints.get(),
    }
}

/// One PUT run: a fresh store, `writers` tasks each PUTting `value_bytes` under new keys until
/// `--runtime` (or a full log), then a clean close outside the measured time.
async fn put_run(
    settings: Settings,
    value_bytes: usize,
    sync: SyncMode,
    writers: usize,
) -> Result<StoreOutcome> {
    let store = fresh_store(&settings, sync).await?;
    let plan = Rc::new(OpPlan::new(settings.runtime(), reserve_bytes(writers, value_bytes))?);
    let before = Sample::read(settings.device)?;
    let started = Instant::now();
    let result = run_writers(&store, &plan, writers, value_bytes).await;
    let elapsed = started.elapsed();
    let after = Sample::read(settings.device)?;
    let counters = store_counters(&store);
    result?;
    ensure!(
        counters.records == plan.ops.get(),
        "the store wrote {} records for {} acknowledged PUTs",
        counters.records,
        plan.ops.get()
    );
    store.close().await.context("closing the store after the run")?;
    let (measurement, device_io) = store_measurement(&plan, value_bytes, elapsed, &before, &after);
    Ok(StoreOutcome {
        measurement,
        device_io,
        counters,
        log_full: plan.log_full.get(),
        cpu_wait_percent: cpu_wait_percent(elapsed, &before, &after),
    })
}

/// Spawns `writers` PUT tasks and waits for all; the first error wins.
async fn run_writers(
    store: &Rc<Store<Disk>>,
    plan: &Rc<OpPlan>,
    writers: usize,
    value_bytes: usize,
) -> Result<()> {
    let seed = seed_from_clock();
    let handles: Vec<_> = (0..writers as u64)
        .map(|w| {
            // Incompressible values, different per writer.
            let mut value = vec![0u8; value_bytes];
            XorShift64Star::new(seed.wrapping_add(w)).fill(&mut value);
            ioengine::spawn(put_writer(store.clone(), plan.clone(), value))
        })
        .collect();
    let mut first_error = None;
    for handle in handles {
        if let Err(err) = handle.await {
            first_error.get_or_insert(err);
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// One writer: PUTs `value` under a new key, waits for the acknowledgement, records the
/// latency, and goes again until the plan stops. A failed PUT stops every writer.
async fn put_writer(store: Rc<Store<Disk>>, plan: Rc<OpPlan>, value: Vec<u8>) -> Result<()> {
    while plan.running() {
        if store.free_bytes() < plan.reserve_bytes {
            plan.stop_log_full();
            break;
        }
        let i = plan.take_key();
        let key = key_of(i);
        let issued = Instant::now();
        match store.put(&key, &value).await {
            Ok(PutOutcome::Stored) => plan.record(issued),
            Ok(PutOutcome::AlreadyStored) => {
                plan.stopped.set(true);
                bail!("PUT of key #{i} found it already stored: the benchmark's keys collide");
            }
            Err(StoreError::NoSpace { .. }) => {
                plan.no_space.set(true);
                plan.stop_log_full();
            }
            Err(err) => {
                plan.stopped.set(true);
                return Err(err).with_context(|| format!("PUT of key #{i}"));
            }
        }
    }
    Ok(())
}

/// Fills a fresh store with 4 KiB values under keys 0.. until the log reaches its reserve,
/// then closes it cleanly (a checkpoint), for the GET runs.
fn run_fill(settings: &Settings) -> Result<Fill> {
    on_store_core(settings, |settings| async move {
        let store = fresh_store(&settings, SyncMode::default()).await?;
        let runtime = Duration::from_secs(FILL_RUNTIME_S_MAX);
        let plan = Rc::new(OpPlan::new(runtime, reserve_bytes(FILL_WRITERS, GET_VALUE_BYTES))?);
        let started = Instant::now();
        run_writers(&store, &plan, FILL_WRITERS, GET_VALUE_BYTES).await?;
        let runtime_s = started.elapsed().as_secs_f64();
        ensure!(!plan.no_space.get(), "the fill ran out of log space before its reserve");
        let keys = plan.ops.get();
        ensure!(
            keys == plan.next_key.get() && store.len() as u64 == keys,
            "the fill issued {} PUTs, {keys} were acknowledged, the index holds {} keys",
            plan.next_key.get(),
            store.len()
        );
        let counters = store_counters(&store);
        store.close().await.context("closing the store after the fill")?;
        let bytes = keys * GET_VALUE_BYTES as u64;
        Ok(Fill {
            keys,
            value_bytes: GET_VALUE_BYTES,
            writers: FILL_WRITERS,
            log_bytes: counters.log_bytes,
            batches: counters.batches,
            runtime_s,
            puts_per_s: keys as f64 / runtime_s,
            mb_per_s: bytes as f64 / runtime_s / 1e6,
        })
    })
}

/// One GET run: reopens the filled store (its open is not measured), then `tasks` tasks each
/// GET a random one of the `keys` keys, one at a time, until `--runtime`.
async fn get_run(settings: Settings, keys: u64, tasks: usize) -> Result<StoreOutcome> {
    let disk = open_disk(&settings, false)?;
    let store = Store::open(disk, store_config(SyncMode::default()))
        .await
        .context("reopening the store")?;
    ensure!(
        store.len() as u64 == keys,
        "the store holds {} keys, the fill wrote {keys}",
        store.len()
    );
    let plan = Rc::new(OpPlan::new(settings.runtime(), 0)?);
    let seed = seed_from_clock();
    let before = Sample::read(settings.device)?;
    let started = Instant::now();
    let handles: Vec<_> = (0..tasks as u64)
        .map(|t| {
            let rng = XorShift64Star::new(seed.wrapping_add(t));
            ioengine::spawn(get_reader(store.clone(), plan.clone(), keys, rng))
        })
        .collect();
    let mut first_error = None;
    for handle in handles {
        if let Err(err) = handle.await {
            first_error.get_or_insert(err);
        }
    }
    let elapsed = started.elapsed();
    let after = Sample::read(settings.device)?;
    if let Some(err) = first_error {
        return Err(err);
    }
    let counters = store_counters(&store);
    // Nothing was written: the next open finds the fill's clean checkpoint again.
    let (measurement, device_io) =
        store_measurement(&plan, GET_VALUE_BYTES, elapsed, &before, &after);
    Ok(StoreOutcome {
        measurement,
        device_io,
        counters,
        log_full: false,
        cpu_wait_percent: cpu_wait_percent(elapsed, &before, &after),
    })
}

/// One reader: GETs a random key's whole value, checks its length (the store verified its
/// checksums), records the latency, and goes again until the plan stops.
async fn get_reader(
    store: Rc<Store<Disk>>,
    plan: Rc<OpPlan>,
    keys: u64,
    mut rng: XorShift64Star,
) -> Result<()> {
    while plan.running() {
        let i = rng.below(keys);
        let issued = Instant::now();
        let value = match store.get(&key_of(i), None).await {
            Ok(value) => value,
            Err(err) => {
                plan.stopped.set(true);
                return Err(err).with_context(|| format!("GET of key #{i}"));
            }
        };
        plan.record(issued);
        ensure!(
            value.as_slice().len() == GET_VALUE_BYTES,
            "GET of key #{i} returned {} bytes, not {GET_VALUE_BYTES}",
            value.as_slice().len()
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The fio side.

/// fio's command line for `kind`: the issue's options plus file, size, time, CPU and JSON
/// output with total-latency percentiles.
fn fio_args(settings: &Settings, kind: WorkloadKind, job: &FioJob, region: Region) -> Vec<String> {
    let mut options = Vec::new();
    if let Some(align) = job.blockalign_bytes {
        options.push(format!("--blockalign={align}"));
    }
    if job.fdatasync {
        options.push("--fdatasync=1".to_owned());
    }
    TimedJob {
        name: if job.label == FIO_REFERENCE {
            format!("shingle-{kind}")
        } else {
            format!("shingle-{kind}-{}", job.label)
        },
        file: &settings.file,
        offset_bytes: region.offset_bytes,
        size_bytes: region.size_bytes,
        rw: job.rw,
        bs_bytes: job.bs_bytes,
        iodepth: job.iodepth,
        options,
        runtime_s: settings.runtime_s,
        cpu: settings.cpu,
        extra: &settings.fio_extra_args,
    }
    .args()
}

fn fio_record(run: u64, side: Side, fio: FioRun) -> RunRecord {
    let ops = fio.measurement.ios;
    RunRecord {
        run,
        side,
        per_op: PerOp::new(ops, fio.device_io, None),
        measurement: fio.measurement,
        device_io: fio.device_io,
        store: None,
        fio_sync_latency: fio.sync_latency.map(|(syncs, l)| SyncLatency {
            syncs,
            p50_us: l.p50_us,
            p99_us: l.p99_us,
        }),
        log_full: false,
        flush_after_s: None,
        cpu_wait_percent: None,
    }
}

// ---------------------------------------------------------------------------------------------
// Arithmetic over runs.

fn side_medians(runs: &[RunRecord], side: Side) -> SideMedians {
    let of_side = || runs.iter().filter(move |r| r.side == side);
    SideMedians {
        side,
        metrics: Metrics::medians(of_side().map(|r| &r.measurement)),
        per_op: PerOp::medians(of_side().map(|r| &r.per_op)),
    }
}

fn ratios(store: &SideMedians, reference: &'static str, fio: &Metrics) -> Ratios {
    let s = &store.metrics;
    Ratios {
        side: store.side,
        reference,
        iops: s.iops / fio.iops,
        mb_per_s: s.mb_per_s / fio.mb_per_s,
        lat_p50: s.lat_p50_us / fio.lat_p50_us,
        lat_p99: s.lat_p99_us / fio.lat_p99_us,
        lat_p999: s.lat_p999_us / fio.lat_p999_us,
        cpu_per_io: s.cpu_per_io_us / fio.cpu_per_io_us,
        cpu_all_per_io: s.cpu_all_per_io_us / fio.cpu_all_per_io_us,
    }
}

/// The issue's targets, for every store variant they apply to (64 writers, each sync mode),
/// against the issue's fio reference.
fn targets(kind: WorkloadKind, ratios: &[Ratios]) -> Vec<Target> {
    let applies = |r: &&Ratios| {
        r.reference == FIO_REFERENCE
            && match r.side {
                Side::Store { sync: Some(_), tasks } => tasks == TARGET_WRITERS,
                Side::Store { sync: None, .. } => true,
                Side::Fio { .. } => false,
            }
    };
    ratios
        .iter()
        .filter(applies)
        .filter_map(|r| {
            let (name, rule, ratio, min) = match kind {
                WorkloadKind::Put1m => {
                    ("MB/s", "store/fio >= 0.85", r.mb_per_s, PUT_1M_MB_RATIO_MIN)
                }
                WorkloadKind::Put4k => ("PUT/s", "store/fio >= 2", r.iops, PUT_4K_IOPS_RATIO_MIN),
                WorkloadKind::Get4k => {
                    ("GET/s", "store/fio >= 0.85", r.iops, GET_4K_IOPS_RATIO_MIN)
                }
                WorkloadKind::Put64k => return None,
            };
            Some(Target { workload: kind, side: r.side, name, rule, ratio, pass: ratio >= min })
        })
        .collect()
}

/// dsync against fdatasync, for every PUT workload and writer count that ran both.
fn compare_sync_modes(workloads: &[WorkloadReport], writers: &[usize]) -> Vec<SyncComparison> {
    let mut out = Vec::new();
    for w in workloads.iter().filter(|w| w.workload.is_put()) {
        for &tasks in writers {
            let find =
                |sync| w.medians.iter().find(|m| m.side == Side::Store { sync: Some(sync), tasks });
            let (Some(d), Some(f)) = (find(SyncKind::Dsync), find(SyncKind::Fdatasync)) else {
                continue;
            };
            let ratio = d.metrics.iops / f.metrics.iops;
            let better = if (ratio - 1.0).abs() < SYNC_TIE_FRACTION {
                "tie"
            } else if ratio > 1.0 {
                "dsync"
            } else {
                "fdatasync"
            };
            out.push(SyncComparison {
                workload: w.workload,
                writers: tasks,
                dsync_iops: d.metrics.iops,
                fdatasync_iops: f.metrics.iops,
                ratio,
                dsync_lat_p99_us: d.metrics.lat_p99_us,
                fdatasync_lat_p99_us: f.metrics.lat_p99_us,
                dsync_cpu_all_per_io_us: d.metrics.cpu_all_per_io_us,
                fdatasync_cpu_all_per_io_us: f.metrics.cpu_all_per_io_us,
                better,
            });
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The report.

fn print_report(report: &Report) {
    print_header(report);
    for workload in &report.workloads {
        print_workload(workload, &report.settings);
    }
    print_summary(report);
    println!();
    println!("ops/s: PUTs or GETs (store), I/Os (fio) per second. MB/s: value bytes (store), I/O");
    println!("bytes (fio), MB = 10^6 bytes. Latency: from the call to its return (store: PUT");
    println!("acknowledged durable, or GET verified), fio: lat_ns = slat + clat (no fdatasync).");
    println!("CPU %: of one CPU. CPU µs per op, thread: the store's core thread (fio: its job");
    println!("thread). All: the whole process (fio: its process tree), io_uring workers");
    println!("included; 10 ms resolution. batch/op: batches the store wrote per PUT (group");
    println!("commit). dev KiB/op: device KiB written (PUT) or read (GET) per op; flush/op:");
    println!("device cache flushes per op; device QD: requests in flight on the device on");
    println!("average (all from /proc/diskstats, other processes' I/O included). Rows \"÷fio\"");
    println!("are ratios store / fio of the medians (÷fio-qd1, ÷fio-8k: against the second");
    println!("reference): > 1 is better for ops/s and MB/s, < 1 for latency and CPU.");
}

fn print_header(report: &Report) {
    let s = &report.system;
    let settings = &report.settings;
    println!("store-vs-fio  {}", s.date_utc);
    println!("kernel   {} ({})", s.kernel_release, s.kernel_version);
    println!(
        "cpu      {} ({} online), the store's core and fio pinned to CPU {}",
        s.cpu_model, s.cpus_online, settings.cpu
    );
    println!(
        "fs       {} on {} ({}, mounted at {}, {})",
        settings.dir.display(),
        s.mount_source,
        s.fs_type,
        s.mount_point,
        s.mount_options
    );
    println!(
        "device   {} ({}), driver {}, scheduler {}, rotational {}, logical block {} B, cache {}",
        s.device,
        s.device_major_minor,
        s.device_driver.as_deref().unwrap_or("?"),
        s.device_scheduler.as_deref().unwrap_or("?"),
        s.device_rotational.map_or("?".to_owned(), |r| r.to_string()),
        s.device_logical_block_bytes.map_or("?".to_owned(), |b| b.to_string()),
        s.device_write_cache.as_deref().unwrap_or("?"),
    );
    println!(
        "file     {} ({} MiB, {} zones of {} MiB), {} run(s) per side of {} s{}",
        settings.file.display(),
        settings.file_size_bytes >> 20,
        settings.file_size_bytes / settings.zone_size_bytes,
        settings.zone_size_bytes >> 20,
        settings.runs,
        settings.runtime_s,
        if settings.smoke { " (smoke)" } else { "" },
    );
    let st = &report.store;
    println!(
        "store    file-backed Disk, fresh format per PUT run; values up to {} KiB, batches up to \
         {} KiB, {} batches in flight, checkpoint every {} MiB, ring of {} entries",
        st.value_bytes_max >> 10,
        st.batch_bytes >> 10,
        st.pipeline_depth,
        st.checkpoint_interval_bytes >> 20,
        st.ring_entries
    );
    println!(
        "prefill  by fio: the whole file, 1 MiB sequential O_DIRECT writes, then fsync ({:.0} MB/s)",
        report.prefill.mb_per_s
    );
    let l = &report.layout;
    println!(
        "log      zones {}..{} ({} MiB from offset {} MiB): the store's log; fio runs there too",
        l.first_data_zone,
        l.zone_count - 1,
        l.log.size_bytes >> 20,
        l.log.offset_bytes >> 20
    );
    if let Some(fill) = &report.get_fill {
        println!(
            "get fill {} keys of {} B by {} writers: {} MiB of log in {} batches, {:.1} s \
             ({:.0} PUT/s, {:.0} MB/s)",
            fill.keys,
            fill.value_bytes,
            fill.writers,
            fill.log_bytes >> 20,
            fill.batches,
            fill.runtime_s,
            fill.puts_per_s,
            fill.mb_per_s
        );
    }
    println!("fio      {}", s.fio_version);
}

fn print_workload(w: &WorkloadReport, settings: &Settings) {
    println!();
    let what = if w.workload.is_put() { "durable PUT" } else { "random GET" };
    println!(
        "== {}: {what} of {} KiB values, 32-byte keys, {} s per run ==",
        w.workload,
        w.value_bytes >> 10,
        settings.runtime_s
    );
    for fio in &w.fio {
        println!("{}: {} ({})", fio.job.label, fio.command, fio.job.purpose);
    }
    println!("note: {}", w.note);
    println!(
        "{:<9}{:<10}{:>9}{:>8}{:>10}{:>10}{:>10}{:>7}{:>8}{:>8}{:>8}{:>8}{:>8}{:>7}",
        "",
        "",
        "",
        "",
        "latency",
        "",
        "",
        "CPU",
        "CPU µs",
        "per op",
        "batch",
        "dev",
        "flush",
        "device"
    );
    println!(
        "{:<9}{:<10}{:>9}{:>8}{:>10}{:>10}{:>10}{:>7}{:>8}{:>8}{:>8}{:>8}{:>8}{:>7}",
        "run",
        "side",
        "ops/s",
        "MB/s",
        "p50 µs",
        "p99 µs",
        "p99.9 µs",
        "%",
        "thread",
        "all",
        "/op",
        "KiB/op",
        "/op",
        "QD"
    );
    let put = w.workload.is_put();
    for r in &w.runs {
        print_row(&r.run.to_string(), r.side, &Metrics::of(&r.measurement), &r.per_op, put);
    }
    for m in &w.medians {
        print_row("median", m.side, &m.metrics, &m.per_op, put);
    }
    for r in &w.ratios {
        println!(
            "{:<9}{:<10}{:>9.3}{:>8.3}{:>10.3}{:>10.3}{:>10.3}{:>7}{:>8.3}{:>8.3}",
            format!("÷{}", r.reference),
            r.side.to_string(),
            r.iops,
            r.mb_per_s,
            r.lat_p50,
            r.lat_p99,
            r.lat_p999,
            "",
            r.cpu_per_io,
            r.cpu_all_per_io
        );
    }
    for fio in &w.fio {
        let side = Side::Fio { label: fio.job.label };
        let syncs: Vec<SyncLatency> =
            w.runs.iter().filter(|r| r.side == side).filter_map(|r| r.fio_sync_latency).collect();
        if !syncs.is_empty() {
            let p50 = median(syncs.iter().map(|s| s.p50_us).collect());
            let p99 = median(syncs.iter().map(|s| s.p99_us).collect());
            println!(
                "{side} fdatasync latency (medians over runs): p50 {p50:.0} µs, p99 {p99:.0} µs"
            );
        }
    }
    print_flushes_after(w);
    for t in &w.targets {
        let verdict = if t.pass { "PASS" } else { "MISS" };
        println!(
            "target {verdict}: {} {} {} ({} is {:.3})",
            t.workload, t.side, t.name, t.rule, t.ratio
        );
    }
    for r in &w.runs {
        if let Some(wait) = r.cpu_wait_percent.filter(|&w| w >= CPU_WAIT_WARN_PERCENT) {
            println!(
                "note: run {} {}: the store's thread waited for its CPU {wait:.0}% of the run \
                 (other processes ran on CPU {})",
                r.run, r.side, settings.cpu
            );
        }
    }
    for r in w.runs.iter().filter(|r| r.log_full) {
        println!(
            "note: run {} {}: the log filled up after {:.1} s (of {} s); rates are over that time",
            r.run, r.side, r.measurement.runtime_s, settings.runtime_s
        );
    }
}

/// For unsynced fio runs: how long their writes took to become durable after the run, and the
/// rate at which fio made its bytes durable counting that flush, with the store's ratio to it.
fn print_flushes_after(w: &WorkloadReport) {
    for fio in &w.fio {
        let side = Side::Fio { label: fio.job.label };
        let flushed: Vec<(f64, f64)> = w
            .runs
            .iter()
            .filter(|r| r.side == side)
            .filter_map(|r| r.flush_after_s.map(|s| (s, durable_mb_per_s(&r.measurement, s))))
            .collect();
        if flushed.is_empty() {
            continue;
        }
        let flush = median(flushed.iter().map(|&(s, _)| s).collect());
        let durable = median(flushed.iter().map(|&(_, mb)| mb).collect());
        println!(
            "{side}: the fdatasync after each run took {flush:.3} s (median); counting it, fio \
             made its writes durable at {durable:.1} MB/s (median)"
        );
        for m in w.medians.iter().filter(|m| matches!(m.side, Side::Store { .. })) {
            println!(
                "÷{side}+flush {}: {:.3} of that durable rate",
                m.side,
                m.metrics.mb_per_s / durable
            );
        }
    }
}

/// MB/s of a run's bytes over its runtime plus the flush after it.
fn durable_mb_per_s(m: &Measurement, flush_after_s: f64) -> f64 {
    m.bytes as f64 / 1e6 / (m.runtime_s + flush_after_s)
}

fn print_row(run: &str, side: Side, m: &Metrics, per_op: &PerOp, put: bool) {
    let opt = |v: Option<f64>, scale: f64, precision: usize| {
        v.map_or_else(|| "-".to_owned(), |v| format!("{:.*}", precision, v / scale))
    };
    let device_bytes = if put { per_op.device_write_bytes } else { per_op.device_read_bytes };
    println!(
        "{:<9}{:<10}{:>9.0}{:>8.1}{:>10.1}{:>10.1}{:>10.1}{:>7.1}{:>8.2}{:>8.2}{:>8}{:>8}{:>8}{:>7.1}",
        run,
        side.to_string(),
        m.iops,
        m.mb_per_s,
        m.lat_p50_us,
        m.lat_p99_us,
        m.lat_p999_us,
        m.cpu_percent,
        m.cpu_per_io_us,
        m.cpu_all_per_io_us,
        opt(per_op.batches, 1.0, 3),
        opt(device_bytes, 1024.0, 1),
        opt(per_op.device_flushes, 1.0, 3),
        m.device_queue_depth
    );
}

fn print_summary(report: &Report) {
    println!();
    println!("== targets ==");
    for t in &report.targets {
        let verdict = if t.pass { "PASS" } else { "MISS" };
        println!(
            "{verdict}  {:<8} {:<10} {:<6} {:<18} {:.3}",
            t.workload, t.side, t.name, t.rule, t.ratio
        );
    }
    if report.sync_comparison.is_empty() {
        return;
    }
    println!();
    println!("== sync modes: RWF_DSYNC (dsync) against write + fdatasync (fdsync), medians ==");
    println!(
        "{:<9}{:>8}{:>11}{:>11}{:>8}{:>12}{:>12}{:>12}{:>12}  better",
        "workload",
        "writers",
        "dsync/s",
        "fdsync/s",
        "d÷f",
        "dsync p99",
        "fdsync p99",
        "dsync CPU",
        "fdsync CPU",
    );
    for c in &report.sync_comparison {
        println!(
            "{:<9}{:>8}{:>11.0}{:>11.0}{:>8.3}{:>12.0}{:>12.0}{:>12.1}{:>12.1}  {}",
            c.workload.to_string(),
            c.writers,
            c.dsync_iops,
            c.fdatasync_iops,
            c.ratio,
            c.dsync_lat_p99_us,
            c.fdatasync_lat_p99_us,
            c.dsync_cpu_all_per_io_us,
            c.fdatasync_cpu_all_per_io_us,
            c.better
        );
    }
    println!(
        "(p99 in µs; CPU in µs per PUT over all threads; a tie is within {:.0}%)",
        SYNC_TIE_FRACTION * 100.0
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variants_cover_every_sync_mode_and_writer_count() {
        let args = Args::parse_from(["store-vs-fio", "--smoke", "--writers", "1,64"]);
        let settings = settings_from(args).unwrap();
        let sides: Vec<String> =
            settings.variants(WorkloadKind::Put4k).iter().map(ToString::to_string).collect();
        assert_eq!(sides, ["dsync/1", "dsync/64", "fdsync/1", "fdsync/64"]);
        assert_eq!(settings.variants(WorkloadKind::Get4k), [Side::Store { sync: None, tasks: 32 }]);
    }

    #[test]
    fn get_runs_first_whatever_the_order_given() {
        let args = Args::parse_from(["store-vs-fio", "--smoke", "--workloads", "put-1m,get-4k"]);
        let settings = settings_from(args).unwrap();
        assert_eq!(settings.workloads, [WorkloadKind::Get4k, WorkloadKind::Put1m]);
    }

    #[test]
    fn fio_commands_are_the_issues() {
        let args = Args::parse_from(["store-vs-fio", "--smoke"]);
        let settings = settings_from(args).unwrap();
        let region = Region { offset_bytes: 48 << 20, size_bytes: 208 << 20 };
        let line =
            |kind: WorkloadKind| fio_args(&settings, kind, &kind.fio_jobs()[0], region).join(" ");
        let put4k = line(WorkloadKind::Put4k);
        assert!(put4k.contains("--rw=randwrite --bs=4096 --iodepth=64"), "{put4k}");
        assert!(put4k.contains("--fdatasync=1"), "{put4k}");
        let put1m = line(WorkloadKind::Put1m);
        assert!(put1m.contains("--rw=write --bs=1048576 --iodepth=16"), "{put1m}");
        assert!(!put1m.contains("fdatasync"), "{put1m}");
        let get = line(WorkloadKind::Get4k);
        assert!(get.contains("--rw=randread --bs=4096 --iodepth=32"), "{get}");
        assert!(get.contains("--direct=1 --ioengine=io_uring"), "{get}");
        let get8k =
            fio_args(&settings, WorkloadKind::Get4k, &WorkloadKind::Get4k.fio_jobs()[1], region);
        let get8k = get8k.join(" ");
        assert!(get8k.contains("--bs=8192 --iodepth=32") && get8k.contains("--blockalign=4096"));
        let qd1 =
            fio_args(&settings, WorkloadKind::Put4k, &WorkloadKind::Put4k.fio_jobs()[1], region);
        assert!(put4k.contains("--offset=50331648 --size=218103808"), "{put4k}");
        assert!(qd1.join(" ").contains("--iodepth=1 --direct=1"), "{qd1:?}");
    }

    #[test]
    fn targets_apply_to_64_writers_only() {
        let ratio = |sync, tasks, iops| Ratios {
            side: Side::Store { sync, tasks },
            reference: FIO_REFERENCE,
            iops,
            mb_per_s: iops,
            lat_p50: 1.0,
            lat_p99: 1.0,
            lat_p999: 1.0,
            cpu_per_io: 1.0,
            cpu_all_per_io: 1.0,
        };
        let put = [ratio(Some(SyncKind::Dsync), 1, 0.5), ratio(Some(SyncKind::Dsync), 64, 2.5)];
        let t = targets(WorkloadKind::Put4k, &put);
        assert_eq!(t.len(), 1);
        assert!(t[0].pass);
        let t = targets(WorkloadKind::Put1m, &put[1..]);
        assert!(t[0].pass && t[0].name == "MB/s");
        assert!(targets(WorkloadKind::Put64k, &put).is_empty());
        let get = [ratio(None, 32, 0.8)];
        assert!(!targets(WorkloadKind::Get4k, &get)[0].pass);
    }

    #[test]
    fn the_reserve_covers_every_writer_and_a_zone_tail() {
        let reserve = reserve_bytes(64, 1 << 20);
        assert!(reserve > 64 * (1 << 20) + BATCH_BYTES as u64);
        assert!(reserve < SMOKE_FILE_SIZE_BYTES / 2);
    }
}
