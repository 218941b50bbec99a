//! `weft up`'s sequence: plan, start everything, wait until ready, run traffic with
//! the live view until stopped, then summarise and stop everything.

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::{mpsc, watch};

use crate::identity::{SpiffeId, control_identity, format_duration, token_for};
use crate::model::Key;
use crate::server::{self, ControlConfig, IdentityConfig, SourceConfig};
use crate::source::ManifestDir;
use crate::translate::MeshOptions;

use super::demo::{DemoApp, DemoCall, DemoConfig};
use super::plan::{Plan, ProxyKind, Workload, demo_calls};
use super::process::{self, Children, OUTBOUND_PORT, WorkloadIdentity};
use super::scrape::{self, History};
use super::status::{ControlStatus, SplitView};
use super::tally::{Event, Recorder, Tally};
use super::traffic::{Target, Traffic, warm_up};
use super::view::{Row, View, render, split_rows};
use super::{UpConfig, UpError, UpSecurity, status};

/// How `weft up` ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Stopped by a signal or at the end of `--duration`, every proxy still running.
    Stopped,
    /// Stopped by a signal before traffic started.
    Interrupted,
    /// A proxy exited while traffic ran.
    ProxyExited,
}

/// Ctrl-C, SIGTERM and SIGHUP, installed before any child starts (so none is orphaned
/// by a signal's default action).
pub(crate) struct Stop {
    int: Signal,
    term: Signal,
    hup: Signal,
}

impl Stop {
    pub(crate) fn install() -> Result<Stop, UpError> {
        let sig = |kind| signal(kind).map_err(UpError::Signal);
        Ok(Stop {
            int: sig(SignalKind::interrupt())?,
            term: sig(SignalKind::terminate())?,
            hup: sig(SignalKind::hangup())?,
        })
    }

    /// Resolves at the next of these signals.
    pub(crate) async fn recv(&mut self) {
        tokio::select! {
            _ = self.int.recv() => {}
            _ = self.term.recv() => {}
            _ = self.hup.recv() => {}
        }
    }
}

/// Writes to stdout, ignoring a closed pipe (the view is not worth a panic).
fn say(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}

/// Where the view goes: redrawn in place on a terminal, one block per second otherwise.
struct Screen {
    tty: bool,
    last_lines: usize,
}

impl Screen {
    fn draw(&mut self, block: &str) {
        if self.tty {
            // Back to the start of the previous block, then clear to the end of the screen.
            let up =
                if self.last_lines > 0 { format!("\x1b[{}F\x1b[J", self.last_lines) } else { String::new() };
            say(&format!("{up}{block}"));
            self.last_lines = block.lines().count();
        } else {
            say(&format!("{block}\n"));
        }
    }
}

/// What the view reads besides the tally and the proxies.
struct Sources<'a> {
    plan: &'a Plan,
    entry: usize,
    security: String,
    mtls: bool,
    control: watch::Receiver<ControlStatus>,
    splits: watch::Receiver<Arc<Vec<SplitView>>>,
    /// The proxies' metrics, scraped every second.
    proxies: watch::Receiver<Arc<History>>,
}

impl Sources<'_> {
    /// The view of the window ending at second `end`.
    fn view(&self, tally: &Tally, children: &Children, end: u64) -> View {
        let history = self.proxies.borrow().clone();
        let rows = self.plan.workloads.iter().enumerate().map(|(i, w)| {
            let exited = children.procs().iter().filter(|p| p.workload == i).find_map(|p| {
                p.exited().map(|s| format!("{} exited ({s})", if p.agent { "agent" } else { "proxy" }))
            });
            Row {
                name: w.name().to_owned(),
                proxy: w.proxy.map_or("-", ProxyKind::as_str).to_owned(),
                note: exited,
                handled: tally.handled(i, end),
                proxies: scrape::figures(&history, i),
            }
        });
        let mut control = self.control.borrow().clone();
        if !self.mtls {
            control.certificates_issued = None;
        }
        View {
            elapsed: end,
            security: self.security.clone(),
            control,
            rows: rows.collect(),
            splits: split_rows(&self.splits.borrow(), tally, end, &history),
            entry: self.plan.workloads[self.entry].name().to_owned(),
            sent: tally.sent(end),
            total_sent: tally.total_sent,
            total_failed: tally.total_failed,
        }
    }
}

