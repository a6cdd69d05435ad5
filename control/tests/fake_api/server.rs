//! An in-memory Kubernetes API server for one namespace, behind kube-rs's `Client` (a tower
//! service instead of HTTP): ktx's own code runs unchanged against it, request by request.
//!
//! It keeps what the control plane relies on: UIDs and resourceVersions, 409 AlreadyExists on
//! create, 409 Conflict on a stale replace, 404 NotFound, delete preconditions (UID) answered
//! with 409, merge patches, label-selector lists, and garbage collection of dependents through
//! ownerReferences (at once, where a real cluster does it within seconds). Pods are scheduled,
//! Running and Ready on create; Deployments report their replicas Ready. Nothing else runs:
//! no endpoints, no pod proxy, no port-forward (the tunnel goes through [`super::dialer`]).
//!
//! Faults: [`Fake::fail_write`] makes the k-th write (create, replace, patch, delete) answer
//! 500 once — the setup-fails-at-step-k table runs on it; [`Fake::forbid`] answers a verb on a
//! resource with 403, as RBAC does. Every request is logged in order.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use serde_json::{json, Value};
use tokio::sync::watch;

/// The namespace every test works in.
pub const NS: &str = "team";

/// One request as the fake saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub verb: &'static str,
    /// `services`, `leases`…
    pub resource: String,
    pub name: String,
    /// The object as stored after a successful write (`Null` for reads, failures, deletes).
    pub after: Value,
}

impl std::fmt::Display for Call {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}/{}", self.verb, self.resource, self.name)
    }
}

#[derive(Debug, Default)]
struct State {
    /// (resource plural, name) → object.
    objects: BTreeMap<(String, String), Value>,
    next_uid: u64,
    version: u64,
    writes: usize,
    fail_write: Option<usize>,
    /// (resource, verb) answered 403, as RBAC would without the right.
    forbidden: Vec<(String, &'static str)>,
    /// Resources whose API group the cluster does not serve (a CRD not installed): every
    /// request gets the API server's plain `404 page not found`.
    unserved: Vec<String>,
    /// A deleted pod stays, Terminating (a `deletionTimestamp`), until
    /// [`Fake::finish_terminating`]: a kubelet that takes its time, as this repository's 1.20
    /// test cluster's sometimes does for more than a minute.
    slow_kubelet: bool,
    /// Deployments report no Ready replica until [`Fake::release_deployments`]: a router whose
    /// pods take their time to start.
    deployments_held: bool,
    calls: Vec<Call>,
}

/// A handle on the fake cluster: seed it, inspect it, inject faults.
#[derive(Clone, Debug)]
pub struct Fake {
    state: Arc<Mutex<State>>,
    changed: watch::Sender<u64>,
}

type Reply = Response<Full<Bytes>>;

fn status(code: StatusCode, reason: &str, message: String) -> Reply {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code.as_u16(),
    });
    reply(code, &body)
}

fn reply(code: StatusCode, body: &Value) -> Reply {
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("a status and a JSON body make a response")
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(v) => {
                        out.push(v);
                        i += 3;
                    }
                    Err(_) => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `resource`, `name`, `subresource` from an API path of namespace [`NS`].
fn parse_path(path: &str) -> Option<(String, Option<String>, Option<String>)> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let rest = match parts.as_slice() {
        ["api", "v1", "namespaces", _ns, rest @ ..] => rest,
        ["apis", _group, _version, "namespaces", _ns, rest @ ..] => rest,
        _ => return None,
    };
    match rest {
        [resource] => Some((resource.to_string(), None, None)),
        [resource, name] => Some((resource.to_string(), Some(name.to_string()), None)),
        [resource, name, sub, ..] => Some((
            resource.to_string(),
            Some(name.to_string()),
            Some(sub.to_string()),
        )),
        _ => None,
    }
}

/// The `autoscaling/v1` Scale of a workload object.
fn scale_of(obj: &Value) -> Value {
    json!({
        "apiVersion": "autoscaling/v1", "kind": "Scale",
        "metadata": {
            "name": obj["metadata"]["name"], "namespace": NS,
            "uid": obj["metadata"]["uid"], "resourceVersion": obj["metadata"]["resourceVersion"],
        },
        "spec": { "replicas": obj["spec"]["replicas"] },
        "status": { "replicas": obj["spec"]["replicas"] },
    })
}

