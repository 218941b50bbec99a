//! Keeping the directory live: one task owns the [`ManifestDir`], polls it for changes
//! and serves apply requests, so reloads and applies never interleave and need no lock.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::MissedTickBehavior;

use super::{ApplyOutcome, LoadReport, ManifestDir};
use crate::source::manifest::ManifestError;

/// The reply to an apply: what was written, or every reason it was refused.
type ApplyResult = Result<ApplyOutcome, Vec<ManifestError>>;

/// An apply sent to the task running [`ManifestDir::watch`]; made by [`ApplyHandle::apply`].
#[derive(Debug)]
pub struct ApplyRequest {
    file_label: String,
    text: String,
    reply: oneshot::Sender<ApplyResult>,
}

/// Sends applies to the task running [`ManifestDir::watch`]; cheap to clone.
#[derive(Debug, Clone)]
pub struct ApplyHandle {
    tx: mpsc::Sender<ApplyRequest>,
}

impl ApplyHandle {
    /// A handle and the receiver to pass to [`ManifestDir::watch`]; `capacity` applies may queue.
    pub fn channel(capacity: usize) -> (Self, mpsc::Receiver<ApplyRequest>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        (Self { tx }, rx)
    }

    /// Applies manifests (see [`ManifestDir::apply`]). When it returns `Ok`, the new state
    /// has already been published to the watcher's report channel.
    pub async fn apply(
        &self,
        file_label: impl Into<String>,
        text: impl Into<String>,
    ) -> Result<ApplyOutcome, Vec<ManifestError>> {
        let file_label = file_label.into();
        let stopped = |label: &str| {
            vec![ManifestError::file_error(label, "the manifest directory is no longer being watched")]
        };
        let (reply, response) = oneshot::channel();
        let request = ApplyRequest { file_label: file_label.clone(), text: text.into(), reply };
        self.tx.send(request).await.map_err(|_| stopped(&file_label))?;
        response.await.map_err(|_| stopped(&file_label))?
    }
}

impl ManifestDir {
    /// Serves the directory: every `interval` it re-reads the files and, when something
    /// changed, reloads and publishes the new report on `reports`, but only when the state
    /// or the errors differ from the published one. Applies from `requests` run in between,
    /// and their result is published before the requester gets its reply.
    ///
    /// Polling (rather than file notifications) works the same on every filesystem,
    /// including mounted ConfigMaps. File I/O runs on tokio's blocking pool. Returns once
    /// every report receiver and every [`ApplyHandle`] is gone.
    pub async fn watch(
        self,
        interval: Duration,
        reports: watch::Sender<Arc<LoadReport>>,
        mut requests: mpsc::Receiver<ApplyRequest>,
    ) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut dir = self;
        let mut requests_open = true;
        loop {
            tokio::select! {
                _ = ticker.tick() => {
                    let Some((back, report)) = on_blocking_pool(dir, ManifestDir::poll).await else {
                        return;
                    };
                    dir = back;
                    if let Some(report) = report {
                        publish(&reports, report);
                    }
                }
                request = requests.recv(), if requests_open => {
                    let Some(ApplyRequest { file_label, text, reply }) = request else {
                        requests_open = false;
                        continue;
                    };
                    let applied = on_blocking_pool(dir, move |dir| {
                        let result = dir.apply(&file_label, &text);
                        (result, dir.last_report())
                    });
                    let Some((back, (result, report))) = applied.await else { return };
                    dir = back;
                    publish(&reports, report);
                    // The requester may have given up waiting; the apply stands regardless.
                    let _ = reply.send(result);
                }
            }
            if reports.is_closed() && !requests_open {
                tracing::debug!(root = %dir.root.display(), "manifest directory no longer watched");
                return;
            }
        }
    }
}

