//! The write path: PUT and DELETE, packed into batches (group commit), written durably in
//! order, acknowledged in order, and applied to the index only once acknowledged.
//!
//! A request encodes its record straight into the open batch's aligned buffer (one copy of the
//! value; none for a large value the server received in place, [`ValueBuf`]) and waits. The
//! disk's committer task seals the open batch whenever fewer than [`PIPELINE_DEPTH`] batches
//! holding fewer than [`PIPELINE_BYTES_MAX`] bytes are in flight (and, for a pooled batch, a
//! pool buffer is left): while the device is busy, requests pile into the next batch, so
//! concurrent PUTs share one write and one flush (RWF_DSYNC, FUA on devices that have it; or a
//! write and a flush shared with every batch written meanwhile). A batch is
//! acknowledged when its write and every earlier batch's write completed; only then are its
//! records applied to the index and its requests answered.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::task::{Poll, Waker};

use ioengine::buf::{AlignedBuf, BufPool, PoolConfig, PooledBuf};
use ioengine::device::{Device, ZoneCommand, ZoneIndex};
use ioengine::op::WriteFlags;

use super::format::{
    self, BATCH_INFO_BYTES, BatchInfo, Checksummed, Key, Location, RECORD_HEADER_BYTES, RecordKind,
};
use super::{
    BATCH_BYTES, DETACHED_VALUE_BYTES_MAX, KeyClaim, PIPELINE_BYTES_MAX, PIPELINE_DEPTH,
    POOLED_BATCHES, Store, StoreError, StoreResult, SyncMode,
};

/// Bytes of the batch record that opens every batch.
pub(super) fn batch_record_bytes() -> usize {
    format::record_bytes(BATCH_INFO_BYTES as u32)
}

/// What happened to a batch.
#[derive(Debug, Clone)]
enum Outcome {
    /// Sealed (or still open), not yet durable.
    Pending,
    /// Written durably, waiting for earlier batches.
    Written,
    /// Durable and acknowledged: its records are in the index.
    Acked,
    /// Not durable: every request in it fails with this.
    Failed(Rc<StoreError>),
}

/// Shared between a batch's requests and the committer.
struct BatchShared {
    outcome: RefCell<Outcome>,
    waiters: RefCell<Vec<Waker>>,
    zone: Cell<ZoneIndex>,
    start: Cell<u64>,
}

impl BatchShared {
    fn set(&self, outcome: Outcome) {
        *self.outcome.borrow_mut() = outcome;
        for waker in self.waiters.borrow_mut().drain(..) {
            waker.wake();
        }
    }

    async fn wait(&self) -> StoreResult<()> {
        std::future::poll_fn(|cx| match &*self.outcome.borrow() {
            Outcome::Acked => Poll::Ready(Ok(())),
            Outcome::Failed(err) => Poll::Ready(Err(clone_error(err))),
            Outcome::Pending | Outcome::Written => {
                self.waiters.borrow_mut().push(cx.waker().clone());
                Poll::Pending
            }
        })
        .await
    }
}

/// A store error handed to every request of a failed batch.
fn clone_error(err: &StoreError) -> StoreError {
    match err {
        StoreError::NoSpace { disk } => StoreError::NoSpace { disk: disk.clone() },
        StoreError::ReadOnly { disk, reason } => {
            StoreError::ReadOnly { disk: disk.clone(), reason: reason.clone() }
        }
        other => StoreError::Corrupt {
            disk: String::new(),
            zone: 0,
            offset: 0,
            detail: format!("batch write failed: {other}"),
        },
    }
}

/// An index change to apply when the batch is acknowledged.
#[derive(Debug, Clone, Copy)]
struct IndexChange {
    kind: RecordKind,
    key: Key,
    /// Offset of the record in the batch.
    position: usize,
    value_len: u32,
    /// crc32c of the value (for the index's check of a detached value).
    value_crc: u32,
    /// Offset of a detached value in the batch buffer (in the batch, once it is sealed).
    value_pos: Option<usize>,
    /// The key's tag slot holds another key (the new entry goes to overflow).
    tag_taken_by_other: bool,
    /// The live block this change replaces or deletes.
    old: Option<Location>,
}

enum BatchBuf {
    Pooled(PooledBuf),
    Owned(AlignedBuf),
}

impl BatchBuf {
    fn buf(&mut self) -> &mut AlignedBuf {
        match self {
            BatchBuf::Pooled(buf) => buf,
            BatchBuf::Owned(buf) => buf,
        }
    }
}

struct OpenBatch {
    buf: BatchBuf,
    /// Bytes the batch may grow to (a buffer may be larger than the batch it was taken for).
    limit_bytes: usize,
    /// Bytes of detached values, stacked down from `limit_bytes` in the buffer while records
    /// grow up from its start; sealing moves them to just after the records' last block.
    values_bytes: usize,
    seq: u64,
    changes: Vec<IndexChange>,
    shared: Rc<BatchShared>,
}

/// A sealed batch waiting for acknowledgement: its shared state, its index changes, its last
/// sequence number and its size.
type InFlight = (Rc<BatchShared>, Vec<IndexChange>, u64, u64);

/// Requests that found no room in the open batch, in arrival order. Only the first may open a
/// batch, take a batch buffer from the pool, or wait for the open batch to be taken; the others
/// sleep until they are first. Without it every waiter was woken whenever a batch was taken and
/// they raced with each other and with new requests, so a request could lose many rounds in a
/// row (1 MiB PUTs at 64 writers: a p99 of 1.7 s against a median of 23 ms; a PUT that waited
/// for 96 batches in the store test).
#[derive(Default)]
struct Admission {
    queue: RefCell<VecDeque<(u64, Option<Waker>)>>,
    next_ticket: Cell<u64>,
}

impl Admission {
    /// Joins the queue at its end.
    fn enter(&self) -> Turn<'_> {
        let ticket = self.next_ticket.get();
        self.next_ticket.set(ticket + 1);
        self.queue.borrow_mut().push_back((ticket, None));
        Turn { admission: self, ticket }
    }

    /// Wakes every waiting request (the store stopped: they fail and leave the queue).
    fn wake_all(&self) {
        let wakers: Vec<Waker> =
            self.queue.borrow_mut().iter_mut().filter_map(|(_, w)| w.take()).collect();
        for waker in wakers {
            waker.wake();
        }
    }
}

