//! The proxy of a workload, whichever it is: weft-proxy (the `weft-proxy` binary) or
//! stock Envoy. Tests are written once against [`Proxy`] and run with each [`ProxyKind`].
//!
//! Both take the same identity ([`ProxyConfig`]) and are ready when their first full
//! config is applied: Envoy says `LIVE` in `/server_info`, weft-proxy answers `200` on
//! `/ready`. weft-proxy is expected to serve, on its admin address:
//! `/ready`, `/live`, `/metrics` (Prometheus text) and `/config_dump` (Envoy-like JSON in
//! which every listener is an object with `"@type":` [`type_url::LISTENER`] and its
//! `"name"`, as in Envoy's own config dump).

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use weft_control::bootstrap::{AdsMode, BootstrapConfig, BootstrapTls, XdsTransport, envoy_bootstrap_with};
use weft_xds_protos::type_url;

use crate::Envoy;
use crate::agent::Agent;
use crate::child::LoggedChild;
use crate::identity::MeshIdentity;

/// The admin port weft-proxy gets on its pod IP (Linkerd's, as in the design).
pub const WEFT_PROXY_ADMIN_PORT: u16 = 4191;
pub use weft_control::translate::{INBOUND_PORT, OUTBOUND_PORT};

/// Which proxy runs beside a workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProxyKind {
    /// Stock Envoy, from a bootstrap `weft envoy-bootstrap` would print.
    Envoy,
    /// weft's own sidecar, the `weft-proxy` binary.
    Weft,
}

impl std::fmt::Display for ProxyKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ProxyKind::Envoy => "envoy",
            ProxyKind::Weft => "weft-proxy",
        })
    }
}

/// Who a proxy is and where it gets its config: the same for both kinds.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// `node.id`, unique per proxy.
    pub node_id: String,
    /// The workload's namespace.
    pub namespace: String,
    /// The workload's ServiceAccount.
    pub service_account: String,
    /// The workload's pod IP: the proxy's listeners (and weft-proxy's admin) bind there.
    pub pod_ip: IpAddr,
    /// The ADS server.
    pub xds_addr: SocketAddr,
    /// SotW or Delta.
    pub mode: AdsMode,
    /// The app's port (weft-proxy's `--app-port`), if the test wants to say.
    pub app_port: Option<u16>,
    /// Where its identity comes from; `None` runs it with `--insecure-plaintext` (xDS
    /// without TLS, no certificate), as against a fake ADS server.
    pub identity: Option<MeshIdentity>,
    /// The token it proves its identity with, as handed to it (in Kubernetes, its
    /// ServiceAccount token); `None` derives it from the identity's CA directory, as
    /// `weft token` does.
    pub token: Option<String>,
    /// Extra environment for the weft-proxy process, set after the harness's own (so it
    /// may override `WEFT_LOG`); the benchmark sets `WEFT_WORKERS` with it.
    pub env: Vec<(String, String)>,
}

impl ProxyConfig {
    /// A config with the default ports, no app port and no identity (plaintext).
    pub fn new(
        node_id: &str,
        namespace: &str,
        service_account: &str,
        pod_ip: IpAddr,
        xds_addr: SocketAddr,
        mode: AdsMode,
    ) -> ProxyConfig {
        ProxyConfig {
            node_id: node_id.to_owned(),
            namespace: namespace.to_owned(),
            service_account: service_account.to_owned(),
            pod_ip,
            xds_addr,
            mode,
            app_port: None,
            identity: None,
            token: None,
            env: Vec::new(),
        }
    }

    /// The same config, proving its identity with `token` (e.g. a ServiceAccount token
    /// checked with TokenReview) instead of the one the CA directory's key derives.
    pub fn with_token(mut self, token: impl Into<String>) -> ProxyConfig {
        self.token = Some(token.into());
        self
    }

    /// Writes its token to `<dir>/token` (mode 0600), for `--token-file`.
    pub(crate) fn write_token_file(&self, dir: &Path, identity: &MeshIdentity) -> anyhow::Result<PathBuf> {
        let Some(token) = &self.token else {
            return identity.write_token_file(dir, &self.namespace, &self.service_account);
        };
        let path = dir.join("token");
        let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path)?;
        file.write_all(token.as_bytes())?;
        Ok(path)
    }

    /// The same config, with the identity `identity` (a meshed proxy: mTLS, xDS over TLS).
    pub fn with_identity(mut self, identity: Option<MeshIdentity>) -> ProxyConfig {
        self.identity = identity;
        self
    }
}

