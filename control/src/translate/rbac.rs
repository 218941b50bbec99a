//! Authorization: SMI TrafficTargets as Envoy RBAC filters on a proxy's
//! inbound filter chains (DESIGN.md, Authorization).
//!
//! A TrafficTarget applies to the proxies of its destination ServiceAccount.
//! Each becomes one ALLOW policy, `<namespace>/<name>`: its sources' SPIFFE IDs
//! are the principals, its rules the permissions. Permissions depend on the
//! chain: HTTPRouteGroup rules only mean something on HTTP chains; a TCPRoute's
//! ports are compared with the chain's app port when translating (the RBAC
//! filter runs per chain, and the connection's own local port is the proxy's
//! inbound port, not the app's).

use std::collections::BTreeMap;

use prost::{Message, Name};
use weft_xds_protos::envoy::config::listener::v3::{Filter, filter};
use weft_xds_protos::envoy::config::rbac::v3::{
    Permission, Policy, Principal, Rbac, permission, principal, rbac,
};
use weft_xds_protos::envoy::config::route::v3::{HeaderMatcher, header_matcher};
use weft_xds_protos::envoy::extensions::filters::http::rbac::v3::Rbac as HttpRbac;
use weft_xds_protos::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpFilter, http_filter,
};
use weft_xds_protos::envoy::extensions::filters::network::rbac::v3::Rbac as NetworkRbac;
use weft_xds_protos::envoy::r#type::matcher::v3::{
    PathMatcher, RegexMatcher, StringMatcher, path_matcher, string_matcher,
};
use weft_xds_protos::google::protobuf::Any;
use weft_xds_protos::spiffe::SpiffeId;

use super::endpoint::append_field;
use super::{AuthzMode, MeshOptions, ProxyNode, names};
use crate::model::{HttpMatch, Key, Kind, MeshState, Protocol, RouteRef, TrafficTarget};

/// Name of Envoy's HTTP RBAC filter.
pub(crate) const HTTP_RBAC: &str = "envoy.filters.http.rbac";
/// Name of Envoy's network RBAC filter.
pub(crate) const NETWORK_RBAC: &str = "envoy.filters.network.rbac";

/// The TrafficTargets one proxy enforces; `None` from [`Authz::for_node`] means
/// no RBAC filter at all.
#[derive(Debug)]
pub(crate) struct Authz<'a> {
    state: &'a MeshState,
    trust_domain: &'a str,
    targets: Vec<&'a TrafficTarget>,
}

/// The inbound chain a set of rules is translated for.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Chain {
    /// How the chain handles traffic.
    pub(crate) protocol: Protocol,
    /// The app port it forwards to.
    pub(crate) target_port: u16,
}

impl<'a> Authz<'a> {
    /// Whether, and how, a proxy authorizes its inbound traffic. Without mTLS
    /// there is no peer identity, so no RBAC. In permissive mode, a destination
    /// that no TrafficTarget names gets no filter; otherwise (strict mode, or a
    /// TrafficTarget names it) only what a TrafficTarget allows passes.
    pub(crate) fn for_node(state: &'a MeshState, node: &ProxyNode, opts: &'a MeshOptions) -> Option<Self> {
        if !opts.mtls {
            return None;
        }
        let targets: Vec<&TrafficTarget> = state
            .traffic_targets
            .values()
            .filter(|tt| {
                tt.destination.namespace == node.namespace && tt.destination.name == node.service_account
            })
            .collect();
        if targets.is_empty() && opts.authz == AuthzMode::Permissive {
            return None;
        }
        Some(Authz { state, trust_domain: &opts.trust_domain, targets })
    }

    /// The RBAC rules of one chain: ALLOW with one policy per TrafficTarget
    /// that allows something there (an empty map denies everything).
    pub(crate) fn rules(&self, chain: Chain) -> Rbac {
        let mut policies = BTreeMap::new();
        for tt in &self.targets {
            let principals = self.principals(tt);
            let permissions: Vec<Permission> =
                tt.rules.iter().flat_map(|rule| self.permissions(tt, rule, chain)).collect();
            // Envoy wants at least one of each; a policy without either allows nothing.
            if principals.is_empty() || permissions.is_empty() {
                continue;
            }
            policies.insert(tt.key.to_string(), Policy { permissions, principals, ..Default::default() });
        }
        Rbac {
            action: rbac::Action::Allow as i32,
            policies: policies.into_iter().collect(),
            ..Default::default()
        }
    }

    /// The HTTP RBAC filter of an HTTP chain (before the router).
    pub(crate) fn http_filter(&self, chain: Chain) -> HttpFilter {
        let wrapper = HttpRbac::default();
        HttpFilter {
            name: HTTP_RBAC.into(),
            config_type: Some(http_filter::ConfigType::TypedConfig(with_rules(&wrapper, &self.rules(chain)))),
            ..Default::default()
        }
    }

