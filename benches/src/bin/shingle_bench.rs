//! `shingle-bench`: fio-style load benchmarks of a shingled node, in fio's vocabulary (`--rw`,
//! `--bs`, `--iodepth`, `--numjobs`, `--size`, `--runtime`, job files), with fio's report
//! (normal or JSON with fio's field names), against a running daemon (`--server`) or one it
//! starts on a file or device (`--spawn`), optionally side by side with fio running the
//! equivalent job on the same file system or device (`--baseline fio`). See
//! `benches/BENCHMARKING.md` ("shingle-bench") for what each option means for a key-value store
//! and how the published numbers were measured.

#![forbid(unsafe_code)]
#![expect(clippy::print_stdout, reason = "a benchmark binary prints its report on stdout")]

use std::fmt::Write as _;
use std::io::IsTerminal as _;
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::unix::fs::FileTypeExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail, ensure};
use clap::{Parser, ValueEnum};
use proto::client::ClientOptions;
use serde::Serialize;
use serde_json::{Value, json};
use shingle_benches::fio::{fio_version, shell_line};
use shingle_benches::fiojob::{self, JobSpec, parse_fio_size};
use shingle_benches::fioreport::{DirRecorder, DirStats, binary_bytes, decimal_bytes};
use shingle_benches::jobrun::{self, JobOutcome, RunOutcome, RunPlan, Target};
use shingle_benches::measure::{DeviceIo, median, seed_from_clock, ticks_s, user_system_ticks};
use shingle_benches::node::{self, Node, NodeConfig, free_ports, shingled_binary};
use shingle_benches::system::{SystemInfo, pid_listening_on, utc_date};
use shingle_benches::testfile::{self, TestFile};

const VERSION: &str = concat!("shingle-bench-", env!("CARGO_PKG_VERSION"));
/// Log bytes per second no PUT load exceeds on the machines this runs on (fio's sequential
/// write here: 0.4-0.9 GB/s): sizes a spawned disk for a time-based run.
const LOG_BYTES_PER_S_BOUND: u64 = 1_000_000_000;
/// Room for record headers, checksums, batch records and padding over the values' bytes.
const LOG_OVERHEAD_PERCENT: u64 = 15;
/// Zones besides the log (superblock, checkpoint sets), at most.
const NON_LOG_ZONES_MAX: u64 = 9;
const ZONES_MIN: u64 = 8;
/// Zone size of a spawned disk: large zones on large disks, small ones on small.
const ZONE_BYTES_LARGE: u64 = 256 << 20;
const ZONE_BYTES_SMALL: u64 = 64 << 20;
const LARGE_ZONES_FROM_BYTES: u64 = 4 << 30;
const SPAWN_SIZE_MAX_BYTES: u64 = 1 << 40;
const RUNS_MAX: u64 = 100;
/// fio regions are aligned to this.
const REGION_ALIGN_BYTES: u64 = 1 << 20;
/// `--smoke`: seconds per workload, bytes preloaded per reading job.
const SMOKE_RUNTIME: &str = "1";
const SMOKE_SIZE: &str = "16m";

