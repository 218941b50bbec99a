//! The figures of one row from two scrapes: which series count (weft-proxy's or Envoy's),
//! counter and bucket differences, success rate, rate and percentiles.
//!
//! Percentiles come from the difference of the cumulative latency buckets between the two
//! scrapes: the rank `q * count` falls in one bucket, and the value is interpolated linearly
//! between that bucket's bounds (the lower bound of the first bucket is 0), as Prometheus'
//! `histogram_quantile` does. A rank in the `+Inf` bucket reads as the highest finite bound.

use std::collections::BTreeMap;

use super::prom::Sample;

/// The series of one row at one instant (cumulative, as scraped).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reading {
    /// Responses.
    pub requests: f64,
    /// Responses classified as failures (5xx).
    pub failures: f64,
    /// Responses on TLS connections, when the proxy says.
    pub tls: Option<f64>,
    /// Cumulative latency buckets in milliseconds: upper bound (its `f64` bits, which order
    /// like the bounds since they are not negative) to count.
    pub buckets: BTreeMap<u64, f64>,
}

impl Reading {
    fn add_bucket(&mut self, le: Option<&str>, value: f64) {
        let le = match le {
            Some("+Inf" | "Inf") => f64::INFINITY,
            Some(le) => match le.parse::<f64>() {
                Ok(le) if le >= 0.0 => le,
                _ => return,
            },
            None => return,
        };
        *self.buckets.entry(le.to_bits()).or_default() += value;
    }
}

/// What happened between two readings.
#[derive(Debug, Clone, PartialEq)]
pub struct Delta {
    /// Responses.
    pub requests: u64,
    /// Failed responses.
    pub failures: u64,
    /// Responses over TLS, when known.
    pub tls: Option<u64>,
    /// The window's cumulative latency buckets (upper bound, count), lowest bound first.
    pub buckets: Vec<(f64, f64)>,
    /// The counters went down (the proxy restarted): the end reading alone was used.
    pub reset: bool,
}

fn count(x: f64) -> u64 {
    if x.is_finite() && x > 0.0 {
        // Counters are integers; the cast saturates.
        x.round() as u64
    } else {
        0
    }
}

/// `end - start`; a counter that went down means the proxy restarted in between, and the
/// end reading counts alone.
pub fn diff(start: &Reading, end: &Reading) -> Delta {
    let went_down = end.requests < start.requests
        || end.failures < start.failures
        || start.buckets.iter().any(|(le, v)| end.buckets.get(le).copied().unwrap_or(0.0) < *v);
    let zero = Reading::default();
    let start = if went_down { &zero } else { start };
    let buckets = end
        .buckets
        .iter()
        .map(|(le, v)| (f64::from_bits(*le), v - start.buckets.get(le).copied().unwrap_or(0.0)))
        .collect();
    Delta {
        requests: count(end.requests - start.requests),
        failures: count(end.failures - start.failures),
        tls: end.tls.map(|e| count(e - start.tls.unwrap_or(0.0))),
        buckets,
        reset: went_down,
    }
}

/// The `q` quantile (0..=1) of cumulative `buckets` (upper bound, count), in the buckets'
/// unit; `None` without observations.
pub fn quantile(buckets: &[(f64, f64)], q: f64) -> Option<f64> {
    let total = buckets.iter().map(|(_, c)| *c).fold(0.0, f64::max);
    if total <= 0.0 {
        return None;
    }
    let rank = q.clamp(0.0, 1.0) * total;
    let (mut lower, mut below) = (0.0, 0.0);
    for &(le, cumulative) in buckets {
        if cumulative >= rank && cumulative > below {
            if le.is_infinite() {
                return Some(lower);
            }
            return Some(lower + (le - lower) * (rank - below) / (cumulative - below));
        }
        if le.is_finite() {
            lower = le;
        }
        below = cumulative;
    }
    Some(lower)
}

/// weft-proxy's inbound series: `response_total{direction="inbound"}` and
/// `response_latency_ms_bucket{direction="inbound"}`, every authority and peer summed.
pub fn weft_inbound(samples: &[Sample]) -> Reading {
    let inbound = |s: &Sample| s.label("direction") == Some("inbound");
    let failed = |s: &Sample| s.label("classification") == Some("failure");
    let mut reading = read(samples, inbound, "response_total", "response_latency_ms_bucket", failed);
    let tls = samples
        .iter()
        .filter(|s| inbound(s) && s.name == "response_total" && s.label("tls") == Some("true"))
        .map(|s| s.value)
        .sum();
    reading.tls = Some(tls);
    reading
}

