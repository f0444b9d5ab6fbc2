//! Zero-downtime upgrade: the running process hands its listening sockets to a new process
//! over a Unix socket (SCM_RIGHTS), so no connection queued in the kernel is reset.
//!
//! Protocol, on one Unix stream connection:
//! 1. the new process connects to the old one's upgrade socket;
//! 2. the old process sends one message: the listeners' addresses, one per line, as the
//!    payload, and their descriptors as SCM_RIGHTS ancillary data (in the same order);
//! 3. the new process adopts them, starts its executors, and writes one byte, `R` (ready);
//! 4. only then does the old process stop accepting and drain. If the new process goes away
//!    before `R`, the old one keeps serving as if nothing happened.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// Most descriptors passed in one handover (SCM_RIGHTS allows 253 per message).
pub const MAX_HANDOVER_FDS: usize = 253;
/// Largest address list accepted.
const MAX_PAYLOAD: usize = 64 * 1024;
/// The byte the new process sends once it accepts on the inherited sockets.
const READY: u8 = b'R';
/// How long either side waits for the other during a handover.
pub const HANDOVER_TIMEOUT: Duration = Duration::from_secs(30);

/// Listening sockets received from an older process, and the connection to tell it when the
/// new process is ready.
pub struct Handover {
    /// Each inherited listening socket with the address it is bound to.
    pub listeners: Vec<(SocketAddr, OwnedFd)>,
    stream: UnixStream,
}

impl Handover {
    /// Tells the old process the new one is accepting; it then stops accepting and drains.
    ///
    /// # Errors
    /// When the old process went away.
    pub fn ready(mut self) -> io::Result<()> {
        self.stream.write_all(&[READY])
    }
}

/// Connects to the old process's upgrade socket at `path` and receives its listeners.
///
/// # Errors
/// Nothing listens at `path`, the old process sent a malformed message, or it timed out.
pub fn receive(path: &Path) -> io::Result<Handover> {
    let stream = UnixStream::connect(path)?;
    stream.set_read_timeout(Some(HANDOVER_TIMEOUT))?;
    let mut payload = vec![0u8; MAX_PAYLOAD];
    let (n, fds) = recv_with_fds(stream.as_raw_fd(), &mut payload)?;
    let text = std::str::from_utf8(&payload[..n]).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "handover addresses are not UTF-8",
        )
    })?;
    let addrs: Vec<SocketAddr> = text
        .lines()
        .map(|l| {
            l.parse().map_err(|_| {
                io::Error::new(io::ErrorKind::InvalidData, format!("bad address {l:?}"))
            })
        })
        .collect::<io::Result<_>>()?;
    if addrs.len() != fds.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} addresses but {} descriptors", addrs.len(), fds.len()),
        ));
    }
    Ok(Handover {
        listeners: addrs.into_iter().zip(fds).collect(),
        stream,
    })
}

/// Sends `listeners` to the new process on `stream`, then waits for its ready byte. Returns
/// `Ok(true)` when the new process is ready (the caller stops accepting), `Ok(false)` when it
/// went away first (the caller keeps serving).
///
/// # Errors
/// When sending fails.
pub fn send(stream: &mut UnixStream, listeners: &[(SocketAddr, RawFd)]) -> io::Result<bool> {
    if listeners.len() > MAX_HANDOVER_FDS {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "too many listeners to hand over",
        ));
    }
    let payload: String = listeners.iter().map(|(a, _)| format!("{a}\n")).collect();
    let fds: Vec<RawFd> = listeners.iter().map(|(_, fd)| *fd).collect();
    send_with_fds(stream.as_raw_fd(), payload.as_bytes(), &fds)?;
    stream.set_read_timeout(Some(HANDOVER_TIMEOUT))?;
    let mut b = [0u8; 1];
    match stream.read(&mut b) {
        Ok(1) if b[0] == READY => Ok(true),
        _ => Ok(false),
    }
}

fn cmsg_space(fds: usize) -> usize {
    // SAFETY: CMSG_SPACE is a pure size computation.
    unsafe { libc::CMSG_SPACE((fds * std::mem::size_of::<RawFd>()) as u32) as usize }
}

