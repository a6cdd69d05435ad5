//! This session's rule, from the command line: its session id, its conditions in the routes
//! ConfigMap's form, the same in words (for `ktx status` and messages), and the curl arguments
//! that make a request match it.
//!
//! `--versionMark [KEY:]VALUE` names the session after VALUE; with no condition at all, VALUE
//! is random (kt-connect's behaviour); with only richer conditions the session id is random.

use ktx_rules::flags::{parse_version_mark, RuleFlags};
use ktx_rules::spec::MatchSpec;
use ktx_rules::OnUnavailable;

use crate::cli::RuleArgs;
use crate::error::Result;

/// A checked rule for one session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RulePlan {
    /// Names the session's objects (`S-ktx-mesh-SESSION`): a DNS label.
    pub session: String,
    pub matches: MatchSpec,
    pub on_unavailable: OnUnavailable,
}

/// Length of generated session ids and marks.
const RANDOM_LEN: usize = 5;

/// Builds the plan; `random` supplies ids (tests pass a fixed one).
pub fn plan(args: &RuleArgs, random: impl Fn() -> String) -> Result<RulePlan> {
    let has_other = !args.header.is_empty()
        || !args.header_regex.is_empty()
        || !args.header_present.is_empty()
        || !args.baggage.is_empty()
        || args.path_prefix.is_some()
        || args.method.is_some();
    let generated;
    let mark = match (&args.version_mark, has_other) {
        // kt-connect's `KEY:`: that header, a random value.
        (Some(m), _) if m.ends_with(':') && m.matches(':').count() == 1 => {
            generated = format!("{m}{}", random());
            Some(generated.as_str())
        }
        (Some(m), _) => Some(m.as_str()),
        (None, true) => None,
        (None, false) => {
            generated = random();
            Some(generated.as_str())
        }
    };
    let flags = RuleFlags {
        version_mark: mark,
        header: &args.header,
        header_regex: &args.header_regex,
        header_present: &args.header_present,
        baggage: &args.baggage,
        path_prefix: args.path_prefix.as_deref(),
        method: args.method.as_deref(),
    };
    let matches = flags.to_match_spec()?;
    let session = match mark {
        Some(m) => {
            let (_, value) = parse_version_mark(m)?;
            let label = ktx_names::dns_label(&value);
            let label = label.trim_start_matches('-').to_string();
            if label.is_empty() {
                random()
            } else {
                label
            }
        }
        None => random(),
    };
    Ok(RulePlan {
        session,
        matches,
        on_unavailable: args.on_unavailable,
    })
}

/// A random session id / mark value.
pub fn random_id() -> String {
    crate::random::id(RANDOM_LEN)
}

/// The conditions in words: `VERSION: foobar AND path /api*`.
pub fn describe(m: &MatchSpec) -> String {
    let mut parts: Vec<String> = Vec::new();
    for h in &m.headers {
        parts.push(match (&h.exact, &h.prefix, &h.regex, h.present) {
            (Some(v), _, _, _) => format!("{}: {v}", h.name),
            (_, Some(p), _, _) => format!("{}: {p}*", h.name),
            (_, _, Some(r), _) => format!("{} ~ /{r}/", h.name),
            _ => format!("{} present", h.name),
        });
    }
    for b in &m.baggage {
        parts.push(format!("baggage {}={}", b.key, b.value));
    }
    if let Some(p) = &m.path_prefix {
        parts.push(format!("path {p}*"));
    }
    if let Some(me) = &m.method {
        parts.push(format!("method {me}"));
    }
    parts.join(" AND ")
}

