//! Sending requests through a proxy and counting who answered.
//!
//! Requests are plain HTTP/1.1 to the proxy's address with an origin-form target and
//! the service name in `Host` (weft's Host routing on the outbound port). Connections
//! are pooled and kept alive, as a real client's would be, so a config change that
//! closes connections badly shows up as failures.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::HOST;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client as LegacyClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::sync::{oneshot, watch};
use tokio::task::{JoinHandle, JoinSet};

/// How long one request may take before it counts as a failure.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A keep-alive HTTP/1.1 client that sends every request to one proxy address.
/// Cheap to clone; clones share the connection pool.
#[derive(Debug, Clone)]
pub struct Client {
    proxy: SocketAddr,
    inner: LegacyClient<HttpConnector, Empty<Bytes>>,
}

impl Client {
    /// A client for the proxy listening at `proxy`.
    pub fn new(proxy: SocketAddr) -> Client {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let inner = LegacyClient::builder(TokioExecutor::new()).build(connector);
        Client { proxy, inner }
    }

    /// `GET path` with `Host: host`, sent to the proxy; returns the status and body.
    /// Any status is `Ok`; errors are transport failures and [`REQUEST_TIMEOUT`].
    pub async fn send(&self, host: &str, path: &str) -> anyhow::Result<(u16, String)> {
        // The URI's authority only says where to connect; hyper writes the request
        // line in origin-form and keeps the Host header given here.
        let req = http::Request::get(format!("http://{}{}", self.proxy, path))
            .header(HOST, host)
            .body(Empty::new())?;
        let exchange = async {
            let resp = self.inner.request(req).await?;
            let status = resp.status().as_u16();
            let body = resp.into_body().collect().await?.to_bytes();
            anyhow::Ok((status, String::from_utf8_lossy(&body).into_owned()))
        };
        tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| anyhow::anyhow!("no response within {REQUEST_TIMEOUT:?}"))?
    }
}

/// One request `GET path` with `Host: host` through the proxy at `proxy`.
pub async fn send(proxy: SocketAddr, host: &str, path: &str) -> anyhow::Result<(u16, String)> {
    Client::new(proxy).send(host, path).await
}

/// Runs `command` (killed after 30 s) while sending each of `traffic` (method, path, with
/// `Host: host`) through the proxy at `proxy` every 50 ms; returns its exit code, stdout and
/// stderr once it has ended and the traffic has stopped.
pub async fn run_under_traffic(
    mut command: tokio::process::Command,
    proxy: SocketAddr,
    host: &str,
    traffic: &[(&str, &str)],
) -> anyhow::Result<(i32, String, String)> {
    command.kill_on_drop(true);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let traffic: Vec<(String, String)> =
        traffic.iter().map(|(m, p)| ((*m).to_owned(), (*p).to_owned())).collect();
    let (flag, host) = (stop.clone(), host.to_owned());
    let load = tokio::spawn(async move {
        while !flag.load(Ordering::Relaxed) {
            for (method, path) in &traffic {
                let _ = request(proxy, method, &host, path).await;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let out = tokio::time::timeout(Duration::from_secs(30), command.output()).await;
    stop.store(true, Ordering::Relaxed);
    load.await?;
    let out = out.map_err(|_| anyhow::anyhow!("the command did not end within 30 s"))??;
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// One request on a connection of its own: `method path` with `Host: host`, sent to the
/// proxy at `proxy`; returns the status once the body is read (within 5 s).
pub async fn request(proxy: SocketAddr, method: &str, host: &str, path: &str) -> anyhow::Result<u16> {
    let stream = tokio::net::TcpStream::connect(proxy).await?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let req =
        http::Request::builder().method(method).uri(path).header(HOST, host).body(Empty::<Bytes>::new())?;
    let exchange = async {
        let resp = sender.send_request(req).await?;
        let status = resp.status().as_u16();
        resp.into_body().collect().await?;
        anyhow::Ok(status)
    };
    tokio::time::timeout(Duration::from_secs(5), exchange).await.map_err(|_| anyhow::anyhow!("no answer"))?
}

/// A request that did not get a 2xx answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// When it was sent, from the start of the load.
    pub at: Duration,
    /// The status, if there was an HTTP answer at all.
    pub status: Option<u16>,
    /// The body (start of it) for an HTTP answer, else the transport error.
    pub detail: String,
}

/// What a batch of requests got.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tally {
    /// 2xx answers by body, i.e. by the name of the backend that answered.
    pub by_body: BTreeMap<String, usize>,
    /// Every HTTP answer by status (transport failures are not here).
    pub statuses: BTreeMap<u16, usize>,
    /// Requests without a 2xx answer: other statuses plus transport failures.
    pub failures: usize,
    /// Each failure, in the order they completed, for diagnosis.
    pub failed: Vec<Failure>,
}

/// Bytes of a failed answer's body kept in [`Failure::detail`].
const DETAIL_LIMIT: usize = 200;

impl Tally {
    /// Counts one request's result; `at` is when it was sent, from the start of the load.
    pub fn record(&mut self, at: Duration, result: anyhow::Result<(u16, String)>) {
        let failure = match result {
            Ok((status, body)) => {
                *self.statuses.entry(status).or_default() += 1;
                if (200..300).contains(&status) {
                    *self.by_body.entry(body).or_default() += 1;
                    return;
                }
                let mut end = body.len().min(DETAIL_LIMIT);
                while !body.is_char_boundary(end) {
                    end -= 1;
                }
                Failure { at, status: Some(status), detail: body[..end].to_owned() }
            }
            Err(e) => Failure { at, status: None, detail: format!("{e:#}") },
        };
        self.failures += 1;
        self.failed.push(failure);
    }

    /// Requests counted: every HTTP answer plus transport failures.
    pub fn total(&self) -> usize {
        self.statuses.values().sum::<usize>() + self.failed.iter().filter(|f| f.status.is_none()).count()
    }

    /// Requests with a 2xx answer.
    pub fn ok(&self) -> usize {
        self.by_body.values().sum()
    }

    /// The fraction of all requests (failures included) answered 2xx by `name`; 0 if none were sent.
    pub fn share(&self, name: &str) -> f64 {
        match self.total() {
            0 => 0.0,
            total => self.by_body.get(name).copied().unwrap_or(0) as f64 / total as f64,
        }
    }

    /// Adds another tally's counts to this one.
    pub fn merge(&mut self, other: Tally) {
        for (body, n) in other.by_body {
            *self.by_body.entry(body).or_default() += n;
        }
        for (status, n) in other.statuses {
            *self.statuses.entry(status).or_default() += n;
        }
        self.failures += other.failures;
        self.failed.extend(other.failed);
    }
}

impl fmt::Display for Tally {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} requests, {} failed; by body {:?}; statuses {:?}",
            self.total(),
            self.failures,
            self.by_body,
            self.statuses
        )?;
        for failure in self.failed.iter().take(10) {
            match failure.status {
                Some(status) => write!(f, "\n  at {:?}: {status} {:?}", failure.at, failure.detail)?,
                None => write!(f, "\n  at {:?}: {}", failure.at, failure.detail)?,
            }
        }
        if self.failed.len() > 10 {
            write!(f, "\n  ... and {} more", self.failed.len() - 10)?;
        }
        Ok(())
    }
}

