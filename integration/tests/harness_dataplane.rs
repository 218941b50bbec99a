//! Tests of the harness pieces the data-plane scenarios stand on: the failing and slow
//! backend, the TCP echo and gRPC apps, the fake ADS server, and a control plane that
//! can be killed and restarted. Each would fail if the piece it names broke.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use weft_integration::fake_xds::{FakeXds, ReplyKind, Update, build};
use weft_integration::mesh::{ControlMode, LocalMesh, examples_dir};
use weft_integration::xds_client::{self, ScriptedAdsClient, decode_all};
use weft_integration::{Backend, Failures, GrpcServer, Subnet, TcpEcho, eventually, grpc, load, tcp};
use weft_xds_protos::envoy::config::cluster::v3::Cluster;
use weft_xds_protos::envoy::config::endpoint::v3::ClusterLoadAssignment;
use weft_xds_protos::type_url::{CLUSTER, ENDPOINT};

const WAIT: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------- backend

#[tokio::test]
async fn backend_fails_the_requests_it_is_told_to_and_delays_on_request() {
    let net = Subnet::claim().unwrap();
    let first = Backend::start_failing(net.addr(2, 8080), "first", Failures::First(2)).await.unwrap();
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(load::send(first.addr(), "svc", "/").await.unwrap());
    }
    let codes: Vec<u16> = statuses.iter().map(|(s, _)| *s).collect();
    assert_eq!(codes, [503, 503, 200, 200]);
    assert!(statuses.iter().all(|(_, body)| body == "first"), "{statuses:?}");

    let every_other = Backend::start_failing(net.addr(3, 8080), "odd", Failures::EveryOther).await.unwrap();
    let t = load::run(every_other.addr(), "svc", "/status/201", 6, 1).await;
    assert_eq!((t.statuses.get(&503), t.statuses.get(&201)), (Some(&3), Some(&3)), "{t}");

    let plain = Backend::start(net.addr(4, 8080), "plain").await.unwrap();
    let start = Instant::now();
    assert_eq!(load::send(plain.addr(), "svc", "/delay/300").await.unwrap(), (200, "plain".to_owned()));
    assert!(start.elapsed() >= Duration::from_millis(300), "{:?}", start.elapsed());
    assert_eq!(load::send(plain.addr(), "svc", "/delay/soon").await.unwrap().0, 400);
}

// ---------------------------------------------------------------- TCP echo

#[tokio::test]
async fn tcp_echo_sends_everything_back_and_answers_a_half_close() {
    let net = Subnet::claim().unwrap();
    let echo = TcpEcho::start(net.addr(4, 7001)).await.unwrap();
    let mut conn = TcpStream::connect(echo.addr()).await.unwrap();
    conn.write_all(b"ping").await.unwrap();
    assert_eq!(tcp::read_exactly(&mut conn, 4, WAIT).await.unwrap(), b"ping");
    conn.write_all(b"last").await.unwrap();
    conn.shutdown().await.unwrap();
    assert_eq!(tcp::read_to_eof(&mut conn, WAIT).await.unwrap(), b"last");
    eventually("the server to close its side", || async { echo.half_closed() == 1 }).await.unwrap();
    assert_eq!((echo.connections(), echo.echoed_bytes()), (1, 8));
}

// ---------------------------------------------------------------- gRPC

#[tokio::test]
async fn grpc_server_answers_certify_and_streams_the_events_asked_for() {
    let net = Subnet::claim().unwrap();
    let server = GrpcServer::start(net.addr(2, 9090), "echo-grpc").await.unwrap();
    // No proxy: the server ignores the authority, so it can be called directly.
    let resp = grpc::certify(server.addr(), "echo-grpc:9090", "spiffe://x/ns/a/sa/b", "t").await.unwrap();
    assert_eq!(resp.leaf_certificate, b"echo-grpc certifies spiffe://x/ns/a/sa/b");
    assert_eq!(resp.trust_bundle, [b"t".to_vec()]);
    let start = Instant::now();
    let events = grpc::observe(server.addr(), "echo-grpc:9090", 5).await.unwrap();
    assert_eq!(events.iter().map(|e| e.id).collect::<Vec<_>>(), [1, 2, 3, 4, 5]);
    assert_eq!((events[4].path.as_str(), events[4].authority.as_str()), ("/event/5", "echo-grpc:9090"));
    assert!(start.elapsed() >= Duration::from_millis(40), "events are spaced out, i.e. streamed");
    assert_eq!(server.calls(), 2);
}

// ---------------------------------------------------------------- fake ADS server

