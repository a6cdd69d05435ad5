//! The protocol crate on its own, over real loopback sockets: the library's two ends talk to
//! each other without the `ktx-shadow` binary (its tests cover the full product).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ktx_tunnel::client::{ClientConfig, Status, TcpConnector, Tunnel};
use ktx_tunnel::credentials::SessionCredentials;
use ktx_tunnel::proto::stream_head::StreamHead;
use ktx_tunnel::shadow::{Forwarded, ShadowEndpoint};
use ktx_tunnel::splice::NoObserver;
use ktx_tunnel::TunnelOptions;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const PATIENCE: Duration = Duration::from_secs(20);

async fn echo_server() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_connection_crosses_the_tunnel_and_comes_back() {
    let creds = SessionCredentials::generate("lib").unwrap();
    let local = echo_server().await;
    let tunnel_port = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = ShadowEndpoint::new(
        creds.shadow().shadow_config().unwrap(),
        TunnelOptions::new("ktx-shadow"),
    );
    let ktx = Tunnel::spawn(
        ClientConfig {
            tls: creds.ktx().ktx_config().unwrap(),
            ports: [(8080, local)].into_iter().collect(),
            options: TunnelOptions::new("ktx"),
            backoff: Default::default(),
        },
        Arc::new(TcpConnector {
            addr: tunnel_port.local_addr().unwrap(),
        }),
    );

    let (tcp, _) = tunnel_port.accept().await.unwrap();
    let accepted = tokio::time::timeout(PATIENCE, endpoint.accept(tcp, || Some("claim")))
        .await
        .expect("handshake in time")
        .expect("handshake succeeds");
    assert_eq!(accepted.version, ktx_tunnel::proto::PROTOCOL_MAX);
    assert_eq!(accepted.claim, "claim");
    assert!(accepted.peer.software.starts_with("ktx "));
    tokio::spawn(accepted.driver.run(std::future::pending()));
    let up = tokio::time::timeout(PATIENCE, ktx.wait_for_session(1))
        .await
        .unwrap();
    assert!(matches!(up, Status::Up { version: 2, .. }), "{up:?}");

    // An in-cluster client's connection, as the shadow's service port would accept it.
    let service = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut client = TcpStream::connect(service.local_addr().unwrap())
        .await
        .unwrap();
    let (inbound, peer) = service.accept().await.unwrap();
    let handle = accepted.handle.clone();
    let forwarded = tokio::spawn(async move {
        let head = StreamHead {
            port: 8080,
            peer: Some(peer),
        };
        handle.forward(inbound, head, &NoObserver).await
    });
    client.write_all(b"there and back again").await.unwrap();
    client.shutdown().await.unwrap();
    let mut echo = Vec::new();
    tokio::time::timeout(PATIENCE, client.read_to_end(&mut echo))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(echo, b"there and back again");
    let moved = match forwarded.await.unwrap().unwrap() {
        Forwarded::Spliced(moved) => moved,
        Forwarded::NotTaken(n) => panic!("ktx did not take the connection: {}", n.why),
    };
    assert_eq!((moved.to_tunnel, moved.from_tunnel), (20, 20));
    ktx.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_peer_that_does_not_speak_tls_is_refused_with_a_reason() {
    let creds = SessionCredentials::generate("lib").unwrap();
    let endpoint = ShadowEndpoint::new(
        creds.shadow().shadow_config().unwrap(),
        TunnelOptions::new("ktx-shadow"),
    );
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut plain = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
    plain
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let (tcp, _) = l.accept().await.unwrap();
    let err = tokio::time::timeout(PATIENCE, endpoint.accept(tcp, || Some(())))
        .await
        .unwrap()
        .err()
        .expect("refused");
    assert_eq!(err.reason(), "tls", "{err}");
}
