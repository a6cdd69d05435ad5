//! WebSocket at `/ws`: HTTP/1.1 Upgrade, first message from the server is the backend's name,
//! then every text or binary message is echoed back.
//!
//! [`WsClient`] is the matching client for tests (optionally through a router, with extra
//! request headers such as the `version` mark).

mod client;
pub(crate) mod server;

pub use client::{connect, WsClient, WsError};
