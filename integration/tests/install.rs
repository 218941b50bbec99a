//! `weft install`, `weft uninstall` and `weft check --pre` / `--kubernetes`, through the `weft`
//! binary and against the fake API server.
//!
//! - Every document `weft install` prints parses as its k8s-openapi type, and `weft uninstall`
//!   names exactly those objects.
//! - `weft check --pre` passes on a cluster ready for weft, and fails, with a fix per problem
//!   and exit status 1, on one that is not (permissions, version, clock skew, weft already
//!   there, no API server at all).
//! - `weft check --kubernetes` reads what `weft install` applied: CRDs, the control plane's
//!   replicas, the CA Secret the control plane creates, the injector's caBundle.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::process::Output;

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde_json::{Value, json};
use weft_control::identity::CaConfig;
use weft_control::install::{CA_SECRET, InstallOptions, NAMESPACE, WEBHOOK_CONFIGURATION};
use weft_control::kube_check::{Status, installation, pre_install};
use weft_integration::fake_kube::FakeKube;
use weft_integration::fake_kube::extras::KubeFront;

async fn weft(args: &[&str]) -> Output {
    let bin = weft_integration::weft_bin().unwrap();
    tokio::process::Command::new(bin).args(args).output().await.unwrap()
}

fn documents(yaml: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(yaml)
        .map(|de| serde::Deserialize::deserialize(de).unwrap())
        .filter(|v: &Value| !v.is_null())
        .collect()
}

fn identity(doc: &Value) -> (String, String, Option<String>) {
    let s = |v: &Value| v.as_str().unwrap().to_string();
    (s(&doc["kind"]), s(&doc["metadata"]["name"]), doc["metadata"]["namespace"].as_str().map(str::to_string))
}

#[tokio::test]
async fn weft_install_prints_documents_that_parse_as_their_kubernetes_types() {
    let out = weft(&["install", "--image", "registry.test/weft:dev", "--replicas", "3"]).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let docs = documents(&String::from_utf8(out.stdout).unwrap());
    let mut crds = 0;
    for doc in &docs {
        let what = format!("{:?}", identity(doc));
        let parsed = match doc["kind"].as_str().unwrap() {
            "CustomResourceDefinition" => {
                crds += 1;
                serde_json::from_value::<CustomResourceDefinition>(doc.clone()).map(drop)
            }
            "Namespace" => serde_json::from_value::<Namespace>(doc.clone()).map(drop),
            "ServiceAccount" => serde_json::from_value::<ServiceAccount>(doc.clone()).map(drop),
            "ClusterRole" => serde_json::from_value::<ClusterRole>(doc.clone()).map(drop),
            "ClusterRoleBinding" => serde_json::from_value::<ClusterRoleBinding>(doc.clone()).map(drop),
            "Role" => serde_json::from_value::<Role>(doc.clone()).map(drop),
            "RoleBinding" => serde_json::from_value::<RoleBinding>(doc.clone()).map(drop),
            "Service" => serde_json::from_value::<Service>(doc.clone()).map(drop),
            "PodDisruptionBudget" => serde_json::from_value::<PodDisruptionBudget>(doc.clone()).map(drop),
            "MutatingWebhookConfiguration" => {
                serde_json::from_value::<MutatingWebhookConfiguration>(doc.clone()).map(drop)
            }
            "Deployment" => {
                let d: Deployment = serde_json::from_value(doc.clone()).unwrap();
                let spec = d.spec.unwrap();
                assert_eq!(spec.replicas, Some(3));
                assert_eq!(
                    spec.template.spec.unwrap().containers[0].image.as_deref(),
                    Some("registry.test/weft:dev")
                );
                Ok(())
            }
            other => panic!("{what}: unexpected kind {other}"),
        };
        parsed.unwrap_or_else(|e| panic!("{what}: {e}"));
    }
    assert_eq!(crds, 4);
    assert!(docs.iter().any(|d| d["kind"] == "Namespace" && d["metadata"]["name"] == "weft-system"));
}

#[tokio::test]
async fn weft_uninstall_names_exactly_what_install_created() {
    let installed: BTreeSet<_> = documents(&String::from_utf8(weft(&["install"]).await.stdout).unwrap())
        .iter()
        .map(identity)
        .collect();
    let out = weft(&["uninstall"]).await;
    assert!(out.status.success());
    let removed: BTreeSet<_> =
        documents(&String::from_utf8(out.stdout).unwrap()).iter().map(identity).collect();
    assert_eq!(installed, removed);
    let kept = documents(&String::from_utf8(weft(&["uninstall", "--keep-crds"]).await.stdout).unwrap());
    assert_eq!(kept.len(), installed.len() - 4);
}

