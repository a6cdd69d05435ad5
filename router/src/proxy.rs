//! One request, top to bottom: match a rule → pick a ready endpoint of its target (or apply the
//! rule's `onUnavailable` policy) → forward on a pooled connection of the same protocol → hand
//! the upstream's response back, streaming. Everything the request path reads is either
//! borrowed from the current route table or owned by the request.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::{HeaderValue, Request, Response, StatusCode};
use http_body::Body as _;
use hyper::body::Incoming;
use ktx_rules::{OnUnavailable, RouteTable, Rule, Target};
use tokio::sync::watch;

use crate::body::{ReturnToPool, RouterBody};
use crate::error::{ProxyError, Side};
use crate::headers::{is_upgrade, strip_hop_by_hop, strip_request_hop_by_hop};
use crate::metrics::{Metrics, RequestLabels, RuleLabel};
use crate::upstream::Upstreams;

/// Label of requests that matched no rule.
const DEFAULT_RULE: &str = "default";

/// HTTP version spoken on both sides of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    Http1,
    H2,
}

/// Shared state of the request path.
#[derive(Debug)]
pub struct Proxy {
    pub table: watch::Receiver<Arc<RouteTable>>,
    pub upstreams: Arc<Upstreams>,
    pub metrics: Metrics,
    default_label: Arc<str>,
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
    ) -> Self {
        Proxy {
            table,
            upstreams,
            metrics,
            default_label: Arc::from(DEFAULT_RULE),
        }
    }

    /// Serves one request that arrived on listener `port`. Never fails: errors become responses.
    pub async fn handle(
        &self,
        req: Request<Incoming>,
        port: u16,
        wire: Wire,
    ) -> Response<RouterBody> {
        let start = Instant::now();
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
                (label, self.forward(req, d, &table, port, wire).await)
            }
            Err((label, e)) => (label, self.error_response(&e)),
        };
        self.metrics
            .requests
            .get_or_create(&RequestLabels {
                rule: label.clone(),
                status: resp.status().as_u16(),
            })
            .inc();
        self.metrics
            .latency
            .get_or_create(&RuleLabel { rule: label })
            .observe(start.elapsed().as_secs_f64());
        resp
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

    async fn forward(
        &self,
        mut req: Request<Incoming>,
        d: Decision,
        table: &RouteTable,
        port: u16,
        wire: Wire,
    ) -> Response<RouterBody> {
        let upgrade = wire == Wire::Http1 && is_upgrade(req.headers());
        if wire == Wire::Http1 {
            strip_request_hop_by_hop(req.headers_mut(), upgrade);
        }
        let attempt = self.send(req, d.addr, d.side, wire, upgrade).await;
        let e = match attempt {
            Ok(resp) => return resp,
            Err((e, req)) => match (d.session, req) {
                // Nothing was sent yet: a dead session with `fallback` goes to the original.
                (Some((_, OnUnavailable::Fallback)), Some(req)) => {
                    tracing::debug!(error = %e, "shadow unreachable, falling back to the default target");
                    self.metrics.error(Side::Shadow);
                    match self.upstreams.pick(table.default_target(), port) {
                        Some(addr) => {
                            match Box::pin(self.send(req, addr, Side::Upstream, wire, upgrade))
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
            },
        };
        tracing::debug!(error = %e, "forward failed");
        self.error_response(&e)
    }

    /// Sends on a connection to `addr`. On an error before sending, gives the request back.
    #[allow(clippy::type_complexity)]
    async fn send(
        &self,
        mut req: Request<Incoming>,
        addr: SocketAddr,
        side: Side,
        wire: Wire,
        upgrade: bool,
    ) -> Result<Response<RouterBody>, (ProxyError, Option<Request<Incoming>>)> {
        let mut pool = None;
        let resp = match wire {
            Wire::H2 => {
                let mut tx = match self.upstreams.h2(addr, side).await {
                    Ok(tx) => tx,
                    Err(e) => return Err((e, Some(req))),
                };
                if let Err(source) = tx.ready().await {
                    return Err((
                        ProxyError::UpstreamRequest { side, addr, source },
                        Some(req),
                    ));
                }
                tx.send_request(req)
                    .await
                    .map_err(|source| (ProxyError::UpstreamRequest { side, addr, source }, None))?
            }
            Wire::Http1 if upgrade => {
                let mut conn = match Box::pin(self.upstreams.h1_fresh(addr, side)).await {
                    Ok(c) => c,
                    Err(e) => return Err((e, Some(req))),
                };
                let slot = req.extensions_mut().remove::<crate::http1::UpgradeSlot>();
                let mut resp =
                    conn.tx.send_request(req).await.map_err(|source| {
                        (ProxyError::UpstreamRequest { side, addr, source }, None)
                    })?;
                if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
                    // The connection task splices once hyper hands the client's socket back.
                    if let Some(slot) = slot {
                        slot.put(hyper::upgrade::on(&mut resp));
                    }
                }
                resp
            }
            Wire::Http1 => {
                let mut conn = match self.upstreams.h1(addr, side).await {
                    Ok(c) => c,
                    Err(e) => return Err((e, Some(req))),
                };
                if let Err(source) = conn.tx.ready().await {
                    return Err((
                        ProxyError::UpstreamRequest { side, addr, source },
                        Some(req),
                    ));
                }
                let resp = conn.tx.send_request(req).await;
                let resp = resp
                    .map_err(|source| (ProxyError::UpstreamRequest { side, addr, source }, None))?;
                if resp.body().is_end_stream() {
                    self.upstreams.checkin(conn);
                } else {
                    pool = Some(ReturnToPool {
                        upstreams: Arc::clone(&self.upstreams),
                        conn,
                    });
                }
                resp
            }
        };
        let (mut parts, body) = resp.into_parts();
        if wire == Wire::Http1 && parts.status != StatusCode::SWITCHING_PROTOCOLS {
            strip_hop_by_hop(&mut parts.headers, false);
        }
        Ok(Response::from_parts(
            parts,
            RouterBody::Upstream { body, pool },
        ))
    }

    fn error_response(&self, e: &ProxyError) -> Response<RouterBody> {
        self.metrics.error(e.side());
        if e.side() != Side::Client {
            tracing::debug!(error = %e, side = e.side().as_str(), "request failed");
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

fn describe(target: &Target) -> String {
    match target {
        Target::Service(s) => format!("Service {s}"),
        Target::Static(a) => format!("{a:?}"),
    }
}
