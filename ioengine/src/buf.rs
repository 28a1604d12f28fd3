//! Buffers that can be handed to the kernel: the `IoBuf`/`IoBufMut` traits, heap buffers
//! aligned for O_DIRECT, and a per-core pool of aligned buffers allocated (and, memlock
//! permitting, registered with io_uring) once at startup so the I/O path does not allocate.
//!
//! An in-flight operation owns its buffer until the completion is reaped, so the traits only
//! need a pointer that stays valid while the value is moved: heap memory, never inline data.

use std::alloc::{self, Layout};
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::fmt;
use std::future::poll_fn;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;
use std::rc::Rc;
use std::task::{Poll, Waker};

/// A buffer the kernel may read from while an operation is in flight.
///
/// # Safety
/// `stable_ptr` must point to `bytes_total()` bytes that stay valid and are not reallocated
/// while the value is moved (heap memory owned by the value), until the value is dropped.
pub unsafe trait IoBuf: 'static {
    /// Start of the buffer.
    fn stable_ptr(&self) -> *const u8;
    /// Bytes initialised (what a write sends).
    fn bytes_init(&self) -> usize;
    /// Bytes allocated (what a read may fill).
    fn bytes_total(&self) -> usize;
    /// The io_uring registered-buffer index, when the memory is registered.
    fn fixed_index(&self) -> Option<u16> {
        None
    }
}

/// A buffer the kernel may write into while an operation is in flight.
///
/// # Safety
/// As [`IoBuf`]; in addition `stable_mut_ptr` must be valid for writes of `bytes_total()`
/// bytes, and `set_init` must only be called with a count the kernel actually filled.
pub unsafe trait IoBufMut: IoBuf {
    /// Start of the buffer, for writing.
    fn stable_mut_ptr(&mut self) -> *mut u8;
    /// Records that the first `len` bytes are initialised.
    ///
    /// # Safety
    /// The first `len` bytes must have been written.
    unsafe fn set_init(&mut self, len: usize);
}

// SAFETY: a Vec's heap allocation does not move when the Vec is moved; the op owns the Vec.
unsafe impl IoBuf for Vec<u8> {
    fn stable_ptr(&self) -> *const u8 {
        self.as_ptr()
    }
    fn bytes_init(&self) -> usize {
        self.len()
    }
    fn bytes_total(&self) -> usize {
        self.capacity()
    }
}

// SAFETY: as above; `set_init` is only called with the count the kernel reported.
unsafe impl IoBufMut for Vec<u8> {
    fn stable_mut_ptr(&mut self) -> *mut u8 {
        self.as_mut_ptr()
    }
    unsafe fn set_init(&mut self, len: usize) {
        if len > self.len() {
            // SAFETY: the caller guarantees `len` bytes were written and len <= capacity.
            unsafe { self.set_len(len) };
        }
    }
}

// SAFETY: the Rc's target does not move while any clone lives; ops sharing one buffer each
// hold a clone, so the memory outlives every op that points into it.
unsafe impl<B: IoBuf> IoBuf for Rc<B> {
    fn stable_ptr(&self) -> *const u8 {
        (**self).stable_ptr()
    }
    fn bytes_init(&self) -> usize {
        (**self).bytes_init()
    }
    fn bytes_total(&self) -> usize {
        (**self).bytes_total()
    }
    fn fixed_index(&self) -> Option<u16> {
        (**self).fixed_index()
    }
}

/// Bytes of recycled buffers a thread keeps for [`AlignedBuf::reuse_or_new`].
pub const RECYCLED_BYTES_MAX: usize = 64 << 20;
/// Recycled buffers a thread keeps at most.
pub const RECYCLED_BUFFERS_MAX: usize = 64;

#[derive(Default)]
struct Recycled {
    buffers: Vec<AlignedBuf>,
    bytes: usize,
}

thread_local! {
    static RECYCLED: std::cell::RefCell<Recycled> = std::cell::RefCell::new(Recycled::default());
}

/// A heap buffer whose start and capacity are multiples of an alignment (the device's logical
/// block size for O_DIRECT, or 4096). Zeroed at allocation.
pub struct AlignedBuf {
    ptr: NonNull<u8>,
    len: usize,
    capacity: usize,
    align: usize,
    owned: bool,
}

