//! Prometheus metrics of the proxy, with Linkerd's names where they exist so
//! its dashboards read them: `request_total`, `response_total`,
//! `response_latency_ms`, `tcp_open_total`, `tcp_read_bytes_total`,
//! `tcp_write_bytes_total`, `inbound_{http,tcp}_authz_deny_total` and the
//! `identity_cert_*` series; plus the xDS client's `xds_*` series, and, per
//! route and upstream cluster (so each route and each TrafficSplit backend has its own),
//! `upstream_response_total{route,cluster,status_code,classification}` and
//! `upstream_response_latency_ms{route,cluster}` (what `weft stat` reads: a cluster's
//! figures are the sum over its routes). One family keyed by both, not one per route and
//! one per cluster: a request updates one counter and one histogram.
//!
//! HTTP series carry Linkerd's `tls` label (`true`/`false`) and, for a peer
//! with a certificate identity, `client_id`.
//!
//! The data path never hashes a label set per request: it resolves the
//! handles of an authority and peer once ([`Metrics::http_peer`]) and caches
//! them in a lock-free map ([`arc_swap`]); the handles of one status code are
//! cached the same way inside [`HttpMetrics`].

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use std::fmt::Write as _;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabel, EncodeLabelSet, EncodeLabelValue, EncodeMetric, LabelSetEncoder,
    LabelValueEncoder,
};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
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

/// Distinct (route, cluster) pairs tracked before new ones share the `route="_other",
/// cluster="_other"` series (both come from the control plane, so this only guards against a
/// runaway config).
const MAX_UPSTREAM_SERIES: usize = 4096;

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

/// `{tls, client_id}`: whether the downstream connection is TLS and, when the
/// peer presented a certificate identity, that identity (no `client_id` label
/// otherwise, as in Linkerd).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct PeerLabels {
    tls: bool,
    client_id: Option<Arc<str>>,
}

impl EncodeLabelSet for PeerLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder<'_>) -> std::fmt::Result {
        EncodeLabel::encode(&("tls", self.tls), encoder.encode_label())?;
        if let Some(id) = &self.client_id {
            EncodeLabel::encode(&("client_id", &**id), encoder.encode_label())?;
        }
        Ok(())
    }
}

/// `{direction, authority, tls, client_id}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    direction: Direction,
    authority: String,
    #[prometheus(flatten)]
    peer: PeerLabels,
}

/// `{direction, authority, tls, client_id, status_code, classification}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ResponseLabels {
    direction: Direction,
    authority: String,
    #[prometheus(flatten)]
    peer: PeerLabels,
    status_code: u16,
    classification: Classification,
}

/// `{direction, authority, tls, client_id, status_code}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct LatencyLabels {
    direction: Direction,
    authority: String,
    #[prometheus(flatten)]
    peer: PeerLabels,
    status_code: u16,
}

/// `{route, cluster, status_code, classification}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct UpstreamResponseLabels {
    route: String,
    cluster: String,
    status_code: u16,
    classification: Classification,
}

/// `{route, cluster}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RouteClusterLabels {
    route: String,
    cluster: String,
}

