//! [`TypeResources`]: one type's resources for one proxy, by name, as a map shared by
//! every proxy (behind an `Arc`) plus the few that are the proxy's own.
//!
//! With 10,000 services every proxy sees the same 10,000 clusters and assignments;
//! copying those maps into each proxy's view (and into each stream's "sent" state) cost
//! megabytes per proxy and a copy per proxy per update. Cloning a `TypeResources` copies
//! only the proxy's own entries; the shared map's set version is computed once.

use std::collections::BTreeMap;
use std::collections::btree_map;
use std::iter::Peekable;
use std::sync::{Arc, OnceLock, Weak};

use super::{Encoded, hash_hex, set_version};

/// A map shared by many views, with its set version computed once.
#[derive(Debug, Default)]
struct Shared {
    map: BTreeMap<String, Arc<Encoded>>,
    version: OnceLock<String>,
    /// The map this one was built after, and the names whose entries differ from it (added,
    /// changed or removed): a stream that holds that map compares only these.
    since: Option<(Weak<Shared>, Vec<String>)>,
}

/// Resources of one type for one proxy, by name: a shared map plus the proxy's own
/// entries, which win over shared ones of the same name. Iteration is in name order.
#[derive(Debug, Clone, Default)]
pub struct TypeResources {
    shared: Arc<Shared>,
    own: BTreeMap<String, Arc<Encoded>>,
}

impl TypeResources {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// A map whose entries every clone shares (cloning it copies nothing).
    pub fn shared(map: BTreeMap<String, Arc<Encoded>>) -> Self {
        TypeResources { shared: Arc::new(Shared { map, ..Shared::default() }), own: BTreeMap::new() }
    }

    /// [`shared`](Self::shared), recording which entries differ from `prev`'s shared map
    /// (an entry is unchanged when it is the same `Arc`).
    pub fn shared_after(map: BTreeMap<String, Arc<Encoded>>, prev: &TypeResources) -> Self {
        let mut changed = Vec::new();
        let mut old = prev.shared.map.iter().peekable();
        for (name, res) in &map {
            while let Some((gone, _)) = old.next_if(|(o, _)| *o < name) {
                changed.push(gone.clone());
            }
            match old.next_if(|(o, _)| *o == name) {
                Some((_, was)) if Arc::ptr_eq(was, res) => {}
                _ => changed.push(name.clone()),
            }
        }
        changed.extend(old.map(|(gone, _)| gone.clone()));
        let since = Some((Arc::downgrade(&prev.shared), changed));
        TypeResources { shared: Arc::new(Shared { map, since, ..Shared::default() }), own: BTreeMap::new() }
    }

    /// The names whose entries may differ between `older` and this map, when that is known
    /// without comparing every entry: this map's shared part is `older`'s, or was built right
    /// after it. Own entries of both are always listed. `None`: compare everything.
    pub fn changed_since<'a>(&'a self, older: &'a TypeResources) -> Option<Vec<&'a str>> {
        let mut names: Vec<&str> = if Arc::ptr_eq(&self.shared, &older.shared) {
            Vec::new()
        } else {
            match &self.shared.since {
                Some((prev, changed)) if Weak::ptr_eq(prev, &Arc::downgrade(&older.shared)) => {
                    changed.iter().map(String::as_str).collect()
                }
                _ => return None,
            }
        };
        names.extend(self.own.keys().chain(older.own.keys()).map(String::as_str));
        names.sort_unstable();
        names.dedup();
        Some(names)
    }

    /// Whether this map is `other` (a clone of it): the same shared map and own entries.
    pub fn shares(&self, other: &TypeResources) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
            && self.own.len() == other.own.len()
            && self.own.iter().zip(&other.own).all(|((a, x), (b, y))| a == b && Arc::ptr_eq(x, y))
    }

    /// The entries of this map that `older` does not have, or has in another version.
    pub fn updated_since(&self, older: &TypeResources) -> Vec<Arc<Encoded>> {
        let differs = |name: &str, res: &Arc<Encoded>| match older.get(name) {
            Some(was) => !Arc::ptr_eq(was, res) && was.version != res.version,
            None => true,
        };
        match self.changed_since(older) {
            Some(names) => {
                names.into_iter().filter_map(|n| self.get(n).filter(|r| differs(n, r)).cloned()).collect()
            }
            None => self.iter().filter(|(n, r)| differs(n, r)).map(|(_, r)| r.clone()).collect(),
        }
    }

    /// Adds (or replaces) an entry of this map only.
    pub fn insert(&mut self, name: String, resource: Arc<Encoded>) -> Option<Arc<Encoded>> {
        let before = self.get(&name).cloned();
        self.own.insert(name, resource);
        before
    }

    /// The entry named `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<Encoded>> {
        self.own.get(name).or_else(|| self.shared.map.get(name))
    }

    /// Whether there is an entry named `name`.
    pub fn contains_key(&self, name: &str) -> bool {
        self.own.contains_key(name) || self.shared.map.contains_key(name)
    }

    /// The number of entries.
    pub fn len(&self) -> usize {
        self.shared.map.len() + self.own.keys().filter(|k| !self.shared.map.contains_key(*k)).count()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.own.is_empty() && self.shared.map.is_empty()
    }

    /// Entries in name order.
    pub fn iter(&self) -> Iter<'_> {
        Iter { own: self.own.iter().peekable(), shared: self.shared.map.iter().peekable() }
    }

    /// Names in order.
    pub fn keys(&self) -> impl Iterator<Item = &String> {
        self.iter().map(|(k, _)| k)
    }

    /// Resources in name order.
    pub fn values(&self) -> impl Iterator<Item = &Arc<Encoded>> {
        self.iter().map(|(_, v)| v)
    }

    /// A hash of every name and version (see [`set_version`]): for a shared map with no
    /// own entries, computed once for all its clones.
    pub fn version(&self) -> String {
        let shared = self.shared.version.get_or_init(|| set_version(self.shared.map.values()));
        if self.own.is_empty() {
            return shared.clone();
        }
        let mut buf = shared.clone().into_bytes();
        buf.push(0);
        buf.extend_from_slice(set_version(self.own.values()).as_bytes());
        hash_hex(&buf)
    }

    /// The entries whose names are in `names`: this very map (a cheap clone) when every
    /// entry is named, as for a proxy subscribed to every assignment.
    pub fn restricted_to(&self, names: &std::collections::BTreeSet<String>) -> TypeResources {
        let mut wanted = names.iter().peekable();
        let all_named = self.keys().all(|k| {
            while wanted.next_if(|n| *n < k).is_some() {}
            wanted.next_if(|n| *n == k).is_some()
        });
        if all_named {
            return self.clone();
        }
        names.iter().filter_map(|n| self.get(n).map(|r| (n.clone(), r.clone()))).collect()
    }

    /// The entries of this map whose names `other` does not have.
    pub fn missing_from(&self, other: &TypeResources) -> Vec<(String, Arc<Encoded>)> {
        if let Some(names) = other.changed_since(self) {
            return names
                .into_iter()
                .filter(|n| !other.contains_key(n))
                .filter_map(|n| self.get(n).map(|r| (n.to_string(), r.clone())))
                .collect();
        }
        let mut theirs = other.keys().peekable();
        self.iter()
            .filter(|(n, _)| {
                while theirs.next_if(|t| *t < *n).is_some() {}
                theirs.peek() != Some(n)
            })
            .map(|(n, r)| (n.clone(), r.clone()))
            .collect()
    }
}

