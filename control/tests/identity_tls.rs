//! The control plane with identity on: Certify and xDS share one TLS port; Certify needs a
//! token, xDS a client certificate whose identity matches the node; `weft token` and
//! `weft check` work against it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rcgen::{CertificateParams, KeyPair};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_rustls::TlsConnector;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;
use tonic::transport::{Channel, Endpoint, Uri};
use weft_control::identity::{CertInfo, CertificateAuthority, SpiffeId, token_for};
use weft_control::server::{ControlConfig, IdentityConfig, RunningControl, SourceConfig};
use weft_control::translate::MeshOptions;
use weft_xds_protos::envoy::config::core::v3::Node;
use weft_xds_protos::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use weft_xds_protos::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use weft_xds_protos::envoy::service::listener::v3::listener_discovery_service_client::ListenerDiscoveryServiceClient;
use weft_xds_protos::google::protobuf::{Struct, Value, value::Kind};
use weft_xds_protos::identity::identity_client::IdentityClient;
use weft_xds_protos::identity::{CertifyRequest, CertifyResponse};
use weft_xds_protos::type_url::LISTENER;

const CONTROL_ID: &str = "spiffe://cluster.local/ns/weft-system/sa/weft-control";
const TIMEOUT: Duration = Duration::from_secs(10);

struct Mesh {
    _dir: tempfile::TempDir,
    ca_dir: PathBuf,
    control: RunningControl,
}

async fn start(prepare: impl FnOnce(&Path)) -> Mesh {
    let dir = tempfile::tempdir().unwrap();
    let manifests = dir.path().join("manifests");
    std::fs::create_dir(&manifests).unwrap();
    let ca_dir = dir.path().join("ca");
    prepare(&ca_dir);
    let control = weft_control::server::start(ControlConfig {
        source: SourceConfig::Manifests(manifests),
        xds_addr: "127.0.0.1:0".parse().unwrap(),
        admin_addr: "127.0.0.1:0".parse().unwrap(),
        reload_interval: Duration::from_millis(100),
        mesh: MeshOptions::default(),
        identity: Some(IdentityConfig { ca_dir: ca_dir.clone(), cert_lifetime: Duration::from_secs(3600) }),
    })
    .await
    .unwrap();
    Mesh { _dir: dir, ca_dir, control }
}

fn id(ns: &str, sa: &str) -> SpiffeId {
    SpiffeId::new("cluster.local", ns, sa).unwrap()
}

fn roots(ca_dir: &Path) -> Arc<RootCertStore> {
    let pem = std::fs::read(ca_dir.join("root-cert.pem")).unwrap();
    let mut store = RootCertStore::empty();
    for block in x509_parser::pem::Pem::iter_from_buffer(&pem) {
        store.add(CertificateDer::from(block.unwrap().contents)).unwrap();
    }
    Arc::new(store)
}

/// Verifies the control plane's chain and DNS name as usual, then its SPIFFE ID, and
/// remembers the ID it saw.
#[derive(Debug)]
struct SpiffeVerifier {
    inner: Arc<WebPkiServerVerifier>,
    seen: Arc<RwLock<Option<String>>>,
}

impl ServerCertVerifier for SpiffeVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner.verify_server_cert(end_entity, intermediates, server_name, ocsp, now)?;
        let identity = CertInfo::from_der(end_entity).unwrap().identity;
        *self.seen.write().unwrap() = identity.clone();
        if identity.as_deref() != Some(CONTROL_ID) {
            return Err(rustls::Error::General(format!("unexpected server identity {identity:?}")));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// A workload's credentials: its certificate chain and key.
struct Workload {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    response: CertifyResponse,
}

/// A TLS channel to the control plane, optionally presenting `client`'s certificate.
async fn tls_channel(
    mesh: &Mesh,
    client: Option<&Workload>,
) -> Result<(Channel, Arc<RwLock<Option<String>>>), tonic::transport::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let seen = Arc::new(RwLock::new(None));
    let inner =
        WebPkiServerVerifier::builder_with_provider(roots(&mesh.ca_dir), provider.clone()).build().unwrap();
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(SpiffeVerifier { inner, seen: seen.clone() }));
    let mut config = match client {
        Some(w) => builder.with_client_auth_cert(w.chain.clone(), w.key.clone_key()).unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = TlsConnector::from(Arc::new(config));
    let addr = mesh.control.xds_addr;
    let connect = tower::service_fn(move |_: Uri| {
        let connector = connector.clone();
        async move {
            let tcp = TcpStream::connect(addr).await?;
            let name = ServerName::try_from("weft-control.weft-system.svc").unwrap();
            let tls = connector.connect(name, tcp).await?;
            Ok::<_, std::io::Error>(TokioIo::new(tls))
        }
    });
    let channel = Endpoint::from_static("http://weft-control.weft-system.svc")
        .connect_timeout(TIMEOUT)
        .connect_with_connector(connect)
        .await?;
    Ok((channel, seen))
}

