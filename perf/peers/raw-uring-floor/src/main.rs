//! raw-uring-floor: the floor of perf/run's comparison, a bare io_uring HTTP/1.1 forwarding loop.
//!
//! One thread (the runner pins it to the proxy core with `taskset`), one ring, one
//! `submit_and_wait` per loop turn. It is a floor, not a proxy: it assumes small requests
//! without a body, one request per client read, and responses framed by Content-Length, and it
//! parses nothing but the end of a head, `Content-Length` and `Connection`. Per keep-alive
//! request:
//!
//! ```text
//!  client RECV (CQE)
//!    -> upstream SEND (linked, CQE skipped on success) -> upstream RECV (CQE)   [+ more RECVs
//!    -> client SEND   (linked, CQE skipped on success) -> client RECV (CQE)       for a body]
//! ```
//!
//! that is 4 SQEs and 2 CQEs. Upstream connections are a pool shared by all clients (like
//! nginx's `keepalive 64`): one is taken for a request and returned once its response is in,
//! so 50 busy clients hold 50 and a client that opens a connection per request never makes the
//! origin accept one. A client's `Connection: close` is removed before the request goes upstream
//! (as nginx's `proxy_set_header Connection ""` does), and its connection is closed by a CLOSE
//! linked behind the response's SEND.
//!
//! Sends carry `MSG_WAITALL`: on a stream socket the kernel then retries a short send itself and
//! completes it only when every byte went or it failed, so `CQE_SKIP_SUCCESS` hides no short
//! send, and a failure still posts a CQE and cancels the linked operation (which posts its own,
//! `-ECANCELED`). Ringway's backend does not skip send CQEs and resubmits the remainder instead;
//! this is one CQE per send cheaper, which is what a floor should be.
//!
//! Usage: `ringway-peer-raw-uring-floor --listen 127.0.0.1:8080 --upstream 127.0.0.1:9000`

use io_uring::{
    cqueue, opcode, squeue, types, CompletionQueue, IoUring, SubmissionQueue, Submitter,
};
use std::io;
use std::net::{SocketAddrV4, TcpListener};
use std::os::fd::{AsRawFd, RawFd};

/// Submission queue entries.
const SQ_ENTRIES: u32 = 1024;
/// Completion queue entries (every connection has at most one CQE-producing operation pending).
const CQ_ENTRIES: u32 = 16384;
/// Per-connection buffer: request, then response, then the next request. 64 KiB takes a 16 KiB
/// response in one RECV when the kernel has it all.
const BUF_BYTES: usize = 64 * 1024;
/// Idle upstream connections kept for reuse (nginx's `keepalive 64`).
const MAX_IDLE_UPSTREAMS: usize = 64;
/// Backlog of the listening socket (nginx's `backlog=4096` in perf/conf/nginx.conf).
const BACKLOG: i32 = 4096;

// What a CQE's user_data says, in its low byte; the connection's index is above it.
const OP_ACCEPT: u64 = 0;
const OP_CLIENT_RECV: u64 = 1;
const OP_UPSTREAM_CONNECT: u64 = 2;
const OP_UPSTREAM_SEND: u64 = 3;
const OP_UPSTREAM_RECV: u64 = 4;
const OP_CLIENT_SEND: u64 = 5;
const OP_CLIENT_CLOSE: u64 = 6;

fn key(idx: usize, op: u64) -> u64 {
    ((idx as u64) << 8) | op
}

/// One client connection. Between its CQEs it has exactly one CQE-producing operation in
/// flight (a RECV, or the CLOSE ending a `Connection: close` exchange), so its slot is reused
/// only after that operation's CQE: no generation tag is needed. The CQEs of a failed CONNECT or
/// SEND carry no state and are only counted.
struct Conn {
    /// The client's socket.
    fd: RawFd,
    /// The upstream connection held for the request in flight, or -1.
    upstream: RawFd,
    /// Request, then response, then the next request: a linked RECV starts only after the SEND
    /// before it completed, so one buffer serves both directions.
    buf: Vec<u8>,
    /// Bytes received into `buf` so far.
    len: usize,
    /// The client asked for `Connection: close`.
    close_after: bool,
}

