//! `serve-vs-fio`: the real `shingled` over loopback, driven by the client library
//! (`proto::client`, shard-aware, requests pipelined from a few threads), against fio on the
//! same file system in the same run, alternating the two: durable 1 MiB PUT with 16 in flight
//! against fio's sequential write, 4 KiB random GET with 32 in flight against fio's random
//! read of the daemon's own disk file, and durable 4 KiB PUT with 64 in flight against fio's
//! random write with fdatasync=1. Reports medians, ratios, the targets, and CPU seconds per GB
//! moved on both sides. See `benches/BENCHMARKING.md` ("serve-vs-fio") for how to reproduce the
//! numbers and what each one means.

#![forbid(unsafe_code)]
#![expect(clippy::print_stdout, reason = "a benchmark binary prints its report on stdout")]

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use clap::{Parser, ValueEnum};
use proto::client::{Client, ClientOptions};
use proto::messages::DiskState;
use serde::Serialize;
use shingle_benches::fio::{
    Direction, FioRun, TimedJob, fio_version, run_fio_detailed, shell_line,
};
use shingle_benches::load::{self, LoadOutcome, LoadPlan, OpKind, Stop};
use shingle_benches::measure::{
    CpuSample, DeviceIo, Latency, Measurement, Metrics, median, parse_size_bytes, seed_from_clock,
    ticks_s,
};
use shingle_benches::node::{Node, NodeConfig, free_ports, shingled_binary};
use shingle_benches::system::SystemInfo;
use shingle_benches::testfile::{self, TestFile};
use shingle_daemon::server::SPACE_PUBLISH_INTERVAL;
use shingle_daemon::store::BATCH_BYTES;
use shingle_daemon::store::format::{BATCH_INFO_BYTES, record_bytes};

/// Zone size of the daemon's disk.
const ZONE_SIZE_BYTES: u64 = 256 << 20;
/// Zones besides the log: the superblock zone and two checkpoint sets (the format sizes them
/// from the disk: one zone each up to tens of GiB).
const NON_LOG_ZONES_MAX: u64 = 9;
/// Fewest zones of a disk.
const ZONES_MIN: u64 = 8;
/// Largest disk file (1 TiB): a bound on what a typo can ask of the file system.
const DISK_SIZE_MAX_BYTES: u64 = 1 << 40;
/// Log bytes per second the daemon cannot exceed here, with room to spare (fio's sequential
/// write on this VM: 460-900 MB/s): sizes the disk so that a PUT run never fills it. Should a
/// faster machine fill it anyway, the run ends early and says so; it never meets NO_SPACE.
const LOG_BYTES_PER_S_BOUND: u64 = 1_000_000_000;
/// Block size of a file-backed disk (padding at the end of a batch).
const BLOCK_BYTES: u64 = 4096;
/// Requests in flight per workload (the issue's), and the GET preload's.
const PUT_1M_IN_FLIGHT: usize = 16;
const GET_4K_IN_FLIGHT: usize = 32;
const PUT_4K_IN_FLIGHT: usize = 64;
const PRELOAD_IN_FLIGHT: usize = 64;
/// Targets: serve ÷ fio of the medians.
const PUT_1M_MB_RATIO_MIN: f64 = 0.80;
const GET_4K_IOPS_RATIO_MIN: f64 = 0.80;
/// Label of the reference the targets compare with.
const FIO_REFERENCE: &str = "fio";
/// `--smoke`: seconds per run, warm-up, runs, GET preload.
const SMOKE_RUNTIME_S: u64 = 1;
const SMOKE_WARMUP_MS: u64 = 250;
const SMOKE_RUNS: u64 = 1;
const SMOKE_PRELOAD_BYTES: u64 = 16 << 20;
/// Bounds of the options.
const RUNTIME_S_MAX: u64 = 3600;
const RUNS_MAX: u64 = 100;
const WARMUP_MS_MAX: u64 = 60_000;
const CLIENT_THREADS_MAX: usize = 64;
const PRELOAD_BYTES_MAX: u64 = 64 << 30;
/// Extra wait after a preload before reading the disk's free space (published every
/// `SPACE_PUBLISH_INTERVAL`).
const SPACE_PUBLISH_SLACK: Duration = Duration::from_millis(500);
/// Prefix of the scratch folder inside `--dir`, before the process id.
const SCRATCH_PREFIX: &str = "shingle-serve-vs-fio";
/// The daemon's disk id.
const DISK_ID: u16 = 0;

const _: () = assert!(ZONE_SIZE_BYTES % (1 << 20) == 0);
const _: () = assert!(ZONE_SIZE_BYTES >= 4 * BATCH_BYTES as u64);
/// The most requests any workload keeps in flight, all on the one shard connection.
const IN_FLIGHT_MOST: usize = PRELOAD_IN_FLIGHT;

const _: () = assert!(
    PUT_1M_IN_FLIGHT <= IN_FLIGHT_MOST
        && GET_4K_IN_FLIGHT <= IN_FLIGHT_MOST
        && PUT_4K_IN_FLIGHT <= IN_FLIGHT_MOST
        && IN_FLIGHT_MOST <= load::IN_FLIGHT_MAX
);

