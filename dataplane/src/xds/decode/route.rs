//! Route tables (RDS, or inline in an HTTP connection manager): virtual hosts
//! by domain, routes by path and headers, and what each route does.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use regex::Regex;
use weft_xds_protos::envoy::config::core::v3::{DataSource, data_source};
use weft_xds_protos::envoy::config::route::v3::{
    DirectResponseAction, HeaderMatcher, RetryPolicy as XdsRetryPolicy, Route as XdsRoute, RouteAction,
    RouteConfiguration, RouteMatch, VirtualHost as XdsVirtualHost, WeightedCluster as XdsWeightedCluster,
    header_matcher::HeaderMatchSpecifier, route, route_action, route_match, weighted_cluster,
};
use weft_xds_protos::envoy::r#type::matcher::v3::{
    RegexMatcher, StringMatcher, string_matcher::MatchPattern,
};

use super::{Notes, duration, ignored, unsupported};
use crate::config::{
    Action, Forward, HeaderMatch, PathMatch, RetryPolicy, Route, RouteTable, StringMatch, VirtualHost,
    WeightedCluster,
};
use crate::xds::error::{At, FieldError};

/// Envoy's route timeout when a route sets none.
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15);

/// The retry conditions weft-proxy implements.
const RETRY_ON: &str = "5xx, gateway-error, connect-failure, reset, retriable-status-codes";

/// Validates a RouteConfiguration.
pub(crate) fn route_table(rc: &RouteConfiguration, notes: &mut Notes) -> Result<RouteTable, FieldError> {
    unsupported!(
        rc,
        [
            vhds,
            request_headers_to_add,
            request_headers_to_remove,
            response_headers_to_add,
            response_headers_to_remove,
            cluster_specifier_plugins,
            request_mirror_policies,
            vhost_header,
            ignore_port_in_host_matching,
            ignore_path_parameters_in_path_matching,
            route_specifiers,
        ]
    );
    ignored!(
        notes,
        rc,
        "RouteConfiguration",
        [
            internal_only_headers,
            most_specific_header_mutations_wins,
            validate_clusters,
            max_direct_response_body_size_bytes,
            typed_per_filter_config,
            metadata,
        ]
    );
    // Envoy refuses a domain claimed by two virtual hosts.
    let mut claimed: HashMap<String, String> = HashMap::new();
    let virtual_hosts = rc
        .virtual_hosts
        .iter()
        .enumerate()
        .map(|(i, vh)| virtual_host(vh, &mut claimed, notes).at_index("virtual_hosts", i))
        .collect::<Result<_, _>>()?;
    Ok(RouteTable { name: rc.name.clone(), virtual_hosts })
}

fn virtual_host(
    vh: &XdsVirtualHost,
    claimed: &mut HashMap<String, String>,
    notes: &mut Notes,
) -> Result<VirtualHost, FieldError> {
    unsupported!(
        vh,
        [
            matcher,
            require_tls,
            rate_limits,
            request_headers_to_add,
            request_headers_to_remove,
            response_headers_to_add,
            response_headers_to_remove,
            cors,
            retry_policy_typed_config,
            hedge_policy,
            request_mirror_policies,
            route_specifiers,
        ]
    );
    ignored!(
        notes,
        vh,
        "VirtualHost",
        [
            virtual_clusters,
            typed_per_filter_config,
            include_request_attempt_count,
            include_attempt_count_in_response,
            include_is_timeout_retry_header,
            per_request_buffer_limit_bytes,
            request_body_buffer_limit,
            metadata,
        ]
    );
    if vh.name.is_empty() {
        return Err(FieldError::required("name"));
    }
    if vh.domains.is_empty() {
        return Err(FieldError::new("domains", "at least one domain is required"));
    }
    let mut domains = Vec::with_capacity(vh.domains.len());
    for (i, d) in vh.domains.iter().enumerate() {
        let d = domain(d).at_index("domains", i)?;
        if let Some(other) = claimed.insert(d.clone(), vh.name.clone()) {
            let reason = format!("{d:?} is also a domain of virtual host {other:?}");
            return Err(FieldError::new(format!("domains[{i}]"), reason));
        }
        domains.push(d);
    }
    let vh_retry = match &vh.retry_policy {
        Some(p) => retry_policy(p, notes).at("retry_policy")?,
        None => None,
    };
    let routes = vh
        .routes
        .iter()
        .enumerate()
        .map(|(i, r)| route(r, i, vh_retry.as_ref(), notes).at_index("routes", i))
        .collect::<Result<_, _>>()?;
    Ok(VirtualHost { name: vh.name.clone(), domains, routes })
}

