//! The injector's flags: shared by `weft inject` and, flattened, by the control plane that
//! serves the webhook.

use std::path::{Path, PathBuf};

use super::InjectConfig;
use super::offline::{self, Report};

/// Which kind of sidecar to inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum SidecarMode {
    /// Native where the cluster has it (1.29+; `weft inject` assumes it does).
    #[default]
    Auto,
    /// Always a native sidecar (an init container with `restartPolicy: Always`).
    Native,
    /// Always a regular container placed first (clusters older than 1.29).
    Container,
}

/// How injected proxies are set up.
#[derive(Debug, Clone, clap::Args)]
pub struct InjectArgs {
    /// The image of the injected proxy and its init step (it holds weft-proxy and iptables)
    /// [default: weft/weft:<version>].
    #[arg(long, env = "WEFT_PROXY_IMAGE")]
    pub proxy_image: Option<String>,
    /// The control plane's address as injected proxies dial it.
    #[arg(long, env = "WEFT_PROXY_CONTROL_ADDR", default_value = "weft-control.weft-system.svc:8086")]
    pub proxy_control_addr: String,
    /// Native sidecar, regular container, or native when the cluster supports it.
    #[arg(long, env = "WEFT_SIDECAR", value_enum, default_value_t = SidecarMode::Auto)]
    pub sidecar: SidecarMode,
    /// The injected proxies' log filter.
    #[arg(long, env = "WEFT_PROXY_LOG", default_value = "info")]
    pub proxy_log: String,
}

impl InjectArgs {
    /// The injection these flags ask for. `cluster_has_native` says whether the cluster runs
    /// native sidecars (see [`super::native_sidecars_supported`]); it decides `--sidecar auto`.
    pub fn config(&self, trust_domain: &str, cluster_has_native: bool) -> InjectConfig {
        let defaults = InjectConfig::default();
        InjectConfig {
            proxy_image: self.proxy_image.clone().unwrap_or(defaults.proxy_image.clone()),
            control_addr: self.proxy_control_addr.clone(),
            trust_domain: trust_domain.to_string(),
            native_sidecar: match self.sidecar {
                SidecarMode::Auto => cluster_has_native,
                SidecarMode::Native => true,
                SidecarMode::Container => false,
            },
            log: self.proxy_log.clone(),
            ..defaults
        }
    }
}

/// `weft inject`'s arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct OfflineArgs {
    /// A YAML file of Kubernetes objects, or `-` for standard input.
    #[arg(short = 'f', long = "filename", env = "WEFT_INJECT_FILE")]
    pub file: PathBuf,
    /// The mesh's trust domain.
    #[arg(long, env = "WEFT_TRUST_DOMAIN", default_value = "cluster.local")]
    pub trust_domain: String,
    /// How the proxy is set up.
    #[command(flatten)]
    pub inject: InjectArgs,
}

/// Why `weft inject` could not run.
#[derive(Debug, thiserror::Error)]
pub enum OfflineRunError {
    /// The input could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file (`-` for standard input).
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The input is not YAML.
    #[error(transparent)]
    Yaml(#[from] offline::OfflineError),
}

impl OfflineArgs {
    /// Reads the input and injects it: the new YAML, and a report per pod-bearing object.
    pub fn run(&self) -> Result<(String, Vec<Report>), OfflineRunError> {
        let text = if self.file == Path::new("-") {
            std::io::read_to_string(std::io::stdin())
                .map_err(|source| OfflineRunError::Read { path: "-".into(), source })?
        } else {
            std::fs::read_to_string(&self.file)
                .map_err(|source| OfflineRunError::Read { path: self.file.display().to_string(), source })?
        };
        // Offline there is no cluster to ask: `auto` means native.
        let config = self.inject.config(&self.trust_domain, true);
        Ok(offline::inject_yaml(&text, &config)?)
    }
}

/// Whether any object in `reports` could not be injected (the others were).
pub fn any_failed(reports: &[Report]) -> bool {
    reports.iter().any(|r| r.result.is_err())
}
