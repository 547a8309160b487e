//! A Kubernetes API server for the subset the token refresher uses, over real HTTP, answering
//! with the real API's shapes and status codes: namespaces (list/watch, terminating), secrets
//! (list/watch across namespaces with field selectors, get, server-side apply with field
//! ownership and conflicts, delete), serviceaccounts (strategic merge of `imagePullSecrets`) and
//! coordination.k8s.io Leases (get, create, apply, patch), SelfSubjectAccessReviews (201 with
//! `status.allowed`, denied for the verbs a test names), and the discovery documents a REST
//! mapper reads (so `helm --dry-run=server` can `lookup` Secrets here). Watches stream newline-delimited
//! events from a resourceVersion and answer a compacted one with a 410 `Expired` event, as the
//! real server does. No kube-apiserver exists on this machine; this is the stand-in the real
//! kube client talks to.
//!
//! Tests drive it through a handle: add and terminate namespaces, delete or edit secrets,
//! inject failures, compact the event log, count requests.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

type Key = (&'static str, String, String);

#[derive(Clone, Copy)]
struct Kind {
    resource: &'static str,
    api_version: &'static str,
    kind: &'static str,
    namespaced: bool,
}

const KINDS: &[Kind] = &[
    Kind {
        resource: "namespaces",
        api_version: "v1",
        kind: "Namespace",
        namespaced: false,
    },
    Kind {
        resource: "secrets",
        api_version: "v1",
        kind: "Secret",
        namespaced: true,
    },
    Kind {
        resource: "serviceaccounts",
        api_version: "v1",
        kind: "ServiceAccount",
        namespaced: true,
    },
    Kind {
        resource: "leases",
        api_version: "coordination.k8s.io/v1",
        kind: "Lease",
        namespaced: true,
    },
];

struct Event {
    rv: u64,
    resource: &'static str,
    deleted: bool,
    old: Option<Value>,
    new: Value,
}

struct Fault {
    method: String,
    path_contains: String,
    code: u16,
    remaining: usize,
}

#[derive(Default)]
struct State {
    rv: u64,
    objects: BTreeMap<Key, Value>,
    /// Which field manager owns each leaf field (JSON pointer) of each object.
    owners: HashMap<Key, HashMap<String, String>>,
    events: Vec<Event>,
    /// Watches from below this resourceVersion get 410 Gone.
    compacted: u64,
    /// Bumped by a compaction, which also ends every open watch (as an API server restart does).
    epoch: u64,
    faults: Vec<Fault>,
    requests: Vec<(String, String)>,
    /// (verb, resource) pairs a SelfSubjectAccessReview answers as not allowed.
    denied: Vec<(String, String)>,
}

#[derive(Clone)]
pub struct FakeKube {
    state: Arc<Mutex<State>>,
    changed: tokio::sync::watch::Sender<u64>,
    pub addr: SocketAddr,
}

impl FakeKube {
    /// Serves on a loopback port from its own thread, so sync and async tests can share it.
    pub fn start() -> FakeKube {
        let (tx, rx) = std::sync::mpsc::channel();
        let (changed, _) = tokio::sync::watch::channel(0);
        let state: Arc<Mutex<State>> = Arc::default();
        let kube_state = state.clone();
        let kube_changed = changed.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind");
                let kube = FakeKube {
                    state: kube_state,
                    changed: kube_changed,
                    addr: listener.local_addr().expect("addr"),
                };
                tx.send(kube.addr).expect("send");
                let app = axum::Router::new().fallback(move |m, u, h, b| {
                    let kube = kube.clone();
                    async move { kube.handle(m, u, h, b).await }
                });
                let _ = axum::serve(listener, app).await;
            });
        });
        let addr = rx.recv().expect("fake kube started");
        FakeKube {
            state,
            changed,
            addr,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kubeconfig pointing at this server, for processes (`KUBECONFIG`).
    pub fn write_kubeconfig(&self, dir: &Path) -> PathBuf {
        let path = dir.join("kubeconfig");
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {}\n\
             users:\n- name: fake\n  user:\n    token: fake-token\ncontexts:\n- name: fake\n  context:\n    \
             cluster: fake\n    user: fake\ncurrent-context: fake\n",
            self.url()
        );
        std::fs::write(&path, text).expect("write kubeconfig");
        path
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn create_namespace(&self, name: &str, labels: &[(&str, &str)]) {
        let labels: serde_json::Map<String, Value> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), Value::from(*v)))
            .collect();
        let object =
            json!({"metadata": {"name": name, "labels": labels}, "status": {"phase": "Active"}});
        let mut state = self.lock();
        self.store(&mut state, kind("namespaces"), "", name, object);
    }

    /// What `kubectl delete namespace` does first: the namespace stays, marked for deletion.
    pub fn terminate_namespace(&self, name: &str) {
        let mut state = self.lock();
        let key = ("namespaces", String::new(), name.to_owned());
        let Some(mut object) = state.objects.get(&key).cloned() else {
            return;
        };
        object["metadata"]["deletionTimestamp"] = now().into();
        object["status"]["phase"] = "Terminating".into();
        self.store(&mut state, kind("namespaces"), "", name, object);
    }

    /// Removes the namespace and everything in it.
    pub fn delete_namespace(&self, name: &str) {
        let mut state = self.lock();
        let doomed: Vec<Key> = state
            .objects
            .keys()
            .filter(|(r, ns, n)| ns == name || (*r == "namespaces" && n == name))
            .cloned()
            .collect();
        for key in doomed {
            self.remove(&mut state, &key);
        }
    }

    pub fn create_service_account(&self, namespace: &str, name: &str) {
        let mut state = self.lock();
        self.store(
            &mut state,
            kind("serviceaccounts"),
            namespace,
            name,
            json!({"metadata": {"name": name}}),
        );
    }

    /// Stores a Secret as a client's create would (one an earlier `helm install` made, say).
    pub fn create_secret(&self, namespace: &str, object: Value) {
        let name = object["metadata"]["name"]
            .as_str()
            .expect("Secret name")
            .to_owned();
        let mut state = self.lock();
        self.store(&mut state, kind("secrets"), namespace, &name, object);
    }

    pub fn get(&self, resource: &str, namespace: &str, name: &str) -> Option<Value> {
        let key = (
            kind(resource).resource,
            namespace.to_owned(),
            name.to_owned(),
        );
        self.lock().objects.get(&key).cloned()
    }

    pub fn delete(&self, resource: &str, namespace: &str, name: &str) -> bool {
        let key = (
            kind(resource).resource,
            namespace.to_owned(),
            name.to_owned(),
        );
        let mut state = self.lock();
        self.remove(&mut state, &key)
    }

    /// An edit by someone else (`kubectl edit`): replaces the secret's data.
    pub fn edit_secret(&self, namespace: &str, name: &str, data: Value) {
        let mut state = self.lock();
        let key = ("secrets", namespace.to_owned(), name.to_owned());
        if let Some(mut object) = state.objects.get(&key).cloned() {
            object["data"] = data;
            self.store(&mut state, kind("secrets"), namespace, name, object);
        }
    }

    /// The next `times` requests whose method is `method` and path contains `path_contains` get
    /// `code` with the real API's reason for it.
    pub fn fail(&self, method: &str, path_contains: &str, code: u16, times: usize) {
        self.lock().faults.push(Fault {
            method: method.to_owned(),
            path_contains: path_contains.to_owned(),
            code,
            remaining: times,
        });
    }

    /// SelfSubjectAccessReviews for `verb` on `resource` answer "not allowed" from now on (every
    /// other review is allowed, as for a cluster admin).
    pub fn deny(&self, verb: &str, resource: &str) {
        self.lock()
            .denied
            .push((verb.to_owned(), resource.to_owned()));
    }

    /// Forgets the event log and ends open watches: watches resumed from an older
    /// resourceVersion get 410 Gone, so clients must list again.
    pub fn compact(&self) {
        let mut state = self.lock();
        state.compacted = state.rv + 1;
        state.events.clear();
        state.epoch += 1;
        self.changed.send_replace(state.rv);
    }

    /// Requests so far whose method is `method` and path contains `path_contains`.
    pub fn requests(&self, method: &str, path_contains: &str) -> usize {
        self.lock()
            .requests
            .iter()
            .filter(|(m, p)| m == method && p.contains(path_contains))
            .count()
    }

    fn store(&self, state: &mut State, kind: Kind, namespace: &str, name: &str, mut object: Value) {
        let key = (kind.resource, namespace.to_owned(), name.to_owned());
        let old = state.objects.get(&key).cloned();
        object["apiVersion"] = kind.api_version.into();
        object["kind"] = kind.kind.into();
        let meta = &mut object["metadata"];
        meta["name"] = name.into();
        if kind.namespaced {
            meta["namespace"] = namespace.into();
        }
        let previous_meta = old.as_ref().map(|o| &o["metadata"]);
        meta["uid"] = previous_meta
            .map(|m| m["uid"].clone())
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string().into());
        meta["creationTimestamp"] = previous_meta
            .map(|m| m["creationTimestamp"].clone())
            .unwrap_or_else(|| now().into());
        if let Some(old) = &old {
            let mut same = object.clone();
            same["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"].clone();
            if same == *old {
                return; // no change: no new resourceVersion, no event, as the real server
            }
        }
        state.rv += 1;
        object["metadata"]["resourceVersion"] = state.rv.to_string().into();
        state.objects.insert(key, object.clone());
        state.events.push(Event {
            rv: state.rv,
            resource: kind.resource,
            deleted: false,
            old,
            new: object,
        });
        self.changed.send_replace(state.rv);
    }

    fn remove(&self, state: &mut State, key: &Key) -> bool {
        let Some(object) = state.objects.remove(key) else {
            return false;
        };
        state.owners.remove(key);
        state.rv += 1;
        let mut gone = object.clone();
        gone["metadata"]["resourceVersion"] = state.rv.to_string().into();
        state.events.push(Event {
            rv: state.rv,
            resource: key.0,
            deleted: true,
            old: Some(object),
            new: gone,
        });
        self.changed.send_replace(state.rv);
        true
    }

    async fn handle(self, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
        let path = uri.path().to_owned();
        let query: HashMap<String, String> = uri.query().map(url_pairs).unwrap_or_default();
        {
            let mut state = self.lock();
            state.requests.push((method.to_string(), path.clone()));
            if let Some(code) = take_fault(&mut state, method.as_str(), &path) {
                return status(code, "injected failure");
            }
        }
        if let Some(document) = discovery(&path) {
            return (StatusCode::OK, axum::Json(document)).into_response();
        }
        if path == "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"
            && method == Method::POST
        {
            return self.review_access(&body);
        }
        let Some(target) = Target::parse(&path) else {
            return status(
                404,
                &format!("the server could not find the requested resource ({path})"),
            );
        };
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        match (method, &target.name) {
            (Method::GET, None) if is_true(query.get("watch")) => self.watch(target, query).await,
            (Method::GET, None) => self.list(&target, &query),
            (Method::GET, Some(name)) => self.read(&target, name),
            (Method::POST, None) => self.create(&target, &body),
            (Method::PATCH, Some(name)) => self.patch(&target, name, &content_type, &query, &body),
            (Method::DELETE, Some(name)) => {
                let key = (target.kind.resource, target.namespace.clone(), name.clone());
                let mut state = self.lock();
                let object = state.objects.get(&key).cloned();
                match object {
                    Some(object) => {
                        self.remove(&mut state, &key);
                        (StatusCode::OK, axum::Json(object)).into_response()
                    }
                    None => not_found(&target, name),
                }
            }
            _ => status(405, "method not allowed"),
        }
    }

    /// A SelfSubjectAccessReview answered as the real server does: 201 with the review and its
    /// `status`, whether or not access is allowed.
    fn review_access(&self, body: &Bytes) -> Response {
        let Ok(mut review) = serde_json::from_slice::<Value>(body) else {
            return status(400, "the body is not a SelfSubjectAccessReview");
        };
        let attributes = &review["spec"]["resourceAttributes"];
        let verb = attributes["verb"].as_str().unwrap_or_default();
        let resource = attributes["resource"].as_str().unwrap_or_default();
        let denied = self
            .lock()
            .denied
            .iter()
            .any(|(v, r)| v == verb && r == resource);
        review["status"] = if denied {
            json!({"allowed": false, "reason": "no RBAC policy matched"})
        } else {
            json!({"allowed": true, "reason": "RBAC: allowed by ClusterRoleBinding"})
        };
        review["apiVersion"] = "authorization.k8s.io/v1".into();
        review["kind"] = "SelfSubjectAccessReview".into();
        (StatusCode::CREATED, axum::Json(review)).into_response()
    }

    /// Pages with `limit` and `continue` as the real server does (the token is an offset here).
    fn list(&self, target: &Target, query: &HashMap<String, String>) -> Response {
        let state = self.lock();
        let selector = Selector::new(query);
        let skip: usize = query
            .get("continue")
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let limit: usize = query
            .get("limit")
            .and_then(|l| l.parse().ok())
            .filter(|l| *l > 0)
            .unwrap_or(usize::MAX);
        let mut matching = state
            .objects
            .iter()
            .filter(|((r, ns, _), o)| {
                *r == target.kind.resource && target.covers(ns) && selector.matches(o)
            })
            .map(|(_, o)| o)
            .skip(skip);
        let items: Vec<&Value> = matching.by_ref().take(limit).collect();
        let mut metadata = json!({"resourceVersion": state.rv.to_string()});
        if matching.next().is_some() {
            metadata["continue"] = (skip + items.len()).to_string().into();
        }
        axum::Json(json!({
            "apiVersion": target.kind.api_version,
            "kind": format!("{}List", target.kind.kind),
            "metadata": metadata,
            "items": items,
        }))
        .into_response()
    }

    fn read(&self, target: &Target, name: &str) -> Response {
        let key = (
            target.kind.resource,
            target.namespace.clone(),
            name.to_owned(),
        );
        match self.lock().objects.get(&key) {
            Some(o) => axum::Json(o.clone()).into_response(),
            None => not_found(target, name),
        }
    }

    fn create(&self, target: &Target, body: &[u8]) -> Response {
        let Ok(object) = serde_json::from_slice::<Value>(body) else {
            return status(400, "the body is not JSON");
        };
        let Some(name) = object["metadata"]["name"].as_str().map(str::to_owned) else {
            return status(422, "metadata.name: Required value");
        };
        let mut state = self.lock();
        if let Some(refused) = namespace_refuses(&state, target) {
            return refused;
        }
        let key = (target.kind.resource, target.namespace.clone(), name.clone());
        if state.objects.contains_key(&key) {
            return status_reason(
                409,
                "AlreadyExists",
                &format!("{} \"{name}\" already exists", target.kind.resource),
            );
        }
        self.store(&mut state, target.kind, &target.namespace, &name, object);
        (StatusCode::CREATED, axum::Json(state.objects[&key].clone())).into_response()
    }

    fn patch(
        &self,
        target: &Target,
        name: &str,
        content_type: &str,
        query: &HashMap<String, String>,
        body: &[u8],
    ) -> Response {
        let Ok(patch) = serde_json::from_slice::<Value>(body) else {
            return status(400, "the patch is not JSON");
        };
        let apply = content_type.starts_with("application/apply-patch");
        let manager = query.get("fieldManager").cloned();
        if apply && manager.is_none() {
            return status(
                400,
                "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
            );
        }
        let manager = manager.unwrap_or_else(|| "unknown".to_owned());
        let key = (
            target.kind.resource,
            target.namespace.clone(),
            name.to_owned(),
        );
        let mut state = self.lock();
        let current = match state.objects.get(&key).cloned() {
            Some(current) => current,
            None if apply => {
                if let Some(refused) = namespace_refuses(&state, target) {
                    return refused;
                }
                json!({"metadata": {}})
            }
            None => return not_found(target, name),
        };
        let fields = leaves(&strip_identity(&patch));
        let owners = state.owners.entry(key.clone()).or_default();
        if apply && !is_true(query.get("force")) {
            let conflicts: Vec<String> = fields
                .iter()
                .filter(|(path, value)| {
                    owners.get(path).is_some_and(|o| *o != manager)
                        && current.pointer(path) != Some(value)
                })
                .map(|(path, _)| path.clone())
                .collect();
            if !conflicts.is_empty() {
                return status_reason(
                    409,
                    "Conflict",
                    &format!(
                        "Apply failed with {} conflicts: {}",
                        conflicts.len(),
                        conflicts.join(", ")
                    ),
                );
            }
        }
        for (path, value) in &fields {
            if value.is_null() {
                owners.remove(path);
            } else {
                owners.insert(path.clone(), manager.clone());
            }
        }
        let mut merged = current;
        merge(
            &mut merged,
            &patch,
            content_type.starts_with("application/strategic-merge-patch"),
        );
        self.store(&mut state, target.kind, &target.namespace, name, merged);
        axum::Json(state.objects[&key].clone()).into_response()
    }

    async fn watch(&self, target: Target, query: HashMap<String, String>) -> Response {
        let selector = Selector::new(&query);
        let timeout = query
            .get("timeoutSeconds")
            .and_then(|t| t.parse().ok())
            .unwrap_or(290u64);
        let from = query
            .get("resourceVersion")
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        let mut rx = self.changed.subscribe();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout);
        let (gone, cursor, initial, epoch) = {
            let state = self.lock();
            let epoch = state.epoch;
            if from != 0 && from < state.compacted {
                (true, 0, Vec::new(), epoch)
            } else if from == 0 {
                // "0": the current state as ADDED events, then changes.
                let initial = state
                    .objects
                    .iter()
                    .filter(|((r, ns, _), o)| {
                        *r == target.kind.resource && target.covers(ns) && selector.matches(o)
                    })
                    .map(|(_, o)| line("ADDED", o))
                    .collect();
                (false, state.rv, initial, epoch)
            } else {
                (false, from, Vec::new(), epoch)
            }
        };
        if gone {
            let expired = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": format!("too old resource version: {from} ({})", self.lock().compacted),
                "reason": "Expired", "code": 410});
            return json_lines(vec![line("ERROR", &expired)]);
        }
        rx.borrow_and_update();
        let watch = Watch {
            kube: self.clone(),
            target,
            selector,
            rx,
            cursor,
            pending: initial,
            deadline,
            epoch,
        };
        let stream = futures_util::stream::unfold(watch, |mut w| async move {
            w.next_chunk()
                .await
                .map(|chunk| (Ok::<_, std::io::Error>(chunk), w))
        });
        Response::builder()
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from_stream(stream))
            .unwrap_or_else(|_| status(500, "response"))
    }
}

