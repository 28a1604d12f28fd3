//! The range rules of integer and size fields, shared by the reader (which must refuse a value
//! that does not fit the field's type) and the checker (which also checks configs built in
//! code), so both say the same thing about the same field.

use crate::schema::*;
use crate::size::ByteSize;

/// An integer field's accepted values.
#[derive(Debug, Clone, Copy)]
pub(crate) struct IntRule {
    pub(crate) min: u64,
    pub(crate) max: u64,
    /// Also a power of two.
    pub(crate) power_of_two: bool,
    /// Shown as `(default N)`.
    pub(crate) default: Option<u64>,
    /// Appended to the message, e.g. "; 0 turns shard ports off".
    pub(crate) note: &'static str,
}

impl IntRule {
    const fn new(min: u64, max: u64, default: Option<u64>) -> IntRule {
        IntRule { min, max, power_of_two: false, default, note: "" }
    }

    pub(crate) fn allows(&self, value: i128) -> bool {
        value >= i128::from(self.min)
            && value <= i128::from(self.max)
            && (!self.power_of_two || (value > 0 && (value as u64).is_power_of_two()))
    }

    pub(crate) fn message(&self) -> String {
        let kind = if self.power_of_two { "a power of two" } else { "an integer" };
        let default = self.default.map(|d| format!(" (default {d})")).unwrap_or_default();
        format!("must be {kind} from {} to {}{default}{}", self.min, self.max, self.note)
    }
}

/// A size field's accepted values.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SizeRule {
    pub(crate) min: ByteSize,
    pub(crate) max: ByteSize,
    /// The size must be a multiple of this (1: any).
    pub(crate) multiple_of: u64,
    /// Shown as `(default X)`; a text because some defaults are derived from other fields.
    pub(crate) default: &'static str,
    /// A good value to suggest.
    pub(crate) example: &'static str,
}

impl SizeRule {
    pub(crate) fn allows(&self, size: ByteSize) -> bool {
        size >= self.min && size <= self.max && size.0 % self.multiple_of == 0
    }

    pub(crate) fn message(&self) -> String {
        let multiple = if self.multiple_of > 1 {
            format!("a multiple of {} ({} bytes) ", ByteSize(self.multiple_of), self.multiple_of)
        } else {
            String::new()
        };
        format!(
            "must be {multiple}from {} to {} (default {}); use e.g. \"{}\"",
            self.min, self.max, self.default, self.example
        )
    }
}

pub(crate) const SHARD_PORT_BASE: IntRule = IntRule {
    note: "; 0 turns shard ports off",
    ..IntRule::new(0, 65535, Some(SHARD_PORT_BASE_DEFAULT as u64))
};
pub(crate) const MAX_CONNECTIONS: IntRule =
    IntRule::new(1, MAX_CONNECTIONS_LIMIT as u64, Some(MAX_CONNECTIONS_DEFAULT as u64));
pub(crate) const MAX_IN_FLIGHT_PER_CONNECTION: IntRule = IntRule::new(
    1,
    MAX_IN_FLIGHT_PER_CONNECTION_LIMIT as u64,
    Some(MAX_IN_FLIGHT_PER_CONNECTION_DEFAULT as u64),
);
pub(crate) const IDLE_TIMEOUT_MS: IntRule = IntRule {
    note: " milliseconds",
    ..IntRule::new(IDLE_TIMEOUT_MS_RANGE.0, IDLE_TIMEOUT_MS_RANGE.1, Some(IDLE_TIMEOUT_MS_DEFAULT))
};
pub(crate) const READ_TIMEOUT_MS: IntRule = IntRule {
    note: " milliseconds",
    ..IntRule::new(READ_TIMEOUT_MS_RANGE.0, READ_TIMEOUT_MS_RANGE.1, Some(READ_TIMEOUT_MS_DEFAULT))
};
pub(crate) const REQUEST_TIMEOUT_MS: IntRule = IntRule {
    note: " milliseconds",
    ..IntRule::new(
        REQUEST_TIMEOUT_MS_RANGE.0,
        REQUEST_TIMEOUT_MS_RANGE.1,
        Some(REQUEST_TIMEOUT_MS_DEFAULT),
    )
};
pub(crate) const CPU_ID: IntRule = IntRule::new(0, CPU_ID_MAX as u64, None);
pub(crate) const RING_ENTRIES: IntRule = IntRule {
    power_of_two: true,
    ..IntRule::new(
        RING_ENTRIES_MIN as u64,
        RING_ENTRIES_MAX as u64,
        Some(RING_ENTRIES_DEFAULT as u64),
    )
};
pub(crate) const POOL_BUFFER_COUNT: IntRule =
    IntRule::new(1, POOL_BUFFER_COUNT_MAX as u64, Some(POOL_BUFFER_COUNT_DEFAULT as u64));
pub(crate) const DISK_ID: IntRule = IntRule {
    note: "; disk ids are 16-bit on the wire and 65535 means every disk",
    ..IntRule::new(0, DISK_ID_MAX as u64, None)
};
pub(crate) const DISK_CORE: IntRule = IntRule::new(0, CPU_ID_MAX as u64, None);
pub(crate) const OPEN_ZONES: IntRule =
    IntRule { note: "; 0 means no limit", ..IntRule::new(0, OPEN_ZONES_MAX as u64, Some(0)) };

