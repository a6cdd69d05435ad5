//! `ktx-shadow` binary: parse the config, start logging, load the session's credentials, serve
//! until SIGTERM or Ctrl-C, then drain.

use clap::Parser;
use ktx_shadow::config::Config;
use ktx_shadow::{Settings, Shadow};

/// glibc's malloc settings for the tunnel's buffers (256 KiB HTTP/2 frames read into buffers
/// that h2 replaces as frames are handed on): by default glibc serves them with fresh `mmap`s
/// or trims the heap under them, so every page is faulted in again — 100,000+ page faults per
/// GiB carried and ~20% of the shadow's CPU. A fixed 4 MiB mmap threshold and a 64 MiB trim
/// threshold keep those pages (measured: under 1,000 faults per GiB). glibc reads tunables
/// only at startup, so, unless the operator set `GLIBC_TUNABLES`, re-run ourselves with them
/// (`ktx_telemetry::reexec_with_env`: same PID, same arguments).
fn main() -> anyhow::Result<()> {
    ktx_telemetry::reexec_with_env(
        "ktx-shadow",
        "GLIBC_TUNABLES",
        "glibc.malloc.mmap_threshold=4194304:glibc.malloc.trim_threshold=67108864",
    );
    let cfg = Config::parse();
    ktx_telemetry::init_logging(cfg.log_format, &cfg.log_level)?;
    let settings = Settings::from_config(&cfg)?;
    let runtime = ktx_telemetry::runtime(cfg.threads)?;
    runtime.block_on(async move {
        let shadow = Shadow::start(settings).await?;
        ktx_telemetry::wait_for_signal("shadow").await;
        tracing::info!("shutting down: not ready, draining open connections");
        shadow.shutdown().await;
        Ok(())
    })
}
