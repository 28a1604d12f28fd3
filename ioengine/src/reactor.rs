//! The per-core io_uring: ring setup (with feature probing and error messages that name the
//! fix), the table of in-flight operations, submission with priority classes, and reaping.
//!
//! Ownership rule (see docs/ARCHITECTURE.md, "op lifecycle"): every submitted operation has a
//! slot here, indexed by its `user_data`. While the kernel may touch an operation's buffer or
//! fd, the resources are owned either by the [`crate::op::Op`] future or, once that future is
//! dropped, by the slot itself (`Ignored`), which frees them only when the completion arrives.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::task::{Context, Poll, Waker};

use io_uring::{IoUring, opcode, squeue, types};
use slab::Slab;

use crate::buf::{BufPool, Registration};
use crate::error::{Error, OpKind, Result};

/// `user_data` of the internal eventfd read that wakes a sleeping core.
const USER_DATA_EVENTFD: u64 = u64::MAX;
/// `user_data` of internal requests whose completion carries no information (cancels).
const USER_DATA_IGNORE: u64 = u64::MAX - 1;

/// `IORING_ENTER_GETEVENTS` from linux/io_uring.h (the crate keeps its copy private).
const IORING_ENTER_GETEVENTS: u32 = 1;

/// Default submission queue entries per core ring. The completion queue is twice as large.
pub const RING_ENTRIES_DEFAULT: u32 = 256;
/// Largest ring the config may ask for.
pub const RING_ENTRIES_MAX: u32 = 4096;
/// Background operations may hold at most this fraction (1/N) of the ring's entries in flight,
/// so foreground requests always find room in the submission queue and the device queue.
pub const BACKGROUND_SHARE_DIVISOR: u32 = 4;

/// The submission queue is handed to the kernel as soon as it holds this many entries, instead
/// of only when the core loop turns the ring: a burst of requests reaches the device while the
/// tasks that queue the rest of the burst still run, so the device queue fills earlier and
/// less deeply (measured in benches/BENCHMARKING.md, "Submission batch cap"). Small enough to
/// overlap, large enough that one `io_uring_enter` still carries several operations.
pub const SUBMIT_BATCH_MAX: usize = 8;

const _: () = assert!(RING_ENTRIES_DEFAULT.is_power_of_two());
const _: () = assert!(SUBMIT_BATCH_MAX >= 1 && SUBMIT_BATCH_MAX <= RING_ENTRIES_DEFAULT as usize);
const _: () = assert!(RING_ENTRIES_DEFAULT <= RING_ENTRIES_MAX);
const _: () = assert!(RING_ENTRIES_DEFAULT / BACKGROUND_SHARE_DIVISOR >= 1);

/// Priority class of a task and of the operations it submits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Priority {
    /// Client requests: run first, never deferred.
    Foreground,
    /// Garbage collection, scrubbing, checkpoints: bounded share of the CPU and the ring.
    Background,
}

/// Which optional ring setup flags the kernel accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RingFeatures {
    /// IORING_SETUP_SINGLE_ISSUER (6.0+).
    pub single_issuer: bool,
    /// IORING_SETUP_DEFER_TASKRUN (6.1+): completions run only when this thread asks.
    pub defer_taskrun: bool,
    /// IORING_SETUP_COOP_TASKRUN (5.19+): no interrupting IPIs for task work.
    pub coop_taskrun: bool,
    /// IORING_FEAT_NODROP: completions are never dropped on CQ overflow.
    pub nodrop: bool,
}

/// The raw result of one completion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Completion {
    /// The kernel's result: a byte count or a negated errno.
    pub result: i32,
    /// CQE flags.
    pub flags: u32,
}

impl Completion {
    /// The result as a count, or the errno mapped for `op` at `offset`.
    pub fn into_result(self, op: OpKind, offset: u64) -> Result<u32> {
        if self.result >= 0 {
            Ok(self.result as u32)
        } else {
            Err(Error::from_errno(op, offset, -self.result))
        }
    }
}

