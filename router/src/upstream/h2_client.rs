//! The router's own HTTP/2 client for upstream connections, on the h2 crate directly.
//!
//! hyper's HTTP/2 client puts every request through a dispatch channel to a connection task
//! (an unbounded queue and a oneshot for the answer), then runs one more future per request
//! on the executor to wait for the response and send it back through that oneshot (plus a
//! second oneshot to cancel the body). Here the request's own future sends on the connection
//! and waits for its response: no channel, no per-request future of the executor, except for
//! a request body that cannot be sent at once (as hyper does, it is first tried in place).
//!
//! What hyper's client did besides, kept here: connection-specific headers are removed (they
//! are illegal in HTTP/2), `Content-Length` is set for a body of known length, server push is
//! off, the same settings (header list 16 KiB, send buffer 1 MiB, 100 streams until the
//! server's SETTINGS), a keep-alive ping every 20 s whose pong must come within 10 s, and a
//! stream reset with `NO_ERROR` after a complete response head ends the body early instead
//! of failing it (RFC 9113 §8.1).

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use h2::client::SendRequest;
use h2::{Reason, RecvStream, SendStream};
use http::{HeaderMap, Method, Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::rt::Executor;
use tokio::net::TcpStream;

use crate::body::{BodyError, RequestBody};
use crate::exec::Exec;

/// Interval of keep-alive pings on an upstream connection, and how long a pong may take.
const PING_EVERY: Duration = Duration::from_secs(20);
const PONG_WITHIN: Duration = Duration::from_secs(10);

/// Receive windows of one upstream connection.
#[derive(Debug, Clone, Copy)]
pub struct Windows {
    pub stream: u32,
    pub connection: u32,
}

/// The sending half of one upstream HTTP/2 connection; cloned for each stream.
#[derive(Debug, Clone)]
pub struct H2Tx {
    tx: SendRequest<Bytes>,
    /// Set when the connection has ended (its driver returned).
    closed: Arc<AtomicBool>,
    /// Where request bodies that could not be sent at once are piped.
    exec: Exec,
}

/// The HTTP/2 handshake on `io`; the connection is then driven on `exec`.
pub async fn handshake(
    io: TcpStream,
    windows: Windows,
    exec: &Exec,
    addr: std::net::SocketAddr,
) -> Result<H2Tx, h2::Error> {
    let (tx, mut conn) = h2::client::Builder::new()
        .initial_max_send_streams(100)
        .initial_window_size(windows.stream)
        .initial_connection_window_size(windows.connection)
        .max_header_list_size(16 << 10)
        .max_send_buffer_size(1 << 20)
        .enable_push(false)
        .handshake::<_, Bytes>(io)
        .await?;
    let closed = Arc::new(AtomicBool::new(false));
    let ping = conn.ping_pong();
    let ended = Arc::clone(&closed);
    exec.execute(async move {
        drive(conn, ping, addr).await;
        ended.store(true, Ordering::Relaxed);
    });
    Ok(H2Tx {
        tx,
        closed,
        exec: exec.clone(),
    })
}

/// Runs the connection until it ends, pinging every [`PING_EVERY`]; a pong that does not come
/// within [`PONG_WITHIN`] ends it (a peer or path that went away without a FIN).
async fn drive(
    mut conn: h2::client::Connection<TcpStream, Bytes>,
    mut ping: Option<h2::PingPong>,
    addr: std::net::SocketAddr,
) {
    let timer = tokio::time::sleep(PING_EVERY);
    tokio::pin!(timer);
    let mut awaiting_pong = false;
    loop {
        tokio::select! {
            biased;
            r = &mut conn => {
                if let Err(e) = r {
                    tracing::debug!(%addr, error = %e, "upstream h2 connection ended");
                }
                return;
            }
            r = poll_fn(|cx| match ping.as_mut() {
                Some(p) => p.poll_pong(cx),
                None => Poll::Pending,
            }), if awaiting_pong => {
                if let Err(e) = r {
                    tracing::debug!(%addr, error = %e, "upstream h2 connection ended (ping)");
                    return;
                }
                awaiting_pong = false;
                timer.as_mut().reset(crate::serve::from_now(PING_EVERY));
            }
            () = &mut timer => {
                if awaiting_pong {
                    tracing::debug!(%addr, "upstream h2 connection closed: no pong within {PONG_WITHIN:?}");
                    return;
                }
                match ping.as_mut().map(|p| p.send_ping(h2::Ping::opaque())) {
                    Some(Ok(())) => {
                        awaiting_pong = true;
                        timer.as_mut().reset(crate::serve::from_now(PONG_WITHIN));
                    }
                    Some(Err(e)) => {
                        tracing::debug!(%addr, error = %e, "upstream h2 connection ended (ping)");
                        return;
                    }
                    None => timer.as_mut().reset(crate::serve::from_now(PING_EVERY)),
                }
            }
        }
    }
}

impl H2Tx {
    /// The connection has ended: it takes no more streams.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }

    /// Waits until the connection can open one more stream (the server's
    /// `MAX_CONCURRENT_STREAMS`), or fails if the connection is gone.
    pub async fn ready(&mut self) -> Result<(), h2::Error> {
        poll_fn(|cx| self.tx.poll_ready(cx)).await
    }

    /// Sends `req` and resolves to the response head. A body that cannot be sent at once is
    /// piped by a future of the connection's executor.
    pub fn send_request(
        &mut self,
        req: Request<RequestBody>,
    ) -> impl Future<Output = Result<Response<H2Body>, h2::Error>> + Send + 'static {
        let (parts, body) = req.into_parts();
        let mut head = Request::from_parts(parts, ());
        strip_connection_headers(head.headers_mut());
        if let Some(len) = body.size_hint().exact() {
            if len != 0 || has_defined_payload(head.method()) {
                head.headers_mut()
                    .entry(http::header::CONTENT_LENGTH)
                    .or_insert_with(|| http::HeaderValue::from(len));
            }
        }
        let eos = body.is_end_stream();
        let sent = self.tx.send_request(head, eos);
        let exec = self.exec.clone();
        async move {
            let (response, send) = sent?;
            if !eos {
                let mut pipe = Pipe::new(body, send, Reason::CANCEL);
                // As hyper does: most bodies are in hand already (a gRPC message); only one
                // that is not costs a future of its own.
                let done = poll_fn(|cx| Poll::Ready(Pin::new(&mut pipe).poll(cx).is_ready())).await;
                if !done {
                    exec.execute(pipe);
                }
            }
            let resp = response.await?;
            let (parts, recv) = resp.into_parts();
            let body = H2Body::new(recv, &parts.headers, false);
            Ok(Response::from_parts(parts, body))
        }
    }
}

