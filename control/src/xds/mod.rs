//! The xDS server: ADS (State-of-the-World and Delta) and the per-type
//! services (LDS, CDS, RDS, EDS, SDS), all on one core.
//!
//! Each stream runs [`stream::serve`] with a protocol ([`sotw::Sotw`] or
//! [`delta::Delta`]) that decides what to send on each request and on each new
//! snapshot. Protocol state is per proxy and per type: the nonce and version
//! last sent, what was ACKed, and what was NACKed (never sent again).

mod delta;
mod framed;
mod node;
mod peer;
pub mod registry;
mod service;
mod sotw;
mod stream;
pub mod trace;

use std::sync::Arc;

use tokio::sync::watch;

use crate::cache::Snapshot;
use crate::metrics::Metrics;

pub use node::{NodeError, proxy_node};
pub use registry::{NackReport, ProxyReport, Registry, TypeReport};
pub use service::{XdsServer, routes};
pub use trace::PushTracer;

/// What every stream needs: the snapshot feed, the registry and metrics.
#[derive(Debug, Clone)]
pub struct XdsContext {
    /// The latest published snapshot.
    pub snapshots: watch::Receiver<Arc<Snapshot>>,
    /// Connected proxies and their xDS state.
    pub registry: Registry,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// `Some` when xDS is served over TLS: every stream and fetch must then present a client
    /// certificate whose identity matches its node. `None` serves anyone (plaintext).
    pub client_auth: Option<ClientAuth>,
    /// `Some` with `--trace-collector`: a span per push per proxy.
    pub push_tracer: Option<trace::PushTracer>,
}

/// Who may fetch xDS when the port is TLS.
#[derive(Debug, Clone)]
pub struct ClientAuth {
    /// The mesh's trust domain: client identities must be in it.
    pub trust_domain: String,
}

/// A short name for a type URL (`cds`, `eds`, `lds`, `rds`, `sds`).
pub fn short_type(type_url: &str) -> &'static str {
    use weft_xds_protos::type_url::*;
    match type_url {
        CLUSTER => "cds",
        ENDPOINT => "eds",
        LISTENER => "lds",
        ROUTE => "rds",
        SECRET => "sds",
        _ => "unknown",
    }
}

/// Whether an empty subscription means "everything" for this type (LDS, CDS).
fn wildcard_type(type_url: &str) -> bool {
    type_url == weft_xds_protos::type_url::LISTENER || type_url == weft_xds_protos::type_url::CLUSTER
}

/// The static type URL for one we serve.
fn known_type(type_url: &str) -> Option<&'static str> {
    crate::cache::TYPE_ORDER.iter().copied().find(|t| *t == type_url)
}

#[cfg(test)]
mod tests;
