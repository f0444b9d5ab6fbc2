//! The benchmark subcommands of the `ringway` binary: `origin`, `load` and `demo`, thin
//! argument layers over `ringway-bench` and the engine.

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use ringway::config::{self, parse_duration};
use ringway::gateway::{Gateway, GatewayShared};
use ringway::Server;
use ringway_bench::load::{self, LoadConfig, Progress};
use ringway_bench::origin::{self, OriginConfig};

fn duration_arg(s: &str) -> Result<Duration, String> {
    parse_duration(s)
}

/// A CPU list argument: `0,1`, `2-5` or a mix (`0,2-3`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cpus(pub Vec<usize>);

/// Parses a [`Cpus`] argument (one value, so clap does not treat it as a list of arguments).
fn cpus_arg(s: &str) -> Result<Cpus, String> {
    cpu_list(s).map(Cpus)
}

/// Parses `0,1`, `2-5` or a mix (`0,2-3`).
fn cpu_list(s: &str) -> Result<Vec<usize>, String> {
    let mut out = Vec::new();
    for part in s.split(',').filter(|p| !p.is_empty()) {
        let bad = || format!("\"{part}\" is not a cpu number or range");
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) = (
                    a.trim().parse().map_err(|_| bad())?,
                    b.trim().parse().map_err(|_| bad())?,
                );
                if a > b {
                    return Err(bad());
                }
                out.extend(a..=b);
            }
            None => out.push(part.trim().parse().map_err(|_| bad())?),
        }
    }
    Ok(out)
}

fn header_arg(s: &str) -> Result<(String, String), String> {
    let (n, v) = s
        .split_once(':')
        .ok_or_else(|| format!("\"{s}\" is not 'Name: value'"))?;
    if n.trim().is_empty() {
        return Err(format!("\"{s}\" has an empty header name"));
    }
    Ok((n.trim().to_string(), v.trim().to_string()))
}

/// Arguments of `ringway origin`.
#[derive(Args)]
pub struct OriginArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9001")]
    listen: SocketAddr,
    /// Size of the fixed response body in bytes.
    #[arg(long, default_value_t = 13)]
    body_size: usize,
    /// Wait this long before each answer (`5ms`, `1s`).
    #[arg(long, value_parser = duration_arg, default_value = "0ms")]
    delay: Duration,
    /// Answer with chunked transfer coding.
    #[arg(long)]
    chunked: bool,
    /// CPUs to pin one executor each to (`1`, `0,1`, `2-3`); default one unpinned executor.
    #[arg(long, value_parser = cpus_arg)]
    cpus: Option<Cpus>,
}

/// Runs the origin until SIGINT/SIGTERM.
pub fn origin(a: OriginArgs) -> Result<(), String> {
    let handle = origin::start(OriginConfig {
        listen: a.listen,
        cpus: a.cpus.map(|c| c.0).unwrap_or_default(),
        body_size: a.body_size,
        delay: a.delay,
        chunked: a.chunked,
    })
    .map_err(|e| format!("origin on {}: {e}", a.listen))?;
    eprintln!(
        "origin listening on {} (body {} bytes{})",
        handle.addr(),
        a.body_size,
        if a.chunked { ", chunked" } else { "" }
    );
    handle.run_until_signal().map_err(|e| e.to_string())
}

/// Arguments of `ringway load`.
#[derive(Args)]
pub struct LoadArgs {
    /// Target URLs (`http://127.0.0.1:8080/path`); requests cycle through them.
    #[arg(required = true)]
    urls: Vec<String>,
    /// Concurrent connections.
    #[arg(short = 'c', long, default_value_t = 50)]
    connections: usize,
    /// Measured duration (`10s`).
    #[arg(short = 'd', long, value_parser = duration_arg, default_value = "10s")]
    duration: Duration,
    /// Warm-up before measuring.
    #[arg(long, value_parser = duration_arg, default_value = "0s")]
    warmup: Duration,
    /// CPUs to pin one load executor each to.
    #[arg(long, value_parser = cpus_arg)]
    cpus: Option<Cpus>,
    /// Open loop at this many requests per second (latency from intended send times).
    #[arg(long)]
    rate: Option<f64>,
    /// A new connection per request.
    #[arg(long)]
    close: bool,
    /// Request method.
    #[arg(short = 'm', long, default_value = "GET")]
    method: String,
    /// Extra header, `-H 'Name: value'` (repeatable).
    #[arg(short = 'H', long = "header", value_parser = header_arg)]
    headers: Vec<(String, String)>,
    /// Request body size in bytes.
    #[arg(long, default_value_t = 0)]
    body_size: usize,
    /// Per-request timeout.
    #[arg(long, value_parser = duration_arg, default_value = "10s")]
    timeout: Duration,
    /// Stop after exactly this many requests.
    #[arg(long)]
    requests: Option<u64>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Draw the latency percentile distribution to this SVG file.
    #[arg(long)]
    plot: Option<PathBuf>,
}

