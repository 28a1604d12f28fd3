//! Read-only views of a disk for the offline admin tools (`crate::admin`): what the store would
//! load when it opens the disk (the recovery code itself, stopped before anything is written),
//! and a verifying walk over every record of a zone that reports what it finds as it goes.
//!
//! Nothing here writes to the disk or sends a zone command: `Store::recover` only reads, and the
//! walk reads through the same [`ScanWindow`] recovery uses and judges batches by recovery's
//! rules (docs/FORMAT.md, "Recovery"): a batch counts only if its batch record verifies and
//! every record in it verifies; a region that fails is damage to acknowledged data if a later
//! batch (or the checkpoint) says it was acknowledged, and a torn write otherwise.

use ioengine::buf::AlignedBuf;
use ioengine::checksum::CHUNK_BYTES;
use ioengine::device::{Device, ZoneIndex};

use super::format::{
    self, BatchInfo, CheckpointHeader, FormatError, Key, Location, RECORD_ALIGN_BYTES,
    RECORD_HEADER_BYTES, RecordHeader, RecordKind, Superblock,
};
use super::recovery::{Recovered, ScanWindow, ValueSpans};
use super::writer::{ZoneLog, batch_record_bytes};
use super::{RecoveryReport, Store, StoreConfig, StoreResult};

/// Findings kept per region that failed to verify (the rest are counted).
pub const REGION_FINDINGS_MAX: usize = 16;

/// A disk as the store would load it, opened without writing anything. Holds the index in
/// memory (about 20 bytes per key, as the daemon does).
pub struct DiskView<D: Device> {
    store: Store<D>,
    zones: Vec<ZoneLog>,
    checkpoint: Option<CheckpointHeader>,
    report: RecoveryReport,
    next_seq: u64,
    batch_limit_bytes: u64,
    resync_window_bytes: u64,
}

impl<D: Device> std::fmt::Debug for DiskView<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiskView").field("store", &self.store).finish()
    }
}

/// One zone's log as recovery left it (before the daemon would restore write pointers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ZoneLogState {
    /// Where the valid log ends (where the next batch would go).
    pub log_end_bytes: u64,
    /// Where the loaded checkpoint said the acknowledged log ended (0 without a checkpoint).
    pub checkpointed_end_bytes: u64,
    /// The zone takes no more writes.
    pub finished: bool,
    /// Recovery found torn or damaged regions in the part it scanned.
    pub unclean: bool,
    /// Writable bytes of the zone.
    pub capacity_bytes: u64,
}

/// What one checkpoint set's header says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckpointSlot {
    /// A header of this disk that verifies (its body is checked only when it is loaded).
    Valid(CheckpointHeader),
    /// Never written since the format (zeroes, or reset).
    Empty,
    /// A valid header of an earlier format of the device (ignored).
    OtherDisk(CheckpointHeader),
    /// Not a checkpoint header: why.
    Invalid(FormatError),
    /// The read failed.
    Unreadable(String),
}

/// Something the walk found, for a report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Zone offset.
    pub offset: u64,
    /// What is wrong, for an operator.
    pub what: String,
}

/// A region of a zone's log that did not verify as a whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Region {
    /// First byte (zone offset).
    pub from: u64,
    /// End (zone offset, exclusive).
    pub to: u64,
    /// The region lies below a later batch's (or the checkpoint's) acknowledged end: damage to
    /// acknowledged data. Otherwise a torn write that was never acknowledged.
    pub acknowledged: bool,
    /// Up to [`REGION_FINDINGS_MAX`] findings, in offset order.
    pub findings: Vec<Finding>,
    /// All findings, listed or not.
    pub findings_total: u64,
}

impl Region {
    fn new(from: u64, to: u64) -> Region {
        Region { from, to, acknowledged: false, findings: Vec::new(), findings_total: 0 }
    }

    fn add(&mut self, offset: u64, what: String) {
        self.findings_total += 1;
        if self.findings.len() < REGION_FINDINGS_MAX {
            self.findings.push(Finding { offset, what });
        }
    }
}

