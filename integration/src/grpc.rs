//! A gRPC app and its client, on weft's own protos: the server implements
//! `weft.identity.v1.Identity` (unary) and `weft.tap.v1.Tap` (server streaming) with
//! answers a test can recognise, and the client calls it through a proxy, naming the
//! service in the `:authority` as a meshed app would.
//!
//! - `Certify` answers with `leaf_certificate` = `"<server name> certifies <identity>"`
//!   and the request's token as the only `trust_bundle` entry.
//! - `Observe` streams `max_events_per_second` events (at most [`MAX_EVENTS`]), 10 ms
//!   apart, with ids 1, 2, ..., the filter's `authority`, path `/event/<id>`, and the
//!   server's name as `cluster`.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::Stream;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::transport::{Channel, Endpoint};
use weft_xds_protos::identity::identity_client::IdentityClient;
use weft_xds_protos::identity::identity_server::{Identity, IdentityServer};
use weft_xds_protos::identity::{CertifyRequest, CertifyResponse};
use weft_xds_protos::tap::tap_client::TapClient;
use weft_xds_protos::tap::tap_server::{Tap, TapServer};
use weft_xds_protos::tap::{Filter, ObserveRequest, TapEvent};

/// The most events one `Observe` call streams.
pub const MAX_EVENTS: u32 = 1000;

/// Time between two streamed events.
const EVENT_INTERVAL: Duration = Duration::from_millis(10);

/// How long a client call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// A running gRPC test server; it stops when dropped.
#[derive(Debug)]
pub struct GrpcServer {
    addr: SocketAddr,
    calls: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

#[derive(Debug, Clone)]
struct Service {
    name: String,
    calls: Arc<AtomicU64>,
}

impl GrpcServer {
    /// Serves both services on `addr` (HTTP/2 cleartext; port 0 picks one), answering as `name`.
    pub async fn start(addr: SocketAddr, name: &str) -> anyhow::Result<GrpcServer> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("gRPC server {name}: binding {addr}: {e}"))?;
        let addr = listener.local_addr()?;
        let calls = Arc::new(AtomicU64::new(0));
        let service = Service { name: name.to_owned(), calls: calls.clone() };
        let server = tonic::transport::Server::builder()
            .add_service(IdentityServer::new(service.clone()))
            .add_service(TapServer::new(service))
            .serve_with_incoming(TcpListenerStream::new(listener));
        let task = tokio::spawn(async move {
            let _ = server.await;
        });
        Ok(GrpcServer { addr, calls, task })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Calls answered so far (both services).
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }
}

impl Drop for GrpcServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tonic::async_trait]
impl Identity for Service {
    async fn certify(
        &self,
        request: tonic::Request<CertifyRequest>,
    ) -> Result<tonic::Response<CertifyResponse>, tonic::Status> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let req = request.into_inner();
        Ok(tonic::Response::new(CertifyResponse {
            leaf_certificate: format!("{} certifies {}", self.name, req.identity).into_bytes(),
            trust_bundle: vec![req.token.into_bytes()],
            ..CertifyResponse::default()
        }))
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<TapEvent, tonic::Status>> + Send>>;

#[tonic::async_trait]
impl Tap for Service {
    type ObserveStream = EventStream;

    async fn observe(
        &self,
        request: tonic::Request<ObserveRequest>,
    ) -> Result<tonic::Response<EventStream>, tonic::Status> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let req = request.into_inner();
        let n = req.max_events_per_second.min(MAX_EVENTS);
        let authority = req.filter.map(|f| f.authority).unwrap_or_default();
        let name = self.name.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            for id in 1..=u64::from(n) {
                if id > 1 {
                    tokio::time::sleep(EVENT_INTERVAL).await;
                }
                let event = TapEvent {
                    id,
                    authority: authority.clone(),
                    path: format!("/event/{id}"),
                    cluster: name.clone(),
                    ..TapEvent::default()
                };
                if tx.send(Ok(event)).await.is_err() {
                    return; // the client went away
                }
            }
        });
        Ok(tonic::Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// A channel to the proxy at `proxy` whose requests carry `authority` (e.g.
/// `echo-grpc:9090`) as `:authority`, so the proxy routes them to that service.
pub async fn channel_via(proxy: SocketAddr, authority: &str) -> anyhow::Result<Channel> {
    let endpoint = Endpoint::from_shared(format!("http://{proxy}"))?
        .origin(format!("http://{authority}").parse()?)
        .connect_timeout(Duration::from_secs(2))
        .timeout(CALL_TIMEOUT);
    endpoint.connect().await.map_err(|e| anyhow::anyhow!("connecting to {proxy} for {authority}: {e:?}"))
}

/// A unary `Certify` for `identity` with `token`, through `proxy` to `authority`.
pub async fn certify(
    proxy: SocketAddr,
    authority: &str,
    identity: &str,
    token: &str,
) -> anyhow::Result<CertifyResponse> {
    let mut client = IdentityClient::new(channel_via(proxy, authority).await?);
    let req = CertifyRequest { identity: identity.to_owned(), token: token.to_owned(), ..Default::default() };
    let resp = client.certify(req).await.map_err(|s| anyhow::anyhow!("Certify via {proxy}: {s:?}"))?;
    Ok(resp.into_inner())
}

/// A server-streaming `Observe` asking for `n` events (filter authority `authority`),
/// through `proxy` to `authority`; returns the events in the order they arrived.
pub async fn observe(proxy: SocketAddr, authority: &str, n: u32) -> anyhow::Result<Vec<TapEvent>> {
    let mut client = TapClient::new(channel_via(proxy, authority).await?);
    let req = ObserveRequest {
        filter: Some(Filter { authority: authority.to_owned(), ..Default::default() }),
        max_events_per_second: n,
        ..Default::default()
    };
    let mut stream =
        client.observe(req).await.map_err(|s| anyhow::anyhow!("Observe via {proxy}: {s:?}"))?.into_inner();
    let mut events = Vec::new();
    let collect = async {
        while let Some(event) =
            stream.message().await.map_err(|s| anyhow::anyhow!("Observe stream via {proxy}: {s:?}"))?
        {
            events.push(event);
        }
        anyhow::Ok(())
    };
    tokio::time::timeout(CALL_TIMEOUT, collect)
        .await
        .map_err(|_| anyhow::anyhow!("Observe via {proxy} did not end within {CALL_TIMEOUT:?}"))??;
    Ok(events)
}
