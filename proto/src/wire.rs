//! The frame format, version 1: the fixed 64-byte header, opcodes, flags, statuses, the
//! wire-level limits, and the incremental decoder. This module is the only place that knows the
//! header's byte layout; docs/PROTOCOL.md describes the same thing for humans, and the golden
//! tests below pin it. Message bodies (the meta section) are in `messages`.
//!
//! A frame is `header (64 bytes) | meta (meta_len bytes) | data (data_len bytes)`, all integers
//! little-endian. Both lengths are in the header, so a reader knows the whole frame's size from
//! the first 64 bytes and can receive the data (a PUT's value, a GET's bytes) straight into a
//! buffer of exactly the right size. The decoder is a pure function over the bytes received so
//! far: it asks for more, returns a validated header, or returns an [`Error`] whose
//! [`Error::disposition`] says whether to close the connection or answer with a status. It
//! reads only the fixed header and never allocates, so no length can make it allocate.

use crate::error::{Error, Result};
use crate::messages;

/// First four bytes of every frame.
pub const FRAME_MAGIC: [u8; 4] = *b"SHNP";
/// The frame version this build writes and reads. Bytes 0..8 of the header (magic, version,
/// opcode, flags) keep their meaning in every version; the rest may change with the version.
pub const PROTOCOL_VERSION: u8 = 1;
/// Bytes of the fixed header.
pub const HEADER_BYTES: usize = 64;
/// Bytes of a key (typically a content hash).
pub const KEY_BYTES: usize = 32;
/// A key.
pub type Key = [u8; KEY_BYTES];
/// The all-zero key, carried by frames whose opcode has no key.
pub const KEY_NONE: Key = [0; KEY_BYTES];
/// Request id of a response that answers no request: a notice the server sends before it
/// closes a connection (BUSY over the connection limit, SHUTTING_DOWN). Requests never use it.
pub const REQUEST_ID_NOTICE: u32 = 0;
/// Disk id that asks DISK_STATUS for every disk. Not a valid id for a disk.
pub const DISK_ID_ALL: u16 = u16::MAX;

// Header layout: offsets of each field (sizes in the comments).
const MAGIC_AT: usize = 0; // 4
const VERSION_AT: usize = 4; // 1
const OPCODE_AT: usize = 5; // 1
const FLAGS_AT: usize = 6; // 2
const REQUEST_ID_AT: usize = 8; // 4
const DISK_ID_AT: usize = 12; // 2
const STATUS_AT: usize = 14; // 2
const META_LEN_AT: usize = 16; // 4
const DATA_LEN_AT: usize = 20; // 4
const KEY_AT: usize = 24; // 32
const META_CRC_AT: usize = 56; // 4
const HEADER_CRC_AT: usize = 60; // 4

const _: () = assert!(KEY_AT + KEY_BYTES == META_CRC_AT);
const _: () = assert!(HEADER_CRC_AT + 4 == HEADER_BYTES);

// ---------------------------------------------------------------------------------------------
// Limits that are part of the format. Connection counts and timeouts are server configuration.

/// Largest data section (a PUT's value, a GET's bytes) the format can describe: 1 GiB. A header
/// with a larger data length is malformed and its connection is closed. Memory: none by
/// itself; the configured [`Limits::value_bytes_max`] bounds what a reader allocates.
pub const VALUE_BYTES_FORMAT_MAX: u32 = 1 << 30;
/// Default cap on a value: 16 MiB (the design brief). Range 1..=[`VALUE_BYTES_FORMAT_MAX`].
/// Memory: a server holds at most one buffer of this size per PUT or GET in flight (from its
/// per-core pool); a client one per GET in flight.
pub const VALUE_BYTES_MAX_DEFAULT: u32 = 16 << 20;
/// Largest meta section of any frame: 512 KiB. A header with a larger meta length is malformed
/// and its connection is closed. Each opcode has a much tighter bound (see
/// [`REQUEST_META_BYTES_MAX`]), checked before anything is read into memory.
pub const META_BYTES_MAX: u32 = 512 << 10;
/// Largest meta section of any request: a HELLO with an authentication proof (72 bytes). A
/// server can receive every request meta into a fixed buffer of this size.
pub const REQUEST_META_BYTES_MAX: u32 = messages::HELLO_REQUEST_AUTH_BYTES as u32;
/// Largest frame the format can describe.
pub const FRAME_BYTES_FORMAT_MAX: u64 =
    HEADER_BYTES as u64 + META_BYTES_MAX as u64 + VALUE_BYTES_FORMAT_MAX as u64;
/// Room in a frame around its value (header and meta). A frame limit is at least the value cap
/// plus this, so that the largest PUT and GET fit; by default it is exactly that.
pub const FRAME_HEADROOM_BYTES: u64 = 64 << 10;
/// Smallest frame limit: 1 MiB, room for every frame without a value (the largest is a full
/// LIST page, 320 101 bytes).
pub const FRAME_BYTES_LIMIT_MIN: u64 = 1 << 20;
/// Most keys in one LIST page. Memory: a page is at most 320 000 bytes of keys (plus 37 bytes),
/// built by the server and held by the client while it reads the page.
pub const LIST_KEYS_MAX: u32 = 10_000;
/// Longest LIST cursor. Cursors are opaque to clients; the server chooses their content.
pub const LIST_CURSOR_BYTES_MAX: usize = 32;
/// Most disks in a HELLO topology or a DISK_STATUS answer. Memory: 40 bytes per disk in HELLO,
/// 64 in DISK_STATUS (at most 64 KiB).
pub const DISKS_MAX: u16 = 1024;
/// Longest error message (UTF-8) in an error response. Longer messages are cut at a character
/// boundary when encoded.
pub const ERROR_MESSAGE_BYTES_MAX: usize = 256;
/// Default number of requests a server reads from one connection before it has answered them:
/// 128. The server announces its value in HELLO; past it, it stops reading the connection until
/// an answer has been sent (TCP flow control), it does not fail requests. Range
/// 1..=[`REQUESTS_IN_FLIGHT_LIMIT`]. Memory: a request's state is a header and at most
/// [`REQUEST_META_BYTES_MAX`] bytes of meta; value buffers come from the server's per-core pool,
/// which bounds the total across connections.
pub const REQUESTS_IN_FLIGHT_MAX_DEFAULT: u32 = 128;
/// Largest configurable [`REQUESTS_IN_FLIGHT_MAX_DEFAULT`].
pub const REQUESTS_IN_FLIGHT_LIMIT: u32 = 4096;

