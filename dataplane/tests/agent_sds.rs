//! weft-agent's SDS server for stock Envoy.
//!
//! - The SDS service alone, over its Unix socket, with credentials from a
//!   throwaway CA: SotW and Delta streams get `default` and `ROOTCA`, a
//!   renewal pushes a new version (Delta resends only what changed), Fetch
//!   answers, unknown names are reported.
//! - The whole agent in-process against the real control plane (identity
//!   on, TLS): it certifies with its token, serves the certificate the CA
//!   issued and pushes each renewal; a bad token stops it with the server's
//!   message; a control plane that comes up late is waited for.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::future::Future;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use hyper_util::rt::TokioIo;
use prost::Message;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivatePkcs8KeyDer};
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_stream::wrappers::{UnboundedReceiverStream, UnixListenerStream};
use tonic::codegen::http::Uri;
use tonic::transport::{Channel, Endpoint};
use weft_control::server::{ControlConfig, IdentityConfig, RunningControl, SourceConfig};
use weft_proxy::protos::envoy::config::core::v3::data_source::Specifier;
use weft_proxy::protos::envoy::extensions::transport_sockets::tls::v3::Secret;
use weft_proxy::protos::envoy::extensions::transport_sockets::tls::v3::secret::Type;
use weft_proxy::protos::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use weft_proxy::protos::envoy::service::secret::v3::secret_discovery_service_client::SecretDiscoveryServiceClient;
use weft_proxy::protos::google::protobuf::Any;
use weft_proxy::protos::type_url;
use weft_proxy::sds::{self, AgentConfig, AgentError, AgentHandle, SdsMetrics, SdsService, SecretSet};
use weft_proxy::tls::channel::{parse_pem_certificates, read_pem_certificates};
use weft_proxy::tls::{Credentials, SpiffeId, TokenSource, control_identity, spiffe_id_of};

const PATIENCE: Duration = Duration::from_secs(20);

fn id(ns: &str, sa: &str) -> SpiffeId {
    SpiffeId::new("cluster.local", ns, sa).unwrap()
}

// ------------------------------------------------------------ SDS over UDS

/// Dials a Unix socket for tonic.
#[derive(Clone)]
struct UdsConnector(PathBuf);

impl tonic::codegen::Service<Uri> for UdsConnector {
    type Response = TokioIo<UnixStream>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = std::io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: Uri) -> Self::Future {
        let path = self.0.clone();
        Box::pin(async move { Ok(TokioIo::new(UnixStream::connect(path).await?)) })
    }
}

async fn sds_client(socket: &Path) -> SecretDiscoveryServiceClient<Channel> {
    let channel = Endpoint::from_static("http://weft-sds")
        .connect_with_connector(UdsConnector(socket.to_owned()))
        .await
        .unwrap();
    SecretDiscoveryServiceClient::new(channel)
}

/// An open SotW stream and the sender of its requests.
struct Sotw {
    requests: mpsc::UnboundedSender<DiscoveryRequest>,
    responses: tonic::Streaming<DiscoveryResponse>,
}

impl Sotw {
    async fn open(client: &mut SecretDiscoveryServiceClient<Channel>, names: &[&str]) -> Sotw {
        let (requests, rx) = mpsc::unbounded_channel();
        requests
            .send(DiscoveryRequest {
                type_url: type_url::SECRET.into(),
                resource_names: names.iter().map(|n| n.to_string()).collect(),
                ..DiscoveryRequest::default()
            })
            .unwrap();
        let responses = client.stream_secrets(UnboundedReceiverStream::new(rx)).await.unwrap().into_inner();
        Sotw { requests, responses }
    }

    /// The next response, ACKed.
    async fn next(&mut self) -> DiscoveryResponse {
        let r =
            tokio::time::timeout(PATIENCE, self.responses.message()).await.expect("a SotW response").unwrap();
        let r = r.expect("the stream is open");
        self.requests
            .send(DiscoveryRequest {
                version_info: r.version_info.clone(),
                response_nonce: r.nonce.clone(),
                type_url: type_url::SECRET.into(),
                resource_names: r.resources.iter().map(|a| decode(a).name).collect(),
                ..DiscoveryRequest::default()
            })
            .unwrap();
        r
    }
}

/// An open Delta stream and the sender of its requests.
struct Delta {
    requests: mpsc::UnboundedSender<DeltaDiscoveryRequest>,
    responses: tonic::Streaming<DeltaDiscoveryResponse>,
}

