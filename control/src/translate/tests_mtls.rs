//! mTLS and TrafficTarget authorization: the shapes of the translated
//! resources for the payments example (plus an opaque TCP service).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};

use prost::{Message, Name};
use weft_xds_protos::envoy::config::cluster::v3::Cluster;
use weft_xds_protos::envoy::config::core::v3::{
    ConfigSource, TransportSocket, address, config_source::ConfigSourceSpecifier, grpc_service,
    socket_address, transport_socket,
};
use weft_xds_protos::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, LbEndpoint, lb_endpoint::HostIdentifier,
};
use weft_xds_protos::envoy::config::listener::v3::{Filter, FilterChain, Listener, filter, listener_filter};
use weft_xds_protos::envoy::config::rbac::v3::{Permission, Rbac, permission, principal, rbac};
use weft_xds_protos::envoy::config::route::v3::{header_matcher, route, route_action};
use weft_xds_protos::envoy::extensions::filters::http::rbac::v3::Rbac as HttpRbac;
use weft_xds_protos::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, http_connection_manager, http_filter,
};
use weft_xds_protos::envoy::extensions::filters::network::rbac::v3::Rbac as NetworkRbac;
use weft_xds_protos::envoy::extensions::filters::network::tcp_proxy::v3::{TcpProxy, tcp_proxy};
use weft_xds_protos::envoy::extensions::transport_sockets::tls::v3::{
    CommonTlsContext, DownstreamTlsContext, SdsSecretConfig, UpstreamTlsContext, common_tls_context,
    subject_alt_name_matcher, tls_parameters::TlsProtocol,
};
use weft_xds_protos::envoy::r#type::matcher::v3::{StringMatcher, path_matcher, string_matcher};
use weft_xds_protos::google::protobuf::{Any, Struct, value};

use super::*;
use crate::model::*;

const PAYMENT_SVC: &str = "outbound|8080||payment-svc.payments.svc.cluster.local";
const DB: &str = "outbound|5432||db.payments.svc.cluster.local";
const PAYMENT_ID: &str = "spiffe://cluster.local/ns/payments/sa/payment";
const FRONTEND_ID: &str = "spiffe://cluster.local/ns/payments/sa/frontend";
const SVC_CHAIN: &str = "inbound|8080|payment-svc.payments|8080";
const V1_CHAIN: &str = "inbound|8080|payment-v1.payments|8080";
const DB_CHAIN: &str = "inbound|5432|db.payments|5432";
const DB_LISTENER: &str = "outbound|5432||db.payments.svc.cluster.local";

/// examples/payments, plus `db`: an opaque TCP service on payment-v1's pod.
fn payments() -> MeshState {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/payments");
    let report = crate::source::ManifestDir::new(dir).load();
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    let mut state = (*report.state).clone();
    state
        .pods
        .get_mut(&Key::new("payments", "payment-v1"))
        .unwrap()
        .ports
        .push(ContainerPort { name: Some("tcp-db".into()), port: 5432 });
    let key = Key::new("payments", "db");
    state.services.insert(
        key.clone(),
        Service {
            key,
            selector: BTreeMap::from([("app".into(), "payment".into()), ("version".into(), "v1".into())]),
            cluster_ip: Some("10.96.0.20".parse().unwrap()),
            policy: Default::default(),
            ports: vec![ServicePort {
                name: Some("tcp-db".into()),
                port: 5432,
                target_port: TargetPort::Number(5432),
                protocol: Protocol::Tcp,
            }],
        },
    );
    state
}

fn node(sa: &str, ip: &str) -> ProxyNode {
    ProxyNode {
        id: sa.into(),
        namespace: "payments".into(),
        service_account: sa.into(),
        pod_ip: ip.parse().unwrap(),
        inbound_port: INBOUND_PORT,
        outbound_port: OUTBOUND_PORT,
        transparent: false,
    }
}

/// payment-v1's proxy (ServiceAccount `payment`): serves payment-svc, payment-v1 and db.
fn payment_v1() -> ProxyNode {
    node("payment", "127.0.10.2")
}

fn strict() -> MeshOptions {
    MeshOptions { authz: AuthzMode::Strict, ..MeshOptions::default() }
}

