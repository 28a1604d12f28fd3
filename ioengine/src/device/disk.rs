//! The real backends behind [`Device`]: a regular file or a conventional block device with
//! emulated zones, or a Linux zoned block device. All I/O is O_DIRECT through the core's ring;
//! zone management (rare) runs on a helper thread so the ring keeps turning.

use std::cell::RefCell;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;
use std::rc::Rc;

use smallvec::SmallVec;

use super::zones::ZoneTable;
use super::{
    Device, DeviceKind, Geometry, Zone, ZoneCommand, ZoneCondition, ZoneIndex, ZoneType,
    display_path,
};
use crate::blocking::unblock;
use crate::buf::{IoBuf, IoBufMut};
use crate::error::{Error, OpKind, Result};
use crate::op::{self, SharedFd, SyncKind, WriteFlags};
use crate::sys::blkdev::{self, RawZone, ZoneMgmt};
use crate::sys::sysfs::{self, ZonedModel};

/// Alignment and block size used for regular files: 4096 divides into every page and is a
/// multiple of every logical block size up to 4 KiB, so a file-backed disk's layout is valid
/// whatever device the file system sits on.
pub const FILE_BLOCK_BYTES: u32 = 4096;
/// Largest single I/O on a regular file (the kernel splits further as it needs).
pub const FILE_MAX_IO_BYTES: u32 = 8 << 20;
/// Writes split into more pieces than this spill their bookkeeping to the heap.
const INLINE_PIECES: usize = 8;

/// How to open a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskOptions {
    /// Emulated backends: bytes per zone (a multiple of the logical block size). Ignored on
    /// zoned devices, whose zones come from the kernel.
    pub zone_size_bytes: u64,
    /// Emulated backends: writable bytes per zone (default: the zone size).
    pub zone_capacity_bytes: Option<u64>,
    /// Emulated backends: open-zone limit (0: none).
    pub max_open_zones: u32,
    /// Emulated backends: active-zone limit (0: none).
    pub max_active_zones: u32,
    /// Emulated backends: split writes larger than this (default: the device's limit; a
    /// smaller value is used, a larger one is capped at the device's).
    pub max_io_bytes: Option<u32>,
    /// Regular files: create the file with this size (space reserved with fallocate) when it
    /// does not exist.
    pub create_size_bytes: Option<u64>,
    /// Emulated backends: the zones are empty (a fresh format). Otherwise every emulated zone
    /// starts Full until its owner restores the write pointer it recovered
    /// ([`Disk::restore_write_pointer`]) or resets it: nothing can be overwritten by accident.
    pub fresh: bool,
}

impl Default for DiskOptions {
    fn default() -> Self {
        DiskOptions {
            zone_size_bytes: 256 << 20,
            zone_capacity_bytes: None,
            max_open_zones: 0,
            max_active_zones: 0,
            max_io_bytes: None,
            create_size_bytes: None,
            fresh: false,
        }
    }
}

/// A device opened for O_DIRECT I/O through the core's ring.
pub struct Disk {
    name: String,
    file: SharedFd,
    geometry: Geometry,
    table: RefCell<ZoneTable>,
}

impl std::fmt::Debug for Disk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Disk").field("name", &self.name).field("geometry", &self.geometry).finish()
    }
}

