//! What the state holds, as the admin server shows it: per type, each
//! resource's active and warming versions and its last rejection.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use weft_xds_protos::google::protobuf::Any;

use super::{Entry, State};
use crate::xds::ResourceType;

/// A rejection: the version refused and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nack {
    /// The version refused (SotW: the response's `version_info`; Delta: the resource's version).
    pub version: String,
    /// The `error_detail` sent, or this resource's line of it.
    pub detail: String,
    /// When.
    pub at: SystemTime,
}

/// One version of a resource the proxy holds.
#[derive(Debug, Clone)]
pub struct Held {
    /// Its version.
    pub version: String,
    /// When it arrived.
    pub last_updated: SystemTime,
    /// The resource as received.
    pub resource: Arc<Any>,
}

/// One resource as the proxy holds it, for `/config_dump`.
#[derive(Debug, Clone)]
pub struct ResourceStatus {
    /// Resource name.
    pub name: String,
    /// The version serving.
    pub active: Option<Held>,
    /// A newer version accepted but waiting for the route table or endpoints
    /// it refers to (listeners and clusters only).
    pub warming: Option<Held>,
    /// The last rejected version, if the resource was rejected since it was last accepted.
    pub rejected: Option<Nack>,
}

/// One resource type as the proxy holds it.
#[derive(Debug, Clone, Default)]
pub struct TypeStatus {
    /// The version of the last response (SotW `version_info`, Delta `system_version_info`).
    pub system_version: String,
    /// The names subscribed (`*` for every resource).
    pub subscribed: Vec<String>,
    /// Resources, by name.
    pub resources: Vec<ResourceStatus>,
    /// Responses accepted.
    pub acks: u64,
    /// Responses rejected, wholly or in part.
    pub nacks: u64,
    /// The last rejection.
    pub last_nack: Option<Nack>,
}

/// What the xDS client holds and whether the proxy is ready.
#[derive(Debug, Clone, Default)]
pub struct Status {
    /// The first full config has been applied (LDS and CDS, and every route
    /// table and assignment they refer to, or their initial fetch timed out).
    pub ready: bool,
    /// The ADS stream is up.
    pub connected: bool,
    /// Per type.
    pub types: BTreeMap<ResourceType, TypeStatus>,
}

impl State {
    /// What the state holds, for the admin server.
    pub(crate) fn status(&self, connected: bool) -> Status {
        let mut types = self.types.clone();
        for kind in ResourceType::ALL {
            let ts = types.entry(kind).or_default();
            if kind.is_wildcard() {
                ts.subscribed = vec!["*".into()];
            }
            let held = |e: &Entry| Held {
                version: e.version.clone(),
                last_updated: e.updated,
                resource: e.raw.clone(),
            };
            let blank = |name: &String| ResourceStatus {
                name: name.clone(),
                active: None,
                warming: None,
                rejected: None,
            };
            let mut resources: BTreeMap<String, ResourceStatus> = BTreeMap::new();
            let active = if kind.is_wildcard() { self.serving.get(&kind) } else { self.stores.get(&kind) };
            for (name, e) in active.into_iter().flatten() {
                resources.entry(name.clone()).or_insert_with(|| blank(name)).active = Some(held(e));
            }
            if kind.is_wildcard() {
                for (name, e) in self.stores.get(&kind).into_iter().flatten() {
                    let status = resources.entry(name.clone()).or_insert_with(|| blank(name));
                    if status.active.as_ref().is_none_or(|a| !Arc::ptr_eq(&a.resource, &e.raw)) {
                        status.warming = Some(held(e));
                    }
                }
            }
            for ((_, name), nack) in self.rejected.iter().filter(|((k, _), _)| *k == kind) {
                resources.entry(name.clone()).or_insert_with(|| blank(name)).rejected = Some(nack.clone());
            }
            ts.resources = resources.into_values().collect();
        }
        Status { ready: self.ready, connected, types }
    }
}
