//! State of the World ADS: every response holds the whole subscription; an
//! ACK echoes the response's version, a NACK the last accepted one.

use std::collections::{BTreeMap, BTreeSet};

use tonic::transport::Channel;
use weft_xds_protos::envoy::config::core::v3::Node;
use weft_xds_protos::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use weft_xds_protos::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use weft_xds_protos::google::rpc::Status as RpcStatus;

use super::ResourceType;
use super::client::{Protocol, Received, RequestStream};
use super::state::{Incoming, State, Update};

#[derive(Debug, Default)]
struct TypeState {
    /// The last version accepted: what an ACK (and a reconnect) says the proxy has.
    version: String,
    /// The last response's nonce.
    nonce: String,
    /// Subscribed names (empty for LDS and CDS: everything).
    names: BTreeSet<String>,
    /// Whether a request for the type went out on this stream.
    requested: bool,
}

/// SotW protocol state of one stream, per type; versions survive reconnects.
#[derive(Debug, Default)]
pub(crate) struct Sotw {
    types: BTreeMap<ResourceType, TypeState>,
}

impl Sotw {
    fn request(&self, kind: ResourceType, node: Option<Node>, error: Option<String>) -> DiscoveryRequest {
        let st = self.types.get(&kind);
        DiscoveryRequest {
            version_info: st.map(|s| s.version.clone()).unwrap_or_default(),
            node,
            resource_names: st.map(|s| s.names.iter().cloned().collect()).unwrap_or_default(),
            type_url: kind.type_url().to_string(),
            response_nonce: st.map(|s| s.nonce.clone()).unwrap_or_default(),
            error_detail: error.map(|message| RpcStatus {
                code: tonic::Code::InvalidArgument as i32,
                message,
                details: vec![],
            }),
            ..Default::default()
        }
    }
}

impl Protocol for Sotw {
    type Request = DiscoveryRequest;
    type Response = DiscoveryResponse;
    const NAME: &'static str = "sotw";

    async fn open(
        client: &mut AggregatedDiscoveryServiceClient<Channel>,
        requests: RequestStream<DiscoveryRequest>,
    ) -> Result<tonic::Streaming<DiscoveryResponse>, tonic::Status> {
        Ok(client.stream_aggregated_resources(requests).await?.into_inner())
    }

    fn initial(&mut self, state: &State, node: Node) -> Vec<DiscoveryRequest> {
        let mut node = Some(node);
        let mut out = Vec::new();
        for kind in ResourceType::ALL {
            let names = if kind.is_wildcard() { BTreeSet::new() } else { state.wanted(kind) };
            let st = self.types.entry(kind).or_default();
            // A nonce belongs to one stream.
            st.nonce.clear();
            st.names = names;
            st.requested = kind.is_wildcard() || !st.names.is_empty();
            if st.requested {
                out.push(self.request(kind, node.take(), None));
            }
        }
        out
    }

    fn receive(&mut self, resp: DiscoveryResponse) -> Received {
        let Some(kind) = ResourceType::from_type_url(&resp.type_url) else {
            return Received::UnknownType(resp.type_url);
        };
        self.types.entry(kind).or_default().nonce = resp.nonce;
        let version = resp.version_info;
        let resources = resp
            .resources
            .into_iter()
            .map(|any| Incoming { name: None, version: version.clone(), any: Some(any) })
            .collect();
        Received::Update(Update {
            kind,
            system_version: version,
            resources,
            removed: Vec::new(),
            state_of_the_world: true,
        })
    }

    fn ack(&mut self, kind: ResourceType, version: &str, error: Option<String>) -> DiscoveryRequest {
        if error.is_none() {
            self.types.entry(kind).or_default().version = version.to_string();
        }
        self.request(kind, None, error)
    }

    fn subscribe(&mut self, kind: ResourceType, names: &BTreeSet<String>) -> Option<DiscoveryRequest> {
        let st = self.types.entry(kind).or_default();
        if st.names == *names && (st.requested || names.is_empty()) {
            return None;
        }
        st.names = names.clone();
        st.requested = true;
        Some(self.request(kind, None, None))
    }
}
