//! Every data-path scenario against both proxies: stock Envoy and weft-proxy, each
//! in both ADS flavours (State of the World and Delta). One body per scenario,
//! parametrised by proxy kind and mode; the macro at the bottom makes the tests
//! `envoy::sotw::<scenario>`, `envoy::delta::<scenario>`, `weft::sotw::<scenario>`
//! and `weft::delta::<scenario>`. `mixed::<mode>::...` puts Envoy and weft-proxy on
//! either side of the same requests.
//!
//! Most scenarios run the payments example with its pod IPs moved to the test's own
//! loopback subnet: frontend (.1), payment-v1 (.2), payment-v2 (.3), each with a proxy.
//! Requests enter at the frontend's outbound port (4140), are split by the
//! TrafficSplit, and reach each version's app through that version's inbound
//! listener (4143). The protocol and resilience scenarios use the manifests in
//! `integration/manifests/`; the NACK scenario talks to a fake ADS server instead of
//! weft's control plane, to push resources no control plane would make.
//!
//! weft-proxy is the `weft-proxy` binary built next to the tests
//! (`cargo build -p weft-proxy`, or `$WEFT_PROXY_BIN`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use weft_control::bootstrap::AdsMode;
use weft_integration::fake_xds::{FakeXds, Update, build};
use weft_integration::mesh::{ControlMode, LocalMesh, examples_dir};
use weft_integration::{
    Backend, Failures, Proxy, ProxyConfig, ProxyKind, SteadyLoad, Subnet, eventually, load, tcp,
};
use weft_xds_protos::envoy::config::route::v3::{RouteMatch, route_match};
use weft_xds_protos::envoy::r#type::matcher::v3::RegexMatcher;
use weft_xds_protos::type_url;

const HOST: &str = "payment-svc:8080";

/// The payments canary with a proxy per workload.
struct Canary {
    mesh: LocalMesh,
    frontend: Proxy,
    _v1: (Proxy, Backend),
    _v2: (Proxy, Backend),
}

impl Canary {
    async fn start(kind: ProxyKind, mode: AdsMode) -> anyhow::Result<Canary> {
        Canary::start_with(kind, mode, ControlMode::InProcess).await
    }

    async fn start_with(kind: ProxyKind, mode: AdsMode, control: ControlMode) -> anyhow::Result<Canary> {
        Canary::start_mixed(kind, kind, mode, control).await
    }

    /// The frontend's proxy is a `client`, the payment versions' are `servers`.
    async fn start_mixed(
        client: ProxyKind,
        servers: ProxyKind,
        mode: AdsMode,
        control: ControlMode,
    ) -> anyhow::Result<Canary> {
        let mesh = LocalMesh::start(&examples_dir().join("payments"), control).await?;
        let v1 = (
            mesh.proxy(servers, "payment-v1", "payments", "payment", 2, mode).await?,
            mesh.backend(2, 8080, "payment-v1").await?,
        );
        let v2 = (
            mesh.proxy(servers, "payment-v2", "payments", "payment", 3, mode).await?,
            mesh.backend(3, 8080, "payment-v2").await?,
        );
        let frontend = mesh.proxy(client, "frontend", "payments", "frontend", 1, mode).await?;
        Ok(Canary { mesh, frontend, _v1: v1, _v2: v2 })
    }

    fn outbound(&self) -> SocketAddr {
        self.mesh.subnet.addr(1, 4140)
    }

    /// Sends `n` requests to payment-svc and returns the tally.
    async fn traffic(&self, n: usize) -> load::Tally {
        load::run(self.outbound(), HOST, "/pay", n, 8).await
    }

    /// Waits until a window of requests splits as `want_v2` (a fraction) within `tolerance`.
    async fn converges_to(&self, want_v2: f64, tolerance: f64) -> anyhow::Result<()> {
        eventually(&format!("payment-v2's share to reach {want_v2}"), || async {
            let t = self.traffic(200).await;
            let share = t.share("payment-v2");
            anyhow::ensure!(t.failures == 0, "failures: {:?}", t);
            anyhow::ensure!((share - want_v2).abs() <= tolerance, "payment-v2 share {share}");
            anyhow::Ok(true)
        })
        .await
    }

    async fn apply_split(&self, v1: &str, v2: &str) -> anyhow::Result<(i32, String, String)> {
        let file = tempfile::Builder::new().prefix("split-").suffix(".yaml").tempfile()?;
        std::fs::write(file.path(), split_yaml(v1, v2))?;
        self.mesh.weft_apply(file.path()).await
    }
}

