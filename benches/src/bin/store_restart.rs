//! Restart time and index memory of the store against the number of records on disk.
//!
//! For each record count it formats a file-backed disk, writes that many small records with
//! the production write path (group commit through the ring), and then measures three opens:
//! after a clean close (checkpoint only), after a crash with the last checkpoint behind
//! (checkpoint plus a tail scan), and with no checkpoint at all (a scan of the whole log). It
//! also reports the index's heap bytes per entry. Run:
//!
//! ```text
//! cargo run --release -p shingle-benches --bin store-restart -- --records 100000,1000000,5000000
//! cargo run --release -p shingle-benches --bin store-restart -- --smoke
//! ```

#![forbid(unsafe_code)]
#![expect(clippy::print_stdout, reason = "a benchmark prints its report")]

use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Instant;

use anyhow::{Context, bail};
use ioengine::Core;
use ioengine::device::{Disk, DiskOptions};
use shingle_daemon::store::{self, FormatOptions, Store, StoreConfig};

/// Bytes of each record's value: small records are the hard case for restart.
const VALUE_BYTES: usize = 100;
/// Zone size of the bench disk.
const ZONE_BYTES: u64 = 256 << 20;
/// Concurrent writers while filling (so group commit packs batches).
const WRITERS: usize = 256;

struct Args {
    records: Vec<u64>,
    dir: PathBuf,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut records = vec![100_000, 1_000_000];
    let mut dir = std::env::temp_dir();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--smoke" => records = vec![20_000],
            "--records" => {
                let list = args.next().context("--records needs a list, e.g. 100000,1000000")?;
                records = list
                    .split(',')
                    .map(str::parse)
                    .collect::<Result<_, _>>()
                    .context("--records")?;
            }
            "--dir" => dir = PathBuf::from(args.next().context("--dir needs a path")?),
            "-h" | "--help" => {
                println!(
                    "store-restart: restart time of the store against records on disk\n\n\
                     Usage: store-restart [--records N,M,...] [--dir DIR] [--smoke]\n\n  \
                     --records  record counts to measure (default 100000,1000000)\n  \
                     --dir      directory of the test file (default: the temp dir)\n  \
                     --smoke    one quick run of 20000 records (CI)"
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?} (use --records N,M, --dir DIR or --smoke)"),
        }
    }
    Ok(Args { records, dir })
}

fn key(i: u64) -> [u8; 32] {
    let mut k = [0u8; 32];
    k[..8].copy_from_slice(&i.to_le_bytes());
    k[8..16].copy_from_slice(&(i.wrapping_mul(0x9E37_79B9_7F4A_7C15)).to_le_bytes());
    k
}

fn disk_bytes(records: u64) -> u64 {
    // Each record takes about 176 bytes in the log; leave room for checkpoints and slack.
    let log = records * 200 + (64 << 20);
    let zones = log.div_ceil(ZONE_BYTES) + 8;
    zones * ZONE_BYTES
}

fn open_disk(path: &Path, size: u64, fresh: bool) -> anyhow::Result<Disk> {
    let options = DiskOptions {
        zone_size_bytes: ZONE_BYTES,
        create_size_bytes: Some(size),
        fresh,
        ..DiskOptions::default()
    };
    Ok(Disk::open(path, &options)?)
}

fn config(checkpoint_interval_bytes: u64) -> StoreConfig {
    // u64::MAX: never checkpoint (the whole log is scanned); otherwise the defaults' record
    // limit applies too.
    let records = if checkpoint_interval_bytes == u64::MAX {
        u64::MAX
    } else {
        StoreConfig::default().checkpoint_interval_records
    };
    StoreConfig {
        checkpoint_interval_bytes,
        checkpoint_interval_records: records,
        ..StoreConfig::default()
    }
}

