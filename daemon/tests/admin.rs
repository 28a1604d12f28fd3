//! The offline admin commands, through the real `shingled` binary on file-backed disks:
//! `format` (and its refusals), `inspect` after records written through the store, `check`
//! clean, after a flipped value byte (naming zone and offset), after a damaged header, a torn
//! tail (harmless), and disks that are not shingle's, damaged or locked (exit 2, no panic).
//! Inspect and check never change a byte of the disk, and refuse a disk the running daemon
//! serves. The survey also runs in-process on the simulated disk, whose counters show that it
//! never writes or sends a zone command.

#![allow(clippy::unwrap_used, reason = "tests: a failed step should panic with its error")]

mod common;

use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use ioengine::Core;
use ioengine::device::sim::{SimConfig, SimDisk, SimModel};
use ioengine::device::{Disk, DiskOptions};
use serde_json::Value;
use sha2::Digest as _;
use shingle_daemon::admin::{self, SurveyOptions, Target};
use shingle_daemon::store::scan::DiskView;
use shingle_daemon::store::{self, FormatOptions, Location, Store, StoreConfig};

const ZONE: u64 = 16 << 20;
const ZONES: u64 = 10;
const VALUE_MAX: u32 = 1 << 20;

fn shingled(args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_shingled"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run shingled");
    assert_ne!(out.status.code(), Some(101), "shingled panicked:\n{}", text(&out.stderr));
    out
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn status(out: &Output) -> i32 {
    out.status.code().expect("exit status")
}

fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", text(&out.stdout)))
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// Formats a new file-backed disk through the binary; returns its uuid.
fn format_new(path: &Path) -> String {
    let out = shingled(&[
        "format",
        p(path),
        "--size",
        &(ZONES * ZONE).to_string(),
        "--zone-size",
        "16MiB",
        "--value-bytes-max",
        "1MiB",
        "--json",
    ]);
    assert_eq!(status(&out), 0, "{}", text(&out.stderr));
    let formatted = json(&out);
    assert_eq!(formatted["created_file"], true);
    assert_eq!(formatted["device"]["zone_count"], ZONES);
    formatted["uuid"].as_str().unwrap().to_string()
}

fn key(i: u32) -> [u8; 32] {
    let mut k = [0x5Au8; 32];
    k[..4].copy_from_slice(&i.to_le_bytes());
    k
}

fn value(i: u32) -> Vec<u8> {
    let len = if i % 10 == 0 { 100_000 } else { 1 + (i as usize * 997) % 9000 };
    (0..len).map(|j| (j as u32).wrapping_mul(2654435761).wrapping_add(i) as u8).collect()
}

fn open_disk(path: &Path) -> Disk {
    Disk::open(path, &DiskOptions { zone_size_bytes: ZONE, ..DiskOptions::default() }).unwrap()
}

fn store_config() -> StoreConfig {
    StoreConfig { value_bytes_max: VALUE_MAX, ..StoreConfig::default() }
}

/// Puts keys `range`, deletes those with i % 5 == 1, puts key `range.start + 1` again (a dead
/// block, a tombstone, a live block), closes cleanly or not; returns each key's location.
fn write_records(path: &Path, range: std::ops::Range<u32>, clean: bool) -> Vec<(u32, Location)> {
    let path = path.to_path_buf();
    Core::new(64).unwrap().block_on(async move {
        let s = Store::open(open_disk(&path), store_config()).await.unwrap();
        for i in range.clone() {
            s.put(&key(i), &value(i)).await.unwrap();
        }
        for i in range.clone().filter(|i| i % 5 == 1) {
            s.delete(&key(i)).await.unwrap();
        }
        s.put(&key(range.start + 1), b"stored again").await.unwrap();
        let locations =
            range.filter_map(|i| s.location_of(&key(i)).map(|l| (i, l))).collect::<Vec<_>>();
        if clean {
            s.close().await.unwrap();
        }
        locations
    })
}

