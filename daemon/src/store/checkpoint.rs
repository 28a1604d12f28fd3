//! Writing index checkpoints: a snapshot of the index (tag slots in tag order, overflow
//! entries) and of every data zone's state, written sequentially into the older of the two
//! checkpoint sets. Restart reads the newest valid one in one sequential read and scans only
//! the log written after it.

use std::rc::Rc;

use ioengine::buf::AlignedBuf;
use ioengine::checksum::crc32c;
use ioengine::device::{Device, ZoneCommand, ZoneType};
use ioengine::op::WriteFlags;

use super::format::{
    CHECKPOINT_HEADER_BYTES, CheckpointEntry, CheckpointHeader, OverflowEntry, ZONE_STATE_FINISHED,
    ZoneState,
};
use super::{Store, StoreError, StoreResult, unix_ms};

/// How long (in 1 ms rounds) a clean checkpoint waits for a periodic one in progress.
const CHECKPOINT_WAIT_ROUNDS_MAX: u32 = 60_000;

/// Bytes written per I/O while writing a checkpoint.
const CHECKPOINT_WRITE_BYTES: usize = 1 << 20;

impl<D: Device + 'static> Store<D> {
    /// Writes a checkpoint of everything acknowledged so far. `clean` marks a shutdown
    /// checkpoint (nothing was written after it).
    pub async fn write_checkpoint(self: &Rc<Self>, clean: bool) -> StoreResult<()> {
        if self.checkpointing.get() {
            if !clean {
                // A periodic checkpoint is already being written: this one adds nothing.
                return Ok(());
            }
            // A clean checkpoint must be written after everything else: wait for the one
            // in progress (checkpoints take milliseconds; bounded by the loop below).
            for _ in 0..CHECKPOINT_WAIT_ROUNDS_MAX {
                if !self.checkpointing.get() {
                    break;
                }
                let _ = ioengine::time::sleep(std::time::Duration::from_millis(1)).await;
            }
            if self.checkpointing.get() {
                return Err(StoreError::ReadOnly {
                    disk: self.name.clone(),
                    reason: "a checkpoint in progress did not finish".into(),
                });
            }
        }
        self.checkpointing.set(true);
        let result = self.write_checkpoint_inner(clean).await;
        self.checkpointing.set(false);
        result
    }

    async fn write_checkpoint_inner(self: &Rc<Self>, clean: bool) -> StoreResult<()> {
        // Snapshot synchronously: nothing changes the index between these lines.
        let generation = self.checkpoint_generation.get() + 1;
        let covered_seq = self.writer.acked_seq.get();
        let next_seq = self.writer.next_seq.get();
        let (body, zone_count, entry_count, overflow_count) = self.encode_checkpoint_body();
        let header = CheckpointHeader {
            format_version: self.superblock.format_version,
            generation,
            covered_seq,
            next_seq,
            zone_count,
            entry_count,
            overflow_count,
            body_bytes: body.len() as u64,
            body_crc: crc32c(&body),
            written_unix_ms: unix_ms(),
            clean,
            disk_uuid: self.superblock.disk_uuid,
        };
        let set = (generation % 2) as u32;
        let first = self.superblock.checkpoint_set_start(set);
        let zones = self.superblock.checkpoint_zones_per_set;
        let block = self.block_bytes;
        let total = block + body.len().next_multiple_of(block);
        let capacity: u64 = (first..first + zones).map(|z| self.disk.zone(z).capacity_bytes).sum();
        if total as u64 > capacity {
            return Err(StoreError::NoSpace {
                disk: format!("{} (checkpoint of {total} bytes > {capacity})", self.name),
            });
        }
        for zone in first..first + zones {
            self.reset_zone(zone).await?;
        }
        // Header block, then the body, zone by zone, in large sequential writes.
        let mut image = AlignedBuf::new(total, block.max(4096));
        image.pad_to(block);
        image[..CHECKPOINT_HEADER_BYTES].copy_from_slice(&header.encode());
        image.extend_from_slice(&body);
        image.pad_to(total);
        let mut written = 0usize;
        let mut zone = first;
        let mut zone_offset = 0u64;
        while written < total {
            let zone_capacity = self.disk.zone(zone).capacity_bytes;
            if zone_offset == zone_capacity {
                zone += 1;
                zone_offset = 0;
                continue;
            }
            let chunk = CHECKPOINT_WRITE_BYTES
                .min(total - written)
                .min((zone_capacity - zone_offset) as usize);
            let mut piece = AlignedBuf::new(chunk, block.max(4096));
            piece.extend_from_slice(&image[written..written + chunk]);
            let offset = self.disk.geometry().zone_start(zone) + zone_offset;
            let (res, _) = self.disk.write_at(offset, piece, WriteFlags::DSYNC).await;
            res.map_err(|e| self.io(e))?;
            written += chunk;
            zone_offset += chunk as u64;
        }
        self.disk.flush().await.map_err(|e| self.io(e))?;
        // The set takes no more writes until it is reset for a later checkpoint: finishing its
        // zones frees their open/active resources on zoned devices.
        for zone in first..first + zones {
            let z = self.disk.zone(zone);
            if z.zone_type != ZoneType::Conventional && z.condition.is_open() {
                self.disk.zone_command(zone, ZoneCommand::Finish).await.map_err(|e| self.io(e))?;
            }
        }
        self.checkpoint_generation.set(generation);
        self.stats.checkpoints.set(self.stats.checkpoints.get() + 1);
        self.metrics().checkpoints.increment(1);
        tracing::info!(disk = %self.name, generation, entries = entry_count, bytes = total, clean, "checkpoint written");
        Ok(())
    }

    /// Encodes the checkpoint body: zone states, tag entries in tag order, overflow entries.
    fn encode_checkpoint_body(&self) -> (Vec<u8>, u32, u64, u32) {
        let index = self.index.borrow();
        let zones = self.writer.zones.borrow();
        let first = self.superblock.first_data_zone() as usize;
        let data_zones = &zones[first..];
        let version = self.superblock.format_version;
        let mut body = Vec::with_capacity(
            data_zones.len() * super::format::CHECKPOINT_ZONE_BYTES
                + index.len() * super::format::checkpoint_entry_bytes(version),
        );
        // A finished zone with batches still in flight is recorded as partly written, so
        // recovery scans past its acknowledged end for the batches acknowledged later.
        let busy = self.writer.zones_in_flight();
        for (i, z) in data_zones.iter().enumerate() {
            let zone = (first + i) as u32;
            let finished = z.finished && !busy.contains(&zone);
            ZoneState {
                zone,
                write_offset: z.acked_end,
                live_bytes: z.live_bytes,
                flags: if finished { ZONE_STATE_FINISHED } else { 0 },
            }
            .encode_into(&mut body);
        }
        let mut entries = 0u64;
        for (tag, location) in index.tags_from(None) {
            CheckpointEntry { tag, location }.encode_into(&mut body, version);
            entries += 1;
        }
        let mut overflow = 0u32;
        for (key, location) in index.overflow() {
            OverflowEntry { key: *key, location: *location }.encode_into(&mut body, version);
            overflow += 1;
        }
        (body, data_zones.len() as u32, entries, overflow)
    }

    /// Resets a zone for reuse (conventional zones are simply overwritten).
    pub(super) async fn reset_zone(&self, zone: u32) -> StoreResult<()> {
        if self.disk.zone(zone).zone_type == ZoneType::Conventional {
            return Ok(());
        }
        self.disk.zone_command(zone, ZoneCommand::Reset).await.map_err(|e| self.io(e))
    }

    /// Stops taking writes, waits for every accepted write, writes a clean checkpoint and
    /// flushes. After this the store answers reads only.
    pub async fn close(self: &Rc<Self>) -> StoreResult<()> {
        self.drain_writes().await;
        self.closed.set(true);
        self.write_checkpoint(true).await?;
        self.disk.flush().await.map_err(|e| self.io(e))
    }
}
