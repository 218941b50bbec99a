//! Parsing and validation of Kubernetes-style YAML manifests into model objects.
//!
//! Each YAML document is read into a generic value and then extracted by hand,
//! field by field, so that every error names the file, the object, the field
//! path and the reason (`payments.yaml: TrafficSplit payments/split:
//! spec.backends[1].weight: must not be negative (got "-5")`).
//!
//! Documents of kinds weft does not handle (Deployment, ConfigMap...) are
//! skipped; a kind weft handles at a version it does not know is an error.

mod fields;
mod kubernetes;
mod policy;
mod smi;

use crate::model::{
    EndpointSlice, HttpRouteGroup, Key, Kind, Namespace, Pod, Service, TcpRoute, TrafficSplit, TrafficTarget,
};
use fields::{FieldError, FieldResult, Node};

/// One object weft handles, as read from a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Object {
    /// `v1/Namespace`.
    Namespace(Namespace),
    /// `v1/Service`.
    Service(Service),
    /// `v1/Pod`.
    Pod(Pod),
    /// `discovery.k8s.io/v1/EndpointSlice`.
    EndpointSlice(EndpointSlice),
    /// `split.smi-spec.io/*/TrafficSplit`.
    TrafficSplit(TrafficSplit),
    /// `specs.smi-spec.io/*/HTTPRouteGroup`.
    HttpRouteGroup(HttpRouteGroup),
    /// `specs.smi-spec.io/*/TCPRoute`.
    TcpRoute(TcpRoute),
    /// `access.smi-spec.io/*/TrafficTarget`.
    TrafficTarget(TrafficTarget),
}

impl Object {
    /// The object's kind.
    pub fn kind(&self) -> Kind {
        match self {
            Object::Namespace(_) => Kind::Namespace,
            Object::Service(_) => Kind::Service,
            Object::Pod(_) => Kind::Pod,
            Object::EndpointSlice(_) => Kind::EndpointSlice,
            Object::TrafficSplit(_) => Kind::TrafficSplit,
            Object::HttpRouteGroup(_) => Kind::HttpRouteGroup,
            Object::TcpRoute(_) => Kind::TcpRoute,
            Object::TrafficTarget(_) => Kind::TrafficTarget,
        }
    }

    /// The object's key; a Namespace's is namespace `""` and its name.
    pub fn key(&self) -> Key {
        match self {
            Object::Namespace(ns) => Key::new("", ns.name.clone()),
            Object::Service(o) => o.key.clone(),
            Object::Pod(o) => o.key.clone(),
            Object::EndpointSlice(o) => o.key.clone(),
            Object::TrafficSplit(o) => o.key.clone(),
            Object::HttpRouteGroup(o) => o.key.clone(),
            Object::TcpRoute(o) => o.key.clone(),
            Object::TrafficTarget(o) => o.key.clone(),
        }
    }
}

/// Why a manifest document was refused: what a user sees, so it names the
/// file, the object, the field and the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", render(.file, .kind.as_deref(), .object.as_deref(), .field, .reason))]
pub struct ManifestError {
    /// The file (or label, for applied text) the document came from.
    pub file: String,
    /// The document's `kind`, when it could be read.
    pub kind: Option<String>,
    /// The object, `namespace/name` (a Namespace: its name), when it could be read.
    pub object: Option<String>,
    /// The field path, e.g. `spec.backends[1].weight`; empty for the whole document.
    pub field: String,
    /// What is wrong.
    pub reason: String,
}

/// `file: Kind ns/name: field: reason`, leaving out what is unknown or empty (objects
/// read from the Kubernetes API have no file).
fn render(file: &str, kind: Option<&str>, object: Option<&str>, field: &str, reason: &str) -> String {
    let object = match (kind, object) {
        (Some(k), Some(o)) => format!("{k} {o}"),
        (Some(k), None) => k.to_string(),
        (None, Some(o)) => o.to_string(),
        (None, None) => String::new(),
    };
    [file, object.as_str(), field, reason]
        .into_iter()
        .filter(|part| !part.is_empty())
        .collect::<Vec<_>>()
        .join(": ")
}

