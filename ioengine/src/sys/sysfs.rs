//! A block device's queue attributes from sysfs (`/sys/dev/block/MAJ:MIN/queue/*`): zoned
//! model, zone limits, block sizes, request size limits, discard and write cache. The one file
//! that reads device sysfs, so each attribute's format, and the default for an attribute an
//! older kernel lacks, are decided in one place.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// The device's zoned model (`queue/zoned`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ZonedModel {
    /// `none`: a conventional block device.
    None,
    /// `host-aware`: zoned, random writes allowed but slow. Linux 6.10 and later show such
    /// disks as `none`, so this is rare.
    HostAware,
    /// `host-managed`: sequential zones must be written at their write pointer.
    HostManaged,
}

/// The device's write cache mode (`queue/write_cache`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WriteCache {
    /// `write back`: the device has a volatile cache; data is durable only after a flush (or
    /// a FUA write).
    WriteBack,
    /// `write through`: a completed write is durable; flushes are no-ops.
    WriteThrough,
}

/// A block device's queue attributes, as the kernel exposes them in `queue/`.
///
/// Attributes that older kernels lack take these defaults when their file is missing:
///
/// | attribute | since | default when missing |
/// |---|---|---|
/// | `zoned` | 4.10 | [`ZonedModel::None`] (such kernels have no zoned support) |
/// | `nr_zones` | 4.20 | `0` (unknown: ask `BLKGETNRZONES` or report the zones) |
/// | `max_open_zones` | 5.9 | `0` (the kernel's own "no limit") |
/// | `max_active_zones` | 5.9 | `0` (the kernel's own "no limit") |
/// | `zone_append_max_bytes` | 5.8 | `0` (no zone append) |
/// | `write_cache` | 4.7 | [`WriteCache::WriteBack`] |
///
/// An unknown write cache counts as write-back (volatile) so that callers keep flushing: a
/// flush costs little on a write-through device, while a flush skipped on a write-back device
/// loses acknowledged data. Kernels built without zoned block support also omit
/// `max_open_zones` and `max_active_zones` (observed on 6.18). Every other attribute is
/// required: a missing file is an error with `io::ErrorKind::NotFound` naming it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueAttrs {
    /// Zoned model (`zoned`).
    pub zoned: ZonedModel,
    /// Number of zones (`nr_zones`); 0 on a device that is not zoned.
    pub nr_zones: u32,
    /// Chunk size in 512-byte sectors (`chunk_sectors`): the zone size on a zoned device,
    /// otherwise a boundary requests should not cross (0 for none).
    pub chunk_sectors: u64,
    /// Most zones open at once (`max_open_zones`); 0 for no limit.
    pub max_open_zones: u32,
    /// Most zones open or closed (active) at once (`max_active_zones`); 0 for no limit.
    pub max_active_zones: u32,
    /// Logical block size in bytes (`logical_block_size`).
    pub logical_block_size: u32,
    /// Physical block size in bytes (`physical_block_size`).
    pub physical_block_size: u32,
    /// Largest request the kernel sends, in KiB (`max_sectors_kb`); larger writes are split.
    pub max_sectors_kb: u32,
    /// Largest request the hardware accepts, in KiB (`max_hw_sectors_kb`).
    pub max_hw_sectors_kb: u32,
    /// Largest zone append in bytes (`zone_append_max_bytes`); 0 for none.
    pub zone_append_max_bytes: u64,
    /// The device is rotational (`rotational` is 1).
    pub rotational: bool,
    /// Largest single discard in bytes (`discard_max_bytes`); 0 when the device cannot discard.
    pub discard_max_bytes: u64,
    /// Write cache mode (`write_cache`).
    pub write_cache: WriteCache,
}

/// The `queue` directory of the block device `dev` (from `st_rdev`): its own for a whole
/// disk, its disk's for a partition (which has no `queue` of its own).
fn queue_dir(dev: libc::dev_t) -> io::Result<PathBuf> {
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    let dev_dir = PathBuf::from(format!("/sys/dev/block/{major}:{minor}"));
    let own = dev_dir.join("queue");
    if own.is_dir() {
        return Ok(own);
    }
    // `dev_dir` is a symlink into /sys/devices; the kernel resolves `..` after following it,
    // which lands in the disk's directory for a partition.
    let parent = dev_dir.join("..").join("queue");
    if parent.is_dir() {
        return Ok(parent);
    }
    Err(io::Error::new(
        io::ErrorKind::NotFound,
        format!(
            "block device {major}:{minor} has no queue directory ({} nor {}): not a block \
             device, or /sys is not mounted",
            own.display(),
            parent.display()
        ),
    ))
}

