//! The transport seam: every socket byte the proxy, the origin and the load generator move goes
//! through the owned-buffer traits here, shaped for completion I/O.
//!
//! A read returns a buffer the transport chose ([`IoBuf`], from a per-core pool today and a
//! provided-buffer ring later), so a connection that is waiting holds a buffer only while the
//! backend needs one. A write takes ownership of its buffer and hands it back with the result,
//! which is what a completion backend needs: the kernel may touch the memory until the
//! completion arrives, whatever the caller does meanwhile. `docs/why-owned-buffers.md` explains
//! the choice.

mod buf;
pub mod glommio;
pub mod probe;
pub mod uring;

use std::io;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::time::Duration;

pub use buf::{pool_stats, IoBuf, PoolStats, READ_BUF_SIZE};

/// A buffer whose bytes stay at one address for as long as it is owned, whoever holds it.
///
/// # Safety
/// Implementors promise that `as_ptr()` and `len()` of the slice returned by `bytes` do not change
/// while the value is not mutated, and that moving the value does not move the bytes (they live
/// on the heap or in static memory). A completion backend hands that address to the kernel.
pub unsafe trait StableBuf: 'static {
    /// The bytes to write.
    fn bytes(&self) -> &[u8];
}

// SAFETY: a Vec's bytes live on the heap and do not move when the Vec is moved.
unsafe impl StableBuf for Vec<u8> {
    fn bytes(&self) -> &[u8] {
        self
    }
}

// SAFETY: a boxed slice's bytes live on the heap.
unsafe impl StableBuf for Box<[u8]> {
    fn bytes(&self) -> &[u8] {
        self
    }
}

// SAFETY: static bytes never move.
unsafe impl StableBuf for &'static [u8] {
    fn bytes(&self) -> &[u8] {
        self
    }
}

// SAFETY: an IoBuf's bytes live in its heap Vec, which moves with it without moving the bytes.
unsafe impl StableBuf for IoBuf {
    fn bytes(&self) -> &[u8] {
        self
    }
}

/// One connected byte stream (TCP today), read and written with owned buffers.
///
/// Futures are not `Send`: a stream lives and dies on the core that accepted or opened it.
///
/// # Cancellation
/// Dropping a `read` or `write_all` future abandons the operation. The stream is then in an
/// unknown state (a write may have been partly sent) and should be closed, not reused; a
/// completion backend keeps the buffer alive until the kernel's final completion arrives.
#[allow(async_fn_in_trait)]
pub trait Stream: 'static {
    /// Reads the next bytes the peer sent into a buffer the transport chose.
    ///
    /// Returns `Ok(None)` at end of stream. A returned buffer is never empty.
    ///
    /// # Cancellation
    /// Cancel-safe: dropping a pending `read` loses no bytes. Whatever the peer sent is returned
    /// by the next `read` (a completion backend keeps bytes that arrived for a cancelled read).
    /// The proxy relies on this to race reads on both ends of a tunnel.
    ///
    /// # Errors
    /// Any socket error (reset, timeout set on the socket).
    async fn read(&mut self) -> io::Result<Option<IoBuf>>;

    /// Writes every byte of `buf`, then hands the buffer back.
    ///
    /// # Errors
    /// Any socket error; how much of `buf` was sent is then unknown, so close the stream.
    async fn write_all<B: StableBuf>(&mut self, buf: B) -> (io::Result<()>, B);

    /// Writes every byte of `buf` as the **last write before the next [`Stream::read`]**, and
    /// returns as soon as the write is under way: the caller promises that its next operation
    /// on this stream is a read (or dropping the stream). A completion backend then links the
    /// write to that read and lets the kernel report only a failed or short write, so a
    /// request/response exchange waits for one completion instead of two (or, when a read is
    /// already waiting, as behind [`Stream::watch_idle`], sends alone and collects the write's
    /// outcome with the read's). A failure of the write may therefore be reported by the next
    /// read (as `BrokenPipe` carrying [`LastWriteFailed`]). The buffer comes back when the
    /// stream no longer needs it (its bytes were copied, or written), so that the caller can
    /// reuse it. The default writes with [`Stream::write_all`].
    ///
    /// # Errors
    /// As [`Stream::write_all`], now or from the next read.
    async fn write_last<B: StableBuf>(&mut self, buf: B) -> (io::Result<()>, Option<B>) {
        let (r, b) = self.write_all(buf).await;
        (r, Some(b))
    }

    /// Shuts down the write half (sends FIN); reads keep working.
    ///
    /// # Errors
    /// As `shutdown(2)`.
    async fn shutdown_write(&mut self) -> io::Result<()>;

    /// The remote address, when the backend knows it.
    fn peer_addr(&self) -> Option<SocketAddr>;

    /// Whether an idle stream can carry a new exchange: the peer has neither closed it nor sent
    /// bytes nobody asked for. A non-blocking peek, no await; used when a pooled connection is
    /// checked out.
    fn is_idle_and_open(&self) -> bool;

    /// As [`Stream::is_idle_and_open`], for a stream that went idle moments ago (the pool asks
    /// this of connections idle for less than a second): a completion backend answers from the
    /// completions already posted, without an `io_uring_enter` for those the kernel still
    /// defers. A close by the peer within the last loop pass can then go unseen, as one in
    /// flight while the request is sent always can; the request then fails on a reused
    /// connection, which the proxy retries when it can (`Retry::IfReused`). Under load nearly
    /// every checkout is of such a connection, and the enter was one in three of the
    /// proxy's. The default is [`Stream::is_idle_and_open`].
    fn is_recently_idle_and_open(&self) -> bool {
        self.is_idle_and_open()
    }

    /// Called when the stream goes idle in a pool with no read pending. A completion backend
    /// queues a watch that holds no buffer (a read that takes one only when bytes arrive, and
    /// then reads the reply to the next request), so that a later
    /// [`Stream::is_idle_and_open`] is answered from its state without a system call. The
    /// default does nothing.
    fn watch_idle(&mut self) {}

    /// Says that the stream will not be read again (its connection closes after the writes
    /// that follow), so that a completion backend queues no read ahead of those writes only to
    /// cancel it at the close. The default does nothing.
    fn no_more_reads(&mut self) {}
}

