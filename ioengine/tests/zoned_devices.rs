//! The zoned backend against real Linux zoned block devices: a ZNS namespace (QEMU nvme-ns)
//! and a host-managed null_blk disk with conventional zones first (SMR-like). This host's
//! kernel has no zoned support, so the test binary runs inside ../shared/zoned-vm/run, which
//! sets ZONED_ZNS_DEV and ZONED_SMR_DEV:
//!
//! ```text
//! CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER="../shared/zoned-vm/run -e SHINGLE_REQUIRE_ZONED=1 --" \
//!     cargo test -p shingle-ioengine --test zoned_devices
//! ```
//!
//! Outside the VM (no variables) the tests say so and pass, unless SHINGLE_REQUIRE_ZONED=1,
//! which CI sets so a harness that lost its devices fails loudly.

#![allow(clippy::unwrap_used, reason = "tests: a failed step should panic with its error")]

use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use ioengine::buf::{AlignedBuf, IoBuf};
use ioengine::device::{
    Device, DeviceKind, Disk, DiskOptions, Zone, ZoneCommand, ZoneCondition, ZoneIndex, ZoneType,
};
use ioengine::op::WriteFlags;
use ioengine::{Core, Error, spawn};

fn device(var: &str) -> Option<PathBuf> {
    match std::env::var_os(var) {
        Some(path) => Some(PathBuf::from(path)),
        None => {
            let required = std::env::var("SHINGLE_REQUIRE_ZONED").is_ok_and(|v| v == "1");
            assert!(!required, "{var} is not set: this test must run inside zoned-vm/run");
            eprintln!("{var} not set (not inside zoned-vm/run): skipped");
            None
        }
    }
}

/// A queue attribute read straight from sysfs, independently of the code under test.
fn sysfs(dev: &Path, attr: &str) -> u64 {
    let name = dev.file_name().unwrap().to_str().unwrap();
    let text = std::fs::read_to_string(format!("/sys/block/{name}/queue/{attr}")).unwrap();
    text.trim().parse().unwrap_or_else(|_| panic!("{attr}: {text:?}"))
}

fn block(len: usize, seed: u8) -> AlignedBuf {
    let mut buf = AlignedBuf::new(len, 4096);
    let bytes: Vec<u8> = (0..len).map(|i| ((i / 4096) as u8).wrapping_add(seed)).collect();
    buf.extend_from_slice(&bytes);
    buf
}

async fn read(disk: &Disk, offset: u64, len: usize) -> AlignedBuf {
    let (res, buf) = disk.read_at(offset, AlignedBuf::new(len, 4096), len).await;
    res.unwrap();
    buf
}

async fn write(disk: &Disk, offset: u64, buf: AlignedBuf) {
    let (res, _) = disk.write_at(offset, buf, WriteFlags::default()).await;
    res.unwrap_or_else(|e| panic!("write at {offset}: {e}"));
}

/// The cached zone and what the device reports now must agree.
async fn assert_matches_device(disk: &Disk, zone: ZoneIndex) -> Zone {
    let cached = disk.zone(zone);
    let fresh = disk.refresh_zone(zone).await.unwrap();
    assert_eq!(cached.condition, fresh.condition, "zone {zone}: {cached:?} vs device {fresh:?}");
    assert_eq!(cached.write_pointer, fresh.write_pointer, "zone {zone} write pointer");
    fresh
}

/// pwrite(2) on a second, non-exclusive fd: moves the device's write pointer behind the
/// backend's back, as another writer would.
fn write_behind_the_back(dev: &Path, offset: u64) {
    let file = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(dev)
        .expect("a plain open succeeds next to the O_EXCL one");
    let buf = block(4096, 0xEE);
    // SAFETY: writes 4096 bytes from a live, 4096-aligned buffer to an fd we own.
    let n = unsafe { libc::pwrite(file.as_raw_fd(), buf.stable_ptr().cast(), 4096, offset as i64) };
    assert_eq!(n, 4096, "raw write at the device write pointer");
}

fn geometry_matches_sysfs(dev: &Path, disk: &Disk) {
    let g = disk.geometry();
    assert_eq!(g.kind, DeviceKind::Zoned);
    assert_eq!(g.zone_size_bytes, sysfs(dev, "chunk_sectors") * 512);
    assert_eq!(u64::from(g.zone_count), sysfs(dev, "nr_zones"));
    assert_eq!(u64::from(g.logical_block_bytes), sysfs(dev, "logical_block_size"));
    assert_eq!(u64::from(g.max_io_bytes), sysfs(dev, "max_sectors_kb") * 1024);
    assert_eq!(u64::from(g.max_open_zones), sysfs(dev, "max_open_zones"));
    assert_eq!(u64::from(g.max_active_zones), sysfs(dev, "max_active_zones"));
}

