//! Serving `ktx.test.Echo` with tonic's server codec on top of our hyper connection.
//!
//! tonic does the framing, trailers and status mapping; this file only says what each method
//! answers. The HTTP plumbing (accept, h2c) is `server.rs`'s.

use std::future::{ready, Future, Ready};
use std::pin::Pin;
use std::sync::Arc;

use futures_util::{stream, Stream, StreamExt};
use http::{header, Request, Response};
use hyper::body::Incoming;
use tonic::server::{
    ClientStreamingService, ServerStreamingService, StreamingService, UnaryService,
};
use tonic::{Code, Status, Streaming};
use tonic_prost::ProstCodec;

use super::{
    EchoReply, EchoRequest, BIDI_STREAM_PATH, CLIENT_STREAM_PATH, FAILURE_MESSAGE,
    SERVER_STREAM_PATH, SERVER_STREAM_REPLIES, UNARY_PATH,
};
use crate::body::Body;
use crate::server::Shared;

type ReplyStream = Pin<Box<dyn Stream<Item = Result<EchoReply, Status>> + Send>>;
type Codec = ProstCodec<EchoReply, EchoRequest>;

/// Whether this request is a gRPC call (by content type, or by our service's path).
pub(crate) fn is_grpc<B>(req: &Request<B>) -> bool {
    req.uri().path().starts_with("/ktx.test.Echo/")
        || req
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|ct| ct.as_bytes().starts_with(b"application/grpc"))
}

pub(crate) async fn call(shared: &Arc<Shared>, req: Request<Incoming>) -> Response<Body> {
    shared.stats.grpc_call();
    let mut grpc = tonic::server::Grpc::new(Codec::default());
    let echo = Echo {
        backend: shared.name.clone(),
    };
    let response = match req.uri().path() {
        UNARY_PATH => grpc.unary(echo, req).await,
        SERVER_STREAM_PATH => grpc.server_streaming(echo, req).await,
        CLIENT_STREAM_PATH => grpc.client_streaming(echo, req).await,
        BIDI_STREAM_PATH => grpc.streaming(echo, req).await,
        path => Status::unimplemented(format!("no method {path}")).into_http(),
    };
    response.map(Body::Grpc)
}

/// One call's view of the service.
#[derive(Debug, Clone)]
struct Echo {
    backend: Arc<str>,
}

impl Echo {
    fn reply(&self, message: impl Into<String>) -> EchoReply {
        EchoReply {
            message: message.into(),
            backend: self.backend.to_string(),
        }
    }
}

/// The status a `"status:N"` message asks for, if it is one.
fn requested_failure(message: &str) -> Option<Status> {
    let code: i32 = message.strip_prefix("status:")?.trim().parse().ok()?;
    Some(Status::new(Code::from_i32(code), FAILURE_MESSAGE))
}

impl UnaryService<EchoRequest> for Echo {
    type Response = EchoReply;
    type Future = Ready<Result<tonic::Response<EchoReply>, Status>>;

    fn call(&mut self, request: tonic::Request<EchoRequest>) -> Self::Future {
        let message = request.into_inner().message;
        ready(match requested_failure(&message) {
            Some(status) => Err(status),
            None => Ok(tonic::Response::new(self.reply(message))),
        })
    }
}

impl ServerStreamingService<EchoRequest> for Echo {
    type Response = EchoReply;
    type ResponseStream = ReplyStream;
    type Future = Ready<Result<tonic::Response<ReplyStream>, Status>>;

    fn call(&mut self, request: tonic::Request<EchoRequest>) -> Self::Future {
        let message = request.into_inner().message;
        let replies: Vec<Result<EchoReply, Status>> = match requested_failure(&message) {
            Some(status) => vec![Ok(self.reply(message)), Err(status)],
            None => (1..=SERVER_STREAM_REPLIES)
                .map(|i| Ok(self.reply(format!("{message}/{i}"))))
                .collect(),
        };
        ready(Ok(tonic::Response::new(Box::pin(stream::iter(replies)))))
    }
}

impl ClientStreamingService<EchoRequest> for Echo {
    type Response = EchoReply;
    type Future = Pin<Box<dyn Future<Output = Result<tonic::Response<EchoReply>, Status>> + Send>>;

    fn call(&mut self, request: tonic::Request<Streaming<EchoRequest>>) -> Self::Future {
        let this = self.clone();
        let mut requests = request.into_inner();
        Box::pin(async move {
            let mut messages = Vec::new();
            while let Some(request) = requests.next().await {
                let message = request?.message;
                if let Some(status) = requested_failure(&message) {
                    return Err(status);
                }
                messages.push(message);
            }
            Ok(tonic::Response::new(this.reply(messages.join(","))))
        })
    }
}

impl StreamingService<EchoRequest> for Echo {
    type Response = EchoReply;
    type ResponseStream = ReplyStream;
    type Future = Ready<Result<tonic::Response<ReplyStream>, Status>>;

    fn call(&mut self, request: tonic::Request<Streaming<EchoRequest>>) -> Self::Future {
        let this = self.clone();
        let replies = request.into_inner().map(move |request| {
            let message = request?.message;
            match requested_failure(&message) {
                Some(status) => Err(status),
                None => Ok(this.reply(message)),
            }
        });
        ready(Ok(tonic::Response::new(Box::pin(replies))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_messages_become_statuses() {
        let status = requested_failure("status:5").expect("status:5 asks for a failure");
        assert_eq!(status.code(), Code::NotFound);
        assert_eq!(status.message(), FAILURE_MESSAGE);
        assert!(requested_failure("hello").is_none());
        assert!(requested_failure("status:x").is_none());
    }

    #[test]
    fn grpc_is_recognised_by_content_type_or_path() {
        let by_type = Request::builder()
            .uri("/other.Service/Method")
            .header(header::CONTENT_TYPE, "application/grpc+proto")
            .body(())
            .expect("static request");
        assert!(is_grpc(&by_type));
        let by_path = Request::builder()
            .uri(UNARY_PATH)
            .body(())
            .expect("static request");
        assert!(is_grpc(&by_path));
        let plain = Request::builder()
            .uri("/echo")
            .body(())
            .expect("static request");
        assert!(!is_grpc(&plain));
    }
}
