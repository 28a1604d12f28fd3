//! The read path: GET (whole value or a range), STAT, EXISTS and LIST. Reads only the aligned
//! blocks a request needs, verifies the record header (its checksum covers the per-chunk
//! checksums) and the checksum of every 64 KiB chunk the range touches, and never returns a byte
//! that failed verification: a mismatch is an error naming the disk, zone and offset, and is
//! counted.
//!
//! A whole-value GET of a detached value reads the value's blocks alone and checks them against
//! the index entry's check (crc32c of the key xor crc32c of the value, taken from the verified
//! header when the record was written or recovered); anything else, or a value that does not
//! match, takes the full path, which says what is wrong.

use std::rc::Rc;

use ioengine::buf::{AlignedBuf, PooledBuf};
use ioengine::checksum::{CHUNK_BYTES, crc32c};
use ioengine::device::Device;

use super::format::{self, Key, Location, RecordHeader, RecordKind};
use super::{LIST_PAGE_MAX, Store, StoreError, StoreResult};

/// A record read in one go up to this size (header, checksums and value); larger reads of a
/// range far into the value read the header and the chunks separately.
const SINGLE_READ_BYTES_MAX: usize = 256 << 10;

/// Bytes read from the device: a buffer of the store's read pool, or allocated for a large read.
#[derive(Debug)]
pub enum ReadBuf {
    /// From the read pool (returns to it when dropped).
    Pooled(PooledBuf),
    /// Allocated for this read.
    Owned(AlignedBuf),
}

impl std::ops::Deref for ReadBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            ReadBuf::Pooled(buf) => buf,
            ReadBuf::Owned(buf) => buf,
        }
    }
}

/// A value (or range of one) read and verified.
#[derive(Debug)]
pub struct ReadValue {
    buf: ReadBuf,
    start: usize,
    len: usize,
    /// crc32c of the whole stored value (for the client's end-to-end check).
    pub value_crc: u32,
    /// Length of the whole stored value.
    pub value_len: u32,
}

impl ReadValue {
    /// The bytes asked for.
    pub fn as_slice(&self) -> &[u8] {
        &self.buf[self.start..self.start + self.len]
    }

    /// The buffer read into, and where in it the bytes asked for are (start, length): to send
    /// them from that buffer without a copy.
    pub fn into_parts(self) -> (ReadBuf, usize, usize) {
        (self.buf, self.start, self.len)
    }
}

/// What STAT returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    /// Value length.
    pub value_len: u32,
    /// Sequence number of the record.
    pub seq: u64,
    /// crc32c of the whole value.
    pub value_crc: u32,
}

/// A live record found for a key, with its verified header.
#[derive(Debug, Clone, Copy)]
pub(super) struct Found {
    pub location: Location,
    pub header: RecordHeader,
}

/// What a lookup learned.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Lookup {
    pub found: Option<Found>,
    /// The key's tag slot belongs to another key.
    pub tag_taken_by_other: bool,
}