fn csr(key: &KeyPair) -> Vec<u8> {
    CertificateParams::default().serialize_request(key).unwrap().der().to_vec()
}

async fn certify(mesh: &Mesh, identity: &SpiffeId, token: &str) -> Result<Workload, tonic::Status> {
    let (channel, _) = tls_channel(mesh, None).await.unwrap();
    let key = KeyPair::generate().unwrap();
    let response = IdentityClient::new(channel)
        .certify(CertifyRequest {
            identity: identity.to_string(),
            token: token.to_owned(),
            certificate_signing_request: csr(&key),
        })
        .await?
        .into_inner();
    let mut chain = vec![CertificateDer::from(response.leaf_certificate.clone())];
    chain.extend(response.intermediate_certificates.iter().cloned().map(CertificateDer::from));
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    Ok(Workload { chain, key, response })
}

fn node(node_id: &str, ns: &str, sa: &str) -> Node {
    let s = |v: &str| Value { kind: Some(Kind::StringValue(v.to_owned())) };
    let fields = BTreeMap::from([
        ("NAMESPACE".to_owned(), s(ns)),
        ("SERVICE_ACCOUNT".to_owned(), s(sa)),
        ("POD_IP".to_owned(), s("127.0.10.7")),
    ]);
    Node {
        id: node_id.to_owned(),
        metadata: Some(Struct { fields: fields.into_iter().collect() }),
        ..Default::default()
    }
}

/// Opens an ADS stream asking for listeners as `node`; returns the first response (or the
/// status the stream failed with) and the sender that keeps the stream open.
async fn ads(
    channel: Channel,
    node: Node,
) -> (Result<DiscoveryResponse, tonic::Status>, mpsc::Sender<DiscoveryRequest>) {
    let (tx, rx) = mpsc::channel(4);
    tx.send(DiscoveryRequest { node: Some(node), type_url: LISTENER.to_owned(), ..Default::default() })
        .await
        .unwrap();
    let mut client = AggregatedDiscoveryServiceClient::new(channel);
    let first = async {
        let mut stream = client.stream_aggregated_resources(ReceiverStream::new(rx)).await?.into_inner();
        stream.message().await?.ok_or_else(|| tonic::Status::unknown("stream ended"))
    };
    let first = tokio::time::timeout(TIMEOUT, first).await.expect("ADS answer in time");
    (first, tx)
}

async fn admin_get(addr: SocketAddr, path: &str) -> String {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    let req = http::Request::get(path)
        .header(http::header::HOST, addr.to_string())
        .body(http_body_util::Empty::<hyper::body::Bytes>::new())
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let body = http_body_util::BodyExt::collect(resp.into_body()).await.unwrap().to_bytes();
    String::from_utf8(body.to_vec()).unwrap()
}

async fn weft(args: &[&str]) -> std::process::Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_weft")).args(args).output().await.expect("run weft")
}

