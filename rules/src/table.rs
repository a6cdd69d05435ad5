//! The compiled route table and the per-request decision.
//!
//! Matching must stay cheap with thousands of rules (one per developer and mark). Every rule
//! with an `exact` header condition is indexed under its first such condition, by header name
//! and value; a request then only tests the rules its own header values point at, plus the few
//! rules without an exact condition, in rule order. First match wins, exactly as a linear scan.

use std::collections::HashMap;
use std::net::SocketAddr;

use http::{HeaderMap, HeaderName, Method};

use crate::matcher::{HeaderValueMatch, Match};
use crate::spec::{OnUnavailable, RoutesSpec, TargetSpec};
use crate::{Budget, RulesError};

/// Where a request goes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    /// A Service in the router's namespace; its ready endpoints are watched.
    Service(String),
    /// Fixed addresses (outside a cluster: tests, benchmarks).
    Static(Vec<SocketAddr>),
}

/// A checked rule.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Shared, so the router can label metrics without allocating per request.
    pub session: std::sync::Arc<str>,
    pub lease: Option<String>,
    pub matches: Match,
    pub target: Target,
    pub on_unavailable: OnUnavailable,
}

/// Header value → the rules indexed under it (ascending), each with whether the indexed
/// condition is its only one (then finding it here is the whole match).
///
/// foldhash rather than SipHash: the keys are the table's own values, which a request cannot
/// add to (it only looks its value up), and a short value hashes in a fraction of SipHash's
/// time, on every request's path.
type ByValue = HashMap<Vec<u8>, Vec<(usize, bool)>, foldhash::fast::RandomState>;

/// A checked, indexed route table. Cheap to share behind an `Arc`; never mutated.
#[derive(Debug, Clone)]
pub struct RouteTable {
    rules: Vec<Rule>,
    default: Target,
    /// header name → value → indices of rules indexed under that exact condition (ascending).
    exact_index: Vec<(HeaderName, ByValue)>,
    /// Rules with no exact header condition: always tested (ascending).
    unindexed: Vec<usize>,
}

impl Target {
    fn compile(spec: &TargetSpec, field: &str) -> Result<Self, RulesError> {
        match (&spec.service, spec.addrs.is_empty()) {
            (Some(s), true) => {
                if s.is_empty() || s.len() > 63 {
                    return Err(RulesError::field(
                        format!("{field}.service"),
                        "must be a Service name (1 to 63 characters)",
                    ));
                }
                Ok(Target::Service(s.clone()))
            }
            (None, false) => {
                let mut addrs = Vec::with_capacity(spec.addrs.len());
                for (i, a) in spec.addrs.iter().enumerate() {
                    addrs.push(a.parse().map_err(|_| {
                        RulesError::field(
                            format!("{field}.addrs[{i}]"),
                            format!("{a:?} is not an IP:port address"),
                        )
                    })?);
                }
                Ok(Target::Static(addrs))
            }
            _ => Err(RulesError::field(
                field,
                "give exactly one of `service: NAME` or `addrs: [IP:PORT, ...]`",
            )),
        }
    }
}

impl RouteTable {
    /// Checks and indexes a route table within the default [`Budget`]. Refuses two rules with
    /// the same conditions.
    pub fn compile(spec: &RoutesSpec) -> Result<Self, RulesError> {
        Self::compile_within(spec, &Budget::default())
    }

