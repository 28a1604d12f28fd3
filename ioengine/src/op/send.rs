//! IORING_OP_SEND: sends bytes from an owned buffer, and the loop that continues short sends.

use io_uring::opcode;

use super::read::check_range;
use super::{Op, SharedFd};
use crate::buf::IoBuf;
use crate::error::{Error, OpKind, Result};
use crate::reactor::fd;

/// Sends up to `len` bytes of `buf[buf_offset..]`. Returns the count sent. MSG_NOSIGNAL: a
/// closed peer is an error, not a SIGPIPE.
pub async fn send<B: IoBuf + Unpin>(
    socket: &SharedFd,
    buf: B,
    buf_offset: usize,
    len: usize,
) -> (Result<usize>, B) {
    if let Err(err) = check_range(buf_offset, len, buf.bytes_init(), "the send buffer") {
        return (Err(err), buf);
    }
    let len32 = u32::try_from(len).unwrap_or(u32::MAX);
    // SAFETY: buf_offset + len <= bytes_init, checked above.
    let ptr = unsafe { buf.stable_ptr().add(buf_offset) };
    let entry = opcode::Send::new(fd(socket), ptr, len32).flags(libc::MSG_NOSIGNAL).build();
    // SAFETY: the pointer is into `buf`'s heap memory; the op owns the buffer and the fd.
    let (completion, (_socket, buf)) = unsafe { Op::run((socket.clone(), buf), entry) }.await;
    match completion.and_then(|c| c.into_result(OpKind::Send, 0)) {
        Ok(n) => (Ok(n as usize), buf),
        Err(err) => (Err(err), buf),
    }
}

/// Sends all of `buf[buf_offset..buf_offset + len]`, continuing short sends.
pub async fn send_all<B: IoBuf + Unpin>(
    socket: &SharedFd,
    mut buf: B,
    buf_offset: usize,
    len: usize,
) -> (Result<()>, B) {
    let mut done = 0;
    while done < len {
        let (res, back) = send(socket, buf, buf_offset + done, len - done).await;
        buf = back;
        match res {
            Ok(0) => {
                let err = Error::ZeroTransfer {
                    op: OpKind::Send,
                    offset: done as u64,
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
