#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use weft_xds_protos::envoy::config::endpoint::v3::lb_endpoint::HostIdentifier;
use weft_xds_protos::envoy::config::route::v3::{RouteConfiguration, route, route_action};

use super::*;
use crate::model::*;

/// A small mesh builder for table tests.
#[derive(Default)]
struct Mesh(MeshState);

impl Mesh {
    fn ns(mut self, name: &str, inject: bool) -> Self {
        self.0.namespaces.insert(name.into(), Namespace { name: name.into(), inject: Some(inject) });
        self
    }
    fn svc(mut self, ns: &str, name: &str, app: &str, port: u16, target: u16) -> Self {
        let key = Key::new(ns, name);
        self.0.services.insert(
            key.clone(),
            Service {
                key,
                selector: BTreeMap::from([("app".to_string(), app.to_string())]),
                cluster_ip: None,
                policy: Default::default(),
                ports: vec![ServicePort {
                    name: Some("http".into()),
                    port,
                    target_port: TargetPort::Number(target),
                    protocol: Protocol::Http,
                }],
            },
        );
        self
    }
    fn pod(mut self, ns: &str, name: &str, app: &str, ip: &str) -> Self {
        let key = Key::new(ns, name);
        self.0.pods.insert(
            key.clone(),
            Pod {
                key,
                labels: BTreeMap::from([
                    ("app".to_string(), app.to_string()),
                    ("version".to_string(), name.to_string()),
                ]),
                ip: Some(ip.parse().unwrap()),
                service_account: name.into(),
                ready: true,
                inject: None,
                ports: vec![],
            },
        );
        self
    }
    fn split(mut self, ns: &str, name: &str, root: &str, backends: &[(&str, u64)], seen: u64) -> Self {
        let key = Key::new(ns, name);
        self.0.split_first_seen.insert(key.clone(), seen);
        self.0.traffic_splits.insert(
            key.clone(),
            TrafficSplit {
                key,
                api_version: "split.smi-spec.io/v1alpha1".into(),
                created: None,
                root_service: root.into(),
                backends: backends
                    .iter()
                    .map(|(s, w)| Backend { service: s.to_string(), weight_milli: *w })
                    .collect(),
                matches: vec![],
            },
        );
        self
    }
}

/// The payments canary: payment-svc selects both versions; payment-v1/v2 select one each.
fn payments() -> Mesh {
    Mesh::default()
        .ns("payments", true)
        .svc("payments", "payment-svc", "payment", 8080, 8080)
        .svc("payments", "payment-v1", "payment-v1", 8080, 8080)
        .svc("payments", "payment-v2", "payment-v2", 8080, 8080)
        .pod("payments", "v1", "payment-v1", "127.0.10.2")
        .pod("payments", "v2", "payment-v2", "127.0.10.3")
        .svc("payments", "frontend", "frontend", 80, 8080)
        .pod("payments", "frontend", "frontend", "127.0.10.1")
}

fn fix_labels(mut mesh: Mesh) -> Mesh {
    // payment-svc selects app=payment: give both version pods that label too.
    for pod in mesh.0.pods.values_mut() {
        if pod.labels["app"].starts_with("payment-") {
            let v = pod.labels["app"].clone();
            pod.labels.insert("app".into(), "payment".into());
            pod.labels.insert("track".into(), v);
        }
    }
    for svc in mesh.0.services.values_mut() {
        if svc.key.name == "payment-v1" || svc.key.name == "payment-v2" {
            svc.selector = BTreeMap::from([("track".to_string(), svc.key.name.clone())]);
        }
    }
    mesh
}

fn vhost_routes<'a>(
    rc: &'a RouteConfiguration,
    vhost: &str,
) -> &'a [weft_xds_protos::envoy::config::route::v3::Route] {
    &rc.virtual_hosts.iter().find(|v| v.name == vhost).expect("virtual host").routes
}