/// The workloads of the directory, checked against what this machine has, before anything starts.
struct Prepared {
    plan: Plan,
    entry: usize,
    weft_bin: Option<PathBuf>,
    envoy_bin: Option<PathBuf>,
    /// weft-agent, when Envoys run with mTLS.
    agent_bin: Option<PathBuf>,
    warnings: Vec<String>,
}

fn prepare(config: &UpConfig) -> Result<Prepared, UpError> {
    if !config.manifests.is_dir() {
        return Err(UpError::Config(format!("{} is not a directory", config.manifests.display())));
    }
    let mut dir = ManifestDir::new(&config.manifests);
    let report = dir.load();
    let plan = Plan::build(&report.state, config.proxy, |k| demo_calls(&dir, k));
    if plan.workloads.is_empty() {
        return Err(UpError::NoWorkloads(config.manifests.clone()));
    }
    let entry = plan.entry(&config.entry)?;
    let bin = |kind, find: fn(Option<&Path>) -> Result<PathBuf, UpError>, explicit: &Option<PathBuf>| {
        plan.uses(kind).then(|| find(explicit.as_deref())).transpose()
    };
    let weft_bin = bin(ProxyKind::Weft, process::weft_proxy_bin, &config.proxy_bin)?;
    let envoy_bin = bin(ProxyKind::Envoy, process::envoy_bin, &config.envoy_bin)?;
    let agent_bin = match config.security {
        Some(_) => bin(ProxyKind::Envoy, process::weft_agent_bin, &config.agent_bin)?,
        None => None,
    };
    for w in plan.workloads.iter().filter(|w| w.proxy.is_some()) {
        process::check_ports_free(w.ip)?;
    }
    let mut warnings: Vec<String> = report.errors.iter().map(|e| format!("warning: {e}")).collect();
    warnings.extend(plan.skipped.iter().map(|s| format!("not run: {s}")));
    for w in plan.workloads.iter().filter(|w| w.calls.is_some() && w.proxy.is_none()) {
        warnings.push(format!(
            "note: {} is not meshed, so its calls find no proxy on {}:{OUTBOUND_PORT}",
            w.name(),
            w.ip
        ));
    }
    Ok(Prepared { plan, entry, weft_bin, envoy_bin, agent_bin, warnings })
}

/// Every workload's demo app, reporting to `events`.
async fn start_apps(plan: &Plan, events: &mpsc::UnboundedSender<Event>) -> Result<Vec<DemoApp>, UpError> {
    let mut apps = Vec::new();
    for (i, w) in plan.workloads.iter().enumerate() {
        let via = SocketAddr::new(w.ip, OUTBOUND_PORT);
        let calls = w.calls.clone().map(|authority| DemoCall { authority, via });
        let recorder = Recorder { events: events.clone(), workload: i };
        let config = DemoConfig { name: w.name().to_owned(), listen: w.app_addr(), calls };
        apps.push(DemoApp::start_recorded(config, Some(recorder)).await?);
    }
    Ok(apps)
}

/// Each meshed workload's identity: its token (`<run dir>/tokens/<pod>.<namespace>.token`,
/// 0600) and, for an Envoy, its agent's socket (`<run dir>/sds/<pod>.<namespace>/sds.sock`,
/// directory 0700).
fn identities(
    plan: &Plan,
    security: &UpSecurity,
    trust_domain: &str,
    run_dir: &Path,
) -> Result<Vec<Option<WorkloadIdentity>>, UpError> {
    let control =
        control_identity(trust_domain).map_err(|e| UpError::Config(format!("trust domain: {e}")))?;
    let tokens = run_dir.join("tokens");
    private_dir(&tokens)?;
    let mut out = Vec::new();
    for w in &plan.workloads {
        if w.proxy.is_none() {
            out.push(None);
            continue;
        }
        let failed = |reason: String| UpError::Identity { workload: w.name().to_owned(), reason };
        let id = SpiffeId::new(trust_domain, w.key.namespace.as_str(), w.service_account.as_str())
            .map_err(|e| failed(e.to_string()))?;
        let token = token_for(&security.ca_dir, &id).map_err(|e| failed(e.to_string()))?;
        let token_file = tokens.join(format!("{}.{}.token", w.name(), w.key.namespace));
        write_private(&token_file, &token)?;
        let sds_dir = run_dir.join("sds").join(format!("{}.{}", w.name(), w.key.namespace));
        if w.proxy == Some(ProxyKind::Envoy) {
            private_dir(&sds_dir)?;
        }
        out.push(Some(WorkloadIdentity {
            id,
            ca_file: security.ca_dir.join(crate::identity::ca::ROOT_CERT_FILE),
            token_file,
            control_identity: control.clone(),
            sds_socket: sds_dir.join("sds.sock"),
        }));
    }
    Ok(out)
}

