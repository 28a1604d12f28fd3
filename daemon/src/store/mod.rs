//! The per-disk store: an append-only log of self-describing records over the disk's zones,
//! durable group commit, the in-memory index, reads that verify every byte they return, index
//! checkpoints, and crash recovery. One core owns a store; everything here runs on that core's
//! executor (no locks: `Cell`/`RefCell`).
//!
//! Layout of the disk (docs/FORMAT.md): zone 0 holds the superblock; zones 1..=2C hold two
//! alternating checkpoint sets of C zones; the remaining zones hold the log. Files:
//! `format` (bytes), `index` (memory), `writer` (PUT/DELETE, group commit), `reader` (GET,
//! STAT), `checkpoint` (writing checkpoints), `recovery` (opening a disk), `scan` (read-only
//! views for the offline admin tools).

mod checkpoint;
pub mod format;
pub mod index;
mod reader;
mod recovery;
pub mod scan;
mod writer;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::task::Waker;

use ioengine::device::{Device, ZoneIndex};

use crate::metrics::StoreMetrics;

pub use format::{Checksummed, Key, Location};
use format::{FormatError, Superblock};
use index::Index;
pub use reader::{ReadBuf, ReadValue, Stat};
pub use recovery::{RecoveryReport, format, read_superblock, uuid_hex};
use writer::Writer;
pub use writer::{PutOutcome, ValueBuf};

/// Default cap on a value's length (the design brief: 1 B to 16 MiB, configurable).
pub const VALUE_BYTES_MAX_DEFAULT: u32 = 16 << 20;
/// Bytes of one batch buffer: batches up to this size use the per-disk buffer pool; a record
/// too large for it gets a batch (and buffer) of its own.
pub const BATCH_BYTES: usize = 2 << 20;
/// Largest value written detached from its header, when it is a whole number of blocks: a GET
/// of it reads its blocks and nothing else (the header and its checksums are elsewhere in the
/// batch). Sealing a batch moves its detached values once, so the cap bounds that copy.
pub const DETACHED_VALUE_BYTES_MAX: usize = 16 << 10;
/// Batches of one disk in flight at once (pipelined durable writes, acknowledged in order),
/// as long as they hold fewer than [`PIPELINE_BYTES_MAX`] bytes. Shared batches are also bounded
/// by their buffer pool ([`POOLED_BATCHES`]); the deeper pipeline is for values large enough to
/// be their own batch: a device with a volatile cache and no FUA flushes after every write, and
/// more writes in flight share each flush (DECISIONS.md, "Group commit").
pub const PIPELINE_DEPTH: usize = 32;
/// The committer seals no batch while the batches in flight hold this many bytes: what can be
/// in flight at a crash, and so how far recovery looks past a torn write, stays bounded.
pub const PIPELINE_BYTES_MAX: usize = 32 << 20;
/// Buffers of the per-disk batch pool: the batches in flight and the open one, for batches
/// that share a pooled buffer ([`BATCH_BYTES`]).
pub const POOLED_BATCHES: usize = 9;
/// The depth of the pipeline of the daemons that wrote format versions 1 and 2 before the
/// byte bound: at most this many batches in flight, of any size. Recovery looks as far past a
/// torn write as such a daemon could have had in flight.
pub const PIPELINE_DEPTH_EARLIER: usize = 8;
/// A checkpoint is written after this many log bytes since the last one.
pub const CHECKPOINT_INTERVAL_BYTES_DEFAULT: u64 = 256 << 20;
/// ... or after this many records, whichever comes first: a restart after a crash scans at
/// most this many records (about 1.5 s per million on the development machine).
pub const CHECKPOINT_INTERVAL_RECORDS_DEFAULT: u64 = 1_000_000;
/// The per-store read pool: 256 buffers of 16 KiB (4 MiB), for GETs of small values and
/// header reads; larger reads allocate.
pub const READ_POOL: ioengine::buf::PoolConfig =
    ioengine::buf::PoolConfig { buf_bytes: 16 << 10, count: 256, align_bytes: 4096 };

/// Keys listed per LIST page at most.
pub const LIST_PAGE_MAX: usize = 10_000;

const _: () =
    assert!(PIPELINE_DEPTH >= 1 && POOLED_BATCHES >= 2 && PIPELINE_BYTES_MAX >= BATCH_BYTES);