fn proxy(state: &MeshState, node: &ProxyNode, opts: &MeshOptions) -> ProxyResources {
    translate_proxy(state, &SplitTable::build(state), node, opts)
}

fn decode<M: Message + Name + Default>(any: &Any) -> M {
    assert_eq!(any.type_url, M::type_url());
    M::decode(any.value.as_slice()).unwrap()
}

fn socket_config(ts: &TransportSocket) -> &Any {
    assert_eq!(ts.name, "envoy.transport_sockets.tls");
    let Some(transport_socket::ConfigType::TypedConfig(any)) = &ts.config_type else { panic!() };
    any
}

fn exact(m: &StringMatcher) -> &str {
    let Some(string_matcher::MatchPattern::Exact(s)) = &m.match_pattern else { panic!("{m:?}") };
    s
}

fn regex(m: &StringMatcher) -> &str {
    let Some(string_matcher::MatchPattern::SafeRegex(re)) = &m.match_pattern else { panic!("{m:?}") };
    &re.regex
}

fn assert_sds(secret: &SdsSecretConfig, name: &str) {
    assert_eq!(secret.name, name);
    let source: &ConfigSource = secret.sds_config.as_ref().unwrap();
    assert_eq!(source.resource_api_version, weft_xds_protos::envoy::config::core::v3::ApiVersion::V3 as i32);
    let Some(ConfigSourceSpecifier::ApiConfigSource(api)) = &source.config_source_specifier else { panic!() };
    assert_eq!(
        api.api_type,
        weft_xds_protos::envoy::config::core::v3::api_config_source::ApiType::Grpc as i32
    );
    assert_eq!(api.transport_api_version, weft_xds_protos::envoy::config::core::v3::ApiVersion::V3 as i32);
    assert_eq!(api.grpc_services.len(), 1);
    let Some(grpc_service::TargetSpecifier::EnvoyGrpc(g)) = &api.grpc_services[0].target_specifier else {
        panic!()
    };
    assert_eq!(g.cluster_name, "weft-sds");
}

fn assert_tls_params(common: &CommonTlsContext) {
    let p = common.tls_params.as_ref().unwrap();
    assert_eq!(p.tls_minimum_protocol_version, TlsProtocol::TlSv12 as i32);
    assert_eq!(p.tls_maximum_protocol_version, TlsProtocol::TlSv13 as i32);
    assert_eq!(common.tls_certificate_sds_secret_configs.len(), 1);
    assert_sds(&common.tls_certificate_sds_secret_configs[0], "default");
}

fn is_mtls_match(s: &Struct) -> bool {
    s.fields.len() == 1 && matches!(s.fields["weft.mtls"].kind, Some(value::Kind::BoolValue(true)))
}

/// The upstream TLS context of a cluster's `mtls` match, if any.
fn upstream_tls(c: &Cluster) -> Option<UpstreamTlsContext> {
    assert!(c.transport_socket.is_none(), "{}: unmeshed endpoints stay plaintext", c.name);
    match c.transport_socket_matches.as_slice() {
        [] => None,
        [m] => {
            assert_eq!(m.name, "mtls");
            assert!(is_mtls_match(m.r#match.as_ref().unwrap()));
            Some(decode(socket_config(m.transport_socket.as_ref().unwrap())))
        }
        other => panic!("{}: {other:?}", c.name),
    }
}

/// The SAN URIs a cluster's TLS context accepts.
fn sans(tls: &UpstreamTlsContext) -> Vec<String> {
    let common = tls.common_tls_context.as_ref().unwrap();
    let Some(common_tls_context::ValidationContextType::CombinedValidationContext(combined)) =
        &common.validation_context_type
    else {
        panic!()
    };
    assert_sds(combined.validation_context_sds_secret_config.as_ref().unwrap(), "ROOTCA");
    combined
        .default_validation_context
        .as_ref()
        .unwrap()
        .match_typed_subject_alt_names
        .iter()
        .map(|m| {
            assert_eq!(m.san_type, subject_alt_name_matcher::SanType::Uri as i32);
            exact(m.matcher.as_ref().unwrap()).to_string()
        })
        .collect()
}

/// (address, port, identity, marked for mTLS) of each endpoint.
fn endpoints(cla: &ClusterLoadAssignment) -> Vec<(String, u32, Option<String>, bool)> {
    cla.endpoints[0]
        .lb_endpoints
        .iter()
        .map(|e: &LbEndpoint| {
            let Some(HostIdentifier::Endpoint(ep)) = &e.host_identifier else { panic!() };
            let Some(address::Address::SocketAddress(sa)) = ep.address.as_ref().unwrap().address.as_ref()
            else {
                panic!()
            };
            let Some(socket_address::PortSpecifier::PortValue(port)) = sa.port_specifier else { panic!() };
            let md = e.metadata.as_ref();
            let id = md.and_then(|m| m.filter_metadata.get("weft")).map(|w| {
                let Some(value::Kind::StringValue(s)) = &w.fields["identity"].kind else { panic!() };
                s.clone()
            });
            let mtls = md
                .and_then(|m| m.filter_metadata.get("envoy.transport_socket_match"))
                .map(|s| assert!(is_mtls_match(s), "{s:?}"))
                .is_some();
            (sa.address.clone(), port, id, mtls)
        })
        .collect()
}

fn inbound(own: &ProxyResources) -> &Listener {
    own.listeners.iter().find(|l| l.name == "inbound").expect("inbound listener")
}

fn chain<'a>(l: &'a Listener, name: &str) -> &'a FilterChain {
    l.filter_chains.iter().find(|c| c.name == name).unwrap_or_else(|| panic!("no chain {name}"))
}

