//! One module per command: the sessions [`mesh`], [`exchange`] and [`preview`] (built on
//! [`crate::lifecycle`]), the one-shot [`clean`], [`recover`] and [`status`], [`forward`], and the in-cluster
//! [`janitor`].

pub mod clean;
pub mod exchange;
pub mod forward;
pub mod janitor;
pub mod mesh;
pub mod preview;
pub mod recover;
pub mod status;
