//! The `S-ktx-routes` ConfigMap (key `routes.yaml`, a [`RoutesSpec`]) and the pure edits ktx makes
//! to the table in it: add one session's rule, remove a session's rules, drop dead sessions'.
//!
//! Each edit is applied to the ConfigMap with optimistic concurrency by the caller; here only
//! the table changes, so the same code serves setup, teardown and `ktx clean`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use ktx_names::{role, ServiceNames, ROUTES_KEY};
use ktx_rules::spec::MatchSpec;
use ktx_rules::{OnUnavailable, RouteTable, RoutesSpec, RuleSpec, RulesError, TargetSpec};

use super::{labels, meta};

/// The table of a freshly meshed Service: no rules, everything to the stuntman.
pub fn initial(names: &ServiceNames) -> RoutesSpec {
    RoutesSpec {
        default: TargetSpec {
            service: Some(names.stuntman()),
            addrs: Vec::new(),
        },
        rules: Vec::new(),
    }
}

/// The routes ConfigMap holding `spec`.
pub fn configmap(names: &ServiceNames, namespace: &str, spec: &RoutesSpec) -> ConfigMap {
    ConfigMap {
        metadata: meta(
            &names.routes(),
            namespace,
            labels(names.service(), role::ROUTES, None),
        ),
        data: Some(BTreeMap::from([(ROUTES_KEY.to_string(), spec.to_yaml())])),
        ..Default::default()
    }
}

/// The table in a routes ConfigMap. A ConfigMap without the key holds the initial table (the
/// router would wait for one; ktx writes it on the next edit).
pub fn read(names: &ServiceNames, cm: &ConfigMap) -> Result<RoutesSpec, RulesError> {
    match cm.data.as_ref().and_then(|d| d.get(ROUTES_KEY)) {
        Some(text) => RoutesSpec::parse(text),
        None => Ok(initial(names)),
    }
}

/// Replaces the table in `cm`.
pub fn write(cm: &mut ConfigMap, spec: &RoutesSpec) {
    cm.data
        .get_or_insert_with(BTreeMap::new)
        .insert(ROUTES_KEY.to_string(), spec.to_yaml());
}

/// The rule of one session: its conditions, its Lease (the router ignores the rule while the
/// Lease is stale) and its shadow Service as the target.
pub fn rule(
    names: &ServiceNames,
    session: &str,
    matches: MatchSpec,
    on_unavailable: OnUnavailable,
) -> RuleSpec {
    RuleSpec {
        session: session.to_string(),
        lease: Some(names.lease(session)),
        matches,
        target: TargetSpec {
            service: Some(names.shadow(session)),
            addrs: Vec::new(),
        },
        on_unavailable,
    }
}

/// Why a rule cannot be added.
#[derive(Debug)]
pub enum AddError {
    /// A live session already has a rule with the same conditions.
    SameAs { session: String },
    /// An earlier live rule matches every request this one would (its conditions are among
    /// this one's): first match wins, so this rule would never match.
    Covered { session: String },
    /// The resulting table is invalid for another reason.
    Invalid(RulesError),
}

/// `spec` with `new` appended (replacing any earlier rule of the same session). Rules of sessions
/// `live` rejects are dropped: they are leftovers of crashed sessions and must not block anyone.
pub fn with_rule(
    spec: &RoutesSpec,
    new: RuleSpec,
    live: impl Fn(&RuleSpec) -> bool,
) -> Result<RoutesSpec, AddError> {
    let mut out = spec.clone();
    out.rules.retain(|r| r.session != new.session && live(r));
    out.rules.push(new);
    let mine = format!("rules[{}]", out.rules.len() - 1);
    match RouteTable::compile(&out) {
        Ok(table) => match covering(&table) {
            Some(session) => Err(AddError::Covered { session }),
            None => Ok(out),
        },
        Err(RulesError::DuplicateConditions {
            field,
            other_field,
            other_session,
        }) if field == mine || other_field == mine => Err(AddError::SameAs {
            session: other_session,
        }),
        Err(e) => Err(AddError::Invalid(e)),
    }
}

/// The session of an earlier rule of `table` that matches every request its last rule would.
fn covering(table: &RouteTable) -> Option<String> {
    let (last, earlier) = table.rules().split_last()?;
    earlier
        .iter()
        .find(|r| r.matches.covers(&last.matches))
        .map(|r| r.session.to_string())
}

/// `spec` without the rules of `session`; `None` when it has none (nothing to write).
pub fn without_session(spec: &RoutesSpec, session: &str) -> Option<RoutesSpec> {
    let mut out = spec.clone();
    out.rules.retain(|r| r.session != session);
    (out.rules.len() != spec.rules.len()).then_some(out)
}

/// `spec` without the rules `live` rejects; `None` when all are kept.
pub fn without_dead(spec: &RoutesSpec, live: impl Fn(&RuleSpec) -> bool) -> Option<RoutesSpec> {
    let mut out = spec.clone();
    out.rules.retain(live);
    (out.rules.len() != spec.rules.len()).then_some(out)
}

