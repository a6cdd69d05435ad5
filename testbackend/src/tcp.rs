//! A raw TCP port, for tests of what a router must leave alone: no HTTP at all.
//!
//! Each connection gets a server-first banner, the backend's name and `\n`, before the client
//! has said anything (like SMTP or MySQL, a protocol a router cannot sniff); then every byte
//! received is echoed back until the client closes.
//!
//! [`spawn_tcp`] returns a [`TcpBackend`] that stops the listener and every connection when
//! dropped. The matching client is [`crate::client`]'s `tcp` call.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{AbortHandle, JoinSet};
use tracing::debug;

/// A running raw TCP banner-and-echo listener. Dropping it closes everything.
#[derive(Debug)]
pub struct TcpBackend {
    addr: SocketAddr,
    accept: AbortHandle,
}

/// Binds `addr` (port 0 picks a free port) and serves the banner and echo on it.
pub async fn spawn_tcp(name: &str, addr: SocketAddr) -> io::Result<TcpBackend> {
    let listener = TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let banner: Arc<[u8]> = Arc::from(format!("{name}\n").into_bytes());
    let accept = tokio::spawn(accept_loop(listener, banner)).abort_handle();
    Ok(TcpBackend { addr, accept })
}

impl TcpBackend {
    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for TcpBackend {
    fn drop(&mut self) {
        // The connections live in the accept task's JoinSet: aborting it drops them all.
        self.accept.abort();
    }
}

async fn accept_loop(listener: TcpListener, banner: Arc<[u8]>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    connections.spawn(serve(stream, peer, banner.clone()));
                }
                Err(error) => {
                    debug!(%error, "tcp accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn serve(mut stream: TcpStream, peer: SocketAddr, banner: Arc<[u8]>) {
    let _ = stream.set_nodelay(true);
    if let Err(error) = stream.write_all(&banner).await {
        debug!(%peer, %error, "tcp banner failed");
        return;
    }
    let (mut read, mut write) = stream.split();
    match tokio::io::copy(&mut read, &mut write).await {
        Ok(bytes) => debug!(%peer, bytes, "tcp echo closed"),
        Err(error) => debug!(%peer, %error, "tcp echo ended with an error"),
    }
}
