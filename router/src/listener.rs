//! Accepting connections: per listening port, accept → admit → sniff the first bytes → hand
//! the connection to its serving module (`serve::http1`, `serve::h2c`, or `serve::splice` for
//! plain TCP). On a port declared HTTP (`--http-ports`) a client that sends nothing is closed
//! after the header read timeout instead of being passed through. Each connection watches the
//! shutdown signal and, when it fires, finishes its in-flight requests and closes (graceful
//! drain).
//!
//! Overload (see `admission.rs`): a connection over a limit is accepted and closed at once, so
//! the client learns right away instead of waiting in the kernel's backlog, and the open ones
//! keep being served.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tracing::Instrument;

use crate::admission::{Admission, Admitted};
use crate::io::Prefixed;
use crate::metrics::{ConnGuard, Proto};
use crate::serve::http1::Shared;
use crate::serve::parking::{Held, Woken};
use crate::serve::splice::SpliceIdle;
use crate::sniff::{sniff, Sniffed};

// The admin server's accept loop uses these too.
pub use crate::serve::signalled;

/// A listening socket whose kernel queue holds `backlog` connections not yet accepted (tokio's
/// `TcpListener::bind` allows 128: a burst of new connections beyond that has its SYNs dropped
/// while the accept loop is busy, and each of those clients waits a second to retry).
pub fn bind(addr: SocketAddr, backlog: u32) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}

/// Sleeps after a failed accept. EMFILE and friends do not clear by retrying at once, and an
/// immediate retry would spin a core; the pause doubles from 5 ms to 1 s while failures repeat.
#[derive(Debug, Default)]
pub struct AcceptBackoff {
    pause: Duration,
}

impl AcceptBackoff {
    const FIRST: Duration = Duration::from_millis(5);
    const MAX: Duration = Duration::from_secs(1);

    pub fn succeeded(&mut self) {
        self.pause = Duration::ZERO;
    }

    pub async fn failed(&mut self) {
        self.pause = (self.pause * 2).clamp(Self::FIRST, Self::MAX);
        tokio::time::sleep(self.pause).await;
    }
}

/// Accepts until `shared.shutdown` turns true; every connection task (and the parking lot)
/// holds a clone of that receiver, so the caller knows when all have finished.
pub async fn accept_loop(listener: TcpListener, admission: Arc<Admission>, shared: Shared) {
    let mut shutdown = shared.shutdown.clone();
    let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
    let mut backoff = AcceptBackoff::default();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => break,
        };
        match accepted {
            Ok((stream, peer)) => {
                backoff.succeeded();
                let slot = match admission.admit(peer.ip()) {
                    Ok(slot) => slot,
                    Err(reason) => {
                        // Overloaded: close now (the client sees the connection end at once)
                        // and keep serving the connections already open.
                        tracing::debug!(%peer, port, reason = reason.as_str(), "refused a new connection");
                        drop(stream);
                        continue;
                    }
                };
                let shared = shared.clone();
                let span = tracing::debug_span!("conn", %peer, port);
                tokio::spawn(serve_connection(stream, peer, port, slot, shared).instrument(span));
            }
            Err(e) => {
                tracing::warn!(port, error = %e, "accept failed");
                backoff.failed().await;
            }
        }
    }
}

async fn serve_connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    port: u16,
    slot: Admitted,
    shared: Shared,
) {
    let cfg = &shared.cfg;
    let _ = stream.set_nodelay(true);
    let mut buf = BytesMut::with_capacity(32);
    // On a port declared HTTP a silent client is an HTTP client yet to send its request; it
    // gets the header read timeout from accept, and is closed (not passed through) after it.
    let http_only = cfg.http_ports.contains(&port);
    let head_deadline = crate::serve::from_now(cfg.header_read_timeout);
    let proto = loop {
        match sniff(&buf) {
            Sniffed::NeedMore => {}
            Sniffed::Http1 => break Proto::http1,
            Sniffed::H2c => break Proto::h2c,
            Sniffed::Tcp => break Proto::tcp,
        }
        let read = if http_only {
            tokio::time::timeout_at(head_deadline, stream.read_buf(&mut buf)).await
        } else {
            tokio::time::timeout(cfg.sniff_timeout, stream.read_buf(&mut buf)).await
        };
        match read {
            Ok(Ok(0)) => return, // closed before saying anything
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "read failed while sniffing");
                return;
            }
            Err(_) if http_only => {
                tracing::debug!(%peer, "silent client on an HTTP port: closed after the header read timeout");
                return;
            }
            // Silent client: maybe a server-speaks-first protocol. Pass it through.
            Err(_) => break Proto::tcp,
        }
    };
    let guard = ConnGuard::new(&shared.proxy.metrics, proto);
    let io = Prefixed::new(buf.freeze(), stream);
    tracing::debug!(proto = ?proto, "accepted");
    match proto {
        Proto::tcp => {
            let bounds = SpliceIdle {
                idle: cfg.splice_idle_timeout,
                silent_first: cfg.silent_upstream_timeout,
                silent_turns: Arc::clone(&cfg.silent_connect_turns),
            };
            // Boxed, as h2c below: the task of every connection is as large as the largest
            // state it could be in, and idle keep-alive HTTP/1.1 connections are the many.
            Box::pin(crate::serve::splice::passthrough(
                &shared.proxy,
                io,
                port,
                peer,
                bounds,
            ))
            .await;
            drop((slot, guard));
        }
        Proto::http1 => {
            // The connection takes what it holds along when it parks.
            let held = Held { slot, guard };
            crate::serve::http1::serve(io, peer, port, held, shared).await
        }
        Proto::h2c => {
            let Shared {
                proxy,
                cfg,
                shutdown,
                ..
            } = shared;
            Box::pin(crate::serve::h2c::serve(
                io, peer, port, proxy, cfg, shutdown,
            ))
            .await;
            drop((slot, guard));
        }
    }
}

/// Serves a parked HTTP/1.1 connection again once its client has sent bytes (the parking
/// lot's `wake`, on the lot's thread), in a task of its own on `runtime`, as at accept.
pub fn resume(runtime: &tokio::runtime::Handle, woken: Woken, shared: Shared) {
    let Woken {
        stream,
        peer,
        port,
        held,
    } = woken;
    let span = tracing::debug_span!("conn", %peer, port);
    let serve = async move {
        // Registered with the reactor again here, on the runtime.
        match TcpStream::from_std(stream) {
            Ok(stream) => {
                let io = Prefixed::new(bytes::Bytes::new(), stream);
                crate::serve::http1::serve(io, peer, port, held, shared).await;
            }
            Err(e) => tracing::debug!(error = %e, "could not resume a parked connection"),
        }
    };
    runtime.spawn(serve.instrument(span));
}