/// `{client_id}` of the authorization denials (`""` for a peer without identity).
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ClientLabels {
    client_id: String,
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

/// The HTTP series cache key: direction, authority, TLS, client identity.
type SeriesKey = (Direction, Box<str>, bool, Option<Arc<str>>);

/// The HTTP series cache.
type AuthorityMap = HashMap<SeriesKey, Arc<HttpMetrics>>;

/// The upstream series cache: cluster, then its routes.
type UpstreamMap = HashMap<Box<str>, Vec<(Box<str>, Arc<UpstreamMetrics>)>>;

/// The metric families of the HTTP data path.
#[derive(Debug)]
struct HttpFamilies {
    request_total: Family<RequestLabels, Counter>,
    response_total: Family<ResponseLabels, Counter>,
    response_latency_ms: HistogramFamily<LatencyLabels>,
    upstream_response_total: Family<UpstreamResponseLabels, Counter>,
    upstream_response_latency_ms: HistogramFamily<RouteClusterLabels>,
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
    /// By cluster, then by route (a cluster has a few routes: a linear scan).
    by_cluster: ArcSwap<UpstreamMap>,
    http_authz_deny: Family<ClientLabels, Counter>,
    tcp_authz_deny: Family<ClientLabels, Counter>,
    identity_expiry: Arc<IdentityExpiry>,
    identity_refresh: Counter,
}

/// The workload certificate's `not_after`, in Unix seconds; exposed as
/// `identity_cert_expiration_timestamp_seconds` and, computed at each scrape,
/// `identity_cert_expiry_seconds`. No series until a certificate is known.
/// weft-proxy's metrics and weft-agent's ([`crate::sds::SdsMetrics`]) both
/// register one.
#[derive(Debug)]
pub(crate) struct IdentityExpiry {
    /// `i64::MIN` until set.
    not_after: AtomicI64,
}

impl IdentityExpiry {
    const UNSET: i64 = i64::MIN;

    pub(crate) fn new() -> IdentityExpiry {
        IdentityExpiry { not_after: AtomicI64::new(Self::UNSET) }
    }

    /// Records the current certificate's `not_after`.
    pub(crate) fn set(&self, not_after: SystemTime) {
        self.not_after.store(unix_seconds(not_after), Ordering::Relaxed);
    }

    fn get(&self) -> Option<i64> {
        Some(self.not_after.load(Ordering::Relaxed)).filter(|&t| t != Self::UNSET)
    }
}

/// Seconds since the Unix epoch, negative before it.
fn unix_seconds(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_secs()).map_or(i64::MIN + 1, |s| -s),
    }
}

impl Collector for IdentityExpiry {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> std::fmt::Result {
        let Some(not_after) = self.get() else { return Ok(()) };
        let gauge = ConstGauge::new(not_after);
        let metric = encoder.encode_descriptor(
            "identity_cert_expiration_timestamp_seconds",
            "When the workload certificate expires (its not_after), in Unix seconds",
            None,
            MetricType::Gauge,
        )?;
        gauge.encode(metric)?;
        let left = ConstGauge::new(not_after.saturating_sub(unix_seconds(SystemTime::now())));
        let metric = encoder.encode_descriptor(
            "identity_cert_expiry_seconds",
            "Seconds until the workload certificate expires (negative once expired)",
            None,
            MetricType::Gauge,
        )?;
        left.encode(metric)
    }
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
            upstream_response_total: Family::default(),
            upstream_response_latency_ms: Family::new_with_constructor(
                latency_histogram as fn() -> Histogram,
            ),
        };
        registry.register(
            "upstream_response",
            "HTTP responses by route and upstream cluster (the proxy's own 5xx once a cluster was picked included)",
            http.upstream_response_total.clone(),
        );
        registry.register(
            "upstream_response_latency_ms",
            "Request to response headers, in milliseconds, by route and upstream cluster",
            http.upstream_response_latency_ms.clone(),
        );
        registry.register(
            "request",
            "HTTP requests received, by direction, authority and peer (tls, client_id)",
            http.request_total.clone(),
        );
        registry.register(
            "response",
            "HTTP responses sent, by direction, authority, peer, status code and classification",
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

        let http_authz_deny = Family::<ClientLabels, Counter>::default();
        let tcp_authz_deny = Family::<ClientLabels, Counter>::default();
        registry.register(
            "inbound_http_authz_deny",
            "Inbound HTTP requests refused by authorization (RBAC), by client identity",
            http_authz_deny.clone(),
        );
        registry.register(
            "inbound_tcp_authz_deny",
            "Inbound TCP connections refused by authorization (RBAC), by client identity",
            tcp_authz_deny.clone(),
        );
        let identity_expiry = Arc::new(IdentityExpiry::new());
        registry.register_collector(Box::new(Arc::clone(&identity_expiry)));
        let identity_refresh = Counter::default();
        registry.register(
            "identity_cert_refresh",
            "Workload certificates obtained (the first one and each renewal)",
            identity_refresh.clone(),
        );

        Metrics {
            registry,
            xds_updates,
            xds_rejections,
            xds_connected,
            http,
            tcp_inbound,
            tcp_outbound,
            by_authority: ArcSwap::from_pointee(HashMap::new()),
            by_cluster: ArcSwap::from_pointee(HashMap::new()),
            http_authz_deny,
            tcp_authz_deny,
            identity_expiry,
            identity_refresh,
        }
    }

    /// Counts a request (`http`) or connection refused by authorization, by
    /// the peer's identity (`""` when it has none).
    pub fn authz_denied(&self, http: bool, client_id: &str) {
        let family = if http { &self.http_authz_deny } else { &self.tcp_authz_deny };
        // Denials are rare: a label lookup per denial is fine.
        family.get_or_create(&ClientLabels { client_id: client_id.to_owned() }).inc();
    }

    /// Records the expiry (`not_after`) of the current workload certificate.
    pub fn set_identity_expiry(&self, not_after: SystemTime) {
        self.identity_expiry.set(not_after);
    }

    /// Counts a workload certificate obtained (first or renewed).
    pub fn identity_refreshed(&self) {
        self.identity_refresh.inc();
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

    /// The HTTP series of one direction and authority for a plaintext peer
    /// (`tls="false"`, no `client_id`), created on first use.
    pub fn http(&self, direction: Direction, authority: &str) -> Arc<HttpMetrics> {
        self.http_peer(direction, authority, false, None)
    }

    /// The HTTP series of one direction, authority and downstream peer
    /// (`tls`, and `client_id` when the peer has a certificate identity),
    /// created on first use.
    pub fn http_peer(
        &self,
        direction: Direction,
        authority: &str,
        tls: bool,
        client_id: Option<&str>,
    ) -> Arc<HttpMetrics> {
        let map = self.by_authority.load();
        // A lookup by borrowed parts without allocating a key.
        if let Some(found) = lookup(&map, direction, authority, tls, client_id) {
            return found;
        }
        let authority = if map.len() >= MAX_AUTHORITIES { OTHER_AUTHORITY } else { authority };
        if let Some(found) = lookup(&map, direction, authority, tls, client_id) {
            return found;
        }
        drop(map);
        let peer = PeerLabels { tls, client_id: client_id.map(Arc::from) };
        let key: SeriesKey = (direction, authority.into(), tls, peer.client_id.clone());
        let created = Arc::new(HttpMetrics::new(&self.http, direction, authority, peer));
        let mut result = Arc::clone(&created);
        self.by_authority.rcu(|map| {
            let mut map = HashMap::clone(map);
            result = Arc::clone(map.entry(key.clone()).or_insert_with(|| Arc::clone(&created)));
            map
        });
        result
    }
}

