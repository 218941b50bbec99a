//! The webhook's decision, as a pure function: an `AdmissionReview` request in, the review with
//! its response (a JSONPatch, or nothing) out.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};

use super::InjectConfig;
use super::pod::{self, Outcome};

/// Prefix of every warning the injector returns, so users see where it comes from.
const WARNING_PREFIX: &str = "weft";

/// Answers an `AdmissionReview` for a pod. `namespace` is the metadata of the pod's namespace
/// (whose `weft.io/inject` the decision reads).
///
/// The pod is always admitted: injected (a JSONPatch), left alone (not enabled, opted out, or
/// already injected: no patch), or, when it cannot be injected, admitted unchanged with a
/// warning that says why. Anything but a pod CREATE is admitted untouched.
pub fn review(
    review: AdmissionReview<DynamicObject>,
    namespace: &ObjectMeta,
    cfg: &InjectConfig,
) -> AdmissionReview<DynamicObject> {
    let request: AdmissionRequest<DynamicObject> = match review.try_into() {
        Ok(request) => request,
        Err(_) => return AdmissionResponse::invalid("the AdmissionReview has no request").into_review(),
    };
    respond(&request, namespace, cfg).into_review()
}

/// The response to one admission request.
pub fn respond(
    request: &AdmissionRequest<DynamicObject>,
    namespace: &ObjectMeta,
    cfg: &InjectConfig,
) -> AdmissionResponse {
    let response = AdmissionResponse::from(request);
    let is_pod = request.kind.group.is_empty() && request.kind.kind == "Pod";
    if !is_pod || request.operation != Operation::Create || request.sub_resource.is_some() {
        return response;
    }
    let Some(object) = &request.object else {
        return warn(response, "the request carries no pod");
    };
    let original = match serde_json::to_value(object) {
        Ok(v) => v,
        Err(e) => return warn(response, &format!("the pod cannot be read: {e}")),
    };
    let is_job = object
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.kind == "Job" && o.api_version.starts_with("batch/"));
    let mut pod_json = original.clone();
    match pod::inject(&mut pod_json, Some(namespace), cfg, is_job) {
        Ok(Outcome::Injected { warnings }) => {
            let patch = json_patch::diff(&original, &pod_json);
            tracing::info!(
                namespace = request.namespace.as_deref().unwrap_or_default(),
                pod = object
                    .metadata
                    .name
                    .as_deref()
                    .or(object.metadata.generate_name.as_deref())
                    .unwrap_or_default(),
                operations = patch.0.len(),
                "injecting weft-proxy"
            );
            match response.clone().with_patch(patch) {
                Ok(mut patched) => {
                    if !warnings.is_empty() {
                        patched.warnings =
                            Some(warnings.iter().map(|w| format!("{WARNING_PREFIX}: {w}")).collect());
                    }
                    patched
                }
                Err(e) => warn(response, &format!("the patch cannot be encoded: {e}")),
            }
        }
        Ok(Outcome::AlreadyInjected) => response,
        Ok(Outcome::Skipped(reason)) => {
            tracing::debug!(namespace = request.namespace.as_deref().unwrap_or_default(), %reason, "not injecting");
            response
        }
        Err(e) => warn(response, &e.to_string()),
    }
}

/// Admits unchanged, telling the user why the pod has no proxy.
fn warn(mut response: AdmissionResponse, why: &str) -> AdmissionResponse {
    tracing::warn!(uid = response.uid, reason = why, "admitting a pod without a proxy");
    response.warnings = Some(vec![format!("{WARNING_PREFIX}: the pod was admitted without a proxy: {why}")]);
    response
}
