//! Listeners (LDS): the bind address, listener filters, and filter chains
//! matched by destination, SNI and transport protocol, each terminating TLS
//! or not, optionally checking network RBAC, and ending in an HTTP
//! connection manager (optionally with HTTP RBAC) or a TCP proxy.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use weft_xds_protos::envoy::config::core::v3::CidrRange;
use weft_xds_protos::envoy::config::listener::v3::{
    Filter, FilterChain as XdsFilterChain, FilterChainMatch, Listener as XdsListener, ListenerFilter, filter,
    listener_filter,
};
use weft_xds_protos::envoy::extensions::filters::http::rbac::v3::Rbac as HttpRbac;
use weft_xds_protos::envoy::extensions::filters::http::router::v3::Router;
use weft_xds_protos::envoy::extensions::filters::listener::http_inspector::v3::HttpInspector;
use weft_xds_protos::envoy::extensions::filters::listener::original_dst::v3::OriginalDst;
use weft_xds_protos::envoy::extensions::filters::listener::tls_inspector::v3::TlsInspector;
use weft_xds_protos::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter, http_connection_manager, http_filter,
};
use weft_xds_protos::envoy::extensions::filters::network::rbac::v3::Rbac as NetworkRbac;
use weft_xds_protos::envoy::extensions::filters::network::tcp_proxy::v3::{
    TcpProxy as XdsTcpProxy, tcp_proxy,
};

use super::{Notes, ads_source, holds, ignored, rbac, route, tls, unpack, unsupported};
use crate::config::rbac::Rbac;
use crate::config::{ChainKind, FilterChain, HttpManager, Listener, RouteSource, TcpProxy, WeightedCluster};
use crate::xds::error::{At, FieldError};

/// Validates a Listener.
pub(crate) fn listener(l: &XdsListener, notes: &mut Notes) -> Result<Listener, FieldError> {
    unsupported!(
        l,
        [
            additional_addresses,
            fcds_config,
            filter_chain_matcher,
            deprecated_v1,
            udp_listener_config,
            api_listener,
            listener_specifier,
        ]
    );
    if l.use_original_dst.as_ref().is_some_and(|b| b.value) {
        return Err(FieldError::unsupported("use_original_dst"));
    }
    if l.transparent.as_ref().is_some_and(|b| b.value) {
        return Err(FieldError::unsupported("transparent"));
    }
    if l.bind_to_port.as_ref().is_some_and(|b| !b.value) {
        return Err(FieldError::new("bind_to_port", "false is not supported by weft-proxy"));
    }
    // weft-proxy tells directions by name (`inbound`, else outbound); a direction that agrees
    // changes nothing (Envoy uses it for span kinds, which weft-proxy derives the same way).
    if !traffic_direction_agrees(l) {
        notes.ignore("Listener.traffic_direction");
    }
    ignored!(
        notes,
        l,
        "Listener",
        [
            stat_prefix,
            stats_matcher,
            per_connection_buffer_limit_bytes,
            per_connection_buffer_high_watermark_timeout,
            metadata,
            drain_type,
            listener_filters_timeout,
            continue_on_listener_filters_timeout,
            freebind,
            socket_options,
            tcp_fast_open_queue_length,
            connection_balance_config,
            reuse_port,
            enable_reuse_port,
            access_log,
            tcp_backlog_size,
            max_connections_to_accept_per_socket_event,
            enable_mptcp,
            ignore_global_conn_limit,
            bypass_overload_manager,
            tcp_keepalive,
        ]
    );
    let addr = super::socket_addr(l.address.as_ref(), notes).at("address")?;
    let (mut original_dst, mut tls_inspector) = (false, false);
    for (i, f) in l.listener_filters.iter().enumerate() {
        match listener_filter(f, notes).at_index("listener_filters", i)? {
            Some(Inspector::OriginalDst) => original_dst = true,
            Some(Inspector::Tls) => tls_inspector = true,
            None => {}
        }
    }
    let mut chains = Vec::with_capacity(l.filter_chains.len());
    let mut matches: HashMap<MatchKey, usize> = HashMap::new();
    for (i, c) in l.filter_chains.iter().enumerate() {
        let chain = filter_chain(c, || format!("{}/{i}", l.name), notes).at_index("filter_chains", i)?;
        let mut key = (
            chain.destination_port,
            chain.destination_prefixes.clone(),
            chain.server_names.clone(),
            chain.transport_protocol.clone(),
        );
        key.1.sort();
        key.2.sort();
        if let Some(first) = matches.insert(key, i) {
            let reason = format!("matches the same connections as filter_chains[{first}]");
            return Err(FieldError::new(format!("filter_chains[{i}].filter_chain_match"), reason));
        }
        chains.push(chain);
    }
    let default_chain = l
        .default_filter_chain
        .as_ref()
        .map(|c| filter_chain(c, || format!("{}/default", l.name), notes))
        .transpose()
        .at("default_filter_chain")?;
    if chains.is_empty() && default_chain.is_none() {
        return Err(FieldError::new(
            "filter_chains",
            "a listener needs a filter chain or a default_filter_chain",
        ));
    }
    Ok(Listener { name: l.name.clone(), addr, chains, default_chain, original_dst, tls_inspector })
}

