//! `reactor-vs-fio`: drives shingle's io_uring reactor and fio on the same O_DIRECT file in the
//! same run, alternating the two (R F R F ...), and reports them side by side with ratios, so
//! the reactor's overhead is measured against the tool the kernel's developers measure with.
//! See `benches/BENCHMARKING.md` for how to reproduce the numbers and what each one means.

#![forbid(unsafe_code)]
#![expect(clippy::print_stdout, reason = "a benchmark binary prints its report on stdout")]

use std::cell::{Cell, RefCell};
use std::fmt;
use std::fs::{File, OpenOptions};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail, ensure};
use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;
use ioengine::buf::{BufPool, PoolConfig, PooledBuf, Registration};
use ioengine::op::{SharedFd, WriteFlags, read_exact_at, write_all_at};
use ioengine::{Core, spawn};
use serde::Serialize;
use serde_json::Value;

/// Alignment of buffers, offsets and sizes for O_DIRECT (covers 512 and 4096 logical blocks).
const ALIGN_BYTES: usize = 4096;
/// seqwrite: block size and queue depth (fio `--bs=1M --iodepth=8`).
const SEQWRITE_BS_BYTES: usize = 1 << 20;
const SEQWRITE_IODEPTH: usize = 8;
/// randread: block size and queue depth (fio `--bs=4k --iodepth=32`).
const RANDREAD_BS_BYTES: usize = 4096;
const RANDREAD_IODEPTH: usize = 32;
/// Smallest test file: room for every seqwrite buffer in flight at once, twice over.
const FILE_SIZE_MIN_BYTES: u64 = 16 << 20;
/// Largest test file (1 TiB): a bound on what a typo can ask of the disk.
const FILE_SIZE_MAX_BYTES: u64 = 1 << 40;
/// `--smoke`: file size, seconds per run, runs.
const SMOKE_FILE_SIZE_BYTES: u64 = 64 << 20;
const SMOKE_RUNTIME_S: u64 = 1;
const SMOKE_RUNS: u64 = 1;
/// Bounds of `--runtime` and `--runs`.
const RUNTIME_S_MAX: u64 = 3600;
const RUNS_MAX: u64 = 100;
/// Time limit of the prefill pass (it normally ends at its byte budget, the file size).
const PREFILL_RUNTIME_S_MAX: u64 = 3600;
/// Largest latency the histograms hold; longer ones are recorded as this.
const LATENCY_NS_MAX: u64 = 60_000_000_000;
/// Significant decimal digits of the latency histograms (0.1% resolution).
const LATENCY_SIGNIFICANT_DIGITS: u8 = 3;
/// Submission queue entries of the reactor's ring: room for every I/O in flight, twice.
const RING_ENTRIES_MIN: u32 = 64;
/// Clock ticks per second of /proc/*/stat times (USER_HZ, 100 in the Linux ABI on every
/// architecture shingle runs on).
const CLOCK_TICKS_PER_S: u64 = 100;
/// Targets from the issue: reactor throughput at least this fraction of fio's...
const THROUGHPUT_RATIO_MIN: f64 = 0.95;
/// ... and CPU per I/O below fio's (reactor ÷ fio under this).
const CPU_PER_IO_RATIO_MAX: f64 = 1.0;
/// Name of the test file inside `--dir`.
const TEST_FILE_NAME: &str = "shingle-reactor-vs-fio.dat";

const _: () = assert!(SEQWRITE_BS_BYTES % ALIGN_BYTES == 0);
const _: () = assert!(RANDREAD_BS_BYTES % ALIGN_BYTES == 0);
const _: () = assert!(FILE_SIZE_MIN_BYTES >= 2 * (SEQWRITE_BS_BYTES * SEQWRITE_IODEPTH) as u64);
const _: () = assert!(SMOKE_FILE_SIZE_BYTES >= FILE_SIZE_MIN_BYTES);
const _: () = assert!(FILE_SIZE_MAX_BYTES % SEQWRITE_BS_BYTES as u64 == 0);

#[derive(Debug, Parser)]
#[command(
    name = "reactor-vs-fio",
    about = "shingle's io_uring reactor and fio on the same O_DIRECT file, side by side",
    after_help = "Targets: reactor MB/s and IOPS >= 95% of fio's, CPU per I/O below fio's. \
                  A miss is reported, not an error; the exit status is non-zero only when \
                  something failed (fio missing or failing, a reactor I/O error)."
)]
struct Args {
    /// Directory of the test file: the file system and device under test.
    #[arg(long, default_value = "/tmp")]
    dir: PathBuf,
    /// Test file size; K, M, G, T suffixes are binary (1G = 1 GiB). A multiple of 1 MiB, at
    /// least 16 MiB, at most 1 TiB.
    #[arg(long, default_value = "1G", value_parser = parse_size_bytes)]
    size: u64,
    /// Seconds per run and side.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=RUNTIME_S_MAX))]
    runtime: u64,
    /// Runs per workload and side, alternating reactor and fio (R F R F ...).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=RUNS_MAX))]
    runs: u64,
    /// Byte budget per run: stop after this many bytes or at --runtime, whichever comes first
    /// (fio `--io_size` instead of `--time_based`). Default: time only.
    #[arg(long, value_parser = parse_size_bytes)]
    io_size: Option<u64>,
    /// CPU that the reactor and fio are both pinned to. Default: the highest CPU this process
    /// may run on.
    #[arg(long)]
    cpu: Option<usize>,
    /// Workloads to run, comma separated.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [WorkloadKind::Seqwrite, WorkloadKind::Randread])]
    workloads: Vec<WorkloadKind>,
    /// Quick check that the benchmark works (64 MiB file, 1 s per run, 1 run); overrides
    /// --size, --runtime and --runs.
    #[arg(long)]
    smoke: bool,
    /// Print the report as JSON (same data as the table) instead of the table.
    #[arg(long)]
    json: bool,
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
enum WorkloadKind {
    /// 1 MiB sequential writes at iodepth 8.
    Seqwrite,
    /// 4 KiB uniformly random reads at iodepth 32 over the whole file.
    Randread,
}

impl fmt::Display for WorkloadKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WorkloadKind::Seqwrite => "seqwrite",
            WorkloadKind::Randread => "randread",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Direction {
    Read,
    Write,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Pattern {
    Sequential,
    Random,
}

/// What one side does in one run.
#[derive(Debug, Clone, Copy, Serialize)]
struct Job {
    kind: WorkloadKind,
    direction: Direction,
    pattern: Pattern,
    bs_bytes: usize,
    iodepth: usize,
}

impl WorkloadKind {
    fn job(self) -> Job {
        match self {
            WorkloadKind::Seqwrite => Job {
                kind: self,
                direction: Direction::Write,
                pattern: Pattern::Sequential,
                bs_bytes: SEQWRITE_BS_BYTES,
                iodepth: SEQWRITE_IODEPTH,
            },
            WorkloadKind::Randread => Job {
                kind: self,
                direction: Direction::Read,
                pattern: Pattern::Random,
                bs_bytes: RANDREAD_BS_BYTES,
                iodepth: RANDREAD_IODEPTH,
            },
        }
    }
}

impl Job {
    /// fio's `--rw=` for this job.
    fn fio_rw(&self) -> &'static str {
        match (self.direction, self.pattern) {
            (Direction::Write, Pattern::Sequential) => "write",
            (Direction::Write, Pattern::Random) => "randwrite",
            (Direction::Read, Pattern::Sequential) => "read",
            (Direction::Read, Pattern::Random) => "randread",
        }
    }
}

/// When a run ends: at `runtime`, or after `io_bytes` if set, whichever comes first.
#[derive(Debug, Clone, Copy, Serialize)]
struct Budget {
    #[serde(serialize_with = "serialize_secs")]
    runtime: Duration,
    io_bytes: Option<u64>,
}

fn serialize_secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// The settings of a whole invocation, after `--smoke` and validation.
#[derive(Debug, Clone, Serialize)]
struct Settings {
    dir: PathBuf,
    file: PathBuf,
    file_size_bytes: u64,
    runtime_s: u64,
    runs: u64,
    io_size_bytes: Option<u64>,
    cpu: usize,
    workloads: Vec<WorkloadKind>,
    smoke: bool,
    fio: PathBuf,
    fio_extra_args: Vec<String>,
    keep_file: bool,
    json: bool,
    /// The block device (major, minor) holding `dir`, for the /proc/diskstats check.
    #[serde(skip)]
    device: Option<(u32, u32)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Side {
    Reactor,
    Fio,
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::Reactor => "reactor",
            Side::Fio => "fio",
        })
    }
}

