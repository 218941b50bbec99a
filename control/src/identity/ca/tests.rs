#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;

use rcgen::{CertificateParams, KeyPair};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::*;

const HOUR: Duration = Duration::from_secs(3600);

fn cart() -> SpiffeId {
    SpiffeId::new("cluster.local", "shop", "cart").unwrap()
}

/// A CSR from a fresh workload key asking for `sans` (URIs); returns the key's public part too.
fn csr(sans: &[&str]) -> (Vec<u8>, Vec<u8>) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    params.subject_alt_names = sans.iter().map(|s| SanType::URI((*s).try_into().unwrap())).collect();
    let csr = params.serialize_request(&key).unwrap();
    (csr.der().to_vec(), key.public_key_raw().to_vec())
}

fn parse(der: &[u8]) -> X509Certificate<'_> {
    X509Certificate::from_der(der).unwrap().1
}

fn uri_sans(cert: &X509Certificate<'_>) -> Vec<String> {
    let san = cert.subject_alternative_name().unwrap().unwrap();
    san.value
        .general_names
        .iter()
        .map(|name| match name {
            GeneralName::URI(uri) => uri.to_string(),
            other => format!("non-URI SAN {other:?}"),
        })
        .collect()
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn root_is_persisted_with_private_key_mode_0600_and_reloaded_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let ca_dir = dir.path().join("ca");
    let first = CertificateAuthority::load_or_generate(&ca_dir, CaConfig::default()).unwrap();
    assert_eq!(mode(&ca_dir.join(ROOT_KEY_FILE)), 0o600);
    assert_eq!(mode(&ca_dir), 0o700);

    let second = CertificateAuthority::load_or_generate(&ca_dir, CaConfig::default()).unwrap();
    assert_eq!(second.root_der(), first.root_der(), "second start must load, not regenerate");
    assert_eq!(second.root_not_after(), first.root_not_after());

    // The reloaded key is the root's key: what it signs verifies against the first root.
    let (csr_der, _) = csr(&[]);
    let issued = second.sign_csr(&csr_der, &cart(), HOUR).unwrap();
    let root = parse(first.root_der());
    parse(&issued.leaf_der).verify_signature(Some(root.public_key())).unwrap();
}

#[test]
fn generated_root_is_a_ca_valid_for_ten_years_by_default() {
    let ca = CertificateAuthority::generate(CaConfig::default()).unwrap();
    let root = parse(ca.root_der());
    assert!(root.basic_constraints().unwrap().unwrap().value.ca);
    let lifetime = root.validity().time_to_expiration().unwrap();
    let ten_years = time::Duration::days(3650);
    assert!(lifetime <= ten_years && lifetime > ten_years - time::Duration::minutes(5), "{lifetime}");
    assert_eq!(ca.trust_domain(), "cluster.local");
    assert_eq!(ca.leaf_lifetime(), Duration::from_secs(24 * 3600));
}

#[test]
fn half_present_root_is_refused_rather_than_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    CertificateAuthority::load_or_generate(dir.path(), CaConfig::default()).unwrap();
    fs::remove_file(dir.path().join(ROOT_KEY_FILE)).unwrap();
    let err = CertificateAuthority::load_or_generate(dir.path(), CaConfig::default()).unwrap_err();
    assert!(matches!(err, CaError::IncompleteRoot { .. }), "{err}");
    assert!(dir.path().join(ROOT_CERT_FILE).exists(), "the certificate is left alone");
}

#[test]
fn root_certificate_with_someone_elses_key_is_refused() {
    let a = CertificateAuthority::generate(CaConfig::default()).unwrap();
    let b = CertificateAuthority::generate(CaConfig::default()).unwrap();
    let err =
        CertificateAuthority::from_pem(a.root_pem(), &b.issuer.key().serialize_pem(), CaConfig::default())
            .unwrap_err();
    assert!(matches!(err, CaError::KeyMismatch), "{err}");
}

