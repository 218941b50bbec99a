//! Stock Envoy accepts what weft translates with mTLS on: every proxy's
//! listeners (SNI chains, TLS contexts, RBAC) and every cluster (transport
//! socket matches, endpoint metadata), put into a bootstrap as static resources
//! beside a static `weft-sds` cluster, pass `envoy --mode validate`.

#![allow(clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::Path;

use prost::{Message, Name};
use weft_control::model::MeshState;
use weft_control::source::ManifestDir;
use weft_control::translate::{
    AuthzMode, INBOUND_PORT, MeshOptions, OUTBOUND_PORT, ProxyNode, translate_mesh, translate_proxy,
};
use weft_xds_protos::envoy::config::bootstrap::v3::Bootstrap;
use weft_xds_protos::envoy::config::cluster::v3::{Cluster, cluster};
use weft_xds_protos::envoy::config::core::v3::{
    Address, Http2ProtocolOptions, Pipe, SocketAddress, address, socket_address,
};
use weft_xds_protos::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint,
};
use weft_xds_protos::envoy::extensions::upstreams::http::v3::{HttpProtocolOptions, http_protocol_options};
use weft_xds_protos::google::protobuf::Any;

/// Authorization objects for payment's proxies, and an opaque TCP service they serve.
const EXTRA: &str = "\
apiVersion: v1
kind: Service
metadata: {name: db, namespace: payments}
spec:
  selector: {app: payment, version: v1}
  clusterIP: 10.96.0.20
  ports: [{name: tcp-db, port: 5432, targetPort: 5432, appProtocol: tcp}]
---
apiVersion: specs.smi-spec.io/v1alpha4
kind: HTTPRouteGroup
metadata: {name: payment-api, namespace: payments}
spec:
  matches:
  - name: pay
    pathRegex: /pay/.*
    methods: [POST, PUT]
    headers: {x-tenant: '^(acme|globex)$'}
  - name: status
    pathRegex: /status
    methods: ['*']
  - name: everything
---
apiVersion: specs.smi-spec.io/v1alpha4
kind: TCPRoute
metadata: {name: db-port, namespace: payments}
spec:
  matches:
    ports: [5432]
---
apiVersion: access.smi-spec.io/v1alpha3
kind: TrafficTarget
metadata: {name: frontend-to-payment, namespace: payments}
spec:
  destination: {kind: ServiceAccount, name: payment, namespace: payments}
  sources:
  - {kind: ServiceAccount, name: frontend, namespace: payments}
  - {kind: ServiceAccount, name: fraud-detect}
  rules:
  - {kind: HTTPRouteGroup, name: payment-api, matches: [pay, status]}
  - {kind: TCPRoute, name: db-port}
  - {kind: HTTPRouteGroup, name: missing}
";

fn state() -> anyhow::Result<MeshState> {
    let dir = tempfile::tempdir()?;
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/payments");
    for entry in std::fs::read_dir(&examples)? {
        let path = entry?.path();
        std::fs::copy(&path, dir.path().join(path.file_name().unwrap_or_default()))?;
    }
    std::fs::write(dir.path().join("zz-authz.yaml"), EXTRA)?;
    let report = ManifestDir::new(dir.path()).load();
    anyhow::ensure!(report.errors.is_empty(), "manifests refused: {:?}", report.errors);
    Ok((*report.state).clone())
}

fn node(sa: &str, ip: &str) -> ProxyNode {
    ProxyNode {
        id: sa.into(),
        namespace: "payments".into(),
        service_account: sa.into(),
        pod_ip: ip.parse().expect("ip"),
        inbound_port: INBOUND_PORT,
        outbound_port: OUTBOUND_PORT,
        transparent: false,
    }
}

fn any<M: Message + Name>(m: &M) -> Any {
    Any { type_url: M::type_url(), value: m.encode_to_vec() }
}

fn static_cluster(name: &str, address: Address) -> Cluster {
    let h2 = HttpProtocolOptions {
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
    Cluster {
        name: name.into(),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Static as i32,
        )),
        load_assignment: Some(ClusterLoadAssignment {
            cluster_name: name.into(),
            endpoints: vec![LocalityLbEndpoints {
                lb_endpoints: vec![LbEndpoint {
                    host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
                        address: Some(address),
                        ..Default::default()
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }),
        typed_extension_protocol_options: [(
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions".to_string(),
            any(&h2),
        )]
        .into_iter()
        .collect(),
        ..Default::default()
    }
}

/// One proxy's translated resources as an Envoy bootstrap: its listeners, its
/// inbound clusters, and the mesh's clusters made static with their EDS
/// endpoints inline (so endpoint metadata is checked too). Routes still come
/// over ADS (not contacted in validate mode).
fn bootstrap(state: &MeshState, node: &ProxyNode, opts: &MeshOptions, sds_socket: &Path) -> Bootstrap {
    let mesh = translate_mesh(state, opts);
    let own = translate_proxy(state, &mesh.splits, node, opts);
    let mut clusters: BTreeMap<String, Cluster> = mesh
        .clusters
        .iter()
        .map(|(name, c)| {
            let mut c = c.clone();
            c.cluster_discovery_type =
                Some(cluster::ClusterDiscoveryType::Type(cluster::DiscoveryType::Static as i32));
            c.eds_cluster_config = None;
            c.load_assignment = mesh.endpoints.get(name).cloned();
            (name.clone(), c)
        })
        .collect();
    clusters.extend(own.clusters.into_iter().map(|c| (c.name.clone(), c)));
    let pipe = Address {
        address: Some(address::Address::Pipe(Pipe { path: sds_socket.display().to_string(), mode: 0 })),
    };
    clusters.insert("weft-sds".into(), static_cluster("weft-sds", pipe));
    let xds = Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: "127.0.0.1".into(),
            port_specifier: Some(socket_address::PortSpecifier::PortValue(8086)),
            ..Default::default()
        })),
    };
    clusters.insert("xds".into(), static_cluster("xds", xds));
    weft_integration::envoy::ads_bootstrap(
        &node.id,
        &node.namespace,
        own.listeners,
        clusters.into_values().collect(),
    )
}

#[test]
fn envoy_accepts_the_mtls_and_rbac_weft_translates() -> anyhow::Result<()> {
    let state = state()?;
    let sds_dir = tempfile::tempdir()?;
    let sds_socket = sds_dir.path().join("sds.sock");
    let strict = MeshOptions { authz: AuthzMode::Strict, ..MeshOptions::default() };
    let nodes = [
        // Serves payment-svc, payment-v1 (HTTP) and db (TCP); the TrafficTarget names it.
        node("payment", "127.0.10.2"),
        // Serves frontend; no TrafficTarget: strict denies all, permissive has no RBAC.
        node("frontend", "127.0.10.1"),
        // Serves nothing: no inbound listener.
        node("nobody", "127.0.10.99"),
    ];
    for (mode, opts) in [("strict", &strict), ("permissive", &MeshOptions::default())] {
        for node in &nodes {
            let b = bootstrap(&state, node, opts, &sds_socket);
            let listeners = &b.static_resources.as_ref().map(|s| s.listeners.clone()).unwrap_or_default();
            if node.id == "payment" {
                let inbound = listeners.iter().find(|l| l.name == "inbound").expect("inbound listener");
                assert_eq!(inbound.filter_chains.len(), 3, "one chain per service port");
            }
            weft_integration::envoy::validate(&format!("{} ({mode})", node.id), &b)?;
        }
    }
    Ok(())
}
