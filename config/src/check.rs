//! Validation of a [`Config`]: ranges, and the relations between fields (ports, zones, sizes,
//! duplicates). It runs on configs read from a file (after the reader, skipping fields the
//! reader already reported) and on configs built in code ([`Config::validate`]). It does no
//! I/O: paths are checked as text, and what needs the machine (which CPUs exist, what a path
//! really is) is left to [`Config::placement`] and the daemon.

use std::collections::HashMap;
use std::fmt::Display;
use std::net::{IpAddr, SocketAddr};
use std::path::{Component, Path, PathBuf};

use crate::error::{Problem, ProblemKind};
use crate::read::Notes;
use crate::rules::{self, IntRule, SizeRule};
use crate::schema::*;
use crate::size::ByteSize;

/// Every problem with `config`; `notes` come from the reader (empty for a config built in code).
pub(crate) fn check(config: &Config, notes: &Notes) -> Vec<Problem> {
    let mut checker = Checker { notes, problems: Vec::new() };
    checker.server(config);
    checker.runtime(&config.runtime);
    checker.store(&config.store);
    checker.disks(config);
    let core_count = match &config.runtime.cores {
        Cores::List(cpus) if !cpus.is_empty() => Some(cpus.len()),
        _ => None,
    };
    checker.cores(config, core_count);
    checker.problems
}

/// The checks that need the number of cores (`None`: not known yet, `cores = "all"`).
pub(crate) fn check_core_count(config: &Config, core_count: Option<usize>) -> Vec<Problem> {
    let notes = Notes::default();
    let mut checker = Checker { notes: &notes, problems: Vec::new() };
    checker.cores(config, core_count);
    checker.problems
}

struct Checker<'n> {
    notes: &'n Notes,
    problems: Vec<Problem>,
}

