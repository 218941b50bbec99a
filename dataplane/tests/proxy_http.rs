//! HTTP through `weft_proxy::proxy::run` on loopback: routing, direct
//! responses, local replies, retries, timeouts, breakers, pooling, h2c and
//! gRPC-style streaming, absolute-form requests, config swaps, metrics.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod proxy_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use proxy_support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use weft_proxy::config::*;

#[tokio::test]
async fn host_routing_and_weighted_split() {
    let a = Backend::named("a").await;
    let v1 = Backend::named("v1").await;
    let v2 = Backend::named("v2").await;
    let listen = free_addr();
    let proxy = Proxy::start(config(
        vec![http_listener("outbound", listen, "routes")],
        vec![
            vhost("a", &["a.local"], vec![route("/", Action::Forward(forward(&[("a", 1)])))]),
            vhost(
                "split",
                &["split.local"],
                vec![route("/", Action::Forward(forward(&[("v1", 3), ("v2", 1)])))],
            ),
        ],
        vec![cluster("a", &[a.addr]), cluster("v1", &[v1.addr]), cluster("v2", &[v2.addr])],
    ));
    wait_listening(listen).await;
    let client = http1_client();

    let (status, headers, body) = send(&client, get(listen, "a.local", "/x")).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "a"));
    assert_eq!(headers["x-seen-host"], "a.local", "Host is preserved");

    let mut v1_count = 0;
    let n = 400;
    for _ in 0..n {
        let (status, _, body) = send(&client, get(listen, "split.local", "/")).await;
        assert_eq!(status, StatusCode::OK);
        if body == "v1" {
            v1_count += 1;
        } else {
            assert_eq!(body, "v2");
        }
    }
    let share = f64::from(v1_count) / f64::from(n);
    assert!((share - 0.75).abs() < 0.1, "v1 share {share}, want about 0.75");

    let metrics = proxy.metrics.encode();
    assert!(
        metrics.contains(r#"request_total{direction="outbound",authority="split.local",tls="false"} 400"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            r#"response_total{direction="outbound",authority="a.local",tls="false",status_code="200",classification="success"} 1"#
        ),
        "{metrics}"
    );
    assert!(metrics.contains(r#"tcp_open_total{direction="outbound"}"#));
    proxy.stop().await;
}

#[tokio::test]
async fn direct_responses_and_local_replies() {
    let listen = free_addr();
    let dead = free_addr(); // nothing listens here
    let proxy = Proxy::start(config(
        vec![http_listener("outbound", listen, "routes")],
        vec![vhost(
            "web",
            &["web"],
            vec![
                route("/direct", Action::Direct { status: 418, body: Bytes::from_static(b"teapot") }),
                route("/empty", Action::Forward(forward(&[("empty", 1)]))),
                route("/unknown", Action::Forward(forward(&[("nope", 1)]))),
                route("/dead", Action::Forward(forward(&[("dead", 1)]))),
            ],
        )],
        vec![cluster("empty", &[]), cluster("dead", &[dead])],
    ));
    wait_listening(listen).await;
    let client = http1_client();

    let (status, _, body) = send(&client, get(listen, "web", "/direct")).await;
    assert_eq!((status.as_u16(), body.as_str()), (418, "teapot"));
    let (status, _, _) = send(&client, get(listen, "other", "/direct")).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "no virtual host");
    let (status, _, _) = send(&client, get(listen, "web", "/nothing")).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "no route");
    let (status, _, body) = send(&client, get(listen, "web", "/empty")).await;
    assert_eq!((status, body.as_str()), (StatusCode::SERVICE_UNAVAILABLE, "no healthy upstream"));
    let (status, _, _) = send(&client, get(listen, "web", "/unknown")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "unknown cluster");
    let (status, _, body) = send(&client, get(listen, "web", "/dead")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "connect failure");
    assert!(body.contains("connection failure"), "{body}");

    let metrics = proxy.metrics.encode();
    assert!(metrics.contains(r#"status_code="503",classification="failure"} 3"#), "{metrics}");
    proxy.stop().await;
}

/// A backend that fails every other request with 503.
async fn flaky() -> Backend {
    let calls = Arc::new(AtomicUsize::new(0));
    Backend::spawn(move |_req: Request<Incoming>| {
        let n = calls.fetch_add(1, Ordering::SeqCst);
        async move {
            let status = if n.is_multiple_of(2) { 503 } else { 200 };
            Response::builder().status(status).body(full(if status == 200 { "ok" } else { "down" })).unwrap()
        }
    })
    .await
}

fn retry_on_5xx(num_retries: u32) -> RetryPolicy {
    RetryPolicy {
        on_5xx: true,
        on_gateway_error: false,
        on_connect_failure: false,
        on_reset: false,
        retriable_status_codes: vec![],
        num_retries,
        per_try_timeout: None,
    }
}

#[tokio::test]
async fn retries_turn_a_backends_503_into_success() {
    let backend = flaky().await;
    let dead = free_addr();
    let listen = free_addr();
    let mut with_retry = forward(&[("flaky", 1)]);
    with_retry.retry = Some(retry_on_5xx(2));
    let mut dead_then_live = forward(&[("half-dead", 1)]);
    dead_then_live.retry = Some(RetryPolicy { on_5xx: false, on_connect_failure: true, ..retry_on_5xx(1) });
    let proxy = Proxy::start(config(
        vec![http_listener("outbound", listen, "routes")],
        vec![
            vhost("retry", &["retry"], vec![route("/", Action::Forward(with_retry))]),
            vhost("plain", &["plain"], vec![route("/", Action::Forward(forward(&[("flaky", 1)])))]),
            vhost("connect", &["connect"], vec![route("/", Action::Forward(dead_then_live))]),
        ],
        vec![
            cluster("flaky", &[backend.addr]),
            cluster("half-dead", &[dead, Backend::named("live").await.addr]),
        ],
    ));
    wait_listening(listen).await;
    let client = http1_client();

    for _ in 0..10 {
        let (status, _, body) = send(&client, get(listen, "retry", "/")).await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "ok"));
    }
    // Without a policy the 503s reach the client.
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(send(&client, get(listen, "plain", "/")).await.0.as_u16());
    }
    assert!(statuses.contains(&503) && statuses.contains(&200), "{statuses:?}");
    // A POST with a small body is buffered and sent again intact.
    for _ in 0..4 {
        let req =
            Request::post(format!("http://{listen}/")).header("host", "retry").body(full("payload")).unwrap();
        assert_eq!(send(&client, req).await.0, StatusCode::OK);
    }
    // A connect failure on one endpoint is retried on the other.
    for _ in 0..6 {
        let (status, _, body) = send(&client, get(listen, "connect", "/")).await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "live"));
    }
    proxy.stop().await;
}

