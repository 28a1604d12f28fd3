//! The single-threaded executor of one core: tasks (allocated and woken by `async-task`), two
//! priority classes, the run loop that alternates between running tasks and turning the
//! ring, and the cross-thread queues that let other threads hand work to this core.
//!
//! Scheduling policy (also in docs/ARCHITECTURE.md):
//! - Each loop iteration runs up to [`FOREGROUND_BATCH`] foreground tasks, then background
//!   tasks: up to [`BACKGROUND_BATCH_BUSY`] if foreground work was run or is waiting, up to
//!   [`FOREGROUND_BATCH`] if the core is otherwise idle. Background work therefore always
//!   progresses but takes a bounded share while clients are served.
//! - Operations inherit the priority of the task that submits them. Background operations may
//!   hold at most 1/`BACKGROUND_SHARE_DIVISOR` of the ring in flight; the rest wait in order in
//!   the reactor, so foreground I/O always finds room in the submission queue and the device.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::os::fd::{AsRawFd, OwnedFd};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};

use async_task::{Builder, Runnable, Task};
use crossbeam_channel::{Receiver, Sender, TrySendError};
use crossbeam_queue::SegQueue;

use crate::error::{Error, Result};
use crate::reactor::{Priority, Reactor};

/// Foreground tasks run per loop iteration before the ring is turned again.
pub const FOREGROUND_BATCH: usize = 64;
/// Background tasks run per loop iteration while foreground work is active.
pub const BACKGROUND_BATCH_BUSY: usize = 4;
/// Messages one core's inbox holds; a full inbox makes `CoreHandle::send` fail with `Busy`.
pub const INBOX_MESSAGES_MAX: usize = 4096;

const _: () = assert!(BACKGROUND_BATCH_BUSY >= 1 && BACKGROUND_BATCH_BUSY < FOREGROUND_BATCH);

/// A spawned task's handle: await it for the output; dropping it cancels the task unless
/// `detach` was called.
pub type JoinHandle<T> = Task<T, Priority>;

/// A closure another thread asks this core to run.
pub type Message = Box<dyn FnOnce() + Send + 'static>;

static NEXT_EXECUTOR_ID: AtomicU64 = AtomicU64::new(1);

thread_local! {
    static CURRENT: RefCell<Option<Rc<Local>>> = const { RefCell::new(None) };
    static CURRENT_ID: Cell<u64> = const { Cell::new(0) };
    static CURRENT_PRIORITY: Cell<Priority> = const { Cell::new(Priority::Foreground) };
}

/// State other threads may touch: the remote run queue, the inbox, and the wake-up eventfd.
struct Shared {
    id: u64,
    remote: SegQueue<Runnable<Priority>>,
    wake_fd: OwnedFd,
    sleeping: AtomicBool,
    stopped: AtomicBool,
}

impl Shared {
    /// Wakes the core if it sleeps (or is about to) in the ring.
    fn notify(&self) {
        if self.sleeping.swap(false, Ordering::SeqCst) {
            if let Err(err) = crate::sys::eventfd_signal(&self.wake_fd) {
                // An eventfd write fails only on a closed fd: the core is gone.
                tracing::error!(error = %err, "failed to wake a core through its eventfd");
            }
        }
    }
}

/// State only the owning thread touches.
struct Local {
    reactor: Rc<Reactor>,
    foreground: RefCell<VecDeque<Runnable<Priority>>>,
    background: RefCell<VecDeque<Runnable<Priority>>>,
    shared: Arc<Shared>,
    inbox: Receiver<Message>,
    tasks_run: Cell<u64>,
}

impl Local {
    fn push(&self, runnable: Runnable<Priority>) {
        match runnable.metadata() {
            Priority::Foreground => self.foreground.borrow_mut().push_back(runnable),
            Priority::Background => self.background.borrow_mut().push_back(runnable),
        }
    }

    /// Moves work other threads queued for this core into the local queues.
    fn drain_remote(&self) {
        while let Some(runnable) = self.shared.remote.pop() {
            self.push(runnable);
        }
        while let Ok(message) = self.inbox.try_recv() {
            message();
        }
    }

    fn has_local_work(&self) -> bool {
        !self.foreground.borrow().is_empty() || !self.background.borrow().is_empty()
    }

    fn has_remote_work(&self) -> bool {
        !self.shared.remote.is_empty() || !self.inbox.is_empty()
    }

    /// Runs one batch of tasks according to the scheduling policy. Returns tasks run.
    fn run_batch(&self) -> usize {
        let foreground = self.run_from(&self.foreground, FOREGROUND_BATCH);
        let busy = foreground > 0 || !self.foreground.borrow().is_empty();
        let budget = if busy { BACKGROUND_BATCH_BUSY } else { FOREGROUND_BATCH };
        let background = self.run_from(&self.background, budget);
        foreground + background
    }