/// The (cluster, weight) pairs of a route, or the direct response status.
fn action(r: &weft_xds_protos::envoy::config::route::v3::Route) -> Result<Vec<(String, u32)>, u32> {
    match r.action.as_ref().unwrap() {
        route::Action::Route(ra) => Ok(match ra.cluster_specifier.as_ref().unwrap() {
            route_action::ClusterSpecifier::Cluster(c) => vec![(c.clone(), 1)],
            route_action::ClusterSpecifier::WeightedClusters(w) => {
                w.clusters.iter().map(|c| (c.name.clone(), c.weight.as_ref().unwrap().value)).collect()
            }
            other => panic!("unexpected {other:?}"),
        }),
        route::Action::DirectResponse(d) => Err(d.status),
        other => panic!("unexpected {other:?}"),
    }
}

const ROOT_VHOST: &str = "payment-svc.payments.svc.cluster.local:8080";
const V1: &str = "outbound|8080||payment-v1.payments.svc.cluster.local";
const V2: &str = "outbound|8080||payment-v2.payments.svc.cluster.local";
const ROOT: &str = "outbound|8080||payment-svc.payments.svc.cluster.local";

#[test]
fn split_weights_follow_backends_that_can_take_traffic() {
    struct Case {
        name: &'static str,
        backends: &'static [(&'static str, u64)],
        drop_pod: Option<&'static str>,
        want: Result<Vec<(&'static str, u32)>, u32>,
    }
    let cases = [
        Case {
            name: "canary 950m/50m",
            backends: &[("payment-v1", 950), ("payment-v2", 50)],
            drop_pod: None,
            want: Ok(vec![(V1, 950), (V2, 50)]),
        },
        Case {
            name: "even",
            backends: &[("payment-v1", 500), ("payment-v2", 500)],
            drop_pod: None,
            want: Ok(vec![(V1, 500), (V2, 500)]),
        },
        Case {
            name: "all to v2 (0/1)",
            backends: &[("payment-v1", 0), ("payment-v2", 1000)],
            drop_pod: None,
            want: Ok(vec![(V2, 1000)]),
        },
        Case {
            name: "missing backend left out",
            backends: &[("payment-v1", 950), ("payment-v3", 50)],
            drop_pod: None,
            want: Ok(vec![(V1, 950)]),
        },
        Case {
            name: "backend without endpoints left out",
            backends: &[("payment-v1", 950), ("payment-v2", 50)],
            drop_pod: Some("v2"),
            want: Ok(vec![(V1, 950)]),
        },
        Case {
            name: "root as backend means its own endpoints",
            backends: &[("payment-svc", 900), ("payment-v2", 100)],
            drop_pod: None,
            want: Ok(vec![(ROOT, 900), (V2, 100)]),
        },
        Case {
            name: "total weight zero is a 503",
            backends: &[("payment-v1", 0), ("payment-v2", 0)],
            drop_pod: None,
            want: Err(503),
        },
        Case {
            name: "no backend with endpoints is a 503",
            backends: &[("payment-v3", 1000)],
            drop_pod: None,
            want: Err(503),
        },
    ];
    for case in cases {
        let mut mesh =
            fix_labels(payments()).split("payments", "payment-split", "payment-svc", case.backends, 1);
        if let Some(pod) = case.drop_pod {
            mesh.0.pods.remove(&Key::new("payments", pod));
        }
        let out = translate_mesh(&mesh.0, &MeshOptions::plaintext());
        let routes = vhost_routes(&out.outbound_routes["payments"], ROOT_VHOST);
        assert_eq!(routes.len(), 1, "{}", case.name);
        let want = case.want.map(|v| v.into_iter().map(|(c, w)| (c.to_string(), w)).collect::<Vec<_>>());
        assert_eq!(action(&routes[0]), want, "{}", case.name);
        check_consistency(&out).unwrap_or_else(|e| panic!("{}: {e}", case.name));
    }
}

#[test]
fn split_status_says_why_backends_were_left_out() {
    let mesh = fix_labels(payments()).split(
        "payments",
        "s",
        "payment-svc",
        &[("payment-v1", 1), ("payment-v3", 1)],
        1,
    );
    let out = translate_mesh(&mesh.0, &MeshOptions::plaintext());
    let status = &out.splits.status[&Key::new("payments", "s")];
    assert!(status.accepted);
    assert_eq!(status.reasons, vec!["backend payment-v3 does not exist; left out".to_string()]);
}

