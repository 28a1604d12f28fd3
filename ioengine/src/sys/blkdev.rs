//! Linux block-device ioctls (size, block sizes, discard, zone geometry, zone reports, zone
//! management): the one file that knows the `linux/fs.h` and `linux/blkzoned.h` ABI, its ioctl
//! numbers and struct layouts, so the layers above work with plain Rust values.
//!
//! Every function is synchronous (a plain `ioctl(2)`) and returns `std::io::Result`; the errno
//! is kept in the `io::Error` for `Error::from_io`. Sector arguments and results are in the
//! kernel's 512-byte units ([`SECTOR_BYTES`]) whatever the device's logical block size; byte
//! arguments say so in their names. What the kernel returns is validated before it is used:
//! a value that cannot be right becomes `io::ErrorKind::InvalidData`, never a panic.

use std::io;
use std::mem::{align_of, offset_of, size_of};
use std::os::fd::{AsRawFd, BorrowedFd};

use super::syscall;

#[cfg(any(
    target_arch = "powerpc",
    target_arch = "powerpc64",
    target_arch = "mips",
    target_arch = "mips64",
    target_arch = "mips32r6",
    target_arch = "mips64r6",
    target_arch = "sparc",
    target_arch = "sparc64"
))]
compile_error!(
    "sys::blkdev encodes ioctl numbers with the asm-generic layout (8-bit nr and type, 14-bit \
     size, 2-bit direction); this architecture uses another layout"
);

/// Bytes in one sector, the unit of every `*_sector` / `*_sectors` value in the block-layer ABI.
pub const SECTOR_BYTES: u64 = 512;

// ---------------------------------------------------------------------------------------------
// ioctl request numbers (include/uapi/asm-generic/ioctl.h)
// ---------------------------------------------------------------------------------------------

const IOC_NRBITS: u32 = 8;
const IOC_TYPEBITS: u32 = 8;
const IOC_SIZEBITS: u32 = 14;
const IOC_NRSHIFT: u32 = 0;
const IOC_TYPESHIFT: u32 = IOC_NRSHIFT + IOC_NRBITS;
const IOC_SIZESHIFT: u32 = IOC_TYPESHIFT + IOC_TYPEBITS;
const IOC_DIRSHIFT: u32 = IOC_SIZESHIFT + IOC_SIZEBITS;

const IOC_NONE: u32 = 0;
const IOC_WRITE: u32 = 1;
const IOC_READ: u32 = 2;

/// `_IOC(dir, type, nr, size)`. Only evaluated in constants, so an argument too large to encode
/// fails the build rather than a running program.
const fn ioc(dir: u32, ty: u8, nr: u8, size: usize) -> u32 {
    assert!(size < 1 << IOC_SIZEBITS, "ioctl argument size does not fit in _IOC_SIZEBITS");
    (dir << IOC_DIRSHIFT)
        | ((ty as u32) << IOC_TYPESHIFT)
        | ((nr as u32) << IOC_NRSHIFT)
        | ((size as u32) << IOC_SIZESHIFT)
}

/// `_IO(type, nr)`: no argument struct (the ioctl may still take a pointer, e.g. `BLKSSZGET`).
const fn io(ty: u8, nr: u8) -> u32 {
    ioc(IOC_NONE, ty, nr, 0)
}

/// `_IOR(type, nr, T)`: the kernel writes a `T` to user space.
const fn ior<T>(ty: u8, nr: u8) -> u32 {
    ioc(IOC_READ, ty, nr, size_of::<T>())
}

/// `_IOW(type, nr, T)`: the kernel reads a `T` from user space.
const fn iow<T>(ty: u8, nr: u8) -> u32 {
    ioc(IOC_WRITE, ty, nr, size_of::<T>())
}

/// `_IOWR(type, nr, T)`: the kernel reads and writes a `T`.
const fn iowr<T>(ty: u8, nr: u8) -> u32 {
    ioc(IOC_READ | IOC_WRITE, ty, nr, size_of::<T>())
}

/// The block layer's ioctl type byte.
const BLK_IOCTL_TYPE: u8 = 0x12;

