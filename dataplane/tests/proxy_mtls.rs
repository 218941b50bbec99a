//! mTLS between two `weft_proxy::proxy::run` instances on loopback, with a
//! throwaway rcgen CA in the test: the client-side proxy ("web") dials the
//! server-side proxy's ("api") inbound listener over mTLS, which picks its
//! chain by SNI, terminates TLS, checks RBAC and forwards to a local backend.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod proxy_support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::{Request, StatusCode};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use proxy_support::*;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivatePkcs8KeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsConnector;
use weft_proxy::config::rbac::{Permission, Policy, Principal, Rbac, RbacAction};
use weft_proxy::config::*;
use weft_proxy::tls::config::client_config_for;
use weft_proxy::tls::{Credentials, SpiffeId};

const HTTP_SNI: &str = "outbound_.8080_._.api.shop.svc.cluster.local";
const TCP_SNI: &str = "outbound_.5432_._.db.shop.svc.cluster.local";
const HTTP_CLUSTER: &str = "outbound|8080||api.shop.svc.cluster.local";
const H2_CLUSTER: &str = "outbound|8080||api-h2.shop.svc.cluster.local";
const TCP_CLUSTER: &str = "outbound|5432||db.shop.svc.cluster.local";

fn id(sa: &str) -> SpiffeId {
    SpiffeId::new("cluster.local", "shop", sa).unwrap()
}

fn web() -> String {
    id("web").to_string()
}

fn api() -> String {
    id("api").to_string()
}

/// A throwaway root CA.
struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    root: CertificateDer<'static>,
}

impl TestCa {
    fn new(name: &str) -> TestCa {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.distinguished_name.push(DnType::CommonName, name);
        let root = params.self_signed(&key).unwrap().der().clone();
        TestCa { issuer: Issuer::new(params, key), root }
    }

    /// A workload certificate for `sa` in namespace `shop`, trusting `bundle`.
    fn credentials(&self, sa: &str, bundle: &[&TestCa]) -> Arc<Credentials> {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.subject_alt_names = vec![SanType::URI(id(sa).to_string().try_into().unwrap())];
        params.extended_key_usages =
            vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        let now = SystemTime::now();
        params.not_before = (now - Duration::from_secs(60)).into();
        params.not_after = (now + Duration::from_secs(3600)).into();
        let leaf = params.signed_by(&key, &self.issuer).unwrap().der().clone();
        Arc::new(
            Credentials::new(
                id(sa),
                PrivatePkcs8KeyDer::from(key.serialize_der()),
                vec![leaf],
                bundle.iter().map(|ca| ca.root.clone()).collect(),
            )
            .unwrap(),
        )
    }
}

fn server_tls() -> Option<DownstreamTls> {
    Some(DownstreamTls { require_client_certificate: true, alpn: vec!["h2".into(), "http/1.1".into()] })
}

fn tls_chain(name: &str, sni: &str, kind: ChainKind, rbac: Option<Rbac>) -> FilterChain {
    FilterChain {
        name: name.into(),
        destination_port: None,
        destination_prefixes: vec![],
        server_names: vec![sni.into()],
        transport_protocol: Some("tls".into()),
        tls: server_tls(),
        rbac: rbac.map(Arc::new),
        kind,
    }
}

/// Only `who` may do anything, and only under `/allowed` (HTTP) or on port 5432 (TCP).
fn only(who: &str, http: bool) -> Rbac {
    let permission = if http {
        Permission::UrlPath(StringMatch::Prefix("/allowed".into()))
    } else {
        Permission::DestinationPort(5432)
    };
    Rbac {
        action: RbacAction::Allow,
        policies: vec![Policy {
            name: "shop/only".into(),
            principals: vec![Principal::Authenticated(StringMatch::Exact(who.into()))],
            permissions: vec![permission],
        }],
    }
}