fn typed(f: &Filter) -> &Any {
    let Some(filter::ConfigType::TypedConfig(any)) = &f.config_type else { panic!() };
    any
}

fn hcm(c: &FilterChain) -> HttpConnectionManager {
    assert_eq!(c.filters.len(), 1, "{}", c.name);
    assert_eq!(c.filters[0].name, "envoy.filters.network.http_connection_manager");
    decode(typed(&c.filters[0]))
}

/// The RBAC rules of a chain (HTTP or TCP), `None` when it has no RBAC filter.
fn chain_rbac(c: &FilterChain) -> Option<Rbac> {
    if c.filters.last().unwrap().name == "envoy.filters.network.tcp_proxy" {
        return match c.filters.as_slice() {
            [_] => None,
            [rbac, _] => {
                assert_eq!(rbac.name, "envoy.filters.network.rbac");
                let net: NetworkRbac = decode(typed(rbac));
                assert_eq!(net.stat_prefix, "inbound");
                Some(net.rules.unwrap())
            }
            other => panic!("{other:?}"),
        };
    }
    let hcm = hcm(c);
    let names: Vec<&str> = hcm.http_filters.iter().map(|f| f.name.as_str()).collect();
    match names.as_slice() {
        ["envoy.filters.http.router"] => None,
        ["envoy.filters.http.rbac", "envoy.filters.http.router"] => {
            let Some(http_filter::ConfigType::TypedConfig(any)) = &hcm.http_filters[0].config_type else {
                panic!()
            };
            let http: HttpRbac = decode(any);
            Some(http.rules.unwrap())
        }
        other => panic!("{}: unexpected http filters {other:?}", c.name),
    }
}

/// Policy name -> (principal names, permissions).
fn policies(rbac: &Rbac) -> BTreeMap<String, (Vec<String>, Vec<Permission>)> {
    assert_eq!(rbac.action, rbac::Action::Allow as i32);
    rbac.policies
        .iter()
        .map(|(name, p)| {
            let principals = p
                .principals
                .iter()
                .map(|pr| {
                    let Some(principal::Identifier::Authenticated(a)) = &pr.identifier else { panic!() };
                    exact(a.principal_name.as_ref().unwrap()).to_string()
                })
                .collect();
            (name.clone(), (principals, p.permissions.clone()))
        })
        .collect()
}

fn any_permission() -> Permission {
    Permission { rule: Some(permission::Rule::Any(true)) }
}

fn with_target(mut state: MeshState, name: &str, sources: &[&str], rules: Vec<RouteRef>) -> MeshState {
    let key = Key::new("payments", name);
    state.traffic_targets.insert(
        key.clone(),
        TrafficTarget {
            key,
            destination: IdentityRef { namespace: "payments".into(), name: "payment".into() },
            sources: sources
                .iter()
                .map(|s| IdentityRef { namespace: "payments".into(), name: s.to_string() })
                .collect(),
            rules,
        },
    );
    state
}

