//! The zone-level device API every backend implements: geometry, zones with their condition,
//! type, capacity and write pointer, and the I/O and zone-management operations.
//!
//! Backends: Linux zoned block devices (host-managed SMR, ZNS) whose zones come from the
//! kernel; conventional block devices and regular files whose zones are emulated in software
//! ([`zones::ZoneTable`] enforces the same rules for all three). The store above is generic
//! over [`Device`], so the same code runs on a simulated device in tests.

mod disk;
pub mod sim;
pub mod zones;

use std::future::Future;
use std::path::PathBuf;

pub use disk::{Disk, DiskOptions};
pub use zones::ZoneTable;

use crate::buf::{IoBuf, IoBufMut};
use crate::error::Result;
use crate::op::WriteFlags;

/// Index of a zone on its device (0-based).
pub type ZoneIndex = u32;

/// Which backend a device uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceKind {
    /// A regular file with emulated zones.
    File,
    /// A conventional block device (CMR HDD, plain NVMe) with emulated zones.
    Block,
    /// A Linux zoned block device (host-managed SMR, ZNS); zones come from the kernel.
    Zoned,
}

/// The shape of a device, fixed when it is opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Geometry {
    /// Backend.
    pub kind: DeviceKind,
    /// Bytes per zone (the zone's address span; a power of two on zoned devices).
    pub zone_size_bytes: u64,
    /// Zones used. A smaller trailing zone (a "runt") is not counted.
    pub zone_count: u32,
    /// The device's logical block size: the alignment of every offset, length and buffer.
    pub logical_block_bytes: u32,
    /// The physical block size (writes smaller than this are read-modify-write).
    pub physical_block_bytes: u32,
    /// Largest single I/O the device takes (max_sectors_kb); larger writes are split.
    pub max_io_bytes: u32,
    /// Open-zone limit, 0 for none.
    pub max_open_zones: u32,
    /// Active-zone limit (open + closed), 0 for none.
    pub max_active_zones: u32,
}

impl Geometry {
    /// Total bytes addressed by the zones in use.
    pub fn capacity_bytes(&self) -> u64 {
        self.zone_size_bytes * u64::from(self.zone_count)
    }

    /// Zone holding byte `offset`.
    pub fn zone_of(&self, offset: u64) -> ZoneIndex {
        (offset / self.zone_size_bytes) as ZoneIndex
    }

    /// First byte of `zone`.
    pub fn zone_start(&self, zone: ZoneIndex) -> u64 {
        u64::from(zone) * self.zone_size_bytes
    }

    /// Checks an I/O before it is submitted: offset, length and buffer address aligned to the
    /// logical block size, and the range inside the device. Every backend applies it.
    pub fn check_io(&self, offset: u64, len: usize, ptr: *const u8) -> Result<()> {
        let block = self.logical_block_bytes;
        let aligned = |v: u64| v % u64::from(block) == 0;
        let unaligned =
            |what, value| Err(crate::Error::Unaligned { what, value, align_bytes: block });
        if !aligned(offset) {
            return unaligned("offset", offset);
        }
        if !aligned(len as u64) {
            return unaligned("length", len as u64);
        }
        if !aligned(ptr as u64) {
            return unaligned("buffer address", ptr as u64);
        }
        let end = offset.saturating_add(len as u64);
        if end > self.capacity_bytes() {
            let limit = self.capacity_bytes();
            return Err(crate::Error::OutOfRange { what: "the device", offset, end, limit });
        }
        Ok(())
    }
}

/// Zone type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZoneType {
    /// Random writes allowed; no write pointer (SMR drives have a few, for metadata).
    Conventional,
    /// Writes only at the write pointer, in order.
    SequentialRequired,
    /// Host-aware: sequential preferred, random allowed (treated as sequential).
    SequentialPreferred,
}

/// Zone condition, as the ZBC/ZNS state machine names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZoneCondition {
    /// Conventional zone: no write pointer.
    NotWritePointer,
    /// Write pointer at the start.
    Empty,
    /// Opened by a write.
    ImplicitOpen,
    /// Opened by an explicit open command.
    ExplicitOpen,
    /// Partly written, not open (holds an active resource).
    Closed,
    /// No more writes until reset.
    Full,
    /// Readable, never writable.
    ReadOnly,
    /// Neither readable nor writable.
    Offline,
}

impl ZoneCondition {
    /// Open (implicitly or explicitly).
    pub fn is_open(self) -> bool {
        matches!(self, ZoneCondition::ImplicitOpen | ZoneCondition::ExplicitOpen)
    }

