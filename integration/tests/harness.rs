//! Tests of the harness itself: each would fail if the piece it names broke.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::sync::{Mutex, mpsc};
use tokio_stream::Stream;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use weft_integration::backend::WORKLOAD_HEADER;
use weft_integration::envoy::{ENVOY_VERSION, envoy_version};
use weft_integration::xds_client::{self, META_NAMESPACE, META_POD_IP, META_SERVICE_ACCOUNT};
use weft_integration::{Backend, Envoy, ScriptedAdsClient, SteadyLoad, Subnet, envoy_bin, eventually, load};
use weft_xds_protos::envoy::config::cluster::v3::Cluster;
use weft_xds_protos::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use weft_xds_protos::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse, Resource,
};
use weft_xds_protos::google::protobuf::{Any, value::Kind};
use weft_xds_protos::type_url;

// ---------------------------------------------------------------- backend

#[tokio::test]
async fn backend_answers_with_its_name_and_the_requested_status() {
    let net = Subnet::claim().unwrap();
    let backend = Backend::start(net.addr(2, 8080), "payments-v1").await.unwrap();
    assert_eq!(backend.addr(), net.addr(2, 8080));

    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let resp = client.get(format!("http://{}/anything", backend.addr()).parse().unwrap()).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()[WORKLOAD_HEADER], "payments-v1");
    assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "payments-v1");

    let (status, body) =
        load::send(backend.addr(), "payments.default.svc.cluster.local", "/status/503").await.unwrap();
    assert_eq!((status, body.as_str()), (503, "payments-v1"));
    let seen = backend.last_request().unwrap();
    assert_eq!(seen.uri.path(), "/status/503");
    assert_eq!(seen.headers["host"], "payments.default.svc.cluster.local");

    let (status, _) = load::send(backend.addr(), "x", "/status/nonsense").await.unwrap();
    assert_eq!(status, 400);
    assert_eq!(backend.requests(), 3);
}

#[tokio::test]
async fn backend_speaks_h2c_with_prior_knowledge() {
    let net = Subnet::claim().unwrap();
    let backend = Backend::start(net.addr(2, 0), "grpc-ish").await.unwrap();
    assert_ne!(backend.addr().port(), 0, "port 0 is resolved to the bound port");
    let client = Client::builder(TokioExecutor::new()).http2_only(true).build_http::<Empty<Bytes>>();
    let resp = client.get(format!("http://{}/status/201", backend.addr()).parse().unwrap()).await.unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_2);
    assert_eq!(resp.status(), 201);
    assert_eq!(backend.last_request().unwrap().version, http::Version::HTTP_2);
}

#[tokio::test]
async fn dropping_a_backend_closes_its_kept_alive_connections_and_its_port() {
    let net = Subnet::claim().unwrap();
    let addr = net.addr(2, 8080);
    let backend = Backend::start(addr, "doomed").await.unwrap();

    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream)).await.unwrap();
    let conn = tokio::spawn(conn);
    let resp = sender
        .send_request(http::Request::get("/").header("host", "doomed").body(Empty::new()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    drop(backend);
    eventually("the kept-alive connection to be closed by the backend", || async { conn.is_finished() })
        .await
        .unwrap();
    assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "the port still accepts connections");
}

// ---------------------------------------------------------------- load

