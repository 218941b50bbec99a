//! Clusters (CDS): where endpoints come from (EDS or listed inline), how to
//! pick one, connection limits, the upstream HTTP protocol, and mTLS to the
//! endpoints that ask for it.

use std::sync::Arc;
use std::time::Duration;

use weft_xds_protos::envoy::config::cluster::v3::{
    CircuitBreakers as XdsCircuitBreakers, Cluster as XdsCluster, cluster,
};
use weft_xds_protos::envoy::config::core::v3::RoutingPriority;
use weft_xds_protos::envoy::extensions::upstreams::http::v3::{HttpProtocolOptions, http_protocol_options};
use weft_xds_protos::google::protobuf::value::Kind;

use super::{Notes, ads_source, duration, endpoint, holds, ignored, tls, unpack, unsupported};
use crate::config::{CircuitBreakers, Cluster, Discovery, LbPolicy, UpstreamProtocol, UpstreamTls};
use crate::xds::error::{At, FieldError};

/// Envoy's connect timeout when a cluster sets none.
pub(crate) const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Validates a Cluster; for an EDS cluster, also returns the name of the
/// ClusterLoadAssignment to subscribe to (`service_name`, else the cluster's name).
pub(crate) fn cluster(c: &XdsCluster, notes: &mut Notes) -> Result<(Cluster, Option<String>), FieldError> {
    unsupported!(
        c,
        [
            transport_socket_matcher,
            health_checks,
            outlier_detection,
            upstream_bind_config,
            lb_subset_config,
            filters,
            load_balancing_policy,
            upstream_config,
        ]
    );
    let tls = upstream_tls(c, notes)?;
    ignored!(
        notes,
        c,
        "Cluster",
        [
            alt_stat_name,
            stats_matcher,
            per_connection_buffer_limit_bytes,
            per_connection_buffer_high_watermark_timeout,
            max_requests_per_connection,
            upstream_http_protocol_options,
            common_http_protocol_options,
            dns_refresh_rate,
            dns_jitter,
            dns_failure_refresh_rate,
            respect_dns_ttl,
            dns_lookup_family,
            dns_resolvers,
            use_tcp_for_dns_lookups,
            dns_resolution_config,
            typed_dns_resolver_config,
            wait_for_warm_on_init,
            cleanup_interval,
            common_lb_config,
            metadata,
            upstream_connection_options,
            close_connections_on_host_health_failure,
            ignore_health_on_host_removal,
            lrs_server,
            lrs_report_endpoint_metrics,
            track_timeout_budgets,
            track_cluster_stats,
            preconnect_policy,
            connection_pool_per_downstream_connection,
            queuing_policies,
        ]
    );
    let (discovery, eds_name) = discovery(c, notes)?;
    let connect_timeout = match &c.connect_timeout {
        None => DEFAULT_CONNECT_TIMEOUT,
        Some(d) => match duration(d).at("connect_timeout")? {
            d if d.is_zero() => return Err(FieldError::new("connect_timeout", "must be greater than 0")),
            d => d,
        },
    };
    let lb = lb_policy(c)?;
    let limits = match &c.circuit_breakers {
        Some(cb) => circuit_breakers(cb, notes).at("circuit_breakers")?,
        None => CircuitBreakers::default(),
    };
    let protocol = protocol(c, notes)?;
    let cluster = Cluster { name: c.name.clone(), discovery, connect_timeout, lb, limits, protocol, tls };
    Ok((cluster, eds_name))
}

/// `filter_metadata` namespace of the endpoint metadata transport socket matches look at.
pub(crate) const SOCKET_MATCH_METADATA: &str = "envoy.transport_socket_match";
/// The key, in that namespace, of endpoints dialled over mTLS (value `true`).
pub(crate) const MTLS_KEY: &str = "weft.mtls";

