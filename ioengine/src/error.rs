//! The one error type of `ioengine`, and the one place where errno values become named errors.
//!
//! Every failed system call or io_uring completion passes through [`Error::from_errno`], so a
//! reader can see in one screen which errno means what to shingle. An errno that has no named
//! meaning here becomes [`Error::Unexpected`], never a panic.

use std::fmt;

use crate::device::{ZoneCondition, ZoneIndex};

/// The operation that failed, named for error messages and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    Read,
    Write,
    Fsync,
    Accept,
    Connect,
    Recv,
    Send,
    Timeout,
    Cancel,
    Open,
    Ioctl,
    Fallocate,
    RingSetup,
    RegisterBuffers,
    EventFd,
    Affinity,
    Sysfs,
}

impl fmt::Display for OpKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            OpKind::Read => "read",
            OpKind::Write => "write",
            OpKind::Fsync => "fsync",
            OpKind::Accept => "accept",
            OpKind::Connect => "connect",
            OpKind::Recv => "recv",
            OpKind::Send => "send",
            OpKind::Timeout => "timeout",
            OpKind::Cancel => "cancel",
            OpKind::Open => "open",
            OpKind::Ioctl => "ioctl",
            OpKind::Fallocate => "fallocate",
            OpKind::RingSetup => "io_uring_setup",
            OpKind::RegisterBuffers => "io_uring_register(buffers)",
            OpKind::EventFd => "eventfd",
            OpKind::Affinity => "sched_setaffinity",
            OpKind::Sysfs => "sysfs",
        };
        f.write_str(name)
    }
}

