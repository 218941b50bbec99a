//! `weft check --pre` and `weft check --kubernetes`: what is wrong with a cluster, before and
//! after `weft install`, as a checklist with a fix for every failure.
//!
//! - [`pre_install`]: the API server answers, its version is supported, the user may create
//!   what `weft install` creates, the clocks agree, and weft is not installed already.
//! - [`installation`]: the CRDs, the control plane's replicas, the CA Secret and its expiry, the
//!   injector's caBundle, and every replica's connected proxies and whether they are in sync.
//!
//! Checks only read (SelfSubjectAccessReviews aside, which change nothing).

mod http_date;
mod installed;
mod pre;

use std::fmt::Write as _;
use std::path::PathBuf;

pub use http_date::parse_http_date;
pub use installed::installation;
pub use pre::{MIN_MINOR, pre_install};

/// How one check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Status {
    /// Fine.
    Ok,
    /// Works, but worth knowing.
    Warn,
    /// Will not work until fixed.
    Fail,
}

impl Status {
    fn tag(self) -> &'static str {
        match self {
            Status::Ok => "ok   ",
            Status::Warn => "WARN ",
            Status::Fail => "FAIL ",
        }
    }
}

/// One line of the checklist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// The group it belongs to ("Kubernetes API", "Permissions"...).
    pub group: &'static str,
    /// The outcome.
    pub status: Status,
    /// What was found.
    pub message: String,
    /// What to do about it (for warnings and failures).
    pub fix: Option<String>,
}

/// The outcome of a run of checks, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Checklist {
    /// Every check made.
    pub checks: Vec<Check>,
}

impl Checklist {
    fn push(&mut self, group: &'static str, status: Status, message: impl Into<String>, fix: Option<String>) {
        self.checks.push(Check { group, status, message: message.into(), fix });
    }

    fn ok(&mut self, group: &'static str, message: impl Into<String>) {
        self.push(group, Status::Ok, message, None);
    }

    fn warn(&mut self, group: &'static str, message: impl Into<String>, fix: impl Into<String>) {
        self.push(group, Status::Warn, message, Some(fix.into()));
    }

    fn fail(&mut self, group: &'static str, message: impl Into<String>, fix: impl Into<String>) {
        self.push(group, Status::Fail, message, Some(fix.into()));
    }

    /// How many checks failed.
    pub fn failures(&self) -> usize {
        self.checks.iter().filter(|c| c.status == Status::Fail).count()
    }

    /// How many checks warned.
    pub fn warnings(&self) -> usize {
        self.checks.iter().filter(|c| c.status == Status::Warn).count()
    }

    /// The first check whose message contains `text` (for tests and callers that branch).
    pub fn find(&self, text: &str) -> Option<&Check> {
        self.checks.iter().find(|c| c.message.contains(text))
    }

    /// The checklist as text: a heading per group, a line per check, the fix under each
    /// warning or failure, and a summary line.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut group = "";
        for c in &self.checks {
            if c.group != group {
                group = c.group;
                let _ = writeln!(out, "{}{group}", if out.is_empty() { "" } else { "\n" });
            }
            let _ = writeln!(out, "  {} {}", c.status.tag(), c.message);
            if let Some(fix) = &c.fix {
                for (i, line) in fix.lines().enumerate() {
                    let _ = writeln!(out, "        {}{line}", if i == 0 { "fix: " } else { "     " });
                }
            }
        }
        let verdict = match (self.failures(), self.warnings()) {
            (0, 0) => "all checks passed".to_string(),
            (0, w) => format!("all checks passed, {w} warning{}", plural(w)),
            (f, w) => format!("{f} check{} failed, {w} warning{}", plural(f), plural(w)),
        };
        let _ = writeln!(out, "\n{verdict}");
        out
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// Which cluster to talk to: the current kubeconfig context unless told otherwise.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ClusterArgs {
    /// The kubeconfig file [default: $KUBECONFIG, else ~/.kube/config, else the in-cluster config].
    #[arg(long, env = "WEFT_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context [default: the current context].
    #[arg(long, env = "WEFT_KUBE_CONTEXT")]
    pub context: Option<String>,
}

/// The Kubernetes side of `weft check`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct KubeCheckArgs {
    /// Check that weft can be installed on the cluster (API, version, permissions, clocks,
    /// no installation yet) instead of checking a running control plane.
    #[arg(long, env = "WEFT_CHECK_PRE", conflicts_with = "kubernetes", value_parser = clap::builder::BoolishValueParser::new())]
    pub pre: bool,
    /// Check the installation in the cluster (CRDs, control plane replicas, CA Secret, injector,
    /// every replica's proxies) instead of one control plane's admin API.
    #[arg(long, env = "WEFT_CHECK_KUBERNETES", value_parser = clap::builder::BoolishValueParser::new())]
    pub kubernetes: bool,
    /// Which cluster.
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

impl KubeCheckArgs {
    /// Whether a Kubernetes check was asked for.
    pub fn wanted(&self) -> bool {
        self.pre || self.kubernetes
    }

    /// Runs the check asked for. A cluster that cannot be reached is a failed check, not an
    /// error; only a kubeconfig that cannot be used is.
    pub async fn run(&self) -> Result<Checklist, ClientError> {
        let client = self.cluster.client().await?;
        Ok(if self.pre { pre_install(&client).await } else { installation(&client).await })
    }
}

/// Why no client could be made.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The kubeconfig could not be read or used.
    #[error("kubeconfig: {0}")]
    Kubeconfig(String),
    /// The client could not be built from it.
    #[error("Kubernetes client: {0}")]
    Client(#[from] kube::Error),
}

impl ClusterArgs {
    /// A client for the chosen cluster.
    pub async fn client(&self) -> Result<kube::Client, ClientError> {
        let options = kube::config::KubeConfigOptions { context: self.context.clone(), ..Default::default() };
        let unusable = |e: &dyn std::fmt::Display| ClientError::Kubeconfig(e.to_string());
        let config = match (&self.kubeconfig, &self.context) {
            (Some(path), _) => {
                let kubeconfig = kube::config::Kubeconfig::read_from(path)
                    .map_err(|e| ClientError::Kubeconfig(format!("{}: {e}", path.display())))?;
                kube::Config::from_custom_kubeconfig(kubeconfig, &options).await.map_err(|e| unusable(&e))?
            }
            (None, Some(_)) => kube::Config::from_kubeconfig(&options).await.map_err(|e| unusable(&e))?,
            (None, None) => kube::Config::infer().await.map_err(|e| unusable(&e))?,
        };
        Ok(kube::Client::try_from(config)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checklist_groups_lines_shows_fixes_and_counts() {
        let mut list = Checklist::default();
        list.ok("Kubernetes API", "the API server answers");
        list.fail("Permissions", "cannot create namespaces", "ask an admin\nor use another context");
        list.warn("Permissions", "cannot read CRDs", "grant get on customresourcedefinitions");
        let text = list.render();
        assert_eq!(
            text,
            "Kubernetes API\n  ok    the API server answers\n\nPermissions\n  FAIL  cannot create namespaces\n\
             \x20       fix: ask an admin\n             or use another context\n  WARN  cannot read CRDs\n\
             \x20       fix: grant get on customresourcedefinitions\n\n1 check failed, 1 warning\n"
        );
        assert_eq!((list.failures(), list.warnings()), (1, 1));
    }
}
