//! `ktx-shadow` binary: parse the config, start logging, load the session's credentials, serve
//! until SIGTERM or Ctrl-C, then drain.

use clap::Parser;
use ktx_shadow::config::Config;
use ktx_shadow::{Settings, Shadow};

// mimalloc, not glibc's malloc, for two reasons the cluster showed (ktx-shadow as its pod runs
// it: user 65532, the binary carrying cap_net_bind_service as a file capability):
//
// - The file capability makes every exec of the binary a secure one (AT_SECURE), and glibc then
//   ignores `GLIBC_TUNABLES`. The malloc settings the shadow used to re-exec itself with (a fixed
//   mmap threshold and a high trim threshold, so the tunnel's 256 KiB frame buffers keep their
//   pages) never applied in a pod: 137,110 page faults per 3 GiB carried on loopback as the pod
//   runs it, against 1,716 as root without the capability, where they did apply. mimalloc keeps
//   freed pages for reuse (its purge delay) without asking the environment.
// - rustls copies each decrypted 16 KiB record into a new 16 KiB buffer. glibc 2.36's memcpy
//   does that with `rep movsb`, which this AMD EPYC runs ~25 times slower (3.3 against 80+ GB/s,
//   hot cache) when the destination lies 1–15 bytes past the source modulo 4 KiB; where glibc's
//   malloc happened to place the buffers, that copy was a third of the shadow's CPU. mimalloc
//   serves 16 KiB from a size class of 16 KiB blocks, page-aligned, which puts the destination
//   before the source (modulo 4 KiB) but for a record that starts in the last 15 bytes of a
//   page. The other direction (rustls copying plaintext into a page-aligned record buffer)
//   is kept out of that case by the tunnel's read buffers (`ktx_tunnel::splice`).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc reads its options from the environment when the process starts (itself, so a secure
/// exec keeps them). Transparent huge pages off, as in the router: memory then comes and goes
/// in 4 KiB pages rather than 2 MiB ones (measured, 1,000 idle tunnel streams: 13.3 KiB of RSS
/// each instead of 16.9; glibc's malloc as the pod ran it: 12.9). So, unless the operator chose
/// otherwise, re-run ourselves with that option (`ktx_telemetry::reexec_with_env`: same PID,
/// same arguments).
fn main() -> anyhow::Result<()> {
    ktx_telemetry::reexec_with_env("ktx-shadow", "MIMALLOC_ALLOW_THP", "0");
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
