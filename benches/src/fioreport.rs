//! Numbers as fio reports them, for `shingle-bench`: per direction (read, write) the I/O count,
//! bytes, rates and the submission, completion and total latency (`slat`, `clat`, `lat`:
//! min/avg/max/stdev and fio's default percentiles, from HDR histograms); the JSON field names
//! and units of fio's `--output-format=json` (`io_bytes`, `bw` in KiB/s, `bw_bytes`, `iops`,
//! `runtime` in ms, `clat_ns.percentile["99.000000"]`, ...), so that tooling written for fio
//! reads shingle-bench's JSON; and fio's "normal" text layout. fio's own JSON is read back into
//! the same [`DirStats`] for the side-by-side comparison.

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::{Context, Result};
use hdrhistogram::Histogram;
use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};
use serde_json::Value;

use crate::measure::{latency_histogram, record_latency};

/// fio's default completion-latency percentiles (`percentile_list`).
pub const PERCENTILES: [f64; 17] = [
    1.0, 5.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.95,
    99.99,
];

/// What one thread (or a merge of threads) recorded for one direction.
#[derive(Debug, Clone)]
pub struct DirRecorder {
    pub ios: u64,
    pub bytes: u64,
    pub slat_ns: Histogram<u64>,
    pub clat_ns: Histogram<u64>,
    pub lat_ns: Histogram<u64>,
}

impl DirRecorder {
    pub fn new() -> Result<DirRecorder> {
        Ok(DirRecorder {
            ios: 0,
            bytes: 0,
            slat_ns: latency_histogram()?,
            clat_ns: latency_histogram()?,
            lat_ns: latency_histogram()?,
        })
    }

    /// One request of `bytes`: `slat` sending it, `clat` from sent to answered.
    pub fn record(&mut self, bytes: u64, slat: Duration, clat: Duration) {
        self.ios += 1;
        self.bytes += bytes;
        record_latency(&mut self.slat_ns, slat);
        record_latency(&mut self.clat_ns, clat);
        record_latency(&mut self.lat_ns, slat + clat);
    }

    pub fn merge(&mut self, other: &DirRecorder) -> Result<()> {
        self.ios += other.ios;
        self.bytes += other.bytes;
        self.slat_ns.add(&other.slat_ns).context("merging histograms")?;
        self.clat_ns.add(&other.clat_ns).context("merging histograms")?;
        self.lat_ns.add(&other.lat_ns).context("merging histograms")?;
        Ok(())
    }

    /// fio's numbers over `runtime`.
    pub fn stats(&self, runtime: Duration) -> DirStats {
        let runtime_ms = runtime.as_millis() as u64;
        let seconds = runtime.as_secs_f64();
        let per_s = |x: u64| if seconds > 0.0 { x as f64 / seconds } else { 0.0 };
        let bw_bytes = per_s(self.bytes);
        DirStats {
            io_bytes: self.bytes,
            io_kbytes: self.bytes >> 10,
            bw_bytes: bw_bytes as u64,
            bw: (bw_bytes / 1024.0) as u64,
            iops: per_s(self.ios),
            runtime: if self.ios > 0 { runtime_ms } else { 0 },
            total_ios: self.ios,
            short_ios: 0,
            drop_ios: 0,
            slat_ns: LatStats::of(&self.slat_ns, false),
            clat_ns: LatStats::of(&self.clat_ns, true),
            lat_ns: LatStats::of(&self.lat_ns, false),
        }
    }
}

/// One direction of a job, with fio's JSON names and units.
#[derive(Debug, Clone, Serialize)]
pub struct DirStats {
    pub io_bytes: u64,
    pub io_kbytes: u64,
    /// Bytes per second.
    pub bw_bytes: u64,
    /// KiB per second (fio's `bw`).
    pub bw: u64,
    pub iops: f64,
    /// Milliseconds.
    pub runtime: u64,
    pub total_ios: u64,
    pub short_ios: u64,
    pub drop_ios: u64,
    pub slat_ns: LatStats,
    pub clat_ns: LatStats,
    pub lat_ns: LatStats,
}

/// A latency distribution in ns, as fio's `clat_ns`.
#[derive(Debug, Clone, Serialize)]
pub struct LatStats {
    pub min: u64,
    pub max: u64,
    pub mean: f64,
    pub stddev: f64,
    #[serde(rename = "N")]
    pub n: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub percentile: Option<Percentiles>,
}