enum SlotState {
    /// Not complete yet; the waker (once polled) wants the completion.
    Pending(Option<Waker>),
    /// The completion arrived and waits for its future.
    Completed(Completion),
    /// The future was dropped: the slot keeps the op's resources alive until completion.
    Ignored(Box<dyn Any>),
}

struct Slot {
    state: SlotState,
    /// Some while a background op waits for in-flight room (not yet given to the kernel).
    deferred: Option<squeue::Entry>,
    background: bool,
}

/// One core's io_uring and its table of in-flight operations.
pub struct Reactor {
    ring: RefCell<IoUring>,
    slots: RefCell<Slab<Slot>>,
    deferred: RefCell<VecDeque<usize>>,
    background_inflight: Cell<u32>,
    background_inflight_max: u32,
    features: RingFeatures,
    wake_fd: Option<RawFd>,
    wake_armed: Cell<bool>,
    wake_buf: Box<Cell<u64>>,
    shut_down: Cell<bool>,
    reap_wakers: Cell<Vec<Waker>>,
    reap_dropped: Cell<Vec<Box<dyn Any>>>,
}

impl std::fmt::Debug for Reactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reactor")
            .field("features", &self.features)
            .field("in_flight", &self.in_flight())
            .finish()
    }
}

impl Reactor {
    /// Creates a ring with `entries` submission entries, probing the optional setup flags from
    /// most to least capable. `wake_fd` is an eventfd the reactor keeps a read armed on while
    /// it sleeps, so other threads can wake it.
    pub fn new(entries: u32, wake_fd: Option<RawFd>) -> Result<Reactor> {
        let (ring, features) = setup_ring(entries)?;
        let entries = ring.params().sq_entries();
        Ok(Reactor {
            ring: RefCell::new(ring),
            slots: RefCell::new(Slab::with_capacity(entries as usize * 2)),
            deferred: RefCell::new(VecDeque::new()),
            background_inflight: Cell::new(0),
            background_inflight_max: (entries / BACKGROUND_SHARE_DIVISOR).max(1),
            features,
            wake_fd,
            wake_armed: Cell::new(false),
            wake_buf: Box::new(Cell::new(0)),
            shut_down: Cell::new(false),
            reap_wakers: Cell::new(Vec::with_capacity(entries as usize * 2)),
            reap_dropped: Cell::new(Vec::new()),
        })
    }

    /// The optional features in use.
    pub fn features(&self) -> RingFeatures {
        self.features
    }

    /// Operations submitted (or deferred) and not yet reaped by their futures.
    pub fn in_flight(&self) -> usize {
        self.slots.borrow().len()
    }

    /// Background operations waiting for room.
    pub fn deferred(&self) -> usize {
        self.deferred.borrow().len()
    }

    /// Most background operations given to the kernel at once.
    pub fn background_inflight_max(&self) -> u32 {
        self.background_inflight_max
    }

    /// Submits an operation and returns its slot index.
    ///
    /// # Safety
    /// Every buffer and fd `entry` refers to must stay valid until the completion for the
    /// returned index has been reaped, or until [`Reactor::abandon`] took them over.
    pub(crate) unsafe fn submit(&self, entry: squeue::Entry, priority: Priority) -> Result<usize> {
        if self.shut_down.get() {
            return Err(Error::Cancelled { op: OpKind::Cancel });
        }
        let background = priority == Priority::Background;
        let mut slots = self.slots.borrow_mut();
        let vacant = slots.vacant_entry();
        let index = vacant.key();
        let entry = entry.user_data(index as u64);
        if background && self.background_inflight.get() >= self.background_inflight_max {
            vacant.insert(Slot {
                state: SlotState::Pending(None),
                deferred: Some(entry),
                background,
            });
            self.deferred.borrow_mut().push_back(index);
            return Ok(index);
        }
        vacant.insert(Slot { state: SlotState::Pending(None), deferred: None, background });
        drop(slots);
        if background {
            self.background_inflight.set(self.background_inflight.get() + 1);
        }
        // SAFETY: forwarded from the caller's contract.
        unsafe { self.push(&entry) };
        Ok(index)
    }

