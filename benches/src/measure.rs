//! What one side of a comparison did in one run, and how runs reduce to medians: operation
//! counts and rates, HDR latency percentiles, CPU time (per thread from
//! /proc/thread-self/schedstat, per process from /proc/self/stat), the block device's counters
//! from /proc/diskstats, plus the small helpers every benchmark needs (sizes with binary
//! suffixes, a seeded PRNG).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use hdrhistogram::Histogram;
use serde::Serialize;

/// Largest latency the histograms hold; longer ones are recorded as this.
pub const LATENCY_NS_MAX: u64 = 60_000_000_000;
/// Significant decimal digits of the latency histograms (0.1% resolution).
pub const LATENCY_SIGNIFICANT_DIGITS: u8 = 3;
/// Clock ticks per second of /proc/*/stat times (USER_HZ, 100 in the Linux ABI on every
/// architecture shingle runs on).
pub const CLOCK_TICKS_PER_S: u64 = 100;

/// An empty latency histogram in ns: 1 ns to [`LATENCY_NS_MAX`], 3 significant digits.
pub fn latency_histogram() -> Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, LATENCY_NS_MAX, LATENCY_SIGNIFICANT_DIGITS)
        .context("creating the latency histogram")
}

/// Records `latency` in `histogram`, clamped to its bounds.
pub fn record_latency(histogram: &mut Histogram<u64>, latency: Duration) {
    let ns = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
    histogram.saturating_record(ns.clamp(1, LATENCY_NS_MAX));
}

/// One side's numbers for one run. MB is 10^6 bytes, MiB 2^20; latency is from submission to
/// the completion seen by the submitter (fio: `lat_ns`, i.e. slat + clat).
#[derive(Debug, Clone, Serialize)]
pub struct Measurement {
    pub ios: u64,
    pub bytes: u64,
    pub runtime_s: f64,
    pub iops: f64,
    pub mb_per_s: f64,
    pub mib_per_s: f64,
    pub lat_p50_us: f64,
    pub lat_p99_us: f64,
    pub lat_p999_us: f64,
    pub lat_max_us: f64,
    /// User + system CPU time of the thread that submits and reaps, as fio counts its own
    /// (`getrusage(RUSAGE_THREAD)` of the job thread): the reactor's core thread (from
    /// /proc/thread-self/schedstat, ns), fio's `usr_cpu + sys_cpu` times its runtime.
    pub cpu_s: f64,
    /// `cpu_s` as a share of one CPU over the run.
    pub cpu_percent: f64,
    pub cpu_per_io_us: f64,
    /// User + system CPU time of every thread of the side, io_uring's io-wq workers included:
    /// the reactor's whole process (/proc/self/stat utime + stime), fio's whole process tree
    /// (our cutime + cstime across the fio run: job process and fio's main process).
    /// Clock-tick (10 ms) resolution.
    pub cpu_all_s: f64,
    pub cpu_all_per_io_us: f64,
    /// fio only: completion latency (`clat_ns`, without submission) p99.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clat_p99_us: Option<f64>,
    /// Requests and bytes the device completed meanwhile (/proc/diskstats; other processes'
    /// I/O included): the check that O_DIRECT I/O reached the device rather than a cache.
    pub device: Option<DeviceCounters>,
    /// Requests in flight on the device on average over the run (`device.in_queue_ms` ÷
    /// runtime): shows whether a side kept the device as busy as the other.
    pub device_queue_depth: Option<f64>,
}

/// Latency percentiles of one run, in µs.
#[derive(Debug, Clone, Copy)]
pub struct Latency {
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
}

impl Latency {
    /// The percentiles of a histogram in ns.
    pub fn of(latency_ns: &Histogram<u64>) -> Latency {
        let us = |ns: u64| ns as f64 / 1e3;
        Latency {
            p50_us: us(latency_ns.value_at_quantile(0.50)),
            p99_us: us(latency_ns.value_at_quantile(0.99)),
            p999_us: us(latency_ns.value_at_quantile(0.999)),
            max_us: us(latency_ns.max()),
        }
    }
}

