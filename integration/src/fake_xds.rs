//! A scriptable ADS server: the test plays the control plane.
//!
//! A real tonic server (SotW and Delta ADS) on an address the test picks. The test
//! [`push`](FakeXds::push)es whole sets of resources per type; every connected stream
//! gets what changed, as a control plane would send it (SotW: the whole set of a type,
//! filtered by the names a non-wildcard subscription asks for; Delta: changed and removed
//! resources only). Every request a proxy sends is kept as a [`Reply`], so the test can
//! wait for the ACK or NACK of what it pushed and read the NACK's `error_detail`:
//!
//! ```no_run
//! # async fn demo(listener: weft_xds_protos::envoy::config::listener::v3::Listener) -> anyhow::Result<()> {
//! use weft_integration::fake_xds::{FakeXds, Update};
//! use weft_xds_protos::type_url;
//!
//! let xds = FakeXds::start("127.1.2.250:0".parse()?).await?;
//! let version = xds.push(Update::new().set(&[listener]));
//! // ... start a proxy with xds.addr() ...
//! let reply = xds.reply_to(type_url::LISTENER, version).await?;
//! assert!(reply.is_ack(), "{reply:?}");
//! # Ok(()) }
//! ```
//!
//! Versions are one counter for all types: each push makes a new one, and a resource's
//! version (Delta) is the push that last changed it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use tokio::sync::{Mutex, mpsc, watch};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status, Streaming};
use weft_control::bootstrap::AdsMode;
use weft_xds_protos::envoy::config::cluster::v3::Cluster;
use weft_xds_protos::envoy::config::endpoint::v3::ClusterLoadAssignment;
use weft_xds_protos::envoy::config::listener::v3::Listener;
use weft_xds_protos::envoy::config::route::v3::RouteConfiguration;
use weft_xds_protos::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use weft_xds_protos::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse, Resource,
};
use weft_xds_protos::google::protobuf::Any;
use weft_xds_protos::type_url;

/// The order in which changed types are sent: make before break.
const SEND_ORDER: [&str; 4] = [type_url::CLUSTER, type_url::ENDPOINT, type_url::LISTENER, type_url::ROUTE];

/// An xDS resource with a name.
pub trait XdsResource: prost::Message + prost::Name + Sized {
    /// Its name as xDS knows it.
    fn xds_name(&self) -> &str;
}

impl XdsResource for Listener {
    fn xds_name(&self) -> &str {
        &self.name
    }
}

impl XdsResource for Cluster {
    fn xds_name(&self) -> &str {
        &self.name
    }
}

impl XdsResource for RouteConfiguration {
    fn xds_name(&self) -> &str {
        &self.name
    }
}

impl XdsResource for ClusterLoadAssignment {
    fn xds_name(&self) -> &str {
        &self.cluster_name
    }
}

/// Packs a message as an `Any`.
pub fn any<M: prost::Message + prost::Name>(m: &M) -> Any {
    Any { type_url: M::type_url(), value: m.encode_to_vec() }
}

/// A set of changes to push at once: each [`Update::set`] replaces the whole set of its type.
#[derive(Debug, Clone, Default)]
pub struct Update {
    types: BTreeMap<String, Vec<(String, Any)>>,
}

impl Update {
    /// No changes yet.
    pub fn new() -> Update {
        Update::default()
    }

    /// The resources of `M`'s type become exactly `resources`.
    pub fn set<M: XdsResource>(mut self, resources: &[M]) -> Update {
        let packed = resources.iter().map(|r| (r.xds_name().to_owned(), any(r))).collect();
        self.types.insert(M::type_url(), packed);
        self
    }

    /// The resources of `type_url` become exactly `resources` (name, packed resource),
    /// e.g. to push bytes no typed message would produce.
    pub fn set_raw(mut self, type_url: &str, resources: Vec<(String, Any)>) -> Update {
        self.types.insert(type_url.to_owned(), resources);
        self
    }
}

