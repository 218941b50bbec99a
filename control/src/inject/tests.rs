#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::core::DynamicObject;
use kube::core::admission::AdmissionReview;
use serde_json::{Value, json};

use super::*;

fn pod(annotations: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web-0", "namespace": "shop", "annotations": annotations},
        "spec": {
            "serviceAccountName": "web",
            "initContainers": [{"name": "migrate", "image": "migrate:1"}],
            "containers": [{"name": "app", "image": "web:1", "ports": [{"containerPort": 8080}],
                            "futureField": {"kept": true}}]
        }
    })
}

fn namespace(inject: Option<&str>) -> ObjectMeta {
    ObjectMeta {
        name: Some("shop".into()),
        annotations: inject.map(|v| BTreeMap::from([("weft.io/inject".to_string(), v.to_string())])),
        ..Default::default()
    }
}

fn names(list: &Value) -> Vec<&str> {
    list.as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect()
}

#[test]
fn the_pod_setting_wins_over_the_namespace_and_disabled_wins_over_all() {
    let cases = [
        (json!({}), Some("enabled"), true),
        (json!({}), None, false),
        (json!({}), Some("disabled"), false),
        (json!({"weft.io/inject": "enabled"}), None, true),
        (json!({"weft.io/inject": "enabled"}), Some("disabled"), true),
        (json!({"weft.io/inject": "disabled"}), Some("enabled"), false),
    ];
    for (annotations, ns, want) in cases {
        let meta = json!({ "annotations": annotations });
        let got = decide(&meta, Some(&namespace(ns))).unwrap();
        assert_eq!(matches!(got, Decision::Inject(_)), want, "pod {annotations} namespace {ns:?}: {got:?}");
    }
    // A label opts out as well as an annotation does (the webhook's objectSelector uses it).
    let labelled = json!({"labels": {"weft.io/inject": "disabled"}});
    assert!(matches!(decide(&labelled, Some(&namespace(Some("enabled")))).unwrap(), Decision::Skip(_)));
    // Offline, with no namespace to read, the pod is injected unless it opts out.
    assert!(matches!(decide(&json!({}), None).unwrap(), Decision::Inject(_)));
    let e = decide(&json!({"annotations": {"weft.io/inject": "true"}}), None).unwrap_err();
    assert!(e.to_string().contains("must be `enabled` or `disabled`"), "{e}");
}