async fn front() -> (FakeKube, KubeFront) {
    let api = FakeKube::start_with(KubeFront::types()).await.unwrap();
    let front = KubeFront::start(&api).await.unwrap();
    (api, front)
}

fn kubeconfig(front: &KubeFront) -> tempfile::NamedTempFile {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), front.kubeconfig()).unwrap();
    file
}

#[tokio::test]
async fn check_pre_passes_on_a_cluster_ready_for_weft() {
    let (_api, front) = front().await;
    let list = pre_install(&front.client().unwrap()).await;
    assert_eq!(list.failures(), 0, "{}", list.render());
    assert_eq!(list.warnings(), 0, "{}", list.render());
    for expected in [
        "the API server answers (v1.33.0-fake)",
        "Kubernetes 1.33: supported, with native sidecars",
        "can create customresourcedefinitions.apiextensions.k8s.io",
        "can create mutatingwebhookconfigurations.admissionregistration.k8s.io",
        "can create namespaces",
        "can create deployments.apps in weft-system",
        "this machine's clock agrees with the API server's",
        "weft is not installed yet",
    ] {
        assert!(list.find(expected).is_some(), "no {expected:?} in\n{}", list.render());
    }

    // The binary prints the same checklist and exits 0.
    let config = kubeconfig(&front);
    let out = weft(&["check", "--pre", "--kubeconfig", config.path().to_str().unwrap()]).await;
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("Permissions\n  ok    can create namespaces\n"), "{text}");
    assert!(text.ends_with("all checks passed\n"), "{text}");
}

#[tokio::test]
async fn check_pre_fails_with_a_fix_for_each_problem() {
    let (api, front) = front().await;
    front.deny_create("apiextensions.k8s.io", "customresourcedefinitions").await;
    front.set_version("1", "24").await;
    front.set_clock_skew(-300).await;
    api.create(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "weft-system"}}))
        .await
        .unwrap();

    let list = pre_install(&front.client().unwrap()).await;
    let mut failed: Vec<&str> =
        list.checks.iter().filter(|c| c.status == Status::Fail).map(|c| c.message.as_str()).collect();
    // The Date header has whole seconds, so the skew shown is 299 or 300.
    let clock = failed.remove(0);
    assert!(
        clock.starts_with("the API server's clock is 29")
            || clock.starts_with("the API server's clock is 300"),
        "{clock}"
    );
    assert!(clock.ends_with("s behind this machine's"), "{clock}");
    assert_eq!(
        failed,
        [
            "Kubernetes 1.24 is older than 1.25, the oldest weft supports",
            "cannot create customresourcedefinitions.apiextensions.k8s.io (the test denies it)",
            "namespace weft-system already exists",
        ],
        "{}",
        list.render()
    );
    for check in list.checks.iter().filter(|c| c.status == Status::Fail) {
        assert!(check.fix.as_deref().is_some_and(|f| !f.is_empty()), "no fix for {check:?}");
    }
    assert!(list.find("namespace weft-system").unwrap().fix.as_deref().unwrap().contains("weft uninstall"));

    let config = kubeconfig(&front);
    let out = weft(&["check", "--pre", "--kubeconfig", config.path().to_str().unwrap()]).await;
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("  FAIL  cannot create customresourcedefinitions"), "{text}");
    assert!(text.contains("fix: weft install needs a cluster admin"), "{text}");
    assert!(text.ends_with("4 checks failed, 0 warnings\n"), "{text}");
}

#[tokio::test]
async fn check_pre_warns_about_small_skew_and_clusters_without_native_sidecars() {
    let (_api, front) = front().await;
    front.set_version("1", "28+").await;
    front.set_clock_skew(20).await;
    let list = pre_install(&front.client().unwrap()).await;
    assert_eq!(list.failures(), 0, "{}", list.render());
    let warned: Vec<&str> =
        list.checks.iter().filter(|c| c.status == Status::Warn).map(|c| c.message.as_str()).collect();
    assert_eq!(warned.len(), 2, "{}", list.render());
    assert!(
        warned[0].starts_with("the API server's clock is 1")
            && warned[0].ends_with("s ahead of this machine's")
    );
    assert!(warned[1].contains("has no native sidecars"));
}

