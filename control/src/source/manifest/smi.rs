//! The SMI kinds: TrafficSplit, HTTPRouteGroup, TCPRoute and TrafficTarget, in every
//! version weft reads. Where a version moved a field (`matches` went under `spec` in
//! specs v1alpha3; TrafficTarget went under `spec` in access v1alpha2), the field in
//! the wrong place is an error rather than silently ignored.

use std::collections::{BTreeMap, BTreeSet};

use super::Envelope;
use super::fields::{self, FieldError, FieldResult, Node};
use crate::model::{
    Backend, HttpMatch, HttpRouteGroup, IdentityRef, Kind, RouteRef, TcpRoute, TrafficSplit, TrafficTarget,
};

pub(super) fn traffic_split(env: &Envelope<'_>) -> FieldResult<TrafficSplit> {
    let spec = env.root.req("spec")?;
    let service_node = spec.req("service")?;
    let root_service = service_name(&service_node, &env.key.namespace)?;

    let backends_node = spec.req("backends")?;
    let backend_nodes = backends_node.list()?;
    if backend_nodes.is_empty() {
        return Err(backends_node.error("at least one backend is required"));
    }
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    let mut backends = Vec::new();
    for node in &backend_nodes {
        let service_node = node.req("service")?;
        let service = service_name(&service_node, &env.key.namespace)?;
        if let Some(first) = seen.insert(service.clone(), node.path.clone()) {
            return Err(service_node.error(format!("duplicate backend \"{service}\" (also {first})")));
        }
        let weight_node = node.req("weight")?;
        let weight_milli = if env.alpha == 1 {
            quantity_weight(&weight_node)?
        } else {
            let n = weight_node.u64()?;
            n.checked_mul(1000).ok_or_else(|| weight_node.error(format!("is too large (got {n})")))?
        };
        backends.push(Backend { service, weight_milli });
    }

    let mut matches = Vec::new();
    if let Some(matches_node) = spec.get("matches")? {
        if env.alpha < 3 {
            return Err(matches_node.error(format!(
                "requires split.smi-spec.io/v1alpha3 or later (this is {})",
                env.api_version
            )));
        }
        for m in matches_node.list()? {
            matches.push(RouteRef { kind: route_kind(&m)?, name: object_ref(&m)?, matches: Vec::new() });
        }
    }
    Ok(TrafficSplit {
        key: env.key.clone(),
        api_version: env.api_version.to_string(),
        created: env.metadata.opt_str("creationTimestamp")?.map(str::to_string),
        root_service,
        backends,
        matches,
    })
}

/// A v1alpha1 weight: a quantity, written as a string or a plain YAML number.
fn quantity_weight(node: &Node<'_>) -> FieldResult<u64> {
    let text = match node.value {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Number(n) => n.to_string(),
        _ => return Err(node.error("must be a Kubernetes quantity such as 1, 500m or 0.5")),
    };
    fields::quantity_milli(&text).map_err(|reason| node.error(reason))
}

/// A Service in `namespace`: its name, or an FQDN (`web.shop.svc.cluster.local`) whose
/// first label is kept and whose namespace, if written, must be `namespace`.
fn service_name(node: &Node<'_>, namespace: &str) -> FieldResult<String> {
    let written = node.str()?;
    let mut labels = written.split('.');
    let name = labels.next().unwrap_or_default();
    fields::dns_1035_label(name).map_err(|reason| node.error(reason))?;
    if let Some(ns) = labels.next()
        && ns != namespace
    {
        return Err(node.error(format!(
            "\"{written}\" is in namespace \"{ns}\", but services must be in the \
             object's namespace \"{namespace}\""
        )));
    }
    Ok(name.to_string())
}

/// The `kind` of a route reference.
fn route_kind(node: &Node<'_>) -> FieldResult<Kind> {
    let kind = node.req("kind")?;
    match kind.str()? {
        "HTTPRouteGroup" => Ok(Kind::HttpRouteGroup),
        "TCPRoute" => Ok(Kind::TcpRoute),
        other => Err(kind.error(format!("must be HTTPRouteGroup or TCPRoute (got \"{other}\")"))),
    }
}