const _: () = assert!(VALUE_BYTES_MAX_DEFAULT <= VALUE_BYTES_FORMAT_MAX);
const _: () = assert!(REQUEST_META_BYTES_MAX <= META_BYTES_MAX);
const _: () = assert!(messages::LIST_RESPONSE_BYTES_MAX <= META_BYTES_MAX as usize);
const _: () = assert!(messages::HELLO_RESPONSE_BYTES_MAX <= META_BYTES_MAX as usize);
const _: () = assert!(messages::DISK_STATUS_RESPONSE_BYTES_MAX <= META_BYTES_MAX as usize);
const _: () = assert!(ERROR_MESSAGE_BYTES_MAX <= META_BYTES_MAX as usize);
const _: () = assert!((DISKS_MAX as u32) < DISK_ID_ALL as u32);
const _: () = assert!(REQUESTS_IN_FLIGHT_MAX_DEFAULT <= REQUESTS_IN_FLIGHT_LIMIT);
const _: () = assert!(HEADER_BYTES as u64 + REQUEST_META_BYTES_MAX as u64 <= FRAME_HEADROOM_BYTES);
const _: () =
    assert!(HEADER_BYTES as u64 + messages::GET_RESPONSE_BYTES as u64 <= FRAME_HEADROOM_BYTES);
const _: () = assert!(
    HEADER_BYTES as u64 + messages::LIST_RESPONSE_BYTES_MAX as u64 <= FRAME_BYTES_LIMIT_MIN
);
const _: () =
    assert!(VALUE_BYTES_FORMAT_MAX as u64 + FRAME_HEADROOM_BYTES <= FRAME_BYTES_FORMAT_MAX);
// Frame sizes fit in usize on every supported target, so `as usize` on them is lossless.
const _: () = assert!(FRAME_BYTES_FORMAT_MAX <= usize::MAX as u64);

/// The default frame limit for a value cap: the cap plus [`FRAME_HEADROOM_BYTES`], at least
/// [`FRAME_BYTES_LIMIT_MIN`] (16 MiB + 64 KiB for the default cap).
pub const fn frame_bytes_max_default(value_bytes_max: u32) -> u64 {
    let bytes = value_bytes_max as u64 + FRAME_HEADROOM_BYTES;
    if bytes < FRAME_BYTES_LIMIT_MIN { FRAME_BYTES_LIMIT_MIN } else { bytes }
}

/// The limits a decoder enforces beyond the format's own: the node's configuration
/// (`store.value_bytes_max`, `server.max_frame_bytes`), or what a node announced in HELLO.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    value_bytes_max: u32,
    frame_bytes_max: u64,
}

impl Limits {
    /// Limits with a value cap of `value_bytes_max` (1..=[`VALUE_BYTES_FORMAT_MAX`]) and a frame
    /// limit of `frame_bytes_max` (at least `value_bytes_max` + [`FRAME_HEADROOM_BYTES`] and
    /// [`FRAME_BYTES_LIMIT_MIN`], at most [`FRAME_BYTES_FORMAT_MAX`]).
    pub fn new(value_bytes_max: u32, frame_bytes_max: u64) -> Result<Limits> {
        if value_bytes_max == 0 || value_bytes_max > VALUE_BYTES_FORMAT_MAX {
            return Err(Error::BadLimit {
                name: "value_bytes_max",
                value: value_bytes_max.into(),
                min: 1,
                max: VALUE_BYTES_FORMAT_MAX.into(),
            });
        }
        let frame_min = frame_bytes_max_default(value_bytes_max);
        if frame_bytes_max < frame_min || frame_bytes_max > FRAME_BYTES_FORMAT_MAX {
            return Err(Error::BadLimit {
                name: "frame_bytes_max",
                value: frame_bytes_max,
                min: frame_min,
                max: FRAME_BYTES_FORMAT_MAX,
            });
        }
        Ok(Limits { value_bytes_max, frame_bytes_max })
    }

    /// Limits with a value cap of `value_bytes_max` and the default frame limit for it.
    pub fn with_value_bytes_max(value_bytes_max: u32) -> Result<Limits> {
        Limits::new(value_bytes_max, frame_bytes_max_default(value_bytes_max))
    }

    /// The format's own limits: what an encoder checks its output against.
    pub const fn format_max() -> Limits {
        Limits { value_bytes_max: VALUE_BYTES_FORMAT_MAX, frame_bytes_max: FRAME_BYTES_FORMAT_MAX }
    }

    /// Largest value (PUT value, GET data) accepted.
    pub fn value_bytes_max(&self) -> u32 {
        self.value_bytes_max
    }

    /// Largest frame accepted, header included.
    pub fn frame_bytes_max(&self) -> u64 {
        self.frame_bytes_max
    }
}

