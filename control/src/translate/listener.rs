//! Listeners: each proxy's outbound listener (HTTP via RDS, opaque TCP by
//! original destination) and its inbound listener to the local app.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use prost::Name;
use weft_xds_protos::envoy::config::core::v3::{CidrRange, Http1ProtocolOptions};
use weft_xds_protos::envoy::config::core::v3::{
    GrpcService, TrafficDirection, TypedExtensionConfig, grpc_service,
};
use weft_xds_protos::envoy::config::listener::v3::{
    Filter, FilterChain, FilterChainMatch, Listener, ListenerFilter, filter, listener_filter,
};
use weft_xds_protos::envoy::config::route::v3::{RouteConfiguration, VirtualHost};
use weft_xds_protos::envoy::config::trace::v3::{OpenTelemetryConfig, tracing as trace_provider};
use weft_xds_protos::envoy::extensions::filters::http::router::v3::Router;
use weft_xds_protos::envoy::extensions::filters::listener::original_dst::v3::OriginalDst;
use weft_xds_protos::envoy::extensions::filters::listener::tls_inspector::v3::TlsInspector;
use weft_xds_protos::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter, Rds, http_connection_manager, http_filter,
};
use weft_xds_protos::envoy::extensions::filters::network::tcp_proxy::v3::{TcpProxy, tcp_proxy};
use weft_xds_protos::envoy::extensions::tracers::opentelemetry::samplers::v3::{
    ParentBasedSamplerConfig, TraceIdRatioBasedSamplerConfig,
};
use weft_xds_protos::envoy::r#type::v3::Percent;
use weft_xds_protos::envoy::r#type::v3::{FractionalPercent, fractional_percent};
use weft_xds_protos::google::protobuf::{Any, BoolValue, UInt32Value};

use super::endpoint::socket;
use super::rbac::{Authz, Chain};
use super::{MeshOptions, ProxyNode, SplitTable, TraceOptions, cluster, names, route, split, tls};
use crate::model::{MeshState, Protocol, Service, ServicePort, resolve_endpoints};

/// A message as an `Any`.
pub(crate) fn any<M: prost::Message + Name>(m: &M) -> Any {
    Any { type_url: M::type_url(), value: m.encode_to_vec() }
}

/// An HTTP connection manager whose `filters` run before the router.
fn hcm(
    stat_prefix: String,
    routes: http_connection_manager::RouteSpecifier,
    filters: Vec<HttpFilter>,
) -> Filter {
    let router = HttpFilter {
        name: "envoy.filters.http.router".into(),
        config_type: Some(http_filter::ConfigType::TypedConfig(any(&Router::default()))),
        ..Default::default()
    };
    let hcm = HttpConnectionManager {
        stat_prefix,
        codec_type: http_connection_manager::CodecType::Auto as i32,
        route_specifier: Some(routes),
        // Apps may use the outbound port as an HTTP proxy (absolute-form URIs).
        http_protocol_options: Some(Http1ProtocolOptions {
            allow_absolute_url: Some(BoolValue { value: true }),
            ..Default::default()
        }),
        http_filters: filters.into_iter().chain([router]).collect(),
        ..Default::default()
    };
    Filter {
        name: "envoy.filters.network.http_connection_manager".into(),
        config_type: Some(filter::ConfigType::TypedConfig(any(&hcm))),
    }
}

fn tcp_proxy_filter(stat_prefix: String, spec: tcp_proxy::ClusterSpecifier) -> Filter {
    let tcp = TcpProxy { stat_prefix, cluster_specifier: Some(spec), ..Default::default() };
    Filter {
        name: "envoy.filters.network.tcp_proxy".into(),
        config_type: Some(filter::ConfigType::TypedConfig(any(&tcp))),
    }
}

fn cidr(ip: IpAddr) -> CidrRange {
    CidrRange {
        address_prefix: ip.to_string(),
        prefix_len: Some(UInt32Value { value: if ip.is_ipv4() { 32 } else { 128 } }),
    }
}

