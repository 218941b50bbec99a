//! The xDS client: one ADS stream to the control plane (Delta by default, or
//! State of the World), decoding Envoy resources into [`crate::config`].
//!
//! - `decode` turns each resource into runtime config in two steps
//!   (protobuf, then validation) and names what it cannot serve;
//! - `state` keeps the resources, warms listeners and clusters until what
//!   they refer to has arrived, builds each new [`Config`](crate::config::Config)
//!   and says when the proxy is ready ([`Status`]);
//! - `client` runs the stream ([`XdsClient`]): subscriptions, ACK/NACK,
//!   reconnects with backoff, over the `delta` or `sotw` wire protocol.
//!
//! ```no_run
//! # async fn run(metrics: std::sync::Arc<weft_proxy::metrics::Metrics>) {
//! use weft_proxy::xds::{ClientConfig, NodeInfo, XdsClient};
//!
//! let node = NodeInfo {
//!     id: "frontend.payments".into(),
//!     namespace: "payments".into(),
//!     service_account: "frontend".into(),
//!     pod_ip: "127.0.10.1".parse().unwrap(),
//!     inbound_port: 4143,
//!     outbound_port: 4140,
//!     app_port: Some(8080),
//!     transparent: false,
//! };
//! let (client, handle) = XdsClient::new(ClientConfig::new("127.0.0.1:8086", node), metrics);
//! let (_stop, shutdown) = tokio::sync::watch::channel(false);
//! tokio::spawn(client.run(shutdown));
//! // `handle.config` is the config to serve; `handle.status` says when it is ready.
//! # let _ = handle;
//! # }
//! ```

mod client;
pub(crate) mod decode;
mod delta;
mod error;
#[cfg(test)]
pub(crate) mod fixtures;
mod node;
mod sotw;
mod state;

use std::fmt;

pub use client::{Backoff, ClientConfig, Mode, XdsClient, XdsHandle};
pub use error::DecodeError;
pub use node::NodeInfo;
pub use state::{Held, Nack, ResourceStatus, Status, TypeStatus};

/// The resource types weft-proxy subscribes to, in the order Envoy requests them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ResourceType {
    /// CDS: `envoy.config.cluster.v3.Cluster`.
    Cluster,
    /// EDS: `envoy.config.endpoint.v3.ClusterLoadAssignment`.
    Endpoint,
    /// LDS: `envoy.config.listener.v3.Listener`.
    Listener,
    /// RDS: `envoy.config.route.v3.RouteConfiguration`.
    Route,
}

impl ResourceType {
    /// Every type, in the order Envoy subscribes (clusters before the listeners that use them).
    pub const ALL: [ResourceType; 4] =
        [ResourceType::Cluster, ResourceType::Endpoint, ResourceType::Listener, ResourceType::Route];

    /// The type URL.
    pub fn type_url(self) -> &'static str {
        use weft_xds_protos::type_url;
        match self {
            ResourceType::Cluster => type_url::CLUSTER,
            ResourceType::Endpoint => type_url::ENDPOINT,
            ResourceType::Listener => type_url::LISTENER,
            ResourceType::Route => type_url::ROUTE,
        }
    }

    /// The type for a type URL.
    pub fn from_type_url(url: &str) -> Option<ResourceType> {
        ResourceType::ALL.into_iter().find(|t| t.type_url() == url)
    }

    /// The short name (`cds`, `eds`, `lds`, `rds`), as in metrics and [`crate::config::Config::versions`].
    pub fn short(self) -> &'static str {
        match self {
            ResourceType::Cluster => "cds",
            ResourceType::Endpoint => "eds",
            ResourceType::Listener => "lds",
            ResourceType::Route => "rds",
        }
    }

    /// Whether the proxy subscribes to every resource of the type (LDS, CDS)
    /// rather than to names it learns from others (RDS, EDS).
    pub fn is_wildcard(self) -> bool {
        matches!(self, ResourceType::Cluster | ResourceType::Listener)
    }

    /// The field of the resource that holds its name.
    pub(crate) fn name_field(self) -> &'static str {
        match self {
            ResourceType::Endpoint => "cluster_name",
            _ => "name",
        }
    }
}

impl fmt::Display for ResourceType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ResourceType::Cluster => "cluster",
            ResourceType::Endpoint => "endpoints",
            ResourceType::Listener => "listener",
            ResourceType::Route => "route",
        })
    }
}
