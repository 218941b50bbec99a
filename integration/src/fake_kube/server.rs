//! The fake API server's HTTP side: paths, verbs, query parameters, watch streams.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use serde_json::{Value, json};
use tokio::sync::{Mutex, mpsc};
use tokio_stream::wrappers::UnboundedReceiverStream;

use super::selector::Selector;
use super::store::{Failure, ResourceType, Scope, Store};

pub(super) type Body = UnsyncBoxBody<Bytes, Infallible>;

/// A registered service account token.
#[derive(Debug, Clone)]
pub(super) struct TokenEntry {
    pub(super) username: String,
    pub(super) audiences: Vec<String>,
}

/// One grant of the SubjectAccessReview policy: `subject` (a user or a group) may `verb`
/// `resource` of `group` in `namespace` (`None`: in every namespace, as a ClusterRoleBinding).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessRule {
    /// A user name or a group.
    pub subject: String,
    /// The verb, e.g. `watch`.
    pub verb: String,
    /// The API group, e.g. `tap.weft.io`.
    pub group: String,
    /// The resource (plural), e.g. `deployments`.
    pub resource: String,
    /// The namespace; `None` for all of them.
    pub namespace: Option<String>,
}

/// Everything the handlers share.
#[derive(Debug)]
pub(super) struct State {
    pub(super) store: Store,
    pub(super) tokens: HashMap<String, TokenEntry>,
    /// What SubjectAccessReview allows; everything else is denied.
    pub(super) access: Vec<AccessRule>,
    /// Requests whose `METHOD path` contains the text fail with the code.
    pub(super) failures: Vec<(String, u16)>,
    /// `METHOD path?query` of every request, in order.
    pub(super) log: Vec<String>,
}

/// The audiences of the fake API server itself (a token review without audiences).
pub const API_AUDIENCE: &str = "https://kubernetes.default.svc.cluster.local";

pub(super) async fn handle(
    state: Arc<Mutex<State>>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = parse_query(req.uri().query().unwrap_or(""));
    let content_type =
        req.headers().get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return Ok(fail(&Failure::new(400, "BadRequest", "unreadable body"))),
    };
    let mut st = state.lock().await;
    let mut line = format!("{method} {path}");
    if !query.is_empty() {
        let mut pairs: Vec<String> = query.iter().map(|(k, v)| format!("{k}={v}")).collect();
        pairs.sort();
        line = format!("{line}?{}", pairs.join("&"));
    }
    st.log.push(line.clone());
    if let Some((_, code)) = st.failures.iter().find(|(m, _)| line.contains(m.as_str())) {
        return Ok(fail(&Failure::new(*code, "ServiceUnavailable", "injected failure")));
    }
    Ok(match route(&mut st, &method, &path, &query, &content_type, &body) {
        Ok(Reply::Json(code, value)) => json_response(code, &value),
        Ok(Reply::Watch(rx, timeout)) => watch_response(rx, timeout),
        Err(f) => fail(&f),
    })
}

enum Reply {
    Json(u16, Value),
    Watch(mpsc::UnboundedReceiver<Bytes>, Duration),
}

/// Where a resource path points.
struct Target {
    ty: ResourceType,
    version: String,
    namespace: Option<String>,
    name: Option<String>,
    status: bool,
}

