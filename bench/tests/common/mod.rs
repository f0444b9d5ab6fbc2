//! Helpers shared by the bench crate's end-to-end tests: a blocking HTTP/1.1 client good enough
//! to check the origin's answers, and a thread-per-connection test server for misbehaving
//! origins.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Socket timeouts in tests: long enough never to fire on a healthy run, short enough to fail
/// a hung test instead of blocking it forever.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// A parsed response.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub chunked: bool,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

/// Reads more bytes into `buf`; returns how many (0 at EOF).
fn fill(s: &mut TcpStream, buf: &mut Vec<u8>) -> usize {
    let mut tmp = [0u8; 64 * 1024];
    let n = s.read(&mut tmp).unwrap();
    buf.extend_from_slice(&tmp[..n]);
    n
}

fn take_line(s: &mut TcpStream, buf: &mut Vec<u8>) -> Vec<u8> {
    loop {
        if let Some(i) = buf.windows(2).position(|w| w == b"\r\n") {
            let line = buf[..i].to_vec();
            buf.drain(..i + 2);
            return line;
        }
        assert!(fill(s, buf) > 0, "EOF inside a line");
    }
}

/// Reads one response (after `HEAD` pass `head_request`), keeping extra bytes in `buf`.
pub fn read_response_to(s: &mut TcpStream, buf: &mut Vec<u8>, head_request: bool) -> Resp {
    let (status, headers, len) = loop {
        let mut hs = [httparse::EMPTY_HEADER; 64];
        let mut r = httparse::Response::new(&mut hs);
        if let httparse::Status::Complete(n) = r.parse(buf).unwrap() {
            let headers: Vec<(String, String)> = r
                .headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_string(),
                        String::from_utf8_lossy(h.value).into_owned(),
                    )
                })
                .collect();
            break (r.code.unwrap(), headers, n);
        }
        assert!(fill(s, buf) > 0, "EOF before a complete head");
    };
    buf.drain(..len);
    let mut resp = Resp {
        status,
        headers,
        body: Vec::new(),
        chunked: false,
    };
    if head_request || status == 204 || status == 304 || (100..200).contains(&status) {
        return resp;
    }
    if resp
        .header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        resp.chunked = true;
        loop {
            let line = take_line(s, buf);
            let size =
                usize::from_str_radix(std::str::from_utf8(&line).unwrap().trim(), 16).unwrap();
            if size == 0 {
                while !take_line(s, buf).is_empty() {}
                return resp;
            }
            while buf.len() < size + 2 {
                assert!(fill(s, buf) > 0, "EOF inside a chunk");
            }
            resp.body.extend_from_slice(&buf[..size]);
            assert_eq!(&buf[size..size + 2], b"\r\n");
            buf.drain(..size + 2);
        }
    } else if let Some(cl) = resp.header("content-length") {
        let n: usize = cl.trim().parse().unwrap();
        while buf.len() < n {
            assert!(fill(s, buf) > 0, "EOF inside a body");
        }
        resp.body = buf.drain(..n).collect();
    } else {
        while fill(s, buf) > 0 {}
        resp.body = std::mem::take(buf);
    }
    resp
}

pub fn read_response(s: &mut TcpStream, buf: &mut Vec<u8>) -> Resp {
    read_response_to(s, buf, false)
}

/// Sends `raw` on a fresh connection and reads one response.
pub fn exchange(addr: SocketAddr, raw: &[u8]) -> Resp {
    let mut s = connect(addr);
    s.write_all(raw).unwrap();
    read_response(&mut s, &mut Vec::new())
}

/// True when the peer has closed `s` (EOF, or a reset, within the timeout).
pub fn is_closed(s: &mut TcpStream) -> bool {
    let mut b = [0u8; 1];
    matches!(s.read(&mut b), Ok(0) | Err(_))
}

/// Reads one request head (no body) from `s`; `None` at EOF.
pub fn read_request_head(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Vec<u8>> {
    loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = buf[..i + 4].to_vec();
            buf.drain(..i + 4);
            return Some(head);
        }
        let mut tmp = [0u8; 4096];
        match s.read(&mut tmp) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&tmp[..n]),
        }
    }
}

/// A thread-per-connection server on 127.0.0.1 running `handler` for every connection (with its
/// 0-based sequence number). Stops accepting when dropped.
pub struct TestServer {
    pub addr: SocketAddr,
    pub accepted: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl TestServer {
    pub fn start<F>(handler: F) -> TestServer
    where
        F: Fn(TcpStream, u64) + Send + Sync + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicU64::new(0));
        let handler = Arc::new(handler);
        let (stop2, accepted2) = (stop.clone(), accepted.clone());
        let thread = std::thread::spawn(move || {
            while !stop2.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((s, _)) => {
                        s.set_nonblocking(false).unwrap();
                        s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
                        s.set_nodelay(true).unwrap();
                        let n = accepted2.fetch_add(1, Ordering::SeqCst);
                        let h = handler.clone();
                        std::thread::spawn(move || h(s, n));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(1)),
                }
            }
        });
        TestServer {
            addr,
            accepted,
            stop,
            thread: Some(thread),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A port on 127.0.0.1 with nothing listening (bound once, then released).
pub fn refused_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// CPUs for multi-executor tests: the first two when the machine has them.
pub fn two_cpus() -> Vec<usize> {
    let n = std::thread::available_parallelism().map_or(1, |n| n.get());
    if n >= 2 {
        vec![0, 1]
    } else {
        vec![0]
    }
}

/// `Fn` bound helper for handlers that ignore the sequence number.
pub fn write_all(s: &mut TcpStream, bytes: &[u8]) -> bool {
    s.write_all(bytes).is_ok()
}