/// The `name` of a referenced object in the same namespace.
fn object_ref(node: &Node<'_>) -> FieldResult<String> {
    let name = node.req("name")?;
    let s = name.str()?;
    fields::dns_subdomain(s).map_err(|reason| name.error(reason))?;
    Ok(s.to_string())
}

/// Finds a field that moved between versions, refusing it in the wrong place.
/// `top` is where the version wants it: the document root rather than `spec`.
fn moved_field<'a>(env: &Envelope<'a>, name: &str, top: bool) -> FieldResult<Option<Node<'a>>> {
    let at_root = env.root.get(name)?;
    let spec = env.root.get("spec")?;
    let in_spec = match &spec {
        Some(spec) => spec.get(name)?,
        None => None,
    };
    let version = env.api_version;
    match (top, at_root, in_spec) {
        (true, _, Some(wrong)) => {
            Err(wrong.error(format!("in {version}, `{name}` is at the top level, not under spec")))
        }
        (false, Some(wrong), _) => Err(wrong.error(format!("in {version}, `{name}` belongs under spec"))),
        (true, found, _) => Ok(found),
        (false, _, found) => Ok(found),
    }
}

pub(super) fn http_route_group(env: &Envelope<'_>) -> FieldResult<HttpRouteGroup> {
    // specs v1alpha1 and v1alpha2 put `matches` at the top level; v1alpha3 moved it under spec.
    let mut matches = Vec::new();
    let mut names: BTreeMap<String, String> = BTreeMap::new();
    let list = match moved_field(env, "matches", env.alpha < 3)? {
        Some(node) => node.list()?,
        None => Vec::new(),
    };
    for node in list {
        let name_node = node.req("name")?;
        let name = name_node.str()?.to_string();
        if name.is_empty() {
            return Err(name_node.error("must not be empty"));
        }
        if let Some(first) = names.insert(name.clone(), node.path.clone()) {
            return Err(name_node.error(format!("duplicate match name \"{name}\" (also {first})")));
        }
        let mut methods = Vec::new();
        for m in node.opt_list("methods")? {
            let method = m.str()?;
            if method != "*" && !is_token(method) {
                return Err(m.error(format!("must be an HTTP method or \"*\" (got \"{method}\")")));
            }
            methods.push(method.to_string());
        }
        let path_regex = match node.get("pathRegex")? {
            Some(re) => Some(regex(&re)?.to_string()),
            None => None,
        };
        matches.push(HttpMatch { name, path_regex, methods, headers: headers(&node)? });
    }
    Ok(HttpRouteGroup { key: env.key.clone(), matches })
}

/// `headers`: a mapping of header name to value regex (v1alpha3+), or a list of such
/// mappings (v1alpha2); either form is read in every version. Names are lowercased,
/// since header names are case-insensitive.
fn headers(node: &Node<'_>) -> FieldResult<BTreeMap<String, String>> {
    let Some(headers) = node.get("headers")? else {
        return Ok(BTreeMap::new());
    };
    let entries = if headers.value.is_array() {
        let mut all = Vec::new();
        for item in headers.list()? {
            all.extend(item.entries()?);
        }
        all
    } else {
        headers.entries()?
    };
    let mut out = BTreeMap::new();
    for (name, value) in entries {
        if !is_token(name) {
            return Err(value.error(format!("\"{name}\" is not a valid header name")));
        }
        let lower = name.to_ascii_lowercase();
        if out.insert(lower.clone(), regex(&value)?.to_string()).is_some() {
            return Err(value.error(format!("header \"{lower}\" is matched twice")));
        }
    }
    Ok(out)
}

