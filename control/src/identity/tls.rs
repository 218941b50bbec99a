//! The control plane's own TLS: its serving certificates (issued by the mesh CA, renewed at 70 %
//! of their life: `ServingCert`, used by the xDS port and the injection webhook), the rustls
//! server config of the xDS port (client certificate optional, checked against the trust
//! bundle), and the accept loop that turns TCP connections into TLS streams without letting one
//! failed handshake stop it.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;

use super::cert::CertInfo;
use super::ledger::{Ledger, Refusal};
use super::{CaError, CertificateAuthority, SpiffeId, SpiffeIdError};

/// The control plane's namespace in its SPIFFE ID.
pub const CONTROL_NAMESPACE: &str = "weft-system";
/// The control plane's service account in its SPIFFE ID.
pub const CONTROL_SERVICE_ACCOUNT: &str = "weft-control";
/// DNS names in the control plane's certificate, besides its SPIFFE ID.
pub const CONTROL_DNS_NAMES: [&str; 2] = ["localhost", "weft-control.weft-system.svc"];

/// How long a client may take to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Retry delay after a failed renewal of the serving certificate.
const RENEW_RETRY: Duration = Duration::from_secs(30);

/// `spiffe://<trust_domain>/ns/weft-system/sa/weft-control`.
pub fn control_identity(trust_domain: &str) -> Result<SpiffeId, SpiffeIdError> {
    SpiffeId::new(trust_domain, CONTROL_NAMESPACE, CONTROL_SERVICE_ACCOUNT)
}

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    /// The CA could not issue the serving certificate.
    #[error("issuing the control plane's certificate: {0}")]
    Ca(#[from] CaError),
    /// rustls refused the certificate, key or trust bundle.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// The client verifier could not be built (e.g. an unusable root).
    #[error("client certificate verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

/// The ring provider, the only one weft builds with.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The control plane's serving identity: a `ServingCert` for its SPIFFE ID, `localhost`, its
/// service name and the xDS address, which rustls asks for the current certificate.
#[derive(Debug)]
pub struct ControlTls {
    ca: Arc<CertificateAuthority>,
    cert: Arc<ServingCert>,
}

impl ControlTls {
    /// Issues the first serving certificate. `bound` is the xDS address: its IP joins the SANs
    /// unless it is unspecified (0.0.0.0 or ::).
    pub fn new(
        ca: Arc<CertificateAuthority>,
        bound: SocketAddr,
        lifetime: Duration,
    ) -> Result<Self, TlsSetupError> {
        let identity = control_identity(ca.trust_domain()).map_err(CaError::TrustDomain)?;
        let ips = if bound.ip().is_unspecified() { Vec::new() } else { vec![bound.ip()] };
        let names = CONTROL_DNS_NAMES.map(String::from).to_vec();
        let cert = ServingCert::new(ca.clone(), identity, names, ips, lifetime, "the control plane")?;
        Ok(Self { ca, cert: Arc::new(cert) })
    }

    /// The control plane's SPIFFE ID.
    pub fn identity(&self) -> &SpiffeId {
        &self.cert.identity
    }

    /// The certificate being served.
    pub fn certificate(&self) -> CertInfo {
        self.cert.current().info.clone()
    }

    /// When the current certificate is due for renewal (70 % of its life).
    pub fn renew_at(&self) -> SystemTime {
        self.cert.renew_at()
    }

    /// The current certificate and key, for the control plane's own client connections
    /// (tap: dialling proxies as the control plane).
    pub fn certified_key(&self) -> Arc<CertifiedKey> {
        self.cert.current().key.clone()
    }

    /// Issues a fresh certificate; new handshakes use it at once.
    pub fn renew(&self) -> Result<(), TlsSetupError> {
        Ok(self.cert.renew()?)
    }

    /// Renews at 70 % of each certificate's life (retrying every 30 s on failure) until `stop`.
    pub async fn renew_until(self: Arc<Self>, stop: watch::Receiver<bool>) {
        self.cert.clone().renew_until(stop).await;
    }

    /// The xDS port's rustls config: this certificate (rotating), client certificates optional
    /// but verified against the CA's trust bundle when sent, ALPN `h2`.
    pub fn server_config(self: &Arc<Self>) -> Result<Arc<ServerConfig>, TlsSetupError> {
        let provider = provider();
        let mut roots = RootCertStore::empty();
        for der in self.ca.trust_bundle() {
            roots.add(CertificateDer::from(der))?;
        }
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .allow_unauthenticated()
            .build()?;
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier)
            .with_cert_resolver(self.cert.clone());
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(config))
    }
}