#[test]
fn leaf_carries_exactly_the_spiffe_san_chains_to_root_and_expires_at_requested_lifetime() {
    let ca = CertificateAuthority::generate(CaConfig::default()).unwrap();
    let (csr_der, workload_public_key) = csr(&[]);
    let before = SystemTime::now();
    let issued = ca.sign_csr(&csr_der, &cart(), HOUR).unwrap();

    let leaf = parse(&issued.leaf_der);
    assert_eq!(uri_sans(&leaf), ["spiffe://cluster.local/ns/shop/sa/cart"]);
    assert!(leaf.subject_alternative_name().unwrap().unwrap().critical, "empty subject needs a critical SAN");
    let eku = leaf.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth && eku.client_auth);
    assert!(!leaf.basic_constraints().unwrap().unwrap().value.ca);
    assert_eq!(leaf.public_key().subject_public_key.data.as_ref(), workload_public_key.as_slice());

    let root = parse(ca.root_der());
    assert_eq!(leaf.issuer(), root.subject());
    leaf.verify_signature(Some(root.public_key())).unwrap();
    let other_root = CertificateAuthority::generate(CaConfig::default()).unwrap();
    assert!(leaf.verify_signature(Some(parse(other_root.root_der()).public_key())).is_err());
    assert_eq!(issued.trust_bundle, vec![ca.root_der().to_vec()]);
    assert!(issued.chain.is_empty());

    let not_after = SystemTime::from(leaf.validity().not_after.to_datetime());
    assert_eq!(not_after, issued.not_after);
    let lifetime = not_after.duration_since(before).unwrap();
    assert!(lifetime > HOUR - Duration::from_secs(2) && lifetime <= HOUR, "{lifetime:?}");
    assert!(leaf.validity().is_valid());
}

#[test]
fn csr_asking_for_its_own_identity_is_signed_with_what_the_mesh_decides() {
    let ca = CertificateAuthority::generate(CaConfig::default()).unwrap();
    // The shape weft-proxy sends: its SPIFFE URI plus EKUs; a subject it asks for is dropped.
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    params.subject_alt_names =
        vec![SanType::URI("spiffe://cluster.local/ns/shop/sa/cart".try_into().unwrap())];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::CodeSigning];
    let csr_der = params.serialize_request(&key).unwrap().der().to_vec();
    let issued = ca.sign_csr(&csr_der, &cart(), HOUR).unwrap();
    let leaf = parse(&issued.leaf_der);
    assert_eq!(uri_sans(&leaf), ["spiffe://cluster.local/ns/shop/sa/cart"]);
    let eku = leaf.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth && eku.client_auth && !eku.code_signing);
    assert_eq!(leaf.subject().iter_attributes().count(), 0);
}

#[test]
fn csr_asking_for_another_name_is_refused() {
    let ca = CertificateAuthority::generate(CaConfig::default()).unwrap();
    for sans in [
        &["spiffe://cluster.local/ns/shop/sa/payments"][..],
        &["spiffe://cluster.local/ns/shop/sa/cart", "spiffe://cluster.local/ns/shop/sa/payments"],
        &["https://evil.example"],
    ] {
        let (csr_der, _) = csr(sans);
        let err = ca.sign_csr(&csr_der, &cart(), HOUR).unwrap_err();
        assert!(matches!(err, CaError::CsrIdentityMismatch { .. }), "{sans:?}: {err}");
    }
}

#[test]
fn identity_outside_the_trust_domain_is_refused() {
    let ca = CertificateAuthority::generate(CaConfig::default()).unwrap();
    let (csr_der, _) = csr(&[]);
    let foreign = SpiffeId::new("other.domain", "shop", "cart").unwrap();
    let err = ca.sign_csr(&csr_der, &foreign, HOUR).unwrap_err();
    assert!(matches!(err, CaError::ForeignTrustDomain { .. }), "{err}");
}

#[test]
fn malformed_or_forged_csr_is_refused_as_invalid() {
    let ca = CertificateAuthority::generate(CaConfig::default()).unwrap();
    let err = ca.sign_csr(b"not a csr", &cart(), HOUR).unwrap_err();
    assert!(matches!(err, CaError::InvalidCsr(_)), "{err}");

    // Flip a byte of the signature (the CSR's last bytes): the self-signature no longer verifies.
    let (mut csr_der, _) = csr(&[]);
    let last = csr_der.len() - 1;
    csr_der[last] ^= 0x01;
    let err = ca.sign_csr(&csr_der, &cart(), HOUR).unwrap_err();
    assert!(matches!(err, CaError::InvalidCsr(_)), "{err}");
}