impl Metrics {
    /// The series of one route and upstream cluster, created on first use. Looked up by
    /// borrowed names: no allocation once the series exists.
    pub fn upstream(&self, route: &str, cluster: &str) -> Arc<UpstreamMetrics> {
        let map = self.by_cluster.load();
        if let Some(found) = find_upstream(&map, route, cluster) {
            return found;
        }
        let full = map.values().map(Vec::len).sum::<usize>() >= MAX_UPSTREAM_SERIES;
        let (route, cluster) = if full { (OTHER_AUTHORITY, OTHER_AUTHORITY) } else { (route, cluster) };
        if let Some(found) = find_upstream(&map, route, cluster) {
            return found;
        }
        drop(map);
        let created = Arc::new(UpstreamMetrics::new(&self.http, route, cluster));
        let mut result = Arc::clone(&created);
        self.by_cluster.rcu(|map| {
            let mut map = HashMap::clone(map);
            let routes = map.entry(cluster.into()).or_default();
            result = match routes.iter().find(|(r, _)| &**r == route) {
                Some((_, existing)) => Arc::clone(existing),
                None => {
                    routes.push((route.into(), Arc::clone(&created)));
                    Arc::clone(&created)
                }
            };
            map
        });
        result
    }
}

fn find_upstream(map: &UpstreamMap, route: &str, cluster: &str) -> Option<Arc<UpstreamMetrics>> {
    map.get(cluster)?.iter().find(|(r, _)| &**r == route).map(|(_, m)| Arc::clone(m))
}

/// The series of one route and upstream cluster.
#[derive(Debug)]
pub struct UpstreamMetrics {
    route: String,
    cluster: String,
    response_total: Family<UpstreamResponseLabels, Counter>,
    latency_ms: Histogram,
    by_status: ArcSwap<Vec<(u16, Counter)>>,
}

impl UpstreamMetrics {
    fn new(families: &HttpFamilies, route: &str, cluster: &str) -> UpstreamMetrics {
        let labels = RouteClusterLabels { route: route.to_owned(), cluster: cluster.to_owned() };
        UpstreamMetrics {
            route: route.to_owned(),
            cluster: cluster.to_owned(),
            response_total: families.upstream_response_total.clone(),
            latency_ms: families.upstream_response_latency_ms.get_or_create_owned(&labels),
            by_status: ArcSwap::from_pointee(Vec::new()),
        }
    }

