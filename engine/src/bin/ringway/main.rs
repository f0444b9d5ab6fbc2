//! The `ringway` command line: `serve` a configuration, `check` one, run the benchmark
//! `origin`, drive `load`, or run the self-contained `demo`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use ringway::config;
use ringway::gateway::Gateway;
use ringway::Server;

mod cli;

/// Ringway: a thread-per-core, io_uring HTTP proxy engine.
#[derive(Parser)]
#[command(name = "ringway", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway described by a configuration file until SIGTERM/SIGINT.
    Serve {
        /// The TOML configuration.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate a configuration file: exit 0 when valid, 1 with the reason otherwise.
    Check {
        /// The TOML configuration.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Print an example configuration.
    ExampleConfig,
    /// Run the benchmark origin: a fixed body, `/echo`, `/sink`, `/headers`, `/status/NNN`.
    Origin(cli::OriginArgs),
    /// Drive HTTP/1.1 load at one or more URLs and report throughput and latency.
    Load(cli::LoadArgs),
    /// Start origins and the gateway on free loopback ports, drive load, print a report.
    Demo(cli::DemoArgs),
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_timestamp_millis()
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve { config } => serve(&config),
        Command::Check { config } => match config::load(&config) {
            Ok(c) => {
                println!(
                    "{}: ok ({} listeners, {} upstreams, {} routes)",
                    config.display(),
                    c.server.listeners.len(),
                    c.upstreams.len(),
                    c.routes.len()
                );
                Ok(())
            }
            Err(e) => Err(e.to_string()),
        },
        Command::ExampleConfig => {
            print!("{}", config::EXAMPLE);
            Ok(())
        }
        Command::Origin(a) => cli::origin(a),
        Command::Load(a) => cli::load(a),
        Command::Demo(a) => cli::demo(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ringway: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The whole pipeline in one place: config -> server conf + per-core gateway -> run.
fn serve(path: &std::path::Path) -> Result<(), String> {
    let cfg = config::load(path).map_err(|e| e.to_string())?;
    let addrs: Vec<SocketAddr> = cfg.server.listeners.iter().map(|l| l.addr).collect();
    log::info!("serving {} on {:?}", path.display(), addrs);
    let server_conf = cfg.server.clone();
    let server = Server::new(server_conf, move |_core| Gateway::new(&cfg));
    server.run().map_err(|e| e.to_string())?;
    log::info!("shut down cleanly");
    let _ = Duration::ZERO;
    Ok(())
}
