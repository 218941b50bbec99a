//! The mesh's certificate authority: one root, kept on disk in local mode, that signs
//! workload CSRs into X.509-SVIDs carrying exactly one SPIFFE URI SAN.
//!
//! The workload's private key never reaches this module: it only sees the CSR's public key,
//! and everything else the CSR asks for (subject, key usages, extensions) is ignored in favour
//! of what the mesh decides.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use time::OffsetDateTime;

use weft_xds_protos::spiffe::{SpiffeId, SpiffeIdError, validate_trust_domain};

/// File name of the root certificate (PEM) inside the CA directory.
pub const ROOT_CERT_FILE: &str = "root-cert.pem";
/// File name of the root private key (PKCS#8 PEM, mode 0600) inside the CA directory.
pub const ROOT_KEY_FILE: &str = "root-key.pem";

/// Clock skew tolerated between the control plane and workloads: certificates start this early.
const BACKDATE: Duration = Duration::from_secs(60);

/// What can go wrong creating, loading or using the CA.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// Reading or writing a CA file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Only one of the root certificate and key exists, so the root can be neither loaded nor
    /// safely regenerated.
    #[error("{present} exists but {missing} does not; restore it or remove both to make a new root")]
    IncompleteRoot {
        /// The file that exists.
        present: PathBuf,
        /// The file that is missing.
        missing: PathBuf,
    },
    /// The root certificate or key PEM could not be parsed.
    #[error("invalid root {what}: {source}")]
    InvalidRoot {
        /// `certificate` or `key`.
        what: &'static str,
        /// What rcgen reported.
        source: rcgen::Error,
    },
    /// The root key does not belong to the root certificate.
    #[error("the root key does not match the root certificate's public key")]
    KeyMismatch,
    /// The configured trust domain is not a valid SPIFFE trust domain.
    #[error("invalid trust domain: {0}")]
    TrustDomain(#[from] SpiffeIdError),
    /// The CSR is not a well-formed PKCS#10 request with a valid self-signature, or uses an
    /// extension weft does not accept.
    #[error("certificate signing request is invalid: {0}")]
    InvalidCsr(rcgen::Error),
    /// The CSR asks to be a CA.
    #[error("certificate signing request asks for a CA certificate")]
    CsrRequestsCa,
    /// The CSR names a subject alternative name other than the identity being certified.
    #[error("certificate signing request asks for {requested}, but the caller is {identity}")]
    CsrIdentityMismatch {
        /// The SANs the CSR asked for.
        requested: String,
        /// The identity that was authenticated.
        identity: SpiffeId,
    },
    /// The identity belongs to a different trust domain than this CA's.
    #[error("{identity} is not in trust domain {trust_domain}")]
    ForeignTrustDomain {
        /// The identity asked for.
        identity: SpiffeId,
        /// This CA's trust domain.
        trust_domain: String,
    },
    /// The requested lifetime is zero.
    #[error("certificate lifetime must be positive")]
    ZeroLifetime,
    /// The root has expired, so nothing it signs would verify.
    #[error("the root certificate expired at {0:?}")]
    RootExpired(SystemTime),
    /// Generating a key or signing a certificate failed.
    #[error("signing failed: {0}")]
    Sign(rcgen::Error),
}

/// How the CA is set up.
#[derive(Debug, Clone)]
pub struct CaConfig {
    /// Trust domain of every identity this CA certifies.
    pub trust_domain: String,
    /// Lifetime of a newly generated root.
    pub root_lifetime: Duration,
    /// Default lifetime of workload certificates.
    pub leaf_lifetime: Duration,
}

impl Default for CaConfig {
    fn default() -> Self {
        Self {
            trust_domain: "cluster.local".to_owned(),
            root_lifetime: Duration::from_secs(10 * 365 * 24 * 3600),
            leaf_lifetime: Duration::from_secs(24 * 3600),
        }
    }
}

/// A signed workload certificate and what the workload needs to use it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    /// The leaf certificate, DER.
    pub leaf_der: Vec<u8>,
    /// Intermediates, leaf issuer first, DER (empty while the root signs directly).
    pub chain: Vec<Vec<u8>>,
    /// Roots the workload should trust, DER.
    pub trust_bundle: Vec<Vec<u8>>,
    /// When the leaf expires (whole seconds, as in the certificate).
    pub not_after: SystemTime,
}

/// The mesh CA: a root certificate and its signing key.
pub struct CertificateAuthority {
    trust_domain: String,
    leaf_lifetime: Duration,
    issuer: Issuer<'static, KeyPair>,
    root_der: Vec<u8>,
    root_pem: String,
    root_not_after: SystemTime,
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        f.debug_struct("CertificateAuthority")
            .field("trust_domain", &self.trust_domain)
            .field("root_not_after", &self.root_not_after)
            .finish_non_exhaustive()
    }
}

