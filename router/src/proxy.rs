//! One request, top to bottom: match a rule → pick a ready endpoint of its target (or apply the
//! rule's `onUnavailable` policy) → forward on a pooled connection of the same protocol → hand
//! the upstream's response back, streaming. Everything the request path reads is either
//! borrowed from the current route table or owned by the request.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{HeaderValue, Request, Response, StatusCode};
use http_body::Body as _;
use hyper::upgrade::OnUpgrade;
use ktx_rules::{OnUnavailable, RouteTable, Rule, Target};
use tokio::sync::watch;

use crate::body::{
    BodyError, BodySent, ClientBody, RequestBody, ReturnToPool, RouterBody, StreamSlot,
};
use crate::error::{ProxyError, Side};
use crate::headers::{is_upgrade, strip_hop_by_hop, strip_request_hop_by_hop};
use crate::metrics::Metrics;
use crate::upstream::{driving, h2_client, raw_h1, H2Pool, SharedH2, Upstreams};

/// Label of requests that matched no rule.
const DEFAULT_RULE: &str = "default";

/// HTTP version spoken on both sides of one request. HTTP/2 requests carry the upstream pool
/// of their downstream connection (its own, unless `--upstream-h2-shared`).
#[derive(Debug, Clone, Copy)]
pub enum Wire<'a> {
    Http1,
    H2(&'a H2Pool),
}

impl Wire<'_> {
    fn is_http1(self) -> bool {
        matches!(self, Wire::Http1)
    }
}

/// Bounds on waits of the request path.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// From the end of the request body to the upstream's response head.
    pub response_header: Duration,
    /// Longest pause between two frames of a request or response body.
    pub body_idle: Duration,
}

/// Where the request path leaves the upstream's half of an accepted Upgrade, for the
/// connection task to splice once hyper hands the client's socket back.
#[derive(Debug, Clone, Default)]
pub struct UpgradeSlot(Arc<Mutex<Option<OnUpgrade>>>);

impl UpgradeSlot {
    pub fn put(&self, upstream: OnUpgrade) {
        *self
            .0
            .lock()
            .expect("slot lock is never held across a panic") = Some(upstream);
    }

    pub fn take(&self) -> Option<OnUpgrade> {
        self.0
            .lock()
            .expect("slot lock is never held across a panic")
            .take()
    }
}

/// Shared state of the request path.
///
/// The request path's steps are `fn … -> impl Future` over an `async move` block, not
/// `async fn`: an `async fn` keeps each argument twice in its state (the argument, and the
/// binding it is moved into when the body starts; rust-lang/rust#62958), and a request's head
/// is 264 bytes. Written so, the HTTP/1.1 and h2c service futures are 800 bytes instead of
/// 1,072, under the 1 KiB past which mimalloc takes its slower path for the box hyper puts them
/// in, and every move of them copies less (`-Zprint-type-sizes`).
#[derive(Debug)]
pub struct Proxy {
    pub table: watch::Receiver<Arc<RouteTable>>,
    pub upstreams: Arc<Upstreams>,
    pub metrics: Metrics,
    pub timeouts: Timeouts,
    /// One upstream HTTP/2 pool for every client (`--upstream-h2-shared`); `None`: a pool per
    /// client connection.
    pub shared_h2: Option<Arc<H2Pool>>,
    /// Upstream HTTP/2 connections shared by every client for a few streams without a
    /// request body each (`upstream/h2_shared.rs`); `None` with `--upstream-h2-shared`.
    pub shared_conns: Option<Arc<SharedH2>>,
    default_label: Arc<str>,
}

/// What is left of a request after a failed attempt to send it.
enum Left {
    /// Nothing reached the target: the request may go elsewhere.
    Unsent(Request<Option<ClientBody>>),
    /// It was sent; the request itself when the client that sent it gives it back.
    Sent(Option<Request<Option<ClientBody>>>),
}