fn cluster(name: &str, connect_ms: i32) -> Cluster {
    let mut c = build::eds_cluster(name);
    c.connect_timeout =
        Some(weft_xds_protos::google::protobuf::Duration { seconds: 0, nanos: connect_ms * 1_000_000 });
    c
}

#[tokio::test]
async fn fake_xds_serves_sotw_by_type_and_records_acks_and_nacks() {
    let net = Subnet::claim().unwrap();
    let xds = FakeXds::start(net.addr(250, 0)).await.unwrap();
    let v1 = xds.push(
        Update::new()
            .set(&[cluster("a", 100), cluster("b", 100)])
            .set(&[build::endpoints("a", &[net.addr(2, 80)]), build::endpoints("b", &[net.addr(3, 80)])]),
    );
    let node = xds_client::node("sotw-0", "shop", "web", &net.ip(1).to_string());
    let mut ads = ScriptedAdsClient::connect_sotw(xds.addr(), node).await.unwrap();

    ads.send(xds_client::request(CLUSTER, &[], "", "", None)).unwrap();
    let resp = ads.next_response(WAIT).await.unwrap();
    let names: Vec<String> =
        decode_all::<Cluster>(&resp.resources).unwrap().into_iter().map(|c| c.name).collect();
    assert_eq!(names, ["a", "b"], "a wildcard subscription gets every cluster");
    ads.ack(&resp).unwrap();
    let subscribe = xds.next_reply(WAIT).await.unwrap();
    assert_eq!((subscribe.kind, subscribe.node_id.as_str()), (ReplyKind::Subscribe, "sotw-0"));
    let ack = xds.reply_to(CLUSTER, v1).await.unwrap();
    assert!(ack.is_ack() && ack.answers == Some(v1), "{ack:?}");

    // A named subscription gets only what it names.
    ads.send(xds_client::request(ENDPOINT, &["b"], "", "", None)).unwrap();
    let resp = ads.next_response(WAIT).await.unwrap();
    let cla: Vec<ClusterLoadAssignment> = decode_all(&resp.resources).unwrap();
    assert_eq!(cla.len(), 1);
    assert_eq!(cla[0].cluster_name, "b");
    ads.ack(&resp).unwrap();

    // A change to one cluster resends the whole type (and only that type).
    let v2 = xds.push(Update::new().set(&[cluster("a", 100), cluster("b", 200)]));
    let resp = ads.next_response(WAIT).await.unwrap();
    assert_eq!((resp.type_url.as_str(), resp.resources.len()), (CLUSTER, 2));
    assert_eq!(resp.version_info, v2.to_string());
    ads.nack(&resp, "cluster b: connect_timeout too long").unwrap();
    let nack = xds.reply_to(CLUSTER, v2).await.unwrap();
    assert!(nack.is_nack(), "{nack:?}");
    assert_eq!(nack.error.as_deref(), Some("cluster b: connect_timeout too long"));
    assert_eq!(nack.version_info, v1.to_string(), "a NACK carries the version still in use");
    assert!(ads.recv(Duration::from_millis(200)).await.is_none(), "a NACK is not answered");
}

#[tokio::test]
async fn fake_xds_sends_delta_changes_and_removals_only() {
    let net = Subnet::claim().unwrap();
    let xds = FakeXds::start(net.addr(250, 0)).await.unwrap();
    xds.push(Update::new().set(&[cluster("a", 100), cluster("b", 100)]));
    let node = xds_client::node("delta-0", "shop", "web", &net.ip(1).to_string());
    let mut ads = ScriptedAdsClient::connect_delta(xds.addr(), node).await.unwrap();

    ads.send(xds_client::delta_request(CLUSTER, &[], &[])).unwrap();
    let resp = ads.next_response(WAIT).await.unwrap();
    let mut names: Vec<&str> = resp.resources.iter().map(|r| r.name.as_str()).collect();
    names.sort();
    assert_eq!(names, ["a", "b"]);
    ads.ack(&resp).unwrap();

    let changed = xds.push(Update::new().set(&[cluster("a", 100), cluster("b", 300)]));
    let resp = ads.next_response(WAIT).await.unwrap();
    let names: Vec<&str> = resp.resources.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["b"], "only what changed");
    assert_eq!(resp.resources[0].version, changed.to_string());
    assert!(resp.removed_resources.is_empty());
    ads.nack(&resp, "no").unwrap();
    let nack = xds.reply_to(CLUSTER, changed).await.unwrap();
    assert_eq!((nack.kind, nack.error.as_deref()), (ReplyKind::Nack, Some("no")));

    xds.push(Update::new().set(&[cluster("b", 300)]));
    let resp = ads.next_response(WAIT).await.unwrap();
    assert!(resp.resources.is_empty(), "{resp:?}");
    assert_eq!(resp.removed_resources, ["a"]);
}