fn split_yaml(v1: &str, v2: &str) -> String {
    format!(
        "apiVersion: split.smi-spec.io/v1alpha1\nkind: TrafficSplit\nmetadata:\n  name: payment-split\n  namespace: payments\nspec:\n  service: payment-svc\n  backends:\n  - service: payment-v1\n    weight: {v1}\n  - service: payment-v2\n    weight: {v2}\n"
    )
}

/// Waits until the steady load has completed `n` requests.
async fn served(load: &SteadyLoad, n: usize) -> anyhow::Result<()> {
    eventually(&format!("{n} requests of steady load"), || async {
        let so_far = load.so_far().total();
        anyhow::ensure!(so_far >= n, "{so_far} requests so far");
        anyhow::Ok(true)
    })
    .await
}

/// Whether any object in `v` has a non-empty string `version_info`.
fn has_version_info(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::Object(map) => {
            map.get("version_info").and_then(|s| s.as_str()).is_some_and(|s| !s.is_empty())
                || map.values().any(has_version_info)
        }
        serde_json::Value::Array(items) => items.iter().any(has_version_info),
        _ => false,
    }
}

// ---------------------------------------------------------------- the foundation's scenarios

async fn reaches_ready_with_every_type_acked(kind: ProxyKind, mode: AdsMode) -> anyhow::Result<()> {
    let canary = Canary::start(kind, mode).await?;
    assert!(canary.frontend.is_ready().await?, "{kind} is ready");
    let proxies = canary.mesh.wait_synced(&["frontend", "payment-v1", "payment-v2"]).await?;
    let stream = proxies["frontend"]["stream"].as_str().unwrap();
    assert_eq!(stream, if mode == AdsMode::Delta { "ads-delta" } else { "ads-sotw" });
    // The proxy's own view: the outbound and inbound listeners weft sent are active
    // (Envoy's /listeners; weft-proxy's /config_dump).
    let listeners = canary.frontend.listener_names().await?;
    assert!(
        listeners.iter().any(|l| l == "outbound") && listeners.iter().any(|l| l == "inbound"),
        "{kind} listeners: {listeners:?}"
    );
    if let Some(weft) = canary.frontend.as_weft() {
        let dump = weft.config_dump().await?;
        assert!(has_version_info(&dump), "weft-proxy's /config_dump shows no version_info: {dump}");
        let metrics = weft.get_admin("/metrics").await?;
        assert!(metrics.contains("# TYPE"), "weft-proxy's /metrics is not Prometheus text: {metrics}");
        assert_eq!(weft.admin_status("/live").await?, 200);
    }
    // The control plane's view of the same proxy, as Envoy JSON.
    let dump: serde_json::Value =
        serde_json::from_str(&canary.mesh.admin_get("/debug/config?node=frontend").await?)?;
    let lds = dump["resources"]["lds"].as_array().expect("listeners");
    let outbound = lds.iter().find(|l| l["name"] == "outbound").expect("outbound listener");
    assert_eq!(outbound["resource"]["@type"], type_url::LISTENER);
    let port = &outbound["resource"]["address"]["socketAddress"]["portValue"];
    assert_eq!(port, 4140, "{outbound}");
    let metrics = canary.mesh.admin_get("/metrics").await?;
    assert!(metrics.contains("weft_xds_connected_proxies{mode="), "{metrics}");
    Ok(())
}

async fn payments_canary_sends_five_percent_to_v2(kind: ProxyKind, mode: AdsMode) -> anyhow::Result<()> {
    let canary = Canary::start(kind, mode).await?;
    canary.converges_to(0.05, 0.05).await?;
    let t = canary.traffic(2000).await;
    assert_eq!(t.failures, 0, "{t:?}");
    assert_eq!(t.ok(), 2000, "{t:?}");
    let share = t.share("payment-v2") * 100.0;
    assert!(
        (3.5..=6.5).contains(&share),
        "payment-v2 got {share:.2} % of 2,000 requests, want 5 +- 1.5: {t:?}"
    );
    if let Some(weft) = canary.frontend.as_weft() {
        // Linkerd's metric names, per direction.
        let metrics = weft.get_admin("/metrics").await?;
        for name in ["request_total", "response_total"] {
            assert!(
                metrics.lines().any(|l| l.starts_with(name) && l.contains("direction=\"outbound\"")),
                "no outbound {name} in weft-proxy's /metrics:\n{metrics}"
            );
        }
    }
    Ok(())
}