struct Floor<'r> {
    submitter: Submitter<'r>,
    sq: SubmissionQueue<'r>,
    cq: CompletionQueue<'r>,
    listener: RawFd,
    /// The origin's address; boxed so the CONNECT SQEs can point at it.
    upstream_addr: Box<libc::sockaddr_in>,
    conns: Vec<Conn>,
    free: Vec<usize>,
    idle_upstreams: Vec<RawFd>,
    /// CQEs of failed CONNECTs and SENDs (their linked operation's CQE does the clean-up).
    failed_heads: u64,
}

impl<'r> Floor<'r> {
    /// Queues `entries` together: a link chain must never be split across two submissions.
    fn push(&mut self, entries: &[squeue::Entry]) {
        if self.sq.capacity() - self.sq.len() < entries.len() {
            // Rare: the SQ filled up within one turn; submit what is there.
            self.sq.sync();
            self.submitter.submit().expect("io_uring submit");
            self.sq.sync();
        }
        // SAFETY: every buffer and address an entry points at lives until its CQE: the
        // connection's buffer is resized only when it has no operation in flight, and slots are
        // reused only after their last CQE.
        unsafe {
            self.sq
                .push_multiple(entries)
                .expect("submission queue full")
        };
    }

    fn arm_accept(&mut self) {
        let accept = opcode::AcceptMulti::new(types::Fd(self.listener))
            .flags(libc::SOCK_CLOEXEC)
            .build()
            .user_data(key(0, OP_ACCEPT));
        self.push(&[accept]);
    }

    /// A RECV from the client into the free part of its buffer.
    fn recv_client(&mut self, idx: usize) -> squeue::Entry {
        let c = &mut self.conns[idx];
        let room = &mut c.buf[c.len..];
        opcode::Recv::new(types::Fd(c.fd), room.as_mut_ptr(), room.len() as u32)
            .build()
            .user_data(key(idx, OP_CLIENT_RECV))
    }

    fn recv_upstream(&mut self, idx: usize) -> squeue::Entry {
        let c = &mut self.conns[idx];
        let room = &mut c.buf[c.len..];
        opcode::Recv::new(types::Fd(c.upstream), room.as_mut_ptr(), room.len() as u32)
            .build()
            .user_data(key(idx, OP_UPSTREAM_RECV))
    }

    /// A SEND of the first `len` bytes of the buffer to `fd`, linked to what follows, its CQE
    /// skipped on success (see the module's note on `MSG_WAITALL`).
    fn send_linked(&self, idx: usize, fd: RawFd, len: usize, op: u64) -> squeue::Entry {
        opcode::Send::new(types::Fd(fd), self.conns[idx].buf.as_ptr(), len as u32)
            .flags(libc::MSG_WAITALL | libc::MSG_NOSIGNAL)
            .build()
            .flags(squeue::Flags::IO_LINK | squeue::Flags::SKIP_SUCCESS)
            .user_data(key(idx, op))
    }

    fn on_accept(&mut self, res: i32, flags: u32) {
        if res >= 0 {
            // TCP_NODELAY is inherited from the listener: no setsockopt per connection.
            let conn = Conn {
                fd: res,
                upstream: -1,
                buf: Vec::new(),
                len: 0,
                close_after: false,
            };
            let idx = match self.free.pop() {
                Some(idx) => {
                    let buf = std::mem::take(&mut self.conns[idx].buf);
                    self.conns[idx] = Conn { buf, ..conn };
                    idx
                }
                None => {
                    self.conns.push(Conn {
                        buf: vec![0; BUF_BYTES],
                        ..conn
                    });
                    self.conns.len() - 1
                }
            };
            let recv = self.recv_client(idx);
            self.push(&[recv]);
        }
        if !cqueue::more(flags) {
            // The multishot accept ended (an error such as EMFILE, or the kernel's choice).
            self.arm_accept();
        }
    }

