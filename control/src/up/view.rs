//! The live view: one block of text per second, built from the tally, the proxies'
//! state and metrics, the control plane's status and the splits. Rendering is a pure
//! function.
//!
//! Two views side by side: the traffic loop's and the demo apps' own tally (what the
//! client observed), and the proxies' (their Prometheus series, as `weft stat` reads them:
//! the `in ...` columns and the `proxies` share).

use std::fmt::Write as _;
use std::time::Duration;

use super::scrape::{self, Figures, History};
use super::stats::Summary;
use super::status::{ControlStatus, SplitView};
use super::tally::{Tally, WINDOW_SECS};

/// One workload's line.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Row {
    pub(crate) name: String,
    /// `envoy`, `weft`, or `-` when not meshed.
    pub(crate) proxy: String,
    /// Set once its proxy has exited, e.g. `exited (signal: 9)`.
    pub(crate) note: Option<String>,
    /// What its demo app handled in the window.
    pub(crate) handled: Summary,
    /// What its proxy counted as received in the window (its metrics).
    pub(crate) proxies: Option<Figures>,
}

/// One split's lines.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SplitRow {
    pub(crate) name: String,
    pub(crate) backends: Vec<BackendShare>,
}

/// One backend's share, in percent.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct BackendShare {
    pub(crate) service: String,
    /// Observed over the window.
    pub(crate) window: Option<f64>,
    /// Observed over the last second: a change of weights shows here first.
    pub(crate) last_second: Option<f64>,
    /// As the weights say.
    pub(crate) weight: Option<f64>,
    /// Observed over the window by the proxies' per-cluster metrics.
    pub(crate) proxies: Option<f64>,
}

/// Everything one block shows.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct View {
    /// Seconds since traffic started.
    pub(crate) elapsed: u64,
    /// `mTLS on, authz permissive`, or why it is off.
    pub(crate) security: String,
    pub(crate) control: ControlStatus,
    pub(crate) rows: Vec<Row>,
    pub(crate) splits: Vec<SplitRow>,
    /// The entry workload's name.
    pub(crate) entry: String,
    /// The traffic loop's view in the window.
    pub(crate) sent: Summary,
    pub(crate) total_sent: u64,
    pub(crate) total_failed: u64,
}

/// Shares of each split's backends, observed (loop answers whose chain names one of
/// the backend's workloads, and the proxies' metrics in `history`) and configured (weights),
/// for the window ending at `end`.
pub(crate) fn split_rows(splits: &[SplitView], tally: &Tally, end: u64, history: &History) -> Vec<SplitRow> {
    let percent = |part: u64, total: u64| (total > 0).then(|| 100.0 * part as f64 / total as f64);
    let observed = |s: &SplitView, secs: u64| -> Vec<Option<f64>> {
        let seen: Vec<u64> = s
            .backends
            .iter()
            .map(|b| b.workloads.iter().map(|w| tally.in_chain(*w, end, secs)).sum())
            .collect();
        let total = seen.iter().sum();
        seen.into_iter().map(|n| percent(n, total)).collect()
    };
    splits
        .iter()
        .map(|s| {
            let weight_total: u64 = s.backends.iter().map(|b| b.weight_milli).sum();
            let window = observed(s, WINDOW_SECS);
            let last_second = observed(s, 1);
            let proxies = scrape::shares(history, s);
            SplitRow {
                name: s.name.clone(),
                backends: s
                    .backends
                    .iter()
                    .enumerate()
                    .map(|(i, b)| BackendShare {
                        service: b.service.clone(),
                        window: window[i],
                        last_second: last_second[i],
                        weight: percent(b.weight_milli, weight_total),
                        proxies: proxies[i],
                    })
                    .collect(),
            }
        })
        .collect()
}

