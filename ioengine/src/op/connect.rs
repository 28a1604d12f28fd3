//! IORING_OP_CONNECT: connects a socket to an address.

use std::net::SocketAddr;

use io_uring::opcode;

use super::{Op, SharedFd};
use crate::error::{OpKind, Result};
use crate::reactor::fd;
use crate::sys::socket_addr;

/// Connects `socket` to `addr`.
pub async fn connect(socket: &SharedFd, addr: SocketAddr) -> Result<()> {
    let (storage, len) = socket_addr(addr);
    let storage = Box::new(storage);
    let entry = opcode::Connect::new(fd(socket), (&raw const *storage).cast(), len).build();
    // SAFETY: the address is boxed (stable address) and owned by the op with the fd.
    let (completion, _data) = unsafe { Op::run((socket.clone(), storage), entry) }.await;
    completion?.into_result(OpKind::Connect, 0)?;
    Ok(())
}