    fn on_client_recv(&mut self, idx: usize, res: i32) {
        if res <= 0 {
            return self.drop_conn(idx); // the client closed (or failed): end of its connection
        }
        let c = &mut self.conns[idx];
        c.len += res as usize;
        let Some(end) = find(&c.buf[..c.len], b"\r\n\r\n").map(|at| at + 4) else {
            if c.len == c.buf.len() {
                return self.drop_conn(idx); // a head larger than the buffer: not for a floor
            }
            let recv = self.recv_client(idx);
            return self.push(&[recv]);
        };
        // Hop-by-hop: drop the client's Connection header, remember whether it said close.
        c.close_after = false;
        if let Some((start, line_end, value)) = header_line(&c.buf[..end], b"connection") {
            c.close_after = contains_ci(&c.buf[value..line_end], b"close");
            c.buf.copy_within(line_end + 2..c.len, start);
            c.len -= line_end + 2 - start;
        }
        let request_len = c.len;
        c.len = 0; // the response goes to the start of the buffer
        let (up, connect) = match self.idle_upstreams.pop() {
            Some(fd) => (fd, None),
            None => match new_upstream_socket() {
                Ok(fd) => {
                    // A new upstream connection: CONNECT -> SEND -> RECV, one chain.
                    let addr = &*self.upstream_addr as *const libc::sockaddr_in;
                    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
                    let connect = opcode::Connect::new(types::Fd(fd), addr.cast(), len)
                        .build()
                        .flags(squeue::Flags::IO_LINK | squeue::Flags::SKIP_SUCCESS)
                        .user_data(key(idx, OP_UPSTREAM_CONNECT));
                    (fd, Some(connect))
                }
                Err(_) => return self.drop_conn(idx),
            },
        };
        self.conns[idx].upstream = up;
        let send = self.send_linked(idx, up, request_len, OP_UPSTREAM_SEND);
        let recv = self.recv_upstream(idx);
        match connect {
            Some(connect) => self.push(&[connect, send, recv]),
            None => self.push(&[send, recv]),
        }
    }

    fn on_upstream_recv(&mut self, idx: usize, res: i32) {
        if res <= 0 {
            // The origin closed or failed, or the CONNECT/SEND before this RECV did (-ECANCELED):
            // no retry, no 502; a floor just closes the client.
            return self.drop_conn(idx);
        }
        let c = &mut self.conns[idx];
        c.len += res as usize;
        let Some((total, upstream_close)) = response_framing(&c.buf[..c.len]) else {
            // The head is not complete yet.
            if c.len == c.buf.len() {
                return self.drop_conn(idx);
            }
            let recv = self.recv_upstream(idx);
            return self.push(&[recv]);
        };
        if c.len < total {
            // The body is not complete: make room for all of it, read on.
            if c.buf.len() < total {
                c.buf.resize(total, 0);
            }
            let recv = self.recv_upstream(idx);
            return self.push(&[recv]);
        }
        // The response is in: the upstream connection is idle again, for any client.
        let up = std::mem::replace(&mut c.upstream, -1);
        if upstream_close || self.idle_upstreams.len() >= MAX_IDLE_UPSTREAMS {
            close(up);
        } else {
            self.idle_upstreams.push(up);
        }
        let (fd, len) = (self.conns[idx].fd, self.conns[idx].len);
        let send = self.send_linked(idx, fd, len, OP_CLIENT_SEND);
        if self.conns[idx].close_after {
            // SEND -> CLOSE: the CLOSE's CQE (or its -ECANCELED when the SEND failed) frees the
            // slot.
            let close = opcode::Close::new(types::Fd(fd))
                .build()
                .user_data(key(idx, OP_CLIENT_CLOSE));
            self.push(&[send, close]);
        } else {
            self.conns[idx].len = 0;
            let recv = self.recv_client(idx);
            self.push(&[send, recv]);
        }
    }