/// A request's place in the [`Admission`] queue; leaving it (dropped: served, failed or
/// cancelled) wakes the next.
struct Turn<'a> {
    admission: &'a Admission,
    ticket: u64,
}

impl Turn<'_> {
    fn is_first(&self) -> bool {
        self.admission.queue.borrow().front().is_some_and(|(t, _)| *t == self.ticket)
    }

    /// Waits until this request is first in the queue, or until `stopped` says so.
    async fn wait_first(&self, stopped: impl Fn() -> bool) {
        std::future::poll_fn(|cx| {
            if self.is_first() || stopped() {
                return Poll::Ready(());
            }
            let mut queue = self.admission.queue.borrow_mut();
            if let Some(entry) = queue.iter_mut().find(|(t, _)| *t == self.ticket) {
                entry.1 = Some(cx.waker().clone());
            }
            Poll::Pending
        })
        .await;
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        let next = {
            let mut queue = self.admission.queue.borrow_mut();
            let was_first = queue.front().is_some_and(|(t, _)| *t == self.ticket);
            queue.retain(|(t, _)| *t != self.ticket);
            if was_first { queue.front_mut().and_then(|(_, w)| w.take()) } else { None }
        };
        if let Some(waker) = next {
            waker.wake();
        }
    }
}

/// Per-zone bookkeeping of the log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct ZoneLog {
    /// Where the next batch goes (submitted, not necessarily durable).
    pub write_offset: u64,
    /// Up to here every batch is durable and acknowledged.
    pub acked_end: u64,
    /// Bytes of live records.
    pub live_bytes: u64,
    /// No more writes go here.
    pub finished: bool,
    /// Writable bytes of the zone.
    pub capacity_bytes: u64,
    /// Recovery found torn or damaged regions here: no more writes (later batches would make
    /// them look acknowledged at the next recovery).
    pub unclean: bool,
}

/// Device flushes for batches written without RWF_DSYNC ([`SyncMode::WriteThenFdatasync`]):
/// one at a time, shared by every batch whose write completed before it started. A flush makes
/// durable the writes completed before it was issued; a write that completes while one runs
/// waits for the next, which then covers every write completed meanwhile.
#[derive(Default)]
struct Flushes {
    /// Flushes started: the running one's number, or the last one's.
    started: Cell<u64>,
    /// The number of the last flush that completed.
    done: Cell<u64>,
    running: Cell<bool>,
    /// The latest flush that failed, and how.
    failed: RefCell<Option<(u64, ioengine::Error)>>,
    waiters: RefCell<Vec<Waker>>,
}

impl Flushes {
    /// Ends the running flush as number `number` (with its result when it completed; a flush
    /// whose future was dropped counts as failed) and wakes everyone waiting for one.
    fn finish(&self, number: u64, result: ioengine::Result<()>) {
        self.running.set(false);
        self.done.set(number);
        if let Err(err) = result {
            *self.failed.borrow_mut() = Some((number, err));
        }
        for waker in self.waiters.borrow_mut().drain(..) {
            waker.wake();
        }
    }
}

/// Ends a flush whose future is dropped before it completed (the core stopping): the waiters
/// must not wait for it forever.
struct FlushRunning<'a> {
    flushes: &'a Flushes,
    number: u64,
    armed: bool,
}

impl Drop for FlushRunning<'_> {
    fn drop(&mut self) {
        if self.armed {
            let cancelled = ioengine::Error::Cancelled { op: ioengine::OpKind::Fsync };
            self.flushes.finish(self.number, Err(cancelled));
        }
    }
}

/// The writer's state for one disk.
pub(super) struct Writer {
    pool: BufPool,
    flushes: Flushes,
    open: RefCell<Option<OpenBatch>>,
    in_flight: RefCell<VecDeque<InFlight>>,
    pub(super) zones: RefCell<Vec<ZoneLog>>,
    active: Cell<Option<ZoneIndex>>,
    pub(super) next_seq: Cell<u64>,
    /// Highest sequence number whose batch is acknowledged (and applied to the index).
    pub(super) acked_seq: Cell<u64>,
    pub(super) bytes_since_checkpoint: Cell<u64>,
    pub(super) records_since_checkpoint: Cell<u64>,
    first_data_zone: ZoneIndex,
    committer: RefCell<Option<Waker>>,
    /// Requests waiting for the committer to take a full open batch.
    taken_waiters: RefCell<Vec<Waker>>,
    /// Requests that found no room in the open batch, served in arrival order.
    admission: Admission,
    /// A zone was abandoned after a failed write: checkpoint before opening another.
    checkpoint_before_new_zone: Cell<bool>,
    stopping: Cell<bool>,
    read_only: RefCell<Option<String>>,
}

impl Writer {
    /// A writer over `zones` (every zone of the disk; those below `first_data_zone` unused),
    /// resuming at `active` and sequence `next_seq`.
    pub(super) fn new(
        zones: Vec<ZoneLog>,
        first_data_zone: ZoneIndex,
        active: Option<ZoneIndex>,
        next_seq: u64,
        block_bytes: usize,
    ) -> Writer {
        let min_capacity = zones
            .iter()
            .skip(first_data_zone as usize)
            .map(|z| z.capacity_bytes)
            .min()
            .unwrap_or(BATCH_BYTES as u64);
        let pool = BufPool::new(PoolConfig {
            buf_bytes: batch_capacity(min_capacity, block_bytes)
                .next_multiple_of(block_bytes.max(4096)),
            count: POOLED_BATCHES,
            align_bytes: block_bytes.max(4096),
        });
        Writer {
            pool,
            flushes: Flushes::default(),
            open: RefCell::new(None),
            in_flight: RefCell::new(VecDeque::new()),
            zones: RefCell::new(zones),
            active: Cell::new(active),
            next_seq: Cell::new(next_seq),
            acked_seq: Cell::new(next_seq.saturating_sub(1)),
            bytes_since_checkpoint: Cell::new(0),
            records_since_checkpoint: Cell::new(0),
            first_data_zone,
            committer: RefCell::new(None),
            taken_waiters: RefCell::new(Vec::new()),
            admission: Admission::default(),
            checkpoint_before_new_zone: Cell::new(false),
            stopping: Cell::new(false),
            read_only: RefCell::new(None),
        }
    }