fn labels_match(obj: &Value, selector: &str) -> bool {
    let labels = &obj["metadata"]["labels"];
    selector
        .split(',')
        .filter(|t| !t.is_empty())
        .all(|term| match term.split_once('=') {
            Some((k, v)) => labels[k].as_str() == Some(v),
            None => !labels[term].is_null(),
        })
}

/// RFC 7386.
fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = json!({});
            }
            let t = target.as_object_mut().expect("made an object above");
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        other => *target = other.clone(),
    }
}

/// What the cluster's controllers would do to a stored object at once (Deployments only once
/// released when `held`).
fn settle(resource: &str, obj: &mut Value, held: bool) {
    match resource {
        "pods" => {
            obj["spec"]["nodeName"] = json!("node-1");
            let containers: Vec<Value> = obj["spec"]["containers"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .map(|c| {
                    json!({
                        "name": c["name"], "image": c["image"], "imageID": "",
                        "ready": true, "restartCount": 0, "started": true,
                        "state": { "running": {} },
                    })
                })
                .collect();
            obj["status"] = json!({
                "phase": "Running",
                "conditions": [{ "type": "Ready", "status": "True" }],
                "containerStatuses": containers,
            });
        }
        "deployments" | "statefulsets" => {
            let replicas = obj["spec"]["replicas"].as_i64().unwrap_or(1);
            let generation = obj["metadata"]["generation"].clone();
            let ready = if held && resource == "deployments" {
                0
            } else {
                replicas
            };
            obj["status"] = json!({
                "replicas": replicas, "readyReplicas": ready, "observedGeneration": generation,
            });
        }
        _ => {}
    }
}

fn kind_of_list(resource: &str) -> &'static str {
    match resource {
        "services" => "ServiceList",
        "pods" => "PodList",
        "secrets" => "SecretList",
        "configmaps" => "ConfigMapList",
        "leases" => "LeaseList",
        "deployments" => "DeploymentList",
        "statefulsets" => "StatefulSetList",
        "serviceaccounts" => "ServiceAccountList",
        "roles" => "RoleList",
        "rolebindings" => "RoleBindingList",
        _ => "List",
    }
}

/// The parts of an object that say what it is, without what the server keeps for itself
/// (resourceVersion, generation, status, times): two states are equal when these are.
pub fn essence(obj: &Value) -> Value {
    let mut o = obj.clone();
    if let Some(m) = o["metadata"].as_object_mut() {
        for k in [
            "resourceVersion",
            "generation",
            "creationTimestamp",
            "managedFields",
        ] {
            m.remove(k);
        }
    }
    if let Some(m) = o.as_object_mut() {
        m.remove("status");
    }
    if let Some(s) = o["spec"].as_object_mut() {
        s.remove("nodeName");
    }
    o
}

