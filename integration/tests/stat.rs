//! `weft stat`, end to end: the real binary asks the control plane, which scrapes the proxies'
//! Prometheus endpoints twice a window apart; the figures must match a known load.
//!
//! The mesh (written by the test, namespace `shop`, mTLS): `client` (.1) calls `web:8080`, a
//! root service that the TrafficSplit `web-split` shares 50/50 between `web-v1` (.3) and
//! `web-v2` (.4). web-v2's app answers every other request it gets with 503. During the stat
//! window the client sends exactly `N` requests to `web` and `K` to `web-stable` (another
//! service of web-v1's pod, outside the split); the backends' own counters say how many each
//! got, and the client's tally how many failed (`M`). Per route: `web`'s split route must count
//! exactly the `N` (`M` failed), web-stable's default route exactly the `K`, as `route/web` and
//! as `workload/client --by route`.
//!
//! - `stat_counts_a_known_load_through_weft_proxy`: every proxy is weft-proxy.
//! - `stat_counts_a_known_load_through_stock_envoy`: the client and web-v1 run stock Envoy,
//!   web-v2 weft-proxy, so both of Envoy's paths (inbound connection manager, per-cluster
//!   upstream) and a mixed table are checked.
//! - `stat_names_unknown_targets_and_bad_windows`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use weft_control::bootstrap::{AdsMode, BootstrapConfig, BootstrapTls, XdsTransport, envoy_bootstrap_with};
use weft_control::stat::{StatReply, StatRow};
use weft_integration::load::Client;
use weft_integration::xds_client::{delta_request, node};
use weft_integration::{
    Agent, Backend, Envoy, Failures, LocalMesh, Proxy, ProxyKind, eventually, patience, weft_bin,
};

const NS: &str = "shop";
const WEB: &str = "web:8080";
/// Requests sent to `web` during the window.
const N: u64 = 200;
/// Requests sent to `web-stable` (web-v1's pod) during the window.
const K: u64 = 40;
/// The stat window.
const WINDOW_SECS: u64 = 8;

const MANIFESTS: &str = r#"
apiVersion: v1
kind: Namespace
metadata:
  name: shop
  annotations:
    weft.io/inject: enabled
---
apiVersion: v1
kind: Pod
metadata: { name: client, namespace: shop, labels: { app: client } }
spec: { serviceAccountName: client }
status: { podIP: 127.0.10.1 }
---
apiVersion: v1
kind: Service
metadata: { name: web, namespace: shop }
spec:
  selector: { app: web }
  ports: [{ name: http, port: 8080, targetPort: 8080 }]
---
apiVersion: v1
kind: Service
metadata: { name: web-v1, namespace: shop }
spec:
  selector: { app: web, version: v1 }
  ports: [{ name: http, port: 8080, targetPort: 8080 }]
---
apiVersion: v1
kind: Service
metadata: { name: web-stable, namespace: shop }
spec:
  selector: { app: web, version: v1 }
  ports: [{ name: http, port: 8080, targetPort: 8080 }]
---
apiVersion: v1
kind: Service
metadata: { name: web-v2, namespace: shop }
spec:
  selector: { app: web, version: v2 }
  ports: [{ name: http, port: 8080, targetPort: 8080 }]
---
apiVersion: v1
kind: Pod
metadata: { name: web-v1, namespace: shop, labels: { app: web, version: v1 } }
spec:
  serviceAccountName: web-v1
  containers: [{ name: app, image: weft/demo-app, ports: [{ name: http, containerPort: 8080 }] }]
status: { podIP: 127.0.10.3 }
---
apiVersion: v1
kind: Pod
metadata: { name: web-v2, namespace: shop, labels: { app: web, version: v2 } }
spec:
  serviceAccountName: web-v2
  containers: [{ name: app, image: weft/demo-app, ports: [{ name: http, containerPort: 8080 }] }]
status: { podIP: 127.0.10.4 }
---
apiVersion: split.smi-spec.io/v1alpha1
kind: TrafficSplit
metadata: { name: web-split, namespace: shop }
spec:
  service: web
  backends:
    - { service: web-v1, weight: 500m }
    - { service: web-v2, weight: 500m }
"#;