impl AlignedBuf {
    /// Allocates `capacity` zeroed bytes aligned to `align`. `capacity` is rounded up to a
    /// multiple of `align`; `align` must be a power of two.
    pub fn new(capacity: usize, align: usize) -> AlignedBuf {
        assert!(align.is_power_of_two(), "alignment {align} is not a power of two");
        let capacity = capacity.max(1).next_multiple_of(align);
        let layout = Layout::from_size_align(capacity, align).expect("valid aligned layout");
        // SAFETY: the layout has a non-zero size (capacity >= align >= 1).
        let raw = unsafe { alloc::alloc_zeroed(layout) };
        let Some(ptr) = NonNull::new(raw) else { alloc::handle_alloc_error(layout) };
        AlignedBuf { ptr, len: 0, capacity, align, owned: true }
    }

    /// [`AlignedBuf::new`] for a buffer that large O_DIRECT writes are made from: from
    /// [`HUGE_BUF_BYTES_MIN`] up it is rounded up to whole 2 MiB huge pages, 2 MiB-aligned and
    /// advised to use transparent huge pages before it is touched, like a large [`BufPool`]. A
    /// 1 MiB write from it is then one physical segment and one device request (from 4 KiB
    /// pages it is 257 segments, two requests on virtio). Allocating it costs more (zeroing,
    /// and with THP `defrag = madvise` possibly compaction), so it is for buffers that are
    /// recycled, not for one-off reads.
    pub fn for_writes(capacity: usize, align: usize) -> AlignedBuf {
        assert!(align.is_power_of_two(), "alignment {align} is not a power of two");
        let capacity = capacity.max(1).next_multiple_of(align);
        if capacity < HUGE_BUF_BYTES_MIN {
            return AlignedBuf::new(capacity, align);
        }
        let capacity = capacity.next_multiple_of(HUGE_PAGE_BYTES);
        let align = align.max(HUGE_PAGE_BYTES);
        let layout = Layout::from_size_align(capacity, align).expect("valid aligned layout");
        // SAFETY: the layout has a non-zero size.
        let raw = unsafe { alloc::alloc(layout) };
        let Some(ptr) = NonNull::new(raw) else { alloc::handle_alloc_error(layout) };
        // Advice only: without THP (or with it off) the buffer works with small pages.
        let _ = crate::sys::advise_huge_pages(ptr.as_ptr(), capacity);
        // SAFETY: the allocation is `capacity` bytes long and exclusively ours.
        unsafe { std::ptr::write_bytes(ptr.as_ptr(), 0, capacity) };
        AlignedBuf { ptr, len: 0, capacity, align, owned: true }
    }

    /// A buffer of at least `capacity` bytes aligned to `align`, taken from this thread's
    /// cache of recycled buffers ([`AlignedBuf::recycle`]) when one fits, else new. A recycled
    /// buffer is not zero-filled again: it holds its earlier bytes (initialised memory; the
    /// length starts at 0 either way). For buffers filled right away, such as a received value.
    pub fn reuse_or_new(capacity: usize, align: usize) -> AlignedBuf {
        AlignedBuf::reuse(capacity, align).unwrap_or_else(|| AlignedBuf::new(capacity, align))
    }

    /// [`AlignedBuf::reuse_or_new`] whose new buffer is [`AlignedBuf::for_writes`].
    pub fn reuse_or_for_writes(capacity: usize, align: usize) -> AlignedBuf {
        AlignedBuf::reuse(capacity, align)
            .unwrap_or_else(|| AlignedBuf::for_writes(capacity, align))
    }

    fn reuse(capacity: usize, align: usize) -> Option<AlignedBuf> {
        let wanted = capacity.max(1).next_multiple_of(align);
        RECYCLED.with(|cache| {
            let mut cache = cache.borrow_mut();
            // Best fit among buffers no more than twice the size.
            let index = cache
                .buffers
                .iter()
                .enumerate()
                .filter(|(_, b)| {
                    // Alignments are powers of two: a larger one satisfies a smaller.
                    b.align >= align && b.capacity >= wanted && b.capacity <= 2 * wanted
                })
                .min_by_key(|(_, b)| b.capacity)
                .map(|(i, _)| i)?;
            let mut buf = cache.buffers.swap_remove(index);
            cache.bytes -= buf.capacity;
            buf.len = 0;
            Some(buf)
        })
    }

