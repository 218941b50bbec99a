//! The outbound RouteConfiguration: a virtual host per HTTP service port,
//! reachable by every name a client may use, with TrafficSplit weights.

use weft_xds_protos::envoy::config::core::v3::{DataSource, data_source};
use weft_xds_protos::envoy::config::route::v3::{
    DirectResponseAction, HeaderMatcher, RetryPolicy, Route, RouteAction, RouteConfiguration, RouteMatch,
    VirtualHost, WeightedCluster, header_matcher, route, route_action, route_match, weighted_cluster,
};
use weft_xds_protos::envoy::r#type::matcher::v3::{RegexMatcher, StringMatcher, string_matcher};
use weft_xds_protos::google::protobuf::UInt32Value;

use super::{SplitTable, names, split};
use crate::model::{HttpMatch, HttpPolicy, Kind, MeshState, Protocol, Service, ServicePort};

/// The outbound routes as a client in namespace `client_ns` sees them.
pub(crate) fn outbound(state: &MeshState, splits: &SplitTable, client_ns: &str) -> RouteConfiguration {
    let mut virtual_hosts = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for svc in state.services.values() {
        for port in svc.ports.iter().filter(|p| p.protocol == Protocol::Http) {
            virtual_hosts.push(VirtualHost {
                name: format!("{}:{}", names::fqdn(&svc.key), port.port),
                domains: names::unique(names::domains(svc, port.port, client_ns), &mut seen),
                routes: with_stat_prefix(with_policy(service_routes(state, splits, svc, port), &svc.policy)),
                ..Default::default()
            });
        }
    }
    RouteConfiguration { name: names::OUTBOUND.to_string(), virtual_hosts, ..Default::default() }
}

/// Names each forwarding route's stats after the route, so Envoy keeps per-route stats
/// (`vhost.<virtual host>.route.<route name>.upstream_rq_*`, what `weft stat route/` reads;
/// without a `stat_prefix` it keeps none). weft-proxy labels its upstream series with the route
/// name itself. Direct responses have no upstream stats.
fn with_stat_prefix(mut routes: Vec<Route>) -> Vec<Route> {
    for r in &mut routes {
        if matches!(r.action, Some(route::Action::Route(_))) {
            r.stat_prefix.clone_from(&r.name);
        }
    }
    routes
}

/// A route that matches every request.
pub(crate) fn match_all() -> RouteMatch {
    RouteMatch { path_specifier: Some(route_match::PathSpecifier::Prefix("/".into())), ..Default::default() }
}

/// A route to one cluster.
pub(crate) fn to_cluster(name: &str, m: RouteMatch, cluster: &str) -> Route {
    Route {
        name: name.to_string(),
        r#match: Some(m),
        action: Some(route::Action::Route(RouteAction {
            cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(cluster.to_string())),
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// A route answered by the proxy itself.
pub(crate) fn direct(name: &str, m: RouteMatch, status: u32, body: &str) -> Route {
    Route {
        name: name.to_string(),
        r#match: Some(m),
        action: Some(route::Action::DirectResponse(DirectResponseAction {
            status,
            body: Some(DataSource {
                specifier: Some(data_source::Specifier::InlineString(body.to_string())),
                ..Default::default()
            }),
            ..Default::default()
        })),
        ..Default::default()
    }
}

fn service_routes(state: &MeshState, splits: &SplitTable, svc: &Service, port: &ServicePort) -> Vec<Route> {
    let root_cluster = names::outbound_cluster(&svc.key, port.port);
    let Some(split) = splits.by_root.get(&svc.key).and_then(|k| state.traffic_splits.get(k)) else {
        return vec![to_cluster("default", match_all(), &root_cluster)];
    };
    let backends = split::weighted_backends(state, split, port, &mut Vec::new());
    let split_route = |name: String, m: RouteMatch| {
        if backends.is_empty() {
            let body = format!("TrafficSplit {} has no backend with ready endpoints\n", split.key);
            return direct(&name, m, 503, &body);
        }
        Route {
            name,
            r#match: Some(m),
            action: Some(route::Action::Route(RouteAction {
                cluster_specifier: Some(route_action::ClusterSpecifier::WeightedClusters(WeightedCluster {
                    clusters: backends
                        .iter()
                        .map(|(cluster, weight)| weighted_cluster::ClusterWeight {
                            name: cluster.clone(),
                            weight: Some(UInt32Value { value: *weight }),
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                })),
                ..Default::default()
            })),
            ..Default::default()
        }
    };
    let http_matches: Vec<&HttpMatch> = split
        .matches
        .iter()
        .filter(|m| m.kind == Kind::HttpRouteGroup)
        .filter_map(|m| state.http_route_groups.get(&crate::model::Key::new(&split.key.namespace, &m.name)))
        .flat_map(|g| g.matches.iter())
        .collect();
    if split.matches.is_empty() {
        return vec![split_route(format!("split/{}", split.key.name), match_all())];
    }
    // v1alpha3+: matching requests are split, the rest go to the root service.
    let mut routes: Vec<Route> = http_matches
        .into_iter()
        .map(|m| split_route(format!("split/{}/{}", split.key.name, m.name), route_match(m)))
        .collect();
    routes.push(to_cluster("default", match_all(), &root_cluster));
    routes
}

fn proto_duration(d: std::time::Duration) -> weft_xds_protos::google::protobuf::Duration {
    weft_xds_protos::google::protobuf::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

/// Applies a service's timeout and retries to every forwarding route of its virtual host.
fn with_policy(mut routes: Vec<Route>, policy: &HttpPolicy) -> Vec<Route> {
    for r in &mut routes {
        if let Some(route::Action::Route(ra)) = &mut r.action {
            ra.timeout = policy.timeout.map(proto_duration);
            ra.retry_policy = policy.retry.as_ref().map(|retry| RetryPolicy {
                retry_on: retry.retry_on.join(","),
                num_retries: Some(UInt32Value { value: retry.num_retries }),
                per_try_timeout: retry.per_try_timeout.map(proto_duration),
                ..Default::default()
            });
        }
    }
    routes
}

fn regex(re: &str) -> RegexMatcher {
    RegexMatcher { regex: re.to_string(), engine_type: None }
}

fn header_regex(name: &str, re: &str) -> HeaderMatcher {
    HeaderMatcher {
        name: name.to_string(),
        header_match_specifier: Some(header_matcher::HeaderMatchSpecifier::StringMatch(StringMatcher {
            match_pattern: Some(string_matcher::MatchPattern::SafeRegex(regex(re))),
            ignore_case: false,
        })),
        ..Default::default()
    }
}

/// An HTTPRouteGroup match as an Envoy RouteMatch.
pub(crate) fn route_match(m: &HttpMatch) -> RouteMatch {
    let mut headers: Vec<HeaderMatcher> =
        m.headers.iter().map(|(name, value)| header_regex(name, value)).collect();
    let methods: Vec<&str> = m.methods.iter().map(String::as_str).filter(|m| *m != "*").collect();
    if !methods.is_empty() && methods.len() == m.methods.len() {
        headers.push(header_regex(":method", &methods.join("|")));
    }
    RouteMatch {
        path_specifier: Some(match &m.path_regex {
            Some(re) => route_match::PathSpecifier::SafeRegex(regex(re)),
            None => route_match::PathSpecifier::Prefix("/".into()),
        }),
        headers,
        ..Default::default()
    }
}
