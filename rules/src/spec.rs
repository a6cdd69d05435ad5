//! The wire form of a route table: what the routes ConfigMap (key `routes.yaml`) and the router's
//! `--routes-file` hold, in YAML or JSON. These types are only parsed and written; matching uses
//! the checked types of [`crate::table`].
//!
//! ```yaml
//! default: { service: orders-ktx-stuntman }
//! rules:
//!   - session: foobar
//!     lease: orders-ktx-mesh-foobar
//!     match:
//!       headers: [{ name: VERSION, exact: foobar }]
//!     target: { service: orders-ktx-mesh-foobar }
//!     onUnavailable: fallback
//! ```

use serde::{Deserialize, Serialize};

use crate::{Budget, RulesError};

/// A whole route table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RoutesSpec {
    /// Where requests that match no rule go (the stuntman: the original workload).
    pub default: TargetSpec,
    #[serde(default)]
    pub rules: Vec<RuleSpec>,
}

/// One rule: conditions, the session that owns it, and where matching requests go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RuleSpec {
    /// The session (developer) this rule belongs to; named in errors and metrics.
    pub session: String,
    /// Name of the session's Lease; while it is expired the router ignores the rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<String>,
    #[serde(rename = "match")]
    pub matches: MatchSpec,
    pub target: TargetSpec,
    #[serde(default)]
    pub on_unavailable: OnUnavailable,
}

/// Conditions of a rule; all must hold. An empty match is refused (it would take all traffic).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MatchSpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<HeaderSpec>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub baggage: Vec<BaggageSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
}

/// A header condition: exactly one of `exact`, `prefix`, `regex` (anchored), `present: true`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderSpec {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub present: Option<bool>,
}

/// A W3C `baggage` member condition: the member `key` has value `value`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BaggageSpec {
    pub key: String,
    pub value: String,
}

/// A target: a Service whose ready endpoints are watched (in a cluster), or fixed addresses.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TargetSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addrs: Vec<String>,
}

/// What happens to a matching request while the rule's target has no ready endpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum OnUnavailable {
    /// Send it to the default target (the original workload), as if the rule did not exist.
    #[default]
    Fallback,
    /// Answer 503 with a body naming the session that is down.
    Reject,
}

impl std::str::FromStr for OnUnavailable {
    type Err = RulesError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "fallback" => Ok(OnUnavailable::Fallback),
            "reject" => Ok(OnUnavailable::Reject),
            _ => Err(RulesError::InvalidFlag {
                flag: "--on-unavailable",
                value: s.to_string(),
                reason: "expected 'fallback' or 'reject'".to_string(),
            }),
        }
    }
}

impl RoutesSpec {
    /// Parses YAML (JSON is YAML too, but is tried first for its clearer errors), within the
    /// default [`Budget`].
    pub fn parse(text: &str) -> Result<Self, RulesError> {
        Self::parse_within(text, &Budget::default())
    }

    /// Parses within `budget`: the text's size and YAML aliases are checked before parsing,
    /// the number of rules right after.
    pub fn parse_within(text: &str, budget: &Budget) -> Result<Self, RulesError> {
        budget.check_text(text)?;
        let trimmed = text.trim_start();
        let spec: Self = if trimmed.starts_with('{') {
            serde_json::from_str(text).map_err(|e| RulesError::Parse(e.to_string()))?
        } else {
            serde_yaml::from_str(text).map_err(|e| RulesError::Parse(e.to_string()))?
        };
        budget.check_rules(spec.rules.len())?;
        Ok(spec)
    }

    /// The YAML form, as stored in the routes ConfigMap.
    pub fn to_yaml(&self) -> String {
        serde_yaml::to_string(self).expect("a RoutesSpec has only string keys, so it serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_yaml_and_json_alike() {
        let yaml = r#"
default: { service: orders-ktx-stuntman }
rules:
  - session: foobar
    match: { headers: [{ name: VERSION, exact: foobar }] }
    target: { service: orders-ktx-mesh-foobar }
    onUnavailable: reject
"#;
        let json = r#"{"default":{"service":"orders-ktx-stuntman"},"rules":[{"session":"foobar",
            "match":{"headers":[{"name":"VERSION","exact":"foobar"}]},
            "target":{"service":"orders-ktx-mesh-foobar"},"onUnavailable":"reject"}]}"#;
        let a = RoutesSpec::parse(yaml).unwrap();
        let b = RoutesSpec::parse(json).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.rules[0].on_unavailable, OnUnavailable::Reject);
        assert_eq!(RoutesSpec::parse(&a.to_yaml()).unwrap(), a);
    }

    #[test]
    fn unknown_field_is_named() {
        let err = RoutesSpec::parse(
            "default: {service: s}\nrules:\n  - session: a\n    match: {hedaers: []}\n    target: {service: t}\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("hedaers"), "{err}");
    }
}
