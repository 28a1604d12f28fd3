//! A simulated device (in memory, seeded) with a volatile write cache and injectable faults,
//! so the production store runs against thousands of seeded crash and fault sequences.
//!
//! # The model
//!
//! - **Zones.** The same [`ZoneTable`] as the real backends validates every write and zone
//!   command, so typed errors (`NotAtWritePointer`, `ZoneFull`, `TooManyOpenZones`,
//!   `Unaligned`, `OutOfRange`, ...) are exactly those of [`Disk`](super::Disk). Every zone is
//!   sequential-write-required; conventional zones are not simulated.
//!   - [`SimModel::Emulated`] behaves like the file backend: a fresh disk starts with every
//!     zone Empty; after a crash (or [`SimDisk::from_image`]) every zone is Full until its owner
//!     calls [`SimDisk::restore_write_pointer`] or resets it.
//!   - [`SimModel::Zoned`] behaves like a zoned block device: the device keeps its own zone
//!     state (a second `ZoneTable`), the host's table is re-read from it after a failed write
//!     and after every zone command, and after a crash each zone reports the end of what
//!     survived in it as its write pointer (Empty, Closed or Full; open zones come back Closed).
//! - **Write cache.** A write takes effect when it is submitted (the write pointer advances and
//!   the data enters the volatile cache, where reads see it at once), then completes, possibly
//!   after yielding. Writes larger than `max_io_bytes` are split into pieces, as the real
//!   backend splits them, and each piece is cached separately. Cached data becomes durable
//!   when a [`Device::flush`] submitted after it completes, or when a write with
//!   `WriteFlags::dsync` completes (only that write's pieces on the emulated model; on the
//!   zoned model also every earlier cached write of that zone: a zone's media is written in
//!   order, so it cannot hold a block without the blocks before it).
//! - **Crash.** [`SimDisk::crash`] returns the disk as it would be after power loss: the
//!   durable state plus, per [`CrashMode`], a seeded fate for each cached write (lost, survived,
//!   or torn to a prefix or an arbitrary subset of its logical blocks; a logical block is the
//!   unit that is never torn). On the zoned model what survives in a zone is then cut at the
//!   first lost block, for the same in-order media reason.
//! - **Faults** ([`FaultPlan`]): EIO on reads, writes or flushes chosen by operation number,
//!   byte range or probability; misdirected writes that report success but land elsewhere or
//!   nowhere; bit flips in the durable image ([`SimDisk::flip_bit`]). Every injected fault and
//!   every crash fate is recorded ([`SimDisk::faults`]), and the log survives crashes, so a
//!   failing test can print what happened; the same seed and the same operations replay
//!   exactly.
//! - **Scheduling.** A seeded fraction of operations ([`FaultPlan::yield_probability`]) yields
//!   once before completing, so completions interleave differently per seed.
//!
//! # Choices, and what is not simulated honestly
//!
//! - A write that fails with injected EIO leaves nothing on the emulated model (the host's write
//!   pointer stays advanced, as the file backend's does); on the zoned model a seeded prefix of
//!   its logical blocks (possibly none) reached the device's cache and the device's write
//!   pointer moved past it; the host's zone is re-read from the device when the write
//!   completes. A write submitted meanwhile at the old host pointer is then refused by the
//!   device with EIO, as real zoned devices do.
//! - A failed flush makes nothing durable; the cached writes stay cached (and may still be lost
//!   or torn at a crash). Linux may instead drop them; the store must not rely on either.
//! - Zone commands cannot fail by injection and take effect when they complete. A reset is
//!   durable when it completes and drops the zone's cached writes; power loss *during* a reset
//!   is not modelled (a crash before its completion leaves the zone as it was). Unlike the file
//!   backend (whose reset ends with fdatasync), a reset does not flush other zones.
//! - Reads return durable data overlaid with cached writes at the moment the read completes
//!   (after its yield). They are not checked against the write pointer: whatever the media
//!   holds is returned, and bytes never written (or discarded by a reset) read as zeros, also
//!   between a zone's capacity and its size (some devices return an error there).
//! - No reordering inside the device beyond what the yields give: writes reach the cache in
//!   submission order, and nothing is durable before a flush or dsync says so (a real cache
//!   may write back early; `CrashMode::Tear` covers those outcomes at crash time).
//! - On the zoned model, closing an opened but unwritten zone leaves it Empty (ZBC, as the
//!   zone table does); ZNS leaves it Closed.
//! - The simulator reads and fills buffers without `unsafe`, so it accepts the buffer types it
//!   can view safely: `Vec<u8>`, [`AlignedBuf`], [`PooledBuf`], and (for writes) an `Rc` of one
//!   of them. Any other type is refused with `Error::Unsupported` before anything happens.
//!
//! Memory: a zone's durable bytes are allocated (zeroed, so mapped lazily) at its first write
//! and freed by a reset; an untouched zone costs nothing, and a crashed disk shares its zones
//! with its predecessor until either writes them. Cached writes hold a copy of their bytes
//! until they become durable or are lost.

use std::any::Any;
use std::cell::RefCell;
use std::fmt;
use std::ops::Range;
use std::rc::Rc;

use super::zones::ZoneTable;
use super::{Device, DeviceKind, Geometry, Zone, ZoneCommand, ZoneCondition, ZoneIndex, ZoneType};
use crate::buf::{AlignedBuf, IoBuf, IoBufMut, PooledBuf};
use crate::error::{Error, OpKind, Result};
use crate::executor::yield_now;
use crate::op::WriteFlags;

/// Default logical block size of a simulated disk (the file backend's block).
pub const SIM_BLOCK_BYTES_DEFAULT: u32 = 4096;
/// Default fraction of operations that yield once before completing.
pub const YIELD_PROBABILITY_DEFAULT: f64 = 0.25;
/// Smallest logical block size accepted (a sector).
const SIM_BLOCK_BYTES_MIN: u32 = 512;

/// Which real backend a [`SimDisk`] imitates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimModel {
    /// A regular file or conventional block device with emulated zones: the device keeps no
    /// write pointers, so after a crash every zone is Full until its owner restores it.
    Emulated,
    /// A zoned block device: write pointers are the device's and survive a crash.
    Zoned,
}

/// The shape of a simulated disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimConfig {
    /// Bytes per zone; a multiple of `logical_block_bytes`. Default 1 MiB.
    pub zone_size_bytes: u64,
    /// Writable bytes per zone (≤ `zone_size_bytes`, a multiple of the block). Default 1 MiB.
    pub zone_capacity_bytes: u64,
    /// Zones on the disk (at least 1). Default 8.
    pub zone_count: u32,
    /// Alignment of every offset, length and buffer, and the unit a torn write keeps or loses
    /// whole (a power of two, at least 512). Default 4096.
    pub logical_block_bytes: u32,
    /// Writes larger than this are split into pieces cached (and torn) separately; a multiple
    /// of the block. Default 128 KiB.
    pub max_io_bytes: u32,
    /// Open-zone limit, 0 for none. Default 0.
    pub max_open_zones: u32,
    /// Active-zone limit (open + closed), 0 for none. Default 0.
    pub max_active_zones: u32,
    /// The backend imitated. Default [`SimModel::Emulated`].
    pub model: SimModel,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            zone_size_bytes: 1 << 20,
            zone_capacity_bytes: 1 << 20,
            zone_count: 8,
            logical_block_bytes: SIM_BLOCK_BYTES_DEFAULT,
            max_io_bytes: 128 << 10,
            max_open_zones: 0,
            max_active_zones: 0,
            model: SimModel::Emulated,
        }
    }
}