    /// Keeps the buffer in this thread's cache for [`AlignedBuf::reuse_or_new`], up to
    /// [`RECYCLED_BYTES_MAX`] bytes and [`RECYCLED_BUFFERS_MAX`] buffers per thread; beyond
    /// that (or for a pool's buffer) it is dropped.
    pub fn recycle(self) {
        if !self.owned || self.capacity > RECYCLED_BYTES_MAX {
            return;
        }
        RECYCLED.with(|cache| {
            let mut cache = cache.borrow_mut();
            if cache.buffers.len() < RECYCLED_BUFFERS_MAX
                && cache.bytes + self.capacity <= RECYCLED_BYTES_MAX
            {
                cache.bytes += self.capacity;
                cache.buffers.push(self);
            }
        });
    }

    /// Wraps memory owned by a pool. Drop does not free it.
    ///
    /// # Safety
    /// `ptr` must be valid for `capacity` bytes, aligned to `align`, for the whole life of
    /// the returned value, and not used by anyone else meanwhile.
    unsafe fn borrowed(ptr: NonNull<u8>, capacity: usize, align: usize) -> AlignedBuf {
        AlignedBuf { ptr, len: 0, capacity, align, owned: false }
    }

    /// The alignment of start and capacity.
    pub fn align(&self) -> usize {
        self.align
    }

    /// Bytes in use.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no bytes are in use.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes allocated.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Sets the bytes in use. Bytes beyond the old length keep whatever the buffer held
    /// (zero at allocation, or earlier contents): memory is always initialised.
    pub fn set_len(&mut self, len: usize) {
        assert!(len <= self.capacity, "length {len} beyond capacity {}", self.capacity);
        self.len = len;
    }

    /// Empties the buffer (keeps the allocation).
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Appends bytes; panics if they do not fit (callers size buffers from limits).
    pub fn extend_from_slice(&mut self, bytes: &[u8]) {
        let end = self.len + bytes.len();
        assert!(end <= self.capacity, "append of {} bytes overflows capacity", bytes.len());
        // SAFETY: [len, end) lies inside the allocation and does not overlap `bytes`, which is
        // borrowed immutably while self is borrowed mutably.
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                self.ptr.as_ptr().add(self.len),
                bytes.len(),
            );
        }
        self.len = end;
    }

    /// Zero-fills from the current length up to `len` and sets the length (padding).
    pub fn pad_to(&mut self, len: usize) {
        assert!(len <= self.capacity && len >= self.len, "bad pad length {len}");
        let pad = len - self.len;
        self.spare_mut()[..pad].fill(0);
        self.len = len;
    }

    /// The whole allocation, for filling before `set_len`.
    pub fn spare_mut(&mut self) -> &mut [u8] {
        // SAFETY: the allocation is `capacity` initialised bytes (zeroed or written before);
        // [len, capacity) is in bounds, and the &mut borrow of self makes it exclusive.
        unsafe {
            std::slice::from_raw_parts_mut(
                self.ptr.as_ptr().add(self.len),
                self.capacity - self.len,
            )
        }
    }
}

impl Deref for AlignedBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: the first `len` bytes are inside the allocation and initialised.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl DerefMut for AlignedBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as for Deref, and &mut self gives exclusive access.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        if self.owned {
            let layout = Layout::from_size_align(self.capacity, self.align).expect("layout");
            // SAFETY: allocated in `new` with exactly this layout and not freed before.
            unsafe { alloc::dealloc(self.ptr.as_ptr(), layout) };
        }
    }
}

impl fmt::Debug for AlignedBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AlignedBuf")
            .field("len", &self.len)
            .field("capacity", &self.capacity)
            .field("align", &self.align)
            .finish()
    }
}

// SAFETY: AlignedBuf uniquely owns (or exclusively borrows from a pool) its memory, like a
// Box<[u8]>; no interior shared state.
unsafe impl Send for AlignedBuf {}

// SAFETY: the heap allocation does not move with the value; it lives until drop.
unsafe impl IoBuf for AlignedBuf {
    fn stable_ptr(&self) -> *const u8 {
        self.ptr.as_ptr()
    }
    fn bytes_init(&self) -> usize {
        self.len
    }
    fn bytes_total(&self) -> usize {
        self.capacity
    }
}

// SAFETY: as above; the whole allocation is writable.
unsafe impl IoBufMut for AlignedBuf {
    fn stable_mut_ptr(&mut self) -> *mut u8 {
        self.ptr.as_ptr()
    }
    unsafe fn set_init(&mut self, len: usize) {
        if len > self.len {
            self.len = len.min(self.capacity);
        }
    }
}