impl Measurement {
    pub fn new(
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

    pub fn set_device(&mut self, device: Option<DeviceCounters>) {
        self.device = device;
        self.device_queue_depth = device.map(|d| d.queue_depth(self.runtime_s));
    }

    pub fn set_cpu_all_s(&mut self, cpu_all_s: f64) {
        self.cpu_all_s = cpu_all_s;
        self.cpu_all_per_io_us = if self.ios > 0 { cpu_all_s * 1e6 / self.ios as f64 } else { 0.0 };
    }
}

/// The compared metrics of one run, or their medians over the runs of one side.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Metrics {
    pub iops: f64,
    pub mb_per_s: f64,
    pub mib_per_s: f64,
    pub lat_p50_us: f64,
    pub lat_p99_us: f64,
    pub lat_p999_us: f64,
    pub cpu_percent: f64,
    pub cpu_per_io_us: f64,
    pub cpu_all_per_io_us: f64,
    /// NaN when the file system has no block device under it.
    pub device_queue_depth: f64,
}

impl Metrics {
    pub fn of(m: &Measurement) -> Metrics {
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

    /// Each metric's median over `runs` (each metric on its own, so the medians may come from
    /// different runs).
    pub fn medians<'a>(runs: impl Iterator<Item = &'a Measurement> + Clone) -> Metrics {
        let of = |metric: fn(&Measurement) -> f64| median(runs.clone().map(metric).collect());
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
}

/// The median (the mean of the middle two for an even count); NaN for none.
pub fn median(mut values: Vec<f64>) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 { values[mid] } else { (values[mid - 1] + values[mid]) / 2.0 }
}

// ---------------------------------------------------------------------------------------------
// The block device.

/// Requests and bytes a block device completed (reads + writes), and the sum over time of
/// the requests in flight (`in_queue_ms`, "weighted time doing I/O"), from /proc/diskstats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct DeviceCounters {
    pub requests: u64,
    pub bytes: u64,
    pub in_queue_ms: u64,
}

impl DeviceCounters {
    /// The counters of `device` (major, minor); `None` when it has no /proc/diskstats line
    /// (a file system without a block device under it).
    pub fn read(device: Option<(u32, u32)>) -> Option<DeviceCounters> {
        DeviceIo::read(device).map(|io| io.counters())
    }

    pub fn delta(before: Option<DeviceCounters>, after: Option<DeviceCounters>) -> Option<Self> {
        let (before, after) = (before?, after?);
        Some(DeviceCounters {
            requests: after.requests.wrapping_sub(before.requests),
            bytes: after.bytes.wrapping_sub(before.bytes),
            in_queue_ms: after.in_queue_ms.wrapping_sub(before.in_queue_ms),
        })
    }

    /// Requests in flight on the device on average over `runtime_s` (Little's law).
    pub fn queue_depth(&self, runtime_s: f64) -> f64 {
        if runtime_s > 0.0 { self.in_queue_ms as f64 / (runtime_s * 1e3) } else { 0.0 }
    }
}

/// A block device's counters by direction, with its cache flushes, from /proc/diskstats.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct DeviceIo {
    pub read_requests: u64,
    pub read_bytes: u64,
    pub write_requests: u64,
    pub write_bytes: u64,
    /// Cache flushes the device completed (0 on kernels before 5.5, which do not count them).
    pub flush_requests: u64,
    pub in_queue_ms: u64,
}

impl DeviceIo {
    /// The counters of `device` (major, minor); `None` when it has no /proc/diskstats line.
    pub fn read(device: Option<(u32, u32)>) -> Option<DeviceIo> {
        let (major, minor) = device?;
        let text = std::fs::read_to_string("/proc/diskstats").ok()?;
        parse_diskstats_io(&text, major, minor)
    }

    pub fn delta(before: Option<DeviceIo>, after: Option<DeviceIo>) -> Option<DeviceIo> {
        let (b, a) = (before?, after?);
        Some(DeviceIo {
            read_requests: a.read_requests.wrapping_sub(b.read_requests),
            read_bytes: a.read_bytes.wrapping_sub(b.read_bytes),
            write_requests: a.write_requests.wrapping_sub(b.write_requests),
            write_bytes: a.write_bytes.wrapping_sub(b.write_bytes),
            flush_requests: a.flush_requests.wrapping_sub(b.flush_requests),
            in_queue_ms: a.in_queue_ms.wrapping_sub(b.in_queue_ms),
        })
    }

    /// Reads and writes together, as [`DeviceCounters`].
    pub fn counters(&self) -> DeviceCounters {
        DeviceCounters {
            requests: self.read_requests + self.write_requests,
            bytes: self.read_bytes + self.write_bytes,
            in_queue_ms: self.in_queue_ms,
        }
    }
}

