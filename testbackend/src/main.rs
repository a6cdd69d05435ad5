//! `ktx-testbackend`: parse the config, set up logging and the runtime, then serve until SIGTERM
//! (or, with `client`, make the calls asked for). Everything else lives in the library so tests
//! run the same code in-process.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use ktx_testbackend::{client, Command, Config};
use tracing_subscriber::EnvFilter;

fn main() -> anyhow::Result<ExitCode> {
    let config = Config::parse();
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_new(&config.log_level)?)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    // The client makes one call at a time: one thread, as curl has (a `download` measured in
    // a pod then costs what curl's would). The server gets a worker per CPU unless told.
    let mut runtime = match config.command {
        Some(Command::Client(_)) => tokio::runtime::Builder::new_current_thread(),
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    runtime.enable_all();
    if let (None, Some(threads)) = (&config.command, config.threads) {
        runtime.worker_threads(threads.max(1));
    }
    let runtime = runtime.build()?;
    match config.command {
        Some(Command::Client(args)) => match runtime.block_on(client::run(&args)) {
            Ok(_) => Ok(ExitCode::SUCCESS),
            Err(error) => {
                eprintln!("ktx-testbackend client: {error}");
                Ok(ExitCode::FAILURE)
            }
        },
        None => runtime
            .block_on(ktx_testbackend::run(config))
            .map(|()| ExitCode::SUCCESS),
    }
}
