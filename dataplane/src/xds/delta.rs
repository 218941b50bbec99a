//! Delta (incremental) ADS: responses carry changed resources and removed
//! names; subscriptions change by difference; a reconnect says what the
//! proxy has in `initial_resource_versions`.

use std::collections::{BTreeMap, BTreeSet};

use tonic::transport::Channel;
use weft_xds_protos::envoy::config::core::v3::Node;
use weft_xds_protos::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use weft_xds_protos::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DeltaDiscoveryResponse};
use weft_xds_protos::google::rpc::Status as RpcStatus;

use super::ResourceType;
use super::client::{Protocol, Received, RequestStream};
use super::state::{Incoming, State, Update};

/// Delta protocol state of one stream: what each type is subscribed to.
#[derive(Debug, Default)]
pub(crate) struct Delta {
    /// Names subscribed per type (LDS and CDS subscribe to everything).
    names: BTreeMap<ResourceType, BTreeSet<String>>,
    /// The last response's nonce per type, for the ACK.
    nonces: BTreeMap<ResourceType, String>,
}

impl Protocol for Delta {
    type Request = DeltaDiscoveryRequest;
    type Response = DeltaDiscoveryResponse;
    const NAME: &'static str = "delta";

    async fn open(
        client: &mut AggregatedDiscoveryServiceClient<Channel>,
        requests: RequestStream<DeltaDiscoveryRequest>,
    ) -> Result<tonic::Streaming<DeltaDiscoveryResponse>, tonic::Status> {
        Ok(client.delta_aggregated_resources(requests).await?.into_inner())
    }

    fn initial(&mut self, state: &State, node: Node) -> Vec<DeltaDiscoveryRequest> {
        self.names.clear();
        self.nonces.clear();
        let mut node = Some(node);
        let mut out = Vec::new();
        for kind in ResourceType::ALL {
            let names = if kind.is_wildcard() { BTreeSet::new() } else { state.wanted(kind) };
            if !kind.is_wildcard() && names.is_empty() {
                continue;
            }
            out.push(DeltaDiscoveryRequest {
                node: node.take(),
                type_url: kind.type_url().to_string(),
                // Empty for LDS and CDS: the (legacy) wildcard subscription, as Envoy sends it.
                resource_names_subscribe: names.iter().cloned().collect(),
                initial_resource_versions: state.versions(kind).into_iter().collect(),
                ..Default::default()
            });
            self.names.insert(kind, names);
        }
        out
    }

    fn receive(&mut self, resp: DeltaDiscoveryResponse) -> Received {
        let Some(kind) = ResourceType::from_type_url(&resp.type_url) else {
            return Received::UnknownType(resp.type_url);
        };
        self.nonces.insert(kind, resp.nonce);
        let resources = resp
            .resources
            .into_iter()
            .map(|r| Incoming { name: Some(r.name), version: r.version, any: r.resource })
            .collect();
        let mut removed = resp.removed_resources;
        removed.extend(resp.removed_resource_names.into_iter().map(|r| r.name));
        Received::Update(Update {
            kind,
            system_version: resp.system_version_info,
            resources,
            removed,
            state_of_the_world: false,
        })
    }

    fn ack(&mut self, kind: ResourceType, _version: &str, error: Option<String>) -> DeltaDiscoveryRequest {
        DeltaDiscoveryRequest {
            type_url: kind.type_url().to_string(),
            response_nonce: self.nonces.get(&kind).cloned().unwrap_or_default(),
            error_detail: error.map(|message| RpcStatus {
                code: tonic::Code::InvalidArgument as i32,
                message,
                details: vec![],
            }),
            ..Default::default()
        }
    }

    fn subscribe(&mut self, kind: ResourceType, names: &BTreeSet<String>) -> Option<DeltaDiscoveryRequest> {
        let current = self.names.entry(kind).or_default();
        let subscribe: Vec<String> = names.difference(current).cloned().collect();
        let unsubscribe: Vec<String> = current.difference(names).cloned().collect();
        if subscribe.is_empty() && unsubscribe.is_empty() {
            return None;
        }
        *current = names.clone();
        Some(DeltaDiscoveryRequest {
            type_url: kind.type_url().to_string(),
            resource_names_subscribe: subscribe,
            resource_names_unsubscribe: unsubscribe,
            ..Default::default()
        })
    }
}
