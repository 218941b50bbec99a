//! `GET /debug/identity`: the CA's roots, the control plane's own certificate, the latest
//! certificate issued per identity, and each connected proxy's certificate. `weft check` reads
//! it (the types here are its wire format).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::identity::cert::unix_seconds;
use crate::identity::{CertInfo, CertificateAuthority, ControlTls, Issuance, Ledger, SpiffeId};
use crate::xds::ProxyReport;

/// What the admin API reads about identity when the control plane serves TLS.
#[derive(Debug, Clone)]
pub struct IdentityHandles {
    /// The CA directory (with Kubernetes, where a new root passed through; the CA is in a Secret).
    pub ca_dir: PathBuf,
    /// Where the CA is kept, as reported: its directory, or `secret <namespace>/<name>`.
    pub ca_location: String,
    /// The mesh CA.
    pub ca: Arc<CertificateAuthority>,
    /// The control plane's serving certificate.
    pub control: Arc<ControlTls>,
    /// What was issued and refused.
    pub ledger: Arc<Ledger>,
}

/// A certificate with its time left, as of [`IdentityReport::now`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertReport {
    /// Identity, serial and validity.
    #[serde(flatten)]
    pub cert: CertInfo,
    /// Seconds until it expires (negative once it has).
    pub seconds_left: i64,
}

/// The control plane's serving certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlCertReport {
    /// The certificate.
    #[serde(flatten)]
    pub cert: CertReport,
    /// When it will be renewed, seconds since the Unix epoch.
    pub renew_at: u64,
}

/// The latest certificate issued for an identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuedReport {
    /// What was issued, when and to whom.
    #[serde(flatten)]
    pub issuance: Issuance,
    /// Seconds until it expires (negative once it has).
    pub seconds_left: i64,
}

/// One connected proxy (one xDS stream) and its certificates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProxyIdentityReport {
    /// The node id.
    pub node: String,
    /// The connection number (as in `/debug/proxies`).
    pub connection: u64,
    /// The stream kind (`ads-delta`, ...).
    pub stream: String,
    /// The identity its node metadata claims (namespace and service account).
    pub identity: Option<String>,
    /// The client certificate it connected with (none over plaintext).
    pub presented: Option<CertReport>,
    /// The latest certificate issued for its identity (none if not issued since the control
    /// plane started).
    pub latest_issued: Option<IssuedReport>,
}

/// The body of `GET /debug/identity`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityReport {
    /// Whether the mesh runs mTLS (false with `--insecure-plaintext`: nothing else is filled).
    pub mtls: bool,
    /// The trust domain.
    pub trust_domain: String,
    /// The control plane's clock, seconds since the Unix epoch.
    pub now: u64,
    /// Where the CA is kept: its directory, or `secret <namespace>/<name>` in Kubernetes.
    pub ca_dir: Option<String>,
    /// Lifetime of workload certificates, seconds.
    pub leaf_lifetime_seconds: Option<u64>,
    /// The trust bundle: the root, then extra roots.
    pub roots: Vec<CertReport>,
    /// The intermediate that signs leaves, if any.
    pub intermediate: Option<CertReport>,
    /// The control plane's serving certificate.
    pub control: Option<ControlCertReport>,
    /// The latest certificate per identity.
    pub issued: Vec<IssuedReport>,
    /// Every connected proxy.
    pub proxies: Vec<ProxyIdentityReport>,
}

fn cert_report(cert: CertInfo, now: SystemTime) -> CertReport {
    let seconds_left = cert.seconds_left(now);
    CertReport { cert, seconds_left }
}

fn der_report(der: &[u8], now: SystemTime) -> Option<CertReport> {
    CertInfo::from_der(der).ok().map(|c| cert_report(c, now))
}

fn issued_report(issuance: Issuance, now: SystemTime) -> IssuedReport {
    let seconds_left = crate::identity::cert::seconds_between(now, issuance.not_after);
    IssuedReport { issuance, seconds_left }
}

/// Builds the report from the identity state (if any) and the connected proxies.
pub fn report(
    trust_domain: &str,
    identity: Option<&IdentityHandles>,
    proxies: Vec<ProxyReport>,
) -> IdentityReport {
    let now = SystemTime::now();
    let proxies = proxies
        .into_iter()
        .map(|p| {
            let claimed =
                SpiffeId::new(trust_domain, p.node.namespace.as_str(), p.node.service_account.as_str()).ok();
            let latest = claimed
                .as_ref()
                .and_then(|id| identity.and_then(|i| i.ledger.latest(&id.to_string())))
                .map(|i| issued_report(i, now));
            ProxyIdentityReport {
                node: p.node.id,
                connection: p.connection,
                stream: p.stream,
                identity: claimed.map(|id| id.to_string()),
                presented: p.peer.map(|c| cert_report(c, now)),
                latest_issued: latest,
            }
        })
        .collect();
    let mut report = IdentityReport {
        mtls: identity.is_some(),
        trust_domain: trust_domain.to_owned(),
        now: unix_seconds(now),
        ca_dir: None,
        leaf_lifetime_seconds: None,
        roots: Vec::new(),
        intermediate: None,
        control: None,
        issued: Vec::new(),
        proxies,
    };
    if let Some(id) = identity {
        report.ca_dir = Some(id.ca_location.clone());
        report.leaf_lifetime_seconds = Some(id.ca.leaf_lifetime().as_secs());
        report.roots = id.ca.trust_bundle().iter().filter_map(|der| der_report(der, now)).collect();
        report.intermediate = id.ca.chain().first().and_then(|der| der_report(der, now));
        report.control = Some(ControlCertReport {
            cert: cert_report(id.control.certificate(), now),
            renew_at: unix_seconds(id.control.renew_at()),
        });
        report.issued = id.ledger.all().into_iter().map(|i| issued_report(i, now)).collect();
    }
    report
}
