//! Workload identity and mTLS without the control plane: a throwaway rcgen CA
//! in the test, real rustls handshakes on 127.0.0.1:0, and the Certify client
//! against a fake identity server.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DnType, ExtendedKeyUsagePurpose,
    IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status};
use weft_proxy::protos::google::protobuf::Timestamp;
use weft_proxy::protos::identity::identity_server::{Identity, IdentityServer};
use weft_proxy::protos::identity::{CertifyRequest, CertifyResponse};
use weft_proxy::tls::{
    Certifier, Credentials, SpiffeId, TlsError, TokenSource, client_config, config::crypto_provider,
    peer_identity, server_config,
};

const PATIENCE: Duration = Duration::from_secs(10);
const DAY: Duration = Duration::from_secs(24 * 3600);

fn id(ns: &str, sa: &str) -> SpiffeId {
    SpiffeId::new("cluster.local", ns, sa).unwrap()
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

    /// Signs `params` for `public_key` with a validity window ending `lifetime - age` from now.
    fn sign(
        &self,
        mut params: CertificateParams,
        public_key: &impl rcgen::PublicKeyData,
        age: Duration,
        lifetime: Duration,
    ) -> CertificateDer<'static> {
        let not_before = SystemTime::now() - age;
        params.not_before = not_before.into();
        params.not_after = (not_before + lifetime).into();
        params.signed_by(public_key, &self.issuer).unwrap().der().clone()
    }

    /// A workload leaf for `identity` (plus `dns` names), trusting `bundle`.
    fn credentials(&self, identity: &SpiffeId, dns: &[&str], bundle: &[&TestCa]) -> Credentials {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.subject_alt_names = vec![SanType::URI(identity.to_string().try_into().unwrap())];
        for name in dns {
            params.subject_alt_names.push(SanType::DnsName((*name).try_into().unwrap()));
        }
        params.extended_key_usages =
            vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        let leaf = self.sign(params, &key, Duration::from_secs(60), DAY);
        Credentials::new(
            identity.clone(),
            PrivatePkcs8KeyDer::from(key.serialize_der()),
            vec![leaf],
            bundle.iter().map(|ca| ca.root.clone()).collect(),
        )
        .unwrap()
    }
}

/// What each side of one handshake plus a ping/pong exchange saw.
struct Outcome {
    /// The client identity the server saw, or the server's error.
    server: Result<SpiffeId, String>,
    /// The server identity and ALPN the client saw after a pong, or the client's error.
    client: Result<(SpiffeId, Option<Vec<u8>>), String>,
}

async fn handshake(server: Arc<ServerConfig>, client: Arc<ClientConfig>, sni: &str) -> Outcome {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accept = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut tls = TlsAcceptor::from(server).accept(tcp).await.map_err(|e| e.to_string())?;
        let peer = peer_identity(tls.get_ref().1.peer_certificates()).map_err(|e| e.to_string())?;
        let mut ping = [0u8; 4];
        tls.read_exact(&mut ping).await.map_err(|e| e.to_string())?;
        tls.write_all(b"pong").await.map_err(|e| e.to_string())?;
        tls.shutdown().await.map_err(|e| e.to_string())?;
        Ok(peer)
    });
    let connect = async {
        let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let name = ServerName::try_from(sni.to_owned()).unwrap();
        let mut tls = TlsConnector::from(client).connect(name, tcp).await.map_err(|e| e.to_string())?;
        let (_, conn) = tls.get_ref();
        let peer = peer_identity(conn.peer_certificates()).map_err(|e| e.to_string())?;
        let alpn = conn.alpn_protocol().map(<[u8]>::to_vec);
        tls.write_all(b"ping").await.map_err(|e| e.to_string())?;
        let mut pong = [0u8; 4];
        tls.read_exact(&mut pong).await.map_err(|e| e.to_string())?;
        assert_eq!(&pong, b"pong");
        Ok((peer, alpn))
    };
    let client = tokio::time::timeout(PATIENCE, connect).await.unwrap();
    let server = tokio::time::timeout(PATIENCE, accept).await.unwrap().unwrap();
    Outcome { server, client }
}

#[tokio::test]
async fn mtls_succeeds_and_each_side_sees_the_others_spiffe_id_over_h2() {
    let ca = TestCa::new("root A");
    let server = ca.credentials(&id("shop", "cart"), &[], &[&ca]);
    let client = ca.credentials(&id("shop", "web"), &[], &[&ca]);
    let out = handshake(
        server_config(&server).unwrap(),
        client_config(&client, id("shop", "cart")).unwrap(),
        "not-the-identity.invalid",
    )
    .await;
    assert_eq!(out.server.unwrap(), id("shop", "web"));
    let (peer, alpn) = out.client.unwrap();
    assert_eq!(peer, id("shop", "cart"));
    assert_eq!(alpn.as_deref(), Some(&b"h2"[..]));
}

