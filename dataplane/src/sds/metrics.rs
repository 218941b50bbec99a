//! The agent's Prometheus metrics: the workload certificate's
//! `identity_cert_*` series (named as weft-proxy's) and the SDS server's
//! `sds_*` series.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::registry::Registry;

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
    expiry: std::sync::Arc<Expiry>,
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
        let expiry = std::sync::Arc::new(Expiry(AtomicI64::new(i64::MIN)));
        registry.register_collector(Box::new(std::sync::Arc::clone(&expiry)));
        Self { registry, streams, responses, nacks, refreshes, expiry }
    }

    /// Records a new workload certificate expiring at `not_after`.
    pub fn certificate_refreshed(&self, not_after: SystemTime) {
        self.expiry.0.store(unix_seconds(not_after), Ordering::Relaxed);
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

/// The certificate's `not_after` (Unix seconds, `i64::MIN` until known),
/// with the time left computed at each scrape.
#[derive(Debug)]
struct Expiry(AtomicI64);

fn unix_seconds(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_secs()).map_or(i64::MIN + 1, |s| -s),
    }
}

impl Collector for Expiry {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> std::fmt::Result {
        let not_after = self.0.load(Ordering::Relaxed);
        if not_after == i64::MIN {
            return Ok(());
        }
        let metric = encoder.encode_descriptor(
            "identity_cert_expiration_timestamp_seconds",
            "When the workload certificate expires (its not_after), in Unix seconds",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(not_after).encode(metric)?;
        let metric = encoder.encode_descriptor(
            "identity_cert_expiry_seconds",
            "Seconds until the workload certificate expires (negative once expired)",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(not_after.saturating_sub(unix_seconds(SystemTime::now()))).encode(metric)
    }
}
