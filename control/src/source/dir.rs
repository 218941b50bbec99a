//! The manifest directory: every `*.yaml`/`*.yml` file under a root, loaded into a
//! [`MeshState`], kept live by [`ManifestDir::watch`] and written to by
//! [`ManifestDir::apply`].
//!
//! Loading never loses a good object to a bad edit: a refused object keeps its last
//! valid version (and the error is reported), and a file that cannot be read or has a
//! YAML syntax error keeps every object last loaded from it. An object removed from
//! disk is removed from the state.

mod apply;
mod watch;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::assemble::SplitOrder;
use super::manifest::{self, ManifestError, Object, Outcome};
use crate::model::{Key, Kind, MeshState};

pub use apply::ApplyOutcome;
pub use watch::{ApplyHandle, ApplyRequest};

/// How deep symlinked or nested directories are followed, against symlink loops.
const MAX_DEPTH: usize = 16;

/// The result of loading the directory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// The mesh state: every valid object, plus the last valid version of refused ones
    /// (shared: reports are cloned and published, and the state can be large).
    pub state: Arc<MeshState>,
    /// Every problem found, in file order (sorted paths, then document order).
    pub errors: Vec<ManifestError>,
    /// Whether `state` or `errors` differ from the previous load (always true for the first).
    pub changed: bool,
}

/// Where a document lives: file, index of its `---` section, and that section's first line.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Location {
    path: PathBuf,
    doc_index: usize,
    line: usize,
}

/// An object in the state and where it came from.
#[derive(Debug, Clone)]
struct Entry {
    object: Arc<Object>,
    origin: Location,
    /// False when the object was kept from an earlier load because its file cannot be
    /// read or parsed now: `origin` may then no longer point at it.
    located: bool,
}

/// The files read by one scan: path to contents, or why it could not be read.
/// A directory that cannot be listed appears as its own path with an error.
type Scan = BTreeMap<PathBuf, Result<Arc<str>, String>>;

/// What a file's metadata said when it was read: the same stamp means the same contents,
/// unless the file was written too recently to tell (see [`Stamp::settled`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    len: u64,
    modified: Option<std::time::SystemTime>,
    /// Inode, device and change time (Unix): a file replaced by a rename is a new inode.
    ino: u64,
    dev: u64,
    ctime: (i64, i64),
}

impl Stamp {
    fn of(meta: &std::fs::Metadata) -> Self {
        #[cfg(unix)]
        let (ino, dev, ctime) = {
            use std::os::unix::fs::MetadataExt;
            (meta.ino(), meta.dev(), (meta.ctime(), meta.ctime_nsec()))
        };
        #[cfg(not(unix))]
        let (ino, dev, ctime) = (0, 0, (0, 0));
        Stamp { len: meta.len(), modified: meta.modified().ok(), ino, dev, ctime }
    }

    /// Whether the file was last written long enough ago that a later write would change
    /// its stamp: two writes within one timestamp tick could leave the same stamp, so a
    /// file written or changed in the last seconds is read again anyway.
    fn settled(&self) -> bool {
        let settle = std::time::Duration::from_secs(2);
        let changed = std::time::UNIX_EPOCH
            + std::time::Duration::new(
                u64::try_from(self.ctime.0).unwrap_or(0),
                u32::try_from(self.ctime.1).unwrap_or(0),
            );
        // The change time moves with every write and metadata change (a modification time
        // set back included); without it (not Unix) only the modification time counts.
        let changed_settled = cfg!(not(unix)) || changed.elapsed().is_ok_and(|age| age > settle);
        changed_settled && self.modified.and_then(|m| m.elapsed().ok()).is_some_and(|age| age > settle)
    }
}

/// One document of a file as the last load parsed it: index, first line and outcome.
type ParsedDoc = (usize, usize, Doc);

/// A document's outcome, its object shared with the entry made from it (with tens of
/// thousands of objects, copying each on every load was most of a reload).
#[derive(Debug)]
enum Doc {
    Parsed(Arc<Object>),
    Other(Outcome),
}