/// Where one request goes, decided before anything is sent.
struct Decision {
    label: Arc<str>,
    addr: SocketAddr,
    side: Side,
    /// The matched rule's session and policy, when a rule matched.
    session: Option<(Arc<str>, OnUnavailable)>,
}

impl Proxy {
    pub fn new(
        table: watch::Receiver<Arc<RouteTable>>,
        upstreams: Arc<Upstreams>,
        metrics: Metrics,
        timeouts: Timeouts,
        shared_h2: bool,
    ) -> Self {
        let shared_conns = (!shared_h2).then(|| Arc::new(SharedH2::new(Arc::clone(&upstreams))));
        let shared_h2 = shared_h2.then(|| Arc::new(H2Pool::new(Arc::clone(&upstreams))));
        Proxy {
            table,
            upstreams,
            metrics,
            timeouts,
            shared_h2,
            shared_conns,
            default_label: Arc::from(DEFAULT_RULE),
        }
    }

    /// Drops idle pooled upstream connections: HTTP/1.1 past their timeout, and HTTP/2 ones no
    /// client owns (shared) that carried no stream for `idle`. Run periodically.
    pub fn sweep_pools(&self, idle: std::time::Duration) {
        self.upstreams.sweep();
        if let Some(shared) = &self.shared_conns {
            shared.sweep(idle);
        }
        if let Some(pool) = &self.shared_h2 {
            pool.sweep(idle);
        }
    }