async fn new_split_converges_without_failed_requests(kind: ProxyKind, mode: AdsMode) -> anyhow::Result<()> {
    let canary = Canary::start(kind, mode).await?;
    canary.converges_to(0.05, 0.05).await?;
    let load = SteadyLoad::start(canary.outbound(), HOST, "/pay", 100);
    served(&load, 20).await?;
    let (code, out, err) = canary.apply_split("500m", "500m").await?;
    assert_eq!(code, 0, "weft apply failed: {out}{err}");
    assert!(out.contains("TrafficSplit payments/payment-split"), "{out}");
    canary.converges_to(0.5, 0.12).await?;
    let (code, out, err) = canary.apply_split("0", "1").await?;
    assert_eq!(code, 0, "weft apply failed: {out}{err}");
    canary.converges_to(1.0, 0.0).await?;
    served(&load, load.so_far().total() + 20).await?;
    let tally = load.stop().await?;
    assert!(
        tally.by_body.get("payment-v1").is_some_and(|n| *n > 0),
        "v1 served before the change: {tally:?}"
    );
    assert_eq!(tally.failures, 0, "requests failed during the change: {tally:?}");
    // The file on disk holds the applied split.
    let stored = canary.mesh.read_manifest("split.yaml")?;
    assert!(stored.contains("weight: 1") && !stored.contains("950m"), "{stored}");
    Ok(())
}

async fn removed_endpoint_stops_receiving_traffic(kind: ProxyKind, mode: AdsMode) -> anyhow::Result<()> {
    let canary = Canary::start(kind, mode).await?;
    canary.mesh.write_manifest("split.yaml", &split_yaml("500m", "500m"))?;
    canary.converges_to(0.5, 0.12).await?;
    // Remove payment-v2's pod: its service has no endpoint left.
    let payment = canary.mesh.read_manifest("payment.yaml")?;
    let without_v2: Vec<&str> = payment
        .split("\n---\n")
        .filter(|doc| !(doc.contains("kind: Pod") && doc.contains("\n  name: payment-v2\n")))
        .collect();
    assert_eq!(without_v2.len(), 4, "the example's payment-v2 pod was found and removed");
    canary.mesh.write_manifest("payment.yaml", &without_v2.join("\n---\n"))?;
    canary.converges_to(0.0, 0.0).await?;
    let t = canary.traffic(300).await;
    assert_eq!(t.failures, 0, "{t:?}");
    assert_eq!(t.by_body.get("payment-v2"), None, "{t:?}");
    Ok(())
}

async fn invalid_manifest_is_refused_and_traffic_is_unchanged(
    kind: ProxyKind,
    mode: AdsMode,
) -> anyhow::Result<()> {
    let canary = Canary::start(kind, mode).await?;
    canary.converges_to(0.05, 0.05).await?;
    let before = canary.mesh.read_manifest("split.yaml")?;
    let version_before = canary.mesh.proxies().await?["frontend"]["snapshot_version"].clone();
    let (code, out, err) = canary.apply_split("950m", "-5").await?;
    assert_eq!(code, 1, "weft apply must fail: {out}{err}");
    assert!(err.contains("TrafficSplit payments/payment-split"), "names the object: {err}");
    assert!(err.contains("spec.backends[1].weight"), "names the field: {err}");
    assert_eq!(canary.mesh.read_manifest("split.yaml")?, before, "nothing stored");
    assert_eq!(
        canary.mesh.proxies().await?["frontend"]["snapshot_version"],
        version_before,
        "nothing published"
    );
    let t = canary.traffic(1000).await;
    assert_eq!(t.failures, 0, "{t:?}");
    let share = t.share("payment-v2") * 100.0;
    assert!((2.0..=8.0).contains(&share), "split unchanged at 5 %: {share:.2} %");
    Ok(())
}

// ---------------------------------------------------------------- mixed proxies