/// What the walk reports, in offset order (a [`WalkEvent::Region`] comes when its kind is
/// known, after the records inside it).
#[derive(Debug, Clone, Copy)]
pub enum WalkEvent<'a> {
    /// A batch record that verified.
    Batch {
        /// Zone offset.
        offset: u64,
        /// Its decoded value.
        info: BatchInfo,
        /// Its sequence number.
        seq: u64,
    },
    /// A block or tombstone whose header verified.
    Record {
        /// Zone offset.
        offset: u64,
        /// The header.
        header: RecordHeader,
        /// Bytes the record takes (aligned; a detached value's included).
        bytes: u64,
        /// Every chunk of the value verified.
        value_ok: bool,
    },
    /// A padding record.
    Padding {
        /// Zone offset.
        offset: u64,
        /// Bytes it covers.
        bytes: u64,
    },
    /// A region that failed to verify (see [`Region`]).
    Region(&'a Region),
}

/// How a zone's walk ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalkEnd {
    /// Where the valid log ends, by recovery's rules, scanning from the zone's start.
    pub log_end_bytes: u64,
    /// Bytes read.
    pub read_bytes: u64,
}

/// What a parse at one offset found.
enum Parsed {
    /// A block or tombstone: its header, its length, and the chunks that failed (index, error;
    /// the first few) with their count.
    Record {
        header: RecordHeader,
        bytes: u64,
        bad_chunks: Vec<(usize, FormatError)>,
        bad: usize,
        /// Zone offset of a detached value.
        value_from: Option<u64>,
    },
    Padding {
        bytes: u64,
    },
    Invalid(String),
}

/// Failing chunks described per record (the rest are counted).
const CHUNK_FAILURES_LISTED_MAX: usize = 3;

