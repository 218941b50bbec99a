//! `bench`: weft's benchmarks, figures side by side in one run.
//!
//! `cargo build --release --bins && target/release/bench dataplane` measures,
//! on loopback, client -> client-side proxy -> server-side proxy -> server with
//! 1 KiB responses, open-loop at a constant rate with latency correction
//! (latency counts from when a request was due, not when it was sent):
//! a direct connection, a weft-proxy pair and a stock Envoy pair
//! (`--concurrency 1`). It prints a Markdown table and writes JSON.

mod controlplane;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Empty, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use weft_control::bootstrap::AdsMode;
use weft_integration::mesh::LocalMesh;
use weft_integration::proxy::{Proxy, ProxyKind};

/// Response body size.
const BODY: usize = 1024;

#[derive(Debug, Clone)]
struct Options {
    rate: u32,
    connections: usize,
    duration: Duration,
    out: PathBuf,
}

fn usage() -> anyhow::Error {
    anyhow::anyhow!(
        "usage: bench dataplane [--rate REQ_PER_S (1000)] [--connections N (16)] [--seconds S (10)] [--out FILE.json]"
    )
}

fn parse(args: &[String]) -> anyhow::Result<Options> {
    let mut o = Options {
        rate: 1000,
        connections: 16,
        duration: Duration::from_secs(10),
        out: weft_integration::target_dir().join("bench/dataplane.json"),
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let v = it.next().ok_or_else(usage)?;
        match a.as_str() {
            "--rate" => o.rate = v.parse().context("--rate")?,
            "--connections" => o.connections = v.parse().context("--connections")?,
            "--seconds" => o.duration = Duration::from_secs(v.parse().context("--seconds")?),
            "--out" => o.out = v.into(),
            _ => return Err(usage()),
        }
    }
    Ok(o)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("dataplane") => dataplane(parse(&args[1..])?).await,
        Some("controlplane") => controlplane::run(&args[1..]).await,
        _ => Err(usage()),
    }
}

/// The 1 KiB server.
async fn serve(addr: SocketAddr) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding {addr}"))?;
    let body = Bytes::from(vec![b'w'; BODY]);
    Ok(tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            let body = body.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |_req| {
                    let body = body.clone();
                    async move { Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(body))) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    }))
}

/// What one load run saw.
struct LoadResult {
    hist: Histogram<u64>,
    ok: u64,
    errors: u64,
}

/// Open loop: `connections` keep-alive HTTP/1.1 connections, each sending on
/// its own fixed schedule; latency is measured from the scheduled time.
async fn open_loop(target: SocketAddr, host: &str, o: &Options) -> anyhow::Result<LoadResult> {
    let interval = Duration::from_secs_f64(o.connections as f64 / f64::from(o.rate));
    let start = Instant::now() + Duration::from_millis(50);
    let end = start + o.duration;
    let mut tasks = Vec::new();
    for c in 0..o.connections {
        let host = host.to_string();
        let offset = interval.mul_f64(c as f64 / o.connections as f64);
        tasks.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
            let (mut ok, mut errors) = (0u64, 0u64);
            let mut sender = None;
            let mut due = start + offset;
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
                let micros = u64::try_from(due.elapsed().as_micros()).unwrap_or(u64::MAX).max(1);
                match result {
                    Ok(()) => {
                        ok += 1;
                        hist.saturating_record(micros);
                    }
                    Err(_) => {
                        errors += 1;
                        sender = None;
                    }
                }
                due += interval;
            }
            anyhow::Ok((hist, ok, errors))
        }));
    }
    let mut total = LoadResult { hist: Histogram::new_with_bounds(1, 60_000_000, 3)?, ok: 0, errors: 0 };
    for t in tasks {
        let (h, ok, errors) = t.await??;
        total.hist.add(h)?;
        total.ok += ok;
        total.errors += errors;
    }
    Ok(total)
}

/// CPU seconds a process has used (user + system), from /proc.
fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).context("odd /proc stat")?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 =
        f.get(11).context("utime")?.parse::<u64>()? + f.get(12).context("stime")?.parse::<u64>()?;
    // USER_HZ is 100 on Linux for every architecture weft runs on.
    Ok(ticks as f64 / 100.0)
}

/// A `/proc/<pid>/status` field in KiB (`VmRSS`, `VmHWM`).
fn status_kib(pid: u32, field: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status.lines().find(|l| l.starts_with(field)).with_context(|| format!("{field} in status"))?;
    Ok(line.split_whitespace().nth(1).context("value")?.parse()?)
}

fn pid_of(p: &Proxy) -> anyhow::Result<u32> {
    p.as_envoy().map(|e| e.pid()).or_else(|| p.as_weft().map(|w| w.pid())).context("proxy has no process")
}