#[tokio::test]
async fn check_pre_fails_when_no_api_server_answers() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let client = kube::Client::try_from(kube::Config::new(url.parse().unwrap())).unwrap();
    let list = pre_install(&client).await;
    assert_eq!(list.checks.len(), 1, "{}", list.render());
    assert_eq!(list.checks[0].status, Status::Fail);
    assert!(list.checks[0].message.starts_with("the API server cannot be reached"), "{}", list.render());
    assert!(list.checks[0].fix.as_deref().unwrap().contains("kubectl cluster-info"));
}

/// Applies `weft install`'s documents of the kinds the fake serves (it has no RBAC).
async fn apply_install(api: &FakeKube) {
    for doc in InstallOptions::default().documents().unwrap() {
        let value: Value = serde_json::to_value(&doc.value).unwrap();
        if ["ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "PodDisruptionBudget"]
            .contains(&doc.kind.as_str())
        {
            continue;
        }
        api.create(value).await.unwrap_or_else(|e| panic!("creating {}: {e}", doc.describe()));
    }
}

#[tokio::test]
async fn check_kubernetes_follows_an_installation_coming_up() {
    let (api, front) = front().await;
    apply_install(&api).await;
    let client = front.client().unwrap();

    // Applied, nothing running yet.
    let list = installation(&client).await;
    let status = |list: &weft_control::kube_check::Checklist, text: &str| {
        list.find(text).unwrap_or_else(|| panic!("no {text:?} in\n{}", list.render())).status
    };
    assert_eq!(
        status(&list, "trafficsplits.split.smi-spec.io serves v1alpha1, v1alpha2, v1alpha3, v1alpha4"),
        Status::Ok
    );
    assert_eq!(status(&list, "traffictargets.access.smi-spec.io serves"), Status::Ok);
    assert_eq!(status(&list, "0/2 replicas of weft-control ready"), Status::Fail);
    assert_eq!(status(&list, "the CA Secret weft-system/weft-ca does not exist"), Status::Fail);
    assert_eq!(status(&list, "the webhook's caBundle is empty"), Status::Fail);
    assert_eq!(status(&list, "service weft-webhook has no ready endpoint"), Status::Fail);

    // The control plane comes up: the first replica makes the CA Secret, the second loads it,
    // the caBundle is patched, the replicas turn ready and the webhook gets endpoints.
    let scratch = tempfile::tempdir().unwrap();
    let first = weft_control::install::ca_secret::load_or_create(
        client.clone(),
        NAMESPACE,
        CA_SECRET,
        scratch.path(),
        CaConfig::default(),
    )
    .await
    .unwrap();
    let second = weft_control::install::ca_secret::load_or_create(
        client.clone(),
        NAMESPACE,
        CA_SECRET,
        scratch.path(),
        CaConfig::default(),
    )
    .await
    .unwrap();
    assert_eq!(first.root_pem(), second.root_pem(), "both replicas must sign with the same CA");
    weft_control::inject::webhook::patch_ca_bundle(client.clone(), WEBHOOK_CONFIGURATION, first.root_pem())
        .await
        .unwrap();
    api.merge_patch(
        "apps/v1",
        "Deployment",
        NAMESPACE,
        "weft-control",
        true,
        json!({"status": {"replicas": 2, "readyReplicas": 2}}),
    )
    .await
    .unwrap();
    api.create(json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
        "metadata": {"name": "weft-webhook-abc", "namespace": NAMESPACE, "labels": {"kubernetes.io/service-name": "weft-webhook"}},
        "endpoints": [{"addresses": ["10.0.0.7"], "conditions": {"ready": true}}],
        "ports": [{"name": "https-webhook", "port": 8443}]
    }))
    .await
    .unwrap();

    let list = installation(&client).await;
    assert_eq!(list.failures(), 0, "{}", list.render());
    assert_eq!(status(&list, "2/2 replicas of weft-control ready"), Status::Ok);
    assert_eq!(status(&list, "the CA root expires in"), Status::Ok);
    assert_eq!(status(&list, "weft-injector trusts the CA root"), Status::Ok);
    assert_eq!(status(&list, "service weft-webhook has 1 ready endpoint"), Status::Ok);

    // A caBundle from another CA is caught.
    let other = weft_control::identity::CertificateAuthority::generate(CaConfig::default()).unwrap();
    weft_control::inject::webhook::patch_ca_bundle(client.clone(), WEBHOOK_CONFIGURATION, other.root_pem())
        .await
        .unwrap();
    let list = installation(&client).await;
    assert_eq!(status(&list, "the webhook's caBundle is not the CA root"), Status::Fail);
}
