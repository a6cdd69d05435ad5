//! The Roles as written (README.md, the chart's templates, the Role ktx creates for a router)
//! against the table of calls: equal sets of (group, resource, verb), both ways.

use std::collections::BTreeSet;
use std::path::PathBuf;

use super::*;

type Rights = BTreeSet<(String, String, String)>;

fn repo(path: &str) -> String {
    // The manifest directory at run time, not at build time: a build shared between two
    // checkouts would read the other one.
    let p = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("run by cargo"))
        .join("..")
        .join(path);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The chart template with its `if`/`else`/`with` blocks decided (`allow` for
/// `developers.allowRouterAccountCreation`, true for everything else) and other template lines
/// (labels, comments) dropped: enough to read the Roles' rules.
fn render(template: &str, allow: bool) -> String {
    let mut out = String::new();
    let mut stack: Vec<bool> = Vec::new();
    let mut in_comment = false;
    for line in template.lines() {
        let t = line.trim();
        if in_comment {
            in_comment = !t.contains("*/");
            continue;
        }
        if t.starts_with("{{- /*") || t.starts_with("{{/*") {
            in_comment = !t.contains("*/");
            continue;
        }
        if t.starts_with("{{- if") || t.starts_with("{{- with") {
            stack.push(!t.contains("allowRouterAccountCreation") || allow);
        } else if t.starts_with("{{- else") {
            let top = stack.last_mut().expect("else inside a block");
            *top = !*top;
        } else if t.starts_with("{{- end") {
            stack.pop();
        } else if !t.contains("{{") && stack.iter().all(|b| *b) {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

fn list(value: &str) -> Vec<String> {
    let v = value.trim();
    let inner = v
        .strip_prefix('[')
        .and_then(|v| v.strip_suffix(']'))
        .unwrap_or_else(|| panic!("not a flow list: {v}"));
    inner
        .split(',')
        .map(|s| s.trim().trim_matches('"').to_string())
        .collect()
}

/// One parsed rule.
#[derive(Debug, Default)]
struct Rule {
    groups: Vec<String>,
    resources: Vec<String>,
    verbs: Vec<String>,
    names: Vec<String>,
}

/// The rules of the Role named `name` in `yaml` (one or several documents).
fn role_rules(yaml: &str, name: &str) -> Vec<Rule> {
    let doc = yaml
        .split("\n---")
        .find(|d| {
            d.lines().any(|l| l.trim() == "kind: Role")
                && d.lines().any(|l| {
                    let l = l.trim();
                    l == format!("name: {name}") || l == format!("metadata: {{ name: {name} }}")
                })
        })
        .unwrap_or_else(|| panic!("no Role {name} in:\n{yaml}"));
    let mut rules: Vec<Rule> = Vec::new();
    let mut in_rules = false;
    for line in doc.lines() {
        let line = line.split('#').next().unwrap_or_default();
        let t = line.trim();
        if t == "rules:" {
            in_rules = true;
            continue;
        }
        if !in_rules || t.is_empty() {
            continue;
        }
        let (starts, t) = match t.strip_prefix("- ") {
            Some(rest) => (true, rest),
            None => (false, t),
        };
        if starts {
            rules.push(Rule::default());
        }
        let Some((key, value)) = t.split_once(':') else {
            continue;
        };
        let rule = rules.last_mut().expect("a rule starts with '- '");
        match key.trim() {
            "apiGroups" => rule.groups = list(value),
            "resources" => rule.resources = list(value),
            "verbs" => rule.verbs = list(value),
            "resourceNames" => rule.names = list(value),
            other => panic!("unexpected key {other} in a rule of Role {name}"),
        }
    }
    rules
}

fn rights(rules: &[Rule]) -> Rights {
    let mut out = Rights::new();
    for r in rules {
        for g in &r.groups {
            for res in &r.resources {
                for v in &r.verbs {
                    out.insert((g.clone(), res.clone(), v.clone()));
                }
            }
        }
    }
    out
}

#[track_caller]
fn same(what: &str, granted: &Rights, needed: &Rights) {
    let missing: Vec<_> = needed.difference(granted).collect();
    let unused: Vec<_> = granted.difference(needed).collect();
    assert!(
        missing.is_empty() && unused.is_empty(),
        "{what}:\n  calls the Role does not grant (group, resource, verb): {missing:?}\n  \
         granted but called by nothing in permissions::CALLS: {unused:?}"
    );
}

fn readme_role() -> String {
    repo("README.md")
        .split("```yaml\n")
        .skip(1)
        .filter_map(|b| b.split_once("```").map(|(yaml, _)| yaml.to_string()))
        .find(|yaml| yaml.contains("kind: Role\n") && yaml.contains("name: ktx-developer"))
        .expect("README.md has a ```yaml block with the developer Role")
}

#[test]
fn the_readme_role_grants_exactly_what_ktx_calls_without_the_chart() {
    let rules = role_rules(&readme_role(), "ktx-developer");
    same(
        "README.md developer Role",
        &rights(&rules),
        &needed(&[Account::Developer, Account::DeveloperWithoutChart]),
    );
}

#[test]
fn the_charts_developer_role_grants_exactly_what_ktx_calls() {
    let t = repo("helm/ktx/templates/developer-rbac.yaml");
    same(
        "chart developer Role (allowRouterAccountCreation=false)",
        &rights(&role_rules(&render(&t, false), "ktx-developer")),
        &needed(&[Account::Developer]),
    );
    same(
        "chart developer Role (allowRouterAccountCreation=true)",
        &rights(&role_rules(&render(&t, true), "ktx-developer")),
        &needed(&[Account::Developer, Account::DeveloperWithoutChart]),
    );
}

#[test]
fn the_charts_janitor_and_router_roles_grant_exactly_what_they_call() {
    let j = render(&repo("helm/ktx/templates/janitor-rbac.yaml"), false);
    same(
        "chart janitor Role",
        &rights(&role_rules(&j, "ktx-janitor")),
        &needed(&[Account::Janitor]),
    );
    let r = render(&repo("helm/ktx/templates/router-rbac.yaml"), false);
    same(
        "chart router Role",
        &rights(&role_rules(&r, "ktx-router")),
        &needed(&[Account::Router]),
    );
}

/// The Role ktx creates for one router grants what the router calls, its ConfigMap by name.
#[test]
fn the_role_ktx_creates_for_a_router_grants_exactly_what_it_calls() {
    let names = ktx_names::ServiceNames::new("orders");
    let role = crate::objects::router::role(&names, "shop");
    let rules: Vec<Rule> = role
        .rules
        .unwrap_or_default()
        .into_iter()
        .map(|r| Rule {
            groups: r.api_groups.unwrap_or_default(),
            resources: r.resources.unwrap_or_default(),
            verbs: r.verbs,
            names: r.resource_names.unwrap_or_default(),
        })
        .collect();
    same(
        "router Role ktx creates",
        &rights(&rules),
        &needed(&[Account::Router]),
    );
    for r in &rules {
        if r.resources.iter().any(|x| x == "configmaps") {
            assert_eq!(
                r.names,
                [names.routes()],
                "the router reads only its own ConfigMap"
            );
        }
    }
}

/// The README's extra Role for `--env-secrets` grants exactly what that flag adds.
#[test]
fn the_readme_env_secrets_role_grants_exactly_what_env_secrets_calls() {
    let yaml = repo("README.md")
        .split("```yaml\n")
        .skip(1)
        .filter_map(|b| b.split_once("```").map(|(yaml, _)| yaml.to_string()))
        .find(|yaml| yaml.contains("name: ktx-env-secrets"))
        .expect("README.md has a ```yaml block with the Role ktx-env-secrets");
    same(
        "README.md ktx-env-secrets Role",
        &rights(&role_rules(&yaml, "ktx-env-secrets")),
        &needed(&[Account::DeveloperEnvSecrets]),
    );
}

#[test]
fn no_developer_role_reads_secrets() {
    let readme = rights(&role_rules(&readme_role(), "ktx-developer"));
    let t = repo("helm/ktx/templates/developer-rbac.yaml");
    for granted in [
        readme,
        rights(&role_rules(&render(&t, true), "ktx-developer")),
    ] {
        for verb in ["get", "list", "watch"] {
            assert!(!granted.contains(&(String::new(), "secrets".into(), verb.into())));
        }
    }
}

/// Nothing the janitor runs reads or deletes a Secret: a session's Secret names its Pod and
/// Lease as owners and goes with them (teardown.rs `remove_session`), so a janitor account
/// that is misused cannot touch the namespace's Secrets.
#[test]
fn the_janitor_has_no_right_on_secrets() {
    let j = render(&repo("helm/ktx/templates/janitor-rbac.yaml"), false);
    let granted = rights(&role_rules(&j, "ktx-janitor"));
    let on_secrets: Vec<_> = granted.iter().filter(|(_, r, _)| r == "secrets").collect();
    assert!(on_secrets.is_empty(), "chart janitor Role: {on_secrets:?}");
    let needed = needed(&[Account::Janitor]);
    assert!(
        !needed.iter().any(|(_, r, _)| r == "secrets"),
        "the janitor's table of calls names a Secret call"
    );
}