fn ms(d: Option<Duration>) -> String {
    match d {
        None => "-".into(),
        Some(d) => {
            let ms = d.as_secs_f64() * 1000.0;
            if ms < 1.0 {
                format!("{:.0} µs", ms * 1000.0)
            } else if ms < 10.0 {
                format!("{ms:.2} ms")
            } else {
                format!("{ms:.1} ms")
            }
        }
    }
}

fn pct(p: Option<f64>) -> String {
    p.map_or_else(|| "-".into(), |p| format!("{p:.1} %"))
}

fn opt(v: Option<u64>) -> String {
    v.map_or_else(|| "?".into(), |v| v.to_string())
}

/// The block, ending with a newline.
pub(crate) fn render(v: &View) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "weft up · {} s · snapshot v{} · {} proxies connected · {} invalid objects · {}",
        v.elapsed,
        opt(v.control.snapshot_version),
        opt(v.control.connected_proxies),
        opt(v.control.invalid_objects),
        v.security,
    );
    if let Some(issued) = v.control.certificates_issued {
        let _ = write!(out, " ({issued} certificates issued)");
    }
    out.push('\n');
    let width = v.rows.iter().map(|r| r.name.len()).max().unwrap_or(0).max("workload".len());
    let _ = writeln!(
        out,
        "  {:<width$}  {:<5}  {:>7}  {:>8}  {:>9}  | {:>8}  {:>10}  {:>9}",
        "workload", "proxy", "req/s", "success", "p99", "in req/s", "in success", "in p99"
    );
    for r in &v.rows {
        let (in_rps, in_success, in_p99) = match &r.proxies {
            Some(f) => (format!("{:.1}", f.rps), pct(f.success), ms(f.p99)),
            None => ("-".into(), "-".into(), "-".into()),
        };
        let _ = write!(
            out,
            "  {:<width$}  {:<5}  {:>7.1}  {:>8}  {:>9}  | {:>8}  {:>10}  {:>9}",
            r.name,
            r.proxy,
            r.handled.rps(),
            pct(r.handled.success_percent()),
            ms(r.handled.p99),
            in_rps,
            in_success,
            in_p99,
        );
        if let Some(note) = &r.note {
            let _ = write!(out, "  {note}");
        }
        out.push('\n');
    }
    for s in &v.splits {
        let title = format!("split {}", s.name);
        let sw = s.backends.iter().map(|b| b.service.len() + 2).chain([title.len()]).max().unwrap_or(0);
        let window = format!("last {}s", v.sent.seconds);
        let _ =
            writeln!(out, "  {title:<sw$}  {window:>9}  {:>9}  {:>9}  {:>9}", "last 1s", "weight", "proxies");
        for b in &s.backends {
            let (name, w, l, wt, px) = (
                format!("  {}", b.service),
                pct(b.window),
                pct(b.last_second),
                pct(b.weight),
                pct(b.proxies),
            );
            let _ = writeln!(out, "  {name:<sw$}  {w:>9}  {l:>9}  {wt:>9}  {px:>9}");
        }
    }
    let _ = writeln!(
        out,
        "  traffic to {}: {:.1} req/s, {} ok, p99 {} (last {} s) · {} sent, {} failed",
        v.entry,
        v.sent.rps(),
        pct(v.sent.success_percent()),
        ms(v.sent.p99),
        v.sent.seconds,
        v.total_sent,
        v.total_failed,
    );
    out
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::up::status::BackendView;
    use crate::up::tally::Event;

    #[test]
    fn split_shares_come_from_the_chains_and_the_weights() {
        let origin = Instant::now();
        let mut t = Tally::new(origin, 3);
        for i in 0..100 {
            let chain = if i % 20 == 0 { vec![0, 2] } else { vec![0, 1] };
            t.record(Event::Sent { at: origin, ok: true, latency: Duration::ZERO, chain });
        }
        let split = SplitView {
            name: "payment-split".into(),
            namespace: "payments".into(),
            backends: vec![
                BackendView {
                    service: "payment-v1".into(),
                    weight_milli: 950,
                    workloads: vec![1],
                    clusters: vec![],
                },
                BackendView {
                    service: "payment-v2".into(),
                    weight_milli: 50,
                    workloads: vec![2],
                    clusters: vec![],
                },
            ],
        };
        let none = History::new();
        let split_rows_at = |t: &Tally, end| split_rows(std::slice::from_ref(&split), t, end, &none);
        let rows = split_rows_at(&t, 1);
        let b = &rows[0].backends;
        assert_eq!((b[0].service.as_str(), b[0].window, b[0].weight), ("payment-v1", Some(95.0), Some(95.0)));
        assert_eq!((b[1].service.as_str(), b[1].window, b[1].weight), ("payment-v2", Some(5.0), Some(5.0)));
        // Every request fell in second 0, the last second before end = 1.
        assert_eq!(b[1].last_second, Some(5.0));
        assert_eq!(split_rows_at(&t, 5)[0].backends[1].last_second, None, "nothing in second 4");
        assert_eq!(b[1].proxies, None, "no scrape yet");
        assert_eq!(split_rows(&[], &t, 1, &none), vec![]);
    }

    #[test]
    fn the_block_has_a_line_per_workload_and_split() {
        let handled =
            Summary { requests: 500, ok: 500, seconds: 10, p99: Some(Duration::from_micros(4_210)) };
        let view = View {
            elapsed: 12,
            security: "mTLS on, authz permissive".into(),
            control: ControlStatus {
                snapshot_version: Some(3),
                connected_proxies: Some(4),
                invalid_objects: Some(0),
                certificates_issued: Some(4),
            },
            rows: vec![
                Row {
                    name: "frontend".into(),
                    proxy: "envoy".into(),
                    note: None,
                    handled: handled.clone(),
                    proxies: Some(Figures {
                        rps: 49.9,
                        success: Some(100.0),
                        p99: Some(Duration::from_micros(4_500)),
                    }),
                },
                Row {
                    name: "payment-v2".into(),
                    proxy: "weft".into(),
                    note: Some("exited (signal: 9)".into()),
                    handled: Summary::default(),
                    proxies: None,
                },
            ],
            splits: vec![SplitRow {
                name: "payment-split".into(),
                backends: vec![
                    BackendShare {
                        service: "payment-v1".into(),
                        window: Some(95.2),
                        last_second: Some(100.0),
                        weight: Some(95.0),
                        proxies: Some(95.0),
                    },
                    BackendShare {
                        service: "payment-v2".into(),
                        window: Some(4.8),
                        last_second: None,
                        weight: Some(5.0),
                        proxies: None,
                    },
                ],
            }],
            entry: "frontend".into(),
            sent: handled,
            total_sent: 600,
            total_failed: 0,
        };
        let text = render(&view);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "weft up · 12 s · snapshot v3 · 4 proxies connected · 0 invalid objects · mTLS on, authz permissive \
             (4 certificates issued)"
        );
        assert_eq!(
            lines[2].split_whitespace().collect::<Vec<_>>(),
            [
                "frontend", "envoy", "50.0", "100.0", "%", "4.21", "ms", "|", "49.9", "100.0", "%", "4.50",
                "ms"
            ]
        );
        assert!(
            lines[3].starts_with("  payment-v2  weft ") && lines[3].ends_with("exited (signal: 9)"),
            "{text}"
        );
        assert_eq!(
            lines[3].split_whitespace().take(6).collect::<Vec<_>>(),
            ["payment-v2", "weft", "0.0", "-", "-", "|"]
        );
        assert_eq!(lines[4], "  split payment-split   last 10s    last 1s     weight    proxies");
        assert_eq!(lines[5], "    payment-v1            95.2 %    100.0 %     95.0 %     95.0 %");
        assert_eq!(lines[6], "    payment-v2             4.8 %          -      5.0 %          -");
        assert!(
            lines[7].contains("50.0 req/s, 100.0 % ok, p99 4.21 ms (last 10 s) · 600 sent, 0 failed"),
            "{text}"
        );
    }
}
