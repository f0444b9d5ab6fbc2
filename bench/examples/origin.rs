//! Runs the benchmark origin until Ctrl-C, for measurements before the `ringway origin` CLI
//! exists: `origin [--listen ADDR] [--cpus 1,2] [--body-size N] [--delay-ms N] [--chunked]`.

use std::time::Duration;

use ringway_bench::origin::{self, OriginConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut cfg = OriginConfig::default();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--listen" => cfg.listen = value()?.parse()?,
            "--cpus" => cfg.cpus = parse_list(&value()?)?,
            "--body-size" => cfg.body_size = value()?.parse()?,
            "--delay-ms" => cfg.delay = Duration::from_millis(value()?.parse()?),
            "--chunked" => cfg.chunked = true,
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    let handle = origin::start(cfg)?;
    eprintln!(
        "origin listening on {} (pid {})",
        handle.addr(),
        std::process::id()
    );
    handle.run_until_signal()?;
    Ok(())
}

fn parse_list(s: &str) -> Result<Vec<usize>, std::num::ParseIntError> {
    s.split(',')
        .filter(|p| !p.is_empty())
        .map(str::parse)
        .collect()
}