/// curl arguments (before the URL) and the path for a request that matches `m`. Regex
/// conditions cannot be satisfied mechanically: they are returned as a note instead.
pub fn curl_parts(m: &MatchSpec) -> (Vec<String>, String, Option<String>) {
    let mut args = Vec::new();
    let mut note = None;
    for h in &m.headers {
        match (&h.exact, &h.prefix, &h.regex) {
            (Some(v), _, _) => args.push(format!("-H '{}: {v}'", h.name)),
            (_, Some(p), _) => args.push(format!("-H '{}: {p}'", h.name)),
            (_, _, Some(r)) => {
                note = Some(format!("header {} must match /{r}/", h.name));
                args.push(format!("-H '{}: …'", h.name));
            }
            _ => args.push(format!("-H '{}: 1'", h.name)),
        }
    }
    if !m.baggage.is_empty() {
        let members: Vec<String> = m
            .baggage
            .iter()
            .map(|b| format!("{}={}", b.key, b.value))
            .collect();
        args.push(format!("-H 'baggage: {}'", members.join(",")));
    }
    if let Some(me) = &m.method {
        if !me.eq_ignore_ascii_case("GET") {
            args.push(format!("-X {me}"));
        }
    }
    let path = m.path_prefix.clone().unwrap_or_else(|| "/".to_string());
    (args, path, note)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixed() -> String {
        "abcde".to_string()
    }

    #[test]
    fn version_mark_names_the_session() {
        let args = RuleArgs {
            version_mark: Some("foobar".into()),
            ..Default::default()
        };
        let p = plan(&args, fixed).unwrap();
        assert_eq!(p.session, "foobar");
        assert_eq!(describe(&p.matches), "VERSION: foobar");
        let (curl, path, note) = curl_parts(&p.matches);
        assert_eq!(curl, vec!["-H 'VERSION: foobar'".to_string()]);
        assert_eq!(path, "/");
        assert!(note.is_none());
        let p = plan(
            &RuleArgs {
                version_mark: Some("x-dev:Alice_1".into()),
                ..Default::default()
            },
            fixed,
        )
        .unwrap();
        assert_eq!(p.session, "alice-1");
    }

    #[test]
    fn no_condition_means_a_random_mark() {
        let p = plan(&RuleArgs::default(), fixed).unwrap();
        assert_eq!(p.session, "abcde");
        assert_eq!(describe(&p.matches), "VERSION: abcde");
    }

    #[test]
    fn richer_rules_get_a_random_session_and_a_usable_curl() {
        let args = RuleArgs {
            header: vec!["x-team=a".into()],
            header_present: vec!["x-debug".into()],
            baggage: vec!["user=alice".into()],
            path_prefix: Some("/api".into()),
            method: Some("POST".into()),
            ..Default::default()
        };
        let p = plan(&args, fixed).unwrap();
        assert_eq!(p.session, "abcde");
        assert_eq!(
            describe(&p.matches),
            "x-team: a AND x-debug present AND baggage user=alice AND path /api* AND method POST"
        );
        let (curl, path, _) = curl_parts(&p.matches);
        assert_eq!(
            curl.join(" "),
            "-H 'x-team: a' -H 'x-debug: 1' -H 'baggage: user=alice' -X POST"
        );
        assert_eq!(path, "/api");
    }

    #[test]
    fn kt_connect_key_colon_gives_a_random_value() {
        let p = plan(
            &RuleArgs {
                version_mark: Some("ver:".into()),
                ..Default::default()
            },
            fixed,
        )
        .unwrap();
        assert_eq!(describe(&p.matches), "ver: abcde");
        assert_eq!(p.session, "abcde");
    }

    #[test]
    fn every_key_kt_connect_accepts_is_accepted() {
        // kt-connect v0.3.7 (pkg/kt/command/mesh/common.go) takes keys matching
        // ^[a-z][a-z0-9_-]*$; a sample of its edges.
        for key in ["a", "version", "ver-1", "x_dev", "z9_-"] {
            let mark = format!("{key}:v1");
            let p = plan(
                &RuleArgs {
                    version_mark: Some(mark.clone()),
                    ..Default::default()
                },
                fixed,
            )
            .unwrap_or_else(|e| panic!("{mark}: {e}"));
            assert_eq!(describe(&p.matches), format!("{key}: v1"));
        }
    }

    #[test]
    fn bad_flags_are_refused() {
        let args = RuleArgs {
            header: vec!["novalue".into()],
            ..Default::default()
        };
        assert!(plan(&args, fixed)
            .unwrap_err()
            .to_string()
            .contains("--header"));
        let args = RuleArgs {
            version_mark: Some("bad key:v".into()),
            ..Default::default()
        };
        assert!(plan(&args, fixed).is_err());
    }
}