pub(crate) const MAX_FRAME_BYTES: SizeRule = SizeRule {
    min: MAX_FRAME_BYTES_MIN,
    max: MAX_FRAME_BYTES_LIMIT,
    multiple_of: 1,
    default: "store.value_bytes_max + 64KiB, at least 1MiB",
    example: "16448KiB",
};
pub(crate) const MAX_IN_FLIGHT_BYTES: SizeRule = SizeRule {
    min: MAX_FRAME_BYTES_MIN,
    max: MAX_IN_FLIGHT_BYTES_LIMIT,
    multiple_of: 1,
    default: "256MiB",
    example: "256MiB",
};
pub(crate) const POOL_BUFFER_BYTES: SizeRule = SizeRule {
    min: POOL_BUFFER_BYTES_MIN,
    max: POOL_BUFFER_BYTES_MAX,
    multiple_of: BLOCK_BYTES,
    default: "128KiB",
    example: "128KiB",
};
pub(crate) const VALUE_BYTES_MAX: SizeRule = SizeRule {
    min: ByteSize(1),
    max: VALUE_BYTES_MAX_LIMIT,
    multiple_of: 1,
    default: "16MiB",
    example: "16MiB",
};
pub(crate) const CHECKPOINT_INTERVAL: SizeRule = SizeRule {
    min: CHECKPOINT_INTERVAL_MIN,
    max: CHECKPOINT_INTERVAL_MAX,
    multiple_of: 1,
    default: "256MiB",
    example: "256MiB",
};
pub(crate) const ZONE_SIZE: SizeRule = SizeRule {
    min: ZONE_SIZE_MIN,
    max: ZONE_SIZE_MAX,
    multiple_of: BLOCK_BYTES,
    default: "256MiB",
    example: "256MiB",
};
pub(crate) const ZONE_CAPACITY: SizeRule = SizeRule {
    min: ByteSize(BLOCK_BYTES),
    max: ZONE_SIZE_MAX,
    multiple_of: BLOCK_BYTES,
    default: "zone_size",
    example: "256MiB",
};
/// The disk size's own rule; its relations to the zone size are checked apart.
pub(crate) const DISK_SIZE: SizeRule = SizeRule {
    min: ByteSize(ZONE_SIZE_MIN.0 * ZONES_MIN),
    max: ByteSize(u64::MAX / BLOCK_BYTES * BLOCK_BYTES),
    multiple_of: BLOCK_BYTES,
    default: "the existing file's size",
    example: "4GiB",
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_satisfy_their_rules() {
        for (rule, value) in [
            (SHARD_PORT_BASE, u64::from(SHARD_PORT_BASE_DEFAULT)),
            (MAX_CONNECTIONS, u64::from(MAX_CONNECTIONS_DEFAULT)),
            (MAX_IN_FLIGHT_PER_CONNECTION, u64::from(MAX_IN_FLIGHT_PER_CONNECTION_DEFAULT)),
            (IDLE_TIMEOUT_MS, IDLE_TIMEOUT_MS_DEFAULT),
            (READ_TIMEOUT_MS, READ_TIMEOUT_MS_DEFAULT),
            (REQUEST_TIMEOUT_MS, REQUEST_TIMEOUT_MS_DEFAULT),
            (RING_ENTRIES, u64::from(RING_ENTRIES_DEFAULT)),
            (POOL_BUFFER_COUNT, u64::from(POOL_BUFFER_COUNT_DEFAULT)),
            (OPEN_ZONES, 0),
        ] {
            assert!(rule.allows(i128::from(value)), "{value}: {}", rule.message());
            assert_eq!(rule.default, Some(value));
        }
        for (rule, value) in [
            (MAX_FRAME_BYTES, default_max_frame_bytes(VALUE_BYTES_MAX_DEFAULT)),
            (MAX_IN_FLIGHT_BYTES, MAX_IN_FLIGHT_BYTES_DEFAULT),
            (POOL_BUFFER_BYTES, POOL_BUFFER_BYTES_DEFAULT),
            (VALUE_BYTES_MAX, VALUE_BYTES_MAX_DEFAULT),
            (CHECKPOINT_INTERVAL, CHECKPOINT_INTERVAL_DEFAULT),
            (ZONE_SIZE, ZONE_SIZE_DEFAULT),
            (ZONE_CAPACITY, ZONE_SIZE_DEFAULT),
            (DISK_SIZE, EMBEDDED_DISK_SIZE),
        ] {
            assert!(rule.allows(value), "{value}: {}", rule.message());
            assert!(rule.allows(ByteSize::parse(rule.example).unwrap()), "{}", rule.example);
        }
    }

    #[test]
    fn messages_state_the_rule() {
        assert_eq!(RING_ENTRIES.message(), "must be a power of two from 8 to 4096 (default 256)");
        assert!(!RING_ENTRIES.allows(300));
        assert!(!RING_ENTRIES.allows(0));
        assert_eq!(
            ZONE_SIZE.message(),
            "must be a multiple of 4KiB (4096 bytes) from 1MiB to 16GiB (default 256MiB); \
             use e.g. \"256MiB\""
        );
    }
}
