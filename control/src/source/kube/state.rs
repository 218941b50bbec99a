//! Building the mesh state from the watchers' stores, with the manifest parser.
//!
//! Objects are parsed again only when their `resourceVersion` (or the version they are
//! read at) changes. A refused object keeps its last valid version in the state, as in
//! the manifest directory, until it is deleted.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use ::kube::core::{ApiResource, DynamicObject};
use serde_json::Value;

use super::convert::{self, View};
use crate::model::{Key, Kind, MeshState};
use crate::source::LoadReport;
use crate::source::assemble::SplitOrder;
use crate::source::manifest::{self, ManifestError, Object, Outcome};

/// What one watched kind holds now: per served version, its objects.
#[derive(Debug, Clone)]
pub(super) struct KindObjects {
    /// The kind.
    pub(super) kind: Kind,
    /// Per served version (oldest first), the store's objects.
    pub(super) versions: Vec<(ApiResource, Vec<Arc<DynamicObject>>)>,
}

/// Where a TrafficSplit or TrafficTarget lives in the API, for writing its status.
#[derive(Debug, Clone, PartialEq)]
pub struct ObjectRef {
    /// The resource at the version weft reads the object in.
    pub api: ApiResource,
    /// `metadata.uid`.
    pub uid: Option<String>,
    /// `metadata.resourceVersion`.
    pub resource_version: Option<String>,
    /// `metadata.generation`.
    pub generation: Option<i64>,
    /// `status`, as the API server has it now.
    pub status: Option<Value>,
}

/// The TrafficSplits and TrafficTargets in the cluster, whether valid or not.
pub type ObjectIndex = BTreeMap<(Kind, Key), ObjectRef>;

/// What the parser made of one object at one resourceVersion.
#[derive(Debug, Clone)]
struct Parsed {
    api_version: String,
    resource_version: Option<String>,
    outcome: ParsedOutcome,
}

#[derive(Debug, Clone)]
enum ParsedOutcome {
    Valid(Object),
    Invalid(ManifestError),
    Skipped,
}

/// Turns store contents into load reports; owned by the source's task.
#[derive(Debug, Default)]
pub(super) struct StateBuilder {
    parsed: HashMap<(Kind, Key), Parsed>,
    last_valid: BTreeMap<(Kind, Key), Object>,
    split_order: SplitOrder,
    last: Option<(MeshState, Vec<ManifestError>)>,
}

impl StateBuilder {
    /// Builds the report (with `changed` against the previous build) and the index of
    /// the objects whose status weft writes.
    pub(super) fn build(&mut self, kinds: &[KindObjects]) -> (LoadReport, ObjectIndex) {
        let mut objects: BTreeMap<(Kind, Key), Object> = BTreeMap::new();
        let mut errors: Vec<((Kind, Key), ManifestError)> = Vec::new();
        let mut index = ObjectIndex::new();
        let mut seen: HashMap<(Kind, Key), Parsed> = HashMap::new();
        let mut created: BTreeMap<Key, Option<String>> = BTreeMap::new();

        for kind_objects in kinds {
            let kind = kind_objects.kind;
            for (key, views) in group_views(kind, kind_objects) {
                let Some(view) = convert::choose(&views) else { continue };
                let id = (kind, key);
                let parsed = self.parse(&id, view);
                if matches!(kind, Kind::TrafficSplit | Kind::TrafficTarget) {
                    index.insert(id.clone(), object_ref(view));
                }
                if kind == Kind::TrafficSplit {
                    let ts = view.object.metadata.creation_timestamp.as_ref().map(|t| t.0.to_string());
                    created.insert(id.1.clone(), ts);
                }
                match &parsed.outcome {
                    ParsedOutcome::Valid(object) => {
                        objects.insert(id.clone(), object.clone());
                    }
                    ParsedOutcome::Invalid(error) => {
                        errors.push((id.clone(), error.clone()));
                        if let Some(prev) = self.last_valid.get(&id) {
                            objects.insert(id.clone(), prev.clone());
                        }
                    }
                    ParsedOutcome::Skipped => {}
                }
                seen.insert(id, parsed);
            }
        }
        // Deleted objects are forgotten, with their last valid version.
        self.parsed = seen;
        self.last_valid = objects.clone();

        let state = self.state_of(objects, &created);
        errors.sort_by(|a, b| a.0.cmp(&b.0));
        let errors: Vec<ManifestError> = errors.into_iter().map(|(_, e)| e).collect();
        let changed = self.last.as_ref() != Some(&(state.clone(), errors.clone()));
        self.last = Some((state.clone(), errors.clone()));
        (LoadReport { state: Arc::new(state), errors, changed }, index)
    }

    /// The parse of one object, from the cache when neither it nor its version changed.
    fn parse(&self, id: &(Kind, Key), view: &View) -> Parsed {
        let resource_version = view.object.metadata.resource_version.clone();
        if let Some(cached) = self.parsed.get(id)
            && cached.api_version == view.api.api_version
            && cached.resource_version.is_some()
            && cached.resource_version == resource_version
        {
            return cached.clone();
        }
        let mut value = convert::to_value(&view.api, &view.object);
        let outcome = match (id.0, convert::prepare_service(&mut value)) {
            (Kind::Service, Err(why)) => {
                tracing::debug!(service = %id.1, "skipping {why}: weft proxies TCP only");
                ParsedOutcome::Skipped
            }
            _ => match manifest::parse_value("", &value) {
                Outcome::Parsed(object) => ParsedOutcome::Valid(object),
                Outcome::Invalid { error, .. } => ParsedOutcome::Invalid(error),
                Outcome::Empty | Outcome::Skipped { .. } => ParsedOutcome::Skipped,
            },
        };
        Parsed { api_version: view.api.api_version.clone(), resource_version, outcome }
    }

    /// The state of `objects`, numbering TrafficSplits in order of creation the first
    /// time each is seen (the split table's tie-break after creation time).
    fn state_of(
        &mut self,
        objects: BTreeMap<(Kind, Key), Object>,
        created: &BTreeMap<Key, Option<String>>,
    ) -> MeshState {
        let creation = |key: &Key| (created.get(key).cloned().flatten(), key.clone());
        self.split_order.state_of(objects.into_values(), creation)
    }
}

/// The views of each object of a kind across its served versions, by key.
fn group_views(kind: Kind, objects: &KindObjects) -> BTreeMap<Key, Vec<View>> {
    let mut out: BTreeMap<Key, Vec<View>> = BTreeMap::new();
    for (api, items) in &objects.versions {
        for object in items {
            let name = object.metadata.name.clone().unwrap_or_default();
            let key = if kind == Kind::Namespace {
                Key::new("", name)
            } else {
                Key::new(object.metadata.namespace.clone().unwrap_or_else(|| "default".into()), name)
            };
            out.entry(key).or_default().push(View { api: api.clone(), object: object.clone() });
        }
    }
    out
}

fn object_ref(view: &View) -> ObjectRef {
    let meta = &view.object.metadata;
    ObjectRef {
        api: view.api.clone(),
        uid: meta.uid.clone(),
        resource_version: meta.resource_version.clone(),
        generation: meta.generation,
        status: view.object.data.get("status").cloned(),
    }
}

#[cfg(test)]
mod tests;
