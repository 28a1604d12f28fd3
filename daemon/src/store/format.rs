//! The on-disk format, version 2 (reads version 1): the superblock, log records and batches,
//! and index checkpoints. This module is the only place that knows byte layouts; docs/FORMAT.md describes
//! the same thing for humans, and tests/format_fixtures.rs pins it with golden files.
//!
//! Everything is little-endian. Decoders are pure functions over bytes from the disk: they
//! validate and return [`FormatError`], never panic, never allocate more than the input implies.

use ioengine::checksum::{CHUNK_BYTES, crc32c, crc32c_append};

/// Current format version: what `format` writes. A disk with a newer version is refused.
/// Version 2 added detached values (record version 2) and index entries that locate and check
/// them (checkpoint entries of [`CHECKPOINT_ENTRY_BYTES_V2`] bytes); a version 1 disk keeps
/// being written in version 1, so an older build can still read it.
pub const FORMAT_VERSION: u32 = 2;
/// The first format version whose disks hold detached values.
pub const FORMAT_VERSION_DETACHED: u32 = 2;

/// Superblock magic.
pub const SUPERBLOCK_MAGIC: [u8; 8] = *b"SHINGLE\0";
/// Bytes of an encoded superblock (fits in the smallest block size, 512).
pub const SUPERBLOCK_BYTES: usize = 128;
/// Copies of the superblock at the start of zone 0, one per block.
pub const SUPERBLOCK_COPIES: usize = 2;

/// Record magic ("SHRC").
pub const RECORD_MAGIC: u32 = u32::from_le_bytes(*b"SHRC");
/// Record format version of a record whose value follows its header.
pub const RECORD_VERSION: u8 = 1;
/// Record format version of a block whose value is detached: block-aligned later in the same
/// batch, at the offset the header's `value_at` field gives (from the record's start).
pub const RECORD_VERSION_DETACHED: u8 = 2;
/// Bytes of a record header.
pub const RECORD_HEADER_BYTES: usize = 64;
/// Records start at multiples of this within a batch.
pub const RECORD_ALIGN_BYTES: usize = 8;
/// Keys are 32 bytes (typically a content hash).
pub const KEY_BYTES: usize = 32;
/// Largest value the format can describe (the configured cap is at most this).
pub const VALUE_BYTES_FORMAT_MAX: u32 = 1 << 30;

/// Checkpoint header magic.
pub const CHECKPOINT_MAGIC: [u8; 8] = *b"SHCKPT\0\0";
/// Bytes of the encoded checkpoint header (padded to a block on disk).
pub const CHECKPOINT_HEADER_BYTES: usize = 96;
/// Bytes per index entry (by tag) in a version 1 checkpoint body.
pub const CHECKPOINT_ENTRY_BYTES: usize = 20;
/// Bytes per overflow entry (by full key, for keys whose tag collided) in a version 1
/// checkpoint body.
pub const CHECKPOINT_OVERFLOW_BYTES: usize = 44;
/// Bytes per index entry in a version 2 checkpoint body (the location also has the value's
/// check and block).
pub const CHECKPOINT_ENTRY_BYTES_V2: usize = 26;
/// Bytes per overflow entry in a version 2 checkpoint body.
pub const CHECKPOINT_OVERFLOW_BYTES_V2: usize = 50;
/// Bytes per zone state in a checkpoint body.
pub const CHECKPOINT_ZONE_BYTES: usize = 24;

const _: () = assert!(RECORD_HEADER_BYTES % RECORD_ALIGN_BYTES == 0);
const _: () = assert!(SUPERBLOCK_BYTES <= 512);
const _: () = assert!(CHECKPOINT_HEADER_BYTES <= 512);

/// A 32-byte key.
pub type Key = [u8; KEY_BYTES];

/// What went wrong decoding bytes from the disk. Carries the evidence.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("bad magic {found:02x?}: not a shingle {what}")]
    BadMagic { what: &'static str, found: Vec<u8> },
    #[error("{what} has format version {found}, this build reads up to {supported}")]
    NewerVersion { what: &'static str, found: u32, supported: u32 },
    #[error("{what} checksum mismatch: stored {expected:#010x}, computed {got:#010x}")]
    ChecksumMismatch { what: &'static str, expected: u32, got: u32 },
    #[error("{what} is truncated: {len} bytes, needs {needed}")]
    Truncated { what: &'static str, len: usize, needed: usize },
    #[error("{what}: invalid field {field} = {value}")]
    InvalidField { what: &'static str, field: &'static str, value: u64 },
}

/// Result with [`FormatError`].
pub type FormatResult<T> = Result<T, FormatError>;

fn get_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn get_u64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}
fn put_u16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_le_bytes());
}
fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}
fn put_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

fn need(what: &'static str, bytes: &[u8], needed: usize) -> FormatResult<()> {
    if bytes.len() < needed {
        return Err(FormatError::Truncated { what, len: bytes.len(), needed });
    }
    Ok(())
}

/// Checks a fixed-size structure's magic, version and trailing crc32c (over everything before
/// it) before its fields are trusted.
fn check_envelope(what: &'static str, b: &[u8], magic: &[u8; 8], len: usize) -> FormatResult<u32> {
    need(what, b, len)?;
    if b[0..8] != *magic {
        return Err(FormatError::BadMagic { what, found: b[0..8].to_vec() });
    }
    let version = get_u32(b, 8);
    if version > FORMAT_VERSION {
        return Err(FormatError::NewerVersion { what, found: version, supported: FORMAT_VERSION });
    }
    let expected = get_u32(b, len - 4);
    let got = crc32c(&b[..len - 4]);
    if expected != got {
        return Err(FormatError::ChecksumMismatch { what, expected, got });
    }
    Ok(version)
}

// ---------------------------------------------------------------------------------------------
// Superblock

