//! Decoding in two steps: protobuf bytes into the generated Envoy types, then
//! validation into [`crate::config`] types. Everything Envoy would do
//! differently from weft-proxy is an error naming the field; fields that
//! change nothing on the wire (stats, access logs, tracing, ...) are collected
//! in [`Notes`] so the caller can warn about them once.
//!
//! Each resource type has its module, named as in the control plane:
//! [`listener`], [`route`], [`cluster`], [`endpoint`]; [`tls`] decodes the
//! transport sockets of listeners and clusters, [`rbac`] the RBAC filters.

// Servers still send deprecated fields, so a decoder must read them.
#![allow(deprecated)]

pub(crate) mod cluster;
pub(crate) mod endpoint;
pub(crate) mod listener;
pub(crate) mod rbac;
pub(crate) mod route;
pub(crate) mod tls;
pub(crate) mod trace;

#[cfg(test)]
mod tests;

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use prost::{Message, Name};
use weft_xds_protos::envoy::config::cluster::v3::Cluster as XdsCluster;
use weft_xds_protos::envoy::config::core::v3::{
    Address, ConfigSource, SocketAddress, address, config_source::ConfigSourceSpecifier, socket_address,
};
use weft_xds_protos::envoy::config::endpoint::v3::ClusterLoadAssignment;
use weft_xds_protos::envoy::config::listener::v3::Listener as XdsListener;
use weft_xds_protos::envoy::config::route::v3::RouteConfiguration;
use weft_xds_protos::google::protobuf::{Any, Duration};

use super::ResourceType;
use super::error::{At, FieldError};
use crate::config::{Cluster, ClusterEndpoints, Listener, RouteTable};

/// A validated resource, ready to go into a [`crate::config::Config`].
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Resource {
    /// LDS.
    Listener(Arc<Listener>),
    /// RDS.
    Route(Arc<RouteTable>),
    /// CDS, with the EDS resource name its endpoints come from (EDS clusters only).
    Cluster(Arc<Cluster>, Option<String>),
    /// EDS.
    Endpoints(Arc<ClusterEndpoints>),
}

/// Fields that were set and that weft-proxy ignores because they do not change
/// what goes over the wire, as `Message.field`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Notes {
    /// The ignored fields.
    pub(crate) ignored: BTreeSet<&'static str>,
}

impl Notes {
    /// Records an ignored field.
    pub(crate) fn ignore(&mut self, field: &'static str) {
        self.ignored.insert(field);
    }
}

/// Whether a proto field holds a non-default value.
pub(crate) trait IsSet {
    /// True when set (proto3: not the default).
    fn is_set(&self) -> bool;
}

impl<T> IsSet for Option<T> {
    fn is_set(&self) -> bool {
        self.is_some()
    }
}

impl<T> IsSet for Vec<T> {
    fn is_set(&self) -> bool {
        !self.is_empty()
    }
}

impl<K, V> IsSet for HashMap<K, V> {
    fn is_set(&self) -> bool {
        !self.is_empty()
    }
}

impl IsSet for String {
    fn is_set(&self) -> bool {
        !self.is_empty()
    }
}

impl IsSet for bool {
    fn is_set(&self) -> bool {
        *self
    }
}

macro_rules! impl_is_set_for_numbers {
    ($($t:ty),*) => {$(
        impl IsSet for $t {
            fn is_set(&self) -> bool {
                *self != 0
            }
        }
    )*};
}
impl_is_set_for_numbers!(i32, u32, i64, u64);

/// Notes each listed field of `$msg` that is set: weft-proxy ignores it.
macro_rules! ignored {
    ($notes:expr, $msg:expr, $ty:literal, [$($field:ident),* $(,)?]) => {
        $(
            if $crate::xds::decode::IsSet::is_set(&$msg.$field) {
                $notes.ignore(concat!($ty, ".", stringify!($field)));
            }
        )*
    };
}

/// Returns an error for the first listed field of `$msg` that is set:
/// weft-proxy does not implement it, and ignoring it would change behaviour.
macro_rules! unsupported {
    ($msg:expr, [$($field:ident),* $(,)?]) => {
        $(
            if $crate::xds::decode::IsSet::is_set(&$msg.$field) {
                return Err($crate::xds::error::FieldError::unsupported(stringify!($field)));
            }
        )*
    };
}

pub(crate) use {ignored, unsupported};

/// The message name of a type URL (what follows the last `/`).
pub(crate) fn type_name(type_url: &str) -> &str {
    type_url.rsplit('/').next().unwrap_or(type_url)
}

