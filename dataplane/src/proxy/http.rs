//! The HTTP connection manager: serves a downstream connection (HTTP/1.1 or
//! h2c, detected; HTTP/2 when TLS negotiated `h2`), and per request checks
//! the chain's RBAC, loads the current config once, finds the virtual host
//! and route, and answers directly or forwards upstream.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;

use super::authz;
use super::body::ResponseBody;
use super::listener::{ChainCtx, ChainKindCtx, Downstream, RoutesCtx};
use super::route::{IndexedTable, RequestView};
use super::runtime::{Runtime, Shared};
use super::upstream;
use crate::config::Action;
use crate::metrics::Direction;
use crate::tap::{Ends, RequestHead, Served, Tapped};
use crate::trace;
use hyper::body::Body as _;
use weft_xds_protos::tap::Peer;

/// How long a draining connection may finish its requests before it is closed.
pub(crate) const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// A downstream HTTP connection's context.
#[derive(Debug)]
pub(crate) struct HttpConn {
    /// Shared state.
    pub(crate) shared: Arc<Shared>,
    /// The filter chain it was accepted on.
    pub(crate) chain: Arc<ChainCtx>,
    /// TLS and peer identity of the connection.
    pub(crate) downstream: Downstream,
}

/// Serves one downstream connection until it closes, or until `drain` turns
/// true: then it shuts down gracefully (GOAWAY, or close when idle) and is
/// closed after [`DRAIN_TIMEOUT`]. `h2`: the connection speaks HTTP/2 only
/// (ALPN said so); otherwise HTTP/1.1 or HTTP/2 is detected.
pub(crate) async fn serve<I>(io: I, conn: Arc<HttpConn>, h2: bool, mut drain: Drain)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let shared = Arc::clone(&conn.shared);
    let service = service_fn(move |req| {
        let conn = Arc::clone(&conn);
        async move { Ok::<_, Infallible>(handle(&conn, req).await) }
    });
    let builder = if h2 { &shared.h2 } else { &shared.http };
    let connection = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = drain.signaled() => {
            connection.as_mut().graceful_shutdown();
            match tokio::time::timeout(DRAIN_TIMEOUT, connection).await {
                Ok(result) => result,
                Err(_) => {
                    tracing::debug!("drain timeout: closing the connection");
                    Ok(())
                }
            }
        }
    };
    if let Err(error) = result {
        tracing::debug!(%error, "downstream connection ended");
    }
}

/// Resolves once `drain` turns true (or its listener is gone).
pub(crate) async fn draining(drain: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is not Send: drop it here.
    let _ = drain.wait_for(|draining| *draining).await.map(|_| ());
}

/// When a connection must drain: its listener is removed or shut down, or
/// the filter chain it was accepted on was changed or removed (as Envoy
/// drains the connections of a chain a listener update replaces, so that new
/// RBAC rules, routes or TLS settings reach every request).
#[derive(Debug)]
pub(crate) struct Drain {
    /// The listener's.
    pub(crate) listener: watch::Receiver<bool>,
    /// The filter chain's.
    pub(crate) chain: watch::Receiver<bool>,
}

