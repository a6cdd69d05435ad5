//! `relay`: forwards TCP connections to a target, holding every chunk for a fixed delay in
//! each direction, so a loopback path gets a real round trip (netem is not available). Data in
//! flight per direction is bounded.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio::time::Instant;

/// Bytes one direction may hold in its delay line.
const IN_FLIGHT: usize = 256 << 20;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[arg(long)]
    listen: SocketAddr,
    #[arg(long)]
    to: SocketAddr,
    /// One-way delay in milliseconds (the round trip is twice this).
    #[arg(long)]
    delay_ms: u64,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let listener = TcpListener::bind(args.listen).await?;
    let delay = Duration::from_millis(args.delay_ms);
    loop {
        let (a, _) = listener.accept().await?;
        let to = args.to;
        tokio::spawn(async move {
            let Ok(b) = TcpStream::connect(to).await else {
                return;
            };
            let _ = a.set_nodelay(true);
            let _ = b.set_nodelay(true);
            let (ar, aw) = a.into_split();
            let (br, bw) = b.into_split();
            tokio::join!(pipe(ar, bw, delay), pipe(br, aw, delay));
        });
    }
}

async fn pipe(mut r: OwnedReadHalf, mut w: OwnedWriteHalf, delay: Duration) {
    let budget = Arc::new(Semaphore::new(IN_FLIGHT));
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Option<Bytes>, usize)>();
    let reader = {
        let budget = budget.clone();
        async move {
            let mut buf = BytesMut::new();
            loop {
                buf.reserve(64 * 1024);
                // An error ends this direction like EOF does.
                let n: usize = r.read_buf(&mut buf).await.unwrap_or_default();
                let due = Instant::now() + delay;
                if n == 0 {
                    let _ = tx.send((due, None, 0));
                    return;
                }
                let Ok(permit) = budget.acquire_many(n as u32).await else {
                    return;
                };
                permit.forget();
                if tx.send((due, Some(buf.split().freeze()), n)).is_err() {
                    return;
                }
            }
        }
    };
    let writer = async move {
        while let Some((due, chunk, n)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            let Some(c) = chunk else {
                let _ = w.shutdown().await;
                break;
            };
            if w.write_all(&c).await.is_err() {
                break;
            }
            budget.add_permits(n);
        }
        // Wakes a reader waiting for budget that will never come back.
        budget.close();
    };
    tokio::join!(reader, writer);
}