/// One watch connection: events after `cursor`, as they happen, until `deadline`.
struct Watch {
    kube: FakeKube,
    target: Target,
    selector: Selector,
    rx: tokio::sync::watch::Receiver<u64>,
    cursor: u64,
    pending: Vec<Vec<u8>>,
    deadline: tokio::time::Instant,
    epoch: u64,
}

impl Watch {
    async fn next_chunk(&mut self) -> Option<Bytes> {
        loop {
            if !self.pending.is_empty() {
                return Some(Bytes::from(std::mem::take(&mut self.pending).concat()));
            }
            {
                let state = self.kube.lock();
                if state.epoch != self.epoch {
                    return None;
                }
                let start = state.events.partition_point(|e| e.rv <= self.cursor);
                for e in &state.events[start..] {
                    if e.resource == self.target.kind.resource
                        && let Some((kind, object)) = classify(e, &self.target, &self.selector)
                    {
                        self.pending.push(line(kind, object));
                    }
                }
                self.cursor = self.cursor.max(state.rv);
            }
            if self.pending.is_empty()
                && tokio::time::timeout_at(self.deadline, self.rx.changed())
                    .await
                    .is_err()
            {
                return None;
            }
        }
    }
}

/// What a watcher with this selector sees of an event: objects entering the selection are
/// ADDED, leaving it DELETED.
fn classify<'e>(
    e: &'e Event,
    target: &Target,
    selector: &Selector,
) -> Option<(&'static str, &'e Value)> {
    let namespace = e.new["metadata"]["namespace"].as_str().unwrap_or("");
    if !target.covers(namespace) {
        return None;
    }
    let was = e.old.as_ref().is_some_and(|o| selector.matches(o));
    let is = selector.matches(&e.new);
    match (e.deleted, was, is) {
        (true, true, _) => Some(("DELETED", &e.new)),
        (true, false, _) => None,
        (false, false, true) => Some(("ADDED", &e.new)),
        (false, true, true) => Some(("MODIFIED", &e.new)),
        (false, true, false) => Some(("DELETED", &e.new)),
        (false, false, false) => None,
    }
}

