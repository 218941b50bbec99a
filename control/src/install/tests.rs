#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps,
};
use serde::de::DeserializeOwned;

use super::*;

/// The printed YAML, split and parsed back (as `kubectl apply -f -` would).
fn printed_documents(yaml: &str) -> Vec<serde_json::Value> {
    serde_yaml_ng::Deserializer::from_str(yaml)
        .map(|de| serde::Deserialize::deserialize(de).unwrap())
        .filter(|v: &serde_json::Value| !v.is_null())
        .collect()
}

/// Parses `doc` as `T` and checks that nothing was lost on the way: a misspelt or misplaced
/// field, which the API server would drop or refuse, makes the round trip differ.
fn typed<T: DeserializeOwned + serde::Serialize>(doc: &serde_json::Value) -> T {
    let what = format!("{} {}", doc["kind"], doc["metadata"]["name"]);
    let parsed: T = serde_json::from_value(doc.clone()).unwrap_or_else(|e| panic!("{what}: {e}"));
    let back = serde_json::to_value(&parsed).unwrap();
    if let Some(path) = first_difference(doc, &back, String::new()) {
        panic!("{what} does not survive a round trip through its k8s-openapi type at {path}");
    }
    parsed
}

/// Where `a` and `b` first differ (numbers compared by value: `0` and `0.0` are the same).
fn first_difference(a: &serde_json::Value, b: &serde_json::Value, at: String) -> Option<String> {
    use serde_json::Value;
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            keys.into_iter().find_map(|k| match (x.get(k), y.get(k)) {
                (Some(p), Some(q)) => first_difference(p, q, format!("{at}.{k}")),
                _ => Some(format!("{at}.{k}")),
            })
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            x.iter().zip(y).enumerate().find_map(|(i, (p, q))| first_difference(p, q, format!("{at}[{i}]")))
        }
        (Value::Number(x), Value::Number(y)) if x.as_f64() == y.as_f64() => None,
        _ if a == b => None,
        _ => Some(if at.is_empty() { ".".into() } else { at }),
    }
}

#[test]
fn every_install_document_parses_as_its_kubernetes_type() {
    let yaml = InstallOptions::default().install_yaml().unwrap();
    let docs = printed_documents(&yaml);
    let mut kinds = Vec::new();
    for doc in &docs {
        let kind = doc["kind"].as_str().unwrap();
        match kind {
            "CustomResourceDefinition" => drop(typed::<CustomResourceDefinition>(doc)),
            "Namespace" => drop(typed::<Namespace>(doc)),
            "ServiceAccount" => drop(typed::<ServiceAccount>(doc)),
            "ClusterRole" => drop(typed::<ClusterRole>(doc)),
            "ClusterRoleBinding" => drop(typed::<ClusterRoleBinding>(doc)),
            "Role" => drop(typed::<Role>(doc)),
            "RoleBinding" => drop(typed::<RoleBinding>(doc)),
            "Service" => drop(typed::<Service>(doc)),
            "Deployment" => drop(typed::<Deployment>(doc)),
            "PodDisruptionBudget" => drop(typed::<PodDisruptionBudget>(doc)),
            "MutatingWebhookConfiguration" => drop(typed::<MutatingWebhookConfiguration>(doc)),
            other => panic!("unexpected kind {other}"),
        }
        kinds.push(kind.to_string());
    }
    // CRDs first (so SMI objects applied in the same stream find them), then the namespace.
    let first: Vec<&str> = kinds[..5].iter().map(String::as_str).collect();
    assert_eq!(
        first,
        [
            "CustomResourceDefinition",
            "CustomResourceDefinition",
            "CustomResourceDefinition",
            "CustomResourceDefinition",
            "Namespace"
        ]
    );
    for want in ["Deployment", "MutatingWebhookConfiguration", "ClusterRole", "Role", "PodDisruptionBudget"] {
        assert!(kinds.iter().any(|k| k == want), "no {want}");
    }
    assert_eq!(kinds.iter().filter(|k| *k == "Service").count(), 2);
}