/// One side's numbers for one run. MB is 10^6 bytes, MiB 2^20; latency is from submission to
/// the completion seen by the submitter (fio: `lat_ns`, i.e. slat + clat).
#[derive(Debug, Clone, Serialize)]
struct Measurement {
    ios: u64,
    bytes: u64,
    runtime_s: f64,
    iops: f64,
    mb_per_s: f64,
    mib_per_s: f64,
    lat_p50_us: f64,
    lat_p99_us: f64,
    lat_p999_us: f64,
    lat_max_us: f64,
    /// User + system CPU time of the thread that submits and reaps, as fio counts its own
    /// (`getrusage(RUSAGE_THREAD)` of the job thread): the reactor's core thread (from
    /// /proc/thread-self/schedstat, ns), fio's `usr_cpu + sys_cpu` times its runtime.
    cpu_s: f64,
    /// `cpu_s` as a share of one CPU over the run.
    cpu_percent: f64,
    cpu_per_io_us: f64,
    /// User + system CPU time of every thread of the side, io_uring's io-wq workers included:
    /// the reactor's whole process (/proc/self/stat utime + stime), fio's whole process tree
    /// (our cutime + cstime across the fio run: job process and fio's main process).
    /// Clock-tick (10 ms) resolution.
    cpu_all_s: f64,
    cpu_all_per_io_us: f64,
    /// fio only: completion latency (`clat_ns`, without submission) p99.
    #[serde(skip_serializing_if = "Option::is_none")]
    clat_p99_us: Option<f64>,
    /// Requests and bytes the device completed meanwhile (/proc/diskstats; other processes'
    /// I/O included): the check that O_DIRECT I/O reached the device rather than a cache.
    device: Option<DeviceCounters>,
    /// Requests in flight on the device on average over the run (`device.in_queue_ms` ÷
    /// runtime): shows whether a side kept the device as busy as the other.
    device_queue_depth: Option<f64>,
}

/// Latency percentiles of one run, in µs.
#[derive(Debug, Clone, Copy)]
struct Latency {
    p50_us: f64,
    p99_us: f64,
    p999_us: f64,
    max_us: f64,
}

#[derive(Debug, Clone, Serialize)]
struct RunRecord {
    run: u64,
    side: Side,
    #[serde(flatten)]
    measurement: Measurement,
}

/// The compared metrics of one run, or their medians over the runs of one side.
#[derive(Debug, Clone, Copy, Serialize)]
struct Metrics {
    iops: f64,
    mb_per_s: f64,
    mib_per_s: f64,
    lat_p50_us: f64,
    lat_p99_us: f64,
    lat_p999_us: f64,
    cpu_percent: f64,
    cpu_per_io_us: f64,
    cpu_all_per_io_us: f64,
    /// NaN when the file system has no block device under it.
    device_queue_depth: f64,
}

/// Reactor ÷ fio of the medians. Throughput: > 1 is better; latency and CPU: < 1 is better.
#[derive(Debug, Clone, Copy, Serialize)]
struct Ratios {
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
    name: &'static str,
    ratio: f64,
    rule: &'static str,
    pass: bool,
}

#[derive(Debug, Clone, Serialize)]
struct WorkloadReport {
    workload: WorkloadKind,
    job: Job,
    fio_command: String,
    reactor_pool_registered: bool,
    runs: Vec<RunRecord>,
    median_reactor: Metrics,
    median_fio: Metrics,
    ratios: Ratios,
    targets: Vec<Target>,
}

#[derive(Debug, Clone, Serialize)]
struct Prefill {
    by: &'static str,
    description: String,
    bytes: u64,
    runtime_s: f64,
    mb_per_s: f64,
}

#[derive(Debug, Clone, Serialize)]
struct Report {
    system: SystemInfo,
    settings: Settings,
    prefill: Prefill,
    workloads: Vec<WorkloadReport>,
}

fn main() -> Result<()> {
    let settings = settings_from(Args::parse())?;
    let fio_version = fio_version(&settings.fio)?;
    let system = SystemInfo::collect(&settings.dir, fio_version)?;
    let file = TestFile::create(&settings)?;
    progress(format_args!(
        "prefilling {} ({} bytes) with the reactor",
        file.path.display(),
        settings.file_size_bytes
    ));
    let prefill = prefill(&settings)?;
    let mut workloads = Vec::with_capacity(settings.workloads.len());
    for &kind in &settings.workloads {
        workloads.push(run_workload(&settings, kind.job())?);
    }
    let report = Report { system, settings, prefill, workloads };
    if report.settings.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report);
    }
    drop(file);
    Ok(())
}

/// Applies `--smoke`, picks the CPU, and checks the settings against the limits.
fn settings_from(args: Args) -> Result<Settings> {
    let (file_size_bytes, runtime_s, runs) = if args.smoke {
        (SMOKE_FILE_SIZE_BYTES, SMOKE_RUNTIME_S, SMOKE_RUNS)
    } else {
        (args.size, args.runtime, args.runs)
    };
    ensure!(
        (FILE_SIZE_MIN_BYTES..=FILE_SIZE_MAX_BYTES).contains(&file_size_bytes)
            && file_size_bytes % SEQWRITE_BS_BYTES as u64 == 0,
        "--size {file_size_bytes} must be a multiple of 1 MiB between {FILE_SIZE_MIN_BYTES} \
         and {FILE_SIZE_MAX_BYTES} bytes"
    );
    if let Some(io_bytes) = args.io_size {
        ensure!(
            io_bytes > 0 && io_bytes % SEQWRITE_BS_BYTES as u64 == 0,
            "--io-size {io_bytes} must be a positive multiple of 1 MiB"
        );
    }
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
    let file = dir.join(TEST_FILE_NAME);
    // fio splits --filename at ':' (several files); such a path would test another file.
    ensure!(
        !file.to_string_lossy().contains(':'),
        "the test file path {} contains ':', which fio reads as a file separator; pick another --dir",
        file.display()
    );
    ensure!(!args.workloads.is_empty(), "--workloads names no workload");
    Ok(Settings {
        dir,
        file,
        file_size_bytes,
        runtime_s,
        runs,
        io_size_bytes: args.io_size,
        cpu,
        workloads: args.workloads,
        smoke: args.smoke,
        fio: args.fio,
        fio_extra_args: args.fio_args,
        keep_file: args.keep_file,
        json: args.json,
        device: Some((libc::major(dev), libc::minor(dev))),
    })
}

