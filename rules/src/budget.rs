//! Limits on one route table, checked while it is read, so that a bad or hostile table (a YAML
//! alias bomb, thousands of rules, huge regexes) is refused with a typed error before it costs
//! the router, the janitor or a teammate's `ktx` their memory or CPU.
//!
//! YAML anchors and aliases are refused outright: ktx never writes them, and one alias can
//! expand to any amount of memory. The check is a conservative scan of the text (it can refuse a
//! plain scalar whose continuation line starts with `*` or `&`; quote such a value).

use crate::RulesError;

/// The limits. [`Budget::default`] is what every reader uses unless told otherwise (the router
/// takes them from its flags).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Largest table text, in bytes (a ConfigMap holds at most 1 MiB).
    pub max_bytes: usize,
    /// Most rules in one table.
    pub max_rules: usize,
    /// Most `regex` header conditions in one table (each keeps a compiled program and a lazy
    /// DFA cache).
    pub max_regexes: usize,
    /// Largest compiled program of one regex, in bytes (`RegexBuilder::size_limit`).
    pub regex_size: usize,
    /// Largest lazy DFA cache of one regex, in bytes (`RegexBuilder::dfa_size_limit`).
    pub regex_dfa_size: usize,
}

/// Default [`Budget::max_bytes`]: 2 MiB (10,000 one-mark rules take about 1.1 MB).
pub const DEFAULT_MAX_BYTES: usize = 2 << 20;
/// Default [`Budget::max_rules`].
pub const DEFAULT_MAX_RULES: usize = 10_000;
/// Default [`Budget::max_regexes`].
pub const DEFAULT_MAX_REGEXES: usize = 100;
/// Default [`Budget::regex_size`]: 64 KiB.
pub const DEFAULT_REGEX_SIZE: usize = 64 << 10;
/// Default [`Budget::regex_dfa_size`]: 256 KiB.
pub const DEFAULT_REGEX_DFA_SIZE: usize = 256 << 10;

impl Default for Budget {
    fn default() -> Self {
        Budget {
            max_bytes: DEFAULT_MAX_BYTES,
            max_rules: DEFAULT_MAX_RULES,
            max_regexes: DEFAULT_MAX_REGEXES,
            regex_size: DEFAULT_REGEX_SIZE,
            regex_dfa_size: DEFAULT_REGEX_DFA_SIZE,
        }
    }
}

impl Budget {
    /// Checks what can be checked on the text alone: its size, and no YAML anchors or aliases.
    pub fn check_text(&self, text: &str) -> Result<(), RulesError> {
        if text.len() > self.max_bytes {
            return Err(RulesError::TableTooLarge {
                bytes: text.len(),
                max: self.max_bytes,
            });
        }
        if !text.trim_start().starts_with('{') {
            if let Some(line) = first_anchor_or_alias(text) {
                return Err(RulesError::YamlAlias { line });
            }
        }
        Ok(())
    }

    pub(crate) fn check_rules(&self, rules: usize) -> Result<(), RulesError> {
        if rules > self.max_rules {
            return Err(RulesError::TooManyRules {
                rules,
                max: self.max_rules,
            });
        }
        Ok(())
    }
}

