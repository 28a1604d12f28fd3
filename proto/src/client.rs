//! The blocking client library: connections to one node, the HELLO handshake and
//! authentication, request pipelining, shard-aware routing, retries and timeouts. Plain std
//! (threads, `TcpStream`, `Mutex`/`Condvar`, `mpsc`); the frames and messages are `wire`'s and
//! `messages`' (docs/PROTOCOL.md).
//!
//! # Connecting
//!
//! [`Client::connect`] resolves `"host:port"`, opens a TCP connection (with `TCP_NODELAY`) to
//! the node's main port and sends HELLO, offering protocol version 1 and the capabilities
//! `SHARD_PORTS` and `AUTH_HMAC_SHA256`. When the node answers `AUTH_REQUIRED` and
//! [`ClientOptions::secret`] is set, the client answers the challenge and then checks the node's
//! own proof, so it knows the node holds the secret too; a node that asks for authentication
//! when no secret is configured, refuses the proof, or fails to prove itself, fails the
//! connection with [`ClientError::AuthFailed`]. A node that does not ask for authentication is
//! accepted even when a secret is configured. The answer's topology (disks, the node's value cap,
//! its `requests_in_flight_max`) is kept for the client's lifetime: [`Client::hello`],
//! [`Client::disks`]. A request for a disk the topology does not list fails with
//! [`ClientError::NoSuchDisk`] without being sent.
//!
//! # Shard-awareness
//!
//! Each core (shard) of a node owns some disks and listens on its own shard port. With
//! [`ClientOptions::shard_aware`] (the default), and when the node announces `SHARD_PORTS`, the
//! requests for a disk whose `shard_port` is not 0 go to a connection to that port on the main
//! address's IP, opened on first use and shared by all the disks of that shard. The node would
//! otherwise forward each request between cores. If the shard connection cannot be opened
//! (refused, no HELLO answer, authentication failure), requests go to the main connection
//! instead, and the shard port is tried again after [`SHARD_RETRY_INTERVAL_MS`]. Every
//! connection does its own HELLO and authentication.
//!
//! # Pipelining
//!
//! A [`Client`] is `Send + Sync`; share it by reference between threads. Each connection has
//! one writer lock (a whole frame is written under it) and one reader thread that matches each
//! response to its request by request id, in whatever order the node answers. Many threads
//! calling at once therefore keep many requests in flight on one connection. A connection holds
//! at most the node's `requests_in_flight_max` requests in flight; further callers wait for a
//! slot (within their deadline), since the node would stop reading anyway. [`Client::submit`]
//! sends one request and returns a [`Pending`] to wait on later, so that a load generator with
//! few threads can keep many requests in flight; it does not retry.
//!
//! # Completion queues
//!
//! [`Client::submit_to`] sends a request whose answer goes to a [`CompletionQueue`] instead,
//! tagged with a number the caller chose. One thread can then keep many requests in flight and
//! take the answers in the order they arrive ([`CompletionQueue::wait`] returns every answer
//! that is there, at least one), rather than in the order it sent them; no channel is made per
//! request, and the reader thread wakes the queue's thread only when it sleeps in `wait`. Each
//! request still has its deadline: one not answered by then is completed with
//! [`ClientError::Timeout`] by the next `wait`. Once `submit_to` has returned `Ok`, the request's
//! outcome, whatever it is, arrives on the queue exactly once. A queue may take requests of
//! several clients and connections; it is meant for one consuming thread.
//!
//! A [`Batch`] ([`Client::batch`]) sends several such requests with one `writev` per
//! connection: on loopback most of a small request's client cost is the system call and the
//! TCP send path under it, so a load generator that answers a burst of completions with a
//! burst of requests saves most of that.
//!
//! # Retries
//!
//! Every operation of the protocol is idempotent, so each convenience method ([`Client::put`],
//! [`Client::get`], ...) is retried, up to [`ClientOptions::retries`] times with a backoff of
//! [`BACKOFF_INITIAL_MS`] doubling up to [`BACKOFF_MAX_MS`], when the attempt fails with a
//! connection error ([`ClientError::Io`], [`ClientError::Disconnected`]) or with the statuses
//! `BUSY`, `SHUTTING_DOWN` or `TIMEOUT` ([`ClientError::is_retryable`]). A connection that was
//! lost is reopened by the next request that needs it, once per attempt. Other error statuses
//! are returned at once as [`ClientError::Status`].
//!
//! A PUT repeated with the same content is answered "already stored"
//! ([`PutOutcome::AlreadyStored`]). A DELETE is idempotent in effect but not in its answer: if
//! an earlier attempt may have taken effect (its connection was lost after the request was
//! written, or the node answered `TIMEOUT` or `SHUTTING_DOWN`) and a retry is answered
//! `NOT_FOUND`, [`Client::delete`] counts that as success, since the first attempt is the likely
//! reason the key is gone. The cost: deleting a key that never existed can then report success.
//!
//! # Timeouts
//!
//! A call has one deadline, [`ClientOptions::request_timeout`] after it starts, which bounds
//! all of its attempts: the wait for a connection (each connection attempt is also bounded by
//! [`ClientOptions::connect_timeout`]), for an in-flight slot, for the answer, and the backoff.
//! A request not answered by its deadline fails with [`ClientError::Timeout`] and is forgotten:
//! a late answer is dropped by the reader thread. Writes to a connection that block longer than
//! the request timeout break that connection (a frame may be half written).
//!
//! # Errors
//!
//! [`ClientError`] says what failed in one readable line: an I/O error with what was being done
//! and with whom, a status the node answered with its message, a protocol violation by the node,
//! a GET whose bytes fail their checksum ([`ClientError::Integrity`]: the bytes are never
//! returned), a timeout, an authentication failure, or a request that could not be valid.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::{self, BufReader, IoSlice, Read, Write as _};
use std::net::{Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use crate::auth::{self, NONCE_BYTES, Nonce, Secret};
use crate::error::{Disposition, Error};
use crate::messages::{
    AuthChallenge, AuthProof, ByteRange, Capabilities, DiskInfo, DiskStatus, ErrorResponse,
    GetRequest, HelloRequest, HelloResponse, ListCursor, ListPage, ListRequest, PutOutcome,
    PutRequest, Request, RequestBody, Response, ResponseBody, StatResponse,
};
use crate::wire::{
    self, DISK_ID_ALL, Decoded, FrameHeader, HEADER_BYTES, KEY_NONE, Key, Limits, Opcode,
    PROTOCOL_VERSION, REQUEST_ID_NOTICE, REQUEST_META_BYTES_MAX, Status,
};

/// Default [`ClientOptions::connect_timeout`]: 5 s.
pub const CONNECT_TIMEOUT_MS_DEFAULT: u64 = 5_000;
/// Default [`ClientOptions::request_timeout`]: 30 s, the node's own default request timeout.
pub const REQUEST_TIMEOUT_MS_DEFAULT: u64 = 30_000;
/// Default [`ClientOptions::retries`].
pub const RETRIES_DEFAULT: u32 = 3;
/// First pause before a retry; each further retry doubles it.
pub const BACKOFF_INITIAL_MS: u64 = 50;
/// Longest pause before a retry.
pub const BACKOFF_MAX_MS: u64 = 1_000;
/// How long a shard port that could not be connected to is left alone (its disks' requests
/// go to the main connection meanwhile), so that an unreachable port does not cost a connection
/// attempt per request.
pub const SHARD_RETRY_INTERVAL_MS: u64 = 5_000;
/// Buffer of a connection's reader thread. Small responses are read with few system calls;
/// larger data sections are read straight into their own buffer.
const READ_BUFFER_BYTES: usize = 64 << 10;
/// Buffers per `writev` (Linux's IOV_MAX is 1024).
const IOV_SLICES_MAX: usize = 512;
/// Request ids of the HELLO exchange, sent before any other request on a connection.
const HELLO_REQUEST_ID: u32 = 1;
const HELLO_AUTH_REQUEST_ID: u32 = 2;

const _: () = assert!(BACKOFF_INITIAL_MS > 0 && BACKOFF_INITIAL_MS <= BACKOFF_MAX_MS);
const _: () = assert!(HELLO_REQUEST_ID != REQUEST_ID_NOTICE);

/// How a [`Client`] connects, waits and retries.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Bound on opening one connection: TCP connect and the HELLO exchange. Default 5 s; must
    /// not be zero.
    pub connect_timeout: Duration,
    /// Bound on one call, all attempts included: a request not answered by then fails with
    /// [`ClientError::Timeout`]. Default 30 s; must not be zero. Also the longest a write may
    /// block.
    pub request_timeout: Duration,
    /// Retries of a call after a connection failure or a `BUSY`, `SHUTTING_DOWN` or `TIMEOUT`
    /// status, with backoff. Default 3; 0 disables retries.
    pub retries: u32,
    /// Send each disk's requests to its shard's own port when the node lists one. Default true.
    pub shard_aware: bool,
    /// The shared secret, for nodes that require authentication. Default none.
    pub secret: Option<Arc<Secret>>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            connect_timeout: Duration::from_millis(CONNECT_TIMEOUT_MS_DEFAULT),
            request_timeout: Duration::from_millis(REQUEST_TIMEOUT_MS_DEFAULT),
            retries: RETRIES_DEFAULT,
            shard_aware: true,
            secret: None,
        }
    }
}

