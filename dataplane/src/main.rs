//! `weft-proxy`: weft's sidecar. It takes its listeners, routes, clusters and
//! endpoints from the control plane over ADS and serves them, with an admin
//! server for readiness, metrics and a config dump.

#![forbid(unsafe_code)]

use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use clap::builder::BoolishValueParser;
use tokio::sync::watch;
use tracing::{error, info};
use weft_proxy::admin::{self, AdminState};
use weft_proxy::metrics::Metrics;
use weft_proxy::xds::{ClientConfig, Mode, NodeInfo, XdsClient};

/// The admin port on the pod IP (Linkerd's).
const ADMIN_PORT: u16 = 4191;

/// How long listeners get to drain on shutdown.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// weft-proxy: weft's sidecar proxy, configured by the control plane over xDS.
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
}

fn init_logs(filter: &str, json: bool) -> anyhow::Result<()> {
    let filter =
        tracing_subscriber::EnvFilter::try_new(filter).with_context(|| format!("--log {filter:?}"))?;
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Err(e) = init_logs(&args.log, args.log_json) {
        eprintln!("error: {e:#}");
        return ExitCode::FAILURE;
    }
    let result =
        tokio::runtime::Runtime::new().context("starting the runtime").and_then(|rt| rt.block_on(run(args)));
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
    let admin_addr = args.admin_addr.unwrap_or_else(|| SocketAddr::new(args.pod_ip, ADMIN_PORT));
    let admin_listener =
        admin::bind(admin_addr).await.with_context(|| format!("binding the admin server to {admin_addr}"))?;

    let metrics = Arc::new(Metrics::new());
    let mut xds = ClientConfig::new(args.xds_addr.clone(), node.clone());
    xds.mode = if args.sotw { Mode::Sotw } else { Mode::Delta };
    let (client, handle) = XdsClient::new(xds, metrics.clone());
    let (shutdown_tx, shutdown) = watch::channel(false);

    let xds_task = tokio::spawn(client.run(shutdown.clone()));
    let state = AdminState { status: handle.status.clone(), metrics: metrics.clone(), node: node.clone() };
    let mut admin_task = tokio::spawn(admin::serve(admin_listener, state, shutdown.clone()));
    let proxy_task = tokio::spawn(weft_proxy::proxy::run(handle.config.clone(), metrics, shutdown));
    info!(
        node = node.id,
        xds = args.xds_addr,
        mode = if args.sotw { "sotw" } else { "delta" },
        admin = %admin_addr,
        "weft-proxy started"
    );

    let result = tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("waiting for Ctrl-C"),
        r = terminate() => r,
        r = &mut admin_task => match r {
            Ok(Ok(())) => Err(anyhow::anyhow!("the admin server stopped")),
            Ok(Err(e)) => Err(anyhow::Error::new(e).context("admin server")),
            Err(e) => Err(anyhow::Error::new(e).context("admin server task")),
        },
    };
    info!("shutting down: draining listeners");
    let _ = shutdown_tx.send(true);
    if tokio::time::timeout(DRAIN_TIMEOUT, proxy_task).await.is_err() {
        info!(timeout = ?DRAIN_TIMEOUT, "connections still open after the drain timeout; closing them");
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), xds_task).await;
    if !admin_task.is_finished() {
        let _ = tokio::time::timeout(Duration::from_secs(1), admin_task).await;
    }
    result
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
