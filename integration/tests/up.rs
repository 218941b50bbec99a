//! `weft up`, the README's first command, end to end: the real `weft` binary runs the
//! payments example (control plane, demo apps, a proxy per workload, traffic through
//! the frontend) and its final summary must show a healthy canary: every workload
//! busy, every request answered 200, payment-v2 near its 5 % weight. Every hop is mTLS:
//! the view says so, and while traffic runs the server-side proxies show it (weft-proxy's
//! inbound series carry `tls="true"` and the caller's `client_id`; Envoy's inbound
//! listener counts TLS handshakes). Afterwards nothing it started may be left: no proxy
//! or agent process, no listener on the example's addresses.
//!
//! The example's pods have fixed addresses (127.0.10.1 to .4, which no test subnet
//! uses), so these tests take a file lock and run one at a time, in whatever process
//! the test runner puts them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use weft_integration::otlp::OtlpReceiver;
use weft_integration::{envoy_bin, patience, target_dir, weft_bin};

const WORKLOADS: [&str; 4] = ["fraud-detect", "frontend", "payment-v1", "payment-v2"];

/// Every address the example's workloads listen on: proxy ports, weft-agent's and the app's.
fn example_addrs() -> Vec<SocketAddr> {
    (1..=4)
        .flat_map(|host| {
            [4140, 4143, 4191, 4192, 8080].map(|port| SocketAddr::from(([127, 0, 10, host], port)))
        })
        .collect()
}

/// A running `weft up examples/payments`, killed (SIGTERM, then SIGKILL) if the test ends early.
struct Up {
    child: Child,
    stdout: mpsc::Receiver<String>,
    seen: Vec<String>,
    stderr: Option<JoinHandle<String>>,
    _lock: File,
}

impl Up {
    /// Starts `weft up` on the payments example with `--proxy proxy`, control plane on free ports.
    fn start(proxy: &str, extra: &[&str]) -> Up {
        Up::start_in(&weft_integration::mesh::examples_dir().join("payments"), proxy, extra)
    }

    /// [`Up::start`] on a manifest directory with the payments example's addresses.
    fn start_in(dir: &Path, proxy: &str, extra: &[&str]) -> Up {
        let lock = File::create(target_dir().join("weft-up-payments.lock")).unwrap();
        lock.lock().unwrap();
        for addr in example_addrs() {
            assert!(is_free(addr), "{addr} is taken before the test starts");
        }
        let mut cmd = Command::new(weft_bin().unwrap());
        cmd.arg("up")
            .arg(dir)
            .args(["--proxy", proxy, "--xds-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if proxy != "weft" {
            cmd.env("ENVOY_BIN", envoy_bin().unwrap());
        }
        let mut child = cmd.spawn().unwrap();
        let (tx, stdout) = mpsc::channel();
        let out = BufReader::new(child.stdout.take().unwrap());
        std::thread::spawn(move || {
            for line in out.lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut err = child.stderr.take().unwrap();
        let stderr = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            s
        });
        Up { child, stdout, seen: Vec::new(), stderr: Some(stderr), _lock: lock }
    }

    /// Reads output until a line satisfies `pred`.
    fn wait_for_line(&mut self, what: &str, pred: impl Fn(&str) -> bool) {
        let deadline = Instant::now() + patience();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stdout.recv_timeout(left) {
                Ok(line) => {
                    let hit = pred(&line);
                    self.seen.push(line);
                    if hit {
                        return;
                    }
                }
                Err(_) => {
                    panic!("no {what} within {:?}; output so far:\n{}", patience(), self.seen.join("\n"))
                }
            }
        }
    }

    fn signal(&self, sig: &str) {
        let ok =
            Command::new("kill").arg(format!("-{sig}")).arg(self.child.id().to_string()).status().unwrap();
        assert!(ok.success(), "kill -{sig} failed");
    }

