//! The command lines of `weft up` and `weft demo-app`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::demo::{DemoApp, DemoCall, DemoConfig};
use super::plan::ProxyMode;
use super::{UpConfig, UpError, UpSecurity, UpTracing};
use crate::identity::parse_duration;
use crate::translate::{AuthzMode, Sampling};

/// Run a manifest directory's mesh locally: control plane, demo apps, a proxy per
/// meshed pod, steady traffic through the entry workload and a live view.
#[derive(Debug, Clone, clap::Args)]
pub struct UpArgs {
    /// Directory of manifests; every Pod with `status.podIP` runs, on that (loopback) address.
    #[arg(env = "WEFT_MANIFESTS")]
    pub dir: PathBuf,
    /// The proxy next to each meshed pod: weft-proxy, stock Envoy, or the two in turn.
    #[arg(long, env = "WEFT_UP_PROXY", value_enum, default_value = "weft")]
    pub proxy: ProxyMode,
    /// Requests per second sent to the entry workload (open loop).
    #[arg(long, env = "WEFT_UP_RATE", default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub rate: u32,
    /// Send traffic for this many seconds, print a final summary and exit (for tests and CI);
    /// without it, run until Ctrl-C.
    #[arg(long, env = "WEFT_UP_DURATION")]
    pub duration: Option<u64>,
    /// The workload the traffic enters by: a pod name, or else the first pod labelled `app: <ENTRY>`.
    #[arg(long, env = "WEFT_UP_ENTRY", default_value = "frontend")]
    pub entry: String,
    /// The control plane's xDS address (port 0 picks a free one).
    #[arg(long, env = "WEFT_XDS_ADDR", default_value = "127.0.0.1:8086")]
    pub xds_addr: SocketAddr,
    /// The control plane's admin address, for `weft apply` (port 0 picks a free one).
    #[arg(long, env = "WEFT_ADMIN_ADDR", default_value = "127.0.0.1:8085")]
    pub admin_addr: SocketAddr,
    /// Stock Envoy [default: $ENVOY_BIN, else target/envoy-1.40.0/envoy/_bin/envoy].
    #[arg(long, env = "WEFT_ENVOY_BIN")]
    pub envoy_bin: Option<PathBuf>,
    /// weft-proxy [default: weft-proxy next to this weft binary].
    #[arg(long, env = "WEFT_PROXY_BIN")]
    pub proxy_bin: Option<PathBuf>,
    /// weft-agent, the SDS agent started beside each Envoy [default: weft-agent next to this weft binary].
    #[arg(long, env = "WEFT_AGENT_BIN")]
    pub agent_bin: Option<PathBuf>,
    /// Lifetime of workload certificates (renewed at 70 %), e.g. 60s, 10m, 24h.
    #[arg(long, env = "WEFT_CERT_LIFETIME", default_value = "24h", value_parser = parse_lifetime)]
    pub cert_lifetime: Duration,
    /// How TrafficTargets are enforced: `permissive` (a destination no TrafficTarget names
    /// accepts any meshed client) or `strict` (deny unless a TrafficTarget allows).
    #[arg(long, env = "WEFT_AUTHZ", default_value = "permissive", value_parser = parse_authz)]
    pub authz: AuthzMode,
    /// No mTLS, no CA: xDS and every hop in plaintext (debugging only).
    #[arg(long, env = "WEFT_INSECURE_PLAINTEXT", value_parser = clap::builder::BoolishValueParser::new())]
    pub insecure_plaintext: bool,
    /// Seconds the proxies may take to become ready.
    #[arg(long, env = "WEFT_UP_READY_TIMEOUT", default_value_t = 60)]
    pub ready_timeout: u64,
    /// OTLP/gRPC collector (plaintext), HOST:PORT, resolved once at start: every proxy of the
    /// run (weft-proxy and Envoy, configured over xDS) and the control plane export spans
    /// there, as with `weft control --trace-collector`. Unset: no tracing.
    #[arg(long, env = "WEFT_TRACE_COLLECTOR", value_name = "HOST:PORT", help_heading = "Tracing")]
    pub trace_collector: Option<String>,
    /// Percentage (0 to 100) of new traces sampled; a request whose caller decided (the
    /// sampled flag of `traceparent` or B3) keeps that decision.
    #[arg(
        long,
        env = "WEFT_TRACE_SAMPLING",
        value_name = "PERCENT",
        default_value_t = Sampling::default(),
        help_heading = "Tracing"
    )]
    pub trace_sampling: Sampling,
}

impl UpArgs {
    /// The configuration, with logs and bootstraps in `run_dir`.
    pub fn into_config(self, run_dir: PathBuf) -> UpConfig {
        UpConfig {
            manifests: self.dir,
            proxy: self.proxy,
            rate: self.rate,
            duration: self.duration.map(Duration::from_secs),
            entry: self.entry,
            xds_addr: self.xds_addr,
            admin_addr: self.admin_addr,
            envoy_bin: self.envoy_bin,
            proxy_bin: self.proxy_bin,
            agent_bin: self.agent_bin,
            ready_timeout: Duration::from_secs(self.ready_timeout),
            tracing: self
                .trace_collector
                .map(|collector| UpTracing { collector, sampling: self.trace_sampling }),
            security: (!self.insecure_plaintext).then(|| UpSecurity {
                ca_dir: run_dir.join("ca"),
                cert_lifetime: self.cert_lifetime,
                authz: self.authz,
            }),
            run_dir,
        }
    }
}

fn parse_lifetime(s: &str) -> Result<Duration, String> {
    parse_duration(s).map_err(|e| e.to_string())
}

fn parse_authz(s: &str) -> Result<AuthzMode, String> {
    s.parse()
}

/// Sends `weft up`'s own logs (control plane and all) to `path`, so they stay out of the live view.
pub fn init_logs(filter: &str, json: bool, path: &Path) -> Result<(), UpError> {
    let file = std::fs::File::create(path).map_err(|e| UpError::io(path, e))?;
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .map_err(|e| UpError::Config(format!("--log {filter:?}: {e}")))?;
    let builder =
        tracing_subscriber::fmt().with_env_filter(filter).with_ansi(false).with_writer(Arc::new(file));
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
    Ok(())
}

/// Run the demo app: an HTTP server that answers with its name, after calling
/// another service through a proxy if asked to.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoAppArgs {
    /// The name it answers with (its workload's).
    #[arg(long, env = "WEFT_DEMO_NAME")]
    pub name: String,
    /// Where it listens, e.g. 127.0.10.1:8080.
    #[arg(long, env = "WEFT_DEMO_LISTEN")]
    pub listen: SocketAddr,
    /// A service to call first, as `host:port` (sent as the `Host` header), e.g. payment-svc.payments:8080.
    #[arg(long, env = "WEFT_DEMO_CALLS", requires = "via")]
    pub calls: Option<String>,
    /// Where that call goes: the workload's proxy's outbound address, e.g. 127.0.10.1:4140.
    #[arg(long, env = "WEFT_DEMO_VIA", requires = "calls")]
    pub via: Option<SocketAddr>,
}

/// `weft demo-app`: serves until Ctrl-C or SIGTERM.
pub async fn run_demo_app(args: DemoAppArgs) -> Result<(), UpError> {
    let calls = args.calls.zip(args.via).map(|(authority, via)| DemoCall { authority, via });
    let app = DemoApp::start(DemoConfig { name: args.name.clone(), listen: args.listen, calls }).await?;
    tracing::info!(name = %args.name, addr = %app.addr(), "demo app serving");
    let mut stop = super::run::Stop::install()?;
    stop.recv().await;
    Ok(())
}
