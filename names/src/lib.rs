//! Names, labels and annotations of every cluster object ktx creates.
//!
//! No other crate spells these strings: the control plane, the router and the janitor all ask
//! this crate, so a rename happens in one place. It owns no I/O and knows nothing of the API.

/// `app.kubernetes.io/managed-by` — set to [`MANAGED_BY_VALUE`] on every ktx object.
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Value of [`LABEL_MANAGED_BY`].
pub const MANAGED_BY_VALUE: &str = "ktx";
/// The meshed Service an object belongs to.
pub const LABEL_SERVICE: &str = "ktx.dev/service";
/// The session (version mark) an object belongs to.
pub const LABEL_SESSION: &str = "ktx.dev/session";
/// The role of an object: `router`, `shadow`, `stuntman`, `routes`, `session`.
pub const LABEL_ROLE: &str = "ktx.dev/role";

/// Annotation on Service S holding its original selector (JSON) while it is meshed.
pub const ANNOTATION_ORIGINAL_SELECTOR: &str = "ktx.dev/original-selector";
/// Annotation on Service S naming the lock holder during setup and teardown.
pub const ANNOTATION_LOCK: &str = "ktx.dev/lock";
/// Annotation on Service S saying how it is taken over: [`mode::MESH`] or [`mode::EXCHANGE`].
/// Also a label on session objects (Lease, shadow), saying which command made them.
pub const ANNOTATION_MODE: &str = "ktx.dev/mode";
/// Label on session objects: same key as [`ANNOTATION_MODE`], values from [`mode`].
pub const LABEL_MODE: &str = ANNOTATION_MODE;
/// Annotation on a Deployment or StatefulSet scaled to 0 by `ktx exchange --mode scale`: its
/// replica count and the Service it was scaled for (JSON), to scale it back.
pub const ANNOTATION_ORIGINAL_REPLICAS: &str = "ktx.dev/original-replicas";
/// Annotation on a session Lease: the rule's conditions in words, for `ktx status`.
pub const ANNOTATION_RULE: &str = "ktx.dev/rule";
/// On a session's Lease: whether the developer's process listens on its LOCAL ports, as ktx
/// last saw it (`listening`, or `not listening on 127.0.0.1:PORT,...`).
pub const ANNOTATION_LOCAL_PROCESS: &str = "ktx.dev/local-process";

/// Annotation on every object a session of ktx creates for itself (shadow Pod, Service and
/// Secret, preview Service): the name of the session's Lease. With [`ANNOTATION_OWNER_UID`] it is
/// the proof ktx asks for before deleting the object on behalf of that session.
pub const ANNOTATION_OWNER_LEASE: &str = "ktx.dev/owner-lease";
/// Annotation beside [`ANNOTATION_OWNER_LEASE`]: the UID of that Lease. A Lease of the same name
/// made by someone else has another UID, so it owns nothing of the session's.
pub const ANNOTATION_OWNER_UID: &str = "ktx.dev/owner-uid";
/// Annotation set by ktx on every object it creates (shared and per-session, the Lease too):
/// a random token of the run that created it. Undo deletes only what carries its own token (or
/// the UID the create returned); a shared object is reused or deleted only if it has one.
pub const ANNOTATION_CREATED_BY: &str = "ktx.dev/created-by";

/// `app.kubernetes.io/part-of` — set to [`PART_OF_VALUE`] on the objects the Helm chart
/// installs once per namespace (shared router account, janitor).
pub const LABEL_PART_OF: &str = "app.kubernetes.io/part-of";
/// Value of [`LABEL_PART_OF`].
pub const PART_OF_VALUE: &str = "ktx";
/// The ServiceAccount the chart installs for every router of the namespace. When it exists
/// (with [`LABEL_PART_OF`]), ktx runs routers as it instead of creating `S-ktx-router`.
pub const SHARED_ROUTER_ACCOUNT: &str = "ktx-router";
/// The Lease through which janitor replicas elect the one that acts.
pub const JANITOR_ELECTION_LEASE: &str = "ktx-janitor";

/// Key of the route table inside the routes ConfigMap.
pub const ROUTES_KEY: &str = "routes.yaml";