#[test]
fn csr_asking_to_be_a_ca_is_refused() {
    let ca = CertificateAuthority::generate(CaConfig::default()).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let csr_der = params.serialize_request(&key).unwrap().der().to_vec();
    let err = ca.sign_csr(&csr_der, &cart(), HOUR).unwrap_err();
    assert!(matches!(err, CaError::CsrRequestsCa), "{err}");
}

#[test]
fn leaf_never_outlives_the_root() {
    let config = CaConfig { root_lifetime: 2 * HOUR, ..CaConfig::default() };
    let ca = CertificateAuthority::generate(config).unwrap();
    let (csr_der, _) = csr(&[]);
    let issued = ca.sign_csr(&csr_der, &cart(), 24 * HOUR).unwrap();
    assert_eq!(issued.not_after, ca.root_not_after());
}

#[test]
fn zero_lifetime_and_invalid_trust_domain_are_refused() {
    let ca = CertificateAuthority::generate(CaConfig::default()).unwrap();
    let (csr_der, _) = csr(&[]);
    assert!(matches!(ca.sign_csr(&csr_der, &cart(), Duration::ZERO), Err(CaError::ZeroLifetime)));
    let config = CaConfig { trust_domain: "Not A Domain".into(), ..CaConfig::default() };
    assert!(matches!(CertificateAuthority::generate(config), Err(CaError::TrustDomain(_))));
}

/// Verifies `leaf` + `intermediates` as a client certificate against `bundle`, as the control
/// plane's rustls does (webpki: chain, validity, clientAuth EKU).
fn verify_client_chain(
    bundle: &[Vec<u8>],
    leaf: &[u8],
    intermediates: &[Vec<u8>],
) -> Result<(), rustls::Error> {
    use rustls::pki_types::{CertificateDer, UnixTime};
    let mut roots = rustls::RootCertStore::empty();
    for der in bundle {
        roots.add(CertificateDer::from(der.clone())).unwrap();
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider).build().unwrap();
    let intermediates: Vec<CertificateDer<'_>> =
        intermediates.iter().map(|d| CertificateDer::from(d.as_slice())).collect();
    verifier.verify_client_cert(&CertificateDer::from(leaf), &intermediates, UnixTime::now()).map(|_| ())
}

fn with_intermediate(dir: &Path) -> CertificateAuthority {
    CertificateAuthority::load_or_generate(dir, CaConfig::default()).unwrap();
    CertificateAuthority::create_intermediate(dir, "cluster.local", 24 * HOUR).unwrap();
    CertificateAuthority::load_or_generate(dir, CaConfig::default()).unwrap()
}

#[test]
fn leaf_key_usage_is_digital_signature_only_and_serial_is_reported() {
    let ca = CertificateAuthority::generate(CaConfig::default()).unwrap();
    let (csr_der, _) = csr(&[]);
    let issued = ca.sign_csr(&csr_der, &cart(), HOUR).unwrap();
    let leaf = parse(&issued.leaf_der);
    let ku = leaf.key_usage().unwrap().unwrap().value;
    assert!(ku.digital_signature() && !ku.key_encipherment() && !ku.key_cert_sign());
    assert_eq!(issued.serial, leaf.raw_serial().iter().map(|b| format!("{b:02x}")).collect::<String>());
    assert_eq!(issued.not_before, SystemTime::from(leaf.validity().not_before.to_datetime()));
    verify_client_chain(&ca.trust_bundle(), &issued.leaf_der, &issued.chain).unwrap();
}