#[test]
fn the_weft_tap_cluster_role_grants_only_watch_on_tap_resources_and_is_bound_to_no_one() {
    let cr: ClusterRole = document("ClusterRole", crate::tap::kube::TAP_CLUSTER_ROLE);
    let rules = cr.rules.unwrap();
    assert_eq!(rules.len(), 1, "{rules:?}");
    assert_eq!(rules[0].api_groups.as_deref(), Some(&[crate::tap::kube::TAP_API_GROUP.to_string()][..]));
    assert_eq!(rules[0].verbs, [crate::tap::kube::TAP_VERB]);
    let resources = rules[0].resources.clone().unwrap();
    for kind in
        [crate::tap::TargetKind::Deployment, crate::tap::TargetKind::Pod, crate::tap::TargetKind::Workload]
    {
        assert!(resources.iter().any(|r| r == kind.resource()), "{resources:?}");
    }
    let docs = printed_documents(&InstallOptions::default().install_yaml().unwrap());
    let bound = docs.iter().any(|d| {
        matches!(d["kind"].as_str(), Some("ClusterRoleBinding" | "RoleBinding"))
            && d["roleRef"]["name"] == "weft-tap"
    });
    assert!(!bound, "operators are bound by an admin, not by weft install");
}

fn document<T: DeserializeOwned + serde::Serialize>(kind: &str, name: &str) -> T {
    let docs = printed_documents(&InstallOptions::default().install_yaml().unwrap());
    let doc = docs
        .iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind}/{name}"));
    typed(doc)
}

/// Every schema node has a type (or is int-or-string, or keeps unknown fields), as a
/// structural schema must; `properties` only under objects, `items` only under arrays.
fn assert_structural(path: &str, s: &JSONSchemaProps) {
    let typed = s.type_.is_some();
    let int_or_string = s.x_kubernetes_int_or_string == Some(true);
    let preserve = s.x_kubernetes_preserve_unknown_fields == Some(true);
    assert!(typed || int_or_string || preserve, "{path}: no type");
    if int_or_string {
        assert!(s.type_.is_none(), "{path}: int-or-string with a type");
    }
    if let Some(props) = &s.properties {
        assert_eq!(s.type_.as_deref(), Some("object"), "{path}: properties on a non-object");
        for (name, p) in props {
            assert_structural(&format!("{path}.{name}"), p);
        }
    }
    if let Some(items) = &s.items {
        assert_eq!(s.type_.as_deref(), Some("array"), "{path}: items on a non-array");
        let k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSONSchemaPropsOrArray::Schema(items) =
            items
        else {
            panic!("{path}: items must be one schema")
        };
        assert_structural(&format!("{path}[]"), items);
    }
    if let Some(
        k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSONSchemaPropsOrBool::Schema(
            extra,
        ),
    ) = &s.additional_properties
    {
        assert_structural(&format!("{path}{{}}"), extra);
    }
}

