//! Small synchronisation pieces the server needs and the executor does not provide: a flag any
//! thread can raise and any core can await ([`Event`]), a one-shot reply channel between cores
//! ([`oneshot`]), a per-core byte budget that makes readers wait instead of allocating
//! ([`Budget`]), and [`race`], which polls two futures and returns the first to finish.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::pin::pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};

use ::metrics::Gauge;

/// A flag raised once, by any thread, that tasks on any core can wait for.
#[derive(Debug, Default)]
pub struct Event {
    raised: AtomicBool,
    waiters: Mutex<Vec<Waker>>,
}

impl Event {
    /// Raises the flag and wakes every waiter.
    pub fn raise(&self) {
        self.raised.store(true, Ordering::SeqCst);
        let waiters = std::mem::take(&mut *self.waiters.lock().unwrap_or_else(|p| p.into_inner()));
        for waker in waiters {
            waker.wake();
        }
    }

    /// Whether the flag is raised.
    pub fn is_raised(&self) -> bool {
        self.raised.load(Ordering::SeqCst)
    }

    /// Waits until the flag is raised.
    pub async fn wait(&self) {
        std::future::poll_fn(|cx| {
            let mut waiters = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
            if self.raised.load(Ordering::SeqCst) {
                return Poll::Ready(());
            }
            // Keep one waker per task: a task polled many times re-registers the same waker.
            if !waiters.iter().any(|w| w.will_wake(cx.waker())) {
                waiters.push(cx.waker().clone());
            }
            Poll::Pending
        })
        .await;
    }
}

/// A flag for the tasks of one core, raised once. Unlike [`Event`], a waiter that goes away
/// takes its waker with it, so the many short waits of a busy core (one per receive) leave
/// nothing behind.
#[derive(Debug, Default)]
pub struct LocalEvent {
    raised: Cell<bool>,
    waiters: RefCell<Vec<Option<Waker>>>,
    free: RefCell<Vec<usize>>,
}

impl LocalEvent {
    /// Raises the flag and wakes every waiter.
    pub fn raise(&self) {
        self.raised.set(true);
        let waiters = std::mem::take(&mut *self.waiters.borrow_mut());
        self.free.borrow_mut().clear();
        for waker in waiters.into_iter().flatten() {
            waker.wake();
        }
    }

    /// Whether the flag is raised.
    pub fn is_raised(&self) -> bool {
        self.raised.get()
    }

    /// Waits until the flag is raised.
    pub fn wait(&self) -> LocalWait<'_> {
        LocalWait { event: self, slot: None }
    }
}

/// The future of [`LocalEvent::wait`].
#[derive(Debug)]
pub struct LocalWait<'a> {
    event: &'a LocalEvent,
    slot: Option<usize>,
}

impl Future for LocalWait<'_> {
    type Output = ();

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<()> {
        let event = self.event;
        if event.raised.get() {
            return Poll::Ready(());
        }
        let mut waiters = event.waiters.borrow_mut();
        match self.slot {
            Some(slot) if slot < waiters.len() => waiters[slot] = Some(cx.waker().clone()),
            _ => {
                let slot = match event.free.borrow_mut().pop() {
                    Some(slot) => {
                        waiters[slot] = Some(cx.waker().clone());
                        slot
                    }
                    None => {
                        waiters.push(Some(cx.waker().clone()));
                        waiters.len() - 1
                    }
                };
                drop(waiters);
                self.slot = Some(slot);
            }
        }
        Poll::Pending
    }
}

impl Drop for LocalWait<'_> {
    fn drop(&mut self) {
        let Some(slot) = self.slot else { return };
        if self.event.raised.get() {
            return;
        }
        if let Some(waker) = self.event.waiters.borrow_mut().get_mut(slot) {
            *waker = None;
            self.event.free.borrow_mut().push(slot);
        }
    }
}

/// Which of two raced futures finished first.
#[derive(Debug)]
pub enum Either<A, B> {
    /// The first.
    Left(A),
    /// The second.
    Right(B),
}