impl Delta {
    async fn open(client: &mut SecretDiscoveryServiceClient<Channel>, names: &[&str]) -> Delta {
        let (requests, rx) = mpsc::unbounded_channel();
        requests
            .send(DeltaDiscoveryRequest {
                type_url: type_url::SECRET.into(),
                resource_names_subscribe: names.iter().map(|n| n.to_string()).collect(),
                ..DeltaDiscoveryRequest::default()
            })
            .unwrap();
        let responses = client.delta_secrets(UnboundedReceiverStream::new(rx)).await.unwrap().into_inner();
        Delta { requests, responses }
    }

    /// The next response, ACKed.
    async fn next(&mut self) -> DeltaDiscoveryResponse {
        let r = tokio::time::timeout(PATIENCE, self.responses.message())
            .await
            .expect("a Delta response")
            .unwrap();
        let r = r.expect("the stream is open");
        self.requests
            .send(DeltaDiscoveryRequest {
                type_url: type_url::SECRET.into(),
                response_nonce: r.nonce.clone(),
                ..DeltaDiscoveryRequest::default()
            })
            .unwrap();
        r
    }
}

fn decode(any: &Any) -> Secret {
    assert_eq!(any.type_url, type_url::SECRET);
    Secret::decode(any.value.as_slice()).unwrap()
}

fn inline(source: Option<&weft_proxy::protos::envoy::config::core::v3::DataSource>) -> String {
    match source.and_then(|s| s.specifier.as_ref()) {
        Some(Specifier::InlineBytes(bytes)) => String::from_utf8(bytes.clone()).unwrap(),
        other => panic!("expected inline bytes, got {other:?}"),
    }
}

/// What a `default` secret carries: (leaf, chain PEM, key PEM).
fn certificate_of(secret: &Secret) -> (CertificateDer<'static>, String, String) {
    assert_eq!(secret.name, "default");
    let Some(Type::TlsCertificate(tls)) = &secret.r#type else {
        panic!("default is not a certificate: {secret:?}")
    };
    let chain = inline(tls.certificate_chain.as_ref());
    let key = inline(tls.private_key.as_ref());
    let leaf = parse_pem_certificates(chain.as_bytes()).unwrap().remove(0);
    (leaf, chain, key)
}

/// The roots a `ROOTCA` secret carries.
fn roots_of(secret: &Secret) -> Vec<CertificateDer<'static>> {
    assert_eq!(secret.name, "ROOTCA");
    let Some(Type::ValidationContext(v)) = &secret.r#type else {
        panic!("ROOTCA is not a validation context")
    };
    parse_pem_certificates(inline(v.trusted_ca.as_ref()).as_bytes()).unwrap()
}

fn by_name(resources: &[Any]) -> std::collections::BTreeMap<String, Secret> {
    resources.iter().map(decode).map(|s| (s.name.clone(), s)).collect()
}

/// A throwaway root CA.
struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    root: CertificateDer<'static>,
}

impl TestCa {
    fn new() -> TestCa {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.distinguished_name.push(DnType::CommonName, "test root");
        let root = params.self_signed(&key).unwrap().der().clone();
        TestCa { issuer: Issuer::new(params, key), root }
    }

    fn credentials(&self, identity: &SpiffeId) -> Credentials {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.subject_alt_names = vec![SanType::URI(identity.to_string().try_into().unwrap())];
        params.extended_key_usages =
            vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        let leaf = params.signed_by(&key, &self.issuer).unwrap().der().clone();
        Credentials::new(
            identity.clone(),
            PrivatePkcs8KeyDer::from(key.serialize_der()),
            vec![leaf],
            vec![self.root.clone()],
        )
        .unwrap()
    }
}

/// The SDS service on a socket in a fresh private directory.
struct SdsUnderTest {
    _dir: tempfile::TempDir,
    socket: PathBuf,
    secrets: watch::Sender<Option<Arc<SecretSet>>>,
    metrics: Arc<SdsMetrics>,
}

async fn serve_sds() -> SdsUnderTest {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("sds").join("agent.sock");
    let (listener, guard) = sds::socket::bind(&socket).unwrap();
    let (secrets, rx) = watch::channel(None);
    let metrics = Arc::new(SdsMetrics::new());
    let service = SdsService::new(rx, metrics.clone());
    tokio::spawn(async move {
        let _guard = guard;
        tonic::transport::Server::builder()
            .add_service(service.into_server())
            .serve_with_incoming(UnixListenerStream::new(listener))
            .await
            .unwrap();
    });
    SdsUnderTest { _dir: dir, socket, secrets, metrics }
}

