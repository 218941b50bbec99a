//! `weft install` and `weft uninstall` flags.

use super::{FailurePolicy, InstallError, InstallOptions};

/// `weft install`'s arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct InstallArgs {
    /// The control plane's image [default: weft/weft:<version>].
    #[arg(long, env = "WEFT_IMAGE")]
    pub image: Option<String>,
    /// The injected proxy's image [default: the control plane's image].
    #[arg(long, env = "WEFT_PROXY_IMAGE")]
    pub proxy_image: Option<String>,
    /// The control plane's imagePullPolicy: IfNotPresent, Always or Never.
    #[arg(long, env = "WEFT_IMAGE_PULL_POLICY", default_value = "IfNotPresent")]
    pub image_pull_policy: String,
    /// Control plane replicas; each serves xDS.
    #[arg(long, env = "WEFT_REPLICAS", default_value_t = 2)]
    pub replicas: u16,
    /// The mesh's trust domain.
    #[arg(long, env = "WEFT_TRUST_DOMAIN", default_value = "cluster.local")]
    pub trust_domain: String,
    /// What the API server does when the injector fails: admit the pod without a proxy
    /// (ignore) or refuse it (fail).
    #[arg(long, env = "WEFT_WEBHOOK_FAILURE_POLICY", value_enum, default_value_t = FailurePolicy::Ignore)]
    pub webhook_failure_policy: FailurePolicy,
    /// The control plane's log filter.
    #[arg(long, env = "WEFT_CONTROL_LOG", default_value = "info")]
    pub control_log: String,
}

impl InstallArgs {
    /// The options these flags give.
    pub fn options(&self) -> InstallOptions {
        let defaults = InstallOptions::default();
        let image = self.image.clone().unwrap_or(defaults.image);
        InstallOptions {
            proxy_image: self.proxy_image.clone().unwrap_or_else(|| image.clone()),
            image,
            pull_policy: self.image_pull_policy.clone(),
            replicas: self.replicas,
            trust_domain: self.trust_domain.clone(),
            failure_policy: self.webhook_failure_policy,
            log: self.control_log.clone(),
        }
    }

    /// `weft install`'s output.
    pub fn run(&self) -> Result<String, InstallError> {
        self.options().install_yaml()
    }
}

/// `weft uninstall`'s arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct UninstallArgs {
    /// Keep the SMI CRDs, and so every TrafficSplit, TrafficTarget and route in the cluster.
    #[arg(long, env = "WEFT_KEEP_CRDS", value_parser = clap::builder::BoolishValueParser::new())]
    pub keep_crds: bool,
}

impl UninstallArgs {
    /// `weft uninstall`'s output.
    pub fn run(&self) -> Result<String, InstallError> {
        InstallOptions::default().uninstall_yaml(self.keep_crds)
    }
}
