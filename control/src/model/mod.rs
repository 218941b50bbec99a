//! The mesh model: typed, validated mesh state, independent of where it came
//! from (manifest directory, Kubernetes watch or the apply API).
//!
//! Every source produces a [`MeshState`]; translation reads it and never does I/O.

mod resolve;

use std::collections::BTreeMap;
use std::net::IpAddr;

pub use resolve::{ResolvedEndpoint, resolve_endpoints};

/// The annotation that marks a namespace or pod as meshed (`enabled`) or not (`disabled`).
pub const INJECT_ANNOTATION: &str = "weft.io/inject";

/// The label an EndpointSlice carries to name its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// A namespaced object name, ordered by namespace then name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub struct Key {
    /// The namespace (`default` when a manifest leaves it out).
    pub namespace: String,
    /// The object's `metadata.name`.
    pub name: String,
}

impl Key {
    /// A key from namespace and name.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self { namespace: namespace.into(), name: name.into() }
    }
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// The kinds of object the model holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub enum Kind {
    /// `v1/Namespace`
    Namespace,
    /// `v1/Service`
    Service,
    /// `v1/Pod`
    Pod,
    /// `discovery.k8s.io/v1/EndpointSlice`
    EndpointSlice,
    /// `split.smi-spec.io/*/TrafficSplit`
    TrafficSplit,
    /// `specs.smi-spec.io/*/HTTPRouteGroup`
    HttpRouteGroup,
    /// `specs.smi-spec.io/*/TCPRoute`
    TcpRoute,
    /// `access.smi-spec.io/*/TrafficTarget`
    TrafficTarget,
}

impl Kind {
    /// The Kubernetes `kind` string.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Namespace => "Namespace",
            Kind::Service => "Service",
            Kind::Pod => "Pod",
            Kind::EndpointSlice => "EndpointSlice",
            Kind::TrafficSplit => "TrafficSplit",
            Kind::HttpRouteGroup => "HTTPRouteGroup",
            Kind::TcpRoute => "TCPRoute",
            Kind::TrafficTarget => "TrafficTarget",
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `v1/Namespace`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespace {
    /// Name.
    pub name: String,
    /// `weft.io/inject` on the namespace: `Some(true)` for `enabled`.
    pub inject: Option<bool>,
}

/// How a service port's traffic is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub enum Protocol {
    /// HTTP/1.1 or HTTP/2 (including gRPC): routed per request.
    Http,
    /// Opaque TCP: proxied per connection.
    Tcp,
}

/// A Service port's `targetPort`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TargetPort {
    /// A port number.
    Number(u16),
    /// A named container port of the selected pods.
    Name(String),
}

/// One entry of a Service's `spec.ports`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePort {
    /// `name`, required by Kubernetes when there are several ports.
    pub name: Option<String>,
    /// `port`.
    pub port: u16,
    /// `targetPort` (defaults to `port`).
    pub target_port: TargetPort,
    /// From `appProtocol`, else the port name's prefix (`tcp-`, `http-`...), else HTTP.
    pub protocol: Protocol,
}

/// Retries for a service's HTTP routes (`weft.io/retry-on`, `weft.io/retries`, `weft.io/per-try-timeout`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Envoy `retry_on` tokens: `5xx`, `gateway-error`, `connect-failure`, `reset`.
    pub retry_on: Vec<String>,
    /// How many retries (default 1).
    pub num_retries: u32,
    /// Timeout of each try.
    pub per_try_timeout: Option<std::time::Duration>,
}

/// HTTP behaviour a Service asks of its clients' proxies through `weft.io/*` annotations.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HttpPolicy {
    /// `weft.io/timeout`: the whole request's timeout (Envoy's default, 15 s, when unset; `0s` disables it).
    pub timeout: Option<std::time::Duration>,
    /// Retries, when `weft.io/retry-on` is set.
    pub retry: Option<RetryPolicy>,
}

