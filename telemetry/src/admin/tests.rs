//! The shared admin server on real loopback sockets.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

use super::*;

/// Serves `respond` on a loopback port; the sender stops it.
async fn start(
    header_timeout: Duration,
) -> (SocketAddr, oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(serve(
        listener,
        Limits { header_timeout },
        |req: &Request<Incoming>| match req.uri().path() {
            "/healthz" => text(StatusCode::OK, "ok\n"),
            "/thing" => json(&serde_json::json!({ "generation": 3 })),
            _ => text(StatusCode::NOT_FOUND, "no\n"),
        },
        async move {
            let _ = stopped.await;
        },
    ));
    (addr, stop, task)
}

/// Sends `raw` and reads until the server closes (bounded at 5 s).
async fn exchange(addr: SocketAddr, raw: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(raw).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
        .await
        .expect("the server answers and closes within 5 s")
        .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn answers_each_path_with_the_binarys_own_reply() {
    let (addr, _stop, _task) = start(Duration::from_secs(5)).await;
    let ok = exchange(
        addr,
        b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
    assert!(ok.ends_with("\r\n\r\nok\n"), "{ok}");
    let js = exchange(
        addr,
        b"GET /thing HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert!(js.contains("content-type: application/json\r\n"), "{js}");
    assert!(js.ends_with("{\"generation\":3}"), "{js}");
    let nf = exchange(
        addr,
        b"GET /nope HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert!(nf.starts_with("HTTP/1.1 404 Not Found\r\n"), "{nf}");
}

#[tokio::test]
async fn a_client_that_never_finishes_its_head_is_closed_after_the_header_timeout() {
    let bound = Duration::from_millis(300);
    let (addr, _stop, _task) = start(bound).await;
    let started = Instant::now();
    let answer = exchange(addr, b"GET /healthz HTTP/1.1\r\nhost: x\r\n").await;
    let took = started.elapsed();
    assert!(
        !answer.contains("200 OK"),
        "no answer to half a head: {answer}"
    );
    assert!(
        took >= bound && took < bound + Duration::from_secs(3),
        "closed after {took:?} (bound {bound:?})"
    );
}

#[tokio::test]
async fn a_head_larger_than_the_bound_is_refused() {
    let (addr, _stop, _task) = start(Duration::from_secs(5)).await;
    let mut raw = b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-pad: ".to_vec();
    raw.extend(std::iter::repeat_n(b'a', MAX_HEAD * 2));
    raw.extend_from_slice(b"\r\n\r\n");
    let answer = exchange(addr, &raw).await;
    assert!(!answer.contains("200 OK"), "{answer}");
}

#[tokio::test]
async fn stops_accepting_when_told() {
    let (addr, stop, task) = start(Duration::from_secs(5)).await;
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("serve returns once stopped")
        .unwrap();
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "the listener is closed"
    );
}

/// `serve_probed` with `hold`, ready once the sender says so; the second sender stops it.
async fn start_probed(hold: Duration) -> (SocketAddr, watch::Sender<bool>, oneshot::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (ready, ready_rx) = watch::channel(false);
    let state = ready_rx.clone();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(serve_probed(
        listener,
        Limits {
            header_timeout: Duration::from_secs(5),
        },
        hold,
        move |path| match path {
            "/readyz" if *state.borrow() => text(StatusCode::OK, "ready\n"),
            "/readyz" => text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n"),
            _ => text(StatusCode::OK, "ok\n"),
        },
        move || {
            let mut ready = ready_rx.clone();
            let now = *ready.borrow();
            (!now).then_some(async move {
                let _ = ready.wait_for(|r| *r).await;
            })
        },
        async move {
            let _ = stopped.await;
        },
    ));
    (addr, ready, stop)
}

/// GET `path`: the answer's status line and how long it took.
async fn timed_get(addr: SocketAddr, path: &str) -> (String, Duration) {
    let started = Instant::now();
    let head = format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
    let answer = exchange(addr, head.as_bytes()).await;
    let status = answer.lines().next().unwrap_or_default().to_owned();
    (status, started.elapsed())
}

#[tokio::test]
async fn a_probe_before_the_first_ready_is_answered_the_moment_the_process_is_ready() {
    let (addr, ready, _stop) = start_probed(Duration::from_secs(5)).await;
    let probe = tokio::spawn(timed_get(addr, "/readyz"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    ready.send_replace(true);
    let (status, took) = probe.await.unwrap();
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(
        took >= Duration::from_millis(150) && took < Duration::from_secs(3),
        "{took:?}"
    );
    let (status, took) = timed_get(addr, "/readyz").await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(took < Duration::from_millis(150), "{took:?}");
}

#[tokio::test]
async fn a_probe_is_held_no_longer_than_the_hold_and_other_paths_not_at_all() {
    let hold = Duration::from_millis(300);
    let (addr, _ready, _stop) = start_probed(hold).await;
    let (status, took) = timed_get(addr, "/readyz").await;
    assert_eq!(status, "HTTP/1.1 503 Service Unavailable");
    assert!(
        took >= hold - Duration::from_millis(50) && took < hold + Duration::from_secs(3),
        "{took:?}"
    );
    let (status, took) = timed_get(addr, "/healthz").await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(took < hold - Duration::from_millis(50), "{took:?}");
}

#[test]
fn metrics_encode_the_registry() {
    let mut registry = Registry::default();
    let c = prometheus_client::metrics::counter::Counter::<u64>::default();
    registry.register("ktx_test_things", "Things.", c.clone());
    c.inc();
    let r = metrics(&Mutex::new(registry));
    assert_eq!(r.status(), StatusCode::OK);
}
