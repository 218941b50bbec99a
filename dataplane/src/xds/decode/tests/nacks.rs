//! Every class of rejection, with the exact message that goes into the NACK.

use weft_xds_protos::envoy::config::core::v3::{TransportSocket, transport_socket};
use weft_xds_protos::envoy::config::route::v3::{
    HeaderMatcher, RedirectAction, RetryPolicy as XdsRetryPolicy, WeightedCluster as XdsWeightedCluster,
    header_matcher, weighted_cluster,
};
use weft_xds_protos::envoy::extensions::filters::http::fault::v3::HttpFault;
use weft_xds_protos::envoy::extensions::filters::network::rbac::v3::Rbac;
use weft_xds_protos::envoy::extensions::transport_sockets::tls::v3::{
    DownstreamTlsContext, UpstreamTlsContext,
};
use weft_xds_protos::envoy::r#type::matcher::v3::RegexMatcher;
use weft_xds_protos::google::protobuf::UInt32Value;

use super::*;

fn tls<M: Message + Name>(ctx: &M) -> TransportSocket {
    TransportSocket {
        name: "envoy.transport_sockets.tls".into(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(any(ctx))),
    }
}

fn table_route(r: XdsRoute) -> RouteConfiguration {
    table_with(vec![r])
}

fn with_action(ra: RouteAction) -> XdsRoute {
    XdsRoute { action: Some(route::Action::Route(ra)), ..route_to("c") }
}

fn to_c() -> RouteAction {
    RouteAction {
        cluster_specifier: Some(route_action::ClusterSpecifier::Cluster("c".into())),
        ..Default::default()
    }
}