/// Why a serving certificate could not be issued.
#[derive(Debug, thiserror::Error)]
pub(crate) enum IssueError {
    /// The CA could not issue it.
    #[error(transparent)]
    Ca(#[from] CaError),
    /// rustls refused its key or it is unreadable.
    #[error(transparent)]
    Rustls(#[from] rustls::Error),
}

impl From<IssueError> for TlsSetupError {
    fn from(e: IssueError) -> Self {
        match e {
            IssueError::Ca(e) => Self::Ca(e),
            IssueError::Rustls(e) => Self::Rustls(e),
        }
    }
}

/// A serving certificate from the mesh CA (for a SPIFFE ID, DNS names and IPs), renewed at 70 %
/// of its life. As a rustls [`ResolvesServerCert`] it hands every handshake the current one, so
/// a renewal needs no restart. The xDS port ([`ControlTls`]) and the injection webhook each
/// serve one.
#[derive(Debug)]
pub(crate) struct ServingCert {
    ca: Arc<CertificateAuthority>,
    identity: SpiffeId,
    dns_names: Vec<String>,
    ips: Vec<IpAddr>,
    lifetime: Duration,
    /// Whose certificate it is, for logs ("the control plane").
    owner: &'static str,
    current: RwLock<Arc<Current>>,
}

/// The certificate in use, swapped on renewal.
#[derive(Debug)]
pub(crate) struct Current {
    pub(crate) key: Arc<CertifiedKey>,
    pub(crate) info: CertInfo,
    pub(crate) not_after: SystemTime,
    pub(crate) renew_at: SystemTime,
}

impl ServingCert {
    /// Issues the first certificate, valid for `lifetime` (capped at the CA's expiry).
    pub(crate) fn new(
        ca: Arc<CertificateAuthority>,
        identity: SpiffeId,
        dns_names: Vec<String>,
        ips: Vec<IpAddr>,
        lifetime: Duration,
        owner: &'static str,
    ) -> Result<Self, IssueError> {
        let current = issue(&ca, &identity, &dns_names, &ips, lifetime)?;
        Ok(Self { ca, identity, dns_names, ips, lifetime, owner, current: RwLock::new(Arc::new(current)) })
    }

    /// The certificate being served.
    pub(crate) fn current(&self) -> Arc<Current> {
        self.current.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// When the current certificate is due for renewal.
    pub(crate) fn renew_at(&self) -> SystemTime {
        self.current().renew_at
    }

    /// Issues a fresh certificate; new handshakes use it at once.
    pub(crate) fn renew(&self) -> Result<(), IssueError> {
        let next = issue(&self.ca, &self.identity, &self.dns_names, &self.ips, self.lifetime)?;
        tracing::info!(
            serial = %next.info.serial,
            not_after = next.info.not_after,
            "renewed {}'s certificate",
            self.owner
        );
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(next);
        Ok(())
    }

    /// Renews at 70 % of each certificate's life (retrying every 30 s on failure) until `stop`.
    pub(crate) async fn renew_until(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        /// Sleeps for `wait`; false if `stop` comes first.
        async fn sleep(wait: Duration, stop: &mut watch::Receiver<bool>) -> bool {
            tokio::select! {
                () = tokio::time::sleep(wait) => true,
                _ = stop.wait_for(|s| *s) => false,
            }
        }
        loop {
            let wait = self.renew_at().duration_since(SystemTime::now()).unwrap_or_default();
            if !sleep(wait, &mut stop).await {
                return;
            }
            while let Err(e) = self.renew() {
                tracing::error!(error = %e, "renewing {}'s certificate failed; retrying", self.owner);
                if !sleep(RENEW_RETRY, &mut stop).await {
                    return;
                }
            }
        }
    }
}

/// Issues a certificate for `identity`, `dns_names` and `ips` from `ca`, as rustls serves it.
fn issue(
    ca: &CertificateAuthority,
    identity: &SpiffeId,
    dns_names: &[String],
    ips: &[IpAddr],
    lifetime: Duration,
) -> Result<Current, IssueError> {
    let names: Vec<&str> = dns_names.iter().map(String::as_str).collect();
    let (issued, key) = ca.issue_server_cert(identity, &names, ips, lifetime)?;
    let info = CertInfo::from_der(&issued.leaf_der)
        .map_err(|e| rustls::Error::General(format!("issued an unreadable certificate: {e}")))?;
    let mut chain = vec![CertificateDer::from(issued.leaf_der)];
    chain.extend(issued.chain.into_iter().map(CertificateDer::from));
    let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let signing_key = provider().key_provider.load_private_key(key_der)?;
    let life = issued.not_after.duration_since(issued.not_before).unwrap_or_default();
    Ok(Current {
        key: Arc::new(CertifiedKey::new(chain, signing_key)),
        info,
        not_after: issued.not_after,
        renew_at: issued.not_before + life.mul_f64(0.7),
    })
}

impl ResolvesServerCert for ServingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current().key.clone())
    }
}

