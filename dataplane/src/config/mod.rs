//! The proxy's runtime configuration: what xDS said, validated into plain
//! types. A [`Config`] is immutable; a change builds a new one and swaps it in
//! whole, so a request in flight finishes on the config it started with.
//!
//! `crate::xds` decodes Envoy resources into these types (and NACKs what it
//! cannot represent); the data path (`crate::proxy`) only ever reads them.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

pub mod rbac;

/// Everything the proxy serves, as of the versions in `versions`.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// Listeners by name (LDS).
    pub listeners: BTreeMap<String, Arc<Listener>>,
    /// Route tables by name (RDS).
    pub routes: BTreeMap<String, Arc<RouteTable>>,
    /// Clusters by name (CDS).
    pub clusters: BTreeMap<String, Arc<Cluster>>,
    /// Endpoints by cluster name (EDS).
    pub endpoints: BTreeMap<String, Arc<ClusterEndpoints>>,
    /// The version of each resource applied, by type short name (`lds`, `rds`, `cds`, `eds`) then resource name.
    pub versions: BTreeMap<&'static str, BTreeMap<String, String>>,
}

/// A listener: where to accept connections and what to do with them.
#[derive(Debug, Clone, PartialEq)]
pub struct Listener {
    /// Resource name (`outbound`, `inbound`).
    pub name: String,
    /// Bind address.
    pub addr: SocketAddr,
    /// Filter chains, chosen by the connection's (original) destination.
    pub chains: Vec<FilterChain>,
    /// The chain for connections no chain matches.
    pub default_chain: Option<FilterChain>,
    /// Recover the original destination of redirected connections (`original_dst` listener filter).
    pub original_dst: bool,
    /// Read the TLS ClientHello (SNI) before choosing a chain (`tls_inspector` listener filter).
    pub tls_inspector: bool,
}

/// One filter chain of a listener.
#[derive(Debug, Clone, PartialEq)]
pub struct FilterChain {
    /// Name, for metrics and logs.
    pub name: String,
    /// Matches connections to this destination port (any if `None`).
    pub destination_port: Option<u16>,
    /// Matches connections to these destination prefixes (any if empty): address and prefix length.
    pub destination_prefixes: Vec<(IpAddr, u8)>,
    /// Matches TLS connections whose SNI is one of these (any if empty). Lowercase; a leading
    /// `*.` matches any one-or-more-label prefix, as in Envoy.
    pub server_names: Vec<String>,
    /// Matches only connections of this transport protocol: `tls` or `raw_buffer` (any if `None`).
    pub transport_protocol: Option<String>,
    /// Terminate TLS on this chain (a `DownstreamTlsContext` transport socket).
    pub tls: Option<DownstreamTls>,
    /// Network RBAC filter before the terminal filter (TCP chains).
    pub rbac: Option<Arc<rbac::Rbac>>,
    /// What the chain does.
    pub kind: ChainKind,
}

/// TLS termination on a filter chain. Certificates are the proxy's own (SDS secret `default`,
/// trust bundle `ROOTCA`): weft-proxy resolves them from its in-process credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DownstreamTls {
    /// Demand a client certificate that chains to the trust bundle.
    pub require_client_certificate: bool,
    /// ALPN protocols offered, in order.
    pub alpn: Vec<String>,
}

/// TLS origination for a cluster's mTLS endpoints (`transport_socket_matches` entry whose match is
/// `{"weft.mtls": true}`, or the cluster's `transport_socket`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamTls {
    /// The SNI sent.
    pub sni: String,
    /// SPIFFE IDs the server may present (any of them; `match_typed_subject_alt_names` URIs).
    /// An endpoint's own `identity` narrows this to exactly that one.
    pub allowed_identities: Vec<String>,
    /// Every endpoint uses TLS (`transport_socket`), not only those marked `weft.mtls`.
    pub all_endpoints: bool,
}

/// The terminal network filter of a chain.
#[derive(Debug, Clone, PartialEq)]
pub enum ChainKind {
    /// HTTP connection manager.
    Http(HttpManager),
    /// TCP proxy.
    Tcp(TcpProxy),
}

