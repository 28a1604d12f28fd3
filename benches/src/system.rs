//! The system under test, as every benchmark report states it first: date, kernel, CPU, the
//! file system and block device holding the test directory (driver, scheduler, write cache),
//! and the fio version. Numbers are only comparable with this written next to them.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use serde::Serialize;

/// Where the numbers come from: printed at the top of every report.
#[derive(Debug, Clone, Serialize)]
pub struct SystemInfo {
    pub date_utc: String,
    pub kernel_release: String,
    pub kernel_version: String,
    pub cpu_model: String,
    pub cpus_online: usize,
    pub mount_point: String,
    pub fs_type: String,
    pub mount_source: String,
    pub mount_options: String,
    pub device: String,
    pub device_major_minor: String,
    pub device_driver: Option<String>,
    pub device_scheduler: Option<String>,
    pub device_rotational: Option<bool>,
    pub device_logical_block_bytes: Option<u32>,
    pub device_write_cache: Option<String>,
    pub fio_version: String,
}

impl SystemInfo {
    pub fn collect(dir: &Path, fio_version: String) -> Result<SystemInfo> {
        let dev = std::fs::metadata(dir).with_context(|| format!("stat {}", dir.display()))?.dev();
        let (major, minor) = (libc::major(dev), libc::minor(dev));
        let mount = find_mount(dir, major, minor)?;
        let sys_dir = PathBuf::from(format!("/sys/dev/block/{major}:{minor}"));
        let queue = ioengine::sys::sysfs::queue_attrs(dev).ok();
        Ok(SystemInfo {
            date_utc: utc_date(SystemTime::now()),
            kernel_release: read_trimmed("/proc/sys/kernel/osrelease")?,
            kernel_version: read_trimmed("/proc/sys/kernel/version")?,
            cpu_model: cpu_model()?,
            cpus_online: std::thread::available_parallelism().map_or(0, usize::from),
            mount_point: mount.mount_point,
            fs_type: mount.fs_type,
            mount_source: mount.source,
            mount_options: mount.options,
            device: uevent_devname(&sys_dir).unwrap_or_else(|| "(none: not a block device)".into()),
            device_major_minor: format!("{major}:{minor}"),
            device_driver: std::fs::read_link(sys_dir.join("device/driver"))
                .ok()
                .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned())),
            device_scheduler: read_queue_file(&sys_dir, "scheduler"),
            device_rotational: queue.map(|q| q.rotational),
            device_logical_block_bytes: queue.map(|q| q.logical_block_size),
            device_write_cache: queue.map(|q| format!("{:?}", q.write_cache)),
            fio_version,
        })
    }
}

fn read_trimmed(path: &str) -> Result<String> {
    Ok(std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?.trim().to_owned())
}

fn cpu_model() -> Result<String> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").context("reading /proc/cpuinfo")?;
    Ok(cpuinfo
        .lines()
        .find_map(|line| line.strip_prefix("model name").and_then(|r| r.split_once(':')))
        .map_or_else(|| "unknown".to_owned(), |(_, model)| model.trim().to_owned()))
}

#[derive(Debug)]
struct Mount {
    mount_point: String,
    fs_type: String,
    source: String,
    options: String,
}

/// The mount holding `dir`: the longest mount point above it with the same device, from
/// /proc/self/mountinfo (fields: id parent major:minor root mount-point options ... - fstype
/// source super-options).
fn find_mount(dir: &Path, major: u32, minor: u32) -> Result<Mount> {
    let mountinfo =
        std::fs::read_to_string("/proc/self/mountinfo").context("reading /proc/self/mountinfo")?;
    let device = format!("{major}:{minor}");
    mountinfo
        .lines()
        .filter_map(|line| {
            let (head, tail) = line.split_once(" - ")?;
            let head: Vec<&str> = head.split_whitespace().collect();
            let tail: Vec<&str> = tail.split_whitespace().collect();
            let mount_point = unescape_mount_path(head.get(4)?);
            if *head.get(2)? != device || !dir.starts_with(&mount_point) {
                return None;
            }
            Some(Mount {
                mount_point,
                fs_type: (*tail.first()?).to_owned(),
                source: (*tail.get(1)?).to_owned(),
                options: tail.get(2).map_or_else(String::new, |o| (*o).to_owned()),
            })
        })
        .max_by_key(|mount| mount.mount_point.len())
        .with_context(|| format!("no mount of device {device} holds {}", dir.display()))
}