#[test]
fn crds_serve_every_smi_version_store_one_and_have_status_and_structural_schemas() {
    let want: [(&str, &[&str]); 4] = [
        ("trafficsplits.split.smi-spec.io", &["v1alpha1", "v1alpha2", "v1alpha3", "v1alpha4"]),
        ("traffictargets.access.smi-spec.io", &["v1alpha1", "v1alpha2", "v1alpha3"]),
        ("httproutegroups.specs.smi-spec.io", &["v1alpha1", "v1alpha2", "v1alpha3", "v1alpha4"]),
        ("tcproutes.specs.smi-spec.io", &["v1alpha1", "v1alpha2", "v1alpha3", "v1alpha4"]),
    ];
    for (name, versions) in want {
        let crd: CustomResourceDefinition = document("CustomResourceDefinition", name);
        let (plural, group) = name.split_once('.').unwrap();
        assert_eq!(crd.spec.group, group);
        assert_eq!(crd.spec.names.plural, plural);
        assert_eq!(crd.spec.scope, "Namespaced");
        let got: Vec<&str> = crd.spec.versions.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(got, versions, "{name}");
        let stored: Vec<&str> =
            crd.spec.versions.iter().filter(|v| v.storage).map(|v| v.name.as_str()).collect();
        assert_eq!(stored, [*versions.last().unwrap()], "{name}: exactly one storage version, the newest");
        for v in &crd.spec.versions {
            let at = format!("{name} {}", v.name);
            assert!(v.served, "{at} not served");
            assert!(
                v.subresources.as_ref().and_then(|s| s.status.as_ref()).is_some(),
                "{at}: no status subresource"
            );
            let schema = v.schema.as_ref().and_then(|s| s.open_api_v3_schema.as_ref()).expect("schema");
            assert_eq!(schema.type_.as_deref(), Some("object"), "{at}");
            assert!(
                schema.properties.as_ref().unwrap().contains_key("status"),
                "{at}: no status in the schema"
            );
            assert_structural(&at, schema);
        }
    }
}

#[test]
fn crd_schemas_keep_the_fields_weft_reads_in_each_version() {
    // Fields that moved between versions must be declared where each version puts them, or the
    // API server would prune them.
    let crd: CustomResourceDefinition =
        document("CustomResourceDefinition", "traffictargets.access.smi-spec.io");
    let props = |v: usize| {
        crd.spec.versions[v].schema.clone().unwrap().open_api_v3_schema.unwrap().properties.unwrap()
    };
    assert!(props(0).contains_key("destination") && props(0).contains_key("specs"));
    let spec = props(1)["spec"].properties.clone().unwrap();
    assert!(spec.contains_key("destination") && spec.contains_key("rules") && spec.contains_key("sources"));

    let split: CustomResourceDefinition =
        document("CustomResourceDefinition", "trafficsplits.split.smi-spec.io");
    let weight = |v: usize| {
        let spec =
            split.spec.versions[v].schema.clone().unwrap().open_api_v3_schema.unwrap().properties.unwrap();
        let backends = spec["spec"].properties.clone().unwrap()["backends"].clone();
        let k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSONSchemaPropsOrArray::Schema(item) =
            backends.items.unwrap()
        else {
            panic!()
        };
        item.properties.unwrap()["weight"].clone()
    };
    assert_eq!(weight(0).x_kubernetes_int_or_string, Some(true), "v1alpha1 weights are quantities (950m)");
    assert_eq!(weight(3).type_.as_deref(), Some("integer"));
}

#[test]
fn the_deployment_runs_two_replicas_serving_xds_as_weft_control() {
    let d: Deployment = document("Deployment", "weft-control");
    let spec = d.spec.unwrap();
    assert_eq!(spec.replicas, Some(2));
    let pod = spec.template.spec.unwrap();
    assert_eq!(pod.service_account_name.as_deref(), Some("weft-control"));
    let c = &pod.containers[0];
    let env: BTreeSet<String> = c.env.iter().flatten().map(|e| e.name.clone()).collect();
    for want in [
        "WEFT_SOURCE",
        "WEFT_XDS_ADDR",
        "WEFT_ADMIN_ADDR",
        "WEFT_WEBHOOK_ADDR",
        "WEFT_CA_SECRET",
        "WEFT_PROXY_IMAGE",
    ] {
        assert!(env.contains(want), "no {want}");
    }
    let ports: Vec<i32> = c.ports.iter().flatten().map(|p| p.container_port).collect();
    assert_eq!(ports, [8086, 8085, 8443]);
    assert_eq!(c.security_context.as_ref().unwrap().read_only_root_filesystem, Some(true));

    let opts =
        InstallOptions { replicas: 3, image: "registry.example/weft:dev".into(), ..Default::default() };
    let docs = printed_documents(&opts.install_yaml().unwrap());
    let d = docs.iter().find(|d| d["kind"] == "Deployment").unwrap();
    assert_eq!(d["spec"]["replicas"], 3);
    assert_eq!(d["spec"]["template"]["spec"]["containers"][0]["image"], "registry.example/weft:dev");
}

