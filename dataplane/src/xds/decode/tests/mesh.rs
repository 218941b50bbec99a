//! What `weft control` emits, decoded: the payments example (plus an opaque
//! TCP service) as seen by the frontend's proxy.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use weft_control::source::ManifestDir;
use weft_control::translate::{AuthzMode, MeshOptions, ProxyNode, translate_mesh, translate_proxy};

use super::*;
use crate::config::rbac::RbacAction;
use crate::config::{
    Action, ChainKind, CircuitBreakers, Discovery, DownstreamTls, Endpoint, Forward, HttpManager, LbPolicy,
    PathMatch, RetryPolicy, Route, RouteSource, TcpProxy, UpstreamProtocol, UpstreamTls, WeightedCluster,
};

const PAYMENT_SVC: &str = "outbound|8080||payment-svc.payments.svc.cluster.local";
const V1: &str = "outbound|8080||payment-v1.payments.svc.cluster.local";
const V2: &str = "outbound|8080||payment-v2.payments.svc.cluster.local";
const DB: &str = "outbound|5432||db.payments.svc.cluster.local";

/// An opaque TCP service with a ClusterIP, so the outbound listener gets a
/// chain matched by original destination.
const DB_YAML: &str = "\
apiVersion: v1
kind: Service
metadata: {name: db, namespace: payments}
spec:
  selector: {app: db}
  clusterIP: 10.96.0.20
  ports: [{name: tcp-db, port: 5432, targetPort: 5432, appProtocol: tcp}]
---
apiVersion: v1
kind: Pod
metadata: {name: db, namespace: payments, labels: {app: db}}
spec: {serviceAccountName: db}
status: {podIP: 127.0.10.9}
---
apiVersion: v1
kind: Service
metadata:
  name: ledger
  namespace: payments
  annotations:
    weft.io/timeout: 500ms
    weft.io/retry-on: 5xx,connect-failure
    weft.io/retries: '2'
    weft.io/per-try-timeout: 200ms
spec:
  selector: {app: ledger}
  ports: [{name: http, port: 8080, targetPort: 8080}]
---
apiVersion: v1
kind: Pod
metadata: {name: ledger, namespace: payments, labels: {app: ledger}}
spec: {serviceAccountName: ledger}
status: {podIP: 127.0.10.10}
";

/// Every resource the frontend's proxy gets, decoded, by type then name.
struct Decoded {
    listeners: BTreeMap<String, Listener>,
    routes: BTreeMap<String, RouteTable>,
    clusters: BTreeMap<String, (Cluster, Option<String>)>,
    endpoints: BTreeMap<String, ClusterEndpoints>,
    ignored: Notes,
}

fn frontend() -> Decoded {
    frontend_with(&MeshOptions::plaintext())
}

/// The frontend's resources under these mesh options.
fn frontend_with(opts: &MeshOptions) -> Decoded {
    let dir = tempfile::tempdir().unwrap();
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/payments");
    for entry in std::fs::read_dir(example).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
    }
    std::fs::write(dir.path().join("db.yaml"), DB_YAML).unwrap();
    let report = ManifestDir::new(dir.path()).load();
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    let mesh = translate_mesh(&report.state, opts);
    let node = ProxyNode {
        id: "frontend".into(),
        namespace: "payments".into(),
        service_account: "frontend".into(),
        pod_ip: "127.0.10.1".parse().unwrap(),
        inbound_port: 4143,
        outbound_port: 4140,
        transparent: false,
    };
    let own = translate_proxy(&report.state, &mesh.splits, &node, opts);
    let mut ignored = Notes::default();
    let mut decoded = Decoded {
        listeners: BTreeMap::new(),
        routes: BTreeMap::new(),
        clusters: BTreeMap::new(),
        endpoints: BTreeMap::new(),
        ignored: Notes::default(),
    };
    let mut add = |kind, any: Any| match decode(kind, &any, &mut ignored).unwrap_or_else(|e| panic!("{e}")) {
        (name, Resource::Listener(l)) => assert!(decoded.listeners.insert(name, (*l).clone()).is_none()),
        (name, Resource::Route(r)) => assert!(decoded.routes.insert(name, (*r).clone()).is_none()),
        (name, Resource::Cluster(c, eds)) => {
            assert!(decoded.clusters.insert(name, ((*c).clone(), eds)).is_none())
        }
        (name, Resource::Endpoints(e)) => assert!(decoded.endpoints.insert(name, (*e).clone()).is_none()),
    };
    for l in &own.listeners {
        add(ResourceType::Listener, any(l));
    }
    for c in own.clusters.iter().chain(mesh.clusters.values()) {
        add(ResourceType::Cluster, any(c));
    }
    add(ResourceType::Route, any(&mesh.outbound_routes["payments"]));
    for e in mesh.endpoints.values() {
        add(ResourceType::Endpoint, any(e));
    }
    decoded.ignored = ignored;
    decoded
}