/// Everything that can go wrong in `ioengine`.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// `kernel.io_uring_disabled` forbids io_uring for this process.
    #[error(
        "io_uring is disabled on this host (sysctl kernel.io_uring_disabled = {value}); \
         fix: run `sysctl -w kernel.io_uring_disabled=0` (or 1 and add the service user to the \
         group named in kernel.io_uring_group)"
    )]
    UringDisabled { value: u32 },

    /// io_uring_setup failed with EPERM or ENOSYS while the sysctl allows it: a seccomp filter,
    /// a container runtime or an old kernel.
    #[error(
        "io_uring_setup is not permitted here ({errno_name}): a seccomp filter or container \
         policy blocks io_uring, or the kernel lacks it; fix: allow the io_uring_setup, \
         io_uring_enter and io_uring_register system calls (systemd: SystemCallFilter=@aio; \
         docker/podman: a seccomp profile that allows them) and run Linux 6.1 or newer"
    )]
    UringBlocked { errno_name: &'static str },

    /// The ring or the registered buffers do not fit under RLIMIT_MEMLOCK.
    #[error(
        "cannot lock {needed_bytes} bytes for io_uring {what}: RLIMIT_MEMLOCK is {limit_bytes} \
         bytes; fix: raise the limit (systemd: LimitMEMLOCK=, shell: ulimit -l) or lower the \
         ring size / buffer pool in the config"
    )]
    MemlockTooLow { what: &'static str, needed_bytes: u64, limit_bytes: u64 },

    /// A media or transport error (EIO, ENODATA, EREMOTEIO, EILSEQ) reported by the device.
    #[error("{op} failed with an I/O error at byte offset {offset}: {errno_name}")]
    Media { op: OpKind, offset: u64, errno_name: &'static str },

    /// The device or file system has no space (ENOSPC, EDQUOT).
    #[error("{op}: no space left on the device or file system")]
    NoSpace { op: OpKind },

    /// A read or write transferred nothing where bytes were expected (end of file, or a device
    /// that stopped accepting data). Short transfers are otherwise continued.
    #[error("{op} at byte offset {offset} transferred 0 of {remaining_bytes} remaining bytes")]
    ZeroTransfer { op: OpKind, offset: u64, remaining_bytes: usize },

    /// A transfer that moved fewer bytes than asked where the rest cannot be continued (a
    /// piece of a split zoned write with later pieces already queued).
    #[error("{op} at byte offset {offset} moved {done_bytes} of {expected_bytes} bytes")]
    ShortTransfer { op: OpKind, offset: u64, done_bytes: usize, expected_bytes: usize },

    /// An argument the kernel refused as invalid (EINVAL, EOPNOTSUPP on an op). Usually a
    /// misaligned O_DIRECT buffer or offset, or a feature the kernel lacks.
    #[error("{op} was refused by the kernel as invalid ({errno_name})")]
    Invalid { op: OpKind, errno_name: &'static str },

    /// The operation is not supported by this device or kernel.
    #[error("{op} is not supported by this device or kernel")]
    Unsupported { op: OpKind },

    /// Permission denied (EACCES, EPERM) outside io_uring setup.
    #[error("{op}: permission denied ({errno_name})")]
    PermissionDenied { op: OpKind, errno_name: &'static str },

    /// The peer closed or reset the connection.
    #[error("{op}: connection closed by the peer ({errno_name})")]
    ConnectionClosed { op: OpKind, errno_name: &'static str },

    /// Connection refused, unreachable, or another network-level refusal.
    #[error("{op}: {errno_name}")]
    Network { op: OpKind, errno_name: &'static str },

    /// The operation ran past its deadline.
    #[error("{op} timed out")]
    TimedOut { op: OpKind },

    /// The operation was cancelled (its future was dropped, or the reactor shut down).
    #[error("{op} was cancelled")]
    Cancelled { op: OpKind },

    /// A file or device that does not exist.
    #[error("{op}: no such file or device")]
    NotFound { op: OpKind },

    /// A buffer, offset or length that is not aligned to the device's logical block size.
    #[error("{what} {value} is not a multiple of the logical block size {align_bytes}")]
    Unaligned { what: &'static str, value: u64, align_bytes: u32 },

    /// A byte range outside the device or outside a zone's capacity.
    #[error("byte range {offset}..{end} is outside {what} (limit {limit})")]
    OutOfRange { what: &'static str, offset: u64, end: u64, limit: u64 },

    /// A write to a sequential zone that does not start at the zone's write pointer.
    #[error(
        "write at byte offset {offset} in zone {zone} is not at the write pointer {write_pointer}"
    )]
    NotAtWritePointer { zone: ZoneIndex, offset: u64, write_pointer: u64 },

    /// A write to a zone that is full, or that would cross its capacity.
    #[error("zone {zone} is full (capacity ends at byte {capacity_end})")]
    ZoneFull { zone: ZoneIndex, capacity_end: u64 },

    /// A zone in a condition that does not accept the operation (read-only, offline, ...).
    #[error("zone {zone} is {condition:?} and does not accept {op}")]
    ZoneCondition { zone: ZoneIndex, condition: ZoneCondition, op: &'static str },

    /// Opening one more zone would exceed the device's open-zone limit.
    #[error("zone {zone} cannot be opened: {open} zones are open, the device allows {max}")]
    TooManyOpenZones { zone: ZoneIndex, open: u32, max: u32 },

    /// Activating one more zone would exceed the device's active-zone limit.
    #[error("zone {zone} cannot be activated: {active} zones are active, the device allows {max}")]
    TooManyActiveZones { zone: ZoneIndex, active: u32, max: u32 },

    /// The device reported something shingle cannot use (bad sysfs value, zone layout it does
    /// not support). Carries what was found.
    #[error("unsupported device {path}: {reason}")]
    BadDevice { path: String, reason: String },

    /// Another process (or another open in this one) has the device: a block device opened
    /// exclusively or mounted, or a file whose lock is held. It is never shared.
    #[error("{path} is in use: {how}; refusing to share it")]
    DeviceInUse { path: String, how: &'static str },

    /// The reactor is not running on this thread (an op was created outside a core).
    #[error("no ioengine reactor runs on this thread")]
    NoReactor,

    /// The target core has stopped and cannot take messages.
    #[error("core {core} has stopped")]
    CoreStopped { core: usize },

    /// Any errno not named above: kept with the op so the log says what happened.
    #[error("{op} failed with unexpected errno {errno} ({errno_name})")]
    Unexpected { op: OpKind, errno: i32, errno_name: &'static str },
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Maps an errno (positive) from `op` at `offset` to a named error. The one mapping.
    pub fn from_errno(op: OpKind, offset: u64, errno: i32) -> Error {
        let errno_name = errno_name(errno);
        match errno {
            libc::EIO | libc::ENODATA | libc::EREMOTEIO | libc::EILSEQ | libc::EBADMSG => {
                Error::Media { op, offset, errno_name }
            }
            libc::ENOSPC | libc::EDQUOT => Error::NoSpace { op },
            libc::EINVAL | libc::EFAULT | libc::EBADF | libc::EOVERFLOW | libc::EFBIG => {
                Error::Invalid { op, errno_name }
            }
            libc::EOPNOTSUPP | libc::ENOTTY | libc::ENOSYS => Error::Unsupported { op },
            libc::EACCES | libc::EPERM | libc::EROFS => Error::PermissionDenied { op, errno_name },
            libc::ECONNRESET | libc::EPIPE | libc::ESHUTDOWN | libc::ECONNABORTED => {
                Error::ConnectionClosed { op, errno_name }
            }
            libc::ECONNREFUSED
            | libc::ENETUNREACH
            | libc::EHOSTUNREACH
            | libc::EADDRINUSE
            | libc::EADDRNOTAVAIL
            | libc::ENOTCONN => Error::Network { op, errno_name },
            libc::ETIME | libc::ETIMEDOUT => Error::TimedOut { op },
            libc::ECANCELED | libc::EINTR => Error::Cancelled { op },
            libc::ENOENT | libc::ENXIO | libc::ENODEV => Error::NotFound { op },
            _ => Error::Unexpected { op, errno, errno_name },
        }
    }

    /// Maps a `std::io::Error` from a blocking call.
    pub fn from_io(op: OpKind, offset: u64, err: &std::io::Error) -> Error {
        match err.raw_os_error() {
            Some(errno) => Error::from_errno(op, offset, errno),
            None => Error::Unexpected { op, errno: 0, errno_name: "non-OS error" },
        }
    }

    /// True for errors that say the medium failed (as opposed to a bad request).
    pub fn is_media(&self) -> bool {
        matches!(self, Error::Media { .. })
    }
}

/// The symbolic name of an errno, for messages. Unknown values get "errno".
pub fn errno_name(errno: i32) -> &'static str {
    match errno {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::EINTR => "EINTR",
        libc::EIO => "EIO",
        libc::ENXIO => "ENXIO",
        libc::EBADF => "EBADF",
        libc::EAGAIN => "EAGAIN",
        libc::ENOMEM => "ENOMEM",
        libc::EACCES => "EACCES",
        libc::EFAULT => "EFAULT",
        libc::EBUSY => "EBUSY",
        libc::EEXIST => "EEXIST",
        libc::ENODEV => "ENODEV",
        libc::EINVAL => "EINVAL",
        libc::ENOTTY => "ENOTTY",
        libc::EFBIG => "EFBIG",
        libc::ENOSPC => "ENOSPC",
        libc::EROFS => "EROFS",
        libc::EPIPE => "EPIPE",
        libc::ENOSYS => "ENOSYS",
        libc::ENODATA => "ENODATA",
        libc::ETIME => "ETIME",
        libc::EOVERFLOW => "EOVERFLOW",
        libc::EBADMSG => "EBADMSG",
        libc::EILSEQ => "EILSEQ",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::EADDRINUSE => "EADDRINUSE",
        libc::EADDRNOTAVAIL => "EADDRNOTAVAIL",
        libc::ENETUNREACH => "ENETUNREACH",
        libc::ECONNABORTED => "ECONNABORTED",
        libc::ECONNRESET => "ECONNRESET",
        libc::ENOTCONN => "ENOTCONN",
        libc::ESHUTDOWN => "ESHUTDOWN",
        libc::ETIMEDOUT => "ETIMEDOUT",
        libc::ECONNREFUSED => "ECONNREFUSED",
        libc::EHOSTUNREACH => "EHOSTUNREACH",
        libc::EDQUOT => "EDQUOT",
        libc::ECANCELED => "ECANCELED",
        libc::EREMOTEIO => "EREMOTEIO",
        _ => "errno",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_mapping_names_the_common_cases() {
        assert!(matches!(Error::from_errno(OpKind::Write, 4096, libc::EIO), Error::Media { .. }));
        assert!(matches!(Error::from_errno(OpKind::Write, 0, libc::ENOSPC), Error::NoSpace { .. }));
        assert!(matches!(
            Error::from_errno(OpKind::Timeout, 0, libc::ETIME),
            Error::TimedOut { .. }
        ));
        let unknown = Error::from_errno(OpKind::Read, 0, 4095);
        assert!(matches!(unknown, Error::Unexpected { errno: 4095, .. }), "{unknown:?}");
    }

    #[test]
    fn media_error_message_carries_offset() {
        let err = Error::from_errno(OpKind::Read, 123_456, libc::EIO);
        assert!(err.to_string().contains("123456"), "{err}");
        assert!(err.is_media());
    }
}
