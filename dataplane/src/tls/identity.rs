//! The workload's credentials and their renewal.
//!
//! [`Certifier`] makes an ECDSA P-256 key in-process, sends a CSR for the
//! workload's SPIFFE ID with its token to weft's identity service, and keeps
//! the resulting [`Credentials`] fresh: it renews at 70 % of the leaf's life
//! and, when renewal fails, retries with backoff while the old certificate
//! stays published. The private key is never serialized onto the wire.

use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{CertificateParams, ExtendedKeyUsagePurpose, KeyPair, PKCS_ECDSA_P256_SHA256, SanType};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::transport::Channel;
use weft_xds_protos::identity::CertifyRequest;
use weft_xds_protos::identity::identity_client::IdentityClient;

use super::{SpiffeId, TlsError, spiffe_id_of};

/// Renew when this share of the leaf's lifetime has passed (numerator / 10).
const RENEW_AT_TENTHS: u32 = 7;
/// First retry delay after a failed renewal; doubles up to [`MAX_RETRY_DELAY`].
const FIRST_RETRY_DELAY: Duration = Duration::from_secs(1);
/// Longest wait between renewal attempts.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(30);
/// Shortest wait between two renewals, so a certificate that is due at once
/// (a lifetime shorter than the CA's backdating) cannot make a hot loop.
const MIN_RENEW_INTERVAL: Duration = Duration::from_secs(1);

/// A workload's key, certificate chain and trust bundle, immutable and
/// shared as `Arc<Credentials>`; a renewal publishes a new value.
pub struct Credentials {
    identity: SpiffeId,
    key: PrivatePkcs8KeyDer<'static>,
    chain: Vec<CertificateDer<'static>>,
    trust_bundle: Vec<CertificateDer<'static>>,
    not_before: SystemTime,
    not_after: SystemTime,
}

impl Credentials {
    /// Assembles credentials, checking that the leaf (first in `chain`) names
    /// `identity`, matches `key`, and that the trust bundle is not empty.
    pub fn new(
        identity: SpiffeId,
        key: PrivatePkcs8KeyDer<'static>,
        chain: Vec<CertificateDer<'static>>,
        trust_bundle: Vec<CertificateDer<'static>>,
    ) -> Result<Self, TlsError> {
        let leaf = chain.first().ok_or_else(|| TlsError::InvalidCredentials("no leaf certificate".into()))?;
        if trust_bundle.is_empty() {
            return Err(TlsError::InvalidCredentials("empty trust bundle".into()));
        }
        let presented = spiffe_id_of(leaf)?;
        if presented != identity {
            return Err(TlsError::InvalidCredentials(format!("leaf is for {presented}, not {identity}")));
        }
        // Fails with InconsistentKeys if the CA certified some other key.
        rustls::sign::CertifiedKey::from_der(
            chain.clone(),
            PrivateKeyDer::Pkcs8(key.clone_key()),
            &super::config::crypto_provider(),
        )?;
        let (not_before, not_after) = validity(leaf)?;
        Ok(Self { identity, key, chain, trust_bundle, not_before, not_after })
    }

    /// The SPIFFE ID the leaf certifies.
    pub fn identity(&self) -> &SpiffeId {
        &self.identity
    }

    /// Leaf first, then intermediates towards the root.
    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.chain
    }

    /// Trust anchors for peers; two roots during a CA rotation.
    pub fn trust_bundle(&self) -> &[CertificateDer<'static>] {
        &self.trust_bundle
    }

    /// Start of the leaf's validity.
    pub fn not_before(&self) -> SystemTime {
        self.not_before
    }

    /// End of the leaf's validity.
    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    /// When these credentials should be renewed: 70 % into the leaf's life.
    pub fn renew_at(&self) -> SystemTime {
        renewal_time(self.not_before, self.not_after)
    }

    /// The private key, for building rustls configs inside this process.
    pub(crate) fn private_key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(self.key.clone_key())
    }
}

