#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Protocol state machines driven directly: no sockets, just requests, views and replies.

use std::sync::Arc;

use weft_xds_protos::envoy::config::cluster::v3::Cluster;
use weft_xds_protos::envoy::config::endpoint::v3::ClusterLoadAssignment;
use weft_xds_protos::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest};
use weft_xds_protos::google::rpc::Status as RpcStatus;
use weft_xds_protos::type_url::{CLUSTER, ENDPOINT, LISTENER};

use super::delta::Delta;
use super::registry::ProxyReport;
use super::sotw::{Sotw, SotwRequest};
use super::stream::XdsProtocol;
use crate::cache::{Encoded, ProxyView, Snapshot, TypeResources};
use crate::metrics::Metrics;
use crate::translate::{INBOUND_PORT, OUTBOUND_PORT, ProxyNode};

fn report() -> ProxyReport {
    ProxyReport {
        connection: 1,
        node: ProxyNode {
            id: "test".into(),
            namespace: "default".into(),
            service_account: "default".into(),
            pod_ip: "127.0.0.1".parse().unwrap(),
            inbound_port: INBOUND_PORT,
            outbound_port: OUTBOUND_PORT,
            transparent: false,
        },
        stream: "test".into(),
        connected_at: 0,
        snapshot_version: 0,
        types: Default::default(),
        peer: None,
    }
}

/// A view with clusters `names` (each with an EDS assignment whose content is `tag`).
fn view(names: &[&str], tag: u32) -> ProxyView {
    let mut clusters = TypeResources::new();
    let mut endpoints = TypeResources::new();
    for n in names {
        clusters
            .insert(n.to_string(), Encoded::new(*n, &Cluster { name: n.to_string(), ..Default::default() }));
        let cla = ClusterLoadAssignment {
            cluster_name: n.to_string(),
            endpoints: vec![Default::default(); tag as usize],
            ..Default::default()
        };
        endpoints.insert(n.to_string(), Encoded::new(*n, &cla));
    }
    let mut v = ProxyView::default();
    v.by_type.insert(CLUSTER, clusters);
    v.by_type.insert(ENDPOINT, endpoints);
    v.by_type.insert(LISTENER, TypeResources::new());
    v
}

fn sotw_req(type_url: &str, names: &[&str], nonce: &str, nack: Option<&str>) -> SotwRequest {
    SotwRequest::from(DiscoveryRequest {
        type_url: type_url.into(),
        resource_names: names.iter().map(|s| s.to_string()).collect(),
        response_nonce: nonce.into(),
        error_detail: nack.map(|m| RpcStatus { code: 3, message: m.into(), details: vec![] }),
        ..Default::default()
    })
}

fn delta_req(type_url: &str, sub: &[&str], nonce: &str, nack: Option<&str>) -> DeltaDiscoveryRequest {
    DeltaDiscoveryRequest {
        type_url: type_url.into(),
        resource_names_subscribe: sub.iter().map(|s| s.to_string()).collect(),
        response_nonce: nonce.into(),
        error_detail: nack.map(|m| RpcStatus { code: 3, message: m.into(), details: vec![] }),
        ..Default::default()
    }
}

fn snap() -> Snapshot {
    Snapshot::empty()
}

#[test]
fn sotw_nacked_version_is_not_sent_again_but_the_next_one_is() {
    let mut p = Sotw::new(Arc::new(Metrics::new()));
    let mut r = report();
    let v1 = view(&["a"], 1);
    let first = p.on_request(sotw_req(CLUSTER, &[], "", None), &v1, &snap(), &mut r);
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].resources.len(), 1);
    let nonce = first[0].nonce.clone();

    let v2 = view(&["a", "b"], 1);
    let pushed = p.on_update(&v2, &snap(), &mut r);
    assert_eq!(pushed.len(), 1);
    let bad = pushed[0].clone();

    let none = p.on_request(sotw_req(CLUSTER, &[], &bad.nonce, Some("cluster b: bad")), &v2, &snap(), &mut r);
    assert!(none.is_empty(), "a NACK is not answered by resending");
    let tr = &r.types["cds"];
    assert_eq!(tr.nacks, 1);
    assert_eq!(tr.last_nack.as_ref().unwrap().detail, "cluster b: bad");
    assert_eq!(tr.last_nack.as_ref().unwrap().version, bad.version_info);

    // The same content again (e.g. a reconnecting watch fires): not resent.
    assert!(p.on_update(&v2, &snap(), &mut r).is_empty());
    // A stale nonce is ignored.
    assert!(p.on_request(sotw_req(CLUSTER, &[], &nonce, None), &v2, &snap(), &mut r).is_empty());
    // Different content is sent.
    let v3 = view(&["a", "c"], 1);
    let next = p.on_update(&v3, &snap(), &mut r);
    assert!(!next.is_empty());
    assert_ne!(next.last().unwrap().version_info, bad.version_info);
}

