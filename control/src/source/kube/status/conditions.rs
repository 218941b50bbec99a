//! What status each TrafficSplit and TrafficTarget earns: pure functions of the load
//! report, the split table and the proxies' NACKs.
//!
//! `Accepted` says whether weft applies the object, and why parts of it are left out;
//! `Programmed` says whether the proxies took the configuration it became.

use std::collections::BTreeMap;

use crate::model::{Key, Kind, MeshState};
use crate::source::LoadReport;
use crate::source::manifest::ManifestError;
use crate::translate::{SplitTable, names};

/// A proxy currently rejecting a configuration, as the control plane saw its last NACK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NackInfo {
    /// The proxy (`node.id`).
    pub proxy: String,
    /// Its workload's namespace.
    pub namespace: String,
    /// Its workload's ServiceAccount.
    pub service_account: String,
    /// `error_detail.message` of the NACK.
    pub detail: String,
    /// The resources of the rejected response (cluster, listener and route names).
    pub resources: Vec<String>,
}

/// One condition as weft wants it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    /// `Accepted` or `Programmed`.
    pub type_: &'static str,
    /// `True` or `False`.
    pub status: bool,
    /// A CamelCase reason.
    pub reason: &'static str,
    /// What a person reads.
    pub message: String,
}

impl Desired {
    fn new(type_: &'static str, status: bool, reason: &'static str, message: impl Into<String>) -> Self {
        Self { type_, status, reason, message: message.into() }
    }
}

/// The conditions of every TrafficSplit and TrafficTarget in `objects` (which includes
/// objects refused with no valid version, absent from the state).
pub fn desired_conditions<'a>(
    report: &LoadReport,
    objects: impl IntoIterator<Item = &'a (Kind, Key)>,
    nacks: &[NackInfo],
) -> BTreeMap<(Kind, Key), [Desired; 2]> {
    let table = SplitTable::build(&report.state);
    let mut out = BTreeMap::new();
    for id in objects {
        let conditions = match id.0 {
            Kind::TrafficSplit => split_conditions(&id.1, report, &table, nacks),
            Kind::TrafficTarget => target_conditions(&id.1, report, nacks),
            _ => continue,
        };
        out.insert(id.clone(), conditions);
    }
    out
}

/// The error the report holds for an object, if it was refused.
fn refusal<'a>(report: &'a LoadReport, kind: Kind, key: &Key) -> Option<&'a ManifestError> {
    let name = key.to_string();
    report
        .errors
        .iter()
        .find(|e| e.kind.as_deref() == Some(kind.as_str()) && e.object.as_deref() == Some(&name))
}

fn refused(kind: Kind, error: &ManifestError, kept: bool) -> Desired {
    let reason = if kind == Kind::TrafficSplit && error.field.contains("weight") {
        "InvalidWeight"
    } else {
        "Invalid"
    };
    let mut message = if error.field.is_empty() {
        error.reason.clone()
    } else {
        format!("{}: {}", error.field, error.reason)
    };
    message.push_str(if kept { "; the last valid version stays applied" } else { "; not applied" });
    Desired::new("Accepted", false, reason, message)
}

/// `Accepted` and `Programmed` of one TrafficSplit.
pub fn split_conditions(
    key: &Key,
    report: &LoadReport,
    table: &SplitTable,
    nacks: &[NackInfo],
) -> [Desired; 2] {
    let state = &report.state;
    let in_state = state.traffic_splits.get(key);
    let status = table.status.get(key);
    let accepted = match (refusal(report, Kind::TrafficSplit, key), status) {
        (Some(error), _) => refused(Kind::TrafficSplit, error, in_state.is_some()),
        (None, Some(s)) if s.conflict_with.is_some() => {
            Desired::new("Accepted", false, "Conflicted", s.reasons.join("; "))
        }
        (None, Some(s)) if !s.accepted => {
            Desired::new("Accepted", false, "RootServiceNotFound", s.reasons.join("; "))
        }
        (None, Some(s)) if s.reasons.iter().any(|r| r.contains("does not exist")) => {
            Desired::new("Accepted", true, "BackendNotFound", s.reasons.join("; "))
        }
        (None, Some(s)) if !s.reasons.is_empty() => {
            Desired::new("Accepted", true, "BackendWithoutEndpoints", s.reasons.join("; "))
        }
        (None, _) => {
            let root = in_state.map(|s| s.root_service.as_str()).unwrap_or_default();
            Desired::new("Accepted", true, "Accepted", format!("splits traffic to {root}"))
        }
    };
    // What the proxies run: this split's (last valid) version, if it governs its root.
    let governs = in_state.is_some() && status.is_some_and(|s| s.accepted);
    let programmed = if !governs {
        Desired::new("Programmed", false, "NotAccepted", "not part of any proxy's configuration")
    } else {
        let clusters = in_state.map(|s| split_clusters(state, s)).unwrap_or_default();
        let concerned: Vec<&NackInfo> = nacks
            .iter()
            .filter(|n| clusters.iter().any(|c| n.resources.contains(c) || n.detail.contains(c.as_str())))
            .collect();
        nacked(&concerned)
    };
    [accepted, programmed]
}