/// An HTTP connection manager: HTTP/1.1 and h2c, routed per request.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpManager {
    /// Metrics prefix.
    pub stat_prefix: String,
    /// Where the routes come from.
    pub routes: RouteSource,
    /// HTTP RBAC filter, checked before routing.
    pub rbac: Option<Arc<rbac::Rbac>>,
    /// Distributed tracing (`tracing` with the OpenTelemetry provider); `None`: no spans, and
    /// trace headers pass through untouched.
    pub tracing: Option<Arc<HttpTracing>>,
}

/// Tracing of an HTTP connection manager: a span per request, exported over OTLP/gRPC.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpTracing {
    /// The cluster of the OTLP collector (`grpc_service.envoy_grpc.cluster_name`).
    pub collector_cluster: String,
    /// The spans' `service.name` (Envoy's default when unset: `unknown_service:envoy`).
    pub service_name: String,
    /// Percentage (0 to 100) of requests without a sampled parent that start a trace
    /// (`random_sampling`, default 100).
    pub sampling_percent: f64,
}

/// Routes of an HTTP connection manager.
#[derive(Debug, Clone, PartialEq)]
pub enum RouteSource {
    /// A route table by name, from RDS (looked up in [`Config::routes`] per request).
    Rds(String),
    /// Routes inline in the listener.
    Inline(Arc<RouteTable>),
}

/// A TCP proxy.
#[derive(Debug, Clone, PartialEq)]
pub struct TcpProxy {
    /// Metrics prefix.
    pub stat_prefix: String,
    /// Upstream clusters and weights (one entry with weight 1 for a plain cluster).
    pub clusters: Vec<WeightedCluster>,
}

/// A RouteConfiguration.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteTable {
    /// Resource name.
    pub name: String,
    /// Virtual hosts, in order.
    pub virtual_hosts: Vec<VirtualHost>,
}

/// A virtual host: a set of domains and their routes.
#[derive(Debug, Clone, PartialEq)]
pub struct VirtualHost {
    /// Name.
    pub name: String,
    /// Domains, Envoy syntax: exact (`a.b:80`), suffix wildcard (`*.b`), prefix wildcard (`a.*`) or `*`.
    /// Lowercase. Matching follows Envoy: exact, then longest suffix, then longest prefix, then `*`.
    pub domains: Vec<String>,
    /// Routes, first match wins.
    pub routes: Vec<Route>,
}

/// A route: a match and an action.
#[derive(Debug, Clone)]
pub struct Route {
    /// Name, for metrics and tap.
    pub name: String,
    /// How the path must match.
    pub path: PathMatch,
    /// Headers that must all match (`:method` and `:authority` included as pseudo-headers).
    pub headers: Vec<HeaderMatch>,
    /// What to do with a matching request.
    pub action: Action,
}

impl PartialEq for Route {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
            && self.path == other.path
            && self.headers == other.headers
            && self.action == other.action
    }
}

/// A path match; the query string is not part of the path.
#[derive(Debug, Clone)]
pub enum PathMatch {
    /// Starts with.
    Prefix(String),
    /// Equals.
    Exact(String),
    /// Matches the whole path (RE2 semantics, anchored).
    Regex(regex::Regex),
}

impl PartialEq for PathMatch {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (PathMatch::Prefix(a), PathMatch::Prefix(b)) | (PathMatch::Exact(a), PathMatch::Exact(b)) => {
                a == b
            }
            (PathMatch::Regex(a), PathMatch::Regex(b)) => a.as_str() == b.as_str(),
            _ => false,
        }
    }
}

/// A header condition.
#[derive(Debug, Clone, PartialEq)]
pub struct HeaderMatch {
    /// Lowercase header name, or a pseudo-header (`:method`, `:authority`, `:path`).
    pub name: String,
    /// How the value must match.
    pub value: StringMatch,
    /// Inverts the result.
    pub invert: bool,
}

/// A string condition.
#[derive(Debug, Clone)]
pub enum StringMatch {
    /// Equals.
    Exact(String),
    /// Starts with.
    Prefix(String),
    /// Ends with.
    Suffix(String),
    /// Contains.
    Contains(String),
    /// Matches entirely (anchored).
    Regex(regex::Regex),
    /// The header is present (`true`) or absent (`false`).
    Present(bool),
}