#[test]
fn sotw_removals_come_after_everything_else() {
    let mut p = Sotw::new(Arc::new(Metrics::new()));
    let mut r = report();
    let v1 = view(&["old"], 1);
    let c = p.on_request(sotw_req(CLUSTER, &[], "", None), &v1, &snap(), &mut r);
    p.on_request(sotw_req(CLUSTER, &[], &c[0].nonce, None), &v1, &snap(), &mut r);
    let e = p.on_request(sotw_req(ENDPOINT, &["old"], "", None), &v1, &snap(), &mut r);
    assert_eq!(e[0].resources.len(), 1);

    let v2 = view(&["new"], 1);
    let out = p.on_update(&v2, &snap(), &mut r);
    let shape: Vec<(String, usize)> =
        out.iter().map(|r| (super::short_type(&r.type_url).to_string(), r.resources.len())).collect();
    // CDS first keeps "old" beside "new"; the final CDS drops it.
    assert_eq!(shape.first(), Some(&("cds".to_string(), 2)));
    assert_eq!(shape.last(), Some(&("cds".to_string(), 1)));
}

#[test]
fn delta_sends_only_what_changed_and_names_removals() {
    let mut p = Delta::new(Arc::new(Metrics::new()));
    let mut r = report();
    let v1 = view(&["a", "b"], 1);
    let c = p.on_request(delta_req(CLUSTER, &[], "", None), &v1, &snap(), &mut r);
    assert_eq!(c[0].resources.len(), 2);
    p.on_request(delta_req(CLUSTER, &[], &c[0].nonce, None), &v1, &snap(), &mut r);
    let e = p.on_request(delta_req(ENDPOINT, &["a", "b"], "", None), &v1, &snap(), &mut r);
    assert_eq!(e[0].resources.len(), 2);
    p.on_request(delta_req(ENDPOINT, &[], &e[0].nonce, None), &v1, &snap(), &mut r);

    // One endpoint change: only that ClusterLoadAssignment goes out.
    let mut v2 = view(&["a", "b"], 1);
    let changed = view(&["b"], 2);
    v2.by_type.get_mut(ENDPOINT).unwrap().insert("b".into(), changed.by_type[ENDPOINT]["b"].clone());
    let out = p.on_update(&v2, &snap(), &mut r);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].type_url, ENDPOINT);
    assert_eq!(out[0].resources.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(), vec!["b"]);

    // A cluster removed: named in removed_resources.
    let v3 = view(&["a"], 1);
    let out = p.on_update(&v3, &snap(), &mut r);
    let removed: Vec<(&str, Vec<String>)> =
        out.iter().map(|r| (super::short_type(&r.type_url), r.removed_resources.clone())).collect();
    assert!(removed.contains(&("cds", vec!["b".to_string()])), "{removed:?}");
}

