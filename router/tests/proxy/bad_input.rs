//! Bad input: the router answers 400/431 or closes that one connection, keeps serving others,
//! and its memory stays bounded.

use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::support::*;

async fn raw_exchange(addr: std::net::SocketAddr, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    // The router may close before reading everything we send; that is fine.
    let _ = s.write_all(bytes).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

async fn still_serves(mesh: &Mesh) {
    let mut c = H1::connect(mesh.addr()).await;
    assert_eq!(backend_of(&c.send(get_marked("/", "foobar")).await), SHADOW);
}

#[tokio::test]
async fn malformed_request_line_gets_400() {
    let mesh = Mesh::start().await;
    let out = raw_exchange(mesh.addr(), b"GET /\x01bad HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(out.starts_with("HTTP/1.1 400"), "{out:?}");
    let out = raw_exchange(mesh.addr(), b"GET / HTTP/1.1\r\nBad Header\r\n\r\n").await;
    assert!(out.starts_with("HTTP/1.1 400"), "{out:?}");
    still_serves(&mesh).await;
}

#[tokio::test]
async fn a_one_megabyte_header_gets_431() {
    let mesh = Mesh::start().await;
    let mut req = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
    req.extend(std::iter::repeat_n(b'a', 1 << 20));
    req.extend_from_slice(b"\r\n\r\n");
    let out = raw_exchange(mesh.addr(), &req).await;
    assert!(out.starts_with("HTTP/1.1 431"), "{out:?}");
    assert_eq!(
        mesh.original.stats().requests() + mesh.shadow.stats().requests(),
        0
    );
    still_serves(&mesh).await;
}

#[tokio::test]
async fn slowloris_is_cut_off_while_others_are_served() {
    let mesh = Mesh::start_with(|c| c.header_read_timeout = Duration::from_millis(300)).await;
    let mut slow = TcpStream::connect(mesh.addr()).await.unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    still_serves(&mesh).await;
    let mut sink = Vec::new();
    // Trickle one header byte at a time; the router must close us anyway.
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if slow.write_all(b"X").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            let mut b = [0u8; 512];
            match tokio::time::timeout(Duration::from_millis(1), slow.read(&mut b)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return,
                Ok(Ok(n)) => sink.extend_from_slice(&b[..n]),
                Err(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "slowloris connection was not closed");
    assert!(started.elapsed() < Duration::from_secs(3));
    still_serves(&mesh).await;
}

fn rss_kb() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap()
}

#[tokio::test]
async fn http2_rapid_reset_flood_is_contained() {
    let mesh = Mesh::start().await;
    let before = rss_kb();
    let s = TcpStream::connect(mesh.addr()).await.unwrap();
    let (client, conn) = h2::client::handshake(s).await.unwrap();
    let conn = tokio::spawn(conn);
    let mut client = Some(client);
    let mut sent = 0;
    // Open streams and cancel each at once (HEADERS then RST_STREAM), as fast as allowed.
    for _ in 0..20_000 {
        let Some(c) = client.take() else { break };
        let Ok(mut ready) = c.ready().await else {
            break;
        };
        let req = http::Request::get("http://orders/slow?ms=1000")
            .body(())
            .unwrap();
        let sent_now = ready.send_request(req, true);
        client = Some(ready);
        match sent_now {
            Ok((resp, _)) => drop(resp),
            Err(_) => break,
        }
        sent += 1;
    }
    drop(client);
    // The router either survives the flood or sends GOAWAY; it must not fall over.
    let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
    still_serves(&mesh).await;
    let grown = rss_kb().saturating_sub(before);
    assert!(
        grown < 64 * 1024,
        "RSS grew by {grown} KiB after {sent} reset streams"
    );
    // Requests that reached backends are bounded far below what was sent.
    let served = mesh.original.stats().requests();
    assert!(served < sent as u64, "served {served} of {sent}");
    let _ = Bytes::new();
}
