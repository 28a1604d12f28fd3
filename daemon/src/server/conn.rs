//! One client connection: a reader (this task) that decodes frames and starts a task per
//! request, and a writer task that sends replies as they finish, in any order.
//!
//! Limits (docs/PROTOCOL.md, "Limits"): the reader stops reading while `max_in_flight`
//! requests are unanswered, and while this core's byte budget cannot hold the next PUT's value;
//! TCP flow control then holds the client back. A frame must be complete within the read
//! timeout once it started, and a connection with nothing in flight is closed after the idle
//! timeout. Bad bytes are answered or close the connection as [`proto::Error::disposition`]
//! says; a rejected frame's payload is skipped in bounded pieces, never buffered whole.
//!
//! Receiving: frames are read into a 64 KiB buffer. A PUT's value goes into an aligned buffer
//! of its own: the part already in the receive buffer is copied, the rest is received straight
//! into it (all of a large value but its first bytes). A value too large to share a batch is
//! received at the place its record takes in a batch of its own, so the store writes that
//! buffer and never copies the value. It is then checksummed once: chunk crcs for the record,
//! combined into the whole-value crc compared with the client's.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use ioengine::buf::AlignedBuf;
use ioengine::net::TcpStream;
use proto::auth::{self, Nonce};
use proto::messages::{
    AuthChallenge, Capabilities, HelloRequest, HelloResponse, Response, ResponseBody,
};
use proto::wire::{
    self, DISK_ID_ALL, Decoded, FrameContext, FrameHeader, HEADER_BYTES, KEY_NONE, Opcode,
    REQUEST_ID_NOTICE, Status,
};
use proto::{Disposition, messages::Request, messages::RequestBody};

use super::CoreServer;
use super::handler::{Job, PutValue, Reply, ReplyData};
use super::sync::{self, BudgetGuard, Either};
use crate::metrics::{DISK_NODE, Protocol, count_request};
use crate::store::ValueBuf;

/// Bytes of a connection's receive buffer.
const RX_BYTES: usize = 64 << 10;
/// Reply data up to this size is copied into the send batch; larger data is sent from its
/// own buffer.
const INLINE_DATA_MAX: usize = 64 << 10;
/// The writer sends replies in batches of about this many bytes.
const SEND_BATCH_BYTES: usize = 256 << 10;

/// Why a connection stopped reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The client closed its side.
    Eof,
    /// The server is stopping.
    Stop,
    /// No bytes for the idle timeout, or a frame not finished within the read timeout.
    Timeout,
    /// The bytes cannot be trusted (or a rejection closes the connection).
    Protocol,
    /// A socket error.
    Error,
}

impl End {
    /// The `reason` label of `shingle_connections_closed_total`.
    fn label(self) -> &'static str {
        match self {
            End::Eof => "eof",
            End::Stop => "stop",
            End::Timeout => "timeout",
            End::Protocol => "protocol",
            End::Error => "error",
        }
    }
}

/// A reply waiting to be sent.
struct Outgoing {
    head: Vec<u8>,
    data: ReplyData,
    _budget: Option<BudgetGuard>,
}

/// One connection.
pub(super) struct Conn {
    id: u64,
    stream: TcpStream,
    server: Rc<CoreServer>,
    out: RefCell<VecDeque<Outgoing>>,
    writer_waker: RefCell<Option<Waker>>,
    /// Requests read and not yet queued for sending.
    in_flight: Cell<u32>,
    reader_waker: RefCell<Option<Waker>>,
    /// No more requests will be read.
    reading_done: Cell<bool>,
    /// The socket is being torn down: stop writing.
    aborted: Cell<bool>,
    /// Sent after the last reply (SHUTTING_DOWN when the server stops).
    notice: Cell<Option<Status>>,
    authenticated: Cell<bool>,
    challenge: Cell<Option<Nonce>>,
}

impl Conn {
    pub(super) fn new(id: u64, stream: TcpStream, server: Rc<CoreServer>) -> Rc<Conn> {
        let authenticated = server.settings().secret.is_none();
        Rc::new(Conn {
            id,
            stream,
            server,
            out: RefCell::new(VecDeque::new()),
            writer_waker: RefCell::new(None),
            in_flight: Cell::new(0),
            reader_waker: RefCell::new(None),
            reading_done: Cell::new(false),
            aborted: Cell::new(false),
            notice: Cell::new(None),
            authenticated: Cell::new(authenticated),
            challenge: Cell::new(None),
        })
    }