    /// Waits for exit (bounded); returns the status, all of stdout and stderr.
    fn finish(mut self, within: Duration) -> (ExitStatus, String, String) {
        let deadline = Instant::now() + within;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "weft up still running after {within:?}:\n{}",
                self.seen.join("\n")
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        while let Ok(line) = self.stdout.recv_timeout(Duration::from_secs(5)) {
            self.seen.push(line);
        }
        let stderr = self.stderr.take().unwrap().join().unwrap();
        (status, self.seen.join("\n"), stderr)
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            // SIGTERM lets weft up stop its proxies; SIGKILL would orphan them.
            let _ = Command::new("kill").arg(self.child.id().to_string()).status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn is_free(addr: SocketAddr) -> bool {
    matches!(
        TcpStream::connect_timeout(&addr, Duration::from_secs(1)),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused
    )
}

/// The final summary: per workload its req/s and success column, and payment-v2's share;
/// the same from the proxies' metrics (the `in ...` columns after `|`, the `proxies` share).
#[derive(Debug)]
struct Final {
    rows: BTreeMap<String, (f64, String)>,
    v2_share: f64,
    proxies: BTreeMap<String, (f64, String)>,
    v2_proxies_share: Option<f64>,
    block: String,
}

/// The percentages of a split line after the backend's name (`-` is `None`).
fn percents(tokens: &[&str]) -> Vec<Option<f64>> {
    tokens.iter().filter(|t| **t != "%").map(|t| t.parse::<f64>().ok()).collect()
}

/// `RPS SUCCESS...` of the columns after `|`.
fn in_columns(right: &str) -> Option<(f64, String)> {
    let t: Vec<&str> = right.split_whitespace().collect();
    let rps = t.first()?.parse().ok()?;
    let success =
        if t.get(1) == Some(&"-") { "-".to_owned() } else { format!("{} {}", t.get(1)?, t.get(2)?) };
    Some((rps, success))
}

fn parse_final(stdout: &str) -> Final {
    let block = stdout
        .rsplit_once("=== final summary ===")
        .unwrap_or_else(|| panic!("no final summary in:\n{stdout}"))
        .1
        .to_owned();
    let mut rows = BTreeMap::new();
    let mut proxies = BTreeMap::new();
    let mut v2_share = None;
    let mut v2_proxies_share = None;
    let mut in_split = false;
    for line in block.lines() {
        let tokens: Vec<&str> = line.split_whitespace().collect();
        if line.starts_with("  split payment-split") {
            in_split = true;
        } else if in_split && line.starts_with("    payment-v2") {
            v2_share = tokens.get(1).and_then(|t| t.parse::<f64>().ok());
            v2_proxies_share = percents(&tokens[1..]).get(3).copied().flatten();
        } else if line.starts_with("  ") && tokens.len() >= 4 && WORKLOADS.contains(&tokens[0]) && !in_split {
            let rps = tokens[2].parse::<f64>().unwrap_or_else(|_| panic!("req/s in {line:?}"));
            let success =
                if tokens[3] == "-" { "-".to_owned() } else { format!("{} {}", tokens[3], tokens[4]) };
            rows.insert(tokens[0].to_owned(), (rps, success));
            if let Some(figures) = line.split_once(" | ").and_then(|(_, right)| in_columns(right)) {
                proxies.insert(tokens[0].to_owned(), figures);
            }
        }
    }
    let v2_share = v2_share.unwrap_or_else(|| panic!("no payment-v2 share in:\n{block}"));
    Final { rows, v2_share, proxies, v2_proxies_share, block }
}

/// The pids `weft up` announced for its proxies and agents (`... envoy pid 1234, log ...
/// (weft-agent pid 1235)`).
fn proxy_pids(stdout: &str) -> Vec<u32> {
    stdout
        .split(" pid ")
        .skip(1)
        .filter_map(|rest| rest.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok())
        .collect()
}

/// Nothing `weft up` started survives it.
fn assert_nothing_left(stdout: &str) {
    let pids = proxy_pids(stdout);
    let envoys = proxy_kinds(stdout).values().filter(|k| k.as_str() == "envoy").count();
    assert_eq!(pids.len(), 4 + envoys, "one proxy per workload, one agent per Envoy:\n{stdout}");
    for pid in pids {
        assert!(!Path::new(&format!("/proc/{pid}")).exists(), "proxy pid {pid} survived weft up");
    }
    for addr in example_addrs() {
        assert!(is_free(addr), "something still listens on {addr} after weft up exited");
    }
}

/// Which proxy each workload runs, from `weft up`'s start lines
/// (`  frontend       app 127.0.10.1:8080   envoy pid 1234, ...`).
fn proxy_kinds(stdout: &str) -> BTreeMap<String, String> {
    stdout
        .lines()
        .filter_map(|l| {
            let t: Vec<&str> = l.split_whitespace().collect();
            (t.len() >= 5 && t[1] == "app" && t[4] == "pid" && WORKLOADS.contains(&t[0]))
                .then(|| (t[0].to_owned(), t[3].to_owned()))
        })
        .collect()
}

/// `GET http://addr/path`: status and body.
fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(weft_integration::load::send(addr, "admin", path))
        .unwrap_or_else(|e| panic!("GET http://{addr}{path}: {e:#}"))
}

/// While traffic runs: the proxies of payment-v1 (.2) and fraud-detect (.4), which only
/// other proxies call, took their requests over mTLS.
fn assert_server_side_hops_are_mtls(stdout: &str) {
    let kinds = proxy_kinds(stdout);
    assert_eq!(kinds.len(), 4, "a proxy per workload:\n{stdout}");
    for (workload, host, caller) in [("payment-v1", 2, "frontend"), ("fraud-detect", 4, "payment")] {
        let admin = SocketAddr::from(([127, 0, 10, host], 4191));
        match kinds[workload].as_str() {
            "weft" => {
                let (status, metrics) = http_get(admin, "/metrics");
                assert_eq!(status, 200);
                let client_id = format!("client_id=\"spiffe://cluster.local/ns/payments/sa/{caller}\"");
                assert!(
                    metrics.lines().any(|l| l.starts_with("request_total")
                        && l.contains("direction=\"inbound\"")
                        && l.contains("tls=\"true\"")
                        && l.contains(&client_id)),
                    "{workload}'s weft-proxy counts no inbound mTLS request from {caller}:\n{metrics}"
                );
            }
            "envoy" => {
                let (status, stats) = http_get(admin, "/stats?filter=ssl.handshake");
                assert_eq!(status, 200);
                let inbound = format!("listener.127.0.10.{host}_4143.ssl.handshake: ");
                let handshakes = stats
                    .lines()
                    .find_map(|l| l.strip_prefix(&inbound))
                    .and_then(|n| n.trim().parse::<u64>().ok())
                    .unwrap_or(0);
                assert!(handshakes > 0, "{workload}'s Envoy made no inbound TLS handshake:\n{stats}");
            }
            other => panic!("{workload} runs {other}?"),
        }
    }
}

/// Runs the canary for 8 s with `proxy` and checks mTLS, the summary and the cleanup.
fn canary_runs_healthy_and_leaves_nothing(proxy: &str) {
    let mut up = Up::start(proxy, &["--duration", "8"]);
    up.wait_for_line("live view", |l| l.starts_with("weft up · 2 s"));
    let so_far = up.seen.join("\n");
    assert!(so_far.contains("mTLS on every hop: CA in "), "{so_far}");
    assert_server_side_hops_are_mtls(&so_far);
    let (status, stdout, stderr) = up.finish(patience() + Duration::from_secs(30));
    assert!(status.success(), "weft up --proxy {proxy} failed ({status}):\n{stdout}\n{stderr}");
    let summary = parse_final(&stdout);
    for w in WORKLOADS {
        let (rps, success) =
            summary.rows.get(w).unwrap_or_else(|| panic!("no row for {w}:\n{}", summary.block));
        assert!(*rps > 0.0, "{w} handled nothing:\n{}", summary.block);
        assert_eq!(success, "100.0 %", "{w}'s success rate:\n{}", summary.block);
    }
    assert!(
        (1.0..=12.0).contains(&summary.v2_share),
        "payment-v2 got {} %:\n{}",
        summary.v2_share,
        summary.block
    );
    // The proxies' view (their metrics, as `weft stat` reads them) agrees: every workload
    // the frontend calls received traffic without failures, and the split's share holds.
    for w in WORKLOADS.into_iter().filter(|w| *w != "frontend") {
        let (rps, success) =
            summary.proxies.get(w).unwrap_or_else(|| panic!("no proxy figures for {w}:\n{}", summary.block));
        assert!(*rps > 0.0, "{w}'s proxy counted nothing:\n{}", summary.block);
        assert_eq!(success, "100.0 %", "{w}'s success rate by its proxy:\n{}", summary.block);
    }
    let by_proxies =
        summary.v2_proxies_share.unwrap_or_else(|| panic!("no proxies share:\n{}", summary.block));
    assert!(
        (1.0..=12.0).contains(&by_proxies),
        "payment-v2 got {by_proxies} % by the proxies:\n{}",
        summary.block
    );
    assert!(summary.block.contains("4 proxies connected"), "{}", summary.block);
    assert!(summary.block.contains("mTLS on, authz permissive"), "{}", summary.block);
    assert!(summary.block.contains(", 0 failed"), "{}", summary.block);
    assert!(stdout.contains("weft stat trafficsplit/payment-split -n payments --admin "), "{stdout}");
    assert!(stdout.contains("weft tap workload/"), "{stdout}");
    assert_nothing_left(&stdout);
}

#[test]
fn up_with_envoy_runs_the_payments_canary_and_leaves_nothing_behind() {
    canary_runs_healthy_and_leaves_nothing("envoy");
}

#[test]
fn up_with_weft_proxy_runs_the_payments_canary_and_leaves_nothing_behind() {
    canary_runs_healthy_and_leaves_nothing("weft");
}

#[test]
fn up_with_mixed_proxies_runs_the_payments_canary_and_leaves_nothing_behind() {
    canary_runs_healthy_and_leaves_nothing("mixed");
}

#[test]
fn ctrl_c_stops_traffic_prints_the_summary_and_every_proxy() {
    // --duration only as a safety net: should this test process be killed, weft up still ends.
    let mut up = Up::start("envoy", &["--duration", "120"]);
    // Two live blocks: traffic flows.
    up.wait_for_line("live view", |l| l.starts_with("weft up · 2 s"));
    up.signal("INT");
    let (status, stdout, stderr) = up.finish(patience());
    assert!(status.success(), "weft up exited {status} on Ctrl-C:\n{stdout}\n{stderr}");
    let summary = parse_final(&stdout);
    // payment-v2 takes 5 % of a couple of seconds of traffic, and may well have had none.
    let busy = summary.rows.iter().filter(|(w, _)| w.as_str() != "payment-v2");
    assert!(
        busy.clone().count() == 3 && busy.into_iter().all(|(_, (rps, _))| *rps > 0.0),
        "{}",
        summary.block
    );
    assert_nothing_left(&stdout);
}

#[test]
fn editing_the_split_file_moves_the_share_in_the_live_view() {
    let dir = tempfile::tempdir().unwrap();
    let example = weft_integration::mesh::examples_dir().join("payments");
    for entry in std::fs::read_dir(&example).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
    }
    let mut up = Up::start_in(dir.path(), "envoy", &["--duration", "120"]);
    up.wait_for_line("live view", |l| l.starts_with("weft up · 1 s"));
    // All of payment-svc to v2, written the way an editor saves (temporary file, rename).
    let split = std::fs::read_to_string(dir.path().join("split.yaml")).unwrap();
    let split = split.replace("weight: 950m", "weight: 0").replace("weight: 50m", "weight: 1");
    std::fs::write(dir.path().join(".split.yaml.tmp"), split).unwrap();
    std::fs::rename(dir.path().join(".split.yaml.tmp"), dir.path().join("split.yaml")).unwrap();
    // payment-v2's line: service, last 10 s, last 1 s, weight.
    up.wait_for_line("payment-v2 at 100 % over the last second", |l| {
        let t: Vec<&str> = l.split_whitespace().collect();
        l.starts_with("    payment-v2") && t.get(3) == Some(&"100.0") && t.get(5) == Some(&"100.0")
    });
    up.signal("TERM");
    let (status, stdout, stderr) = up.finish(patience());
    assert!(status.success(), "weft up exited {status}:\n{stdout}\n{stderr}");
    let summary = parse_final(&stdout);
    assert!(summary.block.contains(", 0 failed"), "the switch cost requests:\n{}", summary.block);
    assert_nothing_left(&stdout);
}