#[test]
fn delta_nacked_resource_is_not_resent_and_client_keeps_its_version() {
    let mut p = Delta::new(Arc::new(Metrics::new()));
    let mut r = report();
    let v1 = view(&["a"], 1);
    let c = p.on_request(delta_req(CLUSTER, &[], "", None), &v1, &snap(), &mut r);
    p.on_request(delta_req(CLUSTER, &[], &c[0].nonce, None), &v1, &snap(), &mut r);
    let v2 = view(&["a", "b"], 1);
    let out = p.on_update(&v2, &snap(), &mut r);
    assert_eq!(out.len(), 1);
    p.on_request(delta_req(CLUSTER, &[], &out[0].nonce, Some("b is bad")), &v2, &snap(), &mut r);
    assert_eq!(r.types["cds"].last_nack.as_ref().unwrap().resources, vec!["b".to_string()]);
    assert!(p.on_update(&v2, &snap(), &mut r).is_empty(), "rejected version resent");
    let v3 = view(&["a", "b", "c"], 1);
    let out = p.on_update(&v3, &snap(), &mut r);
    let names: Vec<&str> = out[0].resources.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, vec!["c"], "b's version is unchanged and was rejected");
}

#[test]
fn delta_reconnect_with_initial_versions_sends_only_differences() {
    let v1 = view(&["a", "b"], 1);
    let mut p = Delta::new(Arc::new(Metrics::new()));
    let mut r = report();
    let mut req = delta_req(CLUSTER, &[], "", None);
    req.initial_resource_versions.insert("a".into(), v1.by_type[CLUSTER]["a"].version.clone());
    req.initial_resource_versions.insert("gone".into(), "x".into());
    let out = p.on_request(req, &v1, &snap(), &mut r);
    assert_eq!(out[0].resources.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(), vec!["b"]);
    assert_eq!(out[0].removed_resources, vec!["gone".to_string()]);
}

#[test]
fn node_metadata_is_required_and_named_in_the_error() {
    use weft_xds_protos::envoy::config::core::v3::Node;
    let err = super::proxy_node(Some(&Node { id: "x".into(), ..Default::default() })).unwrap_err();
    assert_eq!(err.to_string(), "node.metadata.NAMESPACE is required (see `weft envoy-bootstrap`)");
    assert_eq!(super::proxy_node(None).unwrap_err(), super::NodeError::Missing);
}

#[test]
fn sotw_explicit_wildcard_on_eds_is_acked_without_a_resend_loop() {
    let mut p = Sotw::new(Arc::new(Metrics::new()));
    let mut r = report();
    let v = view(&["a", "b"], 1);
    let first = p.on_request(sotw_req(ENDPOINT, &["*"], "", None), &v, &snap(), &mut r);
    assert_eq!(first[0].resources.len(), 2, "\"*\" subscribes to every assignment");
    let ack = p.on_request(sotw_req(ENDPOINT, &["*"], &first[0].nonce, None), &v, &snap(), &mut r);
    assert!(ack.is_empty(), "an ACK with the same subscription is not answered");
}

#[test]
fn sotw_first_request_with_a_nonce_from_an_earlier_stream_is_answered() {
    let mut p = Sotw::new(Arc::new(Metrics::new()));
    let mut r = report();
    let v = view(&["a"], 1);
    let out = p.on_request(sotw_req(CLUSTER, &[], "17", None), &v, &snap(), &mut r);
    assert_eq!(out.len(), 1, "a reconnecting proxy's first request gets the current clusters");
}

#[test]
fn delta_removals_go_listeners_first_then_clusters() {
    let mut p = Delta::new(Arc::new(Metrics::new()));
    let mut r = report();
    let mut v1 = view(&["a"], 1);
    let l = Encoded::new(
        "l",
        &weft_xds_protos::envoy::config::listener::v3::Listener { name: "l".into(), ..Default::default() },
    );
    v1.by_type.get_mut(LISTENER).unwrap().insert("l".into(), l);
    for t in [CLUSTER, LISTENER] {
        let out = p.on_request(delta_req(t, &[], "", None), &v1, &snap(), &mut r);
        p.on_request(delta_req(t, &[], &out[0].nonce, None), &v1, &snap(), &mut r);
    }
    let out = p.on_update(&view(&[], 1), &snap(), &mut r);
    let order: Vec<&str> = out.iter().map(|r| super::short_type(&r.type_url)).collect();
    assert_eq!(order, vec!["lds", "cds"]);
}