/// Everything a [`Client`] call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    // The causes are part of each message (one line says it all), so they are not also
    // reported as `source()`: a chain printer would repeat them.
    /// An I/O error: resolving, connecting, sending or receiving.
    #[error("{context}: {error}")]
    Io {
        /// What was being done, with whom.
        context: String,
        /// The error.
        error: io::Error,
    },
    /// The node sent bytes that break the protocol.
    #[error("protocol error from the node: {0}")]
    Protocol(Error),
    /// The node answered with an error status.
    #[error("the node answered {}{}{}", status.name(), if message.is_empty() { "" } else { ": " }, message)]
    Status {
        /// The status (not OK).
        status: Status,
        /// The node's message, for people (may be empty).
        message: String,
    },
    /// No answer within the request timeout.
    #[error("no answer from the node within the request timeout")]
    Timeout,
    /// The connection was lost before the answer came.
    #[error("the connection to the node was lost before it answered")]
    Disconnected,
    /// Authentication failed: the node wants a secret we lack, refused ours, or could not
    /// prove it holds it.
    #[error("authentication failed: {0}")]
    AuthFailed(String),
    /// The node's topology has no disk with this id; nothing was sent.
    #[error("the node has no disk {0}")]
    NoSuchDisk(u16),
    /// Bytes a GET returned do not match their checksum; they are not returned.
    #[error("integrity error: {0}")]
    Integrity(String),
    /// A well-formed response that does not answer the request it is matched with.
    #[error("the node sent an unexpected answer: {0}")]
    BadResponse(String),
    /// A value larger than the node accepts; nothing was sent.
    #[error("a value of {len} bytes exceeds the node's limit of {max} bytes")]
    ValueTooLarge {
        /// Bytes of the value.
        len: usize,
        /// The node's `value_bytes_max`.
        max: u32,
    },
    /// A request that cannot be valid (an empty value, a LIST of 0 keys, ...); nothing was sent.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
}

impl ClientError {
    /// Whether retrying the request later may succeed: connection errors, and the statuses
    /// `BUSY`, `SHUTTING_DOWN` and `TIMEOUT`. The convenience methods retry these themselves.
    pub fn is_retryable(&self) -> bool {
        match self {
            ClientError::Io { .. } | ClientError::Disconnected => true,
            ClientError::Status { status, .. } => {
                matches!(status, Status::Busy | Status::ShuttingDown | Status::Timeout)
            }
            _ => false,
        }
    }

    /// The status the node answered, if this is a status error.
    pub fn status(&self) -> Option<Status> {
        match self {
            ClientError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    fn io(context: impl Into<String>, error: io::Error) -> ClientError {
        ClientError::Io { context: context.into(), error }
    }

    fn from_status(error: ErrorResponse) -> ClientError {
        ClientError::Status { status: error.status, message: error.message }
    }

    /// Whether a request that failed with this error, after it was (at least partly) written,
    /// may have taken effect on the node.
    fn outcome_unknown(&self) -> bool {
        match self {
            ClientError::Io { .. } | ClientError::Disconnected | ClientError::Timeout => true,
            ClientError::Status { status, .. } => {
                matches!(status, Status::ShuttingDown | Status::Timeout)
            }
            _ => false,
        }
    }
}

/// A decoded OK response and its data section (the bytes of a GET; empty otherwise).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The response (status OK; its body answers the request's opcode).
    pub response: Response,
    /// The data section, checked against the response's checksum.
    pub data: Vec<u8>,
}

/// What a GET returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetResult {
    /// Length of the whole stored value.
    pub value_len: u32,
    /// Stored crc32c of the whole value.
    pub value_crc32c: u32,
    /// Offset of `data` in the value.
    pub offset: u32,
    /// The bytes, verified against the node's checksum of them.
    pub data: Vec<u8>,
}

/// The 64 lowercase hex digits of a key, for messages and listings.
pub fn key_hex(key: &Key) -> String {
    use std::fmt::Write as _;
    key.iter().fold(String::with_capacity(2 * key.len()), |mut out, b| {
        let _ = write!(out, "{b:02x}"); // Writing to a String cannot fail.
        out
    })
}

// ---------------------------------------------------------------------------------------------
// The client

/// A blocking, thread-safe client of one node. See the module documentation.
#[derive(Debug)]
pub struct Client {
    options: ClientOptions,
    hello: HelloResponse,
    main: Endpoint,
    /// One per shard port in the topology (when shard-aware).
    shards: Vec<Endpoint>,
    /// Every disk of the topology, and the index in `shards` of its shard's endpoint (`None`:
    /// the main connection).
    routes: HashMap<u16, Option<usize>>,
}

// Threads share a client by reference; a pending request can be waited on by another thread.
const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    const fn send<T: Send>() {}
    send_sync::<Client>();
    send::<Pending>();
    send_sync::<CompletionQueue>();
    send::<Batch<'static, 'static>>();
};

impl Client {
    /// Connects to the node at `addr` (`"host:port"`, or anything else `ToSocketAddrs` takes),
    /// trying each address it resolves to, and does the HELLO exchange. Retried like a request
    /// (connection refused while the node starts, `BUSY`).
    pub fn connect(
        addr: impl ToSocketAddrs + std::fmt::Debug,
        options: ClientOptions,
    ) -> Result<Client, ClientError> {
        if options.connect_timeout.is_zero() || options.request_timeout.is_zero() {
            return Err(ClientError::InvalidRequest(
                "the connect and request timeouts must be longer than zero".into(),
            ));
        }
        let resolving = || format!("resolving {addr:?}");
        let addrs: Vec<SocketAddr> =
            addr.to_socket_addrs().map_err(|err| ClientError::io(resolving(), err))?.collect();
        if addrs.is_empty() {
            return Err(ClientError::io(
                resolving(),
                io::Error::new(io::ErrorKind::NotFound, "it resolves to no address"),
            ));
        }
        let mut backoff = Backoff::new();
        let mut attempt = 0;
        let conn = loop {
            let deadline = Instant::now() + options.connect_timeout;
            let error = match open_any(&addrs, &options, deadline) {
                Ok(conn) => break conn,
                Err(error) => error,
            };
            if !error.is_retryable() || attempt >= options.retries {
                return Err(error);
            }
            attempt += 1;
            backoff.pause(None);
        };
        let hello = conn.hello.clone();
        let main = Endpoint::new(conn.peer);
        main.install(conn);
        let mut client =
            Client { options, hello, main, shards: Vec::new(), routes: HashMap::new() };
        client.plan_routes();
        Ok(client)
    }

    /// The node's answer to HELLO at connect: version, capabilities, value cap,
    /// `requests_in_flight_max`, disks.
    pub fn hello(&self) -> &HelloResponse {
        &self.hello
    }

    /// The node's disks, by ascending id, as HELLO listed them at connect.
    pub fn disks(&self) -> &[DiskInfo] {
        &self.hello.disks
    }

    /// The address of the node's main port this client connected to.
    pub fn addr(&self) -> SocketAddr {
        self.main.addr
    }

    /// Stores `value` (1..=`value_bytes_max` bytes) under `key` on `disk`, with its crc32c so
    /// that the node can check what it received.
    pub fn put(&self, disk: u16, key: &Key, value: &[u8]) -> Result<PutOutcome, ClientError> {
        let value_len = u32::try_from(value.len()).map_err(|_| ClientError::ValueTooLarge {
            len: value.len(),
            max: self.hello.value_bytes_max,
        })?;
        let body = RequestBody::Put(PutRequest { value_len, value_crc32c: wire::crc32c(value) });
        match self.call(disk, *key, body, Some(value))?.response.body {
            ResponseBody::Put(outcome) => Ok(outcome),
            other => Err(unexpected(&other)),
        }
    }