    fn on_client_closed(&mut self, idx: usize, res: i32) {
        if res == -libc::ECANCELED {
            close(self.conns[idx].fd); // the SEND failed, so the linked CLOSE never ran
        }
        self.conns[idx].fd = -1;
        self.free.push(idx);
    }

    /// Closes the client (and the upstream connection it holds, whose state is unknown) and
    /// frees the slot. Called only from the connection's one pending CQE: nothing is in flight.
    fn drop_conn(&mut self, idx: usize) {
        let c = &mut self.conns[idx];
        close(c.fd);
        c.fd = -1;
        if c.upstream >= 0 {
            close(std::mem::replace(&mut c.upstream, -1));
        }
        self.free.push(idx);
    }

    /// The loop: one `submit_and_wait(1)` per turn (it submits everything queued and, with
    /// DEFER_TASKRUN, runs the deferred completions), then every CQE, which queues the next SQEs.
    fn run(&mut self) -> io::Result<()> {
        self.arm_accept();
        let mut cqes: Vec<(u64, i32, u32)> = Vec::with_capacity(1024);
        loop {
            self.sq.sync();
            match self.submitter.submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if matches!(e.raw_os_error(), Some(libc::EINTR) | Some(libc::EBUSY)) => {}
                Err(e) => return Err(e),
            }
            self.cq.sync();
            cqes.extend(
                self.cq
                    .by_ref()
                    .map(|c| (c.user_data(), c.result(), c.flags())),
            );
            // Hand the consumed entries back now: a head published only at the next sync would
            // make the next submit_and_wait(1) see them as unread and return at once, one
            // wasted enter per turn.
            self.cq.sync();
            for (user_data, res, flags) in cqes.drain(..) {
                let idx = (user_data >> 8) as usize;
                match user_data & 0xff {
                    OP_ACCEPT => self.on_accept(res, flags),
                    OP_CLIENT_RECV => self.on_client_recv(idx, res),
                    OP_UPSTREAM_RECV => self.on_upstream_recv(idx, res),
                    OP_CLIENT_CLOSE => self.on_client_closed(idx, res),
                    // OP_UPSTREAM_CONNECT, OP_UPSTREAM_SEND, OP_CLIENT_SEND: failures only.
                    _ => self.failed_heads += 1,
                }
            }
        }
    }
}

/// For a response head that is complete in `data`: its total length (head plus Content-Length;
/// 0 without one, as this floor meets only Content-Length responses) and whether the origin
/// said `Connection: close`.
fn response_framing(data: &[u8]) -> Option<(usize, bool)> {
    let end = find(data, b"\r\n\r\n")? + 4;
    let head = &data[..end];
    let body = header_line(head, b"content-length")
        .map(|(_, line_end, value)| {
            head[value..line_end]
                .iter()
                .filter(|b| b.is_ascii_digit())
                .fold(0usize, |n, b| n * 10 + (b - b'0') as usize)
        })
        .unwrap_or(0);
    let close = header_line(head, b"connection")
        .is_some_and(|(_, line_end, value)| contains_ci(&head[value..line_end], b"close"));
    Some((end + body, close))
}

/// The first header line of `head` (a complete head) named `name` (lowercase): the start of the
/// line, its end (before its CRLF) and the start of its value.
fn header_line(head: &[u8], name: &[u8]) -> Option<(usize, usize, usize)> {
    let mut start = find(head, b"\r\n")? + 2; // past the request or status line
    loop {
        let end = start + find(&head[start..], b"\r\n")?;
        if end == start {
            return None; // the blank line ending the head
        }
        let line = &head[start..end];
        if line.len() > name.len()
            && line[name.len()] == b':'
            && line[..name.len()].eq_ignore_ascii_case(name)
        {
            return Some((start, end, start + name.len() + 1));
        }
        start = end + 2;
    }
}

