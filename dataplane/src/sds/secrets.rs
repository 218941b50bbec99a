//! The two secrets an Envoy beside the agent asks for, built from the
//! workload credentials: `default` (certificate chain and private key, PEM)
//! and `ROOTCA` (trust bundle, PEM).

use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;

use prost::Message;
use weft_xds_protos::envoy::config::core::v3::DataSource;
use weft_xds_protos::envoy::config::core::v3::data_source::Specifier;
use weft_xds_protos::envoy::extensions::transport_sockets::tls::v3::secret::Type;
use weft_xds_protos::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, Secret, TlsCertificate,
};
use weft_xds_protos::google::protobuf::Any;
use weft_xds_protos::type_url;

use crate::tls::Credentials;

/// The workload certificate chain and key.
pub const DEFAULT_SECRET: &str = "default";
/// The trust bundle.
pub const ROOTCA_SECRET: &str = "ROOTCA";

/// One encoded secret and its version (a digest of its content, so a
/// secret that did not change keeps its version across renewals).
#[derive(Clone, PartialEq, Eq)]
pub struct VersionedSecret {
    /// The version Envoy sees.
    pub version: String,
    /// The `Secret`, packed in an `Any`.
    pub resource: Any,
}

impl std::fmt::Debug for VersionedSecret {
    // The resource holds the private key: never print it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VersionedSecret").field("version", &self.version).finish_non_exhaustive()
    }
}

/// Every secret the agent serves, by name, with a version for the set.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SecretSet {
    /// Changes whenever any secret changes (SotW `version_info`).
    pub version: String,
    /// The secrets by name.
    pub secrets: BTreeMap<String, VersionedSecret>,
}

impl SecretSet {
    /// `default` and `ROOTCA` from `creds`.
    pub fn from_credentials(creds: &Credentials) -> SecretSet {
        let chain_pem: String = creds.chain().iter().map(|c| pem_block("CERTIFICATE", c)).collect();
        let key_pem = pem_block("PRIVATE KEY", creds.private_key().secret_der());
        let bundle_pem: String = creds.trust_bundle().iter().map(|c| pem_block("CERTIFICATE", c)).collect();
        let default = Secret {
            name: DEFAULT_SECRET.into(),
            r#type: Some(Type::TlsCertificate(TlsCertificate {
                certificate_chain: Some(inline(chain_pem)),
                private_key: Some(inline(key_pem)),
                ..TlsCertificate::default()
            })),
        };
        let rootca = Secret {
            name: ROOTCA_SECRET.into(),
            r#type: Some(Type::ValidationContext(CertificateValidationContext {
                trusted_ca: Some(inline(bundle_pem)),
                ..CertificateValidationContext::default()
            })),
        };
        let secrets: BTreeMap<String, VersionedSecret> =
            [default, rootca].into_iter().map(|s| (s.name.clone(), versioned(&s))).collect();
        let mut hasher = DefaultHasher::new();
        for (name, s) in &secrets {
            (name, &s.version).hash(&mut hasher);
        }
        SecretSet { version: format!("{:016x}", hasher.finish()), secrets }
    }

    /// The secret called `name`, if the agent has it.
    pub fn get(&self, name: &str) -> Option<&VersionedSecret> {
        self.secrets.get(name)
    }
}

/// The secrets being served; `None` until the first certificate.
pub type SecretWatch = tokio::sync::watch::Receiver<Option<Arc<SecretSet>>>;

fn versioned(secret: &Secret) -> VersionedSecret {
    let value = secret.encode_to_vec();
    let mut hasher = DefaultHasher::new();
    value.hash(&mut hasher);
    VersionedSecret {
        version: format!("{:016x}", hasher.finish()),
        resource: Any { type_url: type_url::SECRET.to_owned(), value },
    }
}

fn inline(pem: String) -> DataSource {
    DataSource { specifier: Some(Specifier::InlineBytes(pem.into_bytes())), ..DataSource::default() }
}

fn pem_block(tag: &str, der: &[u8]) -> String {
    let lf = pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF);
    pem::encode_config(&pem::Pem::new(tag, der.to_vec()), lf)
}
