//! The resources the proxy holds and the config it serves from them.
//!
//! Every accepted resource is kept with its raw `Any`, version and arrival
//! time. A listener or cluster whose route table or endpoints have not
//! arrived yet is *warming*, as in Envoy: its previous version (if any) keeps
//! serving until what it refers to is here, or until the initial fetch
//! timeout says it will not come. [`State::build`] turns what is serving into
//! a new [`Config`], swapped whole.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;
use tracing::{debug, info, warn};
use weft_xds_protos::google::protobuf::Any;

use super::ResourceType;
use super::decode::{self, Notes, Options, Resource};
use super::error::DecodeError;
use crate::config::{ChainKind, Config, Listener, RouteSource};

mod status;

pub use status::{Held, Nack, ResourceStatus, Status, TypeStatus};

/// One resource of a response, whatever the protocol.
#[derive(Debug, Clone)]
pub(crate) struct Incoming {
    /// Its name, when the protocol says it (Delta).
    pub(crate) name: Option<String>,
    /// Its version (SotW: the response's).
    pub(crate) version: String,
    /// The resource (`None`: the server sent a name without a resource).
    pub(crate) any: Option<Any>,
}

/// A response, whatever the protocol.
#[derive(Debug, Clone)]
pub(crate) struct Update {
    /// The type.
    pub(crate) kind: ResourceType,
    /// SotW `version_info`, Delta `system_version_info`.
    pub(crate) system_version: String,
    /// Added or changed resources (SotW: all of them).
    pub(crate) resources: Vec<Incoming>,
    /// Removed names (Delta).
    pub(crate) removed: Vec<String>,
    /// SotW: the response holds every resource of the subscription, so a
    /// listener or cluster left out is gone, and a route table or assignment
    /// left out does not exist.
    pub(crate) state_of_the_world: bool,
}

#[derive(Debug, Clone)]
struct Entry {
    resource: Resource,
    raw: Arc<Any>,
    version: String,
    updated: SystemTime,
}

impl Entry {
    /// What the entry needs before it can serve: (type, name).
    fn needs(&self) -> Vec<(ResourceType, &str)> {
        match &self.resource {
            Resource::Listener(l) => rds_names(l).map(|n| (ResourceType::Route, n)).collect(),
            Resource::Cluster(_, Some(eds)) => vec![(ResourceType::Endpoint, eds.as_str())],
            _ => Vec::new(),
        }
    }
}

/// The route tables a listener takes from RDS.
fn rds_names(l: &Listener) -> impl Iterator<Item = &str> {
    l.chains.iter().chain(l.default_chain.as_ref()).filter_map(|c| match &c.kind {
        ChainKind::Http(h) => match &h.routes {
            RouteSource::Rds(name) => Some(name.as_str()),
            RouteSource::Inline(_) => None,
        },
        ChainKind::Tcp(_) => None,
    })
}

type Store = BTreeMap<String, Entry>;

/// The xDS state of one proxy. Owned by the client task; not shared.
#[derive(Debug)]
pub(crate) struct State {
    /// The last accepted version of each resource, by type.
    stores: BTreeMap<ResourceType, Store>,
    /// The listeners and clusters serving (warm), which may be older than `stores`.
    serving: BTreeMap<ResourceType, Store>,
    /// Route tables and assignments the server said do not exist, or that timed out.
    absent: BTreeSet<(ResourceType, String)>,
    /// Route tables and assignments subscribed and not yet settled: when to stop waiting.
    waiting: BTreeMap<(ResourceType, String), Instant>,
    initial_fetch_timeout: Duration,
    /// Types that have had a response.
    responded: BTreeSet<ResourceType>,
    ready: bool,
    types: BTreeMap<ResourceType, TypeStatus>,
    rejected: BTreeMap<(ResourceType, String), Nack>,
    /// Ignored fields already warned about.
    warned: BTreeSet<&'static str>,
    /// What decoding accepts.
    options: Options,
}

/// The result of applying a response.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    /// Resources added, changed or removed.
    pub(crate) changed: usize,
    /// The resources rejected.
    pub(crate) errors: Vec<DecodeError>,
}

impl Outcome {
    /// The NACK's `error_detail` message: one line per rejected resource.
    pub(crate) fn detail(&self) -> Option<String> {
        if self.errors.is_empty() {
            return None;
        }
        Some(self.errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))
    }
}

impl State {
    /// An empty state; a subscribed route table or assignment that does not
    /// arrive within `initial_fetch_timeout` stops holding up its listener or cluster.
    pub(crate) fn new(initial_fetch_timeout: Duration) -> Self {
        State {
            stores: BTreeMap::new(),
            serving: BTreeMap::new(),
            absent: BTreeSet::new(),
            waiting: BTreeMap::new(),
            initial_fetch_timeout,
            responded: BTreeSet::new(),
            ready: false,
            types: BTreeMap::new(),
            rejected: BTreeMap::new(),
            warned: BTreeSet::new(),
            options: Options::default(),
        }
    }

    /// Whether the proxy has workload credentials: without them, resources
    /// that use TLS are rejected (by default they are accepted).
    pub(crate) fn with_tls(mut self, tls: bool) -> Self {
        self.options.tls = tls;
        self
    }