impl Disk {
    /// Opens a regular file, a conventional block device or a zoned block device. Block
    /// devices are opened O_EXCL, so a mounted or otherwise claimed device is refused.
    pub fn open(path: &Path, options: &DiskOptions) -> Result<Disk> {
        let name = display_path(path);
        let bad = |reason: String| Error::BadDevice { path: name.clone(), reason };
        let file = open_direct(path, options).map_err(|e| match e.raw_os_error() {
            Some(libc::EBUSY) => Error::DeviceInUse {
                path: name.clone(),
                how: "mounted, or opened exclusively by another process",
            },
            _ => Error::from_io(OpKind::Open, 0, &e),
        })?;
        let st = crate::sys::fstat(&file).map_err(|e| Error::from_io(OpKind::Open, 0, &e))?;
        let (geometry, table) = match st.st_mode & libc::S_IFMT {
            libc::S_IFREG => {
                // Files have no O_EXCL: an advisory lock keeps a second daemon (or an admin
                // command) off a file this process serves, for as long as the fd is open.
                lock_exclusive(&file).map_err(|e| match e.raw_os_error() {
                    Some(libc::EWOULDBLOCK) => Error::DeviceInUse {
                        path: name.clone(),
                        how: "another process (a daemon, an admin command) holds its lock",
                    },
                    _ => Error::from_io(OpKind::Open, 0, &e),
                })?;
                emulated_file(&file, st.st_size as u64, options).map_err(bad)?
            }
            libc::S_IFBLK => {
                let attrs = sysfs::queue_attrs(st.st_rdev)
                    .map_err(|e| bad(format!("cannot read its sysfs queue attributes: {e}")))?;
                match attrs.zoned {
                    ZonedModel::None => emulated_block(&file, &attrs, options).map_err(bad)?,
                    ZonedModel::HostManaged | ZonedModel::HostAware => {
                        zoned_block(&file, &attrs).map_err(bad)?
                    }
                }
            }
            _ => return Err(bad("not a regular file or a block device".into())),
        };
        Ok(Disk { name, file: SharedFd::new(file), geometry, table: RefCell::new(table) })
    }

    /// The open/active accounting, for tests and status output.
    pub fn open_and_active(&self) -> (u32, u32) {
        let table = self.table.borrow();
        (table.open_count(), table.active_count())
    }

    fn check_io(&self, offset: u64, len: usize, ptr: *const u8) -> Result<()> {
        self.geometry.check_io(offset, len, ptr)
    }

    /// After a failed write: a zoned device's write pointer is re-read (the device is the
    /// truth; a partial write may have moved it).
    async fn after_write_error(&self, zone: ZoneIndex) {
        if self.geometry.kind != DeviceKind::Zoned {
            return;
        }
        if let Err(err) = self.refresh_zone(zone).await {
            tracing::warn!(disk = %self.name, zone, error = %err, "zone report after a failed write failed");
        }
    }

    fn dup_fd(&self) -> Result<OwnedFd> {
        self.file_fd().try_clone_to_owned().map_err(|e| Error::from_io(OpKind::Ioctl, 0, &e))
    }

    fn file_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        // SAFETY: the fd is owned by `self.file` and stays open while `self` is borrowed.
        unsafe { std::os::fd::BorrowedFd::borrow_raw(self.file.as_raw_fd()) }
    }

    async fn emulated_reset(&self, zone: ZoneIndex) -> Result<()> {
        let start = self.geometry.zone_start(zone);
        let len = self.geometry.zone_size_bytes;
        let fd = self.dup_fd()?;
        let kind = self.geometry.kind;
        unblock(move || match kind {
            DeviceKind::File => discard_file_range(&fd, start, len),
            _ => match blkdev::discard(fd.as_fd(), start, len) {
                // A device without discard keeps the old bytes; the owner must not trust
                // bytes past the write pointer anyway.
                Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => Ok(()),
                other => other,
            },
        })
        .await
        .map_err(|e| Error::from_io(OpKind::Fallocate, start, &e))
    }

    async fn zoned_command(&self, zone: ZoneIndex, command: ZoneCommand) -> Result<()> {
        let start_sector = self.geometry.zone_start(zone) / 512;
        let nr_sectors = self.geometry.zone_size_bytes / 512;
        let fd = self.dup_fd()?;
        let mgmt = match command {
            ZoneCommand::Reset => ZoneMgmt::Reset,
            ZoneCommand::Finish => ZoneMgmt::Finish,
            ZoneCommand::Open => ZoneMgmt::Open,
            ZoneCommand::Close => ZoneMgmt::Close,
        };
        unblock(move || blkdev::zone_mgmt(fd.as_fd(), mgmt, start_sector, nr_sectors))
            .await
            .map_err(|e| Error::from_io(OpKind::Ioctl, start_sector * 512, &e))
    }
}

