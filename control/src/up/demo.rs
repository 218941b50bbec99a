//! The demo app: a small HTTP server that answers with its workload's name.
//!
//! Given a service to call, it first calls it through its own proxy's outbound port
//! (`Host: <service>:<port>`, so the mesh routes and splits the call) and answers
//! `<name> > <downstream body>`, so the answer carries the whole call chain, e.g.
//! `frontend > payment-v2 > fraud-detect`. If the call fails, or answers other than
//! 2xx, it answers `502` with the same shape of body.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::HOST;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

use super::UpError;
use super::tally::Recorder;

/// How long the downstream call may take (less than the traffic loop's timeout, so a
/// slow downstream shows up as this app's 502, not as the loop's timeout).
pub const DOWNSTREAM_TIMEOUT: Duration = Duration::from_secs(4);

/// The header naming the workload that answered.
pub const WORKLOAD_HEADER: &str = "x-weft-workload";

/// A service the demo app calls before answering.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DemoCall {
    /// The `Host` of the call, e.g. `payment-svc.payments:8080`.
    pub authority: String,
    /// Where the call is sent: the workload's proxy's outbound address.
    pub via: SocketAddr,
}

/// What a demo app is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DemoConfig {
    /// The name it answers with.
    pub name: String,
    /// Where it listens.
    pub listen: SocketAddr,
    /// The service it calls first, if any.
    pub calls: Option<DemoCall>,
}

/// A running demo app; it stops (listener and open connections) when dropped.
#[derive(Debug)]
pub struct DemoApp {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

struct App {
    name: String,
    name_header: HeaderValue,
    calls: Option<DemoCall>,
    client: Client<HttpConnector, Empty<Bytes>>,
    recorder: Option<Recorder>,
}

impl DemoApp {
    /// Binds `config.listen` and serves until dropped.
    pub async fn start(config: DemoConfig) -> Result<DemoApp, UpError> {
        DemoApp::start_recorded(config, None).await
    }

    /// [`DemoApp::start`], reporting every request it answers to `recorder`.
    pub(crate) async fn start_recorded(
        config: DemoConfig,
        recorder: Option<Recorder>,
    ) -> Result<DemoApp, UpError> {
        let what = format!("the demo app of {}", config.name);
        let listener = TcpListener::bind(config.listen).await.map_err(|source| UpError::Bind {
            what: what.clone(),
            addr: config.listen,
            source,
        })?;
        let addr =
            listener.local_addr().map_err(|source| UpError::Bind { what, addr: config.listen, source })?;
        let name_header = HeaderValue::from_str(&config.name)
            .map_err(|_| UpError::Config(format!("workload name {:?} is not a header value", config.name)))?;
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let app = Arc::new(App {
            name: config.name,
            name_header,
            calls: config.calls,
            client: Client::builder(TokioExecutor::new()).build(connector),
            recorder,
        });
        Ok(DemoApp { addr, task: tokio::spawn(serve(listener, app)) })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for DemoApp {
    fn drop(&mut self) {
        // Dropping the accept task's JoinSet aborts every connection task too.
        self.task.abort();
    }
}

async fn serve(listener: TcpListener, app: Arc<App>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else {
                    // E.g. out of file descriptors: back off instead of spinning.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let app = app.clone();
                let service = service_fn(move |req| {
                    let app = app.clone();
                    async move { Ok::<_, Infallible>(app.respond(req).await) }
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

impl App {
    async fn respond(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let started = Instant::now();
        let (status, body) = match &self.calls {
            None => (StatusCode::OK, self.name.clone()),
            Some(call) => {
                let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
                match self.call(call, path).await {
                    Ok((status, downstream)) => {
                        let status =
                            if status.is_success() { StatusCode::OK } else { StatusCode::BAD_GATEWAY };
                        (status, format!("{} > {}", self.name, downstream.trim_end()))
                    }
                    Err(e) => {
                        let detail = format!("(no answer from {}: {e})", call.authority);
                        (StatusCode::BAD_GATEWAY, format!("{} > {detail}", self.name))
                    }
                }
            }
        };
        if let Some(r) = &self.recorder {
            r.handled(started, status.is_success(), started.elapsed());
        }
        let mut resp = Response::new(Full::new(Bytes::from(body)));
        *resp.status_mut() = status;
        resp.headers_mut().insert(WORKLOAD_HEADER, self.name_header.clone());
        resp
    }

    /// `GET path` to the called service through the proxy; any status is `Ok`.
    async fn call(&self, call: &DemoCall, path: &str) -> Result<(StatusCode, String), String> {
        let req = Request::get(format!("http://{}{path}", call.via))
            .header(HOST, &call.authority)
            .body(Empty::new())
            .map_err(|e| e.to_string())?;
        let exchange = async {
            let resp = self.client.request(req).await.map_err(|e| format!("{e:?}"))?;
            let status = resp.status();
            let body = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
            Ok((status, String::from_utf8_lossy(&body).into_owned()))
        };
        tokio::time::timeout(DOWNSTREAM_TIMEOUT, exchange)
            .await
            .map_err(|_| format!("no response within {DOWNSTREAM_TIMEOUT:?}"))?
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    async fn get(addr: SocketAddr) -> (StatusCode, String) {
        let client: Client<HttpConnector, Empty<Bytes>> =
            Client::builder(TokioExecutor::new()).build(HttpConnector::new());
        let resp = client.get(format!("http://{addr}/pay").parse().unwrap()).await.unwrap();
        let status = resp.status();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    fn local() -> SocketAddr {
        "127.0.0.1:0".parse().unwrap()
    }

    #[tokio::test]
    async fn answers_with_its_name_and_prefixes_its_downstreams_answer() {
        let leaf = DemoApp::start(DemoConfig { name: "fraud-detect".into(), listen: local(), calls: None })
            .await
            .unwrap();
        assert_eq!(get(leaf.addr()).await, (StatusCode::OK, "fraud-detect".into()));
        // No proxy here: "via" is the leaf itself, which ignores the Host.
        let calls = Some(DemoCall { authority: "fraud-detect.payments:8080".into(), via: leaf.addr() });
        let mid =
            DemoApp::start(DemoConfig { name: "payment-v1".into(), listen: local(), calls }).await.unwrap();
        assert_eq!(get(mid.addr()).await, (StatusCode::OK, "payment-v1 > fraud-detect".into()));
    }

    #[tokio::test]
    async fn a_failed_call_is_a_502_that_still_names_the_chain() {
        let gone = TcpListener::bind(local()).await.unwrap().local_addr().unwrap();
        let calls = Some(DemoCall { authority: "payment-svc.payments:8080".into(), via: gone });
        let (events, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let app = DemoApp::start_recorded(
            DemoConfig { name: "frontend".into(), listen: local(), calls },
            Some(Recorder { events, workload: 3 }),
        )
        .await
        .unwrap();
        let (status, body) = get(app.addr()).await;
        assert_eq!(status, StatusCode::BAD_GATEWAY);
        assert!(body.starts_with("frontend > (no answer from payment-svc.payments:8080"), "{body}");
        match rx.recv().await.unwrap() {
            super::super::tally::Event::Handled { workload, ok, .. } => {
                assert_eq!((workload, ok), (3, false))
            }
            other => panic!("{other:?}"),
        }
    }
}