/// A listener filter weft-proxy acts on.
enum Inspector {
    /// `original_dst`.
    OriginalDst,
    /// `tls_inspector`.
    Tls,
}

/// What a listener filter does; `None` for an inspector that only feeds
/// chain matches weft-proxy does not implement (ignored).
fn listener_filter(f: &ListenerFilter, notes: &mut Notes) -> Result<Option<Inspector>, FieldError> {
    unsupported!(f, [filter_disabled]);
    let any = match &f.config_type {
        Some(listener_filter::ConfigType::TypedConfig(any)) => any,
        Some(listener_filter::ConfigType::ConfigDiscovery(_)) => {
            return Err(FieldError::unsupported("config_discovery"));
        }
        None => return Err(FieldError::required("typed_config")),
    };
    if holds::<OriginalDst>(any) {
        Ok(Some(Inspector::OriginalDst))
    } else if holds::<TlsInspector>(any) {
        // Its options only tune JA3 fingerprints and buffer sizes.
        Ok(Some(Inspector::Tls))
    } else if holds::<HttpInspector>(any) {
        notes.ignore("ListenerFilter.http_inspector");
        Ok(None)
    } else {
        Err(FieldError::new("typed_config", format!("unsupported listener filter {}", any.type_url)))
    }
}

fn filter_chain(
    c: &XdsFilterChain,
    default_name: impl FnOnce() -> String,
    notes: &mut Notes,
) -> Result<FilterChain, FieldError> {
    if c.use_proxy_proto.as_ref().is_some_and(|b| b.value) {
        return Err(FieldError::unsupported("use_proxy_proto"));
    }
    let tls = tls::downstream(c.transport_socket.as_ref(), notes).at("transport_socket")?;
    ignored!(notes, c, "FilterChain", [metadata, transport_socket_connect_timeout]);
    let matched = match &c.filter_chain_match {
        Some(m) => chain_match(m).at("filter_chain_match")?,
        None => ChainMatch::default(),
    };
    let mut kind = None;
    let mut rbac = None;
    for (i, f) in c.filters.iter().enumerate() {
        if kind.is_some() {
            let reason = "nothing may follow the terminal filter (http_connection_manager or tcp_proxy)";
            return Err(FieldError::new(format!("filters[{i}]"), reason));
        }
        match network_filter(f, notes).at_index("filters", i)? {
            NetworkFilter::Terminal(decoded) => kind = Some(decoded),
            NetworkFilter::Rbac(_) if rbac.is_some() => {
                return Err(FieldError::new(
                    format!("filters[{i}]"),
                    "a second RBAC filter is not supported by weft-proxy",
                ));
            }
            NetworkFilter::Rbac(decoded) => rbac = Some(Arc::new(decoded)),
        }
    }
    let Some(kind) = kind else {
        return Err(FieldError::new("filters", "a filter chain needs http_connection_manager or tcp_proxy"));
    };
    let name = if c.name.is_empty() { default_name() } else { c.name.clone() };
    Ok(FilterChain {
        name,
        destination_port: matched.port,
        destination_prefixes: matched.prefixes,
        server_names: matched.server_names,
        transport_protocol: matched.transport_protocol,
        tls,
        rbac,
        kind,
    })
}

/// What decides whether two chains take the same connections.
type MatchKey = (Option<u16>, Vec<(IpAddr, u8)>, Vec<String>, Option<String>);

/// A filter chain match, validated.
#[derive(Debug, Default)]
struct ChainMatch {
    port: Option<u16>,
    prefixes: Vec<(IpAddr, u8)>,
    server_names: Vec<String>,
    transport_protocol: Option<String>,
}

