//! A test HTTP server standing in for a workload.
//!
//! Every answer says who sent it: the body is the backend's name and the
//! `x-weft-workload` header carries it too, so a test can count where requests landed.
//! `/status/NNN` answers with status NNN (still with the name as body), `/delay/MS`
//! answers after MS milliseconds. A backend started with [`Failures`] answers some
//! requests 503 whatever their path, to exercise retries. Speaks HTTP/1.1 and HTTP/2
//! with prior knowledge (h2c) on the same port.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

/// The header naming the workload that answered.
pub const WORKLOAD_HEADER: &str = "x-weft-workload";

/// A request as the backend saw it.
#[derive(Debug, Clone)]
pub struct SeenRequest {
    /// Request method.
    pub method: Method,
    /// Request target (origin-form for HTTP/1.1, with authority for HTTP/2).
    pub uri: Uri,
    /// Protocol version the request arrived with.
    pub version: Version,
    /// All request headers (e.g. `host`, `x-forwarded-client-cert`, `x-request-id`).
    pub headers: HeaderMap,
}

/// Which requests a backend answers `503 Service Unavailable` (body: its name), by their
/// order of arrival, whatever their path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Failures {
    /// None: every request gets what its path asks for.
    #[default]
    Never,
    /// The first `n` requests.
    First(u64),
    /// Every other request, starting with the first: requests 1, 3, 5, ...
    EveryOther,
}

impl Failures {
    /// Whether the `n`th request (1-based) fails.
    fn fails(self, n: u64) -> bool {
        match self {
            Failures::Never => false,
            Failures::First(first) => n <= first,
            Failures::EveryOther => n % 2 == 1,
        }
    }
}

#[derive(Debug)]
struct Shared {
    requests: AtomicU64,
    failures: Failures,
    /// Used as a cell: replaced on each request, read without `.await`.
    last: watch::Sender<Option<SeenRequest>>,
}

/// A running test server; it stops (listener and every open connection) when dropped.
#[derive(Debug)]
pub struct Backend {
    addr: SocketAddr,
    name: String,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl Backend {
    /// Listens on `addr` (port 0 picks one; see [`Backend::addr`]) and answers as `name`.
    pub async fn start(addr: SocketAddr, name: &str) -> anyhow::Result<Backend> {
        Backend::start_failing(addr, name, Failures::Never).await
    }

    /// [`Backend::start`], answering the requests that `failures` picks with 503.
    pub async fn start_failing(addr: SocketAddr, name: &str, failures: Failures) -> anyhow::Result<Backend> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("backend {name}: binding {addr}: {e}"))?;
        let addr = listener.local_addr()?;
        let name_header = HeaderValue::from_str(name)
            .map_err(|_| anyhow::anyhow!("backend name {name:?} is not a valid header value"))?;
        let shared =
            Arc::new(Shared { requests: AtomicU64::new(0), failures, last: watch::Sender::new(None) });
        let task = tokio::spawn(serve(listener, Bytes::from(name.to_owned()), name_header, shared.clone()));
        Ok(Backend { addr, name: name.to_owned(), shared, task })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The name it answers with.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How many requests it has answered.
    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// The most recent request it received.
    pub fn last_request(&self) -> Option<SeenRequest> {
        self.shared.last.borrow().clone()
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        // Aborting the accept task drops its JoinSet, which aborts every connection task,
        // so kept-alive connections (e.g. from a proxy's pool) close too.
        self.task.abort();
    }
}

async fn serve(listener: TcpListener, body: Bytes, name: HeaderValue, shared: Arc<Shared>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _peer)) = accepted else {
                    // E.g. out of file descriptors: back off instead of spinning.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let (body, name, shared) = (body.clone(), name.clone(), shared.clone());
                let service = service_fn(move |req| {
                    let (delay, response) = respond(&req, &body, &name, &shared);
                    async move {
                        if let Some(delay) = delay {
                            tokio::time::sleep(delay).await;
                        }
                        Ok::<_, Infallible>(response)
                    }
                });
                connections.spawn(async move {
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// The response to `req`, and how long to wait before sending it.
fn respond(
    req: &Request<Incoming>,
    body: &Bytes,
    name: &HeaderValue,
    shared: &Shared,
) -> (Option<Duration>, Response<Full<Bytes>>) {
    let n = shared.requests.fetch_add(1, Ordering::SeqCst) + 1;
    shared.last.send_replace(Some(SeenRequest {
        method: req.method().clone(),
        uri: req.uri().clone(),
        version: req.version(),
        headers: req.headers().clone(),
    }));
    let path = req.uri().path();
    let mut delay = None;
    let status = if shared.failures.fails(n) {
        StatusCode::SERVICE_UNAVAILABLE
    } else if let Some(code) = path.strip_prefix("/status/") {
        code.parse::<u16>().ok().and_then(|c| StatusCode::from_u16(c).ok()).unwrap_or(StatusCode::BAD_REQUEST)
    } else if let Some(ms) = path.strip_prefix("/delay/") {
        match ms.parse::<u64>() {
            Ok(ms) => {
                delay = Some(Duration::from_millis(ms));
                StatusCode::OK
            }
            Err(_) => StatusCode::BAD_REQUEST,
        }
    } else {
        StatusCode::OK
    };
    let mut resp = Response::new(Full::new(body.clone()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(WORKLOAD_HEADER, name.clone());
    (delay, resp)
}
