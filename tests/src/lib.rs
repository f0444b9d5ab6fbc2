//! Shared helpers for Ringway's end-to-end suites over real loopback sockets: start origins and
//! the engine, speak raw HTTP/1.1 from a blocking client, and parse what comes back with the
//! project's own codec.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use ringway::config;
use ringway::gateway::{Gateway, GatewayShared};
use ringway::{Server, ServerHandle};
use ringway_bench::origin::{self, OriginConfig, OriginHandle};
use ringway_protocols::http::v1::{
    parse_response, response_framing, BodyDecoder, Limits, Method, Parsed, ResponseHead,
};

/// How long a test client waits for bytes before deciding nothing more comes.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

/// Starts a benchmark origin on a free port.
pub fn origin() -> OriginHandle {
    origin_with(OriginConfig::default())
}

/// Starts a benchmark origin on a free port with `cfg` (its `listen` is replaced).
pub fn origin_with(cfg: OriginConfig) -> OriginHandle {
    origin::start(OriginConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        ..cfg
    })
    .expect("origin starts")
}

/// A free loopback port nobody listens on (bound, then closed).
pub fn dead_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// The gateway configuration text for one listener, one upstream of `peers`, one catch-all
/// route, and `extra` appended (more tables, or keys for `[server]`).
pub fn gateway_config(peers: &[SocketAddr], extra: &str) -> String {
    let peers: Vec<String> = peers.iter().map(|p| format!("\"{p}\"")).collect();
    format!(
        "[server]\ncpus = [0]\ngrace_period = \"2s\"\n\n[[listeners]]\naddress = \"127.0.0.1:0\"\n\n[[upstreams]]\nname = \"app\"\npeers = [{}]\nconnect_timeout = \"1s\"\nread_timeout = \"5s\"\n\n[[routes]]\npath_prefix = \"/\"\nupstream = \"app\"\n{extra}",
        peers.join(", ")
    )
}

thread_local! {
    static BACKEND: std::cell::Cell<&'static str> = const { std::cell::Cell::new("auto") };
}

/// The transport backends every end-to-end case runs on.
pub const BACKENDS: [&str; 2] = ["glommio", "uring"];

/// Runs `case` once per transport backend: gateways started meanwhile on this thread use it
/// (`[server] io`), and so do servers built with [`server_conf`].
pub fn for_each_backend(case: impl Fn()) {
    for b in BACKENDS {
        eprintln!("--- backend: {b}");
        BACKEND.with(|c| c.set(b));
        case();
    }
    BACKEND.with(|c| c.set("auto"));
}

/// The backend of the case running on this thread.
pub fn io_backend() -> ringway::IoBackend {
    match BACKEND.with(std::cell::Cell::get) {
        "glommio" => ringway::IoBackend::Glommio,
        "uring" => ringway::IoBackend::Uring,
        _ => ringway::IoBackend::Auto,
    }
}

/// A one-listener, one-core server configuration on this case's backend.
pub fn server_conf() -> ringway::ServerConf {
    let mut conf = ringway::ServerConf::single(SocketAddr::from(([127, 0, 0, 1], 0)));
    conf.cpus = ringway::CpuList::List(vec![0]);
    conf.io = io_backend();
    conf
}

/// Starts the built-in gateway from configuration text, on this case's backend unless the
/// text names one.
pub fn gateway(text: &str) -> ServerHandle {
    let backend = BACKEND.with(std::cell::Cell::get);
    let text = if text.contains("\nio = ") || !text.contains("[server]\n") {
        text.to_string()
    } else {
        text.replacen("[server]\n", &format!("[server]\nio = \"{backend}\"\n"), 1)
    };
    let cfg = config::parse(&text, "<test>").expect("valid test config");
    let conf = cfg.server.clone();
    let shared = GatewayShared::start(&cfg).expect("gateway control plane starts");
    Server::new(conf, move |_core| Gateway::new(&shared))
        .start()
        .expect("gateway starts")
}

/// Polls `cond` every 20 ms for up to 5 s; true if it became true.
pub fn eventually(mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    cond()
}

