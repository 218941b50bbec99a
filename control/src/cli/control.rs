//! `weft control`: its flags, and turning them into a [`ControlConfig`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::builder::BoolishValueParser;
use weft_control::inject::InjectArgs;
use weft_control::install::{CA_SECRET, NAMESPACE, STATUS_LEASE, WEBHOOK_CONFIGURATION, WEBHOOK_PORT};
use weft_control::kube_check::ClusterArgs;
use weft_control::server::{ControlConfig, KubernetesSource, SourceConfig, WebhookConfig};
use weft_control::source::kube::{KubeSourceOptions, KubernetesConfig, LeaseConfig};
use weft_control::translate::{Sampling, TraceOptions};

use super::IdentityArgs;

/// Where `weft control` reads the mesh from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub(crate) enum SourceKind {
    /// A directory of manifests (`--manifests`), changed with `weft apply`.
    #[default]
    Manifests,
    /// The cluster of `--kubeconfig`/`--context`, or the one the control plane runs in.
    Kubernetes,
}

/// Arguments of `weft control`.
#[derive(Debug, clap::Args)]
pub(crate) struct ControlArgs {
    /// Where the mesh's objects come from: a manifest directory, or a Kubernetes cluster
    /// (watched; the caches sync before anything is served).
    #[arg(long, env = "WEFT_SOURCE", value_enum, default_value_t = SourceKind::Manifests)]
    source: SourceKind,
    /// Directory of YAML manifests (Services, EndpointSlices, Pods, Namespaces, SMI); watched
    /// for changes. Required with `--source manifests`.
    #[arg(long, env = "WEFT_MANIFESTS")]
    manifests: Option<PathBuf>,
    /// Address of the xDS gRPC server (ADS and per-type services).
    #[arg(long, env = "WEFT_XDS_ADDR", default_value = "127.0.0.1:8086")]
    xds_addr: SocketAddr,
    /// Address of the admin API (/ready, /live, /metrics, /debug/*, /apply).
    #[arg(long, env = "WEFT_ADMIN_ADDR", default_value = "127.0.0.1:8085")]
    admin_addr: SocketAddr,
    /// How often the manifest directory is checked for changes, in milliseconds.
    #[arg(long, env = "WEFT_RELOAD_INTERVAL_MS", default_value_t = 250)]
    reload_interval_ms: u64,
    #[command(flatten)]
    tracing: TraceArgs,
    #[command(flatten)]
    identity: IdentityArgs,
    #[command(flatten)]
    kubernetes: KubernetesArgs,
}

/// Distributed tracing (docs/tracing.md).
#[derive(Debug, clap::Args)]
#[command(next_help_heading = "Tracing")]
struct TraceArgs {
    /// OTLP/gRPC collector (plaintext), HOST:PORT, resolved once at start. Every proxy's HTTP
    /// hops (weft-proxy and Envoy, configured over xDS) and the control plane's pushes export
    /// spans there. Unset: no tracing anywhere.
    #[arg(long, env = "WEFT_TRACE_COLLECTOR", value_name = "HOST:PORT")]
    trace_collector: Option<String>,
    /// Percentage (0 to 100) of new traces sampled; a request whose caller decided (the
    /// sampled flag of `traceparent` or B3) keeps that decision.
    #[arg(long, env = "WEFT_TRACE_SAMPLING", value_name = "PERCENT", default_value_t = Sampling::default())]
    trace_sampling: Sampling,
}

impl TraceArgs {
    /// The tracing options; resolves the collector's host name.
    async fn into_options(self) -> anyhow::Result<Option<TraceOptions>> {
        let Some(collector) = self.trace_collector else { return Ok(None) };
        let collector = tokio::net::lookup_host(collector.as_str())
            .await
            .with_context(|| format!("--trace-collector {collector:?}: expected HOST:PORT"))?
            .next()
            .with_context(|| format!("--trace-collector {collector:?}: the host has no address"))?;
        Ok(Some(TraceOptions { collector, sampling: self.trace_sampling }))
    }
}

