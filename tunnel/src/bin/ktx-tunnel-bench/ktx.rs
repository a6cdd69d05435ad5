//! `ktx`: the ktx end of the tunnel as its own process, configured from flags.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use ktx_tunnel::client::{ClientConfig, PortMap, Status, TcpConnector, Tunnel};
use ktx_tunnel::credentials::SideMaterial;
use ktx_tunnel::TunnelOptions;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Directory with tls.crt, tls.key and peer.crt (ktx's half).
    #[arg(long)]
    tls_dir: PathBuf,
    /// The shadow's tunnel address (or a relay in front of it).
    #[arg(long)]
    tunnel: SocketAddr,
    /// SHADOW_PORT=LOCAL_ADDR, repeatable.
    #[arg(long = "map", value_parser = parse_map, required = true)]
    map: Vec<(u16, SocketAddr)>,
    #[command(flatten)]
    tuning: ktx_tunnel::options::TuningArgs,
}

fn parse_map(s: &str) -> Result<(u16, SocketAddr), String> {
    let (port, addr) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not PORT=ADDR"))?;
    let port = port.parse().map_err(|_| format!("bad port in {s:?}"))?;
    let addr = addr.parse().map_err(|_| format!("bad address in {s:?}"))?;
    Ok((port, addr))
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let material = SideMaterial::load_dir(&args.tls_dir)?;
    let mut options = TunnelOptions::new("ktx-tunnel-bench");
    args.tuning.apply(&mut options);
    let config = ClientConfig {
        tls: material.ktx_config()?,
        ports: args.map.into_iter().collect::<PortMap>(),
        options,
        backoff: Default::default(),
    };
    let tunnel = Tunnel::spawn(config, Arc::new(TcpConnector { addr: args.tunnel }));
    let mut status = tunnel.status();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("listen for SIGTERM")?;
    loop {
        tokio::select! {
            changed = status.changed() => {
                if changed.is_err() {
                    break;
                }
                let now = status.borrow_and_update().clone();
                eprintln!("ktx end: {now:?}");
                if matches!(now, Status::Failed { .. } | Status::Stopped) {
                    break;
                }
            }
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    tunnel.shutdown().await?;
    Ok(())
}