impl Device for Disk {
    fn geometry(&self) -> &Geometry {
        &self.geometry
    }

    fn zone(&self, zone: ZoneIndex) -> Zone {
        self.table.borrow().zone(zone)
    }

    fn zones(&self) -> Vec<Zone> {
        self.table.borrow().zones().to_vec()
    }

    async fn write_at<B: IoBuf + Unpin>(
        &self,
        offset: u64,
        buf: B,
        flags: WriteFlags,
    ) -> (Result<()>, B) {
        let len = buf.bytes_init();
        if let Err(err) = self.check_io(offset, len, buf.stable_ptr()) {
            return (Err(err), buf);
        }
        if len == 0 {
            return (Ok(()), buf);
        }
        let plan = match self.table.borrow_mut().prepare_write(offset, len as u64) {
            Ok(plan) => plan,
            Err(err) => return (Err(err), buf),
        };
        let max_piece = self.geometry.max_io_bytes as usize;
        if len <= max_piece {
            // One piece: no sharing of the buffer needed (and no allocation on this path).
            let (result, buf) = match op::submit_write(&self.file, buf, 0, len, offset, flags) {
                Ok(pending) => pending.await,
                Err((err, buf)) => (Err(err), buf),
            };
            let result = match result {
                Ok(n) if n == len => Ok(()),
                Ok(n) => Err(Error::ShortTransfer {
                    op: OpKind::Write,
                    offset,
                    done_bytes: n,
                    expected_bytes: len,
                }),
                Err(err) => Err(err),
            };
            if result.is_err() {
                self.after_write_error(plan.zone).await;
            }
            return (result, buf);
        }
        // Every piece is pushed onto the ring now, in order, in this one poll: writes to a
        // sequential zone reach the device in submission order (never IOSQE_ASYNC).
        let shared = Rc::new(buf);
        let mut pieces: SmallVec<[_; INLINE_PIECES]> = SmallVec::new();
        let mut result = Ok(());
        let mut pos = 0;
        while pos < len {
            let piece = max_piece.min(len - pos);
            let piece_offset = offset + pos as u64;
            match op::submit_write(&self.file, shared.clone(), pos, piece, piece_offset, flags) {
                Ok(pending) => pieces.push((pending, piece, piece_offset)),
                Err((err, _)) => {
                    result = Err(err);
                    break;
                }
            }
            pos += piece;
        }
        for (pending, piece, piece_offset) in pieces {
            let (written, _) = pending.await;
            let outcome = match written {
                Ok(n) if n == piece => Ok(()),
                // A short piece cannot be continued: later pieces are already queued behind
                // it at later offsets. Reported, never taken as success.
                Ok(n) => Err(Error::ShortTransfer {
                    op: OpKind::Write,
                    offset: piece_offset,
                    done_bytes: n,
                    expected_bytes: piece,
                }),
                Err(err) => Err(err),
            };
            if result.is_ok() {
                result = outcome;
            }
        }
        let buf = match Rc::try_unwrap(shared) {
            Ok(buf) => buf,
            Err(_) => unreachable!("every write piece has completed and released the buffer"),
        };
        if result.is_err() {
            self.after_write_error(plan.zone).await;
        }
        (result, buf)
    }

    async fn read_at<B: IoBufMut + Unpin>(
        &self,
        offset: u64,
        buf: B,
        len: usize,
    ) -> (Result<()>, B) {
        if let Err(err) = self.check_io(offset, len, buf.stable_ptr()) {
            return (Err(err), buf);
        }
        op::read_exact_at(&self.file, buf, 0, len, offset).await
    }

    async fn flush(&self) -> Result<()> {
        op::fsync(&self.file, SyncKind::Data).await
    }

