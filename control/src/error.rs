//! ktx's errors. Each names the object it concerns and says what to do; `main` prints them as
//! they are, so the wording here is the user interface.

use std::time::Duration;

use crate::plan::expose::ExposeError;
use crate::plan::ports::PortError;

/// Why a ktx command failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot load the kubeconfig{context}: {reason}; check --kubeconfig / $KUBECONFIG and --context")]
    Kubeconfig { context: String, reason: String },

    /// An API request failed; `action` names the verb and object, `hint` what to check.
    #[error("{action}: {}{hint}", brief(.source))]
    Api {
        action: String,
        hint: String,
        #[source]
        source: kube::Error,
    },

    #[error("Service {namespace}/{service} not found; check the name and the namespace (-n)")]
    ServiceNotFound { namespace: String, service: String },

    #[error("Service {namespace}/{service} has no selector (its endpoints are managed by hand), so ktx cannot put a router in front of it")]
    NoSelector { namespace: String, service: String },

    #[error("Service {namespace}/{service} is already in ktx {mode} mode (held by {holder}); wait until that session ends, or run `ktx clean` if it is gone")]
    TakenOver {
        namespace: String,
        service: String,
        mode: String,
        holder: String,
    },

    #[error("session {session} of Service {service} is already running (held by {holder}, since {since}); choose another --versionMark, or end that session")]
    SessionExists {
        service: String,
        session: String,
        holder: String,
        since: String,
    },

    #[error("the live session {other_session} of Service {service} (held by {holder}) already matches every request this rule would (the same conditions, or fewer: first match wins); use a different mark (--versionMark) or other conditions")]
    SameRule {
        service: String,
        other_session: String,
        holder: String,
    },

    #[error("{kind} {namespace}/{name} exists and was not made by ktx{for_what}; rename or remove it (ktx deletes only what it made)")]
    NotOurs {
        kind: String,
        namespace: String,
        name: String,
        /// `""` or ` for this session`.
        for_what: String,
    },

    #[error("Deployment {namespace}/{deployment} {found}; name the Service instead (svc/NAME)")]
    TargetService {
        namespace: String,
        deployment: String,
        /// `is selected by no Service` or `is selected by several Services: a, b`.
        found: String,
    },

    #[error("Deployment {namespace}/{name} not found; check the name and the namespace (-n)")]
    DeploymentNotFound { namespace: String, name: String },

    #[error("{0}")]
    Unsupported(String),

    #[error("Service {name} already exists in namespace {namespace}; choose another name for the preview")]
    PreviewExists { namespace: String, name: String },

    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),

    #[error(transparent)]
    Ports(#[from] PortError),

    #[error(transparent)]
    Expose(#[from] ExposeError),

    #[error(transparent)]
    Rules(#[from] ktx_rules::RulesError),

    #[error(
        "{what} is not a valid Kubernetes name ({reason}); use a shorter Service name or mark"
    )]
    BadName { what: String, reason: String },

    #[error("annotation {annotation} of Service {service} is unreadable ({reason}); run `ktx recover {service}` after checking it by hand")]
    BadAnnotation {
        service: String,
        annotation: &'static str,
        reason: String,
    },

    #[error("{what} was not ready within {waited:?}: {last} (`kubectl describe` it for more, or raise --timeout)")]
    Timeout {
        what: String,
        waited: Duration,
        last: String,
    },

    #[error("{what} cannot start: {reason}")]
    PodFailed { what: String, reason: String },

    #[error("Service {service} is locked by {holder} until {until}; another ktx is setting it up or restoring it — try again in a few seconds")]
    Locked {
        service: String,
        holder: String,
        until: String,
    },

    #[error("{what}: gave up after {attempts} conflicting updates by others; try again")]
    Contended { what: String, attempts: u32 },

    #[error("the router did not apply the routes: {reason}")]
    RouterRejected { reason: String },
    #[error("router pod {pod} answered {path} with something ktx cannot read ({reason}); is its image older than ktx? (--routerImage)")]
    RouterAnswer {
        pod: String,
        path: &'static str,
        reason: String,
    },

    #[error("tunnel: {0}")]
    Tunnel(String),

    /// `ktx forward` cannot serve as asked (the message says what to do).
    #[error("forward: {0}")]
    Forward(String),

    #[error("the session ended by itself: {0}")]
    SessionLost(String),

    #[error("stopped by Ctrl-C/SIGTERM; run the command again to finish")]
    Stopped,

    #[error("interrupted; everything set up so far was removed")]
    Interrupted,

    #[error(transparent)]
    WorkloadEnv(#[from] crate::plan::workload_env::EnvError),

    #[error("the selector of Service {namespace}/{service} ({selector}) matches no pod: there is no workload to take the environment from (--env-file, -- CMD)")]
    NoWorkloadPod {
        namespace: String,
        service: String,
        selector: String,
    },

    #[error("cannot write the workload's environment to {path}: {source}")]
    EnvFile {
        path: String,
        #[source]
        source: std::io::Error,
    },

    #[error("--env-secrets: you may not read Secret {namespace}/{name} (HTTP 403); it needs `get` on secrets in namespace {namespace}, which the developer Role leaves out: see the README's \"The workload's environment\" for the extra Role, or drop --env-secrets")]
    SecretsForbidden { namespace: String, name: String },

    #[error("cannot start {command}: {source}")]
    CommandStart {
        command: String,
        #[source]
        source: std::io::Error,
    },

    /// CMD of `-- CMD` ended with a non-zero status (128+N for signal N); ktx exits with it.
    #[error("{command} exited with status {code}")]
    CommandExited { command: String, code: u8 },

    #[error("could not undo everything; left behind: {left}. Run `ktx clean` (or `ktx recover SERVICE`) to finish")]
    Leftovers { left: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What to tell a person about an API status code.
pub fn hint_for(code: Option<u16>, verb: &str, resource: &str, namespace: &str) -> String {
    match code {
        Some(401) => "; your credentials were rejected: log in again (check the kubeconfig)".to_string(),
        Some(403) => format!(
            "; you need permission to {verb} {resource} in namespace {namespace} (see the README's \"Permissions\" for the Role ktx needs)"
        ),
        Some(404) => format!("; not found in namespace {namespace}"),
        Some(409) => "; it was changed by someone else at the same time: try again".to_string(),
        Some(422) => "; the API server refused the object as invalid".to_string(),
        Some(500..=599) => "; the API server failed: try again, and check the cluster's health".to_string(),
        _ => String::new(),
    }
}

/// An API error as a person reads it: the API server's own message and code, without kube's
/// debug dump of the whole Status object.
fn brief(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) if !s.message.is_empty() => format!("{} (HTTP {})", s.message, s.code),
        other => other.to_string(),
    }
}

/// The HTTP status of an API error, if it was one.
pub fn status_code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

/// Attaches "what was being done" to API results.
pub trait ApiContext<T> {
    /// `verb` and `resource` as RBAC spells them (for the permission hint), `name` for the
    /// message.
    fn ctx(self, verb: &str, resource: &str, namespace: &str, name: &str) -> Result<T>;
}

impl<T> ApiContext<T> for std::result::Result<T, kube::Error> {
    fn ctx(self, verb: &str, resource: &str, namespace: &str, name: &str) -> Result<T> {
        self.map_err(|source| Error::Api {
            action: if name.is_empty() {
                format!("{verb} {resource} in namespace {namespace}")
            } else {
                format!("{verb} {resource} {namespace}/{name}")
            },
            hint: match status_code(&source) {
                None if matches!(source, kube::Error::Service(_) | kube::Error::HyperError(_)) => {
                    "; the API server did not answer: check that the cluster is up and reachable (kubeconfig, VPN)".to_string()
                }
                code => hint_for(code, verb, resource, namespace),
            },
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forbidden_names_the_permission() {
        let h = hint_for(Some(403), "create", "deployments", "shop");
        assert!(
            h.contains("permission to create deployments in namespace shop"),
            "{h}"
        );
        assert!(hint_for(Some(401), "get", "services", "x").contains("credentials"));
        assert!(hint_for(None, "get", "services", "x").is_empty());
    }

    #[test]
    fn api_errors_name_the_object() {
        let r: std::result::Result<(), kube::Error> =
            Err(kube::Error::Api(Box::new(kube::core::Status {
                code: 403,
                message: "forbidden".into(),
                ..Default::default()
            })));
        let e = r
            .ctx("create", "deployments", "shop", "orders-ktx-router")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("create deployments shop/orders-ktx-router: "),
            "{e}"
        );
        assert!(e.contains("permission to create deployments"), "{e}");
        assert_eq!(
            e,
            "create deployments shop/orders-ktx-router: forbidden (HTTP 403); you need permission to create deployments in namespace shop (see the README's \"Permissions\" for the Role ktx needs)"
        );
    }
}
