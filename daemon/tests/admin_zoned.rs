//! The offline admin commands on real Linux zoned block devices: a ZNS namespace (zone capacity
//! below zone size, open and active limits) and an SMR-like null_blk disk (conventional zones
//! first). The zoned VM runs one program, so the commands run in-process through
//! `shingle_daemon::admin` (the same code `shingled format|inspect|check` runs):
//!
//! ```text
//! CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER=scripts/zoned-vm-runner \
//!     cargo test -p shingle-daemon --test admin_zoned
//! ```
//!
//! Format (refused without --force once the device holds a disk), records written through the
//! store, then inspect and check: counts as written, no problem, and not one zone's condition
//! or write pointer changed by them. Outside the VM the tests say so and pass, unless
//! SHINGLE_REQUIRE_ZONED=1.

#![allow(clippy::unwrap_used, reason = "tests: a failed step should panic with its error")]

use std::path::Path;

use config::ByteSize;
use ioengine::Core;
use ioengine::device::{Device, Disk, DiskOptions, ZoneCondition};
use shingle_daemon::admin::{
    self, AdminError, CheckArgs, Command, FormatArgs, InspectArgs, SurveyOptions, Target,
};
use shingle_daemon::store::{Store, StoreConfig};

const VALUE_MAX: u32 = 4 << 20;

mod zoned_env;

use zoned_env::device;

fn key(i: u32) -> [u8; 32] {
    let mut k = [0xC3u8; 32];
    k[..4].copy_from_slice(&i.to_le_bytes());
    k
}

fn value(i: u32) -> Vec<u8> {
    let len = if i % 25 == 0 { 1 << 20 } else { 1 + (i as usize * 7919) % 70_000 };
    (0..len).map(|j| (j as u32).wrapping_mul(31).wrapping_add(i) as u8).collect()
}

fn format_args(dev: &Path, force: bool) -> FormatArgs {
    FormatArgs {
        target: Target::new(dev),
        size: None,
        force,
        value_bytes_max: ByteSize(u64::from(VALUE_MAX)),
        json: false,
    }
}

/// Every zone's condition and write pointer, as the kernel reports them.
fn zone_states(dev: &Path) -> Vec<(ZoneCondition, u64)> {
    let disk = Disk::open(dev, &DiskOptions::default()).unwrap();
    disk.zones().iter().map(|z| (z.condition, z.write_pointer)).collect()
}

/// Puts keys `range` (deleting those with i % 4 == 1), closing cleanly or not.
fn write_records(dev: &Path, range: std::ops::Range<u32>, clean: bool) {
    let path = dev.to_path_buf();
    Core::new(256).unwrap().block_on(async move {
        let disk = Disk::open(&path, &DiskOptions::default()).unwrap();
        let config = StoreConfig { value_bytes_max: VALUE_MAX, ..StoreConfig::default() };
        let s = Store::open(disk, config).await.unwrap();
        let mut tasks = Vec::new();
        for i in range.clone() {
            let s = s.clone();
            tasks.push(ioengine::spawn(async move { s.put(&key(i), &value(i)).await }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        for i in range.filter(|i| i % 4 == 1) {
            s.delete(&key(i)).await.unwrap();
        }
        if clean {
            s.close().await.unwrap();
        }
    });
}

fn exercise(dev: &Path) {
    let formatted = admin::format(&format_args(dev, true)).unwrap();
    assert_eq!(formatted.device.kind, "zoned");
    // Zone sizes are the kernel's: emulation options are refused.
    let mut emulated = format_args(dev, true);
    emulated.target.zone_size = Some(ByteSize::mib(64));
    assert!(matches!(admin::format(&emulated), Err(AdminError::Usage(_))));
    match admin::format(&format_args(dev, false)) {
        Err(AdminError::Refused(why)) => {
            assert!(why.contains(&formatted.uuid) && why.contains("--force"), "{why}");
        }
        other => panic!("a formatted device was not refused: {other:?}"),
    }

    write_records(dev, 0..80, true);
    write_records(dev, 100..140, false);
    let before = zone_states(dev);

    let options = SurveyOptions { zone_list: true, listed_max: 50 };
    let survey = admin::examine(&Target::new(dev), &options).unwrap();
    assert_eq!(survey.device.kind, "zoned");
    assert_eq!(survey.superblock.uuid, formatted.uuid);
    assert_eq!(survey.problems_total, 0, "{:#?}", survey.problems);
    assert_eq!(survey.log.blocks, 120, "{:?}", survey.log);
    assert_eq!(survey.log.tombstones, 30);
    assert_eq!(survey.log.live_blocks, 90);
    assert_eq!(survey.index.entries, 90);
    assert_eq!(survey.index.verified, 90);
    assert!(survey.recovery.tail_records >= 40, "{:?}", survey.recovery);
    let conditions: u64 = survey.zones.by_condition.values().sum();
    assert_eq!(conditions, u64::from(survey.device.zone_count));
    let list = survey.zones.list.as_ref().unwrap();
    for zone in list.iter().filter(|z| z.verified_end_bytes.is_some()) {
        assert_eq!(zone.verified_end_bytes, Some(zone.log_end_bytes), "{zone:?}");
    }

    // The commands as `shingled` runs them (their output goes to the guest's stdout).
    let check = CheckArgs { target: Target::new(dev), json: false, listed_max: 50 };
    assert_eq!(admin::run(&Command::Check(check)).unwrap(), admin::EXIT_OK);
    let inspect =
        InspectArgs { target: Target::new(dev), zones: true, json: false, listed_max: 50 };
    assert_eq!(admin::run(&Command::Inspect(inspect)).unwrap(), admin::EXIT_OK);
    let dev_arg = dev.display().to_string();
    assert_eq!(admin::main(&["check".into(), dev_arg]), admin::EXIT_OK);

    assert_eq!(zone_states(dev), before, "inspect or check changed a zone");

    // The store still opens and serves everything after the admin commands.
    write_records(dev, 200..210, true);
    let survey = admin::examine(&Target::new(dev), &options).unwrap();
    assert_eq!(survey.problems_total, 0, "{:#?}", survey.problems);
    assert_eq!(survey.index.entries, 90 + 10 - 3);
}

#[test]
fn admin_on_zns() {
    let Some(dev) = device("ZONED_ZNS_DEV") else { return };
    exercise(&dev);
}

#[test]
fn admin_on_smr_like_null_blk() {
    let Some(dev) = device("ZONED_SMR_DEV") else { return };
    exercise(&dev);
    let survey =
        admin::examine(&Target::new(&dev), &SurveyOptions { zone_list: false, listed_max: 10 })
            .unwrap();
    assert!(survey.device.conventional_zones > 0, "null_blk has conventional zones first");
}