#[derive(Debug, Clone)]
struct Versioned {
    version: u64,
    any: Any,
}

/// Everything pushed so far.
#[derive(Debug, Clone, Default)]
struct State {
    version: u64,
    /// Per type: the push that last changed it, and its resources by name.
    types: BTreeMap<String, (u64, BTreeMap<String, Versioned>)>,
}

/// What a proxy sent on a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyKind {
    /// A request without a nonce: a (re)subscription.
    Subscribe,
    /// An ACK: a nonce and no `error_detail`.
    Ack,
    /// A NACK: a nonce and an `error_detail`.
    Nack,
}

/// One request from a proxy.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The stream it came on.
    pub mode: AdsMode,
    /// The node id the stream's first request carried.
    pub node_id: String,
    /// The type it is about.
    pub type_url: String,
    /// Subscription, ACK or NACK.
    pub kind: ReplyKind,
    /// `response_nonce`.
    pub nonce: String,
    /// SotW `version_info` (the version the proxy holds); empty for Delta.
    pub version_info: String,
    /// The push whose response this ACKs or NACKs (`None` for subscriptions or unknown nonces).
    pub answers: Option<u64>,
    /// `error_detail.message`, for a NACK.
    pub error: Option<String>,
    /// SotW `resource_names`, or Delta `resource_names_subscribe`.
    pub names: Vec<String>,
}

impl Reply {
    /// Whether it is an ACK.
    pub fn is_ack(&self) -> bool {
        self.kind == ReplyKind::Ack
    }

    /// Whether it is a NACK.
    pub fn is_nack(&self) -> bool {
        self.kind == ReplyKind::Nack
    }
}

/// The running fake server; it stops accepting when dropped.
#[derive(Debug)]
pub struct FakeXds {
    addr: SocketAddr,
    state: Arc<watch::Sender<Arc<State>>>,
    replies: Mutex<mpsc::UnboundedReceiver<Reply>>,
    server: JoinHandle<()>,
}

impl FakeXds {
    /// Serves ADS on `addr` (port 0 picks one; see [`FakeXds::addr`]) with nothing pushed yet.
    pub async fn start(addr: SocketAddr) -> anyhow::Result<FakeXds> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("fake xDS: binding {addr}: {e}"))?;
        let addr = listener.local_addr()?;
        let state = Arc::new(watch::Sender::new(Arc::new(State::default())));
        let (reply_tx, replies) = mpsc::unbounded_channel();
        let service = AggregatedDiscoveryServiceServer::new(Ads { state: state.clone(), replies: reply_tx });
        let server = tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(TcpListenerStream::new(listener));
        let server = tokio::spawn(async move {
            let _ = server.await;
        });
        Ok(FakeXds { addr, state, replies: Mutex::new(replies), server })
    }

    /// The address it serves on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Applies `update` and sends what changed to every stream; returns the new version.
    pub fn push(&self, update: Update) -> u64 {
        let mut version = 0;
        self.state.send_modify(|state| {
            let mut next = (**state).clone();
            next.version += 1;
            version = next.version;
            for (type_url, resources) in update.types {
                let old = next.types.remove(&type_url).map(|(_, r)| r).unwrap_or_default();
                let resources = resources
                    .into_iter()
                    .map(|(name, any)| {
                        let unchanged = old.get(&name).filter(|o| o.any == any).map(|o| o.version);
                        (name, Versioned { version: unchanged.unwrap_or(version), any })
                    })
                    .collect();
                next.types.insert(type_url, (version, resources));
            }
            *state = Arc::new(next);
        });
        version
    }

    /// The next request from any proxy, within `timeout`.
    pub async fn next_reply(&self, timeout: Duration) -> anyhow::Result<Reply> {
        let mut replies = self.replies.lock().await;
        tokio::time::timeout(timeout, replies.recv())
            .await
            .map_err(|_| anyhow::anyhow!("no request from a proxy within {timeout:?}"))?
            .ok_or_else(|| anyhow::anyhow!("the fake xDS server stopped"))
    }

    /// Waits (at most [`crate::patience`]) for the ACK or NACK of a `type_url` response
    /// built from push `version` or a later one, skipping other requests.
    pub async fn reply_to(&self, type_url: &str, version: u64) -> anyhow::Result<Reply> {
        let patience = crate::patience();
        let deadline = tokio::time::Instant::now() + patience;
        let mut skipped = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let reply = match self.next_reply(left).await {
                Ok(reply) => reply,
                Err(e) => anyhow::bail!(
                    "no ACK or NACK of {type_url} version {version} within {patience:?} ({e}); \
                     other requests seen: {skipped:#?}"
                ),
            };
            if reply.type_url == type_url
                && reply.kind != ReplyKind::Subscribe
                && reply.answers >= Some(version)
            {
                return Ok(reply);
            }
            skipped.push(reply);
        }
    }
}

