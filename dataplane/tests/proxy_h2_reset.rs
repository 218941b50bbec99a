//! HTTP/2 upstreams that end a stream with RST_STREAM, through `weft_proxy::proxy::run` on loopback.
//!
//! RFC 9113 section 8.1: a server may send its complete response before it has read the
//! request body, then ask the client to stop sending with RST_STREAM(NO_ERROR); the client
//! must keep the response. Through one proxy and through a client-side/server-side pair,
//! the client must get the whole response (status, body, `grpc-status` trailers) while its
//! request body is still streaming, and then be told to stop sending the same way. A reset
//! with any other code before the response is complete stays an error. DATA the client had
//! in flight when the proxy reset its stream must be ignored, not cost the connection (h2
//! counted it as the client's error and sent GOAWAY(ENHANCE_YOUR_CALM) under load).

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
const CHUNK: usize = 16 * 1024;
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
                    // It remembers every stream it reset, so the DATA a client still had in flight is
                    // ignored, as RFC 9113 section 5.1 asks (h2 forgets all but 50 for 1 s by default).
                    let mut builder = h2::server::Builder::new();
                    builder.max_concurrent_reset_streams(1_000_000);
                    let Ok(mut connection) = builder.handshake::<_, Bytes>(tcp).await else { return };
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
            // Errors only when the proxy gave up on the stream; the client's assertions say so.
            let Ok(mut send) = respond.send_response(head(), false) else { return };
            let _ = send.send_data(answer(), false);
            let _ = send.send_trailers(grpc_ok());
            // The request body is dropped unread here, with the finished response.
            drop(req);
        }
        Behaviour::ResetMidResponse(reason) => {
            let Ok(mut send) = respond.send_response(head(), false) else { return };
            let _ = send.send_data(Bytes::from_static(b"partial"), false);
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
            // No response head: a status no server sends, next to the error.
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

/// An upstream with `behaviour` behind a proxy pair: the server-side proxy (its listener
/// is `.inbound`) forwards to the upstream, the client-side proxy (`.outbound`) to it.
struct Pair {
    upstream: Upstream,
    inbound: SocketAddr,
    outbound: SocketAddr,
    server_side: Proxy,
    client_side: Proxy,
}

impl Pair {
    async fn start(behaviour: Behaviour) -> Pair {
        let upstream = Upstream::spawn(behaviour).await;
        let inbound = free_addr();
        let outbound = free_addr();
        let server_side = grpc_proxy("inbound", inbound, upstream.addr);
        let client_side = grpc_proxy("outbound", outbound, inbound);
        wait_listening(inbound).await;
        wait_listening(outbound).await;
        Pair { upstream, inbound, outbound, server_side, client_side }
    }

    async fn stop(self) {
        self.client_side.stop().await;
        self.server_side.stop().await;
        drop(self.upstream);
    }
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
    let pair = Pair::start(Behaviour::CompleteThenNoError).await;

    assert_every_early_response_arrives_whole(pair.outbound, "proxy pair").await;
    assert_eq!(pair.upstream.requests.load(Ordering::SeqCst), 60);
    pair.stop().await;
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
        let pair = Pair::start(Behaviour::ResetMidResponse(reason)).await;
        let (inbound, outbound) = (pair.inbound, pair.outbound);

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
        pair.stop().await;
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

// ---- a raw HTTP/2 client, to send the DATA a client had in flight when the reset came ----

const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const ACK: u8 = 0x1;

/// An HTTP/2 connection driven frame by frame (h2c prior knowledge). A real client cannot
/// take back DATA it sent before the server's RST_STREAM reached it; this one sends such
/// DATA on purpose, after the reset, which the server cannot tell apart.
struct RawH2 {
    tcp: TcpStream,
}

/// One frame as read: type, flags, stream, payload.
type RawFrame = (u8, u8, u32, Vec<u8>);

fn panic_goaway(payload: &[u8], when: &str) -> ! {
    let code = u32::from_be_bytes(payload[4..8].try_into().unwrap());
    panic!(
        "the proxy sent GOAWAY {when}: error code {code:#x} ({:?}), \"{}\"",
        Reason::from(code),
        String::from_utf8_lossy(&payload[8..])
    );
}

/// What a raw exchange saw on its stream.
#[derive(Debug, Default)]
struct RawSeen {
    /// HEADERS without END_STREAM (the response head).
    head: bool,
    /// Response DATA bytes.
    body: usize,
    /// HEADERS with END_STREAM (trailers).
    trailers: bool,
    /// The RST_STREAM error code.
    reset: Option<u32>,
}

impl RawH2 {
    async fn connect(addr: SocketAddr) -> RawH2 {
        use tokio::io::AsyncWriteExt;
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.set_nodelay(true).unwrap();
        tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await.unwrap();
        let mut raw = RawH2 { tcp };
        // SETTINGS_INITIAL_WINDOW_SIZE = 16 MiB and a 1 GiB connection window: no
        // WINDOW_UPDATE is ever needed for the responses of a test.
        raw.send(SETTINGS, 0, 0, &[0, 4, 0x01, 0, 0, 0]).await;
        raw.send(0x8, 0, 0, &(1u32 << 30).to_be_bytes()).await;
        raw
    }

    async fn write(&mut self, kind: u8, flags: u8, stream: u32, payload: &[u8]) -> std::io::Result<()> {
        use tokio::io::AsyncWriteExt;
        let len = u32::try_from(payload.len()).unwrap().to_be_bytes();
        let mut frame = Vec::with_capacity(9 + payload.len());
        frame.extend_from_slice(&len[1..]);
        frame.extend_from_slice(&[kind, flags]);
        frame.extend_from_slice(&stream.to_be_bytes());
        frame.extend_from_slice(payload);
        self.tcp.write_all(&frame).await
    }

    async fn send(&mut self, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
        if let Err(error) = self.write(kind, flags, stream, payload).await {
            // The proxy closed the connection: say why, from its GOAWAY if it sent one.
            while let Some((kind, _, _, payload)) = self.next().await {
                if kind == GOAWAY {
                    panic_goaway(&payload, "while the client was sending");
                }
            }
            panic!("the proxy closed the connection without GOAWAY: {error}");
        }
    }

    /// The next frame that is not connection housekeeping (SETTINGS and PING are answered
    /// here); `None` at end of stream.
    async fn next(&mut self) -> Option<RawFrame> {
        use tokio::io::AsyncReadExt;
        loop {
            let mut head = [0u8; 9];
            self.tcp.read_exact(&mut head).await.ok()?;
            let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
            let (kind, flags) = (head[3], head[4]);
            let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
            let mut payload = vec![0u8; len];
            self.tcp.read_exact(&mut payload).await.ok()?;
            match kind {
                SETTINGS if flags & ACK == 0 => self.write(SETTINGS, ACK, 0, &[]).await.ok()?,
                SETTINGS => {}
                PING if flags & ACK == 0 => self.write(PING, ACK, 0, &payload).await.ok()?,
                PING => {}
                _ => return Some((kind, flags, stream, payload)),
            }
        }
    }

    /// Opens `streams`, each with a POST and a first DATA frame, then reads until the server
    /// has reset every one. Panics on GOAWAY (with its code and debug data) or a closed
    /// connection.
    async fn early_response_exchanges(&mut self, streams: &[u32]) -> Vec<RawSeen> {
        let mut block = Vec::new();
        for (name, value) in [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", "/upload.Upload/Send"),
            (":authority", AUTHORITY),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
        ] {
            // HPACK literal without indexing, new name, no Huffman coding.
            block.push(0);
            block.push(u8::try_from(name.len()).unwrap());
            block.extend_from_slice(name.as_bytes());
            block.push(u8::try_from(value.len()).unwrap());
            block.extend_from_slice(value.as_bytes());
        }
        for &stream in streams {
            self.send(HEADERS, END_HEADERS, stream, &block).await;
            self.send(DATA, 0, stream, &[b'x'; 1024]).await;
        }
        let mut seen: Vec<RawSeen> = streams.iter().map(|_| RawSeen::default()).collect();
        let mut open = streams.len();
        while open > 0 {
            let frame = tokio::time::timeout(patience(), self.next()).await;
            let (kind, flags, id, payload) = frame
                .unwrap_or_else(|_| panic!("{open} streams not reset in time"))
                .unwrap_or_else(|| panic!("the proxy closed the connection with {open} streams open"));
            if kind == GOAWAY {
                panic_goaway(&payload, &format!("with {open} streams open"));
            }
            let Some(at) = streams.iter().position(|&s| s == id) else { continue };
            let seen = &mut seen[at];
            match kind {
                HEADERS if flags & END_STREAM == 0 => seen.head = true,
                HEADERS => seen.trailers = true,
                DATA => seen.body += payload.len(),
                RST_STREAM if seen.reset.is_none() => {
                    seen.reset = Some(u32::from_be_bytes(payload[..4].try_into().unwrap()));
                    open -= 1;
                }
                _ => {}
            }
        }
        seen
    }
}

/// Runs `rounds` of `batch` concurrent early-response exchanges on one raw connection to
/// `listen`; once the streams are reset, sends `late` DATA frames of 1 KiB on each, as a client
/// whose DATA was in flight would. Every exchange must get the complete response, and the
/// connection must stay up.
async fn assert_late_data_is_ignored(listen: SocketAddr, rounds: u32, batch: u32, late: usize, what: &str) {
    let mut raw = RawH2::connect(listen).await;
    for round in 0..rounds {
        let streams: Vec<u32> = (0..batch).map(|i| 2 * (round * batch + i) + 1).collect();
        let seen = raw.early_response_exchanges(&streams).await;
        for (stream, seen) in streams.iter().zip(&seen) {
            assert!(seen.head && seen.trailers, "{what}, stream {stream}: incomplete response {seen:?}");
            assert_eq!(seen.body, answer().len(), "{what}, stream {stream}");
            assert_eq!(seen.reset, Some(0), "{what}, stream {stream}: want RST_STREAM(NO_ERROR)");
        }
        for _ in 0..late {
            for &stream in &streams {
                raw.send(DATA, 0, stream, &[b'x'; 1024]).await;
            }
        }
    }
}

#[tokio::test]
async fn request_data_in_flight_after_an_early_response_does_not_close_the_connection() {
    // After answering in full, the proxy resets the stream with NO_ERROR; DATA the client
    // had already sent keeps arriving. RFC 9113 section 5.1: it MUST be ignored. Three rounds
    // of 100 concurrent streams with 10 late frames each: more than the 50 resets h2 remembers
    // (for 1 s) and than the 1,024 locally-reset streams it allows a connection by default.
    let pair = Pair::start(Behaviour::CompleteThenNoError).await;
    let (inbound, outbound) = (pair.inbound, pair.outbound);

    assert_late_data_is_ignored(inbound, 3, 100, 10, "server-side proxy").await;
    assert_late_data_is_ignored(outbound, 3, 100, 10, "client-side proxy of a pair").await;
    pair.stop().await;
}