/// What identifies a disk and its layout. Written twice at the start of zone 0 at format time
/// and never again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Superblock {
    /// Format version the disk was formatted with (and is written in).
    pub format_version: u32,
    /// Random identity of this disk.
    pub disk_uuid: [u8; 16],
    /// Format time, Unix milliseconds.
    pub created_unix_ms: u64,
    /// Logical block size the disk was formatted with.
    pub block_bytes: u32,
    /// Zone size.
    pub zone_size_bytes: u64,
    /// Zones in use.
    pub zone_count: u32,
    /// Zones in each of the two checkpoint sets (zones 1.. hold set A, then set B).
    pub checkpoint_zones_per_set: u32,
    /// Seed of the keyed hash that turns keys into index tags.
    pub tag_seed: [u8; 16],
    /// Largest value this disk accepts.
    pub value_bytes_max: u32,
}

impl Superblock {
    /// Whether blocks on this disk may have detached values (format version 2 and later).
    pub fn detaches_values(&self) -> bool {
        self.format_version >= FORMAT_VERSION_DETACHED
    }

    /// First zone of checkpoint set `set` (0 or 1).
    pub fn checkpoint_set_start(&self, set: u32) -> u32 {
        1 + set * self.checkpoint_zones_per_set
    }

    /// First zone that holds log data.
    pub fn first_data_zone(&self) -> u32 {
        1 + 2 * self.checkpoint_zones_per_set
    }

    /// Encodes into `SUPERBLOCK_BYTES` bytes.
    pub fn encode(&self) -> [u8; SUPERBLOCK_BYTES] {
        let mut b = [0u8; SUPERBLOCK_BYTES];
        b[0..8].copy_from_slice(&SUPERBLOCK_MAGIC);
        put_u32(&mut b, 8, self.format_version);
        put_u32(&mut b, 12, SUPERBLOCK_BYTES as u32);
        b[16..32].copy_from_slice(&self.disk_uuid);
        put_u64(&mut b, 32, self.created_unix_ms);
        put_u32(&mut b, 40, self.block_bytes);
        put_u32(&mut b, 44, self.zone_count);
        put_u64(&mut b, 48, self.zone_size_bytes);
        put_u32(&mut b, 56, self.checkpoint_zones_per_set);
        put_u32(&mut b, 60, self.value_bytes_max);
        b[64..80].copy_from_slice(&self.tag_seed);
        let crc = crc32c(&b[..SUPERBLOCK_BYTES - 4]);
        put_u32(&mut b, SUPERBLOCK_BYTES - 4, crc);
        b
    }

    /// Decodes and validates one copy.
    pub fn decode(b: &[u8]) -> FormatResult<Superblock> {
        const WHAT: &str = "superblock";
        let version = check_envelope(WHAT, b, &SUPERBLOCK_MAGIC, SUPERBLOCK_BYTES)?;
        let sb = Superblock {
            format_version: version,
            disk_uuid: b[16..32].try_into().expect("16 bytes"),
            created_unix_ms: get_u64(b, 32),
            block_bytes: get_u32(b, 40),
            zone_count: get_u32(b, 44),
            zone_size_bytes: get_u64(b, 48),
            checkpoint_zones_per_set: get_u32(b, 56),
            value_bytes_max: get_u32(b, 60),
            tag_seed: b[64..80].try_into().expect("16 bytes"),
        };
        let invalid = |field, value| Err(FormatError::InvalidField { what: WHAT, field, value });
        if version == 0 {
            return invalid("format_version", 0);
        }
        if !sb.block_bytes.is_power_of_two() || sb.block_bytes < 512 {
            return invalid("block_bytes", u64::from(sb.block_bytes));
        }
        if sb.zone_size_bytes == 0 || sb.zone_size_bytes % u64::from(sb.block_bytes) != 0 {
            return invalid("zone_size_bytes", sb.zone_size_bytes);
        }
        if sb.checkpoint_zones_per_set == 0 || sb.first_data_zone() >= sb.zone_count {
            return invalid("checkpoint_zones_per_set", u64::from(sb.checkpoint_zones_per_set));
        }
        if sb.value_bytes_max == 0 || sb.value_bytes_max > VALUE_BYTES_FORMAT_MAX {
            return invalid("value_bytes_max", u64::from(sb.value_bytes_max));
        }
        Ok(sb)
    }
}

// ---------------------------------------------------------------------------------------------
// Records

/// What a record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum RecordKind {
    /// A stored value.
    Block = 1,
    /// A delete: the key has no value from this sequence number on.
    Tombstone = 2,
    /// Filler up to the end of a batch's last block; its value is zeroes and is not checked.
    Padding = 3,
    /// The first record of every batch: links the batch to the previous one (see [`BatchInfo`]).
    Batch = 4,
}

impl RecordKind {
    fn from_u8(v: u8) -> Option<RecordKind> {
        match v {
            1 => Some(RecordKind::Block),
            2 => Some(RecordKind::Tombstone),
            3 => Some(RecordKind::Padding),
            4 => Some(RecordKind::Batch),
            _ => None,
        }
    }
}

/// A decoded record header (the chunk checksums that follow it are checked with it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHeader {
    /// Kind.
    pub kind: RecordKind,
    /// Per-disk sequence number (0 for padding).
    pub seq: u64,
    /// Value length in bytes.
    pub value_len: u32,
    /// crc32c of the whole value (what a client verifies end to end).
    pub value_crc: u32,
    /// The key (zeroes for padding and batch records).
    pub key: Key,
    /// For a detached value (record version 2): where the value starts, in bytes from the
    /// record's start (block-aligned on the disk, past the header). 0: the value follows the
    /// header.
    pub value_at: u32,
}

impl RecordHeader {
    /// Whether the value is detached from the header.
    pub fn is_detached(&self) -> bool {
        self.value_at != 0
    }

    /// Bytes the record takes where it is, to the next record (a detached value is counted
    /// where it lies).
    pub fn span_bytes(&self) -> usize {
        if self.kind == RecordKind::Padding {
            RECORD_HEADER_BYTES + self.value_len as usize
        } else if self.is_detached() {
            detached_header_bytes(self.value_len)
        } else {
            record_bytes(self.value_len)
        }
    }