impl SimConfig {
    /// Checks the shape; the error names the field at fault.
    pub fn validate(&self) -> Result<()> {
        let block = u64::from(self.logical_block_bytes);
        let problem = if !self.logical_block_bytes.is_power_of_two()
            || self.logical_block_bytes < SIM_BLOCK_BYTES_MIN
        {
            Some(format!("logical_block_bytes {block} is not a power of two >= 512"))
        } else if self.zone_size_bytes == 0 || self.zone_size_bytes % block != 0 {
            Some(format!(
                "zone_size_bytes {} is not a positive multiple of {block}",
                self.zone_size_bytes
            ))
        } else if self.zone_capacity_bytes == 0
            || self.zone_capacity_bytes % block != 0
            || self.zone_capacity_bytes > self.zone_size_bytes
        {
            Some(format!(
                "zone_capacity_bytes {} is not a positive multiple of {block} <= zone_size_bytes",
                self.zone_capacity_bytes
            ))
        } else if self.zone_count == 0 {
            Some("zone_count is 0".to_string())
        } else if self.zone_size_bytes.checked_mul(u64::from(self.zone_count)).is_none() {
            Some("zone_size_bytes * zone_count overflows".to_string())
        } else if self.max_io_bytes == 0 || u64::from(self.max_io_bytes) % block != 0 {
            Some(format!(
                "max_io_bytes {} is not a positive multiple of {block}",
                self.max_io_bytes
            ))
        } else {
            None
        };
        match problem {
            Some(reason) => Err(bad_sim(reason)),
            None => Ok(()),
        }
    }

    fn geometry(&self) -> Geometry {
        Geometry {
            kind: match self.model {
                SimModel::Emulated => DeviceKind::File,
                SimModel::Zoned => DeviceKind::Zoned,
            },
            zone_size_bytes: self.zone_size_bytes,
            zone_count: self.zone_count,
            logical_block_bytes: self.logical_block_bytes,
            physical_block_bytes: self.logical_block_bytes,
            max_io_bytes: self.max_io_bytes,
            max_open_zones: self.max_open_zones,
            max_active_zones: self.max_active_zones,
        }
    }
}

/// When an injected fault fires.
#[derive(Debug, Clone, PartialEq)]
pub enum Trigger {
    /// The n-th operation of its kind (read, write or flush) on this device, counted from 1
    /// among operations that passed validation; counts start again on a crashed disk.
    Nth(u64),
    /// Every operation whose byte range overlaps this one (never a flush).
    Range(Range<u64>),
    /// Each operation independently with this probability (0.0..=1.0), drawn from the seed.
    Probability(f64),
}

impl Trigger {
    fn fires(&self, op_number: u64, span: &Range<u64>, rng: &mut Rng) -> bool {
        match self {
            Trigger::Nth(n) => op_number == *n,
            Trigger::Range(range) => overlaps(range, span),
            Trigger::Probability(p) => rng.chance(*p),
        }
    }

    fn validate(&self) -> Result<()> {
        match self {
            Trigger::Nth(0) => Err(bad_plan("Trigger::Nth counts from 1".to_string())),
            Trigger::Range(range) if range.start >= range.end => {
                Err(bad_plan(format!("Trigger::Range {range:?} is empty")))
            }
            Trigger::Probability(p) if !(0.0..=1.0).contains(p) => {
                Err(bad_plan(format!("Trigger::Probability {p} is outside 0.0..=1.0")))
            }
            _ => Ok(()),
        }
    }
}

/// Where a misdirected write's data lands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MisdirectTarget {
    /// A seeded block-aligned offset in the same zone (never the intended one when the zone
    /// has room for another), possibly over data written earlier.
    SameZone,
    /// A seeded block-aligned offset in a seeded other zone (the same zone on a 1-zone disk).
    OtherZone,
    /// Nowhere: the data is dropped.
    Nowhere,
    /// This device offset (block-aligned). If the write would not fit there before the end of
    /// the device, it is dropped.
    Offset(u64),
}

/// A write that reports success but whose data lands at the wrong place. The write pointer
/// moves as if it had been written where asked.
#[derive(Debug, Clone, PartialEq)]
pub struct Misdirect {
    /// Which writes.
    pub when: Trigger,
    /// Where their data goes.
    pub target: MisdirectTarget,
}

/// What a crash does to cached (not yet durable) writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashMode {
    /// Every cached write is lost (the default).
    LoseUnflushed,
    /// Every cached write survives (a cache that was written back just in time).
    KeepUnflushed,
    /// Each cached write (each piece of a split write) independently is lost, survives, or is
    /// torn, with equal chances.
    Tear(TearShape),
}

/// Which logical blocks a torn write keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TearShape {
    /// A prefix of at least one block and not all of them.
    Prefix,
    /// Any subset (each block kept with probability 1/2).
    Subset,
}

/// The faults armed on a [`SimDisk`]. The default arms none, loses cached writes at a crash
/// and yields on a quarter of the operations.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultPlan {
    /// Reads that fail with EIO (nothing is read).
    pub read_errors: Vec<Trigger>,
    /// Writes that fail with EIO (see the module docs for what they leave behind).
    pub write_errors: Vec<Trigger>,
    /// Flushes that fail with EIO (nothing becomes durable).
    pub flush_errors: Vec<Trigger>,
    /// Writes that report success but land elsewhere; the first matching entry applies.
    pub misdirected_writes: Vec<Misdirect>,
    /// What [`SimDisk::crash`] does to cached writes.
    pub crash: CrashMode,
    /// Fraction of operations (0.0..=1.0) that yield once before completing.
    pub yield_probability: f64,
}

impl Default for FaultPlan {
    fn default() -> Self {
        FaultPlan {
            read_errors: Vec::new(),
            write_errors: Vec::new(),
            flush_errors: Vec::new(),
            misdirected_writes: Vec::new(),
            crash: CrashMode::LoseUnflushed,
            yield_probability: YIELD_PROBABILITY_DEFAULT,
        }
    }
}

impl FaultPlan {
    /// Checks probabilities, counts, ranges and target alignment.
    pub fn validate(&self, config: &SimConfig) -> Result<()> {
        let triggers = self.read_errors.iter().chain(&self.write_errors).chain(&self.flush_errors);
        for trigger in triggers.chain(self.misdirected_writes.iter().map(|m| &m.when)) {
            trigger.validate()?;
        }
        for m in &self.misdirected_writes {
            if let MisdirectTarget::Offset(at) = m.target {
                if at % u64::from(config.logical_block_bytes) != 0 {
                    return Err(bad_plan(format!("misdirect target {at} is not block-aligned")));
                }
            }
        }
        if !(0.0..=1.0).contains(&self.yield_probability) {
            return Err(bad_plan(format!(
                "yield_probability {} is outside 0.0..=1.0",
                self.yield_probability
            )));
        }
        Ok(())
    }
}

/// What a crash did to one cached write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteFate {
    /// Nothing of it is on the media.
    Lost,
    /// All of it is on the media.
    Survived,
    /// Only these logical blocks (indexes from the write's start) are on the media.
    Torn {
        /// Blocks kept, ascending.
        kept_blocks: Vec<u32>,
    },
}

