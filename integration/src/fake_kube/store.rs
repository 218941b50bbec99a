//! The fake API server's objects, history and open watches: what etcd and the watch cache
//! are to a real one.
//!
//! One global `resourceVersion` counts every write. Each write is kept in the history so a
//! watch can resume after any version the history still holds; [`Store::compact`] forgets
//! it, after which such a watch gets `410 Gone`, as from a real API server.
//!
//! Objects are stored once per group and resource, and served at every version of it with
//! only `apiVersion` rewritten, as a CRD without a conversion webhook is.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::selector::Selector;

/// A kind of object the fake serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceType {
    /// API group; `""` for the core group.
    pub group: String,
    /// Served versions.
    pub versions: Vec<String>,
    /// Plural name, as in URLs.
    pub plural: String,
    /// `kind`.
    pub kind: String,
    /// Namespaced (else cluster-scoped).
    pub namespaced: bool,
    /// Has a `status` subresource: writes to the object ignore `status`, and writes to
    /// `/status` change only `status`.
    pub status_subresource: bool,
    /// A built-in type: its list items carry no `apiVersion` and `kind`, as the real API
    /// server's do not.
    pub builtin: bool,
}

impl ResourceType {
    /// A type served at `versions`.
    pub fn new(group: &str, versions: &[&str], plural: &str, kind: &str, namespaced: bool) -> Self {
        Self {
            group: group.into(),
            versions: versions.iter().map(|v| v.to_string()).collect(),
            plural: plural.into(),
            kind: kind.into(),
            namespaced,
            status_subresource: true,
            builtin: false,
        }
    }

    fn builtin(mut self) -> Self {
        self.builtin = true;
        self
    }

    /// Without a status subresource.
    pub fn without_status(mut self) -> Self {
        self.status_subresource = false;
        self
    }

    /// `apiVersion` at `version`.
    pub fn api_version(&self, version: &str) -> String {
        if self.group.is_empty() { version.to_string() } else { format!("{}/{version}", self.group) }
    }
}

/// What a standard cluster serves, plus the SMI CRDs at every version weft reads.
pub fn default_types() -> Vec<ResourceType> {
    let smi4 = ["v1alpha1", "v1alpha2", "v1alpha3", "v1alpha4"];
    vec![
        ResourceType::new("", &["v1"], "namespaces", "Namespace", false).builtin(),
        ResourceType::new("", &["v1"], "services", "Service", true).builtin(),
        ResourceType::new("", &["v1"], "pods", "Pod", true).builtin(),
        ResourceType::new("", &["v1"], "events", "Event", true).builtin().without_status(),
        ResourceType::new("", &["v1"], "secrets", "Secret", true).builtin().without_status(),
        ResourceType::new("", &["v1"], "configmaps", "ConfigMap", true).builtin().without_status(),
        ResourceType::new("", &["v1"], "serviceaccounts", "ServiceAccount", true).builtin().without_status(),
        ResourceType::new("discovery.k8s.io", &["v1"], "endpointslices", "EndpointSlice", true)
            .builtin()
            .without_status(),
        ResourceType::new("events.k8s.io", &["v1"], "events", "Event", true).builtin().without_status(),
        ResourceType::new("coordination.k8s.io", &["v1"], "leases", "Lease", true).builtin().without_status(),
        ResourceType::new("split.smi-spec.io", &smi4, "trafficsplits", "TrafficSplit", true),
        ResourceType::new("access.smi-spec.io", &smi4[..3], "traffictargets", "TrafficTarget", true),
        ResourceType::new("specs.smi-spec.io", &smi4, "httproutegroups", "HTTPRouteGroup", true)
            .without_status(),
        ResourceType::new("specs.smi-spec.io", &smi4, "tcproutes", "TCPRoute", true).without_status(),
    ]
}

