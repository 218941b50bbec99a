//! Identity and mTLS, end to end, for weft-proxy and stock Envoy alike.
//!
//! The meshes here run the `integration/manifests/identity` scenario: two clients with
//! different ServiceAccounts (`client` at .1, `intruder` at .2), an HTTP app (`web`,
//! .3), an opaque TCP echo (`echo-tcp`, .4) and `ledger` (.5), whose proxy a test runs
//! under the wrong ServiceAccount. Every hop between proxies is mTLS: the client's proxy
//! checks the server's SPIFFE ID against what EDS says, the server's proxy demands a
//! certificate from the mesh CA and, where a TrafficTarget (or strict mode) says so,
//! authorizes the client's identity.
//!
//! - `<client>_to_<server>::...`: requests succeed over mTLS and the server side saw the
//!   client's identity (a TrafficTarget lets `client` in and keeps `intruder` out;
//!   weft-proxy's metrics show `tls="true"` and the `client_id`).
//! - `<server>::...`: a plaintext client, a TLS client without a certificate and one with
//!   a certificate from another CA are refused on the inbound port.
//! - `<client>::...`: a server presenting an identity other than the expected one is refused.
//! - `<kind>::<mode>::...`: TrafficTarget allow and deny, HTTP routes and TCP, in
//!   permissive and strict mode.
//! - `xds_...`: the control plane serves xDS only over TLS, to a client certificate that
//!   matches the node.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use weft_control::bootstrap::AdsMode;
use weft_control::translate::AuthzMode;
use weft_integration::identity::{TestCa, client_config, tls_connect};
use weft_integration::xds_client::{self, ScriptedAdsClient};
use weft_integration::{Backend, LocalMesh, Proxy, ProxyKind, TcpEcho, eventually, load};
use weft_xds_protos::type_url::CLUSTER;

const NS: &str = "shop";
const WEB: &str = "web:8080";
const RBAC_DENIED: &str = "RBAC: access denied";
const MODE: AdsMode = AdsMode::Delta;

fn spiffe(sa: &str) -> String {
    format!("spiffe://cluster.local/ns/{NS}/sa/{sa}")
}

/// The SNI a client proxy sends to reach `svc`'s `port` (Istio's form).
fn sni(svc: &str, port: u16) -> String {
    format!("outbound_.{port}_._.{svc}.{NS}.svc.cluster.local")
}

/// Only `client` may call `web`, on any route.
const WEB_ALLOWS_CLIENT: &str = "\
apiVersion: access.smi-spec.io/v1alpha3
kind: TrafficTarget
metadata:
  name: web-clients
  namespace: shop
spec:
  destination:
    kind: ServiceAccount
    name: web
    namespace: shop
  rules:
    - kind: HTTPRouteGroup
      name: web-everything
  sources:
    - kind: ServiceAccount
      name: client
      namespace: shop
---
apiVersion: specs.smi-spec.io/v1alpha4
kind: HTTPRouteGroup
metadata:
  name: web-everything
  namespace: shop
spec:
  matches:
    - name: all
      pathRegex: \"/.*\"
";

/// `client` may `GET /api/...` on `web` and open TCP connections to `echo-tcp`; nothing else.
const READERS_AND_TCP: &str = "\
apiVersion: access.smi-spec.io/v1alpha3
kind: TrafficTarget
metadata:
  name: web-readers
  namespace: shop
spec:
  destination:
    kind: ServiceAccount
    name: web
  rules:
    - kind: HTTPRouteGroup
      name: web-routes
      matches:
        - read-api
  sources:
    - kind: ServiceAccount
      name: client
---
apiVersion: specs.smi-spec.io/v1alpha4
kind: HTTPRouteGroup
metadata:
  name: web-routes
  namespace: shop
