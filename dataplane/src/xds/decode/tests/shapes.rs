//! Every supported resource shape, built by hand, and the runtime config it becomes.

use std::sync::Arc;
use std::time::Duration;

use weft_xds_protos::envoy::config::cluster::v3::{CircuitBreakers as XdsCircuitBreakers, circuit_breakers};
use weft_xds_protos::envoy::config::core::v3::{
    CidrRange, DataSource, HealthStatus, Http2ProtocolOptions, Metadata, RoutingPriority, data_source,
};
use weft_xds_protos::envoy::config::listener::v3::{FilterChainMatch, ListenerFilter, listener_filter};
use weft_xds_protos::envoy::config::route::v3::{
    DirectResponseAction, HeaderMatcher, RetryPolicy as XdsRetryPolicy,
    WeightedCluster as XdsWeightedCluster, header_matcher, weighted_cluster,
};
use weft_xds_protos::envoy::extensions::filters::listener::original_dst::v3::OriginalDst;
use weft_xds_protos::envoy::extensions::filters::network::tcp_proxy::v3::{
    TcpProxy as XdsTcpProxy, tcp_proxy,
};
use weft_xds_protos::envoy::extensions::upstreams::http::v3::{HttpProtocolOptions, http_protocol_options};
use weft_xds_protos::envoy::r#type::matcher::v3::{RegexMatcher, StringMatcher, string_matcher};
use weft_xds_protos::google::protobuf::{
    BoolValue, Duration as PbDuration, Struct, UInt32Value, Value, value,
};

use super::*;
use crate::config::{
    Action, ChainKind, CircuitBreakers, Discovery, Endpoint, HeaderMatch, HttpManager, LbPolicy, PathMatch,
    RetryPolicy, RouteSource, StringMatch, TcpProxy, UpstreamProtocol, WeightedCluster,
};

fn secs(s: i64, ms: i32) -> PbDuration {
    PbDuration { seconds: s, nanos: ms * 1_000_000 }
}

fn weighted(pairs: &[(&str, u32)]) -> Vec<WeightedCluster> {
    pairs.iter().map(|(n, w)| WeightedCluster { name: n.to_string(), weight: *w }).collect()
}

fn action(rt: &RouteTable) -> &Action {
    &rt.virtual_hosts[0].routes[0].action
}