/// One reading from a counter family and a histogram family: `total` samples that `keep`
/// lets through add to the requests (and to the failures where `failed`), `bucket`
/// samples to the latency buckets.
fn read(
    samples: &[Sample],
    keep: impl Fn(&Sample) -> bool,
    total: &str,
    bucket: &str,
    failed: impl Fn(&Sample) -> bool,
) -> Reading {
    let mut reading = Reading::default();
    for s in samples.iter().filter(|s| keep(s)) {
        if s.name == total {
            reading.requests += s.value;
            if failed(s) {
                reading.failures += s.value;
            }
        } else if s.name == bucket {
            reading.add_bucket(s.label("le"), s.value);
        }
    }
    reading
}

/// weft-proxy's series of upstream `cluster`: `upstream_response_total{cluster}` and
/// `upstream_response_latency_ms_bucket{cluster}`, summed over their `route` label.
pub fn weft_cluster(samples: &[Sample], cluster: &str) -> Reading {
    weft_upstream(samples, |s| s.label("cluster") == Some(cluster))
}

/// weft-proxy's series of one route: `upstream_response_total{route,cluster}` and
/// `upstream_response_latency_ms_bucket{route,cluster}` with that route name and one of the
/// route's clusters (route names repeat across virtual hosts: `default`; with its clusters
/// a name is one route).
pub fn weft_route(samples: &[Sample], route: &str, clusters: &[String]) -> Reading {
    weft_upstream(samples, |s| {
        s.label("route") == Some(route) && s.label("cluster").is_some_and(|c| clusters.iter().any(|k| k == c))
    })
}

fn weft_upstream(samples: &[Sample], keep: impl Fn(&Sample) -> bool) -> Reading {
    let failed = |s: &Sample| s.label("classification") == Some("failure");
    read(samples, keep, "upstream_response_total", "upstream_response_latency_ms_bucket", failed)
}

/// The HTTP connection manager stat prefix of weft's inbound listener.
const ENVOY_INBOUND_PREFIX: &str = "inbound";

/// Envoy's inbound series: `envoy_http_downstream_rq_xx` and
/// `envoy_http_downstream_rq_time_bucket` of the `inbound` connection manager (5xx fail).
pub fn envoy_inbound(samples: &[Sample]) -> Reading {
    read(
        samples,
        |s| s.label("envoy_http_conn_manager_prefix") == Some(ENVOY_INBOUND_PREFIX),
        "envoy_http_downstream_rq_xx",
        "envoy_http_downstream_rq_time_bucket",
        |s| s.label("envoy_response_code_class") == Some("5"),
    )
}

/// A stat name part as Envoy's Prometheus output writes it: every character but ASCII
/// letters, digits and `_` becomes `_`.
fn sanitize(part: &str) -> String {
    part.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect()
}

/// Where Envoy's Prometheus output puts a route's stats (`vhost.<virtual host>.route.<stat
/// prefix>.*`, kept only for routes with a `stat_prefix`, which weft sets to the route name).
/// As with clusters, the `envoy_virtual_host` tag takes the virtual host name up to its first
/// dot and the rest stays in the metric name, the stat prefix after it: virtual host
/// `web.shop.svc.cluster.local:8080`, route `split/web-split` give
/// `envoy_vhost_shop_svc_cluster_local_8080_route_split_web_split_upstream_rq{envoy_virtual_host="web"}`
/// (checked against Envoy 1.40). Returns the label value and the metric name prefix.
pub fn envoy_route_names(vhost: &str, stat_prefix: &str) -> (String, String) {
    let route = sanitize(stat_prefix);
    match vhost.split_once('.') {
        None => (vhost.to_owned(), format!("envoy_vhost_route_{route}_")),
        Some((head, tail)) => (head.to_owned(), format!("envoy_vhost_{}_route_{route}_", sanitize(tail))),
    }
}

