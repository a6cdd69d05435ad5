//! `ktx-shadow` binary: parse the config, start logging, load the session's credentials, serve
//! until SIGTERM or Ctrl-C, then drain.

use anyhow::Context;
use clap::Parser;
use ktx_shadow::config::{Config, LogFormat};
use ktx_shadow::{Settings, Shadow};
use tracing_subscriber::EnvFilter;

fn main() -> anyhow::Result<()> {
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
