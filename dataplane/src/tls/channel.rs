//! TLS channels from a workload to the control plane.
//!
//! The control plane serves its identity service and xDS on one TLS port.
//! A workload dials it with [`ControlPlaneTls`]: the server must chain to the
//! trust anchors the operator gave (`--ca-file`, plus the trust bundle of the
//! workload's latest credentials, so a CA rotation needs no restart) and carry
//! the control plane's SPIFFE ID; the host name plays no part. Certification
//! goes without a client certificate (the token proves who the workload is);
//! xDS then presents the workload certificate, read afresh from a `watch` at
//! every handshake, so a renewal applies to the next (re)connection.
//!
//! The TLS runs inside a tonic connector ([`ControlConnector`]), so the
//! endpoint URI stays `http://host:port` and tonic's own TLS is never used.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use hyper_util::rt::TokioIo;
use rustls::client::ResolvesClientCert;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, SignatureScheme};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tonic::codegen::http::Uri;
use tonic::transport::{Channel, Endpoint};

use super::SpiffeServerVerifier;
use super::config::crypto_provider;
use super::{Credentials, SpiffeId, TlsError};

/// The TLS server name sent to the control plane when it is dialled by IP
/// address (its certificate carries this DNS name).
pub const CONTROL_SNI: &str = "weft-control.weft-system.svc";

/// The control plane's namespace and service account.
const CONTROL_NAMESPACE: &str = "weft-system";
const CONTROL_SERVICE_ACCOUNT: &str = "weft-control";

/// The control plane's default xDS port, for an address without one.
const DEFAULT_XDS_PORT: u16 = 8086;

/// The latest workload credentials; `None` until the first certificate.
pub type CredentialsWatch = watch::Receiver<Option<Arc<Credentials>>>;

/// The control plane's identity in `trust_domain`:
/// `spiffe://<td>/ns/weft-system/sa/weft-control`.
pub fn control_identity(trust_domain: &str) -> Result<SpiffeId, TlsError> {
    Ok(SpiffeId::new(trust_domain, CONTROL_NAMESPACE, CONTROL_SERVICE_ACCOUNT)?)
}

/// Reads every `CERTIFICATE` block of a PEM file (other blocks are
/// ignored). Fails if the file is unreadable or holds no certificate.
pub fn read_pem_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bad = |reason: String| TlsError::CaFile { path: path.to_owned(), reason };
    let text = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    let certs = parse_pem_certificates(&text).map_err(bad)?;
    if certs.is_empty() {
        return Err(bad("no CERTIFICATE block".into()));
    }
    Ok(certs)
}

/// The `CERTIFICATE` blocks of PEM text, as DER.
pub fn parse_pem_certificates(pem_text: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let blocks = pem::parse_many(pem_text).map_err(|e| e.to_string())?;
    Ok(blocks
        .into_iter()
        .filter(|b| b.tag() == "CERTIFICATE")
        .map(|b| CertificateDer::from(b.into_contents()))
        .collect())
}

/// How to reach the control plane over TLS. Cheap to clone.
#[derive(Clone)]
pub struct ControlPlaneTls {
    anchors: Arc<Vec<CertificateDer<'static>>>,
    expected: SpiffeId,
    credentials: Option<CredentialsWatch>,
}

impl std::fmt::Debug for ControlPlaneTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlaneTls")
            .field("anchors", &self.anchors.len())
            .field("expected", &self.expected)
            .field("client_certificate", &self.credentials.is_some())
            .finish()
    }
}

impl ControlPlaneTls {
    /// Trusts a server chaining to `anchors` whose certificate names
    /// `expected`; presents no client certificate.
    pub fn new(anchors: Vec<CertificateDer<'static>>, expected: SpiffeId) -> Self {
        Self { anchors: Arc::new(anchors), expected, credentials: None }
    }

    /// The same, presenting the latest of `credentials` as the client
    /// certificate (none while it holds `None`) and also trusting their
    /// trust bundle.
    pub fn with_client_credentials(mut self, credentials: CredentialsWatch) -> Self {
        self.credentials = Some(credentials);
        self
    }

    /// The control plane identity the server must present.
    pub fn expected(&self) -> &SpiffeId {
        &self.expected
    }

    /// A rustls client config for one connection: the anchors as of now,
    /// ALPN `h2`, and the rotating client certificate if any.
    pub fn client_config(&self) -> Result<Arc<rustls::ClientConfig>, TlsError> {
        let provider = crypto_provider();
        let mut roots = RootCertStore::empty();
        for anchor in self.anchors.iter() {
            roots.add(anchor.clone())?;
        }
        if let Some(creds) = self.credentials.as_ref().and_then(|c| c.borrow().clone()) {
            for anchor in creds.trust_bundle() {
                // A bundle root the operator's file already has is simply skipped.
                let _ = roots.add(anchor.clone());
            }
        }
        let verifier = SpiffeServerVerifier::new(Arc::new(roots), vec![self.expected.clone()], &provider);
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .dangerous() // The verifier checks the chain; only the name check is SPIFFE's.
            .with_custom_certificate_verifier(Arc::new(verifier));
        let mut config = match &self.credentials {
            Some(creds) => {
                builder.with_client_cert_resolver(Arc::new(RotatingClientCert::new(creds.clone())))
            }
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(config))
    }

    /// The tonic connector that does this TLS.
    pub fn connector(&self) -> ControlConnector {
        ControlConnector { tls: self.clone() }
    }