/// Envoy's series of one route: `upstream_rq{envoy_response_code}` (5xx fail) and
/// `upstream_rq_time_bucket`, named as [`envoy_route_names`] says.
pub fn envoy_route(samples: &[Sample], vhost: &str, stat_prefix: &str) -> Reading {
    let (label, prefix) = envoy_route_names(vhost, stat_prefix);
    envoy_upstream(samples, "envoy_virtual_host", &label, &prefix)
}

/// Where Envoy's Prometheus output puts a cluster's stats. Envoy's tag extraction takes the
/// `envoy_cluster_name` tag up to the first dot of the name, and the rest of the name stays in
/// the metric name, sanitized: cluster `outbound|80||web.shop.svc.cluster.local` gives
/// `envoy_cluster_shop_svc_cluster_local_upstream_rq{envoy_cluster_name="outbound|80||web"}`.
/// Returns the label value and the metric name prefix (`envoy_cluster_..._`).
pub fn envoy_cluster_names(cluster: &str) -> (String, String) {
    match cluster.split_once('.') {
        None => (cluster.to_owned(), "envoy_cluster_".to_owned()),
        Some((head, tail)) => (head.to_owned(), format!("envoy_cluster_{}_", sanitize(tail))),
    }
}

/// Envoy's series of upstream `cluster`: `upstream_rq{envoy_response_code}` (5xx fail) and
/// `upstream_rq_time_bucket`, named as [`envoy_cluster_names`] says.
pub fn envoy_cluster(samples: &[Sample], cluster: &str) -> Reading {
    let (label, prefix) = envoy_cluster_names(cluster);
    envoy_upstream(samples, "envoy_cluster_name", &label, &prefix)
}