impl Drop for FakeXds {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// The tonic service: one task per stream.
#[derive(Debug, Clone)]
struct Ads {
    state: Arc<watch::Sender<Arc<State>>>,
    replies: mpsc::UnboundedSender<Reply>,
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl AggregatedDiscoveryService for Ads {
    type StreamAggregatedResourcesStream = BoxStream<DiscoveryResponse>;
    type DeltaAggregatedResourcesStream = BoxStream<DeltaDiscoveryResponse>;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        let (tx, rx) = mpsc::channel(16);
        let stream = SotwStream {
            state: self.state.subscribe(),
            replies: self.replies.clone(),
            tx,
            node_id: String::new(),
            names: HashMap::new(),
            sent: HashMap::new(),
            nonces: HashMap::new(),
            next_nonce: 0,
        };
        tokio::spawn(stream.run(request.into_inner()));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        let (tx, rx) = mpsc::channel(16);
        let stream = DeltaStream {
            state: self.state.subscribe(),
            replies: self.replies.clone(),
            tx,
            node_id: String::new(),
            subscriptions: HashMap::new(),
            nonces: HashMap::new(),
            next_nonce: 0,
        };
        tokio::spawn(stream.run(request.into_inner()));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// Whether a subscription to `names` covers `name`: empty (legacy wildcard) or `*` covers all.
fn covers(names: &[String], name: &str) -> bool {
    names.is_empty() || names.iter().any(|n| n == "*" || n == name)
}

fn reply_kind(nonce: &str, error: Option<&str>) -> ReplyKind {
    match (nonce.is_empty(), error) {
        (true, _) => ReplyKind::Subscribe,
        (false, None) => ReplyKind::Ack,
        (false, Some(_)) => ReplyKind::Nack,
    }
}

struct SotwStream {
    state: watch::Receiver<Arc<State>>,
    replies: mpsc::UnboundedSender<Reply>,
    tx: mpsc::Sender<Result<DiscoveryResponse, Status>>,
    node_id: String,
    /// Subscribed types and the names last requested.
    names: HashMap<String, Vec<String>>,
    /// The push each type was last sent at.
    sent: HashMap<String, u64>,
    /// Nonce to the push it carried.
    nonces: HashMap<String, u64>,
    next_nonce: u64,
}

impl SotwStream {
    async fn run(mut self, mut inbound: Streaming<DiscoveryRequest>) {
        loop {
            tokio::select! {
                req = inbound.message() => match req {
                    Ok(Some(req)) => {
                        if !self.on_request(req).await {
                            return;
                        }
                    }
                    _ => return,
                },
                changed = self.state.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let types: Vec<String> = self.names.keys().cloned().collect();
                    for type_url in SEND_ORDER.iter().map(|t| t.to_string()).filter(|t| types.contains(t)) {
                        if !self.send(&type_url, false).await {
                            return;
                        }
                    }
                }
            }
        }
    }

    /// Handles one request; false once the stream is gone.
    async fn on_request(&mut self, req: DiscoveryRequest) -> bool {
        if let Some(node) = &req.node {
            self.node_id = node.id.clone();
        }
        let error = req.error_detail.as_ref().map(|s| s.message.clone());
        let _ = self.replies.send(Reply {
            mode: AdsMode::Sotw,
            node_id: self.node_id.clone(),
            type_url: req.type_url.clone(),
            kind: reply_kind(&req.response_nonce, error.as_deref()),
            nonce: req.response_nonce.clone(),
            version_info: req.version_info.clone(),
            answers: self.nonces.get(&req.response_nonce).copied(),
            error,
            names: req.resource_names.clone(),
        });
        let changed = self.names.get(&req.type_url) != Some(&req.resource_names);
        self.names.insert(req.type_url.clone(), req.resource_names);
        if req.response_nonce.is_empty() || changed {
            return self.send(&req.type_url, true).await;
        }
        true
    }

    /// Sends the current set of `type_url` if it changed since last sent (or `always`).
    async fn send(&mut self, type_url: &str, always: bool) -> bool {
        let state = self.state.borrow_and_update().clone();
        let Some((type_version, resources)) = state.types.get(type_url) else { return true };
        if !always && self.sent.get(type_url) == Some(type_version) {
            return true;
        }
        let names = self.names.get(type_url).cloned().unwrap_or_default();
        self.next_nonce += 1;
        let nonce = self.next_nonce.to_string();
        self.nonces.insert(nonce.clone(), state.version);
        self.sent.insert(type_url.to_owned(), *type_version);
        let resp = DiscoveryResponse {
            version_info: type_version.to_string(),
            resources: resources
                .iter()
                .filter(|(n, _)| covers(&names, n))
                .map(|(_, r)| r.any.clone())
                .collect(),
            type_url: type_url.to_owned(),
            nonce,
            ..DiscoveryResponse::default()
        };
        self.tx.send(Ok(resp)).await.is_ok()
    }
}

#[derive(Debug, Default)]
struct DeltaSubscription {
    wildcard: bool,
    names: BTreeSet<String>,
    /// What the proxy has: name to version.
    sent: HashMap<String, String>,
}

impl DeltaSubscription {
    fn covers(&self, name: &str) -> bool {
        self.wildcard || self.names.contains(name)
    }
}

struct DeltaStream {
    state: watch::Receiver<Arc<State>>,
    replies: mpsc::UnboundedSender<Reply>,
    tx: mpsc::Sender<Result<DeltaDiscoveryResponse, Status>>,
    node_id: String,
    subscriptions: HashMap<String, DeltaSubscription>,
    nonces: HashMap<String, u64>,
    next_nonce: u64,
}

impl DeltaStream {
    async fn run(mut self, mut inbound: Streaming<DeltaDiscoveryRequest>) {
        loop {
            tokio::select! {
                req = inbound.message() => match req {
                    Ok(Some(req)) => {
                        if !self.on_request(req).await {
                            return;
                        }
                    }
                    _ => return,
                },
                changed = self.state.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let types: Vec<String> = self.subscriptions.keys().cloned().collect();
                    for type_url in SEND_ORDER.iter().map(|t| t.to_string()).filter(|t| types.contains(t)) {
                        if !self.send(&type_url).await {
                            return;
                        }
                    }
                }
            }
        }
    }