/// A workload's running proxy, of either kind; killed (and reaped) when dropped.
#[derive(Debug)]
pub enum Proxy {
    /// Stock Envoy.
    Envoy(Envoy),
    /// weft-proxy.
    Weft(WeftProxy),
}

impl Proxy {
    /// Starts a proxy of `kind` and waits until it is ready (its first full config is applied).
    pub async fn start(kind: ProxyKind, config: &ProxyConfig) -> anyhow::Result<Proxy> {
        match kind {
            ProxyKind::Envoy => Ok(Proxy::Envoy(start_envoy(config).await?)),
            ProxyKind::Weft => {
                let proxy = WeftProxy::start(config).await?;
                proxy.wait_ready(crate::patience()).await?;
                Ok(Proxy::Weft(proxy))
            }
        }
    }

    /// Which kind it is.
    pub fn kind(&self) -> ProxyKind {
        match self {
            Proxy::Envoy(_) => ProxyKind::Envoy,
            Proxy::Weft(_) => ProxyKind::Weft,
        }
    }

    /// The Envoy, if it is one (for Envoy-only admin checks).
    pub fn as_envoy(&self) -> Option<&Envoy> {
        match self {
            Proxy::Envoy(e) => Some(e),
            Proxy::Weft(_) => None,
        }
    }

    /// The weft-proxy, if it is one.
    pub fn as_weft(&self) -> Option<&WeftProxy> {
        match self {
            Proxy::Envoy(_) => None,
            Proxy::Weft(w) => Some(w),
        }
    }

    /// Its admin address.
    pub fn admin_addr(&self) -> SocketAddr {
        match self {
            Proxy::Envoy(e) => e.admin_addr(),
            Proxy::Weft(w) => w.admin_addr(),
        }
    }

    /// `GET` an admin path; an error unless the answer is 2xx.
    pub async fn get_admin(&self, path_and_query: &str) -> anyhow::Result<String> {
        match self {
            Proxy::Envoy(e) => e.get_admin(path_and_query).await,
            Proxy::Weft(w) => w.get_admin(path_and_query).await,
        }
    }

    /// Whether it says it is ready: Envoy `LIVE`, weft-proxy `/ready` 200.
    pub async fn is_ready(&self) -> anyhow::Result<bool> {
        match self {
            Proxy::Envoy(e) => Ok(e.server_state().await? == "LIVE"),
            Proxy::Weft(w) => Ok(w.admin_status("/ready").await? == 200),
        }
    }

    /// The names of its active listeners: Envoy's `/listeners`, weft-proxy's `/config_dump`.
    pub async fn listener_names(&self) -> anyhow::Result<Vec<String>> {
        match self {
            Proxy::Envoy(e) => {
                let body: serde_json::Value =
                    serde_json::from_str(&e.get_admin("/listeners?format=json").await?)?;
                let statuses = body["listener_statuses"]
                    .as_array()
                    .ok_or_else(|| anyhow::anyhow!("Envoy's /listeners has no listener_statuses: {body}"))?;
                Ok(statuses.iter().filter_map(|l| l["name"].as_str().map(str::to_owned)).collect())
            }
            Proxy::Weft(w) => Ok(listeners_in_dump(&w.config_dump().await?)),
        }
    }

