//! The reactor's operations against real files, pipes and sockets: reads and writes
//! (O_DIRECT, registered buffers, RWF_DSYNC), short transfers, fsync, timers, and what
//! happens to buffers when an operation's future is dropped while the kernel holds it.

#![allow(clippy::unwrap_used, reason = "tests: a failed step should panic with its error")]

use std::cell::Cell;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::rc::Rc;
use std::time::{Duration, Instant};

use ioengine::buf::{AlignedBuf, BufPool, IoBuf, IoBufMut, PoolConfig, Registration};
use ioengine::op::{self, SharedFd, SyncKind, WriteFlags};
use ioengine::time::{Elapsed, sleep, timeout};
use ioengine::{Core, Error};

fn direct_file(dir: &tempfile::TempDir, name: &str, size: u64) -> SharedFd {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .custom_flags(libc::O_DIRECT)
        .open(dir.path().join(name))
        .unwrap();
    file.set_len(size).unwrap();
    SharedFd::new(OwnedFd::from(file))
}

fn pipe() -> (SharedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: fds is a valid array of two ints.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: pipe2 returned two new fds that nothing else owns.
    unsafe { (SharedFd::new(OwnedFd::from_raw_fd(fds[0])), OwnedFd::from_raw_fd(fds[1])) }
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

#[test]
fn direct_write_then_read_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let core = Core::new(64).unwrap();
    core.block_on(async move {
        let file = direct_file(&dir, "f", 1 << 20);
        let mut buf = AlignedBuf::new(64 << 10, 4096);
        buf.extend_from_slice(&pattern(64 << 10, 7));
        let (res, _buf) = op::write_all_at(&file, buf, 0, 64 << 10, 8192, WriteFlags::DSYNC).await;
        res.unwrap();
        op::fsync(&file, SyncKind::Data).await.unwrap();
        let (res, back) =
            op::read_exact_at(&file, AlignedBuf::new(64 << 10, 4096), 0, 64 << 10, 8192).await;
        res.unwrap();
        assert_eq!(&back[..], &pattern(64 << 10, 7)[..]);
    });
}

#[test]
fn registered_pool_buffers_use_fixed_ops() {
    let dir = tempfile::tempdir().unwrap();
    let core = Core::new(64).unwrap();
    let pool = BufPool::new(PoolConfig { buf_bytes: 16 << 10, count: 4, align_bytes: 4096 });
    let registration = core.reactor().register_pool(&pool);
    // Root (CI) registers; an ordinary user under an 8 MiB memlock limit also fits 64 KiB.
    assert_eq!(registration, Registration::Registered);
    core.block_on(async move {
        let file = direct_file(&dir, "f", 1 << 20);
        let mut buf = pool.get().await;
        assert_eq!(buf.fixed_index(), Some(buf.index()));
        buf.extend_from_slice(&pattern(16 << 10, 3));
        let (res, buf) = op::write_all_at(&file, buf, 0, 16 << 10, 0, WriteFlags::default()).await;
        res.unwrap();
        drop(buf);
        let mut into = pool.get().await;
        into.clear();
        let (res, into) = op::read_exact_at(&file, into, 0, 16 << 10, 0).await;
        res.unwrap();
        assert_eq!(&into[..16 << 10], &pattern(16 << 10, 3)[..]);
    });
}

#[test]
fn read_past_end_of_file_is_an_error_not_success() {
    let dir = tempfile::tempdir().unwrap();
    let core = Core::new(64).unwrap();
    core.block_on(async move {
        let file = direct_file(&dir, "f", 8192);
        // 4096 bytes exist past offset 4096; asking for 8192 must not succeed.
        let (res, _) = op::read_exact_at(&file, AlignedBuf::new(8192, 4096), 0, 8192, 4096).await;
        let err = res.unwrap_err();
        assert!(matches!(err, Error::ZeroTransfer { remaining_bytes: 4096, .. }), "{err:?}");
    });
}

