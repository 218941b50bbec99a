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

#[test]
fn shared_resources_are_encoded_once_and_listeners_are_per_proxy() {
    let mut state = MeshState::default();
    let key = Key::new("default", "web");
    state.services.insert(
        key.clone(),
        Service {
            key,
            selector: Default::default(),
            cluster_ip: None,
            policy: Default::default(),
            ports: vec![ServicePort {
                name: None,
                port: 80,
                target_port: TargetPort::Number(8080),
                protocol: Protocol::Http,
            }],
        },
    );
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
        let key = Key::new("default", name);
        state.services.insert(
            key.clone(),
            Service {
                key,
                selector: Default::default(),
                cluster_ip: None,
                policy: Default::default(),
                ports: vec![ServicePort {
                    name: None,
                    port: 80,
                    target_port: TargetPort::Number(8080),
                    protocol: Protocol::Http,
                }],
            },
        );
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