fn rule(kind: Kind, name: &str, matches: &[&str]) -> RouteRef {
    RouteRef { kind, name: name.into(), matches: matches.iter().map(|m| m.to_string()).collect() }
}

fn with_routes(mut state: MeshState) -> MeshState {
    state.http_route_groups.insert(
        Key::new("payments", "payment-api"),
        HttpRouteGroup {
            key: Key::new("payments", "payment-api"),
            matches: vec![
                HttpMatch {
                    name: "pay".into(),
                    path_regex: Some("/pay/.*".into()),
                    methods: vec!["POST".into(), "PUT".into()],
                    headers: BTreeMap::from([("x-tenant".to_string(), "acme|globex".to_string())]),
                },
                HttpMatch {
                    name: "read".into(),
                    path_regex: Some("/status".into()),
                    methods: vec!["*".into()],
                    headers: BTreeMap::new(),
                },
                HttpMatch {
                    name: "everything".into(),
                    path_regex: None,
                    methods: vec![],
                    headers: BTreeMap::new(),
                },
            ],
        },
    );
    state.tcp_routes.insert(
        Key::new("payments", "db-port"),
        TcpRoute { key: Key::new("payments", "db-port"), ports: vec![5432] },
    );
    state.tcp_routes.insert(
        Key::new("payments", "any-port"),
        TcpRoute { key: Key::new("payments", "any-port"), ports: vec![] },
    );
    state
}

// ------------------------------------------------------------------- names

#[test]
fn sni_names_the_service_port() {
    assert_eq!(
        names::sni(&Key::new("payments", "payment-svc"), 8080),
        "outbound_.8080_._.payment-svc.payments.svc.cluster.local"
    );
}

// ------------------------------------------------------------------- CDS/EDS

#[test]
fn clusters_with_meshed_endpoints_dial_them_with_mtls_sni_and_identities() {
    let mut state = payments();
    // A canary under another ServiceAccount: payment-svc then expects either identity.
    state.pods.get_mut(&Key::new("payments", "payment-v2")).unwrap().service_account =
        "payment-canary".into();
    let out = translate_mesh(&state, &MeshOptions::default());
    let tls = upstream_tls(&out.clusters[PAYMENT_SVC]).expect("mtls on payment-svc");
    assert_eq!(tls.sni, "outbound_.8080_._.payment-svc.payments.svc.cluster.local");
    assert_eq!(
        sans(&tls),
        vec![PAYMENT_ID.to_string(), "spiffe://cluster.local/ns/payments/sa/payment-canary".to_string()],
        "sorted distinct identities"
    );
    let common = tls.common_tls_context.as_ref().unwrap();
    assert_tls_params(common);
    assert!(common.alpn_protocols.is_empty(), "each side offers what its pool speaks");

    let v1 = upstream_tls(&out.clusters["outbound|8080||payment-v1.payments.svc.cluster.local"]).unwrap();
    assert_eq!(sans(&v1), vec![PAYMENT_ID.to_string()]);
    let db = upstream_tls(&out.clusters[DB]).expect("opaque TCP is mTLS too");
    assert_eq!(db.sni, "outbound_.5432_._.db.payments.svc.cluster.local");
    assert_eq!(sans(&db), vec![PAYMENT_ID.to_string()]);
    check_consistency(&out).unwrap();
}

#[test]
fn clusters_without_meshed_endpoints_stay_plaintext() {
    let mut state = payments();
    for pod in state.pods.values_mut() {
        pod.inject = Some(false);
    }
    let out = translate_mesh(&state, &MeshOptions::default());
    for c in out.clusters.values() {
        assert_eq!(upstream_tls(c), None, "{}", c.name);
    }
    assert_eq!(endpoints(&out.endpoints[DB]), vec![("127.0.10.2".into(), 5432, None, false)]);
}

