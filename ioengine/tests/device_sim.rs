//! The simulated device: zone rules as the real backends, the volatile write cache and what a
//! crash leaves, torn writes, injected EIO, bit flips, misdirected writes, determinism per seed,
//! and both device models.

#![allow(clippy::unwrap_used, reason = "tests: a failed step should panic with its error")]

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::future::Future;
use std::rc::Rc;

use ioengine::buf::AlignedBuf;
use ioengine::device::sim::{
    CrashMode, FaultEvent, FaultPlan, Misdirect, MisdirectTarget, SimConfig, SimDisk, SimModel,
    TearShape, Trigger, WriteFate,
};
use ioengine::device::{Device, DeviceKind, ZoneCommand, ZoneCondition};
use ioengine::op::WriteFlags;
use ioengine::{Core, Error, OpKind, spawn};

const ZONE: u64 = 1 << 20;
const BLOCK: usize = 4096;
const MODELS: [SimModel; 2] = [SimModel::Emulated, SimModel::Zoned];

fn config(model: SimModel) -> SimConfig {
    SimConfig { zone_size_bytes: ZONE, zone_capacity_bytes: ZONE, model, ..SimConfig::default() }
}

fn sim(model: SimModel, seed: u64) -> Rc<SimDisk> {
    Rc::new(SimDisk::new(config(model), seed).unwrap())
}

/// `len` bytes whose every block differs and no byte is zero (zeros mean "nothing there").
fn data(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| ((i / BLOCK) as u8).wrapping_add(seed).wrapping_mul(2) | 1).collect()
}

fn buf(bytes: &[u8]) -> AlignedBuf {
    let mut buf = AlignedBuf::new(bytes.len(), BLOCK);
    buf.extend_from_slice(bytes);
    buf
}

async fn write(disk: &SimDisk, offset: u64, bytes: &[u8], flags: WriteFlags) -> Result<(), Error> {
    disk.write_at(offset, buf(bytes), flags).await.0
}

async fn read(disk: &SimDisk, offset: u64, len: usize) -> Vec<u8> {
    let (res, buf) = disk.read_at(offset, AlignedBuf::new(len, BLOCK), len).await;
    res.unwrap();
    buf.to_vec()
}

fn run<F, Fut>(f: F)
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = ()> + 'static,
{
    Core::new(64).unwrap().block_on(f());
}

fn plan(f: impl FnOnce(&mut FaultPlan)) -> FaultPlan {
    let mut plan = FaultPlan::default();
    f(&mut plan);
    plan
}

#[test]
fn writes_only_at_the_write_pointer_with_typed_errors() {
    for model in MODELS {
        run(|| async move {
            let disk = sim(model, 1);
            let kind = if model == SimModel::Zoned { DeviceKind::Zoned } else { DeviceKind::File };
            assert_eq!(disk.geometry().kind, kind);
            assert!(disk.zones().iter().all(|z| z.condition == ZoneCondition::Empty));

            write(&disk, ZONE, &data(8192, 1), WriteFlags::default()).await.unwrap();
            assert_eq!(disk.zone(1).write_pointer, ZONE + 8192);
            assert_eq!(disk.zone(1).condition, ZoneCondition::ImplicitOpen);

            let err = write(&disk, ZONE + 16384, &data(4096, 2), WriteFlags::default()).await;
            let Err(Error::NotAtWritePointer { zone: 1, write_pointer, .. }) = err else {
                panic!("{model:?}: {err:?}");
            };
            assert_eq!(write_pointer, ZONE + 8192);
            let err = write(&disk, ZONE, &data(4096, 2), WriteFlags::default()).await;
            assert!(matches!(err, Err(Error::NotAtWritePointer { .. })), "{err:?}");

            let err = write(&disk, ZONE + 8192, &data(512, 3), WriteFlags::default()).await;
            assert!(matches!(err, Err(Error::Unaligned { what: "length", .. })), "{err:?}");
            let err = write(&disk, 512, &data(4096, 3), WriteFlags::default()).await;
            assert!(matches!(err, Err(Error::Unaligned { what: "offset", .. })), "{err:?}");
            let err = write(&disk, 8 * ZONE, &data(4096, 3), WriteFlags::default()).await;
            assert!(matches!(err, Err(Error::OutOfRange { .. })), "{err:?}");
            let (err, _) = disk.read_at(8 * ZONE - 4096, AlignedBuf::new(8192, BLOCK), 8192).await;
            assert!(matches!(err, Err(Error::OutOfRange { .. })), "{err:?}");

            let unaligned = vec![7u8; 4096];
            if unaligned.as_ptr() as usize % BLOCK != 0 {
                let (err, _) = disk.write_at(ZONE + 8192, unaligned, WriteFlags::default()).await;
                assert!(
                    matches!(err, Err(Error::Unaligned { what: "buffer address", .. })),
                    "{err:?}"
                );
            }
            assert_eq!(disk.stats().writes, 1, "refused writes never reach the device");
            assert_eq!(read(&disk, ZONE, 8192).await, data(8192, 1));
        });
    }
}