/// Envoy in front of weft-proxy and weft-proxy in front of Envoy: both speak what xDS says.
async fn envoy_and_weft_proxy_carry_each_others_traffic(mode: AdsMode) -> anyhow::Result<()> {
    for (client, servers) in [(ProxyKind::Envoy, ProxyKind::Weft), (ProxyKind::Weft, ProxyKind::Envoy)] {
        let canary = Canary::start_mixed(client, servers, mode, ControlMode::InProcess).await?;
        canary.mesh.write_manifest("split.yaml", &split_yaml("500m", "500m"))?;
        canary.converges_to(0.5, 0.12).await?;
        let t = canary.traffic(400).await;
        assert_eq!(t.failures, 0, "{client} in front of {servers}: {t}");
        assert!(
            t.share("payment-v1") > 0.3 && t.share("payment-v2") > 0.3,
            "{client} in front of {servers}: {t}"
        );
    }
    Ok(())
}

mod mixed {
    mod sotw {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn envoy_and_weft_proxy_carry_each_others_traffic() -> anyhow::Result<()> {
            crate::envoy_and_weft_proxy_carry_each_others_traffic(crate::AdsMode::Sotw).await
        }
    }
    mod delta {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn envoy_and_weft_proxy_carry_each_others_traffic() -> anyhow::Result<()> {
            crate::envoy_and_weft_proxy_carry_each_others_traffic(crate::AdsMode::Delta).await
        }
    }
}

// ---------------------------------------------------------------- control plane outage

/// How long the control plane stays dead under load: long enough for every proxy to
/// notice and retry, short enough to keep the test quick.
const OUTAGE: Duration = Duration::from_secs(2);

async fn proxies_keep_serving_while_the_control_plane_is_down_and_resync_after_restart(
    kind: ProxyKind,
    mode: AdsMode,
) -> anyhow::Result<()> {
    // `weft control` as a process, so stopping it is a crash: every xDS stream breaks.
    let mut canary = Canary::start_with(kind, mode, ControlMode::Process).await?;
    canary.converges_to(0.05, 0.05).await?;
    let load = SteadyLoad::start(canary.outbound(), HOST, "/pay", 100);
    served(&load, 20).await?;

    let xds = canary.mesh.xds_addr()?;
    canary.mesh.stop_control().await?;
    assert!(TcpStream::connect(xds).await.is_err(), "the control plane still listens at {xds}");
    let at_kill = load.so_far().total();
    // Proving that nothing fails takes a while of load with the control plane gone.
    tokio::time::sleep(OUTAGE).await;
    let during = load.so_far();
    assert!(during.total() >= at_kill + 50, "the load stalled during the outage: {during}");
    assert_eq!(during.failures, 0, "requests failed while the control plane was down: {during}");

    canary.mesh.restart_control().await?;
    // Every proxy reconnects on its own and ACKs the new control plane's config ...
    canary.mesh.wait_synced(&["frontend", "payment-v1", "payment-v2"]).await?;
    // ... and follows what changes after the restart.
    let (code, out, err) = canary.apply_split("0", "1").await?;
    assert_eq!(code, 0, "weft apply failed: {out}{err}");
    canary.converges_to(1.0, 0.0).await?;
    served(&load, load.so_far().total() + 20).await?;
    let tally = load.stop().await?;
    assert_eq!(tally.failures, 0, "requests failed around the outage: {tally}");
    assert!(tally.by_body.get("payment-v1").is_some_and(|n| *n > 0), "{tally}");
    Ok(())
}

// ---------------------------------------------------------------- NACK of a bad resource

const LISTENER: &str = "fake-outbound";
const ROUTES: &str = "fake-routes";