/// Whether an `Any` holds an `M`.
pub(crate) fn holds<M: Name>(any: &Any) -> bool {
    type_name(&any.type_url) == M::full_name()
}

/// Decodes the `M` in an `Any`.
pub(crate) fn unpack<M: Message + Default + Name>(any: &Any) -> Result<M, FieldError> {
    if !holds::<M>(any) {
        return Err(FieldError::new("", format!("expected {}, got {}", M::type_url(), any.type_url)));
    }
    M::decode(any.value.as_slice())
        .map_err(|e| FieldError::new("", format!("invalid {}: {e}", M::full_name())))
}

/// A protobuf duration as a std one.
pub(crate) fn duration(d: &Duration) -> Result<std::time::Duration, FieldError> {
    match (u64::try_from(d.seconds), u32::try_from(d.nanos)) {
        (Ok(secs), Ok(nanos)) if nanos < 1_000_000_000 => Ok(std::time::Duration::new(secs, nanos)),
        _ => Err(FieldError::new(
            "",
            format!("{}s {}ns is not a valid non-negative duration", d.seconds, d.nanos),
        )),
    }
}

/// A TCP socket address with a literal IP (weft-proxy resolves no names).
pub(crate) fn socket_addr(addr: Option<&Address>, notes: &mut Notes) -> Result<SocketAddr, FieldError> {
    let sa = match addr.and_then(|a| a.address.as_ref()) {
        Some(address::Address::SocketAddress(sa)) => sa,
        Some(address::Address::Pipe(_)) => return Err(FieldError::unsupported("pipe")),
        Some(address::Address::EnvoyInternalAddress(_)) => {
            return Err(FieldError::unsupported("envoy_internal_address"));
        }
        None => return Err(FieldError::required("socket_address")),
    };
    tcp_socket(sa, notes).at("socket_address")
}

fn tcp_socket(sa: &SocketAddress, notes: &mut Notes) -> Result<SocketAddr, FieldError> {
    if sa.protocol != socket_address::Protocol::Tcp as i32 {
        return Err(FieldError::new("protocol", "only TCP is supported by weft-proxy"));
    }
    unsupported!(sa, [resolver_name, network_namespace_filepath]);
    ignored!(notes, sa, "SocketAddress", [ipv4_compat]);
    let ip: IpAddr = sa.address.trim_matches(['[', ']']).parse().map_err(|_| {
        FieldError::new(
            "address",
            format!("{:?} is not an IP address (weft-proxy resolves no names)", sa.address),
        )
    })?;
    let port = match sa.port_specifier {
        Some(socket_address::PortSpecifier::PortValue(p)) => u16::try_from(p)
            .map_err(|_| FieldError::new("port_value", format!("{p} is not a port number")))?,
        Some(socket_address::PortSpecifier::NamedPort(_)) => {
            return Err(FieldError::unsupported("named_port"));
        }
        None => return Err(FieldError::required("port_value")),
    };
    Ok(SocketAddr::new(ip, port))
}

/// Checks that a config source says "over the ADS stream": weft-proxy has no
/// other way to fetch resources.
pub(crate) fn ads_source(source: Option<&ConfigSource>, notes: &mut Notes) -> Result<(), FieldError> {
    let Some(source) = source else { return Err(FieldError::required("")) };
    ignored!(notes, source, "ConfigSource", [initial_fetch_timeout]);
    match &source.config_source_specifier {
        Some(ConfigSourceSpecifier::Ads(_) | ConfigSourceSpecifier::Self_(_)) => Ok(()),
        Some(ConfigSourceSpecifier::Path(_)) => Err(FieldError::unsupported("path")),
        Some(ConfigSourceSpecifier::PathConfigSource(_)) => {
            Err(FieldError::unsupported("path_config_source"))
        }
        Some(ConfigSourceSpecifier::ApiConfigSource(_)) => Err(FieldError::new(
            "api_config_source",
            "not supported by weft-proxy: every resource comes over its ADS stream (use ads)",
        )),
        None => Err(FieldError::new("", "one of ads or self is required")),
    }
}

/// A resource decoded from protobuf, not validated yet (step one of two).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Parsed {
    /// LDS.
    Listener(Box<XdsListener>),
    /// RDS.
    Route(Box<RouteConfiguration>),
    /// CDS.
    Cluster(Box<XdsCluster>),
    /// EDS.
    Endpoints(Box<ClusterLoadAssignment>),
}

impl Parsed {
    /// The name inside the resource.
    pub(crate) fn name(&self) -> &str {
        match self {
            Parsed::Listener(l) => &l.name,
            Parsed::Route(r) => &r.name,
            Parsed::Cluster(c) => &c.name,
            Parsed::Endpoints(a) => &a.cluster_name,
        }
    }

