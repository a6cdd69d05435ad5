//! A WebSocket client for tests: connect (with extra headers), send, receive text.

use std::net::SocketAddr;

use futures_util::{SinkExt, StreamExt};
use http::{HeaderName, HeaderValue};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// Why a WebSocket client call failed.
#[derive(Debug, thiserror::Error)]
pub enum WsError {
    #[error("connect to {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("header {0:?} is not a valid header name or value")]
    Header(String),
    #[error("WebSocket: {0}")]
    Protocol(#[from] tokio_tungstenite::tungstenite::Error),
    #[error("connection closed")]
    Closed,
    #[error("expected a text message, got {0:?}")]
    NotText(Box<Message>),
}

/// A connected WebSocket.
#[derive(Debug)]
pub struct WsClient {
    ws: WebSocketStream<TcpStream>,
}

/// Connects to `ws://addr{path}` with extra request `headers` (e.g. `[("version", "foobar")]`).
pub async fn connect(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<WsClient, WsError> {
    let mut request = format!("ws://{addr}{path}").into_client_request()?;
    for (name, value) in headers {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| WsError::Header((*name).to_owned()))?;
        let value =
            HeaderValue::from_str(value).map_err(|_| WsError::Header((*value).to_owned()))?;
        request.headers_mut().append(name, value);
    }
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|source| WsError::Connect { addr, source })?;
    let (ws, _response) = tokio_tungstenite::client_async(request, stream).await?;
    Ok(WsClient { ws })
}

impl WsClient {
    /// Sends one text message.
    pub async fn send_text(&mut self, text: &str) -> Result<(), WsError> {
        self.ws.send(Message::text(text)).await?;
        Ok(())
    }

    /// Waits for the next text message (control frames are skipped).
    pub async fn recv_text(&mut self) -> Result<String, WsError> {
        loop {
            match self.ws.next().await {
                Some(Ok(Message::Text(text))) => return Ok(text.as_str().to_owned()),
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
                Some(Ok(other)) => return Err(WsError::NotText(Box::new(other))),
                Some(Err(error)) => return Err(error.into()),
                None => return Err(WsError::Closed),
            }
        }
    }

    /// Sends a close frame and waits for the server to close.
    pub async fn close(mut self) -> Result<(), WsError> {
        self.ws.close(None).await?;
        while let Some(message) = self.ws.next().await {
            message?;
        }
        Ok(())
    }
}
