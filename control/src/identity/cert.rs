//! What the control plane reports about a certificate: who it is for, its serial and its
//! validity, read from DER. Used by the admin API, `weft check` and the xDS authorization.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::SpiffeId;

/// A certificate's identity and validity, as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertInfo {
    /// The subject distinguished name (empty for workload certificates).
    pub subject: String,
    /// The URI SAN, when the certificate carries exactly one (a SPIFFE ID for weft's leaves).
    pub identity: Option<String>,
    /// The serial number, lowercase hex.
    pub serial: String,
    /// Start of validity, seconds since the Unix epoch.
    pub not_before: u64,
    /// End of validity, seconds since the Unix epoch.
    pub not_after: u64,
}

/// Why a certificate could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed certificate: {0}")]
pub struct CertParseError(pub String);

impl CertInfo {
    /// Reads a DER certificate.
    pub fn from_der(der: &[u8]) -> Result<Self, CertParseError> {
        let (_, cert) = X509Certificate::from_der(der).map_err(|e| CertParseError(e.to_string()))?;
        let uris = uri_sans(&cert)?;
        let epoch = |t: x509_parser::time::ASN1Time| u64::try_from(t.timestamp()).unwrap_or(0);
        Ok(Self {
            subject: cert.subject().to_string(),
            identity: match uris.as_slice() {
                [only] => Some(only.clone()),
                _ => None,
            },
            serial: hex(cert.raw_serial()),
            not_before: epoch(cert.validity().not_before),
            not_after: epoch(cert.validity().not_after),
        })
    }

    /// The SPIFFE ID in the certificate's single URI SAN, if it is a valid weft one.
    pub fn spiffe_id(&self) -> Option<SpiffeId> {
        self.identity.as_deref()?.parse().ok()
    }

    /// Seconds until the certificate expires (negative once it has).
    pub fn seconds_left(&self, now: SystemTime) -> i64 {
        seconds_between(now, self.not_after)
    }

    /// Its whole lifetime, in seconds.
    pub fn lifetime_seconds(&self) -> u64 {
        self.not_after.saturating_sub(self.not_before)
    }
}

/// `to - from` in whole seconds, where `to` is seconds since the epoch.
pub fn seconds_between(from: SystemTime, to: u64) -> i64 {
    let from = from.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let signed = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    signed(to) - signed(from)
}

/// Seconds since the epoch of `t` (0 before the epoch).
pub fn unix_seconds(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn uri_sans(cert: &X509Certificate<'_>) -> Result<Vec<String>, CertParseError> {
    let Some(san) = cert.subject_alternative_name().map_err(|e| CertParseError(e.to_string()))? else {
        return Ok(Vec::new());
    };
    Ok(san
        .value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::URI(uri) => Some((*uri).to_owned()),
            _ => None,
        })
        .collect())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
