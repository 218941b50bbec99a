//! mTLS and RBAC shapes, built by hand as the contract says the control plane
//! emits them (SDS secrets `default` / `ROOTCA`, SNI-matched inbound chains,
//! `{"weft.mtls": true}` socket matches), what they become, and every class
//! of rejection.

use std::collections::HashMap;

use weft_xds_protos::envoy::config::cluster::v3::cluster::TransportSocketMatch;
use weft_xds_protos::envoy::config::core::v3::{
    ApiConfigSource, DataSource, Metadata, TransportSocket, api_config_source, data_source, transport_socket,
};
use weft_xds_protos::envoy::config::listener::v3::{
    Filter, FilterChain as XdsFilterChain, FilterChainMatch, ListenerFilter, filter, listener_filter,
};
use weft_xds_protos::envoy::config::rbac::v3::{
    Permission, Policy, Principal, Rbac as RbacRules, permission, principal, rbac,
};
use weft_xds_protos::envoy::extensions::filters::http::rbac::v3::Rbac as HttpRbac;
use weft_xds_protos::envoy::extensions::filters::listener::tls_inspector::v3::TlsInspector;
use weft_xds_protos::envoy::extensions::filters::network::rbac::v3::Rbac as NetworkRbac;
use weft_xds_protos::envoy::extensions::filters::network::tcp_proxy::v3::{
    TcpProxy as XdsTcpProxy, tcp_proxy,
};
use weft_xds_protos::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, CommonTlsContext, DownstreamTlsContext, SdsSecretConfig,
    SubjectAltNameMatcher, TlsCertificate, TlsParameters, UpstreamTlsContext, common_tls_context,
    subject_alt_name_matcher, tls_parameters::TlsProtocol,
};
use weft_xds_protos::envoy::r#type::matcher::v3::{StringMatcher, string_matcher};
use weft_xds_protos::google::protobuf::{BoolValue, Struct, Value, value};

use super::*;
use crate::config::rbac::{self as cfg_rbac, RbacAction};
use crate::config::{ChainKind, DownstreamTls, StringMatch, UpstreamTls};
use crate::xds::decode::{Options, decode_with};

const WEB: &str = "spiffe://cluster.local/ns/shop/sa/web";
const API: &str = "spiffe://cluster.local/ns/shop/sa/api";
const SNI: &str = "outbound_.8080_._.api.shop.svc.cluster.local";

/// A secret reference from the `weft-sds` gRPC cluster, as for Envoy.
fn sds(name: &str) -> SdsSecretConfig {
    SdsSecretConfig {
        name: name.into(),
        sds_config: Some(ConfigSource {
            config_source_specifier: Some(config_source::ConfigSourceSpecifier::ApiConfigSource(
                ApiConfigSource { api_type: api_config_source::ApiType::Grpc as i32, ..Default::default() },
            )),
            ..Default::default()
        }),
    }
}

fn params() -> Option<TlsParameters> {
    Some(TlsParameters {
        tls_minimum_protocol_version: TlsProtocol::TlSv12 as i32,
        tls_maximum_protocol_version: TlsProtocol::TlSv13 as i32,
        ..Default::default()
    })
}

fn exact(s: &str) -> StringMatcher {
    StringMatcher { match_pattern: Some(string_matcher::MatchPattern::Exact(s.into())), ignore_case: false }
}

fn uri_san(id: &str) -> SubjectAltNameMatcher {
    SubjectAltNameMatcher {
        san_type: subject_alt_name_matcher::SanType::Uri as i32,
        matcher: Some(exact(id)),
        ..Default::default()
    }
}