fn header(spec: header_matcher::HeaderMatchSpecifier) -> XdsRoute {
    XdsRoute {
        r#match: Some(RouteMatch {
            path_specifier: Some(route_match::PathSpecifier::Prefix("/".into())),
            headers: vec![HeaderMatcher {
                name: "x".into(),
                header_match_specifier: Some(spec),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..route_to("c")
    }
}

#[test]
fn listeners_that_would_behave_differently_are_rejected_by_field() {
    let mut tls_chain = chain(&hcm_rds("r"));
    tls_chain.transport_socket = Some(tls(&DownstreamTlsContext::default()));

    let mut fault = hcm_rds("r");
    fault.http_filters.insert(
        0,
        HttpFilter {
            name: "envoy.filters.http.fault".into(),
            config_type: Some(http_filter::ConfigType::TypedConfig(any(&HttpFault::default()))),
            ..Default::default()
        },
    );
    let mut optional_fault = fault.clone();
    optional_fault.http_filters[0].is_optional = true;

    let mut no_router = hcm_rds("r");
    no_router.http_filters.clear();

    let mut after_terminal = chain(&hcm_rds("r"));
    after_terminal.filters.extend(chain(&Rbac::default()).filters);

    let mut alpn = chain(&hcm_rds("r"));
    alpn.filter_chain_match = Some(weft_xds_protos::envoy::config::listener::v3::FilterChainMatch {
        application_protocols: vec!["h2".into()],
        ..Default::default()
    });

    let mut dup = listener_with(vec![chain(&hcm_rds("a")), chain(&hcm_rds("b"))]);
    dup.name = "dup".into();

    let mut hostname = listener_with(vec![chain(&hcm_rds("r"))]);
    hostname.address = Some(socket("localhost", 80));

    let mut upgrades = hcm_rds("r");
    upgrades.upgrade_configs = vec![Default::default()];

    let mut by_name = hcm_rds("r");
    by_name.http_filters[0].config_type = None;

    let mut h3 = hcm_rds("r");
    h3.codec_type = http_connection_manager::CodecType::Http3 as i32;

    let cases: Vec<(&str, XdsListener, &str)> = vec![
        (
            "a TLS context without its common part",
            listener_with(vec![tls_chain]),
            "listener l: filter_chains[0].transport_socket.typed_config.common_tls_context: required",
        ),
        (
            "an unknown network filter",
            listener_with(vec![chain(&HttpFault::default())]),
            "listener l: filter_chains[0].filters[0].typed_config: unsupported filter \
             type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault",
        ),
        (
            "a filter after the terminal one",
            listener_with(vec![after_terminal]),
            "listener l: filter_chains[0].filters[1]: nothing may follow the terminal filter \
             (http_connection_manager or tcp_proxy)",
        ),
        (
            "an unknown HTTP filter",
            listener_with(vec![chain(&fault)]),
            "listener l: filter_chains[0].filters[0].typed_config.http_filters[0].typed_config: unsupported \
             HTTP filter type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault",
        ),
        (
            "no router",
            listener_with(vec![chain(&no_router)]),
            "listener l: filter_chains[0].filters[0].typed_config.http_filters: must end with the router \
             (envoy.filters.http.router)",
        ),
        (
            "a filter with a name and no type (Envoy finds filters by type)",
            listener_with(vec![chain(&by_name)]),
            "listener l: filter_chains[0].filters[0].typed_config.http_filters[0].typed_config: required \
             (filter \"envoy.filters.http.router\")",
        ),
        (
            "an ALPN match",
            listener_with(vec![alpn]),
            "listener l: filter_chains[0].filter_chain_match.application_protocols: not supported by weft-proxy",
        ),
        (
            "two chains with the same match",
            dup,
            "listener dup: filter_chains[1].filter_chain_match: matches the same connections as filter_chains[0]",
        ),
        (
            "a host name to bind",
            hostname,
            "listener l: address.socket_address.address: \"localhost\" is not an IP address \
             (weft-proxy resolves no names)",
        ),
        (
            "websocket upgrades",
            listener_with(vec![chain(&upgrades)]),
            "listener l: filter_chains[0].filters[0].typed_config.upgrade_configs: not supported by weft-proxy",
        ),
        (
            "HTTP/3",
            listener_with(vec![chain(&h3)]),
            "listener l: filter_chains[0].filters[0].typed_config.codec_type: HTTP3 is not supported by weft-proxy",
        ),
        (
            "no filter chain at all",
            listener_with(vec![]),
            "listener l: filter_chains: a listener needs a filter chain or a default_filter_chain",
        ),
    ];
    for (what, l, want) in cases {
        assert_eq!(reject(&l), want, "{what}");
    }
    // An optional filter weft-proxy does not have is skipped, as Envoy skips unknown optional ones.
    let (_, notes) = accept(&listener_with(vec![chain(&optional_fault)]));
    assert!(notes.ignored.contains("HttpFilter.is_optional"));
}

#[test]
fn routes_that_would_behave_differently_are_rejected_by_field() {
    let weights = |w: &[(&str, u32)]| {
        with_action(RouteAction {
            cluster_specifier: Some(route_action::ClusterSpecifier::WeightedClusters(XdsWeightedCluster {
                clusters: w
                    .iter()
                    .map(|(n, w)| weighted_cluster::ClusterWeight {
                        name: n.to_string(),
                        weight: Some(UInt32Value { value: *w }),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            })),
            ..Default::default()
        })
    };
    let mut two_hosts = table_route(route_to("c"));
    let mut second = two_hosts.virtual_hosts[0].clone();
    second.name = "other".into();
    second.domains = vec!["a.example".into(), "*".into()];
    two_hosts.virtual_hosts.push(second);

    let cases: Vec<(&str, RouteConfiguration, &str)> = vec![
        (
            "prefix_rewrite",
            table_route(with_action(RouteAction { prefix_rewrite: "/v2".into(), ..to_c() })),
            "route rt: virtual_hosts[0].routes[0].route.prefix_rewrite: not supported by weft-proxy",
        ),
        (
            "host rewrite",
            table_route(with_action(RouteAction {
                host_rewrite_specifier: Some(route_action::HostRewriteSpecifier::HostRewriteLiteral(
                    "a".into(),
                )),
                ..to_c()
            })),
            "route rt: virtual_hosts[0].routes[0].route.host_rewrite_specifier: not supported by weft-proxy",
        ),
        (
            "a redirect",
            table_route(XdsRoute {
                action: Some(route::Action::Redirect(RedirectAction::default())),
                ..route_to("c")
            }),
            "route rt: virtual_hosts[0].routes[0].redirect: not supported by weft-proxy",
        ),
        (
            "an unsupported retry condition",
            table_route(with_action(RouteAction {
                retry_policy: Some(XdsRetryPolicy {
                    retry_on: "5xx,retriable-4xx".into(),
                    ..Default::default()
                }),
                ..to_c()
            })),
            "route rt: virtual_hosts[0].routes[0].route.retry_policy.retry_on: \"retriable-4xx\" is not supported \
             by weft-proxy (supported: 5xx, gateway-error, connect-failure, reset, retriable-status-codes)",
        ),
        (
            "an invalid regex",
            table_route(header(header_matcher::HeaderMatchSpecifier::SafeRegexMatch(RegexMatcher {
                regex: "(".into(),
                engine_type: None,
            }))),
            "route rt: virtual_hosts[0].routes[0].match.headers[0].safe_regex_match.regex: invalid regex \"(\"",
        ),
        (
            "a range match",
            table_route(header(header_matcher::HeaderMatchSpecifier::RangeMatch(Default::default()))),
            "route rt: virtual_hosts[0].routes[0].match.headers[0].range_match: not supported by weft-proxy",
        ),
        (
            "weights adding up to 0",
            table_route(weights(&[("a", 0), ("b", 0)])),
            "route rt: virtual_hosts[0].routes[0].route.weighted_clusters.clusters: the weights add up to 0",
        ),
        (
            "a domain in two virtual hosts",
            two_hosts,
            "route rt: virtual_hosts[1].domains[1]: \"*\" is also a domain of virtual host \"vh\"",
        ),
    ];
    for (what, rc, want) in cases {
        let got = reject(&rc);
        assert!(got.starts_with(want), "{what}: got {got:?}, want it to start with {want:?}");
    }
}

#[test]
fn clusters_and_endpoints_that_would_behave_differently_are_rejected_by_field() {
    let mut dns = eds_cluster("c");
    dns.cluster_discovery_type =
        Some(cluster::ClusterDiscoveryType::Type(cluster::DiscoveryType::StrictDns as i32));
    let mut ring = eds_cluster("c");
    ring.lb_policy = cluster::LbPolicy::RingHash as i32;
    let mut mtls = eds_cluster("c");
    mtls.transport_socket = Some(tls(&UpstreamTlsContext::default()));
    let mut alts = eds_cluster("c");
    alts.transport_socket = Some(tls(&DownstreamTlsContext::default()));
    let mut checks = eds_cluster("c");
    checks.health_checks = vec![Default::default()];
    let mut elsewhere = eds_cluster("c");
    elsewhere.eds_cluster_config.as_mut().unwrap().eds_config = Some(ConfigSource {
        config_source_specifier: Some(config_source::ConfigSourceSpecifier::ApiConfigSource(
            Default::default(),
        )),
        ..Default::default()
    });
    let cases: Vec<(&str, XdsCluster, &str)> = vec![
        (
            "a STRICT_DNS cluster",
            dns,
            "cluster c: type: STRICT_DNS clusters are not supported by weft-proxy (only EDS and STATIC)",
        ),
        (
            "a ring hash",
            ring,
            "cluster c: lb_policy: RING_HASH is not supported by weft-proxy (only ROUND_ROBIN and LEAST_REQUEST)",
        ),
        (
            "upstream TLS without its common part",
            mtls,
            "cluster c: transport_socket.typed_config.common_tls_context: required",
        ),
        (
            "a transport socket of the other side",
            alts,
            "cluster c: transport_socket.typed_config: unsupported transport socket \
             type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext \
             (here weft-proxy supports raw_buffer, or tls with UpstreamTlsContext)",
        ),
        ("active health checks", checks, "cluster c: health_checks: not supported by weft-proxy"),
        (
            "EDS from another server",
            elsewhere,
            "cluster c: eds_cluster_config.eds_config.api_config_source: not supported by weft-proxy: \
             every resource comes over its ADS stream (use ads)",
        ),
    ];
    for (what, c, want) in cases {
        assert_eq!(reject(&c), want, "{what}");
    }

    let mut zero_weight = lb_endpoint("10.0.0.1", 80);
    zero_weight.load_balancing_weight = Some(UInt32Value { value: 0 });
    let mut priority = assignment("e", vec![lb_endpoint("10.0.0.1", 80)]);
    priority.endpoints[0].priority = 1;
    let cases: Vec<(&str, ClusterLoadAssignment, &str)> = vec![
        (
            "a weight of 0",
            assignment("e", vec![lb_endpoint("10.0.0.2", 80), zero_weight]),
            "endpoints e: endpoints[0].lb_endpoints[1].load_balancing_weight: must be at least 1",
        ),
        (
            "a host name",
            assignment("e", vec![lb_endpoint("db.example", 5432)]),
            "endpoints e: endpoints[0].lb_endpoints[0].endpoint.address.socket_address.address: \
             \"db.example\" is not an IP address (weft-proxy resolves no names)",
        ),
        (
            "failover priorities",
            priority,
            "endpoints e: endpoints[0].priority: 1 is not supported by weft-proxy (only 0)",
        ),
    ];
    for (what, a, want) in cases {
        assert_eq!(reject(&a), want, "{what}");
    }
}

#[test]
fn resources_that_are_not_what_the_response_says_are_rejected() {
    let wrong = any(&eds_cluster("c"));
    let err = decode(ResourceType::Listener, &wrong, &mut Notes::default()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "listener (unreadable): a type.googleapis.com/envoy.config.listener.v3.Listener response holds a \
         type.googleapis.com/envoy.config.cluster.v3.Cluster"
    );
    let garbage = Any { type_url: XdsCluster::type_url(), value: vec![0xff, 0xff, 0xff] };
    let err = decode(ResourceType::Cluster, &garbage, &mut Notes::default()).unwrap_err();
    assert!(
        err.to_string().starts_with("cluster (unreadable): invalid envoy.config.cluster.v3.Cluster: "),
        "{err}"
    );
    assert_eq!(reject(&eds_cluster("")), "cluster : name: required");
}

mod tracing {
    use weft_xds_protos::envoy::config::core::v3::{GrpcService, grpc_service};
    use weft_xds_protos::envoy::config::trace::v3::{OpenTelemetryConfig, ZipkinConfig, tracing as provider};
    use weft_xds_protos::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager;
    use weft_xds_protos::envoy::r#type::v3::Percent;

    use super::super::*;

    fn otel(cluster: &str) -> Any {
        any(&OpenTelemetryConfig {
            grpc_service: Some(GrpcService {
                target_specifier: Some(grpc_service::TargetSpecifier::EnvoyGrpc(grpc_service::EnvoyGrpc {
                    cluster_name: cluster.into(),
                    ..Default::default()
                })),
                ..Default::default()
            }),
            service_name: "web".into(),
            ..Default::default()
        })
    }

    /// A listener whose connection manager traces with `tracing`.
    fn traced(tracing: http_connection_manager::Tracing) -> XdsListener {
        let hcm = HttpConnectionManager { tracing: Some(tracing), ..hcm_rds("routes") };
        listener_with(vec![chain(&hcm)])
    }

    fn with(config: Any, sampling: Option<f64>) -> http_connection_manager::Tracing {
        http_connection_manager::Tracing {
            provider: Some(provider::Http {
                name: "envoy.tracers.opentelemetry".into(),
                config_type: Some(provider::http::ConfigType::TypedConfig(config)),
            }),
            random_sampling: sampling.map(|value| Percent { value }),
            ..Default::default()
        }
    }

    #[test]
    fn an_opentelemetry_tracer_is_decoded_with_its_rate_and_defaults_to_every_request() {
        let l = listener(&traced(with(otel("collector"), Some(5.0))));
        let crate::config::ChainKind::Http(m) = &l.chains[0].kind else { panic!() };
        let t = m.tracing.as_ref().unwrap();
        assert_eq!((t.collector_cluster.as_str(), t.service_name.as_str()), ("collector", "web"));
        assert!((t.sampling_percent - 5.0).abs() < 1e-9);
        let l = listener(&traced(with(otel("collector"), None)));
        let crate::config::ChainKind::Http(m) = &l.chains[0].kind else { panic!() };
        assert!((m.tracing.as_ref().unwrap().sampling_percent - 100.0).abs() < 1e-9);
    }

    #[test]
    fn tracing_weft_proxy_cannot_honour_is_rejected_with_the_field() {
        let e = reject(&traced(with(any(&ZipkinConfig::default()), None)));
        assert!(e.contains("tracing.provider.typed_config") && e.contains("unsupported tracer"), "{e}");
        let e = reject(&traced(with(otel("collector"), Some(150.0))));
        assert!(e.contains("tracing.random_sampling") && e.contains("150"), "{e}");
        let e = reject(&traced(with(otel(""), None)));
        assert!(e.contains("grpc_service.envoy_grpc.cluster_name"), "{e}");
    }
}
