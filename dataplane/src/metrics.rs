//! Prometheus metrics of the proxy, with Linkerd's names where they exist so
//! its dashboards read them: `request_total`, `response_total`,
//! `response_latency_ms`, `tcp_open_total`, `tcp_read_bytes_total`,
//! `tcp_write_bytes_total`; plus the xDS client's `xds_*` series.
//!
//! The data path never hashes a label set per request: it resolves the
//! handles of an authority once ([`Metrics::http`]) and caches them in a
//! lock-free map ([`arc_swap`]); the handles of one status code are cached
//! the same way inside [`HttpMetrics`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use std::fmt::Write as _;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Linkerd's latency buckets, in milliseconds.
const LATENCY_BUCKETS_MS: [f64; 26] = [
    1.0, 2.0, 3.0, 4.0, 5.0, 10.0, 20.0, 30.0, 40.0, 50.0, 100.0, 200.0, 300.0, 400.0, 500.0, 1_000.0,
    2_000.0, 3_000.0, 4_000.0, 5_000.0, 10_000.0, 20_000.0, 30_000.0, 40_000.0, 50_000.0, 60_000.0,
];

/// Distinct authorities tracked before new ones share the `authority="_other"`
/// series: the authority comes from clients, so its cardinality is bounded.
const MAX_AUTHORITIES: usize = 4096;

/// Label value of the authorities past [`MAX_AUTHORITIES`].
const OTHER_AUTHORITY: &str = "_other";

/// Label of the `xds_*` series: the resource type short name (`lds`, `cds`, ...).
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct TypeLabel {
    /// Resource type short name.
    pub r#type: String,
}

/// Which side of the workload a connection or request is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Traffic to the local workload (the listener named `inbound`).
    Inbound,
    /// Traffic from the local workload (every other listener).
    Outbound,
}

impl EncodeLabelValue for Direction {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> std::fmt::Result {
        encoder.write_str(match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        })
    }
}

impl Direction {
    /// The direction of a listener, by its name: `inbound` or not.
    pub fn of_listener(name: &str) -> Direction {
        if name == "inbound" { Direction::Inbound } else { Direction::Outbound }
    }
}

/// `{direction}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct DirectionLabels {
    direction: Direction,
}

/// `{direction, authority}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    direction: Direction,
    authority: String,
}

/// `{direction, authority, status_code, classification}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ResponseLabels {
    direction: Direction,
    authority: String,
    status_code: u16,
    classification: Classification,
}

/// `{direction, authority, status_code}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct LatencyLabels {
    direction: Direction,
    authority: String,
    status_code: u16,
}

/// Whether a response counts as a success.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Classification {
    Success,
    Failure,
}

impl EncodeLabelValue for Classification {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> std::fmt::Result {
        encoder.write_str(match self {
            Classification::Success => "success",
            Classification::Failure => "failure",
        })
    }
}

type HistogramFamily<S> = Family<S, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS_MS)
}

/// The HTTP series cache, by direction and authority.
type AuthorityMap = HashMap<(Direction, Box<str>), Arc<HttpMetrics>>;

/// The metric families of the HTTP data path.
#[derive(Debug)]
struct HttpFamilies {
    request_total: Family<RequestLabels, Counter>,
    response_total: Family<ResponseLabels, Counter>,
    response_latency_ms: HistogramFamily<LatencyLabels>,
}

/// The TCP counters of one direction.
#[derive(Debug, Clone, Default)]
pub struct TcpMetrics {
    /// Connections accepted (`tcp_open_total`).
    pub open: Counter,
    /// Bytes read from the downstream peer (`tcp_read_bytes_total`).
    pub read_bytes: Counter,
    /// Bytes written to the downstream peer (`tcp_write_bytes_total`).
    pub write_bytes: Counter,
}