impl ManifestError {
    /// An error about a whole file or document, before any object could be read.
    pub fn file_error(file: impl Into<String>, reason: impl Into<String>) -> Self {
        Self { file: file.into(), kind: None, object: None, field: String::new(), reason: reason.into() }
    }

    /// An error about an object of a known kind and key.
    pub fn object_error(
        file: impl Into<String>,
        kind: Kind,
        key: &Key,
        field: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        Self {
            file: file.into(),
            kind: Some(kind.as_str().to_string()),
            object: Some(object_name(key)),
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// `namespace/name`, or just the name for cluster-scoped objects.
pub(super) fn object_name(key: &Key) -> String {
    if key.namespace.is_empty() { key.name.clone() } else { key.to_string() }
}

/// An object read from one document of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedDoc {
    /// The object.
    pub object: Object,
    /// The document's index in its file: sections split on `---` lines, counting
    /// from 0, including empty sections (a file starting with `---` has an empty
    /// document 0).
    pub doc_index: usize,
}

/// Parses every document of a (multi-document) YAML file.
///
/// Returns one entry per non-empty document of a kind weft handles: the object, or
/// why the document was refused. `file` is only used to label errors.
pub fn parse_documents(file: &str, text: &str) -> Vec<Result<ParsedDoc, ManifestError>> {
    split_documents(text)
        .iter()
        .filter_map(|raw| match parse_document(file, raw) {
            Outcome::Parsed(object) => Some(Ok(ParsedDoc { object, doc_index: raw.index })),
            Outcome::Invalid { error, .. } => Some(Err(error)),
            Outcome::Empty | Outcome::Skipped { .. } => None,
        })
        .collect()
}

/// One `---`-separated section of a file, as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct RawDoc<'t> {
    /// Index of the section in the file.
    pub(super) index: usize,
    /// Line number (1-based) of the section's first line.
    pub(super) first_line: usize,
    /// The section's text, including its leading `---` line if any.
    pub(super) text: &'t str,
}

/// Whether a line (without its line break) starts a new YAML document.
/// YAML forbids `---` at the start of a line inside a document, so this split
/// is exact even for block scalars.
pub(super) fn is_separator(line: &str) -> bool {
    let line = line.trim_end_matches(['\n', '\r']);
    line.strip_prefix("---").is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '\t']))
}

/// Splits a file into its documents; concatenating every `text` gives the file back.
pub(super) fn split_documents(text: &str) -> Vec<RawDoc<'_>> {
    let mut docs = Vec::new();
    let (mut start, mut first_line, mut offset) = (0, 1, 0);
    for (i, line) in text.split_inclusive('\n').enumerate() {
        if is_separator(line) && offset > 0 {
            docs.push(RawDoc { index: docs.len(), first_line, text: &text[start..offset] });
            start = offset;
            first_line = i + 1;
        } else if is_separator(line) {
            // A separator on the first line: document 0 is empty.
            docs.push(RawDoc { index: 0, first_line: 1, text: "" });
        }
        offset += line.len();
    }
    docs.push(RawDoc { index: docs.len(), first_line, text: &text[start..] });
    docs
}

/// What one document turned out to be.
#[derive(Debug, Clone)]
pub(super) enum Outcome {
    /// Nothing but comments or whitespace.
    Empty,
    /// A kind weft does not handle.
    Skipped {
        /// The document's `kind`.
        kind: String,
    },
    /// A valid object.
    Parsed(Object),
    /// A refused document, with the object it defines when that could be read.
    Invalid { error: ManifestError, identity: Option<(Kind, Key)> },
}

/// How weft reads each kind: its API group and the versions it knows.
struct KindSpec {
    kind: Kind,
    group: &'static str,
    versions: &'static [&'static str],
}

const SMI_SPLIT: &[&str] = &["v1alpha1", "v1alpha2", "v1alpha3", "v1alpha4"];
const SMI_ACCESS: &[&str] = &["v1alpha1", "v1alpha2", "v1alpha3"];

