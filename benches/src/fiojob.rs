//! fio's vocabulary for `shingle-bench`: the job options it understands (`rw`, `bs`, `iodepth`,
//! `numjobs`, `size`, `runtime`, `time_based`, `ramp_time`, `rwmixread`, ...), fio's size and time
//! suffixes, and job files in fio's INI syntax (`[global]` plus one section per job). Every
//! option is checked here, once, into a [`JobSpec`]; an option fio has and shingle-bench does
//! not is refused by name, so a job file never silently means something else than under fio.
//!
//! How each option maps onto a key-value store is `shingle-bench --help` and
//! benches/BENCHMARKING.md ("shingle-bench").

use std::fmt;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use serde::Serialize;

/// Bounds of a job: clients per job, requests in flight per client, bytes per job, one value.
pub const NUMJOBS_MAX: usize = 256;
pub const IODEPTH_MAX: usize = 4096;
pub const SIZE_BYTES_MAX: u64 = 64 << 40;
/// A value carries its key number in its first 8 bytes (so a GET can tell whose bytes it got).
pub const BS_BYTES_MIN: u64 = 8;
pub const BS_BYTES_MAX: u64 = 1 << 30;
const _: () = assert!(BS_BYTES_MIN as usize >= crate::load::STAMP_BYTES);
pub const RUNTIME_MAX: Duration = Duration::from_secs(86_400);
/// Jobs in one job file.
pub const JOBS_MAX: usize = 64;

/// fio's `rw`: what each request of a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RwMode {
    Read,
    Write,
    RandRead,
    RandWrite,
    Rw,
    RandRw,
}

impl RwMode {
    fn parse(text: &str) -> Result<RwMode> {
        Ok(match text {
            "read" => RwMode::Read,
            "write" => RwMode::Write,
            "randread" => RwMode::RandRead,
            "randwrite" => RwMode::RandWrite,
            "rw" | "readwrite" => RwMode::Rw,
            "randrw" => RwMode::RandRw,
            "trim" | "randtrim" | "trimwrite" | "randtrimwrite" => {
                bail!("rw={text}: trims are not supported (shingle has no TRIM; DELETE is not one)")
            }
            other => bail!(
                "rw={other}: not one of read, write, randread, randwrite, rw (readwrite), randrw"
            ),
        })
    }

    /// fio's name for it.
    pub fn name(self) -> &'static str {
        match self {
            RwMode::Read => "read",
            RwMode::Write => "write",
            RwMode::RandRead => "randread",
            RwMode::RandWrite => "randwrite",
            RwMode::Rw => "rw",
            RwMode::RandRw => "randrw",
        }
    }

    pub fn reads(self) -> bool {
        !matches!(self, RwMode::Write | RwMode::RandWrite)
    }

    pub fn writes(self) -> bool {
        !matches!(self, RwMode::Read | RwMode::RandRead)
    }

    /// Random key choice for reads (writes always append new keys).
    pub fn random(self) -> bool {
        matches!(self, RwMode::RandRead | RwMode::RandWrite | RwMode::RandRw)
    }
}

impl fmt::Display for RwMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Value sizes: `min_bytes` when fixed; for a range (fio's `bsrange`, or `bs=4k-1m`), a
/// uniformly drawn multiple of `min_bytes` between the two, as fio draws block sizes in a range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct BlockSizes {
    pub min_bytes: u64,
    pub max_bytes: u64,
}

impl BlockSizes {
    pub fn fixed(bytes: u64) -> BlockSizes {
        BlockSizes { min_bytes: bytes, max_bytes: bytes }
    }

    /// The size drawn by the 64 random bits `r`.
    pub fn size_for(&self, r: u64) -> u64 {
        let steps = (self.max_bytes - self.min_bytes) / self.min_bytes + 1;
        self.min_bytes * (1 + ((u128::from(r) * u128::from(steps)) >> 64) as u64)
    }

    /// The mean of [`BlockSizes::size_for`] over uniform `r`.
    pub fn mean_bytes(&self) -> f64 {
        let steps = (self.max_bytes - self.min_bytes) / self.min_bytes + 1;
        self.min_bytes as f64 * (steps + 1) as f64 / 2.0
    }

    /// fio's spelling: `4096` or `4096-1048576`.
    pub fn fio_text(&self) -> String {
        if self.min_bytes == self.max_bytes {
            self.min_bytes.to_string()
        } else {
            format!("{}-{}", self.min_bytes, self.max_bytes)
        }
    }
}

