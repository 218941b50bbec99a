//! Envoy resources as JSON, the way Envoy's own config dump shows them, shared
//! by the control plane's and the proxy's admin APIs.

use std::fmt;
use std::sync::OnceLock;

use prost_reflect::{DescriptorPool, DynamicMessage, SerializeOptions};

use crate::ENVOY_DESCRIPTOR_SET;
use crate::google::protobuf::Any;

/// Why a resource could not be rendered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JsonError {
    /// The bundled descriptors did not load (a build problem).
    Descriptors(String),
    /// The type is not among the bundled descriptors.
    UnknownType(String),
    /// The bytes did not decode as that type.
    Decode {
        /// The type URL.
        type_url: String,
        /// Why.
        reason: String,
    },
}

impl fmt::Display for JsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JsonError::Descriptors(e) => write!(f, "Envoy descriptors: {e}"),
            JsonError::UnknownType(t) => write!(f, "no descriptor for {t}"),
            JsonError::Decode { type_url, reason } => write!(f, "decoding {type_url}: {reason}"),
        }
    }
}

impl std::error::Error for JsonError {}

fn pool() -> Result<&'static DescriptorPool, JsonError> {
    static POOL: OnceLock<Result<DescriptorPool, String>> = OnceLock::new();
    POOL.get_or_init(|| DescriptorPool::decode(ENVOY_DESCRIPTOR_SET).map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|e| JsonError::Descriptors(e.clone()))
}

/// Renders an `Any` as JSON with an `@type` field; nested `Any`s (filters,
/// extension options) are expanded too.
pub fn any_to_json(any: &Any) -> Result<serde_json::Value, JsonError> {
    let pool = pool()?;
    let name = any.type_url.rsplit('/').next().unwrap_or_default();
    let desc = pool.get_message_by_name(name).ok_or_else(|| JsonError::UnknownType(any.type_url.clone()))?;
    let decode_error = |reason: String| JsonError::Decode { type_url: any.type_url.clone(), reason };
    let msg = DynamicMessage::decode(desc, any.value.as_slice()).map_err(|e| decode_error(e.to_string()))?;
    let mut ser = serde_json::Serializer::new(Vec::new());
    msg.serialize_with_options(&mut ser, &SerializeOptions::new().skip_default_fields(true))
        .map_err(|e| decode_error(e.to_string()))?;
    let mut value: serde_json::Value =
        serde_json::from_slice(&ser.into_inner()).map_err(|e| decode_error(e.to_string()))?;
    if let serde_json::Value::Object(map) = &mut value {
        map.insert("@type".into(), serde_json::Value::String(any.type_url.clone()));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use prost::{Message, Name};

    use super::*;
    use crate::envoy::config::cluster::v3::Cluster;

    #[test]
    fn renders_a_cluster_with_its_type() {
        let cluster = Cluster { name: "c".into(), ..Default::default() };
        let any = Any { type_url: Cluster::type_url(), value: cluster.encode_to_vec() };
        let json = any_to_json(&any).unwrap();
        assert_eq!(json["name"], "c");
        assert_eq!(json["@type"], Cluster::type_url());
    }

    #[test]
    fn unknown_types_are_an_error() {
        let any = Any { type_url: "type.googleapis.com/no.such.Type".into(), value: vec![] };
        assert_eq!(any_to_json(&any), Err(JsonError::UnknownType(any.type_url.clone())));
    }
}