    /// Pushes an entry onto the submission queue, flushing the queue to the kernel when full.
    ///
    /// # Safety
    /// As [`Reactor::submit`].
    unsafe fn push(&self, entry: &squeue::Entry) {
        loop {
            let mut ring = self.ring.borrow_mut();
            // SAFETY: the caller keeps the entry's resources alive until completion.
            if unsafe { ring.submission().push(entry) }.is_ok() {
                if ring.submission().len() >= SUBMIT_BATCH_MAX {
                    drop(ring);
                    self.submit_queued();
                }
                return;
            }
            // Submission queue full: hand it to the kernel and try again.
            match ring.submit() {
                Ok(_) => {}
                Err(err) if err.raw_os_error() == Some(libc::EBUSY) => {
                    drop(ring);
                    self.reap();
                }
                Err(err) if err.raw_os_error() == Some(libc::EINTR) => {}
                Err(err) => panic!("io_uring_enter failed while flushing a full queue: {err}"),
            }
        }
    }

    /// Hands the queued submissions to the kernel without waiting for completions. EBUSY,
    /// EAGAIN and EINTR leave them queued: the next turn submits them (and reaps first); other
    /// errors surface there too, with their context.
    pub(crate) fn submit_queued(&self) {
        let mut ring = self.ring.borrow_mut();
        if !ring.submission().is_empty() {
            let _ = ring.submit();
        }
    }

    /// Polls slot `index` for its completion; on `Ready` the slot is freed.
    pub(crate) fn poll_slot(&self, index: usize, cx: &mut Context<'_>) -> Poll<Completion> {
        let mut slots = self.slots.borrow_mut();
        let slot = slots.get_mut(index).expect("polled an op slot that does not exist");
        match &mut slot.state {
            SlotState::Completed(completion) => {
                let completion = *completion;
                slots.remove(index);
                Poll::Ready(completion)
            }
            SlotState::Pending(waker) => {
                match waker {
                    Some(waker) if waker.will_wake(cx.waker()) => {}
                    _ => *waker = Some(cx.waker().clone()),
                }
                Poll::Pending
            }
            SlotState::Ignored(_) => unreachable!("polled an op whose future was dropped"),
        }
    }

    /// Called when an op future is dropped before it saw its completion: keeps `data` (the
    /// op's buffers and fds) alive until the kernel is done with them, and asks the kernel to
    /// cancel the op.
    pub(crate) fn abandon(&self, index: usize, data: Box<dyn Any>) {
        let mut slots = self.slots.borrow_mut();
        let Some(slot) = slots.get_mut(index) else { return };
        if matches!(slot.state, SlotState::Completed(_)) || slot.deferred.is_some() {
            // Done, or never given to the kernel: free at once.
            let was_deferred = slot.deferred.is_some();
            slots.remove(index);
            drop(slots);
            if was_deferred {
                self.deferred.borrow_mut().retain(|&i| i != index);
            }
            drop(data);
            return;
        }
        assert!(matches!(slot.state, SlotState::Pending(_)), "op abandoned twice");
        slot.state = SlotState::Ignored(data);
        drop(slots);
        self.cancel(index as u64);
    }

    fn cancel(&self, user_data: u64) {
        let entry = opcode::AsyncCancel::new(user_data).build().user_data(USER_DATA_IGNORE);
        // SAFETY: a cancel request refers to no memory.
        unsafe { self.push(&entry) };
    }

