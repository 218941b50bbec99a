//! Workload identity in tests: the mesh's CA directory and tokens as a proxy is handed
//! them, certificates obtained the way a proxy obtains them (a CSR to the control
//! plane's identity service, proved by the workload's token), certificates from a CA
//! the mesh does not trust, and TLS clients that present any of them.
//!
//! A [`LocalMesh`](crate::mesh::LocalMesh) with mTLS (the default) gives every proxy a
//! [`MeshIdentity`]: the CA directory the control plane keeps its root in, and the trust
//! domain. From it a proxy gets `--ca-file <ca-dir>/root-cert.pem` and a `--token-file`
//! holding `weft token`'s answer for its namespace and ServiceAccount.

use std::fs;
use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tonic::transport::{Channel, Endpoint, Uri};
use weft_proxy::tls::SpiffeServerVerifier;
/// The SPIFFE ID in a certificate's one URI SAN (weft-proxy's own reading).
pub use weft_proxy::tls::spiffe_id_of;
use weft_xds_protos::identity::CertifyRequest;
use weft_xds_protos::identity::identity_client::IdentityClient;
pub use weft_xds_protos::spiffe::SpiffeId;

/// The root certificate's file in the CA directory.
pub const ROOT_CERT_FILE: &str = "root-cert.pem";
/// The control plane's namespace in its SPIFFE ID.
pub const CONTROL_NAMESPACE: &str = "weft-system";
/// The control plane's ServiceAccount in its SPIFFE ID.
pub const CONTROL_SERVICE_ACCOUNT: &str = "weft-control";
/// A DNS name the control plane's serving certificate carries (the SNI clients send).
pub const CONTROL_SERVER_NAME: &str = "weft-control.weft-system.svc";
/// The default trust domain.
pub const TRUST_DOMAIN: &str = "cluster.local";

/// How long a TLS handshake in a test may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What a meshed proxy is given to prove who it is: the mesh's CA directory (its root
/// certificate is the proxy's `--ca-file`) and the trust domain; its token is derived
/// from the CA directory's token key for the proxy's namespace and ServiceAccount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeshIdentity {
    /// The control plane's `--ca-dir`.
    pub ca_dir: PathBuf,
    /// The SPIFFE trust domain (`--trust-domain`).
    pub trust_domain: String,
}

impl MeshIdentity {
    /// The root certificate (PEM): trust anchor for the control plane and the first bundle.
    pub fn ca_file(&self) -> PathBuf {
        self.ca_dir.join(ROOT_CERT_FILE)
    }

    /// `spiffe://<trust domain>/ns/<namespace>/sa/<service account>`.
    pub fn spiffe_id(&self, namespace: &str, service_account: &str) -> anyhow::Result<SpiffeId> {
        Ok(SpiffeId::new(self.trust_domain.as_str(), namespace, service_account)?)
    }

    /// The control plane's own identity, which proxies check on the xDS connection.
    pub fn control_identity(&self) -> anyhow::Result<SpiffeId> {
        self.spiffe_id(CONTROL_NAMESPACE, CONTROL_SERVICE_ACCOUNT)
    }

    /// The workload token `weft token` prints for `namespace`/`service_account`.
    pub fn token(&self, namespace: &str, service_account: &str) -> anyhow::Result<String> {
        let id = self.spiffe_id(namespace, service_account)?;
        weft_control::identity::token::token_for(&self.ca_dir, &id)
            .map_err(|e| anyhow::anyhow!("token for {id} from {}: {e}", self.ca_dir.display()))
    }

    /// Writes the workload's token to `<dir>/token` (mode 0600) and returns the path,
    /// for `--token-file`.
    pub fn write_token_file(
        &self,
        dir: &Path,
        namespace: &str,
        service_account: &str,
    ) -> anyhow::Result<PathBuf> {
        let path = dir.join("token");
        let token = self.token(namespace, service_account)?;
        let mut file = fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path)?;
        file.write_all(token.as_bytes())?;
        Ok(path)
    }

    /// The root certificate, DER.
    pub fn root(&self) -> anyhow::Result<CertificateDer<'static>> {
        let pem = fs::read_to_string(self.ca_file())
            .map_err(|e| anyhow::anyhow!("reading {}: {e}", self.ca_file().display()))?;
        pem_certificates(&pem)?
            .into_iter()
            .next()
            .ok_or_else(|| anyhow::anyhow!("{} holds no certificate", self.ca_file().display()))
    }

    /// A workload certificate for `namespace`/`service_account`, obtained as a proxy
    /// obtains one: a fresh key, a CSR, and the workload's token, sent to the identity
    /// service at `xds_addr` over TLS (the control plane verified as itself).
    pub async fn certify(
        &self,
        xds_addr: SocketAddr,
        namespace: &str,
        service_account: &str,
    ) -> anyhow::Result<LeafCert> {
        let id = self.spiffe_id(namespace, service_account)?;
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.subject_alt_names = vec![SanType::URI(id.to_string().try_into()?)];
        let csr = params.serialize_request(&key)?;
        let roots = vec![self.root()?];
        let config = client_config(None, &roots, Some(self.control_identity()?), &[b"h2"])?;
        let channel = tls_channel(xds_addr, CONTROL_SERVER_NAME, config).await?;
        let request = CertifyRequest {
            identity: id.to_string(),
            token: self.token(namespace, service_account)?,
            certificate_signing_request: csr.der().to_vec(),
        };
        let resp = tokio::time::timeout(HANDSHAKE_TIMEOUT, IdentityClient::new(channel).certify(request))
            .await
            .map_err(|_| anyhow::anyhow!("Certify for {id}: no answer within {HANDSHAKE_TIMEOUT:?}"))?
            .map_err(|s| anyhow::anyhow!("Certify for {id}: {s}"))?
            .into_inner();
        let mut chain = vec![CertificateDer::from(resp.leaf_certificate)];
        chain.extend(resp.intermediate_certificates.into_iter().map(CertificateDer::from));
        Ok(LeafCert { id, chain, key: PrivatePkcs8KeyDer::from(key.serialize_der()) })
    }
}