const KINDS: &[KindSpec] = &[
    KindSpec { kind: Kind::Namespace, group: "", versions: &["v1"] },
    KindSpec { kind: Kind::Service, group: "", versions: &["v1"] },
    KindSpec { kind: Kind::Pod, group: "", versions: &["v1"] },
    KindSpec { kind: Kind::EndpointSlice, group: "discovery.k8s.io", versions: &["v1"] },
    KindSpec { kind: Kind::TrafficSplit, group: "split.smi-spec.io", versions: SMI_SPLIT },
    KindSpec { kind: Kind::HttpRouteGroup, group: "specs.smi-spec.io", versions: SMI_SPLIT },
    KindSpec { kind: Kind::TcpRoute, group: "specs.smi-spec.io", versions: SMI_SPLIT },
    KindSpec { kind: Kind::TrafficTarget, group: "access.smi-spec.io", versions: SMI_ACCESS },
];

/// What the kind-specific parsers get: the document and its checked envelope.
struct Envelope<'a> {
    /// The document root.
    root: Node<'a>,
    /// `metadata`.
    metadata: Node<'a>,
    /// Namespace (default `default`; `""` for a Namespace) and name.
    key: Key,
    /// `apiVersion` as written, e.g. `split.smi-spec.io/v1alpha1`.
    api_version: &'a str,
    /// The version number of an SMI `v1alphaN` API (0 for others).
    alpha: u8,
}

/// Reads one document.
pub(super) fn parse_document(file: &str, raw: &RawDoc<'_>) -> Outcome {
    let value = match read_yaml(raw) {
        Ok(value) => value,
        Err(reason) => {
            return Outcome::Invalid { error: ManifestError::file_error(file, reason), identity: None };
        }
    };
    parse_value(file, &value)
}

/// Reads one object from its generic value: a YAML document, or an object from the
/// Kubernetes API as JSON. `file` only labels errors (empty for API objects).
pub(super) fn parse_value(file: &str, value: &serde_json::Value) -> Outcome {
    if value.is_null() {
        return Outcome::Empty;
    }
    let root = Node::root(value);
    // Refused before the object's name could be read.
    let invalid = |kind: Option<&str>, e: FieldError| {
        let error = ManifestError {
            file: file.to_string(),
            kind: kind.map(str::to_string),
            object: None,
            field: e.field,
            reason: e.reason,
        };
        Outcome::Invalid { error, identity: None }
    };
    if !value.is_object() {
        let e = root.error("a document must be a mapping with apiVersion, kind and metadata");
        return invalid(None, e);
    }
    let (api_version, kind_name) = match (root.req_str("apiVersion"), root.req_str("kind")) {
        (Ok(a), Ok(k)) => (a, k),
        (Err(e), Ok(k)) => return invalid(Some(k), e),
        (_, Err(e)) => return invalid(None, e),
    };
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    if kind_name == "List" && group.is_empty() {
        let e = root.error("a List is not supported: write each object as its own document");
        return invalid(Some(kind_name), e);
    }
    let Some(spec) = KINDS.iter().find(|s| s.kind.as_str() == kind_name && s.group == group) else {
        return Outcome::Skipped { kind: kind_name.to_string() };
    };
    let kind = spec.kind;
    let (metadata, key) = match envelope_key(&root, kind) {
        Ok(found) => found,
        Err(e) => return invalid(Some(kind_name), e),
    };
    let fail = |e: FieldError| Outcome::Invalid {
        error: ManifestError::object_error(file, kind, &key, e.field, e.reason),
        identity: Some((kind, key.clone())),
    };
    if !spec.versions.contains(&version) {
        let supported: Vec<String> = spec
            .versions
            .iter()
            .map(|v| if group.is_empty() { v.to_string() } else { format!("{group}/{v}") })
            .collect();
        return fail(FieldError {
            field: "apiVersion".into(),
            reason: format!(
                "{kind_name} {api_version} is not supported; weft reads {}",
                supported.join(", ")
            ),
        });
    }
    let alpha = version.strip_prefix("v1alpha").and_then(|n| n.parse().ok()).unwrap_or(0);
    let env = Envelope { root, metadata, key: key.clone(), api_version, alpha };
    let parsed = match kind {
        Kind::Namespace => kubernetes::namespace(&env).map(Object::Namespace),
        Kind::Service => kubernetes::service(&env).map(Object::Service),
        Kind::Pod => kubernetes::pod(&env).map(Object::Pod),
        Kind::EndpointSlice => kubernetes::endpoint_slice(&env).map(Object::EndpointSlice),
        Kind::TrafficSplit => smi::traffic_split(&env).map(Object::TrafficSplit),
        Kind::HttpRouteGroup => smi::http_route_group(&env).map(Object::HttpRouteGroup),
        Kind::TcpRoute => smi::tcp_route(&env).map(Object::TcpRoute),
        Kind::TrafficTarget => smi::traffic_target(&env).map(Object::TrafficTarget),
    };
    match parsed {
        Ok(object) => Outcome::Parsed(object),
        Err(e) => fail(e),
    }
}