#[test]
fn a_full_zone_refuses_writes_until_reset_and_finish_fills_it() {
    for model in MODELS {
        run(|| async move {
            let cfg = SimConfig { zone_capacity_bytes: ZONE / 2, ..config(model) };
            let disk = SimDisk::new(cfg, 2).unwrap();
            write(&disk, 0, &data((ZONE / 2) as usize, 3), WriteFlags::default()).await.unwrap();
            assert_eq!(disk.zone(0).condition, ZoneCondition::Full);
            let err = write(&disk, ZONE / 2, &data(4096, 3), WriteFlags::default()).await;
            assert!(matches!(err, Err(Error::ZoneFull { zone: 0, .. })), "{model:?}: {err:?}");

            disk.zone_command(0, ZoneCommand::Reset).await.unwrap();
            assert_eq!(disk.zone(0).condition, ZoneCondition::Empty);
            assert!(read(&disk, 0, 65536).await.iter().all(|&b| b == 0), "reset discards data");
            write(&disk, 0, &data(4096, 4), WriteFlags::default()).await.unwrap();

            write(&disk, 2 * ZONE, &data(4096, 5), WriteFlags::default()).await.unwrap();
            disk.zone_command(2, ZoneCommand::Finish).await.unwrap();
            let zone = disk.zone(2);
            assert_eq!(zone.condition, ZoneCondition::Full);
            assert_eq!(zone.write_pointer, 2 * ZONE + ZONE / 2);
            let err = write(&disk, 2 * ZONE + 4096, &data(4096, 5), WriteFlags::default()).await;
            assert!(matches!(err, Err(Error::ZoneFull { .. })), "{err:?}");
        });
    }
}

#[test]
fn open_and_active_limits_are_honoured() {
    for model in MODELS {
        run(|| async move {
            let cfg = SimConfig { max_open_zones: 2, max_active_zones: 3, ..config(model) };
            let disk = SimDisk::new(cfg, 3).unwrap();
            for zone in 0..2u64 {
                write(&disk, zone * ZONE, &data(4096, 6), WriteFlags::default()).await.unwrap();
            }
            let err = write(&disk, 2 * ZONE, &data(4096, 6), WriteFlags::default()).await;
            assert!(matches!(err, Err(Error::TooManyOpenZones { max: 2, .. })), "{err:?}");
            disk.zone_command(0, ZoneCommand::Close).await.unwrap();
            write(&disk, 2 * ZONE, &data(4096, 6), WriteFlags::default()).await.unwrap();
            assert_eq!(disk.open_and_active(), (2, 3));
            let err = write(&disk, 3 * ZONE, &data(4096, 6), WriteFlags::default()).await;
            assert!(matches!(err, Err(Error::TooManyActiveZones { max: 3, .. })), "{err:?}");
            disk.zone_command(0, ZoneCommand::Finish).await.unwrap();
            disk.zone_command(1, ZoneCommand::Finish).await.unwrap();
            write(&disk, 3 * ZONE, &data(4096, 6), WriteFlags::default()).await.unwrap();
            let err = disk.zone_command(4, ZoneCommand::Open).await.unwrap_err();
            assert!(matches!(err, Error::TooManyOpenZones { max: 2, .. }), "{model:?}: {err:?}");
        });
    }
}

#[test]
fn unflushed_writes_vanish_at_crash_and_flushed_or_dsync_ones_survive() {
    for model in MODELS {
        run(|| async move {
            let disk = sim(model, 4);
            write(&disk, 0, &data(8192, 1), WriteFlags::default()).await.unwrap();
            disk.flush().await.unwrap();
            write(&disk, 8192, &data(8192, 2), WriteFlags::default()).await.unwrap();
            write(&disk, ZONE, &data(4096, 3), WriteFlags::DSYNC).await.unwrap();
            assert_eq!(read(&disk, 8192, 8192).await, data(8192, 2), "the cache serves reads");
            assert_eq!(disk.cached_writes(), 1);

            let after = disk.crash();
            assert_eq!(after.epoch(), 1);
            assert_eq!(read(&after, 0, 8192).await, data(8192, 1), "{model:?}: flushed");
            assert_eq!(read(&after, ZONE, 4096).await, data(4096, 3), "{model:?}: dsync");
            assert!(read(&after, 8192, 8192).await.iter().all(|&b| b == 0), "{model:?}: lost");
            assert_eq!(after.stats().reads, 3, "counters start again");
            let crash = FaultEvent::Crash { cached_writes: 1, mode: CrashMode::LoseUnflushed };
            let events: Vec<_> = after.faults().into_iter().map(|f| f.event).collect();
            assert_eq!(events, vec![crash]);
        });
    }
}

