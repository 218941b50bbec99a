//! `weft apply`: validate every document, then write each object where it lives,
//! atomically, leaving every other byte of its file as it was.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::{Entry, ManifestDir};
use crate::model::{Key, Kind};
use crate::source::manifest::{self, ManifestError, Object, Outcome, RawDoc};

/// What an apply did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplyOutcome {
    /// The files written, in order.
    pub written: Vec<PathBuf>,
    /// One line per object, as kubectl prints them: `TrafficSplit payments/payment-split
    /// configured` (or `created`, or `unchanged` when the object is already exactly so).
    pub objects: Vec<String>,
}

/// One object to write and the text of its document.
struct Incoming<'t> {
    object: Object,
    body: String,
    raw: RawDoc<'t>,
}

impl ManifestDir {
    /// Validates every document of `text` and, only if all are valid, writes them into
    /// the directory; `file_label` names the input in errors.
    ///
    /// An object that already lives in a file has exactly its document replaced there
    /// (other documents, comments included, are kept byte for byte); a new object goes to
    /// `<root>/applied/<namespace>.<kind>.<name>.yaml` (`namespace.<name>.yaml` for a
    /// Namespace). Each file is replaced atomically (temporary file, fsync, rename, fsync
    /// of the directory), and the directory is reloaded before and after, so the next
    /// [`load`](Self::load) sees the change. Kinds weft does not handle are refused.
    pub fn apply(&mut self, file_label: &str, text: &str) -> Result<ApplyOutcome, Vec<ManifestError>> {
        let incoming = validate(file_label, text)?;
        // Locations must be those of the files as they are now (reloaded only if a file
        // changed since the last load).
        self.poll();

        let mut changes: BTreeMap<PathBuf, FileChange<'_>> = BTreeMap::new();
        let mut lines = Vec::new();
        let mut errors = Vec::new();
        for item in &incoming {
            let (kind, key) = (item.object.kind(), item.object.key());
            let verb = match self.place(&item.object) {
                Err(reason) => {
                    errors.push(ManifestError::object_error(file_label, kind, &key, "", reason));
                    continue;
                }
                Ok(Placement::Unchanged) => "unchanged",
                Ok(Placement::Replace { path, doc_index }) => {
                    let change = changes.entry(path).or_default();
                    change.replace.push((doc_index, &item.body));
                    "configured"
                }
                Ok(Placement::New(path)) => {
                    changes.entry(path).or_default().append.push(&item.body);
                    "created"
                }
            };
            lines.push(format!("{kind} {} {verb}", manifest::object_name(&key)));
        }
        if !errors.is_empty() {
            return Err(errors);
        }

        let mut written = Vec::new();
        let mut plan: Vec<(PathBuf, String)> = Vec::new();
        for (path, change) in changes {
            let current =
                self.last_scan.as_ref().and_then(|scan| scan.get(&path)).and_then(|read| read.as_ref().ok());
            let text = change.apply_to(current.map_or("", |t| &**t));
            plan.push((path, text));
        }
        for (path, text) in plan {
            if let Err(e) = write_atomic(&path, text.as_bytes()) {
                let reason = format!("cannot write: {e}");
                return Err(vec![ManifestError::file_error(path.display().to_string(), reason)]);
            }
            tracing::info!(path = %path.display(), "applied manifest written");
            written.push(path);
        }
        self.load();
        Ok(ApplyOutcome { written, objects: lines })
    }

    /// Where an incoming object goes, given the last load.
    fn place(&self, object: &Object) -> Result<Placement, String> {
        let id = (object.kind(), object.key());
        match (self.objects.get(&id), self.refused_at.get(&id)) {
            (Some(entry), _) if !entry.located => Err(format!(
                "is defined in {}, which cannot be read right now; fix that file first",
                entry.origin.path.display()
            )),
            // A refused document is rewritten even when the object is its last valid version.
            (Some(entry), None) if *entry.object == *object => Ok(Placement::Unchanged),
            (Some(Entry { origin: at, .. }), _) | (None, Some(at)) => {
                Ok(Placement::Replace { path: at.path.clone(), doc_index: at.doc_index })
            }
            (None, None) => Ok(Placement::New(self.new_file_path(id.0, &id.1))),
        }
    }

    fn new_file_path(&self, kind: Kind, key: &Key) -> PathBuf {
        let kind = kind.as_str().to_ascii_lowercase();
        let name = if key.namespace.is_empty() {
            format!("{kind}.{}.yaml", key.name)
        } else {
            format!("{}.{kind}.{}.yaml", key.namespace, key.name)
        };
        self.root.join("applied").join(name)
    }
}