impl<D: Device + 'static> DiskView<D> {
    /// Loads `disk` exactly as `Store::open` would, without writing: superblock, newest valid
    /// checkpoint, tail scan, index. Fails as `Store::open` does (not a shingle disk, a
    /// geometry that does not match the superblock, an I/O error).
    pub async fn open(disk: D) -> StoreResult<DiskView<D>> {
        let Recovered { store, zones, next_seq, report, checkpoint } =
            Store::recover(disk, StoreConfig::default()).await?;
        let (batch_limit_bytes, resync_window_bytes) = store.scan_limits();
        Ok(DiskView {
            store,
            zones,
            checkpoint,
            report,
            next_seq,
            batch_limit_bytes,
            resync_window_bytes,
        })
    }

    /// The device.
    pub fn device(&self) -> &D {
        &self.store.disk
    }

    /// The superblock.
    pub fn superblock(&self) -> &Superblock {
        &self.store.superblock
    }

    /// The checkpoint loaded (None: none was valid; the whole log was scanned).
    pub fn checkpoint(&self) -> Option<&CheckpointHeader> {
        self.checkpoint.as_ref()
    }

    /// What recovery found (timings, tail records, torn and damaged regions, warnings).
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.report
    }

    /// The sequence number the store would assign next.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// One zone's recovered log state. Zones past the superblock's count read as empty.
    pub fn zone_log(&self, zone: ZoneIndex) -> ZoneLogState {
        let z = self.zones.get(zone as usize).copied().unwrap_or_default();
        ZoneLogState {
            log_end_bytes: z.write_offset,
            checkpointed_end_bytes: z.acked_end,
            finished: z.finished,
            unclean: z.unclean,
            capacity_bytes: z.capacity_bytes,
        }
    }

    /// Keys in the index.
    pub fn index_len(&self) -> usize {
        self.store.index.borrow().len()
    }

    /// The index entry of `key` if it points at `zone`/`offset` (the record there is then the
    /// key's live record), with the length the entry records. Uses the read path's rule: an
    /// overflow entry for the key wins over its tag slot.
    pub fn entry_at(&self, key: &Key, zone: ZoneIndex, offset: u64) -> Option<Location> {
        let candidates = self.store.index.borrow().candidates(key);
        let location = match candidates.exact {
            Some(exact) => exact,
            None => candidates.by_tag?,
        };
        (location.zone == zone && u64::from(location.offset) == offset).then_some(location)
    }

    /// Every index entry's location, sorted by zone and offset (12 bytes per key).
    pub fn index_locations_sorted(&self) -> Vec<Location> {
        let index = self.store.index.borrow();
        let mut locations: Vec<Location> = Vec::with_capacity(index.len());
        locations.extend(index.locations());
        locations.sort_unstable_by_key(|l| (l.zone, l.offset));
        locations
    }

    /// Reads the two checkpoint headers (set A, set B).
    pub async fn checkpoint_slots(&self) -> [CheckpointSlot; 2] {
        let mut slots = [CheckpointSlot::Empty, CheckpointSlot::Empty];
        for (set, slot) in slots.iter_mut().enumerate() {
            *slot = self.checkpoint_slot(set as u32).await;
        }
        slots
    }

    async fn checkpoint_slot(&self, set: u32) -> CheckpointSlot {
        let sb = self.superblock();
        let block = self.store.block_bytes;
        let offset = self.device().geometry().zone_start(sb.checkpoint_set_start(set));
        let buf = AlignedBuf::new(block, block.max(4096));
        let (res, buf) = self.device().read_at(offset, buf, block).await;
        if let Err(err) = res {
            return CheckpointSlot::Unreadable(err.to_string());
        }
        if buf.iter().all(|&b| b == 0 || b == 0xFF) {
            return CheckpointSlot::Empty;
        }
        match CheckpointHeader::decode(&buf) {
            Ok(header) if header.disk_uuid == sb.disk_uuid => CheckpointSlot::Valid(header),
            Ok(header) => CheckpointSlot::OtherDisk(header),
            Err(err) => CheckpointSlot::Invalid(err),
        }
    }

    /// What is at `location`: the record header there, or why none decodes. Never reads outside
    /// the zone.
    pub async fn header_at(&self, location: Location) -> StoreResult<Result<RecordHeader, String>> {
        let sb = self.superblock();
        if location.zone >= sb.zone_count {
            return Ok(Err(format!("zone {} is past the last zone", location.zone)));
        }
        let capacity = self.device().zone(location.zone).capacity_bytes;
        let span = format::value_offset(location.value_len) as u64;
        if u64::from(location.offset) + span > capacity {
            return Ok(Err("the record would end past the zone's capacity".into()));
        }
        let (buf, at) =
            self.store.read_span(location.zone, u64::from(location.offset), span as usize).await?;
        Ok(format::decode_header(&buf[at..], sb.value_bytes_max).map_err(|e| e.to_string()))
    }

    /// Walks every record of `zone` from its start, verifying every header and every chunk,
    /// and reports each to `sink` in offset order. `acked_floor_bytes`: the log up to here is
    /// known to have been acknowledged (the checkpointed end), so a region below it that fails
    /// is damage. Stops where recovery's rules say the log ends; an I/O error ends the walk.
    pub async fn walk_zone(
        &self,
        zone: ZoneIndex,
        acked_floor_bytes: u64,
        sink: &mut dyn FnMut(WalkEvent<'_>),
    ) -> StoreResult<WalkEnd> {
        let capacity = self.device().zone(zone).capacity_bytes;
        let block = self.store.block_bytes as u64;
        let mut window = ScanWindow::new(&self.store, zone, capacity);
        let mut pos = 0u64;
        let mut last_seq = 0u64;
        let mut max_acked = acked_floor_bytes;
        // Regions not yet known to be torn or damaged (as recovery's gaps).
        let mut pending: Vec<Region> = Vec::new();
        while pos + block <= capacity {
            let batch = window.batch_record_at(pos, last_seq, self.batch_limit_bytes).await?;
            let Some((batch_seq, info)) = batch else {
                match self.resync(&mut window, pos, last_seq, capacity).await? {
                    Some(next) => {
                        let mut region = Region::new(pos, next);
                        let why = self.why_no_batch(&mut window, pos, last_seq).await?;
                        region.add(pos, why);
                        self.salvage(&mut window, &mut region, last_seq, sink).await?;
                        pending.push(region);
                        pos = next;
                        continue;
                    }
                    None => {
                        let torn_end = self.written_extent(&mut window, pos, capacity).await?;
                        if torn_end > pos {
                            let mut region = Region::new(pos, torn_end);
                            region.add(pos, "bytes written after the end of the log".into());
                            pending.push(region);
                        }
                        break;
                    }
                }
            };
            max_acked = max_acked.max(info.acked_end);
            sink(WalkEvent::Batch { offset: pos, info, seq: batch_seq });
            let mut region = Region::new(pos, pos + info.batch_bytes);
            let seq =
                self.walk_batch(&mut window, pos, batch_seq, &info, &mut region, sink).await?;
            if region.findings_total == 0 {
                last_seq = seq;
            } else {
                pending.push(region);
                last_seq = batch_seq;
            }
            pos += info.batch_bytes;
            let (damaged, rest): (Vec<Region>, Vec<Region>) =
                pending.into_iter().partition(|r| max_acked > r.from);
            pending = rest;
            for mut region in damaged {
                region.acknowledged = true;
                sink(WalkEvent::Region(&region));
            }
        }
        for mut region in pending {
            region.acknowledged = max_acked > region.from;
            sink(WalkEvent::Region(&region));
        }
        if max_acked > pos {
            let mut lost = Region::new(pos, max_acked);
            lost.acknowledged = true;
            lost.add(
                pos,
                format!("the log was acknowledged up to offset {max_acked} but ends at {pos}"),
            );
            sink(WalkEvent::Region(&lost));
        }
        Ok(WalkEnd { log_end_bytes: pos, read_bytes: window.read_bytes })
    }

    /// The next valid batch within what could have been in flight after `pos`, as recovery
    /// looks for it.
    async fn resync(
        &self,
        window: &mut ScanWindow<'_, D>,
        pos: u64,
        last_seq: u64,
        capacity: u64,
    ) -> StoreResult<Option<u64>> {
        let block = self.store.block_bytes as u64;
        let mut q = self.store.first_written_block(
            window.zone(),
            pos + block,
            pos + self.resync_window_bytes,
        )?;
        while q + block <= capacity && q < pos + self.resync_window_bytes {
            if window.batch_record_at(q, last_seq, self.batch_limit_bytes).await?.is_some() {
                return Ok(Some(q));
            }
            q += block;
        }
        Ok(None)
    }

    /// The end of the blocks from `pos` on that hold anything but zeroes (a torn write past the
    /// end of the log), looking no further than recovery's resync window.
    async fn written_extent(
        &self,
        window: &mut ScanWindow<'_, D>,
        pos: u64,
        capacity: u64,
    ) -> StoreResult<u64> {
        let block = self.store.block_bytes as u64;
        let limit = (pos + self.resync_window_bytes).min(capacity);
        let mut end = pos;
        while end + block <= limit && window.looks_written(end).await? {
            end += block;
        }
        Ok(end)
    }

    /// Walks the records of a batch whose batch record verified; returns the last sequence
    /// number seen. Every failure goes into `region`.
    async fn walk_batch(
        &self,
        window: &mut ScanWindow<'_, D>,
        pos: u64,
        batch_seq: u64,
        info: &BatchInfo,
        region: &mut Region,
        sink: &mut dyn FnMut(WalkEvent<'_>),
    ) -> StoreResult<u64> {
        let batch_end = pos + info.batch_bytes;
        let mut at = pos + batch_record_bytes() as u64;
        let mut seq = batch_seq;
        let mut records = 0u64;
        // Start and reason of a stretch where no record decodes.
        let mut unreadable: Option<(u64, String)> = None;
        // Detached values follow every header of the batch: the headers end where they start.
        let mut values_from = batch_end;
        while at + RECORD_HEADER_BYTES as u64 <= values_from {
            let parsed = self.parse_at(window, at, batch_end).await?;
            if !matches!(parsed, Parsed::Invalid(_)) {
                if let Some((from, why)) = unreadable.take() {
                    region.add(from, format!("bytes {from}..{at} hold no valid record: {why}"));
                }
            }
            match parsed {
                Parsed::Padding { bytes } => {
                    sink(WalkEvent::Padding { offset: at, bytes });
                    at += bytes;
                }
                Parsed::Record { header, bytes, bad_chunks, bad, value_from } => {
                    if let Some(value) = value_from {
                        values_from = values_from.min(value);
                    }
                    if header.seq <= seq {
                        region
                            .add(at, format!("sequence number {} is not above {seq}", header.seq));
                    }
                    seq = seq.max(header.seq);
                    describe_bad_chunks(region, at, &header, &bad_chunks, bad);
                    sink(record_event(at, header, bytes, value_from, bad));
                    records += 1;
                    at += bytes;
                }
                Parsed::Invalid(why) => {
                    unreadable.get_or_insert((at, why));
                    at += RECORD_ALIGN_BYTES as u64;
                }
            }
        }
        if let Some((from, why)) = unreadable {
            region.add(from, format!("bytes {from}..{values_from} hold no valid record: {why}"));
        }
        if records != u64::from(info.record_count) {
            region.add(
                pos,
                format!("the batch record counts {} records, {records} found", info.record_count),
            );
        }
        Ok(seq)
    }

    /// Records of a region that failed as a whole, as recovery salvages them: any record at
    /// 8-byte alignment whose header verifies and whose sequence number is above `last_seq`.
    async fn salvage(
        &self,
        window: &mut ScanWindow<'_, D>,
        region: &mut Region,
        last_seq: u64,
        sink: &mut dyn FnMut(WalkEvent<'_>),
    ) -> StoreResult<()> {
        let mut at = region.from;
        // Detached values of the records found: their bytes are not searched for records.
        let mut values = ValueSpans::default();
        while at + RECORD_HEADER_BYTES as u64 <= region.to {
            if let Some(end) = values.covering(at) {
                at = end;
                continue;
            }
            match self.parse_at(window, at, region.to).await? {
                Parsed::Record { header, bytes, bad_chunks, bad, value_from }
                    if header.seq > last_seq =>
                {
                    describe_bad_chunks(region, at, &header, &bad_chunks, bad);
                    sink(record_event(at, header, bytes, value_from, bad));
                    if let Some(value) = value_from {
                        values.add(value, value + u64::from(header.value_len));
                    }
                    at += bytes;
                }
                _ => at += RECORD_ALIGN_BYTES as u64,
            }
        }
        Ok(())
    }

    /// Why no batch starts at `pos`, for a report.
    async fn why_no_batch(
        &self,
        window: &mut ScanWindow<'_, D>,
        pos: u64,
        last_seq: u64,
    ) -> StoreResult<String> {
        let sb = self.superblock();
        let bytes = window.bytes(pos, batch_record_bytes()).await?;
        let header = match format::decode_header(bytes, sb.value_bytes_max) {
            Ok(header) => header,
            Err(err) => return Ok(format!("no valid batch record: {err}")),
        };
        Ok(if header.kind != RecordKind::Batch {
            format!("a {} record where a batch should start", kind_name(header.kind))
        } else if header.key != format::batch_key(&sb.disk_uuid) {
            "a batch of an earlier format of this device".into()
        } else if header.seq <= last_seq {
            format!("batch sequence number {} is not above {last_seq}", header.seq)
        } else {
            "the batch record's value or size does not verify".into()
        })
    }

    /// Decodes and verifies the record at `at`, which must end by `end`.
    async fn parse_at(
        &self,
        window: &mut ScanWindow<'_, D>,
        at: u64,
        end: u64,
    ) -> StoreResult<Parsed> {
        let vmax = self.superblock().value_bytes_max;
        let head = window.bytes(at, RECORD_HEADER_BYTES).await?;
        let span = match format::header_span(head, vmax) {
            Ok(span) => span,
            Err(err) => return Ok(Parsed::Invalid(err.to_string())),
        };
        let head = window.bytes(at, span).await?;
        let header = match format::decode_header(head, vmax) {
            Ok(header) => header,
            Err(err) => return Ok(Parsed::Invalid(err.to_string())),
        };
        if header.kind == RecordKind::Batch {
            return Ok(Parsed::Invalid("a batch record inside a batch".into()));
        }
        let bytes = header.span_bytes() as u64;
        // A detached value is read with its header: one window holds both.
        let (start, extent) = (header.value_start(), header.extent_bytes() as u64);
        if at + extent > end {
            return Ok(Parsed::Invalid(format!(
                "a {} record of {extent} bytes would run past offset {end}",
                kind_name(header.kind)
            )));
        }
        if header.kind == RecordKind::Padding {
            return Ok(Parsed::Padding { bytes });
        }
        let block = self.store.block_bytes as u64;
        if header.is_detached()
            && format::detached_value_blocks(at, header.value_at, block).is_none()
        {
            return Ok(Parsed::Invalid(format!(
                "a detached value at offset {} is not block-aligned",
                at + u64::from(header.value_at)
            )));
        }
        let whole = window.bytes(at, extent as usize).await?;
        let Some(value) = whole.get(start..start + header.value_len as usize) else {
            return Ok(Parsed::Invalid("the record runs past the zone's capacity".into()));
        };
        let mut bad_chunks = Vec::new();
        let mut bad = 0;
        for (i, chunk) in value.chunks(CHUNK_BYTES).enumerate() {
            if let Err(err) = format::verify_chunk(whole, i, chunk) {
                bad += 1;
                if bad_chunks.len() < CHUNK_FAILURES_LISTED_MAX {
                    bad_chunks.push((i, err));
                }
            }
        }
        let value_from = header.is_detached().then(|| at + u64::from(header.value_at));
        Ok(Parsed::Record { header, bytes, bad_chunks, bad, value_from })
    }
}

/// The event of a record at `at` that took `bytes` to the next record, whose detached value (if
/// any) starts at `value_from`, with `bad` failing chunks: its bytes count the value too.
fn record_event<'a>(
    at: u64,
    header: RecordHeader,
    bytes: u64,
    value_from: Option<u64>,
    bad: usize,
) -> WalkEvent<'a> {
    let bytes = bytes + value_from.map_or(0, |_| u64::from(header.value_len));
    WalkEvent::Record { offset: at, header, bytes, value_ok: bad == 0 }
}

/// Adds a finding for a record whose value failed its chunk checksums.
fn describe_bad_chunks(
    region: &mut Region,
    at: u64,
    header: &RecordHeader,
    bad_chunks: &[(usize, FormatError)],
    bad: usize,
) {
    let Some((first, err)) = bad_chunks.first() else { return };
    let value_start = at + format::value_offset(header.value_len) as u64;
    let chunk_at = value_start + (*first * CHUNK_BYTES) as u64;
    let more = match bad {
        1 => String::new(),
        n => format!(" ({n} of its chunks fail)"),
    };
    region.add(
        at,
        format!(
            "{} of {} bytes, key {}: value chunk {first} at offset {chunk_at}: {err}{more}",
            kind_name(header.kind),
            header.value_len,
            key_hex(&header.key),
        ),
    );
}

/// A record kind, for reports.
pub fn kind_name(kind: RecordKind) -> &'static str {
    match kind {
        RecordKind::Block => "block",
        RecordKind::Tombstone => "tombstone",
        RecordKind::Padding => "padding",
        RecordKind::Batch => "batch",
    }
}

/// Lowercase hex of a key.
pub fn key_hex(key: &Key) -> String {
    key.iter().map(|b| format!("{b:02x}")).collect()
}