/// Reads and writes completed, sectors moved (512 bytes each, whatever the block size) and
/// weighted time of one /proc/diskstats line: `major minor name reads merged sectors ms writes
/// merged sectors ms in-flight io-ms weighted-ms ...`.
pub fn parse_diskstats(text: &str, major: u32, minor: u32) -> Option<DeviceCounters> {
    parse_diskstats_io(text, major, minor).map(|io| io.counters())
}

/// One /proc/diskstats line by direction: fields 3-6 reads, 7-10 writes, 13 weighted ms,
/// 14-17 discards, 18 flushes (since Linux 5.5).
pub fn parse_diskstats_io(text: &str, major: u32, minor: u32) -> Option<DeviceIo> {
    text.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let num = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
        if num(0)? != u64::from(major) || num(1)? != u64::from(minor) {
            return None;
        }
        Some(DeviceIo {
            read_requests: num(3)?,
            read_bytes: num(5)? * 512,
            write_requests: num(7)?,
            write_bytes: num(9)? * 512,
            flush_requests: num(18).unwrap_or(0),
            in_queue_ms: num(13)?,
        })
    })
}

// ---------------------------------------------------------------------------------------------
// CPU time.

/// CPU time used so far: the whole process (user + system, clock ticks, from
/// /proc/self/stat, so io_uring's worker threads count as they do in fio's getrusage), and
/// the calling thread alone (ns, from /proc/thread-self/schedstat), with the time that thread
/// spent runnable but waiting for a CPU (other threads on its CPU).
#[derive(Debug, Clone, Copy)]
pub struct CpuSample {
    pub process_ticks: u64,
    pub children_ticks: u64,
    pub thread_ns: u64,
    pub thread_wait_ns: u64,
}

impl CpuSample {
    pub fn read() -> Result<CpuSample> {
        let stat = std::fs::read_to_string("/proc/self/stat").context("reading /proc/self/stat")?;
        let schedstat = std::fs::read_to_string("/proc/thread-self/schedstat")
            .context("reading /proc/thread-self/schedstat")?;
        let (process_ticks, children_ticks) = parse_stat_cpu_ticks(&stat)?;
        let (thread_ns, thread_wait_ns) = parse_schedstat(&schedstat)?;
        Ok(CpuSample { process_ticks, children_ticks, thread_ns, thread_wait_ns })
    }
}

