//! A local mesh for tests: the control plane on a copy of an example's (or a test
//! scenario's) manifests, rewritten onto the test's own loopback subnet, and the
//! workloads' proxies and apps on that subnet.
//!
//! Like a real one, the mesh runs mTLS by default: the control plane keeps its CA in
//! the mesh's temporary directory, serves xDS over TLS, and certifies each proxy that
//! proves who it is with its workload token. weft-proxy gets `--ca-file`, `--token-file`
//! and `--trust-domain`; stock Envoy gets a `weft-agent` beside it and a bootstrap that
//! reads its certificates from the agent's SDS socket. [`MeshBuilder`] changes the
//! defaults: strict authorization, the certificates' lifetime, or plaintext for the
//! tests that need it.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::Context;
use weft_control::bootstrap::AdsMode;
use weft_control::server::{ControlConfig, IdentityConfig, RunningControl, SourceConfig};
use weft_control::translate::{AuthzMode, MeshOptions};
use weft_xds_protos::envoy::config::core::v3::Node;

use crate::backend::Failures;
use crate::child::LoggedChild;
use crate::grpc::GrpcServer;
use crate::identity::{CONTROL_SERVER_NAME, LeafCert, MeshIdentity, TRUST_DOMAIN};
use crate::proxy::{Proxy, ProxyConfig, ProxyKind};
use crate::tcp::TcpEcho;
use crate::xds_client::{DeltaStream, ScriptedAdsClient, SotwStream};
use crate::{Backend, Envoy, Subnet};

/// The address prefix the examples use for pod IPs; tests move it to their subnet.
pub const EXAMPLE_PREFIX: &str = "127.0.10.";

/// Manifest reload interval of a test's control plane.
const RELOAD_INTERVAL: Duration = Duration::from_millis(100);

/// Workload certificates' lifetime unless a test says otherwise (the control plane's default).
pub const DEFAULT_CERT_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// The workspace's `examples/` directory.
pub fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

/// `integration/manifests/`: one directory of manifests per test scenario.
pub fn manifests_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests")
}

/// How a [`LocalMesh`] runs its control plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlMode {
    /// In the test process (fast, and its logs are the test's). Stopping it is a graceful
    /// shutdown (streams end with status OK): use [`ControlMode::Process`] to see what
    /// proxies do when the control plane crashes.
    InProcess,
    /// `weft control` as a child process on fixed ports of the subnet (`.250:8086` for
    /// xDS, `.250:8085` for admin); stopping it is SIGKILL, so every stream breaks at once.
    Process,
}

/// The running control plane.
#[derive(Debug)]
enum Control {
    InProcess(RunningControl),
    Process(LoggedChild),
}

/// How a mesh secures its hops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Security {
    /// mTLS between proxies, xDS over TLS, a CA; `false` is `--insecure-plaintext`.
    pub mtls: bool,
    /// How TrafficTargets are enforced.
    pub authz: AuthzMode,
    /// Lifetime of workload certificates.
    pub cert_lifetime: Duration,
    /// The SPIFFE trust domain.
    pub trust_domain: String,
}

impl Default for Security {
    fn default() -> Self {
        Security {
            mtls: true,
            authz: AuthzMode::Permissive,
            cert_lifetime: DEFAULT_CERT_LIFETIME,
            trust_domain: TRUST_DOMAIN.to_owned(),
        }
    }
}

/// A [`LocalMesh`] to start: where its manifests come from, how its control plane runs,
/// and how it secures its hops (mTLS and permissive authorization by default).
#[derive(Debug, Clone)]
pub struct MeshBuilder {
    src: PathBuf,
    mode: ControlMode,
    security: Security,
}

impl MeshBuilder {
    /// The control plane as `weft control` in a child process.
    pub fn process(self) -> MeshBuilder {
        self.control(ControlMode::Process)
    }

    /// How the control plane runs.
    pub fn control(mut self, mode: ControlMode) -> MeshBuilder {
        self.mode = mode;
        self
    }

    /// SMI's strict authorization: deny unless a TrafficTarget allows.
    pub fn strict(self) -> MeshBuilder {
        self.authz(AuthzMode::Strict)
    }

    /// The authorization mode.
    pub fn authz(mut self, authz: AuthzMode) -> MeshBuilder {
        self.security.authz = authz;
        self
    }

