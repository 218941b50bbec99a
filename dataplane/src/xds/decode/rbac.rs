//! Envoy's RBAC filters, HTTP (`envoy.extensions.filters.http.rbac.v3.RBAC`) and network
//! (`envoy.extensions.filters.network.rbac.v3.RBAC`), into [`crate::config::rbac::Rbac`].
//!
//! weft-proxy enforces the subset the control plane emits for TrafficTargets (and a little
//! more): `ALLOW`/`DENY` rules whose principals are certificate identities and whose
//! permissions are paths, headers and destination ports, combined with and / or / not.
//! Everything else is an error naming the field. Shadow rules only feed Envoy's stats, so
//! they are ignored.

use weft_xds_protos::envoy::config::rbac::v3::{
    Permission as XdsPermission, Policy as XdsPolicy, Principal as XdsPrincipal, Rbac as XdsRbac, permission,
    principal, rbac::Action,
};
use weft_xds_protos::envoy::extensions::filters::http::rbac::v3::Rbac as HttpRbac;
use weft_xds_protos::envoy::extensions::filters::network::rbac::v3::Rbac as NetworkRbac;
use weft_xds_protos::envoy::r#type::matcher::v3::{PathMatcher, path_matcher};
use weft_xds_protos::google::protobuf::Any;

use super::route::{header_match, string_match};
use super::{unpack, unsupported};
use crate::config::StringMatch;
use crate::config::rbac::{Permission, Policy, Principal, Rbac, RbacAction};
use crate::xds::error::{At, FieldError};

/// [`http_rbac`] with the error as one line, `<field path>: <reason>`, e.g.
/// `rules.policies["ns/tt"].permissions[0]: unsupported rule requested_server_name`.
#[cfg(test)]
pub(crate) fn decode_http_rbac(any: &Any) -> Result<Rbac, String> {
    http_rbac(any).map_err(message)
}

/// [`network_rbac`] with the error as one line.
#[cfg(test)]
pub(crate) fn decode_network_rbac(any: &Any) -> Result<Rbac, String> {
    network_rbac(any).map_err(message)
}

/// Decodes an HTTP RBAC filter's config. Without `rules` the filter enforces nothing
/// ([`Rbac::allow_all`]). Errors name the field, e.g. path
/// `rules.policies["ns/tt"].permissions[0]`, reason `unsupported rule requested_server_name`.
pub(crate) fn http_rbac(any: &Any) -> Result<Rbac, FieldError> {
    let filter: HttpRbac = unpack(any)?;
    // The matcher API replaces `rules`; shadow rules and the stat prefixes only feed stats.
    unsupported!(filter, [matcher]);
    rules(filter.rules.as_ref())
}

/// Decodes a network RBAC filter's config, as [`http_rbac`] does.
pub(crate) fn network_rbac(any: &Any) -> Result<Rbac, FieldError> {
    let filter: NetworkRbac = unpack(any)?;
    unsupported!(filter, [matcher, delay_deny]);
    // `enforcement_type`: weft-proxy checks a connection once, when it is accepted. CONTINUOUS
    // re-checks on each read in Envoy, which only differs for dynamic metadata (unsupported
    // here), so both are accepted.
    rules(filter.rules.as_ref())
}

#[cfg(test)]
fn message(e: FieldError) -> String {
    if e.path.is_empty() { e.reason } else { format!("{}: {}", e.path, e.reason) }
}

fn rules(rules: Option<&XdsRbac>) -> Result<Rbac, FieldError> {
    match rules {
        None => Ok(Rbac::allow_all()),
        Some(r) => rbac(r).at("rules"),
    }
}

fn rbac(r: &XdsRbac) -> Result<Rbac, FieldError> {
    // `audit_logging_options` only logs decisions; it changes none.
    let action = match Action::try_from(r.action) {
        Ok(Action::Allow) => RbacAction::Allow,
        Ok(Action::Deny) => RbacAction::Deny,
        Ok(Action::Log) => return Err(FieldError::new("action", "LOG is not supported by weft-proxy")),
        Err(_) => return Err(FieldError::new("action", format!("unknown action {}", r.action))),
    };
    let mut names: Vec<&String> = r.policies.keys().collect();
    names.sort();
    let policies = names
        .into_iter()
        .map(|name| policy(name, &r.policies[name]).at(&format!("policies[{name:?}]")))
        .collect::<Result<_, _>>()?;
    Ok(Rbac { action, policies })
}

