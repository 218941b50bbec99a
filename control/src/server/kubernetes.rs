//! `weft control --source kubernetes`: what the control plane runs against a cluster besides
//! xDS and the admin API.
//!
//! Before anything is served:
//! - the CA is loaded from its Secret (`weft-ca` in the control plane's namespace), or made and
//!   stored there by the first replica ([`ca_secret::load_or_create`]);
//! - the source's watchers list everything ([`kube_source::run`]), and the replica starts
//!   campaigning for the status Lease; its holder writes conditions and Events.
//!
//! Then, beside xDS:
//! - the identity service checks workloads' ServiceAccount tokens with TokenReview;
//! - the proxies' NACKs feed the status writer ([`kube_source::feed_nacks`]);
//! - the sidecar injector serves over TLS with a certificate from the CA, and the CA's bundle is
//!   patched into the MutatingWebhookConfiguration's `caBundle` (retried until it succeeds);
//! - the `weft-trust-bundle` ConfigMap is kept in every namespace where pods are injected.
//!
//! On shutdown the injector stops and the Lease is released, so another replica writes status
//! at once.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::{ControlConfig, ServerError, Source, ca_config};
use crate::identity::CertificateAuthority;
use crate::inject::webhook::{self, ApiNamespaces, RunningWebhook, WebhookError};
use crate::inject::{InjectArgs, native_sidecars_supported, trust_bundle};
use crate::install::ca_secret::{self, CaSecretError};
use crate::model::MeshState;
use crate::source::LoadReport;
use crate::source::kube::{
    self as kube_source, KubeRuntime, KubernetesConfig, TokenReviewAuthenticator, WorkloadAuthenticator,
};
use crate::xds::Registry;

/// How often the proxies' NACKs are handed to the status writer.
pub const NACK_FEED_INTERVAL: Duration = Duration::from_secs(2);
/// How often trust bundles that could not be written are tried again.
const TRUST_BUNDLE_RETRY: Duration = Duration::from_secs(5);
/// The longest wait between attempts to patch the webhook's `caBundle`.
const CA_BUNDLE_MAX_BACKOFF: Duration = Duration::from_secs(60);

/// The Kubernetes source and what runs with it.
#[derive(Clone)]
pub struct KubernetesSource {
    /// The cluster.
    pub client: ::kube::Client,
    /// How the cluster is watched, and the Lease that elects the status writer.
    pub runtime: KubernetesConfig,
    /// The control plane's namespace, where its CA Secret lives.
    pub namespace: String,
    /// The CA Secret's name.
    pub ca_secret: String,
    /// The sidecar injector; `None` runs none.
    pub webhook: Option<WebhookConfig>,
    /// Whether to keep the `weft-trust-bundle` ConfigMap in every namespace with injected pods.
    pub trust_bundles: bool,
}

impl std::fmt::Debug for KubernetesSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubernetesSource")
            .field("runtime", &self.runtime)
            .field("namespace", &self.namespace)
            .field("ca_secret", &self.ca_secret)
            .field("webhook", &self.webhook)
            .field("trust_bundles", &self.trust_bundles)
            .finish_non_exhaustive()
    }
}

/// The sidecar injector.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// Where it listens (HTTPS).
    pub addr: SocketAddr,
    /// How pods are injected (`--sidecar auto` asks the API server's version).
    pub inject: InjectArgs,
    /// The MutatingWebhookConfiguration whose `caBundle` the control plane keeps; `None`
    /// patches nothing.
    pub configuration: Option<String>,
}