/// Reads a document's YAML into a generic value; the error is the parser's message, with
/// its line numbers those of the whole file.
fn read_yaml(raw: &RawDoc<'_>) -> Result<serde_json::Value, String> {
    // The document is parsed alone (padding it to its place in the file made parsing a long
    // file quadratic); the parser's line numbers are shifted to the file's instead.
    let invalid = |e: serde_yaml_ng::Error| {
        format!("invalid YAML: {}", shift_lines(&e.to_string(), raw.first_line.saturating_sub(1)))
    };
    let mut yaml: serde_yaml_ng::Value = serde_yaml_ng::from_str(raw.text).map_err(invalid)?;
    yaml.apply_merge().map_err(invalid)?;
    serde_json::to_value(&yaml)
        .map_err(|e| format!("unsupported YAML in the document starting at line {}: {e}", raw.first_line))
}

/// `message` with every `line N` made `line N+offset`.
fn shift_lines(message: &str, offset: usize) -> String {
    const WORD: &str = "line ";
    let mut out = String::with_capacity(message.len() + 8);
    let mut rest = message;
    while let Some(at) = rest.find(WORD) {
        let (before, after) = rest.split_at(at + WORD.len());
        out.push_str(before);
        let digits = after.bytes().take_while(u8::is_ascii_digit).count();
        match after[..digits].parse::<usize>() {
            Ok(line) => out.push_str(&(line + offset).to_string()),
            Err(_) => out.push_str(&after[..digits]),
        }
        rest = &after[digits..];
    }
    out.push_str(rest);
    out
}

/// `metadata` and the object's key, with the name checked as Kubernetes checks it.
fn envelope_key<'a>(root: &Node<'a>, kind: Kind) -> FieldResult<(Node<'a>, Key)> {
    let metadata = root.req("metadata")?;
    let name_node = metadata.req("name")?;
    let name = name_node.str()?;
    let check = match kind {
        Kind::Namespace => fields::dns_label(name),
        Kind::Service => fields::dns_1035_label(name),
        _ => fields::dns_subdomain(name),
    };
    check.map_err(|reason| name_node.error(reason))?;
    if kind == Kind::Namespace {
        return Ok((metadata, Key::new("", name)));
    }
    let namespace = match metadata.get("namespace")? {
        Some(node) => {
            let ns = node.str()?;
            fields::dns_label(ns).map_err(|reason| node.error(reason))?;
            ns
        }
        None => "default",
    };
    Ok((metadata, Key::new(namespace, name)))
}

/// `weft.io/inject` from an object's annotations.
fn inject_annotation(metadata: &Node<'_>) -> FieldResult<Option<bool>> {
    let Some(annotations) = metadata.get("annotations")? else {
        return Ok(None);
    };
    let Some((_, node)) =
        annotations.entries()?.into_iter().find(|(k, _)| *k == crate::model::INJECT_ANNOTATION)
    else {
        return Ok(None);
    };
    match node.str()? {
        "enabled" => Ok(Some(true)),
        "disabled" => Ok(Some(false)),
        other => Err(node.error(format!("must be \"enabled\" or \"disabled\" (got \"{other}\")"))),
    }
}

