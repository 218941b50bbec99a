//! Status back on the user's objects: `Accepted` and `Programmed` conditions on every
//! TrafficSplit and TrafficTarget, and an Event (events.k8s.io/v1) whenever a condition's
//! status or reason changes. Only the replica holding the [`lease`](super::lease) writes.
//!
//! Conditions go in with a JSON merge patch on the `status` subresource; on a CRD without
//! one (404), on the object itself, then without `observedGeneration` (on such a CRD every
//! write bumps the generation, which would never settle).

mod conditions;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use ::kube::api::{Api, Patch, PatchParams};
use ::kube::core::DynamicObject;
use ::kube::runtime::events::{Event, EventType, Recorder, Reporter};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};
use tokio::sync::watch;
use tracing::{debug, info, warn};

pub use conditions::{Desired, NackInfo, desired_conditions, split_conditions, target_conditions};

use super::state::{ObjectIndex, ObjectRef};
use crate::model::{Key, Kind};
use crate::source::LoadReport;

/// The field manager and event reporter name.
pub const FIELD_MANAGER: &str = "weft";

/// Writes status from the leader replica.
pub struct StatusWriter {
    client: ::kube::Client,
    recorder: Recorder,
    /// Resources (`group/plural`) found to have no status subresource.
    no_status_subresource: HashSet<String>,
    /// What was last written per object, and at which resourceVersion it was seen then.
    written: HashMap<(Kind, Key), (Option<String>, Value)>,
}

impl std::fmt::Debug for StatusWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatusWriter").field("written", &self.written.len()).finish_non_exhaustive()
    }
}

