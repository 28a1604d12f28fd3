//! IORING_OP_TIMEOUT: the reactor's timer.

use std::time::Duration;

use io_uring::{opcode, types};

use super::Op;
use crate::error::{Error, OpKind, Result};

/// Completes after `duration`. Cancelled (its future dropped) it leaves nothing behind.
pub async fn sleep(duration: Duration) -> Result<()> {
    let timespec =
        Box::new(types::Timespec::new().sec(duration.as_secs()).nsec(duration.subsec_nanos()));
    let entry = opcode::Timeout::new(&raw const *timespec).build();
    // SAFETY: the timespec is boxed (stable address) and owned by the op.
    let (completion, _timespec) = unsafe { Op::run(timespec, entry) }.await;
    let completion = completion?;
    match completion.result {
        // The timer expired: the normal outcome.
        r if r == -libc::ETIME => Ok(()),
        r if r >= 0 => Ok(()),
        r => Err(Error::from_errno(OpKind::Timeout, 0, -r)),
    }
}
