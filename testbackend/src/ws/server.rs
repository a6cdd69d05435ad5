//! The server half of `/ws`: answer the handshake, then echo on the upgraded connection.
//!
//! The upgraded connection lives in its own task (hyper hands the socket over after the `101`);
//! it watches the backend's stop signal like every connection does.

use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use http::{header, HeaderValue, Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tracing::debug;

use crate::body::Body;
use crate::server::{Shared, Stop};

fn refuse(reason: &'static str) -> Response<Body> {
    let mut response = Response::new(Body::full(reason));
    *response.status_mut() = StatusCode::BAD_REQUEST;
    response
}

fn has_token(req: &Request<Incoming>, name: header::HeaderName, token: &str) -> bool {
    req.headers().get_all(name).iter().any(|value| {
        value
            .to_str()
            .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    })
}

/// Answers the handshake with `101` and spawns the echo on the upgraded connection.
pub(crate) fn accept(shared: &Arc<Shared>, mut req: Request<Incoming>) -> Response<Body> {
    if req.version() != Version::HTTP_11
        || !has_token(&req, header::CONNECTION, "upgrade")
        || !has_token(&req, header::UPGRADE, "websocket")
    {
        return refuse("/ws expects an HTTP/1.1 WebSocket upgrade\n");
    }
    let Some(key) = req.headers().get(header::SEC_WEBSOCKET_KEY) else {
        return refuse("missing sec-websocket-key\n");
    };
    let accept = derive_accept_key(key.as_bytes());
    let Ok(accept) = HeaderValue::from_str(&accept) else {
        return refuse("cannot derive sec-websocket-accept\n");
    };
    shared.stats.websocket();
    let upgrade = hyper::upgrade::on(&mut req);
    let name = shared.name.to_string();
    let stop = shared.stop.clone();
    tokio::spawn(async move {
        match upgrade.await {
            Ok(upgraded) => {
                let ws =
                    WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None)
                        .await;
                echo(ws, name, stop).await;
            }
            Err(error) => debug!(%error, "WebSocket upgrade failed"),
        }
    });
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    response
}

async fn echo<S>(mut ws: WebSocketStream<S>, name: String, mut stop: watch::Receiver<Stop>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    if let Err(error) = ws.send(Message::text(name)).await {
        debug!(%error, "WebSocket greeting failed");
        return;
    }
    loop {
        let message = tokio::select! {
            message = ws.next() => message,
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() == Stop::Abort {
                    return;
                }
                // Draining: say goodbye properly, then keep reading until the peer closes.
                let _ = ws.close(None).await;
                continue;
            }
        };
        let reply = match message {
            Some(Ok(message @ (Message::Text(_) | Message::Binary(_)))) => message,
            // Pings are answered and closes acknowledged by tungstenite itself.
            Some(Ok(_)) => continue,
            Some(Err(error)) => {
                debug!(%error, "WebSocket connection ended with an error");
                return;
            }
            None => return,
        };
        if let Err(error) = ws.send(reply).await {
            debug!(%error, "WebSocket echo failed");
            return;
        }
    }
}