async fn bad_resources_are_nacked_with_detail_and_the_old_config_keeps_serving(
    kind: ProxyKind,
    mode: AdsMode,
) -> anyhow::Result<()> {
    let net = Subnet::claim()?;
    let xds = FakeXds::start(net.addr(250, 0)).await?;
    let v1 = Backend::start(net.addr(2, 8080), "app-v1").await?;
    let v2 = Backend::start(net.addr(3, 8080), "app-v2").await?;
    let outbound = net.addr(1, 4140);
    let good_listener = build::http_listener(LISTENER, outbound, ROUTES, vec![build::router()]);
    let clusters = [build::eds_cluster("app-v1"), build::eds_cluster("app-v2")];
    let endpoints = [build::endpoints("app-v1", &[v1.addr()]), build::endpoints("app-v2", &[v2.addr()])];
    let first = xds.push(
        Update::new()
            .set(&clusters)
            .set(&endpoints)
            .set(std::slice::from_ref(&good_listener))
            .set(&[build::route_all(ROUTES, "app-v1")]),
    );
    let config = ProxyConfig::new("nack-test", "shop", "client", net.ip(1), xds.addr(), mode);
    let proxy = Proxy::start(kind, &config).await?;
    let ack = xds.reply_to(type_url::LISTENER, first).await?;
    assert!(ack.is_ack(), "the good listener was not ACKed: {ack:?}");
    assert_eq!((ack.mode, ack.node_id.as_str()), (mode, "nack-test"));
    let t = load::run(outbound, "app", "/", 20, 2).await;
    assert_eq!(t.by_body.get("app-v1"), Some(&20), "{t}");

    // A listener with an HTTP filter neither proxy implements.
    let bad_listener =
        build::http_listener(LISTENER, outbound, ROUTES, vec![build::unknown_http_filter(), build::router()]);
    let bad = xds.push(Update::new().set(&[bad_listener]));
    let nack = xds.reply_to(type_url::LISTENER, bad).await?;
    assert!(nack.is_nack(), "{kind} accepted a listener with an unknown HTTP filter: {nack:?}");
    let detail = nack.error.clone().unwrap_or_default();
    assert!(detail.contains(LISTENER), "the NACK does not name the listener: {detail:?}");
    assert!(
        detail.contains("weft.test.unknown_filter") || detail.contains("weft.test.v1.UnknownFilter"),
        "the NACK does not say which filter is unknown: {detail:?}"
    );
    let t = load::run(outbound, "app", "/", 50, 4).await;
    assert_eq!(t.by_body.get("app-v1"), Some(&50), "the old listener stopped serving: {t}");

    // A route whose path regex RE2 refuses (a look-behind), sending to app-v2.
    let bad_regex = RouteMatch {
        path_specifier: Some(route_match::PathSpecifier::SafeRegex(RegexMatcher {
            regex: "/(?<=x)pay".into(),
            ..Default::default()
        })),
        ..Default::default()
    };
    let bad = xds.push(Update::new().set(&[build::route_config(ROUTES, bad_regex, "app-v2")]));
    let nack = xds.reply_to(type_url::ROUTE, bad).await?;
    assert!(nack.is_nack(), "{kind} accepted a regex RE2 refuses: {nack:?}");
    let detail = nack.error.clone().unwrap_or_default();
    assert!(detail.contains("(?<"), "the NACK does not say what is wrong with the regex: {detail:?}");
    if kind == ProxyKind::Weft {
        // Envoy's RDS NACK says only what RE2 said ("invalid perl operator: (?<="),
        // without the route configuration's name; weft-proxy names it.
        assert!(detail.contains(ROUTES), "the NACK does not name the route configuration: {detail:?}");
    }
    let t = load::run(outbound, "app", "/", 50, 4).await;
    assert_eq!(t.by_body.get("app-v1"), Some(&50), "the old routes stopped serving: {t}");
    assert!(proxy.is_ready().await?, "{kind} is no longer ready after NACKs");

    // The next good version is taken: the proxy is not stuck on the rejected ones.
    let fixed = xds.push(Update::new().set(&[good_listener]).set(&[build::route_all(ROUTES, "app-v2")]));
    let ack = xds.reply_to(type_url::ROUTE, fixed).await?;
    assert!(ack.is_ack(), "{ack:?}");
    eventually("traffic to move to app-v2", || async {
        let t = load::run(outbound, "app", "/", 20, 2).await;
        anyhow::ensure!(t.by_body.get("app-v2") == Some(&20), "{t}");
        anyhow::Ok(true)
    })
    .await?;
    assert!(v1.requests() >= 120 && v2.requests() >= 20);
    Ok(())
}

// ---------------------------------------------------------------- protocols

/// The authority the app saw: `:authority` (HTTP/2) or `Host` (HTTP/1.1).
fn seen_authority(backend: &Backend) -> Option<String> {
    let seen = backend.last_request()?;
    match seen.uri.authority() {
        Some(a) => Some(a.to_string()),
        None => seen.headers.get("host").and_then(|h| h.to_str().ok()).map(str::to_owned),
    }
}

