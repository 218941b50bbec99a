//! The outbound RouteConfiguration: a virtual host per HTTP service port,
//! reachable by every name a client may use, with TrafficSplit weights.

use weft_xds_protos::envoy::config::core::v3::{DataSource, data_source};
use weft_xds_protos::envoy::config::route::v3::{
    DirectResponseAction, HeaderMatcher, RetryPolicy, Route, RouteAction, RouteConfiguration, RouteMatch,
    VirtualHost, WeightedCluster, header_matcher, route, route_action, route_match, weighted_cluster,
};
use weft_xds_protos::envoy::r#type::matcher::v3::{RegexMatcher, StringMatcher, string_matcher};
use weft_xds_protos::google::protobuf::UInt32Value;

use prost::Message;

use super::{SplitTable, names, split};
use crate::model::{HttpMatch, HttpPolicy, Kind, MeshState, Protocol, Service, ServicePort};

/// The outbound virtual hosts of one mesh state, each built and encoded once, ready to be
/// given as every client namespace sees them.
///
/// Namespaces see the same hosts except for services' short names, which only clients of
/// the service's own namespace get. A short name has no dot and is claimed by one service
/// per namespace, so it never collides with another domain: the other domains are made
/// unique once for every namespace, and a namespace's RouteConfiguration is each host's
/// encoded name and domains followed by its encoded routes. With 10,000 services in 20
/// namespaces, building and encoding each namespace's whole RouteConfiguration anew was most
/// of a snapshot's cost.
#[derive(Debug, Clone, Default)]
pub struct OutboundHosts {
    hosts: Vec<Host>,
}

/// One HTTP service port's virtual host.
#[derive(Debug, Clone)]
struct Host {
    /// The service's namespace: its clients also get `short`.
    namespace: String,
    name: String,
    /// The short-name domains, first in the host's list.
    short: Vec<String>,
    /// The other domains, without those an earlier host claimed.
    common: Vec<String>,
    routes: Vec<Route>,
    /// `VirtualHost { routes }` encoded: the tail of the host's encoding (the fields after
    /// `name` and `domains`), so name and domains are encoded first.
    tail: Vec<u8>,
}

impl OutboundHosts {
    /// Every HTTP service port's virtual host.
    pub fn build(state: &MeshState, splits: &SplitTable) -> Self {
        let mut hosts = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for svc in state.services.values() {
            for port in svc.ports.iter().filter(|p| p.protocol == Protocol::Http) {
                // Domains as a client of another namespace sees them; the short ones are
                // exactly what a client of the service's namespace adds.
                let common = names::unique(names::domains(svc, port.port, ""), &mut seen);
                let mut short = names::domains(svc, port.port, &svc.key.namespace);
                short.truncate(short.len() - names::domains(svc, port.port, "").len());
                let routes =
                    with_stat_prefix(with_policy(service_routes(state, splits, svc, port), &svc.policy));
                let tail = VirtualHost { routes: routes.clone(), ..Default::default() }.encode_to_vec();
                hosts.push(Host {
                    namespace: svc.key.namespace.clone(),
                    name: format!("{}:{}", names::fqdn(&svc.key), port.port),
                    short,
                    common,
                    routes,
                    tail,
                });
            }
        }
        OutboundHosts { hosts }
    }

    fn domains(host: &Host, client_ns: &str) -> Vec<String> {
        if host.namespace == client_ns {
            host.short.iter().chain(&host.common).cloned().collect()
        } else {
            host.common.clone()
        }
    }

    /// The RouteConfiguration a client in `client_ns` gets.
    pub fn for_namespace(&self, client_ns: &str) -> RouteConfiguration {
        let virtual_hosts = self
            .hosts
            .iter()
            .map(|h| VirtualHost {
                name: h.name.clone(),
                domains: Self::domains(h, client_ns),
                routes: h.routes.clone(),
                ..Default::default()
            })
            .collect();
        RouteConfiguration { name: names::OUTBOUND.to_string(), virtual_hosts, ..Default::default() }
    }

    /// [`for_namespace`](Self::for_namespace), encoded: the same bytes, from the hosts'
    /// encoded routes.
    pub fn encode_for_namespace(&self, client_ns: &str) -> Vec<u8> {
        let head = |h: &Host| {
            VirtualHost { name: h.name.clone(), domains: Self::domains(h, client_ns), ..Default::default() }
                .encode_to_vec()
        };
        let heads: Vec<Vec<u8>> = self.hosts.iter().map(head).collect();
        let name = RouteConfiguration { name: names::OUTBOUND.to_string(), ..Default::default() };
        let size: usize = self.hosts.iter().zip(&heads).map(|(h, head)| 12 + head.len() + h.tail.len()).sum();
        let mut out = Vec::with_capacity(name.encoded_len() + size);
        name.encode(&mut out).unwrap_or_default();
        for (h, head) in self.hosts.iter().zip(&heads) {
            // Field 2 (`virtual_hosts`), length-delimited.
            prost::encoding::encode_key(2, prost::encoding::WireType::LengthDelimited, &mut out);
            prost::encoding::encode_varint((head.len() + h.tail.len()) as u64, &mut out);
            out.extend_from_slice(head);
            out.extend_from_slice(&h.tail);
        }
        out
    }

    /// Every cluster a host's routes name, with the host's name.
    pub fn clusters(&self) -> impl Iterator<Item = (&str, &str)> {
        self.hosts
            .iter()
            .flat_map(|h| h.routes.iter().flat_map(super::action_clusters).map(move |c| (h.name.as_str(), c)))
    }
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
