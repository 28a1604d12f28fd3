//! Typed request and response bodies: what each opcode carries in a frame's meta section, and
//! how it is encoded and decoded. The frame around them (header, lengths, checksums) is
//! `wire`'s; docs/PROTOCOL.md has the same layouts as tables.
//!
//! Every layout is fixed fields then counted entries, little-endian, with no padding between
//! them. Decoders check every count against its limit and against the bytes actually present
//! before they allocate, reject reserved bytes that are not zero, and reject trailing bytes, so
//! an accepted message has exactly one encoding: `encode(decode(bytes)) == bytes`.

use crate::auth::{NONCE_BYTES, Nonce, PROOF_BYTES, Proof};
use crate::error::{Error, Result};
use crate::wire::{
    self, DISK_ID_ALL, DISKS_MAX, ERROR_MESSAGE_BYTES_MAX, Flags, FrameHeader, KEY_BYTES, Key,
    LIST_CURSOR_BYTES_MAX, LIST_KEYS_MAX, Opcode, PROTOCOL_VERSION, REQUESTS_IN_FLIGHT_LIMIT,
    Status, VALUE_BYTES_FORMAT_MAX,
};

// Meta section sizes. `_FIXED_BYTES` is the part before counted entries.

/// HELLO request without an authentication proof.
pub const HELLO_REQUEST_BYTES: usize = 8;
/// HELLO request with an authentication proof (client nonce and proof).
pub const HELLO_REQUEST_AUTH_BYTES: usize = HELLO_REQUEST_BYTES + NONCE_BYTES + PROOF_BYTES;
/// HELLO response before its disk entries.
pub const HELLO_RESPONSE_FIXED_BYTES: usize = 16 + PROOF_BYTES;
/// One disk in a HELLO topology.
pub const DISK_INFO_BYTES: usize = 40;
/// Largest HELLO response.
pub const HELLO_RESPONSE_BYTES_MAX: usize =
    HELLO_RESPONSE_FIXED_BYTES + DISKS_MAX as usize * DISK_INFO_BYTES;
/// HELLO response with status AUTH_REQUIRED: the challenge.
pub const AUTH_CHALLENGE_BYTES: usize = 4 + NONCE_BYTES;
/// PUT request: the value's crc32c.
pub const PUT_REQUEST_BYTES: usize = 4;
/// PUT response: the outcome.
pub const PUT_RESPONSE_BYTES: usize = 1;
/// GET request for a range (a GET of the whole value has no meta).
pub const GET_RANGE_BYTES: usize = 8;
/// GET response.
pub const GET_RESPONSE_BYTES: usize = 16;
/// STAT response.
pub const STAT_RESPONSE_BYTES: usize = 16;
/// EXISTS response.
pub const EXISTS_RESPONSE_BYTES: usize = 1;
/// LIST request before its cursor bytes.
pub const LIST_REQUEST_FIXED_BYTES: usize = 5;
/// LIST response before its cursor bytes and keys.
pub const LIST_RESPONSE_FIXED_BYTES: usize = 5;
/// Largest LIST response.
pub const LIST_RESPONSE_BYTES_MAX: usize =
    LIST_RESPONSE_FIXED_BYTES + LIST_CURSOR_BYTES_MAX + LIST_KEYS_MAX as usize * KEY_BYTES;
/// DISK_STATUS response before its entries.
pub const DISK_STATUS_FIXED_BYTES: usize = 4;
/// One disk in a DISK_STATUS response.
pub const DISK_STATUS_BYTES: usize = DISK_INFO_BYTES + 24;
/// Largest DISK_STATUS response.
pub const DISK_STATUS_RESPONSE_BYTES_MAX: usize =
    DISK_STATUS_FIXED_BYTES + DISKS_MAX as usize * DISK_STATUS_BYTES;
/// The authentication method of the challenge: HMAC-SHA256 (see `auth`).
pub const AUTH_METHOD_HMAC_SHA256: u8 = 1;

const _: () = assert!(LIST_CURSOR_BYTES_MAX <= u8::MAX as usize);

/// The meta and data lengths a frame may have, by opcode, direction and status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PayloadRule {
    pub meta_min: u32,
    pub meta_max: u32,
    /// Whether the frame carries a data section (1..=value cap bytes); otherwise it has none.
    pub data: bool,
}

/// What a frame's lengths may be; `None` when `status` is not allowed for the opcode.
pub(crate) fn payload_rule(opcode: Opcode, response: bool, status: Status) -> Option<PayloadRule> {
    let rule = |meta_min: usize, meta_max: usize, data: bool| {
        Some(PayloadRule { meta_min: meta_min as u32, meta_max: meta_max as u32, data })
    };
    if !response {
        return match opcode {
            Opcode::Hello => rule(HELLO_REQUEST_BYTES, HELLO_REQUEST_AUTH_BYTES, false),
            Opcode::Put => rule(PUT_REQUEST_BYTES, PUT_REQUEST_BYTES, true),
            Opcode::Get => rule(0, GET_RANGE_BYTES, false),
            Opcode::Delete | Opcode::Stat | Opcode::Exists | Opcode::DiskStatus => {
                rule(0, 0, false)
            }
            Opcode::List => rule(
                LIST_REQUEST_FIXED_BYTES,
                LIST_REQUEST_FIXED_BYTES + LIST_CURSOR_BYTES_MAX,
                false,
            ),
        };
    }
    match (status, opcode) {
        (Status::Ok, Opcode::Hello) => {
            rule(HELLO_RESPONSE_FIXED_BYTES, HELLO_RESPONSE_BYTES_MAX, false)
        }
        (Status::Ok, Opcode::Put) => rule(PUT_RESPONSE_BYTES, PUT_RESPONSE_BYTES, false),
        (Status::Ok, Opcode::Get) => rule(GET_RESPONSE_BYTES, GET_RESPONSE_BYTES, true),
        (Status::Ok, Opcode::Delete) => rule(0, 0, false),
        (Status::Ok, Opcode::Stat) => rule(STAT_RESPONSE_BYTES, STAT_RESPONSE_BYTES, false),
        (Status::Ok, Opcode::Exists) => rule(EXISTS_RESPONSE_BYTES, EXISTS_RESPONSE_BYTES, false),
        (Status::Ok, Opcode::List) => {
            rule(LIST_RESPONSE_FIXED_BYTES, LIST_RESPONSE_BYTES_MAX, false)
        }
        (Status::Ok, Opcode::DiskStatus) => {
            rule(DISK_STATUS_FIXED_BYTES, DISK_STATUS_RESPONSE_BYTES_MAX, false)
        }
        (Status::AuthRequired, Opcode::Hello) => {
            rule(AUTH_CHALLENGE_BYTES, AUTH_CHALLENGE_BYTES, false)
        }
        (Status::AuthRequired, _) => None,
        (_, _) => rule(0, ERROR_MESSAGE_BYTES_MAX, false),
    }
}

// ---------------------------------------------------------------------------------------------
// Field types

/// Optional features, one bit each. Each side announces its own in HELLO and ignores bits it
/// does not know, so adding a capability needs no new protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Capabilities(pub u32);

impl Capabilities {
    /// No optional feature.
    pub const NONE: Capabilities = Capabilities(0);
    /// The node listens on one port per shard (core) and the topology lists them.
    pub const SHARD_PORTS: Capabilities = Capabilities(1 << 0);
    /// HMAC-SHA256 challenge-response authentication (see `auth`).
    pub const AUTH_HMAC_SHA256: Capabilities = Capabilities(1 << 1);

    /// Whether every bit of `other` is set.
    pub fn contains(self, other: Capabilities) -> bool {
        self.0 & other.0 == other.0
    }
}

/// Where a disk is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum DiskState {
    /// Serves reads and writes.
    Active = 0,
    /// Serves reads; refuses writes.
    ReadOnly = 1,
    /// Serves reads while its blocks are copied away; refuses writes.
    Draining = 2,
    /// Emptied and out of service.
    Retired = 3,
    /// Out of service after errors.
    Failed = 4,
}

impl DiskState {
    /// Every state, in numeric order.
    pub const ALL: [DiskState; 5] = [
        DiskState::Active,
        DiskState::ReadOnly,
        DiskState::Draining,
        DiskState::Retired,
        DiskState::Failed,
    ];

    fn from_u8(value: u8) -> Option<DiskState> {
        DiskState::ALL.get(usize::from(value)).copied()
    }
}

/// One disk of the node's topology (HELLO).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskInfo {
    /// The id requests use (not [`DISK_ID_ALL`]).
    pub disk_id: u16,
    /// Lifecycle state.
    pub state: DiskState,
    /// The shard (core) that owns the disk.
    pub shard: u16,
    /// That shard's own TCP port, for requests sent straight to it (0: none).
    pub shard_port: u16,
    /// Bytes the disk can hold in values and records.
    pub capacity_bytes: u64,
    /// Bytes still free for new records (at most `capacity_bytes`).
    pub free_bytes: u64,
    /// The disk's identity, written when it was formatted.
    pub disk_uuid: [u8; 16],
}

/// One disk's state and counters (DISK_STATUS).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskStatus {
    /// What HELLO says about it.
    pub info: DiskInfo,
    /// Live keys.
    pub live_keys: u64,
    /// Bytes of live values.
    pub live_value_bytes: u64,
    /// Checksum errors found by reads and the scrubber since the node started.
    pub checksum_errors: u64,
}

/// Proof of the shared secret in a HELLO request (see `auth`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthProof {
    /// Random bytes chosen by the client for this exchange.
    pub client_nonce: Nonce,
    /// `auth::client_proof(secret, server_nonce, client_nonce)`.
    pub proof: Proof,
}

/// An opaque LIST position chosen by the server: 1..=[`LIST_CURSOR_BYTES_MAX`] bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ListCursor {
    len: u8,
    bytes: [u8; LIST_CURSOR_BYTES_MAX],
}

impl ListCursor {
    /// A cursor holding `bytes` (1..=[`LIST_CURSOR_BYTES_MAX`] of them).
    pub fn new(bytes: &[u8]) -> Result<ListCursor> {
        if bytes.is_empty() || bytes.len() > LIST_CURSOR_BYTES_MAX {
            return Err(Error::BadField {
                what: "LIST cursor",
                field: "length",
                value: bytes.len() as u64,
            });
        }
        let mut cursor = ListCursor { len: bytes.len() as u8, bytes: [0; LIST_CURSOR_BYTES_MAX] };
        cursor.bytes[..bytes.len()].copy_from_slice(bytes);
        Ok(cursor)
    }

