#![allow(clippy::unwrap_used)]

use serde_json::json;

use super::*;
use crate::source::kube::resources::WatchedKind;

fn object(value: Value) -> Arc<DynamicObject> {
    Arc::new(serde_json::from_value(value).unwrap())
}

fn split(name: &str, rv: &str, weight: Value) -> Arc<DynamicObject> {
    object(json!({
        "metadata": {"name": name, "namespace": "pay", "resourceVersion": rv, "uid": format!("uid-{name}"),
                     "generation": 1, "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {"service": "web", "backends": [{"service": "web-v1", "weight": weight}]},
    }))
}

fn kind(kind: Kind, versions: &[(&str, Vec<Arc<DynamicObject>>)]) -> KindObjects {
    let watched = WatchedKind::of(kind);
    KindObjects {
        kind,
        versions: versions.iter().map(|(v, objects)| (watched.at(v), objects.clone())).collect(),
    }
}

fn weight(report: &LoadReport, name: &str) -> Option<u64> {
    report.state.traffic_splits.get(&Key::new("pay", name)).map(|s| s.backends[0].weight_milli)
}

#[test]
fn api_objects_reach_the_state_through_the_manifest_parser() {
    let service = object(json!({
        "metadata": {"name": "web", "namespace": "pay", "resourceVersion": "3"},
        "spec": {"clusterIP": "10.0.0.1", "selector": {"app": "web"},
                 "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}]},
        "status": {"loadBalancer": {}},
    }));
    let kube_dns = object(json!({
        "metadata": {"name": "kube-dns", "namespace": "kube-system", "resourceVersion": "4"},
        "spec": {"ports": [{"name": "dns", "port": 53, "protocol": "UDP"}]},
    }));
    let mut builder = StateBuilder::default();
    let (report, index) = builder.build(&[
        kind(Kind::Service, &[("v1", vec![service, kube_dns])]),
        kind(Kind::TrafficSplit, &[("v1alpha2", vec![split("s", "5", json!(90))])]),
    ]);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert!(report.changed);
    let svc = &report.state.services[&Key::new("pay", "web")];
    assert_eq!(svc.ports[0].port, 80);
    assert_eq!(report.state.services.len(), 1, "a UDP-only Service is skipped, not refused");
    assert_eq!(weight(&report, "s"), Some(90_000));
    assert_eq!(
        report.state.traffic_splits[&Key::new("pay", "s")].created.as_deref(),
        Some("2026-01-01T00:00:00Z")
    );
    let entry = &index[&(Kind::TrafficSplit, Key::new("pay", "s"))];
    assert_eq!(entry.api.version, "v1alpha2");
    assert_eq!(entry.uid.as_deref(), Some("uid-s"));
    assert_eq!(report.state.split_first_seen.get(&Key::new("pay", "s")), Some(&0));
}

#[test]
fn an_invalid_edit_is_reported_and_the_last_valid_version_kept_until_deletion() {
    let mut builder = StateBuilder::default();
    let splits = |objects| [kind(Kind::TrafficSplit, &[("v1alpha2", objects)])];
    builder.build(&splits(vec![split("s", "5", json!(90))]));

    let (report, index) = builder.build(&splits(vec![split("s", "6", json!(-5))]));
    assert!(report.changed);
    assert_eq!(weight(&report, "s"), Some(90_000), "last valid version kept");
    assert_eq!(report.errors.len(), 1);
    let error = report.errors[0].to_string();
    assert!(
        error.starts_with("TrafficSplit pay/s: spec.backends[0].weight: must not be negative"),
        "{error}"
    );
    assert!(index.contains_key(&(Kind::TrafficSplit, Key::new("pay", "s"))), "status still written");

    let (again, _) = builder.build(&splits(vec![split("s", "6", json!(-5))]));
    assert!(!again.changed, "nothing new");

    let (deleted, index) = builder.build(&splits(vec![]));
    assert!(deleted.state.traffic_splits.is_empty());
    assert!(deleted.errors.is_empty());
    assert!(index.is_empty());
    let (recreated, _) = builder.build(&splits(vec![split("s", "9", json!(-1))]));
    assert!(recreated.state.traffic_splits.is_empty(), "no valid version since it was recreated");
}

#[test]
fn an_object_served_at_several_versions_is_read_once_at_the_version_it_was_written_in() {
    let mut written = (*split("s", "5", json!("500m"))).clone();
    written.metadata.managed_fields =
        Some(vec![k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry {
            api_version: Some("split.smi-spec.io/v1alpha1".into()),
            operation: Some("Update".into()),
            ..Default::default()
        }]);
    let written = Arc::new(written);
    let versions: Vec<(&str, Vec<Arc<DynamicObject>>)> = ["v1alpha1", "v1alpha2", "v1alpha3", "v1alpha4"]
        .iter()
        .map(|v| (*v, vec![written.clone()]))
        .collect();
    let (report, index) = StateBuilder::default().build(&[kind(Kind::TrafficSplit, &versions)]);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(report.state.traffic_splits.len(), 1);
    assert_eq!(weight(&report, "s"), Some(500), "read as a v1alpha1 quantity");
    assert_eq!(report.state.traffic_splits[&Key::new("pay", "s")].api_version, "split.smi-spec.io/v1alpha1");
    assert_eq!(index[&(Kind::TrafficSplit, Key::new("pay", "s"))].api.version, "v1alpha1");
}

#[test]
fn splits_are_numbered_by_creation_time_on_first_sight() {
    let at = |name: &str, ts: &str| {
        let mut o = (*split(name, "1", json!(1))).clone();
        o.metadata.creation_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(ts.parse().unwrap()));
        Arc::new(o)
    };
    let (report, _) = StateBuilder::default().build(&[kind(
        Kind::TrafficSplit,
        &[("v1alpha2", vec![at("a-newer", "2026-02-01T00:00:00Z"), at("z-older", "2026-01-01T00:00:00Z")])],
    )]);
    let seq = |n: &str| report.state.split_first_seen[&Key::new("pay", n)];
    assert!(seq("z-older") < seq("a-newer"));
}