/// One job: `numjobs` independent clients doing the same thing.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobSpec {
    pub name: String,
    pub rw: RwMode,
    pub bs: BlockSizes,
    /// Requests each client keeps in flight.
    pub iodepth: usize,
    /// Clients (threads, each with its own connections).
    pub numjobs: usize,
    /// Bytes per client: written (write jobs not time-based), preloaded (jobs that read).
    pub size_bytes: Option<u64>,
    pub runtime: Option<Duration>,
    pub time_based: bool,
    /// Run this long before measuring.
    pub ramp_time: Duration,
    /// Percentage of reads in `rw`/`randrw`.
    pub rwmixread: u32,
    /// Stop at the first failed request (`none`, fio's default) or count failures and go on.
    pub continue_on_error: bool,
    /// The options as given (fio's JSON repeats them as "job options").
    #[serde(skip)]
    pub options: Vec<(String, String)>,
}

impl JobSpec {
    /// fio's defaults: `rw=read`, `bs=4k`, `iodepth=1`, `numjobs=1`, `rwmixread=50`.
    fn new(name: &str) -> JobSpec {
        JobSpec {
            name: name.to_owned(),
            rw: RwMode::Read,
            bs: BlockSizes::fixed(4096),
            iodepth: 1,
            numjobs: 1,
            size_bytes: None,
            runtime: None,
            time_based: false,
            ramp_time: Duration::ZERO,
            rwmixread: 50,
            continue_on_error: false,
            options: Vec::new(),
        }
    }

    /// Applies one `key=value` option (`value` `None` for a bare flag such as `time_based`).
    fn apply(&mut self, key: &str, value: Option<&str>) -> Result<()> {
        let canonical = canonical_option(key)?;
        let need = || value.with_context(|| format!("option `{key}` needs a value (`{key}=...`)"));
        match canonical {
            "name" => self.name = need()?.to_owned(),
            "description" => {}
            "rw" => self.rw = RwMode::parse(need()?)?,
            "bs" => self.bs = parse_block_sizes(need()?).with_context(|| key.to_owned())?,
            "iodepth" => self.iodepth = parse_count(need()?, 1, IODEPTH_MAX, key)?,
            "numjobs" => self.numjobs = parse_count(need()?, 1, NUMJOBS_MAX, key)?,
            "size" => {
                let bytes = parse_fio_size(need()?).with_context(|| key.to_owned())?;
                ensure!(
                    (1..=SIZE_BYTES_MAX).contains(&bytes),
                    "{key}={bytes}: must be 1..={SIZE_BYTES_MAX} bytes"
                );
                self.size_bytes = Some(bytes);
            }
            "runtime" => {
                let runtime = parse_fio_time(need()?).with_context(|| key.to_owned())?;
                ensure!(runtime <= RUNTIME_MAX, "{key}: at most {RUNTIME_MAX:?}");
                self.runtime = (!runtime.is_zero()).then_some(runtime);
            }
            "time_based" => self.time_based = parse_bool(value, key)?,
            "ramp_time" => {
                self.ramp_time = parse_fio_time(need()?).with_context(|| key.to_owned())?;
                ensure!(self.ramp_time <= RUNTIME_MAX, "{key}: at most {RUNTIME_MAX:?}");
            }
            "rwmixread" => self.rwmixread = parse_count(need()?, 0, 100, key)? as u32,
            "rwmixwrite" => self.rwmixread = 100 - parse_count(need()?, 0, 100, key)? as u32,
            "continue_on_error" => {
                self.continue_on_error = match need()? {
                    "none" | "0" => false,
                    "all" | "1" => true,
                    other => bail!(
                        "continue_on_error={other}: shingle-bench takes `none` (stop at the first \
                         failed request, fio's default) or `all` (count failures by status and go \
                         on)"
                    ),
                }
            }
            other => unreachable!("canonical_option returned {other}"),
        }
        self.options.push((key.to_owned(), value.unwrap_or("").to_owned()));
        Ok(())
    }