/// One recorded fault or crash decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultEvent {
    /// A read failed with EIO.
    ReadError {
        /// The read's number on its device.
        op_number: u64,
        /// First byte.
        offset: u64,
        /// Bytes asked.
        len_bytes: u64,
    },
    /// A write failed with EIO; `prefix_bytes` of it reached the device's cache (zoned model).
    WriteError {
        /// The write's number on its device.
        op_number: u64,
        /// First byte.
        offset: u64,
        /// Bytes asked.
        len_bytes: u64,
        /// Bytes from `offset` that were cached anyway.
        prefix_bytes: u64,
    },
    /// The zoned device refused a write not at its own write pointer (after an earlier failed
    /// write moved it) with EIO. A consequence of a fault rather than a fault.
    WriteRefused {
        /// The write's number on its device.
        op_number: u64,
        /// First byte.
        offset: u64,
        /// Bytes asked.
        len_bytes: u64,
        /// The device's write pointer.
        write_pointer: u64,
    },
    /// A flush failed with EIO.
    FlushError {
        /// The flush's number on its device.
        op_number: u64,
    },
    /// A write reported success but its data went to `landed_at` (or nowhere).
    Misdirected {
        /// The write's number on its device.
        op_number: u64,
        /// Where it should have gone.
        offset: u64,
        /// Bytes written.
        len_bytes: u64,
        /// Where it went.
        landed_at: Option<u64>,
    },
    /// A bit of the durable image was flipped.
    BitFlip {
        /// Byte offset.
        offset: u64,
        /// Bit within the byte (0 = least significant).
        bit: u8,
    },
    /// Power was lost with `cached_writes` writes (pieces) not yet durable.
    Crash {
        /// Cached writes at the crash.
        cached_writes: u64,
        /// The crash mode applied.
        mode: CrashMode,
    },
    /// The fate of one cached write at a crash (not recorded under `LoseUnflushed`, where
    /// every cached write is lost).
    CrashWrite {
        /// The write's number on its device (pieces of one write share it).
        op_number: u64,
        /// Where the piece was meant to go.
        offset: u64,
        /// Where its data was (differs when misdirected; `None` when dropped).
        landed_at: Option<u64>,
        /// Bytes in the piece.
        len_bytes: u64,
        /// What survived.
        fate: WriteFate,
    },
}

/// A recorded fault, with the life of the device it happened on (0 for the first, +1 after
/// each crash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InjectedFault {
    /// Crashes before this event.
    pub epoch: u32,
    /// What happened.
    pub event: FaultEvent,
}

impl fmt::Display for InjectedFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "epoch {}: ", self.epoch)?;
        match &self.event {
            FaultEvent::ReadError { op_number, offset, len_bytes } => {
                write!(f, "read #{op_number} at {offset} (+{len_bytes}): EIO")
            }
            FaultEvent::WriteError { op_number, offset, len_bytes, prefix_bytes } => write!(
                f,
                "write #{op_number} at {offset} (+{len_bytes}): EIO, {prefix_bytes} bytes cached"
            ),
            FaultEvent::WriteRefused { op_number, offset, len_bytes, write_pointer } => write!(
                f,
                "write #{op_number} at {offset} (+{len_bytes}): refused, device pointer at \
                 {write_pointer}"
            ),
            FaultEvent::FlushError { op_number } => write!(f, "flush #{op_number}: EIO"),
            FaultEvent::Misdirected { op_number, offset, len_bytes, landed_at } => write!(
                f,
                "write #{op_number} at {offset} (+{len_bytes}) misdirected to {landed_at:?}"
            ),
            FaultEvent::BitFlip { offset, bit } => write!(f, "bit {bit} flipped at {offset}"),
            FaultEvent::Crash { cached_writes, mode } => {
                write!(f, "crash ({mode:?}) with {cached_writes} cached writes")
            }
            FaultEvent::CrashWrite { op_number, offset, landed_at, len_bytes, fate } => write!(
                f,
                "crash: write #{op_number} at {offset} (+{len_bytes}, data at {landed_at:?}): \
                 {fate:?}"
            ),
        }
    }
}

/// Operation counters of one device life. Operations count when they pass validation (typed
/// errors such as `NotAtWritePointer` do not count), including those that then fail with an
/// injected error; bytes count only successful transfers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SimStats {
    /// Reads.
    pub reads: u64,
    /// Writes (a split write counts once).
    pub writes: u64,
    /// Flushes.
    pub flushes: u64,
    /// Zone commands.
    pub zone_commands: u64,
    /// Bytes read successfully.
    pub bytes_read: u64,
    /// Bytes written successfully (misdirected ones included: they reported success).
    pub bytes_written: u64,
}

/// The durable content of a simulated disk, to inspect or to build a disk from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimImage {
    /// Every byte of the device (`zone_size_bytes * zone_count`).
    pub bytes: Vec<u8>,
    /// Zoned model: each zone's write pointer as the device reports it after power-up (the
    /// capacity end for a Full zone). Emulated model: empty (the device keeps none).
    pub write_pointers: Vec<u64>,
}

/// An in-memory zoned device with a volatile write cache and seeded faults; see the module
/// docs. One core owns it, like a real [`Disk`](super::Disk).
pub struct SimDisk {
    name: String,
    config: SimConfig,
    geometry: Geometry,
    seed: u64,
    inner: RefCell<Inner>,
}

impl fmt::Debug for SimDisk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = self.inner.borrow();
        f.debug_struct("SimDisk")
            .field("name", &self.name)
            .field("geometry", &self.geometry)
            .field("cached_writes", &inner.cache.len())
            .field("stats", &inner.stats)
            .finish()
    }
}

impl SimDisk {
    /// A fresh disk (every zone Empty, no faults armed) whose random choices all derive from
    /// `seed`.
    pub fn new(config: SimConfig, seed: u64) -> Result<SimDisk> {
        config.validate()?;
        let durable = Persisted::empty(&config);
        Ok(SimDisk::assemble(config, seed, 0, durable, true, FaultPlan::default(), Vec::new()))
    }

    /// A disk holding `image` as its durable content, as if reopened after a clean shutdown
    /// (emulated model: every zone Full until restored; zoned model: the image's write
    /// pointers, and bytes past them are dropped).
    pub fn from_image(config: SimConfig, seed: u64, image: &SimImage) -> Result<SimDisk> {
        config.validate()?;
        let durable = Persisted::from_image(&config, image)?;
        Ok(SimDisk::assemble(config, seed, 0, durable, false, FaultPlan::default(), Vec::new()))
    }

    /// The disk after power loss now: the durable state plus, per the plan's [`CrashMode`],
    /// the surviving parts of cached writes (each fate recorded in the log). The new disk
    /// keeps this disk's seed, log, crash mode and yield probability; its other faults are
    /// disarmed (arm them again with [`SimDisk::set_faults`]) and its counters start at 0.
    /// Writes in flight count as cached. This disk is left as it was, except for its log and
    /// its crash random stream (a second call draws new fates).
    pub fn crash(&self) -> SimDisk {
        let mut inner = self.inner.borrow_mut();
        let durable = inner.power_loss(&self.config);
        let plan = FaultPlan {
            crash: inner.plan.crash,
            yield_probability: inner.plan.yield_probability,
            ..FaultPlan::default()
        };
        let log = inner.log.clone();
        SimDisk::assemble(
            self.config.clone(),
            self.seed,
            inner.epoch + 1,
            durable,
            false,
            plan,
            log,
        )
    }