fn server_ctx() -> DownstreamTlsContext {
    DownstreamTlsContext {
        require_client_certificate: Some(BoolValue { value: true }),
        common_tls_context: Some(CommonTlsContext {
            tls_params: params(),
            tls_certificate_sds_secret_configs: vec![sds("default")],
            validation_context_type: Some(
                common_tls_context::ValidationContextType::ValidationContextSdsSecretConfig(sds("ROOTCA")),
            ),
            alpn_protocols: vec!["h2".into(), "http/1.1".into()],
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn client_ctx(sans: Vec<SubjectAltNameMatcher>) -> UpstreamTlsContext {
    UpstreamTlsContext {
        sni: SNI.into(),
        common_tls_context: Some(CommonTlsContext {
            tls_params: params(),
            tls_certificate_sds_secret_configs: vec![sds("default")],
            validation_context_type: Some(
                common_tls_context::ValidationContextType::CombinedValidationContext(
                    common_tls_context::CombinedCertificateValidationContext {
                        default_validation_context: Some(CertificateValidationContext {
                            match_typed_subject_alt_names: sans,
                            ..Default::default()
                        }),
                        validation_context_sds_secret_config: Some(sds("ROOTCA")),
                        ..Default::default()
                    },
                ),
            ),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn socket<M: Message + Name>(ctx: &M) -> TransportSocket {
    TransportSocket {
        name: "envoy.transport_sockets.tls".into(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(any(ctx))),
    }
}

fn filter_of<M: Message + Name>(name: &str, m: &M) -> Filter {
    Filter { name: name.into(), config_type: Some(filter::ConfigType::TypedConfig(any(m))) }
}

/// Rules allowing `WEB` anything (ALLOW, one policy).
fn rules() -> RbacRules {
    let policy = Policy {
        permissions: vec![Permission { rule: Some(permission::Rule::Any(true)) }],
        principals: vec![Principal {
            identifier: Some(principal::Identifier::Authenticated(principal::Authenticated {
                principal_name: Some(exact(WEB)),
            })),
        }],
        ..Default::default()
    };
    RbacRules {
        action: rbac::Action::Allow as i32,
        policies: HashMap::from([("shop/web-to-api".to_string(), policy)]),
        ..Default::default()
    }
}

fn http_rbac_filter() -> HttpFilter {
    HttpFilter {
        name: "envoy.filters.http.rbac".into(),
        config_type: Some(http_filter::ConfigType::TypedConfig(any(&HttpRbac {
            rules: Some(rules()),
            ..Default::default()
        }))),
        ..Default::default()
    }
}

fn network_rbac_filter() -> Filter {
    filter_of(
        "envoy.filters.network.rbac",
        &NetworkRbac { rules: Some(rules()), stat_prefix: "inbound".into(), ..Default::default() },
    )
}

fn tcp_proxy_filter() -> Filter {
    filter_of(
        "envoy.filters.network.tcp_proxy",
        &XdsTcpProxy {
            stat_prefix: "inbound".into(),
            cluster_specifier: Some(tcp_proxy::ClusterSpecifier::Cluster("inbound|5432||".into())),
            ..Default::default()
        },
    )
}

fn sni_match(name: &str) -> Option<FilterChainMatch> {
    Some(FilterChainMatch {
        server_names: vec![name.into()],
        transport_protocol: "tls".into(),
        ..Default::default()
    })
}

/// The contract's inbound listener: TLS inspector, an HTTP chain with HTTP
/// RBAC and a TCP chain with network RBAC, both chosen by SNI.
fn inbound() -> XdsListener {
    let mut hcm = hcm_rds("inbound");
    hcm.http_filters.insert(0, http_rbac_filter());
    let mut http = chain(&hcm);
    http.name = "inbound|8080|api.shop|8080".into();
    http.filter_chain_match = sni_match(SNI);
    http.transport_socket = Some(socket(&server_ctx()));
    let tcp = XdsFilterChain {
        name: "inbound|5432|db.shop|5432".into(),
        filter_chain_match: sni_match("Outbound_.5432_._.db.shop.svc.cluster.local"),
        transport_socket: Some(socket(&server_ctx())),
        filters: vec![network_rbac_filter(), tcp_proxy_filter()],
        ..Default::default()
    };
    XdsListener {
        name: "inbound".into(),
        listener_filters: vec![ListenerFilter {
            name: "envoy.filters.listener.tls_inspector".into(),
            config_type: Some(listener_filter::ConfigType::TypedConfig(any(&TlsInspector::default()))),
            ..Default::default()
        }],
        ..listener_with(vec![http, tcp])
    }
}

fn mtls_match() -> Struct {
    Struct {
        fields: [("weft.mtls".to_string(), Value { kind: Some(value::Kind::BoolValue(true)) })]
            .into_iter()
            .collect(),
    }
}

/// The contract's outbound cluster: mTLS only to endpoints marked `weft.mtls`.
fn meshed_cluster() -> XdsCluster {
    XdsCluster {
        transport_socket_matches: vec![TransportSocketMatch {
            name: "mtls".into(),
            r#match: Some(mtls_match()),
            transport_socket: Some(socket(&client_ctx(vec![uri_san(API), uri_san(WEB)]))),
        }],
        ..eds_cluster("c")
    }
}

fn marked(ip: &str, value: Value) -> weft_xds_protos::envoy::config::endpoint::v3::LbEndpoint {
    let mut e = lb_endpoint(ip, 4143);
    let socket_match = Struct { fields: [("weft.mtls".to_string(), value)].into_iter().collect() };
    let weft = Struct {
        fields: [("identity".to_string(), Value { kind: Some(value::Kind::StringValue(API.into())) })]
            .into_iter()
            .collect(),
    };
    e.metadata = Some(Metadata {
        filter_metadata: HashMap::from([
            ("envoy.transport_socket_match".to_string(), socket_match),
            ("weft".to_string(), weft),
        ]),
        ..Default::default()
    });
    e
}

#[test]
fn the_inbound_listener_terminates_tls_by_sni_and_checks_rbac() {
    let l = listener(&inbound());
    assert!(l.tls_inspector);
    assert!(!l.original_dst);
    let server =
        DownstreamTls { require_client_certificate: true, alpn: vec!["h2".into(), "http/1.1".into()] };
    let http = &l.chains[0];
    assert_eq!(http.server_names, [SNI]);
    assert_eq!(http.transport_protocol.as_deref(), Some("tls"));
    assert_eq!(http.tls.as_ref(), Some(&server));
    assert_eq!(http.rbac, None);
    let ChainKind::Http(manager) = &http.kind else { panic!("{:?}", http.kind) };
    let rbac = manager.rbac.as_ref().expect("HTTP RBAC");
    assert_eq!(rbac.action, RbacAction::Allow);
    assert_eq!(rbac.policies.len(), 1);
    assert_eq!(rbac.policies[0].name, "shop/web-to-api");
    assert_eq!(
        rbac.policies[0].principals,
        [cfg_rbac::Principal::Authenticated(StringMatch::Exact(WEB.into()))]
    );
    let tcp = &l.chains[1];
    // Server names are matched lowercase, as SNI is.
    assert_eq!(tcp.server_names, ["outbound_.5432_._.db.shop.svc.cluster.local"]);
    assert_eq!(tcp.tls.as_ref(), Some(&server));
    assert_eq!(tcp.rbac.as_ref().map(|r| r.policies.len()), Some(1));
    assert!(matches!(tcp.kind, ChainKind::Tcp(_)));
    // Where the secrets come from is Envoy's business: nothing is noted.
    assert_eq!(accept(&inbound()).1, Notes::default());
}

#[test]
fn optional_client_certificates_and_no_alpn_are_served() {
    let mut ctx = server_ctx();
    ctx.require_client_certificate = None;
    ctx.common_tls_context.as_mut().unwrap().alpn_protocols.clear();
    let mut c = chain(&hcm_rds("r"));
    c.transport_socket = Some(socket(&ctx));
    let l = listener(&listener_with(vec![c]));
    assert_eq!(l.chains[0].tls, Some(DownstreamTls { require_client_certificate: false, alpn: vec![] }));
    // No inspector: chains that need one get it at run time.
    assert!(!l.tls_inspector);
}

#[test]
fn meshed_clusters_dial_marked_endpoints_over_mtls() {
    let (c, _) = cluster(&meshed_cluster());
    let want = UpstreamTls {
        sni: SNI.into(),
        allowed_identities: vec![API.into(), WEB.into()],
        all_endpoints: false,
    };
    assert_eq!(c.tls, Some(want.clone()));

    let mut everywhere = eds_cluster("c");
    everywhere.transport_socket = Some(socket(&client_ctx(vec![uri_san(API), uri_san(WEB)])));
    assert_eq!(cluster(&everywhere).0.tls, Some(UpstreamTls { all_endpoints: true, ..want.clone() }));

    let mut both = meshed_cluster();
    both.transport_socket = everywhere.transport_socket.clone();
    assert_eq!(cluster(&both).0.tls, Some(UpstreamTls { all_endpoints: true, ..want }));

    let a = endpoints(&assignment(
        "e",
        vec![
            marked("10.0.0.1", Value { kind: Some(value::Kind::BoolValue(true)) }),
            marked("10.0.0.2", Value { kind: Some(value::Kind::StringValue("true".into())) }),
            lb_endpoint("10.0.0.3", 80),
        ],
    ));
    let mtls: Vec<bool> = a.endpoints.iter().map(|e| e.mtls).collect();
    assert_eq!(mtls, [true, false, false]);
    assert_eq!(a.endpoints[0].identity.as_deref(), Some(API));
}

#[test]
fn plaintext_sockets_stay_plaintext() {
    let raw = TransportSocket {
        name: "envoy.transport_sockets.raw_buffer".into(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(Any {
            type_url: "type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer".into(),
            value: vec![],
        })),
    };
    let mut c = eds_cluster("c");
    c.transport_socket = Some(raw.clone());
    assert_eq!(cluster(&c).0.tls, None);
    let mut ch = chain(&hcm_rds("r"));
    ch.transport_socket = Some(raw);
    assert_eq!(listener(&listener_with(vec![ch])).chains[0].tls, None);
}

#[test]
fn a_proxy_without_credentials_rejects_tls() {
    let plaintext = Options { tls: false };
    let err = decode_with(ResourceType::Listener, &any(&inbound()), plaintext, &mut Notes::default())
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "listener inbound: filter_chains[0].transport_socket: TLS needs a workload certificate, and this proxy \
         runs without one (--insecure-plaintext)"
    );
    let err = decode_with(ResourceType::Cluster, &any(&meshed_cluster()), plaintext, &mut Notes::default())
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "cluster c: transport_socket_matches[0].transport_socket: TLS needs a workload certificate, and this \
         proxy runs without one (--insecure-plaintext)"
    );
    // Plaintext resources are fine, and so are meshed endpoints (the cluster decides).
    assert!(
        decode_with(ResourceType::Cluster, &any(&eds_cluster("c")), plaintext, &mut Notes::default()).is_ok()
    );
}

/// A listener of one chain terminating TLS with `ctx`.
fn serving(ctx: DownstreamTlsContext) -> XdsListener {
    let mut c = chain(&hcm_rds("r"));
    c.transport_socket = Some(socket(&ctx));
    listener_with(vec![c])
}

fn with_common(f: impl FnOnce(&mut CommonTlsContext)) -> DownstreamTlsContext {
    let mut ctx = server_ctx();
    f(ctx.common_tls_context.as_mut().unwrap());
    ctx
}

fn dialling(ctx: UpstreamTlsContext) -> XdsCluster {
    let mut c = meshed_cluster();
    c.transport_socket_matches[0].transport_socket = Some(socket(&ctx));
    c
}

#[test]
fn tls_weft_proxy_cannot_honour_is_rejected_by_field() {
    const CTX: &str = "listener l: filter_chains[0].transport_socket.typed_config";
    let inline_cert = with_common(|c| {
        c.tls_certificates = vec![TlsCertificate {
            certificate_chain: Some(DataSource {
                specifier: Some(data_source::Specifier::InlineString("PEM".into())),
                ..Default::default()
            }),
            ..Default::default()
        }];
    });
    let cases: Vec<(&str, DownstreamTlsContext, String)> = vec![
        (
            "an inline certificate",
            inline_cert,
            format!(
                "{CTX}.common_tls_context.tls_certificates: inline certificates are not supported: weft-proxy \
                 presents its own workload certificate (SDS secret \"default\")"
            ),
        ),
        (
            "another certificate secret",
            with_common(|c| c.tls_certificate_sds_secret_configs = vec![sds("mine")]),
            format!(
                "{CTX}.common_tls_context.tls_certificate_sds_secret_configs[0].name: \"mine\": weft-proxy \
                 resolves only the SDS secret \"default\" (its own workload certificate)"
            ),
        ),
        (
            "no certificate",
            with_common(|c| c.tls_certificate_sds_secret_configs.clear()),
            format!(
                "{CTX}.common_tls_context.tls_certificate_sds_secret_configs: required: weft-proxy presents \
                 its workload certificate (SDS secret \"default\")"
            ),
        ),
        (
            "another trust bundle",
            with_common(|c| {
                c.validation_context_type = Some(
                    common_tls_context::ValidationContextType::ValidationContextSdsSecretConfig(sds("CA")),
                );
            }),
            format!(
                "{CTX}.common_tls_context.validation_context_sds_secret_config.name: \"CA\": weft-proxy \
                 resolves only the SDS secret \"ROOTCA\" (its own trust bundle)"
            ),
        ),
        (
            "inline trust",
            with_common(|c| {
                c.validation_context_type =
                    Some(common_tls_context::ValidationContextType::ValidationContext(
                        CertificateValidationContext::default(),
                    ));
            }),
            format!(
                "{CTX}.common_tls_context.validation_context: inline trust is not supported: weft-proxy \
                 verifies peers against its own trust bundle (SDS secret \"ROOTCA\", in \
                 combined_validation_context)"
            ),
        ),
        (
            "no trust at all",
            with_common(|c| c.validation_context_type = None),
            format!(
                "{CTX}.common_tls_context.validation_context_type: required: weft-proxy always verifies peers \
                 against its trust bundle (SDS secret \"ROOTCA\")"
            ),
        ),
        (
            "TLS 1.0",
            with_common(|c| {
                c.tls_params.as_mut().unwrap().tls_minimum_protocol_version = TlsProtocol::TlSv10 as i32;
            }),
            format!(
                "{CTX}.common_tls_context.tls_params.tls_minimum_protocol_version: TLSv1_0 is not supported \
                 by weft-proxy (TLSv1_2 to TLSv1_3 only)"
            ),
        ),
        (
            "cipher suites",
            with_common(|c| c.tls_params.as_mut().unwrap().cipher_suites = vec!["AES128-SHA".into()]),
            format!("{CTX}.common_tls_context.tls_params.cipher_suites: not supported by weft-proxy"),
        ),
        (
            "require_sni",
            DownstreamTlsContext { require_sni: Some(BoolValue { value: true }), ..server_ctx() },
            format!("{CTX}.require_sni: not supported by weft-proxy"),
        ),
        (
            "client SAN checks on a listener",
            with_common(|c| {
                c.validation_context_type =
                    client_ctx(vec![uri_san(WEB)]).common_tls_context.unwrap().validation_context_type;
            }),
            format!(
                "{CTX}.common_tls_context.combined_validation_context.default_validation_context.\
                 match_typed_subject_alt_names: not supported by weft-proxy on a listener (authorize clients \
                 with an RBAC filter)"
            ),
        ),
    ];
    for (what, ctx, want) in cases {
        assert_eq!(reject(&serving(ctx)), want, "{what}");
    }

    const UP: &str = "cluster c: transport_socket_matches[0].transport_socket.typed_config";
    const VALIDATION: &str = "common_tls_context.combined_validation_context.default_validation_context";
    let dns = SubjectAltNameMatcher {
        san_type: subject_alt_name_matcher::SanType::Dns as i32,
        matcher: Some(exact("api.shop")),
        ..Default::default()
    };
    let prefix = SubjectAltNameMatcher {
        matcher: Some(StringMatcher {
            match_pattern: Some(string_matcher::MatchPattern::Prefix("spiffe://".into())),
            ignore_case: false,
        }),
        ..uri_san(API)
    };
    let mut trusted_ca = client_ctx(vec![]);
    if let Some(common_tls_context::ValidationContextType::CombinedValidationContext(v)) =
        &mut trusted_ca.common_tls_context.as_mut().unwrap().validation_context_type
    {
        v.default_validation_context.as_mut().unwrap().trusted_ca = Some(DataSource::default());
    }
    let cases: Vec<(&str, UpstreamTlsContext, String)> = vec![
        (
            "a DNS SAN",
            client_ctx(vec![uri_san(API), dns]),
            format!(
                "{UP}.{VALIDATION}.match_typed_subject_alt_names[1].san_type: DNS is not supported by \
                 weft-proxy (only URI)"
            ),
        ),
        (
            "a prefix SAN",
            client_ctx(vec![prefix]),
            format!(
                "{UP}.{VALIDATION}.match_typed_subject_alt_names[0].matcher: only exact is supported by \
                 weft-proxy"
            ),
        ),
        (
            "a URI that is no SPIFFE ID",
            client_ctx(vec![uri_san("https://api.shop")]),
            format!(
                "{UP}.{VALIDATION}.match_typed_subject_alt_names[0].matcher.exact: \"https://api.shop\" is not a SPIFFE ID"
            ),
        ),
        (
            "inline trust anchors",
            trusted_ca,
            format!(
                "{UP}.{VALIDATION}.trusted_ca: inline trust is not supported: weft-proxy uses its own trust \
                 bundle (SDS secret \"ROOTCA\")"
            ),
        ),
        (
            "an invalid SNI",
            UpstreamTlsContext { sni: "a b".into(), ..client_ctx(vec![]) },
            format!("{UP}.sni: \"a b\" is not a valid server name"),
        ),
        (
            "SNI from the host",
            UpstreamTlsContext { auto_host_sni: true, ..client_ctx(vec![]) },
            format!("{UP}.auto_host_sni: not supported by weft-proxy"),
        ),
    ];
    for (what, ctx, want) in cases {
        let got = reject(&dialling(ctx));
        assert!(got.starts_with(&want), "{what}: got {got:?}, want it to start with {want:?}");
    }
}

#[test]
fn socket_matches_and_chains_weft_proxy_cannot_serve_are_rejected_by_field() {
    let mut other_match = meshed_cluster();
    other_match.transport_socket_matches[0].r#match = Some(Struct {
        fields: [("zone".to_string(), Value { kind: Some(value::Kind::StringValue("a".into())) })]
            .into_iter()
            .collect(),
    });
    let mut two = meshed_cluster();
    two.transport_socket_matches.push(two.transport_socket_matches[0].clone());
    let mut differing = meshed_cluster();
    differing.transport_socket = Some(socket(&client_ctx(vec![uri_san(WEB)])));
    let cases: Vec<(&str, XdsCluster, &str)> = vec![
        (
            "another match",
            other_match,
            "cluster c: transport_socket_matches[0].match: not supported by weft-proxy: only the match \
             {\"weft.mtls\": true} is",
        ),
        (
            "a second mTLS entry",
            two,
            "cluster c: transport_socket_matches[1]: a second entry matching {\"weft.mtls\": true} would never \
             be used",
        ),
        (
            "two different TLS contexts",
            differing,
            "cluster c: transport_socket_matches[0].transport_socket: differs from transport_socket: weft-proxy \
             has one TLS context per cluster",
        ),
    ];
    for (what, c, want) in cases {
        assert_eq!(reject(&c), want, "{what}");
    }

    let mut same_sni = inbound();
    same_sni.filter_chains[1].filter_chain_match = sni_match(SNI);
    let mut wildcard_inside = inbound();
    wildcard_inside.filter_chains[0].filter_chain_match = sni_match("a.*.example");
    let mut quic = inbound();
    quic.filter_chains[0].filter_chain_match.as_mut().unwrap().transport_protocol = "quic".into();
    let mut two_rbac = inbound();
    two_rbac.filter_chains[1].filters.insert(0, network_rbac_filter());
    let mut rbac_last = inbound();
    rbac_last.filter_chains[1].filters.push(network_rbac_filter());
    let mut two_http_rbac = hcm_rds("inbound");
    two_http_rbac.http_filters.insert(0, http_rbac_filter());
    two_http_rbac.http_filters.insert(0, http_rbac_filter());
    let mut rbac_after_router = hcm_rds("inbound");
    rbac_after_router.http_filters.push(http_rbac_filter());
    let mut bad_rules = hcm_rds("inbound");
    bad_rules.http_filters.insert(
        0,
        HttpFilter {
            name: "envoy.filters.http.rbac".into(),
            config_type: Some(http_filter::ConfigType::TypedConfig(any(&HttpRbac {
                rules: Some(RbacRules { action: rbac::Action::Log as i32, ..Default::default() }),
                ..Default::default()
            }))),
            ..Default::default()
        },
    );
    let cases: Vec<(&str, XdsListener, &str)> = vec![
        (
            "two chains for one SNI",
            same_sni,
            "listener inbound: filter_chains[1].filter_chain_match: matches the same connections as \
             filter_chains[0]",
        ),
        (
            "a wildcard inside a name",
            wildcard_inside,
            "listener inbound: filter_chains[0].filter_chain_match.server_names[0]: \"a.*.example\" is not a \
             server name (a host name, or *. and a suffix)",
        ),
        (
            "an unknown transport protocol",
            quic,
            "listener inbound: filter_chains[0].filter_chain_match.transport_protocol: \"quic\" is not \
             supported by weft-proxy (tls or raw_buffer)",
        ),
        (
            "two network RBAC filters",
            two_rbac,
            "listener inbound: filter_chains[1].filters[1]: a second RBAC filter is not supported by weft-proxy",
        ),
        (
            "network RBAC after the TCP proxy",
            rbac_last,
            "listener inbound: filter_chains[1].filters[2]: nothing may follow the terminal filter \
             (http_connection_manager or tcp_proxy)",
        ),
        (
            "two HTTP RBAC filters",
            listener_with(vec![chain(&two_http_rbac)]),
            "listener l: filter_chains[0].filters[0].typed_config.http_filters[1]: a second RBAC filter is not \
             supported by weft-proxy",
        ),
        (
            "HTTP RBAC after the router",
            listener_with(vec![chain(&rbac_after_router)]),
            "listener l: filter_chains[0].filters[0].typed_config.http_filters[0]: the router must be the last \
             filter",
        ),
        (
            "RBAC rules weft-proxy cannot enforce",
            listener_with(vec![chain(&bad_rules)]),
            "listener l: filter_chains[0].filters[0].typed_config.http_filters[0].typed_config.rules.action: \
             LOG is not supported by weft-proxy",
        ),
    ];
    for (what, l, want) in cases {
        assert_eq!(reject(&l), want, "{what}");
    }
}
