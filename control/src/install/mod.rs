//! `weft install` and `weft uninstall`: the Kubernetes manifests of a mesh.
//!
//! `weft install | kubectl apply -f -` creates, in order: the SMI CRDs (every version weft
//! reads, the newest one stored, each with a status subresource and a structural schema), the
//! `weft-system` namespace, the control plane's ServiceAccount and least-privilege RBAC, its
//! Services (xDS and admin on `weft-control`, the injector on `weft-webhook:443`), the
//! Deployment (two replicas, each serving xDS), a PodDisruptionBudget and the
//! MutatingWebhookConfiguration.
//!
//! Two things are not in the manifests because they hold keys made at run time:
//! - the CA Secret `weft-ca`: the first replica to start creates it (create is atomic, so a
//!   replica that loses the race reads the winner's) and every replica loads it; see
//!   [`ca_secret`];
//! - the injector's `caBundle`: the control plane patches in the CA root and serves the webhook
//!   with a certificate that CA issues and renews ([`crate::inject::webhook`]).
//!
//! `weft uninstall | kubectl delete -f -` names the same objects, in reverse order.

mod args;
pub mod ca_secret;

pub use args::{InstallArgs, UninstallArgs};

use std::fmt::Write as _;

/// The control plane's namespace.
pub const NAMESPACE: &str = "weft-system";
/// The MutatingWebhookConfiguration's name.
pub const WEBHOOK_CONFIGURATION: &str = "weft-injector";
/// The name of the one webhook in it.
pub const WEBHOOK_NAME: &str = "inject.weft.io";
/// The Service the API server calls the injector through (port 443).
pub const WEBHOOK_SERVICE: &str = "weft-webhook";
/// The Secret that holds the CA's certificate and key.
pub const CA_SECRET: &str = "weft-ca";
/// The control plane's Deployment, ServiceAccount and xDS/admin Service.
pub const CONTROL_NAME: &str = "weft-control";
/// The Lease (in `weft-system`) whose holder writes status; the Role grants exactly this name.
pub const STATUS_LEASE: &str = "weft-control-status";
/// The port the injector listens on in the control plane's pod.
pub const WEBHOOK_PORT: u16 = 8443;

const CRDS: [&str; 4] = [
    include_str!("manifests/crds/traffic-split.yaml"),
    include_str!("manifests/crds/traffic-target.yaml"),
    include_str!("manifests/crds/http-route-group.yaml"),
    include_str!("manifests/crds/tcp-route.yaml"),
];
const CONTROL_PLANE: &str = include_str!("manifests/control-plane.yaml");

/// Why manifests could not be produced.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// An option holds something that cannot go into a manifest.
    #[error("{option} {value:?}: {reason}")]
    InvalidOption {
        /// The option (its flag).
        option: &'static str,
        /// What was given.
        value: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// A template is broken (a bug in weft, caught by the tests).
    #[error("manifest template: {0}")]
    Template(#[from] serde_yaml_ng::Error),
}

/// What the webhook does when it cannot be reached or fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum FailurePolicy {
    /// Admit the pod without a proxy (the default: the injector never blocks a deployment).
    #[default]
    Ignore,
    /// Refuse the pod: nothing starts unmeshed, and nothing starts while the injector is down.
    Fail,
}

impl FailurePolicy {
    fn as_str(self) -> &'static str {
        match self {
            FailurePolicy::Ignore => "Ignore",
            FailurePolicy::Fail => "Fail",
        }
    }
}

/// The choices `weft install` offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallOptions {
    /// The control plane's image (it holds `weft`).
    pub image: String,
    /// The image of the injected proxy and its init step (it holds `weft-proxy` and iptables).
    pub proxy_image: String,
    /// `imagePullPolicy` of the control plane (`IfNotPresent`, `Always`, `Never`).
    pub pull_policy: String,
    /// Control plane replicas; each serves xDS.
    pub replicas: u16,
    /// The mesh's trust domain.
    pub trust_domain: String,
    /// The injector's failure policy.
    pub failure_policy: FailurePolicy,
    /// The control plane's log filter.
    pub log: String,
}

impl Default for InstallOptions {
    fn default() -> Self {
        let image = format!("weft/weft:{}", env!("CARGO_PKG_VERSION"));
        Self {
            proxy_image: image.clone(),
            image,
            pull_policy: "IfNotPresent".into(),
            replicas: 2,
            trust_domain: "cluster.local".into(),
            failure_policy: FailurePolicy::Ignore,
            log: "info".into(),
        }
    }
}

/// One manifest document: its identity and its content.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    /// `apiVersion`.
    pub api_version: String,
    /// `kind`.
    pub kind: String,
    /// `metadata.name`.
    pub name: String,
    /// `metadata.namespace`, for namespaced objects.
    pub namespace: Option<String>,
    /// The whole object.
    pub value: serde_yaml_ng::Value,
}