    /// Replaces the armed faults (operation counts are not reset).
    pub fn set_faults(&self, plan: FaultPlan) -> Result<()> {
        plan.validate(&self.config)?;
        self.inner.borrow_mut().plan = plan;
        Ok(())
    }

    /// The armed faults.
    pub fn fault_plan(&self) -> FaultPlan {
        self.inner.borrow().plan.clone()
    }

    /// Every fault injected and every crash decision so far, across crashes, oldest first.
    pub fn faults(&self) -> Vec<InjectedFault> {
        self.inner.borrow().log.clone()
    }

    /// Counters of this device life.
    pub fn stats(&self) -> SimStats {
        self.inner.borrow().stats
    }

    /// The seed every random choice derives from.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Crashes survived so far (0 for a new disk).
    pub fn epoch(&self) -> u32 {
        self.inner.borrow().epoch
    }

    /// The shape this disk was built with.
    pub fn config(&self) -> &SimConfig {
        &self.config
    }

    /// Cached writes (pieces) not yet durable.
    pub fn cached_writes(&self) -> usize {
        self.inner.borrow().cache.len()
    }

    /// The durable content: what a crash with [`CrashMode::LoseUnflushed`] would leave.
    pub fn durable_image(&self) -> SimImage {
        let inner = self.inner.borrow();
        let write_pointers = match self.config.model {
            SimModel::Zoned => (0..self.config.zone_count)
                .map(|z| inner.durable.reported_zone(&self.config, z).write_pointer)
                .collect(),
            SimModel::Emulated => Vec::new(),
        };
        SimImage { bytes: inner.durable.media.image(), write_pointers }
    }

    /// Every byte as reads see it now (durable data overlaid with cached writes).
    pub fn cached_image(&self) -> Vec<u8> {
        self.inner.borrow().view(0, self.geometry.capacity_bytes() as usize)
    }

    /// Flips bit `bit` (0..8) of the durable byte at `offset`. A cached write covering that
    /// byte hides the flip from reads until the cached data is lost or written back.
    pub fn flip_bit(&self, offset: u64, bit: u8) -> Result<()> {
        let capacity = self.geometry.capacity_bytes();
        if offset >= capacity || bit >= 8 {
            return Err(Error::OutOfRange {
                what: "the device (bit flip)",
                offset,
                end: offset + 1,
                limit: capacity,
            });
        }
        let mut inner = self.inner.borrow_mut();
        inner.durable.media.flip(offset, bit);
        inner.record(FaultEvent::BitFlip { offset, bit });
        Ok(())
    }

    /// Flips a seeded bit of the durable bytes in `range`; returns its offset and bit.
    pub fn flip_random_bit_in(&self, range: Range<u64>) -> Result<(u64, u8)> {
        let capacity = self.geometry.capacity_bytes();
        if range.start >= range.end || range.end > capacity {
            return Err(Error::OutOfRange {
                what: "the device (bit flip)",
                offset: range.start,
                end: range.end,
                limit: capacity,
            });
        }
        let (offset, bit) = {
            let mut inner = self.inner.borrow_mut();
            let offset = range.start + inner.rng.faults.below(range.end - range.start);
            (offset, inner.rng.faults.below(8) as u8)
        };
        self.flip_bit(offset, bit)?;
        Ok((offset, bit))
    }

    /// Sets an emulated zone's write pointer from the owner's recovery, as
    /// [`Disk::restore_write_pointer`](super::Disk::restore_write_pointer). Refused on the
    /// zoned model, whose pointers are the device's.
    pub fn restore_write_pointer(&self, zone: ZoneIndex, write_pointer: u64) -> Result<()> {
        if self.config.model == SimModel::Zoned {
            return Err(Error::Unsupported { op: OpKind::Write });
        }
        self.inner.borrow_mut().table.restore_write_pointer(zone, write_pointer)
    }

    /// The open/active accounting of the host's zone table.
    pub fn open_and_active(&self) -> (u32, u32) {
        let inner = self.inner.borrow();
        (inner.table.open_count(), inner.table.active_count())
    }

    fn assemble(
        config: SimConfig,
        seed: u64,
        epoch: u32,
        durable: Persisted,
        fresh: bool,
        plan: FaultPlan,
        log: Vec<InjectedFault>,
    ) -> SimDisk {
        let geometry = config.geometry();
        let (table, device) = match config.model {
            SimModel::Zoned => {
                let zones = (0..config.zone_count).map(|z| durable.reported_zone(&config, z));
                let table = ZoneTable::new(
                    zones.collect(),
                    config.zone_size_bytes,
                    config.max_open_zones,
                    config.max_active_zones,
                );
                (table.clone(), Some(table))
            }
            SimModel::Emulated => {
                let condition = if fresh { ZoneCondition::Empty } else { ZoneCondition::Full };
                let table = ZoneTable::emulated(
                    config.zone_count,
                    config.zone_size_bytes,
                    config.zone_capacity_bytes,
                    condition,
                    config.max_open_zones,
                    config.max_active_zones,
                );
                (table, None)
            }
        };
        let inner = Inner {
            table,
            device,
            durable,
            cache: Vec::new(),
            next_seq: 0,
            plan,
            rng: Streams::new(seed, epoch),
            stats: SimStats::default(),
            log,
            epoch,
            block_bytes: config.logical_block_bytes as usize,
            max_io_bytes: config.max_io_bytes as usize,
            zone_capacity_bytes: config.zone_capacity_bytes,
        };
        SimDisk {
            name: format!("sim({:?}, seed {seed:#x}, epoch {epoch})", config.model),
            config,
            geometry,
            seed,
            inner: RefCell::new(inner),
        }
    }

    /// The same checks as the real backends ([`Geometry::check_io`]).
    fn check_io(&self, offset: u64, len: usize, ptr: *const u8) -> Result<()> {
        self.geometry.check_io(offset, len, ptr)
    }

    /// Yields once with the plan's probability, so completions interleave per seed.
    async fn maybe_yield(&self) {
        let yields = {
            let mut inner = self.inner.borrow_mut();
            let p = inner.plan.yield_probability;
            inner.rng.schedule.chance(p)
        };
        if yields {
            yield_now().await;
        }
    }
}

impl Device for SimDisk {
    fn geometry(&self) -> &Geometry {
        &self.geometry
    }

    fn zone(&self, zone: ZoneIndex) -> Zone {
        self.inner.borrow().table.zone(zone)
    }

    fn zones(&self) -> Vec<Zone> {
        self.inner.borrow().table.zones().to_vec()
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
        let Some(bytes) = bytes_of(&buf) else {
            return (Err(Error::Unsupported { op: OpKind::Write }), buf);
        };
        let submitted = self.inner.borrow_mut().submit_write(offset, bytes, flags);
        let ticket = match submitted {
            Ok(ticket) => ticket,
            Err(err) => return (Err(err), buf),
        };
        self.maybe_yield().await;
        let result = self.inner.borrow_mut().complete_write(ticket);
        (result, buf)
    }

