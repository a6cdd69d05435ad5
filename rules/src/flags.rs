//! CLI flags that build a rule's conditions: `--versionMark [KEY:]VALUE` (kt-connect's), and the
//! richer `--header NAME=VALUE`, `--header-regex NAME=RE`, `--header-present NAME`,
//! `--baggage KEY=VALUE`, `--path-prefix P`, `--method M`, all ANDed.

use crate::spec::{BaggageSpec, HeaderSpec, MatchSpec};
use crate::{Match, RulesError};

/// Header used by `--versionMark VALUE` when no key is given.
pub const DEFAULT_MARK_HEADER: &str = "VERSION";

/// The conditions a developer asked for on the command line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuleFlags<'a> {
    pub version_mark: Option<&'a str>,
    pub header: &'a [String],
    pub header_regex: &'a [String],
    pub header_present: &'a [String],
    pub baggage: &'a [String],
    pub path_prefix: Option<&'a str>,
    pub method: Option<&'a str>,
}

/// Splits `--versionMark [KEY:]VALUE`; the key defaults to `VERSION`.
pub fn parse_version_mark(s: &str) -> Result<(String, String), RulesError> {
    let (k, v) = match s.split_once(':') {
        Some((k, v)) => (k, v),
        None => (DEFAULT_MARK_HEADER, s),
    };
    let err = |reason: &str| RulesError::InvalidFlag {
        flag: "--versionMark",
        value: s.to_string(),
        reason: reason.to_string(),
    };
    if k.is_empty() || http::HeaderName::from_bytes(k.as_bytes()).is_err() {
        return Err(err(
            "the key before ':' must be a header name, e.g. VERSION:foobar",
        ));
    }
    if v.is_empty() || http::HeaderValue::from_str(v).is_err() || v.trim() != v {
        return Err(err(
            "the value must be non-empty visible text without surrounding spaces",
        ));
    }
    Ok((k.to_string(), v.to_string()))
}

fn split_pair<'s>(flag: &'static str, s: &'s str) -> Result<(&'s str, &'s str), RulesError> {
    s.split_once('=').ok_or_else(|| RulesError::InvalidFlag {
        flag,
        value: s.to_string(),
        reason: "expected NAME=VALUE".to_string(),
    })
}

impl RuleFlags<'_> {
    /// The wire-form match for these flags, checked (the same checks as a ConfigMap rule).
    pub fn to_match_spec(&self) -> Result<MatchSpec, RulesError> {
        let mut m = MatchSpec::default();
        if let Some(mark) = self.version_mark {
            let (k, v) = parse_version_mark(mark)?;
            m.headers.push(HeaderSpec {
                name: k,
                exact: Some(v),
                ..Default::default()
            });
        }
        for s in self.header {
            let (k, v) = split_pair("--header", s)?;
            m.headers.push(HeaderSpec {
                name: k.into(),
                exact: Some(v.into()),
                ..Default::default()
            });
        }
        for s in self.header_regex {
            let (k, v) = split_pair("--header-regex", s)?;
            m.headers.push(HeaderSpec {
                name: k.into(),
                regex: Some(v.into()),
                ..Default::default()
            });
        }
        for s in self.header_present {
            m.headers.push(HeaderSpec {
                name: s.clone(),
                present: Some(true),
                ..Default::default()
            });
        }
        for s in self.baggage {
            let (k, v) = split_pair("--baggage", s)?;
            m.baggage.push(BaggageSpec {
                key: k.into(),
                value: v.into(),
            });
        }
        m.path_prefix = self.path_prefix.map(str::to_string);
        m.method = self.method.map(str::to_string);
        Match::compile(&m, "flags", &crate::Budget::default()).map_err(|e| {
            RulesError::InvalidFlag {
                flag: "rule flags",
                value: String::new(),
                reason: e.to_string(),
            }
        })?;
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_mark_shorthand() {
        assert_eq!(
            parse_version_mark("foobar").unwrap(),
            ("VERSION".into(), "foobar".into())
        );
        assert_eq!(
            parse_version_mark("x-dev:alice").unwrap(),
            ("x-dev".into(), "alice".into())
        );
        assert!(parse_version_mark(":v")
            .unwrap_err()
            .to_string()
            .contains("header name"));
        assert!(parse_version_mark("k:").is_err());
        assert!(parse_version_mark("bad key:v").is_err());
    }

    #[test]
    fn flags_and_together() {
        let header = vec!["x-team=a".to_string()];
        let bag = vec!["user=bob".to_string()];
        let f = RuleFlags {
            version_mark: Some("foobar"),
            header: &header,
            baggage: &bag,
            method: Some("GET"),
            ..Default::default()
        };
        let m = f.to_match_spec().unwrap();
        assert_eq!(m.headers.len(), 2);
        assert_eq!(m.baggage[0].key, "user");
        let bad = vec!["noequals".to_string()];
        let e = RuleFlags {
            header: &bad,
            ..Default::default()
        }
        .to_match_spec()
        .unwrap_err();
        assert!(e.to_string().contains("--header"), "{e}");
        let re = vec!["x=(".to_string()];
        let e = RuleFlags {
            header_regex: &re,
            ..Default::default()
        }
        .to_match_spec()
        .unwrap_err();
        assert!(e.to_string().contains("regex"), "{e}");
    }
}
