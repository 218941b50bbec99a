//! Running the control plane: a source (the manifest directory or a Kubernetes cluster)
//! feeding snapshots, the xDS server and the admin API, started together and stopped together.
//!
//! With an [`IdentityConfig`], the xDS port serves TLS with the control plane's own certificate
//! from the mesh CA, hosts the Identity service (Certify) beside xDS, and admits an xDS stream
//! only with a client certificate matching its node. Without one it serves plaintext.
//!
//! In Kubernetes ([`SourceConfig::Kubernetes`], see [`kubernetes`]) the CA lives in a Secret,
//! workloads prove who they are with ServiceAccount tokens (TokenReview), and the control plane
//! also runs the sidecar injector, keeps the trust bundle in meshed namespaces and, from the
//! replica holding the Lease, writes status onto the SMI objects.

pub mod kubernetes;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

use crate::admin::identity::IdentityHandles;
use crate::admin::{self, AdminState};
use crate::cache::Snapshot;
use crate::identity::{
    self, CaConfig, CertificateAuthority, ControlTls, IdentityService, Ledger, LocalTokens,
};
use crate::metrics::Metrics;
use crate::source::kube::WorkloadAuthenticator;
use crate::source::{ApplyHandle, LoadReport, ManifestDir, ManifestError};
use crate::translate::MeshOptions;
use crate::xds::{self, ClientAuth, Registry, XdsContext};

pub use kubernetes::{KubernetesSource, WebhookConfig};

/// How `weft control` runs.
#[derive(Debug, Clone)]
pub struct ControlConfig {
    /// Where the mesh's objects come from.
    pub source: SourceConfig,
    /// Where xDS is served (port 0 picks one).
    pub xds_addr: SocketAddr,
    /// Where the admin API is served (port 0 picks one).
    pub admin_addr: SocketAddr,
    /// How often the manifest directory is re-read (unused with Kubernetes, which is watched).
    pub reload_interval: Duration,
    /// Mesh-wide translation options (mTLS, authorization mode, trust domain).
    pub mesh: MeshOptions,
    /// The CA and workload certificates; `None` serves xDS in plaintext with no identity
    /// service (`--insecure-plaintext`, for debugging).
    pub identity: Option<IdentityConfig>,
}

/// Where the mesh's objects come from.
#[derive(Debug, Clone)]
pub enum SourceConfig {
    /// A directory of manifests, watched, written to by the apply API.
    Manifests(PathBuf),
    /// A Kubernetes cluster, watched; the apply API refuses (use `kubectl apply`).
    Kubernetes(Box<KubernetesSource>),
}

/// Where the CA lives and what it issues.
#[derive(Debug, Clone)]
pub struct IdentityConfig {
    /// The CA directory (root certificate and key, token key, optional intermediate). With
    /// Kubernetes the CA is in a Secret instead, and a root made at first start passes
    /// through this directory on its way there.
    pub ca_dir: PathBuf,
    /// Lifetime of workload certificates.
    pub cert_lifetime: Duration,
}