fn policy(name: &str, p: &XdsPolicy) -> Result<Policy, FieldError> {
    unsupported!(p, [condition, checked_condition, cel_config]);
    // Envoy's validation requires both lists to be non-empty.
    if p.permissions.is_empty() {
        return Err(FieldError::new("permissions", "at least one permission is required"));
    }
    if p.principals.is_empty() {
        return Err(FieldError::new("principals", "at least one principal is required"));
    }
    let permissions = p
        .permissions
        .iter()
        .enumerate()
        .map(|(i, perm)| permission_rule(perm).at_index("permissions", i))
        .collect::<Result<_, _>>()?;
    let principals = p
        .principals
        .iter()
        .enumerate()
        .map(|(i, id)| principal_id(id).at_index("principals", i))
        .collect::<Result<_, _>>()?;
    Ok(Policy { name: name.to_owned(), principals, permissions })
}

fn permission_rule(p: &XdsPermission) -> Result<Permission, FieldError> {
    use permission::Rule;
    let rule = p.rule.as_ref().ok_or_else(|| FieldError::new("rule", "a rule is required"))?;
    let unsupported = |name: &str| Err(FieldError::new("", format!("unsupported rule {name}")));
    Ok(match rule {
        Rule::Any(true) => Permission::Any,
        Rule::Any(false) => return Err(FieldError::new("any", "must be true")),
        Rule::AndRules(set) => Permission::And(permission_set(&set.rules).at("and_rules")?),
        Rule::OrRules(set) => Permission::Or(permission_set(&set.rules).at("or_rules")?),
        Rule::NotRule(inner) => Permission::Not(Box::new(permission_rule(inner).at("not_rule")?)),
        Rule::Header(h) => Permission::Header(header_match(h).at("header")?),
        Rule::UrlPath(m) => Permission::UrlPath(path_match(m).at("url_path")?),
        Rule::DestinationPort(port) => match u16::try_from(*port) {
            Ok(port) => Permission::DestinationPort(port),
            Err(_) => {
                return Err(FieldError::new("destination_port", format!("{port} is not a port number")));
            }
        },
        Rule::DestinationPortRange(r) => {
            // Half-open [start, end); clamped to the port numbers, so a range may be empty.
            let clamp = |v: i32| u32::try_from(v).unwrap_or(0).min(65_536);
            Permission::DestinationPortRange(clamp(r.start)..clamp(r.end))
        }
        Rule::DestinationIp(_) => return unsupported("destination_ip"),
        Rule::Metadata(_) => return unsupported("metadata"),
        Rule::RequestedServerName(_) => return unsupported("requested_server_name"),
        Rule::Matcher(_) => return unsupported("matcher"),
        Rule::UriTemplate(_) => return unsupported("uri_template"),
        Rule::SourcedMetadata(_) => return unsupported("sourced_metadata"),
    })
}

fn permission_set(rules: &[XdsPermission]) -> Result<Vec<Permission>, FieldError> {
    if rules.is_empty() {
        return Err(FieldError::new("rules", "at least one rule is required"));
    }
    rules.iter().enumerate().map(|(i, r)| permission_rule(r).at_index("rules", i)).collect()
}

/// A PathMatcher: the path without query (and fragment).
fn path_match(m: &PathMatcher) -> Result<StringMatch, FieldError> {
    match &m.rule {
        Some(path_matcher::Rule::Path(sm)) => string_match(sm).at("path"),
        None => Err(FieldError::required("path")),
    }
}

