//! Decoding tests: what `weft control` emits for a small mesh ([`mesh`]),
//! every supported shape built by hand ([`shapes`]), every class of
//! rejection with its message ([`nacks`]), and the mTLS and RBAC shapes with
//! their rejections ([`mtls`]).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod mesh;
mod mtls;
mod nacks;
mod shapes;

use prost::{Message, Name};
use weft_xds_protos::envoy::config::cluster::v3::{Cluster as XdsCluster, cluster};
use weft_xds_protos::envoy::config::core::v3::{ConfigSource, config_source};
use weft_xds_protos::envoy::config::endpoint::v3::ClusterLoadAssignment;
use weft_xds_protos::envoy::config::listener::v3::Listener as XdsListener;
use weft_xds_protos::envoy::config::route::v3::{
    Route as XdsRoute, RouteAction, RouteConfiguration, RouteMatch, route, route_action, route_match,
};
use weft_xds_protos::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpFilter, http_connection_manager, http_filter,
};
use weft_xds_protos::google::protobuf::Any;

use super::{Notes, Resource, decode};
use crate::config::{Cluster, ClusterEndpoints, Listener, RouteTable};
use crate::xds::ResourceType;
use crate::xds::fixtures::*;

/// The resource type a message is.
fn kind_of<M: Name>() -> ResourceType {
    ResourceType::from_type_url(&M::type_url()).expect("a resource type")
}

/// Decodes a resource that must be valid; returns it and the ignored fields.
fn accept<M: Message + Name>(m: &M) -> (Resource, Notes) {
    let mut notes = Notes::default();
    let (_, resource) =
        decode(kind_of::<M>(), &any(m), &mut notes).unwrap_or_else(|e| panic!("rejected: {e}"));
    (resource, notes)
}

/// The error message of a resource that must be rejected.
fn reject<M: Message + Name>(m: &M) -> String {
    match decode(kind_of::<M>(), &any(m), &mut Notes::default()) {
        Ok((_, r)) => panic!("accepted: {r:?}"),
        Err(e) => e.to_string(),
    }
}

fn listener(m: &XdsListener) -> Listener {
    match accept(m).0 {
        Resource::Listener(l) => (*l).clone(),
        other => panic!("{other:?}"),
    }
}

fn route_table(m: &RouteConfiguration) -> RouteTable {
    match accept(m).0 {
        Resource::Route(r) => (*r).clone(),
        other => panic!("{other:?}"),
    }
}

fn cluster(m: &XdsCluster) -> (Cluster, Option<String>) {
    match accept(m).0 {
        Resource::Cluster(c, eds) => ((*c).clone(), eds),
        other => panic!("{other:?}"),
    }
}

fn endpoints(m: &ClusterLoadAssignment) -> ClusterEndpoints {
    match accept(m).0 {
        Resource::Endpoints(e) => (*e).clone(),
        other => panic!("{other:?}"),
    }
}