#[test]
fn services_expose_xds_admin_and_the_webhook_on_443() {
    let s: Service = document("Service", "weft-control");
    let ports: Vec<(i32, String)> =
        s.spec.unwrap().ports.unwrap().into_iter().map(|p| (p.port, p.name.unwrap())).collect();
    assert_eq!(ports, [(8086, "grpc-xds".to_string()), (8085, "http-admin".to_string())]);
    let w: Service = document("Service", WEBHOOK_SERVICE);
    let p = &w.spec.unwrap().ports.unwrap()[0];
    assert_eq!(p.port, 443);
    assert_eq!(
        p.target_port,
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String("webhook".into()))
    );
}

#[test]
fn rbac_is_least_privilege() {
    let cr: ClusterRole = document("ClusterRole", "weft-control");
    let rules = cr.rules.unwrap();
    for r in &rules {
        let resources = r.resources.clone().unwrap_or_default();
        assert!(!r.verbs.iter().any(|v| v == "*"), "wildcard verb in {r:?}");
        assert!(!resources.iter().any(|v| v == "*"), "wildcard resource in {r:?}");
        assert!(!resources.iter().any(|v| v == "secrets"), "the ClusterRole must not reach Secrets: {r:?}");
        if r.verbs.iter().any(|v| ["update", "patch", "delete"].contains(&v.as_str())) {
            let status_only = resources.iter().all(|res| res.ends_with("/status") || res == "events");
            assert!(
                status_only || r.resource_names.is_some(),
                "writes beyond status need resourceNames: {r:?}"
            );
        }
    }
    let allows = |group: &str, resource: &str, verb: &str| {
        rules.iter().any(|r| {
            r.api_groups.iter().flatten().any(|g| g == group)
                && r.resources.iter().flatten().any(|x| x == resource)
                && r.verbs.iter().any(|v| v == verb)
        })
    };
    for (group, resource) in [
        ("", "services"),
        ("", "pods"),
        ("", "namespaces"),
        ("discovery.k8s.io", "endpointslices"),
        ("split.smi-spec.io", "trafficsplits"),
        ("access.smi-spec.io", "traffictargets"),
        ("specs.smi-spec.io", "httproutegroups"),
        ("specs.smi-spec.io", "tcproutes"),
    ] {
        assert!(allows(group, resource, "list") && allows(group, resource, "watch"), "{group}/{resource}");
    }
    assert!(allows("split.smi-spec.io", "trafficsplits/status", "patch"));
    assert!(allows("access.smi-spec.io", "traffictargets/status", "patch"));
    assert!(allows("", "events", "create"));
    assert!(allows("authentication.k8s.io", "tokenreviews", "create"));
    // weft tap: SubjectAccessReview for operators, ReplicaSets for deploy/NAME.
    assert!(allows("authorization.k8s.io", "subjectaccessreviews", "create"));
    assert!(allows("apps", "replicasets", "list"));
    assert!(!allows("split.smi-spec.io", "trafficsplits", "patch"), "the spec is the user's");

    let role: Role = document("Role", "weft-control");
    assert_eq!(role.metadata.namespace.as_deref(), Some(NAMESPACE));
    let rules = role.rules.unwrap();
    let secret_reads: Vec<_> = rules
        .iter()
        .filter(|r| {
            r.resources.iter().flatten().any(|x| x == "secrets") && r.verbs.iter().any(|v| v == "get")
        })
        .collect();
    assert_eq!(secret_reads.len(), 1);
    assert_eq!(secret_reads[0].resource_names.as_deref(), Some(&[CA_SECRET.to_string()][..]));
    assert!(rules.iter().any(|r| r.api_groups.iter().flatten().any(|g| g == "coordination.k8s.io")));

    let binding: ClusterRoleBinding = document("ClusterRoleBinding", "weft-control");
    let subject = &binding.subjects.unwrap()[0];
    assert_eq!((subject.name.as_str(), subject.namespace.as_deref()), ("weft-control", Some(NAMESPACE)));
}