#[tokio::test]
async fn client_refuses_a_server_presenting_another_spiffe_id() {
    let ca = TestCa::new("root A");
    let server = ca.credentials(&id("shop", "cart"), &[], &[&ca]);
    let client = ca.credentials(&id("shop", "web"), &[], &[&ca]);
    let out = handshake(
        server_config(&server).unwrap(),
        client_config(&client, id("shop", "payments")).unwrap(),
        "cart.shop",
    )
    .await;
    let err = out.client.unwrap_err();
    assert!(
        err.contains("UnexpectedPeer") && err.contains("spiffe://cluster.local/ns/shop/sa/payments"),
        "{err}"
    );
    assert!(out.server.is_err());
}

#[tokio::test]
async fn server_refuses_a_client_certificate_from_another_ca() {
    let (ca, rogue) = (TestCa::new("root A"), TestCa::new("rogue"));
    let server = ca.credentials(&id("shop", "cart"), &[], &[&ca]);
    // The rogue client trusts the real CA, so only the server can refuse it.
    let client = rogue.credentials(&id("shop", "web"), &[], &[&ca]);
    let out = handshake(
        server_config(&server).unwrap(),
        client_config(&client, id("shop", "cart")).unwrap(),
        "cart.shop",
    )
    .await;
    let err = out.server.unwrap_err();
    assert!(err.contains("UnknownIssuer") || err.contains("unknown issuer"), "{err}");
    assert!(out.client.is_err(), "client got a pong from a server that refused it");
}

#[tokio::test]
async fn client_refuses_a_server_certificate_from_another_ca() {
    let (ca, rogue) = (TestCa::new("root A"), TestCa::new("rogue"));
    let server = rogue.credentials(&id("shop", "cart"), &[], &[&ca]);
    let client = ca.credentials(&id("shop", "web"), &[], &[&ca]);
    let out = handshake(
        server_config(&server).unwrap(),
        client_config(&client, id("shop", "cart")).unwrap(),
        "cart.shop",
    )
    .await;
    let err = out.client.unwrap_err();
    assert!(err.contains("UnknownIssuer") || err.contains("unknown issuer"), "{err}");
    assert!(out.server.is_err());
}

