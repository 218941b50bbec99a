//! Golden metrics through the control plane: `GET /stat` on the admin API, behind `weft stat`.
//!
//! For a target (`workload/NAME`, `deploy/NAME`, `pod/NAME`, `trafficsplit/NAME`, `route/NAME`) the control
//! plane scrapes the Prometheus endpoint of the proxies concerned twice, a window apart, and
//! reports per row the responses in the window, success rate (a 5xx is a failure, the other
//! statuses are successes, as weft-proxy classifies), responses per second, and the p50, p95
//! and p99 latency (see [`calc`] for how percentiles come from histogram buckets).
//!
//! Where the metrics are: every proxy serves them on its admin port on its pod IP,
//! `<pod IP>:4191` (DESIGN.md's port table; `weft up` and the test harness place weft-proxy
//! and Envoy there). weft-proxy answers `/metrics`; a proxy that answers 404 there is taken
//! for Envoy and read at `/stats/prometheus`. The proxy kind is told by which path answered.
//!
//! Rows:
//! - workload, deploy, pod: one row per proxy (pod), from the series of requests it *received*
//!   (weft-proxy: `response_total` / `response_latency_ms` with `direction="inbound"`; Envoy:
//!   `envoy_http_downstream_rq_xx` / `envoy_http_downstream_rq_time` of the `inbound`
//!   connection manager).
//! - trafficsplit: one row per backend, from what every connected proxy *sent* to the backend's
//!   clusters (`outbound|<port>||<backend>.<ns>.svc.cluster.local`; weft-proxy:
//!   `upstream_response_total` / `upstream_response_latency_ms`; Envoy: `upstream_rq` /
//!   `upstream_rq_time` of the cluster), with its configured weight and its observed share.
//! - route (`route/SERVICE[:PORT][/ROUTE]`): one row per outbound route, from what every
//!   connected proxy sent on it (weft-proxy: the same upstream series, whose `route` label is
//!   the route name, with one of the route's clusters; Envoy: the route's stats, kept because
//!   the translation sets each route's `stat_prefix` to its name).
//! - workload, deploy, pod `--by route` (`by=route`): one row per outbound route the
//!   workload's proxies sent requests on in the window, from their pages alone.
//!
//! Envoy merges histograms at each stats flush (every second with weft's bootstrap), counters are live: its
//! counts are exact for the window, its percentiles cover the window as of the last flush.

pub mod calc;
pub mod prom;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::{Deserialize, Serialize};

use crate::admin::AdminState;
use crate::model::{Key, MeshState};
use crate::translate::names::{fqdn, outbound_cluster};
use crate::translate::{MeshOptions, ProxyNode};
use calc::{Delta, Reading};
use prom::Sample;
use weft_xds_protos::envoy::config::route::v3::{route, route_action};

/// The admin port on a proxy's pod IP where its metrics are.
pub const PROXY_ADMIN_PORT: u16 = 4191;

/// The window unless the query says.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(10);

/// Shortest window.
pub const MIN_WINDOW: Duration = Duration::from_secs(1);

/// Longest window.
pub const MAX_WINDOW: Duration = Duration::from_secs(600);

/// How long one scrape may take.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(3);

/// Why a stat query cannot be answered.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StatError {
    /// The query is malformed (target syntax, kind, window).
    #[error("{0}")]
    BadQuery(String),
    /// The target names nothing connected or configured.
    #[error("{0}")]
    UnknownTarget(String),
}

/// The query of `GET /stat`.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct StatQuery {
    /// `workload/NAME`, `deploy/NAME`, `pod/NAME` or `trafficsplit/NAME`.
    pub target: String,
    /// Namespace (narrows workloads; a TrafficSplit's namespace, `default` if absent).
    #[serde(default)]
    pub namespace: Option<String>,
    /// The window, e.g. `10s` (default 10 s, 1 s to 10 min).
    #[serde(default)]
    pub window: Option<String>,
    /// `route`: a workload's rows per outbound route it sent on, instead of one per proxy.
    #[serde(default)]
    pub by: Option<String>,
}

/// The answer of `GET /stat`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StatReply {
    /// The target as asked.
    pub target: String,
    /// What the rows are: `workload`, `trafficsplit` or `route`.
    #[serde(default)]
    pub kind: String,
    /// Seconds between the two scrapes.
    pub window_secs: f64,
    /// When the first scrapes had all answered (Unix milliseconds).
    pub started_unix_ms: u64,
    /// When the second scrapes began (Unix milliseconds).
    pub ended_unix_ms: u64,
    /// One per proxy (workloads) or per backend (TrafficSplit).
    pub rows: Vec<StatRow>,
    /// Problems that do not belong to one row (a client proxy that could not be scraped).
    #[serde(default)]
    pub notes: Vec<String>,
}

