//! A scriptable fake ADS server: a real tonic server on 127.0.0.1:0 whose
//! streams the test drives by hand, reading each request the proxy sends and
//! choosing each response.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod resources;

use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use futures::Stream;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::{TcpListenerStream, UnboundedReceiverStream};
use tonic::{Request, Response, Status, Streaming};
use weft_xds_protos::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use weft_xds_protos::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};

/// How long a test waits for anything before it fails.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// One ADS stream, as the server sees it.
pub struct AdsStream<Req, Resp> {
    requests: mpsc::UnboundedReceiver<Req>,
    responses: mpsc::UnboundedSender<Result<Resp, Status>>,
}

impl<Req: std::fmt::Debug, Resp> AdsStream<Req, Resp> {
    /// The next request the proxy sends; fails the test after [`PATIENCE`].
    pub async fn request(&mut self) -> Req {
        match tokio::time::timeout(PATIENCE, self.requests.recv()).await {
            Ok(Some(r)) => r,
            Ok(None) => panic!("the proxy closed the stream"),
            Err(_) => panic!("no request from the proxy within {PATIENCE:?}"),
        }
    }

    /// Asserts the proxy sends nothing more for a short while.
    pub async fn no_request(&mut self) {
        if let Ok(Some(r)) = tokio::time::timeout(Duration::from_millis(200), self.requests.recv()).await {
            panic!("unexpected request: {r:?}");
        }
    }

    /// Sends a response.
    pub fn respond(&self, resp: Resp) {
        self.responses.send(Ok(resp)).expect("the stream is open");
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

struct Service {
    sotw: mpsc::UnboundedSender<AdsStream<DiscoveryRequest, DiscoveryResponse>>,
    delta: mpsc::UnboundedSender<AdsStream<DeltaDiscoveryRequest, DeltaDiscoveryResponse>>,
}

/// Forwards a stream's requests to the test and its responses to the proxy.
fn bridge<Req: Send + 'static, Resp: Send + 'static>(
    mut incoming: Streaming<Req>,
) -> (AdsStream<Req, Resp>, BoxStream<Resp>)
where
    Streaming<Req>: Stream<Item = Result<Req, Status>>,
{
    let (req_tx, req_rx) = mpsc::unbounded_channel();
    let (resp_tx, resp_rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(Ok(req)) = incoming.next().await {
            if req_tx.send(req).is_err() {
                break;
            }
        }
    });
    (AdsStream { requests: req_rx, responses: resp_tx }, Box::pin(UnboundedReceiverStream::new(resp_rx)))
}

#[tonic::async_trait]
impl AggregatedDiscoveryService for Service {
    type StreamAggregatedResourcesStream = BoxStream<DiscoveryResponse>;
    type DeltaAggregatedResourcesStream = BoxStream<DeltaDiscoveryResponse>;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        let (stream, out) = bridge(request.into_inner());
        self.sotw.send(stream).map_err(|_| Status::unavailable("test over"))?;
        Ok(Response::new(out))
    }

    async fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        let (stream, out) = bridge(request.into_inner());
        self.delta.send(stream).map_err(|_| Status::unavailable("test over"))?;
        Ok(Response::new(out))
    }
}

/// The fake server: where it listens and the streams proxies open.
pub struct FakeAds {
    /// Its address.
    pub addr: SocketAddr,
    sotw: mpsc::UnboundedReceiver<AdsStream<DiscoveryRequest, DiscoveryResponse>>,
    delta: mpsc::UnboundedReceiver<AdsStream<DeltaDiscoveryRequest, DeltaDiscoveryResponse>>,
}

impl FakeAds {
    /// Starts serving on 127.0.0.1 at a free port.
    pub async fn start() -> FakeAds {
        FakeAds::start_at("127.0.0.1:0".parse().unwrap()).await
    }

    /// Starts serving at `addr`.
    pub async fn start_at(addr: SocketAddr) -> FakeAds {
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (sotw_tx, sotw) = mpsc::unbounded_channel();
        let (delta_tx, delta) = mpsc::unbounded_channel();
        let service = Service { sotw: sotw_tx, delta: delta_tx };
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(AggregatedDiscoveryServiceServer::new(service))
                .serve_with_incoming(TcpListenerStream::new(listener)),
        );
        FakeAds { addr, sotw, delta }
    }

    /// The next Delta stream a proxy opens.
    pub async fn delta_stream(&mut self) -> AdsStream<DeltaDiscoveryRequest, DeltaDiscoveryResponse> {
        tokio::time::timeout(PATIENCE, self.delta.recv()).await.expect("a Delta stream in time").unwrap()
    }

    /// The next SotW stream a proxy opens.
    pub async fn sotw_stream(&mut self) -> AdsStream<DiscoveryRequest, DiscoveryResponse> {
        tokio::time::timeout(PATIENCE, self.sotw.recv()).await.expect("a SotW stream in time").unwrap()
    }
}