    fn run_from(&self, queue: &RefCell<VecDeque<Runnable<Priority>>>, max: usize) -> usize {
        let mut ran = 0;
        while ran < max {
            let Some(runnable) = queue.borrow_mut().pop_front() else { break };
            let previous = CURRENT_PRIORITY.replace(*runnable.metadata());
            runnable.run();
            CURRENT_PRIORITY.set(previous);
            ran += 1;
        }
        self.tasks_run.set(self.tasks_run.get() + ran as u64);
        ran
    }

    /// Drops every queued task (their futures and ops are dropped).
    fn drop_queued(&self) -> usize {
        let mut dropped = 0;
        loop {
            self.drain_remote_runnables();
            let next = self.foreground.borrow_mut().pop_front();
            let next = next.or_else(|| self.background.borrow_mut().pop_front());
            match next {
                Some(runnable) => {
                    drop(runnable);
                    dropped += 1;
                }
                None => return dropped,
            }
        }
    }

    fn drain_remote_runnables(&self) {
        while let Some(runnable) = self.shared.remote.pop() {
            self.push(runnable);
        }
    }
}

/// One core: a ring, an executor, and the queues other threads reach it through. Lives on
/// the thread that created it (it is neither Send nor Sync).
pub struct Core {
    local: Rc<Local>,
    inbox_tx: Sender<Message>,
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core").field("id", &self.local.shared.id).finish()
    }
}

impl Core {
    /// Creates a core on the current thread with a ring of `ring_entries`.
    pub fn new(ring_entries: u32) -> Result<Core> {
        let wake_fd =
            crate::sys::eventfd().map_err(|e| Error::from_io(crate::OpKind::EventFd, 0, &e))?;
        let reactor = Rc::new(Reactor::new(ring_entries, Some(wake_fd.as_raw_fd()))?);
        let shared = Arc::new(Shared {
            id: NEXT_EXECUTOR_ID.fetch_add(1, Ordering::Relaxed),
            remote: SegQueue::new(),
            wake_fd,
            sleeping: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
        });
        let (inbox_tx, inbox) = crossbeam_channel::bounded(INBOX_MESSAGES_MAX);
        let local = Rc::new(Local {
            reactor,
            foreground: RefCell::new(VecDeque::new()),
            background: RefCell::new(VecDeque::new()),
            shared,
            inbox,
            tasks_run: Cell::new(0),
        });
        Ok(Core { local, inbox_tx })
    }

    /// This core's reactor.
    pub fn reactor(&self) -> &Rc<Reactor> {
        &self.local.reactor
    }

    /// A handle other threads use to send work here.
    pub fn handle(&self) -> CoreHandle {
        CoreHandle { shared: self.local.shared.clone(), inbox: self.inbox_tx.clone() }
    }

    /// Tasks run since the core started (a progress counter for watchdogs).
    pub fn tasks_run(&self) -> u64 {
        self.local.tasks_run.get()
    }

    /// Runs `future` as a foreground task on this core, with every task it spawns, until it
    /// completes; returns its output. Tasks still pending afterwards stay queued for the next
    /// `block_on` or are dropped with the core.
    pub fn block_on<F>(&self, future: F) -> F::Output
    where
        F: Future + 'static,
        F::Output: 'static,
    {
        let _enter = Enter::new(&self.local);
        let main = spawn(future);
        loop {
            if main.is_finished() {
                break;
            }
            self.local.drain_remote();
            self.local.run_batch();
            if main.is_finished() {
                break;
            }
            let idle = !self.local.has_local_work();
            let block = idle && self.prepare_sleep();
            if let Err(err) = self.local.reactor.turn(block) {
                panic!("the io_uring of this core failed: {err}");
            }
            self.local.shared.sleeping.store(false, Ordering::SeqCst);
        }
        let mut main = std::pin::pin!(main);
        match main.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(output) => output,
            Poll::Pending => unreachable!("a finished task is ready"),
        }
    }

    /// Announces that the core is going to sleep; false if work arrived meanwhile.
    fn prepare_sleep(&self) -> bool {
        self.local.shared.sleeping.store(true, Ordering::SeqCst);
        if self.local.has_remote_work() {
            self.local.shared.sleeping.store(false, Ordering::SeqCst);
            return false;
        }
        true
    }
}

impl Drop for Core {
    fn drop(&mut self) {
        self.local.shared.stopped.store(true, Ordering::SeqCst);
        let _enter = Enter::new(&self.local);
        // Dropping queued tasks drops their ops; the reactor then waits for the kernel to
        // return every op still in flight, which wakes (and here drops) their tasks.
        self.local.drop_queued();
        self.local.reactor.shutdown();
        self.local.drop_queued();
    }
}

/// Marks the current thread as running `local` (for spawn and local wake-ups).
struct Enter {
    previous: Option<Rc<Local>>,
    previous_id: u64,
}