    /// The last `n` lines of its log.
    pub fn log_tail(&self, n: usize) -> String {
        match self {
            Proxy::Envoy(e) => e.log_tail(n),
            Proxy::Weft(w) => w.log_tail(n),
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        // A test that fails by returning an error (not by panicking) would otherwise show
        // no proxy log at all. Test harnesses show a test's stderr only when it fails.
        if !std::thread::panicking() {
            eprintln!(
                "---- {} at {}: last {DROP_TAIL_LINES} lines of its log ----\n{}\n---- end ----",
                self.kind(),
                self.admin_addr(),
                self.log_tail(DROP_TAIL_LINES)
            );
        }
    }
}

/// Lines of a proxy's log printed when it is dropped.
const DROP_TAIL_LINES: usize = 40;

/// Starts stock Envoy for `config` and waits until it is `LIVE`. A meshed Envoy
/// (`config.identity` set) first gets its [`Agent`], whose SDS socket its bootstrap
/// names; the agent lives (and dies) with the returned [`Envoy`].
pub async fn start_envoy(config: &ProxyConfig) -> anyhow::Result<Envoy> {
    let agent = match &config.identity {
        Some(identity) => {
            let agent = Agent::start(config, identity)?;
            agent.wait_ready(crate::patience()).await?;
            Some(agent)
        }
        None => None,
    };
    let bootstrap = envoy_bootstrap_for(config, agent.as_ref().map(Agent::socket))?;
    let mut envoy = Envoy::start(&bootstrap).await?;
    envoy.attach_agent(agent);
    envoy.wait_live(crate::patience()).await?;
    Ok(envoy)
}

/// What `weft envoy-bootstrap` prints for `config`: admin on the pod IP (port 0), and,
/// with an SDS socket, the `weft-sds` cluster and xDS over TLS; without, plaintext xDS.
pub fn envoy_bootstrap_for(config: &ProxyConfig, sds_socket: Option<&Path>) -> anyhow::Result<String> {
    let transport = match (sds_socket, &config.identity) {
        (Some(socket), Some(identity)) => XdsTransport::Tls(BootstrapTls {
            sds_socket: socket.to_path_buf(),
            control_identity: identity.control_identity()?,
        }),
        _ => XdsTransport::Plaintext,
    };
    let bootstrap = BootstrapConfig {
        node_id: config.node_id.clone(),
        namespace: config.namespace.clone(),
        service_account: config.service_account.clone(),
        pod_ip: config.pod_ip,
        xds_addr: config.xds_addr.to_string(),
        admin_addr: SocketAddr::new(config.pod_ip, 0),
        mode: config.mode,
    };
    Ok(envoy_bootstrap_with(&bootstrap, &transport)?)
}

/// Removes every `WEFT_*` variable of the test's environment from `command`: flags say everything.
pub(crate) fn clear_weft_env(command: &mut Command) {
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("WEFT_") {
            command.env_remove(key);
        }
    }
}

