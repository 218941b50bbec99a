//! ClusterLoadAssignments: where each service port's ready endpoints are dialled.

use std::collections::BTreeSet;
use std::net::IpAddr;

use weft_xds_protos::envoy::config::core::v3::{Address, Metadata, SocketAddress, address, socket_address};
use weft_xds_protos::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint,
};
use weft_xds_protos::google::protobuf::{Struct, Value, value};

use weft_xds_protos::spiffe::SpiffeId;

use super::INBOUND_PORT;
use crate::model::{MeshState, Protocol, Service, ServicePort, resolve_endpoints};

/// The trust domain of SPIFFE identities.
pub(crate) const TRUST_DOMAIN: &str = "cluster.local";

/// A socket address.
pub(crate) fn socket(ip: IpAddr, port: u16) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: ip.to_string(),
            port_specifier: Some(socket_address::PortSpecifier::PortValue(u32::from(port))),
            ..Default::default()
        })),
    }
}

fn lb_endpoint(ip: IpAddr, port: u16, metadata: Option<Metadata>) -> LbEndpoint {
    LbEndpoint {
        host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
            address: Some(socket(ip, port)),
            ..Default::default()
        })),
        metadata,
        ..Default::default()
    }
}

/// A service port's endpoints: a meshed pod is dialled at its proxy's inbound
/// port, an unmeshed one at `podIP:targetPort`. Meshed endpoints carry the
/// SPIFFE identity the client should expect in `filter_metadata["weft"]`.
pub(crate) fn load_assignment(
    state: &MeshState,
    svc: &Service,
    port: &ServicePort,
    cluster_name: &str,
) -> ClusterLoadAssignment {
    let mut seen = BTreeSet::new();
    let mut lb_endpoints = Vec::new();
    for ep in resolve_endpoints(state, svc, port) {
        // Opaque TCP reaches the app directly until the inbound side can tell
        // its port (by TLS SNI, with mTLS); HTTP goes through the peer proxy.
        let via_proxy = ep.meshed && port.protocol == Protocol::Http;
        let dial_port = if via_proxy { INBOUND_PORT } else { ep.port };
        if !seen.insert((ep.ip, dial_port)) {
            continue;
        }
        let namespace = ep.pod.as_ref().map_or(svc.key.namespace.as_str(), |p| p.namespace.as_str());
        let identity = ep
            .service_account
            .as_ref()
            .filter(|_| via_proxy)
            .and_then(|sa| SpiffeId::new(TRUST_DOMAIN, namespace, sa.as_str()).ok());
        let metadata = identity.map(|identity| {
            let identity = identity.to_string();
            let mut fields = std::collections::BTreeMap::new();
            fields.insert("identity".to_string(), Value { kind: Some(value::Kind::StringValue(identity)) });
            let mut md = Metadata::default();
            md.filter_metadata.insert("weft".into(), Struct { fields: fields.into_iter().collect() });
            md
        });
        lb_endpoints.push(lb_endpoint(ep.ip, dial_port, metadata));
    }
    ClusterLoadAssignment {
        cluster_name: cluster_name.to_string(),
        endpoints: vec![LocalityLbEndpoints { lb_endpoints, ..Default::default() }],
        ..Default::default()
    }
}

/// A one-endpoint assignment for a static cluster.
pub(crate) fn static_assignment(cluster_name: &str, ip: IpAddr, port: u16) -> ClusterLoadAssignment {
    ClusterLoadAssignment {
        cluster_name: cluster_name.to_string(),
        endpoints: vec![LocalityLbEndpoints {
            lb_endpoints: vec![lb_endpoint(ip, port, None)],
            ..Default::default()
        }],
        ..Default::default()
    }
}