/// Where an incoming object is written.
enum Placement {
    /// It is already exactly so: nothing to write.
    Unchanged,
    /// Replace the document it lives in.
    Replace { path: PathBuf, doc_index: usize },
    /// Add it to this (usually new) file.
    New(PathBuf),
}

/// The edits an apply makes to one file.
#[derive(Default)]
struct FileChange<'b> {
    /// Documents to replace: index and new body.
    replace: Vec<(usize, &'b str)>,
    /// Documents to add at the end.
    append: Vec<&'b str>,
}

impl FileChange<'_> {
    /// The file's new text, given its current text (empty for a new file).
    fn apply_to(&self, current: &str) -> String {
        let mut text = replace_documents(current, &self.replace);
        for body in &self.append {
            if !text.trim().is_empty() {
                if !text.ends_with('\n') {
                    text.push('\n');
                }
                text.push_str("---\n");
            }
            text.push_str(body);
        }
        text
    }
}

/// Parses every document of an apply; any problem refuses the whole apply.
fn validate<'t>(file_label: &str, text: &'t str) -> Result<Vec<Incoming<'t>>, Vec<ManifestError>> {
    let mut incoming: Vec<Incoming<'t>> = Vec::new();
    let mut errors = Vec::new();
    for raw in manifest::split_documents(text) {
        match manifest::parse_document(file_label, &raw) {
            Outcome::Empty => {}
            Outcome::Skipped { kind } => errors.push(ManifestError {
                file: file_label.to_string(),
                kind: Some(kind.clone()),
                object: None,
                field: "kind".into(),
                reason: format!("kind {kind} is not handled by weft"),
            }),
            Outcome::Invalid { error, .. } => errors.push(error),
            Outcome::Parsed(object) => {
                let twice = incoming
                    .iter()
                    .find(|other| other.object.kind() == object.kind() && other.object.key() == object.key());
                if let Some(first) = twice {
                    errors.push(ManifestError::object_error(
                        file_label,
                        object.kind(),
                        &object.key(),
                        "metadata.name",
                        format!("is defined twice (also the document at line {})", first.raw.first_line),
                    ));
                    continue;
                }
                let body = document_body(raw.text);
                incoming.push(Incoming { object, body, raw });
            }
        }
    }
    if incoming.is_empty() && errors.is_empty() {
        errors.push(ManifestError::file_error(file_label, "no objects to apply"));
    }
    if errors.is_empty() { Ok(incoming) } else { Err(errors) }
}

/// A `---` line that carries nothing but an optional comment.
fn is_plain_separator(line: &str) -> bool {
    manifest::is_separator(line) && {
        let rest = line.trim_end_matches(['\n', '\r'])[3..].trim();
        rest.is_empty() || rest.starts_with('#')
    }
}

/// A document's text without its leading plain `---` line, ending in a newline.
fn document_body(text: &str) -> String {
    let first_len = text.split_inclusive('\n').next().map_or(0, str::len);
    let mut body =
        if is_plain_separator(&text[..first_len]) { text[first_len..].to_string() } else { text.to_string() };
    if !body.ends_with('\n') {
        body.push('\n');
    }
    body
}

/// Replaces documents of `current` by index; everything else is kept byte for byte.
fn replace_documents(current: &str, replacements: &[(usize, &str)]) -> String {
    let mut out = String::with_capacity(current.len());
    for doc in manifest::split_documents(current) {
        let Some((_, body)) = replacements.iter().find(|(i, _)| *i == doc.index) else {
            out.push_str(doc.text);
            continue;
        };
        if doc.index > 0 {
            // Keep the section's own `---` line (and its comment) unless it carries content.
            let first_len = doc.text.split_inclusive('\n').next().map_or(0, str::len);
            let first = &doc.text[..first_len];
            if is_plain_separator(first) && first.ends_with('\n') {
                out.push_str(first);
            } else {
                out.push_str("---\n");
            }
        }
        out.push_str(body);
    }
    out
}

