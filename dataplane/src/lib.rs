//! weft-proxy: the sidecar data plane. It is an xDS client of `weft control`
//! (or any xDS server) and serves the listeners, routes and clusters that xDS
//! describes, just as stock Envoy does with the same stream.
//!
//! Data flows one way: [`xds`] decodes and validates resources into a
//! [`config::Config`], swapped whole; [`proxy`] serves it.

#![forbid(unsafe_code)]

pub mod config;

pub use weft_xds_protos as protos;
pub mod admin;
pub mod init;
pub mod metrics;
pub mod proxy;
pub mod sds;
pub mod tap;
pub mod tls;
pub mod xds;
