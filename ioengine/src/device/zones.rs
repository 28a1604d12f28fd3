//! The zone state machine, kept in software for every backend: it validates each write
//! against the write pointer, capacity and condition, counts open and active zones against
//! the device's limits, and applies reset/finish/open/close. On emulated backends it is the
//! truth; on zoned devices it mirrors the device and is re-synchronised from a zone report
//! after any error.
//!
//! Pure code (no I/O), so every rule is unit-tested here.

use super::{Zone, ZoneCommand, ZoneCondition, ZoneIndex, ZoneType};
use crate::error::{Error, Result};

/// The zones of one device and their open/active accounting.
#[derive(Debug, Clone)]
pub struct ZoneTable {
    zones: Vec<Zone>,
    zone_size_bytes: u64,
    max_open: u32,
    max_active: u32,
}

/// What a validated write does to the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WritePlan {
    /// The zone written.
    pub zone: ZoneIndex,
}

impl ZoneTable {
    /// A table over `zones` (indexed 0..n, each `zone_size_bytes` apart). Limits of 0 mean
    /// unlimited.
    pub fn new(zones: Vec<Zone>, zone_size_bytes: u64, max_open: u32, max_active: u32) -> Self {
        for (i, zone) in zones.iter().enumerate() {
            assert_eq!(zone.index as usize, i, "zones must be indexed in order");
        }
        ZoneTable { zones, zone_size_bytes, max_open, max_active }
    }

    /// Emulated zones: `count` sequential zones of `zone_size_bytes` with `capacity_bytes`
    /// writable each, all in `condition` (Empty for a fresh device, Full when the write
    /// pointers are not known yet).
    pub fn emulated(
        count: u32,
        zone_size_bytes: u64,
        capacity_bytes: u64,
        condition: ZoneCondition,
        max_open: u32,
        max_active: u32,
    ) -> Self {
        assert!(capacity_bytes <= zone_size_bytes);
        assert!(matches!(condition, ZoneCondition::Empty | ZoneCondition::Full));
        let zones = (0..count)
            .map(|index| {
                let start = u64::from(index) * zone_size_bytes;
                let write_pointer =
                    if condition == ZoneCondition::Full { start + capacity_bytes } else { start };
                Zone {
                    index,
                    start,
                    capacity_bytes,
                    write_pointer,
                    condition,
                    zone_type: ZoneType::SequentialRequired,
                }
            })
            .collect();
        ZoneTable::new(zones, zone_size_bytes, max_open, max_active)
    }

    /// Number of zones.
    pub fn len(&self) -> usize {
        self.zones.len()
    }

    /// True when the device has no zones.
    pub fn is_empty(&self) -> bool {
        self.zones.is_empty()
    }

    /// One zone.
    pub fn zone(&self, zone: ZoneIndex) -> Zone {
        self.zones[zone as usize]
    }

    /// All zones.
    pub fn zones(&self) -> &[Zone] {
        &self.zones
    }

    /// Zones currently open.
    pub fn open_count(&self) -> u32 {
        self.zones.iter().filter(|z| z.condition.is_open()).count() as u32
    }

    /// Zones currently active (open or closed).
    pub fn active_count(&self) -> u32 {
        self.zones.iter().filter(|z| z.condition.is_active()).count() as u32
    }

    /// The zone holding `offset`, or an error when it is beyond the last zone.
    pub fn zone_at(&self, offset: u64) -> Result<ZoneIndex> {
        let zone = offset / self.zone_size_bytes;
        if zone >= self.zones.len() as u64 {
            return Err(Error::OutOfRange {
                what: "the device's zones",
                offset,
                end: offset,
                limit: self.zone_size_bytes * self.zones.len() as u64,
            });
        }
        Ok(zone as ZoneIndex)
    }