    /// Checks what depends on several options.
    fn finish(self) -> Result<JobSpec> {
        let name = &self.name;
        ensure!(!name.is_empty(), "a job needs a name");
        if self.rw.reads() {
            ensure!(
                self.size_bytes.is_some(),
                "job {name}: rw={} reads, so it needs size= (bytes of values each client PUTs \
                 before the measured phase, and then reads)",
                self.rw
            );
        }
        if !self.time_based {
            ensure!(
                self.size_bytes.is_some() || self.runtime.is_some(),
                "job {name}: give size= (bytes each client moves) or runtime= (with time_based, \
                 or as a limit): the job would never end"
            );
        }
        ensure!(
            !self.time_based || self.runtime.is_some(),
            "job {name}: time_based needs runtime="
        );
        if let Some(size) = self.size_bytes {
            ensure!(
                size >= self.bs.min_bytes,
                "job {name}: size={size} is less than one value of {} bytes",
                self.bs.min_bytes
            );
        }
        Ok(self)
    }

    /// The bytes preloaded for this job (every client's `size`), 0 when it does not read.
    pub fn preload_bytes(&self) -> u64 {
        if self.rw.reads() { self.size_bytes.unwrap_or(0) * self.numjobs as u64 } else { 0 }
    }
}

/// The options shingle-bench takes, with fio's aliases, or an error naming the option.
fn canonical_option(key: &str) -> Result<&'static str> {
    Ok(match key {
        "name" => "name",
        "description" => "description",
        "rw" | "readwrite" => "rw",
        "bs" | "blocksize" | "bsrange" | "blocksize_range" => "bs",
        "iodepth" => "iodepth",
        "numjobs" => "numjobs",
        "size" => "size",
        "runtime" | "timeout" => "runtime",
        "time_based" => "time_based",
        "ramp_time" => "ramp_time",
        "rwmixread" => "rwmixread",
        "rwmixwrite" => "rwmixwrite",
        "continue_on_error" => "continue_on_error",
        "filename" | "directory" | "ioengine" | "direct" | "buffered" | "sync" | "fsync"
        | "fdatasync" | "end_fsync" => bail!(
            "option `{key}` is not supported by shingle-bench: it drives shingled over the network, \
             and a PUT is always durable (RWF_DSYNC) before it is answered; give the daemon's disk \
             with --spawn PATH or its address with --server, and see --baseline fio for fio's side"
        ),
        other => bail!(
            "option `{other}` is not supported by shingle-bench (it takes {})",
            SUPPORTED_OPTIONS.join(", ")
        ),
    })
}

/// What [`canonical_option`] accepts, for messages and `--help`.
pub const SUPPORTED_OPTIONS: &[&str] = &[
    "name",
    "description",
    "rw/readwrite",
    "bs/blocksize/bsrange",
    "iodepth",
    "numjobs",
    "size",
    "runtime",
    "time_based",
    "ramp_time",
    "rwmixread",
    "rwmixwrite",
    "continue_on_error",
];

/// Options in the order given: `key` and, unless a bare flag, its value.
pub type Options = Vec<(String, Option<String>)>;

/// Builds the one job of a command line from its options (in order), e.g. from
/// `--name=x --rw=randread --bs=4k`.
pub fn job_from_options(options: &[(String, Option<String>)]) -> Result<JobSpec> {
    let mut job = JobSpec::new("job");
    for (key, value) in options {
        job.apply(key, value.as_deref())?;
    }
    job.finish()
}

/// Parses a job file: `[global]` sections give defaults to the jobs after them, every other
/// section is a job named after it. `defaults` (the command line's job options) come first.
/// Comments start with `;` or `#`; `key=value`, `key = value` or a bare `key` per line.
pub fn parse_job_file(text: &str, defaults: &[(String, Option<String>)]) -> Result<Vec<JobSpec>> {
    let mut global: Options = defaults.to_vec();
    let mut jobs: Vec<(usize, String, Options)> = Vec::new();
    let mut in_global = false;
    for (index, raw) in text.lines().enumerate() {
        let line_no = index + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with(';') || line.starts_with('#') {
            continue;
        }
        if let Some(section) = line.strip_prefix('[') {
            let name = section
                .strip_suffix(']')
                .with_context(|| format!("line {line_no}: `{line}` opens a section without `]`"))?
                .trim();
            ensure!(!name.is_empty(), "line {line_no}: a section needs a name");
            in_global = name == "global";
            if !in_global {
                ensure!(jobs.len() < JOBS_MAX, "line {line_no}: more than {JOBS_MAX} jobs");
                let mut options = global.clone();
                options.push(("name".to_owned(), Some(name.to_owned())));
                jobs.push((line_no, name.to_owned(), options));
            }
            continue;
        }
        let (key, value) = match line.split_once('=') {
            Some((key, value)) => (key.trim(), Some(value.trim().to_owned())),
            None => (line, None),
        };
        ensure!(!key.is_empty(), "line {line_no}: `{line}` has no option name");
        // Check the name now, so the error points at this line.
        canonical_option(key).with_context(|| format!("line {line_no}"))?;
        let option = (key.to_owned(), value);
        if in_global {
            global.push(option);
        } else {
            let (_, _, options) = jobs
                .last_mut()
                .with_context(|| format!("line {line_no}: `{line}` comes before any section"))?;
            options.push(option);
        }
    }
    ensure!(!jobs.is_empty(), "the job file defines no job (only [global] or nothing)");
    jobs.into_iter()
        .map(|(line_no, name, options)| {
            job_from_options(&options).with_context(|| format!("job [{name}] (line {line_no})"))
        })
        .collect()
}

