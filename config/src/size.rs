//! Byte sizes in the config: the [`ByteSize`] type and its parser. Sizes are written as strings
//! with binary (IEC) suffixes, `"4GiB"`, `"256MiB"`, `"64KiB"`, `"512B"`, or as plain TOML
//! integers, which count bytes.
//!
//! SI suffixes (`KB`, `MB`, `GB`, ...) and bare letters (`K`, `M`, `G`, ...) are rejected with a
//! hint, not guessed: `4GB` means 4×10^9 bytes to a disk vendor and 4×2^30 to fio, dd and
//! systemd, and the 7 % between them silently changes a disk's zone count, while SI values are
//! rarely multiples of the 4 KiB block (1 MB = 1,000,000 bytes is not). A decimal fraction is
//! accepted when it names a whole number of bytes (`"1.5GiB"`), and rejected otherwise
//! (`"0.1KiB"` = 102.4 bytes): nothing is rounded.

use std::fmt;
use std::str::FromStr;

/// A number of bytes. Written in the config as `"4GiB"` (binary suffixes, case-insensitive,
/// optional space before the unit, decimal fractions only when exact) or as an integer of bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ByteSize(pub u64);

/// The accepted units, largest first (so [`ByteSize`]'s `Display` picks the largest exact one).
const UNITS: [(&str, u64); 7] = [
    ("EiB", 1 << 60),
    ("PiB", 1 << 50),
    ("TiB", 1 << 40),
    ("GiB", 1 << 30),
    ("MiB", 1 << 20),
    ("KiB", 1 << 10),
    ("B", 1),
];

/// Units refused as ambiguous (compared case-insensitively), with the binary unit meant most
/// often by whoever writes them.
const AMBIGUOUS_UNITS: [(&str, &str); 12] = [
    ("k", "KiB"),
    ("kb", "KiB"),
    ("m", "MiB"),
    ("mb", "MiB"),
    ("g", "GiB"),
    ("gb", "GiB"),
    ("t", "TiB"),
    ("tb", "TiB"),
    ("p", "PiB"),
    ("pb", "PiB"),
    ("e", "EiB"),
    ("eb", "EiB"),
];

/// Most digits accepted after the decimal point (keeps the exact arithmetic inside u128).
const FRACTION_DIGITS_MAX: usize = 18;

/// Why a size string was refused. Every message says what to write instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    #[error("empty size; write e.g. \"256MiB\" or a number of bytes")]
    Empty,
    #[error("sizes cannot be negative")]
    Negative,
    #[error("no number before the unit; write e.g. \"4{unit}\"")]
    MissingNumber { unit: String },
    #[error(
        "{text:?} is not a number; write digits with an optional decimal point and a unit, \
         e.g. \"4GiB\" or \"1.5GiB\""
    )]
    BadNumber { text: String },
    #[error("unknown unit {unit:?}; use B, KiB, MiB, GiB, TiB, PiB or EiB")]
    UnknownUnit { unit: String },
    #[error(
        "unit {unit:?} is ambiguous (powers of 1000 or of 1024, depending on the tool); write \
         \"{number}{binary}\" for powers of 1024, or the exact number of bytes"
    )]
    AmbiguousUnit { unit: String, number: String, binary: &'static str },
    #[error("{text:?} is not a whole number of bytes; write an exact size, e.g. in a smaller unit")]
    Inexact { text: String },
    #[error("{text:?} is too large; the largest size is 18446744073709551615 bytes (16EiB - 1B)")]
    TooLarge { text: String },
}

impl ByteSize {
    /// `n` bytes.
    pub const fn b(n: u64) -> ByteSize {
        ByteSize(n)
    }
    /// `n` KiB.
    pub const fn kib(n: u64) -> ByteSize {
        ByteSize(n << 10)
    }
    /// `n` MiB.
    pub const fn mib(n: u64) -> ByteSize {
        ByteSize(n << 20)
    }
    /// `n` GiB.
    pub const fn gib(n: u64) -> ByteSize {
        ByteSize(n << 30)
    }
    /// `n` TiB.
    pub const fn tib(n: u64) -> ByteSize {
        ByteSize(n << 40)
    }

    /// The number of bytes.
    pub const fn bytes(self) -> u64 {
        self.0
    }

