//! weft-proxy: the sidecar data plane. It is an xDS client of `weft control`
//! and serves the listeners, routes and clusters that xDS describes.
//!
//! Only the crate skeleton exists so far; the runtime lands with its own issue.

#![forbid(unsafe_code)]

pub use weft_xds_protos as protos;