#[test]
fn oldest_split_wins_and_the_other_is_in_conflict() {
    let mesh = fix_labels(payments())
        .split("payments", "newer", "payment-svc", &[("payment-v2", 1000)], 2)
        .split("payments", "older", "payment-svc", &[("payment-v1", 1000)], 1);
    let out = translate_mesh(&mesh.0, &MeshOptions::plaintext());
    assert_eq!(out.splits.by_root[&Key::new("payments", "payment-svc")], Key::new("payments", "older"));
    let newer = &out.splits.status[&Key::new("payments", "newer")];
    assert!(!newer.accepted);
    assert_eq!(newer.conflict_with, Some(Key::new("payments", "older")));
    let routes = vhost_routes(&out.outbound_routes["payments"], ROOT_VHOST);
    assert_eq!(action(&routes[0]), Ok(vec![(V1.to_string(), 1000)]));
}

#[test]
fn split_matches_split_only_matching_requests() {
    let mut mesh = fix_labels(payments()).split("payments", "s", "payment-svc", &[("payment-v2", 1000)], 1);
    let split = mesh.0.traffic_splits.get_mut(&Key::new("payments", "s")).unwrap();
    split.matches = vec![RouteRef { kind: Kind::HttpRouteGroup, name: "beta".into(), matches: vec![] }];
    mesh.0.http_route_groups.insert(
        Key::new("payments", "beta"),
        HttpRouteGroup {
            key: Key::new("payments", "beta"),
            matches: vec![HttpMatch {
                name: "beta-users".into(),
                path_regex: Some("/pay/.*".into()),
                methods: vec!["POST".into()],
                headers: BTreeMap::from([("x-beta".to_string(), "yes".to_string())]),
            }],
        },
    );
    let out = translate_mesh(&mesh.0, &MeshOptions::plaintext());
    let routes = vhost_routes(&out.outbound_routes["payments"], ROOT_VHOST);
    assert_eq!(routes.len(), 2);
    assert_eq!(action(&routes[0]), Ok(vec![(V2.to_string(), 1000)]));
    let m = routes[0].r#match.as_ref().unwrap();
    let header_names: Vec<&str> = m.headers.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(header_names, vec!["x-beta", ":method"]);
    assert_eq!(action(&routes[1]), Ok(vec![(ROOT.to_string(), 1)]), "the rest go to the root");
}

#[test]
fn domains_cover_every_name_a_client_may_use() {
    let mut mesh = payments();
    mesh.0.services.get_mut(&Key::new("payments", "payment-svc")).unwrap().cluster_ip =
        Some("10.96.0.10".parse().unwrap());
    let out = translate_mesh(&mesh.0.clone(), &MeshOptions::plaintext());
    let vh = |ns: &str| {
        out.outbound_routes[ns].virtual_hosts.iter().find(|v| v.name == ROOT_VHOST).unwrap().domains.clone()
    };
    let same_ns = vh("payments");
    for d in [
        "payment-svc",
        "payment-svc:8080",
        "payment-svc.payments:8080",
        "payment-svc.payments.svc:8080",
        "payment-svc.payments.svc.cluster.local",
        "payment-svc.payments.svc.cluster.local:8080",
        "10.96.0.10:8080",
    ] {
        assert!(same_ns.contains(&d.to_string()), "{d} missing from {same_ns:?}");
    }
    mesh.0.namespaces.insert("shop".into(), Namespace { name: "shop".into(), inject: None });
    let out = translate_mesh(&mesh.0, &MeshOptions::plaintext());
    let other_ns = out.outbound_routes["shop"]
        .virtual_hosts
        .iter()
        .find(|v| v.name == ROOT_VHOST)
        .unwrap()
        .domains
        .clone();
    assert!(
        !other_ns.iter().any(|d| d == "payment-svc" || d == "payment-svc:8080"),
        "short name leaks across namespaces"
    );
    assert!(other_ns.contains(&"payment-svc.payments:8080".to_string()));
}