#[test]
fn emulated_zones_start_full_after_a_crash_until_restored() {
    run(|| async {
        let disk = sim(SimModel::Emulated, 5);
        write(&disk, ZONE, &data(8192, 1), WriteFlags::DSYNC).await.unwrap();
        let after = disk.crash();
        assert!(after.zones().iter().all(|z| z.condition == ZoneCondition::Full));
        let err = write(&after, ZONE + 8192, &data(4096, 2), WriteFlags::default()).await;
        assert!(matches!(err, Err(Error::ZoneFull { .. })), "{err:?}");
        after.restore_write_pointer(1, ZONE + 8192).unwrap();
        assert_eq!(after.zone(1).condition, ZoneCondition::Closed);
        write(&after, ZONE + 8192, &data(4096, 2), WriteFlags::default()).await.unwrap();
        after.zone_command(0, ZoneCommand::Reset).await.unwrap();
        write(&after, 0, &data(4096, 3), WriteFlags::default()).await.unwrap();
        assert_eq!(after.refresh_zone(1).await.unwrap().write_pointer, ZONE + 12288);
    });
}

#[test]
fn zoned_model_reports_what_survived_as_the_write_pointer() {
    run(|| async {
        let disk = sim(SimModel::Zoned, 6);
        write(&disk, 0, &data(3 * BLOCK, 1), WriteFlags::default()).await.unwrap();
        disk.flush().await.unwrap();
        write(&disk, 3 * BLOCK as u64, &data(2 * BLOCK, 2), WriteFlags::default()).await.unwrap();
        write(&disk, ZONE, &data(BLOCK, 3), WriteFlags::DSYNC).await.unwrap();
        disk.zone_command(2, ZoneCommand::Open).await.unwrap();
        write(&disk, 3 * ZONE, &data(BLOCK, 4), WriteFlags::default()).await.unwrap();
        disk.zone_command(3, ZoneCommand::Finish).await.unwrap();
        // A dsync write to a zone carries the zone's earlier cached writes with it: the
        // zone's media is written in order.
        write(&disk, 4 * ZONE, &data(BLOCK, 5), WriteFlags::default()).await.unwrap();
        write(&disk, 4 * ZONE + BLOCK as u64, &data(BLOCK, 6), WriteFlags::DSYNC).await.unwrap();

        let lost = disk.crash();
        let z = lost.zones();
        assert_eq!((z[0].write_pointer, z[0].condition), (3 * BLOCK as u64, ZoneCondition::Closed));
        assert_eq!(
            (z[1].write_pointer, z[1].condition),
            (ZONE + BLOCK as u64, ZoneCondition::Closed)
        );
        assert_eq!(z[2].condition, ZoneCondition::Empty, "an open zone comes back closed/empty");
        assert_eq!((z[3].write_pointer, z[3].condition), (4 * ZONE, ZoneCondition::Full));
        assert_eq!(z[4].write_pointer, 4 * ZONE + 2 * BLOCK as u64);
        assert_eq!(read(&lost, 4 * ZONE, BLOCK).await, data(BLOCK, 5));
        assert_eq!(lost.refresh_zone(0).await.unwrap(), z[0]);
        assert!(matches!(lost.restore_write_pointer(0, 0), Err(Error::Unsupported { .. })));
        write(&lost, 3 * BLOCK as u64, &data(BLOCK, 7), WriteFlags::default()).await.unwrap();

        disk.set_faults(plan(|p| p.crash = CrashMode::KeepUnflushed)).unwrap();
        let kept = disk.crash();
        assert_eq!(kept.zone(0).write_pointer, 5 * BLOCK as u64);
        assert_eq!(read(&kept, 3 * BLOCK as u64, 2 * BLOCK).await, data(2 * BLOCK, 2));

        let image = lost.durable_image();
        assert_eq!(image.write_pointers[1], ZONE + BLOCK as u64);
        let reopened = SimDisk::from_image(lost.config().clone(), 9, &image).unwrap();
        assert_eq!(reopened.zones(), lost.crash().zones());
        assert_eq!(reopened.durable_image(), image);
    });
}