/// Makes `dir` (and its parents) with mode 0700.
fn private_dir(dir: &Path) -> Result<(), UpError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(|e| UpError::io(dir, e))?;
    // An existing directory keeps its mode: make sure.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(|e| UpError::io(dir, e))
}

/// Writes `text` to `path` with mode 0600 (replacing any earlier file).
fn write_private(path: &Path, text: &str) -> Result<(), UpError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::remove_file(path);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| UpError::io(path, e))?;
    file.write_all(text.as_bytes()).map_err(|e| UpError::io(path, e))
}

/// The proxy binary `w` runs, if it is meshed.
fn proxy_bin<'a>(p: &'a Prepared, w: &Workload) -> Option<(ProxyKind, &'a Path)> {
    let kind = w.proxy?;
    let bin = match kind {
        ProxyKind::Weft => p.weft_bin.as_deref(),
        ProxyKind::Envoy => p.envoy_bin.as_deref(),
    }?;
    Some((kind, bin))
}

/// Every Envoy's weft-agent (with mTLS), pointed at `xds`.
fn start_agents(
    p: &Prepared,
    ids: &[Option<WorkloadIdentity>],
    xds: SocketAddr,
    children: &mut Children,
) -> Result<(), UpError> {
    let Some(agent_bin) = p.agent_bin.as_deref() else { return Ok(()) };
    for (i, w) in p.plan.workloads.iter().enumerate() {
        if let (Some(ProxyKind::Envoy), Some(Some(identity))) = (w.proxy, ids.get(i)) {
            children.start_agent(i, w, agent_bin, xds, identity)?;
        }
    }
    Ok(())
}

/// Every meshed workload's proxy, pointed at `xds`, and a line per workload saying what runs.
fn start_proxies(
    p: &Prepared,
    ids: &[Option<WorkloadIdentity>],
    xds: SocketAddr,
    children: &mut Children,
) -> Result<(), UpError> {
    for (i, w) in p.plan.workloads.iter().enumerate() {
        if let Some((kind, bin)) = proxy_bin(p, w) {
            children.start(i, w, kind, bin, xds, ids.get(i).and_then(Option::as_ref))?;
        }
    }
    for (i, w) in p.plan.workloads.iter().enumerate() {
        let procs: Vec<_> = children.procs().iter().filter(|p| p.workload == i).collect();
        let proxy = procs.iter().find(|p| !p.agent).map_or_else(
            || "no proxy".to_owned(),
            |p| format!("{} pid {}, log {}", p.kind.as_str(), p.pid(), p.log.display()),
        );
        let agent = procs
            .iter()
            .find(|p| p.agent)
            .map_or_else(String::new, |a| format!(" (weft-agent pid {})", a.pid()));
        let id = ids.get(i).and_then(Option::as_ref).map_or_else(String::new, |id| format!("  {}", id.id));
        say(&format!("  {:<14} app {:<18} {proxy}{agent}{id}\n", w.name(), w.app_addr().to_string()));
    }
    Ok(())
}

/// The control plane's tracing options: the collector resolved, as `weft control` does.
async fn trace_options(t: &super::UpTracing) -> Result<crate::translate::TraceOptions, UpError> {
    let collector = tokio::net::lookup_host(t.collector.as_str())
        .await
        .map_err(|e| {
            UpError::Config(format!("--trace-collector {:?}: expected HOST:PORT ({e})", t.collector))
        })?
        .next()
        .ok_or_else(|| {
            UpError::Config(format!("--trace-collector {:?}: the host has no address", t.collector))
        })?;
    Ok(crate::translate::TraceOptions { collector, sampling: t.sampling })
}

