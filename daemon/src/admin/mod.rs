//! The offline admin commands of `shingled`: `format`, `inspect` and `check`. They run while the
//! daemon does not have the disk open, on one ioengine core, and only `format` writes.
//!
//! ```text
//! shingled format  PATH [--size SIZE] [--zone-size SIZE] [--zone-capacity SIZE] [--force]
//!                       [--value-bytes-max SIZE] [--json]
//! shingled inspect PATH [--zone-size SIZE] [--zone-capacity SIZE] [--zones] [--json]
//! shingled check   PATH [--zone-size SIZE] [--zone-capacity SIZE] [--json]
//! ```
//!
//! Exit status: 0 done (check: no problem found), 1 check found problems, 2 the command could
//! not run (usage, not a shingle disk, disk in use, I/O error, format refused). docs/ADMIN.md
//! describes the commands and their output.
//!
//! Offline means: disks are opened as the daemon opens them (`ioengine::device::Disk::open`):
//! block devices `O_EXCL`, regular files with an exclusive `flock`, held while the fd is open.
//! So a disk the daemon serves, or another admin command holds, is refused.

mod format;
mod render;
mod survey;

use std::fs::File;
use std::io::{Seek as _, Write as _};
use std::path::{Path, PathBuf};

use clap::Parser as _;
use config::ByteSize;
use ioengine::Core;
use ioengine::device::{Device, DeviceKind, Disk, DiskOptions};

use crate::store::{self, StoreError};

pub use format::{Formatted, format};
pub use survey::{
    CheckpointSetInfo, DeviceInfo, IndexInfo, LogInfo, Problem, RegionInfo, Survey, SurveyOptions,
    ZoneInfo, survey,
};

/// Exit status: done; `check` found nothing wrong.
pub const EXIT_OK: i32 = 0;
/// Exit status: `check` found problems.
pub const EXIT_PROBLEMS: i32 = 1;
/// Exit status: the command could not run.
pub const EXIT_CANNOT_RUN: i32 = 2;

/// Submission-queue entries of the admin commands' ring (they keep one I/O in flight).
const RING_ENTRIES: u32 = 64;
/// Problems and regions listed by default (the rest are counted).
pub const LISTED_MAX_DEFAULT: usize = 100;

/// Whether `word` (the first argument) names an admin command.
pub fn is_command(word: &str) -> bool {
    matches!(word, "format" | "inspect" | "check")
}

/// The admin commands, as `shingled` parses them.
#[derive(Debug, clap::Parser)]
#[command(name = "shingled", about = "shingled's offline admin commands", version)]
pub struct Cli {
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// One admin command.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Format a regular file, a conventional block device or a zoned block device as an empty
    /// shingle disk (refuses a disk that holds data unless --force).
    Format(FormatArgs),
    /// Describe a disk: geometry, superblock, checkpoints, zones, and a scan of the log
    /// (read-only; the daemon must not have the disk open).
    Inspect(InspectArgs),
    /// Verify every record and every index entry of a disk (read-only; the daemon must not
    /// have the disk open). Exit 0: clean, 1: problems found, 2: could not run.
    Check(CheckArgs),
}

/// How to open the disk; zone sizes apply to emulated zones only (regular files, conventional
/// block devices).
#[derive(Debug, Clone, clap::Args)]
pub struct Target {
    /// A regular file, a conventional block device or a zoned block device.
    pub path: PathBuf,
    /// Emulated zones: bytes per zone. Default: the superblock's (inspect, check), 256MiB
    /// (format).
    #[arg(long, value_name = "SIZE")]
    pub zone_size: Option<ByteSize>,
    /// Emulated zones: writable bytes per zone, as the daemon's `zone_capacity`. Default: the
    /// zone size.
    #[arg(long, value_name = "SIZE")]
    pub zone_capacity: Option<ByteSize>,
}

impl Target {
    /// A target with default zone options.
    pub fn new(path: impl Into<PathBuf>) -> Target {
        Target { path: path.into(), zone_size: None, zone_capacity: None }
    }
}