/// The server side: an inbound listener with an HTTP chain and a TCP chain,
/// both chosen by SNI, forwarding to the local `app` and `db`.
fn api_config(
    inbound: SocketAddr,
    app: SocketAddr,
    db: SocketAddr,
    http_rbac: Option<Rbac>,
    tcp_rbac: Option<Rbac>,
) -> Config {
    let table = RouteTable {
        name: "inbound".into(),
        virtual_hosts: vec![vhost(
            "all",
            &["*"],
            vec![route("/", Action::Forward(forward(&[("inbound|8080||", 1)])))],
        )],
    };
    let http = tls_chain(
        "inbound|8080|api.shop|8080",
        HTTP_SNI,
        ChainKind::Http(HttpManager {
            stat_prefix: "inbound".into(),
            routes: RouteSource::Inline(Arc::new(table)),
            rbac: http_rbac.map(Arc::new),
            tracing: None,
        }),
        None,
    );
    let tcp = tls_chain(
        "inbound|5432|db.shop|5432",
        TCP_SNI,
        ChainKind::Tcp(TcpProxy {
            stat_prefix: "inbound".into(),
            clusters: vec![WeightedCluster { name: "inbound|5432||".into(), weight: 1 }],
        }),
        tcp_rbac,
    );
    let listener = Listener {
        name: "inbound".into(),
        addr: inbound,
        chains: vec![http, tcp],
        default_chain: None,
        original_dst: false,
        tls_inspector: true,
    };
    let mut to_app = cluster("inbound|8080||", &[app]);
    to_app.protocol = UpstreamProtocol::SameAsDownstream;
    config(vec![listener], vec![], vec![to_app, cluster("inbound|5432||", &[db])])
}

/// A cluster of the api proxy's inbound port, over mTLS, expecting `identity`.
fn meshed(
    name: &str,
    sni: &str,
    api_inbound: SocketAddr,
    identity: &str,
    protocol: UpstreamProtocol,
) -> Cluster {
    Cluster {
        name: name.into(),
        discovery: Discovery::Static(Arc::new(ClusterEndpoints {
            cluster: name.into(),
            endpoints: vec![Endpoint {
                addr: api_inbound,
                identity: Some(identity.into()),
                weight: 1,
                mtls: true,
            }],
        })),
        connect_timeout: Duration::from_secs(1),
        lb: LbPolicy::RoundRobin,
        limits: CircuitBreakers::default(),
        protocol,
        tls: Some(UpstreamTls { sni: sni.into(), allowed_identities: vec![api()], all_endpoints: false }),
    }
}

/// The client side: `outbound` (HTTP, Host `api.shop` over HTTP/1.1 and
/// `api-h2.shop` over HTTP/2) and `db` (TCP).
fn web_config(outbound: SocketAddr, db: SocketAddr, api_inbound: SocketAddr, identity: &str) -> Config {
    config(
        vec![http_listener("outbound", outbound, "routes"), tcp_listener("db", db, TCP_CLUSTER)],
        vec![
            vhost("api", &["api.shop"], vec![route("/", Action::Forward(forward(&[(HTTP_CLUSTER, 1)])))]),
            vhost("api-h2", &["api-h2.shop"], vec![route("/", Action::Forward(forward(&[(H2_CLUSTER, 1)])))]),
        ],
        vec![
            meshed(HTTP_CLUSTER, HTTP_SNI, api_inbound, identity, UpstreamProtocol::Http1),
            meshed(H2_CLUSTER, HTTP_SNI, api_inbound, identity, UpstreamProtocol::Http2),
            meshed(TCP_CLUSTER, TCP_SNI, api_inbound, identity, UpstreamProtocol::Http1),
        ],
    )
}

/// A TCP server that echoes each connection back until EOF.
async fn echo() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else { return };
            tokio::spawn(async move {
                let (mut r, mut w) = stream.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    addr
}

/// Both proxies, their credentials senders, and the addresses the test uses.
struct Mesh {
    web: Proxy,
    api: Proxy,
    web_creds: watch::Sender<Option<Arc<Credentials>>>,
    api_creds: watch::Sender<Option<Arc<Credentials>>>,
    outbound: SocketAddr,
    db: SocketAddr,
    api_inbound: SocketAddr,
    app: Backend,
}

struct Setup<'a> {
    web_creds: Arc<Credentials>,
    api_creds: Arc<Credentials>,
    expected_identity: &'a str,
    http_rbac: Option<Rbac>,
    tcp_rbac: Option<Rbac>,
}