    /// Validates a write of `len` bytes at `offset` and advances the write pointer (the write
    /// is about to be submitted). A zone that reaches its capacity becomes Full.
    pub fn prepare_write(&mut self, offset: u64, len: u64) -> Result<WritePlan> {
        let index = self.zone_at(offset)?;
        let zone = self.zones[index as usize];
        let end = offset + len;
        let capacity_end = zone.start + zone.capacity_bytes;
        if zone.zone_type == ZoneType::Conventional {
            if end > capacity_end {
                return Err(Error::OutOfRange {
                    what: "the conventional zone",
                    offset,
                    end,
                    limit: capacity_end,
                });
            }
            return Ok(WritePlan { zone: index });
        }
        match zone.condition {
            ZoneCondition::Full => {
                return Err(Error::ZoneFull { zone: index, capacity_end });
            }
            ZoneCondition::ReadOnly | ZoneCondition::Offline | ZoneCondition::NotWritePointer => {
                return Err(Error::ZoneCondition {
                    zone: index,
                    condition: zone.condition,
                    op: "write",
                });
            }
            _ => {}
        }
        if offset != zone.write_pointer {
            return Err(Error::NotAtWritePointer {
                zone: index,
                offset,
                write_pointer: zone.write_pointer,
            });
        }
        if end > capacity_end {
            return Err(Error::ZoneFull { zone: index, capacity_end });
        }
        if !zone.condition.is_open() {
            self.check_room_to_open(index)?;
        }
        let zone = &mut self.zones[index as usize];
        zone.write_pointer = end;
        zone.condition = if end == capacity_end {
            ZoneCondition::Full
        } else if zone.condition == ZoneCondition::ExplicitOpen {
            ZoneCondition::ExplicitOpen
        } else {
            ZoneCondition::ImplicitOpen
        };
        Ok(WritePlan { zone: index })
    }

    /// Checks the open and active limits before `zone` (Empty or Closed) opens.
    ///
    /// Devices close an implicitly open zone on their own when a write needs an open
    /// resource, but which one they pick differs (QEMU's ZNS takes the oldest, null_blk goes
    /// round-robin). Rather than guess, the table refuses: the owner closes or finishes a zone
    /// first, so the software state always matches the device.
    fn check_room_to_open(&self, zone: ZoneIndex) -> Result<()> {
        let condition = self.zones[zone as usize].condition;
        if condition == ZoneCondition::Empty && self.max_active != 0 {
            let active = self.active_count();
            if active >= self.max_active {
                return Err(Error::TooManyActiveZones { zone, active, max: self.max_active });
            }
        }
        if self.max_open != 0 {
            let open = self.open_count();
            if open >= self.max_open {
                return Err(Error::TooManyOpenZones { zone, open, max: self.max_open });
            }
        }
        Ok(())
    }

    /// Validates a zone-management command (before it is sent to a device).
    pub fn check_command(&self, zone: ZoneIndex, command: ZoneCommand) -> Result<()> {
        let z = self.zone_checked(zone)?;
        if z.zone_type == ZoneType::Conventional {
            return Err(Error::ZoneCondition {
                zone,
                condition: z.condition,
                op: command_name(command),
            });
        }
        match (z.condition, command) {
            (ZoneCondition::ReadOnly | ZoneCondition::Offline, _) => Err(Error::ZoneCondition {
                zone,
                condition: z.condition,
                op: command_name(command),
            }),
            (ZoneCondition::Full, ZoneCommand::Open) => {
                Err(Error::ZoneFull { zone, capacity_end: z.start + z.capacity_bytes })
            }
            (ZoneCondition::Empty | ZoneCondition::Closed, ZoneCommand::Open) => {
                self.check_room_to_open(zone)
            }
            _ => Ok(()),
        }
    }

    /// Applies a zone-management command that the device (or the emulation) carried out.
    pub fn apply_command(&mut self, zone: ZoneIndex, command: ZoneCommand) -> Result<()> {
        self.check_command(zone, command)?;
        let z = &mut self.zones[zone as usize];
        match command {
            ZoneCommand::Reset => {
                z.write_pointer = z.start;
                z.condition = ZoneCondition::Empty;
            }
            ZoneCommand::Finish => {
                z.write_pointer = z.start + z.capacity_bytes;
                z.condition = ZoneCondition::Full;
            }
            ZoneCommand::Open => {
                if z.condition != ZoneCondition::Full {
                    z.condition = ZoneCondition::ExplicitOpen;
                }
            }
            ZoneCommand::Close => {
                if z.condition.is_open() {
                    z.condition = if z.write_pointer == z.start {
                        ZoneCondition::Empty
                    } else {
                        ZoneCondition::Closed
                    };
                }
            }
        }
        Ok(())
    }

