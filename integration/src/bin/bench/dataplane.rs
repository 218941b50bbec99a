//! `bench dataplane`: client -> client-side proxy -> server-side proxy -> 1 KiB server
//! on loopback, for a direct connection, a weft-proxy pair and a stock Envoy pair.
//!
//! Two parts. Open loop (`--only open`): each path with mTLS off and on, at each rate,
//! latency-corrected (see `openloop`), with each proxy's CPU per 1,000 requests and
//! peak RSS. Max throughput (`--only max`): each pair pinned to one core and h2load
//! (closed loop) pinned to the other, HTTP/2 and gRPC unary, with mTLS on.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use weft_control::bootstrap::AdsMode;
use weft_integration::mesh::LocalMesh;
use weft_integration::proxy::{OUTBOUND_PORT, Proxy, ProxyKind};

use crate::h2load::{self, Workload};
use crate::openloop;
use crate::procstat::{cpu_seconds, cpus, pin, status_kib};
use crate::server::{self, BODY};

/// The authority the client asks its proxy for: the bench manifests' `echo` service.
const AUTHORITY: &str = "echo.bench:8080";

/// Which mTLS settings to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MtlsModes {
    Off,
    On,
    Both,
}

impl MtlsModes {
    fn list(self) -> &'static [bool] {
        match self {
            MtlsModes::Off => &[false],
            MtlsModes::On => &[true],
            MtlsModes::Both => &[false, true],
        }
    }
}

/// `bench dataplane`'s flags.
#[derive(Debug, Clone)]
struct Options {
    rates: Vec<u32>,
    mtls: MtlsModes,
    open: bool,
    max: bool,
    connections: usize,
    streams: usize,
    duration: Duration,
    weft_workers: usize,
    weft_log: String,
    out: PathBuf,
}

pub(crate) const USAGE: &str = "usage: bench dataplane [--rates R1,R2 (1000,5000)] [--mtls off|on|both (both)] \
[--only open|max] [--seconds S (10)] [--connections N (16)] [--streams N (10, h2load -m)] \
[--weft-workers N (1)] [--weft-log FILTER (warn)] [--out FILE.json (target/bench/dataplane.json)]";

fn parse(args: &[String]) -> anyhow::Result<Options> {
    let mut o = Options {
        rates: vec![1000, 5000],
        mtls: MtlsModes::Both,
        open: true,
        max: true,
        connections: 16,
        streams: 10,
        duration: Duration::from_secs(10),
        weft_workers: 1,
        weft_log: "warn".into(),
        out: weft_integration::target_dir().join("bench/dataplane.json"),
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value\n{USAGE}"))?;
        let bad = || format!("{flag} {value:?}\n{USAGE}");
        match flag.as_str() {
            "--rates" | "--rate" => {
                o.rates = value
                    .split(',')
                    .map(|r| r.trim().parse::<u32>().ok().filter(|r| *r > 0))
                    .collect::<Option<Vec<_>>>()
                    .with_context(bad)?;
            }
            "--mtls" => {
                o.mtls = match value.as_str() {
                    "off" => MtlsModes::Off,
                    "on" => MtlsModes::On,
                    "both" => MtlsModes::Both,
                    _ => anyhow::bail!("{}: expected off, on or both", bad()),
                }
            }
            "--only" => match value.as_str() {
                "open" => o.max = false,
                "max" => o.open = false,
                _ => anyhow::bail!("{}: expected open or max", bad()),
            },
            "--seconds" => {
                o.duration = Duration::from_secs(value.parse().ok().filter(|s| *s > 0).with_context(bad)?)
            }
            "--connections" => o.connections = value.parse().ok().filter(|n| *n > 0).with_context(bad)?,
            "--streams" => o.streams = value.parse().ok().filter(|n| *n > 0).with_context(bad)?,
            "--weft-workers" => o.weft_workers = value.parse().ok().filter(|n| *n > 0).with_context(bad)?,
            "--weft-log" => o.weft_log.clone_from(value),
            "--out" => o.out = value.into(),
            _ => anyhow::bail!("unknown flag {flag}\n{USAGE}"),
        }
    }
    anyhow::ensure!(!o.rates.is_empty(), "--rates: at least one rate\n{USAGE}");
    Ok(o)
}

