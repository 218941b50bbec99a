//! `weft-proxy`: weft's sidecar. It takes its listeners, routes, clusters and
//! endpoints from the control plane over ADS and serves them, with an admin
//! server for readiness, metrics, a config dump and its identity.
//!
//! Start-up order (mTLS, the default): certify with weft's identity service
//! over TLS (the control plane's SPIFFE ID checked, the workload's token as
//! proof, no client certificate), then ADS over TLS presenting the workload
//! certificate (renewed at 70 % of its life, the newest one used at every
//! reconnection), then serve. `--insecure-plaintext` skips identity: ADS in
//! plaintext, no certificate.

#![forbid(unsafe_code)]

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use clap::builder::BoolishValueParser;
use tokio::sync::watch;
use tracing::{error, info, warn};
use weft_proxy::admin::{self, AdminState};
use weft_proxy::metrics::Metrics;
use weft_proxy::tap::{self, Tap};
use weft_proxy::tls::channel::read_pem_certificates;
use weft_proxy::tls::{
    Certifier, ControlPlaneTls, Credentials, SpiffeId, TokenSource, control_endpoint, control_identity,
};
use weft_proxy::xds::{ClientConfig, Mode, NodeInfo, XdsClient};

/// The admin port on the pod IP (Linkerd's).
const ADMIN_PORT: u16 = 4191;

/// How long listeners get to drain on shutdown.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// weft-proxy: weft's sidecar proxy, configured by the control plane over xDS.
///
/// `weft-proxy init` (see `weft-proxy init --help`) sets up a Kubernetes pod's traffic redirect.
#[derive(Debug, Parser)]
#[command(name = "weft-proxy", version, about)]
struct Args {
    /// The control plane's xDS address (host:port).
    #[arg(long, env = "WEFT_XDS_ADDR", default_value = "127.0.0.1:8086")]
    xds_addr: String,
    /// This proxy's node id, unique in the mesh [default: <pod-ip>.<namespace>].
    #[arg(long, env = "WEFT_NODE_ID")]
    node_id: Option<String>,
    /// The workload's namespace.
    #[arg(long, env = "WEFT_NAMESPACE", default_value = "default")]
    namespace: String,
    /// The workload's ServiceAccount: its identity in the mesh.
    #[arg(long, env = "WEFT_SERVICE_ACCOUNT", default_value = "default")]
    service_account: String,
    /// The workload's pod IP (locally, its own loopback address); the listeners bind there.
    #[arg(long, env = "WEFT_POD_IP")]
    pod_ip: IpAddr,
    /// Port of the inbound listener (traffic to the workload).
    #[arg(long, env = "WEFT_INBOUND_PORT", default_value_t = 4143)]
    inbound_port: u16,
    /// Port of the outbound listener (traffic from the workload).
    #[arg(long, env = "WEFT_OUTBOUND_PORT", default_value_t = 4140)]
    outbound_port: u16,
    /// Address of the admin server (/ready, /live, /metrics, /config_dump) [default: <pod-ip>:4191].
    #[arg(long, env = "WEFT_ADMIN_ADDR")]
    admin_addr: Option<SocketAddr>,
    /// Address of the tap endpoint (weft's tap gRPC API over mTLS; only the control plane's
    /// identity may connect) [default: <pod-ip>:4190]. Not served with --insecure-plaintext.
    #[arg(long, env = "WEFT_TAP_ADDR")]
    tap_addr: Option<SocketAddr>,
    /// The app's port, sent to the control plane as node metadata APP_PORT.
    #[arg(long, env = "WEFT_APP_PORT")]
    app_port: Option<u16>,
    /// Traffic reaches the proxy by redirection (iptables, as in Kubernetes), not by
    /// apps dialling its ports: opaque TCP is then matched by original destination.
    #[arg(long, env = "WEFT_TRANSPARENT", value_parser = BoolishValueParser::new())]
    transparent: bool,
    /// Use State-of-the-World ADS instead of incremental (Delta) ADS.
    #[arg(long, env = "WEFT_SOTW", value_parser = BoolishValueParser::new())]
    sotw: bool,
    /// PEM file of the trust anchors (the mesh CA root) that the control plane's certificate
    /// must chain to; also the trust bundle until the first certificate brings the mesh's own.
    #[arg(long, env = "WEFT_CA_FILE", required_unless_present = "insecure_plaintext")]
    ca_file: Option<PathBuf>,
    /// File holding the workload's token, its proof of identity (re-read at every renewal;
    /// `weft token` prints one, Kubernetes projects a ServiceAccount token).
    #[arg(long, env = "WEFT_TOKEN_FILE", required_unless_present = "insecure_plaintext")]
    token_file: Option<PathBuf>,
    /// The mesh's trust domain: the workload's identity is spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>.
    #[arg(long, env = "WEFT_TRUST_DOMAIN", default_value = "cluster.local")]
    trust_domain: String,
    /// The SPIFFE ID the control plane's certificate must carry
    /// [default: spiffe://<trust-domain>/ns/weft-system/sa/weft-control].
    #[arg(long, env = "WEFT_CONTROL_IDENTITY")]
    control_identity: Option<String>,
    /// Talk to the control plane without TLS and hold no certificate (no mTLS; TLS resources
    /// from xDS are refused). For debugging only; the control plane must run the same way.
    #[arg(long, env = "WEFT_INSECURE_PLAINTEXT", value_parser = BoolishValueParser::new())]
    insecure_plaintext: bool,
    /// Worker threads serving traffic (and everything else). A sidecar shares its pod's CPU
    /// with the app, so the default is one, like Envoy's `--concurrency 1` in a mesh; raise it
    /// for a busy workload with CPU to spare.
    #[arg(long, env = "WEFT_WORKERS", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256))]
    workers: u16,
    /// Log filter (tracing `EnvFilter` syntax), e.g. `info` or `weft_proxy::xds=debug`.
    #[arg(long, env = "WEFT_LOG", default_value = "info")]
    log: String,
    /// Log as JSON lines instead of text.
    #[arg(long, env = "WEFT_LOG_JSON", value_parser = BoolishValueParser::new())]
    log_json: bool,
}

