//! The target workload container's environment, as the kubelet builds it, from the pod and the
//! ConfigMaps and Secrets it names: `envFrom` first, then `env` (a later name overrides an
//! earlier one), `$(VAR)` references in literal values expanded against what came before.
//!
//! Pure: [`container`] picks the container, [`needs`] says which ConfigMaps and Secrets to read,
//! [`resolve`] turns what was read into variables plus what was skipped and why, [`dotenv`]
//! writes them. Reading the objects is `lifecycle/workload_env.rs`'s job.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{ConfigMap, Container, EnvVar, Pod, Secret};

#[cfg(test)]
mod tests;

/// Why the environment cannot be written.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EnvError {
    #[error("pod {pod} has no containers")]
    NoContainers { pod: String },
    #[error("pod {pod} has no container {name:?}; its containers: {have}")]
    NoSuchContainer {
        pod: String,
        name: String,
        have: String,
    },
    #[error(
        "pod {pod} has several containers ({have}); say whose environment with --container NAME"
    )]
    SeveralContainers { pod: String, have: String },
    #[error("variable {var} refers to {kind} {name}, which does not exist (and is not optional)")]
    MissingObject {
        var: String,
        kind: &'static str,
        name: String,
    },
    #[error("variable {var} refers to key {key:?} of {kind} {name}, which it does not have (and is not optional)")]
    MissingKey {
        var: String,
        kind: &'static str,
        name: String,
        key: String,
    },
}

/// The container of `pod` whose environment is wanted: `name`, or the only one.
pub fn container<'a>(pod: &'a Pod, name: Option<&str>) -> Result<&'a Container, EnvError> {
    let pod_name = pod.metadata.name.clone().unwrap_or_default();
    let containers = pod
        .spec
        .as_ref()
        .map(|s| s.containers.as_slice())
        .unwrap_or_default();
    let have = || {
        containers
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    match (name, containers) {
        (_, []) => Err(EnvError::NoContainers { pod: pod_name }),
        (Some(n), cs) => cs
            .iter()
            .find(|c| c.name == n)
            .ok_or_else(|| EnvError::NoSuchContainer {
                pod: pod_name,
                name: n.to_string(),
                have: have(),
            }),
        (None, [only]) => Ok(only),
        (None, _) => Err(EnvError::SeveralContainers {
            pod: pod_name,
            have: have(),
        }),
    }
}

/// The ConfigMaps and Secrets a container's environment refers to.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Needs {
    pub config_maps: BTreeSet<String>,
    pub secrets: BTreeSet<String>,
}

/// What `c`'s environment refers to; Secrets only when `with_secrets`.
pub fn needs(c: &Container, with_secrets: bool) -> Needs {
    let mut n = Needs::default();
    for from in c.env_from.iter().flatten() {
        if let Some(r) = &from.config_map_ref {
            n.config_maps.insert(r.name.clone());
        }
        if let (Some(r), true) = (&from.secret_ref, with_secrets) {
            n.secrets.insert(r.name.clone());
        }
    }
    for v in c.env.iter().flatten() {
        let Some(from) = &v.value_from else { continue };
        if let Some(r) = &from.config_map_key_ref {
            n.config_maps.insert(r.name.clone());
        }
        if let (Some(r), true) = (&from.secret_key_ref, with_secrets) {
            n.secrets.insert(r.name.clone());
        }
    }
    n
}

/// The objects read for [`Needs`]: `None` for one that does not exist.
#[derive(Debug, Default)]
pub struct Sources {
    pub config_maps: BTreeMap<String, Option<ConfigMap>>,
    /// Empty unless Secrets were asked for.
    pub secrets: BTreeMap<String, Option<Secret>>,
    pub with_secrets: bool,
}

/// A variable left out of the file, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skipped {
    /// From a Secret, without `--env-secrets` (`var` is `envFrom SECRET` for a whole Secret).
    Secret { var: String },
    /// A `fieldRef` or `resourceFieldRef` ktx cannot compute on this machine.
    Field { var: String, path: String },
    /// A Secret's value that is not UTF-8 text.
    NotText { var: String },
}

/// The environment: variables in the order they were first defined, and what was skipped.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct WorkloadEnv {
    pub vars: Vec<(String, String)>,
    pub skipped: Vec<Skipped>,
}