/// `_IOR(0x12, 114, size_t)`; writes a `u64` (the `size_t` only sizes the request number).
const BLKGETSIZE64: u32 = ior::<libc::size_t>(BLK_IOCTL_TYPE, 114);
/// `_IO(0x12, 104)`; writes an `int`.
const BLKSSZGET: u32 = io(BLK_IOCTL_TYPE, 104);
/// `_IO(0x12, 123)`; writes an `unsigned int`.
const BLKPBSZGET: u32 = io(BLK_IOCTL_TYPE, 123);
/// `_IO(0x12, 119)`; reads `u64[2]` = {offset in bytes, length in bytes}.
const BLKDISCARD: u32 = io(BLK_IOCTL_TYPE, 119);
/// `_IOWR(0x12, 130, struct blk_zone_report)`.
const BLKREPORTZONE: u32 = iowr::<BlkZoneReport>(BLK_IOCTL_TYPE, 130);
/// `_IOW(0x12, 131, struct blk_zone_range)`.
const BLKRESETZONE: u32 = iow::<BlkZoneRange>(BLK_IOCTL_TYPE, 131);
/// `_IOR(0x12, 132, __u32)`.
const BLKGETZONESZ: u32 = ior::<u32>(BLK_IOCTL_TYPE, 132);
/// `_IOR(0x12, 133, __u32)`.
const BLKGETNRZONES: u32 = ior::<u32>(BLK_IOCTL_TYPE, 133);
/// `_IOW(0x12, 134, struct blk_zone_range)`.
const BLKOPENZONE: u32 = iow::<BlkZoneRange>(BLK_IOCTL_TYPE, 134);
/// `_IOW(0x12, 135, struct blk_zone_range)`.
const BLKCLOSEZONE: u32 = iow::<BlkZoneRange>(BLK_IOCTL_TYPE, 135);
/// `_IOW(0x12, 136, struct blk_zone_range)`.
const BLKFINISHZONE: u32 = iow::<BlkZoneRange>(BLK_IOCTL_TYPE, 136);

/// The request number as libc's `ioctl` takes it (`c_ulong` on glibc, `c_int` on musl; the
/// musl conversion wraps exactly as the C macros do).
const fn request(number: u32) -> libc::Ioctl {
    number as libc::Ioctl
}

// ---------------------------------------------------------------------------------------------
// Kernel structs (include/uapi/linux/blkzoned.h)
// ---------------------------------------------------------------------------------------------

/// `struct blk_zone`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
struct BlkZone {
    start: u64,
    len: u64,
    wp: u64,
    zone_type: u8,
    cond: u8,
    non_seq: u8,
    reset: u8,
    resv: [u8; 4],
    capacity: u64,
    reserved: [u8; 24],
}

const _: () = assert!(size_of::<BlkZone>() == 64);
const _: () = assert!(align_of::<BlkZone>() == 8);
const _: () = assert!(offset_of!(BlkZone, wp) == 16);
const _: () = assert!(offset_of!(BlkZone, zone_type) == 24);
const _: () = assert!(offset_of!(BlkZone, cond) == 25);
const _: () = assert!(offset_of!(BlkZone, capacity) == 32);

/// `struct blk_zone_report` without its flexible `zones[]` tail.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
struct BlkZoneReport {
    sector: u64,
    nr_zones: u32,
    flags: u32,
}

const _: () = assert!(size_of::<BlkZoneReport>() == 16);
const _: () = assert!(align_of::<BlkZoneReport>() == 8);

/// `struct blk_zone_range`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
struct BlkZoneRange {
    sector: u64,
    nr_sectors: u64,
}

const _: () = assert!(size_of::<BlkZoneRange>() == 16);

/// The report buffer is a `Vec<u64>`: its alignment covers both structs, and the header and each
/// zone record are whole numbers of words.
const _: () = assert!(align_of::<u64>() >= align_of::<BlkZoneReport>());
const _: () = assert!(align_of::<u64>() >= align_of::<BlkZone>());
const _: () = assert!(size_of::<BlkZoneReport>() % size_of::<u64>() == 0);
const _: () = assert!(size_of::<BlkZone>() % size_of::<u64>() == 0);
const REPORT_HEADER_WORDS: usize = size_of::<BlkZoneReport>() / size_of::<u64>();
const ZONE_RECORD_WORDS: usize = size_of::<BlkZone>() / size_of::<u64>();