// ---------------------------------------------------------------- control plane stop and restart

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_control_plane_breaks_streams_and_restarts_on_the_same_addresses() {
    let mut mesh = LocalMesh::start(&examples_dir().join("payments"), ControlMode::Process).await.unwrap();
    let (xds, admin) = (mesh.xds_addr().unwrap(), mesh.admin_addr().unwrap());
    assert_eq!((xds.ip(), admin.ip()), (mesh.subnet.ip(250), mesh.subnet.ip(250)));
    let node = xds_client::node("scripted", "payments", "frontend", &mesh.subnet.ip(1).to_string());
    let mut ads = mesh.connect_sotw(node).await.unwrap();
    ads.send(xds_client::request(CLUSTER, &[], "", "", None)).unwrap();
    assert!(!ads.next_response(WAIT).await.unwrap().resources.is_empty());

    mesh.stop_control().await.unwrap();
    assert!(ads.recv(WAIT).await.is_none());
    assert!(ads.ended().is_some(), "the xDS stream outlived the control plane");
    assert!(TcpStream::connect(xds).await.is_err());
    assert!(mesh.xds_addr().is_err(), "a stopped control plane has no address to offer");

    mesh.restart_control().await.unwrap();
    assert_eq!((mesh.xds_addr().unwrap(), mesh.admin_addr().unwrap()), (xds, admin));
    let node = xds_client::node("scripted", "payments", "frontend", &mesh.subnet.ip(1).to_string());
    let mut ads = mesh.connect_sotw(node).await.unwrap();
    ads.send(xds_client::request(CLUSTER, &[], "", "", None)).unwrap();
    assert!(!ads.next_response(WAIT).await.unwrap().resources.is_empty());
    assert!(mesh.proxies().await.unwrap().contains_key("scripted"));
}

#[tokio::test]
async fn an_in_process_control_plane_restarts_on_the_same_addresses() {
    let mut mesh = LocalMesh::manifests("resilience").await.unwrap();
    let (xds, admin) = (mesh.xds_addr().unwrap(), mesh.admin_addr().unwrap());
    assert_ne!(xds.port(), 0);
    mesh.stop_control().await.unwrap();
    mesh.restart_control().await.unwrap();
    assert_eq!((mesh.xds_addr().unwrap(), mesh.admin_addr().unwrap()), (xds, admin));
    assert_eq!(mesh.admin_get("/ready").await.unwrap(), "ready\n");
}

// ---------------------------------------------------------------- security of a LocalMesh

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mesh_runs_mtls_by_default_and_plaintext_when_asked() {
    use weft_control::bootstrap::AdsMode;
    use weft_integration::ProxyKind;

    for kind in [ProxyKind::Weft, ProxyKind::Envoy] {
        for plaintext in [false, true] {
            let builder = LocalMesh::example_builder("payments");
            let mesh = if plaintext { builder.plaintext() } else { builder }.start().await.unwrap();
            assert_eq!(mesh.identity().is_some(), !plaintext);
            assert_eq!(
                mesh.ca_dir().join("root-cert.pem").is_file(),
                !plaintext,
                "the CA is made only for mTLS"
            );
            let _app = mesh.backend(2, 8080, "payment-v1").await.unwrap();
            let server =
                mesh.proxy(kind, "payment-v1", "payments", "payment", 2, AdsMode::Delta).await.unwrap();
            let _client =
                mesh.proxy(kind, "frontend", "payments", "frontend", 1, AdsMode::Delta).await.unwrap();
            let outbound = mesh.subnet.addr(1, 4140);
            eventually("payment-v1 to answer", || async {
                let answer = load::send(outbound, "payment-v1:8080", "/").await?;
                anyhow::ensure!(answer == (200, "payment-v1".to_owned()), "{answer:?}");
                anyhow::Ok(true)
            })
            .await
            .unwrap();
            let tls = match kind {
                ProxyKind::Weft => {
                    let metrics = server.get_admin("/metrics").await.unwrap();
                    metrics.lines().any(|l| l.starts_with("request_total") && l.contains("tls=\"true\""))
                }
                ProxyKind::Envoy => {
                    let stats = server.get_admin("/stats?filter=ssl.handshake").await.unwrap();
                    stats.lines().any(|l| l.contains("_4143.ssl.handshake") && !l.ends_with(": 0"))
                }
            };
            assert_eq!(tls, !plaintext, "{kind}, plaintext: {plaintext}");
        }
    }
}