impl WorkloadEnv {
    fn set(&mut self, key: String, value: String) {
        match self.vars.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => self.vars.push((key, value)),
        }
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.vars
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// One line for people naming what was left out, or `None`.
    pub fn warning(&self) -> Option<String> {
        let mut secrets = Vec::new();
        let mut fields = Vec::new();
        let mut binary = Vec::new();
        for s in &self.skipped {
            match s {
                Skipped::Secret { var } => secrets.push(var.as_str()),
                Skipped::Field { var, path } => fields.push(format!("{var} ({path})")),
                Skipped::NotText { var } => binary.push(var.as_str()),
            }
        }
        let mut parts = Vec::new();
        if !secrets.is_empty() {
            parts.push(format!(
                "from Secrets (add --env-secrets to include them): {}",
                secrets.join(", ")
            ));
        }
        if !fields.is_empty() {
            parts.push(format!(
                "computed by the kubelet, not known here: {}",
                fields.join(", ")
            ));
        }
        if !binary.is_empty() {
            parts.push(format!("not text: {}", binary.join(", ")));
        }
        (!parts.is_empty()).then(|| format!("workload variables left out — {}", parts.join("; ")))
    }
}

/// `c`'s environment in `pod`, as the kubelet would give it (less the variables the kubelet
/// adds itself: Service links, the image's own ENV).
pub fn resolve(pod: &Pod, c: &Container, src: &Sources) -> Result<WorkloadEnv, EnvError> {
    let mut env = WorkloadEnv::default();
    for from in c.env_from.iter().flatten() {
        let prefix = from.prefix.as_deref().unwrap_or_default();
        if let Some(r) = &from.config_map_ref {
            match src.config_maps.get(&r.name).and_then(Option::as_ref) {
                Some(cm) => {
                    for (k, v) in cm.data.iter().flatten() {
                        let key = format!("{prefix}{k}");
                        // The kubelet skips keys that are not variable names, too.
                        if is_env_name(&key) {
                            env.set(key, v.clone());
                        }
                    }
                }
                None if r.optional == Some(true) => {}
                None => {
                    return Err(EnvError::MissingObject {
                        var: format!("envFrom {}", r.name),
                        kind: "ConfigMap",
                        name: r.name.clone(),
                    })
                }
            }
        }
        if let Some(r) = &from.secret_ref {
            if !src.with_secrets {
                env.skipped.push(Skipped::Secret {
                    var: format!("envFrom Secret {}", r.name),
                });
                continue;
            }
            match src.secrets.get(&r.name).and_then(Option::as_ref) {
                Some(s) => {
                    for (k, v) in s.data.iter().flatten() {
                        let key = format!("{prefix}{k}");
                        if !is_env_name(&key) {
                            continue;
                        }
                        match String::from_utf8(v.0.clone()) {
                            Ok(text) => env.set(key, text),
                            Err(_) => env.skipped.push(Skipped::NotText { var: key }),
                        }
                    }
                }
                None if r.optional == Some(true) => {}
                None => {
                    return Err(EnvError::MissingObject {
                        var: format!("envFrom {}", r.name),
                        kind: "Secret",
                        name: r.name.clone(),
                    })
                }
            }
        }
    }
    for v in c.env.iter().flatten() {
        if let Some(value) = one(pod, v, src, &mut env)? {
            env.set(v.name.clone(), value);
        }
    }
    Ok(env)
}

