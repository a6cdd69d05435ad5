//! `ktx`, as a library: the CLI's types, the cluster objects it builds and the orchestration of
//! `mesh`, `exchange`, `preview`, `clean`, `recover`, `status` and the in-cluster `janitor`. `main.rs` only parses the
//! command line, starts logging and calls [`run`]; tests call the same functions in-process.
//!
//! Layers, bottom up: pure parsing and builders ([`cli`], [`expose`], [`ports`], [`rule`],
//! [`objects`], [`ownership`], [`takeover`]) → the cluster ([`kube`], [`lock`], [`session`], [`link`]) → the
//! undo stack ([`undo`], [`leave`]) → the commands ([`mesh`], [`exchange`], [`preview`],
//! [`clean`], [`recover`], [`status`]), which share a session's life cycle through [`flow`].

pub mod clean;
pub mod cli;
pub mod clock;
pub mod cluster;
pub mod error;
pub mod exchange;
pub mod expose;
pub mod flow;
pub mod janitor;
pub mod kube;
pub mod leave;
pub mod link;
pub mod liveness;
pub mod local;
pub mod lock;
pub mod mesh;
pub mod objects;
pub mod ownership;
pub mod permissions;
pub mod ports;
pub mod preview;
pub mod progress;
pub mod random;
pub mod recover;
pub mod router_metrics;
pub mod rule;
pub mod scale;
pub mod session;
pub mod shutdown;
pub mod status;
pub mod takeover;
pub mod target;
pub mod undo;

pub use error::{Error, Result};

use cli::{Cli, Command};
use flow::Ctx;
use progress::Progress;
use shutdown::Shutdown;

/// Runs one parsed command to its end; Ctrl-C and SIGTERM end sessions (and roll back setups).
pub async fn run(cli: Cli) -> Result<()> {
    let shutdown = Shutdown::from_signals();
    run_with(cli, shutdown, Progress::stderr()).await
}

/// [`run`] with the stop signal and progress display given by the caller (tests).
pub async fn run_with(cli: Cli, shutdown: Shutdown, progress: Progress) -> Result<()> {
    if let Command::Completions { shell } = cli.command {
        use clap::CommandFactory;
        let mut cmd = Cli::command();
        clap_complete::generate(shell, &mut cmd, "ktx", &mut std::io::stdout());
        return Ok(());
    }
    let kube = kube::Kube::connect(&cli.global).await?;
    if let Some(offset) = clock::sync(&kube.client).await {
        progress.warn(format!(
            "this machine's clock is {:.0} s {} the API server's; ktx uses the API server's time for Leases and locks (fix the clock: NTP)",
            offset.as_secs_f64().abs(),
            if offset.is_negative() { "ahead of" } else { "behind" }
        ));
    }
    let ctx = Ctx {
        kube,
        global: cli.global.clone(),
        holder: match &cli.command {
            Command::Janitor(a) => format!(
                "ktx janitor {}",
                a.identity.clone().unwrap_or_else(session::holder)
            ),
            _ => session::holder(),
        },
        progress,
    };
    // Sessions handle stop requests themselves (they roll back); the one-shot commands simply
    // stop, every step of theirs being safe to repeat.
    let one_shot = async {
        match &cli.command {
            Command::Status => status::run(&ctx).await,
            Command::Clean(args) => clean::run(&ctx, args).await,
            Command::Recover(args) => recover::run(&ctx, args).await,
            _ => Ok(()),
        }
    };
    match &cli.command {
        Command::Mesh(args) => mesh::run(&ctx, args, &shutdown).await,
        Command::Exchange(args) => exchange::run(&ctx, args, &shutdown).await,
        Command::Preview(args) => preview::run(&ctx, args, &shutdown).await,
        Command::Janitor(args) => janitor::run(&ctx, args, &shutdown).await,
        _ => tokio::select! {
            r = one_shot => r,
            _ = shutdown.reached(1) => Err(Error::Stopped),
        },
    }
}