spec:
  matches:
    - name: read-api
      pathRegex: \"/api/.*\"
      methods: [\"GET\"]
    - name: admin
      pathRegex: \"/admin\"
---
apiVersion: access.smi-spec.io/v1alpha3
kind: TrafficTarget
metadata:
  name: echo-users
  namespace: shop
spec:
  destination:
    kind: ServiceAccount
    name: echo-tcp
  rules:
    - kind: TCPRoute
      name: echo-any
  sources:
    - kind: ServiceAccount
      name: client
---
apiVersion: specs.smi-spec.io/v1alpha4
kind: TCPRoute
metadata:
  name: echo-any
  namespace: shop
spec: {}
";

/// One request through the proxy at `proxy` (its outbound port): `method path` with `Host: host`.
async fn request(proxy: SocketAddr, method: &str, host: &str, path: &str) -> anyhow::Result<(u16, String)> {
    let req =
        http::Request::builder().method(method).uri(path).header("host", host).body(Empty::<Bytes>::new())?;
    http1_exchange(TcpStream::connect(proxy).await?, req).await
}

/// Sends `req` over HTTP/1.1 on `io` and reads the answer: status and body, within 10 s.
async fn http1_exchange<IO>(io: IO, req: http::Request<Empty<Bytes>>) -> anyhow::Result<(u16, String)>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
    tokio::spawn(conn);
    let exchange = async {
        let resp = sender.send_request(req).await?;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await?.to_bytes();
        anyhow::Ok((status, String::from_utf8_lossy(&body).into_owned()))
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .map_err(|_| anyhow::anyhow!("no answer in 10 s"))?
}

/// What became of a TCP connection to an echo server through a proxy.
#[derive(Debug, PartialEq, Eq)]
enum Tcp {
    /// The bytes came back.
    Echoed,
    /// The connection was closed (EOF or reset) with nothing echoed.
    Closed,
}

/// Connects to `addr`, sends a line and sees what comes back within 5 s.
async fn tcp_exchange(addr: SocketAddr) -> anyhow::Result<Tcp> {
    let mut conn = TcpStream::connect(addr).await?;
    let _ = conn.write_all(b"ping\n").await;
    let mut buf = [0u8; 5];
    let mut got = 0;
    let read = async {
        while got < buf.len() {
            match conn.read(&mut buf[got..]).await {
                Ok(0) | Err(_) => return Tcp::Closed,
                Ok(n) => got += n,
            }
        }
        Tcp::Echoed
    };
    let outcome = tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .map_err(|_| anyhow::anyhow!("the connection to {addr} neither echoed nor closed within 5 s"))?;
    anyhow::ensure!(
        outcome == Tcp::Echoed || got == 0,
        "the connection closed after echoing {got} bytes: {:?}",
        &buf[..got]
    );
    Ok(outcome)
}

/// The value of the Prometheus series `name` with every label of `labels` (`k="v"`);
/// `None` if there is none.
fn series(metrics: &str, name: &str, labels: &[&str]) -> Option<f64> {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter(|l| labels.iter().all(|want| l.contains(want)))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .reduce(f64::max)
}

/// The sum of every Envoy counter whose name ends with `suffix` (e.g. `ssl.handshake`).
async fn envoy_sum(proxy: &Proxy, suffix: &str) -> anyhow::Result<u64> {
    let stats = proxy.get_admin("/stats").await?;
    Ok(stats
        .lines()
        .filter_map(|l| l.split_once(": "))
        .filter(|(name, _)| name.ends_with(suffix))
        .filter_map(|(_, v)| v.trim().parse::<u64>().ok())
        .sum())
}

/// The identity scenario with the proxies a test asks for.
struct Identity {
    mesh: LocalMesh,
}

impl Identity {
    async fn start(authz: AuthzMode) -> anyhow::Result<Identity> {
        Ok(Identity { mesh: LocalMesh::manifests_builder("identity").authz(authz).start().await? })
    }

    async fn proxy(&self, kind: ProxyKind, workload: &str, sa: &str, host: u8) -> anyhow::Result<Proxy> {
        self.mesh.proxy(kind, workload, NS, sa, host, MODE).await
    }

    /// The outbound port of pod `.host`.
    fn outbound(&self, host: u8) -> SocketAddr {
        self.mesh.subnet.addr(host, 4140)
    }

    /// The `web` app (pod .3) and its proxy of `kind`.
    async fn web(&self, kind: ProxyKind) -> anyhow::Result<(Backend, Proxy)> {
        let web = self.mesh.backend(3, 8080, "web").await?;
        Ok((web, self.proxy(kind, "web", "web", 3).await?))
    }

    /// Waits until `GET path` from the client (pod .1) gets web's answer: the mesh works.
    async fn client_reaches_web(&self, path: &str) -> anyhow::Result<()> {
        eventually(&format!("the client to get web's answer to {path}"), || async {
            let answer = load::send(self.outbound(1), WEB, path).await?;
            anyhow::ensure!(answer == (200, "web".to_owned()), "{answer:?}");
            anyhow::Ok(true)
        })
        .await
    }
}

// ---------------------------------------------------------------- every pair of proxies

async fn mtls_carries_requests_and_the_server_sees_the_client_identity(
    client: ProxyKind,
    server: ProxyKind,
) -> anyhow::Result<()> {
    // Strict, and only `client` may call web: the server must know who is calling.
    let scene = Identity::start(AuthzMode::Strict).await?;
    scene.mesh.write_manifest("authz.yaml", WEB_ALLOWS_CLIENT)?;
    let (web, web_proxy) = scene.web(server).await?;
    let client_proxy = scene.proxy(client, "client", "client", 1).await?;
    let intruder_proxy = scene.proxy(client, "intruder", "intruder", 2).await?;
    scene.mesh.wait_synced(&["web", "client", "intruder"]).await?;

    scene.client_reaches_web("/hello").await?;
    let t = load::run(scene.outbound(1), WEB, "/", 100, 4).await;
    assert_eq!((t.ok(), t.failures), (100, 0), "{client} -> {server}: {t}");
    let served = web.requests();

    let (status, body) = load::send(scene.outbound(2), WEB, "/hello").await?;
    assert_eq!(status, 403, "{client} -> {server}: the intruder was let in: {body}");
    assert!(body.contains(RBAC_DENIED), "{body}");
    assert_eq!(web.requests(), served, "a denied request reached the app");

    match server {
        ProxyKind::Weft => {
            let w = web_proxy.as_weft().unwrap();
            let metrics = w.get_admin("/metrics").await?;
            let client_id = format!("client_id=\"{}\"", spiffe("client"));
            let inbound =
                series(&metrics, "request_total", &["direction=\"inbound\"", "tls=\"true\"", &client_id]);
            assert!(
                inbound.is_some_and(|n| n >= 100.0),
                "no inbound request_total with tls=\"true\" and {client_id}:\n{metrics}"
            );
            let intruder_id = format!("client_id=\"{}\"", spiffe("intruder"));
            let denied = series(&metrics, "inbound_http_authz_deny_total", &[&intruder_id]);
            assert_eq!(denied, Some(1.0), "the denial is counted with the intruder's identity:\n{metrics}");
            let identity: serde_json::Value = serde_json::from_str(&w.get_admin("/identity").await?)?;
            assert_eq!(identity["identity"], spiffe("web"), "{identity}");
        }
        ProxyKind::Envoy => {
            assert!(envoy_sum(&web_proxy, "ssl.handshake").await? >= 2, "Envoy saw no TLS handshake");
            assert!(envoy_sum(&web_proxy, "rbac.allowed").await? >= 100);
            assert!(envoy_sum(&web_proxy, "rbac.denied").await? >= 1);
            let certs = web_proxy.get_admin("/certs").await?;
            assert!(certs.contains(&spiffe("web")), "Envoy's /certs lacks web's SVID:\n{certs}");
        }
    }
    if client == ProxyKind::Envoy {
        // weft-proxy's outbound series label the app's own (plaintext) connection; the
        // server side above is where a hop's mTLS shows.
        assert!(
            envoy_sum(&client_proxy, "ssl.handshake").await? >= 1,
            "the client Envoy made no TLS handshake"
        );
    }
    drop(intruder_proxy);
    Ok(())
}

// ---------------------------------------------------------------- the inbound port

/// `GET /` on `web` through a TLS connection made by hand to an inbound port.
async fn get_over_tls(
    addr: SocketAddr,
    server_name: &str,
    config: std::sync::Arc<rustls::ClientConfig>,
) -> anyhow::Result<(u16, String)> {
    let req = http::Request::get("/").header("host", WEB).body(Empty::<Bytes>::new())?;
    http1_exchange(tls_connect(addr, server_name, config).await?, req).await
}

async fn strangers_are_refused_on_the_inbound_port(server: ProxyKind) -> anyhow::Result<()> {
    let scene = Identity::start(AuthzMode::Permissive).await?;
    let (web, _web_proxy) = scene.web(server).await?;
    scene.mesh.wait_synced(&["web"]).await?;
    let inbound = scene.mesh.subnet.addr(3, 4143);
    let identity = scene.mesh.mesh_identity()?;
    let roots = [identity.root()?];
    let web_id = identity.spiffe_id(NS, "web")?;
    let web_sni = sni("web", 8080);

    // A mesh certificate gets in: what follows is refused for what it lacks, not by accident.
    let member = scene.mesh.certify(NS, "client").await?;
    let config = client_config(Some(&member), &roots, Some(web_id.clone()), &[b"http/1.1"])?;
    eventually("a mesh member to reach web through its inbound port", || async {
        let answer = get_over_tls(inbound, &web_sni, config.clone()).await?;
        anyhow::ensure!(answer == (200, "web".to_owned()), "{answer:?}");
        anyhow::Ok(true)
    })
    .await?;
    let served = web.requests();

    // Plaintext HTTP.
    let mut conn = TcpStream::connect(inbound).await?;
    conn.write_all(b"GET / HTTP/1.1\r\nhost: web:8080\r\n\r\n").await?;
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "{server} kept a plaintext connection open");
    assert!(
        !String::from_utf8_lossy(&answer).starts_with("HTTP/"),
        "{server} answered plaintext HTTP: {}",
        String::from_utf8_lossy(&answer)
    );

    // TLS with no client certificate.
    let anonymous = client_config(None, &roots, Some(web_id.clone()), &[b"http/1.1"])?;
    let result = get_over_tls(inbound, &web_sni, anonymous).await;
    assert!(result.is_err(), "{server} served a client without a certificate: {result:?}");

    // A certificate for the very same identity, from a CA the mesh does not trust.
    let foreign = TestCa::generate("not the mesh")?.issue(&identity.spiffe_id(NS, "client")?)?;
    let stranger = client_config(Some(&foreign), &roots, Some(web_id.clone()), &[b"http/1.1"])?;
    let result = get_over_tls(inbound, &web_sni, stranger).await;
    assert!(result.is_err(), "{server} served a certificate from another CA: {result:?}");

    // A mesh certificate, but a server name no chain matches.
    let unknown = get_over_tls(inbound, &sni("nowhere", 8080), config.clone()).await;
    assert!(unknown.is_err(), "{server} served an unknown SNI: {unknown:?}");

    assert_eq!(web.requests(), served, "a refused connection reached the app");
    Ok(())
}