impl fmt::Debug for Credentials {
    // Deliberately leaves out the key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("identity", &self.identity)
            .field("chain_len", &self.chain.len())
            .field("trust_bundle_len", &self.trust_bundle.len())
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

/// The instant 70 % into the validity window `[not_before, not_after]`.
pub fn renewal_time(not_before: SystemTime, not_after: SystemTime) -> SystemTime {
    let lifetime = not_after.duration_since(not_before).unwrap_or_default();
    not_before + lifetime * RENEW_AT_TENTHS / 10
}

/// The wait before the next renewal attempt after `failures + 1` failures.
fn retry_delay(failures: u32) -> Duration {
    FIRST_RETRY_DELAY.saturating_mul(2u32.saturating_pow(failures)).min(MAX_RETRY_DELAY)
}

fn validity(leaf: &CertificateDer<'_>) -> Result<(SystemTime, SystemTime), TlsError> {
    let (_, cert) = x509_parser::parse_x509_certificate(leaf)
        .map_err(|e| TlsError::MalformedCertificate(e.to_string()))?;
    let at = |t: i64| UNIX_EPOCH + Duration::from_secs(u64::try_from(t).unwrap_or(0));
    let v = cert.validity();
    Ok((at(v.not_before.timestamp()), at(v.not_after.timestamp())))
}

/// Where the proof of identity comes from.
#[derive(Clone)]
pub enum TokenSource {
    /// A fixed token, e.g. one `weft up` handed out in local mode.
    Static(String),
    /// A file read before every request, e.g. a projected ServiceAccount
    /// token that the kubelet rotates.
    File(PathBuf),
}

impl TokenSource {
    async fn read(&self) -> Result<String, TlsError> {
        match self {
            Self::Static(token) => Ok(token.clone()),
            Self::File(path) => tokio::fs::read_to_string(path)
                .await
                .map(|t| t.trim().to_owned())
                .map_err(|source| TlsError::Token { path: path.clone(), source }),
        }
    }
}

impl fmt::Debug for TokenSource {
    // Never prints the token.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Static(_) => f.write_str("Static(..)"),
            Self::File(path) => f.debug_tuple("File").field(path).finish(),
        }
    }
}

/// Obtains and renews a workload's [`Credentials`] from weft's identity service.
#[derive(Debug)]
pub struct Certifier {
    client: IdentityClient<Channel>,
    identity: SpiffeId,
    token: TokenSource,
}

impl Certifier {
    /// A certifier for `identity`, proving it with `token` over `channel`.
    pub fn new(channel: Channel, identity: SpiffeId, token: TokenSource) -> Self {
        Self { client: IdentityClient::new(channel), identity, token }
    }

