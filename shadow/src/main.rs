//! `ktx-shadow` binary: parse the config, start logging, load the session's credentials, serve
//! until SIGTERM or Ctrl-C, then drain.

use clap::Parser;
use ktx_shadow::config::Config;
use ktx_shadow::{Settings, Shadow};

/// glibc settings for the tunnel's buffers, which glibc reads only at startup: so, unless the
/// operator set `GLIBC_TUNABLES`, re-run ourselves with them (`ktx_telemetry::reexec_with_env`:
/// same PID, same arguments).
///
/// - malloc: 256 KiB HTTP/2 frames are read into buffers that h2 replaces as frames are handed
///   on; by default glibc serves them with fresh `mmap`s or trims the heap under them, so every
///   page is faulted in again — 100,000+ page faults per GiB carried and ~20% of the shadow's
///   CPU. A fixed 4 MiB mmap threshold and a 64 MiB trim threshold keep those pages (measured:
///   under 1,000 faults per GiB).
/// - memcpy: rustls copies each decrypted 16 KiB record out of its receive buffer, from 5 bytes
///   past an aligned address (the record header). glibc 2.36 (Debian 12, which the image's
///   static binary links) copies 2 KiB–1 MiB with `rep movsb`, which the AMD EPYC we measure on
///   runs several times slower for that copy than glibc's vector loop: it was a third of the
///   shadow's CPU. Vector loops up to 1 MiB (Intel cores run them as fast as `rep movsb` at
///   these sizes) measured, `loadtests/tunnel.sh`'s single stream on loopback, 3 × 1 GiB, twice
///   each, alternating: shadow 896–906 → 606–640 ms CPU per GiB, memmove 36% → 8% of its
///   profile, 774–872 → 804–958 MiB/s (the ktx end, unchanged, is then the slower side).
fn main() -> anyhow::Result<()> {
    ktx_telemetry::reexec_with_env(
        "ktx-shadow",
        "GLIBC_TUNABLES",
        "glibc.malloc.mmap_threshold=4194304:glibc.malloc.trim_threshold=67108864:\
         glibc.cpu.x86_rep_movsb_threshold=1048576",
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
