//! The team's defaults in the namespace: ConfigMap `ktx-defaults` (the chart's `defaults`
//! value), one data entry per key, e.g. `routerImage: registry.example.com/ktx-router:0.1.0`.
//! It ranks under a developer's own profile and file and over the built-in defaults.
//!
//! A missing ConfigMap, or no right to read it, is normal (debug log); an entry that is not a
//! key, or whose value the flag would refuse, is skipped with a warning naming the ConfigMap.
//! Keys that ktx needs to reach the cluster (namespace, context, kubeconfig, API timeouts)
//! cannot come from inside it.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;

use super::file::{Entry, Values};
use super::keys::{Keys, CONNECTION_KEYS};
use crate::cluster::api::Kube;

/// The ConfigMap's name.
pub const NAME: &str = "ktx-defaults";

/// The ConfigMap's usable values, and a warning per entry it skipped. `None`: not there or
/// not readable.
pub async fn read(kube: &Kube, keys: &Keys) -> Option<(Values, Vec<String>)> {
    let cm = match kube.api::<ConfigMap>().get_opt(NAME).await {
        Ok(Some(cm)) => cm,
        Ok(None) => {
            tracing::debug!(namespace = %kube.namespace, "no ConfigMap {NAME}: no namespace defaults");
            return None;
        }
        Err(e) => {
            tracing::debug!(namespace = %kube.namespace, error = %e, "ConfigMap {NAME} not read: no namespace defaults");
            return None;
        }
    };
    Some(parse(
        &cm.data.unwrap_or_default(),
        &format!("{}/{NAME}", kube.namespace),
        keys,
    ))
}

/// The usable entries of `data` (ConfigMap `name`) and a warning per skipped one.
pub fn parse(data: &BTreeMap<String, String>, name: &str, keys: &Keys) -> (Values, Vec<String>) {
    let mut values = Values::default();
    let mut warnings = Vec::new();
    for (k, v) in data {
        let Some(key) = keys.find(k) else {
            warnings.push(format!(
                "ConfigMap {name}: key {k:?} skipped: not a key (keys: {})",
                keys.list()
            ));
            continue;
        };
        if CONNECTION_KEYS.contains(&key.id.as_str()) {
            warnings.push(format!(
                "ConfigMap {name}: key {k:?} skipped: ktx needs it before it can read the ConfigMap (set it in `ktx config` or a flag)"
            ));
            continue;
        }
        if let Err(reason) = key.check(v) {
            warnings.push(format!("ConfigMap {name}: key {k:?} skipped: {reason}"));
            continue;
        }
        values.0.insert(
            key.id.clone(),
            Entry {
                value: v.clone(),
                line: 0,
            },
        );
    }
    (values, warnings)
}