/// A regular expression the proxies can compile. Envoy uses RE2, whose syntax
/// (no look-around, no back-references) the `regex-syntax` parser shares; a
/// pattern they cannot compile would make every proxy refuse the routes.
fn regex<'a>(node: &Node<'a>) -> FieldResult<&'a str> {
    let re = node.str()?;
    regex_syntax::Parser::new().parse(re).map_err(|e| {
        node.error(format!(
            "not a valid RE2 regular expression: {}",
            e.to_string().lines().last().unwrap_or_default()
        ))
    })?;
    Ok(re)
}

/// An HTTP token (RFC 9110), as method and header names must be.
fn is_token(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c))
}

pub(super) fn tcp_route(env: &Envelope<'_>) -> FieldResult<TcpRoute> {
    let mut ports = Vec::new();
    if let Some(spec) = env.root.get("spec")?
        && let Some(matches) = spec.get("matches")?
    {
        if env.alpha < 4 {
            return Err(matches.error(format!(
                "requires specs.smi-spec.io/v1alpha4 or later (this is {})",
                env.api_version
            )));
        }
        let mut seen = BTreeSet::new();
        for p in matches.opt_list("ports")? {
            let port = p.port()?;
            if !seen.insert(port) {
                return Err(p.error(format!("duplicate port {port}")));
            }
            ports.push(port);
        }
    }
    Ok(TcpRoute { key: env.key.clone(), ports })
}

pub(super) fn traffic_target(env: &Envelope<'_>) -> FieldResult<TrafficTarget> {
    // access v1alpha1 has destination, sources and specs at the top level; v1alpha2 moved
    // them under spec and renamed specs to rules.
    let top = env.alpha == 1;
    let rules_field = if top { "specs" } else { "rules" };
    let namespace = &env.key.namespace;
    let destination_node = moved_field(env, "destination", top)?.ok_or_else(|| FieldError {
        field: if top { "destination".into() } else { "spec.destination".into() },
        reason: "is required".into(),
    })?;
    if let Some(port) = destination_node.get("port")? {
        return Err(port.error(
            "limiting a TrafficTarget to one port is not supported by weft; remove the field \
             (its rules then apply to every port)",
        ));
    }
    let destination = identity(&destination_node, namespace)?;
    let sources = match moved_field(env, "sources", top)? {
        Some(node) => node.list()?.iter().map(|s| identity(s, namespace)).collect::<FieldResult<_>>()?,
        None => Vec::new(),
    };
    let mut rules = Vec::new();
    if let Some(node) = moved_field(env, rules_field, top)? {
        for rule in node.list()? {
            let matches = rule
                .opt_list("matches")?
                .iter()
                .map(|m| m.str().map(str::to_string))
                .collect::<FieldResult<_>>()?;
            rules.push(RouteRef { kind: route_kind(&rule)?, name: object_ref(&rule)?, matches });
        }
    }
    Ok(TrafficTarget { key: env.key.clone(), destination, sources, rules })
}