/// A parsed response.
#[derive(Debug)]
pub struct Response {
    /// The head.
    pub head: ResponseHead,
    /// The decoded body.
    pub body: Vec<u8>,
}

impl Response {
    /// The status.
    pub fn status(&self) -> u16 {
        self.head.status
    }

    /// A header as a string.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.headers.get_str(name)
    }
}

/// A blocking HTTP/1.1 client over one connection, for tests.
pub struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    /// Connects to `addr`.
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(CLIENT_TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        Client {
            stream,
            buf: Vec::new(),
        }
    }

    /// Sends raw bytes.
    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// Tries to send raw bytes; false if the connection is gone.
    pub fn try_send(&mut self, bytes: &[u8]) -> bool {
        self.stream.write_all(bytes).is_ok()
    }

    /// Reads one response to a request of `method`; `None` if the connection closed (or reset)
    /// before a complete head.
    pub fn read_response(&mut self, method: &str) -> Option<Response> {
        let limits = Limits::default();
        let head = loop {
            if let Ok(Parsed::Complete { head, len }) = parse_response(&self.buf, &limits) {
                self.buf.drain(..len);
                break head;
            }
            if !self.fill() {
                return None;
            }
        };
        let framing = response_framing(&method.parse::<Method>().expect("a method"), &head)
            .expect("valid response framing");
        let mut decoder = BodyDecoder::new(&framing);
        let mut body = Vec::new();
        loop {
            while !self.buf.is_empty() && !decoder.is_done() {
                let d = decoder.decode(&self.buf).expect("valid response body");
                body.extend_from_slice(&self.buf[d.data.clone()]);
                self.buf.drain(..d.consumed);
            }
            if decoder.decode(&[]).expect("valid response body").done {
                break;
            }
            if !self.fill() {
                decoder.on_eof().expect("response body complete at EOF");
                break;
            }
        }
        Some(Response { head, body })
    }

    /// Sends a request and reads its response.
    pub fn request(&mut self, method: &str, raw: &[u8]) -> Option<Response> {
        self.send(raw);
        self.read_response(method)
    }

    fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 64 * 1024];
        loop {
            return match self.stream.read(&mut chunk) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Ok(0) | Err(_) => false,
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    true
                }
            };
        }
    }

    /// True if the server closed the connection (EOF or reset) within a second, with no
    /// further bytes; a read that times out means the connection is still open.
    pub fn is_closed(&mut self) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        self.stream
            .set_read_timeout(Some(Duration::from_secs(1)))
            .unwrap();
        let mut b = [0u8; 1];
        let r = self.stream.read(&mut b);
        self.stream.set_read_timeout(Some(CLIENT_TIMEOUT)).unwrap();
        match r {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
        }
    }
}

/// One request on a fresh connection: returns the response and whether the server then closed.
pub fn one_shot(addr: SocketAddr, method: &str, raw: &[u8]) -> (Option<Response>, bool) {
    let mut c = Client::connect(addr);
    c.send(raw);
    let r = c.read_response(method);
    let closed = c.is_closed();
    (r, closed)
}

/// A GET request with a Host header.
pub fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").into_bytes()
}