#[test]
fn meshed_endpoints_carry_the_mtls_match_and_tcp_goes_through_the_peer_proxy() {
    let mut state = payments();
    // payment-v2 without a proxy: dialled directly, plaintext, no identity.
    state.pods.get_mut(&Key::new("payments", "payment-v2")).unwrap().inject = Some(false);
    let out = translate_mesh(&state, &MeshOptions::default());
    assert_eq!(
        endpoints(&out.endpoints[PAYMENT_SVC]),
        vec![
            ("127.0.10.2".into(), 4143, Some(PAYMENT_ID.into()), true),
            ("127.0.10.3".into(), 8080, None, false),
        ]
    );
    assert_eq!(
        endpoints(&out.endpoints[DB]),
        vec![("127.0.10.2".into(), 4143, Some(PAYMENT_ID.into()), true)]
    );
    assert_eq!(sans(&upstream_tls(&out.clusters[PAYMENT_SVC]).unwrap()), vec![PAYMENT_ID.to_string()]);

    // Plaintext: TCP goes straight to the app, nothing is marked.
    let plain = translate_mesh(&state, &MeshOptions::plaintext());
    assert_eq!(endpoints(&plain.endpoints[DB]), vec![("127.0.10.2".into(), 5432, None, false)]);
    assert_eq!(
        endpoints(&plain.endpoints[PAYMENT_SVC])[0],
        ("127.0.10.2".into(), 4143, Some(PAYMENT_ID.into()), false)
    );
}

#[test]
fn endpoint_identities_use_the_mesh_trust_domain() {
    let opts = MeshOptions { trust_domain: "example.org".into(), ..MeshOptions::default() };
    let out = translate_mesh(&payments(), &opts);
    let want = "spiffe://example.org/ns/payments/sa/payment";
    assert_eq!(endpoints(&out.endpoints[DB])[0].2.as_deref(), Some(want));
    assert_eq!(sans(&upstream_tls(&out.clusters[DB]).unwrap()), vec![want.to_string()]);
}

#[test]
fn load_assignments_encode_deterministically_and_decode_unchanged() {
    let state = payments();
    let a = translate_mesh(&state, &MeshOptions::default());
    for _ in 0..8 {
        let b = translate_mesh(&state, &MeshOptions::default());
        for (name, cla) in &a.endpoints {
            let bytes = encode_load_assignment(cla);
            assert_eq!(bytes, encode_load_assignment(&b.endpoints[name]), "{name}");
            assert_eq!(&ClusterLoadAssignment::decode(bytes.as_slice()).unwrap(), cla, "{name}");
        }
    }
}

// ------------------------------------------------------------------- LDS

