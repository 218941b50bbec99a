//! Who may fetch xDS over TLS: a proxy presenting a certificate from the mesh CA whose SPIFFE ID
//! is in our trust domain and names the namespace and service account its node claims.
//!
//! The TLS layer already checked that the certificate chains to the trust bundle; here the
//! identity is compared. No certificate is `UNAUTHENTICATED`; a certificate for someone else is
//! `PERMISSION_DENIED`, naming both identities.

use rustls::pki_types::CertificateDer;
use tonic::Status;

use super::XdsContext;
use crate::identity::{CertInfo, Refusal, SpiffeId};
use crate::translate::ProxyNode;

fn refuse(ctx: &XdsContext, reason: Refusal, status: Status) -> Status {
    ctx.metrics.refused(reason.as_str());
    tracing::warn!(reason = reason.as_str(), message = status.message(), "refusing xDS request");
    status
}

/// Checks the client certificate of a request (its leaf first), before the node is known.
/// Returns what it says about the peer, or `None` when xDS is served without TLS.
pub(crate) fn client_certificate(
    ctx: &XdsContext,
    certs: Option<&[CertificateDer<'_>]>,
) -> Result<Option<CertInfo>, Status> {
    let Some(auth) = &ctx.client_auth else {
        return Ok(None);
    };
    let Some(leaf) = certs.and_then(<[_]>::first) else {
        return Err(refuse(
            ctx,
            Refusal::NoClientCertificate,
            Status::unauthenticated(
                "xDS requires a client certificate from the mesh CA (certify with the Identity service first)",
            ),
        ));
    };
    let info = CertInfo::from_der(leaf).map_err(|e| {
        refuse(ctx, Refusal::InvalidClientCertificate, Status::unauthenticated(e.to_string()))
    })?;
    let Some(id) = info.spiffe_id() else {
        let msg = format!(
            "the client certificate carries no weft SPIFFE ID (URI SAN: {})",
            info.identity.as_deref().unwrap_or("none")
        );
        return Err(refuse(ctx, Refusal::InvalidClientCertificate, Status::permission_denied(msg)));
    };
    if id.trust_domain() != auth.trust_domain {
        let msg = format!("client identity {id} is not in this mesh's trust domain {}", auth.trust_domain);
        return Err(refuse(ctx, Refusal::ForeignTrustDomain, Status::permission_denied(msg)));
    }
    Ok(Some(info))
}

/// Checks that the certificate's identity is the node's (`NAMESPACE`, `SERVICE_ACCOUNT`).
pub(crate) fn authorize_node(
    ctx: &XdsContext,
    peer: Option<&CertInfo>,
    node: &ProxyNode,
) -> Result<(), Status> {
    if ctx.client_auth.is_none() {
        return Ok(());
    }
    let Some(id) = peer.and_then(CertInfo::spiffe_id) else {
        // client_certificate() already refused such a request; never serve one that slipped by.
        return Err(refuse(
            ctx,
            Refusal::NoClientCertificate,
            Status::unauthenticated("xDS requires a client certificate from the mesh CA"),
        ));
    };
    if matches(&id, node) {
        return Ok(());
    }
    let msg = format!(
        "client certificate identity {id} does not match node {:?} (metadata NAMESPACE={:?}, SERVICE_ACCOUNT={:?}: spiffe://{}/ns/{}/sa/{})",
        node.id,
        node.namespace,
        node.service_account,
        id.trust_domain(),
        node.namespace,
        node.service_account
    );
    Err(refuse(ctx, Refusal::ClientIdentityMismatch, Status::permission_denied(msg)))
}

fn matches(id: &SpiffeId, node: &ProxyNode) -> bool {
    id.namespace() == node.namespace && id.service_account() == node.service_account
}