/// Fills a fresh disk with `records` records. With `clean`, closes it (clean checkpoint).
fn fill(
    path: &Path,
    records: u64,
    interval: u64,
    clean: bool,
) -> anyhow::Result<(f64, usize, usize)> {
    let _ = std::fs::remove_file(path);
    let size = disk_bytes(records);
    let path = path.to_path_buf();
    Core::new(512)?.block_on(async move {
        let disk = open_disk(&path, size, true)?;
        store::format(
            &disk,
            &FormatOptions { value_bytes_max: 1 << 20, checkpoint_zones_per_set: 0 },
            false,
        )
        .await?;
        let s = Store::open(disk, config(interval)).await?;
        let start = Instant::now();
        let next = Rc::new(std::cell::Cell::new(0u64));
        let mut tasks = Vec::new();
        for _ in 0..WRITERS {
            let (s, next) = (s.clone(), next.clone());
            tasks.push(ioengine::spawn(async move {
                let value = [0x5Au8; VALUE_BYTES];
                loop {
                    let i = next.get();
                    if i >= records {
                        return Ok::<(), anyhow::Error>(());
                    }
                    next.set(i + 1);
                    s.put(&key(i), &value).await?;
                }
            }));
        }
        for task in tasks {
            task.await?;
        }
        let fill_s = start.elapsed().as_secs_f64();
        let heap = s.index_heap_bytes();
        let len = s.len();
        if clean {
            s.close().await?;
        }
        Ok((fill_s, heap, len))
    })
}

/// Opens the disk and returns (milliseconds, keys, tail records, checkpoint entries).
fn reopen(path: &Path, records: u64) -> anyhow::Result<(f64, usize, u64, u64)> {
    let path = path.to_path_buf();
    Core::new(512)?.block_on(async move {
        let disk = open_disk(&path, disk_bytes(records), false)?;
        let start = Instant::now();
        let s = Store::open(disk, config(u64::MAX)).await?;
        let ms = start.elapsed().as_secs_f64() * 1000.0;
        let report = s.recovery_report();
        if std::env::var_os("SHINGLE_RESTART_DETAIL").is_some() {
            println!("  open: {report:?}");
        }
        Ok((ms, s.len(), report.tail_records, report.checkpoint_entries))
    })
}

fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    println!(
        "store-restart: {VALUE_BYTES}-byte values, {} MiB zones, kernel {}",
        ZONE_BYTES >> 20,
        kernel.trim()
    );
    println!("disk: a preallocated file in {}", args.dir.display());
    println!();
    println!(
        "{:>10} {:>10} {:>14} {:>16} {:>14} {:>12} {:>14}",
        "records",
        "fill s",
        "clean open ms",
        "ckpt+tail ms",
        "no-ckpt ms",
        "ms/M (clean)",
        "index B/entry"
    );
    for &records in &args.records {
        let path = args.dir.join(format!("shingle-restart-{records}.img"));
        // 1. Clean close: the open reads the shutdown checkpoint and scans nothing.
        let (fill_s, heap, len) = fill(&path, records, 256 << 20, true)?;
        let (clean_ms, clean_keys, clean_tail, _) = reopen(&path, records)?;
        anyhow::ensure!(
            clean_keys as u64 == records && clean_tail == 0,
            "clean open found {clean_keys} keys, {clean_tail} tail"
        );
        // 2. Crash with checkpoints every 256 MiB: checkpoint plus the tail after it.
        fill(&path, records, 256 << 20, false)?;
        let (tail_ms, tail_keys, _, _) = reopen(&path, records)?;
        anyhow::ensure!(tail_keys as u64 == records, "crash open found {tail_keys} keys");
        // 3. No checkpoint ever: the whole log is scanned.
        fill(&path, records, u64::MAX, false)?;
        let (scan_ms, scan_keys, scan_tail, _) = reopen(&path, records)?;
        anyhow::ensure!(
            scan_keys as u64 == records && scan_tail == records,
            "full scan found {scan_keys} keys"
        );
        let per_million = clean_ms.max(tail_ms) / (records as f64 / 1e6);
        println!(
            "{records:>10} {fill_s:>10.1} {clean_ms:>14.0} {tail_ms:>16.0} {scan_ms:>14.0} {per_million:>12.0} {:>14.1}",
            heap as f64 / len as f64
        );
        let _ = std::fs::remove_file(&path);
    }
    println!();
    println!("ms/M: the slower of the clean and checkpoint+tail opens, per million records.");
    Ok(())
}
