//! `bench controlplane`: the control plane under many ADS clients.
//!
//! Generates a mesh as manifests (10,000 Services and 50,000 meshed endpoints by
//! default, see [`cp_mesh`]), starts the release `weft control` on it as
//! a child process (so its RSS and CPU come from `/proc/<pid>`), issues every client a
//! workload certificate through the identity service (before any clock starts), then
//! opens one ADS stream per client, each a distinct proxy (its own node, namespace,
//! ServiceAccount, pod IP and certificate), half Delta and half SotW by default, each
//! subscribing and ACKing like a sidecar ([`cp_client`]).
//!
//! It times the initial sync, then TrafficSplit changes and single-endpoint changes,
//! each sent through `POST /apply`, from the moment the request is sent to each client's
//! first ACK of the changed type (RDS, EDS). It prints a Markdown table and writes JSON.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::sync::Semaphore;
use tonic::transport::{Channel, Endpoint};
use weft_integration::child::LoggedChild;
use weft_integration::identity::{CONTROL_SERVER_NAME, LeafCert, MeshIdentity, TRUST_DOMAIN, client_config};

use cp_client::{Clock, EDS, RDS, Stats};
use cp_mesh::MeshShape;

#[path = "cp_client.rs"]
mod cp_client;
#[path = "cp_mesh.rs"]
mod cp_mesh;

#[derive(Debug, Clone)]
struct Options {
    shape: MeshShape,
    clients: usize,
    delta: usize,
    repeats: usize,
    plaintext: bool,
    control_cpus: Option<String>,
    timeout: Duration,
    connect_concurrency: usize,
    sync_concurrency: usize,
    out: PathBuf,
}

const USAGE: &str = "usage: bench controlplane [--services N (10000)] [--endpoints N (50000)] \
[--clients N (1000)] [--delta N (half the clients; the rest SotW)] [--splits N (10)] \
[--repeats N (5)] [--plaintext] [--no-pods] [--control-cpus LIST (taskset, e.g. 1)] \
[--timeout-secs S (120)] [--connect-concurrency N (64)] [--sync-concurrency N (100)] \
[--services-per-file N (10)] [--out FILE.json]";

fn parse(args: &[String]) -> anyhow::Result<Options> {
    let mut services = 10_000usize;
    let mut endpoints = 50_000usize;
    let mut delta = None;
    let mut o = Options {
        shape: MeshShape { services, endpoints_per_service: 5, splits: 10, pods: true, per_file: 10 },
        clients: 1000,
        delta: 0,
        repeats: 5,
        plaintext: false,
        control_cpus: None,
        timeout: Duration::from_secs(120),
        connect_concurrency: 64,
        sync_concurrency: 100,
        out: weft_integration::target_dir().join("bench/controlplane.json"),
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--plaintext" => {
                o.plaintext = true;
                continue;
            }
            "--no-pods" => {
                o.shape.pods = false;
                continue;
            }
            _ => {}
        }
        let v = it.next().with_context(|| format!("{a} needs a value\n{USAGE}"))?;
        let num = |what: &str| -> anyhow::Result<usize> {
            v.parse().with_context(|| format!("{what}: {v:?} is not a whole number"))
        };
        match a.as_str() {
            "--services" => services = num(a)?,
            "--endpoints" => endpoints = num(a)?,
            "--clients" => o.clients = num(a)?,
            "--delta" => delta = Some(num(a)?),
            "--splits" => o.shape.splits = num(a)?,
            "--repeats" => o.repeats = num(a)?,
            "--control-cpus" => o.control_cpus = Some(v.clone()),
            "--timeout-secs" => o.timeout = Duration::from_secs(num(a)? as u64),
            "--connect-concurrency" => o.connect_concurrency = num(a)?.max(1),
            "--sync-concurrency" => o.sync_concurrency = num(a)?.max(1),
            "--services-per-file" => o.shape.per_file = num(a)?.max(1),
            "--out" => o.out = v.into(),
            other => anyhow::bail!("unknown flag {other:?}\n{USAGE}"),
        }
    }
    anyhow::ensure!(services >= 3, "--services must be at least 3");
    anyhow::ensure!(o.clients >= 1, "--clients must be at least 1");
    anyhow::ensure!(
        o.clients <= services,
        "--clients ({}) may not exceed --services ({services}): each client is a workload of its own Service",
        o.clients
    );
    anyhow::ensure!(endpoints >= services, "--endpoints must be at least --services (one per Service)");
    o.shape.services = services;
    o.shape.endpoints_per_service = endpoints / services;
    o.shape.splits = o.shape.splits.clamp(1, services / 3);
    o.delta = delta.unwrap_or(o.clients / 2).min(o.clients);
    Ok(o)
}