/// A view whose clusters and assignments are shared maps, as `Snapshot::for_proxy` makes them.
fn shared_view(names: &[&str], changed: Option<&str>) -> ProxyView {
    let v = view(names, 1);
    let mut out = ProxyView::default();
    for t in [CLUSTER, ENDPOINT] {
        let mut map: std::collections::BTreeMap<String, Arc<Encoded>> =
            v.by_type[t].iter().map(|(k, r)| (k.clone(), r.clone())).collect();
        if let (Some(n), ENDPOINT) = (changed, t) {
            map.insert(n.to_string(), view(&[n], 2).by_type[ENDPOINT][n].clone());
        }
        out.by_type.insert(t, TypeResources::shared(map));
    }
    out
}

#[test]
fn delta_on_shared_views_sends_one_changed_assignment_and_names_a_removal() {
    let mut p = Delta::new(Arc::new(Metrics::new()));
    let mut r = report();
    let v1 = shared_view(&["a", "b", "c"], None);
    let c = p.on_request(delta_req(CLUSTER, &[], "", None), &v1, &snap(), &mut r);
    assert_eq!(c[0].resources.len(), 3);
    p.on_request(delta_req(CLUSTER, &[], &c[0].nonce, None), &v1, &snap(), &mut r);
    let e = p.on_request(delta_req(ENDPOINT, &["a", "b", "c"], "", None), &v1, &snap(), &mut r);
    assert_eq!(e[0].resources.len(), 3);
    p.on_request(delta_req(ENDPOINT, &[], &e[0].nonce, None), &v1, &snap(), &mut r);
    // The same content in a new snapshot (new maps): nothing to send.
    assert!(p.on_update(&shared_view(&["a", "b", "c"], None), &snap(), &mut r).is_empty());
    // One assignment changed: only it goes out.
    let out = p.on_update(&shared_view(&["a", "b", "c"], Some("b")), &snap(), &mut r);
    let sent: Vec<(&str, Vec<&str>)> = out
        .iter()
        .map(|o| (super::short_type(&o.type_url), o.resources.iter().map(|x| x.name.as_str()).collect()))
        .collect();
    assert_eq!(sent, vec![("eds", vec!["b"])]);
    // A cluster gone: named in both CDS and EDS removals, and the counts follow.
    let out = p.on_update(&shared_view(&["a", "b"], Some("b")), &snap(), &mut r);
    let removed: Vec<(&str, Vec<String>)> =
        out.iter().map(|o| (super::short_type(&o.type_url), o.removed_resources.clone())).collect();
    assert!(removed.contains(&("cds", vec!["c".to_string()])), "{removed:?}");
    assert!(removed.contains(&("eds", vec!["c".to_string()])), "{removed:?}");
    assert_eq!(r.types["cds"].resources, 2);
}

#[test]
fn sotw_on_shared_views_keeps_the_version_until_something_changes() {
    let mut p = Sotw::new(Arc::new(Metrics::new()));
    let mut r = report();
    let v1 = shared_view(&["a", "b"], None);
    let e = p.on_request(sotw_req(ENDPOINT, &["a", "b"], "", None), &v1, &snap(), &mut r);
    assert_eq!(e[0].resources.len(), 2);
    let ack = sotw_req(ENDPOINT, &["a", "b"], &e[0].nonce, None);
    assert!(p.on_request(ack, &v1, &snap(), &mut r).is_empty(), "a repeated subscription is not answered");
    assert!(p.on_update(&shared_view(&["a", "b"], None), &snap(), &mut r).is_empty());
    let out = p.on_update(&shared_view(&["a", "b"], Some("a")), &snap(), &mut r);
    assert_eq!(out.len(), 1);
    assert_ne!(out[0].version_info, e[0].version_info);
    assert_eq!(r.types["eds"].subscribed_count, 2);
}

