//! weft's `Identity` gRPC service: authenticate the caller's token for the identity it claims,
//! then have the CA sign its CSR.
//!
//! Status codes: a missing or wrong token is `UNAUTHENTICATED`; a token for someone else, a CSR
//! asking for another name, or an identity outside the trust domain is `PERMISSION_DENIED`; a
//! malformed identity or CSR is `INVALID_ARGUMENT` naming the field.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use tonic::{Request, Response, Status};
use tracing::Instrument;
use weft_xds_protos::google::protobuf::Timestamp;
use weft_xds_protos::identity::identity_server::{Identity, IdentityServer};
use weft_xds_protos::identity::{CertifyRequest, CertifyResponse};

use super::SpiffeId;
use super::ca::{CaError, CertificateAuthority, Issued};
use super::ledger::{Ledger, Refusal};
use super::token::{AuthError, Authenticator};

/// Serves `Certify` from a CA, authenticating callers with `A`.
#[derive(Debug)]
pub struct IdentityService<A> {
    ca: Arc<CertificateAuthority>,
    authenticator: A,
    ledger: Arc<Ledger>,
}

impl<A: Authenticator + 'static> IdentityService<A> {
    /// A service signing with `ca` for callers `authenticator` accepts.
    pub fn new(ca: Arc<CertificateAuthority>, authenticator: A) -> Self {
        Self { ca, authenticator, ledger: Arc::default() }
    }

    /// Records what it issues and refuses in `ledger` (and its metrics).
    pub fn with_ledger(self, ledger: Arc<Ledger>) -> Self {
        Self { ledger, ..self }
    }

    /// Wraps the service for a tonic `Server`.
    pub fn into_server(self) -> IdentityServer<Self> {
        IdentityServer::new(self)
    }

    async fn certify_inner(
        &self,
        req: CertifyRequest,
        peer: Option<std::net::SocketAddr>,
    ) -> Result<CertifyResponse, (Refusal, Status)> {
        let identity: SpiffeId = req.identity.parse().map_err(|e| {
            (Refusal::InvalidRequest, Status::invalid_argument(format!("identity {:?}: {e}", req.identity)))
        })?;
        tracing::Span::current().record("identity", tracing::field::display(&identity));
        self.authenticator.authenticate(&req.token, &identity).await.map_err(auth_status)?;
        if req.certificate_signing_request.is_empty() {
            return Err((
                Refusal::InvalidRequest,
                Status::invalid_argument("certificate_signing_request is empty"),
            ));
        }
        let issued = self
            .ca
            .sign_csr(&req.certificate_signing_request, &identity, self.ca.leaf_lifetime())
            .map_err(ca_status)?;
        tracing::info!(serial = %issued.serial, not_after = ?issued.not_after, "issued workload certificate");
        self.ledger.issued(&identity.to_string(), &issued, peer);
        Ok(response(issued))
    }
}

#[tonic::async_trait]
impl<A: Authenticator + 'static> Identity for IdentityService<A> {
    async fn certify(&self, request: Request<CertifyRequest>) -> Result<Response<CertifyResponse>, Status> {
        let peer = request.remote_addr();
        let span = tracing::info_span!("certify", peer = ?peer, identity = tracing::field::Empty);
        let result = self.certify_inner(request.into_inner(), peer).instrument(span.clone()).await;
        match result {
            Ok(response) => Ok(Response::new(response)),
            Err((reason, status)) => {
                self.ledger.refused(reason);
                span.in_scope(
                    || tracing::warn!(code = ?status.code(), message = status.message(), "refused"),
                );
                Err(status)
            }
        }
    }
}

fn auth_status(err: AuthError) -> (Refusal, Status) {
    match err {
        AuthError::MissingToken => (Refusal::MissingToken, Status::unauthenticated(err.to_string())),
        AuthError::InvalidToken(_) => (Refusal::InvalidToken, Status::unauthenticated(err.to_string())),
        AuthError::IdentityMismatch { .. } => {
            (Refusal::TokenIdentityMismatch, Status::permission_denied(err.to_string()))
        }
        AuthError::Unavailable(_) => (Refusal::Unavailable, Status::unavailable(err.to_string())),
    }
}

fn ca_status(err: CaError) -> (Refusal, Status) {
    match err {
        CaError::InvalidCsr(_) | CaError::ZeroLifetime => {
            (Refusal::InvalidRequest, Status::invalid_argument(format!("certificate_signing_request: {err}")))
        }
        CaError::CsrRequestsCa | CaError::CsrIdentityMismatch { .. } | CaError::ForeignTrustDomain { .. } => {
            (Refusal::CsrDenied, Status::permission_denied(err.to_string()))
        }
        CaError::RootExpired(_) => (Refusal::Unavailable, Status::failed_precondition(err.to_string())),
        other => {
            tracing::error!(error = %other, "CA failed to sign");
            (Refusal::Unavailable, Status::internal("the CA failed to sign the request"))
        }
    }
}

fn response(issued: Issued) -> CertifyResponse {
    let seconds = issued
        .not_after
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    CertifyResponse {
        leaf_certificate: issued.leaf_der,
        intermediate_certificates: issued.chain,
        trust_bundle: issued.trust_bundle,
        valid_until: Some(Timestamp { seconds, nanos: 0 }),
    }
}

/// The expiry carried in a response, as a `SystemTime` (for clients and tests).
pub fn valid_until(response: &CertifyResponse) -> Option<SystemTime> {
    let ts = response.valid_until.as_ref()?;
    Some(UNIX_EPOCH + std::time::Duration::from_secs(u64::try_from(ts.seconds).ok()?))
}

#[cfg(test)]
mod tests;
