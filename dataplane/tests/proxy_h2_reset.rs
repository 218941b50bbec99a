//! HTTP/2 upstreams that end a stream with RST_STREAM, through `weft_proxy::proxy::run` on loopback.
//!
//! RFC 9113 section 8.1: a server may send its complete response before it has read the
//! request body, then ask the client to stop sending with RST_STREAM(NO_ERROR); the client
//! must keep the response. Through one proxy and through a client-side/server-side pair,
//! the client must get the whole response (status, body, `grpc-status` trailers) while its
//! request body is still streaming, and then be told to stop sending the same way. A reset
//! with any other code before the response is complete stays an error.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod proxy_support;

use std::future::poll_fn;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::Poll;

use bytes::{Bytes, BytesMut};
use h2::Reason;
use h2::client::SendRequest;
use h2::server::SendResponse;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use proxy_support::*;
use tokio::net::{TcpListener, TcpStream};
use weft_proxy::config::*;

const AUTHORITY: &str = "grpc:50051";
/// Request body chunks; the client sends them for as long as flow control lets it.
const CHUNK: usize = 4 * 1024;
/// More than every flow-control window on the way (the proxy's, h2's default): the body is
/// still being sent when the response ends, whatever the timing.
const MAX_REQUEST_BODY: usize = 8 * 1024 * 1024;

/// The complete response: larger than h2's default 64 KiB stream window, so it spans
/// several DATA frames and window updates before the reset goes out.
fn answer() -> Bytes {
    Bytes::from((0..100 * 1024).map(|i| b'a' + (i % 26) as u8).collect::<Vec<u8>>())
}

fn grpc_ok() -> HeaderMap {
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", "0".parse().unwrap());
    trailers
}

/// What the test upstream does with each request.
#[derive(Debug, Clone, Copy)]
enum Behaviour {
    /// Sends the complete response (200, body, `grpc-status: 0`) without reading the request
    /// body, then drops the stream: h2 then sends RST_STREAM(NO_ERROR) after the queued
    /// frames, as RFC 9113 section 8.1 describes.
    CompleteThenNoError,
    /// Sends the headers and part of the body, waits until the client has them (it sends
    /// `go`), then resets the stream with this code.
    ResetMidResponse(Reason),
    /// Resets the stream with this code before any response.
    ResetBeforeHeaders(Reason),
}

/// A raw h2 (prior knowledge) upstream on 127.0.0.1:0.
struct Upstream {
    addr: SocketAddr,
    requests: Arc<AtomicUsize>,
}

impl Upstream {
    async fn spawn(behaviour: Behaviour) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&requests);
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { return };
                let counter = Arc::clone(&counter);
                tokio::spawn(async move {
                    let Ok(mut connection) = h2::server::Builder::new()
                        .max_concurrent_reset_streams(100_000)
                        .handshake::<_, Bytes>(tcp)
                        .await
                    else {
                        return;
                    };
                    while let Some(Ok((req, respond))) = connection.accept().await {
                        counter.fetch_add(1, Ordering::SeqCst);
                        tokio::spawn(answer_stream(behaviour, req, respond));
                    }
                });
            }
        });
        Upstream { addr, requests }
    }
}

async fn answer_stream(behaviour: Behaviour, req: Request<h2::RecvStream>, mut respond: SendResponse<Bytes>) {
    let head =
        || Response::builder().status(200).header("content-type", "application/grpc").body(()).unwrap();
    match behaviour {
        Behaviour::CompleteThenNoError => {
            let mut send = respond.send_response(head(), false).unwrap();
            send.send_data(answer(), false).unwrap();
            send.send_trailers(grpc_ok()).unwrap();
            // The request body is dropped unread here, with the finished response.
            drop(req);
        }
        Behaviour::ResetMidResponse(reason) => {
            let mut send = respond.send_response(head(), false).unwrap();
            send.send_data(Bytes::from_static(b"partial"), false).unwrap();
            let mut body = req.into_body();
            let mut seen = BytesMut::new();
            while let Some(Ok(chunk)) = body.data().await {
                let _ = body.flow_control().release_capacity(chunk.len());
                seen.extend_from_slice(&chunk);
                if seen.ends_with(b"go") {
                    break;
                }
            }
            send.send_reset(reason);
        }
        Behaviour::ResetBeforeHeaders(reason) => respond.send_reset(reason),
    }
}

/// An h2 (prior knowledge) client connection.
async fn h2_client(addr: SocketAddr) -> SendRequest<Bytes> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