impl PartialEq for TypeResources {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().zip(other.iter()).all(|(a, b)| a == b)
    }
}

impl std::ops::Index<&str> for TypeResources {
    type Output = Arc<Encoded>;

    #[allow(clippy::panic)]
    fn index(&self, name: &str) -> &Arc<Encoded> {
        // Like BTreeMap's Index: a missing key is the caller's bug.
        self.get(name).unwrap_or_else(|| panic!("no resource named {name:?}"))
    }
}

impl FromIterator<(String, Arc<Encoded>)> for TypeResources {
    fn from_iter<I: IntoIterator<Item = (String, Arc<Encoded>)>>(iter: I) -> Self {
        TypeResources { shared: Arc::default(), own: iter.into_iter().collect() }
    }
}

impl Extend<(String, Arc<Encoded>)> for TypeResources {
    fn extend<I: IntoIterator<Item = (String, Arc<Encoded>)>>(&mut self, iter: I) {
        self.own.extend(iter);
    }
}

impl<'a> IntoIterator for &'a TypeResources {
    type Item = (&'a String, &'a Arc<Encoded>);
    type IntoIter = Iter<'a>;

    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

/// The entries of a [`TypeResources`] in name order, own entries first among equals.
#[derive(Debug)]
pub struct Iter<'a> {
    own: Peekable<btree_map::Iter<'a, String, Arc<Encoded>>>,
    shared: Peekable<btree_map::Iter<'a, String, Arc<Encoded>>>,
}

impl<'a> Iterator for Iter<'a> {
    type Item = (&'a String, &'a Arc<Encoded>);

    fn next(&mut self) -> Option<Self::Item> {
        match (self.own.peek(), self.shared.peek()) {
            (Some((o, _)), Some((s, _))) => {
                if o < s {
                    self.own.next()
                } else if o == s {
                    self.shared.next();
                    self.own.next()
                } else {
                    self.shared.next()
                }
            }
            (Some(_), None) => self.own.next(),
            (None, _) => self.shared.next(),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use weft_xds_protos::envoy::config::cluster::v3::Cluster;

    use super::*;

    fn res(name: &str, tag: &str) -> (String, Arc<Encoded>) {
        (name.to_string(), Encoded::new(name, &Cluster { alt_stat_name: tag.into(), ..Default::default() }))
    }

    #[test]
    fn own_entries_merge_in_order_and_win_over_shared_ones() {
        let shared =
            TypeResources::shared([res("a", "1"), res("c", "1"), res("e", "1")].into_iter().collect());
        let mut view = shared.clone();
        view.insert("b".into(), res("b", "1").1);
        view.insert("c".into(), res("c", "2").1);
        assert_eq!(view.keys().map(String::as_str).collect::<Vec<_>>(), ["a", "b", "c", "e"]);
        assert_eq!(view.len(), 4);
        assert_eq!(view["c"], res("c", "2").1);
        assert_eq!(shared["c"], res("c", "1").1, "the shared map is untouched");
        let flat: TypeResources = view.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        assert_eq!(flat, view);
        assert_ne!(view.version(), shared.version());
    }

    #[test]
    fn restricting_to_every_name_shares_and_missing_from_finds_removals() {
        let all = TypeResources::shared([res("a", "1"), res("b", "1")].into_iter().collect());
        let names = ["a", "b", "zz"].iter().map(|s| s.to_string()).collect();
        let same = all.restricted_to(&names);
        assert!(Arc::ptr_eq(&same.shared, &all.shared));
        let some = all.restricted_to(&["b".to_string()].into_iter().collect());
        assert_eq!(some.keys().map(String::as_str).collect::<Vec<_>>(), ["b"]);
        assert_eq!(all.missing_from(&some), vec![res("a", "1")]);
        assert!(all.missing_from(&same).is_empty());
        let fewer = TypeResources::shared([res("b", "1")].into_iter().collect());
        assert_eq!(all.missing_from(&fewer), vec![res("a", "1")]);
    }
}
