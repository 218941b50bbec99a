//! The agent's admin server (`--admin-addr`):
//!
//! | path | what |
//! |---|---|
//! | `/live` | 200 while the process runs |
//! | `/ready` | 200 once a workload certificate is held and SDS is served, 503 before |
//! | `/metrics` | Prometheus (OpenMetrics text) |
//! | `/identity` | the workload certificate (JSON, as weft-proxy's `/identity`) |

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::metrics::SdsMetrics;
use crate::admin::identity_response;
use crate::tls::CredentialsWatch;

/// What the handlers read.
#[derive(Debug, Clone)]
pub struct AgentAdminState {
    /// The workload credentials (`None` until certified).
    pub credentials: CredentialsWatch,
    /// The agent's metrics.
    pub metrics: Arc<SdsMetrics>,
}

/// The admin routes.
pub fn router(state: AgentAdminState) -> Router {
    Router::new()
        .route("/live", get(|| async { "live\n" }))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/identity", get(identity))
        .with_state(state)
}

async fn ready(State(s): State<AgentAdminState>) -> Response {
    if s.credentials.borrow().is_some() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        let why = "no workload certificate yet (certifying with the control plane)";
        (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}\n")).into_response()
    }
}

async fn metrics(State(s): State<AgentAdminState>) -> Response {
    let content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8";
    ([(header::CONTENT_TYPE, content_type)], s.metrics.encode()).into_response()
}

async fn identity(State(s): State<AgentAdminState>) -> Response {
    identity_response(Some(&s.credentials))
}
