//! The binary's configuration (flags, or env vars for the e2e image) and its run loop.
//!
//! Runtime and logging are set up by `main.rs`; this file serves until SIGTERM/SIGINT and then
//! drains with a deadline. The `client` subcommand is [`crate::client`]'s.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use tracing::info;

/// A backend for ktx tests and benchmarks: HTTP/1.1, h2c, gRPC and WebSocket on one port; every
/// answer says which instance sent it (header `x-ktx-backend`). `ktx-testbackend client ...`
/// calls one.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "ktx-testbackend",
    version,
    args_conflicts_with_subcommands = true
)]
pub struct Config {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Address to serve on; repeat the flag (or separate with commas) for several.
    #[arg(
        long = "listen",
        env = "KTX_BACKEND_LISTEN",
        value_delimiter = ',',
        default_value = "0.0.0.0:8080"
    )]
    pub listen: Vec<SocketAddr>,

    /// Also serve raw TCP here (no HTTP): a banner with the name, then an echo of every byte.
    /// Repeat the flag (or separate with commas) for several.
    #[arg(
        long = "tcp-listen",
        env = "KTX_BACKEND_TCP_LISTEN",
        value_delimiter = ','
    )]
    pub tcp_listen: Vec<SocketAddr>,

    /// Name put in every answer (header `x-ktx-backend`, body of `GET /`).
    #[arg(long, env = "KTX_BACKEND_NAME", default_value = "testbackend")]
    pub name: String,

    /// Worker threads (1 to 1024); default: one per CPU this process may run on.
    #[arg(long, env = "KTX_BACKEND_THREADS", value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1024))]
    pub threads: Option<usize>,

    /// Log filter, in `tracing` env-filter syntax (e.g. `info`, `ktx_testbackend=debug`).
    #[arg(long, env = "KTX_BACKEND_LOG", default_value = "info")]
    pub log_level: String,

    /// How long open connections may take to finish after SIGTERM.
    #[arg(long, env = "KTX_BACKEND_DRAIN_SECONDS", default_value_t = 5)]
    pub drain_seconds: u64,
}

/// What the binary does instead of serving.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Call a test backend (directly or through a router) and say which backend answered.
    Client(crate::client::ClientArgs),
}

/// Serves every `--listen` (and `--tcp-listen`) address until SIGTERM or SIGINT, then drains.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let mut backends = Vec::with_capacity(config.listen.len());
    for addr in &config.listen {
        let backend = crate::spawn(&config.name, *addr)
            .await
            .with_context(|| format!("listen on {addr}"))?;
        info!(addr = %backend.addr(), name = %config.name, "serving");
        backends.push(backend);
    }
    let mut tcp = Vec::with_capacity(config.tcp_listen.len());
    for addr in &config.tcp_listen {
        let backend = crate::spawn_tcp(&config.name, *addr)
            .await
            .with_context(|| format!("listen on {addr} (tcp)"))?;
        info!(addr = %backend.addr(), name = %config.name, "serving raw tcp");
        tcp.push(backend);
    }
    shutdown_signal().await?;
    info!("shutting down");
    let deadline = Duration::from_secs(config.drain_seconds);
    drop(tcp);
    futures_util::future::join_all(backends.into_iter().map(|b| b.shutdown(deadline))).await;
    Ok(())
}

async fn shutdown_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("install SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("install SIGINT handler")?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}