#[test]
fn meshed_endpoints_are_dialled_at_the_inbound_port_with_their_identity() {
    let mut mesh = payments().ns("payments", false);
    mesh.0.pods.get_mut(&Key::new("payments", "v1")).unwrap().inject = Some(true);
    let out = translate_mesh(&mesh.0, &MeshOptions::plaintext());
    let addr = |cluster: &str| -> Vec<(String, u32, Option<String>)> {
        out.endpoints[cluster].endpoints[0]
            .lb_endpoints
            .iter()
            .map(|e| {
                let Some(HostIdentifier::Endpoint(ep)) = &e.host_identifier else { panic!() };
                let Some(weft_xds_protos::envoy::config::core::v3::address::Address::SocketAddress(sa)) =
                    ep.address.as_ref().unwrap().address.as_ref()
                else {
                    panic!()
                };
                let Some(weft_xds_protos::envoy::config::core::v3::socket_address::PortSpecifier::PortValue(
                    p,
                )) = sa.port_specifier
                else {
                    panic!()
                };
                let id = e.metadata.as_ref().map(|m| {
                    match m.filter_metadata["weft"].fields["identity"].kind.as_ref().unwrap() {
                        weft_xds_protos::google::protobuf::value::Kind::StringValue(s) => s.clone(),
                        _ => panic!(),
                    }
                });
                (sa.address.clone(), p, id)
            })
            .collect()
    };
    assert_eq!(
        addr(V1),
        vec![("127.0.10.2".into(), 4143, Some("spiffe://cluster.local/ns/payments/sa/v1".into()))]
    );
    assert_eq!(addr(V2), vec![("127.0.10.3".into(), 8080, None)]);
}

#[test]
fn inbound_listener_routes_each_service_authority_to_the_app_port() {
    let mesh = payments();
    let node = ProxyNode {
        id: "v1".into(),
        namespace: "payments".into(),
        service_account: "v1".into(),
        pod_ip: "127.0.10.2".parse().unwrap(),
        inbound_port: INBOUND_PORT,
        outbound_port: OUTBOUND_PORT,
        transparent: false,
    };
    let splits = SplitTable::build(&mesh.0);
    let own = translate_proxy(&mesh.0, &splits, &node, &MeshOptions::plaintext());
    let names: Vec<&str> = own.listeners.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, vec!["outbound", "inbound"]);
    assert_eq!(own.clusters.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(), vec!["inbound|8080||"]);
}

#[test]
fn translation_is_deterministic() {
    let mesh = fix_labels(payments()).split(
        "payments",
        "s",
        "payment-svc",
        &[("payment-v1", 950), ("payment-v2", 50)],
        1,
    );
    let a = crate::cache::Snapshot::build(
        1,
        std::sync::Arc::new(mesh.0.clone()),
        std::sync::Arc::new(MeshOptions::plaintext()),
    )
    .unwrap();
    let b = crate::cache::Snapshot::build(
        1,
        std::sync::Arc::new(mesh.0),
        std::sync::Arc::new(MeshOptions::plaintext()),
    )
    .unwrap();
    let versions = |s: &crate::cache::Snapshot| -> Vec<String> {
        s.clusters
            .values()
            .chain(s.endpoints.values())
            .chain(s.routes.values())
            .map(|r| r.version.clone())
            .collect()
    };
    assert_eq!(versions(&a), versions(&b));
}

#[test]
fn consistency_check_finds_a_route_to_a_missing_cluster() {
    let mesh = fix_labels(payments());
    let mut out = translate_mesh(&mesh.0, &MeshOptions::plaintext());
    out.clusters.remove(V1);
    out.endpoints.remove(V1);
    let err = check_consistency(&out).unwrap_err();
    assert!(matches!(err, ConsistencyError::MissingCluster { ref cluster, .. } if cluster == V1), "{err}");
    let mut out = translate_mesh(&mesh.0, &MeshOptions::plaintext());
    out.endpoints.remove(V2);
    assert_eq!(check_consistency(&out), Err(ConsistencyError::MissingEndpoints(V2.into())));
}

#[test]
fn weights_whose_sum_exceeds_u32_are_scaled_together() {
    let mesh = fix_labels(payments()).split(
        "payments",
        "s",
        "payment-svc",
        &[("payment-v1", 3_000_000_000_000), ("payment-v2", 3_000_000_000_000)],
        1,
    );
    let out = translate_mesh(&mesh.0, &MeshOptions::plaintext());
    let routes = vhost_routes(&out.outbound_routes["payments"], ROOT_VHOST);
    let weights = action(&routes[0]).unwrap();
    let sum: u64 = weights.iter().map(|(_, w)| u64::from(*w)).sum();
    assert!(sum <= u64::from(u32::MAX), "{weights:?}");
    assert_eq!(weights[0].1, weights[1].1, "still an even split");
}