/// One open-loop row.
#[derive(Debug, serde::Serialize)]
struct OpenRow {
    path: String,
    mtls: bool,
    rate: u32,
    requests_ok: u64,
    errors: u64,
    /// Requests held back by the previous one on their connection (counted from when due).
    held_back: u64,
    p50_us: u64,
    p99_us: u64,
    p999_us: u64,
    added_p50_us: i64,
    added_p99_us: i64,
    added_p999_us: i64,
    /// CPU seconds per 1,000 requests: client-side proxy, server-side proxy.
    cpu_s_per_1k_req: Option<[f64; 2]>,
    /// Peak RSS (VmHWM) in KiB: client-side proxy, server-side proxy.
    rss_peak_kib: Option<[u64; 2]>,
    /// Peak RSS of the weft-agent beside each Envoy (mTLS only), KiB, max of the pair.
    agent_rss_peak_kib: Option<u64>,
}

/// One closed-loop (max throughput) row.
#[derive(Debug, serde::Serialize)]
struct MaxRow {
    path: String,
    mtls: bool,
    workload: String,
    req_per_s: f64,
    succeeded: u64,
    failed: u64,
    cpu_s_per_1k_req: Option<[f64; 2]>,
    rss_peak_kib: Option<[u64; 2]>,
    /// h2load's count of answers by status class.
    status_codes: String,
}

/// A target of the benchmark issue, weft-proxy against Envoy.
#[derive(Debug, serde::Serialize)]
struct Target {
    what: String,
    weft: f64,
    envoy: f64,
    ratio: Option<f64>,
    target_max_ratio: f64,
    met: Option<bool>,
}

/// A running pair of proxies and what to watch of it.
struct Pair {
    client: Proxy,
    server: Proxy,
}

impl Pair {
    async fn start(mesh: &LocalMesh, kind: ProxyKind, o: &Options) -> anyhow::Result<Pair> {
        let config = |node: &str, sa: &str, host: u8| -> anyhow::Result<_> {
            let mut config = mesh.proxy_config(node, "bench", sa, host, AdsMode::Delta)?;
            // As Envoy runs: one worker (`--concurrency 1`), warnings only.
            config.env = vec![
                ("WEFT_WORKERS".into(), o.weft_workers.to_string()),
                ("WEFT_LOG".into(), o.weft_log.clone()),
            ];
            Ok(config)
        };
        let server = Proxy::start(kind, &config("echo", "echo", 2)?).await?;
        let client = Proxy::start(kind, &config("client", "client", 1)?).await?;
        Ok(Pair { client, server })
    }

    fn pids(&self) -> anyhow::Result<[u32; 2]> {
        Ok([pid_of(&self.client)?, pid_of(&self.server)?])
    }

    fn cpu(&self) -> anyhow::Result<[f64; 2]> {
        let [c, s] = self.pids()?;
        Ok([cpu_seconds(c)?, cpu_seconds(s)?])
    }

    fn rss_peak(&self) -> anyhow::Result<[u64; 2]> {
        let [c, s] = self.pids()?;
        Ok([status_kib(c, "VmHWM")?, status_kib(s, "VmHWM")?])
    }

    fn agent_rss_peak(&self) -> anyhow::Result<Option<u64>> {
        let mut peak = None;
        for p in [&self.client, &self.server] {
            if let Some(agent) = p.as_envoy().and_then(|e| e.agent()) {
                peak = peak.max(Some(status_kib(agent.pid(), "VmHWM")?));
            }
        }
        Ok(peak)
    }
}

fn pid_of(p: &Proxy) -> anyhow::Result<u32> {
    p.as_envoy().map(|e| e.pid()).or_else(|| p.as_weft().map(|w| w.pid())).context("proxy has no process")
}

fn per_1k(before: [f64; 2], after: [f64; 2], requests: u64) -> [f64; 2] {
    let n = requests.max(1) as f64;
    [(after[0] - before[0]) / n * 1000.0, (after[1] - before[1]) / n * 1000.0]
}

async fn mesh(mtls: bool) -> anyhow::Result<LocalMesh> {
    let builder = LocalMesh::manifests_builder("bench");
    if mtls { builder.start().await } else { builder.plaintext().start().await }
}