    /// Where the value starts, in bytes from the record's start.
    pub fn value_start(&self) -> usize {
        if self.is_detached() { self.value_at as usize } else { value_offset(self.value_len) }
    }

    /// Bytes from the record's start to the end of everything it has: its span, or the end of
    /// its detached value.
    pub fn extent_bytes(&self) -> usize {
        if self.is_detached() {
            self.value_at as usize + self.value_len as usize
        } else {
            self.span_bytes()
        }
    }
}

/// Bytes a block with a detached value takes where its header is: the header and its chunk
/// checksums, aligned.
pub fn detached_header_bytes(value_len: u32) -> usize {
    value_offset(value_len).next_multiple_of(RECORD_ALIGN_BYTES)
}

/// What the index keeps to verify a detached value read without its header: the crc32c of the
/// key xor the crc32c of the value. A read checks the value and that it is this key's.
pub fn value_check(key: &Key, value_crc: u32) -> u32 {
    crc32c(key) ^ value_crc
}

/// Number of 64 KiB chunks (and chunk checksums) of a value.
pub fn chunk_count(value_len: u32) -> usize {
    (value_len as usize).div_ceil(CHUNK_BYTES)
}

/// Bytes from the record start to the first value byte.
pub fn value_offset(value_len: u32) -> usize {
    RECORD_HEADER_BYTES + 4 * chunk_count(value_len)
}

/// Total bytes a record takes in a batch, including alignment.
pub fn record_bytes(value_len: u32) -> usize {
    (value_offset(value_len) + value_len as usize).next_multiple_of(RECORD_ALIGN_BYTES)
}

/// A value with its checksums, computed once: by the server while it verifies a PUT against
/// the client's crc32c, or by `Store::put`. `chunk_crcs` must be the crc32c of each
/// [`CHUNK_BYTES`] chunk of `value` and `value_crc` the crc32c of all of it.
#[derive(Debug, Clone, Copy)]
pub struct Checksummed<'a> {
    /// The value.
    pub value: &'a [u8],
    /// One crc32c per chunk.
    pub chunk_crcs: &'a [u32],
    /// crc32c of the whole value.
    pub value_crc: u32,
}

impl<'a> Checksummed<'a> {
    /// Checksums `value` in one pass, using `scratch` for the chunk crcs.
    pub fn compute(value: &'a [u8], scratch: &'a mut Vec<u32>) -> Checksummed<'a> {
        let value_crc = ioengine::checksum::chunk_and_whole_crcs(value, scratch);
        Checksummed { value, chunk_crcs: scratch, value_crc }
    }
}

/// Writes a record (header, chunk checksums, value, zeroed alignment padding) into `out`,
/// which must be exactly `record_bytes(value.len())` long; every byte of it is written.
/// Returns the whole-value crc. One pass over the value computes the chunk crcs; the
/// whole-value crc is combined from them.
pub fn encode_record(out: &mut [u8], kind: RecordKind, seq: u64, key: &Key, value: &[u8]) -> u32 {
    let mut crcs = Vec::new();
    let checksummed = Checksummed::compute(value, &mut crcs);
    encode_record_checksummed(out, kind, seq, key, &checksummed)
}

/// [`encode_record`] with checksums computed before (no pass over the value but the copy).
pub fn encode_record_checksummed(
    out: &mut [u8],
    kind: RecordKind,
    seq: u64,
    key: &Key,
    value: &Checksummed<'_>,
) -> u32 {
    assert_eq!(value.chunk_crcs.len(), value.value.len().div_ceil(CHUNK_BYTES), "chunk crcs");
    for (i, crc) in value.chunk_crcs.iter().enumerate() {
        put_u32(out, RECORD_HEADER_BYTES + 4 * i, *crc);
    }
    encode_record_body(out, kind, seq, key, value.value, value.value_crc)
}

/// The rest of a record once its chunk crcs are in place: the value and the header.
fn encode_record_body(
    out: &mut [u8],
    kind: RecordKind,
    seq: u64,
    key: &Key,
    value: &[u8],
    whole: u32,
) -> u32 {
    let value_len = u32::try_from(value.len()).expect("value length checked by the caller");
    assert_eq!(out.len(), record_bytes(value_len), "record buffer size");
    let value_start = value_offset(value_len);
    out[value_start..value_start + value.len()].copy_from_slice(value);
    finish_record(out, kind, seq, key, value_len, whole)
}

/// [`encode_record_checksummed`] for a value already in place: `out` is the record's span
/// (`record_bytes(value_len)` bytes) and holds the value's bytes at `value_offset(value_len)`.
/// Writes the chunk checksums, the alignment padding and the header; the value is not copied.
pub fn encode_record_around_value(
    out: &mut [u8],
    kind: RecordKind,
    seq: u64,
    key: &Key,
    value_len: u32,
    chunk_crcs: &[u32],
    value_crc: u32,
) -> u32 {
    assert_eq!(out.len(), record_bytes(value_len), "record buffer size");
    assert_eq!(chunk_crcs.len(), chunk_count(value_len), "chunk crcs");
    for (i, crc) in chunk_crcs.iter().enumerate() {
        put_u32(out, RECORD_HEADER_BYTES + 4 * i, *crc);
    }
    finish_record(out, kind, seq, key, value_len, value_crc)
}

/// Writes the header of a block whose value is detached (record version 2): `out` is exactly
/// [`detached_header_bytes`] long; the value must be written `value_at` bytes from the
/// record's start (see [`set_value_at`] to move it).
pub fn encode_detached_header(
    out: &mut [u8],
    seq: u64,
    key: &Key,
    value_len: u32,
    chunk_crcs: &[u32],
    value_crc: u32,
    value_at: u32,
) {
    assert_eq!(out.len(), detached_header_bytes(value_len), "detached header size");
    assert_eq!(chunk_crcs.len(), chunk_count(value_len), "chunk crcs");
    assert!(value_len > 0 && value_at as usize >= out.len(), "a detached value follows its header");
    for (i, crc) in chunk_crcs.iter().enumerate() {
        put_u32(out, RECORD_HEADER_BYTES + 4 * i, *crc);
    }
    out[value_offset(value_len)..].fill(0);
    write_header(
        out,
        RECORD_VERSION_DETACHED,
        RecordKind::Block,
        seq,
        key,
        value_len,
        value_crc,
        value_at,
    );
}