impl PartialEq for StringMatch {
    fn eq(&self, other: &Self) -> bool {
        use StringMatch::*;
        match (self, other) {
            (Exact(a), Exact(b))
            | (Prefix(a), Prefix(b))
            | (Suffix(a), Suffix(b))
            | (Contains(a), Contains(b)) => a == b,
            (Regex(a), Regex(b)) => a.as_str() == b.as_str(),
            (Present(a), Present(b)) => a == b,
            _ => false,
        }
    }
}

/// What a route does.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Forward upstream.
    Forward(Forward),
    /// Answer directly.
    Direct {
        /// HTTP status.
        status: u16,
        /// Body.
        body: Bytes,
    },
}

/// Forwarding upstream.
#[derive(Debug, Clone, PartialEq)]
pub struct Forward {
    /// Clusters and relative weights; one is picked per request.
    pub clusters: Vec<WeightedCluster>,
    /// Whole-request timeout (Envoy's route `timeout`; default 15 s, `None` = no timeout).
    pub timeout: Option<Duration>,
    /// Retries.
    pub retry: Option<RetryPolicy>,
}

/// A cluster and its weight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeightedCluster {
    /// Cluster name.
    pub name: String,
    /// Relative weight (> 0).
    pub weight: u32,
}

/// When and how often to retry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// `5xx`: retry on 5xx responses and on connect failures and resets.
    pub on_5xx: bool,
    /// `gateway-error`: retry on 502, 503, 504.
    pub on_gateway_error: bool,
    /// `connect-failure`.
    pub on_connect_failure: bool,
    /// `reset`.
    pub on_reset: bool,
    /// `retriable-status-codes`: these statuses.
    pub retriable_status_codes: Vec<u16>,
    /// How many retries (Envoy's default is 1).
    pub num_retries: u32,
    /// Timeout of each try.
    pub per_try_timeout: Option<Duration>,
}

/// A cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct Cluster {
    /// Name.
    pub name: String,
    /// Where its endpoints come from.
    pub discovery: Discovery,
    /// Connect timeout (Envoy's default 5 s).
    pub connect_timeout: Duration,
    /// Load balancing.
    pub lb: LbPolicy,
    /// Limits (Envoy's defaults: 1024 each).
    pub limits: CircuitBreakers,
    /// Upstream HTTP protocol.
    pub protocol: UpstreamProtocol,
    /// mTLS to endpoints that ask for it.
    pub tls: Option<UpstreamTls>,
}

/// Where a cluster's endpoints come from.
#[derive(Debug, Clone, PartialEq)]
pub enum Discovery {
    /// EDS: [`Config::endpoints`] under the cluster's name.
    Eds,
    /// Listed in the cluster (`STATIC` with `load_assignment`).
    Static(Arc<ClusterEndpoints>),
}

/// Load balancing policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LbPolicy {
    /// Round robin.
    RoundRobin,
    /// Least request, power of two random choices.
    LeastRequest,
}

/// Circuit breakers (default priority thresholds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CircuitBreakers {
    /// Concurrent upstream connections.
    pub max_connections: u32,
    /// Requests waiting for a connection.
    pub max_pending_requests: u32,
    /// Concurrent requests.
    pub max_requests: u32,
}

impl Default for CircuitBreakers {
    fn default() -> Self {
        CircuitBreakers { max_connections: 1024, max_pending_requests: 1024, max_requests: 1024 }
    }
}

/// How to speak HTTP upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamProtocol {
    /// HTTP/1.1.
    Http1,
    /// HTTP/2 (prior knowledge, h2c).
    Http2,
    /// The downstream request's protocol (`use_downstream_protocol_config`).
    SameAsDownstream,
}

/// A cluster's endpoints.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ClusterEndpoints {
    /// Cluster name.
    pub cluster: String,
    /// Healthy endpoints.
    pub endpoints: Vec<Endpoint>,
}

/// One upstream endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Where to connect.
    pub addr: SocketAddr,
    /// The SPIFFE ID the peer should present (`filter_metadata.weft.identity`), for mTLS.
    pub identity: Option<String>,
    /// Dial with the cluster's TLS (`filter_metadata."envoy.transport_socket_match"."weft.mtls"`).
    pub mtls: bool,
    /// Load balancing weight (default 1).
    pub weight: u32,
}