    /// Moves completions from the ring into their slots and wakes their tasks. Returns the
    /// number of completions seen.
    pub fn reap(&self) -> usize {
        // Reused between turns: reaping allocates nothing once the vectors have grown.
        let mut wakers = self.reap_wakers.take();
        let mut dropped = self.reap_dropped.take();
        let mut count = 0;
        {
            let mut ring = self.ring.borrow_mut();
            let mut slots = self.slots.borrow_mut();
            for cqe in ring.completion() {
                count += 1;
                let completion = Completion { result: cqe.result(), flags: cqe.flags() };
                match cqe.user_data() {
                    USER_DATA_EVENTFD => self.wake_armed.set(false),
                    USER_DATA_IGNORE => {}
                    user_data => {
                        let index = user_data as usize;
                        let Some(slot) = slots.get_mut(index) else {
                            panic!("completion for unknown op slot {index}")
                        };
                        if slot.background {
                            self.background_inflight.set(self.background_inflight.get() - 1);
                        }
                        match std::mem::replace(&mut slot.state, SlotState::Completed(completion)) {
                            SlotState::Pending(Some(waker)) => wakers.push(waker),
                            SlotState::Pending(None) => {}
                            SlotState::Ignored(data) => {
                                slots.remove(index);
                                dropped.push(data);
                            }
                            SlotState::Completed(_) => panic!("op slot {index} completed twice"),
                        }
                    }
                }
            }
        }
        self.promote_deferred();
        // Wake and drop outside the borrows: a dropped buffer may wake a pool waiter.
        dropped.clear();
        for waker in wakers.drain(..) {
            waker.wake();
        }
        self.reap_wakers.set(wakers);
        self.reap_dropped.set(dropped);
        count
    }

    /// Gives deferred background ops to the kernel while the background share has room.
    fn promote_deferred(&self) {
        while self.background_inflight.get() < self.background_inflight_max {
            let Some(index) = self.deferred.borrow_mut().pop_front() else { return };
            let entry = {
                let mut slots = self.slots.borrow_mut();
                let slot = slots.get_mut(index).expect("deferred op has a slot");
                slot.deferred.take().expect("deferred op has an entry")
            };
            self.background_inflight.set(self.background_inflight.get() + 1);
            // SAFETY: the op future (or its abandoned data in the slot) still owns the
            // resources: a deferred op that is abandoned is removed from the queue first.
            unsafe { self.push(&entry) };
        }
    }

    /// Submits queued entries and reaps completions. With `block`, sleeps until at least one
    /// completion arrives (a timer, an I/O, or a wake-up from another thread through the
    /// eventfd).
    pub fn turn(&self, block: bool) -> Result<usize> {
        if block {
            self.arm_wake();
        }
        let want = u32::from(block);
        let mut flags = 0;
        if block || self.features.defer_taskrun {
            // With DEFER_TASKRUN, completions are only posted by an enter with GETEVENTS.
            flags |= IORING_ENTER_GETEVENTS;
        }
        loop {
            let to_submit = self.ring.borrow_mut().submission().len() as u32;
            let res = {
                let ring = self.ring.borrow();
                // SAFETY: no extended argument is passed (None), so the kernel reads no
                // pointer from us; the queued entries' resources are owned by their ops.
                unsafe { ring.submitter().enter::<libc::sigset_t>(to_submit, want, flags, None) }
            };
            match res {
                Ok(_) => break,
                Err(err) => match err.raw_os_error() {
                    // A signal: the wait is over either way; a non-blocking turn retries.
                    Some(libc::EINTR) if block => break,
                    Some(libc::EINTR) => {}
                    // Completion queue backed up: make room and retry.
                    Some(libc::EBUSY | libc::EAGAIN) => {
                        self.reap();
                    }
                    _ => return Err(Error::from_io(OpKind::RingSetup, 0, &err)),
                },
            }
        }
        Ok(self.reap())
    }

    /// Keeps a read of the wake-up eventfd in flight while the core sleeps.
    fn arm_wake(&self) {
        let Some(fd) = self.wake_fd else { return };
        if self.wake_armed.get() || self.shut_down.get() {
            return;
        }
        let entry = opcode::Read::new(types::Fd(fd), self.wake_buf.as_ptr().cast(), 8)
            .build()
            .user_data(USER_DATA_EVENTFD);
        // SAFETY: the 8-byte buffer is owned by the reactor (boxed, stable address) and the
        // reactor outlives the read: shutdown cancels it and waits for its completion.
        unsafe { self.push(&entry) };
        self.wake_armed.set(true);
    }