/// Everything the issue asks of a zoned device, in zones from `first` on.
async fn exercise(dev: PathBuf, disk: Rc<Disk>, first: ZoneIndex) {
    let g = disk.geometry().clone();
    let zone_start = |z: ZoneIndex| g.zone_start(z);

    // Writes at the write pointer move it; the device agrees.
    let z = first;
    assert_eq!(disk.zone(z).condition, ZoneCondition::Empty);
    write(&disk, zone_start(z), block(8192, 1)).await;
    let fresh = assert_matches_device(&disk, z).await;
    assert_eq!(fresh.write_pointer, zone_start(z) + 8192);
    assert_eq!(fresh.condition, ZoneCondition::ImplicitOpen);

    // A misplaced write is refused with a typed error before it reaches the device.
    let (res, _) =
        disk.write_at(zone_start(z) + 65536, block(4096, 2), WriteFlags::default()).await;
    assert!(matches!(res, Err(Error::NotAtWritePointer { .. })), "{res:?}");

    // Someone else moves the write pointer: the device refuses our now-misplaced write, the
    // error is typed, and the backend re-reads the pointer from the device.
    write_behind_the_back(&dev, zone_start(z) + 8192);
    let (res, _) = disk.write_at(zone_start(z) + 8192, block(4096, 3), WriteFlags::DSYNC).await;
    let err = res.unwrap_err();
    assert!(matches!(err, Error::Media { .. } | Error::Invalid { .. }), "{err:?}");
    assert_eq!(
        disk.zone(z).write_pointer,
        zone_start(z) + 12288,
        "pointer re-read after the error"
    );
    write(&disk, zone_start(z) + 12288, block(4096, 4)).await;
    assert_matches_device(&disk, z).await;
    disk.zone_command(z, ZoneCommand::Finish).await.unwrap();

    // Queue depth > 1 to one zone: 32 writes in flight, plus one large write split into
    // max_sectors_kb pieces; everything lands in order.
    let z = first + 1;
    let mut tasks = Vec::new();
    for i in 0..32u64 {
        let disk = disk.clone();
        let offset = zone_start(z) + i * 65536;
        tasks.push(spawn(async move { write(&disk, offset, block(65536, i as u8)).await }));
    }
    let big_offset = zone_start(z) + 32 * 65536;
    let big_len = 4 * g.max_io_bytes as usize + 8192;
    let d = disk.clone();
    tasks.push(spawn(async move { write(&d, big_offset, block(big_len, 0x55)).await }));
    for task in tasks {
        task.await;
    }
    for i in 0..32u64 {
        let got = read(&disk, zone_start(z) + i * 65536, 65536).await;
        assert_eq!(&got[..], &block(65536, i as u8)[..], "write {i} landed out of order");
    }
    assert_eq!(&read(&disk, big_offset, big_len).await[..], &block(big_len, 0x55)[..]);
    let fresh = assert_matches_device(&disk, z).await;
    assert_eq!(fresh.write_pointer, big_offset + big_len as u64);

    // Finish and reset, confirmed by the device.
    disk.zone_command(z, ZoneCommand::Finish).await.unwrap();
    assert_eq!(assert_matches_device(&disk, z).await.condition, ZoneCondition::Full);
    // (A full zone's reported write pointer is its end: aim inside the zone.)
    let inside = zone_start(z) + disk.zone(z).capacity_bytes - 4096;
    let (res, _) = disk.write_at(inside, block(4096, 5), WriteFlags::default()).await;
    assert!(matches!(res, Err(Error::ZoneFull { .. })), "{res:?}");
    disk.zone_command(z, ZoneCommand::Reset).await.unwrap();
    let fresh = assert_matches_device(&disk, z).await;
    assert_eq!((fresh.condition, fresh.write_pointer), (ZoneCondition::Empty, zone_start(z)));
    disk.zone_command(first, ZoneCommand::Reset).await.unwrap();

    // Open limit: explicitly open max_open zones; one more is refused; the device agrees.
    let max_open = g.max_open_zones;
    assert!(max_open > 0, "both test devices have an open limit");
    let opened: Vec<ZoneIndex> = (first..first + max_open).collect();
    for &zone in &opened {
        disk.zone_command(zone, ZoneCommand::Open).await.unwrap();
        assert_eq!(assert_matches_device(&disk, zone).await.condition, ZoneCondition::ExplicitOpen);
    }
    let next = first + max_open;
    let err = disk.zone_command(next, ZoneCommand::Open).await.unwrap_err();
    assert!(matches!(err, Error::TooManyOpenZones { .. }), "{err:?}");
    let (res, _) = disk.write_at(zone_start(next), block(4096, 6), WriteFlags::default()).await;
    assert!(matches!(res, Err(Error::TooManyOpenZones { .. })), "{res:?}");
    for &zone in &opened {
        disk.zone_command(zone, ZoneCommand::Close).await.unwrap();
        // ZBC returns an unwritten closed zone to Empty; ZNS keeps it Closed (and active)
        // until reset. The table follows the device either way.
        let condition = assert_matches_device(&disk, zone).await.condition;
        assert!(matches!(condition, ZoneCondition::Empty | ZoneCondition::Closed), "{condition:?}");
        disk.zone_command(zone, ZoneCommand::Reset).await.unwrap();
        assert_eq!(disk.zone(zone).condition, ZoneCondition::Empty);
    }

    // Active limit (ZNS): write, then close, one zone after another up to the limit.
    let max_active = g.max_active_zones;
    if max_active > 0 {
        let used: Vec<ZoneIndex> = (first..first + max_active).collect();
        for &zone in &used {
            write(&disk, zone_start(zone), block(4096, 7)).await;
            disk.zone_command(zone, ZoneCommand::Close).await.unwrap();
            assert_eq!(assert_matches_device(&disk, zone).await.condition, ZoneCondition::Closed);
        }
        let next = first + max_active;
        let (res, _) = disk.write_at(zone_start(next), block(4096, 8), WriteFlags::default()).await;
        assert!(matches!(res, Err(Error::TooManyActiveZones { .. })), "{res:?}");
        // The device itself refuses to activate one more zone: write behind our back fails.
        let file = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open(&dev)
            .unwrap();
        let buf = block(4096, 9);
        // SAFETY: writes 4096 bytes from a live aligned buffer to an fd we own.
        let n = unsafe {
            libc::pwrite(file.as_raw_fd(), buf.stable_ptr().cast(), 4096, zone_start(next) as i64)
        };
        assert_eq!(n, -1, "the device enforces max_active_zones too");
        for &zone in &used {
            disk.zone_command(zone, ZoneCommand::Reset).await.unwrap();
        }
    }
    disk.flush().await.unwrap();
}

