//! From API objects to the manifest parser's input: JSON with `apiVersion` and `kind`
//! set, and the choice of one view of an object that several versions serve.
//!
//! A CRD that serves several versions without a conversion webhook (as SMI CRDs are
//! installed) shows every object at every served version, with only `apiVersion`
//! rewritten. weft reads each object once, at the version it was written in: the
//! `apiVersion` of the last write to the object (not to its status) recorded in
//! `metadata.managedFields`, else the newest version that serves it.

use std::sync::Arc;

use ::kube::core::{ApiResource, DynamicObject};
use serde_json::Value;

/// One object as one served version shows it.
#[derive(Debug, Clone)]
pub(super) struct View {
    /// The resource at the version it was read from.
    pub(super) api: ApiResource,
    /// The object.
    pub(super) object: Arc<DynamicObject>,
}

/// The object as the manifest parser reads it: `apiVersion` and `kind` from the resource it
/// was read from (list responses leave them out), and without `managedFields`.
pub(super) fn to_value(api: &ApiResource, object: &DynamicObject) -> Value {
    let mut value = serde_json::to_value(object).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut value {
        map.insert("apiVersion".into(), Value::String(api.api_version.clone()));
        map.insert("kind".into(), Value::String(api.kind.clone()));
        if let Some(Value::Object(metadata)) = map.get_mut("metadata") {
            metadata.remove("managedFields");
        }
    }
    value
}

/// Makes a cluster's Service readable by weft, or says why weft leaves it alone.
///
/// A cluster has Services that weft has no use for but that are not mistakes: ExternalName
/// Services, and UDP or SCTP ports (kube-dns). Those ports are dropped; a Service left with
/// no port, or an ExternalName one, is skipped. (A manifest directory refuses them, as
/// there they are the user's mistake.)
pub(super) fn prepare_service(value: &mut Value) -> Result<(), &'static str> {
    let Some(spec) = value.get_mut("spec") else { return Ok(()) };
    if spec.get("type").and_then(Value::as_str) == Some("ExternalName") {
        return Err("an ExternalName Service");
    }
    let Some(Value::Array(ports)) = spec.get_mut("ports") else { return Ok(()) };
    let before = ports.len();
    ports.retain(|p| !matches!(p.get("protocol").and_then(Value::as_str), Some("UDP" | "SCTP")));
    if before > 0 && ports.is_empty() {
        return Err("a Service with only UDP or SCTP ports");
    }
    Ok(())
}

/// The version an object was last written in, from its `managedFields`: the most recent
/// entry for the main resource (not a subresource such as `status`).
fn written_version(object: &DynamicObject) -> Option<String> {
    let fields = object.metadata.managed_fields.as_ref()?;
    fields
        .iter()
        .enumerate()
        .filter(|(_, f)| f.subresource.as_deref().unwrap_or("").is_empty())
        .max_by_key(|(i, f)| (f.time.as_ref().map(|t| t.0), *i))
        .and_then(|(_, f)| f.api_version.as_ref())
        .map(|v| v.rsplit('/').next().unwrap_or(v).to_string())
}

/// Picks the view to read among those of one object (`views` ordered oldest version first).
pub(super) fn choose(views: &[View]) -> Option<&View> {
    let newest = views.last()?;
    let written = written_version(&newest.object);
    Some(written.and_then(|version| views.iter().find(|v| v.api.version == version)).unwrap_or(newest))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ManagedFieldsEntry, Time};
    use serde_json::json;

    use super::*;
    use crate::model::Kind;
    use crate::source::kube::resources::WatchedKind;

    fn view(version: &str, object: &DynamicObject) -> View {
        View { api: WatchedKind::of(Kind::TrafficSplit).at(version), object: Arc::new(object.clone()) }
    }

    fn entry(version: &str, secs: i64, subresource: Option<&str>) -> ManagedFieldsEntry {
        ManagedFieldsEntry {
            api_version: Some(format!("split.smi-spec.io/{version}")),
            manager: Some("kubectl".into()),
            operation: Some("Update".into()),
            subresource: subresource.map(str::to_string),
            time: Some(Time(k8s_openapi::jiff::Timestamp::from_second(secs).unwrap())),
            ..Default::default()
        }
    }

    #[test]
    fn list_items_get_their_type_and_lose_managed_fields() {
        let mut object = DynamicObject::new("s", &WatchedKind::of(Kind::TrafficSplit).at("v1alpha2"));
        object.types = None;
        object.metadata.managed_fields = Some(vec![entry("v1alpha2", 1, None)]);
        object.data = json!({"spec": {"service": "web"}});
        let value = to_value(&WatchedKind::of(Kind::TrafficSplit).at("v1alpha3"), &object);
        assert_eq!(value["apiVersion"], "split.smi-spec.io/v1alpha3");
        assert_eq!(value["kind"], "TrafficSplit");
        assert_eq!(value["spec"]["service"], "web");
        assert!(value["metadata"].get("managedFields").is_none());
    }

    #[test]
    fn the_view_is_the_version_of_the_last_write_not_of_a_status_write() {
        let mut object = DynamicObject::new("s", &WatchedKind::of(Kind::TrafficSplit).at("v1alpha1"));
        object.metadata.managed_fields =
            Some(vec![entry("v1alpha1", 10, None), entry("v1alpha4", 20, Some("status"))]);
        let views = [view("v1alpha1", &object), view("v1alpha2", &object), view("v1alpha4", &object)];
        assert_eq!(choose(&views).unwrap().api.version, "v1alpha1");

        object.metadata.managed_fields = Some(vec![entry("v1alpha1", 10, None), entry("v1alpha2", 30, None)]);
        let views = [view("v1alpha1", &object), view("v1alpha2", &object)];
        assert_eq!(choose(&views).unwrap().api.version, "v1alpha2");

        // Written in a version this cluster no longer serves, or never recorded: the newest.
        object.metadata.managed_fields = Some(vec![entry("v1alpha3", 10, None)]);
        let views = [view("v1alpha1", &object), view("v1alpha2", &object)];
        assert_eq!(choose(&views).unwrap().api.version, "v1alpha2");
        object.metadata.managed_fields = None;
        assert_eq!(choose(&[view("v1alpha1", &object)]).unwrap().api.version, "v1alpha1");
        assert!(choose(&[]).is_none());
    }

    #[test]
    fn cluster_services_weft_cannot_use_are_skipped_or_trimmed() {
        let mut dns = json!({"spec": {"ports": [
            {"name": "dns", "port": 53, "protocol": "UDP"},
            {"name": "dns-tcp", "port": 53, "protocol": "TCP"},
        ]}});
        assert_eq!(prepare_service(&mut dns), Ok(()));
        assert_eq!(dns["spec"]["ports"].as_array().unwrap().len(), 1);
        assert_eq!(dns["spec"]["ports"][0]["name"], "dns-tcp");

        let mut udp_only = json!({"spec": {"ports": [{"port": 53, "protocol": "UDP"}]}});
        assert!(prepare_service(&mut udp_only).is_err());
        let mut external = json!({"spec": {"type": "ExternalName", "externalName": "example.com"}});
        assert!(prepare_service(&mut external).is_err());
        let mut no_ports = json!({"spec": {"ports": []}});
        assert_eq!(prepare_service(&mut no_ports), Ok(()), "left for the parser to refuse");
    }
}
