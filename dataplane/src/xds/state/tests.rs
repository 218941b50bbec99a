//! The state: partial application, warming, readiness, removals.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use prost::Message;
use weft_xds_protos::envoy::config::core::v3::TransportSocket;
use weft_xds_protos::envoy::config::core::v3::transport_socket::ConfigType;
use weft_xds_protos::envoy::extensions::transport_sockets::tls::v3::DownstreamTlsContext;
use weft_xds_protos::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::RouteSpecifier;

use super::*;
use crate::xds::fixtures::*;

const TIMEOUT: Duration = Duration::from_secs(15);

/// A listener named `name` on port `port` whose routes come from RDS `rds`.
fn rds_listener(name: &str, port: u32, rds: &str) -> Any {
    let mut l = listener_with(vec![chain(&hcm_rds(rds))]);
    l.name = name.into();
    l.address = Some(socket("10.0.0.1", port));
    any(&l)
}

/// A listener with its routes inline: it waits for nothing.
fn inline_listener(name: &str) -> Any {
    let mut hcm = hcm_rds("unused");
    hcm.route_specifier = Some(RouteSpecifier::RouteConfig(table_with(vec![route_to("c")])));
    let mut l = listener_with(vec![chain(&hcm)]);
    l.name = name.into();
    any(&l)
}

/// A listener that weft-proxy rejects (TLS).
fn tls_listener(name: &str) -> Any {
    let mut c = chain(&hcm_rds("r"));
    c.transport_socket = Some(TransportSocket {
        name: "tls".into(),
        config_type: Some(ConfigType::TypedConfig(any(&DownstreamTlsContext::default()))),
    });
    let mut l = listener_with(vec![c]);
    l.name = name.into();
    any(&l)
}

fn table(name: &str) -> Any {
    let mut rc = table_with(vec![route_to("c")]);
    rc.name = name.into();
    any(&rc)
}

fn sotw(kind: ResourceType, version: &str, resources: Vec<Any>) -> Update {
    Update {
        kind,
        system_version: version.into(),
        resources: resources
            .into_iter()
            .map(|any| Incoming { name: None, version: version.into(), any: Some(any) })
            .collect(),
        removed: vec![],
        state_of_the_world: true,
    }
}

fn delta(kind: ResourceType, resources: Vec<(&str, &str, Any)>, removed: &[&str]) -> Update {
    Update {
        kind,
        system_version: "sys".into(),
        resources: resources
            .into_iter()
            .map(|(name, version, any)| Incoming {
                name: Some(name.into()),
                version: version.into(),
                any: Some(any),
            })
            .collect(),
        removed: removed.iter().map(|s| s.to_string()).collect(),
        state_of_the_world: false,
    }
}

/// Applies an update, follows the subscriptions as the client does, and builds.
fn step(state: &mut State, update: Update) -> (Outcome, Config) {
    let outcome = state.apply(update);
    let mut config = state.build();
    let mut dropped = false;
    for kind in [ResourceType::Endpoint, ResourceType::Route] {
        let names = state.wanted(kind);
        dropped |= state.subscribe(kind, &names, Instant::now());
    }
    if dropped {
        config = state.build();
    }
    (outcome, config)
}

fn names<V>(m: &BTreeMap<String, V>) -> Vec<&str> {
    m.keys().map(String::as_str).collect()
}

fn port_of(config: &Config, listener: &str) -> u16 {
    config.listeners[listener].addr.port()
}

#[test]
fn valid_resources_of_a_response_apply_and_a_rejected_one_keeps_its_last_good_version() {
    let mut state = State::new(TIMEOUT);
    let (outcome, config) =
        step(&mut state, sotw(ResourceType::Listener, "1", vec![inline_listener("a"), inline_listener("b")]));
    assert!(outcome.errors.is_empty());
    assert_eq!(names(&config.listeners), ["a", "b"]);

    let mut changed_a = listener_with(vec![chain(&hcm_rds("unused"))]);
    changed_a.name = "a".into();
    changed_a.address = Some(socket("10.0.0.1", 9999));
    let mut a = changed_a;
    a.filter_chains = vec![chain(&{
        let mut hcm = hcm_rds("x");
        hcm.route_specifier = Some(RouteSpecifier::RouteConfig(table_with(vec![route_to("c")])));
        hcm
    })];
    let (outcome, config) =
        step(&mut state, sotw(ResourceType::Listener, "2", vec![any(&a), tls_listener("b")]));
    assert_eq!(outcome.errors.len(), 1);
    let detail = outcome.detail().unwrap();
    assert!(
        detail.starts_with(
            "listener b: filter_chains[0].transport_socket.typed_config.common_tls_context: required"
        ),
        "{detail}"
    );
    assert_eq!(port_of(&config, "a"), 9999, "the valid resource of the response applied");
    assert_eq!(port_of(&config, "b"), 4140, "the rejected one kept its last good version");
    assert_eq!(config.versions["lds"]["a"], "2");
    assert_eq!(config.versions["lds"]["b"], "1");

    let status = state.status(true);
    let lds = &status.types[&ResourceType::Listener];
    assert_eq!((lds.acks, lds.nacks), (1, 1));
    let b = lds.resources.iter().find(|r| r.name == "b").unwrap();
    assert_eq!(b.active.as_ref().unwrap().version, "1");
    assert_eq!(b.rejected.as_ref().unwrap().version, "2");
}

