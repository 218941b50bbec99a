//! What a Delta client holds of one type, by name and version: the view map it was last
//! brought fully in line with, plus the differences since.
//!
//! A sidecar holds every cluster and assignment of the mesh. Keeping those names and
//! versions per stream cost megabytes per proxy with 10,000 services; the view map is
//! shared by every proxy of the same snapshot, so holding it costs nothing per proxy.

use std::collections::HashMap;

use crate::cache::TypeResources;

/// Name to version of what the client has (or was sent and did not reject).
#[derive(Debug, Default)]
pub(super) struct Held {
    /// A map the client held exactly, at some point.
    pub(super) base: TypeResources,
    /// Differences from `base`: `Some(version)` held, `None` not held.
    pub(super) changes: HashMap<String, Option<String>>,
}

impl Held {
    /// The version held under `name`.
    pub(super) fn get(&self, name: &str) -> Option<&str> {
        match self.changes.get(name) {
            Some(v) => v.as_deref(),
            None => self.base.get(name).map(|r| r.version.as_str()),
        }
    }

    /// Whether anything is held under `name`.
    pub(super) fn contains_key(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// The version in `base` (the first lookup), overridden by `changes`.
    pub(super) fn resolve<'a>(&'a self, name: &str, in_base: Option<&'a str>) -> Option<&'a str> {
        if self.changes.is_empty() {
            return in_base;
        }
        self.changes.get(name).map_or(in_base, |v| v.as_deref())
    }

    /// Records that the client holds `version` under `name`.
    pub(super) fn insert(&mut self, name: String, version: String) {
        if self.base.get(&name).is_some_and(|r| r.version == version) {
            self.changes.remove(&name);
        } else {
            self.changes.insert(name, Some(version));
        }
    }

    /// Records that the client holds nothing under `name`.
    pub(super) fn remove(&mut self, name: &str) {
        if self.base.contains_key(name) {
            self.changes.insert(name.to_string(), None);
        } else {
            self.changes.remove(name);
        }
    }

    /// How many names are held.
    pub(super) fn len(&self) -> usize {
        let mut n = self.base.len();
        for (name, v) in &self.changes {
            match (v.is_some(), self.base.contains_key(name)) {
                (true, false) => n += 1,
                (false, true) => n -= 1,
                _ => {}
            }
        }
        n
    }

    /// The client now holds exactly `map`.
    pub(super) fn rebase(&mut self, map: &TypeResources) {
        self.base = map.clone();
        self.changes.clear();
    }

    /// Held names that `base` does not have (they live only in `changes`).
    pub(super) fn extra(&self) -> impl Iterator<Item = &String> {
        self.changes.iter().filter(|(n, v)| v.is_some() && !self.base.contains_key(n)).map(|(n, _)| n)
    }
}