    /// Serves one request that arrived on listener `port`. Never fails: errors become responses.
    #[allow(clippy::manual_async_fn)] // see `Proxy`: arguments held once
    pub fn handle<'a>(
        &'a self,
        req: Request<ClientBody>,
        port: u16,
        wire: Wire<'a>,
    ) -> impl Future<Output = Response<RouterBody>> + 'a {
        async move {
            let start = Instant::now();
            let grpc = is_grpc(&req);
            // The table is cloned (an Arc) so a swap mid-request does not change this request's rule.
            let table = Arc::clone(&self.table.borrow());
            let rule = table.route(req.method(), req.uri().path(), req.headers());
            tracing::debug!(
                method = %req.method(),
                path = req.uri().path(),
                rule = rule.map_or(DEFAULT_RULE, |r| &*r.session),
                "route"
            );
            let (label, resp) = match self.decide(&table, rule, port) {
                Ok(d) => {
                    let label = d.label.clone();
                    // Boxed: the exchange's state (several KB) is then written to the heap once,
                    // rather than copied into each enclosing future on its way to the connection.
                    let forward = Box::pin(self.forward(req, d, &table, port, wire));
                    (label, forward.await)
                }
                Err((label, e)) => (label, self.error_response(&e, grpc)),
            };
            let status = resp
                .extensions()
                .get::<GrpcError>()
                .map_or(resp.status(), |e| e.0)
                .as_u16();
            self.metrics
                .request(&label, status, start.elapsed().as_secs_f64());
            resp
        }
    }

    fn decide(
        &self,
        table: &RouteTable,
        rule: Option<&Rule>,
        port: u16,
    ) -> Result<Decision, (Arc<str>, ProxyError)> {
        if let Some(rule) = rule {
            let label: Arc<str> = Arc::clone(&rule.session);
            if let Some(addr) = self.upstreams.pick(&rule.target, port) {
                return Ok(Decision {
                    label,
                    addr,
                    side: Side::Shadow,
                    session: Some((Arc::clone(&rule.session), rule.on_unavailable)),
                });
            }
            if rule.on_unavailable == OnUnavailable::Reject {
                return Err((
                    label,
                    ProxyError::SessionUnavailable {
                        session: rule.session.to_string(),
                    },
                ));
            }
            tracing::debug!(session = %rule.session, "session unavailable, falling back to the default target");
        }
        let target = table.default_target();
        match self.upstreams.pick(target, port) {
            Some(addr) => Ok(Decision {
                label: self.default_label.clone(),
                addr,
                side: Side::Upstream,
                session: None,
            }),
            None => Err((
                self.default_label.clone(),
                ProxyError::NoEndpoint {
                    side: Side::Upstream,
                    target: describe(target),
                },
            )),
        }
    }

    #[allow(clippy::manual_async_fn)] // see `Proxy`: arguments held once
    fn forward<'a>(
        &'a self,
        mut req: Request<ClientBody>,
        d: Decision,
        table: &'a RouteTable,
        port: u16,
        wire: Wire<'a>,
    ) -> impl Future<Output = Response<RouterBody>> + 'a {
        async move {
            let grpc = is_grpc(&req);
            let upgrade = wire.is_http1() && is_upgrade(req.headers());
            if wire.is_http1() {
                strip_request_hop_by_hop(req.headers_mut(), upgrade);
            }
            // A safe request without a body to a session can be repeated. If the exchange breaks
            // off before a response (the developer's process killed with it in flight, to be
            // restarted; a kept connection the process closed), it is sent to the session once
            // more, where a process that is gone gets the policy from the shadow; if that breaks
            // off too, the router applies the policy. Never a 502 for what a restart interrupted.
            // The router's own client gives the request back after sending it; hyper's takes it,
            // so for hyper a copy is kept.
            let replayable = d.session.is_some()
                && !upgrade
                && req.method().is_safe()
                && req.body().is_end_stream();
            let copy = (replayable
            // (replayable: the body has ended)
            && !(wire.is_http1() && raw_h1::eligible(&req, true)))
            .then(|| head_of(&req));
            // The first attempt takes `send`'s way here: the two common ones (h2c, and HTTP/1.1
            // without a body by the router's own client) awaited in this future directly, so a
            // request builds and moves (copies) one future fewer.
            let req = req.map(Some);
            let bodyless = req.body().as_ref().is_none_or(|b| b.is_end_stream());
            let mut attempt = match wire {
                Wire::H2(h2) => self.send_h2(req, bodyless, d.addr, d.side, h2).await,
                Wire::Http1 if !upgrade && raw_h1::eligible(&req, bodyless) => {
                    self.send_raw(req, d.addr, d.side).await
                }
                Wire::Http1 => Box::pin(self.send(req, d.addr, d.side, wire, upgrade)).await,
            };
            if replayable {
                if let Err((e, Left::Sent(kept))) = &mut attempt {
                    if unanswered(e) {
                        if let Some(again) = kept.take().or_else(|| copy.as_ref().map(head_of)) {
                            tracing::debug!(error = %e, "session target broke off before answering, sending once more");
                            self.metrics.error(Side::Shadow);
                            attempt =
                                Box::pin(self.send(again, d.addr, d.side, wire, upgrade)).await;
                        }
                    }
                }
            }
            let e = match attempt {
                Ok(resp) => return resp,
                Err((e, left)) => {
                    let unsent = match left {
                        Left::Unsent(req) => Some(req),
                        Left::Sent(kept) if replayable && unanswered(&e) => kept.or(copy),
                        Left::Sent(_) => None,
                    };
                    match (d.session, unsent) {
                        // Nothing was sent yet: a dead session with `fallback` goes to the original.
                        (Some((_, OnUnavailable::Fallback)), Some(req)) => {
                            tracing::debug!(error = %e, "shadow unreachable, falling back to the default target");
                            self.metrics.error(Side::Shadow);
                            match self.upstreams.pick(table.default_target(), port) {
                                Some(addr) => {
                                    match Box::pin(self.send(
                                        req,
                                        addr,
                                        Side::Upstream,
                                        wire,
                                        upgrade,
                                    ))
                                    .await
                                    {
                                        Ok(resp) => return resp,
                                        Err((e, _)) => e,
                                    }
                                }
                                None => ProxyError::NoEndpoint {
                                    side: Side::Upstream,
                                    target: describe(table.default_target()),
                                },
                            }
                        }
                        (Some((session, OnUnavailable::Reject)), Some(_)) => {
                            ProxyError::SessionUnreachable {
                                session: session.to_string(),
                                source: Box::new(e),
                            }
                        }
                        _ => e,
                    }
                }
            };
            tracing::debug!(error = %e, "forward failed");
            self.error_response(&e, grpc)
        }
    }

    /// Sends on a connection to `addr`. On an error, says whether the request was sent.
    ///
    /// Always boxed by its callers: its state is the largest way's. A request's first attempt
    /// takes the two common ways (h2c, and HTTP/1.1 without a body by the router's own client)
    /// without it (`forward`), so their state is not part of every request's future, which is
    /// moved (copied) on its way to the connection.
    #[allow(clippy::manual_async_fn)] // see `Proxy`: arguments held once
    fn send<'a>(
        &'a self,
        req: Request<Option<ClientBody>>,
        addr: SocketAddr,
        side: Side,
        wire: Wire<'a>,
        upgrade: bool,
    ) -> impl Future<Output = Result<Response<RouterBody>, (ProxyError, Left)>> + 'a {
        async move {
            // Asked once: for an h2 body it takes the connection's lock.
            let bodyless = req.body().as_ref().is_none_or(|b| b.is_end_stream());
            match wire {
                Wire::H2(h2) => self.send_h2(req, bodyless, addr, side, h2).await,
                Wire::Http1 if upgrade => self.send_upgrade(req, bodyless, addr, side).await,
                Wire::Http1 if raw_h1::eligible(&req, bodyless) => {
                    self.send_raw(req, addr, side).await
                }
                Wire::Http1 => self.send_h1(req, bodyless, addr, side).await,
            }
        }
    }

    /// [`Proxy::send`] on a stream of the client's upstream h2 pool.
    #[allow(clippy::manual_async_fn)] // see `Proxy`: arguments held once
    fn send_h2<'a>(
        &'a self,
        req: Request<Option<ClientBody>>,
        bodyless: bool,
        addr: SocketAddr,
        side: Side,
        h2: &'a H2Pool,
    ) -> impl Future<Output = Result<Response<RouterBody>, (ProxyError, Left)>> + 'a {
        async move {
            let stream = match h2.stream(addr, side, bodyless).await {
                Ok(s) => s,
                Err(e) => return Err((e, Left::Unsent(req))),
            };
            let mut tx = stream.tx;
            if let Err(source) = tx.ready().await {
                return Err((
                    ProxyError::UpstreamStream { side, addr, source },
                    Left::Unsent(req),
                ));
            }
            let (req, ended) = self.bound_request(req, bodyless);
            let resp = match ended {
                // Without a body the wait is the response header timeout alone: awaited here,
                // without `response_head`'s future around it.
                None => self
                    .within_header_timeout(tx.send_request(req), addr, side)
                    .await
                    .and_then(|r| r.map_err(|source| stream_failed(side, addr, source))),
                ended => {
                    self.response_head(tx.send_request(req), ended, addr, side, stream_failed)
                        .await
                }
            }
            .map_err(|e| (e, Left::Sent(None)))?;
            let (parts, body) = resp.into_parts();
            Ok(Response::from_parts(
                parts,
                RouterBody::h2(body, self.timeouts.body_idle, stream.slot),
            ))
        }
    }

    /// [`Proxy::send`] of an HTTP/1.1 upgrade (WebSocket) on a connection of its own.
    async fn send_upgrade(
        &self,
        mut req: Request<Option<ClientBody>>,
        bodyless: bool,
        addr: SocketAddr,
        side: Side,
    ) -> Result<Response<RouterBody>, (ProxyError, Left)> {
        let mut conn = match self.upstreams.h1_fresh(addr, side).await {
            Ok(c) => c,
            Err(e) => return Err((e, Left::Unsent(req))),
        };
        let upgrade_slot = req.extensions_mut().remove::<UpgradeSlot>();
        let (req, ended) = self.bound_request(req, bodyless);
        let mut resp = self
            .response_head(conn.tx.send_request(req), ended, addr, side, request_failed)
            .await
            .map_err(|e| (e, Left::Sent(None)))?;
        if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
            // The connection task splices once hyper hands the client's socket back.
            if let Some(s) = upgrade_slot {
                s.put(hyper::upgrade::on(&mut resp));
            }
        }
        Ok(self.upstream_response(resp, true, None, None))
    }

    /// [`Proxy::send`] of an HTTP/1.1 request with a body, on a pooled hyper connection.
    async fn send_h1(
        &self,
        req: Request<Option<ClientBody>>,
        bodyless: bool,
        addr: SocketAddr,
        side: Side,
    ) -> Result<Response<RouterBody>, (ProxyError, Left)> {
        // To a session's shadow, reuse is bounded (`upstream::SessionReuse`).
        let mut conn = match self.upstreams.h1(addr, side).await {
            Ok(c) => c,
            Err(e) => return Err((e, Left::Unsent(req))),
        };
        // A pooled connection is ready when checked out (`Upstreams::h1`); a new one
        // becomes ready once its driver has run.
        let ready = match conn.tx.is_ready() {
            true => Ok(()),
            false => driving(&mut conn.driver, conn.tx.ready()).await,
        };
        if let Err(source) = ready {
            return Err((
                ProxyError::UpstreamRequest { side, addr, source },
                Left::Unsent(req),
            ));
        }
        let (req, ended) = self.bound_request(req, bodyless);
        let body_sent = ended.clone();
        let sent = conn.tx.send_request(req);
        let resp = self
            .response_head(
                driving(&mut conn.driver, sent),
                ended,
                addr,
                side,
                request_failed,
            )
            .await
            .map_err(|e| (e, Left::Sent(None)))?;
        // Answered before the request body was sent: the upload goes on whether or
        // not the client reads the answer, so the connection gets a task of its own.
        if body_sent.is_some_and(|b| !b.is_set()) {
            conn.detach();
        }
        let pool = if resp.body().is_end_stream() {
            self.upstreams.checkin(conn);
            None
        } else {
            Some(ReturnToPool {
                upstreams: Arc::clone(&self.upstreams),
                conn,
            })
        };
        Ok(self.upstream_response(resp, true, pool, None))
    }

    /// The upstream's response as the client gets it: HTTP/1.1 hop-by-hop headers dropped
    /// (not those of a 101, which the upgrade needs), the body under the idle bound, holding
    /// what it must give back when it ends (a pooled connection, an h2 stream slot).
    fn upstream_response(
        &self,
        resp: Response<hyper::body::Incoming>,
        http1: bool,
        pool: Option<ReturnToPool>,
        slot: Option<StreamSlot>,
    ) -> Response<RouterBody> {
        let (mut parts, body) = resp.into_parts();
        if http1 && parts.status != StatusCode::SWITCHING_PROTOCOLS {
            strip_hop_by_hop(&mut parts.headers, false);
        }
        Response::from_parts(
            parts,
            RouterBody::upstream(body, self.timeouts.body_idle, pool, slot),
        )
    }

    /// [`Proxy::send`] by the router's own HTTP/1.1 client (a request without a body): the
    /// response head within the response header timeout, the body under the idle bound. It
    /// only borrows the request, so it gives it back on every error.
    #[allow(clippy::manual_async_fn)] // see `Proxy`: arguments held once
    fn send_raw<'a>(
        &'a self,
        req: Request<Option<ClientBody>>,
        addr: SocketAddr,
        side: Side,
    ) -> impl Future<Output = Result<Response<RouterBody>, (ProxyError, Left)>> + 'a {
        async move {
            let conn = match self.upstreams.raw_h1(addr, side).await {
                Ok(c) => c,
                Err(e) => return Err((e, Left::Unsent(req))),
            };
            let exchange = raw_h1::exchange(conn, &req, &self.upstreams);
            let answer = match self.within_header_timeout(exchange, addr, side).await {
                Ok(r) => r,
                Err(e) => return Err((e, Left::Sent(Some(req)))),
            };
            let (mut parts, body) = match answer {
                Ok(resp) => resp.into_parts(),
                Err(source) => {
                    return Err((
                        ProxyError::UpstreamExchange { side, addr, source },
                        Left::Sent(Some(req)),
                    ))
                }
            };
            strip_hop_by_hop(&mut parts.headers, false);
            Ok(Response::from_parts(
                parts,
                RouterBody::raw(body, self.timeouts.body_idle),
            ))
        }
    }

    /// The request with its body under the idle bound, and (for a request with a body) the
    /// signal that its body has been sent.
    fn bound_request(
        &self,
        req: Request<Option<ClientBody>>,
        bodyless: bool,
    ) -> (Request<RequestBody>, Option<Arc<BodySent>>) {
        let (parts, body) = req.into_parts();
        let ended = (!bodyless).then(|| Arc::new(BodySent::default()));
        let body = RequestBody::new(body, self.timeouts.body_idle, ended.clone());
        (Request::from_parts(parts, body), ended)
    }

    /// Waits for the upstream's response head: first while the request body is still being
    /// sent (bounded by the body idle timeout), then at most the response header timeout.
    #[allow(clippy::manual_async_fn)] // see `Proxy`: arguments held once
    fn response_head<'a, B, E: 'a>(
        &'a self,
        sent: impl Future<Output = Result<Response<B>, E>> + 'a,
        body_ended: Option<Arc<BodySent>>,
        addr: SocketAddr,
        side: Side,
        failed: fn(Side, SocketAddr, E) -> ProxyError,
    ) -> impl Future<Output = Result<Response<B>, ProxyError>> + 'a {
        async move {
            let Some(ended) = body_ended else {
                return self
                    .within_header_timeout(sent, addr, side)
                    .await?
                    .map_err(|source| failed(side, addr, source));
            };
            let mut sent = std::pin::pin!(sent);
            // The body idle bound covers a client that stops sending; the first phase here, an
            // upstream that stops taking (no window, no stream it will open): no ask for more in
            // that time while the last one was not waiting for the client. The second phase is
            // the response header timeout. One timer serves both, reset between them: a timer's
            // registration is a measurable part of a small request's cost.
            let (idle, after) = (self.timeouts.body_idle, self.timeouts.response_header);
            let mut timer = std::pin::pin!(tokio::time::sleep(idle));
            let mut sending = true;
            let mut armed = !idle.is_zero();
            let mut polls = ended.polls();
            loop {
                tokio::select! {
                    biased;
                    r = sent.as_mut() => {
                        return r.map_err(|source| failed(side, addr, source))
                    }
                    () = ended.wait(), if sending => {
                        sending = false;
                        armed = !after.is_zero();
                        if armed {
                            timer.as_mut().reset(crate::serve::from_now(after));
                        }
                    }
                    () = timer.as_mut(), if armed => {
                        if !sending {
                            return Err(ProxyError::ResponseHeaderTimeout { side, addr, after });
                        }
                        if ended.polls() == polls && !ended.awaiting_client() {
                            return Err(ProxyError::RequestBodyNotTaken { side, addr, after: idle });
                        }
                        polls = ended.polls();
                        timer.as_mut().reset(crate::serve::from_now(idle));
                    }
                }
            }
        }
    }

    /// `head` (a wait for an upstream's response head), bounded by the response header
    /// timeout (none if it is zero). A combinator rather than an `async fn`: its state is then
    /// `head` and the timer, without a second copy of `head`.
    fn within_header_timeout<F: Future>(
        &self,
        head: F,
        addr: SocketAddr,
        side: Side,
    ) -> impl Future<Output = Result<F::Output, ProxyError>> {
        use futures_util::future::{Either, FutureExt};
        let after = self.timeouts.response_header;
        if after.is_zero() {
            return Either::Left(head.map(Ok));
        }
        Either::Right(
            tokio::time::timeout(after, head).map(move |r| {
                r.map_err(|_| ProxyError::ResponseHeaderTimeout { side, addr, after })
            }),
        )
    }

    fn error_response(&self, e: &ProxyError, grpc: bool) -> Response<RouterBody> {
        self.metrics.error(e.side());
        if e.side() != Side::Client {
            tracing::debug!(error = %e, side = e.side().as_str(), "request failed");
        }
        if grpc {
            return grpc_unavailable(e);
        }
        let mut resp = Response::new(RouterBody::local(format!("ktx-router: {e}\n")));
        *resp.status_mut() = e.status();
        resp.headers_mut().insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        resp.headers_mut()
            .insert("x-ktx-error", HeaderValue::from_static(e.side().as_str()));
        resp
    }
}

