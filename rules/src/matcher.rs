//! Checked conditions of one rule, and how each is tested against a request.
//!
//! Built only from [`crate::spec::MatchSpec`] through [`Match::compile`]; the request side is an
//! [`http::HeaderMap`], a method and a path, so the router needs no conversion on its hot path.

use http::{HeaderMap, HeaderName, Method};
use regex::bytes::{Regex, RegexBuilder};

use crate::baggage;
use crate::spec::MatchSpec;
use crate::{Budget, RulesError};

/// How a header's value is tested.
#[derive(Debug, Clone)]
pub enum HeaderValueMatch {
    Exact(Vec<u8>),
    Prefix(Vec<u8>),
    /// Anchored at both ends: `abc` matches only `abc`, not `xabcx`.
    Regex(Regex),
    Present,
}

/// One header condition: holds when ANY value of the (case-insensitive) header passes.
#[derive(Debug, Clone)]
pub struct HeaderCondition {
    pub name: HeaderName,
    pub value: HeaderValueMatch,
}

/// All conditions of a rule.
#[derive(Debug, Clone, Default)]
pub struct Match {
    pub headers: Vec<HeaderCondition>,
    pub baggage: Vec<(String, String)>,
    pub path_prefix: Option<String>,
    pub method: Option<Method>,
}

impl HeaderCondition {
    pub fn holds(&self, headers: &HeaderMap) -> bool {
        let mut values = headers.get_all(&self.name).iter();
        match &self.value {
            HeaderValueMatch::Exact(v) => values.any(|h| h.as_bytes() == v.as_slice()),
            HeaderValueMatch::Prefix(p) => values.any(|h| h.as_bytes().starts_with(p)),
            HeaderValueMatch::Regex(re) => values.any(|h| re.is_match(h.as_bytes())),
            HeaderValueMatch::Present => values.next().is_some(),
        }
    }
}

/// `re` anchored at both ends, compiled within `budget`. The pattern is first compiled on its
/// own: only a pattern that stands alone (balanced groups) is wrapped as `^(?:re)$`, so a
/// pattern like `x)|(.*` cannot close the wrapper early and escape the anchors.
fn anchored_regex(re: &str, field: &str, budget: &Budget) -> Result<Regex, RulesError> {
    let build = |pattern: &str| {
        RegexBuilder::new(pattern)
            .size_limit(budget.regex_size)
            .dfa_size_limit(budget.regex_dfa_size)
            .build()
            .map_err(|e| match e {
                regex::Error::CompiledTooBig(_) => RulesError::RegexTooLarge {
                    field: field.to_string(),
                    max: budget.regex_size,
                },
                e => RulesError::field(field, format!("invalid regex: {e}")),
            })
    };
    build(re)?;
    build(&format!("^(?:{re})$"))
}