    /// A cursor holding `position` as 8 little-endian bytes.
    pub fn from_u64(position: u64) -> ListCursor {
        ListCursor::new(&position.to_le_bytes()).expect("8 bytes is a valid cursor length")
    }

    /// The position of a cursor made by [`ListCursor::from_u64`]; `None` for other lengths.
    pub fn to_u64(&self) -> Option<u64> {
        Some(u64::from_le_bytes(self.as_bytes().try_into().ok()?))
    }

    /// The cursor's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

/// A byte range of a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    /// First byte.
    pub offset: u32,
    /// Bytes (at least 1).
    pub len: u32,
}

// ---------------------------------------------------------------------------------------------
// Request bodies

/// HELLO request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HelloRequest {
    /// Oldest protocol version the client speaks (at least 1).
    pub version_min: u8,
    /// Newest protocol version the client speaks.
    pub version_max: u8,
    /// The client's capabilities.
    pub capabilities: Capabilities,
    /// The answer to the server's challenge (second HELLO of an authenticated connection).
    pub auth: Option<AuthProof>,
}

impl HelloRequest {
    /// The version to speak: the newest both sides speak (this build speaks
    /// 1..=[`PROTOCOL_VERSION`]), or `None` (answer UNSUPPORTED_VERSION).
    pub fn negotiate(&self) -> Option<u8> {
        let version = self.version_max.min(PROTOCOL_VERSION);
        (version >= self.version_min).then_some(version)
    }
}

/// PUT request: the value follows in the frame's data section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PutRequest {
    /// Bytes of the value (the header's data length).
    pub value_len: u32,
    /// The client's crc32c of the value; a mismatch is answered CHECKSUM_MISMATCH.
    pub value_crc32c: u32,
}

impl PutRequest {
    /// Checks the received value against the request: its length and crc32c.
    pub fn check_value(&self, value: &[u8]) -> Result<()> {
        check_data("PUT value", value, self.value_len, self.value_crc32c)
    }
}

/// GET request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GetRequest {
    /// The bytes wanted; `None` for the whole value.
    pub range: Option<ByteRange>,
}

/// LIST request: one page of a disk's keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListRequest {
    /// Most keys wanted (1..=[`LIST_KEYS_MAX`]); the server may return fewer.
    pub keys_max: u32,
    /// Where to go on (a previous page's `next`); `None` to start.
    pub cursor: Option<ListCursor>,
}

/// What a request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestBody {
    /// Handshake.
    Hello(HelloRequest),
    /// Store a value.
    Put(PutRequest),
    /// Read a value or a range of it.
    Get(GetRequest),
    /// Delete the key.
    Delete,
    /// Length, crc32c, sequence number.
    Stat,
    /// Whether the key exists.
    Exists,
    /// A page of keys.
    List(ListRequest),
    /// State and counters of the header's disk, or of all ([`DISK_ID_ALL`]).
    DiskStatus,
}

/// A request: the header's addressing fields and the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Chosen by the client, unique among its requests in flight, never
    /// [`wire::REQUEST_ID_NOTICE`].
    pub request_id: u32,
    /// The disk.
    pub disk_id: u16,
    /// The key ([`wire::KEY_NONE`] for opcodes without one).
    pub key: Key,
    /// What is asked.
    pub body: RequestBody,
}

impl RequestBody {
    /// The opcode of this body.
    pub fn opcode(&self) -> Opcode {
        match self {
            RequestBody::Hello(_) => Opcode::Hello,
            RequestBody::Put(_) => Opcode::Put,
            RequestBody::Get(_) => Opcode::Get,
            RequestBody::Delete => Opcode::Delete,
            RequestBody::Stat => Opcode::Stat,
            RequestBody::Exists => Opcode::Exists,
            RequestBody::List(_) => Opcode::List,
            RequestBody::DiskStatus => Opcode::DiskStatus,
        }
    }

    fn data_len(&self) -> u32 {
        match self {
            RequestBody::Put(put) => put.value_len,
            _ => 0,
        }
    }

    fn meta_len(&self) -> usize {
        match self {
            RequestBody::Hello(hello) if hello.auth.is_some() => HELLO_REQUEST_AUTH_BYTES,
            RequestBody::Hello(_) => HELLO_REQUEST_BYTES,
            RequestBody::Put(_) => PUT_REQUEST_BYTES,
            RequestBody::Get(get) if get.range.is_some() => GET_RANGE_BYTES,
            RequestBody::List(list) => LIST_REQUEST_FIXED_BYTES + cursor_len(list.cursor),
            RequestBody::Get(_)
            | RequestBody::Delete
            | RequestBody::Stat
            | RequestBody::Exists
            | RequestBody::DiskStatus => 0,
        }
    }

    fn write_meta(&self, out: &mut Vec<u8>) {
        match self {
            RequestBody::Hello(hello) => write_hello_request(out, hello),
            RequestBody::Put(put) => out.extend_from_slice(&put.value_crc32c.to_le_bytes()),
            RequestBody::Get(GetRequest { range: Some(range) }) => {
                out.extend_from_slice(&range.offset.to_le_bytes());
                out.extend_from_slice(&range.len.to_le_bytes());
            }
            RequestBody::List(list) => {
                out.extend_from_slice(&list.keys_max.to_le_bytes());
                write_cursor(out, list.cursor);
            }
            RequestBody::Get(GetRequest { range: None })
            | RequestBody::Delete
            | RequestBody::Stat
            | RequestBody::Exists
            | RequestBody::DiskStatus => {}
        }
    }

    /// Checks the fields [`Request::encode`] would panic on: versions, value length, range,
    /// `keys_max`.
    pub(crate) fn validate(&self) -> Result<()> {
        match self {
            RequestBody::Hello(hello) => validate_versions(hello.version_min, hello.version_max),
            RequestBody::Put(put) => validate_value_len("PUT request", put.value_len),
            RequestBody::Get(GetRequest { range: Some(range) }) => validate_range(range),
            RequestBody::List(list) => validate_keys_max(list.keys_max),
            RequestBody::Get(GetRequest { range: None })
            | RequestBody::Delete
            | RequestBody::Stat
            | RequestBody::Exists
            | RequestBody::DiskStatus => Ok(()),
        }
    }
}

impl Request {
    /// Appends the request's header and meta section to `out` (a PUT's value is not appended:
    /// send it after these bytes). Returns the header written.
    ///
    /// Panics if the request is invalid (a bug in the caller): fields out of range, a key on an
    /// opcode without one, a disk id the opcode does not allow.
    pub fn encode(&self, out: &mut Vec<u8>) -> FrameHeader {
        if let Err(err) = self.body.validate() {
            panic!("encoding an invalid request: {err}");
        }
        let header = FrameHeader {
            opcode: self.body.opcode(),
            flags: Flags::NONE,
            request_id: self.request_id,
            disk_id: self.disk_id,
            status: Status::Ok,
            key: self.key,
            meta_len: 0,
            data_len: self.body.data_len(),
            meta_crc32c: 0,
        };
        wire::encode_frame(out, &header, self.body.meta_len(), |out| self.body.write_meta(out))
    }

    /// Decodes a request from its validated header and its meta section (whose length and
    /// crc32c are checked against the header here).
    pub fn decode(header: &FrameHeader, meta: &[u8]) -> Result<Request> {
        if header.is_response() {
            return Err(Error::BadHeaderField {
                frame: header.context(),
                field: "flags",
                value: header.flags.bits().into(),
            });
        }
        header.check_meta(meta)?;
        let body = match header.opcode {
            Opcode::Hello => RequestBody::Hello(read_hello_request(meta)?),
            Opcode::Put => {
                let mut r = Reader::new("PUT request", meta);
                let value_crc32c = r.u32()?;
                r.finish()?;
                RequestBody::Put(PutRequest { value_len: header.data_len, value_crc32c })
            }
            Opcode::Get => RequestBody::Get(read_get_request(meta)?),
            Opcode::Delete => read_empty("DELETE request", meta, RequestBody::Delete)?,
            Opcode::Stat => read_empty("STAT request", meta, RequestBody::Stat)?,
            Opcode::Exists => read_empty("EXISTS request", meta, RequestBody::Exists)?,
            Opcode::List => RequestBody::List(read_list_request(meta)?),
            Opcode::DiskStatus => read_empty("DISK_STATUS request", meta, RequestBody::DiskStatus)?,
        };
        body.validate()?;
        Ok(Request {
            request_id: header.request_id,
            disk_id: header.disk_id,
            key: header.key,
            body,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Response bodies

/// HELLO response (status OK).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HelloResponse {
    /// The version both sides speak from now on.
    pub version: u8,
    /// The node's capabilities.
    pub capabilities: Capabilities,
    /// Largest value the node accepts.
    pub value_bytes_max: u32,
    /// Requests the node reads from a connection before answering them.
    pub requests_in_flight_max: u32,
    /// `auth::server_proof(..)` when the client authenticated, so it knows the node holds the
    /// secret too; `None` (all zero on the wire) otherwise.
    pub server_proof: Option<Proof>,
    /// The node's disks, by ascending id.
    pub disks: Vec<DiskInfo>,
}

/// HELLO response with status AUTH_REQUIRED.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthChallenge {
    /// Random bytes chosen by the server for this connection.
    pub server_nonce: Nonce,
}

/// What a successful PUT did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum PutOutcome {
    /// The value was written.
    Stored = 0,
    /// The same value was already stored under the key (PUT is idempotent).
    AlreadyStored = 1,
}

/// GET response (status OK): the bytes follow in the frame's data section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GetResponse {
    /// Length of the whole stored value.
    pub value_len: u32,
    /// Stored crc32c of the whole value.
    pub value_crc32c: u32,
    /// Offset of the returned bytes in the value.
    pub offset: u32,
    /// Bytes returned (the header's data length).
    pub data_len: u32,
    /// crc32c of the returned bytes (equal to `value_crc32c` for the whole value).
    pub data_crc32c: u32,
}