impl Args {
    fn node(&self) -> NodeInfo {
        NodeInfo {
            id: self.node_id.clone().unwrap_or_else(|| format!("{}.{}", self.pod_ip, self.namespace)),
            namespace: self.namespace.clone(),
            service_account: self.service_account.clone(),
            pod_ip: self.pod_ip,
            inbound_port: self.inbound_port,
            outbound_port: self.outbound_port,
            app_port: self.app_port,
            transparent: self.transparent,
        }
    }

    /// How to get and use a workload certificate; `None` with `--insecure-plaintext`.
    fn identity(&self) -> anyhow::Result<Option<IdentitySetup>> {
        if self.insecure_plaintext {
            return Ok(None);
        }
        let (Some(ca_file), Some(token_file)) = (&self.ca_file, &self.token_file) else {
            anyhow::bail!("--ca-file and --token-file are required unless --insecure-plaintext");
        };
        let workload = SpiffeId::new(&self.trust_domain, &self.namespace, &self.service_account)
            .context("the workload identity (--trust-domain, --namespace, --service-account)")?;
        let control = match &self.control_identity {
            Some(id) => id.parse().with_context(|| format!("--control-identity {id:?}"))?,
            None => control_identity(&self.trust_domain).context("--trust-domain")?,
        };
        let anchors = read_pem_certificates(ca_file).context("--ca-file")?;
        anyhow::ensure!(
            token_file.is_file(),
            "--token-file {}: no such file (`weft token` prints a workload's token)",
            token_file.display()
        );
        Ok(Some(IdentitySetup {
            workload,
            token: TokenSource::File(token_file.clone()),
            tls: ControlPlaneTls::new(anchors, control),
        }))
    }
}