fn chain_match(m: &FilterChainMatch) -> Result<ChainMatch, FieldError> {
    unsupported!(
        m,
        [
            address_suffix,
            suffix_len,
            direct_source_prefix_ranges,
            source_type,
            source_prefix_ranges,
            source_ports,
            application_protocols,
        ]
    );
    let transport_protocol = match m.transport_protocol.as_str() {
        "" => None,
        p @ ("tls" | "raw_buffer") => Some(p.to_string()),
        other => {
            return Err(FieldError::new(
                "transport_protocol",
                format!("{other:?} is not supported by weft-proxy (tls or raw_buffer)"),
            ));
        }
    };
    let server_names = m
        .server_names
        .iter()
        .enumerate()
        .map(|(i, name)| server_name(name).at_index("server_names", i))
        .collect::<Result<_, _>>()?;
    let port = match &m.destination_port {
        None => None,
        Some(p) => match u16::try_from(p.value) {
            Ok(port) if port > 0 => Some(port),
            _ => {
                return Err(FieldError::new("destination_port", format!("{} is not a port number", p.value)));
            }
        },
    };
    let prefixes = m
        .prefix_ranges
        .iter()
        .enumerate()
        .map(|(i, r)| cidr(r).at_index("prefix_ranges", i))
        .collect::<Result<_, _>>()?;
    Ok(ChainMatch { port, prefixes, server_names, transport_protocol })
}

