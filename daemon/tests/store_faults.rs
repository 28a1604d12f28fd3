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
