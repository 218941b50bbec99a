//! Clusters: outbound EDS clusters per service port, inbound static clusters to the app.

use std::net::{IpAddr, SocketAddr};

use prost::Name;
use weft_xds_protos::envoy::config::cluster::v3::{Cluster, cluster};
use weft_xds_protos::envoy::config::core::v3::{
    AggregatedConfigSource, ApiVersion, ConfigSource, Http1ProtocolOptions, Http2ProtocolOptions,
    config_source::ConfigSourceSpecifier,
};
use weft_xds_protos::envoy::extensions::upstreams::http::v3::{HttpProtocolOptions, http_protocol_options};
use weft_xds_protos::google::protobuf::{Any, Duration};

use super::{endpoint, names, tls};
use crate::model::Protocol;

/// How long a proxy waits for an upstream connection.
const CONNECT_TIMEOUT: Duration = Duration { seconds: 1, nanos: 0 };

/// The config source that says "over the same ADS stream".
pub(crate) fn ads() -> ConfigSource {
    ConfigSource {
        resource_api_version: ApiVersion::V3 as i32,
        config_source_specifier: Some(ConfigSourceSpecifier::Ads(AggregatedConfigSource {})),
        ..Default::default()
    }
}

/// An outbound cluster whose endpoints come over EDS.
pub(crate) fn outbound(name: &str, protocol: Protocol) -> Cluster {
    let mut c = Cluster {
        name: name.to_string(),
        connect_timeout: Some(CONNECT_TIMEOUT),
        lb_policy: cluster::LbPolicy::RoundRobin as i32,
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(cluster::DiscoveryType::Eds as i32)),
        eds_cluster_config: Some(cluster::EdsClusterConfig {
            eds_config: Some(ads()),
            service_name: String::new(),
        }),
        ..Default::default()
    };
    if protocol == Protocol::Http {
        same_protocol_upstream(&mut c);
    }
    c
}

/// Dials the endpoints marked `{"weft.mtls": true}` (meshed ones) with mTLS:
/// SNI names the service port, the peer must be one of `identities`. Other
/// endpoints match no transport socket and stay plaintext.
pub(crate) fn with_mtls(c: &mut Cluster, sni: &str, identities: &std::collections::BTreeSet<String>) {
    c.transport_socket_matches = vec![cluster::TransportSocketMatch {
        name: names::MTLS_MATCH.into(),
        r#match: Some(tls::mtls_match()),
        transport_socket: Some(tls::upstream(sni, identities)),
    }];
}

/// Keeps HTTP/2 as HTTP/2 and HTTP/1.1 as HTTP/1.1 upstream: every hop speaks
/// what the calling app chose, so gRPC and h2c reach the app as HTTP/2.
fn same_protocol_upstream(c: &mut Cluster) {
    let opts = HttpProtocolOptions {
        upstream_protocol_options: Some(
            http_protocol_options::UpstreamProtocolOptions::UseDownstreamProtocolConfig(
                http_protocol_options::UseDownstreamHttpConfig {
                    http_protocol_options: Some(Http1ProtocolOptions::default()),
                    http2_protocol_options: Some(Http2ProtocolOptions::default()),
                    ..Default::default()
                },
            ),
        ),
        ..Default::default()
    };
    c.typed_extension_protocol_options.insert(
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions".into(),
        Any { type_url: HttpProtocolOptions::type_url(), value: prost::Message::encode_to_vec(&opts) },
    );
}

/// The inbound cluster to the local app at `ip:port`; `http` when an HTTP
/// service port targets it (opaque TCP needs no HTTP options).
pub(crate) fn inbound(ip: IpAddr, port: u16, http: bool) -> Cluster {
    let name = names::inbound_cluster(port);
    let mut c = Cluster {
        load_assignment: Some(endpoint::static_assignment(&name, ip, port)),
        name,
        connect_timeout: Some(CONNECT_TIMEOUT),
        lb_policy: cluster::LbPolicy::RoundRobin as i32,
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Static as i32,
        )),
        ..Default::default()
    };
    if http {
        same_protocol_upstream(&mut c);
    }
    c
}

/// The static cluster every HTTP connection manager's tracer exports spans to (OTLP/gRPC).
pub const OTEL_COLLECTOR_CLUSTER: &str = "weft-otel-collector";

/// The OTLP collector as a static HTTP/2 (gRPC, plaintext) cluster.
pub(crate) fn otel_collector(addr: SocketAddr) -> Cluster {
    let opts = HttpProtocolOptions {
        upstream_protocol_options: Some(http_protocol_options::UpstreamProtocolOptions::ExplicitHttpConfig(
            http_protocol_options::ExplicitHttpConfig {
                protocol_config: Some(
                    http_protocol_options::explicit_http_config::ProtocolConfig::Http2ProtocolOptions(
                        Http2ProtocolOptions::default(),
                    ),
                ),
            },
        )),
        ..Default::default()
    };
    let mut c = Cluster {
        name: OTEL_COLLECTOR_CLUSTER.into(),
        load_assignment: Some(endpoint::static_assignment(OTEL_COLLECTOR_CLUSTER, addr.ip(), addr.port())),
        connect_timeout: Some(CONNECT_TIMEOUT),
        lb_policy: cluster::LbPolicy::RoundRobin as i32,
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Static as i32,
        )),
        ..Default::default()
    };
    c.typed_extension_protocol_options.insert(
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions".into(),
        Any { type_url: HttpProtocolOptions::type_url(), value: prost::Message::encode_to_vec(&opts) },
    );
    c
}

/// Whether a cluster takes its endpoints from EDS.
pub(crate) fn is_eds(c: &Cluster) -> bool {
    c.cluster_discovery_type == Some(cluster::ClusterDiscoveryType::Type(cluster::DiscoveryType::Eds as i32))
}
