//! `h1_codec`: the hot functions of the HTTP/1.1 codec on the request path, one benchmark per
//! scenario: head parse (`parse_request`), head serialize (`encode_response_head`) and chunk
//! decode (`ChunkedDecoder`).
//!
//! Two modes, as rustls' `ci-bench` has them:
//! - wall clock (the default), for people: each benchmark runs for `--time` (default 1 s) in
//!   batches; every batch's ns per operation goes into an hdrhistogram and the table shows its
//!   p50, p99 and p99.9. `cargo run --release -p ringway-perf --bin h1_codec`.
//! - instruction counts, for a noise-free comparison: `--iterations N` runs exactly N operations
//!   of each selected benchmark and times nothing, for `valgrind --tool=callgrind`. `perf/run
//!   --callgrind` runs every benchmark at two iteration counts and divides the difference of the
//!   Ir totals by the difference of the counts, so start-up and set-up cancel out.
//!
//! `--bench NAME` (repeatable) selects benchmarks by exact name; `--list` prints the names.

use std::hint::black_box;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use ringway_protocols::http::v1::{
    encode_response_head, parse_request, BodyFraming, ChunkedDecoder, Limits, Parsed, ResponseHead,
};

/// Operations per timed batch in wall-clock mode: long enough for the clock (tens of µs),
/// short enough that a preemption spoils one sample rather than the run.
const BATCH: u64 = 256;
/// Wall-clock time per benchmark unless `--time` says otherwise.
const DEFAULT_TIME: Duration = Duration::from_secs(1);

/// A browser-like GET: request line, Host and six more fields (448 bytes).
const GET_BROWSER: &[u8] = b"GET /static/app/main.3f9c2e.js?v=20240611 HTTP/1.1\r\n\
Host: shop.example.com\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:126.0) Gecko/20100101 Firefox/126.0\r\n\
Accept: */*\r\n\
Accept-Language: en-US,en;q=0.5\r\n\
Accept-Encoding: gzip, deflate, br, zstd\r\n\
Referer: https://shop.example.com/cart\r\n\
Cookie: session=9f86d081884c7d659a2feaa0c55ad015; theme=dark; consent=1\r\n\
\r\n";

/// The request `ringway load` sends: request line and Host.
const GET_LOAD: &[u8] = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n";

/// One benchmark: a scenario name and the operation it repeats.
struct Bench {
    name: &'static str,
    what: &'static str,
    make: fn() -> Box<dyn FnMut() -> usize>,
}

const BENCHES: &[Bench] = &[
    Bench {
        name: "h1_parse_request_get_2_headers",
        what: "parse_request: the load generator's GET (40 B)",
        make: || parse(GET_LOAD),
    },
    Bench {
        name: "h1_parse_request_get_8_headers",
        what: "parse_request: a browser GET, 8 fields (448 B)",
        make: || parse(GET_BROWSER),
    },
    Bench {
        name: "h1_encode_response_head_5_headers",
        what: "encode_response_head: 200, 5 fields + Content-Length",
        make: encode,
    },
    Bench {
        name: "h1_chunked_decode_16k_4_chunks",
        what: "ChunkedDecoder: 16 KiB in 4 chunks of 4 KiB, fed whole",
        make: || chunked(4, 4096),
    },
    Bench {
        name: "h1_chunked_decode_1k_64_chunks",
        what: "ChunkedDecoder: 1 KiB in 64 chunks of 16 B, fed whole",
        make: || chunked(64, 16),
    },
];

fn parse(input: &'static [u8]) -> Box<dyn FnMut() -> usize> {
    let limits = Limits::default();
    Box::new(move || match parse_request(black_box(input), &limits) {
        Ok(Parsed::Complete { head, len }) => {
            let fields = head.headers.len();
            black_box(head);
            len + fields
        }
        _ => panic!("h1_codec: a benchmark request no longer parses"),
    })
}

fn encode() -> Box<dyn FnMut() -> usize> {
    let mut head = ResponseHead::new(200);
    head.headers.append("Date", "Tue, 11 Jun 2024 09:30:00 GMT");
    head.headers.append("Server", "origin");
    head.headers
        .append("Content-Type", "application/javascript; charset=utf-8");
    head.headers
        .append("Cache-Control", "public, max-age=31536000, immutable");
    head.headers.append("ETag", "\"3f9c2e-4000\"");
    let framing = BodyFraming::Length(16_384);
    let mut out = Vec::with_capacity(512);
    Box::new(move || {
        out.clear();
        encode_response_head(black_box(&head), &framing, None, &mut out);
        black_box(&out);
        out.len()
    })
}