#[derive(Clone)]
struct Target {
    kind: Kind,
    /// Empty: cluster-scoped, or all namespaces.
    namespace: String,
    name: Option<String>,
}

impl Target {
    fn parse(path: &str) -> Option<Target> {
        let rest = path
            .strip_prefix("/api/v1/")
            .or_else(|| path.strip_prefix("/apis/coordination.k8s.io/v1/"))?;
        let parts: Vec<&str> = rest.split('/').filter(|p| !p.is_empty()).collect();
        let (resource, namespace, name) = match parts.as_slice() {
            [r] => (*r, "", None),
            ["namespaces", n] => ("namespaces", "", Some(*n)),
            ["namespaces", ns, r] => (*r, *ns, None),
            ["namespaces", ns, r, n] => (*r, *ns, Some(*n)),
            [r, n] => (*r, "", Some(*n)),
            _ => return None,
        };
        let kind = *KINDS.iter().find(|k| k.resource == resource)?;
        Some(Target {
            kind,
            namespace: namespace.to_owned(),
            name: name.map(str::to_owned),
        })
    }

    fn covers(&self, namespace: &str) -> bool {
        self.namespace.is_empty() || self.namespace == namespace
    }
}

/// Label selectors (`k=v`, `k!=v`, `k`, `!k`) and field selectors on name and namespace.
#[derive(Clone, Default)]
struct Selector {
    labels: Vec<String>,
    fields: Vec<String>,
}