    async fn on_request(&mut self, req: DeltaDiscoveryRequest) -> bool {
        if let Some(node) = &req.node {
            self.node_id = node.id.clone();
        }
        let error = req.error_detail.as_ref().map(|s| s.message.clone());
        let _ = self.replies.send(Reply {
            mode: AdsMode::Delta,
            node_id: self.node_id.clone(),
            type_url: req.type_url.clone(),
            kind: reply_kind(&req.response_nonce, error.as_deref()),
            nonce: req.response_nonce.clone(),
            version_info: String::new(),
            answers: self.nonces.get(&req.response_nonce).copied(),
            error,
            names: req.resource_names_subscribe.clone(),
        });
        let first = !self.subscriptions.contains_key(&req.type_url);
        let sub = self.subscriptions.entry(req.type_url.clone()).or_default();
        if first {
            // The first request with nothing named is a (legacy) wildcard subscription.
            sub.wildcard = req.resource_names_subscribe.is_empty();
            sub.sent = req.initial_resource_versions.clone();
        }
        for name in &req.resource_names_subscribe {
            if name == "*" {
                sub.wildcard = true;
            } else {
                sub.names.insert(name.clone());
            }
        }
        for name in &req.resource_names_unsubscribe {
            if name == "*" {
                sub.wildcard = false;
            } else {
                sub.names.remove(name);
            }
            sub.sent.remove(name);
        }
        self.send(&req.type_url).await
    }