/// The TCP proxy target of an opaque service port, split if a TrafficSplit applies.
fn tcp_target(
    state: &MeshState,
    splits: &SplitTable,
    svc: &Service,
    port: &ServicePort,
) -> tcp_proxy::ClusterSpecifier {
    let root = names::outbound_cluster(&svc.key, port.port);
    let Some(split) = splits.by_root.get(&svc.key).and_then(|k| state.traffic_splits.get(k)) else {
        return tcp_proxy::ClusterSpecifier::Cluster(root);
    };
    let backends = split::weighted_backends(state, split, port, &mut Vec::new());
    if backends.is_empty() {
        return tcp_proxy::ClusterSpecifier::Cluster(root);
    }
    tcp_proxy::ClusterSpecifier::WeightedClusters(tcp_proxy::WeightedCluster {
        clusters: backends
            .into_iter()
            .map(|(name, weight)| tcp_proxy::weighted_cluster::ClusterWeight {
                name,
                weight,
                ..Default::default()
            })
            .collect(),
    })
}

/// The outbound listener at `podIP:4140`. HTTP goes through the shared
/// `outbound` RouteConfiguration; opaque TCP service ports get a filter chain
/// matched on their ClusterIP:port, which applies when traffic arrives by
/// original destination (transparent redirection).
pub(crate) fn outbound(state: &MeshState, splits: &SplitTable, node: &ProxyNode) -> Listener {
    let mut filter_chains = Vec::new();
    for svc in state.services.values() {
        let Some(ip) = svc.cluster_ip else { continue };
        for port in svc.ports.iter().filter(|p| p.protocol == Protocol::Tcp) {
            filter_chains.push(FilterChain {
                name: names::outbound_cluster(&svc.key, port.port),
                filter_chain_match: Some(FilterChainMatch {
                    destination_port: Some(UInt32Value { value: u32::from(port.port) }),
                    prefix_ranges: vec![cidr(ip)],
                    ..Default::default()
                }),
                filters: vec![tcp_proxy_filter(
                    names::outbound_cluster(&svc.key, port.port),
                    tcp_target(state, splits, svc, port),
                )],
                ..Default::default()
            });
        }
    }
    let http = FilterChain {
        name: "outbound-http".into(),
        filters: vec![hcm(
            names::OUTBOUND.into(),
            http_connection_manager::RouteSpecifier::Rds(Rds {
                config_source: Some(cluster::ads()),
                route_config_name: names::OUTBOUND.into(),
            }),
            Vec::new(),
        )],
        ..Default::default()
    };
    // Redirected connections (iptables) are matched on where they were going.
    let listener_filters = if filter_chains.is_empty() {
        Vec::new()
    } else {
        vec![ListenerFilter {
            name: "envoy.filters.listener.original_dst".into(),
            config_type: Some(listener_filter::ConfigType::TypedConfig(any(&OriginalDst {}))),
            ..Default::default()
        }]
    };
    Listener {
        name: names::OUTBOUND.into(),
        address: Some(socket(node.pod_ip, node.outbound_port)),
        listener_filters,
        filter_chains,
        default_filter_chain: Some(http),
        ..Default::default()
    }
}