    /// Counts a response of this route and cluster and records its latency (request
    /// headers to response headers); 5xx are failures.
    pub fn response(&self, status: u16, latency: Duration) {
        self.status(status).inc();
        self.latency_ms.observe(latency.as_secs_f64() * 1_000.0);
    }

    fn status(&self, status: u16) -> Counter {
        if let Some((_, found)) = self.by_status.load().iter().find(|(s, _)| *s == status) {
            return found.clone();
        }
        let classification = if status >= 500 { Classification::Failure } else { Classification::Success };
        let created = self.response_total.get_or_create_owned(&UpstreamResponseLabels {
            route: self.route.clone(),
            cluster: self.cluster.clone(),
            status_code: status,
            classification,
        });
        self.by_status.rcu(|list| {
            let mut list = Vec::clone(list);
            if !list.iter().any(|(s, _)| *s == status) {
                list.push((status, created.clone()));
            }
            list
        });
        // The family hands out the same counter for the same labels.
        created
    }
}

fn lookup(
    map: &AuthorityMap,
    direction: Direction,
    authority: &str,
    tls: bool,
    client_id: Option<&str>,
) -> Option<Arc<HttpMetrics>> {
    // HashMap cannot borrow a tuple key as a tuple of borrows; a linear scan
    // would not stay cheap, so hash a borrowed view instead.
    map.get(&AuthorityKey { direction, authority, tls, client_id } as &dyn KeyView).cloned()
}

/// A borrowed view of the cache key, so lookups do not allocate.
trait KeyView {
    fn key(&self) -> (Direction, &str, bool, Option<&str>);
}

impl KeyView for SeriesKey {
    fn key(&self) -> (Direction, &str, bool, Option<&str>) {
        (self.0, &self.1, self.2, self.3.as_deref())
    }
}

struct AuthorityKey<'a> {
    direction: Direction,
    authority: &'a str,
    tls: bool,
    client_id: Option<&'a str>,
}

impl KeyView for AuthorityKey<'_> {
    fn key(&self) -> (Direction, &str, bool, Option<&str>) {
        (self.direction, self.authority, self.tls, self.client_id)
    }
}

