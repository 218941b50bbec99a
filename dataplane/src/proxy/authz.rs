//! Authorization of inbound requests and connections by a chain's RBAC rules
//! ([`crate::config::rbac`]), pure: the listener and the HTTP server call
//! [`check_tcp`] and [`check_http`] and count and answer the denials.
//!
//! A policy matches when one of its principals matches the peer and one of its
//! permissions matches the request (or connection). With `ALLOW`, some policy
//! must match (so no policies deny everything); with `DENY`, none may.

use http::{Response, StatusCode, header};

use super::body::ResponseBody;
use super::route::{RequestView, header_matches, string_matches};
use crate::config::rbac::{Permission, Policy, Principal, Rbac, RbacAction};

/// Why a request or connection was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Denied {
    /// The name of the policy that denied (`DENY` rules); empty when no policy
    /// allowed (`ALLOW` rules).
    pub policy_hint: String,
}

/// What the rules are checked against.
struct Target<'a> {
    /// The peer's certificate identity, if it presented one.
    peer: Option<&'a str>,
    /// The request, on an HTTP chain.
    request: Option<RequestView<'a>>,
    /// The connection's destination port.
    destination_port: u16,
}

/// Checks an HTTP request from `peer` (its SPIFFE ID, `None` without a client
/// certificate) that arrived on `destination_port`.
pub(crate) fn check_http(
    rbac: &Rbac,
    peer: Option<&str>,
    parts: &http::request::Parts,
    destination_port: u16,
) -> Result<(), Denied> {
    let path = parts.uri.path();
    let request = RequestView {
        method: parts.method.as_str(),
        authority: authority(parts),
        path,
        path_and_query: parts.uri.path_and_query().map_or(path, |p| p.as_str()),
        headers: &parts.headers,
    };
    check(rbac, &Target { peer, request: Some(request), destination_port })
}

/// Checks a TCP connection from `peer` to `destination_port`. Header and path
/// permissions never match a connection.
pub(crate) fn check_tcp(rbac: &Rbac, peer: Option<&str>, destination_port: u16) -> Result<(), Denied> {
    check(rbac, &Target { peer, request: None, destination_port })
}

/// The reply to a denied request: 403 with Envoy's body `RBAC: access denied`.
pub(crate) fn forbidden_response() -> Response<ResponseBody> {
    super::http::local_reply(StatusCode::FORBIDDEN, "RBAC: access denied")
}

/// The request's authority as route matching sees it: the URI's, else `Host`.
fn authority(parts: &http::request::Parts) -> &str {
    match parts.uri.authority() {
        Some(authority) => authority.as_str(),
        None => parts.headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or(""),
    }
}

fn check(rbac: &Rbac, target: &Target<'_>) -> Result<(), Denied> {
    let matched = rbac.policies.iter().find(|p| policy_matches(p, target));
    match (rbac.action, matched) {
        (RbacAction::Allow, Some(_)) | (RbacAction::Deny, None) => Ok(()),
        (RbacAction::Allow, None) => Err(Denied { policy_hint: String::new() }),
        (RbacAction::Deny, Some(policy)) => Err(Denied { policy_hint: policy.name.clone() }),
    }
}

fn policy_matches(policy: &Policy, target: &Target<'_>) -> bool {
    policy.principals.iter().any(|p| principal_matches(p, target.peer))
        && policy.permissions.iter().any(|p| permission_matches(p, target))
}

fn principal_matches(principal: &Principal, peer: Option<&str>) -> bool {
    match principal {
        Principal::Any => true,
        Principal::Authenticated(name) => peer.is_some() && string_matches(name, peer),
        Principal::And(ids) => ids.iter().all(|p| principal_matches(p, peer)),
        Principal::Or(ids) => ids.iter().any(|p| principal_matches(p, peer)),
        Principal::Not(id) => !principal_matches(id, peer),
    }
}

