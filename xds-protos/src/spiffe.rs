//! SPIFFE IDs of the one shape weft issues: `spiffe://<trust-domain>/ns/<ns>/sa/<sa>`.

use std::fmt;
use std::str::FromStr;

/// Why a string is not a weft SPIFFE ID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpiffeIdError {
    /// The ID does not start with `spiffe://`.
    #[error("{0:?} does not start with spiffe://")]
    Scheme(String),
    /// The trust domain is empty, too long, or holds characters other than `a-z 0-9 . - _`.
    #[error("trust domain {0:?} must be 1-255 characters of a-z, 0-9, '.', '-', '_'")]
    TrustDomain(String),
    /// The path is not `/ns/<namespace>/sa/<service-account>`.
    #[error("path {0:?} is not /ns/<namespace>/sa/<service-account>")]
    Path(String),
    /// A namespace or service account name is empty, `.`, `..`, or has characters SPIFFE forbids.
    #[error("{kind} {value:?} must be non-empty letters, digits, '.', '-', '_' (and not '.' or '..')")]
    Segment {
        /// `namespace` or `service account`.
        kind: &'static str,
        /// The offending value.
        value: String,
    },
}

/// A workload identity: `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`.
///
/// Only valid IDs can be built, so holding one means it is safe to put in a certificate.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    trust_domain: String,
    namespace: String,
    service_account: String,
}

const SCHEME: &str = "spiffe://";

impl SpiffeId {
    /// Builds an ID from its parts, checking each against the SPIFFE ID rules.
    pub fn new(
        trust_domain: impl Into<String>,
        namespace: impl Into<String>,
        service_account: impl Into<String>,
    ) -> Result<Self, SpiffeIdError> {
        let trust_domain = validate_trust_domain(trust_domain.into())?;
        let namespace = validate_segment("namespace", namespace.into())?;
        let service_account = validate_segment("service account", service_account.into())?;
        Ok(Self { trust_domain, namespace, service_account })
    }

    /// The trust domain, e.g. `cluster.local`.
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// The Kubernetes namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The Kubernetes service account.
    pub fn service_account(&self) -> &str {
        &self.service_account
    }
}

/// Checks a trust domain name: SPIFFE allows lowercase letters, digits, `.`, `-` and `_`.
pub fn validate_trust_domain(td: String) -> Result<String, SpiffeIdError> {
    let ok = !td.is_empty()
        && td.len() <= 255
        && td
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_'));
    if ok { Ok(td) } else { Err(SpiffeIdError::TrustDomain(td)) }
}

fn validate_segment(kind: &'static str, value: String) -> Result<String, SpiffeIdError> {
    let ok = !value.is_empty()
        && value != "."
        && value != ".."
        && value.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
    if ok { Ok(value) } else { Err(SpiffeIdError::Segment { kind, value }) }
}

impl FromStr for SpiffeId {
    type Err = SpiffeIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let rest = s.strip_prefix(SCHEME).ok_or_else(|| SpiffeIdError::Scheme(s.to_owned()))?;
        let (td, path) = rest.split_once('/').ok_or_else(|| SpiffeIdError::Path(String::new()))?;
        let path_err = || SpiffeIdError::Path(format!("/{path}"));
        match path.split('/').collect::<Vec<_>>().as_slice() {
            ["ns", ns, "sa", sa] => Self::new(td, *ns, *sa),
            _ => Err(path_err()),
        }
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SCHEME}{}/ns/{}/sa/{}", self.trust_domain, self.namespace, self.service_account)
    }
}

impl fmt::Debug for SpiffeId {
    // The URI reads better in logs and errors than the three fields.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SpiffeId({self})")
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn parse_and_display_round_trip() {
        let id: SpiffeId = "spiffe://cluster.local/ns/shop/sa/cart".parse().unwrap();
        assert_eq!(id.trust_domain(), "cluster.local");
        assert_eq!(id.namespace(), "shop");
        assert_eq!(id.service_account(), "cart");
        assert_eq!(id.to_string(), "spiffe://cluster.local/ns/shop/sa/cart");
        assert_eq!(SpiffeId::new("cluster.local", "shop", "cart").unwrap(), id);
    }

    #[test]
    fn malformed_ids_are_rejected_with_the_reason() {
        type IsExpected = fn(&SpiffeIdError) -> bool;
        let cases: &[(&str, IsExpected)] = &[
            ("https://cluster.local/ns/a/sa/b", |e| matches!(e, SpiffeIdError::Scheme(_))),
            ("spiffe://cluster.local", |e| matches!(e, SpiffeIdError::Path(_))),
            ("spiffe://cluster.local/ns/a/sa/b/extra", |e| matches!(e, SpiffeIdError::Path(_))),
            ("spiffe://cluster.local/sa/b/ns/a", |e| matches!(e, SpiffeIdError::Path(_))),
            ("spiffe://cluster.local/namespace/a/sa/b", |e| matches!(e, SpiffeIdError::Path(_))),
            ("spiffe://cluster.local/ns/a", |e| matches!(e, SpiffeIdError::Path(_))),
            ("spiffe://Cluster.Local/ns/a/sa/b", |e| matches!(e, SpiffeIdError::TrustDomain(_))),
            ("spiffe:///ns/a/sa/b", |e| matches!(e, SpiffeIdError::TrustDomain(_))),
            ("spiffe://td/ns//sa/b", |e| matches!(e, SpiffeIdError::Segment { kind: "namespace", .. })),
            ("spiffe://td/ns/a/sa/..", |e| matches!(e, SpiffeIdError::Segment { .. })),
            ("spiffe://td/ns/a/sa/b%20c", |e| matches!(e, SpiffeIdError::Segment { .. })),
        ];
        for (input, is_expected) in cases {
            let err = input.parse::<SpiffeId>().unwrap_err();
            assert!(is_expected(&err), "{input}: unexpected error {err:?}");
        }
    }
}
