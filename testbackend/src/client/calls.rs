//! One function per [`Call`]: make the call once and say which backend answered.
//!
//! Each checks that the answer is the echo the test backend gives (right messages, right
//! count, one backend for a whole stream), so an answer from something else is an error and
//! not a name.

use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;
use futures_util::{stream, StreamExt};
use http::{Request, Response, Version};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use super::{Answer, Call, ClientError};
use crate::grpc::{EchoClient, EchoReply, EchoRequest, SERVER_STREAM_REPLIES};
use crate::{ws, BACKEND_HEADER};

/// What every echo call sends.
const MESSAGE: &str = "ktx";
/// Longest banner line the `tcp` call reads.
const MAX_BANNER: usize = 256;

pub(super) async fn call(
    call: Call,
    addr: SocketAddr,
    headers: &[(String, String)],
    bytes: u64,
) -> Result<Answer, ClientError> {
    match call {
        Call::GrpcUnary => grpc_unary(addr, headers).await,
        Call::GrpcServerStream => grpc_server_stream(addr, headers).await,
        Call::GrpcClientStream => grpc_client_stream(addr, headers).await,
        Call::GrpcBidi => grpc_bidi(addr, headers).await,
        Call::Ws => websocket(addr, headers).await,
        Call::Http1 => http(addr, headers, Version::HTTP_11).await,
        Call::H2c => http(addr, headers, Version::HTTP_2).await,
        Call::Tcp => tcp(addr).await,
        Call::Download => download(addr, headers, bytes).await,
    }
}

fn unexpected(what: impl Into<String>) -> ClientError {
    ClientError::Unexpected(what.into())
}

async fn grpc(addr: SocketAddr, headers: &[(String, String)]) -> Result<EchoClient, ClientError> {
    let mut client = EchoClient::connect(addr).await?;
    for (name, value) in headers {
        client = client.with_header(name, value);
    }
    Ok(client)
}

/// The one backend that sent every reply, if they agree and match `messages`.
fn one_backend(replies: &[EchoReply], messages: &[String]) -> Result<String, ClientError> {
    let got: Vec<&str> = replies.iter().map(|r| r.message.as_str()).collect();
    if got != messages {
        return Err(unexpected(format!(
            "replies {got:?}, expected {messages:?}"
        )));
    }
    let first = replies
        .first()
        .ok_or_else(|| unexpected("no reply at all"))?;
    if let Some(other) = replies.iter().find(|r| r.backend != first.backend) {
        return Err(unexpected(format!(
            "one stream answered by two backends: {} and {}",
            first.backend, other.backend
        )));
    }
    Ok(first.backend.clone())
}

async fn grpc_unary(addr: SocketAddr, headers: &[(String, String)]) -> Result<Answer, ClientError> {
    let reply = grpc(addr, headers)
        .await?
        .unary(EchoRequest::new(MESSAGE))
        .await?
        .into_inner();
    let backend = one_backend(&[reply], &[MESSAGE.to_owned()])?;
    Ok(Answer::new(backend, "1 reply"))
}

async fn grpc_server_stream(
    addr: SocketAddr,
    headers: &[(String, String)],
) -> Result<Answer, ClientError> {
    let mut replies = grpc(addr, headers)
        .await?
        .server_stream(EchoRequest::new(MESSAGE))
        .await?
        .into_inner();
    let mut got = Vec::new();
    while let Some(reply) = replies.message().await? {
        got.push(reply);
    }
    let expected: Vec<String> = (1..=SERVER_STREAM_REPLIES)
        .map(|i| format!("{MESSAGE}/{i}"))
        .collect();
    let backend = one_backend(&got, &expected)?;
    Ok(Answer::new(backend, format!("{} replies", got.len())))
}

async fn grpc_client_stream(
    addr: SocketAddr,
    headers: &[(String, String)],
) -> Result<Answer, ClientError> {
    let words = ["a", "b", "c"];
    let reply = grpc(addr, headers)
        .await?
        .client_stream(stream::iter(words.map(EchoRequest::new)))
        .await?
        .into_inner();
    let backend = one_backend(&[reply], &[words.join(",")])?;
    Ok(Answer::new(backend, format!("{} requests", words.len())))
}

/// Sends each message only after the reply to the previous one arrived: the call is a real
/// conversation, which a hop that buffers a whole stream would stall.
async fn grpc_bidi(addr: SocketAddr, headers: &[(String, String)]) -> Result<Answer, ClientError> {
    let words = ["one", "two", "three"];
    let (tx, rx) = tokio::sync::mpsc::channel::<EchoRequest>(1);
    let requests = stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) });
    tx.send(EchoRequest::new(words[0]))
        .await
        .map_err(|_| unexpected("request stream closed before the first message"))?;
    let mut replies = grpc(addr, headers)
        .await?
        .bidi_stream(requests)
        .await?
        .into_inner();
    let mut got = Vec::new();
    for next in words.iter().skip(1).map(Some).chain([None]) {
        let reply = replies
            .next()
            .await
            .ok_or_else(|| unexpected(format!("stream ended after {} replies", got.len())))??;
        got.push(reply);
        match next {
            Some(word) => tx
                .send(EchoRequest::new(*word))
                .await
                .map_err(|_| unexpected("request stream closed early"))?,
            None => break,
        }
    }
    drop(tx);
    if let Some(extra) = replies.message().await? {
        return Err(unexpected(format!("an extra reply {:?}", extra.message)));
    }
    let backend = one_backend(&got, &words.map(String::from))?;
    Ok(Answer::new(backend, format!("{} round trips", got.len())))
}