/// The flags of `--source kubernetes`.
#[derive(Debug, clap::Args)]
#[command(next_help_heading = "Kubernetes (--source kubernetes)")]
struct KubernetesArgs {
    /// Which cluster.
    #[command(flatten)]
    cluster: ClusterArgs,
    /// The control plane's namespace: its CA Secret and status Lease live there
    /// [default: $POD_NAMESPACE, else weft-system].
    #[arg(long, env = "WEFT_POD_NAMESPACE")]
    pod_namespace: Option<String>,
    /// This replica's name, its identity in the status Lease; unique among replicas
    /// [default: $POD_NAME, else the host name].
    #[arg(long, env = "WEFT_POD_NAME")]
    pod_name: Option<String>,
    /// The namespace of the status Lease [default: the control plane's namespace].
    #[arg(long, env = "WEFT_LEASE_NAMESPACE")]
    lease_namespace: Option<String>,
    /// The Lease whose holder, one replica, writes status and Events.
    #[arg(long, env = "WEFT_LEASE_NAME", default_value = STATUS_LEASE)]
    lease_name: String,
    /// Write no status conditions or Events and campaign for no Lease (for a control plane
    /// run beside the installed one).
    #[arg(long, env = "WEFT_NO_STATUS_WRITER", value_parser = BoolishValueParser::new())]
    no_status_writer: bool,
    /// The Secret (in the control plane's namespace) holding the mesh CA; the first replica
    /// to start creates it.
    #[arg(long, env = "WEFT_CA_SECRET", default_value = CA_SECRET)]
    ca_secret: String,
    /// Address of the sidecar injector (HTTPS, `POST /inject`), default 0.0.0.0:8443.
    #[arg(long, env = "WEFT_WEBHOOK_ADDR")]
    webhook_addr: Option<SocketAddr>,
    /// Run no sidecar injector.
    #[arg(long, env = "WEFT_NO_WEBHOOK", value_parser = BoolishValueParser::new())]
    no_webhook: bool,
    /// The MutatingWebhookConfiguration whose caBundle the control plane keeps.
    #[arg(long, env = "WEFT_WEBHOOK_CONFIGURATION", default_value = WEBHOOK_CONFIGURATION)]
    webhook_configuration: String,
    /// Publish no `weft-trust-bundle` ConfigMap into the namespaces of injected pods.
    #[arg(long, env = "WEFT_NO_TRUST_BUNDLES", value_parser = BoolishValueParser::new())]
    no_trust_bundles: bool,
    /// How injected proxies are set up.
    #[command(flatten)]
    inject: InjectArgs,
}

/// The first of these environment variables that is set and not empty.
fn env_var(names: &[&str]) -> Option<String> {
    names.iter().find_map(|n| std::env::var(n).ok().filter(|v| !v.is_empty()))
}

/// This machine's host name (a pod's name, in Kubernetes).
fn host_name() -> Option<String> {
    env_var(&["HOSTNAME"]).or_else(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    })
}

impl ControlArgs {
    /// The control plane's configuration; with Kubernetes, this makes the client.
    pub(crate) async fn into_config(self) -> anyhow::Result<ControlConfig> {
        let kubernetes = self.source == SourceKind::Kubernetes;
        let (mut mesh, identity) = self.identity.into_config(kubernetes)?;
        mesh.tracing = self.tracing.into_options().await?;
        let source = match self.source {
            SourceKind::Manifests => SourceConfig::Manifests(
                self.manifests.context("--manifests is required with --source manifests")?,
            ),
            SourceKind::Kubernetes => {
                SourceConfig::Kubernetes(Box::new(self.kubernetes.into_source().await?))
            }
        };
        Ok(ControlConfig {
            source,
            xds_addr: self.xds_addr,
            admin_addr: self.admin_addr,
            reload_interval: Duration::from_millis(self.reload_interval_ms),
            mesh,
            identity,
        })
    }
}

impl KubernetesArgs {
    async fn into_source(self) -> anyhow::Result<KubernetesSource> {
        let client = self.cluster.client().await?;
        let namespace =
            self.pod_namespace.or_else(|| env_var(&["POD_NAMESPACE"])).unwrap_or(NAMESPACE.to_string());
        let lease = if self.no_status_writer {
            None
        } else {
            let identity = self.pod_name.or_else(|| env_var(&["POD_NAME"])).or_else(host_name).context(
                "no --pod-name given and neither POD_NAME nor the host name is known: the status Lease \
                 needs this replica's name",
            )?;
            let lease_namespace = self.lease_namespace.unwrap_or_else(|| namespace.clone());
            Some(LeaseConfig::new(lease_namespace, self.lease_name, identity))
        };
        let webhook = (!self.no_webhook).then(|| WebhookConfig {
            addr: self.webhook_addr.unwrap_or(SocketAddr::from(([0, 0, 0, 0], WEBHOOK_PORT))),
            inject: self.inject,
            configuration: Some(self.webhook_configuration).filter(|n| !n.is_empty()),
        });
        Ok(KubernetesSource {
            client,
            runtime: KubernetesConfig { source: KubeSourceOptions::default(), lease },
            namespace,
            ca_secret: self.ca_secret,
            webhook,
            trust_bundles: !self.no_trust_bundles,
        })
    }
}