/// `BLK_ZONE_TYPE_CONVENTIONAL`: random writes allowed, no write pointer.
pub const BLK_ZONE_TYPE_CONVENTIONAL: u8 = 0x1;
/// `BLK_ZONE_TYPE_SEQWRITE_REQ`: writes must land at the write pointer (host-managed).
pub const BLK_ZONE_TYPE_SEQWRITE_REQ: u8 = 0x2;
/// `BLK_ZONE_TYPE_SEQWRITE_PREF`: sequential writes preferred (host-aware).
pub const BLK_ZONE_TYPE_SEQWRITE_PREF: u8 = 0x3;

/// `BLK_ZONE_COND_NOT_WP`: the zone has no write pointer (conventional).
pub const BLK_ZONE_COND_NOT_WP: u8 = 0x0;
/// `BLK_ZONE_COND_EMPTY`: write pointer at the zone start.
pub const BLK_ZONE_COND_EMPTY: u8 = 0x1;
/// `BLK_ZONE_COND_IMP_OPEN`: implicitly opened by a write.
pub const BLK_ZONE_COND_IMP_OPEN: u8 = 0x2;
/// `BLK_ZONE_COND_EXP_OPEN`: explicitly opened (`BLKOPENZONE`).
pub const BLK_ZONE_COND_EXP_OPEN: u8 = 0x3;
/// `BLK_ZONE_COND_CLOSED`: closed while active (partly written; on NVMe ZNS possibly empty).
pub const BLK_ZONE_COND_CLOSED: u8 = 0x4;
/// `BLK_ZONE_COND_READONLY`: the zone can only be read.
pub const BLK_ZONE_COND_READONLY: u8 = 0xD;
/// `BLK_ZONE_COND_FULL`: written to capacity, or finished.
pub const BLK_ZONE_COND_FULL: u8 = 0xE;
/// `BLK_ZONE_COND_OFFLINE`: the zone can be neither read nor written.
pub const BLK_ZONE_COND_OFFLINE: u8 = 0xF;

/// `BLK_ZONE_REP_CAPACITY`: set in a report's flags when its zones carry a valid `capacity`
/// (Linux 5.9 and newer).
pub const BLK_ZONE_REP_CAPACITY: u32 = 1 << 0;

/// [`RawZone::flags`] bit: the kernel's `non_seq` byte was set (the device has
/// non-sequential write resources active for the zone; host-aware devices only).
pub const ZONE_FLAG_NON_SEQ: u8 = 1 << 0;
/// [`RawZone::flags`] bit: the kernel's `reset` byte was set (the device recommends resetting
/// the zone's write pointer).
pub const ZONE_FLAG_RESET_RECOMMENDED: u8 = 1 << 1;

/// The most zones one `BLKREPORTZONE` call asks for: the buffer is 16 bytes plus 64 per zone,
/// so this bounds one report at 256 KiB + 16 bytes. [`report_all_zones`] pages in steps of it.
pub const MAX_ZONES_PER_REPORT: u32 = 4096;

// ---------------------------------------------------------------------------------------------
// Device size and block sizes
// ---------------------------------------------------------------------------------------------

