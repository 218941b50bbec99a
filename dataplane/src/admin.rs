//! The admin server (axum), on `<pod-ip>:4191` by default:
//!
//! | path | what |
//! |---|---|
//! | `/live` | 200 while the process runs |
//! | `/ready` | 200 once the workload certificate is held (unless plaintext) and the first full config is applied, 503 before |
//! | `/metrics` | Prometheus (OpenMetrics text) |
//! | `/config_dump` | what xDS sent and the proxy holds, laid out as Envoy's config dump |
//! | `/identity` | the workload certificate: identity, validity, renewal time, trust anchors (JSON) |

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;
use weft_xds_protos::json::any_to_json;

use crate::metrics::Metrics;
use crate::tls::{Credentials, CredentialsWatch};
use crate::xds::{Held, Nack, NodeInfo, ResourceStatus, ResourceType, Status, TypeStatus};

/// What the admin handlers read.
#[derive(Debug, Clone)]
pub struct AdminState {
    /// The xDS client's status (readiness, resources).
    pub status: watch::Receiver<Arc<Status>>,
    /// The proxy's metrics.
    pub metrics: Arc<Metrics>,
    /// Who the proxy is.
    pub node: NodeInfo,
}

/// What the handlers read: the xDS state and, under mTLS, the credentials.
#[derive(Debug, Clone)]
struct Shared {
    admin: AdminState,
    /// `None`: plaintext, no workload certificate is expected.
    identity: Option<CredentialsWatch>,
}

/// The admin routes of a proxy without a workload certificate (plaintext).
pub fn router(state: AdminState) -> Router {
    router_with_identity(state, None)
}

/// The admin routes; with `identity`, `/ready` also waits for a workload
/// certificate and `/identity` shows it.
pub fn router_with_identity(state: AdminState, identity: Option<CredentialsWatch>) -> Router {
    Router::new()
        .route("/live", get(|| async { "live\n" }))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/config_dump", get(config_dump))
        .route("/identity", get(identity_handler))
        .with_state(Shared { admin: state, identity })
}

/// Serves the admin routes on `listener` until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    state: AdminState,
    shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    serve_router(listener, router(state), shutdown).await
}

/// [`serve`] with a workload certificate (see [`router_with_identity`]).
pub async fn serve_with_identity(
    listener: TcpListener,
    state: AdminState,
    identity: Option<CredentialsWatch>,
    shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    serve_router(listener, router_with_identity(state, identity), shutdown).await
}

/// Serves `router` on `listener` until `shutdown` turns true.
pub async fn serve_router(
    listener: TcpListener,
    router: Router,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            let _ = shutdown.wait_for(|stop| *stop).await;
        })
        .await
}

/// Binds the admin address.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

async fn ready(State(s): State<Shared>) -> Response {
    if let Some(identity) = &s.identity
        && identity.borrow().is_none()
    {
        let why = "no workload certificate yet (certifying with the control plane)";
        return (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}\n")).into_response();
    }
    let status = s.admin.status.borrow().clone();
    if status.ready {
        return (StatusCode::OK, "ready\n").into_response();
    }
    let why = if status.connected {
        "waiting for the first full config (listeners, clusters, and the routes and endpoints they use)"
    } else {
        "not connected to the control plane yet"
    };
    (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}\n")).into_response()
}

async fn identity_handler(State(s): State<Shared>) -> Response {
    identity_response(s.identity.as_ref())
}