/// The cluster's TLS: a `transport_socket_matches` entry matching
/// `{"weft.mtls": true}` (endpoints marked so), and / or a TLS
/// `transport_socket` (every endpoint). Both at once must say the same.
fn upstream_tls(c: &XdsCluster, notes: &mut Notes) -> Result<Option<UpstreamTls>, FieldError> {
    let everywhere = tls::upstream(c.transport_socket.as_ref(), notes).at("transport_socket")?;
    let mut marked = None;
    for (i, m) in c.transport_socket_matches.iter().enumerate() {
        let field = format!("transport_socket_matches[{i}]");
        if marked.is_some() {
            return Err(FieldError::new(
                field,
                "a second entry matching {\"weft.mtls\": true} would never be used",
            ));
        }
        let only_mtls = m.r#match.as_ref().is_some_and(|s| {
            s.fields.len() == 1
                && s.fields.get(MTLS_KEY).is_some_and(|v| matches!(v.kind, Some(Kind::BoolValue(true))))
        });
        if !only_mtls {
            return Err(FieldError::new(
                format!("{field}.match"),
                "not supported by weft-proxy: only the match {\"weft.mtls\": true} is",
            ));
        }
        marked =
            Some(tls::upstream(m.transport_socket.as_ref(), notes).at(&format!("{field}.transport_socket"))?);
    }
    match (everywhere, marked) {
        (None, None | Some(None)) => Ok(None),
        (None, Some(Some(tls))) => Ok(Some(tls)),
        (Some(tls), None) => Ok(Some(UpstreamTls { all_endpoints: true, ..tls })),
        (Some(tls), Some(Some(same))) if same == tls => Ok(Some(UpstreamTls { all_endpoints: true, ..tls })),
        (Some(_), Some(_)) => Err(FieldError::new(
            "transport_socket_matches[0].transport_socket",
            "differs from transport_socket: weft-proxy has one TLS context per cluster",
        )),
    }
}

fn discovery(c: &XdsCluster, notes: &mut Notes) -> Result<(Discovery, Option<String>), FieldError> {
    use cluster::DiscoveryType;
    let kind = match &c.cluster_discovery_type {
        // Envoy's default type is STATIC.
        None => DiscoveryType::Static,
        Some(cluster::ClusterDiscoveryType::Type(t)) => DiscoveryType::try_from(*t)
            .map_err(|_| FieldError::new("type", format!("unknown discovery type {t}")))?,
        Some(cluster::ClusterDiscoveryType::ClusterType(_)) => {
            return Err(FieldError::unsupported("cluster_type"));
        }
    };
    match kind {
        DiscoveryType::Eds => {
            let eds =
                c.eds_cluster_config.as_ref().ok_or_else(|| FieldError::required("eds_cluster_config"))?;
            ads_source(eds.eds_config.as_ref(), notes).at("eds_cluster_config.eds_config")?;
            ignored!(notes, c, "Cluster", [load_assignment]);
            let name = if eds.service_name.is_empty() { c.name.clone() } else { eds.service_name.clone() };
            Ok((Discovery::Eds, Some(name)))
        }
        DiscoveryType::Static => {
            let la = c.load_assignment.as_ref().ok_or_else(|| FieldError::required("load_assignment"))?;
            let endpoints = endpoint::assignment(la, &c.name, notes).at("load_assignment")?;
            Ok((Discovery::Static(Arc::new(endpoints)), None))
        }
        other => Err(FieldError::new(
            "type",
            format!("{} clusters are not supported by weft-proxy (only EDS and STATIC)", other.as_str_name()),
        )),
    }
}

fn lb_policy(c: &XdsCluster) -> Result<LbPolicy, FieldError> {
    use cluster::LbPolicy as Xds;
    let policy = match Xds::try_from(c.lb_policy) {
        Ok(Xds::RoundRobin) => LbPolicy::RoundRobin,
        Ok(Xds::LeastRequest) => LbPolicy::LeastRequest,
        Ok(other) => {
            let reason = format!(
                "{} is not supported by weft-proxy (only ROUND_ROBIN and LEAST_REQUEST)",
                other.as_str_name()
            );
            return Err(FieldError::new("lb_policy", reason));
        }
        Err(_) => return Err(FieldError::new("lb_policy", format!("unknown policy {}", c.lb_policy))),
    };
    match &c.lb_config {
        None | Some(cluster::LbConfig::RoundRobinLbConfig(_)) => Ok(policy),
        Some(cluster::LbConfig::LeastRequestLbConfig(cfg)) => {
            // Power of two choices is the only choice count weft-proxy has.
            match cfg.choice_count.as_ref().map(|c| c.value) {
                None | Some(2) => Ok(policy),
                Some(n) => Err(FieldError::new(
                    "least_request_lb_config.choice_count",
                    format!("{n} is not supported (only 2)"),
                )),
            }
        }
        Some(cluster::LbConfig::RingHashLbConfig(_)) => Err(FieldError::unsupported("ring_hash_lb_config")),
        Some(cluster::LbConfig::MaglevLbConfig(_)) => Err(FieldError::unsupported("maglev_lb_config")),
        Some(cluster::LbConfig::OriginalDstLbConfig(_)) => {
            Err(FieldError::unsupported("original_dst_lb_config"))
        }
    }
}

