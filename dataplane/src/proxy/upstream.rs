//! Forwarding a routed request upstream: weighted cluster, circuit breakers,
//! endpoint, the request's upstream form, tries with retries and timeouts.

use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderMap, Request, Response, StatusCode, Uri, Version, request};
use http_body_util::BodyExt;
use hyper::body::{Body, Incoming};

use super::balancer::Tried;
use super::body::{RequestBody, ResponseBody};
use super::cluster::{ClusterState, Lease, Limit, Permit, Transport};
use super::http::{local_reply, overloaded};
use super::pool::{Dial, Protocol, SendError};
use super::retry::{self, MAX_BUFFERED_BODY, Outcome};
use super::route;
use super::runtime::Runtime;
use super::tls::TlsContexts;
use crate::config::{Cluster, Forward, RetryPolicy, UpstreamProtocol};
use crate::metrics::UpstreamMetrics;
use crate::tap::Served;

const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Forwards `req` as `forward` says; every failure becomes a local reply.
///
/// The route timeout bounds everything up to the response headers, retries
/// and backoff included (504 when it fires); a body still streaming after it
/// is not cut, unlike Envoy, which resets it.
pub(crate) async fn forward(
    runtime: &Runtime,
    tls: &TlsContexts,
    forward: &Forward,
    req: Request<Incoming>,
    mut served: Option<&mut Served>,
) -> Response<ResponseBody> {
    let Some(picked) = route::pick_cluster(&forward.clusters) else {
        return local_reply(StatusCode::SERVICE_UNAVAILABLE, "no healthy upstream");
    };
    if let Some(served) = served.as_deref_mut() {
        served.cluster.clone_from(&picked.name);
    }
    let Some(cluster) = runtime.clusters.get(picked.name.as_str()) else {
        return local_reply(StatusCode::SERVICE_UNAVAILABLE, "cluster not found");
    };
    let mut response = forward_to(cluster, tls, forward, req, served).await;
    // Every answer once a cluster is picked is that cluster's, the proxy's own 5xx included;
    // `route` marks its series (route, cluster) and `handle` records it (`upstream_response_*`).
    response.extensions_mut().insert(UpstreamCluster(Arc::clone(&cluster.spec), None));
    response
}

/// The cluster that answered a response (a response extension) and, once the route that
/// picked it marks it, the series of that (route, cluster) to record the answer in.
#[derive(Debug, Clone)]
pub(crate) struct UpstreamCluster(pub(crate) Arc<Cluster>, pub(crate) Option<Arc<UpstreamMetrics>>);

/// [`forward`] once the cluster is picked.
async fn forward_to(
    cluster: &ClusterState,
    tls: &TlsContexts,
    forward: &Forward,
    req: Request<Incoming>,
    served: Option<&mut Served>,
) -> Response<ResponseBody> {
    if cluster.endpoints.is_empty() {
        return local_reply(StatusCode::SERVICE_UNAVAILABLE, "no healthy upstream");
    }
    let Some(permit) = cluster.shared.breakers.try_acquire(Limit::Requests, cluster.spec.limits.max_requests)
    else {
        return overloaded();
    };
    let protocol = match cluster.spec.protocol {
        UpstreamProtocol::Http1 => Protocol::Http1,
        UpstreamProtocol::Http2 => Protocol::Http2,
        UpstreamProtocol::SameAsDownstream if req.version() == Version::HTTP_2 => Protocol::Http2,
        UpstreamProtocol::SameAsDownstream => Protocol::Http1,
    };
    let (mut parts, body) = req.into_parts();
    if upstream_form(&mut parts, protocol).is_none() {
        return local_reply(StatusCode::BAD_REQUEST, "missing or invalid authority");
    }
    let exchange = exchange(cluster, tls, parts, body, forward.retry.as_ref(), protocol, permit, served);
    match forward.timeout.filter(|t| !t.is_zero()) {
        Some(timeout) => tokio::time::timeout(timeout, exchange)
            .await
            .unwrap_or_else(|_| local_reply(StatusCode::GATEWAY_TIMEOUT, "upstream request timeout")),
        None => exchange.await,
    }
}