#[test]
fn misaligned_direct_write_maps_to_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    let core = Core::new(64).unwrap();
    core.block_on(async move {
        let file = direct_file(&dir, "f", 1 << 20);
        let mut buf = AlignedBuf::new(4096, 4096);
        buf.extend_from_slice(&[1; 100]);
        let (res, _) = op::write_at(&file, buf, 0, 100, 0, WriteFlags::default()).await;
        assert!(matches!(res, Err(Error::Invalid { .. })), "{res:?}");
    });
}

#[test]
fn partial_pipe_reads_are_reported_as_short() {
    let core = Core::new(64).unwrap();
    core.block_on(async move {
        let (rx, tx) = pipe();
        let data = [9u8; 10];
        // SAFETY: writes 10 bytes from a live array to a pipe we own.
        let n =
            unsafe { libc::write(std::os::fd::AsRawFd::as_raw_fd(&tx), data.as_ptr().cast(), 10) };
        assert_eq!(n, 10);
        let (res, buf) = op::read_at(&rx, Vec::with_capacity(100), 0, 100, u64::MAX).await;
        assert_eq!(res.unwrap(), 10);
        assert_eq!(buf, vec![9u8; 10]);
    });
}

/// A buffer that records when it is dropped.
struct TrackedBuf {
    inner: Vec<u8>,
    dropped: Rc<Cell<bool>>,
}

impl Drop for TrackedBuf {
    fn drop(&mut self) {
        self.dropped.set(true);
    }
}

// SAFETY: forwards to the Vec, whose heap memory does not move with the struct.
unsafe impl IoBuf for TrackedBuf {
    fn stable_ptr(&self) -> *const u8 {
        self.inner.stable_ptr()
    }
    fn bytes_init(&self) -> usize {
        self.inner.len()
    }
    fn bytes_total(&self) -> usize {
        self.inner.capacity()
    }
}

// SAFETY: forwards to the Vec.
unsafe impl IoBufMut for TrackedBuf {
    fn stable_mut_ptr(&mut self) -> *mut u8 {
        self.inner.stable_mut_ptr()
    }
    unsafe fn set_init(&mut self, len: usize) {
        // SAFETY: forwarded with the caller's guarantee.
        unsafe { self.inner.set_init(len) }
    }
}

#[test]
fn dropped_read_keeps_its_buffer_until_the_kernel_returns_it() {
    let core = Core::new(64).unwrap();
    let reactor = core.reactor().clone();
    core.block_on(async move {
        let (rx, _tx) = pipe();
        let dropped = Rc::new(Cell::new(false));
        let buf = TrackedBuf { inner: Vec::with_capacity(4096), dropped: dropped.clone() };
        let mut read = Box::pin(op::read_at(&rx, buf, 0, 4096, u64::MAX));
        // Poll once: the read is now on the ring, waiting for data that never comes.
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        assert!(read.as_mut().poll(&mut cx).is_pending());
        assert_eq!(reactor.in_flight(), 1);
        drop(read);
        assert!(!dropped.get(), "buffer freed while the kernel may still write into it");
        assert_eq!(reactor.in_flight(), 1, "the slot keeps the op until its completion");
        // The cancel completes the read with ECANCELED; only then is the buffer released.
        let deadline = Instant::now() + Duration::from_secs(5);
        while reactor.in_flight() > 0 {
            assert!(Instant::now() < deadline, "cancelled read never completed");
            sleep(Duration::from_millis(1)).await.unwrap();
        }
        assert!(dropped.get(), "buffer released after the completion was reaped");
    });
}

use std::future::Future;