/// A failed exchange, blamed on the client when what broke was reading its request body
/// (hyper's client reports our body's error as the request's error), else on the target.
fn request_failed(side: Side, addr: SocketAddr, source: hyper::Error) -> ProxyError {
    let from_client = std::error::Error::source(&source)
        .and_then(|e| e.downcast_ref::<BodyError>())
        .is_some_and(|e| matches!(e, BodyError::Transport(_)));
    if from_client {
        ProxyError::ClientBody { source }
    } else {
        ProxyError::UpstreamRequest { side, addr, source }
    }
}

/// A failed stream of the router's own HTTP/2 client.
fn stream_failed(side: Side, addr: SocketAddr, source: h2::Error) -> ProxyError {
    ProxyError::UpstreamStream { side, addr, source }
}

/// A copy of a bodyless request's head, to send it again without a body.
fn head_of<B>(req: &Request<B>) -> Request<Option<ClientBody>> {
    let mut again = Request::new(None);
    *again.method_mut() = req.method().clone();
    *again.uri_mut() = req.uri().clone();
    *again.version_mut() = req.version();
    *again.headers_mut() = req.headers().clone();
    again
}

/// The target took the request and the exchange broke off before a complete response head
/// (the connection closed or was reset, a stream was reset), rather than answering something
/// unreadable or going silent (a timeout: a process paused in a debugger is not gone).
fn unanswered(e: &ProxyError) -> bool {
    match e {
        ProxyError::UpstreamRequest { source, .. } => {
            !source.is_parse() && !source.is_user() && !source.is_timeout()
        }
        ProxyError::UpstreamExchange { source, .. } => source.unanswered(),
        ProxyError::UpstreamStream { source, .. } => h2_client::unanswered(source),
        _ => false,
    }
}

