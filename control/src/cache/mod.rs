//! Snapshots: immutable, versioned, consistent sets of encoded resources.
//!
//! A [`Snapshot`] is built once per mesh state. Resources every proxy shares
//! (clusters, endpoints, per-namespace routes) are encoded once and handed out
//! as `Arc`s; each proxy's own listeners are built from the snapshot on demand.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use prost::{Message, Name};
use weft_xds_protos::envoy::config::endpoint::v3::ClusterLoadAssignment;
use weft_xds_protos::google::protobuf::Any;
use weft_xds_protos::type_url;

use crate::model::MeshState;
use crate::translate::{
    self, ConsistencyError, InboundIndex, MeshOptions, MeshResources, ProxyNode, SplitTable,
};

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
    /// TrafficSplit decisions and statuses.
    pub splits: SplitTable,
    /// The mesh-wide options it was translated with.
    pub options: Arc<MeshOptions>,
    /// Which service ports each pod IP serves (for each proxy's inbound side).
    pub inbound: Arc<InboundIndex>,
}

impl Snapshot {
    /// Translates and encodes a mesh state; refuses an inconsistent result.
    pub fn build(
        version: u64,
        state: Arc<MeshState>,
        options: Arc<MeshOptions>,
    ) -> Result<Self, ConsistencyError> {
        let mesh: MeshResources = translate::translate_mesh(&state, &options);
        translate::check_consistency(&mesh)?;
        let clusters = TypeResources::shared(encode_all(&mesh.clusters));
        // Endpoint metadata holds protobuf maps: encoded in key order for stable versions.
        let endpoints = TypeResources::shared(
            mesh.endpoints
                .iter()
                .map(|(n, cla)| {
                    let bytes = translate::encode_load_assignment(cla);
                    (n.clone(), Encoded::from_bytes(n.clone(), ClusterLoadAssignment::type_url(), bytes))
                })
                .collect(),
        );
        let inbound = Arc::new(InboundIndex::build(&state, &options));
        let routes = mesh
            .outbound_routes
            .iter()
            .map(|(ns, rc)| (ns.clone(), Encoded::new(rc.name.clone(), rc)))
            .collect();
        Ok(Snapshot {
            version,
            built: Instant::now(),
            state,
            clusters,
            endpoints,
            routes,
            splits: mesh.splits,
            options,
            inbound,
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
            splits: SplitTable::default(),
            options: Arc::default(),
            inbound: Arc::default(),
        }
    }

    /// Everything one proxy should have: the shared resources plus its own
    /// listeners and inbound clusters.
    pub fn for_proxy(&self, node: &ProxyNode) -> ProxyView {
        let own =
            translate::translate_proxy_indexed(&self.state, &self.splits, &self.inbound, node, &self.options);
        let mut clusters = self.clusters.clone();
        for c in &own.clusters {
            clusters.insert(c.name.clone(), Encoded::new(c.name.clone(), c));
        }
        let listeners =
            own.listeners.iter().map(|l| (l.name.clone(), Encoded::new(l.name.clone(), l))).collect();
        let mut routes = TypeResources::new();
        if let Some(rc) = self.routes.get(&node.namespace) {
            routes.insert(rc.name.clone(), rc.clone());
        } else {
            // A namespace with no objects still gets the (cross-namespace) routes.
            let rc = translate::outbound_routes_for(&self.state, &self.splits, &node.namespace);
            routes.insert(rc.name.clone(), Encoded::new(rc.name.clone(), &rc));
        }
        let mut by_type = BTreeMap::new();
        by_type.insert(type_url::CLUSTER, clusters);
        by_type.insert(type_url::ENDPOINT, self.endpoints.clone());
        by_type.insert(type_url::LISTENER, listeners);
        by_type.insert(type_url::ROUTE, routes);
        by_type.insert(type_url::SECRET, TypeResources::new());
        ProxyView { by_type }
    }
}

fn encode_all<M: Message + Name>(m: &BTreeMap<String, M>) -> BTreeMap<String, Arc<Encoded>> {
    m.iter().map(|(n, r)| (n.clone(), Encoded::new(n.clone(), r))).collect()
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