const SEMANTICS: &str = "\
How fio's job options map onto shingle (a key-value store of immutable values):
  write, randwrite   PUT of new keys. A PUT is always an append to the disk's log, so the
                     two are the same load on shingle; they differ only for the fio baseline.
                     Every PUT is durable (the daemon's sync = \"dsync\": RWF_DSYNC) before
                     it is answered.
  read, randread     GET of keys PUT before the measured phase (the preload: size= bytes of
                     values per client, not measured); randread picks keys uniformly at
                     random among the job's preloaded keys, read walks them in order.
  rw, randrw         each request is a GET (rwmixread percent of them) or a PUT of a new key.
  bs=4k-1m, bsrange  value sizes: a uniform multiple of the smaller size up to the larger
                     (fio's bsrange rule); a key's size follows from its number.
  numjobs            independent clients: a thread each, with its own connections.
  iodepth            requests each client keeps in flight (Client::submit_to, answers taken
                     in the order they arrive).
  size               bytes per client: moved (a job that is not time_based ends there) and
                     preloaded (jobs that read).
  runtime, time_based, ramp_time   as fio: ramp_time runs before anything is measured.
  continue_on_error  none (fio's default: the first failed request stops the run) or all.
Sizes use fio's suffixes with kb_base=1024: 4k = 4096, 1m, 1g (4KiB is 4000, as in fio).
Latency: slat = sending the request, clat = sent to answered, lat = both (ns in JSON).
Job files: fio's INI syntax, [global] and one section per job; the command line's job
options are defaults under the file's. Options shingle-bench does not take are refused by name.

The fio baseline (--baseline fio) runs the same jobs (rw, bs/bsrange, iodepth, numjobs, size,
runtime, time_based, ramp_time, rwmixread) with ioengine=io_uring, direct=1, group_reporting,
one region per job, on a file of the daemon's disk size on the same file system (or on the
device itself, with the daemon stopped), prefilled by fio when a job reads. A PUT is answered
once its batch is written with RWF_DSYNC; the equal fio job is sync=dsync (the file opened
O_DSYNC: every write durable before it completes, through the same kernel path). fdatasync=1 is
not equal under io_uring: fio queues each fdatasync behind its write without waiting for it and
leaves it out of the write's latency. none runs without any durability: the device's limit.

CI: `shingle-bench --smoke` (about 20 s) runs put-4k, put-1m, get-4k and a 70/30 64k mix for
1 s each against a spawned daemon and fio; it fails only when something fails.";

#[derive(Debug, Parser)]
#[command(
    name = "shingle-bench",
    version,
    about = "fio-style load benchmarks of a shingled node, side by side with fio",
    after_help = SEMANTICS
)]
struct Args {
    /// fio job files (INI: [global] and one section per job).
    job_files: Vec<PathBuf>,
    /// Drive the daemon at HOST:PORT (its main port).
    #[arg(long, conflicts_with = "spawn")]
    server: Option<String>,
    /// Start target/release/shingled on PATH and stop it at the end: a file (created with
    /// --spawn-size and removed afterwards if it does not exist; else it must be a shingle disk)
    /// or a block device formatted before with `shingled format`. ERASED: every run
    /// reformats it, and --baseline fio writes over a device.
    #[arg(long)]
    spawn: Option<PathBuf>,
    /// Size of a file created by --spawn (fio suffixes). Default: room for the run.
    #[arg(long, value_parser = size_arg)]
    spawn_size: Option<u64>,
    /// Zone size of the spawned disk. Default: 256m on disks of 4g and more, else 64m.
    #[arg(long, value_parser = size_arg)]
    spawn_zone_size: Option<u64>,
    /// CPU of the spawned daemon's only core. Default: the highest allowed CPU.
    #[arg(long)]
    spawn_cpu: Option<usize>,
    /// The shingled binary for --spawn. Default: next to this executable, built if missing.
    #[arg(long)]
    shingled: Option<PathBuf>,
    /// The daemon's process id, for its CPU time (--server). Default: the local process
    /// listening on the port, if any.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Disks to spread keys over (comma separated). Default: every active disk.
    #[arg(long, value_delimiter = ',')]
    disk: Vec<u16>,
    /// CPUs the client threads are pinned to, round-robin (comma separated). Default: none.
    #[arg(long, value_delimiter = ',')]
    client_cpus: Vec<usize>,
    /// Also run the equivalent job with fio (ioengine=io_uring, direct=1) on a file of the
    /// same size on the same file system (--spawn FILE), the device itself (--spawn DEVICE,
    /// daemon stopped), or --baseline-file.
    #[arg(long, value_enum)]
    baseline: Option<Baseline>,
    /// Durability of the baseline's writes, one fio run each: dsync (O_DSYNC: every write
    /// durable before it completes, as a PUT), fdatasync (fdatasync=1), none (the device's
    /// physical limit, no durability).
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Sync::Dsync, Sync::None])]
    baseline_sync: Vec<Sync>,
    /// Where fio runs with --server: a block device, or a file that does not exist yet
    /// (created on the file system under test, removed afterwards).
    #[arg(long)]
    baseline_file: Option<PathBuf>,
    /// The fio executable.
    #[arg(long, default_value = "fio")]
    fio: PathBuf,
    /// An extra argument for every fio run (repeatable), e.g. --fio-arg=--cpus_allowed=1.
    #[arg(long = "fio-arg", allow_hyphen_values = true)]
    fio_args: Vec<String>,
    /// Runs, alternating shingle and fio (S F S F ...); the report gives medians.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=RUNS_MAX))]
    runs: u64,
    /// CI's check that the benchmark works: the four documented workloads for 1 s each with
    /// 16 MiB preloads, --spawn on a new file in --smoke-dir, --baseline fio (about 20 s).
    #[arg(long)]
    smoke: bool,
    /// Directory of --smoke's files.
    #[arg(long, default_value = "/tmp")]
    smoke_dir: PathBuf,
    /// Keep a file --spawn created.
    #[arg(long)]
    keep: bool,

    /// fio: job name.
    #[arg(long, help_heading = "fio job options")]
    name: Option<String>,
    /// fio: read, write, randread, randwrite, rw, randrw (default read).
    #[arg(long, help_heading = "fio job options")]
    rw: Option<String>,
    /// fio: value size, or a range MIN-MAX (default 4k).
    #[arg(long, help_heading = "fio job options")]
    bs: Option<String>,
    /// fio: value size range MIN-MAX.
    #[arg(long, help_heading = "fio job options")]
    bsrange: Option<String>,
    /// fio: requests in flight per client (default 1).
    #[arg(long, help_heading = "fio job options")]
    iodepth: Option<String>,
    /// fio: clients (default 1).
    #[arg(long, help_heading = "fio job options")]
    numjobs: Option<String>,
    /// fio: bytes per client (moved; preloaded when reading).
    #[arg(long, help_heading = "fio job options")]
    size: Option<String>,
    /// fio: seconds (fio time suffixes).
    #[arg(long, help_heading = "fio job options")]
    runtime: Option<String>,
    /// fio: run for runtime whatever size says.
    #[arg(long = "time_based", help_heading = "fio job options")]
    time_based: bool,
    /// fio: unmeasured time before the measured phase.
    #[arg(long = "ramp_time", help_heading = "fio job options")]
    ramp_time: Option<String>,
    /// fio: percentage of reads in rw/randrw (default 50).
    #[arg(long, help_heading = "fio job options")]
    rwmixread: Option<String>,
    /// fio: percentage of writes in rw/randrw.
    #[arg(long, help_heading = "fio job options")]
    rwmixwrite: Option<String>,
    /// fio: none (default) or all.
    #[arg(long = "continue_on_error", help_heading = "fio job options")]
    continue_on_error: Option<String>,
    /// fio: normal or json.
    #[arg(long = "output-format", value_enum, default_value_t = OutputFormat::Normal, help_heading = "fio job options")]
    output_format: OutputFormat,
    /// fio: write the report to this file instead of stdout.
    #[arg(long, help_heading = "fio job options")]
    output: Option<PathBuf>,
    /// fio: the progress line: auto (when stderr is a terminal), always, never.
    #[arg(long, value_enum, default_value_t = Eta::Auto, help_heading = "fio job options")]
    eta: Eta,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Baseline {
    Fio,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
enum Sync {
    Dsync,
    Fdatasync,
    None,
}

impl Sync {
    /// fio's option for it, and the label of its rows.
    fn fio_option(self) -> Option<&'static str> {
        match self {
            Sync::Dsync => Some("sync=dsync"),
            Sync::Fdatasync => Some("fdatasync=1"),
            Sync::None => None,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Sync::Dsync => "fio (sync=dsync)",
            Sync::Fdatasync => "fio (fdatasync=1)",
            Sync::None => "fio (no sync: physical limit)",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum OutputFormat {
    Normal,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Eta {
    Auto,
    Always,
    Never,
}

fn size_arg(text: &str) -> Result<u64, String> {
    parse_fio_size(text).map_err(|err| format!("{err:#}"))
}

fn main() {
    let args = Args::parse();
    let code = match if args.smoke { smoke(&args) } else { run_main(&args) } {
        Ok(clean) => i32::from(!clean),
        Err(err) => {
            eprintln!("shingle-bench: {err:#}");
            1
        }
    };
    std::process::exit(code);
}

/// The job options given on the command line, as `key=value` pairs in a fixed order.
fn command_line_options(args: &Args) -> Vec<(String, Option<String>)> {
    let mut options = Vec::new();
    let mut push = |key: &str, value: &Option<String>| {
        if let Some(value) = value {
            options.push((key.to_owned(), Some(value.clone())));
        }
    };
    push("name", &args.name);
    push("rw", &args.rw);
    push("bs", &args.bs);
    push("bsrange", &args.bsrange);
    push("iodepth", &args.iodepth);
    push("numjobs", &args.numjobs);
    push("size", &args.size);
    push("runtime", &args.runtime);
    push("ramp_time", &args.ramp_time);
    push("rwmixread", &args.rwmixread);
    push("rwmixwrite", &args.rwmixwrite);
    push("continue_on_error", &args.continue_on_error);
    if args.time_based {
        options.push(("time_based".to_owned(), None));
    }
    options
}

fn jobs_of(args: &Args) -> Result<Vec<JobSpec>> {
    let options = command_line_options(args);
    if args.job_files.is_empty() {
        return Ok(vec![fiojob::job_from_options(&options).context("the command line's job")?]);
    }
    let defaults: Vec<_> = options.into_iter().filter(|(key, _)| key != "name").collect();
    let mut jobs = Vec::new();
    for path in &args.job_files {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        jobs.extend(
            fiojob::parse_job_file(&text, &defaults)
                .with_context(|| format!("job file {}", path.display()))?,
        );
    }
    ensure!(jobs.len() <= fiojob::JOBS_MAX, "more than {} jobs", fiojob::JOBS_MAX);
    Ok(jobs)
}

// ---------------------------------------------------------------------------------------------
// The invocation.

/// Where the daemon is.
#[derive(Debug)]
enum Mode {
    Server { addr: SocketAddr, pid: Option<u32> },
    Spawn(SpawnDisk),
}

/// The disk a spawned daemon serves.
#[derive(Debug)]
struct SpawnDisk {
    path: PathBuf,
    /// A file shingle-bench created (removed at the end unless --keep).
    created: bool,
    is_device: bool,
    size_bytes: u64,
    zone_size_bytes: u64,
    cpu: usize,
    binary: PathBuf,
    /// Holds the daemon's config.
    config_dir: PathBuf,
    /// Keep a created file (--keep).
    keep: bool,
}

impl Drop for SpawnDisk {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.config_dir);
        // Also on an error: a file this invocation created does not outlive it.
        if self.created && !self.keep && self.path.exists() {
            if let Err(err) = std::fs::remove_file(&self.path) {
                eprintln!("shingle-bench: could not remove {}: {err}", self.path.display());
            }
        }
    }
}

/// Everything decided before the first run.
struct Invocation<'a> {
    args: &'a Args,
    jobs: Vec<JobSpec>,
    mode: Mode,
    /// The block device under the daemon's disk, for /proc/diskstats.
    device: Option<(u32, u32)>,
    system: SystemInfo,
    fio: Option<FioSetup>,
}

/// The baseline's target and its regions, one per job.
struct FioSetup {
    path: PathBuf,
    size_bytes: u64,
    is_device: bool,
    /// A file created for fio, removed on drop.
    file: Option<TestFile>,
    regions: Vec<(u64, u64)>,
}

fn run_main(args: &Args) -> Result<bool> {
    let jobs = jobs_of(args)?;
    let invocation = prepare(args, jobs)?;
    let report = run_all(&invocation)?;
    emit(&invocation, &report)?;
    // Dropping the invocation removes fio's file and a disk file it created.
    drop(invocation);
    Ok(report.clean)
}

fn prepare(args: &Args, jobs: Vec<JobSpec>) -> Result<Invocation<'_>> {
    let (mode, dir) = match (&args.server, &args.spawn) {
        (Some(server), None) => {
            let addr = server
                .to_socket_addrs()
                .with_context(|| format!("--server {server}: not an address (HOST:PORT)"))?
                .next()
                .with_context(|| format!("--server {server}: resolves to no address"))?;
            let pid = args.server_pid.or_else(|| {
                if addr.ip().is_loopback() { pid_listening_on(addr.port()) } else { None }
            });
            let dir = args.baseline_file.as_deref().and_then(Path::parent).map(Path::to_path_buf);
            (Mode::Server { addr, pid }, dir.unwrap_or_else(|| PathBuf::from(".")))
        }
        (None, Some(path)) => {
            let disk = spawn_disk(args, path, &jobs)?;
            let dir = if disk.is_device {
                PathBuf::from("/dev")
            } else {
                path.parent().map_or_else(|| PathBuf::from("."), Path::to_path_buf)
            };
            (Mode::Spawn(disk), dir)
        }
        _ => bail!("give --server HOST:PORT (a running daemon) or --spawn PATH (start one)"),
    };
    let dir = if dir.as_os_str().is_empty() { PathBuf::from(".") } else { dir };
    let dir = dir.canonicalize().with_context(|| format!("{}", dir.display()))?;
    let fio_version =
        if args.baseline.is_some() { fio_version(&args.fio)? } else { "(no baseline)".to_owned() };
    let system = SystemInfo::collect(&dir, fio_version)?;
    let device = match &mode {
        Mode::Spawn(disk) if disk.is_device => device_numbers(&disk.path, true),
        // The file may not exist yet: its folder is on the same device.
        Mode::Spawn(disk) => device_numbers(disk.path.parent().unwrap_or(Path::new("/")), false),
        Mode::Server { .. } => None,
    };
    let fio = match args.baseline {
        Some(Baseline::Fio) => Some(fio_setup(args, &mode, &jobs)?),
        None => None,
    };
    Ok(Invocation { args, jobs, mode, device, system, fio })
}