/// `weft up --trace-collector`: the run's control plane sends the tracing config over xDS, so
/// one request's hops through stock Envoy (the frontend, client side) and weft-proxy
/// (payment-v1, server side) reach the collector as one trace, and the control plane's own
/// push spans too.
#[test]
fn up_with_a_trace_collector_exports_both_hops_of_a_request() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let receiver = rt.block_on(OtlpReceiver::start([127, 0, 0, 1].into())).unwrap();
    let collector = receiver.addr().to_string();
    let mut up =
        Up::start("mixed", &["--duration", "6", "--trace-collector", &collector, "--trace-sampling", "100"]);
    up.wait_for_line("the tracing line", |l| l.contains("tracing: every proxy and the control plane"));
    let line = up.seen.last().cloned().unwrap_or_default();
    assert!(line.contains(&format!("export spans to {collector}")) && line.contains("100 %"), "{line}");
    let (client, server) = rt
        .block_on(receiver.wait_for("a frontend -> payment-v1 trace", |spans| {
            spans.iter().filter(|c| c.kind == "CLIENT" && c.service.starts_with("frontend")).find_map(|c| {
                let s = spans.iter().find(|s| {
                    s.kind == "SERVER"
                        && s.trace_id == c.trace_id
                        && s.parent_span_id == c.span_id
                        && s.service.starts_with("payment-v1")
                })?;
                Some((c.clone(), s.clone()))
            })
        }))
        .unwrap();
    assert_eq!(receiver.trace(&client.trace_id).iter().filter(|s| s.span_id == server.span_id).count(), 1);
    assert!(
        receiver.spans().iter().any(|s| s.service == "weft-control" && s.name == "xds.push"),
        "the control plane's pushes are traced too"
    );
    let (status, stdout, stderr) = up.finish(patience() + Duration::from_secs(30));
    assert!(status.success(), "weft up --trace-collector failed ({status}):\n{stdout}\n{stderr}");
    let kinds = proxy_kinds(&stdout);
    assert_eq!(kinds["frontend"], "envoy", "the client hop is Envoy's");
    assert_eq!(kinds["payment-v1"], "weft", "the server hop is weft-proxy's");
    assert_nothing_left(&stdout);
}

