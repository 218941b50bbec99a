//! The control plane's Prometheus metrics.

use std::sync::{Arc, PoisonError, RwLock};
use std::time::SystemTime;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// A label naming an xDS resource type (`cds`, `eds`, `lds`, `rds`, `sds`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TypeLabel {
    /// Short type name.
    pub r#type: String,
}

/// A label naming the stream flavour (`sotw` or `delta`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModeLabel {
    /// `sotw` or `delta`.
    pub mode: String,
}

/// A label naming why the control plane refused a caller.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// E.g. `invalid_token`, `no_client_certificate` (see `identity::Refusal`).
    pub reason: String,
}

/// `weft_identity_root_expiry_seconds`, computed at scrape time; absent without a CA.
#[derive(Debug, Default, Clone)]
struct RootExpiry(Arc<RwLock<Option<SystemTime>>>);

impl Collector for RootExpiry {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(not_after) = *self.0.read().unwrap_or_else(PoisonError::into_inner) else {
            return Ok(());
        };
        let now = SystemTime::now();
        let left = match not_after.duration_since(now) {
            Ok(d) => d.as_secs_f64(),
            Err(e) => -e.duration().as_secs_f64(),
        };
        let gauge = ConstGauge::new(left.floor());
        let metric = encoder.encode_descriptor(
            "identity_root_expiry_seconds",
            "Seconds until the mesh CA's root certificate expires (negative once it has).",
            None,
            gauge.metric_type(),
        )?;
        gauge.encode(metric)
    }
}

/// Every metric the control plane exports.
#[derive(Debug)]
pub struct Metrics {
    /// Proxies with an open xDS stream.
    pub connected_proxies: Family<ModeLabel, Gauge>,
    /// Responses sent, per type.
    pub pushes: Family<TypeLabel, Counter>,
    /// NACKs received, per type.
    pub nacks: Family<TypeLabel, Counter>,
    /// Time from a snapshot's build to a response carrying it being sent.
    pub push_latency: Histogram,
    /// The latest published snapshot version.
    pub snapshot_version: Gauge,
    /// Invalid objects in the current source state.
    pub invalid_objects: Gauge,
    /// Workload certificates issued.
    pub identity_issued: Counter,
    /// Callers refused (Certify and xDS), per reason.
    pub identity_refused: Family<ReasonLabel, Counter>,
    root_expiry: RootExpiry,
    registry: Registry,
}

impl Metrics {
    /// Creates and registers the metrics.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("weft");
        let connected_proxies = Family::<ModeLabel, Gauge>::default();
        let pushes = Family::<TypeLabel, Counter>::default();
        let nacks = Family::<TypeLabel, Counter>::default();
        let push_latency = Histogram::new(exponential_buckets(0.0001, 2.0, 18));
        let snapshot_version = Gauge::default();
        let invalid_objects = Gauge::default();
        registry.register(
            "xds_connected_proxies",
            "Proxies with an open xDS stream",
            connected_proxies.clone(),
        );
        registry.register("xds_pushes", "xDS responses sent", pushes.clone());
        registry.register("xds_nacks", "xDS NACKs received from proxies", nacks.clone());
        registry.register(
            "xds_push_latency_seconds",
            "Time from a snapshot being built to a response carrying it being sent",
            push_latency.clone(),
        );
        registry.register("snapshot_version", "Latest published snapshot version", snapshot_version.clone());
        registry.register("invalid_objects", "Invalid objects in the source", invalid_objects.clone());
        let identity_issued = Counter::default();
        let identity_refused = Family::<ReasonLabel, Counter>::default();
        let root_expiry = RootExpiry::default();
        registry.register("identity_issued", "Workload certificates issued", identity_issued.clone());
        registry.register(
            "identity_refused",
            "Certify calls and xDS connections refused, by reason",
            identity_refused.clone(),
        );
        registry.register_collector(Box::new(root_expiry.clone()));
        Metrics {
            connected_proxies,
            pushes,
            nacks,
            push_latency,
            snapshot_version,
            invalid_objects,
            identity_issued,
            identity_refused,
            root_expiry,
            registry,
        }
    }

    /// Sets the root expiry reported as `weft_identity_root_expiry_seconds`.
    pub fn set_root_not_after(&self, not_after: SystemTime) {
        *self.root_expiry.0.write().unwrap_or_else(PoisonError::into_inner) = Some(not_after);
    }

    /// Counts one refusal (`weft_identity_refused_total{reason}`).
    pub fn refused(&self, reason: &str) {
        self.identity_refused.get_or_create(&ReasonLabel { reason: reason.to_owned() }).inc();
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
