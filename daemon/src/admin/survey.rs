//! The survey behind `inspect` and `check`: the device and superblock, both checkpoint sets,
//! what recovery would load, and a walk over every written zone that verifies every record,
//! counts records and bytes (live or garbage), lists torn and damaged regions, and checks that
//! every index entry points at a record of its key and length. Read-only; generic over the
//! device so tests run it on the simulated disk too.
//!
//! Memory is bounded by the disk's index (held as the daemon holds it, about 26 bytes per key),
//! a sorted copy of its locations (20 bytes per key), one read window, and the lists below
//! (problems and regions capped at `listed_max`, zones listed only on request).

use std::collections::BTreeMap;

use ioengine::buf::AlignedBuf;
use ioengine::device::{Device, DeviceKind, Zone, ZoneCondition, ZoneIndex, ZoneType};
use serde::Serialize;

use crate::store::format::{self, Location, RecordKind, SUPERBLOCK_COPIES, Superblock};
use crate::store::scan::{
    CheckpointSlot, DiskView, Region, WalkEvent, ZoneLogState, key_hex, kind_name,
};
use crate::store::uuid_hex;

/// What to collect beyond the totals.
#[derive(Debug, Clone, Default)]
pub struct SurveyOptions {
    /// One entry per zone in [`Survey::zones`].
    pub zone_list: bool,
    /// Problems and regions listed at most (the rest are counted).
    pub listed_max: usize,
}

/// Everything `inspect` prints (and `check`, in part).
#[derive(Debug, Clone, Serialize)]
pub struct Survey {
    /// The path given.
    pub path: String,
    /// The device as opened.
    pub device: DeviceInfo,
    /// The superblock.
    pub superblock: SuperblockInfo,
    /// Both checkpoint sets' headers.
    pub checkpoint_sets: Vec<CheckpointSetInfo>,
    /// The checkpoint recovery loaded, if any.
    pub checkpoint: Option<LoadedCheckpoint>,
    /// What recovery (as the daemon would run it) found.
    pub recovery: RecoveryInfo,
    /// Zones by condition and state.
    pub zones: ZonesInfo,
    /// The log walk.
    pub log: LogInfo,
    /// The index check.
    pub index: IndexInfo,
    /// Torn and damaged regions, up to `listed_max`.
    pub regions: Vec<RegionInfo>,
    /// Torn regions (never acknowledged: harmless).
    pub torn_regions: u64,
    /// Damaged regions (acknowledged data that failed to verify).
    pub damaged_regions: u64,
    /// Problems, up to `listed_max`, in the order found.
    pub problems: Vec<Problem>,
    /// All problems, listed or not.
    pub problems_total: u64,
}

/// The device.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceInfo {
    /// `file`, `block` (conventional, zones emulated) or `zoned`.
    pub kind: &'static str,
    /// Logical block size.
    pub block_bytes: u32,
    /// Physical block size.
    pub physical_block_bytes: u32,
    /// Zone size.
    pub zone_size_bytes: u64,
    /// Smallest zone capacity.
    pub zone_capacity_bytes_min: u64,
    /// Largest zone capacity.
    pub zone_capacity_bytes_max: u64,
    /// Zones.
    pub zone_count: u32,
    /// Conventional zones (zoned devices).
    pub conventional_zones: u32,
    /// Bytes addressed by the zones.
    pub size_bytes: u64,
    /// Open-zone limit, 0 for none.
    pub max_open_zones: u32,
    /// Active-zone limit, 0 for none.
    pub max_active_zones: u32,
}

impl DeviceInfo {
    /// Describes `disk` as opened.
    pub fn of<D: Device>(disk: &D) -> DeviceInfo {
        let g = disk.geometry();
        let zones = disk.zones();
        let capacities = zones.iter().map(|z| z.capacity_bytes);
        DeviceInfo {
            kind: kind_label(g.kind),
            block_bytes: g.logical_block_bytes,
            physical_block_bytes: g.physical_block_bytes,
            zone_size_bytes: g.zone_size_bytes,
            zone_capacity_bytes_min: capacities.clone().min().unwrap_or(0),
            zone_capacity_bytes_max: capacities.max().unwrap_or(0),
            zone_count: g.zone_count,
            conventional_zones: zones
                .iter()
                .filter(|z| z.zone_type == ZoneType::Conventional)
                .count() as u32,
            size_bytes: g.capacity_bytes(),
            max_open_zones: g.max_open_zones,
            max_active_zones: g.max_active_zones,
        }
    }
}