    /// Sends what the proxy lacks of `type_url`, and what it has that is gone.
    async fn send(&mut self, type_url: &str) -> bool {
        let state = self.state.borrow_and_update().clone();
        let Some(sub) = self.subscriptions.get_mut(type_url) else { return true };
        let empty = BTreeMap::new();
        let current = state.types.get(type_url).map_or(&empty, |(_, r)| r);
        let mut resources = Vec::new();
        for (name, r) in current {
            if !sub.covers(name) {
                continue;
            }
            let version = r.version.to_string();
            if sub.sent.get(name) != Some(&version) {
                sub.sent.insert(name.clone(), version.clone());
                resources.push(Resource {
                    name: name.clone(),
                    version,
                    resource: Some(r.any.clone()),
                    ..Resource::default()
                });
            }
        }
        let removed: Vec<String> =
            sub.sent.keys().filter(|n| !current.contains_key(*n) || !sub.covers(n)).cloned().collect();
        for name in &removed {
            sub.sent.remove(name);
        }
        if resources.is_empty() && removed.is_empty() {
            return true;
        }
        self.next_nonce += 1;
        let nonce = self.next_nonce.to_string();
        self.nonces.insert(nonce.clone(), state.version);
        let resp = DeltaDiscoveryResponse {
            system_version_info: state.version.to_string(),
            resources,
            type_url: type_url.to_owned(),
            removed_resources: removed,
            nonce,
            ..DeltaDiscoveryResponse::default()
        };
        self.tx.send(Ok(resp)).await.is_ok()
    }
}

/// Builders for the small, valid configs a test pushes: an HTTP listener using RDS over
/// ADS, a route configuration, an EDS cluster and its endpoints, as weft's control plane
/// makes them.
pub mod build {
    use std::net::SocketAddr;

    use weft_xds_protos::envoy::config::cluster::v3::{Cluster, cluster};
    use weft_xds_protos::envoy::config::core::v3::{
        Address, AggregatedConfigSource, ApiVersion, ConfigSource, SocketAddress, address,
        config_source::ConfigSourceSpecifier, socket_address,
    };
    use weft_xds_protos::envoy::config::endpoint::v3::{
        ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint,
    };
    use weft_xds_protos::envoy::config::listener::v3::{Filter, FilterChain, Listener, filter};
    use weft_xds_protos::envoy::config::route::v3::{
        Route, RouteAction, RouteConfiguration, RouteMatch, VirtualHost, route, route_action, route_match,
    };
    use weft_xds_protos::envoy::extensions::filters::http::router::v3::Router;
    use weft_xds_protos::envoy::extensions::filters::network::http_connection_manager::v3::{
        HttpConnectionManager, HttpFilter, Rds, http_connection_manager, http_filter,
    };
    use weft_xds_protos::google::protobuf::{Any, Duration};

    use super::any;

    /// The config source "over the same ADS stream".
    pub fn ads() -> ConfigSource {
        ConfigSource {
            resource_api_version: ApiVersion::V3 as i32,
            config_source_specifier: Some(ConfigSourceSpecifier::Ads(AggregatedConfigSource {})),
            ..Default::default()
        }
    }