impl Default for Limits {
    /// The default value cap (16 MiB) and frame limit (16 MiB + 64 KiB).
    fn default() -> Self {
        Limits {
            value_bytes_max: VALUE_BYTES_MAX_DEFAULT,
            frame_bytes_max: frame_bytes_max_default(VALUE_BYTES_MAX_DEFAULT),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Opcodes, flags, statuses

/// What a frame asks for (requests) or answers (responses, which repeat the request's opcode).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Opcode {
    /// Handshake: versions, capabilities, topology, authentication.
    Hello = 1,
    /// Store a value under a key.
    Put = 2,
    /// Read a value, whole or a range.
    Get = 3,
    /// Delete a key.
    Delete = 4,
    /// Length, crc32c and sequence number of a key's value.
    Stat = 5,
    /// Whether a key exists.
    Exists = 6,
    /// One page of a disk's keys.
    List = 7,
    /// State, space and counters of one disk or all.
    DiskStatus = 8,
}

impl Opcode {
    /// Every opcode, in numeric order.
    pub const ALL: [Opcode; 8] = [
        Opcode::Hello,
        Opcode::Put,
        Opcode::Get,
        Opcode::Delete,
        Opcode::Stat,
        Opcode::Exists,
        Opcode::List,
        Opcode::DiskStatus,
    ];

    /// The opcode with wire value `value`, if any.
    pub fn from_u8(value: u8) -> Option<Opcode> {
        Opcode::ALL.into_iter().find(|op| *op as u8 == value)
    }

    /// Whether frames with this opcode carry a key (otherwise the key field is all zero).
    pub fn has_key(self) -> bool {
        matches!(self, Opcode::Put | Opcode::Get | Opcode::Delete | Opcode::Stat | Opcode::Exists)
    }
}

/// Header flag bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Flags(u16);

impl Flags {
    /// No flag: a request.
    pub const NONE: Flags = Flags(0);
    /// The frame is a response.
    pub const RESPONSE: Flags = Flags(1);
    /// Every bit this build knows.
    pub const KNOWN_BITS: u16 = Flags::RESPONSE.0;

    /// Flags from wire bits; `None` when an unknown bit is set.
    pub fn from_bits(bits: u16) -> Option<Flags> {
        (bits & !Flags::KNOWN_BITS == 0).then_some(Flags(bits))
    }

    /// The wire bits.
    pub fn bits(self) -> u16 {
        self.0
    }

    /// Whether every bit of `other` is set.
    pub fn contains(self, other: Flags) -> bool {
        self.0 & other.0 == other.0
    }
}

/// Outcome of a request. Requests carry [`Status::Ok`]; responses carry the outcome. Every
/// error the store can report has a status (docs/PROTOCOL.md has the table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum Status {
    /// Success.
    Ok = 0,
    /// The key does not exist on the disk.
    NotFound = 1,
    /// PUT: the key exists with other content (blocks are immutable; DELETE first).
    ExistsWithOtherContent = 2,
    /// Received bytes do not match the crc32c sent with them (a PUT's value, a frame's meta):
    /// damaged in transit or by the sender. Nothing was stored; safe to retry.
    ChecksumMismatch = 3,
    /// Stored bytes failed verification on read. No bytes are returned; read another replica.
    StoredChecksumError = 4,
    /// A stored record is malformed (not a checksum mismatch; e.g. the record of another key).
    StoredCorrupt = 5,
    /// The disk has no space for the value.
    NoSpace = 6,
    /// The disk refuses writes (read-only, draining, or halted after a write error).
    DiskReadOnly = 7,
    /// The disk cannot serve requests (failed, retired, not a shingle disk).
    DiskFailed = 8,
    /// An I/O error on the disk failed this request.
    IoError = 9,
    /// No disk with this id on this node.
    NoSuchDisk = 10,
    /// The value is larger than the node's cap.
    ValueTooLarge = 11,
    /// GET: the range is outside the value.
    BadRange = 12,
    /// The frame or message is malformed.
    BadRequest = 13,
    /// The opcode is not one the node knows.
    UnknownOpcode = 14,
    /// HELLO: no protocol version both sides speak.
    UnsupportedVersion = 15,
    /// HELLO: authenticate first; the response carries the challenge.
    AuthRequired = 16,
    /// Not authenticated, or the proof did not verify.
    Unauthorized = 17,
    /// The node is overloaded (connection limit, a disk's queue full); retry later.
    Busy = 18,
    /// The node is shutting down; retry on another connection later.
    ShuttingDown = 19,
    /// An error the node did not expect (a bug); the message says more.
    Internal = 20,
    /// The request was not answered within the node's request timeout (e.g. behind a stuck
    /// disk). It may or may not have taken effect; PUT and DELETE are safe to repeat.
    Timeout = 21,
}

impl Status {
    /// Every status, in numeric order.
    pub const ALL: [Status; 22] = [
        Status::Ok,
        Status::NotFound,
        Status::ExistsWithOtherContent,
        Status::ChecksumMismatch,
        Status::StoredChecksumError,
        Status::StoredCorrupt,
        Status::NoSpace,
        Status::DiskReadOnly,
        Status::DiskFailed,
        Status::IoError,
        Status::NoSuchDisk,
        Status::ValueTooLarge,
        Status::BadRange,
        Status::BadRequest,
        Status::UnknownOpcode,
        Status::UnsupportedVersion,
        Status::AuthRequired,
        Status::Unauthorized,
        Status::Busy,
        Status::ShuttingDown,
        Status::Internal,
        Status::Timeout,
    ];

    /// The status with wire value `value`, if any.
    pub fn from_u16(value: u16) -> Option<Status> {
        Status::ALL.get(usize::from(value)).copied()
    }

    /// The status's name as docs/PROTOCOL.md writes it (`NOT_FOUND`), for messages to people.
    pub fn name(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::NotFound => "NOT_FOUND",
            Status::ExistsWithOtherContent => "EXISTS_WITH_OTHER_CONTENT",
            Status::ChecksumMismatch => "CHECKSUM_MISMATCH",
            Status::StoredChecksumError => "STORED_CHECKSUM_ERROR",
            Status::StoredCorrupt => "STORED_CORRUPT",
            Status::NoSpace => "NO_SPACE",
            Status::DiskReadOnly => "DISK_READ_ONLY",
            Status::DiskFailed => "DISK_FAILED",
            Status::IoError => "IO_ERROR",
            Status::NoSuchDisk => "NO_SUCH_DISK",
            Status::ValueTooLarge => "VALUE_TOO_LARGE",
            Status::BadRange => "BAD_RANGE",
            Status::BadRequest => "BAD_REQUEST",
            Status::UnknownOpcode => "UNKNOWN_OPCODE",
            Status::UnsupportedVersion => "UNSUPPORTED_VERSION",
            Status::AuthRequired => "AUTH_REQUIRED",
            Status::Unauthorized => "UNAUTHORIZED",
            Status::Busy => "BUSY",
            Status::ShuttingDown => "SHUTTING_DOWN",
            Status::Internal => "INTERNAL",
            Status::Timeout => "TIMEOUT",
        }
    }
}

const _: () = {
    let mut i = 0;
    while i < Status::ALL.len() {
        assert!(Status::ALL[i] as usize == i, "Status::ALL is indexed by wire value");
        i += 1;
    }
};

// ---------------------------------------------------------------------------------------------
// The header

/// A validated frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// What the frame asks for or answers.
    pub opcode: Opcode,
    /// Flag bits ([`Flags::RESPONSE`] on responses).
    pub flags: Flags,
    /// Chosen by the client, unique among its requests in flight, never
    /// [`REQUEST_ID_NOTICE`]; a response repeats it.
    pub request_id: u32,
    /// The disk the request is for (0 for HELLO; [`DISK_ID_ALL`] for DISK_STATUS of all).
    pub disk_id: u16,
    /// [`Status::Ok`] on requests; the outcome on responses.
    pub status: Status,
    /// The key ([`KEY_NONE`] for opcodes without one).
    pub key: Key,
    /// Bytes of the meta section (the typed message) after the header.
    pub meta_len: u32,
    /// Bytes of the data section (a value) after the meta section.
    pub data_len: u32,
    /// crc32c of the meta section (0 when it is empty).
    pub meta_crc32c: u32,
}