/// The 1-based line of the first YAML anchor (`&a`) or alias (`*a`), if any.
///
/// A `&` or `*` counts when it starts a node: at the start of a line's content, after `- `,
/// `? `, `key: `, `[`, `{`, `,` in flow, or after a tag. Quoted scalars, comments and block
/// scalars (`|`, `>`) are skipped, so `regex: "a.*"` or `regex: a.*` are fine.
///
/// Lines are cut where the YAML parser cuts them (LF, CR, CR LF, NEL, LS, PS), a byte order
/// mark that starts a line is passed over as the parser does, and a block scalar's lines are
/// skipped only while the parser would read them as its content: deeper than the node that
/// holds it and at least as deep as its first line. Wherever the two could disagree the scan
/// errs towards seeing an anchor (a refused table, never an expanded one).
pub fn first_anchor_or_alias(text: &str) -> Option<usize> {
    if !text.bytes().any(|b| b == b'&' || b == b'*') {
        return None;
    }
    let mut quote: Option<u8> = None;
    let mut flow: usize = 0;
    // Inside a block scalar: the column of the node that holds it, and its first line's.
    let mut block: Option<(usize, Option<usize>)> = None;
    for (n, line) in yaml_lines(text).enumerate() {
        let line = match quote {
            None => line.trim_start_matches('\u{FEFF}'),
            Some(_) => line,
        };
        let indent = line.len() - line.trim_start_matches(' ').len();
        if let Some((parent, content)) = block {
            if line.trim().is_empty() {
                continue;
            }
            match content {
                None if indent > parent => {
                    block = Some((parent, Some(indent)));
                    continue;
                }
                Some(c) if indent >= c => continue,
                _ => block = None,
            }
        }
        let b = line.as_bytes();
        let mut node_start = true;
        let mut i = indent;
        if quote.is_none() && (line.starts_with("---") || line.starts_with("...")) {
            i = 3;
        }
        if quote.is_none() && line.starts_with('%') {
            continue;
        }
        while i < b.len() {
            let c = b[i];
            let next_is_space = b.get(i + 1).is_none_or(|x| x.is_ascii_whitespace());
            if let Some(q) = quote {
                if q == b'"' && c == b'\\' {
                    i += 2;
                    continue;
                }
                if c == q {
                    if q == b'\'' && b.get(i + 1) == Some(&b'\'') {
                        i += 2;
                        continue;
                    }
                    quote = None;
                    node_start = false;
                }
                i += 1;
                continue;
            }
            let after_space = i == 0 || b[i - 1].is_ascii_whitespace();
            if c == b'#' && after_space {
                break;
            }
            if c.is_ascii_whitespace() {
                i += 1;
                continue;
            }
            if node_start {
                match c {
                    b'*' | b'&' => return Some(n + 1),
                    b'\'' | b'"' => {
                        quote = Some(c);
                        node_start = false;
                    }
                    b'|' | b'>' => {
                        block = Some((content_column(line), None));
                        break;
                    }
                    b'-' | b'?' if next_is_space => {}
                    b'[' | b'{' => flow += 1,
                    b']' | b'}' => {
                        flow = flow.saturating_sub(1);
                        node_start = false;
                    }
                    b',' if flow > 0 => {}
                    b'!' => {
                        while i < b.len() && !b[i].is_ascii_whitespace() {
                            i += 1;
                        }
                        continue;
                    }
                    _ => node_start = false,
                }
            } else {
                match c {
                    b':' if next_is_space || flow > 0 => node_start = true,
                    b',' if flow > 0 => node_start = true,
                    b']' | b'}' if flow > 0 => flow -= 1,
                    _ => {}
                }
            }
            i += 1;
        }
    }
    None
}

/// The lines of `text` as the YAML parser cuts them: at LF, CR, CR LF, NEL, LS and PS.
fn yaml_lines(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(text);
    std::iter::from_fn(move || {
        let t = rest?;
        match t.find(['\n', '\r', '\u{85}', '\u{2028}', '\u{2029}']) {
            Some(i) => {
                let brk = t[i..].chars().next().map_or(1, char::len_utf8);
                let skip = if t[i..].starts_with("\r\n") { 2 } else { brk };
                rest = Some(&t[i + skip..]);
                Some(&t[..i])
            }
            None => {
                rest = None;
                Some(t)
            }
        }
    })
}

