//! Which service ports each pod IP serves, built once per mesh state: translating one
//! proxy then looks its pod IP up instead of resolving every service's endpoints again
//! (with 10,000 services that search dominated every proxy's translation).

use std::collections::HashMap;
use std::net::IpAddr;

use super::MeshOptions;
use crate::model::{Key, MeshState, Protocol, resolve_endpoints};

/// A service port a pod serves: the service, the port's index in its `ports`, and the
/// pod's target port.
pub(crate) type InboundEntry = (Key, usize, u16);

/// The service ports each pod IP serves, in service then port order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InboundIndex {
    by_ip: HashMap<IpAddr, Vec<InboundEntry>>,
}

impl InboundIndex {
    /// Resolves every service port's endpoints once. With mTLS every port counts (opaque
    /// TCP included, told apart by SNI); without it, HTTP ports only.
    pub fn build(state: &MeshState, opts: &MeshOptions) -> InboundIndex {
        let mut by_ip: HashMap<IpAddr, Vec<InboundEntry>> = HashMap::new();
        for svc in state.services.values() {
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
                    by_ip.entry(ep.ip).or_default().push((svc.key.clone(), i, ep.port));
                }
            }
        }
        InboundIndex { by_ip }
    }

    /// The service ports served at `ip`.
    pub(crate) fn get(&self, ip: IpAddr) -> &[InboundEntry] {
        self.by_ip.get(&ip).map_or(&[], Vec::as_slice)
    }
}