impl Selector {
    fn new(query: &HashMap<String, String>) -> Selector {
        let split = |k: &str| -> Vec<String> {
            query
                .get(k)
                .map(|v| {
                    v.split(',')
                        .filter(|t| !t.is_empty())
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default()
        };
        Selector {
            labels: split("labelSelector"),
            fields: split("fieldSelector"),
        }
    }

    fn matches(&self, object: &Value) -> bool {
        let labels = &object["metadata"]["labels"];
        let label_ok = self.labels.iter().all(|term| {
            if let Some((k, v)) = term.split_once("!=") {
                labels[k].as_str() != Some(v)
            } else if let Some((k, v)) = term.split_once('=') {
                labels[k.trim_end_matches('=')].as_str() == Some(v)
            } else if let Some(k) = term.strip_prefix('!') {
                labels[k].is_null()
            } else {
                !labels[term.as_str()].is_null()
            }
        });
        let field_ok = self.fields.iter().all(|term| {
            let Some((k, v)) = term.split_once('=') else {
                return false;
            };
            let v = v.trim_start_matches('=');
            match k {
                "metadata.name" => object["metadata"]["name"].as_str() == Some(v),
                "metadata.namespace" => object["metadata"]["namespace"].as_str() == Some(v),
                _ => false,
            }
        });
        label_ok && field_ok
    }
}

/// The API groups and resources a client's REST mapper asks about (`helm --dry-run=server`
/// maps every kind the chart renders before `lookup` runs); served as the legacy discovery
/// documents, which clients fall back to when the aggregated form is not offered.
/// (resource, kind, namespaced)
type Resource = (&'static str, &'static str, bool);

const DISCOVERY: &[(&str, &[Resource])] = &[
    (
        "v1",
        &[
            ("namespaces", "Namespace", false),
            ("secrets", "Secret", true),
            ("serviceaccounts", "ServiceAccount", true),
            ("services", "Service", true),
            ("configmaps", "ConfigMap", true),
            ("persistentvolumeclaims", "PersistentVolumeClaim", true),
        ],
    ),
    (
        "apps/v1",
        &[
            ("deployments", "Deployment", true),
            ("daemonsets", "DaemonSet", true),
        ],
    ),
    ("batch/v1", &[("cronjobs", "CronJob", true)]),
    (
        "networking.k8s.io/v1",
        &[("networkpolicies", "NetworkPolicy", true)],
    ),
    (
        "rbac.authorization.k8s.io/v1",
        &[
            ("roles", "Role", true),
            ("rolebindings", "RoleBinding", true),
            ("clusterroles", "ClusterRole", false),
            ("clusterrolebindings", "ClusterRoleBinding", false),
        ],
    ),
    ("coordination.k8s.io/v1", &[("leases", "Lease", true)]),
];

fn discovery(path: &str) -> Option<Value> {
    let resources = |group_version: &str| {
        DISCOVERY
            .iter()
            .find(|(gv, _)| *gv == group_version)
            .map(|(gv, list)| {
                let resources: Vec<Value> = list
                    .iter()
                    .map(|(name, kind, namespaced)| {
                        json!({"name": name, "singularName": "", "namespaced": namespaced,
                            "kind": kind, "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"]})
                    })
                    .collect();
                json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources})
            })
    };
    match path {
        "/version" => Some(json!({"major": "1", "minor": "34", "gitVersion": "v1.34.0",
            "platform": "linux/amd64"})),
        "/api" => Some(json!({"kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]})),
        "/apis" => {
            let groups: Vec<Value> = DISCOVERY
                .iter()
                .filter_map(|(gv, _)| gv.split_once('/'))
                .map(|(group, version)| {
                    let v =
                        json!({"groupVersion": format!("{group}/{version}"), "version": version});
                    json!({"name": group, "versions": [v.clone()], "preferredVersion": v})
                })
                .collect();
            Some(json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}))
        }
        "/api/v1" => resources("v1"),
        _ => resources(path.strip_prefix("/apis/")?),
    }
}