/// Sets the `value_at` of a detached header encoded by [`encode_detached_header`] (the batch
/// places values when it is sealed) and its header checksum.
pub fn set_value_at(out: &mut [u8], value_at: u32) {
    assert_eq!(out[4], RECORD_VERSION_DETACHED, "only a detached header has value_at");
    let value_len = get_u32(out, 16);
    assert!(
        value_at as usize >= detached_header_bytes(value_len),
        "a detached value follows its header"
    );
    put_u32(out, 56, value_at);
    let crc = header_crc(out, RecordKind::Block, value_len);
    put_u32(out, 60, crc);
}

/// Zeroes the alignment padding after the value and writes the header.
fn finish_record(
    out: &mut [u8],
    kind: RecordKind,
    seq: u64,
    key: &Key,
    value_len: u32,
    whole: u32,
) -> u32 {
    // Alignment padding (under RECORD_ALIGN_BYTES): the caller's buffer may hold old bytes.
    out[value_offset(value_len) + value_len as usize..].fill(0);
    let value_crc = if kind == RecordKind::Padding { 0 } else { whole };
    write_header(out, RECORD_VERSION, kind, seq, key, value_len, value_crc, 0);
    value_crc
}

/// Writes a padding record covering `out` entirely (at least a header's worth of bytes).
pub fn encode_padding(out: &mut [u8]) {
    assert!(out.len() >= RECORD_HEADER_BYTES && out.len() % RECORD_ALIGN_BYTES == 0);
    let value_len = (out.len() - RECORD_HEADER_BYTES) as u32;
    // Padding carries no chunk checksums: its value is not checked.
    out.fill(0);
    write_header(out, RECORD_VERSION, RecordKind::Padding, 0, &[0; KEY_BYTES], value_len, 0, 0);
}

#[allow(clippy::too_many_arguments, reason = "every header field, written in one place")]
fn write_header(
    out: &mut [u8],
    version: u8,
    kind: RecordKind,
    seq: u64,
    key: &Key,
    value_len: u32,
    value_crc: u32,
    value_at: u32,
) {
    put_u32(out, 0, RECORD_MAGIC);
    out[4] = version;
    out[5] = kind as u8;
    put_u16(out, 6, 0);
    put_u64(out, 8, seq);
    put_u32(out, 16, value_len);
    put_u32(out, 20, value_crc);
    out[24..56].copy_from_slice(key);
    put_u32(out, 56, value_at);
    let crc = header_crc(out, kind, value_len);
    put_u32(out, 60, crc);
}

/// crc32c over the header's first 60 bytes and the chunk checksums that follow.
fn header_crc(b: &[u8], kind: RecordKind, value_len: u32) -> u32 {
    let crc = crc32c(&b[..60]);
    let chunks = if kind == RecordKind::Padding { 0 } else { chunk_count(value_len) };
    crc32c_append(crc, &b[RECORD_HEADER_BYTES..RECORD_HEADER_BYTES + 4 * chunks])
}

/// Bytes needed to decode the header of a record whose first 64 bytes are `head`: the header
/// plus its chunk checksums. Fails on a bad magic, version or kind, or an absurd length.
pub fn header_span(head: &[u8], value_bytes_max: u32) -> FormatResult<usize> {
    const WHAT: &str = "record header";
    need(WHAT, head, RECORD_HEADER_BYTES)?;
    let magic = get_u32(head, 0);
    if magic != RECORD_MAGIC {
        return Err(FormatError::BadMagic { what: WHAT, found: head[0..4].to_vec() });
    }
    if head[4] != RECORD_VERSION && head[4] != RECORD_VERSION_DETACHED {
        return Err(FormatError::NewerVersion {
            what: WHAT,
            found: u32::from(head[4]),
            supported: u32::from(RECORD_VERSION_DETACHED),
        });
    }
    let Some(kind) = RecordKind::from_u8(head[5]) else {
        return Err(FormatError::InvalidField {
            what: WHAT,
            field: "kind",
            value: u64::from(head[5]),
        });
    };
    let value_len = get_u32(head, 16);
    if kind != RecordKind::Padding && value_len > value_bytes_max {
        return Err(FormatError::InvalidField {
            what: WHAT,
            field: "value_len",
            value: u64::from(value_len),
        });
    }
    if head[4] == RECORD_VERSION_DETACHED {
        if kind != RecordKind::Block || value_len == 0 {
            return Err(FormatError::InvalidField {
                what: WHAT,
                field: "kind",
                value: u64::from(head[5]),
            });
        }
        let value_at = get_u32(head, 56);
        if (value_at as usize) < detached_header_bytes(value_len)
            || value_at as usize % RECORD_ALIGN_BYTES != 0
        {
            return Err(FormatError::InvalidField {
                what: WHAT,
                field: "value_at",
                value: u64::from(value_at),
            });
        }
    }
    Ok(if kind == RecordKind::Padding { RECORD_HEADER_BYTES } else { value_offset(value_len) })
}

/// Decodes a record header and verifies its checksum (which covers the chunk checksums).
/// `b` starts at the record and holds at least `header_span` bytes.
pub fn decode_header(b: &[u8], value_bytes_max: u32) -> FormatResult<RecordHeader> {
    const WHAT: &str = "record header";
    let span = header_span(b, value_bytes_max)?;
    need(WHAT, b, span)?;
    let kind = RecordKind::from_u8(b[5]).expect("checked by header_span");
    let value_len = get_u32(b, 16);
    let expected = get_u32(b, 60);
    let got = header_crc(b, kind, value_len);
    if expected != got {
        return Err(FormatError::ChecksumMismatch { what: WHAT, expected, got });
    }
    Ok(RecordHeader {
        kind,
        seq: get_u64(b, 8),
        value_len,
        value_crc: get_u32(b, 20),
        key: b[24..56].try_into().expect("32 bytes"),
        value_at: if b[4] == RECORD_VERSION_DETACHED { get_u32(b, 56) } else { 0 },
    })
}