fn is_grpc<B>(req: &Request<B>) -> bool {
    req.headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// The HTTP status a gRPC error answer stands for (it is sent as 200 + `grpc-status`); the
/// request metric counts this one.
#[derive(Debug, Clone, Copy)]
struct GrpcError(StatusCode);

/// A gRPC "trailers-only" answer: status 200 with `grpc-status: 14` (UNAVAILABLE, what gRPC
/// maps 502/503/504 to) and the reason in `grpc-message`, so gRPC clients see a gRPC error
/// rather than a protocol error.
fn grpc_unavailable(e: &ProxyError) -> Response<RouterBody> {
    let mut resp = Response::new(RouterBody::empty());
    resp.extensions_mut().insert(GrpcError(e.status()));
    let h = resp.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    h.insert("grpc-status", HeaderValue::from_static("14"));
    if let Ok(v) = HeaderValue::from_str(&grpc_percent_encode(&format!("ktx-router: {e}"))) {
        h.insert("grpc-message", v);
    }
    h.insert("x-ktx-error", HeaderValue::from_static(e.side().as_str()));
    resp
}

/// `grpc-message` encoding: printable ASCII except `%` as is, every other byte as `%XX`.
fn grpc_percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn describe(target: &Target) -> String {
    match target {
        Target::Service(s) => format!("Service {s}"),
        Target::Static(a) => format!("{a:?}"),
    }
}

#[cfg(test)]
mod tests;