/// What a server needs to skip a rejected frame and address its reply: the header's fields,
/// raw, once the header's checksum and lengths were found sound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameContext {
    /// The request id to answer.
    pub request_id: u32,
    /// The opcode byte, possibly unknown (the reply repeats it).
    pub opcode: u8,
    /// The disk id.
    pub disk_id: u16,
    /// The key.
    pub key: Key,
    /// Bytes after the header that belong to this frame (meta and data).
    pub payload_bytes: u64,
}

/// The outcome of decoding bytes received so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoded<T> {
    /// At least this many more bytes are needed before decoding can go on.
    NeedMore { bytes: usize },
    /// Decoded.
    Ready(T),
}

/// The header's fields as they are on the wire, before validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RawHeader {
    opcode: u8,
    flags: u16,
    request_id: u32,
    disk_id: u16,
    status: u16,
    meta_len: u32,
    data_len: u32,
    key: Key,
    meta_crc32c: u32,
}

impl RawHeader {
    fn parse(b: &[u8; HEADER_BYTES]) -> RawHeader {
        let mut key = KEY_NONE;
        key.copy_from_slice(&b[KEY_AT..KEY_AT + KEY_BYTES]);
        RawHeader {
            opcode: b[OPCODE_AT],
            flags: get_u16(b, FLAGS_AT),
            request_id: get_u32(b, REQUEST_ID_AT),
            disk_id: get_u16(b, DISK_ID_AT),
            status: get_u16(b, STATUS_AT),
            meta_len: get_u32(b, META_LEN_AT),
            data_len: get_u32(b, DATA_LEN_AT),
            key,
            meta_crc32c: get_u32(b, META_CRC_AT),
        }
    }

    fn encode(&self) -> [u8; HEADER_BYTES] {
        let mut b = [0u8; HEADER_BYTES];
        b[MAGIC_AT..MAGIC_AT + 4].copy_from_slice(&FRAME_MAGIC);
        b[VERSION_AT] = PROTOCOL_VERSION;
        b[OPCODE_AT] = self.opcode;
        b[FLAGS_AT..FLAGS_AT + 2].copy_from_slice(&self.flags.to_le_bytes());
        b[REQUEST_ID_AT..REQUEST_ID_AT + 4].copy_from_slice(&self.request_id.to_le_bytes());
        b[DISK_ID_AT..DISK_ID_AT + 2].copy_from_slice(&self.disk_id.to_le_bytes());
        b[STATUS_AT..STATUS_AT + 2].copy_from_slice(&self.status.to_le_bytes());
        b[META_LEN_AT..META_LEN_AT + 4].copy_from_slice(&self.meta_len.to_le_bytes());
        b[DATA_LEN_AT..DATA_LEN_AT + 4].copy_from_slice(&self.data_len.to_le_bytes());
        b[KEY_AT..KEY_AT + KEY_BYTES].copy_from_slice(&self.key);
        b[META_CRC_AT..META_CRC_AT + 4].copy_from_slice(&self.meta_crc32c.to_le_bytes());
        let crc = crc32c::crc32c(&b[..HEADER_CRC_AT]);
        b[HEADER_CRC_AT..].copy_from_slice(&crc.to_le_bytes());
        b
    }

    fn context(&self) -> FrameContext {
        FrameContext {
            request_id: self.request_id,
            opcode: self.opcode,
            disk_id: self.disk_id,
            key: self.key,
            payload_bytes: u64::from(self.meta_len) + u64::from(self.data_len),
        }
    }
}

impl FrameHeader {
    /// Whether this is a response.
    pub fn is_response(&self) -> bool {
        self.flags.contains(Flags::RESPONSE)
    }

    /// Bytes after the header: meta and data.
    pub fn payload_bytes(&self) -> u64 {
        u64::from(self.meta_len) + u64::from(self.data_len)
    }

    /// Bytes of the whole frame.
    pub fn frame_bytes(&self) -> u64 {
        HEADER_BYTES as u64 + self.payload_bytes()
    }

    /// The fields a reply needs.
    pub fn context(&self) -> FrameContext {
        self.raw().context()
    }

    /// The 64 header bytes, with the header crc32c computed.
    pub fn encode(&self) -> [u8; HEADER_BYTES] {
        self.raw().encode()
    }

    /// Checks that `meta` is this frame's meta section: its length and crc32c.
    pub fn check_meta(&self, meta: &[u8]) -> Result<()> {
        let expected_len = self.meta_len as usize;
        if meta.len() < expected_len {
            return Err(Error::Truncated { what: "meta", len: meta.len(), needed: expected_len });
        }
        if meta.len() > expected_len {
            return Err(Error::TrailingBytes {
                what: "meta",
                len: meta.len(),
                expected: expected_len,
            });
        }
        let got = crc32c::crc32c(meta);
        if got != self.meta_crc32c {
            return Err(Error::MetaChecksum {
                frame: self.context(),
                expected: self.meta_crc32c,
                got,
            });
        }
        Ok(())
    }

    fn raw(&self) -> RawHeader {
        RawHeader {
            opcode: self.opcode as u8,
            flags: self.flags.bits(),
            request_id: self.request_id,
            disk_id: self.disk_id,
            status: self.status as u16,
            meta_len: self.meta_len,
            data_len: self.data_len,
            key: self.key,
            meta_crc32c: self.meta_crc32c,
        }
    }
}

/// A whole frame in a buffer, its header validated and its meta section checked against the
/// header's crc32c. The data section is not checked here: its checksum is in the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    /// The header.
    pub header: FrameHeader,
    /// The meta section.
    pub meta: &'a [u8],
    /// The data section.
    pub data: &'a [u8],
}

impl Frame<'_> {
    /// Bytes of the buffer this frame took.
    pub fn frame_bytes(&self) -> usize {
        HEADER_BYTES + self.meta.len() + self.data.len()
    }
}

// ---------------------------------------------------------------------------------------------
// Decoding