#[test]
fn inbound_listener_has_one_sni_chain_per_service_port_and_no_default() {
    let state = payments();
    let own = proxy(&state, &payment_v1(), &MeshOptions::default());
    let names: Vec<&str> = own.listeners.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, vec!["outbound", "inbound"], "outbound and local TCP listeners are unchanged");
    let l = inbound(&own);
    let Some(weft_xds_protos::envoy::config::core::v3::address::Address::SocketAddress(sa)) =
        l.address.as_ref().unwrap().address.as_ref()
    else {
        panic!()
    };
    assert_eq!(
        (sa.address.as_str(), sa.port_specifier.clone()),
        ("127.0.10.2", Some(socket_address::PortSpecifier::PortValue(4143)))
    );
    assert_eq!(l.listener_filters.len(), 1);
    assert_eq!(l.listener_filters[0].name, "envoy.filters.listener.tls_inspector");
    let Some(listener_filter::ConfigType::TypedConfig(ti)) = &l.listener_filters[0].config_type else {
        panic!()
    };
    assert_eq!(
        ti.type_url,
        "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"
    );
    assert!(l.default_filter_chain.is_none(), "plaintext and unknown SNIs match nothing");

    let chains: Vec<(&str, Vec<String>, &str)> = l
        .filter_chains
        .iter()
        .map(|c| {
            let m = c.filter_chain_match.as_ref().unwrap();
            (c.name.as_str(), m.server_names.clone(), m.transport_protocol.as_str())
        })
        .collect();
    assert_eq!(
        chains,
        vec![
            (DB_CHAIN, vec!["outbound_.5432_._.db.payments.svc.cluster.local".to_string()], "tls"),
            (SVC_CHAIN, vec!["outbound_.8080_._.payment-svc.payments.svc.cluster.local".to_string()], "tls"),
            (V1_CHAIN, vec!["outbound_.8080_._.payment-v1.payments.svc.cluster.local".to_string()], "tls"),
        ]
    );
    for c in &l.filter_chains {
        let tls: DownstreamTlsContext = decode(socket_config(c.transport_socket.as_ref().unwrap()));
        assert_eq!(tls.require_client_certificate.map(|b| b.value), Some(true));
        let common = tls.common_tls_context.as_ref().unwrap();
        assert_tls_params(common);
        assert_eq!(common.alpn_protocols, vec!["h2".to_string(), "http/1.1".to_string()]);
        let Some(common_tls_context::ValidationContextType::ValidationContextSdsSecretConfig(root)) =
            &common.validation_context_type
        else {
            panic!()
        };
        assert_sds(root, "ROOTCA");
        assert_eq!(chain_rbac(c), None, "permissive, no TrafficTarget: no RBAC");
    }

    // HTTP: an inline route to the app port.
    let hcm = hcm(chain(l, SVC_CHAIN));
    assert_eq!(hcm.stat_prefix, "inbound");
    assert_eq!(hcm.codec_type, http_connection_manager::CodecType::Auto as i32);
    let Some(http_connection_manager::RouteSpecifier::RouteConfig(rc)) = &hcm.route_specifier else {
        panic!()
    };
    assert_eq!(rc.name, "inbound");
    assert_eq!(rc.virtual_hosts.len(), 1);
    assert_eq!(rc.virtual_hosts[0].domains, vec!["*".to_string()]);
    let Some(route::Action::Route(ra)) = &rc.virtual_hosts[0].routes[0].action else { panic!() };
    assert_eq!(ra.cluster_specifier, Some(route_action::ClusterSpecifier::Cluster("inbound|8080||".into())));

    // TCP: straight to the app port.
    let db = chain(l, DB_CHAIN);
    assert_eq!(db.filters.len(), 1);
    assert_eq!(db.filters[0].name, "envoy.filters.network.tcp_proxy");
    let tcp: TcpProxy = decode(typed(&db.filters[0]));
    assert_eq!(tcp.stat_prefix, "inbound");
    assert_eq!(tcp.cluster_specifier, Some(tcp_proxy::ClusterSpecifier::Cluster("inbound|5432||".into())));

    // Inbound clusters for both app ports; HTTP options only where HTTP goes.
    let clusters: Vec<(&str, bool)> = own
        .clusters
        .iter()
        .map(|c| (c.name.as_str(), !c.typed_extension_protocol_options.is_empty()))
        .collect();
    assert_eq!(clusters, vec![("inbound|5432||", false), ("inbound|8080||", true)]);
}

#[test]
fn a_workload_that_serves_nothing_has_no_inbound_listener() {
    let state = payments();
    let own = proxy(&state, &node("nobody", "127.0.10.99"), &MeshOptions::default());
    let names: Vec<&str> = own.listeners.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, vec!["outbound", DB_LISTENER]);
    assert!(own.clusters.is_empty());
}

// ------------------------------------------------------------------- RBAC

#[test]
fn permissive_mode_with_a_traffic_target_allows_only_its_sources() {
    let state = with_target(
        with_routes(payments()),
        "frontend-to-payment",
        &["frontend"],
        vec![rule(Kind::HttpRouteGroup, "payment-api", &[])],
    );
    let own = proxy(&state, &payment_v1(), &MeshOptions::default());
    let l = inbound(&own);
    let http = policies(&chain_rbac(chain(l, SVC_CHAIN)).expect("RBAC on the HTTP chain"));
    assert_eq!(http.keys().collect::<Vec<_>>(), vec!["payments/frontend-to-payment"]);
    let (principals, permissions) = &http["payments/frontend-to-payment"];
    assert_eq!(principals, &vec![FRONTEND_ID.to_string()]);
    assert_eq!(permissions.len(), 3, "one per match of the group");
    assert_eq!(permissions[2], any_permission(), "an empty match allows anything");

    // The TCP chain: an HTTPRouteGroup allows nothing there, and the target names this destination.
    let db = chain_rbac(chain(l, DB_CHAIN)).expect("RBAC on the TCP chain");
    assert!(db.policies.is_empty(), "{db:?}");

    // Another destination is not affected.
    let fraud = proxy(&state, &node("fraud-detect", "127.0.10.4"), &MeshOptions::default());
    for c in &inbound(&fraud).filter_chains {
        assert_eq!(chain_rbac(c), None);
    }
}