/// A view of shared maps (as snapshots make them) with clusters and assignments `entries`
/// (name, assignment tag), built after `prev` when given: an entry whose tag is unchanged
/// is `prev`'s very `Arc`, and the maps record what changed, as snapshots do.
fn view_after(prev: Option<&ProxyView>, entries: &[(&str, u32)]) -> ProxyView {
    let fresh = view(&[], 0);
    let prev = prev.unwrap_or(&fresh);
    let built = view(&entries.iter().map(|(n, _)| *n).collect::<Vec<_>>(), 0);
    let mut out = ProxyView::default();
    for t in [CLUSTER, ENDPOINT] {
        let map = entries
            .iter()
            .map(|(n, tag)| {
                let mut r = if t == CLUSTER {
                    built.by_type[t][*n].clone()
                } else {
                    view(&[*n], *tag).by_type[t][*n].clone()
                };
                if let Some(old) = prev.by_type[t].get(n).filter(|old| old.version == r.version) {
                    r = old.clone();
                }
                (n.to_string(), r)
            })
            .collect();
        out.by_type.insert(t, TypeResources::shared_after(map, &prev.by_type[t]));
    }
    out.by_type.insert(LISTENER, TypeResources::new());
    out
}

/// Drives both protocols through the same updates, from shared views (the quick path) and
/// from the same content without the change records (a full comparison): what each sends
/// must not depend on the path.
#[test]
fn one_changed_assignment_of_many_is_all_that_is_sent_whichever_path() {
    let v1 = view_after(None, &[("a", 1), ("b", 1), ("c", 1)]);
    let v2 = view_after(Some(&v1), &[("a", 1), ("b", 2), ("c", 1)]);
    let v3 = view_after(Some(&v2), &[("a", 1), ("b", 2)]);
    assert_eq!(v2.by_type[ENDPOINT].changed_since(&v1.by_type[ENDPOINT]), Some(vec!["b"]), "only b changed");
    assert_eq!(v3.by_type[CLUSTER].changed_since(&v2.by_type[CLUSTER]), Some(vec!["c"]));
    let flat = |v: &ProxyView| {
        let mut out = ProxyView::default();
        for (t, m) in &v.by_type {
            out.by_type
                .insert(t, TypeResources::shared(m.iter().map(|(k, r)| (k.clone(), r.clone())).collect()));
        }
        out
    };
    let summary = |replies: Vec<(String, Vec<String>, Vec<String>)>| {
        replies.into_iter().map(|(t, up, rm)| format!("{t} +{up:?} -{rm:?}")).collect::<Vec<_>>()
    };

    for quick in [true, false] {
        let pick = |v: &ProxyView| if quick { v.clone() } else { flat(v) };
        let (v1, v2, v3) = (pick(&v1), pick(&v2), pick(&v3));

        let mut s = Sotw::new(Arc::new(Metrics::new()));
        let mut r = report();
        let c = s.on_request(sotw_req(CLUSTER, &[], "", None), &v1, &snap(), &mut r);
        s.on_request(sotw_req(CLUSTER, &[], &c[0].nonce, None), &v1, &snap(), &mut r);
        let e = s.on_request(sotw_req(ENDPOINT, &["a", "b", "c"], "", None), &v1, &snap(), &mut r);
        assert_eq!(e[0].resources.len(), 3, "the first response has every subscribed assignment");
        s.on_request(sotw_req(ENDPOINT, &["a", "b", "c"], &e[0].nonce, None), &v1, &snap(), &mut r);
        let sotw = |out: Vec<weft_xds_protos::envoy::service::discovery::v3::DiscoveryResponse>| {
            summary(
                out.into_iter()
                    .map(|r| {
                        let names = r
                            .resources
                            .iter()
                            .map(|a| {
                                if r.type_url == ENDPOINT {
                                    <ClusterLoadAssignment as prost::Message>::decode(&a.value[..])
                                        .unwrap()
                                        .cluster_name
                                } else {
                                    <Cluster as prost::Message>::decode(&a.value[..]).unwrap().name
                                }
                            })
                            .collect();
                        (super::short_type(&r.type_url).to_string(), names, Vec::new())
                    })
                    .collect(),
            )
        };
        assert_eq!(sotw(s.on_update(&v2, &snap(), &mut r)), ["eds +[\"b\"] -[]"], "quick: {quick}");
        // CDS is whole (c kept until the end, make before break); the proxy drops c's
        // assignment with its cluster, so nothing is sent for EDS.
        assert_eq!(
            sotw(s.on_update(&v3, &snap(), &mut r)),
            ["cds +[\"a\", \"b\", \"c\"] -[]", "cds +[\"a\", \"b\"] -[]"],
            "quick: {quick}"
        );

        let mut d = Delta::new(Arc::new(Metrics::new()));
        let mut r = report();
        let c = d.on_request(delta_req(CLUSTER, &[], "", None), &v1, &snap(), &mut r);
        d.on_request(delta_req(CLUSTER, &[], &c[0].nonce, None), &v1, &snap(), &mut r);
        let e = d.on_request(delta_req(ENDPOINT, &["a", "b", "c"], "", None), &v1, &snap(), &mut r);
        assert_eq!(e[0].resources.len(), 3);
        d.on_request(delta_req(ENDPOINT, &[], &e[0].nonce, None), &v1, &snap(), &mut r);
        let delta = |out: Vec<weft_xds_protos::envoy::service::discovery::v3::DeltaDiscoveryResponse>| {
            summary(
                out.into_iter()
                    .map(|r| {
                        let up = r.resources.iter().map(|x| x.name.clone()).collect();
                        (super::short_type(&r.type_url).to_string(), up, r.removed_resources)
                    })
                    .collect(),
            )
        };
        let out = d.on_update(&v2, &snap(), &mut r);
        let nonce = out[0].nonce.clone();
        assert_eq!(delta(out), ["eds +[\"b\"] -[]"], "quick: {quick}");
        d.on_request(delta_req(ENDPOINT, &[], &nonce, None), &v2, &snap(), &mut r);
        assert_eq!(
            delta(d.on_update(&v3, &snap(), &mut r)),
            ["cds +[] -[\"c\"]", "eds +[] -[\"c\"]"],
            "quick: {quick}"
        );
    }
}