/// Runs one workload: R F R F ... and the medians, ratios and targets.
fn run_workload(settings: &Settings, job: Job) -> Result<WorkloadReport> {
    let budget = Budget {
        runtime: Duration::from_secs(settings.runtime_s),
        io_bytes: settings.io_size_bytes,
    };
    let fio_args = fio_args(settings, &job, budget);
    let mut runs = Vec::with_capacity(2 * settings.runs as usize);
    let mut registered = true;
    for run in 1..=settings.runs {
        progress(format_args!("{} run {run}/{}: reactor", job.kind, settings.runs));
        let outcome = run_reactor(settings, job, budget)
            .with_context(|| format!("{} run {run}: the reactor side failed", job.kind))?;
        registered &= outcome.registration == Registration::Registered;
        runs.push(RunRecord { run, side: Side::Reactor, measurement: outcome.measurement });
        progress(format_args!("{} run {run}/{}: fio", job.kind, settings.runs));
        let measurement = run_fio(&settings.fio, &fio_args, job.direction, settings.device)
            .with_context(|| format!("{} run {run}: the fio side failed", job.kind))?;
        runs.push(RunRecord { run, side: Side::Fio, measurement });
    }
    let median_reactor = medians(&runs, Side::Reactor);
    let median_fio = medians(&runs, Side::Fio);
    let ratios = ratios(&median_reactor, &median_fio);
    Ok(WorkloadReport {
        workload: job.kind,
        job,
        fio_command: shell_line(&settings.fio, &fio_args),
        reactor_pool_registered: registered,
        runs,
        median_reactor,
        median_fio,
        targets: targets(&ratios),
        ratios,
    })
}

fn progress(message: fmt::Arguments<'_>) {
    eprintln!("reactor-vs-fio: {message}");
}

// ---------------------------------------------------------------------------------------------
// The test file.

/// The preallocated test file; removed on drop unless `--keep-file`.
struct TestFile {
    path: PathBuf,
    keep: bool,
}

impl TestFile {
    /// Creates the file at its full size with fallocate (blocks allocated, not yet written).
    fn create(settings: &Settings) -> Result<TestFile> {
        let path = settings.file.clone();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .with_context(|| format!("creating the test file {}", path.display()))?;
        let test_file = TestFile { path, keep: settings.keep_file };
        ioengine::sys::fallocate(&file, 0, 0, settings.file_size_bytes).with_context(|| {
            format!(
                "preallocating {} bytes for {} (is there room on the file system?)",
                settings.file_size_bytes,
                test_file.path.display()
            )
        })?;
        Ok(test_file)
    }
}

impl Drop for TestFile {
    fn drop(&mut self) {
        if !self.keep {
            if let Err(err) = std::fs::remove_file(&self.path) {
                progress(format_args!("could not remove {}: {err}", self.path.display()));
            }
        }
    }
}

/// Writes the whole file once with the reactor (1 MiB sequential writes, iodepth 8), so that
/// every later read hits written blocks and every later write overwrites them, then syncs it.
fn prefill(settings: &Settings) -> Result<Prefill> {
    let path = &settings.file;
    let job = WorkloadKind::Seqwrite.job();
    let budget = Budget {
        runtime: Duration::from_secs(PREFILL_RUNTIME_S_MAX),
        io_bytes: Some(settings.file_size_bytes),
    };
    let outcome =
        run_reactor(settings, job, budget).context("prefilling the test file with the reactor")?;
    File::open(path)
        .and_then(|file| file.sync_all())
        .with_context(|| format!("syncing {} after the prefill", path.display()))?;
    let m = outcome.measurement;
    ensure!(
        m.bytes == settings.file_size_bytes,
        "the prefill wrote {} of {} bytes",
        m.bytes,
        settings.file_size_bytes
    );
    Ok(Prefill {
        by: "reactor",
        description: "1 MiB sequential O_DIRECT writes at iodepth 8 over the whole file, once, \
                      then fsync"
            .to_owned(),
        bytes: m.bytes,
        runtime_s: m.runtime_s,
        mb_per_s: m.mb_per_s,
    })
}

fn open_direct(path: &Path) -> Result<File> {
    OpenOptions::new().read(true).write(true).custom_flags(libc::O_DIRECT).open(path).with_context(
        || {
            format!(
                "opening {} with O_DIRECT (some file systems refuse it: pick a --dir on a \
                 disk file system)",
                path.display()
            )
        },
    )
}

// ---------------------------------------------------------------------------------------------
// The reactor side.

#[derive(Debug)]
struct ReactorOutcome {
    measurement: Measurement,
    registration: Registration,
}

/// Runs `job` on a fresh core on its own thread pinned to `cpu`.
fn run_reactor(settings: &Settings, job: Job, budget: Budget) -> Result<ReactorOutcome> {
    let settings = settings.clone();
    std::thread::Builder::new()
        .name("reactor-bench".to_owned())
        .spawn(move || reactor_thread(&settings, job, budget))
        .context("starting the reactor thread")?
        .join()
        .map_err(|_| anyhow!("the reactor thread panicked"))?
}

fn reactor_thread(settings: &Settings, job: Job, budget: Budget) -> Result<ReactorOutcome> {
    let (path, cpu) = (settings.file.as_path(), settings.cpu);
    ioengine::sys::pin_current_thread(cpu)
        .with_context(|| format!("pinning the reactor thread to CPU {cpu}"))?;
    let ring_entries = u32::try_from(2 * job.iodepth)?.next_power_of_two().max(RING_ENTRIES_MIN);
    let core = Core::new(ring_entries).context("creating the ioengine core")?;
    let pool = BufPool::new(PoolConfig {
        buf_bytes: job.bs_bytes,
        count: job.iodepth,
        align_bytes: ALIGN_BYTES,
    });
    let registration = core.reactor().register_pool(&pool);
    let file = SharedFd::new(OwnedFd::from(open_direct(path)?));
    let seed = seed_from_clock();
    let before = Sample::read(settings.device)?;
    let started = Instant::now();
    let plan = Rc::new(Plan::new(job, budget, settings.file_size_bytes, started)?);
    let result = core.block_on(drive(file, pool.clone(), plan.clone(), seed));
    let elapsed = started.elapsed();
    let after = Sample::read(settings.device)?;
    // The ring goes first: the pool's memory must not be freed while registered.
    drop(core);
    drop(pool);
    result.with_context(|| format!("{} I/O on {}", job.kind, path.display()))?;
    let measurement = plan.measurement(elapsed, &before, &after);
    Ok(ReactorOutcome { measurement, registration })
}

/// What the workers of one run share: where the next I/O goes, when to stop, and the counts.
struct Plan {
    job: Job,
    file_blocks: u64,
    deadline: Instant,
    budget_bytes: u64,
    issued_bytes: Cell<u64>,
    cursor_bytes: Cell<u64>,
    stopped: Cell<bool>,
    ios: Cell<u64>,
    latency_ns: RefCell<Histogram<u64>>,
}