/// The fate of the only cached write at the crash, from the log.
fn only_crash_fate(disk: &SimDisk) -> WriteFate {
    let fates: Vec<_> = disk
        .faults()
        .into_iter()
        .filter_map(|f| match f.event {
            FaultEvent::CrashWrite { fate, .. } => Some(fate),
            _ => None,
        })
        .collect();
    assert_eq!(fates.len(), 1, "{fates:?}");
    fates[0].clone()
}

/// Crashes one 8-block cached write with `shape` for several seeds; checks every image
/// against the logged fate and returns the kept-block lists of the torn ones.
fn torn_outcomes(model: SimModel, shape: TearShape) -> Vec<Vec<u32>> {
    let torn = Rc::new(RefCell::new(Vec::new()));
    for seed in 0..40 {
        let torn = torn.clone();
        run(|| async move {
            let disk = sim(model, seed);
            disk.set_faults(plan(|p| p.crash = CrashMode::Tear(shape))).unwrap();
            let bytes = data(8 * BLOCK, 9);
            write(&disk, ZONE, &bytes, WriteFlags::default()).await.unwrap();
            let after = disk.crash();
            let fate = only_crash_fate(&after);
            let kept: Vec<u32> = match &fate {
                WriteFate::Lost => vec![],
                WriteFate::Survived => (0..8).collect(),
                WriteFate::Torn { kept_blocks } => kept_blocks.clone(),
            };
            let image = read(&after, ZONE, 8 * BLOCK).await;
            for (i, got) in image.chunks(BLOCK).enumerate() {
                let want = if kept.contains(&(i as u32)) {
                    &bytes[i * BLOCK..][..BLOCK]
                } else {
                    &[0; BLOCK][..]
                };
                assert_eq!(got, want, "seed {seed}, block {i}, fate {fate:?}");
            }
            if let WriteFate::Torn { kept_blocks } = fate {
                torn.borrow_mut().push(kept_blocks);
            }
        });
    }
    torn.take()
}

#[test]
fn torn_writes_keep_a_block_prefix() {
    let torn = torn_outcomes(SimModel::Emulated, TearShape::Prefix);
    assert!(!torn.is_empty(), "40 seeds tore nothing");
    for kept in &torn {
        assert!(!kept.is_empty() && kept.len() < 8, "{kept:?}");
        assert!(kept.iter().enumerate().all(|(i, &b)| b as usize == i), "not a prefix: {kept:?}");
    }
}

#[test]
fn torn_writes_can_keep_any_subset_of_blocks() {
    let torn = torn_outcomes(SimModel::Emulated, TearShape::Subset);
    let holes = torn.iter().any(|kept| kept.iter().enumerate().any(|(i, &b)| b as usize != i));
    assert!(holes, "no subset tear left a hole: {torn:?}");
    // On a zoned device a zone cannot hold a block without the ones before it.
    for kept in torn_outcomes(SimModel::Zoned, TearShape::Subset) {
        assert!(kept.iter().enumerate().all(|(i, &b)| b as usize == i), "zoned hole: {kept:?}");
    }
}

#[test]
fn split_writes_are_cached_and_torn_per_piece() {
    run(|| async {
        let cfg = SimConfig { max_io_bytes: 16 << 10, ..config(SimModel::Emulated) };
        let disk = SimDisk::new(cfg, 10).unwrap();
        disk.set_faults(plan(|p| p.crash = CrashMode::KeepUnflushed)).unwrap();
        write(&disk, 0, &data(64 << 10, 1), WriteFlags::default()).await.unwrap();
        assert_eq!(disk.cached_writes(), 4);
        let after = disk.crash();
        let pieces = after
            .faults()
            .iter()
            .filter(|f| {
                matches!(
                    f.event,
                    FaultEvent::CrashWrite { op_number: 1, fate: WriteFate::Survived, .. }
                )
            })
            .count();
        assert_eq!(pieces, 4);
        assert_eq!(read(&after, 0, 64 << 10).await, data(64 << 10, 1));
    });
}

