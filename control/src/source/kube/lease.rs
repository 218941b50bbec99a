//! Leader election on a coordination.k8s.io/v1 Lease, so only one control plane replica
//! writes status.
//!
//! As client-go does it: the holder renews `spec.renewTime` every `retry_period`; another
//! replica takes the lease over only when the lease record has not changed for
//! `lease_duration` by its own clock (so clocks need not agree), or the holder released it.
//! Every write carries the `resourceVersion` it read, so two replicas racing for the lease
//! cannot both win. A holder that cannot renew for `renew_deadline` steps down before
//! anyone else may take over.

use std::time::{Duration, Instant};

use ::kube::Api;
use ::kube::api::PostParams;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

/// The Lease and how it is held.
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    /// The Lease's namespace (`weft-system`).
    pub namespace: String,
    /// The Lease's name.
    pub name: String,
    /// Who this replica is (its pod name); unique among replicas.
    pub identity: String,
    /// How long a lease lasts without renewal before another replica may take it.
    pub lease_duration: Duration,
    /// The holder steps down when it could not renew for this long (less than `lease_duration`).
    pub renew_deadline: Duration,
    /// How often to renew, or to try to acquire.
    pub retry_period: Duration,
}

impl LeaseConfig {
    /// client-go's defaults (15 s lease, 10 s renew deadline, 2 s retry) on `namespace/name`.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>, identity: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// A running election: whether this replica leads, kept current by a task.
#[derive(Debug)]
pub struct LeaderElection {
    leader: watch::Receiver<bool>,
    task: JoinHandle<()>,
    lease: Api<Lease>,
    config: LeaseConfig,
}

impl LeaderElection {
    /// Starts campaigning for the lease.
    pub fn start(client: ::kube::Client, config: LeaseConfig) -> Self {
        let lease: Api<Lease> = Api::namespaced(client, &config.namespace);
        let (tx, leader) = watch::channel(false);
        let task = tokio::spawn(campaign(lease.clone(), config.clone(), tx));
        Self { leader, task, lease, config }
    }

    /// Whether this replica holds the lease now.
    pub fn is_leader(&self) -> bool {
        *self.leader.borrow()
    }

    /// Follows leadership changes.
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.leader.clone()
    }

    /// Stops campaigning and, if this replica holds the lease, releases it so another
    /// replica takes over at once instead of after `lease_duration`.
    pub async fn release(self) {
        self.task.abort();
        let Ok(Some(mut lease)) = self.lease.get_opt(&self.config.name).await else { return };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.acquire_time = None;
        spec.renew_time = None;
        match self.lease.replace(&self.config.name, &PostParams::default(), &lease).await {
            Ok(_) => info!(lease = %self.config.name, "released the lease"),
            Err(e) => warn!(lease = %self.config.name, error = %e, "could not release the lease"),
        }
    }
}

impl Drop for LeaderElection {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What this replica last saw of the lease, and when it first saw it so.
#[derive(Debug, PartialEq)]
struct Observed {
    record: (Option<String>, Option<Timestamp>, Option<i32>),
    since: Instant,
}

async fn campaign(lease: Api<Lease>, config: LeaseConfig, leader: watch::Sender<bool>) {
    let mut observed: Option<Observed> = None;
    let mut last_renewed: Option<Instant> = None;
    loop {
        let held = match try_acquire_or_renew(&lease, &config, &mut observed).await {
            Ok(held) => {
                last_renewed = held.then(Instant::now);
                held
            }
            Err(e) => {
                debug!(lease = %config.name, error = %e, "lease request failed");
                // Keep leading through brief API trouble, up to the renew deadline.
                last_renewed.is_some_and(|at| at.elapsed() < config.renew_deadline)
            }
        };
        let was = *leader.borrow();
        if held != was {
            if held {
                info!(lease = %config.name, identity = %config.identity, "became the leader");
            } else {
                info!(lease = %config.name, identity = %config.identity, "no longer the leader");
            }
            leader.send_replace(held);
        }
        tokio::time::sleep(config.retry_period).await;
    }
}

/// One round: creates, renews or takes over the lease. `Ok(true)` when this replica holds it.
async fn try_acquire_or_renew(
    lease: &Api<Lease>,
    config: &LeaseConfig,
    observed: &mut Option<Observed>,
) -> Result<bool, ::kube::Error> {
    let now = MicroTime(Timestamp::now());
    let duration_secs = i32::try_from(config.lease_duration.as_secs().max(1)).unwrap_or(i32::MAX);
    let Some(mut current) = lease.get_opt(&config.name).await? else {
        let fresh = Lease {
            metadata: ObjectMeta {
                name: Some(config.name.clone()),
                namespace: Some(config.namespace.clone()),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(config.identity.clone()),
                lease_duration_seconds: Some(duration_secs),
                acquire_time: Some(now.clone()),
                renew_time: Some(now),
                lease_transitions: Some(0),
                ..Default::default()
            }),
        };
        return match lease.create(&PostParams::default(), &fresh).await {
            Ok(_) => {
                *observed = None;
                Ok(true)
            }
            Err(::kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        };
    };
    let spec = current.spec.get_or_insert_with(LeaseSpec::default);
    let record =
        (spec.holder_identity.clone(), spec.renew_time.as_ref().map(|t| t.0), spec.lease_transitions);
    if observed.as_ref().map(|o| &o.record) != Some(&record) {
        *observed = Some(Observed { record, since: Instant::now() });
    }
    let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
    let theirs = spec.lease_duration_seconds.and_then(|s| u64::try_from(s).ok()).map(Duration::from_secs);
    let expired =
        observed.as_ref().is_some_and(|o| o.since.elapsed() > theirs.unwrap_or(config.lease_duration));
    match holder {
        Some(h) if h == config.identity => {
            spec.renew_time = Some(now);
            spec.lease_duration_seconds = Some(duration_secs);
        }
        Some(_) if !expired => return Ok(false),
        _ => {
            spec.holder_identity = Some(config.identity.clone());
            spec.acquire_time = Some(now.clone());
            spec.renew_time = Some(now);
            spec.lease_duration_seconds = Some(duration_secs);
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
    }
    // The resourceVersion read above makes this a compare-and-swap.
    match lease.replace(&config.name, &PostParams::default(), &current).await {
        Ok(_) => Ok(true),
        Err(::kube::Error::Api(s)) if s.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}