#[test]
fn intermediate_signs_leaves_and_is_sent_as_their_chain() {
    let dir = tempfile::tempdir().unwrap();
    let ca = with_intermediate(dir.path());
    assert_eq!(mode(&dir.path().join(INTERMEDIATE_KEY_FILE)), 0o600);
    assert_eq!(ca.chain().len(), 1);
    assert_eq!(ca.trust_bundle(), vec![ca.root_der().to_vec()], "the intermediate is not a trust anchor");

    let (csr_der, _) = csr(&[]);
    let issued = ca.sign_csr(&csr_der, &cart(), HOUR).unwrap();
    assert_eq!(issued.chain, ca.chain());
    let leaf = parse(&issued.leaf_der);
    let inter = parse(&issued.chain[0]);
    let root = parse(ca.root_der());
    assert_eq!(leaf.issuer(), inter.subject());
    leaf.verify_signature(Some(inter.public_key())).unwrap();
    inter.verify_signature(Some(root.public_key())).unwrap();
    assert!(leaf.verify_signature(Some(root.public_key())).is_err(), "the root no longer signs leaves");
    verify_client_chain(&issued.trust_bundle, &issued.leaf_der, &issued.chain).unwrap();
    assert!(verify_client_chain(&issued.trust_bundle, &issued.leaf_der, &[]).is_err(), "needs the chain");
}

#[test]
fn root_key_may_stay_offline_while_an_intermediate_signs() {
    let dir = tempfile::tempdir().unwrap();
    let first = with_intermediate(dir.path());
    fs::remove_file(dir.path().join(ROOT_KEY_FILE)).unwrap();
    let ca = CertificateAuthority::load_or_generate(dir.path(), CaConfig::default()).unwrap();
    assert_eq!(ca.root_der(), first.root_der());
    let (csr_der, _) = csr(&[]);
    let issued = ca.sign_csr(&csr_der, &cart(), HOUR).unwrap();
    verify_client_chain(&issued.trust_bundle, &issued.leaf_der, &issued.chain).unwrap();
}

#[test]
fn intermediate_of_another_root_or_half_present_is_refused() {
    let other = tempfile::tempdir().unwrap();
    with_intermediate(other.path());
    let dir = tempfile::tempdir().unwrap();
    CertificateAuthority::load_or_generate(dir.path(), CaConfig::default()).unwrap();
    fs::copy(other.path().join(INTERMEDIATE_CERT_FILE), dir.path().join(INTERMEDIATE_CERT_FILE)).unwrap();
    let err = CertificateAuthority::load_or_generate(dir.path(), CaConfig::default()).unwrap_err();
    assert!(matches!(err, CaError::IncompleteIntermediate { .. }), "{err}");
    fs::copy(other.path().join(INTERMEDIATE_KEY_FILE), dir.path().join(INTERMEDIATE_KEY_FILE)).unwrap();
    let err = CertificateAuthority::load_or_generate(dir.path(), CaConfig::default()).unwrap_err();
    assert!(matches!(err, CaError::InvalidIntermediate(_)), "{err}");

    // Right certificate, wrong key.
    let dir = tempfile::tempdir().unwrap();
    with_intermediate(dir.path());
    fs::remove_file(dir.path().join(INTERMEDIATE_KEY_FILE)).unwrap();
    fs::copy(other.path().join(INTERMEDIATE_KEY_FILE), dir.path().join(INTERMEDIATE_KEY_FILE)).unwrap();
    let err = CertificateAuthority::load_or_generate(dir.path(), CaConfig::default()).unwrap_err();
    assert!(err.to_string().contains("key does not match"), "{err}");
}

#[test]
fn extra_roots_join_the_trust_bundle_for_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let old = CertificateAuthority::load_or_generate(dir.path(), CaConfig::default()).unwrap();
    let next = CertificateAuthority::generate(CaConfig::default()).unwrap();
    let third = CertificateAuthority::generate(CaConfig::default()).unwrap();
    fs::write(dir.path().join(EXTRA_ROOTS_FILE), format!("{}{}", next.root_pem(), third.root_pem())).unwrap();
    let ca = CertificateAuthority::load_or_generate(dir.path(), CaConfig::default()).unwrap();
    assert_eq!(ca.root_der(), old.root_der(), "the old root still signs");
    assert_eq!(
        ca.trust_bundle(),
        vec![old.root_der().to_vec(), next.root_der().to_vec(), third.root_der().to_vec()]
    );

    // Leaves of the old and the next root both verify against the bundle workloads get.
    let (csr_der, _) = csr(&[]);
    let from_old = ca.sign_csr(&csr_der, &cart(), HOUR).unwrap();
    let from_next = next.sign_csr(&csr_der, &cart(), HOUR).unwrap();
    verify_client_chain(&from_old.trust_bundle, &from_next.leaf_der, &[]).unwrap();
    verify_client_chain(&from_old.trust_bundle, &from_old.leaf_der, &[]).unwrap();
    let stranger = CertificateAuthority::generate(CaConfig::default()).unwrap();
    let from_stranger = stranger.sign_csr(&csr_der, &cart(), HOUR).unwrap();
    assert!(verify_client_chain(&from_old.trust_bundle, &from_stranger.leaf_der, &[]).is_err());

    // The PEM bundle holds the same certificates.
    let pem_ders: Vec<Vec<u8>> = x509_parser::pem::Pem::iter_from_buffer(ca.trust_bundle_pem().as_bytes())
        .map(|p| p.unwrap().contents)
        .collect();
    assert_eq!(pem_ders, ca.trust_bundle());
}