/// `<prefix>upstream_rq` and `<prefix>upstream_rq_time_bucket` with `tag="<label>"`.
fn envoy_upstream(samples: &[Sample], tag: &str, label: &str, prefix: &str) -> Reading {
    let (rq, time) = (format!("{prefix}upstream_rq"), format!("{prefix}upstream_rq_time_bucket"));
    let failed =
        |s: &Sample| s.label("envoy_response_code").and_then(|c| c.parse::<u16>().ok()).unwrap_or(0) >= 500;
    read(samples, |s| s.label(tag) == Some(label), &rq, &time, failed)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::stat::prom::parse;

    fn reading(requests: f64, failures: f64, buckets: &[(f64, f64)]) -> Reading {
        Reading {
            requests,
            failures,
            tls: None,
            buckets: buckets.iter().map(|(le, c)| (le.to_bits(), *c)).collect(),
        }
    }

    #[test]
    fn the_difference_of_two_readings_is_the_window() {
        let start = reading(10.0, 1.0, &[(1.0, 4.0), (5.0, 9.0), (f64::INFINITY, 10.0)]);
        let end = reading(110.0, 6.0, &[(1.0, 34.0), (5.0, 99.0), (f64::INFINITY, 110.0)]);
        let delta = diff(&start, &end);
        assert_eq!((delta.requests, delta.failures, delta.reset), (100, 5, false));
        assert_eq!(delta.buckets, vec![(1.0, 30.0), (5.0, 90.0), (f64::INFINITY, 100.0)]);
    }

    #[test]
    fn a_restarted_proxy_counts_from_zero() {
        let start = reading(500.0, 0.0, &[(1.0, 500.0)]);
        let end = reading(7.0, 2.0, &[(1.0, 7.0)]);
        let delta = diff(&start, &end);
        assert_eq!((delta.requests, delta.failures, delta.reset), (7, 2, true));
    }

    #[test]
    fn percentiles_interpolate_within_a_bucket() {
        // 100 observations: 50 in (0, 10], 40 in (10, 20], 10 in (20, 40].
        let buckets = [(10.0, 50.0), (20.0, 90.0), (40.0, 100.0), (f64::INFINITY, 100.0)];
        assert_eq!(quantile(&buckets, 0.5), Some(10.0));
        assert_eq!(quantile(&buckets, 0.25), Some(5.0));
        assert_eq!(quantile(&buckets, 0.7), Some(15.0));
        assert_eq!(quantile(&buckets, 0.95), Some(30.0));
        assert_eq!(quantile(&buckets, 1.0), Some(40.0));
        assert_eq!(quantile(&[(10.0, 0.0), (f64::INFINITY, 0.0)], 0.5), None);
        // Beyond the last finite bound: that bound.
        assert_eq!(quantile(&[(10.0, 1.0), (f64::INFINITY, 4.0)], 0.99), Some(10.0));
        // Empty leading buckets do not pull the value down.
        assert_eq!(quantile(&[(1.0, 0.0), (2.0, 0.0), (4.0, 10.0)], 0.5), Some(3.0));
    }

    #[test]
    fn weft_proxy_series_by_direction_and_cluster() {
        let text = r#"
response_total{direction="inbound",authority="web:8080",tls="true",client_id="a",status_code="200",classification="success"} 8
response_total{direction="inbound",authority="web:8080",tls="false",status_code="500",classification="failure"} 2
response_total{direction="outbound",authority="web:8080",tls="false",status_code="200",classification="success"} 99
response_latency_ms_bucket{le="1.0",direction="inbound",authority="web:8080",tls="true",client_id="a",status_code="200"} 3
response_latency_ms_bucket{le="1.0",direction="inbound",authority="web:8080",tls="false",status_code="500"} 2
response_latency_ms_bucket{le="+Inf",direction="inbound",authority="web:8080",tls="true",client_id="a",status_code="200"} 8
response_latency_ms_bucket{le="+Inf",direction="inbound",authority="web:8080",tls="false",status_code="500"} 2
upstream_response_total{cluster="outbound|8080||web-v2.shop.svc.cluster.local",status_code="500",classification="failure"} 4
upstream_response_total{cluster="outbound|8080||web-v2.shop.svc.cluster.local",status_code="200",classification="success"} 6
upstream_response_total{cluster="outbound|8080||web-v1.shop.svc.cluster.local",status_code="200",classification="success"} 90
upstream_response_latency_ms_bucket{le="2.0",cluster="outbound|8080||web-v2.shop.svc.cluster.local"} 10
"#;
        let samples = parse(text).unwrap();
        let inbound = weft_inbound(&samples);
        assert_eq!((inbound.requests, inbound.failures, inbound.tls), (10.0, 2.0, Some(8.0)));
        assert_eq!(inbound.buckets.get(&1.0f64.to_bits()), Some(&5.0));
        assert_eq!(inbound.buckets.get(&f64::INFINITY.to_bits()), Some(&10.0));
        let v2 = weft_cluster(&samples, "outbound|8080||web-v2.shop.svc.cluster.local");
        assert_eq!((v2.requests, v2.failures), (10.0, 4.0));
        assert_eq!(v2.buckets.get(&2.0f64.to_bits()), Some(&10.0));
    }

    #[test]
    fn weft_proxy_route_series_are_told_apart_by_name_and_cluster() {
        let text = r#"
upstream_response_total{route="split/web-split",cluster="outbound|8080||web-v1.shop.svc.cluster.local",status_code="200",classification="success"} 6
upstream_response_total{route="split/web-split",cluster="outbound|8080||web-v2.shop.svc.cluster.local",status_code="503",classification="failure"} 2
upstream_response_total{route="default",cluster="outbound|8080||web-v1.shop.svc.cluster.local",status_code="200",classification="success"} 5
upstream_response_total{route="default",cluster="outbound|8080||web.shop.svc.cluster.local",status_code="200",classification="success"} 7
upstream_response_latency_ms_bucket{le="2.0",route="default",cluster="outbound|8080||web-v1.shop.svc.cluster.local"} 5
"#;
        let samples = parse(text).unwrap();
        let clusters = |names: &[&str]| -> Vec<String> {
            names.iter().map(|n| format!("outbound|8080||{n}.shop.svc.cluster.local")).collect()
        };
        let split = weft_route(&samples, "split/web-split", &clusters(&["web-v1", "web-v2"]));
        assert_eq!((split.requests, split.failures), (8.0, 2.0));
        let v1_default = weft_route(&samples, "default", &clusters(&["web-v1"]));
        assert_eq!((v1_default.requests, v1_default.failures), (5.0, 0.0));
        assert_eq!(v1_default.buckets.get(&2.0f64.to_bits()), Some(&5.0));
        // A cluster's figures sum its routes.
        let v1 = weft_cluster(&samples, "outbound|8080||web-v1.shop.svc.cluster.local");
        assert_eq!(v1.requests, 11.0);
    }

    #[test]
    fn envoy_route_series_with_the_virtual_host_split_at_the_first_dot() {
        // As Envoy 1.40 writes them (checked against a running one).
        let text = r#"
envoy_vhost_shop_svc_cluster_local_8080_route_split_web_split_upstream_rq{envoy_response_code="200",envoy_virtual_host="web"} 3
envoy_vhost_shop_svc_cluster_local_8080_route_split_web_split_upstream_rq{envoy_response_code="503",envoy_virtual_host="web"} 1
envoy_vhost_shop_svc_cluster_local_8080_route_split_web_split_upstream_rq_xx{envoy_response_code_class="2",envoy_virtual_host="web"} 3
envoy_vhost_shop_svc_cluster_local_8080_route_split_web_split_upstream_rq_time_bucket{envoy_virtual_host="web",le="5"} 4
envoy_vhost_shop_svc_cluster_local_8080_route_default_upstream_rq{envoy_response_code="200",envoy_virtual_host="web-v1"} 9
"#;
        let samples = parse(text).unwrap();
        assert_eq!(
            envoy_route_names("web.shop.svc.cluster.local:8080", "split/web-split"),
            ("web".to_owned(), "envoy_vhost_shop_svc_cluster_local_8080_route_split_web_split_".to_owned())
        );
        let split = envoy_route(&samples, "web.shop.svc.cluster.local:8080", "split/web-split");
        assert_eq!((split.requests, split.failures), (4.0, 1.0));
        assert_eq!(split.buckets.get(&5.0f64.to_bits()), Some(&4.0));
        let default = envoy_route(&samples, "web-v1.shop.svc.cluster.local:8080", "default");
        assert_eq!(default.requests, 9.0);
        assert_eq!(envoy_route(&samples, "web.shop.svc.cluster.local:8080", "default").requests, 0.0);
    }

    #[test]
    fn envoy_series_with_its_cluster_name_split_at_the_first_dot() {
        // As Envoy 1.40 writes them (checked against a running one).
        let text = r#"
envoy_cluster_shop_svc_cluster_local_upstream_rq{envoy_response_code="200",envoy_cluster_name="outbound|80||web-v1"} 7
envoy_cluster_shop_svc_cluster_local_upstream_rq{envoy_response_code="503",envoy_cluster_name="outbound|80||web-v1"} 1
envoy_cluster_shop_svc_cluster_local_external_upstream_rq{envoy_response_code="200",envoy_cluster_name="outbound|80||web-v1"} 7
envoy_cluster_shop_svc_cluster_local_upstream_rq{envoy_response_code="503",envoy_cluster_name="outbound|80||web-v2"} 3
envoy_cluster_shop_svc_cluster_local_upstream_rq_time_bucket{envoy_cluster_name="outbound|80||web-v1",le="1"} 1
envoy_cluster_shop_svc_cluster_local_upstream_rq_time_bucket{envoy_cluster_name="outbound|80||web-v1",le="+Inf"} 7
envoy_http_downstream_rq_xx{envoy_response_code_class="2",envoy_http_conn_manager_prefix="inbound"} 7
envoy_http_downstream_rq_xx{envoy_response_code_class="5",envoy_http_conn_manager_prefix="inbound"} 3
envoy_http_downstream_rq_xx{envoy_response_code_class="2",envoy_http_conn_manager_prefix="admin"} 50
envoy_http_downstream_rq_time_bucket{envoy_http_conn_manager_prefix="inbound",le="5"} 10
"#;
        let samples = parse(text).unwrap();
        assert_eq!(
            envoy_cluster_names("outbound|80||web-v1.shop.svc.cluster.local"),
            ("outbound|80||web-v1".to_owned(), "envoy_cluster_shop_svc_cluster_local_".to_owned())
        );
        let v1 = envoy_cluster(&samples, "outbound|80||web-v1.shop.svc.cluster.local");
        assert_eq!((v1.requests, v1.failures), (8.0, 1.0));
        assert_eq!(v1.buckets.get(&f64::INFINITY.to_bits()), Some(&7.0));
        let inbound = envoy_inbound(&samples);
        assert_eq!((inbound.requests, inbound.failures, inbound.tls), (10.0, 3.0, None));
        assert_eq!(inbound.buckets.get(&5.0f64.to_bits()), Some(&10.0));
    }
}
