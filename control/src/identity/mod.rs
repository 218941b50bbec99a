//! Workload identity: the mesh CA and the service that certifies workloads.
//!
//! A workload makes its own key, proves who it is with a token, and sends a CSR; the control
//! plane checks the token ([`token`]), signs a 24-hour X.509-SVID carrying exactly its SPIFFE
//! ID `spiffe://<trust-domain>/ns/<ns>/sa/<sa>` ([`ca`]), and answers over weft's `Identity`
//! gRPC API ([`service`]). The private key never leaves the workload.
//!
//! Not yet wired into translation (SDS) or the xDS server.

pub mod ca;
pub mod service;
pub mod token;

pub use ca::{CaConfig, CaError, CertificateAuthority, Issued};
pub use service::IdentityService;
pub use token::{AuthError, Authenticator, LocalTokens};
pub use weft_xds_protos::spiffe::{SpiffeId, SpiffeIdError};

/// Any identity failure, for callers (such as startup) that handle them alike.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The CA could not be created, loaded or could not sign.
    #[error(transparent)]
    Ca(#[from] CaError),
    /// A caller could not be authenticated.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// A string was not a valid SPIFFE ID.
    #[error(transparent)]
    SpiffeId(#[from] SpiffeIdError),
}