/// Runs `bench dataplane` with its arguments.
pub(crate) async fn run(args: &[String]) -> anyhow::Result<()> {
    let o = parse(args)?;
    let mut open_rows = Vec::new();
    let mut max_rows = Vec::new();
    if o.open {
        for &mtls in o.mtls.list() {
            open_rows.extend(open_part(&o, mtls).await?);
        }
        print_open(&o, &open_rows);
    }
    if o.max {
        let mtls = o.mtls != MtlsModes::Off;
        max_rows = max_part(&o, mtls).await?;
        print_max(&o, &max_rows);
    }
    let targets = targets(&open_rows);
    print_targets(&targets);
    if let Some(dir) = o.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let json = serde_json::json!({
        "connections": o.connections, "seconds": o.duration.as_secs(), "response_bytes": BODY,
        "h2load_streams_per_connection": o.streams, "weft_workers": o.weft_workers,
        "machine": machine(), "open_loop": open_rows, "max_throughput": max_rows, "targets": targets,
    });
    std::fs::write(&o.out, serde_json::to_string_pretty(&json)?)
        .with_context(|| format!("writing {}", o.out.display()))?;
    println!("\nJSON written to {}", o.out.display());
    Ok(())
}

async fn open_part(o: &Options, mtls: bool) -> anyhow::Result<Vec<OpenRow>> {
    let mesh = mesh(mtls).await?;
    let _server = server::serve(mesh.subnet.addr(2, 8080)).await?;
    let mut rows = Vec::new();
    let mut direct = Vec::new();
    for &rate in &o.rates {
        eprintln!("open loop: direct, {rate} req/s");
        let r = openloop::run(mesh.subnet.addr(2, 8080), AUTHORITY, rate, o.connections, o.duration).await?;
        let row = open_row("direct", mtls, rate, &r);
        direct.push((row.p50_us, row.p99_us, row.p999_us));
        rows.push(row);
    }
    let proxy_addr = mesh.subnet.addr(1, OUTBOUND_PORT);
    for kind in [ProxyKind::Weft, ProxyKind::Envoy] {
        let pair = Pair::start(&mesh, kind, o).await?;
        // Open the connections and warm the pools before counting.
        openloop::run(proxy_addr, AUTHORITY, 200, o.connections, Duration::from_secs(1)).await?;
        for (i, &rate) in o.rates.iter().enumerate() {
            eprintln!("open loop: {kind} pair, mTLS {}, {rate} req/s", on_off(mtls));
            let before = pair.cpu()?;
            let r = openloop::run(proxy_addr, AUTHORITY, rate, o.connections, o.duration).await?;
            let mut row = open_row(&format!("{kind} pair"), mtls, rate, &r);
            row.cpu_s_per_1k_req = Some(per_1k(before, pair.cpu()?, r.ok + r.errors));
            row.rss_peak_kib = Some(pair.rss_peak()?);
            row.agent_rss_peak_kib = pair.agent_rss_peak()?;
            let (p50, p99, p999) = direct[i];
            row.added_p50_us = row.p50_us as i64 - p50 as i64;
            row.added_p99_us = row.p99_us as i64 - p99 as i64;
            row.added_p999_us = row.p999_us as i64 - p999 as i64;
            rows.push(row);
        }
    }
    Ok(rows)
}

fn open_row(path: &str, mtls: bool, rate: u32, r: &openloop::LoadResult) -> OpenRow {
    OpenRow {
        path: path.into(),
        mtls,
        rate,
        requests_ok: r.ok,
        errors: r.errors,
        held_back: r.late,
        p50_us: r.hist.value_at_quantile(0.5),
        p99_us: r.hist.value_at_quantile(0.99),
        p999_us: r.hist.value_at_quantile(0.999),
        added_p50_us: 0,
        added_p99_us: 0,
        added_p999_us: 0,
        cpu_s_per_1k_req: None,
        rss_peak_kib: None,
        agent_rss_peak_kib: None,
    }
}

