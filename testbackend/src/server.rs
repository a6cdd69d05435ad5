//! Accepting connections and the [`Backend`] handle that owns them.
//!
//! One listener, every connection served by hyper-util's auto server (HTTP/1.1 with upgrades, or
//! h2c when the client opens with the HTTP/2 preface). Stopping is a `watch` channel every task
//! holds a receiver of: `Drain` finishes in-flight requests, `Abort` (or dropping the handle)
//! closes everything at once, which is what a test that "kills" a backend wants.
//! What a request gets is decided in `http.rs`, not here.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::HeaderValue;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::Stats;

/// Where a backend is in its life; every task watches it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    Running,
    /// Stop accepting, let open connections finish what they are doing.
    Drain,
    /// Close every connection now.
    Abort,
}

/// What every connection of one backend shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) name: Arc<str>,
    pub(crate) name_header: HeaderValue,
    /// `NAME\n`, the body of `/` and of unknown paths.
    pub(crate) name_body: Bytes,
    pub(crate) stats: Arc<Stats>,
    pub(crate) stop: watch::Receiver<Stop>,
}

/// A running backend. Dropping it closes the listener and every connection.
#[derive(Debug)]
pub struct Backend {
    addr: SocketAddr,
    name: Arc<str>,
    stats: Arc<Stats>,
    stop: watch::Sender<Stop>,
    accept: JoinHandle<()>,
}

/// Binds `addr` (port 0 picks a free port) and serves on it until the returned handle is
/// dropped or shut down. `name` must be a valid HTTP header value.
pub async fn spawn(name: &str, addr: SocketAddr) -> io::Result<Backend> {
    let listener = TcpListener::bind(addr).await?;
    serve(name, listener)
}

/// Serves on an already bound listener; see [`spawn`].
pub fn serve(name: &str, listener: TcpListener) -> io::Result<Backend> {
    let name_header = HeaderValue::from_str(name).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("backend name {name:?} is not a valid header value"),
        )
    })?;
    let addr = listener.local_addr()?;
    let (stop, stop_rx) = watch::channel(Stop::Running);
    let name: Arc<str> = Arc::from(name);
    let stats = Arc::new(Stats::default());
    let shared = Arc::new(Shared {
        name: name.clone(),
        name_header,
        name_body: Bytes::from(format!("{name}\n")),
        stats: stats.clone(),
        stop: stop_rx,
    });
    let accept = tokio::spawn(accept_loop(listener, shared));
    Ok(Backend {
        addr,
        name,
        stats,
        stop,
        accept,
    })
}

impl Backend {
    /// The address it listens on (the real port when bound to port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The name it answers with.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `http://ADDR{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// What it has served so far.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Shorthand for `stats().requests()`.
    pub fn requests(&self) -> u64 {
        self.stats.requests()
    }

    /// Stops accepting, waits up to `deadline` for open connections and upgraded WebSockets to
    /// finish, then closes whatever is left.
    pub async fn shutdown(self, deadline: Duration) {
        self.stop.send_replace(Stop::Drain);
        // Every connection task holds a receiver; all dropped means all finished.
        if tokio::time::timeout(deadline, self.stop.closed())
            .await
            .is_err()
        {
            info!(backend = %self.name, "drain deadline passed; closing remaining connections");
        }
        // Drop sends `Abort`.
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop.send_replace(Stop::Abort);
        self.accept.abort();
    }
}

fn builder() -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http2()
        .max_concurrent_streams(1024)
        .initial_stream_window_size(1 << 20)
        .initial_connection_window_size(4 << 20);
    builder
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let builder = Arc::new(builder());
    let mut stop = shared.stop.clone();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.changed() => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                shared.stats.connection();
                tokio::spawn(serve_connection(
                    stream,
                    peer,
                    shared.clone(),
                    builder.clone(),
                ));
            }
            Err(error) => {
                // Out of descriptors or an aborted handshake: not fatal, but do not spin.
                warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    builder: Arc<auto::Builder<TokioExecutor>>,
) {
    if let Err(error) = stream.set_nodelay(true) {
        debug!(%peer, %error, "set_nodelay failed");
    }
    let mut stop = shared.stop.clone();
    let service = {
        let shared = shared.clone();
        service_fn(move |req| crate::http::handle(shared.clone(), req))
    };
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
    tokio::pin!(conn);
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(error) = result {
                    debug!(%peer, %error, "connection ended with an error");
                }
                return;
            }
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() == Stop::Abort {
                    return;
                }
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}