/// `{"1.000000": ns, ...}` in fio's order.
#[derive(Debug, Clone)]
pub struct Percentiles(pub Vec<(f64, u64)>);

impl Percentiles {
    pub fn get(&self, p: f64) -> Option<u64> {
        self.0.iter().find(|(q, _)| (q - p).abs() < 1e-9).map(|&(_, ns)| ns)
    }
}

impl Serialize for Percentiles {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (p, ns) in &self.0 {
            map.serialize_entry(&format!("{p:.6}"), ns)?;
        }
        map.end()
    }
}

impl LatStats {
    fn of(h: &Histogram<u64>, percentiles: bool) -> LatStats {
        let n = h.len();
        let empty = n == 0;
        LatStats {
            min: if empty { 0 } else { h.min() },
            max: if empty { 0 } else { h.max() },
            mean: if empty { 0.0 } else { h.mean() },
            stddev: if empty { 0.0 } else { h.stdev() },
            n,
            percentile: (percentiles && !empty).then(|| {
                Percentiles(
                    PERCENTILES.iter().map(|&p| (p, h.value_at_quantile(p / 100.0))).collect(),
                )
            }),
        }
    }

    /// fio's percentile `p` in µs (NaN when absent).
    pub fn percentile_us(&self, p: f64) -> f64 {
        self.percentile.as_ref().and_then(|ps| ps.get(p)).map_or(f64::NAN, |ns| ns as f64 / 1e3)
    }

    /// Reads one of fio's `*_ns` objects.
    pub fn from_fio(value: &Value) -> LatStats {
        let num = |key: &str| value.get(key).and_then(Value::as_f64).unwrap_or(0.0);
        let percentile = value.get("percentile").and_then(Value::as_object).map(|map| {
            let mut list: Vec<(f64, u64)> =
                map.iter().filter_map(|(k, v)| Some((k.parse().ok()?, v.as_u64()?))).collect();
            list.sort_by(|a, b| a.0.total_cmp(&b.0));
            Percentiles(list)
        });
        LatStats {
            min: num("min") as u64,
            max: num("max") as u64,
            mean: num("mean"),
            stddev: num("stddev"),
            n: num("N") as u64,
            percentile,
        }
    }
}

impl DirStats {
    /// Reads one direction of a job of fio's JSON.
    pub fn from_fio(value: &Value) -> Result<DirStats> {
        let num = |key: &str| {
            value
                .get(key)
                .and_then(Value::as_f64)
                .with_context(|| format!("fio's JSON has no {key}"))
        };
        let lat = |key: &str| value.get(key).map(LatStats::from_fio).context(key.to_owned());
        Ok(DirStats {
            io_bytes: num("io_bytes")? as u64,
            io_kbytes: num("io_kbytes")? as u64,
            bw_bytes: num("bw_bytes")? as u64,
            bw: num("bw")? as u64,
            iops: num("iops")?,
            runtime: num("runtime")? as u64,
            total_ios: num("total_ios")? as u64,
            short_ios: num("short_ios").unwrap_or(0.0) as u64,
            drop_ios: num("drop_ios").unwrap_or(0.0) as u64,
            slat_ns: lat("slat_ns")?,
            clat_ns: lat("clat_ns")?,
            lat_ns: lat("lat_ns")?,
        })
    }

    /// fio's `read: IOPS=20.1k, BW=78.4MiB/s (82.2MB/s)(79.0MiB/1008msec)` block.
    pub fn write_normal(&self, out: &mut String, label: &str) {
        if self.total_ios == 0 {
            return;
        }
        let _ = writeln!(
            out,
            "  {label}: IOPS={}, BW={}/s ({}/s)({}/{}msec)",
            short_count(self.iops),
            binary_bytes(self.bw_bytes as f64),
            decimal_bytes(self.bw_bytes as f64),
            binary_bytes(self.io_bytes as f64),
            self.runtime
        );
        for (name, lat) in
            [("slat", &self.slat_ns), ("clat", &self.clat_ns), (" lat", &self.lat_ns)]
        {
            let _ = writeln!(
                out,
                "    {name} (usec): min={:.0}, max={:.0}, avg={:.2}, stdev={:.2}",
                lat.min as f64 / 1e3,
                lat.max as f64 / 1e3,
                lat.mean / 1e3,
                lat.stddev / 1e3
            );
        }
        let Some(percentiles) = &self.clat_ns.percentile else { return };
        let _ = writeln!(out, "    clat percentiles (usec):");
        for row in percentiles.0.chunks(4) {
            let cells: Vec<String> = row
                .iter()
                .map(|(p, ns)| format!("{p:>5.2}th=[{:>6}]", (*ns as f64 / 1e3).round() as u64))
                .collect();
            let _ = writeln!(out, "     | {}", cells.join(", "));
        }
    }
}