#[test]
fn extra_roots_that_are_not_ca_certificates_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ca = CertificateAuthority::load_or_generate(dir.path(), CaConfig::default()).unwrap();
    let (csr_der, _) = csr(&[]);
    let leaf = ca.sign_csr(&csr_der, &cart(), HOUR).unwrap();
    let leaf_pem = format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        // A leaf is not a root: re-encode it with the module's own PEM writer.
        pem_encode(&leaf.leaf_der).lines().filter(|l| !l.starts_with("-----")).collect::<Vec<_>>().join("\n")
    );
    for bad in ["not pem at all", leaf_pem.as_str()] {
        fs::write(dir.path().join(EXTRA_ROOTS_FILE), bad).unwrap();
        let err = CertificateAuthority::load_or_generate(dir.path(), CaConfig::default()).unwrap_err();
        assert!(matches!(err, CaError::InvalidExtraRoot(_)), "{bad:?}: {err}");
    }
    // An emptied file (after a rotation) is no extra root at all.
    fs::write(dir.path().join(EXTRA_ROOTS_FILE), "\n").unwrap();
    let ca = CertificateAuthority::load_or_generate(dir.path(), CaConfig::default()).unwrap();
    assert_eq!(ca.trust_bundle().len(), 1);
}

#[test]
fn server_certificate_names_the_control_plane_by_spiffe_id_dns_and_ip() {
    use rustls::client::danger::ServerCertVerifier;
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    let dir = tempfile::tempdir().unwrap();
    let ca = with_intermediate(dir.path());
    let control = SpiffeId::new("cluster.local", "weft-system", "weft-control").unwrap();
    let ip: IpAddr = "127.0.0.1".parse().unwrap();
    let (issued, _key) =
        ca.issue_server_cert(&control, &["localhost", "weft-control.weft-system.svc"], &[ip], HOUR).unwrap();
    let leaf = parse(&issued.leaf_der);
    let names: Vec<String> = leaf
        .subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names
        .iter()
        .map(|n| format!("{n:?}"))
        .collect();
    assert_eq!(names.len(), 4, "{names:?}");
    assert!(names[0].contains("spiffe://cluster.local/ns/weft-system/sa/weft-control"), "{names:?}");

    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(ca.root_der().to_vec())).unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let verifier =
        rustls::client::WebPkiServerVerifier::builder_with_provider(roots.into(), provider).build().unwrap();
    let inter: Vec<CertificateDer<'_>> =
        issued.chain.iter().map(|d| CertificateDer::from(d.as_slice())).collect();
    for name in ["weft-control.weft-system.svc", "localhost", "127.0.0.1"] {
        let name = ServerName::try_from(name).unwrap();
        verifier
            .verify_server_cert(
                &CertificateDer::from(issued.leaf_der.as_slice()),
                &inter,
                &name,
                &[],
                UnixTime::now(),
            )
            .unwrap();
    }
    let wrong = ServerName::try_from("example.com").unwrap();
    assert!(
        verifier
            .verify_server_cert(
                &CertificateDer::from(issued.leaf_der.as_slice()),
                &inter,
                &wrong,
                &[],
                UnixTime::now()
            )
            .is_err()
    );
}