fn forward(clusters: &[(&str, u32)]) -> Action {
    Action::Forward(Forward {
        clusters: clusters.iter().map(|(n, w)| WeightedCluster { name: n.to_string(), weight: *w }).collect(),
        timeout: Some(Duration::from_secs(15)),
        retry: None,
    })
}

#[test]
fn the_control_planes_resources_use_no_field_weft_proxy_ignores() {
    assert_eq!(frontend().ignored, Notes::default());
}

#[test]
fn outbound_listener_routes_http_by_rds_and_opaque_tcp_by_original_destination() {
    let d = frontend();
    let outbound = &d.listeners["outbound"];
    assert_eq!(outbound.addr, "127.0.10.1:4140".parse::<SocketAddr>().unwrap());
    assert!(outbound.original_dst);
    let http = outbound.default_chain.as_ref().unwrap();
    assert_eq!(
        http.kind,
        ChainKind::Http(HttpManager {
            stat_prefix: "outbound".into(),
            routes: RouteSource::Rds("outbound".into()),
            rbac: None,
            tracing: None,
        })
    );
    assert_eq!(outbound.chains.len(), 1);
    let db = &outbound.chains[0];
    assert_eq!(db.destination_port, Some(5432));
    assert_eq!(db.destination_prefixes, vec![("10.96.0.20".parse().unwrap(), 32)]);
    assert_eq!(
        db.kind,
        ChainKind::Tcp(TcpProxy {
            stat_prefix: DB.into(),
            clusters: vec![WeightedCluster { name: DB.into(), weight: 1 }]
        })
    );
}

#[test]
fn locally_each_opaque_tcp_service_gets_a_listener_on_the_pod_ip() {
    let d = frontend();
    let db = &d.listeners[DB];
    assert_eq!(db.addr, "127.0.10.1:5432".parse::<SocketAddr>().unwrap());
    assert_eq!(db.chains.len(), 1);
    assert_eq!(db.chains[0].destination_port, None);
    assert_eq!(
        db.chains[0].kind,
        ChainKind::Tcp(TcpProxy {
            stat_prefix: DB.into(),
            clusters: vec![WeightedCluster { name: DB.into(), weight: 1 }]
        })
    );
}

#[test]
fn service_annotations_become_the_routes_timeout_and_retries() {
    let d = frontend();
    let vh = d.routes["outbound"].virtual_hosts.iter().find(|v| v.name.starts_with("ledger.")).unwrap();
    let Action::Forward(f) = &vh.routes[0].action else { panic!("{:?}", vh.routes[0].action) };
    assert_eq!(f.timeout, Some(Duration::from_millis(500)));
    assert_eq!(
        f.retry,
        Some(RetryPolicy {
            on_5xx: true,
            on_gateway_error: false,
            on_connect_failure: true,
            on_reset: false,
            retriable_status_codes: vec![],
            num_retries: 2,
            per_try_timeout: Some(Duration::from_millis(200)),
        })
    );
}

#[test]
fn inbound_listener_carries_its_routes_inline_to_the_local_app() {
    let d = frontend();
    let inbound = &d.listeners["inbound"];
    assert_eq!(inbound.addr, "127.0.10.1:4143".parse::<SocketAddr>().unwrap());
    assert!(!inbound.original_dst);
    let ChainKind::Http(HttpManager { routes: RouteSource::Inline(table), .. }) = &inbound.chains[0].kind
    else {
        panic!("{:?}", inbound.chains[0].kind);
    };
    let names: Vec<&str> = table.virtual_hosts.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(names, ["frontend.payments.svc.cluster.local:80", "fallback"]);
    assert!(table.virtual_hosts[0].domains.contains(&"frontend.payments:80".to_string()));
    assert_eq!(table.virtual_hosts[1].domains, ["*"]);
    let to_app = Route {
        name: "default".into(),
        path: PathMatch::Prefix("/".into()),
        headers: vec![],
        action: forward(&[("inbound|8080||", 1)]),
    };
    for vh in &table.virtual_hosts {
        assert_eq!(vh.routes, std::slice::from_ref(&to_app));
    }
}