fn invalid_data(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

/// The device's size in bytes (`BLKGETSIZE64`). For a partition, the partition's size.
pub fn size_bytes(fd: BorrowedFd<'_>) -> io::Result<u64> {
    let mut size_bytes: u64 = 0;
    // SAFETY: BLKGETSIZE64 writes one u64 through the pointer, which points at `size_bytes`, a
    // live, aligned, writable u64 on this stack frame.
    syscall!(ioctl(fd.as_raw_fd(), request(BLKGETSIZE64), &raw mut size_bytes))?;
    Ok(size_bytes)
}

/// Checks a block size the kernel reported: a power of two of at least one sector.
fn block_size(ioctl_name: &str, value: i64) -> io::Result<u32> {
    match u32::try_from(value) {
        Ok(size) if size.is_power_of_two() && u64::from(size) >= SECTOR_BYTES => Ok(size),
        _ => Err(invalid_data(format!(
            "{ioctl_name} returned block size {value}, not a power of two of at least 512 bytes"
        ))),
    }
}

/// The logical block size in bytes (`BLKSSZGET`): the smallest unit the device addresses, and
/// the alignment O_DIRECT offsets, lengths and buffers need.
pub fn logical_block_size(fd: BorrowedFd<'_>) -> io::Result<u32> {
    // BLKSSZGET writes a C `int`, not an unsigned int or a u64.
    let mut size: libc::c_int = 0;
    // SAFETY: BLKSSZGET writes one c_int through the pointer, which points at `size`, a live,
    // aligned, writable c_int on this stack frame.
    syscall!(ioctl(fd.as_raw_fd(), request(BLKSSZGET), &raw mut size))?;
    block_size("BLKSSZGET", i64::from(size))
}

/// The physical block size in bytes (`BLKPBSZGET`): the smallest unit the device writes
/// without a read-modify-write.
pub fn physical_block_size(fd: BorrowedFd<'_>) -> io::Result<u32> {
    let mut size: libc::c_uint = 0;
    // SAFETY: BLKPBSZGET writes one unsigned int through the pointer, which points at `size`, a
    // live, aligned, writable c_uint on this stack frame.
    syscall!(ioctl(fd.as_raw_fd(), request(BLKPBSZGET), &raw mut size))?;
    block_size("BLKPBSZGET", i64::from(size))
}

/// Discards (TRIMs) `len_bytes` bytes at `offset_bytes` (`BLKDISCARD`). Both must be multiples
/// of the logical block size, `len_bytes` must not be 0 and the range must lie inside the
/// device (`EINVAL` otherwise); the fd must be open for writing (`EBADF`); `EOPNOTSUPP` when
/// the device cannot discard (`queue/discard_max_bytes` is 0). Waits until the device has
/// completed the discard. On a zoned device a discard does not move any write pointer.
pub fn discard(fd: BorrowedFd<'_>, offset_bytes: u64, len_bytes: u64) -> io::Result<()> {
    let range: [u64; 2] = [offset_bytes, len_bytes];
    // SAFETY: BLKDISCARD reads two u64 (offset, length in bytes) through the pointer, which
    // points at `range`, a live, aligned [u64; 2] on this stack frame; it writes nothing.
    syscall!(ioctl(fd.as_raw_fd(), request(BLKDISCARD), range.as_ptr()))?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Zones
// ---------------------------------------------------------------------------------------------

/// The zone size in sectors (`BLKGETZONESZ`); `0` for a device that is not zoned.
pub fn zone_size_sectors(fd: BorrowedFd<'_>) -> io::Result<u32> {
    let mut sectors: u32 = 0;
    // SAFETY: BLKGETZONESZ writes one u32 through the pointer, which points at `sectors`, a
    // live, aligned, writable u32 on this stack frame.
    syscall!(ioctl(fd.as_raw_fd(), request(BLKGETZONESZ), &raw mut sectors))?;
    Ok(sectors)
}

/// The number of zones (`BLKGETNRZONES`); `0` for a device that is not zoned.
pub fn zone_count(fd: BorrowedFd<'_>) -> io::Result<u32> {
    let mut count: u32 = 0;
    // SAFETY: BLKGETNRZONES writes one u32 through the pointer, which points at `count`, a live,
    // aligned, writable u32 on this stack frame.
    syscall!(ioctl(fd.as_raw_fd(), request(BLKGETNRZONES), &raw mut count))?;
    Ok(count)
}

/// One zone as `BLKREPORTZONE` describes it, validated but not interpreted. All positions are
/// in 512-byte sectors from the start of the device, whatever its logical block size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawZone {
    /// First sector of the zone.
    pub start_sector: u64,
    /// Zone length in sectors (the zone-to-zone stride; the last zone may be shorter).
    pub len_sectors: u64,
    /// Write pointer. Meaningful for sequential zones that are EMPTY, open or CLOSED; for FULL
    /// zones drivers report the zone end (`start + len`) or `start + capacity`; for
    /// conventional zones it means nothing. Always within `start..=start + len` for a
    /// sequential zone in one of those conditions.
    pub wp_sector: u64,
    /// Writable sectors from the zone start (ZNS zones may be shorter than `len_sectors`);
    /// equal to `len_sectors` when the kernel does not report capacity.
    pub capacity_sectors: u64,
    /// One of the `BLK_ZONE_TYPE_*` constants (an unknown value is passed through).
    pub zone_type: u8,
    /// One of the `BLK_ZONE_COND_*` constants (an unknown value is passed through).
    pub cond: u8,
    /// [`ZONE_FLAG_NON_SEQ`] and [`ZONE_FLAG_RESET_RECOMMENDED`] bits.
    pub flags: u8,
}

/// Converts and checks one report: `zones` are the `header.nr_zones` records the kernel wrote
/// after asking for zones from `start_sector`, at most `requested` of them.
fn parse_report(
    start_sector: u64,
    requested: u32,
    header: &BlkZoneReport,
    zones: &[BlkZone],
) -> io::Result<Vec<RawZone>> {
    if header.nr_zones > requested || zones.len() != header.nr_zones as usize {
        return Err(invalid_data(format!(
            "BLKREPORTZONE from sector {start_sector} returned {} zones, {requested} requested",
            header.nr_zones
        )));
    }
    let capacity_valid = header.flags & BLK_ZONE_REP_CAPACITY != 0;
    let mut out = Vec::with_capacity(zones.len());
    let mut expected_start: Option<u64> = None;
    for (index, zone) in zones.iter().enumerate() {
        let bad = |what: String| {
            invalid_data(format!(
                "BLKREPORTZONE from sector {start_sector}: zone {index} of the report (start \
                 sector {}, {} sectors): {what}",
                zone.start, zone.len
            ))
        };
        if zone.len == 0 {
            return Err(bad("zero length".to_owned()));
        }
        let Some(end_sector) = zone.start.checked_add(zone.len) else {
            return Err(bad("end overflows u64".to_owned()));
        };
        match expected_start {
            // The first zone is the one that contains `start_sector`.
            None if !(zone.start <= start_sector && start_sector < end_sector) => {
                return Err(bad("does not contain the requested start sector".to_owned()));
            }
            Some(expected) if zone.start != expected => {
                return Err(bad(format!("does not follow the previous zone ending at {expected}")));
            }
            _ => {}
        }
        expected_start = Some(end_sector);
        let capacity_sectors = if capacity_valid { zone.capacity } else { zone.len };
        if capacity_sectors == 0 || capacity_sectors > zone.len {
            return Err(bad(format!("capacity {capacity_sectors} sectors")));
        }
        let has_wp = zone.zone_type != BLK_ZONE_TYPE_CONVENTIONAL
            && matches!(
                zone.cond,
                BLK_ZONE_COND_EMPTY
                    | BLK_ZONE_COND_IMP_OPEN
                    | BLK_ZONE_COND_EXP_OPEN
                    | BLK_ZONE_COND_CLOSED
                    | BLK_ZONE_COND_FULL
            );
        if has_wp && !(zone.start <= zone.wp && zone.wp <= end_sector) {
            return Err(bad(format!("write pointer {} outside the zone", zone.wp)));
        }
        let mut flags = 0;
        if zone.non_seq != 0 {
            flags |= ZONE_FLAG_NON_SEQ;
        }
        if zone.reset != 0 {
            flags |= ZONE_FLAG_RESET_RECOMMENDED;
        }
        out.push(RawZone {
            start_sector: zone.start,
            len_sectors: zone.len,
            wp_sector: zone.wp,
            capacity_sectors,
            zone_type: zone.zone_type,
            cond: zone.cond,
            flags,
        });
    }
    Ok(out)
}

/// Reports up to `max_zones` zones (at most [`MAX_ZONES_PER_REPORT`]), starting with the zone
/// that contains `start_sector` (`BLKREPORTZONE`). Fewer come back at the end of the device;
/// none when `start_sector` is at or past the end, or `max_zones` is 0. `ENOTTY` or
/// `EOPNOTSUPP` on a device that is not zoned. Zones in the result are contiguous; a report
/// that breaks that, or the other checks on [`RawZone`], is `InvalidData`.
pub fn report_zones(
    fd: BorrowedFd<'_>,
    start_sector: u64,
    max_zones: u32,
) -> io::Result<Vec<RawZone>> {
    let requested = max_zones.min(MAX_ZONES_PER_REPORT);
    if requested == 0 {
        return Ok(Vec::new());
    }
    // `requested` <= 4096, so this is at most 2 + 4096 * 8 words: no overflow.
    let words = REPORT_HEADER_WORDS + requested as usize * ZONE_RECORD_WORDS;
    let mut buf: Vec<u64> = vec![0; words];
    // Every access below goes through this one pointer; no reference into `buf` is made while
    // it is in use, and `buf` is neither moved nor resized until the function returns.
    let base: *mut u64 = buf.as_mut_ptr();
    let header_ptr = base.cast::<BlkZoneReport>();
    // SAFETY: `buf` holds at least REPORT_HEADER_WORDS words = size_of::<BlkZoneReport>()
    // bytes at `base`, which is aligned for BlkZoneReport (asserted: align 8 <= align of u64).
    unsafe {
        header_ptr.write(BlkZoneReport { sector: start_sector, nr_zones: requested, flags: 0 })
    };
    // SAFETY: BLKREPORTZONE reads the header at `header_ptr` and writes back the header plus at
    // most `nr_zones` (= `requested`) 64-byte zone records right after it; `buf` is exactly
    // that large, 8-aligned, and outlives the call.
    syscall!(ioctl(fd.as_raw_fd(), request(BLKREPORTZONE), header_ptr))?;
    // SAFETY: same bounds and alignment as the write above; the bytes are initialized (zeroed,
    // then written by the kernel) and every bit pattern is a valid BlkZoneReport.
    let header = unsafe { header_ptr.read() };
    let nr_zones = header.nr_zones.min(requested) as usize;
    // SAFETY: REPORT_HEADER_WORDS + nr_zones * ZONE_RECORD_WORDS <= `words` (nr_zones is capped
    // at `requested` above), so the records lie inside `buf`; `base` plus a whole number of u64
    // words is aligned for BlkZone (align 8); the memory is initialized, every bit pattern is a
    // valid BlkZone, and nothing writes to `buf` while the slice is alive.
    let zones = unsafe {
        std::slice::from_raw_parts(base.add(REPORT_HEADER_WORDS).cast::<BlkZone>(), nr_zones)
    };
    // `parse_report` sees the kernel's own count in `header`: more than requested is an error,
    // not silently truncated.
    parse_report(start_sector, requested, &header, zones)
}

/// Reports every zone of the device, paging through it [`MAX_ZONES_PER_REPORT`] zones per
/// `BLKREPORTZONE`. The zones cover the device from sector 0 to its end without gaps or
/// overlaps, or the result is `InvalidData`. `ENOTTY` or `EOPNOTSUPP` on a device that is not
/// zoned.
pub fn report_all_zones(fd: BorrowedFd<'_>) -> io::Result<Vec<RawZone>> {
    let device_sectors = size_bytes(fd)? / SECTOR_BYTES;
    // A hint only: the checks below do not depend on it. Capped so a bogus count cannot make
    // us reserve gigabytes.
    let expected_zones = zone_count(fd)?.min(1 << 20);
    let mut zones = Vec::with_capacity(expected_zones as usize);
    let mut sector = 0;
    while sector < device_sectors {
        let batch = report_zones(fd, sector, MAX_ZONES_PER_REPORT)?;
        let (Some(first), Some(last)) = (batch.first(), batch.last()) else {
            return Err(invalid_data(format!(
                "BLKREPORTZONE returned no zones at sector {sector}, before the device end at \
                 sector {device_sectors}"
            )));
        };
        if first.start_sector != sector {
            return Err(invalid_data(format!(
                "BLKREPORTZONE from sector {sector} began with a zone at sector {}",
                first.start_sector
            )));
        }
        // `parse_report` checked that this does not overflow and that each zone is non-empty,
        // so `sector` strictly increases and the loop ends.
        sector = last.start_sector + last.len_sectors;
        zones.extend(batch);
    }
    if sector != device_sectors {
        return Err(invalid_data(format!(
            "BLKREPORTZONE: the last zone ends at sector {sector}, the device at sector \
             {device_sectors}"
        )));
    }
    Ok(zones)
}

/// A zone management operation for [`zone_mgmt`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ZoneMgmt {
    /// `BLKRESETZONE`: move the write pointer back to the zone start (condition EMPTY).
    Reset,
    /// `BLKFINISHZONE`: move the write pointer to the zone end (condition FULL).
    Finish,
    /// `BLKOPENZONE`: explicitly open the zone (condition EXP_OPEN), counting against the
    /// device's open and active zone limits.
    Open,
    /// `BLKCLOSEZONE`: close an open zone (CLOSED). An explicitly opened zone with nothing
    /// written goes back to EMPTY on ZBC disks and null_blk, but stays CLOSED (and active)
    /// on NVMe ZNS until it is reset.
    Close,
}