/// What a read reports (as `BrokenPipe`) when the [`Stream::write_last`] before it failed or was
/// cut short: the peer did not get the whole message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LastWriteFailed;

impl std::fmt::Display for LastWriteFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the write before this read failed or was cut short")
    }
}

impl std::error::Error for LastWriteFailed {}

impl LastWriteFailed {
    /// Whether a read's error `e` says that the last write before it failed.
    pub fn is(e: &io::Error) -> bool {
        e.get_ref()
            .is_some_and(|inner| inner.is::<LastWriteFailed>())
    }
}

/// A listening socket adopted by a backend, yielding [`Stream`]s on the core that owns it.
#[allow(async_fn_in_trait)]
pub trait Listener: 'static {
    /// The streams this listener yields.
    type Stream: Stream;

    /// Waits for the next connection and returns it with the peer address.
    ///
    /// # Errors
    /// As `accept4(2)`: `EMFILE`/`ENFILE` when out of descriptors (back off and retry), and
    /// per-connection errors (`ECONNABORTED`) that do not affect the listener.
    async fn accept(&self) -> io::Result<(Self::Stream, SocketAddr)>;

    /// The address the socket is bound to.
    ///
    /// # Errors
    /// As `getsockname(2)`.
    fn local_addr(&self) -> io::Result<SocketAddr>;
}

/// An I/O backend: how listeners are adopted and outbound connections opened on this core.
#[allow(async_fn_in_trait)]
pub trait Backend: 'static {
    /// Connected streams.
    type Stream: Stream;
    /// Listening sockets.
    type Listener: Listener<Stream = Self::Stream>;

    /// A short name for logs (`"glommio"`, `"uring"`).
    const NAME: &'static str;

    /// Accepts a core keeps waiting on one listener at once. A completion backend completes
    /// every waiting accept the backlog can serve in one `io_uring_enter`, so under connection
    /// churn several waiting accepts take several connections per loop pass instead of one.
    const ACCEPTS_IN_FLIGHT: usize = 1;

    /// Adopts a bound, listening socket built elsewhere (socket2, or handed over by an older
    /// process during an upgrade). Must be called on the core that will accept on it.
    ///
    /// # Errors
    /// When the descriptor is not a listening TCP socket the backend can drive.
    fn adopt_listener(fd: OwnedFd) -> io::Result<Self::Listener>;

    /// Opens a TCP connection to `addr`, failing with `TimedOut` after `timeout`.
    ///
    /// TCP_NODELAY is set on the new stream.
    ///
    /// # Errors
    /// Refused, unreachable, timed out, or out of descriptors.
    async fn connect(addr: SocketAddr, timeout: Duration) -> io::Result<Self::Stream>;
}

/// Reads from `stream` until `buf` ends at least `want` bytes past its current length, or EOF.
///
/// Returns how many bytes were appended. A convenience for tests and simple clients; the proxy
/// works on the [`IoBuf`]s directly.
///
/// # Errors
/// As [`Stream::read`].
pub async fn read_at_least<S: Stream>(
    stream: &mut S,
    buf: &mut Vec<u8>,
    want: usize,
) -> io::Result<usize> {
    let start = buf.len();
    while buf.len() - start < want {
        match stream.read().await? {
            Some(chunk) => buf.extend_from_slice(&chunk),
            None => break,
        }
    }
    Ok(buf.len() - start)
}
