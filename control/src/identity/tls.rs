//! The control plane's own TLS: its serving certificate (issued by the mesh CA, renewed at 70 %
//! of its life), the rustls server config of the xDS port (client certificate optional, checked
//! against the trust bundle), and the accept loop that turns TCP connections into TLS streams
//! for tonic without letting one failed handshake stop it.

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

/// The serving certificate in use, swapped on renewal.
#[derive(Debug)]
struct Current {
    key: Arc<CertifiedKey>,
    info: CertInfo,
    renew_at: SystemTime,
}

/// The control plane's serving identity: issues and renews its certificate from the CA and
/// hands rustls whichever is current.
#[derive(Debug)]
pub struct ControlTls {
    ca: Arc<CertificateAuthority>,
    identity: SpiffeId,
    ips: Vec<IpAddr>,
    lifetime: Duration,
    current: RwLock<Current>,
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
        let current = issue(&ca, &identity, &ips, lifetime)?;
        Ok(Self { ca, identity, ips, lifetime, current: RwLock::new(current) })
    }

    /// The control plane's SPIFFE ID.
    pub fn identity(&self) -> &SpiffeId {
        &self.identity
    }

    /// The certificate being served.
    pub fn certificate(&self) -> CertInfo {
        self.current.read().unwrap_or_else(PoisonError::into_inner).info.clone()
    }

    /// When the current certificate is due for renewal (70 % of its life).
    pub fn renew_at(&self) -> SystemTime {
        self.current.read().unwrap_or_else(PoisonError::into_inner).renew_at
    }

    /// Issues a fresh certificate; new handshakes use it at once.
    pub fn renew(&self) -> Result<(), TlsSetupError> {
        let next = issue(&self.ca, &self.identity, &self.ips, self.lifetime)?;
        tracing::info!(serial = %next.info.serial, not_after = next.info.not_after, "renewed the control plane's certificate");
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = next;
        Ok(())
    }

    /// Renews at 70 % of each certificate's life (retrying every 30 s on failure) until `stop`.
    pub async fn renew_until(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        loop {
            let wait = self.renew_at().duration_since(SystemTime::now()).unwrap_or_default();
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            while let Err(e) = self.renew() {
                tracing::error!(error = %e, "renewing the control plane's certificate failed; retrying");
                tokio::select! {
                    () = tokio::time::sleep(RENEW_RETRY) => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
            }
        }
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
            .with_cert_resolver(Arc::new(Resolver(self.clone())));
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(config))
    }
}

fn issue(
    ca: &CertificateAuthority,
    identity: &SpiffeId,
    ips: &[IpAddr],
    lifetime: Duration,
) -> Result<Current, TlsSetupError> {
    let (issued, key) = ca.issue_server_cert(identity, &CONTROL_DNS_NAMES, ips, lifetime)?;
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
        renew_at: issued.not_before + life.mul_f64(0.7),
    })
}

/// Hands rustls the current certificate for every handshake.
#[derive(Debug)]
struct Resolver(Arc<ControlTls>);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.current.read().unwrap_or_else(PoisonError::into_inner).key.clone())
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
    mut stop: watch::Receiver<bool>,
) -> ReceiverStream<Result<TlsStream<TcpStream>, io::Error>> {
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
                    tracing::warn!(error = %e, "accepting an xDS connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            let ledger = ledger.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => {
                        let _ = tx.send(Ok(tls)).await;
                    }
                    Ok(Err(e)) => {
                        ledger.refused(Refusal::TlsHandshake);
                        tracing::warn!(%peer, error = %e, "TLS handshake on the xDS port failed");
                    }
                    Err(_) => {
                        ledger.refused(Refusal::TlsHandshake);
                        tracing::warn!(%peer, "TLS handshake on the xDS port timed out");
                    }
                }
            });
        }
    });
    ReceiverStream::new(rx)
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
        assert!(any.ips.is_empty());
        assert_eq!(tls.ips, vec![bound.ip()]);
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