/// The stored checksum of chunk `index` of a record whose header starts `b`.
pub fn chunk_crc(b: &[u8], index: usize) -> u32 {
    get_u32(b, RECORD_HEADER_BYTES + 4 * index)
}

/// Verifies chunk `index` (the bytes `chunk`) against the checksum stored after the header.
pub fn verify_chunk(header_bytes: &[u8], index: usize, chunk: &[u8]) -> FormatResult<()> {
    let expected = chunk_crc(header_bytes, index);
    let got = crc32c(chunk);
    if expected != got {
        return Err(FormatError::ChecksumMismatch { what: "value chunk", expected, got });
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Batches

/// The value of a [`RecordKind::Batch`] record, the first record of every batch. A batch is
/// one aligned write: this record, the data records, and padding to the end of its last block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchInfo {
    /// Bytes of the batch (a multiple of the block size), from this record's start.
    pub batch_bytes: u64,
    /// Zone offset up to which every earlier batch had been written durably and acknowledged
    /// when this batch was sealed. Recovery uses it to tell a torn, never-acknowledged region
    /// (skipped silently) from damage to acknowledged data (reported).
    pub acked_end: u64,
    /// Data records in the batch (padding not counted).
    pub record_count: u32,
}

/// The key field of a batch record: the disk's uuid, then zeroes. Recovery accepts only
/// batches of this disk's current format.
pub fn batch_key(disk_uuid: &[u8; 16]) -> Key {
    let mut key = [0u8; KEY_BYTES];
    key[..16].copy_from_slice(disk_uuid);
    key
}

/// Bytes of an encoded [`BatchInfo`].
pub const BATCH_INFO_BYTES: usize = 24;

impl BatchInfo {
    /// Encodes the value of the batch record.
    pub fn encode(&self) -> [u8; BATCH_INFO_BYTES] {
        let mut b = [0u8; BATCH_INFO_BYTES];
        put_u64(&mut b, 0, self.batch_bytes);
        put_u64(&mut b, 8, self.acked_end);
        put_u32(&mut b, 16, self.record_count);
        b
    }

    /// Decodes the value of a batch record.
    pub fn decode(b: &[u8]) -> FormatResult<BatchInfo> {
        need("batch record", b, BATCH_INFO_BYTES)?;
        Ok(BatchInfo {
            batch_bytes: get_u64(b, 0),
            acked_end: get_u64(b, 8),
            record_count: get_u32(b, 16),
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Checkpoints

/// The header of an index checkpoint, at the start of a checkpoint set's first zone. The body
/// (zone states, then index entries sorted by tag, then overflow entries) follows from the next
/// block on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointHeader {
    /// Format version of the checkpoint (the disk's): the size of its entries.
    pub format_version: u32,
    /// Monotonic checkpoint number; the newest valid one wins.
    pub generation: u64,
    /// Every record with a sequence number ≤ this is reflected in the checkpoint.
    pub covered_seq: u64,
    /// Next sequence number to assign after restart (before the tail scan raises it).
    pub next_seq: u64,
    /// Zone states in the body.
    pub zone_count: u32,
    /// Index entries (by tag) in the body.
    pub entry_count: u64,
    /// Overflow entries (by key) in the body.
    pub overflow_count: u32,
    /// Body length in bytes.
    pub body_bytes: u64,
    /// crc32c of the body.
    pub body_crc: u32,
    /// Unix milliseconds when written.
    pub written_unix_ms: u64,
    /// Written at a clean shutdown: no tail scan is needed beyond it.
    pub clean: bool,
    /// The disk's uuid: a checkpoint of an earlier format of the device is ignored.
    pub disk_uuid: [u8; 16],
}

impl CheckpointHeader {
    /// Encodes into `CHECKPOINT_HEADER_BYTES` bytes.
    pub fn encode(&self) -> [u8; CHECKPOINT_HEADER_BYTES] {
        let mut b = [0u8; CHECKPOINT_HEADER_BYTES];
        b[0..8].copy_from_slice(&CHECKPOINT_MAGIC);
        put_u32(&mut b, 8, self.format_version);
        put_u32(&mut b, 12, self.zone_count);
        put_u64(&mut b, 16, self.generation);
        put_u64(&mut b, 24, self.covered_seq);
        put_u64(&mut b, 32, self.next_seq);
        put_u64(&mut b, 40, self.entry_count);
        put_u64(&mut b, 48, self.body_bytes);
        put_u32(&mut b, 56, self.body_crc);
        put_u32(&mut b, 60, u32::from(self.clean));
        put_u64(&mut b, 64, self.written_unix_ms);
        put_u32(&mut b, 72, self.overflow_count);
        b[76..92].copy_from_slice(&self.disk_uuid);
        let crc = crc32c(&b[..CHECKPOINT_HEADER_BYTES - 4]);
        put_u32(&mut b, CHECKPOINT_HEADER_BYTES - 4, crc);
        b
    }

    /// Decodes and validates a checkpoint header.
    pub fn decode(b: &[u8]) -> FormatResult<CheckpointHeader> {
        const WHAT: &str = "checkpoint header";
        let format_version = check_envelope(WHAT, b, &CHECKPOINT_MAGIC, CHECKPOINT_HEADER_BYTES)?;
        if format_version == 0 {
            return Err(FormatError::InvalidField {
                what: WHAT,
                field: "format_version",
                value: 0,
            });
        }
        let header = CheckpointHeader {
            format_version,
            zone_count: get_u32(b, 12),
            generation: get_u64(b, 16),
            covered_seq: get_u64(b, 24),
            next_seq: get_u64(b, 32),
            entry_count: get_u64(b, 40),
            body_bytes: get_u64(b, 48),
            body_crc: get_u32(b, 56),
            clean: get_u32(b, 60) != 0,
            written_unix_ms: get_u64(b, 64),
            overflow_count: get_u32(b, 72),
            disk_uuid: b[76..92].try_into().expect("16 bytes"),
        };
        // Counts come from the disk: add them up without overflowing (found by the fuzzer).
        let expected_body = (u64::from(header.zone_count) * CHECKPOINT_ZONE_BYTES as u64)
            .checked_add(
                header.entry_count.saturating_mul(checkpoint_entry_bytes(format_version) as u64),
            )
            .and_then(|sum| {
                sum.checked_add(
                    u64::from(header.overflow_count)
                        * checkpoint_overflow_bytes(format_version) as u64,
                )
            });
        if expected_body != Some(header.body_bytes) {
            return Err(FormatError::InvalidField {
                what: WHAT,
                field: "body_bytes",
                value: header.body_bytes,
            });
        }
        Ok(header)
    }
}

/// One data zone's state in a checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ZoneState {
    /// Zone index.
    pub zone: u32,
    /// Bytes of valid log from the zone start (where the next batch goes).
    pub write_offset: u64,
    /// Bytes of live records in the zone (for garbage collection).
    pub live_bytes: u64,
    /// State flags: [`ZONE_STATE_FINISHED`].
    pub flags: u32,
}

/// The zone takes no more writes.
pub const ZONE_STATE_FINISHED: u32 = 1;

impl ZoneState {
    /// Appends the encoding to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let mut b = [0u8; CHECKPOINT_ZONE_BYTES];
        put_u32(&mut b, 0, self.zone);
        put_u32(&mut b, 4, self.flags);
        put_u64(&mut b, 8, self.write_offset);
        put_u64(&mut b, 16, self.live_bytes);
        out.extend_from_slice(&b);
    }

    /// Decodes one zone state.
    pub fn decode(b: &[u8]) -> FormatResult<ZoneState> {
        need("checkpoint zone state", b, CHECKPOINT_ZONE_BYTES)?;
        Ok(ZoneState {
            zone: get_u32(b, 0),
            flags: get_u32(b, 4),
            write_offset: get_u64(b, 8),
            live_bytes: get_u64(b, 16),
        })
    }
}

/// Where a live block is: what the in-memory index keeps per key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Location {
    /// Zone of the record.
    pub zone: u32,
    /// Byte offset of the record in its zone.
    pub offset: u32,
    /// Value length.
    pub value_len: u32,
    /// For a detached value, [`value_check`] of the key and value; 0 otherwise.
    pub check: u32,
    /// For a detached value, where it starts: this many blocks after the start of the block
    /// holding the record's first byte. 0: the value follows the header.
    pub value_blocks: u16,
}

/// Bytes of an encoded [`Location`] in a checkpoint of `format_version`.
fn location_bytes(format_version: u32) -> usize {
    if format_version >= FORMAT_VERSION_DETACHED { 18 } else { 12 }
}

/// Bytes per index entry in a checkpoint of `format_version`.
pub fn checkpoint_entry_bytes(format_version: u32) -> usize {
    8 + location_bytes(format_version)
}

/// Bytes per overflow entry in a checkpoint of `format_version`.
pub fn checkpoint_overflow_bytes(format_version: u32) -> usize {
    KEY_BYTES + location_bytes(format_version)
}

const _: () = assert!(CHECKPOINT_ENTRY_BYTES == 8 + 12 && CHECKPOINT_ENTRY_BYTES_V2 == 8 + 18);
const _: () =
    assert!(CHECKPOINT_OVERFLOW_BYTES == 32 + 12 && CHECKPOINT_OVERFLOW_BYTES_V2 == 32 + 18);

impl Location {
    /// A record whose value follows its header.
    pub fn inline(zone: u32, offset: u32, value_len: u32) -> Location {
        Location { zone, offset, value_len, check: 0, value_blocks: 0 }
    }

    /// The location of a record at zone offset `offset` with `header`, the key `key`, on a
    /// disk of `block_bytes` blocks. None when a detached value is not block-aligned or lies
    /// further from its record than the index can say (a record this store did not write).
    pub fn of_record(
        zone: u32,
        offset: u64,
        header: &RecordHeader,
        block_bytes: u64,
    ) -> Option<Location> {
        let value = (&header.key, header.value_crc, header.value_at);
        Location::of(zone, offset, header.value_len, value, block_bytes)
    }

    /// The location of a block at zone offset `offset` whose value of `value_len` bytes has
    /// (key, crc32c, `value_at`: 0 when it follows the header), as [`Location::of_record`].
    pub fn of(
        zone: u32,
        offset: u64,
        value_len: u32,
        (key, value_crc, value_at): (&Key, u32, u32),
        block_bytes: u64,
    ) -> Option<Location> {
        let mut location = Location::inline(zone, u32::try_from(offset).ok()?, value_len);
        if value_at != 0 {
            location.value_blocks = detached_value_blocks(offset, value_at, block_bytes)?;
            location.check = value_check(key, value_crc);
        }
        Some(location)
    }

    /// Zone offset of a detached value on a disk of `block_bytes` blocks.
    pub fn detached_value_offset(&self, block_bytes: u64) -> Option<u64> {
        (self.value_blocks != 0).then(|| {
            u64::from(self.offset) / block_bytes * block_bytes
                + u64::from(self.value_blocks) * block_bytes
        })
    }

    fn encode_into(&self, b: &mut [u8], format_version: u32) {
        put_u32(b, 0, self.zone);
        put_u32(b, 4, self.offset);
        put_u32(b, 8, self.value_len);
        if format_version >= FORMAT_VERSION_DETACHED {
            put_u32(b, 12, self.check);
            put_u16(b, 16, self.value_blocks);
        }
    }

    fn decode(b: &[u8], format_version: u32) -> Location {
        let mut location = Location::inline(get_u32(b, 0), get_u32(b, 4), get_u32(b, 8));
        if format_version >= FORMAT_VERSION_DETACHED {
            location.check = get_u32(b, 12);
            location.value_blocks = u16::from_le_bytes([b[16], b[17]]);
        }
        location
    }
}

/// [`Location::value_blocks`] of a detached value `value_at` bytes after its record at zone
/// offset `record_offset`: None unless it is block-aligned and within `u16::MAX` blocks.
pub fn detached_value_blocks(record_offset: u64, value_at: u32, block_bytes: u64) -> Option<u16> {
    let value = record_offset + u64::from(value_at);
    if value % block_bytes != 0 {
        return None;
    }
    let blocks = (value - record_offset / block_bytes * block_bytes) / block_bytes;
    u16::try_from(blocks).ok().filter(|&b| b > 0)
}

/// One live block in a checkpoint, by its index tag (a keyed hash of the key).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointEntry {
    /// The key's tag.
    pub tag: u64,
    /// Where its record is.
    pub location: Location,
}

