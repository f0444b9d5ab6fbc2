//! Runs the load generator once and prints its report, for measurements before the
//! `ringway load` CLI exists:
//! `load [-c N] [-d SECS] [--warmup SECS] [--cpus 0,1] [--rate RPS] [--close] [-m METHOD]
//! [-H 'Name: value'] [--body-size N] [--max N] [--json] [--plot FILE.svg] URL...`.

use std::io::Write;
use std::time::Duration;

use ringway_bench::load::{self, LoadConfig, Progress};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut cfg = LoadConfig::default();
    let mut json = false;
    let mut plot = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "-c" => cfg.connections = value()?.parse()?,
            "-d" => cfg.duration = Duration::from_secs_f64(value()?.parse()?),
            "--warmup" => cfg.warmup = Duration::from_secs_f64(value()?.parse()?),
            "--cpus" => {
                cfg.cpus = value()?
                    .split(',')
                    .filter(|p| !p.is_empty())
                    .map(str::parse)
                    .collect::<Result<_, _>>()?
            }
            "--rate" => cfg.rate = Some(value()?.parse()?),
            "--close" => cfg.close = true,
            "-m" => cfg.method = value()?,
            "-H" => {
                let h = value()?;
                let (n, v) = h.split_once(':').ok_or("-H wants 'Name: value'")?;
                cfg.headers
                    .push((n.trim().to_string(), v.trim().to_string()));
            }
            "--body-size" => cfg.body_size = value()?.parse()?,
            "--max" => cfg.max_requests = Some(value()?.parse()?),
            "--json" => json = true,
            "--plot" => plot = Some(value()?),
            url => cfg.urls.push(url.to_string()),
        }
    }
    let progress = |p: Progress| {
        eprint!(
            "\r{:>5.1}s  {} requests  {} errors{}",
            p.elapsed.as_secs_f64(),
            p.requests,
            p.errors,
            if p.warming_up { " (warm-up)" } else { "" }
        );
        let _ = std::io::stderr().flush();
    };
    let report = load::run(&cfg, Some(&progress))?;
    eprintln!();
    if json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.to_text());
    }
    if let Some(path) = plot {
        report.write_svg_plot(path)?;
    }
    Ok(())
}
