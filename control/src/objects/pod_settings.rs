//! kt-connect's pod knobs (`-f/--forceUpdate`, `--imagePullSecret`, `--serviceAccount`,
//! `--nodeSelector`, `-l/--withLabel`, `--withAnnotation`, `--podQuota`) as one checked value,
//! applied to every pod ktx builds: the router's pod template and the shadow pods.
//!
//! The knobs only add to what ktx builds: they never touch the security contexts (Pod Security
//! "restricted" stays whole), never replace one of ktx's own labels or annotations (its keys are
//! refused when parsed, and ktx's value wins if one slips through), and the shadow keeps its
//! ServiceAccount token unmounted whatever account it runs as.
//!
//! Parsing of the flag text lives here too ([`parse_key_value`], [`parse_quota`]), so the CLI
//! only names the flags.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, LocalObjectReference, PodSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// The pod knobs of one invocation. `Default` is "nothing given": the pods stay as ktx builds
/// them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodSettings {
    /// `imagePullPolicy: Always` (kt-connect's `-f/--forceUpdate`).
    pub always_pull: bool,
    /// `imagePullSecrets` of every pod (and of the router's ServiceAccount).
    pub pull_secrets: Vec<String>,
    /// The shadow pods' ServiceAccount (their token stays unmounted).
    pub service_account: Option<String>,
    pub node_selector: BTreeMap<String, String>,
    /// Extra pod labels.
    pub labels: BTreeMap<String, String>,
    /// Extra pod annotations.
    pub annotations: BTreeMap<String, String>,
    pub quota: Quota,
}

/// `--podQuota 0.5c,512m`: the CPU and memory of each container, as both request and limit
/// (kt-connect's meaning). What is not given keeps ktx's own request and limit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Quota {
    /// A Kubernetes CPU quantity, e.g. `0.5`, `500m`.
    pub cpu: Option<String>,
    /// A Kubernetes memory quantity, e.g. `512Mi`.
    pub memory: Option<String>,
}

/// Which pod the settings go to: a few knobs are the shadow's only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodRole {
    Router,
    Shadow,
}

impl PodSettings {
    /// Adds the settings to a pod's metadata and spec built by ktx.
    pub fn apply(&self, role: PodRole, meta: &mut ObjectMeta, spec: &mut PodSpec) {
        add_missing(&mut meta.labels, &self.labels);
        add_missing(&mut meta.annotations, &self.annotations);
        add_missing(&mut spec.node_selector, &self.node_selector);
        if !self.pull_secrets.is_empty() {
            spec.image_pull_secrets = Some(self.pull_secret_refs());
        }
        if role == PodRole::Shadow {
            if let Some(account) = &self.service_account {
                spec.service_account_name = Some(account.clone());
                spec.automount_service_account_token = Some(false);
            }
        }
        for c in &mut spec.containers {
            self.apply_container(c);
        }
    }

    /// The `imagePullSecrets` list of a pod or ServiceAccount.
    pub fn pull_secret_refs(&self) -> Vec<LocalObjectReference> {
        self.pull_secrets
            .iter()
            .map(|name| LocalObjectReference { name: name.clone() })
            .collect()
    }

    fn apply_container(&self, c: &mut Container) {
        if self.always_pull {
            c.image_pull_policy = Some("Always".into());
        }
        let r = c.resources.get_or_insert_with(Default::default);
        for (key, value) in [("cpu", &self.quota.cpu), ("memory", &self.quota.memory)] {
            let Some(value) = value else { continue };
            for list in [&mut r.requests, &mut r.limits] {
                list.get_or_insert_with(BTreeMap::new)
                    .insert(key.to_string(), Quantity(value.clone()));
            }
        }
    }
}

/// Adds the pairs of `extra` whose key `map` does not have yet (ktx's own entries win).
fn add_missing(map: &mut Option<BTreeMap<String, String>>, extra: &BTreeMap<String, String>) {
    if extra.is_empty() {
        return;
    }
    let map = map.get_or_insert_with(BTreeMap::new);
    for (k, v) in extra {
        map.entry(k.clone()).or_insert_with(|| v.clone());
    }
}

