//! The store on real Linux zoned block devices: a ZNS namespace (zone capacity below zone size,
//! open and active limits) and an SMR-like null_blk disk (conventional zones first). Runs inside
//! ../shared/zoned-vm/run (which sets ZONED_ZNS_DEV and ZONED_SMR_DEV):
//!
//! ```text
//! CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER="../shared/zoned-vm/run -e SHINGLE_REQUIRE_ZONED=1 --" \
//!     cargo test -p shingle-daemon --test store_zoned
//! ```
//!
//! Outside the VM the tests say so and pass, unless SHINGLE_REQUIRE_ZONED=1.

#![allow(clippy::unwrap_used, reason = "tests: a failed step should panic with its error")]

use std::path::Path;

use ioengine::Core;
use ioengine::device::{Device, Disk, DiskOptions, ZoneType};
use shingle_daemon::store::{self, FormatOptions, Store, StoreConfig, StoreError};

mod zoned_env;

use zoned_env::device;

fn key(i: u32) -> [u8; 32] {
    let mut k = [0x3Cu8; 32];
    k[..4].copy_from_slice(&i.to_le_bytes());
    k
}

fn value(i: u32) -> Vec<u8> {
    let len = match i % 50 {
        0 => 3 << 19,
        1 => 1 << 20,
        n => 1 + (n as usize * 7919) % 70_000,
    };
    (0..len).map(|j| (j as u32).wrapping_mul(31).wrapping_add(i) as u8).collect()
}

/// Keys of the first phase with i % 7 == 3 are deleted.
fn deleted(i: u32) -> bool {
    i < COUNT && i % 7 == 3
}

const COUNT: u32 = 100;

fn config() -> StoreConfig {
    StoreConfig { value_bytes_max: 4 << 20, ..StoreConfig::default() }
}

async fn verify(s: &std::rc::Rc<Store<Disk>>, count: u32) {
    for i in 0..count {
        match s.get(&key(i), None).await {
            Ok(v) if !deleted(i) => assert_eq!(v.as_slice(), &value(i)[..], "key {i}"),
            Err(StoreError::NotFound) if deleted(i) => {}
            other => panic!("key {i}: {other:?}"),
        }
    }
}

fn exercise(dev: &Path) {
    let path = dev.to_path_buf();
    Core::new(256).unwrap().block_on(async move {
        let disk = Disk::open(&path, &DiskOptions::default()).unwrap();
        let formatted = store::format(
            &disk,
            &FormatOptions { value_bytes_max: 4 << 20, checkpoint_zones_per_set: 0 },
            true,
        )
        .await
        .unwrap();
        assert!(formatted.first_data_zone() < disk.geometry().zone_count);
        let s = Store::open(disk, config()).await.unwrap();
        let mut tasks = Vec::new();
        for i in 0..COUNT {
            let s = s.clone();
            tasks.push(ioengine::spawn(async move { s.put(&key(i), &value(i)).await }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        for i in (0..COUNT).filter(|&i| deleted(i)) {
            s.delete(&key(i)).await.unwrap();
        }
        verify(&s, COUNT).await;
        let (open, active) = s.device().open_and_active();
        let g = s.device().geometry();
        assert!(g.max_open_zones == 0 || open <= g.max_open_zones);
        assert!(g.max_active_zones == 0 || active <= g.max_active_zones);
        s.close().await.unwrap();
    });
    // Reopen after a clean close: everything from the checkpoint.
    let path = dev.to_path_buf();
    Core::new(256).unwrap().block_on(async move {
        let s = Store::open(Disk::open(&path, &DiskOptions::default()).unwrap(), config())
            .await
            .unwrap();
        assert!(s.recovery_report().checkpoint_clean, "{:?}", s.recovery_report());
        verify(&s, COUNT).await;
        // More writes, then stop without a checkpoint: the next open replays the tail.
        for i in COUNT..COUNT + 50 {
            s.put(&key(i), &value(i)).await.unwrap();
        }
    });
    let path = dev.to_path_buf();
    Core::new(256).unwrap().block_on(async move {
        let s = Store::open(Disk::open(&path, &DiskOptions::default()).unwrap(), config())
            .await
            .unwrap();
        let report = s.recovery_report().clone();
        assert!(report.tail_records >= 50, "{report:?}");
        assert_eq!(report.corrupt_regions, 0, "{report:?}");
        verify(&s, COUNT + 50).await;
        s.put(&key(9999), b"after recovery").await.unwrap();
    });
}

#[test]
fn store_on_zns() {
    let Some(dev) = device("ZONED_ZNS_DEV") else { return };
    exercise(&dev);
}

#[test]
fn store_on_smr_like_null_blk() {
    let Some(dev) = device("ZONED_SMR_DEV") else { return };
    let first_conventional = {
        let disk = Disk::open(&dev, &DiskOptions::default()).unwrap();
        disk.zone(0).zone_type == ZoneType::Conventional
    };
    assert!(first_conventional, "null_blk has conventional zones first");
    exercise(&dev);
}