impl StatusWriter {
    /// A writer reporting Events as controller `weft`, instance `identity` (the pod name).
    pub fn new(client: ::kube::Client, identity: &str) -> Self {
        let reporter = Reporter { controller: FIELD_MANAGER.into(), instance: Some(identity.into()) };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            no_status_subresource: HashSet::new(),
            written: HashMap::new(),
        }
    }

    /// Writes status whenever the report, the objects, the NACKs or leadership change, while
    /// this replica leads. Returns when the source or the election stops.
    pub async fn run(
        mut self,
        mut reports: watch::Receiver<Arc<LoadReport>>,
        mut objects: watch::Receiver<Arc<ObjectIndex>>,
        mut nacks: watch::Receiver<Vec<NackInfo>>,
        mut leader: watch::Receiver<bool>,
    ) {
        let mut nacks_open = true;
        loop {
            let leading = *leader.borrow_and_update();
            let mut failed = 0;
            if leading {
                let report = reports.borrow_and_update().clone();
                let index = objects.borrow_and_update().clone();
                let current_nacks = nacks.borrow_and_update().clone();
                failed = self.sync(&report, &index, &current_nacks).await.failed;
            } else {
                // A new leader compares against the objects, not against what it once wrote.
                self.written.clear();
            }
            tokio::select! {
                r = reports.changed() => if r.is_err() { return },
                r = objects.changed() => if r.is_err() { return },
                r = leader.changed() => if r.is_err() { return },
                r = nacks.changed(), if nacks_open => nacks_open = r.is_ok(),
                _ = tokio::time::sleep(std::time::Duration::from_secs(5)), if failed > 0 => {}
            }
        }
    }

    /// Brings every object's conditions to what they should be; returns what it did.
    pub async fn sync(
        &mut self,
        report: &LoadReport,
        index: &ObjectIndex,
        nacks: &[NackInfo],
    ) -> SyncOutcome {
        let desired = desired_conditions(report, index.keys(), nacks);
        self.written.retain(|id, _| index.contains_key(id));
        let mut outcome = SyncOutcome::default();
        let now = Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
        for (id, conditions) in &desired {
            let Some(object) = index.get(id) else { continue };
            let resource = format!("{}/{}", object.api.group, object.api.plural);
            let with_generation = !self.no_status_subresource.contains(&resource);
            let wanted = status_json(conditions, object, with_generation, &now);
            let current = object.status.as_ref().and_then(|s| s.get("conditions"));
            if current == wanted.get("conditions") {
                continue;
            }
            if self.written.get(id) == Some(&(object.resource_version.clone(), wanted.clone())) {
                continue; // Written; the watch has not shown it yet.
            }
            match self.patch(id, object, &wanted, with_generation, &now, conditions).await {
                Ok(()) => {
                    outcome.patched += 1;
                    self.written.insert(id.clone(), (object.resource_version.clone(), wanted));
                    self.record_events(id, object, conditions).await;
                }
                Err(e) => {
                    outcome.failed += 1;
                    warn!(kind = %id.0, object = %id.1, error = %e, "could not write status");
                }
            }
        }
        outcome
    }

    async fn patch(
        &mut self,
        id: &(Kind, Key),
        object: &ObjectRef,
        wanted: &Value,
        with_generation: bool,
        now: &str,
        conditions: &[Desired; 2],
    ) -> Result<(), ::kube::Error> {
        let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), &id.1.namespace, &object.api);
        let params = PatchParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() };
        if with_generation {
            let body = json!({ "status": wanted });
            match api.patch_status(&id.1.name, &params, &Patch::Merge(&body)).await {
                Ok(_) => return Ok(()),
                Err(::kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        // No status subresource (or the object is gone, which the main resource tells).
        let body = json!({ "status": status_json(conditions, object, false, now) });
        api.patch(&id.1.name, &params, &Patch::Merge(&body)).await?;
        let resource = format!("{}/{}", object.api.group, object.api.plural);
        if self.no_status_subresource.insert(resource.clone()) {
            info!(%resource, "no status subresource; writing status on the object itself");
        }
        Ok(())
    }

    /// An Event for each condition whose status or reason changed.
    async fn record_events(&self, id: &(Kind, Key), object: &ObjectRef, conditions: &[Desired; 2]) {
        let reference = ObjectReference {
            api_version: Some(object.api.api_version.clone()),
            kind: Some(object.api.kind.clone()),
            name: Some(id.1.name.clone()),
            namespace: Some(id.1.namespace.clone()),
            uid: object.uid.clone(),
            ..Default::default()
        };
        for d in conditions {
            let before = current_condition(object, d.type_);
            let status = if d.status { "True" } else { "False" };
            if before.as_ref().is_some_and(|c| c["status"] == status && c["reason"] == d.reason) {
                continue;
            }
            let event = Event {
                type_: if d.status { EventType::Normal } else { EventType::Warning },
                reason: d.reason.to_string(),
                note: Some(truncate(&format!("{} {status}: {}", d.type_, d.message), 1024)),
                action: d.type_.to_string(),
                secondary: None,
            };
            match self.recorder.publish(&event, &reference).await {
                Ok(()) => debug!(kind = %id.0, object = %id.1, reason = d.reason, "event recorded"),
                Err(e) => warn!(kind = %id.0, object = %id.1, error = %e, "could not record an event"),
            }
        }
    }
}

/// What one [`StatusWriter::sync`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncOutcome {
    /// Objects whose status was written.
    pub patched: usize,
    /// Objects whose status could not be written (retried later).
    pub failed: usize,
}

fn current_condition(object: &ObjectRef, type_: &str) -> Option<Value> {
    object
        .status
        .as_ref()?
        .get("conditions")?
        .as_array()?
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(type_))
        .cloned()
}

/// The status to write: weft's conditions, a transition time kept while the condition's
/// status holds, and other writers' conditions left as they are.
fn status_json(conditions: &[Desired; 2], object: &ObjectRef, with_generation: bool, now: &str) -> Value {
    let mut out: Vec<Value> = Vec::new();
    for d in conditions {
        let status = if d.status { "True" } else { "False" };
        let since = current_condition(object, d.type_)
            .filter(|c| c["status"] == status)
            .and_then(|c| c.get("lastTransitionTime").cloned())
            .unwrap_or_else(|| Value::String(now.to_string()));
        let mut c = json!({
            "type": d.type_,
            "status": status,
            "reason": d.reason,
            "message": truncate(&d.message, 32 * 1024),
            "lastTransitionTime": since,
        });
        if let (true, Some(generation)) = (with_generation, object.generation) {
            c["observedGeneration"] = json!(generation);
        }
        out.push(c);
    }
    let others = object.status.as_ref().and_then(|s| s.get("conditions")).and_then(Value::as_array);
    for c in others.into_iter().flatten() {
        let theirs = c.get("type").and_then(Value::as_str);
        if !conditions.iter().any(|d| Some(d.type_) == theirs) {
            out.push(c.clone());
        }
    }
    json!({ "conditions": out })
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max.saturating_sub(3);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}
