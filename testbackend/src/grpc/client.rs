//! A typed client for `ktx.test.Echo`: tonic's client codec over one h2c connection.
//!
//! Built on a bare hyper HTTP/2 connection rather than tonic's `Channel` to keep the dependency
//! tree small; one client is one connection (clone it to share the connection). Tests in other
//! crates point it at a router to check that gRPC, streaming and trailers survive the hop.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::uri::PathAndQuery;
use http::Uri;
use hyper::body::Incoming;
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tonic::metadata::{AsciiMetadataKey, AsciiMetadataValue};
use tonic::{IntoRequest, IntoStreamingRequest, Response, Status, Streaming};
use tonic_prost::ProstCodec;
use tracing::debug;

use super::{
    EchoReply, EchoRequest, BIDI_STREAM_PATH, CLIENT_STREAM_PATH, SERVER_STREAM_PATH, UNARY_PATH,
};

/// Why [`EchoClient::connect`] failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connect to {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("HTTP/2 handshake with {addr}: {source}")]
    Handshake {
        addr: SocketAddr,
        source: hyper::Error,
    },
    #[error("{addr} does not make a valid origin URI: {source}")]
    Origin {
        addr: SocketAddr,
        source: http::uri::InvalidUri,
    },
}

/// Client of `ktx.test.Echo` over one h2c connection.
#[derive(Debug, Clone)]
pub struct EchoClient {
    inner: tonic::client::Grpc<H2Connection>,
    /// Metadata added to every call, e.g. the `version` header a router matches on.
    metadata: Vec<(AsciiMetadataKey, AsciiMetadataValue)>,
}

impl EchoClient {
    /// Opens an h2c connection to `addr`, with `:authority` set to `addr`.
    pub async fn connect(addr: SocketAddr) -> Result<Self, ConnectError> {
        let origin: Uri = format!("http://{addr}")
            .parse()
            .map_err(|source| ConnectError::Origin { addr, source })?;
        Self::connect_with_origin(addr, origin).await
    }

    /// Opens an h2c connection to `addr`; requests carry `origin`'s scheme and authority.
    pub async fn connect_with_origin(addr: SocketAddr, origin: Uri) -> Result<Self, ConnectError> {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|source| ConnectError::Connect { addr, source })?;
        if let Err(error) = stream.set_nodelay(true) {
            debug!(%addr, %error, "set_nodelay failed");
        }
        let (send, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .map_err(|source| ConnectError::Handshake { addr, source })?;
        tokio::spawn(async move {
            if let Err(error) = conn.await {
                debug!(%addr, %error, "gRPC client connection ended");
            }
        });
        Ok(EchoClient {
            inner: tonic::client::Grpc::with_origin(H2Connection { send }, origin),
            metadata: Vec::new(),
        })
    }

    /// Adds `name: value` to every call made by this client (and its clones made afterwards).
    ///
    /// # Panics
    /// When `name` or `value` is not valid ASCII metadata; both come from test code.
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        let key = AsciiMetadataKey::from_bytes(name.as_bytes())
            .unwrap_or_else(|_| panic!("test metadata key {name:?} must be a valid header name"));
        let value = AsciiMetadataValue::try_from(value)
            .unwrap_or_else(|_| panic!("test metadata value {value:?} must be visible ASCII"));
        self.metadata.push((key, value));
        self
    }

    fn decorate<T>(&self, mut request: tonic::Request<T>) -> tonic::Request<T> {
        for (key, value) in &self.metadata {
            request.metadata_mut().append(key.clone(), value.clone());
        }
        request
    }

    async fn ready(&mut self) -> Result<(), Status> {
        self.inner
            .ready()
            .await
            .map_err(|error| Status::unavailable(format!("connection not ready: {error}")))
    }

    /// `rpc Unary(EchoRequest) returns (EchoReply)`.
    pub async fn unary(
        &mut self,
        request: impl IntoRequest<EchoRequest>,
    ) -> Result<Response<EchoReply>, Status> {
        self.ready().await?;
        let request = self.decorate(request.into_request());
        let path = PathAndQuery::from_static(UNARY_PATH);
        self.inner.unary(request, path, ProstCodec::default()).await
    }

    /// `rpc ServerStream(EchoRequest) returns (stream EchoReply)`.
    pub async fn server_stream(
        &mut self,
        request: impl IntoRequest<EchoRequest>,
    ) -> Result<Response<Streaming<EchoReply>>, Status> {
        self.ready().await?;
        let request = self.decorate(request.into_request());
        let path = PathAndQuery::from_static(SERVER_STREAM_PATH);
        self.inner
            .server_streaming(request, path, ProstCodec::default())
            .await
    }

    /// `rpc ClientStream(stream EchoRequest) returns (EchoReply)`.
    pub async fn client_stream(
        &mut self,
        request: impl IntoStreamingRequest<Message = EchoRequest>,
    ) -> Result<Response<EchoReply>, Status> {
        self.ready().await?;
        let request = self.decorate(request.into_streaming_request());
        let path = PathAndQuery::from_static(CLIENT_STREAM_PATH);
        self.inner
            .client_streaming(request, path, ProstCodec::default())
            .await
    }

    /// `rpc BidiStream(stream EchoRequest) returns (stream EchoReply)`.
    pub async fn bidi_stream(
        &mut self,
        request: impl IntoStreamingRequest<Message = EchoRequest>,
    ) -> Result<Response<Streaming<EchoReply>>, Status> {
        self.ready().await?;
        let request = self.decorate(request.into_streaming_request());
        let path = PathAndQuery::from_static(BIDI_STREAM_PATH);
        self.inner
            .streaming(request, path, ProstCodec::default())
            .await
    }
}

/// One HTTP/2 connection as the `tower::Service` tonic's client wants.
#[derive(Debug, Clone)]
struct H2Connection {
    send: http2::SendRequest<tonic::body::Body>,
}

type ResponseFuture =
    Pin<Box<dyn Future<Output = Result<http::Response<Incoming>, hyper::Error>> + Send>>;

impl tower_service::Service<http::Request<tonic::body::Body>> for H2Connection {
    type Response = http::Response<Incoming>;
    type Error = hyper::Error;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.send.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        Box::pin(self.send.send_request(request))
    }
}