/// Methods whose request carries a defined payload meaning, so an empty body still gets
/// `Content-Length: 0` (as hyper sets it).
fn has_defined_payload(m: &Method) -> bool {
    !matches!(
        *m,
        Method::GET | Method::HEAD | Method::DELETE | Method::CONNECT
    )
}

/// Removes the headers HTTP/2 forbids (RFC 9113 §8.2.2), and those `Connection` names. One
/// pass over the names first: a request from an HTTP/2 client never has any (its server
/// refuses them), and six lookups of absent names cost more than the pass.
fn strip_connection_headers(h: &mut HeaderMap) {
    use http::header::{CONNECTION, TE, TRANSFER_ENCODING, UPGRADE};
    let forbidden = |(k, v): (&http::HeaderName, &http::HeaderValue)| {
        *k == CONNECTION
            || *k == TRANSFER_ENCODING
            || *k == UPGRADE
            || (*k == TE && v.as_bytes() != b"trailers")
            || k == "keep-alive"
            || k == "proxy-connection"
    };
    if !h.iter().any(forbidden) {
        return;
    }
    if let Some(conn) = h.remove(CONNECTION) {
        if let Ok(names) = conn.to_str() {
            for name in names.split(',') {
                h.remove(name.trim());
            }
        }
    }
    for name in ["keep-alive", "proxy-connection"] {
        h.remove(name);
    }
    h.remove(TRANSFER_ENCODING);
    h.remove(UPGRADE);
    if h.get(TE).is_some_and(|te| te.as_bytes() != b"trailers") {
        h.remove(TE);
    }
}

fn content_length(h: &HeaderMap) -> Option<u64> {
    let mut values = h.get_all(http::header::CONTENT_LENGTH).iter();
    let first = values.next()?.to_str().ok()?.trim().parse().ok()?;
    values.next().is_none().then_some(first)
}

/// Copies a body into its stream as the stream's window allows; on an error of the body,
/// resets the stream with `on_error`. The request bodies of this client (`CANCEL`), and the
/// response bodies of the h2c server (`serve/h2c.rs`, `INTERNAL_ERROR` as hyper's server).
pub struct Pipe<B> {
    body: B,
    tx: SendStream<Bytes>,
    /// A chunk taken from the body, waiting for window.
    pending: Option<(Bytes, bool)>,
    on_error: Reason,
}

