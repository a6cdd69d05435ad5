//! `ktx-shadow` binary: parse the config, start logging, load the session's credentials, serve
//! until SIGTERM or Ctrl-C, then drain.

use anyhow::Context;
use clap::Parser;
use ktx_shadow::config::{Config, LogFormat};
use ktx_shadow::{Settings, Shadow};
use tracing_subscriber::EnvFilter;

/// glibc's malloc settings for the tunnel's buffers (256 KiB HTTP/2 frames read into buffers
/// that h2 replaces as frames are handed on): by default glibc serves them with fresh `mmap`s
/// or trims the heap under them, so every page is faulted in again — 100,000+ page faults per
/// GiB carried and ~20% of the shadow's CPU. A fixed 4 MiB mmap threshold and a 64 MiB trim
/// threshold keep those pages (measured: under 1,000 faults per GiB). glibc reads tunables
/// only at startup, so, unless the operator set `GLIBC_TUNABLES`, re-run ourselves with them:
/// same PID, same arguments.
fn configure_allocator() {
    const TUNABLES: &str = "GLIBC_TUNABLES";
    if std::env::var_os(TUNABLES).is_some() {
        return;
    }
    use std::os::unix::process::CommandExt;
    let mut args = std::env::args_os();
    let arg0 = args.next().unwrap_or_default();
    if let Ok(exe) = std::env::current_exe() {
        let err = std::process::Command::new(exe)
            .arg0(arg0)
            .args(args)
            .env(
                TUNABLES,
                "glibc.malloc.mmap_threshold=4194304:glibc.malloc.trim_threshold=67108864",
            )
            .exec();
        // exec only returns on failure; the shadow still works, with more page faults.
        eprintln!("ktx-shadow: could not re-exec with {TUNABLES} ({err}); continuing");
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
    let settings = Settings::from_config(&cfg)?;
    let mut builder = if cfg.threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        if cfg.threads > 1 {
            b.worker_threads(cfg.threads);
        }
        b
    };
    let runtime = builder
        .enable_all()
        .build()
        .context("start the async runtime")?;
    runtime.block_on(async move {
        let shadow = Shadow::start(settings).await?;
        wait_for_signal().await;
        tracing::info!("shutting down: not ready, draining open connections");
        shadow.shutdown().await;
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
            tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the shadow");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
