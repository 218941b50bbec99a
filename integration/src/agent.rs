//! `weft-agent`, the node-local SDS agent that runs beside stock Envoy: it makes the
//! workload's key, gets its certificate from the control plane's identity service with
//! the workload's token, renews it, and serves it (secrets `default` and `ROOTCA`) to
//! Envoy over a Unix socket, so the key never crosses the network.
//!
//! The harness starts one per Envoy (see [`Envoy`](crate::Envoy)): its socket lives in a
//! 0700 directory inside the agent's own temporary directory, and it is killed with the
//! Envoy it serves.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use crate::child::LoggedChild;
use crate::identity::{MeshIdentity, private_dir};
use crate::proxy::{AdminClient, ProxyConfig, admin_client, admin_get};

/// The agent's admin port on the pod IP (`/ready`, `/live`, `/metrics`, `/identity`).
pub const AGENT_ADMIN_PORT: u16 = 4192;

/// A running weft-agent, killed (and reaped) when dropped.
#[derive(Debug)]
pub struct Agent {
    process: LoggedChild,
    socket: PathBuf,
    admin_addr: SocketAddr,
    admin: AdminClient,
}

impl Agent {
    /// Starts `weft-agent` for the workload `config` describes, certified through the
    /// control plane at `config.xds_addr`; does not wait (see [`Agent::wait_ready`]).
    pub fn start(config: &ProxyConfig, identity: &MeshIdentity) -> anyhow::Result<Agent> {
        let bin = crate::paths::weft_agent_bin()?;
        let dir = tempfile::Builder::new().prefix("weft-agent-").tempdir()?;
        let token = config.write_token_file(dir.path(), identity)?;
        let sds_dir = dir.path().join("sds");
        private_dir(&sds_dir)?;
        let socket = sds_dir.join("sds.sock");
        let admin_addr = SocketAddr::new(config.pod_ip, AGENT_ADMIN_PORT);
        let mut command = Command::new(bin);
        crate::proxy::clear_weft_env(&mut command);
        command
            .env("WEFT_LOG", "info,weft_proxy=debug,weft_agent=debug")
            .args(["--xds-addr", &config.xds_addr.to_string()])
            .args(["--namespace", &config.namespace])
            .args(["--service-account", &config.service_account])
            .arg("--ca-file")
            .arg(identity.ca_file())
            .arg("--token-file")
            .arg(&token)
            .args(["--trust-domain", &identity.trust_domain])
            .arg("--sds-socket")
            .arg(&socket)
            .args(["--admin-addr", &admin_addr.to_string()]);
        let process = LoggedChild::spawn_in(dir, "weft-agent", command)?;
        Ok(Agent { process, socket, admin_addr, admin: admin_client() })
    }

    /// The SDS socket Envoy's `weft-sds` cluster points at.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Its admin address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// `Some(status)` once the process has exited.
    pub fn exited(&self) -> Option<ExitStatus> {
        self.process.exited()
    }

    /// The last `n` lines of its log.
    pub fn log_tail(&self, n: usize) -> String {
        self.process.log_tail(n)
    }

    /// Waits until `/ready` answers 200 (it holds a certificate) and the socket exists.
    pub async fn wait_ready(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        let mut last;
        loop {
            if let Some(status) = self.exited() {
                return Err(self.process.failed(format!("weft-agent exited ({status}) before it was ready")));
            }
            match admin_get(&self.admin, self.admin_addr, "/ready").await {
                Ok((200, _)) if self.socket.exists() => return Ok(()),
                Ok((200, _)) => last = format!("ready, but no socket at {}", self.socket.display()),
                Ok((status, body)) => last = format!("{status} {}", body.trim()),
                Err(e) => last = format!("{e:#}"),
            }
            if Instant::now() >= deadline {
                return Err(self
                    .process
                    .failed(format!("weft-agent was not ready within {timeout:?}; /ready said: {last}")));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `GET` an admin path (`/identity`, `/metrics`); an error unless the answer is 2xx.
    pub async fn get_admin(&self, path: &str) -> anyhow::Result<String> {
        let (status, body) = admin_get(&self.admin, self.admin_addr, path).await?;
        anyhow::ensure!((200..300).contains(&status), "GET {path} on weft-agent: {status}: {body}");
        Ok(body)
    }
}
