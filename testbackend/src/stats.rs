//! Counters of what one backend instance served, for tests that assert who answered.
//!
//! Plain atomics read with `Relaxed`: tests read them after the response arrived, and the
//! counter is bumped before the response is sent.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

/// What a backend has served so far. Shared by every connection of one [`crate::Backend`].
#[derive(Debug, Default)]
pub struct Stats {
    connections: AtomicU64,
    requests: AtomicU64,
    grpc_calls: AtomicU64,
    websockets: AtomicU64,
}

/// The counters at one moment; what `GET /_ktx/stats` answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsSnapshot {
    pub connections: u64,
    pub requests: u64,
    pub grpc_calls: u64,
    pub websockets: u64,
}

impl Stats {
    /// Every counter, read one after the other (not atomically as a whole).
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            connections: self.connections(),
            requests: self.requests(),
            grpc_calls: self.grpc_calls(),
            websockets: self.websockets(),
        }
    }

    /// Connections accepted.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }

    /// HTTP requests (HTTP/1.1 or HTTP/2 streams) received, gRPC calls and WebSocket
    /// handshakes included.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// gRPC calls received (any method, known or not).
    pub fn grpc_calls(&self) -> u64 {
        self.grpc_calls.load(Ordering::Relaxed)
    }

    /// WebSocket handshakes accepted.
    pub fn websockets(&self) -> u64 {
        self.websockets.load(Ordering::Relaxed)
    }

    pub(crate) fn connection(&self) {
        self.connections.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn request(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn grpc_call(&self) {
        self.grpc_calls.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn websocket(&self) {
        self.websockets.fetch_add(1, Ordering::Relaxed);
    }
}
