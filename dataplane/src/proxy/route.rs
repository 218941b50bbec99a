//! Request matching, pure: authority -> virtual host (Envoy's order), request
//! -> first matching route, and the weighted pick of a cluster.

use std::collections::HashMap;

use http::HeaderMap;

use crate::config::{HeaderMatch, PathMatch, Route, RouteTable, StringMatch, VirtualHost, WeightedCluster};

/// A route table's domains, indexed once per config so that a request finds
/// its virtual host with one hash lookup in the common (exact) case.
#[derive(Debug, Default)]
pub(crate) struct DomainIndex {
    /// Exact domains (lowercase) to virtual host index; the first wins.
    exact: HashMap<String, usize>,
    /// `*.b` wildcards as (`.b`, index), longest suffix first.
    suffixes: Vec<(String, usize)>,
    /// `a.*` wildcards as (`a.`, index), longest prefix first.
    prefixes: Vec<(String, usize)>,
    /// The first `*` virtual host.
    any: Option<usize>,
}

impl DomainIndex {
    /// Indexes the domains of `virtual_hosts`.
    pub(crate) fn new(virtual_hosts: &[VirtualHost]) -> DomainIndex {
        let mut index = DomainIndex::default();
        for (i, vh) in virtual_hosts.iter().enumerate() {
            for domain in &vh.domains {
                let domain = domain.to_ascii_lowercase();
                if domain == "*" {
                    index.any.get_or_insert(i);
                } else if let Some(suffix) = domain.strip_prefix('*') {
                    index.suffixes.push((suffix.to_owned(), i));
                } else if let Some(prefix) = domain.strip_suffix('*') {
                    index.prefixes.push((prefix.to_owned(), i));
                } else {
                    index.exact.entry(domain).or_insert(i);
                }
            }
        }
        // Stable sorts keep config order among equal lengths.
        index.suffixes.sort_by_key(|(s, _)| std::cmp::Reverse(s.len()));
        index.prefixes.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
        index
    }

    /// The virtual host for `authority`, case-insensitive: exact, then the
    /// longest suffix wildcard, then the longest prefix wildcard, then `*`.
    /// A wildcard matches at least one character.
    pub(crate) fn find(&self, authority: &str) -> Option<usize> {
        let exact = if authority.bytes().any(|b| b.is_ascii_uppercase()) {
            self.exact.get(&authority.to_ascii_lowercase())
        } else {
            self.exact.get(authority)
        };
        if let Some(&i) = exact {
            return Some(i);
        }
        let len = authority.len();
        for (suffix, i) in &self.suffixes {
            if len > suffix.len()
                && authority.is_char_boundary(len - suffix.len())
                && authority[len - suffix.len()..].eq_ignore_ascii_case(suffix)
            {
                return Some(*i);
            }
        }
        for (prefix, i) in &self.prefixes {
            if len > prefix.len()
                && authority.is_char_boundary(prefix.len())
                && authority[..prefix.len()].eq_ignore_ascii_case(prefix)
            {
                return Some(*i);
            }
        }
        self.any
    }
}

/// A route table with its domain index.
#[derive(Debug)]
pub(crate) struct IndexedTable {
    /// The table.
    pub(crate) table: std::sync::Arc<RouteTable>,
    /// Its domains.
    pub(crate) index: DomainIndex,
}

impl IndexedTable {
    /// Indexes `table`.
    pub(crate) fn new(table: std::sync::Arc<RouteTable>) -> IndexedTable {
        let index = DomainIndex::new(&table.virtual_hosts);
        IndexedTable { table, index }
    }

    /// The first route of the matching virtual host that matches `request`.
    pub(crate) fn route(&self, request: &RequestView<'_>) -> Option<&Route> {
        let vh = &self.table.virtual_hosts[self.index.find(request.authority)?];
        vh.routes.iter().find(|route| route_matches(route, request))
    }
}