/// Deployments and ReplicaSets (`apps/v1`), for tests that resolve a Deployment's pods.
pub fn apps_types() -> Vec<ResourceType> {
    vec![
        ResourceType::new("apps", &["v1"], "deployments", "Deployment", true).builtin(),
        ResourceType::new("apps", &["v1"], "replicasets", "ReplicaSet", true).builtin(),
    ]
}

/// Which objects a request is about.
#[derive(Debug, Clone)]
pub(super) struct Scope {
    pub(super) ty: ResourceType,
    pub(super) version: String,
    /// `None` for every namespace (or a cluster-scoped type).
    pub(super) namespace: Option<String>,
    pub(super) labels: Selector,
    pub(super) fields: Selector,
}

impl Scope {
    fn matches(&self, object: &Value) -> bool {
        let meta = &object["metadata"];
        let ns = meta["namespace"].as_str().unwrap_or("");
        if self.namespace.as_deref().is_some_and(|want| want != ns) {
            return false;
        }
        let labels = meta["labels"].as_object();
        let label = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str).map(str::to_string);
        let field = |k: &str| match k {
            "metadata.name" => meta["name"].as_str().map(str::to_string),
            "metadata.namespace" => Some(ns.to_string()),
            _ => None,
        };
        self.labels.matches(label) && self.fields.matches(field)
    }
}

/// One write, kept for watches that resume.
#[derive(Debug, Clone)]
struct Change {
    rv: u64,
    group: String,
    plural: String,
    type_: &'static str,
    object: Value,
}

/// An open watch: where its events go.
#[derive(Debug)]
struct Watch {
    scope: Scope,
    tx: mpsc::UnboundedSender<Bytes>,
    bookmarks: bool,
}

/// Why a request failed: an HTTP code and a Kubernetes Status reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Failure {
    pub(super) code: u16,
    pub(super) reason: &'static str,
    pub(super) message: String,
}

impl Failure {
    pub(super) fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self { code, reason, message: message.into() }
    }

    /// The Status object the API server answers with.
    pub(super) fn status(&self) -> Value {
        json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": self.message, "reason": self.reason, "code": self.code,
        })
    }
}

type ObjectKey = (String, String);

/// Everything the fake API server holds.
#[derive(Debug)]
pub(super) struct Store {
    pub(super) types: Vec<ResourceType>,
    objects: HashMap<(String, String), BTreeMap<ObjectKey, Value>>,
    rv: u64,
    history: Vec<Change>,
    compacted: u64,
    watches: Vec<Watch>,
    next_uid: u64,
}

impl Store {
    pub(super) fn new(types: Vec<ResourceType>) -> Self {
        Self {
            types,
            objects: HashMap::new(),
            rv: 1,
            history: Vec::new(),
            compacted: 0,
            watches: Vec::new(),
            next_uid: 0,
        }
    }

    pub(super) fn resource_version(&self) -> u64 {
        self.rv
    }

    /// The type served at `group/version` under `plural`.
    pub(super) fn find_type(&self, group: &str, version: &str, plural: &str) -> Option<ResourceType> {
        self.types
            .iter()
            .find(|t| t.group == group && t.plural == plural && t.versions.iter().any(|v| v == version))
            .cloned()
    }

    /// The type of `apiVersion` and `kind`.
    pub(super) fn type_of(&self, api_version: &str, kind: &str) -> Option<(ResourceType, String)> {
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        let ty = self
            .types
            .iter()
            .find(|t| t.group == group && t.kind == kind && t.versions.iter().any(|v| v == version))?;
        Some((ty.clone(), version.to_string()))
    }

    fn bucket(&self, ty: &ResourceType) -> Option<&BTreeMap<ObjectKey, Value>> {
        self.objects.get(&(ty.group.clone(), ty.plural.clone()))
    }

    /// An object at a version.
    pub(super) fn get(&self, ty: &ResourceType, version: &str, ns: &str, name: &str) -> Option<Value> {
        let object = self.bucket(ty)?.get(&(ns.to_string(), name.to_string()))?;
        Some(at_version(ty, version, object))
    }

