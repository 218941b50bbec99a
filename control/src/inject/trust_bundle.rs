//! The `weft-trust-bundle` ConfigMap: the mesh's trust bundle (PEM) in each namespace, where an
//! injected pod's projected volume picks it up as the proxy's `--ca-file`.
//!
//! A pod can only mount ConfigMaps of its own namespace, so the control plane keeps one in every
//! namespace (creating it when a namespace appears, updating it when the bundle changes during a
//! CA rotation) with [`publish`]. Until it exists, an injected pod waits in `ContainerCreating`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{ObjectMeta, Patch, PatchParams};
use kube::{Api, Client};

use super::{TRUST_BUNDLE_CONFIG_MAP, TRUST_BUNDLE_KEY};

/// The field manager of the control plane's writes.
pub const FIELD_MANAGER: &str = "weft-control";

/// The ConfigMap holding `bundle_pem` for namespace `namespace`.
pub fn config_map(namespace: &str, bundle_pem: &str) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(TRUST_BUNDLE_CONFIG_MAP.to_string()),
            namespace: Some(namespace.to_string()),
            labels: Some(BTreeMap::from([("app.kubernetes.io/part-of".to_string(), "weft".to_string())])),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([(TRUST_BUNDLE_KEY.to_string(), bundle_pem.to_string())])),
        ..ConfigMap::default()
    }
}

/// Creates or updates the trust-bundle ConfigMap in `namespace` (server-side apply, so it is
/// idempotent and leaves fields other managers own alone).
pub async fn publish(client: Client, namespace: &str, bundle_pem: &str) -> Result<(), kube::Error> {
    let api: Api<ConfigMap> = Api::namespaced(client, namespace);
    let mut cm = config_map(namespace, bundle_pem);
    // Server-side apply needs the type in the body.
    let body = serde_json::json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": std::mem::take(&mut cm.metadata),
        "data": cm.data,
    });
    api.patch(TRUST_BUNDLE_CONFIG_MAP, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(body))
        .await?;
    Ok(())
}