/// The superblock.
#[derive(Debug, Clone, Serialize)]
pub struct SuperblockInfo {
    /// Disk uuid (hex).
    pub uuid: String,
    /// Format version.
    pub format_version: u32,
    /// Format time, Unix milliseconds.
    pub created_unix_ms: u64,
    /// Format time, RFC 3339 UTC.
    pub created: String,
    /// Largest value accepted.
    pub value_bytes_max: u32,
    /// Zones in use.
    pub zone_count: u32,
    /// Zones per checkpoint set.
    pub checkpoint_zones_per_set: u32,
    /// First log zone.
    pub first_log_zone: u32,
    /// Log zones.
    pub log_zones: u32,
    /// Bytes the log zones can hold.
    pub log_capacity_bytes: u64,
}

/// One checkpoint set's header.
#[derive(Debug, Clone, Serialize)]
pub struct CheckpointSetInfo {
    /// `A` or `B`.
    pub set: &'static str,
    /// First zone of the set.
    pub first_zone: u32,
    /// `valid`, `empty`, `other-disk` (an earlier format's), `invalid` or `unreadable`.
    pub state: &'static str,
    /// The header (valid or other-disk).
    pub header: Option<CheckpointHeaderInfo>,
    /// Why it is invalid or unreadable.
    pub detail: Option<String>,
    /// Recovery loaded this one.
    pub loaded: bool,
}

/// A checkpoint header's fields.
#[derive(Debug, Clone, Serialize)]
pub struct CheckpointHeaderInfo {
    /// Generation (the newest valid one wins).
    pub generation: u64,
    /// Written at a clean shutdown.
    pub clean: bool,
    /// Index entries by tag.
    pub entries: u64,
    /// Index entries by key (tag collisions).
    pub overflow_entries: u32,
    /// Every record up to this sequence number is reflected.
    pub covered_seq: u64,
    /// Written, Unix milliseconds.
    pub written_unix_ms: u64,
    /// Written, RFC 3339 UTC.
    pub written: String,
}

/// The checkpoint recovery loaded.
#[derive(Debug, Clone, Serialize)]
pub struct LoadedCheckpoint {
    /// `A` or `B`.
    pub set: Option<&'static str>,
    /// Its header.
    pub header: CheckpointHeaderInfo,
}

/// What recovery found, as the daemon would run it.
#[derive(Debug, Clone, Serialize)]
pub struct RecoveryInfo {
    /// Keys in the index it builds.
    pub keys: u64,
    /// Records found in the tail after the checkpoint.
    pub tail_records: u64,
    /// Bytes the tail scan read.
    pub tail_scanned_bytes: u64,
    /// Torn regions the tail scan met.
    pub torn_regions: u64,
    /// Damaged regions the tail scan met.
    pub corrupt_regions: u64,
    /// Its warnings (unusable checkpoints, damage).
    pub warnings: Vec<String>,
    /// The next sequence number.
    pub next_seq: u64,
}

/// Zones by condition and by log state.
#[derive(Debug, Clone, Serialize)]
pub struct ZonesInfo {
    /// Zones per device condition (zoned devices; emulated zones have none of their own).
    pub by_condition: BTreeMap<&'static str, u64>,
    /// Log zones that hold nothing.
    pub log_empty: u64,
    /// Log zones partly written and still taking writes.
    pub log_partly_written: u64,
    /// Log zones full or finished.
    pub log_full: u64,
    /// Log zones where recovery found torn or damaged regions (no more writes).
    pub log_unclean: u64,
    /// Every zone, with `--zones`.
    pub list: Option<Vec<ZoneInfo>>,
}