#[test]
fn http_route_group_matches_become_path_method_and_header_permissions() {
    let state = with_target(
        with_routes(payments()),
        "frontend-to-payment",
        &["frontend", "frontend"],
        vec![rule(Kind::HttpRouteGroup, "payment-api", &["pay", "read"])],
    );
    let own = proxy(&state, &payment_v1(), &MeshOptions::default());
    let rbac = chain_rbac(chain(inbound(&own), V1_CHAIN)).unwrap();
    let (principals, permissions) = &policies(&rbac)["payments/frontend-to-payment"];
    assert_eq!(principals, &vec![FRONTEND_ID.to_string()], "sources deduplicated");
    assert_eq!(permissions.len(), 2, "only the named matches");

    let Some(permission::Rule::AndRules(pay)) = &permissions[0].rule else { panic!("{:?}", permissions[0]) };
    assert_eq!(pay.rules.len(), 3);
    let Some(permission::Rule::UrlPath(path)) = &pay.rules[0].rule else { panic!() };
    let Some(path_matcher::Rule::Path(path)) = &path.rule else { panic!() };
    assert_eq!(regex(path), "^(?:/pay/.*)$", "full-path match");
    let Some(permission::Rule::OrRules(methods)) = &pay.rules[1].rule else { panic!() };
    let methods: Vec<(&str, &str)> = methods
        .rules
        .iter()
        .map(|p| {
            let Some(permission::Rule::Header(h)) = &p.rule else { panic!() };
            let Some(header_matcher::HeaderMatchSpecifier::StringMatch(m)) = &h.header_match_specifier else {
                panic!()
            };
            (h.name.as_str(), exact(m))
        })
        .collect();
    assert_eq!(methods, vec![(":method", "POST"), (":method", "PUT")]);
    let Some(permission::Rule::Header(tenant)) = &pay.rules[2].rule else { panic!() };
    assert_eq!(tenant.name, "x-tenant");
    let Some(header_matcher::HeaderMatchSpecifier::StringMatch(m)) = &tenant.header_match_specifier else {
        panic!()
    };
    assert_eq!(regex(m), "^(?:acme|globex)$");

    // `*` means any method: only the path remains.
    let Some(permission::Rule::AndRules(read)) = &permissions[1].rule else { panic!() };
    assert_eq!(read.rules.len(), 1);
    assert!(matches!(read.rules[0].rule, Some(permission::Rule::UrlPath(_))));
}

#[test]
fn strict_mode_without_traffic_targets_denies_everything() {
    let state = payments();
    let own = proxy(&state, &payment_v1(), &strict());
    let l = inbound(&own);
    assert_eq!(l.filter_chains.len(), 3);
    for c in &l.filter_chains {
        let rbac = chain_rbac(c).unwrap_or_else(|| panic!("{}: no RBAC in strict mode", c.name));
        assert_eq!(rbac.action, rbac::Action::Allow as i32);
        assert!(rbac.policies.is_empty(), "{}: an empty ALLOW denies everything", c.name);
    }
}

#[test]
fn tcp_route_rules_apply_by_the_chains_app_port() {
    let state = with_target(
        with_target(
            with_routes(payments()),
            "db-clients",
            &["frontend"],
            vec![rule(Kind::TcpRoute, "db-port", &[]), rule(Kind::HttpRouteGroup, "payment-api", &["read"])],
        ),
        "anything",
        &["fraud-detect"],
        vec![rule(Kind::TcpRoute, "any-port", &[])],
    );
    let own = proxy(&state, &payment_v1(), &strict());
    let l = inbound(&own);
    let db = policies(&chain_rbac(chain(l, DB_CHAIN)).unwrap());
    assert_eq!(db["payments/db-clients"], (vec![FRONTEND_ID.to_string()], vec![any_permission()]));
    assert_eq!(
        db["payments/anything"],
        (vec!["spiffe://cluster.local/ns/payments/sa/fraud-detect".to_string()], vec![any_permission()])
    );
    // On an HTTP chain of app port 8080, the 5432 TCPRoute gives nothing; the HTTPRouteGroup rule does.
    let http = policies(&chain_rbac(chain(l, SVC_CHAIN)).unwrap());
    assert_eq!(http["payments/db-clients"].1.len(), 1);
    assert!(matches!(http["payments/db-clients"].1[0].rule, Some(permission::Rule::AndRules(_))));
    assert_eq!(
        http["payments/anything"].1,
        vec![any_permission()],
        "a port-less TCPRoute allows every chain"
    );
}

