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
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, ensure};
use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;
use ioengine::buf::{BufPool, PoolConfig, PooledBuf, Registration};
use ioengine::op::{SharedFd, WriteFlags, read_exact_at, write_all_at};
use ioengine::{Core, spawn};
use serde::Serialize;
use shingle_benches::fio::{Direction, fio_version, run_fio, shell_line};
use shingle_benches::measure::{
    CpuSample, DeviceCounters, Latency, Measurement, Metrics, XorShift64Star, latency_histogram,
    parse_size_bytes, record_latency, seed_from_clock, ticks_s,
};
use shingle_benches::system::SystemInfo;
use shingle_benches::testfile::TestFile;

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
/// Submission queue entries of the reactor's ring: room for every I/O in flight, twice.
const RING_ENTRIES_MIN: u32 = 64;
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

#[derive(Debug, Clone, Serialize)]
struct RunRecord {
    run: u64,
    side: Side,
    #[serde(flatten)]
    measurement: Measurement,
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
    let file = TestFile::create(
        settings.file.clone(),
        settings.file_size_bytes,
        settings.keep_file,
        "reactor-vs-fio",
    )?;
    progress(format_args!(
        "prefilling {} ({} bytes) with the reactor",
        file.path().display(),
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
        let latency_ns = latency_histogram()?;
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
        record_latency(&mut self.latency_ns.borrow_mut(), latency);
        self.ios.set(self.ios.get() + 1);
    }

    fn stop(&self) {
        self.stopped.set(true);
    }

    fn measurement(&self, elapsed: Duration, before: &Sample, after: &Sample) -> Measurement {
        let latency = Latency::of(&self.latency_ns.borrow());
        let ios = self.ios.get();
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
        rng.fill(&mut buf.spare_mut()[..bs]);
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

// ---------------------------------------------------------------------------------------------
// The fio side.

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

// ---------------------------------------------------------------------------------------------
// Arithmetic over runs.

fn medians(runs: &[RunRecord], side: Side) -> Metrics {
    Metrics::medians(runs.iter().filter(|r| r.side == side).map(|r| &r.measurement))
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