    /// Serves the connection until the client leaves, the server stops, or the bytes go bad;
    /// then answers what is in flight and closes.
    pub(super) async fn run(self: Rc<Self>) {
        let writer = ioengine::spawn(self.clone().write_loop());
        let end = self.read_loop().await;
        tracing::debug!(connection = self.id, peer = ?self.stream.peer_addr(), ?end, "connection stops reading");
        self.server.metrics.connection_closed(end.label());
        if end == End::Stop {
            self.notice.set(Some(Status::ShuttingDown));
        }
        self.reading_done.set(true);
        self.wake_writer();
        writer.await;
        self.stream.shutdown();
    }

    /// Stops the connection now, replies in flight or not.
    pub(super) fn abort(&self) {
        self.aborted.set(true);
        self.stream.shutdown();
        self.wake_writer();
    }

    fn wake_writer(&self) {
        if let Some(waker) = self.writer_waker.borrow_mut().take() {
            waker.wake();
        }
    }

    fn queue(&self, head: Vec<u8>, data: ReplyData, budget: Option<BudgetGuard>) {
        self.out.borrow_mut().push_back(Outgoing { head, data, _budget: budget });
        self.wake_writer();
    }

    /// Queues the reply to a request whose header decoded.
    fn queue_reply(&self, header: &FrameHeader, reply: Reply) {
        let mut head = Vec::with_capacity(HEADER_BYTES + 64);
        Response::reply_to(header, reply.body).encode(&mut head);
        self.queue(head, reply.data, reply.budget);
    }

    /// Queues an error reply to a frame known only by its context.
    fn queue_rejection(&self, frame: &FrameContext, status: Status, message: &str) {
        let mut head = Vec::with_capacity(HEADER_BYTES + 64);
        wire::encode_rejection(&mut head, frame, status, message);
        self.queue(head, ReplyData::None, None);
    }

    async fn read_loop(self: &Rc<Self>) -> End {
        let mut rx = RxBuf::new();
        loop {
            if let Err(end) = self.wait_for_slot().await {
                return end;
            }
            match self.read_frame(&mut rx).await {
                Ok(()) => {}
                Err(end) => return end,
            }
        }
    }

    /// Waits while `max_in_flight` requests are unanswered: running, or answered but not yet
    /// sent (a client that does not read its answers is not read either; back-pressure, with
    /// memory bounded per connection).
    async fn wait_for_slot(&self) -> Result<(), End> {
        let max = self.server.settings().max_in_flight as usize;
        let slot = std::future::poll_fn(|cx| {
            if self.in_flight.get() as usize + self.out.borrow().len() < max {
                return Poll::Ready(());
            }
            *self.reader_waker.borrow_mut() = Some(cx.waker().clone());
            Poll::Pending
        });
        match sync::race(slot, self.server.stopping.wait()).await {
            Either::Left(()) => Ok(()),
            Either::Right(()) => Err(End::Stop),
        }
    }