async fn h2c_requests_multiplex_through_both_proxies(kind: ProxyKind, mode: AdsMode) -> anyhow::Result<()> {
    let mesh = LocalMesh::manifests("protocols").await?;
    let web = mesh.backend(3, 8080, "web").await?;
    let _web_proxy = mesh.proxy(kind, "web", "shop", "web", 3, mode).await?;
    let _client = mesh.proxy(kind, "client", "shop", "client", 1, mode).await?;

    // HTTP/2 with prior knowledge, as a gRPC or h2c client speaks it: no upgrade dance.
    let stream = TcpStream::connect(mesh.subnet.addr(1, 4140)).await?;
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await?;
    let conn = tokio::spawn(conn);
    // Twenty requests at once on the one connection.
    let mut requests = tokio::task::JoinSet::new();
    for i in 0..20 {
        let mut sender = sender.clone();
        requests.spawn(async move {
            let req = http::Request::get(format!("http://web:8080/h2/{i}")).body(Empty::<Bytes>::new())?;
            let resp = sender.send_request(req).await?;
            let (version, status) = (resp.version(), resp.status().as_u16());
            let body = resp.into_body().collect().await?.to_bytes();
            anyhow::Ok((version, status, String::from_utf8_lossy(&body).into_owned()))
        });
    }
    while let Some(answer) = requests.join_next().await {
        let (version, status, body) = answer??;
        assert_eq!((version, status, body.as_str()), (http::Version::HTTP_2, 200, "web"));
    }
    assert!(!conn.is_finished(), "{kind} closed the HTTP/2 connection");
    assert_eq!(web.requests(), 20);
    assert!(web.last_request().unwrap().uri.path().starts_with("/h2/"));
    assert_eq!(
        seen_authority(&web).as_deref(),
        Some("web:8080"),
        "the app sees the authority the client sent"
    );
    Ok(())
}

async fn grpc_unary_and_server_streaming_pass_through_both_proxies(
    kind: ProxyKind,
    mode: AdsMode,
) -> anyhow::Result<()> {
    let mesh = LocalMesh::manifests("protocols").await?;
    let app = mesh.grpc_server(2, 9090, "echo-grpc").await?;
    let _server_proxy = mesh.proxy(kind, "echo-grpc", "shop", "echo-grpc", 2, mode).await?;
    let _client = mesh.proxy(kind, "client", "shop", "client", 1, mode).await?;
    let via = mesh.subnet.addr(1, 4140);
    let authority = "echo-grpc:9090";

    let identity = "spiffe://cluster.local/ns/shop/sa/client";
    let resp = weft_integration::grpc::certify(via, authority, identity, "token-1").await?;
    assert_eq!(String::from_utf8_lossy(&resp.leaf_certificate), format!("echo-grpc certifies {identity}"));
    assert_eq!(resp.trust_bundle, vec![b"token-1".to_vec()]);

    let events = weft_integration::grpc::observe(via, authority, 25).await?;
    let ids: Vec<u64> = events.iter().map(|e| e.id).collect();
    assert_eq!(ids, (1..=25).collect::<Vec<u64>>(), "every event, in order");
    assert!(events.iter().all(|e| e.authority == authority && e.cluster == "echo-grpc"), "{events:?}");
    assert_eq!(events[24].path, "/event/25");
    assert_eq!(app.calls(), 2);
    Ok(())
}

async fn tcp_passthrough_echoes_and_half_closes(kind: ProxyKind, mode: AdsMode) -> anyhow::Result<()> {
    let mesh = LocalMesh::manifests("protocols").await?;
    let echo = mesh.tcp_echo(4, 7001).await?;
    let _server_proxy = mesh.proxy(kind, "echo-tcp", "shop", "echo-tcp", 4, mode).await?;
    let client = mesh.proxy(kind, "client", "shop", "client", 1, mode).await?;
    // Locally the client's proxy listens for echo-tcp on <client pod IP>:<service port>.
    let listener = "outbound|7000||echo-tcp.shop.svc.cluster.local";
    let listeners = client.listener_names().await?;
    assert!(listeners.iter().any(|l| l == listener), "{kind} has no {listener} listener: {listeners:?}");
    let wait = Duration::from_secs(5);

    let mut conn = TcpStream::connect(mesh.subnet.addr(1, 7000)).await?;
    conn.write_all(b"hello, ").await?;
    assert_eq!(tcp::read_exactly(&mut conn, 7, wait).await?, b"hello, ");
    let big: Vec<u8> = (0..256 * 1024).map(|i| (i % 251) as u8).collect();
    let (mut rd, mut wr) = conn.into_split();
    let writer = {
        let big = big.clone();
        tokio::spawn(async move {
            wr.write_all(&big).await?;
            wr.write_all(b"bye").await?;
            // Half-close: the server must still get everything and answer it.
            wr.shutdown().await?;
            anyhow::Ok(wr)
        })
    };
    let mut back = Vec::new();
    tokio::time::timeout(wait, tokio::io::AsyncReadExt::read_to_end(&mut rd, &mut back))
        .await
        .map_err(|_| anyhow::anyhow!("no EOF after the half-close (got {} bytes)", back.len()))??;
    let _wr = writer.await??;
    assert_eq!(back.len(), big.len() + 3, "every byte came back before the EOF");
    assert!(back.starts_with(&big) && back.ends_with(b"bye"));
    assert_eq!(echo.connections(), 1, "one connection reached the app, through the proxy");
    eventually("the app to see the half-close and close cleanly", || async { echo.half_closed() == 1 })
        .await?;
    assert_eq!(echo.echoed_bytes(), 7 + big.len() as u64 + 3);
    Ok(())
}