/// Why the control plane could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A listening socket could not be bound.
    #[error("binding {what} to {addr}: {source}")]
    Bind {
        /// `xDS` or `admin`.
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// The manifest directory is missing or unreadable.
    #[error("manifest directory {0}: {1}")]
    Manifests(PathBuf, String),
    /// The CA, token key or TLS setup failed.
    #[error("identity ({ca}): {source}")]
    Identity {
        /// Where the CA is kept (its directory or Secret).
        ca: String,
        /// The cause.
        source: Box<identity::Error>,
    },
    /// The Kubernetes side (the source, the CA Secret, the injector) could not start.
    #[error(transparent)]
    Kubernetes(#[from] kubernetes::KubernetesError),
}

/// What the apply API answers when the control plane reads Kubernetes.
pub const APPLY_REFUSED_KUBERNETES: &str = "this control plane reads Kubernetes: use kubectl apply";

/// The source as the rest of the control plane sees it: the latest load report, and
/// applies (validated, stored, then reloaded by the watcher) where the source takes them.
#[derive(Debug, Clone)]
pub struct SourceHandle {
    reports: watch::Receiver<Arc<LoadReport>>,
    /// `None` for a source that is not written through weft (Kubernetes).
    applier: Option<ApplyHandle>,
}

impl SourceHandle {
    /// The invalid objects of the last load.
    pub async fn errors(&self) -> Vec<ManifestError> {
        self.reports.borrow().errors.clone()
    }

    /// Validates `text`; if every document is valid, stores it.
    /// Returns one line per object, or one line per problem (nothing stored).
    pub async fn apply(&self, label: &str, text: &str) -> Result<Vec<String>, Vec<String>> {
        let Some(applier) = &self.applier else {
            return Err(vec![APPLY_REFUSED_KUBERNETES.to_string()]);
        };
        match applier.apply(label, text).await {
            Ok(outcome) => {
                info!(objects = ?outcome.objects, "applied");
                Ok(outcome.objects)
            }
            Err(errors) => Err(errors.iter().map(ToString::to_string).collect()),
        }
    }
}

/// Turns load reports into published snapshots, one version per change.
#[derive(Debug)]
struct Publisher {
    version: u64,
    snapshots: watch::Sender<Arc<Snapshot>>,
    metrics: Arc<Metrics>,
    options: Arc<MeshOptions>,
}

impl Publisher {
    fn publish(&mut self, report: &LoadReport) {
        for e in &report.errors {
            warn!(error = %e, "invalid manifest; the last valid version is kept");
        }
        self.metrics.invalid_objects.set(i64::try_from(report.errors.len()).unwrap_or(i64::MAX));
        let version = self.version + 1;
        let prev = self.snapshots.borrow().clone();
        match Snapshot::build_after(version, report.state.clone(), self.options.clone(), &prev) {
            Ok(snapshot) => {
                self.version = version;
                self.metrics.snapshot_version.set(i64::try_from(version).unwrap_or(i64::MAX));
                info!(version, clusters = snapshot.clusters.len(), "publishing snapshot");
                self.snapshots.send_replace(Arc::new(snapshot));
            }
            Err(e) => error!(error = %e, "snapshot is inconsistent and was not published"),
        }
    }
}

/// A running control plane.
#[derive(Debug)]
pub struct RunningControl {
    /// The bound xDS address.
    pub xds_addr: SocketAddr,
    /// The bound admin address.
    pub admin_addr: SocketAddr,
    /// The manifest source.
    pub source: SourceHandle,
    /// The CA and the control plane's certificate (`None` when serving plaintext).
    pub identity: Option<IdentityHandles>,
    /// The sidecar injector's bound address (Kubernetes only).
    pub webhook_addr: Option<SocketAddr>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    kube: Option<Box<kubernetes::RunningKube>>,
}

impl RunningControl {
    /// Stops serving: a graceful stop of up to a second, then open streams are cut. In
    /// Kubernetes the injector stops too and the status Lease is released.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for t in self.tasks {
            let abort = t.abort_handle();
            if tokio::time::timeout(Duration::from_secs(1), t).await.is_err() {
                abort.abort();
            }
        }
        if let Some(kube) = self.kube {
            kube.shutdown().await;
        }
    }
}

async fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener, ServerError> {
    TcpListener::bind(addr).await.map_err(|source| ServerError::Bind { what, addr, source })
}

fn ca_config(config: &IdentityConfig, trust_domain: &str) -> CaConfig {
    CaConfig {
        trust_domain: trust_domain.to_owned(),
        leaf_lifetime: config.cert_lifetime,
        ..CaConfig::default()
    }
}

/// Loads (or makes) the CA and token key of a CA directory.
fn load_ca_dir(
    config: &IdentityConfig,
    trust_domain: &str,
) -> Result<(Arc<CertificateAuthority>, WorkloadAuthenticator), identity::Error> {
    let ca =
        Arc::new(CertificateAuthority::load_or_generate(&config.ca_dir, ca_config(config, trust_domain))?);
    let tokens = Arc::new(LocalTokens::load_or_generate(&config.ca_dir)?);
    Ok((ca, WorkloadAuthenticator::Local(tokens)))
}

/// Issues the control plane's certificate from `ca`.
fn identity_handles(
    ca: Arc<CertificateAuthority>,
    ca_location: String,
    config: &IdentityConfig,
    xds_addr: SocketAddr,
    metrics: &Arc<Metrics>,
) -> Result<IdentityHandles, identity::Error> {
    metrics.set_root_not_after(ca.root_not_after());
    let control = Arc::new(ControlTls::new(ca.clone(), xds_addr, config.cert_lifetime)?);
    let cert = control.certificate();
    info!(
        identity = %control.identity(),
        serial = %cert.serial,
        not_after = cert.not_after,
        roots = ca.trust_bundle().len(),
        intermediate = !ca.chain().is_empty(),
        ca = %ca_location,
        "control plane certificate issued"
    );
    Ok(IdentityHandles {
        ca_dir: config.ca_dir.clone(),
        ca_location,
        ca,
        control,
        ledger: Arc::new(Ledger::new(metrics.clone())),
    })
}

