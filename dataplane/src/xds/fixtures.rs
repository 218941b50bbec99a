//! Envoy resources for tests, built by hand: small, valid, and easy to vary.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use prost::{Message, Name};
use weft_xds_protos::envoy::config::cluster::v3::{Cluster as XdsCluster, cluster};
use weft_xds_protos::envoy::config::core::v3::{
    Address, AggregatedConfigSource, ConfigSource, SocketAddress, address, config_source, socket_address,
};
use weft_xds_protos::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint as XdsEndpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint,
};
use weft_xds_protos::envoy::config::listener::v3::{
    Filter, FilterChain as XdsFilterChain, Listener as XdsListener, filter,
};
use weft_xds_protos::envoy::config::route::v3::{
    Route as XdsRoute, RouteAction, RouteConfiguration, RouteMatch, VirtualHost as XdsVirtualHost, route,
    route_action, route_match,
};
use weft_xds_protos::envoy::extensions::filters::http::router::v3::Router;
use weft_xds_protos::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter, Rds, http_connection_manager, http_filter,
};
use weft_xds_protos::google::protobuf::Any;

/// Packs a message.
pub(crate) fn any<M: Message + Name>(m: &M) -> Any {
    Any { type_url: M::type_url(), value: m.encode_to_vec() }
}

pub(crate) fn socket(ip: &str, port: u32) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: ip.into(),
            port_specifier: Some(socket_address::PortSpecifier::PortValue(port)),
            ..Default::default()
        })),
    }
}

pub(crate) fn ads() -> ConfigSource {
    ConfigSource {
        config_source_specifier: Some(config_source::ConfigSourceSpecifier::Ads(AggregatedConfigSource {})),
        ..Default::default()
    }
}

pub(crate) fn router() -> HttpFilter {
    HttpFilter {
        name: "envoy.filters.http.router".into(),
        config_type: Some(http_filter::ConfigType::TypedConfig(any(&Router::default()))),
        ..Default::default()
    }
}

/// An HTTP connection manager taking route table `name` from RDS.
pub(crate) fn hcm_rds(name: &str) -> HttpConnectionManager {
    HttpConnectionManager {
        stat_prefix: "http".into(),
        route_specifier: Some(http_connection_manager::RouteSpecifier::Rds(Rds {
            config_source: Some(ads()),
            route_config_name: name.into(),
        })),
        http_filters: vec![router()],
        ..Default::default()
    }
}

/// A filter chain of one network filter.
pub(crate) fn chain<M: Message + Name>(filter: &M) -> XdsFilterChain {
    XdsFilterChain {
        filters: vec![Filter {
            name: "f".into(),
            config_type: Some(filter::ConfigType::TypedConfig(any(filter))),
        }],
        ..Default::default()
    }
}

/// A listener on 10.0.0.1:4140 with these chains.
pub(crate) fn listener_with(chains: Vec<XdsFilterChain>) -> XdsListener {
    XdsListener {
        name: "l".into(),
        address: Some(socket("10.0.0.1", 4140)),
        filter_chains: chains,
        ..Default::default()
    }
}

/// A route matching every path to `cluster`.
pub(crate) fn route_to(cluster: &str) -> XdsRoute {
    XdsRoute {
        name: "r".into(),
        r#match: Some(RouteMatch {
            path_specifier: Some(route_match::PathSpecifier::Prefix("/".into())),
            ..Default::default()
        }),
        action: Some(route::Action::Route(RouteAction {
            cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(cluster.into())),
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// A route table `rt` of one virtual host `vh` for `*` with these routes.
pub(crate) fn table_with(routes: Vec<XdsRoute>) -> RouteConfiguration {
    RouteConfiguration {
        name: "rt".into(),
        virtual_hosts: vec![XdsVirtualHost {
            name: "vh".into(),
            domains: vec!["*".into()],
            routes,
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// An EDS cluster over ADS.
pub(crate) fn eds_cluster(name: &str) -> XdsCluster {
    XdsCluster {
        name: name.into(),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(cluster::DiscoveryType::Eds as i32)),
        eds_cluster_config: Some(cluster::EdsClusterConfig {
            eds_config: Some(ads()),
            service_name: String::new(),
        }),
        ..Default::default()
    }
}

/// An lb endpoint at `ip:port`.
pub(crate) fn lb_endpoint(ip: &str, port: u32) -> LbEndpoint {
    LbEndpoint {
        host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(XdsEndpoint {
            address: Some(socket(ip, port)),
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// An assignment of these endpoints.
pub(crate) fn assignment(name: &str, eps: Vec<LbEndpoint>) -> ClusterLoadAssignment {
    ClusterLoadAssignment {
        cluster_name: name.into(),
        endpoints: vec![LocalityLbEndpoints { lb_endpoints: eps, ..Default::default() }],
        ..Default::default()
    }
}