    /// Parses `"4GiB"`, `"1.5 GiB"`, `"512B"`, `"4096"`; see the module docs for what is refused.
    pub fn parse(text: &str) -> Result<ByteSize, SizeError> {
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err(SizeError::Empty);
        }
        if trimmed.starts_with('-') {
            return Err(SizeError::Negative);
        }
        let split =
            trimmed.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(trimmed.len());
        let (number, unit) = (&trimmed[..split], trimmed[split..].trim_start());
        let multiplier = unit_multiplier(unit, number)?;
        if number.is_empty() {
            let unit = if unit.is_empty() { "GiB".to_owned() } else { unit.to_owned() };
            return Err(SizeError::MissingNumber { unit });
        }
        exact_bytes(number, multiplier, trimmed).map(ByteSize)
    }
}

/// Bytes per `unit` (empty: bytes).
fn unit_multiplier(unit: &str, number: &str) -> Result<u64, SizeError> {
    if unit.is_empty() {
        return Ok(1);
    }
    if let Some(&(_, bytes)) = UNITS.iter().find(|(name, _)| name.eq_ignore_ascii_case(unit)) {
        return Ok(bytes);
    }
    if let Some(&(_, binary)) =
        AMBIGUOUS_UNITS.iter().find(|(name, _)| name.eq_ignore_ascii_case(unit))
    {
        let number = if number.is_empty() { "4" } else { number };
        return Err(SizeError::AmbiguousUnit {
            unit: unit.to_owned(),
            number: number.to_owned(),
            binary,
        });
    }
    Err(SizeError::UnknownUnit { unit: unit.to_owned() })
}

/// `number` (digits, optionally one `.` and more digits) times `multiplier`, exactly.
fn exact_bytes(number: &str, multiplier: u64, text: &str) -> Result<u64, SizeError> {
    let bad = || SizeError::BadNumber { text: text.to_owned() };
    let too_large = || SizeError::TooLarge { text: text.to_owned() };
    let (whole, fraction) = match number.split_once('.') {
        Some((whole, fraction)) => (whole, fraction),
        None => (number, ""),
    };
    let digits_only = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !digits_only(whole) || !digits_only(fraction) {
        return Err(bad());
    }
    if number.contains('.') && fraction.is_empty() {
        return Err(bad());
    }
    if fraction.len() > FRACTION_DIGITS_MAX {
        return Err(SizeError::Inexact { text: text.to_owned() });
    }
    // Digits as one integer, scaled by 10^(fraction digits): every step is checked.
    let mut scaled: u128 = 0;
    for b in whole.bytes().chain(fraction.bytes()) {
        scaled = scaled
            .checked_mul(10)
            .and_then(|s| s.checked_add(u128::from(b - b'0')))
            .ok_or_else(too_large)?;
    }
    let scale = 10u128.pow(fraction.len() as u32);
    let total = scaled.checked_mul(u128::from(multiplier)).ok_or_else(too_large)?;
    if total % scale != 0 {
        return Err(SizeError::Inexact { text: text.to_owned() });
    }
    u64::try_from(total / scale).map_err(|_| too_large())
}

impl FromStr for ByteSize {
    type Err = SizeError;
    fn from_str(s: &str) -> Result<ByteSize, SizeError> {
        ByteSize::parse(s)
    }
}

/// The largest unit that divides the size exactly: `4GiB`, `1536MiB`, `1000B`, `0B`. The
/// output parses back to the same size.
impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (name, bytes) = UNITS
            .iter()
            .find(|&&(_, bytes)| self.0 != 0 && self.0 % bytes == 0)
            .copied()
            .unwrap_or(("B", 1));
        write!(f, "{}{name}", self.0 / bytes)
    }
}

impl serde::Serialize for ByteSize {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(text: &str) -> u64 {
        match ByteSize::parse(text) {
            Ok(size) => size.bytes(),
            Err(e) => panic!("{text:?} refused: {e}"),
        }
    }