/// Reads the queue attributes of the block device `dev` (a whole disk or a partition, from
/// `fstat`'s `st_rdev`). See [`QueueAttrs`] for defaults and errors.
pub fn queue_attrs(dev: libc::dev_t) -> io::Result<QueueAttrs> {
    queue_attrs_at(&queue_dir(dev)?)
}

/// Reads the queue attributes from the files in `queue_dir` (a sysfs `queue` directory, or a
/// copy of one). A value that does not parse is `io::ErrorKind::InvalidData` naming the file
/// and the value.
pub fn queue_attrs_at(queue_dir: &Path) -> io::Result<QueueAttrs> {
    let attrs = Attrs { dir: queue_dir };
    Ok(QueueAttrs {
        zoned: attrs.optional("zoned", parse_zoned)?.unwrap_or(ZonedModel::None),
        nr_zones: attrs.optional("nr_zones", parse_int)?.unwrap_or(0),
        chunk_sectors: attrs.required("chunk_sectors", parse_int)?,
        max_open_zones: attrs.optional("max_open_zones", parse_int)?.unwrap_or(0),
        max_active_zones: attrs.optional("max_active_zones", parse_int)?.unwrap_or(0),
        logical_block_size: attrs.required("logical_block_size", parse_int)?,
        physical_block_size: attrs.required("physical_block_size", parse_int)?,
        max_sectors_kb: attrs.required("max_sectors_kb", parse_int)?,
        max_hw_sectors_kb: attrs.required("max_hw_sectors_kb", parse_int)?,
        zone_append_max_bytes: attrs.optional("zone_append_max_bytes", parse_int)?.unwrap_or(0),
        rotational: attrs.required("rotational", parse_bool)?,
        discard_max_bytes: attrs.required("discard_max_bytes", parse_int)?,
        write_cache: attrs
            .optional("write_cache", parse_write_cache)?
            .unwrap_or(WriteCache::WriteBack),
    })
}

/// Parses `zoned`.
fn parse_zoned(value: &str) -> Result<ZonedModel, &'static str> {
    match value {
        "none" => Ok(ZonedModel::None),
        "host-aware" => Ok(ZonedModel::HostAware),
        "host-managed" => Ok(ZonedModel::HostManaged),
        _ => Err("none, host-aware or host-managed"),
    }
}

/// Parses `write_cache`.
fn parse_write_cache(value: &str) -> Result<WriteCache, &'static str> {
    match value {
        "write back" => Ok(WriteCache::WriteBack),
        "write through" => Ok(WriteCache::WriteThrough),
        _ => Err("\"write back\" or \"write through\""),
    }
}

/// Parses a 0/1 flag such as `rotational`.
fn parse_bool(value: &str) -> Result<bool, &'static str> {
    match value {
        "0" => Ok(false),
        "1" => Ok(true),
        _ => Err("0 or 1"),
    }
}

/// Parses a decimal unsigned integer that fits `T`.
fn parse_int<T: FromStr>(value: &str) -> Result<T, &'static str> {
    // `u32::from_str` accepts a leading '+'; sysfs never writes one.
    if value.starts_with('+') {
        return Err("a decimal unsigned integer in range");
    }
    value.parse().map_err(|_| "a decimal unsigned integer in range")
}

/// The attribute files of one `queue` directory.
struct Attrs<'a> {
    dir: &'a Path,
}

