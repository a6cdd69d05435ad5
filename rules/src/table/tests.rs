//! Precedence, overlap, header case, repeated values and the index's equivalence to a scan.

use super::*;
use crate::spec::{BaggageSpec, HeaderSpec, MatchSpec, RuleSpec};

fn h(name: &str) -> HeaderSpec {
    HeaderSpec {
        name: name.into(),
        ..Default::default()
    }
}
fn exact(name: &str, v: &str) -> HeaderSpec {
    HeaderSpec {
        exact: Some(v.into()),
        ..h(name)
    }
}
fn rule(session: &str, m: MatchSpec) -> RuleSpec {
    RuleSpec {
        session: session.into(),
        lease: None,
        matches: m,
        target: TargetSpec {
            service: Some(format!("shadow-{session}")),
            addrs: vec![],
        },
        on_unavailable: OnUnavailable::Fallback,
    }
}
fn headers_only(hs: Vec<HeaderSpec>) -> MatchSpec {
    MatchSpec {
        headers: hs,
        ..Default::default()
    }
}
fn table(rules: Vec<RuleSpec>) -> RouteTable {
    RouteTable::compile(&RoutesSpec {
        default: TargetSpec {
            service: Some("stuntman".into()),
            addrs: vec![],
        },
        rules,
    })
    .unwrap()
}
fn req(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut m = HeaderMap::new();
    for (k, v) in pairs {
        m.append(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    m
}
fn session<'a>(t: &'a RouteTable, hs: &HeaderMap) -> Option<&'a str> {
    t.route(&Method::GET, "/", hs).map(|r| &*r.session)
}

#[test]
fn exact_prefix_regex_present() {
    let t = table(vec![
        rule("exact", headers_only(vec![exact("VERSION", "foobar")])),
        rule(
            "prefix",
            headers_only(vec![HeaderSpec {
                prefix: Some("team-".into()),
                ..h("x-team")
            }]),
        ),
        rule(
            "regex",
            headers_only(vec![HeaderSpec {
                regex: Some("v[0-9]+".into()),
                ..h("x-ver")
            }]),
        ),
        rule(
            "present",
            headers_only(vec![HeaderSpec {
                present: Some(true),
                ..h("x-debug")
            }]),
        ),
    ]);
    assert_eq!(session(&t, &req(&[("version", "foobar")])), Some("exact"));
    assert_eq!(session(&t, &req(&[("VERSION", "foobar2")])), None);
    assert_eq!(session(&t, &req(&[("x-team", "team-a")])), Some("prefix"));
    assert_eq!(session(&t, &req(&[("x-ver", "v12")])), Some("regex"));
    assert_eq!(
        session(&t, &req(&[("x-ver", "xv12")])),
        None,
        "regex is anchored"
    );
    assert_eq!(
        session(&t, &req(&[("x-ver", "v12x")])),
        None,
        "regex is anchored"
    );
    assert_eq!(session(&t, &req(&[("x-debug", "")])), Some("present"));
    assert_eq!(session(&t, &req(&[])), None);
    assert_eq!(t.default_target(), &Target::Service("stuntman".into()));
}

#[test]
fn values_are_case_sensitive_names_are_not() {
    let t = table(vec![rule(
        "a",
        headers_only(vec![exact("Version", "FooBar")]),
    )]);
    assert_eq!(session(&t, &req(&[("VERSION", "FooBar")])), Some("a"));
    assert_eq!(session(&t, &req(&[("version", "foobar")])), None);
}

#[test]
fn any_value_of_a_repeated_header_may_match() {
    let t = table(vec![
        rule("a", headers_only(vec![exact("version", "a")])),
        rule(
            "r",
            headers_only(vec![HeaderSpec {
                regex: Some("b+".into()),
                ..h("x")
            }]),
        ),
    ]);
    assert_eq!(
        session(&t, &req(&[("version", "zzz"), ("version", "a")])),
        Some("a")
    );
    assert_eq!(session(&t, &req(&[("x", "c"), ("x", "bbb")])), Some("r"));
}

#[test]
fn first_match_wins_across_index_and_scan() {
    // The unindexed rule comes first, so it must win over the indexed exact one.
    let t = table(vec![
        rule(
            "present",
            headers_only(vec![HeaderSpec {
                present: Some(true),
                ..h("x-debug")
            }]),
        ),
        rule("exact", headers_only(vec![exact("version", "a")])),
        rule(
            "exact-and-path",
            MatchSpec {
                path_prefix: Some("/api".into()),
                ..headers_only(vec![exact("version", "b")])
            },
        ),
        rule(
            "b-any-path",
            headers_only(vec![exact("version", "b"), exact("x-two", "2")]),
        ),
    ]);
    let both = req(&[("x-debug", "1"), ("version", "a")]);
    assert_eq!(session(&t, &both), Some("present"));
    assert_eq!(session(&t, &req(&[("version", "a")])), Some("exact"));
    let hs = req(&[("version", "b"), ("x-two", "2")]);
    assert_eq!(
        t.route(&Method::GET, "/api/x", &hs)
            .unwrap()
            .session
            .as_ref(),
        "exact-and-path"
    );
    assert_eq!(
        t.route(&Method::GET, "/other", &hs)
            .unwrap()
            .session
            .as_ref(),
        "b-any-path"
    );
}

