//! The traffic loop: open-loop requests at a steady rate to the entry workload's app.
//!
//! Open loop means a request leaves on every tick whether or not earlier ones have
//! answered, as real users would send them, so a slow mesh shows up as latency and
//! failures rather than as a lower rate. Each answer's body names the call chain
//! (`frontend > payment-v2 > fraud-detect`), which attributes it to workloads.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::HOST;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::MissedTickBehavior;

use super::tally::Event;

/// How long one request may take before it counts as failed.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Requests in flight beyond which a tick counts as a failure instead of sending.
const MAX_IN_FLIGHT: usize = 10_000;

/// Where the loop sends, and how to read the answers.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    /// The entry workload's app address.
    pub(crate) addr: SocketAddr,
    /// Every workload's name, by index, to read chains with.
    pub(crate) names: Arc<Vec<String>>,
}

impl Target {
    fn client() -> Client<HttpConnector, Empty<Bytes>> {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        Client::builder(TokioExecutor::new()).pool_max_idle_per_host(1024).build(connector)
    }

    /// One `GET /`: the status and body, or why there is none.
    async fn send(
        &self,
        client: &Client<HttpConnector, Empty<Bytes>>,
    ) -> Result<(StatusCode, String), String> {
        let req = Request::get(format!("http://{}/", self.addr))
            .header(HOST, self.addr.to_string())
            .body(Empty::new())
            .map_err(|e| e.to_string())?;
        let exchange = async {
            let resp = client.request(req).await.map_err(|e| format!("{e:?}"))?;
            let status = resp.status();
            let body = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
            Ok((status, String::from_utf8_lossy(&body).into_owned()))
        };
        tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| format!("no response within {REQUEST_TIMEOUT:?}"))?
    }
}

/// The workloads a chain names (`a > b > c`), by index; unknown names are skipped.
pub(crate) fn parse_chain(body: &str, names: &[String]) -> Vec<usize> {
    body.split(" > ").filter_map(|hop| names.iter().position(|n| n == hop.trim())).collect()
}

/// Sends single requests until `attempts_ok` in a row answer 2xx, or `deadline`.
/// On failure, returns the last answer (or error).
pub(crate) async fn warm_up(target: &Target, attempts_ok: u32, deadline: Instant) -> Result<(), String> {
    let client = Target::client();
    let mut in_a_row = 0;
    loop {
        let last = match target.send(&client).await {
            Ok((status, _)) if status.is_success() => {
                in_a_row += 1;
                if in_a_row >= attempts_ok {
                    return Ok(());
                }
                continue;
            }
            Ok((status, body)) => format!("{} {}", status.as_u16(), body.trim_end()),
            Err(e) => e,
        };
        in_a_row = 0;
        if Instant::now() >= deadline {
            return Err(last);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A running traffic loop.
#[derive(Debug)]
pub(crate) struct Traffic {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Traffic {
    /// Starts sending `rate` requests per second to `target`, reporting to `events`.
    pub(crate) fn start(target: Target, rate: u32, events: mpsc::UnboundedSender<Event>) -> Traffic {
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(run(target, rate.max(1), events, stop_rx));
        Traffic { stop, task }
    }

    /// Stops sending and waits for the requests in flight (at most [`REQUEST_TIMEOUT`]).
    pub(crate) async fn stop(self) {
        let _ = self.stop.send(true);
        let abort = self.task.abort_handle();
        if tokio::time::timeout(REQUEST_TIMEOUT + Duration::from_secs(1), self.task).await.is_err() {
            abort.abort();
        }
    }
}

async fn run(
    target: Target,
    rate: u32,
    events: mpsc::UnboundedSender<Event>,
    mut stop: watch::Receiver<bool>,
) {
    let client = Target::client();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate)));
    // Catch up after a stall, so the rate over a second stays the one asked for.
    tick.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let mut in_flight = JoinSet::new();
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let at = Instant::now();
                if in_flight.len() >= MAX_IN_FLIGHT {
                    let _ = events.send(Event::Sent { at, ok: false, latency: Duration::ZERO, chain: vec![] });
                    continue;
                }
                let (target, client, events) = (target.clone(), client.clone(), events.clone());
                in_flight.spawn(async move {
                    let (ok, chain) = match target.send(&client).await {
                        Ok((status, body)) => (status.is_success(), parse_chain(&body, &target.names)),
                        Err(_) => (false, vec![]),
                    };
                    let _ = events.send(Event::Sent { at, ok, latency: at.elapsed(), chain });
                });
            }
            Some(_) = in_flight.join_next(), if !in_flight.is_empty() => {}
            _ = stop.wait_for(|s| *s) => break,
        }
    }
    while in_flight.join_next().await.is_some() {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chains_name_known_workloads_in_order() {
        let names: Vec<String> =
            ["fraud-detect", "frontend", "payment-v1", "payment-v2"].map(String::from).into();
        assert_eq!(parse_chain("frontend > payment-v2 > fraud-detect", &names), [1, 3, 0]);
        assert_eq!(parse_chain("frontend > no healthy upstream", &names), [1]);
        assert_eq!(parse_chain("frontend > (no answer from x: refused)", &names), [1]);
        assert!(parse_chain("", &names).is_empty());
    }
}