/// A proxy of either kind, Envoy with its admin (and metrics) on `<pod IP>:4191`.
enum Running {
    Proxy(#[allow(dead_code, reason = "held to keep the proxy running")] Proxy),
    Envoy(#[allow(dead_code, reason = "held to keep Envoy running")] Envoy),
}

struct Scene {
    mesh: LocalMesh,
    v1: Backend,
    v2: Backend,
    _proxies: Vec<Running>,
    _manifests: tempfile::TempDir,
}

/// Stock Envoy (with its weft-agent) as `node_id`'s proxy, its admin at `<pod IP>:4191`, where
/// `weft stat` looks (as `weft envoy-bootstrap` and `weft up` place it).
async fn envoy_at_4191(mesh: &LocalMesh, node_id: &str, host: u8) -> anyhow::Result<Envoy> {
    let config = mesh.proxy_config(node_id, NS, node_id, host, AdsMode::Delta)?;
    let identity = config.identity.clone().context("the mesh runs mTLS")?;
    let agent = Agent::start(&config, &identity)?;
    agent.wait_ready(patience()).await?;
    let bootstrap = envoy_bootstrap_with(
        &BootstrapConfig {
            node_id: node_id.to_owned(),
            namespace: NS.to_owned(),
            service_account: node_id.to_owned(),
            pod_ip: config.pod_ip,
            xds_addr: config.xds_addr.to_string(),
            admin_addr: SocketAddr::new(config.pod_ip, 4191),
            mode: AdsMode::Delta,
        },
        &XdsTransport::Tls(BootstrapTls {
            sds_socket: agent.socket().to_path_buf(),
            control_identity: identity.control_identity()?,
        }),
    )?;
    let mut envoy = Envoy::start(&bootstrap).await?;
    envoy.attach_agent(Some(agent));
    envoy.wait_live(patience()).await?;
    Ok(envoy)
}

impl Scene {
    /// The mesh with the client, web-v1 and web-v2 proxies of the given kinds, synced, and the
    /// split serving both backends.
    async fn start(client: ProxyKind, v1: ProxyKind, v2: ProxyKind) -> anyhow::Result<Scene> {
        let manifests = tempfile::Builder::new().prefix("weft-stat-").tempdir()?;
        std::fs::write(manifests.path().join("mesh.yaml"), MANIFESTS)?;
        let mesh = LocalMesh::builder(manifests.path()).start().await?;
        let v1_app = mesh.backend(3, 8080, "web-v1").await?;
        let v2_app = mesh.failing_backend(4, 8080, "web-v2", Failures::EveryOther).await?;
        let mut proxies = Vec::new();
        for (kind, id, host) in [(v1, "web-v1", 3), (v2, "web-v2", 4), (client, "client", 1)] {
            proxies.push(match kind {
                ProxyKind::Envoy => Running::Envoy(envoy_at_4191(&mesh, id, host).await?),
                ProxyKind::Weft => Running::Proxy(mesh.proxy(kind, id, NS, id, host, AdsMode::Delta).await?),
            });
        }
        mesh.wait_synced(&["client", "web-v1", "web-v2"]).await?;
        let client = Client::new(mesh.subnet.addr(1, 4140));
        eventually("both backends to answer through the split", || async {
            let mut seen = (false, false);
            for _ in 0..20 {
                match client.send(WEB, "/").await? {
                    (200, body) if body == "web-v1" => seen.0 = true,
                    (200 | 503, body) if body == "web-v2" => seen.1 = true,
                    other => anyhow::bail!("unexpected answer {other:?}"),
                }
            }
            anyhow::ensure!(seen == (true, true), "answers seen from (v1, v2): {seen:?}");
            anyhow::Ok(true)
        })
        .await?;
        Ok(Scene { mesh, v1: v1_app, v2: v2_app, _proxies: proxies, _manifests: manifests })
    }

    fn stat(&self, args: &[&str]) -> anyhow::Result<tokio::process::Child> {
        let mut cmd = tokio::process::Command::new(weft_bin()?);
        cmd.arg("stat")
            .args(args)
            .args(["-n", NS, "--admin", &self.mesh.admin_addr()?.to_string()])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        Ok(cmd.spawn()?)
    }
}

async fn finish(child: tokio::process::Child) -> anyhow::Result<(i32, String, String)> {
    let out = tokio::time::timeout(Duration::from_secs(WINDOW_SECS + 20), child.wait_with_output())
        .await
        .context("weft stat did not end")??;
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

async fn json(child: tokio::process::Child) -> anyhow::Result<StatReply> {
    let (code, stdout, stderr) = finish(child).await?;
    anyhow::ensure!(code == 0, "weft stat exited {code}: {stderr}");
    serde_json::from_str(&stdout).with_context(|| format!("not a stat reply: {stdout}"))
}

fn unix_ms() -> u64 {
    u64::try_from(SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis()).unwrap()
}

fn row<'a>(reply: &'a StatReply, name: &str) -> &'a StatRow {
    reply.rows.iter().find(|r| r.name == name).unwrap_or_else(|| panic!("no row {name} in {reply:#?}"))
}

/// The odd numbers in `(before, after]`: how many of those requests web-v2's app failed.
fn every_other_failures(before: u64, after: u64) -> u64 {
    (before + 1..=after).filter(|n| n % 2 == 1).count() as u64
}

/// The success rate is `ok / total`: the counts are asserted exactly elsewhere, and the
/// rate is compared to a float rounding of it (the control plane divides in its own order).
fn assert_rate(rate: Option<f64>, ok: u64, total: u64, what: &str) {
    let expected = ok as f64 / total as f64;
    let rate = rate.unwrap_or_else(|| panic!("{what}: no success rate"));
    assert!((rate - expected).abs() < 1e-9, "{what}: success rate {rate}, expected {ok}/{total}");
}

fn assert_percentiles(row: &StatRow) {
    let (p50, p95, p99) = (row.latency_ms_p50, row.latency_ms_p95, row.latency_ms_p99);
    let (Some(p50), Some(p95), Some(p99)) = (p50, p95, p99) else {
        panic!("{}: percentiles missing: {row:?}", row.name);
    };
    assert!(0.0 < p50 && p50 <= p95 && p95 <= p99, "{}: percentiles not ordered: {row:?}", row.name);
    assert!(p99 < 5_000.0, "{}: p99 {p99} ms for a loopback hop", row.name);
}

/// Runs the window with the known load and checks every figure.
async fn known_load(scene: &Scene, kinds: [&str; 3]) -> anyhow::Result<()> {
    let split =
        scene.stat(&["trafficsplit/web-split", "--window", &format!("{WINDOW_SECS}s"), "-o", "json"])?;
    let v1 = scene.stat(&["workload/web-v1", "--window", &format!("{WINDOW_SECS}s"), "-o", "json"])?;
    let v2 = scene.stat(&["workload/web-v2", "--window", &format!("{WINDOW_SECS}s"), "-o", "json"])?;
    let table = scene.stat(&["trafficsplit/web-split", "--window", &format!("{WINDOW_SECS}s")])?;
    let routes = scene.stat(&["route/web", "--window", &format!("{WINDOW_SECS}s"), "-o", "json"])?;
    let by_route = scene.stat(&[
        "workload/client",
        "--by",
        "route",
        "--window",
        &format!("{WINDOW_SECS}s"),
        "-o",
        "json",
    ])?;
    let route_table = scene.stat(&["route/web-stable", "--window", &format!("{WINDOW_SECS}s")])?;
    // The first scrapes take milliseconds; the replies' timestamps prove the load fell in
    // the window (checked below), so a slow machine fails loudly, never silently.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (v1_before, v2_before) = (scene.v1.requests(), scene.v2.requests());
    let sent_from = unix_ms();
    let client = Client::new(scene.mesh.subnet.addr(1, 4140));
    let mut failed = 0;
    for _ in 0..N {
        match client.send(WEB, "/").await? {
            (200, _) => {}
            (503, body) if body == "web-v2" => failed += 1,
            other => anyhow::bail!("unexpected answer {other:?}"),
        }
    }
    for _ in 0..K {
        match client.send("web-stable:8080", "/").await? {
            (200, body) if body == "web-v1" => {}
            other => anyhow::bail!("unexpected answer from web-stable {other:?}"),
        }
    }
    let sent_until = unix_ms();
    // n1: web-v1's share of the split (its app also got the K direct requests).
    let (n1, n2) = (scene.v1.requests() - v1_before - K, scene.v2.requests() - v2_before);
    assert_eq!(n1 + n2, N, "the backends saw every request once");
    let m = every_other_failures(v2_before, v2_before + n2);
    assert_eq!(failed, m, "the client saw web-v2's failures");

    let (split, v1, v2) = (json(split).await?, json(v1).await?, json(v2).await?);
    let (routes, by_route) = (json(routes).await?, json(by_route).await?);
    for reply in [&split, &v1, &v2, &routes, &by_route] {
        assert!(
            reply.started_unix_ms <= sent_from && sent_until <= reply.ended_unix_ms,
            "the load [{sent_from}, {sent_until}] fell outside the window [{}, {}]",
            reply.started_unix_ms,
            reply.ended_unix_ms
        );
        let w = reply.window_secs;
        assert!((WINDOW_SECS as f64..WINDOW_SECS as f64 + 1.0).contains(&w), "window {w}s");
    }

    // Per workload, as each backend's proxy received them.
    let [client_kind, v1_kind, v2_kind] = kinds;
    for (reply, name, n, failures, kind) in
        [(&v1, "web-v1", n1 + K, 0, v1_kind), (&v2, "web-v2", n2, m, v2_kind)]
    {
        let r = row(reply, name);
        assert_eq!(reply.rows.len(), 1, "{reply:#?}");
        assert!(r.errors.is_empty(), "{r:?}");
        assert_eq!((r.proxy.as_str(), r.meshed.as_str()), (kind, "1/1"), "{r:?}");
        assert_eq!((r.requests, r.failures), (n, failures), "{name}: {r:?}");
        assert_rate(r.success_rate, n - failures, n, name);
        let rps = n as f64 / reply.window_secs;
        assert!((r.rps - rps).abs() < 1e-6 * rps.max(1.0), "{name}: rps {} for {rps}", r.rps);
        assert_percentiles(r);
        if kind == "weft-proxy" {
            assert_eq!(r.tls_rate, Some(1.0), "{name}: every hop is mTLS: {r:?}");
        }
    }

    // Per backend of the split, as the client's proxy sent them.
    assert!(split.notes.iter().all(|n| !n.contains("client")), "{:?}", split.notes);
    let (r1, r2) = (row(&split, "web-v1"), row(&split, "web-v2"));
    assert_eq!((r1.requests, r1.failures), (n1, 0), "{r1:?}");
    assert_eq!((r2.requests, r2.failures), (n2, m), "{r2:?}");
    assert_rate(r2.success_rate, n2 - m, n2, "web-v2 backend");
    for r in [r1, r2] {
        assert_eq!(r.proxy, client_kind, "{r:?}");
        assert_eq!(r.weight_share, Some(0.5), "{r:?}");
        let share = r.share.unwrap();
        assert!((0.35..=0.65).contains(&share), "{}: share {share} for a 50/50 split", r.name);
        assert_percentiles(r);
    }
    assert_eq!(r1.share.unwrap() + r2.share.unwrap(), 1.0);
    let total_rps = r1.rps + r2.rps;
    let known = N as f64 / split.window_secs;
    assert!((total_rps - known).abs() < 0.01 * known, "split rps {total_rps} for {known}");
    let overall = (N - m) as f64 / N as f64;
    let measured = (r1.requests - r1.failures + r2.requests - r2.failures) as f64 / N as f64;
    assert_eq!(measured, overall, "success rate over the split");

    // Per route, as the client's proxy sent them: `route/web` (every client) and the client's
    // own routes (`--by route`).
    const SPLIT_ROUTE: &str = "web.shop:8080/split/web-split";
    const V1_ROUTE: &str = "web-stable.shop:8080/default";
    assert_eq!(routes.kind, "route");
    assert_eq!(routes.rows.len(), 1, "web has one HTTP port and one route: {routes:#?}");
    assert!(routes.notes.is_empty(), "{:?}", routes.notes);
    let names: Vec<&str> = by_route.rows.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, [SPLIT_ROUTE, V1_ROUTE], "the client's routes with traffic: {by_route:#?}");
    for (reply, name, n, failures) in
        [(&routes, SPLIT_ROUTE, N, m), (&by_route, SPLIT_ROUTE, N, m), (&by_route, V1_ROUTE, K, 0)]
    {
        let r = row(reply, name);
        assert!(r.errors.is_empty(), "{r:?}");
        assert_eq!((r.requests, r.failures), (n, failures), "{} {name}: {r:?}", reply.target);
        assert_rate(r.success_rate, n - failures, n, name);
        assert_eq!(r.proxy, client_kind, "{r:?}");
        assert_eq!(r.namespace, NS);
        let rps = n as f64 / reply.window_secs;
        assert!((r.rps - rps).abs() < 1e-6 * rps.max(1.0), "{name}: rps {} for {rps}", r.rps);
        assert_percentiles(r);
    }
    assert_eq!(row(&routes, SPLIT_ROUTE).meshed, "3/3", "route/ reads every connected proxy");
    assert_eq!(row(&by_route, V1_ROUTE).meshed, "1/1", "--by route reads the workload's proxy");
    let (code, text, stderr) = finish(route_table).await?;
    assert_eq!(code, 0, "{stderr}");
    eprintln!("weft stat route/web-stable -n {NS} --window {WINDOW_SECS}s:\n{text}");
    let lines: Vec<Vec<&str>> = text.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(
        lines[0],
        ["ROUTE", "PROXY", "MESHED", "SUCCESS", "RPS", "LATENCY_P50", "LATENCY_P95", "LATENCY_P99"]
    );
    assert_eq!(lines[1][..4], [V1_ROUTE, client_kind, "3/3", "100.00%"], "{text}");