    /// Reads the value of `key` on `disk`, or `range` of it. The bytes are checked against the
    /// node's crc32c of them; a mismatch is [`ClientError::Integrity`].
    pub fn get(
        &self,
        disk: u16,
        key: &Key,
        range: Option<ByteRange>,
    ) -> Result<GetResult, ClientError> {
        let reply = self.call(disk, *key, RequestBody::Get(GetRequest { range }), None)?;
        match reply.response.body {
            ResponseBody::Get(get) => Ok(GetResult {
                value_len: get.value_len,
                value_crc32c: get.value_crc32c,
                offset: get.offset,
                data: reply.data,
            }),
            other => Err(unexpected(&other)),
        }
    }

    /// Deletes `key` on `disk`. An absent key is `Status { status: NOT_FOUND, .. }`, except
    /// when a retry is answered so after an earlier attempt may have deleted it (see the module
    /// documentation): then it is success.
    pub fn delete(&self, disk: u16, key: &Key) -> Result<(), ClientError> {
        match self.call_tracked(disk, *key, RequestBody::Delete, None) {
            Ok(_) => Ok(()),
            Err(failure)
                if failure.earlier_attempt_may_have_applied
                    && failure.error.status() == Some(Status::NotFound) =>
            {
                Ok(())
            }
            Err(failure) => Err(failure.error),
        }
    }

    /// Length, crc32c and sequence number of the value of `key` on `disk`.
    pub fn stat(&self, disk: u16, key: &Key) -> Result<StatResponse, ClientError> {
        match self.call(disk, *key, RequestBody::Stat, None)?.response.body {
            ResponseBody::Stat(stat) => Ok(stat),
            other => Err(unexpected(&other)),
        }
    }

    /// Whether `key` exists on `disk`.
    pub fn exists(&self, disk: u16, key: &Key) -> Result<bool, ClientError> {
        match self.call(disk, *key, RequestBody::Exists, None)?.response.body {
            ResponseBody::Exists(exists) => Ok(exists),
            other => Err(unexpected(&other)),
        }
    }

    /// One page of at most `keys_max` (1..=`LIST_KEYS_MAX`) keys of `disk`, from the start
    /// (`cursor` `None`) or from a previous page's `next`. The node may return fewer keys;
    /// the listing is over when `next` is `None`.
    pub fn list(
        &self,
        disk: u16,
        cursor: Option<ListCursor>,
        keys_max: u32,
    ) -> Result<ListPage, ClientError> {
        let body = RequestBody::List(ListRequest { keys_max, cursor });
        match self.call(disk, KEY_NONE, body, None)?.response.body {
            ResponseBody::List(page) => Ok(page),
            other => Err(unexpected(&other)),
        }
    }

    /// State, space and counters of `disk`, or of every disk (`None`).
    pub fn disk_status(&self, disk: Option<u16>) -> Result<Vec<DiskStatus>, ClientError> {
        let disk = disk.unwrap_or(DISK_ID_ALL);
        match self.call(disk, KEY_NONE, RequestBody::DiskStatus, None)?.response.body {
            ResponseBody::DiskStatus(disks) => Ok(disks),
            other => Err(unexpected(&other)),
        }
    }

    /// Sends one request and returns at once; [`Pending::wait`] gets the answer. Blocks only
    /// to open a connection, for an in-flight slot, and while the frame is written (a PUT's
    /// `value` is written before this returns, so it is borrowed only for the call). No
    /// retries: on a retryable error ([`ClientError::is_retryable`]) the caller submits again.
    ///
    /// `key` must be all zero for opcodes without a key (LIST, DISK_STATUS); `value` is the
    /// PUT's value (its length and crc32c are the body's) and `None` for other opcodes. `disk`
    /// [`DISK_ID_ALL`] is valid for DISK_STATUS only. HELLO is not a request this sends.
    pub fn submit(
        &self,
        disk: u16,
        key: Key,
        body: RequestBody,
        value: Option<&[u8]>,
    ) -> Result<Pending, ClientError> {
        self.check_request(disk, &key, &body, value)?;
        let deadline = Instant::now() + self.options.request_timeout;
        self.connection_for(disk, deadline)?.send(disk, key, body, value, deadline)
    }

    /// Sends one request whose answer goes to `queue` with `tag` (see the module
    /// documentation, "Completion queues"). Blocks like [`Client::submit`]; no retries.
    ///
    /// An `Err` means nothing was registered: the request is invalid, no connection could be
    /// opened, or no in-flight slot freed up before the request's deadline; no completion
    /// follows. After `Ok`, exactly one [`Completion`] with `tag` arrives on `queue`: the
    /// answer, or the error that ended the request (a failed write, a lost connection, the
    /// deadline).
    pub fn submit_to(
        &self,
        queue: &CompletionQueue,
        tag: u64,
        disk: u16,
        key: Key,
        body: RequestBody,
        value: Option<&[u8]>,
    ) -> Result<(), ClientError> {
        self.check_request(disk, &key, &body, value)?;
        let deadline = Instant::now() + self.options.request_timeout;
        let conn = self.connection_for(disk, deadline)?;
        let seq = queue.register(tag, deadline, &conn.shared);
        let sink = Sink::Queue { queue: Arc::clone(&queue.shared), seq };
        let request_id = match conn.shared.reserve(body.opcode(), disk, key, deadline, sink) {
            Ok(request_id) => request_id,
            Err(error) => {
                queue.unregister(seq);
                return Err(error);
            }
        };
        queue.set_request_id(seq, request_id);
        let request = Request { request_id, disk_id: disk, key, body };
        if let Err(error) = conn.write(&request, value) {
            // This request fails with the write's own error, the others on the connection with
            // Disconnected. If the reader thread's kill took it first, it has its completion.
            if let Some(waiter) = conn.shared.take(request_id) {
                waiter.answer.send(Err(error));
            }
            conn.shared.kill(&Ending::Lost);
        }
        Ok(())
    }

    /// A [`Batch`] of requests for `queue`, written together when it is sent.
    pub fn batch<'c, 'v>(&'c self, queue: &'c CompletionQueue) -> Batch<'c, 'v> {
        Batch { client: self, queue, conns: Vec::new() }
    }

    /// One call with retries; see [`Client::call_tracked`].
    fn call(
        &self,
        disk: u16,
        key: Key,
        body: RequestBody,
        value: Option<&[u8]>,
    ) -> Result<Reply, ClientError> {
        self.call_tracked(disk, key, body, value).map_err(|failure| failure.error)
    }

    /// Sends a request, waits for its answer, and retries as the module documentation says,
    /// all within one deadline. On failure, says whether an earlier attempt may have taken
    /// effect (for DELETE's rule).
    fn call_tracked(
        &self,
        disk: u16,
        key: Key,
        body: RequestBody,
        value: Option<&[u8]>,
    ) -> Result<Reply, CallFailure> {
        let failure = |error| CallFailure { error, earlier_attempt_may_have_applied: false };
        self.check_request(disk, &key, &body, value).map_err(failure)?;
        let deadline = Instant::now() + self.options.request_timeout;
        let mut backoff = Backoff::new();
        let mut earlier_attempt_may_have_applied = false;
        let mut attempt = 0;
        loop {
            let (error, may_have_applied) =
                match self.attempt(disk, key, body.clone(), value, deadline) {
                    Ok(reply) => return Ok(reply),
                    Err(failed) => failed,
                };
            let retry = error.is_retryable()
                && attempt < self.options.retries
                && backoff.pause(Some(deadline));
            if !retry {
                return Err(CallFailure { error, earlier_attempt_may_have_applied });
            }
            earlier_attempt_may_have_applied |= may_have_applied;
            attempt += 1;
        }
    }

    /// One attempt. On failure, also says whether the request may have taken effect.
    fn attempt(
        &self,
        disk: u16,
        key: Key,
        body: RequestBody,
        value: Option<&[u8]>,
        deadline: Instant,
    ) -> Result<Reply, (ClientError, bool)> {
        let conn = self.connection_for(disk, deadline).map_err(|error| (error, false))?;
        let pending = conn.send(disk, key, body, value, deadline).map_err(|error| {
            // A failed write may have left a whole frame with the node; a wait for a slot
            // never wrote anything.
            let written = matches!(error, ClientError::Io { .. });
            (error, written)
        })?;
        pending.wait().map_err(|error| {
            let unknown = error.outcome_unknown();
            (error, unknown)
        })
    }