/// One zone.
#[derive(Debug, Clone, Serialize)]
pub struct ZoneInfo {
    /// Index.
    pub zone: u32,
    /// `superblock`, `checkpoint A`, `checkpoint B` or `log`.
    pub role: &'static str,
    /// `conventional`, `sequential` or `sequential-preferred`.
    pub zone_type: &'static str,
    /// Device condition (`emulated` for emulated zones).
    pub condition: &'static str,
    /// Write pointer, bytes from the zone start (emulated: where the daemon would resume).
    pub write_pointer_bytes: Option<u64>,
    /// Writable bytes.
    pub capacity_bytes: u64,
    /// Where recovery says the log ends.
    pub log_end_bytes: u64,
    /// Where the walk found the valid log to end (None: not walked).
    pub verified_end_bytes: Option<u64>,
    /// Block and tombstone records found.
    pub records: u64,
    /// Bytes of live blocks.
    pub live_bytes: u64,
    /// Bytes of the log that are not live blocks.
    pub garbage_bytes: u64,
    /// `empty`, `partly written`, `full`, `finished`, plus `, unclean`.
    pub state: String,
}

/// The log walk's totals.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LogInfo {
    /// Zones walked (every log zone with something written).
    pub zones_walked: u64,
    /// Bytes read.
    pub read_bytes: u64,
    /// Block records.
    pub blocks: u64,
    /// Of which live (the index points at them).
    pub live_blocks: u64,
    /// Tombstones.
    pub tombstones: u64,
    /// Batch records.
    pub batches: u64,
    /// Padding records.
    pub padding: u64,
    /// Bytes of valid log (sum of the zones' verified ends).
    pub log_bytes: u64,
    /// Bytes of live blocks (whole records).
    pub live_bytes: u64,
    /// Log bytes that are not live: superseded or deleted blocks, tombstones, batch records,
    /// padding, regions that failed to verify.
    pub garbage_bytes: u64,
    /// Of which blocks no longer in the index.
    pub dead_block_bytes: u64,
    /// Of which tombstones.
    pub tombstone_bytes: u64,
}

/// The index check.
#[derive(Debug, Clone, Default, Serialize)]
pub struct IndexInfo {
    /// Entries (what the store would load: checkpoint plus tail).
    pub entries: u64,
    /// Entries whose record was found, of their key and length.
    pub verified: u64,
}

/// A torn or damaged region.
#[derive(Debug, Clone, Serialize)]
pub struct RegionInfo {
    /// Zone.
    pub zone: u32,
    /// First byte, zone offset.
    pub from: u64,
    /// End, zone offset.
    pub to: u64,
    /// `torn` (never acknowledged) or `damaged` (acknowledged data).
    pub kind: &'static str,
    /// The first finding in it.
    pub detail: String,
}

/// Something wrong, where.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    /// Zone.
    pub zone: u32,
    /// Byte offset in the zone.
    pub offset: u64,
    /// Byte offset on the device.
    pub device_offset: u64,
    /// What.
    pub what: String,
    /// An index entry whose target is described after the walk.
    #[serde(skip)]
    pub entry: Option<Location>,
}

/// Surveys a disk opened as a [`DiskView`]. Never writes; read errors become problems.
pub async fn survey<D: Device + 'static>(
    view: &DiskView<D>,
    path: &str,
    options: &SurveyOptions,
) -> Survey {
    let sb = view.superblock().clone();
    let device = DeviceInfo::of(view.device());
    let slots = view.checkpoint_slots().await;
    let loaded_generation = view.checkpoint().map(|h| h.generation);
    let checkpoint_sets = checkpoint_sets(&sb, &slots, loaded_generation);
    let checkpoint = view.checkpoint().map(|h| LoadedCheckpoint {
        set: checkpoint_sets.iter().find(|s| s.loaded).map(|s| s.set),
        header: header_info(h),
    });
    let report = view.recovery_report();
    let recovery = RecoveryInfo {
        keys: view.index_len() as u64,
        tail_records: report.tail_records,
        tail_scanned_bytes: report.scanned_bytes,
        torn_regions: report.torn_regions,
        corrupt_regions: report.corrupt_regions,
        warnings: report.warnings.clone(),
        next_seq: view.next_seq(),
    };
    let mut walk = Walk::new(view, options);
    walk.superblock_copies().await;
    for zone in 0..sb.zone_count {
        walk.zone(zone).await;
    }
    walk.flush_entries_before(u64::MAX, 0);
    walk.describe_entries().await;
    walk.log.finish();
    // Found in walk order (a region's findings come when it is classified): list by place.
    walk.problems.sort_by_key(|p| (p.zone, p.offset));
    let Walk { log, index, zones, regions, torn, damaged, problems, problems_total, .. } = walk;
    Survey {
        path: path.to_string(),
        device,
        superblock: superblock_info(&sb, view.device()),
        checkpoint_sets,
        checkpoint,
        recovery,
        zones,
        log,
        index,
        regions,
        torn_regions: torn,
        damaged_regions: damaged,
        problems,
        problems_total,
    }
}

