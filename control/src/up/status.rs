//! What the live view shows besides traffic: the control plane's state (from its
//! `/metrics`) and the TrafficSplits as currently written (the manifest directory,
//! re-read every second, so an edit or a `weft apply` shows up).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::model::{Key, MeshState};
use crate::source::ManifestDir;
use crate::translate::names::outbound_cluster;

/// The control plane as its `/metrics` shows it; `None` until scraped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ControlStatus {
    pub(crate) snapshot_version: Option<u64>,
    pub(crate) connected_proxies: Option<u64>,
    pub(crate) invalid_objects: Option<u64>,
    /// Workload certificates the CA has signed (absent without mTLS).
    pub(crate) certificates_issued: Option<u64>,
}

/// Reads the gauges the view needs from a Prometheus/OpenMetrics text.
pub(crate) fn parse_metrics(text: &str) -> ControlStatus {
    let mut out = ControlStatus::default();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((name, value)) = line.rsplit_once(' ') else { continue };
        let Ok(value) = value.trim().parse::<f64>() else { continue };
        let value = value as u64;
        let metric = name.split('{').next().unwrap_or(name);
        match metric {
            "weft_snapshot_version" => out.snapshot_version = Some(value),
            "weft_invalid_objects" => out.invalid_objects = Some(value),
            "weft_identity_issued_total" => out.certificates_issued = Some(value),
            // One series per ADS flavour.
            "weft_xds_connected_proxies" => {
                out.connected_proxies = Some(out.connected_proxies.unwrap_or(0) + value);
            }
            _ => {}
        }
    }
    out
}

/// Scrapes `http://<admin>/metrics` every second.
pub(crate) fn watch_control(admin: SocketAddr) -> (watch::Receiver<ControlStatus>, JoinHandle<()>) {
    let (tx, rx) = watch::channel(ControlStatus::default());
    let task = tokio::spawn(async move {
        let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
        let Ok(uri) = format!("http://{admin}/metrics").parse::<http::Uri>() else { return };
        loop {
            if let Ok(Ok(resp)) = tokio::time::timeout(Duration::from_secs(1), client.get(uri.clone())).await
                && let Ok(body) = resp.into_body().collect().await
            {
                tx.send_replace(parse_metrics(&String::from_utf8_lossy(&body.to_bytes())));
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    (rx, task)
}

/// A TrafficSplit as the view shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SplitView {
    /// `namespace/name`, or just the name in the only namespace.
    pub(crate) name: String,
    /// Its namespace.
    pub(crate) namespace: String,
    /// Its backends, in order.
    pub(crate) backends: Vec<BackendView>,
}

/// One backend of a split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BackendView {
    /// The backend service.
    pub(crate) service: String,
    /// Its weight in thousandths.
    pub(crate) weight_milli: u64,
    /// The workloads (plan indices) whose pods the backend service selects.
    pub(crate) workloads: Vec<usize>,
    /// Its clients' clusters (`outbound|<port>||<service fqdn>`, one per port).
    pub(crate) clusters: Vec<String>,
}

/// The splits of `state`, with their backends mapped to the workloads `keys` lists (by index).
pub(crate) fn splits(state: &MeshState, keys: &[Key]) -> Vec<SplitView> {
    let one_namespace = state
        .traffic_splits
        .keys()
        .all(|k| state.traffic_splits.keys().next().is_some_and(|first| first.namespace == k.namespace));
    state
        .traffic_splits
        .values()
        .map(|split| SplitView {
            name: if one_namespace { split.key.name.clone() } else { split.key.to_string() },
            namespace: split.key.namespace.clone(),
            backends: split
                .backends
                .iter()
                .map(|b| {
                    let key = Key::new(&split.key.namespace, &b.service);
                    let svc = state.services.get(&key);
                    let clusters = svc
                        .iter()
                        .flat_map(|svc| svc.ports.iter().map(|p| outbound_cluster(&key, p.port)))
                        .collect();
                    let workloads = svc
                        .into_iter()
                        .flat_map(|svc| state.selected_pods(svc))
                        .filter_map(|pod| keys.iter().position(|k| *k == pod.key))
                        .collect();
                    BackendView {
                        service: b.service.clone(),
                        weight_milli: b.weight_milli,
                        workloads,
                        clusters,
                    }
                })
                .collect(),
        })
        .collect()
}

/// Re-reads the manifest directory every second and publishes its splits.
pub(crate) fn watch_splits(
    dir: PathBuf,
    keys: Vec<Key>,
) -> (watch::Receiver<Arc<Vec<SplitView>>>, JoinHandle<()>) {
    let mut source = ManifestDir::new(dir);
    let first = splits(&source.load().state, &keys);
    let (tx, rx) = watch::channel(Arc::new(first));
    let task = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let keys = keys.clone();
            let Ok((back, view)) = tokio::task::spawn_blocking(move || {
                let view = splits(&source.load().state, &keys);
                (source, view)
            })
            .await
            else {
                return;
            };
            source = back;
            tx.send_if_modified(|cur| {
                let changed = **cur != view;
                if changed {
                    *cur = Arc::new(view);
                }
                changed
            });
        }
    });
    (rx, task)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_give_version_invalid_objects_and_proxies_summed_over_flavours() {
        let text = "# HELP weft_snapshot_version x\n# TYPE weft_snapshot_version gauge\nweft_snapshot_version 7\n\
                    weft_xds_connected_proxies{mode=\"delta\"} 3\nweft_xds_connected_proxies{mode=\"sotw\"} 1\n\
                    weft_invalid_objects 0\nweft_xds_pushes_total{type=\"cds\"} 12\n\
                    weft_identity_issued_total 5\n# EOF\n";
        let s = parse_metrics(text);
        assert_eq!(
            s,
            ControlStatus {
                snapshot_version: Some(7),
                connected_proxies: Some(4),
                invalid_objects: Some(0),
                certificates_issued: Some(5),
            }
        );
        assert_eq!(parse_metrics("").connected_proxies, None);
    }

    #[test]
    fn payment_split_backends_map_to_their_workloads() {
        let mut dir = ManifestDir::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/payments"));
        let state = dir.load().state;
        let keys: Vec<Key> = state.pods.keys().cloned().collect();
        let v = splits(&state, &keys);
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].name, "payment-split");
        let b: Vec<_> = v[0].backends.iter().map(|b| (b.service.as_str(), b.weight_milli)).collect();
        assert_eq!(b, [("payment-v1", 950), ("payment-v2", 50)]);
        let v2 = keys.iter().position(|k| k.name == "payment-v2");
        assert_eq!(v[0].backends[1].workloads, v2.into_iter().collect::<Vec<_>>());
        assert_eq!(v[0].namespace, "payments");
        assert_eq!(v[0].backends[1].clusters, ["outbound|8080||payment-v2.payments.svc.cluster.local"]);
    }
}
