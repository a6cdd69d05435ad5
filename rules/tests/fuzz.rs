//! Bounded fuzzing (proptest; the workspace is on stable, so no cargo-fuzz) of the two parsers
//! that read input from outside: the routes table (ConfigMap / file) and the W3C `baggage`
//! header. Seeds are the files of `tests/corpus/routes/`; each case mutates one. The number of
//! cases is `PROPTEST_CASES` (default 256 here), which keeps the whole file to a few seconds.

use std::time::{Duration, Instant};

use http::{HeaderMap, HeaderName, HeaderValue, Method};
use ktx_rules::baggage::has_member;
use ktx_rules::budget::first_anchor_or_alias;
use ktx_rules::{RouteTable, RoutesSpec};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

fn seeds() -> Vec<String> {
    // Read at run time: a build shared between two checkouts (one cache, two paths) would
    // otherwise read the other checkout's corpus, or a deleted one.
    let dir = std::path::Path::new(&std::env::var_os("CARGO_MANIFEST_DIR").expect("run by cargo"))
        .join("tests/corpus/routes");
    let mut out: Vec<String> = std::fs::read_dir(dir)
        .expect("the corpus is in the repo")
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    out.sort();
    assert!(out.len() >= 3, "corpus missing");
    out
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

/// Fragments that matter to YAML and to the rules: indicators, anchors, regex syntax.
const TOKENS: &[&str] = &[
    "&a ",
    "*a",
    "- ",
    ": ",
    "{",
    "}",
    "[",
    "]",
    ",",
    "\n",
    "\n  ",
    "'",
    "\"",
    "#",
    "|\n",
    ">\n",
    "!!str ",
    "regex: ",
    "(",
    ")",
    ".*",
    "{100000}",
    "exact: ",
    "prefix: ",
    "present: true",
    "---\n",
    "\\",
    "%",
    "\u{0}",
    "é",
];

#[derive(Debug, Clone)]
enum Edit {
    Insert(usize, usize),
    Delete(usize, usize),
    Flip(usize, u8),
    Truncate(usize),
}

fn edits() -> impl Strategy<Value = Vec<Edit>> {
    prop::collection::vec(
        prop_oneof![
            (any::<usize>(), 0..TOKENS.len()).prop_map(|(at, t)| Edit::Insert(at, t)),
            (any::<usize>(), 1usize..16).prop_map(|(at, n)| Edit::Delete(at, n)),
            (any::<usize>(), any::<u8>()).prop_map(|(at, b)| Edit::Flip(at, b)),
            any::<usize>().prop_map(Edit::Truncate),
        ],
        0..8,
    )
}

fn mutate(seed: &str, edits: &[Edit]) -> String {
    let mut b = seed.as_bytes().to_vec();
    for e in edits {
        let len = b.len().max(1);
        match *e {
            Edit::Insert(at, t) => {
                let at = at % (b.len() + 1);
                b.splice(at..at, TOKENS[t].bytes());
            }
            Edit::Delete(at, n) => {
                let at = at % len;
                let end = (at + n).min(b.len());
                b.drain(at.min(end)..end);
            }
            Edit::Flip(at, x) => {
                if !b.is_empty() {
                    let at = at % b.len();
                    b[at] = x;
                }
            }
            Edit::Truncate(at) => b.truncate(at % len),
        }
    }
    String::from_utf8_lossy(&b).into_owned()
}

/// Routes parser and compiler: any mutated table is accepted or refused, never panics, within a
/// time bound; an accepted table routes any request without panicking; a table the alias scan
/// lets through parses the same with or without it (the scan only ever refuses).
#[test]
fn routes_parser_survives_mutated_tables() {
    let seeds = seeds();
    let mut runner = TestRunner::new(Config {
        cases: cases(),
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = (0..seeds.len(), edits(), "[ -~]{0,12}");
    runner
        .run(&strategy, |(seed, edits, value)| {
            let text = mutate(&seeds[seed], &edits);
            let start = Instant::now();
            let _ = first_anchor_or_alias(&text);
            let table = RoutesSpec::parse(&text).and_then(|s| RouteTable::compile(&s));
            prop_assert!(start.elapsed() < Duration::from_secs(2), "slow: {text:?}");
            if let Ok(t) = table {
                let mut h = HeaderMap::new();
                if let Ok(v) = HeaderValue::from_str(&value) {
                    for name in ["version", "x-ver", "x-p", "x-any", "v", "baggage"] {
                        h.append(HeaderName::from_static(name), v.clone());
                    }
                }
                let _ = t.route(&Method::POST, "/api/x", &h);
            }
            Ok(())
        })
        .unwrap();
}

/// Any byte string (as a header value) is safe to look into.
#[test]
fn baggage_parser_survives_any_header() {
    let mut runner = TestRunner::new(Config {
        cases: cases() * 4,
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = (
        prop::collection::vec(any::<u8>(), 0..200),
        "[a-z=%,;]{0,6}",
        "[ -~]{0,6}",
    );
    runner
        .run(&strategy, |(raw, key, value)| {
            let mut h = HeaderMap::new();
            if let Ok(v) = HeaderValue::from_bytes(&raw) {
                h.append("baggage", v);
            }
            let _ = has_member(&h, &key, &value);
            Ok(())
        })
        .unwrap();
}

/// A member written the way the W3C spec says (value percent-encoded) is found among others,
/// with properties and whitespace around it.
#[test]
fn baggage_member_is_found_among_others() {
    let mut runner = TestRunner::new(Config {
        cases: cases() * 4,
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = (
        "[a-z][a-z0-9_-]{0,8}",
        "[ -~]{0,12}",
        "[a-z]{1,4}=[a-z0-9]{0,4}",
    );
    runner
        .run(&strategy, |(key, value, other)| {
            let enc: String = value
                .bytes()
                .map(|b| {
                    if b.is_ascii_alphanumeric() {
                        (b as char).to_string()
                    } else {
                        format!("%{b:02X}")
                    }
                })
                .collect();
            let header = format!("{other}, {key} = {enc} ;prop=1,{other}");
            let mut h = HeaderMap::new();
            h.append("baggage", HeaderValue::from_str(&header).unwrap());
            prop_assert!(
                has_member(&h, &key, &value),
                "{header:?} lacks {key}={value:?}"
            );
            Ok(())
        })
        .unwrap();
}