#[test]
fn a_listener_warms_until_its_route_table_arrives_while_its_previous_version_serves() {
    let mut state = State::new(TIMEOUT);
    let (_, config) =
        step(&mut state, delta(ResourceType::Listener, vec![("l", "1", rds_listener("l", 1000, "r1"))], &[]));
    assert!(config.listeners.is_empty(), "no route table yet: warming");
    assert_eq!(state.wanted(ResourceType::Route), BTreeSet::from(["r1".to_string()]));

    let (_, config) = step(&mut state, delta(ResourceType::Route, vec![("r1", "1", table("r1"))], &[]));
    assert_eq!(port_of(&config, "l"), 1000);

    // A new version that needs another table: the old one keeps serving, both tables are wanted.
    let (_, config) =
        step(&mut state, delta(ResourceType::Listener, vec![("l", "2", rds_listener("l", 2000, "r2"))], &[]));
    assert_eq!(port_of(&config, "l"), 1000);
    assert_eq!(state.wanted(ResourceType::Route), BTreeSet::from(["r1".to_string(), "r2".to_string()]));
    let status = state.status(true);
    let l = &status.types[&ResourceType::Listener].resources[0];
    assert_eq!(
        (l.active.as_ref().unwrap().version.as_str(), l.warming.as_ref().unwrap().version.as_str()),
        ("1", "2")
    );

    let (_, config) = step(&mut state, delta(ResourceType::Route, vec![("r2", "1", table("r2"))], &[]));
    assert_eq!(port_of(&config, "l"), 2000);
    assert_eq!(state.wanted(ResourceType::Route), BTreeSet::from(["r2".to_string()]));
    assert_eq!(names(&config.routes), ["r2"], "the table no listener uses any more is dropped");
}

#[test]
fn ready_only_once_listeners_clusters_and_what_they_refer_to_have_arrived() {
    let mut state = State::new(TIMEOUT);
    let (_, config) =
        step(&mut state, delta(ResourceType::Cluster, vec![("c", "1", any(&eds_cluster("c")))], &[]));
    assert!(config.clusters.is_empty(), "an EDS cluster warms until its endpoints arrive");
    assert!(!state.status(true).ready);
    step(&mut state, delta(ResourceType::Listener, vec![("l", "1", rds_listener("l", 1000, "r"))], &[]));
    assert!(!state.status(true).ready);
    step(&mut state, delta(ResourceType::Route, vec![("r", "1", table("r"))], &[]));
    assert!(!state.status(true).ready, "endpoints of c still missing");
    let (_, config) = step(
        &mut state,
        delta(
            ResourceType::Endpoint,
            vec![("c", "1", any(&assignment("c", vec![lb_endpoint("10.0.0.2", 80)])))],
            &[],
        ),
    );
    assert!(state.status(true).ready);
    assert_eq!(names(&config.clusters), ["c"]);
    assert_eq!(config.endpoints["c"].endpoints.len(), 1);
    assert_eq!(config.versions["eds"]["c"], "1");
}

#[test]
fn readiness_needs_both_lds_and_cds_answers() {
    let mut state = State::new(TIMEOUT);
    step(&mut state, sotw(ResourceType::Listener, "1", vec![inline_listener("l")]));
    assert!(!state.status(true).ready);
    step(&mut state, sotw(ResourceType::Cluster, "1", vec![]));
    assert!(state.status(true).ready, "an empty CDS answer is an answer");
}

#[test]
fn what_never_arrives_stops_holding_things_up_after_the_initial_fetch_timeout() {
    let mut state = State::new(TIMEOUT);
    step(&mut state, sotw(ResourceType::Cluster, "1", vec![]));
    step(&mut state, sotw(ResourceType::Listener, "1", vec![rds_listener("l", 1000, "missing")]));
    assert!(!state.status(true).ready);
    let deadline = state.next_deadline().unwrap();
    assert!(!state.expire(deadline - Duration::from_millis(1)));
    assert!(state.expire(deadline));
    let config = state.build();
    assert!(state.status(true).ready);
    assert_eq!(names(&config.listeners), ["l"], "serves without its route table, as Envoy does");
}

