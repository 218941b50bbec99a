//! `weft check --kubernetes`: is the installed mesh healthy?

use std::time::SystemTime;

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::ListParams;
use kube::{Api, Client};
use serde_json::Value;

use super::{Checklist, pre};
use crate::identity::CertInfo;
use crate::identity::format_seconds;
use crate::install::ca_secret::CERT_KEY;
use crate::install::{
    CA_SECRET, CONTROL_NAME, InstallOptions, NAMESPACE, WEBHOOK_CONFIGURATION, WEBHOOK_SERVICE,
};

const CRDS: &str = "CRDs";
const CONTROL: &str = "Control plane";
const CA: &str = "CA";
const INJECTOR: &str = "Sidecar injector";
const PROXIES: &str = "Proxies";

/// The root CA is a warning this long before it expires.
const ROOT_WARN_SECS: i64 = 30 * 24 * 3600;

const LOGS: &str = "kubectl -n weft-system get pods -l app.kubernetes.io/name=weft-control; \
                    kubectl -n weft-system logs deploy/weft-control";

/// Runs the post-install checks against the cluster `client` talks to.
pub async fn installation(client: &Client) -> Checklist {
    let mut list = Checklist::default();
    if pre::api_and_clock(client, &mut list).await.is_none() {
        return list;
    }
    crds(client, &mut list).await;
    control_plane(client, &mut list).await;
    let root = ca(client, &mut list).await;
    injector(client, root.as_deref(), &mut list).await;
    proxies(client, &mut list).await;
    list
}

async fn crds(client: &Client, list: &mut Checklist) {
    let reinstall = "install them with `weft install | kubectl apply -f -`";
    let Ok(documents) = InstallOptions::default().documents() else {
        list.fail(CRDS, "weft's own CRD manifests do not parse (a bug)", "report it");
        return;
    };
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for doc in documents.iter().filter(|d| d.kind == "CustomResourceDefinition") {
        let want: Vec<String> = doc.value["spec"]["versions"]
            .as_sequence()
            .map(|vs| vs.iter().filter_map(|v| v["name"].as_str().map(str::to_string)).collect())
            .unwrap_or_default();
        match api.get_opt(&doc.name).await {
            Ok(Some(crd)) => {
                let served: Vec<String> =
                    crd.spec.versions.iter().filter(|v| v.served).map(|v| v.name.clone()).collect();
                let missing: Vec<&String> = want.iter().filter(|v| !served.contains(v)).collect();
                if missing.is_empty() {
                    list.ok(CRDS, format!("{} serves {}", doc.name, want.join(", ")));
                } else {
                    let missing: Vec<&str> = missing.iter().map(|s| s.as_str()).collect();
                    list.fail(CRDS, format!("{} does not serve {}", doc.name, missing.join(", ")), reinstall);
                }
            }
            Ok(None) => list.fail(CRDS, format!("{} is not installed", doc.name), reinstall),
            Err(e) => list.fail(
                CRDS,
                format!("cannot read {}: {e}", doc.name),
                "grant get on customresourcedefinitions",
            ),
        }
    }
}

async fn control_plane(client: &Client, list: &mut Checklist) {
    let api: Api<Deployment> = Api::namespaced(client.clone(), NAMESPACE);
    match api.get_opt(CONTROL_NAME).await {
        Ok(Some(d)) => {
            let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
            let ready = d.status.as_ref().and_then(|s| s.ready_replicas).unwrap_or(0);
            let what = format!("{ready}/{want} replicas of {CONTROL_NAME} ready");
            if ready == 0 {
                list.fail(CONTROL, what, format!("no replica serves xDS: {LOGS}"));
            } else if ready < want {
                list.warn(
                    CONTROL,
                    what,
                    format!("proxies still have a control plane, but look at the others: {LOGS}"),
                );
            } else {
                list.ok(CONTROL, what);
            }
        }
        Ok(None) => list.fail(
            CONTROL,
            format!("deployment {NAMESPACE}/{CONTROL_NAME} does not exist"),
            "install weft: `weft install | kubectl apply -f -`",
        ),
        Err(e) => list.fail(CONTROL, format!("cannot read deployment {NAMESPACE}/{CONTROL_NAME}: {e}"), LOGS),
    }
}

