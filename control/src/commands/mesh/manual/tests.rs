//! The manual session's label and the shadow pod it labels.

use clap::Parser;

use super::*;
use crate::cli::{Cli, Command};
use crate::objects::shadow;
use crate::plan::ports::{ExposedPort, ListenPort};
use crate::plan::rule;

fn plan_of(line: &[&str]) -> RulePlan {
    let args: Vec<&str> = [
        "ktx", "mesh", "tomcat", "--expose", "8080", "--mode", "manual",
    ]
    .into_iter()
    .chain(line.iter().copied())
    .collect();
    let Command::Mesh(m) = Cli::try_parse_from(args).unwrap().command else {
        panic!("not mesh")
    };
    rule::plan(&m.rule, || "abcde".to_string()).unwrap()
}

#[test]
fn the_mark_becomes_a_lower_case_label() {
    assert_eq!(
        mark_label(&plan_of(&["--versionMark", "ci"])).unwrap(),
        ("version".into(), "ci".into())
    );
    assert_eq!(
        mark_label(&plan_of(&["--versionMark", "ver:"])).unwrap(),
        ("ver".into(), "abcde".into())
    );
    assert_eq!(
        mark_label(&plan_of(&[])).unwrap(),
        ("version".into(), "abcde".into())
    );
}

#[test]
fn rules_a_label_cannot_carry_are_refused_with_the_way_out() {
    let e = mark_label(&plan_of(&["--header-present", "x-debug"]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("need --mode auto"), "{e}");
    let e = mark_label(&plan_of(&["--versionMark", "ci", "--method", "GET"]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("need --mode auto"), "{e}");
    let e = mark_label(&plan_of(&["--versionMark", "ci-"]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("as a label"), "{e}");
}

#[test]
fn the_shadow_pod_carries_the_workloads_labels_and_the_mark() {
    let selector = BTreeMap::from([("app".to_string(), "tomcat".to_string())]);
    let mut pod = crate::objects::pod_settings::PodSettings::default();
    pod.labels.extend(shadow_labels(&selector, "version", "ci"));
    let t = [ListenPort {
        number: 8080,
        name: None,
    }];
    let e = [ExposedPort {
        local: 8080,
        port: 8080,
        target: 8080,
    }];
    let built = shadow::pod(&ShadowParams {
        name: "tomcat-ktx-mesh-ci",
        namespace: "shop",
        service: "tomcat",
        session: "ci",
        mode: mode::MESH,
        image: "s:1",
        targets: &t,
        exposed: &e,
        not_taken: NotTaken::Reject,
        pod: &pod,
    });
    let labels = built.metadata.labels.unwrap();
    assert_eq!(labels["app"], "tomcat");
    assert_eq!(labels["version"], "ci");
    // Still ktx's, of this session: ownership and cleanup find it.
    assert_eq!(labels["app.kubernetes.io/managed-by"], "ktx");
    assert_eq!(labels["ktx.dev/session"], "ci");
}