impl Plan {
    fn new(job: Job, budget: Budget, file_bytes: u64, started: Instant) -> Result<Plan> {
        let latency_ns = Histogram::new_with_bounds(1, LATENCY_NS_MAX, LATENCY_SIGNIFICANT_DIGITS)
            .context("creating the latency histogram")?;
        Ok(Plan {
            job,
            file_blocks: file_bytes / job.bs_bytes as u64,
            deadline: started + budget.runtime,
            budget_bytes: budget.io_bytes.unwrap_or(u64::MAX),
            issued_bytes: Cell::new(0),
            cursor_bytes: Cell::new(0),
            stopped: Cell::new(false),
            ios: Cell::new(0),
            latency_ns: RefCell::new(latency_ns),
        })
    }

    /// The offset of the next I/O, or `None` when the run is over.
    fn next_offset(&self, rng: &mut XorShift64Star) -> Option<u64> {
        let bs = self.job.bs_bytes as u64;
        if self.stopped.get() || self.issued_bytes.get() >= self.budget_bytes {
            return None;
        }
        self.issued_bytes.set(self.issued_bytes.get() + bs);
        match self.job.pattern {
            Pattern::Sequential => {
                // Wraps at the end of the file, as fio's time_based sequential jobs do.
                let offset = self.cursor_bytes.get();
                self.cursor_bytes.set((offset + bs) % (self.file_blocks * bs));
                Some(offset)
            }
            Pattern::Random => Some(rng.below(self.file_blocks) * bs),
        }
    }

    fn record(&self, latency: Duration) {
        let ns = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        self.latency_ns.borrow_mut().saturating_record(ns.clamp(1, LATENCY_NS_MAX));
        self.ios.set(self.ios.get() + 1);
    }

    fn stop(&self) {
        self.stopped.set(true);
    }

    fn measurement(&self, elapsed: Duration, before: &Sample, after: &Sample) -> Measurement {
        let latency_ns = self.latency_ns.borrow();
        let ios = self.ios.get();
        let us = |ns: u64| ns as f64 / 1e3;
        let latency = Latency {
            p50_us: us(latency_ns.value_at_quantile(0.50)),
            p99_us: us(latency_ns.value_at_quantile(0.99)),
            p999_us: us(latency_ns.value_at_quantile(0.999)),
            max_us: us(latency_ns.max()),
        };
        let cpu_s = (after.cpu.thread_ns - before.cpu.thread_ns) as f64 / 1e9;
        let cpu_all_s = ticks_s(after.cpu.process_ticks - before.cpu.process_ticks);
        let mut m = Measurement::new(
            ios,
            ios * self.job.bs_bytes as u64,
            elapsed.as_secs_f64(),
            latency,
            cpu_s,
            cpu_all_s,
        );
        m.set_device(DeviceCounters::delta(before.device, after.device));
        m
    }
}

/// Starts one worker per queue slot and waits for all; the first error wins.
async fn drive(
    file: SharedFd,
    pool: BufPool,
    plan: Rc<Plan>,
    seed: u64,
) -> Result<(), ioengine::Error> {
    let mut handles = Vec::with_capacity(plan.job.iodepth);
    for worker_index in 0..plan.job.iodepth as u64 {
        let buf = pool.try_get().expect("the pool holds one buffer per worker");
        let rng = XorShift64Star::new(seed.wrapping_add(worker_index));
        handles.push(spawn(worker(file.clone(), buf, plan.clone(), rng)));
    }
    let mut first_error = None;
    for handle in handles {
        if let Err(err) = handle.await {
            first_error.get_or_insert(err);
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// One queue slot: issues an I/O, waits for it, records its latency, and goes again until the
/// plan says stop. A failed I/O stops every worker.
async fn worker(
    file: SharedFd,
    mut buf: PooledBuf,
    plan: Rc<Plan>,
    mut rng: XorShift64Star,
) -> Result<(), ioengine::Error> {
    let bs = plan.job.bs_bytes;
    if plan.job.direction == Direction::Write {
        // Incompressible data, as fio writes.
        for chunk in buf.spare_mut()[..bs].chunks_mut(8) {
            chunk.copy_from_slice(&rng.next().to_le_bytes()[..chunk.len()]);
        }
        buf.set_len(bs);
    }
    while let Some(offset) = plan.next_offset(&mut rng) {
        let issued = Instant::now();
        let (result, back) = match plan.job.direction {
            Direction::Write => {
                write_all_at(&file, buf, 0, bs, offset, WriteFlags::default()).await
            }
            Direction::Read => read_exact_at(&file, buf, 0, bs, offset).await,
        };
        buf = back;
        if let Err(err) = result {
            plan.stop();
            return Err(err);
        }
        let completed = Instant::now();
        plan.record(completed - issued);
        if completed >= plan.deadline {
            plan.stop();
        }
    }
    Ok(())
}

/// xorshift64*: a fast PRNG, plenty for picking offsets (fio uses a Tausworthe generator).
#[derive(Debug, Clone)]
struct XorShift64Star(u64);

impl XorShift64Star {
    fn new(seed: u64) -> XorShift64Star {
        // splitmix64 spreads similar seeds apart and never yields the forbidden zero state
        // for the first few seeds; `| 1` makes sure of it.
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        XorShift64Star((z ^ (z >> 31)) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (Lemire's multiply-shift; the bias is below 2^-40 for any file here).
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next()) * u128::from(n)) >> 64) as u64
    }
}

/// A fresh seed per run, like fio's `--randrepeat=0`.
fn seed_from_clock() -> u64 {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    now.as_secs() ^ u64::from(now.subsec_nanos()).rotate_left(32)
}

/// What is sampled before and after a reactor run.
#[derive(Debug, Clone, Copy)]
struct Sample {
    cpu: CpuSample,
    device: Option<DeviceCounters>,
}

impl Sample {
    fn read(device: Option<(u32, u32)>) -> Result<Sample> {
        Ok(Sample { cpu: CpuSample::read()?, device: DeviceCounters::read(device) })
    }
}

/// Requests and bytes a block device completed (reads + writes), and the sum over time of
/// the requests in flight (`in_queue_ms`, "weighted time doing I/O"), from /proc/diskstats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
struct DeviceCounters {
    requests: u64,
    bytes: u64,
    in_queue_ms: u64,
}

impl DeviceCounters {
    /// The counters of `device` (major, minor); `None` when it has no /proc/diskstats line
    /// (a file system without a block device under it).
    fn read(device: Option<(u32, u32)>) -> Option<DeviceCounters> {
        let (major, minor) = device?;
        let text = std::fs::read_to_string("/proc/diskstats").ok()?;
        parse_diskstats(&text, major, minor)
    }

    fn delta(before: Option<DeviceCounters>, after: Option<DeviceCounters>) -> Option<Self> {
        let (before, after) = (before?, after?);
        Some(DeviceCounters {
            requests: after.requests.wrapping_sub(before.requests),
            bytes: after.bytes.wrapping_sub(before.bytes),
            in_queue_ms: after.in_queue_ms.wrapping_sub(before.in_queue_ms),
        })
    }

    /// Requests in flight on the device on average over `runtime_s` (Little's law).
    fn queue_depth(&self, runtime_s: f64) -> f64 {
        if runtime_s > 0.0 { self.in_queue_ms as f64 / (runtime_s * 1e3) } else { 0.0 }
    }
}

/// Reads and writes completed, sectors moved (512 bytes each, whatever the block size) and
/// weighted time of one /proc/diskstats line: `major minor name reads merged sectors ms writes
/// merged sectors ms in-flight io-ms weighted-ms ...`.
fn parse_diskstats(text: &str, major: u32, minor: u32) -> Option<DeviceCounters> {
    text.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let num = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
        if num(0)? != u64::from(major) || num(1)? != u64::from(minor) {
            return None;
        }
        Some(DeviceCounters {
            requests: num(3)? + num(7)?,
            bytes: (num(5)? + num(9)?) * 512,
            in_queue_ms: num(13)?,
        })
    })
}