fn grpc_request() -> Request<()> {
    Request::post(format!("http://{AUTHORITY}/upload.Upload/Send"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap()
}

/// What a client saw of one exchange.
#[derive(Debug)]
struct Seen {
    status: StatusCode,
    body: Bytes,
    trailers: Option<HeaderMap>,
    /// The response body or trailers failed (a reset with an error code).
    error: Option<h2::Error>,
}

/// Reads a whole response: body, then trailers, or the error that ended it.
async fn read_response(response: Response<h2::RecvStream>) -> Seen {
    let status = response.status();
    let mut recv = response.into_body();
    let mut body = BytesMut::new();
    while let Some(chunk) = recv.data().await {
        match chunk {
            Ok(chunk) => {
                let _ = recv.flow_control().release_capacity(chunk.len());
                body.extend_from_slice(&chunk);
            }
            Err(error) => return Seen { status, body: body.freeze(), trailers: None, error: Some(error) },
        }
    }
    let (trailers, error) = match recv.trailers().await {
        Ok(trailers) => (trailers, None),
        Err(error) => (None, Some(error)),
    };
    Seen { status, body: body.freeze(), trailers, error }
}

/// Sends request body chunks as fast as flow control allows until the stream is reset (its
/// reason), the body reaches [`MAX_REQUEST_BODY`] (then it waits for the reset), or the
/// stream fails otherwise (`None`). The body never ends on its own.
async fn stream_body_until_reset(mut send: h2::SendStream<Bytes>) -> Option<Reason> {
    let chunk = Bytes::from(vec![b'x'; CHUNK]);
    let mut sent = 0;
    loop {
        if sent < MAX_REQUEST_BODY {
            send.reserve_capacity(CHUNK);
        }
        let next = poll_fn(|cx| {
            if let Poll::Ready(reset) = send.poll_reset(cx) {
                return Poll::Ready(Err(reset.ok()));
            }
            if sent >= MAX_REQUEST_BODY {
                return Poll::Pending;
            }
            send.poll_capacity(cx).map(Ok)
        })
        .await;
        match next {
            Ok(Some(Ok(0))) => {}
            Ok(Some(Ok(n))) => {
                let n = n.min(CHUNK);
                if send.send_data(chunk.slice(..n), false).is_err() {
                    return poll_fn(|cx| send.poll_reset(cx)).await.ok();
                }
                sent += n;
            }
            Ok(_) => return poll_fn(|cx| send.poll_reset(cx)).await.ok(),
            Err(reset) => return reset,
        }
    }
}

/// One POST whose body streams until the stream is reset; returns the response and the
/// code the request stream was reset with.
async fn early_response_exchange(client: &SendRequest<Bytes>) -> (Seen, Option<Reason>) {
    let mut client = client.clone().ready().await.unwrap();
    let (response, mut send) = client.send_request(grpc_request(), false).unwrap();
    send.send_data(Bytes::from_static(b"first chunk"), false).unwrap();
    let sender = tokio::spawn(stream_body_until_reset(send));
    let seen = match tokio::time::timeout(patience(), response).await.expect("response in time") {
        Ok(response) => {
            tokio::time::timeout(patience(), read_response(response)).await.expect("body in time")
        }
        Err(error) => Seen {
            status: StatusCode::from_u16(599).unwrap(),
            body: Bytes::new(),
            trailers: None,
            error: Some(error),
        },
    };
    let reset =
        tokio::time::timeout(patience(), sender).await.expect("request stream reset in time").unwrap();
    (seen, reset)
}

/// Asserts that `seen` is the upstream's complete response and that the client was told
/// to stop sending with NO_ERROR.
fn assert_complete(seen: &Seen, reset: Option<Reason>, what: &str) {
    assert!(
        seen.error.is_none(),
        "{what}: the response failed: {:?} after {} body bytes",
        seen.error,
        seen.body.len()
    );
    assert_eq!(seen.status, StatusCode::OK, "{what}");
    assert!(seen.body == answer(), "{what}: body of {} bytes, want {}", seen.body.len(), answer().len());
    let trailers = seen.trailers.as_ref().unwrap_or_else(|| panic!("{what}: no trailers"));
    assert_eq!(trailers["grpc-status"], "0", "{what}");
    assert_eq!(
        reset,
        Some(Reason::NO_ERROR),
        "{what}: the request stream must end with RST_STREAM(NO_ERROR)"
    );
}

fn h2_cluster(name: &str, addr: SocketAddr) -> Cluster {
    let mut cluster = cluster(name, &[addr]);
    cluster.protocol = UpstreamProtocol::Http2;
    cluster
}

/// A proxy with one listener `name` on `listen` that forwards `AUTHORITY` to `upstream` over h2c.
fn grpc_proxy(name: &str, listen: SocketAddr, upstream: SocketAddr) -> Proxy {
    Proxy::start(config(
        vec![http_listener(name, listen, "routes")],
        vec![vhost("grpc", &[AUTHORITY], vec![route("/", Action::Forward(forward(&[("grpc", 1)])))])],
        vec![h2_cluster("grpc", upstream)],
    ))
}

/// Sequential exchanges on one connection, then concurrent ones on another: each must
/// deliver the complete response.
async fn assert_every_early_response_arrives_whole(listen: SocketAddr, what: &str) {
    let client = h2_client(listen).await;
    for i in 0..40 {
        let (seen, reset) = early_response_exchange(&client).await;
        assert_complete(&seen, reset, &format!("{what}, sequential exchange {i}"));
    }
    let client = h2_client(listen).await;
    let concurrent: Vec<_> = (0..20)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { early_response_exchange(&client).await })
        })
        .collect();
    for (i, exchange) in concurrent.into_iter().enumerate() {
        let (seen, reset) = exchange.await.unwrap();
        assert_complete(&seen, reset, &format!("{what}, concurrent exchange {i}"));
    }
}