/// (major, minor) of the device `path` is (a device) or is on (a file).
fn device_numbers(path: &Path, is_device: bool) -> Option<(u32, u32)> {
    use std::os::unix::fs::MetadataExt as _;
    let meta = std::fs::metadata(path).ok()?;
    let dev = if is_device { meta.rdev() } else { meta.dev() };
    Some((libc::major(dev), libc::minor(dev)))
}

/// Checks --spawn's PATH and sizes the disk.
fn spawn_disk(args: &Args, path: &Path, jobs: &[JobSpec]) -> Result<SpawnDisk> {
    let binary = shingled_binary(args.shingled.as_deref())?;
    // The daemon starts in its config's folder: a relative path would not find it there.
    let binary = binary.canonicalize().with_context(|| format!("{}", binary.display()))?;
    let allowed = ioengine::sys::allowed_cpus().context("reading this process's CPU affinity")?;
    let cpu = match args.spawn_cpu {
        Some(cpu) => {
            ensure!(allowed.contains(&cpu), "--spawn-cpu {cpu} is not one of {allowed:?}");
            cpu
        }
        None => *allowed.last().context("this process may run on no CPU")?,
    };
    let meta = std::fs::metadata(path);
    let (created, is_device, size_bytes) = match &meta {
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            let size = args.spawn_size.unwrap_or_else(|| disk_size_for(jobs));
            ensure!(
                size <= SPAWN_SIZE_MAX_BYTES,
                "--spawn-size {size}: at most {SPAWN_SIZE_MAX_BYTES} bytes"
            );
            (true, false, size)
        }
        Err(err) => bail!("--spawn {}: {err}", path.display()),
        Ok(meta) => {
            let is_device = meta.file_type().is_block_device();
            ensure!(
                is_device || meta.is_file(),
                "--spawn {}: neither a regular file nor a block device",
                path.display()
            );
            ensure!(
                node::is_shingle_disk(&binary, path)?,
                "--spawn {}: not a shingle disk. shingle-bench erases the disk it is given \
                 (every run reformats it; --baseline fio writes over a device), so it only takes \
                 one formatted before: run `shingled format {}` first, or give a path that does \
                 not exist (a file is then created)",
                path.display(),
                path.display()
            );
            ensure!(args.spawn_size.is_none(), "--spawn-size is for a file that does not exist");
            (false, is_device, disk_bytes(path)?)
        }
    };
    let zone_size_bytes = args.spawn_zone_size.unwrap_or(if size_bytes >= LARGE_ZONES_FROM_BYTES {
        ZONE_BYTES_LARGE
    } else {
        ZONE_BYTES_SMALL
    });
    let size_bytes =
        if created { size_bytes.div_ceil(zone_size_bytes) * zone_size_bytes } else { size_bytes };
    ensure!(
        size_bytes / zone_size_bytes >= ZONES_MIN,
        "the disk holds {} zones of {zone_size_bytes} bytes; it needs at least {ZONES_MIN}",
        size_bytes / zone_size_bytes
    );
    let config_dir = std::env::temp_dir().join(format!("shingle-bench-{}", std::process::id()));
    std::fs::create_dir_all(&config_dir)
        .with_context(|| format!("creating {}", config_dir.display()))?;
    let path = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir().context("the current folder")?.join(path)
    };
    Ok(SpawnDisk {
        path,
        created,
        is_device,
        size_bytes,
        zone_size_bytes,
        cpu,
        binary,
        config_dir,
        keep: args.keep,
    })
}

/// Size of a file or block device.
fn disk_bytes(path: &Path) -> Result<u64> {
    use std::io::Seek as _;
    let mut file =
        std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    file.seek(std::io::SeekFrom::End(0)).with_context(|| format!("sizing {}", path.display()))
}

/// A disk with room for the run: every preload, and PUTs at [`LOG_BYTES_PER_S_BOUND`] for the
/// longest job (or the bytes the write jobs move), plus overhead and the non-log zones.
fn disk_size_for(jobs: &[JobSpec]) -> u64 {
    let preload: u64 = jobs.iter().map(JobSpec::preload_bytes).sum();
    let writes: u64 = jobs
        .iter()
        .filter(|job| job.rw.writes())
        .map(|job| match (job.time_based, job.size_bytes, job.runtime) {
            (false, Some(size), _) => size * job.numjobs as u64,
            (_, _, Some(runtime)) => {
                let seconds = (runtime + job.ramp_time).as_secs_f64();
                (seconds * LOG_BYTES_PER_S_BOUND as f64) as u64
            }
            _ => 0,
        })
        .sum();
    let log = (preload + writes) * (100 + LOG_OVERHEAD_PERCENT) / 100;
    let zone = if log >= LARGE_ZONES_FROM_BYTES { ZONE_BYTES_LARGE } else { ZONE_BYTES_SMALL };
    // Every zone may leave a batch's worth unused at its end: count a zone more per 8.
    let log_zones = log.div_ceil(zone);
    (log_zones + log_zones / 8 + NON_LOG_ZONES_MAX).max(ZONES_MIN) * zone
}

