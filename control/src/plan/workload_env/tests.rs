use k8s_openapi::api::core::v1::{
    ConfigMapEnvSource, ConfigMapKeySelector, EnvFromSource, EnvVarSource, ObjectFieldSelector,
    PodIP, PodSpec, PodStatus, ResourceFieldSelector, SecretEnvSource, SecretKeySelector,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::ByteString;

use super::*;

fn literal(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        value_from: None,
    }
}

fn from(name: &str, source: EnvVarSource) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: None,
        value_from: Some(source),
    }
}

fn cm_key(name: &str, cm: &str, key: &str, optional: bool) -> EnvVar {
    from(
        name,
        EnvVarSource {
            config_map_key_ref: Some(ConfigMapKeySelector {
                name: cm.into(),
                key: key.into(),
                optional: Some(optional),
            }),
            ..Default::default()
        },
    )
}

fn secret_key(name: &str, secret: &str, key: &str) -> EnvVar {
    from(
        name,
        EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.into(),
                key: key.into(),
                optional: None,
            }),
            ..Default::default()
        },
    )
}

fn field_ref(name: &str, path: &str) -> EnvVar {
    from(
        name,
        EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.into(),
                api_version: None,
            }),
            ..Default::default()
        },
    )
}

fn configmap(name: &str, data: &[(&str, &str)]) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        data: Some(
            data.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ),
        ..Default::default()
    }
}

fn secret(data: &[(&str, &[u8])]) -> Secret {
    Secret {
        data: Some(
            data.iter()
                .map(|(k, v)| (k.to_string(), ByteString(v.to_vec())))
                .collect(),
        ),
        ..Default::default()
    }
}

fn container(name: &str, env: Vec<EnvVar>, env_from: Vec<EnvFromSource>) -> Container {
    Container {
        name: name.into(),
        env: Some(env),
        env_from: Some(env_from),
        ..Default::default()
    }
}

fn pod(containers: Vec<Container>) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some("orders-7d9f-abcde".into()),
            namespace: Some("shop".into()),
            labels: Some(BTreeMap::from([("app".into(), "orders".into())])),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers,
            node_name: Some("node-1".into()),
            ..Default::default()
        }),
        status: Some(PodStatus {
            pod_ip: Some("10.1.2.3".into()),
            pod_ips: Some(vec![PodIP {
                ip: "10.1.2.3".into(),
            }]),
            ..Default::default()
        }),
    }
}

fn sources(cms: Vec<(&str, Option<ConfigMap>)>) -> Sources {
    Sources {
        config_maps: cms.into_iter().map(|(n, c)| (n.to_string(), c)).collect(),
        ..Default::default()
    }
}

fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn literals_configmap_refs_and_fields_resolve_like_the_kubelet() {
    let c = container(
        "app",
        vec![
            literal("MODE", "prod"),
            cm_key("DB_HOST", "settings", "db.host", false),
            literal("DB_URL", "postgres://$(DB_HOST):5432/$(NOPE)?x=$$(DB_HOST)"),
            field_ref("POD_NAME", "metadata.name"),
            field_ref("POD_NS", "metadata.namespace"),
            field_ref("APP", "metadata.labels['app']"),
            field_ref("POD_IP", "status.podIP"),
            // Overrides what envFrom gave.
            literal("LEVEL", "debug"),
        ],
        vec![EnvFromSource {
            config_map_ref: Some(ConfigMapEnvSource {
                name: "common".into(),
                optional: None,
            }),
            prefix: Some("C_".into()),
            secret_ref: None,
        }],
    );
    let mut c = c;
    // The prefix applies, and LEVEL without a prefix comes from a second envFrom.
    c.env_from.as_mut().unwrap().push(EnvFromSource {
        config_map_ref: Some(ConfigMapEnvSource {
            name: "levels".into(),
            optional: None,
        }),
        prefix: None,
        secret_ref: None,
    });
    let p = pod(vec![c.clone()]);
    assert_eq!(
        needs(&c, false).config_maps,
        BTreeSet::from(["common".into(), "levels".into(), "settings".into()])
    );
    let src = sources(vec![
        (
            "settings",
            Some(configmap("settings", &[("db.host", "db.shop")])),
        ),
        (
            "common",
            Some(configmap("common", &[("REGION", "eu"), ("bad key", "x")])),
        ),
        ("levels", Some(configmap("levels", &[("LEVEL", "info")]))),
    ]);
    let env = resolve(&p, &c, &src).unwrap();
    assert_eq!(
        env.vars,
        vars(&[
            ("C_REGION", "eu"),
            ("LEVEL", "debug"),
            ("MODE", "prod"),
            ("DB_HOST", "db.shop"),
            ("DB_URL", "postgres://db.shop:5432/$(NOPE)?x=$(DB_HOST)"),
            ("POD_NAME", "orders-7d9f-abcde"),
            ("POD_NS", "shop"),
            ("APP", "orders"),
            ("POD_IP", "10.1.2.3"),
        ])
    );
    assert!(env.skipped.is_empty());
    assert_eq!(env.warning(), None);
}