/// fio's integer with a size suffix under its default `kb_base=1024`: `k`, `m`, `g`, `t`,
/// `p` (any case, optionally followed by `b`) are powers of 2 (4k = 4096), while `kib`, `mib`,
/// ... are powers of 10 (fio's compatibility rule, kept so that a job file means what it means
/// under fio). A `0x` prefix is hexadecimal.
pub fn parse_fio_size(text: &str) -> Result<u64> {
    let text = text.trim();
    let lower = text.to_ascii_lowercase();
    let (digits, suffix, radix) = match lower.strip_prefix("0x") {
        Some(hex) => {
            let end = hex.find(|c: char| !c.is_ascii_hexdigit()).unwrap_or(hex.len());
            (&hex[..end], &hex[end..], 16)
        }
        None => {
            let end = lower.find(|c: char| !c.is_ascii_digit()).unwrap_or(lower.len());
            (&lower[..end], &lower[end..], 10)
        }
    };
    ensure!(!digits.is_empty(), "{text:?} is not a size (e.g. 4096, 4k, 1m, 10g)");
    let number = u64::from_str_radix(digits, radix).with_context(|| format!("{text:?}"))?;
    let multiplier: u64 = match suffix {
        "" | "b" => 1,
        "k" | "kb" => 1 << 10,
        "m" | "mb" => 1 << 20,
        "g" | "gb" => 1 << 30,
        "t" | "tb" => 1 << 40,
        "p" | "pb" => 1 << 50,
        "kib" => 1_000,
        "mib" => 1_000_000,
        "gib" => 1_000_000_000,
        "tib" => 1_000_000_000_000,
        "pib" => 1_000_000_000_000_000,
        other => bail!("{text:?}: unknown size suffix {other:?} (k, m, g, t, p)"),
    };
    number.checked_mul(multiplier).with_context(|| format!("{text:?} overflows"))
}

/// `bs`: one size, or a range `MIN-MAX` (also `MIN:MAX`) whose draws are multiples of MIN.
pub fn parse_block_sizes(text: &str) -> Result<BlockSizes> {
    ensure!(
        !text.contains(','),
        "{text:?}: separate read,write block sizes are not supported; give one size or a range"
    );
    let sizes = match text.split_once(['-', ':']) {
        Some((min, max)) => {
            BlockSizes { min_bytes: parse_fio_size(min)?, max_bytes: parse_fio_size(max)? }
        }
        None => BlockSizes::fixed(parse_fio_size(text)?),
    };
    ensure!(
        BS_BYTES_MIN <= sizes.min_bytes
            && sizes.min_bytes <= sizes.max_bytes
            && sizes.max_bytes <= BS_BYTES_MAX,
        "{text:?}: block sizes must be {BS_BYTES_MIN}..={BS_BYTES_MAX} bytes, the smaller first"
    );
    Ok(sizes)
}

/// fio's time: seconds unless suffixed `us`/`usec`, `ms`/`msec`, `s`, `m`, `h`, `d`.
pub fn parse_fio_time(text: &str) -> Result<Duration> {
    let text = text.trim();
    let end = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (digits, suffix) = text.split_at(end);
    ensure!(!digits.is_empty(), "{text:?} is not a time (e.g. 30, 10s, 500ms, 2m)");
    let n: u64 = digits.parse().with_context(|| format!("{text:?}"))?;
    let seconds = |mult: u64| n.checked_mul(mult).map(Duration::from_secs);
    let duration = match suffix.to_ascii_lowercase().as_str() {
        "" | "s" | "sec" => seconds(1),
        "m" | "min" => seconds(60),
        "h" => seconds(3600),
        "d" => seconds(86_400),
        "ms" | "msec" => Some(Duration::from_millis(n)),
        "us" | "usec" => Some(Duration::from_micros(n)),
        other => bail!("{text:?}: unknown time suffix {other:?} (us, ms, s, m, h, d)"),
    };
    duration.with_context(|| format!("{text:?} overflows"))
}

