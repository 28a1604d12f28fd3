//! crc32c (Castagnoli) checksums of the on-disk format: owns the implementation choice and the
//! 64 KiB chunk granularity, so that every caller checksums bytes the same way and the
//! implementation can be swapped (and re-measured with `cargo bench --bench crc32c`) in one place.
//!
//! The checksum is the standard CRC-32C (CRC-32/ISCSI): reflected polynomial `0x82F63B78`,
//! initial value and final xor `0xFFFF_FFFF`, so `crc32c(b"123456789") == 0xE306_9283`.
//!
//! The implementation is the `crc32c` crate, chosen by measurement over `crc-fast` (see
//! docs/DECISIONS.md, "Checksums"; re-check with the bench). It detects SSE4.2 at run time
//! (`is_x86_feature_detected!`, cached by std) and runs three interleaved hardware `crc32`
//! streams, with a portable slicing-by-8 table fallback on CPUs without SSE4.2 (and the ARMv8
//! CRC instructions on aarch64). This module itself contains no `unsafe`.

#![forbid(unsafe_code)]

/// Size of one checksummed chunk of a value in the on-disk format: every full 64 KiB of a value
/// carries its own crc32c, and the last chunk covers the remainder (which may be shorter).
pub const CHUNK_BYTES: usize = 64 * 1024;

/// Reflected CRC-32C (Castagnoli) polynomial.
const POLY_REFLECTED: u32 = 0x82F6_3B78;

/// Returns the crc32c (Castagnoli) of `bytes`.
///
/// Equal to [`crc32c_append`]`(0, bytes)`.
#[inline]
#[must_use]
pub fn crc32c(bytes: &[u8]) -> u32 {
    ::crc32c::crc32c(bytes)
}

/// Extends a finished crc32c `crc` of some bytes `a` with `bytes`, returning the crc32c of
/// `a` followed by `bytes`.
///
/// `crc32c_append(crc32c(a), b) == crc32c(a ++ b)`, and `crc32c_append(0, b) == crc32c(b)`.
#[inline]
#[must_use]
pub fn crc32c_append(crc: u32, bytes: &[u8]) -> u32 {
    ::crc32c::crc32c_append(crc, bytes)
}

/// The crc32c of `a ++ b` from `crc32c(a)`, `crc32c(b)` and `b.len()`, without the bytes.
#[inline]
#[must_use]
pub fn crc32c_combine(crc_a: u32, crc_b: u32, len_b: usize) -> u32 {
    ::crc32c::crc32c_combine(crc_a, crc_b, len_b)
}

/// Computes one crc32c per [`CHUNK_BYTES`] chunk of `value` into `out`.
///
/// `out` is cleared first. The last chunk may be shorter than [`CHUNK_BYTES`]; an empty
/// `value` yields no chunks. `out` keeps its allocation, so it can be reused across values.
pub fn chunk_crcs(value: &[u8], out: &mut Vec<u32>) {
    out.clear();
    out.extend(value.chunks(CHUNK_BYTES).map(crc32c));
}

/// Computes one crc32c per [`CHUNK_BYTES`] chunk of `value` into `out` (as [`chunk_crcs`])
/// and returns the crc32c of the whole value, combined from the chunk crcs: one pass over the
/// bytes gives both.
pub fn chunk_and_whole_crcs(value: &[u8], out: &mut Vec<u32>) -> u32 {
    chunk_crcs(value, out);
    combine_chunk_crcs(out, value.len())
}

/// The crc32c of a value of `value_len` bytes from its per-[`CHUNK_BYTES`] chunk crcs.
///
/// Appending a whole chunk is `shift(whole) ^ crc`, where `shift` advances a crc over
/// [`CHUNK_BYTES`] zero bytes: a linear map, applied with four table lookups
/// ([`shift_one_chunk`]). Only a short last chunk takes the general (slower) combine.
pub fn combine_chunk_crcs(chunks: &[u32], value_len: usize) -> u32 {
    let mut whole = 0;
    let mut left = value_len;
    for (i, crc) in chunks.iter().enumerate() {
        let len = left.min(CHUNK_BYTES);
        left -= len;
        whole = match (i, len) {
            (0, _) => *crc,
            (_, CHUNK_BYTES) => shift_one_chunk(whole) ^ *crc,
            _ => crc32c_combine(whole, *crc, len),
        };
    }
    whole
}

