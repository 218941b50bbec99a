//! TrafficSplit resolution: which split governs which root service, which of
//! its backends can take traffic on a port, and the status each split earns.

use std::collections::BTreeMap;

use crate::model::{Key, MeshState, ServicePort, TrafficSplit, resolve_endpoints};

use super::names;

/// What weft made of one TrafficSplit, for its status.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct SplitStatus {
    /// The split governs its root service.
    pub accepted: bool,
    /// An older split for the same root that wins over this one.
    pub conflict_with: Option<Key>,
    /// Why backends were left out or why the split is not applied, one line each.
    pub reasons: Vec<String>,
}

/// The winning split per root service, and every split's status.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct SplitTable {
    /// Root service -> the split that governs it (the oldest).
    pub by_root: BTreeMap<Key, Key>,
    /// Status per split.
    pub status: BTreeMap<Key, SplitStatus>,
}

impl SplitTable {
    /// Decides, for every root service, which split applies: the oldest one
    /// (by creation time, then by first sight), the others are in conflict.
    pub fn build(state: &MeshState) -> Self {
        let mut table = SplitTable::default();
        let mut by_root: BTreeMap<Key, Vec<&TrafficSplit>> = BTreeMap::new();
        for split in state.traffic_splits.values() {
            let root = Key::new(&split.key.namespace, &split.root_service);
            by_root.entry(root).or_default().push(split);
        }
        for (root, mut splits) in by_root {
            splits.sort_by_key(|s| {
                (
                    s.created.is_none(),
                    s.created.clone(),
                    state.split_first_seen.get(&s.key).copied().unwrap_or(u64::MAX),
                    s.key.name.clone(),
                )
            });
            let winner = splits[0];
            for (i, split) in splits.iter().enumerate() {
                let mut status = SplitStatus::default();
                if i > 0 {
                    status.conflict_with = Some(winner.key.clone());
                    status.reasons.push(format!("conflicts with the older TrafficSplit {}", winner.key));
                } else if !state.services.contains_key(&root) {
                    status.reasons.push(format!("root service {root} does not exist"));
                } else {
                    status.accepted = true;
                }
                table.status.insert(split.key.clone(), status);
            }
            if state.services.contains_key(&root) {
                table.by_root.insert(root, winner.key.clone());
            }
        }
        // Backend reasons, computed once per root port so status matches routing.
        let roots: Vec<(Key, Key)> = table.by_root.iter().map(|(r, s)| (r.clone(), s.clone())).collect();
        for (root, split_key) in roots {
            let (Some(svc), Some(split)) = (state.services.get(&root), state.traffic_splits.get(&split_key))
            else {
                continue;
            };
            let mut reasons = Vec::new();
            for port in &svc.ports {
                weighted_backends(state, split, port, &mut reasons);
            }
            if let Some(status) = table.status.get_mut(&split_key) {
                for r in reasons {
                    if !status.reasons.contains(&r) {
                        status.reasons.push(r);
                    }
                }
            }
        }
        table
    }
}

/// The clusters and relative weights a split sends a root port's traffic to.
/// Backends that do not exist, lack the port, have no ready endpoints or weigh
/// nothing are left out (their share goes to the others in proportion); each
/// omission adds a line to `reasons`. Weights fit Envoy's `u32`.
pub(crate) fn weighted_backends(
    state: &MeshState,
    split: &TrafficSplit,
    root_port: &ServicePort,
    reasons: &mut Vec<String>,
) -> Vec<(String, u32)> {
    let ns = &split.key.namespace;
    let mut out: Vec<(String, u64)> = Vec::new();
    for backend in &split.backends {
        let key = Key::new(ns, &backend.service);
        let Some(svc) = state.services.get(&key) else {
            reasons.push(format!("backend {} does not exist; left out", backend.service));
            continue;
        };
        let port = svc
            .ports
            .iter()
            .find(|p| p.name.is_some() && p.name == root_port.name)
            .or_else(|| svc.ports.iter().find(|p| p.port == root_port.port))
            .or_else(|| if svc.ports.len() == 1 { svc.ports.first() } else { None });
        let Some(port) = port else {
            reasons.push(format!(
                "backend {} has no port matching {}; left out",
                backend.service, root_port.port
            ));
            continue;
        };
        if resolve_endpoints(state, svc, port).is_empty() {
            reasons.push(format!("backend {} has no ready endpoints; left out", backend.service));
            continue;
        }
        if backend.weight_milli == 0 {
            continue;
        }
        out.push((names::outbound_cluster(&key, port.port), backend.weight_milli));
    }
    // Weights are relative: scale them down together if their sum exceeds u32
    // (Envoy refuses a larger total).
    let sum: u64 = out.iter().map(|(_, w)| *w).fold(0, u64::saturating_add);
    let divisor = sum.div_ceil(u64::from(u32::MAX)).max(1);
    out.into_iter().map(|(c, w)| (c, u32::try_from((w / divisor).max(1)).unwrap_or(u32::MAX))).collect()
}