/// Locally, with no redirection, an app reaches an opaque TCP service at its
/// own pod IP on the service's port: one `outbound|<port>||<fqdn>` listener per
/// opaque service port. A port the workload itself listens on, or one of the
/// proxy's own, is left out (the proxy could not bind it).
pub(crate) fn local_tcp(state: &MeshState, splits: &SplitTable, node: &ProxyNode) -> Vec<Listener> {
    let tcp = |svc: &Service| svc.ports.iter().any(|p| p.protocol == Protocol::Tcp);
    if !state.services.values().any(tcp) {
        return Vec::new();
    }
    // The proxy's own pod lives in its namespace.
    let own_ports: BTreeSet<u16> = crate::model::in_namespace(&state.pods, &node.namespace)
        .filter(|p| p.ip == Some(node.pod_ip))
        .flat_map(|p| p.ports.iter().map(|cp| cp.port))
        .chain([node.inbound_port, node.outbound_port, ADMIN_PORT])
        .collect();
    let mut taken = BTreeSet::new();
    let mut out = Vec::new();
    for svc in state.services.values() {
        for port in svc.ports.iter().filter(|p| p.protocol == Protocol::Tcp) {
            if own_ports.contains(&port.port) || !taken.insert(port.port) {
                continue;
            }
            let name = names::outbound_cluster(&svc.key, port.port);
            out.push(Listener {
                name: name.clone(),
                address: Some(socket(node.pod_ip, port.port)),
                filter_chains: vec![FilterChain {
                    name: name.clone(),
                    filters: vec![tcp_proxy_filter(name, tcp_target(state, splits, svc, port))],
                    ..Default::default()
                }],
                ..Default::default()
            });
        }
    }
    out
}

/// The proxy's admin port, which no listener may take.
const ADMIN_PORT: u16 = 4191;

/// The service ports this proxy's workload serves, with the app's target port.
#[derive(Debug, Default)]
pub(crate) struct InboundServices<'a> {
    ports: Vec<(&'a Service, &'a ServicePort, u16)>,
}

impl InboundServices<'_> {
    /// The distinct app ports, sorted.
    pub(crate) fn target_ports(&self) -> BTreeSet<u16> {
        self.ports.iter().map(|(_, _, t)| *t).collect()
    }

    /// The distinct app ports, sorted, each with whether an HTTP service port targets it.
    pub(crate) fn target_ports_http(&self) -> BTreeMap<u16, bool> {
        let mut out = BTreeMap::new();
        for (_, port, target) in &self.ports {
            *out.entry(*target).or_insert(false) |= port.protocol == Protocol::Http;
        }
        out
    }
}

/// Finds every service port whose endpoints include this proxy's pod IP: the
/// HTTP ones, and with mTLS the opaque TCP ones too (the SNI tells them apart).
pub(crate) fn inbound_services<'a>(
    state: &'a MeshState,
    node: &ProxyNode,
    opts: &MeshOptions,
) -> InboundServices<'a> {
    let mut ports = Vec::new();
    for svc in state.services.values() {
        for port in svc.ports.iter().filter(|p| opts.mtls || p.protocol == Protocol::Http) {
            let target = resolve_endpoints(state, svc, port)
                .into_iter()
                .find(|ep| ep.ip == node.pod_ip)
                .map(|ep| ep.port);
            if let Some(target) = target {
                ports.push((svc, port, target));
            }
        }
    }
    InboundServices { ports }
}

/// [`inbound_services`] from an [`InboundIndex`](super::InboundIndex) lookup.
pub(crate) fn inbound_services_from<'a>(
    state: &'a MeshState,
    entries: &[super::inbound::InboundEntry],
) -> InboundServices<'a> {
    let ports = entries
        .iter()
        .filter_map(|(key, i, target)| {
            let svc = state.services.get(key)?;
            Some((svc, svc.ports.get(*i)?, *target))
        })
        .collect();
    InboundServices { ports }
}