/// The baseline's file or device, and one region of it per job.
fn fio_setup(args: &Args, mode: &Mode, jobs: &[JobSpec]) -> Result<FioSetup> {
    let (path, size_bytes, is_device, create) = match mode {
        Mode::Spawn(disk) if disk.is_device => (disk.path.clone(), disk.size_bytes, true, false),
        Mode::Spawn(disk) => {
            let dir = disk.path.parent().unwrap_or(Path::new("."));
            let path = dir.join(format!("shingle-bench-fio-{}.dat", std::process::id()));
            (path, disk.size_bytes, false, true)
        }
        Mode::Server { .. } => {
            let path = args.baseline_file.clone().context(
                "--baseline fio with --server needs --baseline-file: a block device, or a file \
                 that does not exist yet on the daemon's file system",
            )?;
            match std::fs::metadata(&path) {
                Ok(meta) if meta.file_type().is_block_device() => {
                    let size = disk_bytes(&path)?;
                    (path, size, true, false)
                }
                Ok(_) => bail!(
                    "--baseline-file {}: exists and is not a block device; give a new file",
                    path.display()
                ),
                Err(_) => (path, disk_size_for(jobs), false, true),
            }
        }
    };
    ensure!(
        !path.to_string_lossy().contains(':'),
        "{}: fio reads ':' in a file name as a separator; use another folder",
        path.display()
    );
    let regions = fio_regions(jobs, size_bytes)?;
    let file = if create {
        Some(TestFile::create(path.clone(), size_bytes, false, "shingle-bench")?)
    } else {
        None
    };
    Ok(FioSetup { path, size_bytes, is_device, file, regions })
}

/// One region per job: its clients' `size` together, or for write jobs without a size an equal
/// share of what is left.
fn fio_regions(jobs: &[JobSpec], total_bytes: u64) -> Result<Vec<(u64, u64)>> {
    let align = |b: u64| b.div_ceil(REGION_ALIGN_BYTES) * REGION_ALIGN_BYTES;
    let sized: u64 = jobs
        .iter()
        .filter_map(|job| job.size_bytes.map(|size| align(size * job.numjobs as u64)))
        .sum();
    let unsized_jobs = jobs.iter().filter(|job| job.size_bytes.is_none()).count() as u64;
    ensure!(
        sized <= total_bytes,
        "the jobs' sizes ({sized} bytes) exceed the baseline's file or device ({total_bytes})"
    );
    let share = (total_bytes - sized).checked_div(unsized_jobs).unwrap_or(0) / REGION_ALIGN_BYTES
        * REGION_ALIGN_BYTES;
    let mut offset = 0;
    let mut regions = Vec::new();
    for job in jobs {
        let bytes = job.size_bytes.map_or(share, |size| align(size * job.numjobs as u64));
        ensure!(bytes > 0, "job {}: no room for it in the baseline's file", job.name);
        regions.push((offset, bytes));
        offset += bytes;
    }
    Ok(regions)
}

// ---------------------------------------------------------------------------------------------
// Runs.

/// One shingle run, reduced.
struct ShingleRun {
    jobs: Vec<JobOutcome>,
    total_read: DirRecorder,
    total_write: DirRecorder,
    runtime: Duration,
    server: Option<CpuUse>,
    client: CpuUse,
    preload: Duration,
    device: Option<DeviceIo>,
}

/// CPU time of a process over the measured phase.
#[derive(Debug, Clone, Copy, Serialize)]
struct CpuUse {
    usr_s: f64,
    sys_s: f64,
    wall_s: f64,
}

impl CpuUse {
    fn of(before: (u64, u64), after: (u64, u64), wall: Duration) -> CpuUse {
        CpuUse {
            usr_s: ticks_s(after.0 - before.0),
            sys_s: ticks_s(after.1 - before.1),
            wall_s: wall.as_secs_f64(),
        }
    }

    fn seconds(&self) -> f64 {
        self.usr_s + self.sys_s
    }

    fn json(&self, bytes: u64) -> Value {
        json!({
            "usr_cpu": self.usr_s / self.wall_s * 100.0,
            "sys_cpu": self.sys_s / self.wall_s * 100.0,
            "cpu_s": self.seconds(),
            "cpu_s_per_gb": per_gb(self.seconds(), bytes),
        })
    }
}

fn per_gb(seconds: f64, bytes: u64) -> f64 {
    if bytes == 0 { f64::NAN } else { seconds / (bytes as f64 / 1e9) }
}

/// One fio run of the baseline.
struct FioRun {
    /// How its rows are labelled: the durability of its writes, or just "fio" for reads.
    label: &'static str,
    sync: Sync,
    command: String,
    read: DirStats,
    write: DirStats,
    usr_cpu: f64,
    sys_cpu: f64,
    job_runtime_ms: f64,
    /// fio's whole JSON group.
    raw: Value,
}

struct Report {
    runs: Vec<(ShingleRun, Vec<FioRun>)>,
    clean: bool,
    first_error: Option<String>,
}

#[derive(Debug, Clone, Copy)]
struct Sample {
    server: Option<(u64, u64)>,
    client: (u64, u64),
    device: Option<DeviceIo>,
}

fn run_all(inv: &Invocation<'_>) -> Result<Report> {
    let mut runs = Vec::new();
    for run in 1..=inv.args.runs {
        if inv.args.runs > 1 {
            eprintln!("shingle-bench: run {run}/{}: shingle", inv.args.runs);
        }
        let shingle = run_shingle(inv)?;
        let first_error = shingle.jobs.iter().find_map(|j| j.first_error.clone());
        let failed = shingle.jobs.iter().any(|j| !j.errors.is_empty());
        if failed {
            runs.push((shingle, Vec::new()));
            return Ok(Report { runs, clean: false, first_error });
        }
        let fio = match &inv.fio {
            Some(setup) => run_baseline(inv, setup, run)?,
            None => Vec::new(),
        };
        runs.push((shingle, fio));
    }
    Ok(Report { runs, clean: true, first_error: None })
}

fn run_shingle(inv: &Invocation<'_>) -> Result<ShingleRun> {
    let (addr, pid, node) = match &inv.mode {
        Mode::Server { addr, pid } => (*addr, *pid, None),
        Mode::Spawn(disk) => {
            let node = start_node(disk)?;
            (node.addr(), Some(node.pid()), Some(node))
        }
    };
    let plan = RunPlan {
        jobs: inv.jobs.clone(),
        target: Target { addr, disks: inv.args.disk.clone(), options: ClientOptions::default() },
        // Key numbers below 2^62, apart from every other run's.
        salt: seed_from_clock() << 20 >> 2,
        progress: match inv.args.eta {
            Eta::Always => true,
            Eta::Never => false,
            Eta::Auto => std::io::stderr().is_terminal(),
        },
        cpus: inv.args.client_cpus.clone(),
    };
    let device = inv.device;
    let sample = || -> Result<Sample> {
        Ok(Sample {
            server: match pid {
                Some(pid) => Some(user_system_ticks(&format!("/proc/{pid}/stat"))?),
                None => None,
            },
            client: user_system_ticks("/proc/self/stat")?,
            device: DeviceIo::read(device),
        })
    };
    let outcome = jobrun::run(&plan, sample);
    let outcome = match (outcome, &node) {
        (Ok(outcome), _) => outcome,
        (Err(err), Some(node)) => {
            return Err(err.context(format!("shingled's log:\n{}", node.log_tail())));
        }
        (Err(err), None) => return Err(err),
    };
    if let Some(node) = node {
        node.stop().context("stopping shingled")?;
    }
    shingle_run(outcome)
}

