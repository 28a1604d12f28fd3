//! Thin wrappers over the system calls `ioengine` makes outside io_uring: each returns
//! `std::io::Result` through the one [`syscall!`] helper, and callers map errno with
//! `Error::from_io`.

pub mod blkdev;
pub mod sysfs;

/// Calls a libc function and turns `-1` into `std::io::Error::last_os_error()`.
macro_rules! syscall {
    ($fn:ident ( $($arg:expr),* $(,)? )) => {{
        // SAFETY: every use passes arguments that satisfy the libc function's contract;
        // each call site states which pointers it passes and why they are valid.
        let res = unsafe { libc::$fn($($arg),*) };
        if res == -1 { Err(std::io::Error::last_os_error()) } else { Ok(res) }
    }};
}
pub(crate) use syscall;

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// The soft RLIMIT_MEMLOCK in bytes (`u64::MAX` when unlimited).
pub fn memlock_limit_bytes() -> io::Result<u64> {
    let mut rlim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `rlim` is a valid, writable rlimit struct.
    syscall!(getrlimit(libc::RLIMIT_MEMLOCK, &mut rlim))?;
    Ok(if rlim.rlim_cur == libc::RLIM_INFINITY { u64::MAX } else { rlim.rlim_cur })
}

/// A non-blocking, close-on-exec eventfd with a zero count.
pub fn eventfd() -> io::Result<OwnedFd> {
    let fd = syscall!(eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK))?;
    // SAFETY: eventfd returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Adds one to an eventfd's count, waking a reader. EAGAIN (count saturated) means a wake-up
/// is already pending, which is all the caller wants.
pub fn eventfd_signal(fd: &impl AsRawFd) -> io::Result<()> {
    let one: u64 = 1;
    // SAFETY: writes 8 bytes from a live u64 to the fd.
    match syscall!(write(fd.as_raw_fd(), (&raw const one).cast(), 8)) {
        Ok(_) => Ok(()),
        Err(err) if err.raw_os_error() == Some(libc::EAGAIN) => Ok(()),
        Err(err) => Err(err),
    }
}

/// Pins the calling thread to one CPU.
pub fn pin_current_thread(cpu: usize) -> io::Result<()> {
    if cpu >= libc::CPU_SETSIZE as usize {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    // SAFETY: cpu_set_t is plain data; zeroed is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: cpu < CPU_SETSIZE, checked above.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: `set` is a valid cpu_set_t of the size passed; 0 means the calling thread.
    syscall!(sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set))?;
    Ok(())
}

/// The CPUs this process may run on, in ascending order.
pub fn allowed_cpus() -> io::Result<Vec<usize>> {
    // SAFETY: cpu_set_t is plain data; zeroed is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid, writable cpu_set_t of the size passed.
    syscall!(sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set))?;
    // SAFETY: CPU_ISSET reads the initialised set for an index below CPU_SETSIZE.
    Ok((0..libc::CPU_SETSIZE as usize)
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .collect())
}

/// fallocate(2) on a regular file.
pub fn fallocate(fd: &impl AsRawFd, mode: i32, offset: u64, len: u64) -> io::Result<()> {
    // SAFETY: plain integer arguments on an fd the caller owns.
    syscall!(fallocate(fd.as_raw_fd(), mode, offset as libc::off_t, len as libc::off_t))?;
    Ok(())
}

/// lseek(2) with SEEK_DATA: the first offset at or after `offset` that holds data, or None
/// when only holes follow (ENXIO).
pub fn seek_data(fd: &impl AsRawFd, offset: u64) -> io::Result<Option<u64>> {
    // SAFETY: plain integer arguments on an fd the caller owns.
    let at = unsafe { libc::lseek(fd.as_raw_fd(), offset as libc::off_t, libc::SEEK_DATA) };
    if at >= 0 {
        return Ok(Some(at as u64));
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::ENXIO) { Ok(None) } else { Err(err) }
}

/// fstat(2).
pub fn fstat(fd: &impl AsRawFd) -> io::Result<libc::stat> {
    // SAFETY: stat is plain data; fstat fills it.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is a valid, writable stat struct.
    syscall!(fstat(fd.as_raw_fd(), &mut st))?;
    Ok(st)
}

/// A sockaddr for `addr` and its length.
pub fn socket_addr(addr: std::net::SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain data; zeroed is a valid (unspecified) address.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        std::net::SocketAddr::V4(v4) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: v4.port().to_be(),
                sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(v4.ip().octets()) },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            unsafe { std::ptr::write((&raw mut storage).cast(), sin) };
            std::mem::size_of::<libc::sockaddr_in>()
        }
        std::net::SocketAddr::V6(v6) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: v6.port().to_be(),
                sin6_flowinfo: v6.flowinfo(),
                sin6_addr: libc::in6_addr { s6_addr: v6.ip().octets() },
                sin6_scope_id: v6.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
            unsafe { std::ptr::write((&raw mut storage).cast(), sin6) };
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

