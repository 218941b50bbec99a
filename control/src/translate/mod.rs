//! Translation: pure functions from the mesh model (and a proxy's identity) to
//! Envoy v3 resources. Nothing here does I/O; the same input always gives the
//! same output, so resources can be hashed, versioned and shared.

mod cluster;
mod endpoint;
mod inbound;
mod listener;
pub mod names;
mod rbac;
mod route;
mod split;
mod tls;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};

use weft_xds_protos::envoy::config::cluster::v3::Cluster;
use weft_xds_protos::envoy::config::endpoint::v3::ClusterLoadAssignment;
use weft_xds_protos::envoy::config::listener::v3::Listener;
use weft_xds_protos::envoy::config::route::v3::{RouteConfiguration, route::Action, route_action};

use crate::model::MeshState;

pub use cluster::OTEL_COLLECTOR_CLUSTER;
pub use endpoint::encode_load_assignment;
pub use inbound::{InboundEntry, InboundIndex};
pub use route::OutboundHosts;
pub use split::{SplitStatus, SplitTable};

/// Default port of a proxy's inbound listener (Linkerd's).
pub const INBOUND_PORT: u16 = 4143;
/// Default port of a proxy's outbound listener (Linkerd's).
pub const OUTBOUND_PORT: u16 = 4140;

/// Who a proxy is: read from its xDS `Node`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
pub struct ProxyNode {
    /// `node.id`.
    pub id: String,
    /// The workload's namespace (`NAMESPACE` in node metadata).
    pub namespace: String,
    /// The workload's ServiceAccount (`SERVICE_ACCOUNT`).
    pub service_account: String,
    /// The workload's pod IP (`POD_IP`): the proxy's listeners bind there.
    pub pod_ip: IpAddr,
    /// Port of the inbound listener (`INBOUND_PORT`, default 4143).
    pub inbound_port: u16,
    /// Port of the outbound listener (`OUTBOUND_PORT`, default 4140).
    pub outbound_port: u16,
    /// Traffic reaches the proxy by redirection (`TRANSPARENT=true`, Kubernetes);
    /// otherwise (locally) opaque TCP services get a listener each on the pod IP.
    pub transparent: bool,
}

/// How TrafficTargets are enforced (DESIGN.md, Authorization).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthzMode {
    /// A destination no TrafficTarget names accepts any meshed client; once one names it,
    /// only its sources (and rules) are allowed.
    #[default]
    Permissive,
    /// SMI's literal rule: deny unless a TrafficTarget allows.
    Strict,
}

impl std::str::FromStr for AuthzMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "permissive" => Ok(AuthzMode::Permissive),
            "strict" => Ok(AuthzMode::Strict),
            other => Err(format!("unknown authorization mode {other:?} (expected permissive or strict)")),
        }
    }
}

/// Mesh-wide translation options.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
pub struct MeshOptions {
    /// Meshed hops use mTLS (SDS secrets `default`/`ROOTCA`, SNI-matched inbound chains).
    pub mtls: bool,
    /// How TrafficTargets are enforced.
    pub authz: AuthzMode,
    /// The SPIFFE trust domain of workload identities.
    pub trust_domain: String,
    /// Distributed tracing (`--trace-collector`); `None` puts no tracing config in xDS at all.
    pub tracing: Option<TraceOptions>,
}

impl Default for MeshOptions {
    fn default() -> Self {
        MeshOptions {
            mtls: true,
            authz: AuthzMode::Permissive,
            trust_domain: "cluster.local".to_owned(),
            tracing: None,
        }
    }
}

/// Where proxies (and the control plane) send spans, and how many new traces they start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub struct TraceOptions {
    /// The OTLP/gRPC collector (plaintext). Every HTTP connection manager exports to it
    /// through the static cluster [`OTEL_COLLECTOR_CLUSTER`].
    pub collector: SocketAddr,
    /// The share of requests without a sampled parent that start a trace.
    pub sampling: Sampling,
}

/// A sampling rate, kept in parts per million so options stay `Eq` and `Hash`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub struct Sampling(u32);

