//! Proof that an object is ktx's, asked for before every delete and every reuse.
//!
//! Every object ktx creates carries the token of the run that created it
//! ([`ktx_names::ANNOTATION_CREATED_BY`]); objects of one session (shadow Pod, Service, Secret,
//! preview Service) also name their session's Lease and its UID
//! ([`ktx_names::ANNOTATION_OWNER_LEASE`], [`ktx_names::ANNOTATION_OWNER_UID`]) and list that
//! Lease in their ownerReferences, so the garbage collector removes them with it.
//!
//! What each check protects:
//! - [`owned_by_session`]: `ktx clean` and the janitor remove a dead session's objects only if
//!   they point at the UID of the Lease being removed. A Lease someone else made, whatever its
//!   name and labels, owns nothing of the team's;
//! - [`created_by`]: undo deletes only what this run made (or the UID its create returned);
//! - [`is_shared_of`]: the router, routes and stuntman of S are reused or deleted only if ktx
//!   made them for S. A name clash with anything else is [`crate::Error::NotOurs`].
//!
//! This module owns no I/O; the deletes themselves (with UID preconditions) are
//! [`crate::cluster::api::Kube::delete_uid`] and [`crate::cluster::api::Kube::delete_checked`].

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use ktx_names::{
    ANNOTATION_CREATED_BY, ANNOTATION_OWNER_LEASE, ANNOTATION_OWNER_UID, LABEL_MANAGED_BY,
    LABEL_SERVICE, MANAGED_BY_VALUE,
};

/// The session Lease that per-session objects belong to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionOwner {
    pub lease: String,
    pub uid: String,
}

fn annotation<'a>(meta: &'a ObjectMeta, key: &str) -> Option<&'a str> {
    meta.annotations.as_ref()?.get(key).map(String::as_str)
}

fn label<'a>(meta: &'a ObjectMeta, key: &str) -> Option<&'a str> {
    meta.labels.as_ref()?.get(key).map(String::as_str)
}

/// Marks `meta` as created by the run with `token`.
pub fn mark_created(meta: &mut ObjectMeta, token: &str) {
    meta.annotations
        .get_or_insert_with(Default::default)
        .insert(ANNOTATION_CREATED_BY.to_string(), token.to_string());
}

/// The owner reference to a session Lease: the garbage collector deletes the object with the
/// Lease. Not blocking (that would need rights on the Lease's finalizers) and not the
/// controller (the shadow's Secret has its Pod as controller).
pub fn lease_reference(owner: &SessionOwner) -> OwnerReference {
    OwnerReference {
        api_version: "coordination.k8s.io/v1".into(),
        kind: "Lease".into(),
        name: owner.lease.clone(),
        uid: owner.uid.clone(),
        controller: None,
        block_owner_deletion: Some(false),
    }
}

/// Marks `meta` as an object of the session `owner`: annotations and an owner reference.
pub fn mark_session(meta: &mut ObjectMeta, owner: &SessionOwner) {
    let ann = meta.annotations.get_or_insert_with(Default::default);
    ann.insert(ANNOTATION_OWNER_LEASE.to_string(), owner.lease.clone());
    ann.insert(ANNOTATION_OWNER_UID.to_string(), owner.uid.clone());
    let refs = meta.owner_references.get_or_insert_with(Vec::new);
    refs.retain(|r| r.uid != owner.uid);
    refs.push(lease_reference(owner));
}

/// Whether `meta` was created by the run with `token`.
pub fn created_by(meta: &ObjectMeta, token: &str) -> bool {
    !token.is_empty() && annotation(meta, ANNOTATION_CREATED_BY) == Some(token)
}

/// Whether `meta` belongs to the session whose Lease is `lease` with UID `uid`.
pub fn owned_by_session(meta: &ObjectMeta, lease: &str, uid: &str) -> bool {
    !uid.is_empty()
        && annotation(meta, ANNOTATION_OWNER_UID) == Some(uid)
        && annotation(meta, ANNOTATION_OWNER_LEASE) == Some(lease)
}

/// The UID of the session Lease `meta` names as its owner, if it names one.
pub fn session_uid(meta: &ObjectMeta) -> Option<&str> {
    annotation(meta, ANNOTATION_OWNER_UID).filter(|u| !u.is_empty())
}

/// Whether `meta` is a shared object (router, routes, stuntman, the router's account) that
/// ktx made for Service `service`.
pub fn is_shared_of(meta: &ObjectMeta, service: &str) -> bool {
    label(meta, LABEL_MANAGED_BY) == Some(MANAGED_BY_VALUE)
        && label(meta, LABEL_SERVICE) == Some(service)
        && annotation(meta, ANNOTATION_CREATED_BY).is_some_and(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner() -> SessionOwner {
        SessionOwner {
            lease: "orders-ktx-mesh-foobar".into(),
            uid: "u-1".into(),
        }
    }

    #[test]
    fn a_session_object_names_its_lease_and_is_owned_by_it() {
        let mut m = ObjectMeta::default();
        mark_created(&mut m, "t1");
        mark_session(&mut m, &owner());
        assert!(owned_by_session(&m, "orders-ktx-mesh-foobar", "u-1"));
        assert!(!owned_by_session(&m, "orders-ktx-mesh-foobar", "u-2"));
        assert!(!owned_by_session(&m, "db-password", "u-1"));
        assert!(created_by(&m, "t1") && !created_by(&m, "t2") && !created_by(&m, ""));
        assert_eq!(session_uid(&m), Some("u-1"));
        let r = &m.owner_references.as_ref().unwrap()[0];
        assert_eq!((r.kind.as_str(), r.uid.as_str()), ("Lease", "u-1"));
        mark_session(&mut m, &owner());
        assert_eq!(
            m.owner_references.unwrap().len(),
            1,
            "marking twice adds no reference"
        );
    }

    #[test]
    fn labels_alone_prove_nothing() {
        let mut m = ObjectMeta {
            labels: Some(
                [
                    (LABEL_MANAGED_BY.to_string(), MANAGED_BY_VALUE.to_string()),
                    (LABEL_SERVICE.to_string(), "orders".to_string()),
                ]
                .into(),
            ),
            ..Default::default()
        };
        assert!(!is_shared_of(&m, "orders"));
        assert!(!owned_by_session(&m, "x", ""));
        mark_created(&mut m, "t1");
        assert!(is_shared_of(&m, "orders"));
        assert!(!is_shared_of(&m, "billing"));
    }
}