    /// The versions held of a type, for Delta's `initial_resource_versions`.
    pub(crate) fn versions(&self, kind: ResourceType) -> BTreeMap<String, String> {
        self.stores
            .get(&kind)
            .map(|s| s.iter().map(|(n, e)| (n.clone(), e.version.clone())).collect())
            .unwrap_or_default()
    }

    /// Applies every valid resource of a response; returns the rejected ones.
    pub(crate) fn apply(&mut self, update: Update) -> Outcome {
        let kind = update.kind;
        let now = SystemTime::now();
        let wanted = if kind.is_wildcard() { BTreeSet::new() } else { self.wanted(kind) };
        let mut outcome = Outcome::default();
        let mut seen = BTreeSet::new();
        let mut unreadable = false;
        let mut accepted = Vec::new();
        for (i, incoming) in update.resources.into_iter().enumerate() {
            let label = incoming.name.clone().unwrap_or_else(|| format!("resources[{i}]"));
            let Some(any) = incoming.any else {
                let err = super::error::FieldError::required("resource").in_resource(kind, label);
                outcome.errors.push(err);
                continue;
            };
            let parsed = match decode::parse(kind, &any) {
                Ok(parsed) => parsed,
                Err(e) => {
                    unreadable |= incoming.name.is_none();
                    outcome.errors.push(e.in_resource(kind, label));
                    continue;
                }
            };
            let name = match incoming.name {
                Some(name) => name,
                None if parsed.name().is_empty() => label,
                None => parsed.name().to_string(),
            };
            seen.insert(name.clone());
            if !kind.is_wildcard() && !wanted.contains(&name) {
                debug!(r#type = kind.short(), name, "ignoring a resource not subscribed to");
                continue;
            }
            let mut notes = Notes::default();
            match decode::validate(&parsed, &name, self.options, &mut notes) {
                Ok(resource) => {
                    self.warn_ignored(kind, &name, &notes);
                    accepted.push((
                        name,
                        Entry { resource, raw: Arc::new(any), version: incoming.version, updated: now },
                    ));
                }
                Err(e) => outcome.errors.push(e.in_resource(kind, name)),
            }
        }
        let store = self.stores.entry(kind).or_default();
        for (name, mut entry) in accepted {
            // An unchanged resource keeps its decoded value and time, so the
            // data path sees the same `Arc` and keeps what it built from it.
            if let Some(old) = store.get(&name).filter(|old| old.raw == entry.raw) {
                entry = Entry { version: entry.version, ..old.clone() };
            } else {
                debug!(r#type = kind.short(), name, version = entry.version, "accepted");
                outcome.changed += 1;
            }
            self.absent.remove(&(kind, name.clone()));
            self.waiting.remove(&(kind, name.clone()));
            self.rejected.remove(&(kind, name.clone()));
            store.insert(name, entry);
        }
        for name in &update.removed {
            if store.remove(name).is_some() {
                debug!(r#type = kind.short(), name, "removed");
                outcome.changed += 1;
            }
            self.rejected.remove(&(kind, name.clone()));
            if !kind.is_wildcard() {
                self.waiting.remove(&(kind, name.clone()));
                self.absent.insert((kind, name.clone()));
            }
        }
        if update.state_of_the_world {
            if kind.is_wildcard() {
                // A resource that could not even be named may be any of them: keep all.
                if !unreadable {
                    let before = store.len();
                    store.retain(|name, _| seen.contains(name));
                    outcome.changed += before - store.len();
                    self.rejected.retain(|(k, name), _| *k != kind || seen.contains(name));
                }
            } else {
                for name in wanted.iter().filter(|n| !seen.contains(*n) && !store.contains_key(*n)) {
                    self.waiting.remove(&(kind, name.clone()));
                    self.absent.insert((kind, name.clone()));
                }
            }
        }
        self.responded.insert(kind);
        let ts = self.types.entry(kind).or_default();
        ts.system_version = update.system_version.clone();
        if let Some(detail) = outcome.detail() {
            ts.nacks += 1;
            ts.last_nack = Some(Nack { version: update.system_version.clone(), detail, at: now });
            for e in &outcome.errors {
                let version = update.system_version.clone();
                self.rejected
                    .insert((kind, e.name.clone()), Nack { version, detail: e.to_string(), at: now });
            }
        } else {
            ts.acks += 1;
        }
        outcome
    }

    fn warn_ignored(&mut self, kind: ResourceType, name: &str, notes: &Notes) {
        for field in &notes.ignored {
            if self.warned.insert(field) {
                warn!(
                    r#type = kind.short(),
                    resource = name,
                    field,
                    "ignoring a field weft-proxy does not implement (it does not change traffic)"
                );
            }
        }
    }

    /// Whether everything an entry refers to has arrived or is known not to.
    fn settled(&self, entry: &Entry) -> bool {
        entry.needs().into_iter().all(|(kind, name)| {
            self.stores.get(&kind).is_some_and(|s| s.contains_key(name))
                || self.absent.contains(&(kind, name.to_string()))
        })
    }

    /// The names of a type (RDS or EDS) to subscribe to: what the latest
    /// listeners and clusters refer to, and what the serving ones still do.
    pub(crate) fn wanted(&self, kind: ResourceType) -> BTreeSet<String> {
        let from = match kind {
            ResourceType::Route => ResourceType::Listener,
            ResourceType::Endpoint => ResourceType::Cluster,
            _ => return BTreeSet::new(),
        };
        [self.stores.get(&from), self.serving.get(&from)]
            .into_iter()
            .flatten()
            .flat_map(|s| s.values())
            .flat_map(Entry::needs)
            .filter(|(k, _)| *k == kind)
            .map(|(_, n)| n.to_string())
            .collect()
    }

    /// Records the names now subscribed to: new ones start their initial
    /// fetch timeout, and what is no longer subscribed is forgotten. True if
    /// a resource held was dropped (the config should be built again).
    pub(crate) fn subscribe(&mut self, kind: ResourceType, names: &BTreeSet<String>, now: Instant) -> bool {
        let mut dropped = false;
        if let Some(store) = self.stores.get_mut(&kind) {
            let before = store.len();
            store.retain(|n, _| names.contains(n));
            dropped = store.len() != before;
        }
        self.absent.retain(|(k, n)| *k != kind || names.contains(n));
        self.waiting.retain(|(k, n), _| *k != kind || names.contains(n));
        self.rejected.retain(|(k, n), _| *k != kind || kind.is_wildcard() || names.contains(n));
        for name in names {
            let key = (kind, name.clone());
            let have = self.stores.get(&kind).is_some_and(|s| s.contains_key(name));
            if !have && !self.absent.contains(&key) {
                self.waiting.entry(key).or_insert(now + self.initial_fetch_timeout);
            }
        }
        self.types.entry(kind).or_default().subscribed = names.iter().cloned().collect();
        dropped
    }

    /// When the next initial fetch times out.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.waiting.values().min().copied()
    }

    /// Gives up waiting for what did not arrive in time; true if anything did.
    pub(crate) fn expire(&mut self, now: Instant) -> bool {
        let expired: Vec<(ResourceType, String)> =
            self.waiting.iter().filter(|(_, at)| **at <= now).map(|(k, _)| k.clone()).collect();
        for key in &expired {
            warn!(
                r#type = key.0.short(),
                name = key.1,
                timeout = ?self.initial_fetch_timeout,
                "initial fetch timed out; serving without it"
            );
            self.waiting.remove(key);
            self.absent.insert(key.clone());
        }
        !expired.is_empty()
    }

    /// Builds the config to serve: warm listeners and clusters (or their
    /// previous versions while the new ones warm), every route table and
    /// assignment. Marks the proxy ready once nothing is warming.
    pub(crate) fn build(&mut self) -> Config {
        for kind in [ResourceType::Listener, ResourceType::Cluster] {
            let latest = self.stores.get(&kind).cloned().unwrap_or_default();
            let old = self.serving.remove(&kind).unwrap_or_default();
            let mut serving = Store::new();
            for (name, entry) in latest {
                if self.settled(&entry) {
                    serving.insert(name, entry);
                } else if let Some(previous) = old.get(&name) {
                    serving.insert(name, previous.clone());
                }
            }
            self.serving.insert(kind, serving);
        }
        let mut config = Config::default();
        for (kind, store) in self.serving.iter().chain(self.stores.iter().filter(|(k, _)| !k.is_wildcard())) {
            let versions = config.versions.entry(kind.short()).or_default();
            for (name, entry) in store {
                versions.insert(name.clone(), entry.version.clone());
                match &entry.resource {
                    Resource::Listener(l) => {
                        config.listeners.insert(name.clone(), l.clone());
                    }
                    Resource::Route(r) => {
                        config.routes.insert(name.clone(), r.clone());
                    }
                    Resource::Cluster(c, eds) => {
                        config.clusters.insert(name.clone(), c.clone());
                        let assignment = eds.as_ref().and_then(|eds| self.endpoints(eds));
                        if let Some(endpoints) = assignment {
                            config.endpoints.insert(name.clone(), endpoints);
                        }
                    }
                    Resource::Endpoints(_) => {}
                }
            }
        }
        if !self.ready && self.initialized() {
            self.ready = true;
            info!(
                listeners = config.listeners.len(),
                clusters = config.clusters.len(),
                routes = config.routes.len(),
                "first full config applied: ready"
            );
        }
        config
    }

    fn endpoints(&self, eds_name: &str) -> Option<Arc<crate::config::ClusterEndpoints>> {
        match &self.stores.get(&ResourceType::Endpoint)?.get(eds_name)?.resource {
            Resource::Endpoints(e) => Some(e.clone()),
            _ => None,
        }
    }

    /// LDS and CDS have answered, and no listener or cluster is warming.
    fn initialized(&self) -> bool {
        [ResourceType::Listener, ResourceType::Cluster].iter().all(|kind| {
            self.responded.contains(kind)
                && self.stores.get(kind).is_none_or(|s| s.values().all(|e| self.settled(e)))
        })
    }
}

#[cfg(test)]
mod tests;
