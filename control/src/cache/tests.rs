#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use super::*;
use crate::model::{Key, MeshState, Protocol, Service, ServicePort, TargetPort};
use crate::translate::{INBOUND_PORT, OUTBOUND_PORT, ProxyNode};

fn node(id: &str, ip: &str) -> ProxyNode {
    ProxyNode {
        id: id.into(),
        namespace: "default".into(),
        service_account: "default".into(),
        pod_ip: ip.parse().unwrap(),
        inbound_port: INBOUND_PORT,
        outbound_port: OUTBOUND_PORT,
        transparent: false,
    }
}

/// Service `name` in `default`, one HTTP port 80 to 8080, no selector.
fn http_service(name: &str) -> Service {
    Service {
        key: Key::new("default", name),
        selector: Default::default(),
        cluster_ip: None,
        policy: Default::default(),
        ports: vec![ServicePort {
            name: None,
            port: 80,
            target_port: TargetPort::Number(8080),
            protocol: Protocol::Http,
        }],
    }
}

#[test]
fn shared_resources_are_encoded_once_and_listeners_are_per_proxy() {
    let mut state = MeshState::default();
    let svc = http_service("web");
    state.services.insert(svc.key.clone(), svc);
    let snap =
        Snapshot::build(1, Arc::new(state), Arc::new(crate::translate::MeshOptions::plaintext())).unwrap();
    let a = snap.for_proxy(&node("a", "127.0.1.1"));
    let b = snap.for_proxy(&node("b", "127.0.1.2"));
    let cluster = "outbound|80||web.default.svc.cluster.local";
    assert!(Arc::ptr_eq(&a.by_type[type_url::CLUSTER][cluster], &b.by_type[type_url::CLUSTER][cluster]));
    assert!(Arc::ptr_eq(&a.by_type[type_url::ROUTE]["outbound"], &b.by_type[type_url::ROUTE]["outbound"]));
    assert_ne!(
        a.by_type[type_url::LISTENER]["outbound"].version,
        b.by_type[type_url::LISTENER]["outbound"].version
    );
}

#[test]
fn a_snapshot_built_after_another_reuses_every_unchanged_resource() {
    let mut state = MeshState::default();
    for name in ["web", "api"] {
        let svc = http_service(name);
        state.services.insert(svc.key.clone(), svc);
    }
    let opts = Arc::new(crate::translate::MeshOptions::plaintext());
    let first = Snapshot::build(1, Arc::new(state.clone()), opts.clone()).unwrap();
    let same = Snapshot::build_after(2, Arc::new(state.clone()), opts.clone(), &first).unwrap();
    let web = "outbound|80||web.default.svc.cluster.local";
    assert!(Arc::ptr_eq(&first.clusters[web], &same.clusters[web]));
    assert!(Arc::ptr_eq(&first.routes["default"], &same.routes["default"]));
    assert_eq!(same.endpoints.changed_since(&first.endpoints), Some(vec![]));

    state.services.get_mut(&Key::new("default", "web")).unwrap().ports[0].port = 81;
    let next = Snapshot::build_after(3, Arc::new(state), opts, &same).unwrap();
    let api = "outbound|80||api.default.svc.cluster.local";
    let web81 = "outbound|81||web.default.svc.cluster.local";
    assert!(Arc::ptr_eq(&same.clusters[api], &next.clusters[api]));
    assert_eq!(next.clusters.changed_since(&same.clusters), Some(vec![web, web81]));
    assert!(!Arc::ptr_eq(&same.routes["default"], &next.routes["default"]));
    assert_eq!(next.clusters.changed_since(&first.clusters), None, "two snapshots back: compare all");
    let removed = same.clusters.missing_from(&next.clusters);
    assert_eq!(removed.into_iter().map(|(n, _)| n).collect::<Vec<_>>(), [web]);
}

/// Every resource's name and version, the inbound index and the split table: two snapshots
/// that agree on these serve every proxy the same.
fn fingerprint(s: &Snapshot) -> impl PartialEq + std::fmt::Debug {
    let versions =
        |t: &TypeResources| t.iter().map(|(n, r)| (n.clone(), r.version.clone())).collect::<Vec<_>>();
    (
        versions(&s.clusters),
        versions(&s.endpoints),
        s.routes.iter().map(|(ns, r)| (ns.clone(), r.version.clone())).collect::<Vec<_>>(),
        s.routes_elsewhere.version.clone(),
        (*s.inbound).clone(),
        s.splits.clone(),
    )
}

