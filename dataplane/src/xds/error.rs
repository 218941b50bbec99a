//! Why a resource was rejected: the resource, the field path inside it and the
//! reason, in one line that goes into the NACK's `error_detail` as it is.

use std::fmt;

use super::ResourceType;

/// A resource that weft-proxy cannot serve, and so NACKs.
///
/// Its `Display` is `<kind> <name>: <field path>: <reason>`, e.g.
/// `listener outbound: filter_chains[0].filters[0].typed_config: unsupported filter type.googleapis.com/...`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} {name}: {}", FieldPath(.path, .reason))]
pub struct DecodeError {
    /// The resource type.
    pub kind: ResourceType,
    /// The resource name (`resources[<i>]` when even the name could not be read).
    pub name: String,
    /// The field path inside the resource, proto field names with indices
    /// (empty when the resource as a whole is wrong).
    pub path: String,
    /// Why.
    pub reason: String,
}

struct FieldPath<'a>(&'a str, &'a str);

impl fmt::Display for FieldPath<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.0, self.1) {
            ("", reason) => f.write_str(reason),
            (path, reason) => write!(f, "{path}: {reason}"),
        }
    }
}

/// A problem at a field path, before it is known which resource it is in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FieldError {
    /// Dotted field path with indices, innermost last.
    pub(crate) path: String,
    /// Why.
    pub(crate) reason: String,
}

impl FieldError {
    /// A problem at `field` (relative to the message being decoded).
    pub(crate) fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        FieldError { path: field.into(), reason: reason.into() }
    }

    /// A field that is set and that weft-proxy does not implement.
    pub(crate) fn unsupported(field: impl Into<String>) -> Self {
        FieldError::new(field, "not supported by weft-proxy")
    }

    /// A required field that is missing.
    pub(crate) fn required(field: impl Into<String>) -> Self {
        FieldError::new(field, "required")
    }

    /// Moves the error one message out: `parent` is the field that held it.
    pub(crate) fn within(mut self, parent: &str) -> Self {
        self.path = match (parent, self.path.as_str()) {
            (p, "") => p.to_string(),
            ("", c) => c.to_string(),
            (p, c) => format!("{p}.{c}"),
        };
        self
    }

    /// Names the resource the error is in.
    pub(crate) fn in_resource(self, kind: ResourceType, name: impl Into<String>) -> DecodeError {
        DecodeError { kind, name: name.into(), path: self.path, reason: self.reason }
    }
}

/// Adds the enclosing field to an error's path, lazily (only on the error path).
pub(crate) trait At<T> {
    /// The error happened inside `field`.
    fn at(self, field: &str) -> Result<T, FieldError>;
    /// The error happened inside element `index` of the repeated `field`.
    fn at_index(self, field: &str, index: usize) -> Result<T, FieldError>;
}

impl<T> At<T> for Result<T, FieldError> {
    fn at(self, field: &str) -> Result<T, FieldError> {
        self.map_err(|e| e.within(field))
    }

    fn at_index(self, field: &str, index: usize) -> Result<T, FieldError> {
        self.map_err(|e| e.within(&format!("{field}[{index}]")))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn paths_nest_from_the_inside_out() {
        let e: Result<(), _> = Err(FieldError::new("typed_config", "unsupported filter x"));
        let e = e.at_index("filters", 0).at_index("filter_chains", 2).unwrap_err();
        assert_eq!(e.path, "filter_chains[2].filters[0].typed_config");
        let d = e.in_resource(ResourceType::Listener, "outbound");
        assert_eq!(
            d.to_string(),
            "listener outbound: filter_chains[2].filters[0].typed_config: unsupported filter x"
        );
    }

    #[test]
    fn an_error_of_the_whole_resource_has_no_path() {
        let d = FieldError::new("", "bad bytes").in_resource(ResourceType::Cluster, "c");
        assert_eq!(d.to_string(), "cluster c: bad bytes");
    }
}
