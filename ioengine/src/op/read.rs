//! IORING_OP_READ / READ_FIXED: positioned reads into an owned buffer, and the loop that
//! continues short reads.

use io_uring::opcode;

use super::{Op, SharedFd};
use crate::buf::IoBufMut;
use crate::error::{Error, OpKind, Result};
use crate::reactor::fd;

/// Reads up to `len` bytes at file offset `offset` into `buf[buf_offset..buf_offset + len]`.
/// Returns the byte count (possibly short; 0 at end of file) and the buffer. Uses the fixed
/// opcode when the buffer is registered.
pub async fn read_at<B: IoBufMut + Unpin>(
    file: &SharedFd,
    mut buf: B,
    buf_offset: usize,
    len: usize,
    offset: u64,
) -> (Result<usize>, B) {
    if let Err(err) = check_range(buf_offset, len, buf.bytes_total(), "the read buffer") {
        return (Err(err), buf);
    }
    let len32 = u32::try_from(len).unwrap_or(u32::MAX);
    // SAFETY: buf_offset + len <= bytes_total, checked above.
    let ptr = unsafe { buf.stable_mut_ptr().add(buf_offset) };
    let entry = match buf.fixed_index() {
        Some(index) => opcode::ReadFixed::new(fd(file), ptr, len32, index).offset(offset).build(),
        None => opcode::Read::new(fd(file), ptr, len32).offset(offset).build(),
    };
    // SAFETY: the pointer is into `buf`'s heap memory and the fd is `file`; the op owns both.
    let (completion, (_file, mut buf)) = unsafe { Op::run((file.clone(), buf), entry) }.await;
    match completion.and_then(|c| c.into_result(OpKind::Read, offset)) {
        Ok(n) => {
            // SAFETY: the kernel filled n bytes starting at buf_offset.
            unsafe { buf.set_init(buf_offset + n as usize) };
            (Ok(n as usize), buf)
        }
        Err(err) => (Err(err), buf),
    }
}

/// Reads exactly `len` bytes at `offset` into `buf[buf_offset..]`, continuing short reads.
/// A read that returns 0 before `len` bytes is an error ([`Error::ZeroTransfer`]).
pub async fn read_exact_at<B: IoBufMut + Unpin>(
    file: &SharedFd,
    mut buf: B,
    buf_offset: usize,
    len: usize,
    offset: u64,
) -> (Result<()>, B) {
    let mut done = 0;
    while done < len {
        let (res, back) =
            read_at(file, buf, buf_offset + done, len - done, offset + done as u64).await;
        buf = back;
        match res {
            Ok(0) => {
                let err = Error::ZeroTransfer {
                    op: OpKind::Read,
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

/// Checks that `[start, start + len)` lies inside a buffer of `total` bytes.
pub(crate) fn check_range(
    start: usize,
    len: usize,
    total: usize,
    what: &'static str,
) -> Result<()> {
    match start.checked_add(len) {
        Some(end) if end <= total => Ok(()),
        _ => Err(Error::OutOfRange {
            what,
            offset: start as u64,
            end: start.saturating_add(len) as u64,
            limit: total as u64,
        }),
    }
}
