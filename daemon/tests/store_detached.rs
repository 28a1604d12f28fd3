//! Values of whole blocks are written detached from their headers (format version 2): a GET of
//! one reads the value's blocks and nothing else, is checked against the index, and survives a
//! crash and a clean restart; ranges, STAT, LIST and DELETE read the header as before; damage is
//! a checksum error, never data.

#![allow(clippy::unwrap_used, reason = "tests: a failed step should panic with its error")]

use std::rc::Rc;

use ioengine::Core;
use ioengine::checksum::crc32c;
use ioengine::device::Device;
use ioengine::device::sim::{SimConfig, SimDisk};
use shingle_daemon::store::{self, FormatOptions, Store, StoreConfig, StoreError};

fn sim_config() -> SimConfig {
    SimConfig {
        zone_size_bytes: 4 << 20,
        zone_capacity_bytes: 4 << 20,
        zone_count: 16,
        ..SimConfig::default()
    }
}

fn store_config() -> StoreConfig {
    StoreConfig { value_bytes_max: 1 << 20, ..StoreConfig::default() }
}

fn key(i: u32) -> [u8; 32] {
    let mut k = [0x3Cu8; 32];
    k[..4].copy_from_slice(&i.to_le_bytes());
    k
}

/// Key `i`'s value: whole blocks (4, 8 and 16 KiB) for most, other sizes for the rest.
fn value(i: u32) -> Vec<u8> {
    let len = match i % 5 {
        0 => 4096,
        1 => 8192,
        2 => 16384,
        3 => 100 + i as usize,
        _ => 5000,
    };
    (0..len).map(|j| (j as u32).wrapping_mul(0x9E37_79B9).wrapping_add(i) as u8).collect()
}

fn is_detached(i: u32) -> bool {
    i % 5 <= 2
}

const KEYS: u32 = 200;

/// Stores every key, 64 PUTs at a time, so batches mix detached values and inline records.
async fn fill(s: &Rc<Store<SimDisk>>) {
    for wave in (0..KEYS).step_by(64) {
        let tasks: Vec<_> = (wave..(wave + 64).min(KEYS))
            .map(|i| {
                let s = s.clone();
                ioengine::spawn(async move { s.put(&key(i), &value(i)).await.unwrap() })
            })
            .collect();
        for task in tasks {
            task.await;
        }
    }
}

/// GETs every key and checks its bytes; a detached value must be read with exactly its own
/// bytes from the device.
async fn check_all(s: &Rc<Store<SimDisk>>, deleted: &[u32]) {
    for i in 0..KEYS {
        let before = s.device().stats().bytes_read;
        let value_only = s.stats().reads_value_only.get();
        match s.get(&key(i), None).await {
            Ok(got) if !deleted.contains(&i) => {
                let want = value(i);
                assert_eq!(got.as_slice(), &want[..], "key {i}");
                assert_eq!(got.value_crc, crc32c(&want), "key {i}");
                let read = s.device().stats().bytes_read - before;
                if is_detached(i) {
                    assert_eq!(read, want.len() as u64, "key {i}: bytes read from the device");
                    assert_eq!(s.stats().reads_value_only.get(), value_only + 1, "key {i}");
                } else {
                    assert!(read > want.len() as u64, "key {i}: the header is read too");
                }
            }
            Err(StoreError::NotFound) if deleted.contains(&i) => {}
            other => panic!("key {i}: {other:?}"),
        }
    }
}

/// A store formatted on a new simulated disk of `seed`, with every key stored.
async fn filled_store(seed: u64) -> Rc<Store<SimDisk>> {
    let disk = SimDisk::new(sim_config(), seed).unwrap();
    let options = FormatOptions { value_bytes_max: 1 << 20, checkpoint_zones_per_set: 1 };
    store::format(&disk, &options, false).await.unwrap();
    let s = Store::open(disk, store_config()).await.unwrap();
    fill(&s).await;
    s
}

#[test]
fn whole_block_values_are_read_alone_and_survive_crashes_and_restarts() {
    Core::new(256).unwrap().block_on(async {
        let s = filled_store(11).await;
        let detached = (0..KEYS).filter(|&i| is_detached(i)).count() as u64;
        assert_eq!(s.stats().values_detached.get(), detached);
        assert!(s.stats().batches.get() < u64::from(KEYS) / 4, "PUTs shared batches");
        check_all(&s, &[]).await;

        // Ranges, STAT, LIST and DELETE read the header, which is elsewhere in the batch.
        let v = value(2);
        let range = s.get(&key(2), Some((4000, 9000))).await.unwrap();
        assert_eq!(range.as_slice(), &v[4000..13_000]);
        let stat = s.stat(&key(2)).await.unwrap();
        assert_eq!((stat.value_len, stat.value_crc), (16384, crc32c(&v)));
        let (listed, _) = s.list(None, 1000).await.unwrap();
        assert_eq!(listed.len(), KEYS as usize);
        // PUT of the same key: the same value is accepted, another refused.
        assert_eq!(s.put(&key(1), &value(1)).await.unwrap(), store::PutOutcome::AlreadyStored);
        assert!(matches!(s.put(&key(1), &value(6)).await, Err(StoreError::ExistsWithOtherContent)));
        let deleted = [0, 1, 2, 7];
        for i in deleted {
            s.delete(&key(i)).await.unwrap();
        }
        check_all(&s, &deleted).await;

        // A crash: everything acknowledged is recovered from the log's tail.
        let disk = s.device().crash();
        drop(s);
        let s = Store::open(disk, store_config()).await.unwrap();
        assert!(s.recovery_report().tail_records > 0);
        check_all(&s, &deleted).await;

        // A clean restart: the index comes from the checkpoint, detached values included.
        s.close().await.unwrap();
        let disk = s.device().crash();
        drop(s);
        let s = Store::open(disk, store_config()).await.unwrap();
        assert_eq!(s.recovery_report().tail_records, 0);
        check_all(&s, &deleted).await;
    });
}

#[test]
fn a_flipped_bit_in_a_detached_value_is_a_checksum_error_never_data() {
    Core::new(256).unwrap().block_on(async {
        let s = filled_store(12).await;
        let location = s.location_of(&key(5)).unwrap();
        let block = u64::from(s.superblock().block_bytes);
        let value_at = location.detached_value_offset(block).expect("a detached value");
        let zone_start = s.device().geometry().zone_start(location.zone);
        s.device().flip_bit(zone_start + value_at + 1000, 3).unwrap();
        for _ in 0..2 {
            let err = s.get(&key(5), None).await.unwrap_err();
            match &err {
                StoreError::Checksum { zone, offset, .. } => {
                    assert_eq!((*zone, *offset), (location.zone, value_at), "{err}");
                }
                other => panic!("expected a checksum error, got {other:?}"),
            }
        }
        assert_eq!(s.stats().checksum_errors.get(), 2);
        // A range that does not touch the damaged chunk would still be served; this value is
        // one chunk, so every range of it fails.
        assert!(matches!(
            s.get(&key(5), Some((2000, 100))).await,
            Err(StoreError::Checksum { .. })
        ));
        // The neighbours are intact.
        for i in [4, 6, 10] {
            assert_eq!(s.get(&key(i), None).await.unwrap().as_slice(), &value(i)[..]);
        }
    });
}
