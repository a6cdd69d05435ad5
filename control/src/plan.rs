//! Pure planning: from the command line and the objects read from the cluster to what a session
//! will do, with no API calls — the target ([`target`]), the ports ([`expose`], [`ports`]), the
//! rule ([`rule`]), the Service's selector taken over and given back ([`takeover`]), and the
//! proof that an object is ktx's ([`ownership`]), the workload's environment for the developer's
//! process ([`workload_env`]).

pub mod expose;
pub mod ownership;
pub mod ports;
pub mod rule;
pub mod takeover;
pub mod target;
pub mod workload_env;
