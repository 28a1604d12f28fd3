//! A request executed on the core that owns its disk, and the one mapping of store errors to
//! wire statuses. A connection's core calls [`CoreServer::dispatch`]; when the disk belongs to
//! another core the job crosses to it through that core's inbox and the reply comes back
//! through a one-shot channel. Everything that crosses cores is `Send` plain data ([`Job`],
//! [`SentReply`]); a reply read on another core is copied once into a `Vec` to cross.

use std::cell::Cell;
use std::rc::Rc;

use ::metrics::Gauge;
use ioengine::executor::SendError;
use proto::messages::{
    ErrorResponse, GetResponse, ListCursor, ListPage, PutOutcome as WirePutOutcome, RequestBody,
    ResponseBody, StatResponse,
};
use proto::wire::{Key, Status};

use super::sync::{self, BudgetGuard};
use super::{CoreServer, DISK_QUEUE_MAX, LocalDisk};
use crate::metrics::{DISK_UNKNOWN, count_request};
use crate::store::{PutOutcome, ReadValue, StoreError, ValueBuf};

/// The store error's status on the wire (docs/PROTOCOL.md, "Statuses").
pub fn status_of(err: &StoreError) -> Status {
    match err {
        StoreError::NotFound => Status::NotFound,
        StoreError::ExistsWithOtherContent => Status::ExistsWithOtherContent,
        StoreError::ValueTooLarge { .. } => Status::ValueTooLarge,
        StoreError::BadRange { .. } => Status::BadRange,
        StoreError::NoSpace { .. } => Status::NoSpace,
        StoreError::Checksum { .. } => Status::StoredChecksumError,
        StoreError::Corrupt { .. } => Status::StoredCorrupt,
        StoreError::Io { .. } => Status::IoError,
        StoreError::NotFormatted { .. } | StoreError::GeometryMismatch { .. } => Status::DiskFailed,
        StoreError::ReadOnly { .. } => Status::DiskReadOnly,
        StoreError::CannotFormat { .. } => Status::Internal,
    }
}

/// A PUT's value, received and checksummed on the connection's core.
#[derive(Debug)]
pub struct PutValue {
    /// The bytes, laid out where the store writes them from.
    pub buf: ValueBuf,
    /// crc32c of each 64 KiB chunk.
    pub chunk_crcs: Vec<u32>,
    /// crc32c of the whole value (already checked against the client's).
    pub value_crc: u32,
}

/// A request on its way to the disk's owner.
#[derive(Debug)]
pub struct Job {
    /// The disk.
    pub disk_id: u16,
    /// The key.
    pub key: Key,
    /// What is asked (never HELLO or DISK_STATUS: the connection answers those).
    pub body: RequestBody,
    /// A PUT's value.
    pub value: Option<PutValue>,
}

/// The bytes a reply carries after its meta section.
#[derive(Debug)]
pub enum ReplyData {
    /// None.
    None,
    /// Read on this core, straight from the store's buffer.
    Read(ReadValue),
    /// Copied (a reply from another core).
    Bytes(Vec<u8>),
}

impl ReplyData {
    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        match self {
            ReplyData::None => &[],
            ReplyData::Read(value) => value.as_slice(),
            ReplyData::Bytes(bytes) => bytes,
        }
    }
}

/// A reply, with the budget its bytes hold until they are sent.
#[derive(Debug)]
pub struct Reply {
    /// The response body.
    pub body: ResponseBody,
    /// The data section.
    pub data: ReplyData,
    /// Budget held by the data until it is sent.
    pub budget: Option<BudgetGuard>,
}

impl Reply {
    /// An error reply.
    pub fn error(status: Status, message: impl Into<String>) -> Reply {
        Reply {
            body: ResponseBody::Error(ErrorResponse { status, message: message.into() }),
            data: ReplyData::None,
            budget: None,
        }
    }

    fn of_store_error(err: &StoreError) -> Reply {
        Reply::error(status_of(err), err.to_string())
    }

    fn ok(body: ResponseBody) -> Reply {
        Reply { body, data: ReplyData::None, budget: None }
    }
}

/// A reply crossing back from another core.
#[derive(Debug)]
pub struct SentReply {
    body: ResponseBody,
    data: Option<Vec<u8>>,
}