    async fn read_at<B: IoBufMut + Unpin>(
        &self,
        offset: u64,
        mut buf: B,
        len: usize,
    ) -> (Result<()>, B) {
        if let Err(err) = self.check_io(offset, len, buf.stable_ptr()) {
            return (Err(err), buf);
        }
        if len == 0 {
            return (Ok(()), buf);
        }
        if len > buf.bytes_total() {
            let limit = buf.bytes_total() as u64;
            let err =
                Error::OutOfRange { what: "the read buffer", offset: 0, end: len as u64, limit };
            return (Err(err), buf);
        }
        if !fillable(&buf) {
            return (Err(Error::Unsupported { op: OpKind::Read }), buf);
        }
        let submitted = self.inner.borrow_mut().submit_read(offset, len as u64);
        self.maybe_yield().await;
        if let Err(err) = submitted {
            return (Err(err), buf);
        }
        let data = self.inner.borrow_mut().complete_read(offset, len);
        let filled = fill(&mut buf, &data);
        assert!(filled, "buffer type checked as fillable before the read");
        (Ok(()), buf)
    }

    async fn flush(&self) -> Result<()> {
        let ticket = self.inner.borrow_mut().submit_flush();
        self.maybe_yield().await;
        self.inner.borrow_mut().complete_flush(ticket)
    }

    async fn zone_command(&self, zone: ZoneIndex, command: ZoneCommand) -> Result<()> {
        self.inner.borrow_mut().submit_zone_command(zone, command)?;
        self.maybe_yield().await;
        self.inner.borrow_mut().complete_zone_command(zone, command)
    }

    async fn refresh_zone(&self, zone: ZoneIndex) -> Result<Zone> {
        if zone >= self.config.zone_count {
            return Err(Error::OutOfRange {
                what: "the device's zone count",
                offset: u64::from(zone),
                end: u64::from(zone),
                limit: u64::from(self.config.zone_count),
            });
        }
        self.maybe_yield().await;
        Ok(self.inner.borrow_mut().refresh(zone))
    }

    fn restore_write_pointer(&self, zone: ZoneIndex, write_pointer: u64) -> Result<()> {
        SimDisk::restore_write_pointer(self, zone, write_pointer)
    }

    fn name(&self) -> &str {
        &self.name
    }
}

/// Everything that changes: zone state, media, cache, faults and counters.
#[derive(Debug)]
struct Inner {
    /// The host's zone table (what `Device::zone` reports).
    table: ZoneTable,
    /// Zoned model: the device's own zone state, the truth the host re-reads.
    device: Option<ZoneTable>,
    /// What survives power loss.
    durable: Persisted,
    /// Writes not yet durable, in submission order.
    cache: Vec<CachedWrite>,
    next_seq: u64,
    plan: FaultPlan,
    rng: Streams,
    stats: SimStats,
    log: Vec<InjectedFault>,
    epoch: u32,
    block_bytes: usize,
    max_io_bytes: usize,
    zone_capacity_bytes: u64,
}

/// A submitted write, finished when it completes.
#[derive(Debug)]
struct WriteTicket {
    result: Result<()>,
    zone: ZoneIndex,
    seqs: Range<u64>,
    dsync: bool,
    refresh: bool,
}

/// A submitted flush: on success, the cached writes before `seq_end` become durable.
#[derive(Debug)]
struct FlushTicket {
    result: Result<()>,
    seq_end: u64,
}

impl Inner {
    fn record(&mut self, event: FaultEvent) {
        self.log.push(InjectedFault { epoch: self.epoch, event });
    }

    /// Validates a write, injects its faults and puts its data in the cache.
    fn submit_write(
        &mut self,
        offset: u64,
        bytes: Vec<u8>,
        flags: WriteFlags,
    ) -> Result<WriteTicket> {
        let zone = self.table.prepare_write(offset, bytes.len() as u64)?.zone;
        self.stats.writes += 1;
        let op_number = self.stats.writes;
        let len = bytes.len() as u64;
        let span = offset..offset + len;
        let first_seq = self.next_seq;
        let fails =
            self.plan.write_errors.iter().any(|t| t.fires(op_number, &span, &mut self.rng.faults));
        let result = if fails {
            self.fail_write(zone, op_number, offset, &bytes)
        } else {
            self.device_write(zone, op_number, offset, len).map(|()| {
                let landed_at = self.misdirect(op_number, offset, len);
                self.cache_pieces(zone, op_number, offset, landed_at, &bytes);
                self.stats.bytes_written += len;
            })
        };
        let refresh = result.is_err() && self.device.is_some();
        Ok(WriteTicket {
            result,
            zone,
            seqs: first_seq..self.next_seq,
            dsync: flags.dsync,
            refresh,
        })
    }

    /// An injected write error: on the zoned model a seeded prefix of blocks reaches the
    /// device's cache and moves its write pointer.
    fn fail_write(
        &mut self,
        zone: ZoneIndex,
        op_number: u64,
        offset: u64,
        bytes: &[u8],
    ) -> Result<()> {
        let mut prefix_bytes = 0;
        if let Some(device) = self.device.as_mut() {
            let blocks = (bytes.len() / self.block_bytes) as u64;
            let candidate = self.rng.faults.below(blocks) * self.block_bytes as u64;
            if candidate > 0 && device.prepare_write(offset, candidate).is_ok() {
                prefix_bytes = candidate;
            }
        }
        if prefix_bytes > 0 {
            let prefix = &bytes[..prefix_bytes as usize];
            self.cache_pieces(zone, op_number, offset, Some(offset), prefix);
        }
        let len_bytes = bytes.len() as u64;
        self.record(FaultEvent::WriteError { op_number, offset, len_bytes, prefix_bytes });
        Err(media_error(OpKind::Write, offset))
    }

    /// Zoned model: the device checks the write against its own write pointer (it differs
    /// from the host's only after a failed write) and refuses a mismatch with EIO.
    fn device_write(
        &mut self,
        zone: ZoneIndex,
        op_number: u64,
        offset: u64,
        len: u64,
    ) -> Result<()> {
        let Some(device) = self.device.as_mut() else { return Ok(()) };
        if device.prepare_write(offset, len).is_ok() {
            return Ok(());
        }
        let write_pointer = device.zone(zone).write_pointer;
        self.record(FaultEvent::WriteRefused { op_number, offset, len_bytes: len, write_pointer });
        Err(media_error(OpKind::Write, offset))
    }

    /// Where a write's data lands: `offset`, unless a misdirect fires.
    fn misdirect(&mut self, op_number: u64, offset: u64, len: u64) -> Option<u64> {
        let span = offset..offset + len;
        let mut target = None;
        for m in &self.plan.misdirected_writes {
            if m.when.fires(op_number, &span, &mut self.rng.faults) {
                target = Some(m.target);
                break;
            }
        }
        let Some(target) = target else { return Some(offset) };
        let landed_at = match target {
            MisdirectTarget::Nowhere => None,
            MisdirectTarget::Offset(at) => {
                let capacity = self.durable.media.capacity_bytes();
                at.checked_add(len).filter(|&end| end <= capacity).map(|_| at)
            }
            MisdirectTarget::SameZone => {
                let start = offset - offset % self.durable.media.zone_size_bytes;
                Some(self.random_slot(start, len, Some(offset)))
            }
            MisdirectTarget::OtherZone => {
                let zone_count = self.table.len() as u64;
                let own = offset / self.durable.media.zone_size_bytes;
                let other = match zone_count {
                    1 => own,
                    n => (own + 1 + self.rng.faults.below(n - 1)) % n,
                };
                let start = other * self.durable.media.zone_size_bytes;
                Some(self.random_slot(start, len, None))
            }
        };
        self.record(FaultEvent::Misdirected { op_number, offset, len_bytes: len, landed_at });
        landed_at
    }