#[test]
fn a_missing_optional_key_is_skipped_a_required_one_named() {
    let c = container(
        "app",
        vec![
            cm_key("A", "settings", "a", true),
            cm_key("B", "absent", "b", true),
        ],
        vec![EnvFromSource {
            config_map_ref: Some(ConfigMapEnvSource {
                name: "absent".into(),
                optional: Some(true),
            }),
            ..Default::default()
        }],
    );
    let p = pod(vec![c.clone()]);
    let src = sources(vec![
        ("settings", Some(configmap("settings", &[]))),
        ("absent", None),
    ]);
    assert_eq!(resolve(&p, &c, &src).unwrap().vars, vars(&[]));

    let c = container("app", vec![cm_key("A", "settings", "a", false)], vec![]);
    let e = resolve(&p, &c, &src).unwrap_err();
    assert_eq!(
        e.to_string(),
        "variable A refers to key \"a\" of ConfigMap settings, which it does not have (and is not optional)"
    );
    let c = container("app", vec![cm_key("B", "absent", "b", false)], vec![]);
    assert!(matches!(
        resolve(&p, &c, &src),
        Err(EnvError::MissingObject { var, kind: "ConfigMap", name }) if var == "B" && name == "absent"
    ));
}

#[test]
fn secrets_only_when_asked_and_skipped_with_one_warning_otherwise() {
    let c = container(
        "app",
        vec![
            secret_key("PASSWORD", "db", "password"),
            literal("USER", "shop"),
        ],
        vec![EnvFromSource {
            secret_ref: Some(SecretEnvSource {
                name: "api-keys".into(),
                optional: None,
            }),
            ..Default::default()
        }],
    );
    let p = pod(vec![c.clone()]);
    assert!(needs(&c, false).secrets.is_empty());
    assert_eq!(
        needs(&c, true).secrets,
        BTreeSet::from(["api-keys".into(), "db".into()])
    );
    let without = resolve(&p, &c, &Sources::default()).unwrap();
    assert_eq!(without.vars, vars(&[("USER", "shop")]));
    assert_eq!(
        without.warning().unwrap(),
        "workload variables left out — from Secrets (add --env-secrets to include them): envFrom Secret api-keys, PASSWORD"
    );

    let src = Sources {
        secrets: BTreeMap::from([
            (
                "db".into(),
                Some(secret(&[("password", b"hunter2"), ("raw", &[0xff])])),
            ),
            ("api-keys".into(), Some(secret(&[("TOKEN", b"t0k")]))),
        ]),
        with_secrets: true,
        ..Default::default()
    };
    let with = resolve(&p, &c, &src).unwrap();
    assert_eq!(
        with.vars,
        vars(&[("TOKEN", "t0k"), ("PASSWORD", "hunter2"), ("USER", "shop")])
    );
    assert_eq!(with.warning(), None);
}

#[test]
fn fields_the_kubelet_computes_are_skipped_with_a_warning() {
    let c = container(
        "app",
        vec![
            field_ref("HOST", "status.hostIP"),
            from(
                "CPU",
                EnvVarSource {
                    resource_field_ref: Some(ResourceFieldSelector {
                        resource: "limits.cpu".into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            ),
            field_ref("NODE", "spec.nodeName"),
        ],
        vec![],
    );
    let p = pod(vec![c.clone()]);
    let env = resolve(&p, &c, &Sources::default()).unwrap();
    assert_eq!(env.vars, vars(&[("NODE", "node-1")]));
    assert_eq!(
        env.warning().unwrap(),
        "workload variables left out — computed by the kubelet, not known here: HOST (status.hostIP), CPU (limits.cpu)"
    );
}

#[test]
fn the_container_is_the_only_one_or_the_named_one() {
    let one = pod(vec![container("app", vec![], vec![])]);
    assert_eq!(container_of(&one, None), Ok("app"));
    let two = pod(vec![
        container("app", vec![], vec![]),
        container("sidecar", vec![], vec![]),
    ]);
    assert_eq!(container_of(&two, Some("sidecar")), Ok("sidecar"));
    assert_eq!(
        super::container(&two, None).unwrap_err().to_string(),
        "pod orders-7d9f-abcde has several containers (app, sidecar); say whose environment with --container NAME"
    );
    assert_eq!(
        super::container(&two, Some("web")).unwrap_err().to_string(),
        "pod orders-7d9f-abcde has no container \"web\"; its containers: app, sidecar"
    );
}

fn container_of<'a>(p: &'a Pod, name: Option<&str>) -> Result<&'a str, EnvError> {
    super::container(p, name).map(|c| c.name.as_str())
}

#[test]
fn dotenv_quotes_only_what_needs_it() {
    let text = dotenv(&vars(&[
        ("PLAIN", "db.shop:5432"),
        ("EMPTY", ""),
        ("SPACES", "a b $HOME \"q\""),
        ("TRICKY", "it's\\a\nline"),
    ]));
    assert_eq!(
        text,
        "PLAIN=db.shop:5432\nEMPTY=\nSPACES='a b $HOME \"q\"'\nTRICKY=\"it's\\\\a\\nline\"\n"
    );
}
