//! Timers on the reactor: `sleep` and a deadline for any future.

use std::future::Future;
use std::pin::pin;
use std::task::Poll;
use std::time::Duration;

pub use crate::op::sleep;

/// The deadline passed before the future finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("deadline of {0:?} passed")]
pub struct Elapsed(pub Duration);

/// Runs `future` until it finishes or `duration` passes; in the second case the future is
/// dropped (its in-flight ops are cancelled, their buffers kept until the kernel is done).
pub async fn timeout<F: Future>(duration: Duration, future: F) -> Result<F::Output, Elapsed> {
    let mut future = pin!(future);
    let mut timer = pin!(sleep(duration));
    std::future::poll_fn(|cx| {
        if let Poll::Ready(output) = future.as_mut().poll(cx) {
            return Poll::Ready(Ok(output));
        }
        match timer.as_mut().poll(cx) {
            // A timer that failed to arm counts as expired: never wait forever.
            Poll::Ready(_) => Poll::Ready(Err(Elapsed(duration))),
            Poll::Pending => Poll::Pending,
        }
    })
    .await
}
