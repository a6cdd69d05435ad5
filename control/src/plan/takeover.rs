//! Service S's selector, taken over and given back — pure edits of the Service object, applied
//! by the caller with optimistic concurrency.
//!
//! Taking over writes the original selector (JSON) into `ktx.dev/original-selector` and the mode
//! into `ktx.dev/mode` in the SAME update that changes the selector, so there is never a moment
//! where S points elsewhere and the way back is not stored on S itself. Giving back sets the
//! selector from that annotation and removes both annotations, leaving S as it was.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Service;
use ktx_names::{ANNOTATION_MODE, ANNOTATION_ORIGINAL_SELECTOR};

use crate::error::{Error, Result};

pub type Selector = BTreeMap<String, String>;

/// Who S belongs to right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Not taken over; its own selector.
    Free { selector: Selector },
    /// Taken over in `mode` ([`ktx_names::mode`]); `original` is the saved selector.
    Taken { mode: String, original: Selector },
}

fn name(svc: &Service) -> String {
    svc.metadata.name.clone().unwrap_or_default()
}

fn annotation<'a>(svc: &'a Service, key: &str) -> Option<&'a String> {
    svc.metadata.annotations.as_ref()?.get(key)
}

/// Reads S's state. A Service with neither a selector nor a saved one cannot be taken over.
pub fn state(svc: &Service, namespace: &str) -> Result<State> {
    if let Some(saved) = annotation(svc, ANNOTATION_ORIGINAL_SELECTOR) {
        let original: Selector = serde_json::from_str(saved).map_err(|e| Error::BadAnnotation {
            service: name(svc),
            annotation: ANNOTATION_ORIGINAL_SELECTOR,
            reason: e.to_string(),
        })?;
        let mode = annotation(svc, ANNOTATION_MODE)
            .cloned()
            .unwrap_or_else(|| ktx_names::mode::MESH.to_string());
        return Ok(State::Taken { mode, original });
    }
    match svc.spec.as_ref().and_then(|s| s.selector.clone()) {
        Some(selector) if !selector.is_empty() => Ok(State::Free { selector }),
        _ => Err(Error::NoSelector {
            namespace: namespace.to_string(),
            service: name(svc),
        }),
    }
}

/// Points S at `selector` in `mode`, saving the original selector unless already saved.
/// Returns whether anything changed.
pub fn switch(svc: &mut Service, selector: &Selector, mode: &str, namespace: &str) -> Result<bool> {
    let original = match state(svc, namespace)? {
        State::Free { selector } => selector,
        State::Taken { mode: m, original } if m == mode => original,
        State::Taken { mode: m, .. } => {
            return Err(Error::TakenOver {
                namespace: namespace.to_string(),
                service: name(svc),
                mode: m,
                holder: "another session".into(),
            })
        }
    };
    if selects_exactly(svc, selector) && annotation(svc, ANNOTATION_ORIGINAL_SELECTOR).is_some() {
        return Ok(false);
    }
    let saved = serde_json::to_string(&original).expect("a map of strings serializes");
    let ann = svc
        .metadata
        .annotations
        .get_or_insert_with(Default::default);
    ann.insert(ANNOTATION_ORIGINAL_SELECTOR.to_string(), saved);
    ann.insert(ANNOTATION_MODE.to_string(), mode.to_string());
    svc.spec.get_or_insert_with(Default::default).selector = Some(selector.clone());
    Ok(true)
}

/// Whether S's selector is exactly `selector`.
pub fn selects_exactly(svc: &Service, selector: &Selector) -> bool {
    svc.spec.as_ref().and_then(|s| s.selector.as_ref()) == Some(selector)
}

/// Gives S its original selector back and removes ktx's annotations (the lock's included).
/// Returns whether anything changed (a Service not taken over is left alone).
pub fn restore(svc: &mut Service, namespace: &str) -> Result<bool> {
    let State::Taken { original, .. } = state(svc, namespace)? else {
        return Ok(false);
    };
    svc.spec.get_or_insert_with(Default::default).selector = Some(original);
    if let Some(ann) = svc.metadata.annotations.as_mut() {
        ann.remove(ANNOTATION_ORIGINAL_SELECTOR);
        ann.remove(ANNOTATION_MODE);
        if ann.is_empty() {
            svc.metadata.annotations = None;
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::ServiceSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;

    fn svc(selector: Option<&[(&str, &str)]>) -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some("orders".into()),
                annotations: Some([("team".to_string(), "a".to_string())].into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                selector: selector.map(|s| {
                    s.iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect()
                }),
                ..Default::default()
            }),
            status: None,
        }
    }

    #[test]
    fn switch_saves_the_original_in_the_same_object_and_restore_undoes_it_exactly() {
        let before = svc(Some(&[("app", "orders")]));
        let mut s = before.clone();
        let router: Selector = [("ktx.dev/role".to_string(), "router".to_string())].into();
        assert!(switch(&mut s, &router, "mesh", "shop").unwrap());
        assert_eq!(s.spec.as_ref().unwrap().selector.as_ref(), Some(&router));
        let ann = s.metadata.annotations.as_ref().unwrap();
        assert_eq!(ann[ANNOTATION_ORIGINAL_SELECTOR], r#"{"app":"orders"}"#);
        assert_eq!(ann[ANNOTATION_MODE], "mesh");
        assert_eq!(
            state(&s, "shop").unwrap(),
            State::Taken {
                mode: "mesh".into(),
                original: [("app".to_string(), "orders".to_string())].into()
            }
        );
        // A second developer's switch changes nothing and keeps the first original.
        assert!(!switch(&mut s, &router, "mesh", "shop").unwrap());
        assert!(restore(&mut s, "shop").unwrap());
        assert_eq!(s, before);
        assert!(!restore(&mut s, "shop").unwrap());
    }

    #[test]
    fn refusals() {
        let e = state(&svc(None), "shop").unwrap_err();
        assert!(matches!(e, Error::NoSelector { .. }), "{e}");
        let mut s = svc(Some(&[("app", "orders")]));
        switch(&mut s, &Selector::new(), "exchange", "shop").unwrap();
        let e = switch(&mut s, &Selector::new(), "mesh", "shop").unwrap_err();
        assert!(
            e.to_string().contains("already in ktx exchange mode"),
            "{e}"
        );
        let mut bad = svc(Some(&[("a", "b")]));
        bad.metadata
            .annotations
            .as_mut()
            .unwrap()
            .insert(ANNOTATION_ORIGINAL_SELECTOR.into(), "nope".into());
        assert!(matches!(
            state(&bad, "shop"),
            Err(Error::BadAnnotation { .. })
        ));
    }
}