#[test]
fn eio_by_write_number_returns_a_media_error_and_writes_nothing() {
    run(|| async {
        let disk = sim(SimModel::Emulated, 11);
        disk.set_faults(plan(|p| p.write_errors = vec![Trigger::Nth(3)])).unwrap();
        for i in 0..4u64 {
            let res = write(&disk, i * 8192, &data(8192, i as u8), WriteFlags::default()).await;
            if i == 2 {
                assert!(
                    matches!(
                        res,
                        Err(Error::Media { op: OpKind::Write, offset: 16384, errno_name: "EIO" })
                    ),
                    "{res:?}"
                );
            } else {
                res.unwrap();
            }
        }
        // Emulated: the host's pointer stays past the failed write, nothing of it is stored.
        assert_eq!(disk.zone(0).write_pointer, 4 * 8192);
        assert!(read(&disk, 16384, 8192).await.iter().all(|&b| b == 0));
        assert_eq!(read(&disk, 24576, 8192).await, data(8192, 3));
        let events: Vec<_> = disk.faults().into_iter().map(|f| f.event).collect();
        let error = FaultEvent::WriteError {
            op_number: 3,
            offset: 16384,
            len_bytes: 8192,
            prefix_bytes: 0,
        };
        assert_eq!(events, vec![error], "emulated: nothing of a failed write is cached");
        assert_eq!(disk.stats().writes, 4);
        assert_eq!(disk.stats().bytes_written, 3 * 8192);
    });
}

#[test]
fn eio_by_range_fails_the_reads_that_touch_it() {
    run(|| async {
        let disk = sim(SimModel::Emulated, 12);
        write(&disk, 0, &data(4 * BLOCK, 1), WriteFlags::DSYNC).await.unwrap();
        let bad = 2 * BLOCK as u64 + 100..2 * BLOCK as u64 + 101;
        disk.set_faults(plan(|p| p.read_errors = vec![Trigger::Range(bad)])).unwrap();
        let (res, _) = disk.read_at(0, AlignedBuf::new(4 * BLOCK, BLOCK), 4 * BLOCK).await;
        assert!(
            matches!(res, Err(Error::Media { op: OpKind::Read, offset: 0, errno_name: "EIO" })),
            "{res:?}"
        );
        let (res, _) = disk.read_at(2 * BLOCK as u64, AlignedBuf::new(BLOCK, BLOCK), BLOCK).await;
        assert!(res.is_err(), "every read of the bad range fails");
        assert_eq!(read(&disk, 0, 2 * BLOCK).await, data(2 * BLOCK, 1));
        assert_eq!(read(&disk, 3 * BLOCK as u64, BLOCK).await, data(4 * BLOCK, 1)[3 * BLOCK..]);
        assert_eq!(disk.faults().len(), 2);
    });
}

#[test]
fn a_failed_flush_makes_nothing_durable() {
    run(|| async {
        let disk = sim(SimModel::Emulated, 13);
        disk.set_faults(plan(|p| p.flush_errors = vec![Trigger::Probability(1.0)])).unwrap();
        write(&disk, 0, &data(BLOCK, 1), WriteFlags::default()).await.unwrap();
        let err = disk.flush().await.unwrap_err();
        assert!(matches!(err, Error::Media { op: OpKind::Fsync, .. }), "{err:?}");
        assert!(disk.crash().durable_image().bytes.iter().all(|&b| b == 0));
    });
}

#[test]
fn zoned_eio_may_leave_a_prefix_and_the_devices_pointer_wins() {
    for seed in 0..8 {
        run(|| async move {
            let disk = sim(SimModel::Zoned, seed);
            // Every operation yields, so the second write is submitted while the first is
            // still in flight (as with a real queue).
            disk.set_faults(plan(|p| {
                p.write_errors = vec![Trigger::Nth(1)];
                p.yield_probability = 1.0;
            }))
            .unwrap();
            let first = {
                let disk = disk.clone();
                let bytes = data(16 * BLOCK, 1);
                spawn(async move { write(&disk, 0, &bytes, WriteFlags::default()).await })
            };
            let second = {
                let disk = disk.clone();
                spawn(async move {
                    write(&disk, 16 * BLOCK as u64, &data(BLOCK, 2), WriteFlags::default()).await
                })
            };
            assert!(matches!(first.await, Err(Error::Media { .. })));
            assert!(matches!(second.await, Err(Error::Media { .. })), "the device refuses it");
            let faults = disk.faults();
            let prefix = match faults[0].event {
                FaultEvent::WriteError { prefix_bytes, .. } => prefix_bytes,
                ref other => panic!("{other:?}"),
            };
            assert!(matches!(faults[1].event, FaultEvent::WriteRefused { op_number: 2, .. }));
            assert_eq!(
                disk.zone(0).write_pointer,
                prefix,
                "seed {seed}: the host re-read the zone"
            );
            let cached = read(&disk, 0, 16 * BLOCK).await;
            assert_eq!(cached[..prefix as usize], data(16 * BLOCK, 1)[..prefix as usize]);
            assert!(cached[prefix as usize..].iter().all(|&b| b == 0));
            write(&disk, prefix, &data(BLOCK, 3), WriteFlags::default()).await.unwrap();
        });
    }
}