#[test]
fn rules_naming_missing_objects_allow_nothing() {
    let state = with_target(
        payments(),
        "dangling",
        &["frontend"],
        vec![rule(Kind::HttpRouteGroup, "nope", &[]), rule(Kind::TcpRoute, "nope", &[])],
    );
    let own = proxy(&state, &payment_v1(), &MeshOptions::default());
    for c in &inbound(&own).filter_chains {
        let rbac = chain_rbac(c).expect("the target still names this destination");
        assert!(rbac.policies.is_empty(), "{}: {rbac:?}", c.name);
    }
}

#[test]
fn rbac_needs_mtls() {
    let state = with_target(
        with_routes(payments()),
        "db-clients",
        &["frontend"],
        vec![rule(Kind::TcpRoute, "db-port", &[])],
    );
    let plain_strict = MeshOptions { authz: AuthzMode::Strict, ..MeshOptions::plaintext() };
    let a = proxy(&state, &payment_v1(), &plain_strict);
    let b = proxy(&payments(), &payment_v1(), &MeshOptions::plaintext());
    assert_eq!(a, b, "without peer identities there is nothing to authorize");
}

#[test]
fn listeners_with_rbac_encode_deterministically() {
    let state = with_target(
        with_target(
            with_routes(payments()),
            "db-clients",
            &["frontend", "fraud-detect"],
            vec![rule(Kind::TcpRoute, "db-port", &[]), rule(Kind::HttpRouteGroup, "payment-api", &[])],
        ),
        "anything",
        &["fraud-detect"],
        vec![rule(Kind::TcpRoute, "any-port", &[])],
    );
    let bytes = || -> Vec<Vec<u8>> {
        proxy(&state, &payment_v1(), &strict()).listeners.iter().map(Message::encode_to_vec).collect()
    };
    let first = bytes();
    for _ in 0..8 {
        assert_eq!(bytes(), first);
    }
}

// ------------------------------------------------------------------- plaintext

#[test]
fn plaintext_keeps_todays_shapes() {
    let state = with_target(payments(), "t", &["frontend"], vec![rule(Kind::TcpRoute, "any-port", &[])]);
    let opts = MeshOptions::plaintext();
    let out = translate_mesh(&state, &opts);
    for c in out.clusters.values() {
        assert!(c.transport_socket_matches.is_empty() && c.transport_socket.is_none(), "{}", c.name);
    }
    for cla in out.endpoints.values() {
        assert!(endpoints(cla).iter().all(|e| !e.3));
    }
    let own = proxy(&state, &payment_v1(), &opts);
    let l = inbound(&own);
    assert!(l.listener_filters.is_empty());
    assert_eq!(l.filter_chains.len(), 1);
    assert_eq!(l.filter_chains[0].name, "inbound-http");
    assert!(l.filter_chains[0].transport_socket.is_none());
    assert_eq!(chain_rbac(&l.filter_chains[0]), None);
    let ids: BTreeSet<&str> = own.clusters.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(ids, BTreeSet::from(["inbound|8080||"]), "no inbound cluster for TCP without mTLS");
}

#[test]
fn snapshot_versions_are_stable_with_mtls() {
    let state = std::sync::Arc::new(payments());
    let opts = std::sync::Arc::new(MeshOptions::default());
    let versions = || -> Vec<String> {
        let s = crate::cache::Snapshot::build(1, state.clone(), opts.clone()).unwrap();
        s.clusters.values().chain(s.endpoints.values()).map(|r| r.version.clone()).collect()
    };
    let first = versions();
    for _ in 0..8 {
        assert_eq!(versions(), first);
    }
}
