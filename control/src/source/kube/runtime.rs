//! Everything `weft control --source kubernetes` runs beside the xDS server: the source,
//! the lease and the status writer, and the NACK feed from the xDS registry.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{Error, KubeSource, KubeSourceOptions, LeaderElection, LeaseConfig, NackInfo, StatusWriter};
use crate::source::LoadReport;
use crate::xds::{NackReport, ProxyReport, Registry, TypeReport};

/// How the Kubernetes side of the control plane runs.
#[derive(Debug, Clone)]
pub struct KubernetesConfig {
    /// How the source watches.
    pub source: KubeSourceOptions,
    /// The lease that elects the status writer; `None` writes no status at all.
    pub lease: Option<LeaseConfig>,
}

/// The running source, election and status writer.
#[derive(Debug)]
pub struct KubeRuntime {
    /// The source: its reports feed snapshots exactly as the manifest directory's do.
    pub source: KubeSource,
    /// Where the control plane publishes which proxies NACK what (see [`feed_nacks`]).
    pub nacks: watch::Sender<Vec<NackInfo>>,
    election: Option<LeaderElection>,
    writer: Option<JoinHandle<()>>,
}

impl KubeRuntime {
    /// The reports, for the snapshot publisher.
    pub fn reports(&self) -> watch::Receiver<Arc<LoadReport>> {
        self.source.reports.clone()
    }

    /// Stops writing status and hands the lease over at once.
    pub async fn shutdown(self) {
        if let Some(writer) = self.writer {
            writer.abort();
        }
        if let Some(election) = self.election {
            election.release().await;
        }
        self.source.stop();
    }
}

/// Starts the source (returning once its caches are synced) and, with a lease, the
/// election and the status writer.
pub async fn run(client: ::kube::Client, config: KubernetesConfig) -> Result<KubeRuntime, Error> {
    let source = super::start(client.clone(), config.source).await?;
    let (nacks, nack_rx) = watch::channel(Vec::new());
    let (election, writer) = match config.lease {
        Some(lease) => {
            let identity = lease.identity.clone();
            let election = LeaderElection::start(client.clone(), lease);
            let writer = StatusWriter::new(client, &identity).run(
                source.reports.clone(),
                source.objects.clone(),
                nack_rx,
                election.subscribe(),
            );
            (Some(election), Some(tokio::spawn(writer)))
        }
        None => (None, None),
    };
    Ok(KubeRuntime { source, nacks, election, writer })
}

/// The proxies that currently reject a configuration: their last NACK is of the last
/// version sent, which they have not ACKed since.
pub fn nacks_from_reports(reports: &[ProxyReport]) -> Vec<NackInfo> {
    let mut out = Vec::new();
    for report in reports {
        for nack in report.types.values().filter_map(rejecting) {
            out.push(NackInfo {
                proxy: report.node.id.clone(),
                namespace: report.node.namespace.clone(),
                service_account: report.node.service_account.clone(),
                detail: nack.detail.clone(),
                resources: nack.resources.clone(),
            });
        }
    }
    out
}

/// The NACK a proxy still stands by on one type: of the last version sent, not ACKed since.
fn rejecting(t: &TypeReport) -> Option<&NackReport> {
    let nack = t.last_nack.as_ref()?;
    let current = t.sent_version.as_deref() == Some(nack.version.as_str())
        && t.acked_version.as_deref() != Some(nack.version.as_str());
    current.then_some(nack)
}

/// Publishes the registry's current NACKs every `every`, when they change, until the
/// receivers are gone.
pub async fn feed_nacks(registry: Registry, nacks: watch::Sender<Vec<NackInfo>>, every: Duration) {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = nacks.closed() => return,
        }
        let current = nacks_from_reports(&registry.reports().await);
        nacks.send_if_modified(|published| {
            let modified = *published != current;
            if modified {
                *published = current;
            }
            modified
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_nack_of_the_last_version_sent_and_not_acked_since_counts() {
        let nack = NackReport {
            version: "7".into(),
            nonce: "n".into(),
            detail: "bad".into(),
            resources: vec!["outbound".into()],
            at: 0,
        };
        let report = |sent: &str, acked: &str| TypeReport {
            sent_version: Some(sent.into()),
            acked_version: Some(acked.into()),
            last_nack: Some(nack.clone()),
            ..TypeReport::default()
        };
        assert_eq!(rejecting(&report("7", "6")), Some(&nack), "still rejecting 7");
        assert_eq!(rejecting(&report("8", "6")), None, "8 sent since, not answered yet");
        assert_eq!(rejecting(&report("8", "8")), None, "8 accepted");
        assert_eq!(rejecting(&TypeReport::default()), None);
    }
}