fn to_socket_addr(storage: &libc::sockaddr_storage) -> io::Result<std::net::SocketAddr> {
    match i32::from(storage.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let sin: libc::sockaddr_in = unsafe { std::ptr::read((&raw const *storage).cast()) };
            let ip = std::net::Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes());
            Ok(std::net::SocketAddr::from((ip, u16::from_be(sin.sin_port))))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let sin6: libc::sockaddr_in6 = unsafe { std::ptr::read((&raw const *storage).cast()) };
            let ip = std::net::Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            Ok(std::net::SocketAddr::from((ip, u16::from_be(sin6.sin6_port))))
        }
        _ => Err(io::Error::from_raw_os_error(libc::EAFNOSUPPORT)),
    }
}

/// A new close-on-exec TCP socket for `addr`'s family.
pub fn tcp_socket(addr: std::net::SocketAddr) -> io::Result<OwnedFd> {
    let family = if addr.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 };
    let fd = syscall!(socket(family, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0))?;
    // SAFETY: socket returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn set_opt(fd: &impl AsRawFd, level: i32, name: i32, value: i32) -> io::Result<()> {
    // SAFETY: passes a pointer to a live i32 and its size.
    syscall!(setsockopt(
        fd.as_raw_fd(),
        level,
        name,
        (&raw const value).cast(),
        std::mem::size_of::<i32>() as libc::socklen_t
    ))?;
    Ok(())
}

/// SO_REUSEADDR, and SO_REUSEPORT when asked.
pub fn set_reuse(fd: &impl AsRawFd, reuse_port: bool) -> io::Result<()> {
    set_opt(fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)?;
    if reuse_port {
        set_opt(fd, libc::SOL_SOCKET, libc::SO_REUSEPORT, 1)?;
    }
    Ok(())
}

/// TCP_NODELAY.
pub fn set_nodelay(fd: &impl AsRawFd) -> io::Result<()> {
    set_opt(fd, libc::IPPROTO_TCP, libc::TCP_NODELAY, 1)
}

/// bind(2) then listen(2).
pub fn bind_listen(fd: &impl AsRawFd, addr: std::net::SocketAddr, backlog: i32) -> io::Result<()> {
    let (storage, len) = socket_addr(addr);
    // SAFETY: passes a live sockaddr_storage and the length of the address inside it.
    syscall!(bind(fd.as_raw_fd(), (&raw const storage).cast(), len))?;
    // SAFETY: plain integer arguments.
    syscall!(listen(fd.as_raw_fd(), backlog))?;
    Ok(())
}

/// getsockname(2).
pub fn local_addr(fd: &impl AsRawFd) -> io::Result<std::net::SocketAddr> {
    // SAFETY: sockaddr_storage is plain data.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: passes a writable storage and its size.
    syscall!(getsockname(fd.as_raw_fd(), (&raw mut storage).cast(), &mut len))?;
    to_socket_addr(&storage)
}

/// getpeername(2).
pub fn peer_addr(fd: &impl AsRawFd) -> io::Result<std::net::SocketAddr> {
    // SAFETY: sockaddr_storage is plain data.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: passes a writable storage and its size.
    syscall!(getpeername(fd.as_raw_fd(), (&raw mut storage).cast(), &mut len))?;
    to_socket_addr(&storage)
}

/// Signals that ask the daemon to stop.
pub const TERMINATION_SIGNALS: [i32; 2] = [libc::SIGINT, libc::SIGTERM];

fn sigset(signals: &[i32]) -> io::Result<libc::sigset_t> {
    // SAFETY: sigset_t is plain data; sigemptyset initialises it.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid sigset_t.
    syscall!(sigemptyset(&mut set))?;
    for &signal in signals {
        // SAFETY: `set` is a valid, initialised sigset_t.
        syscall!(sigaddset(&mut set, signal))?;
    }
    Ok(set)
}

/// Blocks `signals` in the calling thread (and every thread it starts afterwards), so they
/// can be taken synchronously with [`wait_for_signal`] instead of interrupting a core.
pub fn block_signals(signals: &[i32]) -> io::Result<()> {
    let set = sigset(signals)?;
    // SAFETY: `set` is initialised; the old mask is not asked for.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    Ok(())
}

/// Waits until one of `signals` (blocked beforehand) arrives; returns its number.
pub fn wait_for_signal(signals: &[i32]) -> io::Result<i32> {
    let set = sigset(signals)?;
    loop {
        // SAFETY: `set` is initialised; no siginfo is asked for.
        match syscall!(sigwaitinfo(&set, std::ptr::null_mut())) {
            Ok(signal) => return Ok(signal),
            Err(err) if err.raw_os_error() == Some(libc::EINTR) => continue,
            Err(err) => return Err(err),
        }
    }
}

/// madvise(MADV_HUGEPAGE) on `len` bytes at `ptr` (2 MiB aligned): ask for transparent huge
/// pages. EINVAL (no THP in this kernel) is not an error worth reporting.
pub fn advise_huge_pages(ptr: *mut u8, len: usize) -> io::Result<()> {
    // SAFETY: madvise only changes paging advice for a range the caller owns; it reads and
    // writes no memory through the pointer.
    match syscall!(madvise(ptr.cast(), len, libc::MADV_HUGEPAGE)) {
        Ok(_) => Ok(()),
        Err(err) if err.raw_os_error() == Some(libc::EINVAL) => Ok(()),
        Err(err) => Err(err),
    }
}