/// Why the Kubernetes side could not start.
#[derive(Debug, thiserror::Error)]
pub enum KubernetesError {
    /// The watchers could not start.
    #[error("the Kubernetes source: {0}")]
    Source(#[from] kube_source::Error),
    /// The CA Secret could not be read or created.
    #[error(transparent)]
    CaSecret(#[from] CaSecretError),
    /// The injector could not start.
    #[error("the sidecar injector: {0}")]
    Webhook(#[from] WebhookError),
}

/// The CA from its Secret and the synced source, with the Lease campaign started.
pub(super) async fn source(
    kube: Box<KubernetesSource>,
    config: &ControlConfig,
) -> Result<Source, ServerError> {
    let ca = match &config.identity {
        Some(identity) => {
            let ca = ca_secret::load_or_create(
                kube.client.clone(),
                &kube.namespace,
                &kube.ca_secret,
                &identity.ca_dir,
                ca_config(identity, &config.mesh.trust_domain),
            )
            .await
            .map_err(KubernetesError::from)?;
            let authenticator =
                WorkloadAuthenticator::TokenReview(TokenReviewAuthenticator::new(kube.client.clone()));
            let location = format!("secret {}/{}", kube.namespace, kube.ca_secret);
            Some((Arc::new(ca), authenticator, location))
        }
        None => None,
    };
    info!("waiting for the Kubernetes caches to sync");
    let runtime =
        kube_source::run(kube.client.clone(), kube.runtime.clone()).await.map_err(KubernetesError::from)?;
    Ok(Source { reports: runtime.reports(), applier: None, watcher: None, ca, kube: Some((kube, runtime)) })
}

/// The running Kubernetes side: the source, election and status writer, and the injector.
#[derive(Debug)]
pub(super) struct RunningKube {
    runtime: KubeRuntime,
    webhook: Option<RunningWebhook>,
}

impl RunningKube {
    /// Where the injector listens.
    pub(super) fn webhook_addr(&self) -> Option<SocketAddr> {
        self.webhook.as_ref().map(|w| w.addr)
    }

    /// Stops the injector, then the status writer, releasing the Lease.
    pub(super) async fn shutdown(self) {
        if let Some(webhook) = self.webhook {
            webhook.shutdown().await;
        }
        self.runtime.shutdown().await;
    }
}

/// Starts the injector and the tasks that keep the cluster in step (in `tasks`, which stop
/// with `stop`). On error the runtime is shut down.
pub(super) async fn serve(
    kube: KubernetesSource,
    runtime: KubeRuntime,
    config: &ControlConfig,
    ca: Option<Arc<CertificateAuthority>>,
    registry: &Registry,
    stop: &watch::Receiver<bool>,
    tasks: &mut Vec<JoinHandle<()>>,
) -> Result<RunningKube, ServerError> {
    let webhook = match (&kube.webhook, &ca) {
        (Some(hook), Some(ca)) => {
            let native = native_sidecars(&kube.client).await;
            let inject = hook.inject.config(&config.mesh.trust_domain, native);
            info!(native_sidecar = inject.native_sidecar, proxy_image = %inject.proxy_image, "starting the sidecar injector");
            match webhook::start(hook.addr, ca.clone(), inject, ApiNamespaces(kube.client.clone())).await {
                Ok(running) => Some(running),
                Err(e) => {
                    runtime.shutdown().await;
                    return Err(KubernetesError::from(e).into());
                }
            }
        }
        (Some(_), None) => {
            warn!("no CA (--insecure-plaintext): the sidecar injector does not run");
            None
        }
        (None, _) => None,
    };

    let feed = kube_source::feed_nacks(registry.clone(), runtime.nacks.clone(), NACK_FEED_INTERVAL);
    tasks.push(tokio::spawn(until_stopped(feed, stop.clone())));
    if let (Some(running), Some(name)) =
        (&webhook, kube.webhook.as_ref().and_then(|w| w.configuration.clone()))
    {
        let patch = keep_ca_bundle(kube.client.clone(), name, running.tls.ca_bundle_pem());
        tasks.push(tokio::spawn(until_stopped(patch, stop.clone())));
    }
    match (&ca, kube.trust_bundles) {
        (Some(ca), true) => {
            let publish =
                keep_trust_bundles(kube.client.clone(), ca.trust_bundle_pem().to_string(), runtime.reports());
            tasks.push(tokio::spawn(until_stopped(publish, stop.clone())));
        }
        (None, true) => warn!("no CA (--insecure-plaintext): no trust bundle is published"),
        (_, false) => {}
    }
    Ok(RunningKube { runtime, webhook })
}

/// Runs `task` until it ends or `stop` turns true.
async fn until_stopped(task: impl Future<Output = ()>, mut stop: watch::Receiver<bool>) {
    tokio::select! {
        () = task => {}
        _ = stop.wait_for(|s| *s) => {}
    }
}

/// Whether the API server runs native sidecars (Kubernetes 1.29+); `false` when its version
/// cannot be read.
async fn native_sidecars(client: &::kube::Client) -> bool {
    match client.apiserver_version().await {
        Ok(info) => native_sidecars_supported(&info.major, &info.minor),
        Err(e) => {
            warn!(error = %e, "cannot read the API server's version; injecting proxies as regular containers");
            false
        }
    }
}

/// Patches `bundle_pem` into the `caBundle` of MutatingWebhookConfiguration `name`, retrying
/// with backoff until it succeeds.
async fn keep_ca_bundle(client: ::kube::Client, name: String, bundle_pem: String) {
    let mut wait = Duration::from_secs(1);
    loop {
        match webhook::patch_ca_bundle(client.clone(), &name, &bundle_pem).await {
            Ok(()) => return,
            Err(e) => {
                warn!(error = %e, retry_in = ?wait, "the API server cannot call the injector until its caBundle is set")
            }
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(CA_BUNDLE_MAX_BACKOFF);
    }
}

/// The namespaces whose pods are injected: those annotated `weft.io/inject: enabled`, and
/// those of pods annotated so themselves.
pub fn injected_namespaces(state: &MeshState) -> BTreeSet<String> {
    let namespaces = state.namespaces.values().filter(|ns| ns.inject == Some(true)).map(|ns| ns.name.clone());
    let pods =
        state.pods.values().filter(|pod| pod.inject == Some(true)).map(|pod| pod.key.namespace.clone());
    namespaces.chain(pods).collect()
}

/// Keeps the `weft-trust-bundle` ConfigMap holding `bundle_pem` in every injected namespace:
/// written when a namespace turns up (and each time the control plane starts, which is when
/// its CA can change), retried until it succeeds.
async fn keep_trust_bundles(
    client: ::kube::Client,
    bundle_pem: String,
    mut reports: watch::Receiver<Arc<LoadReport>>,
) {
    let mut published: BTreeSet<String> = BTreeSet::new();
    let mut retry = tokio::time::interval(TRUST_BUNDLE_RETRY);
    retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let wanted = injected_namespaces(&reports.borrow_and_update().state);
        // A namespace that goes and comes back gets the ConfigMap again.
        published.retain(|ns| wanted.contains(ns));
        for namespace in wanted.difference(&published).cloned().collect::<Vec<_>>() {
            match trust_bundle::publish(client.clone(), &namespace, &bundle_pem).await {
                Ok(()) => {
                    info!(%namespace, "published the trust bundle");
                    published.insert(namespace);
                }
                Err(e) => warn!(%namespace, error = %e, "publishing the trust bundle failed; retrying"),
            }
        }
        tokio::select! {
            changed = reports.changed() => if changed.is_err() { return },
            _ = retry.tick() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::model::{Key, Namespace, Pod};

    #[test]
    fn trust_bundles_go_where_pods_are_injected() {
        let mut state = MeshState::default();
        for (name, inject) in [("on", Some(true)), ("off", Some(false)), ("plain", None)] {
            state.namespaces.insert(name.into(), Namespace { name: name.into(), inject });
        }
        let pod = |ns: &str, inject| Pod {
            key: Key::new(ns, "p"),
            labels: Default::default(),
            ip: None,
            service_account: "default".into(),
            ready: true,
            inject,
            ports: Vec::new(),
        };
        state.pods.insert(Key::new("plain", "p"), pod("plain", None));
        state.pods.insert(Key::new("solo", "p"), pod("solo", Some(true)));
        state.pods.insert(Key::new("on", "p"), pod("on", Some(false)));
        let got: Vec<String> = injected_namespaces(&state).into_iter().collect();
        assert_eq!(got, ["on", "solo"]);
    }
}