/// Tries the request once, or, with a retry policy and a small body, as many
/// times as the policy allows.
#[expect(clippy::too_many_arguments, reason = "the request's parts and what it may use, passed once")]
async fn exchange(
    cluster: &ClusterState,
    tls: &TlsContexts,
    parts: request::Parts,
    body: Incoming,
    policy: Option<&RetryPolicy>,
    protocol: Protocol,
    permit: Permit,
    mut served: Option<&mut Served>,
) -> Response<ResponseBody> {
    let per_try = policy.and_then(|p| p.per_try_timeout).filter(|t| !t.is_zero());
    let small = body.size_hint().upper().is_some_and(|n| n <= MAX_BUFFERED_BODY);
    let Some(policy) = policy.filter(|p| p.num_retries > 0 && small) else {
        let req = Request::from_parts(parts, RequestBody::Streaming(body));
        return match attempt(
            cluster,
            tls,
            req,
            protocol,
            &mut Tried::default(),
            per_try,
            served.as_deref_mut(),
        )
        .await
        {
            Ok((response, lease)) => respond(response, lease, permit),
            Err(outcome) => failure_reply(outcome),
        };
    };
    let (data, trailers) = match body.collect().await {
        Ok(collected) => {
            let trailers = collected.trailers().cloned();
            (collected.to_bytes(), trailers)
        }
        Err(error) => {
            tracing::debug!(%error, "reading the request body");
            return local_reply(StatusCode::BAD_REQUEST, "request body read failed");
        }
    };
    let mut tried = Tried::default();
    let mut retry = 0;
    loop {
        let last = retry == policy.num_retries;
        let req = rebuild(&parts, RequestBody::buffered(data.clone(), trailers.clone()));
        match attempt(cluster, tls, req, protocol, &mut tried, per_try, served.as_deref_mut()).await {
            Ok((response, lease))
                if last || !retry::should_retry(policy, Outcome::Status(response.status())) =>
            {
                return respond(response, lease, permit);
            }
            Err(outcome) if last || !retry::should_retry(policy, outcome) => return failure_reply(outcome),
            // A dropped response closes its connection rather than reading the rest.
            Ok(_) | Err(_) => {}
        }
        retry += 1;
        tokio::time::sleep(retry::backoff(retry)).await;
    }
}

/// One try on one endpoint.
async fn attempt(
    cluster: &ClusterState,
    tls: &TlsContexts,
    req: Request<RequestBody>,
    protocol: Protocol,
    tried: &mut Tried,
    per_try: Option<Duration>,
    served: Option<&mut Served>,
) -> Result<(Response<Incoming>, Lease), Outcome> {
    let in_flight = cluster.pick(tried).ok_or(Outcome::ConnectFailure)?;
    let endpoint = in_flight.endpoint();
    if let Some(served) = served {
        served.upstream = Some(endpoint.addr);
        served.upstream_tls = matches!(endpoint.transport, Transport::Tls(_));
        served.upstream_identity = match &endpoint.transport {
            Transport::Tls(target) => {
                target.allowed.iter().map(ToString::to_string).collect::<Vec<_>>().join(",")
            }
            _ => String::new(),
        };
    }
    let dial = Dial {
        addr: endpoint.addr,
        transport: &endpoint.transport,
        tls,
        connect_timeout: cluster.spec.connect_timeout,
        breakers: &cluster.shared.breakers,
        limits: cluster.spec.limits,
    };
    let send = endpoint.pool.send(dial, protocol, req);
    let sent = match per_try {
        Some(timeout) => tokio::time::timeout(timeout, send).await.map_err(|_| Outcome::PerTryTimeout)?,
        None => send.await,
    };
    match sent {
        Ok((response, h1)) => Ok((response, Lease { permit: None, in_flight: Some(in_flight), h1 })),
        Err(error) => {
            tracing::debug!(cluster = %cluster.spec.name, endpoint = %endpoint.addr, %error, "upstream try failed");
            Err(match error {
                SendError::Connect(_) => Outcome::ConnectFailure,
                SendError::Reset(_) => Outcome::Reset,
                SendError::Overloaded(_) => Outcome::Overloaded,
            })
        }
    }
}

fn respond(response: Response<Incoming>, mut lease: Lease, permit: Permit) -> Response<ResponseBody> {
    lease.permit = Some(permit);
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    Response::from_parts(parts, ResponseBody::upstream(body, lease))
}

fn failure_reply(outcome: Outcome) -> Response<ResponseBody> {
    match outcome {
        Outcome::Overloaded => overloaded(),
        Outcome::PerTryTimeout => local_reply(StatusCode::GATEWAY_TIMEOUT, "upstream request timeout"),
        Outcome::ConnectFailure => local_reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "upstream connect error or disconnect/reset before headers. reset reason: connection failure",
        ),
        Outcome::Reset | Outcome::Status(_) => local_reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "upstream connect error or disconnect/reset before headers. reset reason: connection termination",
        ),
    }
}