impl<B> Pipe<B> {
    pub fn new(body: B, tx: SendStream<Bytes>, on_error: Reason) -> Self {
        Pipe {
            body,
            tx,
            pending: None,
            on_error,
        }
    }
}

impl<B> Future for Pipe<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        loop {
            // Woken by a reset too, while waiting for the body or for window.
            match this.tx.poll_reset(cx) {
                Poll::Ready(Ok(reason)) => {
                    tracing::debug!(?reason, "peer reset the stream; body not sent on");
                    return Poll::Ready(());
                }
                Poll::Ready(Err(_)) => return Poll::Ready(()),
                Poll::Pending => {}
            }
            if let Some((data, eos)) = this.pending.take() {
                if this.tx.capacity() == 0 {
                    match this.tx.poll_capacity(cx) {
                        Poll::Ready(Some(Ok(_))) => {}
                        Poll::Ready(Some(Err(_)) | None) => return Poll::Ready(()),
                        Poll::Pending => {
                            this.pending = Some((data, eos));
                            return Poll::Pending;
                        }
                    }
                    if this.tx.capacity() == 0 {
                        this.pending = Some((data, eos));
                        continue;
                    }
                }
                // h2 splits the chunk into what the window allows and buffers the rest
                // (bounded by the send buffer), as hyper's client relies on too.
                if this.tx.send_data(data, eos).is_err() || eos {
                    return Poll::Ready(());
                }
                continue;
            }
            // The next frame is asked for before any window is claimed: a claim held while the
            // body is quiet could pin the connection's window against the other streams.
            match Pin::new(&mut this.body).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => {
                    let _ = this.tx.send_data(Bytes::new(), true);
                    return Poll::Ready(());
                }
                Poll::Ready(Some(Err(e))) => {
                    tracing::debug!(error = %e, "body broke off; resetting the stream");
                    this.tx.send_reset(this.on_error);
                    return Poll::Ready(());
                }
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        let eos = this.body.is_end_stream();
                        if data.is_empty() {
                            if this.tx.send_data(data, eos).is_err() || eos {
                                return Poll::Ready(());
                            }
                            continue;
                        }
                        this.tx.reserve_capacity(1);
                        this.pending = Some((data, eos));
                    }
                    Err(frame) => {
                        if let Ok(trailers) = frame.into_trailers() {
                            this.tx.reserve_capacity(0);
                            let _ = this.tx.send_trailers(trailers);
                            return Poll::Ready(());
                        }
                    }
                },
            }
        }
    }
}

/// A body read from an HTTP/2 stream: a response of an upstream, or a request of an h2c
/// client (`serve/h2c.rs`). Window goes back to the peer as each chunk is handed on (as
/// hyper's does); what a stalled reader holds is bounded by the stream window.
#[derive(Debug)]
pub struct H2Body {
    recv: RecvStream,
    data_done: bool,
    /// What is left of a declared `Content-Length` (for the size hint).
    length: Option<u64>,
    /// A client's request body: every reset fails it (the client cancelled the request, so
    /// its end must not reach the upstream as a complete body).
    from_client: bool,
}

impl H2Body {
    /// The body of a message with `headers` on `recv`.
    pub fn new(recv: RecvStream, headers: &HeaderMap, from_client: bool) -> Self {
        H2Body {
            recv,
            data_done: false,
            length: content_length(headers),
            from_client,
        }
    }

    /// A reset with `NO_ERROR` ends a response body (the server needs no more of the
    /// request, RFC 9113 §8.1); anything else fails it, and every reset fails a request body.
    fn early_end_or(&self, e: h2::Error) -> Option<Result<Frame<Bytes>, BodyError>> {
        if self.from_client {
            return Some(Err(BodyError::ClientStream(e)));
        }
        match e.reason() {
            Some(Reason::NO_ERROR) => None,
            _ => Some(Err(BodyError::Stream(e))),
        }
    }
}

impl Body for H2Body {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        if !this.data_done {
            match this.recv.poll_data(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(data))) => {
                    let _ = this.recv.flow_control().release_capacity(data.len());
                    if let Some(left) = this.length.as_mut() {
                        *left = left.saturating_sub(data.len() as u64);
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(this.early_end_or(e)),
                Poll::Ready(None) => this.data_done = true,
            }
        }
        match this.recv.poll_trailers(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(t)) => Poll::Ready(t.map(|t| Ok(Frame::trailers(t)))),
            Poll::Ready(Err(e)) => Poll::Ready(this.early_end_or(e)),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.recv.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.length
            .map_or_else(SizeHint::default, SizeHint::with_exact)
    }
}