fn kind(resource: &str) -> Kind {
    *KINDS
        .iter()
        .find(|k| k.resource == resource)
        .unwrap_or_else(|| panic!("the fake API has no {resource}"))
}

fn now() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

fn is_true(v: Option<&String>) -> bool {
    matches!(v.map(String::as_str), Some("true" | "1"))
}

fn url_pairs(query: &str) -> HashMap<String, String> {
    query
        .split('&')
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let decode = |s: &str| {
                percent_encoding::percent_decode_str(&s.replace('+', " "))
                    .decode_utf8_lossy()
                    .into_owned()
            };
            (decode(k), decode(v))
        })
        .collect()
}

fn take_fault(state: &mut State, method: &str, path: &str) -> Option<u16> {
    let fault = state
        .faults
        .iter_mut()
        .find(|f| f.remaining > 0 && f.method == method && path.contains(&f.path_contains))?;
    fault.remaining -= 1;
    Some(fault.code)
}

/// Creating in a namespace that does not exist is 404; in one being deleted, 403.
fn namespace_refuses(state: &State, target: &Target) -> Option<Response> {
    if !target.kind.namespaced {
        return None;
    }
    let key = ("namespaces", String::new(), target.namespace.clone());
    match state.objects.get(&key) {
        None => Some(status_reason(
            404,
            "NotFound",
            &format!("namespaces \"{}\" not found", target.namespace),
        )),
        Some(ns) if !ns["metadata"]["deletionTimestamp"].is_null() => Some(status_reason(
            403,
            "Forbidden",
            &format!(
                "{} is forbidden: unable to create new content in namespace {} because it is being terminated",
                target.kind.resource, target.namespace
            ),
        )),
        Some(_) => None,
    }
}