impl Mesh {
    async fn start(setup: Setup<'_>) -> Mesh {
        let app = Backend::spawn(|req: Request<hyper::body::Incoming>| async move {
            if req.uri().path() == "/slow" {
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            http::Response::builder()
                .header("x-seen-version", format!("{:?}", req.version()))
                .body(full("app"))
                .unwrap()
        })
        .await;
        let db_backend = echo().await;
        let (outbound, db, api_inbound) = (free_addr(), free_addr(), free_addr());
        let (api_creds, api_rx) = watch::channel(Some(setup.api_creds));
        let api = Proxy::start_with(
            api_config(api_inbound, app.addr, db_backend, setup.http_rbac, setup.tcp_rbac),
            api_rx,
        );
        let (web_creds, web_rx) = watch::channel(Some(setup.web_creds));
        let web = Proxy::start_with(web_config(outbound, db, api_inbound, setup.expected_identity), web_rx);
        for addr in [outbound, db, api_inbound] {
            wait_listening(addr).await;
        }
        let mesh = Mesh { web, api, web_creds, api_creds, outbound, db, api_inbound, app };
        // The probe of `db` made the web side dial the api side once: let it land.
        eventually("the db probe's upstream connection", || async {
            (mesh.api_connections() >= 1.0).then_some(())
        })
        .await;
        mesh
    }

    async fn stop(self) {
        self.web.stop().await;
        self.api.stop().await;
    }

    /// Connections the api proxy's inbound listener gave a chain (TLS handshakes begun).
    fn api_connections(&self) -> f64 {
        metric(&self.api.metrics.encode(), r#"tcp_open_total{direction="inbound"}"#).unwrap_or(0.0)
    }

    /// Sends a line through the `db` listener; what comes back before EOF.
    async fn tcp_exchange(&self) -> Vec<u8> {
        let mut stream = TcpStream::connect(self.db).await.unwrap();
        stream.write_all(b"ping over mtls").await.unwrap();
        stream.shutdown().await.unwrap();
        let mut answer = Vec::new();
        tokio::time::timeout(patience(), stream.read_to_end(&mut answer)).await.unwrap().unwrap_or(0);
        answer
    }
}

fn plain_setup<'a>(ca: &TestCa, expected_identity: &'a str) -> Setup<'a> {
    Setup {
        web_creds: ca.credentials("web", &[ca]),
        api_creds: ca.credentials("api", &[ca]),
        expected_identity,
        http_rbac: None,
        tcp_rbac: None,
    }
}

/// A fresh TLS handshake to the api proxy's inbound listener with `creds`;
/// the leaf certificate it presented.
async fn api_leaf(inbound: SocketAddr, creds: &Credentials) -> Result<CertificateDer<'static>, String> {
    let config = client_config_for(creds, &[id("api")], &[b"http/1.1".to_vec()]).unwrap();
    let tcp = TcpStream::connect(inbound).await.unwrap();
    let name = ServerName::try_from(HTTP_SNI).unwrap();
    let mut tls = TlsConnector::from(config).connect(name, tcp).await.map_err(|e| e.to_string())?;
    let leaf = tls.get_ref().1.peer_certificates().unwrap()[0].clone().into_owned();
    // TLS 1.3: a refused client certificate shows on the first exchange.
    tls.write_all(b"GET / HTTP/1.1\r\nHost: api\r\n\r\n").await.map_err(|e| e.to_string())?;
    let mut buf = [0u8; 12];
    tls.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
    Ok(leaf)
}

#[tokio::test]
async fn http1_h2_and_tcp_go_proxy_to_proxy_over_mtls_chosen_by_sni() {
    let ca = TestCa::new("mesh root");
    let api = api();
    let mesh = Mesh::start(plain_setup(&ca, &api)).await;
    let client = http1_client();

    let (status, headers, body) = send(&client, get(mesh.outbound, "api.shop", "/x")).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "app"));
    assert_eq!(headers["x-seen-version"], "HTTP/1.1");
    let (status, headers, body) = send(&client, get(mesh.outbound, "api-h2.shop", "/x")).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "app"));
    // The api proxy kept the downstream protocol: HTTP/2 came in over TLS (ALPN h2).
    assert_eq!(headers["x-seen-version"], "HTTP/2.0");
    assert_eq!(mesh.tcp_exchange().await, b"ping over mtls");

    let metrics = mesh.api.metrics.encode();
    let web = web();
    for line in [
        format!(
            r#"request_total{{direction="inbound",authority="api.shop",tls="true",client_id="{web}"}} 1"#
        ),
        format!(
            r#"request_total{{direction="inbound",authority="api-h2.shop",tls="true",client_id="{web}"}} 1"#
        ),
    ] {
        assert!(metrics.contains(&line), "missing {line} in\n{metrics}");
    }
    // The client side's own downstream (the app) is plaintext.
    let web_metrics = mesh.web.metrics.encode();
    let line = r#"request_total{direction="outbound",authority="api.shop",tls="false"} 1"#;
    assert!(web_metrics.contains(line), "missing {line} in\n{web_metrics}");
    mesh.stop().await;
}