    async fn zone_command(&self, zone: ZoneIndex, command: ZoneCommand) -> Result<()> {
        self.table.borrow().check_command(zone, command)?;
        let outcome = match (self.geometry.kind, command) {
            (DeviceKind::Zoned, _) => self.zoned_command(zone, command).await,
            (_, ZoneCommand::Reset) => self.emulated_reset(zone).await,
            // Emulated finish/open/close only change the software state.
            _ => Ok(()),
        };
        match outcome {
            // The device is the truth for what a command did: ZNS leaves an opened-then-closed
            // empty zone Closed (still active) where ZBC makes it Empty.
            Ok(()) if self.geometry.kind == DeviceKind::Zoned => {
                self.refresh_zone(zone).await.map(|_| ())
            }
            Ok(()) => self.table.borrow_mut().apply_command(zone, command),
            Err(err) => {
                self.after_write_error(zone).await;
                Err(err)
            }
        }
    }

    async fn refresh_zone(&self, zone: ZoneIndex) -> Result<Zone> {
        if self.geometry.kind != DeviceKind::Zoned {
            return Ok(self.table.borrow().zone(zone));
        }
        let start_sector = self.geometry.zone_start(zone) / 512;
        let fd = self.dup_fd()?;
        let raw = unblock(move || blkdev::report_zones(fd.as_fd(), start_sector, 1))
            .await
            .map_err(|e| Error::from_io(OpKind::Ioctl, start_sector * 512, &e))?;
        let Some(raw) = raw.first() else {
            return Err(Error::BadDevice {
                path: self.name.clone(),
                reason: format!("zone report at sector {start_sector} returned no zone"),
            });
        };
        let fresh = zone_from_raw(zone, raw);
        self.table.borrow_mut().set_zone(fresh);
        Ok(fresh)
    }

    /// See [`DiskOptions::fresh`]. Not allowed on zoned devices, whose pointers are the
    /// device's.
    fn restore_write_pointer(&self, zone: ZoneIndex, write_pointer: u64) -> Result<()> {
        if self.geometry.kind == DeviceKind::Zoned {
            return Err(Error::Unsupported { op: OpKind::Write });
        }
        self.table.borrow_mut().restore_write_pointer(zone, write_pointer)
    }

    fn written_from(&self, offset: u64, end: u64) -> Result<Option<u64>> {
        if self.geometry.kind != DeviceKind::File || offset >= end {
            return Ok((offset < end).then_some(offset));
        }
        // The file system knows which ranges were never written (or were zeroed by a reset:
        // ZERO_RANGE leaves unwritten extents, which SEEK_DATA skips like holes).
        match crate::sys::seek_data(&self.file, offset) {
            Ok(found) => Ok(found.filter(|&at| at < end)),
            // A file system without SEEK_DATA support: assume data.
            Err(_) => Ok(Some(offset)),
        }
    }

    fn name(&self) -> &str {
        &self.name
    }
}

/// `flock(LOCK_EX | LOCK_NB)`: released when the last fd of this open file description closes.
fn lock_exclusive(file: &OwnedFd) -> std::io::Result<()> {
    // SAFETY: flock on an fd this function borrows; no memory is passed.
    crate::sys::syscall!(flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB)).map(|_| ())
}

fn open_direct(path: &Path, options: &DiskOptions) -> std::io::Result<OwnedFd> {
    let mut open = std::fs::OpenOptions::new();
    open.read(true).write(true).custom_flags(libc::O_DIRECT | libc::O_CLOEXEC);
    let is_block =
        std::fs::metadata(path).map(|m| m.file_type().is_block_device()).unwrap_or(false);
    if is_block {
        open.custom_flags(libc::O_DIRECT | libc::O_CLOEXEC | libc::O_EXCL);
    } else if options.create_size_bytes.is_some() {
        open.create(true);
    }
    let file = open.open(path)?;
    if let Some(size) = options.create_size_bytes {
        if !is_block && file.metadata()?.len() == 0 {
            // Reserve the space now so a full file system shows up at start, not mid-write.
            crate::sys::fallocate(&file, 0, 0, size)?;
        }
    }
    Ok(OwnedFd::from(file))
}