    /// Reads and handles one frame.
    async fn read_frame(self: &Rc<Self>, rx: &mut RxBuf) -> Result<(), End> {
        let settings = self.server.settings();
        // Wait for the next frame as long as the idle timeout allows (longer while replies are
        // still owed: the client is waiting for us, not idle).
        loop {
            match rx.fill(self, 1, Wait::Idle(settings.idle_timeout)).await {
                Ok(()) => break,
                Err(End::Timeout) if self.in_flight.get() > 0 || !self.out.borrow().is_empty() => {}
                Err(end) => return Err(end),
            }
        }
        let deadline = Instant::now() + settings.read_timeout;
        rx.fill(self, HEADER_BYTES, Wait::Until(deadline)).await?;
        let header = match wire::decode_header(rx.available(), &settings.limits) {
            Ok(Decoded::Ready(header)) => header,
            Ok(Decoded::NeedMore { .. }) => {
                self.server.metrics.protocol_error(Protocol::Closed);
                return Err(End::Protocol);
            }
            Err(err) => return self.reject_header(rx, &err, deadline).await,
        };
        rx.consume(HEADER_BYTES);
        let frame = header.context();
        if header.is_response() {
            rx.skip(self, frame.payload_bytes, deadline).await?;
            self.server.metrics.protocol_error(Protocol::Rejected);
            self.queue_rejection(&frame, Status::BadRequest, "a client sent a response frame");
            return Ok(());
        }
        // Request metas are at most REQUEST_META_BYTES_MAX (72) bytes: decode_header checked.
        let meta_len = header.meta_len as usize;
        rx.fill(self, meta_len, Wait::Until(deadline)).await?;
        let request = Request::decode(&header, &rx.available()[..meta_len]);
        rx.consume(meta_len);
        let request = match request {
            Ok(request) => request,
            Err(err) => {
                rx.skip(self, u64::from(header.data_len), deadline).await?;
                return self.answer_error(&frame, &err);
            }
        };
        if !self.authenticated.get() && header.opcode != Opcode::Hello {
            rx.skip(self, u64::from(header.data_len), deadline).await?;
            self.count(&header, Status::Unauthorized);
            self.queue_rejection(&frame, Status::Unauthorized, "authenticate with HELLO first");
            return Ok(());
        }
        let job = match request.body {
            RequestBody::Hello(hello) => {
                let (reply, close) = self.hello(&hello);
                count_request(DISK_NODE, Opcode::Hello, reply.body.status());
                self.queue_reply(&header, reply);
                return if close { Err(End::Protocol) } else { Ok(()) };
            }
            RequestBody::DiskStatus => {
                let reply = self.disk_status(header.disk_id);
                count_request(DISK_NODE, Opcode::DiskStatus, reply.body.status());
                self.queue_reply(&header, reply);
                return Ok(());
            }
            RequestBody::Put(put) => {
                let budget = self.server.budget.acquire(u64::from(put.value_len)).await;
                let value = rx.receive_value(self, put.value_len as usize, deadline).await?;
                let mut chunk_crcs = Vec::new();
                let value_crc =
                    ioengine::checksum::chunk_and_whole_crcs(value.value(), &mut chunk_crcs);
                if value_crc != put.value_crc32c {
                    let message = format!(
                        "PUT value checksum mismatch: sent {:#010x}, received bytes have {value_crc:#010x}; nothing stored",
                        put.value_crc32c
                    );
                    value.recycle();
                    self.count(&header, Status::ChecksumMismatch);
                    self.queue_rejection(&frame, Status::ChecksumMismatch, &message);
                    return Ok(());
                }
                let value = PutValue { buf: value, chunk_crcs, value_crc };
                (
                    Job {
                        disk_id: header.disk_id,
                        key: header.key,
                        body: request.body,
                        value: Some(value),
                    },
                    Some(budget),
                )
            }
            body => (Job { disk_id: header.disk_id, key: header.key, body, value: None }, None),
        };
        self.start(header, job);
        Ok(())
    }

    /// Runs a request in its own task; its reply is queued when it finishes.
    fn start(self: &Rc<Self>, header: FrameHeader, (job, budget): (Job, Option<BudgetGuard>)) {
        self.in_flight.set(self.in_flight.get() + 1);
        self.server.metrics.in_flight.increment(1.0);
        let conn = self.clone();
        ioengine::spawn(async move {
            let reply = conn.server.dispatch(job).await;
            drop(budget);
            conn.queue_reply(&header, reply);
            conn.in_flight.set(conn.in_flight.get() - 1);
            conn.server.metrics.in_flight.decrement(1.0);
            if let Some(waker) = conn.reader_waker.borrow_mut().take() {
                waker.wake();
            }
            conn.wake_writer();
        })
        .detach();
    }

    /// Answers (or closes on) a header the decoder rejected.
    async fn reject_header(
        &self,
        rx: &mut RxBuf,
        err: &proto::Error,
        deadline: Instant,
    ) -> Result<(), End> {
        match (err.disposition(), err.frame()) {
            (Disposition::Reply(status), Some(frame)) => {
                let frame = *frame;
                self.server.metrics.protocol_error(Protocol::Rejected);
                rx.consume(HEADER_BYTES);
                rx.skip(self, frame.payload_bytes, deadline).await?;
                self.queue_rejection(&frame, status, &err.to_string());
                Ok(())
            }
            (Disposition::ReplyAndClose(status), Some(frame)) => {
                self.server.metrics.protocol_error(Protocol::RejectedClosed);
                self.queue_rejection(frame, status, &err.to_string());
                Err(End::Protocol)
            }
            _ => {
                self.server.metrics.protocol_error(Protocol::Closed);
                tracing::debug!(connection = self.id, peer = ?self.stream.peer_addr(), error = %err, "closing: bad frame");
                Err(End::Protocol)
            }
        }
    }

