//! Loopback harness for the data-path tests: test backends, a running
//! `proxy::run` fed by hand-built configs, clients, and bounded polling.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::watch;
use weft_proxy::config::*;
use weft_proxy::metrics::Metrics;
use weft_proxy::tls::Credentials;

/// How long a bounded wait may take (`WEFT_TEST_PATIENCE_MS`, default 10 s).
pub fn patience() -> Duration {
    let ms = std::env::var("WEFT_TEST_PATIENCE_MS").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000);
    Duration::from_millis(ms)
}

/// Polls `check` until it returns `Some`, or panics after [`patience`].
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + patience();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A loopback port free right now (for proxy listeners, which the test must
/// name before the proxy binds them).
pub fn free_addr() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

/// A test HTTP server (HTTP/1.1 and h2c) answering with its handler.
pub struct Backend {
    pub addr: SocketAddr,
    /// Connections accepted.
    pub connections: Arc<AtomicUsize>,
    /// Requests served.
    pub requests: Arc<AtomicUsize>,
}

pub type BoxBody = http_body_util::combinators::BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

pub fn full(body: impl Into<Bytes>) -> BoxBody {
    Full::new(body.into()).map_err(|never| match never {}).boxed()
}

impl Backend {
    /// Serves `handler` on 127.0.0.1:0.
    pub async fn spawn<H, Fut>(handler: H) -> Backend
    where
        H: Fn(Request<Incoming>) -> Fut + Send + Sync + Clone + 'static,
        Fut: Future<Output = Response<BoxBody>> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(AtomicUsize::new(0));
        let (c, r) = (Arc::clone(&connections), Arc::clone(&requests));
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                c.fetch_add(1, Ordering::SeqCst);
                let handler = handler.clone();
                let r = Arc::clone(&r);
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        r.fetch_add(1, Ordering::SeqCst);
                        let handler = handler.clone();
                        async move { Ok::<_, Infallible>(handler(req).await) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Backend { addr, connections, requests }
    }

    /// Answers every request with `name`, and headers `x-backend: name`,
    /// `x-seen-host` (the Host or authority it got) and `x-seen-version`.
    pub async fn named(name: &'static str) -> Backend {
        Backend::spawn(move |req: Request<Incoming>| async move {
            let host = req
                .uri()
                .authority()
                .map(|a| a.to_string())
                .or_else(|| req.headers().get("host").map(|h| h.to_str().unwrap().to_owned()))
                .unwrap_or_default();
            Response::builder()
                .header("x-backend", name)
                .header("x-seen-host", host)
                .header("x-seen-version", format!("{:?}", req.version()))
                .header("x-seen-uri", req.uri().to_string())
                .body(full(name))
                .unwrap()
        })
        .await
    }
}

/// A running proxy.
pub struct Proxy {
    pub config: watch::Sender<Arc<Config>>,
    pub metrics: Arc<Metrics>,
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Runs `weft_proxy::proxy::run` on `config`, without credentials.
    pub fn start(config: Config) -> Proxy {
        Proxy::start_with(config, watch::channel(None).1)
    }

    /// Runs `weft_proxy::proxy::run` on `config` with these credentials.
    pub fn start_with(config: Config, credentials: watch::Receiver<Option<Arc<Credentials>>>) -> Proxy {
        let (config_tx, config_rx) = watch::channel(Arc::new(config));
        let (shutdown, shutdown_rx) = watch::channel(false);
        let metrics = Arc::new(Metrics::new());
        let task =
            tokio::spawn(weft_proxy::proxy::run(config_rx, credentials, Arc::clone(&metrics), shutdown_rx));
        Proxy { config: config_tx, metrics, shutdown, task }
    }

    /// Swaps in a new config.
    pub fn update(&self, config: Config) {
        self.config.send_replace(Arc::new(config));
    }

    /// Shuts down and waits for `run` to return.
    pub async fn stop(self) {
        self.shutdown.send_replace(true);
        tokio::time::timeout(Duration::from_secs(10), self.task).await.unwrap().unwrap();
    }
}

/// An HTTP/1.1 client.
pub fn http1_client() -> Client<HttpConnector, BoxBody> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// A GET to `addr` with this Host.
pub fn get(addr: SocketAddr, host: &str, path: &str) -> Request<BoxBody> {
    Request::get(format!("http://{addr}{path}")).header("host", host).body(full("")).unwrap()
}

/// Sends `req` and reads the whole response: status, headers, body.
pub async fn send(
    client: &Client<HttpConnector, BoxBody>,
    req: Request<BoxBody>,
) -> (StatusCode, http::HeaderMap, String) {
    let response = client.request(req).await.expect("request");
    let (parts, body) = response.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    (parts.status, parts.headers, String::from_utf8_lossy(&body).into_owned())
}

/// Waits until `addr` answers HTTP (the listener is bound).
pub async fn wait_listening(addr: SocketAddr) {
    eventually("the proxy listener", || async move {
        tokio::net::TcpStream::connect(addr).await.ok().map(|_| ())
    })
    .await;
}

/// The value of one series in a Prometheus text page.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
}