/// Zeroes a file range and keeps its space reserved, then makes that durable.
fn discard_file_range(fd: &OwnedFd, start: u64, len: u64) -> std::io::Result<()> {
    let zero = libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE;
    match crate::sys::fallocate(fd, zero, start, len) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {
            let punch = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
            crate::sys::fallocate(fd, punch, start, len)?;
            crate::sys::fallocate(fd, libc::FALLOC_FL_KEEP_SIZE, start, len)?;
        }
        Err(e) => return Err(e),
    }
    // SAFETY: fdatasync on an fd we own.
    if unsafe { libc::fdatasync(fd.as_raw_fd()) } == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

type Opened = (Geometry, ZoneTable);

fn emulated_geometry(
    kind: DeviceKind,
    size_bytes: u64,
    block_bytes: u32,
    physical_block_bytes: u32,
    max_io_bytes: u32,
    options: &DiskOptions,
) -> Result<Opened, String> {
    let zone = options.zone_size_bytes;
    if zone == 0 || zone % u64::from(block_bytes) != 0 {
        return Err(format!(
            "zone size {zone} is not a positive multiple of the block size {block_bytes}"
        ));
    }
    let capacity = options.zone_capacity_bytes.unwrap_or(zone);
    if capacity == 0 || capacity > zone || capacity % u64::from(block_bytes) != 0 {
        return Err(format!(
            "zone capacity {capacity} must be a positive multiple of {block_bytes} no larger \
             than the zone size {zone}"
        ));
    }
    let max_io_bytes = match options.max_io_bytes {
        Some(wanted) if wanted == 0 || wanted % block_bytes != 0 => {
            return Err(format!(
                "max I/O size {wanted} is not a positive multiple of {block_bytes}"
            ));
        }
        Some(wanted) => wanted.min(max_io_bytes),
        None => max_io_bytes,
    };
    let count = size_bytes / zone;
    if count == 0 {
        return Err(format!("size {size_bytes} bytes holds no zone of {zone} bytes"));
    }
    let count = u32::try_from(count).map_err(|_| format!("{count} zones is too many"))?;
    let geometry = Geometry {
        kind,
        zone_size_bytes: zone,
        zone_count: count,
        logical_block_bytes: block_bytes,
        physical_block_bytes,
        max_io_bytes,
        max_open_zones: options.max_open_zones,
        max_active_zones: options.max_active_zones,
    };
    let condition = if options.fresh { ZoneCondition::Empty } else { ZoneCondition::Full };
    let table = ZoneTable::emulated(
        count,
        zone,
        capacity,
        condition,
        options.max_open_zones,
        options.max_active_zones,
    );
    Ok((geometry, table))
}

fn emulated_file(
    _file: &OwnedFd,
    size_bytes: u64,
    options: &DiskOptions,
) -> Result<Opened, String> {
    emulated_geometry(
        DeviceKind::File,
        size_bytes,
        FILE_BLOCK_BYTES,
        FILE_BLOCK_BYTES,
        FILE_MAX_IO_BYTES,
        options,
    )
}

fn emulated_block(
    file: &OwnedFd,
    attrs: &sysfs::QueueAttrs,
    options: &DiskOptions,
) -> Result<Opened, String> {
    let size = blkdev::size_bytes(file.as_fd()).map_err(|e| format!("BLKGETSIZE64 failed: {e}"))?;
    let block =
        blkdev::logical_block_size(file.as_fd()).map_err(|e| format!("BLKSSZGET failed: {e}"))?;
    let max_io = max_io_bytes(attrs, block)?;
    emulated_geometry(
        DeviceKind::Block,
        size,
        block,
        attrs.physical_block_size.max(block),
        max_io,
        options,
    )
}

fn max_io_bytes(attrs: &sysfs::QueueAttrs, block: u32) -> Result<u32, String> {
    let max_io = attrs.max_sectors_kb.saturating_mul(1024);
    if max_io < block || max_io % block != 0 {
        return Err(format!(
            "max_sectors_kb {} is not a multiple of the logical block size {block}",
            attrs.max_sectors_kb
        ));
    }
    Ok(max_io)
}