async fn websocket(addr: SocketAddr, headers: &[(String, String)]) -> Result<Answer, ClientError> {
    let headers: Vec<(&str, &str)> = headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let mut client = ws::connect(addr, "/ws", &headers).await?;
    let backend = client.recv_text().await?;
    for text in ["ping", "ünïcode"] {
        client.send_text(text).await?;
        let echo = client.recv_text().await?;
        if echo != text {
            return Err(unexpected(format!("sent {text:?}, echoed {echo:?}")));
        }
    }
    client.close().await?;
    Ok(Answer::new(backend, "2 echoes"))
}

/// `GET /` over HTTP/1.1 or h2c (prior knowledge); the backend names itself in a header and
/// in the body, and both must agree.
async fn http(
    addr: SocketAddr,
    headers: &[(String, String)],
    version: Version,
) -> Result<Answer, ClientError> {
    let response = get(addr, "/", headers, version).await?;
    let status = response.status();
    let header = backend_of(&response);
    let body = response.into_body().collect().await?.to_bytes();
    let body = String::from_utf8_lossy(&body);
    let Some(backend) = header else {
        return Err(unexpected(format!(
            "status {status}, no {BACKEND_HEADER} header"
        )));
    };
    if !status.is_success() || body.trim_end() != backend {
        return Err(unexpected(format!(
            "status {status}, {BACKEND_HEADER}: {backend}, body {body:?}"
        )));
    }
    Ok(Answer::new(backend, format!("status {}", status.as_u16())))
}

/// `GET /bytes?n={bytes}` over HTTP/1.1, the body counted frame by frame and dropped, like
/// `curl -o /dev/null`: a cheap sink, so that a transfer measured in a pod is not capped by the
/// client (`busybox wget -O - | wc -c` spends more CPU than the bytes' whole way to it).
async fn download(
    addr: SocketAddr,
    headers: &[(String, String)],
    bytes: u64,
) -> Result<Answer, ClientError> {
    let start = Instant::now();
    let path = format!("/bytes?n={bytes}");
    let response = get(addr, &path, headers, Version::HTTP_11).await?;
    let status = response.status();
    let Some(backend) = backend_of(&response) else {
        return Err(unexpected(format!(
            "status {status}, no {BACKEND_HEADER} header"
        )));
    };
    if !status.is_success() {
        return Err(unexpected(format!("status {status} from {backend}")));
    }
    let mut body = response.into_body();
    let mut got = 0u64;
    while let Some(frame) = body.frame().await {
        if let Some(data) = frame?.data_ref() {
            got += data.len() as u64;
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    if got != bytes {
        return Err(unexpected(format!(
            "{backend} sent {got} bytes, {bytes} were asked for"
        )));
    }
    let mib_per_s = bytes as f64 / (1024.0 * 1024.0) / seconds.max(1e-9);
    Ok(Answer::new(
        backend,
        format!("{bytes} bytes in {seconds:.6} s, {mib_per_s:.1} MiB/s"),
    ))
}

/// `GET path` with `headers` on a new connection to `addr`, over `version`; the response head.
async fn get(
    addr: SocketAddr,
    path: &str,
    headers: &[(String, String)],
    version: Version,
) -> Result<Response<Incoming>, ClientError> {
    let stream = connect(addr).await?;
    let mut request = Request::get(format!("http://{addr}{path}")).version(version);
    if version == Version::HTTP_11 {
        // HTTP/2 carries the authority in the URI; HTTP/1.1 needs the header.
        request = request.header(http::header::HOST, addr.to_string());
    }
    for (name, value) in headers {
        request = request.header(name.as_str(), value.as_str());
    }
    let request = request
        .body(Empty::<Bytes>::new())
        .map_err(|e| unexpected(format!("cannot build the request: {e}")))?;
    let response = if version == Version::HTTP_2 {
        let (mut send, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await?;
        tokio::spawn(conn);
        send.send_request(request).await?
    } else {
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        send.send_request(request).await?
    };
    Ok(response)
}

/// The backend that says it sent `response` (`BACKEND_HEADER`).
fn backend_of(response: &Response<Incoming>) -> Option<String> {
    response
        .headers()
        .get(BACKEND_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

async fn connect(addr: SocketAddr) -> Result<TcpStream, ClientError> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|source| ClientError::Connect { addr, source })?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// Waits for the server-first banner (the backend's name) without sending anything, then checks
/// that bytes come back as sent.
async fn tcp(addr: SocketAddr) -> Result<Answer, ClientError> {
    let mut stream = BufReader::new(connect(addr).await?);
    let mut banner = Vec::new();
    (&mut stream)
        .take(MAX_BANNER as u64)
        .read_until(b'\n', &mut banner)
        .await
        .map_err(ClientError::Io)?;
    let Some(name) = banner.strip_suffix(b"\n") else {
        return Err(unexpected(format!(
            "no banner line, got {:?}",
            String::from_utf8_lossy(&banner)
        )));
    };
    let backend = String::from_utf8_lossy(name).into_owned();
    let sent = b"\x00\x01 raw bytes, not HTTP\r\n\r\n";
    stream.write_all(sent).await.map_err(ClientError::Io)?;
    let mut echo = vec![0; sent.len()];
    stream
        .read_exact(&mut echo)
        .await
        .map_err(ClientError::Io)?;
    if echo != sent {
        return Err(unexpected(format!(
            "sent {:?}, echoed {:?}",
            String::from_utf8_lossy(sent),
            String::from_utf8_lossy(&echo)
        )));
    }
    Ok(Answer::new(
        backend,
        format!("banner, {} bytes echoed", sent.len()),
    ))
}