/// Client `k`: a workload of Service `service`, at that Service's first endpoint.
#[derive(Debug, Clone)]
struct ClientSpec {
    delta: bool,
    namespace: String,
    service_account: String,
    node: weft_xds_protos::envoy::config::core::v3::Node,
}

fn client_specs(o: &Options) -> Vec<ClientSpec> {
    let stride = o.shape.services / o.clients;
    (0..o.clients)
        .map(|k| {
            let service = k * stride;
            let namespace = o.shape.namespace(service);
            let service_account = cp_mesh::service_name(service);
            let ip = o.shape.endpoint_ip(service, 0).to_string();
            let node = weft_integration::xds_client::node(
                &format!("bench-{k}.{namespace}"),
                &namespace,
                &service_account,
                &ip,
            );
            ClientSpec { delta: k < o.delta, namespace, service_account, node }
        })
        .collect()
}

/// The control plane process and where it listens.
struct Control {
    process: LoggedChild,
    xds: SocketAddr,
    admin: SocketAddr,
    identity: Option<MeshIdentity>,
}

async fn start_control(
    o: &Options,
    manifests: &std::path::Path,
    state: &std::path::Path,
) -> anyhow::Result<Control> {
    let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let xds = SocketAddr::new(lo, weft_integration::free_port_on(lo)?);
    let admin = SocketAddr::new(lo, weft_integration::free_port_on(lo)?);
    let weft = weft_integration::weft_bin()?;
    let mut command = Command::new(&weft);
    command.arg("control").arg("--manifests").arg(manifests).args([
        "--xds-addr",
        &xds.to_string(),
        "--admin-addr",
        &admin.to_string(),
        "--log",
        "warn",
    ]);
    let ca_dir = state.join("ca");
    if o.plaintext {
        command.arg("--insecure-plaintext");
    } else {
        command.arg("--ca-dir").arg(&ca_dir).args(["--trust-domain", TRUST_DOMAIN]);
    }
    let process = LoggedChild::spawn("weft-control", command)?;
    if let Some(cpus) = &o.control_cpus {
        crate::procstat::pin(process.pid(), cpus)?;
    }
    let deadline = Instant::now() + o.timeout.max(Duration::from_secs(300));
    loop {
        if let Some(status) = process.exited() {
            return Err(process.failed(format!("weft control exited ({status})")));
        }
        if let Ok((200, _)) = weft_integration::load::send(admin, "admin", "/ready").await {
            break;
        }
        if Instant::now() > deadline {
            return Err(process.failed("weft control was not ready in time".into()));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let identity = (!o.plaintext).then(|| MeshIdentity { ca_dir, trust_domain: TRUST_DOMAIN.to_owned() });
    Ok(Control { process, xds, admin, identity })
}

/// `POST /apply` with `body`; an error naming the control plane's complaint if refused.
async fn apply(admin: SocketAddr, body: String) -> anyhow::Result<()> {
    let stream =
        tokio::net::TcpStream::connect(admin).await.with_context(|| format!("connecting to {admin}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let req = http::Request::post("/apply?file=bench")
        .header(http::header::HOST, "admin")
        .body(Full::new(Bytes::from(body)))?;
    let resp = sender.send_request(req).await?;
    let status = resp.status();
    let text = resp.into_body().collect().await?.to_bytes();
    anyhow::ensure!(status == 200, "POST /apply: {status}: {}", String::from_utf8_lossy(&text));
    Ok(())
}

/// A channel to the xDS port: over TLS with the client's own certificate, or plaintext.
async fn channel(control: &Control, cert: Option<&LeafCert>) -> anyhow::Result<Channel> {
    match (&control.identity, cert) {
        (Some(identity), Some(cert)) => {
            let roots = [identity.root()?];
            let config = client_config(Some(cert), &roots, Some(identity.control_identity()?), &[b"h2"])?;
            weft_integration::identity::tls_channel(control.xds, CONTROL_SERVER_NAME, config).await
        }
        _ => Ok(Endpoint::from_shared(format!("http://{}", control.xds))?
            .connect()
            .await
            .with_context(|| format!("connecting to {}", control.xds))?),
    }
}

/// Percentiles (nearest rank) of microsecond samples, in milliseconds.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
struct Dist {
    n: usize,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

fn dist(samples: &[u64]) -> Dist {
    let mut s = samples.to_vec();
    s.sort_unstable();
    let at = |q: f64| {
        if s.is_empty() {
            return 0.0;
        }
        let i = ((q * s.len() as f64).ceil() as usize).clamp(1, s.len()) - 1;
        s[i] as f64 / 1000.0
    };
    Dist { n: s.len(), p50_ms: at(0.50), p99_ms: at(0.99), max_ms: at(1.0) }
}

/// What one kind of change measured, over every repetition.
#[derive(Debug, Default, serde::Serialize)]
struct ChangeResult {
    /// Per-client latency, all repetitions: Delta, SotW, all.
    delta: Dist,
    sotw: Dist,
    all: Dist,
    /// Time until the POST /apply returned (the new state is published by then), per repetition.
    apply_ms: Vec<f64>,
    /// Time until the last client ACKed, per repetition.
    last_client_ms: Vec<f64>,
    /// Clients that had not ACKed when the timeout struck, summed over repetitions.
    missing: usize,
    /// Control plane CPU seconds per update (raw, and minus its idle rate over the same time).
    cpu_s_per_update: f64,
    cpu_s_per_update_net: f64,
    /// Mean encoded response bytes per client per update.
    bytes_per_client_delta: f64,
    bytes_per_client_sotw: f64,
    /// Load client CPU seconds per update (its own overhead).
    client_cpu_s_per_update: f64,
}

struct Run<'a> {
    o: &'a Options,
    control: &'a Control,
    clock: Arc<Clock>,
    stats: Vec<Arc<Stats>>,
    specs: &'a [ClientSpec],
    idle_cpu_rate: f64,
}

impl Run<'_> {
    /// Applies `body` and waits until every client ACKed type `t` after it.
    async fn timed_change(
        &self,
        t: usize,
        body: String,
        r: &mut ChangeResult,
        samples: &mut [Vec<u64>; 2],
    ) -> anyhow::Result<()> {
        let pid = self.control.process.pid();
        for s in &self.stats {
            s.reset_mark();
        }
        let bytes0: Vec<u64> = self.stats.iter().map(|s| s.total_bytes()).collect();
        let cpu0 = crate::procstat::cpu_seconds(pid)?;
        let self_cpu0 = crate::procstat::cpu_seconds(std::process::id())?;
        let t0 = self.clock.mark();
        apply(self.control.admin, body).await?;
        r.apply_ms.push((self.clock.now_us() - t0) as f64 / 1000.0);
        let deadline = Instant::now() + self.o.timeout;
        loop {
            let pending =
                self.stats.iter().filter(|s| s.first_ack_after_mark[t].load(Ordering::SeqCst) == 0).count();
            if pending == 0 {
                break;
            }
            if Instant::now() > deadline {
                eprintln!("warning: {pending} clients did not ACK within {:?}", self.o.timeout);
                r.missing += pending;
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let mut last = 0;
        for (spec, s) in self.specs.iter().zip(&self.stats) {
            let at = s.first_ack_after_mark[t].load(Ordering::SeqCst);
            if at != 0 {
                let lat = at.saturating_sub(t0);
                last = last.max(lat);
                samples[usize::from(!spec.delta)].push(lat);
            }
        }
        r.last_client_ms.push(last as f64 / 1000.0);
        // Let trailing work (reports, metrics, stray pushes) finish before reading CPU and bytes.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let elapsed = (self.clock.now_us() - t0) as f64 / 1e6;
        let cpu = crate::procstat::cpu_seconds(pid)? - cpu0;
        r.cpu_s_per_update += cpu;
        r.cpu_s_per_update_net += cpu - self.idle_cpu_rate * elapsed;
        r.client_cpu_s_per_update += crate::procstat::cpu_seconds(std::process::id())? - self_cpu0;
        let (mut bd, mut nd, mut bs, mut ns) = (0u64, 0u64, 0u64, 0u64);
        for ((spec, s), b0) in self.specs.iter().zip(&self.stats).zip(&bytes0) {
            let b = s.total_bytes() - b0;
            if spec.delta {
                (bd, nd) = (bd + b, nd + 1);
            } else {
                (bs, ns) = (bs + b, ns + 1);
            }
        }
        r.bytes_per_client_delta += bd as f64 / nd.max(1) as f64;
        r.bytes_per_client_sotw += bs as f64 / ns.max(1) as f64;
        Ok(())
    }

    async fn changes(&self, t: usize, bodies: Vec<String>) -> anyhow::Result<ChangeResult> {
        let mut r = ChangeResult::default();
        let mut samples: [Vec<u64>; 2] = Default::default();
        let n = bodies.len().max(1) as f64;
        for body in bodies {
            self.timed_change(t, body, &mut r, &mut samples).await?;
        }
        r.cpu_s_per_update /= n;
        r.cpu_s_per_update_net /= n;
        r.client_cpu_s_per_update /= n;
        r.bytes_per_client_delta /= n;
        r.bytes_per_client_sotw /= n;
        r.delta = dist(&samples[0]);
        r.sotw = dist(&samples[1]);
        let all: Vec<u64> = samples.concat();
        r.all = dist(&all);
        Ok(r)
    }
}

#[derive(Debug, serde::Serialize)]
struct Report {
    services: usize,
    endpoints: usize,
    namespaces: usize,
    splits: usize,
    pods: bool,
    manifest_bytes: u64,
    services_per_file: usize,
    clients: usize,
    sync_concurrency: usize,
    delta_clients: usize,
    sotw_clients: usize,
    xds_transport: &'static str,
    control_cpus: Option<String>,
    machine: String,
    control_ready_s: f64,
    certificates_s: Option<f64>,
    initial_sync_s: f64,
    initial_sync_delta: Dist,
    initial_sync_sotw: Dist,
    initial_sync_cpu_s: f64,
    initial_bytes_per_client_delta: f64,
    initial_bytes_per_client_sotw: f64,
    rss_idle_kib: u64,
    rss_before_clients_kib: u64,
    rss_with_clients_kib: u64,
    rss_peak_kib: u64,
    kib_per_proxy: f64,
    idle_cpu_s_per_s: f64,
    client_cpu_s_initial_sync: f64,
    split_change: ChangeResult,
    endpoint_change: ChangeResult,
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines().find(|l| l.starts_with("MemTotal:"))?.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .map_or(0, |k| k / 1024);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{cpu}, {cores} CPUs, {mem} MiB RAM, Linux {}", kernel.trim())
}

/// Runs the control-plane benchmark with its arguments.
pub(crate) async fn run(args: &[String]) -> anyhow::Result<()> {
    let o = parse(args)?;
    let manifests = tempfile::Builder::new().prefix("weft-cpbench-manifests-").tempdir()?;
    let state = tempfile::Builder::new().prefix("weft-cpbench-state-").tempdir()?;
    let manifest_bytes = cp_mesh::write(&o.shape, manifests.path())?;
    eprintln!(
        "mesh: {} services, {} endpoints in {} namespaces, {} splits, {:.1} MiB of manifests",
        o.shape.services,
        o.shape.services * o.shape.endpoints_per_service,
        o.shape.namespaces(),
        o.shape.splits,
        manifest_bytes as f64 / 1048576.0
    );
    let started = Instant::now();
    let control = start_control(&o, manifests.path(), state.path()).await?;
    let pid = control.process.pid();
    let control_ready_s = started.elapsed().as_secs_f64();
    eprintln!("control plane ready in {control_ready_s:.1} s (pid {pid})");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_idle_kib = crate::procstat::status_kib(pid, "VmRSS")?;

    let specs = client_specs(&o);
    let mut certs: Vec<Option<LeafCert>> = Vec::new();
    let mut certificates_s = None;
    if let Some(identity) = &control.identity {
        let t = Instant::now();
        let sem = Arc::new(Semaphore::new(32));
        let mut tasks = Vec::new();
        for spec in &specs {
            let (identity, sem, xds) = (identity.clone(), sem.clone(), control.xds);
            let (ns, sa) = (spec.namespace.clone(), spec.service_account.clone());
            tasks.push(tokio::spawn(async move {
                let _permit = sem.acquire_owned().await?;
                identity.certify(xds, &ns, &sa).await
            }));
        }
        for task in tasks {
            certs.push(Some(task.await??));
        }
        certificates_s = Some(t.elapsed().as_secs_f64());
        eprintln!("{} certificates issued in {:.1} s", certs.len(), t.elapsed().as_secs_f64());
    } else {
        certs.resize_with(specs.len(), || None);
    }
    // Idle baseline: memory, and the CPU the control plane burns with nothing to do (manifest polling).
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_before_clients_kib = crate::procstat::status_kib(pid, "VmRSS")?;
    let c0 = crate::procstat::cpu_seconds(pid)?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let idle_cpu_rate = (crate::procstat::cpu_seconds(pid)? - c0) / 3.0;

    // Connect every client; the clock for the initial sync starts with the first connection.
    let clock = Clock::new();
    let stats: Vec<Arc<Stats>> = specs.iter().map(|_| Arc::new(Stats::default())).collect();
    let control = Arc::new(control);
    let cpu0 = crate::procstat::cpu_seconds(pid)?;
    let self_cpu0 = crate::procstat::cpu_seconds(std::process::id())?;
    let t_connect = clock.now_us();
    let sem = Arc::new(Semaphore::new(o.connect_concurrency));
    // At most this many clients between connecting and their first full config, as when
    // proxies start in waves rather than all at once.
    let syncing = Arc::new(Semaphore::new(o.sync_concurrency));
    let mut streams = Vec::new();
    for ((spec, cert), s) in specs.iter().zip(certs).zip(&stats) {
        let (control, sem, s, clock, spec) =
            (control.clone(), sem.clone(), s.clone(), clock.clone(), spec.clone());
        let syncing = syncing.clone();
        streams.push(tokio::spawn(async move {
            let sync_permit = syncing.acquire_owned().await?;
            let ch = {
                let _permit = sem.acquire_owned().await?;
                channel(&control, cert.as_ref()).await?
            };
            let watch = s.clone();
            tokio::spawn(async move {
                while watch.synced_at.load(Ordering::SeqCst) == 0 && !watch.failed.load(Ordering::SeqCst) {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                drop(sync_permit);
            });
            let result = if spec.delta {
                cp_client::run_delta(ch, spec.node, s.clone(), clock).await
            } else {
                cp_client::run_sotw(ch, spec.node, s.clone(), clock).await
            };
            s.failed.store(true, Ordering::SeqCst);
            if let Err(e) = &result {
                eprintln!("client {}: {e:#}", spec.namespace);
            }
            result
        }));
    }
    let deadline = Instant::now() + o.timeout;
    loop {
        let synced = stats.iter().filter(|s| s.synced_at.load(Ordering::SeqCst) != 0).count();
        if synced == stats.len() {
            break;
        }
        if let Some(failed) = stats.iter().position(|s| s.failed.load(Ordering::SeqCst)) {
            anyhow::bail!("client {failed} failed before the initial sync\n{}", control.process.log_tail(20));
        }
        if Instant::now() > deadline {
            anyhow::bail!("only {synced} of {} clients synced within {:?}", stats.len(), o.timeout);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let initial_sync_s = (clock.now_us() - t_connect) as f64 / 1e6;
    let initial_sync_cpu_s = crate::procstat::cpu_seconds(pid)? - cpu0;
    let client_cpu_s_initial_sync = crate::procstat::cpu_seconds(std::process::id())? - self_cpu0;
    let mut sync_samples: [Vec<u64>; 2] = Default::default();
    let mut init_bytes = [(0u64, 0u64); 2];
    for (spec, s) in specs.iter().zip(&stats) {
        let i = usize::from(!spec.delta);
        sync_samples[i].push(s.synced_at.load(Ordering::SeqCst) - t_connect);
        init_bytes[i].0 += s.total_bytes();
        init_bytes[i].1 += 1;
    }
    eprintln!("{} clients synced in {initial_sync_s:.2} s", stats.len());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_with_clients_kib = crate::procstat::status_kib(pid, "VmRSS")?;

    let run = Run {
        o: &o,
        control: &control,
        clock: clock.clone(),
        stats: stats.clone(),
        specs: &specs,
        idle_cpu_rate,
    };
    let split_bodies = (0..o.repeats)
        .map(|r| cp_mesh::traffic_split(&o.shape, 0, if r % 2 == 0 { 90 } else { 10 }))
        .collect();
    let split_change = run.changes(RDS, split_bodies).await?;
    eprintln!("split changes: p99 {:.1} ms", split_change.all.p99_ms);
    let churn = o.shape.churn_service();
    let eps = o.shape.endpoints_per_service;
    let ep_bodies = (0..o.repeats)
        .map(|r| {
            cp_mesh::endpoint_slice(
                &o.shape,
                churn,
                if r % 2 == 0 { eps.saturating_sub(1).max(1) } else { eps },
            )
        })
        .collect();
    let endpoint_change = run.changes(EDS, ep_bodies).await?;
    eprintln!("endpoint changes: p99 {:.1} ms", endpoint_change.all.p99_ms);
    let rss_peak_kib = crate::procstat::status_kib(pid, "VmHWM")?;
    if let Some(failed) = stats.iter().position(|s| s.failed.load(Ordering::SeqCst)) {
        anyhow::bail!("client {failed}'s stream ended during the run\n{}", control.process.log_tail(20));
    }

    let report = Report {
        services: o.shape.services,
        endpoints: o.shape.services * o.shape.endpoints_per_service,
        namespaces: o.shape.namespaces(),
        splits: o.shape.splits,
        pods: o.shape.pods,
        manifest_bytes,
        services_per_file: o.shape.per_file,
        clients: o.clients,
        sync_concurrency: o.sync_concurrency,
        delta_clients: o.delta,
        sotw_clients: o.clients - o.delta,
        xds_transport: if o.plaintext { "plaintext" } else { "mTLS" },
        control_cpus: o.control_cpus.clone(),
        machine: machine(),
        control_ready_s,
        certificates_s,
        initial_sync_s,
        initial_sync_delta: dist(&sync_samples[0]),
        initial_sync_sotw: dist(&sync_samples[1]),
        initial_sync_cpu_s,
        initial_bytes_per_client_delta: init_bytes[0].0 as f64 / init_bytes[0].1.max(1) as f64,
        initial_bytes_per_client_sotw: init_bytes[1].0 as f64 / init_bytes[1].1.max(1) as f64,
        rss_idle_kib,
        rss_before_clients_kib,
        rss_with_clients_kib,
        rss_peak_kib,
        kib_per_proxy: (rss_with_clients_kib as f64 - rss_before_clients_kib as f64) / o.clients as f64,
        idle_cpu_s_per_s: idle_cpu_rate,
        client_cpu_s_initial_sync,
        split_change,
        endpoint_change,
    };
    print_table(&report);
    if let Some(dir) = o.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&o.out, serde_json::to_string_pretty(&report)?)?;
    println!("\nJSON written to {}", o.out.display());
    for s in streams {
        s.abort();
    }
    Ok(())
}

fn print_table(r: &Report) {
    let kib = |b: f64| format!("{:.1} KiB", b / 1024.0);
    println!(
        "weft control: {} Services, {} endpoints ({} namespaces, {} TrafficSplits{}), {} ADS clients ({} Delta, {} SotW) over {}\n",
        r.services,
        r.endpoints,
        r.namespaces,
        r.splits,
        if r.pods { ", meshed Pods" } else { "" },
        r.clients,
        r.delta_clients,
        r.sotw_clients,
        r.xds_transport
    );
    println!("| figure | Delta | SotW | all | target |");
    println!("|---|---|---|---|---|");
    let d = |x: &Dist| format!("{:.0} / {:.0} / {:.0}", x.p50_ms, x.p99_ms, x.max_ms);
    println!(
        "| initial sync, ms (p50 / p99 / max) | {} | {} | {:.0} (all synced) | - |",
        d(&r.initial_sync_delta),
        d(&r.initial_sync_sotw),
        r.initial_sync_s * 1000.0
    );
    for (name, c, target) in [
        ("TrafficSplit change", &r.split_change, "p99 ≤ 1000 ms"),
        ("one endpoint change", &r.endpoint_change, "p99 ≤ 100 ms"),
    ] {
        println!(
            "| {name}: ACK latency, ms (p50 / p99 / max) | {} | {} | {} | {target} |",
            d(&c.delta),
            d(&c.sotw),
            d(&c.all)
        );
        println!(
            "| {name}: bytes per client per update | {} | {} | - | - |",
            kib(c.bytes_per_client_delta),
            kib(c.bytes_per_client_sotw)
        );
        println!(
            "| {name}: control plane CPU s per update (net of idle) | - | - | {:.3} ({:.3}) | - |",
            c.cpu_s_per_update, c.cpu_s_per_update_net
        );
        println!(
            "| {name}: apply returned, ms (per repetition) | - | - | {:?} | - |",
            c.apply_ms.iter().map(|v| v.round() as u64).collect::<Vec<_>>()
        );
        println!("| {name}: load client CPU s per update | - | - | {:.3} | - |", c.client_cpu_s_per_update);
    }
    println!(
        "| initial bytes per client | {} | {} | - | - |",
        kib(r.initial_bytes_per_client_delta),
        kib(r.initial_bytes_per_client_sotw)
    );
    println!(
        "| control plane RSS: idle / before clients / with clients / peak, MiB | - | - | {:.0} / {:.0} / {:.0} / {:.0} | - |",
        r.rss_idle_kib as f64 / 1024.0,
        r.rss_before_clients_kib as f64 / 1024.0,
        r.rss_with_clients_kib as f64 / 1024.0,
        r.rss_peak_kib as f64 / 1024.0
    );
    println!("| memory per connected proxy | - | - | {:.1} KiB | ≤ 100 KiB |", r.kib_per_proxy);
    println!(
        "| control plane CPU: initial sync s / idle s per s | - | - | {:.2} / {:.3} | - |",
        r.initial_sync_cpu_s, r.idle_cpu_s_per_s
    );
    println!("| load client CPU s for the initial sync | - | - | {:.2} | - |", r.client_cpu_s_initial_sync);
    println!("\nMachine: {}", r.machine);
}