#[test]
fn service_annotations_set_route_timeout_and_retries() {
    let mut mesh = payments();
    mesh.0.services.get_mut(&Key::new("payments", "payment-svc")).unwrap().policy = HttpPolicy {
        timeout: Some(std::time::Duration::from_millis(500)),
        retry: Some(RetryPolicy {
            retry_on: vec!["5xx".into(), "reset".into()],
            num_retries: 2,
            per_try_timeout: Some(std::time::Duration::from_millis(200)),
        }),
    };
    let out = translate_mesh(&mesh.0, &MeshOptions::plaintext());
    let routes = vhost_routes(&out.outbound_routes["payments"], ROOT_VHOST);
    let Some(route::Action::Route(ra)) = &routes[0].action else { panic!() };
    assert_eq!(ra.timeout.as_ref().map(|d| (d.seconds, d.nanos)), Some((0, 500_000_000)));
    let retry = ra.retry_policy.as_ref().unwrap();
    assert_eq!(retry.retry_on, "5xx,reset");
    assert_eq!(retry.num_retries.as_ref().unwrap().value, 2);
    let other = vhost_routes(&out.outbound_routes["payments"], "payment-v1.payments.svc.cluster.local:8080");
    let Some(route::Action::Route(ra)) = &other[0].action else { panic!() };
    assert!(ra.timeout.is_none() && ra.retry_policy.is_none(), "only the annotated service");
}

#[test]
fn opaque_tcp_services_get_a_local_listener_on_the_pod_ip() {
    let mut mesh = payments();
    let key = Key::new("payments", "ledger");
    mesh.0.services.insert(
        key.clone(),
        Service {
            key,
            selector: BTreeMap::from([("app".to_string(), "ledger".to_string())]),
            cluster_ip: None,
            policy: Default::default(),
            ports: vec![
                ServicePort {
                    name: Some("tcp".into()),
                    port: 9000,
                    target_port: TargetPort::Number(9000),
                    protocol: Protocol::Tcp,
                },
                ServicePort {
                    name: Some("tcp-app".into()),
                    port: 8080,
                    target_port: TargetPort::Number(8080),
                    protocol: Protocol::Tcp,
                },
            ],
        },
    );
    mesh.0.pods.get_mut(&Key::new("payments", "frontend")).unwrap().ports =
        vec![ContainerPort { name: Some("http".into()), port: 8080 }];
    let mut node = ProxyNode {
        id: "frontend".into(),
        namespace: "payments".into(),
        service_account: "frontend".into(),
        pod_ip: "127.0.10.1".parse().unwrap(),
        inbound_port: INBOUND_PORT,
        outbound_port: OUTBOUND_PORT,
        transparent: false,
    };
    let splits = SplitTable::build(&mesh.0);
    let names = |node: &ProxyNode| -> Vec<String> {
        translate_proxy(&mesh.0, &splits, node, &MeshOptions::plaintext())
            .listeners
            .into_iter()
            .map(|l| l.name)
            .collect()
    };
    // 8080 is the frontend's own app port, so only 9000 gets a listener.
    assert_eq!(names(&node), vec!["outbound", "inbound", "outbound|9000||ledger.payments.svc.cluster.local"]);
    node.transparent = true;
    assert_eq!(names(&node), vec!["outbound", "inbound"], "redirected traffic uses the outbound listener");
}