/// One row of `weft stat`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StatRow {
    /// The proxy's node id (workloads), the backend service (TrafficSplit), or the route as
    /// `SERVICE.NAMESPACE:PORT/ROUTE` (routes).
    pub name: String,
    /// Its namespace.
    pub namespace: String,
    /// `weft-proxy`, `envoy`, both joined by `+`, or empty when no proxy could be read.
    pub proxy: String,
    /// Proxies read / proxies that should have been.
    pub meshed: String,
    /// Responses in the window.
    pub requests: u64,
    /// 5xx responses in the window.
    pub failures: u64,
    /// `(requests - failures) / requests`; `None` without requests.
    pub success_rate: Option<f64>,
    /// Responses per second over the window.
    pub rps: f64,
    /// Median latency, milliseconds.
    pub latency_ms_p50: Option<f64>,
    /// 95th percentile latency, milliseconds.
    pub latency_ms_p95: Option<f64>,
    /// 99th percentile latency, milliseconds.
    pub latency_ms_p99: Option<f64>,
    /// Share of responses on mTLS connections (weft-proxy inbound only).
    pub tls_rate: Option<f64>,
    /// The backend's configured weight, relative (TrafficSplit).
    pub weight: Option<f64>,
    /// The backend's configured share, `weight / sum of weights` (TrafficSplit).
    pub weight_share: Option<f64>,
    /// The backend's observed share of the split's responses in the window (TrafficSplit).
    pub share: Option<f64>,
    /// Why the row is incomplete (a proxy not scraped, counters reset).
    #[serde(default)]
    pub errors: Vec<String>,
}

/// Which proxy served a page of metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Flavor {
    /// weft-proxy (`/metrics`).
    Weft,
    /// Stock Envoy (`/stats/prometheus`).
    Envoy,
}

impl Flavor {
    /// `weft-proxy` or `envoy`.
    pub fn name(self) -> &'static str {
        match self {
            Flavor::Weft => "weft-proxy",
            Flavor::Envoy => "envoy",
        }
    }
}

/// One proxy's page of metrics.
#[derive(Debug, Clone)]
pub struct Page {
    /// Who served it.
    pub flavor: Flavor,
    /// Its samples.
    pub samples: Vec<Sample>,
}

type HttpClient = Client<HttpConnector, Empty<Bytes>>;

/// Scrapes the metrics at `admin` (`/metrics`, else `/stats/prometheus`).
pub async fn scrape(client: &HttpClient, admin: SocketAddr) -> Result<Page, String> {
    let (status, body) = get(client, admin, "/metrics").await?;
    let (flavor, body) = match status {
        200 => (Flavor::Weft, body),
        404 => match get(client, admin, "/stats/prometheus").await? {
            (200, body) => (Flavor::Envoy, body),
            (status, _) => {
                return Err(format!("http://{admin}/stats/prometheus answered {status}"));
            }
        },
        status => return Err(format!("http://{admin}/metrics answered {status}")),
    };
    let samples = prom::parse(&body).map_err(|e| format!("http://{admin}: {e}"))?;
    Ok(Page { flavor, samples })
}

async fn get(client: &HttpClient, admin: SocketAddr, path: &str) -> Result<(u16, String), String> {
    let uri: http::Uri =
        format!("http://{admin}{path}").parse().map_err(|e| format!("http://{admin}{path}: {e}"))?;
    let exchange = async {
        let response = client.get(uri).await.map_err(|e| format!("{e}"))?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.map_err(|e| format!("{e}"))?.to_bytes();
        Ok::<_, String>((status, String::from_utf8_lossy(&body).into_owned()))
    };
    match tokio::time::timeout(SCRAPE_TIMEOUT, exchange).await {
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(e)) => Err(format!("scraping http://{admin}{path}: {e}")),
        Err(_) => Err(format!("scraping http://{admin}{path}: no answer within {SCRAPE_TIMEOUT:?}")),
    }
}

/// What a query reads: which proxies, and how their pages become rows.
#[derive(Debug, Clone)]
enum Plan {
    /// One row per proxy, from its inbound series.
    Workloads(Vec<ProxyNode>),
    /// One row per backend, summed over every proxy.
    Split { key: Key, proxies: Vec<ProxyNode>, backends: Vec<SplitBackend> },
    /// One row per route, summed over `proxies`; with `active_only`, only routes with
    /// responses in the window.
    Routes { proxies: Vec<ProxyNode>, routes: Vec<RouteSpec>, active_only: bool },
}

/// One forwarding outbound route, as the translation names it.
#[derive(Debug, Clone, PartialEq)]
struct RouteSpec {
    service: Key,
    port: u16,
    /// The route's name: weft-proxy's `route` label.
    name: String,
    /// Its `stat_prefix`: Envoy's stats are under `vhost.<vhost>.route.<stat_prefix>`.
    stat_prefix: String,
    vhost: String,
    /// The clusters it sends to.
    clusters: Vec<String>,
}

impl RouteSpec {
    /// `SERVICE.NAMESPACE:PORT/ROUTE`.
    fn display(&self) -> String {
        format!("{}.{}:{}/{}", self.service.name, self.service.namespace, self.port, self.name)
    }
}

