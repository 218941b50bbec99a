//! Tap through the control plane: `GET /tap` on the admin API.
//!
//! The operator authenticates with the operator token (`Authorization: Bearer <token>`; locally
//! `<ca-dir>/operator-token`, created mode 0600 on first start). The control plane resolves the
//! target to connected proxies (from the xDS registry: node id, namespace, service account, pod
//! IP), dials each proxy's tap endpoint (`<pod-ip>:4190`, weft's tap gRPC API) over mTLS with its
//! own certificate, checking that the proxy presents its workload's SPIFFE ID, and merges their
//! event streams into one response of JSON lines ([`TapLine`]). Workloads never get to tap: a
//! proxy accepts only the control plane's identity.
//!
//! In Kubernetes mode the operator's credential is their Kubernetes identity instead: the
//! bearer token is checked with TokenReview and the session authorized with a
//! SubjectAccessReview (`watch` on `tap.weft.io` resources, see [`kube`]), and `deploy/NAME`
//! and `pod/NAME` are resolved through the API server.
//!
//! A request without a token is answered 401 with `WWW-Authenticate: Bearer realm="..."`
//! ([`REALM_OPERATOR_TOKEN`] or [`REALM_KUBERNETES`]), which tells `weft tap` which credential
//! this control plane wants.

mod dial;
pub mod kube;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use weft_xds_protos::google::protobuf::Duration as PbDuration;
use weft_xds_protos::tap::{Direction, EventKind, Filter, ObserveRequest, TapEvent};

use crate::admin::AdminState;
use crate::translate::ProxyNode;

pub use kube::KubeTap;

/// The `WWW-Authenticate` realm of a control plane that wants the operator token (local mode).
pub const REALM_OPERATOR_TOKEN: &str = "weft-operator-token";

/// The `WWW-Authenticate` realm of a control plane that wants a Kubernetes bearer token.
pub const REALM_KUBERNETES: &str = "kubernetes";

/// The operator token's file name in the CA directory.
pub const OPERATOR_TOKEN_FILE: &str = "operator-token";

/// The tap port on a proxy's pod IP (weft-proxy's default, Linkerd's tap port).
pub const PROXY_TAP_PORT: u16 = 4190;

/// Longest a tap may last.
pub const MAX_DURATION: Duration = Duration::from_secs(600);

/// The operator token file of `ca_dir`, created (0600, random) if missing.
pub fn ensure_operator_token(ca_dir: &Path) -> std::io::Result<PathBuf> {
    let path = ca_dir.join(OPERATOR_TOKEN_FILE);
    if path.exists() {
        return Ok(path);
    }
    std::fs::create_dir_all(ca_dir)?;
    let token: String = (0..32).map(|_| format!("{:02x}", rand::random::<u8>())).collect();
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path)?;
    file.write_all(token.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()?;
    tracing::info!(file = %path.display(), "created the operator token (for `weft tap`)");
    Ok(path)
}

/// The operator token file of a control plane whose CA is in a directory (local mode); `None`
/// when the CA is elsewhere (a Kubernetes Secret: no operator token there yet, tap is refused).
pub fn operator_token_file(identity: &crate::admin::identity::IdentityHandles) -> Option<PathBuf> {
    let dir = Path::new(&identity.ca_location);
    dir.is_dir().then(|| dir.join(OPERATOR_TOKEN_FILE))
}

/// Creates the operator token next to the CA if it is missing (local mode); logs a failure
/// (tap is then refused).
pub fn setup_operator_token(identity: &crate::admin::identity::IdentityHandles) {
    if let Some(dir) = operator_token_file(identity).as_deref().and_then(Path::parent)
        && let Err(e) = ensure_operator_token(dir)
    {
        tracing::error!(error = %e, "creating the operator token; `weft tap` will be refused");
    }
}

/// Reads a token file (trimmed).
pub fn read_token(path: &Path) -> std::io::Result<String> {
    Ok(std::fs::read_to_string(path)?.trim().to_owned())
}

