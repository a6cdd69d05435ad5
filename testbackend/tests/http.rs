//! The backend over plain HTTP/1.1 and h2c, in-process on loopback.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use ktx_testbackend::{spawn, HeadersEcho, BACKEND_HEADER};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

type Error = Box<dyn std::error::Error + Send + Sync>;

fn any_port() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

async fn h1(
    addr: SocketAddr,
) -> Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>, Error> {
    let stream = TcpStream::connect(addr).await?;
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    Ok(send)
}

async fn h2(
    addr: SocketAddr,
) -> Result<hyper::client::conn::http2::SendRequest<Full<Bytes>>, Error> {
    let stream = TcpStream::connect(addr).await?;
    let (send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    Ok(send)
}

fn get(uri: &str) -> Request<Full<Bytes>> {
    Request::get(uri)
        .body(Full::default())
        .expect("static test request")
}

fn post(uri: &str, body: impl Into<Bytes>) -> Request<Full<Bytes>> {
    Request::post(uri)
        .body(Full::new(body.into()))
        .expect("static test request")
}

async fn collect(
    response: Response<hyper::body::Incoming>,
) -> Result<(StatusCode, String, Bytes), Error> {
    let status = response.status();
    let backend = response
        .headers()
        .get(BACKEND_HEADER)
        .map(|v| v.to_str().unwrap_or("<not ascii>").to_owned())
        .unwrap_or_default();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, backend, body))
}

#[tokio::test]
async fn http1_root_names_the_backend_and_counts() -> Result<(), Error> {
    let backend = spawn("alpha", any_port()).await?;
    let mut client = h1(backend.addr()).await?;
    let response = client.send_request(get("/")).await?;
    assert_eq!(response.version(), Version::HTTP_11);
    let (status, name, body) = collect(response).await?;
    assert_eq!(
        (status, name.as_str(), &body[..]),
        (StatusCode::OK, "alpha", &b"alpha\n"[..])
    );

    let (_, _, body) = collect(client.send_request(get("/no/such/path")).await?).await?;
    assert_eq!(&body[..], b"alpha\n");
    let (_, _, body) = collect(client.send_request(get("/hello")).await?).await?;
    assert_eq!(&body[..], b"hello\n");

    assert_eq!(backend.requests(), 3);
    assert_eq!(backend.stats().connections(), 1);

    let (_, _, body) = collect(client.send_request(get("/_ktx/stats")).await?).await?;
    let stats: ktx_testbackend::StatsSnapshot = serde_json::from_slice(&body)?;
    assert_eq!((stats.requests, stats.connections), (4, 1));
    Ok(())
}

#[tokio::test]
async fn headers_are_echoed_as_received() -> Result<(), Error> {
    let backend = spawn("alpha", any_port()).await?;
    let mut client = h1(backend.addr()).await?;
    let request = Request::get("/headers")
        .header("host", "svc.example.test")
        .header("version", "foobar")
        .header("x-multi", "one")
        .header("x-multi", "two")
        .body(Full::default())?;
    let (status, _, body) = collect(client.send_request(request).await?).await?;
    assert_eq!(status, StatusCode::OK);
    let echo: HeadersEcho = serde_json::from_slice(&body)?;
    assert_eq!(echo.backend, "alpha");
    assert_eq!(echo.method, "GET");
    assert_eq!(echo.uri, "/headers");
    assert_eq!(echo.version, "HTTP/1.1");
    assert_eq!(echo.get("Host"), Some("svc.example.test"));
    assert_eq!(echo.get("VERSION"), Some("foobar"));
    assert_eq!(echo.get_all("x-multi").collect::<Vec<_>>(), ["one", "two"]);
    assert!(!echo.contains("connection"));
    Ok(())
}