/// CPU time used so far: the whole process (user + system, clock ticks, from
/// /proc/self/stat, so io_uring's worker threads count as they do in fio's getrusage), and
/// the calling thread alone (ns, from /proc/thread-self/schedstat).
#[derive(Debug, Clone, Copy)]
struct CpuSample {
    process_ticks: u64,
    children_ticks: u64,
    thread_ns: u64,
}

impl CpuSample {
    fn read() -> Result<CpuSample> {
        let stat = std::fs::read_to_string("/proc/self/stat").context("reading /proc/self/stat")?;
        let schedstat = std::fs::read_to_string("/proc/thread-self/schedstat")
            .context("reading /proc/thread-self/schedstat")?;
        let (process_ticks, children_ticks) = parse_stat_cpu_ticks(&stat)?;
        Ok(CpuSample { process_ticks, children_ticks, thread_ns: parse_schedstat_ns(&schedstat)? })
    }
}

/// utime + stime (fields 14 and 15) and cutime + cstime (16 and 17: reaped children) of a
/// /proc/PID/stat line. The command name (field 2) may hold spaces and parentheses, so fields
/// are counted from its closing parenthesis.
fn parse_stat_cpu_ticks(stat: &str) -> Result<(u64, u64)> {
    let rest = stat.rsplit_once(')').map(|(_, rest)| rest).context("no ')' in /proc/self/stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3, so field N is fields[N - 3].
    let field = |n: usize| -> Result<u64> {
        let text =
            fields.get(n - 3).with_context(|| format!("/proc/self/stat has no field {n}"))?;
        text.parse().with_context(|| format!("/proc/self/stat field {n} is {text:?}"))
    };
    Ok((field(14)? + field(15)?, field(16)? + field(17)?))
}

fn ticks_s(ticks: u64) -> f64 {
    ticks as f64 / CLOCK_TICKS_PER_S as f64
}

/// The first field of /proc/thread-self/schedstat: time on a CPU, in ns.
fn parse_schedstat_ns(schedstat: &str) -> Result<u64> {
    let first = schedstat.split_whitespace().next().context("empty schedstat")?;
    first.parse().with_context(|| format!("schedstat's first field is {first:?}"))
}

// ---------------------------------------------------------------------------------------------
// The fio side.

/// `fio --version`, or the error that tells how to install it.
fn fio_version(fio: &Path) -> Result<String> {
    let output = match Command::new(fio).arg("--version").output() {
        Ok(output) => output,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => bail!(
            "fio not found (looked for `{}`): install it with `apt-get install fio`, or pass \
             --fio PATH",
            fio.display()
        ),
        Err(err) => {
            return Err(err).with_context(|| format!("running `{} --version`", fio.display()));
        }
    };
    ensure!(output.status.success(), "`{} --version` failed: {}", fio.display(), output.status);
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// fio's command line for `job`: the options of the issue, plus file, size, time, CPU and
/// JSON output with total-latency percentiles.
fn fio_args(settings: &Settings, job: &Job, budget: Budget) -> Vec<String> {
    let mut args = vec![
        format!("--name=shingle-{}", job.kind),
        format!("--filename={}", settings.file.display()),
        format!("--size={}", settings.file_size_bytes),
        format!("--rw={}", job.fio_rw()),
        format!("--bs={}", job.bs_bytes),
        format!("--iodepth={}", job.iodepth),
        "--direct=1".to_owned(),
        "--ioengine=io_uring".to_owned(),
    ];
    if job.pattern == Pattern::Random {
        args.extend(["--norandommap".to_owned(), "--randrepeat=0".to_owned()]);
    }
    args.push(format!("--runtime={}", budget.runtime.as_secs()));
    match budget.io_bytes {
        Some(io_bytes) => args.push(format!("--io_size={io_bytes}")),
        None => args.push("--time_based".to_owned()),
    }
    args.extend([
        format!("--cpus_allowed={}", settings.cpu),
        "--lat_percentiles=1".to_owned(),
        "--output-format=json".to_owned(),
    ]);
    args.extend(settings.fio_extra_args.iter().cloned());
    args
}

fn shell_line(program: &Path, args: &[String]) -> String {
    std::iter::once(program.display().to_string())
        .chain(args.iter().cloned())
        .collect::<Vec<_>>()
        .join(" ")
}

fn run_fio(
    fio: &Path,
    args: &[String],
    direction: Direction,
    device: Option<(u32, u32)>,
) -> Result<Measurement> {
    let device_before = DeviceCounters::read(device);
    let cpu_before = CpuSample::read()?;
    let output = Command::new(fio)
        .args(args)
        .output()
        .with_context(|| format!("running {}", shell_line(fio, args)))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    ensure!(
        output.status.success(),
        "{} exited with {}:\n{}\n{}",
        shell_line(fio, args),
        output.status,
        String::from_utf8_lossy(&output.stderr).trim(),
        stdout.trim()
    );
    let cpu_after = CpuSample::read()?;
    let mut m = parse_fio_json(&stdout, direction)?;
    m.set_cpu_all_s(ticks_s(cpu_after.children_ticks - cpu_before.children_ticks));
    // fio's I/O phase is its job_runtime; in_queue_ms only grows while I/O is in flight, so
    // the start-up inside the sampling window does not dilute the queue depth.
    m.set_device(DeviceCounters::delta(device_before, DeviceCounters::read(device)));
    Ok(m)
}

/// Reads one job's numbers from fio's `--output-format=json` (fio may print notes before it).
fn parse_fio_json(stdout: &str, direction: Direction) -> Result<Measurement> {
    let start = stdout.find('{').context("fio printed no JSON")?;
    let root: Value = serde_json::from_str(&stdout[start..]).context("parsing fio's JSON")?;
    let job = root.pointer("/jobs/0").context("fio's JSON has no jobs[0]")?;
    let error = number(job, "/error")?;
    ensure!(error == 0.0, "fio reported error {error} for its job");
    let side = match direction {
        Direction::Read => "read",
        Direction::Write => "write",
    };
    let io = job.get(side).with_context(|| format!("fio's JSON has no jobs[0].{side}"))?;
    let runtime_s = number(job, "/job_runtime")? / 1e3;
    let cpu_percent = number(job, "/usr_cpu")? + number(job, "/sys_cpu")?;
    let ios = number(io, "/total_ios")? as u64;
    ensure!(ios > 0, "fio did no {side} I/O");
    // `lat_ns` (submission + completion) is what the reactor measures; fall back to clat.
    let lat = if io.pointer("/lat_ns/percentile").is_some() { "lat_ns" } else { "clat_ns" };
    let percentile_us =
        |key: &str| -> Result<f64> { Ok(number(io, &format!("/{lat}/percentile/{key}"))? / 1e3) };
    let latency = Latency {
        p50_us: percentile_us("50.000000")?,
        p99_us: percentile_us("99.000000")?,
        p999_us: percentile_us("99.900000")?,
        max_us: number(io, &format!("/{lat}/max"))? / 1e3,
    };
    let mut m = Measurement::new(
        ios,
        number(io, "/io_bytes")? as u64,
        runtime_s,
        latency,
        cpu_percent / 100.0 * runtime_s,
        // Known only once fio has been reaped: see `run_fio`.
        0.0,
    );
    // fio's own rates (from its runtime) rather than ours, so the table shows what fio says.
    m.iops = number(io, "/iops")?;
    m.mb_per_s = number(io, "/bw_bytes")? / 1e6;
    m.mib_per_s = number(io, "/bw_bytes")? / f64::from(1 << 20);
    m.clat_p99_us = Some(number(io, "/clat_ns/percentile/99.000000")? / 1e3);
    Ok(m)
}

/// A number at a JSON pointer, or an error naming the pointer.
fn number(value: &Value, pointer: &str) -> Result<f64> {
    value
        .pointer(pointer)
        .and_then(Value::as_f64)
        .with_context(|| format!("fio's JSON has no number at {pointer}"))
}

// ---------------------------------------------------------------------------------------------
// Arithmetic over runs.

impl Measurement {
    fn new(
        ios: u64,
        bytes: u64,
        runtime_s: f64,
        latency: Latency,
        cpu_s: f64,
        cpu_all_s: f64,
    ) -> Measurement {
        let per_io_us = |cpu_s: f64| if ios > 0 { cpu_s * 1e6 / ios as f64 } else { 0.0 };
        let per_s = |x: f64| if runtime_s > 0.0 { x / runtime_s } else { 0.0 };
        Measurement {
            ios,
            bytes,
            runtime_s,
            iops: per_s(ios as f64),
            mb_per_s: per_s(bytes as f64) / 1e6,
            mib_per_s: per_s(bytes as f64) / f64::from(1 << 20),
            lat_p50_us: latency.p50_us,
            lat_p99_us: latency.p99_us,
            lat_p999_us: latency.p999_us,
            lat_max_us: latency.max_us,
            cpu_s,
            cpu_percent: per_s(cpu_s) * 100.0,
            cpu_per_io_us: per_io_us(cpu_s),
            cpu_all_s,
            cpu_all_per_io_us: per_io_us(cpu_all_s),
            clat_p99_us: None,
            device: None,
            device_queue_depth: None,
        }
    }
}

impl Measurement {
    fn set_device(&mut self, device: Option<DeviceCounters>) {
        self.device = device;
        self.device_queue_depth = device.map(|d| d.queue_depth(self.runtime_s));
    }

    fn set_cpu_all_s(&mut self, cpu_all_s: f64) {
        self.cpu_all_s = cpu_all_s;
        self.cpu_all_per_io_us = if self.ios > 0 { cpu_all_s * 1e6 / self.ios as f64 } else { 0.0 };
    }
}

impl Metrics {
    fn of(m: &Measurement) -> Metrics {
        Metrics {
            iops: m.iops,
            mb_per_s: m.mb_per_s,
            mib_per_s: m.mib_per_s,
            lat_p50_us: m.lat_p50_us,
            lat_p99_us: m.lat_p99_us,
            lat_p999_us: m.lat_p999_us,
            cpu_percent: m.cpu_percent,
            cpu_per_io_us: m.cpu_per_io_us,
            cpu_all_per_io_us: m.cpu_all_per_io_us,
            device_queue_depth: m.device_queue_depth.unwrap_or(f64::NAN),
        }
    }
}

fn medians(runs: &[RunRecord], side: Side) -> Metrics {
    let of = |metric: fn(&Measurement) -> f64| {
        median(runs.iter().filter(|r| r.side == side).map(|r| metric(&r.measurement)).collect())
    };
    Metrics {
        iops: of(|m| m.iops),
        mb_per_s: of(|m| m.mb_per_s),
        mib_per_s: of(|m| m.mib_per_s),
        lat_p50_us: of(|m| m.lat_p50_us),
        lat_p99_us: of(|m| m.lat_p99_us),
        lat_p999_us: of(|m| m.lat_p999_us),
        cpu_percent: of(|m| m.cpu_percent),
        cpu_per_io_us: of(|m| m.cpu_per_io_us),
        cpu_all_per_io_us: of(|m| m.cpu_all_per_io_us),
        device_queue_depth: of(|m| m.device_queue_depth.unwrap_or(f64::NAN)),
    }
}

/// The median (the mean of the middle two for an even count); NaN for none.
fn median(mut values: Vec<f64>) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 { values[mid] } else { (values[mid - 1] + values[mid]) / 2.0 }
}

fn ratios(reactor: &Metrics, fio: &Metrics) -> Ratios {
    Ratios {
        iops: reactor.iops / fio.iops,
        mb_per_s: reactor.mb_per_s / fio.mb_per_s,
        lat_p50: reactor.lat_p50_us / fio.lat_p50_us,
        lat_p99: reactor.lat_p99_us / fio.lat_p99_us,
        lat_p999: reactor.lat_p999_us / fio.lat_p999_us,
        cpu_per_io: reactor.cpu_per_io_us / fio.cpu_per_io_us,
        cpu_all_per_io: reactor.cpu_all_per_io_us / fio.cpu_all_per_io_us,
    }
}

fn targets(ratios: &Ratios) -> Vec<Target> {
    vec![
        Target {
            name: "MB/s",
            ratio: ratios.mb_per_s,
            rule: "reactor/fio >= 0.95",
            pass: ratios.mb_per_s >= THROUGHPUT_RATIO_MIN,
        },
        Target {
            name: "IOPS",
            ratio: ratios.iops,
            rule: "reactor/fio >= 0.95",
            pass: ratios.iops >= THROUGHPUT_RATIO_MIN,
        },
        Target {
            name: "CPU per I/O (submitting thread)",
            ratio: ratios.cpu_per_io,
            rule: "reactor/fio < 1",
            pass: ratios.cpu_per_io < CPU_PER_IO_RATIO_MAX,
        },
        Target {
            name: "CPU per I/O (all threads)",
            ratio: ratios.cpu_all_per_io,
            rule: "reactor/fio < 1",
            pass: ratios.cpu_all_per_io < CPU_PER_IO_RATIO_MAX,
        },
    ]
}

// ---------------------------------------------------------------------------------------------
// The system under test.

/// Where the numbers come from: printed at the top of every report.
#[derive(Debug, Clone, Serialize)]
struct SystemInfo {
    date_utc: String,
    kernel_release: String,
    kernel_version: String,
    cpu_model: String,
    cpus_online: usize,
    mount_point: String,
    fs_type: String,
    mount_source: String,
    mount_options: String,
    device: String,
    device_major_minor: String,
    device_driver: Option<String>,
    device_scheduler: Option<String>,
    device_rotational: Option<bool>,
    device_logical_block_bytes: Option<u32>,
    device_write_cache: Option<String>,
    fio_version: String,
}

impl SystemInfo {
    fn collect(dir: &Path, fio_version: String) -> Result<SystemInfo> {
        let dev = std::fs::metadata(dir).with_context(|| format!("stat {}", dir.display()))?.dev();
        let (major, minor) = (libc::major(dev), libc::minor(dev));
        let mount = find_mount(dir, major, minor)?;
        let sys_dir = PathBuf::from(format!("/sys/dev/block/{major}:{minor}"));
        let queue = ioengine::sys::sysfs::queue_attrs(dev).ok();
        Ok(SystemInfo {
            date_utc: utc_date(SystemTime::now()),
            kernel_release: read_trimmed("/proc/sys/kernel/osrelease")?,
            kernel_version: read_trimmed("/proc/sys/kernel/version")?,
            cpu_model: cpu_model()?,
            cpus_online: std::thread::available_parallelism().map_or(0, usize::from),
            mount_point: mount.mount_point,
            fs_type: mount.fs_type,
            mount_source: mount.source,
            mount_options: mount.options,
            device: uevent_devname(&sys_dir).unwrap_or_else(|| "(none: not a block device)".into()),
            device_major_minor: format!("{major}:{minor}"),
            device_driver: std::fs::read_link(sys_dir.join("device/driver"))
                .ok()
                .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned())),
            device_scheduler: read_queue_file(&sys_dir, "scheduler"),
            device_rotational: queue.map(|q| q.rotational),
            device_logical_block_bytes: queue.map(|q| q.logical_block_size),
            device_write_cache: queue.map(|q| format!("{:?}", q.write_cache)),
            fio_version,
        })
    }
}

