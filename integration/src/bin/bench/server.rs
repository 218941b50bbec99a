//! The bench's upstream app: 1 KiB answers over HTTP/1.1 and h2c, and gRPC unary
//! (`content-type: application/grpc`) with a 1 KiB message and `grpc-status: 0`.

use std::convert::Infallible;
use std::net::SocketAddr;

use anyhow::Context;
use bytes::Bytes;
use futures::stream;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{HeaderMap, Request, Response};
use http_body_util::{BodyExt, Either, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::task::JoinHandle;

/// Response body size, and the size of the gRPC reply's protobuf message.
pub(crate) const BODY: usize = 1024;

/// A gRPC request h2load sends: one length-prefixed message, field 1 = "weft".
pub(crate) const GRPC_REQUEST: &[u8] = &[0, 0, 0, 0, 6, 0x0a, 4, b'w', b'e', b'f', b't'];

type GrpcBody = StreamBody<stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, Infallible>>>>;

/// The running server; stopped when dropped.
pub(crate) struct Server(JoinHandle<()>);

impl Drop for Server {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Serves at `addr` until dropped.
pub(crate) async fn serve(addr: SocketAddr) -> anyhow::Result<Server> {
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding {addr}"))?;
    let body = Bytes::from(vec![b'w'; BODY]);
    let grpc = Bytes::from(grpc_reply());
    Ok(Server(tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            let (body, grpc) = (body.clone(), grpc.clone());
            tokio::spawn(async move {
                let svc = service_fn(move |req| answer(req, body.clone(), grpc.clone()));
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    })))
}

async fn answer(
    req: Request<Incoming>,
    body: Bytes,
    grpc: Bytes,
) -> Result<Response<Either<Full<Bytes>, GrpcBody>>, Infallible> {
    let is_grpc =
        req.headers().get(CONTENT_TYPE).is_some_and(|t| t.as_bytes().starts_with(b"application/grpc"));
    if !is_grpc {
        return Ok(Response::new(Either::Left(Full::new(body))));
    }
    // As a gRPC server does, read the request message before answering (answering
    // first would end the stream with RST_STREAM(NO_ERROR) while the request is open).
    if req.into_body().collect().await.is_err() {
        let mut failed = Response::new(Either::Left(Full::new(Bytes::new())));
        *failed.status_mut() = http::StatusCode::BAD_REQUEST;
        return Ok(failed);
    }
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    let frames = vec![Ok(Frame::data(grpc)), Ok(Frame::trailers(trailers))];
    let mut response = Response::new(Either::Right(StreamBody::new(stream::iter(frames))));
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    Ok(response)
}

/// A length-prefixed protobuf message of exactly [`BODY`] bytes: field 1, bytes.
fn grpc_reply() -> Vec<u8> {
    // Tag (1 byte) + varint length (2 bytes) + payload = BODY.
    let payload = BODY - 3;
    let mut message = vec![0x0a, (payload & 0x7f) as u8 | 0x80, (payload >> 7) as u8];
    message.resize(BODY, b'w');
    let mut framed = vec![0u8];
    framed.extend_from_slice(&(BODY as u32).to_be_bytes());
    framed.extend_from_slice(&message);
    framed
}