#[test]
fn a_table_the_server_says_does_not_exist_stops_holding_up_its_listener() {
    let mut state = State::new(TIMEOUT);
    step(&mut state, delta(ResourceType::Cluster, vec![], &[]));
    step(&mut state, delta(ResourceType::Listener, vec![("l", "1", rds_listener("l", 1000, "gone"))], &[]));
    let (_, config) = step(&mut state, delta(ResourceType::Route, vec![], &["gone"]));
    assert!(state.status(true).ready);
    assert_eq!(names(&config.listeners), ["l"]);
}

#[test]
fn removals_delta_by_name_and_sotw_by_omission_for_listeners_and_clusters() {
    let mut state = State::new(TIMEOUT);
    step(
        &mut state,
        delta(
            ResourceType::Listener,
            vec![("a", "1", inline_listener("a")), ("b", "1", inline_listener("b"))],
            &[],
        ),
    );
    let (_, config) = step(&mut state, delta(ResourceType::Listener, vec![], &["a"]));
    assert_eq!(names(&config.listeners), ["b"]);

    let mut state = State::new(TIMEOUT);
    step(&mut state, sotw(ResourceType::Listener, "1", vec![inline_listener("a"), inline_listener("b")]));
    let (_, config) = step(&mut state, sotw(ResourceType::Listener, "2", vec![inline_listener("b")]));
    assert_eq!(names(&config.listeners), ["b"]);

    // A resource that cannot even be named might be any of them: nothing is removed.
    let unreadable = Any { type_url: ResourceType::Listener.type_url().into(), value: vec![0xff, 0xff] };
    let (outcome, config) = step(&mut state, sotw(ResourceType::Listener, "3", vec![unreadable]));
    assert!(
        outcome.errors[0].to_string().starts_with("listener resources[0]: invalid "),
        "{:?}",
        outcome.errors
    );
    assert_eq!(names(&config.listeners), ["b"]);
}

#[test]
fn sotw_route_tables_left_out_are_not_removed_but_count_as_answered() {
    let mut state = State::new(TIMEOUT);
    step(&mut state, sotw(ResourceType::Cluster, "1", vec![]));
    step(
        &mut state,
        sotw(ResourceType::Listener, "1", vec![rds_listener("a", 1, "ra"), rds_listener("b", 2, "rb")]),
    );
    let (_, config) = step(&mut state, sotw(ResourceType::Route, "1", vec![table("ra")]));
    assert!(state.status(true).ready, "rb was asked for and left out: it does not exist");
    assert_eq!(names(&config.listeners), ["a", "b"]);
    let (_, config) = step(&mut state, sotw(ResourceType::Route, "2", vec![table("rb")]));
    assert_eq!(names(&config.routes), ["ra", "rb"]);
}

#[test]
fn delta_resources_must_be_named_as_inside_and_unsubscribed_ones_are_ignored() {
    let mut state = State::new(TIMEOUT);
    let (outcome, _) =
        step(&mut state, delta(ResourceType::Listener, vec![("x", "1", inline_listener("y"))], &[]));
    assert_eq!(
        outcome.detail().unwrap(),
        "listener x: name: \"y\" inside, but the response names the resource \"x\""
    );
    let (outcome, config) = step(&mut state, delta(ResourceType::Route, vec![("r", "1", table("r"))], &[]));
    assert!(outcome.errors.is_empty());
    assert!(config.routes.is_empty(), "nobody asked for r");
}

#[test]
fn an_unchanged_resource_keeps_its_decoded_value() {
    let mut state = State::new(TIMEOUT);
    let (_, first) = step(&mut state, sotw(ResourceType::Listener, "1", vec![inline_listener("a")]));
    let (_, second) = step(&mut state, sotw(ResourceType::Listener, "2", vec![inline_listener("a")]));
    assert!(Arc::ptr_eq(&first.listeners["a"], &second.listeners["a"]));
    assert_eq!(second.versions["lds"]["a"], "2");
    assert_eq!(state.versions(ResourceType::Listener), BTreeMap::from([("a".to_string(), "2".to_string())]));
}

#[test]
fn an_ignored_field_is_collected_once_per_field() {
    let mut l = listener_with(vec![chain(&hcm_rds("r"))]);
    l.stat_prefix = "s".into();
    let mut state = State::new(TIMEOUT);
    let encoded = any(&l);
    assert_eq!(encoded.value, l.encode_to_vec());
    step(&mut state, sotw(ResourceType::Listener, "1", vec![encoded.clone()]));
    step(&mut state, sotw(ResourceType::Listener, "2", vec![encoded]));
    assert_eq!(state.warned, BTreeSet::from(["Listener.stat_prefix"]));
}
