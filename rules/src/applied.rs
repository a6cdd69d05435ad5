//! What a router has applied, as its admin port serves it on `GET /routes` (JSON) and ktx reads
//! it to know that a session's rule is in use — the one wire type both sides compile against,
//! so neither parses the other's Prometheus text.

use serde::{Deserialize, Serialize};

use crate::RouteTable;

/// The admin path that serves [`AppliedTable`].
pub const ROUTES_PATH: &str = "/routes";

/// The route table a router uses now.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppliedTable {
    /// Bumped on every change of the table in use (a new text, a session's Lease expiring or
    /// coming back); 0 before the first table.
    pub generation: u64,
    /// Route-table updates refused since the router started (it kept the last good table).
    pub rejected: u64,
    /// The rules in use, in order; rules of sessions whose Lease has expired are left out.
    pub rules: Vec<AppliedRule>,
}

/// One rule in use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppliedRule {
    /// The session the rule belongs to.
    pub session: String,
    /// The session's Lease, if the rule names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<String>,
}

impl AppliedTable {
    /// `table` as a router in `generation` with `rejected` refused updates reports it.
    pub fn of(table: &RouteTable, generation: u64, rejected: u64) -> AppliedTable {
        AppliedTable {
            generation,
            rejected,
            rules: table
                .rules()
                .iter()
                .map(|r| AppliedRule {
                    session: r.session.to_string(),
                    lease: r.lease.clone(),
                })
                .collect(),
        }
    }

    /// Whether a rule of `session` is in use.
    pub fn has_session(&self, session: &str) -> bool {
        self.rules.iter().any(|r| r.session == session)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RoutesSpec;

    const TABLE: &str = r#"
default: { service: orders-ktx-stuntman }
rules:
  - session: alice
    lease: orders-ktx-mesh-alice
    match: { headers: [ { name: VERSION, exact: alice } ] }
    target: { service: orders-ktx-mesh-alice }
"#;

    #[test]
    fn a_table_reports_its_rules_and_round_trips_as_json() {
        let table = RouteTable::compile(&RoutesSpec::parse(TABLE).unwrap()).unwrap();
        let applied = AppliedTable::of(&table, 4, 1);
        assert!(applied.has_session("alice"));
        assert!(!applied.has_session("bob"));
        let json = serde_json::to_string(&applied).unwrap();
        assert_eq!(
            json,
            r#"{"generation":4,"rejected":1,"rules":[{"session":"alice","lease":"orders-ktx-mesh-alice"}]}"#
        );
        assert_eq!(
            serde_json::from_str::<AppliedTable>(&json).unwrap(),
            applied
        );
    }
}