impl Attrs<'_> {
    /// Reads and parses `name`; `None` when the file does not exist.
    fn optional<T>(
        &self,
        name: &str,
        parse: fn(&str) -> Result<T, &'static str>,
    ) -> io::Result<Option<T>> {
        let path = self.dir.join(name);
        let raw = match fs::read_to_string(&path) {
            Ok(raw) => raw,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(io::Error::new(e.kind(), format!("{}: {e}", path.display())));
            }
        };
        // sysfs values end in a newline.
        let value = raw.trim_end_matches('\n');
        parse(value).map(Some).map_err(|expected| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: malformed value {value:?}, expected {expected}", path.display()),
            )
        })
    }

    /// Reads and parses `name`; a missing file is `NotFound` naming it.
    fn required<T>(&self, name: &str, parse: fn(&str) -> Result<T, &'static str>) -> io::Result<T> {
        self.optional(name, parse)?.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("{}: missing", self.dir.join(name).display()),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A full queue directory as Linux 6.12 writes it for the ZNS test namespace.
    const ZNS: &[(&str, &str)] = &[
        ("zoned", "host-managed\n"),
        ("nr_zones", "32\n"),
        ("chunk_sectors", "131072\n"),
        ("max_open_zones", "8\n"),
        ("max_active_zones", "12\n"),
        ("logical_block_size", "4096\n"),
        ("physical_block_size", "4096\n"),
        ("max_sectors_kb", "512\n"),
        ("max_hw_sectors_kb", "512\n"),
        ("zone_append_max_bytes", "524288\n"),
        ("rotational", "0\n"),
        ("discard_max_bytes", "0\n"),
        ("write_cache", "write back\n"),
        ("scheduler", "[none] mq-deadline\n"),
    ];

    /// A queue directory holding [`ZNS`] with `overrides` written over it (or added) and the
    /// `removed` files left out.
    fn fake_queue(overrides: &[(&str, &str)], removed: &[&str]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (name, value) in ZNS.iter().chain(overrides) {
            if !removed.contains(name) {
                fs::write(dir.path().join(name), value).unwrap();
            }
        }
        dir
    }

    #[test]
    fn parses_a_zns_queue() {
        let dir = fake_queue(&[], &[]);
        assert_eq!(
            queue_attrs_at(dir.path()).unwrap(),
            QueueAttrs {
                zoned: ZonedModel::HostManaged,
                nr_zones: 32,
                chunk_sectors: 131_072,
                max_open_zones: 8,
                max_active_zones: 12,
                logical_block_size: 4096,
                physical_block_size: 4096,
                max_sectors_kb: 512,
                max_hw_sectors_kb: 512,
                zone_append_max_bytes: 524_288,
                rotational: false,
                discard_max_bytes: 0,
                write_cache: WriteCache::WriteBack,
            }
        );
    }

    #[test]
    fn parses_other_values() {
        let overrides = [
            ("zoned", "host-aware\n"),
            ("rotational", "1\n"),
            ("write_cache", "write through\n"),
            ("max_hw_sectors_kb", "2147483647\n"),
        ];
        let dir = fake_queue(&overrides, &[]);
        let attrs = queue_attrs_at(dir.path()).unwrap();
        assert_eq!(attrs.zoned, ZonedModel::HostAware);
        assert!(attrs.rotational);
        assert_eq!(attrs.write_cache, WriteCache::WriteThrough);
        assert_eq!(attrs.max_hw_sectors_kb, 2_147_483_647);

        let dir = fake_queue(&[("zoned", "none\n")], &[]);
        assert_eq!(queue_attrs_at(dir.path()).unwrap().zoned, ZonedModel::None);
    }

    #[test]
    fn missing_optional_attributes_take_defaults() {
        let optional = [
            "zoned",
            "nr_zones",
            "max_open_zones",
            "max_active_zones",
            "zone_append_max_bytes",
            "write_cache",
        ];
        let dir = fake_queue(&[], &optional);
        let attrs = queue_attrs_at(dir.path()).unwrap();
        assert_eq!(attrs.zoned, ZonedModel::None);
        assert_eq!(attrs.nr_zones, 0);
        assert_eq!(attrs.max_open_zones, 0);
        assert_eq!(attrs.max_active_zones, 0);
        assert_eq!(attrs.zone_append_max_bytes, 0);
        assert_eq!(attrs.write_cache, WriteCache::WriteBack);
        assert_eq!(attrs.chunk_sectors, 131_072);
    }

    #[test]
    fn missing_required_attribute_is_not_found() {
        let dir = fake_queue(&[], &["logical_block_size"]);
        let err = queue_attrs_at(dir.path()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert!(err.to_string().contains("logical_block_size"), "{err}");
    }

    #[test]
    fn malformed_values_are_invalid_data_naming_file_and_value() {
        let cases = [
            ("nr_zones", "12x\n", "\"12x\""),
            ("nr_zones", "-1\n", "\"-1\""),
            ("nr_zones", "+3\n", "\"+3\""),
            ("max_open_zones", "4294967296\n", "\"4294967296\""),
            ("chunk_sectors", "\n", "\"\""),
            ("logical_block_size", " 512\n", "\" 512\""),
            ("zoned", "host-ish\n", "\"host-ish\""),
            ("write_cache", "write-back\n", "\"write-back\""),
            ("rotational", "2\n", "\"2\""),
        ];
        for (name, value, quoted) in cases {
            let dir = fake_queue(&[(name, value)], &[]);
            let err = queue_attrs_at(dir.path()).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{name}={value:?}: {err}");
            let message = err.to_string();
            assert!(message.contains(&format!("/{name}:")), "{message}");
            assert!(message.contains(quoted), "{message}");
        }
    }

    #[test]
    fn unknown_device_is_not_found() {
        // Major 0 is reserved for unnamed (non-block) devices.
        let err = queue_attrs(libc::makedev(0, 4_000_000)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound, "{err}");
    }

    /// `MAJ:MIN` from a sysfs `dev` file.
    fn read_dev(path: &Path) -> Option<libc::dev_t> {
        let text = fs::read_to_string(path).ok()?;
        let (major, minor) = text.trim_end().split_once(':')?;
        Some(libc::makedev(major.parse().ok()?, minor.parse().ok()?))
    }

    /// Whole disks with a non-zero size that are not zoned, `vda` first if present.
    fn non_zoned_disks() -> Vec<String> {
        let Ok(entries) = fs::read_dir("/sys/block") else { return Vec::new() };
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|name| {
                let size = fs::read_to_string(format!("/sys/block/{name}/size"));
                let zoned = fs::read_to_string(format!("/sys/block/{name}/queue/zoned"));
                size.is_ok_and(|s| s.trim() != "0") && zoned.is_ok_and(|z| z.trim() == "none")
            })
            .collect();
        names.sort_by_key(|name| (name != "vda", name.clone()));
        names
    }

    #[test]
    fn real_non_zoned_disk() {
        let Some(name) = non_zoned_disks().into_iter().next() else {
            eprintln!("skipped: no non-zoned block device in /sys/block");
            return;
        };
        let Some(dev) = read_dev(&Path::new("/sys/block").join(&name).join("dev")) else {
            eprintln!("skipped: cannot read /sys/block/{name}/dev");
            return;
        };
        let attrs = queue_attrs(dev).unwrap();
        eprintln!("{name}: {attrs:?}");
        assert_eq!(attrs.zoned, ZonedModel::None);
        assert_eq!(attrs.nr_zones, 0);
        assert!(attrs.logical_block_size >= 512);
        assert!(attrs.physical_block_size >= attrs.logical_block_size);
        assert!(attrs.max_sectors_kb > 0 && attrs.max_sectors_kb <= attrs.max_hw_sectors_kb);
    }

    #[test]
    fn real_partition_uses_its_disk_queue() {
        for disk in non_zoned_disks() {
            let Ok(entries) = fs::read_dir(Path::new("/sys/block").join(&disk)) else { continue };
            for entry in entries.filter_map(Result::ok) {
                if !entry.path().join("partition").exists() {
                    continue;
                }
                let Some(dev) = read_dev(&entry.path().join("dev")) else { continue };
                let Some(disk_dev) = read_dev(&Path::new("/sys/block").join(&disk).join("dev"))
                else {
                    continue;
                };
                let attrs = queue_attrs(dev).unwrap();
                assert_eq!(attrs, queue_attrs(disk_dev).unwrap());
                eprintln!("{:?} uses the queue of {disk}: {attrs:?}", entry.file_name());
                return;
            }
        }
        eprintln!("skipped: no partition of a non-zoned disk");
    }
}