/// Whether `presented` equals `expected`, in time independent of where they differ.
fn same_token(presented: &str, expected: &str) -> bool {
    let (a, b) = (presented.as_bytes(), expected.as_bytes());
    a.len() == b.len() && !expected.is_empty() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The query of `GET /tap`.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct TapQuery {
    /// `deploy/NAME`, `pod/NAME` or `workload/NAME`.
    #[serde(default)]
    pub target: String,
    /// Namespace (for `deploy/`; narrows `workload/`).
    #[serde(default)]
    pub namespace: Option<String>,
    /// Path prefix.
    #[serde(default)]
    pub path: Option<String>,
    /// Method.
    #[serde(default)]
    pub method: Option<String>,
    /// Authority.
    #[serde(default)]
    pub authority: Option<String>,
    /// Destination workload.
    #[serde(default)]
    pub to: Option<String>,
    /// Requests per second per proxy.
    #[serde(default)]
    pub max_rps: Option<u32>,
    /// How long, e.g. `30s` (default 60 s, at most 10 min).
    #[serde(default)]
    pub duration: Option<String>,
}

/// One end of a tapped request.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TapPeer {
    /// `ip:port`.
    pub address: String,
    /// SPIFFE ID, empty if none.
    pub identity: String,
}

/// One line of the tap stream: an event (`req`, `rsp`) or a proxy's `error`.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TapLine {
    /// `req`, `rsp` or `error`.
    pub kind: String,
    /// The request's id (per proxy).
    #[serde(default)]
    pub id: u64,
    /// The node id of the proxy that saw it.
    pub proxy: String,
    /// `inbound` or `outbound`.
    #[serde(default)]
    pub direction: String,
    /// Source.
    #[serde(default)]
    pub src: TapPeer,
    /// Destination.
    #[serde(default)]
    pub dst: TapPeer,
    /// The hop was mTLS.
    #[serde(default)]
    pub tls: bool,
    /// Authority.
    #[serde(default)]
    pub authority: String,
    /// Method.
    #[serde(default)]
    pub method: String,
    /// Path.
    #[serde(default)]
    pub path: String,
    /// Response status (`rsp`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u32>,
    /// Microseconds from the request's head to the response's (`rsp`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_us: Option<u64>,
    /// Request body bytes (as declared).
    #[serde(default)]
    pub request_bytes: u64,
    /// Response body bytes (as declared, `rsp`).
    #[serde(default)]
    pub response_bytes: u64,
    /// Route name (`rsp`).
    #[serde(default)]
    pub route: String,
    /// Cluster name (`rsp`).
    #[serde(default)]
    pub cluster: String,
    /// What went wrong (`error`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl TapLine {
    /// The line for `event`, seen by `proxy`.
    pub fn from_event(event: TapEvent, proxy: &str) -> TapLine {
        let response = event.kind == EventKind::Response as i32;
        let peer = |p: Option<weft_xds_protos::tap::Peer>| {
            p.map(|p| TapPeer { address: p.address, identity: p.identity }).unwrap_or_default()
        };
        TapLine {
            kind: if response { "rsp" } else { "req" }.into(),
            id: event.id,
            proxy: proxy.to_owned(),
            direction: match Direction::try_from(event.direction) {
                Ok(Direction::Inbound) => "inbound",
                Ok(Direction::Outbound) => "outbound",
                _ => "",
            }
            .into(),
            src: peer(event.source),
            dst: peer(event.destination),
            tls: event.tls,
            authority: event.authority,
            method: event.method,
            path: event.path,
            status: response.then_some(event.status),
            latency_us: if response {
                event.latency.map(|d| {
                    u64::try_from(d.seconds).unwrap_or(0) * 1_000_000
                        + u64::try_from(d.nanos).unwrap_or(0) / 1_000
                })
            } else {
                None
            },
            request_bytes: event.request_bytes,
            response_bytes: event.response_bytes,
            route: event.route,
            cluster: event.cluster,
            message: None,
        }
    }

    /// An error line about `proxy`.
    pub fn error(proxy: &str, message: String) -> TapLine {
        TapLine {
            kind: "error".into(),
            proxy: proxy.to_owned(),
            message: Some(message),
            ..TapLine::default()
        }
    }

    /// The text form `weft tap` prints:
    /// `req id=.. proxy=.. src=<addr> [<identity>] dst=<addr> [<identity>] tls=true :method=GET :authority=.. :path=/pay`,
    /// `rsp` adds `:status=200 latency=812us bytes=.. route=.. cluster=..`.
    pub fn text(&self) -> String {
        if self.kind == "error" {
            return format!("error proxy={} {}", self.proxy, self.message.as_deref().unwrap_or(""));
        }
        let peer = |p: &TapPeer| {
            let address = if p.address.is_empty() { "-" } else { p.address.as_str() };
            if p.identity.is_empty() { address.to_owned() } else { format!("{address} [{}]", p.identity) }
        };
        let mut line = format!(
            "{} id={} proxy={} dir={} src={} dst={} tls={} :method={} :authority={} :path={}",
            self.kind,
            self.id,
            self.proxy,
            self.direction,
            peer(&self.src),
            peer(&self.dst),
            self.tls,
            self.method,
            self.authority,
            self.path
        );
        if self.kind == "rsp" {
            line.push_str(&format!(
                " :status={} latency={}us bytes={}",
                self.status.unwrap_or(0),
                self.latency_us.unwrap_or(0),
                self.response_bytes
            ));
            if !self.route.is_empty() {
                line.push_str(&format!(" route={}", self.route));
            }
            if !self.cluster.is_empty() {
                line.push_str(&format!(" cluster={}", self.cluster));
            }
        }
        line
    }
}