/// A backend that answers after `delay`, with `name`.
async fn slow(name: &'static str, delay: Duration) -> Backend {
    Backend::spawn(move |_req: Request<Incoming>| async move {
        tokio::time::sleep(delay).await;
        Response::new(full(name))
    })
    .await
}

#[tokio::test]
async fn a_route_timeout_fires_at_its_configured_value() {
    let backend = slow("slow", Duration::from_secs(5)).await;
    let listen = free_addr();
    let mut timed = forward(&[("slow", 1)]);
    timed.timeout = Some(Duration::from_millis(400));
    let mut per_try = forward(&[("slow", 1)]);
    per_try.retry = Some(RetryPolicy {
        per_try_timeout: Some(Duration::from_millis(200)),
        on_5xx: false,
        ..retry_on_5xx(1)
    });
    let proxy = Proxy::start(config(
        vec![http_listener("outbound", listen, "routes")],
        vec![
            vhost("timed", &["timed"], vec![route("/", Action::Forward(timed))]),
            vhost("per-try", &["per-try"], vec![route("/", Action::Forward(per_try))]),
        ],
        vec![cluster("slow", &[backend.addr])],
    ));
    wait_listening(listen).await;
    let client = http1_client();

    let started = Instant::now();
    let (status, _, body) = send(&client, get(listen, "timed", "/")).await;
    let elapsed = started.elapsed();
    assert_eq!((status, body.as_str()), (StatusCode::GATEWAY_TIMEOUT, "upstream request timeout"));
    assert!(
        elapsed >= Duration::from_millis(400) && elapsed < Duration::from_millis(900),
        "took {elapsed:?}"
    );

    // A per-try timeout without a retry_on for it: one try, then 504.
    let started = Instant::now();
    let (status, _, _) = send(&client, get(listen, "per-try", "/")).await;
    let elapsed = started.elapsed();
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    assert!(
        elapsed >= Duration::from_millis(200) && elapsed < Duration::from_millis(700),
        "took {elapsed:?}"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn max_requests_breaker_answers_overloaded() {
    let backend = slow("slow", Duration::from_millis(600)).await;
    let listen = free_addr();
    let mut limited = cluster("slow", &[backend.addr]);
    limited.limits.max_requests = 1;
    let proxy = Proxy::start(config(
        vec![http_listener("outbound", listen, "routes")],
        vec![vhost("web", &["web"], vec![route("/", Action::Forward(forward(&[("slow", 1)])))])],
        vec![limited],
    ));
    wait_listening(listen).await;
    let client = http1_client();
    let first = tokio::spawn({
        let client = client.clone();
        async move { send(&client, get(listen, "web", "/")).await }
    });
    eventually("the first request to reach the backend", || {
        let n = backend.requests.load(Ordering::SeqCst);
        async move { (n == 1).then_some(()) }
    })
    .await;
    let (status, headers, _) = send(&client, get(listen, "web", "/")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(headers["x-weft-overloaded"], "true");
    assert_eq!(first.await.unwrap().0, StatusCode::OK);
    // Released: the next one passes.
    assert_eq!(send(&client, get(listen, "web", "/")).await.0, StatusCode::OK);
    proxy.stop().await;
}

#[tokio::test]
async fn upstream_connections_are_pooled() {
    let backend = Backend::named("b").await;
    let listen = free_addr();
    let proxy = Proxy::start(config(
        vec![http_listener("outbound", listen, "routes")],
        vec![vhost("web", &["web"], vec![route("/", Action::Forward(forward(&[("b", 1)])))])],
        vec![cluster("b", &[backend.addr])],
    ));
    wait_listening(listen).await;
    let client = http1_client();
    for _ in 0..20 {
        assert_eq!(send(&client, get(listen, "web", "/")).await.0, StatusCode::OK);
    }
    assert_eq!(backend.requests.load(Ordering::SeqCst), 20);
    assert_eq!(
        backend.connections.load(Ordering::SeqCst),
        1,
        "sequential requests reuse one upstream connection"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn absolute_form_requests_are_routed_by_their_uri_and_sent_in_origin_form() {
    let backend = Backend::named("b").await;
    let listen = free_addr();
    let proxy = Proxy::start(config(
        vec![http_listener("outbound", listen, "routes")],
        vec![vhost("web", &["web.default:8080"], vec![route("/", Action::Forward(forward(&[("b", 1)])))])],
        vec![cluster("b", &[backend.addr])],
    ));
    wait_listening(listen).await;
    let mut stream = tokio::net::TcpStream::connect(listen).await.unwrap();
    stream
        .write_all(
            b"GET http://web.default:8080/path?q=1 HTTP/1.1\r\nHost: ignored\r\nConnection: close\r\n\r\n",
        )
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let lower = response.to_ascii_lowercase();
    assert!(lower.starts_with("http/1.1 200"), "{response}");
    assert!(lower.contains("x-seen-host: web.default:8080"), "{response}");
    assert!(lower.contains("x-seen-uri: /path?q=1\r\n"), "{response}");
    proxy.stop().await;
}

#[tokio::test]
async fn h2c_and_grpc_style_streaming_with_trailers() {
    // Echoes each request body chunk as it arrives, then sends trailers.
    let backend = Backend::spawn(|req: Request<Incoming>| async move {
        let version = format!("{:?}", req.version());
        let mut body = req.into_body();
        let (tx, rx) =
            tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Box<dyn std::error::Error + Send + Sync>>>(4);
        tokio::spawn(async move {
            while let Some(Ok(frame)) = body.frame().await {
                if let Ok(data) = frame.into_data()
                    && tx.send(Ok(Frame::data(data))).await.is_err()
                {
                    return;
                }
            }
            let mut trailers = http::HeaderMap::new();
            trailers.insert("grpc-status", "0".parse().unwrap());
            let _ = tx.send(Ok(Frame::trailers(trailers))).await;
        });
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
        Response::builder()
            .header("x-seen-version", version)
            .header("content-type", "application/grpc")
            .body(BoxBody::new(StreamBody::new(stream)))
            .unwrap()
    })
    .await;
    let listen = free_addr();
    let mut grpc = cluster("grpc", &[backend.addr]);
    grpc.protocol = UpstreamProtocol::SameAsDownstream;
    let proxy = Proxy::start(config(
        vec![http_listener("outbound", listen, "routes")],
        vec![vhost("grpc", &["grpc:50051"], vec![route("/", Action::Forward(forward(&[("grpc", 1)])))])],
        vec![grpc],
    ));
    wait_listening(listen).await;

    // A raw HTTP/2 connection, so `:authority` is the service's name, not the proxy's address.
    let stream = tokio::net::TcpStream::connect(listen).await.unwrap();
    let (mut client, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await.unwrap();
    tokio::spawn(connection);
    let (tx, rx) =
        tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Box<dyn std::error::Error + Send + Sync>>>(4);
    let req = Request::post("http://grpc:50051/echo.Echo/Stream")
        .header("te", "trailers")
        .version(http::Version::HTTP_2)
        .body(BoxBody::new(StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx))))
        .unwrap();
    tx.send(Ok(Frame::data(Bytes::from_static(b"one")))).await.unwrap();
    let response = tokio::time::timeout(patience(), client.send_request(req)).await.unwrap().unwrap();
    assert_eq!(response.version(), http::Version::HTTP_2);
    assert_eq!(response.headers()["x-seen-version"], "HTTP/2.0", "upstream spoke HTTP/2");
    let mut body = response.into_body();
    // Each chunk comes back before the next is sent: streaming both ways.
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(first, "one");
    tx.send(Ok(Frame::data(Bytes::from_static(b"two")))).await.unwrap();
    let second = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(second, "two");
    drop(tx);
    let trailers = loop {
        let frame = body.frame().await.expect("trailers").unwrap();
        if let Ok(trailers) = frame.into_trailers() {
            break trailers;
        }
    };
    assert_eq!(trailers["grpc-status"], "0");
    proxy.stop().await;
}

#[tokio::test]
async fn http1_downstream_to_http2_upstream() {
    let backend = Backend::named("h2").await;
    let listen = free_addr();
    let mut h2 = cluster("h2", &[backend.addr]);
    h2.protocol = UpstreamProtocol::Http2;
    let proxy = Proxy::start(config(
        vec![http_listener("outbound", listen, "routes")],
        vec![vhost("web", &["web"], vec![route("/", Action::Forward(forward(&[("h2", 1)])))])],
        vec![h2],
    ));
    wait_listening(listen).await;
    let client = http1_client();
    for _ in 0..5 {
        let (status, headers, body) = send(&client, get(listen, "web", "/p")).await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "h2"));
        assert_eq!(headers["x-seen-version"], "HTTP/2.0");
        assert_eq!(headers["x-seen-host"], "web", "the Host became :authority");
    }
    assert_eq!(backend.connections.load(Ordering::SeqCst), 1, "one multiplexed HTTP/2 connection");
    proxy.stop().await;
}

#[tokio::test]
async fn a_request_in_flight_finishes_on_the_config_it_started_with() {
    let old = slow("old", Duration::from_millis(700)).await;
    let new = Backend::named("new").await;
    let listen = free_addr();
    let routes_to = |cluster_name: &str| {
        config(
            vec![http_listener("outbound", listen, "routes")],
            vec![vhost("web", &["web"], vec![route("/", Action::Forward(forward(&[(cluster_name, 1)])))])],
            vec![cluster("old", &[old.addr]), cluster("new", &[new.addr])],
        )
    };
    let proxy = Proxy::start(routes_to("old"));
    wait_listening(listen).await;
    let client = http1_client();
    let in_flight = tokio::spawn({
        let client = client.clone();
        async move { send(&client, get(listen, "web", "/")).await }
    });
    eventually("the slow request to reach the old backend", || {
        let n = old.requests.load(Ordering::SeqCst);
        async move { (n == 1).then_some(()) }
    })
    .await;
    let mut swapped = routes_to("new");
    // The old cluster disappears entirely in the new config.
    swapped.clusters.remove("old");
    proxy.update(swapped);
    eventually("the new config to serve", || {
        let client = client.clone();
        async move { (send(&client, get(listen, "web", "/")).await.2 == "new").then_some(()) }
    })
    .await;
    let (status, _, body) = in_flight.await.unwrap();
    assert_eq!((status, body.as_str()), (StatusCode::OK, "old"));
    proxy.stop().await;
}
