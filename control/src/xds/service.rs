//! tonic service implementations: ADS and the per-type discovery services,
//! each a thin shell around [`stream::serve`](super::stream::serve).

use std::pin::Pin;

use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use weft_xds_protos::envoy::service::cluster::v3::cluster_discovery_service_server::{
    ClusterDiscoveryService, ClusterDiscoveryServiceServer,
};
use weft_xds_protos::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use weft_xds_protos::envoy::service::endpoint::v3::endpoint_discovery_service_server::{
    EndpointDiscoveryService, EndpointDiscoveryServiceServer,
};
use weft_xds_protos::envoy::service::listener::v3::listener_discovery_service_server::{
    ListenerDiscoveryService, ListenerDiscoveryServiceServer,
};
use weft_xds_protos::envoy::service::route::v3::route_discovery_service_server::{
    RouteDiscoveryService, RouteDiscoveryServiceServer,
};
use weft_xds_protos::envoy::service::secret::v3::secret_discovery_service_server::{
    SecretDiscoveryService, SecretDiscoveryServiceServer,
};
use weft_xds_protos::type_url;

use super::XdsContext;
use super::delta::Delta;
use super::peer::{authorize_node, client_certificate};
use super::sotw::{Sotw, SotwRequest};
use super::stream::{XdsProtocol, serve};

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// How many responses may wait for a slow proxy before the stream applies back-pressure.
const STREAM_BUFFER: usize = 16;

/// The xDS server: one value implements every discovery service.
#[derive(Debug, Clone)]
pub struct XdsServer {
    pub(super) ctx: XdsContext,
}

/// Checks the request's client certificate (when serving TLS), then serves the stream.
fn spawn<P: XdsProtocol>(
    ctx: &XdsContext,
    req: Request<impl Stream<Item = Result<P::Request, Status>> + Unpin + Send + 'static>,
    proto: P,
    only: Option<&'static str>,
) -> Result<Response<BoxStream<P::Response>>, Status> {
    let rx = spawn_stream(ctx, req, proto, only)?;
    Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
}

/// Starts serving a stream; its responses come out of the receiver.
pub(super) fn spawn_stream<P: XdsProtocol>(
    ctx: &XdsContext,
    req: Request<impl Stream<Item = Result<P::Request, Status>> + Unpin + Send + 'static>,
    proto: P,
    only: Option<&'static str>,
) -> Result<mpsc::Receiver<Result<P::Response, Status>>, Status> {
    let peer = client_certificate(ctx, req.peer_certs().as_deref().map(Vec::as_slice))?;
    let (tx, rx) = mpsc::channel(STREAM_BUFFER);
    tokio::spawn(serve(ctx.clone(), req.into_inner(), tx, proto, only, peer));
    Ok(rx)
}

impl XdsServer {
    fn sotw(
        &self,
        req: Request<Streaming<DiscoveryRequest>>,
        only: Option<&'static str>,
    ) -> Result<Response<BoxStream<DiscoveryResponse>>, Status> {
        // Per-type streams are rare: their requests are converted (ADS decodes its own).
        let req = req.map(|requests| requests.map(|r| r.map(SotwRequest::from)));
        spawn(&self.ctx, req, Sotw::new(self.ctx.metrics.clone()), only)
    }

    fn delta(
        &self,
        req: Request<Streaming<DeltaDiscoveryRequest>>,
        only: Option<&'static str>,
    ) -> Result<Response<BoxStream<DeltaDiscoveryResponse>>, Status> {
        spawn(&self.ctx, req, Delta::new(self.ctx.metrics.clone()), only)
    }

