//! Where mesh state comes from.
//!
//! - [`manifest`] parses and validates Kubernetes-style YAML (v1 Namespace, Service
//!   and Pod, discovery.k8s.io/v1 EndpointSlice and the SMI kinds) into model objects,
//!   with errors that name the file, the object, the field and the reason.
//! - [`dir`] is the embedded default source: a directory of manifests, loaded into a
//!   [`MeshState`](crate::model::MeshState), watched for changes, and written to by the
//!   apply API (validate everything first, then write atomically).
//!
//! A refused object never costs the mesh its last valid version: the directory keeps
//! serving it and reports the error.

mod assemble;
pub mod dir;
pub mod kube;
pub mod manifest;

pub use dir::{ApplyHandle, ApplyOutcome, ApplyRequest, LoadReport, ManifestDir};
pub use manifest::{ManifestError, Object, ParsedDoc, parse_documents};
