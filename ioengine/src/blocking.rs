//! Runs a blocking call (a zone reset ioctl, fallocate, a zone report) on a short-lived
//! helper thread so the core's ring keeps turning meanwhile; the result comes back through a
//! one-shot slot whose waker re-schedules the waiting task on its core.
//!
//! These calls are rare (zone management, not the data path), so a thread per call costs
//! little next to an SMR zone reset (tens of milliseconds) and needs no pool to size.

use std::future::poll_fn;
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};

struct Slot<T> {
    value: Option<std::thread::Result<T>>,
    waker: Option<Waker>,
}

/// Runs `f` on a helper thread and waits for it without blocking the core. A panic in `f`
/// is resumed in the caller.
pub async fn unblock<T, F>(f: F) -> T
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let slot = Arc::new(Mutex::new(Slot { value: None, waker: None }));
    let theirs = slot.clone();
    let spawned = std::thread::Builder::new().name("shingle-blocking".into()).spawn(move || {
        let value = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
        let waker = {
            let mut slot = theirs.lock().unwrap_or_else(|p| p.into_inner());
            slot.value = Some(value);
            slot.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    });
    if let Err(err) = spawned {
        panic!("cannot start a helper thread for a blocking call: {err}");
    }
    let result = poll_fn(|cx| {
        let mut slot = slot.lock().unwrap_or_else(|p| p.into_inner());
        match slot.value.take() {
            Some(value) => Poll::Ready(value),
            None => {
                slot.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    })
    .await;
    match result {
        Ok(value) => value,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}