    /// Refuses, before anything is sent, what the node would refuse or the encoder could not
    /// write.
    fn check_request(
        &self,
        disk: u16,
        key: &Key,
        body: &RequestBody,
        value: Option<&[u8]>,
    ) -> Result<(), ClientError> {
        let opcode = body.opcode();
        if opcode == Opcode::Hello {
            return Err(ClientError::InvalidRequest("HELLO is sent by connect".into()));
        }
        let all_disks = disk == DISK_ID_ALL && opcode == Opcode::DiskStatus;
        if !all_disks && !self.routes.contains_key(&disk) {
            return Err(ClientError::NoSuchDisk(disk));
        }
        if !opcode.has_key() && *key != KEY_NONE {
            return Err(ClientError::InvalidRequest(format!("{opcode:?} takes no key")));
        }
        body.validate().map_err(|err| ClientError::InvalidRequest(err.to_string()))?;
        match (body, value) {
            (RequestBody::Put(put), Some(value)) => {
                if value.len() != put.value_len as usize {
                    return Err(ClientError::InvalidRequest(format!(
                        "PUT says {} bytes, the value has {}",
                        put.value_len,
                        value.len()
                    )));
                }
                if put.value_len > self.hello.value_bytes_max {
                    return Err(ClientError::ValueTooLarge {
                        len: value.len(),
                        max: self.hello.value_bytes_max,
                    });
                }
                Ok(())
            }
            (RequestBody::Put(_), None) => {
                Err(ClientError::InvalidRequest("a PUT needs a value".into()))
            }
            (_, Some(_)) => Err(ClientError::InvalidRequest(format!("{opcode:?} takes no value"))),
            (_, None) => Ok(()),
        }
    }

    /// Which endpoint serves each disk: its shard's port if the node lists one and the client
    /// is shard-aware, else the main connection.
    fn plan_routes(&mut self) {
        let shard_ports =
            self.options.shard_aware && self.hello.capabilities.contains(Capabilities::SHARD_PORTS);
        for disk in &self.hello.disks {
            let mut route = None;
            if shard_ports && disk.shard_port != 0 {
                let addr = SocketAddr::new(self.main.addr.ip(), disk.shard_port);
                let index = match self.shards.iter().position(|e| e.addr == addr) {
                    Some(index) => index,
                    None => {
                        self.shards.push(Endpoint::new(addr));
                        self.shards.len() - 1
                    }
                };
                route = Some(index);
            }
            self.routes.insert(disk.disk_id, route);
        }
    }

    /// A live connection for `disk`'s requests: its shard's, or else the main one.
    fn connection_for(&self, disk: u16, deadline: Instant) -> Result<Arc<Conn>, ClientError> {
        if let Some(Some(index)) = self.routes.get(&disk) {
            if let Some(conn) = self.shard_connection(&self.shards[*index], deadline) {
                return Ok(conn);
            }
        }
        let mut slot = lock(&self.main.slot);
        if let Some(conn) = slot.live() {
            return Ok(conn);
        }
        let conn = open(self.main.addr, &self.options, deadline)?;
        slot.conn = Some(Arc::clone(&conn));
        Ok(conn)
    }

    /// The shard's connection, opened if needed; `None` if it cannot be opened now.
    fn shard_connection(&self, endpoint: &Endpoint, deadline: Instant) -> Option<Arc<Conn>> {
        let mut slot = lock(&endpoint.slot);
        if let Some(conn) = slot.live() {
            return Some(conn);
        }
        let retry_after = Duration::from_millis(SHARD_RETRY_INTERVAL_MS);
        if slot.failed_at.is_some_and(|at| at.elapsed() < retry_after) {
            return None;
        }
        match open(endpoint.addr, &self.options, deadline) {
            Ok(conn) => {
                slot.conn = Some(Arc::clone(&conn));
                slot.failed_at = None;
                Some(conn)
            }
            Err(_) => {
                slot.failed_at = Some(Instant::now());
                None
            }
        }
    }
}

/// A failed call, and whether an attempt before the last may have taken effect.
struct CallFailure {
    error: ClientError,
    earlier_attempt_may_have_applied: bool,
}

fn unexpected(body: &ResponseBody) -> ClientError {
    ClientError::BadResponse(format!("{body:?}"))
}

/// Pauses between attempts: [`BACKOFF_INITIAL_MS`], doubling up to [`BACKOFF_MAX_MS`].
struct Backoff {
    next: Duration,
}

impl Backoff {
    fn new() -> Backoff {
        Backoff { next: Duration::from_millis(BACKOFF_INITIAL_MS) }
    }

    /// Sleeps for the next pause; `false` (without sleeping) if the pause would end past
    /// `deadline`, since the next attempt would have no time left.
    fn pause(&mut self, deadline: Option<Instant>) -> bool {
        if deadline.is_some_and(|deadline| Instant::now() + self.next >= deadline) {
            return false;
        }
        thread::sleep(self.next);
        self.next = (self.next * 2).min(Duration::from_millis(BACKOFF_MAX_MS));
        true
    }
}

// ---------------------------------------------------------------------------------------------
// Endpoints and connections

/// A port of the node and its current connection.
#[derive(Debug)]
struct Endpoint {
    addr: SocketAddr,
    slot: Mutex<Slot>,
}

#[derive(Debug, Default)]
struct Slot {
    conn: Option<Arc<Conn>>,
    /// When a connection to this endpoint last failed to open (shards only).
    failed_at: Option<Instant>,
}

impl Endpoint {
    fn new(addr: SocketAddr) -> Endpoint {
        Endpoint { addr, slot: Mutex::new(Slot::default()) }
    }

    fn install(&self, conn: Arc<Conn>) {
        lock(&self.slot).conn = Some(conn);
    }
}

impl Slot {
    fn live(&self) -> Option<Arc<Conn>> {
        self.conn.as_ref().filter(|conn| !conn.shared.is_dead()).cloned()
    }
}

/// One TCP connection after its HELLO: the writer half, and the state shared with its reader
/// thread and with the [`Pending`] requests on it. Dropping it shuts the socket down, which
/// ends the reader thread.
#[derive(Debug)]
struct Conn {
    peer: SocketAddr,
    hello: HelloResponse,
    shared: Arc<Shared>,
    writer: Mutex<Writer>,
}

#[derive(Debug)]
struct Writer {
    stream: TcpStream,
    /// Header and meta of the frame being written (reused: no allocation per request).
    buf: Vec<u8>,
}

/// What a connection's senders, reader thread and pending requests share.
#[derive(Debug)]
struct Shared {
    /// The node's `requests_in_flight_max` for this connection.
    in_flight_max: usize,
    state: Mutex<State>,
    /// Signalled when a request leaves `waiters` or the connection dies.
    slot_freed: Condvar,
}

#[derive(Debug)]
struct State {
    /// Requests in flight, by request id.
    waiters: HashMap<u32, Waiter>,
    /// The last request id handed out.
    last_request_id: u32,
    /// Senders waiting in `reserve` for a slot.
    slot_waiters: usize,
    /// The connection is lost: nothing more is sent on it, and `waiters` is empty.
    dead: bool,
}

/// Where the answer to one request goes, and what it must repeat.
#[derive(Debug)]
struct Waiter {
    answer: Sink,
    opcode: Opcode,
    disk_id: u16,
    key: Key,
}

/// The way to a request's submitter: its [`Pending`]'s channel, or a [`CompletionQueue`].
#[derive(Debug)]
enum Sink {
    Pending(mpsc::SyncSender<Result<Reply, ClientError>>),
    Queue { queue: Arc<QueueShared>, seq: u64 },
}

impl Sink {
    fn send(self, answer: Result<Reply, ClientError>) {
        match self {
            // The receiver is gone if the caller dropped its Pending: nothing to do.
            Sink::Pending(sender) => drop(sender.send(answer)),
            Sink::Queue { queue, seq } => queue.complete(seq, answer),
        }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        // Ends the reader thread, which fails what is still in flight. An error means the
        // socket is already closed.
        let _ = lock(&self.writer).stream.shutdown(Shutdown::Both);
    }
}

/// Opens a connection to the first of `addrs` that answers.
fn open_any(
    addrs: &[SocketAddr],
    options: &ClientOptions,
    deadline: Instant,
) -> Result<Arc<Conn>, ClientError> {
    let mut last = None;
    for addr in addrs {
        match open(*addr, options, deadline) {
            Ok(conn) => return Ok(conn),
            Err(error) => last = Some(error),
        }
    }
    Err(last.unwrap_or(ClientError::Timeout))
}

