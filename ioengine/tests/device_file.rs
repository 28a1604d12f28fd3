//! The file backend with emulated zones, end to end through the ring: writes only at the
//! write pointer, typed errors elsewhere, full zones, reset, finish, open/active limits,
//! in-order queue-depth > 1 writes (split into pieces), and a reopen that keeps the layout.

#![allow(clippy::unwrap_used, reason = "tests: a failed step should panic with its error")]

use std::path::Path;
use std::rc::Rc;

use ioengine::buf::AlignedBuf;
use ioengine::device::{Device, DeviceKind, Disk, DiskOptions, ZoneCommand, ZoneCondition};
use ioengine::op::WriteFlags;
use ioengine::{Core, Error, spawn};

const ZONE: u64 = 1 << 20;
const SIZE: u64 = 8 * ZONE;

fn options(fresh: bool) -> DiskOptions {
    DiskOptions {
        zone_size_bytes: ZONE,
        create_size_bytes: Some(SIZE),
        fresh,
        ..DiskOptions::default()
    }
}

fn block(len: usize, seed: u8) -> AlignedBuf {
    let mut buf = AlignedBuf::new(len, 4096);
    let bytes: Vec<u8> = (0..len).map(|i| (i / 4096) as u8 ^ seed).collect();
    buf.extend_from_slice(&bytes);
    buf
}

async fn read(disk: &Disk, offset: u64, len: usize) -> AlignedBuf {
    let (res, buf) = disk.read_at(offset, AlignedBuf::new(len, 4096), len).await;
    res.unwrap();
    buf
}

fn with_disk<F, Fut>(path: &Path, opts: DiskOptions, f: F)
where
    F: FnOnce(Rc<Disk>) -> Fut + 'static,
    Fut: std::future::Future<Output = ()> + 'static,
{
    let core = Core::new(64).unwrap();
    let disk = Rc::new(Disk::open(path, &opts).unwrap());
    core.block_on(f(disk));
}

#[test]
fn fresh_file_has_the_asked_layout() {
    let dir = tempfile::tempdir().unwrap();
    with_disk(&dir.path().join("d"), options(true), |disk| async move {
        let g = disk.geometry();
        assert_eq!(g.kind, DeviceKind::File);
        assert_eq!(g.zone_count, 8);
        assert_eq!(g.zone_size_bytes, ZONE);
        assert_eq!(g.logical_block_bytes, 4096);
        assert!(disk.zones().iter().all(|z| z.condition == ZoneCondition::Empty));
    });
    assert_eq!(std::fs::metadata(dir.path().join("d")).unwrap().len(), SIZE);
}

#[test]
fn writes_only_at_the_write_pointer() {
    let dir = tempfile::tempdir().unwrap();
    with_disk(&dir.path().join("d"), options(true), |disk| async move {
        let (res, _) = disk.write_at(ZONE, block(8192, 1), WriteFlags::DSYNC).await;
        res.unwrap();
        assert_eq!(disk.zone(1).write_pointer, ZONE + 8192);
        assert_eq!(disk.zone(1).condition, ZoneCondition::ImplicitOpen);

        let (res, _) = disk.write_at(ZONE + 4 * 4096, block(4096, 2), WriteFlags::default()).await;
        let err = res.unwrap_err();
        assert!(
            matches!(err, Error::NotAtWritePointer { zone: 1, write_pointer, .. } if write_pointer == ZONE + 8192),
            "{err:?}"
        );
        let (res, _) = disk.write_at(ZONE, block(4096, 2), WriteFlags::default()).await;
        assert!(
            matches!(res, Err(Error::NotAtWritePointer { .. })),
            "no overwrite behind the pointer"
        );

        let mut odd = AlignedBuf::new(4096, 4096);
        odd.extend_from_slice(&[0; 512]);
        let (res, _) = disk.write_at(ZONE + 8192, odd, WriteFlags::default()).await;
        assert!(matches!(res, Err(Error::Unaligned { what: "length", .. })), "{res:?}");
        assert_eq!(&read(&disk, ZONE, 8192).await[..], &block(8192, 1)[..]);
    });
}

#[test]
fn a_full_zone_refuses_writes_until_reset() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options(true);
    opts.zone_capacity_bytes = Some(ZONE / 2);
    with_disk(&dir.path().join("d"), opts, |disk| async move {
        let (res, _) = disk.write_at(0, block((ZONE / 2) as usize, 3), WriteFlags::default()).await;
        res.unwrap();
        assert_eq!(disk.zone(0).condition, ZoneCondition::Full);
        let (res, _) = disk.write_at(ZONE / 2, block(4096, 3), WriteFlags::default()).await;
        assert!(matches!(res, Err(Error::ZoneFull { zone: 0, .. })), "{res:?}");

        disk.zone_command(0, ZoneCommand::Reset).await.unwrap();
        assert_eq!(disk.zone(0).condition, ZoneCondition::Empty);
        assert!(read(&disk, 0, 65536).await.iter().all(|&b| b == 0), "reset discards the data");
        let (res, _) = disk.write_at(0, block(4096, 4), WriteFlags::default()).await;
        res.unwrap();
    });
}