#[tokio::test]
async fn run_tallies_answers_by_backend_name_and_status() {
    let net = Subnet::claim().unwrap();
    let a = Backend::start(net.addr(2, 8080), "a").await.unwrap();
    let b = Backend::start(net.addr(3, 8080), "b").await.unwrap();

    // No proxy yet: a backend ignores Host, so it can stand in for one.
    let mut tally = load::run(a.addr(), "svc", "/", 30, 4).await;
    assert_eq!(tally.by_body.get("a"), Some(&30));
    tally.merge(load::run(b.addr(), "svc", "/", 10, 3).await);
    assert_eq!(tally.total(), 40);
    assert_eq!(tally.ok(), 40);
    assert_eq!(tally.failures, 0, "{tally}");
    assert_eq!(tally.statuses.get(&200), Some(&40));
    assert!((tally.share("a") - 0.75).abs() < 1e-9);
    assert!((tally.share("b") - 0.25).abs() < 1e-9);
    assert_eq!(tally.share("nobody"), 0.0);
    assert_eq!((a.requests(), b.requests()), (30, 10));

    let errors = load::run(a.addr(), "svc", "/status/500", 7, 2).await;
    assert_eq!(errors.failures, 7);
    assert_eq!(errors.statuses.get(&500), Some(&7));
    assert!(errors.by_body.is_empty(), "non-2xx answers are not counted by body");
    assert_eq!(errors.share("a"), 0.0);
    assert_eq!(errors.failed[0].status, Some(500));
    assert_eq!(errors.failed[0].detail, "a");

    let closed = net.addr(9, 8080);
    let refused = load::run(closed, "svc", "/", 3, 1).await;
    assert_eq!((refused.total(), refused.failures), (3, 3));
    assert!(refused.statuses.is_empty());
    assert!(refused.failed.iter().all(|f| f.status.is_none() && !f.detail.is_empty()));
}

#[tokio::test]
async fn steady_load_keeps_its_rate_and_records_every_failure() {
    let net = Subnet::claim().unwrap();
    let backend = Backend::start(net.addr(2, 8080), "steady").await.unwrap();
    let rate = 200;
    let started = Instant::now();
    let steady = SteadyLoad::start(backend.addr(), "svc", "/", rate);

    eventually("20 answered requests", || async { steady.so_far().ok() >= 20 }).await.unwrap();
    assert_eq!(steady.so_far().failures, 0, "{}", steady.so_far());

    drop(backend); // an outage in the middle of the load
    eventually("failures to be recorded", || async { steady.so_far().failures >= 5 }).await.unwrap();
    let tally = steady.stop().await.unwrap();
    let elapsed = started.elapsed().as_secs_f64();

    assert!(tally.ok() >= 20, "{tally}");
    assert_eq!(tally.total(), tally.ok() + tally.failures);
    assert_eq!(tally.failed.len(), tally.failures);
    assert!(tally.failed.iter().all(|f| f.status.is_none() && !f.detail.is_empty()), "{tally}");
    let sent = tally.total() as f64;
    assert!(sent <= f64::from(rate) * elapsed + 2.0, "{sent} requests in {elapsed:.2}s is above the rate");
    assert!(
        sent >= f64::from(rate) * elapsed * 0.25,
        "{sent} requests in {elapsed:.2}s is far below the rate"
    );
}

// ---------------------------------------------------------------- eventually and addresses

#[tokio::test]
async fn eventually_returns_the_value_once_the_probe_succeeds() {
    let calls = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let value = eventually("the third call", || {
        let calls = calls.clone();
        async move {
            let n = calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            anyhow::ensure!(n >= 3, "only {n} calls so far");
            anyhow::Ok(Some(n * 10))
        }
    })
    .await
    .unwrap();
    assert_eq!(value, 30);
}

#[tokio::test]
async fn eventually_gives_up_naming_what_it_waited_for_and_what_it_saw() {
    let start = Instant::now();
    let err =
        weft_integration::eventually_within(Duration::from_millis(300), "the moon to turn blue", || async {
            anyhow::Result::<Option<()>>::Err(anyhow::anyhow!("the moon is grey"))
        })
        .await
        .unwrap_err()
        .to_string();
    assert!(start.elapsed() < Duration::from_secs(2));
    assert!(err.contains("the moon to turn blue"), "{err}");
    assert!(err.contains("last observation: the moon is grey"), "{err}");

    // A probe that hangs is cut off at the deadline instead of hanging the test.
    let err = weft_integration::eventually_within(Duration::from_millis(200), "a hung probe", || {
        std::future::pending::<bool>()
    })
    .await
    .unwrap_err();
    assert!(err.to_string().contains("did not finish"), "{err}");
}