#[test]
fn zns_namespace() {
    let Some(dev) = device("ZONED_ZNS_DEV") else { return };
    let disk = Rc::new(Disk::open(&dev, &DiskOptions::default()).unwrap());
    geometry_matches_sysfs(&dev, &disk);
    let z0 = disk.zone(0);
    assert_eq!(z0.zone_type, ZoneType::SequentialRequired);
    assert!(z0.capacity_bytes < disk.geometry().zone_size_bytes, "ZNS capacity below zone size");
    assert_eq!(z0.capacity_bytes, 48 << 20);
    let core = Core::new(64).unwrap();
    core.block_on(exercise(dev, disk, 0));
}

#[test]
fn smr_like_null_blk() {
    let Some(dev) = device("ZONED_SMR_DEV") else { return };
    let disk = Rc::new(Disk::open(&dev, &DiskOptions::default()).unwrap());
    geometry_matches_sysfs(&dev, &disk);
    let zones = disk.zones();
    let conventional = zones.iter().take_while(|z| z.zone_type == ZoneType::Conventional).count();
    assert_eq!(conventional, 2, "conventional zones first, as on an SMR drive");
    assert!(zones[..2].iter().all(|z| z.condition == ZoneCondition::NotWritePointer));
    let core = Core::new(64).unwrap();
    let d = disk.clone();
    core.block_on(async move {
        // Conventional zones take writes anywhere.
        write(&d, 1 << 20, block(8192, 10)).await;
        write(&d, 0, block(4096, 11)).await;
        assert_eq!(&read(&d, 1 << 20, 8192).await[..], &block(8192, 10)[..]);
        let err = d.zone_command(0, ZoneCommand::Reset).await.unwrap_err();
        assert!(matches!(err, Error::ZoneCondition { .. }), "{err:?}");
    });
    core.block_on(exercise(dev, disk, conventional as ZoneIndex));
}
