//! Snapshots: immutable, versioned, consistent sets of encoded resources.
//!
//! A [`Snapshot`] is built once per mesh state. Resources every proxy shares
//! (clusters, endpoints, per-namespace routes) are encoded once and handed out
//! as `Arc`s; each proxy's own listeners are built from the snapshot on demand.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

use prost::{Message, Name};
use weft_xds_protos::envoy::config::cluster::v3::Cluster;
use weft_xds_protos::envoy::config::endpoint::v3::ClusterLoadAssignment;
use weft_xds_protos::envoy::config::route::v3::RouteConfiguration;
use weft_xds_protos::google::protobuf::Any;
use weft_xds_protos::type_url;

use crate::model::{Key, MeshState};
use crate::translate::{
    self, ConsistencyError, InboundEntry, InboundIndex, MeshOptions, OutboundHosts, ProxyNode,
    SharedResources, SplitTable, names,
};
use plan::Plan;

mod plan;
mod resources;

pub use resources::{Iter, TypeResources};

/// The resource types weft serves, in make-before-break order: secrets, then
/// clusters and endpoints, before the listeners and routes that use them.
pub const TYPE_ORDER: [&str; 5] =
    [type_url::SECRET, type_url::CLUSTER, type_url::ENDPOINT, type_url::LISTENER, type_url::ROUTE];

/// The order removals go out in: what refers to a resource goes before it.
pub const REMOVAL_ORDER: [&str; 5] =
    [type_url::LISTENER, type_url::ROUTE, type_url::CLUSTER, type_url::ENDPOINT, type_url::SECRET];

/// One resource, encoded once.
#[derive(Debug, PartialEq)]
pub struct Encoded {
    /// The resource name.
    pub name: String,
    /// A hash of the encoded bytes: equal versions mean equal resources.
    pub version: String,
    /// The resource as an `Any`.
    pub any: Any,
}

impl Encoded {
    /// Encodes a resource.
    pub fn new<M: Message + Name>(name: impl Into<String>, msg: &M) -> Arc<Self> {
        Self::from_bytes(name, M::type_url(), msg.encode_to_vec())
    }

    /// A resource already encoded (e.g. deterministically, maps in key order).
    pub fn from_bytes(name: impl Into<String>, type_url: String, value: Vec<u8>) -> Arc<Self> {
        Arc::new(Encoded { name: name.into(), version: hash_hex(&value), any: Any { type_url, value } })
    }
}