#[tokio::test]
async fn a_server_presenting_another_identity_is_refused() {
    let ca = TestCa::new("mesh root");
    let other = id("other").to_string();
    let mesh = Mesh::start(plain_setup(&ca, &other)).await;
    let client = http1_client();
    for host in ["api.shop", "api-h2.shop"] {
        let (status, _, body) = send(&client, get(mesh.outbound, host, "/")).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{host}: {body}");
        assert!(body.contains("connection failure"), "{host}: {body}");
    }
    assert!(mesh.tcp_exchange().await.is_empty(), "TCP closed without data");
    assert_eq!(mesh.app.requests.load(std::sync::atomic::Ordering::SeqCst), 0);
    mesh.stop().await;
}

#[tokio::test]
async fn a_client_certificate_from_another_ca_is_refused() {
    let (ca, rogue) = (TestCa::new("mesh root"), TestCa::new("rogue root"));
    let api = api();
    // The rogue client trusts the mesh CA, so only the server side can refuse it.
    let setup = Setup { web_creds: rogue.credentials("web", &[&ca]), ..plain_setup(&ca, &api) };
    let mesh = Mesh::start(setup).await;
    let client = http1_client();
    for host in ["api.shop", "api-h2.shop"] {
        let (status, _, body) = send(&client, get(mesh.outbound, host, "/")).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{host}: {body}");
    }
    assert!(mesh.tcp_exchange().await.is_empty());
    assert_eq!(mesh.app.requests.load(std::sync::atomic::Ordering::SeqCst), 0);
    mesh.stop().await;
}

#[tokio::test]
async fn plaintext_and_unknown_names_are_closed_by_the_tls_listener() {
    let ca = TestCa::new("mesh root");
    let api = api();
    let mesh = Mesh::start(plain_setup(&ca, &api)).await;

    let mut plain = TcpStream::connect(mesh.api_inbound).await.unwrap();
    plain.write_all(b"GET / HTTP/1.1\r\nHost: api.shop\r\n\r\n").await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(patience(), plain.read_to_end(&mut answer)).await.unwrap();
    assert!(read.is_err() || answer.is_empty(), "a plaintext client got {answer:?}");

    let creds = ca.credentials("web", &[&ca]);
    let config = client_config_for(&creds, &[id("api")], &[]).unwrap();
    let tcp = TcpStream::connect(mesh.api_inbound).await.unwrap();
    let unknown = ServerName::try_from("outbound_.9999_._.nope.shop.svc.cluster.local").unwrap();
    let handshake = tokio::time::timeout(patience(), TlsConnector::from(config).connect(unknown, tcp)).await;
    assert!(handshake.unwrap().is_err(), "an unknown SNI completed a handshake");
    assert_eq!(mesh.app.requests.load(std::sync::atomic::Ordering::SeqCst), 0);
    mesh.stop().await;
}

/// A keep-alive HTTP/1.1 connection to `outbound`, as the app holds one, and a
/// function that sends `GET path` with `Host: api.shop` on it: the status.
async fn keep_alive(outbound: SocketAddr) -> impl AsyncFnMut(&str) -> StatusCode {
    let tcp = TcpStream::connect(outbound).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await.unwrap();
    tokio::spawn(conn);
    async move |path: &str| {
        let req = Request::get(path).header("host", "api.shop").body(full("")).unwrap();
        let response = sender.send_request(req).await.unwrap();
        let status = response.status();
        let _ = response.into_body().collect().await.unwrap();
        status
    }
}

