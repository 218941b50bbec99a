//! The mesh's certificate authority: a root, kept on disk in local mode, and optionally an
//! intermediate signed by it, that signs workload CSRs into X.509-SVIDs carrying exactly one
//! SPIFFE URI SAN.
//!
//! The CA directory holds `root-cert.pem` and `root-key.pem` (0600), made on the first start.
//! An operator may add `ca-cert.pem` + `ca-key.pem`, an intermediate the root signed: it then
//! signs every leaf and is sent to workloads as their chain (the root key may then be kept
//! offline: `root-key.pem` is not needed while an intermediate is present). `extra-roots.pem`
//! (any number of PEM certificates) is appended to the trust bundle, so a new root can be
//! trusted mesh-wide before it starts signing.
//!
//! The workload's private key never reaches this module: it only sees the CSR's public key,
//! and everything else the CSR asks for (subject, key usages, extensions) is ignored in favour
//! of what the mesh decides.

use std::fs;
use std::io::Write;
use std::net::IpAddr;
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
/// File name of the optional intermediate certificate (PEM) inside the CA directory.
pub const INTERMEDIATE_CERT_FILE: &str = "ca-cert.pem";
/// File name of the optional intermediate's private key (PKCS#8 PEM, mode 0600).
pub const INTERMEDIATE_KEY_FILE: &str = "ca-key.pem";
/// File name of the optional extra trusted roots (PEM, any number) inside the CA directory.
pub const EXTRA_ROOTS_FILE: &str = "extra-roots.pem";

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
    /// Only one of the intermediate certificate and key exists.
    #[error("{present} exists but {missing} does not; an intermediate needs both")]
    IncompleteIntermediate {
        /// The file that exists.
        present: PathBuf,
        /// The file that is missing.
        missing: PathBuf,
    },
    /// The intermediate cannot sign for this root (unparsable, not a CA, not signed by the
    /// root, expired, or its key does not match).
    #[error("invalid intermediate CA: {0}")]
    InvalidIntermediate(String),
    /// `extra-roots.pem` holds something other than certificates.
    #[error("invalid extra root: {0}")]
    InvalidExtraRoot(String),
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
    /// The root (or the intermediate) has expired, so nothing it signs would verify.
    #[error("the signing CA certificate expired at {0:?}")]
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
    /// When the leaf starts being valid (whole seconds, backdated a minute for clock skew).
    pub not_before: SystemTime,
    /// When the leaf expires (whole seconds, as in the certificate).
    pub not_after: SystemTime,
    /// The leaf's serial number, lowercase hex.
    pub serial: String,
}