/// Checks the CA Secret; returns the root's PEM.
async fn ca(client: &Client, list: &mut Checklist) -> Option<String> {
    let api: Api<Secret> = Api::namespaced(client.clone(), NAMESPACE);
    let secret = match api.get_opt(CA_SECRET).await {
        Ok(Some(s)) => s,
        Ok(None) => {
            list.fail(
                CA,
                format!("the CA Secret {NAMESPACE}/{CA_SECRET} does not exist"),
                format!("the first control plane replica creates it at start-up: {LOGS}"),
            );
            return None;
        }
        Err(e) => {
            list.warn(
                CA,
                format!("cannot read the CA Secret: {e}"),
                "run as a user who may read secrets in weft-system",
            );
            return None;
        }
    };
    let Some(pem) =
        secret.data.as_ref().and_then(|d| d.get(CERT_KEY)).and_then(|b| String::from_utf8(b.0.clone()).ok())
    else {
        list.fail(
            CA,
            format!("the CA Secret has no {CERT_KEY}"),
            "delete it and restart the control plane to make a new CA (every proxy must then restart)",
        );
        return None;
    };
    let info = x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .ok()
        .and_then(|(_, p)| CertInfo::from_der(&p.contents).ok());
    let Some(info) = info else {
        list.fail(
            CA,
            format!("the CA Secret's {CERT_KEY} is not a certificate"),
            "delete it and restart the control plane",
        );
        return None;
    };
    let left = info.seconds_left(SystemTime::now());
    let what = format!("the CA root expires in {}", format_seconds(left));
    if left <= 0 {
        list.fail(
            CA,
            "the CA root has expired",
            "rotate the CA: every workload certificate it signed is now refused",
        );
    } else if left < ROOT_WARN_SECS {
        list.warn(CA, what, "rotate the CA soon (add the new root as an extra root first)");
    } else {
        list.ok(CA, what);
    }
    Some(pem)
}

async fn injector(client: &Client, root: Option<&str>, list: &mut Checklist) {
    let api: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    match api.get_opt(WEBHOOK_CONFIGURATION).await {
        Ok(Some(config)) => {
            let hook = config.webhooks.unwrap_or_default().into_iter().next();
            let bundle = hook.as_ref().and_then(|h| h.client_config.ca_bundle.as_ref()).map(|b| b.0.clone());
            match (bundle, root) {
                (None, _) => list.fail(
                    INJECTOR,
                    "the webhook's caBundle is empty: the API server cannot verify the injector",
                    format!("the control plane patches it at start-up: {LOGS}"),
                ),
                (Some(bundle), Some(root)) if bundle != root.as_bytes() => list.fail(
                    INJECTOR,
                    "the webhook's caBundle is not the CA root",
                    format!(
                        "restart the control plane so that it patches the current root: \
                             kubectl -n weft-system rollout restart deploy/{CONTROL_NAME}"
                    ),
                ),
                (Some(_), _) => {
                    let policy = hook.and_then(|h| h.failure_policy).unwrap_or_else(|| "Fail".into());
                    list.ok(
                        INJECTOR,
                        format!("{WEBHOOK_CONFIGURATION} trusts the CA root (failurePolicy {policy})"),
                    );
                }
            }
        }
        Ok(None) => list.fail(
            INJECTOR,
            format!(
                "MutatingWebhookConfiguration {WEBHOOK_CONFIGURATION} does not exist: no pod gets a proxy"
            ),
            "install weft: `weft install | kubectl apply -f -`",
        ),
        Err(e) => list.warn(
            INJECTOR,
            format!("cannot read {WEBHOOK_CONFIGURATION}: {e}"),
            "grant get on mutatingwebhookconfigurations",
        ),
    }
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), NAMESPACE);
    let params = ListParams::default().labels(&format!("kubernetes.io/service-name={WEBHOOK_SERVICE}"));
    match slices.list(&params).await {
        Ok(found) => {
            let ready = found
                .items
                .iter()
                .flat_map(|s| s.endpoints.iter())
                .filter(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true))
                .count();
            if ready == 0 {
                list.fail(
                    INJECTOR,
                    format!(
                        "service {WEBHOOK_SERVICE} has no ready endpoint: new pods start without a proxy"
                    ),
                    LOGS,
                );
            } else {
                list.ok(
                    INJECTOR,
                    format!(
                        "service {WEBHOOK_SERVICE} has {ready} ready endpoint{}",
                        if ready == 1 { "" } else { "s" }
                    ),
                );
            }
        }
        Err(e) => list.warn(
            INJECTOR,
            format!("cannot list the webhook's endpoints: {e}"),
            "grant list on endpointslices",
        ),
    }
}