/// mountinfo escapes space, tab, newline and backslash as octal (`\040`).
fn unescape_mount_path(escaped: &str) -> String {
    let mut out = String::with_capacity(escaped.len());
    let mut rest = escaped;
    while let Some(pos) = rest.find('\\') {
        out.push_str(&rest[..pos]);
        let code = rest.get(pos + 1..pos + 4).and_then(|o| u8::from_str_radix(o, 8).ok());
        match code {
            Some(byte) => {
                out.push(char::from(byte));
                rest = &rest[pos + 4..];
            }
            None => {
                out.push('\\');
                rest = &rest[pos + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

fn uevent_devname(sys_dir: &Path) -> Option<String> {
    let uevent = std::fs::read_to_string(sys_dir.join("uevent")).ok()?;
    uevent.lines().find_map(|l| l.strip_prefix("DEVNAME=")).map(|name| format!("/dev/{name}"))
}

/// A queue attribute of the device or, for a partition, of its disk.
fn read_queue_file(sys_dir: &Path, name: &str) -> Option<String> {
    [sys_dir.join("queue").join(name), sys_dir.join("../queue").join(name)]
        .iter()
        .find_map(|path| std::fs::read_to_string(path).ok())
        .map(|text| text.trim().to_owned())
}

/// The process listening on TCP `port` of this machine (any address, IPv4 or IPv6): the
/// socket's inode from /proc/net/tcp{,6}, then the process holding it among /proc/*/fd. `None`
/// when no local process listens there or its descriptors are not readable.
pub fn pid_listening_on(port: u16) -> Option<u32> {
    let inodes: Vec<String> = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|path| std::fs::read_to_string(path).ok())
        .flat_map(|text| listening_inodes(&text, port))
        .collect();
    if inodes.is_empty() {
        return None;
    }
    let wanted: Vec<String> = inodes.iter().map(|inode| format!("socket:[{inode}]")).collect();
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|entry| {
        let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
        let fds = std::fs::read_dir(entry.path().join("fd")).ok()?;
        let holds = fds.flatten().any(|fd| {
            std::fs::read_link(fd.path())
                .is_ok_and(|target| wanted.iter().any(|w| target.as_os_str() == w.as_str()))
        });
        holds.then_some(pid)
    })
}

/// Inodes of the sockets listening (state 0A) on `port` in a /proc/net/tcp table.
fn listening_inodes(table: &str, port: u16) -> Vec<String> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let local_port = fields.get(1)?.rsplit_once(':')?.1;
            let listening = *fields.get(3)? == "0A";
            let inode = (*fields.get(9)?).to_owned();
            (listening && u16::from_str_radix(local_port, 16).ok()? == port).then_some(inode)
        })
        .collect()
}

/// `YYYY-MM-DD HH:MM UTC` (civil-from-days, Howard Hinnant's algorithm).
pub fn utc_date(now: SystemTime) -> String {
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = (secs / 86_400) as i64;
    let (hour, minute) = ((secs % 86_400) / 3600, (secs % 3600) / 60);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {hour:02}:{minute:02} UTC")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn utc_dates_are_civil() {
        assert_eq!(utc_date(UNIX_EPOCH), "1970-01-01 00:00 UTC");
        let leap_day = UNIX_EPOCH + Duration::from_secs(951_782_400 + 3600 + 120);
        assert_eq!(utc_date(leap_day), "2000-02-29 01:02 UTC");
    }

    #[test]
    fn listening_sockets_are_found_by_port() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1E14 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1
   1: 0100007F:1E14 0100007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 4343 1
";
        assert_eq!(listening_inodes(table, 7700), ["4242"]);
        assert!(listening_inodes(table, 7701).is_empty());
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        assert_eq!(pid_listening_on(port), Some(std::process::id()));
    }

    #[test]
    fn mount_paths_are_unescaped() {
        assert_eq!(unescape_mount_path("/mnt/a\\040b"), "/mnt/a b");
        assert_eq!(unescape_mount_path("/plain"), "/plain");
    }
}