fn file_digest(path: &Path) -> Vec<u8> {
    let mut file = std::fs::File::open(path).unwrap();
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    hasher.finalize().to_vec()
}

fn flip_byte(path: &Path, offset: u64) {
    let mut file = std::fs::OpenOptions::new().read(true).write(true).open(path).unwrap();
    let mut byte = [0u8; 1];
    file.seek(SeekFrom::Start(offset)).unwrap();
    file.read_exact(&mut byte).unwrap();
    byte[0] ^= 0x40;
    file.seek(SeekFrom::Start(offset)).unwrap();
    file.write_all(&byte).unwrap();
    file.sync_all().unwrap();
}

fn write_at(path: &Path, offset: u64, bytes: &[u8]) {
    let mut file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    file.seek(SeekFrom::Start(offset)).unwrap();
    file.write_all(bytes).unwrap();
    file.sync_all().unwrap();
}

fn disk_file() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("disk.img");
    (dir, path)
}

#[test]
fn format_refuses_a_disk_that_holds_data_unless_forced() {
    let (_dir, path) = disk_file();
    let out = shingled(&["format", p(&path)]);
    assert_eq!(status(&out), 2);
    assert!(text(&out.stderr).contains("give --size"), "{}", text(&out.stderr));
    assert!(!path.exists(), "a refused format creates nothing");

    let uuid = format_new(&path);
    let out = shingled(&["format", p(&path), "--zone-size", "16MiB"]);
    assert_eq!(status(&out), 2);
    let err = text(&out.stderr);
    assert!(err.contains(&uuid) && err.contains("--force") && err.contains("formatted 2"), "{err}");

    let out = shingled(&[
        "format",
        p(&path),
        "--zone-size",
        "16MiB",
        "--value-bytes-max",
        "1MiB",
        "--force",
        "--json",
    ]);
    assert_eq!(status(&out), 0, "{}", text(&out.stderr));
    let formatted = json(&out);
    assert_ne!(formatted["uuid"].as_str().unwrap(), uuid);
    assert!(formatted["erased"].as_str().unwrap().contains(&uuid));
    assert_eq!(formatted["created_file"], false);

    // Text output says what was done.
    let out = shingled(&[
        "format",
        p(&path),
        "--zone-size",
        "32MiB",
        "--value-bytes-max",
        "4MiB",
        "--force",
    ]);
    assert_eq!(status(&out), 0, "{}", text(&out.stderr));
    let said = text(&out.stdout);
    for needle in ["uuid", "5 x 32 MiB", "log capacity", "value cap     4 MiB"] {
        assert!(said.contains(needle), "no {needle:?} in:\n{said}");
    }

    // Data that is not shingle's is refused too; --size must match an existing file.
    let (_dir2, other) = disk_file();
    std::fs::write(&other, vec![0x7Fu8; (ZONES * ZONE) as usize]).unwrap();
    let out = shingled(&["format", p(&other), "--zone-size", "16MiB"]);
    assert_eq!(status(&out), 2);
    assert!(
        text(&out.stderr).contains("not a shingle disk (first bytes 7f 7f"),
        "{}",
        text(&out.stderr)
    );
    let out = shingled(&["format", p(&other), "--size", "1GiB", "--force"]);
    assert_eq!(status(&out), 2);
    assert!(text(&out.stderr).contains("only sizes a file it creates"));
    // A value cap the zones cannot hold: the store's reason.
    let out = shingled(&[
        "format",
        p(&other),
        "--zone-size",
        "16MiB",
        "--value-bytes-max",
        "16MiB",
        "--force",
    ]);
    assert_eq!(status(&out), 2);
    assert!(text(&out.stderr).contains("the smallest zone holds"), "{}", text(&out.stderr));
}