/// Applies `op` to the zones in `nr_sectors` sectors from `start_sector`. The range must start
/// at a zone start, span whole zones and lie inside the device (`EINVAL` otherwise); the fd
/// must be open for writing (`EBADF`); the device may refuse with `EIO` (null_blk does for a
/// conventional zone). Waits until the device has completed the operation.
pub fn zone_mgmt(
    fd: BorrowedFd<'_>,
    op: ZoneMgmt,
    start_sector: u64,
    nr_sectors: u64,
) -> io::Result<()> {
    let number = match op {
        ZoneMgmt::Reset => BLKRESETZONE,
        ZoneMgmt::Finish => BLKFINISHZONE,
        ZoneMgmt::Open => BLKOPENZONE,
        ZoneMgmt::Close => BLKCLOSEZONE,
    };
    let range = BlkZoneRange { sector: start_sector, nr_sectors };
    // SAFETY: these four ioctls read one BlkZoneRange through the pointer, which points at
    // `range`, a live, aligned #[repr(C)] blk_zone_range on this stack frame; they write nothing.
    syscall!(ioctl(fd.as_raw_fd(), request(number), &raw const range))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;
    use std::os::fd::AsFd;

    #[test]
    fn ioctl_numbers_match_linux_headers() {
        // Printed by a C program including <linux/fs.h> and <linux/blkzoned.h> (gcc 12,
        // x86_64, Debian 12 linux-libc-dev).
        assert_eq!(BLKGETSIZE64, 0x8008_1272);
        assert_eq!(BLKSSZGET, 0x0000_1268);
        assert_eq!(BLKPBSZGET, 0x0000_127b);
        assert_eq!(BLKDISCARD, 0x0000_1277);
        assert_eq!(BLKREPORTZONE, 0xc010_1282);
        assert_eq!(BLKRESETZONE, 0x4010_1283);
        assert_eq!(BLKGETZONESZ, 0x8004_1284);
        assert_eq!(BLKGETNRZONES, 0x8004_1285);
        assert_eq!(BLKOPENZONE, 0x4010_1286);
        assert_eq!(BLKCLOSEZONE, 0x4010_1287);
        assert_eq!(BLKFINISHZONE, 0x4010_1288);
    }

    fn zone(start: u64, len: u64, wp: u64, zone_type: u8, cond: u8, capacity: u64) -> BlkZone {
        BlkZone { start, len, wp, zone_type, cond, capacity, ..BlkZone::default() }
    }

    fn header(nr_zones: u32, flags: u32) -> BlkZoneReport {
        BlkZoneReport { sector: 0, nr_zones, flags }
    }

    #[test]
    fn parse_report_converts_zones() {
        let zones = [
            zone(0, 1024, 2048, BLK_ZONE_TYPE_CONVENTIONAL, BLK_ZONE_COND_NOT_WP, 1024),
            BlkZone {
                reset: 1,
                ..zone(1024, 1024, 1032, BLK_ZONE_TYPE_SEQWRITE_REQ, BLK_ZONE_COND_IMP_OPEN, 768)
            },
        ];
        let got = parse_report(0, 8, &header(2, BLK_ZONE_REP_CAPACITY), &zones).unwrap();
        assert_eq!(
            got,
            [
                RawZone {
                    start_sector: 0,
                    len_sectors: 1024,
                    wp_sector: 2048,
                    capacity_sectors: 1024,
                    zone_type: BLK_ZONE_TYPE_CONVENTIONAL,
                    cond: BLK_ZONE_COND_NOT_WP,
                    flags: 0,
                },
                RawZone {
                    start_sector: 1024,
                    len_sectors: 1024,
                    wp_sector: 1032,
                    capacity_sectors: 768,
                    zone_type: BLK_ZONE_TYPE_SEQWRITE_REQ,
                    cond: BLK_ZONE_COND_IMP_OPEN,
                    flags: ZONE_FLAG_RESET_RECOMMENDED,
                },
            ]
        );
    }

    #[test]
    fn parse_report_without_capacity_flag_uses_len() {
        // Pre-5.9 kernels leave `capacity` zero and do not set the flag.
        let zones = [zone(2048, 1024, 2048, BLK_ZONE_TYPE_SEQWRITE_REQ, BLK_ZONE_COND_EMPTY, 0)];
        let got = parse_report(2100, 1, &header(1, 0), &zones).unwrap();
        assert_eq!(got[0].capacity_sectors, 1024);
    }

    #[test]
    fn parse_report_rejects_bad_reports() {
        let seq = |start, wp, cap| {
            zone(start, 1024, wp, BLK_ZONE_TYPE_SEQWRITE_REQ, BLK_ZONE_COND_CLOSED, cap)
        };
        let cases: [(&str, u64, u32, BlkZoneReport, Vec<BlkZone>); 7] = [
            ("more zones than requested", 0, 1, header(2, 1), vec![seq(0, 8, 1024); 2]),
            ("zero length", 0, 1, header(1, 1), vec![zone(0, 0, 0, 2, 1, 0)]),
            ("not containing start", 4096, 1, header(1, 1), vec![seq(0, 8, 1024)]),
            ("gap", 0, 2, header(2, 1), vec![seq(0, 8, 1024), seq(4096, 4100, 1024)]),
            ("capacity > len", 0, 1, header(1, 1), vec![seq(0, 8, 1025)]),
            ("wp past end", 0, 1, header(1, 1), vec![seq(0, 1025, 1024)]),
            ("overflow", u64::MAX - 1, 1, header(1, 1), vec![seq(u64::MAX - 2, 0, 1024)]),
        ];
        for (what, start, requested, header, zones) in cases {
            let err = parse_report(start, requested, &header, &zones).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{what}: {err}");
        }
    }

    #[test]
    fn ioctls_on_a_regular_file_fail_cleanly() {
        let file = tempfile::tempfile().unwrap();
        let fd = file.as_fd();
        let enotty = Some(libc::ENOTTY);
        assert_eq!(size_bytes(fd).unwrap_err().raw_os_error(), enotty);
        assert_eq!(logical_block_size(fd).unwrap_err().raw_os_error(), enotty);
        assert_eq!(physical_block_size(fd).unwrap_err().raw_os_error(), enotty);
        assert_eq!(zone_count(fd).unwrap_err().raw_os_error(), enotty);
        assert!(report_zones(fd, 0, 4).is_err());
        assert!(report_all_zones(fd).is_err());
        assert!(zone_mgmt(fd, ZoneMgmt::Reset, 0, 8).is_err());
        assert!(discard(fd, 0, 4096).is_err());
        assert!(report_zones(fd, 0, 0).unwrap().is_empty());
    }

    /// A readable whole-disk block device with a non-zero size, and its name, if this host has
    /// one.
    fn some_block_device() -> Option<(String, File)> {
        let mut names: Vec<String> = std::fs::read_dir("/sys/block")
            .ok()?
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .collect();
        names.sort();
        names.into_iter().find_map(|name| {
            let sectors = std::fs::read_to_string(format!("/sys/block/{name}/size")).ok()?;
            if sectors.trim().parse::<u64>().ok()? == 0 {
                return None;
            }
            Some((name.clone(), File::open(format!("/dev/{name}")).ok()?))
        })
    }

    #[test]
    fn real_block_device_geometry() {
        let Some((name, dev)) = some_block_device() else {
            eprintln!("skipped: no readable block device with a non-zero size");
            return;
        };
        let fd = dev.as_fd();
        let size = size_bytes(fd).unwrap();
        let logical = logical_block_size(fd).unwrap();
        let physical = physical_block_size(fd).unwrap();
        let zones = zone_count(fd).unwrap();
        eprintln!("{name}: {size} bytes, blocks {logical}/{physical}, {zones} zones");
        assert!(size > 0);
        assert!(logical >= 512 && physical >= logical, "{logical} {physical}");
        if zones > 0 {
            assert_eq!(report_all_zones(fd).unwrap().len(), zones as usize);
        } else {
            assert_eq!(zone_size_sectors(fd).unwrap(), 0);
            let err = report_all_zones(fd).unwrap_err();
            assert!(matches!(err.raw_os_error(), Some(libc::ENOTTY | libc::EOPNOTSUPP)), "{err}");
        }
    }
}