// ---------------------------------------------------------------- the server's identity

async fn a_server_with_the_wrong_identity_is_refused(
    client: ProxyKind,
    server: ProxyKind,
) -> anyhow::Result<()> {
    let scene = Identity::start(AuthzMode::Permissive).await?;
    let (web, _web_proxy) = scene.web(server).await?;
    let ledger = scene.mesh.backend(5, 8080, "ledger").await?;
    // The pod says `ledger`; its proxy is certified as someone else.
    let _ledger_proxy = scene.proxy(server, "ledger", "impostor", 5).await?;
    let _client = scene.proxy(client, "client", "client", 1).await?;
    scene.mesh.wait_synced(&["web", "ledger", "client"]).await?;

    scene.client_reaches_web("/").await?;
    assert!(web.requests() > 0);

    let t = load::run(scene.outbound(1), "ledger:8080", "/", 20, 2).await;
    assert_eq!(t.ok(), 0, "{client} accepted a server that is not who EDS says: {t}");
    assert_eq!(t.statuses.get(&503), Some(&20), "{client} -> impostor: {t}");
    assert_eq!(ledger.requests(), 0, "requests reached the impostor's app");

    // The impostor does serve, to a client that does not check who it is talking to:
    // the refusal is the client proxy's.
    let identity = scene.mesh.mesh_identity()?;
    let member = scene.mesh.certify(NS, "client").await?;
    let lax = client_config(Some(&member), &[identity.root()?], None, &[b"http/1.1"])?;
    let tls = tls_connect(scene.mesh.subnet.addr(5, 4143), &sni("ledger", 8080), lax).await?;
    let presented = tls.get_ref().1.peer_certificates().and_then(|c| c.first()).cloned().unwrap();
    assert_eq!(
        weft_integration::identity::spiffe_id_of(&presented)?.to_string(),
        spiffe("impostor"),
        "the ledger's proxy presents its own identity"
    );
    Ok(())
}