    fn err(text: &str) -> SizeError {
        match ByteSize::parse(text) {
            Ok(size) => panic!("{text:?} accepted as {size:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn binary_suffixes() {
        assert_eq!(ok("512B"), 512);
        assert_eq!(ok("64KiB"), 64 << 10);
        assert_eq!(ok("256MiB"), 256 << 20);
        assert_eq!(ok("4GiB"), 4 << 30);
        assert_eq!(ok("2TiB"), 2 << 40);
        assert_eq!(ok("3PiB"), 3 << 50);
        assert_eq!(ok("15EiB"), 15 << 60);
        assert_eq!(ok("4gib"), 4 << 30, "units are case-insensitive");
        assert_eq!(ok("4096"), 4096, "no unit: bytes");
        assert_eq!(ok("0"), 0);
        assert_eq!(ok("007KiB"), 7 << 10);
    }

    #[test]
    fn whitespace_is_allowed_around_and_before_the_unit() {
        assert_eq!(ok("  4GiB "), 4 << 30);
        assert_eq!(ok("4 GiB"), 4 << 30);
        assert_eq!(ok("4\tGiB"), 4 << 30);
        assert!(matches!(err("4 096"), SizeError::UnknownUnit { .. }));
        assert!(matches!(err("4 G iB"), SizeError::UnknownUnit { .. }));
    }

    #[test]
    fn exact_fractions_only() {
        assert_eq!(ok("1.5GiB"), 3 << 29);
        assert_eq!(ok("0.5KiB"), 512);
        assert_eq!(ok("1.000MiB"), 1 << 20);
        assert!(matches!(err("0.1KiB"), SizeError::Inexact { .. }));
        assert!(matches!(err("1.5"), SizeError::Inexact { .. }), "1.5 bytes");
        assert!(matches!(err("1.5B"), SizeError::Inexact { .. }));
        assert!(matches!(err(".5GiB"), SizeError::BadNumber { .. }));
        assert!(matches!(err("4.GiB"), SizeError::BadNumber { .. }));
        assert!(matches!(err("1.2.3MiB"), SizeError::BadNumber { .. }));
        assert!(matches!(err("1.0000000000000000001GiB"), SizeError::Inexact { .. }));
    }

    #[test]
    fn overflow_is_refused() {
        assert_eq!(ok("18446744073709551615"), u64::MAX);
        let e = err("16EiB");
        assert!(matches!(e, SizeError::TooLarge { .. }));
        assert!(e.to_string().contains("16EiB - 1B"), "{e}");
        assert!(matches!(err("18446744073709551616"), SizeError::TooLarge { .. }));
        assert!(matches!(
            err("99999999999999999999999999999999999999999EiB"),
            SizeError::TooLarge { .. }
        ));
        assert!(matches!(err("17179869184GiB"), SizeError::TooLarge { .. }));
    }

    #[test]
    fn negative_empty_and_garbage() {
        assert_eq!(err("-1GiB"), SizeError::Negative);
        assert_eq!(err(" -4096"), SizeError::Negative);
        assert_eq!(err(""), SizeError::Empty);
        assert_eq!(err("   "), SizeError::Empty);
        assert!(matches!(err("GiB"), SizeError::MissingNumber { .. }));
        assert!(matches!(err("+4GiB"), SizeError::UnknownUnit { .. }));
        assert!(matches!(err("0x1000"), SizeError::UnknownUnit { .. }));
        assert!(matches!(err("4GiBs"), SizeError::UnknownUnit { .. }));
        assert!(matches!(err("1e9"), SizeError::UnknownUnit { .. }));
        let e = err("4XB");
        assert!(e.to_string().contains("KiB, MiB, GiB"), "{e}");
    }

    #[test]
    fn si_and_bare_letters_are_ambiguous_with_a_hint() {
        for (text, hint) in
            [("4GB", "\"4GiB\""), ("256mb", "\"256MiB\""), ("4G", "\"4GiB\""), ("64k", "\"64KiB\"")]
        {
            let e = err(text);
            assert!(matches!(e, SizeError::AmbiguousUnit { .. }), "{text}: {e:?}");
            assert!(e.to_string().contains(hint), "{text}: {e}");
        }
    }

    #[test]
    fn display_round_trips() {
        for bytes in [0, 1, 1000, 4096, 3 << 29, 4 << 30, 1 << 60, u64::MAX, (1 << 20) + 4096] {
            let shown = ByteSize(bytes).to_string();
            assert_eq!(ok(&shown), bytes, "{shown}");
        }
        assert_eq!(ByteSize::gib(4).to_string(), "4GiB");
        assert_eq!(ByteSize(3 << 29).to_string(), "1536MiB");
        assert_eq!(ByteSize(1000).to_string(), "1000B");
    }
}