/// Connects to `addr`, does the HELLO exchange, and starts the reader thread.
fn open(
    addr: SocketAddr,
    options: &ClientOptions,
    deadline: Instant,
) -> Result<Arc<Conn>, ClientError> {
    let deadline = deadline.min(Instant::now() + options.connect_timeout);
    let remaining = remaining(deadline)?;
    let connecting = || format!("connecting to {addr}");
    let stream = TcpStream::connect_timeout(&addr, remaining)
        .map_err(|err| ClientError::io(connecting(), err))?;
    stream.set_nodelay(true).map_err(|err| ClientError::io(connecting(), err))?;
    let hello = handshake(&stream, addr, options.secret.as_deref(), deadline)?;
    let limits =
        Limits::with_value_bytes_max(hello.value_bytes_max).map_err(ClientError::Protocol)?;
    stream.set_read_timeout(None).map_err(|err| ClientError::io(connecting(), err))?;
    stream
        .set_write_timeout(Some(options.request_timeout))
        .map_err(|err| ClientError::io(connecting(), err))?;
    let shared = Arc::new(Shared {
        in_flight_max: hello.requests_in_flight_max as usize,
        state: Mutex::new(State {
            waiters: HashMap::new(),
            last_request_id: HELLO_AUTH_REQUEST_ID,
            slot_waiters: 0,
            dead: false,
        }),
        slot_freed: Condvar::new(),
    });
    let read_half = stream.try_clone().map_err(|err| ClientError::io(connecting(), err))?;
    let reader_shared = Arc::clone(&shared);
    thread::Builder::new()
        .name("shingle-client".into())
        .spawn(move || read_loop(read_half, &reader_shared, limits))
        .map_err(|err| ClientError::io("starting a connection's reader thread", err))?;
    let buf = Vec::with_capacity(HEADER_BYTES + REQUEST_META_BYTES_MAX as usize);
    Ok(Arc::new(Conn { peer: addr, hello, shared, writer: Mutex::new(Writer { stream, buf }) }))
}

/// The time left before `deadline`, or [`ClientError::Timeout`] if none.
fn remaining(deadline: Instant) -> Result<Duration, ClientError> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() { Err(ClientError::Timeout) } else { Ok(left) }
}

impl Conn {
    /// Takes an in-flight slot and a request id, writes the frame (and `value`), and returns
    /// the request's [`Pending`]. The request must have passed [`Client::check_request`].
    fn send(
        &self,
        disk_id: u16,
        key: Key,
        body: RequestBody,
        value: Option<&[u8]>,
        deadline: Instant,
    ) -> Result<Pending, ClientError> {
        let (sender, answer) = mpsc::sync_channel(1);
        let request_id =
            self.shared.reserve(body.opcode(), disk_id, key, deadline, Sink::Pending(sender))?;
        let pending = Pending {
            shared: Arc::clone(&self.shared),
            request_id,
            answer,
            deadline,
            finished: false,
        };
        let request = Request { request_id, disk_id, key, body };
        if let Err(error) = self.write(&request, value) {
            self.shared.kill(&Ending::Lost);
            return Err(error);
        }
        Ok(pending)
    }

    /// Writes one request frame and its value with one `writev` (usually one system call). On
    /// failure the stream is shut down, since a frame may be half written; the caller fails
    /// the requests in flight.
    fn write(&self, request: &Request, value: Option<&[u8]>) -> Result<(), ClientError> {
        let mut writer = lock(&self.writer);
        let Writer { stream, buf } = &mut *writer;
        buf.clear();
        request.encode(buf);
        let mut slices = [IoSlice::new(buf), IoSlice::new(value.unwrap_or_default())];
        self.write_locked(stream, &mut slices)
    }