/// Draws a one-line progress bar on stderr when it is a terminal.
fn progress_bar() -> Option<impl Fn(Progress)> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    Some(|p: Progress| {
        let frac = match (p.total, p.max_requests) {
            (Some(t), _) if !t.is_zero() => p.elapsed.as_secs_f64() / t.as_secs_f64(),
            (_, Some(m)) if m > 0 => p.requests as f64 / m as f64,
            _ => 0.0,
        }
        .clamp(0.0, 1.0);
        let filled = (frac * 30.0) as usize;
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\r[{}{}] {:>5.1}s {:>10} req {:>6} err{}",
            "#".repeat(filled),
            " ".repeat(30 - filled),
            p.elapsed.as_secs_f64(),
            p.requests,
            p.errors,
            if p.warming_up {
                " (warm-up)"
            } else {
                "          "
            }
        );
        let _ = err.flush();
    })
}

fn clear_bar() {
    if std::io::stderr().is_terminal() {
        eprint!("\r{}\r", " ".repeat(72));
    }
}

/// Runs a load test and prints its report.
pub fn load(a: LoadArgs) -> Result<(), String> {
    let cfg = LoadConfig {
        urls: a.urls,
        connections: a.connections,
        duration: a.duration,
        warmup: a.warmup,
        cpus: a.cpus.map(|c| c.0).unwrap_or_default(),
        rate: a.rate,
        close: a.close,
        method: a.method,
        headers: a.headers,
        body_size: a.body_size,
        timeout: a.timeout,
        max_requests: a.requests,
    };
    let bar = progress_bar();
    let report =
        load::run(&cfg, bar.as_ref().map(|f| f as &dyn Fn(Progress))).map_err(|e| e.to_string())?;
    clear_bar();
    if a.json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.to_text());
    }
    if let Some(p) = a.plot {
        report
            .write_svg_plot(&p)
            .map_err(|e| format!("{}: {e}", p.display()))?;
        eprintln!("latency plot written to {}", p.display());
    }
    Ok(())
}

/// Arguments of `ringway demo`.
#[derive(Args)]
pub struct DemoArgs {
    /// How long to drive load.
    #[arg(long, value_parser = duration_arg, default_value = "10s")]
    duration: Duration,
    /// Concurrent client connections.
    #[arg(short = 'c', long, default_value_t = 50)]
    connections: usize,
}

/// Starts two origins and the gateway on free loopback ports, drives load through it, and
/// prints what happened.
pub fn demo(a: DemoArgs) -> Result<(), String> {
    let start_origin = || {
        origin::start(OriginConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            ..OriginConfig::default()
        })
        .map_err(|e| format!("starting an origin: {e}"))
    };
    let (o1, o2) = (start_origin()?, start_origin()?);
    let text = format!(
        "[[listeners]]\naddress = \"127.0.0.1:0\"\n\n[[upstreams]]\nname = \"demo\"\npeers = [\"{}\", \"{}\"]\n\n[[routes]]\npath_prefix = \"/\"\nupstream = \"demo\"\n",
        o1.addr(),
        o2.addr()
    );
    let cfg = config::parse(&text, "<demo>").map_err(|e| e.to_string())?;
    let conf = cfg.server.clone();
    let shared = GatewayShared::start(&cfg).map_err(|e| e.to_string())?;
    let handle = Server::new(conf, move |_core| Gateway::new(&shared))
        .start()
        .map_err(|e| e.to_string())?;
    let addr = handle.local_addrs()[0];
    eprintln!(
        "demo: gateway on {addr} -> origins {} and {}; {} connections for {:?}",
        o1.addr(),
        o2.addr(),
        a.connections,
        a.duration
    );
    let load_cfg = LoadConfig {
        urls: vec![format!("http://{addr}/")],
        connections: a.connections,
        duration: a.duration,
        warmup: Duration::from_millis(500),
        ..LoadConfig::default()
    };
    let bar = progress_bar();
    let report = load::run(&load_cfg, bar.as_ref().map(|f| f as &dyn Fn(Progress)));
    clear_bar();
    // Current counters: every core publishes when asked.
    let stats = handle.stats();
    handle.shutdown();
    handle.join().map_err(|e| e.to_string())?;
    let report = report.map_err(|e| e.to_string())?;
    println!("{}", report.to_text());
    println!("gateway, per core:");
    for c in &stats.cores {
        println!(
            "  cpu {}: {} requests, {} connections accepted",
            c.core, c.requests, c.accepted
        );
    }
    let (reused, opened) = (
        stats.total(|c| c.upstream_reused),
        stats.total(|c| c.upstream_connects),
    );
    let ratio = if reused + opened == 0 {
        0.0
    } else {
        reused as f64 / (reused + opened) as f64
    };
    println!(
        "upstream connections: {opened} opened, {reused} reuses, reuse ratio {:.4}",
        ratio
    );
    println!(
        "origins: {} and {} requests",
        o1.stats().requests,
        o2.stats().requests
    );
    if report.requests == 0 {
        return Err("the demo completed no request".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists() {
        assert_eq!(cpus_arg("0,1"), Ok(Cpus(vec![0, 1])));
        assert_eq!(cpu_list("2-4"), Ok(vec![2, 3, 4]));
        assert_eq!(cpu_list("0,2-3"), Ok(vec![0, 2, 3]));
        assert!(cpus_arg("a").is_err());
        assert!(cpus_arg("3-1").is_err());
    }

    #[test]
    fn headers() {
        assert_eq!(header_arg("X-A: b c"), Ok(("X-A".into(), "b c".into())));
        assert!(header_arg("nocolon").is_err());
        assert!(header_arg(": v").is_err());
    }
}