/// Where the node a line holds starts: past its indentation and any `- ` and `? ` before it
/// (`- key: |`: the mapping at column 2 holds the block scalar, not the sequence at 0).
fn content_column(line: &str) -> usize {
    let b = line.as_bytes();
    let mut i = 0;
    loop {
        while i < b.len() && b[i] == b' ' {
            i += 1;
        }
        match (b.get(i), b.get(i + 1)) {
            (Some(b'-' | b'?'), Some(b' ' | b'\t')) => i += 2,
            _ => return i,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_anchors_and_aliases_where_nodes_start() {
        assert_eq!(first_anchor_or_alias("a: &x 1\nb: *x\n"), Some(1));
        assert_eq!(first_anchor_or_alias("a: 1\nb: [1, *x]\n"), Some(2));
        assert_eq!(first_anchor_or_alias("a: {k: *x}\n"), Some(1));
        assert_eq!(first_anchor_or_alias("- *x\n"), Some(1));
        assert_eq!(first_anchor_or_alias("&x a: 1\n"), Some(1));
        assert_eq!(first_anchor_or_alias("a: !!str &x 1\n"), Some(1));
        assert_eq!(first_anchor_or_alias("a:\n  - b\n  -   *x\n"), Some(3));
        assert_eq!(first_anchor_or_alias("--- *x\n"), Some(1));
        // After a block scalar, the keys of the mapping that holds it are scanned again.
        assert_eq!(first_anchor_or_alias("- s: |\n    a\n  t: *x\n"), Some(3));
        // Lines cut where YAML cuts them; a byte order mark starts a line.
        assert_eq!(first_anchor_or_alias("a: 1 #\r*x: 2\n"), Some(2));
        assert_eq!(first_anchor_or_alias("a: 1\u{2028}b: &x 2\n"), Some(2));
        assert_eq!(first_anchor_or_alias("a: 1\r\n\u{FEFF}- *x\n"), Some(2));
    }

    #[test]
    fn ignores_stars_and_ampersands_inside_values() {
        for ok in [
            "regex: a.*\n",
            "regex: \"*a\"\n",
            "regex: '*a'\n",
            "regex: 'it''s *a'\n",
            "exact: a&b\n",
            "a: 1 # *x\n",
            "# &x\n",
            "a: |\n  *x\n  &y\nb: 1\n",
            "- s: |\n    *x\n      &y\n  t: 1\n",
            "a: \"x\r*y\"\r\n",
            "a: [\"*x\", 'y&']\n",
            "h: [{ name: VERSION, regex: \"v.*\" }]\n",
            "a: \"multi\n  *line\"\n",
        ] {
            assert_eq!(first_anchor_or_alias(ok), None, "{ok:?}");
        }
    }

    /// Whatever ktx writes (serde_yaml) passes the scan, however its values look.
    #[test]
    fn tables_ktx_writes_pass_the_scan() {
        use crate::spec::{HeaderSpec, MatchSpec, RuleSpec, TargetSpec};
        use crate::{OnUnavailable, RoutesSpec};
        let values = [
            "&a", "*b", "a &b", "x: *y", "- *z", "[*a]", "{k: &v}", "a\n*b", "#*",
        ];
        let spec = RoutesSpec {
            default: TargetSpec {
                service: Some("s".into()),
                addrs: vec![],
            },
            rules: values
                .iter()
                .enumerate()
                .map(|(i, v)| RuleSpec {
                    session: format!("*s{i}"),
                    lease: Some(format!("&l{i}")),
                    matches: MatchSpec {
                        headers: vec![HeaderSpec {
                            name: "version".into(),
                            exact: Some(v.to_string()),
                            ..Default::default()
                        }],
                        ..Default::default()
                    },
                    target: TargetSpec {
                        service: Some("t".into()),
                        addrs: vec![],
                    },
                    on_unavailable: OnUnavailable::Fallback,
                })
                .collect(),
        };
        let yaml = spec.to_yaml();
        assert_eq!(first_anchor_or_alias(&yaml), None, "{yaml}");
        assert_eq!(RoutesSpec::parse(&yaml).unwrap(), spec);
    }
}