/// The names of every listener object (`"@type"` Listener) anywhere in a config dump.
pub fn listeners_in_dump(dump: &serde_json::Value) -> Vec<String> {
    fn walk(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(map) => {
                if map.get("@type").and_then(|t| t.as_str()) == Some(type_url::LISTENER)
                    && let Some(name) = map.get("name").and_then(|n| n.as_str())
                {
                    out.push(name.to_owned());
                }
                map.values().for_each(|v| walk(v, out));
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(dump, &mut out);
    out.sort();
    out.dedup();
    out
}

/// A plain HTTP/1.1 admin client.
pub(crate) type AdminClient = Client<HttpConnector, Empty<Bytes>>;

pub(crate) fn admin_client() -> AdminClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// `GET http://addr/path` with a short timeout: status and body.
pub(crate) async fn admin_get(
    client: &AdminClient,
    addr: SocketAddr,
    path: &str,
) -> anyhow::Result<(u16, String)> {
    let uri = format!("http://{addr}{path}");
    let exchange = async {
        let resp = client.get(uri.parse()?).await.map_err(|e| anyhow::anyhow!("GET {uri}: {e}"))?;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await?.to_bytes();
        anyhow::Ok((status, String::from_utf8_lossy(&body).into_owned()))
    };
    tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .map_err(|_| anyhow::anyhow!("GET {uri}: no answer within 5 s"))?
}

/// A running weft-proxy, killed (and reaped) when dropped.
///
/// It runs with `WEFT_LOG=info,weft_proxy=debug` and no other `WEFT_*` variable from the
/// test's environment (flags say everything), logging to a file (see [`WeftProxy::log_tail`]).
/// A meshed one (`identity` set) gets `--ca-file`, `--token-file` (a 0600 file in its
/// temporary directory) and `--trust-domain`; otherwise `--insecure-plaintext`.
#[derive(Debug)]
pub struct WeftProxy {
    process: LoggedChild,
    admin_addr: SocketAddr,
    admin: AdminClient,
}

impl WeftProxy {
    /// Starts `weft-proxy` for `config` with its admin API on `<pod IP>:4191`; does not wait
    /// for it to be ready (see [`WeftProxy::wait_ready`]).
    pub async fn start(config: &ProxyConfig) -> anyhow::Result<WeftProxy> {
        let bin = crate::weft_proxy_bin()?;
        let admin_addr = SocketAddr::new(config.pod_ip, WEFT_PROXY_ADMIN_PORT);
        let dir = tempfile::Builder::new().prefix("weft-weft-proxy-").tempdir()?;
        let mut command = Command::new(&bin);
        clear_weft_env(&mut command);
        match &config.identity {
            Some(identity) => {
                let token = config.write_token_file(dir.path(), identity)?;
                command
                    .arg("--ca-file")
                    .arg(identity.ca_file())
                    .arg("--token-file")
                    .arg(token)
                    .args(["--trust-domain", &identity.trust_domain]);
            }
            None => {
                command.arg("--insecure-plaintext");
            }
        }
        command
            .env("WEFT_LOG", "info,weft_proxy=debug")
            .arg("--xds-addr")
            .arg(config.xds_addr.to_string())
            .args(["--node-id", &config.node_id])
            .args(["--namespace", &config.namespace])
            .args(["--service-account", &config.service_account])
            .args(["--pod-ip", &config.pod_ip.to_string()])
            .args(["--inbound-port", &INBOUND_PORT.to_string()])
            .args(["--outbound-port", &OUTBOUND_PORT.to_string()])
            .args(["--admin-addr", &admin_addr.to_string()]);
        command.envs(config.env.iter().map(|(k, v)| (k, v)));
        if let Some(port) = config.app_port {
            command.args(["--app-port", &port.to_string()]);
        }
        if config.mode == AdsMode::Sotw {
            command.arg("--sotw");
        }
        let process = LoggedChild::spawn_in(dir, "weft-proxy", command)?;
        Ok(WeftProxy { process, admin_addr, admin: admin_client() })
    }

    /// Where its admin API listens.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// The last `n` lines of its log.
    pub fn log_tail(&self, n: usize) -> String {
        self.process.log_tail(n)
    }

    /// `Some(status)` once the process has exited.
    pub fn exited(&self) -> Option<ExitStatus> {
        self.process.exited()
    }

    /// Polls `/ready` until it answers 200 (its first full config is applied).
    ///
    /// On failure (timeout, or the process exited), prints the last 200 lines of its log.
    pub async fn wait_ready(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        let mut last;
        loop {
            if let Some(status) = self.exited() {
                return Err(self.process.failed(format!("weft-proxy exited ({status}) before it was ready")));
            }
            match admin_get(&self.admin, self.admin_addr, "/ready").await {
                Ok((200, _)) => return Ok(()),
                Ok((status, body)) => last = format!("{status} {}", body.trim()),
                Err(e) => last = format!("{e:#}"),
            }
            if Instant::now() >= deadline {
                return Err(self
                    .process
                    .failed(format!("weft-proxy was not ready within {timeout:?}; /ready said: {last}")));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The status of `GET path` on the admin API.
    pub async fn admin_status(&self, path: &str) -> anyhow::Result<u16> {
        Ok(admin_get(&self.admin, self.admin_addr, path).await?.0)
    }

    /// `GET` an admin path (`/config_dump`, `/metrics`...); an error unless the answer is 2xx.
    pub async fn get_admin(&self, path: &str) -> anyhow::Result<String> {
        let (status, body) = admin_get(&self.admin, self.admin_addr, path).await?;
        anyhow::ensure!((200..300).contains(&status), "GET {path} on weft-proxy: {status}: {body}");
        Ok(body)
    }

    /// `/config_dump`, parsed.
    pub async fn config_dump(&self) -> anyhow::Result<serde_json::Value> {
        let body = self.get_admin("/config_dump").await?;
        serde_json::from_str(&body).map_err(|e| anyhow::anyhow!("/config_dump is not JSON ({e}): {body}"))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn listeners_are_found_anywhere_in_an_envoy_style_dump() {
        let dump = serde_json::json!({
            "configs": [
                { "@type": "type.googleapis.com/envoy.admin.v3.ListenersConfigDump",
                  "dynamic_listeners": [
                    { "name": "outbound", "active_state": { "version_info": "3",
                      "listener": { "@type": type_url::LISTENER, "name": "outbound" } } },
                    { "name": "inbound", "active_state": { "version_info": "3",
                      "listener": { "@type": type_url::LISTENER, "name": "inbound" } } }
                  ] },
                { "@type": "type.googleapis.com/envoy.admin.v3.ClustersConfigDump",
                  "dynamic_active_clusters": [ { "cluster": { "@type": type_url::CLUSTER, "name": "c" } } ] }
            ]
        });
        assert_eq!(listeners_in_dump(&dump), ["inbound", "outbound"]);
    }
}