#[tokio::test]
async fn sotw_and_delta_streams_get_both_secrets_and_each_renewal() {
    let sds = serve_sds().await;
    let ca = TestCa::new();
    let web = id("shop", "web");
    let mut client = sds_client(&sds.socket).await;
    // Streams opened before the first certificate wait for it.
    let mut sotw = Sotw::open(&mut client, &["default", "ROOTCA"]).await;
    let mut delta = Delta::open(&mut client, &["default", "ROOTCA"]).await;
    let first = ca.credentials(&web);
    sds.secrets.send_replace(Some(Arc::new(SecretSet::from_credentials(&first))));

    let r1 = sotw.next().await;
    assert_eq!(r1.type_url, type_url::SECRET);
    let secrets = by_name(&r1.resources);
    assert_eq!(secrets.keys().collect::<Vec<_>>(), ["ROOTCA", "default"]);
    let (leaf, chain, key) = certificate_of(&secrets["default"]);
    assert_eq!(leaf, first.chain()[0]);
    assert_eq!(spiffe_id_of(&leaf).unwrap(), web);
    assert!(chain.starts_with("-----BEGIN CERTIFICATE-----\n"), "{chain}");
    assert!(key.starts_with("-----BEGIN PRIVATE KEY-----\n") && !key.contains('\r'));
    assert_key_matches(first.chain(), &key);
    assert_eq!(roots_of(&secrets["ROOTCA"]), std::slice::from_ref(&ca.root));

    let d1 = delta.next().await;
    let versions1: std::collections::BTreeMap<String, String> =
        d1.resources.iter().map(|r| (r.name.clone(), r.version.clone())).collect();
    assert_eq!(versions1.keys().collect::<Vec<_>>(), ["ROOTCA", "default"]);
    assert!(d1.removed_resources.is_empty());

    // A renewal: a new leaf under the same root.
    let second = ca.credentials(&web);
    sds.secrets.send_replace(Some(Arc::new(SecretSet::from_credentials(&second))));
    let r2 = sotw.next().await;
    assert_ne!(r2.version_info, r1.version_info);
    let secrets = by_name(&r2.resources);
    assert_eq!(secrets.len(), 2, "SotW resends everything subscribed");
    assert_eq!(certificate_of(&secrets["default"]).0, second.chain()[0]);
    let d2 = delta.next().await;
    assert_eq!(d2.resources.len(), 1, "Delta resends only what changed: {:?}", d2.resources);
    assert_eq!(d2.resources[0].name, "default");
    assert_ne!(d2.resources[0].version, versions1["default"]);
    let secret = decode(d2.resources[0].resource.as_ref().unwrap());
    assert_eq!(certificate_of(&secret).0, second.chain()[0]);

    // Fetch answers from the same set.
    let fetched = client
        .fetch_secrets(DiscoveryRequest {
            type_url: type_url::SECRET.into(),
            resource_names: vec!["ROOTCA".into()],
            ..DiscoveryRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(fetched.version_info, r2.version_info);
    assert_eq!(roots_of(&by_name(&fetched.resources)["ROOTCA"]), std::slice::from_ref(&ca.root));

    let metrics = sds.metrics.encode();
    assert!(metrics.contains("sds_streams 2"), "{metrics}");
    assert!(metrics.contains("sds_responses_total 5"), "{metrics}");
}

/// The served key must be the one the leaf certifies: rustls refuses a
/// key that does not match the certificate.
fn assert_key_matches(chain: &[CertificateDer<'static>], key_pem: &str) {
    let der = pem::parse(key_pem).unwrap().into_contents();
    rustls::sign::CertifiedKey::from_der(
        chain.to_vec(),
        rustls::pki_types::PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(der)),
        &rustls::crypto::ring::default_provider(),
    )
    .expect("the served key matches the served certificate");
}

#[tokio::test]
async fn unknown_names_are_reported_absent_and_a_nack_is_not_answered_again() {
    let sds = serve_sds().await;
    let ca = TestCa::new();
    sds.secrets
        .send_replace(Some(Arc::new(SecretSet::from_credentials(&ca.credentials(&id("shop", "web"))))));
    let mut client = sds_client(&sds.socket).await;

    let mut delta = Delta::open(&mut client, &["default", "file-cert"]).await;
    let d = delta.next().await;
    assert_eq!(d.resources.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(), ["default"]);
    assert_eq!(d.removed_resources, ["file-cert"]);

    let mut sotw = Sotw::open(&mut client, &["ROOTCA"]).await;
    let r = sotw.responses.message().await.unwrap().unwrap();
    assert_eq!(by_name(&r.resources).keys().collect::<Vec<_>>(), ["ROOTCA"]);
    // A NACK of that version: nothing new to send until the secrets change.
    sotw.requests
        .send(DiscoveryRequest {
            version_info: String::new(),
            response_nonce: r.nonce.clone(),
            type_url: type_url::SECRET.into(),
            resource_names: vec!["ROOTCA".into()],
            error_detail: Some(weft_proxy::protos::google::rpc::Status {
                code: 3,
                message: "bad".into(),
                details: vec![],
            }),
            ..DiscoveryRequest::default()
        })
        .unwrap();
    let quiet = tokio::time::timeout(Duration::from_millis(300), sotw.responses.message()).await;
    assert!(quiet.is_err(), "answered a NACK with the same version: {quiet:?}");
    assert!(sds.metrics.encode().contains("sds_nacks_total 1"));

    // A wildcard SotW request gets both.
    let mut all = Sotw::open(&mut client, &[]).await;
    assert_eq!(by_name(&all.next().await.resources).len(), 2);
}

// ------------------------------------------------- the agent, end to end

/// The control plane with identity on (TLS on the xDS port, Certify beside it).
async fn control_plane(ca_dir: &Path, xds_addr: &str, cert_lifetime: Duration) -> RunningControl {
    let manifests = ca_dir.parent().unwrap().join("manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    weft_control::server::start(ControlConfig {
        source: SourceConfig::Manifests(manifests),
        xds_addr: xds_addr.parse().unwrap(),
        admin_addr: "127.0.0.1:0".parse().unwrap(),
        reload_interval: Duration::from_millis(100),
        mesh: weft_control::translate::MeshOptions::default(),
        identity: Some(IdentityConfig { ca_dir: ca_dir.to_owned(), cert_lifetime }),
    })
    .await
    .unwrap()
}

struct AgentUnderTest {
    socket: PathBuf,
    handle: AgentHandle,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<(), AgentError>>,
}

/// Starts the agent in-process for `shop/web` with `token`.
async fn start_agent(dir: &Path, xds_addr: String, ca_dir: &Path, token: &str) -> AgentUnderTest {
    let token_file = dir.join("token");
    std::fs::write(&token_file, token).unwrap();
    let socket = dir.join("sds").join("agent.sock");
    let config = AgentConfig {
        xds_addr,
        identity: id("shop", "web"),
        control_identity: control_identity("cluster.local").unwrap(),
        ca_anchors: read_pem_certificates(&ca_dir.join("root-cert.pem")).unwrap(),
        token: TokenSource::File(token_file),
        sds_socket: socket.clone(),
        admin_addr: Some("127.0.0.1:0".parse().unwrap()),
    };
    let (stop, shutdown) = watch::channel(false);
    let (started_tx, started) = oneshot::channel();
    let task = tokio::spawn(sds::run(config, shutdown, Some(started_tx)));
    let handle = tokio::time::timeout(PATIENCE, started).await.unwrap().unwrap();
    AgentUnderTest { socket, handle, stop, task }
}

/// Makes the mesh CA (root and token key) the way `weft control` would.
async fn make_ca(dir: &Path) -> PathBuf {
    let ca_dir = dir.join("ca");
    let control = control_plane(&ca_dir, "127.0.0.1:0", Duration::from_secs(3600)).await;
    control.shutdown().await;
    ca_dir
}

#[tokio::test]
async fn agent_certifies_with_the_control_plane_serves_sds_and_pushes_renewals() {
    let dir = tempfile::tempdir().unwrap();
    let ca_dir = dir.path().join("ca");
    // 30 s leaves (backdated a minute by the CA): renewed every few seconds.
    let control = control_plane(&ca_dir, "127.0.0.1:0", Duration::from_secs(30)).await;
    let token = weft_control::identity::token_for(&ca_dir, &id("shop", "web")).unwrap();
    let agent = start_agent(dir.path(), control.xds_addr.to_string(), &ca_dir, &token).await;

    // The socket is the agent's alone.
    let meta = std::fs::symlink_metadata(&agent.socket).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_eq!(std::fs::metadata(agent.socket.parent().unwrap()).unwrap().mode() & 0o777, 0o700);

    let mut client = sds_client(&agent.socket).await;
    let mut sotw = Sotw::open(&mut client, &["default", "ROOTCA"]).await;
    let r1 = sotw.next().await;
    let secrets = by_name(&r1.resources);
    let (leaf1, chain1, key1) = certificate_of(&secrets["default"]);
    assert_eq!(spiffe_id_of(&leaf1).unwrap(), id("shop", "web"));
    assert_key_matches(&parse_pem_certificates(chain1.as_bytes()).unwrap(), &key1);
    let root = read_pem_certificates(&ca_dir.join("root-cert.pem")).unwrap();
    assert_eq!(roots_of(&secrets["ROOTCA"]), root, "ROOTCA is the mesh's trust bundle");
    // The served certificate is the one the agent holds and shows.
    let held = agent.handle.credentials.borrow().clone().unwrap();
    assert_eq!(held.chain()[0], leaf1);
    let admin = agent.handle.admin_addr.unwrap();
    let (status, body) = get(admin, "/identity").await;
    assert_eq!(status, 200, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["identity"], "spiffe://cluster.local/ns/shop/sa/web");
    assert_eq!(json["trust_anchors"].as_array().unwrap().len(), 1);
    assert_eq!(get(admin, "/ready").await.0, 200);
    let metrics = get(admin, "/metrics").await.1;
    assert!(metrics.contains("identity_cert_expiration_timestamp_seconds"), "{metrics}");

    // The renewal reaches the open stream.
    let r2 = sotw.next().await;
    assert_ne!(r2.version_info, r1.version_info);
    let (leaf2, _, _) = certificate_of(&by_name(&r2.resources)["default"]);
    assert_ne!(leaf2, leaf1, "a renewal brings a new certificate");
    assert_eq!(spiffe_id_of(&leaf2).unwrap(), id("shop", "web"));

    let _ = agent.stop.send(true);
    tokio::time::timeout(PATIENCE, agent.task).await.unwrap().unwrap().unwrap();
    assert!(!agent.socket.exists(), "the agent removes its socket when it stops");
    control.shutdown().await;
}

#[tokio::test]
async fn agent_stops_with_the_servers_message_when_the_token_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ca_dir = dir.path().join("ca");
    let control = control_plane(&ca_dir, "127.0.0.1:0", Duration::from_secs(3600)).await;
    // A token for someone else.
    let token = weft_control::identity::token_for(&ca_dir, &id("shop", "admin")).unwrap();
    let agent = start_agent(dir.path(), control.xds_addr.to_string(), &ca_dir, &token).await;
    let error = tokio::time::timeout(PATIENCE, agent.task).await.unwrap().unwrap().unwrap_err();
    let text = error.to_string();
    assert!(matches!(error, AgentError::Refused(_)), "{error:?}");
    assert!(text.contains("Unauthenticated") || text.contains("PermissionDenied"), "{text}");
    assert!(
        text.contains("spiffe://cluster.local/ns/shop/sa/web"),
        "the server's message names the identity: {text}"
    );
    control.shutdown().await;
}