/// A directory of Kubernetes-style manifests, the embedded default source.
///
/// ```no_run
/// # async fn run() {
/// use std::{sync::Arc, time::Duration};
/// use weft_control::source::{ApplyHandle, ManifestDir};
///
/// let mut dir = ManifestDir::new("manifests");
/// let first = dir.load();
/// let (reports, mut updates) = tokio::sync::watch::channel(Arc::new(first));
/// let (applier, requests) = ApplyHandle::channel(16);
/// tokio::spawn(dir.watch(Duration::from_secs(1), reports, requests));
/// // `updates` sees every new state; `applier.apply(..)` serves `weft apply`.
/// # let _ = (updates.changed().await, applier);
/// # }
/// ```
pub struct ManifestDir {
    root: PathBuf,
    /// The objects of the last load, by kind and key.
    objects: BTreeMap<(Kind, Key), Entry>,
    /// Where refused objects whose kind and key could be read were found in the last load.
    refused_at: BTreeMap<(Kind, Key), Location>,
    /// TrafficSplit first-seen sequence numbers, kept across loads.
    split_order: SplitOrder,
    /// The files as the last load read them.
    last_scan: Option<Scan>,
    /// Each file's stamp when the last scan read it: a settled file with the same stamp is
    /// not read again (a poll would otherwise read the whole directory every interval).
    stamps: BTreeMap<PathBuf, Stamp>,
    /// Each file's documents as the last load parsed them: a file whose text is unchanged
    /// is not parsed again (with thousands of files, parsing is most of a reload).
    parsed: BTreeMap<PathBuf, Vec<ParsedDoc>>,
    /// What the last load produced.
    last_state: Arc<MeshState>,
    last_errors: Vec<ManifestError>,
}

impl std::fmt::Debug for ManifestDir {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the file contents the last scan holds.
        f.debug_struct("ManifestDir")
            .field("root", &self.root)
            .field("objects", &self.objects.len())
            .field("errors", &self.last_errors.len())
            .finish_non_exhaustive()
    }
}