/// Whether a failed exchange broke off before any answer (the connection closed or reset, a
/// stream reset, a GOAWAY), rather than on something the router did wrong.
pub fn unanswered(e: &h2::Error) -> bool {
    e.is_io() || e.is_go_away() || e.is_reset()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use tokio::net::TcpListener;

    const WINDOWS: Windows = Windows {
        stream: 65_535,
        connection: 1 << 20,
    };

    /// A connection to a fresh loopback listener, and the server's side of it.
    async fn pair() -> (H2Tx, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let (client, server) = tokio::join!(TcpStream::connect(addr), l.accept());
        let tx = handshake(client.unwrap(), WINDOWS, &Exec::Spawn, addr)
            .await
            .unwrap();
        (tx, server.unwrap().0)
    }

    /// The body of an answer whose stream the server then resets with `reason`.
    async fn body_reset_with(reason: Reason) -> Result<Bytes, BodyError> {
        let (mut tx, server_io) = pair().await;
        let (head_seen, seen) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            let mut conn = h2::server::handshake(server_io).await.unwrap();
            let (_req, mut respond) = conn.accept().await.unwrap().unwrap();
            let mut send = respond.send_response(Response::new(()), false).unwrap();
            // The connection is polled (it sends the head) until the client has the head.
            tokio::select! {
                _ = conn.accept() => panic!("a second stream"),
                _ = seen => {}
            }
            send.send_reset(reason);
            while conn.accept().await.is_some() {}
        });
        let req = Request::get("http://upstream/x")
            .body(RequestBody::new(None, Duration::from_secs(5), None))
            .unwrap();
        let resp = tx.send_request(req).await.unwrap();
        head_seen.send(()).unwrap();
        let body = resp.into_body().collect().await.map(|b| b.to_bytes());
        drop(tx);
        server.abort();
        body
    }

    #[tokio::test]
    async fn a_reset_with_no_error_after_the_answer_ends_its_body_cleanly() {
        // RFC 9113 §8.1: the server needs no more of the request; the answer stands.
        body_reset_with(Reason::NO_ERROR).await.unwrap();
        assert!(matches!(
            body_reset_with(Reason::CANCEL).await,
            Err(BodyError::Stream(_))
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn a_peer_that_stops_answering_pings_is_let_go() {
        let (tx, server_io) = pair().await;
        // The server shakes hands, then is never polled again: no pong ever comes.
        let server = h2::server::handshake(server_io).await.unwrap();
        assert!(!tx.is_closed());
        tokio::time::sleep(PING_EVERY + PONG_WITHIN + Duration::from_secs(1)).await;
        for _ in 0..100 {
            if tx.is_closed() {
                drop(server);
                return;
            }
            tokio::task::yield_now().await;
        }
        panic!("a connection whose pong never came was kept");
    }

    #[test]
    fn connection_specific_headers_and_the_ones_connection_names_are_removed() {
        let mut h = HeaderMap::new();
        h.insert("connection", "x-hop, keep-alive".parse().unwrap());
        h.insert("x-hop", "1".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert("upgrade", "websocket".parse().unwrap());
        h.insert("transfer-encoding", "chunked".parse().unwrap());
        h.insert("te", "gzip".parse().unwrap());
        h.insert("x-end", "2".parse().unwrap());
        strip_connection_headers(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key("x-end"));
        let mut h = HeaderMap::new();
        h.insert("te", "trailers".parse().unwrap());
        strip_connection_headers(&mut h);
        assert!(
            h.contains_key("te"),
            "te: trailers is allowed (gRPC needs it)"
        );
    }

    #[test]
    fn only_one_valid_content_length_gives_a_size() {
        let mut h = HeaderMap::new();
        assert_eq!(content_length(&h), None);
        h.insert("content-length", "12".parse().unwrap());
        assert_eq!(content_length(&h), Some(12));
        h.append("content-length", "13".parse().unwrap());
        assert_eq!(content_length(&h), None);
        let mut h = HeaderMap::new();
        h.insert("content-length", "x".parse().unwrap());
        assert_eq!(content_length(&h), None);
    }
}