/// The mesh CA: a root certificate, the key that signs leaves (the root's, or an
/// intermediate's), and the trust bundle.
pub struct CertificateAuthority {
    trust_domain: String,
    leaf_lifetime: Duration,
    /// Signs leaves: the root, or the intermediate when there is one.
    issuer: Issuer<'static, KeyPair>,
    /// The issuer's own expiry (the earlier of root and intermediate).
    issuer_not_after: SystemTime,
    root_der: Vec<u8>,
    root_pem: String,
    root_not_after: SystemTime,
    /// The intermediate, DER, when it signs (empty otherwise).
    chain: Vec<Vec<u8>>,
    /// The root then extra roots, DER.
    bundle: Vec<Vec<u8>>,
    /// The same roots, PEM.
    bundle_pem: String,
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        f.debug_struct("CertificateAuthority")
            .field("trust_domain", &self.trust_domain)
            .field("root_not_after", &self.root_not_after)
            .field("intermediate", &!self.chain.is_empty())
            .field("roots", &self.bundle.len())
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
        let root_der = cert.der().to_vec();
        let root_pem = cert.pem();
        Ok(Self {
            trust_domain,
            leaf_lifetime: config.leaf_lifetime,
            bundle: vec![root_der.clone()],
            bundle_pem: root_pem.clone(),
            root_der,
            root_pem,
            root_not_after: params.not_after.into(),
            issuer_not_after: params.not_after.into(),
            chain: Vec::new(),
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
        let root_not_after: SystemTime = parsed.validity().not_after.to_datetime().into();
        let issuer = Issuer::from_ca_cert_der(&der.as_slice().into(), key).map_err(invalid_cert)?;
        Ok(Self {
            trust_domain,
            leaf_lifetime: config.leaf_lifetime,
            issuer,
            issuer_not_after: root_not_after,
            bundle: vec![der.clone()],
            bundle_pem: cert_pem.to_owned(),
            root_der: der,
            root_pem: cert_pem.to_owned(),
            root_not_after,
            chain: Vec::new(),
        })
    }

    /// A CA whose root key is not at hand: `intermediate_cert_pem` (signed by the root in
    /// `root_cert_pem`) and its key sign every leaf.
    pub fn from_intermediate_pem(
        root_cert_pem: &str,
        intermediate_cert_pem: &str,
        intermediate_key_pem: &str,
        config: CaConfig,
    ) -> Result<Self, CaError> {
        let trust_domain = validate_trust_domain(config.trust_domain)?;
        let invalid_cert = |source| CaError::InvalidRoot { what: "certificate", source };
        let root_der =
            pem_der(root_cert_pem).ok_or_else(|| invalid_cert(rcgen::Error::CouldNotParseCertificate))?;
        let (_, root) = x509_parser::parse_x509_certificate(&root_der)
            .map_err(|_| invalid_cert(rcgen::Error::CouldNotParseCertificate))?;
        let root_not_after: SystemTime = root.validity().not_after.to_datetime().into();
        let (issuer, intermediate_der, intermediate_not_after) =
            load_intermediate(&root, intermediate_cert_pem, intermediate_key_pem)?;
        Ok(Self {
            trust_domain,
            leaf_lifetime: config.leaf_lifetime,
            issuer,
            issuer_not_after: intermediate_not_after.min(root_not_after),
            bundle: vec![root_der.clone()],
            bundle_pem: root_cert_pem.to_owned(),
            root_der,
            root_pem: root_cert_pem.to_owned(),
            root_not_after,
            chain: vec![intermediate_der],
        })
    }

    /// Makes the intermediate (signed by this CA's root) sign from now on.
    pub fn with_intermediate(self, cert_pem: &str, key_pem: &str) -> Result<Self, CaError> {
        if !self.chain.is_empty() {
            return Err(CaError::InvalidIntermediate("this CA already signs with an intermediate".into()));
        }
        let (_, root) = x509_parser::parse_x509_certificate(&self.root_der).map_err(|_| {
            CaError::InvalidRoot { what: "certificate", source: rcgen::Error::CouldNotParseCertificate }
        })?;
        let (issuer, der, not_after) = load_intermediate(&root, cert_pem, key_pem)?;
        Ok(Self { issuer, issuer_not_after: not_after.min(self.root_not_after), chain: vec![der], ..self })
    }

    /// Appends every certificate of `pem` to the trust bundle (roots already in it are skipped).
    /// An empty text adds nothing; anything else must be PEM CA certificates only.
    pub fn with_extra_roots(mut self, pem: &str) -> Result<Self, CaError> {
        if pem.trim().is_empty() {
            return Ok(self);
        }
        let mut found = 0;
        for block in x509_parser::pem::Pem::iter_from_buffer(pem.as_bytes()) {
            let block = block.map_err(|e| CaError::InvalidExtraRoot(e.to_string()))?;
            if block.label != "CERTIFICATE" {
                return Err(CaError::InvalidExtraRoot(format!("unexpected PEM block {:?}", block.label)));
            }
            let (_, cert) = x509_parser::parse_x509_certificate(&block.contents)
                .map_err(|e| CaError::InvalidExtraRoot(e.to_string()))?;
            let is_ca = cert.basic_constraints().ok().flatten().is_some_and(|bc| bc.value.ca);
            if !is_ca {
                return Err(CaError::InvalidExtraRoot(format!("{} is not a CA certificate", cert.subject())));
            }
            found += 1;
            if !self.bundle.contains(&block.contents) {
                if !self.bundle_pem.ends_with('\n') {
                    self.bundle_pem.push('\n');
                }
                self.bundle_pem.push_str(&pem_encode(&block.contents));
                self.bundle.push(block.contents);
            }
        }
        if found == 0 {
            return Err(CaError::InvalidExtraRoot("no certificate found".into()));
        }
        Ok(self)
    }

    /// Loads the CA from `dir`, or, when it holds no root, generates one and writes it there
    /// (directory 0700, key 0600). Then adds the intermediate ([`INTERMEDIATE_CERT_FILE`],
    /// [`INTERMEDIATE_KEY_FILE`]) and the extra roots ([`EXTRA_ROOTS_FILE`]) when present.
    pub fn load_or_generate(dir: &Path, config: CaConfig) -> Result<Self, CaError> {
        let cert_path = dir.join(ROOT_CERT_FILE);
        let key_path = dir.join(ROOT_KEY_FILE);
        let inter_cert_path = dir.join(INTERMEDIATE_CERT_FILE);
        let inter_key_path = dir.join(INTERMEDIATE_KEY_FILE);
        let intermediate = match (inter_cert_path.exists(), inter_key_path.exists()) {
            (true, true) => {
                warn_if_key_readable_by_others(&inter_key_path);
                Some((read(&inter_cert_path)?, read(&inter_key_path)?))
            }
            (false, false) => None,
            (true, false) => {
                return Err(CaError::IncompleteIntermediate {
                    present: inter_cert_path,
                    missing: inter_key_path,
                });
            }
            (false, true) => {
                return Err(CaError::IncompleteIntermediate {
                    present: inter_key_path,
                    missing: inter_cert_path,
                });
            }
        };
        let mut ca = match (cert_path.exists(), key_path.exists(), intermediate) {
            (true, true, intermediate) => {
                warn_if_key_readable_by_others(&key_path);
                let cert = read(&cert_path)?;
                let key = read(&key_path)?;
                let ca = Self::from_pem(&cert, &key, config)?;
                tracing::info!(dir = %dir.display(), not_after = ?ca.root_not_after, "loaded CA root");
                match intermediate {
                    Some((cert, key)) => ca.with_intermediate(&cert, &key)?,
                    None => ca,
                }
            }
            // The root key is kept offline; the intermediate signs.
            (true, false, Some((inter_cert, inter_key))) => {
                let cert = read(&cert_path)?;
                let ca = Self::from_intermediate_pem(&cert, &inter_cert, &inter_key, config)?;
                tracing::info!(dir = %dir.display(), not_after = ?ca.root_not_after, "loaded CA root certificate (no root key)");
                ca
            }
            (false, false, Some(_)) => {
                return Err(CaError::IncompleteRoot { present: inter_cert_path, missing: cert_path });
            }
            (false, false, None) => {
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
                ca
            }
            (true, false, None) => {
                return Err(CaError::IncompleteRoot { present: cert_path, missing: key_path });
            }
            (false, true, _) => {
                return Err(CaError::IncompleteRoot { present: key_path, missing: cert_path });
            }
        };
        if !ca.chain.is_empty() {
            tracing::info!(not_after = ?ca.issuer_not_after, "an intermediate CA signs workload certificates");
        }
        let extra_path = dir.join(EXTRA_ROOTS_FILE);
        if extra_path.exists() {
            ca = ca.with_extra_roots(&read(&extra_path)?)?;
            tracing::info!(roots = ca.bundle.len(), "trust bundle includes extra roots");
        }
        Ok(ca)
    }

    /// Writes a new intermediate CA, signed by the root in `dir`, to [`INTERMEDIATE_CERT_FILE`]
    /// and [`INTERMEDIATE_KEY_FILE`] there (key 0600; neither file may exist yet). It is valid
    /// for `lifetime` (capped at the root's expiry) and takes effect on the next load.
    pub fn create_intermediate(dir: &Path, trust_domain: &str, lifetime: Duration) -> Result<(), CaError> {
        let root_pem = read(&dir.join(ROOT_CERT_FILE))?;
        let root_key_pem = read(&dir.join(ROOT_KEY_FILE))?;
        let root_key = KeyPair::from_pem(&root_key_pem)
            .map_err(|source| CaError::InvalidRoot { what: "key", source })?;
        let invalid_cert = |source| CaError::InvalidRoot { what: "certificate", source };
        let root_der =
            pem_der(&root_pem).ok_or_else(|| invalid_cert(rcgen::Error::CouldNotParseCertificate))?;
        let (_, root) = x509_parser::parse_x509_certificate(&root_der)
            .map_err(|_| invalid_cert(rcgen::Error::CouldNotParseCertificate))?;
        let root_not_after = OffsetDateTime::from(SystemTime::from(root.validity().not_after.to_datetime()));
        let root_issuer =
            Issuer::from_ca_cert_der(&root_der.as_slice().into(), root_key).map_err(invalid_cert)?;

        let key = KeyPair::generate().map_err(CaError::Sign)?;
        let now = now_whole_seconds();
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::OrganizationName, trust_domain);
        params.distinguished_name.push(DnType::CommonName, "weft intermediate CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        params.use_authority_key_identifier_extension = true;
        params.not_before = now - BACKDATE;
        params.not_after = (now + lifetime).min(root_not_after);
        params.serial_number = Some(random_serial());
        let cert = params.signed_by(&key, &root_issuer).map_err(CaError::Sign)?;
        write_new(&dir.join(INTERMEDIATE_KEY_FILE), key.serialize_pem().as_bytes(), 0o600)?;
        write_new(&dir.join(INTERMEDIATE_CERT_FILE), cert.pem().as_bytes(), 0o644)
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

    /// The roots workloads should trust (the root, then any extra roots), DER.
    pub fn trust_bundle(&self) -> Vec<Vec<u8>> {
        self.bundle.clone()
    }

    /// The trust bundle as concatenated PEM (what `--ca-file` of a proxy wants).
    pub fn trust_bundle_pem(&self) -> &str {
        &self.bundle_pem
    }

    /// Certificates between a leaf and the root, leaf issuer first, DER (the intermediate, or
    /// nothing while the root signs directly).
    pub fn chain(&self) -> &[Vec<u8>] {
        &self.chain
    }

    /// When the certificate that signs leaves expires: no leaf outlives it.
    pub fn issuer_not_after(&self) -> SystemTime {
        self.issuer_not_after
    }

    /// Issues a serving certificate for the control plane itself: a fresh key (returned, it
    /// never leaves the process), `identity` as URI SAN plus `dns_names` and `ips`, valid for
    /// `lifetime` (capped at the issuer's expiry).
    pub fn issue_server_cert(
        &self,
        identity: &SpiffeId,
        dns_names: &[&str],
        ips: &[IpAddr],
        lifetime: Duration,
    ) -> Result<(Issued, KeyPair), CaError> {
        let key = KeyPair::generate().map_err(CaError::Sign)?;
        let mut sans = vec![SanType::URI(identity.to_string().try_into().map_err(CaError::Sign)?)];
        for name in dns_names {
            sans.push(SanType::DnsName((*name).try_into().map_err(CaError::Sign)?));
        }
        sans.extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
        let params = self.leaf_params(identity, sans, lifetime)?;
        let cert = params.signed_by(&key, &self.issuer).map_err(CaError::Sign)?;
        Ok((self.issued(cert.der().to_vec(), &params), key))
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

        let params =
            self.leaf_params(identity, vec![SanType::URI(uri.try_into().map_err(CaError::Sign)?)], lifetime)?;
        let leaf = CertificateSigningRequestParams { params, public_key: csr.public_key };
        let cert = leaf.signed_by(&self.issuer).map_err(CaError::Sign)?;
        Ok(self.issued(cert.der().to_vec(), &leaf.params))
    }

    /// What every leaf gets: `sans`, client and server auth, digital signatures only, no CA
    /// rights, a random serial, `lifetime` from a minute ago (capped at the issuer's expiry).
    fn leaf_params(
        &self,
        identity: &SpiffeId,
        sans: Vec<SanType>,
        lifetime: Duration,
    ) -> Result<CertificateParams, CaError> {
        if identity.trust_domain() != self.trust_domain {
            return Err(CaError::ForeignTrustDomain {
                identity: identity.clone(),
                trust_domain: self.trust_domain.clone(),
            });
        }
        if lifetime.is_zero() {
            return Err(CaError::ZeroLifetime);
        }
        let now = now_whole_seconds();
        let issuer_not_after = OffsetDateTime::from(self.issuer_not_after);
        if issuer_not_after <= now {
            return Err(CaError::RootExpired(self.issuer_not_after));
        }
        let mut params = CertificateParams::default();
        // SPIFFE X509-SVIDs identify by URI SAN alone; with an empty subject rcgen marks the SAN
        // critical, as RFC 5280 requires.
        params.distinguished_name = DistinguishedName::new();
        params.subject_alt_names = sans;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages =
            vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(random_serial());
        params.not_before = now - BACKDATE;
        params.not_after = (now + lifetime).min(issuer_not_after);
        Ok(params)
    }

    fn issued(&self, leaf_der: Vec<u8>, params: &CertificateParams) -> Issued {
        let serial = params.serial_number.as_ref().map(|s| hex(&s.to_bytes())).unwrap_or_default();
        Issued {
            leaf_der,
            chain: self.chain.clone(),
            trust_bundle: self.trust_bundle(),
            not_before: params.not_before.into(),
            not_after: params.not_after.into(),
            serial,
        }
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

/// Loads an intermediate and checks it may sign for `root`: a CA, issued and signed by the
/// root, currently valid, its key matching. Returns its issuer, DER and expiry.
fn load_intermediate(
    root: &x509_parser::certificate::X509Certificate<'_>,
    cert_pem: &str,
    key_pem: &str,
) -> Result<(Issuer<'static, KeyPair>, Vec<u8>, SystemTime), CaError> {
    let invalid = |msg: String| CaError::InvalidIntermediate(msg);
    let key = KeyPair::from_pem(key_pem).map_err(|e| invalid(format!("key: {e}")))?;
    let der = pem_der(cert_pem).ok_or_else(|| invalid("certificate: no PEM CERTIFICATE block".into()))?;
    let (_, cert) =
        x509_parser::parse_x509_certificate(&der).map_err(|e| invalid(format!("certificate: {e}")))?;
    if !cert.basic_constraints().ok().flatten().is_some_and(|bc| bc.value.ca) {
        return Err(invalid(format!("{} is not a CA certificate", cert.subject())));
    }
    if cert.issuer() != root.subject() {
        return Err(invalid(format!("issued by {}, not by the root {}", cert.issuer(), root.subject())));
    }
    cert.verify_signature(Some(root.public_key()))
        .map_err(|e| invalid(format!("its signature does not verify with the root's key: {e}")))?;
    if !cert.validity().is_valid() {
        return Err(invalid(format!(
            "valid from {} to {}, not now",
            cert.validity().not_before,
            cert.validity().not_after
        )));
    }
    if cert.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
        return Err(invalid("the key does not match the certificate's public key".into()));
    }
    let not_after = cert.validity().not_after.to_datetime().into();
    let issuer = Issuer::from_ca_cert_der(&der.as_slice().into(), key)
        .map_err(|e| invalid(format!("certificate: {e}")))?;
    Ok((issuer, der, not_after))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// PEM-encodes one DER certificate.
fn pem_encode(der: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut b64 = String::with_capacity(der.len().div_ceil(3) * 4);
    for chunk in der.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                b64.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 0x3f) as usize]));
            } else {
                b64.push('=');
            }
        }
    }
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
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
