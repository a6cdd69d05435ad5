//! The proxy core driven without sockets: a hyper HTTP/1.1 server over one half of an
//! in-memory pipe (`tokio::io::duplex`) hands each request to [`Proxy::handle`], a hyper client
//! speaks on the other half. The targets are Services with no ready endpoint, so nothing is
//! dialled and every answer is the core's own decision: rule match, `onUnavailable` policy,
//! status, error side and metrics.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use ktx_rules::budget::Budget;
use prometheus_client::registry::Registry;
use tokio::sync::watch;

use super::*;
use crate::metrics::RequestLabels;
use crate::routes::{compile, RoutesText};
use crate::upstream::{EndpointMap, SessionReuse, UpstreamConfig};

const ROUTES: &str = "\
default: { service: orders-ktx-stuntman }
rules:
  - session: alice
    match:
      headers: [{ name: VERSION, exact: alice }]
    target: { service: orders-ktx-mesh-alice }
    onUnavailable: reject
  - session: bob
    match:
      headers: [{ name: VERSION, exact: bob }]
    target: { service: orders-ktx-mesh-bob }
    onUnavailable: fallback
";

fn proxy() -> Proxy {
    let text = RoutesText {
        origin: String::new(),
        text: ROUTES.into(),
    };
    let table = compile(&text, &Budget::default()).expect("the test table is valid");
    let (_table_tx, table_rx) = watch::channel(Arc::new(table));
    // No Service has an endpoint: every pick fails before a connection is made.
    let (_endpoints_tx, endpoints_rx) = watch::channel(Arc::new(EndpointMap::default()));
    let upstreams = Arc::new(Upstreams::new(
        endpoints_rx,
        UpstreamConfig {
            connect_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(60),
            max_idle_per_addr: 8,
            h2_streams_per_connection: 100,
            h2_connections_per_client: 4,
            h2_stream_slot_timeout: Duration::from_secs(1),
            h2_stream_window: 1 << 16,
            h2_connection_window: 1 << 20,
            h2_shared_streams_per_client: 16,
            session_reuse: SessionReuse {
                idle: Duration::from_millis(100),
                age: Duration::from_secs(1),
            },
        },
    ));
    Proxy::new(
        table_rx,
        upstreams,
        Metrics::new(&mut Registry::default()),
        Timeouts {
            response_header: Duration::from_secs(1),
            body_idle: Duration::from_secs(1),
        },
        false,
    )
}

/// Serves the proxy core on one end of an in-memory pipe; returns a client on the other.
async fn client(proxy: Arc<Proxy>) -> hyper::client::conn::http1::SendRequest<Empty<Bytes>> {
    let (near, far) = tokio::io::duplex(64 * 1024);
    tokio::spawn(async move {
        let svc = service_fn(move |req| {
            let proxy = Arc::clone(&proxy);
            async move {
                let req = req.map(crate::body::ClientBody::Http1);
                Ok::<_, std::convert::Infallible>(proxy.handle(req, 80, Wire::Http1).await)
            }
        });
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(far), svc)
            .await;
    });
    let (tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(near))
        .await
        .expect("handshake over the pipe");
    tokio::spawn(conn);
    tx
}

struct Answer {
    status: u16,
    side: String,
    body: String,
}

async fn get(
    tx: &mut hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    version: Option<&str>,
) -> Answer {
    let mut req = Request::get("/orders").header("host", "orders");
    if let Some(v) = version {
        req = req.header("version", v);
    }
    tx.ready().await.expect("the pipe stays open");
    let resp = tx
        .send_request(req.body(Empty::new()).expect("valid request"))
        .await
        .expect("an answer");
    let status = resp.status().as_u16();
    let side = resp
        .headers()
        .get("x-ktx-error")
        .map(|v| v.to_str().unwrap_or_default().to_owned())
        .unwrap_or_default();
    let body = resp.into_body().collect().await.expect("whole body");
    Answer {
        status,
        side,
        body: String::from_utf8_lossy(&body.to_bytes()).into_owned(),
    }
}

fn count(proxy: &Proxy, rule: &str, status: u16) -> u64 {
    proxy
        .metrics
        .requests
        .get_or_create(&RequestLabels {
            rule: Arc::from(rule),
            status,
        })
        .get()
}

#[tokio::test]
async fn each_request_is_routed_by_its_rule_and_policy_on_one_connection() {
    let proxy = Arc::new(proxy());
    let mut tx = client(Arc::clone(&proxy)).await;

    // A session whose shadow is down with `reject`: 503 naming the session, blamed on it.
    let a = get(&mut tx, Some("alice")).await;
    assert_eq!((a.status, a.side.as_str()), (503, "shadow"), "{}", a.body);
    assert!(a.body.contains("session 'alice'"), "{}", a.body);

    // With `fallback`: the request goes to the default target, whose own failure is reported.
    let b = get(&mut tx, Some("bob")).await;
    assert_eq!((b.status, b.side.as_str()), (503, "upstream"), "{}", b.body);
    assert!(b.body.contains("Service orders-ktx-stuntman"), "{}", b.body);

    // An unmarked request, and a mark no rule knows, take the default target.
    for v in [None, Some("carol")] {
        let d = get(&mut tx, v).await;
        assert_eq!((d.status, d.side.as_str()), (503, "upstream"), "{}", d.body);
        assert!(d.body.contains("no ready endpoint"), "{}", d.body);
    }

    // A request that fell back is counted under the target that answered it.
    assert_eq!(count(&proxy, "alice", 503), 1);
    assert_eq!(count(&proxy, "bob", 503), 0);
    assert_eq!(count(&proxy, DEFAULT_RULE, 503), 3);
}