/// The annotation for a service's request timeout, e.g. `500ms`.
pub const TIMEOUT_ANNOTATION: &str = "weft.io/timeout";
/// The annotation listing when to retry, e.g. `5xx,connect-failure`.
pub const RETRY_ON_ANNOTATION: &str = "weft.io/retry-on";
/// The annotation for how many retries (default 1).
pub const RETRIES_ANNOTATION: &str = "weft.io/retries";
/// The annotation for each try's timeout.
pub const PER_TRY_TIMEOUT_ANNOTATION: &str = "weft.io/per-try-timeout";

/// `v1/Service`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    /// Namespace and name.
    pub key: Key,
    /// `spec.selector`; empty means endpoints come only from EndpointSlices.
    pub selector: BTreeMap<String, String>,
    /// `spec.clusterIP`, when set and not `None`.
    pub cluster_ip: Option<IpAddr>,
    /// `spec.ports`.
    pub ports: Vec<ServicePort>,
    /// Timeouts and retries from annotations.
    pub policy: HttpPolicy,
}

/// A container port a pod declares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerPort {
    /// `name`, if any.
    pub name: Option<String>,
    /// `containerPort`.
    pub port: u16,
}

/// `v1/Pod`: a workload instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pod {
    /// Namespace and name.
    pub key: Key,
    /// `metadata.labels`.
    pub labels: BTreeMap<String, String>,
    /// `status.podIP` (locally, the workload's loopback address).
    pub ip: Option<IpAddr>,
    /// `spec.serviceAccountName` (defaults to `default`).
    pub service_account: String,
    /// False when `status.conditions` has `Ready` = `False`; true otherwise.
    pub ready: bool,
    /// `weft.io/inject` on the pod, which overrides the namespace's.
    pub inject: Option<bool>,
    /// Every container's `ports`.
    pub ports: Vec<ContainerPort>,
}

/// One endpoint of an EndpointSlice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SliceEndpoint {
    /// `addresses`.
    pub addresses: Vec<IpAddr>,
    /// `conditions.ready` (absent means ready).
    pub ready: bool,
    /// `targetRef.name` when it refers to a Pod.
    pub pod: Option<String>,
}

/// A port of an EndpointSlice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlicePort {
    /// `name`; matches the Service port of the same name.
    pub name: Option<String>,
    /// `port`.
    pub port: u16,
}

/// `discovery.k8s.io/v1/EndpointSlice`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointSlice {
    /// Namespace and name.
    pub key: Key,
    /// The `kubernetes.io/service-name` label.
    pub service: String,
    /// `ports`.
    pub ports: Vec<SlicePort>,
    /// `endpoints`.
    pub endpoints: Vec<SliceEndpoint>,
}

/// A TrafficSplit backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    /// `service`, in the split's namespace.
    pub service: String,
    /// Relative weight in thousandths (`950m` is 950, `1` is 1000, v1alpha2+ `5` is 5000).
    pub weight_milli: u64,
}

/// A reference from a TrafficSplit or TrafficTarget to a route object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteRef {
    /// `HTTPRouteGroup` or `TCPRoute`.
    pub kind: Kind,
    /// `name`, in the referring object's namespace.
    pub name: String,
    /// For TrafficTarget rules: the names of the HTTPRouteGroup matches allowed (empty = all).
    pub matches: Vec<String>,
}

/// `split.smi-spec.io/*/TrafficSplit`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrafficSplit {
    /// Namespace and name.
    pub key: Key,
    /// The API version it was written in, e.g. `split.smi-spec.io/v1alpha1`.
    pub api_version: String,
    /// `metadata.creationTimestamp` if set (RFC 3339); otherwise the order of first sight decides age.
    pub created: Option<String>,
    /// `spec.service` (v1alpha1 may write an FQDN; the short name is kept).
    pub root_service: String,
    /// `spec.backends`.
    pub backends: Vec<Backend>,
    /// `spec.matches` (v1alpha3+): only matching requests are split.
    pub matches: Vec<RouteRef>,
}

