#![allow(clippy::unwrap_used)]

use super::*;
use crate::source::manifest::{Object, parse_documents};

const MESH: &str = "\
apiVersion: v1
kind: Service
metadata: {name: web, namespace: pay}
spec: {selector: {app: web}, ports: [{port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: web-v1, namespace: pay}
spec: {selector: {app: web, v: '1'}, ports: [{port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: web-v2, namespace: pay}
spec: {selector: {app: web, v: '2'}, ports: [{port: 80}]}
---
apiVersion: v1
kind: Pod
metadata: {name: web-v1, namespace: pay, labels: {app: web, v: '1'}}
spec: {serviceAccountName: web}
status: {podIP: 10.0.0.1}
---
apiVersion: access.smi-spec.io/v1alpha3
kind: TrafficTarget
metadata: {name: tt, namespace: pay}
spec:
  destination: {kind: ServiceAccount, name: web, namespace: pay}
  sources: [{kind: ServiceAccount, name: client, namespace: pay}]
  rules: [{kind: HTTPRouteGroup, name: routes}]
";

fn split(name: &str, created: &str, backends: &str) -> String {
    format!(
        "apiVersion: split.smi-spec.io/v1alpha2\nkind: TrafficSplit\n\
         metadata: {{name: {name}, namespace: pay, creationTimestamp: '{created}'}}\n\
         spec: {{service: web, backends: {backends}}}\n"
    )
}

fn report(extra: &[String]) -> LoadReport {
    let text = format!("{MESH}---\n{}", extra.join("---\n"));
    let mut state = MeshState::default();
    for doc in parse_documents("t.yaml", &text) {
        match doc.unwrap().object {
            Object::Service(o) => drop(state.services.insert(o.key.clone(), o)),
            Object::Pod(o) => drop(state.pods.insert(o.key.clone(), o)),
            Object::TrafficSplit(o) => drop(state.traffic_splits.insert(o.key.clone(), o)),
            Object::TrafficTarget(o) => drop(state.traffic_targets.insert(o.key.clone(), o)),
            other => panic!("unexpected {other:?}"),
        }
    }
    LoadReport { state: std::sync::Arc::new(state), errors: Vec::new(), changed: true }
}

fn conditions(report: &LoadReport, kind: Kind, name: &str, nacks: &[NackInfo]) -> [Desired; 2] {
    let id = (kind, Key::new("pay", name));
    desired_conditions(report, [&id], nacks).remove(&id).unwrap()
}

fn short(d: &Desired) -> (&'static str, bool, &'static str) {
    (d.type_, d.status, d.reason)
}

fn nack(proxy: &str, sa: &str, resources: &[&str], detail: &str) -> NackInfo {
    NackInfo {
        proxy: proxy.into(),
        namespace: "pay".into(),
        service_account: sa.into(),
        detail: detail.into(),
        resources: resources.iter().map(|r| r.to_string()).collect(),
    }
}

/// Name, backends, then the expected `Accepted` and `Programmed` (status, reason).
type SplitCase<'a> = (&'a str, &'a str, (bool, &'a str), (bool, &'a str));

#[test]
fn split_reasons_follow_what_routing_does() {
    let cases: &[SplitCase<'_>] = &[
        ("all backends ready", "[{service: web-v1, weight: 1}]", (true, "Accepted"), (true, "Programmed")),
        (
            "backend missing",
            "[{service: web-v1, weight: 1}, {service: web-v3, weight: 1}]",
            (true, "BackendNotFound"),
            (true, "Programmed"),
        ),
        (
            "backend without endpoints",
            "[{service: web-v1, weight: 1}, {service: web-v2, weight: 1}]",
            (true, "BackendWithoutEndpoints"),
            (true, "Programmed"),
        ),
    ];
    for (name, backends, accepted, programmed) in cases {
        let r = report(&[split("s", "2026-01-01T00:00:00Z", backends)]);
        let [a, p] = conditions(&r, Kind::TrafficSplit, "s", &[]);
        assert_eq!(short(&a), ("Accepted", accepted.0, accepted.1), "{name}: {a:?}");
        assert_eq!(short(&p), ("Programmed", programmed.0, programmed.1), "{name}: {p:?}");
    }
    let r = report(&[split("s", "2026-01-01T00:00:00Z", "[{service: web-v2, weight: 1}]")]);
    let [a, _] = conditions(&r, Kind::TrafficSplit, "s", &[]);
    assert!(a.message.contains("web-v2 has no ready endpoints"), "{a:?}");
}

#[test]
fn the_newer_of_two_splits_for_a_root_is_in_conflict_and_not_programmed() {
    let r = report(&[
        split("older", "2026-01-01T00:00:00Z", "[{service: web-v1, weight: 1}]"),
        split("newer", "2026-02-01T00:00:00Z", "[{service: web-v1, weight: 1}]"),
    ]);
    let [a, p] = conditions(&r, Kind::TrafficSplit, "newer", &[]);
    assert_eq!(short(&a), ("Accepted", false, "Conflicted"));
    assert!(a.message.contains("pay/older"), "{a:?}");
    assert_eq!(short(&p), ("Programmed", false, "NotAccepted"));
    assert_eq!(short(&conditions(&r, Kind::TrafficSplit, "older", &[])[0]), ("Accepted", true, "Accepted"));
}

#[test]
fn an_invalid_weight_is_not_accepted_and_says_whether_the_last_valid_version_stays() {
    let mut r = report(&[split("s", "2026-01-01T00:00:00Z", "[{service: web-v1, weight: 1}]")]);
    r.errors.push(ManifestError::object_error(
        "",
        Kind::TrafficSplit,
        &Key::new("pay", "s"),
        "spec.backends[0].weight",
        "must not be negative (got \"-5\")",
    ));
    let [a, p] = conditions(&r, Kind::TrafficSplit, "s", &[]);
    assert_eq!(short(&a), ("Accepted", false, "InvalidWeight"));
    assert!(a.message.starts_with("spec.backends[0].weight: must not be negative"), "{a:?}");
    assert!(a.message.ends_with("the last valid version stays applied"), "{a:?}");
    assert_eq!(short(&p), ("Programmed", true, "Programmed"), "the last valid version is what proxies run");

    std::sync::Arc::make_mut(&mut r.state).traffic_splits.clear();
    let [a, p] = conditions(&r, Kind::TrafficSplit, "s", &[]);
    assert!(a.message.ends_with("not applied"), "{a:?}");
    assert_eq!(short(&p), ("Programmed", false, "NotAccepted"));
}

#[test]
fn nacks_of_a_splits_clusters_count_proxies_and_quote_the_first_error() {
    let r = report(&[split("s", "2026-01-01T00:00:00Z", "[{service: web-v1, weight: 1}]")]);
    let cluster = "outbound|80||web-v1.pay.svc.cluster.local";
    let nacks = [
        nack("b-proxy", "client", &[cluster], "second"),
        nack("a-proxy", "client", &[cluster], "cluster rejected: bad weight"),
        nack("a-proxy", "client", &[], &format!("route names {cluster}")),
        nack("c-proxy", "client", &["outbound|80||other.pay.svc.cluster.local"], "unrelated"),
    ];
    let [_, p] = conditions(&r, Kind::TrafficSplit, "s", &nacks);
    assert_eq!(short(&p), ("Programmed", false, "Nacked"));
    assert_eq!(p.message, "NACKed by 2 proxies; first error (a-proxy): cluster rejected: bad weight");
}

#[test]
fn target_conditions_name_missing_routes_and_nacks_of_the_destination() {
    let r = report(&[]);
    let [a, p] = conditions(&r, Kind::TrafficTarget, "tt", &[]);
    assert_eq!(short(&a), ("Accepted", true, "RouteNotFound"));
    assert!(a.message.contains("HTTPRouteGroup routes does not exist"), "{a:?}");
    assert_eq!(short(&p), ("Programmed", true, "Programmed"));

    let nacks = [
        nack("client-proxy", "client", &["inbound"], "not ours"),
        nack("web-proxy", "web", &["inbound"], "rbac bad"),
    ];
    let [_, p] = conditions(&r, Kind::TrafficTarget, "tt", &nacks);
    assert_eq!(p.message, "NACKed by 1 proxy; first error (web-proxy): rbac bad");
}