#[test]
fn outbound_routes_split_the_canary_by_weight() {
    let d = frontend();
    let table = &d.routes["outbound"];
    let vh =
        table.virtual_hosts.iter().find(|v| v.name == "payment-svc.payments.svc.cluster.local:8080").unwrap();
    for domain in ["payment-svc", "payment-svc:8080", "payment-svc.payments.svc.cluster.local:8080"] {
        assert!(vh.domains.contains(&domain.to_string()), "{domain} in {:?}", vh.domains);
    }
    assert_eq!(vh.routes.len(), 1);
    assert_eq!(vh.routes[0].action, forward(&[(V1, 950), (V2, 50)]));
}

#[test]
fn outbound_clusters_take_endpoints_from_eds_and_keep_the_downstream_protocol() {
    let d = frontend();
    let (c, eds) = &d.clusters[PAYMENT_SVC];
    assert_eq!(eds.as_deref(), Some(PAYMENT_SVC));
    assert_eq!(
        *c,
        Cluster {
            name: PAYMENT_SVC.into(),
            discovery: Discovery::Eds,
            connect_timeout: Duration::from_secs(1),
            lb: LbPolicy::RoundRobin,
            limits: CircuitBreakers::default(),
            protocol: UpstreamProtocol::SameAsDownstream,
            tls: None,
        }
    );
    // Opaque TCP: no HTTP protocol options.
    assert_eq!(d.clusters[DB].0.protocol, UpstreamProtocol::Http1);
}

#[test]
fn inbound_cluster_lists_the_app_statically() {
    let d = frontend();
    let (c, eds) = &d.clusters["inbound|8080||"];
    assert_eq!(*eds, None);
    let app = Endpoint { addr: "127.0.10.1:8080".parse().unwrap(), identity: None, weight: 1, mtls: false };
    assert_eq!(
        c.discovery,
        Discovery::Static(Arc::new(ClusterEndpoints {
            cluster: "inbound|8080||".into(),
            endpoints: vec![app]
        }))
    );
}

#[test]
fn meshed_endpoints_are_dialled_at_their_proxy_with_their_identity() {
    let d = frontend();
    let v1 = &d.endpoints[V1];
    assert_eq!(v1.cluster, V1);
    assert_eq!(
        v1.endpoints,
        [Endpoint {
            addr: "127.0.10.2:4143".parse().unwrap(),
            identity: Some("spiffe://cluster.local/ns/payments/sa/payment".into()),
            weight: 1,
            mtls: false,
        }]
    );
    // Opaque TCP goes straight to the app, with no identity to check.
    assert_eq!(
        d.endpoints[DB].endpoints,
        [Endpoint { addr: "127.0.10.9:5432".parse().unwrap(), identity: None, weight: 1, mtls: false }]
    );
}

const FRONTEND_SNI: &str = "outbound_.80_._.frontend.payments.svc.cluster.local";
const PAYMENT_ID: &str = "spiffe://cluster.local/ns/payments/sa/payment";

#[test]
fn with_mtls_the_inbound_listener_terminates_tls_by_sni_with_no_default_chain() {
    let d = frontend_with(&MeshOptions::default());
    assert_eq!(d.ignored, Notes::default());
    let inbound = &d.listeners["inbound"];
    assert!(inbound.tls_inspector);
    assert_eq!(inbound.default_chain, None);
    let chain = inbound
        .chains
        .iter()
        .find(|c| c.server_names == [FRONTEND_SNI])
        .unwrap_or_else(|| panic!("no chain for {FRONTEND_SNI}: {:?}", inbound.chains));
    assert_eq!(chain.name, "inbound|8080|frontend.payments|80");
    assert_eq!(chain.transport_protocol.as_deref(), Some("tls"));
    assert_eq!(
        chain.tls,
        Some(DownstreamTls { require_client_certificate: true, alpn: vec!["h2".into(), "http/1.1".into()] })
    );
    // Permissive, and no TrafficTarget names the frontend: no RBAC.
    let ChainKind::Http(manager) = &chain.kind else { panic!("{:?}", chain.kind) };
    assert_eq!(manager.rbac, None);
    for c in &inbound.chains {
        assert!(c.tls.is_some() && !c.server_names.is_empty(), "{c:?}");
    }
}

