//! The watchers and the task that turns their stores into load reports.
//!
//! Each served resource has a kube-runtime watcher, with backoff, reflected into a store.
//! The store answers re-lists (after a 410 Gone, a restart of the API server or a dropped
//! watch) by swapping in the complete new list at once, so the state never loses or
//! duplicates an object in between. One task rebuilds the report whenever a store changed,
//! after a short pause that batches bursts of events.

use std::sync::Arc;
use std::time::Duration;

use ::kube::api::{Api, ListParams};
use ::kube::core::{ApiResource, DynamicObject};
use ::kube::runtime::reflector::{self, Store};
use ::kube::runtime::{WatchStreamExt, watcher};
use futures::StreamExt;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use super::resources::{WATCHED, WatchedKind};
use super::state::{KindObjects, ObjectIndex, StateBuilder};
use super::{Error, KubeSourceOptions};
use crate::model::Kind;
use crate::source::LoadReport;

/// One served resource and its store.
#[derive(Clone)]
pub(super) struct Watched {
    pub(super) kind: Kind,
    pub(super) api: ApiResource,
    pub(super) store: Store<DynamicObject>,
}

/// Which versions of every watched kind the API server serves: a version that answers 404
/// is skipped (a cluster may install only some SMI versions), with a log line.
pub(super) async fn served_resources(
    client: &::kube::Client,
    options: &KubeSourceOptions,
) -> Result<Vec<(Kind, ApiResource)>, Error> {
    let mut served = Vec::new();
    for watched in WATCHED {
        for version in watched.versions {
            let api = watched.at(version);
            if probe(client, watched, &api, options).await? {
                served.push((watched.kind, api));
            }
        }
    }
    Ok(served)
}

/// Whether the API server serves `api`; retries other errors than 404 and 403 with backoff.
async fn probe(
    client: &::kube::Client,
    watched: &WatchedKind,
    api: &ApiResource,
    options: &KubeSourceOptions,
) -> Result<bool, Error> {
    let list: Api<DynamicObject> = Api::all_with(client.clone(), api);
    let mut delay = options.initial_backoff;
    loop {
        match list.list(&ListParams::default().limit(1)).await {
            Ok(_) => return Ok(true),
            Err(::kube::Error::Api(status)) if status.code == 404 && watched.is_crd() => {
                info!(resource = %api.api_version, kind = %api.kind, "not served by this cluster; skipped");
                return Ok(false);
            }
            Err(::kube::Error::Api(status)) if status.code == 404 || status.code == 403 => {
                return Err(Error::Api { resource: format!("{} {}", api.api_version, api.plural), status });
            }
            Err(e) => {
                warn!(resource = %api.api_version, kind = %api.kind, error = %e, retry_in = ?delay, "cannot list; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(options.max_backoff);
            }
        }
    }
}

/// Starts a watcher per resource; each signals `changed` after every change to its store.
pub(super) fn spawn_watchers(
    client: &::kube::Client,
    served: Vec<(Kind, ApiResource)>,
    options: &KubeSourceOptions,
    changed: Arc<Notify>,
) -> (Vec<Watched>, Vec<JoinHandle<()>>) {
    let mut watched = Vec::new();
    let mut tasks = Vec::new();
    for (kind, api) in served {
        let writer = reflector::store::Writer::new(api.clone());
        let store = writer.as_reader();
        let list: Api<DynamicObject> = Api::all_with(client.clone(), &api);
        let mut config = watcher::Config::default();
        if let Some(timeout) = options.watch_timeout_secs {
            config = config.timeout(timeout);
        }
        let changed = changed.clone();
        let label = format!("{} {}", api.api_version, api.plural);
        tasks.push(tokio::spawn(async move {
            let events = watcher(list, config).default_backoff().reflect(writer);
            let mut events = std::pin::pin!(events);
            while let Some(event) = events.next().await {
                match event {
                    Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => {}
                    Ok(watcher::Event::InitDone) => {
                        debug!(resource = %label, "listed");
                        changed.notify_one();
                    }
                    Ok(_) => changed.notify_one(),
                    Err(e) => warn!(resource = %label, error = %e, "watch failed; re-watching with backoff"),
                }
            }
        }));
        watched.push(Watched { kind, api, store });
    }
    (watched, tasks)
}

/// Waits until every store holds its first complete list.
pub(super) async fn wait_synced(watched: &[Watched]) -> Result<(), Error> {
    for w in watched {
        w.store.wait_until_ready().await.map_err(|_| Error::WatcherStopped(w.api.api_version.clone()))?;
    }
    Ok(())
}

/// What the stores hold now, grouped by kind.
pub(super) fn snapshot(watched: &[Watched]) -> Vec<KindObjects> {
    let mut out: Vec<KindObjects> = Vec::new();
    for w in watched {
        let objects = (w.api.clone(), w.store.state());
        match out.iter_mut().find(|k| k.kind == w.kind) {
            Some(k) => k.versions.push(objects),
            None => out.push(KindObjects { kind: w.kind, versions: vec![objects] }),
        }
    }
    out
}

/// Rebuilds and publishes the report after each change, until every receiver is gone.
pub(super) async fn publish_changes(
    watched: Vec<Watched>,
    mut builder: StateBuilder,
    changed: Arc<Notify>,
    debounce: Duration,
    reports: watch::Sender<Arc<LoadReport>>,
    objects: watch::Sender<Arc<ObjectIndex>>,
) {
    loop {
        tokio::select! {
            _ = changed.notified() => {}
            _ = reports.closed() => return,
        }
        // Let a burst of events (a re-list, a rollout) land before rebuilding.
        tokio::time::sleep(debounce).await;
        let (report, index) = builder.build(&snapshot(&watched));
        // The index first: whoever reacts to a report finds the objects behind it.
        objects.send_if_modified(|current| {
            let modified = **current != index;
            if modified {
                *current = Arc::new(index);
            }
            modified
        });
        if report.changed {
            for e in &report.errors {
                debug!(error = %e, "invalid object; the last valid version is kept");
            }
            info!(errors = report.errors.len(), "cluster state changed");
            reports.send_replace(Arc::new(report));
        }
    }
}