fn new_upstream_socket() -> io::Result<RawFd> {
    // SAFETY: plain socket(2) and setsockopt(2) calls on a descriptor we own.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        set_nodelay(fd);
        Ok(fd)
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn contains_ci(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle))
}

fn close(fd: RawFd) {
    // SAFETY: closing a descriptor this loop owns and no operation uses any more.
    unsafe { libc::close(fd) };
}

fn set_nodelay(fd: RawFd) {
    let on: libc::c_int = 1;
    // SAFETY: setsockopt(2) with a pointer to a live c_int and its size.
    unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

fn arg(args: &[String], name: &str) -> String {
    let at = args.iter().position(|a| a == name);
    match at.and_then(|i| args.get(i + 1)) {
        Some(v) => v.clone(),
        None => {
            eprintln!("usage: ringway-peer-raw-uring-floor --listen ADDR --upstream ADDR");
            std::process::exit(2);
        }
    }
}

fn main() -> io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let listen: SocketAddrV4 = arg(&args, "--listen")
        .parse()
        .expect("--listen: an IPv4 address");
    let upstream: SocketAddrV4 = arg(&args, "--upstream")
        .parse()
        .expect("--upstream: an IPv4 address");

    let listener = TcpListener::bind(listen)?;
    // Accepted sockets inherit TCP_NODELAY from the listener (Linux clones the listening socket),
    // and a second listen(2) only raises the backlog std chose (128).
    set_nodelay(listener.as_raw_fd());
    // SAFETY: listen(2) on a socket we own.
    if unsafe { libc::listen(listener.as_raw_fd(), BACKLOG) } != 0 {
        return Err(io::Error::last_os_error());
    }

    // SINGLE_ISSUER + DEFER_TASKRUN: completions are produced only when this thread enters the
    // ring with GETEVENTS, i.e. in the loop's one submit_and_wait per turn.
    let mut ring: IoUring = IoUring::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .setup_submit_all()
        .setup_cqsize(CQ_ENTRIES)
        .build(SQ_ENTRIES)?;
    let (mut submitter, sq, cq) = ring.split();
    // Enters name the ring by its registered index. The registration belongs to this Submitter
    // (io-uring 0.7.15 keeps it there), so the loop must enter through this one.
    submitter.register_ring_fd()?;

    let mut upstream_addr: Box<libc::sockaddr_in> = Box::new(unsafe { std::mem::zeroed() });
    upstream_addr.sin_family = libc::AF_INET as libc::sa_family_t;
    upstream_addr.sin_port = upstream.port().to_be();
    upstream_addr.sin_addr.s_addr = u32::from(*upstream.ip()).to_be();

    eprintln!("raw-uring-floor: {listen} -> {upstream}, one thread, io_uring");
    let mut floor = Floor {
        submitter,
        sq,
        cq,
        listener: listener.as_raw_fd(),
        upstream_addr,
        conns: Vec::new(),
        free: Vec::new(),
        idle_upstreams: Vec::new(),
        failed_heads: 0,
    };
    let result = floor.run();
    eprintln!(
        "raw-uring-floor: {} failed CONNECT/SEND CQEs",
        floor.failed_heads
    );
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framing_and_connection_header() {
        let resp = b"HTTP/1.1 200 OK\r\ncontent-LENGTH: 13\r\nConnection: close\r\n\r\nhello";
        let head = resp.len() - 5;
        assert_eq!(response_framing(resp), Some((head + 13, true)));
        assert_eq!(
            response_framing(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n"),
            None
        );
        let req = b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n";
        let (start, end, value) = header_line(req, b"connection").unwrap();
        assert_eq!(&req[start..end], b"Connection: close");
        assert!(contains_ci(&req[value..end], b"close"));
        assert_eq!(header_line(req, b"content-length"), None);
    }
}
