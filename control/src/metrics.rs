//! The control plane's Prometheus metrics.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
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
        Metrics {
            connected_proxies,
            pushes,
            nacks,
            push_latency,
            snapshot_version,
            invalid_objects,
            registry,
        }
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
