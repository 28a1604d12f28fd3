//! TCP on the reactor: listeners (with SO_REUSEPORT so every core accepts on one port) and
//! streams whose receive and send are io_uring operations.

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};

use crate::buf::{IoBuf, IoBufMut};
use crate::error::{Error, OpKind, Result};
use crate::op::{self, SharedFd};
use crate::sys;

/// Listen backlog.
pub const LISTEN_BACKLOG: i32 = 1024;

/// A listening TCP socket.
#[derive(Debug, Clone)]
pub struct TcpListener {
    fd: SharedFd,
    local_addr: SocketAddr,
}

impl TcpListener {
    /// Binds and listens. With `reuse_port`, several listeners (one per core) share the port
    /// and the kernel spreads connections among them.
    pub fn bind(addr: SocketAddr, reuse_port: bool) -> Result<TcpListener> {
        let fd = sys::tcp_socket(addr).map_err(|e| Error::from_io(OpKind::Accept, 0, &e))?;
        sys::set_reuse(&fd, reuse_port).map_err(|e| Error::from_io(OpKind::Accept, 0, &e))?;
        sys::bind_listen(&fd, addr, LISTEN_BACKLOG)
            .map_err(|e| Error::from_io(OpKind::Accept, 0, &e))?;
        let local_addr = sys::local_addr(&fd).map_err(|e| Error::from_io(OpKind::Accept, 0, &e))?;
        Ok(TcpListener { fd: SharedFd::new(fd), local_addr })
    }

    /// The bound address (with the port the kernel chose for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Accepts one connection.
    pub async fn accept(&self) -> Result<TcpStream> {
        let fd = op::accept(&self.fd).await?;
        let peer = sys::peer_addr(&fd).ok();
        // Small frames go out at once; batching is the protocol's job.
        sys::set_nodelay(&fd).map_err(|e| Error::from_io(OpKind::Accept, 0, &e))?;
        Ok(TcpStream { fd: SharedFd::new(fd), peer })
    }
}

/// A connected TCP stream.
#[derive(Debug, Clone)]
pub struct TcpStream {
    fd: SharedFd,
    peer: Option<SocketAddr>,
}

impl TcpStream {
    /// Connects to `addr`.
    pub async fn connect(addr: SocketAddr) -> Result<TcpStream> {
        let fd = sys::tcp_socket(addr).map_err(|e| Error::from_io(OpKind::Connect, 0, &e))?;
        let fd = SharedFd::new(fd);
        op::connect(&fd, addr).await?;
        sys::set_nodelay(&fd).map_err(|e| Error::from_io(OpKind::Connect, 0, &e))?;
        Ok(TcpStream { fd, peer: Some(addr) })
    }

    /// The peer's address, when known.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.peer
    }

    /// Receives up to `buf.bytes_total() - buf_offset` bytes at `buf_offset`; 0 means closed.
    pub async fn recv<B: IoBufMut + Unpin>(&self, buf: B, buf_offset: usize) -> (Result<usize>, B) {
        let len = buf.bytes_total().saturating_sub(buf_offset);
        op::recv(&self.fd, buf, buf_offset, len).await
    }

    /// Receives up to `len` bytes at `buf_offset` (never more, so bytes of a following frame
    /// stay in the socket); 0 means closed.
    pub async fn recv_range<B: IoBufMut + Unpin>(
        &self,
        buf: B,
        buf_offset: usize,
        len: usize,
    ) -> (Result<usize>, B) {
        op::recv(&self.fd, buf, buf_offset, len).await
    }

    /// Sends all initialised bytes of `buf`.
    pub async fn send_all<B: IoBuf + Unpin>(&self, buf: B) -> (Result<()>, B) {
        let len = buf.bytes_init();
        op::send_all(&self.fd, buf, 0, len).await
    }

    /// Sends all of `buf[start..start + len]` (which must be initialised bytes).
    pub async fn send_range<B: IoBuf + Unpin>(
        &self,
        buf: B,
        start: usize,
        len: usize,
    ) -> (Result<()>, B) {
        op::send_all(&self.fd, buf, start, len).await
    }

    /// Shuts down both directions (the peer sees end of stream).
    pub fn shutdown(&self) {
        // SAFETY: shutdown on an fd this stream owns; failure (already closed) is harmless.
        unsafe { libc::shutdown(self.fd.as_raw_fd(), libc::SHUT_RDWR) };
    }
}

/// Wraps an already connected socket fd.
impl From<OwnedFd> for TcpStream {
    fn from(fd: OwnedFd) -> TcpStream {
        let peer = sys::peer_addr(&fd).ok();
        TcpStream { fd: SharedFd::new(fd), peer }
    }
}