#[tokio::test]
async fn agent_waits_for_a_control_plane_that_comes_up_late() {
    let dir = tempfile::tempdir().unwrap();
    let ca_dir = make_ca(dir.path()).await;
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let addr = format!("127.0.0.1:{port}");
    let token = weft_control::identity::token_for(&ca_dir, &id("shop", "web")).unwrap();
    let agent = start_agent(dir.path(), addr.clone(), &ca_dir, &token).await;
    let admin = agent.handle.admin_addr.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (status, body) = get(admin, "/ready").await;
    assert_eq!(status, 503, "{body}");
    assert!(!agent.task.is_finished(), "the agent gave up on an unreachable control plane");

    let control = control_plane(&ca_dir, &addr, Duration::from_secs(3600)).await;
    let mut creds = agent.handle.credentials.clone();
    tokio::time::timeout(PATIENCE, creds.wait_for(Option::is_some))
        .await
        .expect("certified once the control plane is up")
        .unwrap();
    assert_eq!(get(admin, "/ready").await.0, 200);
    let not_after = creds.borrow().as_ref().unwrap().not_after();
    assert!(not_after > SystemTime::now() + Duration::from_secs(3000));
    let _ = agent.stop.send(true);
    control.shutdown().await;
}

/// `GET` on an admin server: (status, body).
async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(format!("GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut raw = String::new();
    tcp.read_to_string(&mut raw).await.unwrap();
    let status = raw.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = raw.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}