/// `crc32c_combine(crc, 0, CHUNK_BYTES)`: the crc advanced over one chunk of zero bytes,
/// by tables built once from the general combine (the map is linear in the crc's bits).
fn shift_one_chunk(crc: u32) -> u32 {
    static TABLES: std::sync::OnceLock<[[u32; 256]; 4]> = std::sync::OnceLock::new();
    let tables = TABLES.get_or_init(|| {
        let mut tables = [[0u32; 256]; 4];
        for (byte, table) in tables.iter_mut().enumerate() {
            for (value, entry) in table.iter_mut().enumerate() {
                *entry = crc32c_combine((value as u32) << (8 * byte), 0, CHUNK_BYTES);
            }
        }
        tables
    });
    let [b0, b1, b2, b3] = crc.to_le_bytes();
    tables[0][usize::from(b0)]
        ^ tables[1][usize::from(b1)]
        ^ tables[2][usize::from(b2)]
        ^ tables[3][usize::from(b3)]
}

/// Bit-at-a-time reference crc32c, for tests only: it is slow (8 loop iterations per byte)
/// but obviously correct, and small enough to always be compiled so that other
/// modules' tests can use it too. Do not use it on hot paths: use [`crc32c()`].
#[must_use]
pub fn crc32c_reference(bytes: &[u8]) -> u32 {
    reference_append(0, bytes)
}

