//! IORING_OP_FSYNC: fsync or fdatasync of a file or device.

use io_uring::{opcode, types};

use super::{Op, SharedFd};
use crate::error::{OpKind, Result};
use crate::reactor::fd;

/// Which sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncKind {
    /// fsync: data and all metadata.
    All,
    /// fdatasync: data and the metadata needed to read it back (a device cache flush on a
    /// block device).
    Data,
}

/// Flushes `file` to stable media.
pub async fn fsync(file: &SharedFd, kind: SyncKind) -> Result<()> {
    let mut op = opcode::Fsync::new(fd(file));
    if kind == SyncKind::Data {
        op = op.flags(types::FsyncFlags::DATASYNC);
    }
    // SAFETY: the entry refers only to `file`'s fd, which the op owns a handle to.
    let (completion, _file) = unsafe { Op::run(file.clone(), op.build()) }.await;
    completion?.into_result(OpKind::Fsync, 0)?;
    Ok(())
}