/// Accepts TCP connections on `listener` and completes their TLS handshakes concurrently,
/// yielding each established stream. A failed or slow handshake is logged and counted
/// (`weft_identity_refused_total{reason="tls_handshake"}`), never fatal; the loop ends at `stop`
/// or when the returned stream is dropped.
pub fn accept_tls(
    listener: TcpListener,
    config: Arc<ServerConfig>,
    ledger: Arc<Ledger>,
    stop: watch::Receiver<bool>,
) -> ReceiverStream<Result<TlsStream<TcpStream>, io::Error>> {
    let refused = move || ledger.refused(Refusal::TlsHandshake);
    ReceiverStream::new(spawn_tls_accept(listener, config, stop, "the xDS port", refused, |tls, _| Ok(tls)))
}

/// Accepts TCP connections on `listener` (`port` names it in logs) and completes their TLS
/// handshakes concurrently, each within 10 s, sending every established stream as `wrap` makes
/// it of the stream and the peer's address. A failed accept (out of file descriptors and the
/// like) backs off and goes on; a failed or slow handshake is logged and reported to
/// `refused`, never fatal. The loop ends at `stop` or when the receiver is dropped.
pub(crate) fn spawn_tls_accept<T: Send + 'static>(
    listener: TcpListener,
    config: Arc<ServerConfig>,
    mut stop: watch::Receiver<bool>,
    port: &'static str,
    refused: impl Fn() + Clone + Send + 'static,
    wrap: fn(TlsStream<TcpStream>, SocketAddr) -> T,
) -> mpsc::Receiver<T> {
    let (tx, rx) = mpsc::channel(64);
    let acceptor = TlsAcceptor::from(config);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = tx.closed() => return,
                _ = stop.wait_for(|s| *s) => return,
            };
            let (tcp, peer) = match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    tracing::warn!(error = %e, "accepting a connection on {port} failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            let refused = refused.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => {
                        let _ = tx.send(wrap(tls, peer)).await;
                    }
                    Ok(Err(e)) => {
                        refused();
                        tracing::warn!(%peer, error = %e, "TLS handshake on {port} failed");
                    }
                    Err(_) => {
                        refused();
                        tracing::warn!(%peer, "TLS handshake on {port} timed out");
                    }
                }
            });
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::identity::CaConfig;

    #[test]
    fn serving_certificate_names_the_control_plane_and_renews_at_70_percent() {
        let ca = Arc::new(CertificateAuthority::generate(CaConfig::default()).unwrap());
        let bound: SocketAddr = "127.0.0.1:8086".parse().unwrap();
        let tls = ControlTls::new(ca.clone(), bound, Duration::from_secs(600)).unwrap();
        assert_eq!(tls.identity().to_string(), "spiffe://cluster.local/ns/weft-system/sa/weft-control");
        let first = tls.certificate();
        assert_eq!(first.identity.as_deref(), Some("spiffe://cluster.local/ns/weft-system/sa/weft-control"));
        // 600 s plus the minute of backdating: renewal 70 % into those 660 s.
        assert_eq!(first.lifetime_seconds(), 660);
        let renew_at = crate::identity::cert::unix_seconds(tls.renew_at());
        assert_eq!(renew_at, first.not_before + 462);

        tls.renew().unwrap();
        let second = tls.certificate();
        assert_ne!(second.serial, first.serial);
        assert!(tls.renew_at() >= SystemTime::UNIX_EPOCH + Duration::from_secs(renew_at));

        // An unspecified bind address adds no IP SAN.
        let any = ControlTls::new(ca, "0.0.0.0:8086".parse().unwrap(), Duration::from_secs(600)).unwrap();
        assert!(any.cert.ips.is_empty());
        assert_eq!(tls.cert.ips, vec![bound.ip()]);
    }

    #[test]
    fn server_config_offers_h2() {
        let ca = Arc::new(CertificateAuthority::generate(CaConfig::default()).unwrap());
        let tls =
            Arc::new(ControlTls::new(ca, "127.0.0.1:0".parse().unwrap(), Duration::from_secs(600)).unwrap());
        let config = tls.server_config().unwrap();
        assert_eq!(config.alpn_protocols, vec![b"h2".to_vec()]);
    }
}