/// What the proxy needs to hold a workload certificate.
struct IdentitySetup {
    workload: SpiffeId,
    token: TokenSource,
    tls: ControlPlaneTls,
}

/// `weft-proxy init`: the traffic-redirect step of a Kubernetes pod (an init container with
/// NET_ADMIN and NET_RAW). It installs iptables rules that send the pod's inbound TCP to the
/// proxy's inbound port and its outbound TCP to the outbound port, then exits.
#[derive(Debug, Parser)]
#[command(name = "weft-proxy init", bin_name = "weft-proxy init", version)]
struct InitCommand {
    #[command(flatten)]
    init: weft_proxy::init::InitArgs,
    /// Log filter (tracing `EnvFilter` syntax).
    #[arg(long, env = "WEFT_LOG", default_value = "info")]
    log: String,
}

/// Runs `weft-proxy init` (its flags follow `init`).
fn init_main() -> ExitCode {
    let cmd = InitCommand::parse_from(std::env::args_os().skip(1));
    if let Err(e) = weft_proxy::init_logs(&cmd.log, false) {
        eprintln!("error: {e:#}");
        return ExitCode::FAILURE;
    }
    match weft_proxy::init::run(&cmd.init) {
        Ok(weft_proxy::init::Outcome::DryRun(rules)) => {
            print!("{rules}");
            ExitCode::SUCCESS
        }
        Ok(weft_proxy::init::Outcome::Applied(table)) => {
            info!("redirect rules in place; the nat table now reads:");
            print!("{table}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            error!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    // `weft-proxy init` has flags of its own; everything else is the proxy.
    if std::env::args_os().nth(1).is_some_and(|a| a == "init") {
        return init_main();
    }
    let args = Args::parse();
    if let Err(e) = weft_proxy::init_logs(&args.log, args.log_json) {
        eprintln!("error: {e:#}");
        return ExitCode::FAILURE;
    }
    let result = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(usize::from(args.workers))
        .enable_all()
        .build()
        .context("starting the runtime")
        .and_then(|rt| rt.block_on(run(args)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let node = args.node();
    let identity = args.identity()?;
    let admin_addr = args.admin_addr.unwrap_or_else(|| SocketAddr::new(args.pod_ip, ADMIN_PORT));
    let admin_listener =
        admin::bind(admin_addr).await.with_context(|| format!("binding the admin server to {admin_addr}"))?;

    let metrics = Arc::new(Metrics::new());
    let (creds_tx, creds_rx) = watch::channel(None::<Arc<Credentials>>);
    let mut xds = ClientConfig::new(args.xds_addr.clone(), node.clone());
    xds.mode = if args.sotw { Mode::Sotw } else { Mode::Delta };
    // xDS presents the newest certificate at every (re)connection.
    xds.control_tls = identity.as_ref().map(|s| s.tls.clone().with_client_credentials(creds_rx.clone()));
    let (client, handle) = XdsClient::new(xds, metrics.clone());
    let (shutdown_tx, shutdown) = watch::channel(false);

    // The admin server answers from the start: /live at once, /ready once
    // a certificate is held and the first config applied.
    let state = AdminState { status: handle.status.clone(), metrics: metrics.clone(), node: node.clone() };
    let admin_identity = identity.as_ref().map(|_| creds_rx.clone());
    let mut admin_task =
        tokio::spawn(admin::serve_with_identity(admin_listener, state, admin_identity, shutdown.clone()));
    let mut stop = Box::pin(stop_signal());

    let tap = Tap::new();
    let mut tap_task = None;
    if let Some(setup) = &identity {
        let tap_addr = args.tap_addr.unwrap_or_else(|| SocketAddr::new(args.pod_ip, tap::server::TAP_PORT));
        // Tap is for observing: a proxy whose tap port is taken serves traffic all the same.
        match tap::server::bind(tap_addr).await {
            Ok(listener) => {
                info!(addr = %tap_addr, allowed = %setup.tls.expected(), "tap endpoint listening");
                tap_task = Some(tokio::spawn(tap::server::serve(
                    listener,
                    tap.clone(),
                    creds_rx.clone(),
                    setup.tls.expected().clone(),
                    shutdown.clone(),
                )));
            }
            Err(e) => warn!(addr = %tap_addr, error = %e, "cannot bind the tap endpoint; tap is off"),
        }
    }

    let mut renewals = None;
    match identity {
        None => {
            warn!(
                "--insecure-plaintext: xDS without TLS and no workload certificate; traffic is not mutually authenticated"
            );
        }
        Some(setup) => {
            let endpoint = control_endpoint(&args.xds_addr).context("--xds-addr")?;
            info!(identity = %setup.workload, control_plane = args.xds_addr, "certifying");
            let channel = setup.tls.connect_lazy(&endpoint);
            let mut certifier = Certifier::new(channel, setup.workload, setup.token);
            let first = tokio::select! {
                r = certifier.certify_with_retry() => r.context("certification refused")?,
                r = &mut stop => return r,
                r = &mut admin_task => return admin_stopped(r),
            };
            // Metrics follow every new certificate.
            let mut watched = creds_rx.clone();
            let certificate_metrics = metrics.clone();
            tokio::spawn(async move {
                while watched.changed().await.is_ok() {
                    let Some(current) = watched.borrow_and_update().clone() else { continue };
                    certificate_metrics.set_identity_expiry(current.not_after());
                    certificate_metrics.identity_refreshed();
                }
            });
            renewals = Some(tokio::spawn(certifier.maintain(first, creds_tx)));
        }
    }

    let xds_task = tokio::spawn(client.run(shutdown.clone()));
    let proxy_task = tokio::spawn(weft_proxy::proxy::run_with_tap(
        handle.config.clone(),
        creds_rx.clone(),
        metrics,
        tap,
        shutdown,
    ));
    info!(
        node = node.id,
        xds = args.xds_addr,
        mode = if args.sotw { "sotw" } else { "delta" },
        admin = %admin_addr,
        mtls = !args.insecure_plaintext,
        "weft-proxy started"
    );

    let result = tokio::select! {
        r = &mut stop => r,
        r = &mut admin_task => admin_stopped(r),
    };
    info!("shutting down: draining listeners");
    let _ = shutdown_tx.send(true);
    if tokio::time::timeout(DRAIN_TIMEOUT, proxy_task).await.is_err() {
        info!(timeout = ?DRAIN_TIMEOUT, "connections still open after the drain timeout; closing them");
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), xds_task).await;
    if let Some(renewals) = renewals {
        renewals.abort();
    }
    if let Some(tap_task) = tap_task {
        tap_task.abort();
    }
    if !admin_task.is_finished() {
        let _ = tokio::time::timeout(Duration::from_secs(1), admin_task).await;
    }
    result
}

/// Why the admin server's end is an error.
fn admin_stopped(r: Result<std::io::Result<()>, tokio::task::JoinError>) -> anyhow::Result<()> {
    match r {
        Ok(Ok(())) => Err(anyhow::anyhow!("the admin server stopped")),
        Ok(Err(e)) => Err(anyhow::Error::new(e).context("admin server")),
        Err(e) => Err(anyhow::Error::new(e).context("admin server task")),
    }
}

/// Resolves on Ctrl-C or SIGTERM.
async fn stop_signal() -> anyhow::Result<()> {
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("waiting for Ctrl-C"),
        r = terminate() => r,
    }
}

/// Resolves on SIGTERM (how Kubernetes and `weft up` stop a proxy).
#[cfg(unix)]
async fn terminate() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("listening for SIGTERM")?;
    term.recv().await;
    Ok(())
}

#[cfg(not(unix))]
async fn terminate() -> anyhow::Result<()> {
    std::future::pending().await
}
