//! rustls configs for mesh traffic, built from [`Credentials`].
//!
//! Both sides trust exactly the credentials' trust bundle. The server demands
//! a client certificate; the client checks that the server's certificate
//! chains to the bundle and carries the SPIFFE ID the caller expects (from
//! EDS). The TLS server name (SNI) plays no part in identity.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, OtherError, RootCertStore, ServerConfig,
    SignatureScheme,
};

use super::{Credentials, SpiffeId, TlsError, spiffe_id_of};

/// ALPN protocols offered and accepted, in order of preference.
pub const ALPN_PROTOCOLS: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// The ring crypto provider every weft TLS config uses.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A server config that presents `creds` and requires a client certificate
/// chaining to `creds`' trust bundle. Authorization of the client's identity
/// is left to the caller ([`peer_identity`]).
pub fn server_config(creds: &Credentials) -> Result<Arc<ServerConfig>, TlsError> {
    server_config_for(creds, true, &alpn())
}

/// A server config that presents `creds`, offers `alpn` (in order of
/// preference) and verifies client certificates against `creds`' trust
/// bundle: demanded when `require_client_certificate`, else optional (a
/// client that presents one must still present a valid one).
pub fn server_config_for(
    creds: &Credentials,
    require_client_certificate: bool,
    alpn: &[Vec<u8>],
) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = crypto_provider();
    let builder = WebPkiClientVerifier::builder_with_provider(root_store(creds)?, provider.clone());
    let verifier = if require_client_certificate {
        builder.build()?
    } else {
        builder.allow_unauthenticated().build()?
    };
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(creds.chain().to_vec(), creds.private_key())?;
    config.alpn_protocols = alpn.to_vec();
    Ok(Arc::new(config))
}

/// A client config that presents `creds` and accepts only a server whose
/// certificate chains to `creds`' trust bundle and names `expected`.
pub fn client_config(creds: &Credentials, expected: SpiffeId) -> Result<Arc<ClientConfig>, TlsError> {
    client_config_for(creds, std::slice::from_ref(&expected), &alpn())
}

/// A client config that presents `creds`, offers `alpn`, and accepts only a
/// server whose certificate chains to `creds`' trust bundle and names one of
/// `allowed` (any identity when `allowed` is empty: the chain alone decides).
pub fn client_config_for(
    creds: &Credentials,
    allowed: &[SpiffeId],
    alpn: &[Vec<u8>],
) -> Result<Arc<ClientConfig>, TlsError> {
    let provider = crypto_provider();
    let verifier = SpiffeServerVerifier::new(root_store(creds)?, allowed.to_vec(), &provider);
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous() // The custom verifier still verifies the chain; only the name check differs.
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_auth_cert(creds.chain().to_vec(), creds.private_key())?;
    config.alpn_protocols = alpn.to_vec();
    Ok(Arc::new(config))
}

/// The SPIFFE ID of a connection's peer, from its end-entity certificate
/// (`peer_certificates()` of a rustls connection).
pub fn peer_identity(peer_certificates: Option<&[CertificateDer<'_>]>) -> Result<SpiffeId, TlsError> {
    let leaf = peer_certificates.and_then(<[_]>::first).ok_or(TlsError::NoPeerCertificate)?;
    spiffe_id_of(leaf)
}

/// [`ALPN_PROTOCOLS`] as rustls wants them.
fn alpn() -> Vec<Vec<u8>> {
    ALPN_PROTOCOLS.iter().map(|p| p.to_vec()).collect()
}

fn root_store(creds: &Credentials) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    for root in creds.trust_bundle() {
        roots.add(root.clone())?;
    }
    Ok(Arc::new(roots))
}

/// A server presented a SPIFFE ID outside the allowed set (more than one
/// allowed; with exactly one, [`TlsError::UnexpectedPeer`] says it).
#[derive(Debug, thiserror::Error)]
#[error("peer is {presented}, expected one of {}", list(.allowed))]
pub struct PeerNotAllowed {
    /// The identities the caller allows.
    pub allowed: Vec<SpiffeId>,
    /// The identity the peer's certificate carries.
    pub presented: SpiffeId,
}

fn list(ids: &[SpiffeId]) -> String {
    ids.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
}

/// A rustls server-certificate verifier for SPIFFE identities: it verifies
/// the server's chain against trust anchors, then its SPIFFE ID (one of
/// `allowed`; any when `allowed` is empty). The server name plays no part.
///
/// A refused identity is a [`rustls::Error::InvalidCertificate`] carrying
/// [`TlsError::UnexpectedPeer`] (one identity allowed) or [`PeerNotAllowed`].
#[derive(Debug)]
pub struct SpiffeServerVerifier {
    roots: Arc<RootCertStore>,
    allowed: Vec<SpiffeId>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl SpiffeServerVerifier {
    /// Trusts a server chaining to `roots` whose certificate names one of
    /// `allowed` (any SPIFFE ID, or none, when `allowed` is empty), checking
    /// signatures with `provider`'s algorithms.
    pub fn new(roots: Arc<RootCertStore>, allowed: Vec<SpiffeId>, provider: &CryptoProvider) -> Self {
        Self { roots, allowed, algorithms: provider.signature_verification_algorithms }
    }
}

impl ServerCertVerifier for SpiffeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.algorithms.all,
        )?;
        if self.allowed.is_empty() {
            return Ok(ServerCertVerified::assertion());
        }
        let reject = |e: Arc<dyn std::error::Error + Send + Sync>| {
            rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(e)))
        };
        let presented = spiffe_id_of(end_entity).map_err(|e| reject(Arc::new(e)))?;
        match self.allowed.as_slice() {
            allowed if allowed.contains(&presented) => Ok(ServerCertVerified::assertion()),
            [expected] => Err(reject(Arc::new(TlsError::UnexpectedPeer {
                expected: Box::new(expected.clone()),
                presented: Box::new(presented),
            }))),
            allowed => Err(reject(Arc::new(PeerNotAllowed { allowed: allowed.to_vec(), presented }))),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