fn principal_id(p: &XdsPrincipal) -> Result<Principal, FieldError> {
    use principal::Identifier;
    let id =
        p.identifier.as_ref().ok_or_else(|| FieldError::new("identifier", "an identifier is required"))?;
    let unsupported = |name: &str| Err(FieldError::new("", format!("unsupported identifier {name}")));
    Ok(match id {
        Identifier::Any(true) => Principal::Any,
        Identifier::Any(false) => return Err(FieldError::new("any", "must be true")),
        Identifier::AndIds(set) => Principal::And(principal_set(&set.ids).at("and_ids")?),
        Identifier::OrIds(set) => Principal::Or(principal_set(&set.ids).at("or_ids")?),
        Identifier::NotId(inner) => Principal::Not(Box::new(principal_id(inner).at("not_id")?)),
        Identifier::Authenticated(a) => Principal::Authenticated(match &a.principal_name {
            Some(sm) => string_match(sm).at("authenticated.principal_name")?,
            // Envoy: no name matches any peer with a certificate.
            None => StringMatch::Present(true),
        }),
        Identifier::SourceIp(_) => return unsupported("source_ip"),
        Identifier::DirectRemoteIp(_) => return unsupported("direct_remote_ip"),
        Identifier::RemoteIp(_) => return unsupported("remote_ip"),
        Identifier::Header(_) => return unsupported("header"),
        Identifier::UrlPath(_) => return unsupported("url_path"),
        Identifier::Metadata(_) => return unsupported("metadata"),
        Identifier::FilterState(_) => return unsupported("filter_state"),
        Identifier::SourcedMetadata(_) => return unsupported("sourced_metadata"),
        Identifier::Custom(_) => return unsupported("custom"),
    })
}

