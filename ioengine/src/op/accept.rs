//! IORING_OP_ACCEPT: accepts a connection on a listening socket.

use std::os::fd::{FromRawFd, OwnedFd};

use io_uring::opcode;

use super::{Op, SharedFd};
use crate::error::{OpKind, Result};
use crate::reactor::fd;

/// Accepts one connection; the new socket is close-on-exec.
pub async fn accept(listener: &SharedFd) -> Result<OwnedFd> {
    let entry = opcode::Accept::new(fd(listener), std::ptr::null_mut(), std::ptr::null_mut())
        .flags(libc::SOCK_CLOEXEC)
        .build();
    // SAFETY: no address buffer is passed; the op owns a handle to the listener's fd.
    let (completion, _listener) = unsafe { Op::run(listener.clone(), entry) }.await;
    let raw = completion?.into_result(OpKind::Accept, 0)?;
    // SAFETY: a successful accept returns a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(raw as i32) })
}