    /// [`RouteTable::compile`] within `budget` (rule count, regex count and size). Regexes
    /// compile on the calling thread: async callers run this on a blocking thread.
    pub fn compile_within(spec: &RoutesSpec, budget: &Budget) -> Result<Self, RulesError> {
        budget.check_rules(spec.rules.len())?;
        let default = Target::compile(&spec.default, "default")?;
        let mut regexes = 0usize;
        let mut rules = Vec::with_capacity(spec.rules.len());
        let mut seen: HashMap<String, usize> = HashMap::with_capacity(spec.rules.len());
        for (i, r) in spec.rules.iter().enumerate() {
            let field = format!("rules[{i}]");
            if r.session.is_empty() {
                return Err(RulesError::field(
                    format!("{field}.session"),
                    "must not be empty",
                ));
            }
            let match_field = format!("{field}.match");
            regexes += r
                .matches
                .headers
                .iter()
                .filter(|h| h.regex.is_some())
                .count();
            if regexes > budget.max_regexes {
                return Err(RulesError::TooManyRegexes {
                    field: match_field,
                    max: budget.max_regexes,
                });
            }
            let matches = Match::compile(&r.matches, &match_field, budget)?;
            if let Some(&other) = seen.get(&matches.canonical_key()) {
                return Err(RulesError::DuplicateConditions {
                    field,
                    other_field: format!("rules[{other}]"),
                    other_session: spec.rules[other].session.clone(),
                });
            }
            seen.insert(matches.canonical_key(), i);
            let target = Target::compile(&r.target, &format!("{field}.target"))?;
            rules.push(Rule {
                session: std::sync::Arc::from(r.session.as_str()),
                lease: r.lease.clone(),
                matches,
                target,
                on_unavailable: r.on_unavailable,
            });
        }
        Ok(Self::index(rules, default))
    }

    fn index(rules: Vec<Rule>, default: Target) -> Self {
        let mut exact_index: Vec<(HeaderName, ByValue)> = Vec::new();
        let mut unindexed = Vec::new();
        for (i, rule) in rules.iter().enumerate() {
            let first_exact = rule.matches.headers.iter().find_map(|c| match &c.value {
                HeaderValueMatch::Exact(v) => Some((&c.name, v)),
                _ => None,
            });
            match first_exact {
                Some((name, value)) => {
                    let pos = match exact_index.iter().position(|(n, _)| n == name) {
                        Some(p) => p,
                        None => {
                            exact_index.push((name.clone(), ByValue::default()));
                            exact_index.len() - 1
                        }
                    };
                    let m = &rule.matches;
                    let alone = m.headers.len() == 1
                        && m.baggage.is_empty()
                        && m.path_prefix.is_none()
                        && m.method.is_none();
                    exact_index[pos]
                        .1
                        .entry(value.clone())
                        .or_default()
                        .push((i, alone));
                }
                None => unindexed.push(i),
            }
        }
        RouteTable {
            rules,
            default,
            exact_index,
            unindexed,
        }
    }

    /// The same table with only the rules `keep` accepts (e.g. those whose Lease is fresh).
    pub fn retain_rules(&self, keep: impl Fn(&Rule) -> bool) -> Self {
        let rules: Vec<Rule> = self.rules.iter().filter(|r| keep(r)).cloned().collect();
        if rules.len() == self.rules.len() {
            return self.clone();
        }
        Self::index(rules, self.default.clone())
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    pub fn default_target(&self) -> &Target {
        &self.default
    }

    /// The first rule whose conditions all hold, or `None` for the default target.
    pub fn route(&self, method: &Method, path: &str, headers: &HeaderMap) -> Option<&Rule> {
        let holds = |i: usize| self.rules[i].matches.holds(method, path, headers);
        let mut best: Option<usize> = None;
        for (name, by_value) in &self.exact_index {
            for value in headers.get_all(name) {
                let Some(candidates) = by_value.get(value.as_bytes()) else {
                    continue;
                };
                // Ascending, so the first that holds is the best of this list.
                if let Some((i, _)) = candidates
                    .iter()
                    .copied()
                    .take_while(|&(i, _)| best.is_none_or(|b| i < b))
                    .find(|&(i, alone)| alone || holds(i))
                {
                    best = Some(i);
                }
            }
        }
        if let Some(i) = self
            .unindexed
            .iter()
            .copied()
            .take_while(|&i| best.is_none_or(|b| i < b))
            .find(|&i| holds(i))
        {
            best = Some(i);
        }
        best.map(|i| &self.rules[i])
    }

    /// Targets named anywhere in the table (default first), for endpoint watching.
    pub fn targets(&self) -> Vec<&Target> {
        let mut out = vec![&self.default];
        for r in &self.rules {
            if !out.contains(&&r.target) {
                out.push(&r.target);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests;