/// Size and count of a core's buffer pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolConfig {
    /// Bytes per buffer (a multiple of `align_bytes`).
    pub buf_bytes: usize,
    /// Number of buffers. Memory cost: `buf_bytes * count`, locked if registered.
    pub count: usize,
    /// Alignment of every buffer (at least the largest logical block size served).
    pub align_bytes: usize,
}

/// How the pool's memory relates to io_uring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registration {
    /// Registered: reads and writes use READ_FIXED/WRITE_FIXED (no per-I/O page pinning).
    Registered,
    /// Not registered (memlock too low, or not asked): plain READ/WRITE.
    Unregistered,
}

struct PoolInner {
    base: NonNull<u8>,
    layout: Layout,
    config: PoolConfig,
    free: RefCell<Vec<u16>>,
    waiters: RefCell<VecDeque<Waker>>,
    registered: Cell<bool>,
    in_use_max: Cell<usize>,
}

impl Drop for PoolInner {
    fn drop(&mut self) {
        // SAFETY: allocated in BufPool::new with this layout; every PooledBuf holds an Rc to
        // this inner, so no buffer outlives it.
        unsafe { alloc::dealloc(self.base.as_ptr(), self.layout) };
    }
}

/// A fixed set of equal aligned buffers owned by one core, allocated once at startup.
/// Cloning gives another handle to the same pool.
#[derive(Clone)]
pub struct BufPool {
    inner: Rc<PoolInner>,
}

/// Huge page size asked for large pools (x86-64 and arm64 with 4 KiB base pages).
pub const HUGE_PAGE_BYTES: usize = 2 << 20;

/// Asks for transparent huge pages under the 2 MiB-aligned part of a vector's allocation, for
/// a large table read at random (an index), where 4 KiB pages cost a TLB miss per lookup (a
/// nested page walk in a virtual machine). Advice only: call it before filling the vector, so
/// the pages it faults in are huge; with THP off or unavailable nothing changes.
pub fn advise_huge_pages<T>(v: &mut Vec<T>) {
    let bytes = v.capacity() * std::mem::size_of::<T>();
    let start = v.as_mut_ptr() as usize;
    let from = start.next_multiple_of(HUGE_PAGE_BYTES);
    let to = (start + bytes) / HUGE_PAGE_BYTES * HUGE_PAGE_BYTES;
    if to > from {
        let _ = crate::sys::advise_huge_pages(from as *mut u8, to - from);
    }
}
/// [`AlignedBuf::for_writes`] backs buffers of at least this many bytes with huge pages (so at
/// most half of such a buffer's memory is rounding).
pub const HUGE_BUF_BYTES_MIN: usize = HUGE_PAGE_BYTES / 2;

/// Largest buffer count a pool may have: io_uring buffer indexes are u16.
pub const POOL_BUFFERS_MAX: usize = u16::MAX as usize;

impl BufPool {
    /// Allocates the pool's memory (one region, zeroed). Not registered yet: see
    /// [`crate::reactor::register_pool`].
    pub fn new(config: PoolConfig) -> BufPool {
        assert!(config.align_bytes.is_power_of_two(), "pool alignment must be a power of two");
        assert!(config.buf_bytes > 0 && config.buf_bytes % config.align_bytes == 0);
        assert!(config.count > 0 && config.count <= POOL_BUFFERS_MAX);
        let used = config.buf_bytes.checked_mul(config.count).expect("pool size overflows");
        // Large pools are 2 MiB-aligned and asked to use transparent huge pages: a buffer
        // then spans few physical segments, so a 1 MiB O_DIRECT write reaches the device as one
        // request instead of being split (measured on virtio: 256 4 KiB pages > 254 segments).
        let (total, align) = if used >= HUGE_PAGE_BYTES {
            (used.next_multiple_of(HUGE_PAGE_BYTES), config.align_bytes.max(HUGE_PAGE_BYTES))
        } else {
            (used, config.align_bytes)
        };
        let layout = Layout::from_size_align(total, align).expect("pool layout");
        // SAFETY: total > 0 (both factors are positive).
        let raw = unsafe { alloc::alloc(layout) };
        let Some(base) = NonNull::new(raw) else { alloc::handle_alloc_error(layout) };
        if total >= HUGE_PAGE_BYTES {
            // Advice only: without THP (or with it off) the pool works with small pages.
            let _ = crate::sys::advise_huge_pages(base.as_ptr(), total);
        }
        // SAFETY: the allocation is `total` bytes long and exclusively ours.
        unsafe { std::ptr::write_bytes(base.as_ptr(), 0, total) };
        let free = (0..config.count as u16).rev().collect();
        BufPool {
            inner: Rc::new(PoolInner {
                base,
                layout,
                config,
                free: RefCell::new(free),
                waiters: RefCell::new(VecDeque::new()),
                registered: Cell::new(false),
                in_use_max: Cell::new(0),
            }),
        }
    }

