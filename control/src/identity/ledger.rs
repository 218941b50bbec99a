//! What the CA handed out: the latest certificate per identity (for `/debug/identity` and
//! `weft check`), and the issuance and refusal counters.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::Issued;
use super::cert::unix_seconds;
use crate::metrics::Metrics;

/// One certificate the CA issued.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Issuance {
    /// The SPIFFE ID it certifies.
    pub identity: String,
    /// Its serial number, lowercase hex.
    pub serial: String,
    /// Start of validity, seconds since the Unix epoch.
    pub not_before: u64,
    /// End of validity, seconds since the Unix epoch.
    pub not_after: u64,
    /// Who asked for it (the Certify caller's address), when known.
    pub peer: Option<String>,
    /// When it was issued, seconds since the Unix epoch.
    pub issued_at: u64,
}

/// Why the control plane refused a caller (the `reason` label of
/// `weft_identity_refused_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Certify without a token.
    MissingToken,
    /// Certify with a token that does not verify.
    InvalidToken,
    /// Certify with a valid token of another identity.
    TokenIdentityMismatch,
    /// Certify with a malformed identity or CSR.
    InvalidRequest,
    /// Certify whose CSR asks for something the caller may not have.
    CsrDenied,
    /// Certify the CA or authenticator could not serve.
    Unavailable,
    /// An xDS request without a client certificate.
    NoClientCertificate,
    /// An xDS request whose client certificate carries no usable SPIFFE ID.
    InvalidClientCertificate,
    /// An xDS request whose client certificate is from another trust domain.
    ForeignTrustDomain,
    /// An xDS request whose client certificate names another namespace or service account
    /// than the node metadata.
    ClientIdentityMismatch,
    /// A TLS handshake on the xDS port failed (plaintext client, untrusted certificate...).
    TlsHandshake,
}

impl Refusal {
    /// The metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::MissingToken => "missing_token",
            Refusal::InvalidToken => "invalid_token",
            Refusal::TokenIdentityMismatch => "token_identity_mismatch",
            Refusal::InvalidRequest => "invalid_request",
            Refusal::CsrDenied => "csr_denied",
            Refusal::Unavailable => "unavailable",
            Refusal::NoClientCertificate => "no_client_certificate",
            Refusal::InvalidClientCertificate => "invalid_client_certificate",
            Refusal::ForeignTrustDomain => "foreign_trust_domain",
            Refusal::ClientIdentityMismatch => "client_identity_mismatch",
            Refusal::TlsHandshake => "tls_handshake",
        }
    }
}

/// The issuance record, shared by the identity service, the xDS server and the admin API.
#[derive(Debug)]
pub struct Ledger {
    latest: RwLock<BTreeMap<String, Issuance>>,
    metrics: Arc<Metrics>,
}

impl Default for Ledger {
    fn default() -> Self {
        Self::new(Arc::new(Metrics::new()))
    }
}

impl Ledger {
    /// An empty ledger counting into `metrics`.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self { latest: RwLock::new(BTreeMap::new()), metrics }
    }

    /// Records a certificate issued for `identity` to `peer`.
    pub fn issued(&self, identity: &str, issued: &Issued, peer: Option<SocketAddr>) {
        let record = Issuance {
            identity: identity.to_owned(),
            serial: issued.serial.clone(),
            not_before: unix_seconds(issued.not_before),
            not_after: unix_seconds(issued.not_after),
            peer: peer.map(|p| p.to_string()),
            issued_at: unix_seconds(SystemTime::now()),
        };
        self.metrics.identity_issued.inc();
        self.latest.write().unwrap_or_else(PoisonError::into_inner).insert(identity.to_owned(), record);
    }

    /// Counts a refusal.
    pub fn refused(&self, reason: Refusal) {
        self.metrics.refused(reason.as_str());
    }

    /// The latest certificate issued for `identity`.
    pub fn latest(&self, identity: &str) -> Option<Issuance> {
        self.latest.read().unwrap_or_else(PoisonError::into_inner).get(identity).cloned()
    }

    /// The latest certificate of every identity, by identity.
    pub fn all(&self) -> Vec<Issuance> {
        self.latest.read().unwrap_or_else(PoisonError::into_inner).values().cloned().collect()
    }
}