#[test]
fn forwarding_routes_keep_per_route_stats_named_after_the_route() {
    let mut mesh = fix_labels(payments()).split("payments", "s", "payment-svc", &[("payment-v2", 1000)], 1);
    let split = mesh.0.traffic_splits.get_mut(&Key::new("payments", "s")).unwrap();
    split.matches = vec![RouteRef { kind: Kind::HttpRouteGroup, name: "beta".into(), matches: vec![] }];
    mesh.0.http_route_groups.insert(
        Key::new("payments", "beta"),
        HttpRouteGroup {
            key: Key::new("payments", "beta"),
            matches: vec![HttpMatch {
                name: "beta-users".into(),
                path_regex: Some("/pay/.*".into()),
                methods: vec![],
                headers: BTreeMap::new(),
            }],
        },
    );
    let out = translate_mesh(&mesh.0, &MeshOptions::plaintext());
    let rc = &out.outbound_routes["payments"];
    let named: Vec<(&str, &str)> =
        vhost_routes(rc, ROOT_VHOST).iter().map(|r| (r.name.as_str(), r.stat_prefix.as_str())).collect();
    assert_eq!(named, [("split/s/beta-users", "split/s/beta-users"), ("default", "default")]);
    // Every forwarding route of every virtual host has one.
    for vh in &rc.virtual_hosts {
        for r in vh.routes.iter().filter(|r| matches!(r.action, Some(route::Action::Route(_)))) {
            assert_eq!(r.stat_prefix, r.name, "{}: {r:?}", vh.name);
        }
    }
    // A split without a backend that can take traffic answers itself: no upstream, no stats.
    let empty = fix_labels(payments()).split("payments", "s", "payment-svc", &[("nope", 1)], 1);
    let out = translate_mesh(&empty.0, &MeshOptions::plaintext());
    let routes = vhost_routes(&out.outbound_routes["payments"], ROOT_VHOST);
    assert_eq!(action(&routes[0]), Err(503));
    assert_eq!(routes[0].stat_prefix, "");
}

#[test]
fn outbound_hosts_encode_each_namespace_as_its_route_configuration_would() {
    // Two namespaces, a second port, and two Services sharing a ClusterIP: the second
    // Service's IP domains are already claimed and must be dropped in every namespace.
    let mut mesh = payments().ns("shop", true).svc("shop", "cart", "cart", 80, 8080).svc(
        "shop",
        "payment-svc",
        "payment",
        8080,
        8080,
    );
    let ip = Some("10.96.0.10".parse().unwrap());
    mesh.0.services.get_mut(&Key::new("payments", "payment-svc")).unwrap().cluster_ip = ip;
    mesh.0.services.get_mut(&Key::new("shop", "cart")).unwrap().cluster_ip = ip;
    mesh.0.services.get_mut(&Key::new("shop", "cart")).unwrap().ports.push(ServicePort {
        name: Some("admin".into()),
        port: 9090,
        target_port: TargetPort::Number(9090),
        protocol: Protocol::Http,
    });
    let splits = SplitTable::build(&mesh.0);
    let hosts = OutboundHosts::build(&mesh.0, &splits);
    for ns in ["payments", "shop", "elsewhere", ""] {
        let rc = hosts.for_namespace(ns);
        assert_eq!(hosts.encode_for_namespace(ns), prost::Message::encode_to_vec(&rc), "namespace {ns:?}");
        let mut all: Vec<&String> = rc.virtual_hosts.iter().flat_map(|v| &v.domains).collect();
        let n = all.len();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), n, "a domain appears twice for namespace {ns:?}");
    }
    let shop = hosts.for_namespace("shop");
    let cart = shop.virtual_hosts.iter().find(|v| v.name == "cart.shop.svc.cluster.local:80").unwrap();
    assert!(cart.domains.contains(&"cart".to_string()) && cart.domains.contains(&"cart:80".to_string()));
    // payment-svc (first in key order) claimed the bare IP; cart keeps its own port's.
    assert!(!cart.domains.iter().any(|d| d == "10.96.0.10"), "{:?}", cart.domains);
    assert!(cart.domains.contains(&"10.96.0.10:80".to_string()), "{:?}", cart.domains);
    let payments = hosts.for_namespace("payments");
    let cart = payments.virtual_hosts.iter().find(|v| v.name == "cart.shop.svc.cluster.local:80").unwrap();
    assert!(!cart.domains.iter().any(|d| d == "cart" || d == "cart:80"), "{:?}", cart.domains);
    let root = payments.virtual_hosts.iter().find(|v| v.name == ROOT_VHOST).unwrap();
    assert!(root.domains.contains(&"10.96.0.10:8080".to_string()));
}