    /// A socket address.
    pub fn socket(addr: SocketAddr) -> Address {
        Address {
            address: Some(address::Address::SocketAddress(SocketAddress {
                address: addr.ip().to_string(),
                port_specifier: Some(socket_address::PortSpecifier::PortValue(u32::from(addr.port()))),
                ..Default::default()
            })),
        }
    }

    /// The router, the last HTTP filter of every chain.
    pub fn router() -> HttpFilter {
        HttpFilter {
            name: "envoy.filters.http.router".into(),
            config_type: Some(http_filter::ConfigType::TypedConfig(any(&Router::default()))),
            ..Default::default()
        }
    }

    /// An HTTP filter whose config type no proxy knows: a listener with it must be NACKed.
    pub fn unknown_http_filter() -> HttpFilter {
        HttpFilter {
            name: "weft.test.unknown_filter".into(),
            config_type: Some(http_filter::ConfigType::TypedConfig(Any {
                type_url: "type.googleapis.com/weft.test.v1.UnknownFilter".into(),
                value: Vec::new(),
            })),
            ..Default::default()
        }
    }

    /// A listener at `addr` whose HTTP connection manager takes routes `route_name` over
    /// ADS and runs `http_filters` (the last should be [`router`]).
    pub fn http_listener(
        name: &str,
        addr: SocketAddr,
        route_name: &str,
        http_filters: Vec<HttpFilter>,
    ) -> Listener {
        let hcm = HttpConnectionManager {
            stat_prefix: name.into(),
            codec_type: http_connection_manager::CodecType::Auto as i32,
            route_specifier: Some(http_connection_manager::RouteSpecifier::Rds(Rds {
                config_source: Some(ads()),
                route_config_name: route_name.into(),
            })),
            http_filters,
            ..Default::default()
        };
        Listener {
            name: name.into(),
            address: Some(socket(addr)),
            filter_chains: vec![FilterChain {
                filters: vec![Filter {
                    name: "envoy.filters.network.http_connection_manager".into(),
                    config_type: Some(filter::ConfigType::TypedConfig(any(&hcm))),
                }],
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    /// A route configuration sending every request, whatever its authority, to `cluster`.
    pub fn route_all(name: &str, cluster: &str) -> RouteConfiguration {
        route_config(
            name,
            RouteMatch {
                path_specifier: Some(route_match::PathSpecifier::Prefix("/".into())),
                ..Default::default()
            },
            cluster,
        )
    }

    /// A route configuration with one route: requests that `m` matches go to `cluster`.
    pub fn route_config(name: &str, m: RouteMatch, cluster: &str) -> RouteConfiguration {
        RouteConfiguration {
            name: name.into(),
            virtual_hosts: vec![VirtualHost {
                name: "all".into(),
                domains: vec!["*".into()],
                routes: vec![Route {
                    r#match: Some(m),
                    action: Some(route::Action::Route(RouteAction {
                        cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(cluster.into())),
                        ..Default::default()
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    /// A round-robin cluster whose endpoints come over EDS (ADS).
    pub fn eds_cluster(name: &str) -> Cluster {
        Cluster {
            name: name.into(),
            connect_timeout: Some(Duration { seconds: 1, nanos: 0 }),
            lb_policy: cluster::LbPolicy::RoundRobin as i32,
            cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
                cluster::DiscoveryType::Eds as i32,
            )),
            eds_cluster_config: Some(cluster::EdsClusterConfig {
                eds_config: Some(ads()),
                service_name: String::new(),
            }),
            ..Default::default()
        }
    }

    /// The endpoints of cluster `name`.
    pub fn endpoints(name: &str, addrs: &[SocketAddr]) -> ClusterLoadAssignment {
        ClusterLoadAssignment {
            cluster_name: name.into(),
            endpoints: vec![LocalityLbEndpoints {
                lb_endpoints: addrs
                    .iter()
                    .map(|a| LbEndpoint {
                        host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
                            address: Some(socket(*a)),
                            ..Default::default()
                        })),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }
    }
}