/// How far past a region that fails to verify recovery looks for a later batch, on a disk
/// whose batches are at most `batch_limit_bytes`: everything that could have been in flight
/// with it. A writer seals one more batch only while less than [`PIPELINE_BYTES_MAX`] is in
/// flight; one of an earlier daemon had up to [`PIPELINE_DEPTH_EARLIER`] batches of any size.
pub fn resync_window_bytes(batch_limit_bytes: u64) -> u64 {
    (PIPELINE_BYTES_MAX as u64 + 2 * batch_limit_bytes)
        .max(batch_limit_bytes * (PIPELINE_DEPTH_EARLIER as u64 + 1))
}

/// How a batch is made durable before it is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyncMode {
    /// One write with RWF_DSYNC (FUA on devices that have it; the file system commits what
    /// the write needs on files).
    #[default]
    Dsync,
    /// A plain write, then fdatasync (a device cache flush) once it completed.
    WriteThenFdatasync,
}

/// Tunables of a store, validated by the config crate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreConfig {
    /// Largest value accepted, at most the superblock's `value_bytes_max`.
    pub value_bytes_max: u32,
    /// Log bytes between checkpoints.
    pub checkpoint_interval_bytes: u64,
    /// Records between checkpoints (whichever of the two limits comes first).
    pub checkpoint_interval_records: u64,
    /// How batches are made durable.
    pub sync: SyncMode,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            value_bytes_max: VALUE_BYTES_MAX_DEFAULT,
            checkpoint_interval_bytes: CHECKPOINT_INTERVAL_BYTES_DEFAULT,
            checkpoint_interval_records: CHECKPOINT_INTERVAL_RECORDS_DEFAULT,
            sync: SyncMode::default(),
        }
    }
}

/// How to format a disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormatOptions {
    /// Largest value the disk will accept.
    pub value_bytes_max: u32,
    /// Zones per checkpoint set (0: computed from the disk size).
    pub checkpoint_zones_per_set: u32,
}

impl Default for FormatOptions {
    fn default() -> Self {
        FormatOptions { value_bytes_max: VALUE_BYTES_MAX_DEFAULT, checkpoint_zones_per_set: 0 }
    }
}

/// Everything a store operation can fail with. Request paths map these 1:1 to wire statuses.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("key not found")]
    NotFound,
    #[error("the key exists with other content (blocks are immutable)")]
    ExistsWithOtherContent,
    #[error("value of {len} bytes exceeds the limit of {max} bytes")]
    ValueTooLarge { len: u64, max: u32 },
    #[error("range {offset}+{len} is outside the value of {value_len} bytes")]
    BadRange { offset: u64, len: u64, value_len: u32 },
    #[error("no space left on disk {disk}")]
    NoSpace { disk: String },
    #[error("checksum mismatch on disk {disk}, zone {zone}, offset {offset}: {detail}")]
    Checksum { disk: String, zone: ZoneIndex, offset: u64, detail: FormatError },
    #[error("corrupt record on disk {disk}, zone {zone}, offset {offset}: {detail}")]
    Corrupt { disk: String, zone: ZoneIndex, offset: u64, detail: String },
    #[error("I/O error on disk {disk}: {source}")]
    Io { disk: String, source: ioengine::Error },
    #[error("disk {disk} is not a shingle disk: {detail}")]
    NotFormatted { disk: String, detail: FormatError },
    #[error("disk {disk} does not match its superblock: {detail}")]
    GeometryMismatch { disk: String, detail: String },
    #[error("disk {disk} refuses writes: {reason}")]
    ReadOnly { disk: String, reason: String },
    #[error("disk {disk} cannot be formatted: {reason}")]
    CannotFormat { disk: String, reason: String },
}

/// Result with [`StoreError`].
pub type StoreResult<T> = Result<T, StoreError>;

/// Counters of one store, read by metrics and tests.
#[derive(Debug, Default)]
pub struct Stats {
    /// Batches written.
    pub batches: Cell<u64>,
    /// Records written (blocks and tombstones).
    pub records: Cell<u64>,
    /// Values written from the buffer they were received in, as a batch of their own, with no
    /// copy ([`Store::put_received`]).
    pub values_in_place: Cell<u64>,
    /// Values written detached from their headers (block-aligned after the batch's records).
    pub values_detached: Cell<u64>,
    /// GETs answered by reading a detached value's blocks alone (verified against the index).
    pub reads_value_only: Cell<u64>,
    /// Log bytes written (batches, padding included).
    pub log_bytes: Cell<u64>,
    /// Checksum errors seen by reads.
    pub checksum_errors: Cell<u64>,
    /// Checkpoints written.
    pub checkpoints: Cell<u64>,
    /// Live bytes of values.
    pub live_value_bytes: Cell<u64>,
    /// Where the store records its metrics (no-op handles until the server attaches some).
    metrics: RefCell<StoreMetrics>,
}

