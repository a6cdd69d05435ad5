//! Serving one h2c connection on the h2 crate directly: each stream is one request for the
//! proxy core, on this connection's own upstream HTTP/2 pool (or the shared one with
//! `--upstream-h2-shared`). The connection is closed after `--h2c-idle-timeout` without a
//! byte either way, and drained gracefully on shutdown.
//!
//! hyper's HTTP/2 server did this before; what it did per stream, and what is kept:
//! - a stream's future polls the proxy core for the answer, and stops (dropping the request
//!   on its way upstream) when the client resets the stream first;
//! - the answer's head goes out with `END_STREAM` when it has no body, else its body is
//!   piped as the client's window allows (`h2_client::Pipe`), its trailers included; a body
//!   that breaks off resets the stream with `INTERNAL_ERROR`;
//! - an answer of known length gets `Content-Length`, and the router's own answers a `Date`;
//! - a request body gives its window back to the client as the proxy core reads it.
//!
//! What is gone: hyper's wrapper future per stream and the conversions around it (its body
//! type, its removal of connection headers from answers, which neither an upstream HTTP/2
//! answer nor the router's own can carry: h2 refuses to receive and to send them).

use std::future::{poll_fn, Future};
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;

use bytes::Bytes;
use h2::server::SendResponse;
use h2::{Reason, RecvStream};
use http::{HeaderValue, Request, Response};
use http_body::Body as _;
use hyper::rt::Executor;
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::{signalled, ListenConfig};
use crate::body::ClientBody;
use crate::exec::{Driven, Exec, Local};
use crate::idle::{quiet_for, Tracked};
use crate::io::Prefixed;
use crate::proxy::{Proxy, Wire};
use crate::upstream::h2_client::{H2Body, Pipe};
use crate::upstream::H2Pool;

/// How long a finished connection keeps driving what it started before dropping it: its own
/// upstream connections close once their last stream ended (at once when none is left).
const LINGER: std::time::Duration = std::time::Duration::from_secs(1);

/// The most one answer's stream buffers for the client beyond its window (400 KiB, as hyper's
/// server set it; h2's default too, written here so the bound is the router's own).
const MAX_SEND_BUFFER: usize = 400 << 10;

pub async fn serve(
    io: Prefixed<TcpStream>,
    peer: SocketAddr,
    port: u16,
    proxy: Arc<Proxy>,
    cfg: Arc<ListenConfig>,
    shutdown: watch::Receiver<bool>,
) {
    // This connection's own upstream connections (see `upstream::H2Pool`), unless the
    // operator chose one pool for all clients (`--upstream-h2-shared`).
    // Its streams and its own upstream connections run in this task (see `crate::exec`).
    let local = Local::default();
    let exec = Exec::Local(local.clone());
    let pool = match &proxy.shared_h2 {
        Some(shared) => Arc::clone(shared),
        None => Arc::new(H2Pool::per_client(
            Arc::clone(&proxy.upstreams),
            proxy.shared_conns.clone(),
            exec.clone(),
        )),
    };
    let (io, activity) = Tracked::new(io);
    let handshake = h2::server::Builder::new()
        .max_concurrent_streams(cfg.h2_max_concurrent_streams)
        .max_header_list_size(cfg.max_header_bytes as u32)
        .initial_window_size(cfg.h2_stream_window)
        .initial_connection_window_size(cfg.h2_connection_window)
        .max_send_buffer_size(MAX_SEND_BUFFER)
        .handshake::<_, Bytes>(io);
    let streams = Streams {
        proxy,
        pool,
        port,
        exec,
    };
    let mut conn = Driven::new(connection(handshake, streams, shutdown), local);
    let idle = cfg.h2c_idle_timeout;
    let result = tokio::select! {
        r = &mut conn => r,
        _ = quiet_for(&activity, idle, idle) => {
            // No byte either way for the idle timeout: whatever streams remain are stalled.
            tracing::debug!(%peer, "h2c connection closed after the idle timeout");
            return;
        }
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "h2c connection ended with error");
    }
    // What is left: upstream connections closing, streams the client's end cut short.
    if conn.running() > 0 && tokio::time::timeout(LINGER, conn.drain()).await.is_err() {
        tracing::debug!(%peer, left = conn.running(), "h2c connection: tasks dropped after the linger");
    }
}

/// What each stream of one connection needs.
struct Streams {
    proxy: Arc<Proxy>,
    pool: Arc<H2Pool>,
    port: u16,
    exec: Exec,
}

/// The connection itself: the handshake, then every stream the client opens handed to a
/// future of its own on the connection's executor, until the client is done, or shutdown is
/// signalled and the streams already open have ended (a GOAWAY tells the client to open no
/// more).
async fn connection<T>(
    handshake: h2::server::Handshake<T, Bytes>,
    streams: Streams,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), h2::Error>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut conn = handshake.await?;
    let mut draining = false;
    loop {
        let next = tokio::select! {
            biased;
            next = poll_fn(|cx| conn.poll_accept(cx)) => next,
            _ = signalled(&mut shutdown), if !draining => {
                draining = true;
                conn.graceful_shutdown();
                continue;
            }
        };
        match next {
            Some(Ok((req, respond))) => streams.exec.execute(stream(
                Arc::clone(&streams.proxy),
                Arc::clone(&streams.pool),
                streams.port,
                req,
                respond,
            )),
            Some(Err(e)) => return Err(e),
            None => return Ok(()),
        }
    }
}

/// One stream: its request through the proxy core, and the answer back.
#[allow(clippy::manual_async_fn)] // see `Proxy`: arguments held once
fn stream(
    proxy: Arc<Proxy>,
    pool: Arc<H2Pool>,
    port: u16,
    req: Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
) -> impl Future<Output = ()> + Send + 'static {
    async move {
        let (parts, recv) = req.into_parts();
        let body = ClientBody::H2(H2Body::new(recv, &parts.headers, true));
        let req = Request::from_parts(parts, body);
        let resp = {
            let mut answer = pin!(proxy.handle(req, port, Wire::H2(&pool)));
            // A client that resets the stream before its answer no longer wants it: the
            // request is dropped on its way (its upstream stream reset with it).
            poll_fn(|cx| {
                if let Poll::Ready(resp) = answer.as_mut().poll(cx) {
                    return Poll::Ready(Some(resp));
                }
                respond.poll_reset(cx).map(|_| None)
            })
            .await
        };
        let Some(resp) = resp else {
            tracing::debug!("client reset the stream before its answer");
            return;
        };
        let (mut parts, body) = resp.into_parts();
        if let Some(len) = body.size_hint().exact() {
            parts
                .headers
                .entry(http::header::CONTENT_LENGTH)
                .or_insert_with(|| HeaderValue::from(len));
        }
        if let http::header::Entry::Vacant(date) = parts.headers.entry(http::header::DATE) {
            // As hyper's server did: mostly the router's own answers (an upstream's carries one).
            if let Ok(now) =
                HeaderValue::try_from(httpdate::fmt_http_date(std::time::SystemTime::now()))
            {
                date.insert(now);
            }
        }
        let eos = body.is_end_stream();
        let tx = match respond.send_response(Response::from_parts(parts, ()), eos) {
            Ok(tx) => tx,
            Err(e) => {
                tracing::debug!(error = %e, "could not send the answer's head");
                return;
            }
        };
        if !eos {
            Pipe::new(body, tx, Reason::INTERNAL_ERROR).await;
        }
    }
}
