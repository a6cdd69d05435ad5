//! Cluster access beside the API client: how ktx reaches pods through the API server.
//! [`port_forward`] carries the tunnel to a shadow pod.

pub mod port_forward;