/// What route matching reads of a request.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RequestView<'a> {
    /// Method.
    pub(crate) method: &'a str,
    /// Authority (absolute-form URI authority, `:authority` or `Host`).
    pub(crate) authority: &'a str,
    /// Path without the query.
    pub(crate) path: &'a str,
    /// Path and query, for `:path` header matchers.
    pub(crate) path_and_query: &'a str,
    /// Headers.
    pub(crate) headers: &'a HeaderMap,
}

/// Whether `route` matches `request`: its path and every header condition.
pub(crate) fn route_matches(route: &Route, request: &RequestView<'_>) -> bool {
    let path_ok = match &route.path {
        PathMatch::Prefix(prefix) => request.path.starts_with(prefix.as_str()),
        PathMatch::Exact(path) => request.path == path,
        PathMatch::Regex(re) => full_match(re, request.path),
    };
    path_ok && route.headers.iter().all(|h| header_matches(h, request))
}

pub(crate) fn header_matches(matcher: &HeaderMatch, request: &RequestView<'_>) -> bool {
    let matched = match matcher.name.as_str() {
        ":method" => string_matches(&matcher.value, Some(request.method)),
        ":authority" | "host" => string_matches(&matcher.value, Some(request.authority)),
        ":path" => string_matches(&matcher.value, Some(request.path_and_query)),
        name => {
            let mut values = request.headers.get_all(name).iter();
            match (values.next(), values.next()) {
                (None, _) => string_matches(&matcher.value, None),
                (Some(one), None) => string_matches(&matcher.value, Some(header_str(one))),
                // Envoy matches the values of a repeated header joined by commas.
                (Some(_), Some(_)) => {
                    let joined: Vec<&str> = request.headers.get_all(name).iter().map(header_str).collect();
                    string_matches(&matcher.value, Some(&joined.join(",")))
                }
            }
        }
    };
    matched != matcher.invert
}

fn header_str(value: &http::HeaderValue) -> &str {
    // Non-UTF-8 values match nothing but presence.
    std::str::from_utf8(value.as_bytes()).unwrap_or("\u{fffd}")
}

pub(crate) fn string_matches(condition: &StringMatch, value: Option<&str>) -> bool {
    match (condition, value) {
        (StringMatch::Present(present), v) => v.is_some() == *present,
        (_, None) => false,
        (StringMatch::Exact(s), Some(v)) => v == s,
        (StringMatch::Prefix(s), Some(v)) => v.starts_with(s.as_str()),
        (StringMatch::Suffix(s), Some(v)) => v.ends_with(s.as_str()),
        (StringMatch::Contains(s), Some(v)) => v.contains(s.as_str()),
        (StringMatch::Regex(re), Some(v)) => full_match(re, v),
    }
}

/// RE2 `FullMatch`: the regex must match the whole string. The config
/// compiles regexes anchored (`^(?:...)$`); the span check keeps an
/// unanchored one from matching a substring.
fn full_match(re: &regex::Regex, s: &str) -> bool {
    re.find(s).is_some_and(|m| m.start() == 0 && m.end() == s.len())
}

/// The cluster that a draw `r` in `0..total_weight(clusters)` falls on.
pub(crate) fn pick_weighted(clusters: &[WeightedCluster], mut r: u64) -> Option<&WeightedCluster> {
    for cluster in clusters {
        let weight = u64::from(cluster.weight);
        if r < weight {
            return Some(cluster);
        }
        r -= weight;
    }
    None
}

/// The sum of the weights.
pub(crate) fn total_weight(clusters: &[WeightedCluster]) -> u64 {
    clusters.iter().map(|c| u64::from(c.weight)).sum()
}

