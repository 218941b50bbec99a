//! Delta (incremental) xDS: only changed resources are sent, removals named.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use tracing::{debug, warn};
use weft_xds_protos::envoy::config::core::v3::{ControlPlane, Node};
use weft_xds_protos::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, Resource,
};

use super::registry::{NackReport, ProxyReport, now_secs};
use super::stream::XdsProtocol;
use super::{known_type, short_type, wildcard_type};
use crate::cache::{ProxyView, REMOVAL_ORDER, Snapshot, TYPE_ORDER, TypeResources};
use crate::metrics::{Metrics, TypeLabel};

mod held;

use held::Held;

/// A resource change in a response in flight: name, the version the proxy had
/// before, the version sent (`None` for a removal).
type Change = (String, Option<String>, Option<String>);

/// Per-type Delta state on one stream.
#[derive(Debug, Default)]
struct TypeState {
    wildcard: bool,
    names: BTreeSet<String>,
    /// What the proxy has (or has been sent and not rejected), by name.
    client: Held,
    /// Responses not yet ACKed or NACKed, by nonce.
    pending: HashMap<String, Vec<Change>>,
    /// Versions the proxy rejected, by name: never sent to it again.
    nacked: HashMap<String, String>,
    /// Names subscribed that do not exist and that the proxy was already told about.
    told_absent: BTreeSet<String>,
}

impl TypeState {
    fn wants(&self, name: &str) -> bool {
        self.wildcard || self.names.contains(name)
    }
}

/// The Delta protocol for one stream.
#[derive(Debug)]
pub(crate) struct Delta {
    types: BTreeMap<&'static str, TypeState>,
    nonce: u64,
    metrics: Arc<Metrics>,
}

/// What to send for one type: updated resources and removed names.
#[derive(Debug, Default)]
struct Diff {
    updated: Vec<Resource>,
    removed: Vec<String>,
    changes: Vec<Change>,
    /// Once these changes are recorded the client holds exactly the view's map
    /// (everything wanted, nothing rejected, no removal left): it can be rebased on it.
    complete: bool,
}

impl Delta {
    pub(crate) fn new(metrics: Arc<Metrics>) -> Self {
        Delta { types: BTreeMap::new(), nonce: 0, metrics }
    }

    /// Resources the proxy should get (new or changed, not rejected) and, when
    /// `removals`, names it has that no longer exist or that it asked for and
    /// that do not exist.
    fn diff(state: &mut TypeState, all: Option<&TypeResources>, removals: bool) -> Diff {
        let empty = TypeResources::new();
        let all = all.unwrap_or(&empty);
        let mut diff = Diff::default();
        let mut gone: Vec<String> = Vec::new();
        let mut all_wanted = true;
        // One ordered walk over the view's map and the map the client was last in line
        // with: no per-name lookups (10,000 of them per type per proxy per update).
        let held = &state.client;
        let mut names = state.names.iter().peekable();
        let mut wants = |name: &String| {
            while names.next_if(|n| *n < name).is_some() {}
            state.wildcard || names.peek() == Some(&name)
        };
        let mut ours = all.iter().peekable();
        let mut base = held.base.iter().peekable();
        loop {
            let (name, res, in_base) = match (ours.peek(), base.peek()) {
                (None, None) => break,
                (Some((a, _)), Some((b, _))) if a == b => {
                    let (Some((name, res)), Some((_, had))) = (ours.next(), base.next()) else { break };
                    (name, Some(res), Some(had.version.as_str()))
                }
                (Some((a, _)), Some((b, _))) if a > b => {
                    let Some((name, had)) = base.next() else { break };
                    (name, None, Some(had.version.as_str()))
                }
                (Some(_), _) => {
                    let Some((name, res)) = ours.next() else { break };
                    (name, Some(res), None)
                }
                (None, Some(_)) => {
                    let Some((name, had)) = base.next() else { break };
                    (name, None, Some(had.version.as_str()))
                }
            };
            let has = held.resolve(name, in_base);
            let wanted = wants(name);
            match res {
                Some(res) if wanted => {
                    if has == Some(res.version.as_str()) || state.nacked.get(name) == Some(&res.version) {
                        continue;
                    }
                    diff.changes.push((name.clone(), has.map(str::to_string), Some(res.version.clone())));
                    diff.updated.push(Resource {
                        name: name.clone(),
                        version: res.version.clone(),
                        resource: Some(res.any.clone()),
                        ..Default::default()
                    });
                }
                _ => {
                    all_wanted &= res.is_none();
                    if removals && has.is_some() {
                        gone.push(name.clone());
                    }
                }
            }
        }
        if removals {
            // Names held only in the differences, which the walk did not meet.
            gone.extend(
                held.extra().filter(|n| !all.contains_key(n) || !state.wants(n)).cloned().collect::<Vec<_>>(),
            );
            gone.sort();
            gone.dedup();
            for name in gone {
                let had = state.client.get(&name).map(str::to_string);
                diff.changes.push((name.clone(), had, None));
                diff.removed.push(name);
            }
            // Tell the proxy once that a name it asked for does not exist,
            // so it stops waiting for it.
            let mut ours = all.keys().peekable();
            for name in &state.names {
                while ours.next_if(|n| *n < name).is_some() {}
                if ours.peek() != Some(&name)
                    && !state.client.contains_key(name)
                    && state.told_absent.insert(name.clone())
                {
                    diff.removed.push(name.clone());
                }
            }
            diff.complete = all_wanted && state.nacked.is_empty();
        }
        diff
    }