impl Enter {
    fn new(local: &Rc<Local>) -> Enter {
        let previous = CURRENT.with(|c| c.replace(Some(local.clone())));
        let previous_id = CURRENT_ID.replace(local.shared.id);
        Enter { previous, previous_id }
    }
}

impl Drop for Enter {
    fn drop(&mut self) {
        CURRENT.with(|c| *c.borrow_mut() = self.previous.take());
        CURRENT_ID.set(self.previous_id);
    }
}

/// A handle to a core that any thread may hold.
#[derive(Clone)]
pub struct CoreHandle {
    shared: Arc<Shared>,
    inbox: Sender<Message>,
}

impl std::fmt::Debug for CoreHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CoreHandle").field("id", &self.shared.id).finish()
    }
}

/// Why a message could not be delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The core's inbox is full: back off (answer "busy").
    #[error("the target core's inbox is full")]
    Busy,
    /// The core has stopped.
    #[error("the target core has stopped")]
    Stopped,
}

impl CoreHandle {
    /// Queues `message` to run on the core, waking it. Never blocks.
    pub fn send(&self, message: impl FnOnce() + Send + 'static) -> Result<(), SendError> {
        if self.shared.stopped.load(Ordering::SeqCst) {
            return Err(SendError::Stopped);
        }
        match self.inbox.try_send(Box::new(message)) {
            Ok(()) => {
                self.shared.notify();
                Ok(())
            }
            Err(TrySendError::Full(_)) => Err(SendError::Busy),
            Err(TrySendError::Disconnected(_)) => Err(SendError::Stopped),
        }
    }
}

/// Spawns a foreground task on the current core.
///
/// # Panics
/// When called outside a core (a programming error).
pub fn spawn<F>(future: F) -> JoinHandle<F::Output>
where
    F: Future + 'static,
    F::Output: 'static,
{
    spawn_with(Priority::Foreground, future)
}

/// Spawns a background task (GC, scrub, checkpoints) on the current core.
pub fn spawn_background<F>(future: F) -> JoinHandle<F::Output>
where
    F: Future + 'static,
    F::Output: 'static,
{
    spawn_with(Priority::Background, future)
}

/// Spawns a task of the given priority on the current core.
pub fn spawn_with<F>(priority: Priority, future: F) -> JoinHandle<F::Output>
where
    F: Future + 'static,
    F::Output: 'static,
{
    let local = CURRENT
        .with(|c| c.borrow().clone())
        .expect("ioengine::spawn called outside a core (use Core::block_on)");
    let shared = local.shared.clone();
    let schedule = move |runnable: Runnable<Priority>| schedule(&shared, runnable);
    let (runnable, task) = Builder::new().metadata(priority).spawn_local(|_| future, schedule);
    local.push(runnable);
    task
}

/// Where a woken task goes: the local queue on its own thread, the remote queue (plus a
/// wake-up) from any other thread.
fn schedule(shared: &Arc<Shared>, runnable: Runnable<Priority>) {
    let on_owner = CURRENT_ID.try_with(|id| id.get() == shared.id).unwrap_or(false);
    if on_owner {
        let local = CURRENT.try_with(|c| c.borrow().clone()).ok().flatten();
        if let Some(local) = local {
            local.push(runnable);
            return;
        }
    }
    shared.remote.push(runnable);
    shared.notify();
}

/// The reactor of the core running on this thread.
pub(crate) fn current_reactor() -> Result<Rc<Reactor>> {
    CURRENT.with(|c| c.borrow().as_ref().map(|local| local.reactor.clone())).ok_or(Error::NoReactor)
}

/// An id of the core running on this thread, unique in the process (0 outside a core).
pub(crate) fn current_core_id() -> u64 {
    CURRENT_ID.with(Cell::get)
}

/// The priority of the task being polled (foreground outside tasks).
pub fn current_priority() -> Priority {
    CURRENT_PRIORITY.get()
}

/// Yields to other ready tasks once.
pub async fn yield_now() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    })
    .await;
}

/// Hands the operations queued on this core's ring to the kernel now, instead of when the
/// core loop next turns the ring: for a task that starts a read and then computes for a while
/// without yielding (a scan parsing one window while the next is read). Outside a core it
/// does nothing.
pub fn submit_now() {
    if let Ok(reactor) = current_reactor() {
        reactor.submit_queued();
    }
}

/// The ring features of the core running on this thread, if any.
pub fn current_reactor_features() -> Option<crate::reactor::RingFeatures> {
    current_reactor().ok().map(|reactor| reactor.features())
}

/// Registers `pool` with the ring of the core running on this thread.
pub fn register_pool(pool: &crate::buf::BufPool) -> crate::buf::Registration {
    match current_reactor() {
        Ok(reactor) => reactor.register_pool(pool),
        Err(_) => crate::buf::Registration::Unregistered,
    }
}
