//! IORING_OP_WRITE / WRITE_FIXED: positioned writes from an owned buffer, optionally with
//! RWF_DSYNC (FUA on devices that have it), and the loop that continues short writes.

use io_uring::opcode;

use super::read::check_range;
use super::{Op, SharedFd};
use crate::buf::IoBuf;
use crate::error::{Error, OpKind, Result};
use crate::reactor::fd;

/// Per-write flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WriteFlags {
    /// RWF_DSYNC: the write completes only when its data (and the metadata needed to read it)
    /// is on stable media. On a block device with FUA this is one FUA write.
    pub dsync: bool,
}

impl WriteFlags {
    /// A durable write.
    pub const DSYNC: WriteFlags = WriteFlags { dsync: true };

    fn rw_flags(self) -> i32 {
        if self.dsync { libc::RWF_DSYNC } else { 0 }
    }
}

/// Writes `buf[buf_offset..buf_offset + len]` at file offset `offset`. Returns the byte
/// count (possibly short) and the buffer. Uses the fixed opcode when the buffer is registered.
/// Never sets IOSQE_ASYNC: writes to a sequential zone must reach the device in order.
pub async fn write_at<B: IoBuf + Unpin>(
    file: &SharedFd,
    buf: B,
    buf_offset: usize,
    len: usize,
    offset: u64,
    flags: WriteFlags,
) -> (Result<usize>, B) {
    match submit_write(file, buf, buf_offset, len, offset, flags) {
        Ok(pending) => pending.await,
        Err((err, buf)) => (Err(err), buf),
    }
}

/// A write already on the ring; await it for the byte count and the buffer.
pub struct PendingWrite<B: 'static> {
    op: Op<(SharedFd, B)>,
    offset: u64,
}

impl<B> std::fmt::Debug for PendingWrite<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingWrite").field("offset", &self.offset).finish()
    }
}

impl<B: IoBuf + Unpin> std::future::Future for PendingWrite<B> {
    type Output = (Result<usize>, B);

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let offset = self.offset;
        std::pin::Pin::new(&mut self.op).poll(cx).map(|(completion, (_file, buf))| {
            (completion.into_result(OpKind::Write, offset).map(|n| n as usize), buf)
        })
    }
}

/// Pushes a write onto the ring now (not at first poll), so that several writes submitted
/// one after another reach the kernel in that order.
pub fn submit_write<B: IoBuf + Unpin>(
    file: &SharedFd,
    buf: B,
    buf_offset: usize,
    len: usize,
    offset: u64,
    flags: WriteFlags,
) -> Result<PendingWrite<B>, (Error, B)> {
    if let Err(err) = check_range(buf_offset, len, buf.bytes_init(), "the write buffer") {
        return Err((err, buf));
    }
    let len32 = u32::try_from(len).unwrap_or(u32::MAX);
    // SAFETY: buf_offset + len <= bytes_init, checked above.
    let ptr = unsafe { buf.stable_ptr().add(buf_offset) };
    let rw_flags = flags.rw_flags();
    let entry = match buf.fixed_index() {
        Some(index) => opcode::WriteFixed::new(fd(file), ptr, len32, index)
            .offset(offset)
            .rw_flags(rw_flags)
            .build(),
        None => opcode::Write::new(fd(file), ptr, len32).offset(offset).rw_flags(rw_flags).build(),
    };
    // SAFETY: the pointer is into `buf`'s heap memory and the fd is `file`; the op owns both.
    match unsafe { Op::submit((file.clone(), buf), entry) } {
        Ok(op) => Ok(PendingWrite { op, offset }),
        Err((err, (_file, buf))) => Err((err, buf)),
    }
}

/// Writes all of `buf[buf_offset..buf_offset + len]` at `offset`, continuing short writes.
/// A write that transfers 0 bytes is an error ([`Error::ZeroTransfer`]).
pub async fn write_all_at<B: IoBuf + Unpin>(
    file: &SharedFd,
    mut buf: B,
    buf_offset: usize,
    len: usize,
    offset: u64,
    flags: WriteFlags,
) -> (Result<()>, B) {
    let mut done = 0;
    while done < len {
        let (res, back) =
            write_at(file, buf, buf_offset + done, len - done, offset + done as u64, flags).await;
        buf = back;
        match res {
            Ok(0) => {
                let err = Error::ZeroTransfer {
                    op: OpKind::Write,
                    offset: offset + done as u64,
                    remaining_bytes: len - done,
                };
                return (Err(err), buf);
            }
            Ok(n) => done += n,
            Err(err) => return (Err(err), buf),
        }
    }
    (Ok(()), buf)
}
