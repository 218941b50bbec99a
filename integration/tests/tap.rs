//! Tap, end to end, with weft-proxy over mTLS: `weft tap` (the real binary) asks the control
//! plane, which dials the proxies' tap endpoints as itself and merges their events.
//!
//! The mesh runs the `integration/manifests/identity` scenario: `client` (.1) calls `web`
//! (.3), a payments-like canary, through their proxies over mTLS.
//!
//! - `tap_shows_live_requests_with_tls_and_the_clients_identity`: inbound events at web's
//!   proxy carry the client's SPIFFE ID and `tls=true`, the route and cluster; `--path` and
//!   `--method` filter; the session ends at `--duration` and the proxy keeps serving.
//! - `tap_is_refused_without_the_operator_token_and_for_unknown_targets`.
//! - `a_workload_certificate_is_refused_by_the_proxys_tap_endpoint`: only the control plane
//!   may tap a proxy directly.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use weft_control::bootstrap::AdsMode;
use weft_control::tap::TapLine;
use weft_integration::identity::{client_config, tls_channel};
use weft_integration::{LocalMesh, Proxy, ProxyKind, eventually, load, weft_bin};
use weft_xds_protos::tap::ObserveRequest;
use weft_xds_protos::tap::tap_client::TapClient;

const NS: &str = "shop";
const WEB: &str = "web:8080";
const TAP_PORT: u16 = 4190;

fn spiffe(sa: &str) -> String {
    format!("spiffe://cluster.local/ns/{NS}/sa/{sa}")
}

/// `client` (.1) and `web` (.3) with weft-proxy, synced, web answering through the mesh.
struct Scene {
    mesh: LocalMesh,
    _web: weft_integration::Backend,
    _proxies: Vec<Proxy>,
}

impl Scene {
    async fn start() -> anyhow::Result<Scene> {
        let mesh = LocalMesh::manifests_builder("identity").start().await?;
        let web = mesh.backend(3, 8080, "web").await?;
        let web_proxy = mesh.proxy(ProxyKind::Weft, "web", NS, "web", 3, AdsMode::Delta).await?;
        let client_proxy = mesh.proxy(ProxyKind::Weft, "client", NS, "client", 1, AdsMode::Delta).await?;
        mesh.wait_synced(&["web", "client"]).await?;
        let outbound = mesh.subnet.addr(1, 4140);
        eventually("the client to get web's answer", || async {
            let answer = load::send(outbound, WEB, "/hello").await?;
            anyhow::ensure!(answer == (200, "web".to_owned()), "{answer:?}");
            anyhow::Ok(true)
        })
        .await?;
        Ok(Scene { mesh, _web: web, _proxies: vec![web_proxy, client_proxy] })
    }

    fn outbound(&self) -> SocketAddr {
        self.mesh.subnet.addr(1, 4140)
    }

    /// `weft tap ARGS` against this mesh's control plane with its operator token (unless
    /// `args` names another), while `traffic` requests go through the client's proxy every
    /// 50 ms; returns exit code, stdout, stderr.
    async fn tap(&self, args: &[&str], traffic: &[(&str, &str)]) -> anyhow::Result<(i32, String, String)> {
        let mut cmd = tokio::process::Command::new(weft_bin()?);
        cmd.arg("tap").args(args).arg("--admin-addr").arg(self.mesh.admin_addr()?.to_string());
        if !args.contains(&"--operator-token-file") {
            cmd.arg("--ca-dir").arg(self.mesh.ca_dir());
        }
        load::run_under_traffic(cmd, self.outbound(), WEB, traffic).await
    }
}

