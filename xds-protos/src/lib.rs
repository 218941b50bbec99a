//! Protobuf types for weft: Envoy's v3 xDS API (re-exported from `envoy-types`)
//! and weft's own identity and tap services, plus [`json`], which renders
//! Envoy resources as JSON for config dumps, and [`spiffe`], the workload
//! identity both the identity service and the proxies speak of.

#![forbid(unsafe_code)]

pub use envoy_types::pb::{envoy, google, xds};

pub mod json;
pub mod spiffe;

/// Envoy's v3 type URLs for the resources weft serves.
pub mod type_url {
    /// Listener (LDS).
    pub const LISTENER: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
    /// Cluster (CDS).
    pub const CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
    /// RouteConfiguration (RDS).
    pub const ROUTE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
    /// ClusterLoadAssignment (EDS).
    pub const ENDPOINT: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
    /// Secret (SDS).
    pub const SECRET: &str = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";
}

/// A `FileDescriptorSet` (protobuf-encoded) of the Envoy resources weft
/// serves and their extensions, for rendering them as JSON.
pub const ENVOY_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/envoy_descriptor.bin"));

/// weft's identity service: CSR signing for workloads.
pub mod identity {
    #![allow(missing_docs, unreachable_pub, clippy::all)]
    tonic::include_proto!("weft.identity.v1");
}

/// weft's tap service: live request events from proxies.
pub mod tap {
    #![allow(missing_docs, unreachable_pub, clippy::all)]
    tonic::include_proto!("weft.tap.v1");
}