    /// Replaces one zone's state with what the device reported.
    pub fn set_zone(&mut self, zone: Zone) {
        let index = zone.index as usize;
        assert!(index < self.zones.len(), "zone {index} beyond the table");
        self.zones[index] = zone;
    }

    /// Sets an emulated zone's write pointer from the owner's recovery: Empty at the start,
    /// Full at capacity, Closed in between.
    pub fn restore_write_pointer(&mut self, zone: ZoneIndex, write_pointer: u64) -> Result<()> {
        let z = self.zone_checked(zone)?;
        let capacity_end = z.start + z.capacity_bytes;
        if write_pointer < z.start || write_pointer > capacity_end {
            return Err(Error::OutOfRange {
                what: "the zone's capacity",
                offset: write_pointer,
                end: write_pointer,
                limit: capacity_end,
            });
        }
        let condition = if write_pointer == z.start {
            ZoneCondition::Empty
        } else if write_pointer == capacity_end {
            ZoneCondition::Full
        } else {
            ZoneCondition::Closed
        };
        let z = &mut self.zones[zone as usize];
        z.write_pointer = write_pointer;
        z.condition = condition;
        Ok(())
    }

    fn zone_checked(&self, zone: ZoneIndex) -> Result<Zone> {
        self.zones.get(zone as usize).copied().ok_or(Error::OutOfRange {
            what: "the device's zone count",
            offset: u64::from(zone),
            end: u64::from(zone),
            limit: self.zones.len() as u64,
        })
    }
}