impl CertificateAuthority {
    /// Makes a new root in memory (nothing is written).
    pub fn generate(config: CaConfig) -> Result<Self, CaError> {
        let trust_domain = validate_trust_domain(config.trust_domain)?;
        let key = KeyPair::generate().map_err(CaError::Sign)?;
        let now = now_whole_seconds();
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::OrganizationName, trust_domain.as_str());
        params.distinguished_name.push(DnType::CommonName, "weft root CA");
        // Path length 1 leaves room for the optional intermediate.
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(1));
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        params.not_before = now - BACKDATE;
        params.not_after = now + config.root_lifetime;
        params.serial_number = Some(random_serial());
        let cert = params.self_signed(&key).map_err(CaError::Sign)?;
        Ok(Self {
            trust_domain,
            leaf_lifetime: config.leaf_lifetime,
            root_der: cert.der().to_vec(),
            root_pem: cert.pem(),
            root_not_after: params.not_after.into(),
            issuer: Issuer::new(params, key),
        })
    }

    /// Loads a root from its certificate and PKCS#8 key in PEM form.
    pub fn from_pem(cert_pem: &str, key_pem: &str, config: CaConfig) -> Result<Self, CaError> {
        let trust_domain = validate_trust_domain(config.trust_domain)?;
        let key =
            KeyPair::from_pem(key_pem).map_err(|source| CaError::InvalidRoot { what: "key", source })?;
        let invalid_cert = |source| CaError::InvalidRoot { what: "certificate", source };
        let der = pem_der(cert_pem).ok_or_else(|| invalid_cert(rcgen::Error::CouldNotParseCertificate))?;
        let (_, parsed) = x509_parser::parse_x509_certificate(&der)
            .map_err(|_| invalid_cert(rcgen::Error::CouldNotParseCertificate))?;
        if parsed.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
            return Err(CaError::KeyMismatch);
        }
        let root_not_after = parsed.validity().not_after.to_datetime().into();
        let issuer = Issuer::from_ca_cert_der(&der.as_slice().into(), key).map_err(invalid_cert)?;
        Ok(Self {
            trust_domain,
            leaf_lifetime: config.leaf_lifetime,
            issuer,
            root_der: der,
            root_pem: cert_pem.to_owned(),
            root_not_after,
        })
    }

    /// Loads the root from `dir` ([`ROOT_CERT_FILE`], [`ROOT_KEY_FILE`]), or, when neither file
    /// exists, generates one and writes it there (directory 0700, key 0600).
    pub fn load_or_generate(dir: &Path, config: CaConfig) -> Result<Self, CaError> {
        let cert_path = dir.join(ROOT_CERT_FILE);
        let key_path = dir.join(ROOT_KEY_FILE);
        match (cert_path.exists(), key_path.exists()) {
            (true, true) => {
                warn_if_key_readable_by_others(&key_path);
                let cert = read(&cert_path)?;
                let key = read(&key_path)?;
                let ca = Self::from_pem(&cert, &key, config)?;
                tracing::info!(dir = %dir.display(), not_after = ?ca.root_not_after, "loaded CA root");
                Ok(ca)
            }
            (false, false) => {
                let ca = Self::generate(config)?;
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)
                    .map_err(|source| CaError::Io { path: dir.to_owned(), source })?;
                // Key first: a crash in between leaves an IncompleteRoot error, never a
                // certificate whose key is lost.
                write_new(&key_path, ca.issuer.key().serialize_pem().as_bytes(), 0o600)?;
                write_new(&cert_path, ca.root_pem.as_bytes(), 0o644)?;
                tracing::info!(dir = %dir.display(), not_after = ?ca.root_not_after, "generated CA root");
                Ok(ca)
            }
            (true, false) => Err(CaError::IncompleteRoot { present: cert_path, missing: key_path }),
            (false, true) => Err(CaError::IncompleteRoot { present: key_path, missing: cert_path }),
        }
    }

    /// This CA's trust domain.
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// The default lifetime of workload certificates.
    pub fn leaf_lifetime(&self) -> Duration {
        self.leaf_lifetime
    }

    /// The root certificate, DER.
    pub fn root_der(&self) -> &[u8] {
        &self.root_der
    }

    /// The root certificate, PEM.
    pub fn root_pem(&self) -> &str {
        &self.root_pem
    }

    /// When the root expires.
    pub fn root_not_after(&self) -> SystemTime {
        self.root_not_after
    }

    /// The roots workloads should trust, DER.
    pub fn trust_bundle(&self) -> Vec<Vec<u8>> {
        vec![self.root_der.clone()]
    }

    /// Signs `csr_der` (PKCS#8, DER) for `identity`, valid for `lifetime` from now (capped at the
    /// root's expiry).
    ///
    /// The CSR's signature must verify. It may leave its SANs empty, or ask for exactly
    /// `identity`'s URI; anything else is refused. The leaf always carries exactly the one SPIFFE
    /// URI SAN, client and server auth EKUs, and no CA rights, whatever the CSR asked for.
    pub fn sign_csr(
        &self,
        csr_der: &[u8],
        identity: &SpiffeId,
        lifetime: Duration,
    ) -> Result<Issued, CaError> {
        if identity.trust_domain() != self.trust_domain {
            return Err(CaError::ForeignTrustDomain {
                identity: identity.clone(),
                trust_domain: self.trust_domain.clone(),
            });
        }
        if lifetime.is_zero() {
            return Err(CaError::ZeroLifetime);
        }
        let csr = CertificateSigningRequestParams::from_der(&csr_der.into()).map_err(CaError::InvalidCsr)?;
        if matches!(csr.params.is_ca, IsCa::Ca(_)) {
            return Err(CaError::CsrRequestsCa);
        }
        let uri = identity.to_string();
        let requested = &csr.params.subject_alt_names;
        let asks_for_identity = |san: &SanType| matches!(san, SanType::URI(u) if u.as_str() == uri);
        let acceptable = match requested.as_slice() {
            [] => true,
            [only] => asks_for_identity(only),
            _ => false,
        };
        if !acceptable {
            return Err(CaError::CsrIdentityMismatch {
                requested: describe_sans(requested),
                identity: identity.clone(),
            });
        }

        let now = now_whole_seconds();
        let root_not_after = OffsetDateTime::from(self.root_not_after);
        if root_not_after <= now {
            return Err(CaError::RootExpired(self.root_not_after));
        }
        let mut params = CertificateParams::default();
        // SPIFFE X509-SVIDs identify by URI SAN alone; with an empty subject rcgen marks the SAN
        // critical, as RFC 5280 requires.
        params.distinguished_name = DistinguishedName::new();
        params.subject_alt_names = vec![SanType::URI(uri.try_into().map_err(CaError::Sign)?)];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages =
            vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(random_serial());
        params.not_before = now - BACKDATE;
        params.not_after = (now + lifetime).min(root_not_after);
        let leaf = CertificateSigningRequestParams { params, public_key: csr.public_key };
        let cert = leaf.signed_by(&self.issuer).map_err(CaError::Sign)?;
        Ok(Issued {
            leaf_der: cert.der().to_vec(),
            chain: Vec::new(),
            trust_bundle: self.trust_bundle(),
            not_after: leaf.params.not_after.into(),
        })
    }
}