/// One match of an HTTPRouteGroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpMatch {
    /// `name`.
    pub name: String,
    /// `pathRegex`, a full-path regular expression (RE2 syntax).
    pub path_regex: Option<String>,
    /// `methods`; empty or `*` means any method.
    pub methods: Vec<String>,
    /// `headers`: header name to a regular expression its value must match.
    pub headers: BTreeMap<String, String>,
}

/// `specs.smi-spec.io/*/HTTPRouteGroup`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRouteGroup {
    /// Namespace and name.
    pub key: Key,
    /// `spec.matches`.
    pub matches: Vec<HttpMatch>,
}

/// `specs.smi-spec.io/*/TCPRoute`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpRoute {
    /// Namespace and name.
    pub key: Key,
    /// `spec.matches.ports` (v1alpha4); empty means every port.
    pub ports: Vec<u16>,
}

/// A ServiceAccount that a TrafficTarget names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityRef {
    /// The ServiceAccount's namespace.
    pub namespace: String,
    /// The ServiceAccount's name.
    pub name: String,
}

/// `access.smi-spec.io/*/TrafficTarget`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrafficTarget {
    /// Namespace and name.
    pub key: Key,
    /// `spec.destination`.
    pub destination: IdentityRef,
    /// `spec.sources`.
    pub sources: Vec<IdentityRef>,
    /// `spec.rules` (v1alpha1 `specs`).
    pub rules: Vec<RouteRef>,
}

/// The whole mesh state that translation reads. Maps are ordered so that
/// translation output is deterministic.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MeshState {
    /// Namespaces by name.
    pub namespaces: BTreeMap<String, Namespace>,
    /// Services.
    pub services: BTreeMap<Key, Service>,
    /// Pods.
    pub pods: BTreeMap<Key, Pod>,
    /// EndpointSlices.
    pub endpoint_slices: BTreeMap<Key, EndpointSlice>,
    /// TrafficSplits.
    pub traffic_splits: BTreeMap<Key, TrafficSplit>,
    /// HTTPRouteGroups.
    pub http_route_groups: BTreeMap<Key, HttpRouteGroup>,
    /// TCPRoutes.
    pub tcp_routes: BTreeMap<Key, TcpRoute>,
    /// TrafficTargets.
    pub traffic_targets: BTreeMap<Key, TrafficTarget>,
    /// The order in which TrafficSplits were first seen, to age splits without a creation time.
    pub split_first_seen: BTreeMap<Key, u64>,
}

impl MeshState {
    /// Whether a pod runs a proxy: its own `weft.io/inject`, else its namespace's.
    pub fn is_meshed(&self, pod: &Pod) -> bool {
        pod.inject
            .or_else(|| self.namespaces.get(&pod.key.namespace).and_then(|ns| ns.inject))
            .unwrap_or(false)
    }

    /// The pods whose labels a service's selector matches (none for an empty selector).
    pub fn selected_pods<'a>(&'a self, svc: &'a Service) -> impl Iterator<Item = &'a Pod> + 'a {
        in_namespace(&self.pods, &svc.key.namespace).filter(move |pod| {
            !svc.selector.is_empty() && svc.selector.iter().all(|(k, v)| pod.labels.get(k) == Some(v))
        })
    }

    /// The EndpointSlices that name a service (`kubernetes.io/service-name`), in key order.
    pub fn slices_of<'a>(&'a self, svc: &'a Key) -> impl Iterator<Item = &'a EndpointSlice> + 'a {
        in_namespace(&self.endpoint_slices, &svc.namespace).filter(move |s| s.service == svc.name)
    }
}

/// The values of a map keyed by [`Key`] whose namespace is `namespace`: a range of the map
/// (keys order by namespace first), not a scan of every namespace.
pub(crate) fn in_namespace<'a, V>(
    map: &'a BTreeMap<Key, V>,
    namespace: &'a str,
) -> impl Iterator<Item = &'a V> + 'a {
    map.range(Key::new(namespace, "")..).take_while(move |(k, _)| k.namespace == namespace).map(|(_, v)| v)
}
