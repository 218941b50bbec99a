//! One config generation as the data path uses it: the [`Config`] plus what
//! is derived from it off the hot path (indexed route tables, cluster
//! states). A request loads the current [`Runtime`] once, lock-free, and
//! finishes on it even if a newer one is swapped in meanwhile.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;

use super::cluster::ClusterState;
use super::route::IndexedTable;
use super::tls::{CredentialsRx, TlsContexts};
use crate::config::{Config, Discovery};
use crate::metrics::Metrics;
use crate::tap::Tap;

/// A config generation with its derived state.
#[derive(Debug, Default)]
pub(crate) struct Runtime {
    /// Clusters by name.
    pub(crate) clusters: HashMap<String, Arc<ClusterState>>,
    /// RDS route tables by name, indexed.
    pub(crate) routes: HashMap<String, Arc<IndexedTable>>,
}

impl Runtime {
    /// The generation for `config`, reusing what `self` (the previous one)
    /// derived from unchanged resources.
    pub(crate) fn next(&self, config: &Config) -> Runtime {
        let clusters = config
            .clusters
            .iter()
            .map(|(name, spec)| {
                let endpoints = match &spec.discovery {
                    Discovery::Static(endpoints) => Some(endpoints),
                    Discovery::Eds => config.endpoints.get(name),
                };
                (name.clone(), ClusterState::build(spec, endpoints, self.clusters.get(name)))
            })
            .collect();
        let routes = config
            .routes
            .iter()
            .map(|(name, table)| {
                let indexed = match self.routes.get(name) {
                    Some(old) if Arc::ptr_eq(&old.table, table) => Arc::clone(old),
                    _ => Arc::new(IndexedTable::new(Arc::clone(table))),
                };
                (name.clone(), indexed)
            })
            .collect();
        Runtime { clusters, routes }
    }
}

/// What every listener and connection shares.
#[derive(Debug)]
pub(crate) struct Shared {
    /// The current generation.
    pub(crate) runtime: ArcSwap<Runtime>,
    /// Metrics.
    pub(crate) metrics: Arc<Metrics>,
    /// The HTTP server settings (HTTP/1.1 and h2c, detected per connection).
    pub(crate) http: auto::Builder<TokioExecutor>,
    /// The same, HTTP/2 only (TLS connections that negotiated `h2`).
    pub(crate) h2: auto::Builder<TokioExecutor>,
    /// rustls configs from the workload's current credentials.
    pub(crate) tls: TlsContexts,
    /// Tap sessions.
    pub(crate) tap: Arc<Tap>,
}

impl Shared {
    /// Shared state with an empty config, following `credentials`.
    pub(crate) fn new(metrics: Arc<Metrics>, credentials: CredentialsRx, tap: Arc<Tap>) -> Shared {
        let mut http = auto::Builder::new(TokioExecutor::new());
        http.http1().timer(TokioTimer::new()).keep_alive(true);
        // No per-connection cap on locally reset streams (h2's default: GOAWAY ENHANCE_YOUR_CALM
        // after 1,024). When a response is complete before its request body, the stream is
        // reset with NO_ERROR (RFC 9113 section 8.1) while the client may still have DATA in
        // flight. h2 ignores such DATA only for the last 50 streams it reset (within 1 s, and
        // hyper's server cannot raise that); for the others each late DATA frame is answered
        // with RST_STREAM(STREAM_CLOSED) and counted as if the client had erred, so under
        // load a healthy connection was closed with every request on it. Envoy has no such
        // cap; rapid-reset protection (pending-accept resets) and the stream limit remain.
        http.http2().timer(TokioTimer::new()).max_local_error_reset_streams(None);
        let h2 = http.clone().http2_only();
        Shared {
            runtime: ArcSwap::from_pointee(Runtime::default()),
            metrics,
            http,
            h2,
            tls: TlsContexts::new(credentials),
            tap,
        }
    }
}
