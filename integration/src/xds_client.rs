//! A scripted ADS client: the test plays the proxy, step by step.
//!
//! The test opens a stream (SotW or Delta), sends the requests it wants, and reads the
//! control plane's responses with a timeout, so it can check exactly what is sent when,
//! and how ACKs and NACKs are handled:
//!
//! ```no_run
//! # async fn demo(addr: std::net::SocketAddr) -> anyhow::Result<()> {
//! use std::time::Duration;
//! use weft_integration::xds_client::{ScriptedAdsClient, node, request};
//! use weft_xds_protos::type_url;
//!
//! let node = node("web-0", "default", "web", "127.1.2.3");
//! let mut ads = ScriptedAdsClient::connect_sotw(addr, node).await?;
//! ads.send(request(type_url::CLUSTER, &[], "", "", None))?;
//! let clusters = ads.next_response(Duration::from_secs(5)).await?;
//! ads.nack(&clusters, "cluster rejected by the test")?;
//! # Ok(()) }
//! ```
//!
//! The node's identity travels in `node.metadata`, as string fields [`META_NAMESPACE`],
//! [`META_SERVICE_ACCOUNT`] and [`META_POD_IP`]: this is the contract between proxies
//! and the control plane.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::transport::Channel;
use weft_xds_protos::envoy::config::core::v3::Node;
use weft_xds_protos::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use weft_xds_protos::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use weft_xds_protos::google::protobuf::{Any, Struct, Value, value::Kind};
use weft_xds_protos::google::rpc::Status;

/// Node metadata key: the workload's Kubernetes namespace.
pub const META_NAMESPACE: &str = "NAMESPACE";
/// Node metadata key: the workload's ServiceAccount (its identity).
pub const META_SERVICE_ACCOUNT: &str = "SERVICE_ACCOUNT";
/// Node metadata key: the workload's pod IP (locally, its loopback address).
pub const META_POD_IP: &str = "POD_IP";

/// gRPC code Envoy puts in a NACK's `error_detail` (INTERNAL).
const NACK_CODE: i32 = 13;

/// An Envoy `Node` for a workload, carrying its identity in `metadata`.
pub fn node(id: &str, namespace: &str, service_account: &str, pod_ip: &str) -> Node {
    let string = |s: &str| Value { kind: Some(Kind::StringValue(s.to_owned())) };
    let fields =
        [(META_NAMESPACE, namespace), (META_SERVICE_ACCOUNT, service_account), (META_POD_IP, pod_ip)]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), string(v)))
            .collect();
    Node {
        id: id.to_owned(),
        metadata: Some(Struct { fields }),
        user_agent_name: "weft-integration".to_owned(),
        ..Node::default()
    }
}

/// A SotW request. `error: Some(message)` makes it a NACK (then `version` should be the
/// last accepted one). No node: the stream adds it to its first request.
pub fn request(
    type_url: &str,
    names: &[&str],
    version: &str,
    nonce: &str,
    error: Option<&str>,
) -> DiscoveryRequest {
    DiscoveryRequest {
        type_url: type_url.to_owned(),
        resource_names: names.iter().map(|n| (*n).to_owned()).collect(),
        version_info: version.to_owned(),
        response_nonce: nonce.to_owned(),
        error_detail: error.map(nack_status),
        ..DiscoveryRequest::default()
    }
}

/// A Delta request changing the subscription (`["*"]` subscribes to everything).
pub fn delta_request(type_url: &str, subscribe: &[&str], unsubscribe: &[&str]) -> DeltaDiscoveryRequest {
    DeltaDiscoveryRequest {
        type_url: type_url.to_owned(),
        resource_names_subscribe: subscribe.iter().map(|n| (*n).to_owned()).collect(),
        resource_names_unsubscribe: unsubscribe.iter().map(|n| (*n).to_owned()).collect(),
        ..DeltaDiscoveryRequest::default()
    }
}

fn nack_status(message: &str) -> Status {
    Status { code: NACK_CODE, message: message.to_owned(), details: Vec::new() }
}

/// Decodes packed resources, checking each one's type URL against `M`'s.
pub fn decode_all<'a, M>(resources: impl IntoIterator<Item = &'a Any>) -> anyhow::Result<Vec<M>>
where
    M: prost::Message + prost::Name + Default,
{
    let want = M::type_url();
    resources
        .into_iter()
        .map(|any| {
            anyhow::ensure!(any.type_url == want, "resource is a {}, expected {want}", any.type_url);
            Ok(M::decode(any.value.as_slice())?)
        })
        .collect()
}

/// A connection to an ADS server, on which streams are opened.
#[derive(Debug, Clone)]
pub struct ScriptedAdsClient {
    client: AggregatedDiscoveryServiceClient<Channel>,
}