// ---------------------------------------------------------------- retries and timeouts

/// The virtual host the control plane gives `node` for `service` port 8080, as JSON.
async fn virtual_host_for(mesh: &LocalMesh, node: &str, service: &str) -> anyhow::Result<serde_json::Value> {
    let dump: serde_json::Value =
        serde_json::from_str(&mesh.admin_get(&format!("/debug/config?node={node}")).await?)?;
    let name = format!("{service}.shop.svc.cluster.local:8080");
    dump["resources"]["rds"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|rc| rc["resource"]["virtualHosts"].as_array().into_iter().flatten())
        .find(|vh| vh["name"] == name.as_str())
        .cloned()
        .ok_or_else(|| {
            anyhow::anyhow!("no virtual host {name} in the control plane's config for {node}: {dump}")
        })
}

/// A protobuf JSON duration (`"0.500s"`) in seconds.
fn seconds(v: &serde_json::Value) -> Option<f64> {
    v.as_str()?.strip_suffix('s')?.parse().ok()
}

async fn retries_turn_a_backends_503s_into_success(kind: ProxyKind, mode: AdsMode) -> anyhow::Result<()> {
    let mesh = LocalMesh::manifests("resilience").await?;
    let flaky = mesh.failing_backend(2, 8080, "flaky", Failures::EveryOther).await?;
    let fragile = mesh.failing_backend(3, 8080, "fragile", Failures::EveryOther).await?;
    let _flaky_proxy = mesh.proxy(kind, "flaky", "shop", "flaky", 2, mode).await?;
    let _fragile_proxy = mesh.proxy(kind, "fragile", "shop", "fragile", 3, mode).await?;
    let _client = mesh.proxy(kind, "client", "shop", "client", 1, mode).await?;
    let vh = virtual_host_for(&mesh, "client", "flaky").await?;
    let policy = [&vh["retryPolicy"], &vh["routes"][0]["route"]["retryPolicy"]];
    assert!(
        policy.iter().any(|p| p["numRetries"] == 2 && p["retryOn"] == "5xx"),
        "the control plane does not turn weft.io/retries into a retry policy: {vh}"
    );
    let outbound = mesh.subnet.addr(1, 4140);

    // One at a time, so each request's first try meets a 503 and its retry a 200.
    let t = load::run(outbound, "flaky:8080", "/", 20, 1).await;
    assert_eq!((t.ok(), t.failures), (20, 0), "retries did not hide the 503s: {t}");
    assert_eq!(flaky.requests(), 40, "every request was tried twice");

    // The same failures without a retry policy reach the client.
    let t = load::run(outbound, "fragile:8080", "/", 20, 1).await;
    assert_eq!(t.statuses.get(&503), Some(&10), "{t}");
    assert_eq!(t.ok(), 10, "{t}");
    assert_eq!(fragile.requests(), 20, "nothing was retried");
    Ok(())
}

async fn route_timeout_answers_504_at_its_configured_value(
    kind: ProxyKind,
    mode: AdsMode,
) -> anyhow::Result<()> {
    let mesh = LocalMesh::manifests("resilience").await?;
    let slow = mesh.backend(4, 8080, "slow").await?;
    let _slow_proxy = mesh.proxy(kind, "slow", "shop", "slow", 4, mode).await?;
    let _client = mesh.proxy(kind, "client", "shop", "client", 1, mode).await?;
    let vh = virtual_host_for(&mesh, "client", "slow").await?;
    assert_eq!(
        seconds(&vh["routes"][0]["route"]["timeout"]),
        Some(0.5),
        "the control plane does not turn weft.io/timeout into a route timeout: {vh}"
    );
    let outbound = mesh.subnet.addr(1, 4140);

    let (status, body) = load::send(outbound, "slow:8080", "/delay/50").await?;
    assert_eq!((status, body.as_str()), (200, "slow"), "a quick answer is not cut short");

    let start = Instant::now();
    let (status, body) = load::send(outbound, "slow:8080", "/delay/2000").await?;
    let took = start.elapsed();
    assert_eq!(status, 504, "a 2 s answer past a 500 ms timeout: {body}");
    assert!(
        (Duration::from_millis(450)..Duration::from_millis(1500)).contains(&took),
        "the 500 ms timeout fired after {took:?}"
    );
    assert_eq!(slow.requests(), 2);
    Ok(())
}