/// A domain in Envoy syntax, lowercased: `*`, `*suffix`, `prefix*` or exact.
fn domain(d: &str) -> Result<String, FieldError> {
    let stars = d.matches('*').count();
    let ok =
        !d.is_empty() && (stars == 0 || d == "*" || (stars == 1 && (d.starts_with('*') || d.ends_with('*'))));
    if !ok {
        return Err(FieldError::new(
            "",
            format!("{d:?} is not a domain (a wildcard may only lead or trail)"),
        ));
    }
    Ok(d.to_ascii_lowercase())
}

fn route(
    r: &XdsRoute,
    index: usize,
    vh_retry: Option<&RetryPolicy>,
    notes: &mut Notes,
) -> Result<Route, FieldError> {
    unsupported!(
        r,
        [
            request_headers_to_add,
            request_headers_to_remove,
            response_headers_to_add,
            response_headers_to_remove,
            route_specifiers,
        ]
    );
    ignored!(
        notes,
        r,
        "Route",
        [
            metadata,
            decorator,
            typed_per_filter_config,
            tracing,
            per_request_buffer_limit_bytes,
            request_body_buffer_limit,
        ]
    );
    // `stat_prefix` is not ignored: it names a route's stats, and weft-proxy's per-route series
    // are labelled with the route name, which weft's control plane also sets as the prefix.
    let m = r.r#match.as_ref().ok_or_else(|| FieldError::required("match"))?;
    let (path, headers) = route_match(m).at("match")?;
    let action = match &r.action {
        Some(route::Action::Route(ra)) => Action::Forward(forward(ra, vh_retry, notes).at("route")?),
        Some(route::Action::DirectResponse(d)) => direct(d).at("direct_response")?,
        Some(route::Action::Redirect(_)) => return Err(FieldError::unsupported("redirect")),
        Some(route::Action::FilterAction(_)) => return Err(FieldError::unsupported("filter_action")),
        Some(route::Action::NonForwardingAction(_)) => {
            return Err(FieldError::unsupported("non_forwarding_action"));
        }
        None => return Err(FieldError::new("action", "one of route or direct_response is required")),
    };
    let name = if r.name.is_empty() { format!("route-{index}") } else { r.name.clone() };
    Ok(Route { name, path, headers, action })
}

fn route_match(m: &RouteMatch) -> Result<(PathMatch, Vec<HeaderMatch>), FieldError> {
    unsupported!(
        m,
        [runtime_fraction, query_parameters, cookies, tls_context, dynamic_metadata, filter_state]
    );
    if m.case_sensitive.as_ref().is_some_and(|b| !b.value) {
        return Err(FieldError::new("case_sensitive", "false is not supported by weft-proxy"));
    }
    let path = match &m.path_specifier {
        Some(route_match::PathSpecifier::Prefix(p)) => PathMatch::Prefix(p.clone()),
        Some(route_match::PathSpecifier::Path(p)) => PathMatch::Exact(p.clone()),
        Some(route_match::PathSpecifier::SafeRegex(re)) => PathMatch::Regex(regex(re).at("safe_regex")?),
        Some(route_match::PathSpecifier::ConnectMatcher(_)) => {
            return Err(FieldError::unsupported("connect_matcher"));
        }
        Some(route_match::PathSpecifier::PathSeparatedPrefix(_)) => {
            return Err(FieldError::unsupported("path_separated_prefix"));
        }
        Some(route_match::PathSpecifier::PathMatchPolicy(_)) => {
            return Err(FieldError::unsupported("path_match_policy"));
        }
        None => {
            return Err(FieldError::new("path_specifier", "one of prefix, path or safe_regex is required"));
        }
    };
    let mut headers: Vec<HeaderMatch> = m
        .headers
        .iter()
        .enumerate()
        .map(|(i, h)| header_match(h).at_index("headers", i))
        .collect::<Result<_, _>>()?;
    // `grpc: {}` matches gRPC requests: those with a gRPC content type.
    if m.grpc.is_some() {
        headers.push(HeaderMatch {
            name: "content-type".into(),
            value: StringMatch::Prefix("application/grpc".into()),
            invert: false,
        });
    }
    Ok((path, headers))
}