/// Polls `a` and `b` until one finishes; the other is dropped (an I/O operation it had in
/// flight is cancelled by the reactor, which keeps its buffer until the kernel lets go).
pub async fn race<A: Future, B: Future>(a: A, b: B) -> Either<A::Output, B::Output> {
    let mut a = pin!(a);
    let mut b = pin!(b);
    std::future::poll_fn(|cx| {
        if let Poll::Ready(out) = a.as_mut().poll(cx) {
            return Poll::Ready(Either::Left(out));
        }
        if let Poll::Ready(out) = b.as_mut().poll(cx) {
            return Poll::Ready(Either::Right(out));
        }
        Poll::Pending
    })
    .await
}

struct OneshotState<T> {
    value: Option<T>,
    waker: Option<Waker>,
    sender_gone: bool,
    receiver_gone: bool,
}

/// Sends one value to a [`Receiver`], possibly on another core.
pub struct Sender<T> {
    state: Arc<Mutex<OneshotState<T>>>,
}

/// Receives the value of a [`Sender`]; `None` when the sender was dropped without sending
/// (the other core stopped or dropped the request).
pub struct Receiver<T> {
    state: Arc<Mutex<OneshotState<T>>>,
}

impl<T> std::fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("oneshot::Sender")
    }
}

impl<T> std::fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("oneshot::Receiver")
    }
}

/// A one-shot channel.
pub fn oneshot<T>() -> (Sender<T>, Receiver<T>) {
    let state = Arc::new(Mutex::new(OneshotState {
        value: None,
        waker: None,
        sender_gone: false,
        receiver_gone: false,
    }));
    (Sender { state: state.clone() }, Receiver { state })
}

impl<T> Sender<T> {
    /// Whether the receiver is gone (its waiter gave up, e.g. at the request timeout): a value
    /// sent now reaches nobody.
    pub fn is_abandoned(&self) -> bool {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).receiver_gone
    }

    /// Delivers `value` and wakes the receiver.
    pub fn send(self, value: T) {
        let waker = {
            let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            state.value = Some(value);
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let waker = {
            let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            state.sender_gone = true;
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).receiver_gone = true;
    }
}