/// Replaces `path` with `contents` so that a crash leaves either the old or the new file:
/// write a temporary file in the same directory, fsync it, rename it over the target,
/// fsync the directory.
fn write_atomic(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().ok_or_else(|| std::io::Error::other("path has no parent directory"))?;
    if !dir.exists() {
        std::fs::create_dir_all(dir)?;
        if let Some(parent) = dir.parent() {
            sync_dir(parent)?;
        }
    }
    let name = path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default();
    // Hidden, so a reload that races the write never reads it.
    let tmp = dir.join(format!(".{name}.weft-tmp-{}", std::process::id()));
    let result = (|| {
        let mut file = File::create(&tmp)?;
        if let Ok(meta) = std::fs::metadata(path) {
            file.set_permissions(meta.permissions())?;
        }
        file.write_all(contents)?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&tmp, path)?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Makes a rename in `dir` durable.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    File::open(dir)?.sync_all()?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::super::tests::{service, split, weight, write};
    use super::*;

    #[test]
    fn replacing_a_document_keeps_every_other_byte() {
        let current = "# header comment\napiVersion: v1 # a\n---   # second\nold: 2\n--- {inline: 3}\n---\n# trailing comment\nlast: 4";
        let cases: &[(&[(usize, &str)], &str)] = &[
            (
                &[(1, "new: 2\n")],
                "# header comment\napiVersion: v1 # a\n---   # second\nnew: 2\n--- {inline: 3}\n---\n# trailing comment\nlast: 4",
            ),
            (
                &[(0, "new: 1\n")],
                "new: 1\n---   # second\nold: 2\n--- {inline: 3}\n---\n# trailing comment\nlast: 4",
            ),
            (
                &[(2, "new: 3\n")],
                "# header comment\napiVersion: v1 # a\n---   # second\nold: 2\n---\nnew: 3\n---\n# trailing comment\nlast: 4",
            ),
            (
                &[(3, "new: 4\n"), (1, "new: 2\n")],
                "# header comment\napiVersion: v1 # a\n---   # second\nnew: 2\n--- {inline: 3}\n---\nnew: 4\n",
            ),
        ];
        for (replacements, want) in cases {
            assert_eq!(replace_documents(current, replacements), *want, "{replacements:?}");
        }
    }

    #[test]
    fn appended_documents_get_a_separator_only_after_content() {
        let change = FileChange { replace: vec![], append: vec!["b: 2\n", "c: 3\n"] };
        assert_eq!(change.apply_to(""), "b: 2\n---\nc: 3\n");
        assert_eq!(change.apply_to("# only a comment\n"), "# only a comment\n---\nb: 2\n---\nc: 3\n");
        assert_eq!(change.apply_to("a: 1"), "a: 1\n---\nb: 2\n---\nc: 3\n");
    }

    #[test]
    fn document_bodies_drop_only_a_plain_separator() {
        assert_eq!(document_body("---\na: 1"), "a: 1\n");
        assert_eq!(document_body("--- # c\na: 1\n"), "a: 1\n");
        assert_eq!(document_body("# c\na: 1\n"), "# c\na: 1\n");
        assert_eq!(document_body("--- {a: 1}\n"), "--- {a: 1}\n");
    }

    #[test]
    fn apply_replaces_a_document_in_a_multi_document_file_keeping_comments() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let original = format!(
            "# payments: the canary\n{}---\n# the split, edited by weft apply\n{}---\n# keep me\n{}",
            service("payment"),
            split("payment-split", "90"),
            service("payment-v1"),
        );
        write(root, "payments.yaml", &original);
        let mut dir = ManifestDir::new(root);
        dir.load();

        let outcome =
            dir.apply("canary.yaml", &format!("# shifted\n{}", split("payment-split", "50"))).unwrap();
        assert_eq!(outcome.written, vec![root.join("payments.yaml")]);
        assert_eq!(outcome.objects, vec!["TrafficSplit payments/payment-split configured"]);

        let text = std::fs::read_to_string(root.join("payments.yaml")).unwrap();
        let want = format!(
            "# payments: the canary\n{}---\n# shifted\n{}---\n# keep me\n{}",
            service("payment"),
            split("payment-split", "50"),
            service("payment-v1"),
        );
        assert_eq!(text, want);
        assert_eq!(weight(&dir.load().state, "payment-split"), Some(50_000));

        let again = dir.apply("canary.yaml", &split("payment-split", "50")).unwrap();
        assert!(again.written.is_empty());
        assert_eq!(again.objects, vec!["TrafficSplit payments/payment-split unchanged"]);
    }

    #[test]
    fn apply_creates_new_objects_under_applied() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let mut dir = ManifestDir::new(root);
        let text = format!(
            "---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: payments}}\n---\n{}---\n{}",
            service("payment"),
            split("s", "1")
        );
        let outcome = dir.apply("-", &text).unwrap();
        let applied = root.join("applied");
        assert_eq!(
            outcome.written,
            vec![
                applied.join("namespace.payments.yaml"),
                applied.join("payments.service.payment.yaml"),
                applied.join("payments.trafficsplit.s.yaml"),
            ]
        );
        assert_eq!(
            outcome.objects,
            vec![
                "Namespace payments created",
                "Service payments/payment created",
                "TrafficSplit payments/s created"
            ]
        );
        assert_eq!(
            std::fs::read_to_string(applied.join("payments.trafficsplit.s.yaml")).unwrap(),
            split("s", "1")
        );
        let report = dir.load();
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        assert_eq!(weight(&report.state, "s"), Some(1000));
        assert!(report.state.namespaces.contains_key("payments"));
        let leftovers: Vec<_> = std::fs::read_dir(&applied)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with('.'))
            .collect();
        assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    }

    #[test]
    fn apply_with_an_invalid_document_writes_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        write(root, "a.yaml", &split("s", "1"));
        let before = std::fs::read_to_string(root.join("a.yaml")).unwrap();
        let mut dir = ManifestDir::new(root);
        dir.load();
        let text = format!("{}---\n{}---\n{}", split("s", "5"), service("new"), split("t", "-1"));
        let errors = dir.apply("input.yaml", &text).unwrap_err();
        assert_eq!(errors.len(), 1);
        assert_eq!(
            errors[0].to_string(),
            "input.yaml: TrafficSplit payments/t: spec.backends[0].weight: must not be negative (got -1)"
        );
        assert_eq!(std::fs::read_to_string(root.join("a.yaml")).unwrap(), before);
        assert!(!root.join("applied").exists());
        assert_eq!(weight(&dir.load().state, "s"), Some(1000));
    }

    #[test]
    fn apply_refuses_kinds_weft_does_not_handle_and_empty_input() {
        let tmp = tempfile::tempdir().unwrap();
        let mut dir = ManifestDir::new(tmp.path());
        let deployment =
            format!("{}---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: web}}\n", service("a"));
        let errors = dir.apply("d.yaml", &deployment).unwrap_err();
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].field, "kind");
        assert_eq!(errors[0].reason, "kind Deployment is not handled by weft");
        let errors = dir.apply("e.yaml", "# nothing\n").unwrap_err();
        assert_eq!(errors[0].reason, "no objects to apply");
        let twice = format!("{}---\n{}", service("a"), service("a"));
        let errors = dir.apply("t.yaml", &twice).unwrap_err();
        assert!(errors[0].reason.contains("is defined twice"), "{}", errors[0]);
        assert!(std::fs::read_dir(tmp.path()).unwrap().next().is_none(), "nothing written");
    }

    #[test]
    fn apply_fixes_a_refused_document_in_place() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        write(root, "a.yaml", &format!("{}---\n{}", service("payment"), split("s", "-1")));
        let mut dir = ManifestDir::new(root);
        assert_eq!(dir.load().errors.len(), 1);
        let outcome = dir.apply("fix.yaml", &split("s", "2")).unwrap();
        assert_eq!(outcome.objects, vec!["TrafficSplit payments/s configured"]);
        assert_eq!(outcome.written, vec![root.join("a.yaml")]);
        let report = dir.load();
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        assert_eq!(weight(&report.state, "s"), Some(2000));
    }

    #[test]
    fn apply_of_the_last_valid_version_still_rewrites_the_refused_document() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        write(root, "a.yaml", &split("s", "1"));
        let mut dir = ManifestDir::new(root);
        dir.load();
        write(root, "a.yaml", &split("s", "-1"));
        assert_eq!(dir.load().errors.len(), 1);
        let outcome = dir.apply("fix.yaml", &split("s", "1")).unwrap();
        assert_eq!(outcome.objects, vec!["TrafficSplit payments/s configured"]);
        assert!(dir.load().errors.is_empty());
        assert_eq!(std::fs::read_to_string(root.join("a.yaml")).unwrap(), split("s", "1"));
    }

    #[test]
    fn apply_refuses_objects_of_a_file_with_a_syntax_error() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        write(root, "a.yaml", &split("s", "1"));
        let mut dir = ManifestDir::new(root);
        dir.load();
        write(root, "a.yaml", "kind: [broken\n");
        let errors = dir.apply("fix.yaml", &split("s", "2")).unwrap_err();
        assert!(errors[0].reason.contains("cannot be read right now"), "{}", errors[0]);
        assert_eq!(std::fs::read_to_string(root.join("a.yaml")).unwrap(), "kind: [broken\n");
    }
}