    /// A seeded block-aligned offset where `len` bytes fit in the zone starting at
    /// `zone_start`, other than `avoid` when there is a choice.
    fn random_slot(&mut self, zone_start: u64, len: u64, avoid: Option<u64>) -> u64 {
        let block = self.block_bytes as u64;
        let slots = (self.zone_capacity_bytes - len) / block + 1;
        match avoid {
            Some(avoid) if slots > 1 => {
                let slot = zone_start + self.rng.faults.below(slots - 1) * block;
                if slot >= avoid { slot + block } else { slot }
            }
            _ => zone_start + self.rng.faults.below(slots) * block,
        }
    }

    /// Caches a write as pieces of at most `max_io_bytes`, like the real backend's split.
    fn cache_pieces(
        &mut self,
        zone: ZoneIndex,
        op_number: u64,
        offset: u64,
        landed_at: Option<u64>,
        bytes: &[u8],
    ) {
        for (i, piece) in bytes.chunks(self.max_io_bytes).enumerate() {
            let pos = (i * self.max_io_bytes) as u64;
            self.cache.push(CachedWrite {
                seq: self.next_seq,
                op_number,
                offset: offset + pos,
                zone: Some(zone),
                landed_at: landed_at.map(|at| at + pos),
                bytes: piece.to_vec(),
            });
            self.next_seq += 1;
        }
    }

    fn complete_write(&mut self, ticket: WriteTicket) -> Result<()> {
        if ticket.refresh {
            self.refresh(ticket.zone);
        }
        if ticket.result.is_ok() && ticket.dsync {
            let WriteTicket { zone, seqs, .. } = ticket;
            if self.device.is_some() {
                // In-order media: the zone cannot hold this write without what precedes it.
                self.persist(|w| {
                    w.seq < seqs.end && (seqs.contains(&w.seq) || w.zone == Some(zone))
                });
            } else {
                self.persist(|w| seqs.contains(&w.seq));
            }
        }
        ticket.result
    }

    fn submit_read(&mut self, offset: u64, len: u64) -> Result<()> {
        self.stats.reads += 1;
        let op_number = self.stats.reads;
        let span = offset..offset + len;
        if self.plan.read_errors.iter().any(|t| t.fires(op_number, &span, &mut self.rng.faults)) {
            self.record(FaultEvent::ReadError { op_number, offset, len_bytes: len });
            return Err(media_error(OpKind::Read, offset));
        }
        Ok(())
    }

    fn complete_read(&mut self, offset: u64, len: usize) -> Vec<u8> {
        self.stats.bytes_read += len as u64;
        self.view(offset, len)
    }

    /// The bytes reads see: durable data overlaid with cached writes in submission order.
    fn view(&self, offset: u64, len: usize) -> Vec<u8> {
        let mut out = vec![0; len];
        self.durable.media.read(offset, &mut out);
        let want = offset..offset + len as u64;
        for write in &self.cache {
            let Some(at) = write.landed_at else { continue };
            let have = at..at + write.bytes.len() as u64;
            if !overlaps(&have, &want) {
                continue;
            }
            let start = have.start.max(want.start);
            let end = have.end.min(want.end);
            let src = &write.bytes[(start - at) as usize..(end - at) as usize];
            out[(start - offset) as usize..(end - offset) as usize].copy_from_slice(src);
        }
        out
    }

    fn submit_flush(&mut self) -> FlushTicket {
        self.stats.flushes += 1;
        let op_number = self.stats.flushes;
        let no_span = 0..0;
        let fails = self
            .plan
            .flush_errors
            .iter()
            .any(|t| t.fires(op_number, &no_span, &mut self.rng.faults));
        let result = if fails {
            self.record(FaultEvent::FlushError { op_number });
            Err(media_error(OpKind::Fsync, 0))
        } else {
            Ok(())
        };
        FlushTicket { result, seq_end: self.next_seq }
    }

    fn complete_flush(&mut self, ticket: FlushTicket) -> Result<()> {
        if ticket.result.is_ok() {
            self.persist(|w| w.seq < ticket.seq_end);
        }
        ticket.result
    }

    fn submit_zone_command(&mut self, zone: ZoneIndex, command: ZoneCommand) -> Result<()> {
        self.table.check_command(zone, command)?;
        self.stats.zone_commands += 1;
        Ok(())
    }

    /// Applies a zone command when it completes: to the host's table (emulated) or to the
    /// device's, then re-read (zoned), and to the media.
    fn complete_zone_command(&mut self, zone: ZoneIndex, command: ZoneCommand) -> Result<()> {
        match self.device.as_mut() {
            Some(device) => {
                self.table.check_command(zone, command)?;
                let outcome = device.apply_command(zone, command);
                let fresh = device.zone(zone);
                self.table.set_zone(fresh);
                if outcome.is_err() {
                    return Err(media_error(OpKind::Ioctl, fresh.start));
                }
            }
            None => self.table.apply_command(zone, command)?,
        }
        match command {
            ZoneCommand::Reset => self.reset_zone_data(zone),
            ZoneCommand::Finish => self.durable.finished[zone as usize] = true,
            ZoneCommand::Open | ZoneCommand::Close => {}
        }
        Ok(())
    }

    /// A completed reset: the zone's durable data is gone, and so is every cached write meant
    /// for it or landing in it.
    fn reset_zone_data(&mut self, zone: ZoneIndex) {
        let zone_size = self.durable.media.zone_size_bytes;
        let zone_span = u64::from(zone) * zone_size..(u64::from(zone) + 1) * zone_size;
        self.durable.media.clear_zone(zone);
        self.durable.write_pointers[zone as usize] = zone_span.start;
        self.durable.finished[zone as usize] = false;
        for write in &mut self.cache {
            if write.zone == Some(zone) {
                write.zone = None;
            }
            if let Some(at) = write.landed_at {
                if overlaps(&(at..at + write.bytes.len() as u64), &zone_span) {
                    write.landed_at = None;
                }
            }
        }
        self.cache.retain(|w| w.zone.is_some() || w.landed_at.is_some());
    }

    /// The host's view of `zone` after re-reading it (zoned: from the device).
    fn refresh(&mut self, zone: ZoneIndex) -> Zone {
        match &self.device {
            Some(device) => {
                let fresh = device.zone(zone);
                self.table.set_zone(fresh);
                fresh
            }
            None => self.table.zone(zone),
        }
    }

    /// Moves the cached writes `pick` selects to the durable state, in submission order.
    fn persist(&mut self, pick: impl Fn(&CachedWrite) -> bool) {
        let cache = std::mem::take(&mut self.cache);
        for write in cache {
            if pick(&write) {
                let blocks = write.bytes.len() / self.block_bytes;
                self.durable.apply(&write, &vec![true; blocks], self.block_bytes);
            } else {
                self.cache.push(write);
            }
        }
    }

