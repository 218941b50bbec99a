//! Workload identity: the mesh CA and the service that certifies workloads.
//!
//! A workload makes its own key, proves who it is with a token, and sends a CSR; the control
//! plane checks the token ([`token`]), signs an X.509-SVID (24 hours by default) carrying
//! exactly its SPIFFE ID `spiffe://<trust-domain>/ns/<ns>/sa/<sa>` ([`ca`]), and answers over
//! weft's `Identity` gRPC API ([`service`]). The private key never leaves the workload.
//!
//! The control plane serves that API and xDS on one TLS port with its own certificate from the
//! same CA ([`tls`]); every xDS stream must present a workload certificate. What was issued
//! and refused is kept in the [`ledger`].

pub mod ca;
pub mod cert;
pub mod duration;
pub mod ledger;
pub mod service;
pub mod tls;
pub mod token;

use std::path::PathBuf;

pub use ca::{CaConfig, CaError, CertificateAuthority, Issued};
pub use cert::CertInfo;
pub use duration::{format_duration, format_seconds, parse_duration};
pub use ledger::{Issuance, Ledger, Refusal};
pub use service::IdentityService;
pub use tls::{ControlTls, control_identity};
pub use token::{AuthError, Authenticator, LocalTokens, token_for};
pub use weft_xds_protos::spiffe::{SpiffeId, SpiffeIdError};

/// The default CA directory: `$XDG_STATE_HOME/weft/ca`, else `$HOME/.local/state/weft/ca`
/// (`None` when neither variable is set to an absolute path).
pub fn default_ca_dir() -> Option<PathBuf> {
    let absolute = |var: &str| std::env::var_os(var).map(PathBuf::from).filter(|p| p.is_absolute());
    absolute("XDG_STATE_HOME")
        .or_else(|| absolute("HOME").map(|home| home.join(".local").join("state")))
        .map(|state| state.join("weft").join("ca"))
}

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
    /// The token key could not be read or created.
    #[error(transparent)]
    TokenKey(#[from] token::TokenKeyError),
    /// The control plane's TLS could not be set up.
    #[error(transparent)]
    Tls(#[from] tls::TlsSetupError),
}