/// Every metric of the proxy, and the registry that encodes them.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Resource updates applied, by type (`xds_updates_total`).
    pub xds_updates: Family<TypeLabel, Counter>,
    /// Resource updates rejected (NACKed), by type (`xds_rejections_total`).
    pub xds_rejections: Family<TypeLabel, Counter>,
    /// 1 while the xDS stream is up (`xds_connected`).
    pub xds_connected: Gauge,
    http: HttpFamilies,
    tcp_inbound: TcpMetrics,
    tcp_outbound: TcpMetrics,
    by_authority: ArcSwap<AuthorityMap>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// A registry with every family registered and no series yet.
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let xds_updates = Family::<TypeLabel, Counter>::default();
        let xds_rejections = Family::<TypeLabel, Counter>::default();
        let xds_connected = Gauge::default();
        registry.register("xds_updates", "xDS resource updates applied, by type", xds_updates.clone());
        registry.register(
            "xds_rejections",
            "xDS resource updates rejected (NACKed), by type",
            xds_rejections.clone(),
        );
        registry.register(
            "xds_connected",
            "1 while the xDS stream to the control plane is up",
            xds_connected.clone(),
        );

        let http = HttpFamilies {
            request_total: Family::default(),
            response_total: Family::default(),
            response_latency_ms: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
        };
        registry.register(
            "request",
            "HTTP requests received, by direction and authority",
            http.request_total.clone(),
        );
        registry.register(
            "response",
            "HTTP responses sent, by direction, authority, status code and classification",
            http.response_total.clone(),
        );
        registry.register(
            "response_latency_ms",
            "Time from a request's headers to its response's headers, in milliseconds",
            http.response_latency_ms.clone(),
        );

        let tcp_open = Family::<DirectionLabels, Counter>::default();
        let tcp_read = Family::<DirectionLabels, Counter>::default();
        let tcp_write = Family::<DirectionLabels, Counter>::default();
        registry.register("tcp_open", "Connections accepted, by direction", tcp_open.clone());
        registry.register(
            "tcp_read_bytes",
            "Bytes read from downstream peers, by direction",
            tcp_read.clone(),
        );
        registry.register(
            "tcp_write_bytes",
            "Bytes written to downstream peers, by direction",
            tcp_write.clone(),
        );
        let tcp = |direction| {
            let labels = DirectionLabels { direction };
            TcpMetrics {
                open: tcp_open.get_or_create_owned(&labels),
                read_bytes: tcp_read.get_or_create_owned(&labels),
                write_bytes: tcp_write.get_or_create_owned(&labels),
            }
        };
        let tcp_inbound = tcp(Direction::Inbound);
        let tcp_outbound = tcp(Direction::Outbound);

        Metrics {
            registry,
            xds_updates,
            xds_rejections,
            xds_connected,
            http,
            tcp_inbound,
            tcp_outbound,
            by_authority: ArcSwap::from_pointee(HashMap::new()),
        }
    }

    /// Every series in the Prometheus / OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail; an encoding error would be a bug
        // in a label encoder, and a partial page is the best answer then.
        if let Err(error) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(%error, "encoding metrics");
        }
        out
    }

    /// The TCP counters of a direction.
    pub fn tcp(&self, direction: Direction) -> &TcpMetrics {
        match direction {
            Direction::Inbound => &self.tcp_inbound,
            Direction::Outbound => &self.tcp_outbound,
        }
    }

    /// The HTTP series of one direction and authority, created on first use.
    pub fn http(&self, direction: Direction, authority: &str) -> Arc<HttpMetrics> {
        let map = self.by_authority.load();
        // A lookup by (Direction, &str) without allocating a key.
        if let Some(found) = lookup(&map, direction, authority) {
            return found;
        }
        let authority = if map.len() >= MAX_AUTHORITIES { OTHER_AUTHORITY } else { authority };
        if let Some(found) = lookup(&map, direction, authority) {
            return found;
        }
        drop(map);
        let created = Arc::new(HttpMetrics::new(&self.http, direction, authority));
        let key: (Direction, Box<str>) = (direction, authority.into());
        let mut result = Arc::clone(&created);
        self.by_authority.rcu(|map| {
            let mut map = HashMap::clone(map);
            result = Arc::clone(map.entry(key.clone()).or_insert_with(|| Arc::clone(&created)));
            map
        });
        result
    }
}

fn lookup(map: &AuthorityMap, direction: Direction, authority: &str) -> Option<Arc<HttpMetrics>> {
    // HashMap cannot borrow a tuple key as (Direction, &str); the map is small
    // per direction in practice, but a linear scan would not be, so hash a
    // borrowed view instead.
    map.get(&AuthorityKey { direction, authority } as &dyn KeyView).cloned()
}

/// A borrowed view of the cache key, so lookups do not allocate.
trait KeyView {
    fn key(&self) -> (Direction, &str);
}

impl KeyView for (Direction, Box<str>) {
    fn key(&self) -> (Direction, &str) {
        (self.0, &self.1)
    }
}

struct AuthorityKey<'a> {
    direction: Direction,
    authority: &'a str,
}

impl KeyView for AuthorityKey<'_> {
    fn key(&self) -> (Direction, &str) {
        (self.direction, self.authority)
    }
}

impl<'a> std::borrow::Borrow<dyn KeyView + 'a> for (Direction, Box<str>) {
    fn borrow(&self) -> &(dyn KeyView + 'a) {
        self
    }
}

impl PartialEq for dyn KeyView + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for dyn KeyView + '_ {}

impl std::hash::Hash for dyn KeyView + '_ {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.key().hash(state);
    }
}