/// A workload certificate with its key.
#[derive(Debug)]
pub struct LeafCert {
    /// The identity it carries.
    pub id: SpiffeId,
    /// Leaf first, then intermediates.
    pub chain: Vec<CertificateDer<'static>>,
    key: PrivatePkcs8KeyDer<'static>,
}

impl LeafCert {
    /// The private key.
    pub fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(self.key.clone_key())
    }
}

/// A CA of the test's own, which the mesh does not trust: its certificates carry mesh
/// identities but must be refused.
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    root: CertificateDer<'static>,
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCa").finish_non_exhaustive()
    }
}

impl TestCa {
    /// A fresh self-signed root named `name`.
    pub fn generate(name: &str) -> anyhow::Result<TestCa> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
        let cert = params.self_signed(&key)?;
        Ok(TestCa { root: cert.der().clone(), issuer: Issuer::new(params, key) })
    }

    /// Its root certificate.
    pub fn root(&self) -> CertificateDer<'static> {
        self.root.clone()
    }

    /// An X.509-SVID for `id`, shaped like the mesh's own (one URI SAN, client and
    /// server auth), valid for an hour.
    pub fn issue(&self, id: &SpiffeId) -> anyhow::Result<LeafCert> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.subject_alt_names = vec![SanType::URI(id.to_string().try_into()?)];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages =
            vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        let now = time_now();
        params.not_before = now - Duration::from_secs(60);
        params.not_after = now + Duration::from_secs(3600);
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(LeafCert {
            id: id.clone(),
            chain: vec![cert.der().clone()],
            key: PrivatePkcs8KeyDer::from(key.serialize_der()),
        })
    }
}

fn time_now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}

/// The certificates in a PEM text.
pub fn pem_certificates(pem: &str) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let mut out = Vec::new();
    for block in x509_parser::pem::Pem::iter_from_buffer(pem.as_bytes()) {
        let block = block.map_err(|e| anyhow::anyhow!("bad PEM: {e}"))?;
        if block.label == "CERTIFICATE" {
            out.push(CertificateDer::from(block.contents));
        }
    }
    Ok(out)
}

/// A TLS client config on ring: presents `client` (if any), accepts a server whose chain
/// ends at one of `roots` and, if `expect` is given, whose certificate names that SPIFFE
/// ID (the server name plays no part, as between mesh proxies); offers `alpn`.
pub fn client_config(
    client: Option<&LeafCert>,
    roots: &[CertificateDer<'static>],
    expect: Option<SpiffeId>,
    alpn: &[&[u8]],
) -> anyhow::Result<Arc<ClientConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut store = RootCertStore::empty();
    for root in roots {
        store.add(root.clone())?;
    }
    let verifier = SpiffeServerVerifier::new(Arc::new(store), expect.into_iter().collect(), &provider);
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier));
    let mut config = match client {
        Some(c) => builder.with_client_auth_cert(c.chain.clone(), c.key())?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// TCP to `addr`, then a TLS handshake with SNI `server_name`, within 10 s.
pub async fn tls_connect(
    addr: SocketAddr,
    server_name: &str,
    config: Arc<ClientConfig>,
) -> anyhow::Result<TlsStream<TcpStream>> {
    let name = ServerName::try_from(server_name.to_owned())?;
    let handshake = async {
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        anyhow::Ok(TlsConnector::from(config).connect(name, tcp).await?)
    };
    tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake)
        .await
        .map_err(|_| anyhow::anyhow!("TLS handshake with {addr} took over {HANDSHAKE_TIMEOUT:?}"))?
}

/// A gRPC channel to `addr` over TLS (for the control plane: xDS and identity).
pub async fn tls_channel(
    addr: SocketAddr,
    server_name: &str,
    config: Arc<ClientConfig>,
) -> anyhow::Result<Channel> {
    let connector = TlsDialer { addr, server_name: server_name.to_owned(), config };
    Endpoint::from_shared(format!("http://{addr}"))?
        .connect_timeout(HANDSHAKE_TIMEOUT)
        .connect_with_connector(connector)
        .await
        .map_err(|e| anyhow::anyhow!("connecting over TLS to {addr}: {e:?}"))
}

/// Dials one address over TLS whatever URI tonic asks for.
#[derive(Debug, Clone)]
struct TlsDialer {
    addr: SocketAddr,
    server_name: String,
    config: Arc<ClientConfig>,
}

type DialFuture =
    Pin<Box<dyn std::future::Future<Output = anyhow::Result<TokioIo<TlsStream<TcpStream>>>> + Send>>;

impl tonic::codegen::Service<Uri> for TlsDialer {
    type Response = TokioIo<TlsStream<TcpStream>>;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    type Future = Pin<Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: Uri) -> Self::Future {
        let this = self.clone();
        let dial: DialFuture = Box::pin(async move {
            let stream = tls_connect(this.addr, &this.server_name, this.config).await?;
            Ok(TokioIo::new(stream))
        });
        Box::pin(async move { dial.await.map_err(|e| e.into_boxed_dyn_error()) })
    }
}

/// Makes `dir` (and parents) with mode 0700, as a socket or key directory must be.
pub fn private_dir(dir: &Path) -> anyhow::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| anyhow::anyhow!("creating {}: {e}", dir.display()))
}