impl Document {
    fn from_value(value: serde_yaml_ng::Value) -> Result<Self, InstallError> {
        let text =
            |v: &serde_yaml_ng::Value, key: &str| v.get(key).and_then(|v| v.as_str()).map(str::to_string);
        let metadata = value.get("metadata").cloned().unwrap_or_default();
        let missing = |what: &str| {
            <serde_yaml_ng::Error as serde::de::Error>::custom(format!("a document has no {what}"))
        };
        Ok(Self {
            api_version: text(&value, "apiVersion").ok_or_else(|| missing("apiVersion"))?,
            kind: text(&value, "kind").ok_or_else(|| missing("kind"))?,
            name: text(&metadata, "name").ok_or_else(|| missing("metadata.name"))?,
            namespace: text(&metadata, "namespace"),
            value,
        })
    }

    /// `kind/name` (with the namespace when there is one), as kubectl prints it.
    pub fn describe(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{}/{} in {ns}", self.kind, self.name),
            None => format!("{}/{}", self.kind, self.name),
        }
    }
}

/// A value that goes inside a double-quoted YAML string of a template: printable, no quotes,
/// no backslashes, no `{{`.
fn checked(option: &'static str, value: &str) -> Result<String, InstallError> {
    let bad = |reason| InstallError::InvalidOption { option, value: value.to_string(), reason };
    if value.is_empty() {
        return Err(bad("must not be empty"));
    }
    if value.chars().any(|c| c.is_control() || c.is_whitespace() || c == '"' || c == '\\' || c == '{') {
        return Err(bad("must not hold whitespace, quotes, backslashes or braces"));
    }
    Ok(value.to_string())
}

impl InstallOptions {
    fn fill(&self, template: &str) -> Result<String, InstallError> {
        if self.replicas == 0 {
            return Err(InstallError::InvalidOption {
                option: "--replicas",
                value: "0".into(),
                reason: "at least one replica must serve xDS",
            });
        }
        if !["IfNotPresent", "Always", "Never"].contains(&self.pull_policy.as_str()) {
            return Err(InstallError::InvalidOption {
                option: "--image-pull-policy",
                value: self.pull_policy.clone(),
                reason: "must be IfNotPresent, Always or Never",
            });
        }
        let out = template
            .replace("{{version}}", env!("CARGO_PKG_VERSION"))
            .replace("{{image}}", &checked("--image", &self.image)?)
            .replace("{{proxy_image}}", &checked("--proxy-image", &self.proxy_image)?)
            .replace("{{pull_policy}}", &self.pull_policy)
            .replace("{{replicas}}", &self.replicas.to_string())
            .replace("{{trust_domain}}", &checked("--trust-domain", &self.trust_domain)?)
            .replace("{{failure_policy}}", self.failure_policy.as_str())
            .replace("{{log}}", &checked("--log", &self.log)?);
        Ok(out)
    }

    /// Every object `weft install` creates, in the order to apply them.
    pub fn documents(&self) -> Result<Vec<Document>, InstallError> {
        let mut docs = Vec::new();
        for template in CRDS.iter().copied().chain([CONTROL_PLANE]) {
            let text = self.fill(template)?;
            for de in serde_yaml_ng::Deserializer::from_str(&text) {
                let value: serde_yaml_ng::Value = serde::Deserialize::deserialize(de)?;
                if !value.is_null() {
                    docs.push(Document::from_value(value)?);
                }
            }
        }
        Ok(docs)
    }

    /// `weft install`'s output: every document, for `kubectl apply -f -`.
    pub fn install_yaml(&self) -> Result<String, InstallError> {
        let mut out = format!(
            "# weft {} — apply with `kubectl apply -f -`; check with `weft check --kubernetes`.\n",
            env!("CARGO_PKG_VERSION")
        );
        for doc in self.documents()? {
            let _ = write!(out, "---\n# {}\n", doc.describe());
            out.push_str(&serde_yaml_ng::to_string(&doc.value)?);
        }
        Ok(out)
    }

    /// `weft uninstall`'s output: the same objects, named only, in reverse order, for
    /// `kubectl delete -f -`. With `keep_crds`, the SMI CRDs (and so every TrafficSplit,
    /// TrafficTarget and route in the cluster) stay.
    pub fn uninstall_yaml(&self, keep_crds: bool) -> Result<String, InstallError> {
        let mut out = String::from(
            "# weft uninstall — delete with `kubectl delete -f -`. Deleting weft-system also deletes the\n\
             # CA Secret; the trust-bundle ConfigMaps the control plane wrote go with\n\
             # `kubectl delete configmap -A -l app.kubernetes.io/part-of=weft`.\n",
        );
        for doc in self.documents()?.iter().rev() {
            if keep_crds && doc.kind == "CustomResourceDefinition" {
                continue;
            }
            let _ = write!(
                out,
                "---\napiVersion: {}\nkind: {}\nmetadata:\n  name: {}\n",
                doc.api_version, doc.kind, doc.name
            );
            if let Some(ns) = &doc.namespace {
                let _ = writeln!(out, "  namespace: {ns}");
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests;