#[test]
fn a_sotw_request_reads_the_discovery_request_wire_format() {
    use prost::Message;
    let full = DiscoveryRequest {
        version_info: "v1".into(),
        node: Some(weft_xds_protos::envoy::config::core::v3::Node { id: "n".into(), ..Default::default() }),
        resource_names: vec!["a".into(), "*".into(), "b".into()],
        type_url: ENDPOINT.into(),
        response_nonce: "7".into(),
        error_detail: Some(RpcStatus { code: 3, message: "bad".into(), details: vec![] }),
        // A field SotW does not read is skipped, not an error.
        resource_locators: vec![Default::default()],
    };
    let bytes = prost::bytes::Bytes::from(full.encode_to_vec());
    let read = SotwRequest::decode(bytes).unwrap();
    let mut expected = SotwRequest::from(full);
    assert_eq!(read, expected);
    expected.resource_names.push("c".into());
    assert_ne!(read, expected);
}

#[test]
fn sotw_never_sends_an_assignment_nobody_subscribed_to_even_when_it_is_new() {
    // The proxy subscribed to every assignment there was; a new one appears (its cluster is
    // new too) and an old one changes: only the changed, subscribed one is sent.
    let v1 = view_after(None, &[("a", 1), ("b", 1)]);
    let v2 = view_after(Some(&v1), &[("a", 2), ("b", 1), ("d", 1)]);
    let mut s = Sotw::new(Arc::new(Metrics::new()));
    let mut r = report();
    let e = s.on_request(sotw_req(ENDPOINT, &["a", "b"], "", None), &v1, &snap(), &mut r);
    assert_eq!(e[0].resources.len(), 2);
    s.on_request(sotw_req(ENDPOINT, &["a", "b"], &e[0].nonce, None), &v1, &snap(), &mut r);
    let out = s.on_update(&v2, &snap(), &mut r);
    let eds: Vec<_> = out.iter().filter(|r| r.type_url == ENDPOINT).collect();
    assert_eq!(eds.len(), 1, "{out:?}");
    let names: Vec<String> = eds[0]
        .resources
        .iter()
        .map(|a| <ClusterLoadAssignment as prost::Message>::decode(&a.value[..]).unwrap().cluster_name)
        .collect();
    assert_eq!(names, ["a"]);
}
