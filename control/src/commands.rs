//! One module per command: the sessions [`mesh`], [`exchange`] and [`preview`] (built on
//! [`crate::lifecycle`]), the one-shot [`clean`], [`recover`] and [`status`], [`forward`] and [`connect`] (this machine into the cluster), and the in-cluster
//! [`janitor`].

pub mod clean;
pub mod connect;
pub mod exchange;
pub mod forward;
pub mod janitor;
pub mod mesh;
pub mod preview;
pub mod recover;
pub mod status;