impl GetResponse {
    /// Checks received bytes against the response: their length and crc32c.
    pub fn check_data(&self, data: &[u8]) -> Result<()> {
        check_data("GET data", data, self.data_len, self.data_crc32c)
    }

    /// Whether the response holds the whole value.
    pub fn is_whole(&self) -> bool {
        self.offset == 0 && self.data_len == self.value_len
    }
}

/// STAT response (status OK).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatResponse {
    /// Value length.
    pub value_len: u32,
    /// Stored crc32c of the value.
    pub value_crc32c: u32,
    /// Sequence number of the record.
    pub seq: u64,
}

/// LIST response (status OK): one page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListPage {
    /// Up to the request's `keys_max` keys.
    pub keys: Vec<Key>,
    /// Where the next page starts; `None` when this was the last.
    pub next: Option<ListCursor>,
}

/// Any response whose status is an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorResponse {
    /// Not OK and not AUTH_REQUIRED.
    pub status: Status,
    /// What went wrong, for people (may be empty; cut to [`ERROR_MESSAGE_BYTES_MAX`] bytes).
    pub message: String,
}

/// What a response answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResponseBody {
    /// HELLO, status OK.
    Hello(HelloResponse),
    /// HELLO, status AUTH_REQUIRED.
    AuthRequired(AuthChallenge),
    /// PUT, status OK.
    Put(PutOutcome),
    /// GET, status OK.
    Get(GetResponse),
    /// DELETE, status OK.
    Delete,
    /// STAT, status OK.
    Stat(StatResponse),
    /// EXISTS, status OK.
    Exists(bool),
    /// LIST, status OK.
    List(ListPage),
    /// DISK_STATUS, status OK: disks by ascending id.
    DiskStatus(Vec<DiskStatus>),
    /// Any opcode, an error status.
    Error(ErrorResponse),
}

/// A response: the request's addressing fields, repeated, and the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The request's id.
    pub request_id: u32,
    /// The request's opcode.
    pub opcode: Opcode,
    /// The request's disk id.
    pub disk_id: u16,
    /// The request's key.
    pub key: Key,
    /// The answer.
    pub body: ResponseBody,
}

impl ResponseBody {
    /// The status this body is sent with.
    pub fn status(&self) -> Status {
        match self {
            ResponseBody::AuthRequired(_) => Status::AuthRequired,
            ResponseBody::Error(error) => error.status,
            _ => Status::Ok,
        }
    }

    /// The opcode this body answers; `None` for errors (they answer any).
    fn opcode(&self) -> Option<Opcode> {
        Some(match self {
            ResponseBody::Hello(_) | ResponseBody::AuthRequired(_) => Opcode::Hello,
            ResponseBody::Put(_) => Opcode::Put,
            ResponseBody::Get(_) => Opcode::Get,
            ResponseBody::Delete => Opcode::Delete,
            ResponseBody::Stat(_) => Opcode::Stat,
            ResponseBody::Exists(_) => Opcode::Exists,
            ResponseBody::List(_) => Opcode::List,
            ResponseBody::DiskStatus(_) => Opcode::DiskStatus,
            ResponseBody::Error(_) => return None,
        })
    }

    fn data_len(&self) -> u32 {
        match self {
            ResponseBody::Get(get) => get.data_len,
            _ => 0,
        }
    }

    fn meta_len(&self) -> usize {
        match self {
            ResponseBody::Hello(hello) => {
                HELLO_RESPONSE_FIXED_BYTES + hello.disks.len() * DISK_INFO_BYTES
            }
            ResponseBody::AuthRequired(_) => AUTH_CHALLENGE_BYTES,
            ResponseBody::Put(_) => PUT_RESPONSE_BYTES,
            ResponseBody::Get(_) => GET_RESPONSE_BYTES,
            ResponseBody::Delete => 0,
            ResponseBody::Stat(_) => STAT_RESPONSE_BYTES,
            ResponseBody::Exists(_) => EXISTS_RESPONSE_BYTES,
            ResponseBody::List(page) => {
                LIST_RESPONSE_FIXED_BYTES + cursor_len(page.next) + page.keys.len() * KEY_BYTES
            }
            ResponseBody::DiskStatus(disks) => {
                DISK_STATUS_FIXED_BYTES + disks.len() * DISK_STATUS_BYTES
            }
            ResponseBody::Error(error) => wire::truncate_message(&error.message).len(),
        }
    }

    fn write_meta(&self, out: &mut Vec<u8>) {
        match self {
            ResponseBody::Hello(hello) => write_hello_response(out, hello),
            ResponseBody::AuthRequired(challenge) => {
                out.extend_from_slice(&[AUTH_METHOD_HMAC_SHA256, 0, 0, 0]);
                out.extend_from_slice(&challenge.server_nonce);
            }
            ResponseBody::Put(outcome) => out.push(*outcome as u8),
            ResponseBody::Get(get) => {
                out.extend_from_slice(&get.value_len.to_le_bytes());
                out.extend_from_slice(&get.value_crc32c.to_le_bytes());
                out.extend_from_slice(&get.offset.to_le_bytes());
                out.extend_from_slice(&get.data_crc32c.to_le_bytes());
            }
            ResponseBody::Delete => {}
            ResponseBody::Stat(stat) => {
                out.extend_from_slice(&stat.value_len.to_le_bytes());
                out.extend_from_slice(&stat.value_crc32c.to_le_bytes());
                out.extend_from_slice(&stat.seq.to_le_bytes());
            }
            ResponseBody::Exists(exists) => out.push(u8::from(*exists)),
            ResponseBody::List(page) => {
                out.extend_from_slice(&(page.keys.len() as u32).to_le_bytes());
                write_cursor(out, page.next);
                for key in &page.keys {
                    out.extend_from_slice(key);
                }
            }
            ResponseBody::DiskStatus(disks) => {
                out.extend_from_slice(&(disks.len() as u16).to_le_bytes());
                out.extend_from_slice(&[0, 0]);
                for disk in disks {
                    write_disk_status(out, disk);
                }
            }
            ResponseBody::Error(error) => {
                out.extend_from_slice(wire::truncate_message(&error.message).as_bytes());
            }
        }
    }

    fn validate(&self) -> Result<()> {
        match self {
            ResponseBody::Hello(hello) => validate_hello_response(hello),
            ResponseBody::Get(get) => validate_get_response(get),
            ResponseBody::Stat(stat) => validate_value_len("STAT response", stat.value_len),
            ResponseBody::List(page) => {
                check_count("LIST response", page.keys.len(), LIST_KEYS_MAX)
            }
            ResponseBody::DiskStatus(disks) => {
                check_count("DISK_STATUS response", disks.len(), DISKS_MAX.into())?;
                validate_disks("DISK_STATUS response", disks.iter().map(|d| &d.info))
            }
            ResponseBody::Error(error) => match error.status {
                Status::Ok | Status::AuthRequired => Err(Error::BadField {
                    what: "error response",
                    field: "status",
                    value: (error.status as u16).into(),
                }),
                _ => Ok(()),
            },
            ResponseBody::AuthRequired(_)
            | ResponseBody::Put(_)
            | ResponseBody::Delete
            | ResponseBody::Exists(_) => Ok(()),
        }
    }
}

impl Response {
    /// A response to the request with `header`: its id, opcode, disk id and key.
    pub fn reply_to(header: &FrameHeader, body: ResponseBody) -> Response {
        Response {
            request_id: header.request_id,
            opcode: header.opcode,
            disk_id: header.disk_id,
            key: header.key,
            body,
        }
    }

    /// The status.
    pub fn status(&self) -> Status {
        self.body.status()
    }

    /// Appends the response's header and meta section to `out` (a GET's bytes are not
    /// appended: send them after these bytes). Returns the header written.
    ///
    /// Panics if the response is invalid (a bug in the caller): a body that does not answer
    /// `opcode`, counts over their limits, fields out of range.
    pub fn encode(&self, out: &mut Vec<u8>) -> FrameHeader {
        if let Some(opcode) = self.body.opcode() {
            assert_eq!(opcode, self.opcode, "response body does not answer its opcode");
        }
        if let Err(err) = self.body.validate() {
            panic!("encoding an invalid response: {err}");
        }
        let header = FrameHeader {
            opcode: self.opcode,
            flags: Flags::RESPONSE,
            request_id: self.request_id,
            disk_id: self.disk_id,
            status: self.body.status(),
            key: self.key,
            meta_len: 0,
            data_len: self.body.data_len(),
            meta_crc32c: 0,
        };
        wire::encode_frame(out, &header, self.body.meta_len(), |out| self.body.write_meta(out))
    }

    /// Decodes a response from its validated header and its meta section (whose length and
    /// crc32c are checked against the header here).
    pub fn decode(header: &FrameHeader, meta: &[u8]) -> Result<Response> {
        if !header.is_response() {
            return Err(Error::BadHeaderField {
                frame: header.context(),
                field: "flags",
                value: header.flags.bits().into(),
            });
        }
        header.check_meta(meta)?;
        let body = match (header.status, header.opcode) {
            (Status::Ok, Opcode::Hello) => ResponseBody::Hello(read_hello_response(meta)?),
            (Status::Ok, Opcode::Put) => {
                let mut r = Reader::new("PUT response", meta);
                let outcome = match r.u8()? {
                    0 => PutOutcome::Stored,
                    1 => PutOutcome::AlreadyStored,
                    other => return Err(bad_field("PUT response", "outcome", other.into())),
                };
                r.finish()?;
                ResponseBody::Put(outcome)
            }
            (Status::Ok, Opcode::Get) => ResponseBody::Get(read_get_response(meta, header)?),
            (Status::Ok, Opcode::Delete) => {
                read_empty("DELETE response", meta, ResponseBody::Delete)?
            }
            (Status::Ok, Opcode::Stat) => {
                let mut r = Reader::new("STAT response", meta);
                let stat =
                    StatResponse { value_len: r.u32()?, value_crc32c: r.u32()?, seq: r.u64()? };
                r.finish()?;
                ResponseBody::Stat(stat)
            }
            (Status::Ok, Opcode::Exists) => {
                let mut r = Reader::new("EXISTS response", meta);
                let exists = r.bool("exists")?;
                r.finish()?;
                ResponseBody::Exists(exists)
            }
            (Status::Ok, Opcode::List) => ResponseBody::List(read_list_page(meta)?),
            (Status::Ok, Opcode::DiskStatus) => {
                ResponseBody::DiskStatus(read_disk_status_response(meta)?)
            }
            (Status::AuthRequired, Opcode::Hello) => {
                let mut r = Reader::new("AUTH_REQUIRED response", meta);
                let method = r.u8()?;
                if method != AUTH_METHOD_HMAC_SHA256 {
                    return Err(bad_field("AUTH_REQUIRED response", "method", method.into()));
                }
                r.reserved(3)?;
                let server_nonce = r.array()?;
                r.finish()?;
                ResponseBody::AuthRequired(AuthChallenge { server_nonce })
            }
            (Status::AuthRequired, _) => {
                return Err(Error::BadHeaderField {
                    frame: header.context(),
                    field: "status",
                    value: (Status::AuthRequired as u16).into(),
                });
            }
            (status, _) => {
                let message = std::str::from_utf8(meta)
                    .map_err(|_| Error::BadUtf8 { what: "error message" })?;
                ResponseBody::Error(ErrorResponse { status, message: message.to_owned() })
            }
        };
        body.validate()?;
        Ok(Response::reply_to(header, body))
    }
}

