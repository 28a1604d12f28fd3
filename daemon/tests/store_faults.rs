//! A failing disk fails its own requests with errors and never stalls or takes down another
//! disk served by the same core.

#![allow(clippy::unwrap_used, reason = "tests: a failed step should panic with its error")]

use std::time::{Duration, Instant};

use ioengine::Core;
use ioengine::device::sim::{FaultPlan, SimConfig, SimDisk, Trigger};
use shingle_daemon::store::{self, FormatOptions, Store, StoreConfig, StoreError};

fn config() -> SimConfig {
    SimConfig {
        zone_size_bytes: 1 << 20,
        zone_capacity_bytes: 1 << 20,
        zone_count: 16,
        ..SimConfig::default()
    }
}

fn key(i: u32) -> [u8; 32] {
    let mut k = [7u8; 32];
    k[..4].copy_from_slice(&i.to_le_bytes());
    k
}

#[test]
fn io_errors_on_one_disk_do_not_stall_the_other() {
    Core::new(256).unwrap().block_on(async {
        let options = FormatOptions { value_bytes_max: 64 << 10, checkpoint_zones_per_set: 1 };
        let store_config = StoreConfig { value_bytes_max: 64 << 10, ..StoreConfig::default() };
        let bad = SimDisk::new(config(), 1).unwrap();
        let good = SimDisk::new(config(), 2).unwrap();
        store::format(&bad, &options, false).await.unwrap();
        store::format(&good, &options, false).await.unwrap();
        let bad = Store::open(bad, store_config.clone()).await.unwrap();
        let good = Store::open(good, store_config).await.unwrap();
        bad.put(&key(1), b"stored before the disk went bad").await.unwrap();

        // Every write and read on the bad disk now fails.
        bad.device()
            .set_faults(FaultPlan {
                write_errors: vec![Trigger::Probability(1.0)],
                read_errors: vec![Trigger::Probability(1.0)],
                ..FaultPlan::default()
            })
            .unwrap();

        let start = Instant::now();
        let mut bad_tasks = Vec::new();
        for i in 2..50 {
            let bad = bad.clone();
            bad_tasks
                .push(ioengine::spawn(async move { bad.put(&key(i), &[i as u8; 4096]).await }));
        }
        let mut good_tasks = Vec::new();
        for i in 0..200 {
            let good = good.clone();
            good_tasks.push(ioengine::spawn(async move {
                good.put(&key(i), &[i as u8; 4096]).await.unwrap();
                assert_eq!(good.get(&key(i), None).await.unwrap().as_slice(), &[i as u8; 4096][..]);
            }));
        }
        for task in good_tasks {
            task.await;
        }
        let good_done = start.elapsed();
        for task in bad_tasks {
            let err = task.await.unwrap_err();
            assert!(
                matches!(
                    err,
                    StoreError::Io { .. }
                        | StoreError::ReadOnly { .. }
                        | StoreError::Corrupt { .. }
                ),
                "{err:?}"
            );
        }
        let err = bad.get(&key(1), None).await.unwrap_err();
        assert!(
            matches!(err, StoreError::Io { .. }),
            "a failed read is an error, not data: {err:?}"
        );
        assert!(good_done < Duration::from_secs(10), "the good disk was stalled: {good_done:?}");
        assert_eq!(good.len(), 200);
    });
}

/// In write-then-fdatasync mode, batches written while a flush runs share the next one; a
/// flush that fails fails the batches waiting for it (and only then is anything reported
/// failed), and every PUT that was acknowledged survives a crash that loses unflushed writes.
#[test]
fn fdatasync_mode_shares_flushes_and_a_failed_flush_fails_its_batches() {
    use shingle_daemon::store::SyncMode;
    const PUTS: u32 = 40;
    Core::new(256).unwrap().block_on(async {
        // Zones that hold several 1 MiB batches.
        let sim = SimConfig { zone_size_bytes: 8 << 20, zone_capacity_bytes: 8 << 20, ..config() };
        let options = FormatOptions { value_bytes_max: 2 << 20, checkpoint_zones_per_set: 1 };
        let store_config = StoreConfig {
            value_bytes_max: 2 << 20,
            sync: SyncMode::WriteThenFdatasync,
            ..StoreConfig::default()
        };
        let disk = SimDisk::new(sim, 11).unwrap();
        store::format(&disk, &options, false).await.unwrap();
        let s = Store::open(disk, store_config.clone()).await.unwrap();
        // 1 MiB values: each is a batch of its own, so many batches are in flight at once.
        let value = |i: u32| vec![(i % 251) as u8; 1 << 20];
        let flushes_before = s.device().stats().flushes;
        let batches_before = s.stats().batches.get();
        let mut tasks = Vec::new();
        for i in 0..PUTS {
            let s = s.clone();
            tasks.push(ioengine::spawn(async move { s.put(&key(i), &value(i)).await }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        let flushes = s.device().stats().flushes - flushes_before;
        let batches = s.stats().batches.get() - batches_before;
        assert!(batches >= u64::from(PUTS), "{batches} batches for {PUTS} PUTs");
        assert!(flushes < batches, "{flushes} flushes for {batches} batches: none was shared");

        // The next flush fails: the PUTs waiting for it fail, the others are acknowledged.
        let next_flush = s.device().stats().flushes + 1;
        s.device()
            .set_faults(FaultPlan {
                flush_errors: vec![Trigger::Nth(next_flush)],
                ..FaultPlan::default()
            })
            .unwrap();
        let mut tasks = Vec::new();
        for i in PUTS..2 * PUTS {
            let s = s.clone();
            tasks.push(ioengine::spawn(async move { (i, s.put(&key(i), &value(i)).await) }));
        }
        let mut acknowledged: Vec<u32> = (0..PUTS).collect();
        let mut failed = 0;
        for task in tasks {
            match task.await {
                (i, Ok(_)) => acknowledged.push(i),
                (_, Err(err)) => {
                    assert!(err.to_string().contains("fsync failed"), "{err:?}");
                    failed += 1;
                }
            }
        }
        assert!(failed > 0, "the failed flush failed no PUT");
        assert!(failed < PUTS, "a failed flush failed every later PUT too");

        let disk = s.device().crash();
        drop(s);
        let s = Store::open(disk, store_config).await.unwrap();
        for i in acknowledged {
            let got = s.get(&key(i), None).await.unwrap();
            assert!(got.as_slice() == value(i).as_slice(), "PUT {i} came back different");
        }
    });
}
