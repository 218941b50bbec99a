//! Envoy resources as JSON, the way Envoy's own config dump shows them.

use std::sync::OnceLock;

use prost_reflect::{DescriptorPool, DynamicMessage, SerializeOptions};
use weft_xds_protos::ENVOY_DESCRIPTOR_SET;
use weft_xds_protos::google::protobuf::Any;

/// Why a resource could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum JsonError {
    /// The bundled descriptors did not load (a build problem).
    #[error("Envoy descriptors: {0}")]
    Descriptors(String),
    /// The type is not among the bundled descriptors.
    #[error("no descriptor for {0}")]
    UnknownType(String),
    /// The bytes did not decode as that type.
    #[error("decoding {type_url}: {reason}")]
    Decode {
        /// The type URL.
        type_url: String,
        /// Why.
        reason: String,
    },
}

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
    let msg = DynamicMessage::decode(desc, any.value.as_slice())
        .map_err(|e| JsonError::Decode { type_url: any.type_url.clone(), reason: e.to_string() })?;
    let mut ser = serde_json::Serializer::new(Vec::new());
    msg.serialize_with_options(&mut ser, &SerializeOptions::new().skip_default_fields(true))
        .map_err(|e| JsonError::Decode { type_url: any.type_url.clone(), reason: e.to_string() })?;
    let mut value: serde_json::Value = serde_json::from_slice(&ser.into_inner())
        .map_err(|e| JsonError::Decode { type_url: any.type_url.clone(), reason: e.to_string() })?;
    if let serde_json::Value::Object(map) = &mut value {
        map.insert("@type".into(), serde_json::Value::String(any.type_url.clone()));
    }
    Ok(value)
}
