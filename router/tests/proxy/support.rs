//! Fixtures: two backends, a routes file, and the router between them; small clients.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Empty, Full};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use ktx_router::{Config, Router};
use ktx_testbackend::Backend;
use tokio::net::TcpStream;

pub const ORIGINAL: &str = "original";
pub const SHADOW: &str = "shadow";

/// Routes with one rule: `VERSION: foobar` → shadow, everything else → original.
pub fn one_rule(original: SocketAddr, shadow: SocketAddr, policy: &str) -> String {
    format!(
        "default: {{ addrs: [\"{original}\"] }}\nrules:\n  - session: foobar\n    match:\n      headers: [{{ name: VERSION, exact: foobar }}]\n    target: {{ addrs: [\"{shadow}\"] }}\n    onUnavailable: {policy}\n"
    )
}

/// The scenario of most tests: original + shadow backends, a router with [`one_rule`].
pub struct Mesh {
    pub original: Backend,
    pub shadow: Backend,
    pub router: Router,
    pub routes: PathBuf,
    _cleanup: RemoveOnDrop,
}

/// Deletes a temp file when the test ends, pass or fail.
pub struct RemoveOnDrop(pub PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

impl Mesh {
    /// Takes the router out (e.g. to shut it down) and keeps the backends alive.
    pub fn split(self) -> (Router, Backend, Backend) {
        (self.router, self.original, self.shadow)
    }
}

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A fresh file path under the system temp dir, unique per test.
pub fn temp_path(name: &str) -> PathBuf {
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("ktx-router-test-{}-{n}-{name}", std::process::id()))
}

/// Writes atomically (temp file + rename), as writers of a watched routes file should.
pub fn write_routes(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

pub fn config(routes: &std::path::Path) -> Config {
    use clap::Parser;
    let mut cfg = Config::try_parse_from([
        "ktx-router",
        "--listen",
        "127.0.0.1:0",
        "--admin",
        "127.0.0.1:0",
        "--routes-file",
        routes.to_str().unwrap(),
    ])
    .unwrap();
    cfg.reload_interval = Duration::from_millis(20);
    cfg.drain_timeout = Duration::from_secs(5);
    // Every test's router and backends share this process, whose RSS is one number: a memory
    // limit would make one test's load refuse another test's connections.
    cfg.max_rss = 0;
    cfg
}

impl Mesh {
    pub async fn start() -> Mesh {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tune: impl FnOnce(&mut Config)) -> Mesh {
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let original = ktx_testbackend::spawn(ORIGINAL, any).await.unwrap();
        let shadow = ktx_testbackend::spawn(SHADOW, any).await.unwrap();
        let routes = temp_path("routes.yaml");
        write_routes(
            &routes,
            &one_rule(original.addr(), shadow.addr(), "fallback"),
        );
        let mut cfg = config(&routes);
        tune(&mut cfg);
        let router = Router::start(cfg).await.unwrap();
        wait_ready(router.admin_addr).await;
        Mesh {
            original,
            shadow,
            router,
            _cleanup: RemoveOnDrop(routes.clone()),
            routes,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.router.listen_addrs[0]
    }

    pub async fn metrics(&self) -> String {
        admin_get(self.router.admin_addr, "/metrics").await.1
    }
}

/// Polls `/readyz` (a real readiness event has no other signal to wait on from outside).
pub async fn wait_ready(admin: SocketAddr) {
    for _ in 0..200 {
        if admin_get(admin, "/readyz").await.0 == 200 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("router at {admin} never became ready");
}

pub async fn admin_get(admin: SocketAddr, path: &str) -> (u16, String) {
    let mut c = H1::connect(admin).await;
    let r = c.send(get(path)).await;
    (r.status().as_u16(), body_string(r).await)
}

pub fn get(path: &str) -> Request<Full<Bytes>> {
    Request::get(path)
        .header("host", "orders")
        .body(Full::new(Bytes::new()))
        .unwrap()
}

pub fn get_marked(path: &str, version: &str) -> Request<Full<Bytes>> {
    Request::get(path)
        .header("host", "orders")
        .header("VERSION", version)
        .body(Full::new(Bytes::new()))
        .unwrap()
}

pub async fn body_string(r: Response<hyper::body::Incoming>) -> String {
    String::from_utf8(r.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
}

pub fn backend_of<B>(r: &Response<B>) -> String {
    r.headers()
        .get(ktx_testbackend::BACKEND_HEADER)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

/// One HTTP/1.1 keep-alive client connection.
pub struct H1 {
    tx: http1::SendRequest<Full<Bytes>>,
}

impl H1 {
    pub async fn connect(addr: SocketAddr) -> H1 {
        let s = TcpStream::connect(addr).await.unwrap();
        let (tx, conn) = http1::handshake(TokioIo::new(s)).await.unwrap();
        tokio::spawn(conn.with_upgrades());
        H1 { tx }
    }

    pub async fn send(&mut self, req: Request<Full<Bytes>>) -> Response<hyper::body::Incoming> {
        self.tx.ready().await.unwrap();
        self.tx.send_request(req).await.unwrap()
    }
}

/// One h2c client connection (prior knowledge), shared by many streams.
#[derive(Clone)]
pub struct H2 {
    pub tx: http2::SendRequest<Empty<Bytes>>,
}

impl H2 {
    pub async fn connect(addr: SocketAddr) -> H2 {
        let s = TcpStream::connect(addr).await.unwrap();
        let (tx, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(s))
            .await
            .unwrap();
        tokio::spawn(conn);
        H2 { tx }
    }

    pub async fn get(
        &mut self,
        addr: SocketAddr,
        path: &str,
        version: Option<&str>,
    ) -> Response<hyper::body::Incoming> {
        let mut b = Request::get(format!("http://{addr}{path}"));
        if let Some(v) = version {
            b = b.header("version", v);
        }
        self.tx.ready().await.unwrap();
        self.tx
            .send_request(b.body(Empty::new()).unwrap())
            .await
            .unwrap()
    }
}

/// A client of the `h2` crate on a new connection to `addr`, ready for its first stream; the
/// connection runs in the background.
pub async fn raw_h2(addr: SocketAddr) -> h2::client::SendRequest<Bytes> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (tx, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    tx.ready().await.unwrap()
}

/// The value of a counter line of the Prometheus text, 0 when absent.
pub fn counter(metrics: &str, name_and_labels: &str) -> f64 {
    metrics
        .lines()
        .find(|l| l.starts_with(name_and_labels) && l[name_and_labels.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}
