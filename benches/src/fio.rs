//! fio, the reference side of every comparison: finding it, running one job with JSON output,
//! and reading that job's rates, total-latency percentiles and CPU time into a
//! [`Measurement`], with the block device's counters sampled around the run.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail, ensure};
use serde::Serialize;
use serde_json::Value;

use crate::measure::{CpuSample, DeviceIo, Latency, Measurement, ticks_s};

/// Which half of fio's JSON job report holds the I/O: `read` or `write`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Read,
    Write,
}

/// `fio --version`, or the error that tells how to install it.
pub fn fio_version(fio: &Path) -> Result<String> {
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

/// The command line as a shell would show it.
pub fn shell_line(program: &Path, args: &[String]) -> String {
    std::iter::once(program.display().to_string())
        .chain(args.iter().cloned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// One timed fio job of a comparison, on a byte range of one file.
#[derive(Debug, Clone)]
pub struct TimedJob<'a> {
    pub name: String,
    pub file: &'a Path,
    pub offset_bytes: u64,
    pub size_bytes: u64,
    pub rw: &'a str,
    pub bs_bytes: usize,
    pub iodepth: usize,
    /// The job's own options (`--fdatasync=1`, `--blockalign=4096`, ...), after the common ones.
    pub options: Vec<String>,
    pub runtime_s: u64,
    /// The CPU fio's job is pinned to.
    pub cpu: usize,
    /// The user's extra arguments, last so that they can override anything.
    pub extra: &'a [String],
}

impl TimedJob<'_> {
    /// The command line: O_DIRECT through io_uring, `--norandommap --randrepeat=0` for random
    /// jobs, `runtime_s` time-based, JSON output with total-latency (`lat_ns`) percentiles.
    pub fn args(&self) -> Vec<String> {
        let mut args = vec![
            format!("--name={}", self.name),
            format!("--filename={}", self.file.display()),
            format!("--offset={}", self.offset_bytes),
            format!("--size={}", self.size_bytes),
            format!("--rw={}", self.rw),
            format!("--bs={}", self.bs_bytes),
            format!("--iodepth={}", self.iodepth),
            "--direct=1".to_owned(),
            "--ioengine=io_uring".to_owned(),
        ];
        args.extend(self.options.iter().cloned());
        if self.rw.starts_with("rand") {
            args.extend(["--norandommap".to_owned(), "--randrepeat=0".to_owned()]);
        }
        args.extend([
            format!("--runtime={}", self.runtime_s),
            "--time_based".to_owned(),
            format!("--cpus_allowed={}", self.cpu),
            "--lat_percentiles=1".to_owned(),
            "--output-format=json".to_owned(),
        ]);
        args.extend(self.extra.iter().cloned());
        args
    }
}

/// Runs fio with `args` (which must include `--output-format=json`) and reads its one job.
pub fn run_fio(
    fio: &Path,
    args: &[String],
    direction: Direction,
    device: Option<(u32, u32)>,
) -> Result<Measurement> {
    Ok(run_fio_detailed(fio, args, direction, device)?.measurement)
}

/// What [`run_fio_detailed`] learned from one fio run.
#[derive(Debug, Clone)]
pub struct FioRun {
    pub measurement: Measurement,
    /// The device's counters by direction over the run (the whole fio process's lifetime).
    pub device_io: Option<DeviceIo>,
    /// fsync/fdatasync operations and their latency (`jobs[0].sync.lat_ns`), when the job
    /// synced (`--fsync`, `--fdatasync`); fio's write latency does not include them.
    pub sync_latency: Option<(u64, Latency)>,
}

/// [`run_fio`], also returning the device's counters by direction and fio's sync latency.
pub fn run_fio_detailed(
    fio: &Path,
    args: &[String],
    direction: Direction,
    device: Option<(u32, u32)>,
) -> Result<FioRun> {
    let device_before = DeviceIo::read(device);
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
    let device_io = DeviceIo::delta(device_before, DeviceIo::read(device));
    let mut m = parse_fio_json(&stdout, direction)?;
    m.set_cpu_all_s(ticks_s(cpu_after.children_ticks - cpu_before.children_ticks));
    // fio's I/O phase is its job_runtime; in_queue_ms only grows while I/O is in flight, so
    // the start-up inside the sampling window does not dilute the queue depth.
    m.set_device(device_io.map(|io| io.counters()));
    Ok(FioRun { measurement: m, device_io, sync_latency: parse_fio_sync_latency(&stdout)? })
}

/// The count and latency of the syncs of fio's job, `None` when it issued none.
pub fn parse_fio_sync_latency(stdout: &str) -> Result<Option<(u64, Latency)>> {
    let start = stdout.find('{').context("fio printed no JSON")?;
    let root: Value = serde_json::from_str(&stdout[start..]).context("parsing fio's JSON")?;
    let Some(lat) = root.pointer("/jobs/0/sync/lat_ns") else { return Ok(None) };
    let syncs = lat.get("N").and_then(Value::as_u64).unwrap_or(0);
    if syncs == 0 {
        return Ok(None);
    }
    let percentile_us =
        |key: &str| -> Result<f64> { Ok(number(lat, &format!("/percentile/{key}"))? / 1e3) };
    let latency = Latency {
        p50_us: percentile_us("50.000000")?,
        p99_us: percentile_us("99.000000")?,
        p999_us: percentile_us("99.900000")?,
        max_us: number(lat, "/max")? / 1e3,
    };
    Ok(Some((syncs, latency)))
}

/// Reads one job's numbers from fio's `--output-format=json` (fio may print notes before it).
pub fn parse_fio_json(stdout: &str, direction: Direction) -> Result<Measurement> {
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

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn fio_sync_latency_is_read_when_the_job_synced() {
        let json = r#"{"jobs":[{"sync":{"total_ios":0,"lat_ns":{"max":9000000,"N":12,
            "percentile":{"50.000000":7000000,"99.000000":8000000,"99.900000":8500000}}}}]}"#;
        let (syncs, l) = parse_fio_sync_latency(json).unwrap().unwrap();
        assert_eq!(syncs, 12);
        assert_eq!(l.p50_us, 7000.0);
        assert_eq!(l.max_us, 9000.0);
        let none = r#"{"jobs":[{"sync":{"total_ios":0,"lat_ns":{"min":0,"max":0,"N":0}}}]}"#;
        assert!(parse_fio_sync_latency(none).unwrap().is_none());
    }

    #[test]
    fn shell_lines_join_program_and_arguments() {
        let line = shell_line(Path::new("fio"), &["--rw=write".to_owned(), "--bs=1M".to_owned()]);
        assert_eq!(line, "fio --rw=write --bs=1M");
    }
}
