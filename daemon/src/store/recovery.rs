//! Formatting a disk and opening one: the superblock, the newest valid checkpoint, then a
//! sequential scan of only the log written after it. A torn tail (a batch that never became
//! durable as a whole) is cut off; damage to acknowledged data is reported, never silently
//! dropped; intact records around damage are kept.
//!
//! How the tail is found without one read per zone: the writer always opens the lowest-numbered
//! empty zone, so the zones written since the checkpoint are the zone that was active then and
//! the empty zones after it in ascending order; the scan stops at the first empty zone that has
//! no fresh batch at its start.

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::Poll;

use ioengine::buf::AlignedBuf;
use ioengine::checksum::{CHUNK_BYTES, crc32c};
use ioengine::device::{Device, DeviceKind, ZoneCommand, ZoneIndex};
use ioengine::op::WriteFlags;

use super::format::{
    self, BatchInfo, CHECKPOINT_ENTRY_BYTES_V2, CHECKPOINT_ZONE_BYTES, CheckpointEntry,
    CheckpointHeader, FORMAT_VERSION, FormatError, Key, Location, OverflowEntry,
    RECORD_HEADER_BYTES, RecordKind, SUPERBLOCK_COPIES, Superblock, ZONE_STATE_FINISHED, ZoneState,
};
use super::index::Index;
use super::reader::ReadBuf;
use super::writer::{
    Writer, ZoneLog, batch_bytes_limit, batch_record_bytes, single_record_batch_bytes,
};
use super::{
    FormatOptions, Stats, Store, StoreConfig, StoreError, StoreResult, resync_window_bytes, unix_ms,
};

/// Bytes read per I/O while scanning the log.
const SCAN_READ_BYTES: usize = 4 << 20;
/// How far a scan's read-ahead window reaches back into the window before it: a record that
/// straddles a window's end and is no longer than this is read whole with the next window.
const READ_AHEAD_OVERLAP_BYTES: u64 = 64 << 10;
const _: () = assert!(READ_AHEAD_OVERLAP_BYTES < SCAN_READ_BYTES as u64);

/// What opening a disk found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Generation of the checkpoint loaded (None: none valid, the whole log was scanned).
    pub checkpoint_generation: Option<u64>,
    /// The checkpoint was written at a clean shutdown.
    pub checkpoint_clean: bool,
    /// Entries loaded from the checkpoint.
    pub checkpoint_entries: u64,
    /// Log bytes scanned after the checkpoint.
    pub scanned_bytes: u64,
    /// Records found in the scanned tail.
    pub tail_records: u64,
    /// Torn (never acknowledged) regions cut off or skipped.
    pub torn_regions: u64,
    /// Damaged regions of acknowledged data (reported as errors; intact records kept).
    pub corrupt_regions: u64,
    /// Records of damaged regions that could not be read (their keys may be lost).
    pub lost_records_possible: u64,
    /// Problems worth an operator's attention, one line each.
    pub warnings: Vec<String>,
    /// Milliseconds the recovery took.
    pub duration_ms: u64,
    /// Of which scanning the tail.
    pub scan_ms: u64,
    /// Of which applying the tail to the index.
    pub apply_ms: u64,
}

/// What [`Store::recover`] loaded, before anything is written.
pub(super) struct Recovered<D: Device> {
    /// The store, its committer not started, its writer a placeholder.
    pub store: Store<D>,
    /// Every zone's log state as recovered (write pointers not yet restored).
    pub zones: Vec<ZoneLog>,
    /// The next sequence number to assign.
    pub next_seq: u64,
    /// What recovery found so far.
    pub report: RecoveryReport,
    /// The checkpoint loaded, if one was valid.
    pub checkpoint: Option<CheckpointHeader>,
}

/// A record found by the tail scan.
#[derive(Debug, Clone, Copy)]
struct TailRecord {
    seq: u64,
    kind: RecordKind,
    key: Key,
    location: Location,
}

/// Formats `disk` as an empty shingle disk. Refuses a disk that holds a shingle superblock
/// unless `force`.
pub async fn format<D: Device>(
    disk: &D,
    options: &FormatOptions,
    force: bool,
) -> StoreResult<Superblock> {
    let name = disk.name().to_string();
    let cannot = |reason: String| StoreError::CannotFormat { disk: name.clone(), reason };
    let g = disk.geometry().clone();
    if g.zone_count < 4 {
        return Err(cannot(format!("{} zones; shingle needs at least 4", g.zone_count)));
    }
    let block = g.logical_block_bytes as usize;
    let min_capacity = disk.zones().iter().map(|z| z.capacity_bytes).min().unwrap_or(0);
    let limit = single_record_batch_bytes(options.value_bytes_max, block) as u64;
    if options.value_bytes_max == 0
        || options.value_bytes_max > format::VALUE_BYTES_FORMAT_MAX
        || limit > min_capacity
    {
        return Err(cannot(format!(
            "value limit {} needs batches of {limit} bytes; the smallest zone holds {min_capacity}",
            options.value_bytes_max
        )));
    }
    if !force {
        if let Ok(existing) = read_superblock(disk).await {
            return Err(cannot(format!(
                "it holds a shingle superblock (disk {}); format with force to erase it",
                uuid_hex(&existing.disk_uuid)
            )));
        }
    }
    let per_set = match options.checkpoint_zones_per_set {
        0 => checkpoint_zones_for(&g, min_capacity),
        n => n,
    };
    if 1 + 2 * per_set >= g.zone_count {
        return Err(cannot(format!("{per_set} checkpoint zones per set leave no data zone")));
    }
    let superblock = Superblock {
        format_version: FORMAT_VERSION,
        disk_uuid: random_bytes(),
        created_unix_ms: unix_ms(),
        block_bytes: g.logical_block_bytes,
        zone_size_bytes: g.zone_size_bytes,
        zone_count: g.zone_count,
        checkpoint_zones_per_set: per_set,
        tag_seed: random_bytes(),
        value_bytes_max: options.value_bytes_max,
    };
    // Every zone is reset, whatever it reports: an emulated device opened "fresh" over an old
    // file says Empty while old checkpoints and batches are still in it. Conventional zones
    // cannot be reset; the checkpoint headers in them are overwritten with zeroes below.
    for zone in disk.zones() {
        if zone.zone_type != ioengine::device::ZoneType::Conventional {
            disk.zone_command(zone.index, ZoneCommand::Reset).await.map_err(|e| io(&name, e))?;
        }
    }
    for set in 0..2 {
        let zone = superblock.checkpoint_set_start(set);
        if disk.zone(zone).zone_type == ioengine::device::ZoneType::Conventional {
            let mut zeroes = AlignedBuf::new(block, block.max(4096));
            zeroes.pad_to(block);
            let offset = disk.geometry().zone_start(zone);
            let (res, _) = disk.write_at(offset, zeroes, WriteFlags::DSYNC).await;
            res.map_err(|e| io(&name, e))?;
        }
    }
    let mut buf = AlignedBuf::new(block * SUPERBLOCK_COPIES, block.max(4096));
    for copy in 0..SUPERBLOCK_COPIES {
        buf.pad_to(copy * block);
        buf.extend_from_slice(&superblock.encode());
    }
    buf.pad_to(block * SUPERBLOCK_COPIES);
    let (res, _) = disk.write_at(0, buf, WriteFlags::DSYNC).await;
    res.map_err(|e| io(&name, e))?;
    disk.flush().await.map_err(|e| io(&name, e))?;
    // Zone 0 takes no more writes: finishing it frees its open/active resource on zoned devices.
    if disk.zone(0).zone_type != ioengine::device::ZoneType::Conventional {
        disk.zone_command(0, ZoneCommand::Finish).await.map_err(|e| io(&name, e))?;
    }
    Ok(superblock)
}