impl CheckpointEntry {
    /// Appends the encoding in a checkpoint of `format_version` to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>, format_version: u32) {
        let mut b = [0u8; CHECKPOINT_ENTRY_BYTES_V2];
        let b = &mut b[..checkpoint_entry_bytes(format_version)];
        put_u64(b, 0, self.tag);
        self.location.encode_into(&mut b[8..], format_version);
        out.extend_from_slice(b);
    }

    /// Decodes one entry of a checkpoint of `format_version`.
    pub fn decode(b: &[u8], format_version: u32) -> FormatResult<CheckpointEntry> {
        need("checkpoint entry", b, checkpoint_entry_bytes(format_version))?;
        Ok(CheckpointEntry {
            tag: get_u64(b, 0),
            location: Location::decode(&b[8..], format_version),
        })
    }
}

/// One live block whose tag collided with another key's, by full key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverflowEntry {
    /// The key.
    pub key: Key,
    /// Where its record is.
    pub location: Location,
}

impl OverflowEntry {
    /// Appends the encoding in a checkpoint of `format_version` to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>, format_version: u32) {
        let mut b = [0u8; CHECKPOINT_OVERFLOW_BYTES_V2];
        let b = &mut b[..checkpoint_overflow_bytes(format_version)];
        b[0..32].copy_from_slice(&self.key);
        self.location.encode_into(&mut b[32..], format_version);
        out.extend_from_slice(b);
    }

    /// Decodes one entry of a checkpoint of `format_version`.
    pub fn decode(b: &[u8], format_version: u32) -> FormatResult<OverflowEntry> {
        need("checkpoint overflow entry", b, checkpoint_overflow_bytes(format_version))?;
        Ok(OverflowEntry {
            key: b[0..32].try_into().expect("32 bytes"),
            location: Location::decode(&b[32..], format_version),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn superblock() -> Superblock {
        Superblock {
            format_version: FORMAT_VERSION,
            disk_uuid: [7; 16],
            created_unix_ms: 1_790_000_000_000,
            block_bytes: 4096,
            zone_size_bytes: 64 << 20,
            zone_count: 16,
            checkpoint_zones_per_set: 1,
            tag_seed: [9; 16],
            value_bytes_max: 16 << 20,
        }
    }

    #[test]
    fn a_record_encoded_over_old_bytes_equals_one_encoded_over_zeroes() {
        for len in [1usize, 7, 4096, 65_536, 65_537, 200_001] {
            let value: Vec<u8> = (0..len).map(|i| (i * 13 + 5) as u8).collect();
            let size = record_bytes(len as u32);
            let mut zeroed = vec![0u8; size];
            let mut dirty = vec![0xA5u8; size];
            let a = encode_record(&mut zeroed, RecordKind::Block, 9, &[4; 32], &value);
            let b = encode_record(&mut dirty, RecordKind::Block, 9, &[4; 32], &value);
            assert_eq!(a, b);
            assert_eq!(zeroed, dirty, "value length {len}");
        }
    }

    #[test]
    fn superblock_round_trips_and_rejects_damage() {
        let sb = superblock();
        let bytes = sb.encode();
        assert_eq!(Superblock::decode(&bytes).unwrap(), sb);
        let mut flipped = bytes;
        flipped[40] ^= 1;
        assert!(matches!(Superblock::decode(&flipped), Err(FormatError::ChecksumMismatch { .. })));
        let mut newer = bytes;
        put_u32(&mut newer, 8, FORMAT_VERSION + 1);
        assert!(matches!(
            Superblock::decode(&newer),
            Err(FormatError::NewerVersion { found, .. }) if found == FORMAT_VERSION + 1
        ));
        let v1 = Superblock { format_version: 1, ..sb.clone() };
        let decoded = Superblock::decode(&v1.encode()).unwrap();
        assert_eq!(decoded, v1);
        assert!(!decoded.detaches_values() && sb.detaches_values());
        assert!(matches!(Superblock::decode(&[0u8; 128]), Err(FormatError::BadMagic { .. })));
        assert!(matches!(Superblock::decode(&bytes[..100]), Err(FormatError::Truncated { .. })));
    }

    #[test]
    fn record_round_trips_with_chunk_checksums() {
        let value: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
        let len = record_bytes(value.len() as u32);
        let mut out = vec![0u8; len];
        let crc = encode_record(&mut out, RecordKind::Block, 42, &[3; 32], &value);
        assert_eq!(crc, crc32c(&value));
        let header = decode_header(&out, 16 << 20).unwrap();
        assert_eq!(header.kind, RecordKind::Block);
        assert_eq!(header.seq, 42);
        assert_eq!(header.value_len, 200_000);
        assert_eq!(header.key, [3; 32]);
        let start = value_offset(200_000);
        for (i, chunk) in out[start..start + value.len()].chunks(CHUNK_BYTES).enumerate() {
            verify_chunk(&out, i, chunk).unwrap();
        }
        out[start + 70_000] ^= 0x10;
        let chunk1 = &out[start + CHUNK_BYTES..start + 2 * CHUNK_BYTES];
        assert!(matches!(verify_chunk(&out, 1, chunk1), Err(FormatError::ChecksumMismatch { .. })));
        // A flipped chunk checksum is caught by the header checksum.
        out[RECORD_HEADER_BYTES] ^= 1;
        assert!(matches!(decode_header(&out, 16 << 20), Err(FormatError::ChecksumMismatch { .. })));
    }

    #[test]
    fn oversized_lengths_are_rejected_before_reading_further() {
        let mut out = vec![0u8; record_bytes(10)];
        encode_record(&mut out, RecordKind::Block, 1, &[0; 32], &[1; 10]);
        assert!(matches!(
            header_span(&out, 5),
            Err(FormatError::InvalidField { field: "value_len", .. })
        ));
        assert!(decode_header(&out[..40], 100).is_err());
    }

    #[test]
    fn padding_is_a_valid_record_of_any_aligned_size() {
        let mut out = vec![0xAAu8; 4000];
        encode_padding(&mut out);
        let header = decode_header(&out, 16).unwrap();
        assert_eq!(header.kind, RecordKind::Padding);
        assert_eq!(header.value_len as usize, 4000 - RECORD_HEADER_BYTES);
        assert!(out[RECORD_HEADER_BYTES..].iter().all(|&b| b == 0));
    }

    #[test]
    fn checkpoint_header_round_trips() {
        let h = CheckpointHeader {
            format_version: 1,
            generation: 3,
            covered_seq: 1000,
            next_seq: 1001,
            zone_count: 13,
            entry_count: 5,
            overflow_count: 1,
            body_bytes: 13 * 24 + 5 * 20 + 44,
            body_crc: 0xDEAD_BEEF,
            written_unix_ms: 5,
            clean: true,
            disk_uuid: [4; 16],
        };
        assert_eq!(CheckpointHeader::decode(&h.encode()).unwrap(), h);
        let v2 = CheckpointHeader { format_version: 2, body_bytes: 13 * 24 + 5 * 26 + 50, ..h };
        assert_eq!(CheckpointHeader::decode(&v2.encode()).unwrap(), v2);
        assert!(
            CheckpointHeader::decode(&CheckpointHeader { format_version: 2, ..h }.encode())
                .is_err()
        );
        let mut bad = h;
        bad.body_bytes += 1;
        assert!(CheckpointHeader::decode(&bad.encode()).is_err());
        // Regression (fuzzer): counts whose byte total overflows u64 are rejected, not a panic.
        let mut huge = h;
        huge.entry_count = 0x1d1d_1d1d_1d1d_1d1d;
        huge.zone_count = 0x00ae_aeae;
        huge.body_bytes = u64::MAX;
        assert!(matches!(
            CheckpointHeader::decode(&huge.encode()),
            Err(FormatError::InvalidField { field: "body_bytes", .. })
        ));
    }

    #[test]
    fn a_detached_header_round_trips_and_its_value_at_is_checked() {
        let value = vec![0x5Au8; 8192];
        let mut crcs = Vec::new();
        let checksummed = Checksummed::compute(&value, &mut crcs);
        let mut out = vec![0xEEu8; detached_header_bytes(8192)];
        encode_detached_header(
            &mut out,
            7,
            &[2; 32],
            8192,
            checksummed.chunk_crcs,
            checksummed.value_crc,
            4096,
        );
        let header = decode_header(&out, 1 << 20).unwrap();
        assert_eq!(header.value_at, 4096);
        assert!(header.is_detached());
        assert_eq!(header.span_bytes(), 72);
        assert_eq!(header.value_crc, crc32c(&value));
        set_value_at(&mut out, 8192 + 24);
        assert_eq!(decode_header(&out, 1 << 20).unwrap().value_at, 8192 + 24);
        // A value_at that is not past the header, or not aligned, does not decode.
        for bad in [0u32, 64, 8192 + 20] {
            let mut b = out.clone();
            put_u32(&mut b, 56, bad);
            let crc = header_crc(&b, RecordKind::Block, 8192);
            put_u32(&mut b, 60, crc);
            assert!(matches!(
                decode_header(&b, 1 << 20),
                Err(FormatError::InvalidField { field: "value_at", .. })
            ));
        }
        // Any other bit flip is a checksum mismatch.
        let mut b = out.clone();
        b[57] ^= 1;
        assert!(matches!(decode_header(&b, 1 << 20), Err(FormatError::ChecksumMismatch { .. })));
    }

    #[test]
    fn a_location_knows_its_detached_value() {
        let header = RecordHeader {
            kind: RecordKind::Block,
            seq: 1,
            value_len: 4096,
            value_crc: 0x1234_5678,
            key: [1; 32],
            value_at: 4096 - 200 + 8192,
        };
        let location = Location::of_record(3, 4096 + 200, &header, 4096).unwrap();
        assert_eq!(location.value_blocks, 3);
        assert_eq!(location.detached_value_offset(4096), Some(4096 * 4));
        assert_eq!(location.check, value_check(&[1; 32], 0x1234_5678));
        let misaligned = RecordHeader { value_at: 4096, ..header };
        assert_eq!(Location::of_record(3, 4096 + 200, &misaligned, 4096), None);
        let inline = RecordHeader { value_at: 0, ..header };
        assert_eq!(
            Location::of_record(3, 200, &inline, 4096),
            Some(Location::inline(3, 200, 4096))
        );
        for version in [1, 2] {
            let mut out = Vec::new();
            CheckpointEntry { tag: 9, location }.encode_into(&mut out, version);
            assert_eq!(out.len(), checkpoint_entry_bytes(version));
            let back = CheckpointEntry::decode(&out, version).unwrap().location;
            let expected = if version == 1 { Location::inline(3, 4296, 4096) } else { location };
            assert_eq!(back, expected);
        }
    }
}