fn principal_set(ids: &[XdsPrincipal]) -> Result<Vec<Principal>, FieldError> {
    if ids.is_empty() {
        return Err(FieldError::new("ids", "at least one identifier is required"));
    }
    ids.iter().enumerate().map(|(i, id)| principal_id(id).at_index("ids", i)).collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::HashMap;

    use prost::{Message, Name};
    use weft_xds_protos::envoy::config::rbac::v3::rbac::AuditLoggingOptions;
    use weft_xds_protos::envoy::config::route::v3::{HeaderMatcher, header_matcher::HeaderMatchSpecifier};
    use weft_xds_protos::envoy::r#type::matcher::v3::{
        RegexMatcher, StringMatcher, string_matcher::MatchPattern,
    };
    use weft_xds_protos::envoy::r#type::v3::Int32Range;

    use super::*;
    use crate::config::HeaderMatch;

    const WEB: &str = "spiffe://cluster.local/ns/default/sa/web";
    const API: &str = "spiffe://cluster.local/ns/default/sa/api";

    fn any<M: Message + Name>(m: &M) -> Any {
        Any { type_url: M::type_url(), value: m.encode_to_vec() }
    }

    fn http(rules: Option<XdsRbac>) -> Any {
        any(&HttpRbac { rules, ..Default::default() })
    }

    fn network(rules: Option<XdsRbac>) -> Any {
        any(&NetworkRbac { rules, stat_prefix: "inbound".into(), ..Default::default() })
    }

    fn exact(s: &str) -> StringMatcher {
        StringMatcher { match_pattern: Some(MatchPattern::Exact(s.into())), ignore_case: false }
    }

    fn safe_regex(s: &str) -> StringMatcher {
        let re = RegexMatcher { regex: s.into(), ..Default::default() };
        StringMatcher { match_pattern: Some(MatchPattern::SafeRegex(re)), ignore_case: false }
    }

    fn perm(rule: permission::Rule) -> XdsPermission {
        XdsPermission { rule: Some(rule) }
    }

    fn id(identifier: principal::Identifier) -> XdsPrincipal {
        XdsPrincipal { identifier: Some(identifier) }
    }

    fn authenticated(spiffe: &str) -> XdsPrincipal {
        id(principal::Identifier::Authenticated(principal::Authenticated {
            principal_name: Some(exact(spiffe)),
        }))
    }

    fn header(name: &str, m: StringMatcher) -> XdsPermission {
        perm(permission::Rule::Header(HeaderMatcher {
            name: name.into(),
            header_match_specifier: Some(HeaderMatchSpecifier::StringMatch(m)),
            ..Default::default()
        }))
    }

    fn url_path(m: StringMatcher) -> XdsPermission {
        perm(permission::Rule::UrlPath(PathMatcher { rule: Some(path_matcher::Rule::Path(m)) }))
    }

    fn and(rules: Vec<XdsPermission>) -> XdsPermission {
        perm(permission::Rule::AndRules(permission::Set { rules }))
    }

    fn or(rules: Vec<XdsPermission>) -> XdsPermission {
        perm(permission::Rule::OrRules(permission::Set { rules }))
    }

    fn rules(action: Action, policies: Vec<(&str, XdsPolicy)>) -> XdsRbac {
        XdsRbac {
            action: action as i32,
            policies: policies.into_iter().map(|(k, v)| (k.to_string(), v)).collect::<HashMap<_, _>>(),
            audit_logging_options: None,
        }
    }

    fn xpolicy(permissions: Vec<XdsPermission>, principals: Vec<XdsPrincipal>) -> XdsPolicy {
        XdsPolicy { permissions, principals, ..Default::default() }
    }

    fn one_permission(p: XdsPermission) -> Result<Permission, String> {
        let r =
            rules(Action::Allow, vec![("p", xpolicy(vec![p], vec![id(principal::Identifier::Any(true))]))]);
        decode_http_rbac(&http(Some(r))).map(|mut rbac| rbac.policies.remove(0).permissions.remove(0))
    }

    fn one_principal(p: XdsPrincipal) -> Result<Principal, String> {
        let r = rules(Action::Allow, vec![("p", xpolicy(vec![perm(permission::Rule::Any(true))], vec![p]))]);
        decode_http_rbac(&http(Some(r))).map(|mut rbac| rbac.policies.remove(0).principals.remove(0))
    }

    fn anchored(s: &str) -> StringMatch {
        StringMatch::Regex(regex::Regex::new(&format!("^(?:{s})$")).unwrap())
    }

    #[test]
    fn the_control_planes_traffic_target_rules_decode() {
        // As CONTRACT.md builds them: one policy per TrafficTarget, keyed `<ns>/<name>`; an
        // HTTPRouteGroup match becomes and[url_path, or[:method...], header...]; a TCPRoute
        // becomes or[destination_port...].
        let http_rule = and(vec![
            url_path(safe_regex("/api/.*")),
            or(vec![header(":method", exact("GET")), header(":method", exact("POST"))]),
            header("x-canary", safe_regex("yes|true")),
        ]);
        let tcp_rule = or(vec![perm(permission::Rule::DestinationPort(8080))]);
        let r = rules(
            Action::Allow,
            vec![
                ("default/web-to-api", xpolicy(vec![http_rule, tcp_rule], vec![authenticated(WEB)])),
                ("default/all", xpolicy(vec![perm(permission::Rule::Any(true))], vec![authenticated(API)])),
            ],
        );
        let want = Rbac {
            action: RbacAction::Allow,
            policies: vec![
                Policy {
                    name: "default/all".into(),
                    principals: vec![Principal::Authenticated(StringMatch::Exact(API.into()))],
                    permissions: vec![Permission::Any],
                },
                Policy {
                    name: "default/web-to-api".into(),
                    principals: vec![Principal::Authenticated(StringMatch::Exact(WEB.into()))],
                    permissions: vec![
                        Permission::And(vec![
                            Permission::UrlPath(anchored("/api/.*")),
                            Permission::Or(vec![
                                Permission::Header(HeaderMatch {
                                    name: ":method".into(),
                                    value: StringMatch::Exact("GET".into()),
                                    invert: false,
                                }),
                                Permission::Header(HeaderMatch {
                                    name: ":method".into(),
                                    value: StringMatch::Exact("POST".into()),
                                    invert: false,
                                }),
                            ]),
                            Permission::Header(HeaderMatch {
                                name: "x-canary".into(),
                                value: anchored("yes|true"),
                                invert: false,
                            }),
                        ]),
                        Permission::Or(vec![Permission::DestinationPort(8080)]),
                    ],
                },
            ],
        };
        assert_eq!(decode_http_rbac(&http(Some(r.clone()))), Ok(want.clone()));
        assert_eq!(decode_network_rbac(&network(Some(r))), Ok(want));
    }

    #[test]
    fn empty_rules_and_no_rules() {
        let empty = rules(Action::Allow, vec![]);
        assert_eq!(
            decode_http_rbac(&http(Some(empty.clone()))),
            Ok(Rbac { action: RbacAction::Allow, policies: vec![] })
        );
        assert_eq!(
            decode_network_rbac(&network(Some(empty))),
            Ok(Rbac { action: RbacAction::Allow, policies: vec![] })
        );
        assert_eq!(decode_http_rbac(&http(None)), Ok(Rbac::allow_all()));
        assert_eq!(decode_network_rbac(&network(None)), Ok(Rbac::allow_all()));
        assert_eq!(
            decode_http_rbac(&http(Some(rules(Action::Deny, vec![])))),
            Ok(Rbac { action: RbacAction::Deny, policies: vec![] })
        );
    }

    #[test]
    fn ignored_fields() {
        let shadow = Some(rules(Action::Deny, vec![]));
        let mut r = rules(Action::Allow, vec![]);
        r.audit_logging_options = Some(AuditLoggingOptions::default());
        let h = HttpRbac {
            rules: Some(r.clone()),
            shadow_rules: shadow.clone(),
            rules_stat_prefix: "x".into(),
            shadow_rules_stat_prefix: "y".into(),
            track_per_rule_stats: true,
            ..Default::default()
        };
        assert_eq!(decode_http_rbac(&any(&h)).unwrap().action, RbacAction::Allow);
        let n =
            NetworkRbac { rules: Some(r), shadow_rules: shadow, enforcement_type: 1, ..Default::default() };
        assert_eq!(decode_network_rbac(&any(&n)).unwrap().action, RbacAction::Allow);
    }

    #[test]
    fn every_permission_shape() {
        use permission::Rule;
        let cases: Vec<(XdsPermission, Permission)> = vec![
            (perm(Rule::Any(true)), Permission::Any),
            (perm(Rule::DestinationPort(5432)), Permission::DestinationPort(5432)),
            (
                perm(Rule::DestinationPortRange(Int32Range { start: 9000, end: 9010 })),
                Permission::DestinationPortRange(9000..9010),
            ),
            (
                perm(Rule::DestinationPortRange(Int32Range { start: -5, end: 100_000 })),
                Permission::DestinationPortRange(0..65_536),
            ),
            (
                perm(Rule::NotRule(Box::new(perm(Rule::DestinationPort(1))))),
                Permission::Not(Box::new(Permission::DestinationPort(1))),
            ),
            (
                and(vec![perm(Rule::Any(true)), perm(Rule::DestinationPort(2))]),
                Permission::And(vec![Permission::Any, Permission::DestinationPort(2)]),
            ),
            (or(vec![perm(Rule::DestinationPort(3))]), Permission::Or(vec![Permission::DestinationPort(3)])),
            (url_path(exact("/a")), Permission::UrlPath(StringMatch::Exact("/a".into()))),
            (
                url_path(StringMatcher {
                    match_pattern: Some(MatchPattern::Prefix("/p".into())),
                    ignore_case: false,
                }),
                Permission::UrlPath(StringMatch::Prefix("/p".into())),
            ),
            (
                url_path(StringMatcher {
                    match_pattern: Some(MatchPattern::Suffix(".js".into())),
                    ignore_case: false,
                }),
                Permission::UrlPath(StringMatch::Suffix(".js".into())),
            ),
            (
                url_path(StringMatcher {
                    match_pattern: Some(MatchPattern::Contains("x".into())),
                    ignore_case: false,
                }),
                Permission::UrlPath(StringMatch::Contains("x".into())),
            ),
            (
                url_path(StringMatcher {
                    match_pattern: Some(MatchPattern::Exact("/A".into())),
                    ignore_case: true,
                }),
                Permission::UrlPath(StringMatch::Regex(regex::Regex::new("^(?:(?is)/A)$").unwrap())),
            ),
            (url_path(safe_regex("/v[0-9]")), Permission::UrlPath(anchored("/v[0-9]"))),
        ];
        for (xds, want) in cases {
            assert_eq!(one_permission(xds.clone()), Ok(want), "{xds:?}");
        }
    }

    #[test]
    fn every_header_shape() {
        let h = |spec: HeaderMatchSpecifier, invert_match: bool| {
            perm(permission::Rule::Header(HeaderMatcher {
                name: "X-Tenant".into(),
                header_match_specifier: Some(spec),
                invert_match,
                ..Default::default()
            }))
        };
        let want = |value: StringMatch, invert: bool| {
            Permission::Header(HeaderMatch { name: "x-tenant".into(), value, invert })
        };
        let sm = |p: MatchPattern| StringMatcher { match_pattern: Some(p), ignore_case: false };
        let cases = [
            (
                h(HeaderMatchSpecifier::StringMatch(exact("a")), false),
                want(StringMatch::Exact("a".into()), false),
            ),
            (
                h(HeaderMatchSpecifier::StringMatch(sm(MatchPattern::Prefix("a".into()))), false),
                want(StringMatch::Prefix("a".into()), false),
            ),
            (
                h(HeaderMatchSpecifier::StringMatch(sm(MatchPattern::Suffix("a".into()))), false),
                want(StringMatch::Suffix("a".into()), false),
            ),
            (
                h(HeaderMatchSpecifier::StringMatch(sm(MatchPattern::Contains("a".into()))), false),
                want(StringMatch::Contains("a".into()), false),
            ),
            (h(HeaderMatchSpecifier::StringMatch(safe_regex("a+")), false), want(anchored("a+"), false)),
            (h(HeaderMatchSpecifier::PresentMatch(true), true), want(StringMatch::Present(true), true)),
            (
                h(HeaderMatchSpecifier::ExactMatch("b".into()), false),
                want(StringMatch::Exact("b".into()), false),
            ),
        ];
        for (xds, want) in cases {
            assert_eq!(one_permission(xds.clone()), Ok(want), "{xds:?}");
        }
    }

    #[test]
    fn every_principal_shape() {
        use principal::Identifier;
        let cases: Vec<(XdsPrincipal, Principal)> = vec![
            (id(Identifier::Any(true)), Principal::Any),
            (authenticated(WEB), Principal::Authenticated(StringMatch::Exact(WEB.into()))),
            (
                id(Identifier::Authenticated(principal::Authenticated { principal_name: None })),
                Principal::Authenticated(StringMatch::Present(true)),
            ),
            (
                id(Identifier::Authenticated(principal::Authenticated {
                    principal_name: Some(safe_regex("spiffe://cluster.local/ns/default/.*")),
                })),
                Principal::Authenticated(anchored("spiffe://cluster.local/ns/default/.*")),
            ),
            (
                id(Identifier::AndIds(principal::Set {
                    ids: vec![authenticated(WEB), id(Identifier::Any(true))],
                })),
                Principal::And(vec![
                    Principal::Authenticated(StringMatch::Exact(WEB.into())),
                    Principal::Any,
                ]),
            ),
            (
                id(Identifier::OrIds(principal::Set { ids: vec![authenticated(API)] })),
                Principal::Or(vec![Principal::Authenticated(StringMatch::Exact(API.into()))]),
            ),
            (
                id(Identifier::NotId(Box::new(authenticated(API)))),
                Principal::Not(Box::new(Principal::Authenticated(StringMatch::Exact(API.into())))),
            ),
        ];
        for (xds, want) in cases {
            assert_eq!(one_principal(xds.clone()), Ok(want), "{xds:?}");
        }
    }

    #[test]
    fn unsupported_shapes_are_nacked_with_their_field() {
        use weft_xds_protos::envoy::config::core::v3::CidrRange;
        let tt = |p: XdsPermission| {
            let r = rules(
                Action::Allow,
                vec![(
                    "ns/tt",
                    xpolicy(vec![perm(permission::Rule::Any(true)), p], vec![authenticated(WEB)]),
                )],
            );
            decode_http_rbac(&http(Some(r))).unwrap_err()
        };
        assert_eq!(
            tt(perm(permission::Rule::RequestedServerName(exact("x")))),
            r#"rules.policies["ns/tt"].permissions[1]: unsupported rule requested_server_name"#
        );
        assert_eq!(
            tt(perm(permission::Rule::DestinationIp(CidrRange::default()))),
            r#"rules.policies["ns/tt"].permissions[1]: unsupported rule destination_ip"#
        );
        assert_eq!(
            tt(and(vec![
                perm(permission::Rule::Any(true)),
                or(vec![perm(permission::Rule::Metadata(Default::default()))])
            ])),
            r#"rules.policies["ns/tt"].permissions[1].and_rules.rules[1].or_rules.rules[0]: unsupported rule metadata"#
        );
        assert_eq!(
            tt(perm(permission::Rule::NotRule(Box::new(url_path(safe_regex("("))))))
                .split(": invalid regex")
                .next(),
            Some(r#"rules.policies["ns/tt"].permissions[1].not_rule.url_path.path.safe_regex.regex"#)
        );
        assert_eq!(
            tt(perm(permission::Rule::DestinationPort(70_000))),
            r#"rules.policies["ns/tt"].permissions[1].destination_port: 70000 is not a port number"#
        );
        assert_eq!(
            tt(perm(permission::Rule::Any(false))),
            r#"rules.policies["ns/tt"].permissions[1].any: must be true"#
        );
        assert_eq!(
            tt(XdsPermission { rule: None }),
            r#"rules.policies["ns/tt"].permissions[1].rule: a rule is required"#
        );
        assert_eq!(
            tt(and(vec![])),
            r#"rules.policies["ns/tt"].permissions[1].and_rules.rules: at least one rule is required"#
        );
        assert_eq!(
            tt(perm(permission::Rule::UrlPath(PathMatcher { rule: None }))),
            r#"rules.policies["ns/tt"].permissions[1].url_path.path: required"#
        );
        assert_eq!(
            tt(perm(permission::Rule::Header(HeaderMatcher {
                name: "x".into(),
                treat_missing_header_as_empty: true,
                ..Default::default()
            }))),
            r#"rules.policies["ns/tt"].permissions[1].header.treat_missing_header_as_empty: not supported by weft-proxy"#
        );

        let principal = |p: XdsPrincipal| {
            let r = rules(
                Action::Deny,
                vec![("ns/tt", xpolicy(vec![perm(permission::Rule::Any(true))], vec![p]))],
            );
            decode_network_rbac(&network(Some(r))).unwrap_err()
        };
        assert_eq!(
            principal(id(principal::Identifier::SourceIp(CidrRange::default()))),
            r#"rules.policies["ns/tt"].principals[0]: unsupported identifier source_ip"#
        );
        assert_eq!(
            principal(id(principal::Identifier::NotId(Box::new(id(principal::Identifier::Header(
                HeaderMatcher::default()
            )))))),
            r#"rules.policies["ns/tt"].principals[0].not_id: unsupported identifier header"#
        );
        assert_eq!(
            principal(id(principal::Identifier::OrIds(principal::Set { ids: vec![] }))),
            r#"rules.policies["ns/tt"].principals[0].or_ids.ids: at least one identifier is required"#
        );
        assert_eq!(
            principal(id(principal::Identifier::Authenticated(principal::Authenticated {
                principal_name: Some(StringMatcher::default()),
            }))),
            r#"rules.policies["ns/tt"].principals[0].authenticated.principal_name.match_pattern: required"#
        );

        let policy =
            |p: XdsPolicy| decode_http_rbac(&http(Some(rules(Action::Allow, vec![("a", p)])))).unwrap_err();
        assert_eq!(
            policy(xpolicy(vec![], vec![authenticated(WEB)])),
            r#"rules.policies["a"].permissions: at least one permission is required"#
        );
        assert_eq!(
            policy(xpolicy(vec![perm(permission::Rule::Any(true))], vec![])),
            r#"rules.policies["a"].principals: at least one principal is required"#
        );
        assert_eq!(
            policy(XdsPolicy {
                condition: Some(Default::default()),
                ..xpolicy(vec![perm(permission::Rule::Any(true))], vec![authenticated(WEB)])
            }),
            r#"rules.policies["a"].condition: not supported by weft-proxy"#
        );
    }

    #[test]
    fn unsupported_filter_options_are_nacked() {
        assert_eq!(
            decode_http_rbac(&http(Some(rules(Action::Log, vec![])))).unwrap_err(),
            "rules.action: LOG is not supported by weft-proxy"
        );
        let mut unknown = rules(Action::Allow, vec![]);
        unknown.action = 7;
        assert_eq!(
            decode_network_rbac(&network(Some(unknown))).unwrap_err(),
            "rules.action: unknown action 7"
        );
        let matcher = HttpRbac { matcher: Some(Default::default()), ..Default::default() };
        assert_eq!(decode_http_rbac(&any(&matcher)).unwrap_err(), "matcher: not supported by weft-proxy");
        let delay = NetworkRbac { delay_deny: Some(Default::default()), ..Default::default() };
        assert_eq!(decode_network_rbac(&any(&delay)).unwrap_err(), "delay_deny: not supported by weft-proxy");
        // The HTTP decoder refuses the network filter's config and vice versa.
        assert!(
            decode_http_rbac(&network(None))
                .unwrap_err()
                .starts_with("expected type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC")
        );
        assert!(decode_network_rbac(&http(None)).unwrap_err().contains("filters.network.rbac.v3.RBAC"));
        let garbage = Any { type_url: HttpRbac::type_url(), value: vec![0xff, 0xff] };
        assert!(
            decode_http_rbac(&garbage)
                .unwrap_err()
                .starts_with("invalid envoy.extensions.filters.http.rbac.v3.RBAC")
        );
    }
}