    /// Answers a message the decoder rejected (its header was sound).
    fn answer_error(&self, frame: &FrameContext, err: &proto::Error) -> Result<(), End> {
        match err.disposition() {
            Disposition::Reply(status) => {
                self.server.metrics.protocol_error(Protocol::Rejected);
                self.queue_rejection(frame, status, &err.to_string());
                Ok(())
            }
            Disposition::ReplyAndClose(status) => {
                self.server.metrics.protocol_error(Protocol::RejectedClosed);
                self.queue_rejection(frame, status, &err.to_string());
                Err(End::Protocol)
            }
            Disposition::Close => {
                self.server.metrics.protocol_error(Protocol::Closed);
                Err(End::Protocol)
            }
        }
    }

    /// Counts a decoded request this connection answers itself with `status`.
    fn count(&self, header: &FrameHeader, status: Status) {
        count_request(&self.server.disk_label(header.disk_id), header.opcode, status);
    }

    /// HELLO: version, authentication, topology. Returns the reply and whether to close.
    fn hello(&self, hello: &HelloRequest) -> (Reply, bool) {
        let settings = self.server.settings();
        let Some(version) = hello.negotiate() else {
            let message = format!(
                "this node speaks protocol version {}; the client speaks {}..={}",
                wire::PROTOCOL_VERSION,
                hello.version_min,
                hello.version_max
            );
            return (Reply::error(Status::UnsupportedVersion, message), false);
        };
        let mut server_proof = None;
        if let Some(secret) = &settings.secret {
            match (&hello.auth, self.authenticated.get()) {
                (None, true) => {}
                (None, false) => {
                    let mut server_nonce = [0u8; auth::NONCE_BYTES];
                    if getrandom::fill(&mut server_nonce).is_err() {
                        return (
                            Reply::error(Status::Internal, "no randomness for a challenge"),
                            true,
                        );
                    }
                    self.challenge.set(Some(server_nonce));
                    let body = ResponseBody::AuthRequired(AuthChallenge { server_nonce });
                    return (Reply { body, data: ReplyData::None, budget: None }, false);
                }
                (Some(proof), _) => {
                    // A nonce is good for one attempt.
                    let Some(server_nonce) = self.challenge.take() else {
                        return (
                            Reply::error(
                                Status::Unauthorized,
                                "no challenge was sent on this connection",
                            ),
                            true,
                        );
                    };
                    let verified = auth::verify_client_proof(
                        secret,
                        &server_nonce,
                        &proof.client_nonce,
                        &proof.proof,
                    );
                    if verified.is_err() {
                        tracing::warn!(peer = ?self.stream.peer_addr(), "authentication failed");
                        return (
                            Reply::error(
                                Status::Unauthorized,
                                "the proof does not match the shared secret",
                            ),
                            true,
                        );
                    }
                    self.authenticated.set(true);
                    server_proof =
                        Some(auth::server_proof(secret, &server_nonce, &proof.client_nonce));
                }
            }
        }
        let mut capabilities = Capabilities::NONE;
        if settings.shard_port_base != 0 {
            capabilities = Capabilities(capabilities.0 | Capabilities::SHARD_PORTS.0);
        }
        if settings.secret.is_some() {
            capabilities = Capabilities(capabilities.0 | Capabilities::AUTH_HMAC_SHA256.0);
        }
        let response = HelloResponse {
            version,
            capabilities,
            value_bytes_max: settings.limits.value_bytes_max(),
            requests_in_flight_max: settings.max_in_flight,
            server_proof,
            disks: self.server.directory.disks().iter().map(|slot| slot.info()).collect(),
        };
        let body = ResponseBody::Hello(response);
        (Reply { body, data: ReplyData::None, budget: None }, false)
    }

    fn disk_status(&self, disk_id: u16) -> Reply {
        let directory = &self.server.directory;
        let statuses = if disk_id == DISK_ID_ALL {
            directory.disks().iter().map(|slot| slot.status()).collect()
        } else {
            match directory.disk(disk_id) {
                Some(slot) => vec![slot.status()],
                None => {
                    return Reply::error(
                        Status::NoSuchDisk,
                        format!("no disk {disk_id} on this node"),
                    );
                }
            }
        };
        Reply { body: ResponseBody::DiskStatus(statuses), data: ReplyData::None, budget: None }
    }