    /// Cancels everything in flight and waits until the kernel has returned every operation,
    /// so no buffer or fd is freed while the kernel may still use it. Deferred ops are dropped.
    pub fn shutdown(&self) {
        if self.shut_down.replace(true) {
            return;
        }
        let in_kernel: Vec<usize> = self
            .slots
            .borrow()
            .iter()
            .filter(|(_, slot)| {
                slot.deferred.is_none() && !matches!(slot.state, SlotState::Completed(_))
            })
            .map(|(index, _)| index)
            .collect();
        for index in in_kernel {
            self.cancel(index as u64);
        }
        if self.wake_armed.get() {
            self.cancel(USER_DATA_EVENTFD);
        }
        // Deferred entries never reached the kernel: fail them as cancelled.
        let deferred: Vec<usize> = self.deferred.borrow_mut().drain(..).collect();
        let mut wakers = Vec::new();
        for index in deferred {
            let mut slots = self.slots.borrow_mut();
            if let Some(slot) = slots.get_mut(index) {
                slot.deferred = None;
                let cancelled = Completion { result: -libc::ECANCELED, flags: 0 };
                if let SlotState::Pending(Some(waker)) =
                    std::mem::replace(&mut slot.state, SlotState::Completed(cancelled))
                {
                    wakers.push(waker);
                }
            }
        }
        for waker in wakers {
            waker.wake();
        }
        while self.kernel_owned() > 0 || self.wake_armed.get() {
            if let Err(err) = self.turn(true) {
                panic!("io_uring_enter failed while draining the ring at shutdown: {err}");
            }
        }
    }

    /// Slots whose operation the kernel still holds.
    fn kernel_owned(&self) -> usize {
        self.slots
            .borrow()
            .iter()
            .filter(|(_, slot)| {
                slot.deferred.is_none() && !matches!(slot.state, SlotState::Completed(_))
            })
            .count()
    }

    /// Registers a pool's buffers with the ring so reads and writes into them use the
    /// fixed-buffer opcodes. When the memlock limit is too low, logs why and leaves the pool
    /// unregistered (plain reads and writes still work).
    pub fn register_pool(&self, pool: &BufPool) -> Registration {
        let iovecs = pool.iovecs();
        let ring = self.ring.borrow();
        // SAFETY: the iovecs describe the pool's allocation, which lives as long as any
        // PooledBuf (each holds the pool); the core unregisters (drops the ring) before the
        // pool memory can be reused, and buffers are only used through ops owning them.
        match unsafe { ring.submitter().register_buffers(&iovecs) } {
            Ok(()) => {
                pool.set_registered();
                Registration::Registered
            }
            Err(err) => {
                let limit = crate::sys::memlock_limit_bytes().unwrap_or(0);
                tracing::warn!(
                    pool_bytes = pool.total_bytes(),
                    memlock_limit_bytes = limit,
                    error = %err,
                    "buffer pool not registered with io_uring (RLIMIT_MEMLOCK too low?); \
                     using plain reads and writes. Raise LimitMEMLOCK to register it."
                );
                Registration::Unregistered
            }
        }
    }
}

