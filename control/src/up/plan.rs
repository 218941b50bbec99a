//! What `weft up` runs: one workload per Pod that has an IP and a container port,
//! each with its demo app and, when meshed, a proxy of the chosen kind.

use std::net::{IpAddr, SocketAddr};

use crate::model::{Key, Kind, MeshState};
use crate::source::ManifestDir;

use super::UpError;

/// The pod annotation that tells the demo app which service to call (`host:port`,
/// e.g. `payment-svc.payments:8080`) before it answers.
pub const DEMO_CALLS_ANNOTATION: &str = "weft.io/demo-calls";

/// Which proxy runs next to each meshed workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProxyMode {
    /// weft-proxy everywhere.
    Weft,
    /// Stock Envoy everywhere.
    Envoy,
    /// weft-proxy and Envoy in turn, workload by workload (in namespace/name order).
    Mixed,
}

/// The proxy one workload runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyKind {
    /// weft-proxy.
    Weft,
    /// Stock Envoy.
    Envoy,
}

impl ProxyKind {
    /// `weft` or `envoy`.
    pub fn as_str(self) -> &'static str {
        match self {
            ProxyKind::Weft => "weft",
            ProxyKind::Envoy => "envoy",
        }
    }

    /// `weft-proxy` or `Envoy`, for messages.
    pub fn program(self) -> &'static str {
        match self {
            ProxyKind::Weft => "weft-proxy",
            ProxyKind::Envoy => "Envoy",
        }
    }
}

/// One workload: a pod's demo app and its proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workload {
    /// The pod; its name is the workload's name.
    pub key: Key,
    /// The pod IP: the demo app and the proxy listen there.
    pub ip: IpAddr,
    /// The pod's first container port: the demo app's port.
    pub app_port: u16,
    /// The pod's ServiceAccount.
    pub service_account: String,
    /// The `app` label, if any.
    pub app_label: Option<String>,
    /// The proxy, for meshed pods.
    pub proxy: Option<ProxyKind>,
    /// What the demo app calls through its proxy ([`DEMO_CALLS_ANNOTATION`]).
    pub calls: Option<String>,
}

impl Workload {
    /// The demo app's address.
    pub fn app_addr(&self) -> SocketAddr {
        SocketAddr::new(self.ip, self.app_port)
    }

    /// The workload's name (its pod's).
    pub fn name(&self) -> &str {
        &self.key.name
    }
}

/// Every workload to run, in namespace/name order, and the pods left out (with why).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// The workloads.
    pub workloads: Vec<Workload>,
    /// One line per pod that is not run.
    pub skipped: Vec<String>,
}

impl Plan {
    /// Plans the workloads of `state`; `calls` gives a pod's [`DEMO_CALLS_ANNOTATION`].
    pub fn build(state: &MeshState, mode: ProxyMode, calls: impl Fn(&Key) -> Option<String>) -> Plan {
        let mut plan = Plan::default();
        let mut meshed = 0usize;
        for pod in state.pods.values() {
            let Some(ip) = pod.ip else {
                plan.skipped.push(format!("pod {} has no status.podIP", pod.key));
                continue;
            };
            let Some(port) = pod.ports.first() else {
                plan.skipped.push(format!("pod {} declares no container port", pod.key));
                continue;
            };
            let proxy = state.is_meshed(pod).then(|| {
                meshed += 1;
                match mode {
                    ProxyMode::Weft => ProxyKind::Weft,
                    ProxyMode::Envoy => ProxyKind::Envoy,
                    ProxyMode::Mixed if meshed % 2 == 1 => ProxyKind::Weft,
                    ProxyMode::Mixed => ProxyKind::Envoy,
                }
            });
            plan.workloads.push(Workload {
                key: pod.key.clone(),
                ip,
                app_port: port.port,
                service_account: pod.service_account.clone(),
                app_label: pod.labels.get("app").cloned(),
                proxy,
                calls: calls(&pod.key),
            });
        }
        plan
    }

    /// The entry workload: the pod named `entry`, else the first labelled `app: <entry>`.
    pub fn entry(&self, entry: &str) -> Result<usize, UpError> {
        self.workloads
            .iter()
            .position(|w| w.name() == entry)
            .or_else(|| self.workloads.iter().position(|w| w.app_label.as_deref() == Some(entry)))
            .ok_or_else(|| UpError::Entry {
                entry: entry.to_owned(),
                workloads: self.workloads.iter().map(|w| w.name().to_owned()).collect(),
            })
    }