/// Bitwise CRC-32C continuing from the finished crc `crc`.
fn reference_append(crc: u32, bytes: &[u8]) -> u32 {
    let mut reg = !crc;
    for &byte in bytes {
        reg ^= u32::from(byte);
        for _ in 0..8 {
            let mask = (reg & 1).wrapping_neg();
            reg = (reg >> 1) ^ (POLY_REFLECTED & mask);
        }
    }
    !reg
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Largest value length the property tests generate (exclusive).
    const MAX_LEN: usize = 200_000;
    /// Largest start offset within the generated buffer (exclusive), to get unaligned slices.
    const MAX_OFFSET: usize = 64;

    /// Deterministic pseudo-random bytes (splitmix64), so proptest shrinks the seed, length
    /// and offset rather than 200 000 individual bytes.
    fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
        let mut state = seed;
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            out.extend_from_slice(&z.to_le_bytes());
        }
        out.truncate(len);
        out
    }

    #[test]
    fn known_answer_check_string() {
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c_reference(b"123456789"), 0xE306_9283);
    }

    /// RFC 3720 (iSCSI), appendix B.4 test vectors.
    #[test]
    fn known_answer_rfc3720() {
        let zeros = [0u8; 32];
        let ones = [0xFFu8; 32];
        let ascending: Vec<u8> = (0u8..32).collect();
        let descending: Vec<u8> = (0u8..32).rev().collect();
        for (input, want) in [
            (&zeros[..], 0x8A91_36AA),
            (&ones[..], 0x62A8_AB43),
            (&ascending[..], 0x46DD_794E),
            (&descending[..], 0x113F_DB5C),
        ] {
            assert_eq!(crc32c(input), want, "fast, input {input:02x?}");
            assert_eq!(crc32c_reference(input), want, "reference, input {input:02x?}");
            assert_eq!(crc32c_append(0, input), want, "append from 0, input {input:02x?}");
        }
    }

    /// Every short length at every offset modulo 16: the fast path switches strategy at small
    /// sizes (8-byte alignment head and tail, 3 x 256-byte interleaved blocks), which uniformly
    /// random lengths up to 200 000 rarely hit.
    #[test]
    fn short_lengths_all_offsets() {
        let buf = random_bytes(0x5EED, 1100 + 16);
        for offset in 0..16 {
            for len in 0..=1100 {
                let slice = &buf[offset..offset + len];
                let want = crc32c_reference(slice);
                assert_eq!(crc32c(slice), want, "offset {offset}, len {len}");
                assert_eq!(crc32c_append(0, slice), want, "append, offset {offset}, len {len}");
            }
        }
    }

    #[test]
    fn empty_input() {
        assert_eq!(crc32c(&[]), 0);
        assert_eq!(crc32c_reference(&[]), 0);
        assert_eq!(crc32c_append(0x1234_5678, &[]), 0x1234_5678);
    }

    #[test]
    fn chunk_crcs_edges() {
        let mut out = vec![7, 8, 9];
        chunk_crcs(&[], &mut out);
        assert!(out.is_empty(), "an empty value has no chunks and `out` is cleared");

        for len in [1, CHUNK_BYTES - 1, CHUNK_BYTES, CHUNK_BYTES + 1, 3 * CHUNK_BYTES] {
            let value = random_bytes(len as u64, len);
            chunk_crcs(&value, &mut out);
            assert_eq!(out.len(), len.div_ceil(CHUNK_BYTES), "len {len}");
            for (i, &crc) in out.iter().enumerate() {
                let end = ((i + 1) * CHUNK_BYTES).min(len);
                assert_eq!(crc, crc32c_reference(&value[i * CHUNK_BYTES..end]), "len {len}");
            }
        }
    }

    proptest! {
        #[test]
        fn whole_crc_combined_from_chunks_equals_one_pass(seed: u64, len in 0..MAX_LEN) {
            let value = random_bytes(seed, len);
            let mut chunks = Vec::new();
            let whole = chunk_and_whole_crcs(&value, &mut chunks);
            prop_assert_eq!(whole, crc32c(&value));
            prop_assert_eq!(chunks.len(), len.div_ceil(CHUNK_BYTES));
        }

        #[test]
        fn fast_equals_reference(
            seed in any::<u64>(),
            len in 0..MAX_LEN,
            offset in 0..MAX_OFFSET,
        ) {
            let buf = random_bytes(seed, offset + len);
            let slice = &buf[offset..];
            prop_assert_eq!(crc32c(slice), crc32c_reference(slice));
        }

        #[test]
        fn append_from_any_crc_equals_reference(
            seed in any::<u64>(),
            start in any::<u32>(),
            len in 0..MAX_LEN,
            offset in 0..MAX_OFFSET,
        ) {
            let buf = random_bytes(seed, offset + len);
            let slice = &buf[offset..];
            prop_assert_eq!(crc32c_append(start, slice), reference_append(start, slice));
        }

        #[test]
        fn append_is_concatenation(
            seed in any::<u64>(),
            len in 0..MAX_LEN,
            split_a in any::<prop::sample::Index>(),
            split_b in any::<prop::sample::Index>(),
        ) {
            let data = random_bytes(seed, len);
            let (mut i, mut j) = (split_a.index(len + 1), split_b.index(len + 1));
            if i > j {
                std::mem::swap(&mut i, &mut j);
            }
            let whole = crc32c(&data);
            prop_assert_eq!(crc32c_append(crc32c(&data[..i]), &data[i..]), whole);
            let three = crc32c_append(crc32c_append(crc32c(&data[..i]), &data[i..j]), &data[j..]);
            prop_assert_eq!(three, whole);
        }

        #[test]
        fn chunk_crcs_matches_manual_slicing(
            seed in any::<u64>(),
            len in 0..(5 * CHUNK_BYTES),
            offset in 0..MAX_OFFSET,
        ) {
            let buf = random_bytes(seed, offset + len);
            let value = &buf[offset..];
            let mut out = vec![0xDEAD_BEEF];
            chunk_crcs(value, &mut out);

            let mut want = Vec::new();
            let mut start = 0;
            while start < value.len() {
                let end = (start + CHUNK_BYTES).min(value.len());
                want.push(crc32c_reference(&value[start..end]));
                start = end;
            }
            prop_assert_eq!(out, want);
        }
    }
}