fn lines(stdout: &str) -> Vec<TapLine> {
    stdout.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}"))).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn tap_shows_live_requests_with_tls_and_the_clients_identity() -> anyhow::Result<()> {
    let scene = Scene::start().await?;

    // JSON: every field of the inbound events at web's proxy.
    let started = Instant::now();
    let (code, stdout, stderr) = scene
        .tap(&["workload/web", "--duration", "4s", "-o", "json"], &[("GET", "/pay"), ("GET", "/refund")])
        .await?;
    let took = started.elapsed();
    assert_eq!(code, 0, "weft tap failed: {stderr}\n{stdout}");
    assert!(took < Duration::from_secs(15), "the session did not stop at its duration: {took:?}");
    let events = lines(&stdout);
    let rsp = events
        .iter()
        .find(|e| e.kind == "rsp" && e.path == "/pay")
        .unwrap_or_else(|| panic!("no rsp for /pay:\n{stdout}\n{stderr}"));
    assert_eq!(rsp.proxy, "web");
    assert_eq!(rsp.direction, "inbound");
    assert!(rsp.tls, "{rsp:?}");
    assert_eq!(rsp.src.identity, spiffe("client"), "{rsp:?}");
    // The client's proxy dials from the host's default source address, not its pod IP.
    assert!(rsp.src.address.parse::<SocketAddr>().is_ok(), "{rsp:?}");
    assert_eq!(rsp.dst.address, SocketAddr::new(scene.mesh.pod_ip(3), 4143).to_string(), "{rsp:?}");
    assert_eq!(rsp.dst.identity, spiffe("web"), "{rsp:?}");
    assert_eq!((rsp.method.as_str(), rsp.authority.as_str()), ("GET", WEB), "{rsp:?}");
    assert_eq!(rsp.status, Some(200), "{rsp:?}");
    assert!(rsp.latency_us.is_some_and(|l| l > 0), "{rsp:?}");
    assert!(rsp.response_bytes > 0, "{rsp:?}");
    assert!(!rsp.route.is_empty() && rsp.cluster.starts_with("inbound|"), "{rsp:?}");
    let req = events.iter().find(|e| e.kind == "req" && e.id == rsp.id).expect("the rsp's req");
    assert_eq!((req.path.as_str(), req.tls), ("/pay", true));
    assert!(events.iter().any(|e| e.path == "/refund"), "unfiltered tap shows every path");

    // Filters, in the text output.
    let (code, stdout, stderr) = scene
        .tap(
            &["workload/web", "--path", "/pay", "--method", "POST", "--duration", "3s"],
            &[("GET", "/pay"), ("POST", "/pay"), ("POST", "/refund")],
        )
        .await?;
    assert_eq!(code, 0, "weft tap failed: {stderr}\n{stdout}");
    let text: Vec<&str> = stdout.lines().collect();
    assert!(!text.is_empty(), "no events: {stderr}");
    for line in &text {
        assert!(line.contains(":method=POST") && line.contains(":path=/pay"), "filtered out: {line}");
        assert!(line.contains("tls=true"), "{line}");
        assert!(line.contains(&format!("[{}]", spiffe("client"))), "{line}");
    }
    assert!(text.iter().any(|l| l.starts_with("req id=")), "{stdout}");
    assert!(
        text.iter().any(|l| l.starts_with("rsp id=") && l.contains(":status=200") && l.contains("latency=")),
        "{stdout}"
    );

    // The proxy serves on after its sessions ended.
    assert_eq!(load::request(scene.outbound(), "GET", WEB, "/after").await?, 200);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn tap_is_refused_without_the_operator_token_and_for_unknown_targets() -> anyhow::Result<()> {
    let scene = Scene::start().await?;
    let wrong = tempfile::NamedTempFile::new()?;
    std::fs::write(wrong.path(), "not-the-token\n")?;
    let wrong_path = wrong.path().to_str().unwrap();
    let (code, stdout, stderr) =
        scene.tap(&["workload/web", "--duration", "2s", "--operator-token-file", wrong_path], &[]).await?;
    assert_ne!(code, 0, "{stdout}");
    assert!(stderr.contains("not authorized"), "{stderr}");
    assert!(stdout.is_empty(), "{stdout}");

    let (code, _, stderr) = scene
        .tap(&["workload/web", "--duration", "2s", "--operator-token-file", "/nonexistent/token"], &[])
        .await?;
    assert_ne!(code, 0);
    assert!(stderr.contains("operator token"), "{stderr}");

    let (code, _, stderr) = scene.tap(&["workload/nope", "--duration", "2s"], &[]).await?;
    assert_ne!(code, 0);
    assert!(stderr.contains("unknown target"), "{stderr}");

    // The token file is the operator's alone.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(scene.mesh.ca_dir().join("operator-token"))?.permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_workload_certificate_is_refused_by_the_proxys_tap_endpoint() -> anyhow::Result<()> {
    let scene = Scene::start().await?;
    let identity = scene.mesh.mesh_identity()?;
    let leaf = scene.mesh.certify(NS, "client").await?;
    let config = client_config(Some(&leaf), &[identity.root()?], Some(spiffe("web").parse()?), &[b"h2"])?;
    let tap_addr = SocketAddr::new(scene.mesh.pod_ip(3), TAP_PORT);
    let observed = async {
        let channel = tls_channel(tap_addr, "web", config).await?;
        let mut stream = TapClient::new(channel)
            .observe(ObserveRequest::default())
            .await
            .map_err(|s| anyhow::anyhow!("{s:?}"))?
            .into_inner();
        stream.message().await.map_err(|s| anyhow::anyhow!("{s:?}"))?;
        anyhow::Ok(())
    };
    let result = tokio::time::timeout(Duration::from_secs(10), observed).await;
    assert!(matches!(result, Ok(Err(_))), "a workload tapped a proxy: {result:?}");
    // The proxy serves on.
    assert_eq!(load::request(scene.outbound(), "GET", WEB, "/after").await?, 200);
    Ok(())
}