/// A hand-scripted origin on a std thread: each accepted connection is handed to `handler` on
/// its own thread. For behaviour the benchmark origin does not have (interim responses,
/// malformed or truncated answers). Stops accepting when dropped.
pub struct ScriptedOrigin {
    addr: SocketAddr,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    connections: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl ScriptedOrigin {
    /// Starts it on a free port.
    pub fn start(handler: impl Fn(TcpStream) + Send + Sync + 'static) -> ScriptedOrigin {
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        use std::sync::Arc;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let connections = Arc::new(AtomicUsize::new(0));
        let handler = Arc::new(handler);
        let (stop2, conns2) = (Arc::clone(&stop), Arc::clone(&connections));
        std::thread::spawn(move || {
            while !stop2.load(Ordering::Acquire) {
                match listener.accept() {
                    Ok((s, _)) => {
                        conns2.fetch_add(1, Ordering::AcqRel);
                        s.set_nonblocking(false).unwrap();
                        s.set_read_timeout(Some(CLIENT_TIMEOUT)).unwrap();
                        let h = Arc::clone(&handler);
                        std::thread::spawn(move || h(s));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        ScriptedOrigin {
            addr,
            stop,
            connections,
        }
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(std::sync::atomic::Ordering::Acquire)
    }
}

impl Drop for ScriptedOrigin {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Release);
    }
}

/// Reads from `s` until a blank line ends a head; returns the head's bytes (and keeps nothing
/// past it: scripted origins are used with requests without bodies or read bodies themselves).
pub fn read_head_raw(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut b) {
            Ok(1) => head.push(b[0]),
            _ => return None,
        }
    }
    Some(head)
}

/// A request with a valid head and no body, to pipeline in front of a case.
pub const VALID: &[u8] = b"GET /sink HTTP/1.1\r\nHost: t\r\n\r\n";

/// Sends `raw` through a fresh gateway in front of a fresh benchmark origin, alone and then
/// pipelined behind [`VALID`], and asserts the adversarial contract: the answer is `status`,
/// the connection closes, and the origin receives nothing of it (only the valid request).
pub fn assert_rejected(raw: &[u8], status: u16) {
    assert_rejected_with(raw, status, "");
}

/// [`assert_rejected`] with extra gateway configuration (`[http]` limits).
pub fn assert_rejected_with(raw: &[u8], status: u16, extra: &str) {
    let o = origin();
    let gw = gateway(&gateway_config(&[o.addr()], extra));
    let addr = gw.local_addrs()[0];
    // Alone.
    let (r, closed) = one_shot(addr, "POST", raw);
    let got = r.map(|r| r.status());
    assert_eq!(got, Some(status), "alone: status");
    assert!(closed, "alone: the connection must close");
    assert_eq!(
        o.stats().requests,
        0,
        "alone: the origin must receive nothing"
    );
    // Pipelined behind a valid request, in one write.
    let mut c = Client::connect(addr);
    let mut both = VALID.to_vec();
    both.extend_from_slice(raw);
    c.send(&both);
    let first = c
        .read_response("GET")
        .expect("the valid request is answered");
    assert_eq!(first.status(), 200, "pipelined: the valid request");
    let second = c.read_response("POST").map(|r| r.status());
    assert_eq!(second, Some(status), "pipelined: status");
    assert!(c.is_closed(), "pipelined: the connection must close");
    assert_eq!(
        o.stats().requests,
        1,
        "pipelined: the origin receives only the valid request"
    );
}

/// Sends `raw` through a fresh gateway and benchmark origin and asserts a 200 whose origin saw
/// a body of `body_len` bytes (`/sink`), with the connection kept open.
pub fn assert_accepted(raw: &[u8], body_len: usize) {
    assert_accepted_with(raw, body_len, "");
}

/// [`assert_accepted`] with extra gateway configuration.
pub fn assert_accepted_with(raw: &[u8], body_len: usize, extra: &str) {
    let o = origin();
    let gw = gateway(&gateway_config(&[o.addr()], extra));
    let mut c = Client::connect(gw.local_addrs()[0]);
    let r = c.request("POST", raw).expect("answered");
    assert_eq!(r.status(), 200);
    let len = r
        .header("x-body-len")
        .map_or(0, |v| v.parse::<usize>().unwrap());
    assert_eq!(len, body_len, "body length the origin saw");
    assert_eq!(o.stats().requests, 1);
    assert!(!c.is_closed(), "an accepted request keeps the connection");
}

/// An origin answering `200 ok` to every head it reads (no body reading): for limits the
/// benchmark origin has itself.
pub fn any_head_origin() -> ScriptedOrigin {
    ScriptedOrigin::start(|mut s| {
        while read_head_raw(&mut s).is_some() {
            if s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                .is_err()
            {
                return;
            }
        }
    })
}

/// Defines one `#[test]` per case: `name: bytes => status;` asserts [`assert_rejected`].
#[macro_export]
macro_rules! rejects {
    ($($(#[$m:meta])* $name:ident: $raw:expr => $status:expr;)*) => {
        $(
            $(#[$m])*
            #[test]
            fn $name() {
                $crate::for_each_backend(|| $crate::assert_rejected(&$raw[..], $status));
            }
        )*
    };
}