    /// Makes a fresh key and asks the identity service to certify it once.
    pub async fn certify(&mut self) -> Result<Credentials, TlsError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let csr = csr_for(&self.identity, &key)?;
        let request = CertifyRequest {
            identity: self.identity.to_string(),
            token: self.token.read().await?,
            certificate_signing_request: csr,
        };
        let response = self.client.certify(request).await?.into_inner();
        let chain = std::iter::once(response.leaf_certificate)
            .chain(response.intermediate_certificates)
            .filter(|der| !der.is_empty())
            .map(CertificateDer::from)
            .collect();
        let bundle = response.trust_bundle.into_iter().map(CertificateDer::from).collect();
        let key = PrivatePkcs8KeyDer::from(key.serialize_der());
        Credentials::new(self.identity.clone(), key, chain, bundle)
    }

    /// Certifies once, then renews in the background. Fails if the first
    /// certification fails; the caller decides whether to retry. The task
    /// ends when every receiver is dropped.
    pub async fn start(mut self) -> Result<(watch::Receiver<Arc<Credentials>>, JoinHandle<()>), TlsError> {
        let first = self.certify().await?;
        tracing::info!(identity = %first.identity, not_after = ?first.not_after, "certified");
        let (tx, rx) = watch::channel(Arc::new(first));
        Ok((rx, tokio::spawn(self.renew_forever(tx))))
    }

    /// Certifies, retrying with backoff while the failure may pass (the
    /// control plane is unreachable or busy), and failing at once when it
    /// will not ([`TlsError::is_permanent`]: a refused token, a bad request).
    pub async fn certify_with_retry(&mut self) -> Result<Credentials, TlsError> {
        let mut failures = 0u32;
        loop {
            match self.certify().await {
                Ok(creds) => {
                    tracing::info!(identity = %creds.identity, not_after = ?creds.not_after, "certified");
                    return Ok(creds);
                }
                Err(error) if error.is_permanent() => return Err(error),
                Err(error) => {
                    let wait = retry_delay(failures);
                    failures = failures.saturating_add(1);
                    // Say it at once, then now and then while it lasts.
                    if failures % 10 == 1 {
                        tracing::warn!(error = %error_chain(&error), failures, retry_in = ?wait, "certification failed; retrying");
                    } else {
                        tracing::debug!(error = %error_chain(&error), failures, retry_in = ?wait, "certification failed; retrying");
                    }
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// Publishes `first` into `tx`, then renews at 70 % of each
    /// certificate's life for as long as `tx` has receivers, retrying
    /// failures with backoff and keeping the old credentials published
    /// meanwhile.
    pub async fn maintain(self, first: Credentials, tx: watch::Sender<Option<Arc<Credentials>>>) {
        tx.send_replace(Some(Arc::new(first)));
        self.renew_forever(tx).await;
    }

    async fn renew_forever<P: Publish>(mut self, tx: P) {
        let mut failures = 0u32;
        loop {
            let Some(current) = tx.current() else { return };
            let wait = if failures == 0 {
                current
                    .renew_at()
                    .duration_since(SystemTime::now())
                    .unwrap_or_default()
                    .max(MIN_RENEW_INTERVAL)
            } else {
                retry_delay(failures - 1)
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = tx.closed() => return,
            }
            match self.certify().await {
                Ok(creds) => {
                    tracing::info!(identity = %creds.identity, not_after = ?creds.not_after, "renewed");
                    failures = 0;
                    tx.publish(Arc::new(creds));
                }
                Err(error) => {
                    failures = failures.saturating_add(1);
                    // The old credentials stay published until a renewal succeeds.
                    let error = error_chain(&error);
                    let left = current.not_after.duration_since(SystemTime::now()).ok();
                    match left {
                        None => tracing::error!(
                            error,
                            failures,
                            "certificate renewal failed and the workload certificate has EXPIRED; \
                             peers will refuse it until a renewal succeeds"
                        ),
                        Some(left) => tracing::warn!(
                            error,
                            failures,
                            expires_in = ?left,
                            "certificate renewal failed; retrying"
                        ),
                    }
                }
            }
        }
    }
}

/// Where a certifier publishes renewed credentials.
trait Publish: Send + 'static {
    /// The credentials published now.
    fn current(&self) -> Option<Arc<Credentials>>;
    /// Publishes new credentials.
    fn publish(&self, creds: Arc<Credentials>);
    /// Resolves when nobody reads the credentials any more.
    fn closed(&self) -> impl Future<Output = ()> + Send;
}

impl Publish for watch::Sender<Arc<Credentials>> {
    fn current(&self) -> Option<Arc<Credentials>> {
        Some(self.borrow().clone())
    }
    fn publish(&self, creds: Arc<Credentials>) {
        self.send_replace(creds);
    }
    fn closed(&self) -> impl Future<Output = ()> + Send {
        watch::Sender::closed(self)
    }
}

impl Publish for watch::Sender<Option<Arc<Credentials>>> {
    fn current(&self) -> Option<Arc<Credentials>> {
        self.borrow().clone()
    }
    fn publish(&self, creds: Arc<Credentials>) {
        self.send_replace(Some(creds));
    }
    fn closed(&self) -> impl Future<Output = ()> + Send {
        watch::Sender::closed(self)
    }
}

/// An error and its causes, on one line.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    super::push_causes(&mut out, e.source());
    out
}

/// A DER CSR for `identity`'s URI SAN, signed by `key`. The leaf is used both
/// to serve and to connect, so it asks for both EKUs.
fn csr_for(identity: &SpiffeId, key: &KeyPair) -> Result<Vec<u8>, TlsError> {
    let mut params = CertificateParams::default();
    params.subject_alt_names = vec![SanType::URI(identity.to_string().try_into()?)];
    params.extended_key_usages =
        vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    Ok(params.serialize_request(key)?.der().to_vec())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn renewal_is_seventy_percent_into_the_lifetime() {
        let start = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let day = Duration::from_secs(24 * 3600);
        assert_eq!(renewal_time(start, start + day), start + Duration::from_secs(60_480));
        assert_eq!(renewal_time(start, start + Duration::from_secs(60)), start + Duration::from_secs(42));
        // A reversed window renews at once rather than panicking.
        assert_eq!(renewal_time(start + day, start), start + day);
    }

    #[test]
    fn retry_delay_doubles_up_to_the_cap() {
        assert_eq!(retry_delay(0), Duration::from_secs(1));
        assert_eq!(retry_delay(1), Duration::from_secs(2));
        assert_eq!(retry_delay(4), Duration::from_secs(16));
        assert_eq!(retry_delay(5), MAX_RETRY_DELAY);
        assert_eq!(retry_delay(u32::MAX), MAX_RETRY_DELAY);
    }

    #[test]
    fn csr_carries_the_spiffe_uri_and_both_usages() {
        let id = SpiffeId::new("cluster.local", "shop", "cart").unwrap();
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let der = csr_for(&id, &key).unwrap();
        let parsed = rcgen::CertificateSigningRequestParams::from_der(&der.into()).unwrap();
        assert_eq!(parsed.params.subject_alt_names, vec![SanType::URI(id.to_string().try_into().unwrap())]);
        assert!(parsed.params.extended_key_usages.contains(&ExtendedKeyUsagePurpose::ClientAuth));
        assert!(parsed.params.extended_key_usages.contains(&ExtendedKeyUsagePurpose::ServerAuth));
    }
}
