//! IORING_OP_RECV: receives bytes from a socket into an owned buffer.

use io_uring::opcode;

use super::read::check_range;
use super::{Op, SharedFd};
use crate::buf::IoBufMut;
use crate::error::{OpKind, Result};
use crate::reactor::fd;

/// Receives up to `len` bytes into `buf[buf_offset..]`. Returns the count (0: the peer closed).
pub async fn recv<B: IoBufMut + Unpin>(
    socket: &SharedFd,
    mut buf: B,
    buf_offset: usize,
    len: usize,
) -> (Result<usize>, B) {
    if let Err(err) = check_range(buf_offset, len, buf.bytes_total(), "the receive buffer") {
        return (Err(err), buf);
    }
    let len32 = u32::try_from(len).unwrap_or(u32::MAX);
    // SAFETY: buf_offset + len <= bytes_total, checked above.
    let ptr = unsafe { buf.stable_mut_ptr().add(buf_offset) };
    let entry = opcode::Recv::new(fd(socket), ptr, len32).build();
    // SAFETY: the pointer is into `buf`'s heap memory; the op owns the buffer and the fd.
    let (completion, (_socket, mut buf)) = unsafe { Op::run((socket.clone(), buf), entry) }.await;
    match completion.and_then(|c| c.into_result(OpKind::Recv, 0)) {
        Ok(n) => {
            // SAFETY: the kernel wrote n bytes at buf_offset.
            unsafe { buf.set_init(buf_offset + n as usize) };
            (Ok(n as usize), buf)
        }
        Err(err) => (Err(err), buf),
    }
}
