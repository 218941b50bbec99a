//! The xDS client against a fake ADS server it cannot tell from a real one:
//! ACK and NACK per response, subscriptions that follow LDS and CDS,
//! readiness gated on the first full config, the last good config kept while
//! the control plane is away, and reconnects that say what the proxy has.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use support::resources::*;
use support::{FakeAds, PATIENCE};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use weft_proxy::admin::{self, AdminState};
use weft_proxy::metrics::Metrics;
use weft_proxy::xds::{Backoff, ClientConfig, Mode, NodeInfo, Status, XdsClient, XdsHandle};
use weft_xds_protos::envoy::service::discovery::v3::{DeltaDiscoveryResponse, DiscoveryResponse, Resource};
use weft_xds_protos::google::protobuf::Any;
use weft_xds_protos::google::protobuf::value::Kind;
use weft_xds_protos::type_url;

fn node() -> NodeInfo {
    NodeInfo {
        id: "web.shop".into(),
        namespace: "shop".into(),
        service_account: "web".into(),
        pod_ip: "127.0.0.1".parse().unwrap(),
        inbound_port: 4143,
        outbound_port: 4140,
        app_port: Some(8080),
        transparent: false,
    }
}

/// A running client (and its admin server) pointed at `server`.
struct Proxy {
    handle: XdsHandle,
    admin: SocketAddr,
    metrics: Arc<Metrics>,
    _shutdown: watch::Sender<bool>,
}

