//! A backend for router tests, benchmarks and the e2e cluster.
//!
//! One port speaks HTTP/1.1 and h2c (and gRPC over h2c, and WebSocket over HTTP/1.1 Upgrade);
//! every response carries `x-ktx-backend: NAME` so a test can tell which instance answered.
//!
//! | request | answer |
//! |---|---|
//! | `GET /` and any unknown path | `200`, body `NAME\n` |
//! | `GET /hello` | `200`, body `hello\n` (cheap: for benchmarks) |
//! | `GET /headers` | the request line and headers as received, JSON ([`HeadersEcho`]) |
//! | `POST /echo` | the request body, streamed back |
//! | `POST /sink` | reads the body, answers its length in bytes (`N\n`) |
//! | `GET /bytes?n=N` | `N` bytes, streamed |
//! | `GET /slow?ms=N` | waits `N` ms, then answers like `/` |
//! | `GET /status?code=N` | status `N`, body `NAME\n` |
//! | `GET /ws` (Upgrade) | WebSocket: first message `NAME`, then echoes every message |
//! | `POST /ktx.test.Echo/*` | gRPC service [`grpc`] |
//! | `GET /_ktx/stats` | this listener's counters, JSON ([`StatsSnapshot`]); counts itself |
//!
//! `--tcp-listen` adds raw TCP ports ([`spawn_tcp`]): a banner with the name, then an echo. The
//! `client` subcommand ([`client`]) calls any of these and says which backend answered.
//!
//! In-process use: [`spawn`] binds (port 0 allowed) and returns a [`Backend`] handle that knows its
//! address, counts what it served and stops the server when dropped. The binary (`main.rs`) only
//! parses [`Config`] and calls [`run`].
//!
//! This crate does not route, retry or proxy anything: it is the far end of every test.

mod body;
pub mod client;
mod config;
pub mod fds;
pub mod grpc;
mod headers;
mod http;
mod server;
mod stats;
mod tcp;
pub mod ws;

pub use config::{run, Command, Config};
pub use headers::HeadersEcho;
pub use server::{serve, spawn, Backend};
pub use stats::{Stats, StatsSnapshot};
pub use tcp::{spawn_tcp, TcpBackend};

/// The response header naming the instance that answered.
pub const BACKEND_HEADER: &str = "x-ktx-backend";
