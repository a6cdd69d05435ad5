//! Route rules, pure: no I/O, no async, no Kubernetes.
//!
//! A route table is read once from its wire form ([`spec`], the routes ConfigMap's YAML/JSON, or
//! CLI flags via [`flags`]) and compiled into a checked [`RouteTable`]. The router's hot path only
//! calls [`RouteTable::route`], which never fails and never allocates for the common rules.
//!
//! Semantics: rules are ordered and the first whose conditions ALL hold wins; when none holds the
//! table's default target (the stuntman, i.e. the original workload) is used. Header names are
//! case-insensitive and any value of a repeated header may match.

pub mod applied;
pub mod baggage;
pub mod budget;
pub mod error;
pub mod flags;
pub mod matcher;
pub mod spec;
pub mod table;

pub use budget::Budget;
pub use error::RulesError;
pub use matcher::{HeaderCondition, HeaderValueMatch, Match};
pub use spec::{OnUnavailable, RoutesSpec, RuleSpec, TargetSpec};
pub use table::{RouteTable, Rule, Target};