/// The series of one status code: its response counter and latency histogram.
#[derive(Debug)]
struct StatusMetrics {
    status: u16,
    responses: Counter,
    latency_ms: Histogram,
}

/// The HTTP series of one direction and authority.
#[derive(Debug)]
pub struct HttpMetrics {
    direction: Direction,
    authority: String,
    request_total: Counter,
    response_total: Family<ResponseLabels, Counter>,
    response_latency_ms: HistogramFamily<LatencyLabels>,
    by_status: ArcSwap<Vec<Arc<StatusMetrics>>>,
}

impl HttpMetrics {
    fn new(families: &HttpFamilies, direction: Direction, authority: &str) -> HttpMetrics {
        let authority = authority.to_owned();
        let request_total = families
            .request_total
            .get_or_create_owned(&RequestLabels { direction, authority: authority.clone() });
        HttpMetrics {
            direction,
            authority,
            request_total,
            response_total: families.response_total.clone(),
            response_latency_ms: families.response_latency_ms.clone(),
            by_status: ArcSwap::from_pointee(Vec::new()),
        }
    }

    /// Counts a request received.
    pub fn request(&self) {
        self.request_total.inc();
    }

    /// Counts a response sent and records its latency (request headers to
    /// response headers). 5xx responses, including the proxy's own for
    /// transport errors, are failures.
    pub fn response(&self, status: u16, latency: Duration) {
        let series = self.status(status);
        series.responses.inc();
        series.latency_ms.observe(latency.as_secs_f64() * 1_000.0);
    }

    fn status(&self, status: u16) -> Arc<StatusMetrics> {
        if let Some(found) = self.by_status.load().iter().find(|s| s.status == status) {
            return Arc::clone(found);
        }
        let classification = if status >= 500 { Classification::Failure } else { Classification::Success };
        let created = Arc::new(StatusMetrics {
            status,
            responses: self.response_total.get_or_create_owned(&ResponseLabels {
                direction: self.direction,
                authority: self.authority.clone(),
                status_code: status,
                classification,
            }),
            latency_ms: self.response_latency_ms.get_or_create_owned(&LatencyLabels {
                direction: self.direction,
                authority: self.authority.clone(),
                status_code: status,
            }),
        });
        let mut result = Arc::clone(&created);
        self.by_status.rcu(|list| {
            let mut list = Vec::clone(list);
            match list.iter().find(|s| s.status == status) {
                Some(existing) => result = Arc::clone(existing),
                None => {
                    result = Arc::clone(&created);
                    list.push(Arc::clone(&created));
                }
            }
            list
        });
        result
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn encodes_linkerd_names_with_labels() {
        let metrics = Metrics::new();
        let http = metrics.http(Direction::Outbound, "web.default:80");
        http.request();
        http.response(200, Duration::from_millis(3));
        http.response(503, Duration::from_millis(1));
        metrics.tcp(Direction::Inbound).open.inc();
        metrics.tcp(Direction::Inbound).read_bytes.inc_by(10);
        metrics.xds_updates.get_or_create(&TypeLabel { r#type: "lds".into() }).inc();
        metrics.xds_connected.set(1);
        let text = metrics.encode();
        for line in [
            r#"request_total{direction="outbound",authority="web.default:80"} 1"#,
            r#"response_total{direction="outbound",authority="web.default:80",status_code="200",classification="success"} 1"#,
            r#"response_total{direction="outbound",authority="web.default:80",status_code="503",classification="failure"} 1"#,
            r#"response_latency_ms_bucket{le="5.0",direction="outbound",authority="web.default:80",status_code="200"} 1"#,
            r#"tcp_open_total{direction="inbound"} 1"#,
            r#"tcp_read_bytes_total{direction="inbound"} 10"#,
            r#"xds_updates_total{type="lds"} 1"#,
            "xds_connected 1",
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
    }

    #[test]
    fn the_same_authority_shares_its_series() {
        let metrics = Metrics::new();
        let a = metrics.http(Direction::Inbound, "a:80");
        let b = metrics.http(Direction::Inbound, "a:80");
        let other_direction = metrics.http(Direction::Outbound, "a:80");
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &other_direction));
        a.request();
        b.request();
        assert!(metrics.encode().contains(r#"request_total{direction="inbound",authority="a:80"} 2"#));
    }

    #[test]
    fn authorities_past_the_cap_share_one_series() {
        let metrics = Metrics::new();
        for i in 0..MAX_AUTHORITIES {
            metrics.http(Direction::Outbound, &format!("h{i}"));
        }
        let late = metrics.http(Direction::Outbound, "late");
        late.request();
        assert!(metrics.encode().contains(r#"request_total{direction="outbound",authority="_other"} 1"#));
    }
}
