//! What each request gets: one function from path to answer.
//!
//! Bad input (a malformed query, a body that breaks off) becomes a `400` with a plain-text reason,
//! never a panic. gRPC and WebSocket requests are handed to `grpc` and `ws`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::body::Body;
use crate::server::Shared;
use crate::{grpc, ws, HeadersEcho, BACKEND_HEADER};

/// The body of `GET /hello`.
pub(crate) const HELLO: &[u8] = b"hello\n";

/// Longest `/slow` wait, so a typo cannot park a connection for hours.
const MAX_SLOW: Duration = Duration::from_secs(600);

pub(crate) async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    shared.stats.request();
    let mut response = route(&shared, req).await;
    response
        .headers_mut()
        .insert(BACKEND_HEADER, shared.name_header.clone());
    Ok(response)
}

async fn route(shared: &Arc<Shared>, req: Request<Incoming>) -> Response<Body> {
    if grpc::server::is_grpc(&req) {
        return grpc::server::call(shared, req).await;
    }
    match req.uri().path() {
        "/hello" => text(StatusCode::OK, Bytes::from_static(HELLO)),
        "/headers" => headers(shared, &req),
        "/echo" => echo(req),
        "/sink" => sink(req).await,
        "/bytes" => bytes(&req),
        "/slow" => slow(shared, &req).await,
        "/status" => status(shared, &req),
        "/ws" => ws::server::accept(shared, req),
        "/_ktx/stats" => json(&shared.stats.snapshot()),
        _ => text(StatusCode::OK, shared.name_body.clone()),
    }
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut response = Response::new(Body::full(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn bad_request(reason: String) -> Response<Body> {
    text(StatusCode::BAD_REQUEST, format!("{reason}\n"))
}

fn headers(shared: &Shared, req: &Request<Incoming>) -> Response<Body> {
    json(&HeadersEcho::from_request(&shared.name, req))
}

fn json(value: &impl serde::Serialize) -> Response<Body> {
    match serde_json::to_vec(value) {
        Ok(json) => {
            let mut response = Response::new(Body::full(json));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("application/json"),
            );
            response
        }
        Err(error) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("{error}\n")),
    }
}

fn echo(req: Request<Incoming>) -> Response<Body> {
    let content_type = req.headers().get(header::CONTENT_TYPE).cloned();
    let mut response = Response::new(Body::Echo(req.into_body()));
    if let Some(content_type) = content_type {
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, content_type);
    }
    response
}

async fn sink(req: Request<Incoming>) -> Response<Body> {
    let mut body = req.into_body();
    let mut received: u64 = 0;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Some(data) = frame.data_ref() {
                    received += data.len() as u64;
                }
            }
            Err(error) => {
                return bad_request(format!(
                    "request body broke off after {received} bytes: {error}"
                ))
            }
        }
    }
    text(StatusCode::OK, format!("{received}\n"))
}

fn bytes(req: &Request<Incoming>) -> Response<Body> {
    match query_number(req, "n") {
        Ok(remaining) => {
            let mut response = Response::new(Body::Filler { remaining });
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("application/octet-stream"),
            );
            response
        }
        Err(reason) => bad_request(reason),
    }
}

async fn slow(shared: &Shared, req: &Request<Incoming>) -> Response<Body> {
    match query_number(req, "ms") {
        Ok(ms) => {
            tokio::time::sleep(Duration::from_millis(ms).min(MAX_SLOW)).await;
            text(StatusCode::OK, shared.name_body.clone())
        }
        Err(reason) => bad_request(reason),
    }
}

fn status(shared: &Shared, req: &Request<Incoming>) -> Response<Body> {
    let code = query_number(req, "code").and_then(|code| {
        u16::try_from(code)
            .ok()
            .and_then(|code| StatusCode::from_u16(code).ok())
            .ok_or_else(|| format!("code={code} is not an HTTP status"))
    });
    match code {
        Ok(code) => text(code, shared.name_body.clone()),
        Err(reason) => bad_request(reason),
    }
}

/// The unsigned number in query parameter `key`.
fn query_number<B>(req: &Request<B>, key: &str) -> Result<u64, String> {
    let value = req
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .find_map(|pair| pair.strip_prefix(key)?.strip_prefix('='))
        .ok_or_else(|| format!("missing query parameter {key}"))?;
    value
        .parse()
        .map_err(|_| format!("query parameter {key}={value:?} is not an unsigned number"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(uri: &str) -> Request<()> {
        Request::builder()
            .uri(uri)
            .body(())
            .expect("static test URI")
    }

    #[test]
    fn query_number_finds_the_key() {
        assert_eq!(query_number(&req("/bytes?n=10"), "n"), Ok(10));
        assert_eq!(query_number(&req("/bytes?x=1&n=7"), "n"), Ok(7));
        assert_eq!(query_number(&req("/slow?ms=5"), "ms"), Ok(5));
    }

    #[test]
    fn query_number_rejects_bad_input() {
        assert!(query_number(&req("/bytes"), "n").is_err());
        assert!(query_number(&req("/bytes?nn=1"), "n").is_err());
        assert!(query_number(&req("/bytes?n=-1"), "n").is_err());
        assert!(query_number(&req("/bytes?n=abc"), "n").is_err());
    }
}
