//! The `ringway` command line: `serve` a configuration, `check` one, run the benchmark
//! `origin`, drive `load`, or run the self-contained `demo`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ringway::config;
use ringway::gateway::{Gateway, GatewayShared};
use ringway::{RunOptions, Server};

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
        /// Offer the listening sockets on this Unix socket to a newer process started with
        /// `--upgrade` (zero-downtime upgrade); after handing them over, drain and exit.
        #[arg(long)]
        upgrade_socket: Option<PathBuf>,
        /// Take the listening sockets from the process serving `--upgrade-socket` instead of
        /// binding new ones; it drains once this process accepts.
        #[arg(long, requires = "upgrade_socket")]
        upgrade: bool,
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
        Command::Serve {
            config,
            upgrade_socket,
            upgrade,
        } => serve(&config, upgrade_socket, upgrade),
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
fn serve(
    path: &std::path::Path,
    upgrade_socket: Option<PathBuf>,
    upgrade: bool,
) -> Result<(), String> {
    let cfg = config::load(path).map_err(|e| e.to_string())?;
    let handover = match (&upgrade_socket, upgrade) {
        (Some(sock), true) => Some(
            ringway::listen::handover::receive(sock)
                .map_err(|e| format!("upgrade: no listeners from {}: {e}", sock.display()))?,
        ),
        _ => None,
    };
    let addrs: Vec<SocketAddr> = cfg.server.listeners.iter().map(|l| l.addr).collect();
    log::info!("serving {} on {:?}", path.display(), addrs);
    let server_conf = cfg.server.clone();
    // The control plane (health checks, re-resolution) runs once per process; each core builds
    // its own gateway from the snapshots it publishes.
    let shared = GatewayShared::start(&cfg).map_err(|e| format!("starting the gateway: {e}"))?;
    let server = Server::new(server_conf, move |_core| Gateway::new(&shared));
    server
        .run_with(RunOptions {
            upgrade_socket,
            handover,
        })
        .map_err(|e| e.to_string())?;
    log::info!("shut down cleanly");
    Ok(())
}