#[derive(Debug, Parser)]
#[command(
    name = "serve-vs-fio",
    about = "the shingled daemon over loopback and fio on the same file system, side by side",
    after_help = "Targets: 1 MiB PUT MB/s >= 80% of fio's sequential write MB/s; 4 KiB GET/s >= \
                  80% of fio's random-read IOPS. A miss is reported, not an error; the exit \
                  status is non-zero only when something failed (fio or shingled missing or \
                  failing, a request that failed or returned wrong bytes)."
)]
struct Args {
    /// Directory of the scratch folder (config, the daemon's disk file, fio's file): the file
    /// system and device under test.
    #[arg(long, default_value = "/tmp")]
    dir: PathBuf,
    /// Size of the daemon's disk file and of fio's file (binary suffixes: 16G = 16 GiB).
    /// Default: room for (warm-up + runtime) at 1 GB/s of log, or for the GET preload.
    #[arg(long, value_parser = parse_size_bytes)]
    size: Option<u64>,
    /// Seconds measured per run and side.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=RUNTIME_S_MAX))]
    runtime: u64,
    /// Unmeasured load before each daemon run's window, in ms.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(0..=WARMUP_MS_MAX))]
    warmup_ms: u64,
    /// Runs per workload and side, alternating daemon and fio (S F S F ...).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=RUNS_MAX))]
    runs: u64,
    /// CPU of the daemon's only core, and of fio. Default: the highest CPU this process may run
    /// on (on the development VM also the one that takes the disk's interrupts).
    #[arg(long)]
    cpu: Option<usize>,
    /// Client threads (each keeps its share of the requests in flight).
    #[arg(long, default_value_t = 2)]
    client_threads: usize,
    /// Workloads to run, comma separated.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = WorkloadKind::ALL)]
    workloads: Vec<WorkloadKind>,
    /// Bytes of 4 KiB values PUT once before the GET runs (binary suffixes).
    #[arg(long, default_value = "1G", value_parser = parse_size_bytes)]
    preload: u64,
    /// Quick check that the benchmark works: 1 run of 1 s per side (0.25 s warm-up), 16 MiB
    /// preload; overrides --runtime, --warmup-ms, --runs and --preload.
    #[arg(long)]
    smoke: bool,
    /// Print the report as JSON (same data as the table) instead of the table.
    #[arg(long)]
    json: bool,
    /// Also write the JSON report to this file.
    #[arg(long)]
    json_file: Option<PathBuf>,
    /// The shingled binary. Default: the one next to this executable, built if missing.
    #[arg(long)]
    shingled: Option<PathBuf>,
    /// The fio executable.
    #[arg(long, default_value = "fio")]
    fio: PathBuf,
    /// An extra argument for every fio run (repeatable).
    #[arg(long = "fio-arg", allow_hyphen_values = true)]
    fio_args: Vec<String>,
    /// Keep the scratch folder (config, disk file) afterwards.
    #[arg(long)]
    keep_files: bool,
}

/// The workloads of the issue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum, Serialize)]
enum WorkloadKind {
    /// Durable PUT of 1 MiB values, 16 in flight; fio: 1 MiB sequential writes at iodepth 16.
    #[value(name = "put-1m")]
    #[serde(rename = "put-1m")]
    Put1m,
    /// GET of 4 KiB values at random, 32 in flight; fio: 4 KiB random reads at iodepth 32.
    #[value(name = "get-4k")]
    #[serde(rename = "get-4k")]
    Get4k,
    /// Durable PUT of 4 KiB values, 64 in flight; fio: 4 KiB random writes, fdatasync=1.
    #[value(name = "put-4k")]
    #[serde(rename = "put-4k")]
    Put4k,
}

impl WorkloadKind {
    const ALL: [WorkloadKind; 3] = [WorkloadKind::Put1m, WorkloadKind::Get4k, WorkloadKind::Put4k];

    fn value_bytes(self) -> usize {
        match self {
            WorkloadKind::Put1m => 1 << 20,
            WorkloadKind::Get4k | WorkloadKind::Put4k => 4 << 10,
        }
    }

    fn in_flight(self) -> usize {
        match self {
            WorkloadKind::Put1m => PUT_1M_IN_FLIGHT,
            WorkloadKind::Get4k => GET_4K_IN_FLIGHT,
            WorkloadKind::Put4k => PUT_4K_IN_FLIGHT,
        }
    }

    fn op(self) -> OpKind {
        if self == WorkloadKind::Get4k { OpKind::Get } else { OpKind::Put }
    }

    /// The fio runs: first the issue's reference (the target compares with it), then one that
    /// explains the comparison.
    fn fio_jobs(self) -> Vec<FioJob> {
        let job = |label, purpose, rw, bs_bytes, iodepth| FioJob {
            label,
            purpose,
            rw,
            bs_bytes,
            iodepth,
            extra: &[],
            direction: if rw == "randread" { Direction::Read } else { Direction::Write },
        };
        match self {
            WorkloadKind::Put1m => vec![
                job(FIO_REFERENCE, "the issue's reference: no sync", "write", 1 << 20, 16),
                FioJob {
                    extra: &["--sync=dsync"],
                    ..job(
                        "fio-dsync",
                        "every write durable (O_DSYNC), as the daemon's",
                        "write",
                        1 << 20,
                        16,
                    )
                },
            ],
            WorkloadKind::Get4k => vec![
                job(FIO_REFERENCE, "the issue's reference", "randread", 4 << 10, 32),
                FioJob {
                    extra: &["--blockalign=4096"],
                    ..job(
                        "fio-8k",
                        "8 KiB reads at 4 KiB-aligned offsets: what a GET reads on a format \
                         version 1 disk (header in front of the value)",
                        "randread",
                        8 << 10,
                        32,
                    )
                },
            ],
            WorkloadKind::Put4k => vec![FioJob {
                extra: &["--fdatasync=1"],
                ..job(FIO_REFERENCE, "the issue's reference", "randwrite", 4 << 10, 64)
            }],
        }
    }

    /// What to keep in mind when reading the comparison.
    fn note(self) -> &'static str {
        match self {
            WorkloadKind::Put1m => {
                "every PUT is acknowledged once its batch is durable (RWF_DSYNC); the issue's \
                 fio reference never syncs, fio-dsync opens its file O_DSYNC. Both sides write \
                 a freshly fallocated file (the daemon's disk file is new each run)."
            }
            WorkloadKind::Get4k => {
                "fio reads the daemon's own disk file, where the preload's records are; a GET \
                 of a 4 KiB value reads its one block (stored block-aligned, format version 2; \
                 8 KiB on a version 1 disk, as fio-8k reads)."
            }
            WorkloadKind::Put4k => {
                "fio queues an fdatasync after every write in the same ring and keeps 64 ops \
                 of both kinds in flight; its latency excludes the fdatasync. A PUT's latency \
                 includes its batch's durable write. Both sides write a fresh file."
            }
        }
    }
}

impl fmt::Display for WorkloadKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WorkloadKind::Put1m => "put-1m",
            WorkloadKind::Get4k => "get-4k",
            WorkloadKind::Put4k => "put-4k",
        })
    }
}

/// One fio run of a workload.
#[derive(Debug, Clone, Copy, Serialize)]
struct FioJob {
    label: &'static str,
    purpose: &'static str,
    rw: &'static str,
    bs_bytes: usize,
    iodepth: usize,
    extra: &'static [&'static str],
    direction: Direction,
}