/// The walk over every zone, with the index merge and the counters.
struct Walk<'a, D: Device> {
    view: &'a DiskView<D>,
    options: &'a SurveyOptions,
    zone_bytes: u64,
    /// Index locations sorted by zone and offset, and the next one not yet passed.
    entries: Vec<Location>,
    next_entry: usize,
    log: LogInfo,
    index: IndexInfo,
    zones: ZonesInfo,
    regions: Vec<RegionInfo>,
    torn: u64,
    damaged: u64,
    problems: Vec<Problem>,
    problems_total: u64,
}

/// Per-zone counters while a zone is walked.
#[derive(Debug, Default)]
struct ZoneTally {
    records: u64,
    live_bytes: u64,
    verified_end: Option<u64>,
}

impl<'a, D: Device + 'static> Walk<'a, D> {
    fn new(view: &'a DiskView<D>, options: &'a SurveyOptions) -> Self {
        let entries = view.index_locations_sorted();
        let index = IndexInfo { entries: entries.len() as u64, verified: 0 };
        Walk {
            view,
            options,
            zone_bytes: view.device().geometry().zone_size_bytes,
            entries,
            next_entry: 0,
            log: LogInfo::default(),
            index,
            zones: ZonesInfo {
                by_condition: conditions(view.device()),
                log_empty: 0,
                log_partly_written: 0,
                log_full: 0,
                log_unclean: 0,
                list: options.zone_list.then(Vec::new),
            },
            regions: Vec::new(),
            torn: 0,
            damaged: 0,
            problems: Vec::new(),
            problems_total: 0,
        }
    }

    /// Both superblock copies should verify and agree: one that does not is a problem (the
    /// disk still opens from the other, but has lost its spare).
    async fn superblock_copies(&mut self) {
        let in_use = self.view.superblock().clone();
        let block = self.view.device().geometry().logical_block_bytes as usize;
        let len = block * SUPERBLOCK_COPIES;
        let buf = AlignedBuf::new(len, block.max(4096));
        let (res, buf) = self.view.device().read_at(0, buf, len).await;
        if let Err(err) = res {
            self.problem(0, 0, format!("the superblock copies could not be read: {err}"));
            return;
        }
        for copy in 0..SUPERBLOCK_COPIES {
            let offset = (copy * block) as u64;
            match Superblock::decode(&buf[copy * block..]) {
                Ok(sb) if sb == in_use => {}
                Ok(_) => self.problem(
                    0,
                    offset,
                    format!("superblock copy {copy} verifies but differs from the one in use"),
                ),
                Err(err) => {
                    self.problem(0, offset, format!("superblock copy {copy} is damaged: {err}"))
                }
            }
        }
    }

    /// Surveys one zone: its role, and for a log zone with anything written, the walk.
    async fn zone(&mut self, zone: ZoneIndex) {
        let sb = self.view.superblock();
        let device_zone = self.view.device().zone(zone);
        let state = self.view.zone_log(zone);
        let log_zone = zone >= sb.first_data_zone();
        let mut tally = ZoneTally::default();
        if log_zone {
            self.count_state(&state);
            if needs_walk(self.view.device().geometry().kind, &device_zone, &state) {
                self.walk_zone(zone, &device_zone, &state, &mut tally).await;
            }
        }
        self.flush_entries_before(u64::from(zone) + 1, 0);
        if self.zones.list.is_some() {
            let info = self.zone_info(zone, &device_zone, &state, &tally);
            if let Some(list) = self.zones.list.as_mut() {
                list.push(info);
            }
        }
    }

    fn count_state(&mut self, state: &ZoneLogState) {
        if state.unclean {
            self.zones.log_unclean += 1;
        }
        if state.log_end_bytes == 0 && !state.finished {
            self.zones.log_empty += 1;
        } else if state.finished || state.log_end_bytes >= state.capacity_bytes {
            self.zones.log_full += 1;
        } else {
            self.zones.log_partly_written += 1;
        }
    }

    async fn walk_zone(
        &mut self,
        zone: ZoneIndex,
        device_zone: &Zone,
        state: &ZoneLogState,
        tally: &mut ZoneTally,
    ) {
        self.log.zones_walked += 1;
        self.flush_entries_before(u64::from(zone), 0);
        let view = self.view;
        let regions_before = self.regions.len();
        let result = {
            let mut sink = |event: WalkEvent<'_>| self.on_event(zone, event, tally);
            view.walk_zone(zone, state.checkpointed_end_bytes, &mut sink).await
        };
        let end = match result {
            Ok(end) => end,
            Err(err) => {
                self.problem(zone, 0, format!("the zone could not be read to its end: {err}"));
                return;
            }
        };
        self.log.read_bytes += end.read_bytes;
        self.log.log_bytes += end.log_end_bytes;
        tally.verified_end = Some(end.log_end_bytes);
        let acked_loss = state.checkpointed_end_bytes > end.log_end_bytes;
        if end.log_end_bytes > state.log_end_bytes {
            self.problem(
                zone,
                state.log_end_bytes,
                format!(
                    "the log verifies up to offset {} but the store would load it only up to \
                     {}: records past it are not in the index",
                    end.log_end_bytes, state.log_end_bytes
                ),
            );
        } else if end.log_end_bytes < state.log_end_bytes && !acked_loss {
            self.problem(
                zone,
                end.log_end_bytes,
                format!(
                    "the log verifies only up to offset {} but the store would load it up to {}",
                    end.log_end_bytes, state.log_end_bytes
                ),
            );
        }
        self.device_tail(zone, device_zone, end.log_end_bytes, regions_before);
    }

    /// On a zoned device, bytes the device holds past the log's end in a zone still open or
    /// closed are a torn write: widen the walk's torn region to the write pointer, or add one.
    /// (A full zone's write pointer is its capacity, whatever was written.)
    fn device_tail(&mut self, zone: ZoneIndex, device_zone: &Zone, log_end: u64, first: usize) {
        if self.view.device().geometry().kind != DeviceKind::Zoned
            || device_zone.zone_type == ZoneType::Conventional
            || !device_zone.condition.is_active()
        {
            return;
        }
        let written = device_zone.written_bytes();
        if written <= log_end {
            return;
        }
        let existing = self.regions[first..]
            .iter_mut()
            .find(|r| r.zone == zone && r.from == log_end && r.kind == "torn");
        match existing {
            Some(region) => region.to = region.to.max(written),
            None => self.region(
                zone,
                &Region {
                    from: log_end,
                    to: written,
                    acknowledged: false,
                    findings: Vec::new(),
                    findings_total: 0,
                },
                "written on the device past the end of the log (a torn write)",
            ),
        }
    }

    fn on_event(&mut self, zone: ZoneIndex, event: WalkEvent<'_>, tally: &mut ZoneTally) {
        match event {
            WalkEvent::Batch { .. } => self.log.batches += 1,
            WalkEvent::Padding { .. } => self.log.padding += 1,
            WalkEvent::Record { offset, header, bytes, .. } => {
                tally.records += 1;
                self.flush_entries_before(u64::from(zone), offset);
                let entry = match header.kind {
                    RecordKind::Block => self.view.entry_at(&header.key, zone, offset),
                    _ => None,
                };
                match header.kind {
                    RecordKind::Tombstone => {
                        self.log.tombstones += 1;
                        self.log.tombstone_bytes += bytes;
                    }
                    _ if entry.is_some() => {
                        self.log.blocks += 1;
                        self.log.live_blocks += 1;
                        self.log.live_bytes += bytes;
                        tally.live_bytes += bytes;
                    }
                    _ => {
                        self.log.blocks += 1;
                        self.log.dead_block_bytes += bytes;
                    }
                }
                self.match_entries_at(zone, offset, &header, entry);
            }
            WalkEvent::Region(region) => self.region(zone, region, "failed to verify"),
        }
    }

    /// Index entries at the record at `zone`/`offset`: one entry of the record's key and length
    /// is verified; any other is a problem.
    fn match_entries_at(
        &mut self,
        zone: ZoneIndex,
        offset: u64,
        header: &format::RecordHeader,
        entry: Option<Location>,
    ) {
        let mut matched = false;
        let block = u64::from(self.view.device().geometry().logical_block_bytes);
        while let Some(&location) = self.entries.get(self.next_entry) {
            if (location.zone, u64::from(location.offset)) != (zone, offset) {
                break;
            }
            self.next_entry += 1;
            let what = match entry {
                _ if header.kind != RecordKind::Block => format!(
                    "an index entry points at a {} of key {}",
                    kind_name(header.kind),
                    key_hex(&header.key)
                ),
                Some(_) if matched => "a second index entry points at the same record".into(),
                Some(own) if own.value_len != header.value_len => format!(
                    "the index entry of key {} records {} bytes, the record holds {}",
                    key_hex(&header.key),
                    own.value_len,
                    header.value_len
                ),
                Some(own) if Some(own) != Location::of_record(zone, offset, header, block) => {
                    format!(
                        "the index entry of key {} locates or checks its value otherwise than \
                         the record does ({} blocks from the record, check {:#010x})",
                        key_hex(&header.key),
                        own.value_blocks,
                        own.check
                    )
                }
                Some(_) => {
                    matched = true;
                    self.index.verified += 1;
                    continue;
                }
                None => format!(
                    "an index entry points at a record of another key ({}): its own key's \
                     block is lost",
                    key_hex(&header.key)
                ),
            };
            self.problem(zone, offset, what);
        }
    }

    /// Index entries located before `zone`/`offset` that no record matched.
    fn flush_entries_before(&mut self, zone: u64, offset: u64) {
        while let Some(&location) = self.entries.get(self.next_entry) {
            if (u64::from(location.zone), u64::from(location.offset)) >= (zone, offset) {
                break;
            }
            self.next_entry += 1;
            let what = format!(
                "the index entry of a block of {} bytes points here, where no valid record \
                 starts",
                location.value_len
            );
            self.problem_at_entry(location, what);
        }
    }

    /// Adds what is at each listed unmatched entry's location (one small read each).
    async fn describe_entries(&mut self) {
        for problem in self.problems.iter_mut() {
            let Some(location) = problem.entry else { continue };
            let detail = match self.view.header_at(location).await {
                Ok(Ok(header)) => format!(
                    "a {} of key {} and {} bytes starts there, outside the verified log",
                    kind_name(header.kind),
                    key_hex(&header.key),
                    header.value_len
                ),
                Ok(Err(why)) => why,
                Err(err) => format!("reading it failed: {err}"),
            };
            problem.what = format!("{} ({detail})", problem.what);
        }
    }

    /// Counts and lists a region; the findings of a damaged one are problems.
    fn region(&mut self, zone: ZoneIndex, region: &Region, detail_default: &str) {
        let acknowledged = region.acknowledged;
        if acknowledged {
            self.damaged += 1;
            for finding in &region.findings {
                self.problem(zone, finding.offset, finding.what.clone());
            }
            let unlisted = region.findings_total - region.findings.len() as u64;
            if unlisted > 0 {
                self.problem(
                    zone,
                    region.from,
                    format!("{unlisted} more findings in offsets {}..{}", region.from, region.to),
                );
            }
        } else {
            self.torn += 1;
        }
        if self.regions.len() < self.options.listed_max {
            let detail = region
                .findings
                .first()
                .map(|f| f.what.clone())
                .unwrap_or_else(|| detail_default.to_string());
            let kind = if acknowledged { "damaged" } else { "torn" };
            self.regions.push(RegionInfo { zone, from: region.from, to: region.to, kind, detail });
        }
    }

    fn problem(&mut self, zone: ZoneIndex, offset: u64, what: String) {
        self.push_problem(zone, offset, what, None);
    }

    fn problem_at_entry(&mut self, location: Location, what: String) {
        self.push_problem(location.zone, u64::from(location.offset), what, Some(location));
    }

    fn push_problem(
        &mut self,
        zone: ZoneIndex,
        offset: u64,
        what: String,
        entry: Option<Location>,
    ) {
        self.problems_total += 1;
        if self.problems.len() < self.options.listed_max {
            let device_offset =
                u64::from(zone).saturating_mul(self.zone_bytes).saturating_add(offset);
            self.problems.push(Problem { zone, offset, device_offset, what, entry });
        }
    }

    fn zone_info(
        &self,
        zone: ZoneIndex,
        device_zone: &Zone,
        state: &ZoneLogState,
        tally: &ZoneTally,
    ) -> ZoneInfo {
        let sb = self.view.superblock();
        let emulated = self.view.device().geometry().kind != DeviceKind::Zoned;
        let role = if zone == 0 {
            "superblock"
        } else if zone < sb.checkpoint_set_start(1) {
            "checkpoint A"
        } else if zone < sb.first_data_zone() {
            "checkpoint B"
        } else {
            "log"
        };
        let write_pointer_bytes = match (emulated, device_zone.zone_type) {
            (false, ZoneType::Conventional) => None,
            (false, _) => Some(device_zone.written_bytes()),
            (true, _) if role == "log" => Some(state.log_end_bytes),
            (true, _) => None,
        };
        let log_state = if role != "log" {
            String::new()
        } else {
            let mut s = String::from(if state.log_end_bytes == 0 && !state.finished {
                "empty"
            } else if state.finished {
                "finished"
            } else if state.log_end_bytes >= state.capacity_bytes {
                "full"
            } else {
                "partly written"
            });
            if state.unclean {
                s.push_str(", unclean");
            }
            s
        };
        let verified = tally.verified_end.unwrap_or(0);
        ZoneInfo {
            zone,
            role,
            zone_type: type_label(device_zone.zone_type),
            condition: if emulated { "emulated" } else { condition_label(device_zone.condition) },
            write_pointer_bytes,
            capacity_bytes: device_zone.capacity_bytes,
            log_end_bytes: state.log_end_bytes,
            verified_end_bytes: tally.verified_end,
            records: tally.records,
            live_bytes: tally.live_bytes,
            garbage_bytes: verified.saturating_sub(tally.live_bytes),
            state: log_state,
        }
    }
}