impl ManifestDir {
    /// A directory source over `root`; nothing is read until [`load`](Self::load).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            objects: BTreeMap::new(),
            refused_at: BTreeMap::new(),
            split_order: SplitOrder::default(),
            last_scan: None,
            stamps: BTreeMap::new(),
            parsed: BTreeMap::new(),
            last_state: Arc::default(),
            last_errors: Vec::new(),
        }
    }

    /// The directory's root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Reads every manifest file and builds the mesh state.
    ///
    /// Files are read in sorted path order, recursively, skipping hidden files and
    /// directories and editor leftovers. When the same kind and key is defined twice,
    /// the first definition wins and the later one is reported.
    pub fn load(&mut self) -> LoadReport {
        let scan = self.scan();
        self.build(scan)
    }

    /// Where an object of the last load was read from: its file and document index
    /// (see [`ParsedDoc::doc_index`](super::ParsedDoc::doc_index)).
    pub fn origin(&self, kind: Kind, key: &Key) -> Option<(PathBuf, usize)> {
        self.objects.get(&(kind, key.clone())).map(|e| (e.origin.path.clone(), e.origin.doc_index))
    }

    /// Loads again only if a file changed since the last load.
    fn poll(&mut self) -> Option<LoadReport> {
        let scan = self.scan();
        if self.last_scan.as_ref() == Some(&scan) {
            return None;
        }
        Some(self.build(scan))
    }

    /// The report of the last load, without reading anything.
    fn last_report(&self) -> LoadReport {
        LoadReport { state: self.last_state.clone(), errors: self.last_errors.clone(), changed: false }
    }

    fn scan(&mut self) -> Scan {
        let mut scan = Scan::new();
        let mut stamps = BTreeMap::new();
        let last = Known { scan: self.last_scan.as_ref(), stamps: &self.stamps };
        scan_dir(&self.root, 0, &last, &mut scan, &mut stamps);
        self.stamps = stamps;
        scan
    }

    fn build(&mut self, scan: Scan) -> LoadReport {
        let mut errors = Vec::new();
        let mut objects: BTreeMap<(Kind, Key), Entry> = BTreeMap::new();
        let mut refused_at: BTreeMap<(Kind, Key), Location> = BTreeMap::new();
        // Files and directories whose earlier objects cannot be told apart now.
        let mut degraded: Vec<&Path> = Vec::new();

        let mut parsed: BTreeMap<PathBuf, Vec<ParsedDoc>> = BTreeMap::new();
        for (path, contents) in &scan {
            let label = path.display().to_string();
            let text = match contents {
                Ok(text) => text,
                Err(reason) => {
                    errors.push(ManifestError::file_error(&label, reason.clone()));
                    degraded.push(path);
                    continue;
                }
            };
            let unchanged = self.last_scan.as_ref().and_then(|last| last.get(path)) == Some(contents);
            let docs = match self.parsed.remove(path) {
                Some(docs) if unchanged => docs,
                _ => manifest::split_documents(text)
                    .iter()
                    .map(|raw| {
                        let doc = match manifest::parse_document(&label, raw) {
                            Outcome::Parsed(object) => Doc::Parsed(Arc::new(object)),
                            other => Doc::Other(other),
                        };
                        (raw.index, raw.first_line, doc)
                    })
                    .collect(),
            };
            let docs = parsed.entry(path.clone()).or_insert(docs);
            for (index, first_line, doc) in docs.iter() {
                let here = Location { path: path.clone(), doc_index: *index, line: *first_line };
                match doc {
                    Doc::Parsed(object) => {
                        let id = (object.kind(), object.key());
                        if let Some(first) = objects.get(&id) {
                            errors.push(ManifestError::object_error(
                                &label,
                                id.0,
                                &id.1,
                                "metadata.name",
                                format!(
                                    "is also defined in {} (document at line {}), which wins; \
                                     this definition is ignored",
                                    first.origin.path.display(),
                                    first.origin.line
                                ),
                            ));
                        } else {
                            objects.insert(id, Entry { object: object.clone(), origin: here, located: true });
                        }
                    }
                    Doc::Other(Outcome::Invalid { error, identity }) => {
                        errors.push(error.clone());
                        match identity {
                            Some(id) => {
                                refused_at.entry(id.clone()).or_insert(here);
                            }
                            None if !degraded.contains(&path.as_path()) => degraded.push(path),
                            None => {}
                        }
                    }
                    Doc::Other(_) => {}
                }
            }
        }

        // Keep the last valid version of what was refused or cannot be read now.
        for (id, at) in &refused_at {
            if let (None, Some(prev)) = (objects.get(id), self.objects.get(id)) {
                let entry = Entry { object: prev.object.clone(), origin: at.clone(), located: true };
                objects.insert(id.clone(), entry);
            }
        }
        for (id, prev) in &self.objects {
            let unreadable = degraded.iter().any(|p| prev.origin.path.starts_with(p));
            if unreadable && !objects.contains_key(id) {
                objects.insert(id.clone(), Entry { located: false, ..prev.clone() });
            }
        }

        let state = Arc::new(self.state_of(&objects));
        let changed = self.last_scan.is_none() || state != self.last_state || errors != self.last_errors;
        tracing::debug!(
            root = %self.root.display(),
            objects = objects.len(),
            errors = errors.len(),
            changed,
            "loaded manifest directory"
        );
        self.objects = objects;
        self.refused_at = refused_at;
        self.last_scan = Some(scan);
        self.parsed = parsed;
        self.last_state = state.clone();
        self.last_errors = errors.clone();
        LoadReport { state, errors, changed }
    }

    /// Builds the state, numbering TrafficSplits the first time each is seen (new ones in
    /// file order).
    fn state_of(&mut self, objects: &BTreeMap<(Kind, Key), Entry>) -> MeshState {
        let origin = |key: &Key| {
            objects
                .get(&(Kind::TrafficSplit, key.clone()))
                .map(|entry| (entry.origin.path.clone(), entry.origin.doc_index))
        };
        self.split_order.state_of(objects.values().map(|entry| Object::clone(&entry.object)), origin)
    }
}