#[tokio::test]
async fn h2c_is_served_on_the_same_port() -> Result<(), Error> {
    let backend = spawn("beta", any_port()).await?;
    let mut client = h2(backend.addr()).await?;
    let response = client.send_request(get(&backend.url("/hello"))).await?;
    assert_eq!(response.version(), Version::HTTP_2);
    let (status, name, body) = collect(response).await?;
    assert_eq!(
        (status, name.as_str(), &body[..]),
        (StatusCode::OK, "beta", &b"hello\n"[..])
    );

    let (_, _, body) = collect(client.send_request(get(&backend.url("/headers"))).await?).await?;
    let echo: HeadersEcho = serde_json::from_slice(&body)?;
    assert_eq!(echo.version, "HTTP/2.0");
    assert_eq!(
        echo.authority.as_deref(),
        Some(backend.addr().to_string().as_str())
    );
    Ok(())
}

#[tokio::test]
async fn bodies_echo_sink_bytes_and_slow() -> Result<(), Error> {
    let backend = spawn("alpha", any_port()).await?;
    let mut client = h1(backend.addr()).await?;

    let payload = Bytes::from(vec![7u8; 300_000]);
    let (status, _, body) =
        collect(client.send_request(post("/echo", payload.clone())).await?).await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, payload);

    let (_, _, body) = collect(client.send_request(post("/sink", payload)).await?).await?;
    assert_eq!(&body[..], b"300000\n");

    let response = client.send_request(get("/bytes?n=200000")).await?;
    assert_eq!(
        response
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .map(|v| v.as_bytes()),
        Some(&b"200000"[..])
    );
    let (_, _, body) = collect(response).await?;
    assert_eq!(body.len(), 200_000);

    let (status, _, body) = collect(client.send_request(get("/slow?ms=20")).await?).await?;
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"alpha\n"[..]));

    let (status, _, _) = collect(client.send_request(get("/status?code=503")).await?).await?;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);

    let (status, _, _) = collect(client.send_request(get("/bytes?n=lots")).await?).await?;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    Ok(())
}

#[tokio::test]
async fn expect_100_continue_is_honoured() -> Result<(), Error> {
    let backend = spawn("alpha", any_port()).await?;
    let mut stream = TcpStream::connect(backend.addr()).await?;
    stream
        .write_all(
            b"POST /sink HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\nexpect: 100-continue\r\n\r\n",
        )
        .await?;
    let mut buf = vec![0u8; 1024];
    let n = stream.read(&mut buf).await?;
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 100 Continue\r\n"),
        "got {:?}",
        String::from_utf8_lossy(&buf[..n])
    );
    stream.write_all(b"hello").await?;
    let mut answer = Vec::new();
    while !answer.ends_with(b"5\n") {
        let n = stream.read(&mut buf).await?;
        assert!(
            n > 0,
            "connection closed before the answer: {:?}",
            String::from_utf8_lossy(&answer)
        );
        answer.extend_from_slice(&buf[..n]);
    }
    assert!(answer.starts_with(b"HTTP/1.1 200 OK\r\n"));
    Ok(())
}

#[tokio::test]
async fn dropping_the_handle_closes_open_connections() -> Result<(), Error> {
    let backend = spawn("alpha", any_port()).await?;
    let addr = backend.addr();
    let mut client = h1(addr).await?;
    collect(client.send_request(get("/")).await?).await?;
    drop(backend);
    // The connection task sees the stop signal and closes the socket.
    let failed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if client.ready().await.is_err() || client.send_request(get("/")).await.is_err() {
                return;
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert!(failed.is_ok(), "connection still served after drop");
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "listener still open after drop"
    );
    Ok(())
}

#[tokio::test]
async fn shutdown_lets_in_flight_requests_finish() -> Result<(), Error> {
    let backend = spawn("alpha", any_port()).await?;
    let mut client = h1(backend.addr()).await?;
    let in_flight = client.send_request(get("/slow?ms=100"));
    let in_flight = tokio::spawn(in_flight);
    // Wait until the backend has the request before asking it to stop.
    while backend.requests() == 0 {
        tokio::task::yield_now().await;
    }
    backend.shutdown(Duration::from_secs(5)).await;
    let (status, _, body) = collect(in_flight.await??).await?;
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"alpha\n"[..]));
    Ok(())
}

#[tokio::test]
async fn a_name_that_is_not_a_header_value_is_refused() {
    let error = spawn("bad\nname", any_port())
        .await
        .expect_err("newline in name");
    assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput);
}
