//! The first transport backend: glommio's readiness-based TCP streams behind the owned-buffer
//! seam. Reads try `recv` first and arm an io_uring POLL_ADD only when it would block.
//!
//! Accepting bypasses glommio's fast path, which toggles O_NONBLOCK on the shared listening
//! socket with three `fcntl` calls per accept and leaves accepted descriptors without
//! FD_CLOEXEC: here one `accept4(SOCK_CLOEXEC | SOCK_NONBLOCK)` on the non-blocking listener
//! returns the stream and its peer address together, and only an empty backlog falls back to
//! glommio's io_uring accept.

use std::io;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::time::Duration;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};

use super::buf::IoBuf;
use super::{Backend, Listener, StableBuf, Stream};

/// The glommio-streams backend.
#[derive(Debug, Clone, Copy, Default)]
pub struct GlommioBackend;

/// A TCP stream driven by glommio.
pub struct GlommioStream {
    inner: TcpStream,
    peer: Option<SocketAddr>,
}

impl std::fmt::Debug for GlommioStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GlommioStream")
            .field("fd", &self.inner.as_raw_fd())
            .field("peer", &self.peer)
            .finish()
    }
}

impl AsRawFd for GlommioStream {
    fn as_raw_fd(&self) -> RawFd {
        self.inner.as_raw_fd()
    }
}

impl Stream for GlommioStream {
    async fn read(&mut self) -> io::Result<Option<IoBuf>> {
        // Built before the await: if this future is dropped the buffer goes back to the pool.
        let mut buf = IoBuf::for_read();
        let n = self.inner.read(buf.zeroed_spare()).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.truncate(n);
        Ok(Some(buf))
    }

    async fn write_all<B: StableBuf>(&mut self, buf: B) -> (io::Result<()>, B) {
        let res = self.inner.write_all(buf.bytes()).await;
        (res, buf)
    }

    async fn shutdown_write(&mut self) -> io::Result<()> {
        self.inner
            .shutdown(std::net::Shutdown::Write)
            .await
            .map_err(io::Error::from)
    }

    fn peer_addr(&self) -> Option<SocketAddr> {
        self.peer
    }

    fn is_idle_and_open(&self) -> bool {
        peek_idle(self.inner.as_raw_fd())
    }
}

/// True when `fd` has nothing to read and is not closed: `recv(MSG_PEEK | MSG_DONTWAIT)` would
/// block.
pub(crate) fn peek_idle(fd: RawFd) -> bool {
    let mut byte = 0u8;
    // SAFETY: one writable byte on the stack; the fd is a socket owned by the caller.
    let n = unsafe {
        libc::recv(
            fd,
            (&mut byte as *mut u8).cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::WouldBlock
}

/// A listening socket driven by glommio.
pub struct GlommioListener {
    fd: RawFd,
    inner: TcpListener,
}

impl Listener for GlommioListener {
    type Stream = GlommioStream;

    async fn accept(&self) -> io::Result<(GlommioStream, SocketAddr)> {
        match accept4(self.fd) {
            Ok((fd, peer)) => return Ok((stream_from_fd(fd, Some(peer))?, peer)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
        // Nothing queued: let io_uring wait for the next connection.
        let stream = self.inner.accept().await.map_err(io::Error::from)?;
        set_cloexec(stream.as_raw_fd())?;
        stream.set_nodelay(true).map_err(io::Error::from)?;
        let peer = stream.peer_addr().map_err(io::Error::from)?;
        Ok((
            GlommioStream {
                inner: stream,
                peer: Some(peer),
            },
            peer,
        ))
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr().map_err(io::Error::from)
    }
}

fn stream_from_fd(fd: RawFd, peer: Option<SocketAddr>) -> io::Result<GlommioStream> {
    // SAFETY: `fd` is a freshly accepted socket we own exclusively; glommio takes it over.
    let inner = unsafe { TcpStream::from_raw_fd(fd) };
    inner.set_nodelay(true).map_err(io::Error::from)?;
    Ok(GlommioStream { inner, peer })
}

fn accept4(listener: RawFd) -> io::Result<(RawFd, SocketAddr)> {
    // SAFETY: zeroed sockaddr_storage is a valid out-parameter of the right size.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: storage and len are valid for writes; listener is a socket fd.
    let fd = unsafe {
        libc::accept4(
            listener,
            (&mut storage as *mut libc::sockaddr_storage).cast(),
            &mut len,
            libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel filled `len` bytes of a sockaddr_storage.
    let addr = unsafe { socket2::SockAddr::new(storage, len) };
    match addr.as_socket() {
        Some(peer) => Ok((fd, peer)),
        None => {
            // SAFETY: we own fd and close it exactly once.
            unsafe { libc::close(fd) };
            Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "accepted a non-IP socket",
            ))
        }
    }
}

fn set_cloexec(fd: RawFd) -> io::Result<()> {
    // SAFETY: plain fcntl on an fd we own.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

impl Backend for GlommioBackend {
    type Stream = GlommioStream;
    type Listener = GlommioListener;
    const NAME: &'static str = "glommio";

    fn adopt_listener(fd: OwnedFd) -> io::Result<GlommioListener> {
        let std_listener = StdListener::from(fd);
        std_listener.set_nonblocking(true)?;
        let raw = std_listener.into_raw_fd();
        // SAFETY: `raw` is a listening TCP socket whose ownership moves into glommio; we keep the
        // number only to call accept4 on it while `inner` lives.
        let inner = unsafe { TcpListener::from_raw_fd(raw) };
        Ok(GlommioListener { fd: raw, inner })
    }

    async fn connect(addr: SocketAddr, timeout: Duration) -> io::Result<GlommioStream> {
        let timeout = timeout.max(Duration::from_millis(1));
        let stream = TcpStream::connect_timeout(addr, timeout)
            .await
            .map_err(io::Error::from)?;
        stream.set_nodelay(true).map_err(io::Error::from)?;
        Ok(GlommioStream {
            inner: stream,
            peer: Some(addr),
        })
    }
}