    /// A list response.
    pub(super) fn list(&self, scope: &Scope) -> Value {
        let items: Vec<Value> = self
            .bucket(&scope.ty)
            .into_iter()
            .flat_map(|b| b.values())
            .filter(|o| scope.matches(o))
            .map(|o| {
                let mut item = at_version(&scope.ty, &scope.version, o);
                if scope.ty.builtin
                    && let Some(map) = item.as_object_mut()
                {
                    map.remove("apiVersion");
                    map.remove("kind");
                }
                item
            })
            .collect();
        json!({
            "kind": format!("{}List", scope.ty.kind),
            "apiVersion": scope.ty.api_version(&scope.version),
            "metadata": {"resourceVersion": self.rv.to_string()},
            "items": items,
        })
    }

    /// Opens a watch from `from` (`None` or 0: every current object as ADDED first). Events
    /// are JSON lines on `tx`. A version the history no longer covers gets one ERROR event
    /// with a 410 Status, and the watch ends.
    pub(super) fn watch(
        &mut self,
        scope: Scope,
        from: Option<u64>,
        bookmarks: bool,
        tx: mpsc::UnboundedSender<Bytes>,
    ) {
        match from {
            Some(rv) if rv > 0 && rv < self.compacted => {
                let gone = Failure::new(
                    410,
                    "Expired",
                    format!("too old resource version: {rv} ({})", self.compacted),
                );
                let _ = tx.send(line("ERROR", gone.status()));
                return;
            }
            Some(rv) if rv > 0 => {
                for c in self.history.iter().filter(|c| c.rv > rv) {
                    if c.group == scope.ty.group && c.plural == scope.ty.plural && scope.matches(&c.object) {
                        let _ = tx.send(line(c.type_, at_version(&scope.ty, &scope.version, &c.object)));
                    }
                }
            }
            _ => {
                for o in self.bucket(&scope.ty).into_iter().flat_map(|b| b.values()) {
                    if scope.matches(o) {
                        let _ = tx.send(line("ADDED", at_version(&scope.ty, &scope.version, o)));
                    }
                }
            }
        }
        if bookmarks {
            let _ = tx.send(bookmark(&scope, self.rv));
        }
        self.watches.push(Watch { scope, tx, bookmarks });
    }

    /// Closes every open watch (their responses end, as when a connection drops).
    pub(super) fn drop_watches(&mut self) -> usize {
        let n = self.watches.len();
        self.watches.clear();
        n
    }

    /// Sends a BOOKMARK with the current version to every watch that asked for them.
    pub(super) fn bookmark(&mut self) {
        let rv = self.rv;
        self.watches.retain(|w| !w.bookmarks || w.tx.send(bookmark(&w.scope, rv)).is_ok());
    }

    /// Forgets the history: a watch resuming from an older version gets 410 Gone.
    pub(super) fn compact(&mut self) {
        self.history.clear();
        self.compacted = self.rv;
    }

    /// How many watches are open.
    pub(super) fn open_watches(&mut self) -> usize {
        self.watches.retain(|w| !w.tx.is_closed());
        self.watches.len()
    }