fn zoned_block(file: &OwnedFd, attrs: &sysfs::QueueAttrs) -> Result<Opened, String> {
    let block = attrs.logical_block_size;
    if block == 0 || !block.is_power_of_two() {
        return Err(format!("logical block size {block} is not a power of two"));
    }
    let zone_size = attrs.chunk_sectors * 512;
    if zone_size == 0 || !zone_size.is_power_of_two() {
        return Err(format!(
            "zone size (chunk_sectors {}) is not a power of two",
            attrs.chunk_sectors
        ));
    }
    let raw =
        blkdev::report_all_zones(file.as_fd()).map_err(|e| format!("zone report failed: {e}"))?;
    if attrs.nr_zones != 0 && raw.len() != attrs.nr_zones as usize {
        return Err(format!(
            "zone report lists {} zones, sysfs nr_zones says {}",
            raw.len(),
            attrs.nr_zones
        ));
    }
    // A smaller trailing zone ("runt") is not used.
    let full_zones: Vec<&RawZone> =
        raw.iter().filter(|z| z.len_sectors * 512 == zone_size).collect();
    let mut zones = Vec::with_capacity(full_zones.len());
    for (i, z) in full_zones.iter().enumerate() {
        let expected_start = i as u64 * zone_size;
        if z.start_sector * 512 != expected_start {
            return Err(format!(
                "zone {i} starts at sector {}, expected {}",
                z.start_sector,
                expected_start / 512
            ));
        }
        zones.push(zone_from_raw(i as ZoneIndex, z));
    }
    let count = u32::try_from(zones.len()).map_err(|_| "too many zones".to_string())?;
    let geometry = Geometry {
        kind: DeviceKind::Zoned,
        zone_size_bytes: zone_size,
        zone_count: count,
        logical_block_bytes: block,
        physical_block_bytes: attrs.physical_block_size.max(block),
        max_io_bytes: max_io_bytes(attrs, block)?,
        max_open_zones: attrs.max_open_zones,
        max_active_zones: attrs.max_active_zones,
    };
    let table = ZoneTable::new(zones, zone_size, attrs.max_open_zones, attrs.max_active_zones);
    Ok((geometry, table))
}

/// Converts the kernel's zone descriptor (sectors) to a [`Zone`] (bytes).
fn zone_from_raw(index: ZoneIndex, raw: &RawZone) -> Zone {
    let start = raw.start_sector * 512;
    let capacity_bytes = raw.capacity_sectors * 512;
    let zone_type = match raw.zone_type {
        blkdev::BLK_ZONE_TYPE_CONVENTIONAL => ZoneType::Conventional,
        blkdev::BLK_ZONE_TYPE_SEQWRITE_PREF => ZoneType::SequentialPreferred,
        _ => ZoneType::SequentialRequired,
    };
    let condition = match raw.cond {
        blkdev::BLK_ZONE_COND_NOT_WP => ZoneCondition::NotWritePointer,
        blkdev::BLK_ZONE_COND_EMPTY => ZoneCondition::Empty,
        blkdev::BLK_ZONE_COND_IMP_OPEN => ZoneCondition::ImplicitOpen,
        blkdev::BLK_ZONE_COND_EXP_OPEN => ZoneCondition::ExplicitOpen,
        blkdev::BLK_ZONE_COND_CLOSED => ZoneCondition::Closed,
        blkdev::BLK_ZONE_COND_FULL => ZoneCondition::Full,
        blkdev::BLK_ZONE_COND_READONLY => ZoneCondition::ReadOnly,
        _ => ZoneCondition::Offline,
    };
    let write_pointer = match condition {
        ZoneCondition::NotWritePointer => start,
        ZoneCondition::Full => start + capacity_bytes,
        _ => (raw.wp_sector * 512).clamp(start, start + capacity_bytes),
    };
    Zone { index, start, capacity_bytes, write_pointer, condition, zone_type }
}
