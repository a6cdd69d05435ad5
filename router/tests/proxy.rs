//! Loopback integration tests: the real router, in-process, between real clients (hyper
//! HTTP/1.1 and h2c, a tonic gRPC client, a WebSocket client, raw TCP) and two test backends,
//! `original` (the default target) and `shadow` (the developer's session), which say who
//! answered.

mod proxy {
    pub mod support;

    mod bad_input;
    mod bounds;
    mod desync;
    mod flood;
    mod fuzz;
    mod grpc;
    mod h2c;
    mod http1;
    mod isolation;
    mod live_rules;
    mod parking;
    mod sessions;
    mod smuggling;
    mod tcp;
    mod upstream_h1;
    mod websocket;
    pub mod wire;
}