/// Where the reports come from, as [`start`] sets it up before serving.
struct Source {
    /// The latest report.
    reports: watch::Receiver<Arc<LoadReport>>,
    /// Applies, for a manifest directory.
    applier: Option<ApplyHandle>,
    /// What keeps the reports current (the directory watcher), to spawn once serving; `None`
    /// with Kubernetes, whose watchers run in its runtime.
    watcher: Option<futures::future::BoxFuture<'static, ()>>,
    /// The CA and how workloads authenticate, with where the CA is kept.
    ca: Option<(Arc<CertificateAuthority>, WorkloadAuthenticator, String)>,
    /// Kubernetes: what it runs besides the source, and the running source, lease and status writer.
    kube: Option<(Box<KubernetesSource>, crate::source::kube::KubeRuntime)>,
}

impl Source {
    /// Stops what the source started (start-up failed).
    async fn stop(self) {
        if let Some((_, runtime)) = self.kube {
            runtime.shutdown().await;
        }
    }
}

/// Reads the source (the manifest directory, or a Kubernetes cluster once every watcher has
/// synced), publishes the first snapshot and starts serving.
pub async fn start(config: ControlConfig) -> Result<RunningControl, ServerError> {
    let metrics = Arc::new(Metrics::new());
    let (snap_tx, snap_rx) = watch::channel(Arc::new(Snapshot::empty()));
    let mut publisher = Publisher {
        version: 0,
        snapshots: snap_tx,
        metrics: metrics.clone(),
        options: Arc::new(config.mesh.clone()),
    };
    if let SourceConfig::Manifests(dir) = &config.source
        && !dir.is_dir()
    {
        return Err(ServerError::Manifests(dir.clone(), "not a directory".into()));
    }
    // Bound first (a taken port fails at once), served only once the source is read.
    let xds_listener = bind("xDS", config.xds_addr).await?;
    let admin_listener = bind("admin", config.admin_addr).await?;
    let xds_addr = xds_listener.local_addr().map_err(|source| ServerError::Bind {
        what: "xDS",
        addr: config.xds_addr,
        source,
    })?;
    let admin_addr = admin_listener.local_addr().map_err(|source| ServerError::Bind {
        what: "admin",
        addr: config.admin_addr,
        source,
    })?;

    // The first report is published before anything is served, so no proxy sees an empty mesh.
    let mut source = match &config.source {
        SourceConfig::Manifests(dir) => manifest_source(dir, &config)?,
        SourceConfig::Kubernetes(kube) => kubernetes::source(kube.clone(), &config).await?,
    };
    let mut report_rx = source.reports.clone();
    let first = report_rx.borrow_and_update().clone();
    publisher.publish(&first);
    let handle = SourceHandle { reports: report_rx.clone(), applier: source.applier.clone() };

    let (shutdown, shutdown_rx) = watch::channel(false);
    let registry = Registry::default();

    let identity = match (&config.identity, source.ca.take()) {
        (Some(identity_config), Some((ca, authenticator, location))) => {
            let identity_error = |source: identity::Error| ServerError::Identity {
                ca: location.clone(),
                source: Box::new(source),
            };
            let tls = identity_handles(ca, location.clone(), identity_config, xds_addr, &metrics)
                .map_err(identity_error)
                .and_then(|handles| {
                    let tls_config = handles.control.server_config().map_err(|e| identity_error(e.into()))?;
                    Ok((handles, authenticator, tls_config))
                });
            match tls {
                Ok(tls) => Some(tls),
                Err(e) => {
                    source.stop().await;
                    return Err(e);
                }
            }
        }
        _ => {
            warn!(
                "INSECURE: xDS is served in PLAINTEXT with no client authentication and no identity \
                 service; anyone who can reach {xds_addr} can read the whole mesh configuration. \
                 Use this for debugging only."
            );
            None
        }
    };
    if identity.is_none() && config.mesh.mtls {
        warn!("mesh mTLS is on but the control plane has no CA: proxies cannot obtain certificates");
    }

    // Kubernetes: the injector, the caBundle, the trust bundles and the NACK feed.
    let mut tasks = Vec::new();
    let kube_tap = source.kube.as_ref().map(|(kube, _)| crate::tap::KubeTap::new(kube.client.clone()));
    let kube = match source.kube.take() {
        Some((kube, runtime)) => Some(Box::new(
            kubernetes::serve(
                *kube,
                runtime,
                &config,
                identity.as_ref().map(|(handles, _, _)| handles.ca.clone()),
                &registry,
                &shutdown_rx,
                &mut tasks,
            )
            .await?,
        )),
        None => None,
    };
    let webhook_addr = kube.as_ref().and_then(|k| k.webhook_addr());

    let ctx = XdsContext {
        snapshots: snap_rx.clone(),
        registry: registry.clone(),
        metrics: metrics.clone(),
        client_auth: identity.as_ref().map(|_| ClientAuth { trust_domain: config.mesh.trust_domain.clone() }),
        push_tracer: config.mesh.tracing.map(|t| xds::PushTracer::spawn(t.collector)),
    };
    let mut stop = shutdown_rx.clone();
    let mut server =
        tonic::transport::Server::builder().http2_keepalive_interval(Some(Duration::from_secs(30)));
    match &identity {
        Some((handles, authenticator, tls_config)) => {
            let service = IdentityService::new(handles.ca.clone(), authenticator.clone())
                .with_ledger(handles.ledger.clone());
            let routes = xds::routes(ctx).add_service(service.into_server());
            let incoming = identity::tls::accept_tls(
                xds_listener,
                tls_config.clone(),
                handles.ledger.clone(),
                shutdown_rx.clone(),
            );
            tasks.push(tokio::spawn(async move {
                let result = server
                    .add_routes(routes)
                    .serve_with_incoming_shutdown(incoming, async move {
                        let _ = stop.wait_for(|s| *s).await;
                    })
                    .await;
                if let Err(e) = result {
                    error!(error = %e, "xDS server failed");
                }
            }));
            tasks.push(tokio::spawn(handles.control.clone().renew_until(shutdown_rx.clone())));
            info!(xds = %xds_addr, identity = %handles.control.identity(), "serving xDS and the identity service over TLS");
        }
        None => {
            tasks.push(tokio::spawn(async move {
                let incoming = tokio_stream::wrappers::TcpListenerStream::new(xds_listener);
                let result = server
                    .add_routes(xds::routes(ctx))
                    .serve_with_incoming_shutdown(incoming, async move {
                        let _ = stop.wait_for(|s| *s).await;
                    })
                    .await;
                if let Err(e) = result {
                    error!(error = %e, "xDS server failed");
                }
            }));
        }
    }
    let identity = identity.map(|(handles, _, _)| handles);

    let admin_state = AdminState {
        snapshots: snap_rx,
        registry,
        metrics,
        source: handle.clone(),
        trust_domain: config.mesh.trust_domain.clone(),
        identity: identity.clone(),
        kube_tap,
    };
    let mut stop = shutdown_rx.clone();
    tasks.push(tokio::spawn(async move {
        let result = axum::serve(admin_listener, admin::router(admin_state))
            .with_graceful_shutdown(async move {
                let _ = stop.wait_for(|s| *s).await;
            })
            .await;
        if let Err(e) = result {
            error!(error = %e, "admin server failed");
        }
    }));

    let mut stop = shutdown_rx.clone();
    let watcher_abort = source.watcher.take().map(|w| tokio::spawn(w).abort_handle());
    tasks.push(tokio::spawn(async move {
        loop {
            tokio::select! {
                changed = report_rx.changed() => {
                    if changed.is_err() { break; }
                    let report = report_rx.borrow_and_update().clone();
                    publisher.publish(&report);
                }
                _ = stop.wait_for(|s| *s) => break,
            }
        }
        if let Some(watcher) = watcher_abort {
            watcher.abort();
        }
    }));

    Ok(RunningControl { xds_addr, admin_addr, source: handle, identity, webhook_addr, shutdown, tasks, kube })
}

/// The manifest directory, loaded once, and the CA from its directory.
fn manifest_source(dir: &std::path::Path, config: &ControlConfig) -> Result<Source, ServerError> {
    let ca = match &config.identity {
        Some(identity_config) => {
            let location = identity_config.ca_dir.display().to_string();
            let (ca, authenticator) = load_ca_dir(identity_config, &config.mesh.trust_domain)
                .map_err(|source| ServerError::Identity { ca: location.clone(), source: Box::new(source) })?;
            Some((ca, authenticator, location))
        }
        None => None,
    };
    let mut manifests = ManifestDir::new(dir.to_path_buf());
    let first = manifests.load();
    let (report_tx, reports) = watch::channel(Arc::new(first));
    let (applier, apply_requests) = ApplyHandle::channel(16);
    let watcher = Box::pin(manifests.watch(config.reload_interval, report_tx, apply_requests));
    Ok(Source { reports, applier: Some(applier), watcher: Some(watcher), ca, kube: None })
}