/// What a tap target names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetKind {
    /// `workload/NAME`: a proxy's node id or service account.
    Workload,
    /// `deploy/NAME`: a Deployment's pods.
    Deployment,
    /// `pod/NAME`: one pod (locally, as `workload/`).
    Pod,
}

impl TargetKind {
    /// The resource of the `tap.weft.io` API group that RBAC grants for this kind.
    pub fn resource(self) -> &'static str {
        match self {
            TargetKind::Workload => "workloads",
            TargetKind::Deployment => "deployments",
            TargetKind::Pod => "pods",
        }
    }

    fn prefix(self) -> &'static str {
        match self {
            TargetKind::Workload => "workload",
            TargetKind::Deployment => "deploy",
            TargetKind::Pod => "pod",
        }
    }
}

/// A tap (or stat) target: `workload/NAME`, `deploy/NAME` or `pod/NAME`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// What it names.
    pub kind: TargetKind,
    /// The name.
    pub name: String,
}

impl std::str::FromStr for Target {
    type Err = String;

    fn from_str(target: &str) -> Result<Self, String> {
        let (kind, name) = target
            .split_once('/')
            .ok_or_else(|| format!("target {target:?}: expected deploy/NAME, pod/NAME or workload/NAME"))?;
        let kind = match kind {
            "workload" | "workloads" | "wl" => TargetKind::Workload,
            "deploy" | "deployment" | "deployments" => TargetKind::Deployment,
            "pod" | "pods" | "po" => TargetKind::Pod,
            _ => {
                return Err(format!(
                    "target {target:?}: unknown kind {kind:?} (deploy/NAME, pod/NAME or workload/NAME)"
                ));
            }
        };
        if name.is_empty() || name.contains('/') {
            return Err(format!("target {target:?}: expected one name after the kind"));
        }
        Ok(Target { kind, name: name.to_owned() })
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.kind.prefix(), self.name)
    }
}

/// The proxies `target` names, one per pod IP (local mode). `workload/NAME` and `pod/NAME`:
/// node id `NAME` (or `NAME.` a prefix of it), or service account `NAME`; `deploy/NAME`:
/// service account `NAME` or a node id starting `NAME-` (a Deployment's pod names).
/// `namespace`, when given, must match.
pub fn resolve(nodes: &[ProxyNode], target: &str, namespace: Option<&str>) -> Result<Vec<ProxyNode>, String> {
    let target: Target = target.parse()?;
    if target.kind != TargetKind::Deployment {
        return resolve_workload(nodes, &target.name, namespace);
    }
    let name = target.name.as_str();
    let prefix = format!("{name}-");
    matching(nodes, &target, namespace, |node| node.service_account == name || node.id.starts_with(&prefix))
}