impl Sampling {
    /// `--trace-sampling`'s default: one request in a hundred.
    pub const DEFAULT_PERCENT: f64 = 1.0;
    const PER_MILLION_PER_PERCENT: f64 = 10_000.0;

    /// A rate from a percentage in `0..=100`.
    pub fn from_percent(percent: f64) -> Result<Sampling, String> {
        if !(0.0..=100.0).contains(&percent) {
            return Err(format!("sampling rate {percent} is not a percentage between 0 and 100"));
        }
        // In range, so the product fits a u32.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        Ok(Sampling((percent * Self::PER_MILLION_PER_PERCENT).round() as u32))
    }

    /// The rate in parts per million.
    pub fn per_million(self) -> u32 {
        self.0
    }

    /// The rate as a percentage.
    pub fn percent(self) -> f64 {
        f64::from(self.0) / Self::PER_MILLION_PER_PERCENT
    }
}

impl Default for Sampling {
    fn default() -> Self {
        Sampling((Self::DEFAULT_PERCENT * Self::PER_MILLION_PER_PERCENT) as u32)
    }
}

impl std::fmt::Display for Sampling {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.percent())
    }
}

impl std::str::FromStr for Sampling {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let percent: f64 = s
            .trim()
            .trim_end_matches('%')
            .parse()
            .map_err(|_| format!("sampling rate {s:?} is not a number (a percentage, e.g. 1 or 0.5)"))?;
        Sampling::from_percent(percent)
    }
}

impl MeshOptions {
    /// Plaintext everywhere (debugging only: `--insecure-plaintext`).
    pub fn plaintext() -> Self {
        MeshOptions { mtls: false, ..MeshOptions::default() }
    }
}

/// The resources every proxy shares, built once per mesh state.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MeshResources {
    /// Outbound EDS clusters, by name.
    pub clusters: BTreeMap<String, Cluster>,
    /// ClusterLoadAssignments, by cluster name.
    pub endpoints: BTreeMap<String, ClusterLoadAssignment>,
    /// The outbound RouteConfiguration as seen from each namespace (short names differ).
    pub outbound_routes: BTreeMap<String, RouteConfiguration>,
    /// Which TrafficSplit applies to which root, and what each split's status is.
    pub splits: SplitTable,
}

/// The resources of one proxy that are its alone.
#[derive(Debug, Clone, PartialEq)]
pub struct ProxyResources {
    /// The outbound and inbound listeners.
    pub listeners: Vec<Listener>,
    /// `inbound|<port>||` clusters to the local app.
    pub clusters: Vec<Cluster>,
}

/// The resources every proxy shares, with the outbound routes not yet given each namespace's
/// view (see [`OutboundHosts`]): what a snapshot is built from.
#[derive(Debug, Clone, Default)]
pub struct SharedResources {
    /// Outbound EDS clusters, by name.
    pub clusters: BTreeMap<String, Cluster>,
    /// ClusterLoadAssignments, by cluster name.
    pub endpoints: BTreeMap<String, ClusterLoadAssignment>,
    /// The outbound virtual hosts.
    pub outbound: OutboundHosts,
    /// Every namespace with an object in it: each gets its own outbound RouteConfiguration.
    pub namespaces: BTreeSet<String>,
    /// Which TrafficSplit applies to which root, and what each split's status is.
    pub splits: SplitTable,
}

/// Builds the shared resources for a mesh state. With mTLS, the cluster of a
/// service port with meshed endpoints dials them with mTLS (and expects their
/// identities); the others stay plaintext.
pub fn translate_mesh(state: &MeshState, opts: &MeshOptions) -> MeshResources {
    let shared = translate_shared(state, opts);
    let outbound_routes =
        shared.namespaces.iter().map(|ns| (ns.clone(), shared.outbound.for_namespace(ns))).collect();
    MeshResources {
        clusters: shared.clusters,
        endpoints: shared.endpoints,
        outbound_routes,
        splits: shared.splits,
    }
}

