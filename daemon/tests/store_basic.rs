//! The store on a real file-backed disk through the ring: format, PUT/GET/range/DELETE/STAT/
//! LIST, immutability, group commit, restart with and without a clean checkpoint, a full disk,
//! and a flipped bit reported as a checksum error instead of returned.

#![allow(clippy::unwrap_used, reason = "tests: a failed step should panic with its error")]

use std::path::Path;
use std::rc::Rc;

use ioengine::Core;
use ioengine::device::{Disk, DiskOptions};
use shingle_daemon::store::{self, FormatOptions, PutOutcome, Store, StoreConfig, StoreError};

const ZONE: u64 = 4 << 20;

fn disk(path: &Path, zones: u64, fresh: bool) -> Disk {
    let options = DiskOptions {
        zone_size_bytes: ZONE,
        create_size_bytes: Some(zones * ZONE),
        fresh,
        ..DiskOptions::default()
    };
    Disk::open(path, &options).unwrap()
}

fn format_options() -> FormatOptions {
    FormatOptions { value_bytes_max: 1 << 20, checkpoint_zones_per_set: 1 }
}

fn config() -> StoreConfig {
    StoreConfig { value_bytes_max: 1 << 20, ..StoreConfig::default() }
}

async fn fresh_store(path: &Path, zones: u64) -> Rc<Store<Disk>> {
    let d = disk(path, zones, true);
    store::format(&d, &format_options(), false).await.unwrap();
    Store::open(d, config()).await.unwrap()
}

fn key(i: u32) -> [u8; 32] {
    let mut k = [0u8; 32];
    k[..4].copy_from_slice(&i.to_le_bytes());
    k[31] = 0xAB;
    k
}

fn value(i: u32, len: usize) -> Vec<u8> {
    (0..len).map(|j| (j as u32).wrapping_mul(2654435761).wrapping_add(i) as u8).collect()
}