#[cfg(test)]
mod tests {
    use ktx_rules::flags::RuleFlags;

    use super::*;

    fn mark(v: &str) -> MatchSpec {
        RuleFlags {
            version_mark: Some(v),
            ..Default::default()
        }
        .to_match_spec()
        .unwrap()
    }

    #[test]
    fn the_configmap_holds_a_table_the_router_accepts() {
        let n = ServiceNames::new("orders");
        let mut spec = initial(&n);
        spec.rules
            .push(rule(&n, "foobar", mark("foobar"), OnUnavailable::Reject));
        let cm = configmap(&n, "shop", &spec);
        assert_eq!(cm.metadata.name.as_deref(), Some("orders-ktx-routes"));
        let text = &cm.data.as_ref().unwrap()["routes.yaml"];
        let parsed = RoutesSpec::parse(text).unwrap();
        assert_eq!(parsed, spec);
        RouteTable::compile(&parsed).unwrap();
        let r = &parsed.rules[0];
        assert_eq!(r.lease.as_deref(), Some("orders-ktx-mesh-foobar"));
        assert_eq!(r.target.service.as_deref(), Some("orders-ktx-mesh-foobar"));
        assert_eq!(
            parsed.default.service.as_deref(),
            Some("orders-ktx-stuntman")
        );
        assert_eq!(read(&n, &cm).unwrap(), spec);
        assert_eq!(read(&n, &ConfigMap::default()).unwrap(), initial(&n));
    }

    #[test]
    fn adding_refuses_a_live_duplicate_and_drops_dead_ones() {
        let n = ServiceNames::new("orders");
        let a = rule(&n, "alice", mark("foobar"), OnUnavailable::Fallback);
        let spec = with_rule(&initial(&n), a, |_| true).unwrap();
        let b = rule(&n, "bob", mark("foobar"), OnUnavailable::Fallback);
        match with_rule(&spec, b.clone(), |_| true) {
            Err(AddError::SameAs { session }) => assert_eq!(session, "alice"),
            other => panic!("{other:?}"),
        }
        // Alice's session is dead: her rule goes, Bob's comes.
        let spec2 = with_rule(&spec, b, |r| r.session != "alice").unwrap();
        assert_eq!(spec2.rules.len(), 1);
        assert_eq!(spec2.rules[0].session, "bob");
        // A different mark is fine; order is arrival order.
        let c = rule(&n, "carol", mark("other"), OnUnavailable::Fallback);
        let spec3 = with_rule(&spec2, c, |_| true).unwrap();
        assert_eq!(spec3.rules[1].session, "carol");
    }

    /// A rule an earlier live rule leaves nothing to (the same header as a regex that is only
    /// a literal, or the same mark narrowed by a method) is refused: first match wins, so it
    /// would never match, and its developer's requests would reach the other laptop.
    #[test]
    fn adding_refuses_a_rule_an_earlier_live_one_covers() {
        let n = ServiceNames::new("orders");
        let a = rule(&n, "alice", mark("foobar"), OnUnavailable::Fallback);
        let spec = with_rule(&initial(&n), a, |_| true).unwrap();
        let as_regex = RuleFlags {
            header_regex: &["VERSION=foobar".to_string()],
            ..Default::default()
        }
        .to_match_spec()
        .unwrap();
        let narrower = RuleFlags {
            version_mark: Some("foobar"),
            method: Some("GET"),
            ..Default::default()
        }
        .to_match_spec()
        .unwrap();
        for m in [as_regex, narrower] {
            let b = rule(&n, "bob", m.clone(), OnUnavailable::Fallback);
            match with_rule(&spec, b, |_| true) {
                Err(AddError::SameAs { session }) | Err(AddError::Covered { session }) => {
                    assert_eq!(session, "alice", "{m:?}")
                }
                other => panic!("{m:?}: {other:?}"),
            }
        }
        // The other way round is fine: a narrower rule first leaves the broader one the rest.
        let narrow = RuleFlags {
            version_mark: Some("foobar"),
            method: Some("GET"),
            ..Default::default()
        }
        .to_match_spec()
        .unwrap();
        let first = with_rule(
            &initial(&n),
            rule(&n, "alice", narrow, OnUnavailable::Fallback),
            |_| true,
        )
        .unwrap();
        let broad = rule(&n, "bob", mark("foobar"), OnUnavailable::Fallback);
        assert_eq!(with_rule(&first, broad, |_| true).unwrap().rules.len(), 2);
    }

    #[test]
    fn removing() {
        let n = ServiceNames::new("orders");
        let spec = with_rule(
            &initial(&n),
            rule(&n, "alice", mark("a"), OnUnavailable::Fallback),
            |_| true,
        )
        .unwrap();
        assert!(without_session(&spec, "bob").is_none());
        assert!(without_session(&spec, "alice").unwrap().rules.is_empty());
        assert!(without_dead(&spec, |_| true).is_none());
        assert!(without_dead(&spec, |_| false).unwrap().rules.is_empty());
    }
}
