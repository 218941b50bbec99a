//! ClusterLoadAssignments: where each service port's ready endpoints are dialled.

use std::collections::BTreeSet;
use std::net::IpAddr;

use prost::Message;
use weft_xds_protos::envoy::config::core::v3::{Address, Metadata, SocketAddress, address, socket_address};
use weft_xds_protos::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint,
};
use weft_xds_protos::google::protobuf::{Struct, Value, value};

use weft_xds_protos::spiffe::SpiffeId;

use super::{INBOUND_PORT, MeshOptions, names, tls};
use crate::model::{MeshState, Protocol, Service, ServicePort, resolve_endpoints};

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

/// A service port's endpoints, and who the client may expect at them.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Assignment {
    /// The ClusterLoadAssignment.
    pub(crate) cla: ClusterLoadAssignment,
    /// The distinct SPIFFE IDs of the endpoints dialled with mTLS (empty without mTLS).
    pub(crate) mtls_identities: BTreeSet<String>,
}

fn string_value(s: String) -> Value {
    Value { kind: Some(value::Kind::StringValue(s)) }
}

/// A service port's endpoints: a meshed pod is dialled at its proxy's inbound
/// port, an unmeshed one at `podIP:targetPort`. Meshed endpoints carry the
/// SPIFFE identity the client should expect in `filter_metadata["weft"]`.
///
/// Without mTLS, opaque TCP reaches even a meshed app directly (the inbound
/// side could not tell its port). With mTLS, every meshed endpoint (HTTP and
/// TCP) goes through its proxy, marked for the `mtls` transport socket
/// (`filter_metadata["envoy.transport_socket_match"] = {"weft.mtls": true}`);
/// the SNI tells the server-side proxy the port. A meshed endpoint without a
/// valid identity could not be authenticated, so it is left out.
pub(crate) fn load_assignment(
    state: &MeshState,
    svc: &Service,
    port: &ServicePort,
    cluster_name: &str,
    opts: &MeshOptions,
) -> Assignment {
    let mut seen = BTreeSet::new();
    let mut lb_endpoints = Vec::new();
    let mut mtls_identities = BTreeSet::new();
    for ep in resolve_endpoints(state, svc, port) {
        let namespace = ep.pod.as_ref().map_or(svc.key.namespace.as_str(), |p| p.namespace.as_str());
        let identity = ep
            .service_account
            .as_ref()
            .filter(|_| ep.meshed)
            .and_then(|sa| SpiffeId::new(opts.trust_domain.as_str(), namespace, sa.as_str()).ok());
        if opts.mtls && ep.meshed && identity.is_none() {
            continue;
        }
        let via_proxy = ep.meshed && (opts.mtls || port.protocol == Protocol::Http);
        let dial_port = if via_proxy { INBOUND_PORT } else { ep.port };
        if !seen.insert((ep.ip, dial_port)) {
            continue;
        }
        let metadata = identity.filter(|_| via_proxy).map(|identity| {
            let identity = identity.to_string();
            let mut md = Metadata::default();
            if opts.mtls {
                mtls_identities.insert(identity.clone());
                md.filter_metadata.insert(names::TRANSPORT_SOCKET_MATCH_METADATA.into(), tls::mtls_match());
            }
            let fields = [("identity".to_string(), string_value(identity))].into_iter().collect();
            md.filter_metadata.insert("weft".into(), Struct { fields });
            md
        });
        lb_endpoints.push(lb_endpoint(ep.ip, dial_port, metadata));
    }
    let cla = ClusterLoadAssignment {
        cluster_name: cluster_name.to_string(),
        endpoints: vec![LocalityLbEndpoints { lb_endpoints, ..Default::default() }],
        ..Default::default()
    };
    Assignment { cla, mtls_identities }
}

/// Appends a length-delimited field to an encoded message.
pub(crate) fn append_field(buf: &mut Vec<u8>, tag: u32, bytes: &[u8]) {
    prost::encoding::encode_key(tag, prost::encoding::WireType::LengthDelimited, buf);
    prost::encoding::encode_varint(bytes.len() as u64, buf);
    buf.extend_from_slice(bytes);
}

/// A Struct with its fields in key order (nested values as prost writes them).
fn encode_struct(s: &Struct) -> Vec<u8> {
    let mut fields: Vec<(&String, &Value)> = s.fields.iter().collect();
    fields.sort_by(|a, b| a.0.cmp(b.0));
    let mut out = Vec::new();
    for (k, v) in fields {
        let one = Struct { fields: [(k.clone(), v.clone())].into_iter().collect() };
        out.extend(one.encode_to_vec());
    }
    out
}

/// Metadata with its maps in key order.
fn encode_metadata(md: &Metadata) -> Vec<u8> {
    let mut out = Metadata { filter_metadata: Default::default(), ..md.clone() }.encode_to_vec();
    let mut entries: Vec<(&String, &Struct)> = md.filter_metadata.iter().collect();
    entries.sort_by(|a, b| a.0.cmp(b.0));
    for (k, v) in entries {
        // A map entry is a message {1: key, 2: value}, as field 1 of Metadata.
        let mut entry = Vec::new();
        prost::encoding::string::encode(1, k, &mut entry);
        append_field(&mut entry, 2, &encode_struct(v));
        append_field(&mut out, 1, &entry);
    }
    out
}

/// Encodes a ClusterLoadAssignment deterministically: protobuf maps (endpoint
/// metadata) are written in key order, so equal assignments have equal bytes
/// (and so equal versions) in every run. Decodes to the same message.
pub fn encode_load_assignment(cla: &ClusterLoadAssignment) -> Vec<u8> {
    let mut out = ClusterLoadAssignment { endpoints: Vec::new(), ..cla.clone() }.encode_to_vec();
    for locality in &cla.endpoints {
        let mut loc = LocalityLbEndpoints { lb_endpoints: Vec::new(), ..locality.clone() }.encode_to_vec();
        for lb in &locality.lb_endpoints {
            let mut bytes = LbEndpoint { metadata: None, ..lb.clone() }.encode_to_vec();
            if let Some(md) = &lb.metadata {
                append_field(&mut bytes, 3, &encode_metadata(md));
            }
            append_field(&mut loc, 2, &bytes);
        }
        append_field(&mut out, 2, &loc);
    }
    out
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