#[test]
fn put_get_range_stat_delete_list() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d");
    Core::new(64).unwrap().block_on(async move {
        let s = fresh_store(&path, 8).await;
        let v = value(1, 200_000);
        assert_eq!(s.put(&key(1), &v).await.unwrap(), PutOutcome::Stored);
        let got = s.get(&key(1), None).await.unwrap();
        assert_eq!(got.as_slice(), &v[..]);
        assert_eq!(got.value_crc, ioengine::checksum::crc32c(&v));
        let range = s.get(&key(1), Some((70_000, 1000))).await.unwrap();
        assert_eq!(range.as_slice(), &v[70_000..71_000]);
        let tail = s.get(&key(1), Some((199_999, 1))).await.unwrap();
        assert_eq!(tail.as_slice(), &v[199_999..]);
        assert!(matches!(
            s.get(&key(1), Some((199_999, 2))).await,
            Err(StoreError::BadRange { .. })
        ));

        let stat = s.stat(&key(1)).await.unwrap();
        assert_eq!(stat.value_len, 200_000);
        assert!(s.exists(&key(1)).await.unwrap());
        assert!(!s.exists(&key(2)).await.unwrap());
        assert!(matches!(s.get(&key(2), None).await, Err(StoreError::NotFound)));

        // Immutable: same content is idempotent, other content is refused.
        assert_eq!(s.put(&key(1), &v).await.unwrap(), PutOutcome::AlreadyStored);
        let mut other = v.clone();
        other[5] ^= 1;
        assert!(matches!(s.put(&key(1), &other).await, Err(StoreError::ExistsWithOtherContent)));

        for i in 10..40 {
            s.put(&key(i), &value(i, 100 + i as usize)).await.unwrap();
        }
        s.delete(&key(1)).await.unwrap();
        assert!(matches!(s.get(&key(1), None).await, Err(StoreError::NotFound)));
        assert!(matches!(s.delete(&key(1)).await, Err(StoreError::NotFound)));
        // A deleted key can be stored again.
        s.put(&key(1), &other).await.unwrap();

        let mut listed = Vec::new();
        let mut cursor = None;
        loop {
            let (keys, next) = s.list(cursor, 7).await.unwrap();
            listed.extend(keys);
            match next {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        listed.sort();
        let mut expected: Vec<[u8; 32]> = (10..40).map(key).chain([key(1)]).collect();
        expected.sort();
        assert_eq!(listed, expected);
    });
}

#[test]
fn concurrent_puts_share_batches() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d");
    Core::new(256).unwrap().block_on(async move {
        let s = fresh_store(&path, 8).await;
        let mut tasks = Vec::new();
        for i in 0..256u32 {
            let s = s.clone();
            tasks.push(ioengine::spawn(async move { s.put(&key(i), &value(i, 4096)).await }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let batches = s.stats().batches.get();
        assert_eq!(s.stats().records.get(), 256);
        assert!(batches < 128, "256 concurrent PUTs took {batches} batches: no group commit");
        for i in 0..256u32 {
            assert_eq!(s.get(&key(i), None).await.unwrap().as_slice(), &value(i, 4096)[..]);
        }
    });
}

/// Runs `writers` writers in a closed loop on `s` (each sends its next PUT as soon as the last
/// is durable), `rounds` PUTs of `len` bytes each (key `round * writers + writer`); returns, for
/// every PUT, how many batches were written while it waited.
async fn closed_loop_puts(s: &Rc<Store<Disk>>, writers: u32, rounds: u32, len: usize) -> Vec<u64> {
    let mut tasks = Vec::new();
    for w in 0..writers {
        let s = s.clone();
        tasks.push(ioengine::spawn(async move {
            let mut waits = Vec::new();
            for r in 0..rounds {
                let i = r * writers + w;
                let before = s.stats().batches.get();
                s.put(&key(i), &value(i, len)).await.unwrap();
                waits.push(s.stats().batches.get() - before);
            }
            waits
        }));
    }
    let mut waits = Vec::new();
    for t in tasks {
        waits.extend(t.await);
    }
    waits
}

/// Writers that each PUT again as soon as their last PUT is acknowledged (a closed loop, the
/// way a server's clients load a disk) keep sharing batches round after round.
#[test]
fn closed_loop_writers_share_batches() {
    const WRITERS: u32 = 128;
    const ROUNDS: u32 = 8;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d");
    Core::new(256).unwrap().block_on(async move {
        let s = fresh_store(&path, 8).await;
        closed_loop_puts(&s, WRITERS, ROUNDS, 4096).await;
        let puts = u64::from(WRITERS * ROUNDS);
        let batches = s.stats().batches.get();
        assert_eq!(s.stats().records.get(), puts);
        assert!(
            batches * 8 <= puts,
            "{puts} closed-loop PUTs took {batches} batches: fewer than 8 records a batch"
        );
    });
}

fn run_then_reopen(clean: bool) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d");
    let p = path.clone();
    Core::new(64).unwrap().block_on(async move {
        let s = fresh_store(&p, 8).await;
        for i in 0..500u32 {
            s.put(&key(i), &value(i, 1000 + (i as usize % 5000))).await.unwrap();
        }
        s.write_checkpoint(false).await.unwrap();
        for i in 500..800u32 {
            s.put(&key(i), &value(i, 3000)).await.unwrap();
        }
        for i in (0..800u32).step_by(3) {
            s.delete(&key(i)).await.unwrap();
        }
        if clean {
            s.close().await.unwrap();
        }
    });
    let p = path.clone();
    Core::new(64).unwrap().block_on(async move {
        let s = Store::open(disk(&p, 8, false), config()).await.unwrap();
        let report = s.recovery_report().clone();
        assert!(report.checkpoint_generation.is_some(), "{report:?}");
        assert_eq!(report.checkpoint_clean, clean, "{report:?}");
        if clean {
            assert_eq!(report.tail_records, 0, "a clean checkpoint needs no tail: {report:?}");
            assert_eq!(report.scanned_bytes, 0, "nor a scan: {report:?}");
        } else {
            assert!(report.tail_records >= 300, "{report:?}");
        }
        assert_eq!(report.corrupt_regions, 0, "{report:?}");
        for i in 0..800u32 {
            let got = s.get(&key(i), None).await;
            if i % 3 == 0 {
                assert!(matches!(got, Err(StoreError::NotFound)), "key {i} was deleted");
            } else {
                let len = if i < 500 { 1000 + (i as usize % 5000) } else { 3000 };
                assert_eq!(got.unwrap().as_slice(), &value(i, len)[..], "key {i}");
            }
        }
        // The store keeps working after recovery, in the same zone; then it crashes.
        s.put(&key(9999), &value(9999, 5000)).await.unwrap();
        assert_eq!(s.len(), 800 - 267 + 1);
    });
    // What the session after the (clean or not) restart acknowledged is found: after a clean
    // checkpoint, the probe where the log resumes sees the new batch and the tail is scanned.
    let p = path.clone();
    Core::new(64).unwrap().block_on(async move {
        let s = Store::open(disk(&p, 8, false), config()).await.unwrap();
        let report = s.recovery_report().clone();
        assert!(report.tail_records >= 1, "{report:?}");
        assert_eq!(s.get(&key(9999), None).await.unwrap().as_slice(), &value(9999, 5000)[..]);
        assert_eq!(s.len(), 800 - 267 + 1);
    });
}

#[test]
fn restart_after_clean_close_needs_no_tail_scan() {
    run_then_reopen(true);
}

#[test]
fn restart_after_a_crash_scans_the_tail_after_the_checkpoint() {
    run_then_reopen(false);
}

#[test]
fn a_full_disk_refuses_puts_and_keeps_what_it_has() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d");
    Core::new(64).unwrap().block_on(async move {
        // 6 zones: superblock, two checkpoint zones, three data zones of 4 MiB.
        let s = fresh_store(&path, 6).await;
        let mut stored = 0u32;
        let err = loop {
            match s.put(&key(stored), &value(stored, 512 << 10)).await {
                Ok(_) => stored += 1,
                Err(err) => break err,
            }
            assert!(stored < 100, "never ran out of space");
        };
        assert!(matches!(err, StoreError::NoSpace { .. }), "{err:?}");
        assert!(stored >= 18, "only {stored} half-MiB values fit in 12 MiB");
        for i in 0..stored {
            assert_eq!(s.get(&key(i), None).await.unwrap().as_slice(), &value(i, 512 << 10)[..]);
        }
    });
}

#[test]
fn a_flipped_bit_is_a_checksum_error_never_data() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d");
    let p = path.clone();
    let (zone, offset) = Core::new(64).unwrap().block_on(async move {
        let s = fresh_store(&p, 8).await;
        s.put(&key(7), &value(7, 150_000)).await.unwrap();
        s.close().await.unwrap();
        let loc = s.location_of(&key(7)).unwrap();
        (loc.zone, loc.offset)
    });
    // Flip one bit in the second 64 KiB chunk of the value, behind the store's back.
    let at = u64::from(zone) * ZONE + u64::from(offset) + 64 + 4 * 3 + 65_536 + 100;
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[at as usize] ^= 0x04;
    std::fs::write(&path, bytes).unwrap();
    Core::new(64).unwrap().block_on(async move {
        let s = Store::open(disk(&path, 8, false), config()).await.unwrap();
        let err = s.get(&key(7), None).await.unwrap_err();
        assert!(matches!(err, StoreError::Checksum { .. }), "{err:?}");
        assert!(err.to_string().contains("zone"), "{err}");
        assert_eq!(s.stats().checksum_errors.get(), 1);
        // A range that avoids the damaged chunk still reads.
        let ok = s.get(&key(7), Some((0, 60_000))).await.unwrap();
        assert_eq!(ok.as_slice(), &value(7, 150_000)[..60_000]);
    });
}

