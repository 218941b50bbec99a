//! A local mesh for tests: the control plane in-process on a copy of an
//! example's manifests, rewritten onto the test's own loopback subnet.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use weft_control::bootstrap::{AdsMode, BootstrapConfig, envoy_bootstrap};
use weft_control::server::{ControlConfig, RunningControl};

use crate::{Backend, Envoy, Subnet};

/// The address prefix the examples use for pod IPs; tests move it to their subnet.
pub const EXAMPLE_PREFIX: &str = "127.0.10.";

/// The workspace's `examples/` directory.
pub fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

/// A control plane serving a temporary copy of an example's manifests.
#[derive(Debug)]
pub struct LocalMesh {
    /// The test's loopback subnet: pod `127.0.10.N` of the example is `subnet.ip(N)` here.
    pub subnet: Subnet,
    /// The manifest directory the control plane watches.
    pub dir: tempfile::TempDir,
    /// The running control plane.
    pub control: Option<RunningControl>,
}

impl LocalMesh {
    /// Copies `examples/<name>/*.yaml` with pod IPs moved to a fresh subnet and starts the control plane.
    pub async fn example(name: &str) -> anyhow::Result<LocalMesh> {
        let subnet = Subnet::claim()?;
        let dir = tempfile::Builder::new().prefix("weft-manifests-").tempdir()?;
        let src = examples_dir().join(name);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&src)
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
        let config = ControlConfig {
            manifests: dir.path().to_path_buf(),
            xds_addr: SocketAddr::new(subnet.ip(250), 0),
            admin_addr: SocketAddr::new(subnet.ip(250), 0),
            reload_interval: Duration::from_millis(100),
        };
        let control = weft_control::server::start(config).await?;
        Ok(LocalMesh { subnet, dir, control: Some(control) })
    }

    fn running(&self) -> anyhow::Result<&RunningControl> {
        self.control.as_ref().context("the control plane was stopped")
    }

    /// The control plane's xDS address.
    pub fn xds_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.running()?.xds_addr)
    }

    /// The control plane's admin address.
    pub fn admin_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.running()?.admin_addr)
    }

    /// Text with the example's addresses moved to this test's subnet.
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

    /// Starts stock Envoy as the proxy of pod `127.0.10.host`, and waits until it is LIVE.
    pub async fn envoy(
        &self,
        node_id: &str,
        namespace: &str,
        service_account: &str,
        host: u8,
        mode: AdsMode,
    ) -> anyhow::Result<Envoy> {
        let pod_ip: IpAddr = self.subnet.ip(host);
        let bootstrap = envoy_bootstrap(&BootstrapConfig {
            node_id: node_id.into(),
            namespace: namespace.into(),
            service_account: service_account.into(),
            pod_ip,
            xds_addr: self.xds_addr()?.to_string(),
            admin_addr: SocketAddr::new(pod_ip, 0),
            mode,
        })?;
        let envoy = Envoy::start(&bootstrap).await?;
        envoy.wait_live(crate::patience()).await?;
        Ok(envoy)
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

    /// Stops the control plane.
    pub async fn stop_control(&mut self) {
        if let Some(c) = self.control.take() {
            c.shutdown().await;
        }
    }
}

fn subnet_prefix(subnet: &Subnet) -> String {
    let ip = subnet.ip(0).to_string();
    match ip.rsplit_once('.') {
        Some((net, _)) => format!("{net}."),
        None => ip,
    }
}