#[test]
fn a_flipped_bit_shows_up_in_reads() {
    run(|| async {
        let disk = sim(SimModel::Emulated, 14);
        let bytes = data(2 * BLOCK, 1);
        write(&disk, 0, &bytes, WriteFlags::DSYNC).await.unwrap();
        disk.flip_bit(100, 3).unwrap();
        let got = read(&disk, 0, 2 * BLOCK).await;
        assert_eq!(got[100], bytes[100] ^ 8);
        assert_eq!(got[..100], bytes[..100]);
        assert_eq!(got[101..], bytes[101..]);

        let (offset, bit) = disk.flip_random_bit_in(4096..8192).unwrap();
        assert!((4096..8192).contains(&offset) && bit < 8);
        let again = read(&disk, 0, 2 * BLOCK).await;
        let differing: Vec<usize> = (0..again.len()).filter(|&i| again[i] != got[i]).collect();
        assert_eq!(differing, vec![offset as usize]);
        assert_eq!(again[offset as usize] ^ got[offset as usize], 1 << bit);
        assert_eq!(disk.faults().len(), 2);
        assert!(disk.flip_bit(8 * ZONE, 0).is_err());
    });
}

#[test]
fn a_misdirected_write_lands_elsewhere_and_reports_success() {
    run(|| async {
        let disk = sim(SimModel::Emulated, 15);
        disk.set_faults(plan(|p| {
            p.misdirected_writes = vec![Misdirect {
                when: Trigger::Nth(2),
                target: MisdirectTarget::Offset(3 * ZONE),
            }];
        }))
        .unwrap();
        write(&disk, 0, &data(BLOCK, 1), WriteFlags::DSYNC).await.unwrap();
        write(&disk, BLOCK as u64, &data(BLOCK, 2), WriteFlags::DSYNC).await.unwrap();
        assert_eq!(disk.zone(0).write_pointer, 2 * BLOCK as u64, "the pointer moved as asked");
        let image = disk.durable_image().bytes;
        assert_eq!(image[..BLOCK], data(BLOCK, 1)[..], "other writes land where sent");
        assert!(image[BLOCK..2 * BLOCK].iter().all(|&b| b == 0), "not where it was sent");
        assert_eq!(image[3 * ZONE as usize..][..BLOCK], data(BLOCK, 2)[..]);

        for target in [MisdirectTarget::SameZone, MisdirectTarget::OtherZone] {
            let disk = sim(SimModel::Zoned, 16);
            let misdirect = Misdirect { when: Trigger::Probability(1.0), target };
            disk.set_faults(plan(|p| p.misdirected_writes = vec![misdirect])).unwrap();
            write(&disk, 2 * ZONE, &data(2 * BLOCK, 3), WriteFlags::default()).await.unwrap();
            let landed_at = match disk.faults()[0].event {
                FaultEvent::Misdirected { landed_at: Some(at), offset, .. } => {
                    assert_ne!(at, offset);
                    at
                }
                ref other => panic!("{other:?}"),
            };
            assert_eq!(landed_at / ZONE == 2, target == MisdirectTarget::SameZone, "{target:?}");
            assert_eq!(read(&disk, landed_at, 2 * BLOCK).await, data(2 * BLOCK, 3));
            disk.flush().await.unwrap();
            assert_eq!(
                disk.durable_image().bytes[landed_at as usize..][..2 * BLOCK],
                data(2 * BLOCK, 3)[..]
            );
        }

        let disk = sim(SimModel::Emulated, 17);
        let misdirect = Misdirect { when: Trigger::Nth(1), target: MisdirectTarget::Nowhere };
        disk.set_faults(plan(|p| p.misdirected_writes = vec![misdirect])).unwrap();
        write(&disk, 0, &data(BLOCK, 4), WriteFlags::DSYNC).await.unwrap();
        assert!(disk.cached_image().iter().all(|&b| b == 0), "the data went nowhere");
    });
}