// ---- config builders ----

pub fn endpoints(cluster: &str, addrs: &[SocketAddr]) -> Arc<ClusterEndpoints> {
    Arc::new(ClusterEndpoints {
        cluster: cluster.into(),
        endpoints: addrs
            .iter()
            .map(|a| Endpoint { addr: *a, identity: None, weight: 1, mtls: false })
            .collect(),
    })
}

pub fn cluster(name: &str, addrs: &[SocketAddr]) -> Cluster {
    Cluster {
        name: name.into(),
        discovery: Discovery::Static(endpoints(name, addrs)),
        connect_timeout: Duration::from_secs(1),
        lb: LbPolicy::RoundRobin,
        limits: CircuitBreakers::default(),
        protocol: UpstreamProtocol::Http1,
        tls: None,
    }
}

pub fn forward(clusters: &[(&str, u32)]) -> Forward {
    Forward {
        clusters: clusters.iter().map(|(n, w)| WeightedCluster { name: n.to_string(), weight: *w }).collect(),
        timeout: Some(Duration::from_secs(15)),
        retry: None,
    }
}

pub fn route(prefix: &str, action: Action) -> Route {
    Route { name: format!("route{prefix}"), path: PathMatch::Prefix(prefix.into()), headers: vec![], action }
}

pub fn vhost(name: &str, domains: &[&str], routes: Vec<Route>) -> VirtualHost {
    VirtualHost { name: name.into(), domains: domains.iter().map(|d| d.to_string()).collect(), routes }
}

pub fn http_listener(name: &str, addr: SocketAddr, routes: &str) -> Listener {
    Listener {
        name: name.into(),
        addr,
        chains: vec![],
        default_chain: Some(FilterChain {
            name: "http".into(),
            destination_port: None,
            destination_prefixes: vec![],
            server_names: vec![],
            transport_protocol: None,
            tls: None,
            rbac: None,
            kind: ChainKind::Http(HttpManager {
                stat_prefix: name.into(),
                routes: RouteSource::Rds(routes.into()),
                rbac: None,
                tracing: None,
            }),
        }),
        original_dst: false,
        tls_inspector: false,
    }
}

pub fn tcp_listener(name: &str, addr: SocketAddr, cluster: &str) -> Listener {
    Listener {
        name: name.into(),
        addr,
        chains: vec![],
        default_chain: Some(FilterChain {
            name: "tcp".into(),
            destination_port: None,
            destination_prefixes: vec![],
            server_names: vec![],
            transport_protocol: None,
            tls: None,
            rbac: None,
            kind: ChainKind::Tcp(TcpProxy {
                stat_prefix: name.into(),
                clusters: vec![WeightedCluster { name: cluster.into(), weight: 1 }],
            }),
        }),
        original_dst: false,
        tls_inspector: false,
    }
}

/// A config with these listeners, one route table `routes`, and clusters.
pub fn config(listeners: Vec<Listener>, virtual_hosts: Vec<VirtualHost>, clusters: Vec<Cluster>) -> Config {
    let mut config = Config::default();
    for l in listeners {
        config.listeners.insert(l.name.clone(), Arc::new(l));
    }
    config.routes.insert("routes".into(), Arc::new(RouteTable { name: "routes".into(), virtual_hosts }));
    config.clusters = clusters.into_iter().map(|c| (c.name.clone(), Arc::new(c))).collect::<BTreeMap<_, _>>();
    config
}