fn command_name(command: ZoneCommand) -> &'static str {
    match command {
        ZoneCommand::Reset => "reset",
        ZoneCommand::Finish => "finish",
        ZoneCommand::Open => "open",
        ZoneCommand::Close => "close",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ZONE: u64 = 1 << 20;
    const CAP: u64 = 768 << 10;

    fn table(max_open: u32, max_active: u32) -> ZoneTable {
        ZoneTable::emulated(8, ZONE, CAP, ZoneCondition::Empty, max_open, max_active)
    }

    #[test]
    fn write_at_the_pointer_advances_it_and_opens_the_zone() {
        let mut t = table(0, 0);
        let plan = t.prepare_write(ZONE, 4096).unwrap();
        assert_eq!(plan, WritePlan { zone: 1 });
        let z = t.zone(1);
        assert_eq!(z.write_pointer, ZONE + 4096);
        assert_eq!(z.condition, ZoneCondition::ImplicitOpen);
        t.prepare_write(ZONE + 4096, 8192).unwrap();
        assert_eq!(t.zone(1).write_pointer, ZONE + 12288);
    }

    #[test]
    fn write_elsewhere_is_refused_with_the_pointer() {
        let mut t = table(0, 0);
        t.prepare_write(0, 4096).unwrap();
        let err = t.prepare_write(8192, 4096).unwrap_err();
        assert!(
            matches!(err, Error::NotAtWritePointer { zone: 0, offset: 8192, write_pointer: 4096 }),
            "{err:?}"
        );
        assert_eq!(t.zone(0).write_pointer, 4096, "a refused write changes nothing");
    }

    #[test]
    fn zone_fills_at_capacity_not_at_size() {
        let mut t = table(0, 0);
        t.prepare_write(0, CAP - 4096).unwrap();
        let err = t.prepare_write(CAP - 4096, 8192).unwrap_err();
        assert!(matches!(err, Error::ZoneFull { zone: 0, .. }), "{err:?}");
        t.prepare_write(CAP - 4096, 4096).unwrap();
        assert_eq!(t.zone(0).condition, ZoneCondition::Full);
        assert_eq!(t.open_count(), 0);
        let err = t.prepare_write(CAP, 4096).unwrap_err();
        assert!(matches!(err, Error::ZoneFull { .. }), "{err:?}");
    }

    #[test]
    fn open_limit_refuses_instead_of_closing_a_zone_behind_the_owners_back() {
        let mut t = table(2, 0);
        t.prepare_write(0, 4096).unwrap();
        t.prepare_write(ZONE, 4096).unwrap();
        let err = t.prepare_write(2 * ZONE, 4096).unwrap_err();
        assert!(matches!(err, Error::TooManyOpenZones { zone: 2, open: 2, max: 2 }), "{err:?}");
        t.apply_command(0, ZoneCommand::Close).unwrap();
        t.prepare_write(2 * ZONE, 4096).unwrap();
        assert_eq!(t.zone(0).condition, ZoneCondition::Closed);
        assert_eq!(t.open_count(), 2);
    }

    #[test]
    fn open_limit_with_only_explicit_zones_is_an_error() {
        let mut t = table(2, 0);
        t.apply_command(0, ZoneCommand::Open).unwrap();
        t.apply_command(1, ZoneCommand::Open).unwrap();
        let err = t.prepare_write(2 * ZONE, 4096).unwrap_err();
        assert!(matches!(err, Error::TooManyOpenZones { zone: 2, open: 2, max: 2 }), "{err:?}");
        let err = t.apply_command(3, ZoneCommand::Open).unwrap_err();
        assert!(matches!(err, Error::TooManyOpenZones { .. }), "{err:?}");
    }

    #[test]
    fn active_limit_counts_closed_zones() {
        let mut t = table(0, 2);
        t.prepare_write(0, 4096).unwrap();
        t.prepare_write(ZONE, 4096).unwrap();
        t.apply_command(0, ZoneCommand::Close).unwrap();
        assert_eq!(t.zone(0).condition, ZoneCondition::Closed);
        let err = t.prepare_write(2 * ZONE, 4096).unwrap_err();
        assert!(matches!(err, Error::TooManyActiveZones { active: 2, max: 2, .. }), "{err:?}");
        t.apply_command(0, ZoneCommand::Finish).unwrap();
        t.prepare_write(2 * ZONE, 4096).unwrap();
        // A closed zone reopens without taking another active resource.
        t.apply_command(1, ZoneCommand::Close).unwrap();
        t.prepare_write(ZONE + 4096, 4096).unwrap();
    }

    #[test]
    fn reset_and_finish() {
        let mut t = table(0, 0);
        t.prepare_write(0, 4096).unwrap();
        t.apply_command(0, ZoneCommand::Finish).unwrap();
        assert_eq!(t.zone(0).condition, ZoneCondition::Full);
        assert_eq!(t.zone(0).write_pointer, CAP);
        t.apply_command(0, ZoneCommand::Reset).unwrap();
        assert_eq!(t.zone(0).condition, ZoneCondition::Empty);
        assert_eq!(t.zone(0).write_pointer, 0);
        t.prepare_write(0, 4096).unwrap();
    }

    #[test]
    fn close_of_an_unwritten_open_zone_makes_it_empty() {
        let mut t = table(0, 0);
        t.apply_command(4, ZoneCommand::Open).unwrap();
        assert_eq!(t.zone(4).condition, ZoneCondition::ExplicitOpen);
        t.apply_command(4, ZoneCommand::Close).unwrap();
        assert_eq!(t.zone(4).condition, ZoneCondition::Empty);
    }

    #[test]
    fn unknown_write_pointers_start_full_until_restored() {
        let mut t = ZoneTable::emulated(4, ZONE, CAP, ZoneCondition::Full, 0, 0);
        assert!(matches!(t.prepare_write(0, 4096), Err(Error::ZoneFull { .. })));
        t.restore_write_pointer(0, 8192).unwrap();
        assert_eq!(t.zone(0).condition, ZoneCondition::Closed);
        t.prepare_write(8192, 4096).unwrap();
        assert!(t.restore_write_pointer(1, ZONE + CAP + 1).is_err());
    }

    #[test]
    fn conventional_zones_take_writes_anywhere_inside() {
        let zones = vec![Zone {
            index: 0,
            start: 0,
            capacity_bytes: ZONE,
            write_pointer: 0,
            condition: ZoneCondition::NotWritePointer,
            zone_type: ZoneType::Conventional,
        }];
        let mut t = ZoneTable::new(zones, ZONE, 0, 0);
        t.prepare_write(65536, 4096).unwrap();
        t.prepare_write(0, 4096).unwrap();
        assert!(t.prepare_write(ZONE - 4096, 8192).is_err());
        assert!(t.check_command(0, ZoneCommand::Reset).is_err());
    }

    #[test]
    fn writes_past_the_last_zone_are_out_of_range() {
        let mut t = table(0, 0);
        assert!(matches!(t.prepare_write(8 * ZONE, 4096), Err(Error::OutOfRange { .. })));
    }
}