fn chunked(chunks: usize, size: usize) -> Box<dyn FnMut() -> usize> {
    let mut body = Vec::new();
    for i in 0..chunks {
        body.extend_from_slice(format!("{size:x}\r\n").as_bytes());
        body.resize(body.len() + size, b'a' + (i % 26) as u8);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b"0\r\n\r\n");
    Box::new(move || {
        let mut decoder = ChunkedDecoder::new();
        let mut input = black_box(body.as_slice());
        let mut payload = 0;
        loop {
            match decoder.decode(input) {
                Ok(d) => {
                    payload += d.data.len();
                    input = &input[d.consumed..];
                    if d.done {
                        break;
                    }
                }
                Err(e) => panic!("h1_codec: the benchmark body no longer decodes: {e:?}"),
            }
        }
        black_box(payload)
    })
}

/// What the command line asked for.
struct Args {
    iterations: Option<u64>,
    time: Duration,
    names: Vec<String>,
    list: bool,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut out = Args {
        iterations: None,
        time: DEFAULT_TIME,
        names: Vec::new(),
        list: false,
    };
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) => (f.to_owned(), Some(v.to_owned())),
            None => (arg.clone(), None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or(format!("{flag} needs a value"))
        };
        match flag.as_str() {
            "--iterations" => {
                let v = value()?;
                let n: u64 = v
                    .parse()
                    .map_err(|_| format!("--iterations: {v:?} is not a whole number"))?;
                out.iterations = Some(n);
            }
            "--time" => {
                let v = value()?;
                let secs: f64 = v
                    .trim_end_matches('s')
                    .parse()
                    .map_err(|_| format!("--time: {v:?} is not a number of seconds"))?;
                out.time = Duration::from_secs_f64(secs.max(0.01));
            }
            "--bench" => out.names.push(value()?),
            "--list" => out.list = true,
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    for name in &out.names {
        if !BENCHES.iter().any(|b| b.name == name) {
            return Err(format!("no benchmark named {name:?} (see --list)"));
        }
    }
    Ok(out)
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(msg) => {
            eprintln!(
                "h1_codec: {msg}\nusage: h1_codec [--list] [--bench NAME]... \
                 [--time SECONDS | --iterations N]"
            );
            return ExitCode::from(2);
        }
    };
    let selected: Vec<&Bench> = BENCHES
        .iter()
        .filter(|b| args.names.is_empty() || args.names.iter().any(|n| n == b.name))
        .collect();
    if args.list {
        for b in &selected {
            println!("{}\t{}", b.name, b.what);
        }
        return ExitCode::SUCCESS;
    }
    if let Some(n) = args.iterations {
        // Instruction-count mode: a fixed amount of work, nothing timed.
        let mut sink = 0usize;
        for b in &selected {
            let mut op = (b.make)();
            for _ in 0..n {
                sink = sink.wrapping_add(op());
            }
        }
        black_box(sink);
        return ExitCode::SUCCESS;
    }
    println!(
        "h1_codec: ns per operation, batches of {BATCH}, {:.1} s per benchmark (p50 / p99 / p99.9 \
         of the batches; interference shows in the tail)\n",
        args.time.as_secs_f64()
    );
    println!(
        "{:<36}{:>10}{:>10}{:>10}{:>14}  what",
        "benchmark", "p50", "p99", "p99.9", "ops/s"
    );
    for b in &selected {
        let (hist, ops, elapsed) = wall_clock(b, args.time);
        println!(
            "{:<36}{:>10.1}{:>10.1}{:>10.1}{:>14.0}  {}",
            b.name,
            hist.value_at_quantile(0.50) as f64 / 10.0,
            hist.value_at_quantile(0.99) as f64 / 10.0,
            hist.value_at_quantile(0.999) as f64 / 10.0,
            ops as f64 / elapsed.as_secs_f64(),
            b.what,
        );
    }
    ExitCode::SUCCESS
}

/// Runs `b` for `time` after a tenth as long to warm caches; returns a histogram of
/// tenths of a nanosecond per operation (one sample per batch), the operations timed and the
/// time they took.
fn wall_clock(b: &Bench, time: Duration) -> (Histogram<u64>, u64, Duration) {
    let mut op = (b.make)();
    let mut hist = match Histogram::<u64>::new_with_bounds(1, 10_000_000_000, 3) {
        Ok(h) => h,
        Err(e) => panic!("h1_codec: histogram bounds: {e}"),
    };
    let warm = Instant::now();
    while warm.elapsed() < time / 10 {
        for _ in 0..BATCH {
            black_box(op());
        }
    }
    let start = Instant::now();
    let mut ops = 0u64;
    while start.elapsed() < time {
        let t = Instant::now();
        for _ in 0..BATCH {
            black_box(op());
        }
        let tenths = t.elapsed().as_nanos() as u64 * 10 / BATCH;
        hist.saturating_record(tenths.max(1));
        ops += BATCH;
    }
    (hist, ops, start.elapsed())
}
