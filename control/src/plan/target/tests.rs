//! kt-connect's target spellings, and a Deployment resolved to the one Service that selects it.

use k8s_openapi::api::core::v1::ServiceSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::*;

#[test]
fn kt_connect_spellings_parse() {
    for (s, want) in [
        ("tomcat", Target::Service("tomcat".into())),
        ("svc/tomcat", Target::Service("tomcat".into())),
        ("service/tomcat", Target::Service("tomcat".into())),
        ("deployment/tomcat", Target::Deployment("tomcat".into())),
        ("deploy/tomcat", Target::Deployment("tomcat".into())),
    ] {
        assert_eq!(s.parse::<Target>(), Ok(want), "{s}");
    }
}

#[test]
fn unknown_kinds_and_empty_names_say_what_to_write() {
    let e = "statefulset/db".parse::<Target>().unwrap_err();
    assert!(
        e.contains("svc/NAME") && e.contains("deployment/NAME"),
        "{e}"
    );
    let e = "svc/".parse::<Target>().unwrap_err();
    assert!(e.contains("names no object"), "{e}");
}

fn svc(name: &str, selector: &[(&str, &str)], ktx: bool) -> Service {
    let labels =
        ktx.then(|| BTreeMap::from([(LABEL_MANAGED_BY.to_string(), MANAGED_BY_VALUE.to_string())]));
    Service {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels,
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            selector: Some(
                selector
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..Default::default()
        }),
        status: None,
    }
}

#[test]
fn a_deployment_stands_for_the_one_service_selecting_it() {
    let pods = BTreeMap::from([
        ("app".to_string(), "tomcat".to_string()),
        ("tier".to_string(), "web".to_string()),
    ]);
    let services = [
        svc("tomcat", &[("app", "tomcat")], false),
        svc("other", &[("app", "other")], false),
        // ktx's own Services (stuntman, shadow) select the same pods: never the target.
        svc("tomcat-ktx-stuntman", &[("app", "tomcat")], true),
    ];
    assert_eq!(
        one_service("ns", "tomcat", &pods, &services).unwrap(),
        "tomcat"
    );
}

#[test]
fn none_or_several_services_is_an_error_listing_them() {
    let pods = BTreeMap::from([("app".to_string(), "tomcat".to_string())]);
    let e = one_service("ns", "tomcat", &pods, &[svc("x", &[("app", "x")], false)])
        .unwrap_err()
        .to_string();
    assert!(e.contains("no Service") && e.contains("svc/NAME"), "{e}");
    let two = [
        svc("tomcat", &[("app", "tomcat")], false),
        svc("tomcat-admin", &[("app", "tomcat")], false),
    ];
    let e = one_service("ns", "tomcat", &pods, &two)
        .unwrap_err()
        .to_string();
    assert!(e.contains("several Services: tomcat, tomcat-admin"), "{e}");
}