    let (code, text, stderr) = finish(table).await?;
    assert_eq!(code, 0, "{stderr}");
    eprintln!("weft stat trafficsplit/web-split -n {NS} --window {WINDOW_SECS}s:\n{text}");
    let header: Vec<&str> = text.lines().next().unwrap_or("").split_whitespace().collect();
    assert_eq!(
        header,
        [
            "BACKEND",
            "PROXY",
            "WEIGHT",
            "SHARE",
            "SUCCESS",
            "RPS",
            "LATENCY_P50",
            "LATENCY_P95",
            "LATENCY_P99"
        ]
    );
    let v2_line = text.lines().find(|l| l.starts_with("web-v2 ")).expect("a web-v2 line");
    assert!(v2_line.contains("50.00%"), "{v2_line}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stat_counts_a_known_load_through_weft_proxy() {
    let scene = Scene::start(ProxyKind::Weft, ProxyKind::Weft, ProxyKind::Weft).await.unwrap();
    known_load(&scene, ["weft-proxy", "weft-proxy", "weft-proxy"]).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stat_counts_a_known_load_through_stock_envoy() {
    let scene = Scene::start(ProxyKind::Envoy, ProxyKind::Envoy, ProxyKind::Weft).await.unwrap();
    known_load(&scene, ["envoy", "envoy", "weft-proxy"]).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stat_names_unknown_targets_and_bad_windows() {
    let scene = Scene::start(ProxyKind::Weft, ProxyKind::Weft, ProxyKind::Weft).await.unwrap();
    for (args, expected) in [
        (vec!["workload/nope"], "unknown target workload/nope in namespace shop"),
        (vec!["trafficsplit/nope"], "unknown target trafficsplit/nope in namespace shop"),
        (vec!["service/web"], "unknown kind \"service\""),
        (vec!["route/web:8080/nope"], "routes of service web: web.shop:8080/split/web-split"),
        (vec!["route/web:http"], "port \"http\" is not a port number"),
        (vec!["trafficsplit/web-split", "--by", "route"], "only for workload"),
        (vec!["workload/web-v1", "--window", "0s"], "--window \"0s\""),
        (vec!["workload/web-v1", "--window", "11m"], "between 1s and 600s"),
    ] {
        let (code, stdout, stderr) = finish(scene.stat(&args).unwrap()).await.unwrap();
        assert_eq!(code, 1, "{args:?}: {stdout}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
    // An unreachable control plane is named with its address.
    let out = tokio::process::Command::new(weft_bin().unwrap())
        .args(["stat", "workload/web-v1", "--admin", "127.0.0.1:1"])
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("127.0.0.1:1") && stderr.contains("admin API"), "{stderr}");

    // A proxy that cannot be scraped is a row with the reason, not a failed query: a
    // connected xDS client with nothing on its pod IP's port 4191.
    let ghost_ip = scene.mesh.pod_ip(9).to_string();
    let mut ghost = scene.mesh.connect_delta(node("ghost", NS, "ghost", &ghost_ip)).await.unwrap();
    ghost.send(delta_request("type.googleapis.com/envoy.config.cluster.v3.Cluster", &[], &[])).unwrap();
    ghost.next_response(patience()).await.unwrap();
    let (code, stdout, stderr) =
        finish(scene.stat(&["workload/ghost", "--window", "1s", "-o", "json"]).unwrap()).await.unwrap();
    assert_eq!(code, 0, "{stderr}");
    let reply: StatReply = serde_json::from_str(&stdout).unwrap();
    let r = row(&reply, "ghost");
    assert_eq!((r.meshed.as_str(), r.proxy.as_str(), r.requests), ("0/1", "", 0), "{r:?}");
    assert!(r.errors.iter().any(|e| e.contains(&format!("{ghost_ip}:4191"))), "{r:?}");
    let (code, text, _) = finish(scene.stat(&["workload/ghost", "--window", "1s"]).unwrap()).await.unwrap();
    assert_eq!(code, 0);
    assert!(text.contains(&format!("! ghost: scraping http://{ghost_ip}:4191/metrics")), "{text}");
}
