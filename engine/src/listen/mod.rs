//! The accept side: one SO_REUSEPORT listening socket per core per address, built with socket2
//! and adopted by that core's executor.

pub mod handover;

use std::io;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;

use socket2::{Domain, Protocol, Socket, Type};

/// Default listen backlog per socket.
pub const DEFAULT_BACKLOG: i32 = 4096;

/// Builds `count` listening sockets on `addr`, all in one SO_REUSEPORT group. When `addr` has
/// port 0, the first socket picks the port and the others bind to it. Sockets are CLOEXEC.
///
/// # Errors
/// When a socket cannot be created or bound (address in use without SO_REUSEPORT on the other
/// holder, permission).
pub fn reuseport_sockets(
    addr: SocketAddr,
    count: usize,
    backlog: i32,
) -> io::Result<(Vec<OwnedFd>, SocketAddr)> {
    let mut bound = addr;
    let mut fds = Vec::with_capacity(count);
    for _ in 0..count {
        let s = Socket::new(
            Domain::for_address(bound),
            Type::STREAM.cloexec(),
            Some(Protocol::TCP),
        )?;
        s.set_reuse_address(true)?;
        s.set_reuse_port(true)?;
        // Accepted sockets inherit TCP_NODELAY from the listener on Linux.
        s.set_nodelay(true)?;
        s.bind(&bound.into())?;
        s.listen(backlog)?;
        if bound.port() == 0 {
            bound = s
                .local_addr()?
                .as_socket()
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not an IP socket"))?;
        }
        fds.push(OwnedFd::from(s));
    }
    Ok((fds, bound))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_port_shared_by_every_socket() {
        let (fds, addr) = reuseport_sockets("127.0.0.1:0".parse().unwrap(), 3, 16).unwrap();
        assert_eq!(fds.len(), 3);
        assert_ne!(addr.port(), 0);
        for fd in fds {
            let s = Socket::from(fd);
            assert_eq!(s.local_addr().unwrap().as_socket(), Some(addr));
        }
    }
}