/// Every forwarding outbound route of the mesh (direct responses have no upstream, so no
/// figures), in service, port and route order, from the translation itself so names and
/// clusters are those the proxies got.
fn outbound_routes(state: &MeshState) -> Vec<RouteSpec> {
    let mesh = crate::translate::translate_mesh(state, &MeshOptions::default());
    // Route and virtual host names do not depend on the client's namespace (domains do).
    let Some(config) = mesh.outbound_routes.values().next() else { return Vec::new() };
    let vhosts: std::collections::HashMap<&str, _> =
        config.virtual_hosts.iter().map(|v| (v.name.as_str(), v)).collect();
    let mut out = Vec::new();
    for svc in state.services.values() {
        for port in &svc.ports {
            let vhost = format!("{}:{}", fqdn(&svc.key), port.port);
            let Some(vh) = vhosts.get(vhost.as_str()) else { continue };
            for r in &vh.routes {
                let Some(route::Action::Route(action)) = &r.action else { continue };
                let clusters = match &action.cluster_specifier {
                    Some(route_action::ClusterSpecifier::Cluster(c)) => vec![c.clone()],
                    Some(route_action::ClusterSpecifier::WeightedClusters(w)) => {
                        w.clusters.iter().map(|c| c.name.clone()).collect()
                    }
                    _ => continue,
                };
                out.push(RouteSpec {
                    service: svc.key.clone(),
                    port: port.port,
                    name: r.name.clone(),
                    stat_prefix: r.stat_prefix.clone(),
                    vhost: vhost.clone(),
                    clusters,
                });
            }
        }
    }
    out
}

/// The routes `route/NAME` names: `SERVICE`, `SERVICE:PORT` or `SERVICE:PORT/ROUTE`, the
/// service in `namespace` or written `SERVICE.NAMESPACE`.
fn select_routes(
    routes: Vec<RouteSpec>,
    target: &str,
    name: &str,
    namespace: &str,
) -> Result<Vec<RouteSpec>, StatError> {
    let (service_port, route) = match name.split_once('/') {
        Some((head, route)) => (head, Some(route)),
        None => (name, None),
    };
    let (service, port) = match service_port.rsplit_once(':') {
        Some((service, port)) => {
            let port = port.parse::<u16>().map_err(|_| {
                StatError::BadQuery(format!("target {target:?}: port {port:?} is not a port number"))
            })?;
            (service, Some(port))
        }
        None => (service_port, None),
    };
    let (service, namespace) = service.split_once('.').unwrap_or((service, namespace));
    if service.is_empty() || route == Some("") {
        return Err(StatError::BadQuery(format!(
            "target {target:?}: expected route/SERVICE, route/SERVICE:PORT or route/SERVICE:PORT/ROUTE"
        )));
    }
    let of_service: Vec<RouteSpec> = routes
        .into_iter()
        .filter(|r| r.service.name == service && r.service.namespace == namespace)
        .collect();
    let known: Vec<String> = of_service.iter().map(RouteSpec::display).collect();
    let chosen: Vec<RouteSpec> = of_service
        .into_iter()
        .filter(|r| port.is_none_or(|p| r.port == p) && route.is_none_or(|n| r.name == n))
        .collect();
    if chosen.is_empty() {
        let known = if known.is_empty() {
            format!("service {service} has no HTTP route")
        } else {
            format!("routes of service {service}: {}", known.join(", "))
        };
        return Err(StatError::UnknownTarget(format!(
            "unknown target {target} in namespace {namespace} ({known})"
        )));
    }
    Ok(chosen)
}

#[derive(Debug, Clone)]
struct SplitBackend {
    service: Key,
    weight: f64,
    clusters: Vec<String>,
    missing: bool,
}

/// Parses and bounds a window (`10s`, `1m`).
pub fn parse_window(window: Option<&str>) -> Result<Duration, StatError> {
    let Some(text) = window.filter(|w| !w.trim().is_empty()) else { return Ok(DEFAULT_WINDOW) };
    let window = crate::identity::parse_duration(text)
        .map_err(|e| StatError::BadQuery(format!("--window {text:?}: {e}")))?;
    if !(MIN_WINDOW..=MAX_WINDOW).contains(&window) {
        return Err(StatError::BadQuery(format!(
            "--window {text:?}: must be between {}s and {}s",
            MIN_WINDOW.as_secs(),
            MAX_WINDOW.as_secs()
        )));
    }
    Ok(window)
}