#[test]
fn finish_makes_a_zone_full() {
    let dir = tempfile::tempdir().unwrap();
    with_disk(&dir.path().join("d"), options(true), |disk| async move {
        let (res, _) = disk.write_at(2 * ZONE, block(4096, 5), WriteFlags::default()).await;
        res.unwrap();
        disk.zone_command(2, ZoneCommand::Finish).await.unwrap();
        let zone = disk.zone(2);
        assert_eq!(zone.condition, ZoneCondition::Full);
        assert_eq!(zone.write_pointer, 3 * ZONE);
        assert_eq!(disk.open_and_active(), (0, 0));
        let (res, _) = disk.write_at(2 * ZONE + 4096, block(4096, 5), WriteFlags::default()).await;
        assert!(matches!(res, Err(Error::ZoneFull { .. })), "{res:?}");
    });
}

#[test]
fn open_and_active_limits_are_honoured() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options(true);
    opts.max_open_zones = 2;
    opts.max_active_zones = 3;
    with_disk(&dir.path().join("d"), opts, |disk| async move {
        for zone in 0..2u64 {
            let (res, _) = disk.write_at(zone * ZONE, block(4096, 6), WriteFlags::default()).await;
            res.unwrap();
        }
        let (res, _) = disk.write_at(2 * ZONE, block(4096, 6), WriteFlags::default()).await;
        assert!(matches!(res, Err(Error::TooManyOpenZones { max: 2, .. })), "{res:?}");
        disk.zone_command(0, ZoneCommand::Close).await.unwrap();
        let (res, _) = disk.write_at(2 * ZONE, block(4096, 6), WriteFlags::default()).await;
        res.unwrap();
        // Three active (zone 0 closed by its owner), two open.
        assert_eq!(disk.open_and_active(), (2, 3));
        let (res, _) = disk.write_at(3 * ZONE, block(4096, 6), WriteFlags::default()).await;
        assert!(matches!(res, Err(Error::TooManyActiveZones { max: 3, .. })), "{res:?}");
        disk.zone_command(0, ZoneCommand::Finish).await.unwrap();
        disk.zone_command(1, ZoneCommand::Finish).await.unwrap();
        let (res, _) = disk.write_at(3 * ZONE, block(4096, 6), WriteFlags::default()).await;
        res.unwrap();
        // Zones 2 and 3 are open: an explicit open of a third is refused.
        let err = disk.zone_command(4, ZoneCommand::Open).await.unwrap_err();
        assert!(matches!(err, Error::TooManyOpenZones { max: 2, .. }), "{err:?}");
    });
}

#[test]
fn many_writes_in_flight_to_one_zone_land_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options(true);
    // Split every 64 KiB write into four pieces, all in flight together.
    opts.max_io_bytes = Some(16 << 10);
    with_disk(&dir.path().join("d"), opts, |disk| async move {
        let mut tasks = Vec::new();
        for i in 0..16u64 {
            let disk = disk.clone();
            tasks.push(spawn(async move {
                let (res, _) =
                    disk.write_at(i * 65536, block(65536, i as u8), WriteFlags::default()).await;
                res
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(disk.zone(0).write_pointer, 16 * 65536);
        for i in 0..16u64 {
            assert_eq!(
                &read(&disk, i * 65536, 65536).await[..],
                &block(65536, i as u8)[..],
                "write {i}"
            );
        }
    });
}

#[test]
fn reopen_keeps_the_layout_and_the_data() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d");
    with_disk(&path, options(true), |disk| async move {
        let (res, _) = disk.write_at(ZONE, block(12288, 7), WriteFlags::DSYNC).await;
        res.unwrap();
    });
    let before = Disk::open(&path, &options(true)).unwrap().geometry().clone();
    with_disk(&path, options(false), move |disk| async move {
        assert_eq!(disk.geometry(), &before);
        // Write pointers are not known to the device layer: every zone is closed to writes
        // until the owner restores what it recovered.
        assert!(disk.zones().iter().all(|z| z.condition == ZoneCondition::Full));
        let (res, _) = disk.write_at(ZONE, block(4096, 8), WriteFlags::default()).await;
        assert!(matches!(res, Err(Error::ZoneFull { .. })), "nothing overwritten by accident");
        assert_eq!(&read(&disk, ZONE, 12288).await[..], &block(12288, 7)[..]);
        disk.restore_write_pointer(1, ZONE + 12288).unwrap();
        assert_eq!(disk.zone(1).condition, ZoneCondition::Closed);
        let (res, _) = disk.write_at(ZONE + 12288, block(4096, 8), WriteFlags::default()).await;
        res.unwrap();
    });
}

#[test]
fn reads_and_writes_outside_the_device_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    with_disk(&dir.path().join("d"), options(true), |disk| async move {
        let (res, _) = disk.read_at(SIZE, AlignedBuf::new(4096, 4096), 4096).await;
        assert!(matches!(res, Err(Error::OutOfRange { .. })), "{res:?}");
        let (res, _) = disk.write_at(SIZE, block(4096, 1), WriteFlags::default()).await;
        assert!(matches!(res, Err(Error::OutOfRange { .. })), "{res:?}");
    });
}

#[test]
fn bad_options_name_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options(true);
    opts.zone_size_bytes = 1000;
    let err = Disk::open(&dir.path().join("d"), &opts).unwrap_err();
    assert!(err.to_string().contains("zone size 1000"), "{err}");
    let err = Disk::open(&dir.path().join("missing"), &DiskOptions::default()).unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err:?}");
}