/// Who ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Side {
    Serve,
    Fio { label: &'static str },
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Side::Serve => f.write_str("serve"),
            Side::Fio { label } => f.write_str(label),
        }
    }
}

/// The settings of a whole invocation, after `--smoke` and validation.
#[derive(Debug, Clone, Serialize)]
struct Settings {
    dir: PathBuf,
    scratch: PathBuf,
    disk_size_bytes: u64,
    zone_size_bytes: u64,
    runtime_s: u64,
    warmup_ms: u64,
    runs: u64,
    cpu: usize,
    client_cpus: Vec<usize>,
    client_threads: usize,
    workloads: Vec<WorkloadKind>,
    preload_bytes: u64,
    smoke: bool,
    shingled: PathBuf,
    fio: PathBuf,
    fio_extra_args: Vec<String>,
    keep_files: bool,
    json: bool,
    json_file: Option<PathBuf>,
    /// The block device (major, minor) holding `dir`, for /proc/diskstats.
    #[serde(skip)]
    device: Option<(u32, u32)>,
}

impl Settings {
    fn disk_path(&self) -> PathBuf {
        self.scratch.join("disk0.img")
    }

    fn fio_path(&self) -> PathBuf {
        self.scratch.join("fio.dat")
    }

    fn config_path(&self) -> PathBuf {
        self.scratch.join("shingled.toml")
    }

    fn timed(&self) -> Stop {
        Stop::Timed {
            warmup: Duration::from_millis(self.warmup_ms),
            runtime: Duration::from_secs(self.runtime_s),
        }
    }

    fn client_threads_for(&self, in_flight: usize) -> usize {
        self.client_threads.min(in_flight)
    }
}

/// CPU seconds per GB (10^9 bytes) moved.
#[derive(Debug, Clone, Copy, Serialize)]
struct CpuPerGb {
    /// Serve: the daemon's process (every thread). fio: its job thread (usr + sys).
    cpu_s_per_gb: f64,
    /// Serve: the daemon and the client together. fio: its whole process tree.
    all_s_per_gb: f64,
    /// Serve: the client (this process) alone.
    #[serde(skip_serializing_if = "Option::is_none")]
    client_s_per_gb: Option<f64>,
}

impl CpuPerGb {
    fn new(bytes: u64, cpu_s: f64, all_s: f64, client_s: Option<f64>) -> CpuPerGb {
        let gb = bytes as f64 / 1e9;
        let per = |s: f64| if gb > 0.0 { s / gb } else { f64::NAN };
        CpuPerGb {
            cpu_s_per_gb: per(cpu_s),
            all_s_per_gb: per(all_s),
            client_s_per_gb: client_s.map(per),
        }
    }