fn read_trimmed(path: &str) -> Result<String> {
    Ok(std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?.trim().to_owned())
}

fn cpu_model() -> Result<String> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").context("reading /proc/cpuinfo")?;
    Ok(cpuinfo
        .lines()
        .find_map(|line| line.strip_prefix("model name").and_then(|r| r.split_once(':')))
        .map_or_else(|| "unknown".to_owned(), |(_, model)| model.trim().to_owned()))
}

struct Mount {
    mount_point: String,
    fs_type: String,
    source: String,
    options: String,
}

/// The mount holding `dir`: the longest mount point above it with the same device, from
/// /proc/self/mountinfo (fields: id parent major:minor root mount-point options ... - fstype
/// source super-options).
fn find_mount(dir: &Path, major: u32, minor: u32) -> Result<Mount> {
    let mountinfo =
        std::fs::read_to_string("/proc/self/mountinfo").context("reading /proc/self/mountinfo")?;
    let device = format!("{major}:{minor}");
    mountinfo
        .lines()
        .filter_map(|line| {
            let (head, tail) = line.split_once(" - ")?;
            let head: Vec<&str> = head.split_whitespace().collect();
            let tail: Vec<&str> = tail.split_whitespace().collect();
            let mount_point = unescape_mount_path(head.get(4)?);
            if *head.get(2)? != device || !dir.starts_with(&mount_point) {
                return None;
            }
            Some(Mount {
                mount_point,
                fs_type: (*tail.first()?).to_owned(),
                source: (*tail.get(1)?).to_owned(),
                options: tail.get(2).map_or_else(String::new, |o| (*o).to_owned()),
            })
        })
        .max_by_key(|mount| mount.mount_point.len())
        .with_context(|| format!("no mount of device {device} holds {}", dir.display()))
}