pub(crate) fn header_match(h: &HeaderMatcher) -> Result<HeaderMatch, FieldError> {
    if h.name.is_empty() {
        return Err(FieldError::required("name"));
    }
    if h.treat_missing_header_as_empty {
        return Err(FieldError::unsupported("treat_missing_header_as_empty"));
    }
    let value = match &h.header_match_specifier {
        Some(HeaderMatchSpecifier::ExactMatch(s)) => StringMatch::Exact(s.clone()),
        Some(HeaderMatchSpecifier::PrefixMatch(s)) => StringMatch::Prefix(s.clone()),
        Some(HeaderMatchSpecifier::SuffixMatch(s)) => StringMatch::Suffix(s.clone()),
        Some(HeaderMatchSpecifier::ContainsMatch(s)) => StringMatch::Contains(s.clone()),
        Some(HeaderMatchSpecifier::SafeRegexMatch(re)) => {
            StringMatch::Regex(regex(re).at("safe_regex_match")?)
        }
        Some(HeaderMatchSpecifier::PresentMatch(present)) => StringMatch::Present(*present),
        Some(HeaderMatchSpecifier::StringMatch(sm)) => string_match(sm).at("string_match")?,
        Some(HeaderMatchSpecifier::RangeMatch(_)) => return Err(FieldError::unsupported("range_match")),
        // Envoy: a matcher without a value matches when the header is present.
        None => StringMatch::Present(true),
    };
    Ok(HeaderMatch { name: h.name.to_ascii_lowercase(), value, invert: h.invert_match })
}

/// A StringMatcher; `ignore_case` becomes a case-insensitive regex.
pub(crate) fn string_match(sm: &StringMatcher) -> Result<StringMatch, FieldError> {
    let pattern = sm.match_pattern.as_ref().ok_or_else(|| FieldError::required("match_pattern"))?;
    type Plain = fn(String) -> StringMatch;
    let (field, literal, before, after, plain): (&str, &String, &str, &str, Plain) = match pattern {
        // Envoy ignores ignore_case for regexes.
        MatchPattern::SafeRegex(re) => return Ok(StringMatch::Regex(regex(re).at("safe_regex")?)),
        MatchPattern::Custom(_) => return Err(FieldError::unsupported("custom")),
        MatchPattern::Exact(s) => ("exact", s, "", "", StringMatch::Exact),
        MatchPattern::Prefix(s) => ("prefix", s, "", ".*", StringMatch::Prefix),
        MatchPattern::Suffix(s) => ("suffix", s, ".*", "", StringMatch::Suffix),
        MatchPattern::Contains(s) => ("contains", s, ".*", ".*", StringMatch::Contains),
    };
    if !sm.ignore_case {
        return Ok(plain(literal.clone()));
    }
    let re = format!("(?is){before}{}{after}", regex::escape(literal));
    anchored(&re).map(StringMatch::Regex).map_err(|e| FieldError::new(field, e))
}

/// A `safe_regex`, matched against the whole value as Envoy (RE2) does.
fn regex(re: &RegexMatcher) -> Result<Regex, FieldError> {
    anchored(&re.regex).map_err(|e| FieldError::new("regex", e))
}