/// A server name to match the SNI: a host name, or `*.` and a suffix; lowercase.
fn server_name(name: &str) -> Result<String, FieldError> {
    let host = name.strip_prefix("*.").unwrap_or(name);
    let valid = !host.is_empty()
        && host.split('.').all(|label| {
            !label.is_empty() && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    if !valid {
        return Err(FieldError::new(
            "",
            format!("{name:?} is not a server name (a host name, or *. and a suffix)"),
        ));
    }
    Ok(name.to_ascii_lowercase())
}

/// An address prefix: address and length (Envoy: length 0 when unset).
pub(crate) fn cidr(r: &CidrRange) -> Result<(IpAddr, u8), FieldError> {
    let ip: IpAddr = r.address_prefix.parse().map_err(|_| {
        FieldError::new("address_prefix", format!("{:?} is not an IP address", r.address_prefix))
    })?;
    let len = r.prefix_len.as_ref().map_or(0, |l| l.value);
    let max = if ip.is_ipv4() { 32 } else { 128 };
    match u8::try_from(len) {
        Ok(len) if u32::from(len) <= max => Ok((ip, len)),
        _ => Err(FieldError::new("prefix_len", format!("{len} is longer than a {max}-bit address"))),
    }
}

/// Whether a listener's `traffic_direction` is unset or what its name implies.
fn traffic_direction_agrees(l: &XdsListener) -> bool {
    use weft_xds_protos::envoy::config::core::v3::TrafficDirection;
    match TrafficDirection::try_from(l.traffic_direction) {
        Ok(TrafficDirection::Unspecified) => true,
        Ok(TrafficDirection::Inbound) => l.name == "inbound",
        Ok(TrafficDirection::Outbound) => l.name != "inbound",
        Err(_) => false,
    }
}

/// A network filter of a chain.
enum NetworkFilter {
    /// RBAC, before the terminal filter.
    Rbac(Rbac),
    /// The terminal filter.
    Terminal(ChainKind),
}

fn network_filter(f: &Filter, notes: &mut Notes) -> Result<NetworkFilter, FieldError> {
    let any = match &f.config_type {
        Some(filter::ConfigType::TypedConfig(any)) => any,
        Some(filter::ConfigType::ConfigDiscovery(_)) => {
            return Err(FieldError::unsupported("config_discovery"));
        }
        None => return Err(FieldError::required("typed_config")),
    };
    if holds::<HttpConnectionManager>(any) {
        let hcm = unpack::<HttpConnectionManager>(any).at("typed_config")?;
        http_manager(&hcm, notes).map(|h| NetworkFilter::Terminal(ChainKind::Http(h))).at("typed_config")
    } else if holds::<XdsTcpProxy>(any) {
        let tcp = unpack::<XdsTcpProxy>(any).at("typed_config")?;
        tcp_proxy(&tcp, notes).map(|t| NetworkFilter::Terminal(ChainKind::Tcp(t))).at("typed_config")
    } else if holds::<NetworkRbac>(any) {
        rbac::network_rbac(any).map(NetworkFilter::Rbac).at("typed_config")
    } else {
        Err(FieldError::new("typed_config", format!("unsupported filter {}", any.type_url)))
    }
}

fn http_manager(hcm: &HttpConnectionManager, notes: &mut Notes) -> Result<HttpManager, FieldError> {
    use http_connection_manager::CodecType;
    match CodecType::try_from(hcm.codec_type) {
        Ok(CodecType::Auto | CodecType::Http1 | CodecType::Http2) => {}
        Ok(CodecType::Http3) => {
            return Err(FieldError::new("codec_type", "HTTP3 is not supported by weft-proxy"));
        }
        Err(_) => return Err(FieldError::new("codec_type", format!("unknown codec {}", hcm.codec_type))),
    }
    unsupported!(
        hcm,
        [
            upgrade_configs,
            local_reply_config,
            early_header_mutation_extensions,
            path_normalization_options,
            merge_slashes,
            path_with_escaped_slashes_action,
            strip_matching_host_port,
            strip_trailing_host_dot,
            strip_port_mode,
        ]
    );
    if hcm.normalize_path.as_ref().is_some_and(|b| b.value) {
        return Err(FieldError::unsupported("normalize_path"));
    }
    ignored!(
        notes,
        hcm,
        "HttpConnectionManager",
        [
            add_user_agent,
            common_http_protocol_options,
            http1_safe_max_connection_duration,
            http2_protocol_options,
            http3_protocol_options,
            server_name,
            server_header_transformation,
            scheme_header_transformation,
            max_request_headers_kb,
            stream_idle_timeout,
            stream_flush_timeout,
            request_timeout,
            request_headers_timeout,
            drain_timeout,
            drain_timeout_jitter,
            delayed_close_timeout,
            access_log,
            access_log_flush_interval,
            flush_access_log_on_new_request,
            access_log_options,
            use_remote_address,
            xff_num_trusted_hops,
            original_ip_detection_extensions,
            internal_address_config,
            skip_xff_append,
            via,
            generate_request_id,
            preserve_external_request_id,
            always_set_request_id_in_response,
            forward_client_cert_details,
            set_current_client_cert_details,
            forward_client_cert_matcher,
            proxy_100_continue,
            represent_ipv4_remote_address_as_ipv4_mapped_ipv6,
            request_id_extension,
            stream_error_on_invalid_http_message,
            proxy_status_config,
            typed_header_validation_config,
            append_x_forwarded_port,
            append_local_overload,
            add_proxy_protocol_connection_state,
            forward_proto_config,
        ]
    );
    // weft-proxy always accepts absolute-form requests (apps use the outbound
    // port as an HTTP proxy), so `allow_absolute_url` is what it does anyway.
    if let Some(h1) = &hcm.http_protocol_options {
        ignored!(
            notes,
            h1,
            "Http1ProtocolOptions",
            [
                accept_http_10,
                default_host_for_http_10,
                header_key_format,
                enable_trailers,
                allow_chunked_length,
                override_stream_error_on_invalid_http_message,
                send_fully_qualified_url,
                use_balsa_parser,
                allow_custom_methods,
                ignore_http_11_upgrade,
            ]
        );
    }
    let routes = match &hcm.route_specifier {
        Some(http_connection_manager::RouteSpecifier::Rds(rds)) => {
            ads_source(rds.config_source.as_ref(), notes).at("rds.config_source")?;
            if rds.route_config_name.is_empty() {
                return Err(FieldError::required("rds.route_config_name"));
            }
            RouteSource::Rds(rds.route_config_name.clone())
        }
        Some(http_connection_manager::RouteSpecifier::RouteConfig(rc)) => {
            RouteSource::Inline(Arc::new(route::route_table(rc, notes).at("route_config")?))
        }
        Some(http_connection_manager::RouteSpecifier::ScopedRoutes(_)) => {
            return Err(FieldError::unsupported("scoped_routes"));
        }
        None => return Err(FieldError::new("route_specifier", "one of rds or route_config is required")),
    };
    let last = hcm.http_filters.len().saturating_sub(1);
    let mut router = false;
    let mut rbac = None;
    for (i, f) in hcm.http_filters.iter().enumerate() {
        match http_filter(f, notes).at_index("http_filters", i)? {
            Some(HttpFilterKind::Router) if i != last => {
                return Err(FieldError::new(
                    format!("http_filters[{i}]"),
                    "the router must be the last filter",
                ));
            }
            Some(HttpFilterKind::Router) => router = true,
            Some(HttpFilterKind::Rbac(_)) if rbac.is_some() => {
                return Err(FieldError::new(
                    format!("http_filters[{i}]"),
                    "a second RBAC filter is not supported by weft-proxy",
                ));
            }
            Some(HttpFilterKind::Rbac(decoded)) => rbac = Some(Arc::new(decoded)),
            None => {}
        }
    }
    if !router {
        return Err(FieldError::new("http_filters", "must end with the router (envoy.filters.http.router)"));
    }
    let tracing = match &hcm.tracing {
        Some(t) => super::trace::http_tracing(t, notes).at("tracing")?.map(Arc::new),
        None => None,
    };
    Ok(HttpManager { stat_prefix: hcm.stat_prefix.clone(), routes, rbac, tracing })
}

/// An HTTP filter weft-proxy runs.
enum HttpFilterKind {
    /// RBAC, checked before routing.
    Rbac(Rbac),
    /// The router.
    Router,
}

/// What an HTTP filter does. Optional or disabled filters that weft-proxy
/// does not run are skipped (`None`), as Envoy skips unknown optional ones.
fn http_filter(f: &HttpFilter, notes: &mut Notes) -> Result<Option<HttpFilterKind>, FieldError> {
    if let Some(http_filter::ConfigType::TypedConfig(any)) = &f.config_type {
        if holds::<Router>(any) {
            let router = unpack::<Router>(any).at("typed_config")?;
            router_options(&router, notes).at("typed_config")?;
            return Ok(Some(HttpFilterKind::Router));
        }
        if holds::<HttpRbac>(any) && !f.disabled {
            return rbac::http_rbac(any).map(|r| Some(HttpFilterKind::Rbac(r))).at("typed_config");
        }
    }
    if f.is_optional || f.disabled {
        notes.ignore("HttpFilter.is_optional");
        return Ok(None);
    }
    match &f.config_type {
        Some(http_filter::ConfigType::TypedConfig(any)) => {
            Err(FieldError::new("typed_config", format!("unsupported HTTP filter {}", any.type_url)))
        }
        Some(http_filter::ConfigType::ConfigDiscovery(_)) => Err(FieldError::unsupported("config_discovery")),
        // As in Envoy since 1.23: filters are found by type, not by name.
        None => Err(FieldError::new("typed_config", format!("required (filter {:?})", f.name))),
    }
}

fn router_options(r: &Router, notes: &mut Notes) -> Result<(), FieldError> {
    unsupported!(r, [upstream_http_filters]);
    ignored!(
        notes,
        r,
        "Router",
        [
            dynamic_stats,
            start_child_span,
            upstream_log,
            upstream_log_options,
            suppress_envoy_headers,
            strict_check_headers,
            respect_expected_rq_timeout,
            suppress_grpc_request_failure_code_stats,
            reject_connect_request_early_data,
        ]
    );
    Ok(())
}

fn tcp_proxy(t: &XdsTcpProxy, notes: &mut Notes) -> Result<TcpProxy, FieldError> {
    unsupported!(
        t,
        [on_demand, metadata_match, tunneling_config, proxy_protocol_tlvs, upstream_connect_mode]
    );
    ignored!(
        notes,
        t,
        "TcpProxy",
        [
            idle_timeout,
            downstream_idle_timeout,
            upstream_idle_timeout,
            access_log,
            max_connect_attempts,
            backoff_options,
            hash_policy,
            max_downstream_connection_duration,
            max_downstream_connection_duration_jitter_percentage,
            access_log_flush_interval,
            flush_access_log_on_connected,
            access_log_options,
            proxy_protocol_tlv_merge_policy,
            max_early_data_bytes,
            check_drain_close,
        ]
    );
    let clusters = match &t.cluster_specifier {
        Some(tcp_proxy::ClusterSpecifier::Cluster(name)) if !name.is_empty() => {
            vec![WeightedCluster { name: name.clone(), weight: 1 }]
        }
        Some(tcp_proxy::ClusterSpecifier::Cluster(_)) => return Err(FieldError::required("cluster")),
        Some(tcp_proxy::ClusterSpecifier::WeightedClusters(w)) => {
            tcp_weighted(&w.clusters).at("weighted_clusters")?
        }
        None => {
            return Err(FieldError::new(
                "cluster_specifier",
                "one of cluster or weighted_clusters is required",
            ));
        }
    };
    Ok(TcpProxy { stat_prefix: t.stat_prefix.clone(), clusters })
}

fn tcp_weighted(
    clusters: &[tcp_proxy::weighted_cluster::ClusterWeight],
) -> Result<Vec<WeightedCluster>, FieldError> {
    if clusters.is_empty() {
        return Err(FieldError::new("clusters", "at least one cluster is required"));
    }
    clusters.iter().enumerate().map(|(i, c)| tcp_cluster_weight(c).at_index("clusters", i)).collect()
}

fn tcp_cluster_weight(c: &tcp_proxy::weighted_cluster::ClusterWeight) -> Result<WeightedCluster, FieldError> {
    unsupported!(c, [metadata_match]);
    if c.name.is_empty() {
        return Err(FieldError::required("name"));
    }
    if c.weight == 0 {
        return Err(FieldError::new("weight", "must be at least 1"));
    }
    Ok(WeightedCluster { name: c.name.clone(), weight: c.weight })
}