/// Decodes a frame header from the first bytes of `buf` (the bytes received so far). Reads at
/// most [`HEADER_BYTES`], allocates nothing, and checks in this order: magic, version, header
/// crc32c, lengths against the format (these failures close the connection), the frame's size
/// against `limits` (answered, then closed), then flags, opcode, status, key, disk id and
/// lengths against the opcode and `limits` (these are answered with a status and the frame
/// skipped; the error carries the [`FrameContext`]).
pub fn decode_header(buf: &[u8], limits: &Limits) -> Result<Decoded<FrameHeader>> {
    let Some(bytes) = buf.first_chunk::<HEADER_BYTES>() else {
        return Ok(Decoded::NeedMore { bytes: HEADER_BYTES - buf.len() });
    };
    let raw = check_envelope(bytes)?;
    let frame = raw.context();
    let frame_bytes = HEADER_BYTES as u64 + frame.payload_bytes;
    if frame_bytes > limits.frame_bytes_max {
        return Err(Error::FrameOverLimit { frame, len: frame_bytes, max: limits.frame_bytes_max });
    }
    let Some(flags) = Flags::from_bits(raw.flags) else {
        return Err(Error::UnknownFlags { frame, flags: raw.flags });
    };
    let Some(opcode) = Opcode::from_u8(raw.opcode) else {
        return Err(Error::UnknownOpcode { frame, value: raw.opcode });
    };
    let status = match Status::from_u16(raw.status) {
        Some(status) if flags.contains(Flags::RESPONSE) || status == Status::Ok => status,
        Some(_) => return Err(bad_header(frame, "status", raw.status.into())),
        None if flags.contains(Flags::RESPONSE) => {
            return Err(Error::UnknownStatus { frame, value: raw.status });
        }
        None => return Err(bad_header(frame, "status", raw.status.into())),
    };
    let header = FrameHeader {
        opcode,
        flags,
        request_id: raw.request_id,
        disk_id: raw.disk_id,
        status,
        key: raw.key,
        meta_len: raw.meta_len,
        data_len: raw.data_len,
        meta_crc32c: raw.meta_crc32c,
    };
    check_rules(&header, limits)?;
    Ok(Decoded::Ready(header))
}

/// Decodes a whole frame from the start of `buf`: the header as [`decode_header`] does, then,
/// once all of its bytes are there, the meta section's crc32c. Borrows; allocates nothing.
pub fn decode_frame<'a>(buf: &'a [u8], limits: &Limits) -> Result<Decoded<Frame<'a>>> {
    let header = match decode_header(buf, limits)? {
        Decoded::NeedMore { bytes } => return Ok(Decoded::NeedMore { bytes }),
        Decoded::Ready(header) => header,
    };
    let frame_bytes = header.frame_bytes() as usize;
    if buf.len() < frame_bytes {
        return Ok(Decoded::NeedMore { bytes: frame_bytes - buf.len() });
    }
    let meta_end = HEADER_BYTES + header.meta_len as usize;
    let meta = &buf[HEADER_BYTES..meta_end];
    header.check_meta(meta)?;
    Ok(Decoded::Ready(Frame { header, meta, data: &buf[meta_end..frame_bytes] }))
}

/// Magic, version, crc, and lengths against the format: what must hold before any field can be
/// trusted, even to skip the frame.
fn check_envelope(b: &[u8; HEADER_BYTES]) -> Result<RawHeader> {
    let mut found = [0u8; 4];
    found.copy_from_slice(&b[MAGIC_AT..MAGIC_AT + 4]);
    if found != FRAME_MAGIC {
        return Err(Error::BadMagic { found, expected: FRAME_MAGIC });
    }
    if b[VERSION_AT] != PROTOCOL_VERSION {
        return Err(Error::UnsupportedVersion {
            found: b[VERSION_AT],
            min: PROTOCOL_VERSION,
            max: PROTOCOL_VERSION,
        });
    }
    let expected = get_u32(b, HEADER_CRC_AT);
    let got = crc32c::crc32c(&b[..HEADER_CRC_AT]);
    if expected != got {
        return Err(Error::HeaderChecksum { expected, got });
    }
    let raw = RawHeader::parse(b);
    if raw.meta_len > META_BYTES_MAX {
        return Err(Error::FrameTooLarge {
            field: "meta length",
            len: raw.meta_len.into(),
            max: META_BYTES_MAX.into(),
        });
    }
    if raw.data_len > VALUE_BYTES_FORMAT_MAX {
        return Err(Error::FrameTooLarge {
            field: "data length",
            len: raw.data_len.into(),
            max: VALUE_BYTES_FORMAT_MAX.into(),
        });
    }
    Ok(raw)
}

/// What each opcode allows in the key, disk id and length fields.
fn check_rules(header: &FrameHeader, limits: &Limits) -> Result<()> {
    let frame = header.context();
    if header.request_id == REQUEST_ID_NOTICE && !header.is_response() {
        return Err(bad_header(frame, "request id", 0));
    }
    if !header.opcode.has_key() && header.key != KEY_NONE {
        let nonzero_bytes = header.key.iter().filter(|b| **b != 0).count();
        return Err(bad_header(frame, "key (nonzero bytes)", nonzero_bytes as u64));
    }
    let disk_ok = match header.opcode {
        Opcode::Hello => header.disk_id == 0,
        Opcode::DiskStatus => true,
        _ => header.disk_id != DISK_ID_ALL,
    };
    if !disk_ok {
        return Err(bad_header(frame, "disk id", header.disk_id.into()));
    }
    let Some(rule) = messages::payload_rule(header.opcode, header.is_response(), header.status)
    else {
        return Err(bad_header(frame, "status", (header.status as u16).into()));
    };
    if header.meta_len < rule.meta_min || header.meta_len > rule.meta_max {
        return Err(bad_header(frame, "meta length", header.meta_len.into()));
    }
    if !rule.data && header.data_len != 0 {
        return Err(bad_header(frame, "data length", header.data_len.into()));
    }
    if rule.data && header.data_len == 0 {
        return Err(bad_header(frame, "data length", 0));
    }
    if header.data_len > limits.value_bytes_max {
        return Err(Error::ValueTooLarge {
            frame,
            len: header.data_len,
            max: limits.value_bytes_max,
        });
    }
    Ok(())
}

fn bad_header(frame: FrameContext, field: &'static str, value: u64) -> Error {
    Error::BadHeaderField { frame, field, value }
}

// ---------------------------------------------------------------------------------------------
// Encoding

