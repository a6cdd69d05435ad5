//! `ktx-testbackend`: parse the config, set up logging and the runtime, serve until SIGTERM.
//! Everything else lives in the library so tests run the same server in-process.

use std::io::IsTerminal;

use clap::Parser;
use ktx_testbackend::Config;
use tracing_subscriber::EnvFilter;

fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_new(&config.log_level)?)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    if let Some(threads) = config.threads {
        runtime.worker_threads(threads.max(1));
    }
    runtime.build()?.block_on(ktx_testbackend::run(config))
}