// ---------------------------------------------------------------- Envoy only

/// Prints a bootstrap with `weft envoy-bootstrap ARGS` and has Envoy validate it.
fn envoy_validates_bootstrap(args: &[&str]) -> anyhow::Result<()> {
    let out = std::process::Command::new(weft_integration::weft_bin()?)
        .arg("envoy-bootstrap")
        .args(args)
        .args(["--pod-ip", "127.0.10.1"])
        .output()?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let file = tempfile::Builder::new().suffix(".yaml").tempfile()?;
    std::fs::write(file.path(), &out.stdout)?;
    let check = std::process::Command::new(weft_integration::envoy_bin()?)
        .args(["--mode", "validate", "-c"])
        .arg(file.path())
        .output()?;
    assert!(
        check.status.success(),
        "envoy --mode validate refused the bootstrap of {args:?}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    Ok(())
}

#[tokio::test]
async fn envoy_accepts_the_bootstrap_weft_prints() -> anyhow::Result<()> {
    // Envoy does not dial the SDS socket to validate; it need not exist.
    let sds = ["--sds-socket", "/run/weft/sds/agent.sock"];
    for flavour in ["--delta", "--sotw"] {
        envoy_validates_bootstrap(
            &[&["--node-id", "web", "--namespace", "shop", flavour][..], &sds].concat(),
        )?;
        envoy_validates_bootstrap(&[
            "--node-id",
            "web",
            "--namespace",
            "shop",
            flavour,
            "--insecure-plaintext",
        ])?;
    }
    Ok(())
}

#[tokio::test]
async fn envoy_accepts_a_bootstrap_whose_names_yaml_would_read_as_booleans() -> anyhow::Result<()> {
    // YAML 1.1, which Envoy reads, takes unquoted `n`, `yes`, `on`... as booleans.
    for word in ["n", "yes", "on", "off"] {
        envoy_validates_bootstrap(&["--node-id", word, "--namespace", word, "--sds-socket", "/tmp/n.sock"])?;
    }
    Ok(())
}

/// One test per scenario, proxy kind and ADS flavour: `<kind>::<mode>::<scenario>`.
macro_rules! scenarios {
    ($($scenario:ident),* $(,)?) => {
        scenarios!(@kind envoy, Envoy, $($scenario),*);
        scenarios!(@kind weft, Weft, $($scenario),*);
    };
    (@kind $kind_mod:ident, $kind:ident, $($scenario:ident),*) => {
        mod $kind_mod {
            scenarios!(@mode sotw, Sotw, $kind, $($scenario),*);
            scenarios!(@mode delta, Delta, $kind, $($scenario),*);
        }
    };
    (@mode $mode_mod:ident, $mode:ident, $kind:ident, $($scenario:ident),*) => {
        mod $mode_mod {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() -> anyhow::Result<()> {
                    crate::$scenario(crate::ProxyKind::$kind, crate::AdsMode::$mode).await
                }
            )*
        }
    };
}

scenarios!(
    reaches_ready_with_every_type_acked,
    payments_canary_sends_five_percent_to_v2,
    new_split_converges_without_failed_requests,
    removed_endpoint_stops_receiving_traffic,
    invalid_manifest_is_refused_and_traffic_is_unchanged,
    proxies_keep_serving_while_the_control_plane_is_down_and_resync_after_restart,
    bad_resources_are_nacked_with_detail_and_the_old_config_keeps_serving,
    h2c_requests_multiplex_through_both_proxies,
    grpc_unary_and_server_streaming_pass_through_both_proxies,
    tcp_passthrough_echoes_and_half_closes,
    retries_turn_a_backends_503s_into_success,
    route_timeout_answers_504_at_its_configured_value,
);