    /// Workload certificates last `lifetime` (renewed at 70 % of it).
    pub fn cert_lifetime(mut self, lifetime: Duration) -> MeshBuilder {
        self.security.cert_lifetime = lifetime;
        self
    }

    /// No mTLS, no CA, xDS in plaintext (`--insecure-plaintext` everywhere).
    pub fn plaintext(mut self) -> MeshBuilder {
        self.security.mtls = false;
        self
    }

    /// Starts it.
    pub async fn start(self) -> anyhow::Result<LocalMesh> {
        LocalMesh::start_with(&self.src, self.mode, self.security).await
    }
}

/// A control plane serving a temporary copy of a manifest directory.
#[derive(Debug)]
pub struct LocalMesh {
    /// The test's loopback subnet: pod `127.0.10.N` of the manifests is `subnet.ip(N)` here.
    pub subnet: Subnet,
    /// The manifest directory the control plane watches.
    pub dir: tempfile::TempDir,
    /// The mesh's own files: the CA directory (`ca/`).
    state: tempfile::TempDir,
    security: Security,
    mode: ControlMode,
    control: Option<Control>,
    xds_addr: SocketAddr,
    admin_addr: SocketAddr,
}

impl LocalMesh {
    /// `examples/<name>/*.yaml`, with the control plane in-process.
    pub async fn example(name: &str) -> anyhow::Result<LocalMesh> {
        LocalMesh::start(&examples_dir().join(name), ControlMode::InProcess).await
    }

    /// `integration/manifests/<name>/*.yaml`, with the control plane in-process.
    pub async fn manifests(name: &str) -> anyhow::Result<LocalMesh> {
        LocalMesh::start(&manifests_dir().join(name), ControlMode::InProcess).await
    }

    /// A mesh on `src/*.yaml` to configure before starting: in-process control plane,
    /// mTLS, permissive authorization, 24-hour certificates.
    pub fn builder(src: &Path) -> MeshBuilder {
        MeshBuilder { src: src.to_path_buf(), mode: ControlMode::InProcess, security: Security::default() }
    }

    /// [`LocalMesh::builder`] on `examples/<name>`.
    pub fn example_builder(name: &str) -> MeshBuilder {
        LocalMesh::builder(&examples_dir().join(name))
    }

    /// [`LocalMesh::builder`] on `integration/manifests/<name>`.
    pub fn manifests_builder(name: &str) -> MeshBuilder {
        LocalMesh::builder(&manifests_dir().join(name))
    }

    /// Copies `src/*.yaml` with pod IPs moved to a fresh subnet and starts the control
    /// plane, with mTLS and permissive authorization.
    pub async fn start(src: &Path, mode: ControlMode) -> anyhow::Result<LocalMesh> {
        LocalMesh::start_with(src, mode, Security::default()).await
    }

