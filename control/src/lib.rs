//! `ktx`, as a library: the CLI's types, the cluster objects it builds and the orchestration of
//! `mesh`, `exchange`, `preview`, `clean`, `recover`, `status` and the in-cluster `janitor`. `main.rs` only parses the
//! command line, starts logging and calls [`run`]; tests call the same functions in-process.
//!
//! Layers, bottom up, one directory each: input ([`cli`], [`config`]); pure planning ([`plan`]:
//! target, ports, rule, selector takeover, ownership) and the objects ktx creates ([`objects`]);
//! cluster access ([`cluster`]: the API client, the clock, port-forward, the router's admin
//! endpoints, the permissions table); a session's life cycle ([`lifecycle`]: setup steps against
//! the undo stack, lock, Lease keeper, liveness, tunnel link, teardown); and the commands
//! ([`commands`]), each a thin sequence of those steps.

pub mod cli;
pub mod cluster;
pub mod commands;
pub mod config;
pub mod error;
pub mod lifecycle;
pub mod objects;
pub mod plan;
pub mod progress;
pub mod random;

pub use error::{Error, Result};

use cli::{Cli, Command};
use commands::{clean, connect, exchange, forward, janitor, mesh, preview, recover, status};
use lifecycle::flow::Ctx;
use lifecycle::session;
use lifecycle::shutdown::Shutdown;
use progress::Progress;

/// Runs one parsed command to its end; Ctrl-C and SIGTERM end sessions (and roll back setups).
pub async fn run(cli: Cli) -> Result<()> {
    let shutdown = Shutdown::from_signals();
    run_with(cli, shutdown, Progress::stderr()).await
}

/// Runs a command line resolved with ktx's config layers ([`config::resolve`]): the
/// namespace's ConfigMap `ktx-defaults` joins them once ktx reaches the cluster.
pub async fn run_resolved(resolved: config::Resolved) -> Result<()> {
    let shutdown = Shutdown::from_signals();
    run_layered(
        resolved.cli,
        Some(resolved.layers),
        shutdown,
        Progress::stderr(),
    )
    .await
}

/// [`run`] with the stop signal and progress display given by the caller (tests).
pub async fn run_with(cli: Cli, shutdown: Shutdown, progress: Progress) -> Result<()> {
    run_layered(cli, None, shutdown, progress).await
}

async fn run_layered(
    mut cli: Cli,
    layers: Option<config::Layers>,
    shutdown: Shutdown,
    progress: Progress,
) -> Result<()> {
    if let Command::Completions { shell } = cli.command {
        use clap::CommandFactory;
        let mut cmd = Cli::command();
        clap_complete::generate(shell, &mut cmd, "ktx", &mut std::io::stdout());
        return Ok(());
    }
    if let Command::Config(args) = &cli.command {
        let layers = match layers {
            Some(l) => l,
            // Called without the command line's layers (a test, the tunnel bench): the file's.
            None => {
                config::resolve(["ktx", "config", "show"])
                    .map_err(|e| Error::Config(e.into_config()))?
                    .layers
            }
        };
        return config::command::run(&layers, args, &cli.global).await;
    }
    let kube = cluster::api::Kube::connect(&cli.global).await?;
    // The janitor's settings are the chart's; the team's defaults are for developers.
    let janitor = matches!(cli.command, Command::Janitor(_));
    if let Some(mut layers) = layers.filter(|_| !janitor) {
        if let Some((values, warnings)) = config::namespace::read(&kube, layers.keys()).await {
            for w in warnings {
                progress.warn(w);
            }
            let name = format!("{}/{}", kube.namespace, config::namespace::NAME);
            match layers.with_namespace(&name, &values) {
                Ok(resolved) => cli = resolved,
                Err(e) => progress.warn(format!("ConfigMap {name} not used: {e}")),
            }
        }
    }
    if let Some(offset) = cluster::clock::sync(&kube.client).await {
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
        Command::Forward(args) => forward::run(&ctx, args, &shutdown).await,
        Command::Connect(args) => connect::run(&ctx, args, &shutdown).await,
        _ => tokio::select! {
            r = one_shot => r,
            _ = shutdown.reached(1) => Err(Error::Stopped),
        },
    }
}