async fn max_part(o: &Options, mtls: bool) -> anyhow::Result<Vec<MaxRow>> {
    let h2load = h2load::ensure_installed()?;
    let n = cpus();
    // The proxies on the last core, the bench (h2load and the server) on the others.
    let (proxy_cpu, load_cpus, all) = if n >= 2 {
        ((n - 1).to_string(), format!("0-{}", n - 2), format!("0-{}", n - 1))
    } else {
        eprintln!("only one CPU: nothing is pinned, proxies and load share it");
        ("0".into(), "0".into(), "0".into())
    };
    let me = std::process::id();
    pin(me, &load_cpus)?;
    let result = max_part_pinned(o, mtls, &h2load, &proxy_cpu, &load_cpus).await;
    pin(me, &all)?;
    result
}

async fn max_part_pinned(
    o: &Options,
    mtls: bool,
    h2load: &std::path::Path,
    proxy_cpu: &str,
    load_cpus: &str,
) -> anyhow::Result<Vec<MaxRow>> {
    let mesh = mesh(mtls).await?;
    let scratch = tempfile::Builder::new().prefix("weft-bench-").tempdir()?;
    let _server = server::serve(mesh.subnet.addr(2, 8080)).await?;
    let workloads = [Workload::Http2, Workload::GrpcUnary];
    let mut rows = Vec::new();
    let h2 = |target, workload| {
        h2load::run(
            h2load,
            target,
            AUTHORITY,
            workload,
            o.connections,
            o.streams,
            o.duration,
            load_cpus,
            scratch.path(),
        )
    };
    for workload in workloads {
        eprintln!("max throughput: direct, {workload}");
        let r = tokio::task::block_in_place(|| h2(mesh.subnet.addr(2, 8080), workload))?;
        rows.push(MaxRow {
            path: "direct".into(),
            mtls,
            workload: workload.to_string(),
            req_per_s: r.req_per_s,
            succeeded: r.succeeded,
            failed: r.failed,
            cpu_s_per_1k_req: None,
            rss_peak_kib: None,
            status_codes: r.status_codes,
        });
    }
    for kind in [ProxyKind::Weft, ProxyKind::Envoy] {
        let pair = Pair::start(&mesh, kind, o).await?;
        for pid in pair.pids()? {
            pin(pid, proxy_cpu)?;
        }
        for workload in workloads {
            eprintln!("max throughput: {kind} pair on CPU {proxy_cpu}, mTLS {}, {workload}", on_off(mtls));
            let before = pair.cpu()?;
            let r = tokio::task::block_in_place(|| h2(mesh.subnet.addr(1, OUTBOUND_PORT), workload))?;
            rows.push(MaxRow {
                path: format!("{kind} pair"),
                mtls,
                workload: workload.to_string(),
                req_per_s: r.req_per_s,
                succeeded: r.succeeded,
                failed: r.failed,
                // The warm-up second's requests are not in h2load's count: slightly high.
                cpu_s_per_1k_req: Some(per_1k(before, pair.cpu()?, r.succeeded + r.failed)),
                rss_peak_kib: Some(pair.rss_peak()?),
                status_codes: r.status_codes,
            });
        }
    }
    Ok(rows)
}

fn targets(rows: &[OpenRow]) -> Vec<Target> {
    let mut out = Vec::new();
    for weft in rows.iter().filter(|r| r.path.starts_with("weft-proxy")) {
        let Some(envoy) =
            rows.iter().find(|r| r.path.starts_with("envoy") && r.mtls == weft.mtls && r.rate == weft.rate)
        else {
            continue;
        };
        let label = format!("mTLS {}, {} req/s", on_off(weft.mtls), weft.rate);
        let sum = |r: &OpenRow| r.cpu_s_per_1k_req.map_or(0.0, |c| c[0] + c[1]);
        let max = |r: &OpenRow| r.rss_peak_kib.map_or(0, |m| m[0].max(m[1])) as f64;
        let mut push = |what: String, w: f64, e: f64, limit: f64| {
            let ratio = (e > 0.0 && w >= 0.0).then(|| w / e);
            out.push(Target {
                what,
                weft: w,
                envoy: e,
                ratio,
                target_max_ratio: limit,
                met: ratio.map(|r| r <= limit),
            });
        };
        if weft.rate == 1000 {
            push(
                format!("added p99 (µs), {label}"),
                weft.added_p99_us as f64,
                envoy.added_p99_us as f64,
                0.5,
            );
        }
        push(format!("CPU s / 1k req (pair), {label}"), sum(weft), sum(envoy), 0.5);
        push(format!("peak RSS (KiB, larger of pair), {label}"), max(weft), max(envoy), 0.25);
    }
    out
}

