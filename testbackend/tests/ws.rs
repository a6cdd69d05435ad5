//! WebSocket echo at `/ws` through the library's client.

use std::net::SocketAddr;

use ktx_testbackend::{spawn, ws};

type Error = Box<dyn std::error::Error + Send + Sync>;

#[tokio::test]
async fn websocket_greets_with_the_name_then_echoes() -> Result<(), Error> {
    let backend = spawn("ws-a", SocketAddr::from(([127, 0, 0, 1], 0))).await?;
    let mut client = ws::connect(backend.addr(), "/ws", &[("version", "foobar")]).await?;
    assert_eq!(client.recv_text().await?, "ws-a");
    for text in ["ping", "pong", "ünïcode"] {
        client.send_text(text).await?;
        assert_eq!(client.recv_text().await?, text);
    }
    client.close().await?;
    assert_eq!(backend.stats().websockets(), 1);
    Ok(())
}

#[tokio::test]
async fn ws_without_upgrade_is_a_bad_request() -> Result<(), Error> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let backend = spawn("ws-a", SocketAddr::from(([127, 0, 0, 1], 0))).await?;
    let mut stream = tokio::net::TcpStream::connect(backend.addr()).await?;
    stream
        .write_all(b"GET /ws HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await?;
    assert!(
        answer.starts_with(b"HTTP/1.1 400 "),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    Ok(())
}
