//! Output of the admin commands: text for people (aligned labels, sizes in binary units with the
//! exact byte count where it matters) and JSON for tools (every number in bytes).

use std::io::{self, Write};

use super::format::Formatted;
use super::survey::{Survey, ZoneInfo};

/// Prints what `format` did.
pub fn formatted(out: &mut impl Write, f: &Formatted, json: bool) -> io::Result<()> {
    if json {
        return write_json(out, f);
    }
    let d = &f.device;
    if let Some(what) = &f.erased {
        writeln!(out, "erased:       {what}")?;
    }
    let created = if f.created_file { " (file created)" } else { "" };
    writeln!(out, "formatted {}{created}", f.path)?;
    writeln!(out, "  uuid          {}", f.uuid)?;
    writeln!(out, "  formatted at  {}", f.created)?;
    writeln!(out, "  device        {}", device_kind_text(d.kind))?;
    writeln!(out, "  block size    {} B", d.block_bytes)?;
    writeln!(out, "  zones         {}", zones_text(d))?;
    writeln!(
        out,
        "  layout        zone 0 superblock; checkpoint sets of {} zone(s) each; log zones {}..{} ({})",
        f.checkpoint_zones_per_set,
        f.first_log_zone,
        f.first_log_zone + f.log_zones.saturating_sub(1),
        f.log_zones
    )?;
    writeln!(out, "  log capacity  {}", bytes_text(f.log_capacity_bytes))?;
    writeln!(out, "  value cap     {}", bytes_text(u64::from(f.value_bytes_max)))?;
    Ok(())
}

/// Prints `inspect`'s report.
pub fn inspect(out: &mut impl Write, s: &Survey, json: bool) -> io::Result<()> {
    if json {
        return write_json(out, s);
    }
    let d = &s.device;
    let sb = &s.superblock;
    writeln!(out, "{}: shingle disk {}", s.path, sb.uuid)?;
    writeln!(out, "device")?;
    writeln!(out, "  kind                {}", device_kind_text(d.kind))?;
    writeln!(
        out,
        "  block size          {} B (physical {} B)",
        d.block_bytes, d.physical_block_bytes
    )?;
    writeln!(out, "  zones               {}", zones_text(d))?;
    writeln!(
        out,
        "  open/active limits  {} / {}",
        limit_text(d.max_open_zones),
        limit_text(d.max_active_zones)
    )?;
    writeln!(out, "superblock")?;
    writeln!(out, "  uuid                {}", sb.uuid)?;
    writeln!(out, "  format version      {}", sb.format_version)?;
    writeln!(out, "  formatted at        {}", sb.created)?;
    writeln!(out, "  value cap           {}", bytes_text(u64::from(sb.value_bytes_max)))?;
    writeln!(
        out,
        "  layout              zone 0 superblock; checkpoint sets of {} zone(s) at zones {} and \
         {}; log zones {}..{} ({}, {})",
        sb.checkpoint_zones_per_set,
        s.checkpoint_sets.first().map(|c| c.first_zone).unwrap_or(1),
        s.checkpoint_sets.get(1).map(|c| c.first_zone).unwrap_or(2),
        sb.first_log_zone,
        sb.zone_count.saturating_sub(1),
        sb.log_zones,
        bytes_text(sb.log_capacity_bytes)
    )?;
    writeln!(out, "checkpoints")?;
    for set in &s.checkpoint_sets {
        let label = format!("set {} (zone {})", set.set, set.first_zone);
        let text = match (&set.header, &set.detail) {
            (Some(h), _) => {
                let other =
                    if set.state == "other-disk" { "of an earlier format, ignored: " } else { "" };
                format!(
                    "{other}generation {}, {}, {} entries (+{} by key), covers sequence <= {}, \
                     written {}{}",
                    h.generation,
                    if h.clean { "clean" } else { "not clean" },
                    h.entries,
                    h.overflow_entries,
                    h.covered_seq,
                    h.written,
                    if set.loaded { "  [loaded]" } else { "" }
                )
            }
            (None, Some(detail)) => format!("{}: {detail}", set.state),
            (None, None) => set.state.to_string(),
        };
        writeln!(out, "  {label:<18}  {text}")?;
    }
    let r = &s.recovery;
    match &s.checkpoint {
        Some(c) => writeln!(
            out,
            "  loaded              generation {} ({}); tail after it: {} records, {} scanned",
            c.header.generation,
            if c.header.clean { "clean shutdown" } else { "not clean" },
            r.tail_records,
            bytes_text(r.tail_scanned_bytes)
        )?,
        None => writeln!(
            out,
            "  loaded              none valid: the whole log is scanned ({} records, {})",
            r.tail_records,
            bytes_text(r.tail_scanned_bytes)
        )?,
    }
    for warning in &r.warnings {
        writeln!(out, "  recovery note       {warning}")?;
    }
    writeln!(out, "zones")?;
    if !s.zones.by_condition.is_empty() {
        let by: Vec<String> =
            s.zones.by_condition.iter().map(|(c, n)| format!("{c} {n}")).collect();
        writeln!(out, "  by condition        {}", by.join(", "))?;
    }
    writeln!(
        out,
        "  log zones           {} empty, {} partly written, {} full or finished, {} unclean",
        s.zones.log_empty, s.zones.log_partly_written, s.zones.log_full, s.zones.log_unclean
    )?;
    log_lines(out, s)?;
    writeln!(out, "index")?;
    writeln!(
        out,
        "  entries             {} ({} verified against their records), next sequence {}",
        s.index.entries, s.index.verified, r.next_seq
    )?;
    problem_lines(out, s)?;
    if let Some(list) = &s.zones.list {
        zone_table(out, list)?;
    }
    Ok(())
}

