//! weft-agent's SDS server, for stock Envoy.
//!
//! Envoy cannot ask weft's identity service for a certificate itself, and the
//! workload's private key must not cross the network. The agent runs beside
//! Envoy (same pod, same user): it makes the key, certifies it with the
//! workload's token, renews it at 70 % of its life, and serves it to Envoy
//! over SDS on a Unix socket only that user can reach:
//!
//! - [`secrets`] makes `default` (certificate chain and PKCS#8 key, inline
//!   PEM) and `ROOTCA` (trust bundle, inline PEM), versioned by content;
//! - [`server`] is the SDS gRPC service (`StreamSecrets`, `DeltaSecrets`,
//!   `FetchSecrets`), pushing new versions on renewal;
//! - [`socket`] binds the socket (0600) in its directory (0700, the agent's own);
//! - [`admin`] and [`metrics`] serve `/ready`, `/live`, `/metrics`, `/identity`;
//! - [`agent`] runs all of it together ([`agent::run`]).

pub mod admin;
pub mod agent;
pub mod metrics;
pub mod secrets;
pub mod server;
pub mod socket;

pub use agent::{AgentConfig, AgentError, AgentHandle, run};
pub use metrics::SdsMetrics;
pub use secrets::{DEFAULT_SECRET, ROOTCA_SECRET, SecretSet, SecretWatch};
pub use server::SdsService;
