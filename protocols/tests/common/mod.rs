//! Helpers shared by the transport backends' test files: a bounded executor run, a listening
//! socket, the uring driver's settled counters, and a socket's send buffer filled behind the
//! ring's back.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::sync::mpsc;
use std::time::Duration;

use glommio::LocalExecutorBuilder;
use ringway_protocols::l4::uring;

/// Runs `f` on a fresh glommio executor and fails the test if it takes longer than `limit`.
pub fn run_bounded<F, Fut>(limit: Duration, f: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let (tx, rx) = mpsc::channel();
    let handle = LocalExecutorBuilder::default()
        .spawn(move || async move {
            f().await;
            let _ = tx.send(());
        })
        .unwrap();
    match rx.recv_timeout(limit) {
        Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => handle.join().unwrap(),
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("test exceeded {limit:?}"),
    }
}

/// Lets the driver reap the cancellations of dropped streams' RECVs, then returns this core's
/// counters (bounded: fails the test after 2 s with operations still in flight).
pub async fn settled_stats() -> uring::UringStats {
    for _ in 0..2000 {
        let st = uring::stats();
        if st.in_flight == 0 {
            return st;
        }
        glommio::timer::sleep(Duration::from_millis(1)).await;
    }
    panic!("operations still in flight: {:?}", uring::stats());
}

/// A listening SO_REUSEPORT socket on a free loopback port.
pub fn listening_socket(backlog: i32) -> (OwnedFd, SocketAddr) {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.set_reuse_port(true).unwrap();
    s.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    s.listen(backlog).unwrap();
    let addr = s.local_addr().unwrap().as_socket().unwrap();
    (OwnedFd::from(s), addr)
}

/// Sends from `fd` behind the ring's back until the kernel takes no more, also once the bytes
/// sent so far have reached a peer that does not read (its window closed); returns how many.
pub async fn fill_send_buffer(fd: std::os::fd::RawFd) -> usize {
    let chunk = vec![7u8; 64 << 10];
    let mut filled = 0;
    loop {
        let mut round = 0;
        loop {
            // SAFETY: a non-blocking send from a live buffer on a socket the caller owns.
            let n = unsafe {
                libc::send(
                    fd,
                    chunk.as_ptr().cast(),
                    chunk.len(),
                    libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                )
            };
            if n <= 0 {
                break;
            }
            round += n as usize;
        }
        filled += round;
        if round == 0 {
            return filled;
        }
        ringway_protocols::rt::sleep(Duration::from_millis(10)).await;
    }
}
