#![allow(clippy::unwrap_used, clippy::expect_used)]

use rcgen::{CertificateParams, KeyPair, SanType};
use tonic::Code;
use weft_xds_protos::identity::identity_client::IdentityClient;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::*;
use crate::identity::{CaConfig, LocalTokens};

const CART: &str = "spiffe://cluster.local/ns/shop/sa/cart";

struct Fixture {
    service: IdentityService<Arc<LocalTokens>>,
    tokens: Arc<LocalTokens>,
    ca: Arc<CertificateAuthority>,
}

fn fixture() -> Fixture {
    let ca = Arc::new(CertificateAuthority::generate(CaConfig::default()).unwrap());
    let tokens = Arc::new(LocalTokens::new());
    Fixture { service: IdentityService::new(ca.clone(), tokens.clone()), tokens, ca }
}

fn csr(sans: &[&str]) -> Vec<u8> {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    params.subject_alt_names = sans.iter().map(|s| SanType::URI((*s).try_into().unwrap())).collect();
    params.serialize_request(&key).unwrap().der().to_vec()
}

fn request(identity: &str, token: &str, csr: Vec<u8>) -> CertifyRequest {
    CertifyRequest {
        identity: identity.to_owned(),
        token: token.to_owned(),
        certificate_signing_request: csr,
    }
}

async fn refusal(f: &Fixture, req: CertifyRequest) -> Status {
    f.service.certify(Request::new(req)).await.unwrap_err()
}

#[tokio::test]
async fn certify_over_grpc_returns_a_leaf_for_the_token_holder_and_refuses_a_bad_token() {
    let f = fixture();
    let token = f.tokens.issue(&CART.parse().unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(f.service.into_server())
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let mut client = IdentityClient::connect(format!("http://{addr}")).await.unwrap();

    let response = client.certify(request(CART, &token, csr(&[CART]))).await.unwrap().into_inner();
    let leaf = X509Certificate::from_der(&response.leaf_certificate).unwrap().1;
    let san = leaf.subject_alternative_name().unwrap().unwrap().value.general_names.clone();
    assert_eq!(format!("{san:?}"), format!("[URI({CART:?})]"));
    let root = X509Certificate::from_der(f.ca.root_der()).unwrap().1;
    leaf.verify_signature(Some(root.public_key())).unwrap();
    assert_eq!(response.trust_bundle, vec![f.ca.root_der().to_vec()]);
    assert!(response.intermediate_certificates.is_empty());
    let not_after = SystemTime::from(leaf.validity().not_after.to_datetime());
    assert_eq!(valid_until(&response), Some(not_after));
    let lifetime = not_after.duration_since(SystemTime::now()).unwrap();
    assert!(lifetime > f.ca.leaf_lifetime() - std::time::Duration::from_secs(60), "{lifetime:?}");

    let status = client.certify(request(CART, "weft.wrong", csr(&[]))).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    server.abort();
}

#[tokio::test]
async fn missing_or_wrong_token_is_unauthenticated() {
    let f = fixture();
    f.tokens.issue(&CART.parse().unwrap());
    let status = refusal(&f, request(CART, "", csr(&[]))).await;
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(status.message(), "no token presented");
    let status = refusal(&f, request(CART, "weft.guess", csr(&[]))).await;
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(status.message().contains(CART), "{}", status.message());
}

#[tokio::test]
async fn token_of_another_workload_does_not_prove_the_claimed_identity() {
    let f = fixture();
    let payments_token = f.tokens.issue(&"spiffe://cluster.local/ns/shop/sa/payments".parse().unwrap());
    f.tokens.issue(&CART.parse().unwrap());
    let status = refusal(&f, request(CART, &payments_token, csr(&[]))).await;
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains("sa/payments") && status.message().contains(CART), "{status:?}");
}

#[tokio::test]
async fn csr_for_another_identity_is_permission_denied() {
    let f = fixture();
    let token = f.tokens.issue(&CART.parse().unwrap());
    let status =
        refusal(&f, request(CART, &token, csr(&["spiffe://cluster.local/ns/shop/sa/payments"]))).await;
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(status.message().contains("sa/payments") && status.message().contains(CART), "{status:?}");
}

#[tokio::test]
async fn identity_in_another_trust_domain_is_permission_denied() {
    let f = fixture();
    let foreign = "spiffe://other.domain/ns/shop/sa/cart";
    let token = f.tokens.issue(&foreign.parse().unwrap());
    let status = refusal(&f, request(foreign, &token, csr(&[]))).await;
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
}

#[tokio::test]
async fn malformed_identity_or_csr_is_invalid_argument_naming_the_field() {
    let f = fixture();
    let token = f.tokens.issue(&CART.parse().unwrap());

    let status = refusal(&f, request("spiffe://cluster.local/cart", &token, csr(&[]))).await;
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().starts_with("identity"), "{}", status.message());

    let status = refusal(&f, request(CART, &token, Vec::new())).await;
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(status.message(), "certificate_signing_request is empty");

    let status = refusal(&f, request(CART, &token, b"garbage".to_vec())).await;
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().starts_with("certificate_signing_request:"), "{}", status.message());
}

#[tokio::test]
async fn unauthenticated_caller_learns_nothing_about_its_csr() {
    // Authentication comes first: a bad token with a garbage CSR is UNAUTHENTICATED, not
    // INVALID_ARGUMENT, so the CSR parser is not exposed to anonymous callers.
    let f = fixture();
    let status = refusal(&f, request(CART, "weft.guess", b"garbage".to_vec())).await;
    assert_eq!(status.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn issuance_and_refusals_are_recorded_in_the_ledger_and_metrics() {
    let metrics = Arc::new(crate::metrics::Metrics::new());
    let ledger = Arc::new(crate::identity::Ledger::new(metrics.clone()));
    let f = fixture();
    let service = IdentityService::new(f.ca.clone(), f.tokens.clone()).with_ledger(ledger.clone());
    let token = f.tokens.issue(&CART.parse().unwrap());

    let response = service.certify(Request::new(request(CART, &token, csr(&[])))).await.unwrap().into_inner();
    let leaf = crate::identity::CertInfo::from_der(&response.leaf_certificate).unwrap();
    let record = ledger.latest(CART).expect("recorded");
    assert_eq!(record.serial, leaf.serial);
    assert_eq!(record.not_after, leaf.not_after);
    assert_eq!(record.not_before, leaf.not_before);
    assert_eq!(ledger.all().len(), 1);

    service.certify(Request::new(request(CART, "weft1.nope", csr(&[])))).await.unwrap_err();
    service.certify(Request::new(request(CART, "", csr(&[])))).await.unwrap_err();
    let text = metrics.encode();
    assert!(text.contains("weft_identity_issued_total 1"), "{text}");
    assert!(text.contains("weft_identity_refused_total{reason=\"invalid_token\"} 1"), "{text}");
    assert!(text.contains("weft_identity_refused_total{reason=\"missing_token\"} 1"), "{text}");
    assert!(!text.contains("weft_identity_root_expiry_seconds"), "no CA registered yet:\n{text}");
    metrics.set_root_not_after(f.ca.root_not_after());
    let text = metrics.encode();
    let line = text.lines().find(|l| l.starts_with("weft_identity_root_expiry_seconds ")).expect(&text);
    let seconds: f64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(seconds > 9.9 * 365.0 * 86_400.0 && seconds <= 3650.0 * 86_400.0, "{line}");
}