impl ScriptedAdsClient {
    /// Connects (HTTP/2, plaintext) to the ADS server at `addr`.
    pub async fn connect(addr: SocketAddr) -> anyhow::Result<ScriptedAdsClient> {
        let client = AggregatedDiscoveryServiceClient::connect(format!("http://{addr}"))
            .await
            .map_err(|e| anyhow::anyhow!("connecting to ADS at {addr}: {e:?}"))?;
        Ok(ScriptedAdsClient { client })
    }

    /// A client on a channel the caller made (e.g. over TLS, see
    /// [`LocalMesh::ads_client`](crate::mesh::LocalMesh::ads_client)).
    pub fn from_channel(channel: Channel) -> ScriptedAdsClient {
        ScriptedAdsClient { client: AggregatedDiscoveryServiceClient::new(channel) }
    }

    /// Connects and opens a SotW stream (`StreamAggregatedResources`) as `node`.
    pub async fn connect_sotw(addr: SocketAddr, node: Node) -> anyhow::Result<SotwStream> {
        Ok(ScriptedAdsClient::connect(addr).await?.sotw(node))
    }

    /// Connects and opens a Delta stream (`DeltaAggregatedResources`) as `node`.
    pub async fn connect_delta(addr: SocketAddr, node: Node) -> anyhow::Result<DeltaStream> {
        Ok(ScriptedAdsClient::connect(addr).await?.delta(node))
    }

    /// Opens another SotW stream on this connection.
    pub fn sotw(&self, node: Node) -> SotwStream {
        let mut client = self.client.clone();
        SotwStream {
            pipe: Pipe::open(move |requests| async move {
                Ok(client.stream_aggregated_resources(requests).await?.into_inner())
            }),
            node: Some(node),
            names: HashMap::new(),
            accepted: HashMap::new(),
        }
    }

    /// Opens another Delta stream on this connection.
    pub fn delta(&self, node: Node) -> DeltaStream {
        let mut client = self.client.clone();
        DeltaStream {
            pipe: Pipe::open(move |requests| async move {
                Ok(client.delta_aggregated_resources(requests).await?.into_inner())
            }),
            node: Some(node),
        }
    }
}

/// The two halves of a gRPC bidi stream, run by a background task so the test never
/// blocks on the server (a server may wait for the first request before answering headers).
#[derive(Debug)]
struct Pipe<Req, Resp> {
    tx: mpsc::UnboundedSender<Req>,
    rx: mpsc::UnboundedReceiver<Result<Resp, tonic::Status>>,
    ended: Option<tonic::Status>,
    task: JoinHandle<()>,
}

impl<Req: Send + 'static, Resp: Send + 'static> Pipe<Req, Resp> {
    fn open<F, Fut>(call: F) -> Pipe<Req, Resp>
    where
        F: FnOnce(UnboundedReceiverStream<Req>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<tonic::Streaming<Resp>, tonic::Status>> + Send,
    {
        let (tx, requests) = mpsc::unbounded_channel();
        let (responses, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            let mut inbound = match call(UnboundedReceiverStream::new(requests)).await {
                Ok(inbound) => inbound,
                Err(status) => {
                    let _ = responses.send(Err(status));
                    return;
                }
            };
            loop {
                match inbound.message().await {
                    Ok(Some(resp)) => {
                        if responses.send(Ok(resp)).is_err() {
                            return;
                        }
                    }
                    Ok(None) => {
                        let _ = responses.send(Err(tonic::Status::ok("the server ended the stream")));
                        return;
                    }
                    Err(status) => {
                        let _ = responses.send(Err(status));
                        return;
                    }
                }
            }
        });
        Pipe { tx, rx, ended: None, task }
    }

    fn send(&mut self, req: Req) -> anyhow::Result<()> {
        self.tx.send(req).map_err(|_| anyhow::anyhow!("the stream has ended: {:?}", self.ended))
    }

    async fn recv(&mut self, timeout: Duration) -> Option<Resp> {
        if self.ended.is_some() {
            return None;
        }
        match tokio::time::timeout(timeout, self.rx.recv()).await {
            Ok(Some(Ok(resp))) => Some(resp),
            Ok(Some(Err(status))) => {
                self.ended = Some(status);
                None
            }
            Ok(None) => {
                self.ended = Some(tonic::Status::unknown("the stream task stopped"));
                None
            }
            Err(_) => None,
        }
    }

    async fn next_response(&mut self, timeout: Duration) -> anyhow::Result<Resp> {
        match self.recv(timeout).await {
            Some(resp) => Ok(resp),
            None => match &self.ended {
                Some(status) => anyhow::bail!("the stream ended: {status:?}"),
                None => anyhow::bail!("no response within {timeout:?}"),
            },
        }
    }
}

impl<Req, Resp> Drop for Pipe<Req, Resp> {
    fn drop(&mut self) {
        // Cancels the RPC, which the server sees as the proxy going away.
        self.task.abort();
    }
}