#[test]
fn all_conditions_must_hold() {
    let t = table(vec![rule(
        "a",
        MatchSpec {
            headers: vec![exact("version", "a")],
            baggage: vec![BaggageSpec {
                key: "user".into(),
                value: "alice".into(),
            }],
            path_prefix: Some("/api/".into()),
            method: Some("post".into()),
        },
    )]);
    let good = req(&[("version", "a"), ("baggage", "user=alice")]);
    assert!(t.route(&Method::POST, "/api/x", &good).is_some());
    assert!(t.route(&Method::GET, "/api/x", &good).is_none());
    assert!(t.route(&Method::POST, "/web", &good).is_none());
    assert!(t
        .route(&Method::POST, "/api/x", &req(&[("version", "a")]))
        .is_none());
}

#[test]
fn identical_conditions_are_refused_naming_the_other_session() {
    let spec = RoutesSpec {
        default: TargetSpec {
            service: Some("s".into()),
            addrs: vec![],
        },
        rules: vec![
            rule(
                "alice",
                headers_only(vec![exact("VERSION", "x"), exact("b", "1")]),
            ),
            rule(
                "bob",
                headers_only(vec![exact("b", "1"), exact("version", "x")]),
            ),
        ],
    };
    let err = RouteTable::compile(&spec).unwrap_err().to_string();
    assert!(err.contains("rules[1]") && err.contains("alice"), "{err}");
}

#[test]
fn bad_fields_are_named() {
    let bad = |m: MatchSpec| {
        let spec = RoutesSpec {
            default: TargetSpec {
                service: Some("s".into()),
                addrs: vec![],
            },
            rules: vec![rule("a", m)],
        };
        RouteTable::compile(&spec).unwrap_err().to_string()
    };
    assert!(bad(MatchSpec::default()).contains("rules[0].match"));
    let e = bad(headers_only(vec![HeaderSpec {
        regex: Some("(".into()),
        ..h("x")
    }]));
    assert!(e.contains("rules[0].match.headers[0].regex"), "{e}");
    let e = bad(headers_only(vec![exact("bad name", "x")]));
    assert!(e.contains("headers[0].name"), "{e}");
    let e = bad(headers_only(vec![HeaderSpec {
        exact: Some("a".into()),
        prefix: Some("b".into()),
        ..h("x")
    }]));
    assert!(e.contains("exactly one"), "{e}");
    let e = bad(MatchSpec {
        path_prefix: Some("api".into()),
        ..Default::default()
    });
    assert!(e.contains("pathPrefix"), "{e}");
    let e = bad(MatchSpec {
        method: Some("GE T".into()),
        ..Default::default()
    });
    assert!(e.contains("method"), "{e}");
    let spec = RoutesSpec {
        default: TargetSpec {
            service: None,
            addrs: vec!["nope".into()],
        },
        rules: vec![],
    };
    let e = RouteTable::compile(&spec).unwrap_err().to_string();
    assert!(e.contains("default.addrs[0]"), "{e}");
}

#[test]
fn dead_sessions_are_dropped() {
    let t = table(vec![
        rule("a", headers_only(vec![exact("version", "a")])),
        rule("b", headers_only(vec![exact("version", "b")])),
    ]);
    let live = t.retain_rules(|r| &*r.session != "a");
    assert_eq!(session(&live, &req(&[("version", "a")])), None);
    assert_eq!(session(&live, &req(&[("version", "b")])), Some("b"));
}

/// The index must give the same answer as a plain first-match scan, whatever the mix.
#[test]
fn index_agrees_with_linear_scan() {
    let mut rules = Vec::new();
    for i in 0..60 {
        let m = match i % 4 {
            0 => headers_only(vec![exact("version", &format!("v{}", i % 7))]),
            1 => headers_only(vec![HeaderSpec {
                prefix: Some(format!("v{}", i % 3)),
                ..h("version")
            }]),
            2 => MatchSpec {
                path_prefix: Some(format!("/p{}", i % 5)),
                ..headers_only(vec![exact("x-k", &format!("{}", i % 2))])
            },
            _ => MatchSpec {
                method: Some(["GET", "POST"][i % 2].into()),
                path_prefix: Some(format!("/p{}", i % 3)),
                ..Default::default()
            },
        };
        rules.push(rule(&format!("s{i}"), m));
    }
    // Drop rules that duplicate earlier ones; the table refuses those.
    let mut keep: Vec<RuleSpec> = Vec::new();
    for r in rules {
        let mut trial = keep.clone();
        trial.push(r.clone());
        if RouteTable::compile(&RoutesSpec {
            default: TargetSpec {
                service: Some("d".into()),
                addrs: vec![],
            },
            rules: trial,
        })
        .is_ok()
        {
            keep.push(r);
        }
    }
    let t = table(keep);
    for v in 0..8 {
        for k in 0..3 {
            for p in 0..6 {
                for m in [Method::GET, Method::POST] {
                    let hs = req(&[("version", &format!("v{v}")), ("x-k", &format!("{k}"))]);
                    let path = format!("/p{p}/x");
                    let scan = t.rules().iter().find(|r| r.matches.holds(&m, &path, &hs));
                    let got = t.route(&m, &path, &hs);
                    assert_eq!(
                        scan.map(|r| &r.session),
                        got.map(|r| &r.session),
                        "v{v} k{k} p{p} {m}"
                    );
                }
            }
        }
    }
}