#[test]
fn dropped_disk_write_still_writes_from_valid_memory() {
    let dir = tempfile::tempdir().unwrap();
    let core = Core::new(64).unwrap();
    let reactor = core.reactor().clone();
    core.block_on(async move {
        let file = direct_file(&dir, "f", 4 << 20);
        let mut buf = AlignedBuf::new(1 << 20, 4096);
        buf.extend_from_slice(&pattern(1 << 20, 42));
        let pending = op::submit_write(&file, buf, 0, 1 << 20, 0, WriteFlags::default()).unwrap();
        drop(pending);
        while reactor.in_flight() > 0 {
            sleep(Duration::from_millis(1)).await.unwrap();
        }
        // A disk write cannot be cancelled once issued; it must have written the right bytes
        // (the buffer stayed alive), or nothing at all if the cancel won.
        let (res, back) =
            op::read_exact_at(&file, AlignedBuf::new(1 << 20, 4096), 0, 1 << 20, 0).await;
        res.unwrap();
        let written = back[..] == pattern(1 << 20, 42)[..];
        let untouched = back.iter().all(|&b| b == 0);
        assert!(written || untouched, "write from freed memory: neither the data nor zeroes");
    });
}

#[test]
fn sleep_waits_and_timeout_cancels_a_stuck_op() {
    let core = Core::new(64).unwrap();
    let reactor = core.reactor().clone();
    core.block_on(async move {
        let start = Instant::now();
        sleep(Duration::from_millis(30)).await.unwrap();
        assert!(start.elapsed() >= Duration::from_millis(30));

        let (rx, _tx) = pipe();
        let start = Instant::now();
        let res = timeout(
            Duration::from_millis(20),
            op::read_at(&rx, Vec::with_capacity(16), 0, 16, u64::MAX),
        )
        .await;
        assert_eq!(res.unwrap_err(), Elapsed(Duration::from_millis(20)));
        assert!(start.elapsed() < Duration::from_secs(2));
        let deadline = Instant::now() + Duration::from_secs(5);
        while reactor.in_flight() > 0 {
            assert!(Instant::now() < deadline, "timed-out read was never reaped");
            sleep(Duration::from_millis(1)).await.unwrap();
        }
    });
}

#[test]
fn core_drop_with_ops_in_flight_waits_for_the_kernel() {
    let dropped = Rc::new(Cell::new(false));
    {
        let core = Core::new(64).unwrap();
        let flag = dropped.clone();
        let (rx, tx) = pipe();
        core.block_on(async move {
            let buf = TrackedBuf { inner: Vec::with_capacity(64), dropped: flag };
            ioengine::spawn(async move {
                let _ = op::read_at(&rx, buf, 0, 64, u64::MAX).await;
            })
            .detach();
            ioengine::yield_now().await;
        });
        assert!(!dropped.get());
        // The write end stays open: the read can only end by being cancelled.
        drop(core);
        drop(tx);
    }
    assert!(dropped.get(), "core shutdown reaps every op and frees its buffer");
}

#[test]
fn tcp_echo_on_loopback() {
    let core = Core::new(64).unwrap();
    core.block_on(async move {
        let listener =
            ioengine::net::TcpListener::bind("127.0.0.1:0".parse().unwrap(), false).unwrap();
        let addr = listener.local_addr();
        let server = ioengine::spawn(async move {
            let stream = listener.accept().await.unwrap();
            let (n, buf) = stream.recv(Vec::with_capacity(64), 0).await;
            assert_eq!(n.unwrap(), 5);
            let (res, _) = stream.send_all(buf).await;
            res.unwrap();
        });
        let client = ioengine::net::TcpStream::connect(addr).await.unwrap();
        let (res, _) = client.send_all(b"hello".to_vec()).await;
        res.unwrap();
        let (n, buf) = client.recv(Vec::with_capacity(64), 0).await;
        assert_eq!(n.unwrap(), 5);
        assert_eq!(&buf, b"hello");
        server.await;
        let refused = ioengine::net::TcpStream::connect(addr).await;
        assert!(matches!(refused, Err(Error::Network { .. })), "{refused:?}");
    });
}
