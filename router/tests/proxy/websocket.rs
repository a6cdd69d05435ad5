//! WebSocket: the Upgrade is forwarded to the routed target and both upgraded halves are joined.

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use super::support::*;

async fn first_message(addr: std::net::SocketAddr, version: Option<&str>) -> (String, String) {
    let mut req = format!("ws://{addr}/ws").into_client_request().unwrap();
    if let Some(v) = version {
        req.headers_mut().insert("VERSION", v.parse().unwrap());
    }
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut ws, resp) = tokio_tungstenite::client_async(req, stream).await.unwrap();
    assert_eq!(resp.status(), 101);
    let hello = ws
        .next()
        .await
        .unwrap()
        .unwrap()
        .into_text()
        .unwrap()
        .to_string();
    ws.send(Message::text("echo me")).await.unwrap();
    let echo = ws
        .next()
        .await
        .unwrap()
        .unwrap()
        .into_text()
        .unwrap()
        .to_string();
    ws.close(None).await.unwrap();
    (hello, echo)
}

#[tokio::test]
async fn websocket_is_routed_and_echoes() {
    let mesh = Mesh::start().await;
    assert_eq!(
        first_message(mesh.addr(), Some("foobar")).await,
        (SHADOW.into(), "echo me".into())
    );
    assert_eq!(
        first_message(mesh.addr(), None).await,
        (ORIGINAL.into(), "echo me".into())
    );
}