    /// Whether any workload runs `kind`.
    pub fn uses(&self, kind: ProxyKind) -> bool {
        self.workloads.iter().any(|w| w.proxy == Some(kind))
    }
}

/// A pod's [`DEMO_CALLS_ANNOTATION`], read from the file the directory loaded it from
/// (the model keeps no annotations). Unreadable files and odd documents give `None`.
pub fn demo_calls(dir: &ManifestDir, key: &Key) -> Option<String> {
    let (path, _) = dir.origin(Kind::Pod, key)?;
    let text = std::fs::read_to_string(&path).ok()?;
    demo_calls_in(&text, key)
}

fn demo_calls_in(text: &str, key: &Key) -> Option<String> {
    use serde::Deserialize;
    for doc in serde_yaml_ng::Deserializer::from_str(text) {
        let Ok(value) = serde_yaml_ng::Value::deserialize(doc) else { continue };
        let meta = &value["metadata"];
        let namespace = meta["namespace"].as_str().unwrap_or("default");
        if value["kind"].as_str() == Some("Pod")
            && meta["name"].as_str() == Some(key.name.as_str())
            && namespace == key.namespace
        {
            return meta["annotations"][DEMO_CALLS_ANNOTATION].as_str().map(str::to_owned);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/payments");

    fn payments(mode: ProxyMode) -> Plan {
        let mut dir = ManifestDir::new(DIR);
        let report = dir.load();
        Plan::build(&report.state, mode, |k| demo_calls(&dir, k))
    }

    #[test]
    fn payments_runs_four_meshed_workloads_that_call_down_the_chain() {
        let plan = payments(ProxyMode::Envoy);
        let names: Vec<&str> = plan.workloads.iter().map(Workload::name).collect();
        assert_eq!(names, ["fraud-detect", "frontend", "payment-v1", "payment-v2"]);
        assert!(plan.workloads.iter().all(|w| w.proxy == Some(ProxyKind::Envoy)));
        let calls: Vec<Option<&str>> = plan.workloads.iter().map(|w| w.calls.as_deref()).collect();
        assert_eq!(
            calls,
            [
                None,
                Some("payment-svc.payments:8080"),
                Some("fraud-detect.payments:8080"),
                Some("fraud-detect.payments:8080")
            ]
        );
        assert_eq!(plan.workloads[1].app_addr(), "127.0.10.1:8080".parse().unwrap());
        assert!(plan.skipped.is_empty());
    }

    #[test]
    fn mixed_alternates_weft_and_envoy() {
        let kinds: Vec<_> = payments(ProxyMode::Mixed).workloads.iter().map(|w| w.proxy).collect();
        use ProxyKind::{Envoy, Weft};
        assert_eq!(kinds, [Some(Weft), Some(Envoy), Some(Weft), Some(Envoy)]);
    }

    #[test]
    fn entry_is_a_pod_name_or_an_app_label() {
        let plan = payments(ProxyMode::Weft);
        assert_eq!(plan.entry("frontend").unwrap(), 1);
        assert_eq!(plan.entry("payment").unwrap(), 2, "the first pod labelled app: payment");
        let err = plan.entry("nope").unwrap_err().to_string();
        assert!(err.contains("nope") && err.contains("payment-v2"), "{err}");
    }

    #[test]
    fn unmeshed_pods_and_pods_without_ip_or_port() {
        let yaml = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: a\n  annotations:\n    weft.io/demo-calls: b:80\nspec:\n  containers:\n  - name: c\n    ports:\n    - containerPort: 80\nstatus:\n  podIP: 127.0.0.9\n---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: b\nspec:\n  containers:\n  - name: c\n---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: c\nspec:\n  containers:\n  - name: c\n    ports:\n    - containerPort: 80\n";
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pods.yaml"), yaml).unwrap();
        let mut src = ManifestDir::new(dir.path());
        let report = src.load();
        let plan = Plan::build(&report.state, ProxyMode::Weft, |k| demo_calls(&src, k));
        assert_eq!(plan.workloads.len(), 1);
        assert_eq!(plan.workloads[0].proxy, None, "no weft.io/inject: not meshed");
        assert_eq!(plan.workloads[0].calls.as_deref(), Some("b:80"));
        assert_eq!(plan.skipped.len(), 2, "{:?}", plan.skipped);
    }
}
