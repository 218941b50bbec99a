//! SPIFFE IDs as weft issues them: `spiffe://<trust-domain>/ns/<ns>/sa/<sa>`.

use std::fmt;
use std::str::FromStr;

use rustls::pki_types::CertificateDer;
use x509_parser::extensions::GeneralName;

use super::TlsError;

/// A workload identity: trust domain, namespace and service account.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SpiffeId {
    trust_domain: String,
    namespace: String,
    service_account: String,
}

impl SpiffeId {
    /// Builds an ID from its parts, checking each as [`FromStr`] would.
    pub fn new(trust_domain: &str, namespace: &str, service_account: &str) -> Result<Self, TlsError> {
        format!("spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}").parse()
    }

    /// The trust domain, e.g. `cluster.local`.
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// The namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The service account.
    pub fn service_account(&self) -> &str {
        &self.service_account
    }

    /// Reads the SPIFFE ID from a certificate's URI SAN. An SVID carries
    /// exactly one URI SAN; anything else is refused.
    pub fn from_certificate(cert: &CertificateDer<'_>) -> Result<Self, TlsError> {
        let (_, cert) = x509_parser::parse_x509_certificate(cert)
            .map_err(|e| TlsError::MalformedCertificate(e.to_string()))?;
        let san = cert
            .subject_alternative_name()
            .map_err(|e| TlsError::MalformedCertificate(e.to_string()))?
            .ok_or(TlsError::NoSpiffeId("no subjectAltName"))?;
        let mut uris = san.value.general_names.iter().filter_map(|name| match name {
            GeneralName::URI(uri) => Some(*uri),
            _ => None,
        });
        let uri = uris.next().ok_or(TlsError::NoSpiffeId("no URI SAN"))?;
        if uris.next().is_some() {
            return Err(TlsError::NoSpiffeId("more than one URI SAN"));
        }
        uri.parse()
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "spiffe://{}/ns/{}/sa/{}", self.trust_domain, self.namespace, self.service_account)
    }
}

impl fmt::Debug for SpiffeId {
    // The URI reads better in logs and errors than the three fields.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SpiffeId({self})")
    }
}

impl FromStr for SpiffeId {
    type Err = TlsError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = |reason| TlsError::InvalidSpiffeId { id: s.to_owned(), reason };
        let rest = s.strip_prefix("spiffe://").ok_or_else(|| invalid("does not start with spiffe://"))?;
        let parts: Vec<&str> = rest.split('/').collect();
        let [td, "ns", ns, "sa", sa] = parts[..] else {
            return Err(invalid("path is not /ns/<namespace>/sa/<service-account>"));
        };
        // SPIFFE: trust domains are lowercase letters, digits, '.', '-', '_'.
        let td_ok = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || ".-_".contains(c);
        if td.is_empty() || !td.chars().all(td_ok) {
            return Err(invalid("bad trust domain"));
        }
        // SPIFFE path segments: letters, digits, '.', '-', '_', and not "." or "..".
        let seg_ok = |seg: &str| {
            !seg.is_empty()
                && seg != "."
                && seg != ".."
                && seg.chars().all(|c| c.is_ascii_alphanumeric() || ".-_".contains(c))
        };
        if !seg_ok(ns) || !seg_ok(sa) {
            return Err(invalid("bad namespace or service account"));
        }
        Ok(Self { trust_domain: td.to_owned(), namespace: ns.to_owned(), service_account: sa.to_owned() })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn parses_and_displays_weft_ids() {
        let id: SpiffeId = "spiffe://cluster.local/ns/shop/sa/cart".parse().unwrap();
        assert_eq!(id.trust_domain(), "cluster.local");
        assert_eq!(id.namespace(), "shop");
        assert_eq!(id.service_account(), "cart");
        assert_eq!(id.to_string(), "spiffe://cluster.local/ns/shop/sa/cart");
        assert_eq!(SpiffeId::new("cluster.local", "shop", "cart").unwrap(), id);
    }

    #[test]
    fn rejects_malformed_ids() {
        for bad in [
            "https://cluster.local/ns/a/sa/b",
            "spiffe://cluster.local/ns/a",
            "spiffe://cluster.local/ns/a/sa/b/extra",
            "spiffe:///ns/a/sa/b",
            "spiffe://Cluster.Local/ns/a/sa/b",
            "spiffe://cluster.local/ns//sa/b",
            "spiffe://cluster.local/ns/../sa/b",
            "spiffe://cluster.local/namespace/a/sa/b",
        ] {
            assert!(bad.parse::<SpiffeId>().is_err(), "{bad} parsed");
        }
    }
}