fn status(code: u16, message: &str) -> Response {
    let reason = match code {
        400 => "BadRequest",
        403 => "Forbidden",
        404 => "NotFound",
        405 => "MethodNotAllowed",
        409 => "Conflict",
        410 => "Expired",
        422 => "Invalid",
        429 => "TooManyRequests",
        503 => "ServiceUnavailable",
        _ => "InternalError",
    };
    status_reason(code, reason, message)
}

fn status_reason(code: u16, reason: &str, message: &str) -> Response {
    let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code});
    (
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        axum::Json(body),
    )
        .into_response()
}

fn not_found(target: &Target, name: &str) -> Response {
    status_reason(
        404,
        "NotFound",
        &format!("{} \"{name}\" not found", target.kind.resource),
    )
}

fn line(kind: &str, object: &Value) -> Vec<u8> {
    let mut out = serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap_or_default();
    out.push(b'\n');
    out
}

fn json_lines(lines: Vec<Vec<u8>>) -> Response {
    Response::builder()
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(lines.concat()))
        .unwrap_or_else(|_| status(500, "response"))
}

/// The patch without the fields that name the object.
fn strip_identity(patch: &Value) -> Value {
    let mut p = patch.clone();
    if let Some(o) = p.as_object_mut() {
        o.remove("apiVersion");
        o.remove("kind");
    }
    if let Some(m) = p.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("name");
        m.remove("namespace");
    }
    p
}

