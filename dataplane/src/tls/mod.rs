//! Workload identity and mutual TLS for weft-proxy.
//!
//! - [`spiffe`]: reading the SPIFFE ID `spiffe://<trust-domain>/ns/<ns>/sa/<sa>`
//!   from a certificate's URI SAN.
//! - [`identity`]: the workload's [`Credentials`]: a key made in-process, a
//!   certificate obtained from weft's identity service with a CSR, renewed at
//!   70 % of its life and published whole through a `watch` channel.
//! - [`config`]: rustls (ring) server and client configs built from
//!   [`Credentials`]; the client checks the server's SPIFFE ID, not its hostname.
//! - [`channel`]: TLS gRPC channels to the control plane, checking its
//!   SPIFFE ID and presenting the workload certificate, renewed in place.

pub mod channel;
pub mod config;
pub mod identity;
pub mod spiffe;

pub use channel::{ControlPlaneTls, CredentialsWatch, control_endpoint, control_identity};
pub use config::{SpiffeServerVerifier, client_config, peer_identity, server_config};
pub use identity::{Certifier, Credentials, TokenSource, renewal_time};
pub use spiffe::{SpiffeId, spiffe_id_of};

/// Errors of the TLS and identity module.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A string is not a weft SPIFFE ID (`spiffe://<td>/ns/<ns>/sa/<sa>`).
    #[error("invalid SPIFFE ID: {0}")]
    InvalidSpiffeId(#[from] weft_xds_protos::spiffe::SpiffeIdError),
    /// A certificate could not be parsed as X.509 DER.
    #[error("malformed certificate: {0}")]
    MalformedCertificate(String),
    /// A certificate does not carry exactly one SPIFFE URI SAN.
    #[error("certificate carries no single SPIFFE ID: {0}")]
    NoSpiffeId(&'static str),
    /// The peer presented a SPIFFE ID other than the one expected (boxed to
    /// keep the error small).
    #[error("peer is {presented}, expected {expected}")]
    UnexpectedPeer {
        /// The identity the caller asked for.
        expected: Box<SpiffeId>,
        /// The identity the peer's certificate carries.
        presented: Box<SpiffeId>,
    },
    /// The connection has no peer certificate.
    #[error("peer presented no certificate")]
    NoPeerCertificate,
    /// Generating the key or the CSR failed.
    #[error("key or CSR generation: {0}")]
    Csr(#[from] rcgen::Error),
    /// Reading the identity token failed.
    #[error("reading identity token {path}: {source}")]
    Token {
        /// The token file.
        path: std::path::PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The identity service refused or failed the Certify call.
    #[error("identity service: {}", status_text(.0))]
    Certify(tonic::Status),
    /// The identity service answered with unusable credentials.
    #[error("invalid credentials from identity service: {0}")]
    InvalidCredentials(String),
    /// rustls rejected the credentials or the configuration.
    #[error("rustls: {0}")]
    Rustls(#[from] rustls::Error),
    /// The client certificate verifier could not be built from the trust bundle.
    #[error("client certificate verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    /// The trust anchors file (`--ca-file`) is unreadable or holds no certificate.
    #[error("CA file {path}: {reason}")]
    CaFile {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

impl TlsError {
    /// Whether retrying the same request cannot help: the identity service
    /// refused the token or the request, or the token or key cannot be had.
    /// Transport failures and an unavailable or failing service are not
    /// permanent.
    pub fn is_permanent(&self) -> bool {
        use tonic::Code;
        match self {
            Self::Certify(status) => matches!(
                status.code(),
                Code::Unauthenticated
                    | Code::PermissionDenied
                    | Code::InvalidArgument
                    | Code::FailedPrecondition
                    | Code::Unimplemented
            ),
            Self::Token { .. } | Self::Csr(_) | Self::InvalidSpiffeId(_) | Self::CaFile { .. } => true,
            _ => false,
        }
    }
}

impl From<tonic::Status> for TlsError {
    fn from(status: tonic::Status) -> Self {
        Self::Certify(status)
    }
}

/// A gRPC status on one line: its code, its message and what caused it
/// (a transport failure carries the TLS or connection error there).
fn status_text(status: &tonic::Status) -> String {
    let mut out = format!("{:?}", status.code());
    if !status.message().is_empty() {
        out.push_str(": ");
        out.push_str(status.message());
    }
    push_causes(&mut out, std::error::Error::source(status));
    out
}

/// Appends `: <cause>` to `out` for `source` and each error behind it, but
/// for those whose text `out` already holds.
fn push_causes(out: &mut String, mut source: Option<&(dyn std::error::Error + 'static)>) {
    while let Some(cause) = source {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = cause.source();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_permanent_and_outages_are_not() {
        for status in [
            tonic::Status::unauthenticated("bad token"),
            tonic::Status::permission_denied("someone else's token"),
            tonic::Status::invalid_argument("bad csr"),
        ] {
            assert!(TlsError::from(status).is_permanent());
        }
        for status in [
            tonic::Status::unavailable("connection refused"),
            tonic::Status::internal("the CA failed"),
            tonic::Status::deadline_exceeded("slow"),
        ] {
            assert!(!TlsError::from(status).is_permanent());
        }
        let text = TlsError::from(tonic::Status::permission_denied("token proves x")).to_string();
        assert_eq!(text, "identity service: PermissionDenied: token proves x");
    }
}