/// Every namespace with an object in it (a Namespace, a Service or a Pod).
pub fn namespaces(state: &MeshState) -> BTreeSet<String> {
    let mut out: BTreeSet<String> = state.namespaces.keys().cloned().collect();
    for ns in state.services.keys().map(|k| &k.namespace).chain(state.pods.keys().map(|k| &k.namespace)) {
        if !out.contains(ns) {
            out.insert(ns.clone());
        }
    }
    out
}

/// Checks that every cluster the outbound hosts' routes name exists.
pub fn check_routes(
    hosts: &OutboundHosts,
    has_cluster: impl Fn(&str) -> bool,
) -> Result<(), ConsistencyError> {
    match hosts.clusters().find(|(_, c)| !has_cluster(c)) {
        Some((host, cluster)) => Err(ConsistencyError::MissingCluster {
            route: format!("{} (virtual host {host})", names::OUTBOUND),
            cluster: cluster.to_string(),
        }),
        None => Ok(()),
    }
}

/// One service's outbound clusters and their assignments, one per port: (name, cluster,
/// assignment).
pub fn translate_service(
    state: &MeshState,
    svc: &crate::model::Service,
    opts: &MeshOptions,
) -> Vec<(String, Cluster, ClusterLoadAssignment)> {
    svc.ports
        .iter()
        .map(|port| {
            let name = names::outbound_cluster(&svc.key, port.port);
            let assignment = endpoint::load_assignment(state, svc, port, &name, opts);
            let mut c = cluster::outbound(&name, port.protocol);
            if !assignment.mtls_identities.is_empty() {
                cluster::with_mtls(&mut c, &names::sni(&svc.key, port.port), &assignment.mtls_identities);
            }
            (name, c, assignment.cla)
        })
        .collect()
}

/// [`translate_mesh`] without building each namespace's RouteConfiguration.
pub fn translate_shared(state: &MeshState, opts: &MeshOptions) -> SharedResources {
    let splits = SplitTable::build(state);
    let mut clusters = BTreeMap::new();
    let mut endpoints = BTreeMap::new();
    for svc in state.services.values() {
        for (name, c, cla) in translate_service(state, svc, opts) {
            clusters.insert(name.clone(), c);
            endpoints.insert(name, cla);
        }
    }
    let namespaces = namespaces(state);
    let outbound = OutboundHosts::build(state, &splits);
    SharedResources { clusters, endpoints, outbound, namespaces, splits }
}

/// Builds the resources that belong to one proxy. With mTLS, its inbound
/// listener has one SNI-matched chain per service port it serves (HTTP and
/// opaque TCP), with RBAC from the TrafficTargets naming its ServiceAccount;
/// a workload that serves nothing gets no inbound listener.
pub fn translate_proxy(
    state: &MeshState,
    splits: &SplitTable,
    node: &ProxyNode,
    opts: &MeshOptions,
) -> ProxyResources {
    proxy_resources(state, splits, node, opts, listener::inbound_services(state, node, opts))
}

/// [`translate_proxy`] with the service ports the proxy's pod IP serves looked up in
/// `index` (built once per mesh state) rather than searched for: same result, far cheaper.
pub fn translate_proxy_indexed(
    state: &MeshState,
    splits: &SplitTable,
    index: &InboundIndex,
    node: &ProxyNode,
    opts: &MeshOptions,
) -> ProxyResources {
    let inbound = listener::inbound_services_from(state, index.get(node.pod_ip));
    proxy_resources(state, splits, node, opts, inbound)
}