#[test]
fn inspect_describes_the_disk_and_its_log_without_changing_it() {
    let (_dir, path) = disk_file();
    let uuid = format_new(&path);
    write_records(&path, 0..60, true);
    let before = file_digest(&path);

    let out = shingled(&["inspect", p(&path), "--json", "--zones"]);
    assert_eq!(status(&out), 0, "{}", text(&out.stderr));
    let s = json(&out);
    assert_eq!(s["superblock"]["uuid"], uuid.as_str());
    assert_eq!(s["superblock"]["value_bytes_max"], VALUE_MAX);
    assert_eq!(s["device"]["kind"], "file");
    assert_eq!(s["device"]["zone_size_bytes"], ZONE);
    // 60 blocks, 12 deleted (12 tombstones), one stored again: 61 blocks, 49 live.
    assert_eq!(s["log"]["blocks"], 61, "{:#}", s["log"]);
    assert_eq!(s["log"]["live_blocks"], 49);
    assert_eq!(s["log"]["tombstones"], 12);
    assert!(s["log"]["batches"].as_u64().unwrap() >= 2);
    let live = s["log"]["live_bytes"].as_u64().unwrap();
    let garbage = s["log"]["garbage_bytes"].as_u64().unwrap();
    assert_eq!(live + garbage, s["log"]["log_bytes"].as_u64().unwrap());
    assert!(s["log"]["dead_block_bytes"].as_u64().unwrap() > 0);
    assert_eq!(s["index"]["entries"], 49);
    assert_eq!(s["index"]["verified"], 49);
    assert_eq!(s["problems_total"], 0, "{:#}", s["problems"]);
    assert_eq!(s["checkpoint"]["header"]["clean"], true);
    assert_eq!(s["recovery"]["tail_records"], 0);
    let sets = s["checkpoint_sets"].as_array().unwrap();
    assert_eq!(sets.iter().filter(|c| c["loaded"] == true).count(), 1);
    let zones = s["zones"]["list"].as_array().unwrap();
    assert_eq!(zones.len() as u64, ZONES);
    assert_eq!(zones[0]["role"], "superblock");
    let written: Vec<&Value> = zones.iter().filter(|z| z["log_end_bytes"] != 0).collect();
    assert_eq!(written.len(), 1, "one log zone written");
    assert_eq!(written[0]["verified_end_bytes"], written[0]["log_end_bytes"]);
    assert_eq!(written[0]["write_pointer_bytes"], written[0]["log_end_bytes"]);

    let out = shingled(&["inspect", p(&path)]);
    assert_eq!(status(&out), 0);
    let said = text(&out.stdout);
    for needle in [
        "regular file (zones emulated)",
        uuid.as_str(),
        "61 blocks (49 live, 12 garbage), 12 tombstones",
        "[loaded]",
        "problems              none",
    ] {
        assert!(said.contains(needle), "no {needle:?} in:\n{said}");
    }

    // More records and no clean close: the checkpoint is older, the tail is scanned.
    write_records(&path, 100..130, false);
    let before_unclean = file_digest(&path);
    let s = json(&shingled(&["inspect", p(&path), "--json"]));
    assert!(s["recovery"]["tail_records"].as_u64().unwrap() >= 30, "{:#}", s["recovery"]);
    assert_eq!(s["log"]["live_blocks"], 49 + 30 - 6 + 1);
    assert_eq!(s["index"]["verified"], s["index"]["entries"]);
    assert_eq!(s["problems_total"], 0, "{:#}", s["problems"]);
    let out = shingled(&["check", p(&path)]);
    assert_eq!(status(&out), 0, "{}{}", text(&out.stdout), text(&out.stderr));
    assert!(text(&out.stdout).contains("result: clean"));
    assert_ne!(before, before_unclean);
    assert_eq!(file_digest(&path), before_unclean, "inspect and check wrote to the disk");
}