// ---------------------------------------------------------------------------------------------
// Layouts

fn write_hello_request(out: &mut Vec<u8>, hello: &HelloRequest) {
    let auth = u8::from(hello.auth.is_some());
    out.extend_from_slice(&[hello.version_min, hello.version_max, auth, 0]);
    out.extend_from_slice(&hello.capabilities.0.to_le_bytes());
    if let Some(auth) = &hello.auth {
        out.extend_from_slice(&auth.client_nonce);
        out.extend_from_slice(&auth.proof);
    }
}

fn read_hello_request(meta: &[u8]) -> Result<HelloRequest> {
    let mut r = Reader::new("HELLO request", meta);
    let version_min = r.u8()?;
    let version_max = r.u8()?;
    let has_auth = r.bool("auth")?;
    r.reserved(1)?;
    let capabilities = Capabilities(r.u32()?);
    let auth = if has_auth {
        Some(AuthProof { client_nonce: r.array()?, proof: r.array()? })
    } else {
        None
    };
    r.finish()?;
    Ok(HelloRequest { version_min, version_max, capabilities, auth })
}

fn write_hello_response(out: &mut Vec<u8>, hello: &HelloResponse) {
    out.extend_from_slice(&[hello.version, 0]);
    out.extend_from_slice(&(hello.disks.len() as u16).to_le_bytes());
    out.extend_from_slice(&hello.capabilities.0.to_le_bytes());
    out.extend_from_slice(&hello.value_bytes_max.to_le_bytes());
    out.extend_from_slice(&hello.requests_in_flight_max.to_le_bytes());
    out.extend_from_slice(&hello.server_proof.unwrap_or([0; PROOF_BYTES]));
    for disk in &hello.disks {
        write_disk_info(out, disk);
    }
}

fn read_hello_response(meta: &[u8]) -> Result<HelloResponse> {
    const WHAT: &str = "HELLO response";
    let mut r = Reader::new(WHAT, meta);
    let version = r.u8()?;
    r.reserved(1)?;
    let count = r.u16()?;
    let capabilities = Capabilities(r.u32()?);
    let value_bytes_max = r.u32()?;
    let requests_in_flight_max = r.u32()?;
    let proof: Proof = r.array()?;
    let server_proof = (proof != [0; PROOF_BYTES]).then_some(proof);
    check_count(WHAT, count.into(), DISKS_MAX.into())?;
    r.expect_entries(count.into(), DISK_INFO_BYTES)?;
    let mut disks = Vec::with_capacity(count.into());
    for _ in 0..count {
        disks.push(read_disk_info(&mut r)?);
    }
    r.finish()?;
    Ok(HelloResponse {
        version,
        capabilities,
        value_bytes_max,
        requests_in_flight_max,
        server_proof,
        disks,
    })
}

fn write_disk_info(out: &mut Vec<u8>, disk: &DiskInfo) {
    out.extend_from_slice(&disk.disk_id.to_le_bytes());
    out.extend_from_slice(&[disk.state as u8, 0]);
    out.extend_from_slice(&disk.shard.to_le_bytes());
    out.extend_from_slice(&disk.shard_port.to_le_bytes());
    out.extend_from_slice(&disk.capacity_bytes.to_le_bytes());
    out.extend_from_slice(&disk.free_bytes.to_le_bytes());
    out.extend_from_slice(&disk.disk_uuid);
}

fn read_disk_info(r: &mut Reader<'_>) -> Result<DiskInfo> {
    let disk_id = r.u16()?;
    let state_byte = r.u8()?;
    let state = DiskState::from_u8(state_byte)
        .ok_or_else(|| bad_field(r.what, "disk state", state_byte.into()))?;
    r.reserved(1)?;
    Ok(DiskInfo {
        disk_id,
        state,
        shard: r.u16()?,
        shard_port: r.u16()?,
        capacity_bytes: r.u64()?,
        free_bytes: r.u64()?,
        disk_uuid: r.array()?,
    })
}

fn write_disk_status(out: &mut Vec<u8>, disk: &DiskStatus) {
    write_disk_info(out, &disk.info);
    out.extend_from_slice(&disk.live_keys.to_le_bytes());
    out.extend_from_slice(&disk.live_value_bytes.to_le_bytes());
    out.extend_from_slice(&disk.checksum_errors.to_le_bytes());
}

fn read_disk_status_response(meta: &[u8]) -> Result<Vec<DiskStatus>> {
    const WHAT: &str = "DISK_STATUS response";
    let mut r = Reader::new(WHAT, meta);
    let count = r.u16()?;
    r.reserved(2)?;
    check_count(WHAT, count.into(), DISKS_MAX.into())?;
    r.expect_entries(count.into(), DISK_STATUS_BYTES)?;
    let mut disks = Vec::with_capacity(count.into());
    for _ in 0..count {
        disks.push(DiskStatus {
            info: read_disk_info(&mut r)?,
            live_keys: r.u64()?,
            live_value_bytes: r.u64()?,
            checksum_errors: r.u64()?,
        });
    }
    r.finish()?;
    Ok(disks)
}

/// `body`, for a message without fields.
fn read_empty<T>(what: &'static str, meta: &[u8], body: T) -> Result<T> {
    Reader::new(what, meta).finish()?;
    Ok(body)
}

fn read_get_request(meta: &[u8]) -> Result<GetRequest> {
    if meta.is_empty() {
        return Ok(GetRequest { range: None });
    }
    let mut r = Reader::new("GET request", meta);
    let range = ByteRange { offset: r.u32()?, len: r.u32()? };
    r.finish()?;
    Ok(GetRequest { range: Some(range) })
}

fn read_get_response(meta: &[u8], header: &FrameHeader) -> Result<GetResponse> {
    let mut r = Reader::new("GET response", meta);
    let get = GetResponse {
        value_len: r.u32()?,
        value_crc32c: r.u32()?,
        offset: r.u32()?,
        data_crc32c: r.u32()?,
        data_len: header.data_len,
    };
    r.finish()?;
    Ok(get)
}

fn read_list_request(meta: &[u8]) -> Result<ListRequest> {
    let mut r = Reader::new("LIST request", meta);
    let keys_max = r.u32()?;
    let cursor = read_cursor(&mut r)?;
    r.finish()?;
    Ok(ListRequest { keys_max, cursor })
}

fn read_list_page(meta: &[u8]) -> Result<ListPage> {
    const WHAT: &str = "LIST response";
    let mut r = Reader::new(WHAT, meta);
    let count = r.u32()?;
    let next = read_cursor(&mut r)?;
    check_count(WHAT, count as usize, LIST_KEYS_MAX)?;
    r.expect_entries(count as usize, KEY_BYTES)?;
    let mut keys = Vec::with_capacity(count as usize);
    for _ in 0..count {
        keys.push(r.array()?);
    }
    r.finish()?;
    Ok(ListPage { keys, next })
}

fn cursor_len(cursor: Option<ListCursor>) -> usize {
    cursor.map_or(0, |c| c.as_bytes().len())
}

fn write_cursor(out: &mut Vec<u8>, cursor: Option<ListCursor>) {
    out.push(cursor_len(cursor) as u8);
    if let Some(cursor) = &cursor {
        out.extend_from_slice(cursor.as_bytes());
    }
}

fn read_cursor(r: &mut Reader<'_>) -> Result<Option<ListCursor>> {
    let len = r.u8()?;
    if len == 0 {
        return Ok(None);
    }
    if usize::from(len) > LIST_CURSOR_BYTES_MAX {
        return Err(bad_field(r.what, "cursor length", len.into()));
    }
    ListCursor::new(r.take(len.into())?).map(Some)
}

// ---------------------------------------------------------------------------------------------
// Validation shared by decoders (errors) and encoders (panics)

fn validate_versions(min: u8, max: u8) -> Result<()> {
    if min == 0 {
        return Err(bad_field("HELLO request", "version_min", 0));
    }
    if min > max {
        return Err(bad_field("HELLO request", "version_max", max.into()));
    }
    Ok(())
}

fn validate_value_len(what: &'static str, value_len: u32) -> Result<()> {
    if value_len == 0 || value_len > VALUE_BYTES_FORMAT_MAX {
        return Err(bad_field(what, "value length", value_len.into()));
    }
    Ok(())
}

fn validate_range(range: &ByteRange) -> Result<()> {
    let end = u64::from(range.offset) + u64::from(range.len);
    if range.len == 0 || end > u64::from(VALUE_BYTES_FORMAT_MAX) {
        return Err(bad_field("GET request", "range length", range.len.into()));
    }
    Ok(())
}

fn validate_keys_max(keys_max: u32) -> Result<()> {
    if keys_max == 0 || keys_max > LIST_KEYS_MAX {
        return Err(bad_field("LIST request", "keys_max", keys_max.into()));
    }
    Ok(())
}

