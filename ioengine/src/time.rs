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

/// How often a core checks its coarse deadlines (the precision of [`timeout_coarse`]).
pub const COARSE_TICK: Duration = Duration::from_millis(20);

/// Runs `future` until it finishes or about `duration` passes (up to [`COARSE_TICK`] later),
/// like [`timeout`] but without a kernel timer per call: the deadline goes into a per-core
/// table that one task scans every tick while the table holds anything. For the deadlines a
/// server sets on every request and receive (tens of thousands a second), where one io_uring
/// timeout plus its cancellation per call would cost more ring operations than the I/O itself.
///
/// # Panics
/// When called outside a core (a programming error).
///
/// A future of its own rather than an `async fn`: an `async fn` keeps its argument and the
/// pinned copy it polls side by side, doubling the size of every task that wraps a large
/// future (a server's request task was 19 KiB, copied into place at every spawn).
pub fn timeout_coarse<F: Future>(duration: Duration, future: F) -> TimeoutCoarse<F> {
    TimeoutCoarse { future, duration, slot: None }
}

/// The future of [`timeout_coarse`].
pub struct TimeoutCoarse<F> {
    future: F,
    duration: Duration,
    /// The deadline, registered at the first poll that finds the future pending.
    slot: Option<coarse::Registration>,
}

impl<F> std::fmt::Debug for TimeoutCoarse<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TimeoutCoarse").field("duration", &self.duration).finish()
    }
}

impl<F: Future> Future for TimeoutCoarse<F> {
    type Output = Result<F::Output, Elapsed>;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Self::Output> {
        // SAFETY: `future` is pinned structurally: it is never moved out of `self` nor
        // exposed unpinned, and no Drop impl or Unpin impl of ours moves it. The other fields
        // are not pinned and are only used through `&mut`.
        let this = unsafe { self.get_unchecked_mut() };
        // SAFETY: as above: `this.future` stays where it is until `self` is dropped.
        let future = unsafe { std::pin::Pin::new_unchecked(&mut this.future) };
        if let Poll::Ready(output) = future.poll(cx) {
            return Poll::Ready(Ok(output));
        }
        let duration = this.duration;
        let registration = this.slot.get_or_insert_with(|| {
            coarse::Registration::new(&coarse::current(), Instant::now() + duration)
        });
        if registration.expired(cx.waker()) {
            return Poll::Ready(Err(Elapsed(duration)));
        }
        Poll::Pending
    }
}

use std::time::Instant;

mod coarse {
    //! The per-core deadline table of `timeout_coarse`: a slab of (deadline, waker) with O(1)
    //! insert and removal, scanned by one sweeper task per core every `COARSE_TICK` while it
    //! is not empty. The scan is skipped until the earliest deadline could have passed.

    use std::cell::{Cell, RefCell};
    use std::rc::Rc;
    use std::task::{Poll, Waker};
    use std::time::Instant;

    use super::COARSE_TICK;

    struct Entry {
        deadline: Instant,
        waker: Waker,
        fired: bool,
    }

    #[derive(Default)]
    pub(super) struct Deadlines {
        slots: RefCell<Vec<Option<Entry>>>,
        free: RefCell<Vec<usize>>,
        live: Cell<usize>,
        /// No live deadline is earlier than this (a lower bound; recomputed by each scan).
        earliest: Cell<Option<Instant>>,
        sweeper: RefCell<Option<Waker>>,
    }

    thread_local! {
        /// The table of the core running on this thread, by core id (a thread may run one core
        /// after another, as tests do; each has its own table and sweeper).
        static CURRENT: RefCell<Option<(u64, Rc<Deadlines>)>> = const { RefCell::new(None) };
    }

    /// This core's table, its sweeper started on first use.
    pub(super) fn current() -> Rc<Deadlines> {
        let core = crate::executor::current_core_id();
        CURRENT.with(|c| {
            let mut current = c.borrow_mut();
            match current.as_ref() {
                Some((id, deadlines)) if *id == core => deadlines.clone(),
                _ => {
                    let deadlines = Rc::new(Deadlines::default());
                    crate::spawn(sweep(Rc::downgrade(&deadlines))).detach();
                    *current = Some((core, deadlines.clone()));
                    deadlines
                }
            }
        })
    }

    /// One deadline in the table, removed when dropped.
    pub(super) struct Registration {
        table: Rc<Deadlines>,
        index: usize,
    }

    impl Registration {
        pub(super) fn new(table: &Rc<Deadlines>, deadline: Instant) -> Registration {
            let entry = Entry { deadline, waker: Waker::noop().clone(), fired: false };
            let index = match table.free.borrow_mut().pop() {
                Some(index) => {
                    table.slots.borrow_mut()[index] = Some(entry);
                    index
                }
                None => {
                    let mut slots = table.slots.borrow_mut();
                    slots.push(Some(entry));
                    slots.len() - 1
                }
            };
            table.live.set(table.live.get() + 1);
            let earliest = table.earliest.get().map_or(deadline, |e| e.min(deadline));
            table.earliest.set(Some(earliest));
            if let Some(waker) = table.sweeper.borrow_mut().take() {
                waker.wake();
            }
            Registration { table: table.clone(), index }
        }

        /// Whether the deadline passed; otherwise keeps `waker` to be woken when it does.
        pub(super) fn expired(&self, waker: &Waker) -> bool {
            let mut slots = self.table.slots.borrow_mut();
            let Some(entry) = slots[self.index].as_mut() else { return true };
            if entry.fired || Instant::now() >= entry.deadline {
                return true;
            }
            if !entry.waker.will_wake(waker) {
                entry.waker = waker.clone();
            }
            false
        }
    }

    impl Drop for Registration {
        fn drop(&mut self) {
            self.table.slots.borrow_mut()[self.index] = None;
            self.table.free.borrow_mut().push(self.index);
            self.table.live.set(self.table.live.get() - 1);
        }
    }

    /// Wakes expired deadlines every tick while any are registered; parks otherwise.
    async fn sweep(table: std::rc::Weak<Deadlines>) {
        loop {
            let idle = std::future::poll_fn(|cx| {
                let Some(table) = table.upgrade() else { return Poll::Ready(true) };
                if table.live.get() > 0 {
                    return Poll::Ready(false);
                }
                *table.sweeper.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            })
            .await;
            if idle {
                return; // the core is going away
            }
            let _ = super::sleep(COARSE_TICK).await;
            let Some(table) = table.upgrade() else { return };
            let now = Instant::now();
            if table.earliest.get().is_some_and(|earliest| now < earliest) {
                continue;
            }
            let mut earliest: Option<Instant> = None;
            for entry in table.slots.borrow_mut().iter_mut().flatten() {
                if entry.fired {
                    continue;
                }
                if now >= entry.deadline {
                    entry.fired = true;
                    entry.waker.wake_by_ref();
                } else {
                    earliest = Some(earliest.map_or(entry.deadline, |e| e.min(entry.deadline)));
                }
            }
            table.earliest.set(earliest);
            // Keep the slab from holding a past burst's memory for ever.
            let mut slots = table.slots.borrow_mut();
            if table.live.get() == 0 && slots.len() > 1024 {
                slots.clear();
                slots.shrink_to(1024);
                table.free.borrow_mut().clear();
            }
        }
    }
}
