//! io_uring operations as futures, one file per operation.
//!
//! [`Op`] is the leaf future every operation is built on. It owns the operation's resources
//! (buffer, fd, timespec, socket address) while the kernel may use them. If the future is
//! dropped before the completion arrives, the resources move into the reactor's slot and are
//! freed only when the completion is reaped (see `Reactor::abandon`): cancellation never frees
//! memory the kernel can still write.

mod accept;
mod connect;
mod fsync;
mod read;
mod recv;
mod send;
mod timeout;
mod write;

use std::future::Future;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use io_uring::squeue;

pub use accept::accept;
pub use connect::connect;
pub use fsync::{SyncKind, fsync};
pub use read::{read_at, read_exact_at};
pub use recv::recv;
pub use send::{send, send_all};
pub use timeout::sleep;
pub use write::{PendingWrite, WriteFlags, submit_write, write_all_at, write_at};

use crate::error::{Error, Result};
use crate::executor;
use crate::reactor::{Completion, Reactor};

/// An fd shared by its owner and every in-flight op using it, so it stays open until the
/// last op that names it has completed.
#[derive(Debug, Clone)]
pub struct SharedFd(Rc<OwnedFd>);

impl SharedFd {
    /// Takes ownership of `fd`.
    pub fn new(fd: OwnedFd) -> SharedFd {
        SharedFd(Rc::new(fd))
    }
}

impl AsRawFd for SharedFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

/// A submitted io_uring operation and the resources it owns.
pub(crate) struct Op<T: 'static> {
    reactor: Rc<Reactor>,
    index: usize,
    data: Option<T>,
}

impl<T: 'static> Op<T> {
    /// Submits `entry` on this core's ring at the current task's priority.
    ///
    /// # Safety
    /// Every pointer and fd in `entry` must refer to memory or fds owned by `data` (or to
    /// `'static` memory), so that keeping `data` alive keeps them valid.
    /// On failure the resources come back with the error.
    pub(crate) unsafe fn submit(data: T, entry: squeue::Entry) -> Result<Op<T>, (Error, T)> {
        let reactor = match executor::current_reactor() {
            Ok(reactor) => reactor,
            Err(err) => return Err((err, data)),
        };
        let priority = executor::current_priority();
        // SAFETY: `data` owns the entry's resources (caller's contract) and the Op keeps
        // `data` until completion, or hands it to the reactor's slot when dropped early.
        match unsafe { reactor.submit(entry, priority) } {
            Ok(index) => Ok(Op { reactor, index, data: Some(data) }),
            Err(err) => Err((err, data)),
        }
    }

    /// Submits and waits: the common shape of every op file.
    ///
    /// # Safety
    /// As [`Op::submit`].
    pub(crate) async unsafe fn run(data: T, entry: squeue::Entry) -> (Result<Completion>, T)
    where
        T: Unpin,
    {
        // SAFETY: forwarded from the caller.
        match unsafe { Op::submit(data, entry) } {
            Ok(op) => {
                let (completion, data) = op.await;
                (Ok(completion), data)
            }
            Err((err, data)) => (Err(err), data),
        }
    }
}

impl<T: Unpin + 'static> Future for Op<T> {
    type Output = (Completion, T);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        match this.reactor.poll_slot(this.index, cx) {
            Poll::Ready(completion) => {
                let data = this.data.take().expect("op polled after completion");
                Poll::Ready((completion, data))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: 'static> Drop for Op<T> {
    fn drop(&mut self) {
        if let Some(data) = self.data.take() {
            self.reactor.abandon(self.index, Box::new(data));
        }
    }
}