    /// Whether the committer may seal the open batch: fewer than [`PIPELINE_DEPTH`] batches in
    /// flight, holding fewer than [`PIPELINE_BYTES_MAX`] bytes, and, for a batch in a pooled
    /// buffer, a pool buffer left for the next one. With every pool buffer taken, requests keep
    /// filling the open batch until one comes back: that is what groups small PUTs (sealing it
    /// at once would write batches of a record or two, each a flush and a block of padding).
    fn pipeline_has_room(&self) -> bool {
        let pooled_open =
            matches!(self.open.borrow().as_ref().map(|b| &b.buf), Some(BatchBuf::Pooled(_)));
        if pooled_open && self.pool.available() == 0 {
            return false;
        }
        let in_flight = self.in_flight.borrow();
        let bytes: u64 = in_flight.iter().map(|(.., bytes)| bytes).sum();
        in_flight.len() < PIPELINE_DEPTH && bytes < PIPELINE_BYTES_MAX as u64
    }

    /// Zones that batches in flight are written to.
    pub(super) fn zones_in_flight(&self) -> Vec<ZoneIndex> {
        self.in_flight.borrow().iter().map(|(shared, ..)| shared.zone.get()).collect()
    }

    /// Requires a checkpoint before the next zone is opened.
    pub(super) fn set_checkpoint_before_new_zone(&self, needed: bool) {
        self.checkpoint_before_new_zone.set(needed);
    }

    /// The buffer pool of batches (registered with the ring by the owner).
    pub(super) fn pool(&self) -> &BufPool {
        &self.pool
    }

    pub(super) fn free_bytes<D: Device>(&self, _store: &Store<D>) -> u64 {
        self.zones
            .borrow()
            .iter()
            .skip(self.first_data_zone as usize)
            .filter(|z| !z.finished)
            .map(|z| z.capacity_bytes.saturating_sub(z.write_offset))
            .sum()
    }

    pub(super) fn capacity_bytes(&self) -> u64 {
        self.zones
            .borrow()
            .iter()
            .skip(self.first_data_zone as usize)
            .map(|z| z.capacity_bytes)
            .sum()
    }

    fn wake_committer(&self) {
        if let Some(waker) = self.committer.borrow_mut().take() {
            waker.wake();
        }
    }
}

/// Bytes of a batch holding one record of `value_len` bytes, rounded to blocks.
pub(super) fn single_record_batch_bytes(value_len: u32, block_bytes: usize) -> usize {
    let bytes = batch_record_bytes() + format::record_bytes(value_len) + RECORD_HEADER_BYTES;
    bytes.next_multiple_of(block_bytes)
}

/// Capacity of a pooled batch buffer: [`BATCH_BYTES`], or less on disks with small zones.
pub(super) fn batch_capacity(min_zone_capacity: u64, block_bytes: usize) -> usize {
    let cap = (BATCH_BYTES as u64).min(min_zone_capacity) as usize;
    (cap / block_bytes * block_bytes).max(block_bytes)
}

/// The largest batch the writer produces on this disk: a pooled batch, or one record of the
/// largest value with its batch record.
pub(super) fn batch_bytes_limit(
    value_bytes_max: u32,
    block_bytes: usize,
    min_zone_capacity: u64,
) -> usize {
    single_record_batch_bytes(value_bytes_max, block_bytes)
        .max(batch_capacity(min_zone_capacity, block_bytes))
}

/// The largest logical block size for which [`ValueBuf::layout`] lays a value out as its own
/// batch; a disk with larger blocks copies such values into a batch instead.
const OWN_BATCH_BLOCK_BYTES_MAX: usize = 4096;

/// Where a value of `value_len` bytes starts in a buffer that is written as its batch, or
/// `None` when the value should be copied into a shared batch instead. A value gets a batch of
/// its own when two records of its size never fit in one pooled batch ([`BATCH_BYTES`]): then
/// it is written alone anyway, and receiving it in place saves the copy without costing any
/// grouping.
fn own_batch_value_start(value_len: usize) -> Option<usize> {
    let len = u32::try_from(value_len).ok()?;
    let two = batch_record_bytes() + 2 * format::record_bytes(len) + RECORD_HEADER_BYTES;
    (two > BATCH_BYTES).then(|| batch_record_bytes() + format::value_offset(len))
}

/// A PUT's value received into a buffer of its own (by the server), laid out, when it is large,
/// as the batch it will be written in: the store then writes the headers around it and the
/// buffer itself, with no copy of the value ([`Store::put_received`]).
#[derive(Debug)]
pub struct ValueBuf {
    buf: AlignedBuf,
    start: usize,
}

impl ValueBuf {
    /// Where to receive a value of `value_len` bytes: (offset of the value, buffer bytes).
    /// Receive into a 4096-aligned buffer of that size whose length is the offset.
    pub fn layout(value_len: usize) -> (usize, usize) {
        match own_batch_value_start(value_len) {
            Some(start) => {
                let bytes = single_record_batch_bytes(value_len as u32, OWN_BATCH_BLOCK_BYTES_MAX);
                (start, bytes)
            }
            None => (0, value_len),
        }
    }

    /// The received value: `buf[start..]` (the bytes before it are the store's to overwrite).
    pub fn new(buf: AlignedBuf, start: usize) -> ValueBuf {
        assert!(start <= buf.len(), "value start {start} beyond the received bytes");
        ValueBuf { buf, start }
    }

    /// The value's bytes.
    pub fn value(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    /// Gives the buffer back to this thread's cache for the next value.
    pub fn recycle(self) {
        self.buf.recycle();
    }
}

/// What a PUT did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    /// The block was written.
    Stored,
    /// The same block was already there (PUT is idempotent).
    AlreadyStored,
}