    fn medians<'a>(runs: impl Iterator<Item = &'a CpuPerGb> + Clone) -> CpuPerGb {
        let of = |f: fn(&CpuPerGb) -> f64| median(runs.clone().map(f).collect());
        let client: Vec<f64> = runs.clone().filter_map(|c| c.client_s_per_gb).collect();
        CpuPerGb {
            cpu_s_per_gb: of(|c| c.cpu_s_per_gb),
            all_s_per_gb: of(|c| c.all_s_per_gb),
            client_s_per_gb: (!client.is_empty()).then(|| median(client)),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
struct RunRecord {
    run: u64,
    side: Side,
    #[serde(flatten)]
    measurement: Measurement,
    cpu_per_gb: CpuPerGb,
    device_io: Option<DeviceIo>,
    /// Serve: every request answered (warm-up and drain included), each checked.
    #[serde(skip_serializing_if = "Option::is_none")]
    requests: Option<u64>,
    /// Serve: the disk's log budget ran out before `--runtime`; rates are over the shorter
    /// window.
    ended_early: bool,
}

#[derive(Debug, Clone, Serialize)]
struct SideMedians {
    side: Side,
    metrics: Metrics,
    cpu_per_gb: CpuPerGb,
}

/// Serve ÷ fio of the medians: > 1 is better for rates, < 1 for latency and CPU.
#[derive(Debug, Clone, Serialize)]
struct Ratios {
    reference: &'static str,
    iops: f64,
    mb_per_s: f64,
    lat_p50: f64,
    lat_p99: f64,
    cpu_per_gb: f64,
    all_per_gb: f64,
}

#[derive(Debug, Clone, Serialize)]
struct Target {
    workload: WorkloadKind,
    name: &'static str,
    rule: &'static str,
    ratio: f64,
    pass: bool,
}

#[derive(Debug, Clone, Serialize)]
struct FioCommand {
    job: FioJob,
    command: String,
}

/// The GET workload's preload.
#[derive(Debug, Clone, Serialize)]
struct Preload {
    keys: u64,
    value_bytes: usize,
    in_flight: usize,
    runtime_s: f64,
    puts_per_s: f64,
    mb_per_s: f64,
    /// The part of the disk file holding the preload's records, which fio reads.
    region_offset_bytes: u64,
    region_bytes: u64,
}

#[derive(Debug, Clone, Serialize)]
struct WorkloadReport {
    workload: WorkloadKind,
    value_bytes: usize,
    in_flight: usize,
    client_threads: usize,
    fio: Vec<FioCommand>,
    note: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    preload: Option<Preload>,
    runs: Vec<RunRecord>,
    medians: Vec<SideMedians>,
    ratios: Vec<Ratios>,
    #[serde(skip_serializing_if = "Option::is_none")]
    target: Option<Target>,
}

#[derive(Debug, Clone, Serialize)]
struct Report {
    system: SystemInfo,
    settings: Settings,
    /// The daemon's config (the disk path and ports change per invocation).
    daemon_config: String,
    workloads: Vec<WorkloadReport>,
    targets: Vec<Target>,
}

fn main() -> Result<()> {
    let settings = settings_from(Args::parse())?;
    let fio_version = fio_version(&settings.fio)?;
    let system = SystemInfo::collect(&settings.dir, fio_version)?;
    let scratch = Scratch::create(&settings.scratch, settings.keep_files)?;
    let node_config = NodeConfig {
        ports: free_ports()?,
        cpu: settings.cpu,
        disk_path: settings.disk_path(),
        disk_size_bytes: Some(settings.disk_size_bytes),
        zone_size_bytes: settings.zone_size_bytes,
    };
    let mut workloads = Vec::with_capacity(settings.workloads.len());
    for &kind in &settings.workloads {
        let report = match kind.op() {
            OpKind::Put => run_put_workload(&settings, &node_config, kind),
            OpKind::Get => run_get_workload(&settings, &node_config, kind),
        };
        workloads.push(report.with_context(|| format!("{kind} failed"))?);
    }
    let targets = workloads.iter().filter_map(|w| w.target.clone()).collect();
    let report =
        Report { system, daemon_config: node_config.to_toml(), settings, workloads, targets };
    let json = serde_json::to_string_pretty(&report)?;
    if let Some(path) = &report.settings.json_file {
        std::fs::write(path, &json).with_context(|| format!("writing {}", path.display()))?;
    }
    if report.settings.json {
        println!("{json}");
    } else {
        print_report(&report);
    }
    drop(scratch);
    Ok(())
}

/// Applies `--smoke`, sizes the disk, picks the CPUs, and checks the settings.
fn settings_from(args: Args) -> Result<Settings> {
    let (runtime_s, warmup_ms, runs, preload_bytes) = if args.smoke {
        (SMOKE_RUNTIME_S, SMOKE_WARMUP_MS, SMOKE_RUNS, SMOKE_PRELOAD_BYTES)
    } else {
        (args.runtime, args.warmup_ms, args.runs, args.preload)
    };
    ensure!(
        (4096..=PRELOAD_BYTES_MAX).contains(&preload_bytes),
        "--preload must be 4K..={PRELOAD_BYTES_MAX} bytes"
    );
    ensure!(!args.workloads.is_empty(), "--workloads names no workload");
    ensure!(
        (1..=CLIENT_THREADS_MAX).contains(&args.client_threads),
        "--client-threads takes 1..={CLIENT_THREADS_MAX}"
    );
    let disk_size_bytes = match args.size {
        Some(size) => size,
        None => disk_size_for(runtime_s, warmup_ms, preload_bytes),
    };
    ensure!(
        disk_size_bytes % ZONE_SIZE_BYTES == 0
            && (ZONES_MIN * ZONE_SIZE_BYTES..=DISK_SIZE_MAX_BYTES).contains(&disk_size_bytes),
        "--size {disk_size_bytes} must be a multiple of the zone size ({ZONE_SIZE_BYTES}), at \
         least {ZONES_MIN} zones and at most {DISK_SIZE_MAX_BYTES} bytes"
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
    let client_cpus: Vec<usize> = allowed.iter().copied().filter(|&c| c != cpu).collect();
    let dir = args
        .dir
        .canonicalize()
        .with_context(|| format!("--dir {}: no such directory", args.dir.display()))?;
    let dev = std::os::unix::fs::MetadataExt::dev(
        &std::fs::metadata(&dir).with_context(|| format!("stat {}", dir.display()))?,
    );
    let scratch = dir.join(format!("{SCRATCH_PREFIX}-{}", std::process::id()));
    // fio splits --filename at ':' (several files).
    ensure!(
        !scratch.to_string_lossy().contains(':'),
        "the scratch path {} contains ':', which fio reads as a file separator; pick another --dir",
        scratch.display()
    );
    let mut workloads = args.workloads;
    workloads.dedup();
    Ok(Settings {
        dir,
        scratch,
        disk_size_bytes,
        zone_size_bytes: ZONE_SIZE_BYTES,
        runtime_s,
        warmup_ms,
        runs,
        cpu,
        client_cpus,
        client_threads: args.client_threads,
        workloads,
        preload_bytes,
        smoke: args.smoke,
        shingled: shingled_binary(args.shingled.as_deref())?,
        fio: args.fio,
        fio_extra_args: args.fio_args,
        keep_files: args.keep_files,
        json: args.json,
        json_file: args.json_file,
        device: Some((libc::major(dev), libc::minor(dev))),
    })
}

/// The disk file's size: log room for a PUT run at [`LOG_BYTES_PER_S_BOUND`] or for the
/// preload, whichever is more, plus every zone's unusable tail and the non-log zones.
fn disk_size_for(runtime_s: u64, warmup_ms: u64, preload_bytes: u64) -> u64 {
    let put_log_bytes = (runtime_s * 1000 + warmup_ms) * (LOG_BYTES_PER_S_BOUND / 1000);
    let preload_log_bytes = preload_keys(preload_bytes) * log_bytes_per_put(4096);
    let log_bytes = put_log_bytes.max(preload_log_bytes);
    let log_zones = log_bytes.div_ceil(ZONE_SIZE_BYTES - zone_tail_bytes(1 << 20));
    (log_zones + NON_LOG_ZONES_MAX).max(ZONES_MIN) * ZONE_SIZE_BYTES
}

fn preload_keys(preload_bytes: u64) -> u64 {
    preload_bytes / 4096
}

/// Log bytes one PUT of `value_bytes` may take at most: its record, and a batch of its own
/// (the batch record and the padding to a block).
fn log_bytes_per_put(value_bytes: usize) -> u64 {
    (record_bytes(value_bytes as u32) + record_bytes(BATCH_INFO_BYTES as u32)) as u64 + BLOCK_BYTES
}

/// Bytes at a zone's end that may stay unused: a batch that does not fit is written in the
/// next zone.
fn zone_tail_bytes(value_bytes: usize) -> u64 {
    (BATCH_BYTES as u64).max(log_bytes_per_put(value_bytes))
}

/// What PUTs may take of a disk with `free_bytes` of log in `zones` zones, keeping every zone's
/// tail and everything in flight out of it.
fn log_budget_bytes(free_bytes: u64, zones: u64, value_bytes: usize, in_flight: usize) -> u64 {
    let reserve = zones * zone_tail_bytes(value_bytes)
        + (in_flight as u64 + 1) * log_bytes_per_put(value_bytes);
    free_bytes.saturating_sub(reserve)
}

fn progress(message: fmt::Arguments<'_>) {
    eprintln!("serve-vs-fio: {message}");
}

/// The scratch folder: removed (with the files in it) on drop unless kept.
struct Scratch {
    path: PathBuf,
    keep: bool,
}

impl Scratch {
    fn create(path: &Path, keep: bool) -> Result<Scratch> {
        std::fs::create_dir(path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Scratch { path: path.to_path_buf(), keep })
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !self.keep {
            if let Err(err) = std::fs::remove_dir_all(&self.path) {
                eprintln!("serve-vs-fio: could not remove {}: {err}", self.path.display());
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The daemon side.

/// CPU and device counters around the measured window.
#[derive(Debug, Clone, Copy)]
struct Sample {
    server_ticks: u64,
    client: CpuSample,
    device: Option<DeviceIo>,
}

/// Starts the daemon on a new disk file (the daemon creates and formats it).
fn start_fresh(settings: &Settings, config: &NodeConfig) -> Result<Node> {
    let disk = settings.disk_path();
    if disk.exists() {
        std::fs::remove_file(&disk).with_context(|| format!("removing {}", disk.display()))?;
    }
    Node::start(&settings.shingled, config, &settings.config_path())
}

/// Connects shard-aware and checks that disk 0 is there, active and empty; returns its free
/// log bytes and log zones.
fn connect(node: &Node, settings: &Settings) -> Result<(Client, u64, u64)> {
    let client = Client::connect(node.addr(), ClientOptions::default())
        .with_context(|| format!("connecting to shingled at {}", node.addr()))?;
    let disk = client.disks().iter().find(|d| d.disk_id == DISK_ID).with_context(|| {
        format!("shingled serves no disk {DISK_ID}; its log:\n{}", node.log_tail())
    })?;
    ensure!(
        disk.state == DiskState::Active && disk.free_bytes == disk.capacity_bytes,
        "disk {DISK_ID} is {:?} with {} of {} log bytes free; expected an empty active disk",
        disk.state,
        disk.free_bytes,
        disk.capacity_bytes
    );
    ensure!(disk.shard_port != 0, "shingled announced no shard port for disk {DISK_ID}");
    // More would wait in the client for a slot, and the benchmark would measure the wait.
    let per_connection = client.hello().requests_in_flight_max;
    ensure!(
        per_connection as usize >= IN_FLIGHT_MOST,
        "shingled takes {per_connection} requests in flight per connection; the workloads keep \
         up to {IN_FLIGHT_MOST} on one"
    );
    let (free_bytes, zones) = (disk.free_bytes, disk.capacity_bytes / settings.zone_size_bytes);
    Ok((client, free_bytes, zones))
}

fn load_plan(settings: &Settings, kind: WorkloadKind, free_bytes: u64, zones: u64) -> LoadPlan {
    let value_bytes = kind.value_bytes();
    let in_flight = kind.in_flight();
    LoadPlan {
        kind: kind.op(),
        disk: DISK_ID,
        value_bytes,
        in_flight,
        threads: settings.client_threads_for(in_flight),
        // A random start: another invocation's keys differ too (key numbers stay below 2^57).
        first_key: seed_from_clock() >> 7,
        key_count: 0,
        value_seed: seed_from_clock(),
        stop: settings.timed(),
        log_budget_bytes: log_budget_bytes(free_bytes, zones, value_bytes, in_flight),
        log_bytes_per_put: log_bytes_per_put(value_bytes),
        cpus: settings.client_cpus.clone(),
    }
}

/// Runs `plan` and turns its outcome into a run record.
fn measured_load(
    settings: &Settings,
    node: &Node,
    client: &Client,
    plan: &LoadPlan,
    run: u64,
) -> Result<RunRecord> {
    let outcome = load::run(client, plan, || {
        Ok(Sample {
            server_ticks: node.cpu_ticks()?,
            client: CpuSample::read()?,
            device: DeviceIo::read(settings.device),
        })
    })?;
    ensure!(
        outcome.ops > 0,
        "no request completed in the measured window ({} answered in all{})",
        outcome.requests,
        if outcome.ended_early { "; the disk's log budget ran out during the warm-up" } else { "" }
    );
    Ok(serve_record(run, &outcome))
}

fn serve_record(run: u64, o: &LoadOutcome<Sample>) -> RunRecord {
    let server_s = ticks_s(o.after.server_ticks - o.before.server_ticks);
    let client_s = ticks_s(o.after.client.process_ticks - o.before.client.process_ticks);
    let mut m = Measurement::new(
        o.ops,
        o.bytes,
        o.window.as_secs_f64(),
        Latency::of(&o.latency_ns),
        server_s,
        server_s + client_s,
    );
    let device_io = DeviceIo::delta(o.before.device, o.after.device);
    m.set_device(device_io.map(|io| io.counters()));
    RunRecord {
        run,
        side: Side::Serve,
        cpu_per_gb: CpuPerGb::new(o.bytes, server_s, server_s + client_s, Some(client_s)),
        measurement: m,
        device_io,
        requests: Some(o.requests),
        ended_early: o.ended_early,
    }
}

/// PUT workloads: per run a daemon on a new disk file, then fio on a new file of the same size.
fn run_put_workload(
    settings: &Settings,
    config: &NodeConfig,
    kind: WorkloadKind,
) -> Result<WorkloadReport> {
    let jobs = kind.fio_jobs();
    let whole_file = (0, settings.disk_size_bytes);
    // fio's file, as fresh as the daemon's before every fio run (see `TestFile::zero`).
    let fio_file =
        TestFile::create(settings.fio_path(), settings.disk_size_bytes, false, "serve-vs-fio")?;
    let mut runs = Vec::new();
    for run in 1..=settings.runs {
        progress(format_args!("{kind} run {run}/{}: shingled", settings.runs));
        let node = start_fresh(settings, config)?;
        let (client, free_bytes, zones) = connect(&node, settings)?;
        let plan = load_plan(settings, kind, free_bytes, zones);
        let record = measured_load(settings, &node, &client, &plan, run)
            .with_context(|| format!("run {run}; shingled's log:\n{}", node.log_tail()))?;
        drop(client);
        node.stop()?;
        runs.push(record);
        std::fs::remove_file(settings.disk_path()).context("removing the disk file")?;
        for job in &jobs {
            progress(format_args!("{kind} run {run}/{}: {}", settings.runs, job.label));
            let args = fio_args(settings, kind, job, fio_file.path(), whole_file);
            runs.push(fio_run(settings, run, job, &args)?);
            if job.direction == Direction::Write {
                // What fio left in the device's volatile cache (an unsynced run: its last
                // writes; a synced one: nothing) is made durable now, not by the next daemon
                // run's first flushes.
                let took = testfile::flush(fio_file.path())?;
                progress(format_args!(
                    "{kind} run {run}: flushing after {} took {:.3} s",
                    job.label,
                    took.as_secs_f64()
                ));
            }
            fio_file.zero()?;
        }
    }
    let fio = fio_commands(settings, kind, &settings.fio_path(), whole_file);
    Ok(workload_report(settings, kind, fio, None, runs))
}

/// The GET workload: one daemon, preloaded once; GET runs alternate with fio reading the
/// preload's part of the daemon's disk file.
fn run_get_workload(
    settings: &Settings,
    config: &NodeConfig,
    kind: WorkloadKind,
) -> Result<WorkloadReport> {
    let node = start_fresh(settings, config)?;
    let (client, free_bytes, zones) = connect(&node, settings)?;
    let keys = preload_keys(settings.preload_bytes);
    progress(format_args!("{kind}: preloading {keys} keys of {} bytes", kind.value_bytes()));
    let preload_plan = LoadPlan {
        kind: OpKind::Put,
        in_flight: PRELOAD_IN_FLIGHT,
        threads: settings.client_threads_for(PRELOAD_IN_FLIGHT),
        key_count: keys,
        stop: Stop::AfterKeys,
        log_budget_bytes: log_budget_bytes(
            free_bytes,
            zones,
            kind.value_bytes(),
            PRELOAD_IN_FLIGHT,
        ),
        ..load_plan(settings, kind, free_bytes, zones)
    };
    let preload = run_preload(settings, &node, &client, &preload_plan)
        .with_context(|| format!("preloading; shingled's log:\n{}", node.log_tail()))?;
    let region = (preload.region_offset_bytes, preload.region_bytes);
    let plan = LoadPlan {
        kind: OpKind::Get,
        first_key: preload_plan.first_key,
        key_count: keys,
        value_seed: preload_plan.value_seed,
        ..load_plan(settings, kind, free_bytes, zones)
    };
    let jobs = kind.fio_jobs();
    let mut runs = Vec::new();
    for run in 1..=settings.runs {
        progress(format_args!("{kind} run {run}/{}: shingled", settings.runs));
        let record = measured_load(settings, &node, &client, &plan, run)
            .with_context(|| format!("run {run}; shingled's log:\n{}", node.log_tail()))?;
        runs.push(record);
        for job in &jobs {
            progress(format_args!("{kind} run {run}/{}: {}", settings.runs, job.label));
            let args = fio_args(settings, kind, job, &settings.disk_path(), region);
            runs.push(fio_run(settings, run, job, &args)?);
        }
    }
    drop(client);
    node.stop()?;
    let fio = fio_commands(settings, kind, &settings.disk_path(), region);
    Ok(workload_report(settings, kind, fio, Some(preload), runs))
}

/// PUTs every preload key once, then finds where their records are in the disk file.
fn run_preload(
    settings: &Settings,
    node: &Node,
    client: &Client,
    plan: &LoadPlan,
) -> Result<Preload> {
    let outcome = load::run(client, plan, || Ok(()))?;
    ensure!(!outcome.ended_early, "the preload does not fit the disk: raise --size");
    ensure!(
        outcome.ops == plan.key_count,
        "the preload stored {} of {} keys",
        outcome.ops,
        plan.key_count
    );
    // The daemon publishes its free space once per SPACE_PUBLISH_INTERVAL.
    std::thread::sleep(SPACE_PUBLISH_INTERVAL + SPACE_PUBLISH_SLACK);
    let status = client.disk_status(Some(DISK_ID)).context("DISK_STATUS after the preload")?;
    let disk = status.first().context("DISK_STATUS listed no disk")?;
    ensure!(
        disk.live_keys == plan.key_count,
        "the disk holds {} keys after the preload of {}; its log:\n{}",
        disk.live_keys,
        plan.key_count,
        node.log_tail()
    );
    // The log zones are the disk's last zones; the records fill them from the first on.
    let used_bytes = disk.info.capacity_bytes - disk.info.free_bytes;
    let region_bytes = used_bytes / (1 << 20) * (1 << 20);
    ensure!(region_bytes > 0, "the preload wrote less than 1 MiB of log");
    let runtime_s = outcome.window.as_secs_f64();
    Ok(Preload {
        keys: outcome.ops,
        value_bytes: plan.value_bytes,
        in_flight: plan.in_flight,
        runtime_s,
        puts_per_s: outcome.ops as f64 / runtime_s,
        mb_per_s: outcome.bytes as f64 / runtime_s / 1e6,
        region_offset_bytes: settings.disk_size_bytes - disk.info.capacity_bytes,
        region_bytes,
    })
}

// ---------------------------------------------------------------------------------------------
// The fio side.

/// fio's command line for `job` on `file`, within `region` (offset, bytes).
fn fio_args(
    settings: &Settings,
    kind: WorkloadKind,
    job: &FioJob,
    file: &Path,
    region: (u64, u64),
) -> Vec<String> {
    let mut options: Vec<String> = job.extra.iter().map(|&arg| arg.to_owned()).collect();
    if job.direction == Direction::Read {
        options.push("--readonly".to_owned());
    }
    TimedJob {
        name: format!("serve-{kind}-{}", job.label),
        file,
        offset_bytes: region.0,
        size_bytes: region.1,
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

fn fio_commands(
    settings: &Settings,
    kind: WorkloadKind,
    file: &Path,
    region: (u64, u64),
) -> Vec<FioCommand> {
    kind.fio_jobs()
        .into_iter()
        .map(|job| FioCommand {
            job,
            command: shell_line(&settings.fio, &fio_args(settings, kind, &job, file, region)),
        })
        .collect()
}

fn fio_run(settings: &Settings, run: u64, job: &FioJob, args: &[String]) -> Result<RunRecord> {
    let FioRun { measurement: m, device_io, .. } =
        run_fio_detailed(&settings.fio, args, job.direction, settings.device)
            .with_context(|| format!("run {run}: {} failed", job.label))?;
    Ok(RunRecord {
        run,
        side: Side::Fio { label: job.label },
        cpu_per_gb: CpuPerGb::new(m.bytes, m.cpu_s, m.cpu_all_s, None),
        measurement: m,
        device_io,
        requests: None,
        ended_early: false,
    })
}

// ---------------------------------------------------------------------------------------------
// Arithmetic over runs.

fn workload_report(
    settings: &Settings,
    kind: WorkloadKind,
    fio: Vec<FioCommand>,
    preload: Option<Preload>,
    runs: Vec<RunRecord>,
) -> WorkloadReport {
    let sides: Vec<Side> = std::iter::once(Side::Serve)
        .chain(kind.fio_jobs().iter().map(|job| Side::Fio { label: job.label }))
        .collect();
    let medians: Vec<SideMedians> = sides
        .iter()
        .map(|&side| {
            let of_side = || runs.iter().filter(move |r| r.side == side);
            SideMedians {
                side,
                metrics: Metrics::medians(of_side().map(|r| &r.measurement)),
                cpu_per_gb: CpuPerGb::medians(of_side().map(|r| &r.cpu_per_gb)),
            }
        })
        .collect();
    let serve = &medians[0];
    let ratios: Vec<Ratios> = medians[1..]
        .iter()
        .map(|fio| {
            let Side::Fio { label } = fio.side else {
                unreachable!("sides after the first are fio")
            };
            ratios(serve, label, fio)
        })
        .collect();
    let target = target(kind, &ratios);
    let in_flight = kind.in_flight();
    WorkloadReport {
        workload: kind,
        value_bytes: kind.value_bytes(),
        in_flight,
        client_threads: settings.client_threads_for(in_flight),
        fio,
        note: kind.note(),
        preload,
        runs,
        medians,
        ratios,
        target,
    }
}

fn ratios(serve: &SideMedians, reference: &'static str, fio: &SideMedians) -> Ratios {
    let (s, f) = (&serve.metrics, &fio.metrics);
    Ratios {
        reference,
        iops: s.iops / f.iops,
        mb_per_s: s.mb_per_s / f.mb_per_s,
        lat_p50: s.lat_p50_us / f.lat_p50_us,
        lat_p99: s.lat_p99_us / f.lat_p99_us,
        cpu_per_gb: serve.cpu_per_gb.cpu_s_per_gb / fio.cpu_per_gb.cpu_s_per_gb,
        all_per_gb: serve.cpu_per_gb.all_s_per_gb / fio.cpu_per_gb.all_s_per_gb,
    }
}

/// The issue's target of `kind` against its fio reference (none for 4 KiB PUT).
fn target(kind: WorkloadKind, ratios: &[Ratios]) -> Option<Target> {
    let r = ratios.iter().find(|r| r.reference == FIO_REFERENCE)?;
    let (name, rule, ratio, min) = match kind {
        WorkloadKind::Put1m => ("MB/s", "serve/fio >= 0.80", r.mb_per_s, PUT_1M_MB_RATIO_MIN),
        WorkloadKind::Get4k => ("GET/s", "serve/fio >= 0.80", r.iops, GET_4K_IOPS_RATIO_MIN),
        WorkloadKind::Put4k => return None,
    };
    Some(Target { workload: kind, name, rule, ratio, pass: ratio >= min })
}

// ---------------------------------------------------------------------------------------------
// The report.

fn print_report(report: &Report) {
    print_header(report);
    for workload in &report.workloads {
        print_workload(workload, &report.settings);
    }
    println!();
    println!("== targets ==");
    for t in &report.targets {
        let verdict = if t.pass { "PASS" } else { "MISS" };
        println!(
            "{verdict}  {:<8} {:<6} {:<18} {:.3}",
            t.workload.to_string(),
            t.name,
            t.rule,
            t.ratio
        );
    }
    println!();
    println!("ops/s: requests (serve) or I/Os (fio) per second. MB/s: value bytes (serve), I/O");
    println!("bytes (fio); MB and GB are 10^6 and 10^9 bytes. Latency: serve from before the");
    println!("request is sent to its answer collected (each client thread collects its answers");
    println!("in the order it sent them); fio lat_ns (slat + clat). CPU s/GB: CPU seconds per GB");
    println!("moved; serve: the shingled process (every thread), fio: its job thread (usr + sys).");
    println!("all s/GB: serve: shingled + the client (this process), fio: its process tree.");
    println!("client s/GB: the client alone. dev QD: requests in flight on the block device on");
    println!("average (/proc/diskstats). Rows \"÷ref\" are serve ÷ that fio run, of the medians.");
}

fn print_header(report: &Report) {
    let s = &report.system;
    let st = &report.settings;
    println!("serve-vs-fio  {}", s.date_utc);
    println!("kernel   {} ({})", s.kernel_release, s.kernel_version);
    println!(
        "cpu      {} ({} online); shingled's core and fio on CPU {}, client threads on {:?}",
        s.cpu_model, s.cpus_online, st.cpu, st.client_cpus
    );
    println!(
        "fs       {} on {} ({}, mounted at {}, {})",
        st.dir.display(),
        s.mount_source,
        s.fs_type,
        s.mount_point,
        s.mount_options
    );
    println!(
        "device   {} ({}), driver {}, scheduler {}, cache {}",
        s.device,
        s.device_major_minor,
        s.device_driver.as_deref().unwrap_or("?"),
        s.device_scheduler.as_deref().unwrap_or("?"),
        s.device_write_cache.as_deref().unwrap_or("?"),
    );
    println!(
        "shingled {} with 1 core on CPU {}, one file-backed disk of {} MiB ({} MiB zones), \
         new for every PUT run",
        st.shingled.display(),
        st.cpu,
        st.disk_size_bytes >> 20,
        st.zone_size_bytes >> 20
    );
    println!(
        "runs     {} per side of {} s after {} ms of warm-up{}, {} client thread(s), shard-aware",
        st.runs,
        st.runtime_s,
        st.warmup_ms,
        if st.smoke { " (smoke)" } else { "" },
        st.client_threads
    );
    println!("fio      {}", s.fio_version);
}

fn print_workload(w: &WorkloadReport, settings: &Settings) {
    println!();
    let what = if w.workload.op() == OpKind::Put { "durable PUT" } else { "random GET" };
    println!(
        "== {}: {what} of {} KiB values, {} in flight from {} thread(s), {} s per run ==",
        w.workload,
        w.value_bytes >> 10,
        w.in_flight,
        w.client_threads,
        settings.runtime_s
    );
    if let Some(p) = &w.preload {
        println!(
            "preload: {} keys, {} in flight, {:.1} s ({:.0} PUT/s, {:.0} MB/s); fio reads {} MiB \
             of the disk file from offset {} MiB",
            p.keys,
            p.in_flight,
            p.runtime_s,
            p.puts_per_s,
            p.mb_per_s,
            p.region_bytes >> 20,
            p.region_offset_bytes >> 20
        );
    }
    for fio in &w.fio {
        println!("{}: {} ({})", fio.job.label, fio.command, fio.job.purpose);
    }
    println!("note: {}", w.note);
    println!(
        "{:<11}{:<11}{:>9}{:>8}{:>10}{:>10}{:>10}{:>10}{:>10}{:>8}",
        "run",
        "side",
        "ops/s",
        "MB/s",
        "p50 µs",
        "p99 µs",
        "CPU s/GB",
        "all s/GB",
        "client",
        "dev QD"
    );
    for r in &w.runs {
        print_row(&r.run.to_string(), r.side, &Metrics::of(&r.measurement), &r.cpu_per_gb);
    }
    for m in &w.medians {
        print_row("median", m.side, &m.metrics, &m.cpu_per_gb);
    }
    for r in &w.ratios {
        println!(
            "{:<11}{:<11}{:>9.3}{:>8.3}{:>10.3}{:>10.3}{:>10.3}{:>10.3}",
            format!("÷{}", r.reference),
            "serve",
            r.iops,
            r.mb_per_s,
            r.lat_p50,
            r.lat_p99,
            r.cpu_per_gb,
            r.all_per_gb
        );
    }
    if let Some(t) = &w.target {
        let verdict = if t.pass { "PASS" } else { "MISS" };
        println!("target {verdict}: {} {} {} ({:.3})", t.workload, t.name, t.rule, t.ratio);
    }
    for r in w.runs.iter().filter(|r| r.ended_early) {
        println!(
            "note: run {} ended after {:.1} s of {} s: the disk's log budget ran out (--size)",
            r.run, r.measurement.runtime_s, settings.runtime_s
        );
    }
}

fn print_row(run: &str, side: Side, m: &Metrics, cpu: &CpuPerGb) {
    let client = cpu.client_s_per_gb.map_or_else(|| "-".to_owned(), |c| format!("{c:.2}"));
    println!(
        "{:<11}{:<11}{:>9.0}{:>8.1}{:>10.0}{:>10.0}{:>10.2}{:>10.2}{:>10}{:>8.1}",
        run,
        side.to_string(),
        m.iops,
        m.mb_per_s,
        m.lat_p50_us,
        m.lat_p99_us,
        cpu.cpu_s_per_gb,
        cpu.all_s_per_gb,
        client,
        m.device_queue_depth
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_disk_holds_a_put_run_at_the_bound() {
        let size = disk_size_for(10, 1000, 1 << 30);
        let zones = size / ZONE_SIZE_BYTES;
        let log_zones = zones - NON_LOG_ZONES_MAX;
        let budget = log_budget_bytes(log_zones * ZONE_SIZE_BYTES, log_zones, 1 << 20, 16);
        assert!(budget >= 11 * LOG_BYTES_PER_S_BOUND, "{budget}");
        let budget_4k = log_budget_bytes(log_zones * ZONE_SIZE_BYTES, log_zones, 4096, 64);
        assert!(budget_4k >= preload_keys(1 << 30) * log_bytes_per_put(4096), "{budget_4k}");
        assert!(size <= 16 << 30, "{size}");
    }

    #[test]
    fn a_put_is_charged_its_record_and_a_batch() {
        let per_put = log_bytes_per_put(4096);
        assert!((4096 + 64 + 4..=3 * 4096).contains(&per_put), "{per_put}");
        assert!(log_bytes_per_put(1 << 20) > 1 << 20);
    }

    #[test]
    fn fio_commands_are_the_issues() {
        let args = Args::parse_from(["serve-vs-fio", "--smoke", "--shingled", "/bin/sh"]);
        let settings = settings_from(args).unwrap();
        let line = |kind: WorkloadKind, i: usize| {
            let job = kind.fio_jobs()[i];
            fio_args(&settings, kind, &job, Path::new("/tmp/f"), (1 << 20, 2 << 20)).join(" ")
        };
        let put1m = line(WorkloadKind::Put1m, 0);
        assert!(put1m.contains("--rw=write --bs=1048576 --iodepth=16 --direct=1"), "{put1m}");
        assert!(!put1m.contains("sync"), "{put1m}");
        assert!(line(WorkloadKind::Put1m, 1).contains("--sync=dsync"));
        let get = line(WorkloadKind::Get4k, 0);
        assert!(get.contains("--rw=randread --bs=4096 --iodepth=32"), "{get}");
        assert!(get.contains("--readonly") && get.contains("--offset=1048576 --size=2097152"));
        let put4k = line(WorkloadKind::Put4k, 0);
        assert!(put4k.contains("--rw=randwrite --bs=4096 --iodepth=64"), "{put4k}");
        assert!(put4k.contains("--fdatasync=1"), "{put4k}");
    }

    #[test]
    fn targets_compare_with_the_issues_reference() {
        let ratio = |reference, x| Ratios {
            reference,
            iops: x,
            mb_per_s: x,
            lat_p50: 1.0,
            lat_p99: 1.0,
            cpu_per_gb: 1.0,
            all_per_gb: 1.0,
        };
        let r = [ratio(FIO_REFERENCE, 0.79), ratio("fio-dsync", 1.5)];
        let t = target(WorkloadKind::Put1m, &r).unwrap();
        assert!(!t.pass && t.name == "MB/s");
        assert!(target(WorkloadKind::Get4k, &[ratio(FIO_REFERENCE, 0.8)]).unwrap().pass);
        assert!(target(WorkloadKind::Put4k, &r).is_none());
    }
}