    /// A one-shot (REST-style) fetch: the current resources for the request.
    fn fetch(
        &self,
        req: Request<DiscoveryRequest>,
        only: &'static str,
    ) -> Result<Response<DiscoveryResponse>, Status> {
        let peer = client_certificate(&self.ctx, req.peer_certs().as_deref().map(Vec::as_slice))?;
        let mut req = req.into_inner();
        if req.type_url.is_empty() {
            req.type_url = only.into();
        }
        let node =
            super::proxy_node(req.node.as_ref()).map_err(|e| Status::invalid_argument(e.to_string()))?;
        authorize_node(&self.ctx, peer.as_ref(), &node)?;
        let snapshot = self.ctx.snapshots.borrow().clone();
        let view = snapshot.for_proxy(&node);
        let mut report = super::ProxyReport {
            connection: 0,
            node,
            stream: "fetch".into(),
            connected_at: 0,
            snapshot_version: snapshot.version,
            types: Default::default(),
            peer,
        };
        req.response_nonce.clear();
        Sotw::new(self.ctx.metrics.clone())
            .on_request(req.into(), &view, &snapshot, &mut report)
            .pop()
            .map(Response::new)
            .ok_or_else(|| Status::invalid_argument(format!("weft does not serve {only}")))
    }
}

macro_rules! per_type_service {
    ($trait:ident, $type_url:expr, $sotw_ty:ident, $sotw:ident, $delta_ty:ident, $delta:ident, $fetch:ident) => {
        #[tonic::async_trait]
        impl $trait for XdsServer {
            type $sotw_ty = BoxStream<DiscoveryResponse>;
            type $delta_ty = BoxStream<DeltaDiscoveryResponse>;

            async fn $sotw(
                &self,
                req: Request<Streaming<DiscoveryRequest>>,
            ) -> Result<Response<Self::$sotw_ty>, Status> {
                self.sotw(req, Some($type_url))
            }

            async fn $delta(
                &self,
                req: Request<Streaming<DeltaDiscoveryRequest>>,
            ) -> Result<Response<Self::$delta_ty>, Status> {
                self.delta(req, Some($type_url))
            }

            async fn $fetch(
                &self,
                req: Request<DiscoveryRequest>,
            ) -> Result<Response<DiscoveryResponse>, Status> {
                self.fetch(req, $type_url)
            }
        }
    };
}

per_type_service!(
    ClusterDiscoveryService,
    type_url::CLUSTER,
    StreamClustersStream,
    stream_clusters,
    DeltaClustersStream,
    delta_clusters,
    fetch_clusters
);
per_type_service!(
    ListenerDiscoveryService,
    type_url::LISTENER,
    StreamListenersStream,
    stream_listeners,
    DeltaListenersStream,
    delta_listeners,
    fetch_listeners
);
per_type_service!(
    RouteDiscoveryService,
    type_url::ROUTE,
    StreamRoutesStream,
    stream_routes,
    DeltaRoutesStream,
    delta_routes,
    fetch_routes
);
per_type_service!(
    EndpointDiscoveryService,
    type_url::ENDPOINT,
    StreamEndpointsStream,
    stream_endpoints,
    DeltaEndpointsStream,
    delta_endpoints,
    fetch_endpoints
);
per_type_service!(
    SecretDiscoveryService,
    type_url::SECRET,
    StreamSecretsStream,
    stream_secrets,
    DeltaSecretsStream,
    delta_secrets,
    fetch_secrets
);

/// Every xDS service, ready to add to a tonic server.
pub fn routes(ctx: XdsContext) -> tonic::service::Routes {
    let server = XdsServer { ctx };
    // ADS frames its own responses (see `framed`); the per-type services are tonic's.
    tonic::service::Routes::new(super::framed::AdsService::new(server.clone()))
        .add_service(ClusterDiscoveryServiceServer::new(server.clone()))
        .add_service(ListenerDiscoveryServiceServer::new(server.clone()))
        .add_service(RouteDiscoveryServiceServer::new(server.clone()))
        .add_service(EndpointDiscoveryServiceServer::new(server.clone()))
        .add_service(SecretDiscoveryServiceServer::new(server))
}