    /// Holds an active-zone resource (open or closed).
    pub fn is_active(self) -> bool {
        self.is_open() || self == ZoneCondition::Closed
    }
}

/// One zone's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Zone {
    /// Index on the device.
    pub index: ZoneIndex,
    /// First byte.
    pub start: u64,
    /// Writable bytes from `start` (≤ zone size; smaller on ZNS).
    pub capacity_bytes: u64,
    /// Absolute byte offset of the next write (the write pointer). For conventional zones,
    /// `start`.
    pub write_pointer: u64,
    /// Condition.
    pub condition: ZoneCondition,
    /// Type.
    pub zone_type: ZoneType,
}

impl Zone {
    /// Bytes still writable.
    pub fn remaining_bytes(&self) -> u64 {
        match self.condition {
            ZoneCondition::Full | ZoneCondition::ReadOnly | ZoneCondition::Offline => 0,
            _ => (self.start + self.capacity_bytes).saturating_sub(self.write_pointer),
        }
    }

    /// Bytes written (between start and the write pointer).
    pub fn written_bytes(&self) -> u64 {
        self.write_pointer - self.start
    }
}

/// Zone-management commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZoneCommand {
    /// Back to empty; the data is gone (discarded).
    Reset,
    /// To full: no more writes.
    Finish,
    /// Explicitly open.
    Open,
    /// Close (releases an open resource, keeps the active one).
    Close,
}

/// A zoned device as the store sees it. One core owns a device; methods take `&self` because
/// several of that core's tasks use it at once.
pub trait Device {
    /// The device's shape.
    fn geometry(&self) -> &Geometry;

    /// The cached state of one zone (what this core has submitted; see `refresh_zone`).
    fn zone(&self, zone: ZoneIndex) -> Zone;

    /// The cached state of every zone.
    fn zones(&self) -> Vec<Zone>;

    /// Writes all of `buf` (its initialised bytes) at `offset`, which must be the write
    /// pointer of a sequential zone (or anywhere in a conventional zone). The write pointer
    /// advances when the write is submitted, so a caller may have several writes to one zone
    /// in flight; they reach the device in submission order. Offset, length and buffer must be
    /// aligned to the logical block size.
    fn write_at<B: IoBuf + Unpin>(
        &self,
        offset: u64,
        buf: B,
        flags: WriteFlags,
    ) -> impl Future<Output = (Result<()>, B)>;

    /// Reads exactly `len` bytes at `offset` into the start of `buf`. Aligned as writes.
    fn read_at<B: IoBufMut + Unpin>(
        &self,
        offset: u64,
        buf: B,
        len: usize,
    ) -> impl Future<Output = (Result<()>, B)>;

    /// Makes every completed write durable (a device cache flush / fdatasync).
    fn flush(&self) -> impl Future<Output = Result<()>>;

    /// Runs a zone-management command.
    fn zone_command(
        &self,
        zone: ZoneIndex,
        command: ZoneCommand,
    ) -> impl Future<Output = Result<()>>;

    /// Re-reads one zone's state from the device (after an error, the device is the truth).
    /// Emulated backends have nothing to re-read and return the cached state.
    fn refresh_zone(&self, zone: ZoneIndex) -> impl Future<Output = Result<Zone>>;

    /// Sets an emulated zone's write pointer to what the owner recovered (emulated backends
    /// start with every zone Full after a reopen). Zoned devices keep their own write
    /// pointers and refuse.
    fn restore_write_pointer(&self, zone: ZoneIndex, write_pointer: u64) -> Result<()> {
        let _ = (zone, write_pointer);
        Err(crate::Error::Unsupported { op: crate::OpKind::Write })
    }

    /// Where in `[offset, end)` written bytes may start: the first offset from which the
    /// backend cannot promise zeroes, or None when the whole range reads as zeroes without
    /// having been written since the file was allocated or its zone reset. Regular files know
    /// (holes and unwritten extents, which zone resets make, read as zeroes without touching
    /// the device); other backends answer `Some(offset)`. A scan uses it to skip ranges that
    /// cannot hold a record instead of reading them.
    fn written_from(&self, offset: u64, end: u64) -> Result<Option<u64>> {
        let _ = end;
        Ok(Some(offset))
    }

    /// Path or name, for messages.
    fn name(&self) -> &str;
}

/// Where a device's path points, for messages.
pub(crate) fn display_path(path: &std::path::Path) -> String {
    PathBuf::from(path).display().to_string()
}
