//! gRPC through the router with a real tonic client: unary and all three streaming kinds keep
//! their messages and trailers; an unmatched call behaves exactly as without the router.

use futures_util::StreamExt;
use ktx_testbackend::grpc::{EchoClient, EchoRequest};
use tonic::Code;

use super::support::*;

#[tokio::test]
async fn unary_and_streaming_calls_are_routed_by_metadata() {
    let mesh = Mesh::start().await;
    let mut marked = EchoClient::connect(mesh.addr())
        .await
        .unwrap()
        .with_header("version", "foobar");
    let mut plain = EchoClient::connect(mesh.addr()).await.unwrap();

    let r = marked
        .unary(EchoRequest::new("hi"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((r.message.as_str(), r.backend.as_str()), ("hi", SHADOW));
    let r = plain
        .unary(EchoRequest::new("hi"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.backend, ORIGINAL);

    let mut s = marked
        .server_stream(EchoRequest::new("s"))
        .await
        .unwrap()
        .into_inner();
    let mut n = 0;
    while let Some(m) = s.next().await {
        assert_eq!(m.unwrap().backend, SHADOW);
        n += 1;
    }
    assert!(n >= 2, "server stream sent {n} messages");

    let msgs = futures_util::stream::iter((0..5).map(|i| EchoRequest::new(format!("m{i}"))));
    let r = plain.client_stream(msgs).await.unwrap().into_inner();
    assert_eq!(r.backend, ORIGINAL);

    let msgs = futures_util::stream::iter((0..4).map(|i| EchoRequest::new(format!("b{i}"))));
    let mut s = marked.bidi_stream(msgs).await.unwrap().into_inner();
    let mut got = Vec::new();
    while let Some(m) = s.next().await {
        let m = m.unwrap();
        assert_eq!(m.backend, SHADOW);
        got.push(m.message);
    }
    assert_eq!(got.len(), 4, "{got:?}");
}

#[tokio::test]
async fn error_statuses_arrive_as_without_the_router() {
    let mesh = Mesh::start().await;
    let mut direct = EchoClient::connect(mesh.original.addr()).await.unwrap();
    let mut routed = EchoClient::connect(mesh.addr()).await.unwrap();
    for code in [5, 7, 14] {
        let req = || EchoRequest::new(format!("status:{code}"));
        let a = direct.unary(req()).await.unwrap_err();
        let b = routed.unary(req()).await.unwrap_err();
        assert_eq!(a.code(), b.code());
        assert_eq!(a.message(), b.message());
        assert_eq!(b.code(), Code::from_i32(code));
        // Streaming: the status comes in the trailers after the stream.
        let a = direct.server_stream(req()).await.map(|_| ()).err();
        let b = routed.server_stream(req()).await.map(|_| ()).err();
        assert_eq!(a.map(|s| s.code()), b.map(|s| s.code()));
    }
}