// ---------------------------------------------------------------- TrafficTarget

async fn traffic_targets_allow_and_deny_http_routes_and_tcp(
    kind: ProxyKind,
    authz: AuthzMode,
) -> anyhow::Result<()> {
    let scene = Identity::start(authz).await?;
    let (web, web_proxy) = scene.web(kind).await?;
    let echo = TcpEcho::start(scene.mesh.subnet.addr(4, 7001)).await?;
    let echo_proxy = scene.proxy(kind, "echo-tcp", "echo-tcp", 4).await?;
    let _client = scene.proxy(kind, "client", "client", 1).await?;
    let _intruder = scene.proxy(kind, "intruder", "intruder", 2).await?;
    scene.mesh.wait_synced(&["web", "echo-tcp", "client", "intruder"]).await?;
    let tcp = |host: u8| scene.mesh.subnet.addr(host, 7000);

    // No TrafficTarget yet: permissive lets every meshed client in, strict nobody.
    let (want_status, want_tcp) = match authz {
        AuthzMode::Permissive => (200, Tcp::Echoed),
        AuthzMode::Strict => (403, Tcp::Closed),
    };
    eventually(&format!("{authz:?} without TrafficTargets: {want_status}, TCP {want_tcp:?}"), || async {
        for host in [1, 2] {
            let (status, body) = request(scene.outbound(host), "GET", WEB, "/api/items").await?;
            anyhow::ensure!(status == want_status, "pod .{host}: {status} {body}");
            let tcp = tcp_exchange(tcp(host)).await?;
            anyhow::ensure!(tcp == want_tcp, "pod .{host}: TCP {tcp:?}");
        }
        anyhow::Ok(true)
    })
    .await?;

    // Now only `client`, and only GET /api/... on web; TCP to echo-tcp.
    scene.mesh.write_manifest("authz.yaml", READERS_AND_TCP)?;
    eventually("the TrafficTargets to be enforced", || async {
        let checks = [
            (1, "GET", "/api/items", 200),
            (1, "GET", "/admin", 403),
            (1, "POST", "/api/items", 403),
            (2, "GET", "/api/items", 403),
        ];
        for (host, method, path, want) in checks {
            let (status, body) = request(scene.outbound(host), method, WEB, path).await?;
            anyhow::ensure!(status == want, "pod .{host} {method} {path}: {status} {body}, want {want}");
            if want == 403 {
                anyhow::ensure!(body.contains(RBAC_DENIED), "{body}");
            }
        }
        anyhow::ensure!(tcp_exchange(tcp(1)).await? == Tcp::Echoed, "the client's TCP was refused");
        anyhow::ensure!(tcp_exchange(tcp(2)).await? == Tcp::Closed, "the intruder's TCP got through");
        anyhow::Ok(true)
    })
    .await?;
    // Envoy opens the upstream connection before its RBAC filter sees the first byte, so
    // what must not reach the app is data, not a connection.
    let (web_seen, echo_seen) = (web.requests(), echo.echoed_bytes());
    for _ in 0..5 {
        assert_eq!(request(scene.outbound(2), "GET", WEB, "/api/items").await?.0, 403);
        assert_eq!(tcp_exchange(tcp(2)).await?, Tcp::Closed);
    }
    assert_eq!((web.requests(), echo.echoed_bytes()), (web_seen, echo_seen), "denied traffic reached an app");

    // Denials are counted, with the client's identity.
    let intruder = format!("client_id=\"{}\"", spiffe("intruder"));
    match kind {
        ProxyKind::Weft => {
            let metrics = web_proxy.get_admin("/metrics").await?;
            let http = series(&metrics, "inbound_http_authz_deny_total", &[&intruder]);
            assert!(http.is_some_and(|n| n >= 5.0), "{metrics}");
            let metrics = echo_proxy.get_admin("/metrics").await?;
            let tcp = series(&metrics, "inbound_tcp_authz_deny_total", &[&intruder]);
            assert!(tcp.is_some_and(|n| n >= 5.0), "{metrics}");
        }
        ProxyKind::Envoy => {
            assert!(envoy_sum(&web_proxy, "rbac.denied").await? >= 5);
            assert!(envoy_sum(&echo_proxy, "rbac.denied").await? >= 5);
        }
    }
    Ok(())
}