/// Leaf fields of a patch as JSON pointers (objects recurse; arrays and scalars are leaves).
fn leaves(value: &Value) -> Vec<(String, Value)> {
    fn walk(prefix: String, value: &Value, out: &mut Vec<(String, Value)>) {
        match value {
            Value::Object(map) if !map.is_empty() => {
                for (k, v) in map {
                    walk(
                        format!("{prefix}/{}", k.replace('~', "~0").replace('/', "~1")),
                        v,
                        out,
                    );
                }
            }
            other => out.push((prefix, other.clone())),
        }
    }
    let mut out = Vec::new();
    walk(String::new(), value, &mut out);
    out
}

/// JSON merge patch (null deletes); with `strategic`, `imagePullSecrets` lists merge by name
/// as the ServiceAccount's patch strategy says.
fn merge(target: &mut Value, patch: &Value, strategic: bool) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    let Some(map) = target.as_object_mut() else {
        return;
    };
    for (k, v) in patch {
        if v.is_null() {
            map.remove(k);
        } else if strategic && k == "imagePullSecrets" && v.is_array() {
            let list = map.entry(k).or_insert_with(|| json!([]));
            if !list.is_array() {
                *list = json!([]);
            }
            if let (Some(list), Some(add)) = (list.as_array_mut(), v.as_array()) {
                for item in add {
                    if !list.iter().any(|e| e["name"] == item["name"]) {
                        list.push(item.clone());
                    }
                }
            }
        } else {
            merge(map.entry(k).or_insert(Value::Null), v, strategic);
        }
    }
}

impl FakeKube {
    /// The real kube client, talking to this server.
    pub fn client(&self) -> ::kube::Client {
        let config = ::kube::Config::new(self.url().parse().expect("url"));
        ::kube::Client::try_from(config).expect("kube client")
    }
}