/// A SotW ADS stream. It remembers, per type, the names last requested and the version
/// last ACKed, so [`SotwStream::ack`] and [`SotwStream::nack`] send what Envoy would.
#[derive(Debug)]
pub struct SotwStream {
    pipe: Pipe<DiscoveryRequest, DiscoveryResponse>,
    node: Option<Node>,
    names: HashMap<String, Vec<String>>,
    accepted: HashMap<String, String>,
}

impl SotwStream {
    /// Sends `req` as is, except that the stream's first request gets the node.
    pub fn send(&mut self, mut req: DiscoveryRequest) -> anyhow::Result<()> {
        if let Some(node) = self.node.take() {
            req.node.get_or_insert(node);
        }
        if req.error_detail.is_none() && !req.response_nonce.is_empty() {
            self.accepted.insert(req.type_url.clone(), req.version_info.clone());
        }
        self.names.insert(req.type_url.clone(), req.resource_names.clone());
        self.pipe.send(req)
    }

    /// The next response, or `None` after `timeout` or once the stream has ended
    /// (see [`SotwStream::ended`]).
    pub async fn recv(&mut self, timeout: Duration) -> Option<DiscoveryResponse> {
        self.pipe.recv(timeout).await
    }

    /// The next response, or an error saying the stream ended (with its status) or
    /// nothing came within `timeout`.
    pub async fn next_response(&mut self, timeout: Duration) -> anyhow::Result<DiscoveryResponse> {
        self.pipe.next_response(timeout).await
    }

    /// ACKs `resp`: its version and nonce, with the names last requested for its type.
    pub fn ack(&mut self, resp: &DiscoveryResponse) -> anyhow::Result<()> {
        let names = self.names.get(&resp.type_url).cloned().unwrap_or_default();
        self.send(DiscoveryRequest {
            type_url: resp.type_url.clone(),
            resource_names: names,
            version_info: resp.version_info.clone(),
            response_nonce: resp.nonce.clone(),
            ..DiscoveryRequest::default()
        })
    }

    /// NACKs `resp` with `message`: its nonce, the last ACKed version of its type, and
    /// the names last requested.
    pub fn nack(&mut self, resp: &DiscoveryResponse, message: &str) -> anyhow::Result<()> {
        let names = self.names.get(&resp.type_url).cloned().unwrap_or_default();
        self.send(DiscoveryRequest {
            type_url: resp.type_url.clone(),
            resource_names: names,
            version_info: self.accepted_version(&resp.type_url).to_owned(),
            response_nonce: resp.nonce.clone(),
            error_detail: Some(nack_status(message)),
            ..DiscoveryRequest::default()
        })
    }

    /// The version last ACKed for `type_url` ("" if none).
    pub fn accepted_version(&self, type_url: &str) -> &str {
        self.accepted.get(type_url).map_or("", String::as_str)
    }

    /// Why the stream ended, once it has (`Code::Ok` if the server closed it cleanly).
    pub fn ended(&self) -> Option<&tonic::Status> {
        self.pipe.ended.as_ref()
    }
}

/// A Delta ADS stream.
#[derive(Debug)]
pub struct DeltaStream {
    pipe: Pipe<DeltaDiscoveryRequest, DeltaDiscoveryResponse>,
    node: Option<Node>,
}

impl DeltaStream {
    /// Sends `req` as is, except that the stream's first request gets the node.
    pub fn send(&mut self, mut req: DeltaDiscoveryRequest) -> anyhow::Result<()> {
        if let Some(node) = self.node.take() {
            req.node.get_or_insert(node);
        }
        self.pipe.send(req)
    }

    /// The next response, or `None` after `timeout` or once the stream has ended
    /// (see [`DeltaStream::ended`]).
    pub async fn recv(&mut self, timeout: Duration) -> Option<DeltaDiscoveryResponse> {
        self.pipe.recv(timeout).await
    }

    /// The next response, or an error saying the stream ended (with its status) or
    /// nothing came within `timeout`.
    pub async fn next_response(&mut self, timeout: Duration) -> anyhow::Result<DeltaDiscoveryResponse> {
        self.pipe.next_response(timeout).await
    }

    /// ACKs `resp` (its nonce).
    pub fn ack(&mut self, resp: &DeltaDiscoveryResponse) -> anyhow::Result<()> {
        self.send(DeltaDiscoveryRequest {
            type_url: resp.type_url.clone(),
            response_nonce: resp.nonce.clone(),
            ..DeltaDiscoveryRequest::default()
        })
    }

    /// NACKs `resp` (its nonce) with `message`.
    pub fn nack(&mut self, resp: &DeltaDiscoveryResponse, message: &str) -> anyhow::Result<()> {
        self.send(DeltaDiscoveryRequest {
            type_url: resp.type_url.clone(),
            response_nonce: resp.nonce.clone(),
            error_detail: Some(nack_status(message)),
            ..DeltaDiscoveryRequest::default()
        })
    }

    /// Why the stream ended, once it has (`Code::Ok` if the server closed it cleanly).
    pub fn ended(&self) -> Option<&tonic::Status> {
        self.pipe.ended.as_ref()
    }
}