/// A stable hex hash of some bytes (FNV-1a 64: stable across builds and runs).
pub fn hash_hex(bytes: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// What one proxy should have, per type URL.
#[derive(Debug, Default, Clone)]
pub struct ProxyView {
    /// Resources by type URL.
    pub by_type: BTreeMap<&'static str, TypeResources>,
    /// The proxy's own resources, kept for its next view.
    own: Option<Arc<OwnResources>>,
}

impl ProxyView {
    /// The resources of one type (empty if none).
    pub fn get(&self, type_url: &str) -> Option<&TypeResources> {
        self.by_type.get(type_url)
    }
}

/// An immutable, consistent, versioned view of the mesh.
#[derive(Debug)]
pub struct Snapshot {
    /// Increases by one with every published snapshot.
    pub version: u64,
    /// When it was built (for push latency).
    pub built: Instant,
    /// The model it was built from.
    pub state: Arc<MeshState>,
    /// Shared clusters.
    pub clusters: TypeResources,
    /// Shared ClusterLoadAssignments.
    pub endpoints: TypeResources,
    /// The outbound RouteConfiguration per client namespace.
    pub routes: BTreeMap<String, Arc<Encoded>>,
    /// The outbound RouteConfiguration of a namespace with no objects.
    pub routes_elsewhere: Arc<Encoded>,
    /// TrafficSplit decisions and statuses.
    pub splits: SplitTable,
    /// The mesh-wide options it was translated with.
    pub options: Arc<MeshOptions>,
    /// Which service ports each pod IP serves (for each proxy's inbound side).
    pub inbound: Arc<InboundIndex>,
    /// Changes when anything a proxy's own listeners and clusters are made from may have
    /// changed, other than which service ports its pod IP serves: a proxy whose view was
    /// made at the same epoch, serving the same ports, keeps its own resources.
    pub proxy_epoch: u64,
}

impl Snapshot {
    /// Translates and encodes a mesh state; refuses an inconsistent result.
    pub fn build(
        version: u64,
        state: Arc<MeshState>,
        options: Arc<MeshOptions>,
    ) -> Result<Self, ConsistencyError> {
        Self::build_after(version, state, options, &Snapshot::empty())
    }

    /// [`build`](Self::build), reusing `prev`'s encoded resources where the new bytes are
    /// the same: an unchanged resource is the very same `Arc`, and each shared map records
    /// which names changed since `prev`'s, so streams compare only those.
    pub fn build_after(
        version: u64,
        state: Arc<MeshState>,
        options: Arc<MeshOptions>,
        prev: &Snapshot,
    ) -> Result<Self, ConsistencyError> {
        let plan = if prev.version == 0 || prev.options != options {
            Plan::Everything
        } else {
            plan::plan(&prev.state, &state)
        };
        match plan {
            Plan::Everything => Self::build_all(version, state, options, prev),
            Plan::Services { dirty, routes, proxies } => {
                Self::build_some(version, state, options, prev, &dirty, routes, proxies)
            }
        }
    }

    /// Translates only the services in `dirty` (and the routes when `routes`), taking
    /// everything else from `prev`: what [`build_all`](Self::build_all) would make. Proxies
    /// keep their own resources unless `proxies` or the split table changed.
    fn build_some(
        version: u64,
        state: Arc<MeshState>,
        options: Arc<MeshOptions>,
        prev: &Snapshot,
        dirty: &BTreeSet<Key>,
        routes: bool,
        proxies: bool,
    ) -> Result<Self, ConsistencyError> {
        let splits = SplitTable::build(&state);
        // A changed split status (a backend gained or lost endpoints) changes listeners.
        let proxy_epoch =
            if proxies || splits != prev.splits { prev.proxy_epoch + 1 } else { prev.proxy_epoch };
        let mut clusters: BTreeMap<String, Arc<Encoded>> =
            prev.clusters.iter().map(|(n, r)| (n.clone(), r.clone())).collect();
        let mut endpoints: BTreeMap<String, Arc<Encoded>> =
            prev.endpoints.iter().map(|(n, r)| (n.clone(), r.clone())).collect();
        for key in dirty {
            for port in prev.state.services.get(key).iter().flat_map(|svc| &svc.ports) {
                let name = names::outbound_cluster(key, port.port);
                clusters.remove(&name);
                endpoints.remove(&name);
            }
            let Some(svc) = state.services.get(key) else { continue };
            for (name, c, cla) in translate::translate_service(&state, svc, &options) {
                let bytes = c.encode_to_vec();
                clusters
                    .insert(name.clone(), reuse(prev.clusters.get(&name), &name, Cluster::type_url(), bytes));
                let bytes = translate::encode_load_assignment(&cla);
                let cla = reuse(prev.endpoints.get(&name), &name, ClusterLoadAssignment::type_url(), bytes);
                endpoints.insert(name, cla);
            }
        }
        let namespaces = translate::namespaces(&state);
        let (routes, routes_elsewhere) = if routes || !namespaces.iter().eq(prev.routes.keys()) {
            let hosts = OutboundHosts::build(&state, &splits);
            translate::check_routes(&hosts, |c| clusters.contains_key(c))?;
            Self::encode_routes(&hosts, &namespaces, prev)
        } else {
            (prev.routes.clone(), prev.routes_elsewhere.clone())
        };
        Ok(Snapshot {
            version,
            built: Instant::now(),
            inbound: Arc::new(InboundIndex::rebuild(&prev.inbound, &state, &options, dirty)),
            state,
            clusters: TypeResources::shared_after(clusters, &prev.clusters),
            endpoints: TypeResources::shared_after(endpoints, &prev.endpoints),
            routes,
            routes_elsewhere,
            splits,
            options,
            proxy_epoch,
        })
    }

    /// Each namespace's outbound RouteConfiguration, and that of a namespace with no
    /// objects (no service of its own: no short names); `prev`'s where the bytes are equal.
    fn encode_routes(
        hosts: &OutboundHosts,
        namespaces: &BTreeSet<String>,
        prev: &Snapshot,
    ) -> (BTreeMap<String, Arc<Encoded>>, Arc<Encoded>) {
        let route = |ns: &str, prev: Option<&Arc<Encoded>>| {
            reuse(prev, names::OUTBOUND, RouteConfiguration::type_url(), hosts.encode_for_namespace(ns))
        };
        let routes = namespaces.iter().map(|ns| (ns.clone(), route(ns, prev.routes.get(ns)))).collect();
        (routes, route("", Some(&prev.routes_elsewhere)))
    }

    /// Translates and encodes the whole mesh state.
    fn build_all(
        version: u64,
        state: Arc<MeshState>,
        options: Arc<MeshOptions>,
        prev: &Snapshot,
    ) -> Result<Self, ConsistencyError> {
        let mesh: SharedResources = translate::translate_shared(&state, &options);
        translate::check_shared_consistency(&mesh)?;
        let clusters = encode_after(
            &prev.clusters,
            mesh.clusters.iter().map(|(n, c)| (n, Cluster::type_url(), c.encode_to_vec())),
        );
        // Endpoint metadata holds protobuf maps: encoded in key order for stable versions.
        let endpoints = encode_after(
            &prev.endpoints,
            mesh.endpoints.iter().map(|(n, cla)| {
                (n, ClusterLoadAssignment::type_url(), translate::encode_load_assignment(cla))
            }),
        );
        let inbound = Arc::new(InboundIndex::build(&state, &options));
        let (routes, routes_elsewhere) = Self::encode_routes(&mesh.outbound, &mesh.namespaces, prev);
        Ok(Snapshot {
            version,
            built: Instant::now(),
            state,
            clusters,
            endpoints,
            routes,
            routes_elsewhere,
            splits: mesh.splits,
            options,
            inbound,
            proxy_epoch: prev.proxy_epoch + 1,
        })
    }

    /// An empty snapshot, version 0.
    pub fn empty() -> Self {
        Snapshot {
            version: 0,
            built: Instant::now(),
            state: Arc::default(),
            clusters: TypeResources::new(),
            endpoints: TypeResources::new(),
            routes: BTreeMap::new(),
            routes_elsewhere: Encoded::from_bytes(
                names::OUTBOUND,
                RouteConfiguration::type_url(),
                Vec::new(),
            ),
            splits: SplitTable::default(),
            options: Arc::default(),
            inbound: Arc::default(),
            proxy_epoch: 0,
        }
    }

    /// Everything one proxy should have: the shared resources plus its own
    /// listeners and inbound clusters.
    pub fn for_proxy(&self, node: &ProxyNode) -> ProxyView {
        self.for_proxy_after(node, None)
    }

    /// [`for_proxy`](Self::for_proxy), keeping the proxy's own listeners and clusters from
    /// `prev` (its view of an earlier snapshot) when nothing they are made from changed:
    /// one endpoint change then translates no proxy.
    pub fn for_proxy_after(&self, node: &ProxyNode, prev: Option<&ProxyView>) -> ProxyView {
        let entries = self.inbound.get(node.pod_ip);
        let own = match prev.and_then(|p| p.own.as_ref()) {
            Some(own) if own.epoch == self.proxy_epoch && own.inbound == entries => own.clone(),
            _ => Arc::new(self.translate_own(node, entries)),
        };
        let mut clusters = self.clusters.clone();
        for (name, c) in &own.clusters {
            clusters.insert(name.clone(), c.clone());
        }
        let mut routes = TypeResources::new();
        // A namespace with no objects still gets the (cross-namespace) routes.
        let rc = self.routes.get(&node.namespace).unwrap_or(&self.routes_elsewhere);
        routes.insert(rc.name.clone(), rc.clone());
        let mut by_type = BTreeMap::new();
        by_type.insert(type_url::CLUSTER, clusters);
        by_type.insert(type_url::ENDPOINT, self.endpoints.clone());
        by_type.insert(type_url::LISTENER, own.listeners.clone());
        by_type.insert(type_url::ROUTE, routes);
        by_type.insert(type_url::SECRET, TypeResources::new());
        ProxyView { by_type, own: Some(own) }
    }

    fn translate_own(&self, node: &ProxyNode, entries: &[InboundEntry]) -> OwnResources {
        let own =
            translate::translate_proxy_indexed(&self.state, &self.splits, &self.inbound, node, &self.options);
        OwnResources {
            epoch: self.proxy_epoch,
            inbound: entries.to_vec(),
            clusters: own
                .clusters
                .iter()
                .map(|c| (c.name.clone(), Encoded::new(c.name.clone(), c)))
                .collect(),
            listeners: own
                .listeners
                .iter()
                .map(|l| (l.name.clone(), Encoded::new(l.name.clone(), l)))
                .collect(),
        }
    }
}

/// A proxy's own resources, and what they were made from.
#[derive(Debug)]
struct OwnResources {
    /// The [`Snapshot::proxy_epoch`] they were made at.
    epoch: u64,
    /// The service ports the proxy's pod IP served then.
    inbound: Vec<InboundEntry>,
    clusters: Vec<(String, Arc<Encoded>)>,
    listeners: TypeResources,
}

/// A shared map of encoded resources, each the previous map's `Arc` when its bytes are the
/// same, recording which names changed since `prev`.
fn encode_after<'a>(
    prev: &TypeResources,
    resources: impl Iterator<Item = (&'a String, String, Vec<u8>)>,
) -> TypeResources {
    let map = resources
        .map(|(name, type_url, bytes)| (name.clone(), reuse(prev.get(name), name, type_url, bytes)))
        .collect();
    TypeResources::shared_after(map, prev)
}

/// `prev` when it holds exactly `bytes`, else a new resource.
fn reuse(prev: Option<&Arc<Encoded>>, name: &str, type_url: String, bytes: Vec<u8>) -> Arc<Encoded> {
    match prev {
        Some(p) if p.any.value == bytes => p.clone(),
        _ => Encoded::from_bytes(name, type_url, bytes),
    }
}

/// A version string for a set of resources: a hash of their names and versions.
pub fn set_version<'a>(resources: impl Iterator<Item = &'a Arc<Encoded>>) -> String {
    let mut buf = Vec::new();
    for r in resources {
        buf.extend_from_slice(r.name.as_bytes());
        buf.push(0);
        buf.extend_from_slice(r.version.as_bytes());
        buf.push(0);
    }
    hash_hex(&buf)
}

#[cfg(test)]
mod tests;