impl<D: Device + 'static> Store<D> {
    /// Stores `value` under `key`, durably. Same key with the same content again is accepted
    /// and changes nothing; the same key with other content is refused (blocks are immutable;
    /// DELETE first). Returns once the record is on stable media and in the index.
    pub async fn put(self: &Rc<Self>, key: &Key, value: &[u8]) -> StoreResult<PutOutcome> {
        self.check_value_len(value.len())?;
        let mut crcs = Vec::new();
        self.put_checksummed(key, &Checksummed::compute(value, &mut crcs)).await
    }

    /// [`Store::put`] of a value whose checksums the caller computed (the server does while
    /// it checks a PUT against the client's crc32c), so the bytes are checksummed once.
    pub async fn put_checksummed(
        self: &Rc<Self>,
        key: &Key,
        checksummed: &Checksummed<'_>,
    ) -> StoreResult<PutOutcome> {
        self.check_value_len(checksummed.value.len())?;
        self.check_writable()?;
        let _claim: KeyClaim<D> = self.claim_key(key).await;
        let change = match self.block_change(key, checksummed).await? {
            Ok(change) => change,
            Err(outcome) => return Ok(outcome),
        };
        self.append(change, checksummed).await?;
        Ok(PutOutcome::Stored)
    }

    /// [`Store::put_checksummed`] of a value the server received into a [`ValueBuf`]. A
    /// value laid out as its own batch is written from that buffer (no copy of the value) when
    /// no open batch has room for it; otherwise it is copied into the open batch.
    pub async fn put_received(
        self: &Rc<Self>,
        key: &Key,
        value: ValueBuf,
        chunk_crcs: &[u32],
        value_crc: u32,
    ) -> StoreResult<PutOutcome> {
        let len = value.value().len();
        self.check_value_len(len)?;
        self.check_writable()?;
        let _claim: KeyClaim<D> = self.claim_key(key).await;
        let checksummed = Checksummed { value: value.value(), chunk_crcs, value_crc };
        let change = match self.block_change(key, &checksummed).await? {
            Ok(change) => change,
            Err(outcome) => {
                value.recycle();
                return Ok(outcome);
            }
        };
        let in_place = own_batch_value_start(len) == Some(value.start)
            && value.buf.capacity() >= single_record_batch_bytes(len as u32, self.block_bytes)
            && (value.buf.as_ptr() as usize) % self.block_bytes.max(4096) == 0;
        if in_place {
            return self.append_own_batch(change, value, chunk_crcs, value_crc).await;
        }
        let result = self.append(change, &checksummed).await;
        value.recycle();
        result.map(|()| PutOutcome::Stored)
    }

    /// The index change a PUT of `key` makes, or what it amounts to when the key is stored
    /// already: the same value is accepted unchanged, another is refused. The caller holds the
    /// key's claim.
    async fn block_change(
        &self,
        key: &Key,
        checksummed: &Checksummed<'_>,
    ) -> StoreResult<Result<IndexChange, PutOutcome>> {
        let value = checksummed.value;
        let lookup = self.lookup_verified(key).await?;
        if let Some(found) = lookup.found {
            let same = found.header.value_len as usize == value.len()
                && found.header.value_crc == checksummed.value_crc
                && self.read_value_of(&found).await?.as_slice() == value;
            return if same {
                Ok(Err(PutOutcome::AlreadyStored))
            } else {
                Err(StoreError::ExistsWithOtherContent)
            };
        }
        Ok(Ok(IndexChange {
            kind: RecordKind::Block,
            key: *key,
            position: 0,
            value_len: value.len() as u32,
            value_crc: checksummed.value_crc,
            value_pos: None,
            tag_taken_by_other: lookup.tag_taken_by_other,
            old: None,
        }))
    }

    fn check_value_len(&self, len: usize) -> StoreResult<()> {
        let max = self.config.value_bytes_max.min(self.superblock.value_bytes_max);
        if len as u64 > u64::from(max) || len == 0 {
            return Err(StoreError::ValueTooLarge { len: len as u64, max });
        }
        Ok(())
    }

    /// Deletes `key`: writes a tombstone durably, then drops the index entry.
    pub async fn delete(self: &Rc<Self>, key: &Key) -> StoreResult<()> {
        self.check_writable()?;
        let _claim: KeyClaim<D> = self.claim_key(key).await;
        let lookup = self.lookup_verified(key).await?;
        let Some(found) = lookup.found else { return Err(StoreError::NotFound) };
        let change = IndexChange {
            kind: RecordKind::Tombstone,
            key: *key,
            position: 0,
            value_len: 0,
            value_crc: 0,
            value_pos: None,
            tag_taken_by_other: lookup.tag_taken_by_other,
            old: Some(found.location),
        };
        let empty = Checksummed { value: &[], chunk_crcs: &[], value_crc: 0 };
        self.append(change, &empty).await
    }

    /// Why the store refuses writes (halted after a write error, closing), or `None`.
    pub fn read_only_reason(&self) -> Option<String> {
        if self.closed.get() || self.writer.stopping.get() {
            return Some("the store is closing".into());
        }
        self.writer.read_only.borrow().clone()
    }

    fn check_writable(&self) -> StoreResult<()> {
        if self.closed.get() || self.writer.stopping.get() {
            return Err(StoreError::ReadOnly {
                disk: self.name.clone(),
                reason: "the store is closing".into(),
            });
        }
        if let Some(reason) = self.writer.read_only.borrow().as_ref() {
            return Err(StoreError::ReadOnly { disk: self.name.clone(), reason: reason.clone() });
        }
        Ok(())
    }

    /// Encodes a record into the open batch (opening one if needed) and waits for the batch
    /// to be acknowledged.
    async fn append(
        self: &Rc<Self>,
        mut change: IndexChange,
        checksummed: &Checksummed<'_>,
    ) -> StoreResult<()> {
        let value = checksummed.value;
        let detach = self.detaches(change.kind, value.len());
        let (record_len, detached_len) = if detach {
            (format::detached_header_bytes(value.len() as u32), value.len())
        } else {
            (format::record_bytes(value.len() as u32), 0)
        };
        let mut turn = None;
        let shared = loop {
            self.check_writable()?;
            if self.open_has_room(record_len, detached_len) == Some(true) {
                break if detach {
                    self.encode_detached_into_open(&mut change, checksummed)
                } else {
                    self.encode_into_open(&mut change, checksummed, record_len)
                };
            }
            if !self.first_in_line(&mut turn).await {
                continue;
            }
            // The open batch is full: the committer seals it when the pipeline has room.
            if self.writer.open.borrow().is_some() {
                self.wait_for_open_taken().await;
                continue;
            }
            let pooled = self.writer.pool.config().buf_bytes;
            let single = single_record_batch_bytes(value.len() as u32, self.block_bytes);
            // A record that no second record of its size could join is its batch's only one:
            // a buffer of its size, not one of the pool's (their count bounds shared batches
            // only; PIPELINE_DEPTH and PIPELINE_BYTES_MAX bound these).
            let alone = own_batch_value_start(value.len()).is_some();
            let (buf, limit_bytes) = if single <= pooled && !alone {
                (BatchBuf::Pooled(self.writer.pool.get().await), pooled)
            } else {
                let buf = AlignedBuf::reuse_or_for_writes(single, self.block_bytes.max(4096));
                (BatchBuf::Owned(buf), single)
            };
            // The store may have stopped, or another request opened a batch, while this one
            // waited for a buffer.
            self.check_writable()?;
            if self.writer.open.borrow().is_some() {
                drop(buf);
                continue;
            }
            self.open_batch(buf, limit_bytes);
        };
        // The next request in line may go on while this one waits for its batch.
        drop(turn);
        self.writer.wake_committer();
        shared.wait().await
    }

    /// Whether this request is first among those that found no room (joining the line if it
    /// is not in it yet); when it is not, waits until it is (or the store stops) and returns
    /// false so the caller looks at the open batch again.
    async fn first_in_line<'a>(&'a self, turn: &mut Option<Turn<'a>>) -> bool {
        let turn = turn.get_or_insert_with(|| self.writer.admission.enter());
        if turn.is_first() {
            return true;
        }
        turn.wait_first(|| self.writer.stopping.get() || self.writer.read_only.borrow().is_some())
            .await;
        false
    }

    /// Whether a block of `value_len` bytes is written with its value detached: block-aligned
    /// after the batch's records, so that a GET reads the value's blocks and nothing else.
    /// Values of whole blocks up to [`DETACHED_VALUE_BYTES_MAX`], on disks of a format that
    /// has them.
    fn detaches(&self, kind: RecordKind, value_len: usize) -> bool {
        kind == RecordKind::Block
            && self.superblock.detaches_values()
            && value_len > 0
            && value_len % self.block_bytes == 0
            && value_len <= DETACHED_VALUE_BYTES_MAX
    }

    /// Whether the open batch has room for a record of `record_len` bytes (and the padding
    /// that may follow it) and a detached value of `detached_len` bytes (0: none); `None` when
    /// no batch is open.
    fn open_has_room(&self, record_len: usize, detached_len: usize) -> Option<bool> {
        let open = self.writer.open.borrow();
        let batch = open.as_ref()?;
        let used = match &batch.buf {
            BatchBuf::Pooled(buf) => buf.len(),
            BatchBuf::Owned(buf) => buf.len(),
        };
        // The values' area starts at a block boundary (`limit_bytes` and every detached value
        // are whole blocks), so records that end before it, padding included, fit.
        let values = batch.values_bytes + detached_len;
        Some(used + record_len + RECORD_HEADER_BYTES + values <= batch.limit_bytes)
    }

    /// Appends a block whose value sits in a buffer laid out as its own batch: the buffer
    /// becomes the open batch when none is open; when one is open with room, the value is
    /// copied into it; when one is open and full, it waits for the committer to take it.
    async fn append_own_batch(
        self: &Rc<Self>,
        mut change: IndexChange,
        value: ValueBuf,
        chunk_crcs: &[u32],
        value_crc: u32,
    ) -> StoreResult<PutOutcome> {
        let record_len = format::record_bytes(change.value_len);
        let mut turn = None;
        let shared = loop {
            self.check_writable()?;
            let room = self.open_has_room(record_len, 0);
            if room == Some(true) {
                let checksummed = Checksummed { value: value.value(), chunk_crcs, value_crc };
                let shared = self.encode_into_open(&mut change, &checksummed, record_len);
                value.recycle();
                break shared;
            }
            if !self.first_in_line(&mut turn).await {
                continue;
            }
            match room {
                Some(_) => self.wait_for_open_taken().await,
                None => break self.open_own_batch(&mut change, value.buf, chunk_crcs, value_crc),
            }
        };
        drop(turn);
        self.writer.wake_committer();
        shared.wait().await?;
        Ok(PutOutcome::Stored)
    }

    /// Opens a batch in `buf`, which holds a value at the position of the batch's first record
    /// (see [`own_batch_value_start`]), and encodes that record's header around it.
    fn open_own_batch(
        &self,
        change: &mut IndexChange,
        buf: AlignedBuf,
        chunk_crcs: &[u32],
        value_crc: u32,
    ) -> Rc<BatchShared> {
        let limit_bytes = single_record_batch_bytes(change.value_len, self.block_bytes);
        self.open_batch(BatchBuf::Owned(buf), limit_bytes);
        let record_len = format::record_bytes(change.value_len);
        let shared = self.append_record(change, record_len, |out, seq, change, position| {
            assert_eq!(
                Some(position + format::value_offset(change.value_len)),
                own_batch_value_start(change.value_len as usize),
                "the value sits where the batch's first record puts it"
            );
            format::encode_record_around_value(
                out,
                change.kind,
                seq,
                &change.key,
                change.value_len,
                chunk_crcs,
                value_crc,
            );
        });
        self.stats.values_in_place.set(self.stats.values_in_place.get() + 1);
        shared
    }

    fn open_batch(&self, mut buf: BatchBuf, limit_bytes: usize) {
        let seq = self.writer.next_seq.get();
        self.writer.next_seq.set(seq + 1);
        let b = buf.buf();
        b.clear();
        // Room for the batch record; it is encoded when the batch is sealed.
        b.pad_to(batch_record_bytes());
        let shared = Rc::new(BatchShared {
            outcome: RefCell::new(Outcome::Pending),
            waiters: RefCell::new(Vec::new()),
            zone: Cell::new(0),
            start: Cell::new(0),
        });
        *self.writer.open.borrow_mut() =
            Some(OpenBatch { buf, limit_bytes, values_bytes: 0, seq, changes: Vec::new(), shared });
    }

    fn encode_into_open(
        &self,
        change: &mut IndexChange,
        value: &Checksummed<'_>,
        record_len: usize,
    ) -> Rc<BatchShared> {
        self.append_record(change, record_len, |out, seq, change, _| {
            format::encode_record_checksummed(out, change.kind, seq, &change.key, value);
        })
    }

    /// Appends a block whose value is detached: the value goes on top of the open batch's
    /// stack of detached values, the header (whose `value_at` is set when the batch is sealed)
    /// among the records. The caller checked the room.
    fn encode_detached_into_open(
        &self,
        change: &mut IndexChange,
        value: &Checksummed<'_>,
    ) -> Rc<BatchShared> {
        {
            let mut open = self.writer.open.borrow_mut();
            let batch = open.as_mut().expect("a batch is open");
            batch.values_bytes += value.value.len();
            let at = batch.limit_bytes - batch.values_bytes;
            let buf = batch.buf.buf();
            let from = at - buf.len();
            buf.spare_mut()[from..from + value.value.len()].copy_from_slice(value.value);
            change.value_pos = Some(at);
        }
        let header_len = format::detached_header_bytes(change.value_len);
        self.append_record(change, header_len, |out, seq, change, _| {
            format::encode_detached_header(
                out,
                seq,
                &change.key,
                change.value_len,
                value.chunk_crcs,
                value.value_crc,
                header_len as u32,
            );
        })
    }

    /// Appends a record of `record_len` bytes to the open batch: takes its sequence number,
    /// reserves its span (not zero-filled: `encode` writes every byte of it, given the span,
    /// the sequence number, the change and the record's position in the batch), and records
    /// the index change.
    fn append_record(
        &self,
        change: &mut IndexChange,
        record_len: usize,
        encode: impl FnOnce(&mut [u8], u64, &IndexChange, usize),
    ) -> Rc<BatchShared> {
        let mut open = self.writer.open.borrow_mut();
        let batch = open.as_mut().expect("a batch is open");
        let seq = self.writer.next_seq.get();
        self.writer.next_seq.set(seq + 1);
        let buf = batch.buf.buf();
        let position = buf.len();
        buf.set_len(position + record_len);
        encode(&mut buf[position..position + record_len], seq, change, position);
        change.position = position;
        batch.changes.push(*change);
        batch.shared.clone()
    }

    /// Waits until the committer has taken the current open batch.
    async fn wait_for_open_taken(&self) {
        self.writer.wake_committer();
        let current = self.writer.open.borrow().as_ref().map(|b| b.seq);
        std::future::poll_fn(|cx| {
            let now = self.writer.open.borrow().as_ref().map(|b| b.seq);
            if now.is_none() || now != current {
                return Poll::Ready(());
            }
            self.writer.taken_waiters.borrow_mut().push(cx.waker().clone());
            Poll::Pending
        })
        .await;
    }

    /// The disk's committer: seals and submits the open batch whenever the pipeline has room.
    /// Runs until the store closes and nothing is left to write.
    ///
    /// It holds the store only weakly while it waits: a store dropped without `close` (its
    /// owner gave up on the disk) is freed, and the committer ends with it.
    pub(super) async fn run_committer(store: std::rc::Weak<Self>) {
        loop {
            let ready = std::future::poll_fn(|cx| {
                let Some(this) = store.upgrade() else { return Poll::Ready(false) };
                let has_open =
                    this.writer.open.borrow().as_ref().is_some_and(|b| !b.changes.is_empty());
                let room = this.writer.pipeline_has_room();
                if has_open && room {
                    return Poll::Ready(true);
                }
                if this.writer.stopping.get()
                    && !has_open
                    && this.writer.in_flight.borrow().is_empty()
                {
                    return Poll::Ready(false);
                }
                *this.writer.committer.borrow_mut() = Some(cx.waker().clone());
                if !room {
                    let front = this.writer.in_flight.borrow().front().map(|f| f.0.clone());
                    if let Some(front) = front {
                        front.waiters.borrow_mut().push(cx.waker().clone());
                    }
                }
                Poll::Pending
            })
            .await;
            let Some(this) = store.upgrade() else { return };
            if !ready {
                return;
            }
            this.commit_once().await;
        }
    }

    /// Takes the open batch, submits it, and starts a checkpoint when one is due.
    async fn commit_once(self: &Rc<Self>) {
        let batch = self.writer.open.borrow_mut().take();
        for waker in self.writer.taken_waiters.borrow_mut().drain(..) {
            waker.wake();
        }
        if let Some(batch) = batch {
            self.submit(batch).await;
        }
        let due = self.writer.bytes_since_checkpoint.get() >= self.config.checkpoint_interval_bytes
            || self.writer.records_since_checkpoint.get()
                >= self.config.checkpoint_interval_records;
        if due {
            self.writer.bytes_since_checkpoint.set(0);
            self.writer.records_since_checkpoint.set(0);
            let store = self.clone();
            ioengine::spawn_background(async move {
                if let Err(err) = store.write_checkpoint(false).await {
                    tracing::warn!(disk = %store.name, error = %err, "checkpoint failed");
                }
            })
            .detach();
        }
    }

    /// Pads and places a sealed batch, then writes it (in a task of its own, so batches are
    /// pipelined); acknowledgement happens in `complete`.
    async fn submit(self: &Rc<Self>, mut batch: OpenBatch) {
        let block = self.block_bytes;
        let buf = batch.buf.buf();
        let used = buf.len();
        let records_end = used.next_multiple_of(block);
        // Zero-filled; a gap big enough for a header becomes a padding record.
        buf.pad_to(records_end);
        if records_end - used >= RECORD_HEADER_BYTES {
            format::encode_padding(&mut buf[used..records_end]);
        }
        if batch.values_bytes > 0 {
            // The detached values move down to just after the records, and each header learns
            // where its value is.
            let values_start = batch.limit_bytes - batch.values_bytes;
            buf.set_len(batch.limit_bytes);
            buf.copy_within(values_start..batch.limit_bytes, records_end);
            buf.set_len(records_end + batch.values_bytes);
            let shift = values_start - records_end;
            for change in &mut batch.changes {
                if let Some(pos) = change.value_pos.as_mut() {
                    *pos -= shift;
                    let header_len = format::detached_header_bytes(change.value_len);
                    let value_at = u32::try_from(*pos - change.position).expect("within a batch");
                    let header = &mut buf[change.position..change.position + header_len];
                    format::set_value_at(header, value_at);
                }
            }
            self.stats.values_detached.set(
                self.stats.values_detached.get()
                    + batch.changes.iter().filter(|c| c.value_pos.is_some()).count() as u64,
            );
        }
        let batch_bytes = buf.len();
        let (zone, start) = match self.place(batch_bytes as u64).await {
            Ok(place) => place,
            Err(err) => {
                batch.shared.set(Outcome::Failed(Rc::new(err)));
                return;
            }
        };
        let acked_end = self.writer.zones.borrow()[zone as usize].acked_end;
        let info = BatchInfo {
            batch_bytes: batch_bytes as u64,
            acked_end,
            record_count: batch.changes.len() as u32,
        };
        let head = batch_record_bytes();
        // The batch record's key is the disk's uuid: recovery ignores batches of an earlier
        // format of the same device (a conventional zone or a device without discard keeps them).
        format::encode_record(
            &mut buf[..head],
            RecordKind::Batch,
            batch.seq,
            &format::batch_key(&self.superblock.disk_uuid),
            &info.encode(),
        );
        batch.shared.zone.set(zone);
        batch.shared.start.set(start);
        let last_seq = self.writer.next_seq.get() - 1;
        self.writer.in_flight.borrow_mut().push_back((
            batch.shared.clone(),
            std::mem::take(&mut batch.changes),
            last_seq,
            batch_bytes as u64,
        ));
        self.stats.batches.set(self.stats.batches.get() + 1);
        let offset = self.disk.geometry().zone_start(zone) + start;
        let store = self.clone();
        let shared = batch.shared.clone();
        let buf = batch.buf;
        // Spawned in order, polled in order: the write reaches the ring before any later batch.
        let sync = self.config.sync;
        let record_count = info.record_count;
        ioengine::spawn(async move {
            let started = std::time::Instant::now();
            let flags = match sync {
                SyncMode::Dsync => WriteFlags::DSYNC,
                SyncMode::WriteThenFdatasync => WriteFlags::default(),
            };
            let mut result = match buf {
                BatchBuf::Pooled(buf) => store.disk.write_at(offset, buf, flags).await.0,
                BatchBuf::Owned(buf) => {
                    let (result, buf) = store.disk.write_at(offset, buf, flags).await;
                    // A value's own batch serves as the next large value's receive buffer.
                    buf.recycle();
                    result
                }
            };
            if result.is_ok() && sync == SyncMode::WriteThenFdatasync {
                result = store.flush_after_write().await;
            }
            store.count_batch(result.is_ok(), started.elapsed(), record_count, batch_bytes);
            store.complete(&shared, zone, result);
        })
        .detach();
    }

    /// Makes a completed write durable: waits for a flush that starts after now (starting it
    /// when none runs). Fails when that flush, or any later one that completed before this
    /// returns, failed: a durable batch may be reported failed, a failed flush never passes.
    async fn flush_after_write(&self) -> ioengine::Result<()> {
        let flushes = &self.writer.flushes;
        // A flush running now may have been issued before this write completed.
        let needed = flushes.started.get() + 1;
        loop {
            if flushes.done.get() >= needed {
                return match &*flushes.failed.borrow() {
                    Some((number, err)) if *number >= needed => Err(err.clone()),
                    _ => Ok(()),
                };
            }
            if !flushes.running.get() {
                let number = flushes.started.get() + 1;
                flushes.started.set(number);
                flushes.running.set(true);
                let mut running = FlushRunning { flushes, number, armed: true };
                let result = self.disk.flush().await;
                running.armed = false;
                flushes.finish(number, result);
                continue;
            }
            std::future::poll_fn(|cx| {
                if flushes.done.get() >= needed || !flushes.running.get() {
                    return Poll::Ready(());
                }
                flushes.waiters.borrow_mut().push(cx.waker().clone());
                Poll::Pending
            })
            .await;
        }
    }

    /// Records a finished batch write (`took`: the write and, in that mode, the fdatasync).
    fn count_batch(&self, ok: bool, took: std::time::Duration, records: u32, bytes: usize) {
        let metrics = self.metrics();
        if !ok {
            metrics.batch_write_errors.increment(1);
            return;
        }
        metrics.batches.increment(1);
        metrics.sync_seconds.record(took.as_secs_f64());
        metrics.batch_records.record(f64::from(records));
        metrics.batch_bytes.record(bytes as f64);
    }

    /// Finds room for a batch: the active zone, or the next empty zone (finishing the old one).
    async fn place(self: &Rc<Self>, batch_bytes: u64) -> StoreResult<(ZoneIndex, u64)> {
        if let Some(zone) = self.writer.active.get() {
            let placed = {
                let mut zones = self.writer.zones.borrow_mut();
                let z = &mut zones[zone as usize];
                if !z.finished && z.write_offset + batch_bytes <= z.capacity_bytes {
                    let start = z.write_offset;
                    z.write_offset += batch_bytes;
                    Some(start)
                } else {
                    z.finished = true;
                    None
                }
            };
            if let Some(start) = placed {
                return Ok((zone, start));
            }
            self.writer.active.set(None);
            if let Err(err) = self.disk.zone_command(zone, ZoneCommand::Finish).await {
                tracing::warn!(disk = %self.name, zone, error = %err, "finishing a full zone failed");
            }
        }
        if self.writer.checkpoint_before_new_zone.get() {
            // A zone was abandoned after a failed write. Recovery finds the zones written since
            // the last checkpoint by their order; an abandoned zone may look empty and end that
            // search early. So before any batch goes to a new zone, every batch in flight is
            // settled and a checkpoint records the abandoned zone as finished.
            self.wait_in_flight_empty().await;
            if let Err(err) = self.write_checkpoint(false).await {
                let reason = format!("checkpoint after a failed write failed: {err}");
                *self.writer.read_only.borrow_mut() = Some(reason.clone());
                return Err(StoreError::ReadOnly { disk: self.name.clone(), reason });
            }
            self.writer.checkpoint_before_new_zone.set(false);
        }
        let next = {
            let zones = self.writer.zones.borrow();
            (self.writer.first_data_zone as usize..zones.len())
                .find(|&z| !zones[z].finished && zones[z].write_offset == 0)
        };
        let Some(zone) = next else { return Err(StoreError::NoSpace { disk: self.name.clone() }) };
        let zone = zone as ZoneIndex;
        let mut zones = self.writer.zones.borrow_mut();
        let z = &mut zones[zone as usize];
        if batch_bytes > z.capacity_bytes {
            return Err(StoreError::NoSpace { disk: self.name.clone() });
        }
        z.write_offset = batch_bytes;
        self.writer.active.set(Some(zone));
        Ok((zone, 0))
    }

    /// A batch write finished: acknowledge every batch at the front of the pipeline that is
    /// durable, in order, applying its records to the index.
    fn complete(&self, shared: &Rc<BatchShared>, zone: ZoneIndex, result: ioengine::Result<()>) {
        // A halted store already failed this batch: its outcome stays failed.
        let halted = !matches!(*shared.outcome.borrow(), Outcome::Pending);
        match result {
            _ if halted => {}
            Ok(()) => *shared.outcome.borrow_mut() = Outcome::Written,
            Err(err) => {
                tracing::error!(disk = %self.name, zone, error = %err, "batch write failed");
                // Nothing more goes to this zone: its state on the device is uncertain.
                self.writer.zones.borrow_mut()[zone as usize].finished = true;
                self.writer.checkpoint_before_new_zone.set(true);
                if self.writer.active.get() == Some(zone) {
                    self.writer.active.set(None);
                }
                shared.set(Outcome::Failed(Rc::new(self.io(err))));
            }
        }
        loop {
            let front = {
                let in_flight = self.writer.in_flight.borrow();
                match in_flight.front() {
                    Some((shared, ..)) => shared.outcome.borrow().clone(),
                    None => break,
                }
            };
            let (shared, changes, last_seq, batch_bytes) = match front {
                Outcome::Written | Outcome::Failed(_) => {
                    self.writer.in_flight.borrow_mut().pop_front().expect("front exists")
                }
                Outcome::Pending | Outcome::Acked => break,
            };
            let outcome = shared.outcome.borrow().clone();
            if let Outcome::Written = outcome {
                self.acknowledge(&shared, &changes, batch_bytes);
                self.writer.acked_seq.set(last_seq);
                shared.set(Outcome::Acked);
            }
        }
        self.writer.wake_committer();
    }

    fn acknowledge(&self, shared: &BatchShared, changes: &[IndexChange], batch_bytes: u64) {
        let zone = shared.zone.get();
        let start = shared.start.get();
        let block = self.block_bytes as u64;
        {
            let mut zones = self.writer.zones.borrow_mut();
            let z = &mut zones[zone as usize];
            z.acked_end = z.acked_end.max(start + batch_bytes);
        }
        let mut index = self.index.borrow_mut();
        let mut zones = self.writer.zones.borrow_mut();
        for change in changes {
            let record_len = format::record_bytes(change.value_len) as u64;
            if let Some(old) = change.old {
                zones[old.zone as usize].live_bytes = zones[old.zone as usize]
                    .live_bytes
                    .saturating_sub(format::record_bytes(old.value_len) as u64);
                self.stats.live_value_bytes.set(
                    self.stats.live_value_bytes.get().saturating_sub(u64::from(old.value_len)),
                );
            }
            match change.kind {
                RecordKind::Block => {
                    let offset = start + change.position as u64;
                    let value_at = change.value_pos.map_or(0, |pos| (pos - change.position) as u32);
                    let location = Location::of(
                        zone,
                        offset,
                        change.value_len,
                        (&change.key, change.value_crc, value_at),
                        block,
                    )
                    .expect("zone offsets fit u32, and a batch is far under u16::MAX blocks");
                    index.insert(&change.key, location, !change.tag_taken_by_other);
                    zones[zone as usize].live_bytes += record_len;
                    self.stats
                        .live_value_bytes
                        .set(self.stats.live_value_bytes.get() + u64::from(change.value_len));
                }
                RecordKind::Tombstone => {
                    if !index.remove_exact(&change.key) && !change.tag_taken_by_other {
                        index.remove_tag(&change.key);
                    }
                }
                RecordKind::Padding | RecordKind::Batch => unreachable!("not an index change"),
            }
        }
        self.stats.records.set(self.stats.records.get() + changes.len() as u64);
        self.stats.log_bytes.set(self.stats.log_bytes.get() + batch_bytes);
        self.writer
            .bytes_since_checkpoint
            .set(self.writer.bytes_since_checkpoint.get() + batch_bytes);
        self.writer
            .records_since_checkpoint
            .set(self.writer.records_since_checkpoint.get() + changes.len() as u64);
    }

    /// Waits until no batch is in flight.
    async fn wait_in_flight_empty(&self) {
        std::future::poll_fn(|cx| {
            let front = self.writer.in_flight.borrow().front().map(|f| f.0.clone());
            match front {
                None => Poll::Ready(()),
                Some(front) => {
                    front.waiters.borrow_mut().push(cx.waker().clone());
                    Poll::Pending
                }
            }
        })
        .await;
    }

    /// Stops the writer at once, as a power cut would: requests waiting for a batch fail, the
    /// committer exits, nothing more is written. For crash tests and for a disk that failed.
    pub fn halt(&self) {
        self.writer.stopping.set(true);
        *self.writer.read_only.borrow_mut() = Some("halted".into());
        let halted =
            || Rc::new(StoreError::ReadOnly { disk: self.name.clone(), reason: "halted".into() });
        if let Some(open) = self.writer.open.borrow_mut().take() {
            open.shared.set(Outcome::Failed(halted()));
        }
        for (shared, ..) in self.writer.in_flight.borrow_mut().drain(..) {
            shared.set(Outcome::Failed(halted()));
        }
        for waker in self.writer.taken_waiters.borrow_mut().drain(..) {
            waker.wake();
        }
        self.writer.admission.wake_all();
        self.writer.wake_committer();
    }

    /// Stops taking writes and waits until every accepted write is acknowledged.
    pub(super) async fn drain_writes(self: &Rc<Self>) {
        self.writer.stopping.set(true);
        self.writer.admission.wake_all();
        self.writer.wake_committer();
        std::future::poll_fn(|cx| {
            let open = self.writer.open.borrow().as_ref().is_some_and(|b| !b.changes.is_empty());
            if !open && self.writer.in_flight.borrow().is_empty() {
                return Poll::Ready(());
            }
            let front = self.writer.in_flight.borrow().front().map(|f| f.0.clone());
            match front {
                Some(front) => front.waiters.borrow_mut().push(cx.waker().clone()),
                None => {
                    if let Some(open) = self.writer.open.borrow().as_ref() {
                        open.shared.waiters.borrow_mut().push(cx.waker().clone());
                    }
                }
            }
            Poll::Pending
        })
        .await;
    }
}