#[tokio::test]
async fn certify_over_tls_then_xds_only_for_the_matching_client_certificate() {
    let mesh = start(|_| {}).await;
    let cart = id("shop", "cart");

    // Certify over TLS: the server proves the control plane's SPIFFE ID; a bad token is
    // UNAUTHENTICATED, another workload's token PERMISSION_DENIED.
    let (channel, seen) = tls_channel(&mesh, None).await.unwrap();
    let key = KeyPair::generate().unwrap();
    let status = IdentityClient::new(channel)
        .certify(CertifyRequest {
            identity: cart.to_string(),
            token: "weft1.spiffe://cluster.local/ns/shop/sa/cart.00".into(),
            certificate_signing_request: csr(&key),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert_eq!(seen.read().unwrap().as_deref(), Some(CONTROL_ID));
    let payments_token = token_for(&mesh.ca_dir, &id("shop", "payments")).unwrap();
    let status = certify(&mesh, &cart, &payments_token).await.err().expect("refused");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains("sa/payments") && status.message().contains("sa/cart"), "{status:?}");

    let workload = certify(&mesh, &cart, &token_for(&mesh.ca_dir, &cart).unwrap()).await.unwrap();
    let leaf = CertInfo::from_der(&workload.response.leaf_certificate).unwrap();
    assert_eq!(leaf.identity.as_deref(), Some(cart.to_string().as_str()));
    assert_eq!(workload.response.trust_bundle.len(), 1);

    // xDS without a client certificate: UNAUTHENTICATED.
    let (anonymous, _) = tls_channel(&mesh, None).await.unwrap();
    let (first, _keep) = ads(anonymous, node("cart-1", "shop", "cart")).await;
    let status = first.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");

    // With cart's certificate but claiming to be payments: PERMISSION_DENIED naming both.
    let (as_cart, _) = tls_channel(&mesh, Some(&workload)).await.unwrap();
    let (first, _keep) = ads(as_cart.clone(), node("impostor", "shop", "payments")).await;
    let status = first.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains("sa/cart") && status.message().contains("\"payments\""), "{status:?}");

    // The same holds for a one-shot fetch.
    let request = DiscoveryRequest { node: Some(node("impostor", "shop", "payments")), ..Default::default() };
    let status =
        ListenerDiscoveryServiceClient::new(as_cart.clone()).fetch_listeners(request).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    let request = DiscoveryRequest { node: Some(node("cart-2", "shop", "cart")), ..Default::default() };
    let fetched =
        ListenerDiscoveryServiceClient::new(as_cart.clone()).fetch_listeners(request).await.unwrap();
    assert!(!fetched.into_inner().resources.is_empty());

    // Matching: resources arrive, and the connection shows up with its certificate.
    let (first, keep) = ads(as_cart, node("cart-1", "shop", "cart")).await;
    let response = first.unwrap();
    assert_eq!(response.type_url, LISTENER);
    assert!(!response.resources.is_empty());

    let admin = mesh.control.admin_addr;
    let identity: serde_json::Value =
        serde_json::from_str(&admin_get(admin, "/debug/identity").await).unwrap();
    assert_eq!(identity["mtls"], true);
    assert_eq!(identity["control"]["identity"], CONTROL_ID);
    assert_eq!(identity["roots"].as_array().unwrap().len(), 1);
    let proxies = identity["proxies"].as_array().unwrap();
    assert_eq!(proxies.len(), 1, "{identity}");
    assert_eq!(proxies[0]["node"], "cart-1");
    assert_eq!(proxies[0]["presented"]["serial"], leaf.serial.as_str());
    assert_eq!(proxies[0]["latest_issued"]["serial"], leaf.serial.as_str());
    assert!(proxies[0]["latest_issued"]["peer"].as_str().unwrap().starts_with("127.0.0.1:"));

    // A plaintext client on the TLS port fails; the port keeps serving TLS afterwards.
    let plain = async {
        let mut client = IdentityClient::connect(format!("http://{}", mesh.control.xds_addr)).await?;
        client
            .certify(CertifyRequest { identity: cart.to_string(), ..Default::default() })
            .await
            .map_err(|s| -> Box<dyn std::error::Error> { Box::new(s) })?;
        Ok::<_, Box<dyn std::error::Error>>(())
    };
    assert!(tokio::time::timeout(TIMEOUT, plain).await.expect("fails in time").is_err());
    certify(&mesh, &cart, &token_for(&mesh.ca_dir, &cart).unwrap()).await.unwrap();

    let metrics = admin_get(admin, "/metrics").await;
    assert!(metrics.contains("weft_identity_root_expiry_seconds "), "{metrics}");
    assert!(metrics.contains("weft_identity_issued_total 2"), "{metrics}");
    assert!(metrics.contains("weft_identity_refused_total{reason=\"tls_handshake\"}"), "{metrics}");
    for (reason, count) in [
        ("invalid_token", 1),
        ("token_identity_mismatch", 1),
        ("no_client_certificate", 1),
        ("client_identity_mismatch", 2),
    ] {
        assert!(
            metrics.contains(&format!("weft_identity_refused_total{{reason=\"{reason}\"}} {count}")),
            "{reason}:\n{metrics}"
        );
    }

    // `weft check` is happy with a valid root, control certificate and proxy certificate.
    let out = weft(&["check", "--admin-addr", &admin.to_string()]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("cart-1") && stdout.contains(&cart.to_string()), "{stdout}");
    assert!(stdout.contains(CONTROL_ID) && stdout.contains("All certificates are valid"), "{stdout}");
    drop(keep);
    mesh.control.shutdown().await;
}