    fn next_rv(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    fn record(&mut self, ty: &ResourceType, type_: &'static str, object: Value) {
        let change =
            Change { rv: self.rv, group: ty.group.clone(), plural: ty.plural.clone(), type_, object };
        self.watches.retain(|w| {
            if w.scope.ty.group != change.group
                || w.scope.ty.plural != change.plural
                || !w.scope.matches(&change.object)
            {
                return !w.tx.is_closed();
            }
            w.tx.send(line(type_, at_version(&w.scope.ty, &w.scope.version, &change.object))).is_ok()
        });
        self.history.push(change);
    }

    /// Creates an object; `manager` is the request's fieldManager.
    pub(super) fn create(
        &mut self,
        ty: &ResourceType,
        version: &str,
        ns: &str,
        mut object: Value,
        manager: &str,
    ) -> Result<Value, Failure> {
        if !object.is_object() {
            return Err(Failure::new(400, "BadRequest", "the body must be an object"));
        }
        let meta = object["metadata"].as_object().cloned().unwrap_or_default();
        let name = match (
            meta.get("name").and_then(Value::as_str),
            meta.get("generateName").and_then(Value::as_str),
        ) {
            (Some(name), _) if !name.is_empty() => name.to_string(),
            (_, Some(prefix)) => {
                self.next_uid += 1;
                format!("{prefix}{:05x}", self.next_uid)
            }
            _ => return Err(Failure::new(422, "Invalid", "metadata.name: Required value")),
        };
        if let Some(body_ns) = meta.get("namespace").and_then(Value::as_str)
            && ty.namespaced
            && body_ns != ns
        {
            return Err(Failure::new(
                400,
                "BadRequest",
                "the namespace of the object does not match the request",
            ));
        }
        let key = (if ty.namespaced { ns.to_string() } else { String::new() }, name.clone());
        if self.bucket(ty).is_some_and(|b| b.contains_key(&key)) {
            return Err(Failure::new(
                409,
                "AlreadyExists",
                format!("{} \"{name}\" already exists", ty.plural),
            ));
        }
        if ty.status_subresource
            && let Some(map) = object.as_object_mut()
        {
            map.remove("status");
        }
        let rv = self.next_rv();
        self.next_uid += 1;
        let now = now();
        let m = &mut object["metadata"];
        m["name"] = json!(name);
        if ty.namespaced {
            m["namespace"] = json!(ns);
        }
        if let Some(map) = m.as_object_mut() {
            map.remove("generateName");
        }
        m["uid"] = json!(format!("00000000-0000-4000-8000-{:012x}", self.next_uid));
        m["resourceVersion"] = json!(rv.to_string());
        m["creationTimestamp"] = json!(now);
        m["generation"] = json!(1);
        m["managedFields"] = json!([managed(manager, ty, version, None, &now)]);
        object["apiVersion"] = json!(ty.api_version(version));
        object["kind"] = json!(ty.kind);
        self.objects.entry((ty.group.clone(), ty.plural.clone())).or_default().insert(key, object.clone());
        self.record(ty, "ADDED", object.clone());
        Ok(object)
    }

    /// Replaces an object, or its status (`subresource`), after `change` made the new version
    /// from the stored one. A body with a `resourceVersion` other than the stored one conflicts.
    pub(super) fn update(
        &mut self,
        ty: &ResourceType,
        version: &str,
        (ns, name): (&str, &str),
        status: bool,
        manager: &str,
        change: impl FnOnce(&Value) -> Result<Value, Failure>,
    ) -> Result<Value, Failure> {
        if status && !ty.status_subresource {
            return Err(Failure::new(404, "NotFound", format!("{} has no status subresource", ty.plural)));
        }
        let key = (if ty.namespaced { ns.to_string() } else { String::new() }, name.to_string());
        let Some(old) = self.bucket(ty).and_then(|b| b.get(&key)).cloned() else {
            return Err(Failure::new(404, "NotFound", format!("{} \"{name}\" not found", ty.plural)));
        };
        let mut new = change(&at_version(ty, version, &old))?;
        let wanted_rv = new["metadata"]["resourceVersion"].as_str().unwrap_or("").to_string();
        if !wanted_rv.is_empty() && wanted_rv != old["metadata"]["resourceVersion"].as_str().unwrap_or("") {
            return Err(Failure::new(
                409,
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on {} \"{name}\": the object has been modified",
                    ty.plural
                ),
            ));
        }
        // What each endpoint may change.
        if status {
            let new_status = new.get("status").cloned();
            new = old.clone();
            match new_status {
                Some(s) => new["status"] = s,
                None => drop(new.as_object_mut().map(|m| m.remove("status"))),
            }
        } else {
            for field in ["uid", "creationTimestamp", "generation", "managedFields", "name", "namespace"] {
                new["metadata"][field] = old["metadata"][field].clone();
            }
            if ty.status_subresource {
                match old.get("status") {
                    Some(s) => new["status"] = s.clone(),
                    None => drop(new.as_object_mut().map(|m| m.remove("status"))),
                }
            }
        }
        new["apiVersion"] = old["apiVersion"].clone();
        new["kind"] = json!(ty.kind);
        new["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"].clone();
        if new == old {
            return Ok(at_version(ty, version, &old));
        }
        let spec_changed = without(&new, ty) != without(&old, ty);
        let rv = self.next_rv();
        let now = now();
        new["metadata"]["resourceVersion"] = json!(rv.to_string());
        if spec_changed {
            let generation = old["metadata"]["generation"].as_i64().unwrap_or(1) + 1;
            new["metadata"]["generation"] = json!(generation);
        }
        let subresource = status.then_some("status");
        let mut fields: Vec<Value> = new["metadata"]["managedFields"].as_array().cloned().unwrap_or_default();
        fields.retain(|f| !(f["manager"] == manager && f["subresource"].as_str() == subresource));
        fields.push(managed(manager, ty, version, subresource, &now));
        new["metadata"]["managedFields"] = json!(fields);
        if let Some(bucket) = self.objects.get_mut(&(ty.group.clone(), ty.plural.clone())) {
            bucket.insert(key, new.clone());
        }
        self.record(ty, "MODIFIED", new.clone());
        Ok(at_version(ty, version, &new))
    }

