//! Reading a proxy's identity from its xDS `Node`.

use std::net::IpAddr;

use weft_xds_protos::envoy::config::core::v3::Node;
use weft_xds_protos::google::protobuf::{Struct, value::Kind};

use crate::translate::{INBOUND_PORT, OUTBOUND_PORT, ProxyNode};

/// Why a `Node` cannot be served.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NodeError {
    /// The first request of a stream carried no node.
    #[error("the first request on an xDS stream must carry a node")]
    Missing,
    /// `node.id` is empty.
    #[error("node.id is empty")]
    NoId,
    /// A required metadata field is absent.
    #[error("node.metadata.{0} is required (see `weft envoy-bootstrap`)")]
    MissingField(&'static str),
    /// A metadata field has a bad value.
    #[error("node.metadata.{field}: {reason}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// Why.
        reason: String,
    },
}

fn field(md: Option<&Struct>, name: &'static str) -> Option<String> {
    match md?.fields.get(name)?.kind.as_ref()? {
        Kind::StringValue(s) => Some(s.clone()),
        Kind::NumberValue(n) => Some(n.to_string()),
        _ => None,
    }
}

fn port(md: Option<&Struct>, name: &'static str, default: u16) -> Result<u16, NodeError> {
    match field(md, name) {
        None => Ok(default),
        Some(s) => {
            s.parse::<u16>().map_err(|e| NodeError::Invalid { field: name, reason: format!("{s:?}: {e}") })
        }
    }
}

/// Reads `NAMESPACE`, `SERVICE_ACCOUNT`, `POD_IP` and optional `INBOUND_PORT`
/// and `OUTBOUND_PORT` from the node metadata.
pub fn proxy_node(node: Option<&Node>) -> Result<ProxyNode, NodeError> {
    let node = node.ok_or(NodeError::Missing)?;
    if node.id.is_empty() {
        return Err(NodeError::NoId);
    }
    let md = node.metadata.as_ref();
    let namespace = field(md, "NAMESPACE").ok_or(NodeError::MissingField("NAMESPACE"))?;
    let service_account = field(md, "SERVICE_ACCOUNT").unwrap_or_else(|| "default".into());
    let ip = field(md, "POD_IP").ok_or(NodeError::MissingField("POD_IP"))?;
    let pod_ip: IpAddr =
        ip.parse().map_err(|e| NodeError::Invalid { field: "POD_IP", reason: format!("{ip:?}: {e}") })?;
    Ok(ProxyNode {
        id: node.id.clone(),
        namespace,
        service_account,
        pod_ip,
        inbound_port: port(md, "INBOUND_PORT", INBOUND_PORT)?,
        outbound_port: port(md, "OUTBOUND_PORT", OUTBOUND_PORT)?,
        transparent: field(md, "TRANSPARENT").is_some_and(|v| v == "true"),
    })
}
