//! Assembling a [`MeshState`] from parsed objects: shared by the manifest directory and the
//! Kubernetes source, which differ only in how they order TrafficSplits seen for the first
//! time (file order, creation time).

use std::collections::BTreeMap;

use super::manifest::Object;
use crate::model::{Key, MeshState};

/// Numbers TrafficSplits the first time each is seen, across loads: the split table's
/// tie-break between splits of the same root (the oldest wins).
#[derive(Debug, Default)]
pub(crate) struct SplitOrder {
    seq: BTreeMap<Key, u64>,
    next: u64,
}

impl SplitOrder {
    /// The state of `objects`; the TrafficSplits new in it are numbered in the order of
    /// `first_seen` (smallest first), after every split seen before.
    pub(crate) fn state_of<O: Ord>(
        &mut self,
        objects: impl IntoIterator<Item = Object>,
        first_seen: impl Fn(&Key) -> O,
    ) -> MeshState {
        let mut state = MeshState::default();
        for object in objects {
            match object {
                Object::Namespace(o) => {
                    state.namespaces.insert(o.name.clone(), o);
                }
                Object::Service(o) => {
                    state.services.insert(o.key.clone(), o);
                }
                Object::Pod(o) => {
                    state.pods.insert(o.key.clone(), o);
                }
                Object::EndpointSlice(o) => {
                    state.endpoint_slices.insert(o.key.clone(), o);
                }
                Object::TrafficSplit(o) => {
                    state.traffic_splits.insert(o.key.clone(), o);
                }
                Object::HttpRouteGroup(o) => {
                    state.http_route_groups.insert(o.key.clone(), o);
                }
                Object::TcpRoute(o) => {
                    state.tcp_routes.insert(o.key.clone(), o);
                }
                Object::TrafficTarget(o) => {
                    state.traffic_targets.insert(o.key.clone(), o);
                }
            }
        }
        self.seq.retain(|key, _| state.traffic_splits.contains_key(key));
        let mut new: Vec<&Key> = state.traffic_splits.keys().filter(|k| !self.seq.contains_key(*k)).collect();
        new.sort_by_cached_key(|k| first_seen(k));
        for key in new {
            self.seq.insert(key.clone(), self.next);
            self.next += 1;
        }
        state.split_first_seen = self.seq.clone();
        state
    }
}