impl<T> Receiver<T> {
    /// Waits for the value.
    pub async fn recv(self) -> Option<T> {
        std::future::poll_fn(|cx| {
            let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(value) = state.value.take() {
                return Poll::Ready(Some(value));
            }
            if state.sender_gone {
                return Poll::Ready(None);
            }
            state.waker = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }
}

/// Bytes of request and reply buffers a core may hold at once (`server.max_in_flight_bytes`).
/// A connection that needs more waits (and stops being read) until others give some back, so
/// memory stays bounded however many clients send large values at once.
#[derive(Debug)]
pub struct Budget {
    total: u64,
    used: Cell<u64>,
    waiters: RefCell<VecDeque<Waker>>,
    /// Shows `used` (a metric).
    gauge: Gauge,
}

/// Bytes taken from a [`Budget`], given back when dropped.
#[derive(Debug)]
pub struct BudgetGuard {
    budget: Rc<Budget>,
    bytes: u64,
}

impl Budget {
    /// A budget of `total` bytes.
    pub fn new(total: u64) -> Rc<Budget> {
        Budget::with_gauge(total, Gauge::noop())
    }

    /// A budget of `total` bytes whose use `gauge` shows.
    pub fn with_gauge(total: u64, gauge: Gauge) -> Rc<Budget> {
        let waiters = RefCell::new(VecDeque::new());
        Rc::new(Budget { total, used: Cell::new(0), waiters, gauge })
    }

    fn set_used(&self, used: u64) {
        self.used.set(used);
        self.gauge.set(used as f64);
    }

    /// Bytes in use.
    pub fn used(&self) -> u64 {
        self.used.get()
    }

    /// Takes `bytes`, waiting until they are free. A request larger than the whole budget
    /// waits until nothing else is in use, then proceeds alone.
    pub async fn acquire(self: &Rc<Self>, bytes: u64) -> BudgetGuard {
        std::future::poll_fn(|cx| {
            let used = self.used.get();
            if used == 0 || used + bytes <= self.total {
                self.set_used(used + bytes);
                return Poll::Ready(());
            }
            self.waiters.borrow_mut().push_back(cx.waker().clone());
            Poll::Pending
        })
        .await;
        BudgetGuard { budget: self.clone(), bytes }
    }

    /// Takes `bytes` now even if that goes over the budget (for bytes that already exist, such
    /// as a reply from another core); later [`Budget::acquire`] calls wait for them.
    pub fn force(self: &Rc<Self>, bytes: u64) -> BudgetGuard {
        self.set_used(self.used.get() + bytes);
        BudgetGuard { budget: self.clone(), bytes }
    }
}

impl Drop for BudgetGuard {
    fn drop(&mut self) {
        let budget = &self.budget;
        budget.set_used(budget.used.get().saturating_sub(self.bytes));
        // Wake every waiter: each re-checks, and the ones that fit go on.
        let waiters = std::mem::take(&mut *budget.waiters.borrow_mut());
        for waker in waiters {
            waker.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;
    use ioengine::Core;

    #[test]
    fn budget_makes_the_second_taker_wait_until_the_first_gives_back() {
        let core = Core::new(8).unwrap();
        core.block_on(async {
            let budget = Budget::new(100);
            let first = budget.acquire(80).await;
            let order = Rc::new(RefCell::new(Vec::new()));
            let (b, o) = (budget.clone(), order.clone());
            let waiter = ioengine::spawn(async move {
                let _guard = b.acquire(50).await;
                o.borrow_mut().push("second");
            });
            ioengine::yield_now().await;
            order.borrow_mut().push("first done");
            drop(first);
            waiter.await;
            assert_eq!(*order.borrow(), ["first done", "second"]);
            assert_eq!(budget.used(), 0);
        });
    }

    #[test]
    fn an_oversized_request_proceeds_alone() {
        let core = Core::new(8).unwrap();
        core.block_on(async {
            let budget = Budget::new(10);
            let big = budget.acquire(1000).await;
            assert_eq!(budget.used(), 1000);
            drop(big);
            let forced = budget.force(20);
            assert_eq!(budget.used(), 20);
            drop(forced);
            assert_eq!(budget.used(), 0);
        });
    }

    #[test]
    fn oneshot_crosses_threads_and_reports_a_dropped_sender() {
        let core = Core::new(8).unwrap();
        let (tx, rx) = oneshot::<u32>();
        let thread = std::thread::spawn(move || tx.send(7));
        assert_eq!(core.block_on(rx.recv()), Some(7));
        thread.join().unwrap();
        let (tx, rx) = oneshot::<u32>();
        drop(tx);
        assert_eq!(core.block_on(rx.recv()), None);
        let (tx, rx) = oneshot::<u32>();
        assert!(!tx.is_abandoned());
        drop(rx);
        assert!(tx.is_abandoned());
    }

    #[test]
    fn local_event_waiters_leave_nothing_behind_and_all_wake_on_raise() {
        let core = Core::new(8).unwrap();
        core.block_on(async {
            let event = Rc::new(LocalEvent::default());
            for _ in 0..1000 {
                let wait = event.wait();
                let quick = race(wait, std::future::ready(()));
                assert!(matches!(quick.await, Either::Right(())));
            }
            assert!(event.waiters.borrow().iter().all(Option::is_none));
            assert!(event.waiters.borrow().len() <= 1, "slots are reused");
            let (a, b) = (event.clone(), event.clone());
            let first = ioengine::spawn(async move { a.wait().await });
            let second = ioengine::spawn(async move { b.wait().await });
            ioengine::yield_now().await;
            event.raise();
            first.await;
            second.await;
            assert!(event.is_raised());
        });
    }

    #[test]
    fn event_wakes_a_waiter_on_another_thread() {
        let core = Core::new(8).unwrap();
        let event = Arc::new(Event::default());
        let raiser = event.clone();
        let thread = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(20));
            raiser.raise();
        });
        let waited = event.clone();
        core.block_on(async move { waited.wait().await });
        assert!(event.is_raised());
        thread.join().unwrap();
    }
}