/// One disk's store.
pub struct Store<D: Device> {
    name: String,
    disk: D,
    superblock: Superblock,
    config: StoreConfig,
    block_bytes: usize,
    index: RefCell<Index>,
    writer: Writer,
    /// Index tags with a PUT or DELETE in progress, and the tasks waiting for them.
    busy_keys: RefCell<HashMap<u64, Vec<Waker>>>,
    /// Buffers for small reads.
    read_pool: ioengine::buf::BufPool,
    stats: Stats,
    recovery: RecoveryReport,
    closed: Cell<bool>,
    checkpointing: Cell<bool>,
    checkpoint_generation: Cell<u64>,
}

impl<D: Device> std::fmt::Debug for Store<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("name", &self.name).field("index", &self.index).finish()
    }
}

impl<D: Device + 'static> Store<D> {
    /// The device.
    pub fn device(&self) -> &D {
        &self.disk
    }

    /// The superblock.
    pub fn superblock(&self) -> &Superblock {
        &self.superblock
    }

    /// Counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Records batches, syncs, checkpoints and checksum errors into `metrics` from now on
    /// (`Stats` counts them either way).
    pub fn attach_metrics(&self, metrics: StoreMetrics) {
        *self.stats.metrics.borrow_mut() = metrics;
    }

    /// The metric handles the store records into.
    fn metrics(&self) -> std::cell::Ref<'_, StoreMetrics> {
        self.stats.metrics.borrow()
    }

    /// Counts a record that failed verification on read.
    fn count_checksum_error(&self) {
        self.stats.checksum_errors.set(self.stats.checksum_errors.get() + 1);
        self.metrics().checksum_errors.increment(1);
    }

    /// What recovery found when the store opened.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.recovery
    }

    /// Live keys.
    pub fn len(&self) -> usize {
        self.index.borrow().len()
    }

    /// True when no key is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Where `key`'s live record is, by the index (not verified on disk; for tools and tests).
    pub fn location_of(&self, key: &Key) -> Option<Location> {
        let candidates = self.index.borrow().candidates(key);
        candidates.exact.or(candidates.by_tag)
    }

    /// Index entries kept by full key (their tag collides with another key's).
    pub fn index_overflow_len(&self) -> usize {
        self.index.borrow().overflow_len()
    }

    /// Bytes the index holds on the heap.
    pub fn index_heap_bytes(&self) -> usize {
        self.index.borrow().heap_bytes()
    }

    /// Bytes of the disk's log zones not yet written (space for new records).
    pub fn free_bytes(&self) -> u64 {
        self.writer.free_bytes(self)
    }

    /// Bytes of the disk's log zones (what records can ever use).
    pub fn capacity_bytes(&self) -> u64 {
        self.writer.capacity_bytes()
    }

    fn io(&self, source: ioengine::Error) -> StoreError {
        match source {
            ioengine::Error::NoSpace { .. } => StoreError::NoSpace { disk: self.name.clone() },
            source => StoreError::Io { disk: self.name.clone(), source },
        }
    }

    /// Waits until no other PUT/DELETE of a key with `key`'s index tag is in progress, then
    /// claims the tag (keys sharing a tag also share an index slot, so they serialize).
    async fn claim_key(self: &Rc<Self>, key: &Key) -> KeyClaim<D> {
        let tag = self.index.borrow().tag(key);
        std::future::poll_fn(|cx| {
            let mut busy = self.busy_keys.borrow_mut();
            match busy.get_mut(&tag) {
                Some(waiters) => {
                    waiters.push(cx.waker().clone());
                    std::task::Poll::Pending
                }
                None => {
                    busy.insert(tag, Vec::new());
                    std::task::Poll::Ready(())
                }
            }
        })
        .await;
        KeyClaim { store: self.clone(), tag }
    }
}

/// Releases a claimed key (waking waiters) when dropped, even if the request was cancelled.
struct KeyClaim<D: Device + 'static> {
    store: Rc<Store<D>>,
    tag: u64,
}

impl<D: Device + 'static> Drop for KeyClaim<D> {
    fn drop(&mut self) {
        let waiters = self.store.busy_keys.borrow_mut().remove(&self.tag);
        for waker in waiters.into_iter().flatten() {
            waker.wake();
        }
    }
}

/// Milliseconds since the Unix epoch.
fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