impl Fake {
    pub fn new() -> Fake {
        Fake {
            state: Arc::new(Mutex::new(State::default())),
            changed: watch::channel(0).0,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A client whose every request this fake answers.
    pub fn client(&self) -> kube::Client {
        kube::Client::new(self.clone(), NS)
    }

    /// Stores `obj` (any k8s-openapi object) as if someone else had created it; returns its UID.
    pub fn seed<K: serde::Serialize + kube::Resource<DynamicType = ()>>(&self, obj: &K) -> String {
        let mut v = serde_json::to_value(obj).expect("k8s objects serialize");
        v["apiVersion"] = json!(K::api_version(&()));
        v["kind"] = json!(K::kind(&()));
        let resource = K::plural(&()).to_string();
        let mut s = self.lock();
        let name = v["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let uid = Self::stamp(&mut s, &resource, &mut v);
        s.objects.insert((resource, name), v);
        uid
    }

    fn stamp(s: &mut State, resource: &str, v: &mut Value) -> String {
        s.next_uid += 1;
        s.version += 1;
        let uid = format!("uid-{:04}", s.next_uid);
        v["metadata"]["uid"] = json!(uid);
        v["metadata"]["namespace"] = json!(NS);
        v["metadata"]["resourceVersion"] = json!(s.version.to_string());
        v["metadata"]["generation"] = json!(1);
        v["metadata"]["creationTimestamp"] = json!("2026-01-01T00:00:00Z");
        let held = s.deployments_held;
        settle(resource, v, held);
        uid
    }

    /// Deletes whatever is stored under `obj`'s name and stores `obj` as a new object (a new
    /// UID), as someone else's delete and create would; returns the new UID.
    pub fn replace<K: serde::Serialize + kube::Resource<DynamicType = ()>>(
        &self,
        obj: &K,
    ) -> String {
        let name = obj.meta().name.clone().unwrap_or_default();
        self.lock()
            .objects
            .remove(&(K::plural(&()).to_string(), name));
        let uid = self.seed(obj);
        self.changed.send_modify(|n| *n += 1);
        uid
    }

    /// The stored object, typed.
    pub fn get<K: serde::de::DeserializeOwned + kube::Resource<DynamicType = ()>>(
        &self,
        name: &str,
    ) -> Option<K> {
        let s = self.lock();
        let v = s
            .objects
            .get(&(K::plural(&()).to_string(), name.to_string()))?;
        Some(serde_json::from_value(v.clone()).expect("stored objects are valid"))
    }

    /// Every object, reduced to its [`essence`], by (resource, name).
    pub fn snapshot(&self) -> BTreeMap<(String, String), Value> {
        self.lock()
            .objects
            .iter()
            .map(|(k, v)| (k.clone(), essence(v)))
            .collect()
    }

    /// Changes a stored object in place, as someone else's write would (a new resourceVersion).
    pub fn edit(&self, resource: &str, name: &str, f: impl FnOnce(&mut Value)) {
        let mut s = self.lock();
        s.version += 1;
        let version = s.version.to_string();
        if let Some(v) = s.objects.get_mut(&(resource.to_string(), name.to_string())) {
            f(v);
            v["metadata"]["resourceVersion"] = json!(version);
        }
        drop(s);
        self.changed.send_modify(|n| *n += 1);
    }

    /// Makes the `k`-th write from now on (1-based) fail once with a 500.
    pub fn fail_write(&self, k: usize) {
        let mut s = self.lock();
        s.fail_write = Some(s.writes + k);
    }

    /// Answers every `verb` on `resource` with 403 Forbidden from now on.
    pub fn forbid(&self, resource: &str, verb: &'static str) {
        self.lock().forbidden.push((resource.to_string(), verb));
    }

    /// Serves `resource` no more, as a cluster without its CRD (see [`State::unserved`]).
    pub fn unserve(&self, resource: &str) {
        self.lock().unserved.push(resource.to_string());
    }

    /// Keeps deleted pods Terminating until [`Fake::finish_terminating`] (see
    /// [`State::slow_kubelet`]).
    pub fn slow_kubelet(&self) {
        self.lock().slow_kubelet = true;
    }

    /// Deployments created or updated from now on report no Ready replica (see
    /// [`State::deployments_held`]).
    pub fn hold_deployments(&self) {
        self.lock().deployments_held = true;
    }

    /// Every Deployment's pods are Ready now.
    pub fn release_deployments(&self) {
        let mut s = self.lock();
        s.deployments_held = false;
        for ((r, _), v) in s.objects.iter_mut() {
            if r == "deployments" {
                settle(r, v, false);
            }
        }
        drop(s);
        self.changed.send_modify(|n| *n += 1);
    }

    /// The kubelet catches up: every Terminating pod goes, and what only it kept alive.
    pub fn finish_terminating(&self) {
        let mut s = self.lock();
        s.objects
            .retain(|(r, _), v| r != "pods" || v["metadata"]["deletionTimestamp"].is_null());
        Self::collect_garbage(&mut s);
        drop(s);
        self.changed.send_modify(|n| *n += 1);
    }

    /// How many writes (create, replace, patch, delete) were answered so far.
    pub fn writes(&self) -> usize {
        self.lock().writes
    }

    /// Every request so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    /// Resolves once `pred` holds for the stored objects (checked on every change).
    pub async fn until(&self, pred: impl Fn(&BTreeMap<(String, String), Value>) -> bool) {
        let mut rx = self.changed.subscribe();
        loop {
            let objects = self.lock().objects.clone();
            if pred(&objects) {
                return;
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    }

    fn handle(&self, method: &Method, path: &str, query: &str, body: &[u8]) -> Reply {
        let Some((resource, name, sub)) = parse_path(path) else {
            return status(
                StatusCode::NOT_FOUND,
                "NotFound",
                format!("no route {path}"),
            );
        };
        let watch = query
            .split('&')
            .any(|kv| kv == "watch=true" || kv == "watch=1");
        let verb: &'static str = match (method, &name) {
            (&Method::GET, None) if watch => "watch",
            (&Method::GET, None) => "list",
            (&Method::GET, Some(_)) => "get",
            (&Method::POST, _) => "create",
            (&Method::PUT, _) => "update",
            (&Method::PATCH, _) => "patch",
            (&Method::DELETE, _) => "delete",
            _ => "other",
        };
        let mut s = self.lock();
        s.calls.push(Call {
            verb,
            resource: resource.clone(),
            name: name.clone().unwrap_or_default(),
            after: Value::Null,
        });
        if s.unserved.contains(&resource) {
            return Response::builder()
                .status(StatusCode::NOT_FOUND)
                .header("content-type", "text/plain; charset=utf-8")
                .body(Full::new(Bytes::from_static(b"404 page not found\n")))
                .expect("a status and a body make a response");
        }
        if s.forbidden
            .iter()
            .any(|(r, v)| *r == resource && *v == verb)
        {
            return status(
                StatusCode::FORBIDDEN,
                "Forbidden",
                format!("{resource} is forbidden: cannot {verb} {resource} in namespace {NS}"),
            );
        }
        // No watches here: ktx's waits then poll, as they do for a Role without `watch`.
        if verb == "watch" {
            return status(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                format!("the fake does not watch {resource}"),
            );
        }
        // The `scale` subresource of workloads (exchange --mode scale): a view of the object's
        // replicas; a patch of it is a patch of the object's spec.replicas.
        let scale = sub.as_deref() == Some("scale")
            && matches!(resource.as_str(), "deployments" | "statefulsets");
        if sub.is_some() && !scale {
            return status(
                StatusCode::NOT_FOUND,
                "NotFound",
                format!("the fake has no {path}"),
            );
        }
        if !matches!(verb, "list" | "get") {
            s.writes += 1;
            if s.fail_write == Some(s.writes) {
                return status(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "InternalError",
                    format!(
                        "injected failure of write #{} ({verb} {resource})",
                        s.writes
                    ),
                );
            }
        }
        let body: Value = if body.is_empty() {
            Value::Null
        } else {
            match serde_json::from_slice(body) {
                Ok(v) => v,
                Err(e) => return status(StatusCode::BAD_REQUEST, "BadRequest", e.to_string()),
            }
        };
        let key = |n: &str| (resource.clone(), n.to_string());
        let out = match verb {
            "list" => {
                let selector = query
                    .split('&')
                    .find_map(|kv| kv.strip_prefix("labelSelector="))
                    .map(percent_decode)
                    .unwrap_or_default();
                let items: Vec<Value> = s
                    .objects
                    .iter()
                    .filter(|((r, _), v)| *r == resource && labels_match(v, &selector))
                    .map(|(_, v)| v.clone())
                    .collect();
                return reply(
                    StatusCode::OK,
                    &json!({
                        "apiVersion": "v1", "kind": kind_of_list(&resource),
                        "metadata": { "resourceVersion": s.version.to_string() },
                        "items": items,
                    }),
                );
            }
            "get" => {
                let n = name.expect("get has a name");
                return match s.objects.get(&key(&n)) {
                    Some(v) if scale => reply(StatusCode::OK, &scale_of(v)),
                    Some(v) => reply(StatusCode::OK, v),
                    None => not_found(&resource, &n),
                };
            }
            "create" => {
                let mut v = body;
                // As the API server: an object must say what it is.
                if !v["kind"].is_string() || !v["apiVersion"].is_string() {
                    return status(
                        StatusCode::BAD_REQUEST,
                        "BadRequest",
                        format!("{resource} cannot be handled: Object 'Kind' is missing"),
                    );
                }
                let n = v["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                if s.objects.contains_key(&key(&n)) {
                    return status(
                        StatusCode::CONFLICT,
                        "AlreadyExists",
                        format!("{resource} \"{n}\" already exists"),
                    );
                }
                Self::stamp(&mut s, &resource, &mut v);
                s.objects.insert(key(&n), v.clone());
                (StatusCode::CREATED, v)
            }
            "update" | "patch" => {
                let n = name.expect("a write has a name");
                let Some(current) = s.objects.get(&key(&n)).cloned() else {
                    return not_found(&resource, &n);
                };
                if let Some(want) = body["metadata"]["uid"].as_str() {
                    if current["metadata"]["uid"].as_str() != Some(want) {
                        return status(
                            StatusCode::CONFLICT,
                            "Conflict",
                            format!("Precondition failed: UID in precondition: {want}, UID in object meta: {}", current["metadata"]["uid"]),
                        );
                    }
                }
                let mut v = if verb == "update" {
                    if body["metadata"]["resourceVersion"] != current["metadata"]["resourceVersion"]
                    {
                        return status(
                            StatusCode::CONFLICT,
                            "Conflict",
                            format!("Operation cannot be fulfilled on {resource} \"{n}\": the object has been modified"),
                        );
                    }
                    body
                } else {
                    let mut v = current.clone();
                    merge_patch(&mut v, &body);
                    v
                };
                s.version += 1;
                v["metadata"]["uid"] = current["metadata"]["uid"].clone();
                v["metadata"]["namespace"] = json!(NS);
                v["metadata"]["resourceVersion"] = json!(s.version.to_string());
                let spec_changed = v["spec"] != current["spec"];
                let generation = current["metadata"]["generation"].as_i64().unwrap_or(1);
                v["metadata"]["generation"] = json!(if spec_changed {
                    generation + 1
                } else {
                    generation
                });
                settle(&resource, &mut v, s.deployments_held);
                s.objects.insert(key(&n), v.clone());
                (StatusCode::OK, v)
            }
            "delete" => {
                let n = name.expect("delete has a name");
                let Some(current) = s.objects.get(&key(&n)).cloned() else {
                    return not_found(&resource, &n);
                };
                if let Some(want) = body["preconditions"]["uid"].as_str() {
                    if current["metadata"]["uid"].as_str() != Some(want) {
                        return status(
                            StatusCode::CONFLICT,
                            "Conflict",
                            format!("Precondition failed: UID in precondition: {want}, UID in object meta: {}", current["metadata"]["uid"]),
                        );
                    }
                }
                if s.slow_kubelet && resource == "pods" {
                    let mut terminating = current.clone();
                    terminating["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
                    s.objects.insert(key(&n), terminating);
                } else {
                    s.objects.remove(&key(&n));
                }
                Self::collect_garbage(&mut s);
                (StatusCode::OK, current)
            }
            _ => {
                return status(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "MethodNotAllowed",
                    path.into(),
                )
            }
        };
        if verb != "delete" {
            if let Some(last) = s.calls.last_mut() {
                last.after = out.1.clone();
            }
        }
        drop(s);
        self.changed.send_modify(|n| *n += 1);
        if scale {
            return reply(out.0, &scale_of(&out.1));
        }
        reply(out.0, &out.1)
    }

    /// Deletes every object whose owners (ownerReferences) are all gone, until none is left.
    fn collect_garbage(s: &mut State) {
        loop {
            let uids: std::collections::BTreeSet<String> = s
                .objects
                .values()
                .filter_map(|v| v["metadata"]["uid"].as_str().map(str::to_string))
                .collect();
            let orphaned: Vec<(String, String)> = s
                .objects
                .iter()
                .filter(|(_, v)| v["metadata"]["deletionTimestamp"].is_null())
                .filter(|(_, v)| {
                    v["metadata"]["ownerReferences"]
                        .as_array()
                        .is_some_and(|refs| {
                            !refs.is_empty()
                                && refs
                                    .iter()
                                    .all(|r| !uids.contains(r["uid"].as_str().unwrap_or_default()))
                        })
                })
                .map(|(k, _)| k.clone())
                .collect();
            if orphaned.is_empty() {
                return;
            }
            for k in orphaned {
                if s.slow_kubelet && k.0 == "pods" {
                    if let Some(v) = s.objects.get_mut(&k) {
                        v["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
                    }
                } else {
                    s.objects.remove(&k);
                }
            }
        }
    }
}

fn not_found(resource: &str, name: &str) -> Reply {
    status(
        StatusCode::NOT_FOUND,
        "NotFound",
        format!("{resource} \"{name}\" not found"),
    )
}

impl tower_service::Service<Request<kube::client::Body>> for Fake {
    type Response = Reply;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Reply, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<kube::client::Body>) -> Self::Future {
        let fake = self.clone();
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            let body = body.collect_bytes().await.unwrap_or_default();
            let path = parts.uri.path().to_string();
            let query = parts.uri.query().unwrap_or("").to_string();
            Ok(fake.handle(&parts.method, &path, &query, &body))
        })
    }
}