impl LogInfo {
    fn finish(&mut self) {
        self.garbage_bytes = self.log_bytes.saturating_sub(self.live_bytes);
    }
}

impl Survey {
    /// Log bytes that are neither live blocks, dead blocks nor tombstones: batch records,
    /// padding, regions that failed to verify.
    pub fn other_garbage_bytes(&self) -> u64 {
        self.log
            .garbage_bytes
            .saturating_sub(self.log.dead_block_bytes)
            .saturating_sub(self.log.tombstone_bytes)
    }
}

/// Whether a log zone has anything to walk: recovery found log in it (or damage), or a zoned
/// device says it was written (its write pointer moved, or it is full). Emulated zones
/// recovery considers empty are not read.
fn needs_walk(kind: DeviceKind, device_zone: &Zone, state: &ZoneLogState) -> bool {
    let device_written = kind == DeviceKind::Zoned
        && device_zone.zone_type != ZoneType::Conventional
        && device_zone.written_bytes() > 0;
    state.log_end_bytes > 0 || state.unclean || device_written
}

fn checkpoint_sets(
    sb: &Superblock,
    slots: &[CheckpointSlot; 2],
    loaded_generation: Option<u64>,
) -> Vec<CheckpointSetInfo> {
    let mut loaded_taken = false;
    slots
        .iter()
        .enumerate()
        .map(|(set, slot)| {
            let (state, header, detail) = match slot {
                CheckpointSlot::Valid(h) => ("valid", Some(header_info(h)), None),
                CheckpointSlot::Empty => ("empty", None, None),
                CheckpointSlot::OtherDisk(h) => ("other-disk", Some(header_info(h)), None),
                CheckpointSlot::Invalid(err) => ("invalid", None, Some(err.to_string())),
                CheckpointSlot::Unreadable(err) => ("unreadable", None, Some(err.clone())),
            };
            let loaded = !loaded_taken
                && state == "valid"
                && header.as_ref().map(|h| h.generation) == loaded_generation;
            loaded_taken |= loaded;
            CheckpointSetInfo {
                set: if set == 0 { "A" } else { "B" },
                first_zone: sb.checkpoint_set_start(set as u32),
                state,
                header,
                detail,
                loaded,
            }
        })
        .collect()
}

