//! weft's end-to-end harness: everything a test needs to run the control plane,
//! proxies, stock Envoy and test servers on loopback, and to watch them converge.
//!
//! - [`envoy`]: find (or install) the pinned stock Envoy and run it from a bootstrap.
//! - [`backend`]: a test HTTP server that answers with its workload name.
//! - [`load`]: a client that sends requests through a proxy and tallies who answered.
//! - [`xds_client`]: a scripted ADS client (SotW and Delta) for driving the control plane.
//! - [`net`]: loopback addresses that no other test process is using.
//!
//! Tests wait with [`eventually`], whose patience comes from `WEFT_TEST_PATIENCE_SECS`,
//! never with fixed sleeps.

#![forbid(unsafe_code)]

pub mod backend;
pub mod envoy;
pub mod load;
pub mod mesh;
pub mod net;
pub mod xds_client;

mod eventually;
mod paths;

pub use backend::Backend;
pub use envoy::{Envoy, envoy_bin};
pub use eventually::{Probe, eventually, eventually_within, patience};
pub use load::{SteadyLoad, Tally};
pub use net::{Subnet, free_port_on, loopback};
pub use paths::{target_dir, weft_bin};
pub use xds_client::ScriptedAdsClient;