#[test]
fn format_refuses_a_shingle_disk_unless_forced() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d");
    Core::new(64).unwrap().block_on(async move {
        let d = disk(&path, 8, true);
        store::format(&d, &format_options(), false).await.unwrap();
        let err = store::format(&d, &format_options(), false).await.unwrap_err();
        assert!(matches!(err, StoreError::CannotFormat { .. }), "{err:?}");
        store::format(&d, &format_options(), true).await.unwrap();
    });
}

#[test]
fn an_unformatted_disk_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d");
    Core::new(64).unwrap().block_on(async move {
        let err = Store::open(disk(&path, 8, true), config()).await.unwrap_err();
        assert!(matches!(err, StoreError::NotFormatted { .. }), "{err:?}");
        assert!(err.to_string().contains("not a shingle disk"), "{err}");
    });
}

#[test]
fn a_new_format_forgets_everything_of_the_old_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d");
    let p = path.clone();
    Core::new(64).unwrap().block_on(async move {
        let s = fresh_store(&p, 8).await;
        for i in 0..50 {
            s.put(&key(i), &value(i, 3000)).await.unwrap();
        }
        s.write_checkpoint(false).await.unwrap();
        for i in 50..80 {
            s.put(&key(i), &value(i, 3000)).await.unwrap();
        }
    });
    Core::new(64).unwrap().block_on(async move {
        // Opened "fresh" over the old file: every zone reports empty, the old data is there.
        let d = disk(&path, 8, true);
        store::format(&d, &format_options(), true).await.unwrap();
        let s = Store::open(d, config()).await.unwrap();
        let report = s.recovery_report().clone();
        assert_eq!(s.len(), 0, "old keys came back after a new format: {report:?}");
        assert_eq!(report.checkpoint_generation, None, "{report:?}");
        assert!(matches!(s.get(&key(3), None).await, Err(StoreError::NotFound)));
    });
}