/// Sends `total` requests `GET path` with `Host: host` through `proxy`, at most
/// `concurrency` at a time over pooled keep-alive connections, and tallies the answers.
pub async fn run(proxy: SocketAddr, host: &str, path: &str, total: usize, concurrency: usize) -> Tally {
    let client = Client::new(proxy);
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut workers = JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let (client, next) = (client.clone(), next.clone());
        let (host, path) = (host.to_owned(), path.to_owned());
        workers.spawn(async move {
            let mut tally = Tally::default();
            while next.fetch_add(1, Ordering::Relaxed) < total {
                let at = start.elapsed();
                tally.record(at, client.send(&host, &path).await);
            }
            tally
        });
    }
    let mut tally = Tally::default();
    while let Some(joined) = workers.join_next().await {
        match joined {
            Ok(part) => tally.merge(part),
            Err(e) => tally.record(start.elapsed(), Err(anyhow::anyhow!("load worker died: {e}"))),
        }
    }
    tally
}

/// Requests at a fixed rate in the background until stopped: the traffic that proves a
/// config change drops nothing. Each request runs in its own task, so a slow answer
/// does not slow the rate (open loop). Aborted if dropped without [`SteadyLoad::stop`].
#[derive(Debug)]
pub struct SteadyLoad {
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
    /// Updated as each request completes; read without `.await`.
    tally: Arc<watch::Sender<Tally>>,
}

impl SteadyLoad {
    /// Starts sending `GET path` with `Host: host` through `proxy`, `per_second` requests a
    /// second. Must be called within a Tokio runtime.
    pub fn start(proxy: SocketAddr, host: &str, path: &str, per_second: u32) -> SteadyLoad {
        let client = Client::new(proxy);
        let tally = Arc::new(watch::Sender::new(Tally::default()));
        let (stop_tx, mut stop_rx) = oneshot::channel();
        let period = Duration::from_secs(1) / per_second.max(1);
        let (host, path, shared) = (host.to_owned(), path.to_owned(), tally.clone());
        let task = tokio::spawn(async move {
            let start = Instant::now();
            let mut ticks = tokio::time::interval(period);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            let mut in_flight = JoinSet::new();
            loop {
                tokio::select! {
                    _ = &mut stop_rx => break,
                    _ = ticks.tick() => {
                        let (client, host, path, shared) = (client.clone(), host.clone(), path.clone(), shared.clone());
                        in_flight.spawn(async move {
                            let at = start.elapsed();
                            let result = client.send(&host, &path).await;
                            shared.send_modify(|t| t.record(at, result));
                        });
                    }
                    Some(_) = in_flight.join_next(), if !in_flight.is_empty() => {}
                }
            }
            // Requests already sent finish (each within REQUEST_TIMEOUT) and are counted.
            while in_flight.join_next().await.is_some() {}
        });
        SteadyLoad { stop: Some(stop_tx), task: Some(task), tally }
    }

    /// What the requests completed so far got.
    pub fn so_far(&self) -> Tally {
        self.tally.borrow().clone()
    }

    /// Stops sending, waits for the requests in flight, and returns everything counted.
    pub async fn stop(mut self) -> anyhow::Result<Tally> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.map_err(|e| anyhow::anyhow!("steady load task failed: {e}"))?;
        }
        Ok(self.so_far())
    }
}

impl Drop for SteadyLoad {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
