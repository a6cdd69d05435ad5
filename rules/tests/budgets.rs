//! A hostile or broken route table is refused, quickly and with an error that says why, before
//! it costs memory: one test per attack of issue 11 §4 and §5b. The tests read the error's text
//! (what a person sees in the log) and bound the time each refusal takes.

use std::time::{Duration, Instant};

use http::{HeaderMap, HeaderValue, Method};
use ktx_rules::{RouteTable, RoutesSpec};

fn rule(i: usize, cond: &str) -> String {
    format!(
        "  - session: dev{i}\n    match: {{ headers: [{{ name: VERSION, {cond} }}] }}\n    target: {{ service: shadow{i} }}\n"
    )
}

/// Parses then compiles, as every reader does; the error text, or `None` when accepted.
fn refusal(text: &str) -> Option<String> {
    match RoutesSpec::parse(text).and_then(|s| RouteTable::compile(&s)) {
        Ok(_) => None,
        Err(e) => Some(e.to_string()),
    }
}

fn assert_refused_quickly(text: &str, why: &str) {
    let start = Instant::now();
    let e = refusal(text).unwrap_or_else(|| panic!("accepted; expected: {why}"));
    let took = start.elapsed();
    assert!(e.contains(why), "refused for another reason: {e}");
    assert!(took < Duration::from_secs(2), "refusal took {took:?}");
}

#[test]
fn yaml_alias_bomb_is_refused_before_it_expands() {
    // One 16 KiB value anchored once and aliased 2,000 times: 4 bytes of text per alias, 32 MB
    // once expanded (a 1 MiB ConfigMap of these expands to gigabytes).
    let big = "x".repeat(16 << 10);
    let mut text = format!(
        "default: {{ service: stuntman }}\nrules:\n  - &r {{ session: a, match: {{ headers: [{{ name: v, exact: \"{big}\" }}] }}, target: {{ service: t }} }}\n"
    );
    for _ in 0..2_000 {
        text.push_str("  - *r\n");
    }
    assert_refused_quickly(&text, "YAML anchors and aliases");
}

/// The same bomb with other line breaks YAML knows (CR, NEL, LS, PS), behind a comment that
/// would hide the rest of the text from a scan that splits lines on LF only.
#[test]
fn yaml_alias_bomb_is_refused_whatever_breaks_its_lines() {
    let big = "x".repeat(16 << 10);
    for brk in ["\r", "\r\n", "\u{85}", "\u{2028}", "\u{2029}"] {
        let mut text = format!(
            "default: {{ service: stuntman }} #{brk}rules:{brk}  - &r {{ session: a, match: {{ headers: [{{ name: v, exact: \"{big}\" }}] }}, target: {{ service: t }} }}{brk}"
        );
        for _ in 0..2_000 {
            text.push_str("  - *r");
            text.push_str(brk);
        }
        assert_refused_quickly(&text, "YAML anchors and aliases");
    }
}

/// The same bomb in the keys that follow a block scalar (`- session: |`) in a rule: they belong
/// to the rule's mapping, not to the scalar, however deep the scalar's own lines are.
#[test]
fn yaml_alias_bomb_after_a_block_scalar_is_refused() {
    let big = "x".repeat(16 << 10);
    let mut text = format!(
        "default: {{ service: stuntman }}\nrules:\n- session: |\n    a\n  match: {{ headers: [&h {{ name: v, exact: \"{big}\" }}"
    );
    for _ in 0..2_000 {
        text.push_str(", *h");
    }
    text.push_str("] }\n  target: { service: t }\n");
    assert_refused_quickly(&text, "YAML anchors and aliases");
}

/// A byte order mark starts a line as YAML reads it; an anchor after one is still an anchor.
#[test]
fn an_anchor_after_a_byte_order_mark_is_refused() {
    let text = "default: { service: stuntman }\nrules:\n\u{FEFF}- &r { session: a, match: { headers: [{ name: v, exact: x }] }, target: { service: t } }\n\u{FEFF}- *r\n";
    assert_refused_quickly(text, "YAML anchors and aliases");
}

#[test]
fn an_anchor_alone_is_refused_too() {
    let text = "default: { service: &s stuntman }\nrules: []\n";
    assert_refused_quickly(text, "line 1: YAML anchors and aliases");
}

#[test]
fn too_many_rules_are_refused() {
    let mut text = String::from("default: { service: stuntman }\nrules:\n");
    for i in 0..10_001 {
        text.push_str(&rule(i, &format!("exact: mark{i}")));
    }
    assert_refused_quickly(&text, "10001 rules; at most 10000");
}

#[test]
fn ten_thousand_rules_are_accepted() {
    let mut text = String::from("default: { service: stuntman }\nrules:\n");
    for i in 0..10_000 {
        text.push_str(&rule(i, &format!("exact: mark{i}")));
    }
    assert_eq!(refusal(&text), None);
}

#[test]
fn a_huge_regex_is_refused() {
    // Tiny text, large program: 100,000 repetitions compile to megabytes.
    let text = format!(
        "default: {{ service: stuntman }}\nrules:\n{}",
        rule(0, "regex: \"a{100000}\"")
    );
    assert_refused_quickly(&text, "compiles to more than 65536 bytes");
}

#[test]
fn a_megabyte_of_regexes_is_refused() {
    let mut text = String::from("default: { service: stuntman }\nrules:\n");
    let mut i = 0;
    while text.len() < 1 << 20 {
        text.push_str(&rule(
            i,
            &format!("regex: \"(v{i}|w{i})[a-z]{{1,40}}(x|y)*\""),
        ));
        i += 1;
    }
    assert_refused_quickly(&text, "more than 100 regex conditions");
}

#[test]
fn an_oversized_table_is_refused() {
    let text = format!(
        "default: {{ service: stuntman }}\nrules: []\n# {}\n",
        "x".repeat(3 << 20)
    );
    assert_refused_quickly(&text, "at most 2097152 are accepted");
}

#[test]
fn a_regex_cannot_escape_its_anchors() {
    // `^(?:x)|(.*)$` would match anything. The pattern alone is unbalanced: refused. Had it
    // been accepted, it must still not match `yyy`.
    let text = format!(
        "default: {{ service: stuntman }}\nrules:\n{}",
        rule(0, "regex: \"x)|(.*\"")
    );
    match RoutesSpec::parse(&text).and_then(|s| RouteTable::compile(&s)) {
        Err(e) => assert!(e.to_string().contains("invalid regex"), "{e}"),
        Ok(t) => {
            let mut h = HeaderMap::new();
            h.insert("version", HeaderValue::from_static("yyy"));
            assert!(
                t.route(&Method::GET, "/", &h).is_none(),
                "`x)|(.*` matched `yyy`: the anchors were escaped"
            );
        }
    }
}
