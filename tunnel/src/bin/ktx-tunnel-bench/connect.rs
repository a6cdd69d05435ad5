//! `connect`: ktx's end of a connect tunnel as a local TCP forwarder. Every connection to
//! `--listen` becomes one stream to `--dest` through the connect pod (`ktx-shadow --mode
//! connect`), so the load clients measure the connect direction as they measure the other.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use ktx_tunnel::client::{Status, TcpConnector};
use ktx_tunnel::connect::client::{ConnectClient, ConnectConfig};
use ktx_tunnel::credentials::SideMaterial;
use ktx_tunnel::splice::NoObserver;
use ktx_tunnel::TunnelOptions;
use tokio::net::TcpListener;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Directory with tls.crt, tls.key and peer.crt (ktx's half).
    #[arg(long)]
    tls_dir: PathBuf,
    /// The connect pod's tunnel address.
    #[arg(long)]
    tunnel: SocketAddr,
    /// Local address the load client connects to.
    #[arg(long)]
    listen: SocketAddr,
    /// Where the pod connects each stream (not its loopback: the pod refuses that).
    #[arg(long)]
    dest: SocketAddr,
    #[command(flatten)]
    tuning: ktx_tunnel::options::TuningArgs,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let material = SideMaterial::load_dir(&args.tls_dir)?;
    let mut options = TunnelOptions::new("ktx-tunnel-bench");
    args.tuning.apply(&mut options);
    let read_chunk = options.read_chunk;
    let client = ConnectClient::start(
        ConnectConfig {
            tls: material.ktx_config()?,
            options,
            backoff: Default::default(),
            open: Default::default(),
        },
        Arc::new(TcpConnector { addr: args.tunnel }),
    );
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listen on {}", args.listen))?;
    let mut status = client.status();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("listen for SIGTERM")?;
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((socket, _)) = accepted else { continue };
                let _ = socket.set_nodelay(true);
                let handle = client.handle();
                let dest = args.dest;
                tokio::spawn(async move {
                    match handle.open(dest).await {
                        Ok(stream) => {
                            let _ = stream.splice(socket, read_chunk, &NoObserver).await;
                        }
                        Err(e) => eprintln!("connect end: open {dest}: {e}"),
                    }
                });
            }
            changed = status.changed() => {
                if changed.is_err() {
                    break;
                }
                let now = status.borrow_and_update().clone();
                eprintln!("connect end: {now:?}");
                if matches!(now, Status::Failed { .. } | Status::Stopped) {
                    break;
                }
            }
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    client.shutdown().await?;
    Ok(())
}
