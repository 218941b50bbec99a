//! The open-loop load generator: `connections` keep-alive HTTP/1.1 connections, each
//! sending on its own fixed schedule so that together they send `rate` requests a
//! second, whatever the answers' latency (no coordinated omission).
//!
//! Latency correction: a request that could not go out when due because the previous
//! one on its connection had not been answered yet counts from when it was due, so a
//! stall shows up in every request it held back. A request whose connection was free
//! counts from when it was written: the only delay before that is this generator's
//! timer (Tokio's wheel has 1 ms ticks), which is not the system's latency.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;

use crate::server::BODY;

/// What one load run saw.
pub(crate) struct LoadResult {
    /// Latency in µs of the requests answered 200 with the full body.
    pub(crate) hist: Histogram<u64>,
    /// Requests answered 200 with the full body.
    pub(crate) ok: u64,
    /// Requests that failed (any other answer, or a transport error).
    pub(crate) errors: u64,
    /// Requests sent later than due because their connection was still busy.
    pub(crate) late: u64,
}

/// Sends `rate` requests a second for `duration` to `target` with `Host: host`.
pub(crate) async fn run(
    target: SocketAddr,
    host: &str,
    rate: u32,
    connections: usize,
    duration: Duration,
) -> anyhow::Result<LoadResult> {
    anyhow::ensure!(rate > 0 && connections > 0, "the rate and the connections must be positive");
    let interval = Duration::from_secs_f64(connections as f64 / f64::from(rate));
    let start = Instant::now() + Duration::from_millis(50);
    let end = start + duration;
    let mut tasks = Vec::new();
    for c in 0..connections {
        let host = host.to_string();
        let offset = interval.mul_f64(c as f64 / connections as f64);
        tasks.push(tokio::spawn(async move {
            let mut part = LoadResult { hist: new_hist()?, ok: 0, errors: 0, late: 0 };
            let mut sender = None;
            let mut due = start + offset;
            let mut free_since = start;
            while due < end {
                tokio::time::sleep_until(due.into()).await;
                if sender.is_none() {
                    let stream = tokio::net::TcpStream::connect(target).await?;
                    stream.set_nodelay(true)?;
                    let (s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
                    tokio::spawn(conn);
                    sender = Some(s);
                }
                let Some(s) = sender.as_mut() else { continue };
                let held_back = free_since > due;
                let from = if held_back { due } else { Instant::now() };
                let req =
                    http::Request::get("/").header(http::header::HOST, &host).body(Empty::<Bytes>::new())?;
                let result = async {
                    let resp = s.send_request(req).await?;
                    let status = resp.status();
                    let body = resp.into_body().collect().await?.to_bytes();
                    anyhow::ensure!(
                        status == 200 && body.len() == BODY,
                        "status {status}, {} bytes",
                        body.len()
                    );
                    anyhow::Ok(())
                }
                .await;
                free_since = Instant::now();
                let micros = u64::try_from((free_since - from).as_micros()).unwrap_or(u64::MAX).max(1);
                match result {
                    Ok(()) => {
                        part.ok += 1;
                        part.late += u64::from(held_back);
                        part.hist.saturating_record(micros);
                    }
                    Err(_) => {
                        part.errors += 1;
                        sender = None;
                    }
                }
                due += interval;
            }
            anyhow::Ok(part)
        }));
    }
    let mut total = LoadResult { hist: new_hist()?, ok: 0, errors: 0, late: 0 };
    for t in tasks {
        let part = t.await??;
        total.hist.add(part.hist)?;
        total.ok += part.ok;
        total.errors += part.errors;
        total.late += part.late;
    }
    Ok(total)
}

fn new_hist() -> anyhow::Result<Histogram<u64>> {
    Ok(Histogram::new_with_bounds(1, 60_000_000, 3)?)
}
