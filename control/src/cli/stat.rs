//! `weft stat`: golden metrics of a workload's proxies, of a TrafficSplit's backends, or of
//! routes, over a window, computed by the control plane from the proxies' Prometheus metrics
//! (`GET /stat`, see `weft_control::stat`).

use super::query_escape;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::bail;
use weft_control::stat::{StatReply, StatRow};

/// `weft stat` flags.
#[derive(Debug, clap::Args)]
pub(crate) struct StatArgs {
    /// What to measure: `workload/NAME` (a proxy's node id or service account), `deploy/NAME`
    /// (a Deployment's pods), `pod/NAME`, `trafficsplit/NAME` (each backend's share), or
    /// `route/SERVICE[:PORT][/ROUTE]` (each outbound route of a service, as every client sent it).
    pub(crate) target: String,
    /// `route`: for a workload, deploy or pod, one row per outbound route its proxies sent
    /// requests on in the window, instead of one row per proxy.
    #[arg(long, value_parser = ["route"])]
    pub(crate) by: Option<String>,
    /// Namespace of the target (a TrafficSplit's: `default` when not given).
    #[arg(short = 'n', long, env = "WEFT_NAMESPACE")]
    pub(crate) namespace: Option<String>,
    /// The window the figures cover, e.g. `10s`, `1m` [1s to 10m].
    #[arg(long, default_value = "10s")]
    pub(crate) window: String,
    /// Output: `table` or `json` (the control plane's answer as is).
    #[arg(short = 'o', long, default_value = "table", value_parser = ["table", "json"])]
    pub(crate) output: String,
    /// The control plane's admin address.
    #[arg(long, visible_alias = "admin", env = "WEFT_ADMIN_ADDR", default_value = "127.0.0.1:8085")]
    pub(crate) admin_addr: SocketAddr,
}

/// `weft stat`: exit 0 with the table (or JSON); 1 when the control plane refuses the query.
pub(crate) async fn stat(args: &StatArgs) -> anyhow::Result<ExitCode> {
    let mut path =
        format!("/stat?target={}&window={}", query_escape(&args.target), query_escape(&args.window));
    if let Some(ns) = &args.namespace {
        path.push_str(&format!("&namespace={}", query_escape(ns)));
    }
    if let Some(by) = &args.by {
        path.push_str(&format!("&by={}", query_escape(by)));
    }
    let (status, body) = super::get(args.admin_addr, &path).await?;
    if status != 200 {
        let text = String::from_utf8_lossy(&body);
        eprintln!("error: {}", text.trim_end());
        return Ok(ExitCode::FAILURE);
    }
    let reply: StatReply = match serde_json::from_slice(&body) {
        Ok(reply) => reply,
        Err(e) => {
            bail!("the control plane's answer is not a stat reply ({e}): {}", String::from_utf8_lossy(&body))
        }
    };
    if args.output == "json" {
        println!("{}", serde_json::to_string_pretty(&reply)?);
    } else {
        print!("{}", table(&reply));
    }
    Ok(ExitCode::SUCCESS)
}

fn percent(x: Option<f64>) -> String {
    x.map_or_else(|| "-".to_owned(), |x| format!("{:.2}%", x * 100.0))
}

fn millis(x: Option<f64>) -> String {
    match x {
        None => "-".to_owned(),
        Some(ms) if ms >= 100.0 => format!("{ms:.0}ms"),
        Some(ms) => format!("{ms:.1}ms"),
    }
}

/// Whether the reply is a TrafficSplit's (rows carry weights).
fn is_split(reply: &StatReply) -> bool {
    reply.rows.iter().any(|r| r.weight.is_some())
}