fn permission_matches(permission: &Permission, target: &Target<'_>) -> bool {
    match permission {
        Permission::Any => true,
        Permission::And(rules) => rules.iter().all(|p| permission_matches(p, target)),
        Permission::Or(rules) => rules.iter().any(|p| permission_matches(p, target)),
        Permission::Not(rule) => !permission_matches(rule, target),
        Permission::Header(h) => target.request.as_ref().is_some_and(|r| header_matches(h, r)),
        Permission::UrlPath(path) => {
            target.request.as_ref().is_some_and(|r| string_matches(path, Some(r.path)))
        }
        Permission::DestinationPort(port) => *port == target.destination_port,
        Permission::DestinationPortRange(range) => range.contains(&u32::from(target.destination_port)),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use http::Request;

    use super::*;
    use crate::config::{HeaderMatch, StringMatch};

    const WEB: &str = "spiffe://cluster.local/ns/default/sa/web";
    const API: &str = "spiffe://cluster.local/ns/default/sa/api";

    fn parts(method: &str, uri: &str, headers: &[(&str, &str)]) -> http::request::Parts {
        let mut builder = Request::builder().method(method).uri(uri);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap().into_parts().0
    }

    fn re(pattern: &str) -> StringMatch {
        StringMatch::Regex(regex::Regex::new(&format!("^(?:{pattern})$")).unwrap())
    }

    fn from(id: &str) -> Principal {
        Principal::Authenticated(StringMatch::Exact(id.into()))
    }

    fn allow(policies: Vec<Policy>) -> Rbac {
        Rbac { action: RbacAction::Allow, policies }
    }

    fn policy(name: &str, principals: Vec<Principal>, permissions: Vec<Permission>) -> Policy {
        Policy { name: name.into(), principals, permissions }
    }

    fn method(m: &str) -> Permission {
        Permission::Header(HeaderMatch {
            name: ":method".into(),
            value: StringMatch::Exact(m.into()),
            invert: false,
        })
    }

    #[test]
    fn an_allow_policy_admits_its_principals_only() {
        let rbac = allow(vec![policy("default/web-to-api", vec![from(WEB)], vec![Permission::Any])]);
        let get = parts("GET", "/", &[]);
        assert_eq!(check_http(&rbac, Some(WEB), &get, 8080), Ok(()));
        assert_eq!(check_http(&rbac, Some(API), &get, 8080), Err(Denied { policy_hint: String::new() }));
        assert!(check_http(&rbac, None, &get, 8080).is_err(), "no certificate, no identity");
        assert_eq!(check_tcp(&rbac, Some(WEB), 5432), Ok(()));
        assert!(check_tcp(&rbac, None, 5432).is_err());
    }

    #[test]
    fn an_empty_allow_denies_everything_and_an_empty_deny_nothing() {
        let get = parts("GET", "/", &[]);
        assert!(check_http(&allow(vec![]), Some(WEB), &get, 80).is_err());
        assert!(check_tcp(&allow(vec![]), Some(WEB), 80).is_err());
        assert_eq!(check_http(&Rbac::allow_all(), None, &get, 80), Ok(()));
        assert_eq!(check_tcp(&Rbac::allow_all(), None, 80), Ok(()));
    }

    #[test]
    fn a_deny_policy_refuses_what_it_matches_and_names_itself() {
        let rbac = Rbac {
            action: RbacAction::Deny,
            policies: vec![
                policy("a", vec![from(API)], vec![Permission::Any]),
                policy(
                    "b",
                    vec![Principal::Any],
                    vec![Permission::UrlPath(StringMatch::Prefix("/admin".into()))],
                ),
            ],
        };
        assert_eq!(check_http(&rbac, Some(WEB), &parts("GET", "/", &[]), 80), Ok(()));
        assert_eq!(
            check_http(&rbac, Some(API), &parts("GET", "/", &[]), 80),
            Err(Denied { policy_hint: "a".into() })
        );
        assert_eq!(
            check_http(&rbac, Some(WEB), &parts("GET", "/admin/x", &[]), 80),
            Err(Denied { policy_hint: "b".into() })
        );
        assert_eq!(check_tcp(&rbac, Some(WEB), 80), Ok(()), "a path never matches a connection");
    }

    #[test]
    fn url_path_ignores_the_query() {
        let rbac = allow(vec![policy(
            "p",
            vec![Principal::Any],
            vec![Permission::UrlPath(re("/api/users/[0-9]+"))],
        )]);
        assert_eq!(check_http(&rbac, None, &parts("GET", "/api/users/7?x=1", &[]), 80), Ok(()));
        assert_eq!(check_http(&rbac, None, &parts("GET", "http://api:80/api/users/7?x=1", &[]), 80), Ok(()));
        assert!(check_http(&rbac, None, &parts("GET", "/api/users/7/x", &[]), 80).is_err());
        assert!(check_http(&rbac, None, &parts("GET", "/v2/api/users/7", &[]), 80).is_err(), "anchored");
    }

    #[test]
    fn methods_and_header_regexes_combine_like_the_control_plane_emits_them() {
        // and[ url_path, or[:method GET, :method HEAD], header x-version ~ v[12] ]
        let rule = Permission::And(vec![
            Permission::UrlPath(re("/metrics.*")),
            Permission::Or(vec![method("GET"), method("HEAD")]),
            Permission::Header(HeaderMatch { name: "x-version".into(), value: re("v[12]"), invert: false }),
        ]);
        let rbac = allow(vec![policy("p", vec![from(WEB)], vec![rule])]);
        let ok = |m: &str, uri: &str, headers: &[(&str, &str)]| {
            check_http(&rbac, Some(WEB), &parts(m, uri, headers), 80).is_ok()
        };
        assert!(ok("GET", "/metrics", &[("x-version", "v1")]));
        assert!(ok("HEAD", "/metrics/x", &[("x-version", "v2")]));
        assert!(!ok("POST", "/metrics", &[("x-version", "v1")]), "method");
        assert!(!ok("GET", "/metrics", &[("x-version", "v3")]), "header regex");
        assert!(!ok("GET", "/metrics", &[("x-version", "xv1")]), "header regex is anchored");
        assert!(!ok("GET", "/metrics", &[]), "missing header");
        assert!(!ok("GET", "/other", &[("x-version", "v1")]), "path");
        assert!(check_tcp(&rbac, Some(WEB), 80).is_err(), "headers never match a connection");
    }

    #[test]
    fn pseudo_headers_match_as_in_routing() {
        let authority = Permission::Header(HeaderMatch {
            name: ":authority".into(),
            value: StringMatch::Exact("api:8080".into()),
            invert: false,
        });
        let path = Permission::Header(HeaderMatch {
            name: ":path".into(),
            value: StringMatch::Exact("/a?b=c".into()),
            invert: false,
        });
        let rbac =
            allow(vec![policy("p", vec![Principal::Any], vec![Permission::And(vec![authority, path])])]);
        assert!(check_http(&rbac, None, &parts("GET", "/a?b=c", &[("host", "api:8080")]), 80).is_ok());
        assert!(check_http(&rbac, None, &parts("GET", "http://api:8080/a?b=c", &[]), 80).is_ok());
        assert!(check_http(&rbac, None, &parts("GET", "/a?b=c", &[("host", "web")]), 80).is_err());
    }

    #[test]
    fn destination_ports_and_ranges() {
        let rbac = allow(vec![policy(
            "tcp",
            vec![from(WEB)],
            vec![Permission::Or(vec![
                Permission::DestinationPort(5432),
                Permission::DestinationPortRange(9000..9010),
            ])],
        )]);
        assert!(check_tcp(&rbac, Some(WEB), 5432).is_ok());
        assert!(check_tcp(&rbac, Some(WEB), 9009).is_ok());
        assert!(check_tcp(&rbac, Some(WEB), 9010).is_err(), "the range is half-open");
        assert!(check_tcp(&rbac, Some(WEB), 5433).is_err());
        assert!(
            check_http(&rbac, Some(WEB), &parts("GET", "/", &[]), 5432).is_ok(),
            "ports apply to HTTP too"
        );
        assert!(check_http(&rbac, Some(WEB), &parts("GET", "/", &[]), 80).is_err());
    }

    #[test]
    fn principals_combine() {
        let any_cert = Principal::Authenticated(StringMatch::Present(true));
        let rbac = allow(vec![policy(
            "p",
            vec![Principal::And(vec![any_cert, Principal::Not(Box::new(from(API)))])],
            vec![Permission::Any],
        )]);
        assert!(check_tcp(&rbac, Some(WEB), 1).is_ok());
        assert!(check_tcp(&rbac, Some(API), 1).is_err());
        assert!(check_tcp(&rbac, None, 1).is_err(), "no certificate");
        let not_api =
            allow(vec![policy("p", vec![Principal::Not(Box::new(from(API)))], vec![Permission::Any])]);
        assert!(check_tcp(&not_api, None, 1).is_ok(), "not(authenticated) admits a peer without identity");
        let either =
            allow(vec![policy("p", vec![Principal::Or(vec![from(API), from(WEB)])], vec![Permission::Any])]);
        assert!(check_tcp(&either, Some(WEB), 1).is_ok());
        let prefix = allow(vec![policy(
            "p",
            vec![Principal::Authenticated(StringMatch::Prefix("spiffe://cluster.local/ns/default/".into()))],
            vec![Permission::Any],
        )]);
        assert!(check_tcp(&prefix, Some(WEB), 1).is_ok());
        assert!(check_tcp(&prefix, Some("spiffe://cluster.local/ns/other/sa/x"), 1).is_err());
    }

    #[test]
    fn a_request_needs_one_matching_permission_of_a_policy_with_a_matching_principal() {
        let rbac = allow(vec![
            policy("get-from-web", vec![from(WEB)], vec![method("GET")]),
            policy("post-from-api", vec![from(API)], vec![method("POST"), method("PUT")]),
        ]);
        let ok = |peer, m| check_http(&rbac, Some(peer), &parts(m, "/", &[]), 80).is_ok();
        assert!(ok(WEB, "GET"));
        assert!(!ok(WEB, "POST"));
        assert!(ok(API, "PUT"));
        assert!(!ok(API, "GET"));
        let not_get =
            allow(vec![policy("p", vec![Principal::Any], vec![Permission::Not(Box::new(method("GET")))])]);
        assert!(check_http(&not_get, None, &parts("DELETE", "/", &[]), 80).is_ok());
        assert!(check_http(&not_get, None, &parts("GET", "/", &[]), 80).is_err());
    }

    #[tokio::test]
    async fn the_forbidden_reply_is_envoys() {
        use http_body_util::BodyExt;
        let response = forbidden_response();
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"RBAC: access denied");
    }
}
