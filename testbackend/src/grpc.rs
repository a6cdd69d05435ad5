//! The gRPC test service `ktx.test.Echo`, spoken over h2c on the backend's one port.
//!
//! ```proto
//! syntax = "proto3";
//! package ktx.test;
//! message EchoRequest { string message = 1; }
//! message EchoReply   { string message = 1; string backend = 2; }
//! service Echo {
//!   rpc Unary(EchoRequest) returns (EchoReply);
//!   rpc ServerStream(EchoRequest) returns (stream EchoReply);
//!   rpc ClientStream(stream EchoRequest) returns (EchoReply);
//!   rpc BidiStream(stream EchoRequest) returns (stream EchoReply);
//! }
//! ```
//! The messages are derived by hand (no `protoc`). Behaviour:
//! - `Unary` echoes `message`; `BidiStream` echoes each message as it arrives.
//! - `ServerStream` answers [`SERVER_STREAM_REPLIES`] replies, `"{message}/1"`, `"{message}/2"`, ….
//! - `ClientStream` answers one reply: all messages joined with `,`.
//! - A message `"status:N"` makes the call fail with gRPC status code `N` (message
//!   [`FAILURE_MESSAGE`]). Streaming methods first send what they have, so the status arrives in
//!   real trailers after data; `Unary` answers trailers-only, as every gRPC server does.
//!
//! [`EchoClient`] calls all four methods over h2c through any address (the backend, or a router
//! in front of it).

mod client;
pub(crate) mod server;

pub use client::{ConnectError, EchoClient};

/// The fully qualified service name.
pub const SERVICE: &str = "ktx.test.Echo";
/// Path of `Unary`.
pub const UNARY_PATH: &str = "/ktx.test.Echo/Unary";
/// Path of `ServerStream`.
pub const SERVER_STREAM_PATH: &str = "/ktx.test.Echo/ServerStream";
/// Path of `ClientStream`.
pub const CLIENT_STREAM_PATH: &str = "/ktx.test.Echo/ClientStream";
/// Path of `BidiStream`.
pub const BIDI_STREAM_PATH: &str = "/ktx.test.Echo/BidiStream";

/// How many replies `ServerStream` sends.
pub const SERVER_STREAM_REPLIES: usize = 3;

/// The `grpc-message` of a failure asked for with `"status:N"`.
pub const FAILURE_MESSAGE: &str = "failure requested by the client";

/// `ktx.test.EchoRequest`.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct EchoRequest {
    #[prost(string, tag = "1")]
    pub message: String,
}

/// `ktx.test.EchoReply`.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct EchoReply {
    #[prost(string, tag = "1")]
    pub message: String,
    /// Name of the backend that answered.
    #[prost(string, tag = "2")]
    pub backend: String,
}

impl EchoRequest {
    pub fn new(message: impl Into<String>) -> Self {
        EchoRequest {
            message: message.into(),
        }
    }
}

/// The whole request frame of a `Unary` call with `message`: 5-byte gRPC prefix (uncompressed,
/// big-endian length) and the encoded [`EchoRequest`]. Benchmarks feed it to `h2load -d`.
pub fn unary_frame(message: &str) -> Vec<u8> {
    use prost::Message as _;
    let encoded = EchoRequest::new(message).encode_to_vec();
    let len = u32::try_from(encoded.len()).unwrap_or(u32::MAX);
    let mut frame = Vec::with_capacity(5 + encoded.len());
    frame.push(0);
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(&encoded);
    frame
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unary_frame_is_prefix_and_message() {
        // field 1, wire type 2, length 2, "hi"
        assert_eq!(unary_frame("hi"), [0, 0, 0, 0, 4, 0x0a, 2, b'h', b'i']);
    }
}