    /// Writes whole frames (a [`Batch`]'s), with as few system calls as `IOV_SLICES_MAX`
    /// allows.
    fn write_frames(&self, slices: &mut [IoSlice<'_>]) -> Result<(), ClientError> {
        let mut writer = lock(&self.writer);
        self.write_locked(&mut writer.stream, slices)
    }

    fn write_locked(
        &self,
        stream: &mut TcpStream,
        slices: &mut [IoSlice<'_>],
    ) -> Result<(), ClientError> {
        let result = slices
            .chunks_mut(IOV_SLICES_MAX)
            .try_for_each(|chunk| write_all_vectored(stream, chunk));
        if let Err(err) = result {
            // Nothing more can be sent on this stream. The reader thread sees the shutdown.
            let _ = stream.shutdown(Shutdown::Both);
            return Err(ClientError::io(format!("sending a request to {}", self.peer), err));
        }
        Ok(())
    }
}

/// `write_all` over several buffers (`Write::write_all_vectored` is not stable yet).
fn write_all_vectored(w: &mut impl io::Write, mut slices: &mut [IoSlice<'_>]) -> io::Result<()> {
    IoSlice::advance_slices(&mut slices, 0);
    while !slices.is_empty() {
        match w.write_vectored(slices) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut slices, n),
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    Ok(())
}

impl Shared {
    fn is_dead(&self) -> bool {
        lock(&self.state).dead
    }

    /// Waits (until `deadline`) for an in-flight slot, then registers a request under a fresh
    /// id: never 0 and never one still in flight.
    fn reserve(
        &self,
        opcode: Opcode,
        disk_id: u16,
        key: Key,
        deadline: Instant,
        answer: Sink,
    ) -> Result<u32, ClientError> {
        self.try_reserve(opcode, disk_id, key, Some(deadline), answer).map_err(|err| match err {
            ReserveError::Failed(err) => err,
            ReserveError::Full(_) => unreachable!("a reservation with a deadline waits"),
        })
    }

    /// [`Shared::reserve`]; with no deadline it does not wait, and hands `answer` back when no
    /// slot is free.
    fn try_reserve(
        &self,
        opcode: Opcode,
        disk_id: u16,
        key: Key,
        deadline: Option<Instant>,
        answer: Sink,
    ) -> Result<u32, ReserveError> {
        let mut state = lock(&self.state);
        loop {
            if state.dead {
                return Err(ReserveError::Failed(ClientError::Disconnected));
            }
            if state.waiters.len() < self.in_flight_max {
                break;
            }
            let Some(deadline) = deadline else { return Err(ReserveError::Full(answer)) };
            let left = remaining(deadline).map_err(ReserveError::Failed)?;
            state.slot_waiters += 1;
            state =
                self.slot_freed.wait_timeout(state, left).unwrap_or_else(PoisonError::into_inner).0;
            state.slot_waiters -= 1;
        }
        let mut request_id = state.last_request_id;
        loop {
            request_id = request_id.wrapping_add(1);
            if request_id != REQUEST_ID_NOTICE && !state.waiters.contains_key(&request_id) {
                break;
            }
        }
        state.last_request_id = request_id;
        state.waiters.insert(request_id, Waiter { answer, opcode, disk_id, key });
        Ok(request_id)
    }

    /// Hands a response to its request. A response nobody waits for (its request timed out)
    /// is dropped.
    fn complete(&self, response: Response, data: Vec<u8>) {
        let Some(waiter) = self.take(response.request_id) else { return };
        let answer = if (response.opcode, response.disk_id, response.key)
            != (waiter.opcode, waiter.disk_id, waiter.key)
        {
            Err(ClientError::BadResponse(format!(
                "request {} was {:?} on disk {} key {}; the answer is {:?} on disk {} key {}",
                response.request_id,
                waiter.opcode,
                waiter.disk_id,
                key_hex(&waiter.key),
                response.opcode,
                response.disk_id,
                key_hex(&response.key),
            )))
        } else {
            Ok(Reply { response, data })
        };
        waiter.answer.send(answer);
    }

    /// Fails one request.
    fn fail(&self, request_id: u32, error: ClientError) {
        if let Some(waiter) = self.take(request_id) {
            waiter.answer.send(Err(error));
        }
    }

    /// Removes a request from the in-flight set (answered, failed, timed out or abandoned).
    /// Wakes the senders waiting for a slot, if any (a wake-up is a system call: not made per
    /// response when nobody waits).
    fn take(&self, request_id: u32) -> Option<Waiter> {
        let mut state = lock(&self.state);
        let waiter = state.waiters.remove(&request_id);
        let wake = waiter.is_some() && state.slot_waiters > 0;
        drop(state);
        if wake {
            self.slot_freed.notify_all();
        }
        waiter
    }

    /// Marks the connection lost and fails everything in flight.
    fn kill(&self, ending: &Ending) {
        let waiters: Vec<Waiter> = {
            let mut state = lock(&self.state);
            state.dead = true;
            state.waiters.drain().map(|(_, waiter)| waiter).collect()
        };
        self.slot_freed.notify_all();
        for waiter in waiters {
            waiter.answer.send(Err(ending.error()));
        }
    }
}

/// Why [`Shared::try_reserve`] registered nothing.
enum ReserveError {
    /// Every slot is taken (and the caller would not wait): its sink, back.
    Full(Sink),
    Failed(ClientError),
}

/// Why a connection ended, for the requests still in flight on it.
enum Ending {
    /// End of stream, an I/O error, or a shutdown.
    Lost,
    /// The node's notice just before it closes (request id 0): BUSY or SHUTTING_DOWN.
    Notice(ErrorResponse),
    /// The node broke the framing; the stream cannot be read further.
    Protocol(Error),
}

impl Ending {
    fn error(&self) -> ClientError {
        match self {
            Ending::Lost => ClientError::Disconnected,
            Ending::Notice(notice) => ClientError::from_status(notice.clone()),
            Ending::Protocol(error) => ClientError::Protocol(error.clone()),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Pending requests

/// A request in flight, from [`Client::submit`]. Dropping it abandons the request (its answer
/// is dropped when it comes).
#[derive(Debug)]
pub struct Pending {
    shared: Arc<Shared>,
    request_id: u32,
    answer: mpsc::Receiver<Result<Reply, ClientError>>,
    deadline: Instant,
    /// The answer was taken or the request forgotten: nothing to remove on drop.
    finished: bool,
}

impl Pending {
    /// The request id this request was sent with.
    pub fn request_id(&self) -> u32 {
        self.request_id
    }

    /// Waits for the answer until the request's deadline ([`ClientOptions::request_timeout`]
    /// after it was submitted). An error status is [`ClientError::Status`]; GET bytes that do
    /// not match their checksum are [`ClientError::Integrity`]. Does not retry.
    pub fn wait(mut self) -> Result<Reply, ClientError> {
        let answer =
            match self.answer.recv_timeout(self.deadline.saturating_duration_since(Instant::now()))
            {
                Ok(answer) => answer,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    self.shared.take(self.request_id);
                    // The answer may have come between the timeout and the removal.
                    self.answer.try_recv().unwrap_or(Err(ClientError::Timeout))
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => Err(ClientError::Disconnected),
            };
        self.finished = true;
        check_reply(answer?)
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if !self.finished {
            self.shared.take(self.request_id);
        }
    }
}

/// An answer as a result: error statuses become errors, and GET bytes are checked.
fn check_reply(reply: Reply) -> Result<Reply, ClientError> {
    match &reply.response.body {
        ResponseBody::Error(error) => Err(ClientError::from_status(error.clone())),
        ResponseBody::Get(get) => match get.check_data(&reply.data) {
            Ok(()) => Ok(reply),
            Err(err) => Err(ClientError::Integrity(format!(
                "disk {} key {}: {err}; the bytes were discarded",
                reply.response.disk_id,
                key_hex(&reply.response.key)
            ))),
        },
        _ => Ok(reply),
    }
}

// ---------------------------------------------------------------------------------------------
// Completion queues

/// Where the answers of requests sent with [`Client::submit_to`] arrive, in the order they
/// arrive. Cheap to clone (clones share the queue); meant for one consuming thread. See the
/// module documentation, "Completion queues".
#[derive(Debug, Clone, Default)]
pub struct CompletionQueue {
    shared: Arc<QueueShared>,
}

/// The answer to one request of a [`CompletionQueue`].
#[derive(Debug)]
pub struct Completion {
    /// The tag given to [`Client::submit_to`].
    pub tag: u64,
    /// The answer, as [`Pending::wait`] would give it: an error status is
    /// [`ClientError::Status`], GET bytes that fail their checksum [`ClientError::Integrity`].
    pub result: Result<Reply, ClientError>,
}

#[derive(Debug, Default)]
struct QueueShared {
    state: Mutex<QueueState>,
    /// Signalled when a completion arrives while the consumer sleeps in `wait`.
    ready: Condvar,
}

#[derive(Debug, Default)]
struct QueueState {
    /// Answers not yet taken, unchecked (`check_reply` runs in the consumer's thread).
    done: VecDeque<(u64, Result<Reply, ClientError>)>,
    /// Requests submitted and not yet completed, by submission number (at most the requests in
    /// flight: `wait` scans it for the earliest deadline, as clients may differ in timeout).
    outstanding: BTreeMap<u64, Outstanding>,
    next_seq: u64,
    /// The consumer sleeps in `wait` and must be woken.
    sleeping: bool,
}

#[derive(Debug)]
struct Outstanding {
    tag: u64,
    deadline: Instant,
    shared: Arc<Shared>,
    /// [`REQUEST_ID_NOTICE`] until the connection has handed out the id.
    request_id: u32,
}

impl CompletionQueue {
    pub fn new() -> CompletionQueue {
        CompletionQueue::default()
    }

    /// Requests submitted whose completion has not been taken yet.
    pub fn len(&self) -> usize {
        let state = lock(&self.shared.state);
        state.outstanding.len() + state.done.len()
    }

    /// Whether no request is outstanding and no completion waits to be taken.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Moves every completion that has arrived into `out`, waiting up to `timeout` for the
    /// first one; returns how many it moved. Returns 0 at once when nothing is outstanding.
    /// Requests past their deadline are completed with [`ClientError::Timeout`] here.
    pub fn wait(&self, out: &mut Vec<Completion>, timeout: Duration) -> usize {
        let give_up = Instant::now() + timeout;
        let mut state = lock(&self.shared.state);
        loop {
            if !state.done.is_empty() || state.outstanding.is_empty() {
                break;
            }
            let now = Instant::now();
            let first_deadline = state.outstanding.values().map(|o| o.deadline).min();
            if first_deadline.is_some_and(|deadline| deadline <= now) {
                drop(state);
                self.expire(now);
                state = lock(&self.shared.state);
                continue;
            }
            if now >= give_up {
                break;
            }
            let until = first_deadline.map_or(give_up, |deadline| deadline.min(give_up));
            state.sleeping = true;
            state = self
                .shared
                .ready
                .wait_timeout(state, until - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
            state.sleeping = false;
        }
        let taken: Vec<_> = state.done.drain(..).collect();
        drop(state);
        let count = taken.len();
        out.extend(
            taken
                .into_iter()
                .map(|(tag, answer)| Completion { tag, result: answer.and_then(check_reply) }),
        );
        count
    }

    /// Completes the requests whose deadline has passed with [`ClientError::Timeout`].
    fn expire(&self, now: Instant) {
        let expired: Vec<(Arc<Shared>, u32)> = lock(&self.shared.state)
            .outstanding
            .values()
            .filter(|o| o.deadline <= now)
            .map(|o| (Arc::clone(&o.shared), o.request_id))
            .collect();
        // Outside the queue's lock: a connection's lock is never taken inside it. A request the
        // connection no longer holds is being completed by its reader thread right now.
        for (shared, request_id) in expired {
            if let Some(waiter) = shared.take(request_id) {
                waiter.answer.send(Err(ClientError::Timeout));
            }
        }
    }

    /// Registers a request about to be reserved on a connection; returns its number.
    fn register(&self, tag: u64, deadline: Instant, shared: &Arc<Shared>) -> u64 {
        let mut state = lock(&self.shared.state);
        let seq = state.next_seq;
        state.next_seq += 1;
        let outstanding = Outstanding {
            tag,
            deadline,
            shared: Arc::clone(shared),
            request_id: REQUEST_ID_NOTICE,
        };
        state.outstanding.insert(seq, outstanding);
        seq
    }

    fn set_request_id(&self, seq: u64, request_id: u32) {
        if let Some(outstanding) = lock(&self.shared.state).outstanding.get_mut(&seq) {
            outstanding.request_id = request_id;
        }
    }

    /// Forgets a request that was never sent.
    fn unregister(&self, seq: u64) {
        lock(&self.shared.state).outstanding.remove(&seq);
    }
}

impl QueueShared {
    /// Queues the answer of request `seq`; wakes the consumer if it sleeps. A request already
    /// completed (by its deadline) is not completed twice.
    fn complete(&self, seq: u64, answer: Result<Reply, ClientError>) {
        let mut state = lock(&self.state);
        let Some(outstanding) = state.outstanding.remove(&seq) else { return };
        state.done.push_back((outstanding.tag, answer));
        let wake = state.sleeping;
        drop(state);
        if wake {
            self.ready.notify_one();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Batches

/// Requests for a [`CompletionQueue`] sent with one `writev` per connection instead of one
/// per request: on loopback most of a small request's cost is the system call and the TCP
/// send path it runs, so a load generator that answers a burst of completions with a burst of
/// requests saves most of it. From [`Client::batch`].
///
/// [`Batch::submit`] checks a request, registers it (slot, id, deadline) and encodes it; the
/// frames go out at [`Batch::send`], or when the batch is dropped, or early when a connection
/// has no free slot left (its requests in the batch are sent first, so that a slot can free
/// up). Each request then behaves as with [`Client::submit_to`]: an `Err` from `submit` means
/// nothing was registered; after `Ok`, exactly one completion arrives. A PUT's value is
/// borrowed until the batch is sent.
#[derive(Debug)]
pub struct Batch<'c, 'v> {
    client: &'c Client,
    queue: &'c CompletionQueue,
    conns: Vec<BatchConn<'v>>,
}

/// A batch's frames for one connection.
#[derive(Debug)]
struct BatchConn<'v> {
    conn: Arc<Conn>,
    /// Headers and metas, back to back.
    frames: Vec<u8>,
    /// Per request: where its frame ends in `frames`, and the value that follows it.
    parts: Vec<(usize, Option<&'v [u8]>)>,
    request_ids: Vec<u32>,
}

impl<'v> Batch<'_, 'v> {
    /// Registers one request and adds it to the batch; see [`Batch`] and
    /// [`Client::submit_to`].
    pub fn submit(
        &mut self,
        tag: u64,
        disk: u16,
        key: Key,
        body: RequestBody,
        value: Option<&'v [u8]>,
    ) -> Result<(), ClientError> {
        let client = self.client;
        client.check_request(disk, &key, &body, value)?;
        let deadline = Instant::now() + client.options.request_timeout;
        let conn = client.connection_for(disk, deadline)?;
        let index = match self.conns.iter().position(|c| Arc::ptr_eq(&c.conn, &conn)) {
            Some(index) => index,
            None => {
                let frames = Vec::new();
                self.conns.push(BatchConn {
                    conn,
                    frames,
                    parts: Vec::new(),
                    request_ids: Vec::new(),
                });
                self.conns.len() - 1
            }
        };
        let conn = Arc::clone(&self.conns[index].conn);
        let seq = self.queue.register(tag, deadline, &conn.shared);
        let sink = Sink::Queue { queue: Arc::clone(&self.queue.shared), seq };
        let opcode = body.opcode();
        let reserved = match conn.shared.try_reserve(opcode, disk, key, None, sink) {
            Err(ReserveError::Full(sink)) => {
                // The slots may be held by this batch's own unsent requests: send them first.
                self.conns[index].flush();
                conn.shared.reserve(opcode, disk, key, deadline, sink)
            }
            Err(ReserveError::Failed(error)) => Err(error),
            Ok(request_id) => Ok(request_id),
        };
        let request_id = match reserved {
            Ok(request_id) => request_id,
            Err(error) => {
                self.queue.unregister(seq);
                return Err(error);
            }
        };
        self.queue.set_request_id(seq, request_id);
        let pending = &mut self.conns[index];
        Request { request_id, disk_id: disk, key, body }.encode(&mut pending.frames);
        pending.parts.push((pending.frames.len(), value));
        pending.request_ids.push(request_id);
        Ok(())
    }

    /// Requests submitted and not sent yet.
    pub fn len(&self) -> usize {
        self.conns.iter().map(|c| c.request_ids.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Writes every request of the batch, one `writev` per connection (more only past
    /// `IOV_SLICES_MAX` buffers). A failed write completes that connection's requests with the
    /// error. Dropping the batch does the same.
    pub fn send(mut self) {
        self.send_all();
    }

    fn send_all(&mut self) {
        for conn in &mut self.conns {
            conn.flush();
        }
    }
}

impl Drop for Batch<'_, '_> {
    fn drop(&mut self) {
        self.send_all();
    }
}

impl BatchConn<'_> {
    /// Writes the frames held for this connection.
    fn flush(&mut self) {
        if self.request_ids.is_empty() {
            return;
        }
        let mut slices = Vec::with_capacity(2 * self.parts.len() + 1);
        let mut run_start = 0;
        for &(end, value) in &self.parts {
            if let Some(value) = value {
                slices.push(IoSlice::new(&self.frames[run_start..end]));
                slices.push(IoSlice::new(value));
                run_start = end;
            }
        }
        if run_start < self.frames.len() {
            slices.push(IoSlice::new(&self.frames[run_start..]));
        }
        if let Err(error) = self.conn.write_frames(&mut slices) {
            let (kind, text) = match &error {
                ClientError::Io { error, .. } => (error.kind(), error.to_string()),
                other => (io::ErrorKind::Other, other.to_string()),
            };
            let context = format!("sending a request to {}", self.conn.peer);
            for &request_id in &self.request_ids {
                if let Some(waiter) = self.conn.shared.take(request_id) {
                    let error =
                        ClientError::io(context.clone(), io::Error::new(kind, text.clone()));
                    waiter.answer.send(Err(error));
                }
            }
            self.conn.shared.kill(&Ending::Lost);
        }
        self.frames.clear();
        self.parts.clear();
        self.request_ids.clear();
    }
}

// ---------------------------------------------------------------------------------------------
// Reading frames

/// A frame read from the node whose stream is still in sync.
enum Incoming {
    /// A response and its data section.
    Response(Response, Vec<u8>),
    /// A frame that was skipped: a sound header, but a message or field this client refuses
    /// (an unknown status, a malformed message). Its request fails; the connection goes on.
    Rejected { request_id: u32, error: Error },
}

/// Why frames can no longer be read from a stream.
enum ReadFailure {
    Io(io::Error),
    /// The framing is broken (bad magic, header checksum, lengths beyond the format).
    Protocol(Error),
}

/// Reads one frame. Allocates for meta and data only lengths `decode_header` accepted: meta
/// within the format's limit, data within `limits` (the node's value cap).
fn read_frame(
    r: &mut impl Read,
    limits: &Limits,
    meta: &mut Vec<u8>,
) -> Result<Incoming, ReadFailure> {
    let mut header_bytes = [0u8; HEADER_BYTES];
    r.read_exact(&mut header_bytes).map_err(ReadFailure::Io)?;
    let header: FrameHeader = match wire::decode_header(&header_bytes, limits) {
        Ok(Decoded::Ready(header)) => header,
        Ok(Decoded::NeedMore { .. }) => unreachable!("a whole header was given"),
        Err(error) => {
            return match (error.frame().copied(), error.disposition()) {
                (Some(frame), Disposition::Reply(_)) => {
                    skip(r, frame.payload_bytes).map_err(ReadFailure::Io)?;
                    Ok(Incoming::Rejected { request_id: frame.request_id, error })
                }
                _ => Err(ReadFailure::Protocol(error)),
            };
        }
    };
    meta.clear();
    meta.resize(header.meta_len as usize, 0);
    r.read_exact(meta).map_err(ReadFailure::Io)?;
    let mut data = vec![0u8; header.data_len as usize];
    r.read_exact(&mut data).map_err(ReadFailure::Io)?;
    Ok(match Response::decode(&header, meta) {
        Ok(response) => Incoming::Response(response, data),
        Err(error) => Incoming::Rejected { request_id: header.request_id, error },
    })
}

/// Reads and discards `bytes` bytes (a rejected frame's payload, bounded by the frame limit).
fn skip(r: &mut impl Read, bytes: u64) -> io::Result<()> {
    let skipped = io::copy(&mut r.take(bytes), &mut io::sink())?;
    if skipped < bytes {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(())
}

/// A connection's reader thread: hands each response to its request until the stream ends,
/// then fails whatever is still in flight.
fn read_loop(stream: TcpStream, shared: &Shared, limits: Limits) {
    let mut reader = BufReader::with_capacity(READ_BUFFER_BYTES, &stream);
    let mut meta = Vec::new();
    let ending = loop {
        match read_frame(&mut reader, &limits, &mut meta) {
            Ok(Incoming::Response(response, _)) if response.request_id == REQUEST_ID_NOTICE => {
                break Ending::Notice(notice(response));
            }
            Ok(Incoming::Response(response, data)) => shared.complete(response, data),
            Ok(Incoming::Rejected { request_id, error }) => {
                shared.fail(request_id, ClientError::Protocol(error));
            }
            Err(ReadFailure::Io(_)) => break Ending::Lost,
            Err(ReadFailure::Protocol(error)) => break Ending::Protocol(error),
        }
    };
    // The node closes after a notice; after a framing error we do. Either way, no more frames.
    let _ = stream.shutdown(Shutdown::Both);
    shared.kill(&ending);
}

/// The status and message of a notice (request id 0).
fn notice(response: Response) -> ErrorResponse {
    match response.body {
        ResponseBody::Error(error) => error,
        other => ErrorResponse {
            status: other.status(),
            message: "the node sent a notice without an error status".into(),
        },
    }
}

// ---------------------------------------------------------------------------------------------
// HELLO

/// The HELLO exchange on a new connection, before its reader thread starts: version,
/// capabilities, and authentication when the node asks for it.
fn handshake(
    stream: &TcpStream,
    peer: SocketAddr,
    secret: Option<&Secret>,
    deadline: Instant,
) -> Result<HelloResponse, ClientError> {
    let hello = HelloRequest {
        version_min: 1,
        version_max: PROTOCOL_VERSION,
        capabilities: Capabilities(Capabilities::SHARD_PORTS.0 | Capabilities::AUTH_HMAC_SHA256.0),
        auth: None,
    };
    let body = hello_exchange(stream, peer, HELLO_REQUEST_ID, hello, deadline)?;
    let challenge = match body {
        ResponseBody::Hello(hello) => return Ok(hello),
        ResponseBody::AuthRequired(challenge) => challenge,
        ResponseBody::Error(error) => return Err(hello_error(error)),
        other => return Err(unexpected(&other)),
    };
    let Some(secret) = secret else {
        return Err(ClientError::AuthFailed(
            "the node requires authentication; pass a secret file".into(),
        ));
    };
    let client_nonce = random_nonce()?;
    let AuthChallenge { server_nonce } = challenge;
    let proof = auth::client_proof(secret, &server_nonce, &client_nonce);
    let hello = HelloRequest { auth: Some(AuthProof { client_nonce, proof }), ..hello };
    match hello_exchange(stream, peer, HELLO_AUTH_REQUEST_ID, hello, deadline)? {
        ResponseBody::Hello(hello) => {
            let Some(server_proof) = hello.server_proof else {
                return Err(ClientError::AuthFailed(
                    "the node accepted our proof but did not prove it holds the secret".into(),
                ));
            };
            auth::verify_server_proof(secret, &server_nonce, &client_nonce, &server_proof)
                .map_err(|_| {
                    ClientError::AuthFailed(
                        "the node's proof does not match the secret: it does not hold it".into(),
                    )
                })?;
            Ok(hello)
        }
        ResponseBody::Error(error) => Err(hello_error(error)),
        other => Err(unexpected(&other)),
    }
}

/// Sends one HELLO and reads its answer, within `deadline`.
fn hello_exchange(
    mut stream: &TcpStream,
    peer: SocketAddr,
    request_id: u32,
    hello: HelloRequest,
    deadline: Instant,
) -> Result<ResponseBody, ClientError> {
    let io_error = |err: io::Error| {
        let err = if matches!(err.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) {
            io::Error::new(io::ErrorKind::TimedOut, "no answer within the connect timeout")
        } else {
            err
        };
        ClientError::io(format!("HELLO with {peer}"), err)
    };
    let left = remaining(deadline)?;
    stream.set_read_timeout(Some(left)).map_err(io_error)?;
    stream.set_write_timeout(Some(left)).map_err(io_error)?;
    let request =
        Request { request_id, disk_id: 0, key: KEY_NONE, body: RequestBody::Hello(hello) };
    let mut frame = Vec::with_capacity(HEADER_BYTES + REQUEST_META_BYTES_MAX as usize);
    request.encode(&mut frame);
    stream.write_all(&frame).map_err(io_error)?;
    // HELLO answers have no data section; the default limits are generous for them.
    let response = match read_frame(&mut stream, &Limits::default(), &mut Vec::new()) {
        Ok(Incoming::Response(response, _)) => response,
        Ok(Incoming::Rejected { error, .. }) | Err(ReadFailure::Protocol(error)) => {
            return Err(ClientError::Protocol(error));
        }
        Err(ReadFailure::Io(err)) if err.kind() == io::ErrorKind::UnexpectedEof => {
            return Err(ClientError::Disconnected);
        }
        Err(ReadFailure::Io(err)) => return Err(io_error(err)),
    };
    if response.request_id == REQUEST_ID_NOTICE {
        return Err(ClientError::from_status(notice(response)));
    }
    if response.request_id != request_id || response.opcode != Opcode::Hello {
        return Err(ClientError::BadResponse(format!(
            "request {request_id} was HELLO; the answer is {:?} to request {}",
            response.opcode, response.request_id
        )));
    }
    Ok(response.body)
}

/// An error answer to HELLO.
fn hello_error(error: ErrorResponse) -> ClientError {
    if error.status == Status::Unauthorized {
        let detail = if error.message.is_empty() { "no reason given" } else { &error.message };
        return ClientError::AuthFailed(format!("the node refused our proof ({detail})"));
    }
    ClientError::from_status(error)
}

fn random_nonce() -> Result<Nonce, ClientError> {
    let mut nonce = [0u8; NONCE_BYTES];
    getrandom::fill(&mut nonce).map_err(|err| {
        ClientError::io("drawing a random nonce", io::Error::other(err.to_string()))
    })?;
    Ok(nonce)
}

/// Locks `mutex`, whatever a panicking holder left behind: each critical section here leaves
/// the state consistent at every step (single map inserts and removals, flag sets).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_print_as_lowercase_hex() {
        let key: Key = std::array::from_fn(|i| i as u8 * 7);
        let hex = key_hex(&key);
        assert_eq!(hex.len(), 64);
        assert!(hex.starts_with("00070e15"), "{hex}");
    }

    #[test]
    fn retryable_errors() {
        let status = |status| ClientError::Status { status, message: String::new() };
        assert!(ClientError::Disconnected.is_retryable());
        assert!(ClientError::io("x", io::ErrorKind::ConnectionReset.into()).is_retryable());
        for retryable in [Status::Busy, Status::ShuttingDown, Status::Timeout] {
            assert!(status(retryable).is_retryable(), "{retryable:?}");
        }
        for final_status in [Status::NotFound, Status::ChecksumMismatch, Status::Unauthorized] {
            assert!(!status(final_status).is_retryable(), "{final_status:?}");
        }
        assert!(!ClientError::Timeout.is_retryable());
        assert!(!ClientError::Integrity(String::new()).is_retryable());
        // BUSY means the node did not take the request; TIMEOUT and a lost connection leave it
        // unknown.
        assert!(!status(Status::Busy).outcome_unknown());
        assert!(status(Status::Timeout).outcome_unknown());
        assert!(ClientError::Disconnected.outcome_unknown());
    }

    #[test]
    fn errors_read_as_one_line() {
        let err = ClientError::Status { status: Status::NotFound, message: "no such key".into() };
        assert_eq!(err.to_string(), "the node answered NOT_FOUND: no such key");
        let err = ClientError::Status { status: Status::Busy, message: String::new() };
        assert_eq!(err.to_string(), "the node answered BUSY");
        assert_eq!(ClientError::NoSuchDisk(7).to_string(), "the node has no disk 7");
    }

    #[test]
    fn backoff_doubles_up_to_its_cap_and_respects_the_deadline() {
        let mut backoff = Backoff::new();
        assert!(!backoff.pause(Some(Instant::now())), "no time left for another attempt");
        assert_eq!(backoff.next, Duration::from_millis(BACKOFF_INITIAL_MS));
        assert!(backoff.pause(None));
        assert_eq!(backoff.next, Duration::from_millis(2 * BACKOFF_INITIAL_MS));
        backoff.next = Duration::from_millis(BACKOFF_MAX_MS - 1);
        let far = Instant::now() + Duration::from_secs(3600);
        assert!(backoff.pause(Some(far)));
        assert_eq!(backoff.next, Duration::from_millis(BACKOFF_MAX_MS));
    }
}