#[test]
fn a_native_sidecar_runs_after_the_redirect_and_before_the_pods_own_init_containers() {
    let mut p = pod(json!({"weft.io/inject": "enabled"}));
    let out = inject(&mut p, None, &InjectConfig::default(), false).unwrap();
    assert_eq!(out, Outcome::Injected { warnings: vec![] });
    let spec = &p["spec"];
    assert_eq!(names(&spec["initContainers"]), ["weft-init", "weft-proxy", "migrate"]);
    assert_eq!(names(&spec["containers"]), ["app"]);
    let proxy = &spec["initContainers"][1];
    assert_eq!(proxy["restartPolicy"], "Always");
    assert_eq!(proxy["startupProbe"]["httpGet"]["path"], "/ready");
    assert_eq!(proxy["securityContext"]["runAsUser"], 2102);
    let env: BTreeMap<&str, &Value> =
        proxy["env"].as_array().unwrap().iter().map(|e| (e["name"].as_str().unwrap(), e)).collect();
    assert_eq!(env["WEFT_POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"], "status.podIP");
    assert_eq!(env["WEFT_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"], "metadata.namespace");
    assert_eq!(env["WEFT_SERVICE_ACCOUNT"]["valueFrom"]["fieldRef"]["fieldPath"], "spec.serviceAccountName");
    assert_eq!(env["WEFT_CA_FILE"]["value"], "/var/run/weft/identity/ca.pem");
    assert_eq!(env["WEFT_TOKEN_FILE"]["value"], "/var/run/weft/identity/token");
    assert_eq!(env["WEFT_TRANSPARENT"]["value"], "true");
    assert_eq!(env["WEFT_APP_PORT"]["value"], "8080");
    assert_eq!(env["WEFT_XDS_ADDR"]["value"], "weft-control.weft-system.svc:8086");

    let init = &spec["initContainers"][0];
    assert_eq!(init["args"][0], "init");
    assert_eq!(init["securityContext"]["capabilities"]["add"], json!(["NET_ADMIN", "NET_RAW"]));
    assert_eq!(init["securityContext"]["runAsUser"], 0);

    let volumes = &spec["volumes"];
    assert_eq!(names(volumes), ["weft-identity", "weft-xtables"]);
    let sources = &volumes[0]["projected"]["sources"];
    assert_eq!(sources[0]["serviceAccountToken"]["audience"], "weft");
    assert_eq!(sources[1]["configMap"]["name"], "weft-trust-bundle");

    assert_eq!(p["metadata"]["annotations"]["weft.io/proxy-version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(p["metadata"]["annotations"]["kubectl.kubernetes.io/default-container"], "app");
    // Fields weft does not know are kept.
    assert_eq!(spec["containers"][0]["futureField"]["kept"], true);
    // The result is a valid Pod.
    let typed: Pod = serde_json::from_value(p).unwrap();
    assert_eq!(typed.spec.unwrap().init_containers.unwrap().len(), 3);
}

#[test]
fn without_native_sidecars_the_proxy_is_the_first_container() {
    let mut p = pod(json!({"weft.io/inject": "enabled"}));
    let cfg = InjectConfig { native_sidecar: false, ..Default::default() };
    let Outcome::Injected { warnings } = inject(&mut p, None, &cfg, true).unwrap() else { panic!() };
    assert_eq!(names(&p["spec"]["initContainers"]), ["weft-init", "migrate"]);
    assert_eq!(names(&p["spec"]["containers"]), ["weft-proxy", "app"]);
    assert!(p["spec"]["containers"][0].get("restartPolicy").is_none());
    assert!(p["spec"]["containers"][0].get("startupProbe").is_none());
    // A Job, and init containers that would run before the proxy: both are worth a warning.
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(warnings[0].contains("Job will not complete"));
}

#[test]
fn injecting_twice_changes_nothing() {
    let mut p = pod(json!({"weft.io/inject": "enabled"}));
    inject(&mut p, None, &InjectConfig::default(), false).unwrap();
    let once = p.clone();
    assert_eq!(inject(&mut p, None, &InjectConfig::default(), false).unwrap(), Outcome::AlreadyInjected);
    assert_eq!(p, once);
}

#[test]
fn skip_port_annotations_reach_the_init_step_and_bad_ones_are_refused() {
    let mut p = pod(json!({
        "weft.io/inject": "enabled",
        "weft.io/skip-inbound-ports": "9090, 9100-9110",
        "weft.io/skip-outbound-ports": "5432"
    }));
    inject(&mut p, None, &InjectConfig::default(), false).unwrap();
    let args: Vec<&str> = p["spec"]["initContainers"][0]["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let after = |flag: &str| args[args.iter().position(|a| *a == flag).unwrap() + 1];
    assert_eq!(after("--skip-inbound-ports"), "9090,9100-9110");
    assert_eq!(after("--skip-outbound-ports"), "5432");
    assert_eq!(after("--proxy-uid"), "2102");

    for bad in ["http", "0", "10-5", "70000"] {
        let mut p = pod(json!({"weft.io/inject": "enabled", "weft.io/skip-inbound-ports": bad}));
        let before = p.clone();
        let e = inject(&mut p, None, &InjectConfig::default(), false).unwrap_err();
        assert!(e.to_string().contains("weft.io/skip-inbound-ports"), "{bad}: {e}");
        assert_eq!(p, before, "a refused pod is left untouched");
    }
}

#[test]
fn host_network_pods_are_not_injected() {
    let mut p = pod(json!({"weft.io/inject": "enabled"}));
    p["spec"]["hostNetwork"] = json!(true);
    assert_eq!(inject(&mut p, None, &InjectConfig::default(), false).unwrap_err(), InjectError::HostNetwork);
}

#[test]
fn native_sidecars_from_kubernetes_1_29() {
    for (major, minor, want) in [
        ("1", "28", false),
        ("1", "29", true),
        ("1", "33+", true),
        ("1", "27+", false),
        ("2", "0", true),
        ("", "", false),
    ] {
        assert_eq!(native_sidecars_supported(major, minor), want, "{major}.{minor}");
    }
}

fn admission(object: Value) -> AdmissionReview<DynamicObject> {
    serde_json::from_value(json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "kind": {"group": "", "version": "v1", "kind": object["kind"]},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "shop",
            "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
            "object": object,
            "dryRun": false
        }
    }))
    .unwrap()
}

/// Applies the response's patch to the request's object, as the API server would.
fn patched(object: &Value, answer: &AdmissionReview<DynamicObject>) -> Value {
    let response = answer.response.as_ref().unwrap();
    assert!(response.allowed);
    let mut out = object.clone();
    if let Some(patch) = &response.patch {
        let patch: json_patch::Patch = serde_json::from_slice(patch).unwrap();
        json_patch::patch(&mut out, &patch).unwrap();
    }
    out
}