/// A `{kind: ServiceAccount, name, namespace}` reference; the namespace defaults to the object's.
fn identity(node: &Node<'_>, namespace: &str) -> FieldResult<IdentityRef> {
    let kind = node.req("kind")?;
    if kind.str()? != "ServiceAccount" {
        return Err(kind.error(format!("must be ServiceAccount (got \"{}\")", kind.str()?)));
    }
    let name = object_ref(node)?;
    let namespace = match node.get("namespace")? {
        Some(ns) => {
            let s = ns.str()?;
            fields::dns_label(s).map_err(|reason| ns.error(reason))?;
            s.to_string()
        }
        None => namespace.to_string(),
    };
    Ok(IdentityRef { namespace, name })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::super::{Object, assert_refused, parse_one};
    use super::*;
    use crate::model::Key;

    fn split_yaml(version: &str, spec: &str) -> String {
        format!(
            "apiVersion: split.smi-spec.io/{version}\nkind: TrafficSplit\n\
             metadata: {{name: payment-split, namespace: payments}}\nspec:\n{spec}"
        )
    }

    fn parse_split(yaml: &str) -> TrafficSplit {
        match parse_one(yaml) {
            Ok(Object::TrafficSplit(s)) => s,
            other => panic!("not a split: {other:?}"),
        }
    }

    fn weights(s: &TrafficSplit) -> Vec<(&str, u64)> {
        s.backends.iter().map(|b| (b.service.as_str(), b.weight_milli)).collect()
    }

    #[test]
    fn split_weights_per_version() {
        type Weights<'a> = &'a [(&'a str, u64)];
        let cases: &[(&str, &str, Weights)] = &[
            (
                "v1alpha1",
                "[{service: v1, weight: 950m}, {service: v2, weight: 50m}]",
                &[("v1", 950), ("v2", 50)],
            ),
            (
                "v1alpha1",
                "[{service: v1, weight: 1}, {service: v2, weight: '500m'}]",
                &[("v1", 1000), ("v2", 500)],
            ),
            ("v1alpha1", "[{service: v1, weight: 0.5}, {service: v2, weight: 0}]", &[("v1", 500), ("v2", 0)]),
            ("v1alpha1", "[{service: v1, weight: 1k}]", &[("v1", 1_000_000)]),
            (
                "v1alpha2",
                "[{service: v1, weight: 90}, {service: v2, weight: 10}]",
                &[("v1", 90_000), ("v2", 10_000)],
            ),
            ("v1alpha3", "[{service: v1, weight: 0}]", &[("v1", 0)]),
            (
                "v1alpha4",
                "[{service: v1, weight: 1000}, {service: v2, weight: 500}]",
                &[("v1", 1_000_000), ("v2", 500_000)],
            ),
        ];
        for (version, backends, want) in cases {
            let s = parse_split(&split_yaml(
                version,
                &format!("  service: payment-svc\n  backends: {backends}\n"),
            ));
            assert_eq!(weights(&s), *want, "{version} {backends}");
            assert_eq!(s.api_version, format!("split.smi-spec.io/{version}"));
            assert_eq!(s.root_service, "payment-svc");
            assert_eq!(s.key, Key::new("payments", "payment-split"));
            assert!(s.matches.is_empty());
            assert_eq!(s.created, None);
        }
    }

    #[test]
    fn split_root_fqdn_and_creation_time() {
        let yaml = "apiVersion: split.smi-spec.io/v1alpha1\nkind: TrafficSplit\nmetadata:\n  name: s\n\
                    \x20 namespace: payments\n  creationTimestamp: '2024-05-01T10:00:00Z'\n\
                    spec:\n  service: payment-svc.payments.svc.cluster.local\n  backends: [{service: v1, weight: 1}]\n";
        let s = parse_split(yaml);
        assert_eq!(s.root_service, "payment-svc");
        assert_eq!(s.created.as_deref(), Some("2024-05-01T10:00:00Z"));
    }

    #[test]
    fn split_matches_from_v1alpha3() {
        for version in ["v1alpha3", "v1alpha4"] {
            let s = parse_split(&split_yaml(
                version,
                "  service: web\n  matches: [{kind: HTTPRouteGroup, name: ab-test}, {kind: TCPRoute, name: db}]\n\
                 \x20 backends: [{service: web-v2, weight: 100}]\n",
            ));
            assert_eq!(
                s.matches,
                vec![
                    RouteRef { kind: Kind::HttpRouteGroup, name: "ab-test".into(), matches: vec![] },
                    RouteRef { kind: Kind::TcpRoute, name: "db".into(), matches: vec![] },
                ],
                "{version}"
            );
        }
    }

    #[test]
    fn split_errors() {
        let ok_backends = "  backends: [{service: v1, weight: 1}]\n";
        let cases: &[(&str, &str, String, &str, &str)] = &[
            ("no service", "v1alpha2", ok_backends.to_string(), "spec.service", "is required"),
            ("no backends", "v1alpha2", "  service: web\n".into(), "spec.backends", "is required"),
            (
                "empty backends",
                "v1alpha2",
                "  service: web\n  backends: []\n".into(),
                "spec.backends",
                "at least one backend",
            ),
            (
                "backend without service",
                "v1alpha2",
                "  service: web\n  backends: [{weight: 1}]\n".into(),
                "spec.backends[0].service",
                "is required",
            ),
            (
                "backend without weight",
                "v1alpha2",
                "  service: web\n  backends: [{service: a}]\n".into(),
                "spec.backends[0].weight",
                "is required",
            ),
            (
                "negative v1alpha2",
                "v1alpha2",
                "  service: web\n  backends: [{service: a, weight: 1}, {service: b, weight: -5}]\n".into(),
                "spec.backends[1].weight",
                "must not be negative (got -5)",
            ),
            (
                "fraction v1alpha2",
                "v1alpha2",
                "  service: web\n  backends: [{service: a, weight: 0.5}]\n".into(),
                "spec.backends[0].weight",
                "must be a whole number",
            ),
            (
                "string v1alpha3",
                "v1alpha3",
                "  service: web\n  backends: [{service: a, weight: '50'}]\n".into(),
                "spec.backends[0].weight",
                "must be a number, not a string",
            ),
            (
                "quantity in v1alpha4",
                "v1alpha4",
                "  service: web\n  backends: [{service: a, weight: 500m}]\n".into(),
                "spec.backends[0].weight",
                "must be a number, not a string",
            ),
            (
                "negative quantity",
                "v1alpha1",
                "  service: web\n  backends: [{service: a, weight: -500m}]\n".into(),
                "spec.backends[0].weight",
                "must not be negative",
            ),
            (
                "negative int quantity",
                "v1alpha1",
                "  service: web\n  backends: [{service: a, weight: -1}]\n".into(),
                "spec.backends[0].weight",
                "must not be negative",
            ),
            (
                "non-numeric quantity",
                "v1alpha1",
                "  service: web\n  backends: [{service: a, weight: lots}]\n".into(),
                "spec.backends[0].weight",
                "must be a Kubernetes quantity",
            ),
            (
                "sub-milli quantity",
                "v1alpha1",
                "  service: web\n  backends: [{service: a, weight: 1u}]\n".into(),
                "spec.backends[0].weight",
                "whole number of thousandths",
            ),
            (
                "bool weight",
                "v1alpha1",
                "  service: web\n  backends: [{service: a, weight: true}]\n".into(),
                "spec.backends[0].weight",
                "must be a Kubernetes quantity",
            ),
            (
                "duplicate backend",
                "v1alpha2",
                "  service: web\n  backends: [{service: a, weight: 1}, {service: a, weight: 2}]\n".into(),
                "spec.backends[1].service",
                "duplicate backend \"a\" (also spec.backends[0])",
            ),
            (
                "matches in v1alpha2",
                "v1alpha2",
                format!("  service: web\n  matches: [{{kind: HTTPRouteGroup, name: r}}]\n{ok_backends}"),
                "spec.matches",
                "requires split.smi-spec.io/v1alpha3 or later",
            ),
            (
                "matches in v1alpha1",
                "v1alpha1",
                format!("  service: web\n  matches: []\n{ok_backends}"),
                "spec.matches",
                "requires split.smi-spec.io/v1alpha3",
            ),
            (
                "bad match kind",
                "v1alpha3",
                format!("  service: web\n  matches: [{{kind: Ingress, name: r}}]\n{ok_backends}"),
                "spec.matches[0].kind",
                "must be HTTPRouteGroup or TCPRoute",
            ),
            (
                "root in another namespace",
                "v1alpha1",
                format!("  service: web.other.svc.cluster.local\n{ok_backends}"),
                "spec.service",
                "is in namespace \"other\"",
            ),
            (
                "bad service name",
                "v1alpha2",
                format!("  service: Web\n{ok_backends}"),
                "spec.service",
                "DNS-1035 label",
            ),
        ];
        for (name, version, spec, field, reason) in cases {
            assert_refused(name, &split_yaml(version, spec), field, reason);
        }
    }

    fn routes_yaml(version: &str, body: &str) -> String {
        format!(
            "apiVersion: specs.smi-spec.io/{version}\nkind: HTTPRouteGroup\nmetadata: {{name: routes, namespace: shop}}\n{body}"
        )
    }

    fn parse_routes(yaml: &str) -> HttpRouteGroup {
        match parse_one(yaml) {
            Ok(Object::HttpRouteGroup(g)) => g,
            other => panic!("not a route group: {other:?}"),
        }
    }

    #[test]
    fn http_route_group_per_version() {
        let top = "matches:\n- name: metrics\n  pathRegex: /metrics\n  methods: [GET]\n\
                   - name: android\n  headers:\n  - user-agent: '.*Android.*'\n  - Cookie: '^type=insider$'\n";
        let spec = "spec:\n  matches:\n  - name: metrics\n    pathRegex: /metrics\n    methods: [GET]\n\
                    \x20 - name: android\n    headers:\n      user-agent: '.*Android.*'\n      Cookie: '^type=insider$'\n";
        let want = vec![
            HttpMatch {
                name: "metrics".into(),
                path_regex: Some("/metrics".into()),
                methods: vec!["GET".into()],
                headers: BTreeMap::new(),
            },
            HttpMatch {
                name: "android".into(),
                path_regex: None,
                methods: vec![],
                headers: [("cookie", "^type=insider$"), ("user-agent", ".*Android.*")]
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            },
        ];
        for (version, body) in [("v1alpha1", top), ("v1alpha2", top), ("v1alpha3", spec), ("v1alpha4", spec)]
        {
            let g = parse_routes(&routes_yaml(version, body));
            assert_eq!(g.key, Key::new("shop", "routes"));
            assert_eq!(g.matches, want, "{version}");
        }
        // The list form of headers is read in later versions too, the mapping form in earlier ones.
        let g =
            parse_routes(&routes_yaml("v1alpha4", "spec:\n  matches: [{name: a, headers: [{x-a: '1'}]}]\n"));
        assert_eq!(g.matches[0].headers.get("x-a").map(String::as_str), Some("1"));
        let g = parse_routes(&routes_yaml(
            "v1alpha2",
            "matches: [{name: a, headers: {x-a: '1'}, methods: ['*']}]\n",
        ));
        assert_eq!(g.matches[0].headers.get("x-a").map(String::as_str), Some("1"));
        assert_eq!(g.matches[0].methods, vec!["*".to_string()]);
        assert!(parse_routes(&routes_yaml("v1alpha3", "spec: {}\n")).matches.is_empty());
    }

    #[test]
    fn http_route_group_errors() {
        let cases: &[(&str, &str, &str, &str, &str)] = &[
            (
                "matches under spec in v1alpha1",
                "v1alpha1",
                "spec: {matches: [{name: a}]}\n",
                "spec.matches",
                "is at the top level, not under spec",
            ),
            (
                "matches at top in v1alpha4",
                "v1alpha4",
                "matches: [{name: a}]\n",
                "matches",
                "belongs under spec",
            ),
            (
                "match without name",
                "v1alpha4",
                "spec: {matches: [{pathRegex: /}]}\n",
                "spec.matches[0].name",
                "is required",
            ),
            (
                "duplicate match name",
                "v1alpha4",
                "spec: {matches: [{name: a}, {name: a}]}\n",
                "spec.matches[1].name",
                "duplicate match name \"a\"",
            ),
            (
                "bad method",
                "v1alpha4",
                "spec: {matches: [{name: a, methods: ['GET /']}]}\n",
                "spec.matches[0].methods[0]",
                "must be an HTTP method",
            ),
            (
                "header value not a string",
                "v1alpha4",
                "spec: {matches: [{name: a, headers: {x-a: 1}}]}\n",
                "spec.matches[0].headers[\"x-a\"]",
                "must be a string",
            ),
            (
                "header twice",
                "v1alpha2",
                "matches: [{name: a, headers: [{x-a: '1'}, {X-A: '2'}]}]\n",
                "matches[0].headers[1][\"X-A\"]",
                "matched twice",
            ),
            (
                "bad header name",
                "v1alpha4",
                "spec: {matches: [{name: a, headers: {'x a': '1'}}]}\n",
                "spec.matches[0].headers[\"x a\"]",
                "not a valid header name",
            ),
            (
                "path not a string",
                "v1alpha4",
                "spec: {matches: [{name: a, pathRegex: [a]}]}\n",
                "spec.matches[0].pathRegex",
                "must be a string",
            ),
            (
                "path regex with look-ahead",
                "v1alpha4",
                "spec: {matches: [{name: a, pathRegex: '/pay(?=ments)'}]}\n",
                "spec.matches[0].pathRegex",
                "not a valid RE2 regular expression",
            ),
            (
                "header regex unbalanced",
                "v1alpha4",
                "spec: {matches: [{name: a, headers: {x-beta: '(yes'}}]}\n",
                "spec.matches[0].headers[\"x-beta\"]",
                "not a valid RE2 regular expression",
            ),
        ];
        for (name, version, body, field, reason) in cases {
            assert_refused(name, &routes_yaml(version, body), field, reason);
        }
    }

    fn tcp_yaml(version: &str, body: &str) -> String {
        format!("apiVersion: specs.smi-spec.io/{version}\nkind: TCPRoute\nmetadata: {{name: db}}\n{body}")
    }

    #[test]
    fn tcp_route_ports() {
        let cases: &[(&str, &str, &[u16])] = &[
            ("v1alpha1", "", &[]),
            ("v1alpha3", "spec: {}\n", &[]),
            ("v1alpha4", "spec: {matches: {ports: [3306, 6446]}}\n", &[3306, 6446]),
            ("v1alpha4", "spec: {matches: {ports: []}}\n", &[]),
            ("v1alpha4", "spec: {}\n", &[]),
        ];
        for (version, body, want) in cases {
            let got = parse_one(&tcp_yaml(version, body)).unwrap();
            assert_eq!(
                got,
                Object::TcpRoute(TcpRoute { key: Key::new("default", "db"), ports: want.to_vec() }),
                "{version} {body}"
            );
        }
        assert_refused(
            "ports before v1alpha4",
            &tcp_yaml("v1alpha3", "spec: {matches: {ports: [1]}}\n"),
            "spec.matches",
            "requires specs.smi-spec.io/v1alpha4",
        );
        assert_refused(
            "port range",
            &tcp_yaml("v1alpha4", "spec: {matches: {ports: [0]}}\n"),
            "spec.matches.ports[0]",
            "between 1 and 65535",
        );
        assert_refused(
            "duplicate port",
            &tcp_yaml("v1alpha4", "spec: {matches: {ports: [1, 1]}}\n"),
            "spec.matches.ports[1]",
            "duplicate port 1",
        );
    }

    fn target_yaml(version: &str, body: &str) -> String {
        format!(
            "apiVersion: access.smi-spec.io/{version}\nkind: TrafficTarget\nmetadata: {{name: t, namespace: shop}}\n{body}"
        )
    }

    #[test]
    fn traffic_target_per_version() {
        let v1 = "destination: {kind: ServiceAccount, name: api}\n\
                  specs: [{kind: HTTPRouteGroup, name: routes, matches: [metrics]}]\n\
                  sources: [{kind: ServiceAccount, name: prometheus, namespace: monitoring}, {kind: ServiceAccount, name: web}]\n";
        let v2 = "spec:\n  destination: {kind: ServiceAccount, name: api}\n\
                  \x20 rules: [{kind: HTTPRouteGroup, name: routes, matches: [metrics]}]\n\
                  \x20 sources: [{kind: ServiceAccount, name: prometheus, namespace: monitoring}, {kind: ServiceAccount, name: web}]\n";
        let want = TrafficTarget {
            key: Key::new("shop", "t"),
            destination: IdentityRef { namespace: "shop".into(), name: "api".into() },
            sources: vec![
                IdentityRef { namespace: "monitoring".into(), name: "prometheus".into() },
                IdentityRef { namespace: "shop".into(), name: "web".into() },
            ],
            rules: vec![RouteRef {
                kind: Kind::HttpRouteGroup,
                name: "routes".into(),
                matches: vec!["metrics".into()],
            }],
        };
        for (version, body) in [("v1alpha1", v1), ("v1alpha2", v2), ("v1alpha3", v2)] {
            assert_eq!(
                parse_one(&target_yaml(version, body)).unwrap(),
                Object::TrafficTarget(want.clone()),
                "{version}"
            );
        }
        let tcp = parse_one(&target_yaml(
            "v1alpha3",
            "spec: {destination: {kind: ServiceAccount, name: db}, rules: [{kind: TCPRoute, name: db}]}\n",
        ))
        .unwrap();
        let Object::TrafficTarget(tcp) = tcp else { panic!("not a target") };
        assert!(tcp.sources.is_empty());
        assert_eq!(tcp.rules[0].kind, Kind::TcpRoute);
    }

    #[test]
    fn traffic_target_errors() {
        let dest = "destination: {kind: ServiceAccount, name: api}";
        let cases: &[(&str, &str, String, &str, &str)] = &[
            (
                "no destination v2",
                "v1alpha2",
                "spec: {sources: []}\n".into(),
                "spec.destination",
                "is required",
            ),
            ("no destination v1", "v1alpha1", "sources: []\n".into(), "destination", "is required"),
            ("v1 shape in v1alpha3", "v1alpha3", format!("{dest}\n"), "destination", "belongs under spec"),
            (
                "v2 shape in v1alpha1",
                "v1alpha1",
                format!("spec: {{{dest}}}\n"),
                "spec.destination",
                "is at the top level",
            ),
            (
                "rules at the top level in v1alpha2",
                "v1alpha2",
                format!("spec: {{{dest}}}\nrules: []\n"),
                "rules",
                "belongs under spec",
            ),
            (
                "destination kind",
                "v1alpha2",
                "spec: {destination: {kind: User, name: api}}\n".into(),
                "spec.destination.kind",
                "must be ServiceAccount (got \"User\")",
            ),
            (
                "destination kind missing",
                "v1alpha2",
                "spec: {destination: {name: api}}\n".into(),
                "spec.destination.kind",
                "is required",
            ),
            (
                "destination port",
                "v1alpha1",
                "destination: {kind: ServiceAccount, name: api, port: 8080}\n".into(),
                "destination.port",
                "not supported by weft",
            ),
            (
                "source kind",
                "v1alpha2",
                format!("spec: {{{dest}, sources: [{{kind: Group, name: x}}]}}\n"),
                "spec.sources[0].kind",
                "must be ServiceAccount",
            ),
            (
                "source name",
                "v1alpha2",
                format!("spec: {{{dest}, sources: [{{kind: ServiceAccount}}]}}\n"),
                "spec.sources[0].name",
                "is required",
            ),
            (
                "rule kind",
                "v1alpha3",
                format!("spec: {{{dest}, rules: [{{kind: UDPRoute, name: x}}]}}\n"),
                "spec.rules[0].kind",
                "must be HTTPRouteGroup or TCPRoute",
            ),
            (
                "rule matches",
                "v1alpha3",
                format!("spec: {{{dest}, rules: [{{kind: HTTPRouteGroup, name: x, matches: [1]}}]}}\n"),
                "spec.rules[0].matches[0]",
                "must be a string",
            ),
        ];
        for (name, version, body, field, reason) in cases {
            assert_refused(name, &target_yaml(version, body), field, reason);
        }
    }
}
