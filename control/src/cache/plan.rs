//! What a new mesh state changes, as the shared resources depend on it: which services'
//! clusters and assignments must be translated again, and whether the outbound routes
//! must be rebuilt. One changed endpoint then costs one service's translation, not the
//! mesh's.

use std::collections::{BTreeMap, BTreeSet};

use crate::model::{Key, MeshState, Pod, in_namespace};

/// What to rebuild for a new state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Plan {
    /// Everything (the first snapshot, new options, a namespace changed).
    Everything,
    /// Only these services' clusters, assignments and inbound entries; routes too when
    /// `routes` (a service, split or route object changed, or a split's backend did).
    /// `proxies`: what each proxy's own listeners are made from may have changed too (the
    /// routes' inputs, a pod, a TrafficTarget); otherwise only their inbound entries can.
    Services { dirty: BTreeSet<Key>, routes: bool, proxies: bool },
}

/// Beyond this many changed pods, finding their services costs more than translating all.
const MAX_CHANGED_PODS: usize = 256;

/// Compares two states. Services are compared in full; what refers to a service (its
/// EndpointSlices, the pods those name or its selector picks) marks it dirty.
pub(super) fn plan(prev: &MeshState, next: &MeshState) -> Plan {
    if prev.namespaces != next.namespaces {
        return Plan::Everything;
    }
    let mut dirty = BTreeSet::new();
    let mut routes = prev.traffic_splits != next.traffic_splits
        || prev.http_route_groups != next.http_route_groups
        || prev.tcp_routes != next.tcp_routes
        || prev.split_first_seen != next.split_first_seen;
    for key in changed(&prev.services, &next.services) {
        routes = true;
        dirty.insert(key.clone());
    }
    for key in changed(&prev.endpoint_slices, &next.endpoint_slices) {
        for slice in [prev.endpoint_slices.get(key), next.endpoint_slices.get(key)].into_iter().flatten() {
            dirty.insert(Key::new(&slice.key.namespace, &slice.service));
        }
    }
    let pods = changed(&prev.pods, &next.pods);
    if pods.len() > MAX_CHANGED_PODS {
        return Plan::Everything;
    }
    let mut proxies = !pods.is_empty() || prev.traffic_targets != next.traffic_targets;
    for key in pods {
        for state in [prev, next] {
            dirty.extend(services_of_pod(state, key, state.pods.get(key)));
        }
    }
    // A split leaves out backends without endpoints: theirs is a route change.
    routes |= [prev, next].iter().any(|state| {
        state.traffic_splits.values().any(|s| {
            let named = |name: &str| dirty.contains(&Key::new(&s.key.namespace, name));
            named(&s.root_service) || s.backends.iter().any(|b| named(&b.service))
        })
    });
    proxies |= routes;
    Plan::Services { dirty, routes, proxies }
}

/// Keys whose values differ, or that only one map has, in key order.
fn changed<'a, V: PartialEq>(a: &'a BTreeMap<Key, V>, b: &'a BTreeMap<Key, V>) -> Vec<&'a Key> {
    let mut out = Vec::new();
    let mut theirs = b.iter().peekable();
    for (k, v) in a {
        while let Some((only_b, _)) = theirs.next_if(|(kb, _)| *kb < k) {
            out.push(only_b);
        }
        match theirs.next_if(|(kb, _)| *kb == k) {
            Some((_, vb)) if vb == v => {}
            _ => out.push(k),
        }
    }
    out.extend(theirs.map(|(k, _)| k));
    out
}

/// The services of a pod's namespace whose endpoints may include it: a slice names it,
/// or the selector picks it (`pod` as that state has it, if at all).
fn services_of_pod(state: &MeshState, key: &Key, pod: Option<&Pod>) -> Vec<Key> {
    let mut out = Vec::new();
    for slice in in_namespace(&state.endpoint_slices, &key.namespace) {
        if slice.endpoints.iter().any(|e| e.pod.as_deref() == Some(key.name.as_str())) {
            out.push(Key::new(&key.namespace, &slice.service));
        }
    }
    if let Some(pod) = pod {
        for svc in in_namespace(&state.services, &key.namespace) {
            if !svc.selector.is_empty() && svc.selector.iter().all(|(k, v)| pod.labels.get(k) == Some(v)) {
                out.push(svc.key.clone());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::model::{Backend, EndpointSlice, Namespace, SliceEndpoint, TrafficSplit};

    fn slice(name: &str, service: &str, ip: &str, pod: Option<&str>) -> EndpointSlice {
        EndpointSlice {
            key: Key::new("ns", name),
            service: service.into(),
            ports: vec![],
            endpoints: vec![SliceEndpoint {
                addresses: vec![ip.parse().unwrap()],
                ready: true,
                pod: pod.map(str::to_string),
            }],
        }
    }

    fn state() -> MeshState {
        let mut s = MeshState::default();
        for (name, service, ip) in
            [("a-1", "a", "10.0.0.1"), ("b-1", "b", "10.0.0.2"), ("c-1", "c", "10.0.0.3")]
        {
            s.endpoint_slices.insert(Key::new("ns", name), slice(name, service, ip, Some(name)));
        }
        s
    }

    #[test]
    fn an_endpoint_change_dirties_its_service_only() {
        let prev = state();
        let mut next = prev.clone();
        next.endpoint_slices.insert(Key::new("ns", "b-1"), slice("b-1", "b", "10.0.0.9", Some("b-1")));
        let want = Plan::Services { dirty: [Key::new("ns", "b")].into(), routes: false, proxies: false };
        assert_eq!(plan(&prev, &next), want);
        // A slice moved to another service dirties both.
        next.endpoint_slices.insert(Key::new("ns", "b-1"), slice("b-1", "c", "10.0.0.2", Some("b-1")));
        let Plan::Services { dirty, .. } = plan(&prev, &next) else { panic!("not partial") };
        assert_eq!(dirty, [Key::new("ns", "b"), Key::new("ns", "c")].into());
        assert_eq!(
            plan(&prev, &prev),
            Plan::Services { dirty: BTreeSet::new(), routes: false, proxies: false }
        );
    }

    #[test]
    fn a_split_backend_losing_endpoints_rebuilds_routes_and_a_namespace_everything() {
        let mut prev = state();
        prev.traffic_splits.insert(
            Key::new("ns", "s"),
            TrafficSplit {
                key: Key::new("ns", "s"),
                api_version: "split.smi-spec.io/v1alpha4".into(),
                created: None,
                root_service: "a".into(),
                backends: vec![Backend { service: "c".into(), weight_milli: 1000 }],
                matches: vec![],
            },
        );
        let mut next = prev.clone();
        next.endpoint_slices.remove(&Key::new("ns", "c-1"));
        assert_eq!(
            plan(&prev, &next),
            Plan::Services { dirty: [Key::new("ns", "c")].into(), routes: true, proxies: true }
        );
        next.namespaces.insert("ns".into(), Namespace { name: "ns".into(), inject: Some(true) });
        assert_eq!(plan(&prev, &next), Plan::Everything);
    }
}
