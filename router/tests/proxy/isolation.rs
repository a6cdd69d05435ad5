//! One client's stall never spends another client's window, slot or memory: a real h2 client
//! that advertises a zero window and never grants any, and a well-behaved client beside it
//! whose request must still complete quickly.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http::Request;
use http_body_util::BodyExt;
use ktx_testbackend::grpc::{EchoClient, EchoRequest};
use tokio::net::TcpStream;

use super::support::*;

/// How long the good client may take while the bad one stalls. Straight to the backend it takes
/// milliseconds; the bound leaves room for a slow CI machine.
const GOOD_CLIENT_BOUND: Duration = Duration::from_secs(5);

/// Opens an h2c connection with SETTINGS_INITIAL_WINDOW_SIZE=0 (connection window left at the
/// default 64 KiB, which the first response fills), starts `streams` requests for `path` and
/// never reads a byte of their bodies. The returned handles keep the streams open; PINGs are
/// still answered by the connection task.
async fn stalled_client(
    addr: SocketAddr,
    path: &str,
    streams: usize,
) -> Vec<h2::client::ResponseFuture> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (mut tx, conn) = h2::client::Builder::new()
        .initial_window_size(0)
        .handshake::<_, Bytes>(tcp)
        .await
        .unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut held = Vec::new();
    for _ in 0..streams {
        tx = tx.ready().await.unwrap();
        let req = Request::get(format!("http://{addr}{path}"))
            .body(())
            .unwrap();
        let (resp, _) = tx.send_request(req, true).unwrap();
        held.push(resp);
    }
    held
}

/// Waits until the backend has seen `n` requests (the stalled streams have reached it).
async fn backend_saw(mesh: &Mesh, n: u64) {
    for _ in 0..500 {
        if mesh.original.stats().requests() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "backend saw {} requests, expected {n}",
        mesh.original.stats().requests()
    );
}

#[tokio::test]
async fn a_zero_window_h2_client_does_not_stall_another_clients_body() {
    let mesh = Mesh::start().await;
    let addr = mesh.addr();
    let held = stalled_client(addr, "/bytes?n=65536", 256).await;
    backend_saw(&mesh, 256).await;

    let mut good = H2::connect(addr).await;
    let answered = tokio::time::timeout(GOOD_CLIENT_BOUND, async {
        let r = good.get(addr, "/hello", None).await;
        assert_eq!(r.status(), 200);
        let body = r.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"hello\n");
    })
    .await;
    assert!(
        answered.is_ok(),
        "a second client's body did not arrive within {GOOD_CLIENT_BOUND:?} while another \
         client stalled 256 streams"
    );
    drop(held);
}

#[tokio::test]
async fn a_zero_window_h2_client_does_not_stall_another_clients_grpc_stream() {
    let mesh = Mesh::start().await;
    let addr = mesh.addr();
    let held = stalled_client(addr, "/bytes?n=65536", 256).await;
    backend_saw(&mesh, 256).await;

    let answered = tokio::time::timeout(GOOD_CLIENT_BOUND, async {
        let mut plain = EchoClient::connect(addr).await.unwrap();
        let mut s = plain
            .server_stream(EchoRequest::new("s"))
            .await
            .unwrap()
            .into_inner();
        let mut n = 0;
        while let Some(m) = s.next().await {
            m.unwrap();
            n += 1;
        }
        assert!(n >= 2, "server stream sent {n} messages");
    })
    .await;
    assert!(
        answered.is_ok(),
        "a gRPC server stream did not finish within {GOOD_CLIENT_BOUND:?} while another \
         client stalled 256 streams"
    );
    drop(held);
}