/// A value as the server receives it: laid out where `ValueBuf::layout` says.
fn received(v: &[u8]) -> (store::ValueBuf, Vec<u32>, u32) {
    let (start, bytes) = store::ValueBuf::layout(v.len());
    let mut buf = ioengine::buf::AlignedBuf::reuse_or_for_writes(bytes, 4096);
    buf.set_len(start);
    buf.extend_from_slice(v);
    let mut crcs = Vec::new();
    let crc = ioengine::checksum::chunk_and_whole_crcs(v, &mut crcs);
    (store::ValueBuf::new(buf, start), crcs, crc)
}

async fn put_received(
    s: &Rc<Store<Disk>>,
    k: &[u8; 32],
    v: &[u8],
) -> Result<PutOutcome, StoreError> {
    let (buf, crcs, crc) = received(v);
    s.put_received(k, buf, &crcs, crc).await
}

#[test]
fn large_received_values_are_written_from_their_buffer_and_survive_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d");
    let p = path.clone();
    let big = 1 << 20;
    assert!(store::ValueBuf::layout(big).0 > 0, "a 1 MiB value gets a batch of its own");
    assert_eq!(store::ValueBuf::layout(64 << 10).0, 0, "a 64 KiB value shares batches");
    Core::new(256).unwrap().block_on(async move {
        let s = fresh_store(&p, 16).await;
        // Large values (each its own batch, no copy) mixed with small ones (shared batches),
        // all at once.
        let mut tasks = Vec::new();
        for i in 0..8u32 {
            let s = s.clone();
            tasks.push(ioengine::spawn(async move {
                put_received(&s, &key(i), &value(i, big - i as usize)).await
            }));
        }
        for i in 100..164u32 {
            let s = s.clone();
            tasks.push(ioengine::spawn(async move {
                put_received(&s, &key(i), &value(i, 300 + i as usize)).await
            }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap(), PutOutcome::Stored);
        }
        let in_place = s.stats().values_in_place.get();
        assert!(in_place >= 1, "no large value was written in place");
        assert!(in_place <= 8, "{in_place} values in place: small ones must share batches");
        for i in 0..8u32 {
            let got = s.get(&key(i), None).await.unwrap();
            assert_eq!(got.as_slice(), &value(i, big - i as usize)[..], "value {i}");
            let range = s.get(&key(i), Some((65_000, 2_000))).await.unwrap();
            assert_eq!(range.as_slice(), &value(i, big - i as usize)[65_000..67_000]);
        }
        // Immutable, as through `put`.
        assert_eq!(
            put_received(&s, &key(3), &value(3, big - 3)).await.unwrap(),
            PutOutcome::AlreadyStored
        );
        let mut other = value(3, big - 3);
        other[big / 2] ^= 1;
        assert!(matches!(
            put_received(&s, &key(3), &other).await,
            Err(StoreError::ExistsWithOtherContent)
        ));
        // Power cut: no clean close.
        s.halt();
    });
    Core::new(64).unwrap().block_on(async move {
        let s = Store::open(disk(&path, 16, false), config()).await.unwrap();
        for i in 0..8u32 {
            let got = s.get(&key(i), None).await.unwrap();
            assert_eq!(got.as_slice(), &value(i, big - i as usize)[..], "value {i} after restart");
        }
        for i in 100..164u32 {
            let got = s.get(&key(i), None).await.unwrap();
            assert_eq!(got.as_slice(), &value(i, 300 + i as usize)[..]);
        }
    });
}

#[test]
fn writers_that_find_no_room_are_served_in_arrival_order() {
    // 64 writers in a closed loop (each sends its next PUT as soon as the last is durable),
    // with values two of which fill a batch: most PUTs wait for the batches ahead of them, the
    // pipeline and the batch-buffer pool run full, and new PUTs keep arriving. Served in
    // arrival order, no PUT waits for more batches than it found ahead of it: 64 waiting
    // requests make 32 batches, plus the 8 in flight (these batches share pooled buffers: the
    // pool's 9 less the open one) and the one being filled.
    const WRITERS: u32 = 64;
    const ROUNDS: u32 = 3;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d");
    Core::new(256).unwrap().block_on(async move {
        let s = fresh_store(&path, 128).await;
        let len = (1 << 20) - 4096 * 3;
        let mut waits = closed_loop_puts(&s, WRITERS, ROUNDS, len).await;
        waits.sort_unstable();
        let worst = *waits.last().unwrap();
        let in_flight = store::POOLED_BATCHES as u64 - 1;
        let bound = u64::from(WRITERS) / 2 + in_flight + 2;
        assert!(
            worst <= bound,
            "a PUT waited for {worst} batches (bound {bound}); waits {waits:?}"
        );
    });
}