fn header_info(h: &format::CheckpointHeader) -> CheckpointHeaderInfo {
    CheckpointHeaderInfo {
        generation: h.generation,
        clean: h.clean,
        entries: h.entry_count,
        overflow_entries: h.overflow_count,
        covered_seq: h.covered_seq,
        written_unix_ms: h.written_unix_ms,
        written: rfc3339_ms(h.written_unix_ms),
    }
}

fn superblock_info<D: Device>(sb: &Superblock, disk: &D) -> SuperblockInfo {
    let first = sb.first_data_zone();
    let log_capacity_bytes = (first..sb.zone_count).map(|z| disk.zone(z).capacity_bytes).sum();
    SuperblockInfo {
        uuid: uuid_hex(&sb.disk_uuid),
        format_version: sb.format_version,
        created_unix_ms: sb.created_unix_ms,
        created: rfc3339_ms(sb.created_unix_ms),
        value_bytes_max: sb.value_bytes_max,
        zone_count: sb.zone_count,
        checkpoint_zones_per_set: sb.checkpoint_zones_per_set,
        first_log_zone: first,
        log_zones: sb.zone_count - first,
        log_capacity_bytes,
    }
}

/// Zone counts by device condition (zoned devices only).
fn conditions<D: Device>(disk: &D) -> BTreeMap<&'static str, u64> {
    let mut counts = BTreeMap::new();
    if disk.geometry().kind == DeviceKind::Zoned {
        for zone in disk.zones() {
            *counts.entry(condition_label(zone.condition)).or_insert(0) += 1;
        }
    }
    counts
}