impl<'a> std::borrow::Borrow<dyn KeyView + 'a> for SeriesKey {
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

/// The HTTP series of one direction, authority and peer.
#[derive(Debug)]
pub struct HttpMetrics {
    direction: Direction,
    authority: String,
    peer: PeerLabels,
    request_total: Counter,
    response_total: Family<ResponseLabels, Counter>,
    response_latency_ms: HistogramFamily<LatencyLabels>,
    by_status: ArcSwap<Vec<Arc<StatusMetrics>>>,
}

impl HttpMetrics {
    fn new(families: &HttpFamilies, direction: Direction, authority: &str, peer: PeerLabels) -> HttpMetrics {
        let authority = authority.to_owned();
        let request_total = families.request_total.get_or_create_owned(&RequestLabels {
            direction,
            authority: authority.clone(),
            peer: peer.clone(),
        });
        HttpMetrics {
            direction,
            authority,
            peer,
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
                peer: self.peer.clone(),
                status_code: status,
                classification,
            }),
            latency_ms: self.response_latency_ms.get_or_create_owned(&LatencyLabels {
                direction: self.direction,
                authority: self.authority.clone(),
                peer: self.peer.clone(),
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
            r#"request_total{direction="outbound",authority="web.default:80",tls="false"} 1"#,
            r#"response_total{direction="outbound",authority="web.default:80",tls="false",status_code="200",classification="success"} 1"#,
            r#"response_total{direction="outbound",authority="web.default:80",tls="false",status_code="503",classification="failure"} 1"#,
            r#"response_latency_ms_bucket{le="5.0",direction="outbound",authority="web.default:80",tls="false",status_code="200"} 1"#,
            r#"tcp_open_total{direction="inbound"} 1"#,
            r#"tcp_read_bytes_total{direction="inbound"} 10"#,
            r#"xds_updates_total{type="lds"} 1"#,
            "xds_connected 1",
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
    }

    #[test]
    fn each_route_and_upstream_cluster_has_its_series() {
        const V1: &str = "outbound|80||payment-v1.pay.svc.cluster.local";
        const V2: &str = "outbound|80||payment-v2.pay.svc.cluster.local";
        const SPLIT: &str = "split/payment-split";
        let metrics = Metrics::new();
        let v1 = metrics.upstream(SPLIT, V1);
        assert!(Arc::ptr_eq(&v1, &metrics.upstream(SPLIT, V1)));
        assert!(!Arc::ptr_eq(&v1, &metrics.upstream("default", V1)));
        v1.response(200, Duration::from_millis(3));
        metrics.upstream(SPLIT, V1).response(200, Duration::from_millis(30));
        metrics.upstream("default", V1).response(200, Duration::from_millis(1));
        metrics.upstream(SPLIT, V2).response(500, Duration::from_millis(1));
        let text = metrics.encode();
        for line in [
            format!(
                r#"upstream_response_total{{route="{SPLIT}",cluster="{V1}",status_code="200",classification="success"}} 2"#
            ),
            format!(
                r#"upstream_response_total{{route="default",cluster="{V1}",status_code="200",classification="success"}} 1"#
            ),
            format!(
                r#"upstream_response_total{{route="{SPLIT}",cluster="{V2}",status_code="500",classification="failure"}} 1"#
            ),
            format!(r#"upstream_response_latency_ms_bucket{{le="5.0",route="{SPLIT}",cluster="{V1}"}} 1"#),
            format!(r#"upstream_response_latency_ms_bucket{{le="30.0",route="{SPLIT}",cluster="{V1}"}} 2"#),
            format!(r#"upstream_response_latency_ms_count{{route="default",cluster="{V1}"}} 1"#),
            format!(r#"upstream_response_latency_ms_count{{route="{SPLIT}",cluster="{V2}"}} 1"#),
        ] {
            assert!(text.contains(&line), "missing {line} in\n{text}");
        }
    }

    #[test]
    fn upstream_series_past_the_cap_share_one() {
        let metrics = Metrics::new();
        for i in 0..MAX_UPSTREAM_SERIES {
            metrics.upstream("default", &format!("c{i}"));
        }
        metrics.upstream("late", "c-late").response(200, Duration::from_millis(1));
        metrics.upstream("default", "c0").response(200, Duration::from_millis(1));
        let text = metrics.encode();
        assert!(text.contains(r#"upstream_response_total{route="_other",cluster="_other",status_code="200",classification="success"} 1"#));
        assert!(text.contains(r#"upstream_response_total{route="default",cluster="c0",status_code="200",classification="success"} 1"#));
    }

    #[test]
    fn the_same_authority_shares_its_series() {
        let metrics = Metrics::new();
        let a = metrics.http(Direction::Inbound, "a:80");
        let b = metrics.http(Direction::Inbound, "a:80");
        let plaintext = metrics.http_peer(Direction::Inbound, "a:80", false, None);
        let other_direction = metrics.http(Direction::Outbound, "a:80");
        assert!(Arc::ptr_eq(&a, &b));
        assert!(Arc::ptr_eq(&a, &plaintext), "http() is http_peer() without TLS");
        assert!(!Arc::ptr_eq(&a, &other_direction));
        a.request();
        b.request();
        assert!(
            metrics.encode().contains(r#"request_total{direction="inbound",authority="a:80",tls="false"} 2"#)
        );
    }

    #[test]
    fn each_peer_has_its_series() {
        const WEB: &str = "spiffe://cluster.local/ns/default/sa/web";
        const API: &str = "spiffe://cluster.local/ns/default/sa/api";
        let metrics = Metrics::new();
        let web = metrics.http_peer(Direction::Inbound, "a:80", true, Some(WEB));
        let web_again = metrics.http_peer(Direction::Inbound, "a:80", true, Some(WEB));
        let api = metrics.http_peer(Direction::Inbound, "a:80", true, Some(API));
        let anonymous_tls = metrics.http_peer(Direction::Inbound, "a:80", true, None);
        let plaintext = metrics.http(Direction::Inbound, "a:80");
        assert!(Arc::ptr_eq(&web, &web_again));
        for (i, x) in [&web, &api, &anonymous_tls, &plaintext].into_iter().enumerate() {
            for y in [&web, &api, &anonymous_tls, &plaintext].into_iter().skip(i + 1) {
                assert!(!Arc::ptr_eq(x, y));
            }
        }
        web.request();
        web_again.request();
        web.response(403, Duration::from_millis(2));
        api.request();
        anonymous_tls.request();
        plaintext.request();
        let text = metrics.encode();
        for line in [
            r#"request_total{direction="inbound",authority="a:80",tls="true",client_id="spiffe://cluster.local/ns/default/sa/web"} 2"#,
            r#"request_total{direction="inbound",authority="a:80",tls="true",client_id="spiffe://cluster.local/ns/default/sa/api"} 1"#,
            r#"request_total{direction="inbound",authority="a:80",tls="true"} 1"#,
            r#"request_total{direction="inbound",authority="a:80",tls="false"} 1"#,
            r#"response_total{direction="inbound",authority="a:80",tls="true",client_id="spiffe://cluster.local/ns/default/sa/web",status_code="403",classification="success"} 1"#,
            r#"response_latency_ms_bucket{le="2.0",direction="inbound",authority="a:80",tls="true",client_id="spiffe://cluster.local/ns/default/sa/web",status_code="403"} 1"#,
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
    }

    #[test]
    fn authorities_past_the_cap_share_one_series() {
        let metrics = Metrics::new();
        for i in 0..MAX_AUTHORITIES {
            metrics.http(Direction::Outbound, &format!("h{i}"));
        }
        let late = metrics.http(Direction::Outbound, "late");
        late.request();
        let late_peer = metrics.http_peer(Direction::Outbound, "late2", true, Some("id"));
        late_peer.request();
        let text = metrics.encode();
        assert!(text.contains(r#"request_total{direction="outbound",authority="_other",tls="false"} 1"#));
        assert!(text.contains(
            r#"request_total{direction="outbound",authority="_other",tls="true",client_id="id"} 1"#
        ));
    }

    #[test]
    fn authorization_denials_by_client() {
        let metrics = Metrics::new();
        metrics.authz_denied(true, "spiffe://td/ns/a/sa/b");
        metrics.authz_denied(true, "spiffe://td/ns/a/sa/b");
        metrics.authz_denied(true, "");
        metrics.authz_denied(false, "spiffe://td/ns/a/sa/c");
        let text = metrics.encode();
        for line in [
            "# TYPE inbound_http_authz_deny counter",
            r#"inbound_http_authz_deny_total{client_id="spiffe://td/ns/a/sa/b"} 2"#,
            r#"inbound_http_authz_deny_total{client_id=""} 1"#,
            "# TYPE inbound_tcp_authz_deny counter",
            r#"inbound_tcp_authz_deny_total{client_id="spiffe://td/ns/a/sa/c"} 1"#,
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
        assert!(!text.contains(r#"inbound_tcp_authz_deny_total{client_id="spiffe://td/ns/a/sa/b"}"#));
    }

    /// The value of an unlabelled series.
    fn value(text: &str, name: &str) -> Option<i64> {
        text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn identity_series_appear_with_a_certificate() {
        let metrics = Metrics::new();
        let text = metrics.encode();
        assert!(!text.contains("identity_cert_expiration_timestamp_seconds"), "{text}");
        assert!(!text.contains("identity_cert_expiry_seconds"), "{text}");
        assert_eq!(value(&text, "identity_cert_refresh_total"), Some(0));

        let now = SystemTime::now();
        let not_after = now + Duration::from_secs(3_600);
        metrics.set_identity_expiry(not_after);
        metrics.identity_refreshed();
        let text = metrics.encode();
        let unix = |t: SystemTime| i64::try_from(t.duration_since(UNIX_EPOCH).unwrap().as_secs()).unwrap();
        assert!(text.contains("# TYPE identity_cert_expiration_timestamp_seconds gauge"), "{text}");
        assert!(text.contains("# TYPE identity_cert_expiry_seconds gauge"), "{text}");
        assert_eq!(value(&text, "identity_cert_expiration_timestamp_seconds"), Some(unix(not_after)));
        let left = value(&text, "identity_cert_expiry_seconds").unwrap();
        assert!((3_590..=3_600).contains(&left), "{left}");
        assert_eq!(value(&text, "identity_cert_refresh_total"), Some(1));

        // Computed at scrape time: an expired certificate reads negative.
        metrics.set_identity_expiry(now - Duration::from_secs(60));
        let left = value(&metrics.encode(), "identity_cert_expiry_seconds").unwrap();
        assert!((-70..=-60).contains(&left), "{left}");
    }
}