#[tokio::test]
async fn rotated_credentials_reach_new_connections_while_established_ones_go_on() {
    let (old, new) = (TestCa::new("root old"), TestCa::new("root new"));
    let api = api();
    let mesh = Mesh::start(plain_setup(&old, &api)).await;

    // One keep-alive connection from the app, and through it one upstream mTLS connection.
    let mut request = keep_alive(mesh.outbound).await;
    assert_eq!(request("/first").await, StatusCode::OK);
    let established = mesh.api_connections();

    // A request in flight while both sides rotate to a new root, trusting both.
    let in_flight = {
        let outbound = mesh.outbound;
        tokio::spawn(async move { send(&http1_client(), get(outbound, "api.shop", "/slow")).await.0 })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let api_rotated = new.credentials("api", &[&old, &new]);
    mesh.web_creds.send_replace(Some(new.credentials("web", &[&old, &new])));
    mesh.api_creds.send_replace(Some(Arc::clone(&api_rotated)));
    assert_eq!(in_flight.await.unwrap(), StatusCode::OK);

    // The established connection goes on; a new handshake gets the new certificate.
    assert_eq!(request("/second").await, StatusCode::OK);
    // The request in flight and this one took the pooled upstream connection made before.
    assert_eq!(mesh.api_connections(), established, "the established upstream connection was reused");
    let probe = new.credentials("web", &[&new]);
    assert_eq!(api_leaf(mesh.api_inbound, &probe).await.unwrap(), api_rotated.chain()[0]);
    let stale = old.credentials("web", &[&old]);
    assert!(api_leaf(mesh.api_inbound, &stale).await.is_err(), "the old root no longer verifies the server");

    // The api side drops the old root: the web side's new connections must
    // present its new certificate, and its pooled one still works.
    let before = mesh.api_connections();
    mesh.api_creds.send_replace(Some(new.credentials("api", &[&new])));
    assert_eq!(request("/third").await, StatusCode::OK);
    let outbound = mesh.outbound;
    let (a, b) =
        tokio::join!(async { send(&http1_client(), get(outbound, "api.shop", "/slow")).await.0 }, async {
            send(&http1_client(), get(outbound, "api.shop", "/slow")).await.0
        },);
    assert_eq!((a, b), (StatusCode::OK, StatusCode::OK));
    assert!(mesh.api_connections() > before, "a new upstream connection was made");
    mesh.stop().await;
}

#[tokio::test]
async fn rbac_denies_http_with_403_and_tcp_by_closing() {
    let ca = TestCa::new("mesh root");
    let api = api();
    let web = web();
    let setup = Setup {
        http_rbac: Some(only(&web, true)),
        tcp_rbac: Some(only(&id("other").to_string(), false)),
        ..plain_setup(&ca, &api)
    };
    let mesh = Mesh::start(setup).await;
    let client = http1_client();
    let (status, _, body) = send(&client, get(mesh.outbound, "api.shop", "/allowed/x")).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "app"));
    let (status, _, body) = send(&client, get(mesh.outbound, "api-h2.shop", "/denied")).await;
    assert_eq!((status, body.as_str()), (StatusCode::FORBIDDEN, "RBAC: access denied"));
    assert_eq!(mesh.app.requests.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert!(mesh.tcp_exchange().await.is_empty(), "the denied TCP connection was closed");

    let metrics = mesh.api.metrics.encode();
    let line = format!(r#"inbound_http_authz_deny_total{{client_id="{web}"}} 1"#);
    assert!(metrics.contains(&line), "missing {line} in\n{metrics}");
    // The exchange, and the readiness probe of the db listener before it.
    let tcp_denials = metric(&metrics, &format!(r#"inbound_tcp_authz_deny_total{{client_id="{web}"}}"#));
    assert_eq!(tcp_denials, Some(2.0), "{metrics}");
    mesh.stop().await;
}

#[tokio::test]
async fn new_rbac_rules_reach_established_connections() {
    let ca = TestCa::new("mesh root");
    let api = api();
    let mesh = Mesh::start(plain_setup(&ca, &api)).await;
    // A keep-alive connection from the app, and with it a pooled upstream one.
    let mut request = keep_alive(mesh.outbound).await;
    assert_eq!(request("/denied").await, StatusCode::OK);

    // A TrafficTarget arrives: the chain changes, and its connections drain.
    let (app, db) = (mesh.app.addr, echo().await);
    mesh.api.update(api_config(mesh.api_inbound, app, db, Some(only(&web(), true)), None));
    let mut status = StatusCode::OK;
    for _ in 0..50 {
        status = request("/denied").await;
        if status == StatusCode::FORBIDDEN {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(request("/allowed").await, StatusCode::OK);
    mesh.stop().await;
}