    /// Sends queued replies, several small ones per send, until reading is done and every
    /// request in flight was answered (then a notice, if one is due).
    async fn write_loop(self: Rc<Self>) {
        let mut batch: Vec<u8> = Vec::with_capacity(SEND_BATCH_BYTES + INLINE_DATA_MAX);
        loop {
            let more = std::future::poll_fn(|cx| {
                if self.aborted.get() {
                    return Poll::Ready(false);
                }
                if !self.out.borrow().is_empty() {
                    return Poll::Ready(true);
                }
                if self.reading_done.get() && self.in_flight.get() == 0 {
                    return Poll::Ready(false);
                }
                *self.writer_waker.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            })
            .await;
            if !more {
                break;
            }
            batch.clear();
            let mut sent_after = Vec::new();
            let mut large = None;
            {
                let mut out = self.out.borrow_mut();
                while let Some(item) = out.pop_front() {
                    batch.extend_from_slice(&item.head);
                    if item.data.as_slice().len() > INLINE_DATA_MAX {
                        large = Some(item);
                        break;
                    }
                    batch.extend_from_slice(item.data.as_slice());
                    sent_after.push(item);
                    if batch.len() >= SEND_BATCH_BYTES {
                        break;
                    }
                }
            }
            // The reader may go on: these answers left the queue.
            if let Some(waker) = self.reader_waker.borrow_mut().take() {
                waker.wake();
            }
            // A client that stops reading its answers is cut off after the request timeout.
            let limit = self.server.settings().request_timeout;
            let send = ioengine::time::timeout_coarse(
                limit,
                self.stream.send_all(std::mem::take(&mut batch)),
            );
            let Ok((res, back)) = send.await else {
                self.give_up_writing("the client did not read its answers");
                break;
            };
            batch = back;
            // Buffers and budget go back once their bytes are on the way.
            drop(sent_after);
            if res.is_err() {
                self.aborted.set(true);
                break;
            }
            if let Some(item) = large {
                match ioengine::time::timeout_coarse(limit, self.send_data(item.data)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => {
                        self.aborted.set(true);
                        break;
                    }
                    Err(_) => {
                        self.give_up_writing("the client did not read its answers");
                        break;
                    }
                }
            }
        }
        if let (Some(status), false) = (self.notice.get(), self.aborted.get()) {
            let _ = self.stream.send_all(notice(status)).await;
        }
        self.out.borrow_mut().clear();
    }

    fn give_up_writing(&self, why: &str) {
        tracing::debug!(connection = self.id, peer = ?self.stream.peer_addr(), why, "closing");
        self.aborted.set(true);
        self.stream.shutdown();
    }

    /// Sends a large reply's data from the buffer it was read into.
    async fn send_data(&self, data: ReplyData) -> ioengine::Result<()> {
        match data {
            ReplyData::None => Ok(()),
            ReplyData::Bytes(bytes) => self.stream.send_all(bytes).await.0,
            ReplyData::Read(value) => {
                let (buf, start, len) = value.into_parts();
                match buf {
                    crate::store::ReadBuf::Pooled(buf) => {
                        self.stream.send_range(buf, start, len).await.0
                    }
                    crate::store::ReadBuf::Owned(buf) => {
                        self.stream.send_range(buf, start, len).await.0
                    }
                }
            }
        }
    }
}

/// A notice frame (request id 0, opcode HELLO, no disk, no key) with `status`.
fn notice(status: Status) -> Vec<u8> {
    let frame = FrameContext {
        request_id: REQUEST_ID_NOTICE,
        opcode: Opcode::Hello as u8,
        disk_id: 0,
        key: KEY_NONE,
        payload_bytes: 0,
    };
    let message = match status {
        Status::Busy => "the node is at its connection limit; retry later",
        Status::ShuttingDown => "the node is stopping; retry later",
        _ => "",
    };
    let mut out = Vec::with_capacity(HEADER_BYTES + message.len());
    wire::encode_rejection(&mut out, &frame, status, message);
    out
}

/// Turns a connection away at the connection limit: a BUSY notice, then close.
pub(super) async fn refuse(stream: TcpStream, limit: u32) {
    tracing::debug!(peer = ?stream.peer_addr(), limit, "connection limit reached; refusing");
    let send = stream.send_all(notice(Status::Busy));
    let _ = ioengine::time::timeout(Duration::from_secs(1), send).await;
    stream.shutdown();
}