/// A device kind, for reports.
pub fn kind_label(kind: DeviceKind) -> &'static str {
    match kind {
        DeviceKind::File => "file",
        DeviceKind::Block => "block",
        DeviceKind::Zoned => "zoned",
    }
}

fn type_label(zone_type: ZoneType) -> &'static str {
    match zone_type {
        ZoneType::Conventional => "conventional",
        ZoneType::SequentialRequired => "sequential",
        ZoneType::SequentialPreferred => "sequential-preferred",
    }
}

fn condition_label(condition: ZoneCondition) -> &'static str {
    match condition {
        ZoneCondition::NotWritePointer => "not write pointer",
        ZoneCondition::Empty => "empty",
        ZoneCondition::ImplicitOpen => "implicit open",
        ZoneCondition::ExplicitOpen => "explicit open",
        ZoneCondition::Closed => "closed",
        ZoneCondition::Full => "full",
        ZoneCondition::ReadOnly => "read-only",
        ZoneCondition::Offline => "offline",
    }
}

/// `2026-11-05T10:11:12.345Z` for Unix milliseconds.
pub fn rfc3339_ms(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        unix_ms % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::rfc3339_ms;

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(rfc3339_ms(1_790_000_000_000), "2026-09-21T14:13:20.000Z");
    }
}