fn validate_hello_response(hello: &HelloResponse) -> Result<()> {
    const WHAT: &str = "HELLO response";
    if hello.version == 0 || hello.version > PROTOCOL_VERSION {
        return Err(bad_field(WHAT, "version", hello.version.into()));
    }
    if hello.value_bytes_max == 0 || hello.value_bytes_max > VALUE_BYTES_FORMAT_MAX {
        return Err(bad_field(WHAT, "value_bytes_max", hello.value_bytes_max.into()));
    }
    if hello.requests_in_flight_max == 0 || hello.requests_in_flight_max > REQUESTS_IN_FLIGHT_LIMIT
    {
        return Err(bad_field(WHAT, "requests_in_flight_max", hello.requests_in_flight_max.into()));
    }
    check_count(WHAT, hello.disks.len(), DISKS_MAX.into())?;
    validate_disks(WHAT, hello.disks.iter())
}

/// Disks are listed by strictly ascending id (so each appears once), none is
/// [`DISK_ID_ALL`], and none has more free bytes than capacity.
fn validate_disks<'a>(what: &'static str, disks: impl Iterator<Item = &'a DiskInfo>) -> Result<()> {
    let mut previous: Option<u16> = None;
    for disk in disks {
        if disk.disk_id == DISK_ID_ALL || previous.is_some_and(|p| disk.disk_id <= p) {
            return Err(bad_field(what, "disk id", disk.disk_id.into()));
        }
        if disk.free_bytes > disk.capacity_bytes {
            return Err(bad_field(what, "free bytes", disk.free_bytes));
        }
        previous = Some(disk.disk_id);
    }
    Ok(())
}

fn validate_get_response(get: &GetResponse) -> Result<()> {
    const WHAT: &str = "GET response";
    validate_value_len(WHAT, get.value_len)?;
    let end = u64::from(get.offset) + u64::from(get.data_len);
    if get.data_len == 0 || end > u64::from(get.value_len) {
        return Err(bad_field(WHAT, "data length", get.data_len.into()));
    }
    if get.is_whole() && get.data_crc32c != get.value_crc32c {
        return Err(bad_field(WHAT, "data crc32c", get.data_crc32c.into()));
    }
    Ok(())
}

fn check_count(what: &'static str, count: usize, max: u32) -> Result<()> {
    if count > max as usize {
        return Err(Error::TooMany { what, count: count as u64, max: max.into() });
    }
    Ok(())
}

fn check_data(what: &'static str, data: &[u8], len: u32, crc32c: u32) -> Result<()> {
    if data.len() != len as usize {
        return Err(bad_field(what, "length", data.len() as u64));
    }
    let got = crc32c::crc32c(data);
    if got != crc32c {
        return Err(Error::DataChecksum { what, expected: crc32c, got });
    }
    Ok(())
}

fn bad_field(what: &'static str, field: &'static str, value: u64) -> Error {
    Error::BadField { what, field, value }
}