fn forward_of(r: XdsRoute) -> crate::config::Forward {
    match action(&route_table(&table_with(vec![r]))) {
        Action::Forward(f) => f.clone(),
        other => panic!("{other:?}"),
    }
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

#[test]
fn listener_with_rds_http_and_a_tcp_chain_matched_by_destination() {
    let tcp = XdsTcpProxy {
        stat_prefix: "db".into(),
        cluster_specifier: Some(tcp_proxy::ClusterSpecifier::WeightedClusters(tcp_proxy::WeightedCluster {
            clusters: vec![
                tcp_proxy::weighted_cluster::ClusterWeight {
                    name: "a".into(),
                    weight: 3,
                    ..Default::default()
                },
                tcp_proxy::weighted_cluster::ClusterWeight {
                    name: "b".into(),
                    weight: 1,
                    ..Default::default()
                },
            ],
        })),
        ..Default::default()
    };
    let mut db = chain(&tcp);
    db.name = "db".into();
    db.filter_chain_match = Some(FilterChainMatch {
        destination_port: Some(UInt32Value { value: 5432 }),
        prefix_ranges: vec![
            CidrRange { address_prefix: "10.0.0.0".into(), prefix_len: Some(UInt32Value { value: 8 }) },
            CidrRange { address_prefix: "fd00::".into(), prefix_len: None },
        ],
        ..Default::default()
    });
    let mut l = listener_with(vec![db]);
    l.default_filter_chain = Some(chain(&hcm_rds("routes")));
    l.listener_filters = vec![ListenerFilter {
        name: "envoy.filters.listener.original_dst".into(),
        config_type: Some(listener_filter::ConfigType::TypedConfig(any(&OriginalDst {}))),
        ..Default::default()
    }];
    let got = listener(&l);
    assert_eq!(got.name, "l");
    assert_eq!(got.addr, "10.0.0.1:4140".parse().unwrap());
    assert!(got.original_dst);
    assert_eq!(got.chains.len(), 1);
    assert_eq!(got.chains[0].name, "db");
    assert_eq!(got.chains[0].destination_port, Some(5432));
    assert_eq!(
        got.chains[0].destination_prefixes,
        vec![("10.0.0.0".parse().unwrap(), 8), ("fd00::".parse().unwrap(), 0)]
    );
    assert_eq!(
        got.chains[0].kind,
        ChainKind::Tcp(TcpProxy { stat_prefix: "db".into(), clusters: weighted(&[("a", 3), ("b", 1)]) })
    );
    let default = got.default_chain.unwrap();
    assert_eq!(default.name, "l/default");
    assert_eq!(
        default.kind,
        ChainKind::Http(HttpManager {
            stat_prefix: "http".into(),
            routes: RouteSource::Rds("routes".into()),
            rbac: None,
            tracing: None,
        })
    );
}

#[test]
fn inline_route_config_codecs_and_a_plain_tcp_cluster() {
    for codec in [http_connection_manager::CodecType::Http1, http_connection_manager::CodecType::Http2] {
        let mut hcm = hcm_rds("x");
        hcm.codec_type = codec as i32;
        hcm.route_specifier =
            Some(http_connection_manager::RouteSpecifier::RouteConfig(table_with(vec![route_to("app")])));
        let got = listener(&listener_with(vec![chain(&hcm)]));
        let ChainKind::Http(HttpManager { routes: RouteSource::Inline(rt), .. }) = &got.chains[0].kind else {
            panic!("{:?}", got.chains[0].kind);
        };
        assert_eq!(rt.name, "rt");
        assert_eq!(got.chains[0].name, "l/0");
    }
    let tcp = XdsTcpProxy {
        cluster_specifier: Some(tcp_proxy::ClusterSpecifier::Cluster("c".into())),
        ..Default::default()
    };
    let got = listener(&listener_with(vec![chain(&tcp)]));
    assert_eq!(
        got.chains[0].kind,
        ChainKind::Tcp(TcpProxy { stat_prefix: String::new(), clusters: weighted(&[("c", 1)]) })
    );
}

#[test]
fn path_matches_prefix_exact_and_anchored_regex() {
    let with_path = |p| XdsRoute {
        r#match: Some(RouteMatch { path_specifier: Some(p), ..Default::default() }),
        ..route_to("c")
    };
    let rt = route_table(&table_with(vec![
        with_path(route_match::PathSpecifier::Prefix("/api".into())),
        with_path(route_match::PathSpecifier::Path("/health".into())),
        with_path(route_match::PathSpecifier::SafeRegex(RegexMatcher {
            regex: "/v[0-9]+/.*".into(),
            engine_type: None,
        })),
    ]));
    let paths: Vec<&PathMatch> = rt.virtual_hosts[0].routes.iter().map(|r| &r.path).collect();
    assert_eq!(paths[0], &PathMatch::Prefix("/api".into()));
    assert_eq!(paths[1], &PathMatch::Exact("/health".into()));
    let PathMatch::Regex(re) = paths[2] else { panic!("{:?}", paths[2]) };
    assert!(re.is_match("/v2/pay"));
    // Anchored like RE2's full match: a prefix or a suffix alone does not match.
    assert!(!re.is_match("/x/v2/pay"));
    assert!(!re.is_match("/v2"));
}

#[test]
fn header_matchers_of_every_kind() {
    use header_matcher::HeaderMatchSpecifier as S;
    let sm = |p: string_matcher::MatchPattern, ignore_case| {
        S::StringMatch(StringMatcher { match_pattern: Some(p), ignore_case })
    };
    let re = |r: &str| RegexMatcher { regex: r.into(), engine_type: None };
    let cases: Vec<(Option<S>, bool)> = vec![
        (Some(sm(string_matcher::MatchPattern::Exact("a".into()), false)), false),
        (Some(sm(string_matcher::MatchPattern::Prefix("b".into()), false)), false),
        (Some(sm(string_matcher::MatchPattern::Suffix("c".into()), false)), false),
        (Some(sm(string_matcher::MatchPattern::Contains("d".into()), false)), true),
        (Some(sm(string_matcher::MatchPattern::SafeRegex(re("e+")), false)), false),
        (Some(S::PresentMatch(false)), false),
        (None, false),
        (Some(S::ExactMatch("legacy".into())), false),
    ];
    let headers: Vec<HeaderMatcher> = cases
        .into_iter()
        .map(|(spec, invert)| HeaderMatcher {
            name: "X-Test".into(),
            header_match_specifier: spec,
            invert_match: invert,
            ..Default::default()
        })
        .collect();
    let route = XdsRoute {
        r#match: Some(RouteMatch {
            path_specifier: Some(route_match::PathSpecifier::Prefix("/".into())),
            headers,
            ..Default::default()
        }),
        ..route_to("c")
    };
    let rt = route_table(&table_with(vec![route]));
    let got = &rt.virtual_hosts[0].routes[0].headers;
    let h = |value, invert| HeaderMatch { name: "x-test".into(), value, invert };
    assert_eq!(got[0], h(StringMatch::Exact("a".into()), false));
    assert_eq!(got[1], h(StringMatch::Prefix("b".into()), false));
    assert_eq!(got[2], h(StringMatch::Suffix("c".into()), false));
    assert_eq!(got[3], h(StringMatch::Contains("d".into()), true));
    let StringMatch::Regex(e) = &got[4].value else { panic!("{:?}", got[4]) };
    assert!(e.is_match("eee") && !e.is_match("eeef"));
    assert_eq!(got[5], h(StringMatch::Present(false), false));
    assert_eq!(got[6], h(StringMatch::Present(true), false), "no value: present");
    assert_eq!(got[7], h(StringMatch::Exact("legacy".into()), false));
}