fn parse_count(text: &str, min: usize, max: usize, key: &str) -> Result<usize> {
    let n: usize = text.trim().parse().with_context(|| format!("{key}={text}: not a number"))?;
    ensure!((min..=max).contains(&n), "{key}={n}: must be {min}..={max}");
    Ok(n)
}

fn parse_bool(value: Option<&str>, key: &str) -> Result<bool> {
    match value.map(str::trim) {
        None | Some("1") | Some("true") => Ok(true),
        Some("0") | Some("false") => Ok(false),
        Some(other) => bail!("{key}={other}: takes 0 or 1"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(list: &[(&str, Option<&str>)]) -> Vec<(String, Option<String>)> {
        list.iter().map(|(k, v)| ((*k).to_owned(), v.map(str::to_owned))).collect()
    }

    #[test]
    fn sizes_follow_fios_default_kb_base() {
        assert_eq!(parse_fio_size("4096").unwrap(), 4096);
        assert_eq!(parse_fio_size("4k").unwrap(), 4096);
        assert_eq!(parse_fio_size("4K").unwrap(), 4096);
        assert_eq!(parse_fio_size("4KB").unwrap(), 4096);
        assert_eq!(parse_fio_size("1m").unwrap(), 1 << 20);
        assert_eq!(parse_fio_size("10G").unwrap(), 10 << 30);
        assert_eq!(parse_fio_size("2t").unwrap(), 2 << 40);
        assert_eq!(parse_fio_size("0x1000").unwrap(), 4096);
        // fio's kb_base=1024 compatibility: the IEC suffixes are the powers of 10.
        assert_eq!(parse_fio_size("4KiB").unwrap(), 4000);
        assert_eq!(parse_fio_size("1MiB").unwrap(), 1_000_000);
        assert!(parse_fio_size("4x").is_err());
        assert!(parse_fio_size("k").is_err());
        assert!(parse_fio_size("99999999999999999999").is_err());
    }

    #[test]
    fn block_sizes_take_ranges() {
        assert_eq!(parse_block_sizes("64k").unwrap(), BlockSizes::fixed(65536));
        let range = parse_block_sizes("4k-1m").unwrap();
        assert_eq!(range, BlockSizes { min_bytes: 4096, max_bytes: 1 << 20 });
        assert_eq!(parse_block_sizes("4k:8k").unwrap().max_bytes, 8192);
        assert!(parse_block_sizes("8k-4k").is_err(), "smaller first");
        assert!(parse_block_sizes("4k,8k").is_err());
        assert!(parse_block_sizes("4").is_err(), "below the stamp");
        // Draws are multiples of the minimum, and cover both ends.
        let (mut seen_min, mut seen_max) = (false, false);
        for i in 0..10_000u64 {
            let size = range.size_for(crate::measure::splitmix64(i));
            assert!(size % 4096 == 0 && (4096..=1 << 20).contains(&size), "{size}");
            seen_min |= size == 4096;
            seen_max |= size == 1 << 20;
        }
        assert!(seen_min && seen_max);
        assert_eq!(range.size_for(0), 4096);
        assert_eq!(range.size_for(u64::MAX), 1 << 20);
        assert_eq!(BlockSizes::fixed(4096).size_for(12345), 4096);
        assert_eq!(range.mean_bytes(), 4096.0 * 257.0 / 2.0);
    }

    #[test]
    fn times_take_fios_suffixes() {
        assert_eq!(parse_fio_time("30").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_fio_time("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_fio_time("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_fio_time("1h").unwrap(), Duration::from_secs(3600));
        assert!(parse_fio_time("1y").is_err());
    }

    #[test]
    fn command_line_options_make_one_job() {
        let job = job_from_options(&opts(&[
            ("name", Some("mix")),
            ("rw", Some("randrw")),
            ("bs", Some("64k")),
            ("iodepth", Some("16")),
            ("numjobs", Some("2")),
            ("size", Some("1g")),
            ("runtime", Some("10")),
            ("time_based", None),
            ("ramp_time", Some("2s")),
            ("rwmixread", Some("70")),
        ]))
        .unwrap();
        assert_eq!(job.name, "mix");
        assert_eq!(job.rw, RwMode::RandRw);
        assert_eq!(job.bs, BlockSizes::fixed(65536));
        assert_eq!((job.iodepth, job.numjobs), (16, 2));
        assert_eq!(job.size_bytes, Some(1 << 30));
        assert_eq!(job.runtime, Some(Duration::from_secs(10)));
        assert!(job.time_based);
        assert_eq!(job.ramp_time, Duration::from_secs(2));
        assert_eq!(job.rwmixread, 70);
        assert_eq!(job.preload_bytes(), 2 << 30);
        let w = job_from_options(&opts(&[("rw", Some("randrw")), ("rwmixwrite", Some("30"))]));
        assert!(w.is_err(), "reads need a size");
        let w = job_from_options(&opts(&[
            ("rw", Some("randrw")),
            ("rwmixwrite", Some("30")),
            ("size", Some("1m")),
        ]))
        .unwrap();
        assert_eq!(w.rwmixread, 70);
    }

    #[test]
    fn jobs_that_could_not_end_or_make_no_sense_are_refused() {
        let err = |list: &[(&str, Option<&str>)]| {
            format!("{:#}", job_from_options(&opts(list)).unwrap_err())
        };
        assert!(err(&[("rw", Some("write"))]).contains("never end"));
        assert!(err(&[("rw", Some("read")), ("runtime", Some("5"))]).contains("size="));
        assert!(err(&[("rw", Some("write")), ("time_based", None)]).contains("runtime"));
        assert!(err(&[("rw", Some("trim"))]).contains("TRIM"));
        assert!(err(&[("iodepth", Some("0"))]).contains("1..=4096"));
        assert!(err(&[("numjobs", Some("x"))]).contains("not a number"));
        assert!(err(&[("ioengine", Some("libaio"))]).contains("`ioengine` is not supported"));
        assert!(err(&[("verify", Some("crc32c"))]).contains("`verify` is not supported"));
        assert!(err(&[("time_based", Some("yes"))]).contains("0 or 1"));
    }

    #[test]
    fn job_files_inherit_global_and_refuse_unknown_options_by_name() {
        let text = "\
; a comment
# another
[global]
bs=4k
iodepth = 8
size=64m
runtime=5
time_based

[reader]
rw=randread
numjobs=2

[writer]
rw=write
bs=1m

[global]
iodepth=1

[late]
rw=randwrite
";
        let defaults = opts(&[("rwmixread", Some("90")), ("iodepth", Some("2"))]);
        let jobs = parse_job_file(text, &defaults).unwrap();
        assert_eq!(jobs.len(), 3);
        let (reader, writer, late) = (&jobs[0], &jobs[1], &jobs[2]);
        assert_eq!(reader.name, "reader");
        assert_eq!((reader.rw, reader.iodepth, reader.numjobs), (RwMode::RandRead, 8, 2));
        assert_eq!(reader.bs, BlockSizes::fixed(4096));
        assert_eq!(reader.rwmixread, 90, "the command line's options are defaults");
        assert!(reader.time_based);
        assert_eq!(writer.bs, BlockSizes::fixed(1 << 20), "a job overrides [global]");
        assert_eq!(writer.iodepth, 8);
        assert_eq!(late.iodepth, 1, "a later [global] applies to the jobs after it");

        let bad = "[global]\nsize=1m\n\n[x]\nrw=read\nioengine=libaio\n";
        let err = format!("{:#}", parse_job_file(bad, &[]).unwrap_err());
        assert!(err.contains("line 6") && err.contains("`ioengine`"), "{err}");
        let err = format!("{:#}", parse_job_file("[x]\nrw=read\nnorandommap\n", &[]).unwrap_err());
        assert!(err.contains("line 3") && err.contains("`norandommap`"), "{err}");
        let err = format!("{:#}", parse_job_file("rw=read\n[x]\n", &[]).unwrap_err());
        assert!(err.contains("before any section"), "{err}");
        let err = format!("{:#}", parse_job_file("[global]\nbs=4k\n", &[]).unwrap_err());
        assert!(err.contains("no job"), "{err}");
        let err = format!("{:#}", parse_job_file("[x]\nrw=read\n", &[]).unwrap_err());
        assert!(err.contains("[x]") && err.contains("size="), "{err}");
    }
}
