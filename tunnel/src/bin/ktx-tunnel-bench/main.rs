//! `ktx-tunnel-bench`: the moving parts of `loadtests/tunnel.sh`, one subcommand each.
//!
//! - `creds`: a session's certificates as two directories (`shadow/`, `ktx/`) — the benchmark
//!   only; `ktx` itself never writes its key to disk.
//! - `ktx`: the ktx end of the tunnel (the library's client with a TCP connector).
//! - `connect`: ktx's end of a connect tunnel, forwarding a local port to one destination.
//! - `sink`: the "developer's process": streams bytes out, swallows bytes, or echoes.
//! - `relay`: a TCP relay that delays each direction (a long round trip without netem).
//! - `load`: throughput, paced latency and idle-connection clients; one JSON line per run.
//!
//! Everything is meant for 127.0.0.1 and every load run is bounded (bytes or seconds).

mod connect;
mod creds;
mod ktx;
mod load;
mod relay;
mod sink;

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "ktx-tunnel-bench", about)]
struct Cli {
    /// Worker threads; 1 runs everything on the calling thread.
    #[arg(long, global = true, default_value_t = 1)]
    threads: usize,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write a fresh session's credentials to DIR/shadow and DIR/ktx.
    Creds {
        #[arg(long)]
        out: PathBuf,
    },
    /// Run the ktx end: reach the shadow's tunnel port, map shadow ports to local addresses.
    Ktx(ktx::Args),
    /// Run the sink server.
    Sink {
        #[arg(long)]
        listen: SocketAddr,
    },
    /// Run ktx's end of a connect tunnel: a local port forwarded through the connect pod.
    Connect(connect::Args),
    /// Run a delaying relay.
    Relay(relay::Args),
    /// Run a load client.
    #[command(subcommand)]
    Load(load::Load),
}

// The allocator `ktx` has (control/src/main.rs says why), so that the ktx end measured here is
// ktx's.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("KTX_BENCH_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let mut builder = if cli.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(cli.threads);
        b
    };
    let runtime = builder.enable_all().build().context("start the runtime")?;
    runtime.block_on(async move {
        match cli.command {
            Command::Creds { out } => creds::write(&out),
            Command::Ktx(args) => ktx::run(args).await,
            Command::Connect(args) => connect::run(args).await,
            Command::Sink { listen } => sink::run(listen).await,
            Command::Relay(args) => relay::run(args).await,
            Command::Load(l) => load::run(l).await,
        }
    })
}