#[tokio::test]
async fn server_refuses_a_client_without_certificate() {
    let ca = TestCa::new("root A");
    // A DNS name lets a stock rustls client verify the server without a SPIFFE check.
    let server = ca.credentials(&id("shop", "cart"), &["cart.shop"], &[&ca]);
    let mut roots = RootCertStore::empty();
    roots.add(ca.root.clone()).unwrap();
    let anonymous = ClientConfig::builder_with_provider(crypto_provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let out = handshake(server_config(&server).unwrap(), Arc::new(anonymous), "cart.shop").await;
    let err = out.server.unwrap_err();
    assert!(err.to_lowercase().contains("no certificates"), "{err}");
    assert!(out.client.is_err(), "an anonymous client got a pong");
}

#[tokio::test]
async fn a_trust_bundle_with_two_roots_accepts_peers_of_both() {
    let (old, new) = (TestCa::new("root old"), TestCa::new("root new"));
    let bundle = [&old, &new];
    let server = old.credentials(&id("shop", "cart"), &[], &bundle);
    for issuer in [&old, &new] {
        let client = issuer.credentials(&id("shop", "web"), &[], &bundle);
        let out = handshake(
            server_config(&server).unwrap(),
            client_config(&client, id("shop", "cart")).unwrap(),
            "cart.shop",
        )
        .await;
        assert_eq!(out.server.unwrap(), id("shop", "web"));
        assert_eq!(out.client.unwrap().0, id("shop", "cart"));
    }
    // And a client trusting both accepts a server from the new root.
    let server = new.credentials(&id("shop", "cart"), &[], &bundle);
    let client = old.credentials(&id("shop", "web"), &[], &bundle);
    let out = handshake(
        server_config(&server).unwrap(),
        client_config(&client, id("shop", "cart")).unwrap(),
        "cart.shop",
    )
    .await;
    assert_eq!(out.client.unwrap().0, id("shop", "cart"));
}

/// A fake identity service: signs CSRs with a test CA for one token, failing
/// the calls whose (0-based) numbers are in `fail`.
struct FakeIdentity {
    ca: TestCa,
    token: String,
    age: Duration,
    lifetime: Duration,
    fail: HashSet<usize>,
    calls: Arc<AtomicUsize>,
}

#[tonic::async_trait]
impl Identity for FakeIdentity {
    async fn certify(&self, request: Request<CertifyRequest>) -> Result<Response<CertifyResponse>, Status> {
        let call = self.calls.fetch_add(1, Ordering::SeqCst);
        let req = request.into_inner();
        if req.token != self.token {
            return Err(Status::permission_denied("bad token"));
        }
        if self.fail.contains(&call) {
            return Err(Status::unavailable("CA is down"));
        }
        let csr = CertificateSigningRequestParams::from_der(&req.certificate_signing_request.into())
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let uri = SanType::URI(req.identity.clone().try_into().unwrap());
        assert_eq!(csr.params.subject_alt_names, vec![uri], "CSR must ask for the requested identity");
        let leaf = self.ca.sign(csr.params.clone(), &csr.public_key, self.age, self.lifetime);
        let valid_until = SystemTime::now() - self.age + self.lifetime;
        let secs = valid_until.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
        Ok(Response::new(CertifyResponse {
            leaf_certificate: leaf.to_vec(),
            intermediate_certificates: vec![],
            trust_bundle: vec![self.ca.root.to_vec()],
            valid_until: Some(Timestamp { seconds: secs as i64, nanos: 0 }),
        }))
    }
}

/// Serves `fake` on 127.0.0.1:0 and returns a certifier for shop/web pointed at it.
async fn certifier_against(fake: FakeIdentity, token: &str) -> Certifier {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(IdentityServer::new(fake))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap().connect_lazy();
    Certifier::new(channel, id("shop", "web"), TokenSource::Static(token.to_owned()))
}

fn fake(age: Duration, lifetime: Duration, fail: &[usize]) -> (FakeIdentity, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let fake = FakeIdentity {
        ca: TestCa::new("weft root"),
        token: "secret".into(),
        age,
        lifetime,
        fail: fail.iter().copied().collect(),
        calls: calls.clone(),
    };
    (fake, calls)
}

#[tokio::test]
async fn certify_obtains_usable_credentials_for_a_locally_made_key() {
    let (fake, calls) = fake(Duration::ZERO, DAY, &[]);
    let mut certifier = certifier_against(fake, "secret").await;
    let creds = certifier.certify().await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(creds.identity(), &id("shop", "web"));
    assert_eq!(creds.trust_bundle().len(), 1);
    let life = creds.not_after().duration_since(creds.not_before()).unwrap();
    assert_eq!(creds.renew_at(), creds.not_before() + life * 7 / 10);
    // The credentials work on both ends of a handshake.
    let out = handshake(
        server_config(&creds).unwrap(),
        client_config(&creds, id("shop", "web")).unwrap(),
        "web.shop",
    )
    .await;
    assert_eq!(out.server.unwrap(), id("shop", "web"));
}

#[tokio::test]
async fn certify_with_a_wrong_token_is_refused() {
    let (fake, _) = fake(Duration::ZERO, DAY, &[]);
    let mut certifier = certifier_against(fake, "guess").await;
    match certifier.certify().await {
        Err(TlsError::Certify(status)) => assert_eq!(status.code(), tonic::Code::PermissionDenied),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn renews_at_seventy_percent_and_keeps_the_old_certificate_while_renewal_fails() {
    // 10 s certificates issued 6.5 s ago: renewal is due 0.5 s after issue.
    let (fake, calls) = fake(Duration::from_millis(6_500), Duration::from_secs(10), &[1]);
    let certifier = certifier_against(fake, "secret").await;
    let (mut rx, task) = certifier.start().await.unwrap();
    let first = rx.borrow_and_update().clone();

    // The second call (the first renewal) fails; nothing new is published.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while calls.load(Ordering::SeqCst) < 2 {
        assert!(tokio::time::Instant::now() < deadline, "no renewal attempt");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!rx.has_changed().unwrap(), "a failed renewal replaced the credentials");
    assert!(Arc::ptr_eq(&first, &rx.borrow()));

    // The retry succeeds and publishes a new leaf for the same identity.
    tokio::time::timeout(PATIENCE, rx.changed()).await.unwrap().unwrap();
    let renewed = rx.borrow().clone();
    assert!(calls.load(Ordering::SeqCst) >= 3);
    assert_eq!(renewed.identity(), first.identity());
    assert_ne!(renewed.chain()[0], first.chain()[0]);

    drop(rx);
    tokio::time::timeout(PATIENCE, task).await.unwrap().unwrap();
}