impl CoreServer {
    /// Answers `job` on the core that owns its disk, within the request timeout.
    pub(super) async fn dispatch(self: &Rc<Self>, job: Job) -> Reply {
        let Some(slot) = self.directory.disk(job.disk_id) else {
            count_request(DISK_UNKNOWN, job.body.opcode(), Status::NoSuchDisk);
            return Reply::error(
                Status::NoSuchDisk,
                format!("no disk {} on this node", job.disk_id),
            );
        };
        let owner = slot.core;
        let timeout = self.settings.request_timeout;
        let answer = if owner == self.index {
            ioengine::time::timeout_coarse(timeout, self.execute(job, || false)).await
        } else {
            // Boxed: most requests run on their own core, and a task's size is what it copies.
            ioengine::time::timeout_coarse(timeout, Box::pin(self.forward(owner, job))).await
        };
        answer.unwrap_or_else(|_| {
            Reply::error(
                Status::Timeout,
                format!(
                    "not answered within {} ms; it may or may not have taken effect",
                    timeout.as_millis()
                ),
            )
        })
    }

    /// Sends `job` to core `owner` and waits for its reply.
    async fn forward(self: &Rc<Self>, owner: usize, job: Job) -> Reply {
        let Some(core) = self.cores.get(owner) else {
            return Reply::error(Status::Internal, format!("core {owner} does not exist"));
        };
        let (tx, rx) = sync::oneshot::<SentReply>();
        let (disk_id, op) = (job.disk_id, job.body.opcode());
        let sent = core.send(move || {
            // Runs on the owner's thread, outside any task: start one there.
            let Some(server) = super::current() else { return };
            ioengine::spawn(async move {
                // A reply the waiting core gave up on (request timeout) is counted as TIMEOUT.
                let reply = server.execute(job, || tx.is_abandoned()).await;
                let data = match &reply.data {
                    ReplyData::None => None,
                    data => Some(data.as_slice().to_vec()),
                };
                tx.send(SentReply { body: reply.body, data });
            })
            .detach();
        });
        let refused = match sent {
            Ok(()) => {
                self.metrics.forwarded.increment(1);
                None
            }
            Err(SendError::Busy) => Some((Status::Busy, "has a full queue")),
            Err(SendError::Stopped) => Some((Status::ShuttingDown, "has stopped")),
        };
        if let Some((status, why)) = refused {
            count_request(&self.disk_label(disk_id), op, status);
            return Reply::error(status, format!("core {owner} {why}"));
        }
        match rx.recv().await {
            Some(SentReply { body, data: Some(bytes) }) => {
                let budget = Some(self.budget.force(bytes.len() as u64));
                Reply { body, data: ReplyData::Bytes(bytes), budget }
            }
            Some(SentReply { body, data: None }) => Reply::ok(body),
            None => {
                count_request(&self.disk_label(disk_id), op, Status::ShuttingDown);
                Reply::error(Status::ShuttingDown, format!("core {owner} stopped before answering"))
            }
        }
    }

    /// Runs `job` against this core's store and counts it in the disk's metrics, with its
    /// status, or TIMEOUT if the request timeout cancelled it or `abandoned` says the waiting
    /// core gave up on the reply.
    async fn execute(self: &Rc<Self>, job: Job, abandoned: impl Fn() -> bool) -> Reply {
        let op = job.body.opcode();
        let Some(disk) = self.stores.get(&job.disk_id) else {
            count_request(&job.disk_id.to_string(), op, Status::DiskFailed);
            return Reply::error(
                Status::DiskFailed,
                format!(
                    "disk {} is not being served (it failed to open; see the node's log)",
                    job.disk_id
                ),
            );
        };
        let record = disk.metrics.start(op);
        if disk.queued.get() >= DISK_QUEUE_MAX {
            record.finish(Status::Busy, 0);
            return Reply::error(
                Status::Busy,
                format!("disk {} has {DISK_QUEUE_MAX} requests queued", job.disk_id),
            );
        }
        let _queued = Queued::new(&disk.queued, &disk.metrics.queue_depth);
        let value_bytes = job.value.as_ref().map_or(0, |v| v.buf.value().len() as u64);
        let reply = self.execute_on(disk, job).await;
        let status = if abandoned() { Status::Timeout } else { reply.body.status() };
        // A PUT's value in, a GET's data out (the other carries none).
        record.finish(status, value_bytes + reply.data.as_slice().len() as u64);
        reply
    }