impl Match {
    /// Checks a wire-form match. `field` is the path used in errors, e.g. `rules[2].match`.
    pub fn compile(spec: &MatchSpec, field: &str, budget: &Budget) -> Result<Self, RulesError> {
        if spec.headers.is_empty()
            && spec.baggage.is_empty()
            && spec.path_prefix.is_none()
            && spec.method.is_none()
        {
            return Err(RulesError::field(
                field,
                "a rule needs at least one condition (headers, baggage, pathPrefix or method); \
                 an empty match would take every request",
            ));
        }
        let mut headers = Vec::with_capacity(spec.headers.len());
        for (i, h) in spec.headers.iter().enumerate() {
            let f = format!("{field}.headers[{i}]");
            let name = HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| {
                RulesError::field(
                    format!("{f}.name"),
                    format!("{:?} is not a valid header name", h.name),
                )
            })?;
            let kinds = [
                h.exact.is_some(),
                h.prefix.is_some(),
                h.regex.is_some(),
                h.present.is_some(),
            ];
            if kinds.iter().filter(|k| **k).count() != 1 {
                return Err(RulesError::field(
                    f,
                    "give exactly one of exact, prefix, regex or present: true",
                ));
            }
            let value = if let Some(v) = &h.exact {
                HeaderValueMatch::Exact(v.as_bytes().to_vec())
            } else if let Some(p) = &h.prefix {
                HeaderValueMatch::Prefix(p.as_bytes().to_vec())
            } else if let Some(re) = &h.regex {
                HeaderValueMatch::Regex(anchored_regex(re, &format!("{f}.regex"), budget)?)
            } else if h.present == Some(true) {
                HeaderValueMatch::Present
            } else {
                return Err(RulesError::field(
                    format!("{f}.present"),
                    "only `present: true` is meaningful; to require absence, say so with another rule order",
                ));
            };
            headers.push(HeaderCondition { name, value });
        }
        let mut bag = Vec::with_capacity(spec.baggage.len());
        for (i, b) in spec.baggage.iter().enumerate() {
            if !baggage::is_token(&b.key) {
                return Err(RulesError::field(
                    format!("{field}.baggage[{i}].key"),
                    format!("{:?} is not a valid baggage key (an HTTP token)", b.key),
                ));
            }
            bag.push((b.key.clone(), b.value.clone()));
        }
        if let Some(p) = &spec.path_prefix {
            if !p.starts_with('/') {
                return Err(RulesError::field(
                    format!("{field}.pathPrefix"),
                    format!("{p:?} must start with '/'"),
                ));
            }
        }
        let method = match &spec.method {
            None => None,
            Some(m) => Some(
                Method::from_bytes(m.to_ascii_uppercase().as_bytes()).map_err(|_| {
                    RulesError::field(
                        format!("{field}.method"),
                        format!("{m:?} is not an HTTP method"),
                    )
                })?,
            ),
        };
        Ok(Match {
            headers,
            baggage: bag,
            path_prefix: spec.path_prefix.clone(),
            method,
        })
    }

    /// True when every condition holds.
    pub fn holds(&self, method: &Method, path: &str, headers: &HeaderMap) -> bool {
        if let Some(m) = &self.method {
            if m != method {
                return false;
            }
        }
        if let Some(p) = &self.path_prefix {
            if !path.starts_with(p.as_str()) {
                return false;
            }
        }
        if !self.headers.iter().all(|c| c.holds(headers)) {
            return false;
        }
        self.baggage
            .iter()
            .all(|(k, v)| baggage::has_member(headers, k, v))
    }

    /// A canonical text of the conditions; two rules with equal keys match the same requests.
    pub(crate) fn canonical_key(&self) -> String {
        self.canonical_parts().join("\n")
    }

    /// True when every request `other` matches, this matches too (its conditions are among
    /// `other`'s): placed first, this rule leaves `other` nothing.
    pub fn covers(&self, other: &Match) -> bool {
        let theirs = other.canonical_parts();
        self.canonical_parts()
            .iter()
            .all(|p| theirs.binary_search(p).is_ok())
    }

    /// Each condition as a canonical text, sorted: a regex that is only a literal (`foobar`)
    /// is the exact match it amounts to.
    fn canonical_parts(&self) -> Vec<String> {
        let mut parts: Vec<String> = self
            .headers
            .iter()
            .map(|h| {
                let v = match &h.value {
                    HeaderValueMatch::Exact(v) => format!("exact={}", String::from_utf8_lossy(v)),
                    HeaderValueMatch::Prefix(v) => format!("prefix={}", String::from_utf8_lossy(v)),
                    HeaderValueMatch::Regex(r) => match literal(r.as_str()) {
                        Some(l) => format!("exact={l}"),
                        None => format!("regex={}", r.as_str()),
                    },
                    HeaderValueMatch::Present => "present".to_string(),
                };
                format!("h:{}:{v}", h.name)
            })
            .collect();
        parts.extend(self.baggage.iter().map(|(k, v)| format!("b:{k}={v}")));
        if let Some(p) = &self.path_prefix {
            parts.push(format!("p:{p}"));
        }
        if let Some(m) = &self.method {
            parts.push(format!("m:{m}"));
        }
        parts.sort();
        parts.dedup();
        parts
    }
}

/// The text an anchored regex (`^(?:re)$`) matches, when `re` is only a literal.
fn literal(anchored: &str) -> Option<&str> {
    let inner = anchored.strip_prefix("^(?:")?.strip_suffix(")$")?;
    (!inner.is_empty() && regex::escape(inner) == inner).then_some(inner)
}