/// The value of one `env` entry, `None` when it is skipped (recorded on `env`).
fn one(
    pod: &Pod,
    v: &EnvVar,
    src: &Sources,
    env: &mut WorkloadEnv,
) -> Result<Option<String>, EnvError> {
    let var = v.name.clone();
    let Some(from) = &v.value_from else {
        return Ok(Some(expand(v.value.as_deref().unwrap_or_default(), env)));
    };
    if let Some(r) = &from.config_map_key_ref {
        let optional = r.optional == Some(true);
        let Some(cm) = src.config_maps.get(&r.name).and_then(Option::as_ref) else {
            return match optional {
                true => Ok(None),
                false => Err(EnvError::MissingObject {
                    var,
                    kind: "ConfigMap",
                    name: r.name.clone(),
                }),
            };
        };
        return match cm.data.as_ref().and_then(|d| d.get(&r.key)) {
            Some(value) => Ok(Some(value.clone())),
            None if optional => Ok(None),
            None => Err(EnvError::MissingKey {
                var,
                kind: "ConfigMap",
                name: r.name.clone(),
                key: r.key.clone(),
            }),
        };
    }
    if let Some(r) = &from.secret_key_ref {
        if !src.with_secrets {
            env.skipped.push(Skipped::Secret { var });
            return Ok(None);
        }
        let optional = r.optional == Some(true);
        let Some(s) = src.secrets.get(&r.name).and_then(Option::as_ref) else {
            return match optional {
                true => Ok(None),
                false => Err(EnvError::MissingObject {
                    var,
                    kind: "Secret",
                    name: r.name.clone(),
                }),
            };
        };
        return match s.data.as_ref().and_then(|d| d.get(&r.key)) {
            Some(bytes) => match String::from_utf8(bytes.0.clone()) {
                Ok(text) => Ok(Some(text)),
                Err(_) => {
                    env.skipped.push(Skipped::NotText { var });
                    Ok(None)
                }
            },
            None if optional => Ok(None),
            None => Err(EnvError::MissingKey {
                var,
                kind: "Secret",
                name: r.name.clone(),
                key: r.key.clone(),
            }),
        };
    }
    if let Some(f) = &from.field_ref {
        return Ok(match field(pod, &f.field_path) {
            Some(value) => Some(value),
            None => {
                env.skipped.push(Skipped::Field {
                    var,
                    path: f.field_path.clone(),
                });
                None
            }
        });
    }
    if let Some(r) = &from.resource_field_ref {
        env.skipped.push(Skipped::Field {
            var,
            path: r.resource.clone(),
        });
        return Ok(None);
    }
    Ok(Some(String::new()))
}

/// A `fieldRef` of `pod` that this machine can know.
fn field(pod: &Pod, path: &str) -> Option<String> {
    let m = &pod.metadata;
    let status = pod.status.as_ref();
    let spec = pod.spec.as_ref();
    let keyed = |prefix: &str, map: Option<&BTreeMap<String, String>>| {
        let key = path
            .strip_prefix(prefix)?
            .strip_prefix("['")?
            .strip_suffix("']")?;
        Some(map?.get(key).cloned().unwrap_or_default())
    };
    match path {
        "metadata.name" => m.name.clone(),
        "metadata.namespace" => m.namespace.clone(),
        "metadata.uid" => m.uid.clone(),
        "spec.nodeName" => spec?.node_name.clone(),
        "spec.serviceAccountName" => spec?.service_account_name.clone(),
        "status.podIP" => status?.pod_ip.clone(),
        "status.hostIP" => status?.host_ip.clone(),
        "status.podIPs" => Some(
            status?
                .pod_ips
                .iter()
                .flatten()
                .map(|ip| ip.ip.clone())
                .collect::<Vec<_>>()
                .join(","),
        ),
        _ => keyed("metadata.labels", m.labels.as_ref())
            .or_else(|| keyed("metadata.annotations", m.annotations.as_ref())),
    }
}

/// The kubelet's `$(VAR)` expansion: a defined VAR is replaced, `$$` is `$`, anything else stays.
fn expand(s: &str, env: &WorkloadEnv) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some((name, tail)) = after
            .strip_prefix('(')
            .and_then(|a| a.split_once(')'))
            .filter(|(name, _)| env.get(name).is_some())
        {
            out.push_str(env.get(name).unwrap_or_default());
            rest = tail;
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// A name the kubelet accepts for a variable: `[-._a-zA-Z][-._a-zA-Z0-9]*`.
fn is_env_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || "-._".contains(c))
        && chars.all(|c| c.is_ascii_alphanumeric() || "-._".contains(c))
}

/// `vars` as a dotenv file: `KEY=value` per line. A value of only letters, digits and
/// `_-.,:/@%+=` is written bare; one without `'`, `\` or a line break in single quotes (taken
/// literally by every dotenv reader); anything else in double quotes with `\\`, `\"`, `\n` and
/// `\r` escapes.
pub fn dotenv(vars: &[(String, String)]) -> String {
    let mut out = String::new();
    for (k, v) in vars {
        out.push_str(k);
        out.push('=');
        if v.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.,:/@%+=".contains(c))
        {
            out.push_str(v);
        } else if !v.contains(['\'', '\\', '\n', '\r']) {
            out.push('\'');
            out.push_str(v);
            out.push('\'');
        } else {
            out.push('"');
            for c in v.chars() {
                match c {
                    '\\' => out.push_str("\\\\"),
                    '"' => out.push_str("\\\""),
                    '\n' => out.push_str("\\n"),
                    '\r' => out.push_str("\\r"),
                    c => out.push(c),
                }
            }
            out.push('"');
        }
        out.push('\n');
    }
    out
}