    /// The durable state after power loss now, with each cached write's fate drawn and
    /// recorded. Leaves the cache as it is.
    fn power_loss(&mut self, config: &SimConfig) -> Persisted {
        let mode = self.plan.crash;
        let block = self.block_bytes;
        self.record(FaultEvent::Crash { cached_writes: self.cache.len() as u64, mode });
        let mut durable = self.durable.clone();
        // Zoned model: a zone whose cached data already lost a block keeps nothing after it.
        let mut zone_cut = vec![false; config.zone_count as usize];
        let mut events = Vec::new();
        for write in &self.cache {
            let mut keep = draw_fate(mode, write.bytes.len() / block, &mut self.rng.crash);
            if let (SimModel::Zoned, Some(zone)) = (config.model, write.zone) {
                let cut = &mut zone_cut[zone as usize];
                let prefix = if *cut { 0 } else { keep.iter().take_while(|&&k| k).count() };
                keep[prefix..].fill(false);
                *cut |= prefix < keep.len();
            }
            durable.apply(write, &keep, block);
            if mode != CrashMode::LoseUnflushed {
                events.push(FaultEvent::CrashWrite {
                    op_number: write.op_number,
                    offset: write.offset,
                    landed_at: write.landed_at,
                    len_bytes: write.bytes.len() as u64,
                    fate: fate_of(&keep),
                });
            }
        }
        for event in events {
            self.record(event);
        }
        durable
    }
}

/// One cached write (a piece of at most `max_io_bytes`).
#[derive(Debug, Clone)]
struct CachedWrite {
    /// Submission order.
    seq: u64,
    /// The write's number (shared by its pieces), for the log.
    op_number: u64,
    /// Where it was meant to go.
    offset: u64,
    /// The zone whose write pointer it advanced; `None` once that zone was reset.
    zone: Option<ZoneIndex>,
    /// Where its data is; `None` when misdirected nowhere or dropped by a reset.
    landed_at: Option<u64>,
    bytes: Vec<u8>,
}

/// The state that survives power loss.
#[derive(Debug, Clone)]
struct Persisted {
    media: Media,
    /// Zoned model: each zone's durable write pointer (end of its durable prefix).
    write_pointers: Vec<u64>,
    /// Zoned model: zones finished (Full whatever their pointer).
    finished: Vec<bool>,
}

impl Persisted {
    fn empty(config: &SimConfig) -> Persisted {
        let starts = (0..config.zone_count).map(|z| u64::from(z) * config.zone_size_bytes);
        Persisted {
            media: Media::new(config.zone_count, config.zone_size_bytes),
            write_pointers: starts.collect(),
            finished: vec![false; config.zone_count as usize],
        }
    }

    fn from_image(config: &SimConfig, image: &SimImage) -> Result<Persisted> {
        let capacity = config.zone_size_bytes * u64::from(config.zone_count);
        if image.bytes.len() as u64 != capacity {
            let reason = format!("image has {} bytes, the disk {capacity}", image.bytes.len());
            return Err(bad_sim(reason));
        }
        let mut durable = Persisted::empty(config);
        if config.model == SimModel::Emulated {
            if !image.write_pointers.is_empty() {
                return Err(bad_sim("an emulated disk's image has no write pointers".to_string()));
            }
            for (z, bytes) in image.bytes.chunks(config.zone_size_bytes as usize).enumerate() {
                if bytes.iter().any(|&b| b != 0) {
                    durable.media.write(z as u64 * config.zone_size_bytes, bytes);
                }
            }
            return Ok(durable);
        }
        if image.write_pointers.len() != config.zone_count as usize {
            let reason = format!(
                "image has {} write pointers for {} zones",
                image.write_pointers.len(),
                config.zone_count
            );
            return Err(bad_sim(reason));
        }
        for (z, &wp) in image.write_pointers.iter().enumerate() {
            let start = z as u64 * config.zone_size_bytes;
            let end = start + config.zone_capacity_bytes;
            if wp < start || wp > end || wp % u64::from(config.logical_block_bytes) != 0 {
                return Err(bad_sim(format!(
                    "zone {z}: write pointer {wp} outside {start}..={end}"
                )));
            }
            durable.media.write(start, &image.bytes[start as usize..wp as usize]);
            durable.write_pointers[z] = wp;
        }
        Ok(durable)
    }

    /// Writes the blocks of `write` that `keep` selects where its data landed, and (zoned)
    /// moves its zone's durable pointer past its kept prefix.
    fn apply(&mut self, write: &CachedWrite, keep: &[bool], block: usize) {
        if let Some(at) = write.landed_at {
            for (i, chunk) in write.bytes.chunks(block).enumerate() {
                if keep[i] {
                    self.media.write(at + (i * block) as u64, chunk);
                }
            }
        }
        let prefix = keep.iter().take_while(|&&k| k).count();
        if let (Some(zone), true) = (write.zone, prefix > 0) {
            let end = write.offset + (prefix * block) as u64;
            let wp = &mut self.write_pointers[zone as usize];
            *wp = (*wp).max(end);
        }
    }

    /// Zone `z` as a zoned device reports it after power-up.
    fn reported_zone(&self, config: &SimConfig, z: ZoneIndex) -> Zone {
        let start = u64::from(z) * config.zone_size_bytes;
        let capacity_end = start + config.zone_capacity_bytes;
        let wp = self.write_pointers[z as usize];
        let (write_pointer, condition) = if self.finished[z as usize] || wp >= capacity_end {
            (capacity_end, ZoneCondition::Full)
        } else if wp == start {
            (start, ZoneCondition::Empty)
        } else {
            (wp, ZoneCondition::Closed)
        };
        Zone {
            index: z,
            start,
            capacity_bytes: config.zone_capacity_bytes,
            write_pointer,
            condition,
            zone_type: ZoneType::SequentialRequired,
        }
    }
}

/// Durable bytes. A zone's buffer is allocated at its first write (until then it reads as
/// zeros) and shared copy-on-write, so the copy a crash takes costs nothing until written.
#[derive(Debug, Clone)]
struct Media {
    zones: Vec<Rc<Vec<u8>>>,
    zone_size_bytes: u64,
}

impl Media {
    fn new(zone_count: u32, zone_size_bytes: u64) -> Media {
        let zones = (0..zone_count).map(|_| Rc::new(Vec::new())).collect();
        Media { zones, zone_size_bytes }
    }

    fn capacity_bytes(&self) -> u64 {
        self.zone_size_bytes * self.zones.len() as u64
    }

    /// The zone pieces of `offset..offset + len`: (zone, offset in zone, range in the buffer).
    fn segments(&self, offset: u64, len: usize) -> Vec<(usize, usize, Range<usize>)> {
        assert!(offset + len as u64 <= self.capacity_bytes(), "media access beyond the device");
        let mut out = Vec::new();
        let mut pos = 0;
        while pos < len {
            let at = offset + pos as u64;
            let zone = (at / self.zone_size_bytes) as usize;
            let in_zone = (at % self.zone_size_bytes) as usize;
            let n = (self.zone_size_bytes as usize - in_zone).min(len - pos);
            out.push((zone, in_zone, pos..pos + n));
            pos += n;
        }
        out
    }

    /// Fills `out` with the bytes at `offset` (zeros where nothing was written).
    fn read(&self, offset: u64, out: &mut [u8]) {
        for (zone, in_zone, range) in self.segments(offset, out.len()) {
            let data = &self.zones[zone];
            let available = data.len().saturating_sub(in_zone).min(range.len());
            let (have, zeros) = out[range].split_at_mut(available);
            if available > 0 {
                have.copy_from_slice(&data[in_zone..in_zone + available]);
            }
            zeros.fill(0);
        }
    }

