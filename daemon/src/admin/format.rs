//! `shingled format`: makes a regular file (created if missing), a conventional block device or
//! a zoned block device an empty shingle disk with the store's `format`, after refusing a disk
//! that holds anything (a shingle superblock, or other data in its first blocks) unless
//! `--force`.

use std::path::Path;

use ioengine::Core;
use ioengine::buf::AlignedBuf;
use ioengine::device::{Device, DeviceKind, Disk, DiskOptions};
use serde::Serialize;

use super::survey::{DeviceInfo, rfc3339_ms};
use super::{AdminError, FormatArgs, RING_ENTRIES, open_disk};
use crate::store::format::{SUPERBLOCK_COPIES, VALUE_BYTES_FORMAT_MAX};
use crate::store::{self, FormatOptions, StoreError, uuid_hex};

/// What `format` did.
#[derive(Debug, Clone, Serialize)]
pub struct Formatted {
    /// The path given.
    pub path: String,
    /// The file was created.
    pub created_file: bool,
    /// What the disk held before, if anything.
    pub erased: Option<String>,
    /// The device.
    pub device: DeviceInfo,
    /// The new disk's uuid (hex).
    pub uuid: String,
    /// Format time, RFC 3339 UTC.
    pub created: String,
    /// Zones per checkpoint set.
    pub checkpoint_zones_per_set: u32,
    /// First log zone.
    pub first_log_zone: u32,
    /// Log zones.
    pub log_zones: u32,
    /// Bytes the log zones can hold.
    pub log_capacity_bytes: u64,
    /// Largest value accepted.
    pub value_bytes_max: u32,
}

/// Formats the disk `args` names; refuses one that holds data unless `args.force`.
pub fn format(args: &FormatArgs) -> Result<Formatted, AdminError> {
    let value_bytes_max = u32::try_from(args.value_bytes_max.0)
        .ok()
        .filter(|&v| v > 0 && v <= VALUE_BYTES_FORMAT_MAX)
        .ok_or_else(|| {
            AdminError::Usage(format!(
                "--value-bytes-max {} is outside 1B..={}B",
                args.value_bytes_max, VALUE_BYTES_FORMAT_MAX
            ))
        })?;
    let path = args.target.path.clone();
    let created = create_file_if_missing(&path, args)?;
    let core = Core::new(RING_ENTRIES).map_err(AdminError::Ring)?;
    let args = args.clone();
    let result = core.block_on(async move { format_disk(&args, created, value_bytes_max).await });
    if result.is_err() && created {
        // Leave nothing behind for a format that did not happen.
        let _ = std::fs::remove_file(&path);
    }
    result
}

/// Creates an empty file for `--size` if `path` does not exist (its space is reserved when it
/// is opened). Checks `--size` against an existing path.
fn create_file_if_missing(path: &Path, args: &FormatArgs) -> Result<bool, AdminError> {
    let shown = path.display().to_string();
    match (std::fs::metadata(path), args.size) {
        (Err(err), Some(_)) if err.kind() == std::io::ErrorKind::NotFound => {
            std::fs::File::options().write(true).create_new(true).open(path).map_err(|source| {
                AdminError::File { what: "cannot create", path: shown, source }
            })?;
            Ok(true)
        }
        (Err(err), None) if err.kind() == std::io::ErrorKind::NotFound => Err(AdminError::Usage(
            format!("{shown} does not exist; give --size to create a file of that size"),
        )),
        (Err(source), _) => Err(AdminError::File { what: "cannot stat", path: shown, source }),
        (Ok(meta), Some(size)) if !meta.is_file() => Err(AdminError::Usage(format!(
            "--size {size} creates a regular file; {shown} exists and is not one"
        ))),
        (Ok(meta), Some(size)) if meta.len() != 0 && meta.len() != size.0 => {
            Err(AdminError::Usage(format!(
                "{shown} exists with {} bytes; --size {size} only sizes a file it creates \
                 (drop --size, or remove the file)",
                meta.len()
            )))
        }
        (Ok(_), _) => Ok(false),
    }
}

async fn format_disk(
    args: &FormatArgs,
    created: bool,
    value_bytes_max: u32,
) -> Result<Formatted, AdminError> {
    let path = &args.target.path;
    let options = DiskOptions {
        zone_size_bytes: args.target.zone_size.unwrap_or(config::ZONE_SIZE_DEFAULT).0,
        zone_capacity_bytes: args.target.zone_capacity.map(|c| c.0),
        create_size_bytes: args.size.map(|s| s.0),
        fresh: created,
        ..DiskOptions::default()
    };
    let disk = open_disk(path, &options)?;
    let emulation_given = args.target.zone_size.is_some() || args.target.zone_capacity.is_some();
    if disk.geometry().kind == DeviceKind::Zoned && emulation_given {
        return Err(AdminError::Usage(format!(
            "--zone-size and --zone-capacity apply to emulated zones; {} is a zoned block \
             device whose zones come from the kernel",
            path.display()
        )));
    }
    let erased = what_is_there(&disk).await?;
    if let (Some(what), false) = (&erased, args.force) {
        return Err(AdminError::Refused(format!(
            "{} holds {what}; formatting erases it: run again with --force to do so",
            path.display()
        )));
    }
    let options = FormatOptions { value_bytes_max, checkpoint_zones_per_set: 0 };
    let sb = store::format(&disk, &options, args.force).await?;
    let first = sb.first_data_zone();
    Ok(Formatted {
        path: path.display().to_string(),
        created_file: created,
        erased,
        device: DeviceInfo::of(&disk),
        uuid: uuid_hex(&sb.disk_uuid),
        created: rfc3339_ms(sb.created_unix_ms),
        checkpoint_zones_per_set: sb.checkpoint_zones_per_set,
        first_log_zone: first,
        log_zones: sb.zone_count - first,
        log_capacity_bytes: (first..sb.zone_count).map(|z| disk.zone(z).capacity_bytes).sum(),
        value_bytes_max: sb.value_bytes_max,
    })
}

/// What the disk's first blocks hold, for the refusal: a shingle disk (which one, formatted
/// when), other data, or nothing (zeroes, or the 0xFF some zoned devices return unwritten).
async fn what_is_there(disk: &Disk) -> Result<Option<String>, AdminError> {
    let detail = match store::read_superblock(disk).await {
        Ok(sb) => {
            return Ok(Some(format!(
                "a shingle disk (uuid {}, formatted {}, {} zones of {} bytes)",
                uuid_hex(&sb.disk_uuid),
                rfc3339_ms(sb.created_unix_ms),
                sb.zone_count,
                sb.zone_size_bytes
            )));
        }
        Err(StoreError::NotFormatted { detail, .. }) => detail,
        Err(err) => return Err(err.into()),
    };
    let block = disk.geometry().logical_block_bytes as usize;
    let len = block * SUPERBLOCK_COPIES;
    let (res, buf) = disk.read_at(0, AlignedBuf::new(len, block.max(4096)), len).await;
    res.map_err(|source| StoreError::Io { disk: disk.name().to_string(), source })?;
    if buf.iter().all(|&b| b == 0) || buf.iter().all(|&b| b == 0xFF) {
        return Ok(None);
    }
    let head: Vec<String> = buf.iter().take(8).map(|b| format!("{b:02x}")).collect();
    Ok(Some(format!(
        "data that is not a shingle disk (first bytes {}; superblock: {detail})",
        head.join(" ")
    )))
}