/// Runs `weft up` until a signal or the end of `config.duration`.
pub async fn run(config: UpConfig) -> Result<Outcome, UpError> {
    let mut stop = Stop::install()?;
    let prepared = prepare(&config)?;
    let mut mesh = match &config.security {
        Some(s) => MeshOptions { authz: s.authz, ..MeshOptions::default() },
        None => MeshOptions::plaintext(),
    };
    mesh.tracing = match &config.tracing {
        Some(t) => Some(trace_options(t).await?),
        None => None,
    };
    let trust_domain = mesh.trust_domain.clone();
    let mesh_tracing = mesh.tracing;
    let security_note = match &config.security {
        Some(s) => format!("mTLS on, authz {}", authz_name(s.authz)),
        None => "mTLS off (--insecure-plaintext)".to_owned(),
    };
    let control = server::start(ControlConfig {
        source: SourceConfig::Manifests(config.manifests.clone()),
        xds_addr: config.xds_addr,
        admin_addr: config.admin_addr,
        reload_interval: Duration::from_millis(250),
        mesh,
        identity: config
            .security
            .as_ref()
            .map(|s| IdentityConfig { ca_dir: s.ca_dir.clone(), cert_lifetime: s.cert_lifetime }),
    })
    .await?;
    say(&format!(
        "weft up {}: control plane xDS {} ({}), admin {} (weft apply --admin-addr {}); logs in {}\n",
        config.manifests.display(),
        control.xds_addr,
        if config.security.is_some() { "TLS" } else { "plaintext" },
        control.admin_addr,
        control.admin_addr,
        config.run_dir.display()
    ));
    if let Some(t) = &mesh_tracing {
        say(&format!(
            "  tracing: every proxy and the control plane export spans to {} (OTLP/gRPC), {} % of new traces sampled\n",
            t.collector, t.sampling
        ));
    }
    match &config.security {
        Some(s) => say(&format!(
            "  mTLS on every hop: CA in {}; workload certificates last {} (renewed at 70 %); authorization {}{}; \
             check them with `weft check --admin-addr {}`\n",
            s.ca_dir.display(),
            format_duration(s.cert_lifetime),
            authz_name(s.authz),
            if prepared.agent_bin.is_some() {
                "; each Envoy gets its certificate from a weft-agent (SDS)"
            } else {
                ""
            },
            control.admin_addr,
        )),
        None => say("  WARNING: --insecure-plaintext: no mTLS, xDS in plaintext\n"),
    }
    for w in &prepared.warnings {
        say(&format!("  {w}\n"));
    }
    let ids = match &config.security {
        Some(s) => identities(&prepared.plan, s, &trust_domain, &config.run_dir)?,
        None => vec![None; prepared.plan.workloads.len()],
    };
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let apps = start_apps(&prepared.plan, &events_tx).await?;
    let mut children = Children::new(&config.run_dir);
    start_agents(&prepared, &ids, control.xds_addr, &mut children)?;

    let (plan, entry) = (&prepared.plan, prepared.entry);
    let names: Arc<Vec<String>> = Arc::new(plan.workloads.iter().map(|w| w.name().to_owned()).collect());
    let target = Target { addr: plan.workloads[entry].app_addr(), names: names.clone() };
    let started = Instant::now();
    let startup = async {
        // Agents first: an Envoy reads its certificates (and its xDS channel's) from its agent.
        children.wait_ready(config.ready_timeout, &names).await?;
        start_proxies(&prepared, &ids, control.xds_addr, &mut children)?;
        let proxies = children.procs().iter().filter(|p| !p.agent).count();
        say(&format!("waiting for {proxies} proxies to be ready..."));
        children.wait_ready(config.ready_timeout, &names).await?;
        // Ready proxies may still be connecting to one another: wait for real answers.
        let deadline = Instant::now() + config.ready_timeout;
        warm_up(&target, 3, deadline).await.map_err(|last| UpError::WarmUp {
            entry: names[entry].clone(),
            timeout: config.ready_timeout,
            last,
        })
    };
    tokio::select! {
        r = startup => if let Err(e) = r {
            say("\n");
            return Err(e);
        },
        _ = stop.recv() => {
            say("\ninterrupted; stopping\n");
            control.shutdown().await;
            return Ok(Outcome::Interrupted);
        }
    }
    say(&format!(
        " ready in {:.1} s.\nsending {} requests/s to {} at {}{}\n\n",
        started.elapsed().as_secs_f64(),
        config.rate,
        names[entry],
        target.addr,
        config.duration.map_or_else(|| "; Ctrl-C stops".to_owned(), |d| format!(" for {} s", d.as_secs()))
    ));

    // Traffic, and the view every second until stopped.
    let origin = Instant::now();
    let mut tally = Tally::new(origin, plan.workloads.len());
    let traffic = Traffic::start(target, config.rate, events_tx);
    let (control_status, control_task) = status::watch_control(control.admin_addr);
    let keys: Vec<Key> = plan.workloads.iter().map(|w| w.key.clone()).collect();
    let (splits, splits_task) = status::watch_splits(config.manifests.clone(), keys);
    let (proxies, proxies_task) =
        scrape::watch_proxies(plan.workloads.iter().map(|w| w.proxy.map(|_| w.ip)).collect());
    say(&commands(
        plan,
        entry,
        &splits.borrow(),
        control.admin_addr,
        config.security.as_ref().map(|s| &s.ca_dir),
    ));
    let sources = Sources {
        plan,
        entry,
        security: security_note,
        mtls: config.security.is_some(),
        control: control_status,
        splits,
        proxies,
    };
    let mut screen = Screen { tty: std::io::stdout().is_terminal(), last_lines: 0 };
    let mut tick = tokio::time::interval_at((origin + Duration::from_secs(1)).into(), Duration::from_secs(1));
    let until_deadline = async {
        match config.duration {
            Some(d) => tokio::time::sleep_until((origin + d).into()).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(until_deadline);
    let mut proxy_exited = false;
    let end = loop {
        tokio::select! {
            Some(event) = events.recv() => tally.record(event),
            _ = tick.tick() => {
                proxy_exited |= !children.poll().is_empty();
                screen.draw(&render(&sources.view(&tally, &children, tally.elapsed_secs())));
            }
            _ = &mut until_deadline => break config.duration.map_or(0, |d| d.as_secs()),
            _ = stop.recv() => break tally.elapsed_secs(),
        }
    };

    // Wait for the answers still due, then the final word.
    traffic.stop().await;
    drop(apps);
    while let Ok(event) = events.try_recv() {
        tally.record(event);
    }
    proxy_exited |= !children.poll().is_empty();
    screen.draw(&format!("=== final summary ===\n{}", render(&sources.view(&tally, &children, end))));
    control_task.abort();
    splits_task.abort();
    proxies_task.abort();
    let running = children.shutdown();
    control.shutdown().await;
    say(&format!(
        "stopped {running} proxy processes and the control plane; logs are kept in {}\n",
        config.run_dir.display()
    ));
    Ok(if proxy_exited { Outcome::ProxyExited } else { Outcome::Stopped })
}

/// The `weft stat` and `weft tap` commands that look at this run, one per line.
fn commands(
    plan: &Plan,
    entry: usize,
    splits: &[SplitView],
    admin: SocketAddr,
    ca_dir: Option<&PathBuf>,
) -> String {
    let mut out = String::from(
        "look closer from another terminal (the `in ...` and `proxies` columns are weft stat's figures):\n",
    );
    for s in splits {
        out.push_str(&format!(
            "  weft stat trafficsplit/{} -n {} --admin {admin}\n",
            s.name.rsplit('/').next().unwrap_or(&s.name),
            s.namespace
        ));
    }
    // The entry's app gets the traffic loop's requests directly, past its proxy.
    let callee = plan.workloads.iter().enumerate().find(|(i, w)| *i != entry && w.proxy.is_some());
    if let Some((_, w)) = callee {
        out.push_str(&format!("  weft stat workload/{} -n {} --admin {admin}\n", w.name(), w.key.namespace));
        if let Some(ca_dir) = ca_dir {
            out.push_str(&format!(
                "  weft tap workload/{} -n {} --admin {admin} --ca-dir {}\n",
                w.name(),
                w.key.namespace,
                ca_dir.display()
            ));
        }
    }
    out.push('\n');
    out
}

fn authz_name(mode: crate::translate::AuthzMode) -> &'static str {
    match mode {
        crate::translate::AuthzMode::Permissive => "permissive",
        crate::translate::AuthzMode::Strict => "strict",
    }
}