/// Appends a frame's header and meta section to `out`. `write_meta` appends exactly
/// `meta_len` bytes of meta; the header's `meta_len` and `meta_crc32c` are set from them (the
/// values in `header` are ignored). The data section (`header.data_len` bytes) is not appended:
/// the caller sends it after these bytes (or appends it). Allocates only if `out` lacks room.
/// Returns the header as written.
///
/// Panics if the frame breaks the format's rules (a bug in the caller).
pub fn encode_frame(
    out: &mut Vec<u8>,
    header: &FrameHeader,
    meta_len: usize,
    write_meta: impl FnOnce(&mut Vec<u8>),
) -> FrameHeader {
    let start = out.len();
    out.reserve(HEADER_BYTES + meta_len);
    out.resize(start + HEADER_BYTES, 0);
    write_meta(out);
    let meta = &out[start + HEADER_BYTES..];
    assert_eq!(meta.len(), meta_len, "{:?} meta written differs from its length", header.opcode);
    let mut header = *header;
    header.meta_len = u32::try_from(meta_len).expect("meta length checked below");
    header.meta_crc32c = crc32c::crc32c(meta);
    if let Err(err) = check_rules(&header, &Limits::format_max()) {
        panic!("encoding an invalid frame: {err}");
    }
    out[start..start + HEADER_BYTES].copy_from_slice(&header.encode());
    header
}

/// Appends the response to a frame the decoder rejected (`frame` from [`Error::frame`]): the
/// request's id, opcode byte, disk id and key, `status`, and `message` (cut to
/// [`ERROR_MESSAGE_BYTES_MAX`] bytes at a character boundary) as the meta section.
///
/// Panics if `status` is [`Status::Ok`] or [`Status::AuthRequired`] (not error statuses).
pub fn encode_rejection(out: &mut Vec<u8>, frame: &FrameContext, status: Status, message: &str) {
    assert!(!matches!(status, Status::Ok | Status::AuthRequired), "{status:?} is no rejection");
    let message = truncate_message(message).as_bytes();
    let raw = RawHeader {
        opcode: frame.opcode,
        flags: Flags::RESPONSE.bits(),
        request_id: frame.request_id,
        disk_id: frame.disk_id,
        status: status as u16,
        meta_len: message.len() as u32,
        data_len: 0,
        key: frame.key,
        meta_crc32c: crc32c::crc32c(message),
    };
    out.reserve(HEADER_BYTES + message.len());
    out.extend_from_slice(&raw.encode());
    out.extend_from_slice(message);
}

/// `message` cut to at most [`ERROR_MESSAGE_BYTES_MAX`] bytes at a character boundary.
pub(crate) fn truncate_message(message: &str) -> &str {
    if message.len() <= ERROR_MESSAGE_BYTES_MAX {
        return message;
    }
    let mut end = ERROR_MESSAGE_BYTES_MAX;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    &message[..end]
}

/// The checksum of every crc field in the protocol (header, meta, PUT value, GET data):
/// CRC-32C (Castagnoli), computed with the `crc32c` crate's SIMD code.
pub fn crc32c(bytes: &[u8]) -> u32 {
    crc32c::crc32c(bytes)
}