impl Checker<'_> {
    fn server(&mut self, c: &Config) {
        let s = &c.server;
        self.port_not_zero("server.listen", s.listen, LISTEN_DEFAULT.port());
        self.port_not_zero("metrics.listen", c.metrics.listen, METRICS_LISTEN_DEFAULT.port());
        if self.ok("server.listen")
            && self.ok("metrics.listen")
            && conflict(s.listen, c.metrics.listen)
        {
            let port = if s.listen.port() == 9700 { 9701 } else { 9700 };
            let message = format!(
                "same port as server.listen ({}); give metrics another port, e.g. \"{}\"",
                s.listen,
                SocketAddr::new(c.metrics.listen.ip(), port)
            );
            self.invalid("metrics.listen", &c.metrics.listen, message);
        }
        self.int("server.shard_port_base", s.shard_port_base.into(), rules::SHARD_PORT_BASE);
        self.int("server.max_connections", s.max_connections.into(), rules::MAX_CONNECTIONS);
        self.int(
            "server.max_in_flight_per_connection",
            s.max_in_flight_per_connection.into(),
            rules::MAX_IN_FLIGHT_PER_CONNECTION,
        );
        self.int("server.idle_timeout_ms", s.idle_timeout_ms, rules::IDLE_TIMEOUT_MS);
        self.int("server.read_timeout_ms", s.read_timeout_ms, rules::READ_TIMEOUT_MS);
        self.int("server.request_timeout_ms", s.request_timeout_ms, rules::REQUEST_TIMEOUT_MS);
        let value_max = c.store.value_bytes_max;
        let value_ok = self.ok("store.value_bytes_max") && rules::VALUE_BYTES_MAX.allows(value_max);
        // A frame limit derived from a bad value cap is that field's problem, not this one's.
        let frame_ok = (value_ok || s.max_frame_bytes != default_max_frame_bytes(value_max))
            && self.size("server.max_frame_bytes", s.max_frame_bytes, rules::MAX_FRAME_BYTES);
        let frame_min = ByteSize(value_max.0.saturating_add(FRAME_HEADROOM_BYTES));
        if frame_ok && value_ok && s.max_frame_bytes < frame_min {
            let message = format!(
                "must be at least store.value_bytes_max ({value_max}) + 64KiB = {frame_min}, or \
                 the largest PUT could not be sent; raise it, or remove it to get that default"
            );
            self.invalid("server.max_frame_bytes", &s.max_frame_bytes, message);
        }
        let in_flight_ok = self.size(
            "server.max_in_flight_bytes",
            s.max_in_flight_bytes,
            rules::MAX_IN_FLIGHT_BYTES,
        );
        if in_flight_ok && frame_ok && s.max_in_flight_bytes < s.max_frame_bytes {
            let message = format!(
                "must be at least server.max_frame_bytes ({}): a core must be able to hold the \
                 largest frame",
                s.max_frame_bytes
            );
            self.invalid("server.max_in_flight_bytes", &s.max_in_flight_bytes, message);
        }
        if let Some(path) = &s.auth_secret_file {
            self.path("server.auth_secret_file", path, "\"/etc/shingle/secret\"");
        }
    }

    fn runtime(&mut self, r: &RuntimeConfig) {
        if let Cores::List(cpus) = &r.cores {
            if cpus.is_empty() && self.ok("runtime.cores") {
                let message = "lists no CPU; list at least one, e.g. [0, 1], or use \"all\"";
                self.invalid("runtime.cores", &"[]", message.to_owned());
            }
            let mut seen: HashMap<usize, usize> = HashMap::new();
            for (i, &cpu) in cpus.iter().enumerate() {
                let field = format!("runtime.cores[{i}]");
                self.int(&field, cpu as u64, rules::CPU_ID);
                let first = *seen.entry(cpu).or_insert(i);
                if first != i {
                    let message = format!(
                        "CPU {cpu} is listed twice (also runtime.cores[{first}]); list each CPU \
                         once"
                    );
                    self.invalid(&field, &cpu, message);
                }
            }
        }
        self.int("runtime.ring_entries", r.ring_entries.into(), rules::RING_ENTRIES);
        let bytes_ok =
            self.size("runtime.pool_buffer_bytes", r.pool_buffer_bytes, rules::POOL_BUFFER_BYTES);
        let count_ok = self.int(
            "runtime.pool_buffer_count",
            r.pool_buffer_count.into(),
            rules::POOL_BUFFER_COUNT,
        );
        if bytes_ok && count_ok && r.pool_bytes_per_core() > POOL_BYTES_PER_CORE_MAX {
            let message = format!(
                "{} buffers of {} are {} per core, above {POOL_BYTES_PER_CORE_MAX}; use fewer or \
                 smaller buffers",
                r.pool_buffer_count,
                r.pool_buffer_bytes,
                r.pool_bytes_per_core()
            );
            self.invalid("runtime.pool_buffer_count", &r.pool_buffer_count, message);
        }
    }

    fn store(&mut self, s: &StoreConfig) {
        self.size("store.value_bytes_max", s.value_bytes_max, rules::VALUE_BYTES_MAX);
        self.size("store.checkpoint_interval", s.checkpoint_interval, rules::CHECKPOINT_INTERVAL);
    }

    fn disks(&mut self, c: &Config) {
        if c.disks.is_empty() && self.ok("disk") {
            let kind = ProblemKind::Missing {
                hint: "no disk is configured; add a [[disk]] section with an id and a path"
                    .to_owned(),
            };
            self.problems.push(Problem { field: "disk".to_owned(), value: None, line: None, kind });
        }
        if c.disks.len() > DISKS_MAX {
            let message =
                format!("{} disks configured, at most {DISKS_MAX} are supported", c.disks.len());
            self.invalid("disk", &c.disks.len(), message);
        }
        let mut ids: HashMap<u16, usize> = HashMap::new();
        let mut paths: HashMap<PathBuf, usize> = HashMap::new();
        for (i, disk) in c.disks.iter().enumerate() {
            let field = |name: &str| format!("disk[{i}].{name}");
            if self.ok(&field("id")) {
                let first = *ids.entry(disk.id).or_insert(i);
                if first != i {
                    let message = format!("also the id of disk[{first}]; disk ids must be unique");
                    self.invalid(&field("id"), &disk.id, message);
                }
            }
            if self.ok(&field("path"))
                && self.path(&field("path"), &disk.path, "\"/var/lib/shingle/disk0.img\"")
            {
                let first = *paths.entry(lexical(&disk.path)).or_insert(i);
                if first != i {
                    let message =
                        format!("also the path of disk[{first}]; a disk can be listed once");
                    self.invalid(&field("path"), &disk.path.display(), message);
                }
            }
            self.disk_zones(i, disk, &c.store);
            if disk.checkpoint_interval != c.store.checkpoint_interval {
                self.size(
                    &field("checkpoint_interval"),
                    disk.checkpoint_interval,
                    rules::CHECKPOINT_INTERVAL,
                );
            }
            if let Some(core) = disk.core {
                self.int(&field("core"), core as u64, rules::DISK_CORE);
            }
        }
    }

    /// Size, zone geometry and zone limits of disk `i`.
    fn disk_zones(&mut self, i: usize, disk: &DiskConfig, store: &StoreConfig) {
        let field = |name: &str| format!("disk[{i}].{name}");
        let zone_ok = self.size(&field("zone_size"), disk.zone_size, rules::ZONE_SIZE);
        // A capacity equal to the zone size (its default) is as good as the zone size.
        let mut capacity_ok = if disk.zone_capacity == disk.zone_size {
            zone_ok && self.ok(&field("zone_capacity"))
        } else {
            self.size(&field("zone_capacity"), disk.zone_capacity, rules::ZONE_CAPACITY)
        };
        if zone_ok && capacity_ok && disk.zone_capacity > disk.zone_size {
            let message = format!(
                "larger than disk[{i}].zone_size ({}); a zone's capacity is at most its size",
                disk.zone_size
            );
            self.invalid(&field("zone_capacity"), &disk.zone_capacity, message);
            capacity_ok = false;
        }
        if let Some(size) = disk.size {
            self.disk_size(i, disk, size, zone_ok);
        }
        for name in ["max_open_zones", "max_active_zones"] {
            let value =
                if name == "max_open_zones" { disk.max_open_zones } else { disk.max_active_zones };
            if self.int(&field(name), value.into(), rules::OPEN_ZONES)
                && value != 0
                && value < OPEN_ZONES_MIN
            {
                let message = format!(
                    "must be 0 (no limit) or at least {OPEN_ZONES_MIN}: the store keeps a log \
                     zone, a checkpoint zone and a garbage-collection zone open at once"
                );
                self.invalid(&field(name), &value, message);
            }
        }
        let (open, active) = (disk.max_open_zones, disk.max_active_zones);
        if open != 0 && active != 0 && open > active && self.ok(&field("max_active_zones")) {
            let message = format!(
                "larger than disk[{i}].max_active_zones ({active}); an open zone is also \
                 active, so max_open_zones must be at most max_active_zones"
            );
            self.invalid(&field("max_open_zones"), &open, message);
        }
        let value_max = store.value_bytes_max;
        let needed =
            value_max.0.saturating_add(value_max.0 / 1024).saturating_add(RECORD_HEADROOM_BYTES);
        let value_ok = self.ok("store.value_bytes_max") && rules::VALUE_BYTES_MAX.allows(value_max);
        if capacity_ok && zone_ok && value_ok && disk.zone_capacity.0 < needed {
            // Blame the field the operator wrote: the capacity defaults to the zone size.
            let capacity_written = self.notes.written.contains_key(&field("zone_capacity"));
            let name = if disk.zone_capacity == disk.zone_size && !capacity_written {
                "zone_size"
            } else {
                "zone_capacity"
            };
            let message = format!(
                "a zone of {} cannot hold the largest record (store.value_bytes_max = {value_max}, \
                 with headers {}); use larger zones or a smaller store.value_bytes_max",
                disk.zone_capacity,
                ByteSize(needed)
            );
            let shown = if name == "zone_size" { disk.zone_size } else { disk.zone_capacity };
            self.invalid(&field(name), &shown, message);
        }
    }

    fn disk_size(&mut self, i: usize, disk: &DiskConfig, size: ByteSize, zone_ok: bool) {
        let field = |name: &str| format!("disk[{i}].{name}");
        if !self.ok(&field("path")) || !self.ok(&field("size")) {
            return;
        }
        if disk.looks_like_block_device() {
            let message = "size is for regular files only (a block device's size is the \
                           device's); remove it, or use a file path outside /dev/";
            self.invalid(&field("size"), &size, message.to_owned());
            return;
        }
        if !self.size(&field("size"), size, rules::DISK_SIZE) || !zone_ok {
            return;
        }
        let zone = disk.zone_size;
        if zone > size {
            let message =
                format!("larger than disk[{i}].size ({size}); use smaller zones or a larger disk");
            self.invalid(&field("zone_size"), &zone, message);
        } else if size.0 % zone.0 != 0 {
            let below = ByteSize(size.0 / zone.0 * zone.0);
            let above = ByteSize(below.0.saturating_add(zone.0));
            let message = format!(
                "not a multiple of disk[{i}].zone_size ({zone}); use e.g. \"{below}\" or \
                 \"{above}\""
            );
            self.invalid(&field("size"), &size, message);
        } else if size.0 / zone.0 < ZONES_MIN {
            let message = format!(
                "holds {} zones of {zone}; a disk needs at least {ZONES_MIN} (superblock, two \
                 checkpoint zones, log): use at least \"{}\" or smaller zones",
                size.0 / zone.0,
                ByteSize(zone.0 * ZONES_MIN)
            );
            self.invalid(&field("size"), &size, message);
        }
    }

    /// Checks that depend on the number of cores: shard ports and pinned disks.
    fn cores(&mut self, c: &Config, core_count: Option<usize>) {
        let s = &c.server;
        let base = s.shard_port_base;
        if base != 0 && self.ok("server.shard_port_base") && self.ok("server.listen") {
            let cores = core_count.unwrap_or(1) as u64;
            let last = u64::from(base) + cores - 1;
            let field = "server.shard_port_base";
            if last > u64::from(u16::MAX) {
                let message = format!(
                    "{cores} cores would listen on ports {base} to {last}, past 65535; use a \
                     base of at most {}, or 0 to turn shard ports off",
                    65536u64.saturating_sub(cores)
                );
                self.invalid(field, &base, message);
            } else {
                let range = u64::from(base)..=last;
                let suggested = s.listen.port().max(c.metrics.listen.port()) as u64 + 10;
                let ports = if cores == 1 {
                    format!("shard port {base}")
                } else {
                    format!("shard ports {base} to {last} (one per core)")
                };
                let clashes = [
                    ("server.listen", s.listen, true),
                    (
                        "metrics.listen",
                        c.metrics.listen,
                        ips_overlap(s.listen.ip(), c.metrics.listen.ip()),
                    ),
                ];
                for (other, addr, overlapping) in clashes {
                    if overlapping && self.ok(other) && range.contains(&u64::from(addr.port())) {
                        let message = format!(
                            "{ports} include {other}'s port {}; use a base clear of it, e.g. \
                             {suggested}",
                            addr.port()
                        );
                        self.invalid(field, &base, message);
                    }
                }
            }
        }
        let Some(cores) = core_count else { return };
        for (i, disk) in c.disks.iter().enumerate() {
            let field = format!("disk[{i}].core");
            match disk.core {
                Some(core) if core >= cores && self.ok(&field) => {
                    let message = format!(
                        "there are {cores} cores (indexes 0 to {}); core is an index into \
                         runtime.cores, not a CPU id: use an index below {cores}, or remove \
                         core to spread disks over the cores",
                        cores - 1
                    );
                    self.invalid(&field, &core, message);
                }
                _ => {}
            }
        }
    }

    // ---- helpers ----

    fn port_not_zero(&mut self, field: &str, addr: SocketAddr, example: u16) {
        if addr.port() == 0 && self.ok(field) {
            let message = format!(
                "port 0 (any free port) is not allowed: clients and every core need a fixed port; \
                 use e.g. \"{}\"",
                SocketAddr::new(addr.ip(), example)
            );
            self.invalid(field, &format!("\"{addr}\""), message);
        }
    }

    /// Checks an integer field against its rule; true if it is fine (false if it was reported,
    /// here or by the reader).
    fn int(&mut self, field: &str, value: u64, rule: IntRule) -> bool {
        if !self.ok(field) {
            return false;
        }
        if rule.allows(i128::from(value)) {
            return true;
        }
        self.invalid(field, &value, rule.message());
        false
    }

    /// Checks a size field against its rule; true if it is fine (false if reported).
    fn size(&mut self, field: &str, value: ByteSize, rule: SizeRule) -> bool {
        if !self.ok(field) {
            return false;
        }
        if rule.allows(value) {
            return true;
        }
        self.invalid(field, &value, rule.message());
        false
    }

    /// Checks a path as text; true if it is fine (false if reported).
    fn path(&mut self, field: &str, path: &Path, example: &str) -> bool {
        if !self.ok(field) {
            return false;
        }
        let text = path.to_string_lossy();
        let problem = path_text_problem(&text).or_else(|| {
            let bytes = path.as_os_str().as_encoded_bytes();
            (bytes.ends_with(b"/") || path.file_name().is_none()).then(|| {
                format!("names a folder, not a file; name a file or device, e.g. {example}")
            })
        });
        match problem {
            Some(message) => {
                self.invalid(field, &format!("{text:?}"), message);
                false
            }
            None => true,
        }
    }

    fn ok(&self, field: &str) -> bool {
        !self.notes.bad.contains(field)
    }

    /// Reports `field`, showing its value as written when the reader saw it, else `shown`.
    fn invalid(&mut self, field: &str, shown: &dyn Display, message: String) {
        let written = self.notes.written.get(field);
        let value = written.map(|w| w.text.clone()).unwrap_or_else(|| shown.to_string());
        self.problems.push(Problem {
            field: field.to_owned(),
            value: Some(value),
            line: written.map(|w| w.line),
            kind: ProblemKind::Invalid(message),
        });
    }
}

/// What is wrong with a path's text, if anything: empty, a NUL byte, too long.
pub(crate) fn path_text_problem(text: &str) -> Option<String> {
    if text.trim().is_empty() {
        return Some(
            "empty path; write an absolute path, or one relative to the config file".to_owned(),
        );
    }
    if text.contains('\0') {
        return Some("contains a NUL byte, which no path can hold".to_owned());
    }
    if text.len() > PATH_BYTES_MAX {
        return Some(format!(
            "{} bytes long, above the {PATH_BYTES_MAX} a path may have",
            text.len()
        ));
    }
    None
}

/// The path without `.` components, so `/a/./b` and `/a//b` compare equal to `/a/b`. `..` is
/// kept: resolving it needs the file system (symlinks).
fn lexical(path: &Path) -> PathBuf {
    path.components().filter(|c| !matches!(c, Component::CurDir)).collect()
}

/// Whether two listening addresses would take the same port.
fn conflict(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port() && ips_overlap(a.ip(), b.ip())
}

/// Whether sockets bound to these IPs can collide: the same IP, or either is a wildcard.
fn ips_overlap(a: IpAddr, b: IpAddr) -> bool {
    a == b || a.is_unspecified() || b.is_unspecified()
}