#[test]
fn with_mtls_meshed_endpoints_are_dialled_over_tls_expecting_their_identity() {
    let d = frontend_with(&MeshOptions::default());
    let (c, _) = &d.clusters[V1];
    assert_eq!(
        c.tls,
        Some(UpstreamTls {
            sni: "outbound_.8080_._.payment-v1.payments.svc.cluster.local".into(),
            allowed_identities: vec![PAYMENT_ID.into()],
            all_endpoints: false,
        })
    );
    assert_eq!(
        d.endpoints[V1].endpoints,
        [Endpoint {
            addr: "127.0.10.2:4143".parse().unwrap(),
            identity: Some(PAYMENT_ID.into()),
            weight: 1,
            mtls: true,
        }]
    );
    // Opaque TCP to a meshed workload goes to its proxy over mTLS too.
    let db = &d.endpoints[DB].endpoints;
    assert!(db.iter().all(|e| e.mtls && e.addr.port() == 4143), "{db:?}");
    assert!(d.clusters[DB].0.tls.is_some());
}

#[test]
fn strict_authorization_puts_rbac_on_every_inbound_chain() {
    let opts = MeshOptions { authz: AuthzMode::Strict, ..MeshOptions::default() };
    let d = frontend_with(&opts);
    assert_eq!(d.ignored, Notes::default());
    for chain in &d.listeners["inbound"].chains {
        let rbac = match &chain.kind {
            ChainKind::Http(manager) => manager.rbac.as_ref(),
            ChainKind::Tcp(_) => chain.rbac.as_ref(),
        };
        let rbac = rbac.unwrap_or_else(|| panic!("no RBAC on {}", chain.name));
        assert_eq!(rbac.action, RbacAction::Allow, "{}", chain.name);
    }
}

#[test]
fn the_control_planes_tracing_config_reaches_every_http_manager_and_the_collector_cluster() {
    use weft_control::translate::{OTEL_COLLECTOR_CLUSTER, Sampling, TraceOptions};
    let tracing = TraceOptions {
        collector: "127.0.0.1:4317".parse().unwrap(),
        sampling: Sampling::from_percent(25.0).unwrap(),
    };
    let traced = frontend_with(&MeshOptions { tracing: Some(tracing), ..MeshOptions::plaintext() });
    assert_eq!(traced.ignored, Notes::default(), "nothing in the tracing config is ignored");
    let mut http = 0;
    for listener in traced.listeners.values() {
        for chain in listener.chains.iter().chain(listener.default_chain.as_ref()) {
            let ChainKind::Http(manager) = &chain.kind else { continue };
            let t = manager.tracing.as_ref().unwrap_or_else(|| panic!("{} is not traced", listener.name));
            assert_eq!(t.collector_cluster, OTEL_COLLECTOR_CLUSTER);
            assert_eq!(t.service_name, "frontend");
            assert!((t.sampling_percent - 25.0).abs() < 1e-9);
            http += 1;
        }
    }
    assert!(http >= 2, "outbound and inbound HTTP managers are traced ({http})");
    let (collector, eds) = &traced.clusters[OTEL_COLLECTOR_CLUSTER];
    assert_eq!(*eds, None);
    assert_eq!(collector.protocol, UpstreamProtocol::Http2);
    let Discovery::Static(endpoints) = &collector.discovery else { panic!("{collector:?}") };
    assert_eq!(endpoints.endpoints[0].addr, "127.0.0.1:4317".parse::<SocketAddr>().unwrap());

    let untraced = frontend_with(&MeshOptions::plaintext());
    assert!(!untraced.clusters.contains_key(OTEL_COLLECTOR_CLUSTER));
    for listener in untraced.listeners.values() {
        for chain in listener.chains.iter().chain(listener.default_chain.as_ref()) {
            if let ChainKind::Http(manager) = &chain.kind {
                assert!(manager.tracing.is_none());
            }
        }
    }
}
