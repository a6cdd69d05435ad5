//! Serving a connection once the listener has sniffed its protocol.

pub mod http1;
pub mod splice;