#[tokio::test]
async fn an_intermediate_signs_leaves_and_travels_as_their_chain() {
    let mesh = start(|ca_dir| {
        // First start makes the root; then the operator adds an intermediate.
        CertificateAuthority::load_or_generate(ca_dir, Default::default()).unwrap();
        CertificateAuthority::create_intermediate(ca_dir, "cluster.local", Duration::from_secs(86_400))
            .unwrap();
    })
    .await;
    let cart = id("shop", "cart");
    let workload = certify(&mesh, &cart, &token_for(&mesh.ca_dir, &cart).unwrap()).await.unwrap();
    assert_eq!(workload.response.intermediate_certificates.len(), 1);
    assert_eq!(workload.chain.len(), 2);

    // The control plane's own certificate chains through the intermediate too (the client
    // trusts only the root), and a proxy presenting leaf + intermediate is admitted.
    let (channel, seen) = tls_channel(&mesh, Some(&workload)).await.unwrap();
    let (first, _keep) = ads(channel, node("cart-1", "shop", "cart")).await;
    assert!(!first.unwrap().resources.is_empty());
    assert_eq!(seen.read().unwrap().as_deref(), Some(CONTROL_ID));
    mesh.control.shutdown().await;
}

#[tokio::test]
async fn weft_token_prints_a_token_the_control_plane_accepts() {
    let mesh = start(|_| {}).await;
    let ca_dir = mesh.ca_dir.to_str().unwrap().to_owned();
    let out = weft(&["token", "--ca-dir", &ca_dir, "--namespace", "shop", "--service-account", "cart"]).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let token = String::from_utf8(out.stdout).unwrap();
    let cart = id("shop", "cart");
    assert_eq!(token.trim(), token_for(&mesh.ca_dir, &cart).unwrap());
    certify(&mesh, &cart, &token).await.unwrap();
    mesh.control.shutdown().await;
}

#[tokio::test]
async fn weft_check_fails_clearly_without_a_control_plane() {
    // Port 9 on loopback: nothing listens there.
    let out = weft(&["check", "--admin-addr", "127.0.0.1:9"]).await;
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("127.0.0.1:9") && err.contains("weft control"), "{err}");
}

#[test]
fn identity_flags_are_documented_with_their_environment_variables() {
    for (cmd, flags) in [
        (
            "control",
            &[
                "--ca-dir",
                "WEFT_CA_DIR",
                "--trust-domain",
                "WEFT_TRUST_DOMAIN",
                "--cert-lifetime",
                "WEFT_CERT_LIFETIME",
                "--authz",
                "WEFT_AUTHZ",
                "--insecure-plaintext",
                "WEFT_INSECURE_PLAINTEXT",
            ][..],
        ),
        ("token", &["--ca-dir", "--namespace", "WEFT_NAMESPACE", "--service-account", "--trust-domain"][..]),
        ("check", &["--admin-addr", "WEFT_ADMIN_ADDR"][..]),
    ] {
        let out =
            std::process::Command::new(env!("CARGO_BIN_EXE_weft")).args([cmd, "--help"]).output().unwrap();
        assert!(out.status.success());
        let help = String::from_utf8(out.stdout).unwrap();
        for flag in flags {
            assert!(help.contains(flag), "`weft {cmd} --help` does not document {flag}:\n{help}");
        }
    }
}

#[test]
fn a_bad_cert_lifetime_is_refused_with_the_reason() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_weft"))
        .args(["control", "--manifests", ".", "--cert-lifetime", "3w"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--cert-lifetime") && err.contains("unknown unit"), "{err}");
}