/// The inbound listener at `podIP:4143`: the request's authority picks the
/// service port, and so the app port; with one app port, anything goes there.
pub(crate) fn inbound(node: &ProxyNode, services: &InboundServices<'_>) -> Listener {
    let mut seen = std::collections::HashSet::new();
    let mut virtual_hosts: Vec<VirtualHost> = services
        .ports
        .iter()
        .map(|(svc, port, target)| VirtualHost {
            name: format!("{}:{}", names::fqdn(&svc.key), port.port),
            domains: names::unique(names::domains(svc, port.port, &svc.key.namespace), &mut seen),
            routes: vec![route::to_cluster("default", route::match_all(), &names::inbound_cluster(*target))],
            ..Default::default()
        })
        .collect();
    let targets = services.target_ports();
    let fallback = match targets.iter().next() {
        Some(only) if targets.len() == 1 => {
            route::to_cluster("default", route::match_all(), &names::inbound_cluster(*only))
        }
        _ => route::direct(
            "unknown-authority",
            route::match_all(),
            404,
            "no service port of this workload matches the request authority\n",
        ),
    };
    virtual_hosts.push(VirtualHost {
        name: "fallback".into(),
        domains: vec!["*".into()],
        routes: vec![fallback],
        ..Default::default()
    });
    let routes = RouteConfiguration { name: names::INBOUND.into(), virtual_hosts, ..Default::default() };
    Listener {
        name: names::INBOUND.into(),
        address: Some(socket(node.pod_ip, node.inbound_port)),
        filter_chains: vec![FilterChain {
            name: "inbound-http".into(),
            filters: vec![hcm(
                names::INBOUND.into(),
                http_connection_manager::RouteSpecifier::RouteConfig(routes),
                Vec::new(),
            )],
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// The inbound listener at `podIP:4143` under mTLS: the TLS inspector reads
/// the SNI, which picks the service port's chain, and so the app port. Each
/// chain terminates mTLS (a client certificate is required), authorizes (RBAC,
/// when `authz` says so) and forwards to `inbound|<targetPort>||`. There is no
/// default chain: plaintext or an unknown SNI matches nothing and is closed.
/// `None` when the workload serves no service port (Envoy refuses a listener
/// without chains; nothing listening says the same).
pub(crate) fn inbound_mtls(
    node: &ProxyNode,
    services: &InboundServices<'_>,
    authz: Option<&Authz<'_>>,
) -> Option<Listener> {
    let filter_chains: Vec<FilterChain> = services
        .ports
        .iter()
        .map(|(svc, port, target)| {
            let chain = Chain { protocol: port.protocol, target_port: *target };
            let cluster = names::inbound_cluster(*target);
            let filters = match port.protocol {
                Protocol::Http => {
                    let routes = RouteConfiguration {
                        name: names::INBOUND.into(),
                        virtual_hosts: vec![VirtualHost {
                            name: format!("{}:{}", names::fqdn(&svc.key), port.port),
                            domains: vec!["*".into()],
                            routes: vec![route::to_cluster("default", route::match_all(), &cluster)],
                            ..Default::default()
                        }],
                        ..Default::default()
                    };
                    vec![hcm(
                        names::INBOUND.into(),
                        http_connection_manager::RouteSpecifier::RouteConfig(routes),
                        authz.map(|a| a.http_filter(chain)).into_iter().collect(),
                    )]
                }
                Protocol::Tcp => authz
                    .map(|a| a.network_filter(chain))
                    .into_iter()
                    .chain([tcp_proxy_filter(
                        names::INBOUND.into(),
                        tcp_proxy::ClusterSpecifier::Cluster(cluster),
                    )])
                    .collect(),
            };
            FilterChain {
                name: names::inbound_chain(&svc.key, port.port, *target),
                filter_chain_match: Some(FilterChainMatch {
                    server_names: vec![names::sni(&svc.key, port.port)],
                    transport_protocol: "tls".into(),
                    ..Default::default()
                }),
                filters,
                transport_socket: Some(tls::downstream()),
                ..Default::default()
            }
        })
        .collect();
    if filter_chains.is_empty() {
        return None;
    }
    Some(Listener {
        name: names::INBOUND.into(),
        address: Some(socket(node.pod_ip, node.inbound_port)),
        listener_filters: vec![ListenerFilter {
            name: "envoy.filters.listener.tls_inspector".into(),
            config_type: Some(listener_filter::ConfigType::TypedConfig(any(&TlsInspector::default()))),
            ..Default::default()
        }],
        filter_chains,
        ..Default::default()
    })
}

/// Turns tracing on in every HTTP connection manager of `listener`: the OpenTelemetry tracer,
/// exporting to [`cluster::OTEL_COLLECTOR_CLUSTER`] as `node.id`, sampling new traces at the
/// configured rate (a sampled parent is always followed). The listener's traffic direction
/// makes Envoy's spans CLIENT (outbound, egress) or SERVER (inbound, ingress).
pub(crate) fn with_tracing(listener: &mut Listener, node: &ProxyNode, opts: &TraceOptions) {
    let mut traced = false;
    let chains = listener.filter_chains.iter_mut().chain(listener.default_filter_chain.as_mut());
    for filter in chains.flat_map(|c| c.filters.iter_mut()) {
        let Some(filter::ConfigType::TypedConfig(any)) = &mut filter.config_type else { continue };
        if any.type_url != HttpConnectionManager::type_url() {
            continue;
        }
        // Built above from our own encoding: it always decodes.
        let Ok(mut hcm) = <HttpConnectionManager as prost::Message>::decode(any.value.as_slice()) else {
            continue;
        };
        hcm.tracing = Some(tracing_config(node, opts));
        *any = self::any(&hcm);
        traced = true;
    }
    if traced {
        let direction = if listener.name == names::INBOUND {
            TrafficDirection::Inbound
        } else {
            TrafficDirection::Outbound
        };
        listener.traffic_direction = direction as i32;
    }
}

/// OpenTelemetry's `ParentBased(TraceIdRatioBased(rate))`: a request whose parent made a
/// decision keeps it; a new trace is sampled at the configured rate.
fn parent_based_sampler(opts: &TraceOptions) -> TypedExtensionConfig {
    let ratio = TraceIdRatioBasedSamplerConfig {
        sampling_percentage: Some(FractionalPercent {
            numerator: opts.sampling.per_million(),
            denominator: fractional_percent::DenominatorType::Million as i32,
        }),
    };
    let parent_based = ParentBasedSamplerConfig {
        wrapped_sampler: Some(TypedExtensionConfig {
            name: "envoy.tracers.opentelemetry.samplers.trace_id_ratio_based".into(),
            typed_config: Some(any(&ratio)),
        }),
    };
    TypedExtensionConfig {
        name: "envoy.tracers.opentelemetry.samplers.parent_based".into(),
        typed_config: Some(any(&parent_based)),
    }
}

/// An HTTP connection manager's tracing: OpenTelemetry over gRPC to the collector cluster.
fn tracing_config(node: &ProxyNode, opts: &TraceOptions) -> http_connection_manager::Tracing {
    let otel = OpenTelemetryConfig {
        grpc_service: Some(GrpcService {
            target_specifier: Some(grpc_service::TargetSpecifier::EnvoyGrpc(grpc_service::EnvoyGrpc {
                cluster_name: cluster::OTEL_COLLECTOR_CLUSTER.into(),
                ..Default::default()
            })),
            ..Default::default()
        }),
        service_name: node.id.clone(),
        sampler: Some(parent_based_sampler(opts)),
        ..Default::default()
    };
    http_connection_manager::Tracing {
        // The sampler decides (a sampled parent is followed, else the rate); Envoy's own
        // random sampling, which would also drop requests whose parent is sampled, lets all through.
        random_sampling: Some(Percent { value: 100.0 }),
        provider: Some(weft_xds_protos::envoy::config::trace::v3::tracing::Http {
            name: "envoy.tracers.opentelemetry".into(),
            config_type: Some(trace_provider::http::ConfigType::TypedConfig(any(&otel))),
        }),
        // `spawn_upstream_span` stays unset: one span per hop, the connection manager's, which is
        // the parent the next hop sees.
        ..Default::default()
    }
}
