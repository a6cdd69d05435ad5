//! `ktx-router` binary: parse the config, start logging, build the runtime, serve until SIGTERM
//! or Ctrl-C, then drain.

use anyhow::Context;
use clap::Parser;
use ktx_router::config::{Config, LogFormat};
use tracing_subscriber::EnvFilter;

// mimalloc gives freed pages back to the OS: after idle keep-alive connections are parked, their
// buffers stop counting in RSS (glibc's malloc keeps them). It is also faster for this workload.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc reads its options from the environment when the process starts. Idle keep-alive
/// connections give their buffers back only if freed pages are purged promptly (the default
/// waits a second and then only purges when the allocator runs again, which an idle router
/// does not do; 0 purges on every free and costs ~15% more CPU per request under load, 10 ms
/// keeps both low). So, unless the operator chose otherwise, re-run ourselves with that
/// option: same PID, same arguments.
fn configure_allocator() {
    const PURGE: &str = "MIMALLOC_PURGE_DELAY";
    if std::env::var_os(PURGE).is_some() {
        return;
    }
    use std::os::unix::process::CommandExt;
    let mut args = std::env::args_os();
    let arg0 = args.next().unwrap_or_default();
    if let Ok(exe) = std::env::current_exe() {
        let err = std::process::Command::new(exe)
            .arg0(arg0)
            .args(args)
            .env(PURGE, "10")
            .exec();
        // exec only returns on failure; the router still works, with more memory per idle conn.
        eprintln!("ktx-router: could not re-exec with {PURGE}=10 ({err}); continuing");
    }
}

fn main() -> anyhow::Result<()> {
    configure_allocator();
    let cfg = Config::parse();
    let filter = EnvFilter::try_new(&cfg.log_level).with_context(|| {
        format!(
            "--log-level {:?} is not a valid filter (try `info`)",
            cfg.log_level
        )
    })?;
    match cfg.log_format {
        LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init(),
        LogFormat::Text => tracing_subscriber::fmt().with_env_filter(filter).init(),
    }
    let runtime = if cfg.threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        if cfg.threads > 1 {
            b.worker_threads(cfg.threads);
        }
        b.enable_all().build()
    }
    .context("start the async runtime")?;
    runtime.block_on(async move {
        let router = ktx_router::Router::start(cfg).await?;
        wait_for_signal().await;
        tracing::info!("shutting down: draining in-flight requests");
        router.shutdown().await;
        Ok(())
    })
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the router");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