/// Asks every running replica's admin API, through the API server's pod proxy, which proxies
/// are connected and whether each has ACKed what it was last sent.
async fn proxies(client: &Client, list: &mut Checklist) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
    let params = ListParams::default().labels(&format!("app.kubernetes.io/name={CONTROL_NAME}"));
    let running = match pods.list(&params).await {
        Ok(p) => p.items,
        Err(e) => {
            list.warn(
                PROXIES,
                format!("cannot list the control plane's pods: {e}"),
                "grant list on pods in weft-system",
            );
            return;
        }
    };
    let port_forward = format!(
        "kubectl -n {NAMESPACE} port-forward deploy/{CONTROL_NAME} 8085 & weft check --admin-addr 127.0.0.1:8085 \
         (also checks every proxy's certificate)"
    );
    for pod in
        running.iter().filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
    {
        let Some(name) = pod.metadata.name.as_deref() else { continue };
        let path = format!("/api/v1/namespaces/{NAMESPACE}/pods/{name}:8085/proxy/debug/proxies");
        let request = match http::Request::get(&path).body(Vec::new()) {
            Ok(r) => r,
            Err(_) => continue,
        };
        let reports: Vec<Value> = match client.request_text(request).await.map(|t| serde_json::from_str(&t)) {
            Ok(Ok(reports)) => reports,
            Ok(Err(e)) => {
                list.warn(PROXIES, format!("{name}: unreadable /debug/proxies: {e}"), port_forward.clone());
                continue;
            }
            Err(e) => {
                list.warn(
                    PROXIES,
                    format!("{name}: cannot reach its admin API through the API server: {e}"),
                    port_forward.clone(),
                );
                continue;
            }
        };
        let lagging: Vec<String> = reports.iter().filter_map(out_of_sync).collect();
        let what = format!(
            "{name}: {} prox{} connected",
            reports.len(),
            if reports.len() == 1 { "y" } else { "ies" }
        );
        if lagging.is_empty() {
            list.ok(PROXIES, format!("{what}, all in sync"));
        } else {
            list.fail(
                PROXIES,
                format!("{what}, {} not in sync: {}", lagging.len(), lagging.join("; ")),
                "a NACK names the resource the proxy refused: fix the object it comes from \
                 (`kubectl describe` shows its status), or read the proxy's log",
            );
        }
    }
}

/// `node: why` if a proxy's report shows it has not ACKed the last version sent of some type.
fn out_of_sync(report: &Value) -> Option<String> {
    let node = report["node"]["id"].as_str().unwrap_or("?");
    let types = report["types"].as_object()?;
    for (ty, t) in types {
        if t["sent_version"].is_null() || t["sent_version"] == t["acked_version"] {
            continue;
        }
        let why = match t["last_nack"].as_object() {
            Some(nack) => {
                format!("{ty} NACKed: {}", nack.get("detail").and_then(Value::as_str).unwrap_or("no detail"))
            }
            None => format!("{ty} not yet ACKed"),
        };
        return Some(format!("{node} ({why})"));
    }
    None
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_proxy_is_in_sync_when_it_acked_every_version_sent() {
        let synced = json!({"node": {"id": "a"}, "types": {
            "cds": {"sent_version": "3", "acked_version": "3"}, "rds": {"sent_version": null, "acked_version": null}}});
        assert_eq!(out_of_sync(&synced), None);
        let nacked = json!({"node": {"id": "b"}, "types": {
            "cds": {"sent_version": "4", "acked_version": "3", "last_nack": {"detail": "bad cluster"}}}});
        assert_eq!(out_of_sync(&nacked).as_deref(), Some("b (cds NACKed: bad cluster)"));
        let pending =
            json!({"node": {"id": "c"}, "types": {"lds": {"sent_version": "4", "acked_version": null}}});
        assert_eq!(out_of_sync(&pending).as_deref(), Some("c (lds not yet ACKed)"));
    }
}
