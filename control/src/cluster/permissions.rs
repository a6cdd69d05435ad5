//! Every Kubernetes API call ktx, its janitor and its router make, as RBAC spells it: the table
//! that the Roles are checked against. The developer Role in README.md ("Permissions") and in
//! `helm/ktx/templates/developer-rbac.yaml`, the janitor's and the router's Roles in the chart,
//! and the per-Service router Role ktx creates ([`crate::objects::router::role`]) must grant
//! exactly the calls listed here for their account: a missing right fails a command, a right
//! nothing uses is a door left open. The unit test below reads the Roles and compares.
//!
//! Keep it honest: a new call through [`crate::cluster::api::Kube`] (or `kube.api::<K>()`) or a new
//! watcher in `router/src/kube.rs` gets a row here, with where it is made.
//!
//! What ktx never does with the developer Role: read Secrets. It creates the shadow's Secret (the
//! object comes back from `create`), patches its owner reference and deletes it; `kubectl auth
//! can-i get secrets` is "no" for a developer. Only `--env-secrets` reads the workload's Secrets,
//! with an extra Role the developer is given on purpose.

/// Whose rights a call needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Account {
    /// A person running `ktx` (the developer Role).
    Developer,
    /// A developer without the chart's shared router account: ktx creates the router's own
    /// ServiceAccount, Role and RoleBinding. RBAC lets nobody grant rights they do not hold, so
    /// the developer also needs every right of that router Role.
    DeveloperWithoutChart,
    /// A developer who runs `mesh`/`exchange --env-secrets`: the extra Role `ktx-env-secrets`
    /// of the README's "The workload's environment", never part of the developer Role.
    DeveloperEnvSecrets,
    /// `ktx janitor` in the cluster (the chart's `ktx-janitor` Role).
    Janitor,
    /// `ktx-router` (the chart's `ktx-router` Role, or the per-Service one ktx creates).
    Router,
}

/// One API call: who makes it, in which commands, on what, and where in the code.
#[derive(Debug, Clone, Copy)]
pub struct Call {
    pub account: Account,
    pub commands: &'static str,
    /// API group (`""` for the core group).
    pub group: &'static str,
    /// Resource, or `resource/subresource`.
    pub resource: &'static str,
    pub verb: &'static str,
    pub site: &'static str,
}

const fn c(
    account: Account,
    commands: &'static str,
    group: &'static str,
    resource: &'static str,
    verb: &'static str,
    site: &'static str,
) -> Call {
    Call {
        account,
        commands,
        group,
        resource,
        verb,
        site,
    }
}

use Account::{
    Developer as D, DeveloperEnvSecrets as ES, DeveloperWithoutChart as DN, Janitor as J,
    Router as R,
};

const SETUP: &str = "mesh exchange preview";
const ALL: &str = "mesh exchange preview clean recover";