/// A fresh request with the same head (extensions are not carried).
fn rebuild(parts: &request::Parts, body: RequestBody) -> Request<RequestBody> {
    let mut req = Request::new(body);
    *req.method_mut() = parts.method.clone();
    *req.uri_mut() = parts.uri.clone();
    *req.version_mut() = parts.version;
    *req.headers_mut() = parts.headers.clone();
    req
}

/// Rewrites a downstream request head into its upstream form: hop-by-hop
/// headers dropped; HTTP/1.1 in origin-form with `Host` set to the request's
/// authority; HTTP/2 with `:authority` from it and no `Host`. `None` when the
/// request has no usable authority for HTTP/2.
fn upstream_form(parts: &mut request::Parts, protocol: Protocol) -> Option<()> {
    strip_hop_by_hop(&mut parts.headers);
    // The proxy answers `Expect: 100-continue` itself (hyper does when the body is read).
    parts.headers.remove(header::EXPECT);
    let path = parts.uri.path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/"));
    match protocol {
        Protocol::Http1 => {
            // Absolute-form (HTTP proxy use) or an HTTP/2 downstream: the URI's
            // authority wins over any Host header.
            if let Some(authority) = parts.uri.authority() {
                let host = HeaderValue::from_str(authority.as_str()).ok()?;
                parts.headers.insert(header::HOST, host);
                parts.uri = Uri::from(path);
            }
            parts.version = Version::HTTP_11;
        }
        Protocol::Http2 => {
            let authority = match parts.uri.authority() {
                Some(authority) => authority.clone(),
                None => Authority::try_from(parts.headers.get(header::HOST)?.as_bytes()).ok()?,
            };
            parts.headers.remove(header::HOST);
            let mut uri = http::uri::Parts::default();
            uri.scheme = Some(Scheme::HTTP);
            uri.authority = Some(authority);
            uri.path_and_query = Some(path);
            parts.uri = Uri::from_parts(uri).ok()?;
            parts.version = Version::HTTP_2;
        }
    }
    Some(())
}

/// Drops hop-by-hop headers, those named in `Connection` too. `TE: trailers`
/// stays (gRPC needs it).
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if let Some(connection) = headers.remove(header::CONNECTION)
        && let Ok(names) = connection.to_str()
    {
        for name in names.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            if !name.eq_ignore_ascii_case("te") {
                headers.remove(name);
            }
        }
    }
    for name in [KEEP_ALIVE, PROXY_CONNECTION, header::TRANSFER_ENCODING, header::UPGRADE] {
        headers.remove(name);
    }
    if headers.get(header::TE).is_some_and(|te| !te.as_bytes().eq_ignore_ascii_case(b"trailers")) {
        headers.remove(header::TE);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn parts(uri: &str, headers: &[(&str, &str)]) -> request::Parts {
        let mut builder = Request::builder().uri(uri);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap().into_parts().0
    }

    #[test]
    fn absolute_form_goes_upstream_in_origin_form_with_its_host() {
        let mut p = parts("http://web.default:8080/a?b=1", &[("host", "ignored")]);
        upstream_form(&mut p, Protocol::Http1).unwrap();
        assert_eq!(p.uri, "/a?b=1");
        assert_eq!(p.headers["host"], "web.default:8080");
    }

    #[test]
    fn origin_form_keeps_its_host() {
        let mut p = parts("/a", &[("host", "web")]);
        upstream_form(&mut p, Protocol::Http1).unwrap();
        assert_eq!(p.uri, "/a");
        assert_eq!(p.headers["host"], "web");
    }

    #[test]
    fn http2_upstream_carries_the_host_as_authority() {
        let mut p = parts("/svc/Method", &[("host", "grpc:50051"), ("te", "trailers")]);
        upstream_form(&mut p, Protocol::Http2).unwrap();
        assert_eq!(p.uri, "http://grpc:50051/svc/Method");
        assert!(p.headers.get("host").is_none());
        assert_eq!(p.headers["te"], "trailers");
        assert_eq!(p.version, Version::HTTP_2);
        let mut no_host = parts("/x", &[]);
        assert!(upstream_form(&mut no_host, Protocol::Http2).is_none());
    }

    #[test]
    fn hop_by_hop_headers_are_dropped() {
        let mut p = parts(
            "/",
            &[
                ("host", "web"),
                ("connection", "keep-alive, x-private"),
                ("keep-alive", "timeout=5"),
                ("x-private", "1"),
                ("transfer-encoding", "chunked"),
                ("te", "gzip"),
                ("upgrade", "h2c"),
                ("proxy-connection", "keep-alive"),
                ("x-kept", "1"),
            ],
        );
        upstream_form(&mut p, Protocol::Http1).unwrap();
        let names: Vec<_> = p.headers.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["host", "x-kept"]);
    }
}