#[test]
fn counters_count_device_operations() {
    run(|| async {
        let disk = sim(SimModel::Emulated, 18);
        let mut tasks = Vec::new();
        for zone in 0..4u64 {
            let disk = disk.clone();
            tasks.push(spawn(async move {
                write(&disk, zone * ZONE, &data(2 * BLOCK, 1), WriteFlags::default()).await
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        disk.flush().await.unwrap();
        read(&disk, 0, BLOCK).await;
        let stats = disk.stats();
        assert_eq!((stats.writes, stats.flushes, stats.reads), (4, 1, 1));
        assert_eq!((stats.bytes_written, stats.bytes_read), (8 * BLOCK as u64, BLOCK as u64));
        assert_eq!(disk.cached_writes(), 0, "one flush made four writes durable");
    });
}

/// What a seeded run leaves: the crash image, the fault log and the completion order.
type Outcome = (Vec<u8>, Vec<String>, Vec<(u64, u64)>);

/// Four tasks writing to their own zones with mixed flushes and dsync, probabilistic EIO and
/// misdirects, then a crash that tears.
fn seeded_run(seed: u64) -> Outcome {
    let outcome = Rc::new(RefCell::new(None));
    let result = outcome.clone();
    run(|| async move {
        let disk = sim(SimModel::Emulated, seed);
        disk.set_faults(FaultPlan {
            write_errors: vec![Trigger::Probability(0.1)],
            misdirected_writes: vec![Misdirect {
                when: Trigger::Probability(0.05),
                target: MisdirectTarget::SameZone,
            }],
            crash: CrashMode::Tear(TearShape::Subset),
            yield_probability: 0.5,
            ..FaultPlan::default()
        })
        .unwrap();
        let order = Rc::new(RefCell::new(Vec::new()));
        let mut tasks = Vec::new();
        for zone in 0..4u64 {
            let (disk, order) = (disk.clone(), order.clone());
            tasks.push(spawn(async move {
                for i in 0..12u64 {
                    let len = BLOCK * (1 + ((zone + i) % 4) as usize);
                    let offset = disk.zone(zone as u32).write_pointer;
                    let flags = if i % 5 == 4 { WriteFlags::DSYNC } else { WriteFlags::default() };
                    let _ = write(&disk, offset, &data(len, (zone * 16 + i) as u8), flags).await;
                    order.borrow_mut().push((zone, i));
                    if zone == 0 && i % 3 == 2 {
                        let _ = disk.flush().await;
                    }
                }
            }));
        }
        for task in tasks {
            task.await;
        }
        let after = disk.crash();
        let log = after.faults().iter().map(ToString::to_string).collect();
        *result.borrow_mut() = Some((after.durable_image().bytes, log, order.take()));
    });
    outcome.take().unwrap()
}

#[test]
fn the_same_seed_replays_exactly_and_other_seeds_differ() {
    let first = seeded_run(42);
    let again = seeded_run(42);
    assert!(first.0 == again.0, "same seed, different crash images");
    assert_eq!(first.1, again.1, "same seed, different fault logs");
    assert_eq!(first.2, again.2, "same seed, different completion order");
    assert!(first.1.iter().any(|line| line.contains("crash")), "{:#?}", first.1);
    assert!(first.1.iter().any(|line| line.contains("EIO")), "{:#?}", first.1);
    assert!(first.0.iter().any(|&b| b != 0), "the run left data behind");

    let others: Vec<Outcome> = (43..47).map(seeded_run).collect();
    assert!(others.iter().any(|o| o.0 != first.0), "other seeds left the same image");
    assert!(others.iter().any(|o| o.1 != first.1), "other seeds injected the same faults");
    assert!(others.iter().any(|o| o.2 != first.2), "other seeds completed in the same order");
}

/// xorshift64 for the random run's choices (separate from the disk's own streams).
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// A block that starts and ends with `stamp` (made nonzero), zeros between.
fn stamped_block(stamp: u64) -> Vec<u8> {
    let stamp = (stamp | 1).to_le_bytes();
    let mut block = vec![0; BLOCK];
    block[..8].copy_from_slice(&stamp);
    block[BLOCK - 8..].copy_from_slice(&stamp);
    block
}

/// Acknowledged-durable blocks (offset to bytes): the model a store's tests would keep.
type Acked = BTreeMap<u64, Vec<u8>>;

fn ack(acked: &mut Acked, offset: u64, bytes: &[u8]) {
    for (i, block) in bytes.chunks(BLOCK).enumerate() {
        acked.insert(offset + (i * BLOCK) as u64, block.to_vec());
    }
}

async fn check_acked(disk: &SimDisk, acked: &Acked, context: &str) {
    for (&offset, want) in acked {
        assert!(read(disk, offset, BLOCK).await == *want, "{context}: block {offset} differs");
    }
}

/// Random writes (some dsync), flushes, resets and tearing crashes with write and flush EIO:
/// every block acknowledged as durable (dsync write, or write completed before a successful
/// flush) must read back after every crash, and a zoned device's pointer must cover it.
async fn random_crash_run(model: SimModel, seed: u64) {
    const ZONES: u32 = 4;
    const ZONE_BYTES: u64 = 64 * BLOCK as u64;
    let cfg = SimConfig {
        zone_size_bytes: ZONE_BYTES,
        zone_capacity_bytes: ZONE_BYTES,
        zone_count: ZONES,
        max_io_bytes: 4 * BLOCK as u32,
        model,
        ..SimConfig::default()
    };
    let shape = if seed % 2 == 0 { TearShape::Prefix } else { TearShape::Subset };
    let faults = FaultPlan {
        write_errors: vec![Trigger::Probability(0.05)],
        flush_errors: vec![Trigger::Probability(0.05)],
        crash: CrashMode::Tear(shape),
        yield_probability: 0.3,
        ..FaultPlan::default()
    };
    let mut disk = SimDisk::new(cfg, seed).unwrap();
    disk.set_faults(faults.clone()).unwrap();
    let (mut acked, mut unflushed) = (Acked::new(), Vec::new());
    let mut rng = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    for step in 0..300 {
        let zone = (next(&mut rng) % u64::from(ZONES)) as u32;
        let zone_span = u64::from(zone) * ZONE_BYTES..u64::from(zone + 1) * ZONE_BYTES;
        let context = format!("{model:?} seed {seed} step {step}");
        match next(&mut rng) % 100 {
            0..60 => {
                let len = BLOCK * (1 + (next(&mut rng) % 6) as usize);
                let z = disk.zone(zone);
                if z.remaining_bytes() < len as u64 {
                    continue;
                }
                let mut bytes = Vec::with_capacity(len);
                for _ in 0..len / BLOCK {
                    bytes.extend_from_slice(&stamped_block(next(&mut rng)));
                }
                let dsync = next(&mut rng) % 4 == 0;
                let flags = WriteFlags { dsync };
                match write(&disk, z.write_pointer, &bytes, flags).await {
                    Ok(()) if dsync => ack(&mut acked, z.write_pointer, &bytes),
                    Ok(()) => unflushed.push((z.write_pointer, bytes)),
                    Err(Error::Media { .. }) => {}
                    Err(err) => panic!("{context}: {err:?}"),
                }
            }
            60..75 => {
                if disk.flush().await.is_ok() {
                    for (offset, bytes) in unflushed.drain(..) {
                        ack(&mut acked, offset, &bytes);
                    }
                }
            }
            75..85 => {
                disk.zone_command(zone, ZoneCommand::Reset).await.unwrap();
                acked.retain(|offset, _| !zone_span.contains(offset));
                unflushed.retain(|(offset, _)| !zone_span.contains(offset));
            }
            85..90 => {
                disk = disk.crash();
                disk.set_faults(faults.clone()).unwrap();
                unflushed.clear();
                check_acked(&disk, &acked, &context).await;
                for zone in 0..ZONES {
                    let start = u64::from(zone) * ZONE_BYTES;
                    let acked_end = acked
                        .range(start..start + ZONE_BYTES)
                        .next_back()
                        .map_or(start, |(&offset, _)| offset + BLOCK as u64);
                    match model {
                        SimModel::Emulated => disk.restore_write_pointer(zone, acked_end).unwrap(),
                        SimModel::Zoned => {
                            assert!(disk.zone(zone).write_pointer >= acked_end, "{context}");
                        }
                    }
                }
            }
            _ => {
                let pick = next(&mut rng) as usize % acked.len().max(1);
                if let Some((&offset, want)) = acked.iter().nth(pick) {
                    assert!(read(&disk, offset, BLOCK).await == *want, "{context}: {offset}");
                }
            }
        }
    }
    check_acked(&disk, &acked, &format!("{model:?} seed {seed} end")).await;
    assert!(!acked.is_empty(), "{model:?} seed {seed}: nothing was acknowledged");
}

#[test]
fn acknowledged_data_survives_random_crashes_and_faults() {
    for model in MODELS {
        for seed in 1..=25 {
            run(|| random_crash_run(model, seed));
        }
    }
}

#[test]
fn bad_configs_and_plans_are_refused_with_the_reason() {
    let cfg = SimConfig { zone_capacity_bytes: 2 * ZONE, ..config(SimModel::Zoned) };
    let err = SimDisk::new(cfg, 0).unwrap_err();
    assert!(err.to_string().contains("zone_capacity_bytes"), "{err}");
    let disk = SimDisk::new(config(SimModel::Zoned), 0).unwrap();
    let err = disk.set_faults(plan(|p| p.read_errors = vec![Trigger::Nth(0)])).unwrap_err();
    assert!(err.to_string().contains("Nth"), "{err}");
    let mut image = disk.durable_image();
    image.write_pointers[0] = 12345;
    assert!(SimDisk::from_image(config(SimModel::Zoned), 0, &image).is_err());
}
