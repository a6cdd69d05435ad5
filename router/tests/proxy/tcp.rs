//! Plain TCP: anything that is not HTTP (TLS, a database protocol, a server that speaks first)
//! passes through, bytes untouched, to the default target.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::support::*;

/// A raw TCP server: sends `banner` first (if any), then echoes.
async fn raw_server(banner: &'static [u8]) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let _ = s.write_all(banner).await;
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

async fn router_to(default: SocketAddr) -> (ktx_router::Router, std::path::PathBuf) {
    let routes = temp_path("tcp.yaml");
    write_routes(&routes, &format!("default: {{ addrs: [\"{default}\"] }}\n"));
    let mut cfg = config(&routes);
    cfg.sniff_timeout = Duration::from_millis(200);
    let router = ktx_router::Router::start(cfg).await.unwrap();
    wait_ready(router.admin_addr).await;
    (router, routes)
}

#[tokio::test]
async fn non_http_bytes_pass_through_untouched() {
    let (router, routes) = router_to(raw_server(b"").await).await;
    let mut s = TcpStream::connect(router.listen_addrs[0]).await.unwrap();
    // The start of a TLS ClientHello, then arbitrary binary.
    let payload: Vec<u8> = [0x16, 0x03, 0x01, 0x00, 0xa5]
        .iter()
        .copied()
        .chain((0..=255u8).cycle().take(10_000))
        .collect();
    s.write_all(&payload).await.unwrap();
    s.shutdown().await.unwrap();
    let mut back = Vec::new();
    s.read_to_end(&mut back).await.unwrap();
    assert_eq!(back, payload);
    std::fs::remove_file(routes).unwrap();
}

#[tokio::test]
async fn a_server_that_speaks_first_is_reached_after_the_sniff_timeout() {
    let (router, routes) = router_to(raw_server(b"220 hello\r\n").await).await;
    let mut s = TcpStream::connect(router.listen_addrs[0]).await.unwrap();
    let mut buf = [0u8; 11];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf, b"220 hello\r\n");
    std::fs::remove_file(routes).unwrap();
}

/// On a port declared HTTP (`--http-ports`), a client that sends nothing is an HTTP client yet
/// to send its request: it is never passed through (a flood of silent sockets would open as
/// many upstream connections, which is what made `noisy-silent-5k` slow every other client),
/// and the router closes it after the header read timeout.
#[tokio::test]
async fn on_an_http_port_a_silent_client_is_never_passed_through() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let upstream = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let default = upstream.local_addr().unwrap();
    let reached = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&reached);
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = upstream.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            held.push(s);
        }
    });
    let routes = temp_path("tcp-http-port.yaml");
    let _cleanup = RemoveOnDrop(routes.clone());
    write_routes(&routes, &format!("default: {{ addrs: [\"{default}\"] }}\n"));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut cfg = config(&routes);
    cfg.listen = vec![SocketAddr::from(([127, 0, 0, 1], port))];
    cfg.http_ports = vec![port];
    cfg.sniff_timeout = Duration::from_millis(100);
    cfg.header_read_timeout = Duration::from_millis(600);
    let router = ktx_router::Router::start(cfg).await.unwrap();
    wait_ready(router.admin_addr).await;

    let mut silent = Vec::new();
    for _ in 0..10 {
        silent.push(TcpStream::connect(("127.0.0.1", port)).await.unwrap());
    }
    // Well past the sniff timeout: nothing reached the upstream.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        reached.load(Ordering::SeqCst),
        0,
        "silent clients were passed through"
    );
    // Closed by the router once the header read timeout is over.
    for s in &mut silent {
        let mut b = [0u8; 1];
        match tokio::time::timeout(Duration::from_secs(5), s.read(&mut b)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {}
            other => panic!("a silent client on an HTTP port was not closed: {other:?}"),
        }
    }
    assert_eq!(
        reached.load(Ordering::SeqCst),
        0,
        "silent clients were passed through"
    );
    drop(router);
}