/// Zones per checkpoint set: room for one index entry per 4 KiB of data space, at least 1,
/// at most an eighth of the disk.
fn checkpoint_zones_for(g: &ioengine::device::Geometry, zone_capacity: u64) -> u32 {
    let data_bytes = g.capacity_bytes();
    let entries = data_bytes / 4096;
    let bytes = entries * CHECKPOINT_ENTRY_BYTES_V2 as u64
        + u64::from(g.zone_count) * CHECKPOINT_ZONE_BYTES as u64
        + 4096;
    let zones = bytes.div_ceil(zone_capacity.max(1)) as u32;
    zones.clamp(1, (g.zone_count / 8).max(1))
}

fn io(name: &str, source: ioengine::Error) -> StoreError {
    match source {
        ioengine::Error::NoSpace { .. } => StoreError::NoSpace { disk: name.to_string() },
        source => StoreError::Io { disk: name.to_string(), source },
    }
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    getrandom::fill(&mut out).expect("the kernel's random source is available");
    out
}

/// Lowercase hex of a disk uuid.
pub fn uuid_hex(uuid: &[u8; 16]) -> String {
    uuid.iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads the superblock: the first copy that decodes wins.
pub async fn read_superblock<D: Device>(disk: &D) -> StoreResult<Superblock> {
    let name = disk.name().to_string();
    let block = disk.geometry().logical_block_bytes as usize;
    let len = block * SUPERBLOCK_COPIES;
    let (res, buf) = disk.read_at(0, AlignedBuf::new(len, block.max(4096)), len).await;
    res.map_err(|e| io(&name, e))?;
    let mut first_error = None;
    for copy in 0..SUPERBLOCK_COPIES {
        match Superblock::decode(&buf[copy * block..]) {
            Ok(sb) => return Ok(sb),
            Err(err) => {
                first_error.get_or_insert(err);
            }
        }
    }
    Err(StoreError::NotFormatted {
        disk: name,
        detail: first_error.unwrap_or(FormatError::Truncated {
            what: "superblock",
            len: 0,
            needed: 1,
        }),
    })
}

impl<D: Device + 'static> Store<D> {
    /// Opens a formatted disk: loads the newest checkpoint, scans the tail, restores write
    /// pointers, and starts the disk's committer on the current core.
    pub async fn open(disk: D, config: StoreConfig) -> StoreResult<Rc<Store<D>>> {
        let started = std::time::Instant::now();
        let Recovered { mut store, mut zones, next_seq, mut report, .. } =
            Store::recover(disk, config).await?;
        let name = store.name.clone();
        let block = store.block_bytes;
        let abandoned = store.restore_zones(&mut zones).await?;
        let active = choose_active(&zones, store.superblock.first_data_zone());
        recompute_live(&store.index.borrow(), &mut zones, &store.stats);
        let store_zones = zones;
        store.writer =
            Writer::new(store_zones, store.superblock.first_data_zone(), active, next_seq, block);
        // An abandoned zone may look empty to the next recovery and end its search for the
        // zones written since the checkpoint: checkpoint before the writer opens another zone.
        store.writer.set_checkpoint_before_new_zone(abandoned);
        report.duration_ms = started.elapsed().as_millis() as u64;
        store.recovery = report;
        let store = Rc::new(store);
        ioengine::executor::register_pool(store.writer.pool());
        ioengine::spawn(Store::run_committer(Rc::downgrade(&store))).detach();
        tracing::info!(
            disk = %name,
            keys = store.len(),
            checkpoint = ?store.recovery.checkpoint_generation,
            tail_records = store.recovery.tail_records,
            scanned_bytes = store.recovery.scanned_bytes,
            ms = store.recovery.duration_ms,
            "disk recovered"
        );
        for warning in &store.recovery.warnings {
            tracing::warn!(disk = %name, "{warning}");
        }
        Ok(store)
    }

    /// The part of [`Store::open`] that only reads: the superblock, the newest valid
    /// checkpoint, the tail scan and its application to the index. Nothing is written and no
    /// zone command is sent (the offline admin tools rely on it: `super::scan`); the committer
    /// is not started. `open` continues from here.
    pub(super) async fn recover(disk: D, config: StoreConfig) -> StoreResult<Recovered<D>> {
        let name = disk.name().to_string();
        let superblock = read_superblock(&disk).await?;
        check_geometry(&disk, &superblock)?;
        let block = superblock.block_bytes as usize;
        let mut report = RecoveryReport::default();
        let zone_count = superblock.zone_count as usize;
        let mut zones: Vec<ZoneLog> = (0..zone_count)
            .map(|z| ZoneLog {
                capacity_bytes: disk.zone(z as u32).capacity_bytes,
                ..ZoneLog::default()
            })
            .collect();
        let mut index = Index::new(superblock.tag_seed);
        let checkpoint =
            load_checkpoint(&disk, &superblock, &mut index, &mut zones, &mut report).await?;
        let (covered_seq, mut next_seq) =
            checkpoint.map(|h| (h.covered_seq, h.next_seq)).unwrap_or((0, 1));

        let store = Rc::new(Store {
            name,
            disk,
            config,
            block_bytes: block,
            index: std::cell::RefCell::new(index),
            writer: Writer::new(Vec::new(), superblock.first_data_zone(), None, 1, block),
            superblock,
            busy_keys: Default::default(),
            read_pool: ioengine::buf::BufPool::new(super::READ_POOL),
            stats: Stats::default(),
            recovery: RecoveryReport::default(),
            closed: std::cell::Cell::new(false),
            checkpointing: std::cell::Cell::new(false),
            checkpoint_generation: std::cell::Cell::new(
                checkpoint.map(|h| h.generation).unwrap_or(0),
            ),
        });
        let scan_started = std::time::Instant::now();
        let clean = checkpoint.is_some_and(|h| h.clean);
        let tail = if clean && store.nothing_written_since(&zones, covered_seq).await? {
            // A clean shutdown's checkpoint is the end of the log: no tail scan.
            Vec::new()
        } else {
            store.scan_tail(&mut zones, covered_seq, &mut report).await?
        };
        report.scan_ms = scan_started.elapsed().as_millis() as u64;
        let store = match Rc::try_unwrap(store) {
            Ok(store) => store,
            Err(_) => unreachable!("no task holds the store during recovery"),
        };
        if let Some(max_seq) = tail.iter().map(|r| r.seq).max() {
            next_seq = next_seq.max(max_seq + 1);
        }
        let apply_started = std::time::Instant::now();
        store.apply_tail(&tail).await?;
        report.apply_ms = apply_started.elapsed().as_millis() as u64;
        Ok(Recovered { store, zones, next_seq, report, checkpoint })
    }

    /// Applies tail records in sequence order, resolving which key owns a tag on disk when
    /// the tag was not set by the tail itself.
    async fn apply_tail(&self, tail: &[TailRecord]) -> StoreResult<()> {
        let tags: Vec<u64> = {
            let index = self.index.borrow();
            tail.iter().map(|r| index.tag(&r.key)).collect()
        };
        // Tags that more than one tail record has (a key stored, deleted and stored again, or
        // two keys sharing a tag): only for those must the loop remember which key the tail
        // gave the tag to. Finding them by sorting costs less than a map of every tag.
        let repeated: hashbrown::HashSet<u64, IdentityHash> = {
            let mut sorted = tags.clone();
            sorted.sort_unstable();
            sorted.windows(2).filter(|w| w[0] == w[1]).map(|w| w[0]).collect()
        };
        // Which key owns each repeated tag the tail itself set.
        let mut tail_owner: hashbrown::HashMap<u64, Key, IdentityHash> =
            hashbrown::HashMap::with_hasher(IdentityHash);
        // Blocks of keys new to the index whose tag no other tail record has: added all at once
        // at the end (one sort and merge), which leaves the rest nothing to find among them.
        let mut fresh: Vec<(u64, Location)> = Vec::with_capacity(tail.len());
        self.index.borrow_mut().defer_merges(true);
        for (record, &tag) in tail.iter().zip(&tags) {
            let candidates = self.index.borrow().candidates_tagged(&record.key, tag);
            let repeats = repeated.contains(&tag);
            if record.kind == RecordKind::Block
                && candidates.by_tag.is_none()
                && candidates.exact.is_none()
                && !repeats
            {
                fresh.push((tag, record.location));
                continue;
            }
            let exact = candidates.exact.is_some();
            let tag_is_key = match candidates.by_tag {
                None => false,
                Some(location) => match tail_owner.get(&tag) {
                    Some(owner) => *owner == record.key,
                    None => {
                        let (header, ..) = self.read_header_any(location).await?;
                        header == Some(record.key)
                    }
                },
            };
            let mut index = self.index.borrow_mut();
            match record.kind {
                RecordKind::Block => {
                    let free = candidates.by_tag.is_none();
                    index.insert_tagged(&record.key, tag, record.location, tag_is_key || free);
                    if (tag_is_key || free) && repeats {
                        tail_owner.insert(tag, record.key);
                    }
                }
                RecordKind::Tombstone => {
                    if exact {
                        index.remove_exact(&record.key);
                    } else if tag_is_key {
                        index.remove_by_tag(tag);
                        tail_owner.remove(&tag);
                    }
                }
                RecordKind::Padding | RecordKind::Batch => {}
            }
        }
        let mut index = self.index.borrow_mut();
        index.insert_new_tags(fresh);
        index.defer_merges(false);
        Ok(())
    }

    /// The key of the record at `location`, if its header is readable.
    async fn read_header_any(&self, location: Location) -> StoreResult<(Option<Key>, ())> {
        let head = format::value_offset(location.value_len);
        let (buf, at) = self.read_span(location.zone, u64::from(location.offset), head).await?;
        Ok((
            format::decode_header(&buf[at..], self.superblock.value_bytes_max).ok().map(|h| h.key),
            (),
        ))
    }

    /// After a clean checkpoint: whether the log is still exactly as the checkpoint describes
    /// it, so the tail scan can be skipped. Looks only where writing would have resumed: each
    /// partly written zone at its checkpointed end, and the first empty zone at its start. On
    /// a zoned device the write pointers say it exactly; elsewhere a batch of this disk at one
    /// of those places means a later session wrote (then the full scan runs). The limit, in
    /// docs/FORMAT.md: a later session whose very first batch record was damaged on the media
    /// and that wrote no checkpoint of its own would not be found.
    async fn nothing_written_since(
        &self,
        zones: &[ZoneLog],
        covered_seq: u64,
    ) -> StoreResult<bool> {
        let first = self.superblock.first_data_zone() as usize;
        let zoned = self.disk.geometry().kind == DeviceKind::Zoned;
        let resume_points = (first..zones.len())
            .filter(|&z| !zones[z].finished && zones[z].write_offset < zones[z].capacity_bytes)
            .filter(|&z| zones[z].write_offset > 0)
            .chain(
                (first..zones.len()).find(|&z| !zones[z].finished && zones[z].write_offset == 0),
            );
        let limit =
            batch_bytes_limit(self.superblock.value_bytes_max, self.block_bytes, u64::MAX) as u64;
        for z in resume_points {
            let zone = z as ZoneIndex;
            let offset = zones[z].write_offset;
            if zoned {
                let device = self.disk.refresh_zone(zone).await.map_err(|e| self.io(e))?;
                if device.write_pointer.saturating_sub(self.disk.geometry().zone_start(zone))
                    != offset
                {
                    return Ok(false);
                }
            } else {
                let mut window = ScanWindow::new(self, zone, zones[z].capacity_bytes);
                let block = self.block_bytes as u64;
                if offset + block <= zones[z].capacity_bytes
                    && window.batch_record_at(offset, covered_seq, limit).await?.is_some()
                {
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }

    #[expect(clippy::needless_range_loop, reason = "zone numbers are indexes and values here")]
    /// Scans the zones written since the checkpoint; returns their records in sequence order
    /// and sets each zone's write offset to the end of its valid log.
    async fn scan_tail(
        &self,
        zones: &mut [ZoneLog],
        covered_seq: u64,
        report: &mut RecoveryReport,
    ) -> StoreResult<Vec<TailRecord>> {
        let first = self.superblock.first_data_zone() as usize;
        let mut tail = Vec::new();
        // The zones that were active (partly written, not finished) at the checkpoint.
        let partial: Vec<usize> = (first..zones.len())
            .filter(|&z| {
                !zones[z].finished
                    && zones[z].write_offset > 0
                    && zones[z].write_offset < zones[z].capacity_bytes
            })
            .collect();
        for z in partial {
            let start = zones[z].write_offset;
            let (end, clean) =
                self.scan_zone(z as ZoneIndex, start, covered_seq, &mut tail, report).await?;
            zones[z].write_offset = end;
            zones[z].unclean = !clean;
        }
        // Then the empty zones, in the order the writer opens them.
        for z in first..zones.len() {
            if zones[z].finished || zones[z].write_offset != 0 {
                continue;
            }
            let (end, clean) =
                self.scan_zone(z as ZoneIndex, 0, covered_seq, &mut tail, report).await?;
            zones[z].write_offset = end;
            zones[z].unclean = !clean;
            if end == 0 {
                break;
            }
        }
        tail.sort_by_key(|r| r.seq);
        report.tail_records = tail.len() as u64;
        Ok(tail)
    }

    /// The largest batch the writer produces on this disk, and how far past a region that
    /// failed to verify the scanner looks for the next valid batch (everything that could have
    /// been in flight).
    pub(super) fn scan_limits(&self) -> (u64, u64) {
        // Never empty: the superblock keeps at least one data zone.
        let min_capacity = (self.superblock.first_data_zone()..self.superblock.zone_count)
            .map(|z| self.disk.zone(z).capacity_bytes)
            .min()
            .unwrap_or(u64::MAX);
        let limit =
            batch_bytes_limit(self.superblock.value_bytes_max, self.block_bytes, min_capacity)
                as u64;
        (limit, resync_window_bytes(limit))
    }

    /// Scans one zone from `start`; returns where its valid log ends.
    async fn scan_zone(
        &self,
        zone: ZoneIndex,
        start: u64,
        last_seq: u64,
        tail: &mut Vec<TailRecord>,
        report: &mut RecoveryReport,
    ) -> StoreResult<(u64, bool)> {
        let capacity = self.disk.zone(zone).capacity_bytes;
        let block = self.block_bytes as u64;
        let (limit, resync_window) = self.scan_limits();
        let mut window = ScanWindow::new(self, zone, capacity);
        let mut pos = start;
        let mut last_seq = last_seq;
        let mut max_acked = start;
        // Regions that failed to verify. Whether they held acknowledged data is known once a
        // later batch says how far acknowledgement had got when it was sealed.
        let mut gaps: Vec<Gap> = Vec::new();
        let mut clean = true;
        while pos + block <= capacity {
            let Some((batch_seq, info)) = window.batch_record_at(pos, last_seq, limit).await?
            else {
                // No batch here: the end of the log, or damage to a batch record. Look for a
                // later batch within what could have been in flight.
                let mut q = self.first_written_block(zone, pos + block, pos + resync_window)?;
                let mut found = None;
                while q + block <= capacity && q < pos + resync_window {
                    if window.batch_record_at(q, last_seq, limit).await?.is_some() {
                        found = Some(q);
                        break;
                    }
                    q += block;
                }
                match found {
                    Some(q) => {
                        gaps.push(Gap { from: pos, to: q, seq_before: last_seq });
                        pos = q;
                        continue;
                    }
                    None => {
                        // A torn tail: writing resumes here (emulated) or the zone is
                        // finished (zoned, whose write pointer moved past it).
                        if window.looks_written(pos).await? {
                            report.torn_regions += 1;
                        }
                        break;
                    }
                }
            };
            max_acked = max_acked.max(info.acked_end);
            match window.batch_contents(pos, batch_seq, &info).await? {
                Some((records, seq)) => {
                    tail.extend(records);
                    last_seq = seq;
                }
                None => {
                    gaps.push(Gap { from: pos, to: pos + info.batch_bytes, seq_before: batch_seq });
                    last_seq = batch_seq;
                }
            }
            pos += info.batch_bytes;
            let (damaged, pending): (Vec<Gap>, Vec<Gap>) =
                gaps.into_iter().partition(|gap| max_acked > gap.from);
            gaps = pending;
            for gap in damaged {
                // Acknowledged data failed to verify: report it and keep every record whose
                // header verifies (a read of a damaged one reports a checksum error).
                let kept = window.salvage(gap.from, gap.to, gap.seq_before, false, tail).await?;
                report.corrupt_regions += 1;
                report.lost_records_possible += 1;
                report.warnings.push(format!(
                    "zone {zone}: acknowledged log damaged at offsets {}..{}; {kept} records kept",
                    gap.from, gap.to
                ));
                clean = false;
            }
        }
        for gap in gaps {
            // Never acknowledged (torn by the crash): its whole records are kept, the rest is
            // dropped. The zone takes no more writes, so later batches cannot make this
            // region look acknowledged at the next recovery.
            window.salvage(gap.from, gap.to, gap.seq_before, true, tail).await?;
            report.torn_regions += 1;
            clean = false;
        }
        if max_acked > pos {
            report.corrupt_regions += 1;
            report.warnings.push(format!(
                "zone {zone}: log acknowledged up to offset {max_acked} ends at {pos}: data lost"
            ));
        }
        report.scanned_bytes += window.read_bytes;
        Ok((pos, clean))
    }

    /// The first block from `from` on, before `to` and the zone's capacity, that may hold
    /// written bytes: where a search for a batch starts. Past `to` when nothing was written
    /// there (a file's never-written or reset space reads as zeroes and needs no reading).
    pub(super) fn first_written_block(
        &self,
        zone: ZoneIndex,
        from: u64,
        to: u64,
    ) -> StoreResult<u64> {
        let block = self.block_bytes as u64;
        let to = to.min(self.disk.zone(zone).capacity_bytes);
        if from >= to {
            return Ok(from);
        }
        let zone_start = self.disk.geometry().zone_start(zone);
        let written = self
            .disk
            .written_from(zone_start + from, zone_start + to)
            .map_err(|e| io(&self.name, e))?;
        Ok(match written {
            Some(at) => ((at - zone_start) / block * block).max(from),
            None => to,
        })
    }

    /// Restores each zone's write pointer on emulated devices, and finishes partly written
    /// zones other than the one the writer continues (zoned devices limit active zones).
    #[expect(clippy::needless_range_loop, reason = "zone numbers are indexes and values here")]
    /// Returns whether a zone was abandoned (finished because of torn or damaged regions).
    async fn restore_zones(&self, zones: &mut [ZoneLog]) -> StoreResult<bool> {
        let mut abandoned_any = false;
        let first = self.superblock.first_data_zone() as usize;
        let active = choose_active(zones, first as u32);
        let zoned = self.disk.geometry().kind == DeviceKind::Zoned;
        for z in first..zones.len() {
            let zone = z as ZoneIndex;
            let start = self.disk.geometry().zone_start(zone);
            if zoned {
                let device = self.disk.refresh_zone(zone).await.map_err(|e| self.io(e))?;
                // Garbage past the log (a torn write that moved the pointer): the zone is not
                // written again, so no later batch can make the garbage look acknowledged.
                let device_offset = device.write_pointer - start;
                if device_offset > zones[z].write_offset {
                    zones[z].write_offset = device_offset;
                    zones[z].unclean = true;
                }
                if device.condition == ioengine::device::ZoneCondition::Full {
                    zones[z].finished = true;
                }
            } else {
                let write_pointer = start + zones[z].write_offset.min(zones[z].capacity_bytes);
                self.disk.restore_write_pointer(zone, write_pointer).map_err(|e| self.io(e))?;
            }
            zones[z].acked_end = zones[z].write_offset;
            if zones[z].unclean && zones[z].write_offset > 0 {
                zones[z].finished = true;
            }
            let partly = zones[z].write_offset > 0 && !zones[z].finished;
            let abandoned = zones[z].unclean && zones[z].write_offset > 0;
            abandoned_any |= abandoned;
            if (partly && Some(zone) != active) || abandoned {
                zones[z].finished = true;
                if let Err(err) = self.disk.zone_command(zone, ZoneCommand::Finish).await {
                    tracing::warn!(disk = %self.name, zone, error = %err, "finishing a partly written zone failed");
                }
            }
        }
        Ok(abandoned_any)
    }
}

/// The zone the writer continues: the partly written, unfinished zone with the highest index.
fn choose_active(zones: &[ZoneLog], first: u32) -> Option<ZoneIndex> {
    (first as usize..zones.len())
        .rev()
        .find(|&z| {
            zones[z].write_offset > 0
                && !zones[z].finished
                && !zones[z].unclean
                && zones[z].write_offset < zones[z].capacity_bytes
        })
        .map(|z| z as ZoneIndex)
}

fn recompute_live(index: &Index, zones: &mut [ZoneLog], stats: &Stats) {
    for z in zones.iter_mut() {
        z.live_bytes = 0;
    }
    let mut live_values = 0u64;
    for location in index.locations() {
        if let Some(z) = zones.get_mut(location.zone as usize) {
            z.live_bytes += format::record_bytes(location.value_len) as u64;
        }
        live_values += u64::from(location.value_len);
    }
    stats.live_value_bytes.set(live_values);
}

fn check_geometry<D: Device>(disk: &D, sb: &Superblock) -> StoreResult<()> {
    let g = disk.geometry();
    let mismatch =
        |detail: String| StoreError::GeometryMismatch { disk: disk.name().to_string(), detail };
    if g.logical_block_bytes != sb.block_bytes {
        return Err(mismatch(format!(
            "block size {} on the device, {} in the superblock",
            g.logical_block_bytes, sb.block_bytes
        )));
    }
    if g.zone_size_bytes != sb.zone_size_bytes {
        return Err(mismatch(format!(
            "zone size {} on the device, {} in the superblock",
            g.zone_size_bytes, sb.zone_size_bytes
        )));
    }
    if g.zone_count < sb.zone_count {
        return Err(mismatch(format!(
            "{} zones on the device, {} in the superblock",
            g.zone_count, sb.zone_count
        )));
    }
    Ok(())
}

/// Loads the newest checkpoint whose header and body verify. Returns its header.
async fn load_checkpoint<D: Device>(
    disk: &D,
    sb: &Superblock,
    index: &mut Index,
    zones: &mut [ZoneLog],
    report: &mut RecoveryReport,
) -> StoreResult<Option<CheckpointHeader>> {
    let name = disk.name().to_string();
    let block = sb.block_bytes as usize;
    let mut headers = Vec::new();
    for set in 0..2 {
        let zone = sb.checkpoint_set_start(set);
        let offset = disk.geometry().zone_start(zone);
        let (res, buf) = disk.read_at(offset, AlignedBuf::new(block, block.max(4096)), block).await;
        if res.is_err() {
            report.warnings.push(format!("checkpoint set {set}: header unreadable"));
            continue;
        }
        match CheckpointHeader::decode(&buf) {
            Ok(header) if header.disk_uuid == sb.disk_uuid => headers.push((header, set)),
            // A checkpoint of an earlier format of this device: not ours.
            Ok(_) | Err(_) => {}
        }
    }
    headers.sort_by_key(|(h, _)| std::cmp::Reverse(h.generation));
    for (header, set) in headers {
        match read_checkpoint_body(disk, sb, set, &header).await {
            Ok(body) => {
                apply_checkpoint(sb, &header, &body, index, zones);
                report.checkpoint_generation = Some(header.generation);
                report.checkpoint_clean = header.clean;
                report.checkpoint_entries = header.entry_count + u64::from(header.overflow_count);
                return Ok(Some(header));
            }
            Err(err) => report
                .warnings
                .push(format!("checkpoint {} in set {set} unusable: {err}", header.generation)),
        }
    }
    let _ = name;
    Ok(None)
}

async fn read_checkpoint_body<D: Device>(
    disk: &D,
    sb: &Superblock,
    set: u32,
    header: &CheckpointHeader,
) -> StoreResult<Vec<u8>> {
    let name = disk.name().to_string();
    let block = sb.block_bytes as usize;
    let total = block as u64 + header.body_bytes.next_multiple_of(block as u64);
    let first = sb.checkpoint_set_start(set);
    let capacity: u64 =
        (first..first + sb.checkpoint_zones_per_set).map(|z| disk.zone(z).capacity_bytes).sum();
    if total > capacity {
        return Err(StoreError::Corrupt {
            disk: name,
            zone: first,
            offset: 0,
            detail: format!("checkpoint of {total} bytes exceeds its set"),
        });
    }
    let mut body = Vec::with_capacity(header.body_bytes as usize);
    let mut remaining = total;
    let mut zone = first;
    let mut zone_offset = 0u64;
    let mut skip = block as u64;
    while remaining > 0 {
        let cap = disk.zone(zone).capacity_bytes;
        if zone_offset == cap {
            zone += 1;
            zone_offset = 0;
            continue;
        }
        let chunk = (SCAN_READ_BYTES as u64).min(remaining).min(cap - zone_offset) as usize;
        let offset = disk.geometry().zone_start(zone) + zone_offset;
        let (res, buf) = disk.read_at(offset, AlignedBuf::new(chunk, block.max(4096)), chunk).await;
        res.map_err(|e| io(&name, e))?;
        let from = skip.min(chunk as u64) as usize;
        skip -= from as u64;
        body.extend_from_slice(&buf[from..]);
        remaining -= chunk as u64;
        zone_offset += chunk as u64;
    }
    body.truncate(header.body_bytes as usize);
    let got = crc32c(&body);
    if got != header.body_crc {
        return Err(StoreError::Checksum {
            disk: name,
            zone: first,
            offset: block as u64,
            detail: FormatError::ChecksumMismatch {
                what: "checkpoint body",
                expected: header.body_crc,
                got,
            },
        });
    }
    Ok(body)
}

fn apply_checkpoint(
    sb: &Superblock,
    header: &CheckpointHeader,
    body: &[u8],
    index: &mut Index,
    zones: &mut [ZoneLog],
) {
    let mut at = 0;
    for _ in 0..header.zone_count {
        if let Ok(state) = ZoneState::decode(&body[at..]) {
            if let Some(z) = zones.get_mut(state.zone as usize) {
                if state.zone >= sb.first_data_zone() {
                    z.write_offset = state.write_offset.min(z.capacity_bytes);
                    z.acked_end = z.write_offset;
                    z.live_bytes = state.live_bytes;
                    z.finished = state.flags & ZONE_STATE_FINISHED != 0;
                }
            }
        }
        at += CHECKPOINT_ZONE_BYTES;
    }
    let version = header.format_version;
    // The count was checked against the body's length, which was read whole.
    index.reserve_base(usize::try_from(header.entry_count).unwrap_or(0));
    for _ in 0..header.entry_count {
        if let Ok(entry) = CheckpointEntry::decode(&body[at..], version) {
            index.push_sorted(entry.tag, entry.location);
        }
        at += format::checkpoint_entry_bytes(version);
    }
    for _ in 0..header.overflow_count {
        if let Ok(entry) = OverflowEntry::decode(&body[at..], version) {
            index.insert_overflow(entry.key, entry.location);
        }
        at += format::checkpoint_overflow_bytes(version);
    }
}

/// A region that failed to verify, followed by a valid batch.
#[derive(Debug, Clone, Copy)]
struct Gap {
    from: u64,
    to: u64,
    seq_before: u64,
}

/// Zone byte ranges of detached values found while salvaging, which are not searched for
/// records: a value's bytes are the client's, and could look like a record.
#[derive(Debug, Default)]
pub(super) struct ValueSpans(std::collections::BTreeMap<u64, u64>);

impl ValueSpans {
    /// Adds the value at `[from, to)`.
    pub(super) fn add(&mut self, from: u64, to: u64) {
        let end = self.0.entry(from).or_insert(to);
        *end = (*end).max(to);
    }

    /// The end of a value that covers `at`, if one does (values do not overlap in a batch this
    /// store wrote; if damaged ones do, the first that starts at or before `at` decides).
    pub(super) fn covering(&self, at: u64) -> Option<u64> {
        self.0.range(..=at).next_back().map(|(_, &end)| end).filter(|&end| at < end)
    }
}

/// A record the scanner decoded at some offset.
struct FoundRecord {
    /// The block or tombstone (None: padding).
    record: Option<TailRecord>,
    /// Bytes to the next record.
    len: u64,
    /// Zone offset where the record's bytes end (its value's end, for a detached value).
    end: u64,
    /// Zone offset of a detached value.
    value_from: Option<u64>,
}

/// A read of a scan window: its zone offset, its length and the read in flight.
type WindowRead<'a> =
    (u64, usize, Pin<Box<dyn Future<Output = StoreResult<(ReadBuf, usize)>> + 'a>>);

/// A sliding read window over one zone for the scanner (and the admin tools' walk). When it
/// reads a window it starts reading the next one, so the device works while the scanner
/// parses (the scan used to wait for every 4 MiB read in turn).
pub(super) struct ScanWindow<'a, D: Device + 'static> {
    store: &'a Store<D>,
    zone: ZoneIndex,
    capacity: u64,
    buf: Option<ReadBuf>,
    buf_start: u64,
    next: Option<WindowRead<'a>>,
    pub(super) read_bytes: u64,
}

impl<'a, D: Device + 'static> ScanWindow<'a, D> {
    pub(super) fn new(store: &'a Store<D>, zone: ZoneIndex, capacity: u64) -> Self {
        ScanWindow { store, zone, capacity, buf: None, buf_start: 0, next: None, read_bytes: 0 }
    }

    /// The zone it reads.
    pub(super) fn zone(&self) -> ZoneIndex {
        self.zone
    }

    /// A window that holds `[start, end)`: the one read ahead when it does (a failed
    /// read-ahead is read again, so only a window the scan needs can fail it), else a new read
    /// of `want` bytes from `start`. Returns the buffer and its zone offset.
    async fn read_window(
        &mut self,
        start: u64,
        end: u64,
        want: usize,
    ) -> StoreResult<(ReadBuf, u64)> {
        if let Some((at, len, read)) = self.next.take() {
            if at <= start && end <= at + len as u64 {
                if let Ok((buf, 0)) = read.await {
                    self.read_bytes += len as u64;
                    return Ok((buf, at));
                }
            }
        }
        let (buf, at) = self.store.read_span(self.zone, start, want).await?;
        debug_assert_eq!(at, 0);
        self.read_bytes += want as u64;
        Ok((buf, start))
    }

    /// Starts reading the window after one that ends at `end` (overlapping it by
    /// [`READ_AHEAD_OVERLAP_BYTES`], so a record that straddles the end is in the next window
    /// whole) and hands the read to the kernel now, so it proceeds while the caller parses.
    async fn read_ahead(&mut self, end: u64) {
        if end >= self.capacity {
            return;
        }
        let start = end.saturating_sub(READ_AHEAD_OVERLAP_BYTES);
        let want = SCAN_READ_BYTES.min((self.capacity - start) as usize);
        let mut read = Box::pin(self.store.read_span(self.zone, start, want));
        // One poll queues the read on the ring (a ready result is kept as it is).
        let polled = std::future::poll_fn(|cx| Poll::Ready(read.as_mut().poll(cx))).await;
        let read: Pin<Box<dyn Future<Output = _> + 'a>> = match polled {
            Poll::Ready(result) => Box::pin(std::future::ready(result)),
            Poll::Pending => read,
        };
        ioengine::submit_now();
        self.next = Some((start, want, read));
    }

    /// The bytes `[pos, pos + len)` of the zone (clipped to the capacity).
    pub(super) async fn bytes(&mut self, pos: u64, len: usize) -> StoreResult<&[u8]> {
        let end = (pos + len as u64).min(self.capacity);
        let have = self
            .buf
            .as_ref()
            .is_some_and(|b| pos >= self.buf_start && end <= self.buf_start + b.len() as u64);
        if !have {
            let block = self.store.block_bytes as u64;
            let start = pos / block * block;
            let want =
                ((end - start) as usize).max(SCAN_READ_BYTES).next_multiple_of(block as usize);
            let want = want.min((self.capacity - start) as usize);
            let (buf, buf_start) = self.read_window(start, end, want).await?;
            let buf_end = buf_start + buf.len() as u64;
            self.buf = Some(buf);
            self.buf_start = buf_start;
            self.read_ahead(buf_end).await;
        }
        let buf = self.buf.as_ref().expect("filled above");
        let from = (pos - self.buf_start) as usize;
        Ok(&buf[from..from + (end - pos) as usize])
    }

    /// The batch record at `pos`, if it verifies, has a sequence number above `last_seq` and
    /// describes a batch that fits: the batch's sequence number and description.
    pub(super) async fn batch_record_at(
        &mut self,
        pos: u64,
        last_seq: u64,
        limit: u64,
    ) -> StoreResult<Option<(u64, BatchInfo)>> {
        let vmax = self.store.superblock.value_bytes_max;
        let block = self.store.block_bytes as u64;
        let capacity = self.capacity;
        let batch_key = format::batch_key(&self.store.superblock.disk_uuid);
        let bytes = self.bytes(pos, batch_record_bytes()).await?;
        let Ok(header) = format::decode_header(bytes, vmax) else { return Ok(None) };
        if header.kind != RecordKind::Batch
            || header.key != batch_key
            || header.seq <= last_seq
            || !verify_value(bytes, format::value_offset(header.value_len), header.value_len)
        {
            return Ok(None);
        }
        let Ok(info) = BatchInfo::decode(&bytes[format::value_offset(header.value_len)..]) else {
            return Ok(None);
        };
        let fits = info.batch_bytes > 0
            && info.batch_bytes % block == 0
            && info.batch_bytes <= limit
            && pos + info.batch_bytes <= capacity;
        Ok(fits.then_some((header.seq, info)))
    }

    /// The records of the batch at `pos` (whose batch record verified), if every one of them
    /// verifies, with the batch's last sequence number.
    async fn batch_contents(
        &mut self,
        pos: u64,
        batch_seq: u64,
        info: &BatchInfo,
    ) -> StoreResult<Option<(Vec<TailRecord>, u64)>> {
        let batch_end = pos + info.batch_bytes;
        let mut at = pos + batch_record_bytes() as u64;
        let mut seq = batch_seq;
        let mut records = Vec::new();
        // Detached values follow every header of the batch: the headers end where they start.
        let mut values_from = batch_end;
        while at + RECORD_HEADER_BYTES as u64 <= values_from {
            let Some(found) = self.record_at(at, seq, true, batch_end).await? else {
                return Ok(None);
            };
            if let Some(record) = found.record {
                if let Some(value) = found.value_from {
                    values_from = values_from.min(value);
                }
                seq = record.seq;
                records.push(record);
            }
            at += found.len;
        }
        if records.len() != info.record_count as usize || at > batch_end {
            return Ok(None);
        }
        Ok(Some((records, seq)))
    }

    /// The record at `at` (None inside: padding), with its length; None if invalid or if its
    /// bytes (a detached value's included) would run past `end`. With `value_must_verify`
    /// false, a record whose header verifies is returned even if its value does not (salvage:
    /// a read of that key then reports a checksum error, not "not found").
    async fn record_at(
        &mut self,
        at: u64,
        last_seq: u64,
        value_must_verify: bool,
        end: u64,
    ) -> StoreResult<Option<FoundRecord>> {
        let vmax = self.store.superblock.value_bytes_max;
        let head = self.bytes(at, RECORD_HEADER_BYTES).await?;
        let Ok(span) = format::header_span(head, vmax) else { return Ok(None) };
        let head = self.bytes(at, span).await?;
        let Ok(header) = format::decode_header(head, vmax) else { return Ok(None) };
        if header.kind == RecordKind::Padding {
            let len = header.span_bytes() as u64;
            return Ok(Some(FoundRecord { record: None, len, end: at + len, value_from: None }));
        }
        if header.seq <= last_seq
            || !matches!(header.kind, RecordKind::Block | RecordKind::Tombstone)
        {
            return Ok(None);
        }
        let len = header.span_bytes();
        // A detached value is read with its header: one window holds both.
        let (value_start, extent) = (header.value_start(), header.extent_bytes());
        // Checked before reading: `value_at` comes from the disk, and a read is a buffer.
        if at + extent as u64 > end {
            return Ok(None);
        }
        let whole = self.bytes(at, extent).await?;
        if whole.len() < extent
            || (value_must_verify && !verify_value(whole, value_start, header.value_len))
        {
            return Ok(None);
        }
        let block = self.store.block_bytes as u64;
        let Some(location) = Location::of_record(self.zone, at, &header, block) else {
            return Ok(None);
        };
        Ok(Some(FoundRecord {
            record: Some(TailRecord {
                seq: header.seq,
                kind: header.kind,
                key: header.key,
                location,
            }),
            len: len as u64,
            end: at + extent as u64,
            value_from: header.is_detached().then(|| at + u64::from(header.value_at)),
        }))
    }

    /// Keeps the records of a region that failed as a whole: any record at 8-byte alignment
    /// whose header verifies and whose sequence number is above `last_seq` (and, with
    /// `value_must_verify`, whose value verifies too). Returns how many were kept.
    async fn salvage(
        &mut self,
        from: u64,
        to: u64,
        last_seq: u64,
        value_must_verify: bool,
        tail: &mut Vec<TailRecord>,
    ) -> StoreResult<usize> {
        let mut kept = 0;
        let mut at = from;
        // Detached values of the records kept: their bytes are not searched for records.
        let mut values = ValueSpans::default();
        while at + RECORD_HEADER_BYTES as u64 <= to {
            if let Some(end) = values.covering(at) {
                at = end;
                continue;
            }
            match self.record_at(at, last_seq, value_must_verify, to).await? {
                Some(FoundRecord { record: Some(record), len, end, value_from }) => {
                    tail.push(record);
                    kept += 1;
                    if let Some(value) = value_from {
                        values.add(value, end);
                    }
                    at += len;
                }
                _ => at += format::RECORD_ALIGN_BYTES as u64,
            }
        }
        Ok(kept)
    }

    /// Whether the block at `pos` holds anything but zeroes (a torn write, not a clean end).
    pub(super) async fn looks_written(&mut self, pos: u64) -> StoreResult<bool> {
        let block = self.store.block_bytes;
        if pos + block as u64 > self.capacity {
            return Ok(false);
        }
        Ok(self.bytes(pos, block).await?.iter().any(|&b| b != 0 && b != 0xFF))
    }
}

/// Whether every chunk of the record's value (at `start` in `record`, which begins with the
/// header) matches its stored checksum.
fn verify_value(record: &[u8], start: usize, value_len: u32) -> bool {
    let Some(value) = record.get(start..start + value_len as usize) else { return false };
    value
        .chunks(CHUNK_BYTES)
        .enumerate()
        .all(|(i, chunk)| format::verify_chunk(record, i, chunk).is_ok())
}

/// A hasher for keys that are already uniform 64-bit hashes (index tags).
#[derive(Debug, Default, Clone, Copy)]
struct IdentityHash;

impl std::hash::BuildHasher for IdentityHash {
    type Hasher = IdentityHasher;
    fn build_hasher(&self) -> IdentityHasher {
        IdentityHasher(0)
    }
}

/// See [`IdentityHash`].
#[derive(Debug, Default)]
struct IdentityHasher(u64);

impl std::hash::Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }
}

#[cfg(test)]
mod tests {
    use super::ValueSpans;

    #[test]
    fn value_spans_say_which_value_covers_an_offset() {
        let mut spans = ValueSpans::default();
        assert_eq!(spans.covering(100), None);
        spans.add(8192, 12_288);
        spans.add(4096, 8192);
        spans.add(16_384, 32_768);
        assert_eq!(spans.covering(4095), None);
        assert_eq!(spans.covering(4096), Some(8192));
        assert_eq!(spans.covering(8191), Some(8192));
        assert_eq!(spans.covering(8192), Some(12_288));
        assert_eq!(spans.covering(12_288), None);
        assert_eq!(spans.covering(20_000), Some(32_768));
        assert_eq!(spans.covering(40_000), None);
    }
}
