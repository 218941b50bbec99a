//! Envoy resource names, as Envoy users know them from Istio config dumps.

use crate::model::{Key, Service};

/// The cluster domain suffix of service names.
pub const CLUSTER_DOMAIN: &str = "cluster.local";

/// Name of every proxy's outbound listener and its RouteConfiguration.
pub const OUTBOUND: &str = "outbound";
/// Name of every proxy's inbound listener.
pub const INBOUND: &str = "inbound";

/// The static cluster, defined by Envoy's bootstrap, that serves SDS (the weft-agent's socket).
pub const SDS_CLUSTER: &str = "weft-sds";
/// SDS secret of the workload's certificate chain and key.
pub const CERT_SECRET: &str = "default";
/// SDS secret of the trust bundle.
pub const ROOT_SECRET: &str = "ROOTCA";
/// Name of the transport socket match (CDS) that dials meshed endpoints with mTLS.
pub const MTLS_MATCH: &str = "mtls";
/// The endpoint metadata namespace Envoy matches transport sockets against.
pub const TRANSPORT_SOCKET_MATCH_METADATA: &str = "envoy.transport_socket_match";
/// The key, in [`TRANSPORT_SOCKET_MATCH_METADATA`], that marks an endpoint as dialled with mTLS.
pub const MTLS_MATCH_KEY: &str = "weft.mtls";

/// `<svc>.<ns>.svc.cluster.local`
pub fn fqdn(key: &Key) -> String {
    format!("{}.{}.svc.{CLUSTER_DOMAIN}", key.name, key.namespace)
}

/// `outbound|<port>||<svc>.<ns>.svc.cluster.local`
pub fn outbound_cluster(key: &Key, port: u16) -> String {
    format!("outbound|{port}||{}", fqdn(key))
}

/// The TLS SNI of a hop to a meshed endpoint of one service port:
/// `outbound_.<port>_._.<svc>.<ns>.svc.cluster.local`. The server-side proxy
/// picks its inbound filter chain (and so the app port) by it.
pub fn sni(key: &Key, port: u16) -> String {
    format!("outbound_.{port}_._.{}", fqdn(key))
}

/// `inbound|<targetPort>|<svc>.<ns>|<port>`: the inbound filter chain of one service port.
pub fn inbound_chain(key: &Key, port: u16, target_port: u16) -> String {
    format!("inbound|{target_port}|{}.{}|{port}", key.name, key.namespace)
}

/// `inbound|<port>||`
pub fn inbound_cluster(target_port: u16) -> String {
    format!("inbound|{target_port}||")
}

/// Every host name a client in `client_ns` may use for a service, without port:
/// the short name only from the service's own namespace.
pub fn host_names(svc: &Service, client_ns: &str) -> Vec<String> {
    let key = &svc.key;
    let mut names = Vec::with_capacity(5);
    if key.namespace == client_ns {
        names.push(key.name.clone());
    }
    names.push(format!("{}.{}", key.name, key.namespace));
    names.push(format!("{}.{}.svc", key.name, key.namespace));
    names.push(fqdn(key));
    if let Some(ip) = svc.cluster_ip {
        names.push(match ip {
            std::net::IpAddr::V4(v4) => v4.to_string(),
            std::net::IpAddr::V6(v6) => format!("[{v6}]"),
        });
    }
    names
}

/// The `domains` of a virtual host for one service port: every name with the
/// port, and without it when the port is the only one or is 80.
pub fn domains(svc: &Service, port: u16, client_ns: &str) -> Vec<String> {
    let bare = svc.ports.len() == 1 || port == 80;
    let mut out = Vec::new();
    for name in host_names(svc, client_ns) {
        out.push(format!("{name}:{port}"));
        if bare {
            out.push(name);
        }
    }
    out
}

/// Drops the domains already claimed by an earlier virtual host: Envoy refuses
/// a RouteConfiguration with a domain twice (two Services sharing a ClusterIP,
/// or short names of two namespaces reaching one pod). The first claim wins.
pub fn unique(domains: Vec<String>, seen: &mut std::collections::HashSet<String>) -> Vec<String> {
    domains.into_iter().filter(|d| seen.insert(d.clone())).collect()
}