fn start_node(disk: &SpawnDisk) -> Result<Node> {
    eprintln!("shingle-bench: formatting {} and starting shingled", disk.path.display());
    let size = (disk.created && !disk.path.exists()).then_some(disk.size_bytes);
    node::format_disk(&disk.binary, &disk.path, size, disk.zone_size_bytes)?;
    let config = NodeConfig {
        ports: free_ports()?,
        cpu: disk.cpu,
        disk_path: disk.path.clone(),
        disk_size_bytes: None,
        zone_size_bytes: disk.zone_size_bytes,
    };
    Node::start(&disk.binary, &config, &disk.config_dir.join("shingled.toml"))
}

fn shingle_run(outcome: RunOutcome<Sample>) -> Result<ShingleRun> {
    let mut total_read = DirRecorder::new()?;
    let mut total_write = DirRecorder::new()?;
    for job in &outcome.jobs {
        total_read.merge(&job.read)?;
        total_write.merge(&job.write)?;
    }
    let runtime = outcome.jobs.iter().map(|j| j.runtime).max().unwrap_or_default();
    let (b, a) = (outcome.before, outcome.after);
    let server = match (b.server, a.server) {
        (Some(before), Some(after)) => Some(CpuUse::of(before, after, outcome.wall)),
        _ => None,
    };
    Ok(ShingleRun {
        jobs: outcome.jobs,
        total_read,
        total_write,
        runtime,
        server,
        client: CpuUse::of(b.client, a.client, outcome.wall),
        preload: outcome.preload,
        device: DeviceIo::delta(b.device, a.device),
    })
}

// ---------------------------------------------------------------------------------------------
// The fio baseline.

fn run_baseline(inv: &Invocation<'_>, setup: &FioSetup, run: u64) -> Result<Vec<FioRun>> {
    let reads = inv.jobs.iter().any(|job| job.rw.reads());
    let writes = inv.jobs.iter().any(|job| job.rw.writes());
    if reads {
        prefill(inv, setup)?;
    }
    let variants: Vec<Sync> =
        if writes { inv.args.baseline_sync.clone() } else { vec![Sync::None] };
    let mut runs = Vec::new();
    for sync in variants {
        if !reads {
            if let Some(file) = &setup.file {
                // As fresh as the daemon's newly formatted zones.
                file.zero()?;
            }
        }
        eprintln!("shingle-bench: run {run}: {} on {}", sync.label(), setup.path.display());
        runs.push(fio_run(inv, setup, sync)?);
        if writes && matches!(sync, Sync::None) {
            // What fio left in the device's volatile cache is made durable now, not by the
            // next run's first flushes.
            let took = testfile::flush(&setup.path)?;
            eprintln!(
                "shingle-bench: run {run}: flushing fio's unsynced writes took {:.3} s",
                took.as_secs_f64()
            );
        }
    }
    if let Some(file) = &setup.file {
        // After small random writes ext4 holds the file in countless extents, and removing it
        // would free them one by one (with online discard: minutes for gigabytes); zeroing
        // first takes milliseconds and leaves few.
        file.zero()?;
    }
    Ok(runs)
}

