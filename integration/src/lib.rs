//! weft's end-to-end harness: everything a test needs to run the control plane,
//! proxies, stock Envoy and test servers on loopback, and to watch them converge.
//!
//! - [`envoy`]: find (or install) the pinned stock Envoy and run it from a bootstrap.
//! - [`agent`]: `weft-agent`, the SDS agent that serves a meshed Envoy its certificates.
//! - [`identity`]: workload tokens and certificates, a CA the mesh does not trust, TLS clients.
//! - [`proxy`]: a workload's proxy, weft-proxy or Envoy, behind one type ([`Proxy`]).
//! - [`mesh`]: the control plane on a test's manifests, and the workloads around it.
//! - [`backend`]: a test HTTP server that answers with its workload name.
//! - [`grpc`]: a test gRPC server (weft's identity and tap services) and its client.
//! - [`tcp`]: an opaque TCP echo server.
//! - [`fake_kube`]: an in-memory Kubernetes API server with list/watch semantics (410 Gone included).
//! - [`fake_xds`]: a scriptable ADS server, for pushing exactly the resources a test wants.
//! - [`load`]: a client that sends requests through a proxy and tallies who answered.
//! - [`xds_client`]: a scripted ADS client (SotW and Delta) for driving the control plane.
//! - [`net`]: loopback addresses that no other test process is using.
//! - [`otlp`]: an OTLP trace receiver, and a control plane that traces to it.
//!
//! Tests wait with [`eventually`], whose patience comes from `WEFT_TEST_PATIENCE_SECS`,
//! never with fixed sleeps.

#![forbid(unsafe_code)]

pub mod agent;
pub mod backend;
pub mod child;
pub mod envoy;
pub mod fake_kube;
pub mod fake_xds;
pub mod grpc;
pub mod identity;
pub mod load;
pub mod mesh;
pub mod net;
pub mod otlp;
pub mod proxy;
pub mod tcp;
pub mod xds_client;

mod eventually;
mod paths;

pub use agent::Agent;
pub use backend::{Backend, Failures};
pub use envoy::{Envoy, envoy_bin};
pub use eventually::{Probe, eventually, eventually_within, patience};
pub use fake_xds::FakeXds;
pub use grpc::GrpcServer;
pub use identity::{LeafCert, MeshIdentity, TestCa};
pub use load::{SteadyLoad, Tally};
pub use mesh::{LocalMesh, MeshBuilder};
pub use net::{Subnet, free_port_on, loopback};
pub use paths::{target_dir, weft_agent_bin, weft_bin, weft_proxy_bin};
pub use proxy::{Proxy, ProxyConfig, ProxyKind, WeftProxy};
pub use tcp::TcpEcho;
pub use xds_client::ScriptedAdsClient;