/// The default-priority thresholds; Envoy's defaults (1024) where unset.
fn circuit_breakers(cb: &XdsCircuitBreakers, notes: &mut Notes) -> Result<CircuitBreakers, FieldError> {
    ignored!(notes, cb, "CircuitBreakers", [per_host_thresholds]);
    let mut limits = CircuitBreakers::default();
    for t in &cb.thresholds {
        if t.priority != RoutingPriority::Default as i32 {
            // weft-proxy routes everything at the default priority.
            notes.ignore("CircuitBreakers.thresholds.priority");
            continue;
        }
        ignored!(notes, t, "Thresholds", [max_retries, retry_budget, track_remaining, max_connection_pools]);
        let or = |v: &Option<weft_xds_protos::google::protobuf::UInt32Value>, d: u32| {
            v.as_ref().map_or(d, |v| v.value)
        };
        limits = CircuitBreakers {
            max_connections: or(&t.max_connections, limits.max_connections),
            max_pending_requests: or(&t.max_pending_requests, limits.max_pending_requests),
            max_requests: or(&t.max_requests, limits.max_requests),
        };
    }
    Ok(limits)
}

const HTTP_OPTIONS_KEY: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";

/// The upstream HTTP protocol: `typed_extension_protocol_options` (v3), or the
/// deprecated `http2_protocol_options` / `protocol_selection` pair.
fn protocol(c: &XdsCluster, notes: &mut Notes) -> Result<UpstreamProtocol, FieldError> {
    let mut protocol = if c.http2_protocol_options.is_some() {
        if c.protocol_selection == cluster::ClusterProtocolSelection::UseDownstreamProtocol as i32 {
            UpstreamProtocol::SameAsDownstream
        } else {
            UpstreamProtocol::Http2
        }
    } else {
        UpstreamProtocol::Http1
    };
    ignored!(notes, c, "Cluster", [http_protocol_options]);
    let mut keys: Vec<&String> = c.typed_extension_protocol_options.keys().collect();
    keys.sort();
    for key in keys {
        let field = format!("typed_extension_protocol_options[{key}]");
        let any = &c.typed_extension_protocol_options[key];
        if !holds::<HttpProtocolOptions>(any) {
            return Err(FieldError::new(field, format!("unsupported protocol options {}", any.type_url)));
        }
        if key != HTTP_OPTIONS_KEY {
            notes.ignore("Cluster.typed_extension_protocol_options.key");
        }
        let options = unpack::<HttpProtocolOptions>(any).at(&field)?;
        protocol = http_protocol_options(&options, notes).at(&field)?;
    }
    Ok(protocol)
}

fn http_protocol_options(o: &HttpProtocolOptions, notes: &mut Notes) -> Result<UpstreamProtocol, FieldError> {
    use http_protocol_options::{UpstreamProtocolOptions, explicit_http_config::ProtocolConfig};
    unsupported!(o, [http_filters, outlier_detection, request_mirror_policies, retry_policy]);
    ignored!(
        notes,
        o,
        "HttpProtocolOptions",
        [common_http_protocol_options, upstream_http_protocol_options, header_validation_config, hash_policy]
    );
    match &o.upstream_protocol_options {
        None => Ok(UpstreamProtocol::Http1),
        Some(UpstreamProtocolOptions::ExplicitHttpConfig(e)) => match &e.protocol_config {
            Some(ProtocolConfig::HttpProtocolOptions(_)) => Ok(UpstreamProtocol::Http1),
            Some(ProtocolConfig::Http2ProtocolOptions(_)) => Ok(UpstreamProtocol::Http2),
            Some(ProtocolConfig::Http3ProtocolOptions(_)) => {
                Err(FieldError::unsupported("explicit_http_config.http3_protocol_options"))
            }
            None => Err(FieldError::new(
                "explicit_http_config",
                "one of http_protocol_options or http2_protocol_options is required",
            )),
        },
        // Envoy: with only HTTP/1 options, HTTP/2 downstream goes out as HTTP/1.
        Some(UpstreamProtocolOptions::UseDownstreamProtocolConfig(u)) => {
            ignored!(notes, u, "UseDownstreamHttpConfig", [http3_protocol_options]);
            Ok(if u.http2_protocol_options.is_some() {
                UpstreamProtocol::SameAsDownstream
            } else {
                UpstreamProtocol::Http1
            })
        }
        Some(UpstreamProtocolOptions::AutoConfig(_)) => Err(FieldError::unsupported("auto_config")),
    }
}