/// Writes every reading job's region once (fio, 1 MiB sequential, then fsync), so that fio's
/// reads hit written blocks, as GETs do.
fn prefill(inv: &Invocation<'_>, setup: &FioSetup) -> Result<()> {
    let end = inv
        .jobs
        .iter()
        .zip(&setup.regions)
        .filter(|(job, _)| job.rw.reads())
        .map(|(_, &(offset, bytes))| offset + bytes)
        .max()
        .unwrap_or(0);
    eprintln!("shingle-bench: fio prefills {} MiB of {}", end >> 20, setup.path.display());
    let args = vec![
        "--name=prefill".to_owned(),
        format!("--filename={}", setup.path.display()),
        format!("--size={end}"),
        "--rw=write".to_owned(),
        "--bs=1m".to_owned(),
        "--iodepth=8".to_owned(),
        "--direct=1".to_owned(),
        "--ioengine=io_uring".to_owned(),
        "--end_fsync=1".to_owned(),
        "--output-format=json".to_owned(),
    ];
    let output = Command::new(&inv.args.fio)
        .args(&args)
        .output()
        .with_context(|| format!("running {}", shell_line(&inv.args.fio, &args)))?;
    ensure!(
        output.status.success(),
        "{} failed: {}",
        shell_line(&inv.args.fio, &args),
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Ok(())
}

/// The equivalent fio job file: the same jobs on `setup`'s regions, O_DIRECT through io_uring,
/// `sync`'s durability for writes, one group reported together.
fn fio_job_file(jobs: &[JobSpec], setup: &FioSetup, sync: Sync) -> String {
    let mut text = String::new();
    let _ = writeln!(text, "[global]");
    let _ = writeln!(text, "filename={}", setup.path.display());
    let _ = writeln!(text, "direct=1\nioengine=io_uring\ngroup_reporting=1");
    if let Some(option) = sync.fio_option() {
        let _ = writeln!(text, "{option}");
    }
    for (job, &(offset, bytes)) in jobs.iter().zip(&setup.regions) {
        let _ = writeln!(text, "\n[{}]", job.name);
        let _ = writeln!(text, "rw={}", job.rw);
        if job.bs.min_bytes == job.bs.max_bytes {
            let _ = writeln!(text, "bs={}", job.bs.min_bytes);
        } else {
            let _ = writeln!(text, "bsrange={}", job.bs.fio_text());
        }
        let _ = writeln!(text, "iodepth={}\nnumjobs={}", job.iodepth, job.numjobs);
        let _ = writeln!(text, "offset={offset}\nsize={bytes}");
        if let (Some(size), false) = (job.size_bytes, job.time_based) {
            let _ = writeln!(text, "io_size={size}");
        }
        if let Some(runtime) = job.runtime {
            let _ = writeln!(text, "runtime={}ms", runtime.as_millis());
        }
        if job.time_based {
            let _ = writeln!(text, "time_based");
        }
        if !job.ramp_time.is_zero() {
            let _ = writeln!(text, "ramp_time={}ms", job.ramp_time.as_millis());
        }
        if matches!(job.rw, fiojob::RwMode::Rw | fiojob::RwMode::RandRw) {
            let _ = writeln!(text, "rwmixread={}", job.rwmixread);
        }
        if job.rw.random() {
            let _ = writeln!(text, "norandommap\nrandrepeat=0");
        }
    }
    text
}

fn fio_run(inv: &Invocation<'_>, setup: &FioSetup, sync: Sync) -> Result<FioRun> {
    let job_file =
        std::env::temp_dir().join(format!("shingle-bench-{}-{sync:?}.fio", std::process::id()));
    let text = fio_job_file(&inv.jobs, setup, sync);
    std::fs::write(&job_file, &text).with_context(|| format!("writing {}", job_file.display()))?;
    let mut args = vec!["--output-format=json".to_owned()];
    args.extend(inv.args.fio_args.iter().cloned());
    args.push(job_file.display().to_string());
    let output = Command::new(&inv.args.fio).args(&args).output();
    let _ = std::fs::remove_file(&job_file);
    let output = output.with_context(|| format!("running {}", shell_line(&inv.args.fio, &args)))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    ensure!(
        output.status.success(),
        "fio failed ({}) on the job file:\n{text}\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr).trim(),
        stdout.trim()
    );
    let start = stdout.find('{').context("fio printed no JSON")?;
    let root: Value = serde_json::from_str(&stdout[start..]).context("parsing fio's JSON")?;
    let group = root.pointer("/jobs/0").context("fio's JSON has no jobs[0]")?.clone();
    let error = group.get("error").and_then(Value::as_i64).unwrap_or(0);
    ensure!(error == 0, "fio reported error {error}");
    let num = |key: &str| group.get(key).and_then(Value::as_f64).unwrap_or(0.0);
    Ok(FioRun {
        label: if inv.jobs.iter().any(|job| job.rw.writes()) { sync.label() } else { "fio" },
        sync,
        command: format!("{} with the job file:\n{text}", shell_line(&inv.args.fio, &args)),
        read: DirStats::from_fio(group.get("read").context("no read in fio's JSON")?)?,
        write: DirStats::from_fio(group.get("write").context("no write in fio's JSON")?)?,
        usr_cpu: num("usr_cpu"),
        sys_cpu: num("sys_cpu"),
        job_runtime_ms: num("job_runtime"),
        raw: group,
    })
}

// ---------------------------------------------------------------------------------------------
// Summaries, medians, ratios.

/// The numbers compared side by side, for one direction of one run.
#[derive(Debug, Clone, Copy, Default, Serialize)]
struct DirSummary {
    iops: f64,
    mb_per_s: f64,
    clat_p50_us: f64,
    clat_p99_us: f64,
    clat_p999_us: f64,
}

impl DirSummary {
    fn of(s: &DirStats) -> Option<DirSummary> {
        (s.total_ios > 0).then(|| DirSummary {
            iops: s.iops,
            mb_per_s: s.bw_bytes as f64 / 1e6,
            clat_p50_us: s.clat_ns.percentile_us(50.0),
            clat_p99_us: s.clat_ns.percentile_us(99.0),
            clat_p999_us: s.clat_ns.percentile_us(99.9),
        })
    }

    fn median(list: &[DirSummary]) -> DirSummary {
        let of = |f: fn(&DirSummary) -> f64| median(list.iter().map(f).collect());
        DirSummary {
            iops: of(|d| d.iops),
            mb_per_s: of(|d| d.mb_per_s),
            clat_p50_us: of(|d| d.clat_p50_us),
            clat_p99_us: of(|d| d.clat_p99_us),
            clat_p999_us: of(|d| d.clat_p999_us),
        }
    }
}

/// One side of one run: both directions and CPU seconds per GB moved.
#[derive(Debug, Clone, Serialize)]
struct SideSummary {
    label: String,
    read: Option<DirSummary>,
    write: Option<DirSummary>,
    /// shingle: the daemon's CPU (all threads); fio: its job threads (usr + sys).
    cpu_s_per_gb: f64,
    /// shingle only: the client's (this process's) CPU.
    #[serde(skip_serializing_if = "Option::is_none")]
    client_cpu_s_per_gb: Option<f64>,
}

fn shingle_summary(run: &ShingleRun) -> SideSummary {
    let read = run.total_read.stats(run.runtime);
    let write = run.total_write.stats(run.runtime);
    let bytes = read.io_bytes + write.io_bytes;
    SideSummary {
        label: "shingle".to_owned(),
        read: DirSummary::of(&read),
        write: DirSummary::of(&write),
        cpu_s_per_gb: run.server.map_or(f64::NAN, |s| per_gb(s.seconds(), bytes)),
        client_cpu_s_per_gb: Some(per_gb(run.client.seconds(), bytes)),
    }
}

fn fio_summary(run: &FioRun) -> SideSummary {
    let bytes = run.read.io_bytes + run.write.io_bytes;
    let cpu_s = (run.usr_cpu + run.sys_cpu) / 100.0 * run.job_runtime_ms / 1e3;
    SideSummary {
        label: run.label.to_owned(),
        read: DirSummary::of(&run.read),
        write: DirSummary::of(&run.write),
        cpu_s_per_gb: per_gb(cpu_s, bytes),
        client_cpu_s_per_gb: None,
    }
}

fn median_side(sides: &[SideSummary]) -> SideSummary {
    let dir = |f: fn(&SideSummary) -> Option<DirSummary>| {
        let list: Vec<DirSummary> = sides.iter().filter_map(f).collect();
        (!list.is_empty()).then(|| DirSummary::median(&list))
    };
    let client: Vec<f64> = sides.iter().filter_map(|s| s.client_cpu_s_per_gb).collect();
    SideSummary {
        label: sides.first().map_or_else(String::new, |s| s.label.clone()),
        read: dir(|s| s.read),
        write: dir(|s| s.write),
        cpu_s_per_gb: median(sides.iter().map(|s| s.cpu_s_per_gb).collect()),
        client_cpu_s_per_gb: (!client.is_empty()).then(|| median(client)),
    }
}

/// Medians per side: shingle first, then each fio variant.
fn medians(report: &Report) -> Vec<SideSummary> {
    let shingle: Vec<SideSummary> = report.runs.iter().map(|(s, _)| shingle_summary(s)).collect();
    let mut sides = vec![median_side(&shingle)];
    let variants = report.runs.first().map_or(0, |(_, fio)| fio.len());
    for v in 0..variants {
        let list: Vec<SideSummary> =
            report.runs.iter().filter_map(|(_, fio)| fio.get(v)).map(fio_summary).collect();
        sides.push(median_side(&list));
    }
    sides
}

/// shingle ÷ a fio side, per direction: IOPS and MB/s (above 1: shingle faster) and latency
/// (below 1: shingle faster).
fn ratio_json(shingle: &SideSummary, fio: &SideSummary) -> Value {
    let dir = |s: Option<DirSummary>, f: Option<DirSummary>| match (s, f) {
        (Some(s), Some(f)) => json!({
            "iops": s.iops / f.iops,
            "mb_per_s": s.mb_per_s / f.mb_per_s,
            "clat_p50": s.clat_p50_us / f.clat_p50_us,
            "clat_p99": s.clat_p99_us / f.clat_p99_us,
            "clat_p999": s.clat_p999_us / f.clat_p999_us,
        }),
        _ => Value::Null,
    };
    json!({
        "reference": fio.label,
        "read": dir(shingle.read, fio.read),
        "write": dir(shingle.write, fio.write),
        "cpu_s_per_gb": shingle.cpu_s_per_gb / fio.cpu_s_per_gb,
    })
}

// ---------------------------------------------------------------------------------------------
// Output.

fn emit(inv: &Invocation<'_>, report: &Report) -> Result<()> {
    let text = match inv.args.output_format {
        OutputFormat::Json => serde_json::to_string_pretty(&json_report(inv, report))? + "\n",
        OutputFormat::Normal => normal_report(inv, report),
    };
    match &inv.args.output {
        Some(path) => {
            std::fs::write(path, &text).with_context(|| format!("writing {}", path.display()))?;
        }
        None => print!("{text}"),
    }
    if let Some(err) = &report.first_error {
        eprintln!("shingle-bench: the run failed: {err}");
    }
    Ok(())
}

fn job_json(job: &JobSpec, outcome: &JobOutcome) -> Value {
    let options: serde_json::Map<String, Value> =
        job.options.iter().map(|(k, v)| (k.clone(), Value::from(v.clone()))).collect();
    let runtime_ms = outcome.runtime.as_millis() as f64;
    let percent = |s: f64| if runtime_ms > 0.0 { s * 1e3 / runtime_ms * 100.0 } else { 0.0 };
    let errors: serde_json::Map<String, Value> =
        outcome.errors.iter().map(|(k, v)| (k.clone(), Value::from(*v))).collect();
    json!({
        "jobname": job.name,
        "groupid": 0,
        "error": i32::from(!outcome.errors.is_empty()),
        "job options": options,
        "read": outcome.read.stats(outcome.runtime),
        "write": outcome.write.stats(outcome.runtime),
        "job_runtime": outcome.runtime.as_millis() as u64,
        "usr_cpu": percent(outcome.usr_s),
        "sys_cpu": percent(outcome.sys_s),
        "shingle": {
            "clients": job.numjobs,
            "iodepth": job.iodepth,
            "preloaded_keys": outcome.preload_keys,
            "errors": errors,
        },
    })
}

fn json_report(inv: &Invocation<'_>, report: &Report) -> Value {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let Some((last, last_fio)) = report.runs.last() else { return Value::Null };
    let jobs: Vec<Value> =
        inv.jobs.iter().zip(&last.jobs).map(|(job, outcome)| job_json(job, outcome)).collect();
    let bytes = last.total_read.bytes + last.total_write.bytes;
    let mut errors = serde_json::Map::new();
    for (status, count) in last.jobs.iter().flat_map(|j| &j.errors) {
        let total = errors.get(status).and_then(Value::as_u64).unwrap_or(0) + count;
        errors.insert(status.clone(), Value::from(total));
    }
    let medians = medians(report);
    let ratios: Vec<Value> = medians[1..].iter().map(|fio| ratio_json(&medians[0], fio)).collect();
    let runs: Vec<Value> = report
        .runs
        .iter()
        .map(|(s, fio)| {
            json!({
                "shingle": shingle_summary(s),
                "fio": fio.iter().map(fio_summary).collect::<Vec<_>>(),
            })
        })
        .collect();
    let baseline: Vec<Value> = last_fio
        .iter()
        .map(|f| json!({"sync": f.sync, "label": f.label, "command": f.command, "fio": f.raw}))
        .collect();
    json!({
        "shingle-bench version": VERSION,
        "timestamp": now.as_secs(),
        "timestamp_ms": now.as_millis() as u64,
        "time": utc_date(SystemTime::now()),
        "jobs": jobs,
        "shingle": {
            "target": target_json(inv),
            "baseline_target": inv.fio.as_ref().map(|f| json!({
                "path": f.path,
                "size_bytes": f.size_bytes,
                "device": f.is_device,
                "regions": f.regions,
            })),
            "system": inv.system,
            "total": {
                "read": last.total_read.stats(last.runtime),
                "write": last.total_write.stats(last.runtime),
            },
            "server_cpu": last.server.map(|c| c.json(bytes)),
            "client_cpu": last.client.json(bytes),
            "preload_s": last.preload.as_secs_f64(),
            "device": last.device,
            "errors": errors,
            "runs": runs,
            "medians": medians,
            "ratios": ratios,
            "baseline": baseline,
        },
    })
}

fn target_json(inv: &Invocation<'_>) -> Value {
    match &inv.mode {
        Mode::Server { addr, pid } => json!({"server": addr.to_string(), "pid": pid}),
        Mode::Spawn(disk) => json!({
            "spawn": disk.path,
            "device": disk.is_device,
            "size_bytes": disk.size_bytes,
            "zone_size_bytes": disk.zone_size_bytes,
            "daemon_cpu": disk.cpu,
            "shingled": disk.binary,
        }),
    }
}

fn normal_report(inv: &Invocation<'_>, report: &Report) -> String {
    let mut out = String::new();
    let Some((last, _)) = report.runs.last() else { return out };
    for job in &inv.jobs {
        let _ = writeln!(
            out,
            "{}: (g=0): rw={}, bs=(R) {}-{}, (W) {}-{}, iodepth={}",
            job.name,
            job.rw,
            binary_bytes(job.bs.min_bytes as f64),
            binary_bytes(job.bs.max_bytes as f64),
            binary_bytes(job.bs.min_bytes as f64),
            binary_bytes(job.bs.max_bytes as f64),
            job.iodepth
        );
    }
    let _ = writeln!(out, "{VERSION}");
    let clients: usize = inv.jobs.iter().map(|j| j.numjobs).sum();
    let _ = writeln!(out, "Starting {clients} client(s) against {}", target_line(inv));
    if report.runs.len() > 1 {
        let _ = writeln!(out, "(the last of {} runs; medians of all below)", report.runs.len());
    }
    for (job, outcome) in inv.jobs.iter().zip(&last.jobs) {
        write_job_normal(&mut out, job, outcome);
    }
    let _ = writeln!(out, "\nRun status group 0 (all jobs):");
    for (label, recorder) in [("READ", &last.total_read), ("WRITE", &last.total_write)] {
        let s = recorder.stats(last.runtime);
        if s.total_ios > 0 {
            let _ = writeln!(
                out,
                "{label:>7}: bw={}/s ({}/s), io={} ({}), run={}msec",
                binary_bytes(s.bw_bytes as f64),
                decimal_bytes(s.bw_bytes as f64),
                binary_bytes(s.io_bytes as f64),
                decimal_bytes(s.io_bytes as f64),
                s.runtime
            );
        }
    }
    let bytes = last.total_read.bytes + last.total_write.bytes;
    let cpu_line = |c: &CpuUse| {
        format!(
            "usr={:.1}%, sys={:.1}% of one CPU, {:.2} s, {:.3} s/GB",
            c.usr_s / c.wall_s * 100.0,
            c.sys_s / c.wall_s * 100.0,
            c.seconds(),
            per_gb(c.seconds(), bytes)
        )
    };
    let _ = writeln!(out, "\nshingle:");
    match &last.server {
        Some(c) => {
            let _ = writeln!(out, "  server cpu   : {}", cpu_line(c));
        }
        None => {
            let _ = writeln!(out, "  server cpu   : unknown (not a local process: --server-pid)");
        }
    }
    let _ = writeln!(out, "  client cpu   : {} (every client thread)", cpu_line(&last.client));
    if !last.preload.is_zero() {
        let _ =
            writeln!(out, "  preload      : {:.1} s (not measured)", last.preload.as_secs_f64());
    }
    if report.runs.iter().any(|(_, fio)| !fio.is_empty()) || report.runs.len() > 1 {
        write_comparison(&mut out, report);
    }
    out
}

fn target_line(inv: &Invocation<'_>) -> String {
    match &inv.mode {
        Mode::Server { addr, .. } => format!("shingled at {addr}"),
        Mode::Spawn(disk) => format!(
            "a spawned shingled (1 core on CPU {}) on {} ({} MiB, {} MiB zones)",
            disk.cpu,
            disk.path.display(),
            disk.size_bytes >> 20,
            disk.zone_size_bytes >> 20
        ),
    }
}

fn write_job_normal(out: &mut String, job: &JobSpec, o: &JobOutcome) {
    let _ = writeln!(
        out,
        "\n{}: (groupid=0, clients={}): err={:2}",
        job.name,
        job.numjobs,
        i32::from(!o.errors.is_empty())
    );
    o.read.stats(o.runtime).write_normal(out, "read");
    o.write.stats(o.runtime).write_normal(out, "write");
    let runtime_s = o.runtime.as_secs_f64();
    let percent = |s: f64| if runtime_s > 0.0 { s / runtime_s * 100.0 } else { 0.0 };
    let _ = writeln!(
        out,
        "  cpu          : usr={:.2}%, sys={:.2}% (client threads)",
        percent(o.usr_s),
        percent(o.sys_s)
    );
    if o.errors.is_empty() {
        let _ = writeln!(out, "  errors       : none");
    } else {
        let list: Vec<String> = o.errors.iter().map(|(s, n)| format!("{s}={n}")).collect();
        let _ = writeln!(out, "  errors       : {}", list.join(", "));
    }
    if let Some(first) = &o.first_error {
        let _ = writeln!(out, "  first error  : {first}");
    }
}

fn write_comparison(out: &mut String, report: &Report) {
    let _ = writeln!(out, "\n== side by side (medians of {} run(s)) ==", report.runs.len());
    let _ = writeln!(
        out,
        "{:<40} {:<5} {:>10} {:>9} {:>9} {:>9} {:>10} {:>9}",
        "side", "dir", "IOPS", "MB/s", "p50 µs", "p99 µs", "p99.9 µs", "CPU s/GB"
    );
    let medians = medians(report);
    for side in &medians {
        for (dir, summary) in [("read", side.read), ("write", side.write)] {
            let Some(d) = summary else { continue };
            let _ = writeln!(
                out,
                "{:<40} {dir:<5} {:>10.0} {:>9.1} {:>9.0} {:>9.0} {:>10.0} {:>9.3}",
                side.label,
                d.iops,
                d.mb_per_s,
                d.clat_p50_us,
                d.clat_p99_us,
                d.clat_p999_us,
                side.cpu_s_per_gb
            );
        }
    }
    for fio in &medians[1..] {
        for (dir, s, f) in
            [("read", medians[0].read, fio.read), ("write", medians[0].write, fio.write)]
        {
            let (Some(s), Some(f)) = (s, f) else { continue };
            let _ = writeln!(
                out,
                "{:<40} {dir:<5} {:>10.3} {:>9.3} {:>9.3} {:>9.3} {:>10.3} {:>9.3}",
                format!("shingle ÷ {}", fio.label),
                s.iops / f.iops,
                s.mb_per_s / f.mb_per_s,
                s.clat_p50_us / f.clat_p50_us,
                s.clat_p99_us / f.clat_p99_us,
                s.clat_p999_us / f.clat_p999_us,
                medians[0].cpu_s_per_gb / fio.cpu_s_per_gb
            );
        }
    }
    let _ = writeln!(
        out,
        "CPU s/GB: shingle's daemon (every thread) or fio's job threads, CPU seconds per 10^9 \
         bytes moved. Latency: completion (clat). Ratios above 1 favour shingle for IOPS and \
         MB/s, below 1 for latency and CPU."
    );
    if report.runs.len() > 1 {
        let _ = writeln!(out, "per run (IOPS read/write):");
        for (i, (s, fio)) in report.runs.iter().enumerate() {
            let mut line = format!("  run {}: shingle {}", i + 1, iops_pair(&shingle_summary(s)));
            for f in fio {
                let _ = write!(line, "; {} {}", f.label, iops_pair(&fio_summary(f)));
            }
            let _ = writeln!(out, "{line}");
        }
    }
}

fn iops_pair(side: &SideSummary) -> String {
    let iops =
        |d: Option<DirSummary>| d.map_or_else(|| "-".to_owned(), |d| format!("{:.0}", d.iops));
    format!("{}/{}", iops(side.read), iops(side.write))
}

// ---------------------------------------------------------------------------------------------
// Smoke mode.

/// The four documented workloads, short, each against a new spawned disk and fio.
fn smoke(args: &Args) -> Result<bool> {
    let workloads: [&[&str]; 4] = [
        &["--name=put-4k", "--rw=randwrite", "--bs=4k", "--iodepth=64"],
        &["--name=put-1m", "--rw=write", "--bs=1m", "--iodepth=16"],
        &["--name=get-4k", "--rw=randread", "--bs=4k", "--iodepth=32"],
        &["--name=mixed-64k", "--rw=randrw", "--rwmixread=70", "--bs=64k", "--iodepth=16"],
    ];
    let dir = args
        .smoke_dir
        .canonicalize()
        .with_context(|| format!("--smoke-dir {}", args.smoke_dir.display()))?;
    let mut clean = true;
    for workload in workloads {
        let disk = dir.join(format!("shingle-bench-smoke-{}.img", std::process::id()));
        let mut argv: Vec<String> = vec!["shingle-bench".to_owned()];
        argv.extend(workload.iter().map(|s| (*s).to_owned()));
        argv.extend([
            format!("--size={SMOKE_SIZE}"),
            format!("--runtime={SMOKE_RUNTIME}"),
            "--time_based".to_owned(),
            "--spawn".to_owned(),
            disk.display().to_string(),
            "--spawn-size=1g".to_owned(),
            "--baseline=fio".to_owned(),
            format!("--fio={}", args.fio.display()),
            "--eta=never".to_owned(),
        ]);
        if let Some(shingled) = &args.shingled {
            argv.push(format!("--shingled={}", shingled.display()));
        }
        eprintln!("shingle-bench --smoke: {}", argv[1..].join(" "));
        let sub = Args::parse_from(&argv);
        let result = run_main(&sub);
        if disk.exists() {
            let _ = std::fs::remove_file(&disk);
        }
        clean &= result.with_context(|| format!("smoke workload {}", workload[0]))?;
    }
    ensure!(clean, "a smoke workload had failed requests");
    eprintln!("shingle-bench --smoke: every workload ran, no request failed");
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(list: &[&str]) -> JobSpec {
        let options: Vec<(String, Option<String>)> = list
            .iter()
            .map(|o| match o.split_once('=') {
                Some((k, v)) => (k.to_owned(), Some(v.to_owned())),
                None => ((*o).to_owned(), None),
            })
            .collect();
        fiojob::job_from_options(&options).unwrap()
    }

    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory as _;
        Args::command().debug_assert();
        let args = Args::parse_from([
            "shingle-bench",
            "--rw=randrw",
            "--bs=64k",
            "--rwmixread=70",
            "--size=1g",
            "--runtime=10",
            "--time_based",
            "--spawn=/tmp/x",
            "--baseline=fio",
            "--output-format=json",
        ]);
        let jobs = jobs_of(&args).unwrap();
        assert_eq!(jobs[0].rwmixread, 70);
        assert!(jobs[0].time_based);
        assert_eq!(args.baseline_sync, [Sync::Dsync, Sync::None]);
        assert!(fiojob::SUPPORTED_OPTIONS.contains(&"rwmixread"));
    }

    #[test]
    fn a_spawned_disk_holds_the_run() {
        let put = spec(&["rw=write", "bs=1m", "runtime=10", "time_based"]);
        let size = disk_size_for(&[put]);
        assert!(size >= 11_000_000_000 && size % ZONE_BYTES_LARGE == 0, "{size}");
        let get = spec(&["rw=randread", "size=16m", "runtime=1", "time_based"]);
        assert_eq!(disk_size_for(&[get]), (1 + NON_LOG_ZONES_MAX) * ZONE_BYTES_SMALL);
    }

    #[test]
    fn fio_gets_the_equivalent_job() {
        let jobs = vec![
            spec(&[
                "name=mix",
                "rw=randrw",
                "bs=4k-64k",
                "iodepth=16",
                "numjobs=2",
                "size=64m",
                "rwmixread=70",
                "runtime=5",
                "time_based",
                "ramp_time=1",
            ]),
            spec(&["name=w", "rw=write", "bs=1m", "size=10m"]),
        ];
        let regions = fio_regions(&jobs, 1 << 30).unwrap();
        assert_eq!(regions, [(0, 128 << 20), (128 << 20, 10 << 20)]);
        let setup = FioSetup {
            path: PathBuf::from("/tmp/f.dat"),
            size_bytes: 1 << 30,
            is_device: false,
            file: None,
            regions,
        };
        let text = fio_job_file(&jobs, &setup, Sync::Dsync);
        for line in [
            "filename=/tmp/f.dat",
            "direct=1",
            "ioengine=io_uring",
            "group_reporting=1",
            "sync=dsync",
            "[mix]",
            "rw=randrw",
            "bsrange=4096-65536",
            "iodepth=16",
            "numjobs=2",
            "offset=0",
            "size=134217728",
            "runtime=5000ms",
            "time_based",
            "ramp_time=1000ms",
            "rwmixread=70",
            "norandommap",
            "[w]",
            "offset=134217728",
            "io_size=10485760",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
        assert!(!fio_job_file(&jobs, &setup, Sync::None).contains("sync"));
        assert!(fio_job_file(&jobs, &setup, Sync::Fdatasync).contains("fdatasync=1"));
        assert!(fio_regions(&jobs, 64 << 20).is_err(), "does not fit");
    }
}
