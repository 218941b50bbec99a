//! Workload identity and mutual TLS for weft-proxy.
//!
//! - [`spiffe`]: reading the SPIFFE ID `spiffe://<trust-domain>/ns/<ns>/sa/<sa>`
//!   from a certificate's URI SAN.
//! - [`identity`]: the workload's [`Credentials`]: a key made in-process, a
//!   certificate obtained from weft's identity service with a CSR, renewed at
//!   70 % of its life and published whole through a `watch` channel.
//! - [`config`]: rustls (ring) server and client configs built from
//!   [`Credentials`]; the client checks the server's SPIFFE ID, not its hostname.
//!
//! Nothing here is wired into listeners or clusters yet.

pub mod config;
pub mod identity;
pub mod spiffe;

pub use config::{client_config, peer_identity, server_config};
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
    #[error("identity service: {0}")]
    Certify(#[from] tonic::Status),
    /// The identity service answered with unusable credentials.
    #[error("invalid credentials from identity service: {0}")]
    InvalidCredentials(String),
    /// rustls rejected the credentials or the configuration.
    #[error("rustls: {0}")]
    Rustls(#[from] rustls::Error),
    /// The client certificate verifier could not be built from the trust bundle.
    #[error("client certificate verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}