    /// The network RBAC filter of an opaque TCP chain (before the TCP proxy).
    pub(crate) fn network_filter(&self, chain: Chain) -> Filter {
        let wrapper = NetworkRbac { stat_prefix: names::INBOUND.into(), ..Default::default() };
        Filter {
            name: NETWORK_RBAC.into(),
            config_type: Some(filter::ConfigType::TypedConfig(with_rules(&wrapper, &self.rules(chain)))),
        }
    }

    fn principals(&self, tt: &TrafficTarget) -> Vec<Principal> {
        let mut ids: Vec<String> = tt
            .sources
            .iter()
            .filter_map(|s| SpiffeId::new(self.trust_domain, s.namespace.as_str(), s.name.as_str()).ok())
            .map(|id| id.to_string())
            .collect();
        ids.sort();
        ids.dedup();
        ids.into_iter()
            .map(|id| Principal {
                identifier: Some(principal::Identifier::Authenticated(principal::Authenticated {
                    principal_name: Some(exact(&id)),
                })),
            })
            .collect()
    }

    /// What one rule allows on a chain (nothing if it names a missing object
    /// or does not apply to the chain's protocol or port).
    fn permissions(&self, tt: &TrafficTarget, rule: &RouteRef, chain: Chain) -> Vec<Permission> {
        let key = Key::new(&tt.key.namespace, &rule.name);
        match rule.kind {
            Kind::HttpRouteGroup if chain.protocol == Protocol::Http => {
                let Some(group) = self.state.http_route_groups.get(&key) else { return Vec::new() };
                group
                    .matches
                    .iter()
                    .filter(|m| rule.matches.is_empty() || rule.matches.contains(&m.name))
                    .map(http_permission)
                    .collect()
            }
            Kind::TcpRoute => {
                let Some(route) = self.state.tcp_routes.get(&key) else { return Vec::new() };
                if route.ports.is_empty() || route.ports.contains(&chain.target_port) {
                    vec![any_permission()]
                } else {
                    Vec::new()
                }
            }
            _ => Vec::new(),
        }
    }
}

fn exact(s: &str) -> StringMatcher {
    StringMatcher { match_pattern: Some(string_matcher::MatchPattern::Exact(s.into())), ignore_case: false }
}

/// A regex that must match the whole value (RE2 syntax, as SMI writes them).
/// Envoy matches `safe_regex` in full anyway; the explicit anchors keep the
/// meaning for any matcher that searches instead.
fn full_regex(re: &str) -> StringMatcher {
    StringMatcher {
        match_pattern: Some(string_matcher::MatchPattern::SafeRegex(RegexMatcher {
            regex: format!("^(?:{re})$"),
            engine_type: None,
        })),
        ignore_case: false,
    }
}

fn header(name: &str, m: StringMatcher) -> Permission {
    Permission {
        rule: Some(permission::Rule::Header(HeaderMatcher {
            name: name.into(),
            header_match_specifier: Some(header_matcher::HeaderMatchSpecifier::StringMatch(m)),
            ..Default::default()
        })),
    }
}

fn any_permission() -> Permission {
    Permission { rule: Some(permission::Rule::Any(true)) }
}

/// One HTTPRouteGroup match: path, method and headers must all match; an empty match allows anything.
fn http_permission(m: &HttpMatch) -> Permission {
    let mut all = Vec::new();
    if let Some(re) = &m.path_regex {
        all.push(Permission {
            rule: Some(permission::Rule::UrlPath(PathMatcher {
                rule: Some(path_matcher::Rule::Path(full_regex(re))),
            })),
        });
    }
    if !m.methods.is_empty() && !m.methods.iter().any(|method| method == "*") {
        let methods = m.methods.iter().map(|method| header(":method", exact(method))).collect();
        all.push(Permission { rule: Some(permission::Rule::OrRules(permission::Set { rules: methods })) });
    }
    for (name, re) in &m.headers {
        all.push(header(name, full_regex(re)));
    }
    if all.is_empty() {
        return any_permission();
    }
    Permission { rule: Some(permission::Rule::AndRules(permission::Set { rules: all })) }
}

/// An RBAC filter config (`rules` is field 1 of both the HTTP and the network
/// filter) with `rules` encoded deterministically: policies in name order, so
/// equal inputs give equal bytes and so equal listener versions.
fn with_rules<W: Message + Name>(wrapper: &W, rules: &Rbac) -> Any {
    let mut value = wrapper.encode_to_vec();
    append_field(&mut value, 1, &encode_rbac(rules));
    Any { type_url: W::type_url(), value }
}

/// `Rbac` with its policy map written in key order.
fn encode_rbac(rules: &Rbac) -> Vec<u8> {
    let mut out = Rbac { policies: Default::default(), ..rules.clone() }.encode_to_vec();
    let mut policies: Vec<(&String, &Policy)> = rules.policies.iter().collect();
    policies.sort_by(|a, b| a.0.cmp(b.0));
    for (name, policy) in policies {
        let one =
            Rbac { policies: [(name.clone(), policy.clone())].into_iter().collect(), ..Default::default() };
        out.extend(one.encode_to_vec());
    }
    out
}