#[test]
fn ignore_case_string_matchers_become_case_insensitive_regexes() {
    let cases = [
        (string_matcher::MatchPattern::Exact("Ab.c".into()), "aB.C", "aBxC"),
        (string_matcher::MatchPattern::Prefix("Ab".into()), "aBcd", "xAb"),
        (string_matcher::MatchPattern::Suffix("Ab".into()), "xxaB", "Abx"),
        (string_matcher::MatchPattern::Contains("Ab".into()), "xaBx", "axb"),
    ];
    for (pattern, matching, other) in cases {
        let header = HeaderMatcher {
            name: "x".into(),
            header_match_specifier: Some(header_matcher::HeaderMatchSpecifier::StringMatch(StringMatcher {
                match_pattern: Some(pattern.clone()),
                ignore_case: true,
            })),
            ..Default::default()
        };
        let route = XdsRoute {
            r#match: Some(RouteMatch {
                path_specifier: Some(route_match::PathSpecifier::Prefix("/".into())),
                headers: vec![header],
                ..Default::default()
            }),
            ..route_to("c")
        };
        let rt = route_table(&table_with(vec![route]));
        let StringMatch::Regex(re) = &rt.virtual_hosts[0].routes[0].headers[0].value else {
            panic!("{pattern:?}")
        };
        assert!(re.is_match(matching), "{pattern:?} should match {matching}");
        assert!(!re.is_match(other), "{pattern:?} should not match {other}");
    }
}

#[test]
fn grpc_route_match_requires_a_grpc_content_type() {
    let route = XdsRoute {
        r#match: Some(RouteMatch {
            path_specifier: Some(route_match::PathSpecifier::Prefix("/".into())),
            grpc: Some(Default::default()),
            ..Default::default()
        }),
        ..route_to("c")
    };
    let rt = route_table(&table_with(vec![route]));
    assert_eq!(
        rt.virtual_hosts[0].routes[0].headers,
        [HeaderMatch {
            name: "content-type".into(),
            value: StringMatch::Prefix("application/grpc".into()),
            invert: false
        }]
    );
}

#[test]
fn domains_are_lowercased_and_wildcards_kept() {
    let mut rc = table_with(vec![route_to("c")]);
    rc.virtual_hosts[0].domains = vec!["Pay.EXAMPLE:80".into(), "*.svc".into(), "api.*".into()];
    let rt = route_table(&rc);
    assert_eq!(rt.virtual_hosts[0].domains, ["pay.example:80", "*.svc", "api.*"]);
    assert_eq!(rt.virtual_hosts[0].name, "vh");
}

#[test]
fn weighted_clusters_drop_zero_weights() {
    let ra = RouteAction {
        cluster_specifier: Some(route_action::ClusterSpecifier::WeightedClusters(XdsWeightedCluster {
            clusters: vec![
                weighted_cluster::ClusterWeight {
                    name: "v1".into(),
                    weight: Some(UInt32Value { value: 95 }),
                    ..Default::default()
                },
                weighted_cluster::ClusterWeight {
                    name: "v2".into(),
                    weight: Some(UInt32Value { value: 5 }),
                    ..Default::default()
                },
                weighted_cluster::ClusterWeight {
                    name: "v3".into(),
                    weight: Some(UInt32Value { value: 0 }),
                    ..Default::default()
                },
            ],
            total_weight: Some(UInt32Value { value: 100 }),
            ..Default::default()
        })),
        ..Default::default()
    };
    assert_eq!(forward_of(with_action(ra)).clusters, weighted(&[("v1", 95), ("v2", 5)]));
}