#[tokio::test]
async fn the_test_upstream_answers_in_full_then_resets_with_no_error() {
    // The harness itself: without a proxy, the client sees exactly what the RFC describes.
    let upstream = Upstream::spawn(Behaviour::CompleteThenNoError).await;
    let client = h2_client(upstream.addr).await;
    let (seen, reset) = early_response_exchange(&client).await;
    assert_complete(&seen, reset, "direct");
}

#[tokio::test]
async fn a_complete_response_then_rst_no_error_reaches_the_client_whole() {
    let upstream = Upstream::spawn(Behaviour::CompleteThenNoError).await;
    let listen = free_addr();
    let proxy = grpc_proxy("outbound", listen, upstream.addr);
    wait_listening(listen).await;

    assert_every_early_response_arrives_whole(listen, "one proxy").await;
    assert_eq!(upstream.requests.load(Ordering::SeqCst), 60);
    let metrics = proxy.metrics.encode();
    assert_eq!(
        metric(
            &metrics,
            &format!(
                r#"response_total{{direction="outbound",authority="{AUTHORITY}",tls="false",status_code="200",classification="success"}}"#
            )
        ),
        Some(60.0),
        "{metrics}"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn a_complete_response_then_rst_no_error_crosses_a_proxy_pair_whole() {
    // client -> client-side proxy (outbound) -> server-side proxy (inbound) -> upstream.
    let upstream = Upstream::spawn(Behaviour::CompleteThenNoError).await;
    let inbound = free_addr();
    let outbound = free_addr();
    let server_side = grpc_proxy("inbound", inbound, upstream.addr);
    let client_side = grpc_proxy("outbound", outbound, inbound);
    wait_listening(inbound).await;
    wait_listening(outbound).await;

    assert_every_early_response_arrives_whole(outbound, "proxy pair").await;
    assert_eq!(upstream.requests.load(Ordering::SeqCst), 60);
    client_side.stop().await;
    server_side.stop().await;
}

#[tokio::test]
async fn an_http1_client_gets_the_early_h2_response_whole() {
    let upstream = Upstream::spawn(Behaviour::CompleteThenNoError).await;
    let listen = free_addr();
    let proxy = grpc_proxy("outbound", listen, upstream.addr);
    wait_listening(listen).await;

    let client = http1_client();
    for i in 0..20 {
        // A chunked body that never ends by itself.
        let (tx, rx) =
            tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Box<dyn std::error::Error + Send + Sync>>>(1);
        tx.send(Ok(Frame::data(Bytes::from_static(b"first chunk")))).await.unwrap();
        let req = Request::post(format!("http://{listen}/upload.Upload/Send"))
            .header("host", AUTHORITY)
            .body(BoxBody::new(StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx))))
            .unwrap();
        let response = tokio::time::timeout(patience(), client.request(req)).await.unwrap().unwrap();
        assert_eq!(response.status(), StatusCode::OK, "exchange {i}");
        let body = tokio::time::timeout(patience(), response.into_body().collect()).await.unwrap();
        let body = body.unwrap_or_else(|e| panic!("exchange {i}: the response body failed: {e}"));
        assert!(body.to_bytes() == answer(), "exchange {i}: body differs");
        drop(tx);
    }
    proxy.stop().await;
}

