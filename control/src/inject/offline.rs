//! `weft inject -f FILE`: the webhook's mutation applied to YAML on disk, for users who review
//! or commit what they apply.
//!
//! Pods and the pod templates of Deployments, StatefulSets, DaemonSets, ReplicaSets, Jobs and
//! CronJobs (also inside a `List`) are injected unless they opt out; every other document passes
//! through unchanged. The mutation is computed on JSON, exactly as the webhook does, and its
//! JSONPatch applied to the YAML document, so the rest of the document keeps its key order.

use json_patch::PatchOperation;
use serde_yaml_ng::Value as Yaml;

use super::pod::{self, Outcome};
use super::{InjectConfig, InjectError};

/// What happened to one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// `kind/name`, e.g. `deployment/web`.
    pub object: String,
    /// What was done.
    pub result: Result<Outcome, InjectError>,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.result {
            Ok(Outcome::Injected { warnings }) => {
                write!(f, "{} injected", self.object)?;
                for w in warnings {
                    write!(f, "\n  warning: {w}")?;
                }
                Ok(())
            }
            Ok(Outcome::AlreadyInjected) => write!(f, "{} already injected, unchanged", self.object),
            Ok(Outcome::Skipped(reason)) => write!(f, "{} skipped: {reason}", self.object),
            Err(e) => write!(f, "{} not injected: {e}", self.object),
        }
    }
}

/// Why the input could not be processed at all.
#[derive(Debug, thiserror::Error)]
pub enum OfflineError {
    /// The input is not YAML.
    #[error("reading the YAML: {0}")]
    Yaml(#[from] serde_yaml_ng::Error),
}

/// Where a kind keeps its pod template.
fn template_path(kind: &str) -> Option<&'static [&'static str]> {
    match kind {
        "Pod" => Some(&[]),
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" => Some(&["spec", "template"]),
        "CronJob" => Some(&["spec", "jobTemplate", "spec", "template"]),
        _ => None,
    }
}

/// Injects every pod (template) in `text`, a multi-document YAML stream; returns the new stream
/// and a report per pod-bearing object.
pub fn inject_yaml(text: &str, cfg: &InjectConfig) -> Result<(String, Vec<Report>), OfflineError> {
    let mut out = String::new();
    let mut reports = Vec::new();
    for de in serde_yaml_ng::Deserializer::from_str(text) {
        let mut doc: Yaml = serde::Deserialize::deserialize(de)?;
        if doc.is_null() {
            continue;
        }
        inject_document(&mut doc, cfg, &mut reports);
        out.push_str("---\n");
        out.push_str(&serde_yaml_ng::to_string(&doc)?);
    }
    Ok((out, reports))
}

fn inject_document(doc: &mut Yaml, cfg: &InjectConfig, reports: &mut Vec<Report>) {
    let kind = doc.get("kind").and_then(Yaml::as_str).unwrap_or_default().to_string();
    if kind == "List" {
        if let Some(items) = doc.get_mut("items").and_then(Yaml::as_sequence_mut) {
            for item in items {
                inject_document(item, cfg, reports);
            }
        }
        return;
    }
    let Some(path) = template_path(&kind) else { return };
    let name = doc.get("metadata").and_then(|m| m.get("name")).and_then(Yaml::as_str).unwrap_or("<unnamed>");
    let object = format!("{}/{name}", kind.to_ascii_lowercase());
    let mut template = &mut *doc;
    for key in path {
        match template.get_mut(*key) {
            Some(next) => template = next,
            None => {
                let e = InjectError::Malformed(format!("{kind} has no {}", path.join(".")));
                reports.push(Report { object, result: Err(e) });
                return;
            }
        }
    }
    let result = inject_template(template, cfg, kind == "Job" || kind == "CronJob");
    reports.push(Report { object, result });
}

/// Injects one pod template in place.
fn inject_template(template: &mut Yaml, cfg: &InjectConfig, is_job: bool) -> Result<Outcome, InjectError> {
    let original = serde_json::to_value(&*template)
        .map_err(|e| InjectError::Malformed(format!("not plain YAML: {e}")))?;
    let mut json = original.clone();
    let outcome = pod::inject(&mut json, None, cfg, is_job)?;
    if matches!(outcome, Outcome::Injected { .. }) {
        for op in json_patch::diff(&original, &json).0 {
            apply(template, &op).map_err(InjectError::Malformed)?;
        }
    }
    Ok(outcome)
}

/// Applies one operation of a diff (add, replace or remove) to a YAML value.
fn apply(doc: &mut Yaml, op: &PatchOperation) -> Result<(), String> {
    let path = op.path();
    let Some((parent_path, last)) = path.split_back() else {
        // The whole document: only a replace makes sense.
        if let PatchOperation::Replace(r) = op {
            *doc = to_yaml(&r.value)?;
        }
        return Ok(());
    };
    let mut parent = &mut *doc;
    for token in parent_path.tokens() {
        let key = token.decoded();
        parent = match parent {
            Yaml::Mapping(m) => m.get_mut(key.as_ref()),
            Yaml::Sequence(s) => key.parse::<usize>().ok().and_then(|i| s.get_mut(i)),
            _ => None,
        }
        .ok_or_else(|| format!("patch path {path} does not exist"))?;
    }
    let key = last.decoded();
    match (op, parent) {
        (PatchOperation::Add(a), Yaml::Mapping(m)) => {
            m.insert(Yaml::String(key.into_owned()), to_yaml(&a.value)?);
        }
        (PatchOperation::Replace(r), Yaml::Mapping(m)) => {
            m.insert(Yaml::String(key.into_owned()), to_yaml(&r.value)?);
        }
        (PatchOperation::Remove(_), Yaml::Mapping(m)) => {
            m.remove(key.as_ref());
        }
        (PatchOperation::Add(a), Yaml::Sequence(s)) => {
            let value = to_yaml(&a.value)?;
            if key == "-" {
                s.push(value);
            } else {
                let i = index(&key, s.len() + 1)?;
                s.insert(i, value);
            }
        }
        (PatchOperation::Replace(r), Yaml::Sequence(s)) => {
            let i = index(&key, s.len())?;
            s[i] = to_yaml(&r.value)?;
        }
        (PatchOperation::Remove(_), Yaml::Sequence(s)) => {
            let i = index(&key, s.len())?;
            s.remove(i);
        }
        (op, _) => return Err(format!("cannot apply {op:?} at {path}")),
    }
    Ok(())
}

fn index(key: &str, bound: usize) -> Result<usize, String> {
    key.parse::<usize>().ok().filter(|i| *i < bound).ok_or_else(|| format!("bad list index {key:?}"))
}

fn to_yaml(value: &serde_json::Value) -> Result<Yaml, String> {
    serde_yaml_ng::to_value(value).map_err(|e| e.to_string())
}