/// The table.
#[rustfmt::skip]
pub const CALLS: &[Call] = &[
    // Service S (lock, selector switch, saved replicas), stuntman, shadow and preview Services.
    c(D, "mesh exchange preview clean recover forward connect", "", "services", "get", "mesh.rs, exchange.rs, preview.rs, lock.rs, teardown.rs, clean.rs, forward.rs"),
    c(D, "clean mesh exchange preview connect", "", "services", "list", "clean.rs services_in_use, service_judged"),
    c(D, SETUP, "", "services", "create", "mesh.rs ensure (stuntman), flow.rs (shadow), preview.rs"),
    c(D, ALL, "", "services", "update", "api.rs modify: lock.rs, mesh.rs, exchange.rs, takeover restore, scale.rs"),
    c(D, ALL, "", "services", "delete", "teardown.rs remove_session, delete_shared; clean.rs; undo.rs"),
    // The routes ConfigMap; kube-root-ca.crt (mesh: the router's credentials, optional).
    c(D, ALL, "", "configmaps", "get", "mesh.rs, mesh/rules.rs, teardown.rs, clean.rs, lifecycle/workload_env.rs (--env-file, -- CMD), lifecycle/steps.rs cluster_ca"),
    // The team's defaults (ConfigMap ktx-defaults), before every command but the janitor;
    // without this right they are skipped silently.
    c(D, "mesh exchange preview status clean recover config forward connect", "", "configmaps", "get", "config/namespace.rs read"),
    c(D, SETUP, "", "configmaps", "create", "mesh.rs ensure (routes)"),
    c(D, ALL, "", "configmaps", "update", "mesh/rules.rs add rule, teardown.rs remove_rules"),
    c(D, ALL, "", "configmaps", "delete", "teardown.rs delete_shared, undo.rs"),
    // The shadow pod; the workload's pods (named targetPorts); the router pods (metrics).
    c(D, "mesh exchange preview connect", "", "pods", "get", "api/wait.rs pod"),
    c(D, "mesh exchange preview status clean forward connect", "", "pods", "list", "mesh.rs, exchange.rs (named ports), api/wait.rs, router_admin.rs, clean.rs, forward.rs (Ready pods), lifecycle/workload_env.rs"),
    c(D, "mesh exchange preview connect", "", "pods", "watch", "api/wait.rs Changes (wakes the waits; they poll without it)"),
    c(D, "mesh exchange preview connect", "", "pods", "create", "flow.rs (shadow)"),
    c(D, "mesh exchange preview clean recover connect", "", "pods", "delete", "teardown.rs remove_session, clean.rs, undo.rs"),
    // The tunnel: ktx port-forwards over SPDY, a POST (`create`), and falls back to the
    // WebSocket, a GET that API servers before 1.35 authorize as `get`; from 1.35
    // (AuthorizePodWebsocketUpgradeCreatePermission) as `create`.
    c(D, "mesh exchange preview forward connect", "", "pods/portforward", "get", "cluster/port_forward.rs PortForwardConnector (the WebSocket)"),
    c(D, "mesh exchange preview forward connect", "", "pods/portforward", "create", "cluster/port_forward.rs PortForwardConnector (SPDY; the WebSocket on 1.35+)"),
    // The router's /metrics through the API server: "rule applied", status's request counts.
    c(D, "mesh status", "", "pods/proxy", "get", "kube/proxy.rs get"),
    // The shadow's tunnel credentials: never read back.
    c(D, "mesh exchange preview connect", "", "secrets", "create", "flow.rs (shadow Secret)"),
    // Only on a rollback: a session's Secret names its Pod and Lease as owners, so teardown,
    // clean and the janitor leave it to the garbage collector (teardown.rs remove_session).
    c(D, "mesh exchange preview connect", "", "secrets", "delete", "undo.rs (the rollback of a setup)"),
    // --env-secrets only: the Secrets the workload's environment refers to (an extra Role).
    c(ES, "mesh exchange", "", "secrets", "get", "lifecycle/workload_env.rs prepare"),
    // The chart's shared router account, looked up by name.
    c(D, "mesh clean recover", "", "serviceaccounts", "get", "teardown.rs shared_router_account, delete_shared"),
    // The router Deployment; the workloads behind S (exchange --mode scale) and their scale.
    c(D, ALL, "apps", "deployments", "get", "mesh.rs ensure, api/wait.rs, teardown.rs, scale.rs back"),
    c(D, "exchange clean mesh preview", "apps", "deployments", "list", "scale.rs workloads, clean.rs services_in_use"),
    c(D, "mesh", "apps", "deployments", "watch", "api/wait.rs Changes (wakes the router wait; it polls without it)"),
    c(D, "mesh", "apps", "deployments", "create", "mesh.rs ensure (router)"),
    c(D, ALL, "apps", "deployments", "delete", "teardown.rs delete_shared, undo.rs"),
    c(D, "exchange clean recover", "apps", "statefulsets", "get", "scale.rs back (Ready wait)"),
    c(D, "exchange", "apps", "statefulsets", "list", "scale.rs workloads"),
    c(D, "exchange", "apps", "deployments/scale", "get", "scale.rs replicas_of"),
    c(D, "exchange clean recover", "apps", "deployments/scale", "patch", "scale.rs set_replicas"),
    c(D, "exchange", "apps", "statefulsets/scale", "get", "scale.rs replicas_of"),
    c(D, "exchange clean recover", "apps", "statefulsets/scale", "patch", "scale.rs set_replicas"),
    // The router's PodDisruptionBudget (owned by its Deployment: the garbage collector deletes it).
    c(D, "mesh", "policy", "poddisruptionbudgets", "create", "kube/budget.rs create"),
    // `ktx connect`'s names: the namespace's Services and Endpoints, watched.
    c(D, "connect", "", "services", "watch", "commands/connect/cluster_names.rs watch"),
    c(D, "connect", "", "endpoints", "list", "commands/connect/cluster_names.rs watch"),
    c(D, "connect", "", "endpoints", "watch", "commands/connect/cluster_names.rs watch"),
    // `mesh --mode manual --apply-istio`: Istio's routing for the mark, owned by the Lease.
    c(D, "mesh", "networking.istio.io", "destinationrules", "create", "mesh/manual.rs apply_istio"),
    c(D, "mesh", "networking.istio.io", "destinationrules", "get", "undo.rs delete_made (without a UID)"),
    c(D, "mesh", "networking.istio.io", "destinationrules", "delete", "undo.rs"),
    c(D, "mesh", "networking.istio.io", "virtualservices", "create", "mesh/manual.rs apply_istio"),
    c(D, "mesh", "networking.istio.io", "virtualservices", "get", "undo.rs delete_made (without a UID)"),
    c(D, "mesh", "networking.istio.io", "virtualservices", "delete", "undo.rs"),
    // Session Leases.
    c(D, "mesh exchange preview clean recover connect", "coordination.k8s.io", "leases", "get", "session.rs (who holds a name)"),
    c(D, "mesh exchange preview status clean recover connect", "coordination.k8s.io", "leases", "list", "teardown.rs session_leases, status.rs, clean.rs"),
    c(D, "mesh exchange preview connect", "coordination.k8s.io", "leases", "create", "session.rs LeaseKeeper::create"),
    c(D, "mesh exchange preview connect", "coordination.k8s.io", "leases", "patch", "session.rs renew_loop"),
    c(D, "mesh exchange preview clean recover connect", "coordination.k8s.io", "leases", "delete", "teardown.rs remove_session, undo.rs"),
    // Without the chart: the router's own account, Role and RoleBinding.
    c(DN, "mesh", "", "serviceaccounts", "create", "mesh.rs ensure (router account)"),
    c(DN, ALL, "", "serviceaccounts", "delete", "teardown.rs delete_shared, undo.rs"),
    c(DN, "mesh", "rbac.authorization.k8s.io", "roles", "get", "mesh.rs ensure"),
    c(DN, "mesh", "rbac.authorization.k8s.io", "roles", "create", "mesh.rs ensure"),
    c(DN, ALL, "rbac.authorization.k8s.io", "roles", "delete", "teardown.rs delete_shared, undo.rs"),
    c(DN, "mesh", "rbac.authorization.k8s.io", "rolebindings", "get", "mesh.rs ensure"),
    c(DN, "mesh", "rbac.authorization.k8s.io", "rolebindings", "create", "mesh.rs ensure"),
    c(DN, ALL, "rbac.authorization.k8s.io", "rolebindings", "delete", "teardown.rs delete_shared, undo.rs"),
    // ...and what that router Role grants, which the developer must hold to grant it.
    c(DN, "mesh", "", "configmaps", "list", "granted on: objects/router.rs role"),
    c(DN, "mesh", "", "configmaps", "watch", "granted on: objects/router.rs role"),
    c(DN, "mesh", "", "endpoints", "list", "granted on: objects/router.rs role"),
    c(DN, "mesh", "", "endpoints", "watch", "granted on: objects/router.rs role"),
    c(DN, "mesh", "coordination.k8s.io", "leases", "watch", "granted on: objects/router.rs role"),
    // The janitor: the same teardown as `ktx clean` (leave.rs, clean.rs, scale.rs back_all),
    // and its own leader election.
    c(J, "janitor", "", "services", "get", "lock.rs, teardown.rs, clean.rs, scale.rs"),
    c(J, "janitor", "", "services", "list", "clean.rs services_in_use, service_judged"),
    c(J, "janitor", "", "services", "update", "lock.rs, teardown.rs restore_selector, scale.rs forget"),
    c(J, "janitor", "", "services", "delete", "teardown.rs, clean.rs"),
    c(J, "janitor", "", "configmaps", "get", "clean.rs, teardown.rs"),
    c(J, "janitor", "", "configmaps", "update", "teardown.rs remove_rules"),
    c(J, "janitor", "", "configmaps", "delete", "teardown.rs delete_shared"),
    c(J, "janitor", "", "pods", "get", "teardown.rs remove_session (delete_checked reads the owner first)"),
    c(J, "janitor", "", "pods", "list", "clean.rs"),
    c(J, "janitor", "", "pods", "delete", "teardown.rs remove_session, clean.rs"),
    c(J, "janitor", "", "serviceaccounts", "get", "teardown.rs delete_shared"),
    c(J, "janitor", "", "serviceaccounts", "delete", "teardown.rs delete_shared"),
    c(J, "janitor", "rbac.authorization.k8s.io", "roles", "get", "teardown.rs delete_shared (delete_checked)"),
    c(J, "janitor", "rbac.authorization.k8s.io", "roles", "delete", "teardown.rs delete_shared"),
    c(J, "janitor", "rbac.authorization.k8s.io", "rolebindings", "get", "teardown.rs delete_shared (delete_checked)"),
    c(J, "janitor", "rbac.authorization.k8s.io", "rolebindings", "delete", "teardown.rs delete_shared"),
    c(J, "janitor", "apps", "deployments", "get", "teardown.rs, scale.rs back"),
    c(J, "janitor", "apps", "deployments", "list", "clean.rs services_in_use"),
    c(J, "janitor", "apps", "deployments", "delete", "teardown.rs delete_shared"),
    c(J, "janitor", "apps", "statefulsets", "get", "scale.rs back"),
    c(J, "janitor", "apps", "deployments/scale", "patch", "scale.rs set_replicas"),
    c(J, "janitor", "apps", "statefulsets/scale", "patch", "scale.rs set_replicas"),
    c(J, "janitor", "coordination.k8s.io", "leases", "get", "janitor/election.rs"),
    c(J, "janitor", "coordination.k8s.io", "leases", "list", "janitor/rounds.rs, teardown.rs, clean.rs"),
    c(J, "janitor", "coordination.k8s.io", "leases", "create", "janitor/election.rs"),
    c(J, "janitor", "coordination.k8s.io", "leases", "update", "janitor/election.rs"),
    c(J, "janitor", "coordination.k8s.io", "leases", "delete", "teardown.rs remove_session"),
    // The router: three watchers (kube-runtime: list, then watch), router/src/kube.rs.
    c(R, "router", "", "configmaps", "list", "router/src/kube.rs (metadata.name field selector)"),
    c(R, "router", "", "configmaps", "watch", "router/src/kube.rs (metadata.name field selector)"),
    c(R, "router", "", "endpoints", "list", "router/src/kube.rs"),
    c(R, "router", "", "endpoints", "watch", "router/src/kube.rs"),
    c(R, "router", "coordination.k8s.io", "leases", "list", "router/src/kube.rs"),
    c(R, "router", "coordination.k8s.io", "leases", "watch", "router/src/kube.rs"),
];

/// `(group, resource, verb)` triples an account needs.
pub fn needed(accounts: &[Account]) -> std::collections::BTreeSet<(String, String, String)> {
    CALLS
        .iter()
        .filter(|c| accounts.contains(&c.account))
        .map(|c| {
            (
                c.group.to_string(),
                c.resource.to_string(),
                c.verb.to_string(),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests;
