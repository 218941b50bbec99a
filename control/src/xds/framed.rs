//! The ADS service with responses framed one message at a time, each in a buffer of its own.
//!
//! tonic encodes the messages of a response stream into one buffer per stream. That buffer
//! keeps its capacity for the life of the stream: after the first response of a sidecar in a
//! 10,000-service mesh (8.5 MB of assignments) every stream held a buffer of twice that,
//! which was most of the control plane's memory per connected proxy. Here each message is
//! encoded into a buffer of exactly its gRPC frame, handed to HTTP/2, and freed once sent.
//! Requests are still decoded by tonic, and the per-type services stay tonic's.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use http_body::Frame;
use prost::bytes::{BufMut, Bytes};
use tokio::sync::mpsc;
use tonic::codec::{DecodeBuf, Decoder, Streaming};
use tonic::metadata::MetadataMap;
use tonic::server::NamedService;
use tonic::{Code, Status};

use super::delta::Delta;
use super::service::{XdsServer, spawn_stream};
use super::sotw::Sotw;
use super::stream::XdsProtocol;

/// The largest request accepted (tonic's default): a SotW EDS request naming 10,000
/// clusters is about 600 KB.
const MAX_REQUEST_BYTES: usize = 4 * 1024 * 1024;

const SOTW_PATH: &str = "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources";
const DELTA_PATH: &str = "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources";

/// `envoy.service.discovery.v3.AggregatedDiscoveryService`, both methods.
#[derive(Debug, Clone)]
pub(crate) struct AdsService {
    server: XdsServer,
}

impl AdsService {
    pub(crate) fn new(server: XdsServer) -> Self {
        AdsService { server }
    }
}

impl NamedService for AdsService {
    const NAME: &'static str = "envoy.service.discovery.v3.AggregatedDiscoveryService";
}

type HttpResponse = http::Response<tonic::body::Body>;

impl tonic::codegen::Service<http::Request<tonic::body::Body>> for AdsService {
    type Response = HttpResponse;
    type Error = Infallible;
    type Future = std::future::Ready<Result<HttpResponse, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let response = match req.uri().path() {
            SOTW_PATH => self.stream(req, Sotw::new(self.server.ctx.metrics.clone())),
            DELTA_PATH => self.stream(req, Delta::new(self.server.ctx.metrics.clone())),
            other => Status::new(Code::Unimplemented, format!("no method {other}")).into_http(),
        };
        std::future::ready(Ok(response))
    }
}

impl AdsService {
    fn stream<P>(&self, req: http::Request<tonic::body::Body>, proto: P) -> HttpResponse
    where
        P: XdsProtocol,
        P::Request: Default,
        P::Response: Unpin,
    {
        let (parts, body) = req.into_parts();
        let requests =
            Streaming::new_request(Decode::<P::Request>::default(), body, None, Some(MAX_REQUEST_BYTES));
        let request =
            tonic::Request::from_parts(MetadataMap::from_headers(parts.headers), parts.extensions, requests);
        match spawn_stream(&self.server.ctx, request, proto, None) {
            Ok(responses) => {
                let body = Frames { responses, done: false };
                let mut response = http::Response::new(tonic::body::Body::new(body));
                response
                    .headers_mut()
                    .insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/grpc"));
                response
            }
            Err(status) => status.into_http(),
        }
    }
}

/// Decodes requests with prost.
struct Decode<M>(std::marker::PhantomData<M>);

impl<M> Default for Decode<M> {
    fn default() -> Self {
        Decode(std::marker::PhantomData)
    }
}

impl<M: prost::Message + Default + Send + 'static> Decoder for Decode<M> {
    type Item = M;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<M>, Status> {
        M::decode(buf).map(Some).map_err(|e| Status::internal(format!("cannot decode the request: {e}")))
    }
}

/// The response body: each message in a gRPC frame of its own, then the status trailers.
struct Frames<M> {
    responses: mpsc::Receiver<Result<M, Status>>,
    done: bool,
}

/// A message as one gRPC frame: uncompressed flag, big-endian length, the message.
fn frame<M: prost::Message>(msg: &M) -> Result<Bytes, Status> {
    let len = msg.encoded_len();
    let prefix = u32::try_from(len).map_err(|_| Status::resource_exhausted("response over 4 GiB"))?;
    let mut buf = Vec::with_capacity(5 + len);
    buf.put_u8(0);
    buf.put_u32(prefix);
    msg.encode(&mut buf).map_err(|e| Status::internal(format!("cannot encode the response: {e}")))?;
    Ok(Bytes::from(buf))
}

fn trailers(status: &Status) -> Frame<Bytes> {
    let mut map = http::HeaderMap::new();
    if status.add_header(&mut map).is_err() {
        map.insert("grpc-status", http::HeaderValue::from(Code::Internal as i32));
    }
    Frame::trailers(map)
}

impl<M: prost::Message + Unpin> http_body::Body for Frames<M> {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        if self.done {
            return Poll::Ready(None);
        }
        let frame = match self.responses.poll_recv(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Some(Ok(msg))) => match frame(&msg) {
                Ok(bytes) => Frame::data(bytes),
                Err(status) => {
                    self.done = true;
                    trailers(&status)
                }
            },
            Poll::Ready(Some(Err(status))) => {
                self.done = true;
                trailers(&status)
            }
            Poll::Ready(None) => {
                self.done = true;
                trailers(&Status::ok(""))
            }
        };
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }
}