    /// [`diff`](Self::diff) with removals, in time proportional to what changed: when the
    /// client holds exactly a map (nothing rejected, no differences) that the view's map was
    /// built right after, only the names that changed between the two are compared. `None`
    /// when that does not hold.
    fn quick_diff(state: &mut TypeState, all: Option<&TypeResources>) -> Option<Diff> {
        let all = all?;
        if !state.client.changes.is_empty() || !state.nacked.is_empty() {
            return None;
        }
        let names = all.changed_since(&state.client.base)?;
        let mut diff = Diff { complete: true, ..Diff::default() };
        for name in names {
            let had = state.client.base.get(name).map(|r| r.version.clone());
            let wanted = state.wants(name);
            match all.get(name) {
                Some(res) if wanted && had.as_deref() != Some(res.version.as_str()) => {
                    diff.changes.push((name.to_string(), had, Some(res.version.clone())));
                    diff.updated.push(Resource {
                        name: name.to_string(),
                        version: res.version.clone(),
                        resource: Some(res.any.clone()),
                        ..Default::default()
                    });
                }
                Some(_) if wanted => {}
                Some(_) => diff.complete = false,
                None if had.is_some() => {
                    diff.changes.push((name.to_string(), had, None));
                    diff.removed.push(name.to_string());
                }
                None if wanted && state.told_absent.insert(name.to_string()) => {
                    diff.removed.push(name.to_string());
                }
                None => {}
            }
        }
        Some(diff)
    }

    /// After a complete diff has been recorded the client holds the view's map exactly:
    /// hold that (shared) map instead of the differences.
    fn rebase_if(&mut self, type_url: &'static str, complete: bool, view: &ProxyView) {
        if let (true, Some(state), Some(all)) = (complete, self.types.get_mut(type_url), view.get(type_url)) {
            state.client.rebase(all);
        }
    }

    fn respond(
        &mut self,
        type_url: &'static str,
        diff: Diff,
        snapshot: &Snapshot,
        report: &mut ProxyReport,
    ) -> DeltaDiscoveryResponse {
        self.nonce += 1;
        let nonce = self.nonce.to_string();
        let state = self.types.entry(type_url).or_default();
        for (name, _, sent) in &diff.changes {
            match sent {
                Some(v) => {
                    state.client.insert(name.clone(), v.clone());
                    state.told_absent.remove(name);
                }
                None => {
                    state.client.remove(name);
                }
            }
        }
        state.pending.insert(nonce.clone(), diff.changes);
        let tr = report.types.entry(short_type(type_url)).or_default();
        tr.sent_version = Some(snapshot.version.to_string());
        tr.sent_nonce = Some(nonce.clone());
        tr.resources = state.client.len();
        tr.pushes += 1;
        DeltaDiscoveryResponse {
            system_version_info: snapshot.version.to_string(),
            resources: diff.updated,
            type_url: type_url.to_string(),
            removed_resources: diff.removed,
            nonce,
            control_plane: Some(ControlPlane { identifier: "weft".into() }),
            ..Default::default()
        }
    }
}

impl XdsProtocol for Delta {
    type Request = DeltaDiscoveryRequest;
    type Response = DeltaDiscoveryResponse;
    const MODE: &'static str = "delta";

    fn node(req: &DeltaDiscoveryRequest) -> Option<&Node> {
        req.node.as_ref()
    }

    fn type_url(req: &mut DeltaDiscoveryRequest) -> &mut String {
        &mut req.type_url
    }

    fn response_type(resp: &DeltaDiscoveryResponse) -> &str {
        &resp.type_url
    }