/// Key prefixes that name ktx's own labels and annotations: a knob may not set them (they say
/// which objects are ktx's and whose, see `crate::plan::ownership`).
const RESERVED: &[&str] = &["ktx.dev/", "app.kubernetes.io/managed-by"];

/// What a `KEY=VALUE` flag carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PairKind {
    /// A label or node selector: the value is a label value.
    Label,
    /// An annotation: any value.
    Annotation,
}

/// `KEY=VALUE` of `--withLabel`, `--withAnnotation` and `--nodeSelector`, checked as Kubernetes
/// checks label keys (and label values, for labels).
pub fn parse_key_value(s: &str, kind: PairKind) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not KEY=VALUE, e.g. team=orders"))?;
    check_key(k).map_err(|why| format!("{k:?} is not a label key: {why}"))?;
    if RESERVED.iter().any(|r| k.starts_with(r)) {
        return Err(format!(
            "{k:?} is one of ktx's own keys (ktx.dev/*, app.kubernetes.io/managed-by), which say whose the pods are: pick another key"
        ));
    }
    if kind == PairKind::Label {
        if v.len() > 63 {
            return Err(format!("the value of {k} is longer than 63 characters"));
        }
        if !v.is_empty() && !is_label_name(v) {
            return Err(format!(
                "{v:?} is not a label value: letters, digits, '-', '_' and '.', starting and ending with a letter or digit"
            ));
        }
    }
    Ok((k.to_string(), v.to_string()))
}

fn check_key(k: &str) -> Result<(), &'static str> {
    let (prefix, name) = match k.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    if let Some(p) = prefix {
        let dns = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        if p.is_empty() || p.len() > 253 || !p.split('.').all(dns) {
            return Err("the prefix before '/' must be a DNS subdomain, e.g. example.com");
        }
    }
    if name.is_empty() || name.len() > 63 || !is_label_name(name) {
        return Err("at most 63 letters, digits, '-', '_' and '.', starting and ending with a letter or digit");
    }
    Ok(())
}

fn is_label_name(s: &str) -> bool {
    let edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    edge(s.chars().next())
        && edge(s.chars().last())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// `--podQuota`: kt-connect's `0.5c,512m` (a number with `c` is CPUs; with `k`, `m` or `g` it is
/// KiB, MiB or GiB of memory), in any order, each at most once.
pub fn parse_quota(s: &str) -> Result<Quota, String> {
    let mut q = Quota::default();
    for part in s.split(',').map(str::trim) {
        let bad = || {
            format!(
                "{part:?} in --podQuota is neither CPUs like 0.5c nor memory like 512m (k, m or g for KiB, MiB, GiB); e.g. --podQuota 0.5c,512m"
            )
        };
        // The unit is the last character, whatever its width (`1é` must not split inside é).
        let split = part.char_indices().last().ok_or_else(bad)?.0;
        let (num, unit) = part.split_at(split);
        let n: f64 = num.parse().map_err(|_| bad())?;
        if !n.is_finite() || n <= 0.0 || !num.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
            return Err(bad());
        }
        let slot = match unit {
            "c" | "C" => (&mut q.cpu, num.to_string()),
            "k" | "K" => (&mut q.memory, format!("{num}Ki")),
            "m" | "M" => (&mut q.memory, format!("{num}Mi")),
            "g" | "G" => (&mut q.memory, format!("{num}Gi")),
            _ => return Err(bad()),
        };
        if slot.0.is_some() {
            return Err(format!(
                "--podQuota {s:?} gives the {} twice",
                if unit.eq_ignore_ascii_case("c") {
                    "CPU"
                } else {
                    "memory"
                }
            ));
        }
        *slot.0 = Some(slot.1);
    }
    Ok(q)
}

#[cfg(test)]
mod tests;
