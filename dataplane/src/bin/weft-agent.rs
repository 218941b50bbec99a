//! `weft-agent`: gives a stock Envoy its workload certificate. It makes the
//! key, has weft's identity service certify it (proving the workload's
//! identity with its token), renews it at 70 % of its life, and serves it to
//! Envoy over SDS on a Unix socket (secrets `default` and `ROOTCA`).

#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use tokio::sync::watch;
use tracing::error;
use weft_proxy::sds::{self, AgentConfig};
use weft_proxy::tls::channel::read_pem_certificates;
use weft_proxy::tls::{SpiffeId, TokenSource, control_identity};

/// weft-agent: serves a workload's certificate to the stock Envoy beside it over SDS.
///
/// Point Envoy at it with `weft envoy-bootstrap --sds-socket PATH`.
#[derive(Debug, Parser)]
#[command(name = "weft-agent", version, about)]
struct Args {
    /// The control plane's address (its identity service shares the xDS port), host:port.
    #[arg(long, env = "WEFT_XDS_ADDR", default_value = "127.0.0.1:8086")]
    xds_addr: String,
    /// The workload's namespace.
    #[arg(long, env = "WEFT_NAMESPACE", default_value = "default")]
    namespace: String,
    /// The workload's ServiceAccount: its identity in the mesh.
    #[arg(long, env = "WEFT_SERVICE_ACCOUNT", default_value = "default")]
    service_account: String,
    /// The mesh's trust domain.
    #[arg(long, env = "WEFT_TRUST_DOMAIN", default_value = "cluster.local")]
    trust_domain: String,
    /// PEM file of the trust anchors (the mesh CA root) that the control plane's certificate must chain to.
    #[arg(long, env = "WEFT_CA_FILE")]
    ca_file: PathBuf,
    /// File holding the workload's token (re-read at every renewal; `weft token` prints one).
    #[arg(long, env = "WEFT_TOKEN_FILE")]
    token_file: PathBuf,
    /// The SPIFFE ID the control plane's certificate must carry
    /// [default: spiffe://<trust-domain>/ns/weft-system/sa/weft-control].
    #[arg(long, env = "WEFT_CONTROL_IDENTITY")]
    control_identity: Option<String>,
    /// The Unix socket to serve SDS on (mode 0600); its directory is created with mode 0700,
    /// and must belong to the agent's user (Envoy runs as the same user).
    #[arg(long, env = "WEFT_SDS_SOCKET")]
    sds_socket: PathBuf,
    /// Address of an admin server (/ready, /live, /metrics, /identity); none if unset.
    #[arg(long, env = "WEFT_ADMIN_ADDR")]
    admin_addr: Option<SocketAddr>,
    /// Log filter (tracing `EnvFilter` syntax), e.g. `info` or `weft_proxy::sds=debug`.
    #[arg(long, env = "WEFT_LOG", default_value = "info")]
    log: String,
    /// Log as JSON lines instead of text.
    #[arg(long, env = "WEFT_LOG_JSON", value_parser = clap::builder::BoolishValueParser::new())]
    log_json: bool,
}

impl Args {
    fn config(&self) -> anyhow::Result<AgentConfig> {
        let identity = SpiffeId::new(&self.trust_domain, &self.namespace, &self.service_account)
            .context("the workload identity (--trust-domain, --namespace, --service-account)")?;
        let control_identity = match &self.control_identity {
            Some(id) => id.parse().with_context(|| format!("--control-identity {id:?}"))?,
            None => control_identity(&self.trust_domain).context("--trust-domain")?,
        };
        let ca_anchors = read_pem_certificates(&self.ca_file).context("--ca-file")?;
        anyhow::ensure!(
            self.token_file.is_file(),
            "--token-file {}: no such file (`weft token` prints a workload's token)",
            self.token_file.display()
        );
        Ok(AgentConfig {
            xds_addr: self.xds_addr.clone(),
            identity,
            control_identity,
            ca_anchors,
            token: TokenSource::File(self.token_file.clone()),
            sds_socket: self.sds_socket.clone(),
            admin_addr: self.admin_addr,
        })
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Err(e) = weft_proxy::init_logs(&args.log, args.log_json) {
        eprintln!("error: {e:#}");
        return ExitCode::FAILURE;
    }
    let result = args.config().and_then(|config| {
        let rt = tokio::runtime::Runtime::new().context("starting the runtime")?;
        rt.block_on(run(config))
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: AgentConfig) -> anyhow::Result<()> {
    let (stop_tx, stop) = watch::channel(false);
    let mut agent = tokio::spawn(sds::run(config, stop, None));
    tokio::select! {
        r = &mut agent => return Ok(r.context("the agent task")??),
        r = tokio::signal::ctrl_c() => r.context("waiting for Ctrl-C")?,
        r = terminate() => r?,
    }
    let _ = stop_tx.send(true);
    Ok(agent.await.context("the agent task")??)
}

/// Resolves on SIGTERM (how Kubernetes stops a container).
async fn terminate() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("listening for SIGTERM")?;
    term.recv().await;
    Ok(())
}
