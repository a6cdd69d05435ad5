//! The gRPC service `ktx.test.Echo` through the library's typed client.

use std::net::SocketAddr;

use futures_util::{stream, StreamExt};
use ktx_testbackend::grpc::{EchoClient, EchoRequest, FAILURE_MESSAGE, SERVER_STREAM_REPLIES};
use ktx_testbackend::spawn;
use tonic::Code;

type Error = Box<dyn std::error::Error + Send + Sync>;

fn any_port() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

#[tokio::test]
async fn unary_echoes_and_names_the_backend() -> Result<(), Error> {
    let backend = spawn("grpc-a", any_port()).await?;
    let mut client = EchoClient::connect(backend.addr())
        .await?
        .with_header("version", "foobar");
    let response = client.unary(EchoRequest::new("hi")).await?;
    assert_eq!(
        response
            .metadata()
            .get("x-ktx-backend")
            .and_then(|v| v.to_str().ok()),
        Some("grpc-a")
    );
    let reply = response.into_inner();
    assert_eq!(
        (reply.message.as_str(), reply.backend.as_str()),
        ("hi", "grpc-a")
    );
    assert_eq!(backend.stats().grpc_calls(), 1);
    Ok(())
}

#[tokio::test]
async fn server_stream_sends_several_replies() -> Result<(), Error> {
    let backend = spawn("grpc-a", any_port()).await?;
    let mut client = EchoClient::connect(backend.addr()).await?;
    let mut replies = client
        .server_stream(EchoRequest::new("m"))
        .await?
        .into_inner();
    let mut messages = Vec::new();
    while let Some(reply) = replies.message().await? {
        messages.push(reply.message);
    }
    assert_eq!(messages.len(), SERVER_STREAM_REPLIES);
    assert_eq!(messages, ["m/1", "m/2", "m/3"]);
    Ok(())
}

#[tokio::test]
async fn client_stream_joins_messages() -> Result<(), Error> {
    let backend = spawn("grpc-a", any_port()).await?;
    let mut client = EchoClient::connect(backend.addr()).await?;
    let requests = stream::iter(["a", "b", "c"].map(EchoRequest::new));
    let reply = client.client_stream(requests).await?.into_inner();
    assert_eq!(reply.message, "a,b,c");
    Ok(())
}

#[tokio::test]
async fn bidi_stream_echoes_each_message_as_it_arrives() -> Result<(), Error> {
    let backend = spawn("grpc-a", any_port()).await?;
    let mut client = EchoClient::connect(backend.addr()).await?;
    let (tx, rx) = tokio::sync::mpsc::channel::<EchoRequest>(4);
    let requests = stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) });
    let mut replies = client.bidi_stream(requests).await?.into_inner();
    for word in ["one", "two", "three"] {
        tx.send(EchoRequest::new(word)).await?;
        let reply = replies.next().await.ok_or("stream ended early")??;
        assert_eq!(reply.message, word);
    }
    drop(tx);
    assert!(replies.message().await?.is_none());
    Ok(())
}

#[tokio::test]
async fn failures_are_real_grpc_statuses() -> Result<(), Error> {
    let backend = spawn("grpc-a", any_port()).await?;
    let mut client = EchoClient::connect(backend.addr()).await?;

    let status = client
        .unary(EchoRequest::new("status:5"))
        .await
        .expect_err("asked to fail");
    assert_eq!(
        (status.code(), status.message()),
        (Code::NotFound, FAILURE_MESSAGE)
    );

    // Streaming: one reply, then the status in the trailers.
    let mut replies = client
        .server_stream(EchoRequest::new("status:14"))
        .await?
        .into_inner();
    assert_eq!(
        replies.message().await?.map(|r| r.message).as_deref(),
        Some("status:14")
    );
    let status = replies
        .message()
        .await
        .expect_err("trailers carry the failure");
    assert_eq!(status.code(), Code::Unavailable);
    Ok(())
}

#[tokio::test]
async fn unknown_methods_are_unimplemented() -> Result<(), Error> {
    let backend = spawn("grpc-a", any_port()).await?;
    let stream = tokio::net::TcpStream::connect(backend.addr()).await?;
    // Hand-rolled: an h2c request to a method the service does not have.
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await?;
    tokio::spawn(conn);
    let request = http::Request::post(backend.url("/ktx.test.Echo/Nope"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(http_body_util::Full::new(bytes::Bytes::from(
            ktx_testbackend::grpc::unary_frame("x"),
        )))?;
    let response = send.send_request(request).await?;
    assert_eq!(response.status(), http::StatusCode::OK);
    assert_eq!(
        response.headers().get("grpc-status").map(|v| v.as_bytes()),
        Some(&b"12"[..])
    );
    Ok(())
}