/// Role values for [`LABEL_ROLE`].
pub mod role {
    pub const ROUTER: &str = "router";
    pub const SHADOW: &str = "shadow";
    pub const STUNTMAN: &str = "stuntman";
    pub const ROUTES: &str = "routes";
    pub const SESSION: &str = "session";
    /// The Service that `ktx preview NAME` creates.
    pub const PREVIEW: &str = "preview";
}

/// Values of [`ANNOTATION_MODE`] / [`LABEL_MODE`].
pub mod mode {
    /// Requests matching a rule go to the developer; the rest to the original workload.
    pub const MESH: &str = "mesh";
    /// All traffic of the Service goes to the developer.
    pub const EXCHANGE: &str = "exchange";
    /// A new Service that exists only while the developer's process runs.
    pub const PREVIEW: &str = "preview";
    /// `ktx connect`: a connect pod that dials into the cluster for the developer's machine.
    pub const CONNECT: &str = "connect";
}

/// `ktx connect` sessions belong to no Service: their Lease and connect pod carry this value in
/// [`LABEL_SERVICE`], so `ktx clean`, `ktx status` and the janitor treat them like the sessions
/// of a Service of that name (which never exists).
pub const CONNECT_GROUP: &str = "ktx-connect";

/// Names derived from a meshed Service `S`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceNames {
    service: String,
}

impl ServiceNames {
    pub fn new(service: impl Into<String>) -> Self {
        Self {
            service: service.into(),
        }
    }

    /// The Service being meshed.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// `S-ktx-stuntman`: the original selector and ports; the way to the original workload.
    pub fn stuntman(&self) -> String {
        format!("{}-ktx-stuntman", self.service)
    }

    /// `S-ktx-router`: the router Deployment (and the label value of its pods).
    pub fn router(&self) -> String {
        format!("{}-ktx-router", self.service)
    }

    /// `S-ktx-routes`: the route table ConfigMap.
    pub fn routes(&self) -> String {
        format!("{}-ktx-routes", self.service)
    }

    /// `S-ktx-mesh-MARK`: shadow Pod, Service, Secret and Lease of one session.
    pub fn shadow(&self, session: &str) -> String {
        format!("{}-ktx-mesh-{}", self.service, dns_label(session))
    }

    /// The session Lease: the same name as the session's shadow objects (another kind).
    pub fn lease(&self, session: &str) -> String {
        self.shadow(session)
    }

    /// `S-ktx-exchange-ID`: shadow Pod, Secret and Lease of an exchange session (no Service:
    /// S itself selects the pod).
    pub fn exchange(&self, session: &str) -> String {
        format!("{}-ktx-exchange-{}", self.service, dns_label(session))
    }

    /// `S-ktx-preview`: shadow Pod, Secret and Lease behind a previewed Service `S` (S is created
    /// by ktx and selects the pod).
    pub fn preview(&self) -> String {
        format!("{}-ktx-preview", self.service)
    }

    /// `S-ID`: connect pod, Secret and Lease of a `ktx connect` session (S is
    /// [`CONNECT_GROUP`]: `ktx-connect-ID`).
    pub fn connect(&self, session: &str) -> String {
        format!("{}-{}", self.service, dns_label(session))
    }

    /// `S-ktx-router`: the router's ServiceAccount, Role and RoleBinding (same name as the
    /// Deployment; another kind).
    pub fn router_account(&self) -> String {
        self.router()
    }
}

/// Lower-cases and replaces characters that are not allowed in a DNS label, so a version mark
/// such as `Foo_Bar` still yields a valid object name.
pub fn dns_label(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    while out.ends_with('-') {
        out.pop();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_names() {
        let n = ServiceNames::new("orders");
        assert_eq!(n.stuntman(), "orders-ktx-stuntman");
        assert_eq!(n.router(), "orders-ktx-router");
        assert_eq!(n.routes(), "orders-ktx-routes");
        assert_eq!(n.shadow("Foo_Bar"), "orders-ktx-mesh-foo-bar");
        assert_eq!(n.lease("foobar"), "orders-ktx-mesh-foobar");
        assert_eq!(n.exchange("ab12"), "orders-ktx-exchange-ab12");
        assert_eq!(n.preview(), "orders-ktx-preview");
        assert_eq!(n.router_account(), "orders-ktx-router");
    }
}