/// Certificates hold whole seconds; truncating here makes [`Issued::not_after`] exact.
fn now_whole_seconds() -> OffsetDateTime {
    let now = OffsetDateTime::now_utc();
    now - Duration::from_nanos(u64::from(now.nanosecond()))
}

fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    // Positive, and no leading zero byte to be stripped: always 16 bytes of DER INTEGER.
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    SerialNumber::from_slice(&bytes)
}

fn describe_sans(sans: &[SanType]) -> String {
    let names: Vec<String> = sans
        .iter()
        .map(|san| match san {
            SanType::URI(u) => format!("URI {}", u.as_str()),
            SanType::DnsName(d) => format!("DNS {}", d.as_str()),
            SanType::Rfc822Name(e) => format!("email {}", e.as_str()),
            SanType::IpAddress(ip) => format!("IP {ip}"),
            other => format!("{other:?}"),
        })
        .collect();
    names.join(", ")
}

fn pem_der(pem: &str) -> Option<Vec<u8>> {
    let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).ok()?;
    (block.label == "CERTIFICATE").then_some(block.contents)
}

fn read(path: &Path) -> Result<String, CaError> {
    fs::read_to_string(path).map_err(|source| CaError::Io { path: path.to_owned(), source })
}

fn write_new(path: &Path, contents: &[u8], mode: u32) -> Result<(), CaError> {
    let io = |source| CaError::Io { path: path.to_owned(), source };
    // create_new + mode: the key is never, even briefly, readable by others or overwritten.
    let mut file = fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(path).map_err(io)?;
    file.write_all(contents).map_err(io)?;
    file.sync_all().map_err(io)
}

fn warn_if_key_readable_by_others(path: &Path) {
    if let Ok(meta) = fs::metadata(path) {
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(path = %path.display(), mode = format!("{mode:o}"), "CA key is readable by others");
        }
    }
}

#[cfg(test)]
mod tests;