    async fn execute_on(self: &Rc<Self>, disk: &LocalDisk, job: Job) -> Reply {
        let store = &disk.store;
        let slot = self.directory.disk(job.disk_id);
        let key = job.key;
        let reply = match job.body {
            RequestBody::Put(_) => {
                let Some(value) = job.value else {
                    return Reply::error(Status::BadRequest, "PUT without a value");
                };
                // The store writes the value from its buffer or copies it, then recycles it.
                let outcome = Box::pin(store.put_received(
                    &key,
                    value.buf,
                    &value.chunk_crcs,
                    value.value_crc,
                ))
                .await;
                match outcome {
                    Ok(PutOutcome::Stored) => Reply::ok(ResponseBody::Put(WirePutOutcome::Stored)),
                    Ok(PutOutcome::AlreadyStored) => {
                        Reply::ok(ResponseBody::Put(WirePutOutcome::AlreadyStored))
                    }
                    Err(err) => Reply::of_store_error(&err),
                }
            }
            RequestBody::Delete => match Box::pin(store.delete(&key)).await {
                Ok(()) => Reply::ok(ResponseBody::Delete),
                Err(err) => Reply::of_store_error(&err),
            },
            RequestBody::Get(get) => {
                let range = get.range.map(|r| (u64::from(r.offset), u64::from(r.len)));
                // Budget for the bytes about to be read, by the index's length.
                let bytes = match range {
                    Some((_, len)) => len,
                    None => store.location_of(&key).map_or(0, |l| u64::from(l.value_len)),
                };
                let budget = self.budget.acquire(bytes).await;
                match store.get(&key, range).await {
                    Ok(value) => {
                        let data = value.as_slice();
                        let offset = range.map_or(0, |(offset, _)| offset as u32);
                        let whole = offset == 0 && data.len() as u64 == u64::from(value.value_len);
                        let data_crc32c =
                            if whole { value.value_crc } else { ioengine::checksum::crc32c(data) };
                        let response = GetResponse {
                            value_len: value.value_len,
                            value_crc32c: value.value_crc,
                            offset,
                            data_len: data.len() as u32,
                            data_crc32c,
                        };
                        Reply {
                            body: ResponseBody::Get(response),
                            data: ReplyData::Read(value),
                            budget: Some(budget),
                        }
                    }
                    Err(err) => Reply::of_store_error(&err),
                }
            }
            RequestBody::Stat => match Box::pin(store.stat(&key)).await {
                Ok(stat) => Reply::ok(ResponseBody::Stat(StatResponse {
                    value_len: stat.value_len,
                    value_crc32c: stat.value_crc,
                    seq: stat.seq,
                })),
                Err(err) => Reply::of_store_error(&err),
            },
            RequestBody::Exists => match Box::pin(store.exists(&key)).await {
                Ok(exists) => Reply::ok(ResponseBody::Exists(exists)),
                Err(err) => Reply::of_store_error(&err),
            },
            RequestBody::List(list) => {
                let cursor = match list.cursor.map(|c| c.to_u64()) {
                    None => None,
                    Some(Some(position)) => Some(position),
                    Some(None) => {
                        return Reply::error(Status::BadRequest, "not a cursor this node made");
                    }
                };
                match Box::pin(store.list(cursor, list.keys_max as usize)).await {
                    Ok((keys, next)) => Reply::ok(ResponseBody::List(ListPage {
                        keys,
                        next: next.map(ListCursor::from_u64),
                    })),
                    Err(err) => Reply::of_store_error(&err),
                }
            }
            RequestBody::Hello(_) | RequestBody::DiskStatus => Reply::error(
                Status::Internal,
                "HELLO and DISK_STATUS are answered by the connection",
            ),
        };
        if let Some(slot) = slot {
            slot.publish_counts(&**store);
        }
        disk.metrics.publish_counts(store.len() as u64, store.stats().live_value_bytes.get());
        reply
    }
}

/// Counts a request in a disk's queue (and its gauge) while it lives.
struct Queued<'a>(&'a Cell<u32>, &'a Gauge);

impl<'a> Queued<'a> {
    fn new(counter: &'a Cell<u32>, gauge: &'a Gauge) -> Queued<'a> {
        counter.set(counter.get() + 1);
        gauge.set(f64::from(counter.get()));
        Queued(counter, gauge)
    }
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.set(self.0.get() - 1);
        self.1.set(f64::from(self.0.get()));
    }
}