    /// The pool's shape.
    pub fn config(&self) -> PoolConfig {
        self.inner.config
    }

    /// Whether the memory is registered with the ring.
    pub fn registration(&self) -> Registration {
        if self.inner.registered.get() {
            Registration::Registered
        } else {
            Registration::Unregistered
        }
    }

    pub(crate) fn set_registered(&self) {
        self.inner.registered.set(true);
    }

    /// One iovec per buffer, for io_uring_register(BUFFERS).
    pub(crate) fn iovecs(&self) -> Vec<libc::iovec> {
        let cfg = self.inner.config;
        (0..cfg.count)
            .map(|i| libc::iovec {
                // SAFETY: i * buf_bytes < total, so the pointer stays inside the allocation.
                iov_base: unsafe { self.inner.base.as_ptr().add(i * cfg.buf_bytes) }.cast(),
                iov_len: cfg.buf_bytes,
            })
            .collect()
    }

    /// Total bytes of the pool.
    pub fn total_bytes(&self) -> usize {
        self.inner.layout.size()
    }

    /// Buffers currently free.
    pub fn available(&self) -> usize {
        self.inner.free.borrow().len()
    }

    /// The most buffers ever in use at once.
    pub fn in_use_max(&self) -> usize {
        self.inner.in_use_max.get()
    }

    /// Takes a free buffer, or `None` when all are in use.
    pub fn try_get(&self) -> Option<PooledBuf> {
        let index = self.inner.free.borrow_mut().pop()?;
        let cfg = self.inner.config;
        let in_use = cfg.count - self.inner.free.borrow().len();
        if in_use > self.inner.in_use_max.get() {
            self.inner.in_use_max.set(in_use);
        }
        // SAFETY: index < count, so the offset is inside the allocation.
        let ptr = unsafe { self.inner.base.as_ptr().add(usize::from(index) * cfg.buf_bytes) };
        // SAFETY: the slot was on the free list, so no other PooledBuf uses it; the region
        // lives as long as `inner`, which the PooledBuf keeps alive.
        let buf = unsafe {
            AlignedBuf::borrowed(
                NonNull::new(ptr).expect("non-null"),
                cfg.buf_bytes,
                cfg.align_bytes,
            )
        };
        Some(PooledBuf { buf, index, pool: self.inner.clone() })
    }

    /// Takes a free buffer, waiting for one when all are in use (back-pressure).
    pub async fn get(&self) -> PooledBuf {
        poll_fn(|cx| match self.try_get() {
            Some(buf) => Poll::Ready(buf),
            None => {
                self.inner.waiters.borrow_mut().push_back(cx.waker().clone());
                Poll::Pending
            }
        })
        .await
    }
}

impl fmt::Debug for BufPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BufPool")
            .field("config", &self.inner.config)
            .field("available", &self.available())
            .field("registration", &self.registration())
            .finish()
    }
}

/// A buffer borrowed from a [`BufPool`]; returns to the pool when dropped.
pub struct PooledBuf {
    buf: AlignedBuf,
    index: u16,
    pool: Rc<PoolInner>,
}

impl PooledBuf {
    /// The buffer's slot in its pool.
    pub fn index(&self) -> u16 {
        self.index
    }
}

impl Deref for PooledBuf {
    type Target = AlignedBuf;
    fn deref(&self) -> &AlignedBuf {
        &self.buf
    }
}

impl DerefMut for PooledBuf {
    fn deref_mut(&mut self) -> &mut AlignedBuf {
        &mut self.buf
    }
}

impl Drop for PooledBuf {
    fn drop(&mut self) {
        self.pool.free.borrow_mut().push(self.index);
        let waiter = self.pool.waiters.borrow_mut().pop_front();
        if let Some(waker) = waiter {
            waker.wake();
        }
    }
}

impl fmt::Debug for PooledBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PooledBuf").field("index", &self.index).field("buf", &self.buf).finish()
    }
}

