//! Who the proxy is, as the control plane reads it from the xDS `Node`
//! (see `weft_control::xds::proxy_node`).

use std::net::IpAddr;

use weft_xds_protos::envoy::config::core::v3::{Node, node::UserAgentVersionType};
use weft_xds_protos::google::protobuf::{Struct, Value, value::Kind};

/// The proxy's identity and ports, sent as node metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    /// `node.id`, unique per proxy.
    pub id: String,
    /// The workload's namespace (`NAMESPACE`).
    pub namespace: String,
    /// The workload's ServiceAccount (`SERVICE_ACCOUNT`).
    pub service_account: String,
    /// The workload's IP (`POD_IP`): listeners bind there.
    pub pod_ip: IpAddr,
    /// The inbound listener's port (`INBOUND_PORT`).
    pub inbound_port: u16,
    /// The outbound listener's port (`OUTBOUND_PORT`).
    pub outbound_port: u16,
    /// The app's port, if known (`APP_PORT`).
    pub app_port: Option<u16>,
    /// Traffic reaches the proxy by redirection (iptables, in Kubernetes):
    /// `TRANSPARENT=true`, so opaque TCP is matched by original destination
    /// instead of getting a listener per service port on the pod IP.
    pub transparent: bool,
}

impl NodeInfo {
    /// The xDS `Node`: metadata values are strings, as in Envoy bootstraps.
    pub fn to_node(&self) -> Node {
        let mut fields = vec![
            ("NAMESPACE", self.namespace.clone()),
            ("SERVICE_ACCOUNT", self.service_account.clone()),
            ("POD_IP", self.pod_ip.to_string()),
            ("INBOUND_PORT", self.inbound_port.to_string()),
            ("OUTBOUND_PORT", self.outbound_port.to_string()),
        ];
        if let Some(port) = self.app_port {
            fields.push(("APP_PORT", port.to_string()));
        }
        if self.transparent {
            fields.push(("TRANSPARENT", "true".into()));
        }
        let metadata = Struct {
            fields: fields
                .into_iter()
                .map(|(k, v)| (k.to_string(), Value { kind: Some(Kind::StringValue(v)) }))
                .collect(),
        };
        Node {
            id: self.id.clone(),
            cluster: self.namespace.clone(),
            metadata: Some(metadata),
            user_agent_name: "weft-proxy".into(),
            user_agent_version_type: Some(UserAgentVersionType::UserAgentVersion(
                env!("CARGO_PKG_VERSION").into(),
            )),
            ..Default::default()
        }
    }
}