    fn on_request(
        &mut self,
        req: DeltaDiscoveryRequest,
        view: &ProxyView,
        snapshot: &Snapshot,
        report: &mut ProxyReport,
    ) -> Vec<DeltaDiscoveryResponse> {
        let Some(type_url) = known_type(&req.type_url) else { return Vec::new() };
        let short = short_type(type_url);
        let first = !self.types.contains_key(type_url);
        let state = self.types.entry(type_url).or_default();

        if !req.response_nonce.is_empty() {
            match state.pending.remove(&req.response_nonce) {
                None => debug!(r#type = short, nonce = %req.response_nonce, "ACK/NACK for an unknown nonce"),
                Some(changes) => {
                    let tr = report.types.entry(short).or_default();
                    if let Some(err) = &req.error_detail {
                        warn!(r#type = short, detail = %err.message, "proxy NACKed");
                        // Envoy applies the valid resources of a response and
                        // NACKs the rest, without saying which: remember every
                        // version sent as refused (so none is sent again) but keep
                        // the names as sent, so later changes and removals still go out.
                        for (name, _, sent) in &changes {
                            if let Some(v) = sent {
                                state.nacked.insert(name.clone(), v.clone());
                            }
                        }
                        tr.nacks += 1;
                        tr.last_nack = Some(NackReport {
                            version: snapshot.version.to_string(),
                            nonce: req.response_nonce.clone(),
                            detail: err.message.clone(),
                            resources: changes.iter().map(|(n, _, _)| n.clone()).collect(),
                            at: now_secs(),
                        });
                        self.metrics.nacks.get_or_create(&TypeLabel { r#type: short.into() }).inc();
                    } else {
                        tr.acks += 1;
                        tr.acked_version = tr.sent_version.clone();
                    }
                }
            }
        }

        if first {
            for (name, version) in &req.initial_resource_versions {
                state.client.insert(name.clone(), version.clone());
            }
            state.wildcard = wildcard_type(type_url) && req.resource_names_subscribe.is_empty();
        }
        let mut changed = first;
        for name in &req.resource_names_subscribe {
            if name == "*" {
                changed |= !state.wildcard;
                state.wildcard = true;
            } else {
                changed |= state.names.insert(name.clone());
            }
        }
        for name in &req.resource_names_unsubscribe {
            if name == "*" {
                state.wildcard = false;
            } else {
                state.names.remove(name);
                // The proxy forgets what it unsubscribed from.
                state.client.remove(name);
                state.told_absent.remove(name);
                state.nacked.remove(name);
            }
        }
        if first || !req.resource_names_subscribe.is_empty() || !req.resource_names_unsubscribe.is_empty() {
            report.types.entry(short).or_default().set_subscribed(state.wildcard, state.names.iter());
        }
        if !changed {
            return Vec::new();
        }
        let diff = Self::diff(state, view.get(type_url), true);
        let complete = diff.complete;
        // The first response of a type is always sent, so the proxy can finish warming.
        let out = if first || !diff.updated.is_empty() || !diff.removed.is_empty() {
            vec![self.respond(type_url, diff, snapshot, report)]
        } else {
            Vec::new()
        };
        self.rebase_if(type_url, complete, view);
        out
    }

    fn on_update(
        &mut self,
        view: &ProxyView,
        snapshot: &Snapshot,
        report: &mut ProxyReport,
    ) -> Vec<DeltaDiscoveryResponse> {
        let mut out = Vec::new();
        // The removal half of each quick diff, sent in the second pass.
        let mut quick_removals: HashMap<&'static str, Diff> = HashMap::new();
        // Make before break: additions and changes in dependency order first...
        for type_url in TYPE_ORDER {
            let Some(state) = self.types.get_mut(type_url) else { continue };
            let diff = match Self::quick_diff(state, view.get(type_url)) {
                Some(mut diff) => {
                    let (removed, kept): (Vec<Change>, Vec<Change>) =
                        diff.changes.into_iter().partition(|(_, _, sent)| sent.is_none());
                    diff.changes = kept;
                    let removal = Diff {
                        updated: Vec::new(),
                        removed: std::mem::take(&mut diff.removed),
                        changes: removed,
                        complete: diff.complete,
                    };
                    quick_removals.insert(type_url, removal);
                    diff
                }
                None => Self::diff(state, view.get(type_url), false),
            };
            if !diff.updated.is_empty() {
                out.push(self.respond(type_url, diff, snapshot, report));
            }
        }
        // ...then removals, listeners and routes before the clusters they used.
        for type_url in REMOVAL_ORDER {
            let Some(state) = self.types.get_mut(type_url) else { continue };
            let (diff, complete) = match quick_removals.remove(type_url) {
                Some(diff) => {
                    let complete = diff.complete;
                    (diff, complete)
                }
                None => {
                    let mut diff = Self::diff(state, view.get(type_url), true);
                    let complete = diff.complete && diff.updated.is_empty();
                    diff.updated.clear();
                    diff.changes.retain(|(_, _, sent)| sent.is_none());
                    (diff, complete)
                }
            };
            if !diff.removed.is_empty() {
                out.push(self.respond(type_url, diff, snapshot, report));
            }
            self.rebase_if(type_url, complete, view);
        }
        out
    }
}