#[test]
fn subnets_are_exclusive_while_held() {
    let first = Subnet::claim().unwrap();
    let second = Subnet::claim().unwrap();
    assert_ne!(first.ip(1), second.ip(1));
    for net in [&first, &second] {
        let std::net::IpAddr::V4(ip) = net.ip(7) else { panic!("not IPv4") };
        let [first_octet, a, _, d] = ip.octets();
        assert_eq!((first_octet, d), (127, 7));
        assert_ne!(a, 0, "127.0.x.y is left to everything else");
    }
    // The claim is what makes it exclusive: its address is taken.
    let claim = SocketAddr::new(first.ip(255), weft_integration::net::CLAIM_PORT);
    assert!(std::net::TcpListener::bind(claim).is_err());
    // And a workload can bind well-known ports in its subnet.
    let _outbound = std::net::TcpListener::bind(first.addr(1, 4140)).unwrap();
    let port = weft_integration::free_port_on(first.ip(1)).unwrap();
    std::net::TcpListener::bind(first.addr(1, port)).unwrap();
}

// ---------------------------------------------------------------- Envoy

#[test]
fn envoy_bin_is_the_pinned_version() {
    let bin = envoy_bin().unwrap();
    let version = envoy_version(&bin).unwrap();
    assert!(version.contains(ENVOY_VERSION), "{} says {version}", bin.display());
}

const CLUSTER: &str = "outbound|8080||backend.default.svc.cluster.local";