/// The outbound clusters of a split's root and backends, on every port they have.
fn split_clusters(state: &MeshState, split: &crate::model::TrafficSplit) -> Vec<String> {
    let ns = &split.key.namespace;
    std::iter::once(&split.root_service)
        .chain(split.backends.iter().map(|b| &b.service))
        .filter_map(|name| state.services.get(&Key::new(ns, name)))
        .flat_map(|svc| svc.ports.iter().map(|p| names::outbound_cluster(&svc.key, p.port)))
        .collect()
}

/// `Programmed` from the NACKs that concern an object.
fn nacked(concerned: &[&NackInfo]) -> Desired {
    let mut proxies: Vec<&str> = concerned.iter().map(|n| n.proxy.as_str()).collect();
    proxies.sort_unstable();
    proxies.dedup();
    match concerned.iter().min_by(|a, b| a.proxy.cmp(&b.proxy)) {
        None => Desired::new("Programmed", true, "Programmed", "no proxy rejected its configuration"),
        Some(first) => Desired::new(
            "Programmed",
            false,
            "Nacked",
            format!(
                "NACKed by {} prox{}; first error ({}): {}",
                proxies.len(),
                if proxies.len() == 1 { "y" } else { "ies" },
                first.proxy,
                first.detail
            ),
        ),
    }
}

/// `Accepted` and `Programmed` of one TrafficTarget.
pub fn target_conditions(key: &Key, report: &LoadReport, nacks: &[NackInfo]) -> [Desired; 2] {
    let state = &report.state;
    let in_state = state.traffic_targets.get(key);
    let accepted = match (refusal(report, Kind::TrafficTarget, key), in_state) {
        (Some(error), _) => refused(Kind::TrafficTarget, error, in_state.is_some()),
        (None, Some(tt)) => {
            let missing: Vec<String> = tt
                .rules
                .iter()
                .filter(|r| {
                    let k = Key::new(&key.namespace, &r.name);
                    match r.kind {
                        Kind::HttpRouteGroup => !state.http_route_groups.contains_key(&k),
                        Kind::TcpRoute => !state.tcp_routes.contains_key(&k),
                        _ => false,
                    }
                })
                .map(|r| format!("{} {} does not exist; its rule allows nothing", r.kind, r.name))
                .collect();
            if missing.is_empty() {
                let d = &tt.destination;
                Desired::new(
                    "Accepted",
                    true,
                    "Accepted",
                    format!("authorizes traffic to {}/{}", d.namespace, d.name),
                )
            } else {
                Desired::new("Accepted", true, "RouteNotFound", missing.join("; "))
            }
        }
        (None, None) => Desired::new("Accepted", false, "Invalid", "not applied"),
    };
    let programmed = match in_state {
        None => Desired::new("Programmed", false, "NotAccepted", "not part of any proxy's configuration"),
        Some(tt) => {
            let d = &tt.destination;
            let concerned: Vec<&NackInfo> = nacks
                .iter()
                .filter(|n| n.namespace == d.namespace && n.service_account == d.name)
                .filter(|n| {
                    n.resources.iter().any(|r| r.starts_with(names::INBOUND))
                        || n.detail.contains(names::INBOUND)
                })
                .collect();
            nacked(&concerned)
        }
    };
    [accepted, programmed]
}

#[cfg(test)]
#[path = "conditions_tests.rs"]
mod tests;