fn anchored(pattern: &str) -> Result<Regex, String> {
    Regex::new(&format!("^(?:{pattern})$")).map_err(|e| format!("invalid regex {pattern:?}: {e}"))
}

fn forward(
    ra: &RouteAction,
    vh_retry: Option<&RetryPolicy>,
    notes: &mut Notes,
) -> Result<Forward, FieldError> {
    unsupported!(
        ra,
        [
            cluster_not_found_response_code,
            metadata_match,
            prefix_rewrite,
            regex_rewrite,
            path_rewrite_policy,
            path_rewrite,
            host_rewrite_specifier,
            request_mirror_policies,
            rate_limits,
            cors,
            upgrade_configs,
            internal_redirect_policy,
            internal_redirect_action,
            max_internal_redirects,
            hedge_policy,
            max_stream_duration,
            max_grpc_timeout,
            grpc_timeout_offset,
            retry_policy_typed_config,
        ]
    );
    ignored!(
        notes,
        ra,
        "RouteAction",
        [
            append_x_forwarded_host,
            idle_timeout,
            flush_timeout,
            early_data_policy,
            priority,
            include_vh_rate_limits,
            hash_policy,
        ]
    );
    let clusters = match &ra.cluster_specifier {
        Some(route_action::ClusterSpecifier::Cluster(name)) if !name.is_empty() => {
            vec![WeightedCluster { name: name.clone(), weight: 1 }]
        }
        Some(route_action::ClusterSpecifier::Cluster(_)) => return Err(FieldError::required("cluster")),
        Some(route_action::ClusterSpecifier::WeightedClusters(w)) => {
            weighted_clusters(w, notes).at("weighted_clusters")?
        }
        Some(route_action::ClusterSpecifier::ClusterHeader(_)) => {
            return Err(FieldError::unsupported("cluster_header"));
        }
        Some(route_action::ClusterSpecifier::ClusterSpecifierPlugin(_)) => {
            return Err(FieldError::unsupported("cluster_specifier_plugin"));
        }
        Some(route_action::ClusterSpecifier::InlineClusterSpecifierPlugin(_)) => {
            return Err(FieldError::unsupported("inline_cluster_specifier_plugin"));
        }
        None => {
            return Err(FieldError::new(
                "cluster_specifier",
                "one of cluster or weighted_clusters is required",
            ));
        }
    };
    let timeout = match &ra.timeout {
        None => Some(DEFAULT_TIMEOUT),
        // Envoy: 0 disables the timeout.
        Some(d) => Some(duration(d).at("timeout")?).filter(|d| !d.is_zero()),
    };
    let retry = match &ra.retry_policy {
        Some(p) => retry_policy(p, notes).at("retry_policy")?,
        None => vh_retry.cloned(),
    };
    Ok(Forward { clusters, timeout, retry })
}

fn weighted_clusters(w: &XdsWeightedCluster, notes: &mut Notes) -> Result<Vec<WeightedCluster>, FieldError> {
    unsupported!(w, [random_value_specifier]);
    ignored!(notes, w, "WeightedCluster", [runtime_key_prefix]);
    if w.clusters.is_empty() {
        return Err(FieldError::new("clusters", "at least one cluster is required"));
    }
    let mut out = Vec::with_capacity(w.clusters.len());
    let mut total: u64 = 0;
    for (i, c) in w.clusters.iter().enumerate() {
        let weight = cluster_weight(c, notes).at_index("clusters", i)?;
        total += u64::from(weight);
        if weight > 0 {
            out.push(WeightedCluster { name: c.name.clone(), weight });
        }
    }
    if total == 0 {
        return Err(FieldError::new("clusters", "the weights add up to 0"));
    }
    if total > u64::from(u32::MAX) {
        return Err(FieldError::new("clusters", format!("the weights add up to {total}, more than 2^32-1")));
    }
    if let Some(t) = w.total_weight.as_ref().filter(|t| u64::from(t.value) != total) {
        return Err(FieldError::new(
            "total_weight",
            format!("is {} but the weights add up to {total}", t.value),
        ));
    }
    Ok(out)
}