#[derive(Debug, serde::Serialize)]
struct Row {
    name: String,
    requests_ok: u64,
    errors: u64,
    p50_us: u64,
    p99_us: u64,
    p999_us: u64,
    added_p50_us: i64,
    added_p99_us: i64,
    added_p999_us: i64,
    cpu_s_per_1000_req: Option<f64>,
    rss_idle_kib: Option<u64>,
    rss_peak_kib: Option<u64>,
}

async fn dataplane(o: Options) -> anyhow::Result<()> {
    let mesh = LocalMesh::manifests("bench").await?;
    let server = serve(mesh.subnet.addr(2, 8080)).await?;
    let mut rows: Vec<Row> = Vec::new();
    let direct = open_loop(mesh.subnet.addr(2, 8080), "echo", &o).await?;
    rows.push(row("direct", &direct, None, None));
    for kind in [ProxyKind::Weft, ProxyKind::Envoy] {
        let server_proxy = mesh.proxy(kind, "echo", "bench", "echo", 2, AdsMode::Delta).await?;
        let client_proxy = mesh.proxy(kind, "client", "bench", "client", 1, AdsMode::Delta).await?;
        let pids = [pid_of(&client_proxy)?, pid_of(&server_proxy)?];
        // Warm up connections and pools, then measure idle memory.
        let warm = Options { duration: Duration::from_secs(1), rate: 200, ..o.clone() };
        open_loop(mesh.subnet.addr(1, 4140), "echo.bench:8080", &warm).await?;
        let idle = pids.iter().map(|p| status_kib(*p, "VmRSS")).collect::<anyhow::Result<Vec<_>>>()?;
        let cpu0: f64 = pids.iter().map(|p| cpu_seconds(*p)).sum::<anyhow::Result<f64>>()?;
        let result = open_loop(mesh.subnet.addr(1, 4140), "echo.bench:8080", &o).await?;
        let cpu = pids.iter().map(|p| cpu_seconds(*p)).sum::<anyhow::Result<f64>>()? - cpu0;
        let peak = pids.iter().map(|p| status_kib(*p, "VmHWM")).collect::<anyhow::Result<Vec<_>>>()?;
        let mut r =
            row(&format!("{kind} pair"), &result, idle.iter().max().copied(), peak.iter().max().copied());
        r.cpu_s_per_1000_req = Some(cpu / (result.ok.max(1) as f64) * 1000.0 / 2.0);
        rows.push(r);
        drop(client_proxy);
        drop(server_proxy);
    }
    let base = (rows[0].p50_us, rows[0].p99_us, rows[0].p999_us);
    for r in &mut rows {
        r.added_p50_us = r.p50_us as i64 - base.0 as i64;
        r.added_p99_us = r.p99_us as i64 - base.1 as i64;
        r.added_p999_us = r.p999_us as i64 - base.2 as i64;
    }
    print_table(&o, &rows);
    if let Some(dir) = o.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(
        &o.out,
        serde_json::to_string_pretty(&serde_json::json!({
            "rate": o.rate, "connections": o.connections, "seconds": o.duration.as_secs(), "response_bytes": BODY, "rows": rows,
        }))?,
    )?;
    println!("\nJSON written to {}", o.out.display());
    server.abort();
    Ok(())
}

fn row(name: &str, r: &LoadResult, idle: Option<u64>, peak: Option<u64>) -> Row {
    Row {
        name: name.into(),
        requests_ok: r.ok,
        errors: r.errors,
        p50_us: r.hist.value_at_quantile(0.5),
        p99_us: r.hist.value_at_quantile(0.99),
        p999_us: r.hist.value_at_quantile(0.999),
        added_p50_us: 0,
        added_p99_us: 0,
        added_p999_us: 0,
        cpu_s_per_1000_req: None,
        rss_idle_kib: idle,
        rss_peak_kib: peak,
    }
}

fn print_table(o: &Options, rows: &[Row]) {
    println!(
        "HTTP/1.1, 1 KiB responses, {} req/s open loop over {} connections for {} s, latency-corrected (µs)\n",
        o.rate,
        o.connections,
        o.duration.as_secs()
    );
    println!(
        "| path | ok | errors | p50 | p99 | p99.9 | added p50 | added p99 | added p99.9 | CPU s / 1k req / proxy | RSS idle (KiB, max of pair) | RSS peak (KiB) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    let opt = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
    for r in rows {
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.name,
            r.requests_ok,
            r.errors,
            r.p50_us,
            r.p99_us,
            r.p999_us,
            r.added_p50_us,
            r.added_p99_us,
            r.added_p999_us,
            r.cpu_s_per_1000_req.map_or("-".to_string(), |c| format!("{c:.4}")),
            opt(r.rss_idle_kib),
            opt(r.rss_peak_kib)
        );
    }
}