#[test]
fn timeouts_default_to_15s_and_zero_disables_them() {
    assert_eq!(forward_of(with_action(to_c())).timeout, Some(Duration::from_secs(15)));
    let set = RouteAction { timeout: Some(secs(0, 250)), ..to_c() };
    assert_eq!(forward_of(with_action(set)).timeout, Some(Duration::from_millis(250)));
    let zero = RouteAction { timeout: Some(secs(0, 0)), ..to_c() };
    assert_eq!(forward_of(with_action(zero)).timeout, None);
}

#[test]
fn retry_policies_parse_every_supported_condition() {
    let policy = XdsRetryPolicy {
        retry_on: "5xx, gateway-error,connect-failure,reset,retriable-status-codes".into(),
        retriable_status_codes: vec![409, 429],
        per_try_timeout: Some(secs(1, 500)),
        ..Default::default()
    };
    let ra = RouteAction { retry_policy: Some(policy), ..to_c() };
    assert_eq!(
        forward_of(with_action(ra)).retry,
        Some(RetryPolicy {
            on_5xx: true,
            on_gateway_error: true,
            on_connect_failure: true,
            on_reset: true,
            retriable_status_codes: vec![409, 429],
            num_retries: 1,
            per_try_timeout: Some(Duration::from_millis(1500)),
        })
    );
    // Codes without `retriable-status-codes` in retry_on are not retried (as in Envoy).
    let policy = XdsRetryPolicy {
        retry_on: "reset".into(),
        retriable_status_codes: vec![409],
        num_retries: Some(UInt32Value { value: 3 }),
        ..Default::default()
    };
    let retry = forward_of(with_action(RouteAction { retry_policy: Some(policy), ..to_c() })).retry.unwrap();
    assert!(retry.on_reset && retry.retriable_status_codes.is_empty() && retry.num_retries == 3);
    // Retrying on nothing is no retry policy.
    let none = RouteAction { retry_policy: Some(XdsRetryPolicy::default()), ..to_c() };
    assert_eq!(forward_of(with_action(none)).retry, None);
}

#[test]
fn a_virtual_hosts_retry_policy_applies_to_routes_without_their_own() {
    let mut rc = table_with(vec![
        route_to("c"),
        with_action(RouteAction {
            retry_policy: Some(XdsRetryPolicy { retry_on: "reset".into(), ..Default::default() }),
            ..to_c()
        }),
    ]);
    rc.virtual_hosts[0].retry_policy = Some(XdsRetryPolicy { retry_on: "5xx".into(), ..Default::default() });
    let rt = route_table(&rc);
    let retry = |i: usize| match &rt.virtual_hosts[0].routes[i].action {
        Action::Forward(f) => f.retry.clone().unwrap(),
        other => panic!("{other:?}"),
    };
    assert!(retry(0).on_5xx && !retry(0).on_reset);
    assert!(retry(1).on_reset && !retry(1).on_5xx, "the route's own policy replaces the virtual host's");
}

#[test]
fn direct_responses_with_inline_bodies() {
    for (body, want) in [
        (Some(data_source::Specifier::InlineString("gone\n".into())), "gone\n"),
        (Some(data_source::Specifier::InlineBytes(b"raw".to_vec())), "raw"),
        (None, ""),
    ] {
        let r = XdsRoute {
            action: Some(route::Action::DirectResponse(DirectResponseAction {
                status: 503,
                body: body.map(|s| DataSource { specifier: Some(s), ..Default::default() }),
                ..Default::default()
            })),
            ..route_to("c")
        };
        let rt = route_table(&table_with(vec![r]));
        assert_eq!(*action(&rt), Action::Direct { status: 503, body: bytes::Bytes::from(want) });
    }
}

#[test]
fn clusters_static_least_request_with_limits_and_http2() {
    let http2 = HttpProtocolOptions {
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
    let c = XdsCluster {
        name: "app".into(),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Static as i32,
        )),
        load_assignment: Some(assignment("", vec![lb_endpoint("127.0.0.1", 8080)])),
        connect_timeout: Some(secs(0, 250)),
        lb_policy: cluster::LbPolicy::LeastRequest as i32,
        circuit_breakers: Some(XdsCircuitBreakers {
            thresholds: vec![
                circuit_breakers::Thresholds {
                    priority: RoutingPriority::High as i32,
                    max_connections: Some(UInt32Value { value: 1 }),
                    ..Default::default()
                },
                circuit_breakers::Thresholds {
                    max_connections: Some(UInt32Value { value: 10 }),
                    max_requests: Some(UInt32Value { value: 20 }),
                    ..Default::default()
                },
            ],
            ..Default::default()
        }),
        typed_extension_protocol_options: [(
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions".to_string(),
            any(&http2),
        )]
        .into_iter()
        .collect(),
        ..Default::default()
    };
    let (got, eds) = cluster(&c);
    assert_eq!(eds, None);
    let app = Endpoint { addr: "127.0.0.1:8080".parse().unwrap(), identity: None, weight: 1, mtls: false };
    assert_eq!(
        got,
        Cluster {
            name: "app".into(),
            discovery: Discovery::Static(Arc::new(ClusterEndpoints {
                cluster: "app".into(),
                endpoints: vec![app]
            })),
            connect_timeout: Duration::from_millis(250),
            lb: LbPolicy::LeastRequest,
            limits: CircuitBreakers { max_connections: 10, max_pending_requests: 1024, max_requests: 20 },
            protocol: UpstreamProtocol::Http2,
            tls: None,
        }
    );
}