/// A random weighted pick; the only cluster without drawing when there is one.
pub(crate) fn pick_cluster(clusters: &[WeightedCluster]) -> Option<&WeightedCluster> {
    match clusters {
        [] => None,
        [only] => Some(only),
        _ => {
            let total = total_weight(clusters);
            if total == 0 {
                return clusters.first();
            }
            pick_weighted(clusters, rand::random_range(0..total))
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::config::Action;
    use bytes::Bytes;

    fn vh(name: &str, domains: &[&str]) -> VirtualHost {
        VirtualHost {
            name: name.into(),
            domains: domains.iter().map(|d| d.to_string()).collect(),
            routes: vec![],
        }
    }

    #[test]
    fn domains_follow_envoy_precedence() {
        let hosts = vec![
            vh("any", &["*"]),
            vh("prefix", &["api.*"]),
            vh("short-suffix", &["*.com"]),
            vh("long-suffix", &["*.example.com"]),
            vh("exact", &["www.example.com", "web:80"]),
            vh("longer-prefix", &["api.example.*"]),
        ];
        let index = DomainIndex::new(&hosts);
        let name = |host: &str| index.find(host).map(|i| hosts[i].name.as_str());
        for (host, want) in [
            ("www.example.com", "exact"),
            ("WWW.Example.COM", "exact"),
            ("web:80", "exact"),
            ("web", "any"),
            ("a.example.com", "long-suffix"),
            ("a.b.example.com", "long-suffix"),
            ("example.com", "short-suffix"),
            ("x.com", "short-suffix"),
            (".com", "any"),
            ("api.example.org", "longer-prefix"),
            ("api.other", "prefix"),
            ("API.other", "prefix"),
            ("api.", "any"),
            ("", "any"),
            ("other", "any"),
        ] {
            assert_eq!(name(host), Some(want), "host {host:?}");
        }
    }

    #[test]
    fn no_virtual_host_without_a_star() {
        let hosts = vec![vh("exact", &["a"])];
        assert_eq!(DomainIndex::new(&hosts).find("b"), None);
    }

    fn route(name: &str, path: PathMatch, headers: Vec<HeaderMatch>) -> Route {
        Route { name: name.into(), path, headers, action: Action::Direct { status: 200, body: Bytes::new() } }
    }

    fn header(name: &str, value: StringMatch, invert: bool) -> HeaderMatch {
        HeaderMatch { name: name.into(), value, invert }
    }

    fn re(s: &str) -> regex::Regex {
        regex::Regex::new(s).unwrap()
    }

    #[test]
    fn routes_match_path_headers_and_method() {
        let mut headers = HeaderMap::new();
        headers.insert("x-canary", "yes".parse().unwrap());
        headers.append("x-multi", "a".parse().unwrap());
        headers.append("x-multi", "b".parse().unwrap());
        let request = RequestView {
            method: "POST",
            authority: "web:80",
            path: "/api/v1/users",
            path_and_query: "/api/v1/users?id=1",
            headers: &headers,
        };
        let cases = [
            (route("prefix", PathMatch::Prefix("/api".into()), vec![]), true),
            (route("prefix-miss", PathMatch::Prefix("/apx".into()), vec![]), false),
            (route("exact", PathMatch::Exact("/api/v1/users".into()), vec![]), true),
            (route("exact-ignores-query", PathMatch::Exact("/api/v1/users?id=1".into()), vec![]), false),
            (route("regex", PathMatch::Regex(re("/api/v[0-9]+/.*")), vec![]), true),
            (route("regex-is-anchored", PathMatch::Regex(re("v1")), vec![]), false),
            (route("regex-alternation-full", PathMatch::Regex(re("^(?:/api|/api/v1/users)$")), vec![]), true),
            (
                route(
                    "method",
                    PathMatch::Prefix("/".into()),
                    vec![header(":method", StringMatch::Exact("POST".into()), false)],
                ),
                true,
            ),
            (
                route(
                    "method-miss",
                    PathMatch::Prefix("/".into()),
                    vec![header(":method", StringMatch::Exact("GET".into()), false)],
                ),
                false,
            ),
            (
                route(
                    "header",
                    PathMatch::Prefix("/".into()),
                    vec![header("x-canary", StringMatch::Exact("yes".into()), false)],
                ),
                true,
            ),
            (
                route(
                    "header-inverted",
                    PathMatch::Prefix("/".into()),
                    vec![header("x-canary", StringMatch::Exact("yes".into()), true)],
                ),
                false,
            ),
            (
                route(
                    "absent-header",
                    PathMatch::Prefix("/".into()),
                    vec![header("x-none", StringMatch::Exact("".into()), false)],
                ),
                false,
            ),
            (
                route(
                    "present",
                    PathMatch::Prefix("/".into()),
                    vec![header("x-canary", StringMatch::Present(true), false)],
                ),
                true,
            ),
            (
                route(
                    "not-present",
                    PathMatch::Prefix("/".into()),
                    vec![header("x-none", StringMatch::Present(false), false)],
                ),
                true,
            ),
            (
                route(
                    "suffix",
                    PathMatch::Prefix("/".into()),
                    vec![header("x-canary", StringMatch::Suffix("es".into()), false)],
                ),
                true,
            ),
            (
                route(
                    "contains",
                    PathMatch::Prefix("/".into()),
                    vec![header(":path", StringMatch::Contains("id=".into()), false)],
                ),
                true,
            ),
            (
                route(
                    "joined",
                    PathMatch::Prefix("/".into()),
                    vec![header("x-multi", StringMatch::Exact("a,b".into()), false)],
                ),
                true,
            ),
            (
                route(
                    "authority-regex",
                    PathMatch::Prefix("/".into()),
                    vec![header(":authority", StringMatch::Regex(re("web:[0-9]+")), false)],
                ),
                true,
            ),
            (
                route(
                    "all-headers",
                    PathMatch::Prefix("/".into()),
                    vec![
                        header("x-canary", StringMatch::Present(true), false),
                        header(":method", StringMatch::Prefix("G".into()), false),
                    ],
                ),
                false,
            ),
        ];
        for (route, want) in cases {
            assert_eq!(route_matches(&route, &request), want, "route {}", route.name);
        }
    }

    #[test]
    fn first_matching_route_of_the_virtual_host_wins() {
        let table = RouteTable {
            name: "t".into(),
            virtual_hosts: vec![VirtualHost {
                name: "web".into(),
                domains: vec!["web".into()],
                routes: vec![
                    route("specific", PathMatch::Prefix("/a".into()), vec![]),
                    route("catch-all", PathMatch::Prefix("/".into()), vec![]),
                    route("shadowed", PathMatch::Prefix("/a".into()), vec![]),
                ],
            }],
        };
        let table = IndexedTable::new(std::sync::Arc::new(table));
        let headers = HeaderMap::new();
        let view = |authority, path| RequestView {
            method: "GET",
            authority,
            path,
            path_and_query: path,
            headers: &headers,
        };
        assert_eq!(table.route(&view("web", "/a/b")).map(|r| r.name.as_str()), Some("specific"));
        assert_eq!(table.route(&view("web", "/b")).map(|r| r.name.as_str()), Some("catch-all"));
        assert!(table.route(&view("other", "/a")).is_none());
    }

    #[test]
    fn weighted_pick_covers_each_cluster_in_proportion() {
        let clusters = vec![
            WeightedCluster { name: "v1".into(), weight: 90 },
            WeightedCluster { name: "v2".into(), weight: 10 },
            WeightedCluster { name: "v3".into(), weight: 0 },
        ];
        let total = total_weight(&clusters);
        assert_eq!(total, 100);
        let mut counts = HashMap::new();
        for r in 0..total {
            *counts.entry(pick_weighted(&clusters, r).unwrap().name.as_str()).or_insert(0) += 1;
        }
        assert_eq!(counts.get("v1"), Some(&90));
        assert_eq!(counts.get("v2"), Some(&10));
        assert_eq!(counts.get("v3"), None);
        assert!(pick_weighted(&clusters, total).is_none());
    }

    #[test]
    fn random_weighted_pick_is_close_to_the_weights() {
        let clusters = vec![
            WeightedCluster { name: "a".into(), weight: 3 },
            WeightedCluster { name: "b".into(), weight: 1 },
        ];
        let n = 20_000;
        let a = (0..n).filter(|_| pick_cluster(&clusters).unwrap().name == "a").count();
        let share = a as f64 / n as f64;
        assert!((share - 0.75).abs() < 0.02, "share of a: {share}");
    }
}