    /// Connects to `endpoint` (an `http://host:port` URI) now.
    pub async fn connect(&self, endpoint: &Endpoint) -> Result<Channel, tonic::transport::Error> {
        endpoint.connect_with_connector(self.connector()).await
    }

    /// A channel to `endpoint` that connects on first use and reconnects
    /// by itself.
    pub fn connect_lazy(&self, endpoint: &Endpoint) -> Channel {
        endpoint.connect_with_connector_lazy(self.connector())
    }
}

/// An `http://host:port` endpoint for a control plane address given as
/// `host:port` or as a URI (an `https://` scheme is rewritten: the TLS is
/// the connector's, never tonic's), with the keepalives weft uses.
pub fn control_endpoint(server: &str) -> Result<Endpoint, tonic::transport::Error> {
    let authority = server.split_once("://").map_or(server, |(_, rest)| rest).trim_end_matches('/');
    Ok(Endpoint::from_shared(format!("http://{authority}"))?
        .connect_timeout(Duration::from_secs(5))
        // Notice a control plane that vanished without closing the connection.
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(5))
        .keep_alive_while_idle(true))
}

/// A tonic connector: TCP, then TLS as [`ControlPlaneTls`] says.
#[derive(Debug, Clone)]
pub struct ControlConnector {
    tls: ControlPlaneTls,
}

type ConnectFuture = Pin<Box<dyn Future<Output = std::io::Result<TokioIo<TlsStream<TcpStream>>>> + Send>>;

impl tonic::codegen::Service<Uri> for ControlConnector {
    type Response = TokioIo<TlsStream<TcpStream>>;
    type Error = std::io::Error;
    type Future = ConnectFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let tls = self.tls.clone();
        Box::pin(async move {
            let host = uri
                .host()
                .ok_or_else(|| std::io::Error::other(format!("{uri} has no host")))?
                .trim_matches(['[', ']'])
                .to_owned();
            let port = uri.port_u16().unwrap_or(DEFAULT_XDS_PORT);
            let config = tls.client_config().map_err(std::io::Error::other)?;
            let tcp = TcpStream::connect((host.as_str(), port)).await?;
            tcp.set_nodelay(true)?;
            // By IP: send the control plane's service name, which its
            // certificate carries; by name: that name.
            let name = if host.parse::<std::net::IpAddr>().is_ok() { CONTROL_SNI.to_owned() } else { host };
            let name = ServerName::try_from(name).map_err(std::io::Error::other)?;
            let stream = TlsConnector::from(config).connect(name, tcp).await?;
            Ok(TokioIo::new(stream))
        })
    }
}

/// Presents the latest credentials of a `watch` as the client certificate.
/// The rustls key is built once per credentials value.
#[derive(Debug)]
struct RotatingClientCert {
    credentials: CredentialsWatch,
    /// The credentials last turned into a rustls key, and that key.
    cached: ArcSwapOption<(Arc<Credentials>, Arc<CertifiedKey>)>,
}

impl RotatingClientCert {
    fn new(credentials: CredentialsWatch) -> Self {
        Self { credentials, cached: ArcSwapOption::empty() }
    }

    fn current(&self) -> Option<Arc<CertifiedKey>> {
        let creds = self.credentials.borrow().clone()?;
        if let Some(cached) = self.cached.load().as_ref()
            && Arc::ptr_eq(&cached.0, &creds)
        {
            return Some(cached.1.clone());
        }
        let key = match CertifiedKey::from_der(
            creds.chain().to_vec(),
            creds.private_key(),
            &crypto_provider(),
        ) {
            Ok(key) => Arc::new(key),
            Err(error) => {
                tracing::error!(%error, "the workload credentials cannot be used as a client certificate");
                return None;
            }
        };
        self.cached.store(Some(Arc::new((creds, key.clone()))));
        Some(key)
    }
}

impl ResolvesClientCert for RotatingClientCert {
    fn resolve(&self, _root_hints: &[&[u8]], sigschemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        let key = self.current()?;
        // The server must accept a scheme the key can sign with.
        key.key.choose_scheme(sigschemes).is_some().then_some(key)
    }

    fn has_certs(&self) -> bool {
        self.credentials.borrow().is_some()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn control_identity_is_weft_control_in_weft_system() {
        assert_eq!(
            control_identity("example.org").unwrap().to_string(),
            "spiffe://example.org/ns/weft-system/sa/weft-control"
        );
        assert!(control_identity("Bad Domain").is_err());
    }

    #[test]
    fn endpoints_are_plain_http_uris_whatever_the_scheme_given() {
        for given in ["127.0.0.1:8086", "http://127.0.0.1:8086", "https://127.0.0.1:8086/"] {
            assert_eq!(control_endpoint(given).unwrap().uri().to_string(), "http://127.0.0.1:8086/");
        }
    }

    #[test]
    fn pem_parsing_keeps_only_certificates() {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["a.test".into()]).unwrap().self_signed(&key).unwrap();
        let text = format!("{}{}{}", key.serialize_pem(), cert.pem(), cert.pem());
        let certs = parse_pem_certificates(text.as_bytes()).unwrap();
        assert_eq!(certs.len(), 2);
        assert_eq!(certs[0].as_ref(), cert.der().as_ref());
        assert!(parse_pem_certificates(b"").unwrap().is_empty());
    }
}