impl Drain {
    /// Resolves once either says so.
    pub(crate) async fn signaled(&mut self) {
        let chain = async {
            if self.chain.wait_for(|draining| *draining).await.is_err() {
                // A chain outlives its connections; should it not, only the listener decides.
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            () = draining(&mut self.listener) => {}
            () = chain => {}
        }
    }
}

async fn handle(conn: &HttpConn, mut req: Request<Incoming>) -> Response<ResponseBody> {
    let start = Instant::now();
    let runtime = conn.shared.runtime.load_full();
    let peer = conn.downstream.peer.as_deref();
    let metrics =
        conn.shared.metrics.http_peer(conn.chain.direction, authority(&req), conn.downstream.tls, peer);
    metrics.request();
    // One atomic load when no one taps.
    let mut tapped = if conn.shared.tap.is_active() { tap_begin(conn, &req) } else { None };
    // One branch when the chain does not trace.
    let span = match &conn.chain.tracer {
        Some(tracer) => tracer.start(&mut req, trace::Peer { tls: conn.downstream.tls, identity: peer }),
        None => None,
    };
    let response = match authorize(conn, req) {
        Ok(req) => route(conn, &runtime, req, tapped.as_mut().map(|t| &mut t.served)).await,
        Err(denied) => *denied,
    };
    let (status, elapsed) = (response.status().as_u16(), start.elapsed());
    metrics.response(status, elapsed);
    if let Some(upstream::UpstreamCluster(cluster, series)) = response.extensions().get() {
        match series {
            Some(series) => series.response(status, elapsed),
            None => conn.shared.metrics.upstream("", &cluster.name).response(status, elapsed),
        }
    }
    if let Some(tapped) = tapped {
        tapped.finish(response.status().as_u16(), response.body().size_hint().exact().unwrap_or(0));
    }
    if let Some(span) = span {
        let cluster = response.extensions().get::<upstream::UpstreamCluster>().map(|c| c.0.name.as_str());
        span.end(status, cluster);
    }
    response
}

/// Starts tapping `req` if a session wants it (only called while someone taps).
fn tap_begin(conn: &HttpConn, req: &Request<Incoming>) -> Option<Tapped> {
    let downstream = &conn.downstream;
    let own = Peer {
        address: downstream.local.map(|a| a.to_string()).unwrap_or_default(),
        identity: conn.shared.tls.identity(),
    };
    let client = Peer {
        address: downstream.remote.map(|a| a.to_string()).unwrap_or_default(),
        identity: downstream.peer.as_deref().unwrap_or("").to_owned(),
    };
    let (source, destination) = match conn.chain.direction {
        Direction::Inbound => (client, own),
        // The app is the source; the destination is known once an endpoint is picked.
        Direction::Outbound => (
            Peer { address: client.address, identity: own.identity },
            Peer { address: String::new(), identity: String::new() },
        ),
    };
    let head = RequestHead {
        authority: authority(req),
        method: req.method().as_str(),
        path: req.uri().path(),
        destination_identity: &destination.identity,
    };
    let request_bytes = req.body().size_hint().exact().unwrap_or(0);
    let ends = Ends {
        direction: conn.chain.direction,
        source,
        destination: destination.clone(),
        tls: downstream.tls,
    };
    conn.shared.tap.begin(ends, &head, request_bytes)
}

/// The chain's HTTP RBAC: the request goes on, or the 403 to answer.
fn authorize(
    conn: &HttpConn,
    req: Request<Incoming>,
) -> Result<Request<Incoming>, Box<Response<ResponseBody>>> {
    let Some(rbac) = &conn.chain.http_rbac else { return Ok(req) };
    let (parts, body) = req.into_parts();
    let peer = conn.downstream.peer.as_deref();
    match authz::check_http(rbac, peer, &parts, conn.downstream.port) {
        Ok(()) => Ok(Request::from_parts(parts, body)),
        Err(denied) => {
            let client_id = peer.unwrap_or("");
            conn.shared.metrics.authz_denied(true, client_id);
            tracing::debug!(chain = %conn.chain.name, client_id, path = %parts.uri, ?denied, "RBAC: request denied");
            Err(Box::new(authz::forbidden_response()))
        }
    }
}

/// The request's authority: the URI's (absolute-form, HTTP/2), else `Host`.
fn authority(req: &Request<Incoming>) -> &str {
    match req.uri().authority() {
        Some(authority) => authority.as_str(),
        None => req.headers().get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or(""),
    }
}

async fn route(
    conn: &HttpConn,
    runtime: &Runtime,
    req: Request<Incoming>,
    served: Option<&mut Served>,
) -> Response<ResponseBody> {
    let ChainKindCtx::Http(routes) = &conn.chain.kind else {
        return local_reply(StatusCode::INTERNAL_SERVER_ERROR, "not an HTTP chain");
    };
    let table: Option<&IndexedTable> = match routes {
        RoutesCtx::Rds(name) => runtime.routes.get(name.as_str()).map(Arc::as_ref),
        RoutesCtx::Inline(table) => Some(table),
    };
    let path = req.uri().path();
    let view = RequestView {
        method: req.method().as_str(),
        authority: authority(&req),
        path,
        path_and_query: req.uri().path_and_query().map_or(path, |p| p.as_str()),
        headers: req.headers(),
    };
    let Some(route) = table.and_then(|t| t.route(&view)) else {
        return local_reply(StatusCode::NOT_FOUND, "");
    };
    let mut served = served;
    if let Some(served) = served.as_deref_mut() {
        served.route.clone_from(&route.name);
    }
    match &route.action {
        Action::Direct { status, body } => {
            let status = StatusCode::from_u16(*status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            reply(status, body.clone())
        }
        Action::Forward(forward) => {
            let mut response = upstream::forward(runtime, &conn.shared.tls, forward, req, served).await;
            // Marks the answer with its (route, cluster) series: a lookup by borrowed names
            // and an `Arc` clone, in the extension the cluster already put there.
            if let Some(upstream::UpstreamCluster(cluster, series)) = response.extensions_mut().get_mut() {
                *series = Some(conn.shared.metrics.upstream(&route.name, &cluster.name));
            }
            response
        }
    }
}

/// A reply made by the proxy, with a plain-text body.
pub(crate) fn local_reply(status: StatusCode, body: &'static str) -> Response<ResponseBody> {
    reply(status, Bytes::from_static(body.as_bytes()))
}

fn reply(status: StatusCode, body: Bytes) -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::local(Bytes::new()));
    *response.status_mut() = status;
    if !body.is_empty() {
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        *response.body_mut() = ResponseBody::local(body);
    }
    response
}

/// The reply when a circuit breaker is open.
pub(crate) fn overloaded() -> Response<ResponseBody> {
    let mut response = local_reply(StatusCode::SERVICE_UNAVAILABLE, "upstream overloaded");
    response.headers_mut().insert("x-weft-overloaded", HeaderValue::from_static("true"));
    response
}