/// `shingled format`.
#[derive(Debug, Clone, clap::Args)]
pub struct FormatArgs {
    /// The disk.
    #[command(flatten)]
    pub target: Target,
    /// Create the file with this size when it does not exist (its space is reserved).
    #[arg(long, value_name = "SIZE")]
    pub size: Option<ByteSize>,
    /// Erase a disk that holds a shingle superblock or other data.
    #[arg(long)]
    pub force: bool,
    /// Largest value the disk accepts.
    #[arg(long, value_name = "SIZE", default_value_t = config::VALUE_BYTES_MAX_DEFAULT)]
    pub value_bytes_max: ByteSize,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `shingled inspect`.
#[derive(Debug, Clone, clap::Args)]
pub struct InspectArgs {
    /// The disk.
    #[command(flatten)]
    pub target: Target,
    /// List every zone (condition, write pointer, log end, records, live bytes).
    #[arg(long)]
    pub zones: bool,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Problems and regions listed at most (the rest are counted).
    #[arg(long, value_name = "N", default_value_t = LISTED_MAX_DEFAULT)]
    pub listed_max: usize,
}

/// `shingled check`.
#[derive(Debug, Clone, clap::Args)]
pub struct CheckArgs {
    /// The disk.
    #[command(flatten)]
    pub target: Target,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Problems and regions listed at most (the rest are counted).
    #[arg(long, value_name = "N", default_value_t = LISTED_MAX_DEFAULT)]
    pub listed_max: usize,
}

/// Why an admin command could not run.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("{0}")]
    Usage(String),
    #[error("cannot open {path}: {source}")]
    Open { path: String, source: ioengine::Error },
    #[error("{what} {path}: {source}")]
    File { what: &'static str, path: String, source: std::io::Error },
    #[error("cannot start an io_uring for the command: {0}")]
    Ring(ioengine::Error),
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Store(#[from] StoreError),
}

/// Runs an admin command from `shingled`'s arguments (`args[0]` is the command name) and
/// returns the process exit status. Output goes to stdout, errors to stderr.
pub fn main(args: &[String]) -> i32 {
    let cli = match Cli::try_parse_from(
        std::iter::once("shingled").chain(args.iter().map(|a| a.as_str())),
    ) {
        Ok(cli) => cli,
        Err(err) => {
            // --help and --version print and succeed; a usage error says why.
            let _ = err.print();
            return if err.use_stderr() { EXIT_CANNOT_RUN } else { EXIT_OK };
        }
    };
    let name = match &cli.command {
        Command::Format(_) => "format",
        Command::Inspect(_) => "inspect",
        Command::Check(_) => "check",
    };
    match run(&cli.command) {
        Ok(status) => status,
        Err(err) => {
            eprintln!("shingled {name}: {err}");
            EXIT_CANNOT_RUN
        }
    }
}

/// Runs one command, printing its output; returns the exit status.
pub fn run(command: &Command) -> Result<i32, AdminError> {
    let mut out = std::io::stdout().lock();
    let written = match command {
        Command::Format(args) => {
            let formatted = format(args)?;
            render::formatted(&mut out, &formatted, args.json)
        }
        Command::Inspect(args) => {
            let options = SurveyOptions { zone_list: args.zones, listed_max: args.listed_max };
            let survey = examine(&args.target, &options)?;
            render::inspect(&mut out, &survey, args.json)
        }
        Command::Check(args) => {
            let options = SurveyOptions { zone_list: false, listed_max: args.listed_max };
            let survey = examine(&args.target, &options)?;
            render::check(&mut out, &survey, args.json)
                .and_then(|()| out.flush())
                .map_err(stdout_error)?;
            return Ok(if survey.problems_total == 0 { EXIT_OK } else { EXIT_PROBLEMS });
        }
    };
    written.and_then(|()| out.flush()).map_err(stdout_error)?;
    Ok(EXIT_OK)
}

fn stdout_error(source: std::io::Error) -> AdminError {
    AdminError::File { what: "cannot write to", path: "stdout".into(), source }
}

/// Opens the disk read-only in effect (nothing is written), loads it as the store would and
/// surveys it: what `inspect` and `check` print.
pub fn examine(target: &Target, options: &SurveyOptions) -> Result<Survey, AdminError> {
    let core = Core::new(RING_ENTRIES).map_err(AdminError::Ring)?;
    let target = target.clone();
    let options = options.clone();
    core.block_on(async move {
        let opened = open_existing(&target).await?;
        let view = store::scan::DiskView::open(opened.disk).await?;
        Ok(survey(&view, &target.path.display().to_string(), &options).await)
    })
}

/// A disk opened by an admin command, with the lock that keeps other commands away.
#[derive(Debug)]
pub struct Opened {
    /// The device.
    pub disk: Disk,
}

/// Opens an existing disk. For emulated zones without `--zone-size`, the zone size comes from
/// the superblock (read through a first open that sees the whole device as one zone).
pub async fn open_existing(target: &Target) -> Result<Opened, AdminError> {
    let options = |zone_size_bytes: u64| DiskOptions {
        zone_size_bytes,
        zone_capacity_bytes: target.zone_capacity.map(|c| c.0),
        ..DiskOptions::default()
    };
    if let Some(size) = target.zone_size {
        let disk = open_disk(&target.path, &options(size.0))?;
        return Ok(Opened { disk });
    }
    let whole = probe_zone_bytes(&target.path)?;
    let probe =
        open_disk(&target.path, &DiskOptions { zone_size_bytes: whole, ..DiskOptions::default() })?;
    if probe.geometry().kind == DeviceKind::Zoned {
        return Ok(Opened { disk: probe });
    }
    // The superblock gives the zone size; a disk that is not shingle's fails here, saying why.
    let superblock = store::read_superblock(&probe).await?;
    drop(probe);
    let disk = open_disk(&target.path, &options(superblock.zone_size_bytes))?;
    Ok(Opened { disk })
}

/// Opens a device with `Disk::open`, naming the path in errors.
pub(crate) fn open_disk(path: &Path, options: &DiskOptions) -> Result<Disk, AdminError> {
    Disk::open(path, options)
        .map_err(|source| AdminError::Open { path: path.display().to_string(), source })
}

/// The device's size rounded down to 4 KiB: a zone size that sees the whole device as one
/// zone (for reading the superblock before the real zone size is known).
fn probe_zone_bytes(path: &Path) -> Result<u64, AdminError> {
    let file_error =
        |source| AdminError::File { what: "cannot open", path: path.display().to_string(), source };
    let mut file = File::open(path).map_err(file_error)?;
    let size = file.seek(std::io::SeekFrom::End(0)).map_err(file_error)?;
    let rounded = size / 4096 * 4096;
    if rounded == 0 {
        return Err(AdminError::Refused(format!(
            "{} holds {size} bytes: too small to be a shingle disk",
            path.display()
        )));
    }
    Ok(rounded)
}