/// The proxies of `workload/NAME`: node id `NAME` (or `NAME.` a prefix of it), or service
/// account `NAME`, in `namespace` when given.
pub fn resolve_workload(
    nodes: &[ProxyNode],
    name: &str,
    namespace: Option<&str>,
) -> Result<Vec<ProxyNode>, String> {
    let target = Target { kind: TargetKind::Workload, name: name.to_owned() };
    let dotted = format!("{name}.");
    matching(nodes, &target, namespace, |node| {
        node.id == name || node.id.starts_with(&dotted) || node.service_account == name
    })
}

fn matching(
    nodes: &[ProxyNode],
    target: &Target,
    namespace: Option<&str>,
    by_kind: impl Fn(&ProxyNode) -> bool,
) -> Result<Vec<ProxyNode>, String> {
    let namespace = namespace.filter(|n| !n.is_empty());
    let mut found = BTreeMap::new();
    for node in nodes {
        if by_kind(node) && namespace.is_none_or(|ns| node.namespace == ns) {
            found.entry(node.pod_ip).or_insert_with(|| node.clone());
        }
    }
    if found.is_empty() {
        let ns = namespace.map(|n| format!(" in namespace {n}")).unwrap_or_default();
        let mut connected: Vec<String> = nodes
            .iter()
            .filter(|n| namespace.is_none_or(|ns| n.namespace == ns))
            .map(|n| format!("{} ({}/{})", n.id, n.namespace, n.service_account))
            .collect();
        connected.sort();
        connected.dedup();
        let connected = if connected.is_empty() { "none".to_owned() } else { connected.join(", ") };
        return Err(format!(
            "unknown target {target}{ns}: no connected proxy matches (connected: {connected})"
        ));
    }
    Ok(found.into_values().collect())
}

fn plain(status: StatusCode, message: String) -> Response {
    (status, format!("{message}\n")).into_response()
}

/// A 401 with the challenge that names the credential this control plane wants.
fn challenge(kubernetes: bool, message: String) -> Response {
    let realm = if kubernetes { REALM_KUBERNETES } else { REALM_OPERATOR_TOKEN };
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, format!("Bearer realm=\"{realm}\""))],
        format!("{message}\n"),
    )
        .into_response()
}

/// The bearer token of `headers`, if any.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
}

/// Authorizes the operator of a request for `target` in `namespace` (empty: none given): the
/// operator token locally; TokenReview and a SubjectAccessReview in Kubernetes mode. The error
/// is the response to send (401, 403, 400 or 503).
pub async fn authorize_operator(
    s: &AdminState,
    headers: &HeaderMap,
    target: &Target,
    namespace: &str,
) -> Result<(), Response> {
    let Some(identity) = &s.identity else {
        return Err(plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "tap needs the mesh's mTLS (the control plane runs with --insecure-plaintext)".into(),
        ));
    };
    let kube = s.kube_tap.as_ref();
    let Some(token) = bearer(headers) else {
        let what = if kube.is_some() { "a Kubernetes bearer token" } else { "the operator token" };
        return Err(challenge(
            kube.is_some(),
            format!("not authorized: no credential presented ({what} is needed)"),
        ));
    };
    let Some(kube) = kube else {
        let expected = operator_token_file(identity).and_then(|f| read_token(&f).ok()).unwrap_or_default();
        if !same_token(token, &expected) {
            tracing::warn!("tap refused: wrong operator token");
            return Err(challenge(false, "not authorized: wrong operator token".into()));
        }
        return Ok(());
    };
    if namespace.is_empty() && target.kind != TargetKind::Workload {
        return Err(plain(
            StatusCode::BAD_REQUEST,
            format!("target {target}: a namespace is needed (-n NAMESPACE)"),
        ));
    }
    let refused = |r: kube::Refusal| match r {
        kube::Refusal::Unauthenticated(_) => challenge(true, r.to_string()),
        _ => plain(r.status(), r.to_string()),
    };
    let operator = kube.authenticate(token).await.map_err(refused)?;
    kube.authorize(&operator, target, namespace).await.map_err(refused)
}