/// The table `weft stat` prints: one line per row, then the rows' and the reply's problems.
pub(crate) fn table(reply: &StatReply) -> String {
    let split = is_split(reply);
    let routes = reply.kind == "route";
    let header: Vec<&str> = if routes {
        vec!["ROUTE", "PROXY", "MESHED", "SUCCESS", "RPS", "LATENCY_P50", "LATENCY_P95", "LATENCY_P99"]
    } else if split {
        vec![
            "BACKEND",
            "PROXY",
            "WEIGHT",
            "SHARE",
            "SUCCESS",
            "RPS",
            "LATENCY_P50",
            "LATENCY_P95",
            "LATENCY_P99",
        ]
    } else {
        vec!["NAME", "PROXY", "MESHED", "SUCCESS", "RPS", "LATENCY_P50", "LATENCY_P95", "LATENCY_P99", "TLS"]
    };
    let cells = |r: &StatRow| -> Vec<String> {
        let proxy = if r.proxy.is_empty() { "-".to_owned() } else { r.proxy.clone() };
        let common = [
            percent(r.success_rate),
            format!("{:.1}", r.rps),
            millis(r.latency_ms_p50),
            millis(r.latency_ms_p95),
            millis(r.latency_ms_p99),
        ];
        let mut line = if split {
            vec![r.name.clone(), proxy, percent(r.weight_share), percent(r.share)]
        } else {
            vec![r.name.clone(), proxy, r.meshed.clone()]
        };
        line.extend(common);
        if !split && !routes {
            line.push(percent(r.tls_rate));
        }
        line
    };
    let rows: Vec<Vec<String>> = reply.rows.iter().map(cells).collect();
    let widths: Vec<usize> = (0..header.len())
        .map(|i| rows.iter().map(|r| r[i].len()).chain([header[i].len()]).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    let line = |cells: &[&str], out: &mut String| {
        let padded: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        let _ = writeln!(out, "{}", padded.join("  ").trim_end());
    };
    line(&header, &mut out);
    for r in &rows {
        line(&r.iter().map(String::as_str).collect::<Vec<_>>(), &mut out);
    }
    if routes && reply.rows.is_empty() {
        let _ = writeln!(out, "(no route had requests in the window)");
    }
    let _ = writeln!(out, "(window {:.1}s)", reply.window_secs);
    for r in &reply.rows {
        for e in &r.errors {
            let _ = writeln!(out, "! {}: {e}", r.name);
        }
    }
    for note in &reply.notes {
        let _ = writeln!(out, "! {note}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_workload_table_shows_every_column_and_the_rows_problems() {
        let reply = StatReply {
            target: "deploy/web".into(),
            window_secs: 10.0,
            rows: vec![
                StatRow {
                    name: "web".into(),
                    proxy: "weft-proxy".into(),
                    meshed: "1/1".into(),
                    requests: 100,
                    failures: 5,
                    success_rate: Some(0.95),
                    rps: 10.0,
                    latency_ms_p50: Some(1.5),
                    latency_ms_p95: Some(4.75),
                    latency_ms_p99: Some(250.0),
                    tls_rate: Some(1.0),
                    ..StatRow::default()
                },
                StatRow {
                    name: "web-2".into(),
                    meshed: "0/1".into(),
                    errors: vec!["scraping http://127.0.10.4:4191/metrics: connection refused".into()],
                    ..StatRow::default()
                },
            ],
            ..StatReply::default()
        };
        let text = table(&reply);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0].split_whitespace().collect::<Vec<_>>(),
            ["NAME", "PROXY", "MESHED", "SUCCESS", "RPS", "LATENCY_P50", "LATENCY_P95", "LATENCY_P99", "TLS"]
        );
        assert_eq!(
            lines[1].split_whitespace().collect::<Vec<_>>(),
            ["web", "weft-proxy", "1/1", "95.00%", "10.0", "1.5ms", "4.8ms", "250ms", "100.00%"]
        );
        assert_eq!(
            lines[2].split_whitespace().collect::<Vec<_>>(),
            ["web-2", "-", "0/1", "-", "0.0", "-", "-", "-", "-"]
        );
        assert!(
            text.contains("! web-2: scraping http://127.0.10.4:4191/metrics: connection refused"),
            "{text}"
        );
    }

    #[test]
    fn a_route_table_names_each_route() {
        let reply = StatReply {
            kind: "route".into(),
            rows: vec![StatRow {
                name: "web.shop:8080/split/web-split".into(),
                proxy: "envoy".into(),
                meshed: "3/3".into(),
                success_rate: Some(0.75),
                rps: 25.0,
                latency_ms_p50: Some(2.0),
                ..StatRow::default()
            }],
            ..StatReply::default()
        };
        let text = table(&reply);
        let lines: Vec<Vec<&str>> = text.lines().map(|l| l.split_whitespace().collect()).collect();
        assert_eq!(
            lines[0],
            ["ROUTE", "PROXY", "MESHED", "SUCCESS", "RPS", "LATENCY_P50", "LATENCY_P95", "LATENCY_P99"]
        );
        assert_eq!(
            lines[1],
            ["web.shop:8080/split/web-split", "envoy", "3/3", "75.00%", "25.0", "2.0ms", "-", "-"]
        );
        let empty = table(&StatReply { kind: "route".into(), ..StatReply::default() });
        assert!(empty.contains("no route had requests"), "{empty}");
    }

    #[test]
    fn a_split_table_shows_weights_and_shares() {
        let reply = StatReply {
            rows: vec![StatRow {
                name: "payment-v2".into(),
                proxy: "weft-proxy+envoy".into(),
                weight: Some(0.05),
                weight_share: Some(0.05),
                share: Some(0.0612),
                success_rate: Some(1.0),
                rps: 3.0,
                ..StatRow::default()
            }],
            ..StatReply::default()
        };
        let text = table(&reply);
        assert!(text.starts_with("BACKEND"), "{text}");
        assert_eq!(
            text.lines().nth(1).unwrap_or("").split_whitespace().collect::<Vec<_>>(),
            ["payment-v2", "weft-proxy+envoy", "5.00%", "6.12%", "100.00%", "3.0", "-", "-", "-"]
        );
    }
}