    fn write(&mut self, offset: u64, bytes: &[u8]) {
        let zone_size = self.zone_size_bytes as usize;
        for (zone, in_zone, range) in self.segments(offset, bytes.len()) {
            let shared = &mut self.zones[zone];
            if shared.is_empty() {
                // Zeroed allocation: the OS maps the zeros lazily, and it is fast in debug
                // builds (unlike growing with `resize`).
                *shared = Rc::new(vec![0; zone_size]);
            }
            let data = Rc::make_mut(shared);
            data[in_zone..in_zone + range.len()].copy_from_slice(&bytes[range]);
        }
    }

    fn flip(&mut self, offset: u64, bit: u8) {
        let mut byte = [0];
        self.read(offset, &mut byte);
        byte[0] ^= 1 << bit;
        self.write(offset, &byte);
    }

    fn clear_zone(&mut self, zone: ZoneIndex) {
        self.zones[zone as usize] = Rc::new(Vec::new());
    }

    fn image(&self) -> Vec<u8> {
        let mut out = vec![0; self.capacity_bytes() as usize];
        self.read(0, &mut out);
        out
    }
}

/// Which blocks of a cached write of `blocks` blocks survive a crash.
fn draw_fate(mode: CrashMode, blocks: usize, rng: &mut Rng) -> Vec<bool> {
    match mode {
        CrashMode::LoseUnflushed => vec![false; blocks],
        CrashMode::KeepUnflushed => vec![true; blocks],
        CrashMode::Tear(shape) => match rng.below(3) {
            0 => vec![false; blocks],
            1 => vec![true; blocks],
            // A single block is never torn: it is kept or lost whole.
            _ if blocks < 2 => vec![rng.chance(0.5); blocks],
            _ => match shape {
                TearShape::Prefix => {
                    let kept = 1 + rng.below(blocks as u64 - 1) as usize;
                    (0..blocks).map(|i| i < kept).collect()
                }
                TearShape::Subset => (0..blocks).map(|_| rng.chance(0.5)).collect(),
            },
        },
    }
}

fn fate_of(keep: &[bool]) -> WriteFate {
    if keep.iter().all(|&k| k) {
        WriteFate::Survived
    } else if keep.iter().all(|&k| !k) {
        WriteFate::Lost
    } else {
        let kept_blocks = (0..keep.len()).filter(|&i| keep[i]).map(|i| i as u32).collect();
        WriteFate::Torn { kept_blocks }
    }
}

/// The seeded random streams, one per concern, so that (for example) changing the yield
/// probability does not change which writes a crash tears.
#[derive(Debug, Clone)]
struct Streams {
    schedule: Rng,
    faults: Rng,
    crash: Rng,
}

impl Streams {
    fn new(seed: u64, epoch: u32) -> Streams {
        let stream = |id: u64| {
            let mut mix = Rng(seed ^ (u64::from(epoch) << 32 | id).wrapping_mul(GOLDEN_GAMMA));
            Rng(mix.next_u64())
        };
        Streams { schedule: stream(1), faults: stream(2), crash: stream(3) }
    }
}

const GOLDEN_GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

/// splitmix64: small, fast, and good enough for choosing faults.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(GOLDEN_GAMMA);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0), by multiply-shift.
    fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "empty random range");
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// True with probability `p`.
    fn chance(&mut self, p: f64) -> bool {
        let unit = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        unit < p
    }
}

/// The bytes a write sends, for the buffer types the simulator can view without `unsafe`.
fn bytes_of<B: IoBuf>(buf: &B) -> Option<Vec<u8>> {
    let any: &dyn Any = buf;
    let inner = |any: &dyn Any| -> Option<Vec<u8>> {
        if let Some(v) = any.downcast_ref::<Vec<u8>>() {
            return Some(v.clone());
        }
        if let Some(b) = any.downcast_ref::<AlignedBuf>() {
            return Some(b.to_vec());
        }
        any.downcast_ref::<PooledBuf>().map(|b| b.to_vec())
    };
    inner(any)
        .or_else(|| any.downcast_ref::<Rc<Vec<u8>>>().and_then(|rc| inner(&**rc)))
        .or_else(|| any.downcast_ref::<Rc<AlignedBuf>>().and_then(|rc| inner(&**rc)))
        .or_else(|| any.downcast_ref::<Rc<PooledBuf>>().and_then(|rc| inner(&**rc)))
}

/// True when [`fill`] can write into this buffer type.
fn fillable<B: IoBufMut>(buf: &B) -> bool {
    let any: &dyn Any = buf;
    any.is::<Vec<u8>>() || any.is::<AlignedBuf>() || any.is::<PooledBuf>()
}

/// Copies `data` to the start of `buf` and extends its initialised length to cover it, as a
/// read's `set_init` does. The caller checked that `data` fits in `bytes_total()`.
fn fill<B: IoBufMut>(buf: &mut B, data: &[u8]) -> bool {
    let any: &mut dyn Any = buf;
    if let Some(v) = any.downcast_mut::<Vec<u8>>() {
        if v.len() < data.len() {
            v.resize(data.len(), 0);
        }
        v[..data.len()].copy_from_slice(data);
        return true;
    }
    if let Some(b) = any.downcast_mut::<AlignedBuf>() {
        fill_aligned(b, data);
        return true;
    }
    if let Some(b) = any.downcast_mut::<PooledBuf>() {
        fill_aligned(b, data);
        return true;
    }
    false
}

fn fill_aligned(buf: &mut AlignedBuf, data: &[u8]) {
    let len = buf.len().max(data.len());
    buf.set_len(len);
    buf[..data.len()].copy_from_slice(data);
}

fn overlaps(a: &Range<u64>, b: &Range<u64>) -> bool {
    a.start < b.end && b.start < a.end
}

fn media_error(op: OpKind, offset: u64) -> Error {
    Error::Media { op, offset, errno_name: "EIO" }
}

fn bad_sim(reason: String) -> Error {
    Error::BadDevice { path: "simulated disk".to_string(), reason }
}

fn bad_plan(reason: String) -> Error {
    bad_sim(format!("fault plan: {reason}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rng_is_deterministic_and_below_stays_in_range() {
        let mut a = Rng(7);
        let mut b = Rng(7);
        for _ in 0..1000 {
            let x = a.below(10);
            assert_eq!(x, b.below(10));
            assert!(x < 10);
        }
        assert!(!Rng(1).chance(0.0));
        assert!(Rng(1).chance(1.0));
    }

    #[test]
    fn media_reads_zeros_where_nothing_was_written() {
        let mut media = Media::new(2, 8192);
        media.write(8192 - 2, &[1, 2, 3, 4]);
        let mut out = [9; 6];
        media.read(8192 - 3, &mut out);
        assert_eq!(out, [0, 1, 2, 3, 4, 0]);
        media.flip(8192, 0);
        media.read(8192, &mut out[..1]);
        assert_eq!(out[0], 2);
        media.clear_zone(1);
        assert_eq!(media.image()[8192..], [0; 8192]);
    }

    #[test]
    fn prefix_tears_keep_at_least_one_block_and_lose_at_least_one() {
        let mut rng = Rng(3);
        for _ in 0..200 {
            let keep = draw_fate(CrashMode::Tear(TearShape::Prefix), 5, &mut rng);
            if let WriteFate::Torn { kept_blocks } = fate_of(&keep) {
                assert!(!kept_blocks.is_empty() && kept_blocks.len() < 5);
                assert!(kept_blocks.iter().enumerate().all(|(i, &b)| b as usize == i));
            }
        }
    }
}