#[test]
fn check_names_the_zone_and_offset_of_a_flipped_value_byte() {
    let (_dir, path) = disk_file();
    format_new(&path);
    let locations = write_records(&path, 0..40, true);
    let out = shingled(&["check", p(&path)]);
    assert_eq!(status(&out), 0, "{}", text(&out.stdout));

    // Key 10 holds 100,000 bytes: two chunks. Flip a byte in the second.
    let (_, at) = *locations.iter().find(|(i, _)| *i == 10).unwrap();
    assert_eq!(at.value_len, 100_000);
    let value_start = u64::from(at.offset) + store::format::value_offset(at.value_len) as u64;
    flip_byte(&path, u64::from(at.zone) * ZONE + value_start + 70_000);

    let out = shingled(&["check", p(&path)]);
    assert_eq!(status(&out), 1, "{}", text(&out.stdout));
    let said = text(&out.stdout);
    let place = format!("zone {} offset {}", at.zone, at.offset);
    assert!(said.contains(&place), "no {place:?} in:\n{said}");
    assert!(said.contains("value chunk 1") && said.contains("checksum mismatch"), "{said}");
    assert!(said.contains("result: 1 problem found"), "{said}");

    let report = json(&shingled(&["check", p(&path), "--json"]));
    assert_eq!(report["problems_total"], 1);
    let problem = &report["problems"][0];
    assert_eq!(problem["zone"], at.zone);
    assert_eq!(problem["offset"], at.offset);
    assert_eq!(problem["device_offset"], u64::from(at.zone) * ZONE + u64::from(at.offset));
    // The record's header is intact: its index entry still verifies.
    assert_eq!(report["index"]["verified"], report["index"]["entries"]);
    assert_eq!(report["damaged_regions"], 1);

    // The same through the library, in-process.
    let survey =
        admin::examine(&Target::new(&path), &SurveyOptions { zone_list: false, listed_max: 10 })
            .unwrap();
    assert_eq!(survey.problems_total, 1);
    assert_eq!(
        (survey.problems[0].zone, survey.problems[0].offset),
        (at.zone, u64::from(at.offset))
    );
}

#[test]
fn check_reports_a_damaged_header_and_the_index_entry_that_points_at_it() {
    let (_dir, path) = disk_file();
    format_new(&path);
    let locations = write_records(&path, 0..40, true);
    let (_, at) = *locations.iter().find(|(i, _)| *i == 7).unwrap();
    // The sequence number, inside the header checksum.
    flip_byte(&path, u64::from(at.zone) * ZONE + u64::from(at.offset) + 9);
    let out = shingled(&["check", p(&path), "--json"]);
    assert_eq!(status(&out), 1);
    let report = json(&out);
    let problems = report["problems"].as_array().unwrap();
    let here: Vec<&Value> =
        problems.iter().filter(|p| p["zone"] == at.zone && p["offset"] == at.offset).collect();
    assert!(
        here.iter().any(|p| p["what"].as_str().unwrap().contains("no valid record")),
        "{problems:#?}"
    );
    assert!(
        here.iter().any(|p| p["what"].as_str().unwrap().contains("index entry")),
        "{problems:#?}"
    );
    assert_eq!(
        report["index"]["verified"].as_u64().unwrap() + 1,
        report["index"]["entries"].as_u64().unwrap()
    );
}

