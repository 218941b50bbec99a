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
pub mod trace;
pub mod xds;

/// Sets up structured logs on stderr for weft-proxy's binaries: `filter` in tracing's
/// `EnvFilter` syntax (the `--log` flag), text or JSON lines.
pub fn init_logs(filter: &str, json: bool) -> anyhow::Result<()> {
    use anyhow::Context;
    let filter =
        tracing_subscriber::EnvFilter::try_new(filter).with_context(|| format!("--log {filter:?}"))?;
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
    Ok(())
}