#[test]
fn up_refuses_a_trace_collector_that_is_not_host_port() {
    // Run alone: a concurrent run on the example's addresses would fail first, for another reason.
    let lock = File::create(target_dir().join("weft-up-payments.lock")).unwrap();
    lock.lock().unwrap();
    let out = Command::new(weft_bin().unwrap())
        .arg("up")
        .arg(weft_integration::mesh::examples_dir().join("payments"))
        .args(["--xds-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0", "--trace-collector", "no-port"])
        .args(["--duration", "1"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--trace-collector \"no-port\""), "{stderr}");
    let out =
        Command::new(weft_bin().unwrap()).args(["up", "x", "--trace-sampling", "150"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("150"), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn summary_parsing_reads_rows_and_the_v2_share() {
    let out = "  frontend       app 127.0.10.1:8080   envoy pid 11, log x (weft-agent pid 12)\n=== final summary ===\nweft up · 6 s · snapshot v1 · 4 proxies connected\n  workload      proxy    req/s   success        p99\n  frontend      envoy     50.0   100.0 %    5.64 ms  |      0.0           -          -\n  payment-v2    weft       0.0         -          -  |      2.5     100.0 %     812 µs\n  split payment-split    last 6s    last 1s     weight    proxies\n    payment-v1            95.2 %     96.0 %     95.0 %     95.1 %\n    payment-v2             4.8 %      4.0 %      5.0 %      4.9 %\n";
    let f = parse_final(out);
    assert_eq!(f.rows["frontend"], (50.0, "100.0 %".to_owned()));
    assert_eq!(f.rows["payment-v2"], (0.0, "-".to_owned()));
    assert_eq!(f.v2_share, 4.8);
    assert_eq!(f.proxies["frontend"], (0.0, "-".to_owned()));
    assert_eq!(f.proxies["payment-v2"], (2.5, "100.0 %".to_owned()));
    assert_eq!(f.v2_proxies_share, Some(4.9));
    assert_eq!(proxy_pids(out), [11, 12]);
    assert_eq!(proxy_kinds(out)["frontend"], "envoy");
}