fn proxy_resources(
    state: &MeshState,
    splits: &SplitTable,
    node: &ProxyNode,
    opts: &MeshOptions,
    inbound: listener::InboundServices<'_>,
) -> ProxyResources {
    let mut clusters: Vec<Cluster> = inbound
        .target_ports_http()
        .into_iter()
        .map(|(port, http)| cluster::inbound(node.pod_ip, port, http))
        .collect();
    let mut listeners = vec![listener::outbound(state, splits, node)];
    if opts.mtls {
        let authz = rbac::Authz::for_node(state, node, opts);
        listeners.extend(listener::inbound_mtls(node, &inbound, authz.as_ref()));
    } else {
        listeners.push(listener::inbound(node, &inbound));
    }
    if !node.transparent {
        listeners.extend(listener::local_tcp(state, splits, node));
    }
    if let Some(tracing) = &opts.tracing {
        listeners.iter_mut().for_each(|l| listener::with_tracing(l, node, tracing));
        clusters.push(cluster::otel_collector(tracing.collector));
    }
    ProxyResources { listeners, clusters }
}

/// A reference that would make Envoy wait or fail: found before publishing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConsistencyError {
    /// A route names a cluster that CDS does not have.
    #[error("route configuration {route} refers to cluster {cluster}, which does not exist")]
    MissingCluster {
        /// The RouteConfiguration.
        route: String,
        /// The missing cluster.
        cluster: String,
    },
    /// An EDS cluster has no ClusterLoadAssignment.
    #[error("cluster {0} uses EDS but has no ClusterLoadAssignment")]
    MissingEndpoints(String),
    /// A ClusterLoadAssignment that no cluster uses.
    #[error("ClusterLoadAssignment {0} belongs to no cluster")]
    OrphanEndpoints(String),
}

/// Checks that every route's cluster exists and every EDS cluster has endpoints.
pub fn check_consistency(mesh: &MeshResources) -> Result<(), ConsistencyError> {
    let routes = mesh
        .outbound_routes
        .iter()
        .flat_map(|(ns, rc)| route_clusters(rc).map(move |c| (format!("{} (namespace {ns})", rc.name), c)));
    check(&mesh.clusters, &mesh.endpoints, routes)
}

/// [`check_consistency`] of shared resources: the hosts' clusters, whatever the namespace.
pub fn check_shared_consistency(shared: &SharedResources) -> Result<(), ConsistencyError> {
    check(&shared.clusters, &shared.endpoints, std::iter::empty())?;
    check_routes(&shared.outbound, |c| shared.clusters.contains_key(c))
}

fn check<'a>(
    clusters: &BTreeMap<String, Cluster>,
    endpoints: &BTreeMap<String, ClusterLoadAssignment>,
    mut routes: impl Iterator<Item = (String, &'a str)>,
) -> Result<(), ConsistencyError> {
    for (name, _) in clusters.iter().filter(|(_, c)| cluster::is_eds(c)) {
        if !endpoints.contains_key(name) {
            return Err(ConsistencyError::MissingEndpoints(name.clone()));
        }
    }
    if let Some(orphan) = endpoints.keys().find(|n| !clusters.contains_key(*n)) {
        return Err(ConsistencyError::OrphanEndpoints(orphan.clone()));
    }
    if let Some((route, cluster)) = routes.find(|(_, c)| !clusters.contains_key(*c)) {
        return Err(ConsistencyError::MissingCluster { route, cluster: cluster.to_string() });
    }
    Ok(())
}

/// Every cluster a RouteConfiguration's routes name.
pub fn route_clusters(rc: &RouteConfiguration) -> impl Iterator<Item = &str> {
    rc.virtual_hosts.iter().flat_map(|vh| vh.routes.iter()).flat_map(action_clusters)
}

/// The clusters one route forwards to.
fn action_clusters(
    r: &weft_xds_protos::envoy::config::route::v3::Route,
) -> Box<dyn Iterator<Item = &str> + '_> {
    match &r.action {
        Some(Action::Route(ra)) => match &ra.cluster_specifier {
            Some(route_action::ClusterSpecifier::Cluster(c)) => Box::new(std::iter::once(c.as_str())),
            Some(route_action::ClusterSpecifier::WeightedClusters(w)) => {
                Box::new(w.clusters.iter().map(|c| c.name.as_str()))
            }
            _ => Box::new(std::iter::empty()),
        },
        _ => Box::new(std::iter::empty()),
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_mtls;
#[cfg(test)]
mod tests_tracing;