#[test]
fn a_torn_tail_is_reported_but_is_not_a_problem() {
    let (_dir, path) = disk_file();
    format_new(&path);
    write_records(&path, 0..20, false);
    let s = json(&shingled(&["inspect", p(&path), "--json", "--zones"]));
    let zone = s["zones"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .find(|z| z["log_end_bytes"] != 0)
        .unwrap()
        .clone();
    let end = zone["log_end_bytes"].as_u64().unwrap();
    let start = zone["zone"].as_u64().unwrap() * ZONE;
    // Half a batch that never became durable as a whole.
    write_at(&path, start + end, &[0xAB; 8192]);
    let out = shingled(&["check", p(&path), "--json"]);
    assert_eq!(status(&out), 0, "{}", text(&out.stdout));
    let report = json(&out);
    assert_eq!(report["torn_regions"], 1);
    assert_eq!(report["regions"][0]["kind"], "torn");
    assert_eq!(report["regions"][0]["from"], end);
    assert_eq!(report["regions"][0]["to"], end + 8192);
    assert_eq!(report["problems_total"], 0);
}

#[test]
fn disks_that_are_not_shingle_or_are_damaged_are_refused_with_exit_2() {
    let (dir, path) = disk_file();
    // Zeroes: not a shingle disk.
    std::fs::write(&path, vec![0u8; (4 * ZONE) as usize]).unwrap();
    for command in ["inspect", "check"] {
        let out = shingled(&[command, p(&path)]);
        assert_eq!(status(&out), 2);
        assert!(text(&out.stderr).contains("not a shingle disk"), "{}", text(&out.stderr));
    }
    // Too small to hold anything.
    let tiny = dir.path().join("tiny");
    std::fs::write(&tiny, b"hello").unwrap();
    let out = shingled(&["check", p(&tiny)]);
    assert_eq!(status(&out), 2);
    assert!(text(&out.stderr).contains("too small"), "{}", text(&out.stderr));
    // Missing.
    let out = shingled(&["inspect", p(&dir.path().join("missing"))]);
    assert_eq!(status(&out), 2);
    // Random bytes.
    let noise = dir.path().join("noise");
    let bytes: Vec<u8> =
        (0..(4 * ZONE) as u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    std::fs::write(&noise, bytes).unwrap();
    assert_eq!(status(&shingled(&["check", p(&noise)])), 2);

    // Both superblock copies damaged.
    let sb = path_fresh(&dir, "sb");
    format_new(&sb);
    flip_byte(&sb, 40);
    flip_byte(&sb, 4096 + 40);
    let out = shingled(&["check", p(&sb)]);
    assert_eq!(status(&out), 2);
    assert!(text(&out.stderr).contains("checksum mismatch"), "{}", text(&out.stderr));
    // One copy damaged: the disk opens from the other; check reports the lost spare.
    let one = path_fresh(&dir, "one");
    format_new(&one);
    flip_byte(&one, 4096 + 40);
    let out = shingled(&["check", p(&one)]);
    assert_eq!(status(&out), 1);
    assert!(
        text(&out.stdout)
            .contains("zone 0 offset 4096 (device byte 4096): superblock copy 1 is damaged"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(status(&shingled(&["inspect", p(&one)])), 0);

    // A truncated file: fewer zones than the superblock says.
    let cut = path_fresh(&dir, "cut");
    format_new(&cut);
    std::fs::OpenOptions::new().write(true).open(&cut).unwrap().set_len(5 * ZONE).unwrap();
    let out = shingled(&["inspect", p(&cut)]);
    assert_eq!(status(&out), 2);
    assert!(text(&out.stderr).contains("zones on the device"), "{}", text(&out.stderr));

    // Garbage over written log: problems (exit 1), no panic.
    let junk = path_fresh(&dir, "junk");
    format_new(&junk);
    let locations = write_records(&junk, 0..200, true);
    let zone = locations[0].1.zone;
    let noise: Vec<u8> = (0..256 << 10).map(|i: u32| (i.wrapping_mul(40503) >> 7) as u8).collect();
    write_at(&junk, u64::from(zone) * ZONE + (64 << 10), &noise);
    let out = shingled(&["check", p(&junk), "--listed-max", "5"]);
    assert_eq!(status(&out), 1, "{}", text(&out.stdout));
    let said = text(&out.stdout);
    assert!(said.contains("more"), "a capped list says how many more:\n{said}");
    let out = shingled(&["inspect", p(&junk), "--zones"]);
    assert_eq!(status(&out), 0);

    // A file another process holds open as a disk (its lock, as the daemon's).
    let locked = path_fresh(&dir, "locked");
    format_new(&locked);
    let options = DiskOptions { zone_size_bytes: ZONE, ..DiskOptions::default() };
    let holder = Disk::open(&locked, &options).unwrap();
    let out = shingled(&["check", p(&locked)]);
    assert_eq!(status(&out), 2);
    assert!(text(&out.stderr).contains("in use"), "{}", text(&out.stderr));
    drop(holder);
    assert_eq!(status(&shingled(&["check", p(&locked)])), 0);

    // Usage errors are exit 2 as well.
    assert_eq!(status(&shingled(&["check"])), 2);
    assert_eq!(status(&shingled(&["inspect", p(&locked), "--no-such-flag"])), 2);
    assert_eq!(status(&shingled(&["check", "--help"])), 0);
}

fn path_fresh(dir: &tempfile::TempDir, name: &str) -> PathBuf {
    dir.path().join(name)
}

/// The survey on the simulated disk after a crash with writes in flight: the tail is torn at
/// worst, nothing is a problem, and the survey neither writes, flushes nor sends a zone
/// command, on the emulated and the zoned model.
#[test]
fn the_survey_never_writes_even_after_a_crash() {
    for model in [SimModel::Emulated, SimModel::Zoned] {
        let config = SimConfig {
            zone_size_bytes: 4 << 20,
            zone_capacity_bytes: 4 << 20,
            zone_count: 12,
            model,
            ..SimConfig::default()
        };
        Core::new(256).unwrap().block_on(async move {
            let disk = SimDisk::new(config, 7).unwrap();
            let options = FormatOptions { value_bytes_max: 256 << 10, checkpoint_zones_per_set: 1 };
            store::format(&disk, &options, false).await.unwrap();
            let s = Store::open(
                disk,
                StoreConfig { value_bytes_max: 256 << 10, ..StoreConfig::default() },
            )
            .await
            .unwrap();
            let mut tasks = Vec::new();
            for i in 0..300u32 {
                let s = s.clone();
                let v = vec![i as u8; 1 + (i as usize * 131) % 20_000];
                tasks.push(ioengine::spawn(async move { s.put(&key(i), &v).await }));
            }
            // Crash while some of them are in flight.
            for task in tasks.into_iter().take(150) {
                task.await.unwrap();
            }
            let crashed = s.device().crash();
            let view = DiskView::open(crashed).await.unwrap();
            let options = SurveyOptions { zone_list: true, listed_max: 20 };
            let survey = admin::survey(&view, "sim", &options).await;
            assert_eq!(survey.problems_total, 0, "{model:?}: {:#?}", survey.problems);
            assert!(survey.log.live_blocks >= 150, "{model:?}: {:?}", survey.log);
            assert_eq!(survey.index.verified, survey.index.entries);
            let stats = view.device().stats();
            assert_eq!((stats.writes, stats.flushes, stats.zone_commands), (0, 0, 0), "{model:?}");
        });
    }
}

#[test]
fn a_disk_the_running_daemon_serves_is_refused_until_it_stops() {
    let node = common::Node::new(&common::Options::default());
    let running = node.start();
    let disk = node.dir.path().join("d0.img");
    for args in
        [vec!["inspect", p(&disk)], vec!["check", p(&disk)], vec!["format", p(&disk), "--force"]]
    {
        let out = shingled(&args);
        assert_eq!(status(&out), 2, "{args:?}");
        let err = text(&out.stderr);
        assert!(err.contains("is in use") && err.contains("holds its lock"), "{err}");
    }
    running.stop();
    let out = shingled(&["inspect", p(&disk), "--json"]);
    assert_eq!(status(&out), 0, "{}", text(&out.stderr));
    let s = json(&out);
    assert_eq!(s["checkpoint"]["header"]["clean"], true, "the daemon closed with a checkpoint");
    assert_eq!(s["device"]["zone_size_bytes"], 64u64 << 20, "zone size from the superblock");
    assert_eq!(status(&shingled(&["check", p(&disk)])), 0);
}