fn route(
    st: &mut State,
    method: &Method,
    path: &str,
    query: &HashMap<String, String>,
    content_type: &str,
    body: &[u8],
) -> Result<Reply, Failure> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').filter(|s| !s.is_empty()).collect();
    let (group, version, rest) = match segs.as_slice() {
        ["version"] => return Ok(Reply::Json(200, version_info())),
        ["api"] => return Ok(Reply::Json(200, json!({"kind": "APIVersions", "versions": ["v1"]}))),
        ["apis"] => return Ok(Reply::Json(200, group_list(&st.store.types))),
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return Err(not_found(path)),
    };
    if rest.is_empty() {
        return Ok(Reply::Json(200, resource_list(&st.store.types, group, version)));
    }
    if group == "authentication.k8s.io" && rest == ["tokenreviews"] && method == Method::POST {
        return token_review(st, body).map(|v| Reply::Json(201, v));
    }
    if group == "authorization.k8s.io" && rest == ["subjectaccessreviews"] && method == Method::POST {
        return subject_access_review(st, body).map(|v| Reply::Json(201, v));
    }
    let target = resolve(&st.store, group, version, rest).ok_or_else(|| not_found(path))?;
    let manager = query.get("fieldManager").map(String::as_str).unwrap_or("unknown");
    let ns = target.namespace.clone().unwrap_or_default();
    let ty = &target.ty;
    let v = target.version.as_str();
    match (method.clone(), &target.name) {
        (Method::GET, None) => {
            let scope = Scope {
                ty: ty.clone(),
                version: v.to_string(),
                namespace: target.namespace.clone(),
                labels: Selector::parse(query.get("labelSelector").map(String::as_str).unwrap_or(""))
                    .map_err(|e| Failure::new(400, "BadRequest", e))?,
                fields: Selector::parse(query.get("fieldSelector").map(String::as_str).unwrap_or(""))
                    .map_err(|e| Failure::new(400, "BadRequest", e))?,
            };
            if matches!(query.get("watch").map(String::as_str), Some("true" | "1")) {
                let from = match query.get("resourceVersion").map(String::as_str) {
                    None | Some("") => None,
                    Some(rv) => Some(
                        rv.parse::<u64>()
                            .map_err(|_| Failure::new(400, "BadRequest", "bad resourceVersion"))?,
                    ),
                };
                let bookmarks = query.get("allowWatchBookmarks").is_some_and(|b| b == "true");
                let timeout = query.get("timeoutSeconds").and_then(|t| t.parse().ok()).unwrap_or(1800);
                let (tx, rx) = mpsc::unbounded_channel();
                st.store.watch(scope, from, bookmarks, tx);
                return Ok(Reply::Watch(rx, Duration::from_secs(timeout)));
            }
            Ok(Reply::Json(200, st.store.list(&scope)))
        }
        (Method::GET, Some(name)) => st
            .store
            .get(ty, v, &ns, name)
            .map(|o| Reply::Json(200, o))
            .ok_or_else(|| Failure::new(404, "NotFound", format!("{} \"{name}\" not found", ty.plural))),
        (Method::POST, None) => {
            let object = parse_body(body)?;
            st.store.create(ty, v, &ns, object, manager).map(|o| Reply::Json(201, o))
        }
        (Method::PUT, Some(name)) => {
            let object = parse_body(body)?;
            st.store
                .update(ty, v, (&ns, name), target.status, manager, |_| Ok(object))
                .map(|o| Reply::Json(200, o))
        }
        (Method::PATCH, Some(name)) => {
            if !matches!(
                content_type.split(';').next().unwrap_or(""),
                "application/merge-patch+json"
                    | "application/strategic-merge-patch+json"
                    | "application/apply-patch+yaml"
            ) {
                return Err(Failure::new(
                    415,
                    "UnsupportedMediaType",
                    format!("unsupported patch type {content_type}"),
                ));
            }
            let patch = parse_body(body)?;
            // Server-side apply creates what does not exist yet.
            if content_type.starts_with("application/apply-patch") && st.store.get(ty, v, &ns, name).is_none()
            {
                let mut object = patch;
                object["metadata"]["name"] = json!(name);
                return st.store.create(ty, v, &ns, object, manager).map(|o| Reply::Json(201, o));
            }
            st.store
                .update(ty, v, (&ns, name), target.status, manager, |current| {
                    let mut merged = current.clone();
                    merge_patch(&mut merged, &patch);
                    Ok(merged)
                })
                .map(|o| Reply::Json(200, o))
        }
        (Method::DELETE, Some(name)) => st.store.delete(ty, v, &ns, name).map(|o| Reply::Json(200, o)),
        _ => Err(Failure::new(405, "MethodNotAllowed", format!("{method} is not allowed on {path}"))),
    }
}

/// Resolves `rest` (the path after the group version) to a resource.
fn resolve(store: &Store, group: &str, version: &str, rest: &[&str]) -> Option<Target> {
    let namespaced_path = rest.len() >= 3 && rest[0] == "namespaces" && rest[2] != "status";
    let (namespace, rest) =
        if namespaced_path { (Some(rest[1].to_string()), &rest[2..]) } else { (None, rest) };
    let ty = store.find_type(group, version, rest[0])?;
    if namespace.is_some() != ty.namespaced && (rest.len() > 1 || !ty.namespaced) {
        return None;
    }
    let (name, status) = match rest {
        [_] => (None, false),
        [_, name] => (Some(name.to_string()), false),
        [_, name, "status"] => (Some(name.to_string()), true),
        _ => return None,
    };
    Some(Target { ty, version: version.to_string(), namespace, name, status })
}