impl<D: Device + 'static> Store<D> {
    /// Reads `len` bytes at zone offset `offset` of `zone`, aligned outwards to blocks. Returns
    /// the buffer and where the asked bytes start in it.
    pub(super) async fn read_span(
        &self,
        zone: u32,
        offset: u64,
        len: usize,
    ) -> StoreResult<(ReadBuf, usize)> {
        let block = self.block_bytes as u64;
        let absolute = self.disk.geometry().zone_start(zone) + offset;
        let start = absolute / block * block;
        let end = (absolute + len as u64).next_multiple_of(block);
        let span = (end - start) as usize;
        let at = (absolute - start) as usize;
        // Small reads (a GET of a small value, a header) use the store's read pool: no
        // allocation and no page faults. An empty pool is not waited for (a request may hold one
        // buffer while it asks for another): the read then allocates.
        if span <= self.read_pool.config().buf_bytes {
            if let Some(mut buf) = self.read_pool.try_get() {
                buf.clear();
                let (res, buf) = self.disk.read_at(start, buf, span).await;
                res.map_err(|e| self.io(e))?;
                return Ok((ReadBuf::Pooled(buf), at));
            }
        }
        let buf = AlignedBuf::new(span, self.block_bytes.max(4096));
        let (res, buf) = self.disk.read_at(start, buf, span).await;
        res.map_err(|e| self.io(e))?;
        Ok((ReadBuf::Owned(buf), at))
    }

    /// Reads and verifies the header of the record at `location`.
    async fn read_header(&self, location: Location) -> StoreResult<(RecordHeader, ReadBuf, usize)> {
        let head = format::value_offset(location.value_len);
        let (buf, at) = self.read_span(location.zone, u64::from(location.offset), head).await?;
        let header = self.verify_header(location, &buf[at..])?;
        Ok((header, buf, at))
    }

    fn verify_header(&self, location: Location, bytes: &[u8]) -> StoreResult<RecordHeader> {
        let header =
            format::decode_header(bytes, self.superblock.value_bytes_max).map_err(|detail| {
                self.count_checksum_error();
                StoreError::Checksum {
                    disk: self.name.clone(),
                    zone: location.zone,
                    offset: u64::from(location.offset),
                    detail,
                }
            })?;
        if header.kind != RecordKind::Block || header.value_len != location.value_len {
            return Err(self.corrupt(
                location,
                format!(
                    "index points at a {:?} record of {} bytes, expected a block of {} bytes",
                    header.kind, header.value_len, location.value_len
                ),
            ));
        }
        Ok(header)
    }

    fn corrupt(&self, location: Location, detail: String) -> StoreError {
        StoreError::Corrupt {
            disk: self.name.clone(),
            zone: location.zone,
            offset: u64::from(location.offset),
            detail,
        }
    }

    /// Finds `key`'s live record, confirming the key on disk.
    pub(super) async fn lookup_verified(&self, key: &Key) -> StoreResult<Lookup> {
        let candidates = self.index.borrow().candidates(key);
        if let Some(location) = candidates.exact {
            let (header, ..) = self.read_header(location).await?;
            if header.key != *key {
                return Err(
                    self.corrupt(location, "overflow entry's record has another key".into())
                );
            }
            return Ok(Lookup {
                found: Some(Found { location, header }),
                tag_taken_by_other: candidates.by_tag.is_some(),
            });
        }
        let Some(location) = candidates.by_tag else { return Ok(Lookup::default()) };
        let (header, ..) = self.read_header(location).await?;
        if header.key == *key {
            Ok(Lookup { found: Some(Found { location, header }), tag_taken_by_other: false })
        } else {
            Ok(Lookup { found: None, tag_taken_by_other: true })
        }
    }

    /// The whole value of a found record, verified.
    pub(super) async fn read_value_of(&self, found: &Found) -> StoreResult<ReadValue> {
        self.read_range(found.location, &found.header.key, 0, u64::from(found.location.value_len))
            .await
    }

    /// GET: the value of `key`, or the `len` bytes at `offset` of it.
    pub async fn get(
        self: &Rc<Self>,
        key: &Key,
        range: Option<(u64, u64)>,
    ) -> StoreResult<ReadValue> {
        let candidates = self.index.borrow().candidates(key);
        let location = match (candidates.exact, candidates.by_tag) {
            (Some(location), _) | (None, Some(location)) => location,
            (None, None) => return Err(StoreError::NotFound),
        };
        let (offset, len) = range.unwrap_or((0, u64::from(location.value_len)));
        let end = offset.checked_add(len);
        if end.is_none_or(|end| end > u64::from(location.value_len)) {
            return Err(StoreError::BadRange { offset, len, value_len: location.value_len });
        }
        if offset == 0 && len == u64::from(location.value_len) {
            if let Some(value) = self.read_detached_value(location, key).await? {
                return Ok(value);
            }
        }
        match self.read_range(location, key, offset, len).await {
            // A tag slot that belongs to another key: this key is not stored.
            Err(StoreError::Corrupt { detail, .. })
                if candidates.exact.is_none() && detail.starts_with(OTHER_KEY) =>
            {
                Err(StoreError::NotFound)
            }
            other => other,
        }
    }

    /// The whole detached value at `location` read alone, if it is `key`'s value as the index
    /// recorded it (None: not detached, too large for one read, or not matching; the full
    /// path then reads the header too and says what is wrong).
    async fn read_detached_value(
        &self,
        location: Location,
        key: &Key,
    ) -> StoreResult<Option<ReadValue>> {
        let len = location.value_len as usize;
        let Some(value_offset) = location.detached_value_offset(self.block_bytes as u64) else {
            return Ok(None);
        };
        if len > SINGLE_READ_BYTES_MAX {
            return Ok(None);
        }
        let (buf, at) = self.read_span(location.zone, value_offset, len).await?;
        let value_crc = crc32c(&buf[at..at + len]);
        if format::value_check(key, value_crc) != location.check {
            return Ok(None);
        }
        self.stats.reads_value_only.set(self.stats.reads_value_only.get() + 1);
        Ok(Some(ReadValue { buf, start: at, len, value_crc, value_len: location.value_len }))
    }

    /// Reads `[offset, offset + len)` of the value at `location`, verifying the header, that it
    /// belongs to `key`, and every chunk the range touches.
    async fn read_range(
        &self,
        location: Location,
        key: &Key,
        offset: u64,
        len: u64,
    ) -> StoreResult<ReadValue> {
        let value_len = location.value_len;
        let head = format::value_offset(value_len);
        let first_chunk = (offset as usize) / CHUNK_BYTES;
        let end_chunk = ((offset + len) as usize)
            .div_ceil(CHUNK_BYTES)
            .max(first_chunk + usize::from(len == 0));
        let chunks_start = first_chunk * CHUNK_BYTES;
        let chunks_end = (end_chunk * CHUNK_BYTES).min(value_len as usize);
        let whole_span = head + chunks_end;
        let detached = location.detached_value_offset(self.block_bytes as u64);
        // Zone offset of the value's first byte.
        let value_start = detached.unwrap_or(u64::from(location.offset) + head as u64);
        let (header_buf, header_at, value_buf, value_at) =
            if detached.is_none() && (first_chunk == 0 || whole_span <= SINGLE_READ_BYTES_MAX) {
                let (buf, at) =
                    self.read_span(location.zone, u64::from(location.offset), whole_span).await?;
                let value_at = at + head;
                (None, at, buf, value_at)
            } else {
                let value_offset = value_start + chunks_start as u64;
                // Boxed: the two reads in flight would double the size of every GET's task.
                let (header, body) = Box::pin(futures_join(
                    self.read_span(location.zone, u64::from(location.offset), head),
                    self.read_span(location.zone, value_offset, chunks_end - chunks_start),
                ))
                .await;
                let (hbuf, hat) = header?;
                let (vbuf, vat) = body?;
                (Some(hbuf), hat, vbuf, vat - chunks_start)
            };
        let header_bytes: &[u8] = match &header_buf {
            Some(buf) => &buf[header_at..],
            None => &value_buf[header_at..],
        };
        let header = self.verify_header(location, header_bytes)?;
        if header.key != *key {
            return Err(self.corrupt(location, format!("{OTHER_KEY} at the indexed location")));
        }
        let header_value_start = u64::from(location.offset) + header.value_start() as u64;
        if header_value_start != value_start {
            return Err(self.corrupt(
                location,
                format!(
                    "the record's value is at zone offset {header_value_start}, the index says \
                     {value_start}"
                ),
            ));
        }
        for chunk in first_chunk..end_chunk {
            let from = chunk * CHUNK_BYTES;
            let to = ((chunk + 1) * CHUNK_BYTES).min(value_len as usize);
            let bytes = &value_buf[value_at + from..value_at + to];
            if let Err(detail) = format::verify_chunk(header_bytes, chunk, bytes) {
                self.count_checksum_error();
                tracing::error!(disk = %self.name, zone = location.zone, offset = location.offset, chunk, %detail, "checksum error");
                return Err(StoreError::Checksum {
                    disk: self.name.clone(),
                    zone: location.zone,
                    offset: value_start + from as u64,
                    detail,
                });
            }
        }
        Ok(ReadValue {
            start: value_at + offset as usize,
            len: len as usize,
            buf: value_buf,
            value_crc: header.value_crc,
            value_len,
        })
    }

    /// STAT: length, sequence number and stored crc32c of `key`'s value.
    pub async fn stat(&self, key: &Key) -> StoreResult<Stat> {
        let lookup = self.lookup_verified(key).await?;
        let found = lookup.found.ok_or(StoreError::NotFound)?;
        Ok(Stat {
            value_len: found.header.value_len,
            seq: found.header.seq,
            value_crc: found.header.value_crc,
        })
    }

    /// EXISTS.
    pub async fn exists(&self, key: &Key) -> StoreResult<bool> {
        match self.stat(key).await {
            Ok(_) => Ok(true),
            Err(StoreError::NotFound) => Ok(false),
            Err(err) => Err(err),
        }
    }

    /// LIST: up to `max` keys after `cursor` (None: from the start), in index-tag order, and the
    /// cursor for the next page (None when done). Reads each listed record's header (the index
    /// keeps tags, not keys), so a page costs one small read per key.
    pub async fn list(
        &self,
        cursor: Option<u64>,
        max: usize,
    ) -> StoreResult<(Vec<Key>, Option<u64>)> {
        let max = max.clamp(1, LIST_PAGE_MAX);
        let (page, more) = {
            let index = self.index.borrow();
            let mut page: Vec<(u64, Location, Option<Key>)> = index
                .tags_from(cursor)
                .take(max + 1)
                .map(|(tag, location)| (tag, location, None))
                .collect();
            let more = page.len() > max;
            page.truncate(max);
            let last = if more { page.last().map(|(t, ..)| *t) } else { None };
            for (key, location) in index.overflow() {
                let tag = index.tag(key);
                if cursor.is_none_or(|c| tag > c) && last.is_none_or(|l| tag <= l) {
                    page.push((tag, *location, Some(*key)));
                }
            }
            page.sort_by_key(|(tag, ..)| *tag);
            (page, more)
        };
        let mut keys = Vec::with_capacity(page.len());
        for (_, location, key) in &page {
            match key {
                Some(key) => keys.push(*key),
                None => {
                    let (header, ..) = self.read_header(*location).await?;
                    keys.push(header.key);
                }
            }
        }
        let next = if more { page.last().map(|(tag, ..)| *tag) } else { None };
        Ok((keys, next))
    }
}

/// Prefix of the corruption detail for a record whose key is not the one asked for.
const OTHER_KEY: &str = "record of another key";

/// Runs two futures concurrently on the current task.
async fn futures_join<A: std::future::Future, B: std::future::Future>(
    a: A,
    b: B,
) -> (A::Output, B::Output) {
    let mut a = std::pin::pin!(a);
    let mut b = std::pin::pin!(b);
    let mut out_a = None;
    let mut out_b = None;
    std::future::poll_fn(|cx| {
        if out_a.is_none() {
            if let std::task::Poll::Ready(v) = a.as_mut().poll(cx) {
                out_a = Some(v);
            }
        }
        if out_b.is_none() {
            if let std::task::Poll::Ready(v) = b.as_mut().poll(cx) {
                out_b = Some(v);
            }
        }
        if out_a.is_some() && out_b.is_some() {
            std::task::Poll::Ready((out_a.take().expect("set"), out_b.take().expect("set")))
        } else {
            std::task::Poll::Pending
        }
    })
    .await
}
