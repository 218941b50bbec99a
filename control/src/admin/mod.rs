//! The control plane's admin API (axum): health, metrics, what each proxy was
//! sent and accepted, identity (`/debug/identity`), and the apply endpoint behind `weft apply`.

pub mod identity;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

pub use weft_xds_protos::json::{JsonError, any_to_json};

use crate::cache::Snapshot;
use crate::metrics::Metrics;
use crate::server::SourceHandle;
use crate::xds::{Registry, short_type};

/// What the admin handlers read.
#[derive(Debug, Clone)]
pub struct AdminState {
    /// The latest snapshot.
    pub snapshots: watch::Receiver<Arc<Snapshot>>,
    /// Connected proxies.
    pub registry: Registry,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// The manifest source, for apply and its status.
    pub source: SourceHandle,
    /// The mesh's trust domain.
    pub trust_domain: String,
    /// The CA and certificates; `None` when serving plaintext.
    pub identity: Option<identity::IdentityHandles>,
    /// Kubernetes mode: how tap authenticates and authorizes operators (TokenReview and
    /// SubjectAccessReview) and finds Deployments' pods; `None` uses the operator token.
    pub kube_tap: Option<crate::tap::KubeTap>,
}

/// The admin routes.
pub fn router(state: AdminState) -> Router {
    if let Some(identity) = &state.identity {
        crate::tap::setup_operator_token(identity);
    }
    Router::new()
        .route("/live", get(|| async { "live\n" }))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/debug/proxies", get(proxies))
        .route("/debug/config", get(config))
        .route("/debug/source", get(source))
        .route("/debug/identity", get(identity_report))
        .route("/apply", post(apply))
        .route("/tap", get(crate::tap::handler))
        .route("/stat", get(crate::stat::handler))
        .with_state(state)
}

async fn ready(State(s): State<AdminState>) -> Response {
    if s.snapshots.borrow().version > 0 {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready: no snapshot published yet\n").into_response()
    }
}

async fn metrics(State(s): State<AdminState>) -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
        s.metrics.encode(),
    )
        .into_response()
}

async fn proxies(State(s): State<AdminState>) -> Json<Vec<crate::xds::ProxyReport>> {
    Json(s.registry.reports().await)
}

async fn identity_report(State(s): State<AdminState>) -> Json<identity::IdentityReport> {
    Json(identity::report(&s.trust_domain, s.identity.as_ref(), s.registry.reports().await))
}

#[derive(Debug, Deserialize)]
struct ConfigQuery {
    node: String,
}

#[derive(Debug, Serialize)]
struct ConfigDump {
    node: crate::translate::ProxyNode,
    snapshot_version: u64,
    /// Per short type name: resources with name, version and the resource as JSON.
    resources: BTreeMap<&'static str, Vec<serde_json::Value>>,
}

async fn config(State(s): State<AdminState>, Query(q): Query<ConfigQuery>) -> Response {
    let reports = s.registry.reports().await;
    let Some(report) = reports.into_iter().find(|r| r.node.id == q.node) else {
        let msg = format!("no proxy with node id {:?} is connected\n", q.node);
        return (StatusCode::NOT_FOUND, msg).into_response();
    };
    let snapshot = s.snapshots.borrow().clone();
    let view = snapshot.for_proxy(&report.node);
    let mut resources = BTreeMap::new();
    for (type_url, items) in &view.by_type {
        let rendered = items
            .values()
            .map(|r| {
                let resource = any_to_json(&r.any)
                    .unwrap_or_else(|e| serde_json::Value::String(format!("(not rendered: {e})")));
                serde_json::json!({ "name": r.name, "version": r.version, "resource": resource })
            })
            .collect();
        resources.insert(short_type(type_url), rendered);
    }
    Json(ConfigDump { node: report.node, snapshot_version: snapshot.version, resources }).into_response()
}

async fn source(State(s): State<AdminState>) -> Response {
    let snapshot = s.snapshots.borrow().clone();
    let errors: Vec<String> = s.source.errors().await.iter().map(ToString::to_string).collect();
    Json(serde_json::json!({
        "snapshot_version": snapshot.version,
        "invalid_objects": errors,
        "traffic_splits": snapshot.splits.status.iter().map(|(k, v)| (k.to_string(), v)).collect::<BTreeMap<_, _>>(),
    }))
    .into_response()
}

#[derive(Debug, Deserialize)]
struct ApplyQuery {
    /// A label for error messages: the file the user applied.
    file: Option<String>,
}

/// The reply to `POST /apply`.
#[derive(Debug, Serialize, Deserialize)]
pub struct ApplyReply {
    /// What was stored, one line per object (`TrafficSplit payments/split configured`).
    pub applied: Vec<String>,
    /// Why nothing was stored, one line per problem (file, object, field, reason).
    pub errors: Vec<String>,
}

async fn apply(State(s): State<AdminState>, Query(q): Query<ApplyQuery>, body: Bytes) -> Response {
    let label = q.file.unwrap_or_else(|| "<request body>".into());
    let Ok(text) = std::str::from_utf8(&body) else {
        let reply = ApplyReply { applied: vec![], errors: vec![format!("{label}: body is not UTF-8")] };
        return (StatusCode::UNPROCESSABLE_ENTITY, Json(reply)).into_response();
    };
    match s.source.apply(&label, text).await {
        Ok(applied) => (StatusCode::OK, Json(ApplyReply { applied, errors: vec![] })).into_response(),
        Err(errors) => {
            (StatusCode::UNPROCESSABLE_ENTITY, Json(ApplyReply { applied: vec![], errors })).into_response()
        }
    }
}