// ---------------------------------------------------------------- xDS over TLS

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xds_is_served_over_tls_to_a_client_certificate_matching_the_node() -> anyhow::Result<()> {
    let mesh = LocalMesh::example("payments").await?;
    let xds = mesh.xds_addr()?;
    let node = |sa: &str| xds_client::node("scripted", "payments", sa, &mesh.subnet.ip(1).to_string());
    let wait = Duration::from_secs(5);

    // The real thing: a certificate for the node's own identity.
    let mut ads = mesh.connect_sotw(node("frontend")).await?;
    ads.send(xds_client::request(CLUSTER, &[], "", "", None))?;
    assert!(!ads.next_response(wait).await?.resources.is_empty());

    // Plaintext gRPC on the xDS port gets nothing.
    if let Ok(client) = ScriptedAdsClient::connect(xds).await {
        let mut plain = client.sotw(node("frontend"));
        plain.send(xds_client::request(CLUSTER, &[], "", "", None))?;
        assert!(plain.next_response(wait).await.is_err(), "xDS answered in plaintext");
    }

    // A certificate for another workload than the node claims to be.
    let mut wrong = mesh.ads_client("payments", "payment").await?.sotw(node("frontend"));
    wrong.send(xds_client::request(CLUSTER, &[], "", "", None))?;
    assert!(wrong.next_response(wait).await.is_err(), "xDS served a node another workload's certificate");
    let status = wrong.ended().expect("the stream was ended");
    assert!(
        matches!(status.code(), tonic::Code::PermissionDenied | tonic::Code::Unauthenticated),
        "{status:?}"
    );

    // A certificate from another CA, for the right identity.
    let identity = mesh.mesh_identity()?;
    let foreign = TestCa::generate("not the mesh")?.issue(&identity.spiffe_id("payments", "frontend")?)?;
    let config =
        client_config(Some(&foreign), &[identity.root()?], Some(identity.control_identity()?), &[b"h2"])?;
    if let Ok(channel) =
        weft_integration::identity::tls_channel(xds, weft_integration::identity::CONTROL_SERVER_NAME, config)
            .await
    {
        let mut stranger = ScriptedAdsClient::from_channel(channel).sotw(node("frontend"));
        stranger.send(xds_client::request(CLUSTER, &[], "", "", None))?;
        assert!(stranger.next_response(wait).await.is_err(), "xDS served a certificate from another CA");
    }

    // And the control plane is who it says: its certificate carries its SPIFFE ID.
    let tls = tls_connect(
        xds,
        weft_integration::identity::CONTROL_SERVER_NAME,
        client_config(None, &[identity.root()?], Some(identity.control_identity()?), &[b"h2"])?,
    )
    .await?;
    assert!(tls.get_ref().1.peer_certificates().is_some());
    Ok(())
}