#[test]
fn building_only_what_changed_gives_what_building_everything_gives() {
    use crate::model::{EndpointSlice, SliceEndpoint};
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/payments");
    let base = (*crate::source::ManifestDir::new(example).load().state).clone();
    let pod = |state: &mut MeshState, name: &str| -> Key {
        state.pods.keys().find(|k| k.name.starts_with(name)).cloned().unwrap()
    };
    type Edit = Box<dyn Fn(&mut MeshState)>;
    let edits: Vec<(&str, Edit)> = vec![
        ("nothing", Box::new(|_| {})),
        (
            "a pod moves",
            Box::new(move |s| {
                let k = pod(s, "payment-v1");
                s.pods.get_mut(&k).unwrap().ip = Some("127.0.99.1".parse().unwrap());
            }),
        ),
        (
            "a split backend loses its only pod",
            Box::new(move |s| {
                let k = pod(s, "payment-v2");
                s.pods.get_mut(&k).unwrap().ready = false;
            }),
        ),
        (
            "a pod is added",
            Box::new(move |s| {
                let k = pod(s, "payment-v1");
                let mut p = s.pods[&k].clone();
                p.key.name = "payment-v1-extra".into();
                p.ip = Some("127.0.99.2".parse().unwrap());
                s.pods.insert(p.key.clone(), p);
            }),
        ),
        (
            "a slice takes over a service",
            Box::new(|s| {
                let key = Key::new("payments", "fraud-slice");
                let endpoints = vec![SliceEndpoint {
                    addresses: vec!["127.0.99.3".parse().unwrap()],
                    ready: true,
                    pod: None,
                }];
                let slice = EndpointSlice {
                    key: key.clone(),
                    service: "fraud-detect".into(),
                    ports: vec![],
                    endpoints,
                };
                s.endpoint_slices.insert(key, slice);
            }),
        ),
        (
            "a service gets a port",
            Box::new(|s| {
                let svc = s.services.values_mut().next().unwrap();
                let mut port = svc.ports[0].clone();
                port.port += 1000;
                port.name = Some("extra".into());
                svc.ports.push(port);
            }),
        ),
        (
            "a split's weights change",
            Box::new(|s| {
                let split = s.traffic_splits.values_mut().next().unwrap();
                split.backends[0].weight_milli += 1;
            }),
        ),
    ];
    // Every pod of the example as a proxy, plus one at an address no service uses.
    let mut nodes: Vec<ProxyNode> = base
        .pods
        .values()
        .map(|p| ProxyNode {
            namespace: p.key.namespace.clone(),
            service_account: p.service_account.clone(),
            ..node(&p.key.name, &p.ip.unwrap().to_string())
        })
        .collect();
    nodes.push(node("stranger", "127.0.99.1"));
    let views = |s: &Snapshot, prev: Option<&Vec<ProxyView>>| -> Vec<ProxyView> {
        nodes.iter().enumerate().map(|(i, n)| s.for_proxy_after(n, prev.map(|p| &p[i]))).collect()
    };
    let view_versions = |vs: &[ProxyView]| {
        vs.iter()
            .map(|v| {
                v.by_type
                    .iter()
                    .map(|(t, r)| {
                        (*t, r.iter().map(|(n, e)| (n.clone(), e.version.clone())).collect::<Vec<_>>())
                    })
                    .collect::<Vec<_>>()
            })
            .collect::<Vec<_>>()
    };
    let opts = Arc::new(crate::translate::MeshOptions::default());
    let first = Snapshot::build(1, Arc::new(base.clone()), opts.clone()).unwrap();
    let mut prev_views = views(&first, None);
    let mut prev = first;
    let mut state = base;
    for (what, edit) in edits {
        edit(&mut state);
        let quick =
            Snapshot::build_after(prev.version + 1, Arc::new(state.clone()), opts.clone(), &prev).unwrap();
        let full = Snapshot::build(prev.version + 1, Arc::new(state.clone()), opts.clone()).unwrap();
        assert_eq!(fingerprint(&quick), fingerprint(&full), "after {what}");
        // Views that kept their own resources from the previous snapshot, where nothing
        // those are made from changed, are what fresh views of the full build are.
        let kept = views(&quick, Some(&prev_views));
        assert_eq!(view_versions(&kept), view_versions(&views(&full, None)), "views after {what}");
        if what == "nothing" {
            let outbound = |v: &ProxyView| v.by_type[type_url::LISTENER]["outbound"].clone();
            assert!(
                kept.iter().zip(&prev_views).all(|(k, p)| Arc::ptr_eq(&outbound(k), &outbound(p))),
                "unchanged proxies keep their listeners"
            );
        }
        prev_views = kept;
        prev = quick;
    }
}
