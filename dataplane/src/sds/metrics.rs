//! The agent's Prometheus metrics: the workload certificate's
//! `identity_cert_*` series (named as weft-proxy's) and the SDS server's
//! `sds_*` series.

use std::sync::Arc;
use std::time::SystemTime;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::metrics::IdentityExpiry;

/// Every metric of the agent.
#[derive(Debug)]
pub struct SdsMetrics {
    registry: Registry,
    /// SDS streams open now (`sds_streams`).
    pub streams: Gauge,
    /// SDS responses sent (`sds_responses_total`).
    pub responses: Counter,
    /// SDS responses Envoy rejected (`sds_nacks_total`).
    pub nacks: Counter,
    refreshes: Counter,
    expiry: Arc<IdentityExpiry>,
}

impl Default for SdsMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl SdsMetrics {
    /// A registry with every family registered.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let streams = Gauge::default();
        registry.register("sds_streams", "SDS streams open now", streams.clone());
        let responses = Counter::default();
        registry.register("sds_responses", "SDS responses sent", responses.clone());
        let nacks = Counter::default();
        registry.register("sds_nacks", "SDS responses Envoy rejected", nacks.clone());
        let refreshes = Counter::default();
        registry.register(
            "identity_cert_refresh",
            "Workload certificates obtained (the first and each renewal)",
            refreshes.clone(),
        );
        let expiry = Arc::new(IdentityExpiry::new());
        registry.register_collector(Box::new(Arc::clone(&expiry)));
        Self { registry, streams, responses, nacks, refreshes, expiry }
    }

    /// Records a new workload certificate expiring at `not_after`.
    pub fn certificate_refreshed(&self, not_after: SystemTime) {
        self.expiry.set(not_after);
        self.refreshes.inc();
    }

    /// OpenMetrics text.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