fn static_bootstrap(admin: SocketAddr, listener: SocketAddr, backend: SocketAddr) -> String {
    format!(
        r#"
node: {{ id: harness-test, cluster: harness }}
admin:
  address: {{ socket_address: {{ address: "{admin_ip}", port_value: {admin_port} }} }}
static_resources:
  listeners:
  - name: outbound
    address: {{ socket_address: {{ address: "{l_ip}", port_value: {l_port} }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: outbound
          route_config:
            virtual_hosts:
            - name: backend
              domains: ["backend.default.svc.cluster.local"]
              routes: [{{ match: {{ prefix: "/" }}, route: {{ cluster: "{CLUSTER}" }} }}]
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: "{CLUSTER}"
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: "{CLUSTER}"
      endpoints:
      - lb_endpoints:
        - endpoint: {{ address: {{ socket_address: {{ address: "{b_ip}", port_value: {b_port} }} }} }}
"#,
        admin_ip = admin.ip(),
        admin_port = admin.port(),
        l_ip = listener.ip(),
        l_port = listener.port(),
        b_ip = backend.ip(),
        b_port = backend.port(),
    )
}

#[tokio::test]
async fn envoy_with_a_static_bootstrap_goes_live_and_proxies_to_a_backend() {
    let net = Subnet::claim().unwrap();
    let backend = Backend::start(net.addr(2, 8080), "static-backend").await.unwrap();
    let outbound = net.addr(1, 4140);
    // Admin on port 0: the harness reads the real address back from Envoy.
    let envoy = Envoy::start(&static_bootstrap(net.addr(1, 0), outbound, backend.addr())).await.unwrap();
    assert_eq!(envoy.admin_addr().ip(), net.ip(1));
    assert_ne!(envoy.admin_addr().port(), 0);
    envoy.wait_live(weft_integration::patience()).await.unwrap();
    assert_eq!(envoy.server_state().await.unwrap(), "LIVE");

    let (status, body) = load::send(outbound, "backend.default.svc.cluster.local", "/hello").await.unwrap();
    assert_eq!((status, body.as_str()), (200, "static-backend"));
    assert_eq!(backend.requests(), 1);
    assert_eq!(backend.last_request().unwrap().uri.path(), "/hello");

    let (status, _) = load::send(outbound, "unknown.example", "/").await.unwrap();
    assert_eq!(status, 404, "a Host no route matches");
    assert_eq!(backend.requests(), 1);

    let stat = format!("cluster.{CLUSTER}.upstream_rq_200");
    let n =
        eventually("Envoy to count the proxied request", || async { envoy.stat(&stat).await }).await.unwrap();
    assert_eq!(n, 1);
    assert_eq!(envoy.stat("cluster.no-such-cluster.upstream_rq_200").await.unwrap(), None);
    let clusters = envoy.get_admin("/clusters").await.unwrap();
    assert!(clusters.contains(&format!("{CLUSTER}::{}", backend.addr())), "{clusters}");
    let dump = envoy.get_admin("/config_dump").await.unwrap();
    assert!(dump.contains("\"name\": \"outbound\""), "the listener is in the config dump");

    let tally = load::run(outbound, "backend.default.svc.cluster.local", "/", 50, 5).await;
    assert_eq!(tally.by_body.get("static-backend"), Some(&50), "{tally}");
}

#[tokio::test]
async fn envoy_with_a_bad_bootstrap_fails_to_start_and_shows_why() {
    let net = Subnet::claim().unwrap();
    let bootstrap = format!(
        "admin: {{ address: {{ socket_address: {{ address: \"{}\", port_value: 0 }} }} }}\n\
         static_resources: {{ clusters: [{{ name: c, type: NOT_A_TYPE }}] }}\n",
        net.ip(1)
    );
    let err = format!("{:#}", Envoy::start(&bootstrap).await.unwrap_err());
    assert!(err.contains("exited"), "{err}");
    assert!(err.contains("NOT_A_TYPE"), "the error carries Envoy's own complaint: {err}");
}

#[tokio::test]
async fn wait_live_gives_up_when_no_config_arrives_and_the_log_shows_the_xds_stream() {
    let net = Subnet::claim().unwrap();
    // ADS points at an address where nothing listens, so Envoy never gets its config.
    let bootstrap = format!(
        r#"
node: {{ id: lonely, cluster: lonely }}
admin: {{ address: {{ socket_address: {{ address: "{ip}", port_value: 0 }} }} }}
dynamic_resources:
  ads_config:
    api_type: GRPC
    transport_api_version: V3
    grpc_services: [{{ envoy_grpc: {{ cluster_name: xds }} }}]
  cds_config: {{ ads: {{}}, resource_api_version: V3 }}
  lds_config: {{ ads: {{}}, resource_api_version: V3 }}
static_resources:
  clusters:
  - name: xds
    type: STATIC
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {{ http2_protocol_options: {{}} }}
    load_assignment:
      cluster_name: xds
      endpoints:
      - lb_endpoints:
        - endpoint: {{ address: {{ socket_address: {{ address: "{ip}", port_value: 8086 }} }} }}
"#,
        ip = net.ip(1)
    );
    let envoy = Envoy::start(&bootstrap).await.unwrap();
    let err = envoy.wait_live(Duration::from_secs(1)).await.unwrap_err().to_string();
    assert!(err.contains("not LIVE"), "{err}");
    assert!(err.contains("INITIALIZING"), "the error names the state Envoy is stuck in: {err}");
    assert!(envoy.exited().is_none());
    // config:debug is on, so the log says why: the ADS stream keeps failing.
    let log = envoy.log_tail(200);
    assert!(log.contains("StreamAggregatedResources"), "{log}");
}

#[tokio::test]
async fn dropping_envoy_kills_and_reaps_it() {
    let net = Subnet::claim().unwrap();
    let bootstrap = format!(
        "admin: {{ address: {{ socket_address: {{ address: \"{}\", port_value: 0 }} }} }}\n",
        net.ip(1)
    );
    let envoy = Envoy::start(&bootstrap).await.unwrap();
    let (pid, admin) = (envoy.pid(), envoy.admin_addr());
    let proc_entry = std::path::PathBuf::from(format!("/proc/{pid}"));
    assert!(proc_entry.exists());
    drop(envoy);
    // Reaped, not a zombie: the process table entry is gone at once.
    assert!(!proc_entry.exists(), "Envoy {pid} is still in the process table");
    assert!(tokio::net::TcpStream::connect(admin).await.is_err());
}

// ---------------------------------------------------------------- scripted ADS client

/// A fake ADS server: records every request, answers each subscription (a request
/// without a nonce) with one Cluster per requested name. Like some real servers, it
/// reads the first request before sending response headers.
#[derive(Clone)]
struct FakeAds {
    sotw_seen: mpsc::UnboundedSender<DiscoveryRequest>,
    delta_seen: mpsc::UnboundedSender<DeltaDiscoveryRequest>,
}

fn cluster_any(name: &str) -> Any {
    let cluster = Cluster { name: name.to_owned(), ..Cluster::default() };
    Any { type_url: type_url::CLUSTER.to_owned(), value: prost::Message::encode_to_vec(&cluster) }
}

type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, tonic::Status>> + Send>>;

#[tonic::async_trait]
impl AggregatedDiscoveryService for FakeAds {
    type StreamAggregatedResourcesStream = ResponseStream<DiscoveryResponse>;
    type DeltaAggregatedResourcesStream = ResponseStream<DeltaDiscoveryResponse>;

    async fn stream_aggregated_resources(
        &self,
        request: tonic::Request<tonic::Streaming<DiscoveryRequest>>,
    ) -> Result<tonic::Response<Self::StreamAggregatedResourcesStream>, tonic::Status> {
        let mut inbound = request.into_inner();
        let first = inbound.message().await?.ok_or_else(|| tonic::Status::cancelled("no request"))?;
        let (tx, rx) = mpsc::channel(16);
        let seen = self.sotw_seen.clone();
        tokio::spawn(async move {
            let mut next = Some(first);
            let mut nonce = 0;
            while let Some(req) = next {
                if req.response_nonce.is_empty() {
                    nonce += 1;
                    let resp = DiscoveryResponse {
                        type_url: req.type_url.clone(),
                        version_info: format!("v{nonce}"),
                        nonce: format!("n{nonce}"),
                        resources: req.resource_names.iter().map(|n| cluster_any(n)).collect(),
                        ..DiscoveryResponse::default()
                    };
                    let _ = tx.send(Ok(resp)).await;
                }
                let _ = seen.send(req);
                next = inbound.message().await.ok().flatten();
            }
        });
        Ok(tonic::Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn delta_aggregated_resources(
        &self,
        request: tonic::Request<tonic::Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<tonic::Response<Self::DeltaAggregatedResourcesStream>, tonic::Status> {
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(16);
        let seen = self.delta_seen.clone();
        tokio::spawn(async move {
            let mut nonce = 0;
            while let Ok(Some(req)) = inbound.message().await {
                if req.response_nonce.is_empty() {
                    nonce += 1;
                    let resp = DeltaDiscoveryResponse {
                        type_url: req.type_url.clone(),
                        nonce: format!("d{nonce}"),
                        resources: req
                            .resource_names_subscribe
                            .iter()
                            .map(|n| Resource {
                                name: n.clone(),
                                version: "1".to_owned(),
                                resource: Some(cluster_any(n)),
                                ..Resource::default()
                            })
                            .collect(),
                        ..DeltaDiscoveryResponse::default()
                    };
                    let _ = tx.send(Ok(resp)).await;
                }
                let _ = seen.send(req);
            }
        });
        Ok(tonic::Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

struct FakeAdsHandle {
    addr: SocketAddr,
    sotw_seen: Mutex<mpsc::UnboundedReceiver<DiscoveryRequest>>,
    delta_seen: Mutex<mpsc::UnboundedReceiver<DeltaDiscoveryRequest>>,
}

async fn fake_ads(net: &Subnet) -> FakeAdsHandle {
    let listener = tokio::net::TcpListener::bind(net.addr(250, 8086)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (sotw_tx, sotw_rx) = mpsc::unbounded_channel();
    let (delta_tx, delta_rx) = mpsc::unbounded_channel();
    let server = AggregatedDiscoveryServiceServer::new(FakeAds { sotw_seen: sotw_tx, delta_seen: delta_tx });
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(server)
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    FakeAdsHandle { addr, sotw_seen: Mutex::new(sotw_rx), delta_seen: Mutex::new(delta_rx) }
}

fn metadata_string(node: &weft_xds_protos::envoy::config::core::v3::Node, key: &str) -> String {
    match &node.metadata.as_ref().unwrap().fields[key].kind {
        Some(Kind::StringValue(s)) => s.clone(),
        other => panic!("{key} is {other:?}"),
    }
}

const WAIT: Duration = Duration::from_secs(5);

#[tokio::test]
async fn sotw_client_sends_node_identity_once_and_acks_and_nacks_like_envoy() {
    let net = Subnet::claim().unwrap();
    let ads = fake_ads(&net).await;
    let node = xds_client::node("web-0", "shop", "web", &net.ip(5).to_string());
    let mut stream = ScriptedAdsClient::connect_sotw(ads.addr, node).await.unwrap();

    stream.send(xds_client::request(type_url::CLUSTER, &["c1", "c2"], "", "", None)).unwrap();
    let resp = stream.next_response(WAIT).await.unwrap();
    let clusters: Vec<Cluster> = xds_client::decode_all(&resp.resources).unwrap();
    let names: Vec<_> = clusters.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["c1", "c2"]);

    stream.ack(&resp).unwrap();
    stream.nack(&resp, "pretend c2 is invalid").unwrap();
    assert!(stream.recv(Duration::from_millis(200)).await.is_none(), "the fake answers subscriptions only");

    let mut seen = ads.sotw_seen.lock().await;
    let first = seen.recv().await.unwrap();
    let node = first.node.as_ref().expect("the first request carries the node");
    assert_eq!(node.id, "web-0");
    assert_eq!(metadata_string(node, META_NAMESPACE), "shop");
    assert_eq!(metadata_string(node, META_SERVICE_ACCOUNT), "web");
    assert_eq!(metadata_string(node, META_POD_IP), net.ip(5).to_string());

    let ack = seen.recv().await.unwrap();
    assert!(ack.node.is_none(), "only the first request carries the node");
    assert_eq!((ack.version_info.as_str(), ack.response_nonce.as_str()), ("v1", "n1"));
    assert_eq!(ack.resource_names, ["c1", "c2"], "an ACK repeats the subscription");
    assert!(ack.error_detail.is_none());

    let nack = seen.recv().await.unwrap();
    assert_eq!(nack.response_nonce, "n1");
    assert_eq!(nack.version_info, "v1", "a NACK carries the last accepted version");
    assert_eq!(nack.error_detail.unwrap().message, "pretend c2 is invalid");
    assert_eq!(stream.accepted_version(type_url::CLUSTER), "v1");
}

#[tokio::test]
async fn delta_client_subscribes_acks_and_nacks() {
    let net = Subnet::claim().unwrap();
    let ads = fake_ads(&net).await;
    let node = xds_client::node("web-1", "shop", "web", &net.ip(6).to_string());
    let mut stream = ScriptedAdsClient::connect_delta(ads.addr, node).await.unwrap();

    stream.send(xds_client::delta_request(type_url::CLUSTER, &["c9"], &[])).unwrap();
    let resp = stream.next_response(WAIT).await.unwrap();
    assert_eq!(resp.resources.len(), 1);
    let clusters: Vec<Cluster> =
        xds_client::decode_all(resp.resources.iter().filter_map(|r| r.resource.as_ref())).unwrap();
    assert_eq!(clusters[0].name, "c9");
    stream.ack(&resp).unwrap();
    stream.nack(&resp, "no").unwrap();

    let mut seen = ads.delta_seen.lock().await;
    let first = seen.recv().await.unwrap();
    assert_eq!(metadata_string(first.node.as_ref().unwrap(), META_POD_IP), net.ip(6).to_string());
    assert_eq!(first.resource_names_subscribe, ["c9"]);
    let ack = seen.recv().await.unwrap();
    assert!(ack.node.is_none());
    assert_eq!((ack.response_nonce.as_str(), ack.error_detail.is_none()), ("d1", true));
    let nack = seen.recv().await.unwrap();
    assert_eq!(nack.error_detail.unwrap().message, "no");
    assert!(stream.ended().is_none());
}

#[tokio::test]
async fn connecting_to_no_server_fails_instead_of_hanging() {
    let net = Subnet::claim().unwrap();
    let err = ScriptedAdsClient::connect(net.addr(1, 8086)).await.unwrap_err();
    assert!(err.to_string().contains("connecting to ADS"), "{err}");
}
