//! The routes ConfigMap as a source of route-table text: its key `routes.yaml` is published as
//! a [`RoutesText`] each time it changes.
//!
//! A ConfigMap without the key, a deleted ConfigMap, or one not created yet publishes nothing:
//! the route-table task keeps the last good table (and stays not ready until there is one).
//! Checking the text is [`crate::routes`]'s job, not this module's.

use ::kube::runtime::watcher::Event;
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use tokio::sync::watch;

use super::{Events, Watched};
use crate::routes::RoutesText;

/// Why a ConfigMap holds no route table.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoRoutes {
    #[error("has no key {key:?} in data")]
    MissingKey { key: &'static str },
    #[error("has key {key:?} only in binaryData; put the table in data")]
    BinaryKey { key: &'static str },
}

/// The route table text of `cm`, labelled with `origin` (e.g. `configmap NS/NAME`).
pub fn routes_text(cm: &ConfigMap, origin: &str) -> Result<RoutesText, NoRoutes> {
    let key = ktx_names::ROUTES_KEY;
    match cm.data.as_ref().and_then(|d| d.get(key)) {
        Some(text) => Ok(RoutesText {
            origin: origin.to_string(),
            text: text.clone(),
        }),
        None if cm.binary_data.as_ref().is_some_and(|d| d.contains_key(key)) => {
            Err(NoRoutes::BinaryKey { key })
        }
        None => Err(NoRoutes::MissingKey { key }),
    }
}

/// Publishes the table text of the watched ConfigMap (the stream is filtered to one name) when
/// it differs from the last one published; a relist that finds the same text sends nothing.
pub async fn run(
    mut events: Events<ConfigMap>,
    watched: Watched,
    origin: String,
    out: watch::Sender<Option<RoutesText>>,
) {
    let mut failing = false;
    // Whether the current (re)list has shown the ConfigMap, to notice one that is gone.
    let mut seen = false;
    while let Some(r) = events.next().await {
        if out.is_closed() {
            return;
        }
        let Some(event) = watched.check(r, &mut failing) else {
            continue;
        };
        match event {
            Event::Init => seen = false,
            Event::InitApply(cm) | Event::Apply(cm) => {
                seen = true;
                match routes_text(&cm, &origin) {
                    Ok(t) => {
                        let sent = out.send_if_modified(|cur| {
                            if cur.as_ref().is_some_and(|c| c.text == t.text) {
                                return false;
                            }
                            *cur = Some(t);
                            true
                        });
                        if sent {
                            tracing::debug!(%origin, "route table text changed");
                        }
                    }
                    Err(e) => {
                        tracing::warn!(%origin, error = %e, "routes ConfigMap holds no table; keeping the last one")
                    }
                }
            }
            Event::InitDone if !seen => {
                tracing::warn!(%origin, "routes ConfigMap not found; keeping the last table until it exists (ktx creates it with the router)")
            }
            Event::InitDone => {}
            Event::Delete(_) => {
                tracing::warn!(%origin, "routes ConfigMap deleted; keeping the last table")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::ByteString;

    use super::*;
    use crate::kube::testing;

    fn cm(data: &[(&str, &str)]) -> ConfigMap {
        ConfigMap {
            data: Some(
                data.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..Default::default()
        }
    }

    #[test]
    fn the_routes_key_becomes_text_with_its_origin() {
        let t = routes_text(
            &cm(&[("routes.yaml", "rules: []\n"), ("other", "x")]),
            "configmap dev/r",
        )
        .unwrap();
        assert_eq!(t.origin, "configmap dev/r");
        assert_eq!(t.text, "rules: []\n");
    }

    #[test]
    fn a_missing_key_says_which() {
        assert_eq!(
            routes_text(&cm(&[("other", "x")]), "o").unwrap_err(),
            NoRoutes::MissingKey { key: "routes.yaml" }
        );
        assert_eq!(
            routes_text(&ConfigMap::default(), "o")
                .unwrap_err()
                .to_string(),
            "has no key \"routes.yaml\" in data"
        );
        let binary = ConfigMap {
            binary_data: Some(BTreeMap::from([(
                "routes.yaml".to_string(),
                ByteString(b"rules: []".to_vec()),
            )])),
            ..Default::default()
        };
        assert_eq!(
            routes_text(&binary, "o").unwrap_err(),
            NoRoutes::BinaryKey { key: "routes.yaml" }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_task_publishes_changes_and_keeps_the_last_text_otherwise() {
        let (feed, events) = testing::feed();
        let (tx, mut rx) = watch::channel(None);
        let watched = Watched::new("ConfigMap", "configmaps", "dev");
        tokio::spawn(run(events, watched, "configmap dev/r".into(), tx));
        let text = |rx: &mut watch::Receiver<Option<RoutesText>>| {
            rx.borrow_and_update().as_ref().map(|t| t.text.clone())
        };

        // Not created yet: nothing to publish.
        feed.send(Ok(Event::Init)).unwrap();
        feed.send(Ok(Event::InitDone)).unwrap();
        testing::idle().await;
        assert!(!rx.has_changed().unwrap());

        feed.send(Ok(Event::Apply(cm(&[("routes.yaml", "v1")]))))
            .unwrap();
        testing::idle().await;
        assert_eq!(text(&mut rx), Some("v1".into()));
        assert_eq!(rx.borrow().as_ref().unwrap().origin, "configmap dev/r");

        // A relist with the same text, an unrelated key change, a key removed, a deletion:
        // none of them replaces the last text.
        feed.send(Ok(Event::Init)).unwrap();
        feed.send(Ok(Event::InitApply(cm(&[("routes.yaml", "v1")]))))
            .unwrap();
        feed.send(Ok(Event::InitDone)).unwrap();
        feed.send(Ok(Event::Apply(cm(&[("routes.yaml", "v1"), ("x", "y")]))))
            .unwrap();
        feed.send(Ok(Event::Apply(cm(&[("x", "y")])))).unwrap();
        feed.send(Ok(Event::Delete(cm(&[("x", "y")])))).unwrap();
        testing::idle().await;
        assert!(!rx.has_changed().unwrap());

        feed.send(Ok(Event::Apply(cm(&[("routes.yaml", "v2")]))))
            .unwrap();
        testing::idle().await;
        assert_eq!(text(&mut rx), Some("v2".into()));
    }
}
