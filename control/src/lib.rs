//! weft's control plane: it turns Kubernetes-style manifests (Services,
//! EndpointSlices, Pods, Namespaces and SMI resources) into Envoy xDS, served
//! over ADS in State-of-the-World and Delta form to weft-proxy and stock Envoy.
//!
//! Data flows one way: [`source`] -> [`model`] -> [`translate`] -> [`cache`] ->
//! [`xds`]. The [`admin`] API shows what every proxy was sent and accepted.

#![forbid(unsafe_code)]

pub mod admin;
pub mod bootstrap;
pub mod cache;
pub mod identity;
pub mod inject;
pub mod install;
pub mod kube_check;
pub mod metrics;
pub mod model;
pub mod server;
pub mod source;
pub mod stat;
pub mod tap;
pub mod translate;
pub mod up;
pub mod xds;
