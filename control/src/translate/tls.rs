//! mTLS between proxies: the TLS contexts of meshed hops. Certificates and the
//! trust bundle always come over SDS (`default`, `ROOTCA`) from the `weft-sds`
//! cluster that Envoy's bootstrap defines; weft-proxy resolves the same two
//! names from its own credentials.

use std::collections::BTreeSet;

use weft_xds_protos::envoy::config::core::v3::{
    ApiConfigSource, ApiVersion, ConfigSource, GrpcService, TransportSocket, api_config_source,
    config_source::ConfigSourceSpecifier, grpc_service, transport_socket,
};
use weft_xds_protos::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, CommonTlsContext, DownstreamTlsContext, SdsSecretConfig,
    SubjectAltNameMatcher, TlsParameters, UpstreamTlsContext, common_tls_context, subject_alt_name_matcher,
    tls_parameters::TlsProtocol,
};
use weft_xds_protos::envoy::r#type::matcher::v3::{StringMatcher, string_matcher};
use weft_xds_protos::google::protobuf::{BoolValue, Struct, Value, value};

use super::listener::any;
use super::names;

/// Name of Envoy's TLS transport socket.
pub(crate) const TLS_SOCKET: &str = "envoy.transport_sockets.tls";

/// ALPN the server side offers: the client's pool picks (h2 or http/1.1).
const SERVER_ALPN: [&str; 2] = ["h2", "http/1.1"];

/// Where SDS secrets come from: the `weft-sds` gRPC cluster (Envoy) or the
/// proxy's own credentials (weft-proxy, which ignores the source).
pub(crate) fn sds_source() -> ConfigSource {
    ConfigSource {
        resource_api_version: ApiVersion::V3 as i32,
        config_source_specifier: Some(ConfigSourceSpecifier::ApiConfigSource(ApiConfigSource {
            api_type: api_config_source::ApiType::Grpc as i32,
            transport_api_version: ApiVersion::V3 as i32,
            grpc_services: vec![GrpcService {
                target_specifier: Some(grpc_service::TargetSpecifier::EnvoyGrpc(grpc_service::EnvoyGrpc {
                    cluster_name: names::SDS_CLUSTER.into(),
                    ..Default::default()
                })),
                ..Default::default()
            }],
            ..Default::default()
        })),
        ..Default::default()
    }
}

fn sds(name: &str) -> SdsSecretConfig {
    SdsSecretConfig { name: name.into(), sds_config: Some(sds_source()) }
}

fn tls_params() -> TlsParameters {
    TlsParameters {
        tls_minimum_protocol_version: TlsProtocol::TlSv12 as i32,
        tls_maximum_protocol_version: TlsProtocol::TlSv13 as i32,
        ..Default::default()
    }
}

fn exact(s: &str) -> StringMatcher {
    StringMatcher { match_pattern: Some(string_matcher::MatchPattern::Exact(s.into())), ignore_case: false }
}

/// The client side of a hop to a meshed endpoint: SNI names the service port,
/// the peer must present one of `identities` (URI SANs), signed by `ROOTCA`.
/// No ALPN: each side offers what its connection pool speaks.
fn upstream_context(sni: &str, identities: &BTreeSet<String>) -> UpstreamTlsContext {
    let validation = common_tls_context::CombinedCertificateValidationContext {
        default_validation_context: Some(CertificateValidationContext {
            match_typed_subject_alt_names: identities
                .iter()
                .map(|id| SubjectAltNameMatcher {
                    san_type: subject_alt_name_matcher::SanType::Uri as i32,
                    matcher: Some(exact(id)),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }),
        validation_context_sds_secret_config: Some(sds(names::ROOT_SECRET)),
        ..Default::default()
    };
    UpstreamTlsContext {
        sni: sni.into(),
        common_tls_context: Some(CommonTlsContext {
            tls_params: Some(tls_params()),
            tls_certificate_sds_secret_configs: vec![sds(names::CERT_SECRET)],
            validation_context_type: Some(
                common_tls_context::ValidationContextType::CombinedValidationContext(validation),
            ),
            alpn_protocols: Vec::new(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The server side of the inbound chains: a client certificate is required
/// (signed by `ROOTCA`); which identities may do what is RBAC's business.
fn downstream_context() -> DownstreamTlsContext {
    DownstreamTlsContext {
        require_client_certificate: Some(BoolValue { value: true }),
        common_tls_context: Some(CommonTlsContext {
            tls_params: Some(tls_params()),
            tls_certificate_sds_secret_configs: vec![sds(names::CERT_SECRET)],
            validation_context_type: Some(
                common_tls_context::ValidationContextType::ValidationContextSdsSecretConfig(sds(
                    names::ROOT_SECRET,
                )),
            ),
            alpn_protocols: SERVER_ALPN.iter().map(|p| p.to_string()).collect(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The transport socket of a hop to a meshed endpoint (CDS `transport_socket_matches`).
pub(crate) fn upstream(sni: &str, identities: &BTreeSet<String>) -> TransportSocket {
    TransportSocket {
        name: TLS_SOCKET.into(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(any(&upstream_context(sni, identities)))),
    }
}

/// The transport socket of an inbound filter chain.
pub(crate) fn downstream() -> TransportSocket {
    TransportSocket {
        name: TLS_SOCKET.into(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(any(&downstream_context()))),
    }
}

/// `{"weft.mtls": true}`: the match of the `mtls` transport socket, and the
/// `envoy.transport_socket_match` metadata of the endpoints it applies to.
pub(crate) fn mtls_match() -> Struct {
    Struct {
        fields: [(names::MTLS_MATCH_KEY.to_string(), Value { kind: Some(value::Kind::BoolValue(true)) })]
            .into_iter()
            .collect(),
    }
}