    async fn start_with(src: &Path, mode: ControlMode, security: Security) -> anyhow::Result<LocalMesh> {
        let subnet = Subnet::claim()?;
        let state = tempfile::Builder::new().prefix("weft-mesh-").tempdir()?;
        let dir = tempfile::Builder::new().prefix("weft-manifests-").tempdir()?;
        let mut files: Vec<PathBuf> = std::fs::read_dir(src)
            .with_context(|| format!("reading {}", src.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
            .collect();
        files.sort();
        let prefix = subnet_prefix(&subnet);
        for f in files {
            let text = std::fs::read_to_string(&f)?.replace(EXAMPLE_PREFIX, &prefix);
            let name = f.file_name().context("file name")?;
            std::fs::write(dir.path().join(name), text)?;
        }
        let (xds_port, admin_port) = match mode {
            ControlMode::InProcess => (0, 0),
            ControlMode::Process => (8086, 8085),
        };
        let mut mesh = LocalMesh {
            xds_addr: subnet.addr(250, xds_port),
            admin_addr: subnet.addr(250, admin_port),
            subnet,
            dir,
            state,
            security,
            mode,
            control: None,
        };
        mesh.restart_control().await?;
        Ok(mesh)
    }

    /// How this mesh secures its hops.
    pub fn security(&self) -> &Security {
        &self.security
    }

    /// The control plane's CA directory (`--ca-dir`): root certificate and key, token key.
    pub fn ca_dir(&self) -> PathBuf {
        self.state.path().join("ca")
    }

    /// What a meshed proxy proves its identity with; `None` in a plaintext mesh.
    pub fn identity(&self) -> Option<MeshIdentity> {
        self.security
            .mtls
            .then(|| MeshIdentity { ca_dir: self.ca_dir(), trust_domain: self.security.trust_domain.clone() })
    }

    /// The identity of a mesh with mTLS; an error in a plaintext one.
    pub fn mesh_identity(&self) -> anyhow::Result<MeshIdentity> {
        self.identity().context("this mesh runs without mTLS")
    }

    fn mesh_options(&self) -> MeshOptions {
        if self.security.mtls {
            MeshOptions {
                mtls: true,
                authz: self.security.authz,
                trust_domain: self.security.trust_domain.clone(),
                tracing: None,
            }
        } else {
            MeshOptions { authz: self.security.authz, ..MeshOptions::plaintext() }
        }
    }

    fn running(&self) -> anyhow::Result<&Control> {
        self.control.as_ref().context("the control plane was stopped")
    }

    /// The control plane's xDS address.
    pub fn xds_addr(&self) -> anyhow::Result<SocketAddr> {
        self.running()?;
        Ok(self.xds_addr)
    }

    /// The control plane's admin address.
    pub fn admin_addr(&self) -> anyhow::Result<SocketAddr> {
        self.running()?;
        Ok(self.admin_addr)
    }

    /// Stops the control plane: in a child process, SIGKILL (a crash: connections are
    /// reset, nothing says goodbye); in-process, a graceful shutdown.
    pub async fn stop_control(&mut self) -> anyhow::Result<()> {
        match self.control.take() {
            Some(Control::InProcess(c)) => c.shutdown().await,
            Some(Control::Process(p)) => p.kill()?,
            None => {}
        }
        Ok(())
    }

    /// (Re)starts the control plane on the same xDS and admin addresses and manifest
    /// directory, and waits until it serves (its first snapshot is published).
    pub async fn restart_control(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(self.control.is_none(), "the control plane is already running");
        match self.mode {
            ControlMode::InProcess => {
                let config = ControlConfig {
                    source: SourceConfig::Manifests(self.dir.path().to_path_buf()),
                    xds_addr: self.xds_addr,
                    admin_addr: self.admin_addr,
                    reload_interval: RELOAD_INTERVAL,
                    mesh: self.mesh_options(),
                    identity: self.security.mtls.then(|| IdentityConfig {
                        ca_dir: self.ca_dir(),
                        cert_lifetime: self.security.cert_lifetime,
                    }),
                };
                let control = weft_control::server::start(config).await?;
                // Port 0 the first time: later restarts reuse what was bound.
                self.xds_addr = control.xds_addr;
                self.admin_addr = control.admin_addr;
                self.control = Some(Control::InProcess(control));
            }
            ControlMode::Process => {
                let mut command = Command::new(crate::weft_bin()?);
                command
                    .arg("control")
                    .arg("--manifests")
                    .arg(self.dir.path())
                    .args(["--xds-addr", &self.xds_addr.to_string()])
                    .args(["--admin-addr", &self.admin_addr.to_string()])
                    .args(["--reload-interval-ms", &RELOAD_INTERVAL.as_millis().to_string()])
                    .args(["--log", "info"]);
                if self.security.mtls {
                    command
                        .arg("--ca-dir")
                        .arg(self.ca_dir())
                        .args(["--cert-lifetime", &format!("{}s", self.security.cert_lifetime.as_secs())])
                        .args(["--trust-domain", &self.security.trust_domain])
                        .args(["--authz", authz_flag(self.security.authz)]);
                } else {
                    command.arg("--insecure-plaintext");
                }
                let process = LoggedChild::spawn("weft-control", command)?;
                let admin = self.admin_addr;
                let ready = crate::eventually("the control plane to be ready", || async {
                    if let Some(status) = process.exited() {
                        return Err(anyhow::anyhow!("weft control exited ({status})"));
                    }
                    let (status, body) = crate::load::send(admin, "admin", "/ready").await?;
                    anyhow::ensure!(status == 200, "/ready: {status} {body}");
                    anyhow::Ok(Some(()))
                })
                .await;
                if let Err(e) = ready {
                    return Err(process.failed(format!("{e:#}")));
                }
                self.control = Some(Control::Process(process));
            }
        }
        Ok(())
    }

    /// Text with the manifests' addresses moved to this test's subnet.
    pub fn localize(&self, text: &str) -> String {
        text.replace(EXAMPLE_PREFIX, &subnet_prefix(&self.subnet))
    }

    /// Replaces a manifest file the way an editor does: write a temporary file, rename it over.
    pub fn write_manifest(&self, file: &str, text: &str) -> anyhow::Result<()> {
        let tmp = self.dir.path().join(format!(".{file}.tmp"));
        std::fs::write(&tmp, self.localize(text))?;
        std::fs::rename(&tmp, self.dir.path().join(file))?;
        Ok(())
    }

    /// A manifest file's current text.
    pub fn read_manifest(&self, file: &str) -> anyhow::Result<String> {
        Ok(std::fs::read_to_string(self.dir.path().join(file))?)
    }

    /// Starts a test backend named `name` for pod `127.0.10.host` on `port`.
    pub async fn backend(&self, host: u8, port: u16, name: &str) -> anyhow::Result<Backend> {
        Backend::start(self.subnet.addr(host, port), name).await
    }

    /// [`LocalMesh::backend`] answering the requests `failures` picks with 503.
    pub async fn failing_backend(
        &self,
        host: u8,
        port: u16,
        name: &str,
        failures: Failures,
    ) -> anyhow::Result<Backend> {
        Backend::start_failing(self.subnet.addr(host, port), name, failures).await
    }

    /// Starts the test gRPC server named `name` for pod `127.0.10.host` on `port`.
    pub async fn grpc_server(&self, host: u8, port: u16, name: &str) -> anyhow::Result<GrpcServer> {
        GrpcServer::start(self.subnet.addr(host, port), name).await
    }

    /// Starts a TCP echo server for pod `127.0.10.host` on `port`.
    pub async fn tcp_echo(&self, host: u8, port: u16) -> anyhow::Result<TcpEcho> {
        TcpEcho::start(self.subnet.addr(host, port)).await
    }

    /// The identity and xDS source of the proxy of pod `127.0.10.host`.
    pub fn proxy_config(
        &self,
        node_id: &str,
        namespace: &str,
        service_account: &str,
        host: u8,
        mode: AdsMode,
    ) -> anyhow::Result<ProxyConfig> {
        Ok(ProxyConfig::new(
            node_id,
            namespace,
            service_account,
            self.subnet.ip(host),
            self.xds_addr()?,
            mode,
        )
        .with_identity(self.identity()))
    }

    /// Starts a proxy of `kind` for pod `127.0.10.host`, and waits until it is ready
    /// (Envoy LIVE, weft-proxy `/ready`).
    pub async fn proxy(
        &self,
        kind: ProxyKind,
        node_id: &str,
        namespace: &str,
        service_account: &str,
        host: u8,
        mode: AdsMode,
    ) -> anyhow::Result<Proxy> {
        Proxy::start(kind, &self.proxy_config(node_id, namespace, service_account, host, mode)?).await
    }

    /// Starts stock Envoy (with its weft-agent, in a mesh with mTLS) as the proxy of pod
    /// `127.0.10.host`, and waits until it is LIVE.
    pub async fn envoy(
        &self,
        node_id: &str,
        namespace: &str,
        service_account: &str,
        host: u8,
        mode: AdsMode,
    ) -> anyhow::Result<Envoy> {
        crate::proxy::start_envoy(&self.proxy_config(node_id, namespace, service_account, host, mode)?).await
    }

    /// The pod IP of `127.0.10.host`.
    pub fn pod_ip(&self, host: u8) -> IpAddr {
        self.subnet.ip(host)
    }

    /// A workload certificate for `namespace`/`service_account`, obtained from the control
    /// plane's identity service with the workload's token, as a proxy gets its own.
    pub async fn certify(&self, namespace: &str, service_account: &str) -> anyhow::Result<LeafCert> {
        self.mesh_identity()?.certify(self.xds_addr()?, namespace, service_account).await
    }

    /// A scripted ADS client connected as the workload `namespace`/`service_account`: over
    /// TLS with that workload's certificate in a mesh with mTLS (the control plane checks
    /// that it matches the node's metadata), in plaintext otherwise.
    pub async fn ads_client(
        &self,
        namespace: &str,
        service_account: &str,
    ) -> anyhow::Result<ScriptedAdsClient> {
        let xds = self.xds_addr()?;
        let Some(identity) = self.identity() else {
            return ScriptedAdsClient::connect(xds).await;
        };
        let cert = identity.certify(xds, namespace, service_account).await?;
        let roots = [identity.root()?];
        let config = crate::identity::client_config(
            Some(&cert),
            &roots,
            Some(identity.control_identity()?),
            &[b"h2"],
        )?;
        let channel = crate::identity::tls_channel(xds, CONTROL_SERVER_NAME, config).await?;
        Ok(ScriptedAdsClient::from_channel(channel))
    }

    /// [`LocalMesh::ads_client`] for `node`'s namespace and ServiceAccount (from its
    /// metadata), with a SotW stream open.
    pub async fn connect_sotw(&self, node: Node) -> anyhow::Result<SotwStream> {
        let (ns, sa) = node_identity(&node)?;
        Ok(self.ads_client(&ns, &sa).await?.sotw(node))
    }

    /// [`LocalMesh::connect_sotw`] with a Delta stream.
    pub async fn connect_delta(&self, node: Node) -> anyhow::Result<DeltaStream> {
        let (ns, sa) = node_identity(&node)?;
        Ok(self.ads_client(&ns, &sa).await?.delta(node))
    }

    /// `GET` on the control plane's admin API.
    pub async fn admin_get(&self, path: &str) -> anyhow::Result<String> {
        let (status, body) = crate::load::send(self.admin_addr()?, "admin", path).await?;
        anyhow::ensure!(status == 200, "GET {path}: {status}: {body}");
        Ok(body)
    }

    /// `/debug/proxies`, by node id.
    pub async fn proxies(&self) -> anyhow::Result<BTreeMap<String, serde_json::Value>> {
        let list: Vec<serde_json::Value> = serde_json::from_str(&self.admin_get("/debug/proxies").await?)?;
        Ok(list.into_iter().filter_map(|p| Some((p["node"]["id"].as_str()?.to_string(), p))).collect())
    }

    /// Waits until every proxy in `node_ids` is connected and has ACKed the latest
    /// version of every type (CDS, EDS, LDS, RDS) without a NACK; returns their reports.
    pub async fn wait_synced(
        &self,
        node_ids: &[&str],
    ) -> anyhow::Result<BTreeMap<String, serde_json::Value>> {
        crate::eventually(&format!("{node_ids:?} to ACK every type"), || async {
            let proxies = self.proxies().await?;
            for id in node_ids {
                let p = proxies.get(*id).ok_or_else(|| anyhow::anyhow!("{id} is not connected"))?;
                for t in ["cds", "eds", "lds", "rds"] {
                    let tr = &p["types"][t];
                    anyhow::ensure!(tr["acks"].as_u64().unwrap_or(0) > 0, "{id}: {t} not ACKed: {p}");
                    anyhow::ensure!(tr["nacks"] == 0, "{id}: {t} NACKed: {p}");
                    anyhow::ensure!(tr["acked_version"] == tr["sent_version"], "{id}: {t} behind: {p}");
                }
            }
            anyhow::Ok(Some(proxies))
        })
        .await
    }

    /// Runs `weft apply -f <file>` with the real binary; returns exit code, stdout and stderr.
    pub async fn weft_apply(&self, file: &Path) -> anyhow::Result<(i32, String, String)> {
        let out = tokio::process::Command::new(crate::weft_bin()?)
            .arg("apply")
            .arg("-f")
            .arg(file)
            .arg("--admin-addr")
            .arg(self.admin_addr()?.to_string())
            .output()
            .await?;
        Ok((
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    }
}

/// `--authz`'s value for `mode`.
fn authz_flag(mode: AuthzMode) -> &'static str {
    match mode {
        AuthzMode::Permissive => "permissive",
        AuthzMode::Strict => "strict",
    }
}

/// A node's namespace and ServiceAccount, from its metadata.
fn node_identity(node: &Node) -> anyhow::Result<(String, String)> {
    use weft_xds_protos::google::protobuf::value::Kind;
    let field = |key: &str| {
        node.metadata
            .as_ref()
            .and_then(|m| m.fields.get(key))
            .and_then(|v| match &v.kind {
                Some(Kind::StringValue(s)) => Some(s.clone()),
                _ => None,
            })
            .with_context(|| format!("node {} has no {key} in its metadata", node.id))
    };
    Ok((field(crate::xds_client::META_NAMESPACE)?, field(crate::xds_client::META_SERVICE_ACCOUNT)?))
}

fn subnet_prefix(subnet: &Subnet) -> String {
    let ip = subnet.ip(0).to_string();
    match ip.rsplit_once('.') {
        Some((net, _)) => format!("{net}."),
        None => ip,
    }
}