fn cluster_weight(c: &weighted_cluster::ClusterWeight, notes: &mut Notes) -> Result<u32, FieldError> {
    unsupported!(
        c,
        [
            cluster_header,
            metadata_match,
            request_headers_to_add,
            request_headers_to_remove,
            response_headers_to_add,
            response_headers_to_remove,
            host_rewrite_specifier,
        ]
    );
    ignored!(notes, c, "ClusterWeight", [typed_per_filter_config]);
    if c.name.is_empty() {
        return Err(FieldError::required("name"));
    }
    Ok(c.weight.as_ref().map_or(0, |w| w.value))
}

/// A retry policy; `None` when it retries on nothing.
fn retry_policy(p: &XdsRetryPolicy, notes: &mut Notes) -> Result<Option<RetryPolicy>, FieldError> {
    unsupported!(
        p,
        [
            retry_priority,
            retry_host_predicate,
            retry_options_predicates,
            retriable_headers,
            retriable_request_headers,
            rate_limited_retry_back_off,
        ]
    );
    ignored!(
        notes,
        p,
        "RetryPolicy",
        [per_try_idle_timeout, host_selection_retry_max_attempts, retry_back_off, refresh_cluster_on_retry]
    );
    let mut policy = RetryPolicy {
        on_5xx: false,
        on_gateway_error: false,
        on_connect_failure: false,
        on_reset: false,
        retriable_status_codes: Vec::new(),
        num_retries: p.num_retries.as_ref().map_or(1, |n| n.value),
        per_try_timeout: None,
    };
    let mut on_codes = false;
    for token in p.retry_on.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        match token {
            "5xx" => policy.on_5xx = true,
            "gateway-error" => policy.on_gateway_error = true,
            "connect-failure" => policy.on_connect_failure = true,
            "reset" => policy.on_reset = true,
            "retriable-status-codes" => on_codes = true,
            other => {
                let reason = format!("{other:?} is not supported by weft-proxy (supported: {RETRY_ON})");
                return Err(FieldError::new("retry_on", reason));
            }
        }
    }
    if on_codes {
        for (i, code) in p.retriable_status_codes.iter().enumerate() {
            match u16::try_from(*code) {
                Ok(c) if (100..=599).contains(&c) => policy.retriable_status_codes.push(c),
                _ => {
                    let reason = format!("{code} is not an HTTP status");
                    return Err(FieldError::new(format!("retriable_status_codes[{i}]"), reason));
                }
            }
        }
    }
    if let Some(d) = &p.per_try_timeout {
        policy.per_try_timeout = Some(duration(d).at("per_try_timeout")?).filter(|d| !d.is_zero());
    }
    let retries_on_something = policy.on_5xx
        || policy.on_gateway_error
        || policy.on_connect_failure
        || policy.on_reset
        || !policy.retriable_status_codes.is_empty();
    Ok(retries_on_something.then_some(policy))
}

fn direct(d: &DirectResponseAction) -> Result<Action, FieldError> {
    unsupported!(d, [body_format]);
    let status = match u16::try_from(d.status) {
        Ok(s) if (200..=599).contains(&s) => s,
        _ => return Err(FieldError::new("status", format!("{} is not between 200 and 599", d.status))),
    };
    let body = match &d.body {
        Some(ds) => data_source(ds).at("body")?,
        None => Bytes::new(),
    };
    Ok(Action::Direct { status, body })
}

fn data_source(ds: &DataSource) -> Result<Bytes, FieldError> {
    unsupported!(ds, [watched_directory]);
    match &ds.specifier {
        Some(data_source::Specifier::InlineString(s)) => Ok(Bytes::from(s.clone())),
        Some(data_source::Specifier::InlineBytes(b)) => Ok(Bytes::from(b.clone())),
        Some(data_source::Specifier::Filename(_)) => Err(FieldError::unsupported("filename")),
        Some(data_source::Specifier::EnvironmentVariable(_)) => {
            Err(FieldError::unsupported("environment_variable"))
        }
        None => Ok(Bytes::new()),
    }
}
