//! A local copy of one watched collection, keyed by object name (all objects share the
//! router's namespace), built from watcher events.
//!
//! A (re)list arrives as `Init`, `InitApply`…, `InitDone`; it is collected aside and swapped in
//! whole at `InitDone`, so readers never see a half-listed collection and objects deleted while
//! the watch was down disappear. Owns no I/O; what is kept per object is the caller's choice.

use std::collections::HashMap;

use ::kube::runtime::watcher::Event;
use ::kube::ResourceExt;

/// Values of type `V` derived from the objects of one collection.
#[derive(Debug)]
pub struct Snapshot<V> {
    live: HashMap<String, V>,
    /// The list in progress, between `Init` and `InitDone`.
    relist: Option<HashMap<String, V>>,
    listed: bool,
}

impl<V> Default for Snapshot<V> {
    fn default() -> Self {
        Snapshot {
            live: HashMap::new(),
            relist: None,
            listed: false,
        }
    }
}

impl<V> Snapshot<V> {
    /// Applies one event. `derive(object, previous)` makes the value kept for an object, given
    /// the value last kept under its name (also during a relist, so that state can carry over).
    /// Returns true when the live view may have changed.
    pub fn apply<K: ResourceExt>(
        &mut self,
        event: Event<K>,
        mut derive: impl FnMut(&K, Option<&V>) -> V,
    ) -> bool {
        match event {
            Event::Init => {
                self.relist = Some(HashMap::new());
                false
            }
            Event::InitApply(obj) => {
                let name = obj.name_any();
                let value = derive(&obj, self.live.get(&name));
                self.relist
                    .get_or_insert_with(HashMap::new)
                    .insert(name, value);
                false
            }
            Event::InitDone => {
                self.live = self.relist.take().unwrap_or_default();
                self.listed = true;
                true
            }
            Event::Apply(obj) => {
                let name = obj.name_any();
                let value = derive(&obj, self.live.get(&name));
                self.live.insert(name, value);
                true
            }
            Event::Delete(obj) => self.live.remove(&obj.name_any()).is_some(),
        }
    }

    /// True once the first full list has been applied.
    pub fn listed(&self) -> bool {
        self.listed
    }

    /// The current objects, by name.
    pub fn live(&self) -> &HashMap<String, V> {
        &self.live
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::ConfigMap;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;

    fn cm(name: &str, v: &str) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            data: Some([("v".to_string(), v.to_string())].into()),
            ..Default::default()
        }
    }

    fn value(c: &ConfigMap, _: Option<&String>) -> String {
        c.data
            .as_ref()
            .and_then(|d| d.get("v"))
            .cloned()
            .unwrap_or_default()
    }

    fn names(s: &Snapshot<String>) -> Vec<(String, String)> {
        let mut v: Vec<_> = s
            .live()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn a_relist_is_swapped_in_whole_and_drops_vanished_objects() {
        let mut s = Snapshot::default();
        assert!(!s.apply(Event::Init, value));
        assert!(!s.apply(Event::InitApply(cm("a", "1")), value));
        assert!(!s.listed());
        assert!(s.live().is_empty(), "nothing is visible before InitDone");
        assert!(s.apply(Event::<ConfigMap>::InitDone, value));
        assert!(s.listed());
        assert!(s.apply(Event::Apply(cm("b", "2")), value));
        assert_eq!(
            names(&s),
            [("a".into(), "1".into()), ("b".into(), "2".into())]
        );

        // The watch broke; "a" was deleted meanwhile and "b" changed.
        s.apply(Event::Init, value);
        s.apply(Event::InitApply(cm("b", "3")), value);
        assert_eq!(
            names(&s).len(),
            2,
            "the old view stays until the relist is done"
        );
        s.apply(Event::<ConfigMap>::InitDone, value);
        assert_eq!(names(&s), [("b".into(), "3".into())]);

        assert!(s.apply(Event::Delete(cm("b", "3")), value));
        assert!(
            !s.apply(Event::Delete(cm("b", "3")), value),
            "deleting twice changes nothing"
        );
        assert!(s.live().is_empty());
    }

    #[test]
    fn derive_sees_the_previous_value_even_during_a_relist() {
        let mut s = Snapshot::default();
        let keep =
            |c: &ConfigMap, prev: Option<&String>| prev.cloned().unwrap_or_else(|| value(c, None));
        s.apply(Event::Apply(cm("a", "first")), keep);
        s.apply(Event::Init, keep);
        s.apply(Event::InitApply(cm("a", "second")), keep);
        s.apply(Event::<ConfigMap>::InitDone, keep);
        assert_eq!(names(&s), [("a".into(), "first".into())]);
    }
}