/// mountinfo escapes space, tab, newline and backslash as octal (`\040`).
fn unescape_mount_path(escaped: &str) -> String {
    let mut out = String::with_capacity(escaped.len());
    let mut rest = escaped;
    while let Some(pos) = rest.find('\\') {
        out.push_str(&rest[..pos]);
        let code = rest.get(pos + 1..pos + 4).and_then(|o| u8::from_str_radix(o, 8).ok());
        match code {
            Some(byte) => {
                out.push(char::from(byte));
                rest = &rest[pos + 4..];
            }
            None => {
                out.push('\\');
                rest = &rest[pos + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

fn uevent_devname(sys_dir: &Path) -> Option<String> {
    let uevent = std::fs::read_to_string(sys_dir.join("uevent")).ok()?;
    uevent.lines().find_map(|l| l.strip_prefix("DEVNAME=")).map(|name| format!("/dev/{name}"))
}

/// A queue attribute of the device or, for a partition, of its disk.
fn read_queue_file(sys_dir: &Path, name: &str) -> Option<String> {
    [sys_dir.join("queue").join(name), sys_dir.join("../queue").join(name)]
        .iter()
        .find_map(|path| std::fs::read_to_string(path).ok())
        .map(|text| text.trim().to_owned())
}

/// `YYYY-MM-DD HH:MM UTC` (civil-from-days, Howard Hinnant's algorithm).
fn utc_date(now: SystemTime) -> String {
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = (secs / 86_400) as i64;
    let (hour, minute) = ((secs % 86_400) / 3600, (secs % 3600) / 60);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {hour:02}:{minute:02} UTC")
}

/// Parses `4096`, `64M`, `1G`, `1GiB` (binary multiples) into bytes.
fn parse_size_bytes(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let digits_end = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (digits, suffix) = text.split_at(digits_end);
    let number: u64 = digits.parse().map_err(|_| format!("{text:?} is not a size"))?;
    let shift = match suffix.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kib" => 10,
        "m" | "mib" => 20,
        "g" | "gib" => 30,
        "t" | "tib" => 40,
        other => return Err(format!("unknown size suffix {other:?} (use K, M, G or T)")),
    };
    number.checked_mul(1 << shift).ok_or_else(|| format!("{text:?} overflows"))
}

// ---------------------------------------------------------------------------------------------
// The report.

fn print_report(report: &Report) {
    print_header(report);
    for workload in &report.workloads {
        print_workload(workload, &report.settings);
    }
    println!();
    println!("MB = 10^6 bytes, MiB = 2^20 bytes. Latency: from submission to the completion seen");
    println!("by the submitter (fio: lat_ns = slat + clat). CPU %: of one CPU, submitting thread.");
    println!("CPU µs per I/O, thread: user + system time of the thread that submits and reaps");
    println!("(reactor core thread; fio job thread, fio's usr_cpu + sys_cpu). All: every thread");
    println!("(reactor process; fio process tree), io_uring workers included; 10 ms resolution.");
    println!("Device QD: requests in flight on the device on average (/proc/diskstats).");
    println!("Ratios are reactor / fio of the medians: > 1 is better for IOPS and MB/s, < 1 is");
    println!(
        "better for latency and CPU (CPU per I/O ratio = reactor µs per I/O ÷ fio µs per I/O)."
    );
}

fn print_header(report: &Report) {
    let s = &report.system;
    let settings = &report.settings;
    println!("reactor-vs-fio  {}", s.date_utc);
    println!("kernel   {} ({})", s.kernel_release, s.kernel_version);
    println!(
        "cpu      {} ({} online), reactor and fio pinned to CPU {}",
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
        "file     {} ({} MiB), {} run(s) per side of {} s{}{}",
        settings.file.display(),
        settings.file_size_bytes >> 20,
        settings.runs,
        settings.runtime_s,
        settings.io_size_bytes.map_or(String::new(), |b| format!(" or {b} bytes")),
        if settings.smoke { " (smoke)" } else { "" },
    );
    println!(
        "prefill  by the {}: {} ({:.0} MB/s)",
        report.prefill.by, report.prefill.description, report.prefill.mb_per_s
    );
    println!("fio      {}", s.fio_version);
}

fn print_workload(w: &WorkloadReport, settings: &Settings) {
    println!();
    println!(
        "== {}: {} KiB {}, iodepth {}, O_DIRECT, {} s per run; reactor buffers {} ==",
        w.workload,
        w.job.bs_bytes >> 10,
        match (w.job.pattern, w.job.direction) {
            (Pattern::Sequential, Direction::Write) => "sequential writes",
            (Pattern::Sequential, Direction::Read) => "sequential reads",
            (Pattern::Random, Direction::Write) => "random writes",
            (Pattern::Random, Direction::Read) => "random reads",
        },
        w.job.iodepth,
        settings.runtime_s,
        if w.reactor_pool_registered { "registered (fixed)" } else { "NOT registered" },
    );
    println!("fio: {}", w.fio_command);
    println!(
        "{:<8}{:<9}{:>9}{:>8}{:>8}{:>10}{:>10}{:>10}{:>7}{:>8}{:>8}{:>7}",
        "", "", "", "", "", "latency", "", "", "CPU", "CPU µs", "per I/O", "device"
    );
    println!(
        "{:<8}{:<9}{:>9}{:>8}{:>8}{:>10}{:>10}{:>10}{:>7}{:>8}{:>8}{:>7}",
        "run",
        "side",
        "IOPS",
        "MB/s",
        "MiB/s",
        "p50 µs",
        "p99 µs",
        "p99.9 µs",
        "%",
        "thread",
        "all",
        "QD"
    );
    for r in &w.runs {
        print_row(&r.run.to_string(), r.side, &Metrics::of(&r.measurement));
    }
    print_row("median", Side::Reactor, &w.median_reactor);
    print_row("median", Side::Fio, &w.median_fio);
    let r = &w.ratios;
    println!(
        "{:<8}{:<9}{:>9.3}{:>8.3}{:>8}{:>10.3}{:>10.3}{:>10.3}{:>7}{:>8.3}{:>8.3}",
        "ratio",
        "r/f",
        r.iops,
        r.mb_per_s,
        "",
        r.lat_p50,
        r.lat_p99,
        r.lat_p999,
        "",
        r.cpu_per_io,
        r.cpu_all_per_io
    );
    for t in &w.targets {
        let verdict = if t.pass { "PASS" } else { "MISS" };
        println!("target {verdict}: {} ({} is {:.3})", t.name, t.rule, t.ratio);
    }
    for r in &w.runs {
        let m = &r.measurement;
        if let Some(device) = m.device.filter(|d| d.bytes < m.bytes / 10 * 9) {
            println!(
                "warning: run {} {}: the device moved {} of {} bytes: was the I/O served by a \
                 cache instead of the device?",
                r.run, r.side, device.bytes, m.bytes
            );
        }
    }
}

fn print_row(run: &str, side: Side, m: &Metrics) {
    println!(
        "{:<8}{:<9}{:>9.0}{:>8.1}{:>8.1}{:>10.1}{:>10.1}{:>10.1}{:>7.1}{:>8.2}{:>8.2}{:>7.1}",
        run,
        side.to_string(),
        m.iops,
        m.mb_per_s,
        m.mib_per_s,
        m.lat_p50_us,
        m.lat_p99_us,
        m.lat_p999_us,
        m.cpu_percent,
        m.cpu_per_io_us,
        m.cpu_all_per_io_us,
        m.device_queue_depth
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_suffixes() {
        assert_eq!(parse_size_bytes("4096"), Ok(4096));
        assert_eq!(parse_size_bytes("64M"), Ok(64 << 20));
        assert_eq!(parse_size_bytes("1GiB"), Ok(1 << 30));
        assert!(parse_size_bytes("1X").is_err());
        assert!(parse_size_bytes("G").is_err());
    }

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        let stat = "42 (a (b) c) S 1 42 42 0 -1 4194560 100 0 0 0 250 75 7 3 20 0 1 0";
        assert_eq!(parse_stat_cpu_ticks(stat).unwrap(), (325, 10));
        assert_eq!(parse_schedstat_ns("841197 120506 1\n").unwrap(), 841_197);
    }

    #[test]
    fn diskstats_count_reads_and_writes_of_one_device() {
        let text = " 254       0 vda 10 1 80 5 20 2 160 7 0 9 1500 0 0 0 0 0 0\n \
                    254       1 vda1 1 0 8 0 1 0 8 0 0 0 0 0 0 0 0 0 0\n";
        let counters = parse_diskstats(text, 254, 0).unwrap();
        assert_eq!(counters, DeviceCounters { requests: 30, bytes: 240 * 512, in_queue_ms: 1500 });
        assert_eq!(counters.queue_depth(0.5), 3.0);
        assert_eq!(parse_diskstats(text, 8, 0), None);
    }

    #[test]
    fn median_takes_the_middle() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(Vec::new()).is_nan());
    }

    #[test]
    fn random_offsets_stay_inside_the_file() {
        let mut rng = XorShift64Star::new(7);
        let mut seen = [false; 16];
        for _ in 0..10_000 {
            let block = rng.below(16);
            assert!(block < 16);
            seen[block as usize] = true;
        }
        assert!(seen.iter().all(|&s| s), "some block never drawn: {seen:?}");
    }

    #[test]
    fn utc_dates_are_civil() {
        assert_eq!(utc_date(UNIX_EPOCH), "1970-01-01 00:00 UTC");
        let leap_day = UNIX_EPOCH + Duration::from_secs(951_782_400 + 3600 + 120);
        assert_eq!(utc_date(leap_day), "2000-02-29 01:02 UTC");
    }

    #[test]
    fn mount_paths_are_unescaped() {
        assert_eq!(unescape_mount_path("/mnt/a\\040b"), "/mnt/a b");
        assert_eq!(unescape_mount_path("/plain"), "/plain");
    }

    #[test]
    fn fio_json_gives_rates_latency_and_cpu() {
        let json = r#"note: something
        {"jobs":[{"error":0,"job_runtime":2000,"usr_cpu":5.0,"sys_cpu":15.0,
          "read":{"io_bytes":8192000,"total_ios":2000,"iops":1000.0,"bw_bytes":4096000,
            "clat_ns":{"percentile":{"50.000000":9000,"99.000000":19000,"99.900000":29000}},
            "lat_ns":{"max":90000,
              "percentile":{"50.000000":10000,"99.000000":20000,"99.900000":30000}}}}]}"#;
        let m = parse_fio_json(json, Direction::Read).unwrap();
        assert_eq!(m.ios, 2000);
        assert_eq!(m.iops, 1000.0);
        assert_eq!(m.mb_per_s, 4.096);
        assert_eq!(m.lat_p50_us, 10.0);
        assert_eq!(m.lat_p999_us, 30.0);
        assert_eq!(m.clat_p99_us, Some(19.0));
        assert_eq!(m.lat_max_us, 90.0);
        // 20% of 2 s is 0.4 s of CPU over 2000 I/Os: 200 µs each.
        assert!((m.cpu_per_io_us - 200.0).abs() < 1e-9, "{}", m.cpu_per_io_us);
    }
}