/// Runs `f` on the blocking pool, handing the directory there and back.
async fn on_blocking_pool<T: Send + 'static>(
    dir: ManifestDir,
    f: impl FnOnce(&mut ManifestDir) -> T + Send + 'static,
) -> Option<(ManifestDir, T)> {
    let joined = tokio::task::spawn_blocking(move || {
        let mut dir = dir;
        let out = f(&mut dir);
        (dir, out)
    })
    .await;
    match joined {
        Ok(done) => Some(done),
        Err(e) => {
            tracing::error!(error = %e, "manifest directory task failed; it is no longer watched");
            None
        }
    }
}

/// Publishes a report if its state or errors differ from the current one.
fn publish(reports: &watch::Sender<Arc<LoadReport>>, mut report: LoadReport) {
    let new_errors: Vec<&ManifestError> = {
        let current = reports.borrow();
        if current.state == report.state && current.errors == report.errors {
            return;
        }
        report.errors.iter().filter(|e| !current.errors.contains(e)).collect()
    };
    for error in new_errors {
        tracing::warn!(%error, "manifest refused; the last valid version is kept");
    }
    tracing::info!(errors = report.errors.len(), "manifest directory changed");
    report.changed = true;
    reports.send_replace(Arc::new(report));
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::super::tests::{split, weight, write};
    use super::*;

    const PATIENCE: Duration = Duration::from_secs(10);

    #[tokio::test]
    async fn live_reload_picks_up_edits_and_applies_publish_before_replying() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        write(&root, "a.yaml", &split("s", "90"));
        let mut dir = ManifestDir::new(&root);
        let (reports, mut updates) = watch::channel(Arc::new(dir.load()));
        let (applier, requests) = ApplyHandle::channel(4);
        let task = tokio::spawn(dir.watch(Duration::from_millis(10), reports, requests));

        write(&root, "a.yaml", &split("s", "50"));
        let seen =
            tokio::time::timeout(PATIENCE, updates.wait_for(|r| weight(&r.state, "s") == Some(50_000)));
        assert!(seen.await.unwrap().unwrap().changed);

        write(&root, "a.yaml", &split("s", "-3"));
        let seen = tokio::time::timeout(PATIENCE, updates.wait_for(|r| !r.errors.is_empty()));
        let report = seen.await.unwrap().unwrap().clone();
        assert_eq!(weight(&report.state, "s"), Some(50_000), "last valid version kept");
        assert_eq!(report.errors[0].field, "spec.backends[0].weight");

        let outcome = applier.apply("fix.yaml", split("s", "30")).await.unwrap();
        assert_eq!(outcome.objects, vec!["TrafficSplit payments/s configured"]);
        let now = updates.borrow_and_update().clone();
        assert_eq!(weight(&now.state, "s"), Some(30_000));
        assert!(now.errors.is_empty());

        let refused = applier.apply("bad.yaml", "apiVersion: v1\nkind: Service\n").await.unwrap_err();
        assert_eq!(refused[0].field, "metadata");

        drop(updates);
        drop(applier);
        tokio::time::timeout(PATIENCE, task).await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn apply_after_the_watcher_stopped_is_an_error_not_a_hang() {
        let (applier, requests) = ApplyHandle::channel(1);
        drop(requests);
        let errors = applier.apply("x.yaml", split("s", "1")).await.unwrap_err();
        assert!(errors[0].reason.contains("no longer being watched"), "{}", errors[0]);
    }

    #[test]
    fn only_a_different_state_or_error_list_is_published() {
        let (reports, mut updates) = watch::channel(Arc::new(LoadReport::default()));
        updates.borrow_and_update();
        publish(&reports, LoadReport { changed: true, ..LoadReport::default() });
        assert!(!updates.has_changed().unwrap(), "same state and errors: not sent");

        let error = ManifestError::file_error("a.yaml", "cannot read file");
        publish(&reports, LoadReport { errors: vec![error], ..LoadReport::default() });
        assert!(updates.has_changed().unwrap());
        let sent = updates.borrow_and_update().clone();
        assert!(sent.changed);
        assert_eq!(sent.errors.len(), 1);
    }
}
