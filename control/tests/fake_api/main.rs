//! The control plane below the cluster: ktx's commands run, unchanged, against an in-memory
//! API server ([`server::Fake`]) — ownership checks, rollback of every setup step, undo order,
//! restore before delete, last one out. Seconds, on every `cargo test`.

mod dialer;
mod server;
mod support;

mod branches;
mod credentials;
mod forward;
mod ownership;
mod rollback;
mod teardown;
mod workload_env;
