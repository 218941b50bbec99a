//! Identity flags of `weft control`, and `weft token`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::builder::BoolishValueParser;
use weft_control::identity::{self, SpiffeId, parse_duration};
use weft_control::server::IdentityConfig;
use weft_control::translate::{AuthzMode, MeshOptions};

/// Flags of `weft control` that decide how the mesh is secured.
#[derive(Debug, clap::Args)]
pub(crate) struct IdentityArgs {
    /// Directory of the mesh CA: root-cert.pem, root-key.pem (0600) and token-key (0600), made on
    /// the first start; add ca-cert.pem + ca-key.pem (an intermediate signed by the root) to sign
    /// with an intermediate, and extra-roots.pem to trust more roots during a root rotation.
    /// With --source kubernetes the CA is in a Secret instead (--ca-secret), and a root made at
    /// the first start passes through this directory on its way there.
    /// [default: $XDG_STATE_HOME/weft/ca, else $HOME/.local/state/weft/ca]
    #[arg(long, env = "WEFT_CA_DIR", verbatim_doc_comment)]
    ca_dir: Option<PathBuf>,
    /// SPIFFE trust domain of workload identities (spiffe://<trust-domain>/ns/<ns>/sa/<sa>).
    #[arg(long, env = "WEFT_TRUST_DOMAIN", default_value = "cluster.local")]
    trust_domain: String,
    /// Lifetime of workload certificates and of the control plane's own, e.g. 60s, 10m, 24h
    /// (renewed at 70 % of it).
    #[arg(long, env = "WEFT_CERT_LIFETIME", default_value = "24h", value_parser = parse_lifetime)]
    cert_lifetime: Duration,
    /// How TrafficTargets are enforced: `permissive` (a destination no TrafficTarget names accepts
    /// any meshed client) or `strict` (deny unless a TrafficTarget allows).
    #[arg(long, env = "WEFT_AUTHZ", default_value = "permissive", value_parser = ["permissive", "strict"])]
    authz: String,
    /// Serve xDS in plaintext, run no CA or identity service, and turn mesh mTLS off. For
    /// debugging only: anyone who can reach the xDS port can read the mesh's configuration.
    #[arg(long, env = "WEFT_INSECURE_PLAINTEXT", value_parser = BoolishValueParser::new())]
    insecure_plaintext: bool,
}

fn parse_lifetime(s: &str) -> Result<Duration, String> {
    parse_duration(s).map_err(|e| e.to_string())
}

/// `--ca-dir`, or the default state directory.
fn ca_dir_or_default(ca_dir: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    match ca_dir {
        Some(dir) => Ok(dir),
        None => identity::default_ca_dir()
            .context("no --ca-dir given and neither XDG_STATE_HOME nor HOME is set to an absolute path"),
    }
}

impl IdentityArgs {
    /// The mesh options and, unless `--insecure-plaintext`, the CA configuration. With
    /// `kubernetes` the CA directory is only scratch space, so without a default it is one
    /// under the system's temporary directory.
    pub(crate) fn into_config(
        self,
        kubernetes: bool,
    ) -> anyhow::Result<(MeshOptions, Option<IdentityConfig>)> {
        let authz: AuthzMode = self.authz.parse().map_err(anyhow::Error::msg)?;
        weft_xds_protos::spiffe::validate_trust_domain(self.trust_domain.clone())
            .context("--trust-domain")?;
        let mesh = MeshOptions {
            mtls: !self.insecure_plaintext,
            authz,
            trust_domain: self.trust_domain,
            tracing: None,
        };
        if self.insecure_plaintext {
            return Ok((mesh, None));
        }
        let ca_dir = match (kubernetes, self.ca_dir) {
            (true, None) => {
                identity::default_ca_dir().unwrap_or_else(|| std::env::temp_dir().join("weft-ca"))
            }
            (_, ca_dir) => ca_dir_or_default(ca_dir)?,
        };
        Ok((mesh, Some(IdentityConfig { ca_dir, cert_lifetime: self.cert_lifetime })))
    }
}

/// Arguments of `weft token`.
#[derive(Debug, clap::Args)]
pub(crate) struct TokenArgs {
    /// The control plane's CA directory (its token-key signs the token; created if missing).
    /// [default: $XDG_STATE_HOME/weft/ca, else $HOME/.local/state/weft/ca]
    #[arg(long, env = "WEFT_CA_DIR", verbatim_doc_comment)]
    ca_dir: Option<PathBuf>,
    /// The workload's namespace.
    #[arg(long, env = "WEFT_NAMESPACE")]
    namespace: String,
    /// The workload's ServiceAccount.
    #[arg(long, env = "WEFT_SERVICE_ACCOUNT")]
    service_account: String,
    /// SPIFFE trust domain (as given to `weft control`).
    #[arg(long, env = "WEFT_TRUST_DOMAIN", default_value = "cluster.local")]
    trust_domain: String,
}

/// `weft token`: prints the workload's token on standard output.
pub(crate) fn token(args: &TokenArgs) -> anyhow::Result<ExitCode> {
    let ca_dir = ca_dir_or_default(args.ca_dir.clone())?;
    let id =
        SpiffeId::new(args.trust_domain.as_str(), args.namespace.as_str(), args.service_account.as_str())?;
    let had_key = ca_dir.join(identity::token::TOKEN_KEY_FILE).exists();
    let token = identity::token_for(&ca_dir, &id)?;
    if !had_key {
        eprintln!(
            "note: created a new token key in {}; only a control plane using this --ca-dir accepts the token",
            ca_dir.display()
        );
    }
    println!("{token}");
    Ok(ExitCode::SUCCESS)
}