// ---------------------------------------------------------------- the tests

macro_rules! pair {
    ($name:ident, $client:ident, $server:ident) => {
        mod $name {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn mtls_carries_requests_and_the_server_sees_the_client_identity() -> anyhow::Result<()> {
                super::mtls_carries_requests_and_the_server_sees_the_client_identity(
                    ProxyKind::$client,
                    ProxyKind::$server,
                )
                .await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_server_with_the_wrong_identity_is_refused() -> anyhow::Result<()> {
                super::a_server_with_the_wrong_identity_is_refused(ProxyKind::$client, ProxyKind::$server)
                    .await
            }
        }
    };
}

pair!(weft_to_weft, Weft, Weft);
pair!(envoy_to_weft, Envoy, Weft);
pair!(weft_to_envoy, Weft, Envoy);
pair!(envoy_to_envoy, Envoy, Envoy);

macro_rules! server {
    ($name:ident, $kind:ident) => {
        mod $name {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn plaintext_anonymous_and_foreign_clients_are_refused_on_the_inbound_port()
            -> anyhow::Result<()> {
                super::strangers_are_refused_on_the_inbound_port(ProxyKind::$kind).await
            }

            mod permissive {
                use super::*;

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn traffic_targets_allow_and_deny_http_routes_and_tcp() -> anyhow::Result<()> {
                    super::super::traffic_targets_allow_and_deny_http_routes_and_tcp(
                        ProxyKind::$kind,
                        AuthzMode::Permissive,
                    )
                    .await
                }
            }

            mod strict {
                use super::*;

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn traffic_targets_allow_and_deny_http_routes_and_tcp() -> anyhow::Result<()> {
                    super::super::traffic_targets_allow_and_deny_http_routes_and_tcp(
                        ProxyKind::$kind,
                        AuthzMode::Strict,
                    )
                    .await
                }
            }
        }
    };
}

server!(weft, Weft);
server!(envoy, Envoy);

#[test]
fn series_reads_labelled_prometheus_lines() {
    let text = "# TYPE request_total counter\nrequest_total{direction=\"inbound\",tls=\"true\",client_id=\"a\"} 7\nrequest_total_other{tls=\"true\"} 9\nrequest_total{direction=\"outbound\",tls=\"true\"} 3\n";
    assert_eq!(series(text, "request_total", &["direction=\"inbound\"", "tls=\"true\""]), Some(7.0));
    assert_eq!(series(text, "request_total", &["tls=\"true\""]), Some(7.0));
    assert_eq!(series(text, "request_total", &["client_id=\"b\""]), None);
}