/// How long a receive may wait.
#[derive(Debug, Clone, Copy)]
enum Wait {
    /// Between frames.
    Idle(Duration),
    /// Inside a frame: until the frame's deadline.
    Until(Instant),
}

/// The receive buffer: bytes received and not yet consumed are `buf[start..]`.
struct RxBuf {
    buf: Option<Vec<u8>>,
    start: usize,
}

impl RxBuf {
    fn new() -> RxBuf {
        RxBuf { buf: Some(Vec::with_capacity(RX_BYTES)), start: 0 }
    }

    fn available(&self) -> &[u8] {
        self.buf.as_deref().map_or(&[], |b| &b[self.start..])
    }

    fn consume(&mut self, n: usize) {
        self.start += n;
        debug_assert!(self.start <= self.buf.as_ref().map_or(0, Vec::len));
    }

    /// Receives until at least `need` bytes are available (`need` ≤ [`RX_BYTES`]).
    async fn fill(&mut self, conn: &Conn, need: usize, wait: Wait) -> Result<(), End> {
        while self.available().len() < need {
            let Some(mut buf) = self.buf.take() else { return Err(End::Error) };
            // Move what is left to the front when the tail has no room for what is needed.
            if buf.capacity() - buf.len() < need - (buf.len() - self.start)
                || self.start == buf.len()
            {
                buf.drain(..self.start);
                self.start = 0;
            }
            if buf.capacity() < need {
                buf.reserve(need - buf.len());
            }
            let offset = buf.len();
            let limit = match wait {
                Wait::Idle(idle) => idle,
                Wait::Until(deadline) => deadline.saturating_duration_since(Instant::now()),
            };
            let recv = ioengine::time::timeout_coarse(limit, conn.stream.recv(buf, offset));
            let (res, buf) = match sync::race(recv, conn.server.stopping.wait()).await {
                Either::Left(Ok(received)) => received,
                Either::Left(Err(_)) => return Err(End::Timeout),
                Either::Right(()) => return Err(End::Stop),
            };
            self.buf = Some(buf);
            match res {
                Ok(0) => return Err(End::Eof),
                Ok(_) => {}
                Err(_) => return Err(End::Error),
            }
        }
        Ok(())
    }

    /// Discards the next `bytes` bytes of the stream (a rejected frame's payload).
    async fn skip(&mut self, conn: &Conn, mut bytes: u64, deadline: Instant) -> Result<(), End> {
        while bytes > 0 {
            if self.available().is_empty() {
                self.fill(conn, 1, Wait::Until(deadline)).await?;
            }
            let n = (self.available().len() as u64).min(bytes);
            self.consume(n as usize);
            bytes -= n;
        }
        Ok(())
    }

    /// Receives a PUT's value of `len` bytes into an aligned buffer of its own, where the
    /// store wants it ([`ValueBuf::layout`]: a large value at the place of its record in the
    /// batch it will be written as): the bytes already buffered are copied, the rest received
    /// straight into it.
    async fn receive_value(
        &mut self,
        conn: &Conn,
        len: usize,
        deadline: Instant,
    ) -> Result<ValueBuf, End> {
        let (start, bytes) = ValueBuf::layout(len);
        let end = start + len;
        // Every byte is received or copied before it is read (the ones before `start` are
        // the store's to overwrite): a recycled buffer saves the zero-fill of a new one.
        let mut value = AlignedBuf::reuse_or_for_writes(bytes, 4096);
        value.set_len(start);
        let buffered = self.available().len().min(len);
        value.extend_from_slice(&self.available()[..buffered]);
        self.consume(buffered);
        while value.len() < end {
            let offset = value.len();
            let limit = deadline.saturating_duration_since(Instant::now());
            let recv = ioengine::time::timeout_coarse(
                limit,
                conn.stream.recv_range(value, offset, end - offset),
            );
            let (res, back) = match sync::race(recv, conn.server.stopping.wait()).await {
                Either::Left(Ok(received)) => received,
                Either::Left(Err(_)) => return Err(End::Timeout),
                Either::Right(()) => return Err(End::Stop),
            };
            value = back;
            match res {
                Ok(0) => return Err(End::Eof),
                Ok(_) => {}
                Err(_) => return Err(End::Error),
            }
        }
        Ok(ValueBuf::new(value, start))
    }
}