#[test]
fn the_review_patch_turns_the_pod_into_the_injected_pod() {
    let object = pod(json!({}));
    let answer = review(admission(object.clone()), &namespace(Some("enabled")), &InjectConfig::default());
    let response = answer.response.as_ref().unwrap();
    assert_eq!(response.uid, "705ab4f5-6393-11e8-b7cc-42010a800002");
    let json = serde_json::to_value(response).unwrap();
    assert_eq!(json["patchType"], "JSONPatch");
    let after = patched(&object, &answer);
    let mut want = object.clone();
    inject(&mut want, Some(&namespace(Some("enabled"))), &InjectConfig::default(), false).unwrap();
    assert_eq!(after, want);
    assert_eq!(names(&after["spec"]["initContainers"]), ["weft-init", "weft-proxy", "migrate"]);

    // Re-injecting the injected pod: allowed, no patch.
    let again = review(admission(after.clone()), &namespace(Some("enabled")), &InjectConfig::default());
    assert!(again.response.as_ref().unwrap().patch.is_none());
    assert_eq!(patched(&after, &again), after);
}

#[test]
fn opted_out_unannotated_and_non_pod_requests_are_admitted_untouched() {
    for (object, ns) in [
        (pod(json!({"weft.io/inject": "disabled"})), Some("enabled")),
        (pod(json!({})), None),
        (json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}), Some("enabled")),
    ] {
        let answer = review(admission(object.clone()), &namespace(ns), &InjectConfig::default());
        let response = answer.response.as_ref().unwrap();
        assert!(response.allowed);
        assert!(response.patch.is_none(), "{object}");
        assert!(response.warnings.is_none());
    }
}

#[test]
fn a_pod_that_cannot_be_injected_is_admitted_unchanged_with_a_warning() {
    let object = pod(json!({"weft.io/inject": "enabled", "weft.io/skip-outbound-ports": "all"}));
    let answer = review(admission(object), &namespace(None), &InjectConfig::default());
    let response = answer.response.as_ref().unwrap();
    assert!(response.allowed);
    assert!(response.patch.is_none());
    let warnings = response.warnings.clone().unwrap();
    assert!(warnings[0].starts_with("weft: the pod was admitted without a proxy"), "{warnings:?}");
    assert!(warnings[0].contains("weft.io/skip-outbound-ports"), "{warnings:?}");
}

#[test]
fn offline_injection_handles_workload_kinds_and_passes_others_through() {
    let input = "\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: shop
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: app
        image: web:1
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
data:
  a: b
---
apiVersion: batch/v1
kind: CronJob
metadata:
  name: nightly
spec:
  schedule: '@daily'
  jobTemplate:
    spec:
      template:
        metadata:
          annotations:
            weft.io/inject: disabled
        spec:
          restartPolicy: Never
          containers:
          - name: job
            image: job:1
---
apiVersion: v1
kind: List
items:
- apiVersion: apps/v1
  kind: StatefulSet
  metadata:
    name: db
  spec:
    template:
      spec:
        containers:
        - name: db
          image: db:1
";
    let (out, reports) = inject_yaml(input, &InjectConfig::default()).unwrap();
    let lines: Vec<String> = reports.iter().map(ToString::to_string).collect();
    assert_eq!(
        lines,
        [
            "deployment/web injected",
            "cronjob/nightly skipped: the pod has weft.io/inject: disabled",
            "statefulset/db injected"
        ]
    );
    let docs: Vec<Value> = serde_yaml_ng::Deserializer::from_str(&out)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect();
    assert_eq!(docs.len(), 4);
    assert_eq!(names(&docs[0]["spec"]["template"]["spec"]["initContainers"]), ["weft-init", "weft-proxy"]);
    assert_eq!(
        docs[1],
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"}, "data": {"a": "b"}})
    );
    assert!(docs[2]["spec"]["jobTemplate"]["spec"]["template"]["spec"].get("initContainers").is_none());
    assert_eq!(
        names(&docs[3]["items"][0]["spec"]["template"]["spec"]["initContainers"]),
        ["weft-init", "weft-proxy"]
    );
    // The user's key order is kept: apiVersion still comes first, replicas before template.
    assert!(out.starts_with("---\napiVersion: apps/v1\nkind: Deployment\n"), "{out}");
    assert!(out.find("replicas").unwrap() < out.find("template").unwrap());

    // Injecting the output again changes nothing.
    let (again, reports) = inject_yaml(&out, &InjectConfig::default()).unwrap();
    assert_eq!(again, out);
    assert!(reports[0].to_string().contains("already injected"));
}

#[test]
fn the_trust_bundle_config_map_holds_the_pem_under_ca_pem() {
    let cm = trust_bundle::config_map("shop", "-----BEGIN CERTIFICATE-----\n");
    assert_eq!(cm.metadata.name.as_deref(), Some(TRUST_BUNDLE_CONFIG_MAP));
    assert_eq!(cm.metadata.namespace.as_deref(), Some("shop"));
    assert_eq!(cm.data.unwrap()[TRUST_BUNDLE_KEY], "-----BEGIN CERTIFICATE-----\n");
}