/// Whether a file name is one weft reads: `*.yaml` or `*.yml`, not hidden, not an
/// editor's backup, lock or autosave file.
fn is_manifest_name(name: &str) -> bool {
    !name.starts_with('.')
        && !name.starts_with('#')
        && !name.ends_with('~')
        && (name.ends_with(".yaml") || name.ends_with(".yml"))
}

/// What the last scan read, to reuse for files whose stamp has not changed.
struct Known<'a> {
    scan: Option<&'a Scan>,
    stamps: &'a BTreeMap<PathBuf, Stamp>,
}

impl Known<'_> {
    fn reuse(&self, path: &Path, stamp: &Stamp) -> Option<Arc<str>> {
        if !stamp.settled() || self.stamps.get(path) != Some(stamp) {
            return None;
        }
        self.scan?.get(path)?.as_ref().ok().cloned()
    }
}

fn scan_dir(
    dir: &Path,
    depth: usize,
    last: &Known<'_>,
    scan: &mut Scan,
    stamps: &mut BTreeMap<PathBuf, Stamp>,
) {
    let listing = match std::fs::read_dir(dir) {
        Ok(listing) => listing,
        Err(e) => {
            scan.insert(dir.to_path_buf(), Err(format!("cannot read directory: {e}")));
            return;
        }
    };
    let mut entries = Vec::new();
    for entry in listing {
        match entry {
            Ok(entry) => entries.push(entry.path()),
            Err(e) => {
                scan.insert(dir.to_path_buf(), Err(format!("cannot read directory: {e}")));
                return;
            }
        }
    }
    entries.sort();
    for path in entries {
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if name.starts_with('.') {
            continue;
        }
        // Follows symlinks, as mounted ConfigMaps use them.
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            if depth < MAX_DEPTH {
                scan_dir(&path, depth + 1, last, scan, stamps);
            }
        } else if is_manifest_name(name) {
            let stamp = Stamp::of(&meta);
            let contents = match last.reuse(&path, &stamp) {
                Some(known) => Ok(known),
                None => {
                    std::fs::read(&path).map_err(|e| format!("cannot read file: {e}")).and_then(|bytes| {
                        String::from_utf8(bytes)
                            .map(Arc::from)
                            .map_err(|_| "cannot read file: not UTF-8 text".to_string())
                    })
                }
            };
            stamps.insert(path.clone(), stamp);
            scan.insert(path, contents);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    pub(super) fn write(dir: &Path, rel: &str, text: &str) {
        let path = dir.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    pub(super) fn split(name: &str, weight: &str) -> String {
        format!(
            "apiVersion: split.smi-spec.io/v1alpha2\nkind: TrafficSplit\n\
             metadata: {{name: {name}, namespace: payments}}\n\
             spec:\n  service: payment\n  backends:\n  - service: payment-v1\n    weight: {weight}\n"
        )
    }

    pub(super) fn service(name: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: payments}}\n\
             spec:\n  ports: [{{port: 80}}]\n"
        )
    }

    pub(super) fn weight(state: &MeshState, name: &str) -> Option<u64> {
        state.traffic_splits.get(&Key::new("payments", name)).map(|s| s.backends[0].weight_milli)
    }

    #[test]
    fn a_settled_unchanged_file_is_not_read_again_but_a_fresh_or_changed_one_is() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        write(root, "old.yaml", &service("old"));
        // Past the settling time (two seconds) for old.yaml only.
        std::thread::sleep(std::time::Duration::from_millis(2100));
        write(root, "new.yaml", &service("new"));
        let mut dir = ManifestDir::new(root);
        dir.load();
        let read = |dir: &ManifestDir, name: &str| dir.last_scan.as_ref().unwrap()[&root.join(name)].clone();
        let (old, new) = (read(&dir, "old.yaml").unwrap(), read(&dir, "new.yaml").unwrap());
        dir.load();
        assert!(Arc::ptr_eq(&old, &read(&dir, "old.yaml").unwrap()), "a settled file is reused");
        assert!(
            !Arc::ptr_eq(&new, &read(&dir, "new.yaml").unwrap()),
            "a file written just now is read again"
        );

        // Same length, modification time set back an hour: the change time still tells.
        write(root, "old.yaml", &service("olb"));
        let file = std::fs::File::options().write(true).open(root.join("old.yaml")).unwrap();
        file.set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(3600)).unwrap();
        let report = dir.load();
        let names: Vec<&str> = report.state.services.keys().map(|k| k.name.as_str()).collect();
        assert_eq!(names, ["new", "olb"]);
    }

    #[test]
    fn loads_yaml_files_recursively_skipping_hidden_and_editor_files() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        write(root, "a.yaml", &service("a"));
        write(root, "nested/deeper/b.yml", &service("b"));
        write(root, ".hidden.yaml", &service("hidden"));
        write(root, ".git/c.yaml", &service("c"));
        write(root, "d.yaml~", &service("d"));
        write(root, "#e.yaml#", &service("e"));
        write(root, "notes.txt", "not yaml at all: [");
        let report = ManifestDir::new(root).load();
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        let names: Vec<&str> = report.state.services.keys().map(|k| k.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert!(report.changed);
    }

    #[test]
    fn an_invalid_edit_keeps_the_last_valid_object_and_reports_why() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        write(root, "split.yaml", &format!("{}---\n{}", service("payment"), split("s", "90")));
        let mut dir = ManifestDir::new(root);
        assert_eq!(weight(&dir.load().state, "s"), Some(90_000));

        write(root, "split.yaml", &format!("{}---\n{}", service("payment"), split("s", "-5")));
        let report = dir.load();
        assert_eq!(weight(&report.state, "s"), Some(90_000), "last valid version kept");
        assert_eq!(report.errors.len(), 1);
        let err = &report.errors[0];
        assert_eq!(err.file, root.join("split.yaml").display().to_string());
        assert_eq!(err.kind.as_deref(), Some("TrafficSplit"));
        assert_eq!(err.object.as_deref(), Some("payments/s"));
        assert_eq!(err.field, "spec.backends[0].weight");
        assert_eq!(err.reason, "must not be negative (got -5)");
        assert!(report.changed);
        // The object is still located at its (now invalid) document.
        assert_eq!(
            dir.origin(Kind::TrafficSplit, &Key::new("payments", "s")),
            Some((root.join("split.yaml"), 1))
        );
        assert!(!dir.load().changed, "nothing changed on disk");

        write(root, "split.yaml", &format!("{}---\n{}", service("payment"), split("s", "50")));
        let report = dir.load();
        assert_eq!(weight(&report.state, "s"), Some(50_000));
        assert!(report.errors.is_empty());
    }

    #[test]
    fn a_yaml_syntax_error_keeps_every_object_of_that_file() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        write(root, "a.yaml", &format!("{}---\n{}", service("one"), service("two")));
        write(root, "b.yaml", &service("three"));
        let mut dir = ManifestDir::new(root);
        assert_eq!(dir.load().state.services.len(), 3);

        write(root, "a.yaml", &format!("{}---\nkind: [broken\n", service("one")));
        std::fs::remove_file(root.join("b.yaml")).unwrap();
        let report = dir.load();
        let names: Vec<&str> = report.state.services.keys().map(|k| k.name.as_str()).collect();
        assert_eq!(names, ["one", "two"], "b.yaml's object is gone, a.yaml's are kept");
        assert_eq!(report.errors.len(), 1);
        assert!(report.errors[0].reason.contains("invalid YAML"), "{}", report.errors[0]);
        assert!(report.errors[0].reason.contains("line 8"), "{}", report.errors[0]);
    }

    #[test]
    fn an_unreadable_file_keeps_its_objects() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        write(root, "a.yaml", &service("one"));
        let mut dir = ManifestDir::new(root);
        assert_eq!(dir.load().state.services.len(), 1);
        std::fs::write(root.join("a.yaml"), [0xff, 0xfe, 0x00]).unwrap();
        let report = dir.load();
        assert_eq!(report.state.services.len(), 1);
        assert_eq!(report.errors[0].reason, "cannot read file: not UTF-8 text");
    }

    #[test]
    fn a_deleted_file_removes_its_objects() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        write(root, "a.yaml", &service("one"));
        write(root, "b.yaml", &split("s", "1"));
        let mut dir = ManifestDir::new(root);
        let first = dir.load();
        assert_eq!(first.state.services.len(), 1);
        assert_eq!(first.state.split_first_seen.len(), 1);
        std::fs::remove_file(root.join("b.yaml")).unwrap();
        let report = dir.load();
        assert!(report.state.traffic_splits.is_empty());
        assert!(report.state.split_first_seen.is_empty(), "sequence dropped with the object");
        assert!(report.changed);
        assert_eq!(dir.origin(Kind::TrafficSplit, &Key::new("payments", "s")), None);
    }

    #[test]
    fn a_second_definition_is_an_error_and_the_first_wins() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        write(root, "a.yaml", &split("s", "1"));
        write(root, "b.yaml", &format!("{}---\n{}", split("t", "3"), split("s", "2")));
        let mut dir = ManifestDir::new(root);
        let report = dir.load();
        assert_eq!(weight(&report.state, "s"), Some(1000));
        assert_eq!(weight(&report.state, "t"), Some(3000));
        assert_eq!(report.errors.len(), 1);
        let err = &report.errors[0];
        assert_eq!(err.file, root.join("b.yaml").display().to_string());
        assert_eq!(err.object.as_deref(), Some("payments/s"));
        let a = root.join("a.yaml").display().to_string();
        assert!(err.reason.contains(&format!("also defined in {a} (document at line 1)")), "{err}");
        assert_eq!(
            dir.origin(Kind::TrafficSplit, &Key::new("payments", "s")),
            Some((root.join("a.yaml"), 0))
        );
        assert_eq!(
            dir.origin(Kind::TrafficSplit, &Key::new("payments", "t")),
            Some((root.join("b.yaml"), 0))
        );
    }

    #[test]
    fn split_sequence_numbers_follow_first_sight_and_survive_reloads() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        write(root, "b.yaml", &split("old", "1"));
        let mut dir = ManifestDir::new(root);
        dir.load();
        write(root, "a.yaml", &split("new", "1"));
        let state = dir.load().state;
        let seq = |name: &str| state.split_first_seen.get(&Key::new("payments", name)).copied();
        assert_eq!(seq("old"), Some(0));
        assert_eq!(seq("new"), Some(1), "a.yaml sorts first but was seen later");
    }

    #[test]
    fn the_shipped_examples_load_without_errors() {
        // Each example is a mesh of its own (the Kubernetes one repeats the payments services).
        let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
        for example in [examples.join("payments"), examples.join("kubernetes/payments")] {
            let report = ManifestDir::new(&example).load();
            assert!(report.errors.is_empty(), "{}: {:#?}", example.display(), report.errors);
            assert!(!report.state.services.is_empty(), "{}", example.display());
        }
    }

    #[test]
    fn a_missing_root_is_reported() {
        let tmp = tempfile::tempdir().unwrap();
        let report = ManifestDir::new(tmp.path().join("nope")).load();
        assert_eq!(report.errors.len(), 1);
        assert!(report.errors[0].reason.starts_with("cannot read directory"), "{}", report.errors[0]);
    }
}