fn plan(nodes: &[ProxyNode], state: &MeshState, q: &StatQuery) -> Result<Plan, StatError> {
    let target = q.target.trim();
    let (kind, name) = target.split_once('/').ok_or_else(|| {
        StatError::BadQuery(format!(
            "target {target:?}: expected KIND/NAME (workload/, deploy/, pod/, trafficsplit/ or route/)"
        ))
    })?;
    let by_route = match q.by.as_deref().map(str::trim) {
        None | Some("") => false,
        Some("route") => true,
        Some(other) => {
            return Err(StatError::BadQuery(format!("--by {other:?}: the only grouping is \"route\"")));
        }
    };
    let workload = matches!(
        kind,
        "workload" | "workloads" | "wl" | "deploy" | "deployment" | "deployments" | "pod" | "pods" | "po"
    );
    if by_route && !workload {
        return Err(StatError::BadQuery(format!(
            "--by route: only for workload/, deploy/ and pod/ targets, not {kind}/"
        )));
    }
    match kind {
        "route" | "routes" | "rt" => {
            let namespace = q.namespace.as_deref().filter(|n| !n.is_empty()).unwrap_or("default");
            let routes = select_routes(outbound_routes(state), target, name, namespace)?;
            Ok(Plan::Routes { proxies: unique(nodes), routes, active_only: false })
        }
        "trafficsplit" | "trafficsplits" | "ts" => {
            if name.is_empty() || name.contains('/') {
                return Err(StatError::BadQuery(format!(
                    "target {target:?}: expected one name after the kind"
                )));
            }
            let namespace = q.namespace.as_deref().filter(|n| !n.is_empty()).unwrap_or("default");
            let key = Key { namespace: namespace.to_owned(), name: name.to_owned() };
            let split = state.traffic_splits.get(&key).ok_or_else(|| {
                let known: Vec<String> = state.traffic_splits.keys().map(ToString::to_string).collect();
                let known = if known.is_empty() { "none".to_owned() } else { known.join(", ") };
                StatError::UnknownTarget(format!(
                    "unknown target {target} in namespace {namespace} (known: {known})"
                ))
            })?;
            let backends = split
                .backends
                .iter()
                .map(|b| {
                    let service = Key { namespace: key.namespace.clone(), name: b.service.clone() };
                    let found = state.services.get(&service);
                    let clusters = found
                        .map(|s| s.ports.iter().map(|p| outbound_cluster(&service, p.port)).collect())
                        .unwrap_or_default();
                    // Thousandths; exact for any weight a manifest can write.
                    let weight = b.weight_milli as f64 / 1_000.0;
                    SplitBackend { service, weight, clusters, missing: found.is_none() }
                })
                .collect();
            Ok(Plan::Split { key, proxies: unique(nodes), backends })
        }
        "workload" | "workloads" | "wl" | "deploy" | "deployment" | "deployments" | "pod" | "pods" | "po" => {
            let nodes = crate::tap::resolve(nodes, target, q.namespace.as_deref())
                .map_err(StatError::UnknownTarget)?;
            if by_route {
                return Ok(Plan::Routes {
                    proxies: nodes,
                    routes: outbound_routes(state),
                    active_only: true,
                });
            }
            Ok(Plan::Workloads(nodes))
        }
        _ => Err(StatError::BadQuery(format!(
            "target {target:?}: unknown kind {kind:?} (workload/NAME, deploy/NAME, pod/NAME, trafficsplit/NAME or route/NAME)"
        ))),
    }
}

/// One proxy per pod IP.
fn unique(nodes: &[ProxyNode]) -> Vec<ProxyNode> {
    let mut by_ip = BTreeMap::new();
    for node in nodes {
        by_ip.entry(node.pod_ip).or_insert_with(|| node.clone());
    }
    by_ip.into_values().collect()
}

fn proxies(plan: &Plan) -> &[ProxyNode] {
    match plan {
        Plan::Workloads(nodes) | Plan::Split { proxies: nodes, .. } | Plan::Routes { proxies: nodes, .. } => {
            nodes
        }
    }
}

/// Scrapes at most this many proxies at once (a TrafficSplit reads every connected proxy).
const CONCURRENT_SCRAPES: usize = 64;