    fn kind(&self) -> ResourceType {
        match self {
            Parsed::Listener(_) => ResourceType::Listener,
            Parsed::Route(_) => ResourceType::Route,
            Parsed::Cluster(_) => ResourceType::Cluster,
            Parsed::Endpoints(_) => ResourceType::Endpoint,
        }
    }
}

/// Step one: the protobuf message of type `kind` in `any`.
pub(crate) fn parse(kind: ResourceType, any: &Any) -> Result<Parsed, FieldError> {
    if type_name(&any.type_url) != type_name(kind.type_url()) {
        return Err(FieldError::new("", format!("a {} response holds a {}", kind.type_url(), any.type_url)));
    }
    Ok(match kind {
        ResourceType::Listener => Parsed::Listener(Box::new(unpack(any)?)),
        ResourceType::Route => Parsed::Route(Box::new(unpack(any)?)),
        ResourceType::Cluster => Parsed::Cluster(Box::new(unpack(any)?)),
        ResourceType::Endpoint => Parsed::Endpoints(Box::new(unpack(any)?)),
    })
}

/// What the proxy can serve, which decides what it must reject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Options {
    /// The proxy has workload credentials, so it serves TLS on filter chains
    /// and clusters; without them (`--insecure-plaintext`) TLS is rejected.
    pub(crate) tls: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options { tls: true }
    }
}

/// Step two: validation into runtime config. `name` is the resource's name in
/// the response (Delta), or the one inside it (SotW); the two must agree.
pub(crate) fn validate(
    parsed: &Parsed,
    name: &str,
    options: Options,
    notes: &mut Notes,
) -> Result<Resource, FieldError> {
    let field = parsed.kind().name_field();
    if parsed.name().is_empty() {
        return Err(FieldError::required(field));
    }
    if parsed.name() != name {
        let reason = format!("{:?} inside, but the response names the resource {name:?}", parsed.name());
        return Err(FieldError::new(field, reason));
    }
    let resource = match parsed {
        Parsed::Listener(l) => Resource::Listener(Arc::new(listener::listener(l, notes)?)),
        Parsed::Route(r) => Resource::Route(Arc::new(route::route_table(r, notes)?)),
        Parsed::Cluster(c) => {
            let (cluster, eds) = cluster::cluster(c, notes)?;
            Resource::Cluster(Arc::new(cluster), eds)
        }
        Parsed::Endpoints(a) => Resource::Endpoints(Arc::new(endpoint::assignment(a, name, notes)?)),
    };
    if !options.tls
        && let Some(field) = tls_field(&resource)
    {
        return Err(FieldError::new(
            field,
            "TLS needs a workload certificate, and this proxy runs without one (--insecure-plaintext)",
        ));
    }
    Ok(resource)
}

/// The field of the first TLS transport socket of a resource, if any.
fn tls_field(resource: &Resource) -> Option<String> {
    match resource {
        Resource::Listener(l) => {
            if let Some(i) = l.chains.iter().position(|c| c.tls.is_some()) {
                return Some(format!("filter_chains[{i}].transport_socket"));
            }
            l.default_chain
                .as_ref()
                .is_some_and(|c| c.tls.is_some())
                .then(|| "default_filter_chain.transport_socket".to_string())
        }
        Resource::Cluster(c, _) => c.tls.as_ref().map(|tls| {
            if tls.all_endpoints {
                "transport_socket"
            } else {
                "transport_socket_matches[0].transport_socket"
            }
            .to_string()
        }),
        Resource::Route(_) | Resource::Endpoints(_) => None,
    }
}

/// Both steps, for one resource of type `kind`; errors name the resource.
#[cfg(test)]
pub(crate) fn decode(
    kind: ResourceType,
    any: &Any,
    notes: &mut Notes,
) -> Result<(String, Resource), super::DecodeError> {
    decode_with(kind, any, Options::default(), notes)
}

/// [`decode`] with options.
#[cfg(test)]
pub(crate) fn decode_with(
    kind: ResourceType,
    any: &Any,
    options: Options,
    notes: &mut Notes,
) -> Result<(String, Resource), super::DecodeError> {
    let parsed = parse(kind, any).map_err(|e| e.in_resource(kind, "(unreadable)"))?;
    let name = parsed.name().to_string();
    match validate(&parsed, &name, options, notes) {
        Ok(resource) => Ok((name, resource)),
        Err(e) => Err(e.in_resource(kind, name)),
    }
}