/// Sends a POST, waits for the headers and the first body bytes, says `go`, and returns
/// what the client saw of the rest.
async fn mid_response_reset_exchange(client: &SendRequest<Bytes>) -> Seen {
    let mut client = client.clone().ready().await.unwrap();
    let (response, mut send) = client.send_request(grpc_request(), false).unwrap();
    send.send_data(Bytes::from_static(b"hello"), false).unwrap();
    let response = tokio::time::timeout(patience(), response).await.unwrap().expect("response headers");
    let status = response.status();
    let mut recv = response.into_body();
    let first = tokio::time::timeout(patience(), recv.data()).await.unwrap().expect("a first chunk").unwrap();
    let _ = recv.flow_control().release_capacity(first.len());
    send.send_data(Bytes::from_static(b"go"), false).unwrap();
    let mut rest = tokio::time::timeout(patience(), read_response(Response::new(recv))).await.unwrap();
    rest.status = status;
    let mut body = BytesMut::from(&first[..]);
    body.extend_from_slice(&rest.body);
    rest.body = body.freeze();
    rest
}

#[tokio::test]
async fn a_reset_with_an_error_code_before_the_response_ends_stays_an_error() {
    for reason in [Reason::CANCEL, Reason::INTERNAL_ERROR] {
        let upstream = Upstream::spawn(Behaviour::ResetMidResponse(reason)).await;
        let inbound = free_addr();
        let outbound = free_addr();
        let server_side = grpc_proxy("inbound", inbound, upstream.addr);
        let client_side = grpc_proxy("outbound", outbound, inbound);
        wait_listening(inbound).await;
        wait_listening(outbound).await;

        for (what, listen) in [("one proxy", inbound), ("proxy pair", outbound)] {
            let client = h2_client(listen).await;
            let seen = mid_response_reset_exchange(&client).await;
            assert_eq!(seen.status, StatusCode::OK, "{what}, {reason:?}");
            assert_eq!(seen.body, "partial", "{what}, {reason:?}");
            assert!(seen.trailers.is_none(), "{what}, {reason:?}: trailers after a reset: {seen:?}");
            let error =
                seen.error.unwrap_or_else(|| panic!("{what}, {reason:?}: the truncated body ended cleanly"));
            assert!(
                error.reason().is_some_and(|r| r != Reason::NO_ERROR),
                "{what}, {reason:?}: reset with {error:?}, want an error code"
            );
        }
        client_side.stop().await;
        server_side.stop().await;
    }
}

#[tokio::test]
async fn a_reset_before_the_response_headers_is_a_503() {
    for reason in [Reason::CANCEL, Reason::INTERNAL_ERROR, Reason::REFUSED_STREAM] {
        let upstream = Upstream::spawn(Behaviour::ResetBeforeHeaders(reason)).await;
        let listen = free_addr();
        let proxy = grpc_proxy("outbound", listen, upstream.addr);
        wait_listening(listen).await;
        let mut client = h2_client(listen).await.ready().await.unwrap();
        let (response, mut send) = client.send_request(grpc_request(), false).unwrap();
        send.send_data(Bytes::from_static(b"hello"), true).unwrap();
        let response = tokio::time::timeout(patience(), response).await.unwrap().expect("a local reply");
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE, "{reason:?}");
        proxy.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zz_stress_experiment() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .try_init();
    let upstream = Upstream::spawn(Behaviour::CompleteThenNoError).await;
    let listen = free_addr();
    let proxy = grpc_proxy("outbound", listen, upstream.addr);
    wait_listening(listen).await;
    let client = h2_client(listen).await;
    let mut tasks = Vec::new();
    for i in 0..6000 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move { (i, early_response_exchange(&client).await) }));
        if tasks.len() >= 64 {
            let t = tasks.remove(0);
            let (i, (seen, reset)) = t.await.unwrap();
            if seen.error.is_some() || reset != Some(Reason::NO_ERROR) || seen.trailers.is_none() {
                println!("FAIL {i} {:?} {:?} {:?} {}", seen.status, seen.error, reset, seen.body.len());
            }
        }
    }
    for t in tasks {
        let (i, (seen, reset)) = t.await.unwrap();
        if seen.error.is_some() || reset != Some(Reason::NO_ERROR) || seen.trailers.is_none() {
            println!("FAIL {i} {:?} {:?} {:?} {}", seen.status, seen.error, reset, seen.body.len());
        }
    }
    proxy.stop().await;
}
