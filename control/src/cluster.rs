//! Cluster access: the API client and the operations ktx needs ([`api`]), the cluster's clock
//! ([`clock`]), how ktx reaches pods through the API server ([`port_forward`] carries the
//! tunnel to a shadow pod; [`router_admin`] reads the router pods' admin endpoints), and the
//! table of every API call ktx makes, which the Roles are checked against ([`permissions`]).

pub mod api;
pub mod clock;
pub mod permissions;
pub mod port_forward;
pub mod router_admin;
