//! The conventional block-device backend on a real kernel block device: a loop device over a
//! file (this host's kernel has loop but no zoned support). Needs root to attach the loop
//! device; CI runs as root. As an ordinary user the test says so and does nothing.

#![allow(clippy::unwrap_used, reason = "tests: a failed step should panic with its error")]

use std::path::PathBuf;
use std::process::Command;
use std::rc::Rc;

use ioengine::buf::AlignedBuf;
use ioengine::device::{Device, DeviceKind, Disk, DiskOptions, ZoneCommand, ZoneCondition};
use ioengine::op::WriteFlags;
use ioengine::{Core, Error};

const ZONE: u64 = 4 << 20;

/// A loop device attached to a backing file, detached on drop.
struct Loop {
    dev: PathBuf,
    _dir: tempfile::TempDir,
}

impl Loop {
    fn attach(size: u64, sector_bytes: u32) -> Option<Loop> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("device_block: not root, cannot attach a loop device; skipped");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let backing = dir.path().join("backing");
        std::fs::File::create(&backing).unwrap().set_len(size).unwrap();
        let out = Command::new("losetup")
            .args(["--find", "--show", "--direct-io=on", "--sector-size"])
            .arg(sector_bytes.to_string())
            .arg(&backing)
            .output()
            .expect("losetup (util-linux) is installed");
        assert!(out.status.success(), "losetup failed: {}", String::from_utf8_lossy(&out.stderr));
        let dev = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
        Some(Loop { dev, _dir: dir })
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.dev).status();
    }
}

fn block(len: usize, seed: u8) -> AlignedBuf {
    let mut buf = AlignedBuf::new(len, 4096);
    let bytes: Vec<u8> = (0..len).map(|i| (i % 251) as u8 ^ seed).collect();
    buf.extend_from_slice(&bytes);
    buf
}

fn run_on_loop(sector_bytes: u32) {
    let Some(lo) = Loop::attach(8 * ZONE + 1234 * 512, sector_bytes) else { return };
    let opts = DiskOptions { zone_size_bytes: ZONE, fresh: true, ..DiskOptions::default() };
    let core = Core::new(64).unwrap();
    let disk = Rc::new(Disk::open(&lo.dev, &opts).unwrap());
    let g = disk.geometry().clone();
    assert_eq!(g.kind, DeviceKind::Block);
    assert_eq!(g.logical_block_bytes, sector_bytes, "block size read from the device");
    assert_eq!(g.zone_count, 8, "the partial trailing zone is not used");
    assert!(g.max_io_bytes >= sector_bytes && g.max_io_bytes % sector_bytes == 0);

    // A second open of the same device is refused (O_EXCL): no two owners.
    let err = Disk::open(&lo.dev, &opts).unwrap_err();
    assert!(err.to_string().contains("is in use"), "{err}");

    let d = disk.clone();
    core.block_on(async move {
        let len = 3 * g.max_io_bytes as usize + 4096; // split into pieces
        let (res, _) = d.write_at(ZONE, block(len, 9), WriteFlags::DSYNC).await;
        res.unwrap();
        let (res, back) = d.read_at(ZONE, AlignedBuf::new(len, 4096), len).await;
        res.unwrap();
        assert_eq!(&back[..], &block(len, 9)[..]);
        let (res, _) = d.write_at(ZONE, block(4096, 1), WriteFlags::default()).await;
        assert!(matches!(res, Err(Error::NotAtWritePointer { .. })), "{res:?}");
        d.flush().await.unwrap();
        d.zone_command(1, ZoneCommand::Reset).await.unwrap();
        assert_eq!(d.zone(1).condition, ZoneCondition::Empty);
        let (res, _) = d.write_at(ZONE, block(4096, 2), WriteFlags::default()).await;
        res.unwrap();
    });
}

#[test]
fn loop_device_with_4k_sectors() {
    run_on_loop(4096);
}

#[test]
fn loop_device_with_512_byte_sectors() {
    run_on_loop(512);
}