// SAFETY: the slot's memory belongs to the pool region, which the Rc keeps alive; it does not
// move when the PooledBuf moves.
unsafe impl IoBuf for PooledBuf {
    fn stable_ptr(&self) -> *const u8 {
        self.buf.stable_ptr()
    }
    fn bytes_init(&self) -> usize {
        self.buf.len()
    }
    fn bytes_total(&self) -> usize {
        self.buf.capacity()
    }
    fn fixed_index(&self) -> Option<u16> {
        self.pool.registered.get().then_some(self.index)
    }
}

// SAFETY: as above.
unsafe impl IoBufMut for PooledBuf {
    fn stable_mut_ptr(&mut self) -> *mut u8 {
        self.buf.stable_mut_ptr()
    }
    unsafe fn set_init(&mut self, len: usize) {
        // SAFETY: forwarded with the caller's guarantee.
        unsafe { self.buf.set_init(len) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recycled_buffers_are_reused_by_size_and_bounded() {
        let buf = AlignedBuf::new(1 << 20, 4096);
        let ptr = buf.stable_ptr();
        buf.recycle();
        let again = AlignedBuf::reuse_or_for_writes(1 << 20, 4096);
        assert_eq!(again.stable_ptr(), ptr, "the recycled buffer came back");
        assert!(again.is_empty());
        again.recycle();
        // Too large for the request (more than twice): not handed out.
        let small = AlignedBuf::reuse_or_new(4096, 4096);
        assert_ne!(small.stable_ptr(), ptr);
        // The cache is bounded.
        for _ in 0..2 * RECYCLED_BUFFERS_MAX {
            AlignedBuf::new(4096, 4096).recycle();
        }
        RECYCLED.with(|c| {
            let c = c.borrow();
            assert!(c.buffers.len() <= RECYCLED_BUFFERS_MAX && c.bytes <= RECYCLED_BYTES_MAX);
        });
    }

    #[test]
    fn aligned_buf_is_aligned_and_zeroed() {
        let mut buf = AlignedBuf::new(10_000, 4096);
        assert_eq!(buf.capacity(), 12_288);
        assert_eq!(buf.stable_ptr() as usize % 4096, 0);
        assert!(buf.spare_mut().iter().all(|&b| b == 0));
        buf.extend_from_slice(b"hello");
        buf.pad_to(4096);
        assert_eq!(&buf[..5], b"hello");
        assert!(buf[5..].iter().all(|&b| b == 0));
    }

    #[test]
    fn pool_hands_out_each_slot_once_and_takes_it_back() {
        let pool = BufPool::new(PoolConfig { buf_bytes: 8192, count: 3, align_bytes: 4096 });
        let a = pool.try_get().unwrap();
        let b = pool.try_get().unwrap();
        let c = pool.try_get().unwrap();
        assert!(pool.try_get().is_none());
        let mut ptrs = [a.stable_ptr() as usize, b.stable_ptr() as usize, c.stable_ptr() as usize];
        ptrs.sort_unstable();
        assert!(ptrs.windows(2).all(|w| w[1] - w[0] >= 8192), "slots overlap: {ptrs:?}");
        assert!(ptrs.iter().all(|p| p % 4096 == 0));
        drop(b);
        assert_eq!(pool.available(), 1);
        assert!(pool.try_get().is_some());
        assert_eq!(pool.in_use_max(), 3);
        assert_eq!(a.fixed_index(), None, "unregistered pool has no fixed index");
    }

    #[test]
    fn large_buffers_are_whole_huge_pages_and_recycle_for_smaller_alignments() {
        assert_eq!(AlignedBuf::new((1 << 20) + 4096, 4096).capacity(), (1 << 20) + 4096);
        let buf = AlignedBuf::for_writes((1 << 20) + 4096, 4096);
        assert_eq!(buf.capacity(), HUGE_PAGE_BYTES, "rounded up to a huge page");
        assert_eq!(buf.as_ptr() as usize % HUGE_PAGE_BYTES, 0, "huge-page aligned");
        let mut buf = buf;
        assert!(buf.spare_mut().iter().all(|&b| b == 0), "zeroed");
        buf.extend_from_slice(&[7; 100]);
        let ptr = buf.as_ptr() as usize;
        buf.recycle();
        let again = AlignedBuf::reuse_or_for_writes(1 << 20, 4096);
        assert_eq!(again.as_ptr() as usize, ptr, "the huge buffer serves a 4096-aligned request");
        assert_eq!(again.len(), 0);
        let small = AlignedBuf::for_writes(HUGE_BUF_BYTES_MIN - 4096, 4096);
        assert_eq!(small.capacity(), HUGE_BUF_BYTES_MIN - 4096, "below the threshold: as asked");
    }
}