fn token_review(st: &State, body: &[u8]) -> Result<Value, Failure> {
    let review = parse_body(body)?;
    let token = review["spec"]["token"].as_str().unwrap_or("");
    let wanted: Vec<String> = match review["spec"]["audiences"].as_array() {
        Some(a) if !a.is_empty() => a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect(),
        _ => vec![API_AUDIENCE.to_string()],
    };
    let status = match st.tokens.get(token) {
        None => json!({"user": {}, "error": "[invalid bearer token, token lookup failed]"}),
        Some(entry) => {
            let common: Vec<&String> = entry.audiences.iter().filter(|a| wanted.contains(a)).collect();
            if common.is_empty() {
                json!({"user": {}, "error": format!(
                    "[invalid bearer token, token audiences {:?} is invalid for the target audiences {:?}]",
                    entry.audiences, wanted
                )})
            } else {
                let mut groups = vec!["system:authenticated".to_string()];
                if let Some(ns) =
                    entry.username.strip_prefix("system:serviceaccount:").and_then(|r| r.split(':').next())
                {
                    groups.push("system:serviceaccounts".into());
                    groups.push(format!("system:serviceaccounts:{ns}"));
                }
                json!({
                    "authenticated": true,
                    "user": {"username": entry.username, "uid": format!("uid-{}", entry.username), "groups": groups},
                    "audiences": common,
                })
            }
        }
    };
    Ok(json!({
        "kind": "TokenReview", "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"creationTimestamp": null}, "spec": review["spec"], "status": status,
    }))
}