impl Drop for Reactor {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Creates a ring, trying the newest setup flags first and falling back on EINVAL.
fn setup_ring(entries: u32) -> Result<(IoUring, RingFeatures)> {
    let entries = entries.clamp(2, RING_ENTRIES_MAX).next_power_of_two();
    let attempts = [
        RingFeatures {
            single_issuer: true,
            defer_taskrun: true,
            coop_taskrun: true,
            nodrop: false,
        },
        RingFeatures {
            single_issuer: true,
            defer_taskrun: false,
            coop_taskrun: true,
            nodrop: false,
        },
        RingFeatures {
            single_issuer: false,
            defer_taskrun: false,
            coop_taskrun: true,
            nodrop: false,
        },
        RingFeatures::default(),
    ];
    let mut last_err = None;
    for wanted in attempts {
        let mut builder = IoUring::builder();
        builder.setup_cqsize(entries * 2).setup_clamp();
        if wanted.single_issuer {
            builder.setup_single_issuer();
        }
        if wanted.defer_taskrun {
            builder.setup_defer_taskrun();
        }
        if wanted.coop_taskrun {
            builder.setup_coop_taskrun();
        }
        match builder.build(entries) {
            Ok(ring) => {
                let nodrop = ring.params().is_feature_nodrop();
                return Ok((ring, RingFeatures { nodrop, ..wanted }));
            }
            Err(err) if err.raw_os_error() == Some(libc::EINVAL) => last_err = Some(err),
            Err(err) => return Err(setup_error(&err, entries, read_io_uring_disabled())),
        }
    }
    let err = last_err.unwrap_or_else(|| io::Error::from_raw_os_error(libc::EINVAL));
    Err(setup_error(&err, entries, read_io_uring_disabled()))
}

/// Names the cause and the fix of a failed io_uring_setup.
pub(crate) fn setup_error(err: &io::Error, entries: u32, disabled_sysctl: Option<u32>) -> Error {
    match err.raw_os_error() {
        Some(libc::EPERM) => match disabled_sysctl {
            Some(value) if value != 0 => Error::UringDisabled { value },
            _ => Error::UringBlocked { errno_name: "EPERM" },
        },
        Some(libc::ENOSYS) => Error::UringBlocked { errno_name: "ENOSYS" },
        Some(libc::ENOMEM) => Error::MemlockTooLow {
            what: "ring",
            // SQ entries are 64 bytes, CQ entries 16 bytes and twice as many, plus the rings.
            needed_bytes: u64::from(entries) * (64 + 2 * 16) + 2 * 4096,
            limit_bytes: crate::sys::memlock_limit_bytes().unwrap_or(0),
        },
        Some(errno) => Error::from_errno(OpKind::RingSetup, 0, errno),
        None => Error::Unexpected { op: OpKind::RingSetup, errno: 0, errno_name: "non-OS error" },
    }
}

/// `kernel.io_uring_disabled` (6.6+): 0 allowed, 1 only for a group, 2 disabled.
fn read_io_uring_disabled() -> Option<u32> {
    std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled").ok()?.trim().parse().ok()
}

/// A raw fd for an io_uring entry. Separate so op files read cleanly.
pub(crate) fn fd(f: &impl AsRawFd) -> types::Fd {
    types::Fd(f.as_raw_fd())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setup_errors_name_the_cause() {
        let eperm = io::Error::from_raw_os_error(libc::EPERM);
        assert!(matches!(setup_error(&eperm, 256, Some(2)), Error::UringDisabled { value: 2 }));
        assert!(matches!(setup_error(&eperm, 256, Some(0)), Error::UringBlocked { .. }));
        let enosys = io::Error::from_raw_os_error(libc::ENOSYS);
        assert!(matches!(setup_error(&enosys, 256, None), Error::UringBlocked { .. }));
        let enomem = io::Error::from_raw_os_error(libc::ENOMEM);
        let err = setup_error(&enomem, 256, None);
        assert!(matches!(err, Error::MemlockTooLow { .. }), "{err:?}");
        assert!(err.to_string().contains("LimitMEMLOCK"), "{err}");
    }

    #[test]
    fn ring_setup_uses_the_newest_flags_this_kernel_has() {
        let reactor = Reactor::new(64, None).expect("io_uring available on the test host");
        let features = reactor.features();
        // Linux 6.1+ has all three; older kernels fall back. Either way the ring works.
        if features.defer_taskrun {
            assert!(features.single_issuer);
        }
        assert_eq!(reactor.in_flight(), 0);
        assert_eq!(reactor.background_inflight_max(), 64 / BACKGROUND_SHARE_DIVISOR);
    }
}