/// Prints `check`'s report.
pub fn check(out: &mut impl Write, s: &Survey, json: bool) -> io::Result<()> {
    if json {
        return write_json(out, s);
    }
    writeln!(
        out,
        "{}: shingle disk {}, {} log zones, {} with data, {} read",
        s.path,
        s.superblock.uuid,
        s.superblock.log_zones,
        s.log.zones_walked,
        bytes_text(s.log.read_bytes)
    )?;
    log_lines(out, s)?;
    writeln!(
        out,
        "index\n  entries             {} ({} point at a record of their key and length)",
        s.index.entries, s.index.verified
    )?;
    problem_lines(out, s)?;
    match s.problems_total {
        0 => writeln!(out, "result: clean"),
        1 => writeln!(out, "result: 1 problem found"),
        n => writeln!(out, "result: {n} problems found"),
    }
}

fn log_lines(out: &mut impl Write, s: &Survey) -> io::Result<()> {
    let l = &s.log;
    writeln!(out, "log")?;
    writeln!(
        out,
        "  walked              {} zone(s), {} read",
        l.zones_walked,
        bytes_text(l.read_bytes)
    )?;
    writeln!(
        out,
        "  records             {} blocks ({} live, {} garbage), {} tombstones, {} batches, {} padding",
        l.blocks,
        l.live_blocks,
        l.blocks - l.live_blocks.min(l.blocks),
        l.tombstones,
        l.batches,
        l.padding
    )?;
    writeln!(
        out,
        "  bytes               log {}: live {} ({}), garbage {} (dead blocks {}, tombstones {}, \
         batch records, padding and unverified {})",
        bytes_text(l.log_bytes),
        bytes_text(l.live_bytes),
        percent(l.live_bytes, l.log_bytes),
        bytes_text(l.garbage_bytes),
        bytes_text(l.dead_block_bytes),
        bytes_text(l.tombstone_bytes),
        bytes_text(s.other_garbage_bytes())
    )?;
    writeln!(
        out,
        "  regions             {} damaged, {} torn (never acknowledged: harmless)",
        s.damaged_regions, s.torn_regions
    )?;
    for r in &s.regions {
        writeln!(
            out,
            "    zone {} offsets {}..{} ({}) {}: {}",
            r.zone,
            r.from,
            r.to,
            bytes_text(r.to.saturating_sub(r.from)),
            r.kind,
            r.detail
        )?;
    }
    let listed = s.regions.len() as u64;
    let total = s.damaged_regions + s.torn_regions;
    if total > listed {
        writeln!(out, "    and {} more", total - listed)?;
    }
    Ok(())
}