/// 20.1k, 8516 (fio's style for IOPS).
pub fn short_count(x: f64) -> String {
    if x >= 1e6 {
        format!("{:.1}M", x / 1e6)
    } else if x >= 1e4 {
        format!("{:.1}k", x / 1e3)
    } else {
        format!("{x:.0}")
    }
}

/// 78.4MiB (powers of 2).
pub fn binary_bytes(x: f64) -> String {
    scaled(x, 1024.0, &["B", "KiB", "MiB", "GiB", "TiB"])
}

/// 82.2MB (powers of 10).
pub fn decimal_bytes(x: f64) -> String {
    scaled(x, 1000.0, &["B", "kB", "MB", "GB", "TB"])
}

fn scaled(mut x: f64, base: f64, units: &[&str]) -> String {
    let mut unit = 0;
    while x >= base * 10.0 && unit + 1 < units.len() {
        x /= base;
        unit += 1;
    }
    if unit == 0 { format!("{x:.0}{}", units[0]) } else { format!("{x:.1}{}", units[unit]) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_have_fios_units_and_percentiles() {
        let mut r = DirRecorder::new().unwrap();
        for us in 1..=1000u64 {
            r.record(4096, Duration::from_micros(1), Duration::from_micros(us));
        }
        let s = r.stats(Duration::from_secs(2));
        assert_eq!((s.total_ios, s.io_bytes, s.runtime), (1000, 4_096_000, 2000));
        assert_eq!(s.iops, 500.0);
        assert_eq!(s.bw_bytes, 2_048_000);
        assert_eq!(s.bw, 2000, "KiB/s");
        let p99 = s.clat_ns.percentile.as_ref().unwrap().get(99.0).unwrap();
        assert!((989_000..=991_000).contains(&p99), "{p99}");
        assert!((s.clat_ns.percentile_us(50.0) - 500.0).abs() < 1.0);
        assert!(s.slat_ns.percentile.is_none(), "fio gives percentiles of clat only");
        let json = serde_json::to_value(&s).unwrap();
        assert!(json["clat_ns"]["percentile"]["99.000000"].is_u64(), "{json}");
        assert!(json["clat_ns"]["percentile"]["99.990000"].is_u64(), "{json}");
        assert_eq!(json["clat_ns"]["N"], 1000);
        // Read back as fio's JSON is.
        let back = DirStats::from_fio(&json).unwrap();
        assert_eq!(back.total_ios, 1000);
        assert_eq!(back.clat_ns.percentile.unwrap().get(99.0), Some(p99));
    }

    #[test]
    fn empty_directions_are_zero() {
        let s = DirRecorder::new().unwrap().stats(Duration::from_secs(1));
        assert_eq!((s.total_ios, s.runtime, s.clat_ns.max), (0, 0, 0));
        assert!(s.clat_ns.percentile.is_none());
        let mut out = String::new();
        s.write_normal(&mut out, "read");
        assert!(out.is_empty());
    }

    #[test]
    fn normal_output_reads_like_fios() {
        let mut r = DirRecorder::new().unwrap();
        for _ in 0..20_100 {
            r.record(4096, Duration::from_micros(2), Duration::from_micros(50));
        }
        let mut out = String::new();
        r.stats(Duration::from_secs(1)).write_normal(&mut out, "read");
        assert!(
            out.starts_with("  read: IOPS=20.1k, BW=78.5MiB/s (82.3MB/s)(78.5MiB/1000msec)"),
            "{out}"
        );
        assert!(out.contains("clat percentiles (usec):"), "{out}");
        assert!(out.contains("99.99th=["), "{out}");
        assert_eq!(short_count(8516.0), "8516");
        assert_eq!(binary_bytes(1023.0), "1023B");
    }
}
