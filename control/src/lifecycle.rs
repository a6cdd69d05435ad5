//! A session's life, shared by `mesh`, `exchange` and `preview`: the setup steps they share
//! ([`steps`]) run against the undo stack ([`flow`], [`undo`]); the lock around shared edits
//! ([`lock`]); the Lease and its keeper ([`session`]); how ktx judges other sessions alive
//! ([`liveness`]); the tunnel as the orchestration uses it ([`link`]); the developer's local
//! ports ([`local`]); `exchange --mode scale`'s replicas ([`scale`]); removing what expired
//! sessions left ([`expired`]); leaving a Service ([`teardown`], also used by `clean`, `recover`
//! and the janitor); Ctrl-C ([`shutdown`]); the workload's environment for the developer's process
//! ([`workload_env`]) and `-- CMD` ([`command`]).

pub mod command;
pub mod expired;
pub mod flow;
pub mod link;
pub mod liveness;
pub mod local;
pub mod lock;
pub mod scale;
pub mod session;
pub mod shutdown;
pub mod steps;
pub mod teardown;
pub mod undo;
pub mod workload_env;