/// utime + stime (fields 14 and 15) and cutime + cstime (16 and 17: reaped children) of a
/// /proc/PID/stat line. The command name (field 2) may hold spaces and parentheses, so fields
/// are counted from its closing parenthesis.
pub fn parse_stat_cpu_ticks(stat: &str) -> Result<(u64, u64)> {
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

/// utime and stime (fields 14 and 15) of a /proc/PID/stat or /proc/thread-self/stat line, in
/// clock ticks: user and system time apart, as fio reports `usr_cpu` and `sys_cpu`.
pub fn parse_stat_user_system_ticks(stat: &str) -> Result<(u64, u64)> {
    let rest = stat.rsplit_once(')').map(|(_, rest)| rest).context("no ')' in a stat line")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| -> Result<u64> {
        let text = fields.get(n - 3).with_context(|| format!("a stat line has no field {n}"))?;
        text.parse().with_context(|| format!("stat field {n} is {text:?}"))
    };
    Ok((field(14)?, field(15)?))
}

/// User and system CPU ticks of `path` (/proc/PID/stat, /proc/thread-self/stat, ...).
pub fn user_system_ticks(path: &str) -> Result<(u64, u64)> {
    let stat = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    parse_stat_user_system_ticks(&stat)
}

/// utime + stime of process `pid` so far (every thread, io_uring workers included), in clock
/// ticks: another process's CPU time, e.g. the daemon's.
pub fn process_cpu_ticks(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    Ok(parse_stat_cpu_ticks(&stat)?.0)
}

pub fn ticks_s(ticks: u64) -> f64 {
    ticks as f64 / CLOCK_TICKS_PER_S as f64
}

/// The first field of /proc/thread-self/schedstat: time on a CPU, in ns.
pub fn parse_schedstat_ns(schedstat: &str) -> Result<u64> {
    Ok(parse_schedstat(schedstat)?.0)
}

/// The first two fields of /proc/thread-self/schedstat: time on a CPU and time spent
/// runnable, waiting on a run queue, in ns.
pub fn parse_schedstat(schedstat: &str) -> Result<(u64, u64)> {
    let mut fields = schedstat.split_whitespace();
    let mut next = |name: &str| -> Result<u64> {
        let text = fields.next().with_context(|| format!("schedstat has no {name} field"))?;
        text.parse().with_context(|| format!("schedstat's {name} field is {text:?}"))
    };
    Ok((next("run time")?, next("wait time")?))
}

// ---------------------------------------------------------------------------------------------
// Small helpers.

/// xorshift64*: a fast PRNG, plenty for picking offsets (fio uses a Tausworthe generator).
#[derive(Debug, Clone)]
pub struct XorShift64Star(u64);

impl XorShift64Star {
    pub fn new(seed: u64) -> XorShift64Star {
        // splitmix64 spreads similar seeds apart and never yields the forbidden zero state
        // for the first few seeds; `| 1` makes sure of it.
        XorShift64Star(splitmix64(seed) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (Lemire's multiply-shift; the bias is below 2^-40 for any file here).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Fills `out` with pseudo-random (incompressible) bytes.
    pub fn fill(&mut self, out: &mut [u8]) {
        for chunk in out.chunks_mut(8) {
            chunk.copy_from_slice(&self.next_u64().to_le_bytes()[..chunk.len()]);
        }
    }
}

/// splitmix64's output function: spreads nearby inputs over the whole 64-bit range.
pub fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Key number `i`: 32 bytes spread like a content hash (splitmix64 is a bijection, so distinct
/// numbers never give the same key).
pub fn key_of(i: u64) -> [u8; 32] {
    let mut key = [0u8; 32];
    for (j, chunk) in key.chunks_mut(8).enumerate() {
        let word = splitmix64(i.wrapping_mul(4).wrapping_add(j as u64));
        chunk.copy_from_slice(&word.to_le_bytes()[..chunk.len()]);
    }
    key
}

/// A fresh seed per run, like fio's `--randrepeat=0`.
pub fn seed_from_clock() -> u64 {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    now.as_secs() ^ u64::from(now.subsec_nanos()).rotate_left(32)
}

/// Parses `4096`, `64M`, `1G`, `1GiB` (binary multiples) into bytes.
pub fn parse_size_bytes(text: &str) -> Result<u64, String> {
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
        assert_eq!(parse_stat_user_system_ticks(stat).unwrap(), (250, 75));
        assert_eq!(parse_schedstat_ns("841197 120506 1\n").unwrap(), 841_197);
        assert_eq!(parse_schedstat("841197 120506 1\n").unwrap(), (841_197, 120_506));
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
    fn diskstats_split_reads_writes_and_flushes() {
        let text = " 254 0 vda 10 1 80 5 20 2 160 7 0 9 1500 4 0 64 1 33 2\n";
        let io = parse_diskstats_io(text, 254, 0).unwrap();
        assert_eq!(
            io,
            DeviceIo {
                read_requests: 10,
                read_bytes: 80 * 512,
                write_requests: 20,
                write_bytes: 160 * 512,
                flush_requests: 33,
                in_queue_ms: 1500,
            }
        );
        // Kernels before 5.5 print no flush fields.
        let old = " 8 0 sda 1 0 8 0 2 0 16 0 0 0 5\n";
        assert_eq!(parse_diskstats_io(old, 8, 0).unwrap().flush_requests, 0);
    }

    #[test]
    fn keys_are_distinct_and_spread() {
        let keys: std::collections::HashSet<[u8; 32]> = (0..10_000).map(key_of).collect();
        assert_eq!(keys.len(), 10_000);
        assert_ne!(key_of(0)[..8], key_of(1)[..8]);
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
    fn latency_percentiles_come_from_the_histogram() {
        let mut h = latency_histogram().unwrap();
        for us in 1..=1000u64 {
            record_latency(&mut h, Duration::from_micros(us));
        }
        let l = Latency::of(&h);
        assert!((l.p50_us - 500.0).abs() < 1.0, "{}", l.p50_us);
        assert!((l.p99_us - 990.0).abs() < 1.0, "{}", l.p99_us);
        assert!((l.max_us - 1000.0).abs() < 1.0, "{}", l.max_us);
    }
}
