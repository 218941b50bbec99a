//! The Kubernetes source: kube-runtime watchers on a live cluster, feeding the same
//! [`LoadReport`]s as the manifest directory, through the same parser.
//!
//! - [`start`] watches v1 Namespaces, Services and Pods, discovery.k8s.io/v1
//!   EndpointSlices and every SMI kind at every version the cluster serves, and returns
//!   only once every watcher has listed its resource: no report, so no proxy
//!   configuration, exists before the caches are synced.
//! - [`status`] writes `Accepted` and `Programmed` conditions and Events back onto
//!   TrafficSplits and TrafficTargets, from the replica that holds the [`lease`].
//! - [`tokenreview`] authenticates workload certificate requests with their projected
//!   ServiceAccount tokens.
//!
//! Objects are read as generic JSON ([`DynamicObject`](::kube::core::DynamicObject)) and
//! handed to the manifest parser, so an invalid object earns the error a manifest file
//! would (`TrafficSplit pay/s: spec.backends[0].weight: must not be negative`) and keeps
//! its last valid version in the state.

mod convert;
pub mod lease;
mod resources;
mod runtime;
mod state;
pub mod status;
pub mod tokenreview;
mod watch;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, watch as channel};
use tokio::task::JoinHandle;

pub use lease::{LeaderElection, LeaseConfig};
pub use resources::{WATCHED, WatchedKind};
pub use runtime::{KubeRuntime, KubernetesConfig, feed_nacks, nacks_from_reports, run};
pub use state::{ObjectIndex, ObjectRef};
pub use status::{NackInfo, StatusWriter};
pub use tokenreview::{TokenReviewAuthenticator, WorkloadAuthenticator};

use super::LoadReport;

/// Why the Kubernetes source could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API server refused a resource weft must watch: a core kind it does not serve
    /// (404) or that weft's ServiceAccount may not list (403).
    #[error("cannot list {resource}: {status}")]
    Api {
        /// The resource, e.g. `v1 pods`.
        resource: String,
        /// What the API server said.
        status: Box<::kube::core::Status>,
    },
    /// A watcher stopped before its first list completed.
    #[error("the watcher of {0} stopped before its first list")]
    WatcherStopped(String),
}

/// How the source watches.
#[derive(Debug, Clone)]
pub struct KubeSourceOptions {
    /// How long to wait after a change for more before rebuilding the report.
    pub debounce: Duration,
    /// The server-side timeout of each watch request (kube's default, 290 s, when `None`).
    pub watch_timeout_secs: Option<u32>,
    /// First wait before retrying a failed probe of the API server.
    pub initial_backoff: Duration,
    /// Longest wait between retries.
    pub max_backoff: Duration,
}

impl Default for KubeSourceOptions {
    fn default() -> Self {
        Self {
            debounce: Duration::from_millis(50),
            watch_timeout_secs: None,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
        }
    }
}

/// A running Kubernetes source.
#[derive(Debug)]
pub struct KubeSource {
    /// The latest report; its first value is the synced cluster, never an empty placeholder.
    pub reports: channel::Receiver<Arc<LoadReport>>,
    /// The TrafficSplits and TrafficTargets behind the latest report, for status writing.
    pub objects: channel::Receiver<Arc<ObjectIndex>>,
    /// The resources watched, as `apiVersion/plural` (the SMI versions the cluster serves).
    pub watched: Vec<String>,
    tasks: Vec<JoinHandle<()>>,
}

impl KubeSource {
    /// Stops every watcher (as dropping the source does).
    pub fn stop(self) {
        drop(self);
    }
}

impl Drop for KubeSource {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Watches the cluster behind `client` and returns once every watcher has listed its
/// resource, with the first report in [`KubeSource::reports`].
///
/// SMI versions the cluster does not serve are skipped; a core kind the API server does not
/// serve or lets weft list is an error. Other API errors are retried with backoff, so this
/// waits for an unreachable API server (put a timeout around it to give up).
pub async fn start(client: ::kube::Client, options: KubeSourceOptions) -> Result<KubeSource, Error> {
    let served = watch::served_resources(&client, &options).await?;
    let watched_names: Vec<String> =
        served.iter().map(|(_, api)| format!("{}/{}", api.api_version, api.plural)).collect();
    let changed = Arc::new(Notify::new());
    let (watched, mut tasks) = watch::spawn_watchers(&client, served, &options, changed.clone());
    if let Err(e) = watch::wait_synced(&watched).await {
        tasks.iter().for_each(JoinHandle::abort);
        return Err(e);
    }
    let mut builder = state::StateBuilder::default();
    let (first, index) = builder.build(&watch::snapshot(&watched));
    tracing::info!(
        resources = watched_names.len(),
        services = first.state.services.len(),
        splits = first.state.traffic_splits.len(),
        errors = first.errors.len(),
        "Kubernetes caches synced"
    );
    let (report_tx, reports) = channel::channel(Arc::new(first));
    let (index_tx, objects) = channel::channel(Arc::new(index));
    tasks.push(tokio::spawn(watch::publish_changes(
        watched,
        builder,
        changed,
        options.debounce,
        report_tx,
        index_tx,
    )));
    Ok(KubeSource { reports, objects, watched: watched_names, tasks })
}