fn problem_lines(out: &mut impl Write, s: &Survey) -> io::Result<()> {
    if s.problems_total == 0 {
        return writeln!(out, "problems              none");
    }
    writeln!(out, "problems ({})", s.problems_total)?;
    for p in &s.problems {
        writeln!(
            out,
            "  zone {} offset {} (device byte {}): {}",
            p.zone, p.offset, p.device_offset, p.what
        )?;
    }
    let listed = s.problems.len() as u64;
    if s.problems_total > listed {
        writeln!(out, "  and {} more", s.problems_total - listed)?;
    }
    Ok(())
}

fn zone_table(out: &mut impl Write, list: &[ZoneInfo]) -> io::Result<()> {
    writeln!(out, "zone list")?;
    writeln!(
        out,
        "  {:>6}  {:<12}  {:<12}  {:<17}  {:>12}  {:>12}  {:>12}  {:>8}  {:>12}  {:>12}  state",
        "zone",
        "role",
        "type",
        "condition",
        "write ptr",
        "log end",
        "verified",
        "records",
        "live",
        "garbage"
    )?;
    for z in list {
        let opt = |v: Option<u64>| v.map_or_else(|| "-".to_string(), |v| v.to_string());
        writeln!(
            out,
            "  {:>6}  {:<12}  {:<12}  {:<17}  {:>12}  {:>12}  {:>12}  {:>8}  {:>12}  {:>12}  {}",
            z.zone,
            z.role,
            z.zone_type,
            z.condition,
            opt(z.write_pointer_bytes),
            z.log_end_bytes,
            opt(z.verified_end_bytes),
            z.records,
            z.live_bytes,
            z.garbage_bytes,
            z.state
        )?;
    }
    Ok(())
}

fn write_json(out: &mut impl Write, value: &impl serde::Serialize) -> io::Result<()> {
    serde_json::to_writer_pretty(&mut *out, value).map_err(io::Error::other)?;
    writeln!(out)
}

fn device_kind_text(kind: &str) -> &'static str {
    match kind {
        "file" => "regular file (zones emulated)",
        "block" => "conventional block device (zones emulated)",
        _ => "zoned block device (zones from the kernel)",
    }
}

fn zones_text(d: &super::survey::DeviceInfo) -> String {
    let capacity = if d.zone_capacity_bytes_min == d.zone_capacity_bytes_max {
        bytes_text(d.zone_capacity_bytes_min)
    } else {
        format!(
            "{} to {}",
            bytes_text(d.zone_capacity_bytes_min),
            bytes_text(d.zone_capacity_bytes_max)
        )
    };
    let conventional = match d.conventional_zones {
        0 => String::new(),
        n => format!(", {n} conventional"),
    };
    format!(
        "{} x {} (capacity {capacity}){conventional}, {} in all",
        d.zone_count,
        bytes_text(d.zone_size_bytes),
        bytes_text(d.size_bytes)
    )
}

fn limit_text(limit: u32) -> String {
    if limit == 0 { "none".into() } else { limit.to_string() }
}

fn percent(part: u64, whole: u64) -> String {
    if whole == 0 {
        return "-".into();
    }
    format!("{:.1}%", part as f64 * 100.0 / whole as f64)
}

/// `512 B`, `64 MiB`, `1.5 GiB` (one decimal when not whole).
pub fn bytes_text(bytes: u64) -> String {
    const UNITS: [(&str, u64); 5] =
        [("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10), ("B", 1)];
    let (name, unit) = UNITS.iter().copied().find(|&(_, u)| bytes >= u).unwrap_or(("B", 1));
    if bytes % unit == 0 {
        format!("{} {name}", bytes / unit)
    } else {
        format!("{:.1} {name}", bytes as f64 / unit as f64)
    }
}