fn send_with_fds(sock: RawFd, payload: &[u8], fds: &[RawFd]) -> io::Result<()> {
    let mut iov = libc::iovec {
        iov_base: payload.as_ptr() as *mut libc::c_void,
        iov_len: payload.len(),
    };
    let mut control = vec![0u8; cmsg_space(fds.len().max(1))];
    // SAFETY: msghdr is plain data; every pointer set below outlives the sendmsg call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !fds.is_empty() {
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = control.len() as _;
        // SAFETY: the control buffer is CMSG_SPACE(n fds) bytes, so the first header and its
        // data fit; CMSG_* walk only within it.
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of_val(fds) as u32) as _;
            std::ptr::copy_nonoverlapping(
                fds.as_ptr(),
                libc::CMSG_DATA(cmsg).cast::<RawFd>(),
                fds.len(),
            );
        }
    }
    // SAFETY: msg is fully initialized; sock is a connected Unix stream.
    let n = unsafe { libc::sendmsg(sock, &msg, libc::MSG_NOSIGNAL) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    if n as usize != payload.len() {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            "short handover message",
        ));
    }
    Ok(())
}

fn recv_with_fds(sock: RawFd, payload: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>)> {
    let mut iov = libc::iovec {
        iov_base: payload.as_mut_ptr().cast(),
        iov_len: payload.len(),
    };
    let mut control = vec![0u8; cmsg_space(MAX_HANDOVER_FDS)];
    // SAFETY: as in send_with_fds; the buffers outlive the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = control.len() as _;
    // SAFETY: msg points at valid buffers; MSG_CMSG_CLOEXEC marks received fds close-on-exec.
    let n = unsafe { libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut fds = Vec::new();
    // SAFETY: the kernel filled msg_control; CMSG_* walk its headers within msg_controllen,
    // and each SCM_RIGHTS payload holds (len - CMSG_LEN(0)) / 4 descriptors now owned by us.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let data_len = (*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                let count = data_len / std::mem::size_of::<RawFd>();
                let data = libc::CMSG_DATA(cmsg).cast::<RawFd>();
                for i in 0..count {
                    fds.push(OwnedFd::from_raw_fd(std::ptr::read_unaligned(data.add(i))));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    if msg.msg_flags & libc::MSG_CTRUNC != 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "handover descriptors truncated",
        ));
    }
    Ok((n as usize, fds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listeners_cross_a_unix_socket_and_stay_listening() {
        let (fds, addr) =
            crate::listen::reuseport_sockets("127.0.0.1:0".parse().unwrap(), 2, 16).unwrap();
        let dir = std::env::temp_dir().join(format!("ringway-handover-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("up.sock");
        let _ = std::fs::remove_file(&path);
        let server = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let sender = std::thread::spawn(move || {
            let (mut s, _) = server.accept().unwrap();
            let list: Vec<(SocketAddr, RawFd)> =
                fds.iter().map(|f| (addr, f.as_raw_fd())).collect();
            let ready = send(&mut s, &list).unwrap();
            drop(fds); // the old process closes its copies: the sockets live on in the new one
            ready
        });
        let h = receive(&path).unwrap();
        assert_eq!(h.listeners.len(), 2);
        assert!(h.listeners.iter().all(|(a, _)| *a == addr));
        let listeners: Vec<std::net::TcpListener> = h
            .listeners
            .iter()
            .map(|(_, fd)| std::net::TcpListener::from(fd.try_clone().unwrap()))
            .collect();
        h.ready().unwrap();
        assert!(sender.join().unwrap(), "the old side saw the ready byte");
        // The inherited socket still accepts.
        let _c = std::net::TcpStream::connect(addr).unwrap();
        listeners[0].set_nonblocking(true).unwrap();
        listeners[1].set_nonblocking(true).unwrap();
        let accepted = (0..200).any(|_| {
            std::thread::sleep(Duration::from_millis(5));
            listeners.iter().any(|l| l.accept().is_ok())
        });
        assert!(accepted);
    }
}