/// Parses a single-document manifest, for the kind parsers' tests.
#[cfg(test)]
fn parse_one(yaml: &str) -> Result<Object, ManifestError> {
    let mut docs = parse_documents("test.yaml", yaml);
    assert_eq!(docs.len(), 1, "expected one document in {yaml}");
    docs.remove(0).map(|d| d.object)
}

/// Asserts that a manifest is refused for `field` with a reason containing `reason`.
#[cfg(test)]
fn assert_refused(name: &str, yaml: &str, field: &str, reason: &str) {
    match parse_one(yaml) {
        Ok(o) => panic!("{name}: accepted: {o:?}"),
        Err(e) => {
            assert_eq!(e.field, field, "{name}: {e}");
            assert!(e.reason.contains(reason), "{name}: want reason containing {reason:?}: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn split_keeps_every_byte_and_counts_empty_sections() {
        let cases: &[(&str, &[(usize, &str)])] = &[
            ("a: 1\n", &[(1, "a: 1\n")]),
            ("---\na: 1\n", &[(1, ""), (1, "---\na: 1\n")]),
            ("a: 1\n---\nb: 2\n--- # c\nc: 3", &[(1, "a: 1\n"), (2, "---\nb: 2\n"), (4, "--- # c\nc: 3")]),
            ("a: |\n  ---\n  x\n----\n", &[(1, "a: |\n  ---\n  x\n----\n")]),
            ("a: 1\r\n---\r\nb: 2\r\n", &[(1, "a: 1\r\n"), (2, "---\r\nb: 2\r\n")]),
            ("", &[(1, "")]),
        ];
        for (text, want) in cases {
            let docs = split_documents(text);
            let got: Vec<(usize, &str)> = docs.iter().map(|d| (d.first_line, d.text)).collect();
            assert_eq!(&got, want, "{text:?}");
            assert_eq!(docs.iter().map(|d| d.text).collect::<String>(), *text);
            assert!(docs.iter().enumerate().all(|(i, d)| d.index == i));
        }
    }

    #[test]
    fn multi_document_files_yield_one_entry_per_handled_document() {
        let text = "\
# leading comment
---
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
---
# only a comment
---
apiVersion: v1
kind: ConfigMap
metadata: {name: cfg}
---
apiVersion: serving.knative.dev/v1
kind: Service
metadata: {name: knative}
---
apiVersion: v1
kind: Namespace
metadata: {name: Bad_Name}
---
apiVersion: v1
kind: Namespace
metadata: {name: two}
";
        let docs = parse_documents("all.yaml", text);
        assert_eq!(docs.len(), 3, "{docs:?}");
        let first = docs[0].as_ref().unwrap();
        assert_eq!(first.doc_index, 1);
        assert_eq!(first.object.key(), Key::new("", "shop"));
        assert_eq!(first.object.kind(), Kind::Namespace);
        let err = docs[1].as_ref().unwrap_err();
        assert_eq!(err.field, "metadata.name");
        assert_eq!(docs[2].as_ref().unwrap().doc_index, 7);
    }

    #[test]
    fn envelope_errors_name_the_field() {
        let cases: &[(&str, &str, &str, &str)] = &[
            ("scalar document", "just text", "", "must be a mapping"),
            ("no kind", "apiVersion: v1\nmetadata: {name: a}", "kind", "is required"),
            ("no apiVersion", "kind: Service\nmetadata: {name: a}", "apiVersion", "is required"),
            ("no metadata", "apiVersion: v1\nkind: Service", "metadata", "is required"),
            ("no name", "apiVersion: v1\nkind: Pod\nmetadata: {}", "metadata.name", "is required"),
            (
                "numeric name",
                "apiVersion: v1\nkind: Pod\nmetadata: {name: 5}",
                "metadata.name",
                "must be a string",
            ),
            (
                "service name is dns-1035",
                "apiVersion: v1\nkind: Service\nmetadata: {name: 1web}",
                "metadata.name",
                "DNS-1035 label",
            ),
            (
                "pod name is a subdomain",
                "apiVersion: v1\nkind: Pod\nmetadata: {name: web_1}",
                "metadata.name",
                "DNS subdomain",
            ),
            (
                "namespace name is a label",
                "apiVersion: v1\nkind: Namespace\nmetadata: {name: a.b}",
                "metadata.name",
                "DNS label",
            ),
            (
                "bad namespace",
                "apiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: Shop}",
                "metadata.namespace",
                "DNS label",
            ),
            ("List", "apiVersion: v1\nkind: List\nitems: []", "", "List is not supported"),
            (
                "unknown version of a known kind",
                "apiVersion: split.smi-spec.io/v1beta9\nkind: TrafficSplit\nmetadata: {name: s}",
                "apiVersion",
                "TrafficSplit split.smi-spec.io/v1beta9 is not supported; weft reads split.smi-spec.io/v1alpha1",
            ),
            (
                "access has no v1alpha4",
                "apiVersion: access.smi-spec.io/v1alpha4\nkind: TrafficTarget\nmetadata: {name: t}",
                "apiVersion",
                "is not supported",
            ),
            ("core v2", "apiVersion: v2\nkind: Pod\nmetadata: {name: p}", "apiVersion", "weft reads v1"),
        ];
        for (name, yaml, field, reason) in cases {
            assert_refused(name, yaml, field, reason);
        }
    }

    #[test]
    fn an_unknown_version_still_names_the_object() {
        let err = parse_one(
            "apiVersion: split.smi-spec.io/v1beta9\nkind: TrafficSplit\nmetadata: {name: s, namespace: pay}",
        )
        .unwrap_err();
        assert_eq!(err.kind.as_deref(), Some("TrafficSplit"));
        assert_eq!(err.object.as_deref(), Some("pay/s"));
        assert!(err.to_string().starts_with("test.yaml: TrafficSplit pay/s: apiVersion: "), "{err}");
    }

    #[test]
    fn shifted_messages_keep_their_text() {
        assert_eq!(
            shift_lines("bad at line 2 column 7, while parsing at line 1 column 1", 4),
            "bad at line 6 column 7, while parsing at line 5 column 1"
        );
        assert_eq!(shift_lines("no location; a line of text", 3), "no location; a line of text");
    }

    #[test]
    fn yaml_syntax_errors_carry_the_line_in_the_whole_file() {
        let text =
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\napiVersion: v1\nkind: [unclosed\n";
        let docs = parse_documents("bad.yaml", text);
        assert_eq!(docs.len(), 2);
        assert!(docs[0].is_ok());
        let err = docs[1].as_ref().unwrap_err();
        assert_eq!(err.field, "");
        assert_eq!(err.kind, None);
        assert!(err.reason.starts_with("invalid YAML: "), "{err}");
        assert!(err.reason.contains("line 7"), "{err}");
        assert!(err.to_string().starts_with("bad.yaml: invalid YAML: "), "{err}");
    }

    #[test]
    fn duplicate_yaml_keys_are_refused() {
        let err = parse_one("apiVersion: v1\nkind: Namespace\nkind: Pod\nmetadata: {name: a}\n").unwrap_err();
        assert!(err.reason.contains("duplicate"), "{err}");
    }

    #[test]
    fn yaml_merge_keys_are_applied() {
        let text =
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: a\n  labels:\n    <<: {app: web}\n    tier: fe\n";
        let Object::Pod(pod) = parse_one(text).unwrap() else { panic!("not a pod") };
        assert_eq!(pod.labels.get("app").map(String::as_str), Some("web"));
    }

    #[test]
    fn error_display_leaves_out_what_is_unknown() {
        let full = ManifestError::object_error(
            "a.yaml",
            Kind::TrafficSplit,
            &Key::new("pay", "s"),
            "spec.backends[1].weight",
            "must not be negative",
        );
        assert_eq!(
            full.to_string(),
            "a.yaml: TrafficSplit pay/s: spec.backends[1].weight: must not be negative"
        );
        let ns = ManifestError::object_error("a.yaml", Kind::Namespace, &Key::new("", "pay"), "", "bad");
        assert_eq!(ns.to_string(), "a.yaml: Namespace pay: bad");
        assert_eq!(ManifestError::file_error("a.yaml", "unreadable").to_string(), "a.yaml: unreadable");
    }
}