/// Reads fields from a meta section; every read is bounds-checked.
struct Reader<'a> {
    what: &'static str,
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn new(what: &'static str, bytes: &'a [u8]) -> Reader<'a> {
        Reader { what, bytes, at: 0 }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let needed = self.at.saturating_add(n);
        if needed > self.bytes.len() {
            return Err(Error::Truncated { what: self.what, len: self.bytes.len(), needed });
        }
        let taken = &self.bytes[self.at..needed];
        self.at = needed;
        Ok(taken)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut array = [0u8; N];
        array.copy_from_slice(self.take(N)?);
        Ok(array)
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16> {
        self.array().map(u16::from_le_bytes)
    }

    fn u32(&mut self) -> Result<u32> {
        self.array().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> Result<u64> {
        self.array().map(u64::from_le_bytes)
    }

    fn bool(&mut self, field: &'static str) -> Result<bool> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(bad_field(self.what, field, other.into())),
        }
    }

    /// `n` reserved bytes, which must be zero.
    fn reserved(&mut self, n: usize) -> Result<()> {
        let what = self.what;
        match self.take(n)?.iter().find(|b| **b != 0) {
            Some(b) => Err(bad_field(what, "reserved", (*b).into())),
            None => Ok(()),
        }
    }

    /// Checks that exactly `count` entries of `entry_bytes` remain, before anything is
    /// allocated for them.
    fn expect_entries(&self, count: usize, entry_bytes: usize) -> Result<()> {
        let expected = self.at + count * entry_bytes;
        let len = self.bytes.len();
        match expected.cmp(&len) {
            std::cmp::Ordering::Greater => {
                Err(Error::Truncated { what: self.what, len, needed: expected })
            }
            std::cmp::Ordering::Less => {
                Err(Error::TrailingBytes { what: self.what, len, expected })
            }
            std::cmp::Ordering::Equal => Ok(()),
        }
    }

    fn finish(self) -> Result<()> {
        if self.at != self.bytes.len() {
            return Err(Error::TrailingBytes {
                what: self.what,
                len: self.bytes.len(),
                expected: self.at,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::auth::{self, Secret};
    use crate::error::Disposition;
    use crate::wire::{Decoded, HEADER_BYTES, KEY_NONE, Limits, decode_frame};

    fn key() -> Key {
        std::array::from_fn(|i| i as u8)
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Decodes `bytes` as one whole frame.
    fn frame(bytes: &[u8]) -> (FrameHeader, Vec<u8>, Vec<u8>) {
        match decode_frame(bytes, &Limits::format_max()) {
            Ok(Decoded::Ready(f)) => {
                assert_eq!(f.frame_bytes(), bytes.len());
                (f.header, f.meta.to_vec(), f.data.to_vec())
            }
            other => panic!("not a whole frame: {other:?}"),
        }
    }

    fn encode_request(request: &Request, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let header = request.encode(&mut out);
        assert_eq!(header.data_len as usize, data.len());
        out.extend_from_slice(data);
        out
    }

    fn encode_response(response: &Response, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let header = response.encode(&mut out);
        assert_eq!(header.data_len as usize, data.len());
        out.extend_from_slice(data);
        out
    }

    /// A header for `meta` as a decoder would have accepted it, to test message decoders on
    /// metas the header rules would let through.
    fn header_for(opcode: Opcode, response: bool, status: Status, meta: &[u8]) -> FrameHeader {
        FrameHeader {
            opcode,
            flags: if response { Flags::RESPONSE } else { Flags::NONE },
            request_id: 1,
            disk_id: 0,
            status,
            key: KEY_NONE,
            meta_len: meta.len() as u32,
            data_len: 0,
            meta_crc32c: crc32c::crc32c(meta),
        }
    }

    fn request_error(opcode: Opcode, meta: &[u8]) -> Error {
        Request::decode(&header_for(opcode, false, Status::Ok, meta), meta)
            .expect_err("must be rejected")
    }

    fn response_error(opcode: Opcode, meta: &[u8]) -> Error {
        response_error_with(header_for(opcode, true, Status::Ok, meta), meta)
    }

    fn response_error_with(header: FrameHeader, meta: &[u8]) -> Error {
        Response::decode(&header, meta).expect_err("must be rejected")
    }

    fn disk(disk_id: u16) -> DiskInfo {
        DiskInfo {
            disk_id,
            state: DiskState::Active,
            shard: 1,
            shard_port: 7101,
            capacity_bytes: 1 << 40,
            free_bytes: 1 << 39,
            disk_uuid: std::array::from_fn(|i| 16 + i as u8),
        }
    }

    // -----------------------------------------------------------------------------------------
    // Golden frames. The hex was produced independently of this code (a short Python script
    // following docs/PROTOCOL.md), so a change to the layout fails here.

    #[test]
    fn golden_put_request() {
        let request = Request {
            request_id: 7,
            disk_id: 3,
            key: key(),
            body: RequestBody::Put(PutRequest {
                value_len: 5,
                value_crc32c: crc32c::crc32c(b"hello"),
            }),
        };
        let bytes = encode_request(&request, b"hello");
        assert_eq!(
            hex(&bytes),
            "53484e500102000007000000030000000400000005000000\
             000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\
             81d1a8f32b8617b24cbb719a68656c6c6f"
        );
        let (header, meta, data) = frame(&bytes);
        assert_eq!(Request::decode(&header, &meta), Ok(request.clone()));
        let RequestBody::Put(put) = request.body else { unreachable!() };
        assert_eq!(put.check_value(&data), Ok(()));
    }

    #[test]
    fn golden_get_response_for_a_range() {
        let response = Response {
            request_id: 8,
            opcode: Opcode::Get,
            disk_id: 3,
            key: key(),
            body: ResponseBody::Get(GetResponse {
                value_len: 5,
                value_crc32c: crc32c::crc32c(b"hello"),
                offset: 1,
                data_len: 3,
                data_crc32c: crc32c::crc32c(b"ell"),
            }),
        };
        let bytes = encode_response(&response, b"ell");
        assert_eq!(
            hex(&bytes),
            "53484e500103010008000000030000001000000003000000\
             000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\
             c8538ecb04ff0592050000004cbb719a0100000003355d02656c6c"
        );
        let (header, meta, data) = frame(&bytes);
        assert_eq!(Response::decode(&header, &meta), Ok(response.clone()));
        let ResponseBody::Get(get) = response.body else { unreachable!() };
        assert_eq!(get.check_data(&data), Ok(()));
        assert!(!get.is_whole());
    }

    #[test]
    fn golden_hello_request() {
        let request = Request {
            request_id: 1,
            disk_id: 0,
            key: KEY_NONE,
            body: RequestBody::Hello(HelloRequest {
                version_min: 1,
                version_max: 1,
                capabilities: Capabilities(3),
                auth: None,
            }),
        };
        let bytes = encode_request(&request, &[]);
        assert_eq!(
            hex(&bytes),
            "53484e50010100000100000000000000080000000000000000000000000000000000000000000000\
             000000000000000000000000000000005c6a35cfa7f6c08a0101000003000000"
        );
        let (header, meta, _) = frame(&bytes);
        assert_eq!(Request::decode(&header, &meta), Ok(request));
    }

    #[test]
    fn golden_hello_response() {
        let response = Response {
            request_id: 1,
            opcode: Opcode::Hello,
            disk_id: 0,
            key: KEY_NONE,
            body: ResponseBody::Hello(HelloResponse {
                version: 1,
                capabilities: Capabilities::SHARD_PORTS,
                value_bytes_max: 16 << 20,
                requests_in_flight_max: 128,
                server_proof: None,
                disks: vec![disk(0)],
            }),
        };
        let bytes = encode_response(&response, &[]);
        assert_eq!(
            hex(&bytes),
            "53484e500101010001000000000000005800000000000000\
             0000000000000000000000000000000000000000000000000000000000000000bae7eef84486ffe8\
             01000100010000000000000180000000000000000000000000000000000000000000000000000000\
             0000000000000000000000000100bd1b000000000001000000000000800000001011121314151617\
             18191a1b1c1d1e1f"
        );
        let (header, meta, _) = frame(&bytes);
        assert_eq!(Response::decode(&header, &meta), Ok(response));
    }

    #[test]
    fn golden_auth_challenge() {
        let response = Response {
            request_id: 1,
            opcode: Opcode::Hello,
            disk_id: 0,
            key: KEY_NONE,
            body: ResponseBody::AuthRequired(AuthChallenge { server_nonce: [0x11; 32] }),
        };
        let bytes = encode_response(&response, &[]);
        assert_eq!(
            hex(&bytes),
            "53484e50010101000100000000001000240000000000000000000000000000000000000000000000\
             000000000000000000000000000000004afee027fefbd36b01000000\
             1111111111111111111111111111111111111111111111111111111111111111"
        );
        let (header, meta, _) = frame(&bytes);
        assert_eq!(Response::decode(&header, &meta), Ok(response));
    }

    #[test]
    fn golden_error_response() {
        let response = Response {
            request_id: 9,
            opcode: Opcode::Stat,
            disk_id: 2,
            key: key(),
            body: ResponseBody::Error(ErrorResponse {
                status: Status::NotFound,
                message: "no such key".into(),
            }),
        };
        let bytes = encode_response(&response, &[]);
        assert_eq!(
            hex(&bytes),
            "53484e500105010009000000020001000b00000000000000\
             000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\
             128a1fb8410de7246e6f2073756368206b6579"
        );
        let (header, meta, _) = frame(&bytes);
        assert_eq!(Response::decode(&header, &meta), Ok(response));
    }

    #[test]
    fn golden_list_page() {
        let response = Response {
            request_id: 10,
            opcode: Opcode::List,
            disk_id: 4,
            key: KEY_NONE,
            body: ResponseBody::List(ListPage {
                keys: vec![key(), [0xff; 32]],
                next: Some(ListCursor::from_u64(42)),
            }),
        };
        let bytes = encode_response(&response, &[]);
        assert_eq!(
            hex(&bytes),
            "53484e50010701000a000000040000004d00000000000000000000000000000000000000000000000000\
             0000000000000000000000000000cff88664b550bda502000000082a000000000000000001020304\
             05060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1fffffffffffffffffffffffffff\
             ffffffffffffffffffffffffffffffffffffff"
        );
        let (header, meta, _) = frame(&bytes);
        assert_eq!(Response::decode(&header, &meta), Ok(response));
    }

    // -----------------------------------------------------------------------------------------
    // The authentication exchange, through real frames.

    #[test]
    fn authentication_exchange() {
        let secret = Secret::new(b"0123456789abcdef0123456789abcdef").expect("32 bytes");
        let (server_nonce, client_nonce) = ([0x11; 32], [0x22; 32]);

        // 2. The server challenges the first HELLO.
        let challenge = encode_response(
            &Response {
                request_id: 1,
                opcode: Opcode::Hello,
                disk_id: 0,
                key: KEY_NONE,
                body: ResponseBody::AuthRequired(AuthChallenge { server_nonce }),
            },
            &[],
        );
        let (header, meta, _) = frame(&challenge);
        let Ok(Response { body: ResponseBody::AuthRequired(got), .. }) =
            Response::decode(&header, &meta)
        else {
            panic!("a challenge");
        };

        // 3. The client answers with its proof.
        let proof = auth::client_proof(&secret, &got.server_nonce, &client_nonce);
        assert_eq!(hex(&proof), "9b1fefa786aee84bef383fdaf1f126c1d7985e260c0d7577f3753c5c61f16725");
        let hello = Request {
            request_id: 2,
            disk_id: 0,
            key: KEY_NONE,
            body: RequestBody::Hello(HelloRequest {
                version_min: 1,
                version_max: 1,
                capabilities: Capabilities::AUTH_HMAC_SHA256,
                auth: Some(AuthProof { client_nonce, proof }),
            }),
        };
        let bytes = encode_request(&hello, &[]);
        assert_eq!(bytes.len(), HEADER_BYTES + HELLO_REQUEST_AUTH_BYTES);
        let (header, meta, _) = frame(&bytes);
        let Ok(Request { body: RequestBody::Hello(received), .. }) =
            Request::decode(&header, &meta)
        else {
            panic!("a HELLO");
        };
        assert_eq!(received.negotiate(), Some(1));

        // 4. The server verifies it and proves itself.
        let auth = received.auth.expect("a proof");
        assert_eq!(
            auth::verify_client_proof(&secret, &server_nonce, &auth.client_nonce, &auth.proof),
            Ok(())
        );
        let wrong = Secret::new(&[b'x'; 32]).expect("32 bytes");
        let err = auth::verify_client_proof(&wrong, &server_nonce, &auth.client_nonce, &auth.proof)
            .expect_err("another secret");
        assert_eq!(err.disposition(), Disposition::ReplyAndClose(Status::Unauthorized));
        let server_proof = auth::server_proof(&secret, &server_nonce, &auth.client_nonce);
        assert_eq!(
            hex(&server_proof),
            "9b49831956362b294157e01b44ddd0ac888c21a5867aca226e9883b4d669e6a6"
        );
        let welcome = Response::reply_to(
            &header,
            ResponseBody::Hello(HelloResponse {
                version: 1,
                capabilities: Capabilities::AUTH_HMAC_SHA256,
                value_bytes_max: 16 << 20,
                requests_in_flight_max: 128,
                server_proof: Some(server_proof),
                disks: vec![],
            }),
        );
        let (header, meta, _) = frame(&encode_response(&welcome, &[]));
        let Ok(Response { body: ResponseBody::Hello(hello), .. }) =
            Response::decode(&header, &meta)
        else {
            panic!("a HELLO response");
        };
        let proof = hello.server_proof.expect("the server proves itself");
        assert_eq!(
            auth::verify_server_proof(&secret, &server_nonce, &client_nonce, &proof),
            Ok(())
        );
    }

    // -----------------------------------------------------------------------------------------
    // Rejections

    #[test]
    fn hello_request_rejections() {
        let ok = [1, 1, 0, 0, 0, 0, 0, 0];
        let err = request_error(Opcode::Hello, &[1, 1, 2, 0, 0, 0, 0, 0]);
        assert!(matches!(err, Error::BadField { field: "auth", .. }), "{err}");
        let err = request_error(Opcode::Hello, &[1, 1, 0, 9, 0, 0, 0, 0]);
        assert!(matches!(err, Error::BadField { field: "reserved", .. }), "{err}");
        let err = request_error(Opcode::Hello, &[0, 1, 0, 0, 0, 0, 0, 0]);
        assert!(matches!(err, Error::BadField { field: "version_min", .. }), "{err}");
        let err = request_error(Opcode::Hello, &[2, 1, 0, 0, 0, 0, 0, 0]);
        assert!(matches!(err, Error::BadField { field: "version_max", .. }), "{err}");
        let err = request_error(Opcode::Hello, &[1, 1, 1, 0, 0, 0, 0, 0]);
        assert!(matches!(err, Error::Truncated { needed: 40, .. }), "{err}");
        let mut long = ok.to_vec();
        long.push(0);
        let err = request_error(Opcode::Hello, &long);
        assert!(matches!(err, Error::TrailingBytes { expected: 8, .. }), "{err}");
        assert_eq!(err.disposition(), Disposition::Reply(Status::BadRequest));
        let hello = |min, max| HelloRequest {
            version_min: min,
            version_max: max,
            capabilities: Capabilities::NONE,
            auth: None,
        };
        assert_eq!(hello(1, 9).negotiate(), Some(PROTOCOL_VERSION));
        assert_eq!(hello(2, 9).negotiate(), None);
    }

    #[test]
    fn get_and_list_request_rejections() {
        let range = |offset: u32, len: u32| {
            let mut meta = offset.to_le_bytes().to_vec();
            meta.extend_from_slice(&len.to_le_bytes());
            meta
        };
        for meta in [range(0, 0), range(VALUE_BYTES_FORMAT_MAX, 1), range(u32::MAX, u32::MAX)] {
            let err = request_error(Opcode::Get, &meta);
            assert!(matches!(err, Error::BadField { field: "range length", .. }), "{err}");
        }
        let err = request_error(Opcode::Get, &[0; 4]);
        assert!(matches!(err, Error::Truncated { .. }), "{err}");

        let list = |keys_max: u32, cursor: &[u8]| {
            let mut meta = keys_max.to_le_bytes().to_vec();
            meta.push(cursor.len() as u8);
            meta.extend_from_slice(cursor);
            meta
        };
        for keys_max in [0, LIST_KEYS_MAX + 1, u32::MAX] {
            let err = request_error(Opcode::List, &list(keys_max, &[]));
            assert!(matches!(err, Error::BadField { field: "keys_max", .. }), "{err}");
        }
        let err = request_error(Opcode::List, &list(1, &[7; 33]));
        assert!(matches!(err, Error::BadField { field: "cursor length", .. }), "{err}");
        let mut short = list(1, &[7; 8]);
        short.truncate(9);
        let err = request_error(Opcode::List, &short);
        assert!(matches!(err, Error::Truncated { .. }), "{err}");
        let cursor = ListCursor::new(&[7; 8]).expect("valid");
        assert_eq!(cursor.to_u64(), Some(0x0707_0707_0707_0707));
        assert_eq!(ListCursor::new(&[1; 3]).expect("valid").to_u64(), None);
        assert!(ListCursor::new(&[]).is_err());
        assert!(ListCursor::new(&[0; LIST_CURSOR_BYTES_MAX + 1]).is_err());
    }

    #[test]
    fn counts_are_checked_before_allocating() {
        // A LIST page claiming u32::MAX keys in 5 bytes: refused by count, not by running out.
        let mut meta = u32::MAX.to_le_bytes().to_vec();
        meta.push(0);
        let err = response_error(Opcode::List, &meta);
        assert!(matches!(err, Error::TooMany { count: 0xffff_ffff, .. }), "{err}");
        // Within the limit but more than the bytes present.
        let mut meta = 3u32.to_le_bytes().to_vec();
        meta.push(0);
        meta.extend_from_slice(&[0; 64]);
        let err = response_error(Opcode::List, &meta);
        assert!(matches!(err, Error::Truncated { needed: 101, .. }), "{err}");
        meta.extend_from_slice(&[0; 33]);
        let err = response_error(Opcode::List, &meta);
        assert!(matches!(err, Error::TrailingBytes { expected: 101, .. }), "{err}");

        let mut hello = vec![1, 0];
        hello.extend_from_slice(&(DISKS_MAX + 1).to_le_bytes());
        hello.extend_from_slice(&[0; 12]);
        hello.extend_from_slice(&[0; 32]);
        let err = response_error(Opcode::Hello, &hello);
        assert!(matches!(err, Error::TooMany { .. }), "{err}");

        let mut status = u16::MAX.to_le_bytes().to_vec();
        status.extend_from_slice(&[0, 0]);
        let err = response_error(Opcode::DiskStatus, &status);
        assert!(matches!(err, Error::TooMany { .. }), "{err}");
    }

    #[test]
    fn topology_rejections() {
        let encode = |disks: Vec<DiskInfo>| {
            let mut meta = Vec::new();
            write_hello_response(
                &mut meta,
                &HelloResponse {
                    version: 1,
                    capabilities: Capabilities::NONE,
                    value_bytes_max: 1,
                    requests_in_flight_max: 1,
                    server_proof: None,
                    disks,
                },
            );
            meta
        };
        let err = response_error(Opcode::Hello, &encode(vec![disk(2), disk(1)]));
        assert!(matches!(err, Error::BadField { field: "disk id", value: 1, .. }), "{err}");
        let err = response_error(Opcode::Hello, &encode(vec![disk(2), disk(2)]));
        assert!(matches!(err, Error::BadField { field: "disk id", .. }), "{err}");
        let err = response_error(Opcode::Hello, &encode(vec![disk(DISK_ID_ALL)]));
        assert!(matches!(err, Error::BadField { field: "disk id", .. }), "{err}");
        let full = DiskInfo { free_bytes: 2, capacity_bytes: 1, ..disk(0) };
        let err = response_error(Opcode::Hello, &encode(vec![full]));
        assert!(matches!(err, Error::BadField { field: "free bytes", .. }), "{err}");
        let mut meta = encode(vec![disk(0)]);
        meta[HELLO_RESPONSE_FIXED_BYTES + 2] = DiskState::ALL.len() as u8;
        let err = response_error(Opcode::Hello, &meta);
        assert!(matches!(err, Error::BadField { field: "disk state", .. }), "{err}");
        let mut meta = encode(vec![]);
        meta[8..12].copy_from_slice(&(VALUE_BYTES_FORMAT_MAX + 1).to_le_bytes());
        let err = response_error(Opcode::Hello, &meta);
        assert!(matches!(err, Error::BadField { field: "value_bytes_max", .. }), "{err}");
        let mut meta = encode(vec![]);
        meta[12..16].copy_from_slice(&(REQUESTS_IN_FLIGHT_LIMIT + 1).to_le_bytes());
        let err = response_error(Opcode::Hello, &meta);
        assert!(matches!(err, Error::BadField { field: "requests_in_flight_max", .. }), "{err}");
        let mut meta = encode(vec![]);
        meta[0] = PROTOCOL_VERSION + 1;
        let err = response_error(Opcode::Hello, &meta);
        assert!(matches!(err, Error::BadField { field: "version", .. }), "{err}");
    }

    #[test]
    fn small_response_rejections() {
        let err = response_error(Opcode::Put, &[2]);
        assert!(matches!(err, Error::BadField { field: "outcome", .. }), "{err}");
        let err = response_error(Opcode::Exists, &[2]);
        assert!(matches!(err, Error::BadField { field: "exists", .. }), "{err}");
        let err = response_error(Opcode::Stat, &[0; 16]);
        assert!(matches!(err, Error::BadField { field: "value length", .. }), "{err}");
        let err = response_error(Opcode::Delete, &[0]);
        assert!(matches!(err, Error::TrailingBytes { .. }), "{err}");

        let mut challenge = vec![2, 0, 0, 0];
        challenge.extend_from_slice(&[0; 32]);
        let header = header_for(Opcode::Hello, true, Status::AuthRequired, &challenge);
        let err = response_error_with(header, &challenge);
        assert!(matches!(err, Error::BadField { field: "method", .. }), "{err}");
        challenge[0] = AUTH_METHOD_HMAC_SHA256;
        challenge[2] = 1;
        let header = header_for(Opcode::Hello, true, Status::AuthRequired, &challenge);
        let err = response_error_with(header, &challenge);
        assert!(matches!(err, Error::BadField { field: "reserved", .. }), "{err}");

        let header = header_for(Opcode::Get, true, Status::NotFound, &[0xff, 0xfe]);
        let err = response_error_with(header, &[0xff, 0xfe]);
        assert_eq!(err, Error::BadUtf8 { what: "error message" });
    }

    #[test]
    fn get_response_rejections() {
        let get = |value_len: u32, value_crc: u32, offset: u32, data_crc: u32, data_len: u32| {
            let mut meta = Vec::new();
            for v in [value_len, value_crc, offset, data_crc] {
                meta.extend_from_slice(&v.to_le_bytes());
            }
            let mut header = header_for(Opcode::Get, true, Status::Ok, &meta);
            header.data_len = data_len;
            response_error_with(header, &meta)
        };
        let err = get(5, 1, 3, 1, 3);
        assert!(matches!(err, Error::BadField { field: "data length", .. }), "{err}");
        let err = get(5, 1, 0, 1, 0);
        assert!(matches!(err, Error::BadField { field: "data length", .. }), "{err}");
        let err = get(5, 1, 0, 2, 5);
        assert!(matches!(err, Error::BadField { field: "data crc32c", .. }), "{err}");
        let err = get(0, 0, 0, 0, 1);
        assert!(matches!(err, Error::BadField { field: "value length", .. }), "{err}");

        let response = GetResponse {
            value_len: 5,
            value_crc32c: crc32c::crc32c(b"hello"),
            offset: 0,
            data_len: 5,
            data_crc32c: crc32c::crc32c(b"hello"),
        };
        assert_eq!(response.check_data(b"hello"), Ok(()));
        let err = response.check_data(b"jello").expect_err("damaged");
        assert!(matches!(err, Error::DataChecksum { .. }), "{err}");
        assert_eq!(err.disposition(), Disposition::Reply(Status::ChecksumMismatch));
        assert!(response.check_data(b"hell").is_err());
    }

    #[test]
    fn put_value_mismatch_is_a_checksum_mismatch() {
        let put = PutRequest { value_len: 5, value_crc32c: crc32c::crc32c(b"hello") };
        let err = put.check_value(b"hellO").expect_err("damaged");
        assert!(matches!(err, Error::DataChecksum { what: "PUT value", .. }), "{err}");
        assert_eq!(err.disposition(), Disposition::Reply(Status::ChecksumMismatch));
    }

    #[test]
    fn direction_is_checked() {
        let request = Request { request_id: 3, disk_id: 1, key: key(), body: RequestBody::Delete };
        let (header, meta, _) = frame(&encode_request(&request, &[]));
        let err = Response::decode(&header, &meta).expect_err("a request");
        assert!(matches!(err, Error::BadHeaderField { field: "flags", .. }), "{err}");
        let response = Response::reply_to(&header, ResponseBody::Delete);
        let (header, meta, _) = frame(&encode_response(&response, &[]));
        let err = Request::decode(&header, &meta).expect_err("a response");
        assert!(matches!(err, Error::BadHeaderField { field: "flags", .. }), "{err}");
        // A meta section that is not the header's.
        let err = Response::decode(&header, &[1]).expect_err("other meta");
        assert!(matches!(err, Error::TrailingBytes { .. }), "{err}");
    }

    #[test]
    fn rejections_decode_as_error_responses() {
        let request = Request { request_id: 5, disk_id: 2, key: key(), body: RequestBody::Stat };
        let (header, ..) = frame(&encode_request(&request, &[]));
        let mut out = Vec::new();
        let long = "x".repeat(ERROR_MESSAGE_BYTES_MAX + 10);
        wire::encode_rejection(&mut out, &header.context(), Status::BadRequest, &long);
        let (header, meta, _) = frame(&out);
        let response = Response::decode(&header, &meta).expect("an error response");
        assert_eq!(response.status(), Status::BadRequest);
        assert_eq!((response.request_id, response.disk_id, response.key), (5, 2, key()));
        let ResponseBody::Error(error) = response.body else { panic!("an error") };
        assert_eq!(error.message.len(), ERROR_MESSAGE_BYTES_MAX);
    }

    #[test]
    #[should_panic(expected = "encoding an invalid request")]
    fn encoding_an_invalid_request_panics() {
        let body = RequestBody::List(ListRequest { keys_max: 0, cursor: None });
        Request { request_id: 1, disk_id: 0, key: KEY_NONE, body }.encode(&mut Vec::new());
    }

    #[test]
    #[should_panic(expected = "encoding an invalid frame")]
    fn encoding_a_key_where_none_belongs_panics() {
        let body = RequestBody::DiskStatus;
        Request { request_id: 1, disk_id: 0, key: key(), body }.encode(&mut Vec::new());
    }

    #[test]
    #[should_panic(expected = "does not answer its opcode")]
    fn encoding_a_body_for_another_opcode_panics() {
        let response = Response {
            request_id: 1,
            opcode: Opcode::Get,
            disk_id: 0,
            key: KEY_NONE,
            body: ResponseBody::Delete,
        };
        response.encode(&mut Vec::new());
    }

    #[test]
    fn every_status_is_sendable_as_an_error_except_ok_and_auth_required() {
        for status in Status::ALL {
            let body = ResponseBody::Error(ErrorResponse { status, message: String::new() });
            let valid = body.validate().is_ok();
            assert_eq!(valid, !matches!(status, Status::Ok | Status::AuthRequired), "{status:?}");
        }
    }

    // -----------------------------------------------------------------------------------------
    // Round trips

    fn arb_key() -> impl Strategy<Value = Key> {
        prop_oneof![Just(KEY_NONE), any::<[u8; 32]>()]
    }

    fn arb_cursor() -> impl Strategy<Value = Option<ListCursor>> {
        proptest::option::of(
            proptest::collection::vec(any::<u8>(), 1..=LIST_CURSOR_BYTES_MAX)
                .prop_map(|b| ListCursor::new(&b).expect("valid length")),
        )
    }

    fn arb_disk_info() -> impl Strategy<Value = DiskInfo> {
        (
            proptest::sample::select(DiskState::ALL.to_vec()),
            any::<u16>(),
            any::<u16>(),
            any::<u64>(),
            any::<u64>(),
            any::<[u8; 16]>(),
        )
            .prop_map(|(state, shard, shard_port, a, b, disk_uuid)| DiskInfo {
                disk_id: 0,
                state,
                shard,
                shard_port,
                capacity_bytes: a.max(b),
                free_bytes: a.min(b),
                disk_uuid,
            })
    }

    /// Disks with strictly ascending ids.
    fn arb_disks<T: std::fmt::Debug + Clone>(
        entry: impl Strategy<Value = T>,
        set_id: fn(&mut T, u16),
    ) -> impl Strategy<Value = Vec<T>> {
        proptest::collection::vec((1u16..100, entry), 0..8).prop_map(move |entries| {
            let mut id = 0u16;
            entries
                .into_iter()
                .map(|(step, mut e)| {
                    id += step;
                    set_id(&mut e, id - 1);
                    e
                })
                .collect()
        })
    }

    fn arb_request_body() -> impl Strategy<Value = RequestBody> {
        let proof = (any::<[u8; 32]>(), any::<[u8; 32]>())
            .prop_map(|(client_nonce, proof)| AuthProof { client_nonce, proof });
        prop_oneof![
            (1u8..=255, any::<u8>(), any::<u32>(), proptest::option::of(proof)).prop_map(
                |(min, extra, caps, auth)| RequestBody::Hello(HelloRequest {
                    version_min: min,
                    version_max: min.saturating_add(extra),
                    capabilities: Capabilities(caps),
                    auth,
                })
            ),
            (1..=VALUE_BYTES_FORMAT_MAX, any::<u32>()).prop_map(|(value_len, value_crc32c)| {
                RequestBody::Put(PutRequest { value_len, value_crc32c })
            }),
            proptest::option::of((0..VALUE_BYTES_FORMAT_MAX, 1..=VALUE_BYTES_FORMAT_MAX)).prop_map(
                |range| RequestBody::Get(GetRequest {
                    range: range.map(|(offset, len)| ByteRange {
                        offset,
                        len: len.min(VALUE_BYTES_FORMAT_MAX - offset),
                    }),
                })
            ),
            Just(RequestBody::Delete),
            Just(RequestBody::Stat),
            Just(RequestBody::Exists),
            (1..=LIST_KEYS_MAX, arb_cursor())
                .prop_map(|(keys_max, cursor)| RequestBody::List(ListRequest { keys_max, cursor })),
            Just(RequestBody::DiskStatus),
        ]
    }

    fn arb_request() -> impl Strategy<Value = Request> {
        (1..=u32::MAX, any::<u16>(), arb_key(), arb_request_body()).prop_map(
            |(request_id, disk_id, key, body)| {
                let opcode = body.opcode();
                Request {
                    request_id,
                    disk_id: match opcode {
                        Opcode::Hello => 0,
                        Opcode::DiskStatus => disk_id,
                        _ => disk_id.min(DISK_ID_ALL - 1),
                    },
                    key: if opcode.has_key() { key } else { KEY_NONE },
                    body,
                }
            },
        )
    }

    fn arb_error_status() -> impl Strategy<Value = Status> {
        proptest::sample::select(
            Status::ALL
                .into_iter()
                .filter(|s| !matches!(s, Status::Ok | Status::AuthRequired))
                .collect::<Vec<_>>(),
        )
    }

    fn arb_response_body() -> impl Strategy<Value = ResponseBody> {
        let hello = (
            1..=PROTOCOL_VERSION,
            any::<u32>(),
            1..=VALUE_BYTES_FORMAT_MAX,
            1..=REQUESTS_IN_FLIGHT_LIMIT,
            proptest::option::of(any::<[u8; 32]>().prop_filter("not zero", |p| *p != [0; 32])),
            arb_disks(arb_disk_info(), |d, id| d.disk_id = id),
        )
            .prop_map(
                |(version, caps, value_bytes_max, in_flight, server_proof, disks)| {
                    ResponseBody::Hello(HelloResponse {
                        version,
                        capabilities: Capabilities(caps),
                        value_bytes_max,
                        requests_in_flight_max: in_flight,
                        server_proof,
                        disks,
                    })
                },
            );
        let get =
            (1..=VALUE_BYTES_FORMAT_MAX, any::<u32>(), any::<u32>(), any::<u32>(), any::<u32>())
                .prop_map(|(value_len, value_crc32c, a, b, data_crc32c)| {
                    let offset = a % value_len;
                    let data_len = 1 + b % (value_len - offset);
                    let whole = offset == 0 && data_len == value_len;
                    ResponseBody::Get(GetResponse {
                        value_len,
                        value_crc32c,
                        offset,
                        data_len,
                        data_crc32c: if whole { value_crc32c } else { data_crc32c },
                    })
                });
        let status = arb_disks(
            (arb_disk_info(), any::<u64>(), any::<u64>(), any::<u64>()).prop_map(
                |(info, live_keys, live_value_bytes, checksum_errors)| DiskStatus {
                    info,
                    live_keys,
                    live_value_bytes,
                    checksum_errors,
                },
            ),
            |d, id| d.info.disk_id = id,
        );
        prop_oneof![
            hello,
            any::<[u8; 32]>().prop_map(|server_nonce| ResponseBody::AuthRequired(AuthChallenge {
                server_nonce
            })),
            prop_oneof![Just(PutOutcome::Stored), Just(PutOutcome::AlreadyStored)]
                .prop_map(ResponseBody::Put),
            get,
            Just(ResponseBody::Delete),
            (1..=VALUE_BYTES_FORMAT_MAX, any::<u32>(), any::<u64>()).prop_map(
                |(value_len, value_crc32c, seq)| ResponseBody::Stat(StatResponse {
                    value_len,
                    value_crc32c,
                    seq
                })
            ),
            any::<bool>().prop_map(ResponseBody::Exists),
            (proptest::collection::vec(any::<[u8; 32]>(), 0..20), arb_cursor())
                .prop_map(|(keys, next)| ResponseBody::List(ListPage { keys, next })),
            status.prop_map(ResponseBody::DiskStatus),
            (arb_error_status(), "\\PC{0,60}").prop_map(|(status, message)| {
                ResponseBody::Error(ErrorResponse { status, message })
            }),
        ]
    }

    fn arb_response() -> impl Strategy<Value = Response> {
        (any::<u32>(), any::<u16>(), arb_key(), arb_response_body(), any::<prop::sample::Index>())
            .prop_map(|(request_id, disk_id, key, body, pick)| {
                let opcode = body.opcode().unwrap_or(Opcode::ALL[pick.index(Opcode::ALL.len())]);
                Response {
                    request_id,
                    opcode,
                    disk_id: match opcode {
                        Opcode::Hello => 0,
                        Opcode::DiskStatus => disk_id,
                        _ => disk_id.min(DISK_ID_ALL - 1),
                    },
                    key: if opcode.has_key() { key } else { KEY_NONE },
                    body,
                }
            })
    }

    /// Data bytes for a frame that carries `len` of them (kept small: only their length
    /// matters to the frame).
    fn data_for(len: u32) -> Vec<u8> {
        vec![0x5a; len as usize]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn requests_round_trip(mut request in arb_request()) {
            // Keep PUT values small: their bytes are not the message's concern.
            if let RequestBody::Put(put) = &mut request.body {
                put.value_len = 1 + put.value_len % 64;
            }
            let data = data_for(request.body.data_len());
            let bytes = encode_request(&request, &data);
            let (header, meta, got_data) = frame(&bytes);
            prop_assert_eq!(&got_data, &data);
            prop_assert_eq!(Request::decode(&header, &meta), Ok(request));
            for len in 0..bytes.len() {
                let more = decode_frame(&bytes[..len], &Limits::format_max());
                let need_more = matches!(more, Ok(Decoded::NeedMore { bytes: b }) if b > 0);
                prop_assert!(need_more, "prefix {}", len);
            }
        }

        #[test]
        fn responses_round_trip(mut response in arb_response()) {
            if let ResponseBody::Get(get) = &mut response.body {
                // Keep the data section small, the range consistent.
                get.value_len = 1 + get.value_len % 64;
                get.offset %= get.value_len;
                get.data_len = 1 + get.data_len % (get.value_len - get.offset);
                if get.is_whole() {
                    get.data_crc32c = get.value_crc32c;
                }
            }
            let data = data_for(response.body.data_len());
            let bytes = encode_response(&response, &data);
            let (header, meta, got_data) = frame(&bytes);
            prop_assert_eq!(&got_data, &data);
            prop_assert_eq!(header.status, response.status());
            prop_assert_eq!(Response::decode(&header, &meta), Ok(response));
            for len in 0..bytes.len().min(HEADER_BYTES + 64) {
                let more = decode_frame(&bytes[..len], &Limits::format_max());
                let need_more = matches!(more, Ok(Decoded::NeedMore { bytes: b }) if b > 0);
                prop_assert!(need_more, "prefix {}", len);
            }
        }

        /// Whatever a decoder accepts, it accepts in exactly one encoding.
        #[test]
        fn accepted_metas_are_canonical(
            opcode in proptest::sample::select(Opcode::ALL.to_vec()),
            response in any::<bool>(),
            meta in proptest::collection::vec(prop_oneof![Just(0u8), Just(1), any::<u8>()], 0..120),
        ) {
            let header = header_for(opcode, response, Status::Ok, &meta);
            let mut out = Vec::new();
            if response {
                if let Ok(decoded) = Response::decode(&header, &meta) {
                    decoded.encode(&mut out);
                    prop_assert_eq!(&out[HEADER_BYTES..], &meta[..]);
                }
            } else if let Ok(decoded) = Request::decode(&header, &meta) {
                decoded.encode(&mut out);
                prop_assert_eq!(&out[HEADER_BYTES..], &meta[..]);
            }
        }
    }
}