/// The `/identity` answer: 200 with [`identity_json`], 503 while no
/// certificate is held, 404 when the process runs without one (plaintext).
pub fn identity_response(identity: Option<&CredentialsWatch>) -> Response {
    let Some(identity) = identity else {
        let body = json!({ "error": "no workload identity: running with --insecure-plaintext" });
        return (StatusCode::NOT_FOUND, Json(body)).into_response();
    };
    let creds = identity.borrow().clone();
    match creds {
        Some(creds) => Json(identity_json(&creds, SystemTime::now())).into_response(),
        None => {
            let body = json!({ "identity": null, "error": "no workload certificate yet" });
            (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
        }
    }
}

/// The workload certificate as JSON: `identity`, `not_before`, `not_after`,
/// `renew_at` (RFC 3339), `expires_in_seconds` (from `now`), `chain`
/// (subject, issuer, serial, not_after of each certificate, leaf first) and
/// `trust_anchors` (subject and not_after of each root).
pub fn identity_json(creds: &Credentials, now: SystemTime) -> Value {
    let expires_in = match creds.not_after().duration_since(now) {
        Ok(left) => i64::try_from(left.as_secs()).unwrap_or(i64::MAX),
        Err(past) => -i64::try_from(past.duration().as_secs()).unwrap_or(i64::MAX),
    };
    json!({
        "identity": creds.identity().to_string(),
        "not_before": timestamp(creds.not_before()),
        "not_after": timestamp(creds.not_after()),
        "renew_at": timestamp(creds.renew_at()),
        "expires_in_seconds": expires_in,
        "chain": creds.chain().iter().map(|c| describe_certificate(c)).collect::<Vec<_>>(),
        "trust_anchors": creds.trust_bundle().iter().map(|c| describe_certificate(c)).collect::<Vec<_>>(),
    })
}

fn describe_certificate(der: &[u8]) -> Value {
    match x509_parser::parse_x509_certificate(der) {
        Ok((_, cert)) => {
            let at = |t: i64| UNIX_EPOCH + std::time::Duration::from_secs(u64::try_from(t).unwrap_or(0));
            json!({
                "subject": cert.subject().to_string(),
                "issuer": cert.issuer().to_string(),
                "serial": cert.raw_serial_as_string(),
                "not_before": timestamp(at(cert.validity().not_before.timestamp())),
                "not_after": timestamp(at(cert.validity().not_after.timestamp())),
            })
        }
        Err(e) => json!({ "error": format!("unparsable certificate: {e}") }),
    }
}

async fn metrics(State(s): State<Shared>) -> Response {
    let content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8";
    ([(header::CONTENT_TYPE, content_type)], s.admin.metrics.encode()).into_response()
}

async fn config_dump(State(s): State<Shared>) -> Json<Value> {
    let status = s.admin.status.borrow().clone();
    Json(render_dump(&status, &s.admin.node))
}

/// The config dump: Envoy's `configs` layout (clusters, endpoints, listeners,
/// routes), each resource rendered from the bytes received, plus weft's own
/// `node`, `ready` and per-type `xds` stream state.
pub fn render_dump(status: &Status, node: &NodeInfo) -> Value {
    let empty = TypeStatus::default();
    let of = |kind| status.types.get(&kind).unwrap_or(&empty);
    let configs = vec![
        clusters(of(ResourceType::Cluster)),
        endpoints(of(ResourceType::Endpoint)),
        listeners(of(ResourceType::Listener)),
        routes(of(ResourceType::Route)),
    ];
    let xds: BTreeMap<&str, Value> = ResourceType::ALL
        .into_iter()
        .map(|kind| {
            let ts = of(kind);
            let value = json!({
                "type_url": kind.type_url(),
                "version_info": ts.system_version,
                "subscribed": ts.subscribed,
                "acks": ts.acks,
                "nacks": ts.nacks,
                "last_nack": ts.last_nack.as_ref().map(nack),
            });
            (kind.short(), value)
        })
        .collect();
    json!({
        "node": {
            "id": node.id,
            "namespace": node.namespace,
            "service_account": node.service_account,
            "pod_ip": node.pod_ip.to_string(),
            "inbound_port": node.inbound_port,
            "outbound_port": node.outbound_port,
            "app_port": node.app_port,
        },
        "ready": status.ready,
        "connected": status.connected,
        "configs": configs,
        "xds": xds,
    })
}

fn clusters(ts: &TypeStatus) -> Value {
    let mut active = Vec::new();
    let mut warming = Vec::new();
    for r in &ts.resources {
        active.extend(r.active.as_ref().map(|h| held(h, "cluster", r)));
        warming.extend(r.warming.as_ref().map(|h| held(h, "cluster", r)));
    }
    json!({
        "@type": "type.googleapis.com/envoy.admin.v3.ClustersConfigDump",
        "version_info": ts.system_version,
        "dynamic_active_clusters": active,
        "dynamic_warming_clusters": warming,
    })
}

fn endpoints(ts: &TypeStatus) -> Value {
    let configs: Vec<Value> = ts.resources.iter().filter_map(|r| dynamic(r, "endpoint_config")).collect();
    json!({
        "@type": "type.googleapis.com/envoy.admin.v3.EndpointsConfigDump",
        "dynamic_endpoint_configs": configs,
    })
}

fn routes(ts: &TypeStatus) -> Value {
    let configs: Vec<Value> = ts.resources.iter().filter_map(|r| dynamic(r, "route_config")).collect();
    json!({
        "@type": "type.googleapis.com/envoy.admin.v3.RoutesConfigDump",
        "dynamic_route_configs": configs,
    })
}

fn listeners(ts: &TypeStatus) -> Value {
    let listeners: Vec<Value> = ts
        .resources
        .iter()
        .map(|r| {
            let state = |h: &Held| {
                json!({
                    "version_info": h.version,
                    "listener": render(h),
                    "last_updated": timestamp(h.last_updated),
                })
            };
            let mut v = json!({ "name": r.name });
            if let Some(h) = &r.active {
                v["active_state"] = state(h);
            }
            if let Some(h) = &r.warming {
                v["warming_state"] = state(h);
            }
            if let Some(n) = &r.rejected {
                v["error_state"] = error_state(n);
            }
            v
        })
        .collect();
    json!({
        "@type": "type.googleapis.com/envoy.admin.v3.ListenersConfigDump",
        "version_info": ts.system_version,
        "dynamic_listeners": listeners,
    })
}

/// A route table or assignment entry: `None` when only a rejection is held.
fn dynamic(r: &ResourceStatus, field: &str) -> Option<Value> {
    let mut v = match &r.active {
        Some(h) => held(h, field, r),
        None => json!({ "name": r.name }),
    };
    if let Some(n) = &r.rejected {
        v["error_state"] = error_state(n);
    }
    (r.active.is_some() || r.rejected.is_some()).then_some(v)
}

fn held(h: &Held, field: &str, r: &ResourceStatus) -> Value {
    let mut v = json!({
        "version_info": h.version,
        "last_updated": timestamp(h.last_updated),
        "client_status": if r.rejected.is_some() { "NACKED" } else { "ACKED" },
    });
    v[field] = render(h);
    v
}

fn render(h: &Held) -> Value {
    any_to_json(&h.resource).unwrap_or_else(|e| Value::String(format!("(not rendered: {e})")))
}

fn error_state(n: &Nack) -> Value {
    json!({ "version_info": n.version, "details": n.detail, "last_update_attempt": timestamp(n.at) })
}

fn nack(n: &Nack) -> Value {
    json!({ "version_info": n.version, "details": n.detail, "at": timestamp(n.at) })
}

/// RFC 3339 in UTC with milliseconds, as protobuf's JSON shows a Timestamp.
pub(crate) fn timestamp(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (year, month, day) = civil_from_days(i64::try_from(secs / 86_400).unwrap_or(0));
    let rem = secs % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(timestamp(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_709_251_199_123);
        assert_eq!(timestamp(t), "2024-02-29T23:59:59.123Z");
        let t = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(timestamp(t), "2000-02-29T00:00:00.000Z");
    }
}