fn get_u16(b: &[u8; HEADER_BYTES], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn get_u32(b: &[u8; HEADER_BYTES], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Disposition;

    /// The PUT request of the golden test in `messages`: request 7, disk 3, key 0..32, 5 bytes.
    const PUT_HEADER_HEX: &str = "53484e500102000007000000030000000400000005000000\
        000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f81d1a8f32b8617b2";

    fn key() -> Key {
        std::array::from_fn(|i| i as u8)
    }

    fn put_header() -> FrameHeader {
        FrameHeader {
            opcode: Opcode::Put,
            flags: Flags::NONE,
            request_id: 7,
            disk_id: 3,
            status: Status::Ok,
            key: key(),
            meta_len: 4,
            data_len: 5,
            meta_crc32c: crc32c::crc32c(&crc32c::crc32c(b"hello").to_le_bytes()),
        }
    }

    /// A whole valid PUT frame: header, meta (the value's crc32c), value.
    fn put_frame() -> Vec<u8> {
        let mut frame = put_header().encode().to_vec();
        frame.extend_from_slice(&crc32c::crc32c(b"hello").to_le_bytes());
        frame.extend_from_slice(b"hello");
        frame
    }

    fn raw_put() -> RawHeader {
        put_header().raw()
    }

    fn decode(bytes: &[u8]) -> Result<Decoded<FrameHeader>> {
        decode_header(bytes, &Limits::default())
    }

    fn rejected(raw: RawHeader) -> Error {
        match decode(&raw.encode()) {
            Err(err) => err,
            Ok(ok) => panic!("{raw:?} was accepted: {ok:?}"),
        }
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn header_layout_is_pinned() {
        assert_eq!(hex(&put_header().encode()), PUT_HEADER_HEX);
    }

    #[test]
    fn header_round_trips() {
        let bytes = put_header().encode();
        assert_eq!(decode(&bytes), Ok(Decoded::Ready(put_header())));
        assert_eq!(RawHeader::parse(&bytes), raw_put());
        assert_eq!(put_header().payload_bytes(), 9);
        assert_eq!(put_header().frame_bytes(), 73);
    }

    #[test]
    fn a_short_header_asks_for_exactly_the_rest() {
        let bytes = put_header().encode();
        for len in 0..HEADER_BYTES {
            assert_eq!(decode(&bytes[..len]), Ok(Decoded::NeedMore { bytes: HEADER_BYTES - len }));
        }
    }

    #[test]
    fn a_frame_truncated_at_any_byte_asks_for_exactly_the_rest() {
        let frame = put_frame();
        for len in 0..frame.len() {
            let wanted = if len < HEADER_BYTES { HEADER_BYTES - len } else { frame.len() - len };
            assert_eq!(
                decode_frame(&frame[..len], &Limits::default()),
                Ok(Decoded::NeedMore { bytes: wanted }),
                "prefix of {len} bytes"
            );
        }
        let Ok(Decoded::Ready(decoded)) = decode_frame(&frame, &Limits::default()) else {
            panic!("the whole frame must decode");
        };
        assert_eq!(decoded.header, put_header());
        assert_eq!(decoded.data, b"hello");
        assert_eq!(decoded.frame_bytes(), frame.len());
        // Bytes of the next frame after it are not its concern.
        let mut two = frame.clone();
        two.extend_from_slice(&frame[..10]);
        assert!(
            matches!(decode_frame(&two, &Limits::default()), Ok(Decoded::Ready(f)) if f == decoded)
        );
    }

    #[test]
    fn every_single_bit_flip_in_the_header_closes_the_connection() {
        let bytes = put_header().encode();
        for bit in 0..HEADER_BYTES * 8 {
            let mut flipped = bytes;
            flipped[bit / 8] ^= 1 << (bit % 8);
            let err = decode(&flipped).expect_err("a flipped header must be rejected");
            assert_eq!(err.disposition(), Disposition::Close, "bit {bit}: {err}");
            let expected = match bit / 8 {
                0..4 => matches!(err, Error::BadMagic { .. }),
                4 => matches!(err, Error::UnsupportedVersion { .. }),
                _ => matches!(err, Error::HeaderChecksum { .. }),
            };
            assert!(expected, "bit {bit}: {err}");
        }
    }

    #[test]
    fn oversized_lengths_are_rejected_from_the_header_alone() {
        for (meta_len, data_len, field) in [
            (META_BYTES_MAX + 1, 0, "meta length"),
            (u32::MAX, 0, "meta length"),
            (4, VALUE_BYTES_FORMAT_MAX + 1, "data length"),
            (4, u32::MAX, "data length"),
        ] {
            let bytes = RawHeader { meta_len, data_len, ..raw_put() }.encode();
            // Only the 64 header bytes are given: the decoder must not wait for (or make room
            // for) the payload before rejecting it.
            let err = decode_frame(&bytes, &Limits::default()).expect_err("must be rejected");
            assert!(
                matches!(err, Error::FrameTooLarge { field: f, .. } if f == field),
                "{meta_len}/{data_len}: {err}"
            );
            assert_eq!(err.disposition(), Disposition::Close);
        }
    }

    #[test]
    fn a_value_over_the_configured_cap_is_answered_and_skipped() {
        let limits = Limits::new(1000, FRAME_BYTES_LIMIT_MIN).expect("valid");
        let raw = RawHeader { data_len: 1001, ..raw_put() };
        let err = decode_header(&raw.encode(), &limits).expect_err("over the cap");
        assert!(matches!(err, Error::ValueTooLarge { len: 1001, max: 1000, .. }), "{err}");
        assert_eq!(err.disposition(), Disposition::Reply(Status::ValueTooLarge));
        let frame = err.frame().expect("carries the frame");
        assert_eq!((frame.request_id, frame.opcode, frame.payload_bytes), (7, 2, 1005));
        let at_cap = RawHeader { data_len: 1000, ..raw_put() };
        assert!(matches!(decode_header(&at_cap.encode(), &limits), Ok(Decoded::Ready(_))));
    }

    #[test]
    fn unknown_opcodes_are_answered() {
        for value in (0..=u8::MAX).filter(|v| Opcode::from_u8(*v).is_none()) {
            let err = rejected(RawHeader { opcode: value, ..raw_put() });
            assert_eq!(err, Error::UnknownOpcode { frame: err.frame().copied().unwrap(), value });
            assert_eq!(err.disposition(), Disposition::Reply(Status::UnknownOpcode));
            assert_eq!(err.frame().unwrap().payload_bytes, 9);
        }
        for op in Opcode::ALL {
            assert_eq!(Opcode::from_u8(op as u8), Some(op));
        }
    }

    #[test]
    fn unknown_statuses_and_flags_are_answered() {
        let response = RawHeader {
            flags: Flags::RESPONSE.bits(),
            meta_len: 0,
            data_len: 0,
            meta_crc32c: 0,
            ..raw_put()
        };
        for value in [Status::ALL.len() as u16, 0x100, u16::MAX] {
            let err = rejected(RawHeader { status: value, ..response });
            assert!(matches!(err, Error::UnknownStatus { value: v, .. } if v == value), "{err}");
            assert_eq!(err.disposition(), Disposition::Reply(Status::BadRequest));
        }
        for status in Status::ALL {
            assert_eq!(Status::from_u16(status as u16), Some(status));
            let name = status.name();
            assert!(name.bytes().all(|b| b.is_ascii_uppercase() || b == b'_'), "{name}");
        }
        assert_eq!(Status::ExistsWithOtherContent.name(), "EXISTS_WITH_OTHER_CONTENT");
        // Requests carry status OK, known or not.
        for value in [1, u16::MAX] {
            let err = rejected(RawHeader { status: value, ..raw_put() });
            assert!(matches!(err, Error::BadHeaderField { field: "status", .. }), "{err}");
        }
        for bit in 1..16 {
            let err = rejected(RawHeader { flags: 1 << bit, ..raw_put() });
            assert!(matches!(err, Error::UnknownFlags { .. }), "{err}");
            assert_eq!(err.disposition(), Disposition::Reply(Status::BadRequest));
        }
    }

    #[test]
    fn fields_an_opcode_does_not_allow_are_answered() {
        let cases = [
            ("key (nonzero bytes)", RawHeader { opcode: Opcode::List as u8, ..raw_put() }),
            (
                "disk id",
                RawHeader {
                    opcode: Opcode::Hello as u8,
                    key: KEY_NONE,
                    meta_len: 8,
                    data_len: 0,
                    ..raw_put()
                },
            ),
            ("disk id", RawHeader { disk_id: DISK_ID_ALL, ..raw_put() }),
            ("request id", RawHeader { request_id: REQUEST_ID_NOTICE, ..raw_put() }),
            ("data length", RawHeader { data_len: 0, ..raw_put() }),
            ("meta length", RawHeader { meta_len: 5, ..raw_put() }),
            ("meta length", RawHeader { opcode: Opcode::Delete as u8, data_len: 0, ..raw_put() }),
            ("data length", RawHeader { opcode: Opcode::Get as u8, meta_len: 0, ..raw_put() }),
            (
                "status",
                RawHeader {
                    opcode: Opcode::Get as u8,
                    flags: Flags::RESPONSE.bits(),
                    status: Status::AuthRequired as u16,
                    meta_len: 36,
                    data_len: 0,
                    ..raw_put()
                },
            ),
        ];
        for (field, raw) in cases {
            let err = rejected(raw);
            assert!(
                matches!(err, Error::BadHeaderField { field: f, .. } if f == field),
                "{field}: {err}"
            );
            assert_eq!(err.disposition(), Disposition::Reply(Status::BadRequest));
            assert_eq!(err.frame().unwrap().request_id, raw.request_id);
        }
    }

    #[test]
    fn a_damaged_meta_section_is_answered() {
        let mut frame = put_frame();
        frame[HEADER_BYTES] ^= 0x80;
        let err = decode_frame(&frame, &Limits::default()).expect_err("meta crc");
        assert!(matches!(err, Error::MetaChecksum { .. }), "{err}");
        assert_eq!(err.disposition(), Disposition::Reply(Status::ChecksumMismatch));
        assert_eq!(err.frame().unwrap().payload_bytes, 9);
        assert!(matches!(put_header().check_meta(&[0; 3]), Err(Error::Truncated { .. })));
        assert!(matches!(put_header().check_meta(&[0; 5]), Err(Error::TrailingBytes { .. })));
    }

    #[test]
    fn rejections_encode_as_error_responses() {
        let ctx = FrameContext {
            request_id: 99,
            opcode: 0xee,
            disk_id: 4,
            key: key(),
            payload_bytes: 12,
        };
        let mut out = vec![0xaa];
        encode_rejection(&mut out, &ctx, Status::UnknownOpcode, "opcode 0xee");
        let bytes = &out[1..];
        assert_eq!(bytes.len(), HEADER_BYTES + 11);
        // A client decoding it gets the request id back even though it cannot type the opcode.
        let err = decode_frame(bytes, &Limits::default()).expect_err("unknown opcode");
        let frame = err.frame().expect("context");
        assert_eq!((frame.request_id, frame.opcode, frame.payload_bytes), (99, 0xee, 11));
    }

    #[test]
    fn messages_are_cut_at_a_character_boundary() {
        let long = "é".repeat(ERROR_MESSAGE_BYTES_MAX);
        let cut = truncate_message(&long);
        assert_eq!(cut.len(), ERROR_MESSAGE_BYTES_MAX);
        let odd = format!("x{long}");
        assert_eq!(truncate_message(&odd).len(), ERROR_MESSAGE_BYTES_MAX - 1);
        assert_eq!(truncate_message("short"), "short");
    }

    #[test]
    fn limits_are_validated() {
        let bad = |value, frame| matches!(Limits::new(value, frame), Err(Error::BadLimit { .. }));
        assert!(bad(0, FRAME_BYTES_LIMIT_MIN));
        assert!(bad(VALUE_BYTES_FORMAT_MAX + 1, FRAME_BYTES_FORMAT_MAX));
        assert!(bad(1, FRAME_BYTES_LIMIT_MIN - 1));
        assert!(bad(16 << 20, (16 << 20) + FRAME_HEADROOM_BYTES - 1));
        assert!(bad(1, FRAME_BYTES_FORMAT_MAX + 1));
        assert_eq!(Limits::new(1, FRAME_BYTES_LIMIT_MIN).map(|l| l.value_bytes_max()), Ok(1));
        let default = Limits::default();
        assert_eq!(default.value_bytes_max(), VALUE_BYTES_MAX_DEFAULT);
        assert_eq!(default.frame_bytes_max(), (16 << 20) + (64 << 10));
        assert_eq!(Limits::with_value_bytes_max(VALUE_BYTES_MAX_DEFAULT), Ok(default));
        assert_eq!(frame_bytes_max_default(1), FRAME_BYTES_LIMIT_MIN);
        let max = Limits::format_max();
        assert_eq!(max.value_bytes_max(), VALUE_BYTES_FORMAT_MAX);
        assert_eq!(max.frame_bytes_max(), FRAME_BYTES_FORMAT_MAX);
        assert_eq!(Limits::new(VALUE_BYTES_FORMAT_MAX, FRAME_BYTES_FORMAT_MAX), Ok(max));
    }

    #[test]
    fn a_frame_over_the_frame_limit_is_answered_then_closed() {
        let limits = Limits::new(1000, FRAME_BYTES_LIMIT_MIN).expect("valid");
        let data_len = (FRAME_BYTES_LIMIT_MIN - HEADER_BYTES as u64 - 4 + 1) as u32;
        let err = decode_header(&RawHeader { data_len, ..raw_put() }.encode(), &limits)
            .expect_err("over the frame limit");
        assert!(matches!(err, Error::FrameOverLimit { max: FRAME_BYTES_LIMIT_MIN, .. }), "{err}");
        assert_eq!(err.disposition(), Disposition::ReplyAndClose(Status::ValueTooLarge));
        assert_eq!(err.frame().map(|f| f.request_id), Some(7));
        // One byte less is within the frame limit: only the value cap refuses it.
        let raw = RawHeader { data_len: data_len - 1, ..raw_put() };
        let err = decode_header(&raw.encode(), &limits).expect_err("over the value cap");
        assert!(matches!(err, Error::ValueTooLarge { .. }), "{err}");
    }

    #[test]
    fn every_opcode_bound_is_within_the_named_limits() {
        for opcode in Opcode::ALL {
            let request = messages::payload_rule(opcode, false, Status::Ok).expect("a request");
            assert!(request.meta_max <= REQUEST_META_BYTES_MAX, "{opcode:?}");
            assert!(request.meta_min <= request.meta_max, "{opcode:?}");
            for status in Status::ALL {
                if let Some(rule) = messages::payload_rule(opcode, true, status) {
                    assert!(rule.meta_max <= META_BYTES_MAX, "{opcode:?} {status:?}");
                    assert!(rule.meta_min <= rule.meta_max, "{opcode:?} {status:?}");
                }
            }
        }
    }

    #[test]
    fn flags_know_their_bits() {
        assert_eq!(Flags::from_bits(1), Some(Flags::RESPONSE));
        assert_eq!(Flags::from_bits(2), None);
        assert!(Flags::RESPONSE.contains(Flags::NONE));
        assert!(!Flags::NONE.contains(Flags::RESPONSE));
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200),
        ) {
            let _ = decode_frame(&bytes, &Limits::default());
        }

        #[test]
        fn arbitrary_headers_with_a_valid_crc_never_panic(
            body in proptest::array::uniform32(proptest::num::u8::ANY),
            tail in proptest::array::uniform24(proptest::num::u8::ANY),
        ) {
            let mut b = [0u8; HEADER_BYTES];
            b[..4].copy_from_slice(&FRAME_MAGIC);
            b[4] = PROTOCOL_VERSION;
            // Everything between the version and the header crc, which is computed.
            b[5..29].copy_from_slice(&tail);
            b[29..HEADER_CRC_AT].copy_from_slice(&body[..HEADER_CRC_AT - 29]);
            let crc = crc32c::crc32c(&b[..HEADER_CRC_AT]);
            b[HEADER_CRC_AT..].copy_from_slice(&crc.to_le_bytes());
            match decode(&b) {
                Ok(Decoded::Ready(header)) => proptest::prop_assert_eq!(header.encode(), b),
                Ok(Decoded::NeedMore { .. }) => {
                    proptest::prop_assert!(false, "64 bytes are a header")
                }
                Err(err) => {
                    let frame_expected = !matches!(err, Error::FrameTooLarge { .. });
                    proptest::prop_assert_eq!(err.frame().is_some(), frame_expected);
                }
            }
        }
    }
}