#[test]
fn eds_clusters_subscribe_to_their_service_name_and_default_like_envoy() {
    let mut c = eds_cluster("outbound|80||a");
    let (got, eds) = cluster(&c);
    assert_eq!(eds.as_deref(), Some("outbound|80||a"));
    assert_eq!(got.discovery, Discovery::Eds);
    assert_eq!(got.connect_timeout, Duration::from_secs(5));
    assert_eq!(got.lb, LbPolicy::RoundRobin);
    assert_eq!(got.limits, CircuitBreakers::default());
    assert_eq!(got.protocol, UpstreamProtocol::Http1);
    c.eds_cluster_config.as_mut().unwrap().service_name = "a-endpoints".into();
    assert_eq!(cluster(&c).1.as_deref(), Some("a-endpoints"));
    // The deprecated v2-style fields still say HTTP/2.
    #[allow(deprecated)]
    {
        c.http2_protocol_options = Some(Http2ProtocolOptions::default());
        assert_eq!(cluster(&c).0.protocol, UpstreamProtocol::Http2);
        c.protocol_selection = cluster::ClusterProtocolSelection::UseDownstreamProtocol as i32;
        assert_eq!(cluster(&c).0.protocol, UpstreamProtocol::SameAsDownstream);
    }
}

#[test]
fn endpoints_keep_weights_and_identity_and_drop_unhealthy_hosts() {
    let mut weighted_ep = lb_endpoint("10.0.0.1", 4143);
    weighted_ep.load_balancing_weight = Some(UInt32Value { value: 3 });
    let identity = Value { kind: Some(value::Kind::StringValue("spiffe://cluster.local/ns/a/sa/b".into())) };
    weighted_ep.metadata = Some(Metadata {
        filter_metadata: [(
            "weft".to_string(),
            Struct { fields: [("identity".to_string(), identity)].into_iter().collect() },
        )]
        .into_iter()
        .collect(),
        ..Default::default()
    });
    let mut healthy = lb_endpoint("10.0.0.2", 8080);
    healthy.health_status = HealthStatus::Healthy as i32;
    let mut draining = lb_endpoint("10.0.0.3", 8080);
    draining.health_status = HealthStatus::Draining as i32;
    let mut unhealthy = lb_endpoint("10.0.0.4", 8080);
    unhealthy.health_status = HealthStatus::Unhealthy as i32;
    let got =
        endpoints(&assignment("c", vec![weighted_ep, healthy, draining, unhealthy, lb_endpoint("::1", 80)]));
    assert_eq!(got.cluster, "c");
    assert_eq!(
        got.endpoints,
        [
            Endpoint {
                addr: "10.0.0.1:4143".parse().unwrap(),
                identity: Some("spiffe://cluster.local/ns/a/sa/b".into()),
                weight: 3,
                mtls: false,
            },
            Endpoint { addr: "10.0.0.2:8080".parse().unwrap(), identity: None, weight: 1, mtls: false },
            Endpoint { addr: "[::1]:80".parse().unwrap(), identity: None, weight: 1, mtls: false },
        ]
    );
}

#[test]
fn fields_that_change_nothing_on_the_wire_are_ignored_and_noted() {
    let mut hcm = hcm_rds("r");
    hcm.access_log = vec![Default::default()];
    hcm.generate_request_id = Some(BoolValue { value: false });
    let mut l = listener_with(vec![chain(&hcm)]);
    l.stat_prefix = "stats".into();
    let (_, notes) = accept(&l);
    assert_eq!(
        notes.ignored.into_iter().collect::<Vec<_>>(),
        [
            "HttpConnectionManager.access_log",
            "HttpConnectionManager.generate_request_id",
            "Listener.stat_prefix"
        ]
    );
}