    /// Deletes an object.
    pub(super) fn delete(
        &mut self,
        ty: &ResourceType,
        version: &str,
        ns: &str,
        name: &str,
    ) -> Result<Value, Failure> {
        let key = (if ty.namespaced { ns.to_string() } else { String::new() }, name.to_string());
        let removed =
            self.objects.get_mut(&(ty.group.clone(), ty.plural.clone())).and_then(|b| b.remove(&key));
        let Some(mut object) = removed else {
            return Err(Failure::new(404, "NotFound", format!("{} \"{name}\" not found", ty.plural)));
        };
        let rv = self.next_rv();
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        self.record(ty, "DELETED", object.clone());
        Ok(at_version(ty, version, &object))
    }
}

/// The object at `version`: only `apiVersion` differs between versions.
fn at_version(ty: &ResourceType, version: &str, object: &Value) -> Value {
    let mut out = object.clone();
    out["apiVersion"] = json!(ty.api_version(version));
    out
}

/// What a write to the object (not its status) may change that bumps `generation`.
fn without(object: &Value, ty: &ResourceType) -> Value {
    let mut out = object.clone();
    if let Some(map) = out.as_object_mut() {
        map.remove("metadata");
        if ty.status_subresource {
            map.remove("status");
        }
    }
    out
}

fn managed(manager: &str, ty: &ResourceType, version: &str, subresource: Option<&str>, now: &str) -> Value {
    let mut entry = json!({
        "manager": manager, "operation": "Update", "apiVersion": ty.api_version(version),
        "time": now, "fieldsType": "FieldsV1", "fieldsV1": {},
    });
    if let Some(s) = subresource {
        entry["subresource"] = json!(s);
    }
    entry
}

fn now() -> String {
    let t = time::OffsetDateTime::now_utc();
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

fn line(type_: &str, object: Value) -> Bytes {
    let mut text = json!({"type": type_, "object": object}).to_string();
    text.push('\n');
    Bytes::from(text)
}

fn bookmark(scope: &Scope, rv: u64) -> Bytes {
    line(
        "BOOKMARK",
        json!({
            "kind": scope.ty.kind, "apiVersion": scope.ty.api_version(&scope.version),
            "metadata": {"resourceVersion": rv.to_string()},
        }),
    )
}
