//! Reading a workload's SPIFFE ID from its certificate.

use rustls::pki_types::CertificateDer;
use x509_parser::extensions::GeneralName;

pub use weft_xds_protos::spiffe::SpiffeId;

use super::TlsError;

/// The SPIFFE ID in a certificate's URI SAN. An SVID carries exactly one URI
/// SAN; anything else is refused.
pub fn spiffe_id_of(cert: &CertificateDer<'_>) -> Result<SpiffeId, TlsError> {
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
    Ok(uri.parse()?)
}