async fn proxy(server: SocketAddr, mode: Mode) -> Proxy {
    let mut config = ClientConfig::new(server.to_string(), node());
    config.mode = mode;
    config.backoff = Backoff { initial: Duration::from_millis(10), max: Duration::from_millis(50) };
    let metrics = Arc::new(Metrics::new());
    let (client, handle) = XdsClient::new(config, metrics.clone());
    let (shutdown_tx, shutdown) = watch::channel(false);
    tokio::spawn(client.run(shutdown.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = listener.local_addr().unwrap();
    let state = AdminState { status: handle.status.clone(), metrics: metrics.clone(), node: node() };
    tokio::spawn(admin::serve(listener, state, shutdown));
    Proxy { handle, admin, metrics, _shutdown: shutdown_tx }
}

impl Proxy {
    /// `GET path` on the admin server: status code and body.
    async fn get(&self, path: &str) -> (u16, String) {
        let mut conn = tokio::net::TcpStream::connect(self.admin).await.unwrap();
        conn.write_all(format!("GET {path} HTTP/1.0\r\nHost: admin\r\n\r\n").as_bytes()).await.unwrap();
        let mut raw = String::new();
        conn.read_to_string(&mut raw).await.unwrap();
        let (head, body) = raw.split_once("\r\n\r\n").unwrap();
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        (status, body.to_string())
    }

    async fn wait_status(&self, what: &str, f: impl Fn(&Status) -> bool) {
        let mut rx = self.handle.status.clone();
        if tokio::time::timeout(PATIENCE, rx.wait_for(|s| f(s))).await.is_err() {
            panic!("not {what} within {PATIENCE:?}: {:?}", *self.handle.status.borrow());
        }
    }

    fn listener_port(&self, name: &str) -> Option<u16> {
        self.handle.config.borrow().listeners.get(name).map(|l| l.addr.port())
    }
}

fn delta_response(type_url: &str, nonce: &str, resources: Vec<(&str, &str, Any)>) -> DeltaDiscoveryResponse {
    DeltaDiscoveryResponse {
        type_url: type_url.into(),
        nonce: nonce.into(),
        system_version_info: nonce.into(),
        resources: resources
            .into_iter()
            .map(|(name, version, any)| Resource {
                name: name.into(),
                version: version.into(),
                resource: Some(any),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

fn sotw_response(type_url: &str, version: &str, nonce: &str, resources: Vec<Any>) -> DiscoveryResponse {
    DiscoveryResponse {
        type_url: type_url.into(),
        version_info: version.into(),
        nonce: nonce.into(),
        resources,
        ..Default::default()
    }
}

#[tokio::test]
async fn delta_acks_nacks_by_resource_gates_readiness_and_resumes_with_initial_resource_versions() {
    let mut ads = FakeAds::start().await;
    let proxy = proxy(ads.addr, Mode::Delta).await;
    let mut s = ads.delta_stream().await;

    // The stream opens with CDS then LDS, wildcard, the node on the first request only.
    let cds = s.request().await;
    assert_eq!(cds.type_url, type_url::CLUSTER);
    assert!(cds.resource_names_subscribe.is_empty() && cds.initial_resource_versions.is_empty());
    let n = cds.node.as_ref().expect("the first request carries the node");
    assert_eq!((n.id.as_str(), n.user_agent_name.as_str()), ("web.shop", "weft-proxy"));
    let md: HashMap<&str, &str> = n
        .metadata
        .as_ref()
        .unwrap()
        .fields
        .iter()
        .map(|(k, v)| match &v.kind {
            Some(Kind::StringValue(s)) => (k.as_str(), s.as_str()),
            other => panic!("{k}: {other:?}"),
        })
        .collect();
    assert_eq!(
        md,
        HashMap::from([
            ("NAMESPACE", "shop"),
            ("SERVICE_ACCOUNT", "web"),
            ("POD_IP", "127.0.0.1"),
            ("INBOUND_PORT", "4143"),
            ("OUTBOUND_PORT", "4140"),
            ("APP_PORT", "8080"),
        ])
    );
    let lds = s.request().await;
    assert_eq!(lds.type_url, type_url::LISTENER);
    assert!(lds.node.is_none());
    assert_eq!(proxy.get("/ready").await.0, 503);

    // CDS: an EDS cluster. ACK, then an EDS subscription to its endpoints.
    s.respond(delta_response(type_url::CLUSTER, "c1", vec![("backend", "1", any(&eds_cluster("backend")))]));
    let ack = s.request().await;
    assert_eq!(
        (ack.type_url.as_str(), ack.response_nonce.as_str(), ack.error_detail),
        (type_url::CLUSTER, "c1", None)
    );
    let eds = s.request().await;
    assert_eq!(
        (eds.type_url.as_str(), eds.resource_names_subscribe.clone()),
        (type_url::ENDPOINT, vec!["backend".to_string()])
    );

    // LDS: a listener on RDS "main". ACK, then an RDS subscription.
    s.respond(delta_response(
        type_url::LISTENER,
        "l1",
        vec![("http", "1", any(&listener("http", 4140, "main")))],
    ));
    let ack = s.request().await;
    assert_eq!((ack.type_url.as_str(), ack.response_nonce.as_str()), (type_url::LISTENER, "l1"));
    let rds = s.request().await;
    assert_eq!(
        (rds.type_url.as_str(), rds.resource_names_subscribe.clone()),
        (type_url::ROUTE, vec!["main".to_string()])
    );
    assert_eq!(proxy.get("/ready").await.0, 503, "the route table and endpoints have not arrived");
    assert_eq!(proxy.listener_port("http"), None, "the listener warms until its route table arrives");

    s.respond(delta_response(type_url::ROUTE, "r1", vec![("main", "1", any(&routes("main", "backend")))]));
    assert_eq!(s.request().await.response_nonce, "r1");
    assert_eq!(proxy.get("/ready").await.0, 503, "the endpoints have not arrived");
    s.respond(delta_response(
        type_url::ENDPOINT,
        "e1",
        vec![("backend", "1", any(&endpoints("backend", 8080)))],
    ));
    assert_eq!(s.request().await.response_nonce, "e1");
    proxy.wait_status("ready", |s| s.ready).await;
    assert_eq!(proxy.get("/ready").await, (200, "ready\n".to_string()));
    {
        let config = proxy.handle.config.borrow();
        assert_eq!(config.listeners["http"].addr.port(), 4140);
        assert_eq!(config.endpoints["backend"].endpoints[0].addr.port(), 8080);
        assert!(config.routes.contains_key("main"));
    }

    // A response with one bad listener and one good: the good one applies, the
    // bad one is NACKed by name and field, and its last good version keeps serving.
    s.respond(delta_response(
        type_url::LISTENER,
        "l2",
        vec![
            ("http", "2", any(&tls_listener("http", 5000, "main"))),
            ("admin", "1", any(&listener("admin", 4191, "main"))),
        ],
    ));
    let nack = s.request().await;
    assert_eq!(nack.response_nonce, "l2");
    let detail = nack.error_detail.expect("a NACK").message;
    assert!(
        detail.starts_with(
            "listener http: filter_chains[0].transport_socket.typed_config.common_tls_context: required"
        ),
        "{detail}"
    );
    proxy.wait_status("serving the good listener", |s| s.types.values().any(|t| t.nacks == 1)).await;
    assert_eq!(proxy.listener_port("http"), Some(4140));
    assert_eq!(proxy.listener_port("admin"), Some(4191));
    let metrics = proxy.metrics.encode();
    assert!(metrics.contains(r#"xds_rejections_total{type="lds"} 1"#), "{metrics}");
    assert!(metrics.contains("xds_connected 1"), "{metrics}");
    let (status, dump) = proxy.get("/config_dump").await;
    assert_eq!(status, 200);
    let dump: serde_json::Value = serde_json::from_str(&dump).unwrap();
    let listeners = &dump["configs"][2]["dynamic_listeners"];
    let http = listeners.as_array().unwrap().iter().find(|l| l["name"] == "http").unwrap();
    assert_eq!(http["active_state"]["version_info"], "1");
    assert_eq!(http["active_state"]["listener"]["@type"], type_url::LISTENER);
    assert_eq!(http["error_state"]["version_info"], "l2");
    assert!(http["error_state"]["details"].as_str().unwrap().starts_with("listener http: filter_chains[0]"));

    // The control plane goes away: the config stays, and the new stream says what the proxy has.
    drop(s);
    let mut s = ads.delta_stream().await;
    let mut initial = HashMap::new();
    for _ in 0..4 {
        let r = s.request().await;
        let mut versions: Vec<(String, String)> = r.initial_resource_versions.into_iter().collect();
        versions.sort();
        initial.insert(r.type_url, (r.resource_names_subscribe, versions));
    }
    let pair = |n: &str, v: &str| (n.to_string(), v.to_string());
    assert_eq!(initial[type_url::CLUSTER], (vec![], vec![pair("backend", "1")]));
    assert_eq!(initial[type_url::ENDPOINT], (vec!["backend".to_string()], vec![pair("backend", "1")]));
    assert_eq!(initial[type_url::LISTENER], (vec![], vec![pair("admin", "1"), pair("http", "1")]));
    assert_eq!(initial[type_url::ROUTE], (vec!["main".to_string()], vec![pair("main", "1")]));
    assert_eq!(proxy.listener_port("http"), Some(4140), "the last good config kept serving");
    assert!(proxy.handle.status.borrow().ready, "still ready");
    proxy.wait_status("connected again", |s| s.connected).await;
}

#[tokio::test]
async fn sotw_acks_the_version_nacks_with_the_last_good_one_and_resumes_from_it() {
    let mut ads = FakeAds::start().await;
    let proxy = proxy(ads.addr, Mode::Sotw).await;
    let mut s = ads.sotw_stream().await;
    let cds = s.request().await;
    assert_eq!((cds.type_url.as_str(), cds.version_info.as_str()), (type_url::CLUSTER, ""));
    assert!(cds.node.is_some() && cds.resource_names.is_empty());
    assert_eq!(s.request().await.type_url, type_url::LISTENER);

    s.respond(sotw_response(type_url::CLUSTER, "v1", "n1", vec![]));
    let ack = s.request().await;
    assert_eq!(
        (ack.version_info.as_str(), ack.response_nonce.as_str(), ack.error_detail),
        ("v1", "n1", None)
    );
    s.respond(sotw_response(type_url::LISTENER, "v1", "n2", vec![any(&listener("http", 4140, "main"))]));
    let ack = s.request().await;
    assert_eq!(
        (ack.type_url.as_str(), ack.version_info.as_str(), ack.response_nonce.as_str()),
        (type_url::LISTENER, "v1", "n2")
    );
    let rds = s.request().await;
    assert_eq!(
        (rds.type_url.as_str(), rds.resource_names.clone(), rds.version_info.as_str()),
        (type_url::ROUTE, vec!["main".to_string()], "")
    );
    s.respond(sotw_response(type_url::ROUTE, "v1", "n3", vec![any(&routes("main", "backend"))]));
    let ack = s.request().await;
    assert_eq!((ack.version_info.as_str(), ack.resource_names.clone()), ("v1", vec!["main".to_string()]));
    proxy.wait_status("ready", |s| s.ready).await;

    // A NACK names the last version accepted, and the nonce of the response it refuses.
    s.respond(sotw_response(type_url::LISTENER, "v2", "n4", vec![any(&tls_listener("http", 5000, "main"))]));
    let nack = s.request().await;
    assert_eq!((nack.version_info.as_str(), nack.response_nonce.as_str()), ("v1", "n4"));
    assert!(
        nack.error_detail.unwrap().message.starts_with("listener http: filter_chains[0].transport_socket")
    );
    s.no_request().await;
    assert_eq!(proxy.listener_port("http"), Some(4140));

    // A reconnect asks again from the versions accepted, with no nonce.
    drop(s);
    let mut s = ads.sotw_stream().await;
    let mut resumed = HashMap::new();
    for _ in 0..3 {
        let r = s.request().await;
        assert!(r.response_nonce.is_empty());
        resumed.insert(r.type_url, (r.version_info, r.resource_names));
    }
    assert_eq!(resumed[type_url::CLUSTER], ("v1".to_string(), vec![]));
    assert_eq!(resumed[type_url::LISTENER], ("v1".to_string(), vec![]));
    assert_eq!(resumed[type_url::ROUTE], ("v1".to_string(), vec!["main".to_string()]));
    assert_eq!(proxy.listener_port("http"), Some(4140));
}

#[tokio::test]
async fn a_proxy_started_before_its_control_plane_is_not_ready_and_connects_when_it_comes() {
    // Reserve a port, then free it: nothing listens there until the fake starts on it.
    let probe = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = probe.local_addr().unwrap();
    drop(probe);
    let proxy = proxy(addr, Mode::Delta).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(proxy.get("/ready").await.0, 503);
    assert_eq!(proxy.get("/live").await, (200, "live\n".to_string()));
    assert!(proxy.metrics.encode().contains("xds_connected 0"));

    let mut ads = FakeAds::start_at(addr).await;
    let mut s = ads.delta_stream().await;
    assert_eq!(s.request().await.type_url, type_url::CLUSTER);
    proxy.wait_status("connected", |s| s.connected).await;
    assert!(proxy.metrics.encode().contains("xds_connected 1"));
}