fn on_off(mtls: bool) -> &'static str {
    if mtls { "on" } else { "off" }
}

fn pair_f(v: Option<[f64; 2]>) -> String {
    v.map_or("-".into(), |[a, b]| format!("{a:.4} / {b:.4}"))
}

fn pair_u(v: Option<[u64; 2]>) -> String {
    v.map_or("-".into(), |[a, b]| format!("{a} / {b}"))
}

fn print_open(o: &Options, rows: &[OpenRow]) {
    println!(
        "\n### Open loop: HTTP/1.1, {} B responses, {} connections, {} s per row, latency-corrected (µs)\n",
        BODY,
        o.connections,
        o.duration.as_secs()
    );
    println!(
        "| mTLS | req/s | path | ok | errors | held back | p50 | p99 | p99.9 | added p50 | added p99 | added p99.9 | \
         CPU s / 1k req (client / server proxy) | peak RSS KiB (client / server proxy) | agent peak RSS KiB |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        let direct = r.path == "direct";
        let added = |v: i64| if direct { "-".to_string() } else { v.to_string() };
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            on_off(r.mtls),
            r.rate,
            r.path,
            r.requests_ok,
            r.errors,
            r.held_back,
            r.p50_us,
            r.p99_us,
            r.p999_us,
            added(r.added_p50_us),
            added(r.added_p99_us),
            added(r.added_p999_us),
            pair_f(r.cpu_s_per_1k_req),
            pair_u(r.rss_peak_kib),
            r.agent_rss_peak_kib.map_or("-".into(), |k| k.to_string()),
        );
    }
}

fn print_max(o: &Options, rows: &[MaxRow]) {
    println!(
        "\n### Max throughput, closed loop (h2load, {} connections x {} streams, {} s), the pair on one core\n",
        o.connections,
        o.streams,
        o.duration.as_secs()
    );
    println!(
        "| mTLS | workload | path | req/s | succeeded | failed | CPU s / 1k req (client / server proxy) | peak RSS KiB (client / server proxy) |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for r in rows {
        if r.failed > 0 {
            eprintln!(
                "{} {} {}: h2load status codes: {}",
                r.path,
                on_off(r.mtls),
                r.workload,
                r.status_codes
            );
        }
        println!(
            "| {} | {} | {} | {:.0} | {} | {} | {} | {} |",
            on_off(r.mtls),
            r.workload,
            r.path,
            r.req_per_s,
            r.succeeded,
            r.failed,
            pair_f(r.cpu_s_per_1k_req),
            pair_u(r.rss_peak_kib)
        );
    }
}

fn print_targets(targets: &[Target]) {
    if targets.is_empty() {
        return;
    }
    println!("\n### weft-proxy against Envoy (open loop)\n");
    println!("| figure | weft-proxy | Envoy | ratio | target | met |");
    println!("|---|---|---|---|---|---|");
    for t in targets {
        println!(
            "| {} | {} | {} | {} | ≤ {:.0} % | {} |",
            t.what,
            trim(t.weft),
            trim(t.envoy),
            t.ratio.map_or("-".into(), |r| format!("{:.0} %", r * 100.0)),
            t.target_max_ratio * 100.0,
            t.met.map_or("n/a (Envoy added nothing measurable)", |m| if m { "yes" } else { "no" })
        );
    }
}

fn trim(v: f64) -> String {
    if v.fract() == 0.0 { format!("{v:.0}") } else { format!("{v:.4}") }
}

/// The machine the figures come from: CPU model and count, memory, kernel.
fn machine() -> serde_json::Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name").and_then(|r| r.split_once(':')).map(|(_, m)| m.trim()))
        .unwrap_or("unknown")
        .to_owned();
    let mem_kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| m.lines().next().and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok()));
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_owned();
    serde_json::json!({ "cpu": model, "cpus": cpus(), "mem_kib": mem_kib, "kernel": kernel })
}
