//! Sidecar injection: what weft adds to a pod so that its traffic goes through weft-proxy.
//!
//! A pod is injected when it has `weft.io/inject: enabled`, or its namespace has and the pod
//! does not say `disabled` (annotation or label). Injection adds:
//! - `weft-init`, an init container running `weft-proxy init` (NET_ADMIN, NET_RAW): iptables
//!   rules that redirect inbound TCP to 4143 and outbound TCP to 4140, except the proxy's own
//!   traffic, loopback and the ports in `weft.io/skip-inbound-ports` /
//!   `weft.io/skip-outbound-ports`;
//! - `weft-proxy`: a native sidecar (an init container with `restartPolicy: Always` and a startup
//!   probe, so the app starts once the proxy is ready and Jobs complete) on Kubernetes 1.29 and
//!   later, else a regular container placed first;
//! - the `weft-identity` volume: a projected ServiceAccount token for audience `weft` (the proxy's
//!   proof of identity, checked with a TokenReview) and the mesh's trust bundle, from the
//!   ConfigMap `weft-trust-bundle` the control plane keeps in every namespace ([`trust_bundle`]).
//!
//! The same pure mutation ([`pod::inject`]) serves the admission webhook ([`admission::review`],
//! served by [`webhook`]) and `weft inject` on files ([`offline::inject_yaml`]). Injecting twice
//! changes nothing. A pod the injector cannot handle is admitted unchanged, with a warning.

pub mod admission;
pub mod args;
pub mod offline;
pub mod pod;
pub mod trust_bundle;
pub mod webhook;

pub use admission::review;
pub use args::{InjectArgs, OfflineArgs, SidecarMode};
pub use offline::inject_yaml;
pub use pod::{Decision, Outcome, decide, inject};

/// The proxy container's name.
pub const PROXY_CONTAINER: &str = "weft-proxy";
/// The redirect init container's name.
pub const INIT_CONTAINER: &str = "weft-init";
/// The projected volume with the token and the trust bundle.
pub const IDENTITY_VOLUME: &str = "weft-identity";
/// The init container's scratch `/run` (iptables' lock file).
pub const XTABLES_VOLUME: &str = "weft-xtables";
/// Where the proxy finds its token (`token`) and the trust bundle (`ca.pem`).
pub const IDENTITY_DIR: &str = "/var/run/weft/identity";
/// The audience of the projected ServiceAccount token; the control plane's TokenReview asks
/// for it.
pub const TOKEN_AUDIENCE: &str = "weft";
/// The ConfigMap, in each namespace, holding the mesh's trust bundle.
pub const TRUST_BUNDLE_CONFIG_MAP: &str = "weft-trust-bundle";
/// The trust bundle's key in that ConfigMap (PEM).
pub const TRUST_BUNDLE_KEY: &str = "ca.pem";
/// Set on injected pods: the weft version that injected them.
pub const PROXY_VERSION_ANNOTATION: &str = "weft.io/proxy-version";
/// Inbound ports that bypass the proxy, e.g. `"9090,9100-9110"`.
pub const SKIP_INBOUND_ANNOTATION: &str = "weft.io/skip-inbound-ports";
/// Outbound destination ports that bypass the proxy.
pub const SKIP_OUTBOUND_ANNOTATION: &str = "weft.io/skip-outbound-ports";

/// Why a pod could not be injected. The webhook admits such a pod unchanged, with the message
/// as a warning; `weft inject` reports it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InjectError {
    /// A weft annotation holds something it cannot mean.
    #[error("{annotation}: {value} is not valid: {reason}")]
    InvalidAnnotation {
        /// The annotation.
        annotation: &'static str,
        /// Its value, as JSON.
        value: String,
        /// What it must be.
        reason: String,
    },
    /// The pod uses the node's network: iptables rules there would redirect the node's traffic.
    #[error("pods with hostNetwork: true are not injected (the redirect would apply to the whole node)")]
    HostNetwork,
    /// The object is not a pod (template) weft can read.
    #[error("the pod cannot be read: {0}")]
    Malformed(String),
}

/// How to inject: what the proxy is, where it finds the control plane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InjectConfig {
    /// The proxy's image (it holds `weft-proxy` and iptables).
    pub proxy_image: String,
    /// The control plane's xDS and identity address, as the proxy dials it.
    pub control_addr: String,
    /// The mesh's trust domain.
    pub trust_domain: String,
    /// Inject a native sidecar (Kubernetes 1.29+), else a regular container.
    pub native_sidecar: bool,
    /// The uid the proxy runs as (exempt from the redirect).
    pub proxy_uid: i64,
    /// The proxy's inbound port.
    pub inbound_port: u16,
    /// The proxy's outbound port.
    pub outbound_port: u16,
    /// The proxy's admin port (probes, metrics); always skipped by the redirect.
    pub admin_port: u16,
    /// The proxy's log filter.
    pub log: String,
}

impl Default for InjectConfig {
    fn default() -> Self {
        Self {
            proxy_image: format!("weft/weft:{}", env!("CARGO_PKG_VERSION")),
            control_addr: "weft-control.weft-system.svc:8086".to_string(),
            trust_domain: "cluster.local".to_string(),
            native_sidecar: true,
            proxy_uid: 2102,
            inbound_port: 4143,
            outbound_port: 4140,
            admin_port: 4191,
            log: "info".to_string(),
        }
    }
}

/// Whether an API server of this version runs native sidecars (init containers with
/// `restartPolicy: Always`): on by default from Kubernetes 1.29. `minor` may carry a suffix,
/// as managed clusters report it (`"29+"`).
pub fn native_sidecars_supported(major: &str, minor: &str) -> bool {
    let number = |s: &str| s.trim_end_matches(|c: char| !c.is_ascii_digit()).parse::<u32>().ok();
    match (number(major), number(minor)) {
        (Some(1), Some(minor)) => minor >= 29,
        (Some(major), _) => major > 1,
        _ => false,
    }
}

#[cfg(test)]
mod tests;