/// Every node's page, in `nodes`' order.
async fn scrape_all(client: &HttpClient, nodes: &[ProxyNode]) -> Vec<Result<Page, String>> {
    use futures::StreamExt as _;
    let addrs: Vec<SocketAddr> = nodes.iter().map(|n| SocketAddr::new(n.pod_ip, PROXY_ADMIN_PORT)).collect();
    futures::stream::iter(addrs).map(|addr| scrape(client, addr)).buffered(CONCURRENT_SCRAPES).collect().await
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Answers `query` against the connected `nodes` and the mesh `state`: scrapes, waits the
/// window, scrapes again, and computes the rows.
pub async fn run(nodes: &[ProxyNode], state: &MeshState, query: &StatQuery) -> Result<StatReply, StatError> {
    let window = parse_window(query.window.as_deref())?;
    let plan = plan(nodes, state, query)?;
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let targets = proxies(&plan);
    let first = scrape_all(&client, targets).await;
    let started = Instant::now();
    let started_unix_ms = unix_ms(SystemTime::now());
    tokio::time::sleep(window).await;
    let ended_unix_ms = unix_ms(SystemTime::now());
    let elapsed = started.elapsed().as_secs_f64();
    let second = scrape_all(&client, targets).await;
    let pages: Vec<Scraped> = targets
        .iter()
        .zip(first.into_iter().zip(second))
        .map(|(node, (a, b))| {
            let pair = match (a, b) {
                (Ok(a), Ok(b)) => Ok((a, b)),
                (Err(e), _) | (_, Err(e)) => Err(e),
            };
            (node.clone(), pair)
        })
        .collect();
    let (rows, notes) = match &plan {
        Plan::Workloads(_) => {
            (pages.iter().map(|(node, pair)| workload_row(node, pair, elapsed)).collect(), vec![])
        }
        Plan::Split { key, backends, .. } => split_rows(key, backends, &pages, elapsed),
        Plan::Routes { routes, active_only, .. } => route_rows(routes, *active_only, &pages, elapsed),
    };
    let kind = match &plan {
        Plan::Workloads(_) => "workload",
        Plan::Split { .. } => "trafficsplit",
        Plan::Routes { .. } => "route",
    };
    Ok(StatReply {
        target: query.target.clone(),
        kind: kind.into(),
        window_secs: elapsed,
        started_unix_ms,
        ended_unix_ms,
        rows,
        notes,
    })
}

/// The window's [`Delta`] of one proxy's pages.
fn delta(pair: &(Page, Page), read: impl Fn(Flavor, &[Sample]) -> Reading) -> Delta {
    let (a, b) = pair;
    calc::diff(&read(a.flavor, &a.samples), &read(b.flavor, &b.samples))
}

fn inbound(flavor: Flavor, samples: &[Sample]) -> Reading {
    match flavor {
        Flavor::Weft => calc::weft_inbound(samples),
        Flavor::Envoy => calc::envoy_inbound(samples),
    }
}

fn fill(row: &mut StatRow, delta: &Delta, elapsed: f64) {
    row.requests = delta.requests;
    row.failures = delta.failures;
    if delta.requests > 0 {
        // Counts far below 2^52: exact as f64.
        let requests = delta.requests as f64;
        row.success_rate = Some((delta.requests - delta.failures.min(delta.requests)) as f64 / requests);
        row.tls_rate = delta.tls.map(|t| t as f64 / requests);
    }
    row.rps = if elapsed > 0.0 { delta.requests as f64 / elapsed } else { 0.0 };
    row.latency_ms_p50 = calc::quantile(&delta.buckets, 0.50);
    row.latency_ms_p95 = calc::quantile(&delta.buckets, 0.95);
    row.latency_ms_p99 = calc::quantile(&delta.buckets, 0.99);
    if delta.requests > 0 && row.latency_ms_p50.is_none() {
        row.errors.push(
            "no latency observations in the window: Envoy updates its histograms at each stats flush \
             (every second with weft's bootstrap, 5 s by Envoy's default), use a longer --window"
                .into(),
        );
    }
    if delta.reset {
        row.errors.push("counters went down (the proxy restarted): counted from its restart".into());
    }
}

fn workload_row(node: &ProxyNode, pair: &Result<(Page, Page), String>, elapsed: f64) -> StatRow {
    let mut row = StatRow {
        name: node.id.clone(),
        namespace: node.namespace.clone(),
        meshed: "0/1".into(),
        ..StatRow::default()
    };
    match pair {
        Ok(pair) => {
            row.proxy = pair.1.flavor.name().into();
            row.meshed = "1/1".into();
            fill(&mut row, &delta(pair, inbound), elapsed);
        }
        Err(e) => row.errors.push(e.clone()),
    }
    row
}

/// Sums per-proxy deltas; buckets of different layouts (weft-proxy's and Envoy's) are merged
/// over the union of their bounds, a proxy's count at a bound it lacks being its count at its
/// next lower bound.
fn sum(deltas: &[Delta]) -> Delta {
    let mut bounds: Vec<f64> = deltas.iter().flat_map(|d| d.buckets.iter().map(|(le, _)| *le)).collect();
    bounds.sort_by(f64::total_cmp);
    bounds.dedup();
    let at =
        |d: &Delta, le: f64| d.buckets.iter().take_while(|(b, _)| *b <= le).last().map_or(0.0, |(_, c)| *c);
    Delta {
        requests: deltas.iter().map(|d| d.requests).sum(),
        failures: deltas.iter().map(|d| d.failures).sum(),
        tls: None,
        buckets: bounds.iter().map(|le| (*le, deltas.iter().map(|d| at(d, *le)).sum())).collect(),
        reset: deltas.iter().any(|d| d.reset),
    }
}

/// A proxy and its two pages, or why they could not be read.
type Scraped = (ProxyNode, Result<(Page, Page), String>);

type Pages = [Scraped];

fn split_rows(
    key: &Key,
    backends: &[SplitBackend],
    pages: &Pages,
    elapsed: f64,
) -> (Vec<StatRow>, Vec<String>) {
    let read = pages.iter().filter(|(_, p)| p.is_ok()).count();
    let notes: Vec<String> = pages
        .iter()
        .filter_map(|(node, pair)| pair.as_ref().err().map(|e| format!("proxy {} not read: {e}", node.id)))
        .collect();
    let total_weight: f64 = backends.iter().map(|b| b.weight).sum();
    let mut rows: Vec<StatRow> = backends
        .iter()
        .map(|backend| {
            let mut flavors = Vec::new();
            let deltas: Vec<Delta> = pages
                .iter()
                .filter_map(|(_, pair)| pair.as_ref().ok())
                .map(|pair| {
                    let d = sum(&backend
                        .clusters
                        .iter()
                        .map(|c| {
                            delta(pair, |flavor, samples| match flavor {
                                Flavor::Weft => calc::weft_cluster(samples, c),
                                Flavor::Envoy => calc::envoy_cluster(samples, c),
                            })
                        })
                        .collect::<Vec<_>>());
                    if d.requests > 0 && !flavors.contains(&pair.1.flavor) {
                        flavors.push(pair.1.flavor);
                    }
                    d
                })
                .collect();
            flavors.sort();
            let mut row = StatRow {
                name: backend.service.name.clone(),
                namespace: key.namespace.clone(),
                proxy: flavors.iter().map(|f| f.name()).collect::<Vec<_>>().join("+"),
                meshed: format!("{read}/{}", pages.len()),
                weight: Some(backend.weight),
                weight_share: (total_weight > 0.0).then(|| backend.weight / total_weight),
                ..StatRow::default()
            };
            if backend.missing {
                row.errors.push(format!("service {} does not exist", backend.service));
            }
            fill(&mut row, &sum(&deltas), elapsed);
            row
        })
        .collect();
    let total: u64 = rows.iter().map(|r| r.requests).sum();
    for row in &mut rows {
        row.share = (total > 0).then(|| row.requests as f64 / total as f64);
    }
    (rows, notes)
}

/// Notes for the proxies whose pages could not be read.
fn unread(pages: &Pages) -> Vec<String> {
    pages
        .iter()
        .filter_map(|(node, pair)| pair.as_ref().err().map(|e| format!("proxy {} not read: {e}", node.id)))
        .collect()
}

/// Every read proxy's window of `read`, summed, and the kinds of proxy that had responses.
fn summed(pages: &Pages, read: impl Fn(Flavor, &[Sample]) -> Reading) -> (Delta, Vec<Flavor>) {
    let mut flavors = Vec::new();
    let deltas: Vec<Delta> = pages
        .iter()
        .filter_map(|(_, pair)| pair.as_ref().ok())
        .map(|pair| {
            let d = delta(pair, &read);
            if d.requests > 0 && !flavors.contains(&pair.1.flavor) {
                flavors.push(pair.1.flavor);
            }
            d
        })
        .collect();
    flavors.sort();
    (sum(&deltas), flavors)
}

fn route_rows(
    routes: &[RouteSpec],
    active_only: bool,
    pages: &Pages,
    elapsed: f64,
) -> (Vec<StatRow>, Vec<String>) {
    let read = pages.iter().filter(|(_, p)| p.is_ok()).count();
    let mut rows = Vec::new();
    for r in routes {
        let (delta, flavors) = summed(pages, |flavor, samples| match flavor {
            Flavor::Weft => calc::weft_route(samples, &r.name, &r.clusters),
            Flavor::Envoy => calc::envoy_route(samples, &r.vhost, &r.stat_prefix),
        });
        if active_only && delta.requests == 0 {
            continue;
        }
        let mut row = StatRow {
            name: r.display(),
            namespace: r.service.namespace.clone(),
            proxy: flavors.iter().map(|f| f.name()).collect::<Vec<_>>().join("+"),
            meshed: format!("{read}/{}", pages.len()),
            ..StatRow::default()
        };
        fill(&mut row, &delta, elapsed);
        rows.push(row);
    }
    (rows, unread(pages))
}

/// `GET /stat`: see the module docs. 400 for a malformed query, 404 for an unknown target,
/// else the [`StatReply`] as JSON (rows with errors included).
pub async fn handler(State(s): State<AdminState>, Query(q): Query<StatQuery>) -> Response {
    let nodes: Vec<ProxyNode> = s.registry.reports().await.into_iter().map(|r| r.node).collect();
    let state = s.snapshots.borrow().state.clone();
    match run(&nodes, &state, &q).await {
        Ok(reply) => Json(reply).into_response(),
        Err(e @ StatError::BadQuery(_)) => (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
        Err(e @ StatError::UnknownTarget(_)) => (StatusCode::NOT_FOUND, format!("{e}\n")).into_response(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn node(id: &str, ip: u8) -> ProxyNode {
        ProxyNode {
            id: id.into(),
            namespace: "shop".into(),
            service_account: id.into(),
            pod_ip: std::net::IpAddr::from([127, 0, 10, ip]),
            inbound_port: 4143,
            outbound_port: 4140,
            transparent: false,
        }
    }

    #[test]
    fn windows_are_bounded() {
        assert_eq!(parse_window(None), Ok(DEFAULT_WINDOW));
        assert_eq!(parse_window(Some("30s")), Ok(Duration::from_secs(30)));
        assert!(matches!(parse_window(Some("0s")), Err(StatError::BadQuery(_))));
        assert!(matches!(parse_window(Some("2h")), Err(StatError::BadQuery(m)) if m.contains("between")));
        assert!(matches!(parse_window(Some("ten")), Err(StatError::BadQuery(m)) if m.contains("ten")));
    }

    #[test]
    fn unknown_kinds_and_targets_are_named() {
        let nodes = [node("web", 3)];
        let state = MeshState::default();
        let q = |t: &str| StatQuery { target: t.into(), ..StatQuery::default() };
        let e = plan(&nodes, &state, &q("svc/web")).unwrap_err();
        assert!(matches!(&e, StatError::BadQuery(m) if m.contains("unknown kind \"svc\"")), "{e}");
        let e = plan(&nodes, &state, &q("web")).unwrap_err();
        assert!(matches!(&e, StatError::BadQuery(m) if m.contains("KIND/NAME")), "{e}");
        let e = plan(&nodes, &state, &q("workload/nope")).unwrap_err();
        assert!(matches!(&e, StatError::UnknownTarget(m) if m.contains("nope")), "{e}");
        let e = plan(&nodes, &state, &q("trafficsplit/split")).unwrap_err();
        assert!(matches!(&e, StatError::UnknownTarget(m) if m.contains("split")), "{e}");
        assert!(matches!(plan(&nodes, &state, &q("workload/web")), Ok(Plan::Workloads(n)) if n.len() == 1));
    }

    fn page(flavor: Flavor, text: &str) -> Page {
        Page { flavor, samples: prom::parse(text).unwrap() }
    }

    #[test]
    fn split_rows_sum_weft_proxy_and_envoy_clients() {
        let v1 = "outbound|80||web-v1.shop.svc.cluster.local";
        let v2 = "outbound|80||web-v2.shop.svc.cluster.local";
        let weft = |n1: u32, f1: u32, n2: u32| {
            page(
                Flavor::Weft,
                &format!(
                    "upstream_response_total{{cluster=\"{v1}\",status_code=\"200\",classification=\"success\"}} {}\n\
                     upstream_response_total{{cluster=\"{v1}\",status_code=\"500\",classification=\"failure\"}} {f1}\n\
                     upstream_response_total{{cluster=\"{v2}\",status_code=\"200\",classification=\"success\"}} {n2}\n\
                     upstream_response_latency_ms_bucket{{le=\"10.0\",cluster=\"{v1}\"}} {n1}\n\
                     upstream_response_latency_ms_bucket{{le=\"+Inf\",cluster=\"{v1}\"}} {n1}\n",
                    n1 - f1
                ),
            )
        };
        let envoy = |n2: u32| {
            page(
                Flavor::Envoy,
                &format!(
                    "envoy_cluster_shop_svc_cluster_local_upstream_rq{{envoy_response_code=\"200\",envoy_cluster_name=\"outbound|80||web-v2\"}} {n2}\n"
                ),
            )
        };
        let pages = vec![
            (node("client", 1), Ok((weft(10, 0, 0), weft(100, 10, 30)))),
            (node("other", 2), Ok((envoy(5), envoy(65)))),
            (node("gone", 4), Err("no answer".to_owned())),
        ];
        let backend = |name: &str, weight: f64, cluster: &str| SplitBackend {
            service: Key { namespace: "shop".into(), name: name.into() },
            weight,
            clusters: vec![cluster.to_owned()],
            missing: false,
        };
        let key = Key { namespace: "shop".into(), name: "split".into() };
        let (rows, notes) =
            split_rows(&key, &[backend("web-v1", 0.5, v1), backend("web-v2", 0.5, v2)], &pages, 10.0);
        assert_eq!(notes, vec!["proxy gone not read: no answer".to_owned()]);
        assert_eq!((rows[0].requests, rows[0].failures), (90, 10));
        assert_eq!(rows[0].success_rate, Some(80.0 / 90.0));
        assert_eq!(rows[0].proxy, "weft-proxy");
        assert_eq!(rows[0].meshed, "2/3");
        assert_eq!(rows[0].latency_ms_p50, Some(5.0));
        assert_eq!(rows[1].requests, 90);
        assert_eq!(rows[1].proxy, "weft-proxy+envoy");
        assert_eq!((rows[0].share, rows[1].share), (Some(0.5), Some(0.5)));
        assert_eq!(rows[1].weight_share, Some(0.5));
        assert_eq!(rows[1].rps, 9.0);
        assert_eq!(rows[1].latency_ms_p99, None);
    }

    /// `web` (two ports) split 50/50 between `web-v1` and `web-v2`, and `api`, in `shop`.
    fn routed_mesh() -> MeshState {
        use crate::model::{Backend, Pod, Protocol, Service, ServicePort, TargetPort, TrafficSplit};
        let mut state = MeshState::default();
        let port = |port: u16| ServicePort {
            name: Some(format!("http-{port}")),
            port,
            target_port: TargetPort::Number(port),
            protocol: Protocol::Http,
        };
        for (name, ports) in [
            ("web", vec![8080, 9090]),
            ("web-v1", vec![8080, 9090]),
            ("web-v2", vec![8080, 9090]),
            ("api", vec![80]),
        ] {
            let key = Key::new("shop", name);
            let selector = BTreeMap::from([("app".to_owned(), name.to_owned())]);
            let ports = ports.into_iter().map(port).collect();
            state.services.insert(
                key.clone(),
                Service { key, selector, cluster_ip: None, policy: Default::default(), ports },
            );
        }
        for (name, ip) in [("web-v1", "127.0.10.3"), ("web-v2", "127.0.10.4")] {
            let key = Key::new("shop", name);
            state.pods.insert(
                key.clone(),
                Pod {
                    key,
                    labels: BTreeMap::from([("app".to_owned(), name.to_owned())]),
                    ip: Some(ip.parse().unwrap()),
                    service_account: name.into(),
                    ready: true,
                    inject: None,
                    ports: vec![],
                },
            );
        }
        let key = Key::new("shop", "web-split");
        state.split_first_seen.insert(key.clone(), 1);
        state.traffic_splits.insert(
            key.clone(),
            TrafficSplit {
                key,
                api_version: "split.smi-spec.io/v1alpha1".into(),
                created: None,
                root_service: "web".into(),
                backends: ["web-v1", "web-v2"]
                    .iter()
                    .map(|s| Backend { service: (*s).to_owned(), weight_milli: 500 })
                    .collect(),
                matches: vec![],
            },
        );
        state
    }

    fn route_names(plan: &Plan) -> Vec<String> {
        match plan {
            Plan::Routes { routes, .. } => routes.iter().map(RouteSpec::display).collect(),
            other => panic!("not a route plan: {other:?}"),
        }
    }

    #[test]
    fn route_targets_name_a_service_a_port_or_one_route() {
        let state = routed_mesh();
        let nodes = [node("client", 1)];
        let q =
            |t: &str| StatQuery { target: t.into(), namespace: Some("shop".into()), ..StatQuery::default() };
        assert_eq!(
            route_names(&plan(&nodes, &state, &q("route/web")).unwrap()),
            ["web.shop:8080/split/web-split", "web.shop:9090/split/web-split"]
        );
        assert_eq!(
            route_names(&plan(&nodes, &state, &q("route/web:9090")).unwrap()),
            ["web.shop:9090/split/web-split"]
        );
        let one = plan(&nodes, &state, &q("route/web.shop:8080/split/web-split")).unwrap();
        let Plan::Routes { routes, active_only, .. } = &one else { panic!("{one:?}") };
        assert!(!active_only);
        assert_eq!(routes[0].vhost, "web.shop.svc.cluster.local:8080");
        assert_eq!(routes[0].stat_prefix, "split/web-split");
        assert_eq!(
            routes[0].clusters,
            ["outbound|8080||web-v1.shop.svc.cluster.local", "outbound|8080||web-v2.shop.svc.cluster.local"]
        );
        let e = plan(&nodes, &state, &q("route/web:8080/nope")).unwrap_err();
        assert!(
            matches!(&e, StatError::UnknownTarget(m) if m.contains("web.shop:8080/split/web-split")),
            "known routes are listed: {e}"
        );
        let e = plan(&nodes, &state, &q("route/web:http")).unwrap_err();
        assert!(matches!(&e, StatError::BadQuery(m) if m.contains("\"http\" is not a port")), "{e}");
        let e = plan(&nodes, &state, &q("route/nope")).unwrap_err();
        assert!(matches!(&e, StatError::UnknownTarget(m) if m.contains("no HTTP route")), "{e}");
        let by = |t: &str, by: &str| StatQuery { by: Some(by.into()), ..q(t) };
        let e = plan(&nodes, &state, &by("trafficsplit/web-split", "route")).unwrap_err();
        assert!(matches!(&e, StatError::BadQuery(m) if m.contains("only for workload")), "{e}");
        let e = plan(&nodes, &state, &by("workload/client", "path")).unwrap_err();
        assert!(matches!(&e, StatError::BadQuery(m) if m.contains("\"path\"")), "{e}");
        let all = plan(&nodes, &state, &by("workload/client", "route")).unwrap();
        assert!(matches!(&all, Plan::Routes { proxies, active_only: true, .. } if proxies.len() == 1));
        assert_eq!(route_names(&all).len(), 7, "{:?}", route_names(&all));
    }

    #[test]
    fn route_rows_sum_weft_proxy_and_envoy_clients() {
        let state = routed_mesh();
        let routes: Vec<RouteSpec> =
            outbound_routes(&state).into_iter().filter(|r| r.service.name == "web").collect();
        let (v1, v2) =
            ("outbound|8080||web-v1.shop.svc.cluster.local", "outbound|8080||web-v2.shop.svc.cluster.local");
        let weft = |split: u32, failed: u32| {
            page(
                Flavor::Weft,
                &format!(
                    "upstream_response_total{{route=\"split/web-split\",cluster=\"{v1}\",status_code=\"200\",classification=\"success\"}} {split}\n\
                     upstream_response_total{{route=\"split/web-split\",cluster=\"{v2}\",status_code=\"503\",classification=\"failure\"}} {failed}\n\
                     upstream_response_total{{route=\"default\",cluster=\"{v1}\",status_code=\"200\",classification=\"success\"}} 1000\n\
                     upstream_response_latency_ms_bucket{{le=\"10.0\",route=\"split/web-split\",cluster=\"{v1}\"}} {split}\n"
                ),
            )
        };
        let envoy = |n: u32| {
            page(
                Flavor::Envoy,
                &format!(
                    "envoy_vhost_shop_svc_cluster_local_8080_route_split_web_split_upstream_rq{{envoy_response_code=\"200\",envoy_virtual_host=\"web\"}} {n}\n"
                ),
            )
        };
        let pages = vec![
            (node("client", 1), Ok((weft(10, 0), weft(50, 10)))),
            (node("other", 2), Ok((envoy(5), envoy(25)))),
            (node("gone", 4), Err("no answer".to_owned())),
        ];
        let (rows, notes) = route_rows(&routes, false, &pages, 10.0);
        assert_eq!(notes, ["proxy gone not read: no answer"]);
        let names: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["web.shop:8080/split/web-split", "web.shop:9090/split/web-split"]);
        assert_eq!((rows[0].requests, rows[0].failures), (70, 10));
        assert_eq!((rows[0].proxy.as_str(), rows[0].meshed.as_str()), ("weft-proxy+envoy", "2/3"));
        assert_eq!(rows[0].rps, 7.0);
        assert_eq!(rows[0].success_rate, Some(60.0 / 70.0));
        assert_eq!(rows[1].requests, 0, "the same route name on another port is another route");
        let (active, _) = route_rows(&routes, true, &pages, 10.0);
        assert_eq!(active.len(), 1);
    }

    #[test]
    fn merged_buckets_use_the_union_of_bounds() {
        let a = Delta {
            requests: 2,
            failures: 0,
            tls: None,
            buckets: vec![(1.0, 1.0), (5.0, 2.0)],
            reset: false,
        };
        let b = Delta { requests: 2, failures: 1, tls: None, buckets: vec![(2.0, 2.0)], reset: false };
        let s = sum(&[a, b]);
        assert_eq!((s.requests, s.failures), (4, 1));
        assert_eq!(s.buckets, vec![(1.0, 1.0), (2.0, 3.0), (5.0, 4.0)]);
    }
}