/// A SubjectAccessReview, answered from the test's [`AccessRule`]s as RBAC would: the user or
/// one of its groups must hold a rule for the verb, group and resource, in the namespace or
/// in all of them. The spec is validated as the API server does.
fn subject_access_review(st: &State, body: &[u8]) -> Result<Value, Failure> {
    let review = parse_body(body)?;
    let spec = &review["spec"];
    let invalid = |message: &str| {
        Failure::new(
            422,
            "Invalid",
            format!("SubjectAccessReview.authorization.k8s.io \"\" is invalid: {message}"),
        )
    };
    let attributes = &spec["resourceAttributes"];
    if !attributes.is_object() && !spec["nonResourceAttributes"].is_object() {
        return Err(invalid(
            "spec.resourceAttributes: Invalid value: \"null\": exactly one of nonResourceAttributes or resourceAttributes must be specified",
        ));
    }
    let user = spec["user"].as_str().unwrap_or("");
    let groups: Vec<&str> =
        spec["groups"].as_array().map(|g| g.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
    if user.is_empty() && groups.is_empty() {
        return Err(invalid(
            "spec.user: Invalid value: \"\": at least one of user or group must be specified",
        ));
    }
    let field = |key: &str| attributes[key].as_str().unwrap_or("");
    let (verb, group, resource, namespace) =
        (field("verb"), field("group"), field("resource"), field("namespace"));
    let grant = st.access.iter().find(|rule| {
        (rule.subject == user || groups.contains(&rule.subject.as_str()))
            && rule.verb == verb
            && rule.group == group
            && rule.resource == resource
            && rule.namespace.as_deref().is_none_or(|ns| ns == namespace)
    });
    let status = match grant {
        Some(rule) => json!({
            "allowed": true,
            "reason": format!("RBAC: allowed by the test's grant to {:?}", rule.subject),
        }),
        None => json!({"allowed": false}),
    };
    Ok(json!({
        "kind": "SubjectAccessReview", "apiVersion": "authorization.k8s.io/v1",
        "metadata": {"creationTimestamp": null}, "spec": spec, "status": status,
    }))
}

/// RFC 7386 JSON merge patch.
pub(super) fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    if let Value::Object(map) = target {
        for (k, v) in patch {
            if v.is_null() {
                map.remove(k);
            } else {
                merge_patch(map.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}

fn parse_body(body: &[u8]) -> Result<Value, Failure> {
    serde_json::from_slice(body)
        .map_err(|e| Failure::new(400, "BadRequest", format!("invalid JSON body: {e}")))
}

fn not_found(path: &str) -> Failure {
    Failure::new(404, "NotFound", format!("the server could not find the requested resource ({path})"))
}

fn version_info() -> Value {
    json!({
        "major": "1", "minor": "33", "gitVersion": "v1.33.0-weft-fake", "gitCommit": "0",
        "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.24",
        "compiler": "gc", "platform": "linux/amd64",
    })
}

fn group_list(types: &[ResourceType]) -> Value {
    let mut groups: Vec<(String, Vec<String>)> = Vec::new();
    for t in types.iter().filter(|t| !t.group.is_empty()) {
        match groups.iter_mut().find(|(g, _)| *g == t.group) {
            Some((_, versions)) => versions
                .extend(t.versions.iter().filter(|v| !versions.contains(v)).cloned().collect::<Vec<_>>()),
            None => groups.push((t.group.clone(), t.versions.clone())),
        }
    }
    let groups: Vec<Value> = groups
        .into_iter()
        .map(|(name, versions)| {
            let vs: Vec<Value> =
                versions.iter().map(|v| json!({"groupVersion": format!("{name}/{v}"), "version": v})).collect();
            json!({"name": name, "versions": vs, "preferredVersion": vs.last().cloned().unwrap_or(Value::Null)})
        })
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

fn resource_list(types: &[ResourceType], group: &str, version: &str) -> Value {
    let resources: Vec<Value> = types
        .iter()
        .filter(|t| t.group == group && t.versions.iter().any(|v| v == version))
        .flat_map(|t| {
            let main = json!({"name": t.plural, "singularName": t.kind.to_lowercase(), "namespaced": t.namespaced,
                "kind": t.kind, "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"]});
            let status = t.status_subresource.then(|| {
                json!({"name": format!("{}/status", t.plural), "singularName": "", "namespaced": t.namespaced,
                    "kind": t.kind, "verbs": ["get", "patch", "update"]})
            });
            std::iter::once(main).chain(status)
        })
        .collect();
    let gv = if group.is_empty() { version.to_string() } else { format!("{group}/{version}") };
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources})
}

fn parse_query(query: &str) -> HashMap<String, String> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

/// Percent-decoding (and `+` as space), for query parameters.
fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match u8::from_str_radix(std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz"), 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub(super) fn json_response(code: u16, value: &Value) -> Response<Body> {
    let mut res = Response::new(Full::new(Bytes::from(value.to_string())).boxed_unsync());
    *res.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    res.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    res
}

fn fail(f: &Failure) -> Response<Body> {
    json_response(f.code, &f.status())
}

fn watch_response(rx: mpsc::UnboundedReceiver<Bytes>, timeout: Duration) -> Response<Body> {
    let events = UnboundedReceiverStream::new(rx)
        .map(|line| Ok::<_, Infallible>(Frame::data(line)))
        .take_until(tokio::time::sleep(timeout));
    let mut res = Response::new(BodyExt::boxed_unsync(StreamBody::new(events)));
    res.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    res
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn merge_patch_follows_rfc_7386() {
        let mut doc = json!({"a": "b", "c": {"d": "e", "f": "g"}, "l": [1, 2]});
        merge_patch(&mut doc, &json!({"a": "z", "c": {"f": null}, "l": [3], "n": {"x": 1}}));
        assert_eq!(doc, json!({"a": "z", "c": {"d": "e"}, "l": [3], "n": {"x": 1}}));
    }

    #[test]
    fn subject_access_reviews_follow_the_grants_and_validate_like_the_api_server() {
        let mut st = State {
            store: Store::new(Vec::new()),
            tokens: HashMap::new(),
            access: vec![AccessRule {
                subject: "ops".into(),
                verb: "watch".into(),
                group: "tap.weft.io".into(),
                resource: "deployments".into(),
                namespace: Some("pay".into()),
            }],
            failures: Vec::new(),
            log: Vec::new(),
        };
        let review = |user: &str, groups: &[&str], ns: &str| {
            let attrs = json!({"group": "tap.weft.io", "resource": "deployments", "verb": "watch",
                               "namespace": ns, "name": "web"});
            let body = json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
                              "spec": {"user": user, "groups": groups, "resourceAttributes": attrs}});
            serde_json::to_vec(&body).unwrap()
        };
        let allowed = |st: &State, body: Vec<u8>| {
            subject_access_review(st, &body).unwrap()["status"]["allowed"].clone()
        };
        // Through a group, in the granted namespace only.
        assert_eq!(allowed(&st, review("alice", &["system:authenticated", "ops"], "pay")), json!(true));
        assert_eq!(allowed(&st, review("alice", &["ops"], "shop")), json!(false));
        assert_eq!(allowed(&st, review("bob", &["system:authenticated"], "pay")), json!(false));
        // A cluster-wide grant covers every namespace.
        st.access[0].namespace = None;
        assert_eq!(allowed(&st, review("alice", &["ops"], "shop")), json!(true));
        // No attributes, or no subject: 422 as the API server answers.
        let bare = serde_json::to_vec(&json!({"spec": {"user": "alice"}})).unwrap();
        assert_eq!(subject_access_review(&st, &bare).unwrap_err().code, 422);
        let nobody = review("", &[], "pay");
        assert_eq!(subject_access_review(&st, &nobody).unwrap_err().code, 422);
    }

    #[test]
    fn query_values_are_percent_decoded() {
        let q = parse_query("labelSelector=app%3Dweb%2Ctier&watch=true&x=%zz");
        assert_eq!(q["labelSelector"], "app=web,tier");
        assert_eq!(q["watch"], "true");
        assert_eq!(q["x"], "%zz");
    }
}
