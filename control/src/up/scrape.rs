//! The proxies' own view for the live view: every second, each meshed workload's proxy is
//! scraped at `<pod IP>:4191` (as `weft stat` does), and the last [`WINDOW_SECS`] seconds of
//! pages are kept, so a row's figures are the difference between the newest page and the
//! oldest one in the window (see [`crate::stat::calc`]).

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::status::SplitView;
use super::tally::WINDOW_SECS;
use crate::stat::calc::{self, Delta, Reading};
use crate::stat::{Flavor, PROXY_ADMIN_PORT, Page, scrape};

/// One round of scrapes: per workload (plan index), its proxy's page, if it answered.
#[derive(Debug, Clone)]
pub(crate) struct Round {
    pub(crate) at: Instant,
    pub(crate) pages: Vec<Option<Arc<Page>>>,
}

/// The rounds of the window, oldest first.
pub(crate) type History = VecDeque<Round>;

/// A workload's figures as its proxy counted what it received.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Figures {
    pub(crate) rps: f64,
    /// Percent.
    pub(crate) success: Option<f64>,
    pub(crate) p99: Option<Duration>,
}

/// Scrapes `proxies` (per workload, its pod IP when meshed) every second.
pub(crate) fn watch_proxies(proxies: Vec<Option<IpAddr>>) -> (watch::Receiver<Arc<History>>, JoinHandle<()>) {
    let (tx, rx) = watch::channel(Arc::new(History::new()));
    let task = tokio::spawn(async move {
        let client = Client::builder(TokioExecutor::new()).build_http();
        let mut history = History::new();
        loop {
            let at = Instant::now();
            let scrapes = proxies.iter().map(|ip| {
                let client = &client;
                async move {
                    let ip = (*ip)?;
                    scrape(client, SocketAddr::new(ip, PROXY_ADMIN_PORT)).await.ok().map(Arc::new)
                }
            });
            let pages = futures::future::join_all(scrapes).await;
            history.push_back(Round { at, pages });
            while history.len() > WINDOW_SECS as usize + 1 {
                history.pop_front();
            }
            tx.send_replace(Arc::new(history.clone()));
            tokio::time::sleep_until((at + Duration::from_secs(1)).into()).await;
        }
    });
    (rx, task)
}

fn inbound(page: &Page) -> Reading {
    match page.flavor {
        Flavor::Weft => calc::weft_inbound(&page.samples),
        Flavor::Envoy => calc::envoy_inbound(&page.samples),
    }
}

fn cluster(page: &Page, name: &str) -> Reading {
    match page.flavor {
        Flavor::Weft => calc::weft_cluster(&page.samples, name),
        Flavor::Envoy => calc::envoy_cluster(&page.samples, name),
    }
}

/// The window's first and last rounds, and the seconds between them.
fn ends(history: &History) -> Option<(&Round, &Round, f64)> {
    let (first, last) = (history.front()?, history.back()?);
    let secs = last.at.duration_since(first.at).as_secs_f64();
    (secs > 0.0).then_some((first, last, secs))
}

/// Workload `i`'s figures over the window; `None` until two rounds read its proxy.
pub(crate) fn figures(history: &History, i: usize) -> Option<Figures> {
    let (first, last, secs) = ends(history)?;
    let (a, b) = (first.pages.get(i)?.as_ref()?, last.pages.get(i)?.as_ref()?);
    let d = calc::diff(&inbound(a), &inbound(b));
    Some(Figures {
        rps: d.requests as f64 / secs,
        success: (d.requests > 0)
            .then(|| 100.0 * (d.requests - d.failures.min(d.requests)) as f64 / d.requests as f64),
        p99: calc::quantile(&d.buckets, 0.99).map(|ms| Duration::from_secs_f64(ms / 1_000.0)),
    })
}

/// Each backend's share (percent) of what every proxy sent to the split's backends over the
/// window, by the proxies' per-cluster series; `None` before two rounds or without traffic.
pub(crate) fn shares(history: &History, split: &SplitView) -> Vec<Option<f64>> {
    let none = vec![None; split.backends.len()];
    let Some((first, last, _)) = ends(history) else { return none };
    let sent: Vec<u64> = split
        .backends
        .iter()
        .map(|b| {
            let pairs = first.pages.iter().zip(&last.pages);
            pairs
                .filter_map(|(a, z)| Some((a.as_ref()?, z.as_ref()?)))
                .flat_map(|(a, z)| b.clusters.iter().map(|c| calc::diff(&cluster(a, c), &cluster(z, c))))
                .map(|d: Delta| d.requests)
                .sum()
        })
        .collect();
    let total: u64 = sent.iter().sum();
    if total == 0 {
        return none;
    }
    sent.into_iter().map(|n| Some(100.0 * n as f64 / total as f64)).collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::stat::prom::parse;
    use crate::up::status::BackendView;

    fn page(flavor: Flavor, text: &str) -> Option<Arc<Page>> {
        Some(Arc::new(Page { flavor, samples: parse(text).unwrap() }))
    }

    #[test]
    fn figures_and_shares_come_from_the_first_and_last_rounds() {
        let v1 = "outbound|8080||payment-v1.payments.svc.cluster.local";
        let v2 = "outbound|8080||payment-v2.payments.svc.cluster.local";
        let weft = |ok: u32, failed: u32, to_v1: u32, to_v2: u32| {
            page(
                Flavor::Weft,
                &format!(
                    "response_total{{direction=\"inbound\",authority=\"a\",tls=\"true\",status_code=\"200\",classification=\"success\"}} {ok}\n\
                     response_total{{direction=\"inbound\",authority=\"a\",tls=\"true\",status_code=\"503\",classification=\"failure\"}} {failed}\n\
                     response_latency_ms_bucket{{le=\"2.0\",direction=\"inbound\",authority=\"a\",tls=\"true\",status_code=\"200\"}} {}\n\
                     upstream_response_total{{cluster=\"{v1}\",status_code=\"200\",classification=\"success\"}} {to_v1}\n\
                     upstream_response_total{{cluster=\"{v2}\",status_code=\"200\",classification=\"success\"}} {to_v2}\n",
                    ok + failed
                ),
            )
        };
        let start = Instant::now();
        let mut history = History::new();
        history.push_back(Round { at: start, pages: vec![weft(0, 0, 0, 0), None] });
        history.push_back(Round { at: start + Duration::from_secs(5), pages: vec![weft(10, 5, 3, 1), None] });
        history
            .push_back(Round { at: start + Duration::from_secs(10), pages: vec![weft(95, 5, 95, 5), None] });
        let f = figures(&history, 0).unwrap();
        assert_eq!(f.rps, 10.0);
        assert_eq!(f.success, Some(95.0));
        assert!(f.p99.unwrap() <= Duration::from_millis(2), "{f:?}");
        assert_eq!(figures(&history, 1), None, "no proxy");
        let split = SplitView {
            name: "payment-split".into(),
            namespace: "payments".into(),
            backends: vec![
                BackendView {
                    service: "payment-v1".into(),
                    weight_milli: 950,
                    workloads: vec![],
                    clusters: vec![v1.into()],
                },
                BackendView {
                    service: "payment-v2".into(),
                    weight_milli: 50,
                    workloads: vec![],
                    clusters: vec![v2.into()],
                },
            ],
        };
        assert_eq!(shares(&history, &split), vec![Some(95.0), Some(5.0)]);
        history.truncate(1);
        assert_eq!(shares(&history, &split), vec![None, None], "one round is no window");
    }
}
