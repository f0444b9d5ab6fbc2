//! `balancer_pick`: nanoseconds per `Selector::pick` for every balancing algorithm at 4, 64 and
//! 1024 backends, plus the cost of building each snapshot's tables.
//!
//! Wall-clock mode (the default) for people: `cargo run --release -p ringway-perf --bin
//! balancer_pick`. For a noise-free instruction count, run few iterations under callgrind:
//! `valgrind --tool=callgrind target/release/balancer_pick --iterations 1000`.

use std::hint::black_box;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringway_balancer::{Algorithm, Backend, BackendSet, NoExclude, Outcome, Selector};

/// Backend counts measured.
const SIZES: [usize; 3] = [4, 64, 1024];
/// Picks timed per round unless `--iterations` says otherwise.
const DEFAULT_ITERATIONS: u64 = 200_000;
/// Timed rounds per cell; the fastest is reported (the others lost time to interference).
const ROUNDS: u32 = 5;
/// Distinct hash keys cycled through (client-IP-like strings).
const KEYS: usize = 4096;
/// PRNG seed, fixed so runs are comparable.
const SEED: u64 = 0x00C0_FFEE;

/// One row of the table.
#[derive(Clone, Copy)]
enum Scenario {
    /// `pick` alone.
    Pick(Algorithm),
    /// `pick`, `on_start` and `on_finish`: the full per-attempt bookkeeping, with up to eight
    /// attempts in flight so in-flight counts differ.
    PickWithAccounting(Algorithm),
}

impl Scenario {
    fn label(self) -> String {
        match self {
            Self::Pick(a) => a.name().to_owned(),
            Self::PickWithAccounting(a) => format!("{} +start/finish", a.name()),
        }
    }

    fn algorithm(self) -> Algorithm {
        match self {
            Self::Pick(a) | Self::PickWithAccounting(a) => a,
        }
    }
}

fn main() -> ExitCode {
    let iterations = match parse_iterations(std::env::args().skip(1)) {
        Ok(n) => n,
        Err(msg) => {
            eprintln!("balancer_pick: {msg}\nusage: balancer_pick [--iterations N]");
            return ExitCode::from(2);
        }
    };
    let keys: Vec<Vec<u8>> = (0..KEYS)
        .map(|i| format!("198.51.{}.{}", i / 256, i % 256).into_bytes())
        .collect();
    let mut scenarios: Vec<Scenario> = Algorithm::ALL.into_iter().map(Scenario::Pick).collect();
    scenarios.push(Scenario::PickWithAccounting(Algorithm::LeastInflight));

    let sets: Vec<Vec<Backend>> = SIZES.iter().map(|&n| backends(n)).collect();
    println!(
        "balancer_pick: ns per pick, best of {ROUNDS} rounds of {iterations} picks, {KEYS} distinct keys,"
    );
    println!("weights cycling 1, 2, 3; every backend healthy; nothing excluded.\n");
    print!("{:<36}", "algorithm");
    for n in SIZES {
        print!("{:>14}", format!("{n} peers"));
    }
    println!();
    for scenario in &scenarios {
        print!("{:<36}", scenario.label());
        for list in &sets {
            let set = match BackendSet::new(list.clone()) {
                Ok(set) => set,
                Err(e) => {
                    eprintln!("balancer_pick: {e}");
                    return ExitCode::FAILURE;
                }
            };
            set.prepare(scenario.algorithm());
            let ns = ns_per_pick(*scenario, Arc::new(set), &keys, iterations);
            print!("{ns:>14.1}");
        }
        println!();
    }

    println!("\nsnapshot build, ms (BackendSet::new + prepare, control plane, once per change)");
    for algorithm in [Algorithm::RoundRobin, Algorithm::Ketama, Algorithm::Maglev] {
        print!("{:<36}", algorithm.name());
        for list in &sets {
            let start = Instant::now();
            if let Ok(set) = BackendSet::new(list.clone()) {
                set.prepare(algorithm);
                black_box(&set);
            }
            print!("{:>14.3}", start.elapsed().as_secs_f64() * 1e3);
        }
        println!();
    }
    ExitCode::SUCCESS
}

/// `n` backends on distinct addresses with weights 1, 2, 3, 1, 2, 3, ...
fn backends(n: usize) -> Vec<Backend> {
    (0..n)
        .map(|i| {
            let addr = SocketAddr::from(([10, 2, (i / 256) as u8, (i % 256) as u8], 8080));
            Backend::new(addr).with_weight((i % 3) as u32 + 1)
        })
        .collect()
}

/// Times `ROUNDS` rounds of `iterations` picks (after a tenth as many to warm caches) and returns
/// the fastest round's ns per pick.
fn ns_per_pick(scenario: Scenario, set: Arc<BackendSet>, keys: &[Vec<u8>], iterations: u64) -> f64 {
    let mut selector = Selector::with_seed(set, scenario.algorithm(), SEED);
    let now = Instant::now();
    run(scenario, &mut selector, keys, now, iterations / 10);
    let mut best = Duration::MAX;
    for _ in 0..ROUNDS {
        let start = Instant::now();
        run(scenario, &mut selector, keys, now, iterations);
        best = best.min(start.elapsed());
    }
    best.as_nanos() as f64 / iterations.max(1) as f64
}

fn run(scenario: Scenario, selector: &mut Selector, keys: &[Vec<u8>], now: Instant, n: u64) {
    let mut key = 0usize;
    match scenario {
        Scenario::Pick(_) => {
            for _ in 0..n {
                let k = black_box(keys[key].as_slice());
                black_box(selector.pick(Some(k), now, &NoExclude));
                key = if key + 1 == keys.len() { 0 } else { key + 1 };
            }
        }
        Scenario::PickWithAccounting(_) => {
            let mut in_flight = std::collections::VecDeque::with_capacity(8);
            let outcome = Outcome::success(Duration::from_micros(250));
            for _ in 0..n {
                let k = black_box(keys[key].as_slice());
                if let Some(picked) = selector.pick(Some(k), now, &NoExclude) {
                    in_flight.push_back(selector.on_start(picked));
                }
                if in_flight.len() == 8 {
                    if let Some(attempt) = in_flight.pop_front() {
                        selector.on_finish(attempt, black_box(outcome), now);
                    }
                }
                key = if key + 1 == keys.len() { 0 } else { key + 1 };
            }
            for attempt in in_flight {
                selector.on_finish(attempt, outcome, now);
            }
        }
    }
}

/// Reads `--iterations N` (or `--iterations=N`); anything else is an error.
fn parse_iterations(mut args: impl Iterator<Item = String>) -> Result<u64, String> {
    let mut iterations = DEFAULT_ITERATIONS;
    while let Some(arg) = args.next() {
        let value = match arg.as_str() {
            "--iterations" => args.next().ok_or("--iterations needs a value")?,
            other => match other.strip_prefix("--iterations=") {
                Some(v) => v.to_owned(),
                None => return Err(format!("unknown argument {other:?}")),
            },
        };
        iterations = value
            .parse()
            .map_err(|_| format!("--iterations: {value:?} is not a whole number"))?;
        if iterations == 0 {
            return Err("--iterations must be at least 1".to_owned());
        }
    }
    Ok(iterations)
}