#[test]
fn the_webhook_ignores_failures_and_honours_the_inject_label() {
    let w: MutatingWebhookConfiguration = document("MutatingWebhookConfiguration", WEBHOOK_CONFIGURATION);
    let hook = &w.webhooks.unwrap()[0];
    assert_eq!(hook.name, WEBHOOK_NAME);
    assert_eq!(hook.failure_policy.as_deref(), Some("Ignore"));
    assert_eq!(hook.side_effects, "None");
    assert!(hook.client_config.ca_bundle.is_none(), "the control plane patches caBundle in");
    let svc = hook.client_config.service.as_ref().unwrap();
    assert_eq!(
        (svc.name.as_str(), svc.namespace.as_str(), svc.port),
        (WEBHOOK_SERVICE, NAMESPACE, Some(443))
    );
    let ns = hook.namespace_selector.as_ref().unwrap().match_expressions.clone().unwrap();
    assert!(ns.iter().any(|e| e.key == "weft.io/inject" && e.operator == "NotIn"));
    assert!(ns.iter().any(|e| e.values.iter().flatten().any(|v| v == "kube-system")));
    let obj = hook.object_selector.as_ref().unwrap().match_expressions.clone().unwrap();
    assert!(obj.iter().any(|e| e.key == "weft.io/inject" && e.values == Some(vec!["disabled".into()])));
    let rule = &hook.rules.as_ref().unwrap()[0];
    assert_eq!(rule.resources.as_deref(), Some(&["pods".to_string()][..]));

    let opts = InstallOptions { failure_policy: FailurePolicy::Fail, ..Default::default() };
    assert!(opts.install_yaml().unwrap().contains("failurePolicy: Fail"));
}

#[test]
fn uninstall_names_every_installed_object_in_reverse_order() {
    let opts = InstallOptions::default();
    let installed: Vec<(String, String)> =
        opts.documents().unwrap().into_iter().map(|d| (d.kind, d.name)).collect();
    let removed: Vec<(String, String)> = printed_documents(&opts.uninstall_yaml(false).unwrap())
        .iter()
        .map(|d| {
            (d["kind"].as_str().unwrap().to_string(), d["metadata"]["name"].as_str().unwrap().to_string())
        })
        .collect();
    let mut reversed = installed.clone();
    reversed.reverse();
    assert_eq!(removed, reversed);

    let kept = printed_documents(&opts.uninstall_yaml(true).unwrap());
    assert!(kept.iter().all(|d| d["kind"] != "CustomResourceDefinition"));
    assert_eq!(kept.len(), installed.len() - 4);
}

#[test]
fn options_that_would_break_the_yaml_are_refused() {
    for (opts, flag) in [
        (InstallOptions { image: "a b".into(), ..Default::default() }, "--image"),
        (InstallOptions { proxy_image: "x\"y".into(), ..Default::default() }, "--proxy-image"),
        (InstallOptions { replicas: 0, ..Default::default() }, "--replicas"),
        (InstallOptions { pull_policy: "Sometimes".into(), ..Default::default() }, "--image-pull-policy"),
        (InstallOptions { trust_domain: "{{x}}".into(), ..Default::default() }, "--trust-domain"),
    ] {
        let e = opts.install_yaml().unwrap_err();
        assert!(e.to_string().starts_with(flag), "{flag}: {e}");
    }
}
