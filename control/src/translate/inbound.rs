//! Which service ports each pod IP serves, built once per mesh state: translating one
//! proxy then looks its pod IP up instead of resolving every service's endpoints again
//! (with 10,000 services that search dominated every proxy's translation).

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;

use super::MeshOptions;
use crate::model::{Key, MeshState, Protocol, Service, resolve_endpoints};

/// A service port a pod serves: the service, the port's index in its `ports`, and the
/// pod's target port.
pub type InboundEntry = (Key, usize, u16);

/// The service ports each pod IP serves, in service then port order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InboundIndex {
    by_ip: HashMap<IpAddr, Vec<InboundEntry>>,
}

impl InboundIndex {
    /// Resolves every service port's endpoints once. With mTLS every port counts (opaque
    /// TCP included, told apart by SNI); without it, HTTP ports only.
    pub fn build(state: &MeshState, opts: &MeshOptions) -> InboundIndex {
        let mut index = InboundIndex::default();
        for svc in state.services.values() {
            index.add(state, svc, opts);
        }
        index
    }

    /// `prev` with the entries of the services in `dirty` made anew from `state`: the same
    /// index [`build`](Self::build) makes, resolving only those services' endpoints.
    pub fn rebuild(
        prev: &InboundIndex,
        state: &MeshState,
        opts: &MeshOptions,
        dirty: &BTreeSet<Key>,
    ) -> Self {
        let mut index = prev.clone();
        index.by_ip.retain(|_, entries| {
            entries.retain(|(k, _, _)| !dirty.contains(k));
            !entries.is_empty()
        });
        let mut touched = Vec::new();
        for svc in dirty.iter().filter_map(|k| state.services.get(k)) {
            touched.extend(index.add(state, svc, opts));
        }
        // Back in service then port order, as a full build has them.
        for ip in touched {
            if let Some(entries) = index.by_ip.get_mut(&ip) {
                entries.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
            }
        }
        index
    }

    /// Adds one service's entries; returns the IPs it added to.
    fn add(&mut self, state: &MeshState, svc: &Service, opts: &MeshOptions) -> Vec<IpAddr> {
        let mut added = Vec::new();
        for (i, port) in svc.ports.iter().enumerate() {
            if !(opts.mtls || port.protocol == Protocol::Http) {
                continue;
            }
            // Sorted by (ip, port): the first entry of an IP is the one a search finds first.
            let mut last: Option<IpAddr> = None;
            for ep in resolve_endpoints(state, svc, port) {
                if last == Some(ep.ip) {
                    continue;
                }
                last = Some(ep.ip);
                self.by_ip.entry(ep.ip).or_default().push((svc.key.clone(), i, ep.port));
                added.push(ep.ip);
            }
        }
        added
    }

    /// The service ports served at `ip`.
    pub fn get(&self, ip: IpAddr) -> &[InboundEntry] {
        self.by_ip.get(&ip).map_or(&[], Vec::as_slice)
    }
}