/// `GET /tap`: see the module docs.
pub async fn handler(State(s): State<AdminState>, headers: HeaderMap, Query(q): Query<TapQuery>) -> Response {
    let Some(identity) = s.identity.clone() else {
        return plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "tap needs the mesh's mTLS (the control plane runs with --insecure-plaintext)".into(),
        );
    };
    let namespace = q.namespace.clone().unwrap_or_default();
    if bearer(&headers).is_none() {
        // The challenge comes first: it is how `weft tap` learns which credential to send.
        return authorize_operator(
            &s,
            &headers,
            &Target { kind: TargetKind::Workload, name: String::new() },
            "",
        )
        .await
        .err()
        .unwrap_or_else(|| plain(StatusCode::UNAUTHORIZED, "not authorized".into()));
    }
    let target: Target = match q.target.parse() {
        Ok(target) => target,
        Err(e) => return plain(StatusCode::BAD_REQUEST, e),
    };
    if let Err(refused) = authorize_operator(&s, &headers, &target, &namespace).await {
        return refused;
    }
    let duration = match q.duration.as_deref().filter(|d| !d.is_empty()) {
        None => Duration::from_secs(60),
        Some(d) => match crate::identity::parse_duration(d) {
            Ok(d) => d.min(MAX_DURATION),
            Err(e) => return plain(StatusCode::BAD_REQUEST, format!("duration {d:?}: {e}")),
        },
    };
    let nodes: Vec<ProxyNode> = s.registry.reports().await.into_iter().map(|r| r.node).collect();
    let resolved = match &s.kube_tap {
        Some(kube) => kube.resolve(&nodes, &target, &namespace).await,
        None => resolve(&nodes, &q.target, q.namespace.as_deref()),
    };
    let targets = match resolved {
        Ok(targets) => targets,
        Err(e) => return plain(StatusCode::NOT_FOUND, e),
    };
    let request = ObserveRequest {
        filter: Some(Filter {
            authority: q.authority.clone().unwrap_or_default(),
            path_prefix: q.path.clone().unwrap_or_default(),
            method: q.method.clone().unwrap_or_default(),
            to: q.to.clone().unwrap_or_default(),
        }),
        max_events_per_second: q.max_rps.unwrap_or(0),
        max_duration: Some(PbDuration {
            seconds: i64::try_from(duration.as_secs()).unwrap_or(600),
            nanos: i32::try_from(duration.subsec_nanos()).unwrap_or(0),
        }),
        target: q.target.clone(),
        namespace: q.namespace.clone().unwrap_or_default(),
    };
    tracing::info!(target = %q.target, proxies = targets.len(), ?duration, "tap started");
    let (tx, rx) = mpsc::channel::<Result<Bytes, Infallible>>(1024);
    for node in targets {
        let tx = tx.clone();
        let request = request.clone();
        let handles = identity.clone();
        let addr = SocketAddr::new(node.pod_ip, PROXY_TAP_PORT);
        tokio::spawn(async move {
            let send = |line: TapLine| {
                let mut text = serde_json::to_vec(&line).unwrap_or_default();
                text.push(b'\n');
                tx.send(Ok(Bytes::from(text)))
            };
            let stream = dial::observe(&handles, &node, addr, request, duration).await;
            let mut stream = match stream {
                Ok(stream) => stream,
                Err(e) => {
                    let _ = send(TapLine::error(&node.id, format!("tapping {addr}: {e}"))).await;
                    return;
                }
            };
            let end = tokio::time::sleep(duration + Duration::from_secs(2));
            tokio::pin!(end);
            loop {
                let message = tokio::select! {
                    m = stream.message() => m,
                    () = &mut end => break,
                    () = tx.closed() => break,
                };
                match message {
                    Ok(Some(event)) => {
                        if send(TapLine::from_event(event, &node.id)).await.is_err() {
                            break;
                        }
                    }
                    Ok(None) => break,
                    Err(status) => {
                        let _ = send(TapLine::error(&node.id, format!("{addr}: {}", status.message()))).await;
                        break;
                    }
                }
            }
        });
    }
    drop(tx);
    ([(header::CONTENT_TYPE, "application/x-ndjson")], Body::from_stream(ReceiverStream::new(rx)))
        .into_response()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn node(id: &str, ns: &str, sa: &str, ip: [u8; 4]) -> ProxyNode {
        ProxyNode {
            id: id.into(),
            namespace: ns.into(),
            service_account: sa.into(),
            pod_ip: ip.into(),
            inbound_port: 4143,
            outbound_port: 4140,
            transparent: false,
        }
    }

    #[test]
    fn targets_resolve_to_connected_proxies() {
        let nodes = vec![
            node("payment-v1", "payments", "payment", [127, 0, 10, 3]),
            node("payment-v1", "payments", "payment", [127, 0, 10, 3]),
            node("payment-service-5d9f-abcde", "payments", "payment-sa", [10, 0, 0, 7]),
            node("checkout", "shop", "checkout", [127, 0, 10, 2]),
        ];
        let ids =
            |r: Result<Vec<ProxyNode>, String>| r.unwrap().into_iter().map(|n| n.id).collect::<Vec<_>>();
        assert_eq!(ids(resolve(&nodes, "workload/payment-v1", None)), ["payment-v1"]);
        assert_eq!(
            ids(resolve(&nodes, "deploy/payment-service", Some("payments"))),
            ["payment-service-5d9f-abcde"]
        );
        assert_eq!(ids(resolve(&nodes, "workload/checkout", Some("shop"))), ["checkout"]);
        assert!(
            resolve(&nodes, "workload/checkout", Some("payments")).unwrap_err().contains("unknown target")
        );
        let err = resolve(&nodes, "workload/nope", None).unwrap_err();
        assert!(
            err.contains("unknown target workload/nope") && err.contains("checkout (shop/checkout)"),
            "{err}"
        );
        assert!(resolve(&nodes, "svc/payment", None).unwrap_err().contains("unknown kind"));
        assert!(resolve(&nodes, "payment", None).is_err());
        assert_eq!(ids(resolve(&nodes, "pod/checkout", None)), ["checkout"]);
    }

    #[test]
    fn targets_parse_and_print() {
        let t: Target = "deployment/payment-service".parse().unwrap();
        assert_eq!((t.kind, t.name.as_str()), (TargetKind::Deployment, "payment-service"));
        assert_eq!(t.to_string(), "deploy/payment-service");
        assert_eq!(t.kind.resource(), "deployments");
        assert_eq!("po/a".parse::<Target>().unwrap().kind.resource(), "pods");
        assert_eq!("workload/a".parse::<Target>().unwrap().kind.resource(), "workloads");
        assert!("deploy/".parse::<Target>().unwrap_err().contains("one name"));
        assert!("deploy/a/b".parse::<Target>().unwrap_err().contains("one name"));
        assert!("svc/a".parse::<Target>().unwrap_err().contains("unknown kind \"svc\""));
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(same_token("abc", "abc"));
        assert!(!same_token("abd", "abc"));
        assert!(!same_token("ab", "abc"));
        assert!(!same_token("", ""));
    }

    #[test]
    fn operator_token_is_private_and_stable() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = ensure_operator_token(dir.path()).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let token = read_token(&path).unwrap();
        assert_eq!(token.len(), 64);
        ensure_operator_token(dir.path()).unwrap();
        assert_eq!(read_token(&path).unwrap(), token);
    }

    #[test]
    fn text_lines_read_like_the_docs() {
        let event = TapEvent {
            id: 7,
            direction: Direction::Inbound as i32,
            source: Some(weft_xds_protos::tap::Peer {
                address: "127.0.10.2:40000".into(),
                identity: "spiffe://cluster.local/ns/shop/sa/checkout".into(),
            }),
            destination: Some(weft_xds_protos::tap::Peer {
                address: "127.0.10.3:4143".into(),
                identity: String::new(),
            }),
            tls: true,
            authority: "payment:8080".into(),
            method: "GET".into(),
            path: "/pay".into(),
            status: 200,
            latency: Some(PbDuration { seconds: 0, nanos: 812_000 }),
            response_bytes: 5,
            kind: EventKind::Response as i32,
            ..TapEvent::default()
        };
        let line = TapLine::from_event(event, "payment-v1");
        assert_eq!(
            line.text(),
            "rsp id=7 proxy=payment-v1 dir=inbound src=127.0.10.2:40000 [spiffe://cluster.local/ns/shop/sa/checkout] \
             dst=127.0.10.3:4143 tls=true :method=GET :authority=payment:8080 :path=/pay :status=200 latency=812us bytes=5"
        );
        let json = serde_json::to_string(&line).unwrap();
        assert_eq!(serde_json::from_str::<TapLine>(&json).unwrap(), line);
    }
}
